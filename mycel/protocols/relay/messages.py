"""Circuit relay v2 wire messages: hop/stop codecs with their checks, and reservation vouchers.

Every message on a hop or stop stream is ``uvarint(len) || protobuf``, at most :data:`MAX_MESSAGE_SIZE`
bytes (go's 4096). Decoding never trusts a field: a missing type, an unknown enum value, a peer id that
does not parse, an address that is not a canonical multiaddr or an absurd number of addresses raise
:class:`RelayMessageError` (a :class:`~mycel.core.errors.ProtocolViolation`), which the caller answers with
``MALFORMED_MESSAGE`` where the protocol allows and closes the stream.

The reservation voucher is a signed envelope (RFC 0002) whose payload is a ``ReservationVoucher``
(payload type ``03 02``, domain ``libp2p-relay-rsvp``); :func:`open_voucher` checks that the relay that
answered is the one that signed it and that it names us.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, cast

import trio
from google.protobuf.message import DecodeError as _PbDecodeError
from multiaddr import Multiaddr

from mycel.core.abc import ConnectionLimit
from mycel.core.errors import DecodeError, InvalidSignature, MycelError, ProtocolViolation
from mycel.core.framing import receive_message, send_message
from mycel.core.keys import PrivateKey
from mycel.core.peer_id import PeerId
from mycel.core.record import Envelope
from mycel.protocols.relay.pb import circuit_pb2

__all__ = [
    "HOP_PROTOCOL",
    "STOP_PROTOCOL",
    "MAX_MESSAGE_SIZE",
    "MAX_ADDRS",
    "VOUCHER_DOMAIN",
    "VOUCHER_PAYLOAD_TYPE",
    "Status",
    "RelayError",
    "RelayMessageError",
    "RelayRefused",
    "InvalidVoucher",
    "limit_from_pb",
    "limit_to_pb",
    "Voucher",
    "decode_hop",
    "decode_stop",
    "read_hop",
    "read_stop",
    "write_message",
    "seal_voucher",
    "open_voucher",
    "parse_addrs",
    "pb_status",
    "status_of",
]

HOP_PROTOCOL: Final = "/libp2p/circuit/relay/0.2.0/hop"
STOP_PROTOCOL: Final = "/libp2p/circuit/relay/0.2.0/stop"
MAX_MESSAGE_SIZE: Final = 4096  # go's maxMessageSize for hop and stop messages
MAX_ADDRS: Final = 64  # addresses read from one Peer or Reservation; more is malformed
VOUCHER_DOMAIN: Final = "libp2p-relay-rsvp"
VOUCHER_PAYLOAD_TYPE: Final = b"\x03\x02"
_MAX_UINT32: Final = (1 << 32) - 1
_MAX_UINT64: Final = (1 << 64) - 1


class Status(enum.IntEnum):
    """The relay protocol's status codes (``Status`` in the proto)."""

    UNUSED = 0
    OK = 100
    RESERVATION_REFUSED = 200
    RESOURCE_LIMIT_EXCEEDED = 201
    PERMISSION_DENIED = 202
    CONNECTION_FAILED = 203
    NO_RESERVATION = 204
    MALFORMED_MESSAGE = 400
    UNEXPECTED_MESSAGE = 401


class RelayError(MycelError):
    """Base of the relay's errors."""


class RelayMessageError(RelayError, ProtocolViolation):
    """A hop or stop message was malformed (bad protobuf, missing or unknown field, bad peer id/address)."""


class RelayRefused(RelayError):
    """The relay (or the target) answered with a status other than OK; :attr:`status` says which."""

    def __init__(self, message: str, status: Status) -> None:
        super().__init__(message)
        self.status = status
        """The status code the other side answered with."""


class InvalidVoucher(RelayError, InvalidSignature):
    """A reservation voucher did not verify, was signed by another key than the relay's, or names
    another peer."""


