"""``/dnsaddr`` resolution: a domain's ``_dnsaddr.<domain>`` TXT records name multiaddrs.

The multiaddr dnsaddr spec (multiformats/multiaddr ``protocols/DNSADDR.md``): the TXT records of
``_dnsaddr.<domain>`` are strings ``dnsaddr=<multiaddr>``; what follows ``/dnsaddr/<domain>`` in the
address being resolved (usually ``/p2p/<id>``) is a suffix every answer must end with, so
``/dnsaddr/bootstrap.libp2p.io/p2p/QmA`` keeps only QmA's records. An answer that is itself a
``/dnsaddr`` is resolved in turn, as go, js and rust do.

Two parts:

* :class:`DnsaddrWalk`, sans-IO: it says which names to look up and takes the TXT strings that came
  back; it parses, filters, deduplicates and bounds the walk (depth, lookups, results, a domain is
  looked up once: a loop ends). No I/O, no clock.
* :class:`DnsaddrResolver`, the trio driver: dnspython's async resolver (dnspython runs on trio),
  with configurable nameservers (``HostConfig.dns_nameservers``; tests point it at a server of their own).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from multiaddr import Multiaddr

from mycel.core.addrs import as_multiaddr
from mycel.core.errors import MycelError

if TYPE_CHECKING:
    import dns.asyncresolver

log = logging.getLogger("mycel.discovery.dnsaddr")

TXT_PREFIX = "dnsaddr="
"""What a TXT string naming a multiaddr starts with (anything else in the record set is ignored)."""
MAX_DEPTH = 8
"""Nested ``/dnsaddr`` levels followed (bootstrap.libp2p.io uses 2); deeper answers are dropped."""
MAX_LOOKUPS = 32
"""TXT lookups one resolution makes at most (rust-libp2p's bound); further nested names are dropped."""
MAX_RESULTS = 100
"""Addresses one resolution returns at most; further ones are dropped (a hostile zone cannot flood us)."""
MAX_TXT_STRING = 1024
"""A TXT string longer than this (joined) is ignored: no multiaddr worth dialing is that long."""
DEFAULT_TIMEOUT = 5.0
"""Seconds one TXT lookup may take (all nameservers and retries included)."""


class DnsaddrError(MycelError):
    """A ``/dnsaddr`` could not be resolved at all (every lookup failed, or nothing matched)."""


def is_dnsaddr(addr: Multiaddr) -> bool:
    """True when ``addr`` starts with ``/dnsaddr/<domain>``."""
    first = next(iter(addr.items()), None)
    return first is not None and first[0].name == "dnsaddr"


def split_dnsaddr(addr: Multiaddr) -> tuple[str, Multiaddr | None]:
    """``/dnsaddr/example.com/p2p/QmA`` → (``"example.com"``, ``/p2p/QmA``); the suffix is None when
    nothing follows the domain. Raises ValueError when ``addr`` is no ``/dnsaddr``."""
    parts = list(addr.items())
    if not parts or parts[0][0].name != "dnsaddr":
        raise ValueError(f"{addr} is not a /dnsaddr address")
    domain = str(parts[0][1]).rstrip(".")
    tail = addr.split()[1:]
    return domain, Multiaddr(b"".join(c.to_bytes() for c in tail)) if tail else None


def txt_name(domain: str) -> str:
    """The DNS name whose TXT records a ``/dnsaddr/<domain>`` resolves through."""
    return f"_dnsaddr.{domain.rstrip('.')}"


def parse_txt(strings: Iterable[bytes | Sequence[bytes]]) -> tuple[list[Multiaddr], int]:
    """The multiaddrs named by TXT records (each a bytes string, or the character-strings of one record,
    joined as DNS splits long ones); returns (addresses, records that started ``dnsaddr=`` but were
    unusable). Records not starting ``dnsaddr=`` are someone else's and ignored silently."""
    out: list[Multiaddr] = []
    bad = 0
    for record in strings:
        raw = record if isinstance(record, bytes) else b"".join(record)
        if len(raw) > MAX_TXT_STRING:
            bad += raw.startswith(TXT_PREFIX.encode())
            continue
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            bad += raw.startswith(TXT_PREFIX.encode())
            continue
        if not text.startswith(TXT_PREFIX):
            continue
        try:
            out.append(Multiaddr(text[len(TXT_PREFIX) :]))
        except Exception:  # the multiaddr package raises several kinds on junk
            bad += 1
    return out, bad


def ends_with(addr: Multiaddr, suffix: Multiaddr | None) -> bool:
    """True when ``addr``'s last components are ``suffix``'s (always when ``suffix`` is None)."""
    if suffix is None:
        return True
    tail = [c.to_bytes() for c in suffix.split()]
    parts = [c.to_bytes() for c in addr.split()]
    return len(tail) <= len(parts) and parts[len(parts) - len(tail) :] == tail


@dataclass
class _Pending:
    domain: str
    suffix: Multiaddr | None
    depth: int


class DnsaddrWalk:
    """The sans-IO walk of one ``/dnsaddr`` resolution.

    Loop: ``name = walk.next_lookup()`` (None: done), look up TXT records of ``name``, hand them to
    :meth:`answer` (or call :meth:`failed`). :attr:`results` holds the addresses found (in answer order,
    no duplicates, at most ``max_results``); :attr:`dropped` counts answers refused by a bound or filter.
    """

    def __init__(
        self,
        addr: str | Multiaddr,
        *,
        max_depth: int = MAX_DEPTH,
        max_lookups: int = MAX_LOOKUPS,
        max_results: int = MAX_RESULTS,
    ) -> None:
        addr = as_multiaddr(addr)
        self.max_depth = max_depth
        self.max_lookups = max_lookups
        self.max_results = max_results
        self.results: list[Multiaddr] = []
        """Addresses found so far (not ``/dnsaddr``), each once."""
        self.dropped = 0
        """Answers not taken: wrong suffix, malformed, too deep, over a bound, or a domain seen before."""
        self.lookups = 0
        """TXT lookups handed out."""
        self.failures = 0
        """Lookups that failed (no such name, timeout, ...)."""
        self._seen_results: set[bytes] = set()
        self._seen_domains: set[str] = set()
        self._queue: deque[_Pending] = deque()
        self._asked: dict[str, _Pending] = {}
        if is_dnsaddr(addr):
            self._push(addr, 0)
        else:
            self._add_result(addr)

    @property
    def done(self) -> bool:
        """No lookup is pending or in flight."""
        return not self._queue and not self._asked

    def next_lookup(self) -> str | None:
        """The next DNS name to look up TXT records of, or None when nothing is left to ask now."""
        while self._queue:
            pending = self._queue.popleft()
            if self.lookups >= self.max_lookups:
                self.dropped += 1
                log.debug("dnsaddr %s: lookup bound (%d) reached", pending.domain, self.max_lookups)
                continue
            self.lookups += 1
            name = txt_name(pending.domain)
            self._asked[name] = pending
            return name
        return None

    def answer(self, name: str, records: Iterable[bytes | Sequence[bytes]]) -> None:
        """The TXT records of ``name`` (as :meth:`next_lookup` gave it)."""
        pending = self._asked.pop(name)
        addrs, bad = parse_txt(records)
        if bad:
            log.info("dnsaddr %s: %d malformed dnsaddr= records ignored", pending.domain, bad)
            self.dropped += bad
        for addr in addrs:
            if not ends_with(addr, pending.suffix):
                self.dropped += 1
                continue
            if is_dnsaddr(addr):
                if pending.depth + 1 > self.max_depth:
                    self.dropped += 1
                    log.info("dnsaddr %s: nested deeper than %d levels; %s dropped", pending.domain, self.max_depth, addr)
                    continue
                self._push(addr, pending.depth + 1)
            else:
                self._add_result(addr)

    def failed(self, name: str, reason: str) -> None:
        """The lookup of ``name`` failed (no such name, no answer, timeout)."""
        pending = self._asked.pop(name)
        self.failures += 1
        log.debug("dnsaddr %s: lookup failed: %s", pending.domain, reason)

    def _push(self, addr: Multiaddr, depth: int) -> None:
        domain, suffix = split_dnsaddr(addr)
        key = domain.lower()
        if key in self._seen_domains:  # a loop, or a second path to a domain already asked
            self.dropped += 1
            return
        self._seen_domains.add(key)
        self._queue.append(_Pending(domain, suffix, depth))

    def _add_result(self, addr: Multiaddr) -> None:
        raw = addr.to_bytes()
        if raw in self._seen_results:
            return
        if len(self.results) >= self.max_results:
            self.dropped += 1
            return
        self._seen_results.add(raw)
        self.results.append(addr)


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"127.0.0.1"``, ``"127.0.0.1:5353"``, ``"::1"`` or ``"[::1]:5353"`` → (address, port).
    Raises ValueError for anything else."""
    import ipaddress

    host, port = text, 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad nameserver {text!r}")
        if rest:
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"bad port in nameserver {text!r}")
    return host, port


class DnsaddrResolver:
    """Resolves ``/dnsaddr`` multiaddrs with dnspython's async resolver (on trio).

    ``nameservers``: ``"ip"`` or ``"ip:port"`` strings; empty means the system's (``/etc/resolv.conf``).
    ``timeout``: seconds for one TXT lookup. Lookups of one resolution run one after another (a walk is
    at most :data:`MAX_LOOKUPS` lookups).
    """

    def __init__(self, nameservers: Sequence[str] = (), *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.nameservers = tuple(nameservers)
        for ns in self.nameservers:
            parse_nameserver(ns)
        self.timeout = timeout
        self._resolver: dns.asyncresolver.Resolver | None = None

    def _dns(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            import dns.asyncresolver
            import dns.nameserver

            if self.nameservers:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(ns)) for ns in self.nameservers]
            else:
                try:
                    resolver = dns.asyncresolver.Resolver()
                except Exception as exc:  # no resolv.conf (a container): nothing to ask
                    raise DnsaddrError(f"no system DNS configuration: {exc}") from exc
            resolver.lifetime = self.timeout
            resolver.timeout = self.timeout
            resolver.cache = None
            self._resolver = resolver
        return self._resolver

    async def lookup_txt(self, name: str) -> list[tuple[bytes, ...]]:
        """The TXT records of ``name``, each as its character-strings. Raises DnsaddrError."""
        import dns.exception
        import dns.resolver

        resolver = self._dns()
        try:
            answer = await resolver.resolve(name, "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as exc:
            raise DnsaddrError(f"{name}: no TXT records ({type(exc).__name__})") from None
        except (dns.exception.DNSException, OSError) as exc:  # (OSError: a nameserver we cannot send to)
            raise DnsaddrError(f"{name}: {type(exc).__name__}: {exc}") from None
        return [tuple(rdata.strings) for rdata in answer]  # TXT rdata: its character-strings

    async def resolve(self, addr: str | Multiaddr) -> list[Multiaddr]:
        """Every address ``addr`` stands for: itself unless it is a ``/dnsaddr``, else the addresses its
        TXT records name (recursively, filtered by its suffix, bounded as :class:`DnsaddrWalk` says).
        Raises DnsaddrError when a ``/dnsaddr`` yields nothing."""
        addr = as_multiaddr(addr)
        walk = DnsaddrWalk(addr)
        while (name := walk.next_lookup()) is not None:
            try:
                records = await self.lookup_txt(name)
            except DnsaddrError as exc:
                walk.failed(name, str(exc))
                continue
            walk.answer(name, records)
        if not walk.results:
            raise DnsaddrError(
                f"{addr} resolved to no address ({walk.lookups} lookups, {walk.failures} failed, "
                f"{walk.dropped} answers dropped)"
            )
        return walk.results


__all__ = [
    "DnsaddrError",
    "DnsaddrResolver",
    "DnsaddrWalk",
    "ends_with",
    "is_dnsaddr",
    "parse_nameserver",
    "parse_txt",
    "split_dnsaddr",
    "txt_name",
]
