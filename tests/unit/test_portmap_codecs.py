"""NAT-PMP (RFC 6886) and PCP (RFC 6887) codecs: exact wire layouts, result codes, hostile datagrams."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from mycel.core.errors import ProtocolViolation
from mycel.portmap import natpmp, pcp
from mycel.portmap.natpmp import PortMapError, PortMapMessageError

NONCE = bytes(range(12))


def test_natpmp_requests_have_the_rfc_layout() -> None:
    assert natpmp.external_address_request() == b"\x00\x00"
    assert natpmp.map_request("tcp", 4001, 4001, 7200) == bytes.fromhex("0002 0000 0fa1 0fa1 00001c20")
    assert natpmp.map_request("udp", 4001, 0, 0) == bytes.fromhex("0001 0000 0fa1 0000 00000000")
    with pytest.raises(ValueError):
        natpmp.map_request("sctp", 1, 1, 1)
    with pytest.raises(ValueError):
        natpmp.map_request("tcp", 0, 1, 1)


def test_natpmp_responses_parse() -> None:
    ext = natpmp.parse_external_address(bytes.fromhex("0080 0000 00000064 c6120002"))
    assert ext.epoch == 100 and ext.address == ipaddress.IPv4Address("198.18.0.2")
    mapping = natpmp.parse_map(bytes.fromhex("0082 0000 00000064 0fa1 1388 00000e10"), "tcp", 4001)
    assert (mapping.internal_port, mapping.external_port, mapping.lifetime) == (4001, 5000, 3600)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", PortMapMessageError),
        (bytes.fromhex("0180 0000 00000064 c6120002"), PortMapMessageError),  # version 1
        (bytes.fromhex("0081 0000 00000064 c6120002"), PortMapMessageError),  # another opcode's answer
        (bytes.fromhex("0080 0000 0000"), PortMapMessageError),  # truncated
        (bytes.fromhex("0080 0003 00000064 00000000"), PortMapError),  # NETWORK_FAILURE (miniupnpd's here)
        (bytes.fromhex("0080 00ff 00000064 00000000"), PortMapError),  # an unknown code
    ],
)
def test_natpmp_bad_answers_are_typed(data: bytes, kind: type[Exception]) -> None:
    with pytest.raises(kind) as info:
        natpmp.parse_external_address(data)
    assert type(info.value) is kind
    if kind is PortMapMessageError:
        assert isinstance(info.value, ProtocolViolation)
    else:
        assert isinstance(info.value, PortMapError) and info.value.code in (3, 255)


def test_natpmp_answer_for_another_port_is_not_ours() -> None:
    with pytest.raises(PortMapMessageError):
        natpmp.parse_map(bytes.fromhex("0082 0000 00000064 0fa2 1388 00000e10"), "tcp", 4001)


def _pcp_answer(code: int = 0, nonce: bytes = NONCE, proto: int = 6, internal: int = 4001) -> bytes:
    header = struct.pack("!BBBBII", 2, 0x81, 0, code, 3600, 77) + bytes(12)
    ext = ipaddress.IPv6Address("::ffff:198.18.0.2").packed
    return header + nonce + struct.pack("!B3xHH", proto, internal, 6000) + ext


def test_pcp_map_request_layout_and_answer() -> None:
    req = pcp.map_request("10.0.1.2", NONCE, "udp", 4001, 7200)
    assert len(req) == 60
    assert req[:8] == bytes.fromhex("02 01 0000 00001c20")
    assert req[8:24] == ipaddress.IPv6Address("::ffff:10.0.1.2").packed
    assert req[24:36] == NONCE and req[36] == 17 and req[40:44] == bytes.fromhex("0fa1 0000")
    got = pcp.parse_map(_pcp_answer(proto=17), NONCE, "udp", 4001)
    assert got.external_port == 6000 and str(got.external_address) == "198.18.0.2"
    assert (got.lifetime, got.epoch) == (3600, 77)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (_pcp_answer(nonce=bytes(12)), PortMapMessageError),  # someone else's nonce
        (_pcp_answer(proto=17), PortMapMessageError),  # another protocol
        (_pcp_answer(internal=1), PortMapMessageError),  # another port
        (_pcp_answer()[:30], PortMapMessageError),  # truncated
        (_pcp_answer() + bytes(2000), PortMapMessageError),  # over 1100 bytes
        (_pcp_answer(code=2), PortMapError),  # NOT_AUTHORIZED
        (bytes.fromhex("0081 0001 00000000 00000000"), PortMapError),  # a NAT-PMP gateway: not PCP
    ],
)
def test_pcp_bad_answers_are_typed(data: bytes, kind: type[Exception]) -> None:
    with pytest.raises(kind) as info:
        pcp.parse_map(data, NONCE, "tcp", 4001)
    assert type(info.value) is kind
