"""Spam and attack tests on the sans-IO gossipsub router: go-libp2p-pubsub's ``gossipsub_spam_test.go``
(by name, with go's parameters) and the floods of the security advisories (CVE-2026-46679 subscription
flood, IHAVE floods, oversized and off-topic messages).

Each test drives one router by hand with hostile mock peers (:mod:`.mock_peer`) under virtual time:
nothing sleeps, every random choice is seeded.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from mycel.protocols.pubsub import rpc_pb2
from mycel.protocols.pubsub.config import GOSSIPSUB_V12, GossipsubConfig
from mycel.protocols.pubsub.core import InvalidMessageReceived, PeerGraylisted, ValidationResult
from mycel.protocols.pubsub.score import PeerScoreParams, PeerScoreThresholds, TopicScoreParams, score_parameter_decay

from .mock_peer import TOPIC, Harness, MockPeer, control, graft, idontwant, ihave, iwant, prune, subscribe, unsubscribe

ACCEPT = ValidationResult.ACCEPT


def _joined(config: GossipsubConfig | None = None, *, seed: int = 1) -> tuple[Harness, MockPeer]:
    """A router subscribed to TOPIC and an attacker that, like go's mock peer, answers the router's
    greeting by subscribing to TOPIC and grafting it."""
    h = Harness(config, seed=seed)
    h.router.join(TOPIC, h.now)
    attacker = h.add_peer()
    greeting = h.out.controls_to(attacker.peer_id)
    assert [(s.subscribe, s.topicid) for rpc in greeting for s in rpc.subscriptions] == [(True, TOPIC)]
    attacker.send(subscribe(TOPIC, graft=True))
    assert h.in_mesh(attacker)
    return h, attacker


def _p7_only(weight: float) -> tuple[PeerScoreParams, PeerScoreThresholds]:
    """go's spam tests: P5 = 0 and a behaviour penalty decaying to zero in a minute; thresholds
    gossip −100, publish −500, graylist −1000."""
    params = PeerScoreParams(
        app_specific_score=lambda _: 0.0,
        behaviour_penalty_weight=weight,
        behaviour_penalty_decay=score_parameter_decay(60.0),
        decay_interval=1.0,
        decay_to_zero=0.01,
    )
    return params, PeerScoreThresholds(gossip_threshold=-100, publish_threshold=-500, graylist_threshold=-1000)


# --- go: gossipsub_spam_test.go ---------------------------------------------------------------------------


def test_attack_spam_iwant() -> None:
    """An attacker asking again and again for one message gets it 1 + gossip_retransmission times: the
    original forward plus 3 answers to IWANT, then nothing (go: TestGossipsubAttackSpamIWANT)."""
    h, attacker = _joined()
    h.advance(0.1)
    msg = h.publish(TOPIC, b"x" * 16)
    for _ in range(20):  # go keeps asking until the answers stop; we ask far more often than allowed
        assert len(h.out.messages_to(attacker.peer_id)) >= 1
        attacker.send(iwant([msg.id]))
        h.advance(0.01)
    got = h.out.messages_to(attacker.peer_id)
    assert len(got) == 1 + h.config.gossip_retransmission == 4
    assert all(m.id == msg.id for m in got)
    assert h.router.counters["iwant_ignored"] == 20 - h.config.gossip_retransmission


def test_attack_spam_ihave() -> None:
    """3 × max_ihave_length single-id IHAVEs in one heartbeat get at most max_ihave_messages IWANTs;
    more IWANTs come only after the next heartbeat; the score stays 0 until the IWANT follow-up time
    passes, then the broken promises make it negative (go: TestGossipsubAttackSpamIHAVE)."""
    params, thresholds = _p7_only(-1.0)
    cfg = GossipsubConfig(score_params=params, score_thresholds=thresholds, iwant_followup_time=10.0)
    h, attacker = _joined(cfg)
    h.advance(0.02)
    spam = 3 * cfg.max_ihave_length
    for i in range(spam):
        attacker.send(ihave(TOPIC, [b"someid%d" % i]))
    first = len(h.out.iwants_to(attacker.peer_id))
    assert 0 < first <= cfg.max_ihave_messages
    asked = sum(len(w.messageIDs) for w in h.out.iwants_to(attacker.peer_id))
    assert asked <= cfg.max_ihave_length

    h.advance(cfg.heartbeat_interval)
    assert len(h.out.iwants_to(attacker.peer_id)) == first  # nothing more without new IHAVEs
    assert h.score(attacker) == 0  # no promise broken yet: the follow-up time has not passed

    for i in range(spam):
        attacker.send(ihave(TOPIC, [b"someid%d" % (spam + i)]))
    second = len(h.out.iwants_to(attacker.peer_id)) - first
    assert 0 < second <= cfg.max_ihave_messages  # the heartbeat reset the per-peer IHAVE budget
    assert h.router.counters["ihave_ignored"] == 2 * spam - first - second

    h.advance(cfg.iwant_followup_time + cfg.heartbeat_interval)  # the heartbeat after the deadlines counts them
    assert h.router.counters["broken_promises"] == first + second
    assert h.score(attacker) < 0
    assert h.router.stats()["promises"] == 0


def test_attack_graft_non_existent_topic() -> None:
    """A GRAFT for a topic we are not in is ignored: no PRUNE, no mesh, no state (go:
    TestGossipsubAttackGRAFTNonExistentTopic)."""
    h, attacker = _joined()
    before = h.router.stats()
    attacker.send(graft("non-existent"))
    h.advance(0.1)
    assert h.out.prunes_to(attacker.peer_id) == []
    assert "non-existent" not in h.router.mesh
    assert h.router.stats() == before


def test_attack_graft_during_backoff() -> None:
    """GRAFTs during our backoff are refused with a PRUNE and penalised through P7 — doubly so inside the
    flood threshold — until the score is below −1000 (the graylist threshold): then the GRAFT is not
    even answered, and the attacker stays out of the mesh (go: TestGossipsubAttackGRAFTDuringBackoff,
    prune backoff 200 ms, flood threshold 100 ms, P7 weight −100)."""
    params, thresholds = _p7_only(-100.0)
    cfg = GossipsubConfig(
        score_params=params, score_thresholds=thresholds, prune_backoff=0.2, graft_flood_threshold=0.1
    )
    h, attacker = _joined(cfg)

    def prunes() -> int:
        return len(h.out.prunes_to(attacker.peer_id))

    h.advance(0.02)
    assert prunes() == 0
    attacker.send(prune(TOPIC))  # the attacker leaves our mesh: we back off from it for 200 ms
    assert not h.in_mesh(attacker)
    h.advance(0.02)
    assert prunes() == 0

    h.advance(cfg.graft_flood_threshold + 0.001)
    attacker.send(graft(TOPIC))  # in the backoff, past the flood threshold: one penalty, one PRUNE
    h.advance(0.02)
    assert prunes() == 1
    score1 = h.score(attacker)
    assert score1 == -100.0

    attacker.send(graft(TOPIC))  # inside the flood threshold: two penalties
    h.advance(0.02)
    assert prunes() == 2
    score2 = h.score(attacker)
    assert score2 < score1

    attacker.send(graft(TOPIC))
    h.advance(0.02)
    assert prunes() == 3
    score3 = h.score(attacker)
    assert score3 < score2
    assert score3 < -1000

    h.advance(cfg.prune_backoff + 0.001)  # the backoff is over, but the attacker is graylisted now
    attacker.send(graft(TOPIC))
    h.advance(0.02)
    assert prunes() == 3
    assert not h.in_mesh(attacker)
    assert h.router.counters["graylisted_rpcs"] == 1
    assert any(isinstance(e, PeerGraylisted) and e.peer == attacker.peer_id for e in h.out.events)


def _invalid_spam_params() -> tuple[PeerScoreParams, PeerScoreThresholds]:
    """go's TestGossipsubAttackInvalidMessageSpam parameters ("reasonable default values")."""
    topic = TopicScoreParams(
        topic_weight=0.25,
        time_in_mesh_weight=0.0027,
        time_in_mesh_quantum=1.0,
        time_in_mesh_cap=3600,
        first_message_deliveries_weight=0.664,
        first_message_deliveries_decay=0.9916,
        first_message_deliveries_cap=1500,
        mesh_message_deliveries_weight=-0.25,
        mesh_message_deliveries_decay=0.97,
        mesh_message_deliveries_cap=400,
        mesh_message_deliveries_threshold=100,
        mesh_message_deliveries_activation=30.0,
        mesh_message_deliveries_window=300.0,
        mesh_failure_penalty_weight=-0.25,
        mesh_failure_penalty_decay=0.997,
        invalid_message_deliveries_weight=-99,
        invalid_message_deliveries_decay=0.9994,
    )
    params = PeerScoreParams(
        topics={TOPIC: topic},
        app_specific_score=lambda _: 0.0,
        ip_colocation_factor_weight=0,
        ip_colocation_factor_threshold=1,
        decay_interval=5.0,
        decay_to_zero=0.01,
        retain_score=10.0,
    )
    thresholds = PeerScoreThresholds(
        gossip_threshold=-100, publish_threshold=-200, graylist_threshold=-300, accept_px_threshold=0
    )
    return params, thresholds