def limit_to_pb(limit: ConnectionLimit, msg: circuit_pb2.Limit) -> None:
    """Fill the ``Limit`` protobuf ``msg`` from ``limit`` (whole seconds, rounded up)."""
    if limit.duration is not None:
        msg.duration = min(math.ceil(limit.duration), _MAX_UINT32)
    if limit.data is not None:
        msg.data = min(limit.data, _MAX_UINT64)


def limit_from_pb(msg: circuit_pb2.Limit) -> ConnectionLimit:
    """The limit a ``Limit`` protobuf announces (absent fields are None: no limit of that kind)."""
    return ConnectionLimit(
        float(msg.duration) if msg.HasField("duration") else None,
        msg.data if msg.HasField("data") else None,
    )


@dataclass(frozen=True)
class Voucher:
    """What a reservation voucher says: ``relay`` reserved a slot for ``peer`` until ``expiration``
    (unix seconds)."""

    relay: PeerId
    peer: PeerId
    expiration: int


def pb_status(status: Status) -> circuit_pb2.Status:
    """``status`` as the protobuf enum value (for building messages)."""
    return cast("circuit_pb2.Status", int(status))


def status_of(msg: circuit_pb2.HopMessage | circuit_pb2.StopMessage) -> Status:
    """The status a (decoded, so checked) message carries; UNUSED when it has none."""
    return Status(int(msg.status)) if msg.HasField("status") else Status.UNUSED


def parse_addrs(raw: Sequence[bytes], what: str) -> list[Multiaddr]:
    """Canonical multiaddrs from their binary forms; :class:`RelayMessageError` for any bad one or too many."""
    if len(raw) > MAX_ADDRS:
        raise RelayMessageError(f"{what}: {len(raw)} addresses (at most {MAX_ADDRS})")
    out = []
    for item in raw:
        try:
            addr = Multiaddr(bytes(item))
            canonical = Multiaddr(str(addr)).to_bytes()
        except Exception as exc:  # the multiaddr package raises many unrelated types on bad input
            raise RelayMessageError(f"{what}: invalid multiaddr ({exc})") from None
        if canonical != bytes(item):
            raise RelayMessageError(f"{what}: multiaddr {bytes(item).hex()} is not canonical")
        out.append(addr)
    return out


def parse_peer(msg: circuit_pb2.Peer, what: str) -> PeerId:
    """The peer id of a ``Peer`` message (its addresses are checked too); RelayMessageError if bad."""
    if not msg.id:
        raise RelayMessageError(f"{what}: peer without an id")
    try:
        peer = PeerId.from_bytes(msg.id)
    except (MycelError, ValueError) as exc:
        raise RelayMessageError(f"{what}: invalid peer id ({exc})") from None
    parse_addrs(msg.addrs, what)
    return peer


def _parse(kind: type[circuit_pb2.HopMessage] | type[circuit_pb2.StopMessage], body: bytes) -> object:
    msg = kind()
    try:
        msg.ParseFromString(body)
    except (_PbDecodeError, RuntimeWarning) as exc:
        raise RelayMessageError(f"malformed {kind.__name__}: {exc}") from None
    if not msg.HasField("type"):
        raise RelayMessageError(f"{kind.__name__} without a type")
    if msg.HasField("status") and msg.status not in Status._value2member_map_:
        raise RelayMessageError(f"{kind.__name__} with unknown status {msg.status}")
    return msg


def _check(msg: circuit_pb2.HopMessage | circuit_pb2.StopMessage, connect: int, status: int) -> None:
    """The checks hop and stop messages share: a known type, a CONNECT's peer, a STATUS's status."""
    kind = type(msg).__name__
    if msg.type not in type(msg).Type.values():
        raise RelayMessageError(f"{kind} with unknown type {msg.type}")
    if msg.type == connect:
        if not msg.HasField("peer"):
            raise RelayMessageError(f"{kind} CONNECT without a peer")
        parse_peer(msg.peer, f"{kind} CONNECT")
    if msg.type == status and not msg.HasField("status"):
        raise RelayMessageError(f"{kind} STATUS without a status")


