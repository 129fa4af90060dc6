"""Harnesses for the decoders of local discovery and NAT traversal: the mDNS DNS codec and what the
mDNS core does with a decoded packet (``mdns``); NAT-PMP, PCP, SSDP, HTTP, the IGD device description
and SOAP answers of port mapping (``portmap``); DCUtR's HolePunch messages and the exchange they drive
(``dcutr``). Everything the generators reuse (names, addresses, peer ids, XML pieces) is built once."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import random
import struct
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from multiaddr import Multiaddr

from mycel.core.addrs import split_peer_id, tcp_host_port
from mycel.core.errors import DecodeError
from mycel.core.identity import Identity
from mycel.core.varint import encode_uvarint
from mycel.discovery.mdns import dns
from mycel.discovery.mdns.core import META_QUERY, SERVICE_NAME, MdnsConfig, MdnsCore, MdnsPeerDiscovered
from mycel.portmap import natpmp, pcp, upnp
from mycel.portmap.igd import parse_http_response
from mycel.portmap.natpmp import PortMapError, PortMapMessageError
from mycel.protocols.dcutr import messages as dcutr_messages
from mycel.protocols.dcutr.core import Initiator, Responder
from mycel.protocols.dcutr.messages import CONNECT, MAX_ADDRS, MAX_MESSAGE_SIZE, SYNC, DCUtRError
from mycel.protocols.dcutr.service import _usable
from mycel.transports.quic.transport import quic_host_port

from fuzz.core import FakeReceiveStream, Harness, Source, blob, chance, chunks, drive, hostile_int, mutate, pick
from fuzz.records import _field, gen_multiaddr_bytes



def rarely(src: Source, percent: int) -> bool:
    """True about ``percent`` % of the time, and False when an atheris input has run out of bytes (its
    choices are then all 0): a guard for the hostile branch, so a short input is a well-formed one."""
    return not chance(src, 100 - percent)


# -- mDNS ---------------------------------------------------------------------------------------------

_MDNS_CONFIG = MdnsConfig(max_peers=8, max_addrs=4)  # small bounds, so that one packet can reach them
_OUR_SEED = 7  # the core's rng seed: its peer name is fixed, so generators can name it


@dataclass(frozen=True)
class _Instance:
    name: str
    """``<peer-name>.<service>``."""
    dnsaddrs: tuple[bytes, ...]
    """Valid ``dnsaddr=<multiaddr>/p2p/<id>`` TXT strings of this peer."""
    foreign: bytes
    """A valid dnsaddr string naming another peer."""


@functools.cache
def _mdns_world() -> tuple[Identity, tuple[_Instance, ...], tuple[str, ...], tuple[Multiaddr, ...], str]:
    """Our identity, 24 announcing peers (the last one is us, under our own name), the name pool, our
    addresses and our instance name."""
    us = Identity.from_seed(b"\x51" * 32)
    ours = [Multiaddr("/ip4/192.168.1.7/tcp/4001"), Multiaddr("/ip6/fd00::7/udp/4001/quic-v1")]
    our_name = MdnsCore(us.peer_id, random.Random(_OUR_SEED), _MDNS_CONFIG).instance_name
    bases = ["/ip4/192.168.1.{i}/tcp/4001", "/ip6/fd00::{i}/udp/4001/quic-v1", "/dns4/h{i}.local/tcp/1",
             "/ip4/10.0.0.{i}/udp/4001/quic-v1/webtransport", "/ip4/127.0.0.1/tcp/{i}",
             "/ip4/198.18.0.{i}/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"]
    ids = [Identity.from_seed(bytes([0x80 + i]) * 32) for i in range(23)] + [us]
    instances = []
    for i, ident in enumerate(ids):
        name = our_name if ident is us else f"peer{i:02d}{'x' * (i % 5) * 10}.{SERVICE_NAME}"
        strings = tuple(f"dnsaddr={b.format(i=i + 1)}/p2p/{ident.peer_id}".encode() for b in bases)
        other = ids[(i + 1) % len(ids)]
        instances.append(_Instance(name, strings, f"dnsaddr=/ip4/192.168.9.9/tcp/1/p2p/{other.peer_id}".encode()))
    host = our_name.split(".")[0] + ".local"
    names = (SERVICE_NAME, SERVICE_NAME.upper(), META_QUERY, our_name, host, "local", "", "x.local",
             "_p2p._tcp.local", *[inst.name for inst in instances[:6]])
    return us, tuple(instances), names, tuple(ours), our_name


class _DnsWriter:
    """A DNS message written field by field, with hostile names and lengths on request (the codec's own
    encoder only writes valid messages)."""

    def __init__(self, hostile: bool) -> None:
        self.hostile = hostile
        """Some fields of this message are damaged (names, lengths); the others are well-formed."""
        self.buf = bytearray(12)
        self.name_offsets: list[int] = []  # where names were written: compression pointer targets
        self.counts = [0, 0, 0, 0]

    def pointer(self, target: int) -> None:
        self.buf += struct.pack("!H", 0xC000 | (target & 0x3FFF))

    def name(self, src: Source, name: str) -> None:
        if self.hostile and rarely(src, 25):
            kind = src.int(8, 11)
        else:
            kind = src.int(0, 99)
            kind = 99 if 8 <= kind <= 11 else kind
        start = len(self.buf)
        if kind < 8 and self.name_offsets:  # a pointer to an earlier name, or a label then a pointer
            if chance(src, 50):
                self.buf += b"\x03abc"
            self.pointer(pick(src, self.name_offsets))
        elif kind == 8:  # a pointer loop (to itself), forward, or past the end
            self.pointer(pick(src, (start, start + 2, start + src.int(3, 40), 0x3FFF)))
        elif kind == 9:  # a label type other than 0 / pointer
            self.buf += bytes((src.int(0x40, 0xBF),)) + blob(src, 8)
        elif kind == 10:  # over 255 bytes in labels of at most 63
            self.buf += (b"\x3f" + b"a" * 63) * src.int(4, 5) + b"\x00"
        elif kind == 11:  # not UTF-8, a dot in a label, a label running past its name
            self.buf += pick(src, (b"\x02\xff\xfe\x00", b"\x03a.b\x00", b"\x3fabc\x00", b"\x01"))
        else:
            for label in name.split(".") if name else []:
                raw = label.encode()
                self.buf += bytes((len(raw),)) + raw
            self.buf += b"\x00"
        self.name_offsets.append(start)

    def question(self, src: Source, name: str, qtype: int, unicast: bool = False) -> None:
        self.name(src, name)
        self.buf += struct.pack("!HH", qtype, dns.CLASS_IN | (0x8000 if unicast else 0))
        self.counts[0] += 1

    def record(self, src: Source, section: int, name: str, rtype: int, ttl: int,
               rdata: Callable[[], None]) -> None:
        self.name(src, name)
        cls = dns.CLASS_IN | 0x8000 if chance(src, 90) else src.int(0, 0xFFFF)
        self.buf += struct.pack("!HHI", rtype, cls, ttl)
        at = len(self.buf)
        self.buf += b"\0\0"
        rdata()
        length = len(self.buf) - at - 2
        if self.hostile and rarely(src, 15):  # a record length that lies
            length = pick(src, (0, max(0, length - 1), length + 1, length + src.int(2, 300), 0xFFFF))
        struct.pack_into("!H", self.buf, at, length)
        self.counts[section] += 1

    def finish(self, src: Source, flags: int) -> bytes:
        counts = list(self.counts)
        if rarely(src, 8):  # counts that lie: more (or fewer) records than there are, past the bound
            i = src.int(0, 3)
            counts[i] = pick(src, (counts[i] + 1, max(0, counts[i] - 1), counts[i] + src.int(2, 20), 0xFFFF, 257))
        struct.pack_into("!HHHHHH", self.buf, 0, 0 if chance(src, 95) else src.int(0, 0xFFFF), flags, *counts)
        return bytes(self.buf)


def _ttl(src: Source) -> int:
    return pick(src, (120, 120, 120, 4500, 0, 1, 4501, 1 << 31, (1 << 32) - 1, src.int(0, 10_000)))


def _txt_strings(src: Source, inst: _Instance, others: tuple[_Instance, ...]) -> list[bytes]:
    n = src.int(1, 4) if chance(src, 90) else src.int(0, 40)
    out = []
    for _ in range(n):
        kind = src.int(0, 19)
        if kind < 11:
            out.append(pick(src, inst.dnsaddrs))
        elif kind == 11:
            out.append(inst.foreign)  # another peer's address among this one's
        elif kind == 12:
            out.append(pick(src, pick(src, others).dnsaddrs))
        elif kind == 13:
            out.append(b"dnsaddr=" + blob(src, 60))  # not a multiaddr, not UTF-8
        elif kind == 14:
            out.append(pick(src, (b"", b"dnsaddr=", b"dnsaddr=/ip4/1.2.3.4/tcp/1", b"foo=bar", b"DNSADDR=/ip4/1.2.3.4")))
        elif kind == 15:  # /p2p twice, or alone
            good = pick(src, inst.dnsaddrs)
            tail = good[good.rindex(b"/p2p/"):]
            out.append(good + tail if chance(src, 50) else b"dnsaddr=" + tail)
        elif kind == 16:  # every length up to 255
            good = pick(src, inst.dnsaddrs)
            out.append((good + b"/" * 255)[: src.int(0, 255)])
        else:
            out.append(b"dnsaddr=/dns4/" + b"a" * src.int(200, 240) + b".local/tcp/1" + pick(src, inst.dnsaddrs)[-60:])
    return [s[:255] for s in out]


def _rdata_txt(w: _DnsWriter, src: Source, strings: list[bytes]) -> Callable[[], None]:
    def write() -> None:
        for s in strings:
            n = len(s) if not w.hostile or chance(src, 90) else src.int(0, 255)  # a string length that lies
            w.buf += bytes((n,)) + s
    return write


def _rdata_srv(w: _DnsWriter, src: Source, port: int) -> Callable[[], None]:
    def write() -> None:
        w.buf += struct.pack("!HHH", 0, 0, port)
        w.name(src, "h.local")
    return write


def _rdata_raw(w: _DnsWriter, raw: bytes) -> Callable[[], None]:
    def write() -> None:
        w.buf += raw
    return write


def gen_mdns_packet(src: Source) -> bytes:
    """A DNS message: mostly an mDNS response announcing some peers (PTR, TXT with ``dnsaddr`` strings,
    SRV, A/AAAA), or a query for our names; hostile names, pointers, counts, lengths and TXT strings."""
    _, instances, names, _, _ = _mdns_world()
    w = _DnsWriter(rarely(src, 25))
    kind = src.int(0, 19)
    if kind < 12:  # a response
        n = src.int(1, 2) if chance(src, 85) else src.int(3, 30)
        for _ in range(n):
            inst = pick(src, instances)
            ttl = _ttl(src)
            if chance(src, 90):
                target = inst.name if chance(src, 95) else pick(src, names)
                owner = SERVICE_NAME if chance(src, 95) else pick(src, names)
                w.record(src, 1, owner, dns.TYPE_PTR, ttl, lambda: w.name(src, target))
            if chance(src, 85):
                strings = _txt_strings(src, inst, instances)
                w.record(src, 3, inst.name, dns.TYPE_TXT, ttl if chance(src, 90) else _ttl(src),
                         _rdata_txt(w, src, strings))
            if chance(src, 40):
                w.record(src, 3, inst.name, dns.TYPE_SRV, ttl, _rdata_srv(w, src, src.int(0, 0xFFFF)))
            if chance(src, 40):
                size = 4 if chance(src, 90) else src.int(0, 20)
                w.record(src, 3, "h.local", dns.TYPE_A, ttl, _rdata_raw(w, bytes(range(size))))
            if chance(src, 30):
                size = 16 if chance(src, 90) else src.int(0, 20)
                w.record(src, 3, "h.local", dns.TYPE_AAAA, ttl, _rdata_raw(w, bytes(range(size))))
            if rarely(src, 10):
                w.record(src, 2, pick(src, names), src.int(0, 0xFFFF), ttl, _rdata_raw(w, blob(src, 40)))
        flags = dns.FLAG_RESPONSE | dns.FLAG_AUTHORITATIVE if chance(src, 95) else src.int(0x8000, 0xFFFF)
        data = w.finish(src, flags)
    elif kind < 18:  # a query, sometimes with known answers
        for _ in range(src.int(1, 3) if chance(src, 90) else src.int(4, 60)):
            qtype = pick(src, (dns.TYPE_PTR, dns.TYPE_PTR, dns.TYPE_ANY, dns.TYPE_SRV, dns.TYPE_TXT, dns.TYPE_A,
                               dns.TYPE_AAAA, src.int(0, 0xFFFF)))
            w.question(src, pick(src, names), qtype, chance(src, 20))
        if chance(src, 20):
            our = instances[-1].name
            w.record(src, 1, SERVICE_NAME, dns.TYPE_PTR, _ttl(src), lambda: w.name(src, our))
        data = w.finish(src, 0 if chance(src, 95) else src.int(0, 0x7FFF))
    elif kind == 18:  # a chain of compression pointers, each question's name pointing at the one before
        w.question(src, pick(src, names), dns.TYPE_PTR)
        for _ in range(src.int(1, 60)):
            w.pointer(w.name_offsets[-1])
            w.name_offsets.append(len(w.buf) - 2)
            w.buf += struct.pack("!HH", dns.TYPE_PTR, dns.CLASS_IN)
            w.counts[0] += 1
        data = w.finish(src, 0)
    else:  # a valid header, then anything
        w.counts = [src.int(0, 3), src.int(0, 3), 0, src.int(0, 3)]
        w.buf += blob(src, 200) if chance(src, 95) else bytes(src.int(8990, 9010))
        data = w.finish(src, pick(src, (0, dns.FLAG_RESPONSE)))
    return mutate(src, data) if rarely(src, 15) else data


def _check_mdns_output(core: MdnsCore, cfg: MdnsConfig) -> bool:
    """The core's invariants after a packet; True if it produced anything."""
    peers = core.peers()
    assert len(peers) <= cfg.max_peers, f"{len(peers)} peers kept (limit {cfg.max_peers})"
    assert core.peer_id not in peers, "our own peer id was kept as a found peer"
    for peer, addrs in peers.items():
        assert 1 <= len(addrs) <= cfg.max_addrs, f"{len(addrs)} addresses kept for {peer}"
        for a in addrs:
            assert a.to_bytes() and split_peer_id(a)[1] is None, f"a kept address is empty or ends in /p2p: {a}"
    events = core.events()
    for ev in events:
        if isinstance(ev, MdnsPeerDiscovered):
            assert ev.peer != core.peer_id
            assert 0 < ev.ttl <= cfg.max_ttl, f"TTL {ev.ttl}"
            assert 1 <= len(ev.addrs) <= cfg.max_addrs
    out = core.datagrams_to_send()
    for d in out:
        assert len(d.data) <= dns.MAX_PACKET, f"we send a {len(d.data)}-byte datagram"
        dns.decode(d.data)  # what we send, we (and everyone) can read
    return bool(events or out)


