"""The observed-address table: confirmation at go's threshold of distinct observers, grouping of
observers (IPv4 address, IPv6 /56), expiry with the connection, replacement, bounds and filters."""

from __future__ import annotations

from multiaddr import Multiaddr

from mycel.core.addrs import AddressPolicy
from mycel.network.observed import ObservedAddrs, observer_group

LISTEN = [Multiaddr("/ip4/10.0.0.5/tcp/4001"), Multiaddr("/ip4/10.0.0.5/udp/4001/quic-v1")]
LOCAL = LISTEN[0]
EXTERNAL = Multiaddr("/ip4/203.0.113.9/tcp/4001")


def _remote(i: int) -> Multiaddr:
    return Multiaddr(f"/ip4/198.51.100.{i}/tcp/5000")


def test_confirmed_at_four_distinct_observers() -> None:
    table = ObservedAddrs()
    for i in range(3):
        assert not table.record(("conn", i), LOCAL, _remote(i), EXTERNAL, LISTEN)
        assert table.addrs(LISTEN) == []
    assert table.record(("conn", 3), LOCAL, _remote(3), EXTERNAL, LISTEN)
    assert table.addrs(LISTEN) == [EXTERNAL]
    assert table.observers(EXTERNAL) == 4


def test_one_observer_many_connections_does_not_confirm() -> None:
    table = ObservedAddrs()
    for i in range(10):
        table.record(("conn", i), LOCAL, Multiaddr("/ip4/198.51.100.1/tcp/%d" % (5000 + i)), EXTERNAL, LISTEN)
    assert table.observers(EXTERNAL) == 1 and table.addrs(LISTEN) == []


def test_ipv6_observers_grouped_by_56() -> None:
    assert observer_group(Multiaddr("/ip6/2001:db8:1:ff::1/tcp/1")) == observer_group(Multiaddr("/ip6/2001:db8:1:ee::2/tcp/1"))
    assert observer_group(Multiaddr("/ip6/2001:db8:1:ff::1/tcp/1")) != observer_group(Multiaddr("/ip6/2001:db8:2::1/tcp/1"))
    assert observer_group(Multiaddr("/ip4/1.2.3.4/tcp/1")) == "1.2.3.4"
    assert observer_group(Multiaddr("/dns4/example.com/tcp/1")) is None


def test_expiry_when_observers_go_away() -> None:
    table = ObservedAddrs()
    for i in range(4):
        table.record(i, LOCAL, _remote(i), EXTERNAL, LISTEN)
    assert table.addrs(LISTEN) == [EXTERNAL]
    version = table.version
    assert table.remove(0)  # down to 3 observers: no longer confirmed
    assert table.addrs(LISTEN) == [] and table.version == version + 1
    assert not table.remove(0)  # twice: nothing
    for i in (1, 2, 3):
        table.remove(i)
    assert len(table) == 0 and table.observers(EXTERNAL) == 0


def test_a_connection_reporting_another_address_replaces_its_old_one() -> None:
    table = ObservedAddrs()
    for i in range(4):
        table.record(i, LOCAL, _remote(i), EXTERNAL, LISTEN)
    other = Multiaddr("/ip4/203.0.113.10/tcp/4001")
    assert table.record(0, LOCAL, _remote(0), other, LISTEN)
    assert table.observers(EXTERNAL) == 3 and table.observers(other) == 1
    assert len(table) == 4


def test_quic_suffix_carried_and_top_three_per_local() -> None:
    table = ObservedAddrs()
    quic_local = Multiaddr("/ip4/10.0.0.5/udp/4001")
    conn = 0
    for n, ext in enumerate(["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"]):
        for i in range(4 + n):  # the fourth address has the most observers
            table.record(conn, quic_local, Multiaddr(f"/ip4/198.51.{n}.{i}/udp/9"), Multiaddr(f"/ip4/{ext}/udp/4001"), LISTEN)
            conn += 1
    got = table.addrs(LISTEN)
    assert len(got) == 3
    assert got[0] == Multiaddr("/ip4/203.0.113.4/udp/4001/quic-v1")
    assert all(str(a).endswith("/quic-v1") for a in got)


def test_ignored_observations() -> None:
    table = ObservedAddrs()
    # outbound from an ephemeral port: not one of our listen addresses
    assert not table.record(1, Multiaddr("/ip4/10.0.0.5/tcp/50000"), _remote(1), EXTERNAL, LISTEN)
    # loopback observed; relayed observed; transport mismatch (tcp local, udp observed)
    assert not table.record(2, LOCAL, _remote(2), Multiaddr("/ip4/127.0.0.1/tcp/4001"), LISTEN)
    circuit = Multiaddr("/ip4/203.0.113.9/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit")
    assert not table.record(3, LOCAL, _remote(3), circuit, LISTEN)
    assert not table.record(4, LOCAL, _remote(4), Multiaddr("/ip4/203.0.113.9/udp/4001"), LISTEN)
    assert not table.record(5, LOCAL, _remote(5), Multiaddr("/dns4/example.com/tcp/4001"), LISTEN)
    assert len(table) == 0


def test_loopback_counts_when_declared_public() -> None:
    table = ObservedAddrs(AddressPolicy(public_ranges=("127.0.0.0/8",), observed_threshold=2))
    listen = [Multiaddr("/ip4/127.0.0.1/tcp/4001")]
    observed = Multiaddr("/ip4/127.0.0.9/tcp/4001")
    table.record(1, listen[0], Multiaddr("/ip4/127.0.0.2/tcp/1"), observed, listen)
    assert table.record(2, listen[0], Multiaddr("/ip4/127.0.0.3/tcp/1"), observed, listen)
    assert table.addrs(listen) == [observed]


def test_bounded_connections() -> None:
    table = ObservedAddrs(max_connections=8)
    for i in range(100):
        table.record(i, LOCAL, _remote(i % 250), EXTERNAL, LISTEN)
    assert len(table) == 8 and table.dropped == 92
    table.remove(0)
    table.record(1000, LOCAL, _remote(99), EXTERNAL, LISTEN)
    assert len(table) == 8
