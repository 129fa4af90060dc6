"""The peer store: provenance, TTLs, certified records, ordering, bounds, expiry, snapshots. No trio."""

from __future__ import annotations

import dataclasses
import math

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from multiaddr import Multiaddr

from mycel.core.errors import DecodeError, InvalidSignature, PeerIdMismatch, ResourceLimitExceeded
from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.core.record import seal_peer_record
from mycel.network.peerstore import (
    ADDRESS_TTL,
    CONNECTED_TTL,
    MAX_ADDRS_PER_PEER,
    MAX_METADATA_KEYS,
    MAX_PEERS,
    MAX_PROTOCOL_LENGTH,
    MAX_PROTOCOLS_PER_PEER,
    MAX_VERSION_LENGTH,
    PERMANENT_TTL,
    PROVIDER_ADDR_TTL,
    RECENTLY_CONNECTED_TTL,
    TEMP_TTL,
    AddrSource,
    PeerInfo,
    PeerStore,
)

USER, CERTIFIED, IDENTIFY = AddrSource.USER, AddrSource.CERTIFIED, AddrSource.IDENTIFY
CONNECTION, ROUTING, DISCOVERY = AddrSource.CONNECTION, AddrSource.ROUTING, AddrSource.DISCOVERY


def fake_peer(i: int) -> PeerId:
    """A valid sha2-256 peer id without a key behind it (cheap, for bulk tests)."""
    return PeerId.from_bytes(bytes((0x12, 32)) + i.to_bytes(32, "big"))


def ma(i: int, port: int = 4001) -> Multiaddr:
    return Multiaddr(f"/ip4/10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/tcp/{port}")


P = fake_peer(1)
A, B, C, D = ma(1), ma(2), ma(3), ma(4)


# -- constants -----------------------------------------------------------------------------------


def test_ttl_constants_match_go() -> None:
    assert PERMANENT_TTL == math.inf
    assert TEMP_TTL == 120
    assert ADDRESS_TTL == 3600
    assert RECENTLY_CONNECTED_TTL == 15 * 60
    assert PROVIDER_ADDR_TTL == 24 * 3600
    # distinct "never" values, connected below permanent (go: MaxInt64 - 1 and MaxInt64)
    assert RECENTLY_CONNECTED_TTL < CONNECTED_TTL < PERMANENT_TTL
    assert [s.priority for s in (USER, CERTIFIED, CONNECTION, IDENTIFY, ROUTING, DISCOVERY)] == list(range(6))


# -- provenance and TTLs -------------------------------------------------------------------------


def test_identify_set_does_not_remove_user_addrs() -> None:
    ps = PeerStore()
    ps.add_addrs(P, [A], USER, PERMANENT_TTL, 0)
    ps.set_addrs(P, [A, B], IDENTIFY, CONNECTED_TTL, 0)
    ps.set_addrs(P, [C], IDENTIFY, CONNECTED_TTL, 1)  # identify's set no longer has A or B
    assert ps.addrs(P, 2) == [A, C]
    [entry_a, entry_c] = ps.addr_entries(P, 2)
    assert entry_a.sources == {USER} and entry_c.sources == {IDENTIFY}
    ps.set_addrs(P, [], IDENTIFY, CONNECTED_TTL, 3)
    assert ps.addrs(P, 3) == [A]


def test_set_addrs_zero_ttl_removes_only_that_source() -> None:
    ps = PeerStore()
    ps.add_addrs(P, [A, B], USER, PERMANENT_TTL, 0)
    ps.add_addrs(P, [B, C], ROUTING, ADDRESS_TTL, 0)
    ps.set_addrs(P, [B], ROUTING, 0, 1)
    assert ps.addrs(P, 1) == [A, B]
    assert ps.addr_entries(P, 1)[1].sources == {USER}


def test_expiry_at_exact_boundary() -> None:
    ps = PeerStore()
    ps.add_addrs(P, [A], ROUTING, 10, 100)
    assert ps.addrs(P, 109.999) == [A]
    assert ps.addrs(P, 110) == []  # expired at now >= expiry, as go's ExpiredBy
    assert ps.addr_entries(P, 110) == []


