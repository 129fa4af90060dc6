"""AutoNAT v1 and v2 wire messages: typed values decoded from untrusted protobufs, and their encoders.

Every message is ``uvarint(len) || protobuf``. Decoding never trusts a field: a wrong message type, a
missing part, an unknown status, a peer id that does not parse or too many addresses raise
:class:`AutoNATMessageError` (a :class:`~mycel.core.errors.ProtocolViolation`); addresses that do not
parse are skipped (a peer may announce transports we do not know), and at most ``MAX_ADDRS`` are read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

import trio
from multiaddr import Multiaddr

from mycel.core.errors import DecodeError, ProtocolViolation, UnexpectedEOF
from mycel.core.framing import parse_message, receive_message, send_message
from mycel.core.peer_id import PeerId
from mycel.protocols.autonat.pb import autonat_v1_pb2, autonat_v2_pb2

__all__ = [
    "DIAL_BACK_PROTOCOL",
    "DIAL_REQUEST_PROTOCOL",
    "MAX_ADDRS",
    "MAX_DATA_CHUNK",
    "V1_MAX_MESSAGE",
    "V1_PROTOCOL",
    "V2_MAX_MESSAGE",
    "AutoNATMessageError",
    "DialStatus",
    "V1Request",
    "V1Response",
    "V1Status",
    "V2DataRequest",
    "V2Request",
    "V2Response",
    "V2Status",
    "decode_v1_request",
    "decode_v1_response",
    "decode_v2_dial_back",
    "decode_v2_message",
    "encode_v1_request",
    "encode_v1_response",
    "parse_addrs",
    "read_message",
    "write_message",
]

V1_PROTOCOL: Final = "/libp2p/autonat/1.0.0"
DIAL_REQUEST_PROTOCOL: Final = "/libp2p/autonat/2/dial-request"
DIAL_BACK_PROTOCOL: Final = "/libp2p/autonat/2/dial-back"
V1_MAX_MESSAGE: Final = 4096  # go's maxMsgSize for v1
V2_MAX_MESSAGE: Final = 8192  # go's maxMsgSize for v2 (a DialDataResponse of 4096 bytes fits)
MAX_ADDRS: Final = 50  # addresses read from one request (go v2's maxPeerAddresses); the rest ignored
MAX_DATA_CHUNK: Final = 4096  # the spec's bound on one DialDataResponse's data
_MAX_TEXT: Final = 256  # statusText kept (longer is cut)

_V1 = autonat_v1_pb2.Message
_V2 = autonat_v2_pb2.Message


class AutoNATMessageError(ProtocolViolation):
    """An AutoNAT message that breaks the protocol (malformed, wrong type, hostile field)."""


class V1Status(enum.IntEnum):
    """AutoNAT v1 ``ResponseStatus``."""

    OK = 0
    E_DIAL_ERROR = 100
    E_DIAL_REFUSED = 101
    E_BAD_REQUEST = 200
    E_INTERNAL_ERROR = 300


class V2Status(enum.IntEnum):
    """AutoNAT v2 ``DialResponse.ResponseStatus``."""

    E_INTERNAL_ERROR = 0
    E_REQUEST_REJECTED = 100
    E_DIAL_REFUSED = 101
    OK = 200


class DialStatus(enum.IntEnum):
    """AutoNAT v2 ``DialStatus``: what happened to the dial of the chosen address."""

    UNUSED = 0
    E_DIAL_ERROR = 100
    E_DIAL_BACK_ERROR = 101
    OK = 200


@dataclass(frozen=True)
class V1Request:
    """A v1 DIAL: dial ``peer`` back on ``addrs``."""

    peer: PeerId
    """The peer to dial (a server accepts only the requester itself)."""
    addrs: tuple[Multiaddr, ...]
    """The addresses that parsed, at most MAX_ADDRS."""


@dataclass(frozen=True)
class V1Response:
    """A v1 DIAL_RESPONSE."""

    status: V1Status
    """OK (dialed back), E_DIAL_ERROR (dial failed), E_DIAL_REFUSED (would not dial), ..."""
    text: str = ""
    """The server's explanation (at most 256 characters kept)."""
    addr: Multiaddr | None = None
    """With OK: the address the server reached us on."""


