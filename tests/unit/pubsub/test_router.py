"""The gossipsub router's behaviour, sans-IO on virtual time: one test per go-libp2p-pubsub router test
(``gossipsub_test.go``) and per rust-libp2p behaviour test (``src/behaviour/tests/*.rs``) that applies
to us, named after it in the docstring, plus the spec rules those suites do not spell out.

go's tests run whole hosts for seconds of (virtual) time and check deliveries; rust's inject RPCs into
the behaviour and read its queues. Ours do the latter (``router_helpers.make_router``: one router, N
fake peers, a recorder of everything it sends) and, where go's test is about a network, the former on
``router_helpers.SimNet`` (routers wired in memory). The facts — parameters, counts, backoffs — are
theirs; every assertion is exact: who is in the mesh, which control entries went to whom, what was
delivered. Time only moves when a test moves it, randomness is seeded.
"""

from __future__ import annotations

import random

import pytest

from mycel.core.peer_id import PeerId
from mycel.protocols.pubsub import rpc_pb2
from mycel.protocols.pubsub.config import (
    FLOODSUB,
    GOSSIPSUB_V10,
    GOSSIPSUB_V11,
    GOSSIPSUB_V12,
    GossipsubConfig,
    SignaturePolicy,
)
from mycel.protocols.pubsub.core import InvalidMessageReceived, PeerGraylisted
from mycel.protocols.pubsub.messages import PubsubMessage, content_hash_message_id, encode_message
from mycel.protocols.pubsub.score import PeerScoreThresholds

from .router_helpers import (
    ACCEPT,
    IGNORE,
    LOCAL,
    REJECT,
    TOPIC,
    Harness,
    SimNet,
    make_router,
    pid,
    record_of,
    scoring,
    signed,
)

# thresholds for P7 = −(penalties²): one penalty (−1) stays above them, two (−4) fall below
BETWEEN_ONE_AND_TWO_PENALTIES = PeerScoreThresholds(gossip_threshold=-3, publish_threshold=-3, graylist_threshold=-3)


def _prune(topic: str = TOPIC, backoff: int | None = None, peers: int = 0) -> tuple[str, int | None, int]:
    return topic, backoff, peers


def _shape(prune: rpc_pb2.ControlPrune) -> tuple[str, int | None, int]:
    """(topic, backoff or None when absent, number of PX entries) of a PRUNE."""
    return prune.topicID, prune.backoff if prune.HasField("backoff") else None, len(prune.peers)


# --- mesh maintenance --------------------------------------------------------------------------------


def test_join_builds_mesh_of_d() -> None:
    """rust test_subscribe / go Join: joining a topic with 20 subscribed peers grafts exactly D = 6 of
    them, with one control RPC each carrying our subscription and the GRAFT."""
    h = make_router(20, clear=False)
    mesh = h.mesh()
    assert len(mesh) == 6
    joined = [(p, rpc) for p, rpc in zip(h.out.control_peers(), h.out.controls()) if rpc.HasField("control")]
    assert sorted(p for p, _ in joined) == sorted(mesh)
    for _, rpc in joined:
        assert [(s.subscribe, s.topicid) for s in rpc.subscriptions] == [(True, TOPIC)]
        assert [g.topicID for g in rpc.control.graft] == [TOPIC]
    # every one of the 20 peers heard about the subscription exactly once
    assert sorted(p for p, sub, t in h.out.subscriptions() if sub and t == TOPIC) == sorted(h.peers)


def test_mesh_addition() -> None:
    """rust test_mesh_addition (go heartbeat "do we have enough peers?"): a mesh below D_lo is filled
    up to D at the next heartbeat with peers that are neither in it nor backed off."""
    h = make_router(10)
    before = h.mesh()
    gone = sorted(before)[:3]
    for p in gone:
        h.prune(p)
    assert h.mesh() == before - set(gone)  # 3 < D_lo = 5
    h.heartbeat()
    added = h.mesh() - before
    assert len(h.mesh()) == 6 and len(added) == 3
    assert not h.mesh() & set(gone)
    assert sorted(h.out.grafts()) == sorted((p, TOPIC) for p in added)
    assert h.out.prunes() == []


def test_mesh_subtraction() -> None:
    """rust test_mesh_subtraction: D_hi + 10 outbound peers all GRAFT us (outbound GRAFTs are accepted
    above D_hi); the heartbeat prunes back to D, each pruned peer gets one PRUNE with the 60 s backoff
    and is backed off for 60 s."""
    h = make_router(22, outbound=True)
    for p in h.peers:
        h.graft(p)
    assert len(h.mesh()) == 22
    assert h.out.prunes() == []
    h.heartbeat()
    assert len(h.mesh()) == 6
    pruned = [p for p, _ in h.out.prunes()]
    assert sorted(pruned) == sorted(set(h.peers) - h.mesh())
    assert {_shape(pr) for _, pr in h.out.prunes()} == {_prune(backoff=60)}
    assert all(h.router.backoff[TOPIC][p] == h.now + 60 for p in pruned)


def test_prune_mesh_correctly() -> None:
    """go TestGossipsubPruneMeshCorrectly (go's heartbeat since #589: ``len(peers) >= Dhi``): a mesh of
    exactly D_hi is oversubscribed and is pruned back to D (D_hi = 8 as in go's test)."""
    h = make_router(8, outbound=True, d_hi=8)
    for p in h.peers:
        h.graft(p)
    assert len(h.mesh()) == 8
    h.heartbeat()
    assert len(h.mesh()) == 6
    assert len(h.out.prunes()) == 2


def test_prune_above_d_hi_only_keeps_a_mesh_of_exactly_d_hi() -> None:
    """``prune_at_d_hi=False`` (the spec's ``|mesh| > D_high``, go before #589): a mesh of exactly D_hi
    stays; one more member makes it oversubscribed, and it is pruned back to D."""
    h = make_router(9, outbound=True, d_hi=8, prune_at_d_hi=False)
    for p in h.peers[:8]:
        h.graft(p)
    h.heartbeat()
    assert len(h.mesh()) == 8 and h.out.prunes() == []
    h.graft(h.peers[8])
    h.heartbeat()
    assert len(h.mesh()) == 6 and len(h.out.prunes()) == 3


def test_prune_mesh_correctly_network() -> None:
    """go TestGossipsubPruneMeshCorrectly as go runs it: 9 nodes with D_hi = 8, node 0 connected to the
    8 others, everybody subscribed; after the initial delay and two heartbeats node 0's mesh is D."""
    net = SimNet(9, GossipsubConfig(d_hi=8))
    net.join(TOPIC, range(9))
    for i in range(1, 9):
        net.link(0, i)
    net.run(0.1 + 2 * 1.0)
    assert len(net.routers[0].mesh_peers(TOPIC)) == 6


@pytest.mark.parametrize("seed", range(8))
def test_do_not_remove_too_many_outbound_peers(seed: int) -> None:
    """rust test_do_not_remove_too_many_outbound_peers (go heartbeat, D_out): pruning an oversubscribed
    mesh of 12 inbound + 2 outbound peers keeps both outbound peers, whatever the random draw."""
    h = make_router(14, outbound=[False] * 12 + [True] * 2, seed=seed)
    for p in h.peers:
        h.graft(p)  # inbound GRAFTs stop being accepted at D_hi; the outbound ones always are
    outbound = set(h.peers[12:])
    assert outbound <= h.mesh() and len(h.mesh()) >= 12
    h.heartbeat()
    assert len(h.mesh()) == 6
    assert outbound <= h.mesh()


def test_mesh_grafts_outbound_peers_below_d_out() -> None:
    """go heartbeat "do we have enough outbound peers?": a mesh of D inbound peers gets D_out = 2
    outbound peers grafted, even though it is not below D_lo."""
    h = make_router(8)
    assert len(h.mesh()) == 6
    out1 = h.add_peer(101, outbound=True)
    out2 = h.add_peer(102, outbound=True)
    h.add_peer(103, outbound=False)
    h.heartbeat()
    assert h.mesh() >= {out1, out2} and len(h.mesh()) == 8
    assert sorted(h.out.grafts()) == sorted([(out1, TOPIC), (out2, TOPIC)])


def test_keep_best_scoring_peers_on_oversubscription() -> None:
    """rust test_keep_best_scoring_peers_on_oversubscription: D_lo 15, D 30, D_hi 60, D_score 29; 60
    peers graft, peer i has application score i; the heartbeat keeps the 29 best and D in all."""
    h = make_router(60, d_lo=15, d=30, d_hi=60, d_score=29, **scoring())
    for p in h.peers:
        h.graft(p)
    for i, p in enumerate(h.peers):
        h.scores.set_app_score(p, float(i))
    assert len(h.mesh()) == 60
    h.heartbeat()
    assert len(h.mesh()) == 30
    assert h.mesh() >= set(h.peers[60 - 29 :])


def test_prune_negative_scored_peers() -> None:
    """rust test_prune_negative_scored_peers (go: "drop all peers with negative score, without PX"):
    the heartbeat prunes a negative peer with the prune backoff and no PX even when PX is on."""
    h = make_router(3, do_px=True, **scoring())
    bad, *good = h.peers
    assert h.mesh() == set(h.peers)
    h.scores.add_penalty(bad, 1)
    h.heartbeat()
    assert h.mesh() == set(good)
    assert [(p, _shape(pr)) for p, pr in h.out.prunes()] == [(bad, _prune(backoff=60))]
    assert h.out.grafts() == []


def test_dont_graft_to_negative_scored_peers() -> None:
    """rust test_dont_graft_to_negative_scored_peers: with every mesh peer gone (PRUNEd us), the heartbeat
    grafts the one newcomer with a zero score and not the one with a negative score."""
    h = make_router(12, **scoring())
    for p in h.mesh():
        h.prune(p)
    for p in h.peers:
        h.scores.add_penalty(p, 1)  # the others are out of the picture
    p1 = h.add_peer(101, topics=())
    p2 = h.add_peer(102, topics=())
    h.scores.add_penalty(p1, 1)
    h.rpc(p1, subscribe=[TOPIC])
    h.rpc(p2, subscribe=[TOPIC])
    h.heartbeat()
    assert h.mesh() == {p2}
    assert h.out.grafts() == [(p2, TOPIC)]


