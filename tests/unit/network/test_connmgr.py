"""The connection manager's sans-IO core: watermarks, grace, silence, tags and protection."""

from __future__ import annotations

import math

import pytest

from mycel.core.errors import ConfigError
from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.network.connmgr import ConnManagerConfig, ConnManagerCore


def peers(n: int) -> list[PeerId]:
    return [Identity.generate().peer_id for _ in range(n)]


def core_with(n: int, low: int, high: int, grace: float = 0.0, silence: float = 0.0) -> tuple[ConnManagerCore[str], list[PeerId]]:
    core: ConnManagerCore[str] = ConnManagerCore(ConnManagerConfig(low=low, high=high, grace=grace, silence=silence))
    ps = peers(n)
    for i, p in enumerate(ps):
        core.opened(f"c{i}", p, now=0.0)
    return core, ps


def test_go_defaults() -> None:
    cfg = ConnManagerConfig()
    assert (cfg.low, cfg.high, cfg.grace, cfg.silence) == (160, 192, 60.0, 10.0)
    with pytest.raises(ConfigError):
        ConnManagerConfig(low=10, high=5)


def test_nothing_to_do_at_or_below_high() -> None:
    core, _ = core_with(4, low=2, high=4)
    assert core.next_deadline() == math.inf
    assert core.trim(100.0) == []


def test_trims_to_low_keeping_protected_and_valuable_peers() -> None:
    core, ps = core_with(6, low=3, high=4)
    core.tag_peer(ps[0], "kad", 5)
    core.tag_peer(ps[0], "mesh", 20)
    core.tag_peer(ps[1], "kad", 5)
    core.protect(ps[2], "relay")
    core.tag_peer(ps[3], "low", 1)
    assert core.tag_value(ps[0]) == 25
    assert core.next_deadline() == -math.inf  # due now
    closed = core.trim(1.0)
    # 6 open, low 3: three go, least valuable first: ps[4], ps[5] (0), then ps[3] (1)
    assert sorted(closed) == ["c3", "c4", "c5"]
    for c in closed:
        core.closed(c)
    assert core.connection_count == 3
    assert core.trimmed == 3


def test_protection_needs_every_tag_removed() -> None:
    core, ps = core_with(3, low=0, high=1)
    core.protect(ps[0], "a")
    core.protect(ps[0], "b")
    assert core.unprotect(ps[0], "a") is True  # still protected by "b"
    assert core.is_protected(ps[0]) and core.is_protected(ps[0], "b") and not core.is_protected(ps[0], "a")
    assert "c0" not in core.trim(1.0)
    assert core.unprotect(ps[0], "b") is False
    assert not core.is_protected(ps[0])


def test_grace_period_and_silence() -> None:
    core, ps = core_with(4, low=1, high=2, grace=60.0, silence=10.0)
    assert core.trim(30.0) == []  # everyone still in grace
    assert core.next_deadline() == 40.0  # at most one trim every 10 s
    assert core.trim(35.0) == []  # not due
    late = peers(1)[0]
    core.opened("late", late, now=55.0)
    closed = core.trim(60.0)
    assert sorted(closed) == ["c0", "c1", "c2", "c3"]  # 5 open, low 1: every peer past its grace; "late" stays


def test_tags_go_with_the_last_connection_and_set_tag_peers() -> None:
    core, ps = core_with(3, low=0, high=10)
    core.set_tag_peers("mesh", [ps[0], ps[1]], 20)
    assert [core.tag_value(p) for p in ps] == [20, 20, 0]
    core.set_tag_peers("mesh", [ps[1], ps[2]], 20)
    assert [core.tag_value(p) for p in ps] == [0, 20, 20]
    core.untag_peer(ps[1], "mesh")
    assert core.tag_value(ps[1]) == 0
    core.closed("c2")
    assert core.tag_value(ps[2]) == 0  # gone with its connection
    core.closed("c2")  # twice: nothing
    assert core.connection_count == 2


def test_decaying_tags_lose_their_worth_over_time() -> None:
    core, ps = core_with(3, low=2, high=2)
    core.tag_peer(ps[0], "kad", 5)
    core.bump_decaying(ps[1], "deliveries", 20, rate=1.0, now=0.0)
    core.bump_decaying(ps[1], "deliveries", 10, rate=1.0, now=5.0)  # 15 left + 10
    assert core.tag_value(ps[1], now=5.0) == 25
    assert core.tag_value(ps[1], now=100.0) == 0  # decayed away, never negative
    # early on, the recently useful peer outranks the static tag: the untagged one goes
    assert core.trim(10.0, force=True) == ["c2"]
    core.closed("c2")
    newcomer = peers(1)[0]
    core.opened("c3", newcomer, now=10.0)
    core.tag_peer(newcomer, "app", 1)
    # later it has decayed below both others: it is the one to go
    assert core.trim(40.0, force=True) == ["c1"]


def test_equal_value_peers_without_streams_then_inbound_go_first() -> None:
    """go's SortByValueAndStreams: value first; among peers of equal value, one with no open stream
    goes before one with a request in flight, and an inbound one before an outbound one."""
    # c0: outbound, 2 streams; c1: inbound, 1 stream; c2: outbound, idle; c3: inbound, idle;
    # c4: inbound, idle, but worth 1
    activity = {"c0": (2, False), "c1": (1, True), "c2": (0, False), "c3": (0, True), "c4": (0, True)}
    expected = {4: ["c3"], 3: ["c2", "c3"], 2: ["c1", "c2", "c3"], 1: ["c0", "c1", "c2", "c3"]}
    for low, victims in expected.items():
        core, ps = core_with(5, low=low, high=low)
        core.tag_peer(ps[4], "app", 1)
        assert sorted(core.trim(1.0, activity=lambda c: activity[c])) == victims, low
    # without activity: equal value, newest first, then by id — the valuable peer still stays
    core, ps = core_with(5, low=2, high=3)
    core.tag_peer(ps[4], "app", 1)
    assert "c4" not in core.trim(1.0)
