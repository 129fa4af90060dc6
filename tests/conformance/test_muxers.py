"""The muxer conformance suite, for yamux and mplex over a real socketpair."""

from __future__ import annotations

import gc
import logging
import tracemalloc
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from mycel.core.abc import StreamMuxer
from mycel.core.errors import ConnectionClosed, StreamReset
from mycel.muxers.driver import MuxedConnection
from mycel.muxers.mplex import Mplex
from mycel.muxers.yamux import Yamux
from mycel.muxers.yamux.core import FLAG_SYN, TYPE_WINDOW_UPDATE, YamuxCore, encode_frame
from mycel.testing import conformance
from mycel.testing.conformance import PairFactory, muxer_pair_factory, receive_exactly
from mycel.testing.fake_secure import memory_secure_pair, socketpair_secure_pair

MUXERS: dict[str, Callable[..., StreamMuxer]] = {"yamux": Yamux, "mplex": Mplex}


def factory(name: str, **server_options: object) -> PairFactory:
    make = MUXERS[name]
    server = make(**server_options) if server_options else None
    return muxer_pair_factory(make(), server)


@pytest.fixture(params=sorted(MUXERS))
def muxer_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.mark.parametrize("check", conformance.ALL_CHECKS, ids=lambda c: c.__name__)
async def test_check(muxer_name: str, check: Callable[[PairFactory], Awaitable[None]]) -> None:
    await check(factory(muxer_name))


async def test_accept_backlog(muxer_name: str) -> None:
    await conformance.check_accept_backlog(factory(muxer_name, accept_backlog=8), backlog=8)


async def test_slow_reader_yamux_blocks() -> None:
    await conformance.check_slow_reader(factory("yamux"), expect="block")


async def test_slow_reader_mplex_resets() -> None:
    await conformance.check_slow_reader(factory("mplex", max_buffer=1024 * 1024), expect="reset")


async def test_stream_rules(muxer_name: str) -> None:
    await conformance.check_stream_rules(factory(muxer_name), clogs=muxer_name == "yamux")


async def test_over_memory_streams(muxer_name: str) -> None:
    make = MUXERS[muxer_name]
    pair = muxer_pair_factory(make(), secure_pair=memory_secure_pair)
    await conformance.check_large_transfer(pair, size=1024 * 1024)
    await conformance.check_half_close(pair)


# ---- driver details beyond the generic checks ------------------------------------------------


async def test_streams_are_freed(muxer_name: str) -> None:
    async with factory(muxer_name)() as (client, server):
        assert isinstance(client, MuxedConnection) and isinstance(server, MuxedConnection)
        for _ in range(20):
            out = await client.open_stream()
            await out.send_all(b"q")
            await out.send_eof()
            inc = await server.accept_stream()
            assert await receive_exactly(inc, 1) == b"q"
            await inc.send_all(b"a")
            await inc.aclose()
            assert await out.receive_some() == b"a"
            assert await out.receive_some() == b""
            await out.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert client.stats.extra["streams"] == 0
        assert server.stats.extra["streams"] == 0


async def test_yamux_unacked_limit_blocks_open() -> None:
    muxer = Yamux(max_unacked=4)
    async with muxer_pair_factory(muxer, Yamux())() as (client, server):
        opened = [await client.open_stream() for _ in range(4)]
        fifth_open = trio.Event()

        async def open_fifth() -> None:
            await client.open_stream()
            fifth_open.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(open_fifth)
            await trio.testing.wait_all_tasks_blocked()
            assert not fifth_open.is_set()
            inc = await server.accept_stream()
            await inc.send_all(b"ack")  # the first frame carries the ACK
            await fifth_open.wait()
        assert await receive_exactly(opened[0], 3) == b"ack"


async def test_yamux_ping_and_window_growth() -> None:
    async with factory("yamux")() as (client, server):
        assert isinstance(client, MuxedConnection) and isinstance(server, MuxedConnection)
        rtt = await client.ping()
        assert 0 <= rtt < 5
        assert client.stats.extra["rtt"] == client._core.rtt  # type: ignore[attr-defined]
        # Pretend the path is slow (auto-tuning RTT 0.5 s, the most a measurement may claim): a reader
        # that keeps up then always answers within 2 RTTs, so the window must double up to 16 MiB.
        server_core = server._core
        assert isinstance(server_core, YamuxCore)
        await server.ping()  # pongs come in order: no earlier sample can overwrite ours now
        server_core._tuning_rtt = 0.5
        out = await client.open_stream()
        data = b"w" * (16 * 1024 * 1024)
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                inc = await server.accept_stream()
                assert await receive_exactly(inc, len(data)) == data

            nursery.start_soon(reader)
            await out.send_all(data)
        assert server_core.receive_window(out.stream_id) == 16 * 1024 * 1024