def test_opportunistic_grafting() -> None:
    """rust test_opportunistic_grafting (go heartbeat; opportunistic graft ticks 2, peers 2, threshold
    2.0): a mesh whose median score is 2.0 is left alone; at median 1.0, on an opportunistic tick, the
    two peers scoring above the median get grafted, never those at or below it."""
    thresholds = PeerScoreThresholds(opportunistic_graft_threshold=2.0)
    h = make_router(
        5, d_lo=3, d=5, d_hi=7, d_out=0, d_score=4, opportunistic_graft_ticks=2, opportunistic_graft_peers=2,
        **scoring(thresholds=thresholds),
    )
    mesh = set(h.peers)
    assert h.mesh() == mesh
    others = [h.add_peer(101 + i) for i in range(5)]
    for i, p in enumerate(h.peers):
        h.scores.set_app_score(p, float(i))
    for i, p in enumerate(others):
        h.scores.set_app_score(p, float(i))
    h.heartbeat(2)  # tick 2: median exactly 2.0, not below the threshold
    assert h.mesh() == mesh
    h.scores.set_app_score(h.peers[2], 1.0)
    h.heartbeat()  # tick 3: not an opportunistic tick
    assert h.mesh() == mesh
    h.out.clear()
    h.heartbeat()  # tick 4: median 1.0 → graft 2 of the peers scoring 2, 3, 4
    assert len(h.mesh()) == 7 and h.mesh() >= mesh
    grafted = h.mesh() - mesh
    assert grafted <= set(others[2:])
    assert sorted(h.out.grafts()) == sorted((p, TOPIC) for p in grafted)


def test_dont_add_floodsub_peers_to_mesh_on_join() -> None:
    """rust test_dont_add_floodsub_peers_to_mesh_on_join / _in_heartbeat: floodsub peers are never meshed."""
    h = make_router(6, protocol=FLOODSUB)
    assert h.mesh() == set()
    h.heartbeat(3)
    assert h.mesh() == set()
    assert h.out.grafts() == []


def test_leave_prunes_with_unsubscribe_backoff() -> None:
    """go Leave / rust test_unsubscribe: leaving sends every peer our unsubscription, each mesh peer
    gets it in the same RPC as a PRUNE with the unsubscribe backoff (10 s), and the mesh is gone."""
    h = make_router(20)
    mesh = h.mesh()
    h.router.leave(TOPIC, h.now)
    assert TOPIC not in h.router.mesh
    assert sorted(h.out.control_peers()) == sorted(h.peers)  # one RPC per peer
    for p, rpc in zip(h.out.control_peers(), h.out.controls()):
        assert [(s.subscribe, s.topicid) for s in rpc.subscriptions] == [(False, TOPIC)]
        assert [_shape(pr) for pr in rpc.control.prune] == ([_prune(backoff=10)] if p in mesh else [])
    assert all(h.router.backoff[TOPIC][p] == h.now + 10 for p in mesh)


def test_unsubscribe_backoff() -> None:
    """rust test_unsubscribe_backoff (heartbeat 0.25 s, unsubscribe backoff 1 s, prune backoff 5 s):
    after leaving and joining again at once, the old mesh peer is not grafted until its unsubscribe
    backoff plus the slack of 2 heartbeats has passed (1.5 s), and then it is."""
    h = make_router(1, heartbeat_interval=0.25, unsubscribe_backoff=1.0, prune_backoff=5.0)
    (peer,) = h.peers
    h.router.leave(TOPIC, h.now)
    assert [_shape(pr) for _, pr in h.out.prunes()] == [_prune(backoff=1)]
    h.router.join(TOPIC, h.now)
    assert h.mesh() == set()
    h.out.clear()
    h.heartbeat(5)  # up to t = 1.25
    assert h.out.grafts() == []
    h.heartbeat()  # t = 1.5
    assert h.out.grafts() == [(peer, TOPIC)]
    assert h.mesh() == {peer}


def test_do_not_graft_within_backoff_period() -> None:
    """rust test_do_not_graft_within_backoff_period: a peer that PRUNEd us with a 1 s backoff is not
    grafted back until the backoff and the slack (2 heartbeats of 0.25 s) are over."""
    h = make_router(1, heartbeat_interval=0.25)
    (peer,) = h.peers
    h.prune(peer, backoff=1)
    assert h.mesh() == set()
    h.heartbeat(5)
    assert h.out.grafts() == []
    h.heartbeat()
    assert h.out.grafts() == [(peer, TOPIC)]


def test_do_not_graft_within_default_backoff_period_after_receiving_prune_without_backoff() -> None:
    """rust test of that name: a PRUNE without a backoff (v1.0) backs the peer off for our own
    prune_backoff (0.5 s here) plus the slack."""
    h = make_router(1, heartbeat_interval=0.25, prune_backoff=0.5)
    (peer,) = h.peers
    h.prune(peer)
    h.heartbeat(3)  # t = 0.75 < 0.5 + 0.5
    assert h.out.grafts() == []
    h.heartbeat()
    assert h.out.grafts() == [(peer, TOPIC)]


def test_gossipsub_remove_peer() -> None:
    """go TestGossipsubRemovePeer, router side: a disconnected peer leaves the mesh, the fanout and the
    topic tables (no empty topic entry is left behind)."""
    h = make_router(8, topics=(TOPIC,), peer_topics=(TOPIC, "other"), flood_publish=False)
    h.publish(b"x", "other")
    gone = sorted(h.mesh() & h.router.fanout["other"])[0]  # 6 + 6 of 8: they overlap
    h.router.remove_peer(gone, h.now)
    assert gone not in h.mesh() and gone not in h.router.fanout["other"]
    assert gone not in h.router.topic_peers(TOPIC) and gone not in h.router.topic_peers("other")
    assert gone not in h.router.peers
    lone = make_router(1, peer_topics=("only-theirs",), join=False)
    assert set(lone.router.topics) == {"only-theirs"}
    lone.router.remove_peer(lone.peers[0], lone.now)
    assert lone.router.topics == {}


def test_gossipsub_remove_peer_network() -> None:
    """go TestGossipsubRemovePeer: 20 densely connected nodes; 5 of them go away; every message
    published afterwards by a remaining node reaches all the other remaining nodes, in order."""
    net = SimNet(20)
    net.join(TOPIC, range(20))
    net.connect_random(10, random.Random(1))
    net.run(2.0)
    for i in range(5):
        net.isolate(i)
    net.run(1.0)
    rng = random.Random(2)
    owners = [rng.randrange(5, 20) for _ in range(10)]
    for k, owner in enumerate(owners):
        net.publish(owner, b"msg %d" % k)
    for i in range(5, 20):
        assert net.received(i) == [b"msg %d" % k for k, owner in enumerate(owners) if owner != i]


# --- GRAFT, PRUNE, backoff ---------------------------------------------------------------------------


def test_handle_graft_is_subscribed() -> None:
    """rust test_handle_graft_is_subscribed: a GRAFT on our topic adds the peer to the mesh, silently."""
    h = make_router(20)
    newcomer = sorted(set(h.peers) - h.mesh())[0]
    h.graft(newcomer)
    assert newcomer in h.mesh() and len(h.mesh()) == 7
    assert h.out.log == []


def test_handle_graft_is_not_subscribed() -> None:
    """rust test_handle_graft_is_not_subscribed / test_ignore_graft_from_unknown_topic, go
    TestGossipsubAttackGRAFTNonExistentTopic: a GRAFT on a topic we are not in is ignored: no mesh
    entry, no PRUNE (spam hardening: nothing to answer, no PX leaked)."""
    h = make_router(20)
    peer = sorted(set(h.peers) - h.mesh())[0]
    h.graft(peer, "unknown")
    assert "unknown" not in h.router.mesh
    assert peer not in h.mesh()
    assert h.out.log == []
    assert "unknown" not in h.router.backoff


def test_handle_graft_multiple_topics() -> None:
    """rust test_handle_graft_multiple_topics / go TestGossipsubMultipleGraftTopics: one RPC grafting
    three topics, one of which we left, adds the peer to the two meshes we have and nothing else."""
    topics = ("topic1", "topic2", "topic3", "topic4")
    h = make_router(20, topics=topics)
    h.router.leave("topic3", h.now)
    peer = pid(101)
    h.add_peer(101, topics=topics)
    h.out.clear()
    h.graft(peer, "topic1", "topic2", "topic3")
    assert peer in h.mesh("topic1") and peer in h.mesh("topic2")
    assert "topic3" not in h.router.mesh and peer not in h.mesh("topic4")
    assert h.out.log == []


def test_graft_at_d_hi_is_refused_unless_outbound() -> None:
    """go handleGraft: with the mesh at D_hi, an inbound peer's GRAFT gets a PRUNE (prune backoff, and
    PX since PX is on) and a backoff; an outbound peer's GRAFT is still accepted."""
    h = make_router(12, do_px=True)
    for p in h.peers:
        h.graft(p)
    assert len(h.mesh()) == 12
    late = h.add_peer(101, outbound=False)
    welcome = h.add_peer(102, outbound=True)
    h.out.clear()
    h.graft(late)
    assert late not in h.mesh()
    assert [(p, _shape(pr)) for p, pr in h.out.prunes()] == [(late, _prune(backoff=60, peers=13))]
    assert h.router.backoff[TOPIC][late] == h.now + 60
    h.out.clear()
    h.graft(welcome)
    assert welcome in h.mesh() and len(h.mesh()) == 13
    assert h.out.log == []


def test_graft_from_negative_score_peer_is_pruned() -> None:
    """go handleGraft: a peer with a negative score that GRAFTs gets a PRUNE (for protocol correctness)
    without PX, and is backed off so that a recovering score does not let it straight back in."""
    h = make_router(10, do_px=True, **scoring())
    peer = sorted(set(h.peers) - h.mesh())[0]
    h.scores.add_penalty(peer, 1)
    h.graft(peer)
    assert peer not in h.mesh()
    assert [(p, _shape(pr)) for p, pr in h.out.prunes()] == [(peer, _prune(backoff=60))]
    assert h.router.backoff[TOPIC][peer] == h.now + 60


def test_prune_backoffed_peer_on_graft() -> None:
    """rust test_prune_backoffed_peer_on_graft, go handleGraft (GraftFloodThreshold 10 s): a peer we
    pruned that GRAFTs during the backoff gets a PRUNE with the prune backoff and no PX, its backoff is
    refreshed, and it is penalised (P7) once — twice if the GRAFT came within 10 s of the PRUNE."""
    h = make_router(13, outbound=True, do_px=True, **scoring())
    for p in h.peers:
        h.graft(p)
    h.heartbeat()  # t = 1: 13 >= D_hi → 7 pruned with a 60 s backoff
    pruned = sorted(p for p, _ in h.out.prunes())
    assert len(pruned) == 7
    fast, slow = pruned[:2]
    h.out.clear()
    h.advance(1.0)  # t = 2: within the flood threshold
    h.graft(fast)
    assert fast not in h.mesh()
    assert [(p, _shape(pr)) for p, pr in h.out.prunes()] == [(fast, _prune(backoff=60))]
    assert h.router.backoff[TOPIC][fast] == h.now + 60
    assert h.score(fast) == -4.0  # two penalties: (2)² × −1
    h.out.clear()
    h.advance(10.0)  # t = 12: the PRUNE was 11 s ago
    h.graft(slow)
    assert [(p, _shape(pr)) for p, pr in h.out.prunes()] == [(slow, _prune(backoff=60))]
    assert h.score(slow) == -1.0