def test_attack_invalid_message_spam() -> None:
    """100 unsigned messages: each is rejected (P4), the score goes from 0 to negative, the next
    heartbeat PRUNEs the attacker, and once below the graylist threshold its RPCs — even a valid
    message — are ignored (go: TestGossipsubAttackInvalidMessageSpam)."""
    params, thresholds = _invalid_spam_params()
    h, attacker = _joined(GossipsubConfig(score_params=params, score_thresholds=thresholds))
    assert h.score(attacker) == 0
    for i in range(100):
        pb = rpc_pb2.Message(data=b"some data%d" % i, topic=TOPIC, seqno=bytes([i + 1]))
        pb.__setattr__("from", attacker.peer_id.to_bytes())
        assert attacker.send(rpc_pb2.RPC(publish=[pb])) == []
    # each rejection adds to P4 (−99 × 0.25 × count²) at once: after 4 the score (−396) is below the
    # graylist threshold (−300) and the remaining 96 RPCs are not even read (go validates them all
    # first: its validation pipeline is asynchronous)
    rejected = h.router.counters["invalid"]
    assert rejected == 4
    assert sum(isinstance(e, InvalidMessageReceived) for e in h.out.events) == rejected
    assert h.router.counters["graylisted_rpcs"] == 100 - rejected
    h.advance(0.1 + h.config.heartbeat_initial_delay)
    assert h.score(attacker) < 0
    assert len(h.out.prunes_to(attacker.peer_id)) >= 1
    assert not h.in_mesh(attacker)

    assert h.score(attacker) < thresholds.graylist_threshold
    good = attacker.message(TOPIC, b"a valid one")
    assert attacker.send(attacker.publish_rpc(good), validate=ACCEPT) == []
    assert h.out.delivered == []
    assert h.router.counters["graylisted_rpcs"] == 100 - rejected + 1


