"""Signed envelopes (RFC 0002) and signed peer records (RFC 0003).

Constants follow the implementations, not the RFC text: domain ``libp2p-peer-record`` and payload
type ``03 01`` (multicodec ``libp2p-peer-record``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from google.protobuf.message import DecodeError as _PbDecodeError
from multiaddr import Multiaddr

from mycel.core.errors import DecodeError, InvalidSignature
from mycel.core.keys import PrivateKey, PublicKey, public_key_from_protobuf
from mycel.core.pb import peer_record_pb2, signed_envelope_pb2
from mycel.core.peer_id import PeerId
from mycel.core.varint import encode_uvarint

__all__ = [
    "PEER_RECORD_DOMAIN",
    "PEER_RECORD_PAYLOAD_TYPE",
    "MAX_RECORD_ADDRS",
    "Envelope",
    "PeerRecord",
    "seal_peer_record",
    "open_peer_record",
]

PEER_RECORD_DOMAIN: Final = "libp2p-peer-record"
PEER_RECORD_PAYLOAD_TYPE: Final = b"\x03\x01"
MAX_RECORD_ADDRS: Final = 64
"""Addresses of a peer record that are parsed (the peerstore keeps no more per peer); the rest are
ignored. Each costs ~50 µs to parse and check, so a record of thousands, signed once and replayed
(gossipsub PX, identify), would otherwise buy a peer that much of our CPU per copy."""
_MAX_UINT64: Final = (1 << 64) - 1


def _signing_input(domain: str, payload_type: bytes, payload: bytes) -> bytes:
    d = domain.encode("utf-8")
    return b"".join(
        (
            encode_uvarint(len(d)),
            d,
            encode_uvarint(len(payload_type)),
            payload_type,
            encode_uvarint(len(payload)),
            payload,
        )
    )


@dataclass(frozen=True)
class Envelope:
    """A payload signed by ``public_key`` for a ``domain`` (the domain is not carried on the wire)."""

    public_key: PublicKey
    payload_type: bytes
    """What the payload is, as multicodec bytes (``03 01`` for a peer record)."""
    payload: bytes
    signature: bytes
    """The signature over the domain, the payload type and the payload, each varint-length-prefixed."""

    @classmethod
    def seal(cls, private_key: PrivateKey, domain: str, payload_type: bytes, payload: bytes) -> Envelope:
        """Sign ``payload`` with ``private_key`` for ``domain``."""
        payload_type = bytes(payload_type)
        payload = bytes(payload)
        signature = private_key.sign(_signing_input(domain, payload_type, payload))
        return cls(private_key.public_key, payload_type, payload, signature)

    def to_bytes(self) -> bytes:
        """The ``Envelope`` protobuf, deterministically serialized."""
        msg = signed_envelope_pb2.Envelope(
            public_key=self.public_key.to_protobuf(),
            payload_type=self.payload_type,
            payload=self.payload,
            signature=self.signature,
        )
        out: bytes = msg.SerializeToString(deterministic=True)
        return out

    def verify(self, domain: str) -> bool:
        """True iff the signature is valid for ``domain``."""
        return self.public_key.verify(_signing_input(domain, self.payload_type, self.payload), self.signature)

    @classmethod
    def open(cls, data: bytes, domain: str) -> Envelope:
        """Parse and verify. The payload is not interpreted; callers parse it only after this returns.

        Raises :class:`DecodeError` for malformed bytes or keys, :class:`InvalidSignature` if the
        signature does not verify for ``domain``.
        """
        msg = signed_envelope_pb2.Envelope()
        try:
            msg.ParseFromString(bytes(data))
        except _PbDecodeError as exc:
            raise DecodeError(f"malformed envelope: {exc}") from None
        if not msg.public_key:
            raise DecodeError("envelope has no public key")
        key = public_key_from_protobuf(msg.public_key)
        env = cls(key, msg.payload_type, msg.payload, msg.signature)
        if not env.verify(domain):
            raise InvalidSignature(f"envelope signature does not verify for domain {domain!r}")
        return env


@dataclass(frozen=True)
class PeerRecord:
    """A peer's addresses at sequence number ``seq`` (higher is newer)."""

    peer_id: PeerId
    """The peer whose addresses these are."""
    seq: int
    addrs: tuple[Multiaddr, ...]
    """Its addresses (any sequence given is stored as a tuple)."""

    def __post_init__(self) -> None:
        if not isinstance(self.addrs, tuple):
            object.__setattr__(self, "addrs", tuple(self.addrs))
        if not 0 <= self.seq <= _MAX_UINT64:
            raise ValueError(f"peer record seq {self.seq} is not a uint64")

    def to_bytes(self) -> bytes:
        """The ``PeerRecord`` protobuf, deterministically serialized (the payload of a signed envelope)."""
        msg = peer_record_pb2.PeerRecord(peer_id=self.peer_id.to_bytes(), seq=self.seq)
        for addr in self.addrs:
            msg.addresses.add(multiaddr=addr.to_bytes())
        out: bytes = msg.SerializeToString(deterministic=True)
        return out

    @classmethod
    def from_bytes(cls, data: bytes) -> PeerRecord:
        """Parse a ``PeerRecord`` protobuf; :class:`DecodeError` on anything malformed."""
        msg = peer_record_pb2.PeerRecord()
        try:
            msg.ParseFromString(bytes(data))
        except _PbDecodeError as exc:
            raise DecodeError(f"malformed peer record: {exc}") from None
        peer_id = PeerId.from_bytes(msg.peer_id)
        addrs = msg.addresses[:MAX_RECORD_ADDRS]
        return cls(peer_id, msg.seq, tuple(_parse_multiaddr(a.multiaddr) for a in addrs))