def test_handle_prune_peer_in_mesh() -> None:
    """rust test_handle_prune_peer_in_mesh (go handlePrune): a PRUNE removes the peer from the mesh and
    backs it off for the backoff it asked for; nothing is sent back."""
    h = make_router(20)
    peer = sorted(h.mesh())[0]
    h.prune(peer, backoff=30)
    assert peer not in h.mesh()
    assert h.router.backoff[TOPIC][peer] == h.now + 30
    assert h.out.log == []


def test_gossipsub_prune_backoff_time() -> None:
    """go TestGossipsubPruneBackoffTime, router side: after a PRUNE with backoff B the peer is not
    grafted back by any heartbeat before B (+ 2 heartbeats of slack), and is at the first one after."""
    h = make_router(1)
    (peer,) = h.peers
    h.prune(peer, backoff=5)
    h.heartbeat(6)  # t = 6 < 5 + 2
    assert h.mesh() == set() and h.out.grafts() == []
    h.heartbeat()  # t = 7: not in backoff any more
    assert h.out.grafts() == [(peer, TOPIC)]


def test_graft_prune_retry() -> None:
    """go TestGossipsubGraftPruneRetry, router side: a peer that PRUNEs us keeps being tried again
    after each backoff: grafted, pruned, grafted again."""
    h = make_router(1, heartbeat_interval=0.5)
    (peer,) = h.peers
    for _ in range(3):
        assert h.mesh() == {peer}
        h.prune(peer, backoff=1)
        assert h.mesh() == set()
        h.out.clear()
        h.heartbeat(4)  # t + 2 = 1 + 2 × 0.5 slack
        assert h.out.grafts() == [(peer, TOPIC)]


def test_graft_px_withheld_for_the_whole_rpc() -> None:
    """go handleGraft keeps one doPX flag for the RPC: a GRAFT on a topic we are not in ("to avoid
    leaking our peers") or one refused for backoff or score turns PX off for every PRUNE answering that
    RPC, whatever the order of the GRAFTs."""
    h = make_router(12, topics=("full", "other"), do_px=True)
    for p in h.peers:
        h.graft(p, "full")
    assert len(h.mesh("full")) == 12
    late = h.add_peer(101, topics=("full", "other"))
    h.out.clear()
    h.rpc(late, graft=["full", "unknown"])
    assert [(p, _shape(pr)) for p, pr in h.out.prunes()] == [(late, _prune("full", backoff=60))]
    h.out.clear()
    h.rpc(late, graft=["full"])  # in backoff now, alone: PRUNE without PX as well
    assert [(p, _shape(pr)) for p, pr in h.out.prunes()] == [(late, _prune("full", backoff=60))]
    other_late = h.add_peer(102, topics=("full", "other"))
    h.out.clear()
    h.rpc(other_late, graft=["full"])  # a plain refusal keeps PX
    assert [(p, _shape(pr)) for p, pr in h.out.prunes()] == [(other_late, _prune("full", backoff=60, peers=13))]


# --- peer exchange -----------------------------------------------------------------------------------


def test_send_px_and_backoff_in_prune() -> None:
    """rust test_send_px_and_backoff_in_prune (go makePrune): with PX on, a PRUNE carries the backoff
    and prune_peers (16) distinct other topic peers, each with the signed record we hold for it."""
    h = make_router(30, do_px=True)
    mesh = h.mesh()
    h.router.leave(TOPIC, h.now)
    assert sorted(p for p, _ in h.out.prunes()) == sorted(mesh)
    for p, pr in h.out.prunes():
        assert _shape(pr) == _prune(backoff=10, peers=16)
        offered = [pid_from(info.peerID) for info in pr.peers]
        assert len(set(offered)) == 16 and p not in offered and set(offered) <= set(h.peers)
        assert all(info.signedPeerRecord == record_of(pid_from(info.peerID)) for info in pr.peers)


def pid_from(raw: bytes) -> PeerId:
    return PeerId.from_bytes(raw)


def test_px_omits_record_we_do_not_hold() -> None:
    """go makePrune / reducePXRecords: a PX entry without a record we hold carries only the peer id."""
    h = make_router(3, do_px=True)
    h.out.records.clear()
    h.router.leave(TOPIC, h.now)
    for _, pr in h.out.prunes():
        assert len(pr.peers) == 2
        assert not any(info.HasField("signedPeerRecord") for info in pr.peers)


def test_only_send_nonnegative_scoring_peers_in_px() -> None:
    """rust test_only_send_nonnegative_scoring_peers_in_px: a peer with a negative score is not offered."""
    h = make_router(3, do_px=True, **scoring())
    bad, pruned, good = h.peers
    h.scores.add_penalty(bad, 1)
    h.router.leave(TOPIC, h.now)
    px = {p: [pid_from(i.peerID) for i in pr.peers] for p, pr in h.out.prunes()}
    assert px[pruned] == [good]


def test_dont_send_px_to_old_gossipsub_peers() -> None:
    """rust test_dont_send_px_to_old_gossipsub_peers (go makePrune, feature PX): a v1.0 peer's PRUNE has
    neither backoff nor PX; a v1.1 peer's has both."""
    h = make_router(4, protocol=[GOSSIPSUB_V10, GOSSIPSUB_V11, GOSSIPSUB_V11, GOSSIPSUB_V12], do_px=True)
    assert h.mesh() == set(h.peers)
    h.router.leave(TOPIC, h.now)
    shapes = {p: _shape(pr) for p, pr in h.out.prunes()}
    assert shapes == {
        h.peers[0]: _prune(),
        h.peers[1]: _prune(backoff=10, peers=3),
        h.peers[2]: _prune(backoff=10, peers=3),
        h.peers[3]: _prune(backoff=10, peers=3),
    }


def test_dont_send_floodsub_peers_in_px() -> None:
    """rust test_dont_send_floodsub_peers_in_px: floodsub peers are never offered in PX."""
    h = make_router(3, protocol=[GOSSIPSUB_V12, FLOODSUB, FLOODSUB], do_px=True)
    assert h.mesh() == {h.peers[0]}
    h.router.leave(TOPIC, h.now)
    assert [(p, _shape(pr)) for p, pr in h.out.prunes()] == [(h.peers[0], _prune(backoff=10))]


def test_connect_to_px_peers_on_handle_prune() -> None:
    """rust test_connect_to_px_peers_on_handle_prune (go pxConnect; scoring off: go's and rust's accept
    PX threshold is then 0): a PRUNE offering prune_peers + 5 peers makes us dial 16 distinct of them,
    each with the signed record it came with."""
    h = make_router(1)
    offered = [(pid(200 + i), b"record-%d" % i) for i in range(16 + 5)]
    h.prune(h.peers[0], backoff=60, px=offered)
    dials = h.out.connects()
    assert len(dials) == 16 and len({p for p, _ in dials}) == 16
    assert set(dials) <= set(offered)


def test_px_skips_connected_peers_and_ourselves() -> None:
    """go pxConnect: PX entries for peers we are connected to, or for ourselves, are not dialled; an
    entry without a record is dialled with None."""
    h = make_router(2)
    h.prune(h.peers[0], px=[(h.peers[1], None), (pid(LOCAL), None), (pid(300), None)])
    assert h.out.connects() == [(pid(300), None)]


def test_ignore_px_from_peers_below_accept_px_threshold() -> None:
    """rust test_ignore_px_from_peers_below_accept_px_threshold: accept PX threshold 1.0; PX from a peer
    scoring 0.99 is ignored, from one scoring 1.0 followed."""
    h = make_router(2, **scoring(thresholds=PeerScoreThresholds(accept_px_threshold=1.0)))
    low, high = h.peers
    h.scores.set_app_score(low, 0.99)
    h.scores.set_app_score(high, 1.0)
    h.prune(low, backoff=60, px=[(pid(200), None)])
    assert h.out.connects() == []
    h.prune(high, backoff=60, px=[(pid(201), None)])
    assert h.out.connects() == [(pid(201), None)]


def test_ignore_px_from_negative_scored_peer() -> None:
    """rust test_ignore_px_from_negative_scored_peer: no dial from a negative peer's PX."""
    h = make_router(1, **scoring())
    h.scores.add_penalty(h.peers[0], 1)
    h.prune(h.peers[0], backoff=60, px=[(pid(200), None)])
    assert h.out.connects() == []


def test_star_topology() -> None:
    """go TestGossipsubStarTopology (and ...WithSignedPeerRecords): 20 nodes, every one connected only
    to node 0, whose D = D_lo = D_hi = 0 and which does PX; after 10 s every node has more than one
    connection (from PX, dialled with the signed record node 0 offered), and a message from each node
    reaches all the others."""
    star = GossipsubConfig(d=4, d_lo=3, d_hi=5, d_score=3, do_px=True, flood_publish=True)
    center = star.replace(d=0, d_lo=0, d_hi=0, d_score=0, d_out=0)
    net = SimNet(20, star, configs={0: center})
    for i in range(1, 20):
        net.link(0, i)
    net.run(1.0)
    net.join(TOPIC, range(20))
    net.run(10.0)
    assert all(net.degree(i) > 1 for i in range(20))
    for i in range(1, 20):
        dials = net.outs[i].connects()
        assert dials and all(rec == record_of(p) for p, rec in dials)
    for i in range(20):
        net.publish(i, b"message %d" % i)
    for i in range(20):
        assert net.received(i) == [b"message %d" % k for k in range(20) if k != i]


# --- publishing, fanout ------------------------------------------------------------------------------


def test_publish_without_flood_publishing() -> None:
    """rust test_publish_without_flood_publishing: without flood publishing our message goes to exactly
    the D mesh peers, and is cached for gossip and IWANT."""
    h = make_router(20, flood_publish=False)
    msg, sent = h.publish()
    assert sorted(sent) == sorted(h.mesh()) and len(sent) == 6
    assert sorted(h.out.receivers(msg.id)) == sorted(h.mesh())
    assert h.router.mcache.get(msg.id) is msg


def test_flood_publish() -> None:
    """rust test_flood_publish / go TestGossipsubFloodPublish: our own message goes to every topic peer
    (D_hi + 10 of them), but a message we relay goes only to the mesh."""
    h = make_router(22)
    msg, sent = h.publish()
    assert sorted(sent) == sorted(h.peers)
    sender = sorted(h.mesh())[0]
    relayed = h.message(b"relayed")
    h.receive(sender, relayed)
    assert sorted(h.out.receivers(relayed.id)) == sorted(h.mesh() - {sender})


def test_do_not_flood_publish_to_peer_below_publish_threshold() -> None:
    """rust test_do_not_flood_publish_to_peer_below_publish_threshold: score −4 is below the publish
    threshold (−3), −1 is not: flood publishing skips only the first."""
    h = make_router(0, **scoring(thresholds=BETWEEN_ONE_AND_TWO_PENALTIES))
    p1, p2 = h.add_peer(1), h.add_peer(2)
    h.scores.add_penalty(p1, 2)
    h.scores.add_penalty(p2, 1)
    _, sent = h.publish()
    assert sent == [p2]


