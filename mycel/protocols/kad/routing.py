"""The Kademlia routing table, sans-IO: k-buckets over XOR distance from our own key, check-before-add,
a bounded replacement cache per bucket, refresh timers, and the IP diversity filter against eclipse attacks.

Nothing here does I/O, reads a clock or draws randomness: the driver passes ``now`` (seconds, any monotonic
origin) and a :class:`random.Random`, and acts on the values returned (:class:`CheckNew`, :class:`PingRequest`,
:class:`RefreshTarget`).

**Layout.** go-libp2p-kbucket's unfolding list: bucket ``i`` holds the peers whose common prefix length (CPL)
with our key is exactly ``i``, except the last bucket, which holds every peer with CPL >= its index (it covers
our own key). When the last bucket is full and a peer for it arrives, it splits (peers with a longer CPL move to
a new last bucket) until the new last bucket has room, so closer buckets are finer and every bucket holds at most
``k`` peers. Chosen over rust-libp2p's fixed 256 buckets because only as many buckets exist as the table uses
(``buckets()`` is the health report as is) and refresh tracks exactly the CPLs in use, as go does; the peers
admitted are the same in practice (k per CPL below the last bucket).

**What the driver enforces.** Only peers that advertise the kad protocol through identify (DHT servers) are
offered; the IPs passed are the remote IPs of the peer's *connections* (go's ``rtPeerIPGroupFilter`` uses
``ConnsToPeer(p).RemoteMultiaddr()``), never addresses the peer claims, which cost an attacker nothing.

**Driver flow.** A connected DHT server: ``offer(peer, ips, now)`` -> :class:`CheckNew` -> trivial FIND_NODE ->
answered: ``offer(..., verified=True)`` (a peer that answered one of our queries is offered verified directly).
A full bucket answers :class:`PingRequest`: FIND_NODE its stalest peer, then ``check_result(peer, alive, now)``;
report every query outcome to a table peer the same way. Timers: sleep until ``next_refresh()``, then run a
self-lookup when ``self_lookup_due(now)`` (then ``mark_self_lookup``) and a lookup per ``due_refreshes(now, rng)``
target; ``note_lookup(key, now)`` after any lookup (go's order: self-lookup first, then the buckets).

**Bounds.** ``k`` peers per bucket (at most 257 buckets); ``replacement_cache_size`` candidates per CPL,
the oldest dropped when a newer one arrives, each expiring after ``replacement_ttl``; one outstanding liveness
check per bucket, forgotten after ``check_timeout``; the diversity filter's counters are bounded by the table.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import heapq
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from random import Random
from typing import TypeVar

from mycel.core.peer_id import PeerId
from mycel.protocols.kad.distance import KEY_BITS, common_prefix_length, peer_key

K_VALUE = 20
"""Peers per bucket (spec and go)."""
REPLACEMENT_CACHE_SIZE = 5
"""Replacement candidates kept per CPL (bounded; the oldest is dropped for a newer one)."""
REFRESH_INTERVAL = 600.0
"""Seconds between refreshes of a bucket and between self-lookups (go: 10 min)."""
CHECK_TIMEOUT = 10.0
"""Seconds an outstanding liveness check blocks a new one for the same bucket (go: 10 s query timeout)."""
MAX_REFRESH_CPL = 15
"""Highest CPL refreshed (go's ``maxCplForRefresh``): a key at CPL c costs about 2**(c+1) SHA-256 tries."""
MAX_PER_GROUP = 3
"""Diversity: peers per IP group in the whole table (go's amino default)."""
MAX_PER_GROUP_PER_CPL = 2
"""Diversity: peers per IP group with the same CPL (go's amino default)."""
LEGACY_CLASS_A = frozenset({12, 17, 19, 38, 48, 53, 56, 73})
"""IPv4 /8 blocks grouped as one /8 instead of by /16 (go-libp2p-kbucket ``peerdiversity/filter.go``)."""

_SHA256_MULTIHASH = b"\x12\x20"
_MAX_KEY_TRIES_FACTOR = 64


# --------------------------------------------------------------------------------------------------------------
# IP groups and the diversity filter


@functools.lru_cache(maxsize=8192)  # pure; every response's peers are grouped, and the same IPs come back
def ip_group(ip: str, *, group_private: bool = False) -> str | None:
    """The diversity group of an IP address: IPv4 /16 (/8 in the legacy class-A blocks), IPv6 /32.

    go groups IPv6 by ASN and falls back to /32; no ASN table ships here, so /32 always. IPv4-mapped IPv6
    addresses are grouped as IPv4. Non-public addresses (loopback, private, link-local, CGNAT, the
    198.18.0.0/15 benchmark range...) give ``None`` (no group: they neither count nor are limited) unless
    ``group_private`` is set, which groups them like public ones (for tests on 127.0.0.1 and 198.18.0.0/15).
    Raises :class:`ValueError` for a string that is not an IP address.
    """
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if not group_private and not addr.is_global:
        return None
    if isinstance(addr, ipaddress.IPv4Address):
        first = int(addr) >> 24
        if first in LEGACY_CLASS_A:
            return f"{first}.0.0.0/8"
        return str(ipaddress.IPv4Network((int(addr) & 0xFFFF0000, 16)))
    return str(ipaddress.IPv6Network((int(addr) & ~((1 << 96) - 1), 32)))


class DiversityFilter:
    """go's peer diversity filter for a routing table: at most ``max_per_group`` peers per IP group in the
    table and ``max_per_group_per_cpl`` per group among peers of one CPL.

    A peer with several IPs counts once in each distinct group, and must fit in all of them. A peer with no
    usable IP is refused (as go does) unless ``admit_without_ip`` (for non-IP transports such as the memory
    transport). Stateful: one filter per table, never shared.
    """

    def __init__(
        self,
        *,
        max_per_group: int = MAX_PER_GROUP,
        max_per_group_per_cpl: int = MAX_PER_GROUP_PER_CPL,
        group_private: bool = False,
        admit_without_ip: bool = False,
    ) -> None:
        """Set the caps; ``group_private`` groups non-public addresses too (see :func:`ip_group`)."""
        self.max_per_group = max_per_group
        self.max_per_group_per_cpl = max_per_group_per_cpl
        self.group_private = group_private
        self.admit_without_ip = admit_without_ip
        self._table: dict[str, int] = {}
        self._per_cpl: dict[tuple[int, str], int] = {}
        self._members: dict[PeerId, tuple[int, frozenset[str]]] = {}

    def groups(self, ips: Sequence[str]) -> frozenset[str] | None:
        """The groups of a peer's IPs, or ``None`` when the peer must be refused (no IP, or one unparseable)."""
        if not ips:
            return frozenset() if self.admit_without_ip else None
        out: set[str] = set()
        for ip in ips:
            try:
                group = ip_group(ip, group_private=self.group_private)
            except ValueError:
                return None
            if group is not None:
                out.add(group)
        return frozenset(out)

    def allows(self, cpl: int, groups: Iterable[str]) -> bool:
        """Whether a peer at ``cpl`` in ``groups`` fits under both caps now."""
        for group in groups:
            if self._table.get(group, 0) >= self.max_per_group:
                return False
            if self._per_cpl.get((cpl, group), 0) >= self.max_per_group_per_cpl:
                return False
        return True

    def add(self, peer: PeerId, cpl: int, groups: frozenset[str]) -> None:
        """Count ``peer`` in its groups (after :meth:`allows`; adding a counted peer again is a no-op)."""
        if peer in self._members:
            return
        self._members[peer] = (cpl, groups)
        for group in groups:
            self._table[group] = self._table.get(group, 0) + 1
            self._per_cpl[(cpl, group)] = self._per_cpl.get((cpl, group), 0) + 1

    def remove(self, peer: PeerId) -> None:
        """Stop counting ``peer`` (unknown peers are ignored)."""
        member = self._members.pop(peer, None)
        if member is None:
            return
        cpl, groups = member
        for group in groups:
            _decrement(self._table, group)
            _decrement(self._per_cpl, (cpl, group))

    def group_count(self, group: str) -> int:
        """Peers counted in ``group`` in the whole table."""
        return self._table.get(group, 0)

    def cpl_group_count(self, cpl: int, group: str) -> int:
        """Peers counted in ``group`` at ``cpl``."""
        return self._per_cpl.get((cpl, group), 0)

    def stats(self) -> dict[int, dict[str, int]]:
        """Per CPL, the peers counted per group (go's ``GetDiversityStats``), CPLs ascending."""
        out: dict[int, dict[str, int]] = {}
        for (cpl, group), n in sorted(self._per_cpl.items()):
            out.setdefault(cpl, {})[group] = n
        return out


_K = TypeVar("_K")


def _decrement(counts: dict[_K, int], key: _K) -> None:
    n = counts.get(key, 0) - 1
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)


