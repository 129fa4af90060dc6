"""The resource manager in running hosts (memory network and TCP on 127.0.0.1): over-limit streams and
connections are refused and counted while other peers are served; everything is released."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
import trio.testing

from mycel import HostConfig, Identity, open_host
from mycel.core.abc import MuxedStream
from mycel.core.errors import DialError, MycelError, ResourceLimitExceeded
from mycel.host import Host
from mycel.muxers.mplex import Mplex
from mycel.muxers.yamux import Yamux
from mycel.network.resources import ResourceLimitReached, ResourceLimits, ScopeLimit
from mycel.protocols.echo import ECHO_PROTOCOL, Echo
from mycel.protocols.identify import Identify
from mycel.protocols.ping import Ping
from mycel.security.noise.connection import NoiseConnection
from mycel.security.noise import Noise
from mycel.testing.hosts import memory_config
from mycel.transports.memory import MemoryNetwork, MemoryTransport
from mycel.transports.tcp import TCP


def services() -> list[Any]:
    return [Identify(), Ping(), Echo()]


def config(kind: str, network: MemoryNetwork, **kw: Any) -> HostConfig:
    if kind == "memory":
        return memory_config(network, services=services(), **kw)
    return HostConfig(
        identity=Identity.generate(),
        transports=[TCP()],
        security=[Noise()],
        muxers=[Yamux(), Mplex()],
        services=services(),
        listen=["/ip4/127.0.0.1/tcp/0"],
        **kw,
    )


@contextlib.asynccontextmanager
async def hosts(kind: str, n: int, server_limits: ResourceLimits) -> AsyncIterator[list[Host]]:
    """A server with ``server_limits`` and ``n - 1`` clients with the defaults."""
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        out = [await stack.enter_async_context(open_host(config(kind, network, resources=server_limits)))]
        for _ in range(n - 1):
            out.append(await stack.enter_async_context(open_host(config(kind, network))))
        yield out


async def echo_once(stream: MuxedStream, data: bytes) -> bytes:
    await stream.send_all(data)
    await stream.send_eof()
    got = bytearray()
    async for chunk in stream:
        got += chunk
    return bytes(got)


async def is_reset(stream: MuxedStream) -> bool:
    """True when the server reset the stream (reading fails rather than echoing)."""
    try:
        with trio.fail_after(5):
            await stream.send_all(b"x")
            data = await stream.receive_some()
    except (MycelError, trio.BrokenResourceError, trio.ClosedResourceError):
        return True
    return data == b""


async def until(condition: Callable[[], bool], rounds: int = 200) -> None:
    """Let every task run until it blocks, until ``condition`` holds (no sleeping; bounded)."""
    with trio.fail_after(10):
        for _ in range(rounds):
            if condition():
                return
            await trio.testing.wait_all_tasks_blocked(cushion=0.001)
    assert condition()


def all_released(host: Host) -> bool:
    stats = host.resources.stats()
    usage = {k: v for k, v in stats["system"].items() if k != "limit"}
    return not any(usage.values()) and not stats["peers"]


@pytest.mark.parametrize("kind", ["memory", "tcp"])
async def test_over_limit_streams_reset_and_counted_while_others_are_served(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    limits = ResourceLimits.unlimited().override(protocol_peer={"streams_inbound": 2})
    async with hosts(kind, 3, limits) as (server, greedy, polite):
        with server.subscribe() as events:
            await greedy.connect(server.addrs[0])
            await polite.connect(server.addrs[0])
            held = [await greedy.new_stream(server.peer_id, ECHO_PROTOCOL) for _ in range(2)]
            for s in held:  # both served (and still open)
                await s.send_all(b"hi")
                assert await s.receive_some() == b"hi"
            with caplog.at_level(logging.WARNING, logger="mycel.host"):
                extra = [await greedy.new_stream(server.peer_id, ECHO_PROTOCOL) for _ in range(3)]
                assert [await is_reset(s) for s in extra] == [True, True, True]
            refused = server.resources.stats()["refused"]
            assert refused == {f"protocol-peer:{ECHO_PROTOCOL}": {"streams_inbound": 3}}
            # one rate-limited WARNING and one event for the three refusals
            warnings = [r for r in caplog.records if "resource limit reached" in r.getMessage()]
            assert len(warnings) == 1
            reached = []
            while True:
                try:
                    ev = events.receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(ev, ResourceLimitReached):
                    reached.append(ev)
            assert [(e.scope, e.resource, e.peer) for e in reached] == [
                (f"protocol-peer:{ECHO_PROTOCOL}", "streams_inbound", greedy.peer_id)
            ]
            # the polite peer is served meanwhile, and so is the greedy one on another protocol
            stream = await polite.new_stream(server.peer_id, ECHO_PROTOCOL)
            assert await echo_once(stream, b"x" * 100_000) == b"x" * 100_000
            await greedy.service(Ping).ping(server.peer_id)
            # a held stream closes: room for one more from the greedy peer
            assert await echo_once(held[0], b"") == b"hi"[:0]
            await held[0].aclose()
            # (the server's handler releases its scope once it has sent its EOF and returned)
            await until(lambda: server.resources.stats()["protocols"][ECHO_PROTOCOL]["streams_inbound"] == 1)
            again = await greedy.new_stream(server.peer_id, ECHO_PROTOCOL)
            assert await echo_once(again, b"ok") == b"ok"
            await held[1].aclose()
        await greedy.disconnect(server.peer_id)
        await polite.disconnect(server.peer_id)
        await until(lambda: not server.connections() and all_released(server))


@pytest.mark.parametrize("kind", ["memory", "tcp"])
async def test_established_connections_bounded_in_total(kind: str) -> None:
    limits = ResourceLimits.unlimited().override(system={"conns_inbound": 2})
    async with hosts(kind, 4, limits) as (server, a, b, c):
        await a.connect(server.addrs[0])
        await b.connect(server.addrs[0])
        with pytest.raises(DialError):
            with trio.fail_after(10):
                conn = await c.connect(server.addrs[0])
                # the server refused it at accept: the dial fails, or the connection dies at once
                await conn.open_stream()
                await c.service(Ping).ping(server.peer_id)
        assert server.resources.stats()["refused"] == {"system": {"conns_inbound": 1}}
        assert sorted(map(str, server.connected_peers())) == sorted([str(a.peer_id), str(b.peer_id)])
        await a.service(Ping).ping(server.peer_id)  # the first two are served


async def test_per_peer_connection_limit() -> None:
    limits = ResourceLimits.unlimited().override(peer={"conns": 1})
    async with hosts("memory", 2, limits) as (server, client):
        await client.connect(server.addrs[0])
        base = server.listen_addrs[0]
        # a second connection from the same peer (a bare address is dialed anew, not reused)
        with server.subscribe() as events, trio.fail_after(10):
            with contextlib.suppress(DialError):
                second = await client.swarm.dial_addr(base)
                with contextlib.suppress(MycelError):
                    await second.open_stream()
            while not isinstance(await events.receive(), ResourceLimitReached):
                pass
        assert server.resources.stats()["refused"] == {"peer": {"conns": 1}}
        await until(lambda: len(server.connections(client.peer_id)) == 1)
        await client.service(Ping).ping(server.peer_id)


async def test_outbound_stream_limit_is_a_typed_error() -> None:
    network = MemoryNetwork()
    limits = ResourceLimits.unlimited().override(protocol_peer={"streams_outbound": 2})
    async with open_host(memory_config(network, services=services())) as server, open_host(
        memory_config(network, services=services(), resources=limits)
    ) as client:
        await client.connect(server.addrs[0])
        s1 = await client.new_stream(server.peer_id, ECHO_PROTOCOL)
        s2 = await client.new_stream(server.peer_id, ECHO_PROTOCOL)
        with pytest.raises(ResourceLimitExceeded) as info:
            await client.new_stream(server.peer_id, ECHO_PROTOCOL)
        assert (info.value.scope, info.value.resource) == (f"protocol-peer:{ECHO_PROTOCOL}", "streams_outbound")
        await s1.aclose()  # finished streams are released when the next one needs room
        s3 = await client.new_stream(server.peer_id, ECHO_PROTOCOL)
        assert await echo_once(s3, b"abc") == b"abc"
        await s2.aclose()


async def test_allowlisted_address_reachable_when_the_node_is_full() -> None:
    """Strangers (over ::1) fill the server's inbound connections; a peer from the allowlisted
    127.0.0.1 still gets in, charged to the allowlisted scopes."""
    limits = ResourceLimits.unlimited().override(
        system={"conns_inbound": 1}, allowlisted_system={"conns_inbound": 4}
    )
    limits = ResourceLimits(**{**limits.__dict__, "allowlist": ("/ip4/127.0.0.1/ipcidr/32",)})
    network = MemoryNetwork()
    server_cfg = config("tcp", network, resources=limits).replace(listen=["/ip4/127.0.0.1/tcp/0", "/ip6/::1/tcp/0"])
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(open_host(server_cfg))
        v4 = next(a for a in server.addrs if "/ip4/" in str(a))
        v6 = next(a for a in server.addrs if "/ip6/" in str(a))
        strangers = [await stack.enter_async_context(open_host(config("tcp", network))) for _ in range(2)]
        await strangers[0].connect(v6)
        with pytest.raises(DialError):
            with trio.fail_after(10):
                conn = await strangers[1].connect(v6)
                await conn.open_stream()
                await strangers[1].service(Ping).ping(server.peer_id)
        trusted = await stack.enter_async_context(open_host(config("tcp", network)))
        await trusted.connect(v4)
        await trusted.service(Ping).ping(server.peer_id)
        stats = server.resources.stats()
        assert stats["refused"] == {"system": {"conns_inbound": 1}}
        assert stats["allowlisted_system"]["conns_inbound"] == 1


async def test_stalled_handshakes_are_evicted_before_the_transient_scope_refuses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The pending-handshake table and the transient scope are one bound: with room for two pending
    connections, two stalled ones are evicted for a legit peer instead of the scope refusing it."""
    network = MemoryNetwork()
    limits = ResourceLimits.unlimited().override(transient={"conns_inbound": 2})
    async with open_host(memory_config(network, services=services(), resources=limits)) as server, open_host(
        memory_config(network, services=services())
    ) as client:
        stalled = []
        for _ in range(2):
            raw = await MemoryTransport(network).dial(server.listen_addrs[0])
            await raw.send_all(b"\x13")  # the start of a multistream header, and nothing more
            stalled.append(raw)
        await trio.sleep(2)  # stalled for longer than the table's stall_after
        assert server.resources.stats()["transient"]["conns_inbound"] == 2
        await client.connect(server.addrs[0])
        await client.service(Ping).ping(server.peer_id)
        assert server.resources.stats()["refused"] == {}
        assert server.swarm.stats()["evicted_stalled"] >= 1
        for raw in stalled:
            await raw.aclose()


