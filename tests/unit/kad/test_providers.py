"""Provider records: expiry (48 h), address TTL (24 h), bounds (oldest dropped), and the ADD_PROVIDER filter.

The behaviour tests run against every :class:`ProviderStorage` (in memory and SQLite)."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.protocols.kad import dht_pb2
from mycel.protocols.kad.providers import (
    MAX_ADDR_SIZE,
    MAX_PROVIDER_ADDRS,
    MAX_PROVIDER_KEY_SIZE,
    PROVIDE_VALIDITY,
    PROVIDER_ADDR_TTL,
    InvalidProviderKey,
    ProviderStorage,
    ProviderStore,
    accept_add_provider,
)
from mycel.protocols.kad.store import SqliteProviderStore

T0 = 1_800_000_000.0
KEY = b"\x12\x20" + b"k" * 32  # a sha2-256 multihash, as go keys providers
ADDR = b"\x04\x7f\x00\x00\x01\x06\x0f\xa1"  # /ip4/127.0.0.1/tcp/4001

StoreFactory = Callable[..., ProviderStorage]


def peers(n: int) -> list[PeerId]:
    return [Identity.from_seed(i.to_bytes(32, "big")).peer_id for i in range(1, n + 1)]


def memory_or_sqlite(
    kind: str, tmp_path: pathlib.Path, memory: Callable[..., Any], sqlite: Callable[..., Any]
) -> Iterator[Callable[..., Any]]:
    """A factory of stores of one backend (``kind``): in memory, or SQLite files under ``tmp_path`` closed
    at the end. Shared by the record-store tests."""
    opened: list[Any] = []

    def factory(**kwargs: Any) -> Any:
        if kind == "memory":
            return memory(**kwargs)
        store = sqlite(tmp_path / f"store{len(opened)}.sqlite3", **kwargs)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[StoreFactory]:
    yield from memory_or_sqlite(request.param, tmp_path, ProviderStore, SqliteProviderStore)


def test_add_get_refresh(make_store: StoreFactory) -> None:
    store = make_store()
    a, b = peers(2)
    update = store.add(KEY, a, [ADDR], T0)
    assert (update.peer, update.addrs, update.ttl) == (a, (ADDR,), PROVIDER_ADDR_TTL)
    store.add(KEY, b, [ADDR, ADDR], T0 + 1)
    got = store.get(KEY, T0 + 2)
    assert [r.provider for r in got] == [b, a]  # most recent first
    assert got[0].addrs == (ADDR,)  # deduplicated
    store.add(KEY, a, [], T0 + 3)  # re-add refreshes and moves to the front
    assert [r.provider for r in store.get(KEY, T0 + 4)] == [a, b]
    assert len(store) == 2
    assert store.get(b"other", T0) == []
    assert [r.provider for r in store.get(KEY, T0 + 4, limit=1)] == [a]


def test_expiry_after_48h_and_addr_ttl_24h(make_store: StoreFactory) -> None:
    store = make_store()
    (a,) = peers(1)
    assert store.next_expiry() is None
    store.add(KEY, a, [ADDR], T0)
    assert store.next_expiry() == T0 + PROVIDE_VALIDITY
    assert store.get(KEY, T0 + PROVIDER_ADDR_TTL - 1)[0].addrs == (ADDR,)
    late = store.get(KEY, T0 + PROVIDER_ADDR_TTL)
    assert late[0].provider == a and late[0].addrs == ()  # id only once the addresses' TTL is over
    assert store.get(KEY, T0 + PROVIDE_VALIDITY) == []  # expired records are never returned
    assert store.expire(T0 + PROVIDE_VALIDITY - 1) == 0
    assert store.expire(T0 + PROVIDE_VALIDITY) == 1
    assert len(store) == 0 and store.next_expiry() is None


def test_republish_extends_validity(make_store: StoreFactory) -> None:
    store = make_store()
    a, b = peers(2)
    store.add(KEY, a, [ADDR], T0)
    store.add(KEY, b, [ADDR], T0 + 10)
    store.add(KEY, a, [ADDR], T0 + 22 * 3600)  # the provider's 22 h republish
    assert store.next_expiry() == T0 + 10 + PROVIDE_VALIDITY
    assert store.expire(T0 + PROVIDE_VALIDITY + 10) == 1
    assert [r.provider for r in store.get(KEY, T0 + PROVIDE_VALIDITY + 10)] == [a]


def test_per_key_bound_drops_oldest(make_store: StoreFactory) -> None:
    store = make_store(max_per_key=3)
    ps = peers(5)
    for i, p in enumerate(ps):
        store.add(KEY, p, [ADDR], T0 + i)
    assert {r.provider for r in store.get(KEY, T0 + 10)} == set(ps[2:])
    store.add(b"other", ps[0], [ADDR], T0 + 11)
    assert len(store) == 4


def test_total_bound_drops_oldest(make_store: StoreFactory) -> None:
    store = make_store(max_records=4)
    ps = peers(6)
    for i, p in enumerate(ps):
        store.add(bytes([i + 1]), p, [ADDR], T0 + i)
    assert len(store) == 4
    assert store.get(b"\x01", T0 + 10) == [] and store.get(b"\x02", T0 + 10) == []
    assert store.get(b"\x06", T0 + 10)[0].provider == ps[5]
    assert store.next_expiry() == T0 + 2 + PROVIDE_VALIDITY


def test_bad_keys_and_addrs_capped(make_store: StoreFactory) -> None:
    store = make_store()
    (a,) = peers(1)
    for key in (b"", b"x" * (MAX_PROVIDER_KEY_SIZE + 1)):
        with pytest.raises(InvalidProviderKey):
            store.add(key, a, [ADDR], T0)
    addrs = [bytes([4, i, 0, 0, 1]) for i in range(100)] + [b"", b"x" * (MAX_ADDR_SIZE + 1)]
    update = store.add(KEY, a, addrs, T0)
    assert len(update.addrs) == MAX_PROVIDER_ADDRS
    assert store.get(KEY, T0)[0].addrs == update.addrs


def test_many_keys_expire_in_order(make_store: StoreFactory) -> None:
    store = make_store()
    ps = peers(3)
    for i in range(60):
        store.add(i.to_bytes(2, "big"), ps[i % 3], [ADDR], T0 + i)
    assert store.expire(T0 + PROVIDE_VALIDITY + 29) == 30
    assert store.next_expiry() == T0 + 30 + PROVIDE_VALIDITY
    assert len(store) == 30


def test_remove() -> None:
    store = ProviderStore()
    a, b = peers(2)
    store.add(KEY, a, [ADDR], T0)
    assert store.remove(KEY, a) and not store.remove(KEY, a) and not store.remove(KEY, b)
    assert len(store) == 0 and store.key_count == 0
    with pytest.raises(ValueError):
        ProviderStore(max_per_key=0)


# --------------------------------------------------------------------------------------------- ADD_PROVIDER


def add_provider(key: bytes, *entries: tuple[bytes, list[bytes]]) -> dht_pb2.Message:
    msg = dht_pb2.Message(type=dht_pb2.Message.ADD_PROVIDER, key=key)
    for pid, addrs in entries:
        msg.providerPeers.add(id=pid, addrs=addrs)
    return msg


def test_accept_add_provider_only_the_senders_own_entry() -> None:
    sender, other = peers(2)
    msg = add_provider(KEY, (other.to_bytes(), [ADDR]), (b"\xff junk", [ADDR]), (sender.to_bytes(), [ADDR]))
    accepted = accept_add_provider(sender, msg)
    assert [(p.peer, p.addrs) for p in accepted] == [(sender, (ADDR,))]
    assert accept_add_provider(sender, add_provider(KEY, (other.to_bytes(), [ADDR]))) == []
    assert accept_add_provider(sender, add_provider(KEY, (sender.to_bytes(), []))) == []  # no address: ignored
    many = add_provider(KEY, (sender.to_bytes(), [bytes([4, i]) for i in range(200)]))
    assert len(accept_add_provider(sender, many)[0].addrs) == MAX_PROVIDER_ADDRS
    with pytest.raises(InvalidProviderKey):
        accept_add_provider(sender, add_provider(b"k" * 81, (sender.to_bytes(), [ADDR])))


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=100),
    st.lists(st.tuples(st.binary(max_size=50), st.lists(st.binary(max_size=40), max_size=5)), max_size=5),
)
def test_accept_add_provider_fuzz(key: bytes, entries: list[tuple[bytes, list[bytes]]]) -> None:
    (sender,) = peers(1)
    entries.append((sender.to_bytes(), [ADDR]))
    try:
        accepted = accept_add_provider(sender, add_provider(key, *entries))
    except InvalidProviderKey:
        assert not key or len(key) > MAX_PROVIDER_KEY_SIZE
        return
    assert all(p.peer == sender for p in accepted) and len(accepted) == 1
