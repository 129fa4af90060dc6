"""Pubsub messages: what subscribers receive, how messages are signed and checked, and message ids.

Signing follows the pubsub spec: the signature covers ``"libp2p-pubsub:" ‖ Message`` encoded without
its ``signature`` and ``key`` fields; ``key`` is sent only when the author's peer id does not inline
its public key (RSA, ECDSA). Message ids are pluggable and must be the same across a network: the
default is ``from ‖ seqno`` (go's ``DefaultMsgIdFn``); :func:`content_hash_message_id` hashes the
payload; :func:`ethereum_message_id` is the consensus-specs (Altair) id.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mycel.core.errors import MycelError
from mycel.core.keys import public_key_from_protobuf
from mycel.core.peer_id import PeerId
from mycel.protocols.pubsub import rpc_pb2

if TYPE_CHECKING:
    from mycel.core.keys import PrivateKey

SIGN_PREFIX = b"libp2p-pubsub:"
SEQNO_SIZE = 8


class PubsubError(MycelError):
    """Base class of pubsub errors."""


class PublishError(PubsubError):
    """A message could not be published; ``reason`` says why: ``"no_peers"`` (nobody to send it to),
    ``"too_large"``, ``"rejected"`` (a local validator refused it) or ``"duplicate"`` (same id seen)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidMessage(PubsubError):
    """A message failed the checks of the signature policy (kind in ``reason``)."""

    def __init__(self, reason: MessageCheck, detail: str = "") -> None:
        super().__init__(f"{reason.value}{': ' + detail if detail else ''}")
        self.reason = reason


class MessageCheck(enum.Enum):
    """Why a message failed the signature-policy checks (they map onto the score's reject reasons)."""

    MISSING_SIGNATURE = "missing signature"
    INVALID_SIGNATURE = "invalid signature"
    UNEXPECTED_SIGNATURE = "unexpected signature"
    UNEXPECTED_AUTH_INFO = "unexpected from/seqno/key"
    BAD_AUTHOR = "malformed author"


@dataclass(frozen=True, slots=True, eq=False)
class PubsubMessage:
    """One message as the router and subscribers see it.

    ``source`` is the author (None under StrictNoSign), ``received_from`` the peer that forwarded it to
    us (None for our own), ``id`` its message id, ``raw`` its encoded ``Message`` protobuf (forwarded
    as is).
    """

    topic: str
    """The topic it was published on."""
    data: bytes
    """The payload."""
    source: PeerId | None
    seqno: bytes | None
    """The author's 8-byte big-endian sequence number (None under StrictNoSign)."""
    signature: bytes | None
    """The author's signature (None under StrictNoSign)."""
    key: bytes | None
    """The author's public key (protobuf) when its peer id does not inline it."""
    raw: bytes
    id: bytes = b""
    received_from: PeerId | None = None

    @property
    def seqno_int(self) -> int | None:
        """The sequence number as an integer (8-byte big endian on the wire)."""
        return int.from_bytes(self.seqno, "big") if self.seqno is not None else None

    def __repr__(self) -> str:
        src = self.source.to_base58()[-8:] if self.source else "-"
        return f"<PubsubMessage topic={self.topic!r} from={src} id={self.id.hex()[:16]} {len(self.data)} B>"


MessageIdFn = Callable[[PubsubMessage], bytes]
"""``fn(message) -> id``: computes a message's id; every node of a network must use the same one."""


def default_message_id(msg: PubsubMessage) -> bytes:
    """``from ‖ seqno`` as raw bytes (go's ``DefaultMsgIdFn``)."""
    return (msg.source.to_bytes() if msg.source else b"") + (msg.seqno or b"")


def content_hash_message_id(msg: PubsubMessage) -> bytes:
    """SHA-256 of the payload: identical payloads are one message (use with StrictNoSign)."""
    return hashlib.sha256(msg.data).digest()


