"""The sans-IO Kademlia routing table: exact closest-peer order, bucket splitting, check-before-add and
replacement, refresh timers, and the IP diversity filter (eclipse resistance)."""

from __future__ import annotations

import functools
import random

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.protocols.kad.distance import common_prefix_length, kad_key, peer_key
from mycel.protocols.kad.routing import (
    Added,
    Cached,
    CheckNew,
    DiversityFilter,
    Eviction,
    PingRequest,
    Rejected,
    RoutingTable,
    Updated,
    filter_results,
    ip_group,
    random_key_with_cpl,
)


@functools.cache
def pid(i: int) -> PeerId:
    """A real peer id, distinct for every ``i``."""
    return Identity.from_seed(i.to_bytes(32, "big")).peer_id


LOCAL = pid(0)
LOCAL_KEY = peer_key(LOCAL)


def cpl_of(peer: PeerId) -> int:
    return common_prefix_length(peer_key(peer), LOCAL_KEY)


def public_ip(i: int) -> str:
    """A public IPv4 address in a /16 of its own for each ``i`` < 10,000 (first octets 80-119, not 100)."""
    first = 80 + (i >> 8)
    return f"{first + (first >= 100)}.{i & 0xFF}.0.1"


def table(**kwargs: object) -> RoutingTable:
    return RoutingTable(LOCAL, now=0.0, **kwargs)  # type: ignore[arg-type]


def fill(rt: RoutingTable, ids: range | list[int], now: float = 0.0) -> None:
    for i in ids:
        rt.offer(pid(i), [public_ip(i)], now, verified=True)


def peers_with_cpl(cpl: int, n: int, start: int = 1) -> list[int]:
    out: list[int] = []
    i = start
    while len(out) < n:
        if cpl_of(pid(i)) == cpl:
            out.append(i)
        i += 1
    return out


# ---- closest() and the bucket layout ------------------------------------------------------------------------


def test_closest_equals_brute_force_over_random_tables() -> None:
    rng = random.Random(11)
    for trial in range(12):
        k = rng.choice([2, 4, 20])
        rt = table(k=k, diversity=None)
        fill(rt, rng.sample(range(1, 2000), rng.randrange(0, 400)))
        everyone = rt.peers()
        assert len(everyone) == len(rt) == len(set(everyone))
        for _ in range(25):
            key = rng.getrandbits(256) if trial % 2 else peer_key(rng.choice(everyone or [LOCAL]))
            count = rng.choice([1, 3, k, 20, 50, 1000])
            expected = sorted(everyone, key=lambda p: peer_key(p) ^ key)[:count]
            assert rt.closest(key, count) == expected


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 600), max_size=120), st.integers(0, 2**256 - 1), st.integers(1, 30))
def test_closest_property(ids: list[int], key: int, count: int) -> None:
    rt = table(k=3, diversity=None)
    fill(rt, ids)
    brute = sorted(rt.peers(), key=lambda p: peer_key(p) ^ key)[:count]
    assert rt.closest(key, count) == brute


def test_closest_of_own_key_and_edge_counts() -> None:
    rt = table(diversity=None)
    assert rt.closest(LOCAL_KEY, 5) == []
    fill(rt, range(1, 30))
    assert rt.closest(LOCAL_KEY, 0) == []
    assert rt.closest(LOCAL_KEY, 100) == sorted(rt.peers(), key=lambda p: peer_key(p) ^ LOCAL_KEY)


