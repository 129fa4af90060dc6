"""RPC framing and splitting (``wire.py``): go-libp2p-pubsub's ``TestFragmentRPCFunction``,
``TestGossipsubRPCFragmentation`` and ``TestMessageBatchPublish`` (their numbers: a 1024-byte limit,
100 messages of 200 bytes, 5 topics × 100 ids of 32 bytes, 1000 messages of 20 kB), and a property
test: whatever the RPC, every piece fits the limit and, merged back, the pieces are the RPC.
"""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.core.varint import decode_uvarint
from mycel.protocols.pubsub import rpc_pb2
from mycel.protocols.pubsub.config import GossipsubConfig
from mycel.protocols.pubsub.wire import batch_messages, fragment_rpc, frame, publish_entry

from .router_helpers import TOPIC, make_router

LIMIT = 1024


def _msg(size: int) -> rpc_pb2.Message:
    """A message whose encoding is ``size`` bytes (go's mkMsg: data of size − 4)."""
    return rpc_pb2.Message(data=os.urandom(size - 4))


def _merged(pieces: list[bytes]) -> rpc_pb2.RPC:
    """The RPC a receiver gets by decoding every piece (each must decode on its own) and merging."""
    rpc = rpc_pb2.RPC()
    for piece in pieces:
        rpc.MergeFrom(rpc_pb2.RPC.FromString(piece))
    return rpc


def _assert_fits(pieces: list[bytes], limit: int = LIMIT) -> None:
    assert pieces and all(len(p) <= limit for p in pieces), [len(p) for p in pieces]


def test_fragment_rpc_small_rpc_is_not_fragmented() -> None:
    """go TestFragmentRPCFunction: an RPC under the limit comes back as one piece, encoded as is."""
    rpc = rpc_pb2.RPC(publish=[_msg(10), _msg(10)])
    assert fragment_rpc(rpc, LIMIT) == [rpc.SerializeToString()]


def test_fragment_rpc_drops_a_message_above_the_limit() -> None:
    """go TestFragmentRPCFunction ("if there's a message larger than the limit"): the oversized message
    cannot be sent; ours leaves it out (the sender checks sizes first) and keeps the rest."""
    small, big = _msg(10), _msg(LIMIT * 2)
    pieces = fragment_rpc(rpc_pb2.RPC(publish=[small, big]), LIMIT)
    _assert_fits(pieces)
    assert list(_merged(pieces).publish) == [small]


def test_fragment_rpc_splits_messages() -> None:
    """go TestFragmentRPCFunction: 100 messages of 200 bytes and a subscription, limit 1024: every piece
    fits, at most 100 / (1024 / 200) + 1 pieces, all messages (in order) and the subscription once."""
    msgs = [_msg(200) for _ in range(100)]
    rpc = rpc_pb2.RPC(subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=True, topicid=TOPIC)], publish=msgs)
    pieces = fragment_rpc(rpc, LIMIT)
    _assert_fits(pieces)
    assert len(pieces) <= 100 // (LIMIT // 200) + 1
    merged = _merged(pieces)
    assert list(merged.publish) == msgs
    assert [(s.subscribe, s.topicid) for s in merged.subscriptions] == [(True, TOPIC)]


def test_fragment_rpc_keeps_control_messages() -> None:
    """go TestFragmentRPCFunction: when messages are fragmented, the control entries come after them,
    unaltered, at the cost of at most one piece more. (go puts the control message whole in an RPC of
    its own; ours fills the last message piece first. Our service never mixes the two: control RPCs
    and message batches are framed separately.)"""
    msgs = [_msg(200) for _ in range(100)]
    ctl = rpc_pb2.ControlMessage(
        graft=[rpc_pb2.ControlGraft(topicID=TOPIC)],
        prune=[rpc_pb2.ControlPrune(topicID=TOPIC)],
        ihave=[rpc_pb2.ControlIHave(topicID=TOPIC, messageIDs=[b"foo"])],  # go's has no topic; ours always do
        iwant=[rpc_pb2.ControlIWant(messageIDs=[b"bar"])],
    )
    without = fragment_rpc(rpc_pb2.RPC(publish=msgs), LIMIT)
    pieces = fragment_rpc(rpc_pb2.RPC(publish=msgs, control=ctl), LIMIT)
    _assert_fits(pieces)
    assert len(without) <= len(pieces) <= len(without) + 1
    assert rpc_pb2.RPC.FromString(pieces[-1]).HasField("control")
    merged = _merged(pieces)
    assert merged.control == ctl
    assert list(merged.publish) == msgs