def decode_hop(body: bytes) -> circuit_pb2.HopMessage:
    """Parse and check a HopMessage: a known type, and the fields that type needs well formed."""
    msg = _parse(circuit_pb2.HopMessage, body)
    assert isinstance(msg, circuit_pb2.HopMessage)
    _check(msg, circuit_pb2.HopMessage.CONNECT, circuit_pb2.HopMessage.STATUS)
    if msg.HasField("reservation"):
        parse_addrs(msg.reservation.addrs, "Reservation")
    return msg


def decode_stop(body: bytes) -> circuit_pb2.StopMessage:
    """Parse and check a StopMessage: a known type, and the fields that type needs well formed."""
    msg = _parse(circuit_pb2.StopMessage, body)
    assert isinstance(msg, circuit_pb2.StopMessage)
    _check(msg, circuit_pb2.StopMessage.CONNECT, circuit_pb2.StopMessage.STATUS)
    return msg


async def _read(stream: trio.abc.ReceiveStream, what: str) -> bytes:
    body = await receive_message(stream, MAX_MESSAGE_SIZE)  # MessageTooLarge / DecodeError / UnexpectedEOF
    if body is None:
        raise RelayMessageError(f"stream ended before the {what}")
    return body


async def read_hop(stream: trio.abc.ReceiveStream) -> circuit_pb2.HopMessage:
    """Read one HopMessage, consuming nothing after it (the stream may become a relayed connection)."""
    return decode_hop(await _read(stream, "HopMessage"))


async def read_stop(stream: trio.abc.ReceiveStream) -> circuit_pb2.StopMessage:
    """Read one StopMessage, consuming nothing after it."""
    return decode_stop(await _read(stream, "StopMessage"))


async def write_message(
    stream: trio.abc.SendStream, msg: circuit_pb2.HopMessage | circuit_pb2.StopMessage
) -> None:
    """Send one length-prefixed hop or stop message."""
    await send_message(stream, msg.SerializeToString())


def seal_voucher(key: PrivateKey, relay: PeerId, peer: PeerId, expiration: int) -> bytes:
    """The signed envelope of a voucher: ``relay`` (whose key ``key`` is) reserved a slot for ``peer``."""
    payload = circuit_pb2.ReservationVoucher(relay=relay.to_bytes(), peer=peer.to_bytes(), expiration=expiration)
    env = Envelope.seal(key, VOUCHER_DOMAIN, VOUCHER_PAYLOAD_TYPE, payload.SerializeToString(deterministic=True))
    return env.to_bytes()


def open_voucher(data: bytes, relay: PeerId, peer: PeerId) -> Voucher:
    """Verify a voucher envelope from ``relay`` for ``peer``.

    Raises :class:`InvalidVoucher` when the signature does not verify, the envelope is not a voucher,
    the signing key is not ``relay``'s, or the voucher names another relay or peer; DecodeError
    (a ProtocolViolation) when the bytes are malformed.
    """
    try:
        env = Envelope.open(bytes(data), VOUCHER_DOMAIN)
    except InvalidSignature as exc:
        raise InvalidVoucher(f"voucher from {relay}: {exc}") from None
    if env.payload_type != VOUCHER_PAYLOAD_TYPE:
        raise InvalidVoucher(f"voucher from {relay}: payload type {env.payload_type.hex()} is not 0302")
    if not relay.matches_public_key(env.public_key):
        raise InvalidVoucher(f"voucher claimed to be from {relay} is signed by another key")
    msg = circuit_pb2.ReservationVoucher()
    try:
        msg.ParseFromString(env.payload)
        voucher = Voucher(PeerId.from_bytes(msg.relay), PeerId.from_bytes(msg.peer), msg.expiration)
    except (_PbDecodeError, MycelError, ValueError) as exc:
        raise DecodeError(f"malformed voucher from {relay}: {exc}") from None
    if voucher.relay != relay:
        raise InvalidVoucher(f"voucher from {relay} names the relay {voucher.relay}")
    if voucher.peer != peer:
        raise InvalidVoucher(f"voucher from {relay} is for {voucher.peer}, not for {peer}")
    return voucher
