"""The gossipsub v1.1 peer score: one test per go-libp2p-pubsub ``score_test.go`` test (by name), the
rust-libp2p ``peer_score/tests.rs`` cases that add something, parameter validation and table bounds.

Expected values are worked out by hand in each test. go's tests use decay factors of 1.0 ("no decay")
because they bypass validation; ours build validated parameters, so they use a real decay factor and
either read the score before the refresh or fold the decay into the expected value. Time is passed
explicitly: no sleeps, no clock.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.protocols.pubsub.score import (
    PeerScore,
    PeerScoreParams,
    PeerScoreThresholds,
    RejectReason,
    TopicScoreParams,
    score_parameter_decay,
)

TOPIC = "mytopic"


def _peer_ids(n: int) -> list[PeerId]:
    return [Identity.generate().peer_id for _ in range(n)]


def _mid(i: int) -> bytes:
    return f"msg-{i}".encode()


def _one_topic(tp: TopicScoreParams, **params: object) -> PeerScore:
    return PeerScore(PeerScoreParams(topics={TOPIC: tp}, **params), now=0.0)  # type: ignore[arg-type]


def _single_peer(tp: TopicScoreParams, graft: bool = True, **params: object) -> tuple[PeerScore, PeerId]:
    """A score table for one topic with one connected (and grafted) peer, at time 0."""
    ps = _one_topic(tp, **params)
    (a,) = _peer_ids(1)
    _connect(ps, [a], graft=graft)
    return ps, a


def _first_deliveries(cap: float = 2000.0, decay: float = 0.9) -> TopicScoreParams:
    return TopicScoreParams(
        first_message_deliveries_weight=1, first_message_deliveries_decay=decay, first_message_deliveries_cap=cap
    )


def _time_in_mesh(cap: float) -> TopicScoreParams:
    return TopicScoreParams(topic_weight=0.5, time_in_mesh_weight=1, time_in_mesh_quantum=0.001, time_in_mesh_cap=cap)


def _invalid_deliveries(decay: float) -> TopicScoreParams:
    return TopicScoreParams(invalid_message_deliveries_weight=-1, invalid_message_deliveries_decay=decay)


def _connect(ps: PeerScore, peers: list[PeerId], now: float = 0.0, graft: bool = True) -> None:
    for p in peers:
        ps.add_peer(p, now)
        if graft:
            ps.graft(p, TOPIC, now)


def _deliver(ps: PeerScore, sender: PeerId, count: int, now: float, duplicates_from: tuple[PeerId, ...] = ()) -> None:
    for i in range(count):
        mid = _mid(i)
        ps.validate_message(mid, now)
        ps.deliver_message(sender, mid, TOPIC, now)
        for p in duplicates_from:
            ps.duplicate_message(p, mid, TOPIC, now)


def _topic_breakdown(ps: PeerScore, peer: PeerId, now: float = 0.0) -> dict[str, object]:
    breakdown = ps.breakdown(peer, now)
    assert breakdown is not None
    (topic,) = breakdown.topics
    return dataclasses.asdict(topic)


# ---- go's score_test.go --------------------------------------------------------------------------------


def test_score_time_in_mesh() -> None:
    ps = _one_topic(_time_in_mesh(cap=3600))
    (a,) = _peer_ids(1)
    ps.add_peer(a, 10.0)
    assert ps.score(a, 10.0) == 0.0
    ps.graft(a, TOPIC, 10.0)
    ps.refresh(10.2)  # 200 ms = 200 quanta
    assert ps.score(a, 10.2) == 100.0  # 0.5 * 1 * 200
    assert ps.score(a, 10.9) == 100.0  # measured at refresh, not at score time (the spec's "lazily")
    ps.refresh(10.2004)  # 200.4 quanta: whole quanta only, as go divides durations
    assert ps.score(a, 10.2004) == 100.0
    ps.refresh(10.201)
    assert ps.score(a, 10.201) == 100.5


def test_score_time_in_mesh_cap() -> None:
    ps, a = _single_peer(_time_in_mesh(cap=10))
    ps.refresh(0.04)  # 40 quanta, capped at 10
    assert ps.score(a, 0.04) == 5.0


def test_score_first_message_deliveries() -> None:
    tp = _first_deliveries()
    ps, a = _single_peer(tp)
    _deliver(ps, a, 100, now=0.5)
    assert ps.score(a, 0.5) == 100.0
    ps.refresh(1.0)
    assert ps.score(a, 1.0) == 90.0


def test_score_first_message_deliveries_cap() -> None:
    tp = _first_deliveries(cap=50)
    ps, a = _single_peer(tp)
    _deliver(ps, a, 100, now=0.5)
    assert ps.score(a, 0.5) == 50.0


def test_score_first_message_deliveries_decay() -> None:
    tp = _first_deliveries()
    ps, a = _single_peer(tp)
    _deliver(ps, a, 100, now=0.5)
    ps.refresh(1.0)
    assert ps.score(a, 1.0) == 90.0
    for i in range(10):
        ps.refresh(2.0 + i)
    # 90 * 0.9^10 = 90 * 0.3486784401
    assert ps.score(a, 12.0) == pytest.approx(31.381059609, rel=1e-12)


def _mesh_params(**changes: float) -> TopicScoreParams:
    base = TopicScoreParams(
        mesh_message_deliveries_weight=-1,
        mesh_message_deliveries_activation=1.0,
        mesh_message_deliveries_window=0.01,
        mesh_message_deliveries_threshold=20,
        mesh_message_deliveries_cap=100,
        mesh_message_deliveries_decay=0.5,
    )
    return dataclasses.replace(base, **changes)


def test_score_mesh_message_deliveries() -> None:
    # A delivers first, B duplicates within the window, C after it: only C falls short of the threshold
    ps = _one_topic(_mesh_params())
    a, b, c = _peer_ids(3)
    _connect(ps, [a, b, c])
    ps.refresh(0.5)
    assert [ps.score(p, 0.5) for p in (a, b, c)] == [0.0, 0.0, 0.0]  # not active yet
    _deliver(ps, a, 100, now=1.5, duplicates_from=(b,))
    for i in range(100):
        ps.duplicate_message(c, _mid(i), TOPIC, 1.53)  # 30 ms after validation, window 10 ms
    ps.refresh(2.0)  # 2 s in the mesh > 1 s activation; A and B: 100 → 50 after decay, above 20
    assert ps.score(a, 2.0) == 0.0
    assert ps.score(b, 2.0) == 0.0
    assert ps.score(c, 2.0) == -400.0  # -1 * (20 - 0)^2


def test_score_mesh_message_deliveries_decay() -> None:
    ps, a = _single_peer(_mesh_params(mesh_message_deliveries_decay=0.9))
    _deliver(ps, a, 40, now=0.5)
    ps.refresh(1.5)  # active; 40 * 0.9 = 36 >= 20
    assert ps.score(a, 1.5) == 0.0
    for i in range(20):
        ps.refresh(2.5 + i)
    count = 40 * 0.9**21  # ≈ 4.3768
    assert ps.score(a, 30.0) == pytest.approx(-((20 - count) ** 2), rel=1e-12)
    assert ps.score(a, 30.0) == pytest.approx(-244.0856, abs=1e-4)


def test_score_mesh_failure_penalty() -> None:
    # P3's weight is 0: only the sticky P3b shows, and only for the peer pruned with a deficit
    tp = _mesh_params(mesh_message_deliveries_weight=0, mesh_failure_penalty_weight=-1, mesh_failure_penalty_decay=0.5)
    ps = _one_topic(tp)
    a, b = _peer_ids(2)
    _connect(ps, [a, b])
    _deliver(ps, a, 100, now=0.5)
    ps.refresh(1.5)
    assert (ps.score(a, 1.5), ps.score(b, 1.5)) == (0.0, 0.0)
    ps.prune(b, TOPIC, 1.6)
    assert ps.score(b, 1.6) == -400.0  # -1 * 20^2
    ps.refresh(2.5)
    assert ps.score(a, 2.5) == 0.0
    assert ps.score(b, 2.5) == -200.0  # P3b decayed by 0.5
    ps.prune(a, TOPIC, 2.6)  # A delivered enough: no penalty
    assert ps.score(a, 2.6) == 0.0


def test_score_invalid_message_deliveries() -> None:
    ps, a = _single_peer(_invalid_deliveries(0.5))
    for i in range(100):
        ps.reject_message(a, _mid(i), TOPIC, RejectReason.INVALID_SIGNATURE, 0.5)
    assert ps.score(a, 0.5) == -10000.0  # -1 * 100^2
    ps.refresh(1.0)
    assert ps.score(a, 1.0) == -2500.0  # -1 * 50^2


def test_score_invalid_message_deliveries_decay() -> None:
    ps, a = _single_peer(_invalid_deliveries(0.9))
    for i in range(100):
        ps.reject_message(a, _mid(i), TOPIC, RejectReason.INVALID_SIGNATURE, 0.5)
    ps.refresh(1.0)
    assert ps.score(a, 1.0) == pytest.approx(-8100.0, rel=1e-12)  # -(100 * 0.9)^2
    for i in range(10):
        ps.refresh(2.0 + i)
    assert ps.score(a, 12.0) == pytest.approx(-(31.381059609**2), rel=1e-12)  # -(90 * 0.9^10)^2


def test_score_reject_message_deliveries() -> None:
    # go reuses one message and clears its record between phases; a fresh message id per phase is the same
    ps = _one_topic(_invalid_deliveries(0.5))
    a, b = _peer_ids(2)
    _connect(ps, [a, b], graft=False)

    for reason in (RejectReason.BLACKLISTED_PEER, RejectReason.BLACKLISTED_SOURCE, RejectReason.VALIDATION_QUEUE_FULL):
        ps.reject_message(a, b"m0", TOPIC, reason, 0.0)
    assert ps.score(a, 0.0) == 0.0
    assert ps.stats()["delivery_records"] == 0  # not even a record

    ps.validate_message(b"m1", 0.0)
    ps.reject_message(a, b"m1", TOPIC, RejectReason.VALIDATION_THROTTLED, 0.0)
    ps.duplicate_message(b, b"m1", TOPIC, 0.0)
    assert (ps.score(a, 0.0), ps.score(b, 0.0)) == (0.0, 0.0)

    ps.validate_message(b"m2", 0.0)
    ps.reject_message(a, b"m2", TOPIC, RejectReason.VALIDATION_IGNORED, 0.0)
    ps.duplicate_message(b, b"m2", TOPIC, 0.0)
    assert (ps.score(a, 0.0), ps.score(b, 0.0)) == (0.0, 0.0)

    # rejected, then a duplicate: both penalized
    ps.validate_message(b"m3", 0.0)
    ps.reject_message(a, b"m3", TOPIC, RejectReason.VALIDATION_FAILED, 0.0)
    ps.duplicate_message(b, b"m3", TOPIC, 0.0)
    assert (ps.score(a, 0.0), ps.score(b, 0.0)) == (-1.0, -1.0)

    # a duplicate during validation, then rejected: the forwarder is penalized with the sender
    ps.validate_message(b"m4", 0.0)
    ps.duplicate_message(b, b"m4", TOPIC, 0.0)
    ps.reject_message(a, b"m4", TOPIC, RejectReason.VALIDATION_FAILED, 0.0)
    assert (ps.score(a, 0.0), ps.score(b, 0.0)) == (-4.0, -4.0)

    # a second rejection trace of the same message changes nothing
    ps.reject_message(a, b"m4", TOPIC, RejectReason.VALIDATION_FAILED, 0.0)
    assert ps.score(a, 0.0) == -4.0


def test_score_application_score() -> None:
    value = [0.0]
    ps = PeerScore(PeerScoreParams(app_specific_score=lambda _p: value[0], app_specific_weight=0.5), now=0.0)
    (a,) = _peer_ids(1)
    _connect(ps, [a])
    for i in range(-100, 100):
        value[0] = float(i)
        ps.refresh(float(i + 101))
        assert ps.score(a, float(i + 101)) == i / 2


def _colocated(whitelist: tuple[str, ...] = ()) -> tuple[PeerScore, list[PeerId]]:
    """go's layout: A alone on 1.2.3.4; B, C and D share 2.3.4.5 (C also has 3.4.5.6). Threshold 1, weight -1."""
    params = PeerScoreParams(
        ip_colocation_factor_threshold=1, ip_colocation_factor_weight=-1, ip_colocation_factor_whitelist=whitelist
    )
    ps = PeerScore(params, now=0.0)
    peers = _peer_ids(4)
    _connect(ps, peers)
    for peer, ips in zip(peers, (["1.2.3.4"], ["2.3.4.5"], ["2.3.4.5", "3.4.5.6"], ["2.3.4.5"]), strict=True):
        ps.set_ips(peer, ips)
    ps.refresh(1.0)
    return ps, peers