def _normalized(msg: dns.Message) -> tuple[object, ...]:
    """A decoded message with names lower-cased (the encoder shares pointers between names equal but
    for case, so a re-encoded name can come back in the case of its first occurrence)."""
    def rec(r: dns.Record) -> tuple[object, ...]:
        data: object = r.data
        if isinstance(data, str):
            data = data.lower()
        elif isinstance(data, dns.SRVData):
            data = (data.priority, data.weight, data.port, data.target.lower())
        elif isinstance(data, tuple) and data == (b"",) and r.type == dns.TYPE_TXT:
            data = ()  # the encoder writes an empty TXT as one empty string (RFC 6763 §6.1)
        return (r.name.lower(), r.type, r.ttl, data, r.cls, r.cache_flush)
    return (msg.id, msg.flags, [(q.name.lower(), q.type, q.cls, q.unicast_response) for q in msg.questions],
            [rec(r) for r in msg.answers], [rec(r) for r in msg.authorities], [rec(r) for r in msg.additionals])


class MdnsHarness(Harness):
    """mDNS packets through ``dns.decode`` then a fresh :class:`MdnsCore` (one to three packets per input,
    time moving on between them). Invariants: a decoded message re-encodes to the same message; the
    core raises nothing, keeps at most ``max_peers`` peers with 1..``max_addrs`` addresses each (none
    ending in ``/p2p``, never ourselves), reports TTLs within ``max_ttl``, and every datagram it sends
    decodes and fits 9000 bytes."""

    name = "mdns"
    expected = (dns.MalformedPacket,)
    min_past_ratio = 0.5

    def __init__(self) -> None:
        super().__init__()
        us, _, _, ours, _ = _mdns_world()
        self.core = MdnsCore(us.peer_id, random.Random(_OUR_SEED), _MDNS_CONFIG)
        self.core.set_addrs(ours, 0.0)
        self.core.start(0.0)
        self.now = 0.0

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """The core's WARNING for a full peer table, which the fuzz hits by design, is not printed."""
        logger = logging.getLogger("mycel.discovery.mdns")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            logger.setLevel(level)

    def one(self, src: Source) -> None:
        # one core for the run (building one costs more than most inputs); what an input found expires
        # before the next one starts
        core = self.core
        self.now += _MDNS_CONFIG.max_ttl + 1.0
        core.handle_timer(self.now)
        core.events()
        core.datagrams_to_send()
        assert not core.peers()
        now = self.now + 0.5
        for i in range(src.int(1, 3)):
            data = gen_mdns_packet(src)
            port = 5353 if chance(src, 85) else pick(src, (5354, 40000))
            try:
                msg = dns.decode(data)
            except DecodeError:
                malformed = core.stats.malformed
                core.receive(data, ("192.168.1.50", port), now)  # counted as malformed, never raised
                assert core.stats.malformed == malformed + 1 and not core.events() and not core.datagrams_to_send()
                if i == 0:
                    raise
                continue
            self.past = True
            assert len(msg.questions) + len(msg.records()) <= dns.MAX_RECORDS
            assert _normalized(dns.decode(dns.encode(msg))) == _normalized(msg), "re-encoding changed the message"
            core.receive(data, ("192.168.1.50", port), now)
            self.deep |= _check_mdns_output(core, _MDNS_CONFIG)
            now += pick(src, (0.0, 0.5, 1.0, 60.0, 200.0, 4000.0))
            core.handle_timer(now)
            _check_mdns_output(core, _MDNS_CONFIG)
        self.now = now