MESSAGE_DOMAIN_VALID_SNAPPY = b"\x01\x00\x00\x00"
MESSAGE_DOMAIN_INVALID_SNAPPY = b"\x00\x00\x00\x00"
ETHEREUM_MAX_PAYLOAD_SIZE = 10 * 1024 * 1024


def ethereum_message_id(msg: PubsubMessage) -> bytes:
    """The Ethereum consensus (Altair+) message id: ``SHA256(domain ‖ uint64_le(len(topic)) ‖ topic ‖
    payload)[:20]`` where payload is the snappy-decompressed data and domain ``0x01000000``, or the raw
    data and domain ``0x00000000`` when the data is not valid snappy (consensus-specs p2p-interface).
    """
    topic = msg.topic.encode()
    try:
        payload = snappy_decompress(msg.data, max_size=ETHEREUM_MAX_PAYLOAD_SIZE)
        domain = MESSAGE_DOMAIN_VALID_SNAPPY
    except ValueError:
        payload, domain = msg.data, MESSAGE_DOMAIN_INVALID_SNAPPY
    return hashlib.sha256(domain + struct.pack("<Q", len(topic)) + topic + payload).digest()[:20]


def snappy_decompress(data: bytes, *, max_size: int) -> bytes:
    """Decompress a raw snappy block (no framing), refusing output above ``max_size``.

    Raises ``ValueError`` on anything that is not a well-formed block.
    """
    length, pos = _uvarint(data, 0)
    if length > max_size:
        raise ValueError(f"snappy: uncompressed length {length} exceeds {max_size}")
    out = bytearray()
    n = len(data)
    while pos < n:
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:
            size = tag >> 2
            if size >= 60:
                extra = size - 59
                if pos + extra > n:
                    raise ValueError("snappy: truncated literal length")
                size = int.from_bytes(data[pos : pos + extra], "little")
                pos += extra
            size += 1
            if pos + size > n:
                raise ValueError("snappy: truncated literal")
            out += data[pos : pos + size]
            pos += size
        else:
            if kind == 1:
                if pos >= n:
                    raise ValueError("snappy: truncated copy")
                size = ((tag >> 2) & 7) + 4
                offset = ((tag >> 5) << 8) | data[pos]
                pos += 1
            else:
                width = 2 if kind == 2 else 4
                if pos + width > n:
                    raise ValueError("snappy: truncated copy")
                size = (tag >> 2) + 1
                offset = int.from_bytes(data[pos : pos + width], "little")
                pos += width
            if offset == 0 or offset > len(out):
                raise ValueError("snappy: copy offset out of range")
            if len(out) + size > length:
                raise ValueError("snappy: output longer than announced")
            start = len(out) - offset
            if offset >= size:
                out += out[start : start + size]
            else:  # overlapping copy: repeats the last `offset` bytes
                for i in range(size):
                    out.append(out[start + i])
        if len(out) > length:
            raise ValueError("snappy: output longer than announced")
    if len(out) != length:
        raise ValueError(f"snappy: got {len(out)} bytes, announced {length}")
    return bytes(out)


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 35:
            raise ValueError("snappy: bad length preamble")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def encode_message(
    topic: str,
    data: bytes,
    *,
    key: PrivateKey | None,
    author: PeerId | None,
    seqno: int | None,
) -> PubsubMessage:
    """Build (and, with ``key``, sign) a message authored by us; ``key=None`` gives a StrictNoSign one."""
    pb = rpc_pb2.Message(data=data, topic=topic)
    seq_bytes: bytes | None = None
    signature = pub = None
    if key is not None:
        if author is None or seqno is None:
            raise ValueError("a signed message needs its author and seqno")
        seq_bytes = seqno.to_bytes(SEQNO_SIZE, "big")
        pb.__setattr__("from", author.to_bytes())
        pb.seqno = seq_bytes
        signature = key.sign(SIGN_PREFIX + pb.SerializeToString())
        pb.signature = signature
        if not author.inlines_key:
            pub = key.public_key.to_protobuf()
            pb.key = pub
    return PubsubMessage(
        topic=topic,
        data=data,
        source=author if key is not None else None,
        seqno=seq_bytes,
        signature=signature,
        key=pub,
        raw=pb.SerializeToString(),
    )


