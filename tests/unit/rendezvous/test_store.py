"""The rendezvous point's store alone, on a virtual ``now``: TTL bounds and expiry, namespaces, limits,
cookies and the checks on signed peer records."""

from __future__ import annotations

import dataclasses

import pytest
from multiaddr import Multiaddr

from mycel.core.identity import Identity
from mycel.core.record import PEER_RECORD_DOMAIN, Envelope, PeerRecord, seal_peer_record
from mycel.protocols.rendezvous.core import (
    DEFAULT_TTL,
    MAX_TTL,
    MIN_TTL,
    Limits,
    Refused,
    RegistrationStore,
    Status,
    legacy_peer_info,
)

EPOCH = bytes(range(8))
ADDR = Multiaddr("/ip4/127.0.0.1/tcp/4001")


def record(ident: Identity, addrs: tuple[Multiaddr, ...] = (ADDR,), seq: int = 1) -> bytes:
    return seal_peer_record(ident.private_key, addrs, seq).to_bytes()


def refused(status: Status, fn: object, *args: object) -> Refused:
    assert callable(fn)
    with pytest.raises(Refused) as info:
        fn(*args)
    assert info.value.status == status, info.value
    return info.value


def test_register_discover_and_default_ttl() -> None:
    store = RegistrationStore(EPOCH)
    a, b = Identity.generate(), Identity.generate()
    reg = store.register(a.peer_id, "app", record(a), None, now=100.0)
    assert reg.ttl(100.0) == DEFAULT_TTL and reg.signed and reg.addrs == (ADDR,)
    store.register(b.peer_id, "app", record(b), MAX_TTL, now=101.0)
    store.register(b.peer_id, "other", record(b), MIN_TTL, now=102.0)
    regs, _ = store.discover("app", None, None, now=103.0)
    assert [r.peer for r in regs] == [a.peer_id, b.peer_id]
    assert [r.ttl(103.0) for r in regs] == [DEFAULT_TTL - 3, MAX_TTL - 2]
    everything, _ = store.discover("", None, None, now=103.0)  # no namespace: all of them
    assert [(r.namespace, r.peer) for r in everything] == [
        ("app", a.peer_id), ("app", b.peer_id), ("other", b.peer_id)
    ]


def test_ttl_bounds() -> None:
    store = RegistrationStore(EPOCH)
    a = Identity.generate()
    refused(Status.E_INVALID_TTL, store.register, a.peer_id, "app", record(a), MIN_TTL - 1, 0.0)
    refused(Status.E_INVALID_TTL, store.register, a.peer_id, "app", record(a), MAX_TTL + 1, 0.0)
    refused(Status.E_INVALID_TTL, store.register, a.peer_id, "app", record(a), 0, 0.0)
    refused(Status.E_INVALID_TTL, store.register, a.peer_id, "app", record(a), 2**64 - 1, 0.0)
    assert len(store) == 0
    assert store.register(a.peer_id, "app", record(a), MAX_TTL, 0.0).ttl(0.0) == MAX_TTL
    with pytest.raises(ValueError):
        Limits(min_ttl=10, default_ttl=5)


def test_expiry_on_virtual_time_and_refresh_supersedes() -> None:
    store = RegistrationStore(EPOCH)
    a, b = Identity.generate(), Identity.generate()
    store.register(a.peer_id, "app", record(a), MIN_TTL, now=0.0)
    store.register(b.peer_id, "app", record(b), MIN_TTL, now=10.0)
    assert store.next_deadline() == MIN_TTL
    # a refreshes at 1 h: its registration now lasts to 1 h + TTL
    store.register(a.peer_id, "app", record(a), MIN_TTL, now=3600.0)
    regs, _ = store.discover("app", None, None, now=MIN_TTL + 10.0)
    assert [r.peer for r in regs] == [a.peer_id]  # b ran out at 10 + TTL; a was refreshed
    assert store.count(b.peer_id) == 0
    regs, _ = store.discover("app", None, None, now=3600.0 + MIN_TTL)
    assert regs == [] and len(store) == 0 and store.namespaces() == []


def test_refresh_heap_stays_bounded() -> None:
    store = RegistrationStore(EPOCH)
    a = Identity.generate()
    rec = record(a)
    for i in range(1000):
        store.register(a.peer_id, "app", rec, MIN_TTL, now=float(i))
    assert len(store) == 1
    assert len(store._expiry) <= 2 * len(store) + 65