async def cancel_in_handshake(client: Host, server: Host) -> int:
    """Dial the server anew and cancel the dial while it is in its handshake (holding a transient
    reservation); 1 if that happened, 0 if the dial finished first."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.swarm.dial_addr, server.listen_addrs[0])
        for _ in range(1000):
            await trio.lowlevel.checkpoint()
            if client.resources.transient.conns_outbound:
                nursery.cancel_scope.cancel()
                return 1
    return 0


async def test_churn_releases_every_reservation() -> None:
    """Connections and streams opened, used, closed, reset, abandoned and cancelled in every order:
    afterwards nothing is held in any scope of either side."""
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(open_host(memory_config(network, services=services())))
        clients = [await stack.enter_async_context(open_host(memory_config(network, services=services()))) for _ in range(3)]
        cancelled_mid_handshake = 0
        for round_ in range(6):
            for i, client in enumerate(clients):
                await client.connect(server.addrs[0])
                s1 = await client.new_stream(server.peer_id, ECHO_PROTOCOL)
                assert await echo_once(s1, b"data") == b"data"
                s2 = await client.new_stream(server.peer_id, ECHO_PROTOCOL)
                await s2.send_all(b"x")
                if (round_ + i) % 3 == 0:
                    await s2.reset()
                elif (round_ + i) % 3 == 1:
                    await s2.aclose()
                # else: left open, the disconnect ends it
                cancelled_mid_handshake += await cancel_in_handshake(client, server)
                await client.disconnect(server.peer_id)
        assert cancelled_mid_handshake >= 6
        for host in (server, *clients):
            await until(lambda host=host: not host.connections() and all_released(host))  # type: ignore[misc]
            stats = host.resources.stats()
            assert stats["transient"]["conns_inbound"] == stats["transient"]["conns_outbound"] == 0
            assert stats["transient"]["streams_inbound"] == stats["transient"]["streams_outbound"] == 0
            assert all(not any(u.values()) for u in stats["protocols"].values())
            assert stats["refused_total"] == 0


async def test_muxer_buffers_count_against_the_system_memory() -> None:
    """Each yamux stream's receive window is reserved from the host's system scope: with room for a
    few windows, further inbound streams are refused there (counted), and the memory comes back when
    the streams end."""
    window = 256 * 1024
    network = MemoryNetwork()
    limits = ResourceLimits.unlimited().override(system={"memory": 6 * window})
    async with open_host(
        memory_config(network, services=services(), resources=limits, muxers=[Yamux()])
    ) as server, open_host(memory_config(network, services=services(), muxers=[Yamux()])) as client:
        await client.connect(server.addrs[0])
        await until(lambda: bool(server.connections(client.peer_id)))  # its side upgraded (Noise's buffers reserved)
        await until(lambda: not server.resources.stats()["protocols"].get("/ipfs/id/1.0.0", {}).get("streams_inbound"))
        base = server.resources.system.memory
        assert base >= NoiseConnection.buffer_bound  # the secure channel's own buffers, for the connection's life
        held = []
        refused = 0
        for _ in range(8):
            stream = await client.new_stream(server.peer_id, ECHO_PROTOCOL, lazy=True)
            if await is_reset(stream):
                refused += 1
            else:
                held.append(stream)
        assert held and refused  # some fit in the system's memory, the rest did not
        assert server.resources.system.memory == base + len(held) * window <= 6 * window
        assert server.resources.stats()["refused"]["system"]["memory"] >= refused
        for stream in held:
            await stream.reset()
        await until(lambda: server.resources.system.memory == base)


async def test_the_secure_channels_buffers_are_reserved_and_a_refusal_closes_only_that_connection() -> None:
    """Noise may hold an incomplete frame and a complete one between reads (~128 KiB): reserved in the
    peer's scope once the handshake names the peer, for the connection's life. A peer scope without room
    refuses the connection (counted), and the host goes on serving a peer it has room for."""
    network = MemoryNetwork()
    bound = NoiseConnection.buffer_bound
    limits = ResourceLimits.unlimited().override(peer={"memory": bound - 1})
    trusted = Identity.generate()
    limits = ResourceLimits(**{**limits.__dict__, "peers": {trusted.peer_id: ScopeLimit(memory=4 * bound)}})
    async with open_host(memory_config(network, services=services(), resources=limits)) as server:
        async with open_host(memory_config(network, services=services())) as stranger:
            with pytest.raises(MycelError):
                await stranger.connect(server.addrs[0])
                await stranger.new_stream(server.peer_id, ECHO_PROTOCOL)  # the server closed its side
            await until(lambda: server.resources.stats()["refused"].get("peer", {}).get("memory", 0) >= 1)
            assert not server.connections(stranger.peer_id)
        async with open_host(memory_config(network, services=services(), identity=trusted)) as friend:
            await friend.connect(server.addrs[0])
            await until(lambda: bool(server.connections(friend.peer_id)))
            assert server.resources.stats()["peers"][str(friend.peer_id)]["memory"] >= bound
            stream = await friend.new_stream(server.peer_id, ECHO_PROTOCOL)
            await stream.send_all(b"hi")
            assert await stream.receive_some(2) == b"hi"
            await stream.aclose()
            await friend.disconnect(server.peer_id)
        await until(lambda: server.resources.system.memory == 0)
