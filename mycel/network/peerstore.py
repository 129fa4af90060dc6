"""What we know about other peers: addresses (with TTLs and provenance), signed peer records, keys,
protocols, identify data, latency and per-peer metadata for services. Bounded. Sans-IO.

The peer store is a plain synchronous class: it imports no trio and never reads a clock. Every
method that needs the time takes ``now`` (seconds on any monotonic clock; the host passes
``trio.current_time()``); ``now`` must never go backwards between calls. Expiry is lazy (reads never
return an expired address) plus an explicit :meth:`PeerStore.expire` that a timer task runs at
:meth:`PeerStore.next_expiry` — no polling. :attr:`PeerStore.on_deadline_changed` is called when an
earlier deadline appears, so that task can re-arm its sleep.

Facts taken from go-libp2p (``core/peerstore/peerstore.go`` and ``p2p/host/peerstore/pstoremem``,
master as of 2026-07; its code is not carried over):

* ``AddressTTL = 1h``, ``TempAddrTTL = 2m``, ``RecentlyConnectedAddrTTL = 15m`` (it was 30m until
  go-libp2p #2793, 2024), ``PermanentAddrTTL = MaxInt64`` and ``ConnectedAddrTTL = MaxInt64 - 1`` (two
  distinct "never" values so ``UpdateAddrs(ConnectedAddrTTL, RecentlyConnectedAddrTTL)`` moves only
  the addresses of connected peers). Go core no longer has a ``ProviderAddrTTL``: its 30 minute
  constant was removed as unused in #1848 (2022); the value used today is go-libp2p-kad-dht's
  ``amino.DefaultProviderAddrTTL = 24h``. ``OwnObservedAddrTTL`` (30m) is deprecated in go and not
  kept here: it is about our own addresses, which the peer store does not hold.
* ``AddAddrs`` only extends: a longer TTL raises the stored TTL, a later expiry moves the expiry,
  a shorter one changes nothing; ``ttl <= 0`` is a no-op. An address is expired at ``now >= expiry``
  (go's ``ExpiredBy`` is ``!now.Before(expiry)``).
* At most 64 unconnected addresses per peer (``defaultMaxAddrsPerPeer``); over the bound go drops
  the one expiring soonest. go's protocol book keeps 128 protocols in memory (1024 in the datastore
  one); we keep 256.
* Signed peer records: a record with a sequence number lower than or equal to the stored one is
  ignored (``accepted == false``, no error); a newer one replaces the certified addresses; the
  record is forgotten once its addresses are gone.
* Latency is an EWMA with smoothing 0.1 (``LatencyEWMASmoothing``); the first sample is taken as is.

Where we differ from go, on purpose: every address remembers *each* source that gave it, with its
own TTL, so identify replacing its set never removes an address the user gave (go has one TTL per
address, and ``SetAddrs`` from identify overwrites the user's TTL); certified addresses are listed
first rather than hiding every uncertified one; and the peer table itself is bounded (go's is not).
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from multiaddr import Multiaddr

from mycel.core.errors import DecodeError, InvalidSignature, PeerIdMismatch, ResourceLimitExceeded
from mycel.core.keys import PublicKey
from mycel.core.peer_id import PeerId
from mycel.core.record import open_peer_record

__all__ = [
    "ADDRESS_TTL",
    "CONNECTED_TTL",
    "LATENCY_EWMA_SMOOTHING",
    "MAX_ADDRS_PER_PEER",
    "MAX_METADATA_KEYS",
    "MAX_PEERS",
    "MAX_PROTOCOL_LENGTH",
    "MAX_PROTOCOLS_PER_PEER",
    "MAX_VERSION_LENGTH",
    "PERMANENT_TTL",
    "PROVIDER_ADDR_TTL",
    "RECENTLY_CONNECTED_TTL",
    "TEMP_TTL",
    "AddrEntry",
    "AddrSource",
    "PeerInfo",
    "PeerStore",
    "PeerStoreStats",
]

# -- TTLs (seconds) --------------------------------------------------------------------------------

PERMANENT_TTL: Final[float] = math.inf
"""Never expires (bootstrap peers, addresses the application pins). go: ``PermanentAddrTTL``."""

CONNECTED_TTL: Final[float] = sys.float_info.max
"""For addresses of a peer we are connected to: never expires while connected, and moves to
:data:`RECENTLY_CONNECTED_TTL` when :meth:`PeerStore.mark_connected` reports the last disconnect.
Distinct from :data:`PERMANENT_TTL` (and smaller, as in go) so :meth:`PeerStore.update_ttl` can tell
the two apart; any TTL ``>= CONNECTED_TTL`` never expires. go: ``ConnectedAddrTTL``."""

RECENTLY_CONNECTED_TTL: Final[float] = 15 * 60.0
"""15 minutes: addresses of a peer we were connected to a moment ago. go: ``RecentlyConnectedAddrTTL``."""

TEMP_TTL: Final[float] = 2 * 60.0
"""2 minutes: short-lived addresses (about to be dialed, relayed hints). go: ``TempAddrTTL``."""

ADDRESS_TTL: Final[float] = 60 * 60.0
"""1 hour: the default for addresses learned from others. go: ``AddressTTL``."""

PROVIDER_ADDR_TTL: Final[float] = 24 * 60 * 60.0
"""24 hours: addresses that came with DHT provider records. go-libp2p-kad-dht:
``amino.DefaultProviderAddrTTL``."""

# -- bounds ------------------------------------------------------------------------------------------

MAX_PEERS: Final = 10_000
"""Peers held. At the bound the least recently used unprotected peer is evicted; a protected
(connected) peer only when no unprotected one is left, and only to make room for another protected one
(an unprotected newcomer is refused instead)."""

MAX_ADDRS_PER_PEER: Final = 64
"""Addresses held per peer (go's ``defaultMaxAddrsPerPeer``). At the bound expired entries go first;
then the address from the lowest-priority source expiring soonest is displaced, but only by an address
from a more trusted source, or from an equally trusted one that outlives it (USER/CERTIFIED addresses are
never displaced by lower ones); otherwise the new address is dropped."""

MAX_PROTOCOLS_PER_PEER: Final = 256
"""Protocols held per peer. At the bound further protocols are dropped (the first ones given are kept)."""

MAX_PROTOCOL_LENGTH: Final = 1024
"""Longest protocol id accepted, in characters. Longer (and empty) ids are dropped."""

MAX_METADATA_KEYS: Final = 64
"""Metadata keys per peer. At the bound :meth:`PeerStore.put` of a new key raises
:class:`~mycel.core.errors.ResourceLimitExceeded` (keys are chosen by local services, so this is a bug
to surface, not input to drop)."""

MAX_VERSION_LENGTH: Final = 1024
"""Longest agent / protocol version string kept, in characters. Longer strings are truncated."""

LATENCY_EWMA_SMOOTHING: Final = 0.1
"""Weight of a new latency sample in the moving average. go: ``LatencyEWMASmoothing``."""


class AddrSource(enum.Enum):
    """Where an address came from. Each address keeps every source that gave it, each with its own TTL.

    Listing order (:meth:`PeerStore.addrs`) and who may displace whom at the per-peer bound follow
    :attr:`priority`: USER, CERTIFIED, CONNECTION, IDENTIFY, ROUTING, DISCOVERY.
    """

    USER = "user"
    """Given by the application."""
    CERTIFIED = "certified"
    """From a verified signed peer record (only :meth:`PeerStore.consume_peer_record` adds these)."""
    IDENTIFY = "identify"
    """The listen addresses the peer announced over identify."""
    CONNECTION = "connection"
    """The address we dialed, or are connected on."""
    ROUTING = "routing"
    """From a content/peer routing system (the DHT, ...)."""
    DISCOVERY = "discovery"
    """From discovery (mDNS, rendezvous, bootstrap lists)."""

    @property
    def priority(self) -> int:
        """Rank of this source: 0 is the most trusted."""
        return _PRIORITY[self]


_PRIORITY: Final[dict[AddrSource, int]] = {
    AddrSource.USER: 0,
    AddrSource.CERTIFIED: 1,
    AddrSource.CONNECTION: 2,
    AddrSource.IDENTIFY: 3,
    AddrSource.ROUTING: 4,
    AddrSource.DISCOVERY: 5,
}
_LOWEST: Final = len(_PRIORITY)


# -- values handed out -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddrEntry:
    """One address of a peer as the store sees it at some ``now`` (for introspection and debugging)."""

    addr: Multiaddr
    """The address."""
    sources: frozenset[AddrSource]
    """The sources that currently vouch for it (expired ones left out)."""
    expiry: float
    """When the last of those sources expires (``math.inf``: never)."""
    expiries: tuple[tuple[AddrSource, float], ...]
    """Each live source with its own expiry, most trusted source first."""

    @property
    def certified(self) -> bool:
        """Whether a live signed peer record lists this address."""
        return AddrSource.CERTIFIED in self.sources


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A frozen snapshot of what the store knows about one peer (what events carry).

    Taking one is :meth:`PeerStore.snapshot`; later changes to the store never show up in it.
    """

    peer_id: PeerId
    """The peer."""
    addrs: tuple[Multiaddr, ...] = ()
    """Live addresses in dial order (see :meth:`PeerStore.addrs`)."""
    protocols: frozenset[str] = frozenset()
    """Protocols the peer announced."""
    public_key: PublicKey | None = None
    """Its public key, if known (stored, or inlined in the peer id)."""
    agent_version: str | None = None
    """Its identify agent version."""
    protocol_version: str | None = None
    """Its identify protocol version."""
    latency: float | None = None
    """Smoothed round-trip time in seconds, if measured."""
    certified: bool = False
    """Whether we hold a live signed peer record of it."""
    record_seq: int | None = None
    """The sequence number of that record."""
    connected: bool = False
    """Whether the host has marked it connected."""


@dataclass(frozen=True, slots=True)
class PeerStoreStats:
    """Counters of what the bounds and expiry did since the store was created (hostile input shows here)."""

    peers: int
    """Peers held now."""
    addrs: int
    """Address entries held now (expired ones not yet swept included)."""
    evicted_peers: int
    """Unprotected peers evicted at :data:`MAX_PEERS`."""
    evicted_protected_peers: int
    """Protected peers evicted at :data:`MAX_PEERS` (only when every peer was protected)."""
    rejected_peers: int
    """New unprotected peers refused because every held peer was protected."""
    expired_peers: int
    """Peers dropped by :meth:`PeerStore.expire` with nothing worth keeping left."""
    expired_addrs: int
    """Addresses dropped because every source of theirs expired."""
    evicted_addrs: int
    """Addresses displaced at :data:`MAX_ADDRS_PER_PEER`."""
    rejected_addrs: int
    """New addresses dropped at :data:`MAX_ADDRS_PER_PEER`."""
    dropped_protocols: int
    """Protocols dropped at :data:`MAX_PROTOCOLS_PER_PEER`."""
    rejected_protocols: int
    """Protocol ids dropped for being empty or longer than :data:`MAX_PROTOCOL_LENGTH`."""
    rejected_metadata: int
    """:meth:`PeerStore.put` calls refused at :data:`MAX_METADATA_KEYS`."""
    stale_records: int
    """Signed peer records ignored for an old (or equal) sequence number."""
    truncated_strings: int
    """Agent / protocol version strings cut to :data:`MAX_VERSION_LENGTH`."""


# -- internals ---------------------------------------------------------------------------------------


class _Addr:
    """One address of one peer: ``sources`` maps each source to ``(ttl, expiry)``."""

    __slots__ = ("addr", "sources", "seen")

    def __init__(self, addr: Multiaddr, seen: float) -> None:
        self.addr = addr
        self.sources: dict[AddrSource, tuple[float, float]] = {}
        self.seen = seen  # last time any source gave it: the recency in the listing order

    def live(self, now: float) -> tuple[int, bool, float] | None:
        """``(best priority, certified, latest expiry)`` of the live sources, or None if none is."""
        best = _LOWEST
        certified = False
        latest = -math.inf
        for source, (_ttl, expiry) in self.sources.items():
            if expiry > now:
                best = min(best, _PRIORITY[source])
                certified = certified or source is AddrSource.CERTIFIED
                latest = max(latest, expiry)
        return None if best == _LOWEST else (best, certified, latest)


class _Peer:
    __slots__ = (
        "addrs",
        "protocols",
        "public_key",
        "agent",
        "protocol_version",
        "latency",
        "metadata",
        "record",
        "record_seq",
        "record_ttl",
        "record_expiry",
        "connected",
        "protected",
        "view",
        "view_from",
        "view_until",
    )

    def __init__(self) -> None:
        self.addrs: dict[Multiaddr, _Addr] = {}
        self.protocols: frozenset[str] = frozenset()
        self.public_key: PublicKey | None = None
        self.agent: str | None = None
        self.protocol_version: str | None = None
        self.latency: float | None = None
        self.metadata: dict[str, object] = {}
        self.record: bytes | None = None
        self.record_seq = 0
        self.record_ttl = 0.0
        self.record_expiry = -math.inf
        self.connected = False
        self.protected = False
        # the sorted live addresses, valid for view_from <= now < view_until; None after any change
        self.view: list[Multiaddr] | None = None
        self.view_from = math.inf
        self.view_until = -math.inf

    @property
    def pinned(self) -> bool:
        return self.connected or self.protected

    def record_live(self, now: float) -> bool:
        return self.record is not None and self.record_expiry > now

    def timed(self) -> int:
        """How many finite deadlines this peer holds (for the heap's stale-entry accounting)."""
        n = sum(1 for a in self.addrs.values() for _ttl, exp in a.sources.values() if exp != math.inf)
        return n + (1 if self.record is not None and self.record_expiry != math.inf else 0)


# heap item: (deadline, tie-breaker, peer, address or None for the peer record, source or None)
_HeapItem = tuple[float, int, PeerId, Multiaddr | None, AddrSource | None]


def _expiry(now: float, ttl: float) -> float:
    return math.inf if ttl >= CONNECTED_TTL else now + ttl


def _check_ttl(ttl: float) -> None:
    if math.isnan(ttl):
        raise ValueError("ttl is NaN")


class PeerStore:
    """The host's bounded, sans-IO store of everything it knows about other peers.

    Reads never return expired data and never create entries; writes create the peer's entry when
    needed (possibly evicting another peer, see :data:`MAX_PEERS`). "Recently used", for eviction,
    means last written, last listed by :meth:`addrs` or :meth:`snapshot`, or last marked.
    """

    def __init__(
        self,
        *,
        max_peers: int = MAX_PEERS,
        max_addrs_per_peer: int = MAX_ADDRS_PER_PEER,
        max_protocols_per_peer: int = MAX_PROTOCOLS_PER_PEER,
        max_metadata_keys: int = MAX_METADATA_KEYS,
        on_deadline_changed: Callable[[], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Create an empty store; the bounds default to the module constants.

        ``clock`` supplies ``now`` to every method called without one (the host passes
        ``trio.current_time``); without a clock, ``now`` must be given."""
        if min(max_peers, max_addrs_per_peer, max_protocols_per_peer, max_metadata_keys) < 1:
            raise ValueError("peer store bounds must be at least 1")
        self.max_peers = max_peers
        self.max_addrs_per_peer = max_addrs_per_peer
        self.max_protocols_per_peer = max_protocols_per_peer
        self.max_metadata_keys = max_metadata_keys
        self.on_deadline_changed: Callable[[], None] | None = on_deadline_changed
        self._clock = clock
        """Called (synchronously, with no arguments) whenever :meth:`next_expiry` may have moved
        earlier; a timer task uses it to wake and re-arm. Keep it cheap (e.g. set a trio event)."""
        self._peers: dict[PeerId, _Peer] = {}
        self._lru: OrderedDict[PeerId, None] = OrderedDict()  # unprotected peers, least recent first
        self._pinned: OrderedDict[PeerId, None] = OrderedDict()  # connected or protected peers
        self._idle: set[PeerId] = set()  # peers to check at the next expire() (they lost their pin)
        self._heap: list[_HeapItem] = []
        self._timed = 0  # live finite deadlines; the heap is rebuilt when stale items outnumber them
        self._tie = itertools.count()
        self._evicted_peers = 0
        self._evicted_protected_peers = 0
        self._rejected_peers = 0
        self._expired_peers = 0
        self._expired_addrs = 0
        self._evicted_addrs = 0
        self._rejected_addrs = 0
        self._dropped_protocols = 0
        self._rejected_protocols = 0
        self._rejected_metadata = 0
        self._stale_records = 0
        self._truncated_strings = 0

    # -- the peer table ------------------------------------------------------------------------------

    def _now(self, now: float | None) -> float:
        if now is not None:
            return now
        if self._clock is None:
            raise TypeError("this PeerStore has no clock: pass now")
        return self._clock()

    def __contains__(self, peer: object) -> bool:
        """Whether the store holds an entry for ``peer`` (whatever is in it)."""
        return peer in self._peers

    def __len__(self) -> int:
        """How many peers the store holds."""
        return len(self._peers)

    def peers(self) -> list[PeerId]:
        """Every peer held, in no particular order."""
        return list(self._peers)

    def remove_peer(self, peer: PeerId) -> bool:
        """Forget everything about ``peer``; False if it was not held."""
        return self._forget(peer)

    def stats(self) -> PeerStoreStats:
        """Counters of drops, evictions and expiries so far, and the current sizes (O(peers))."""
        return PeerStoreStats(
            peers=len(self._peers),
            addrs=sum(len(p.addrs) for p in self._peers.values()),
            evicted_peers=self._evicted_peers,
            evicted_protected_peers=self._evicted_protected_peers,
            rejected_peers=self._rejected_peers,
            expired_peers=self._expired_peers,
            expired_addrs=self._expired_addrs,
            evicted_addrs=self._evicted_addrs,
            rejected_addrs=self._rejected_addrs,
            dropped_protocols=self._dropped_protocols,
            rejected_protocols=self._rejected_protocols,
            rejected_metadata=self._rejected_metadata,
            stale_records=self._stale_records,
            truncated_strings=self._truncated_strings,
        )

    def mark_connected(self, peer: PeerId, connected: bool, now: float | None = None) -> None:
        """The host reports its first connection to ``peer`` (True) or the last one closing (False).

        A connected peer is protected from eviction. On disconnect every address (and the signed
        record) held at :data:`CONNECTED_TTL` moves to :data:`RECENTLY_CONNECTED_TTL` from ``now`` —
        in practice the CONNECTION and IDENTIFY (and CERTIFIED) addresses — as go's host does with
        ``UpdateAddrs(ConnectedAddrTTL, RecentlyConnectedAddrTTL)``.
        """
        now = self._now(now)
        if connected:
            p = self._write(peer, pinned=True)
            if p is not None and not p.connected:
                p.connected = True
                self._repin(peer, p)
            return
        p = self._peers.get(peer)
        if p is None:
            return
        was = p.connected
        p.connected = False
        if was:
            self._repin(peer, p)
        self.update_ttl(peer, None, CONNECTED_TTL, RECENTLY_CONNECTED_TTL, now)

    def mark_protected(self, peer: PeerId, protected: bool) -> None:
        """Protect ``peer`` from eviction (True) or lift that (False), independently of connections."""
        p = self._write(peer, pinned=True) if protected else self._peers.get(peer)
        if p is not None and p.protected != protected:
            p.protected = protected
            self._repin(peer, p)

    # -- addresses -----------------------------------------------------------------------------------

    def add_addrs(
        self,
        peer: PeerId,
        addrs: Iterable[Multiaddr],
        source: AddrSource = AddrSource.USER,
        ttl: float = PERMANENT_TTL,
        now: float | None = None,
    ) -> None:
        """Add ``addrs`` as given by ``source``, valid for ``ttl`` seconds from ``now``, or extend them.

        For an address ``source`` already gave, a longer TTL raises the stored one and a later expiry
        moves the expiry; a shorter one changes nothing (go's ``AddAddrs``). ``ttl <= 0`` does
        nothing. Addresses are stored as given: strip any ``/p2p/<id>`` suffix first. CERTIFIED
        addresses come only from :meth:`consume_peer_record` (``ValueError`` here).
        """
        now = self._now(now)
        _check_ttl(ttl)
        if source is AddrSource.CERTIFIED:
            raise ValueError("certified addresses come only from consume_peer_record()")
        if ttl <= 0:
            return
        p = self._write(peer)
        if p is None:
            return
        expiry = _expiry(now, ttl)
        for addr in addrs:
            self._put_addr(peer, p, addr, source, ttl, expiry, now, extend=True)

    def set_addrs(
        self,
        peer: PeerId,
        addrs: Iterable[Multiaddr],
        source: AddrSource = AddrSource.USER,
        ttl: float = PERMANENT_TTL,
        now: float | None = None,
    ) -> None:
        """Make ``addrs`` the whole set of addresses ``source`` gives for ``peer``, each with exactly ``ttl``.

        Addresses ``source`` gave before and that are not in ``addrs`` lose that source; the ones
        other sources gave stay (identify never overwrites what the user gave). ``ttl <= 0`` removes
        every address of ``source``. CERTIFIED addresses come only from :meth:`consume_peer_record`.
        """
        now = self._now(now)
        _check_ttl(ttl)
        if source is AddrSource.CERTIFIED:
            raise ValueError("certified addresses come only from consume_peer_record()")
        if ttl <= 0:
            self.clear_addrs(peer, source)
            return
        p = self._write(peer)
        if p is not None:
            self._replace_source(peer, p, addrs, source, ttl, now)

    def clear_addrs(self, peer: PeerId, source: AddrSource | None = None) -> int:
        """Remove every address ``source`` gave (all sources when None); returns how many addresses went."""
        p = self._peers.get(peer)
        if p is None:
            return 0
        gone = 0
        for a in list(p.addrs.values()):
            for s in [s for s in a.sources if source is None or s is source]:
                self._drop_source(a, s)
            if not a.sources:
                del p.addrs[a.addr]
                gone += 1
        p.view = None
        return gone

    def update_ttl(
        self, peer: PeerId, source: AddrSource | None, old_ttl: float, new_ttl: float, now: float | None = None
    ) -> int:
        """Give every live address that ``source`` (any source when None) holds at exactly ``old_ttl``
        the TTL ``new_ttl`` from ``now`` (which may shorten it; ``new_ttl <= 0`` removes it). The peer's
        signed record follows when ``source`` is CERTIFIED or None. Returns how many entries changed.

        go: ``UpdateAddrs(p, oldTTL, newTTL)``; :meth:`mark_connected` uses it on disconnect.
        """
        now = self._now(now)
        _check_ttl(new_ttl)
        p = self._peers.get(peer)
        if p is None:
            return 0
        changed = 0
        expiry = _expiry(now, new_ttl)
        for a in list(p.addrs.values()):
            for s, (ttl, exp) in list(a.sources.items()):
                if (source is None or s is source) and ttl == old_ttl and exp > now:
                    changed += 1
                    if new_ttl <= 0:
                        self._drop_source(a, s)
                    else:
                        self._set_source(peer, a, s, new_ttl, expiry)
            if not a.sources:
                del p.addrs[a.addr]
        if source in (None, AddrSource.CERTIFIED) and p.record_live(now) and p.record_ttl == old_ttl:
            changed += 1
            if new_ttl <= 0:
                self._drop_record(p)
            else:
                self._set_record(peer, p, p.record, new_ttl, expiry)
        if changed:
            p.view = None
        return changed

    def addrs(self, peer: PeerId, now: float | None = None) -> list[Multiaddr]:
        """The live addresses of ``peer`` in dial order: certified ones first, then by the most trusted
        source vouching for each (USER, CERTIFIED, CONNECTION, IDENTIFY, ROUTING, DISCOVERY), then the
        most recently given. Expired addresses are never returned.

        Cached per peer until something changes or an entry expires: a call costs a dict look-up and a
        list copy of at most :data:`MAX_ADDRS_PER_PEER` items.
        """
        now = self._now(now)
        p = self._peers.get(peer)
        if p is None:
            return []
        self._touch(peer, p)
        if p.view is None or not p.view_from <= now < p.view_until:
            self._sort(p, now)
            assert p.view is not None
        return list(p.view)

    def addr_entries(self, peer: PeerId, now: float | None = None) -> list[AddrEntry]:
        """Each live address with its live sources and expiries, in :meth:`addrs` order (introspection)."""
        now = self._now(now)
        p = self._peers.get(peer)
        if p is None:
            return []
        out = []
        for addr in self.addrs(peer, now):
            a = p.addrs[addr]
            live = sorted(
                ((s, exp) for s, (_ttl, exp) in a.sources.items() if exp > now), key=lambda e: _PRIORITY[e[0]]
            )
            out.append(AddrEntry(addr, frozenset(s for s, _ in live), max(exp for _, exp in live), tuple(live)))
        return out

    # -- signed peer records -------------------------------------------------------------------------

    def consume_peer_record(
        self, envelope: bytes, ttl: float, now: float | None = None, *, expected_peer: PeerId | None = None
    ) -> bool:
        """Verify a signed peer record envelope and, if it is the newest seen, store it.

        Raises :class:`~mycel.core.errors.DecodeError` for malformed bytes and
        :class:`~mycel.core.errors.InvalidSignature` for a bad signature, a record signed by a key that
        is not its peer's, or a record for another peer than ``expected_peer`` (pass the peer it
        arrived from). Returns False, changing nothing, when a live record with an equal or higher
        sequence number is held (or ``ttl <= 0``, or the peer table is full of protected peers).
        Otherwise the envelope bytes are kept for :meth:`peer_record`, the signing key becomes the
        peer's public key, and the record's addresses replace the peer's CERTIFIED set, valid for
        ``ttl`` — the other sources' addresses stay.
        """
        now = self._now(now)
        _check_ttl(ttl)
        data = bytes(envelope)
        env, record = open_peer_record(data)
        peer = record.peer_id
        if expected_peer is not None and peer != expected_peer:
            raise InvalidSignature(f"signed peer record of {peer} arrived from {expected_peer}")
        if ttl <= 0:
            return False
        held = self._peers.get(peer)
        if held is not None and held.record_live(now) and record.seq <= held.record_seq:
            self._stale_records += 1
            return False
        p = self._write(peer)
        if p is None:
            return False
        p.public_key = env.public_key
        p.record_seq = record.seq
        self._set_record(peer, p, data, ttl, _expiry(now, ttl))
        self._replace_source(peer, p, record.addrs, AddrSource.CERTIFIED, ttl, now)
        return True

    def peer_record(self, peer: PeerId, now: float | None = None) -> bytes | None:
        """The envelope bytes of ``peer``'s live signed peer record, exactly as received, or None."""
        now = self._now(now)
        p = self._peers.get(peer)
        return p.record if p is not None and p.record_live(now) else None

    # -- protocols -----------------------------------------------------------------------------------

    def set_protocols(self, peer: PeerId, protocols: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
        """Make ``protocols`` the peer's protocol set; returns ``(added, removed)``.

        Duplicates are ignored, empty or over-long ids (:data:`MAX_PROTOCOL_LENGTH`) dropped, and past
        :data:`MAX_PROTOCOLS_PER_PEER` the rest is dropped (both counted in :meth:`stats`).
        """
        p = self._write(peer)
        if p is None:
            return frozenset(), frozenset()
        old = p.protocols
        p.protocols = frozenset(self._accept_protocols(protocols, frozenset(), self.max_protocols_per_peer))
        return p.protocols - old, old - p.protocols

    def add_protocols(self, peer: PeerId, protocols: Iterable[str]) -> frozenset[str]:
        """Add ``protocols`` to the peer's set (same filtering and bound as :meth:`set_protocols`);
        returns the ones that were not there before."""
        p = self._write(peer)
        if p is None:
            return frozenset()
        room = self.max_protocols_per_peer - len(p.protocols)
        added = frozenset(self._accept_protocols(protocols, p.protocols, room))
        if added:
            p.protocols = p.protocols | added
        return added

    def remove_protocols(self, peer: PeerId, protocols: Iterable[str]) -> frozenset[str]:
        """Remove ``protocols`` from the peer's set; returns the ones that were there."""
        p = self._peers.get(peer)
        if p is None:
            return frozenset()
        removed = p.protocols.intersection(protocols)
        if removed:
            self._touch(peer, p)
            p.protocols = p.protocols - removed
        return removed

    def protocols(self, peer: PeerId) -> frozenset[str]:
        """The protocols ``peer`` announced (an immutable set: no copy is made, no order is implied)."""
        p = self._peers.get(peer)
        return p.protocols if p is not None else frozenset()

    def supports(self, peer: PeerId, *protocols: str) -> list[str]:
        """Those of ``protocols`` that ``peer`` announced, in the order given."""
        known = self.protocols(peer)
        return [proto for proto in protocols if proto in known]

    def first_supported(self, peer: PeerId, *protocols: str) -> str | None:
        """The first of ``protocols`` that ``peer`` announced, or None."""
        known = self.protocols(peer)
        return next((proto for proto in protocols if proto in known), None)

    # -- keys, identify data, latency ----------------------------------------------------------------

    def set_public_key(self, peer: PeerId, key: PublicKey) -> None:
        """Store ``peer``'s public key; :class:`~mycel.core.errors.PeerIdMismatch` if ``peer`` is not
        derived from ``key``."""
        if not peer.matches_public_key(key):
            raise PeerIdMismatch(f"public key does not belong to {peer}")
        p = self._write(peer)
        if p is not None:
            p.public_key = key

    def public_key(self, peer: PeerId) -> PublicKey | None:
        """``peer``'s public key: the stored one, else the one inlined in its id (Ed25519,
        secp256k1), else None."""
        p = self._peers.get(peer)
        if p is not None and p.public_key is not None:
            return p.public_key
        try:
            return peer.extract_public_key()
        except DecodeError:
            return None

    def set_agent_version(self, peer: PeerId, agent: str) -> None:
        """Store the agent version ``peer`` announced (cut to :data:`MAX_VERSION_LENGTH`)."""
        p = self._write(peer)
        if p is not None:
            p.agent = self._bounded(agent)

    def agent_version(self, peer: PeerId) -> str | None:
        """The agent version ``peer`` announced, if any."""
        p = self._peers.get(peer)
        return p.agent if p is not None else None

    def set_protocol_version(self, peer: PeerId, version: str) -> None:
        """Store the protocol version ``peer`` announced (cut to :data:`MAX_VERSION_LENGTH`)."""
        p = self._write(peer)
        if p is not None:
            p.protocol_version = self._bounded(version)

    def protocol_version(self, peer: PeerId) -> str | None:
        """The protocol version ``peer`` announced, if any."""
        p = self._peers.get(peer)
        return p.protocol_version if p is not None else None

    def record_latency(self, peer: PeerId, rtt: float) -> None:
        """Fold a round-trip time sample (seconds, finite, >= 0) into ``peer``'s moving average:
        the first sample is taken as is, then ``avg = 0.9 * avg + 0.1 * rtt``."""
        if not (math.isfinite(rtt) and rtt >= 0):
            raise ValueError(f"round-trip time must be finite and >= 0, not {rtt!r}")
        p = self._write(peer)
        if p is None:
            return
        if p.latency is None:
            p.latency = rtt
        else:
            p.latency = (1 - LATENCY_EWMA_SMOOTHING) * p.latency + LATENCY_EWMA_SMOOTHING * rtt

    def latency(self, peer: PeerId) -> float | None:
        """``peer``'s smoothed round-trip time in seconds, or None if never measured."""
        p = self._peers.get(peer)
        return p.latency if p is not None else None

    # -- metadata ------------------------------------------------------------------------------------

    def put(self, peer: PeerId, key: str, value: object) -> None:
        """Store ``value`` under ``key`` for ``peer`` (for services; dropped with the peer).

        A new key past :data:`MAX_METADATA_KEYS` raises :class:`~mycel.core.errors.ResourceLimitExceeded`.
        """
        p = self._write(peer)
        if p is None:
            return
        if key not in p.metadata and len(p.metadata) >= self.max_metadata_keys:
            self._rejected_metadata += 1
            raise ResourceLimitExceeded(f"{peer} already has {len(p.metadata)} metadata keys")
        p.metadata[key] = value

    def get(self, peer: PeerId, key: str, default: object = None) -> object:
        """The value stored under ``key`` for ``peer``, or ``default``."""
        p = self._peers.get(peer)
        return p.metadata.get(key, default) if p is not None else default

    # -- snapshots -----------------------------------------------------------------------------------

    def snapshot(self, peer: PeerId, now: float | None = None) -> PeerInfo:
        """A frozen :class:`PeerInfo` of ``peer`` as of ``now`` (empty fields for an unknown peer)."""
        now = self._now(now)
        p = self._peers.get(peer)
        if p is None:
            return PeerInfo(peer, public_key=self.public_key(peer))
        live_record = p.record_live(now)
        return PeerInfo(
            peer_id=peer,
            addrs=tuple(self.addrs(peer, now)),
            protocols=p.protocols,
            public_key=self.public_key(peer),
            agent_version=p.agent,
            protocol_version=p.protocol_version,
            latency=p.latency,
            certified=live_record,
            record_seq=p.record_seq if live_record else None,
            connected=p.connected,
        )

    # -- expiry --------------------------------------------------------------------------------------

    def next_expiry(self) -> float | None:
        """The earliest time at which :meth:`expire` has something to do, or None if nothing expires.

        ``-inf`` (due now) while peers that lost their pin wait to be checked: a disconnected peer
        left with nothing worth keeping (an inbound peer we hold only a key for) is forgotten at
        once, not at some later deadline — or never, in a store with no deadlines at all."""
        if self._idle:
            return -math.inf
        heap = self._heap
        while heap and not self._current(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def expire(self, now: float | None = None) -> int:
        """Drop every address source and record expired at ``now`` (``expiry <= now``), then every
        touched peer left with nothing worth keeping (not connected or protected, no address, no
        record: its keys, protocols, latency and metadata go with it). Returns how many addresses went.
        """
        now = self._now(now)
        heap = self._heap
        touched: set[PeerId] = set()
        gone = 0
        while heap and heap[0][0] <= now:
            item = heapq.heappop(heap)
            if not self._current(item):
                continue
            _deadline, _tie, peer, addr, source = item
            p = self._peers[peer]
            touched.add(peer)
            p.view = None
            if addr is None:
                self._drop_record(p)
                continue
            assert source is not None
            a = p.addrs[addr]
            self._drop_source(a, source)
            if not a.sources:
                del p.addrs[addr]
                gone += 1
        self._expired_addrs += gone
        touched |= self._idle
        self._idle.clear()
        for peer in touched:
            p2 = self._peers.get(peer)
            if p2 is not None and not (p2.pinned or p2.addrs or p2.record is not None):
                self._forget(peer)
                self._expired_peers += 1
        return gone

    # -- internals -----------------------------------------------------------------------------------

    def _write(self, peer: PeerId, *, pinned: bool = False) -> _Peer | None:
        """The peer's entry for writing, created if needed (evicting at the bound); None if refused."""
        p = self._peers.get(peer)
        if p is not None:
            self._touch(peer, p)
            return p
        if len(self._peers) >= self.max_peers:
            if self._lru:
                victim = next(iter(self._lru))
                self._evicted_peers += 1
            elif pinned:
                victim = next(iter(self._pinned))
                self._evicted_protected_peers += 1
            else:
                self._rejected_peers += 1
                return None
            self._forget(victim)
        p = self._peers[peer] = _Peer()
        self._lru[peer] = None
        return p

    def _touch(self, peer: PeerId, p: _Peer) -> None:
        (self._pinned if p.pinned else self._lru).move_to_end(peer)

    def _repin(self, peer: PeerId, p: _Peer) -> None:
        self._lru.pop(peer, None)
        self._pinned.pop(peer, None)
        if p.pinned:
            self._pinned[peer] = None
            self._idle.discard(peer)
        else:
            self._lru[peer] = None
            wake = not self._idle
            self._idle.add(peer)
            if wake and self.on_deadline_changed is not None:
                self.on_deadline_changed()  # next_expiry() is now due: check the peer soon

    def _forget(self, peer: PeerId) -> bool:
        p = self._peers.pop(peer, None)
        if p is None:
            return False
        self._timed -= p.timed()
        self._lru.pop(peer, None)
        self._pinned.pop(peer, None)
        self._idle.discard(peer)
        return True

    def _bounded(self, text: str) -> str:
        if len(text) > MAX_VERSION_LENGTH:
            self._truncated_strings += 1
            return text[:MAX_VERSION_LENGTH]
        return text

    def _accept_protocols(self, protocols: Iterable[str], existing: frozenset[str], room: int) -> list[str]:
        accepted: dict[str, None] = {}
        for proto in protocols:
            if not 0 < len(proto) <= MAX_PROTOCOL_LENGTH:
                self._rejected_protocols += 1
            elif proto in accepted or proto in existing:
                continue
            elif len(accepted) < room:
                accepted[proto] = None
            else:
                self._dropped_protocols += 1
        return list(accepted)

    def _replace_source(
        self, peer: PeerId, p: _Peer, addrs: Iterable[Multiaddr], source: AddrSource, ttl: float, now: float
    ) -> None:
        wanted = dict.fromkeys(addrs)
        for a in list(p.addrs.values()):
            if source in a.sources and a.addr not in wanted:
                self._drop_source(a, source)
                if not a.sources:
                    del p.addrs[a.addr]
        expiry = _expiry(now, ttl)
        for addr in wanted:
            self._put_addr(peer, p, addr, source, ttl, expiry, now, extend=False)
        p.view = None

    def _put_addr(
        self,
        peer: PeerId,
        p: _Peer,
        addr: Multiaddr,
        source: AddrSource,
        ttl: float,
        expiry: float,
        now: float,
        *,
        extend: bool,
    ) -> None:
        a = p.addrs.get(addr)
        if a is None:
            if len(p.addrs) >= self.max_addrs_per_peer and not self._make_room(p, source, expiry, now):
                self._rejected_addrs += 1
                return
            a = p.addrs[addr] = _Addr(addr, now)
        a.seen = now
        p.view = None
        old = a.sources.get(source)
        if extend and old is not None and old[1] > now:
            ttl, expiry = max(ttl, old[0]), max(expiry, old[1])
        if old != (ttl, expiry):
            self._set_source(peer, a, source, ttl, expiry)

    def _make_room(self, p: _Peer, source: AddrSource, expiry: float, now: float) -> bool:
        """Free one address slot for an address from ``source``; False if the newcomer must go instead."""
        victim: _Addr | None = None
        victim_key = (-1, 0.0)
        for a in p.addrs.values():
            state = a.live(now)
            if state is None:  # wholly expired but not swept yet: the natural victim
                victim = a
                break
            best, _certified, latest = state
            key = (best, -latest)  # lowest priority first, then soonest expiry
            if key > victim_key:
                victim, victim_key = a, key
        if victim is None:
            return False
        if victim.live(now) is not None:
            best, latest = victim_key[0], -victim_key[1]
            if best < _PRIORITY[source] or (best == _PRIORITY[source] and latest >= expiry):
                return False  # only more trusted (or equally trusted, as long-lived) addresses are left
            self._evicted_addrs += 1
        else:
            self._expired_addrs += 1
        for s in list(victim.sources):
            self._drop_source(victim, s)
        del p.addrs[victim.addr]
        return True

    def _sort(self, p: _Peer, now: float) -> None:
        rows: list[tuple[tuple[bool, int, float], Multiaddr]] = []
        until = math.inf
        for a in p.addrs.values():
            for _ttl, exp in a.sources.values():
                if now < exp < until:
                    until = exp
            state = a.live(now)
            if state is not None:
                best, certified, _latest = state
                rows.append(((not certified, best, -a.seen), a.addr))
        rows.sort(key=lambda row: row[0])  # stable: ties keep the order the addresses were first given
        p.view = [addr for _key, addr in rows]
        p.view_from = now
        p.view_until = until

    def _set_source(self, peer: PeerId, a: _Addr, source: AddrSource, ttl: float, expiry: float) -> None:
        old = a.sources.get(source)
        if old is not None and old[1] != math.inf:
            self._timed -= 1
        a.sources[source] = (ttl, expiry)
        if expiry != math.inf:
            self._timed += 1
            self._push(expiry, peer, a.addr, source)

    def _drop_source(self, a: _Addr, source: AddrSource) -> None:
        _ttl, expiry = a.sources.pop(source)
        if expiry != math.inf:
            self._timed -= 1

    def _set_record(self, peer: PeerId, p: _Peer, data: bytes | None, ttl: float, expiry: float) -> None:
        if p.record is not None and p.record_expiry != math.inf:
            self._timed -= 1
        p.record, p.record_ttl, p.record_expiry = data, ttl, expiry
        if expiry != math.inf:
            self._timed += 1
            self._push(expiry, peer, None, None)

    def _drop_record(self, p: _Peer) -> None:
        if p.record is not None and p.record_expiry != math.inf:
            self._timed -= 1
        p.record, p.record_seq, p.record_ttl, p.record_expiry = None, 0, 0.0, -math.inf

    def _push(self, deadline: float, peer: PeerId, addr: Multiaddr | None, source: AddrSource | None) -> None:
        heap = self._heap
        earlier = not heap or deadline < heap[0][0]
        heapq.heappush(heap, (deadline, next(self._tie), peer, addr, source))
        if len(heap) > 2 * self._timed + 64:
            self._rebuild()
        if earlier and self.on_deadline_changed is not None:
            self.on_deadline_changed()

    def _rebuild(self) -> None:
        """Drop stale heap items (superseded or removed deadlines) in one O(n) pass."""
        seen: set[tuple[PeerId, Multiaddr | None, AddrSource | None, float]] = set()
        heap: list[_HeapItem] = []
        for item in self._heap:
            key = (item[2], item[3], item[4], item[0])
            if key not in seen and self._current(item):
                seen.add(key)
                heap.append(item)
        heapq.heapify(heap)
        self._heap = heap

    def _current(self, item: _HeapItem) -> bool:
        """Whether a heap item still describes a held deadline (lazy deletion)."""
        deadline, _tie, peer, addr, source = item
        p = self._peers.get(peer)
        if p is None:
            return False
        if addr is None:
            return p.record is not None and p.record_expiry == deadline
        a = p.addrs.get(addr)
        if a is None or source is None:
            return False
        held = a.sources.get(source)
        return held is not None and held[1] == deadline