def test_score_ip_colocation() -> None:
    ps, (a, b, c, d) = _colocated()
    assert ps.score(a, 1.0) == 0.0
    assert [ps.score(p, 1.0) for p in (b, c, d)] == [-4.0, -4.0, -4.0]  # -1 * (3 - 1)^2
    # only connected peers count: D leaves, two share the IP
    ps.remove_peer(d, 2.0)
    assert [ps.score(p, 2.0) for p in (b, c)] == [-1.0, -1.0]
    assert ps.score(d, 2.0) == 0.0  # retained (score was not positive), but its IPs no longer count
    # the peer's IPs change
    ps.set_ips(c, ["3.4.5.6"])
    assert (ps.score(b, 2.0), ps.score(c, 2.0)) == (0.0, 0.0)


def test_score_ip_colocation_whitelist() -> None:
    ps, peers = _colocated(whitelist=("2.3.0.0/16",))
    assert [ps.score(p, 1.0) for p in peers] == [0.0, 0.0, 0.0, 0.0]


def test_score_behaviour_penalty() -> None:
    ps = PeerScore(PeerScoreParams(behaviour_penalty_weight=-1, behaviour_penalty_decay=0.99), now=0.0)
    (a,) = _peer_ids(1)
    ps.add_penalty(a, 1)  # unknown peer: ignored
    assert ps.score(a, 0.0) == 0.0
    ps.add_peer(a, 0.0)
    assert ps.score(a, 0.0) == 0.0
    ps.add_penalty(a, 1)
    assert ps.score(a, 0.0) == -1.0
    ps.add_penalty(a)
    assert ps.score(a, 0.0) == -4.0
    ps.refresh(1.0)
    assert ps.score(a, 1.0) == -3.9204  # -(2 * 0.99)^2


