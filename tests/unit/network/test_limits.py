"""SourceLimiter (sans-IO): per-network pending and rate limits, the global table and stalled eviction."""

from __future__ import annotations

import logging

import pytest

from mycel.network.limits import (
    EVICTED_STALLED,
    REFUSE_IP_PENDING,
    REFUSE_IP_RATE,
    REFUSE_TABLE_FULL,
    PrefixLimit,
    Refusal,
    SourceLimiter,
    SourceLimits,
    Ticket,
    WarningThrottle,
    source_ip,
)


def ticket(result: tuple[Ticket | Refusal, list[Ticket]]) -> Ticket:
    got, _ = result
    assert isinstance(got, Ticket), got
    return got


def refusal(result: tuple[Ticket | Refusal, list[Ticket]]) -> str:
    got, evicted = result
    assert isinstance(got, Refusal), got
    assert evicted == []
    return got.reason


def test_go_defaults() -> None:
    limits = SourceLimits()
    assert limits.ipv4 == (PrefixLimit(32, 8, 0.2, 16),)
    assert limits.ipv6 == (PrefixLimit(56, 8, 0.2, 16), PrefixLimit(48, 64, 0.5, 80))
    assert limits.limit_loopback is False


def test_pending_per_ipv4_address() -> None:
    lim = SourceLimiter(SourceLimits(), max_pending=64)
    held = [ticket(lim.admit("10.0.0.1", 0.0)) for _ in range(8)]
    assert refusal(lim.admit("10.0.0.1", 0.0)) == REFUSE_IP_PENDING
    ticket(lim.admit("10.0.0.2", 0.0))  # the next address is another /32
    lim.release(held[0])
    lim.release(held[0])  # idempotent
    ticket(lim.admit("10.0.0.1", 0.0))
    assert refusal(lim.admit("10.0.0.1", 0.0)) == REFUSE_IP_PENDING
    assert lim.stats()[REFUSE_IP_PENDING] == 2


def test_rate_per_ipv4_address_refills() -> None:
    lim = SourceLimiter(SourceLimits(), max_pending=64)
    for _ in range(16):  # burst 16, each released at once
        lim.release(ticket(lim.admit("10.0.0.1", 0.0)))
    assert refusal(lim.admit("10.0.0.1", 0.0)) == REFUSE_IP_RATE
    assert refusal(lim.admit("10.0.0.1", 4.9)) == REFUSE_IP_RATE
    lim.release(ticket(lim.admit("10.0.0.1", 5.0)))  # 0.2/s: one token after 5 s
    assert refusal(lim.admit("10.0.0.1", 5.1)) == REFUSE_IP_RATE
    lim.release(ticket(lim.admit("10.0.0.9", 5.1)))
    assert lim.stats()[REFUSE_IP_RATE] == 3


def test_refusal_for_pending_costs_no_token() -> None:
    lim = SourceLimiter(SourceLimits(ipv4=(PrefixLimit(32, 1, 0.0, 2),)), max_pending=64)
    first = ticket(lim.admit("10.0.0.1", 0.0))
    for _ in range(5):
        assert refusal(lim.admit("10.0.0.1", 0.0)) == REFUSE_IP_PENDING
    lim.release(first)
    lim.release(ticket(lim.admit("10.0.0.1", 0.0)))
    assert refusal(lim.admit("10.0.0.1", 0.0)) == REFUSE_IP_RATE


def test_ipv6_grouped_by_56_and_48() -> None:
    lim = SourceLimiter(SourceLimits(), max_pending=1000)
    for i in range(8):  # eight addresses inside one /56
        ticket(lim.admit(f"2001:db8:0:ff::{i + 1}", 0.0))
    assert refusal(lim.admit("2001:db8:0:ff:1::1", 0.0)) == REFUSE_IP_PENDING
    # another /56 of the same /48 is fine up to the /48's 64
    for sub in range(1, 8):
        for i in range(8):
            ticket(lim.admit(f"2001:db8:0:{sub:x}00::{i + 1}", 0.0))
    assert lim.pending == 64
    assert refusal(lim.admit("2001:db8:0:900::1", 0.0)) == REFUSE_IP_PENDING
    ticket(lim.admit("2001:db8:1::1", 0.0))  # another /48


def test_ipv4_mapped_ipv6_counts_as_ipv4() -> None:
    assert str(source_ip("::ffff:10.0.0.1")) == "10.0.0.1"
    lim = SourceLimiter(SourceLimits(), max_pending=64)
    for _ in range(4):
        ticket(lim.admit("10.0.0.1", 0.0))
        ticket(lim.admit("::ffff:10.0.0.1", 0.0))
    assert refusal(lim.admit("10.0.0.1", 0.0)) == REFUSE_IP_PENDING