def test_namespaces() -> None:
    store = RegistrationStore(EPOCH)
    a = Identity.generate()
    refused(Status.E_INVALID_NAMESPACE, store.register, a.peer_id, "", record(a), None, 0.0)
    refused(Status.E_INVALID_NAMESPACE, store.register, a.peer_id, "x" * 256, record(a), None, 0.0)
    refused(Status.E_INVALID_NAMESPACE, store.register, a.peer_id, "é" * 128, record(a), None, 0.0)  # 256 bytes
    store.register(a.peer_id, "x" * 255, record(a), None, 0.0)
    refused(Status.E_INVALID_NAMESPACE, store.discover, "y" * 256, None, None, 0.0)
    assert store.unregister(a.peer_id, "x" * 255, 1.0)
    assert not store.unregister(a.peer_id, "never", 1.0)  # a no-op
    refused(Status.E_INVALID_NAMESPACE, store.unregister, a.peer_id, "", 1.0)


def test_bad_records() -> None:
    store = RegistrationStore(EPOCH)
    a, b = Identity.generate(), Identity.generate()
    # a valid record of b, registered by a: peers register only themselves
    refused(Status.E_NOT_AUTHORIZED, store.register, a.peer_id, "app", record(b), None, 0.0)
    # not a record at all / empty
    refused(Status.E_INVALID_SIGNED_PEER_RECORD, store.register, a.peer_id, "app", b"\xff\x00garbage", None, 0.0)
    refused(Status.E_INVALID_SIGNED_PEER_RECORD, store.register, a.peer_id, "app", b"", None, 0.0)
    # a's record with a's key but a flipped signature bit
    env = Envelope.open(record(a), PEER_RECORD_DOMAIN)
    forged = dataclasses.replace(env, signature=bytes([env.signature[0] ^ 1]) + env.signature[1:])
    refused(Status.E_INVALID_SIGNED_PEER_RECORD, store.register, a.peer_id, "app", forged.to_bytes(), None, 0.0)
    # a record naming a but signed by b's key
    payload = PeerRecord(a.peer_id, 1, (ADDR,)).to_bytes()
    wrong_key = Envelope.seal(b.private_key, PEER_RECORD_DOMAIN, b"\x03\x01", payload)
    refused(Status.E_INVALID_SIGNED_PEER_RECORD, store.register, a.peer_id, "app", wrong_key.to_bytes(), None, 0.0)
    # signed for another domain
    other = Envelope.seal(a.private_key, "libp2p-relay-rsvp", b"\x03\x01", payload)
    refused(Status.E_INVALID_SIGNED_PEER_RECORD, store.register, a.peer_id, "app", other.to_bytes(), None, 0.0)
    # no addresses
    refused(Status.E_INVALID_SIGNED_PEER_RECORD, store.register, a.peer_id, "app", record(a, ()), None, 0.0)
    # too large
    many = tuple(Multiaddr(f"/ip4/10.0.{i // 256}.{i % 256}/tcp/4001") for i in range(1000))
    refused(Status.E_INVALID_SIGNED_PEER_RECORD, store.register, a.peer_id, "app", record(a, many), None, 0.0)
    # py-libp2p's unsigned PeerInfo: refused unless the store takes legacy registrations
    legacy = legacy_peer_info(a.peer_id, [ADDR])
    refused(Status.E_INVALID_SIGNED_PEER_RECORD, store.register, a.peer_id, "app", legacy, None, 0.0)
    assert len(store) == 0


def test_legacy_registrations_when_allowed() -> None:
    store = RegistrationStore(EPOCH, allow_legacy=True)
    a, b = Identity.generate(), Identity.generate()
    reg = store.register(a.peer_id, "app", legacy_peer_info(a.peer_id, [ADDR]), None, 0.0)
    assert not reg.signed and reg.addrs == (ADDR,)
    # still only for oneself
    refused(Status.E_NOT_AUTHORIZED, store.register, a.peer_id, "app", legacy_peer_info(b.peer_id, [ADDR]), None, 0.0)
    # signed ones still work, and are handed out as PeerInfo to a legacy asker
    signed = store.register(b.peer_id, "app", record(b), None, 0.0)
    as_legacy = signed.to_pb(0.0, legacy=True)
    assert as_legacy.signedPeerRecord == legacy_peer_info(b.peer_id, [ADDR])
    assert signed.to_pb(0.0).signedPeerRecord == record(b)


def test_per_peer_limit() -> None:
    store = RegistrationStore(EPOCH, Limits(max_per_peer=3))
    a, b = Identity.generate(), Identity.generate()
    rec = record(a)
    for ns in ("n1", "n2", "n3"):
        store.register(a.peer_id, ns, rec, None, 0.0)
    refused(Status.E_NOT_AUTHORIZED, store.register, a.peer_id, "n4", rec, None, 0.0)
    store.register(a.peer_id, "n2", rec, None, 1.0)  # refreshing one it holds always works
    store.register(b.peer_id, "n4", record(b), None, 1.0)  # others are not affected
    store.unregister(a.peer_id, "n1", 2.0)
    store.register(a.peer_id, "n4", rec, None, 2.0)  # room again
    assert store.count(a.peer_id) == 3