def test_score_retention() -> None:
    ps = PeerScore(PeerScoreParams(app_specific_score=lambda _p: -1000.0, retain_score=1.0), now=0.0)
    (a,) = _peer_ids(1)
    _connect(ps, [a])
    ps.refresh(1.0)
    assert ps.score(a, 1.0) == -1000.0
    ps.remove_peer(a, 1.0)
    ps.refresh(1.5)
    assert ps.score(a, 1.5) == -1000.0
    assert ps.peers() == [a]
    ps.refresh(2.0)  # expires after now + retain_score, not at it
    assert ps.peers() == [a]
    ps.refresh(2.05)
    assert ps.score(a, 2.05) == 0.0
    assert ps.peers() == []


def test_score_recap_topic_params() -> None:
    tp = dataclasses.replace(_mesh_params(), first_message_deliveries_weight=10, first_message_deliveries_cap=100)
    ps = _one_topic(tp)
    a, b = _peer_ids(2)
    _connect(ps, [a, b])
    _deliver(ps, a, 100, now=0.5, duplicates_from=(b,))
    assert _topic_breakdown(ps, a)["first_message_deliveries"] == 100.0
    assert _topic_breakdown(ps, b)["mesh_message_deliveries"] == 100.0

    ps.set_topic_params(TOPIC, dataclasses.replace(tp, first_message_deliveries_cap=50, mesh_message_deliveries_cap=50))
    assert ps.params.topics[TOPIC].first_message_deliveries_cap == 50
    assert _topic_breakdown(ps, a)["first_message_deliveries"] == 50.0
    assert _topic_breakdown(ps, b)["mesh_message_deliveries"] == 50.0
    # raising the caps again does not raise the counters
    ps.set_topic_params(TOPIC, tp)
    assert _topic_breakdown(ps, a)["first_message_deliveries"] == 50.0