def test_fragment_rpc_splits_large_ihave_and_iwant() -> None:
    """go TestFragmentRPCFunction: 5 topics × 100 ids of 32 bytes in both IHAVE and IWANT do not fit one
    RPC; they are split into at least control size / limit pieces, every id kept, per topic."""
    ids = {f"topic{i}": [os.urandom(32) for _ in range(100)] for i in range(5)}
    ctl = rpc_pb2.ControlMessage(
        ihave=[rpc_pb2.ControlIHave(topicID=t, messageIDs=v) for t, v in ids.items()],
        iwant=[rpc_pb2.ControlIWant(messageIDs=v) for v in ids.values()],
    )
    rpc = rpc_pb2.RPC(publish=[_msg(200) for _ in range(100)], control=ctl)
    pieces = fragment_rpc(rpc, LIMIT)
    _assert_fits(pieces)
    assert len(pieces) >= 100 // (LIMIT // 200) + ctl.ByteSize() // LIMIT
    merged = _merged(pieces)
    per_topic: dict[str, list[bytes]] = {}
    for ih in merged.control.ihave:
        per_topic.setdefault(ih.topicID, []).extend(ih.messageIDs)
    assert per_topic == ids
    assert [i for w in merged.control.iwant for i in w.messageIDs] == [i for v in ids.values() for i in v]


def test_fragment_rpc_drops_a_giant_message_id() -> None:
    """go TestFragmentRPCFunction, the pathological case: an IWANT id longer than the limit is left out;
    the small id next to it is kept, unaltered, in a single RPC."""
    giant = os.urandom(LIMIT * 2)
    rpc = rpc_pb2.RPC(control=rpc_pb2.ControlMessage(iwant=[rpc_pb2.ControlIWant(messageIDs=[b"hello", giant])]))
    pieces = fragment_rpc(rpc, LIMIT)
    assert len(pieces) == 1
    (iwant,) = rpc_pb2.RPC.FromString(pieces[0]).control.iwant
    assert list(iwant.messageIDs) == [b"hello"]


def test_fragment_rpc_splits_idontwant_and_keeps_prune_px() -> None:
    """IDONTWANT lists are split like IWANT; a PRUNE with its PX records travels whole."""
    px = [rpc_pb2.PeerInfo(peerID=os.urandom(38)) for _ in range(8)]
    prune = rpc_pb2.ControlPrune(topicID=TOPIC, backoff=60, peers=px)
    idw = [os.urandom(32) for _ in range(100)]
    rpc = rpc_pb2.RPC(control=rpc_pb2.ControlMessage(prune=[prune], idontwant=[rpc_pb2.ControlIDontWant(messageIDs=idw)]))
    pieces = fragment_rpc(rpc, LIMIT)
    _assert_fits(pieces)
    merged = _merged(pieces)
    assert list(merged.control.prune) == [prune]
    assert [i for w in merged.control.idontwant for i in w.messageIDs] == idw


_ids = st.lists(st.binary(min_size=1, max_size=80), min_size=1, max_size=40)
_rpcs = st.builds(
    lambda subs, msgs, ihave, iwant, graft, prune, idw: rpc_pb2.RPC(
        subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=s, topicid=t) for s, t in subs],
        publish=[rpc_pb2.Message(topic=t, data=d) for t, d in msgs],
        control=rpc_pb2.ControlMessage(
            ihave=[rpc_pb2.ControlIHave(topicID=t, messageIDs=i) for t, i in ihave],
            iwant=[rpc_pb2.ControlIWant(messageIDs=i) for i in iwant],
            graft=[rpc_pb2.ControlGraft(topicID=t) for t in graft],
            prune=[rpc_pb2.ControlPrune(topicID=t, backoff=b) for t, b in prune],
            idontwant=[rpc_pb2.ControlIDontWant(messageIDs=i) for i in idw],
        ),
    ),
    st.lists(st.tuples(st.booleans(), st.text(max_size=30)), max_size=10),
    st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=700)), max_size=10),
    st.lists(st.tuples(st.text(max_size=20), _ids), max_size=4),
    st.lists(_ids, max_size=3),
    st.lists(st.text(max_size=20), max_size=5),
    st.lists(st.tuples(st.text(max_size=20), st.integers(0, 2**40)), max_size=5),
    st.lists(_ids, max_size=3),
)


