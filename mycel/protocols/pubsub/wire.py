"""Encoding RPCs for the wire: length-prefixed frames, messages batched without re-encoding, and RPCs
split so that no frame exceeds the peer's limit (go's ``fragmentRPC``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from mycel.core.varint import encode_uvarint
from mycel.protocols.pubsub import rpc_pb2

_PUBLISH_TAG = b"\x12"  # RPC field 2 (publish), length-delimited
MAX_MESSAGES_PER_RPC = 1000
"""Messages batched into one RPC at most: js-libp2p's gossipsub drops a whole RPC carrying more than
5000 (its ``decodeRpcLimits.maxMessages``), which a queue of small messages reaches within 1 MiB."""


def frame(payload: bytes) -> bytes:
    """``uvarint(len) ‖ payload``."""
    return encode_uvarint(len(payload)) + payload


def publish_entry(raw_message: bytes) -> bytes:
    """An encoded ``RPC.publish`` entry: RPCs holding only messages are concatenations of these."""
    return _PUBLISH_TAG + encode_uvarint(len(raw_message)) + raw_message


def _batches(raw_messages: Iterable[bytes], limit: int) -> Iterator[tuple[int, list[bytes]]]:
    """(size, pieces) of each RPC payload carrying ``raw_messages`` in order: the pieces are entry
    headers and the messages themselves, nothing copied."""
    current: list[bytes] = []
    size = 0
    for raw in raw_messages:
        header = _PUBLISH_TAG + encode_uvarint(len(raw))
        n = len(header) + len(raw)
        if current and (size + n > limit or len(current) >= 2 * MAX_MESSAGES_PER_RPC):
            yield size, current
            current, size = [], 0
        current += (header, raw)
        size += n
    if current:
        yield size, current


def batch_messages(raw_messages: Iterable[bytes], limit: int) -> list[bytes]:
    """RPC payloads carrying ``raw_messages`` in order, each at most ``limit`` bytes when possible (a
    single message bigger than ``limit`` gets an RPC of its own; the caller refuses such messages) and
    at most :data:`MAX_MESSAGES_PER_RPC` messages."""
    return [b"".join(pieces) for _, pieces in _batches(raw_messages, limit)]


def message_frames(raw_messages: Iterable[bytes], limit: int) -> list[bytes]:
    """``frame(p)`` of each of ``batch_messages(raw_messages, limit)``, as pieces to join once: every
    message is copied a single time on its way out (fresh megabyte buffers are costly: page faults)."""
    out: list[bytes] = []
    for size, pieces in _batches(raw_messages, limit):
        out.append(encode_uvarint(size))
        out += pieces
    return out


def fragment_rpc(rpc: rpc_pb2.RPC, limit: int) -> list[bytes]:
    """Encode ``rpc`` as one or more RPC payloads of at most ``limit`` bytes each.

    Subscriptions, messages and control entries are spread over as many RPCs as needed; an IHAVE or
    IWANT list longer than fits is split across RPCs. An entry that cannot fit on its own (a message
    above the limit) is dropped: the sender checks sizes before queueing.
    """
    whole = rpc.SerializeToString()
    if len(whole) <= limit:
        return [whole]
    pieces: list[bytes] = []
    for sub in rpc.subscriptions:
        pieces.append(rpc_pb2.RPC(subscriptions=[sub]).SerializeToString())
    for msg in rpc.publish:
        pieces.append(publish_entry(msg.SerializeToString()))
    ctl = rpc.control
    for ihave in ctl.ihave:
        pieces.extend(_split_ids(ihave.messageIDs, limit, lambda ids, t=ihave.topicID: _ctl(ihave=[rpc_pb2.ControlIHave(topicID=t, messageIDs=ids)])))
    for iwant in ctl.iwant:
        pieces.extend(_split_ids(iwant.messageIDs, limit, lambda ids: _ctl(iwant=[rpc_pb2.ControlIWant(messageIDs=ids)])))
    for graft in ctl.graft:
        pieces.append(_ctl(graft=[graft]))
    for prune in ctl.prune:
        pieces.append(_ctl(prune=[prune]))
    for idw in ctl.idontwant:
        pieces.extend(_split_ids(idw.messageIDs, limit, lambda ids: _ctl(idontwant=[rpc_pb2.ControlIDontWant(messageIDs=ids)])))
    # pieces are valid RPC encodings; concatenating RPC encodings merges them (protobuf semantics)
    out: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for piece in pieces:
        if len(piece) > limit:
            continue
        if current and size + len(piece) > limit:
            out.append(b"".join(current))
            current, size = [], 0
        current.append(piece)
        size += len(piece)
    if current:
        out.append(b"".join(current))
    return out


def _ctl(**fields: object) -> bytes:
    encoded: bytes = rpc_pb2.RPC(control=rpc_pb2.ControlMessage(**fields)).SerializeToString()  # type: ignore[arg-type]
    return encoded


def _split_ids(ids: Iterable[bytes], limit: int, build: object) -> list[bytes]:
    assert callable(build)
    ids = list(ids)
    if not ids:
        return []
    encoded: bytes = build(ids)
    if len(encoded) <= limit:
        return [encoded]
    half = len(ids) // 2
    if half == 0:
        return []
    return _split_ids(ids[:half], limit, build) + _split_ids(ids[half:], limit, build)


__all__ = ["MAX_MESSAGES_PER_RPC", "batch_messages", "fragment_rpc", "frame", "message_frames", "publish_entry"]