@dataclass(frozen=True)
class V2Request:
    """A v2 DialRequest: try the first of ``addrs`` you will dial; prove it with ``nonce``."""

    addrs: tuple[Multiaddr | None, ...]
    """In the client's order; None where an entry does not parse (indexes must stay the client's)."""
    nonce: int
    """The 64-bit value the dial-back must carry."""


@dataclass(frozen=True)
class V2DataRequest:
    """A v2 DialDataRequest: send ``num_bytes`` before the server dials ``addr_idx``."""

    addr_idx: int
    """Index of the address the server will dial."""
    num_bytes: int
    """Bytes of DialDataResponse data the client must send first."""


@dataclass(frozen=True)
class V2Response:
    """A v2 DialResponse."""

    status: V2Status
    """OK, or why the request was not served."""
    addr_idx: int
    """Index of the address the server dialed (meaningful with OK)."""
    dial_status: DialStatus
    """What the dial of that address gave (meaningful with OK)."""


def parse_addrs(raw: list[bytes] | tuple[bytes, ...], limit: int = MAX_ADDRS) -> list[Multiaddr | None]:
    """The first ``limit`` of ``raw`` as multiaddrs, None for each that does not parse."""
    out: list[Multiaddr | None] = []
    for data in raw[:limit]:
        try:  # Multiaddr(bytes) parses lazily: the string round trip checks the bytes (and that they are canonical)
            addr = Multiaddr(bytes(data))
            ok = Multiaddr(str(addr)).to_bytes() == bytes(data)
            list(addr.protocols())  # (some bytes survive the round trip but not a walk of their protocols)
        except Exception:  # the multiaddr package raises many unrelated types on bad input
            ok = False
        out.append(addr if ok else None)
    return out


def _v1(body: bytes) -> autonat_v1_pb2.Message:
    try:
        return parse_message(_V1, body)
    except DecodeError as exc:
        raise AutoNATMessageError(str(exc)) from None


def encode_v1_request(peer: PeerId, addrs: list[Multiaddr]) -> bytes:
    """A v1 DIAL asking to be dialed on ``addrs``."""
    msg = _V1(type=_V1.DIAL)
    msg.dial.peer.id = peer.to_bytes()
    msg.dial.peer.addrs.extend(a.to_bytes() for a in addrs)
    return bytes(msg.SerializeToString())


def decode_v1_request(body: bytes) -> V1Request:
    """Decode a v1 DIAL (AutoNATMessageError if it is not one)."""
    msg = _v1(body)
    if not msg.HasField("type") or msg.type != _V1.DIAL:
        raise AutoNATMessageError("expected a DIAL message")
    if not msg.HasField("dial") or not msg.dial.HasField("peer") or not msg.dial.peer.HasField("id"):
        raise AutoNATMessageError("DIAL without a peer id")
    try:
        peer = PeerId.from_bytes(msg.dial.peer.id)
    except Exception:
        raise AutoNATMessageError("DIAL with a peer id that does not parse") from None
    addrs = tuple(a for a in parse_addrs(list(msg.dial.peer.addrs)) if a is not None)
    return V1Request(peer, addrs)


def encode_v1_response(status: V1Status, text: str = "", addr: Multiaddr | None = None) -> bytes:
    """A v1 DIAL_RESPONSE."""
    msg = _V1(type=_V1.DIAL_RESPONSE)
    msg.dialResponse.status = int(status)  # type: ignore[assignment]
    if text:
        msg.dialResponse.statusText = text[:_MAX_TEXT]
    if addr is not None:
        msg.dialResponse.addr = addr.to_bytes()
    return bytes(msg.SerializeToString())


def decode_v1_response(body: bytes) -> V1Response:
    """Decode a v1 DIAL_RESPONSE (AutoNATMessageError if it is not one, or its status is unknown)."""
    msg = _v1(body)
    if not msg.HasField("type") or msg.type != _V1.DIAL_RESPONSE or not msg.HasField("dialResponse"):
        raise AutoNATMessageError("expected a DIAL_RESPONSE message")
    resp = msg.dialResponse
    if not resp.HasField("status"):
        raise AutoNATMessageError("DIAL_RESPONSE without a status")
    try:
        status = V1Status(resp.status)
    except ValueError:
        raise AutoNATMessageError(f"DIAL_RESPONSE with an unknown status {resp.status}") from None
    addr = None
    if resp.HasField("addr"):
        parsed = parse_addrs([resp.addr])
        addr = parsed[0] if parsed else None
    return V1Response(status, resp.statusText[:_MAX_TEXT], addr)