def test_buckets_split_on_our_side_and_never_exceed_k() -> None:
    rt = table(k=20, diversity=None)
    fill(rt, range(1, 3000))
    sizes = rt.buckets()
    assert len(sizes) > 5 and all(n <= 20 for n in sizes)
    assert sum(sizes) == len(rt)
    last = len(sizes) - 1
    for peer in rt.peers():
        info = rt.info(peer)
        assert info is not None and info.cpl == cpl_of(peer)
    # bucket i holds CPL i exactly; the last holds every CPL >= its index (it covers our own key)
    by_bucket: dict[int, list[int]] = {}
    for peer in rt.peers():
        by_bucket.setdefault(min(cpl_of(peer), last), []).append(cpl_of(peer))
    for index, cpls in by_bucket.items():
        assert all(c == index for c in cpls) if index < last else all(c >= last for c in cpls)
    # closer buckets are finer: the far half of the keyspace (CPL 0, ~1500 candidates) gets k slots,
    # as does the next quarter, while the close buckets hold everyone there is
    assert sizes[0] == 20 and sizes[1] == 20
    assert len(rt) < 3000


def test_last_bucket_holds_mixed_cpls_until_full() -> None:
    rt = table(k=20, diversity=None)
    fill(rt, range(1, 20))
    assert rt.buckets() == [19]  # one bucket covers the whole keyspace while it has room
    fill(rt, range(20, 60))
    assert len(rt.buckets()) > 1 and all(n <= 20 for n in rt.buckets())


def test_adding_exact_k_then_one_more_splits_and_keeps_far_bucket_full() -> None:
    rt = table(k=4, diversity=None)
    far = peers_with_cpl(0, 5)
    fill(rt, far[:4])
    assert rt.buckets() == [4]
    near = peers_with_cpl(1, 1)[0]
    assert isinstance(rt.offer(pid(near), ["81.0.0.1"], 0.0, verified=True), Added)
    assert rt.buckets() == [4, 1]
    result = rt.offer(pid(far[4]), ["81.0.0.2"], 0.0, verified=True)
    assert isinstance(result, PingRequest) and len(rt) == 5


# ---- check-before-add, replacement ------------------------------------------------------------------------


def test_new_peer_is_checked_before_insertion() -> None:
    rt = table()
    peer = pid(5)
    assert rt.offer(peer, [public_ip(5)], 1.0) == CheckNew(peer)
    assert not rt.contains(peer) and len(rt) == 0
    assert rt.offer(peer, [public_ip(5)], 2.0, verified=True) == Added(peer)
    assert peer in rt and rt.last_seen(peer) == 2.0 and rt.last_useful(peer) is None


def test_present_peer_updates_bookkeeping() -> None:
    rt = table()
    peer = pid(7)
    rt.offer(peer, [public_ip(7)], 1.0, verified=True)
    assert rt.offer(peer, [public_ip(7)], 5.0) == Updated(peer)
    assert rt.last_seen(peer) == 5.0 and rt.last_useful(peer) is None
    assert rt.offer(peer, [public_ip(7)], 6.0, verified=True) == Updated(peer)
    assert rt.last_useful(peer) == 6.0  # go's one-time usefulness bump on the first query
    assert rt.mark_useful(peer, 9.0) and rt.last_useful(peer) == 9.0
    assert not rt.mark_useful(pid(8), 9.0)
    assert rt.offer(LOCAL, ["81.0.0.1"], 1.0, verified=True) == Rejected(LOCAL, "self")


def _full_far_bucket(k: int = 4) -> tuple[RoutingTable, list[int], list[int]]:
    rt = table(k=k, diversity=None)
    ids = peers_with_cpl(0, k + 8)
    for t, i in enumerate(ids[:k]):
        rt.offer(pid(i), [public_ip(i)], float(t), verified=True)
    rt.offer(pid(peers_with_cpl(1, 1)[0]), ["82.0.0.1"], 0.0, verified=True)  # splits off our half
    return rt, ids[:k], ids[k:]


def test_full_bucket_asks_to_check_least_recently_seen_then_evicts_and_promotes() -> None:
    rt, members, spare = _full_far_bucket()
    rt.check_result(pid(members[0]), True, 10.0)  # members[1] is now the least recently seen
    candidate = pid(spare[0])
    result = rt.offer(candidate, [public_ip(spare[0])], 11.0, verified=True)
    assert result == PingRequest(pid(members[1]), candidate)
    assert candidate not in rt and rt.replacements() == [candidate]
    outcome = rt.check_result(pid(members[1]), False, 12.0)
    assert outcome == Eviction(evicted=pid(members[1]), promoted=candidate)
    assert candidate in rt and pid(members[1]) not in rt and rt.replacements() == []
    assert rt.buckets()[0] == 4