def _parse_multiaddr(raw: bytes) -> Multiaddr:
    if not raw:
        raise DecodeError("empty multiaddr in peer record")
    try:
        addr = Multiaddr(raw)
        # Multiaddr(bytes) is lazy and lenient (a 2-byte ip4 renders as 0.0.x.y): require that the
        # rendered text encodes back to exactly these bytes.
        canonical = Multiaddr(str(addr)).to_bytes()
    except Exception as exc:  # the multiaddr package raises many unrelated types on bad input
        raise DecodeError(f"invalid multiaddr in peer record: {exc}") from None
    if canonical != raw:
        raise DecodeError(f"invalid multiaddr in peer record: {raw.hex()} is not canonical")
    return addr


def seal_peer_record(private_key: PrivateKey, addrs: Sequence[Multiaddr], seq: int | None = None) -> Envelope:
    """Sign a peer record for ``private_key``'s peer id. ``seq`` defaults to ``time.time_ns()``;
    keeping it strictly increasing across calls is the caller's job."""
    record = PeerRecord(
        PeerId.from_public_key(private_key.public_key),
        time.time_ns() if seq is None else seq,
        tuple(addrs),
    )
    return Envelope.seal(private_key, PEER_RECORD_DOMAIN, PEER_RECORD_PAYLOAD_TYPE, record.to_bytes())


def open_peer_record(data: bytes) -> tuple[Envelope, PeerRecord]:
    """Verify a signed peer record envelope, then parse it; the record's peer id must match the
    signing key (:class:`InvalidSignature` otherwise)."""
    env = Envelope.open(data, PEER_RECORD_DOMAIN)
    if env.payload_type != PEER_RECORD_PAYLOAD_TYPE:
        raise DecodeError(f"envelope payload type {env.payload_type.hex()} is not a peer record")
    record = PeerRecord.from_bytes(env.payload)
    if not record.peer_id.matches_public_key(env.public_key):
        raise InvalidSignature(f"peer record for {record.peer_id} is signed by another key")
    return env, record