# -- port mapping: NAT-PMP, PCP, SSDP, HTTP, the IGD description and SOAP ------------------------------

_GATEWAY = "192.168.1.1"
_LOCATION = f"http://{_GATEWAY}:5000/rootDesc.xml"
_NONCE = bytes(range(1, 13))
_RESULT_CODES = (0, 0, 0, 0, 1, 2, 3, 4, 5, 8, 13, 14, 255, 0xFFFF)
_U32 = (0, 1, 3600, 7200, (1 << 31) - 1, 1 << 31, (1 << 32) - 1)

_SSDP_LOCATIONS = (
    _LOCATION, _LOCATION, f"http://{_GATEWAY}/", "http://[fd00::1]:80/d.xml", "https://192.168.1.1/x",
    "http://[::1/", "http://[abc]/", "http://h:99999/", "http://h:-1/", "http://:80/", "ftp://192.168.1.1/",
    "", "http://h:8o/", "http://" + "a" * 1500, "http://user:pw@192.168.1.1/", "HTTP://192.168.1.1/",
    "http://192.168.1.1:0/", "//192.168.1.1/", "http://[fe80::1%25eth0]/",
)
_CONTROL_URLS = (
    "/ctl/IPConn", "/ctl/IPConn", "ctl", f"http://{_GATEWAY}:5000/ctl", "http://evil.example/ctl", "//evil/ctl",
    "http://[::1/ctl", f"http://{_GATEWAY}:99999/c", f"https://{_GATEWAY}/c", "", "   ", "javascript:x",
    f"http://{_GATEWAY}\uff03x/c", "/" + "a" * 3000, f"http://{_GATEWAY}:0/c", "/c?x=1#f", "../../c",
    "<![CDATA[/ctl]]>", "/c&amp;d", "&#x2F;ctl", "&undefined;", f"http://{_GATEWAY}:/c",
)
_URL_BASES = (None, None, None, f"http://{_GATEWAY}:5000/", "http://evil/", "http://[x/", "http://h\uff03/", "",
              f"ftp://{_GATEWAY}/", f"http://{_GATEWAY}:70000/")
