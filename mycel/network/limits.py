"""Per-source limits on unauthenticated work (sans-IO): pending handshakes and connection rate per IP.

Before a remote has proven who it is, all we know is its address; so that one address (or one
network) cannot take every handshake slot, :class:`SourceLimiter` admits a new inbound handshake only if

* its source network (IPv4 /32; IPv6 /56 and /48) has fewer than ``max_pending`` handshakes in
  progress (go-libp2p's connection limiter: 8 per IPv4 /32, 8 per IPv6 /56, 64 per /48);
* the network's token bucket has a token (go-libp2p's connection rate limiter: 0.2 connections/s,
  burst 16 per /32 and /56; 0.5/s, burst 80 per /48);
* the global table of pending handshakes (``max_pending``, 64 by default) has room — when it is full,
  the handshake that has made no progress for longest is evicted, if it has been stalled at least
  ``stall_after`` seconds; otherwise the newcomer is refused.

Loopback addresses are exempt from the per-network limits unless ``limit_loopback`` is set (tests set it
and attack from 127.0.0.2...); the global table applies to everyone. Every refusal and eviction is
counted by reason (:meth:`SourceLimiter.stats`). Time comes in as ``now``; no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "PrefixLimit",
    "SourceLimits",
    "SourceLimiter",
    "Ticket",
    "Refusal",
    "WarningThrottle",
    "source_ip",
    "REFUSE_IP_PENDING",
    "REFUSE_IP_RATE",
    "REFUSE_TABLE_FULL",
    "EVICTED_STALLED",
]

REFUSE_IP_PENDING: Final = "ip_pending"  # the source network has max_pending handshakes in progress
REFUSE_IP_RATE: Final = "ip_rate"  # the source network's token bucket is empty
REFUSE_TABLE_FULL: Final = "table_full"  # the global table is full and nothing in it is stalled
EVICTED_STALLED: Final = "evicted_stalled"  # a stalled handshake made room for a newer one


@dataclass(frozen=True)
class PrefixLimit:
    """Limits for every network of ``prefix`` bits: handshakes in progress at once, and a token bucket
    of ``burst`` new connections refilled at ``rate`` per second."""

    prefix: int
    """Bits of the address that name the network (32: one IPv4 address; 56, 48: IPv6 networks)."""
    max_pending: int
    """Handshakes in progress at once from one such network."""
    rate: float
    """New connections per second one network's bucket refills."""
    burst: int
    """The bucket's size: new connections one network may open at once."""

    def __post_init__(self) -> None:
        if self.prefix < 0 or self.max_pending < 1 or self.rate < 0 or self.burst < 1:
            raise ValueError(f"invalid PrefixLimit {self}")


@dataclass(frozen=True)
class SourceLimits:
    """What :class:`SourceLimiter` enforces; defaults are go-libp2p's (REFERENCES §5.1)."""

    ipv4: tuple[PrefixLimit, ...] = (PrefixLimit(32, 8, 0.2, 16),)
    """Per-network limits for IPv4 sources."""
    ipv6: tuple[PrefixLimit, ...] = (PrefixLimit(56, 8, 0.2, 16), PrefixLimit(48, 64, 0.5, 80))
    """Per-network limits for IPv6 sources."""
    limit_loopback: bool = False
    """Apply the per-network limits to loopback sources too (off by default, as in go)."""
    stall_after: float = 1.0
    """Seconds without progress after which a pending handshake may be evicted for a newer one."""
    max_sources: int = 10_000
    """Token buckets kept at most; beyond, the least recently used one is forgotten."""

    def __post_init__(self) -> None:
        if self.stall_after < 0 or self.max_sources < 1:
            raise ValueError("SourceLimits: stall_after must be >= 0 and max_sources >= 1")
        for lim in self.ipv4:
            if lim.prefix > 32:
                raise ValueError(f"SourceLimits.ipv4: prefix {lim.prefix} > 32")
        for lim in self.ipv6:
            if lim.prefix > 128:
                raise ValueError(f"SourceLimits.ipv6: prefix {lim.prefix} > 128")

    def replace(self, **changes: object) -> SourceLimits:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_Key = tuple[int, int, int]  # (ip version, prefix, network number)