_P = TypeVar("_P")


def filter_results(
    peers_with_ips: Sequence[tuple[_P, Sequence[str]]], max_per_group: int, *, group_private: bool = False
) -> list[tuple[_P, Sequence[str]]]:
    """Drop every peer of an over-represented IP group from one query response (go's
    ``filterPeersByIPDiversity``): when more than ``max_per_group`` peers share a group, *all* peers with an
    address in that group go, so a Sybil flood from one /16 contributes nothing (keeping the first few would
    let the attacker pick which). Order is kept; unparseable and (unless ``group_private``) non-public
    addresses are ignored; ``max_per_group <= 0`` disables the filter.
    """
    if max_per_group <= 0:
        return list(peers_with_ips)
    members: dict[str, set[int]] = {}
    for index, (_peer, ips) in enumerate(peers_with_ips):
        for ip in ips:
            try:
                group = ip_group(ip, group_private=group_private)
            except ValueError:
                continue
            if group is not None:
                members.setdefault(group, set()).add(index)
    dropped: set[int] = set()
    for indices in members.values():
        if len(indices) > max_per_group:
            dropped |= indices
    return [item for index, item in enumerate(peers_with_ips) if index not in dropped]


# --------------------------------------------------------------------------------------------------------------
# Results returned to the driver