def _idontwant_harness() -> tuple[Harness, MockPeer, MockPeer]:
    """The middle router of go's IDONTWANT tests (content message ids), a publisher and an attacker,
    both in its mesh."""
    h = Harness(GossipsubConfig(message_id_fn=lambda m: m.data))
    h.router.join(TOPIC, h.now)
    publisher, attacker = h.add_peer(), h.add_peer()
    for p in (publisher, attacker):
        p.send(subscribe(TOPIC, graft=True))
        assert h.in_mesh(p)
    return h, publisher, attacker


def test_attack_spam_idontwant() -> None:
    """Beyond max_idontwant_messages IDONTWANTs in one heartbeat the router stops listening (the message
    named in the last one is sent anyway); after the heartbeat, IDONTWANT works again (go:
    TestGossipsubAttackSpamIDONTWANT)."""
    h, publisher, attacker = _idontwant_harness()
    cfg = h.config
    h.advance(0.1)
    data = b""
    for i in range(1 + cfg.max_idontwant_messages):
        data = b"%016d" % i
        attacker.send(idontwant([data]))
    assert h.router.counters["idontwant_ignored"] == 1
    publisher.send(publisher.publish_rpc(publisher.message(TOPIC, data)), validate=ACCEPT)
    assert [m.data for m in h.out.messages_to(attacker.peer_id)] == [data]

    h.heartbeats(1)  # the per-heartbeat IDONTWANT budget is reset
    data2 = b"after the heartbeat"
    attacker.send(idontwant([data2]))
    publisher.send(publisher.publish_rpc(publisher.message(TOPIC, data2)), validate=ACCEPT)
    assert [m.data for m in h.out.messages_to(attacker.peer_id)] == [data]  # data2 was honoured
    assert [m.data for m in h.out.delivered] == [data, data2]