def test_do_not_publish_to_peer_below_publish_threshold() -> None:
    """rust test_do_not_publish_to_peer_below_publish_threshold: the fanout (no flood publishing, topic
    not joined) is chosen among peers at or above the publish threshold."""
    h = make_router(0, join=False, flood_publish=False, **scoring(thresholds=BETWEEN_ONE_AND_TWO_PENALTIES))
    p1, p2 = h.add_peer(1), h.add_peer(2)
    h.scores.add_penalty(p1, 2)
    h.scores.add_penalty(p2, 1)
    _, sent = h.publish()
    assert sent == [p2]
    assert h.router.fanout[TOPIC] == {p2}


def test_fanout() -> None:
    """rust test_fanout / go TestGossipsubFanout: publishing on a topic we are not in picks D fanout
    peers, sends to exactly them, keeps using the same ones, and records the publish time."""
    h = make_router(20, join=False, flood_publish=False)
    msg, sent = h.publish()
    fanout = h.router.fanout[TOPIC]
    assert len(fanout) == 6 and sorted(sent) == sorted(fanout)
    assert h.router.last_pub[TOPIC] == h.now
    h.advance(5)
    _, sent2 = h.publish(b"again")
    assert sorted(sent2) == sorted(fanout)
    assert h.router.last_pub[TOPIC] == h.now
    assert h.router.mcache.get(msg.id) is msg


def test_fanout_maintenance() -> None:
    """go TestGossipsubFanoutMaintenance (heartbeat fanout upkeep): fanout peers that leave the topic are
    dropped and the heartbeat tops the fanout back up to D from the remaining topic peers."""
    h = make_router(10, join=False, flood_publish=False)
    h.publish()
    fanout = set(h.router.fanout[TOPIC])
    leavers = sorted(fanout)[:2]
    for p in leavers:
        h.rpc(p, unsubscribe=[TOPIC])
    assert h.router.fanout[TOPIC] == fanout - set(leavers)
    h.heartbeat()
    assert len(h.router.fanout[TOPIC]) == 6
    assert not h.router.fanout[TOPIC] & set(leavers)
    assert h.out.grafts() == []  # fanout is not a mesh: no GRAFT


def test_fanout_expiry() -> None:
    """go TestGossipsubFanoutExpiry: a fanout not published to for fanout_ttl (60 s) is dropped at the
    first heartbeat after that, with its publish time."""
    h = make_router(10, join=False, flood_publish=False)
    h.publish()
    h.heartbeat(60)  # t = 60: last publish + 60 is not yet in the past
    assert TOPIC in h.router.fanout
    h.heartbeat()
    assert TOPIC not in h.router.fanout and TOPIC not in h.router.last_pub


def test_join_uses_fanout_peers() -> None:
    """rust test_join / go Join: joining a topic we published to turns its fanout into the mesh (GRAFT
    to each), topped up to D; the fanout and its publish time are dropped."""
    h = make_router(20, join=False, flood_publish=False, d=8, d_hi=12)
    h.router.fanout[TOPIC] = set(h.peers[:3])
    h.router.last_pub[TOPIC] = h.now
    h.router.join(TOPIC, h.now)
    assert h.mesh() >= set(h.peers[:3]) and len(h.mesh()) == 8
    assert sorted(h.out.grafts()) == sorted((p, TOPIC) for p in h.mesh())
    assert TOPIC not in h.router.fanout and TOPIC not in h.router.last_pub


def test_rejoin_skips_backed_off_fanout_peers() -> None:
    """go Join: fanout peers we are backing off (we left the topic 1 s ago) are not taken into the mesh."""
    h = make_router(8, flood_publish=False)
    old_mesh = h.mesh()
    h.router.leave(TOPIC, h.now)
    h.advance(1)
    h.publish()
    assert h.router.fanout[TOPIC] & old_mesh  # 6 of 8 peers: some were in the old mesh
    h.out.clear()
    h.router.join(TOPIC, h.now)
    assert h.mesh() == set(h.peers) - old_mesh
    assert sorted(h.out.grafts()) == sorted((p, TOPIC) for p in h.mesh())


def test_publish_duplicate_message() -> None:
    """go TestPublishDuplicateMessage: publishing a message whose id was already seen sends nothing."""
    h = make_router(10)
    msg, sent = h.publish()
    assert len(sent) == 10
    h.out.clear()
    assert h.router.publish(msg, h.now) == []
    assert h.out.log == []


def test_publish_to_floodsub_peers_without_flood_publish() -> None:
    """rust test_publish_to_floodsub_peers_without_flood_publish: floodsub peers get our messages
    whether or not they are in a mesh (they have none), besides the mesh peers."""
    h = make_router(6, flood_publish=False)
    fs = h.add_peer(101, FLOODSUB)
    gs = h.add_peer(102, GOSSIPSUB_V11)
    assert fs not in h.mesh() and gs not in h.mesh()
    _, sent = h.publish()
    assert sorted(sent) == sorted(h.mesh() | {fs})


def test_do_not_use_floodsub_in_fanout() -> None:
    """rust test_do_not_use_floodsub_in_fanout: publishing to a topic we are not in reaches floodsub
    peers directly, but they are never fanout peers."""
    h = make_router(0, join=False, flood_publish=False)
    fs = h.add_peer(101, FLOODSUB)
    gs = h.add_peer(102, GOSSIPSUB_V12)
    _, sent = h.publish()
    assert sorted(sent) == sorted([fs, gs])
    assert h.router.fanout[TOPIC] == {gs}


def test_publish_to_peer_with_full_queue_is_counted() -> None:
    """A message a peer's full queue refuses is not reported as sent, and is counted as dropped."""
    h = make_router(3)
    h.out.full.add(h.peers[0])
    _, sent = h.publish()
    assert sorted(sent) == sorted(h.peers[1:])
    assert h.router.counters["dropped_to_peers"] == 1


def test_enough_peers() -> None:
    """go TestGossipsubEnoughPeers, router side: with nobody connected no peer is ready for the topic;
    once the mesh is built there are at least D_lo (go's EnoughPeers test), and at most D."""
    h = make_router(0)
    assert h.router.ready_peers(TOPIC) == 0
    for i in range(10):
        h.add_peer(1 + i)
    h.heartbeat()
    assert 5 <= h.router.ready_peers(TOPIC) == len(h.mesh()) <= 6


# --- gossip: IHAVE, IWANT, promises ------------------------------------------------------------------


def _seen_message(h: Harness, peer: PeerId | None = None) -> PubsubMessage:
    """A message received from ``peer`` (a mesh peer by default) and accepted: cached, forwarded."""
    msg = h.message(b"gossip me")
    h.receive(peer if peer is not None else sorted(h.mesh())[0], msg)
    h.out.clear()
    return msg


def test_gossip_to_at_least_gossip_lazy_peers() -> None:
    """rust test_gossip_to_at_least_gossip_lazy_peers (go emitGossip): with 9 non-mesh topic peers,
    gossip_factor × 9 = 2 < D_lazy, so exactly D_lazy = 6 of them get an IHAVE with the message id;
    no mesh peer does."""
    h = make_router(15)
    msg = _seen_message(h)
    h.heartbeat()
    ihaves = h.out.ihaves()
    assert len(ihaves) == 6 and len({p for p, _ in ihaves}) == 6
    assert not {p for p, _ in ihaves} & h.mesh()
    assert all(ih.topicID == TOPIC and list(ih.messageIDs) == [msg.id] for _, ih in ihaves)


def test_gossip_to_at_most_gossip_factor_peers() -> None:
    """rust test_gossip_to_at_most_gossip_factor_peers: with 48 non-mesh peers, gossip goes to
    gossip_factor × 48 = 12 of them."""
    h = make_router(6 + 6 * 8)
    _seen_message(h)
    h.heartbeat()
    receivers = [p for p, _ in h.out.ihaves()]
    assert len(receivers) == 12 and len(set(receivers)) == 12
    assert not set(receivers) & h.mesh()


def test_no_gossip_without_messages() -> None:
    """go emitGossip: nothing in the gossip windows, no IHAVE at all."""
    h = make_router(20)
    h.heartbeat(3)
    assert h.out.ihaves() == []


def test_gossip_piggyback() -> None:
    """go TestGossipsubGossipPiggyback / sendGraftPrune + flush: the heartbeat sends one control RPC per
    peer, carrying that peer's GRAFT for one topic and its IHAVE for another together."""
    h = make_router(6, topics=("a", "b"))
    x = h.add_peer(101, topics=("a", "b"))
    assert x not in h.mesh("a") and x not in h.mesh("b")
    for p in sorted(h.mesh("a"))[:2]:
        h.prune(p, "a")  # mesh a: 4 < D_lo; x is the only candidate
    msg = h.message(b"on b", "b")
    h.receive(h.peers[0], msg)
    h.out.clear()
    h.heartbeat()
    (rpc,) = h.out.controls(x)
    assert [g.topicID for g in rpc.control.graft] == ["a"]
    assert [(ih.topicID, list(ih.messageIDs)) for ih in rpc.control.ihave] == [("b", [msg.id])]
    assert len(h.out.control_peers()) == len(set(h.out.control_peers()))  # never two RPCs to one peer


def test_gossip_to_fanout_topic_peers() -> None:
    """go heartbeat: a fanout topic is gossiped too, to topic peers outside the fanout."""
    h = make_router(12, join=False, flood_publish=False)
    msg, _ = h.publish()
    fanout = h.router.fanout[TOPIC]
    h.out.clear()
    h.heartbeat()
    receivers = {p for p, _ in h.out.ihaves()}
    assert receivers == set(h.peers) - fanout
    assert all(list(ih.messageIDs) == [msg.id] for _, ih in h.out.ihaves())


def test_gossip_windows() -> None:
    """go TestGossipsubGossip, mcache (history 5, gossip 3) and rust
    test_handle_iwant_msg_cached_shifted: a message is advertised in the 3 heartbeats after it arrived
    and no more; it is served to IWANT until its 5th heartbeat has shifted it out of the cache."""
    h = make_router(15)
    msg = _seen_message(h)
    asker = sorted(set(h.peers) - h.mesh())[0]
    for _ in range(3):
        h.out.clear()
        h.heartbeat()
        assert h.out.ihaves() and all(list(ih.messageIDs) == [msg.id] for _, ih in h.out.ihaves())
    h.out.clear()
    h.heartbeat()  # 4th
    assert h.out.ihaves() == []
    h.rpc(asker, iwant=[msg.id])
    assert h.out.receivers(msg.id) == [asker]
    h.heartbeat()  # 5th: shifted out
    h.out.clear()
    h.rpc(sorted(set(h.peers) - h.mesh())[1], iwant=[msg.id])
    assert h.out.sent() == []


def test_handle_iwant_msg_cached() -> None:
    """rust test_handle_iwant_msg_cached (go handleIWant): an IWANT for a cached message gets it."""
    h = make_router(20)
    msg = _seen_message(h)
    asker = sorted(set(h.peers) - h.mesh())[0]
    h.rpc(asker, iwant=[msg.id])
    assert [(p, m.id) for p, m in h.out.sent()] == [(asker, msg.id)]
    assert h.out.controls() == []


