"""Structure-aware fuzzing of the gossipsub router and of RPC fragmentation (hypothesis, derandomized).

The strategies build well-formed ``RPC`` protobufs with hostile values in every field — huge, empty
and duplicate topic names, ``from`` bytes that are not peer ids (or are ids whose inlined key is
garbage), seqnos of the wrong length, random signatures and keys, control messages with thousands of
ids, PRUNE backoffs up to 2^64 − 1, peer-exchange entries with garbage records — and feed them, as
bytes (optionally corrupted, as a hostile stream would), to a router with a few peers. Nothing may
escape ``handle_rpc``; every table stays within its bound; and each test counts how many inputs got
past decoding into real processing, so a strategy that only ever produces rejected input fails.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.protocols.pubsub import rpc_pb2
from mycel.protocols.pubsub.config import FLOODSUB, GOSSIPSUB_V10, GOSSIPSUB_V11, GOSSIPSUB_V12, GossipsubConfig
from mycel.protocols.pubsub.core import ValidationResult
from mycel.protocols.pubsub.messages import SIGN_PREFIX
from mycel.protocols.pubsub.score import PeerScoreParams, PeerScoreThresholds, TopicScoreParams
from mycel.protocols.pubsub.wire import fragment_rpc, publish_entry

from .mock_peer import TOPIC, Harness, MockPeer, subscribe

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TOPICS = (TOPIC, "other", "")
PROTOCOLS = (GOSSIPSUB_V12, GOSSIPSUB_V11, GOSSIPSUB_V10, FLOODSUB)
N_PEERS = len(PROTOCOLS)
CFG = GossipsubConfig(
    max_topics=64,
    max_topics_per_peer=16,
    max_subscriptions_per_rpc=200,
    max_message_size=4096,
    max_mcache_messages=256,
    max_seen=512,
    max_px_peers=4,
    score_params=PeerScoreParams(
        topics={TOPIC: TopicScoreParams(invalid_message_deliveries_weight=-1, invalid_message_deliveries_decay=0.5)},
        behaviour_penalty_weight=-1,
        behaviour_penalty_decay=0.5,
    ),
    # P4 and P7 at −1 per unit squared: a fuzzing peer is graylisted only after a dozen bad inputs, so
    # most of what it sends is really processed; accept PX from anybody, so PRUNE's PX runs too
    score_thresholds=PeerScoreThresholds(
        gossip_threshold=-100, publish_threshold=-200, graylist_threshold=-400, accept_px_threshold=0
    ),
)

# --- strategies ------------------------------------------------------------------------------------

_KNOWN = [Identity.from_seed(bytes([i]) * 32) for i in range(1, 4)]


def _text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8"), max_size=max_size)  # no lone surrogates: not UTF-8


topics = st.one_of(
    st.sampled_from(TOPICS),
    _text(12),
    st.builds(lambda c, n: c * n, st.sampled_from("t\u00e9\U0001f600"), st.integers(1000, 70_000)),
)

peer_id_bytes = st.one_of(
    st.sampled_from([i.peer_id.to_bytes() for i in _KNOWN]),
    st.binary(max_size=48),
    st.binary(max_size=42).map(lambda b: b"\x00" + bytes([len(b)]) + b),  # identity multihash, garbage key
    st.binary(min_size=32, max_size=32).map(lambda b: b"\x12\x20" + b),  # sha2-256 id nobody has
)

ids = st.one_of(
    st.lists(st.binary(max_size=40), max_size=8),
    st.integers(0, 6000).map(lambda n: [b"id-%d" % i for i in range(n)]),
    st.lists(st.sampled_from([b"dup", b""]), max_size=50),
)


@st.composite
def messages(draw: st.DrawFn) -> rpc_pb2.Message:
    # a good share is well formed (our topic, a real author, an 8-byte seqno, a real signature) so that
    # it gets through the checks; the rest has hostile values in some fields
    author = draw(st.sampled_from(_KNOWN))
    if draw(st.integers(0, 2)) == 0:
        good = rpc_pb2.Message(topic=TOPIC, data=draw(st.binary(max_size=64)), seqno=draw(st.binary(min_size=8, max_size=8)))
        good.__setattr__("from", author.peer_id.to_bytes())
        good.signature = author.private_key.sign(SIGN_PREFIX + good.SerializeToString())
        return good
    pb = rpc_pb2.Message()
    if draw(st.integers(0, 9)):
        pb.topic = TOPIC if draw(st.integers(0, 3)) else draw(topics)
    pb.data = draw(st.one_of(st.binary(max_size=64), st.integers(4000, 5000).map(lambda n: b"d" * n)))
    if draw(st.integers(0, 9)):
        pb.__setattr__("from", author.peer_id.to_bytes() if draw(st.integers(0, 2)) else draw(peer_id_bytes))
    if draw(st.integers(0, 9)):
        pb.seqno = draw(st.binary(min_size=8, max_size=8)) if draw(st.integers(0, 3)) else draw(st.binary(max_size=16))
    key_choice = draw(st.integers(0, 4))
    if key_choice == 1:
        pb.key = author.public_key.to_protobuf()
    elif key_choice == 2:
        pb.key = draw(st.binary(max_size=80))
    sig_choice = draw(st.integers(0, 3))
    if sig_choice == 1:
        pb.signature = draw(st.binary(max_size=80))
    elif sig_choice >= 2:  # a real signature over whatever the fields are: such messages pass the checks
        pb.ClearField("key")
        pb.signature = author.private_key.sign(SIGN_PREFIX + pb.SerializeToString())
        if key_choice == 1:
            pb.key = author.public_key.to_protobuf()
    return pb


peer_infos = st.builds(
    lambda pid, rec, has_rec: rpc_pb2.PeerInfo(peerID=pid, signedPeerRecord=rec)
    if has_rec
    else rpc_pb2.PeerInfo(peerID=pid),
    peer_id_bytes,
    st.binary(max_size=200),
    st.booleans(),
)


@st.composite
def prunes(draw: st.DrawFn) -> rpc_pb2.ControlPrune:
    topic = TOPIC if draw(st.booleans()) else draw(topics)  # our mesh's topic half the time: PX runs
    p = rpc_pb2.ControlPrune(topicID=topic, peers=draw(st.lists(peer_infos, max_size=30)))
    if draw(st.booleans()):
        p.backoff = draw(st.one_of(st.just(2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 120)))
    return p


controls = st.builds(
    rpc_pb2.ControlMessage,
    ihave=st.lists(st.builds(rpc_pb2.ControlIHave, topicID=topics, messageIDs=ids), max_size=3),
    iwant=st.lists(st.builds(rpc_pb2.ControlIWant, messageIDs=ids), max_size=3),
    graft=st.lists(st.builds(rpc_pb2.ControlGraft, topicID=topics), max_size=5),
    prune=st.lists(prunes(), max_size=3),
    idontwant=st.lists(st.builds(rpc_pb2.ControlIDontWant, messageIDs=ids), max_size=3),
)

subopts = st.builds(lambda s, t: rpc_pb2.RPC.SubOpts(subscribe=s, topicid=t), st.booleans(), topics)
many_subs = st.integers(0, 400).map(
    lambda n: [rpc_pb2.RPC.SubOpts(subscribe=True, topicid=f"flood-{i}") for i in range(n)]
)


@st.composite
def rpcs(draw: st.DrawFn) -> rpc_pb2.RPC:
    rpc = rpc_pb2.RPC()
    rpc.subscriptions.extend(draw(st.one_of(st.lists(subopts, max_size=6), many_subs)))
    rpc.publish.extend(draw(st.lists(messages(), max_size=4)))
    if draw(st.booleans()):
        rpc.control.CopyFrom(draw(controls))
    return rpc


@st.composite
def corruptions(draw: st.DrawFn) -> Callable[[bytes], bytes]:
    """Nothing (mostly), or a few bytes overwritten / the tail cut, as a hostile stream would send."""
    kind = draw(st.sampled_from(["none", "none", "none", "flip", "cut"]))
    if kind == "none":
        return lambda b: b
    if kind == "cut":
        frac = draw(st.floats(0, 1))
        return lambda b: b[: int(len(b) * frac)]
    flips = draw(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=4))

    def flip(b: bytes) -> bytes:
        out = bytearray(b)
        for pos, value in flips:
            if out:
                out[min(int(pos * len(out)), len(out) - 1)] = value
        return bytes(out)

    return flip


_OTHER_VERDICTS = (ValidationResult.REJECT, ValidationResult.IGNORE, ValidationResult.THROTTLED)
verdicts = st.integers(0, 9).map(lambda i: ValidationResult.ACCEPT if i < 5 else _OTHER_VERDICTS[i % 3])


# --- the router under fuzz -----------------------------------------------------------------------------


def _network(*, flood_only: bool = False) -> tuple[Harness, list[MockPeer]]:
    """The router under fuzz, in TOPIC, with one peer of each protocol version, all in TOPIC."""
    h = Harness(CFG, seed=7, flood_only=flood_only)
    h.router.join(TOPIC, h.now)
    peers = [h.add_peer(proto) for proto in PROTOCOLS]
    for p in peers:
        p.send(subscribe(TOPIC, graft=True))
    h.publish(TOPIC, b"cached for IWANT")  # something in the mcache for IWANTs to find
    return h, peers


def _check_bounds(h: Harness, prunes: int) -> None:
    """Every table within its bound, after ``prunes`` PRUNEs (with PX) were received."""
    r, cfg = h.router, h.config
    stats = r.stats()
    ours = len(r.subscriptions)
    assert stats["peers"] == N_PEERS
    assert stats["topics"] <= cfg.max_topics + ours
    assert all(len(s.topics) <= cfg.max_topics_per_peer + ours for s in r.peers.values())
    assert all(members for members in r.topics.values())  # no empty per-topic entries
    assert set(r.mesh) <= r.subscriptions
    assert all(members <= set(r.peers) for members in r.mesh.values())
    assert stats["mcache"] <= cfg.max_mcache_messages
    assert stats["seen"] <= cfg.max_seen
    assert stats["dont_send"] <= N_PEERS * cfg.max_idontwant_length * cfg.max_idontwant_messages
    assert set(r.backoff) <= r.subscriptions  # backoffs only for our meshes
    assert stats["promises"] <= N_PEERS * cfg.max_ihave_messages * (int(cfg.iwant_followup_time) + 2)
    assert len(h.out.dials) <= prunes * cfg.max_px_peers


def _fuzz_router(*, flood_only: bool, examples: int) -> Counter[str]:
    """Hostile RPCs (as bytes, some corrupted) from the peers, with time passing and random verdicts;
    checks the bounds after every RPC and tallies what happened to the input."""
    tally: Counter[str] = Counter()

    @settings(FUZZ, max_examples=examples)
    @given(
        batch=st.lists(
            st.tuples(st.integers(0, N_PEERS - 1), rpcs(), corruptions(), st.floats(0, 3), verdicts),
            min_size=1,
            max_size=5,
        )
    )
    def run(batch: list[tuple[int, rpc_pb2.RPC, Callable[[bytes], bytes], float, ValidationResult]]) -> None:
        h, peers = _network(flood_only=flood_only)
        prunes = 0
        for who, rpc, corrupt, dt, verdict in batch:
            tally["rpcs"] += 1
            try:
                wire = rpc_pb2.RPC.FromString(corrupt(rpc.SerializeToString()))
            except DecodeError:
                tally["undecodable"] += 1
                continue
            prunes += len(wire.control.prune)
            before = Counter(h.router.counters)
            sent_before = len(h.out.control) + len(h.out.sent)
            msgs = h.router.handle_rpc(peers[who].peer_id, wire, h.now)
            for msg in msgs:
                h.router.validation_complete(msg, verdict, h.now)
            after = Counter(h.router.counters)
            tally["decoded"] += 1
            if after["graylisted_rpcs"] > before["graylisted_rpcs"]:
                tally["graylisted"] += 1
                continue
            tally["messages_in"] += len(wire.publish)
            tally["messages_to_validate"] += len(msgs)
            tally["invalid_messages"] += after["invalid"] - before["invalid"]
            tally["subscriptions_refused"] += after["subscriptions_refused"] - before["subscriptions_refused"]
            if len(h.out.control) + len(h.out.sent) > sent_before:
                tally["rpcs_answered"] += 1  # IWANT, PRUNE, forwarded messages, IDONTWANT, ...
            h.advance(dt)
            _check_bounds(h, prunes)
        tally["px_dials"] += len(h.out.dials)

    run()
    return tally


def test_fuzz_handle_rpc() -> None:
    """The gossipsub router: no exception escapes, the tables stay bounded, and a good share of the input
    gets past decoding into real processing (messages validated or rejected, control answered, PX)."""
    tally = _fuzz_router(flood_only=False, examples=200)
    print("handle_rpc fuzz:", dict(sorted(tally.items())))
    # (the figures vary with what the run imports: hypothesis mixes constants from loaded modules into
    # its draws, derandomized or not; the bounds leave a wide margin)
    assert tally["undecodable"] > 0  # the corruptions do reach the decoder
    assert tally["decoded"] >= tally["rpcs"] // 2
    assert tally["messages_to_validate"] >= 50  # validly signed, on our topic: real processing
    assert tally["invalid_messages"] >= 30  # bad authors, seqnos, signatures: rejected and scored
    assert tally["rpcs_answered"] >= 30
    assert tally["subscriptions_refused"] > 0
    assert tally["px_dials"] > 0


def test_fuzz_handle_rpc_floodsub() -> None:
    """The same input to a floodsub router (no scores, no control): no exception, bounded tables."""
    tally = _fuzz_router(flood_only=True, examples=100)
    print("floodsub handle_rpc fuzz:", dict(sorted(tally.items())))
    assert tally["messages_to_validate"] >= 30
    assert tally["invalid_messages"] >= 20
    assert tally["rpcs_answered"] >= 10  # accepted messages flooded to the other peers
    assert tally["px_dials"] == 0


def test_fuzz_garbage_bytes() -> None:
    """Random bytes that happen to decode as an RPC are processed without error."""
    tally: Counter[str] = Counter()

    fields = st.tuples(st.sampled_from([0x0A, 0x12, 0x1A, 0x08, 0x22]), st.binary(max_size=60))
    blob = st.lists(fields, max_size=8).map(lambda fs: b"".join(bytes([t, len(b)]) + b for t, b in fs))

    @FUZZ
    @given(st.lists(st.one_of(st.binary(max_size=300), blob), min_size=1, max_size=10))
    def run(blobs: list[bytes]) -> None:
        h, peers = _network()
        prunes = 0
        for i, blob in enumerate(blobs):
            try:
                rpc = rpc_pb2.RPC.FromString(blob)
            except DecodeError:
                tally["undecodable"] += 1
                continue
            tally["decoded"] += 1
            tally["nonempty"] += bool(rpc.ListFields())
            prunes += len(rpc.control.prune)
            for msg in h.router.handle_rpc(peers[i % N_PEERS].peer_id, rpc, h.now):
                h.router.validation_complete(msg, ValidationResult.ACCEPT, h.now)
            h.advance(0.5)
            _check_bounds(h, prunes)

    run()
    print("garbage-bytes fuzz:", dict(tally))
    assert tally["nonempty"] > 0


# --- wire.fragment_rpc ----------------------------------------------------------------------------------


def _pieces(rpc: rpc_pb2.RPC) -> list[tuple[str, Any]]:
    """The content of ``rpc`` as a flat list of entries, in fragment order (ids one by one)."""
    out: list[tuple[str, Any]] = []
    out += [("sub", (s.subscribe, s.topicid)) for s in rpc.subscriptions]
    out += [("msg", m.SerializeToString()) for m in rpc.publish]
    ctl = rpc.control
    out += [("ihave", (i.topicID, mid)) for i in ctl.ihave for mid in i.messageIDs]
    out += [("iwant", mid) for w in ctl.iwant for mid in w.messageIDs]
    out += [("graft", g.topicID) for g in ctl.graft]
    out += [("prune", p.SerializeToString()) for p in ctl.prune]
    out += [("idontwant", mid) for w in ctl.idontwant for mid in w.messageIDs]
    return out


def _fits(kind: str, value: Any, limit: int) -> bool:
    """Whether one entry alone fits in an RPC of ``limit`` bytes."""
    ctl = rpc_pb2.ControlMessage
    if kind == "sub":
        subscribe_, topic = value
        one = rpc_pb2.RPC(subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=subscribe_, topicid=topic)])
        return len(one.SerializeToString()) <= limit
    if kind == "msg":
        return len(publish_entry(value)) <= limit
    if kind == "ihave":
        topic, mid = value
        one = rpc_pb2.RPC(control=ctl(ihave=[rpc_pb2.ControlIHave(topicID=topic, messageIDs=[mid])]))
    elif kind == "iwant":
        one = rpc_pb2.RPC(control=ctl(iwant=[rpc_pb2.ControlIWant(messageIDs=[value])]))
    elif kind == "graft":
        one = rpc_pb2.RPC(control=ctl(graft=[rpc_pb2.ControlGraft(topicID=value)]))
    elif kind == "prune":
        one = rpc_pb2.RPC(control=ctl(prune=[rpc_pb2.ControlPrune.FromString(value)]))
    else:
        one = rpc_pb2.RPC(control=ctl(idontwant=[rpc_pb2.ControlIDontWant(messageIDs=[value])]))
    return len(one.SerializeToString()) <= limit


small_topics = st.one_of(st.sampled_from(TOPICS), _text(30), st.integers(0, 3000).map(lambda n: "x" * n))
small_ids = st.one_of(
    st.lists(st.binary(max_size=60), max_size=6), st.integers(0, 800).map(lambda n: [b"%d" % i for i in range(n)])
)


@st.composite
def fragmentable(draw: st.DrawFn) -> rpc_pb2.RPC:
    rpc = rpc_pb2.RPC()
    rpc.subscriptions.extend(draw(st.lists(st.builds(lambda s, t: rpc_pb2.RPC.SubOpts(subscribe=s, topicid=t), st.booleans(), small_topics), max_size=8)))
    for size in draw(st.lists(st.integers(0, 5000), max_size=6)):
        rpc.publish.add(topic=draw(small_topics), data=b"m" * size, seqno=draw(st.binary(max_size=8)))
    rpc.control.ihave.extend(draw(st.lists(st.builds(rpc_pb2.ControlIHave, topicID=small_topics, messageIDs=small_ids), max_size=3)))
    rpc.control.iwant.extend(draw(st.lists(st.builds(rpc_pb2.ControlIWant, messageIDs=small_ids), max_size=3)))
    rpc.control.graft.extend(draw(st.lists(st.builds(rpc_pb2.ControlGraft, topicID=small_topics), max_size=4)))
    for _ in range(draw(st.integers(0, 3))):
        p = rpc.control.prune.add(topicID=draw(small_topics), backoff=draw(st.integers(0, 2**64 - 1)))
        for pid in draw(st.lists(peer_id_bytes, max_size=20)):
            p.peers.add(peerID=pid)
    rpc.control.idontwant.extend(draw(st.lists(st.builds(rpc_pb2.ControlIDontWant, messageIDs=small_ids), max_size=3)))
    if not rpc.control.ListFields():
        rpc.ClearField("control")
    return rpc


def test_fuzz_fragment_rpc() -> None:
    """Every fragment is at most ``limit`` bytes and decodes; the fragments together carry the input's
    entries in order, minus exactly those that cannot fit in an RPC of their own."""
    tally: Counter[str] = Counter()

    @FUZZ
    @given(rpc=fragmentable(), limit=st.one_of(st.integers(16, 512), st.integers(512, 70_000)))
    def run(rpc: rpc_pb2.RPC, limit: int) -> None:
        fragments = fragment_rpc(rpc, limit)
        merged = rpc_pb2.RPC()
        for f in fragments:
            assert len(f) <= limit
            merged.MergeFrom(rpc_pb2.RPC.FromString(f))
        expected = [(k, v) for k, v in _pieces(rpc) if _fits(k, v, limit)]
        assert _pieces(merged) == expected
        tally["fragments"] += len(fragments)
        tally["split"] += len(fragments) > 1
        tally["entries"] += len(expected)
        tally["dropped"] += len(_pieces(rpc)) - len(expected)

    run()
    print("fragment_rpc fuzz:", dict(tally))
    assert tally["split"] > 50 and tally["dropped"] > 0