def test_score_reset_topic_params() -> None:
    tp = _invalid_deliveries(0.5)
    ps, a = _single_peer(tp, graft=False)
    for i in range(100):
        ps.validate_message(_mid(i), 0.0)
        ps.reject_message(a, _mid(i), TOPIC, RejectReason.VALIDATION_FAILED, 0.0)
    assert ps.score(a, 0.0) == -10000.0
    ps.set_topic_params(TOPIC, dataclasses.replace(tp, invalid_message_deliveries_weight=-10))
    assert ps.score(a, 0.0) == -100000.0


# ---- what rust's tests and the spec add ------------------------------------------------------------------


def test_score_mesh_message_deliveries_window() -> None:
    ps = _one_topic(_mesh_params())
    a, b, c, d, e = _peer_ids(5)
    _connect(ps, [a, b, c, d])
    ps.add_peer(e, 0.0)  # connected, not in the mesh
    ps.validate_message(b"m", 1.0)
    ps.duplicate_message(b, b"m", TOPIC, 1.001)  # during validation: counted when it is accepted
    ps.duplicate_message(b, b"m", TOPIC, 1.002)  # the same peer again: once only
    ps.deliver_message(a, b"m", TOPIC, 1.005)
    ps.duplicate_message(c, b"m", TOPIC, 1.015)  # exactly the 10 ms window: counts (go: only "> window" misses)
    ps.duplicate_message(d, b"m", TOPIC, 1.0151)  # 10.1 ms: too late
    ps.duplicate_message(e, b"m", TOPIC, 1.006)  # in time, but not a mesh peer
    counts = [_topic_breakdown(ps, p)["mesh_message_deliveries"] for p in (a, b, c, d, e)]
    assert counts == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_score_mesh_message_deliveries_activation() -> None:
    # P3 starts once the time in the mesh is *more* than the activation time, measured at refresh
    ps, a = _single_peer(_mesh_params())
    ps.refresh(1.0)  # exactly 1 s
    assert ps.score(a, 1.0) == 0.0
    ps.refresh(1.001)
    assert ps.score(a, 1.001) == -400.0
    ps.graft(a, TOPIC, 5.0)  # a new GRAFT starts the activation over
    assert ps.score(a, 5.0) == 0.0


def test_score_prune_ends_the_mesh_delivery_penalty() -> None:
    # after a prune only the sticky P3b remains (rust-libp2p, js-libp2p-gossipsub #212; go keeps P3 too)
    tp = _mesh_params(mesh_failure_penalty_weight=-1, mesh_failure_penalty_decay=0.5)
    ps, a = _single_peer(tp)
    ps.refresh(1.5)
    assert ps.score(a, 1.5) == -400.0  # P3
    ps.prune(a, TOPIC, 1.6)
    assert ps.score(a, 1.6) == -400.0  # P3b only, not P3 + P3b = -800
    topic = _topic_breakdown(ps, a)
    assert (topic["mesh_deficit_penalty"], topic["mesh_failure_penalty"], topic["in_mesh"]) == (0.0, 400.0, False)


def test_score_remove_peer_retains_with_mesh_failure_penalty() -> None:
    tp = _mesh_params(
        first_message_deliveries_weight=1,
        first_message_deliveries_decay=0.5,
        first_message_deliveries_cap=100,
        mesh_failure_penalty_weight=-1,
        mesh_failure_penalty_decay=0.5,
    )
    ps, a = _single_peer(tp, retain_score=10.0)
    _deliver(ps, a, 5, now=0.5)
    ps.refresh(1.5)  # P2 = 2.5, P3 counter 2.5 → deficit 17.5
    assert ps.score(a, 1.5) == 2.5 - 306.25
    ps.remove_peer(a, 1.6)
    breakdown = ps.breakdown(a, 1.6)
    assert breakdown is not None and not breakdown.connected
    (topic,) = breakdown.topics
    assert (topic.first_message_deliveries, topic.mesh_failure_penalty, topic.in_mesh) == (0.0, 306.25, False)
    assert ps.score(a, 1.6) == -306.25
    ps.refresh(2.5)  # retained scores do not decay
    assert ps.score(a, 2.5) == -306.25
    # reconnecting revives the record as it was
    ps.add_peer(a, 3.0)
    assert ps.score(a, 3.0) == -306.25
    ps.refresh(20.0)  # connected again: not expired, and decaying
    assert ps.peers() == [a]
    assert ps.score(a, 20.0) == -153.125


