"""Framing of outgoing message RPCs: ``message_frames`` (pieces joined once by the writer) is byte for byte
``frame()`` of each of ``batch_messages``' payloads, and every payload decodes to the messages in order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.core.varint import LengthPrefixedDecoder
from mycel.protocols.pubsub import rpc_pb2
from mycel.protocols.pubsub.wire import MAX_MESSAGES_PER_RPC, batch_messages, frame, message_frames


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=3000), max_size=40),
    limit=st.integers(min_value=1, max_value=8000),
)
def test_message_frames_are_the_batches_framed(sizes: list[int], limit: int) -> None:
    raws = [rpc_pb2.Message(data=bytes([i % 251]) * n, topic="t").SerializeToString() for i, n in enumerate(sizes)]
    joined = b"".join(message_frames(raws, limit))
    assert joined == b"".join(frame(p) for p in batch_messages(raws, limit))
    decoder = LengthPrefixedDecoder(1 << 20)
    decoder.feed(joined)
    got: list[bytes] = []
    while (payload := decoder.next_message()) is not None:
        rpc = rpc_pb2.RPC.FromString(payload)
        assert len(payload) <= limit or len(rpc.publish) == 1  # only a message over the limit stands alone
        got += [m.SerializeToString() for m in rpc.publish]
    assert got == raws and decoder.buffered == 0


def test_a_large_batch_is_split_at_the_limit() -> None:
    raws = [rpc_pb2.Message(data=bytes(100 * 1024), topic="t").SerializeToString() for _ in range(25)]
    limit = (1 << 20) + 65536
    payloads = batch_messages(raws, limit)
    assert len(payloads) == 3 and all(len(p) <= limit for p in payloads)
    assert b"".join(message_frames(raws, limit)) == b"".join(frame(p) for p in payloads)


def test_small_messages_are_batched_by_count_too() -> None:
    # 2500 tiny messages fit in one 1 MiB RPC, but js-libp2p drops an RPC of more than 5000 messages
    raws = [rpc_pb2.Message(data=b"x", topic="t").SerializeToString() for _ in range(2 * MAX_MESSAGES_PER_RPC + 500)]
    payloads = batch_messages(raws, 1 << 20)
    counts = [len(rpc_pb2.RPC.FromString(p).publish) for p in payloads]
    assert counts == [MAX_MESSAGES_PER_RPC, MAX_MESSAGES_PER_RPC, 500]