def decode_message(pb: rpc_pb2.Message) -> PubsubMessage:
    """A received ``Message`` protobuf as a :class:`PubsubMessage` (unchecked; see :func:`check_message`).

    Raises :class:`InvalidMessage` (``BAD_AUTHOR``) when ``from`` is not a peer id.
    """
    source: PeerId | None = None
    if pb.HasField("from"):
        try:
            source = PeerId.from_bytes(getattr(pb, "from"))
        except (ValueError, MycelError) as exc:
            raise InvalidMessage(MessageCheck.BAD_AUTHOR, str(exc)) from None
    return PubsubMessage(
        topic=pb.topic,
        data=pb.data,
        source=source,
        seqno=pb.seqno if pb.HasField("seqno") else None,
        signature=pb.signature if pb.HasField("signature") else None,
        key=pb.key if pb.HasField("key") else None,
        raw=pb.SerializeToString(),
    )


def check_message(msg: PubsubMessage, *, strict_sign: bool) -> None:
    """Apply the signature policy: StrictSign (``strict_sign=True``) or StrictNoSign.

    Raises :class:`InvalidMessage` with the reason the message fails.
    """
    if not strict_sign:
        if msg.signature is not None:
            raise InvalidMessage(MessageCheck.UNEXPECTED_SIGNATURE)
        if msg.source is not None or msg.seqno is not None or msg.key is not None:
            raise InvalidMessage(MessageCheck.UNEXPECTED_AUTH_INFO)
        return
    if msg.signature is None:
        raise InvalidMessage(MessageCheck.MISSING_SIGNATURE)
    if msg.source is None or msg.seqno is None:
        raise InvalidMessage(MessageCheck.MISSING_SIGNATURE, "signed message without from/seqno")
    if len(msg.seqno) != SEQNO_SIZE:
        raise InvalidMessage(MessageCheck.INVALID_SIGNATURE, f"seqno of {len(msg.seqno)} bytes")
    try:
        pub = msg.source.extract_public_key()
    except (ValueError, MycelError) as exc:  # an identity-multihash id whose inlined bytes are no key
        raise InvalidMessage(MessageCheck.BAD_AUTHOR, f"author id inlines no valid key: {exc}") from None
    if pub is None:
        if msg.key is None:
            raise InvalidMessage(MessageCheck.MISSING_SIGNATURE, "no key for an author id that does not inline it")
        try:
            pub = public_key_from_protobuf(msg.key)
        except (ValueError, MycelError) as exc:
            raise InvalidMessage(MessageCheck.INVALID_SIGNATURE, f"bad key: {exc}") from None
        if not msg.source.matches_public_key(pub):
            raise InvalidMessage(MessageCheck.INVALID_SIGNATURE, "key does not match the author")
    elif msg.key is not None:
        try:
            if public_key_from_protobuf(msg.key) != pub:
                raise InvalidMessage(MessageCheck.INVALID_SIGNATURE, "key does not match the author")
        except (ValueError, MycelError) as exc:
            raise InvalidMessage(MessageCheck.INVALID_SIGNATURE, f"bad key: {exc}") from None
    unsigned = rpc_pb2.Message.FromString(msg.raw)  # the fields as the author sent them (presence kept)
    unsigned.ClearField("signature")
    unsigned.ClearField("key")
    if not pub.verify(SIGN_PREFIX + unsigned.SerializeToString(), msg.signature):
        raise InvalidMessage(MessageCheck.INVALID_SIGNATURE)


__all__ = [
    "ETHEREUM_MAX_PAYLOAD_SIZE",
    "InvalidMessage",
    "MessageCheck",
    "MessageIdFn",
    "PublishError",
    "PubsubError",
    "PubsubMessage",
    "check_message",
    "content_hash_message_id",
    "decode_message",
    "default_message_id",
    "encode_message",
    "ethereum_message_id",
    "snappy_decompress",
]
