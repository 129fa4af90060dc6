"""Where a DHT server keeps value records and provider records: a small interface, in memory or in SQLite.

* :class:`RecordStore` — get / put / delete / iterate with expiry (:data:`~mycel.protocols.kad.records.MAX_RECORD_AGE`,
  48 h after the record was stored, as go's ``MaxRecordAge``), bounded (:data:`DEFAULT_MAX_RECORDS`, 1,024 as
  rust-libp2p's ``MemoryStoreConfig::max_records``; at the bound the record stored longest ago is evicted).
  :class:`MemoryRecordStore` and :class:`SqliteRecordStore` implement it.
* :class:`~mycel.protocols.kad.providers.ProviderStorage` — :class:`~mycel.protocols.kad.providers.ProviderStore`
  in memory, :class:`SqliteProviderStore` on disk.
* :func:`put_validated` / :func:`get_validated` — the PUT_VALUE / GET_VALUE server rules on top of any store:
  a record that fails validation, or that loses the namespace's ``select`` against the stored one, is never
  stored; a stored record that is no longer valid (an expired IPNS record) is dropped instead of served.

Times given to stores are wall-clock seconds since the Unix epoch (``now``, passed in); records outlive a
restart of the process, so a monotonic clock would not do.

**The SQLite classes block** (disk I/O): the trio driver must call them off the event loop
(``trio.to_thread.run_sync``), never directly from a task. Each instance owns one connection, opened with
``check_same_thread=False`` so worker threads may use it, and every method holds the instance's lock, so calls
are serialized (one at a time, from whatever thread). The schema is versioned with ``PRAGMA user_version``
(:data:`SCHEMA_VERSION`); a file written by a newer schema is refused rather than misread. The same file may
hold both records and providers (two instances, two connections).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Final, Protocol, Self

from mycel.core.errors import DecodeError, MycelError
from mycel.core.peer_id import PeerId
from mycel.protocols.kad import dht_pb2
from mycel.protocols.kad.providers import (
    DEFAULT_MAX_PROVIDER_RECORDS,
    DEFAULT_MAX_PROVIDERS_PER_KEY,
    PROVIDE_VALIDITY,
    PROVIDER_ADDR_TTL,
    PeerstoreUpdate,
    ProviderRecord,
    cap_provider_addrs,
    check_provider_key,
)
from mycel.protocols.kad.records import (
    MAX_RECORD_AGE,
    DhtRecord,
    InvalidRecord,
    Validator,
    check_record_size,
    to_unix_ns,
)

__all__ = [
    "DEFAULT_MAX_RECORDS",
    "MAX_RECORD_AGE_SECONDS",
    "SCHEMA_VERSION",
    "MemoryRecordStore",
    "RecordStore",
    "SqliteProviderStore",
    "SqliteRecordStore",
    "StaleRecord",
    "StoreError",
    "get_validated",
    "put_validated",
]

DEFAULT_MAX_RECORDS: Final = 1024
MAX_RECORD_AGE_SECONDS: Final = MAX_RECORD_AGE.total_seconds()
SCHEMA_VERSION: Final = 1


class StoreError(MycelError):
    """A datastore could not be opened or used (e.g. written by a newer schema)."""


class StaleRecord(InvalidRecord):
    """A PUT_VALUE whose record loses ``select`` against the one already stored (go: "can't replace a newer
    value with an older value")."""


class RecordStore(Protocol):
    """Value records by key, each expiring ``max_age`` seconds after it was stored, bounded in number."""

    def get(self, key: bytes, now: float) -> DhtRecord | None:
        """The record stored under ``key`` unless it has expired at ``now`` (an expired one is deleted)."""
        ...

    def put(self, record: DhtRecord, now: float) -> None:
        """Store (or replace) ``record`` under its key at ``now``; over the caps it raises
        :class:`~mycel.protocols.kad.records.RecordTooLarge`. Does not validate: see :func:`put_validated`."""
        ...

    def delete(self, key: bytes) -> bool:
        """Remove ``key``'s record; whether there was one."""
        ...

    def iterate(self, now: float) -> Iterator[DhtRecord]:
        """Every unexpired record, stored longest ago first (a snapshot: the store may change meanwhile)."""
        ...

    def expire(self, now: float) -> int:
        """Delete every record expired at ``now``; how many."""
        ...

    def next_expiry(self) -> float | None:
        """When the next record expires (``None`` when empty): the driver's timer deadline."""
        ...

    def __len__(self) -> int:
        """How many records are held (expired ones not yet collected included)."""
        ...


class MemoryRecordStore:
    """The in-memory :class:`RecordStore` (sans-IO): records in the order they were stored, so eviction and
    expiry take the oldest in O(1)."""

    __slots__ = ("_max_age", "_max_records", "_records")

    def __init__(self, *, max_records: int = DEFAULT_MAX_RECORDS, max_age: float = MAX_RECORD_AGE_SECONDS) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self._max_records = max_records
        self._max_age = max_age
        self._records: OrderedDict[bytes, tuple[DhtRecord, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: bytes, now: float) -> DhtRecord | None:
        """See :meth:`RecordStore.get`."""
        item = self._records.get(key)
        if item is None:
            return None
        if now >= item[1] + self._max_age:
            del self._records[key]
            return None
        return item[0]

    def put(self, record: DhtRecord, now: float) -> None:
        """See :meth:`RecordStore.put`; at the bound the record stored longest ago is evicted."""
        check_record_size(record.key, record.value)
        self._records.pop(record.key, None)
        while len(self._records) >= self._max_records:
            self._records.popitem(last=False)
        self._records[record.key] = (record, now)

    def delete(self, key: bytes) -> bool:
        """See :meth:`RecordStore.delete`."""
        return self._records.pop(key, None) is not None

    def iterate(self, now: float) -> Iterator[DhtRecord]:
        """See :meth:`RecordStore.iterate`."""
        return iter([rec for rec, stored in self._records.values() if now < stored + self._max_age])

    def expire(self, now: float) -> int:
        """See :meth:`RecordStore.expire`."""
        dropped = 0
        while self._records:
            _, stored = next(iter(self._records.values()))
            if now < stored + self._max_age:
                break
            self._records.popitem(last=False)
            dropped += 1
        return dropped

    def next_expiry(self) -> float | None:
        """See :meth:`RecordStore.next_expiry`."""
        if not self._records:
            return None
        return next(iter(self._records.values()))[1] + self._max_age


# --------------------------------------------------------------------------------------------- server rules


def _seconds(now: datetime) -> float:
    return to_unix_ns(now) / 1e9


def put_validated(store: RecordStore, validator: Validator, key: bytes, value: bytes, now: datetime) -> DhtRecord:
    """PUT_VALUE on a server: validate ``value`` for ``key`` at ``now`` (:class:`InvalidRecord` otherwise), keep
    the stored record if the namespace's ``select`` prefers it (:class:`StaleRecord`), else store the new one
    with ``timeReceived`` = ``now``; returns what was stored."""
    validator.validate(key, value, now)
    at = _seconds(now)
    existing = store.get(key, at)
    if existing is not None and existing.value != value:
        try:
            validator.validate(key, existing.value, now)
        except InvalidRecord:
            pass  # the stored one is no longer valid: replace it
        else:
            if validator.select(key, [value, existing.value]) != 0:
                raise StaleRecord("the stored record is better than the one put")
    record = DhtRecord.received(key, value, now)
    store.put(record, at)
    return record


def get_validated(store: RecordStore, validator: Validator, key: bytes, now: datetime) -> DhtRecord | None:
    """GET_VALUE on a server: the stored record of ``key`` if it is still valid at ``now``; one that no longer
    validates (e.g. an expired IPNS record) is deleted and ``None`` returned."""
    record = store.get(key, _seconds(now))
    if record is None:
        return None
    try:
        validator.validate(key, record.value, now)
    except InvalidRecord:
        store.delete(key)
        return None
    return record


# --------------------------------------------------------------------------------------------- SQLite

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS records (
    key BLOB PRIMARY KEY,
    value BLOB NOT NULL,
    time_received TEXT NOT NULL,
    stored_at REAL NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_seq ON records (seq);
CREATE INDEX IF NOT EXISTS records_stored_at ON records (stored_at);
CREATE TABLE IF NOT EXISTS providers (
    key BLOB NOT NULL,
    provider BLOB NOT NULL,
    addrs BLOB NOT NULL,
    added REAL NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (key, provider)
);
CREATE INDEX IF NOT EXISTS providers_key_seq ON providers (key, seq);
CREATE INDEX IF NOT EXISTS providers_seq ON providers (seq);
CREATE INDEX IF NOT EXISTS providers_added ON providers (added);
"""


def _open(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection to ``path`` with the current schema (created if new); :class:`StoreError` if it cannot."""
    try:
        conn = sqlite3.connect(os.fspath(path), check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{path} has schema version {version}; this mycel knows up to {SCHEMA_VERSION}")
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot use {path}: {exc}") from exc
    except StoreError:
        conn.close()
        raise
    return conn


class _SqliteBase:
    """One connection, one lock: every public method runs under the lock (see the module doc)."""

    __slots__ = ("_conn", "_lock", "_seq")

    def __init__(self, path: str | os.PathLike[str], table: str) -> None:
        self._conn = _open(path)
        self._lock = threading.Lock()
        self._seq: int = self._conn.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {table}").fetchone()[0]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the lock; an ``sqlite3`` error inside (disk full, closed, damaged file) becomes :class:`StoreError`."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise StoreError(f"datastore: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """:meth:`_locked` around one write transaction, rolled back if anything inside raises."""
        with self._locked():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def close(self) -> None:
        """Close the connection (idempotent); the data stays in the file."""
        with self._locked():
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SqliteRecordStore(_SqliteBase):
    """A :class:`RecordStore` in an SQLite file: records survive reopening. Blocking — call it off the event
    loop; calls are serialized (see the module doc). Over ``max_records`` (also checked at open) the record
    stored longest ago is evicted."""

    __slots__ = ("_max_age", "_max_records")

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_records: int = DEFAULT_MAX_RECORDS,
        max_age: float = MAX_RECORD_AGE_SECONDS,
    ) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        super().__init__(path, "records")
        self._max_records = max_records
        self._max_age = max_age
        with self._transaction():
            self._evict_to(max_records)

    def __len__(self) -> int:
        with self._locked():
            count: int = self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        return count

    def _evict_to(self, limit: int) -> None:
        self._conn.execute(
            "DELETE FROM records WHERE key IN (SELECT key FROM records ORDER BY seq"
            " LIMIT max(0, (SELECT COUNT(*) FROM records) - ?))",
            (limit,),
        )

    def get(self, key: bytes, now: float) -> DhtRecord | None:
        """See :meth:`RecordStore.get`."""
        with self._locked():
            row = self._conn.execute(
                "SELECT value, time_received, stored_at FROM records WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                return None
            if now >= row[2] + self._max_age:
                self._conn.execute("DELETE FROM records WHERE key = ?", (key,))
                return None
        return DhtRecord(key, row[0], row[1])

    def put(self, record: DhtRecord, now: float) -> None:
        """See :meth:`RecordStore.put`."""
        check_record_size(record.key, record.value)
        with self._transaction() as c:
            c.execute("DELETE FROM records WHERE key = ?", (record.key,))
            self._evict_to(self._max_records - 1)
            c.execute(
                "INSERT INTO records (key, value, time_received, stored_at, seq) VALUES (?, ?, ?, ?, ?)",
                (record.key, record.value, record.time_received, now, self._next_seq()),
            )

    def delete(self, key: bytes) -> bool:
        """See :meth:`RecordStore.delete`."""
        with self._locked():
            return self._conn.execute("DELETE FROM records WHERE key = ?", (key,)).rowcount > 0

    def iterate(self, now: float) -> Iterator[DhtRecord]:
        """See :meth:`RecordStore.iterate`."""
        with self._locked():
            rows = self._conn.execute(
                "SELECT key, value, time_received FROM records WHERE stored_at > ? ORDER BY seq",
                (now - self._max_age,),
            ).fetchall()
        return iter([DhtRecord(k, v, t) for k, v, t in rows])

    def expire(self, now: float) -> int:
        """See :meth:`RecordStore.expire`."""
        with self._locked():
            cur = self._conn.execute("DELETE FROM records WHERE stored_at <= ?", (now - self._max_age,))
            return cur.rowcount

    def next_expiry(self) -> float | None:
        """See :meth:`RecordStore.next_expiry`."""
        with self._locked():
            oldest = self._conn.execute("SELECT MIN(stored_at) FROM records").fetchone()[0]
        return None if oldest is None else float(oldest) + self._max_age


def _encode_addrs(addrs: tuple[bytes, ...]) -> bytes:
    data: bytes = dht_pb2.Message.Peer(addrs=addrs).SerializeToString()
    return data


def _decode_addrs(data: bytes) -> tuple[bytes, ...]:
    peer = dht_pb2.Message.Peer()
    try:
        peer.ParseFromString(data)
    except Exception:  # noqa: BLE001 - a damaged row: serve the provider without addresses
        return ()
    return tuple(peer.addrs)


class SqliteProviderStore(_SqliteBase):
    """A :class:`~mycel.protocols.kad.providers.ProviderStorage` in an SQLite file, with the same rules as
    :class:`~mycel.protocols.kad.providers.ProviderStore` (validity, address TTL, both bounds, oldest dropped).
    Blocking — call it off the event loop; calls are serialized (see the module doc)."""

    __slots__ = ("_addr_ttl", "_max_per_key", "_max_records", "_validity")

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        validity: float = PROVIDE_VALIDITY,
        addr_ttl: float = PROVIDER_ADDR_TTL,
        max_per_key: int = DEFAULT_MAX_PROVIDERS_PER_KEY,
        max_records: int = DEFAULT_MAX_PROVIDER_RECORDS,
    ) -> None:
        if max_per_key < 1 or max_records < 1:
            raise ValueError("provider store bounds must be at least 1")
        super().__init__(path, "providers")
        self._validity = validity
        self._addr_ttl = addr_ttl
        self._max_per_key = max_per_key
        self._max_records = max_records

    def __len__(self) -> int:
        with self._locked():
            count: int = self._conn.execute("SELECT COUNT(*) FROM providers").fetchone()[0]
        return count

    def add(self, key: bytes, provider: PeerId, addrs: Iterable[bytes], now: float) -> PeerstoreUpdate:
        """See :meth:`~mycel.protocols.kad.providers.ProviderStorage.add`."""
        check_provider_key(key)
        capped = cap_provider_addrs(addrs)
        pid = provider.to_bytes()
        with self._transaction() as c:
            c.execute("DELETE FROM providers WHERE key = ? AND provider = ?", (key, pid))
            c.execute(
                "DELETE FROM providers WHERE rowid IN (SELECT rowid FROM providers WHERE key = ? ORDER BY seq"
                " LIMIT max(0, (SELECT COUNT(*) FROM providers WHERE key = ?) - ?))",
                (key, key, self._max_per_key - 1),
            )
            c.execute(
                "DELETE FROM providers WHERE rowid IN (SELECT rowid FROM providers ORDER BY seq"
                " LIMIT max(0, (SELECT COUNT(*) FROM providers) - ?))",
                (self._max_records - 1,),
            )
            c.execute(
                "INSERT INTO providers (key, provider, addrs, added, seq) VALUES (?, ?, ?, ?, ?)",
                (key, pid, _encode_addrs(capped), now, self._next_seq()),
            )
        return PeerstoreUpdate(provider, capped, self._addr_ttl)

    def get(self, key: bytes, now: float, limit: int | None = None) -> list[ProviderRecord]:
        """See :meth:`~mycel.protocols.kad.providers.ProviderStorage.get`."""
        with self._locked():
            rows = self._conn.execute(
                "SELECT provider, addrs, added FROM providers WHERE key = ? AND added > ? ORDER BY seq DESC LIMIT ?",
                (key, now - self._validity, -1 if limit is None else limit),
            ).fetchall()
        out: list[ProviderRecord] = []
        for pid, addrs, added in rows:
            try:
                peer = PeerId.from_bytes(pid)
            except DecodeError:
                continue  # a damaged row
            kept = _decode_addrs(addrs) if now < added + self._addr_ttl else ()
            out.append(ProviderRecord(key, peer, kept, added))
        return out

    def remove(self, key: bytes, provider: PeerId) -> bool:
        """Forget ``provider`` for ``key``; whether it was there."""
        with self._locked():
            cur = self._conn.execute(
                "DELETE FROM providers WHERE key = ? AND provider = ?", (key, provider.to_bytes())
            )
            return cur.rowcount > 0

    def expire(self, now: float) -> int:
        """See :meth:`~mycel.protocols.kad.providers.ProviderStorage.expire`."""
        with self._locked():
            return self._conn.execute("DELETE FROM providers WHERE added <= ?", (now - self._validity,)).rowcount

    def next_expiry(self) -> float | None:
        """See :meth:`~mycel.protocols.kad.providers.ProviderStorage.next_expiry`."""
        with self._locked():
            oldest = self._conn.execute("SELECT MIN(added) FROM providers").fetchone()[0]
        return None if oldest is None else float(oldest) + self._validity