_SERVICE_TYPES = (*upnp.WAN_SERVICES, *upnp.WAN_SERVICES, "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1",
                  "urn:schemas-upnp-org:service:WANIPConnection:3", "", " " + upnp.WAN_SERVICES[1] + " \n")
_DEVICE_NS = "urn:schemas-upnp-org:device-1-0"
_SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
_CONTROL_NS = "urn:schemas-upnp-org:control-1-0"
_ACTIONS = ("GetExternalIPAddress", "AddPortMapping", "DeletePortMapping", "GetGenericPortMappingEntry")
_EXTERNAL_IPS = ("203.0.113.7", "203.0.113.7", "", "::1", "999.1.1.1", " 1.2.3.4 ", "1.2.3.4 junk", "0.0.0.0",
                 "1" * 5000, "\u0661.2.3.4")
_ERROR_CODES = ("718", "725", "713", "", " 402 ", "\u00b2", "1" * 5000, "-1", "7e2", "\u0667\u0661\u0668",
                "99999999999", "0")
_DOCTYPES = (
    '<!DOCTYPE root [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>',  # "billion laughs"
    '<!DOCTYPE root SYSTEM "http://evil.example/x.dtd">',
    '<!DOCTYPE root [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    "<!DOCTYPE root>",
)
_ENCODINGS = ("utf-8", "UTF-8", "utf-16", "latin-1", "us-ascii", "foo", "utf-7", "shift_jis", "cp500", "utf-32", "")


@functools.cache
def _nesting(depth: int) -> tuple[str, str]:
    return "<x>" * depth, "</x>" * depth


