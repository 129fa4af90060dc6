"""Record stores (memory and SQLite): expiry, bounds, persistence across reopening, schema versioning, thread
use; and the PUT_VALUE / GET_VALUE server rules (invalid or stale records are never stored)."""

from __future__ import annotations

import pathlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycel.core.identity import Identity
from mycel.protocols.kad.providers import PROVIDE_VALIDITY
from mycel.protocols.kad.records import (
    MAX_RECORD_VALUE_SIZE,
    DhtRecord,
    InvalidRecord,
    RecordTooLarge,
    default_validator,
    to_unix_ns,
)
from mycel.protocols.kad.store import (
    MAX_RECORD_AGE_SECONDS,
    SCHEMA_VERSION,
    MemoryRecordStore,
    RecordStore,
    SqliteProviderStore,
    SqliteRecordStore,
    StaleRecord,
    StoreError,
    get_validated,
    put_validated,
)
from tests.unit.kad.test_providers import memory_or_sqlite
from tests.unit.kad.test_records import ipns_key, ipns_record

T0 = 1_800_000_000.0
NOW = datetime.fromtimestamp(T0, UTC)

StoreFactory = Callable[..., RecordStore]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[StoreFactory]:
    yield from memory_or_sqlite(request.param, tmp_path, MemoryRecordStore, SqliteRecordStore)


def rec(i: int, value: bytes = b"v") -> DhtRecord:
    return DhtRecord(b"/v/%d" % i, value, "2027-01-15T08:00:00Z")