class Ticket:
    """One admitted handshake: hand it back to :meth:`SourceLimiter.progress` / :meth:`~SourceLimiter.release`.
    ``source`` is the address it came from; ``data`` is free for the driver (e.g. a cancel scope)."""

    __slots__ = ("source", "keys", "started", "progressed", "data", "live")

    def __init__(self, source: str | None, keys: tuple[_Key, ...], now: float) -> None:
        self.source = source
        self.keys = keys
        self.started = now
        self.progressed = now
        self.data: object = None
        self.live = True


@dataclass(frozen=True)
class Refusal:
    """Why a handshake was not admitted (one of the ``REFUSE_*`` reasons)."""

    reason: str
    """One of the ``REFUSE_*`` constants (the counter it was counted under)."""
    detail: str
    """The limit that was hit, for the log line."""


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class _Counters:
    admitted: int = 0
    refused: dict[str, int] = field(default_factory=dict)


def source_ip(host: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in ``host`` (an IPv4-mapped IPv6 address becomes IPv4); None if it is not an IP."""
    if host is None:
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class SourceLimiter:
    """Admission of inbound handshakes by source (see the module docstring). Bounded: at most
    ``max_pending`` tickets, one pending counter per network with a live ticket, ``max_sources`` buckets.
    """

    def __init__(self, limits: SourceLimits, max_pending: int) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.limits = limits
        self.max_pending = max_pending
        self._pending: dict[Ticket, None] = {}  # insertion order = admission order
        self._per_net: dict[_Key, int] = {}
        self._buckets: OrderedDict[_Key, _Bucket] = OrderedDict()
        self._limit_of: dict[tuple[int, int], PrefixLimit] = {}
        for version, lims in ((4, limits.ipv4), (6, limits.ipv6)):
            for lim in lims:
                self._limit_of[(version, lim.prefix)] = lim
        self._counts = _Counters()
        self._key_cache: dict[str | None, tuple[_Key, ...]] = {}  # source -> its networks; <= max_sources

    @property
    def pending(self) -> int:
        """Handshakes admitted and not yet released."""
        return len(self._pending)

    def stats(self) -> dict[str, int]:
        """Counters: ``admitted``, ``pending``, one per refusal/eviction reason (0 if none) and one per
        reason given to :meth:`count`."""
        out = {"admitted": self._counts.admitted, "pending": len(self._pending)}
        for reason in (REFUSE_IP_PENDING, REFUSE_IP_RATE, REFUSE_TABLE_FULL, EVICTED_STALLED):
            out[reason] = 0
        out.update(self._counts.refused)
        return out

    def count(self, reason: str) -> None:
        """Count a refusal decided elsewhere (e.g. a stage timeout) under ``reason``."""
        refused = self._counts.refused
        refused[reason] = refused.get(reason, 0) + 1

    def _keys(self, host: str | None) -> tuple[_Key, ...]:
        keys = self._key_cache.get(host)
        if keys is None:
            keys = self._networks(host)
            if len(self._key_cache) >= self.limits.max_sources:
                self._key_cache.clear()
            self._key_cache[host] = keys
        return keys

    def _networks(self, host: str | None) -> tuple[_Key, ...]:
        ip = source_ip(host)
        if ip is None or (ip.is_loopback and not self.limits.limit_loopback):
            return ()
        version = ip.version
        lims = self.limits.ipv4 if version == 4 else self.limits.ipv6
        bits = 32 if version == 4 else 128
        value = int(ip)
        return tuple((version, lim.prefix, value >> (bits - lim.prefix)) for lim in lims)

    def check(self, host: str | None, now: float) -> Refusal | None:
        """Would :meth:`admit` refuse ``host`` now? The refusal (counted) or None; spends nothing. Cheap
        enough to run on every datagram of a flood before parsing it."""
        keys = self._keys(host)
        for key in keys:
            lim = self._limit_of[(key[0], key[1])]
            if self._per_net.get(key, 0) >= lim.max_pending:
                return self._refuse(REFUSE_IP_PENDING, f"{lim.max_pending} handshakes pending from its /{key[1]}")
            if self._bucket(key, now).tokens < 1.0:
                return self._refuse(REFUSE_IP_RATE, f"over {lim.rate}/s (burst {lim.burst}) from its /{key[1]}")
        if len(self._pending) >= self.max_pending:
            if now - min(self._pending, key=_progressed).progressed < self.limits.stall_after:
                return self._refuse(REFUSE_TABLE_FULL, f"{self.max_pending} handshakes pending, none stalled")
        return None

    def spend(self, host: str | None, now: float) -> Refusal | None:
        """Charge ``host`` one connection attempt that keeps no state (answered statelessly, e.g. with
        a QUIC Version Negotiation): the refusal :meth:`check` gives, or None and a token spent."""
        refusal = self.check(host, now)
        if refusal is None:
            for key in self._keys(host):
                self._bucket(key, now).tokens -= 1.0
        return refusal

    def admit(self, host: str | None, now: float) -> tuple[Ticket | Refusal, list[Ticket]]:
        """Decide on a new handshake from ``host`` at ``now``: a :class:`Ticket` (and the stalled
        tickets evicted to make room: the driver must abort those), or a :class:`Refusal`."""
        refusal = self.spend(host, now)
        if refusal is not None:
            return refusal, []
        keys = self._keys(host)
        victim = min(self._pending, key=_progressed) if len(self._pending) >= self.max_pending else None
        evicted: list[Ticket] = []
        if victim is not None:
            self.release(victim)
            self.count(EVICTED_STALLED)
            evicted.append(victim)
        ticket = Ticket(host, keys, now)
        self._pending[ticket] = None
        for key in keys:
            self._per_net[key] = self._per_net.get(key, 0) + 1
        self._counts.admitted += 1
        return ticket, evicted

    def progress(self, ticket: Ticket, now: float) -> None:
        """``ticket``'s handshake finished a stage: it is not stalled."""
        ticket.progressed = now

    def release(self, ticket: Ticket) -> None:
        """``ticket``'s handshake ended (done, failed or evicted); idempotent."""
        if not ticket.live:
            return
        ticket.live = False
        self._pending.pop(ticket, None)
        for key in ticket.keys:
            left = self._per_net.get(key, 0) - 1
            if left > 0:
                self._per_net[key] = left
            else:
                self._per_net.pop(key, None)

    def _refuse(self, reason: str, detail: str) -> Refusal:
        self.count(reason)
        return Refusal(reason, detail)

    def _bucket(self, key: _Key, now: float) -> _Bucket:
        lim = self._limit_of[(key[0], key[1])]
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(lim.burst), now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.limits.max_sources:
                self._buckets.popitem(last=False)  # least recently used: that source starts afresh
        else:
            self._buckets.move_to_end(key)
            if now > bucket.at:
                bucket.tokens = min(float(lim.burst), bucket.tokens + (now - bucket.at) * lim.rate)
                bucket.at = now
        return bucket


def _progressed(ticket: Ticket) -> float:
    return ticket.progressed


class WarningThrottle:
    """At most one WARNING per ``interval`` seconds per reason; the ones held back are counted and named
    in the next line. ``now`` comes in; the logger is the caller's."""

    def __init__(self, logger: logging.Logger, interval: float = 5.0, max_reasons: int = 64) -> None:
        self._log = logger
        self.interval = interval
        self._max = max_reasons
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warn(self, reason: str, now: float, msg: str, *args: object) -> bool:
        """Log ``msg % args`` at WARNING unless ``reason`` was logged less than ``interval`` ago;
        True if it was logged."""
        last = self._last.get(reason)
        if last is not None and now - last < self.interval:
            self._held[reason] = self._held.get(reason, 0) + 1
            return False
        if last is None and len(self._last) >= self._max:
            self._last.clear()
            self._held.clear()
        held = self._held.pop(reason, 0)
        self._last[reason] = now
        if held:
            self._log.warning(msg + " (and %d more like it held back)", *args, held)
        else:
            self._log.warning(msg, *args)
        return True
