"""The simulated network's model: latency, bandwidth (store-and-forward, shared links), loss, partitions,
crashes — measured on trio's virtual clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from multiaddr import Multiaddr

from mycel.core.errors import DialError
from mycel.sim import MBIT, Regions, SimNetwork, Uniform, region_latency
from mycel.sim.network import SEGMENT, SimConnection, SimNode


async def _pair(net: SimNetwork, **node: float) -> tuple[SimConnection, SimConnection]:
    a = net.add_node(**node)  # type: ignore[arg-type]
    b = net.add_node(**node)  # type: ignore[arg-type]
    listener = await b.transport().open_listener(Multiaddr(b.listen_addr()))
    client = await a.transport().dial(Multiaddr(b.listen_addr()))
    server = await listener.accept()
    assert isinstance(client, SimConnection) and isinstance(server, SimConnection)
    return client, server


async def _conn(net: SimNetwork, src: SimNode, dst: SimNode) -> tuple[SimConnection, SimConnection]:
    listener = dst.listeners.get(4001) or await dst.transport().open_listener(Multiaddr(dst.listen_addr()))
    client = await src.transport().dial(Multiaddr(dst.listen_addr()))
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
        # a slow receiver takes a fast sender's bytes at its own rate: 8 ms on the uplink, 1 s on the downlink
        fast, slow = net.add_node(up_mbit=1000), net.add_node(up_mbit=8)
        conn, at_slow = await _conn(net, fast, slow)
        start = trio.current_time()
        await conn.send_all(b"\0" * size)
        assert len(await _read(at_slow, size)) == size
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


async def test_a_short_write_passes_other_connections_bulk_but_not_its_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A control message is interleaved with bulk of other connections at packet granularity (it waits
    one segment, not for a whole queued message) on the sender's uplink and on the receiver's downlink;
    on its own connection it keeps its place behind earlier bytes (TCP order)."""
    net = SimNetwork(seed=1, latency=Uniform(0.01))
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        a, b, c = (net.add_node(up_mbit=8) for _ in range(3))  # 1 MB/s links
        ab, at_b = await _conn(net, a, b)
        ac, at_c = await _conn(net, a, c)
        segment = SEGMENT / (8 * MBIT)
        # the uplink: 1 MB to b is queued (1 s), then 40 bytes to c
        start = trio.current_time()
        ab_bulk = b"\1" * 1_000_000
        net._send(ab._out, ab_bulk)  # queued on a's uplink without blocking this task
        await ac.send_all(b"x" * 40)
        assert await _read(at_c, 40) == b"x" * 40
        assert trio.current_time() - start == pytest.approx(0.01 + segment + 2 * 40 / (8 * MBIT), abs=1e-4)
        # ... but 40 bytes on the bulk's own connection arrive after the bulk
        await ab.send_all(b"y" * 40)
        assert await _read(at_b, 1_000_040) == ab_bulk + b"y" * 40
        assert trio.current_time() - start == pytest.approx(1.01, rel=0.01)

        # the downlink: d receives 1 MB from each of two fast nodes (2 s on d's downlink), then 40 bytes
        d = net.add_node(up_mbit=8)
        e, e2, f = net.add_node(up_mbit=1000), net.add_node(up_mbit=1000), net.add_node(up_mbit=1000)
        ed, at_d_from_e = await _conn(net, e, d)
        e2d, at_d_from_e2 = await _conn(net, e2, d)
        fd, at_d_from_f = await _conn(net, f, d)
        start = trio.current_time()
        net._send(ed._out, b"\2" * 1_000_000)
        net._send(e2d._out, b"\3" * 1_000_000)
        await fd.send_all(b"z" * 40)
        assert await _read(at_d_from_f, 40) == b"z" * 40
        assert trio.current_time() - start < 0.01 + 2 * segment + 0.001
        assert len(await _read(at_d_from_e2, 1_000_000)) == 1_000_000
        assert trio.current_time() - start > 1.0  # the second megabyte waited for the first
        nursery.cancel_scope.cancel()


async def test_bulk_writes_share_a_link_first_come_first_served(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(seed=1, latency=Uniform(0.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        a, b, c = (net.add_node(up_mbit=8) for _ in range(3))
        ab, at_b = await _conn(net, a, b)
        ac, at_c = await _conn(net, a, c)
        start = trio.current_time()
        net._send(ab._out, b"\0" * 500_000)
        net._send(ac._out, b"\0" * 2_000)  # more than a segment: bulk, waits its turn
        assert len(await _read(at_c, 2_000)) == 2_000
        assert trio.current_time() - start == pytest.approx(0.502, rel=0.01)
        assert len(await _read(at_b, 500_000)) == 500_000
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