def test_score_positive_peer_is_forgotten_on_disconnect() -> None:
    ps = _one_topic(TopicScoreParams(first_message_deliveries_weight=1, first_message_deliveries_cap=10))
    a, b = _peer_ids(2)
    _connect(ps, [a, b])
    ps.set_ips(a, ["5.6.7.8"])
    _deliver(ps, a, 3, now=0.5)
    ps.remove_peer(a, 1.0)
    ps.remove_peer(b, 1.0)  # score 0: retained
    assert ps.peers() == [b]
    assert ps.score(a, 1.0) == 0.0
    assert ps.stats()["tracked_ips"] == 0


def test_score_reject_sender_only_reasons() -> None:
    # signature-policy failures penalize the sender at once and leave the delivery record alone
    ps = _one_topic(_invalid_deliveries(0.5))
    a, b = _peer_ids(2)
    _connect(ps, [a, b], graft=False)
    reasons = [
        RejectReason.MISSING_SIGNATURE,
        RejectReason.INVALID_SIGNATURE,
        RejectReason.UNEXPECTED_SIGNATURE,
        RejectReason.UNEXPECTED_AUTH_INFO,
        RejectReason.SELF_ORIGIN,
    ]
    ps.validate_message(b"m", 0.0)
    ps.duplicate_message(b, b"m", TOPIC, 0.0)
    for reason in reasons:
        ps.reject_message(a, b"m", TOPIC, reason, 0.0)
    assert ps.score(a, 0.0) == -25.0  # -(5)^2
    assert ps.score(b, 0.0) == 0.0  # the forwarder is not penalized; the record is still being validated
    ps.reject_message(a, b"m", TOPIC, RejectReason.VALIDATION_FAILED, 0.0)
    assert (ps.score(a, 0.0), ps.score(b, 0.0)) == (-36.0, -1.0)


def test_score_duplicates_of_an_invalid_message_are_penalized_each_time() -> None:
    ps = _one_topic(_invalid_deliveries(0.5))
    a, b = _peer_ids(2)
    _connect(ps, [a, b], graft=False)
    ps.validate_message(b"m", 0.0)
    ps.reject_message(a, b"m", TOPIC, RejectReason.VALIDATION_FAILED, 0.0)
    ps.duplicate_message(b, b"m", TOPIC, 0.0)
    ps.duplicate_message(b, b"m", TOPIC, 0.0)  # go keeps no forwarder set once invalid
    assert ps.score(b, 0.0) == -4.0


def test_score_decay_to_zero() -> None:
    tp = _first_deliveries(cap=10, decay=0.5)
    ps, a = _single_peer(tp, decay_to_zero=0.01)
    _deliver(ps, a, 1, now=0.5)
    for i in range(6):
        ps.refresh(1.0 + i)
    assert ps.score(a, 6.0) == 0.015625  # 0.5^6, still above 0.01
    ps.refresh(7.0)
    assert ps.score(a, 7.0) == 0.0  # 0.0078125 < 0.01 snaps to 0
    assert _topic_breakdown(ps, a)["first_message_deliveries"] == 0.0


def test_score_parameter_decay() -> None:
    assert score_parameter_decay(10.0) == pytest.approx(0.6309573444801932, rel=1e-15)  # 0.01^(1/10)
    assert score_parameter_decay(10.0, 2.0) == pytest.approx(0.3981071705534972, rel=1e-15)  # 0.01^(1/5)
    assert score_parameter_decay(10.5, 2.0) == score_parameter_decay(10.0, 2.0)  # whole intervals, as go
    assert score_parameter_decay(4.0, 1.0, 0.0625) == 0.5
    with pytest.raises(ValueError, match="decay"):
        score_parameter_decay(0.5)
    # ten refreshes take a counter of 1 down to 0.01
    ps, a = _single_peer(_first_deliveries(cap=10, decay=score_parameter_decay(10.0)), decay_to_zero=0.001)
    _deliver(ps, a, 1, now=0.5)
    for i in range(10):
        ps.refresh(1.0 + i)
    assert ps.score(a, 10.0) == pytest.approx(0.01, rel=1e-9)