def test_full_bucket_check_alive_keeps_old_peer() -> None:
    rt, members, spare = _full_far_bucket()
    result = rt.offer(pid(spare[0]), [public_ip(spare[0])], 11.0, verified=True)
    assert isinstance(result, PingRequest) and result.peer == pid(members[0])
    assert rt.check_result(pid(members[0]), True, 12.0) == Eviction()
    assert pid(members[0]) in rt and rt.last_seen(pid(members[0])) == 12.0
    assert pid(spare[0]) not in rt and rt.replacements() == [pid(spare[0])]
    # the next candidate asks about the bucket's new least recently seen entry
    nxt = rt.offer(pid(spare[1]), [public_ip(spare[1])], 13.0, verified=True)
    assert nxt == PingRequest(pid(members[1]), pid(spare[1]))


def test_one_check_per_bucket_at_a_time_until_it_times_out() -> None:
    rt, members, spare = _full_far_bucket()
    assert isinstance(rt.offer(pid(spare[0]), [public_ip(spare[0])], 11.0, verified=True), PingRequest)
    assert rt.offer(pid(spare[1]), [public_ip(spare[1])], 12.0, verified=True) == Cached(pid(spare[1]))
    late = rt.offer(pid(spare[2]), [public_ip(spare[2])], 11.0 + rt.check_timeout, verified=True)
    assert isinstance(late, PingRequest)


def test_promotion_takes_freshest_candidate_and_dead_candidates_leave() -> None:
    rt, members, spare = _full_far_bucket()
    for t, i in enumerate(spare[:3]):
        rt.offer(pid(i), [public_ip(i)], 20.0 + t, verified=True)
    assert rt.check_result(pid(spare[2]), False, 24.0) == Eviction()  # a dead candidate is dropped
    assert rt.replacements() == [pid(spare[0]), pid(spare[1])]
    outcome = rt.check_result(pid(members[2]), False, 25.0)  # any table peer reported dead is evicted
    assert outcome == Eviction(evicted=pid(members[2]), promoted=pid(spare[1]))
    assert rt.last_seen(pid(spare[1])) == 21.0 and rt.info(pid(spare[1])) is not None


def test_replacement_cache_is_bounded_oldest_dropped() -> None:
    rt, members, spare = _full_far_bucket()
    for t, i in enumerate(spare[:7]):
        rt.offer(pid(i), [public_ip(i)], 20.0 + t, verified=True)
    assert rt.replacements() == [pid(i) for i in spare[2:7]]
    # cache full: an unverified newcomer is not worth a check ...
    assert rt.offer(pid(spare[7]), [public_ip(spare[7])], 30.0) == Rejected(pid(spare[7]), "bucket full")
    # ... until the candidates expire
    later = 27.0 + rt.replacement_ttl
    assert rt.offer(pid(spare[7]), [public_ip(spare[7])], later) == CheckNew(pid(spare[7]))
    assert rt.check_result(pid(members[0]), False, later + 1) == Eviction(evicted=pid(members[0]))


