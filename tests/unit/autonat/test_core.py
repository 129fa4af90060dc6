"""AutoNAT's sans-IO decisions: rate limits, which v1 addresses may be dialed (amplification), the v2
plan and its dial-data cost, the v1 confidence window and the v2 per-address verdicts."""

from __future__ import annotations

import ipaddress
import random

import pytest
from multiaddr import Multiaddr

from mycel.core.addrs import AddressPolicy, Reachability
from mycel.protocols.autonat.core import (
    DIAL_DATA_MAX,
    DIAL_DATA_MIN,
    AddrReachability,
    RateLimiter,
    ReachabilityTracker,
    v1_dial_candidates,
    v2_plan,
)

POLICY = AddressPolicy()
LAB = AddressPolicy(public_ranges=("198.18.0.0/15",))
CIRCUIT = "/ip4/8.8.8.8/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"


def _m(*addrs: str) -> list[Multiaddr]:
    return [Multiaddr(a) for a in addrs]


def test_rate_limiter_global_and_per_peer_windows() -> None:
    limits = RateLimiter(global_limit=5, peer_limit=2, window=60.0)
    assert limits.allow("a", 0.0) and limits.allow("a", 1.0)
    assert not limits.allow("a", 2.0)  # per peer
    assert limits.allow("b", 2.0) and limits.allow("b", 3.0) and limits.allow("c", 4.0)
    assert not limits.allow("d", 5.0)  # global
    assert limits.refused == 2 and len(limits) == 5
    assert limits.allow("a", 60.5)  # the first two of a's fell out of the window
    assert limits.allow("d", 61.5)
    assert len(limits) <= 5


def test_rate_limiter_memory_is_bounded_by_the_global_limit() -> None:
    limits = RateLimiter(global_limit=30, peer_limit=3)
    for i in range(10_000):
        limits.allow(f"peer{i}", i * 0.001)
    assert len(limits) == 30 and len(limits._peers) <= 30
    with pytest.raises(ValueError):
        RateLimiter(0, 1)


def test_v1_only_the_observed_ip_is_dialed() -> None:
    observed = ipaddress.ip_address("8.8.4.4")
    addrs = _m(
        "/ip4/8.8.4.4/tcp/4001",
        "/ip4/1.1.1.1/tcp/4001",  # a third party: dropped (amplification)
        "/ip4/8.8.4.4/udp/4001/quic-v1",
        "/ip4/10.0.0.2/tcp/4001",  # private
        CIRCUIT,  # relayed
        "/ip4/8.8.4.4/tcp/4001",  # a duplicate
        "/dns4/example.com/tcp/1",
    )
    assert v1_dial_candidates(addrs, observed, POLICY) == _m("/ip4/8.8.4.4/tcp/4001", "/ip4/8.8.4.4/udp/4001/quic-v1")
    assert v1_dial_candidates(addrs, None, POLICY) == []
    many = [Multiaddr(f"/ip4/8.8.4.4/tcp/{p}") for p in range(1, 100)]
    assert len(v1_dial_candidates(many, observed, POLICY)) == 16


def test_v1_private_observed_ip_is_refused_unless_declared_public() -> None:
    observed = ipaddress.ip_address("198.18.0.7")
    addrs = _m("/ip4/198.18.0.7/tcp/1")
    assert v1_dial_candidates(addrs, observed, POLICY) == []
    assert v1_dial_candidates(addrs, observed, LAB) == addrs


def test_v2_same_ip_costs_nothing_other_ip_costs_30_to_100_kb() -> None:
    rng = random.Random(1)
    observed = ipaddress.ip_address("8.8.4.4")
    same = v2_plan(_m("/ip4/8.8.4.4/tcp/1"), observed, POLICY, lambda a: True, rng)
    assert same.index == 0 and same.dial_data == 0
    costs = set()
    for _ in range(200):
        plan = v2_plan(_m("/ip4/1.1.1.1/tcp/1"), observed, POLICY, lambda a: True, rng)
        assert plan.index == 0
        assert DIAL_DATA_MIN <= plan.dial_data <= DIAL_DATA_MAX
        costs.add(plan.dial_data)
    assert len(costs) > 100  # random, not one fixed figure
    # no observed IP (e.g. a memory transport): always pay
    assert v2_plan(_m("/ip4/8.8.4.4/tcp/1"), None, POLICY, lambda a: True, rng).dial_data >= DIAL_DATA_MIN


def test_v2_picks_the_first_dialable_address() -> None:
    rng = random.Random(2)
    observed = ipaddress.ip_address("8.8.4.4")
    addrs: list[Multiaddr | None] = [None, *_m("/ip4/10.0.0.1/tcp/1", CIRCUIT, "/ip4/8.8.4.4/udp/1/webrtc-direct", "/ip4/8.8.4.4/tcp/2")]
    plan = v2_plan(addrs, observed, POLICY, lambda a: "webrtc" not in str(a), rng)
    assert plan.index == 4 and plan.dial_data == 0
    assert v2_plan([None, *_m("/ip4/10.0.0.1/tcp/1")], observed, POLICY, lambda a: True, rng).index is None


def _status(t: ReachabilityTracker) -> Reachability:
    return t.status  # (a call: mypy does not narrow it between observations)


def test_confidence_window_like_go() -> None:
    t = ReachabilityTracker(max_confidence=3)
    assert _status(t) is Reachability.UNKNOWN
    assert t.observe(Reachability.PRIVATE)  # unknown with no confidence: switches
    assert (_status(t), t.confidence) == (Reachability.PRIVATE, 0)
    for _ in range(5):
        t.observe(Reachability.PRIVATE)
    assert t.confidence == 3 and t.settled
    # three contrary "unknown" observations spend the confidence; the fourth switches
    for _ in range(3):
        assert not t.observe(Reachability.UNKNOWN)
    assert _status(t) is Reachability.PRIVATE
    assert t.observe(Reachability.UNKNOWN) and _status(t) is Reachability.UNKNOWN
    # public is taken at once
    t.observe(Reachability.PRIVATE)
    t.observe(Reachability.PRIVATE)
    assert t.observe(Reachability.PUBLIC) and _status(t) is Reachability.PUBLIC and t.confidence == 0
    t.observe(Reachability.PUBLIC)
    # a private observation spends confidence before switching
    assert not t.observe(Reachability.PRIVATE) and _status(t) is Reachability.PUBLIC
    assert t.observe(Reachability.PRIVATE) and _status(t) is Reachability.PRIVATE


def test_v2_per_address_verdicts() -> None:
    tracker = AddrReachability(confidence=3, window=5, max_addrs=2)
    a, b, c = _m("/ip4/8.8.8.8/tcp/1", "/ip4/8.8.8.8/udp/1/quic-v1", "/ip4/8.8.8.8/tcp/2")
    for _ in range(2):
        tracker.record(a, True)
    assert tracker.verdict(a) is Reachability.UNKNOWN
    assert tracker.record(a, True) and tracker.verdict(a) is Reachability.PUBLIC
    for _ in range(3):
        tracker.record(b, False)
    assert tracker.verdict(b) is Reachability.PRIVATE
    assert tracker.overall() is Reachability.PUBLIC
    assert not tracker.record(c, True) and c not in tracker.verdicts()  # bounded: dropped
    # the window forgets old results: five failures later, a is unreachable
    for _ in range(5):
        tracker.record(a, False)
    assert tracker.verdict(a) is Reachability.PRIVATE and tracker.overall() is Reachability.PRIVATE
    tracker.retain([b])
    assert list(tracker.verdicts()) == [b]