def decode_v2_message(body: bytes) -> V2Request | V2DataRequest | V2Response | bytes:
    """Decode a v2 ``Message`` from the dial-request stream: a request, a data request, a response, or
    the data of a DialDataResponse (bytes). AutoNATMessageError for anything else or a hostile field."""
    try:
        msg = parse_message(_V2, body)
    except DecodeError as exc:
        raise AutoNATMessageError(str(exc)) from None
    which = msg.WhichOneof("msg")
    if which == "dialRequest":
        req = msg.dialRequest
        if len(req.addrs) > MAX_ADDRS:
            raise AutoNATMessageError(f"DialRequest with {len(req.addrs)} addresses (at most {MAX_ADDRS})")
        return V2Request(tuple(parse_addrs(list(req.addrs))), req.nonce)
    if which == "dialDataRequest":
        return V2DataRequest(msg.dialDataRequest.addrIdx, msg.dialDataRequest.numBytes)
    if which == "dialResponse":
        resp = msg.dialResponse
        try:
            status = V2Status(resp.status)
            dial_status = DialStatus(resp.dialStatus)
        except ValueError:
            raise AutoNATMessageError(f"DialResponse with an unknown status {resp.status}/{resp.dialStatus}") from None
        return V2Response(status, resp.addrIdx, dial_status)
    if which == "dialDataResponse":
        data = msg.dialDataResponse.data
        if len(data) > MAX_DATA_CHUNK:
            raise AutoNATMessageError(f"DialDataResponse of {len(data)} bytes (at most {MAX_DATA_CHUNK})")
        return bytes(data)
    raise AutoNATMessageError("empty v2 Message")


def encode_v2_request(addrs: list[Multiaddr], nonce: int) -> bytes:
    """A v2 DialRequest."""
    return bytes(_V2(dialRequest=autonat_v2_pb2.DialRequest(addrs=[a.to_bytes() for a in addrs], nonce=nonce)).SerializeToString())


def encode_v2_data_request(addr_idx: int, num_bytes: int) -> bytes:
    """A v2 DialDataRequest."""
    req = autonat_v2_pb2.DialDataRequest(addrIdx=addr_idx, numBytes=num_bytes)
    return bytes(_V2(dialDataRequest=req).SerializeToString())


def encode_v2_data(data: bytes) -> bytes:
    """A v2 DialDataResponse carrying ``data`` (at most MAX_DATA_CHUNK bytes)."""
    return bytes(_V2(dialDataResponse=autonat_v2_pb2.DialDataResponse(data=data[:MAX_DATA_CHUNK])).SerializeToString())


def encode_v2_response(status: V2Status, addr_idx: int = 0, dial_status: DialStatus = DialStatus.UNUSED) -> bytes:
    """A v2 DialResponse."""
    resp = autonat_v2_pb2.DialResponse(status=int(status), addrIdx=addr_idx, dialStatus=int(dial_status))  # type: ignore[arg-type]
    return bytes(_V2(dialResponse=resp).SerializeToString())


def encode_v2_dial_back(nonce: int) -> bytes:
    """A v2 DialBack."""
    return bytes(autonat_v2_pb2.DialBack(nonce=nonce).SerializeToString())


def decode_v2_dial_back(body: bytes) -> int:
    """The nonce of a v2 DialBack."""
    try:
        return int(parse_message(autonat_v2_pb2.DialBack, body).nonce)
    except DecodeError as exc:
        raise AutoNATMessageError(str(exc)) from None


def encode_v2_dial_back_ok() -> bytes:
    """A v2 DialBackResponse{OK}."""
    return bytes(autonat_v2_pb2.DialBackResponse(status=autonat_v2_pb2.DialBackResponse.OK).SerializeToString())


async def read_message(stream: trio.abc.ReceiveStream, max_size: int) -> bytes:
    """One framed message (MessageTooLarge past ``max_size``; UnexpectedEOF if the stream ends first)."""
    body = await receive_message(stream, max_size=max_size)
    if body is None:
        raise UnexpectedEOF("the stream ended before a message", received=0, expected=1)
    return body


async def write_message(stream: trio.abc.SendStream, body: bytes) -> None:
    """Send one framed message."""
    await send_message(stream, body)