def test_remove_updates_filter_collapses_buckets_and_drops_candidates() -> None:
    rt = table(k=4)
    ids = peers_with_cpl(0, 6)
    near = peers_with_cpl(1, 1)[0]
    fill(rt, ids[:4] + [near])
    rt.offer(pid(ids[4]), [public_ip(ids[4])], 1.0, verified=True)
    assert rt.buckets() == [4, 1] and rt.replacements() == [pid(ids[4])]
    assert rt.remove(pid(near)) == Eviction(evicted=pid(near)) and rt.buckets() == [4]
    assert rt.remove(pid(ids[4])) == Eviction() and rt.replacements() == []
    assert rt.remove(pid(ids[0])).evicted == pid(ids[0]) and not rt.contains(pid(ids[0])) and len(rt) == 3
    assert rt.diversity is not None and rt.diversity.group_count(ip_group(public_ip(ids[0])) or "") == 0
    assert rt.remove(pid(ids[0])) == Eviction()
    # with a time, a waiting candidate takes the freed slot
    rt.offer(pid(ids[0]), [public_ip(ids[0])], 2.0, verified=True)
    rt.offer(pid(ids[5]), [public_ip(ids[5])], 3.0, verified=True)
    assert rt.replacements() == [pid(ids[5])]
    assert rt.remove(pid(ids[1]), 4.0) == Eviction(evicted=pid(ids[1]), promoted=pid(ids[5]))
    assert rt.buckets() == [4]


# ---- refresh ---------------------------------------------------------------------------------------------


def test_refresh_keys_land_in_their_bucket() -> None:
    rt = table(diversity=None)
    fill(rt, range(1, 400))
    rng = random.Random(3)
    targets = rt.due_refreshes(0.0, rng)
    assert [t.cpl for t in targets] == list(rt.tracked_cpls())
    assert len(targets) >= 6
    for target in targets:
        assert kad_key(target.key) == target.position
        assert common_prefix_length(target.position, LOCAL_KEY) == target.cpl
        PeerId.from_bytes(target.key)  # shaped as a peer id: FIND_NODE servers that parse the key accept it
    again = table(diversity=None)
    fill(again, range(1, 400))
    assert again.due_refreshes(0.0, random.Random(3)) == targets  # the randomness is the caller's


def test_random_key_with_cpl_bounds() -> None:
    rng = random.Random(5)
    for cpl in (0, 1, 5, 10):
        key, position = random_key_with_cpl(LOCAL_KEY, cpl, rng)
        assert len(key) == 34 and kad_key(key) == position and common_prefix_length(position, LOCAL_KEY) == cpl
    with pytest.raises(ValueError):
        random_key_with_cpl(LOCAL_KEY, 256, rng)


def test_refresh_timers_come_from_the_table() -> None:
    rt = table(diversity=None)
    fill(rt, range(1, 200))
    assert rt.next_refresh() == 0.0 and rt.self_lookup_due(0.0)
    rng = random.Random(1)
    assert rt.due_refreshes(5.0, rng)
    rt.mark_self_lookup(5.0)
    assert not rt.self_lookup_due(6.0)
    assert rt.next_refresh() == 5.0 + rt.refresh_interval
    assert rt.due_refreshes(5.0 + rt.refresh_interval - 1, rng) == []
    rt.note_lookup(peer_key(rt.peers()[0]), 100.0)  # any lookup refreshes its bucket
    due = rt.due_refreshes(5.0 + rt.refresh_interval, rng)
    assert cpl_of(rt.peers()[0]) not in [t.cpl for t in due] and due
    rt.mark_refreshed(0, 1000.0)
    assert rt.self_lookup_due(5.0 + rt.refresh_interval)


def test_tracked_cpls_capped_like_go() -> None:
    rt = table(diversity=None, max_refresh_cpl=3)
    assert list(rt.tracked_cpls()) == [0]
    fill(rt, range(1, 500))
    assert list(rt.tracked_cpls()) == [0, 1, 2, 3]


# ---- diversity ---------------------------------------------------------------------------------------------