def test_score_topic_score_cap() -> None:
    tp = TopicScoreParams(
        first_message_deliveries_weight=1,
        first_message_deliveries_cap=100,
        invalid_message_deliveries_weight=-1,
    )
    params = PeerScoreParams(topics={"a": tp, "b": tp}, topic_score_cap=15.0, app_specific_score=lambda _p: 2.0)
    ps = PeerScore(params, now=0.0)
    p, q = _peer_ids(2)
    for peer in (p, q):
        ps.add_peer(peer, 0.0)
    for i in range(10):
        for topic in ("a", "b"):
            ps.deliver_message(p, f"{topic}{i}".encode(), topic, 0.0)
    breakdown = ps.breakdown(p, 0.0)
    assert breakdown is not None
    assert [t.weighted for t in breakdown.topics] == [10.0, 10.0]
    assert breakdown.topic_total == 15.0  # 20 capped
    assert ps.score(p, 0.0) == 17.0  # + P5, which the cap does not touch
    # a negative topic total is not capped
    for i in range(5):
        ps.reject_message(q, f"x{i}".encode(), "a", RejectReason.INVALID_SIGNATURE, 0.0)
    assert ps.score(q, 0.0) == -25.0 + 2.0


def test_score_unscored_topic_and_unknown_peer() -> None:
    ps = _one_topic(TopicScoreParams(first_message_deliveries_weight=1, first_message_deliveries_cap=10))
    a, stranger = _peer_ids(2)
    ps.add_peer(a, 0.0)
    ps.graft(a, "other", 0.0)
    ps.deliver_message(a, b"m", "other", 0.0)
    ps.reject_message(a, b"n", "other", RejectReason.INVALID_SIGNATURE, 0.0)
    assert ps.score(a, 0.0) == 0.0
    breakdown = ps.breakdown(a, 0.0)
    assert breakdown is not None and breakdown.topics == ()
    # events about a peer we have no record of change nothing and create nothing
    ps.graft(stranger, TOPIC, 0.0)
    ps.deliver_message(stranger, b"s", TOPIC, 0.0)
    ps.set_ips(stranger, ["9.9.9.9"])
    ps.set_app_score(stranger, 5.0)
    assert ps.score(stranger, 0.0) == 0.0
    assert ps.breakdown(stranger, 0.0) is None
    assert ps.peers() == [a]
    ps.remove_peer(stranger, 0.0)


def test_score_set_app_score_overrides_the_function() -> None:
    ps = PeerScore(PeerScoreParams(app_specific_score=lambda _p: 3.0, app_specific_weight=2.0), now=0.0)
    a, b = _peer_ids(2)
    _connect(ps, [a, b], graft=False)
    ps.set_app_score(a, -10.0)
    assert (ps.score(a, 0.0), ps.score(b, 0.0)) == (-20.0, 6.0)
    with pytest.raises(ValueError, match="finite"):
        ps.set_app_score(a, math.nan)


def test_score_ip_colocation_ipv6_loopback_and_threshold() -> None:
    ps = PeerScore(PeerScoreParams(ip_colocation_factor_threshold=2, ip_colocation_factor_weight=-0.5), now=0.0)
    a, b, c, d = _peer_ids(4)
    _connect(ps, [a, b, c, d], graft=False)
    ps.set_ips(a, ["2001:db8:1:2::1"])
    ps.set_ips(b, ["2001:db8:1:2::2"])  # same /64
    ps.set_ips(c, ["2001:db8:1:2:ffff::3", "::1", "127.0.0.1"])  # same /64; loopback never counts
    ps.set_ips(d, ["::ffff:7.7.7.7"])  # IPv4-mapped counts as 7.7.7.7
    # three peers in the /64, threshold 2: surplus 1 → -0.5 each; their own addresses are distinct
    assert [ps.score(p, 0.0) for p in (a, b, c)] == [-0.5, -0.5, -0.5]
    breakdown = ps.breakdown(c, 0.0)
    assert breakdown is not None and breakdown.ip_colocation == 1.0
    assert ps.score(d, 0.0) == 0.0
    assert ps.stats()["tracked_ips"] == 5  # 3 addresses + the /64 + 7.7.7.7
    with pytest.raises(ValueError):
        ps.set_ips(a, ["not an ip"])


def test_score_breakdown_adds_up() -> None:
    tp = _mesh_params(
        topic_weight=2.0,
        time_in_mesh_weight=0.5,
        time_in_mesh_quantum=1.0,
        time_in_mesh_cap=100,
        first_message_deliveries_weight=1,
        first_message_deliveries_decay=0.5,
        first_message_deliveries_cap=100,
        invalid_message_deliveries_weight=-1,
    )
    params = PeerScoreParams(
        topics={TOPIC: tp},
        app_specific_score=lambda _p: 4.0,
        app_specific_weight=0.25,
        behaviour_penalty_weight=-2,
        behaviour_penalty_threshold=1,
        behaviour_penalty_decay=0.5,
    )
    ps = PeerScore(params, now=0.0)
    (a,) = _peer_ids(1)
    _connect(ps, [a])
    _deliver(ps, a, 8, now=0.5)
    ps.reject_message(a, b"bad", TOPIC, RejectReason.INVALID_SIGNATURE, 0.6)
    ps.refresh(3.0)  # P1 = 3 quanta; P2 = 4; P3 counter 4 → deficit 16; P4 counter 0.5
    ps.add_penalty(a, 4)  # P7 counter 4, excess 3
    b = ps.breakdown(a, 3.0)
    assert b is not None
    (t,) = b.topics
    assert (t.mesh_time, t.time_in_mesh, t.first_message_deliveries) == (3.0, 3.0, 4.0)
    assert (t.mesh_message_deliveries, t.mesh_message_deliveries_active, t.mesh_deficit_penalty) == (4.0, True, 256.0)
    assert t.invalid_message_deliveries == 0.5
    assert t.score == 1.5 + 4.0 - 256.0 - 0.25
    assert t.weighted == 2 * t.score == b.topic_total
    assert (b.app_specific, b.ip_colocation, b.behaviour_penalty, b.connected) == (4.0, 0.0, 4.0, True)
    assert b.score == ps.score(a, 3.0) == -501.5 + 1.0 - 18.0