def test_add_extends_never_shortens() -> None:
    ps = PeerStore()
    ps.add_addrs(P, [A], ROUTING, 100, 0)
    ps.add_addrs(P, [A], ROUTING, 10, 50)  # would end at 60 < 100: no change
    assert ps.addr_entries(P, 50)[0].expiry == 100
    ps.add_addrs(P, [A], ROUTING, 100, 50)  # ends at 150: extended
    assert ps.addr_entries(P, 50)[0].expiry == 150
    ps.add_addrs(P, [A], ROUTING, 0, 60)  # ttl 0: nothing
    assert ps.addrs(P, 149) == [A] and ps.addrs(P, 150) == []


def test_sources_expire_independently() -> None:
    ps = PeerStore()
    ps.add_addrs(P, [A], DISCOVERY, 10, 0)
    ps.add_addrs(P, [A], ROUTING, 100, 0)
    assert ps.addr_entries(P, 5)[0].expiries == ((ROUTING, 100), (DISCOVERY, 10))
    assert ps.addr_entries(P, 10)[0].sources == {ROUTING}
    assert ps.addrs(P, 99) == [A] and ps.addrs(P, 100) == []


def test_set_addrs_replaces_ttl_exactly() -> None:
    ps = PeerStore()
    ps.add_addrs(P, [A], ROUTING, 100, 0)
    ps.set_addrs(P, [A], ROUTING, 10, 0)  # set may shorten
    assert ps.addrs(P, 10) == []


def test_certified_source_only_through_records() -> None:
    ps = PeerStore()
    with pytest.raises(ValueError):
        ps.add_addrs(P, [A], CERTIFIED, ADDRESS_TTL, 0)
    with pytest.raises(ValueError):
        ps.set_addrs(P, [A], CERTIFIED, ADDRESS_TTL, 0)
    with pytest.raises(ValueError):
        ps.add_addrs(P, [A], ROUTING, math.nan, 0)


def test_disconnect_moves_connected_addrs_to_recently_connected() -> None:
    ps = PeerStore()
    ps.mark_connected(P, True, 0)
    ps.add_addrs(P, [A], CONNECTION, CONNECTED_TTL, 0)
    ps.set_addrs(P, [B], IDENTIFY, CONNECTED_TTL, 0)
    ps.add_addrs(P, [C], USER, PERMANENT_TTL, 0)
    ps.add_addrs(P, [D], ROUTING, TEMP_TTL, 0)
    assert ps.next_expiry() == TEMP_TTL
    assert ps.addrs(P, 10_000) == [C, A, B]  # connected and permanent addresses never expire
    ps.mark_connected(P, False, 10_000)
    assert ps.snapshot(P, 10_000).connected is False
    deadline = 10_000 + RECENTLY_CONNECTED_TTL
    entries = {e.addr: e.expiry for e in ps.addr_entries(P, 10_000)}
    assert entries == {A: deadline, B: deadline, C: math.inf}
    assert ps.addrs(P, deadline - 1) == [C, A, B]
    assert ps.addrs(P, deadline) == [C]
    assert ps.expire(deadline) == 3  # A, B, and the long-expired D
    assert ps.next_expiry() is None and P in ps


def test_update_ttl_matches_source_and_ttl() -> None:
    ps = PeerStore()
    ps.add_addrs(P, [A], ROUTING, ADDRESS_TTL, 0)
    ps.add_addrs(P, [B], ROUTING, TEMP_TTL, 0)
    ps.add_addrs(P, [C], DISCOVERY, ADDRESS_TTL, 0)
    assert ps.update_ttl(P, ROUTING, ADDRESS_TTL, 10, 5) == 1
    assert {e.addr: e.expiry for e in ps.addr_entries(P, 5)} == {A: 15, B: TEMP_TTL, C: ADDRESS_TTL}
    assert ps.update_ttl(P, None, ADDRESS_TTL, 0, 5) == 1  # removes C
    assert ps.addrs(P, 5) == [A, B]
    assert ps.update_ttl(fake_peer(99), None, 1, 2, 0) == 0


def test_reconnect_restores_connected_ttl() -> None:
    ps = PeerStore()
    ps.mark_connected(P, True, 0)
    ps.add_addrs(P, [A], CONNECTION, CONNECTED_TTL, 0)
    ps.mark_connected(P, False, 10)
    ps.mark_connected(P, True, 20)
    ps.add_addrs(P, [A], CONNECTION, CONNECTED_TTL, 20)  # a longer TTL extends: back to never
    assert ps.addr_entries(P, 20)[0].expiry == math.inf
    assert ps.addrs(P, 1e9) == [A]


