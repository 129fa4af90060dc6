"""The connection manager in a host (MockClock for the grace period), services' tags, and
cancellation of a host in the middle of admission and trimming."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio
import trio.testing

from mycel.core.abc import MuxedStream
from mycel.core.events import PeerDisconnected
from mycel.core.peer_id import PeerId
from mycel.host import Host, open_host
from mycel.network.connmgr import ConnManagerConfig
from mycel.protocols.ping import Ping
from mycel.testing.hosts import memory_config
from mycel.transports.memory import MemoryNetwork, MemoryTransport


@contextlib.asynccontextmanager
async def hub_and_clients(n: int, connmgr: ConnManagerConfig) -> AsyncIterator[tuple[Host, list[Host]]]:
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        hub = await stack.enter_async_context(open_host(memory_config(network, connmgr=connmgr)))
        clients = [await stack.enter_async_context(open_host(memory_config(network))) for _ in range(n)]
        yield hub, clients


async def test_trims_to_low_watermark_after_grace_keeping_protected_and_tagged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cfg = ConnManagerConfig(low=2, high=3, grace=30.0, silence=5.0)
    async with hub_and_clients(5, cfg) as (hub, clients):
        with hub.subscribe() as events:
            start = trio.current_time()
            for c in clients:
                await c.connect(hub.addrs[0])
            valuable, protected = clients[0].peer_id, clients[1].peer_id
            hub.connmgr.tag_peer(valuable, "app", 100)
            hub.connmgr.tag_peer(clients[2].peer_id, "app", 1)
            hub.connmgr.protect(protected, "relay")
            # above the high watermark, but everyone is in the grace period: nothing is closed
            await trio.sleep(20)
            assert len(hub.connected_peers()) == 5
            gone: set[PeerId] = set()
            with trio.fail_after(60):
                while len(gone) < 3:
                    ev = await events.receive()
                    if isinstance(ev, PeerDisconnected):
                        gone.add(ev.peer)
            assert trio.current_time() - start >= 30.0  # not before the grace period ended
            assert set(hub.connected_peers()) == {valuable, protected}
            assert gone == {c.peer_id for c in clients[2:]}
            assert hub.connmgr.core.trimmed == 3
            await clients[0].service(Ping).ping(hub.peer_id)  # the kept ones still work


async def test_trim_now_respects_protection() -> None:
    cfg = ConnManagerConfig(low=1, high=100, grace=0.0, silence=0.0)
    async with hub_and_clients(3, cfg) as (hub, clients):
        for c in clients:
            await c.connect(hub.addrs[0])
        await trio.testing.wait_all_tasks_blocked()  # the hub registers its side of each connection
        assert hub.connmgr.core.connection_count == 3
        hub.connmgr.protect(clients[0].peer_id, "a")
        hub.connmgr.protect(clients[1].peer_id, "b")
        assert await hub.connmgr.trim_now() == 1
        await trio.testing.wait_all_tasks_blocked()
        assert set(hub.connected_peers()) == {clients[0].peer_id, clients[1].peer_id}


async def test_cancelling_a_host_while_it_trims_and_admits_leaks_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The hub is cancelled while its connection manager waits out the grace period and a new
    client is in its handshake: it exits promptly and every scope is released."""
    cfg = ConnManagerConfig(low=0, high=1, grace=1000.0, silence=1.0)
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(open_host(memory_config(network))) for _ in range(2)]
        hub_holder: list[Host] = []
        started = trio.Event()

        async def run_hub(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
            with trio.CancelScope() as scope:
                async with open_host(memory_config(network, connmgr=cfg)) as hub:
                    hub_holder.append(hub)
                    task_status.started(scope)
                    await started.wait()
                    await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            scope = await nursery.start(run_hub)
            hub = hub_holder[0]
            for c in clients:
                await c.connect(hub.addrs[0])
            started.set()
            await trio.sleep(5)  # the connection manager is above high, waiting for grace to end
            # a handshake in progress: a raw connection that sent one byte and stalls
            raw = await MemoryTransport(network).dial(hub.listen_addrs[0])
            await raw.send_all(b"\x13")
            await trio.testing.wait_all_tasks_blocked()
            assert hub.resources.stats()["transient"]["conns_inbound"] == 1
            t0 = trio.current_time()
            scope.cancel()
        assert trio.current_time() - t0 <= hub.config.shutdown_timeout + 0.1
        stats = hub.resources.stats()
        assert not any(v for k, v in stats["system"].items() if k != "limit")
        assert not any(v for k, v in stats["transient"].items() if k != "limit")
        assert stats["peers"] == {}
        assert hub.connmgr.core.connection_count == 0


async def test_trim_spares_a_peer_with_a_request_in_flight() -> None:
    """Among peers of equal value the trim closes idle ones first (go's order): the newest client,
    whose request is being served, keeps its connection and gets its answer."""
    cfg = ConnManagerConfig(low=1, high=100, grace=0.0, silence=0.0)
    release = trio.Event()

    async def slow_echo(stream: MuxedStream) -> None:
        data = await stream.receive_some(64)
        await release.wait()
        await stream.send_all(data)

    async with hub_and_clients(3, cfg) as (hub, clients):
        hub.set_stream_handler("/test/slow/1", slow_echo)
        for c in clients:
            await c.connect(hub.addrs[0])
        busy = clients[-1]  # the newest: the first to go if streams were not considered
        answer: list[bytes] = []

        async def ask() -> None:
            stream = await busy.new_stream(hub.peer_id, ["/test/slow/1"])
            await stream.send_all(b"still here")
            answer.append(await stream.receive_some(64))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            assert await hub.connmgr.trim_now() == 2
            await trio.testing.wait_all_tasks_blocked()
            assert hub.connected_peers() == [busy.peer_id]
            release.set()
        assert answer == [b"still here"]
