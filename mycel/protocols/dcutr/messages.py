"""DCUtR messages: ``HolePunch{type CONNECT|SYNC, repeated bytes ObsAddrs}``, uvarint length-prefixed.

Decoding is strict where the spec is (a required, known type; at most :data:`MAX_MESSAGE_SIZE` bytes,
the spec's 4 KiB) and lenient where go is (an address that does not parse, or a relay address, is
skipped rather than failing the exchange). Every failure is a :class:`DCUtRMessageError`, a
:class:`~mycel.core.errors.ProtocolViolation`: the stream it came on is reset, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import trio
from multiaddr import Multiaddr

from mycel.core.errors import MycelError, ProtocolViolation
from mycel.core.framing import parse_message, receive_message, send_message
from mycel.protocols.dcutr.pb import holepunch_pb2

PROTOCOL: Final = "/libp2p/dcutr"
MAX_MESSAGE_SIZE: Final = 4096  # the spec: SHOULD refuse messages larger than 4 KiB
MAX_ADDRS: Final = 32  # addresses kept from one message (go caps observed addresses similarly); the rest ignored

CONNECT: Final = holepunch_pb2.HolePunch.CONNECT
SYNC: Final = holepunch_pb2.HolePunch.SYNC


class DCUtRError(MycelError):
    """A hole punch did not happen (no usable addresses, every attempt failed, the peer refused)."""


class DCUtRMessageError(DCUtRError, ProtocolViolation):
    """A DCUtR message was malformed, too large, of an unexpected type, or did not arrive in time."""


def encode(kind: int, addrs: Sequence[Multiaddr] = ()) -> bytes:
    """The body of a HolePunch message of type ``kind`` (CONNECT or SYNC) carrying ``addrs``."""
    msg = holepunch_pb2.HolePunch(type=kind)  # type: ignore[arg-type]
    msg.ObsAddrs.extend(a.to_bytes() for a in addrs)
    return bytes(msg.SerializeToString())


def decode(body: bytes, expected: int) -> list[Multiaddr]:
    """Parse a HolePunch body that must be of type ``expected``; returns its usable addresses.

    Raises :class:`DCUtRMessageError` for malformed protobuf, a missing or other type. Addresses that
    do not parse or go through a relay (``/p2p-circuit``) are skipped; at most :data:`MAX_ADDRS` kept.
    """
    if len(body) > MAX_MESSAGE_SIZE:
        raise DCUtRMessageError(f"HolePunch message of {len(body)} bytes exceeds {MAX_MESSAGE_SIZE}")
    try:
        msg = parse_message(holepunch_pb2.HolePunch, body)
    except ProtocolViolation as exc:
        raise DCUtRMessageError(str(exc)) from None
    if not msg.IsInitialized():  # proto2 `required type`
        raise DCUtRMessageError("HolePunch message without a type")
    if msg.type != expected:
        raise DCUtRMessageError(f"expected a {_name(expected)} message, got {_name(msg.type)}")
    out: list[Multiaddr] = []
    for raw in msg.ObsAddrs:
        if len(out) >= MAX_ADDRS:
            break
        try:
            addr = Multiaddr(bytes(raw))
            relayed = any(p.name == "p2p-circuit" for p in addr.protocols())  # (parsing is lazy: here)
            str(addr)
        except Exception:  # the multiaddr package raises several types for junk bytes
            continue
        if relayed:
            continue
        out.append(addr)
    return out


def _name(kind: int) -> str:
    names: dict[int, str] = {CONNECT: "CONNECT", SYNC: "SYNC"}
    return names.get(kind, f"type {kind}")


async def write(stream: trio.abc.SendStream, body: bytes) -> None:
    """Send one length-prefixed HolePunch body."""
    await send_message(stream, body)


async def read(stream: trio.abc.ReceiveStream) -> bytes:
    """Read one length-prefixed body (at most :data:`MAX_MESSAGE_SIZE`); typed errors for the rest."""
    try:
        body = await receive_message(stream, MAX_MESSAGE_SIZE)
    except ProtocolViolation as exc:  # MessageTooLarge, DecodeError, UnexpectedEOF
        raise DCUtRMessageError(str(exc)) from None
    if body is None:
        raise DCUtRMessageError("stream ended before the HolePunch message")
    return body


__all__ = [
    "CONNECT",
    "MAX_ADDRS",
    "MAX_MESSAGE_SIZE",
    "PROTOCOL",
    "SYNC",
    "DCUtRError",
    "DCUtRMessageError",
    "decode",
    "encode",
    "read",
    "write",
]