# -- ordering ------------------------------------------------------------------------------------


def test_order_by_source_priority_then_recency() -> None:
    ps = PeerStore()
    ps.add_addrs(P, [A], DISCOVERY, ADDRESS_TTL, 0)
    ps.add_addrs(P, [B], ROUTING, ADDRESS_TTL, 1)
    ps.add_addrs(P, [C], ROUTING, ADDRESS_TTL, 2)
    ps.add_addrs(P, [D], USER, PERMANENT_TTL, 3)
    assert ps.addrs(P, 3) == [D, C, B, A]
    ps.add_addrs(P, [B], ROUTING, ADDRESS_TTL, 4)  # seen again: more recent than C
    assert ps.addrs(P, 4) == [D, B, C, A]
    ps.add_addrs(P, [A], CONNECTION, CONNECTED_TTL, 5)  # a better source lifts A
    assert ps.addrs(P, 5) == [D, A, B, C]


def test_addrs_returns_a_copy_and_cache_follows_expiry() -> None:
    ps = PeerStore()
    ps.add_addrs(P, [A], ROUTING, 10, 0)
    ps.add_addrs(P, [B], DISCOVERY, 100, 0)
    first = ps.addrs(P, 1)
    first.clear()
    assert ps.addrs(P, 1) == [A, B]
    assert ps.addrs(P, 10) == [B]  # the cached view ends at the first expiry
    assert ps.addrs(P, 11) == [B]


# -- certified records ---------------------------------------------------------------------------


def test_certified_record_first_and_replaced() -> None:
    ident = Identity.generate()
    peer = ident.peer_id
    ps = PeerStore()
    ps.add_addrs(peer, [A], USER, PERMANENT_TTL, 0)
    ps.set_addrs(peer, [B, C], IDENTIFY, CONNECTED_TTL, 0)
    rec1 = seal_peer_record(ident.private_key, [C, D], seq=1).to_bytes()
    assert ps.consume_peer_record(rec1, CONNECTED_TTL, 0, expected_peer=peer) is True
    assert ps.addrs(peer, 0) == [C, D, A, B]  # certified first, then by source
    assert ps.peer_record(peer, 0) == rec1
    assert ps.public_key(peer) == ident.public_key
    snap = ps.snapshot(peer, 0)
    assert snap.certified and snap.record_seq == 1

    rec2 = seal_peer_record(ident.private_key, [B], seq=2).to_bytes()
    assert ps.consume_peer_record(rec2, ADDRESS_TTL, 1) is True
    assert ps.addrs(peer, 1) == [B, A, C]  # D was only certified: gone; C still from identify
    assert ps.peer_record(peer, 1) == rec2
    assert ps.addr_entries(peer, 1)[0].certified


def test_older_or_equal_record_ignored() -> None:
    ident = Identity.generate()
    ps = PeerStore()
    assert ps.consume_peer_record(seal_peer_record(ident.private_key, [A], seq=5).to_bytes(), ADDRESS_TTL, 0)
    for seq in (5, 4):
        stale = seal_peer_record(ident.private_key, [B], seq=seq).to_bytes()
        assert ps.consume_peer_record(stale, ADDRESS_TTL, 1) is False
    assert ps.addrs(ident.peer_id, 1) == [A]
    assert ps.stats().stale_records == 2
    assert ps.snapshot(ident.peer_id, 1).record_seq == 5


def test_record_of_another_peer_rejected() -> None:
    alice, mallory = Identity.generate(), Identity.generate()
    ps = PeerStore()
    rec = seal_peer_record(mallory.private_key, [A], seq=1).to_bytes()
    with pytest.raises(InvalidSignature):
        ps.consume_peer_record(rec, ADDRESS_TTL, 0, expected_peer=alice.peer_id)
    assert alice.peer_id not in ps and mallory.peer_id not in ps