def test_loopback_exempt_unless_limited() -> None:
    free = SourceLimiter(SourceLimits(), max_pending=1000)
    for _ in range(100):
        ticket(free.admit("127.0.0.1", 0.0))
        ticket(free.admit("::1", 0.0))
    limited = SourceLimiter(SourceLimits(limit_loopback=True), max_pending=1000)
    for _ in range(8):
        ticket(limited.admit("127.0.0.2", 0.0))
    assert refusal(limited.admit("127.0.0.2", 0.0)) == REFUSE_IP_PENDING
    ticket(limited.admit("127.0.0.1", 0.0))


def test_unparsable_source_only_meets_the_global_table() -> None:
    lim = SourceLimiter(SourceLimits(), max_pending=3)
    for _ in range(3):
        ticket(lim.admit(None, 0.0))
    assert refusal(lim.admit("not-an-ip", 0.0)) == REFUSE_TABLE_FULL


def test_full_table_evicts_the_longest_stalled() -> None:
    lim = SourceLimiter(SourceLimits(stall_after=1.0), max_pending=3)
    a = ticket(lim.admit("10.0.0.1", 0.0))
    b = ticket(lim.admit("10.0.0.2", 0.1))
    c = ticket(lim.admit("10.0.0.3", 0.2))
    lim.progress(a, 0.5)  # a made progress: b is now the one stalled longest
    assert refusal(lim.admit("10.0.0.4", 0.9)) == REFUSE_TABLE_FULL  # nobody stalled a full second yet
    got, evicted = lim.admit("10.0.0.4", 1.15)
    assert isinstance(got, Ticket) and evicted == [b]
    assert not b.live and lim.pending == 3
    got2, evicted2 = lim.admit("10.0.0.5", 1.25)
    assert isinstance(got2, Ticket) and evicted2 == [c]
    got3, evicted3 = lim.admit("10.0.0.6", 1.6)
    assert isinstance(got3, Ticket) and evicted3 == [a]
    stats = lim.stats()
    assert stats[EVICTED_STALLED] == 3 and stats[REFUSE_TABLE_FULL] == 1 and stats["pending"] == 3
    # an evicted ticket's network is free again
    lim.release(b)
    assert lim.pending == 3


def test_table_full_refusal_spends_no_token() -> None:
    lim = SourceLimiter(SourceLimits(ipv4=(PrefixLimit(32, 8, 0.0, 1),)), max_pending=1)
    held = ticket(lim.admit("10.0.0.1", 0.0))
    assert refusal(lim.admit("10.0.0.2", 0.0)) == REFUSE_TABLE_FULL
    lim.release(held)
    ticket(lim.admit("10.0.0.2", 0.0))  # its single token is still there


def test_buckets_bounded() -> None:
    lim = SourceLimiter(SourceLimits(max_sources=10), max_pending=10_000)
    for i in range(1000):
        lim.release(ticket(lim.admit(f"10.0.{i // 256}.{i % 256}", 0.0)))
    assert len(lim._buckets) == 10
    assert lim._per_net == {}


def test_invalid_limits() -> None:
    with pytest.raises(ValueError):
        PrefixLimit(32, 0, 0.2, 16)
    with pytest.raises(ValueError):
        SourceLimits(ipv4=(PrefixLimit(33, 8, 0.2, 16),))
    with pytest.raises(ValueError):
        SourceLimiter(SourceLimits(), max_pending=0)


def test_warning_throttle(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("mycel.test.throttle")
    throttle = WarningThrottle(logger, interval=5.0)
    with caplog.at_level(logging.WARNING, logger="mycel.test.throttle"):
        assert throttle.warn("rate", 0.0, "refused %s", "a")
        assert not throttle.warn("rate", 1.0, "refused %s", "b")
        assert not throttle.warn("rate", 4.9, "refused %s", "c")
        assert throttle.warn("full", 1.0, "full %s", "x")  # another reason is not held back
        assert throttle.warn("rate", 5.0, "refused %s", "d")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["refused a", "full x", "refused d (and 2 more like it held back)"]


def test_spend_charges_a_stateless_answer() -> None:
    lim = SourceLimiter(SourceLimits(ipv4=(PrefixLimit(32, 8, 0.0, 3),)), max_pending=64)
    assert lim.spend("10.0.0.1", 0.0) is None
    assert lim.spend("10.0.0.1", 0.0) is None
    assert lim.pending == 0  # nothing held
    ticket(lim.admit("10.0.0.1", 0.0))  # the last token
    refused = lim.spend("10.0.0.1", 0.0)
    assert refused is not None and refused.reason == REFUSE_IP_RATE
    assert lim.spend("127.0.0.1", 0.0) is None  # loopback exempt