@dataclass(frozen=True, slots=True)
class Added:
    """``peer`` was inserted into the table."""

    peer: PeerId


@dataclass(frozen=True, slots=True)
class Updated:
    """``peer`` was already in the table; its last-seen time (and first usefulness) were recorded."""

    peer: PeerId


@dataclass(frozen=True, slots=True)
class CheckNew:
    """Check-before-add: send ``peer`` a trivial FIND_NODE; on an answer offer it again with ``verified=True``."""

    peer: PeerId


@dataclass(frozen=True, slots=True)
class PingRequest:
    """The bucket of ``candidate`` is full: ``candidate`` waits in the replacement cache; check ``peer`` (the
    bucket's least recently seen entry) with a trivial FIND_NODE and report through
    :meth:`RoutingTable.check_result`."""

    peer: PeerId
    candidate: PeerId


@dataclass(frozen=True, slots=True)
class Cached:
    """The bucket of ``peer`` is full and a check of it is already under way: ``peer`` waits as a replacement."""

    peer: PeerId


@dataclass(frozen=True, slots=True)
class Rejected:
    """``peer`` was refused; ``reason`` is ``"self"``, ``"no usable IP address"``, ``"diversity"`` or
    ``"bucket full"``."""

    peer: PeerId
    reason: str


AddResult = Added | Updated | CheckNew | PingRequest | Cached | Rejected
"""What :meth:`RoutingTable.offer` returns."""