def test_tampered_or_garbage_record_rejected() -> None:
    ident = Identity.generate()
    ps = PeerStore()
    raw = bytearray(seal_peer_record(ident.private_key, [A], seq=1).to_bytes())
    raw[-1] ^= 1  # the signature
    with pytest.raises(InvalidSignature):
        ps.consume_peer_record(bytes(raw), ADDRESS_TTL, 0)
    with pytest.raises(DecodeError):
        ps.consume_peer_record(b"\xff\xff", ADDRESS_TTL, 0)
    assert len(ps) == 0


def test_record_expiry_and_lower_seq_after_expiry() -> None:
    ident = Identity.generate()
    peer = ident.peer_id
    ps = PeerStore()
    assert ps.consume_peer_record(seal_peer_record(ident.private_key, [A], seq=9).to_bytes(), 100, 0)
    assert ps.next_expiry() == 100
    assert ps.peer_record(peer, 99) is not None and ps.peer_record(peer, 100) is None
    assert ps.expire(100) == 1
    assert peer not in ps  # nothing worth keeping was left
    # like go, a forgotten record's seq no longer blocks (a restarted peer may count from 1 again)
    assert ps.consume_peer_record(seal_peer_record(ident.private_key, [B], seq=1).to_bytes(), 100, 200)
    assert ps.addrs(peer, 200) == [B]


def test_disconnect_moves_certified_record_too() -> None:
    ident = Identity.generate()
    peer = ident.peer_id
    ps = PeerStore()
    ps.mark_connected(peer, True, 0)
    ps.consume_peer_record(seal_peer_record(ident.private_key, [A], seq=1).to_bytes(), CONNECTED_TTL, 0)
    ps.mark_connected(peer, False, 50)
    end = 50 + RECENTLY_CONNECTED_TTL
    assert ps.peer_record(peer, end - 1) is not None and ps.peer_record(peer, end) is None
    assert ps.addrs(peer, end) == []


# -- bounds --------------------------------------------------------------------------------------


def test_address_flood_from_one_peer_stays_at_64() -> None:
    ps = PeerStore()
    ps.add_addrs(P, [A], USER, PERMANENT_TTL, 0)
    ps.add_addrs(P, [ma(i, 5000) for i in range(10_000)], ROUTING, ADDRESS_TTL, 0)
    assert len(ps.addr_entries(P, 0)) == MAX_ADDRS_PER_PEER == 64
    assert ps.addrs(P, 0)[0] == A
    stats = ps.stats()
    assert stats.addrs == 64
    assert stats.rejected_addrs + stats.evicted_addrs == 10_000 - 63


def test_address_bound_never_displaces_more_trusted_sources() -> None:
    ps = PeerStore(max_addrs_per_peer=4)
    ps.add_addrs(P, [ma(1), ma(2)], USER, PERMANENT_TTL, 0)
    ps.add_addrs(P, [ma(3), ma(4)], IDENTIFY, ADDRESS_TTL, 0)
    ps.add_addrs(P, [ma(5)], DISCOVERY, PERMANENT_TTL, 0)  # lower than everything held: dropped
    assert ma(5) not in ps.addrs(P, 0) and ps.stats().rejected_addrs == 1
    ps.add_addrs(P, [ma(6)], CONNECTION, CONNECTED_TTL, 1)  # displaces an IDENTIFY one
    assert set(ps.addrs(P, 1)) == {ma(1), ma(2), ma(6), ma(4)}  # of equal ones, the first given goes
    assert ps.stats().evicted_addrs == 1
    # USER displaces IDENTIFY, then CONNECTION; never a USER address that lives as long
    ps.add_addrs(P, [ma(7), ma(8), ma(9)], USER, PERMANENT_TTL, 2)
    assert set(ps.addrs(P, 2)) == {ma(1), ma(2), ma(7), ma(8)}
    assert ps.stats().evicted_addrs == 3 and ps.stats().rejected_addrs == 2


def test_address_bound_drops_lowest_priority_soonest_expiry_first() -> None:
    ps = PeerStore(max_addrs_per_peer=3)
    ps.add_addrs(P, [A], ROUTING, 100, 0)
    ps.add_addrs(P, [B], DISCOVERY, 500, 0)
    ps.add_addrs(P, [C], DISCOVERY, 50, 0)
    ps.add_addrs(P, [D], ROUTING, 100, 0)  # C: the lowest priority, expiring soonest
    assert set(ps.addrs(P, 0)) == {A, B, D}


