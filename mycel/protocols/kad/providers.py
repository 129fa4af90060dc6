"""Provider records (ADD_PROVIDER / GET_PROVIDERS): who says they have the content behind a key.

:class:`ProviderStore` is the sans-IO, in-memory store; ``mycel.protocols.kad.store.SqliteProviderStore`` keeps
the same records on disk behind the same :class:`ProviderStorage` interface. Times are wall-clock seconds
since the Unix epoch, passed in as ``now`` (a record outlives a restart, so a monotonic clock would not do).

Parameters (sources):

* :data:`PROVIDE_VALIDITY` 48 h: a record not re-added for this long expires (go-libp2p-kad-dht amino
  ``DefaultProvideValidity``; the provider republishes every 22 h).
* :data:`PROVIDER_ADDR_TTL` 24 h: how long a provider's addresses are returned with it and kept in the
  peerstore (go ``DefaultProviderAddrTTL``); after that only its id is returned.
* :data:`MAX_PROVIDER_KEY_SIZE` 80 bytes: go's ``handleAddProvider`` / ``handleGetProviders`` refuse longer keys.
* :data:`DEFAULT_MAX_PROVIDERS_PER_KEY` 20 (rust-libp2p ``max_providers_per_key`` = K) and
  :data:`DEFAULT_MAX_PROVIDER_RECORDS` 100,000 in all (proposed; go has no bound): at either bound the
  record added or re-added longest ago is dropped to make room (of that key, or of the whole store).
* :data:`MAX_PROVIDER_ADDRS` 32 addresses of at most :data:`MAX_ADDR_SIZE` 1 KiB each (proposed; keeps one
  provider entry well under go's 8 KiB peer-record bound).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from mycel.core.errors import DecodeError, ProtocolViolation
from mycel.core.peer_id import PeerId
from mycel.protocols.kad import dht_pb2

__all__ = [
    "DEFAULT_MAX_PROVIDERS_PER_KEY",
    "DEFAULT_MAX_PROVIDER_RECORDS",
    "MAX_ADDR_SIZE",
    "MAX_PROVIDER_ADDRS",
    "MAX_PROVIDER_KEY_SIZE",
    "PROVIDER_ADDR_TTL",
    "PROVIDE_VALIDITY",
    "InvalidProviderKey",
    "PeerstoreUpdate",
    "ProviderPeer",
    "ProviderRecord",
    "ProviderStorage",
    "ProviderStore",
    "accept_add_provider",
    "cap_provider_addrs",
    "check_provider_key",
]

PROVIDE_VALIDITY: Final = 48 * 3600.0
PROVIDER_ADDR_TTL: Final = 24 * 3600.0
MAX_PROVIDER_KEY_SIZE: Final = 80
DEFAULT_MAX_PROVIDERS_PER_KEY: Final = 20
DEFAULT_MAX_PROVIDER_RECORDS: Final = 100_000
MAX_PROVIDER_ADDRS: Final = 32
MAX_ADDR_SIZE: Final = 1024


class InvalidProviderKey(ProtocolViolation):
    """An ADD_PROVIDER / GET_PROVIDERS key that is empty or over :data:`MAX_PROVIDER_KEY_SIZE` bytes."""


def check_provider_key(key: bytes) -> None:
    """Raise :class:`InvalidProviderKey` unless ``key`` is 1 to :data:`MAX_PROVIDER_KEY_SIZE` bytes."""
    if not key or len(key) > MAX_PROVIDER_KEY_SIZE:
        raise InvalidProviderKey(f"provider key of {len(key)} bytes (1..{MAX_PROVIDER_KEY_SIZE})")


def cap_provider_addrs(addrs: Iterable[bytes]) -> tuple[bytes, ...]:
    """The first :data:`MAX_PROVIDER_ADDRS` distinct non-empty addresses of at most :data:`MAX_ADDR_SIZE` bytes."""
    out: dict[bytes, None] = {}
    for addr in addrs:
        if 0 < len(addr) <= MAX_ADDR_SIZE:
            out[bytes(addr)] = None
            if len(out) == MAX_PROVIDER_ADDRS:
                break
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ProviderPeer:
    """A provider and its binary multiaddrs, as accepted from an ADD_PROVIDER message."""

    peer: PeerId
    """The provider: always the sender of the ADD_PROVIDER."""
    addrs: tuple[bytes, ...]
    """Its binary multiaddrs, capped (:data:`MAX_PROVIDER_ADDRS`, :data:`MAX_ADDR_SIZE`)."""


@dataclass(frozen=True, slots=True)
class PeerstoreUpdate:
    """What the driver should put in the peerstore after an add: ``addrs`` of ``peer`` for ``ttl`` seconds."""

    peer: PeerId
    addrs: tuple[bytes, ...]
    ttl: float


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    """One provider of one key. ``addrs`` is empty once :data:`PROVIDER_ADDR_TTL` has passed since ``added``
    (the provider is then returned by id only); ``added`` is the wall-clock time of the last add."""

    key: bytes
    provider: PeerId
    addrs: tuple[bytes, ...]
    added: float


class ProviderStorage(Protocol):
    """What the DHT driver needs of a provider store (in memory or on disk)."""

    def add(self, key: bytes, provider: PeerId, addrs: Iterable[bytes], now: float) -> PeerstoreUpdate:
        """Add or refresh ``provider`` for ``key`` at ``now``; returns the peerstore update for its addresses."""
        ...

    def get(self, key: bytes, now: float, limit: int | None = None) -> list[ProviderRecord]:
        """The unexpired providers of ``key``, most recently added first, at most ``limit``."""
        ...

    def expire(self, now: float) -> int:
        """Drop every record expired at ``now``; how many were dropped."""
        ...

    def next_expiry(self) -> float | None:
        """When the next record expires (``None`` when empty): the driver's timer deadline."""
        ...

    def __len__(self) -> int:
        """How many provider records are held."""
        ...