def test_eclipse_fifty_sybils_from_one_slash16() -> None:
    rt = table()
    sybils = list(range(1, 51))
    for n, i in enumerate(sybils):
        result = rt.offer(pid(i), [f"45.67.{n}.{n + 1}"], 0.0, verified=True)
        assert isinstance(result, Added | Rejected)
    held = [pid(i) for i in sybils if pid(i) in rt]
    assert len(held) <= 3
    per_cpl: dict[int, int] = {}
    for peer in held:
        per_cpl[cpl_of(peer)] = per_cpl.get(cpl_of(peer), 0) + 1
    assert max(per_cpl.values()) <= 2
    assert rt.diversity is not None and rt.diversity.group_count("45.67.0.0/16") == len(held)
    # honest peers from distinct /16s fill normally: never refused for diversity, and the table holds as
    # many of them as a table with no filter, less the slots the Sybils kept
    honest = range(100, 700)
    results = [rt.offer(pid(i), [public_ip(i)], 0.0, verified=True) for i in honest]
    assert not [r for r in results if isinstance(r, Rejected) and r.reason == "diversity"]
    plain = table(diversity=None)
    fill(plain, honest)
    assert len(plain) - len(held) <= sum(1 for i in honest if pid(i) in rt) <= len(plain)
    assert all(n <= rt.k for n in rt.buckets())
    # sybils never get checked either: the filter answers before the check
    assert rt.offer(pid(60), ["45.67.200.1"], 1.0) == Rejected(pid(60), "diversity")


def test_private_ranges_exempt_by_default_grouped_on_request() -> None:
    loose = table()
    fill_ips = [(i, "127.0.0.1") for i in range(1, 40)]
    for i, ip in fill_ips:
        loose.offer(pid(i), [ip], 0.0, verified=True)
    assert len(loose) == 39  # loopback is not a group unless asked
    strict = table(diversity=DiversityFilter(group_private=True))
    for i, ip in fill_ips:
        strict.offer(pid(i), [ip], 0.0, verified=True)
    assert len(strict) == 3
    # 198.18.0.0/15 spans two /16 groups
    bench = table(diversity=DiversityFilter(group_private=True))
    for i in range(1, 40):
        bench.offer(pid(i), [f"198.{18 + i % 2}.{i}.1"], 0.0, verified=True)
    assert len(bench) == 6


def test_ip_groups() -> None:
    assert ip_group("8.8.8.8") == "8.8.0.0/16"
    assert ip_group("12.1.2.3") == ip_group("12.200.0.1") == "12.0.0.0/8"  # legacy class A
    assert ip_group("73.9.9.9") == "73.0.0.0/8" and ip_group("74.9.9.9") == "74.9.0.0/16"
    assert ip_group("2a00:1450:4001::1") == ip_group("2a00:1450:ffff::2") == "2a00:1450::/32"
    assert ip_group("2a00:1451::1") != ip_group("2a00:1450::1")
    assert ip_group("::ffff:8.8.4.4") == "8.8.0.0/16"
    assert ip_group("127.0.0.1") is None and ip_group("10.0.0.1") is None and ip_group("::1") is None
    assert ip_group("127.0.0.1", group_private=True) == "127.0.0.0/16"
    assert ip_group("fe80::1%eth0", group_private=True) == "fe80::/32"


def test_ipv6_slash32_grouping_caps_the_table() -> None:
    rt = table()
    for i in range(1, 30):
        rt.offer(pid(i), [f"2a00:1450:{i:x}::1"], 0.0, verified=True)
    assert len(rt) == 3
    rt2 = table()
    for i in range(1, 30):
        rt2.offer(pid(i), [f"2a00:{0x1000 + i:x}::1"], 0.0, verified=True)
    assert len(rt2) == 29