def _service_xml(src: Source, prefix: str) -> str:
    kind = upnp.WAN_SERVICES[1] if chance(src, 60) else pick(src, _SERVICE_TYPES)
    url = "/ctl/IPConn" if chance(src, 60) else pick(src, _CONTROL_URLS)
    if rarely(src, 3):
        url = url.replace("&", "&amp;").replace("<", "&lt;")
    return (f"<{prefix}service><{prefix}serviceType>{kind}</{prefix}serviceType><{prefix}serviceId>urn:upnp-org:serviceId:"
            f"WANIPConn1</{prefix}serviceId><{prefix}controlURL>{url}</{prefix}controlURL><{prefix}eventSubURL>/evt"
            f"</{prefix}eventSubURL><{prefix}SCPDURL>/x.xml</{prefix}SCPDURL></{prefix}service>")


def _xml_bytes(src: Source, text: str) -> bytes:
    """An XML document's bytes: mostly UTF-8 with a plain declaration; else another encoding declared
    (and sometimes used), a DOCTYPE with entities, padding up to and past 64 KiB, bytes that are not UTF-8."""
    decl, doctype = '<?xml version="1.0"?>', ""
    encoding = "utf-8"
    if rarely(src, 10):
        encoding = pick(src, _ENCODINGS)
        decl = f'<?xml version="1.0" encoding="{encoding}"?>' if encoding else "<?xml?>"
    if rarely(src, 6):
        doctype = pick(src, _DOCTYPES)
        text = text.replace("<device>", "<device>&c;", 1) if chance(src, 50) else text
    if rarely(src, 4):
        text = text + "<!--" + "p" * pick(src, (1000, upnp.MAX_XML - len(text) - 200, upnp.MAX_XML)) + "-->"
    doc = decl + doctype + text
    try:
        data = doc.encode(encoding) if chance(src, 50) and encoding not in ("foo", "", "utf-7") else doc.encode()
    except (LookupError, UnicodeEncodeError):
        data = doc.encode()
    if rarely(src, 3):
        data = data.replace(b"IPConn", b"IP\xff\xfeConn")
    return mutate(src, data) if rarely(src, 10) else data


def gen_description(src: Source) -> bytes:
    """An IGD device description: the usual device tree with its service list, with hostile URLBase and
    control URLs, 0 to 100 services, wrong namespaces, deep nesting, entities, encodings and sizes."""
    ns_kind = src.int(0, 19)
    prefix, root_attrs = "", f' xmlns="{_DEVICE_NS}"'
    if ns_kind == 0:
        root_attrs = ""  # no namespace: nothing is found
    elif ns_kind == 1:
        root_attrs = ' xmlns="urn:schemas-upnp-org:device-2-0"'
    elif ns_kind == 2:
        prefix, root_attrs = "d:", f' xmlns:d="{_DEVICE_NS}"'
    elif ns_kind == 3:
        prefix, root_attrs = "d:", ""  # an unbound prefix
    n = src.int(1, 3) if chance(src, 90) else src.int(0, 100)
    services = "".join(_service_xml(src, prefix) for _ in range(n))
    base = pick(src, _URL_BASES)
    base_xml = f"<{prefix}URLBase>{base}</{prefix}URLBase>" if base is not None else ""
    open_, close = _nesting(pick(src, (0, 0, 0, 0, 10, 1000, 9000)))
    p = prefix
    text = (
        f"<{p}root{root_attrs}><{p}specVersion><{p}major>1</{p}major><{p}minor>0</{p}minor></{p}specVersion>{base_xml}"
        f"<{p}device><{p}deviceType>{upnp.IGD_DEVICE}</{p}deviceType><{p}deviceList><{p}device><{p}deviceType>"
        f"urn:schemas-upnp-org:device:WANDevice:1</{p}deviceType><{p}deviceList><{p}device>{open_}"
        f"<{p}serviceList>{services}</{p}serviceList>{close}</{p}device></{p}deviceList></{p}device></{p}deviceList>"
        f"</{p}device></{p}root>"
    )
    return _xml_bytes(src, text)


def gen_soap(src: Source, action: str) -> bytes:
    """A SOAP answer to ``action``: its output arguments (up to 40, an external IP of every shape), or a
    fault with an errorCode of every shape; a wrong or missing envelope namespace or Body sometimes."""
    env_ns = _SOAP_NS if chance(src, 92) else pick(src, ("", "http://www.w3.org/2003/05/soap-envelope"))
    if chance(src, 70):
        n = src.int(0, 3) if chance(src, 90) else src.int(30, 40)
        args = "".join(f"<NewArg{i}>{i}</NewArg{i}>" for i in range(n))
        if action == "GetExternalIPAddress" and chance(src, 90):
            args = f"<NewExternalIPAddress>{pick(src, _EXTERNAL_IPS)}</NewExternalIPAddress>" + args
        name = f"{action}Response" if chance(src, 92) else pick(src, ("OtherResponse", action, f"{action}response"))
        content = f'<u:{name} xmlns:u="{upnp.WAN_SERVICES[1]}">{args}</u:{name}>'
    else:
        code = pick(src, _ERROR_CODES)
        desc = pick(src, ("ConflictInMappingEntry", "", "x" * 3000))
        ctl_ns = _CONTROL_NS if chance(src, 90) else "urn:other"
        content = (f"<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>"
                   f'<UPnPError xmlns="{ctl_ns}"><errorCode>{code}</errorCode><errorDescription>{desc}'
                   "</errorDescription></UPnPError></detail></s:Fault>")
    body = f"<s:Body>{content}</s:Body>" if chance(src, 95) else content
    return _xml_bytes(src, f'<s:Envelope xmlns:s="{env_ns}">{body}</s:Envelope>' if env_ns else
                      f"<s:Envelope>{body}</s:Envelope>")