def test_handle_iwant_msg_not_cached() -> None:
    """rust test_handle_iwant_msg_not_cached: an IWANT for an unknown id is ignored."""
    h = make_router(20)
    h.rpc(h.peers[0], iwant=[b"unknown id"])
    assert h.out.log == []


def test_handle_iwant_msg_but_already_sent_idontwant() -> None:
    """rust test_handle_iwant_msg_but_already_sent_idontwant / go TestGossipsubIdontwantBeforeIwant
    (go handleIWant skips ids in ``unwanted``): after a peer's IDONTWANT, its IWANT for the same id
    gets nothing."""
    h = make_router(20)
    msg = _seen_message(h)
    asker = sorted(set(h.peers) - h.mesh())[0]
    h.rpc(asker, idontwant=[msg.id])
    h.rpc(asker, iwant=[msg.id])
    assert h.out.sent() == []


def test_handle_ihave_subscribed_and_msg_not_cached() -> None:
    """rust test_handle_ihave_subscribed_and_msg_not_cached (go handleIHave): an IHAVE of an unseen id on
    our topic is answered with an IWANT for it, in one control RPC."""
    h = make_router(20)
    peer = h.peers[7]
    h.ihave(peer, [b"unknown id"])
    assert h.out.iwants() == [(peer, [b"unknown id"])]
    assert len(h.out.controls()) == 1


def test_handle_ihave_subscribed_and_msg_cached() -> None:
    """rust test_handle_ihave_subscribed_and_msg_cached: an IHAVE of a seen id asks for nothing."""
    h = make_router(20)
    msg = _seen_message(h)
    h.ihave(h.peers[7], [msg.id])
    assert h.out.log == []


def test_handle_ihave_not_subscribed() -> None:
    """rust test_handle_ihave_not_subscribed: IHAVE on a topic we are not in is ignored."""
    h = make_router(20)
    h.ihave(h.peers[7], [b"irrelevant id"], topic="unsubscribed topic")
    assert h.out.log == []


def test_ignore_too_many_iwants_from_same_peer_for_same_message() -> None:
    """rust test_ignore_too_many_iwants_from_same_peer_for_same_message (go handleIWant, go
    TestGossipsubAttackSpamIWANT: 1 forward + GossipRetransmission answers): asked 2 × 3 + 10 times for
    one message, a peer gets it gossip_retransmission = 3 times; another peer still gets its 3."""
    h = make_router(12)
    msg = _seen_message(h)
    asker, other = sorted(set(h.peers) - h.mesh())[:2]
    for _ in range(2 * 3 + 10):
        h.rpc(asker, iwant=[msg.id])
    assert h.out.receivers(msg.id) == [asker] * 3
    h.out.clear()
    for _ in range(5):
        h.rpc(other, iwant=[msg.id])
    assert h.out.receivers(msg.id) == [other] * 3


def test_iwant_for_one_id_twice_in_one_rpc_is_answered_once() -> None:
    """go handleIWant collects the answers in a map: an id listed twice in one IWANT is sent once."""
    h = make_router(12)
    msg = _seen_message(h)
    asker = sorted(set(h.peers) - h.mesh())[0]
    h.rpc(asker, iwant=[msg.id, msg.id])
    assert h.out.receivers(msg.id) == [asker]


def test_ignore_too_many_ihaves() -> None:
    """rust test_ignore_too_many_ihaves (max IHAVE messages per heartbeat 10): of 20 one-id IHAVEs only
    the first 10 get an IWANT; after a heartbeat the next 10 do."""
    h = make_router(12)
    peer = h.peers[0]
    ids = [b"id-%d" % i for i in range(20)]
    for i in ids:
        h.ihave(peer, [i])
    assert h.out.iwants() == [(peer, [i]) for i in ids[:10]]
    h.heartbeat()
    h.out.clear()
    for i in ids[10:]:
        h.ihave(peer, [i])
    assert h.out.iwants() == [(peer, [i]) for i in ids[10:]]


def test_ignore_too_many_messages_in_ihave() -> None:
    """rust test_ignore_too_many_messages_in_ihave (max IHAVE length 10): IHAVEs of 8, 12 and 20 ids get
    IWANTs for 8 and then 2 (ids of those advertised), the third none; after a heartbeat 10 again."""
    h = make_router(12, max_ihave_length=10)
    peer = h.peers[0]
    ids = [b"id-%02d" % i for i in range(30)]
    h.ihave(peer, ids[:8])
    h.ihave(peer, ids[:12])
    h.ihave(peer, ids[:20])
    asked = h.out.iwants()
    assert [len(w) for _, w in asked] == [8, 2]
    assert {i for _, w in asked for i in w} <= set(ids[:12])
    h.heartbeat()
    h.out.clear()
    h.ihave(peer, ids[20:30])
    assert [sorted(w) for _, w in h.out.iwants()] == [ids[20:30]]


def test_limit_number_of_message_ids_inside_ihave() -> None:
    """rust test_limit_number_of_message_ids_inside_ihave (go emitGossip: truncated per peer "so that we
    emit a different set for each peer"): with 200 messages and max IHAVE length 100, each gossip
    receiver gets 100 ids, and two receivers get different (overlapping) random sets."""
    h = make_router(6, max_ihave_length=100)
    p1, p2 = h.add_peer(101), h.add_peer(102)  # the only peers outside the mesh
    sender = sorted(h.mesh())[0]
    for k in range(200):
        h.receive(sender, h.message(b"m%d" % k))
    h.out.clear()
    h.heartbeat()
    sets = {p: set(ih.messageIDs) for p, ih in h.out.ihaves() if p in (p1, p2)}
    assert len(sets[p1]) == 100 and len(sets[p2]) == 100
    assert sets[p1] != sets[p2] and sets[p1] & sets[p2]


def test_iwant_penalties() -> None:
    """rust test_iwant_penalties (go gossipTracer, one promise per IWANT, follow-up time 3 s): of 100
    peers that advertised a message each, the 20 that delivered within the follow-up time keep score
    0, the 80 that did not get one P7 penalty (−1) at the first heartbeat past the deadline."""
    h = make_router(2, **scoring())
    others = [h.add_peer(101 + i) for i in range(100)]
    msgs = [h.message(b"m%d" % i) for i in range(100)]
    for p, m in zip(others, msgs):
        h.ihave(p, [m.id])
    assert all(w == [m.id] for (_, w), m in zip(h.out.iwants(), msgs))
    for p, m in list(zip(others, msgs))[:20]:
        h.receive(p, m)
    h.heartbeat()  # t = 1
    assert all(h.score(p) == 0.0 for p in others)
    h.heartbeat(2)  # t = 3: the deadline is not past yet
    assert all(h.score(p) == 0.0 for p in others)
    h.heartbeat()  # t = 4
    assert [h.score(p) for p in others] == [0.0] * 20 + [-1.0] * 80
    assert h.router.counters["broken_promises"] == 80
    h.heartbeat(5)
    assert [h.score(p) for p in others] == [0.0] * 20 + [-1.0] * 80  # a promise breaks once


def test_promise_kept_by_another_peer() -> None:
    """go fulfillPromise: a promise is about the message, not the peer; if another peer delivers the
    advertised message first, the advertiser is not penalised."""
    h = make_router(3, **scoring())
    advertiser, deliverer, _ = h.peers
    msg = h.message()
    h.ihave(advertiser, [msg.id])
    h.receive(deliverer, msg)
    h.heartbeat(4)
    assert h.score(advertiser) == 0.0


def test_promise_deadline_is_not_extended_by_advertising_again() -> None:
    """go AddPromise / rust add_promise ("we don't update the expiry"): advertising the same id again
    before the deadline does not push the deadline back."""
    h = make_router(1, **scoring())
    (peer,) = h.peers
    msg = h.message()
    h.ihave(peer, [msg.id])  # t = 0: deadline 3
    h.heartbeat(2)  # t = 2: new heartbeat window, so the IHAVE is taken again
    h.ihave(peer, [msg.id])
    assert len(h.out.iwants()) == 2
    h.advance(1.5)
    h.router.heartbeat(h.now)  # t = 3.5: past the first deadline
    assert h.score(peer) == -1.0


def test_promise_kept_when_message_arrives_even_if_validation_is_slow() -> None:
    """go gossipTracer.ValidateMessage: the promise is kept when the message arrives (correctly signed),
    not when the application's validator finishes — a slow validator must not penalise the peer."""
    h = make_router(1, **scoring())
    (peer,) = h.peers
    msg = h.message()
    h.ihave(peer, [msg.id])
    h.advance(1)
    pending = h.receive(peer, msg, result=None)
    assert pending is not None
    h.heartbeat(4)  # t = 5, validation still running
    assert h.score(peer) == 0.0
    h.router.validation_complete(pending, ACCEPT, h.now)
    assert h.score(peer) == 0.0


def test_promise_broken_by_invalid_signature() -> None:
    """go RejectMessage(RejectInvalidSignature) keeps the promise: a badly signed copy does not fulfil it."""
    h = make_router(1, **scoring())
    (peer,) = h.peers
    msg = h.message()
    h.ihave(peer, [msg.id])
    forged = rpc_pb2.Message.FromString(msg.raw)
    forged.data = b"forged"
    h.rpc(peer, publish=[forged])
    h.heartbeat(4)
    assert h.score(peer) == -1.0


def test_do_not_gossip_to_peers_below_gossip_threshold() -> None:
    """rust test_do_not_gossip_to_peers_below_gossip_threshold: of two gossip candidates, the one below
    the gossip threshold (−4 < −3) gets no IHAVE, the other (−1) does."""
    h = make_router(6, **scoring(thresholds=BETWEEN_ONE_AND_TWO_PENALTIES))
    assert h.mesh() == set(h.peers)  # the two newcomers are the only gossip candidates
    p1, p2 = h.add_peer(101), h.add_peer(102)
    h.scores.add_penalty(p1, 2)
    h.scores.add_penalty(p2, 1)
    msg = _seen_message(h, h.peers[0])
    h.heartbeat()
    assert [(p, list(ih.messageIDs)) for p, ih in h.out.ihaves()] == [(p2, [msg.id])]


def test_iwant_msg_from_peer_below_gossip_threshold_gets_ignored() -> None:
    """rust test_iwant_msg_from_peer_below_gossip_threshold_gets_ignored."""
    h = make_router(6, **scoring(thresholds=BETWEEN_ONE_AND_TWO_PENALTIES))
    p1, p2 = h.add_peer(101), h.add_peer(102)
    h.scores.add_penalty(p1, 2)
    h.scores.add_penalty(p2, 1)
    msg = _seen_message(h, h.peers[0])
    h.rpc(p1, iwant=[msg.id])
    h.rpc(p2, iwant=[msg.id])
    assert h.out.receivers(msg.id) == [p2]


