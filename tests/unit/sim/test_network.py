"""The simulated network's model: latency, bandwidth (store-and-forward, shared links), loss, partitions,
crashes — measured on trio's virtual clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from multiaddr import Multiaddr

from mycel.core.errors import DialError
from mycel.sim import MBIT, Regions, SimNetwork, Uniform, region_latency
from mycel.sim.network import SimConnection


async def _pair(net: SimNetwork, **node: float) -> tuple[SimConnection, SimConnection]:
    a = net.add_node(**node)  # type: ignore[arg-type]
    b = net.add_node(**node)  # type: ignore[arg-type]
    listener = await b.transport().open_listener(Multiaddr(b.listen_addr()))
    client = await a.transport().dial(Multiaddr(b.listen_addr()))
    server = await listener.accept()
    assert isinstance(client, SimConnection) and isinstance(server, SimConnection)
    return client, server


async def _read(conn: SimConnection, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = await conn.receive_some()
        if not chunk:
            break
        out += chunk
    return bytes(out)


async def test_latency_and_the_dial_round_trip(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(seed=1, latency=Uniform(0.05))
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        start = trio.current_time()
        client, server = await _pair(net, up_mbit=1000)
        assert trio.current_time() - start == pytest.approx(0.1)  # SYN + SYN-ACK
        start = trio.current_time()
        await client.send_all(b"x")
        assert await server.receive_some() == b"x"
        assert trio.current_time() - start == pytest.approx(0.05, abs=1e-4)
        nursery.cancel_scope.cancel()


async def test_bandwidth_is_store_and_forward_on_shared_links(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(seed=1, latency=Uniform(0.01))
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        client, server = await _pair(net, up_mbit=8)  # 1 MB/s each way
        start = trio.current_time()
        size = 1_000_000

        async def send() -> None:
            await client.send_all(b"\0" * size)

        nursery.start_soon(send)
        assert len(await _read(server, size)) == size
        # 1 s on the sender's uplink, 10 ms of flight; the receiver's downlink is as fast
        assert trio.current_time() - start == pytest.approx(1.01, rel=0.01)
        nursery.cancel_scope.cancel()


async def test_a_writer_blocks_on_a_full_uplink(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(seed=1, latency=Uniform(0.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        client, _ = await _pair(net, up_mbit=8)
        start = trio.current_time()
        await client.send_all(b"\0" * 2_000_000)  # 2 s of uplink; returns once <= 256 KiB is left queued
        assert trio.current_time() - start == pytest.approx(2.0 - 256 * 1024 / MBIT / 8, rel=0.01)
        nursery.cancel_scope.cancel()


async def test_loss_delays_but_never_reorders_or_drops(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(seed=3, latency=Uniform(0.02), loss=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        client, server = await _pair(net, up_mbit=1000)
        start = trio.current_time()
        sent = b"".join(i.to_bytes(4, "big") * 400 for i in range(200))  # 200 writes of 1,600 B (2 segments)

        async def send() -> None:
            for i in range(200):
                await client.send_all(sent[i * 1600 : (i + 1) * 1600])

        nursery.start_soon(send)
        got = await _read(server, len(sent))
        assert got == sent
        # ~10 % of the writes lost a segment: each cost >= 200 ms; in order, so the last arrives late
        assert trio.current_time() - start > 0.2
        nursery.cancel_scope.cancel()


async def test_partition_holds_bytes_until_heal_and_fails_dials(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(seed=1, latency=Uniform(0.01), dial_timeout=3.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        client, server = await _pair(net, up_mbit=100)
        a, b = client.node, server.node
        net.partition([[a], [b]])
        await client.send_all(b"held")
        with trio.move_on_after(30):
            await server.receive_some()
            pytest.fail("bytes crossed a partition")
        start = trio.current_time()
        with pytest.raises(DialError):
            await a.transport().dial(Multiaddr(b.listen_addr()))
        assert trio.current_time() - start == pytest.approx(3.0)
        net.heal()
        assert await server.receive_some() == b"held"
        nursery.cancel_scope.cancel()


async def test_cut_partition_and_crash_reset_connections(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(seed=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        client, server = await _pair(net)
        net.partition([[client.node], [server.node]], cut=True)
        with pytest.raises(trio.BrokenResourceError):
            await server.receive_some()
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"x")
        net.heal()
        c2, s2 = await _pair(net)
        c2.node.crash()
        with pytest.raises(trio.BrokenResourceError):
            await s2.receive_some()
        with pytest.raises(DialError):  # the crashed node's listener is gone
            await s2.node.transport().dial(Multiaddr(c2.node.listen_addr()))
        nursery.cancel_scope.cancel()


async def test_eof_after_data_and_close(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(seed=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        client, server = await _pair(net)
        await client.send_all(b"last words")
        await client.send_eof()
        assert await _read(server, 100) == b"last words"
        assert await server.receive_some() == b""
        await server.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await server.receive_some()
        nursery.cancel_scope.cancel()


def test_regions_are_symmetric_and_weighted() -> None:
    assert region_latency("europe", "na_east") == region_latency("na_east", "europe") == 0.07
    assert region_latency("australia", "south_africa") == 0.22
    net = SimNetwork(seed=5, latency=Regions())
    regions = [net.add_node().region for _ in range(2000)]
    assert regions.count("europe") > regions.count("na_east") > regions.count("south_america")


def test_same_seed_same_network() -> None:
    def build(seed: int) -> list[tuple[str, str]]:
        net = SimNetwork(seed=seed, latency=Regions())
        return [(n.ip, n.region) for n in (net.add_node() for _ in range(50))]

    assert build(7) == build(7)
    assert build(7) != build(8)


def test_sybils_packed_in_one_subnet() -> None:
    net = SimNetwork(seed=1)
    ips = [net.add_node(subnet="10.66.0.0/16").ip for _ in range(50)]
    assert len(set(ips)) == 50 and all(ip.startswith("10.66.") for ip in ips)