def test_equal_priority_newcomer_must_outlive_the_victim() -> None:
    ps = PeerStore(max_addrs_per_peer=2)
    ps.add_addrs(P, [A, B], ROUTING, 100, 0)
    ps.add_addrs(P, [C], ROUTING, 100, 0)  # same deadline: the first ones given stay
    assert set(ps.addrs(P, 0)) == {A, B}
    ps.add_addrs(P, [C], ROUTING, 100, 10)  # fresher: displaces one
    assert C in ps.addrs(P, 10) and len(ps.addrs(P, 10)) == 2


def test_address_bound_reuses_expired_slots_first() -> None:
    ps = PeerStore(max_addrs_per_peer=2)
    ps.add_addrs(P, [A], USER, 10, 0)
    ps.add_addrs(P, [B], USER, PERMANENT_TTL, 0)
    ps.add_addrs(P, [C], DISCOVERY, 10, 20)  # A expired (unswept): its slot is reused
    assert set(ps.addrs(P, 20)) == {B, C}
    assert ps.stats().evicted_addrs == 0


def test_protocol_bounds() -> None:
    ps = PeerStore()
    added, removed = ps.set_protocols(P, [f"/p/{i}" for i in range(10_000)])
    assert len(added) == len(ps.protocols(P)) == MAX_PROTOCOLS_PER_PEER == 256 and not removed
    assert "/p/0" in ps.protocols(P) and "/p/256" not in ps.protocols(P)  # the first ones given are kept
    assert ps.stats().dropped_protocols == 10_000 - 256
    assert ps.add_protocols(P, ["/more"]) == frozenset()
    long_id = "/" + "x" * MAX_PROTOCOL_LENGTH
    q = fake_peer(2)
    ps.set_protocols(q, [long_id, "", "/ok", "/" + "x" * (MAX_PROTOCOL_LENGTH - 1)])
    assert ps.protocols(q) == {"/ok", "/" + "x" * (MAX_PROTOCOL_LENGTH - 1)}
    assert ps.stats().rejected_protocols == 2


def test_protocol_api() -> None:
    ps = PeerStore()
    assert ps.set_protocols(P, ["/a", "/b", "/a"]) == (frozenset({"/a", "/b"}), frozenset())
    assert ps.set_protocols(P, ["/b", "/c"]) == (frozenset({"/c"}), frozenset({"/a"}))
    assert ps.add_protocols(P, ["/c", "/d"]) == {"/d"}
    assert ps.remove_protocols(P, ["/b", "/zzz"]) == {"/b"}
    assert ps.protocols(P) == {"/c", "/d"}
    assert ps.supports(P, "/x", "/d", "/c") == ["/d", "/c"]
    assert ps.first_supported(P, "/x", "/d", "/c") == "/d"
    assert ps.first_supported(P, "/x") is None
    assert ps.protocols(fake_peer(5)) == frozenset() and fake_peer(5) not in ps


def test_metadata_bound() -> None:
    ps = PeerStore()
    for i in range(MAX_METADATA_KEYS):
        ps.put(P, f"k{i}", i)
    ps.put(P, "k0", "replaced")  # an existing key is always writable
    with pytest.raises(ResourceLimitExceeded):
        ps.put(P, "one-too-many", 1)
    assert ps.get(P, "k0") == "replaced" and ps.get(P, "one-too-many", "dflt") == "dflt"
    assert ps.get(fake_peer(7), "k0") is None
    assert ps.stats().rejected_metadata == 1


def test_version_strings_bounded() -> None:
    ps = PeerStore()
    ps.set_agent_version(P, "a" * 100_000)
    ps.set_protocol_version(P, "ipfs/0.1.0")
    assert ps.agent_version(P) == "a" * MAX_VERSION_LENGTH
    assert ps.protocol_version(P) == "ipfs/0.1.0"
    assert ps.stats().truncated_strings == 1


def test_peer_table_lru_eviction() -> None:
    ps = PeerStore(max_peers=3)
    p1, p2, p3, p4 = (fake_peer(i) for i in range(1, 5))
    for p in (p1, p2, p3):
        ps.add_addrs(p, [A], ROUTING, ADDRESS_TTL, 0)
    ps.addrs(p1, 0)  # a dial look-up counts as use
    ps.add_addrs(p4, [A], ROUTING, ADDRESS_TTL, 0)
    assert set(ps.peers()) == {p1, p3, p4}
    assert ps.stats().evicted_peers == 1