def gen_ssdp(src: Source) -> bytes:
    """An M-SEARCH answer: status line, LOCATION of every shape, the other headers, junk lines."""
    status = "HTTP/1.1 200 OK" if chance(src, 90) else pick(src, (
        "HTTP/1.0 200 OK", "HTTP/1.1 404 Not Found", "NOTIFY * HTTP/1.1", "HTTP/1.1 200", "HTTP/1.1", "", "HTTP/2 200 OK"))
    headers = ["CACHE-CONTROL: max-age=120", "EXT:", f"ST: {upnp.IGD_DEVICE}", "SERVER: Linux UPnP/1.1 MiniUPnPd/2.3",
               "USN: uuid:1234::" + upnp.IGD_DEVICE]
    if chance(src, 97):
        loc = _LOCATION if chance(src, 60) else pick(src, _SSDP_LOCATIONS)
        headers.insert(src.int(0, len(headers)), pick(src, ("LOCATION", "Location", "location ", " LOCATION")) + ": " + loc)
    if rarely(src, 10):
        headers.insert(src.int(0, len(headers)), pick(src, ("no colon", ":", "LOCATION:", "X: \u00e9", "a" * 3000)))
    eol = "\r\n" if chance(src, 95) else "\n"
    text = eol.join([status, *headers]) + eol + eol
    try:
        data = text.encode("latin-1")
    except UnicodeEncodeError:
        data = text.encode()
    return mutate(src, data) if rarely(src, 15) else data