def test_ihave_msg_from_peer_below_gossip_threshold_gets_ignored() -> None:
    """rust test_ihave_msg_from_peer_below_gossip_threshold_gets_ignored."""
    h = make_router(6, **scoring(thresholds=BETWEEN_ONE_AND_TWO_PENALTIES))
    p1, p2 = h.add_peer(101), h.add_peer(102)
    h.scores.add_penalty(p1, 2)
    h.scores.add_penalty(p2, 1)
    h.ihave(p1, [b"id"])
    h.ihave(p2, [b"id"])
    assert h.out.iwants() == [(p2, [b"id"])]


# --- IDONTWANT (v1.2) --------------------------------------------------------------------------------

BIG = b"x" * 1024  # idontwant_message_threshold: messages of at least this many bytes


def test_sends_idontwant_to_supported() -> None:
    """rust sends_idontwant_to_supported / doesnt_send_idontwant, go TestGossipsubIdontwantSend,
    ...NoIDONTWANTToMessageSender, ...IdontwantIncompat, ...IdontwantNonMesh: a first-seen message of
    1024 bytes makes us send IDONTWANT with its id, before validation, to every v1.2 mesh peer but the
    sender — not to v1.1/v1.0 mesh peers, nor to peers outside the mesh."""
    kinds = [GOSSIPSUB_V12] * 4 + [GOSSIPSUB_V11, GOSSIPSUB_V10]
    h = make_router(6, protocol=kinds)
    assert h.mesh() == set(h.peers)
    outsider = h.add_peer(101)
    h.out.clear()
    sender = h.peers[0]
    msg = h.message(BIG)
    h.receive(sender, msg, result=None)  # still being validated
    assert sorted(h.out.idontwants()) == sorted((p, [msg.id]) for p in h.peers[1:4])
    assert outsider not in h.out.control_peers()


def test_doesnt_send_idontwant_for_lower_message_size() -> None:
    """rust doesnt_sends_idontwant_for_lower_message_size / go TestGossipsubIdontwantSmallMessage: 1023
    bytes is below the threshold."""
    h = make_router(6)
    h.receive(h.peers[0], h.message(BIG[:-1]))
    assert h.out.idontwants() == []


def test_idontwant_before_first_publish() -> None:
    """go TestGossipsubIDONTWANTBeforeFirstPublish: our own published messages cause no IDONTWANT; nor
    does a duplicate of a message we already have."""
    h = make_router(6)
    msg, _ = h.publish(BIG)
    assert h.out.idontwants() == []
    h.receive(h.peers[0], msg)
    assert h.out.idontwants() == []


def test_doesnt_forward_idontwant() -> None:
    """rust doesnt_forward_idontwant / go TestGossipsubIdontwantReceive: a mesh peer that sent IDONTWANT
    for a message does not get it forwarded; the other mesh peers do."""
    h = make_router(6)
    sender, refuser = h.peers[:2]
    msg = h.message(b"small is fine: the receiver side has no size threshold")
    h.rpc(refuser, idontwant=[msg.id])
    h.receive(sender, msg)
    assert sorted(h.out.receivers(msg.id)) == sorted(h.peers[2:])


def test_idontwant_honoured_for_our_own_messages_to_the_mesh() -> None:
    """go rpcs(): without flood publishing, a mesh peer that sent IDONTWANT does not get our message."""
    h = make_router(6, flood_publish=False)
    msg = h.message(b"ours", author=LOCAL)
    h.rpc(h.peers[0], idontwant=[msg.id])
    assert sorted(h.router.publish(msg, h.now)) == sorted(h.peers[1:])


def test_parses_idontwant() -> None:
    """rust parses_idontwant: the ids of an IDONTWANT are remembered for the peer for
    idontwant_message_ttl (3) heartbeats."""
    h = make_router(2)
    h.rpc(h.peers[1], idontwant=[b"\x00\x01\x02\x03"])
    assert h.router.peers[h.peers[1]].dont_send == {b"\x00\x01\x02\x03": 3}


def test_clear_stale_idontwant() -> None:
    """rust clear_stale_idontwant / go TestGossipsubIdontwantClear: after idontwant_message_ttl = 3
    heartbeats an IDONTWANT is forgotten and the message is forwarded again; after 2 it still holds."""
    h = make_router(6)
    sender, refuser = h.peers[:2]
    early, late = h.message(b"early"), h.message(b"late")
    h.rpc(refuser, idontwant=[early.id, late.id])
    h.heartbeat(2)
    h.receive(sender, early)
    assert refuser not in h.out.receivers(early.id)
    h.heartbeat()
    assert h.router.peers[refuser].dont_send == {}
    h.receive(sender, late)
    assert refuser in h.out.receivers(late.id)


def test_idontwant_per_heartbeat_caps() -> None:
    """go handleIDontWant (MaxIDontWantLength 10 ids per message, MaxIDontWantMessages 1000 messages per
    heartbeat; go TestGossipsubHandleIDontwantSpam): only the first 10 ids of an IDONTWANT count, the
    1001st IDONTWANT of a heartbeat is ignored, and the budget is back after the heartbeat."""
    h = make_router(2)
    peer = h.peers[0]
    state = h.router.peers[peer]
    h.rpc(peer, idontwant=[b"id-%d" % i for i in range(11)])
    assert set(state.dont_send) == {b"id-%d" % i for i in range(10)}
    for i in range(999):
        h.rpc(peer, idontwant=[b"more-%d" % i])
    assert len(state.dont_send) == 10 + 999
    h.rpc(peer, idontwant=[b"one too many"])
    assert b"one too many" not in state.dont_send
    assert h.router.counters["idontwant_ignored"] == 2  # the 11th id, the 1001st message
    h.heartbeat()
    h.rpc(peer, idontwant=[b"after the heartbeat"])
    assert b"after the heartbeat" in state.dont_send


# --- direct (explicit) peers -------------------------------------------------------------------------


def test_explicit_peers_not_added_to_mesh_on_subscribe() -> None:
    """rust explicit_peers_not_added_to_mesh_on_subscribe / ..._on_receiving_subscription,
    do_not_graft_explicit_peer: a direct peer is never grafted, on join nor in heartbeats."""
    h = make_router(2, direct=[0])
    direct, other = h.peers
    assert h.mesh() == {other}
    h.heartbeat(3)
    assert h.mesh() == {other}
    assert all(p != direct for p, _ in h.out.grafts())


def test_explicit_peers_not_added_to_mesh_from_fanout_on_subscribe() -> None:
    """rust explicit_peers_not_added_to_mesh_from_fanout_on_subscribe: publishing first (fanout) and
    joining then does not mesh the direct peer either."""
    h = make_router(2, direct=[0], join=False, flood_publish=False)
    direct, other = h.peers
    _, sent = h.publish()
    assert sorted(sent) == sorted([direct, other])  # direct peers always get our messages
    assert h.router.fanout[TOPIC] == {other}
    h.router.join(TOPIC, h.now)
    assert h.mesh() == {other}
    assert h.out.grafts() == [(other, TOPIC)]


def test_handle_graft_explicit_peer() -> None:
    """go handleGraft / spec v1.1 ("an error to GRAFT on an explicit peer ... rejected with a PRUNE"):
    a direct peer's GRAFT on two topics gets two PRUNEs without PX and the meshes stay without it
    (rust only ignores it)."""
    h = make_router(1, topics=("topic1", "topic2"), direct=[0], do_px=True)
    (direct,) = h.peers
    h.graft(direct, "topic1", "topic2")
    assert h.mesh("topic1") == set() and h.mesh("topic2") == set()
    assert sorted((p, _shape(pr)) for p, pr in h.out.prunes()) == [
        (direct, _prune("topic1", backoff=60)),
        (direct, _prune("topic2", backoff=60)),
    ]
    assert len(h.out.controls()) == 1


def test_do_forward_messages_to_explicit_peers() -> None:
    """rust do_forward_messages_to_explicit_peers / go TestGossipsubDirectPeers: a message we relay goes
    to the direct peer as well as to the mesh."""
    h = make_router(3, direct=[0])
    direct = h.peers[0]
    sender = h.peers[1]
    msg = h.message()
    h.receive(sender, msg)
    assert sorted(h.out.receivers(msg.id)) == sorted([direct, h.peers[2]])


def test_no_gossip_gets_sent_to_explicit_peers() -> None:
    """rust no_gossip_gets_sent_to_explicit_peers."""
    h = make_router(8, direct=[0])
    _seen_message(h, h.peers[1])
    h.heartbeat(3)
    assert h.out.ihaves() and all(p != h.peers[0] for p, _ in h.out.ihaves())


def test_explicit_peer_reconnects() -> None:
    """rust test_explicit_peer_reconnects / go directConnect, TestGossipsubDirectPeers: a direct peer that
    is not connected is dialled at the first heartbeat and again every direct_connect_ticks; a connected
    one is not."""
    h = make_router(0, direct_connect_ticks=2)
    direct = pid(77)
    h.router.direct = frozenset({direct})
    h.heartbeat()  # tick 1
    assert h.out.connects() == [(direct, None)]
    h.out.clear()
    h.heartbeat()  # tick 2
    assert h.out.connects() == []
    h.heartbeat()  # tick 3
    assert h.out.connects() == [(direct, None)]
    h.add_peer(77)
    h.out.clear()
    h.heartbeat(2)
    assert h.out.connects() == []


def test_explicit_peer_rpcs_accepted_below_graylist() -> None:
    """spec v1.1, explicit peering: "incoming RPCs are always accepted from them" (go AcceptFrom returns
    AcceptAll for direct peers before the graylist check)."""
    h = make_router(3, direct=[0], **scoring(thresholds=BETWEEN_ONE_AND_TWO_PENALTIES))
    direct, other = h.peers[0], h.peers[1]
    h.scores.add_penalty(direct, 2)
    h.scores.add_penalty(other, 2)
    m1, m2 = h.message(b"from direct"), h.message(b"from other")
    assert h.receive(direct, m1) is not None
    assert h.receive(other, m2) is None
    assert [m.data for m in h.out.delivered()] == [b"from direct"]


def test_direct_peers_network() -> None:
    """go TestGossipsubDirectPeers: 3 nodes, 1 and 2 direct peers of each other, 0 connected to both;
    1 and 2 connect by themselves (direct connect ticks 2); every message reaches every node; after the
    1–2 connection drops it is restored and messages still flow."""
    cfg = GossipsubConfig(direct_connect_ticks=2)
    net = SimNet(3, cfg, direct={1: [2], 2: [1]})
    net.link(0, 1)
    net.link(0, 2)
    net.run(2.0)
    assert frozenset((1, 2)) in net.links
    net.join(TOPIC, range(3))
    net.run(1.0)
    assert pid(3) not in net.routers[1].mesh_peers(TOPIC) and pid(2) not in net.routers[2].mesh_peers(TOPIC)
    for i in range(3):
        net.publish(i, b"message %d" % i)
    net.unlink(1, 2)
    net.run(5.0)
    assert frozenset((1, 2)) in net.links
    for i in range(3):
        net.publish(i, b"again %d" % i)
    for i in range(3):
        expected = [b"%s %d" % (w, k) for w in (b"message", b"again") for k in range(3) if k != i]
        assert net.received(i) == expected


