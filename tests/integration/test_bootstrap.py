"""Bootstrap between real hosts on the memory transport (local peers only; go's public list is never
dialed): connect on start, /dnsaddr through a DNS server on 127.0.0.1, reconnect below the minimum, backoff
against a peer that is down (virtual time), cancellation mid-work, and a DHT filled from HostConfig.bootstrap."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio
import trio.testing

from mycel.core.abc import Connection
from mycel.core.identity import Identity
from mycel.discovery import Bootstrap, BootstrapRoundDone
from mycel.host import Host, HostConfig, open_host
from mycel.protocols.identify import Identify
from mycel.protocols.kad import KadDHT, RoutingTablePeerAdded
from mycel.testing.hosts import memory_config
from mycel.network.peerstore import AddrSource
from mycel.transports.memory import MemoryNetwork
from mycel.transports.tcp import TCP
from tests.integration.test_discovery_interface import _Recorder
from tests.unit.discovery.test_dnsaddr import local_dns


@contextlib.asynccontextmanager
async def _peers(network: MemoryNetwork, count: int, **kwargs: Any) -> AsyncIterator[list[Host]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(open_host(memory_config(network, **kwargs))) for _ in range(count)]


def _addr(host: Host) -> str:
    return f"{host.listen_addrs[0]}/p2p/{host.peer_id}"


def _down() -> str:
    """A bootstrap address nobody listens on (a dial fails at once)."""
    return f"/memory/999999/p2p/{Identity.generate().peer_id}"


async def _until(host: Host, done: Callable[[], bool], seconds: float = 30) -> None:
    """Wait for ``done()``, re-checking at each host event (every change that matters emits one)."""
    with trio.fail_after(seconds), host.subscribe(1024) as events:
        while not done():
            await events.receive()


async def test_connects_to_bootstrap_peers_on_start_even_with_discovery_connect_0() -> None:
    network = MemoryNetwork()
    async with _peers(network, 3) as peers:
        config = memory_config(network, bootstrap=[_addr(p) for p in peers], discovery_connect=0)
        async with open_host(config) as host:
            service = host.service(Bootstrap)
            await _until(host, lambda: service.stats["connected"] == 3)
            assert set(host.connected_peers()) == {p.peer_id for p in peers}
            assert service.stats["connected"] == 3 and service.stats["failures"] == 0
            assert service.stats["rounds"] == 1
            for p in peers:  # reported as discovered: the addresses are in the peerstore
                entries = host.peerstore.addr_entries(p.peer_id)
                assert any(AddrSource.DISCOVERY in e.sources for e in entries)


async def test_peer_found_events_name_the_bootstrap_source() -> None:
    network = MemoryNetwork()
    async with _peers(network, 1) as (peer,):
        config = memory_config(network, bootstrap=[_addr(peer)], bootstrap_min_peers=1)
        # a service of ours records what the host reports (it runs before any round can)
        recorder = _Recorder()
        config = config.replace(services=[*config.services, recorder])
        async with open_host(config) as host:
            await _until(host, lambda: bool(host.connected_peers()))
            seen = host.service(_Recorder).found
            assert [(e.peer, e.source) for e in seen] == [(peer.peer_id, "bootstrap")]
            assert [str(a) for a in seen[0].addrs] == [str(peer.listen_addrs[0])]


async def test_dnsaddr_bootstrap_through_a_local_dns_server() -> None:
    network = MemoryNetwork()
    async with _peers(network, 2) as (a, b), local_dns() as dns:
        dns.zone.update(
            {
                "_dnsaddr.peers.test": [
                    f"dnsaddr={_addr(a)}",
                    f"dnsaddr=/dnsaddr/b.peers.test/p2p/{b.peer_id}",
                    f"dnsaddr=/memory/424242/p2p/{Identity.generate().peer_id}",  # somebody else: filtered
                ],
                "_dnsaddr.b.peers.test": [f"dnsaddr={_addr(b)}"],
            }
        )
        config = memory_config(
            network,
            bootstrap=[f"/dnsaddr/peers.test/p2p/{a.peer_id}", f"/dnsaddr/peers.test/p2p/{b.peer_id}"],
            dns_nameservers=[dns.nameserver],
        )
        async with open_host(config) as host:
            await _until(host, lambda: len(host.connected_peers()) == 2)
            assert host.service(Bootstrap).stats["failures"] == 0
        assert dns.queries == {"_dnsaddr.peers.test": 2, "_dnsaddr.b.peers.test": 1}


async def test_dnsaddr_to_tcp_on_loopback() -> None:
    """The usual shape: a /dnsaddr naming /ip4/127.0.0.1/tcp/<port>/p2p/<id>, dialed over TCP."""

    def tcp(**kwargs: Any) -> HostConfig:
        return HostConfig(transports=[TCP()], listen=["/ip4/127.0.0.1/tcp/0"], **kwargs)

    async with open_host(tcp()) as server, local_dns() as dns:
        dns.zone["_dnsaddr.tcp.test"] = [f"dnsaddr={a}" for a in server.addrs]
        config = tcp(bootstrap=[f"/dnsaddr/tcp.test/p2p/{server.peer_id}"], dns_nameservers=[dns.nameserver])
        async with open_host(config) as host:
            await _until(host, lambda: host.service(Bootstrap).stats["connected"] == 1)
            (conn,) = host.connections(server.peer_id)
            assert str(conn.remote_addr) == str(server.listen_addrs[0])


async def test_reconnects_when_below_the_minimum(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    async with _peers(network, 3) as peers:
        a, b, other = peers
        config = memory_config(network, bootstrap=[_addr(a), _addr(b)], bootstrap_min_peers=2)
        async with open_host(config) as host:
            service = host.service(Bootstrap)
            await _until(host, lambda: len(host.connected_peers()) == 2)
            assert service.stats["rounds"] == 1

            # b drops us: 1 < 2 peers, a round dials b again at once (no timer needed)
            old = await _dropped(host, b)
            await _until(host, lambda: service.stats["connected"] == 3)
            assert service.stats["rounds"] == 2 and host.connections(b.peer_id) not in ([], [old])

            # with a third peer connected, losing b leaves 2: still enough, no round
            await host.connect(_addr(other))
            await _dropped(host, b)
            await trio.sleep(600)
            assert service.stats["rounds"] == 2 and not host.connections(b.peer_id)

            # then other goes too: below 2 again, b is bootstrapped back
            await _dropped(host, other)
            await _until(host, lambda: service.stats["connected"] == 4)
            assert service.stats["rounds"] == 3 and host.connections(b.peer_id)


async def _dropped(host: Host, peer: Host) -> Connection:
    """``peer`` closes its connection to ``host`` (once it has registered it too); returns it once ``host``
    has seen it close."""
    await _until(peer, lambda: bool(peer.connections(host.peer_id)))
    (conn,) = host.connections(peer.peer_id)
    await peer.disconnect(host.peer_id)
    await _until(host, lambda: conn not in host.connections(peer.peer_id))
    return conn


async def test_a_down_bootstrap_peer_is_retried_with_backoff(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    async with _peers(network, 1) as (up,):
        config = memory_config(network, bootstrap=[_addr(up), _down()], bootstrap_min_peers=3)
        async with open_host(config) as host:
            rounds: list[tuple[float, BootstrapRoundDone]] = []
            with host.subscribe(1024) as events:
                with trio.move_on_after(3600):  # one virtual hour
                    async for event in events:
                        if isinstance(event, BootstrapRoundDone):
                            rounds.append((trio.current_time(), event))
            stats = host.service(Bootstrap).stats
    # each round: the down peer tried 3 times (1 s, 2 s apart), then a pause doubling up to 300 s
    assert all(e.unreachable == 1 and e.retry_in is not None for _, e in rounds)
    pauses = [e.retry_in for _, e in rounds if e.retry_in is not None]
    assert max(pauses) <= 300 and pauses[-1] >= 150
    for (t0, e0), (t1, _) in zip(rounds, rounds[1:]):
        assert e0.retry_in is not None and t1 - t0 >= e0.retry_in  # no round before its pause ended
    assert 15 <= len(rounds) <= 35, len(rounds)
    # attempts over the hour: 3 per round for the down peer, plus the one that connected: no busy loop
    assert stats["attempts"] == 3 * stats["rounds"] + 1
    assert stats["failures"] == 3 * stats["rounds"]
    assert stats["connected"] == 1


async def test_cancelled_mid_work_exits_promptly_and_leaks_nothing() -> None:
    """Cancelled while one bootstrap peer is in backoff and another's /dnsaddr lookup hangs on a DNS
    server that never answers: the host exits at once and no task is left behind."""
    network = MemoryNetwork()
    before = _task_count()
    async with local_dns() as dns:
        dns.silent = True
        config = memory_config(
            network,
            bootstrap=[_down(), f"/dnsaddr/slow.test/p2p/{Identity.generate().peer_id}"],
            dns_nameservers=[dns.nameserver],
            bootstrap_min_peers=2,
        )
        with trio.CancelScope() as scope:
            async with open_host(config) as host:
                service = host.service(Bootstrap)
                with trio.fail_after(10):  # both workers stuck: one in its backoff sleep, one waiting for DNS
                    while not (dns.queries and service.stats["failures"]):
                        await trio.testing.wait_all_tasks_blocked(0.01)
                start = trio.current_time()
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert trio.current_time() - start < 0.5  # nothing to close gracefully: out at once
        assert dns.queries == {"_dnsaddr.slow.test": 1}
        assert service.stats["connected"] == 0
        assert not host.service_state(Bootstrap).running
    assert _task_count() == before


def _task_count() -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(t) for n in task.child_nurseries for t in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return count(root)


async def test_dht_fills_its_table_from_host_bootstrap_alone(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()

    def dht_config(**kwargs: Any) -> HostConfig:
        return memory_config(network, services=[Identify(), KadDHT()], **kwargs)

    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(open_host(dht_config())) for _ in range(8)]
        for left, right in zip(servers, servers[1:]):  # a chain: only the first is known to the newcomer
            await left.connect(_addr(right))
        for server in servers:
            table = server.service(KadDHT).routing_table
            await _until(server, lambda: len(table) >= 1)  # (awaited at once: the closure sees this table)
        newcomer = await stack.enter_async_context(
            open_host(dht_config(bootstrap=[_addr(servers[0])], bootstrap_min_peers=1))
        )
        dht = newcomer.service(KadDHT)
        assert dht.bootstrap_peers == ()  # no list of its own: HostConfig.bootstrap is used
        with newcomer.subscribe(1024) as events, trio.fail_after(120):
            while len(dht.routing_table) < len(servers):
                event = await events.receive()
                assert not isinstance(event, RoutingTablePeerAdded) or event.size <= len(servers)
        # it learnt servers it was never told of: the self-lookup ran through the bootstrap peer
        assert len(dht.routing_table) == len(servers)
        assert newcomer.service(Bootstrap).stats["connected"] == 1