def test_put_get_replace_delete(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.get(b"/v/1", T0) is None and store.next_expiry() is None
    store.put(rec(1), T0)
    assert store.get(b"/v/1", T0 + 1) == rec(1)
    store.put(rec(1, b"w"), T0 + 5)
    assert store.get(b"/v/1", T0 + 6) == rec(1, b"w") and len(store) == 1
    assert store.next_expiry() == T0 + 5 + MAX_RECORD_AGE_SECONDS
    assert store.delete(b"/v/1") and not store.delete(b"/v/1")
    assert len(store) == 0


def test_expiry_48h(make_store: StoreFactory) -> None:
    store = make_store()
    store.put(rec(1), T0)
    store.put(rec(2), T0 + 10)
    assert [r.key for r in store.iterate(T0 + MAX_RECORD_AGE_SECONDS)] == [b"/v/2"]
    assert store.get(b"/v/1", T0 + MAX_RECORD_AGE_SECONDS) is None  # expired: gone, never served
    assert len(store) == 1
    store.put(rec(3), T0 + 20)
    assert store.expire(T0 + MAX_RECORD_AGE_SECONDS + 10) == 1
    assert store.next_expiry() == T0 + 20 + MAX_RECORD_AGE_SECONDS
    assert [r.key for r in store.iterate(T0)] == [b"/v/3"]


def test_bound_evicts_oldest(make_store: StoreFactory) -> None:
    store = make_store(max_records=3)
    for i in range(5):
        store.put(rec(i), T0 + i)
    assert len(store) == 3
    assert [r.key for r in store.iterate(T0 + 10)] == [b"/v/2", b"/v/3", b"/v/4"]
    store.put(rec(2, b"new"), T0 + 10)  # a replaced record counts as newest
    store.put(rec(9), T0 + 11)
    assert [r.key for r in store.iterate(T0 + 12)] == [b"/v/4", b"/v/2", b"/v/9"]


def test_oversized_values_refused(make_store: StoreFactory) -> None:
    store = make_store()
    with pytest.raises(RecordTooLarge):
        store.put(DhtRecord(b"/v/x", b"x" * (MAX_RECORD_VALUE_SIZE + 1)), T0)
    assert len(store) == 0
    with pytest.raises(ValueError):
        make_store(max_records=0)


# --------------------------------------------------------------------------------------------- SQLite only


def test_sqlite_records_and_providers_survive_reopening(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "dht.sqlite3"
    provider = Identity.from_seed(b"\x05" * 32).peer_id
    with SqliteRecordStore(path) as records, SqliteProviderStore(path) as providers:
        for i in range(3):
            records.put(rec(i), T0 + i)
        providers.add(b"key", provider, [b"\x04\x7f\x00\x00\x01"], T0)
    with SqliteRecordStore(path, max_records=3) as records, SqliteProviderStore(path) as providers:
        assert records.get(b"/v/1", T0 + 5) == rec(1)
        assert len(records) == 3
        records.put(rec(7), T0 + 7)  # eviction order carries over the reopen: /v/0 goes
        assert [r.key for r in records.iterate(T0 + 8)] == [b"/v/1", b"/v/2", b"/v/7"]
        got = providers.get(b"key", T0 + 1)
        assert [(p.provider, p.addrs) for p in got] == [(provider, (b"\x04\x7f\x00\x00\x01",))]
        assert providers.next_expiry() == T0 + PROVIDE_VALIDITY
        assert providers.remove(b"key", provider) and len(providers) == 0
    with SqliteRecordStore(path, max_records=2) as records:  # a smaller bound trims at open
        assert [r.key for r in records.iterate(T0 + 8)] == [b"/v/2", b"/v/7"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_sqlite_refuses_newer_schema_and_garbage(tmp_path: pathlib.Path) -> None:
    newer = tmp_path / "newer.sqlite3"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="schema version"):
        SqliteRecordStore(newer)
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError):
        SqliteRecordStore(garbage)
    with pytest.raises(StoreError):
        SqliteProviderStore(tmp_path / "no" / "such" / "dir.sqlite3")
    closed = SqliteRecordStore(tmp_path / "closed.sqlite3")
    closed.close()
    closed.close()  # idempotent
    with pytest.raises(StoreError):  # sqlite3's own errors never escape
        closed.put(rec(1), T0)


def test_sqlite_calls_from_worker_threads_are_serialized(tmp_path: pathlib.Path) -> None:
    store = SqliteRecordStore(tmp_path / "threads.sqlite3", max_records=10_000)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(50):
                store.put(rec(t * 1000 + i), T0 + i)
                assert store.get(b"/v/%d" % (t * 1000 + i), T0 + i) is not None
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    store.close()
    assert errors == []
    with SqliteRecordStore(tmp_path / "threads.sqlite3", max_records=10_000) as again:
        assert len(again) == 200


# --------------------------------------------------------------------------------------------- server rules


def test_put_validated_stores_only_valid_and_newer(make_store: StoreFactory) -> None:
    store = make_store()
    validator = default_validator()
    ident = Identity.generate()
    key = ipns_key(ident)
    seq2 = ipns_record(ident.private_key, sequence=2, eol=NOW + timedelta(hours=10))
    seq1 = ipns_record(ident.private_key, sequence=1, eol=NOW + timedelta(hours=20))
    stored = put_validated(store, validator, key, seq2, NOW)
    assert stored.time_received == "2027-01-15T08:00:00Z" and stored.received_at_ns() == to_unix_ns(NOW)
    with pytest.raises(StaleRecord):
        put_validated(store, validator, key, seq1, NOW)
    assert store.get(key, T0) == stored
    with pytest.raises(InvalidRecord):
        put_validated(store, validator, key, ipns_record(Identity.generate().private_key), NOW)
    with pytest.raises(InvalidRecord):
        put_validated(store, validator, b"/v/unknown", b"x", NOW)
    with pytest.raises(InvalidRecord):
        put_validated(store, validator, key, b"junk", NOW)
    assert len(store) == 1 and store.get(key, T0) == stored
    seq3 = ipns_record(ident.private_key, sequence=3, eol=NOW + timedelta(hours=1))
    assert put_validated(store, validator, key, seq3, NOW).value == seq3


def test_expired_stored_record_is_replaced_and_not_served(make_store: StoreFactory) -> None:
    store = make_store()
    validator = default_validator()
    ident = Identity.generate()
    key = ipns_key(ident)
    put_validated(store, validator, key, ipns_record(ident.private_key, sequence=5, eol=NOW + timedelta(hours=1)), NOW)
    later = NOW + timedelta(hours=2)
    assert get_validated(store, validator, key, NOW) is not None
    assert get_validated(store, validator, key, later) is None  # expired IPNS: dropped, not served
    assert len(store) == 0
    put_validated(store, validator, key, ipns_record(ident.private_key, sequence=5, eol=NOW + timedelta(hours=1)), NOW)
    fresh = ipns_record(ident.private_key, sequence=1, eol=later + timedelta(hours=1))
    assert put_validated(store, validator, key, fresh, later).value == fresh  # an expired better one loses
    pk_key = b"/pk/" + ident.peer_id.to_bytes()
    put_validated(store, validator, pk_key, ident.public_key.to_protobuf(), NOW)
    assert get_validated(store, validator, pk_key, NOW) is not None
    assert get_validated(store, validator, b"/pk/absent", NOW) is None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([b"/pk/", b"/ipns/", b"/v/", b""]), st.binary(max_size=60), st.binary(max_size=200))
def test_put_validated_fuzz_never_stores_garbage(prefix: bytes, rest: bytes, value: bytes) -> None:
    store = MemoryRecordStore()
    with pytest.raises(InvalidRecord):
        put_validated(store, default_validator(), prefix + rest, value, NOW)
    assert len(store) == 0