# --- floodsub peers, floodsub routers ----------------------------------------------------------------


def test_mixed_gossipsub() -> None:
    """go TestMixedGossipsub, router side: floodsub peers in a topic get every message we relay (they
    have no mesh) but never a control message: no GRAFT, PRUNE or IHAVE, only subscriptions."""
    h = make_router(8, protocol=[GOSSIPSUB_V12] * 6 + [FLOODSUB] * 2, clear=False)
    floodsub = set(h.peers[6:])
    for p in floodsub:
        assert all(not rpc.HasField("control") for rpc in h.out.controls(p))
    msg = h.message()
    sender = h.peers[0]
    h.receive(sender, msg)
    assert set(h.out.receivers(msg.id)) == (h.mesh() - {sender}) | floodsub
    h.heartbeat(3)
    h.router.leave(TOPIC, h.now)
    for p in floodsub:
        assert all(not rpc.HasField("control") for rpc in h.out.controls(p))
        assert (p, False, TOPIC) in h.out.subscriptions()


def test_mixed_gossipsub_network() -> None:
    """go TestMixedGossipsub: 20 gossipsub and 10 floodsub nodes, sparsely connected, all subscribed;
    100 messages from random nodes reach every node, in order."""
    net = SimNet(30, flood_only=range(20, 30))
    net.join(TOPIC, range(30))
    net.connect_random(3, random.Random(7))
    net.run(2.0)
    rng = random.Random(8)
    owners = [rng.randrange(30) for _ in range(100)]
    for k, owner in enumerate(owners):
        net.publish(owner, b"%d it's not a floooooood %d" % (k, k))
    for i in range(30):
        assert net.received(i) == [b"%d it's not a floooooood %d" % (k, k) for k, o in enumerate(owners) if o != i]


def test_flood_only_router() -> None:
    """A floodsub router (flood_only): every message goes to every peer in the topic but its sender and
    author; no mesh, no control message, nothing at heartbeats."""
    h = make_router(5, flood_only=True, protocol=FLOODSUB, clear=False)
    assert h.router.mesh == {}
    assert all(not rpc.HasField("control") for rpc in h.out.controls())
    h.out.clear()
    msg = h.message()
    h.receive(h.peers[0], msg)
    assert sorted(h.out.receivers(msg.id)) == sorted(h.peers[1:])
    _, sent = h.publish()
    assert sorted(sent) == sorted(h.peers)
    h.out.clear()
    h.graft(h.peers[1])
    h.ihave(h.peers[1], [b"id"])
    h.heartbeat(3)
    assert h.out.log == []


# --- subscriptions -----------------------------------------------------------------------------------


def test_hello_rpc_is_single_batched_message() -> None:
    """rust test_hello_rpc_is_single_batched_message / test_peer_added_on_connection: a new peer gets all
    our subscriptions in one RPC (sorted), and nothing else."""
    h = make_router(0, topics=("alpha", "beta", "gamma"))
    peer = h.add_peer(1, topics=())
    (rpc,) = h.out.controls(peer)
    assert [(s.subscribe, s.topicid) for s in rpc.subscriptions] == [(True, "alpha"), (True, "beta"), (True, "gamma")]
    assert not rpc.HasField("control") and not rpc.publish
    silent = make_router(0, join=False)
    silent.add_peer(1, topics=())
    assert silent.out.log == []


def test_subscribe() -> None:
    """rust test_subscribe: joining announces the topic to all 20 peers (one subscription each)."""
    h = make_router(20, join=False)
    h.router.join(TOPIC, h.now)
    assert sorted(p for p, sub, t in h.out.subscriptions()) == sorted(h.peers)
    assert all(sub and t == TOPIC for _, sub, t in h.out.subscriptions())
    assert TOPIC in h.router.mesh and TOPIC in h.router.subscriptions
    h.out.clear()
    h.router.join(TOPIC, h.now)  # joining again changes nothing
    assert h.out.log == []


def test_unsubscribe() -> None:
    """rust test_unsubscribe: leaving two topics sends 2 × 20 unsubscriptions and removes both meshes."""
    h = make_router(20, topics=("topic1", "topic2"))
    h.router.leave("topic1", h.now)
    h.router.leave("topic2", h.now)
    subs = h.out.subscriptions()
    assert len(subs) == 40 and all(not sub for _, sub, _ in subs)
    assert h.router.mesh == {} and h.router.subscriptions == set()
    h.out.clear()
    h.router.leave("topic1", h.now)
    assert h.out.log == []


def test_handle_received_subscriptions() -> None:
    """rust test_handle_received_subscriptions: subscriptions and unsubscriptions in one RPC are applied
    per peer; an unknown peer's RPC is ignored; an unsubscription removes just that topic."""
    topics = ["topic1", "topic2", "topic3", "topic4"]
    h = make_router(20, topics=topics, peer_topics=(), join=False)
    p0, p1 = h.peers[:2]
    for p in (p0, p1):
        h.rpc(p, subscribe=topics[:3], unsubscribe=[topics[3]])
    stranger = pid(999)
    assert h.rpc(stranger, subscribe=topics) == []
    for t in topics[:3]:
        assert h.router.topic_peers(t) == {p0, p1}
    assert h.router.topic_peers("topic4") == set() and "topic4" not in h.router.topics
    assert stranger not in h.router.peers
    h.rpc(p0, unsubscribe=["topic1"])
    assert h.router.topic_peers("topic1") == {p1}
    assert h.router.peers[p0].topics == {"topic2", "topic3"}


def test_peer_unsubscribing_leaves_mesh_and_fanout() -> None:
    """rust test_peer_unsubscribed_cleanup: a peer that unsubscribes leaves our mesh (and fanout) for
    that topic, without a PRUNE from us, and the topic entry goes when its last peer leaves."""
    h = make_router(3, topics=(TOPIC,), peer_topics=(TOPIC, "fan"), flood_publish=False)
    h.publish(b"x", "fan")
    leaver = h.peers[0]
    assert leaver in h.mesh() and leaver in h.router.fanout["fan"]
    h.out.clear()
    h.rpc(leaver, unsubscribe=[TOPIC, "fan"])
    assert leaver not in h.mesh() and leaver not in h.router.fanout["fan"]
    assert h.out.log == []
    for p in h.peers[1:]:
        h.rpc(p, unsubscribe=["fan"])
    assert "fan" not in h.router.topics


def test_topic_caps() -> None:
    """Subscription caps (CVE-2026-46679 class): beyond max_topics_per_peer a peer's new subscriptions
    are refused and counted, beyond max_subscriptions_per_rpc the rest of the RPC is dropped, and the
    global max_topics bounds the table; topics we are in are always taken."""
    h = make_router(2, max_topics_per_peer=3, max_subscriptions_per_rpc=5, max_topics=4, peer_topics=())
    a, b = h.peers
    h.rpc(a, subscribe=["t1", "t2", "t3", "t4"])
    assert h.router.peers[a].topics == {"t1", "t2", "t3"}
    h.rpc(b, subscribe=["u1", "u2", "u3", "u4", "u5", "u6", "u7"])
    assert h.router.peers[b].topics == {"u1"}  # max_topics = 4 topic entries in all
    assert h.router.counters["subscriptions_refused"] == 1 + 4 + 1
    h.rpc(a, subscribe=[TOPIC])
    assert TOPIC in h.router.peers[a].topics and len(h.router.topics) == 5


# --- messages: seen cache, signature policy, validation ----------------------------------------------


def test_duplicate_is_not_validated_twice() -> None:
    """pubsub seen cache: the second copy of a message (from anyone) is not handed out for validation
    again, not delivered, not forwarded; it is counted as a duplicate."""
    h = make_router(6)
    msg = h.message()
    first = h.receive(h.peers[0], msg, result=None)
    assert first is not None and first.id == msg.id and first.received_from == h.peers[0]
    assert h.rpc(h.peers[1], publish=[msg]) == []  # validation still running: still a duplicate
    h.router.validation_complete(first, ACCEPT, h.now)
    assert h.rpc(h.peers[2], publish=[msg]) == []
    assert h.router.counters["duplicates"] == 2
    assert [m.id for m in h.out.delivered()] == [msg.id]
    assert sorted(h.out.receivers(msg.id)) == sorted(h.mesh() - {h.peers[0]})


def test_seen_cache_expires() -> None:
    """A message id is remembered for seen_ttl (120 s): a copy after the expiry is new again."""
    h = make_router(6, seen_ttl=10.0)
    msg = h.message()
    h.receive(h.peers[0], msg)
    h.heartbeat(9)
    assert h.rpc(h.peers[1], publish=[msg]) == []
    h.heartbeat(1)  # t = 10: expired
    assert h.receive(h.peers[1], msg) is not None


def test_strict_sign_rejects_missing_signature() -> None:
    """StrictSign: an unsigned message is rejected (InvalidMessageReceived, not validated) and not marked
    seen: the properly signed copy from another peer is still accepted."""
    h = make_router(6)
    msg = h.message()
    unsigned = rpc_pb2.Message.FromString(msg.raw)
    unsigned.ClearField("signature")
    assert h.rpc(h.peers[0], publish=[unsigned]) == []
    (event,) = h.out.events()
    assert isinstance(event, InvalidMessageReceived) and event.peer == h.peers[0]
    assert msg.id not in h.router.seen
    assert h.receive(h.peers[1], msg) is not None
    assert [m.id for m in h.out.delivered()] == [msg.id]


def test_strict_sign_rejects_invalid_signature() -> None:
    """StrictSign: a message whose data was changed after signing is rejected and not marked seen."""
    h = make_router(6)
    msg = h.message(b"original")
    forged = rpc_pb2.Message.FromString(msg.raw)
    forged.data = b"forged"
    assert h.rpc(h.peers[0], publish=[forged]) == []
    assert h.router.counters["invalid"] == 1
    assert h.receive(h.peers[1], msg) is not None


def test_strict_no_sign() -> None:
    """StrictNoSign: a message carrying from/seqno/signature is rejected; a bare one is accepted, its id
    from the content."""
    h = make_router(6, signature_policy=SignaturePolicy.STRICT_NO_SIGN, message_id_fn=content_hash_message_id)
    assert h.rpc(h.peers[0], publish=[signed(TOPIC, b"signed")]) == []
    assert isinstance(h.out.events()[0], InvalidMessageReceived)
    bare = encode_message(TOPIC, b"bare", key=None, author=None, seqno=None)
    got = h.rpc(h.peers[0], publish=[bare])
    assert [m.id for m in got] == [content_hash_message_id(bare)]
    with_seqno = rpc_pb2.Message(topic=TOPIC, data=b"x", seqno=b"\0" * 8)
    assert h.rpc(h.peers[0], publish=[with_seqno]) == []
    assert h.router.counters["invalid"] == 2