def test_score_next_refresh() -> None:
    ps = PeerScore(PeerScoreParams(decay_interval=2.0), now=10.0)
    assert ps.next_refresh() == 12.0
    ps.refresh(12.0)
    assert ps.next_refresh() == 14.0
    ps.refresh(14.3)  # a little late: the cadence holds
    assert ps.next_refresh() == 16.0
    ps.refresh(25.0)  # very late: no burst of catch-up refreshes
    assert ps.next_refresh() == 27.0


# ---- bounds -----------------------------------------------------------------------------------------------


def test_score_delivery_records_expire_after_ttl() -> None:
    ps = PeerScore(PeerScoreParams(), now=0.0, delivery_record_ttl=120.0)
    for i in range(3000):
        ps.validate_message(_mid(i), i / 100)  # 0 .. 29.99 s
    assert ps.stats()["delivery_records"] == 3000
    ps.refresh(130.0)  # records first seen before 10 s are gone
    assert ps.stats()["delivery_records"] == 2000
    ps.refresh(150.0)
    assert ps.stats()["delivery_records"] == 0


def test_score_delivery_records_are_capped() -> None:
    tp = TopicScoreParams(invalid_message_deliveries_weight=-1)
    ps = PeerScore(PeerScoreParams(topics={TOPIC: tp}), now=0.0, max_delivery_records=1000)
    a, b = _peer_ids(2)
    _connect(ps, [a, b], graft=False)
    ps.validate_message(b"first", 0.0)
    ps.duplicate_message(b, b"first", TOPIC, 0.0)
    for i in range(10_000):
        ps.validate_message(_mid(i), 0.0)
    assert ps.stats()["delivery_records"] == 1000
    assert ps.stats()["delivery_record_peers"] == 0  # the oldest record, with B in it, was dropped
    # its late rejection opens a fresh record: B's early copy is no longer known
    ps.reject_message(a, b"first", TOPIC, RejectReason.VALIDATION_FAILED, 0.0)
    assert (ps.score(a, 0.0), ps.score(b, 0.0)) == (-1.0, 0.0)
    assert ps.stats()["delivery_records"] == 1000


def test_score_retained_peers_expire() -> None:
    ps = PeerScore(PeerScoreParams(retain_score=60.0), now=0.0)
    peers = _peer_ids(200)
    for i, p in enumerate(peers):
        ps.add_peer(p, 0.0)
        ps.set_ips(p, [f"10.0.{i // 250}.{i % 250}"])
    assert ps.stats()["tracked_ips"] == 200
    for i, p in enumerate(peers):
        ps.remove_peer(p, float(i))  # score 0: retained
    assert ps.stats() == {
        "peers": 200,
        "connected_peers": 0,
        "retained_peers": 200,
        "tracked_ips": 0,
        "delivery_records": 0,
        "delivery_record_peers": 0,
    }
    ps.refresh(160.5)  # disconnected before 100.5 s: gone
    assert ps.stats()["retained_peers"] == 99
    ps.refresh(260.0)
    assert ps.stats()["peers"] == 0
    assert ps.peers() == []


def test_score_retained_peers_are_capped() -> None:
    ps = PeerScore(PeerScoreParams(), now=0.0, max_retained_peers=50)
    peers = _peer_ids(120)
    for p in peers:
        ps.add_peer(p, 0.0)
    for i, p in enumerate(peers):
        ps.remove_peer(p, float(i))
    assert ps.stats()["retained_peers"] == 50
    assert set(ps.peers()) == set(peers[-50:])  # the earliest disconnects were forgotten first