def test_peer_table_protects_connected_peers() -> None:
    ps = PeerStore(max_peers=3)
    p1, p2, p3, p4, p5 = (fake_peer(i) for i in range(1, 6))
    ps.mark_connected(p1, True, 0)
    ps.mark_protected(p2, True)
    ps.add_addrs(p3, [A], ROUTING, ADDRESS_TTL, 0)
    ps.add_addrs(p4, [A], ROUTING, ADDRESS_TTL, 0)  # p3 (the only unprotected one) goes
    assert set(ps.peers()) == {p1, p2, p4}
    ps.mark_connected(p4, True, 0)
    ps.add_addrs(p5, [A], ROUTING, ADDRESS_TTL, 0)  # all protected: the unprotected newcomer is refused
    assert p5 not in ps and ps.stats().rejected_peers == 1
    ps.mark_connected(p5, True, 0)  # a protected newcomer displaces the least recently used protected peer
    assert set(ps.peers()) == {p2, p4, p5}
    assert ps.stats().evicted_protected_peers == 1
    ps.mark_connected(p4, False, 1)
    ps.add_addrs(p1, [A], ROUTING, ADDRESS_TTL, 1)  # p4 is unprotected again: it goes first
    assert set(ps.peers()) == {p1, p2, p5}


def test_peer_table_default_bound() -> None:
    ps = PeerStore()
    ps.mark_connected(fake_peer(0), True, 0)
    for i in range(1, MAX_PEERS + 100):
        ps.add_addrs(fake_peer(i), [A], DISCOVERY, ADDRESS_TTL, 0)
    assert len(ps) == MAX_PEERS == 10_000
    assert fake_peer(0) in ps  # the oldest entry, but connected
    assert fake_peer(MAX_PEERS + 99) in ps and fake_peer(1) not in ps


# -- keys, latency -------------------------------------------------------------------------------


def test_public_key_must_match_peer_id() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    ps = PeerStore()
    with pytest.raises(PeerIdMismatch):
        ps.set_public_key(alice.peer_id, bob.public_key)
    assert alice.peer_id not in ps
    assert ps.public_key(alice.peer_id) == alice.public_key  # Ed25519 ids inline their key
    ps.set_public_key(alice.peer_id, alice.public_key)
    assert ps.public_key(alice.peer_id) == alice.public_key
    assert ps.public_key(fake_peer(3)) is None


def test_latency_ewma() -> None:
    ps = PeerStore()
    assert ps.latency(P) is None
    ps.record_latency(P, 0.100)
    assert ps.latency(P) == pytest.approx(0.100)
    ps.record_latency(P, 0.200)
    assert ps.latency(P) == pytest.approx(0.9 * 0.100 + 0.1 * 0.200)
    for _ in range(200):
        ps.record_latency(P, 0.050)
    assert ps.latency(P) == pytest.approx(0.050)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError):
            ps.record_latency(P, bad)


# -- expiry machinery ----------------------------------------------------------------------------


def test_next_expiry_and_expire() -> None:
    calls: list[None] = []
    ps = PeerStore(on_deadline_changed=lambda: calls.append(None))
    assert ps.next_expiry() is None
    ps.add_addrs(P, [A], ROUTING, 100, 0)
    assert ps.next_expiry() == 100 and len(calls) == 1
    ps.add_addrs(P, [B], ROUTING, 200, 0)  # later: the timer need not wake
    assert len(calls) == 1
    ps.add_addrs(P, [C], ROUTING, 50, 0)  # earlier: it must
    assert ps.next_expiry() == 50 and len(calls) == 2
    ps.add_addrs(P, [C], ROUTING, 150, 0)  # C extended: its old deadline is stale
    assert ps.next_expiry() == 100
    ps.add_addrs(P, [D], USER, PERMANENT_TTL, 0)
    assert ps.expire(99.9) == 0
    assert ps.expire(100) == 1 and ps.addrs(P, 100) == [D, B, C]
    assert ps.next_expiry() == 150
    assert ps.expire(1000) == 2 and ps.next_expiry() is None
    assert ps.addrs(P, 1000) == [D] and P in ps  # D (USER, permanent) keeps the peer
    assert ps.stats().expired_addrs == 3