def test_namespace_and_total_bounds() -> None:
    store = RegistrationStore(EPOCH, Limits(max_per_namespace=2, max_registrations=3))
    ids = [Identity.generate() for _ in range(4)]
    store.register(ids[0].peer_id, "app", record(ids[0]), None, 0.0)
    store.register(ids[1].peer_id, "app", record(ids[1]), None, 0.0)
    refused(Status.E_UNAVAILABLE, store.register, ids[2].peer_id, "app", record(ids[2]), None, 0.0)
    store.register(ids[2].peer_id, "other", record(ids[2]), None, 0.0)
    refused(Status.E_UNAVAILABLE, store.register, ids[3].peer_id, "third", record(ids[3]), None, 0.0)
    assert len(store) == 3
    # refreshing in a full store and a full namespace works
    store.register(ids[0].peer_id, "app", record(ids[0]), None, 1.0)
    # expiry frees room
    store.register(ids[3].peer_id, "third", record(ids[3]), None, DEFAULT_TTL + 0.5)
    assert [r.peer for r in store.registrations()] == [ids[0].peer_id, ids[3].peer_id]


def test_discover_limit_and_cookies_page_through() -> None:
    store = RegistrationStore(EPOCH, Limits(max_discover=4))
    ids = [Identity.generate() for _ in range(10)]
    for i, ident in enumerate(ids):
        store.register(ident.peer_id, "app", record(ident), None, float(i))
    seen: list[object] = []
    cookie: bytes | None = None
    pages = 0
    while True:
        regs, cookie = store.discover("app", 3, cookie, 20.0)
        if not regs:
            break
        pages += 1
        assert len(regs) <= 3
        seen.extend(r.peer for r in regs)
    assert seen == [i.peer_id for i in ids] and pages == 4
    # the cookie of the last page gives only registrations made (or refreshed) after it
    newcomer = Identity.generate()
    store.register(newcomer.peer_id, "app", record(newcomer), None, 30.0)
    store.register(ids[0].peer_id, "app", record(ids[0]), None, 31.0)
    regs, cookie2 = store.discover("app", None, cookie, 32.0)
    assert [r.peer for r in regs] == [newcomer.peer_id, ids[0].peer_id]
    regs, _ = store.discover("app", None, cookie2, 33.0)
    assert regs == []
    # the limit is capped by max_discover; 0 means the cap
    assert len(store.discover("app", 1000, None, 34.0)[0]) == 4
    assert len(store.discover("app", 0, None, 34.0)[0]) == 4


def test_discover_response_bytes_bound() -> None:
    store = RegistrationStore(EPOCH, Limits(max_response_bytes=1000))
    ids = [Identity.generate() for _ in range(10)]
    for ident in ids:
        store.register(ident.peer_id, "app", record(ident), None, 0.0)
    regs, cookie = store.discover("app", None, None, 1.0)
    size = sum(len(r.record) + 3 + 24 for r in regs)
    assert 0 < len(regs) < 10 and size <= 1000
    rest, _ = store.discover("app", None, cookie, 1.0)
    assert [r.peer for r in regs + rest][: len(regs) + len(rest)] == [i.peer_id for i in ids][: len(regs) + len(rest)]


def test_bad_cookies() -> None:
    store = RegistrationStore(EPOCH)
    a = Identity.generate()
    store.register(a.peer_id, "app", record(a), None, 0.0)
    _, cookie = store.discover("app", None, None, 1.0)
    refused(Status.E_INVALID_COOKIE, store.discover, "other", None, cookie, 1.0)  # another namespace
    refused(Status.E_INVALID_COOKIE, store.discover, "app", None, b"\x01\x02", 1.0)  # malformed
    refused(Status.E_INVALID_COOKIE, store.discover, "app", None, b"\x07" + cookie[1:], 1.0)  # unknown version
    elsewhere = RegistrationStore(bytes(8))
    refused(Status.E_INVALID_COOKIE, elsewhere.discover, "app", None, cookie, 1.0)  # another point
    future = cookie[:9] + (2**40).to_bytes(8, "big") + cookie[17:]
    refused(Status.E_INVALID_COOKIE, store.discover, "app", None, future, 1.0)
    with pytest.raises(ValueError):
        RegistrationStore(b"short")


def test_limits_validated() -> None:
    with pytest.raises(ValueError):
        Limits(max_per_peer=0)
    with pytest.raises(ValueError):
        Limits(min_ttl=0)
