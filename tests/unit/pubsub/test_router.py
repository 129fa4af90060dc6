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
    """go TestGossipsubPruneMeshCorrectly (with rust's heartbeat: ``peers.len() >= mesh_n_high``): a mesh
    of exactly D_hi is oversubscribed and is pruned back to D (D_hi = 8 as in go's test)."""
    h = make_router(8, outbound=True, d_hi=8)
    for p in h.peers:
        h.graft(p)
    assert len(h.mesh()) == 8
    h.heartbeat()
    assert len(h.mesh()) == 6
    assert len(h.out.prunes()) == 2


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