# ---- parameter validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"topic_weight": -1.0}, "topic_weight"),
        ({"topic_weight": math.inf}, "topic_weight"),
        ({"time_in_mesh_weight": -1.0}, "time_in_mesh_weight"),
        ({"time_in_mesh_quantum": 0.0}, "time_in_mesh_quantum"),
        ({"time_in_mesh_weight": 1.0, "time_in_mesh_cap": 0.0}, "time_in_mesh_cap"),
        ({"first_message_deliveries_weight": -1.0}, "first_message_deliveries_weight"),
        ({"first_message_deliveries_weight": 1, "first_message_deliveries_decay": 1}, "first_message_deliveries_decay"),
        ({"first_message_deliveries_weight": 1.0, "first_message_deliveries_cap": 0.0}, "first_message_deliveries_cap"),
        ({"mesh_message_deliveries_weight": 1.0}, "mesh_message_deliveries_weight"),
        ({"mesh_message_deliveries_weight": -1, "mesh_message_deliveries_decay": 0}, "mesh_message_deliveries_decay"),
        ({"mesh_message_deliveries_weight": -1.0, "mesh_message_deliveries_cap": -1.0}, "mesh_message_deliveries_cap"),
        (
            {"mesh_message_deliveries_weight": -1.0, "mesh_message_deliveries_threshold": 0.0},
            "mesh_message_deliveries_threshold",
        ),
        (
            {"mesh_message_deliveries_weight": -1.0, "mesh_message_deliveries_activation": 0.5},
            "mesh_message_deliveries_activation",
        ),
        ({"mesh_message_deliveries_window": -0.001}, "mesh_message_deliveries_window"),
        ({"mesh_failure_penalty_weight": 1.0}, "mesh_failure_penalty_weight"),
        ({"mesh_failure_penalty_weight": -1.0, "mesh_failure_penalty_decay": 1.5}, "mesh_failure_penalty_decay"),
        ({"invalid_message_deliveries_weight": 1.0}, "invalid_message_deliveries_weight"),
        ({"invalid_message_deliveries_decay": 1.0}, "invalid_message_deliveries_decay"),
        ({"first_message_deliveries_decay": math.nan}, "first_message_deliveries_decay"),
    ],
)
def test_score_topic_params_validation(changes: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TopicScoreParams(**changes)


def test_score_topic_params_defaults_and_disabled_terms() -> None:
    tp = TopicScoreParams()
    assert tp.topic_weight == 1.0
    weights = [v for k, v in dataclasses.asdict(tp).items() if k.endswith("_weight") and k != "topic_weight"]
    assert weights == [0.0] * 5  # P1, P2, P3, P3b, P4
    # as go: the decay, cap, threshold and activation of a term with weight 0 are not checked (P4's decay is)
    TopicScoreParams(first_message_deliveries_decay=1.0, mesh_message_deliveries_activation=0.0, time_in_mesh_cap=0.0)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"topic_score_cap": -1.0}, "topic_score_cap"),
        ({"app_specific_weight": math.nan}, "app_specific_weight"),
        ({"ip_colocation_factor_weight": 1.0}, "ip_colocation_factor_weight"),
        ({"ip_colocation_factor_threshold": 0}, "ip_colocation_factor_threshold"),
        ({"ip_colocation_factor_whitelist": ("10.0.0.0/8", "nonsense")}, "ip_colocation_factor_whitelist"),
        ({"behaviour_penalty_weight": 1.0}, "behaviour_penalty_weight"),
        ({"behaviour_penalty_weight": -1.0, "behaviour_penalty_decay": 1.0}, "behaviour_penalty_decay"),
        ({"behaviour_penalty_threshold": -1.0}, "behaviour_penalty_threshold"),
        ({"decay_interval": 0.5}, "decay_interval"),
        ({"decay_to_zero": 0.0}, "decay_to_zero"),
        ({"decay_to_zero": 1.0}, "decay_to_zero"),
        ({"retain_score": -1.0}, "retain_score"),
        ({"topics": {"t": {"topic_weight": 1.0}}}, "topics"),
    ],
)
def test_score_peer_params_validation(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PeerScoreParams(**changes)  # type: ignore[arg-type]


def test_score_peer_params_topics_are_a_read_only_copy() -> None:
    topics = {TOPIC: TopicScoreParams()}
    params = PeerScoreParams(topics=topics, ip_colocation_factor_whitelist=("10.0.0.0/8",))
    topics["later"] = TopicScoreParams()
    assert list(params.topics) == [TOPIC]
    with pytest.raises(TypeError):
        params.topics["x"] = TopicScoreParams()  # type: ignore[index]
    assert dataclasses.replace(params, retain_score=1.0).topics == params.topics
    hash(params)  # usable inside a hashed frozen config


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"gossip_threshold": 1.0}, "gossip_threshold"),
        ({"publish_threshold": -5.0}, "publish_threshold"),  # above gossip (-10)
        ({"graylist_threshold": -20.0}, "graylist_threshold"),  # above publish (-50)
        ({"accept_px_threshold": -1.0}, "accept_px_threshold"),
        ({"opportunistic_graft_threshold": -1.0}, "opportunistic_graft_threshold"),
        ({"gossip_threshold": -math.inf}, "gossip_threshold"),
    ],
)
def test_score_thresholds_validation(changes: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PeerScoreThresholds(**changes)


def test_score_thresholds_defaults() -> None:
    t = PeerScoreThresholds()
    assert (t.gossip_threshold, t.publish_threshold, t.graylist_threshold) == (-10.0, -50.0, -80.0)
    assert (t.accept_px_threshold, t.opportunistic_graft_threshold) == (10.0, 20.0)
    PeerScoreThresholds(gossip_threshold=0.0, publish_threshold=0.0, graylist_threshold=0.0)