def test_peer_with_several_ips_counts_in_each_group() -> None:
    df = DiversityFilter(max_per_group_per_cpl=3)  # isolate the table-wide cap
    rt = table(diversity=df)
    assert rt.offer(pid(1), ["45.1.0.1", "46.1.0.1"], 0.0, verified=True) == Added(pid(1))
    assert df.group_count("45.1.0.0/16") == 1 and df.group_count("46.1.0.0/16") == 1
    assert rt.offer(pid(2), ["45.1.0.2"], 0.0, verified=True) == Added(pid(2))
    assert rt.offer(pid(3), ["45.1.0.3"], 0.0, verified=True) == Added(pid(3))
    assert df.group_count("45.1.0.0/16") == 3
    # a peer must fit in every group it is in: 45.1/16 is full, so a peer also in a fresh /16 is refused
    assert rt.offer(pid(5), ["47.1.0.1", "45.1.0.9"], 0.0, verified=True) == Rejected(pid(5), "diversity")
    assert rt.offer(pid(6), ["47.1.0.1"], 0.0, verified=True) == Added(pid(6))
    assert DiversityFilter().groups(["45.1.0.1", "45.1.9.9"]) == frozenset({"45.1.0.0/16"})  # counted once
    per_cpl = [groups.get("45.1.0.0/16", 0) for groups in df.stats().values()]
    assert sum(per_cpl) == 3
    assert rt.remove(pid(1)).evicted == pid(1)
    assert df.group_count("45.1.0.0/16") == 2 and df.group_count("46.1.0.0/16") == 0


def test_per_cpl_cap() -> None:
    df = DiversityFilter()
    rt = table(diversity=df)
    same_cpl = peers_with_cpl(0, 4)
    results = [rt.offer(pid(i), [f"45.1.{n}.1"], 0.0, verified=True) for n, i in enumerate(same_cpl)]
    assert results[:2] == [Added(pid(same_cpl[0])), Added(pid(same_cpl[1]))]
    assert results[2:] == [Rejected(pid(i), "diversity") for i in same_cpl[2:]]
    other = peers_with_cpl(1, 1)[0]
    assert rt.offer(pid(other), ["45.1.99.1"], 0.0, verified=True) == Added(pid(other))
    assert df.cpl_group_count(0, "45.1.0.0/16") == 2 and df.cpl_group_count(1, "45.1.0.0/16") == 1


def test_peers_without_usable_ips() -> None:
    rt = table()
    assert rt.offer(pid(1), [], 0.0) == Rejected(pid(1), "no usable IP address")
    assert rt.offer(pid(1), ["not-an-ip"], 0.0) == Rejected(pid(1), "no usable IP address")
    relaxed = table(diversity=DiversityFilter(admit_without_ip=True))
    assert relaxed.offer(pid(1), [], 0.0, verified=True) == Added(pid(1))
    assert table(diversity=None).offer(pid(1), [], 0.0, verified=True) == Added(pid(1))


def test_promotion_respects_diversity() -> None:
    df = DiversityFilter(max_per_group=10, max_per_group_per_cpl=1)
    rt = RoutingTable(LOCAL, k=2, diversity=df, now=0.0)
    far = peers_with_cpl(0, 4)
    rt.offer(pid(far[0]), ["45.0.0.1"], 0.0, verified=True)
    rt.offer(pid(far[1]), ["46.0.0.1"], 0.0, verified=True)
    rt.offer(pid(peers_with_cpl(1, 1)[0]), ["47.0.0.1"], 0.0, verified=True)
    assert isinstance(rt.offer(pid(far[2]), ["48.0.0.1"], 1.0, verified=True), PingRequest)
    assert isinstance(rt.offer(pid(far[3]), ["45.0.0.9"], 2.0, verified=True), Rejected)  # 45.0/16 at CPL 0
    # far[2] waits; evict far[1]: far[2] is allowed and promoted
    assert rt.check_result(pid(far[1]), False, 3.0) == Eviction(evicted=pid(far[1]), promoted=pid(far[2]))


def test_filter_results_drops_overrepresented_groups() -> None:
    sybil = [(pid(i), [f"45.67.0.{i}"]) for i in range(1, 6)]
    honest = [(pid(i), [public_ip(i)]) for i in range(10, 20)]
    mixed = [honest[0], *sybil, *honest[1:]]
    out = filter_results(mixed, 3)
    assert out == honest  # the whole /16 goes, order kept
    assert filter_results(mixed, 0) == mixed
    assert filter_results(sybil[:3], 3) == sybil[:3]
    # a peer with one address in a flooded group goes too; private addresses are not grouped by default
    dual = (pid(30), ["127.0.0.1", "45.67.1.1"])
    assert filter_results([*sybil, dual], 3) == []
    local = [(pid(i), ["127.0.0.1"]) for i in range(40, 50)]
    assert filter_results(local, 3) == local
    assert filter_results(local, 3, group_private=True) == []
    assert filter_results([(pid(1), ["junk", "8.8.8.8"])], 1) == [(pid(1), ["junk", "8.8.8.8"])]