class ProviderStore:
    """The in-memory provider store (sans-IO). Bounded: see the module doc for what happens at each bound.

    Records are kept in the order they were last added, which is also their expiry order (validity is the
    same for all), so :meth:`expire` and :meth:`next_expiry` cost O(1) per record. ``now`` should not go back;
    if it does, records are still dropped, only possibly later than exact.
    """

    __slots__ = ("_addr_ttl", "_by_key", "_max_per_key", "_max_records", "_order", "_validity")

    def __init__(
        self,
        *,
        validity: float = PROVIDE_VALIDITY,
        addr_ttl: float = PROVIDER_ADDR_TTL,
        max_per_key: int = DEFAULT_MAX_PROVIDERS_PER_KEY,
        max_records: int = DEFAULT_MAX_PROVIDER_RECORDS,
    ) -> None:
        if max_per_key < 1 or max_records < 1:
            raise ValueError("provider store bounds must be at least 1")
        self._validity = validity
        self._addr_ttl = addr_ttl
        self._max_per_key = max_per_key
        self._max_records = max_records
        # (key, provider id bytes) -> record, in last-added order.
        self._order: OrderedDict[tuple[bytes, bytes], ProviderRecord] = OrderedDict()
        # key -> provider id bytes, in last-added order (dicts keep insertion order).
        self._by_key: dict[bytes, dict[bytes, None]] = {}

    def __len__(self) -> int:
        return len(self._order)

    @property
    def key_count(self) -> int:
        """How many keys have at least one provider."""
        return len(self._by_key)

    def add(self, key: bytes, provider: PeerId, addrs: Iterable[bytes], now: float) -> PeerstoreUpdate:
        """Add or refresh ``provider`` for ``key`` (:class:`InvalidProviderKey` on a bad key). Addresses are
        capped (:data:`MAX_PROVIDER_ADDRS`); at a bound the oldest record of the key (or store) is dropped."""
        check_provider_key(key)
        pid = provider.to_bytes()
        capped = cap_provider_addrs(addrs)
        self._remove(key, pid)
        peers = self._by_key.setdefault(key, {})
        if len(peers) >= self._max_per_key:
            self._remove(key, next(iter(peers)))
            peers = self._by_key.setdefault(key, {})
        if len(self._order) >= self._max_records:
            oldest_key, oldest_pid = next(iter(self._order))
            self._remove(oldest_key, oldest_pid)
            peers = self._by_key.setdefault(key, {})
        peers[pid] = None
        self._order[(key, pid)] = ProviderRecord(key, provider, capped, now)
        return PeerstoreUpdate(provider, capped, self._addr_ttl)

    def remove(self, key: bytes, provider: PeerId) -> bool:
        """Forget ``provider`` for ``key``; whether it was there."""
        return self._remove(key, provider.to_bytes())

    def _remove(self, key: bytes, pid: bytes) -> bool:
        if self._order.pop((key, pid), None) is None:
            return False
        peers = self._by_key[key]
        del peers[pid]
        if not peers:
            del self._by_key[key]
        return True

    def get(self, key: bytes, now: float, limit: int | None = None) -> list[ProviderRecord]:
        """The unexpired providers of ``key``, most recently added first (at most ``limit``); a provider's
        addresses are left out once their TTL has passed."""
        out: list[ProviderRecord] = []
        for pid in reversed(self._by_key.get(key, {})):
            if limit is not None and len(out) >= limit:
                break
            record = self._order[(key, pid)]
            if now >= record.added + self._validity:
                continue
            if record.addrs and now >= record.added + self._addr_ttl:
                record = ProviderRecord(key, record.provider, (), record.added)
            out.append(record)
        return out

    def expire(self, now: float) -> int:
        """Drop every record added :data:`PROVIDE_VALIDITY` or more before ``now``; how many were dropped."""
        dropped = 0
        while self._order:
            (key, pid), record = next(iter(self._order.items()))
            if now < record.added + self._validity:
                break
            self._remove(key, pid)
            dropped += 1
        return dropped

    def next_expiry(self) -> float | None:
        """When the oldest record expires, or ``None`` when the store is empty."""
        if not self._order:
            return None
        return next(iter(self._order.values())).added + self._validity


def accept_add_provider(sender: PeerId, message: dht_pb2.Message) -> list[ProviderPeer]:
    """The provider entries of an ADD_PROVIDER ``message`` that a server may store: only the ``sender``'s own
    (the spec: "only store providerPeers whose id equals the sender"), with at least one address (as go),
    addresses capped. Entries for other peers or with malformed ids are ignored; a bad key raises
    :class:`InvalidProviderKey`. At most one entry is returned."""
    check_provider_key(message.key)
    sender_bytes = sender.to_bytes()
    for entry in message.providerPeers:
        if entry.id != sender_bytes:
            continue
        try:
            peer = PeerId.from_bytes(entry.id)
        except DecodeError:
            continue
        addrs = cap_provider_addrs(entry.addrs)
        if addrs:
            return [ProviderPeer(peer, addrs)]
    return []
