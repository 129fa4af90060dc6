"""The sans-IO mDNS responder and querier of the libp2p discovery/mdns spec.

:class:`MdnsCore` takes datagrams, ``now`` and a random source in, and gives datagrams to send and
:class:`MdnsPeerDiscovered` / :class:`MdnsPeerGone` events out; the trio driver
(:mod:`mycel.discovery.mdns.service`) only moves bytes and sleeps until :meth:`MdnsCore.next_deadline`.

What it sends (interoperable with go-libp2p's zeroconf and js-libp2p's ``@libp2p/mdns``):

* **queries** ``_p2p._udp.local PTR`` at start, after 4 s, then at intervals growing by a random
  factor of 1.5–2.5 up to 60 s (go's ``zeroconf`` browse schedule), plus one when a found peer's
  records reach 80 % of their TTL (RFC 6762 §5.2), never more than one query a second;
* **responses** (to our own query too: the spec asks peers to answer their own query, which is how
  others discover us passively): answer ``<service> PTR <peer-name>.<service>``; additionals ``TXT``
  (one record, one ``dnsaddr=<multiaddr>/p2p/<id>`` string per address — one record because go keeps
  only the last TXT record of an instance; js reads every string), ``SRV`` and ``A``/``AAAA`` records
  of ``<peer-name>.local`` (go's browser drops an instance without an address record). At most one
  multicast response per second (RFC 6762 §6), further queries within that second share it. A query
  from a port other than 5353 (a one-shot resolver) or with the QU bit gets a unicast answer.
  ``_services._dns-sd._udp.local PTR`` (DNS-SD meta query) and direct SRV/TXT/A/AAAA/ANY questions
  for our names are answered too (the spec's "gotchas");
* **announcements**: two unsolicited responses one second apart at start and when our addresses
  change (RFC 6762 §8.3);
* **goodbyes**: :meth:`MdnsCore.goodbye` gives the same response with TTL 0 (RFC 6762 §10.1).

Which of our addresses are announced (:func:`eligible_addrs`): those starting with ``ip4``/``ip6`` (or
``dns*`` of a ``.local`` name), without ``p2p-circuit``, ``ws``/``wss``/``tls``+``ws``,
``webtransport``, ``webrtc``/``webrtc-direct`` or ``certhash`` (go-libp2p's filter, which keeps the
packet small: go-libp2p #3415), without IPv6 link-local ones (useless without a zone) and without
loopback addresses — unless loopback is all we have (then peers on the same machine can still find us).
go announces loopback too and js announces every private address; a loopback address sent over a LAN
only makes the others dial themselves, so we leave it out. The response is kept within
``max_packet`` bytes (default 1452: a 1500-byte IPv6 packet minus its headers): addresses are dropped
from the end until it fits; each TXT string is at most 255 bytes (longer addresses are skipped).

What it accepts: responses from the mDNS port (others are ignored, RFC 6762 §11) whose PTR names an
instance of the service (or TXT records of
``<x>.<service>``); the TXT strings starting with ``dnsaddr=`` are parsed as multiaddrs ending in
``/p2p/<id>`` (the first address names the peer; others naming a different peer are dropped);
our own peer name and id are ignored. Bounds: ``max_peers`` found peers (a new peer beyond it is
refused, counted and logged; peers already found are kept — a flood cannot push them out), at most
``max_addrs`` addresses per peer, TTLs clamped to ``max_ttl``; malformed packets raise nothing out of
:meth:`MdnsCore.receive`: they are counted and logged (rate-limited) with their source.
A found peer is dropped when its TTL runs out without a refresh, or at once on a goodbye (TTL 0 PTR).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from multiaddr import Multiaddr

from mycel.core.addrs import split_peer_id, with_peer_id
from mycel.core.errors import DecodeError
from mycel.core.peer_id import PeerId
from mycel.discovery.mdns import dns
from mycel.discovery.mdns.dns import Message, Question, Record, SRVData

log = logging.getLogger("mycel.discovery.mdns")

SERVICE_NAME = "_p2p._udp.local"
"""The libp2p mDNS service name."""
META_QUERY = "_services._dns-sd._udp.local"
MDNS_PORT = 5353
DNSADDR_PREFIX = b"dnsaddr="
PEER_NAME_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"

_UNSUITABLE = frozenset(
    {"p2p-circuit", "ws", "wss", "webtransport", "webrtc", "webrtc-direct", "certhash", "http", "https"}
)


@dataclass(frozen=True)
class MdnsConfig:
    """Parameters of the mDNS core (defaults follow go-libp2p, RFC 6762 and js-libp2p)."""

    service: str = SERVICE_NAME
    """The DNS-SD service name (``_p2p._udp.local``)."""
    ttl: int = 120
    """TTL of the records we send (seconds; js-libp2p uses 120, RFC 6762 §10 for host records)."""
    query_initial: float = 4.0
    """Interval after the first query (go's zeroconf: 4 s)."""
    query_max: float = 60.0
    """Largest query interval (go's zeroconf: 60 s)."""
    announce_count: int = 2
    """Unsolicited responses at start and when our addresses change (RFC 6762 §8.3: at least 2)."""
    announce_interval: float = 1.0
    """Seconds between those announcements."""
    min_response_interval: float = 1.0
    """At most one multicast response per this many seconds (RFC 6762 §6)."""
    max_packet: int = 1452
    """Largest response we send (DNS payload bytes)."""
    max_peers: int = 256
    """Most found peers kept; a new one beyond it is refused (logged, counted in ``stats``)."""
    max_addrs: int = 32
    """Most addresses kept per found peer (the rest of its TXT strings are ignored)."""
    max_ttl: int = 4500
    """Received TTLs are clamped to this (seconds; go announces 3200)."""
    max_ips: int = 8
    """Most A/AAAA records we send."""
    port: int = MDNS_PORT
    """The mDNS port (5353); a query from another source port is a one-shot resolver's (answered unicast)."""

    def __post_init__(self) -> None:
        if not self.service or len(self.service) > 200:
            raise ValueError("MdnsConfig.service: a DNS name of at most 200 characters")
        if self.ttl < 1 or self.max_ttl < 1 or self.query_initial <= 0 or self.query_max < self.query_initial:
            raise ValueError("MdnsConfig: ttl, max_ttl and the query intervals must be positive (max >= initial)")
        if self.max_packet < 512 or self.max_peers < 1 or self.max_addrs < 1:
            raise ValueError("MdnsConfig: max_packet >= 512, max_peers >= 1, max_addrs >= 1")


@dataclass(frozen=True)
class Outgoing:
    """A datagram (``data``) to send: to the multicast group on every interface (``dest`` None) or unicast."""

    data: bytes
    dest: tuple[str, int] | None = None


@dataclass(frozen=True)
class MdnsPeerDiscovered:
    """A peer announced itself (new, with changed addresses, or refreshed after half its TTL)."""

    peer: PeerId
    addrs: tuple[Multiaddr, ...]
    """Every address parsed from its TXT strings, without ``/p2p``."""
    ttl: float
    """Seconds its records stay valid (clamped to ``MdnsConfig.max_ttl``)."""
    source_ip: str
    """Where the response came from."""


@dataclass(frozen=True)
class MdnsPeerGone:
    """A found peer said goodbye (TTL 0) or its records expired."""

    peer: PeerId
    reason: str
    """``"goodbye"`` or ``"expired"``."""


MdnsEvent = MdnsPeerDiscovered | MdnsPeerGone


@dataclass
class _Found:
    name: str
    addrs: tuple[Multiaddr, ...]
    ttl: float
    expiry: float
    refresh_at: float
    reported_at: float


@dataclass
class MdnsStats:
    """Counters of what the core saw and did: datagrams received (``packets_in``), of which ``malformed``,
    ``responses_in`` and ``queries_in``; ``queries_sent`` and ``responses_sent`` (multicast, announcements
    included); ``largest_response`` sent, in bytes."""

    packets_in: int = 0
    malformed: int = 0
    responses_in: int = 0
    queries_in: int = 0
    queries_sent: int = 0
    responses_sent: int = 0
    refused_peers: int = 0
    """New peers not kept because the table was full."""
    ignored: int = 0
    """Responses not sent from the mDNS port (RFC 6762 §11: silently ignored)."""
    bad_addrs: int = 0
    """TXT strings that were not a valid ``dnsaddr=<multiaddr>/p2p/<id>``."""
    largest_response: int = 0


class _RateLog:
    """Logs at most ``burst`` lines per ``window`` seconds per kind; says how many were suppressed."""

    def __init__(self, burst: int = 5, window: float = 60.0) -> None:
        self.burst, self.window = burst, window
        self._state: dict[str, tuple[float, int, int]] = {}  # kind -> (window start, logged, suppressed)

    def __call__(self, now: float, level: int, kind: str, msg: str, *args: object) -> None:
        start, logged, suppressed = self._state.get(kind, (now, 0, 0))
        if now - start >= self.window:
            if suppressed:
                log.log(level, "mdns: %d more %s in the last %.0f s (not logged)", suppressed, kind, self.window)
            start, logged, suppressed = now, 0, 0
        if logged < self.burst:
            log.log(level, msg, *args)
            logged += 1
        else:
            suppressed += 1
        self._state[kind] = (start, logged, suppressed)


def random_peer_name(rng: random.Random) -> str:
    """A random lower-case alphanumeric name of 32–63 characters (go-libp2p's rule; never the peer id)."""
    return "".join(rng.choice(PEER_NAME_ALPHABET) for _ in range(32 + rng.randrange(32)))


def _first_ip(addr: Multiaddr) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    for proto, value in addr.items():
        if proto.name in ("ip4", "ip6"):
            return ipaddress.ip_address(str(value))
        return None
    return None


def eligible_addrs(addrs: Sequence[Multiaddr]) -> list[Multiaddr]:
    """The addresses worth announcing over mDNS (see the module docstring), in order, without ``/p2p``."""
    kept: list[Multiaddr] = []
    for full in addrs:
        addr, _ = split_peer_id(full)
        names = [p.name for p in addr.protocols()]
        if not names or _UNSUITABLE.intersection(names) or "p2p" in names:
            continue
        if names[0] in ("dns", "dns4", "dns6"):
            host = str(addr.value_for_protocol(names[0]))
            if not host.lower().endswith(".local"):
                continue
        elif names[0] in ("ip4", "ip6"):
            ip = _first_ip(addr)
            if ip is None or ip.is_unspecified or ip.is_multicast or (ip.version == 6 and ip.is_link_local):
                continue
        else:
            continue
        if addr not in kept:
            kept.append(addr)
    non_loopback = [a for a in kept if not ((ip := _first_ip(a)) is not None and ip.is_loopback)]
    return non_loopback or kept


class MdnsCore:
    """The mDNS responder and querier for one host (see the module docstring).

    Drive it with :meth:`start`, :meth:`receive`, :meth:`handle_timer` (at :meth:`next_deadline`) and
    :meth:`set_addrs`; collect :meth:`datagrams_to_send` and :meth:`events` after each call; send
    :meth:`goodbye` when stopping.
    """

    def __init__(self, peer_id: PeerId, rng: random.Random, config: MdnsConfig | None = None) -> None:
        self.config = config or MdnsConfig()
        self.peer_id = peer_id
        self._rng = rng
        self.peer_name = random_peer_name(rng)
        self.stats = MdnsStats()
        self._addrs: list[Multiaddr] = []  # eligible, with /p2p
        self._found: dict[PeerId, _Found] = {}
        self._by_name: dict[str, PeerId] = {}
        self._out: list[Outgoing] = []
        self._events: list[MdnsEvent] = []
        self._started = False
        self._next_query = math.inf
        self._query_interval = self.config.query_initial
        self._last_query = -math.inf
        self._announce_left = 0
        self._next_announce = math.inf
        self._response_due = math.inf
        self._last_response = -math.inf
        self._ratelog = _RateLog()

    # -- names ----------------------------------------------------------------------------------
    @property
    def instance_name(self) -> str:
        """``<peer-name>.<service>``: the name our PTR points at."""
        return f"{self.peer_name}.{self.config.service}"

    @property
    def host_name(self) -> str:
        """``<peer-name>.local``: the target of our SRV and the name of our A/AAAA records."""
        return f"{self.peer_name}.local"

    @property
    def addrs(self) -> list[Multiaddr]:
        """The addresses we announce (each ending in ``/p2p/<our id>``)."""
        return list(self._addrs)

    def peers(self) -> dict[PeerId, tuple[Multiaddr, ...]]:
        """Found peers (not expired, no goodbye) and every address parsed for each."""
        return {peer: f.addrs for peer, f in self._found.items()}

    # -- inputs ---------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Begin: query now, announce now and once more a second later."""
        self._started = True
        self._next_query = now
        self._announce(now)

    def set_addrs(self, addrs: Sequence[Multiaddr], now: float) -> None:
        """Our addresses changed (give all of them: the eligible ones are picked here); announces again."""
        new = [with_peer_id(a, self.peer_id) for a in eligible_addrs(addrs)]
        if new == self._addrs:
            return
        self._addrs = new
        if self._started:
            self._announce(now)

    def receive(self, data: bytes, src: tuple[str, int], now: float) -> None:
        """A datagram from ``src`` (ip, port); never raises for what it holds."""
        self.stats.packets_in += 1
        try:
            msg = dns.decode(data)
        except DecodeError as exc:
            self.stats.malformed += 1
            self._ratelog(now, logging.INFO, "malformed packets", "mdns: malformed packet from %s: %s", src[0], exc)
            return
        if msg.is_response:
            if src[1] != self.config.port:  # RFC 6762 §11: responses come from port 5353; others are ignored
                self.stats.ignored += 1
                log.debug("mdns: ignored a response from %s port %d", src[0], src[1])
                return
            self.stats.responses_in += 1
            self._on_response(msg, src, now)
        else:
            self.stats.queries_in += 1
            self._on_query(msg, src, now)

    def handle_timer(self, now: float) -> None:
        """Do what is due at ``now``: queries, announcements, delayed responses, expiry."""
        if not self._started:
            return
        refresh = [f for f in self._found.values() if f.refresh_at <= now]
        if now >= self._next_query or (refresh and now - self._last_query >= 1.0):
            for f in refresh:
                f.refresh_at = math.inf
            self._send_query(now)
            if now >= self._next_query:
                self._next_query = now + self._query_interval
                if self._query_interval < self.config.query_max:
                    grown = self._query_interval * (1.5 + self._rng.random())
                    self._query_interval = min(grown, self.config.query_max)
        if now >= self._next_announce:
            self._response_due = min(self._response_due, now)
            self._announce_left -= 1
            self._next_announce = now + self.config.announce_interval if self._announce_left > 0 else math.inf
        if now >= self._response_due:
            self._response_due = math.inf
            self._send_response(now)
        for peer, f in list(self._found.items()):
            if f.expiry <= now:
                self._drop(peer, "expired")

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` should run next (None: nothing scheduled)."""
        if not self._started:
            return None
        times = [self._next_query, self._next_announce, self._response_due]
        for f in self._found.values():
            times.append(f.expiry)
            if f.refresh_at < math.inf:
                times.append(max(f.refresh_at, self._last_query + 1.0))
        t = min(times)
        return None if t == math.inf else t

    # -- outputs --------------------------------------------------------------------------------
    def datagrams_to_send(self) -> list[Outgoing]:
        """Datagrams produced since the last call."""
        out, self._out = self._out, []
        return out

    def events(self) -> list[MdnsEvent]:
        """Events produced since the last call."""
        ev, self._events = self._events, []
        return ev

    def goodbye(self) -> bytes | None:
        """Our response with TTL 0 (tell the others we leave); None if we never announced anything."""
        if not self._started or not self._addrs:
            return None
        return self.response(ttl=0)

    # -- building packets -----------------------------------------------------------------------
    def query_packet(self) -> bytes:
        """``<service> PTR?``."""
        return dns.encode(Message(questions=[Question(self.config.service, dns.TYPE_PTR)]))

    def _our_records(self, ttl: int, addrs: Sequence[Multiaddr]) -> tuple[Record, list[Record]]:
        ptr = Record(self.config.service, dns.TYPE_PTR, ttl, self.instance_name)
        txt = tuple(DNSADDR_PREFIX + str(a).encode() for a in addrs)
        port = 4001  # the spec's default; libp2p peers use the TXT strings, not SRV
        ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
        for a in addrs:
            ip = _first_ip(a)
            if ip is not None and ip not in ips and len(ips) < self.config.max_ips:
                ips.append(ip)
        for a in addrs:
            names = [p.name for p in a.protocols()]
            if len(names) > 1 and names[1] in ("tcp", "udp"):
                port = int(str(a.value_for_protocol(names[1])))
                break
        extra = [
            Record(self.instance_name, dns.TYPE_TXT, ttl, txt, cache_flush=True),
            Record(self.instance_name, dns.TYPE_SRV, ttl, SRVData(0, 0, port, self.host_name), cache_flush=True),
        ]
        for ip in ips:
            kind = dns.TYPE_A if ip.version == 4 else dns.TYPE_AAAA
            extra.append(Record(self.host_name, kind, ttl, ip, cache_flush=True))
        return ptr, extra

    def response(self, ttl: int | None = None, *, query: Message | None = None) -> bytes:
        """Our full response (PTR answer; TXT, SRV, A/AAAA additionals) within ``max_packet`` bytes:
        addresses are dropped from the end until it fits. ``query``: echo its id and questions (a
        unicast answer to a one-shot resolver)."""
        ttl = self.config.ttl if ttl is None else ttl
        addrs = [a for a in self._addrs if len(DNSADDR_PREFIX) + len(str(a).encode()) <= 255]
        while True:
            ptr, extra = self._our_records(ttl, addrs)
            msg = Message(flags=dns.FLAG_RESPONSE | dns.FLAG_AUTHORITATIVE, answers=[ptr], additionals=extra)
            if query is not None:
                msg.id, msg.questions = query.id, list(query.questions)
            data = dns.encode(msg)
            if len(data) <= self.config.max_packet or not addrs:
                return data
            addrs = addrs[:-1]

    def _meta_response(self) -> bytes:
        rec = Record(META_QUERY, dns.TYPE_PTR, self.config.ttl, self.config.service)
        return dns.encode(Message(flags=dns.FLAG_RESPONSE | dns.FLAG_AUTHORITATIVE, answers=[rec]))

    # -- internals ------------------------------------------------------------------------------
    def _announce(self, now: float) -> None:
        if not self._addrs:
            return
        self._announce_left = self.config.announce_count
        self._next_announce = now

    def _send_query(self, now: float) -> None:
        self._last_query = now
        self.stats.queries_sent += 1
        self._out.append(Outgoing(self.query_packet()))

    def _send_response(self, now: float) -> None:
        if not self._addrs:
            return
        data = self.response()
        self._last_response = now
        self.stats.responses_sent += 1
        self.stats.largest_response = max(self.stats.largest_response, len(data))
        self._out.append(Outgoing(data))

    def _asks_for_us(self, msg: Message) -> tuple[bool, bool]:
        """(a question our full response answers, the DNS-SD meta question)."""
        service, ours, meta = self.config.service, False, False
        for q in msg.questions:
            if q.cls not in (dns.CLASS_IN, dns.TYPE_ANY):
                continue
            if dns.name_eq(q.name, service) and q.type in (dns.TYPE_PTR, dns.TYPE_ANY):
                ours = True
            elif dns.name_eq(q.name, self.instance_name) and q.type in (dns.TYPE_SRV, dns.TYPE_TXT, dns.TYPE_ANY):
                ours = True
            elif dns.name_eq(q.name, self.host_name) and q.type in (dns.TYPE_A, dns.TYPE_AAAA, dns.TYPE_ANY):
                ours = True
            elif dns.name_eq(q.name, META_QUERY) and q.type in (dns.TYPE_PTR, dns.TYPE_ANY):
                meta = True
        return ours, meta

    def _known_answer(self, msg: Message) -> bool:
        """The asker already holds our PTR with at least half its TTL left (RFC 6762 §7.1)."""
        return any(
            r.type == dns.TYPE_PTR
            and dns.name_eq(r.name, self.config.service)
            and isinstance(r.data, str)
            and dns.name_eq(r.data, self.instance_name)
            and r.ttl >= self.config.ttl / 2
            for r in msg.answers
        )

    def _on_query(self, msg: Message, src: tuple[str, int], now: float) -> None:
        if not self._started or not self._addrs:
            return
        ours, meta = self._asks_for_us(msg)
        if meta:
            self._out.append(Outgoing(self._meta_response(), None if src[1] == self.config.port else src))
        if not ours or self._known_answer(msg):
            return
        if src[1] != self.config.port:  # a one-shot resolver (RFC 6762 §6.7): unicast, echo id and questions
            self._out.append(Outgoing(self.response(query=msg), src))
            return
        if any(q.unicast_response for q in msg.questions):
            self._out.append(Outgoing(self.response(), src))
            return
        self._response_due = min(self._response_due, max(now, self._last_response + self.config.min_response_interval))

    def _on_response(self, msg: Message, src: tuple[str, int], now: float) -> None:
        service = self.config.service
        suffix = "." + service.lower()
        ptr_ttl: dict[str, int] = {}
        txts: dict[str, tuple[int, list[bytes]]] = {}
        for r in msg.records():
            if r.type == dns.TYPE_PTR and dns.name_eq(r.name, service) and isinstance(r.data, str):
                if r.data.lower().endswith(suffix):
                    ptr_ttl[r.data.lower()] = r.ttl
            elif r.type == dns.TYPE_TXT and r.name.lower().endswith(suffix) and isinstance(r.data, tuple):
                ttl, strings = txts.setdefault(r.name.lower(), (r.ttl, []))
                strings.extend(r.data)
                txts[r.name.lower()] = (min(ttl, r.ttl), strings)
        own = self.instance_name.lower()
        for name in dict.fromkeys([*ptr_ttl, *txts]):
            if name == own:
                continue
            ttl = min(ptr_ttl.get(name, self.config.max_ttl), txts.get(name, (self.config.max_ttl, []))[0])
            if ttl == 0:
                peer = self._by_name.get(name)
                if peer is not None:
                    self._drop(peer, "goodbye")
                continue
            if name not in txts:
                continue  # a PTR alone: the TXT comes in another packet (or from a direct query)
            self._on_instance(name, txts[name][1], min(ttl, self.config.max_ttl), src, now)

    def _on_instance(self, name: str, strings: list[bytes], ttl: int, src: tuple[str, int], now: float) -> None:
        peer: PeerId | None = None
        addrs: list[Multiaddr] = []
        for s in strings:
            if not s.startswith(DNSADDR_PREFIX):
                continue
            if len(addrs) >= self.config.max_addrs:
                break
            try:
                addr, owner = split_peer_id(Multiaddr(s[len(DNSADDR_PREFIX) :].decode("utf-8")))
            except Exception as exc:  # the multiaddr package raises several error types for bad input
                self.stats.bad_addrs += 1
                self._ratelog(now, logging.INFO, "bad addresses", "mdns: bad dnsaddr from %s: %r (%s)", src[0], s[:80], exc)
                continue
            if owner is None or (peer is not None and owner != peer):
                self.stats.bad_addrs += 1
                self._ratelog(now, logging.INFO, "bad addresses", "mdns: dnsaddr from %s names no or another peer: %s", src[0], addr)
                continue
            if not addr.to_bytes() or split_peer_id(addr)[1] is not None:  # "/p2p/<id>" alone, or "/p2p" twice
                self.stats.bad_addrs += 1
                self._ratelog(now, logging.INFO, "bad addresses", "mdns: dnsaddr from %s holds no address: %r", src[0], s[:80])
                continue
            peer = owner
            if addr not in addrs:
                addrs.append(addr)
        if peer is None or peer == self.peer_id:
            return
        found = self._found.get(peer)
        if found is None:
            if len(self._found) >= self.config.max_peers:
                self.stats.refused_peers += 1
                self._ratelog(
                    now, logging.WARNING, "refused peers",
                    "mdns: %d peers found already (the limit); %s from %s not kept", len(self._found), peer, src[0],
                )
                return
            if name in self._by_name:  # a name reused by another peer id: the old one is gone
                self._drop(self._by_name[name], "goodbye")
            found = _Found(name, (), ttl, 0.0, 0.0, -math.inf)
            self._found[peer] = found
            self._by_name[name] = peer
        elif found.name != name:
            self._by_name.pop(found.name, None)
            self._by_name[name] = peer
            found.name = name
        changed = tuple(addrs) != found.addrs
        found.addrs, found.ttl = tuple(addrs), ttl
        found.expiry = now + ttl
        found.refresh_at = now + 0.8 * ttl
        if changed or now - found.reported_at >= ttl / 2:
            found.reported_at = now
            self._events.append(MdnsPeerDiscovered(peer, found.addrs, float(ttl), src[0]))

    def _drop(self, peer: PeerId, reason: str) -> None:
        found = self._found.pop(peer, None)
        if found is None:
            return
        if self._by_name.get(found.name) == peer:
            del self._by_name[found.name]
        log.debug("mdns: %s gone (%s)", peer, reason)
        self._events.append(MdnsPeerGone(peer, reason))


__all__ = [
    "DNSADDR_PREFIX",
    "MDNS_PORT",
    "META_QUERY",
    "SERVICE_NAME",
    "MdnsConfig",
    "MdnsCore",
    "MdnsEvent",
    "MdnsPeerDiscovered",
    "MdnsPeerGone",
    "MdnsStats",
    "Outgoing",
    "eligible_addrs",
    "random_peer_name",
]