@dataclass(frozen=True, slots=True)
class Eviction:
    """What :meth:`RoutingTable.check_result` or :meth:`RoutingTable.remove` did: ``evicted`` left the table
    (or ``None``) and ``promoted`` came in from the replacement cache (or ``None``)."""

    evicted: PeerId | None = None
    promoted: PeerId | None = None


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A snapshot of one table entry: ``peer``, its keyspace ``key`` and ``cpl`` with ours, ``added_at``,
    ``last_seen`` (last successful contact) and ``last_useful`` (last time it helped a query; ``None`` until
    then), all in the driver's ``now`` units."""

    peer: PeerId
    key: int
    cpl: int
    added_at: float
    last_seen: float
    last_useful: float | None


@dataclass(frozen=True, slots=True)
class RefreshTarget:
    """A lookup that refreshes bucket ``cpl``: FIND_NODE for ``key`` (bytes shaped as a SHA-256 peer id, since
    the remote hashes what it receives) whose keyspace position ``position`` has exactly ``cpl`` leading bits
    in common with ours."""

    cpl: int
    key: bytes
    position: int


# --------------------------------------------------------------------------------------------------------------
# The table


class _Default(enum.Enum):
    DIVERSITY = enum.auto()


class _Entry:
    __slots__ = ("peer", "key", "cpl", "added_at", "last_seen", "last_useful")

    def __init__(self, peer: PeerId, key: int, cpl: int, now: float) -> None:
        self.peer = peer
        self.key = key
        self.cpl = cpl
        self.added_at = now
        self.last_seen = now
        self.last_useful: float | None = None


class _Candidate:
    __slots__ = ("peer", "key", "groups", "seen_at")

    def __init__(self, peer: PeerId, key: int, groups: frozenset[str], seen_at: float) -> None:
        self.peer = peer
        self.key = key
        self.groups = groups
        self.seen_at = seen_at


class _Bucket:
    __slots__ = ("entries", "checking", "checking_since")

    def __init__(self) -> None:
        self.entries: dict[PeerId, _Entry] = {}
        self.checking: PeerId | None = None
        self.checking_since = 0.0