def test_candidates_are_refreshed_not_duplicated() -> None:
    rt, members, spare = _full_far_bucket()
    assert rt.offer(pid(spare[0]), [public_ip(spare[0])], 20.0) == CheckNew(pid(spare[0]))  # cache has room
    rt.offer(pid(spare[0]), [public_ip(spare[0])], 20.0, verified=True)
    rt.offer(pid(spare[1]), [public_ip(spare[1])], 21.0, verified=True)
    rt.offer(pid(spare[0]), [public_ip(spare[0])], 22.0, verified=True)
    assert rt.replacements() == [pid(spare[1]), pid(spare[0])]  # re-offered: moved to newest, once
    rt.check_result(pid(spare[1]), True, 30.0)  # a candidate that answered is fresher still
    assert rt.check_result(pid(members[3]), False, 31.0).promoted == pid(spare[1])


def test_random_operations_keep_every_invariant() -> None:
    for seed in range(6):
        rng = random.Random(seed)
        df = DiversityFilter(max_per_group=3, max_per_group_per_cpl=2)
        rt = RoutingTable(LOCAL, k=3, diversity=df, now=0.0, replacement_cache_size=2)
        universe = list(range(1, 300))
        for step in range(1500):
            now = float(step)
            i = rng.choice(universe)
            ip = f"{rng.choice([45, 46, 47, 48, 90])}.{rng.randrange(4)}.0.1"
            op = rng.random()
            if op < 0.6:
                result = rt.offer(pid(i), [ip], now, verified=rng.random() < 0.7)
                if isinstance(result, PingRequest):
                    assert result.peer in rt and cpl_of(result.peer) == cpl_of(result.candidate)
            elif op < 0.9:
                rt.check_result(pid(i), rng.random() < 0.5, now)
            else:
                rt.remove(pid(i), now if rng.random() < 0.5 else None)
            if step % 50 == 0:
                everyone = rt.peers()
                assert len(everyone) == len(rt) == len(set(everyone)) and LOCAL not in rt
                sizes = rt.buckets()
                assert all(n <= 3 for n in sizes) and sum(sizes) == len(rt)
                assert all(rt.contains(p) for p in everyone)
                last = len(sizes) - 1
                cpls = [cpl_of(p) for p in everyone]
                assert sizes == [cpls.count(b) for b in range(last)] + [sum(1 for c in cpls if c >= last)]
                assert not set(rt.replacements()) & set(everyone)
                per_cpl: dict[int, int] = {}
                for p in rt.replacements():
                    per_cpl[cpl_of(p)] = per_cpl.get(cpl_of(p), 0) + 1
                assert all(n <= 2 for n in per_cpl.values())
                counted = sum(n for groups in df.stats().values() for n in groups.values())
                assert counted == len(rt)  # one public IP per peer: each counted once
                assert all(n <= 2 for groups in df.stats().values() for n in groups.values())
                key = rng.getrandbits(256)
                assert rt.closest(key, 7) == sorted(everyone, key=lambda p: peer_key(p) ^ key)[:7]


def test_eclipse_cap_holds_for_any_sybil_ids() -> None:
    for start in range(1000, 6000, 1000):
        rt = table()
        for n, i in enumerate(range(start, start + 50)):
            rt.offer(pid(i), [f"45.67.{n}.1"], 0.0, verified=True)
        assert len(rt) <= 3
        assert rt.diversity is not None
        assert all(n <= 2 for groups in rt.diversity.stats().values() for n in groups.values())
