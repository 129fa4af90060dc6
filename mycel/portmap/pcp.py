"""PCP (RFC 6887) MAP messages, sans-IO: the request as bytes, the response parsed and checked.

A MAP request is a 24-byte header (version 2, opcode MAP=1, requested lifetime, our IP as an IPv6
address — IPv4-mapped for IPv4) and a 36-byte MAP body (a 12-byte nonce the answer must repeat,
protocol 6 or 17, internal port, suggested external port and address). Lifetime 0 deletes the
mapping. The nonce comes from the caller (no randomness here).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Final

from mycel.portmap.natpmp import PortMapError, PortMapMessageError

VERSION: Final = 2
OP_MAP: Final = 1
RESPONSE_BIT: Final = 0x80
HEADER_SIZE: Final = 24
MAP_SIZE: Final = 36
NONCE_SIZE: Final = 12
MAX_MESSAGE: Final = 1100  # RFC 6887 §7: PCP messages are at most 1100 bytes
IRT: Final = 3.0  # RFC 6887 §8.1.1: initial retransmission time
MRT: Final = 1024.0  # and its maximum
_PROTOCOLS: Final = {"tcp": 6, "udp": 17}


class ResultCode(enum.IntEnum):
    """PCP result codes (RFC 6887 §7.4)."""

    SUCCESS = 0
    UNSUPP_VERSION = 1
    NOT_AUTHORIZED = 2
    MALFORMED_REQUEST = 3
    UNSUPP_OPCODE = 4
    UNSUPP_OPTION = 5
    MALFORMED_OPTION = 6
    NETWORK_FAILURE = 7
    NO_RESOURCES = 8
    UNSUPP_PROTOCOL = 9
    USER_EX_QUOTA = 10
    CANNOT_PROVIDE_EXTERNAL = 11
    ADDRESS_MISMATCH = 12
    EXCESSIVE_REMOTE_PEERS = 13


@dataclass(frozen=True)
class PcpMapping:
    """The answer to a MAP request: ``external_address:external_port`` leads to our ``internal_port``
    for ``lifetime`` seconds (0: deleted); ``protocol`` is ``tcp`` or ``udp``."""

    protocol: str
    lifetime: int
    epoch: int
    """The gateway's seconds since its mappings were last lost (RFC 6886 §3.6, RFC 6887 §8.5)."""
    internal_port: int
    external_port: int
    external_address: ipaddress.IPv4Address | ipaddress.IPv6Address
    """IPv4 addresses come unwrapped from their IPv4-mapped form."""


def _as_v6(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    if isinstance(addr, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(f"::ffff:{addr}").packed
    return addr.packed


def _unwrap(raw: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = ipaddress.IPv6Address(raw)
    return addr.ipv4_mapped or addr


def retransmit_timeouts(jitter: Sequence[float]) -> list[float]:
    """How long to wait after each send (RFC 6887 §8.1.1): ``RT = (1 + RAND) * IRT`` first, then
    ``RT = (1 + RAND) * min(2 * RT, MRT)``, one RAND in [-0.1, +0.1] per send taken from ``jitter``
    (its length is the number of sends; RFC 6887 keeps sending, a caller bounds it)."""
    out: list[float] = []
    for rand in jitter:
        if not -0.1 <= rand <= 0.1:
            raise ValueError("RAND must be in [-0.1, +0.1]")
        out.append((1 + rand) * (IRT if not out else min(2 * out[-1], MRT)))
    return out


def map_request(
    client_ip: str,
    nonce: bytes,
    protocol: str,
    internal_port: int,
    lifetime: int,
    *,
    external_port: int = 0,
    external_ip: str = "0.0.0.0",
) -> bytes:
    """A 60-byte MAP request from ``client_ip`` (the address the gateway sees us on)."""
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"the nonce must be {NONCE_SIZE} bytes")
    if protocol not in _PROTOCOLS:
        raise ValueError(f"protocol must be 'tcp' or 'udp', not {protocol!r}")
    if not 0 < internal_port < 65536 or not 0 <= external_port < 65536 or not 0 <= lifetime < 1 << 32:
        raise ValueError("ports must fit 16 bits (internal > 0) and the lifetime 32 bits")
    header = struct.pack("!BBHI", VERSION, OP_MAP, 0, lifetime) + _as_v6(ipaddress.ip_address(client_ip))
    body = (
        nonce
        + struct.pack("!B3xHH", _PROTOCOLS[protocol], internal_port, external_port)
        + _as_v6(ipaddress.ip_address(external_ip))
    )
    return header + body


def parse_map(data: bytes, nonce: bytes, protocol: str, internal_port: int) -> PcpMapping:
    """Parse a MAP response to our request (same nonce, protocol and internal port).

    :class:`PortMapMessageError` for a malformed or unrelated datagram (the client ignores it and keeps
    waiting), :class:`PortMapError` with ``code`` for a result other than SUCCESS."""
    if len(data) > MAX_MESSAGE or len(data) < 4:
        raise PortMapMessageError(f"PCP response of {len(data)} bytes")
    if data[0] != VERSION:
        # a NAT-PMP-only gateway answers a PCP request with a NAT-PMP UNSUPPORTED_VERSION (RFC 6887 §9)
        raise PortMapError(f"the gateway speaks version {data[0]}, not PCP", ResultCode.UNSUPP_VERSION)
    if len(data) < HEADER_SIZE:
        raise PortMapMessageError(f"PCP response of {len(data)} bytes")
    _, op, _, code, lifetime, epoch = struct.unpack_from("!BBBBII", data)
    if op != RESPONSE_BIT | OP_MAP:
        raise PortMapMessageError(f"PCP response opcode {op:#x}, expected {RESPONSE_BIT | OP_MAP:#x}")
    if len(data) >= HEADER_SIZE + MAP_SIZE and data[HEADER_SIZE : HEADER_SIZE + NONCE_SIZE] != nonce:
        raise PortMapMessageError("PCP response for another nonce")
    if code != ResultCode.SUCCESS:
        name = ResultCode(code).name if code in ResultCode._value2member_map_ else str(code)
        raise PortMapError(f"the gateway answered {name}", code)
    if len(data) < HEADER_SIZE + MAP_SIZE:
        raise PortMapMessageError(f"PCP MAP response of {len(data)} bytes")
    proto, internal, external = struct.unpack_from("!B3xHH", data, HEADER_SIZE + NONCE_SIZE)
    if proto != _PROTOCOLS[protocol] or internal != internal_port:
        raise PortMapMessageError(f"PCP answer for protocol {proto} port {internal}, not our request")
    address = _unwrap(data[HEADER_SIZE + NONCE_SIZE + 8 : HEADER_SIZE + MAP_SIZE])
    return PcpMapping(protocol, lifetime, epoch, internal, external, address)


__all__ = ["IRT", "MRT", "NONCE_SIZE", "VERSION", "PcpMapping", "ResultCode", "map_request", "parse_map", "retransmit_timeouts"]