class RoutingTable:
    """The k-bucket routing table of ``local`` (see the module docstring for layout, bounds and duties).

    ``diversity`` defaults to a fresh :class:`DiversityFilter` with go's caps; ``None`` disables it. ``now``
    starts the refresh clock: every bucket and the self-lookup are due at once (a new table bootstraps).
    """

    def __init__(
        self,
        local: PeerId,
        *,
        k: int = K_VALUE,
        diversity: DiversityFilter | None | _Default = _Default.DIVERSITY,
        now: float,
        replacement_cache_size: int = REPLACEMENT_CACHE_SIZE,
        replacement_ttl: float = REFRESH_INTERVAL,
        check_timeout: float = CHECK_TIMEOUT,
        refresh_interval: float = REFRESH_INTERVAL,
        max_refresh_cpl: int = MAX_REFRESH_CPL,
    ) -> None:
        """Create an empty table; see the class docstring."""
        if k < 1:
            raise ValueError("k must be at least 1")
        self.local = local
        self.local_key = peer_key(local)
        self.k = k
        self.diversity = DiversityFilter() if isinstance(diversity, _Default) else diversity
        self.replacement_cache_size = replacement_cache_size
        self.replacement_ttl = replacement_ttl
        self.check_timeout = check_timeout
        self.refresh_interval = refresh_interval
        self.max_refresh_cpl = max_refresh_cpl
        self._buckets: list[_Bucket] = [_Bucket()]
        self._replacements: dict[int, dict[PeerId, _Candidate]] = {}
        self._size = 0
        self._created = now
        self._refreshed: dict[int, float] = {}
        self._self_lookup_at: float | None = None

    # ---- queries -------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._size

    def __contains__(self, peer: object) -> bool:
        return isinstance(peer, PeerId) and self.contains(peer)

    def contains(self, peer: PeerId) -> bool:
        """Whether ``peer`` is in the table (replacement candidates are not)."""
        return self._find(peer) is not None

    def peers(self) -> list[PeerId]:
        """Every peer in the table, farthest bucket first."""
        return [peer for bucket in self._buckets for peer in bucket.entries]

    def buckets(self) -> list[int]:
        """Peers per bucket: index ``i`` counts CPL ``i``, the last index CPL >= it (the table's health)."""
        return [len(bucket.entries) for bucket in self._buckets]

    def info(self, peer: PeerId) -> PeerInfo | None:
        """A snapshot of ``peer``'s entry, or ``None`` when it is not in the table."""
        entry = self._find(peer)
        if entry is None:
            return None
        return PeerInfo(entry.peer, entry.key, entry.cpl, entry.added_at, entry.last_seen, entry.last_useful)

    def last_seen(self, peer: PeerId) -> float | None:
        """When ``peer`` last answered us or was offered, or ``None`` when not in the table."""
        entry = self._find(peer)
        return None if entry is None else entry.last_seen

    def last_useful(self, peer: PeerId) -> float | None:
        """When ``peer`` last helped a query (``None`` if never, or not in the table)."""
        entry = self._find(peer)
        return None if entry is None else entry.last_useful

    def replacements(self) -> list[PeerId]:
        """The replacement candidates waiting, all CPLs (oldest first within a CPL)."""
        return [peer for cpl in sorted(self._replacements) for peer in self._replacements[cpl]]

    def closest(self, key: int, count: int) -> list[PeerId]:
        """The ``count`` peers closest to keyspace position ``key`` by XOR distance, closest first (exact).

        Buckets are read in distance classes: the target's own bucket (CPL with the target > c), then every
        farther-indexed bucket (CPL exactly c), then buckets c-1, c-2, ... (CPL i each), stopping once a class
        fills ``count``; only the collected peers are sorted.
        """
        if count <= 0 or self._size == 0:
            return []
        last = len(self._buckets) - 1
        index = min(common_prefix_length(key, self.local_key), last)
        collected: list[_Entry] = list(self._buckets[index].entries.values())
        if len(collected) < count:
            for bucket in self._buckets[index + 1 :]:
                collected.extend(bucket.entries.values())
            i = index - 1
            while len(collected) < count and i >= 0:
                collected.extend(self._buckets[i].entries.values())
                i -= 1
        best = heapq.nsmallest(count, collected, key=lambda entry: entry.key ^ key)
        return [entry.peer for entry in best]

    # ---- admission -----------------------------------------------------------------------------------------

    def offer(self, peer: PeerId, addrs_ips: Sequence[str], now: float, *, verified: bool = False) -> AddResult:
        """Offer a DHT server we are connected to; ``addrs_ips`` are the remote IPs of its connections.

        Present already: its last-seen time is updated (and, when ``verified``, its first usefulness, as go
        does). Otherwise, unless ``verified`` (it answered a query of ours), the answer is :class:`CheckNew`
        when it could enter (room in its bucket, a split, or a free replacement slot). When verified: inserted
        if its bucket has room (splitting the last bucket if needed), else kept as a replacement with a
        :class:`PingRequest` for the bucket's least recently seen entry (or :class:`Cached` while a check is
        out). Refused by the diversity filter or for lack of room: :class:`Rejected`.
        """
        if peer == self.local:
            return Rejected(peer, "self")
        entry = self._find(peer)
        if entry is not None:
            entry.last_seen = max(entry.last_seen, now)
            if verified and entry.last_useful is None:
                entry.last_useful = now
            return Updated(peer)
        key = peer_key(peer)
        cpl = common_prefix_length(key, self.local_key)
        groups: frozenset[str] = frozenset()
        if self.diversity is not None:
            found = self.diversity.groups(addrs_ips)
            if found is None:
                return Rejected(peer, "no usable IP address")
            groups = found
            if not self.diversity.allows(cpl, groups):
                return Rejected(peer, "diversity")
        cache = self._fresh_cache(cpl, now)
        fits = self._fits(cpl)
        if not verified:
            if fits or peer in cache or len(cache) < self.replacement_cache_size:
                return CheckNew(peer)
            return Rejected(peer, "bucket full")
        if fits:
            self._split_for(cpl)
            self._insert(peer, key, cpl, groups, now, now)
            return Added(peer)
        # Full: split the last bucket as far as it goes so the candidate's bucket holds exactly its CPL.
        self._split_for(cpl)
        if self.replacement_cache_size <= 0:
            return Rejected(peer, "bucket full")
        cache.pop(peer, None)
        cache[peer] = _Candidate(peer, key, groups, now)
        while len(cache) > self.replacement_cache_size:
            del cache[next(iter(cache))]
        self._replacements[cpl] = cache
        bucket = self._buckets[self._index(cpl)]
        if bucket.checking is not None and now - bucket.checking_since < self.check_timeout:
            return Cached(peer)
        stale = min(bucket.entries.values(), key=lambda e: e.last_seen)
        bucket.checking = stale.peer
        bucket.checking_since = now
        return PingRequest(stale.peer, peer)

    def check_result(self, peer: PeerId, alive: bool, now: float) -> Eviction:
        """Report whether ``peer`` answered a check or query. Alive: its last-seen time is updated (a waiting
        candidate's too). Not alive: a table peer is evicted and the freshest replacement candidate of its
        bucket that the diversity filter allows is promoted; a waiting candidate is dropped."""
        entry = self._find(peer)
        bucket = self._buckets[self._index(common_prefix_length(peer_key(peer), self.local_key))]
        if bucket.checking == peer:
            bucket.checking = None
        if entry is None:
            for cache in self._replacements.values():
                candidate = cache.get(peer)
                if candidate is None:
                    continue
                if alive:
                    candidate.seen_at = max(candidate.seen_at, now)
                else:
                    del cache[peer]
            return Eviction()
        if alive:
            entry.last_seen = max(entry.last_seen, now)
            return Eviction()
        return self.remove(peer, now)

    def mark_useful(self, peer: PeerId, now: float) -> bool:
        """Record that ``peer`` helped a query (go's ``UpdateLastUsefulAt``); ``False`` if not in the table."""
        entry = self._find(peer)
        if entry is None:
            return False
        entry.last_useful = now
        entry.last_seen = max(entry.last_seen, now)
        return True

    def remove(self, peer: PeerId, now: float | None = None) -> Eviction:
        """Drop ``peer`` from the table and the replacement caches (it stopped being a DHT server, or the
        driver gave up on it). With ``now``, the freshest allowed replacement candidate of its bucket takes
        the slot, as after a failed check; without, the next offer fills it."""
        for cache in self._replacements.values():
            cache.pop(peer, None)
        entry = self._find(peer)
        if entry is None:
            return Eviction()
        self._delete(entry)
        promoted = None if now is None else self._promote(self._index(entry.cpl), now)
        self._collapse()
        return Eviction(evicted=peer, promoted=promoted)

    # ---- refresh -------------------------------------------------------------------------------------------

    def tracked_cpls(self) -> range:
        """The CPLs refreshed: 0 up to the largest CPL of any peer, capped at ``max_refresh_cpl`` (as go)."""
        top = 0
        for bucket in reversed(self._buckets):
            if bucket.entries:
                top = max(entry.cpl for entry in bucket.entries.values())
                break
        return range(min(top, self.max_refresh_cpl) + 1)

    def _due_at(self, cpl: int) -> float:
        refreshed = self._refreshed.get(cpl)
        return self._created if refreshed is None else refreshed + self.refresh_interval

    def next_refresh(self) -> float:
        """When the next bucket refresh or self-lookup falls due (may be in the past: act now)."""
        self_due = self._created if self._self_lookup_at is None else self._self_lookup_at + self.refresh_interval
        return min([self_due, *(self._due_at(cpl) for cpl in self.tracked_cpls())])

    def due_refreshes(self, now: float, rng: Random) -> list[RefreshTarget]:
        """A random lookup target for each tracked CPL not refreshed for ``refresh_interval``; each returned
        CPL counts as refreshed at ``now`` (so the timer moves on even if its lookup fails)."""
        out: list[RefreshTarget] = []
        for cpl in self.tracked_cpls():
            if self._due_at(cpl) <= now:
                key, position = random_key_with_cpl(self.local_key, cpl, rng)
                out.append(RefreshTarget(cpl, key, position))
                self._refreshed[cpl] = now
        return out

    def self_lookup_due(self, now: float) -> bool:
        """Whether the periodic lookup of our own id is due."""
        return self._self_lookup_at is None or now >= self._self_lookup_at + self.refresh_interval

    def mark_self_lookup(self, now: float) -> None:
        """Record that a self-lookup ran at ``now``."""
        self._self_lookup_at = now

    def mark_refreshed(self, cpl: int, now: float) -> None:
        """Record that bucket ``cpl`` was refreshed at ``now``."""
        self._refreshed[cpl] = now

    def overdue_refreshes(self, now: float) -> int:
        """How many tracked buckets went a whole ``refresh_interval`` without a refresh (counted from the
        table's creation for a bucket never refreshed): 0 in a table its timer keeps fresh."""
        return sum(
            1 for cpl in self.tracked_cpls() if self._refreshed.get(cpl, self._created) + self.refresh_interval <= now
        )

    def note_lookup(self, key: int, now: float) -> None:
        """Any lookup of ``key`` refreshes the bucket it falls in (go's ``ResetCplRefreshedAtForID``)."""
        cpl = common_prefix_length(key, self.local_key)
        if cpl <= self.max_refresh_cpl:
            self._refreshed[cpl] = now

    # ---- internals -----------------------------------------------------------------------------------------

    def _index(self, cpl: int) -> int:
        return min(cpl, len(self._buckets) - 1)

    def _find(self, peer: PeerId) -> _Entry | None:
        cpl = common_prefix_length(peer_key(peer), self.local_key)
        return self._buckets[self._index(cpl)].entries.get(peer)

    def _fresh_cache(self, cpl: int, now: float) -> dict[PeerId, _Candidate]:
        cache = self._replacements.get(cpl, {})
        for peer in [p for p, c in cache.items() if now - c.seen_at > self.replacement_ttl]:
            del cache[peer]
        if not cache:
            self._replacements.pop(cpl, None)
        return cache

    def _final_last(self) -> int:
        """The last bucket's index after go's splitting of a full last bucket."""
        last = len(self._buckets) - 1
        cpls = [entry.cpl for entry in self._buckets[last].entries.values()]
        if len(cpls) < self.k:
            return last
        final = last + 1
        while sum(1 for c in cpls if c >= final) >= self.k:
            final += 1
        return final

    def _fits(self, cpl: int) -> bool:
        last = len(self._buckets) - 1
        if cpl < last:
            return len(self._buckets[cpl].entries) < self.k
        bucket = self._buckets[last]
        if len(bucket.entries) < self.k:
            return True
        final = self._final_last()
        if cpl >= final:
            return True  # after the splits the new last bucket has room
        return sum(1 for entry in bucket.entries.values() if entry.cpl == cpl) < self.k

    def _split_for(self, cpl: int) -> None:
        """Split the last bucket (go's ``nextBucket``) while it is full and ``cpl`` falls in it."""
        while cpl >= len(self._buckets) - 1 and len(self._buckets[-1].entries) >= self.k:
            last = len(self._buckets) - 1
            if last >= KEY_BITS:
                return
            old = self._buckets[last]
            new = _Bucket()
            for peer, entry in list(old.entries.items()):
                if entry.cpl > last:
                    new.entries[peer] = entry
                    del old.entries[peer]
            if old.checking is not None and old.checking in new.entries:
                new.checking, new.checking_since = old.checking, old.checking_since
                old.checking = None
            self._buckets.append(new)

    def _insert(
        self, peer: PeerId, key: int, cpl: int, groups: frozenset[str], now: float, last_seen: float
    ) -> None:
        entry = _Entry(peer, key, cpl, now)
        entry.last_seen = last_seen
        self._buckets[self._index(cpl)].entries[peer] = entry
        self._size += 1
        if self.diversity is not None:
            self.diversity.add(peer, cpl, groups)
        cache = self._replacements.get(cpl)
        if cache is not None:
            cache.pop(peer, None)
            if not cache:
                del self._replacements[cpl]

    def _delete(self, entry: _Entry) -> None:
        bucket = self._buckets[self._index(entry.cpl)]
        del bucket.entries[entry.peer]
        if bucket.checking == entry.peer:
            bucket.checking = None
        self._size -= 1
        if self.diversity is not None:
            self.diversity.remove(entry.peer)

    def _promote(self, index: int, now: float) -> PeerId | None:
        """Move the freshest allowed candidate for bucket ``index`` into it."""
        bucket = self._buckets[index]
        if len(bucket.entries) >= self.k:
            return None
        last = len(self._buckets) - 1
        cpls = [index] if index < last else [c for c in self._replacements if c >= index]
        best: _Candidate | None = None
        best_cpl = 0
        for cpl in cpls:
            for candidate in self._fresh_cache(cpl, now).values():
                if self.diversity is not None and not self.diversity.allows(cpl, candidate.groups):
                    continue
                if best is None or candidate.seen_at > best.seen_at:
                    best, best_cpl = candidate, cpl
        if best is None:
            return None
        self._insert(best.peer, best.key, best_cpl, best.groups, now, best.seen_at)
        return best.peer

    def _collapse(self) -> None:
        """Fold empty buckets at the tail back into the last one (go's ``removePeer``)."""
        while len(self._buckets) > 1:
            if not self._buckets[-1].entries:
                self._buckets.pop()
            elif not self._buckets[-2].entries:
                last = self._buckets.pop()
                self._buckets[-1] = last  # the emptied second-to-last bucket's place
            else:
                break


