"""NAT-PMP (RFC 6886) messages, sans-IO: requests as bytes, responses parsed and checked.

Requests go to the gateway's UDP port 5351. External address request: ``version 0, opcode 0``.
Mapping request: ``version 0, opcode 1 (UDP) | 2 (TCP), reserved u16, internal port u16, suggested
external port u16, lifetime u32`` (lifetime 0 with external port 0 deletes). Responses set opcode
``128 + request opcode`` and carry a result code and the gateway's epoch (seconds since its mappings
were last lost).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

from mycel.core.errors import MycelError, ProtocolViolation

PORT: Final = 5351
VERSION: Final = 0
OP_EXTERNAL_ADDRESS: Final = 0
OP_MAP_UDP: Final = 1
OP_MAP_TCP: Final = 2
RESPONSE_BIT: Final = 128
# RFC 6886 §3.1: first retry after 250 ms, doubling, 9 tries in all (64 s); callers may do fewer
INITIAL_TIMEOUT: Final = 0.25
MAX_TRIES: Final = 9


class ResultCode(enum.IntEnum):
    """NAT-PMP result codes (RFC 6886 §3.5)."""

    SUCCESS = 0
    UNSUPPORTED_VERSION = 1
    NOT_AUTHORIZED = 2
    NETWORK_FAILURE = 3
    OUT_OF_RESOURCES = 4
    UNSUPPORTED_OPCODE = 5


class PortMapError(MycelError):
    """The gateway refused or failed a request (``code`` says why), or never answered."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class PortMapMessageError(PortMapError, ProtocolViolation):
    """A response that is malformed or does not answer our request (ignored by the client)."""


@dataclass(frozen=True)
class ExternalAddress:
    """The answer to an external address request: the gateway's external ``address``."""

    epoch: int
    """The gateway's seconds since its mappings were last lost (RFC 6886 §3.6, RFC 6887 §8.5)."""
    address: ipaddress.IPv4Address


@dataclass(frozen=True)
class Mapping:
    """The answer to a mapping request: ``external_port`` now leads to ``internal_port`` for
    ``lifetime`` seconds (0: deleted)."""

    protocol: str
    """``tcp`` or ``udp``."""
    epoch: int
    """The gateway's seconds since its mappings were last lost (RFC 6886 §3.6, RFC 6887 §8.5)."""
    internal_port: int
    external_port: int
    lifetime: int


def _opcode(protocol: str) -> int:
    if protocol == "tcp":
        return OP_MAP_TCP
    if protocol == "udp":
        return OP_MAP_UDP
    raise ValueError(f"protocol must be 'tcp' or 'udp', not {protocol!r}")


def retransmit_timeouts(tries: int = MAX_TRIES) -> list[float]:
    """How long to wait for an answer after each of ``tries`` sends (RFC 6886 §3.1: 250 ms, doubling,
    9 sends in all: 0.25 … 64 s)."""
    return [INITIAL_TIMEOUT * 2**i for i in range(min(tries, MAX_TRIES))]


def external_address_request() -> bytes:
    """The 2-byte external address request."""
    return bytes((VERSION, OP_EXTERNAL_ADDRESS))


def map_request(protocol: str, internal_port: int, external_port: int, lifetime: int) -> bytes:
    """A 12-byte mapping request (``lifetime`` 0 and ``external_port`` 0 delete the mapping)."""
    if not 0 < internal_port < 65536 or not 0 <= external_port < 65536 or not 0 <= lifetime < 1 << 32:
        raise ValueError("ports must fit 16 bits (internal > 0) and the lifetime 32 bits")
    return struct.pack("!BBHHHI", VERSION, _opcode(protocol), 0, internal_port, external_port, lifetime)


def _header(data: bytes, opcode: int, size: int) -> tuple[int, int]:
    if len(data) < 4:
        raise PortMapMessageError(f"NAT-PMP response of {len(data)} bytes is too short")
    version, op, code = struct.unpack_from("!BBH", data)
    if version != VERSION:
        raise PortMapMessageError(f"NAT-PMP response of version {version}")
    if op != RESPONSE_BIT + opcode:
        raise PortMapMessageError(f"NAT-PMP response opcode {op}, expected {RESPONSE_BIT + opcode}")
    if code != ResultCode.SUCCESS:
        name = ResultCode(code).name if code in ResultCode._value2member_map_ else str(code)
        raise PortMapError(f"the gateway answered {name}", code)
    if len(data) < size:
        raise PortMapMessageError(f"NAT-PMP response of {len(data)} bytes, expected {size}")
    (epoch,) = struct.unpack_from("!I", data, 4)
    return code, epoch


def parse_external_address(data: bytes) -> ExternalAddress:
    """Parse the 12-byte answer to :func:`external_address_request`; :class:`PortMapError` carries a
    result code other than SUCCESS, :class:`PortMapMessageError` a malformed or unrelated datagram."""
    _, epoch = _header(data, OP_EXTERNAL_ADDRESS, 12)
    return ExternalAddress(epoch, ipaddress.IPv4Address(data[8:12]))


def parse_map(data: bytes, protocol: str, internal_port: int) -> Mapping:
    """Parse the 16-byte answer to :func:`map_request` for ``protocol``/``internal_port``."""
    _, epoch = _header(data, _opcode(protocol), 16)
    internal, external, lifetime = struct.unpack_from("!HHI", data, 8)
    if internal != internal_port:
        raise PortMapMessageError(f"NAT-PMP answer for internal port {internal}, we asked for {internal_port}")
    return Mapping(protocol, epoch, internal, external, lifetime)


__all__ = [
    "INITIAL_TIMEOUT",
    "MAX_TRIES",
    "PORT",
    "ExternalAddress",
    "Mapping",
    "PortMapError",
    "PortMapMessageError",
    "ResultCode",
    "external_address_request",
    "map_request",
    "parse_external_address",
    "parse_map",
    "retransmit_timeouts",
]