def test_handle_idontwant_spam() -> None:
    """One IDONTWANT with max_idontwant_length + 1 ids counts once and keeps the first
    max_idontwant_length ids only (go: TestGossipsubHandleIDontwantSpam)."""
    h, _, attacker = _idontwant_harness()
    n = h.config.max_idontwant_length
    attacker.send(idontwant([b"idontwant-%d" % i for i in range(n + 1)]))
    state = h.router.peers[attacker.peer_id]
    assert state.idontwant_count == 1
    assert b"idontwant-%d" % (n - 1) in state.dont_send
    assert b"idontwant-%d" % n not in state.dont_send
    assert len(state.dont_send) == n


def test_idontwant_unwanted_cleanup() -> None:
    """Empty IDONTWANTs create no state; an id expires after idontwant_message_ttl heartbeats; a removed
    peer takes its IDONTWANT state with it (go: TestGossipsubIDontWantUnwantedCleanup)."""
    h, _, attacker = _idontwant_harness()
    state = h.router.peers[attacker.peer_id]
    attacker.send(control())
    assert state.dont_send == {}
    attacker.send(control(idontwant=[rpc_pb2.ControlIDontWant()]))
    assert state.dont_send == {}

    attacker.send(idontwant([b"idontwant-cleanup"]))
    assert b"idontwant-cleanup" in state.dont_send
    h.heartbeats(h.config.idontwant_message_ttl)
    assert state.dont_send == {}
    assert h.router.stats()["dont_send"] == 0

    attacker.send(idontwant([b"idontwant-cleanup"]))
    assert h.router.stats()["dont_send"] == 1
    h.router.remove_peer(attacker.peer_id, h.now)
    assert h.router.stats()["dont_send"] == 0


# --- floods from the advisories ---------------------------------------------------------------------------