def random_key_with_cpl(local_key: int, cpl: int, rng: Random) -> tuple[bytes, int]:
    """Bytes shaped as a SHA-256 peer id (``0x12 0x20`` + 32 bytes: 24 random from ``rng``, then a counter)
    whose keyspace position has exactly ``cpl`` leading bits in common with ``local_key``, and that position.

    No shortcut exists to a SHA-256 prefix: this tries about 2**(cpl+1) preimages (go ships a precomputed
    table instead), bounded at 64 times that; ``cpl`` <= ``MAX_REFRESH_CPL`` keeps it under ~20 ms here.
    """
    if not 0 <= cpl < KEY_BITS:
        raise ValueError(f"cpl {cpl} out of range")
    shift = KEY_BITS - 1 - cpl
    wanted = (local_key >> shift) ^ 1  # our first cpl bits, then the next one flipped
    head = _SHA256_MULTIHASH + rng.getrandbits(192).to_bytes(24, "big")
    base = hashlib.sha256(head)
    for counter in range(_MAX_KEY_TRIES_FACTOR << (cpl + 1)):
        tail = counter.to_bytes(8, "big")
        attempt = base.copy()
        attempt.update(tail)
        position = int.from_bytes(attempt.digest(), "big")
        if position >> shift == wanted:
            return head + tail, position
    raise RuntimeError(f"no key with cpl {cpl} found")  # probability about e**-64


__all__ = [
    "CHECK_TIMEOUT",
    "K_VALUE",
    "LEGACY_CLASS_A",
    "MAX_PER_GROUP",
    "MAX_PER_GROUP_PER_CPL",
    "MAX_REFRESH_CPL",
    "REFRESH_INTERVAL",
    "REPLACEMENT_CACHE_SIZE",
    "AddResult",
    "Added",
    "Cached",
    "CheckNew",
    "DiversityFilter",
    "Eviction",
    "PeerInfo",
    "PingRequest",
    "RefreshTarget",
    "Rejected",
    "RoutingTable",
    "Updated",
    "filter_results",
    "ip_group",
    "random_key_with_cpl",
]