def test_expire_drops_empty_peers_but_not_connected_ones() -> None:
    ps = PeerStore()
    p1, p2, p3 = fake_peer(1), fake_peer(2), fake_peer(3)
    for p in (p1, p2, p3):
        ps.add_addrs(p, [A], ROUTING, 10, 0)
        ps.set_protocols(p, ["/x"])
    ps.mark_connected(p2, True, 0)
    ps.mark_protected(p3, True)
    assert ps.expire(10) == 3
    assert p1 not in ps and p2 in ps and p3 in ps
    assert ps.protocols(p2) == {"/x"}
    ps.mark_connected(p2, False, 20)  # nothing left but protocols: swept at the next expire
    assert ps.expire(20) == 0
    assert p2 not in ps and p3 in ps
    assert ps.stats().expired_peers == 2


def test_heap_does_not_grow_with_refreshes() -> None:
    ps = PeerStore()
    for t in range(10_000):
        ps.add_addrs(P, [A], ROUTING, ADDRESS_TTL, float(t))
    assert len(ps._heap) < 200  # stale deadlines are compacted away
    assert ps.next_expiry() == 9_999 + ADDRESS_TTL


def test_remove_peer() -> None:
    ps = PeerStore()
    ps.add_addrs(P, [A], ROUTING, 10, 0)
    assert ps.remove_peer(P) is True and ps.remove_peer(P) is False
    assert P not in ps and ps.addrs(P, 0) == [] and ps.next_expiry() is None


# -- snapshots -----------------------------------------------------------------------------------