def test_message_on_topic_we_are_not_in_is_ignored() -> None:
    """pubsub: a message on a topic we have not joined is not validated, delivered nor relayed."""
    h = make_router(6, peer_topics=(TOPIC, "elsewhere"))
    assert h.rpc(h.peers[0], publish=[h.message(topic="elsewhere")]) == []
    assert h.router.counters["not_subscribed"] == 1 and h.out.log == []


def test_oversized_message_is_dropped() -> None:
    """A payload above the topic's max message size is dropped before anything else."""
    h = make_router(6, topic_max_message_size={TOPIC: 100})
    assert h.rpc(h.peers[0], publish=[h.message(b"x" * 101)]) == []
    assert h.router.counters["oversized"] == 1
    assert h.receive(h.peers[0], h.message(b"x" * 100)) is not None


def test_own_message_coming_back_is_dropped() -> None:
    """A message authored by us that a peer relays back is not validated again nor delivered."""
    h = make_router(6)
    mine = h.message(b"mine", author=LOCAL)
    assert h.rpc(h.peers[0], publish=[mine]) == []
    assert h.out.delivered() == [] and h.out.sent() == []


def test_validation_accept() -> None:
    """validation_complete(ACCEPT): delivered once, cached, forwarded to the mesh but not back to the
    peer it came from nor to its author."""
    h = make_router(8)
    author = h.peers[0]
    sender = sorted(h.mesh() - {author})[0]
    msg = h.message(author=1)  # authored by peers[0] = pid(1)
    h.receive(sender, msg)
    assert [m.id for m in h.out.delivered()] == [msg.id]
    assert h.router.mcache.get(msg.id) is not None
    assert sorted(h.out.receivers(msg.id)) == sorted(h.mesh() - {sender, author})


def test_validation_reject_and_ignore() -> None:
    """validation_complete(REJECT): not delivered, cached nor forwarded, reported, counted, and the
    sender's P4 counter grows; IGNORE: the same without the report and without a penalty."""
    from mycel.protocols.pubsub.score import TopicScoreParams

    p4 = TopicScoreParams(invalid_message_deliveries_weight=-1.0, invalid_message_deliveries_decay=0.5)
    h = make_router(6, **scoring(topics={TOPIC: p4}))
    bad, meh = h.message(b"bad"), h.message(b"meh")
    h.receive(h.peers[0], bad, REJECT)
    h.receive(h.peers[1], meh, IGNORE)
    assert h.out.delivered() == [] and h.out.sent() == []
    assert bad.id not in h.router.mcache and meh.id not in h.router.mcache
    assert [type(e) for e in h.out.events()] == [InvalidMessageReceived]
    assert (h.router.counters["rejected"], h.router.counters["ignored"]) == (1, 1)
    assert h.score(h.peers[0]) == -1.0  # P4: 1² × −1
    assert h.score(h.peers[1]) == 0.0
    assert h.rpc(h.peers[2], publish=[bad]) == []  # both stay seen


# --- graylist, control coalescing --------------------------------------------------------------------


def test_ignore_rpc_from_peers_below_graylist_threshold() -> None:
    """rust test_ignore_rpc_from_peers_below_graylist_threshold (go AcceptFrom): below the graylist
    threshold a peer's whole RPC — subscriptions, messages, control — is ignored, reported once; a peer
    above it is served."""
    h = make_router(0, **scoring(thresholds=BETWEEN_ONE_AND_TWO_PENALTIES))
    p1, p2 = h.add_peer(1, topics=()), h.add_peer(2, topics=())
    h.scores.add_penalty(p1, 2)
    h.scores.add_penalty(p2, 1)
    for p in (p1, p2):
        got = h.rpc(p, subscribe=[TOPIC], publish=[h.message()], ihave=[(TOPIC, [b"id"])])
        assert (p == p2) == bool(got)
    assert h.router.topic_peers(TOPIC) == {p2}
    assert h.out.iwants() == [(p2, [b"id"])]
    h.rpc(p1, ihave=[(TOPIC, [b"id2"])])
    assert [e for e in h.out.events() if isinstance(e, PeerGraylisted)] == [PeerGraylisted(p1, -4.0)]
    assert h.router.counters["graylisted_rpcs"] == 2


def test_control_piggyback_one_rpc_per_peer() -> None:
    """go TestGossipsubControlPiggyback / TestGossipsubPiggybackControl, router side: everything one RPC
    causes for a peer — IWANT for its IHAVE, its message answers aside, PRUNE for its refused GRAFT —
    leaves as one control RPC."""
    h = make_router(12, topics=("full", "open"))
    for p in h.peers:
        h.graft(p, "full")
    peer = h.add_peer(101, topics=("full", "open"))
    h.out.clear()
    h.rpc(peer, ihave=[("open", [b"wanted"])], graft=["full", "open"])
    (rpc,) = h.out.controls(peer)
    assert [list(w.messageIDs) for w in rpc.control.iwant] == [[b"wanted"]]
    assert [_shape(pr) for pr in rpc.control.prune] == [_prune("full", backoff=60)]
    assert peer in h.mesh("open")
    assert h.out.control_peers() == [peer]


# --- small networks (go's host-level tests, on SimNet) ------------------------------------------------


def _everyone_gets_everything(net: SimNet, nodes: range, count: int, seed: int, topic: str = TOPIC) -> None:
    """Publish ``count`` messages from random ``nodes``; each node must deliver every message it did not
    publish, in publication order (go: ``sub.Next`` per message)."""
    rng = random.Random(seed)
    owners = [rng.choice(nodes) for _ in range(count)]
    before = {i: len(net.received(i)) for i in nodes}
    for k, owner in enumerate(owners):
        net.publish(owner, b"%d it's not a floooooood %d" % (k, k), topic)
    for i in nodes:
        want = [b"%d it's not a floooooood %d" % (k, k) for k, o in enumerate(owners) if o != i]
        assert net.received(i)[before[i] :] == want


@pytest.mark.parametrize(("degree", "seed"), [(3, 11), (10, 13)], ids=["sparse", "dense"])
def test_sparse_and_dense_gossipsub(degree: int, seed: int) -> None:
    """go TestSparseGossipsub / TestDenseGossipsub: 20 nodes, each dialling 3 (sparse) or 10 (dense)
    others; after the first heartbeats 100 messages from random nodes reach every node, once each and
    in publication order."""
    net = SimNet(20)
    net.join(TOPIC, range(20))
    net.connect_random(degree, random.Random(seed))
    net.run(2.0)
    assert all(r.mesh_peers(TOPIC) for r in net.routers)
    _everyone_gets_everything(net, range(20), 100, seed=seed + 1)


def test_gossipsub_multihops() -> None:
    """go TestGossipsubMultihops: a chain of 6 nodes; a message from one end reaches the other."""
    net = SimNet(6)
    for i in range(5):
        net.link(i, i + 1)
    net.join(TOPIC, range(6))
    net.run(2.0)
    net.publish(0, b"i like cats")
    assert all(net.received(i) == [b"i like cats"] for i in range(1, 6))


def test_gossipsub_tree_topology() -> None:
    """go TestGossipsubTreeTopology: a 10-node tree (0 → 1 → {2 → 3, 4 → {5, 6 → 7}}, 8 → 9 off 1);
    messages from each node reach all the others."""
    net = SimNet(10)
    for a, b in [(0, 1), (1, 2), (1, 4), (2, 3), (0, 5), (5, 6), (5, 8), (6, 7), (8, 9)]:
        net.link(a, b)
    net.join(TOPIC, range(10))
    net.run(2.0)
    for i in range(10):
        net.publish(i, b"from %d" % i)
    for i in range(10):
        assert net.received(i) == [b"from %d" % k for k in range(10) if k != i]


def test_gossipsub_gossip_propagation() -> None:
    """go TestGossipsubGossipPropagation: two dense groups sharing node 0; 10 messages published by node
    0 in group 1 before group 2 subscribes reach the late subscribers of group 2 through gossip alone
    (IHAVE/IWANT at their first heartbeats), none lost."""
    net = SimNet(20)
    group1, group2 = list(range(0, 7)), [0, *range(7, 20)]
    for group in (group1, group2):
        for i in group:
            for j in group:
                if i < j:
                    net.link(i, j)
    net.join("foobar", range(1, 7))
    net.run(1.0)
    for k in range(10):
        net.publish(0, b"%d it's not a floooooood %d" % (k, k), "foobar")
    assert all(len(net.received(i)) == 10 for i in range(1, 7))
    net.run(0.1)
    net.join("foobar", range(7, 20))
    net.run(3.0)
    for i in range(7, 20):
        assert sorted(net.received(i)) == sorted(b"%d it's not a floooooood %d" % (k, k) for k in range(10))


def test_gossipsub_fanout_network() -> None:
    """go TestGossipsubFanout: 20 dense nodes, all but node 0 subscribed; 100 messages from node 0
    (through its fanout of D peers) reach every subscriber; then node 0 subscribes too (its fanout
    becoming its mesh) and gets the messages of the others."""
    net = SimNet(20)
    net.join(TOPIC, range(1, 20))
    net.connect_random(10, random.Random(15))
    net.run(2.0)
    for k in range(100):
        net.publish(0, b"fanout %d" % k)
    assert all(net.received(i) == [b"fanout %d" % k for k in range(100)] for i in range(1, 20))
    assert len(net.routers[0].fanout[TOPIC]) == 6
    net.join(TOPIC, [0])
    assert TOPIC not in net.routers[0].fanout
    net.run(2.0)
    _everyone_gets_everything(net, range(1, 20), 20, seed=16)
    assert len(net.received(0)) == 20


def test_gossipsub_prune_network() -> None:
    """go TestGossipsubPrune: 20 dense nodes all subscribed; 5 unsubscribe; later messages reach the
    15 that stayed and none of the 5 (their meshes dropped them with PRUNEs)."""
    net = SimNet(20)
    net.join(TOPIC, range(20))
    net.connect_random(10, random.Random(17))
    net.run(2.0)
    net.leave(TOPIC, range(5))
    net.run(2.0)
    for r in net.routers[5:]:
        assert not r.mesh_peers(TOPIC) & {pid(i + 1) for i in range(5)}
    before = [len(net.received(i)) for i in range(5)]
    _everyone_gets_everything(net, range(5, 20), 30, seed=18)
    assert [len(net.received(i)) for i in range(5)] == before


def test_gossipsub_graft_network() -> None:
    """go TestGossipsubGraft: 20 sparse nodes subscribing one after the other (so meshes form by GRAFT
    as subscriptions arrive); after a heartbeat every message reaches everyone."""
    net = SimNet(20)
    net.connect_random(3, random.Random(19))
    for i in range(20):
        net.join(TOPIC, [i])
        net.run(0.01)
    net.run(2.0)
    _everyone_gets_everything(net, range(20), 20, seed=20)