def _chunked(src: Source, body: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while pos < len(body):
        n = min(len(body) - pos, src.int(1, 4096))
        size = f"{n:x}" if chance(src, 95) else pick(src, (f"-{n:x}", f"+{n:x}", "-6", f" {n:x} ", "1_0", "fffffffff",
                                                             "", "zz", f"{n:x};ext=1", f"{n:X}", "0" * 20 + "1"))
        out += size.encode() + b"\r\n" + body[pos : pos + n] + b"\r\n"
        pos += n
    if chance(src, 95):
        out += b"0\r\n\r\n"
    return bytes(out)


def gen_http(src: Source, body: bytes) -> bytes:
    """An HTTP answer around ``body``: Content-Length (right, lying, not ASCII digits, thousands of
    digits), chunked (sizes negative, signed, with underscores or extensions), or read to close."""
    status = "HTTP/1.1 200 OK" if chance(src, 85) else pick(src, (
        "HTTP/1.1 500 Internal Server Error", "HTTP/1.0 200 OK", "HTTP/1.1 \u00b2\u00b9\u00b3 OK", "HTTP/1.1 " + "2" * 5000,
        "HTTP/1.1 2000 OK", "HTTP/1.1 -20 OK", "HTTP/1.1  200 OK", "ICY 200 OK", "HTTP/1.1"))
    headers = ["Content-Type: text/xml", "Server: miniupnpd"]
    framing = src.int(0, 9)
    if framing < 5:
        length = str(len(body)) if chance(src, 85) else pick(src, (
            str(len(body) + 1), str(max(0, len(body) - 10)), "\u00b9", "1" * 5000, "-1", "", "0x10", " 5 "))
        headers.append(f"Content-Length: {length}")
    elif framing < 8:
        headers.append(pick(src, ("Transfer-Encoding: chunked", "transfer-encoding: CHUNKED")))
        body = _chunked(src, body)
    text = "\r\n".join([status, *headers]) + "\r\n\r\n"
    if rarely(src, 3):
        text = text.replace("\r\n\r\n", "\r\n" + "X: " + "y" * 9000 + "\r\n\r\n")
    try:
        head = text.encode("latin-1")
    except UnicodeEncodeError:
        head = text.encode()
    return head + body


def _gen_natpmp(src: Source, opcode: int) -> bytes:
    version = 0 if chance(src, 95) else src.int(1, 255)
    op = 128 + opcode if chance(src, 90) else pick(src, (opcode, 128, 129, 130, 131, src.int(0, 255)))
    code = 0 if chance(src, 70) else pick(src, _RESULT_CODES)
    head = struct.pack("!BBHI", version, op, code, pick(src, (*_U32, src.int(0, (1 << 32) - 1))))
    if opcode == natpmp.OP_EXTERNAL_ADDRESS:
        body = pick(src, (bytes((203, 0, 113, 7)), bytes(4), b"\xff" * 4, bytes((127, 0, 0, 1))))
    else:
        internal = 4001 if chance(src, 90) else src.int(0, 0xFFFF)
        body = struct.pack("!HHI", internal, src.int(0, 0xFFFF), pick(src, _U32))
    data = head + body
    if rarely(src, 10):
        data = data[: src.int(0, len(data))] if chance(src, 50) else data + blob(src, 20)
    return mutate(src, data) if rarely(src, 10) else data


def _gen_pcp(src: Source) -> bytes:
    version = pcp.VERSION if chance(src, 92) else pick(src, (0, 1, 3, 255))
    op = pcp.RESPONSE_BIT | pcp.OP_MAP if chance(src, 92) else pick(src, (pcp.OP_MAP, 0x80, 0x82, 0x81 | 0x40))
    code = 0 if chance(src, 70) else pick(src, _RESULT_CODES) & 0xFF
    header = struct.pack("!BBBBII", version, op, 0, code, pick(src, _U32),
                         pick(src, (*_U32, src.int(0, (1 << 32) - 1)))) + bytes(12)
    nonce = _NONCE if chance(src, 92) else pick(src, (bytes(12), _NONCE[::-1], blob(src, 12).ljust(12, b"\0")))
    proto = 6 if chance(src, 90) else pick(src, (17, 0, 255))
    internal = 4001 if chance(src, 92) else src.int(0, 0xFFFF)
    ext = pick(src, (ipaddress.IPv6Address("::ffff:203.0.113.7").packed, ipaddress.IPv6Address("2001:db8::7").packed,
                     bytes(16), b"\xff" * 16, ipaddress.IPv6Address("::ffff:0.0.0.0").packed))
    body = nonce + struct.pack("!B3xHH", proto, internal, src.int(0, 0xFFFF)) + ext
    options = b""
    if rarely(src, 15):  # options after the MAP body: THIRD_PARTY, PREFER_FAILURE, FILTER, unknown, lying lengths
        for _ in range(src.int(1, 60)):
            code = pick(src, (1, 2, 3, 128, src.int(0, 255)))
            payload = blob(src, 24)
            options += struct.pack("!BxH", code, len(payload) if chance(src, 80) else src.int(0, 0xFFFF)) + payload
    data = header + body + options
    if rarely(src, 8):
        data = data[: src.int(0, len(data))]
    return mutate(src, data) if rarely(src, 10) else data


def _check_url(url: str, host: str | None) -> None:
    """What the HTTP client does with an accepted URL must work: an http URL with a host and a port."""
    parsed = urllib.parse.urlsplit(url)
    assert parsed.scheme == "http" and parsed.hostname, url[:80]
    assert 0 <= (parsed.port or 80) <= 0xFFFF
    assert host is None or parsed.hostname == host, f"{url[:80]} is not on {host}"


class PortmapHarness(Harness):
    """NAT-PMP and PCP responses, SSDP answers, HTTP answers carrying device descriptions and SOAP
    answers, each with hostile fields. "past": the header was accepted (a result code read, the XML
    parsed, the status line read); "deep": the answer was used (a mapping, a service, output arguments).
    Invariants: ports and lifetimes in range, the answer is to our request (nonce, protocol, port); an
    accepted LOCATION or control URL is http, on the gateway, with a valid port (the HTTP client's
    ``urlsplit(...).port`` must not raise); at most 32 output arguments; fault codes are small ints."""

    name = "portmap"
    expected = (PortMapError,)
    min_past_ratio = 0.6

    def one(self, src: Source) -> None:
        kind = src.int(0, 9)
        if kind < 3:
            self._binary(src, kind)
        elif kind == 3:
            answer = upnp.parse_ssdp_response(gen_ssdp(src))
            self.past = self.deep = True
            _check_url(answer.location, None)
        else:
            description = kind < 6
            action = pick(src, _ACTIONS)
            body = gen_description(src) if description else gen_soap(src, action)
            if chance(src, 50):
                status, body = parse_http_response(gen_http(src, body))
                assert 100 <= status <= 999 and len(body) <= upnp.MAX_XML
            else:
                status = 200 if chance(src, 90) else pick(src, (500, 404, 0))
            if body.strip():
                upnp._parse_xml(body)
            self.past = True
            if description:
                service = upnp.parse_description(body, _LOCATION)
                assert service.service_type in upnp.WAN_SERVICES
                _check_url(service.control_url, _GATEWAY)
            else:
                try:
                    out = upnp.parse_soap_response(status, body, action)
                except upnp.UpnpError as exc:
                    assert exc.code is None or 0 <= exc.code < 10**9, exc.code
                    raise
                assert len(out) <= 32 and all(isinstance(k, str) and isinstance(v, str) for k, v in out.items())
                if action == "GetExternalIPAddress":
                    upnp.parse_external_ip(out)
            self.deep = True

    def _binary(self, src: Source, kind: int) -> None:
        try:
            if kind == 0:
                ext = natpmp.parse_external_address(_gen_natpmp(src, natpmp.OP_EXTERNAL_ADDRESS))
                assert 0 <= ext.epoch < 1 << 32
            elif kind == 1:
                protocol = pick(src, ("tcp", "udp"))
                opcode = natpmp.OP_MAP_TCP if protocol == "tcp" else natpmp.OP_MAP_UDP
                m = natpmp.parse_map(_gen_natpmp(src, opcode), protocol, 4001)
                assert m.internal_port == 4001 and 0 <= m.external_port <= 0xFFFF and 0 <= m.lifetime < 1 << 32
            else:
                pm = pcp.parse_map(_gen_pcp(src), _NONCE, "tcp", 4001)
                assert pm.protocol == "tcp" and pm.internal_port == 4001 and 0 <= pm.external_port <= 0xFFFF
                assert 0 <= pm.lifetime < 1 << 32 and 0 <= pm.epoch < 1 << 32
                assert not (isinstance(pm.external_address, ipaddress.IPv6Address) and pm.external_address.ipv4_mapped)
        except PortMapMessageError:
            raise
        except PortMapError as exc:  # a result code other than success: the header was read
            assert exc.code is not None
            self.past = True
            raise
        self.past = self.deep = True


# -- DCUtR ----------------------------------------------------------------------------------------------


@functools.cache
def _dcutr_addrs() -> tuple[tuple[bytes, ...], tuple[Multiaddr, ...]]:
    """Addresses a peer offers (public, private, loopback, relayed, every transport) and our own."""
    relay = Identity.from_seed(b"\x52" * 32).peer_id
    texts = ("/ip4/203.0.113.7/tcp/4001", "/ip4/203.0.113.7/udp/4001/quic-v1", "/ip6/2001:db8::7/tcp/4001",
             "/ip6/2001:db8::7/udp/4001/quic-v1", "/ip4/127.0.0.1/tcp/1", "/ip6/::1/udp/1/quic-v1",
             "/ip4/169.254.1.1/tcp/1", "/ip6/fe80::1/tcp/1", "/ip4/0.0.0.0/tcp/0", "/dns4/example.com/tcp/443",
             f"/ip4/198.18.0.1/tcp/4001/p2p/{relay}/p2p-circuit", "/ip4/203.0.113.7/tcp/4001/ws",
             "/ip4/203.0.113.7/udp/4001/quic-v1/webtransport", f"/ip4/203.0.113.7/tcp/4001/p2p/{relay}",
             "/ip4/203.0.113.7/udp/4001/quic", "/ip4/203.0.113.7/tcp/65535", "/unix/tmp%2Fx")
    ours = (Multiaddr("/ip4/198.51.100.2/tcp/4001"), Multiaddr("/ip4/198.51.100.2/udp/4001/quic-v1"))
    return tuple(Multiaddr(t).to_bytes() for t in texts), ours


def gen_holepunch(src: Source, expected: int) -> bytes:
    """A HolePunch body: mostly of the ``expected`` type with a few addresses; else another or no type,
    the type twice, hundreds of addresses (past 4 KiB too), garbage and relayed ones, unknown fields."""
    addrs, _ = _dcutr_addrs()
    out = b""
    if chance(src, 95):
        kind = expected if chance(src, 90) else pick(src, (CONNECT, SYNC, 0, 1, 200, (1 << 32) - 1))
        out += _field(1, kind)
        if rarely(src, 3):
            out += _field(1, pick(src, (CONNECT, SYNC, 7)))  # the type again (the last one wins)
    many = src.int(0, 19)
    n = src.int(1, 4) if many < 14 else 0 if many == 14 else src.int(MAX_ADDRS - 2, MAX_ADDRS + 40) if many < 19 else src.int(100, 400)
    hostile = rarely(src, 30)
    for _ in range(n):
        out += _field(2, gen_multiaddr_bytes(src) if hostile and chance(src, 50) else pick(src, addrs))
    if rarely(src, 5):
        out += _field(src.int(3, 20), blob(src, 10)) if chance(src, 50) else _field(2, src.int(0, 100))  # wrong wire type
    return mutate(src, out) if rarely(src, 10) else out


def _frame(src: Source, body: bytes) -> bytes:
    """``body`` with its uvarint length: right mostly; else lying, non-minimal, over 4 KiB or cut."""
    kind = src.int(0, 19)
    if kind < 16:
        return encode_uvarint(len(body)) + body
    if kind == 16:
        return encode_uvarint(hostile_int(src, len(body) + 8, (1 << 63) - 1)) + body
    if kind == 17:
        return bytes((0x80 | (len(body) & 0x7F), 0x80, 0x00)) + body  # non-minimal
    if kind == 18:
        return encode_uvarint(MAX_MESSAGE_SIZE + 1) + body
    return (encode_uvarint(len(body)) + body)[: src.int(0, len(body))]


def _check_dcutr_addrs(addrs: tuple[object, ...] | list[object]) -> None:
    """What the service does with addresses from a message must work on each of them."""
    assert len(addrs) <= MAX_ADDRS, f"{len(addrs)} addresses kept (limit {MAX_ADDRS})"
    for a in addrs:
        assert isinstance(a, Multiaddr)
        assert all(p.name != "p2p-circuit" for p in a.protocols()), f"a relayed address kept: {a}"
        str(a)
        tcp_host_port(a)
        quic_host_port(a)
        _usable(a)


class DcutrHarness(Harness):
    """HolePunch messages read off a stream (length-prefixed) and decoded, then the exchange on them: B's
    :class:`Initiator` takes A's CONNECT and plans the punch; A's :class:`Responder` takes B's CONNECT
    and SYNC (sometimes out of order). Invariants: at most MAX_ADDRS addresses, none relayed, each one
    usable by the transports' address checks; the RTT is not negative and the punch is not in the past;
    what we send back decodes."""

    name = "dcutr"
    expected = (DCUtRError,)
    min_past_ratio = 0.6

    def one(self, src: Source) -> None:
        _, ours = _dcutr_addrs()
        first = gen_holepunch(src, CONNECT)
        if chance(src, 20):  # as read off the stream
            body = drive(dcutr_messages.read(FakeReceiveStream(chunks(src, _frame(src, first), 4))))  # type: ignore[arg-type]
            assert len(body) <= MAX_MESSAGE_SIZE
            first = body
        local = ours if chance(src, 95) else ()
        if chance(src, 50):  # B, the initiator
            b = Initiator(local, max_attempts=pick(src, (1, 3)))
            sent = b.connect(10.0)
            assert dcutr_messages.decode(sent, CONNECT) == list(local)
            _check_dcutr_addrs(dcutr_messages.decode(first, CONNECT))
            self.past = True
            now = 10.0 + pick(src, (0.0, 0.05, 3.0, -1.0))
            plan = b.on_connect(first, now)
            assert plan.rtt >= 0 and plan.punch_at >= now and plan.remote_addrs
            assert dcutr_messages.decode(plan.sync, SYNC) == []
            _check_dcutr_addrs(plan.remote_addrs)
            self.deep = True
            return
        a = Responder(local)
        if rarely(src, 5):  # a SYNC first
            a.on_sync(gen_holepunch(src, SYNC))
        _check_dcutr_addrs(dcutr_messages.decode(first, CONNECT))
        self.past = True
        answer = a.on_connect(first)
        assert dcutr_messages.decode(answer, CONNECT) == list(local)
        second = gen_holepunch(src, SYNC) if chance(src, 95) else gen_holepunch(src, CONNECT)
        if rarely(src, 3):
            a.on_connect(second)  # a second CONNECT
        targets = a.on_sync(second)
        assert targets == a.remote_addrs and targets
        _check_dcutr_addrs(targets)
        self.deep = True


HARNESSES = [MdnsHarness, PortmapHarness, DcutrHarness]

__all__ = ["HARNESSES", "DcutrHarness", "MdnsHarness", "PortmapHarness", "gen_description", "gen_holepunch",
           "gen_mdns_packet", "gen_soap", "gen_ssdp"]
