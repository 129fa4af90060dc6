"""Regression tests for what the structure-aware fuzz found in decoders (each red before its fix)."""

from __future__ import annotations

import random

import pytest

from mycel.core.identity import Identity
from mycel.protocols.pubsub import rpc_pb2
from mycel.protocols.pubsub.config import GOSSIPSUB_V11, GossipsubConfig
from mycel.protocols.pubsub.core import GossipsubRouter

from fuzz.services import _Out


def test_gossipsub_subscription_to_a_topic_that_is_not_utf8_is_refused() -> None:
    """A proto2 ``string`` that is not UTF-8 comes back from the parser as bytes: such a subscription
    put a bytes topic into the router's tables (where every topic is a str, and events and scores
    take them as such). It is refused and counted like any other refused subscription."""
    router = GossipsubRouter(GossipsubConfig(), Identity.from_seed(b"\x01" * 32).peer_id, _Out(), random.Random(1), 0.0)
    peer = Identity.from_seed(b"\x02" * 32).peer_id
    router.add_peer(peer, GOSSIPSUB_V11, outbound=False, now=0.0)
    # RPC{subscriptions: [SubOpts{subscribe: true, topicid: ff fe}, SubOpts{subscribe: true, topicid: "ok"}]}
    raw = b"\x0a\x06\x08\x01\x12\x02\xff\xfe" + b"\x0a\x06\x08\x01\x12\x02ok"
    rpc = rpc_pb2.RPC.FromString(raw)
    assert isinstance(rpc.subscriptions[0].topicid, bytes)  # what the parser hands back
    before = router.counters["subscriptions_refused"]
    router.handle_rpc(peer, rpc, 0.0)
    assert set(router.topics) == {"ok"}
    assert router.peers[peer].topics == {"ok"}
    assert router.counters["subscriptions_refused"] == before + 1


# -- port mapping (UPnP IGD over HTTP) and mDNS: found by fuzz/discovery.py --------------------------


def test_a_negative_chunk_size_is_refused_instead_of_looping_forever() -> None:
    """``int(b"-6", 16)`` is -6: the chunk reader stepped back to the start of its own size line and read
    it again, forever (a gateway's HTTP answer hung the event loop: the parse runs after the timeout)."""
    from mycel.portmap.igd import parse_http_response
    from mycel.portmap.upnp import UpnpMessageError

    for size in (b"-6", b"+6", b"1_0", b" ", b"6 6"):
        with pytest.raises(UpnpMessageError):
            parse_http_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\nabcdef\r\n0\r\n\r\n")
    assert parse_http_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA;x=1\r\n0123456789\r\n0\r\n\r\n") == (
        200, b"0123456789")


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 \xb2\xb9\xb3 OK\r\n\r\n",  # latin-1 superscript digits: str.isdigit() is true, int() refuses
    b"HTTP/1.1 200 OK\r\nContent-Length: \xb9\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nContent-Length: " + b"1" * 5000 + b"\r\n\r\nx",  # int() refuses over 4300 digits
    b"HTTP/1.1 " + b"2" * 5000 + b" OK\r\n\r\n",
])
def test_http_numbers_that_int_refuses_are_typed_errors(head: bytes) -> None:
    from mycel.portmap.igd import parse_http_response
    from mycel.portmap.upnp import UpnpMessageError

    with pytest.raises(UpnpMessageError):
        parse_http_response(head)


@pytest.mark.parametrize("location", ["http://[::1/", "http://[abc]/", "http://h:99999/", "http://h:8o/"])
def test_ssdp_locations_urllib_cannot_split_are_refused(location: str) -> None:
    """urlsplit raises ValueError on a bad [IPv6] host; ``.port`` on a port out of range (which the HTTP
    client reads later)."""
    from mycel.portmap.upnp import UpnpMessageError, parse_ssdp_response

    with pytest.raises(UpnpMessageError):
        parse_ssdp_response(f"HTTP/1.1 200 OK\r\nLOCATION: {location}\r\n\r\n".encode())


