"""The mDNS DNS codec: round trips, compression, and hostile packets refused with a typed error."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.core.errors import DecodeError
from mycel.discovery.mdns import dns
from mycel.discovery.mdns.dns import MalformedPacket, Message, Question, Record, SRVData


def _header(qd: int = 0, an: int = 0, ns: int = 0, ar: int = 0, flags: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 0, flags, qd, an, ns, ar)


def test_round_trip_every_record_type() -> None:
    msg = Message(
        id=7,
        flags=dns.FLAG_RESPONSE | dns.FLAG_AUTHORITATIVE,
        questions=[Question("_p2p._udp.local", dns.TYPE_PTR, unicast_response=True)],
        answers=[Record("_p2p._udp.local", dns.TYPE_PTR, 120, "abc._p2p._udp.local")],
        additionals=[
            Record("abc._p2p._udp.local", dns.TYPE_TXT, 120, (b"dnsaddr=/ip4/10.0.0.1/tcp/1", b""), cache_flush=True),
            Record("abc._p2p._udp.local", dns.TYPE_SRV, 120, SRVData(0, 0, 4001, "abc.local")),
            Record("abc.local", dns.TYPE_A, 120, ipaddress.IPv4Address("10.0.0.1")),
            Record("abc.local", dns.TYPE_AAAA, 120, ipaddress.IPv6Address("fd00::1")),
            Record("abc.local", 99, 5, b"\x01\x02"),
        ],
    )
    assert dns.decode(dns.encode(msg)) == msg


def test_names_are_compressed() -> None:
    recs = [Record(f"peer{i}._p2p._udp.local", dns.TYPE_PTR, 1, "x._p2p._udp.local") for i in range(10)]
    data = dns.encode(Message(answers=recs))
    # "_p2p._udp.local" is written once; every later occurrence is a 2-byte pointer
    assert data.count(b"_p2p") == 1
    assert dns.decode(data).answers == recs


def test_empty_txt_is_one_empty_string() -> None:
    data = dns.encode(Message(answers=[Record("a.local", dns.TYPE_TXT, 1, ())]))
    assert dns.decode(data).answers[0].data == (b"",)


@pytest.mark.parametrize(
    "packet, reason",
    [
        (b"\0" * 5, "shorter than a DNS header"),
        (b"\0" * (dns.MAX_PACKET + 1), "limit 9000"),
        (_header(qd=60000), "questions"),  # counts refused before anything is read
        (_header(an=1) + b"\x05abc", "label runs past"),
        (_header(qd=1) + b"\xc0\x0c\0\x0c\0\x01", "loop"),  # a pointer to itself
        (_header(qd=1) + b"\x01a\xc0\x0e", "loop"),  # a pointer forwards into its own name
        (_header(qd=1) + b"\x40abc", "unsupported label type"),
        (_header(qd=1) + b"\x01a", "past the end"),
        (_header(qd=1) + b"\x00\x00", "truncated question"),
        (_header(an=1) + b"\x00" + struct.pack("!HHIH", 1, 1, 0, 5) + b"\0" * 5, "A record with 5"),
        (_header(an=1) + b"\x00" + struct.pack("!HHIH", 16, 1, 0, 3) + b"\x05ab", "TXT string runs past"),
        (_header(an=1) + b"\x00" + struct.pack("!HHIH", 16, 1, 0, 9), "runs past the end"),
        (_header(an=1) + b"\x00" + struct.pack("!HHIH", 12, 1, 0, 4) + b"\x01a\x00\x00", "does not fill"),
        (_header(qd=1) + b"\x02\xff\xfe\x00" + b"\0\x0c\0\x01", "not UTF-8"),
    ],
)
def test_hostile_packets_are_refused(packet: bytes, reason: str) -> None:
    with pytest.raises(MalformedPacket, match=reason) as info:
        dns.decode(packet)
    assert isinstance(info.value, DecodeError)


def test_pointer_chain_and_long_names_are_bounded() -> None:
    # a name of 63-byte labels: longer than 255 bytes once expanded
    long_name = b"".join(b"\x3f" + b"a" * 63 for _ in range(5)) + b"\0"
    with pytest.raises(MalformedPacket, match="255"):
        dns.decode(_header(qd=1) + long_name + b"\0\x0c\0\x01")
    # questions whose names each add a label to the previous one through a backward pointer: legal
    # compression, but past 32 pointers in one name the packet is refused
    body = bytearray(b"\x01a\x00\x00\x0c\x00\x01")
    starts = [12]
    for _ in range(199):
        starts.append(12 + len(body))
        body += b"\x01a" + struct.pack("!H", 0xC000 | starts[-2]) + b"\x00\x0c\x00\x01"
    with pytest.raises(MalformedPacket, match="too many compression pointers"):
        dns.decode(_header(qd=200) + bytes(body))
    assert len(dns.decode(_header(qd=30) + bytes(body[: starts[30] - 12])).questions) == 30
    # a label longer than 63 bytes or a name over 255 cannot be encoded
    with pytest.raises(ValueError):
        dns.encode(Message(questions=[Question("a" * 64 + ".local", dns.TYPE_PTR)]))
    with pytest.raises(ValueError):
        dns.encode(Message(questions=[Question(".".join(["a" * 60] * 5), dns.TYPE_PTR)]))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_escape_as_other_errors(data: bytes) -> None:
    try:
        dns.decode(data)
    except MalformedPacket:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=12, max_size=300), st.integers(0, 299), st.integers(0, 255))
def test_mutated_valid_packets_decode_or_fail_typed(_seed: bytes, where: int, value: int) -> None:
    msg = Message(
        flags=dns.FLAG_RESPONSE,
        answers=[Record("_p2p._udp.local", dns.TYPE_PTR, 120, "abc._p2p._udp.local")],
        additionals=[Record("abc._p2p._udp.local", dns.TYPE_TXT, 120, (b"dnsaddr=/ip4/10.0.0.1/tcp/1",))],
    )
    data = bytearray(dns.encode(msg))
    data[where % len(data)] = value
    try:
        dns.decode(bytes(data))
    except MalformedPacket:
        pass