async def test_mplex_has_no_ping() -> None:
    async with factory("mplex")() as (client, _server):
        assert isinstance(client, MuxedConnection)
        with pytest.raises(NotImplementedError):
            await client.ping()


async def test_protocol_violation_closes_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    a, b = socketpair_secure_pair()
    conn = Yamux().new_connection(b)  # server side
    other_pair = factory("yamux")
    caplog.set_level(logging.WARNING, logger="mycel.muxers")
    async with other_pair() as (c2, s2), trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        # odd ids belong to the client: a SYN with an even id from the client is a violation
        await a.send_all(encode_frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 2, 0))
        reply = bytearray()
        while True:
            chunk = await a.receive_some()
            if not chunk:
                break
            reply += chunk
        assert reply.endswith(bytes.fromhex("000300000000000000000001"))  # GoAway(protocol error)
        with pytest.raises(ConnectionClosed):
            await conn.accept_stream()
        assert conn.is_closed
        assert "protocol violation" in conn.close_reason
        assert any("violation" in r.getMessage() and "peer-a" in r.getMessage() for r in caplog.records)
        # an unrelated connection is unaffected
        out = await c2.open_stream()
        await out.send_all(b"still fine")
        inc = await s2.accept_stream()
        assert await receive_exactly(inc, 10) == b"still fine"
    await a.aclose()


async def test_mplex_violation_closes_connection() -> None:
    a, b = socketpair_secure_pair()
    conn = Mplex().new_connection(b)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await a.send_all(bytes([0x07, 0x00]))  # flag 7 does not exist
        assert await a.receive_some() == b""  # the connection is closed on us
        with pytest.raises(ConnectionClosed):
            await conn.open_stream()
    await a.aclose()


async def test_remote_eof_wakes_everything(muxer_name: str) -> None:
    a, b = socketpair_secure_pair()
    conn = MUXERS[muxer_name]().new_connection(b)
    peer = MUXERS[muxer_name]().new_connection(a)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        nursery.start_soon(peer.run)
        out = await peer.open_stream()
        await out.send_all(b"x")
        inc = await conn.accept_stream()
        assert await receive_exactly(inc, 1) == b"x"
        await a.aclose()  # the transport under `peer` goes away without any goodbye
        with pytest.raises(StreamReset):
            await inc.receive_some()
        with pytest.raises(ConnectionClosed):
            await conn.accept_stream()
        with pytest.raises(StreamReset):
            await inc.send_all(b"y")


async def test_keepalive_timeout_closes(autojump_clock: trio.testing.MockClock) -> None:
    """A yamux peer that stops answering is dropped after interval + timeout (virtual clock)."""
    a, b = memory_secure_pair()
    conn = Yamux(keepalive_interval=30.0, keepalive_timeout=10.0).new_connection(b)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        start = trio.current_time()
        with pytest.raises(ConnectionClosed):
            await conn.accept_stream()  # the silent peer never answers the pings
        assert trio.current_time() - start == pytest.approx(40.0)
        assert conn.close_reason == "keep-alive timeout"
    await a.aclose()


async def test_keepalive_answered_stays_open(autojump_clock: trio.testing.MockClock) -> None:
    async with muxer_pair_factory(Yamux(keepalive_interval=30.0), secure_pair=memory_secure_pair)() as (
        client,
        server,
    ):
        await trio.sleep(300)  # virtual time: ten keep-alive rounds, all answered
        assert not client.is_closed and not server.is_closed
        out = await client.open_stream()
        await out.send_all(b"alive")
        inc = await server.accept_stream()
        assert await receive_exactly(inc, 5) == b"alive"


async def _connected_pair_with_streams(name: str, streams: int) -> tuple[int, int]:
    """Traced bytes per idle connection (with its tasks) and per idle stream end."""
    make = MUXERS[name]
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    a, b = memory_secure_pair()
    conns = [make().new_connection(a), make().new_connection(b)]
    async with trio.open_nursery() as nursery:
        for conn in conns:
            nursery.start_soon(conn.run)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        kept = []
        for _ in range(streams):
            out = await conns[0].open_stream()
            await out.send_all(b"x")
            inc = await conns[1].accept_stream()
            assert await receive_exactly(inc, 1) == b"x"
            kept.append((out, inc))
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        per_stream = (tracemalloc.get_traced_memory()[0] - base) // (2 * streams)
        for conn in conns:
            await conn.aclose()
    return (base - before) // 2, per_stream


async def test_idle_memory_is_small(muxer_name: str) -> None:
    """An idle stream end costs under 4 KiB, an idle connection (and its tasks) under 64 KiB."""
    tracemalloc.start()
    try:
        await _connected_pair_with_streams(muxer_name, 5)  # warm up lazily created trio/library state
        per_conn, per_stream = await _connected_pair_with_streams(muxer_name, 100)
    finally:
        tracemalloc.stop()
    assert per_stream < 4096, per_stream
    assert per_conn < 64 * 1024, per_conn