def _contents(rpc: rpc_pb2.RPC) -> tuple[Counter[bytes], ...]:
    """Everything an RPC carries, as multisets (splitting may regroup ids but must not lose any)."""
    ctl = rpc.control
    return (
        Counter(s.SerializeToString() for s in rpc.subscriptions),
        Counter(m.SerializeToString() for m in rpc.publish),
        Counter(ih.topicID.encode() + b"\0" + i for ih in ctl.ihave for i in ih.messageIDs),
        Counter(i for w in ctl.iwant for i in w.messageIDs),
        Counter(g.SerializeToString() for g in ctl.graft),
        Counter(p.SerializeToString() for p in ctl.prune),
        Counter(i for w in ctl.idontwant for i in w.messageIDs),
    )


@settings(max_examples=150, deadline=None)
@given(rpc=_rpcs, limit=st.integers(min_value=800, max_value=4000))
def test_fragment_rpc_preserves_everything(rpc: rpc_pb2.RPC, limit: int) -> None:
    """Property: every piece is at most ``limit`` bytes and decodes alone; merged, the pieces carry
    exactly what the RPC did (every entry here fits the limit on its own)."""
    pieces = fragment_rpc(rpc, limit)
    assert all(len(p) <= limit for p in pieces)
    assert _contents(_merged(pieces)) == _contents(rpc)
    if len(rpc.SerializeToString()) <= limit:
        assert pieces == [rpc.SerializeToString()]


def test_batch_messages() -> None:
    """go TestMessageBatchPublish, wire side: raw messages batched into RPC payloads of at most the
    limit, in order, each payload a valid RPC of publish entries; a message bigger than the limit gets
    a payload of its own."""
    raws = [_msg(300).SerializeToString() for _ in range(10)]
    big = _msg(2000).SerializeToString()
    order = [*raws[:5], big, *raws[5:]]
    payloads = batch_messages(order, LIMIT)
    assert [len(p) for p in payloads if len(p) > LIMIT] == [len(publish_entry(big))]
    assert [m.SerializeToString() for p in payloads for m in rpc_pb2.RPC.FromString(p).publish] == order
    assert b"".join(payloads) == b"".join(publish_entry(r) for r in order)
    assert batch_messages([], LIMIT) == []


def test_frame() -> None:
    """A frame is ``uvarint(len) ‖ payload``."""
    payload = os.urandom(300)
    framed = frame(payload)
    assert decode_uvarint(framed) == (300, len(framed) - 300)
    assert framed.endswith(payload)


def test_gossipsub_rpc_fragmentation() -> None:
    """go TestGossipsubRPCFragmentation: a peer that wants everything through IWANT after we published
    1000 messages of 20 kB gets them all, in RPC payloads that each fit the RPC size limit, and at
    least (1000 × 20 kB) / limit of them."""
    h = make_router(1, flood_publish=False, allow_publish_to_zero_peers=True)
    (peer,) = h.peers
    h.prune(peer, backoff=600)  # out of our mesh: it only hears of our messages by gossip
    for k in range(1000):
        h.publish(k.to_bytes(4, "big") * 5000)
    h.heartbeat()
    (ihave,) = [ih for p, ih in h.out.ihaves() if p == peer]
    assert len(ihave.messageIDs) == 1000
    h.out.clear()
    h.rpc(peer, iwant=list(ihave.messageIDs))
    raws = [m.raw for _, m in h.out.sent()]
    assert len(raws) == 1000
    limit = GossipsubConfig().rpc_size_limit
    payloads = batch_messages(raws, limit)
    assert all(len(p) <= limit for p in payloads)
    assert len(payloads) >= 1000 * 20000 // limit
    got = [m.data for p in payloads for m in rpc_pb2.RPC.FromString(p).publish]
    assert sorted(got) == sorted(k.to_bytes(4, "big") * 5000 for k in range(1000))