def _pubsub_bytes(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes held by allocations made in mycel's pubsub code."""
    return sum(
        stat.size
        for stat in snapshot.statistics("filename")
        if "mycel/protocols/pubsub/" in stat.traceback[0].filename.replace("\\", "/")
    )


def test_subscription_flood_leaves_memory_flat() -> None:
    """CVE-2026-46679: one peer subscribing to 100,000 unique topics (100 RPCs of 1,000) holds at most
    max_topics_per_peer of them; router memory after the flood is what it was after the first RPC."""
    h = Harness()
    h.router.join(TOPIC, h.now)
    flooder = h.add_peer()
    cfg = h.config
    per_rpc, rpcs = 1000, 100

    def flood(start: int, count: int) -> None:
        for r in range(start, start + count):
            flooder.send(subscribe(*(f"flood-{r}-{i}" for i in range(per_rpc))))

    gc.collect()
    tracemalloc.start()
    try:
        flood(0, 1)  # the per-peer table is full after this one
        gc.collect()
        before = tracemalloc.take_snapshot()
        flood(1, rpcs - 1)
        h.advance(5.0)  # a few heartbeats over the flooded tables
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = _pubsub_bytes(after) - _pubsub_bytes(before)
    print(
        f"subscription flood: {per_rpc * rpcs} topics; pubsub-held memory {_pubsub_bytes(before)} B after the"
        f" first RPC, {_pubsub_bytes(after)} B after the last (growth {growth} B)"
    )
    assert growth < 16 * 1024
    stats = h.router.stats()
    assert stats["topics"] == cfg.max_topics_per_peer
    assert stats["topic_memberships"] == cfg.max_topics_per_peer
    assert len(h.router.peers[flooder.peer_id].topics) == cfg.max_topics_per_peer
    assert h.router.counters["subscriptions_refused"] == per_rpc * rpcs - cfg.max_topics_per_peer

    # leaving frees everything (the advisory's leak: empty per-topic maps that were never removed)
    flooder.send(unsubscribe(*sorted(h.router.peers[flooder.peer_id].topics)))
    assert h.router.stats()["topics"] == 0
    flood(rpcs, 1)
    h.router.remove_peer(flooder.peer_id, h.now)
    assert h.router.stats()["topics"] == 0
    assert h.router.stats()["topic_memberships"] == 0


def test_subscription_flood_from_many_peers_is_bounded_by_max_topics() -> None:
    """Sybils, each at its per-peer cap, fill the topic table up to max_topics and no further; the
    memory they hold is bounded by that cap, and churn (unsubscribe, subscribe anew) does not grow it."""
    cfg = GossipsubConfig(max_topics=2000, max_topics_per_peer=50)
    h = Harness(cfg)
    sybils = [h.add_peer() for _ in range(60)]

    def churn(rnd: int) -> None:  # everybody drops its topics and floods new ones
        for n, s in enumerate(sybils):
            s.send(unsubscribe(*sorted(h.router.peers[s.peer_id].topics)))
            s.send(subscribe(*(f"sybil-{n}-round{rnd}-{i}" for i in range(200))))

    gc.collect()
    tracemalloc.start()
    try:
        churn(0)
        stats = h.router.stats()
        assert stats["topics"] == cfg.max_topics
        assert stats["topic_memberships"] == cfg.max_topics  # 40 sybils got 50 each, the rest nothing
        churn(1)  # the tables reach their working size (sets keep the room of deleted entries)
        gc.collect()
        before = tracemalloc.take_snapshot()
        for rnd in range(2, 12):
            churn(rnd)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = _pubsub_bytes(after) - _pubsub_bytes(before)
    print(f"sybil churn: pubsub-held memory {_pubsub_bytes(before)} B after two rounds, growth {growth} B after 10 more")
    assert growth < 64 * 1024
    assert h.router.stats()["topics"] <= cfg.max_topics


def test_subscription_flood_does_not_lock_honest_peers_out_of_our_topics() -> None:
    """With the topic table full of Sybil topics, an honest peer subscribing to a topic we are in is
    still accepted (and meshed): the caps protect memory, not the attacker's squatting."""
    cfg = GossipsubConfig(max_topics=1000, max_topics_per_peer=100)
    h = Harness(cfg)
    for n in range(10):
        h.add_peer().send(subscribe(*(f"sybil-{n}-{i}" for i in range(100))))
    assert h.router.stats()["topics"] == cfg.max_topics
    h.router.join(TOPIC, h.now)
    honest = h.add_peer()
    honest.send(subscribe(*(f"honest-extra-{i}" for i in range(cfg.max_topics_per_peer)), TOPIC))
    assert honest.peer_id in h.router.topic_peers(TOPIC)
    h.heartbeats(1)
    assert h.in_mesh(honest)


def test_ihave_flood_with_many_ids() -> None:
    """An IHAVE listing 100,000 ids gets one IWANT for at most max_ihave_length of them; further IHAVEs in
    the heartbeat are ignored once the budget is spent; IHAVEs for topics we are not in ask nothing;
    promises stay bounded."""
    h, attacker = _joined()
    cfg = h.config
    ids = [b"flood-%d" % i for i in range(100_000)]
    attacker.send(ihave("not-ours", ids[:1000]))
    assert h.out.iwants_to(attacker.peer_id) == []
    attacker.send(ihave(TOPIC, ids))
    wants = h.out.iwants_to(attacker.peer_id)
    assert len(wants) == 1
    assert len(wants[0].messageIDs) == cfg.max_ihave_length
    assert len(set(wants[0].messageIDs)) == cfg.max_ihave_length
    for _ in range(20):
        attacker.send(ihave(TOPIC, ids))
    assert len(h.out.iwants_to(attacker.peer_id)) == 1
    assert h.router.stats()["promises"] == 1


def test_oversized_messages_are_dropped_before_anything_else() -> None:
    """A message above the topic's size limit is neither validated, delivered, forwarded nor remembered
    as seen; one at the limit goes through."""
    cfg = GossipsubConfig(max_message_size=1024)
    h, attacker = _joined(cfg)
    other = h.add_peer()
    other.send(subscribe(TOPIC, graft=True))
    big = attacker.message(TOPIC, b"x" * 1025)
    assert attacker.send(attacker.publish_rpc(big), validate=ACCEPT) == []
    assert h.router.counters["oversized"] == 1
    assert h.out.delivered == [] and h.out.sent == []
    assert h.router.stats()["seen"] == 0
    ok = attacker.message(TOPIC, b"x" * 1024)
    assert len(attacker.send(attacker.publish_rpc(ok), validate=ACCEPT)) == 1
    assert len(h.out.delivered) == 1
    assert [p for p, _ in h.out.sent] == [other.peer_id]


def test_messages_for_topics_we_are_not_in_are_ignored() -> None:
    """Messages on a topic we did not join are not validated, delivered, relayed, cached or scored."""
    params, thresholds = _invalid_spam_params()
    h, attacker = _joined(GossipsubConfig(score_params=params, score_thresholds=thresholds))
    for i in range(50):
        attacker.send(attacker.publish_rpc(attacker.message("elsewhere", b"%d" % i)), validate=ACCEPT)
        attacker.send(attacker.publish_rpc(attacker.message("elsewhere", b"%d" % i, sign=False)))
    assert h.router.counters["not_subscribed"] == 100
    assert h.out.delivered == [] and h.out.sent == []
    stats = h.router.stats()
    assert stats["seen"] == 0 and stats["mcache"] == 0
    assert h.score(attacker) == 0


def test_an_invalid_copy_does_not_hide_the_valid_message() -> None:
    """An attacker replaying an honest author's message with altered data (bad signature, same id) is
    penalised, and the honest copy that follows is still delivered."""
    params, thresholds = _invalid_spam_params()
    h, attacker = _joined(GossipsubConfig(score_params=params, score_thresholds=thresholds))
    author = h.add_peer()
    author.send(subscribe(TOPIC, graft=True))
    genuine = author.message(TOPIC, b"the real thing")
    forged = rpc_pb2.Message()
    forged.CopyFrom(genuine)
    forged.data = b"something else"
    assert attacker.send(attacker.publish_rpc(forged), validate=ACCEPT) == []
    assert h.router.counters["invalid"] == 1
    assert h.score(attacker) < 0
    assert len(author.send(author.publish_rpc(genuine), validate=ACCEPT)) == 1
    assert [m.data for m in h.out.delivered] == [b"the real thing"]


@pytest.mark.parametrize("protocol", [GOSSIPSUB_V12, "/meshsub/1.0.0"])
def test_prune_with_huge_backoff_is_capped(protocol: str) -> None:
    """A PRUNE asking for a backoff of 2^64 − 1 s (the largest uint64) is capped to a day."""
    h = Harness()
    h.router.join(TOPIC, h.now)
    peer = h.add_peer(protocol)
    peer.send(subscribe(TOPIC, graft=True))
    peer.send(prune(TOPIC, backoff=2**64 - 1))
    assert not h.in_mesh(peer)
    expire = h.router.backoff[TOPIC][peer.peer_id]
    assert expire <= h.now + 24 * 3600


def test_an_author_id_with_a_garbage_inlined_key_is_rejected_not_raised() -> None:
    """A ``from`` that parses as a peer id (identity multihash) but inlines bytes that are no key is an
    invalid message — penalised like a bad signature — and the valid messages of the same RPC are still
    processed (an exception would lose them: marked seen, never validated)."""
    params, thresholds = _invalid_spam_params()
    h, attacker = _joined(GossipsubConfig(score_params=params, score_thresholds=thresholds))
    bogus = rpc_pb2.Message(data=b"x", topic=TOPIC, seqno=bytes(8), signature=b"sig")
    bogus.__setattr__("from", b"\x00\x04\x08\x01\x12\x00")  # identity multihash of a truncated key
    good = attacker.message(TOPIC, b"fine")
    msgs = attacker.send(attacker.publish_rpc(bogus, good), validate=ACCEPT)
    assert [m.data for m in msgs] == [b"fine"]
    assert h.router.counters["invalid"] == 1
    assert h.score(attacker) < 0
