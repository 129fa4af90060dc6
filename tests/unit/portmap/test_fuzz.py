"""Any bytes a gateway sends give a parsed answer or a typed PortMapError — never another exception —
for every parser of mycel.portmap (hypothesis)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.portmap import PortMapError, natpmp, pcp, upnp
from mycel.portmap.igd import parse_http_response

NONCE = bytes(range(12))
PARSERS: dict[str, Callable[[bytes], object]] = {
    "natpmp_external": natpmp.parse_external_address,
    "natpmp_map": lambda d: natpmp.parse_map(d, "tcp", 4001),
    "pcp_map": lambda d: pcp.parse_map(d, NONCE, "udp", 4001),
    "ssdp": upnp.parse_ssdp_response,
    "http": parse_http_response,
    "description": lambda d: upnp.parse_description(d, "http://10.0.1.1:5000/rootDesc.xml"),
    "soap": lambda d: upnp.parse_soap_response(200, d, "GetExternalIPAddress"),
}
# inputs near the valid ones: prefixes that parsers branch on
SEEDS = st.sampled_from(
    [b"", b"\x00\x80\x00\x00", b"\x02\x81", b"HTTP/1.1 200 OK\r\n", b"<?xml version='1.0'?><root>", b"<!DOCTYPE"]
)


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=300, deadline=None)
@given(prefix=SEEDS, data=st.binary(max_size=300))
def test_any_bytes_give_an_answer_or_a_typed_error(name: str, prefix: bytes, data: bytes) -> None:
    try:
        PARSERS[name](prefix + data)
    except PortMapError:
        pass