@pytest.mark.parametrize(("base", "control"), [
    ("http://[x/", "/ctl"), ("", "http://[::1/ctl"), ("http://192.168.1.1\uff03/", "/ctl"), ("", "http://192.168.1.1:99999/c"),
])
def test_description_control_urls_urllib_cannot_split_are_refused(base: str, control: str) -> None:
    from mycel.portmap.upnp import UpnpMessageError, parse_description

    url_base = f"<URLBase>{base}</URLBase>" if base else ""
    doc = ('<root xmlns="urn:schemas-upnp-org:device-1-0">' + url_base + "<device><serviceList><service><serviceType>"
           f"urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><controlURL>{control}</controlURL>"
           "</service></serviceList></device></root>")
    with pytest.raises(UpnpMessageError):
        parse_description(doc.encode(), "http://192.168.1.1:5000/rootDesc.xml")


@pytest.mark.parametrize("encoding", ["foo", "utf-7", "shift_jis"])
def test_xml_in_an_encoding_expat_cannot_read_is_a_typed_error(encoding: str) -> None:
    """An unknown encoding raised LookupError, a multi-byte one ValueError, out of the XML parser."""
    from mycel.portmap.upnp import UpnpMessageError, parse_description

    with pytest.raises(UpnpMessageError):
        parse_description(f'<?xml version="1.0" encoding="{encoding}"?><root/>'.encode(), "http://192.168.1.1/")


@pytest.mark.parametrize("code", ["\u00b2", "1" * 5000])
def test_soap_fault_codes_int_refuses_are_no_code(code: str) -> None:
    from mycel.portmap.upnp import UpnpError, parse_soap_response

    body = ('<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><detail>'
            f'<UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>{code}</errorCode></UPnPError>'
            "</detail></s:Fault></s:Body></s:Envelope>")
    with pytest.raises(UpnpError) as info:
        parse_soap_response(500, body.encode(), "AddPortMapping")
    assert info.value.code is None


def test_mdns_dnsaddr_that_is_only_a_peer_id_gives_no_address() -> None:
    """``dnsaddr=/p2p/<id>`` kept an empty address for the peer, ``dnsaddr=<addr>/p2p/<id>/p2p/<id>`` one
    still ending in ``/p2p``; both are bad addresses now (a peer with no other address is not found)."""
    from mycel.discovery.mdns import dns
    from mycel.discovery.mdns.core import MdnsCore

    peer = Identity.from_seed(b"\x03" * 32).peer_id
    core = MdnsCore(Identity.from_seed(b"\x04" * 32).peer_id, random.Random(1))
    name = "abc._p2p._udp.local"

    def announce(*strings: str) -> bytes:
        return dns.encode(dns.Message(flags=dns.FLAG_RESPONSE, answers=[
            dns.Record("_p2p._udp.local", dns.TYPE_PTR, 120, name),
            dns.Record(name, dns.TYPE_TXT, 120, tuple(s.encode() for s in strings))]))

    core.receive(announce(f"dnsaddr=/p2p/{peer}", f"dnsaddr=/ip4/192.168.1.2/tcp/1/p2p/{peer}/p2p/{peer}"), ("192.168.1.2", 5353), 0.0)
    assert core.peers() == {} and core.stats.bad_addrs == 2
    core.receive(announce(f"dnsaddr=/p2p/{peer}", f"dnsaddr=/ip4/192.168.1.2/tcp/1/p2p/{peer}"), ("192.168.1.2", 5353), 1.0)
    assert [str(a) for a in core.peers()[peer]] == ["/ip4/192.168.1.2/tcp/1"]


def test_autonat_refuses_an_address_whose_protocols_do_not_walk() -> None:
    """Found by the autonat atheris run: ``/ip6zone/116e1`` as bytes survives the string round trip but
    walking its protocols raises BinaryParseError, which escaped from the v1 server's dial-candidate check."""
    from mycel.core.addrs import is_relay_addr
    from mycel.protocols.autonat.messages import parse_addrs

    raw = b"*\x06116\x01e1"
    assert parse_addrs([raw]) == [None]  # refused at decode, as any address that does not parse
    assert parse_addrs([b"\x04\x7f\x00\x00\x01\x06\x0f\xa1"]) != [None]  # /ip4/127.0.0.1/tcp/4001 still kept
    assert not is_relay_addr(parse_addrs([b"\x04\x7f\x00\x00\x01\x06\x0f\xa1"])[0])