def test_snapshot_is_frozen_and_detached() -> None:
    ps = PeerStore()
    ps.add_addrs(P, [A], USER, PERMANENT_TTL, 0)
    ps.set_protocols(P, ["/a"])
    ps.set_agent_version(P, "mycel/1")
    ps.record_latency(P, 0.01)
    snap = ps.snapshot(P, 0)
    assert snap == PeerInfo(P, (A,), frozenset({"/a"}), None, "mycel/1", None, 0.01, False, None, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.agent_version = "x"  # type: ignore[misc]
    ps.add_addrs(P, [B], USER, PERMANENT_TTL, 1)
    ps.add_protocols(P, ["/b"])
    assert snap.addrs == (A,) and snap.protocols == {"/a"}
    assert isinstance(snap.addrs, tuple) and isinstance(snap.protocols, frozenset)
    hash(snap)
    unknown = ps.snapshot(fake_peer(9), 0)
    assert unknown == PeerInfo(fake_peer(9)) and fake_peer(9) not in ps


# -- a model-based property ----------------------------------------------------------------------

_SOURCES = [USER, IDENTIFY, CONNECTION, ROUTING, DISCOVERY]
_op = st.tuples(
    st.sampled_from(["add", "set", "expire", "disconnect"]),
    st.lists(st.integers(0, 5), max_size=4),
    st.sampled_from(_SOURCES),
    st.sampled_from([0.0, 1.0, 5.0, 30.0, CONNECTED_TTL, PERMANENT_TTL]),
    st.sampled_from([0.0, 0.5, 1.0, 7.0]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, max_size=40))
def test_matches_a_naive_model(ops: list[tuple[str, list[int], AddrSource, float, float]]) -> None:
    """Without hitting bounds, the store agrees with a dict of (addr, source) -> (ttl, expiry)."""
    ps = PeerStore()
    model: dict[tuple[int, AddrSource], tuple[float, float]] = {}
    now = 0.0

    def exp_of(ttl: float) -> float:
        return math.inf if ttl >= CONNECTED_TTL else now + ttl

    for kind, idxs, source, ttl, dt in ops:
        now += dt
        if kind == "add" and ttl > 0:
            for i in idxs:
                old = model.get((i, source))
                if old is not None and old[1] > now:
                    model[(i, source)] = (max(old[0], ttl), max(old[1], exp_of(ttl)))
                else:
                    model[(i, source)] = (ttl, exp_of(ttl))
            ps.add_addrs(P, [ma(i) for i in idxs], source, ttl, now)
        elif kind == "set":
            for key in [k for k in model if k[1] is source]:
                del model[key]
            if ttl > 0:
                for i in idxs:
                    model[(i, source)] = (ttl, exp_of(ttl))
            ps.set_addrs(P, [ma(i) for i in idxs], source, ttl, now)
        elif kind == "expire":
            ps.expire(now)
            deadline = ps.next_expiry()
            assert deadline is None or deadline > now
        elif kind == "disconnect":
            ps.mark_connected(P, False, now)
            for key, (t, e) in list(model.items()):
                if t == CONNECTED_TTL:
                    model[key] = (RECENTLY_CONNECTED_TTL, now + RECENTLY_CONNECTED_TTL)
        live = {i for (i, _s), (_t, e) in model.items() if e > now}
        got = ps.addrs(P, now)
        assert len(got) == len(set(got))
        assert set(got) == {ma(i) for i in live}
        # ordering: best source priority never decreases along the list
        best = [min(s.priority for (j, s), (_t, e) in model.items() if j == i and e > now) for i in live]
        ranks = {ma(i): b for i, b in zip(live, best)}
        assert [ranks[a] for a in got] == sorted(ranks[a] for a in got)
        for entry in ps.addr_entries(P, now):
            assert entry.expiry > now


# -- forgetting disconnected peers (memory after churn, #12) ------------------------------------------


def test_a_disconnected_peer_with_nothing_left_is_due_at_once() -> None:
    """An inbound peer we hold only a key and protocols for is due for forgetting as soon as it
    disconnects, even in a store with no deadline at all; the timer is told."""
    calls: list[None] = []
    ps = PeerStore(on_deadline_changed=lambda: calls.append(None))
    ps.mark_connected(P, True, 0)
    ps.set_agent_version(P, "attacker/1.0")
    ps.set_protocols(P, ["/ipfs/ping/1.0.0"])
    ps.record_latency(P, 0.01)
    assert ps.next_expiry() is None and calls == []
    ps.mark_connected(P, False, 5)
    assert calls and ps.next_expiry() == -math.inf
    ps.expire(5)
    assert P not in ps and ps.agent_version(P) is None and ps.protocols(P) == frozenset()
    assert ps.next_expiry() is None and ps.stats().expired_peers == 1


def test_a_disconnected_peer_with_addresses_stays_until_they_expire() -> None:
    ps = PeerStore()
    ps.mark_connected(P, True, 0)
    ps.set_addrs(P, [A], IDENTIFY, CONNECTED_TTL, 0)
    ps.mark_connected(P, False, 10)
    ps.expire(10)
    assert P in ps and ps.next_expiry() == 10 + RECENTLY_CONNECTED_TTL
    ps.expire(10 + RECENTLY_CONNECTED_TTL)
    assert P not in ps and ps.next_expiry() is None


def test_a_reconnected_peer_is_not_forgotten() -> None:
    ps = PeerStore()
    ps.mark_connected(P, True, 0)
    ps.mark_connected(P, False, 1)
    ps.mark_connected(P, True, 2)
    assert ps.next_expiry() is None
    ps.expire(3)
    assert P in ps


async def test_a_host_forgets_churned_peers(autojump_clock: trio.testing.MockClock) -> None:
    """Peers that connect and leave do not stay in the listener's peerstore (it has no address for
    an inbound peer): they go within the host's expiry interval of the disconnect (one pass a second
    however many leave), with no address deadline to wait for."""
    from mycel.host import EXPIRY_INTERVAL
    from mycel.testing.hosts import memory_hosts

    async with memory_hosts(4) as (a, *others):
        for other in others:
            await other.connect(a.listen_addrs[0].encapsulate(f"/p2p/{a.peer_id}"))
            await other.disconnect(a.peer_id)
        left = trio.current_time()
        await trio.testing.wait_all_tasks_blocked()
        # virtual time: the bound itself, not a wait for something to happen
        await trio.sleep_until(left + EXPIRY_INTERVAL)
        await trio.testing.wait_all_tasks_blocked()
        assert a.peerstore.stats().expired_peers == len(others)
        assert [o.peer_id for o in others if o.peer_id in a.peerstore] == []
        assert a.peerstore.next_expiry() is None
