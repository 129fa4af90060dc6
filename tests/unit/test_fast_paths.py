"""The performance paths of the stack: Noise chunk encryption and whole-frame reads, yamux frame chunks
and the lazy RTT probe, the muxer driver's waiting, yielding and inbound hand-over, and the TCP
connection's own reads, read-ahead and corking."""

from __future__ import annotations

import os
import socket

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.core.abc import Direction
from mycel.core.errors import DecodeError, DecryptionError
from mycel.host import PARSED_ADDRS, Host, HostConfig
from mycel.muxers.driver import YIELD_EVERY, MuxedConnection
from mycel.muxers.yamux import Yamux
from mycel.muxers.yamux.core import (
    FLAG_ACK,
    FLAG_SYN,
    HEADER_SIZE,
    TYPE_DATA,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    YamuxCore,
    decode_header,
    encode_frame,
)
from mycel.security.noise.connection import NoiseConnection
from mycel.security.noise.transport import FRAME_OVERHEAD, MAX_PLAINTEXT, SMALL_CHUNK, NoiseTransport
from mycel.testing.conformance import muxer_pair_factory, receive_exactly
from mycel.transports.tcp import CORK_LIMIT, READ_AHEAD, SocketConnection
from mycel.transports.tcp import YIELD_EVERY as TCP_YIELD_EVERY

# ---- Noise: chunks in, frames out ---------------------------------------------------------------


def transport_pair() -> tuple[NoiseTransport, NoiseTransport]:
    k1, k2 = os.urandom(32), os.urandom(32)
    return NoiseTransport(k1, k2), NoiseTransport(k2, k1)


def seal(t: NoiseTransport, chunks: list[bytes]) -> bytes:
    out = bytearray(t.sealed_bound(sum(map(len, chunks)), len(chunks)))
    n = t.encrypt_chunks(chunks, out)
    return bytes(out[:n])


def frame_sizes(wire: bytes) -> list[int]:
    sizes, pos = [], 0
    while pos < len(wire):
        n = int.from_bytes(wire[pos : pos + 2], "big")
        sizes.append(n - 16)
        pos += 2 + n
    assert pos == len(wire)
    return sizes


def test_big_chunks_are_sealed_alone_and_small_ones_share_frames() -> None:
    a, b = transport_pair()
    header, payload = b"h" * 12, os.urandom(MAX_PLAINTEXT)
    wire = seal(a, [header, payload, b"x" * 20, b"y" * 30, os.urandom(SMALL_CHUNK)])
    # the header alone, the payload as one full frame, the two small chunks together, the 4 KiB one alone
    assert frame_sizes(wire) == [12, MAX_PLAINTEXT, 50, SMALL_CHUNK]
    b.feed(wire)
    frames = b.read_frames()
    assert [len(f) for f in frames] == [12, MAX_PLAINTEXT, 50, SMALL_CHUNK]
    assert frames[1] == payload


def test_read_frames_hands_out_whole_frames_up_to_max_bytes() -> None:
    a, b = transport_pair()
    chunks = [os.urandom(MAX_PLAINTEXT) for _ in range(3)]
    b.feed(seal(a, chunks))
    first = b.read_frames(2 * MAX_PLAINTEXT)
    assert first == chunks[:2]  # whole frames, never joined
    assert b.buffered == MAX_PLAINTEXT + FRAME_OVERHEAD  # the third is left encrypted
    assert b.read_frames(1) == chunks[2:]  # at least one frame, even when it exceeds max_bytes
    assert b.read_frames() == []


def test_read_never_joins_past_max_bytes() -> None:
    a, b = transport_pair()
    b.feed(seal(a, [os.urandom(40_000) for _ in range(3)]))
    assert len(b.read(100_000) or b"") == 80_000  # two frames fit, the third waits
    assert len(b.read(100_000) or b"") == 40_000


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=9000), max_size=12),
    st.lists(st.integers(min_value=1, max_value=20_000), max_size=20),
    st.integers(min_value=1, max_value=200_000),
)
def test_fuzz_chunks_round_trip_however_fed(chunks: list[bytes], cuts: list[int], max_bytes: int) -> None:
    a, b = transport_pair()
    wire = seal(a, chunks)
    assert len(wire) <= a.sealed_bound(sum(map(len, chunks)), len(chunks))
    got, pos = bytearray(), 0
    for cut in [*cuts, len(wire)]:
        b.feed(wire[pos : pos + cut])
        pos += cut
        while frames := b.read_frames(max_bytes):
            assert all(0 < len(f) <= MAX_PLAINTEXT for f in frames)
            got += b"".join(frames)
        if pos >= len(wire):
            break
    assert bytes(got) == b"".join(chunks)
    b.feed_eof()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=5000))
def test_fuzz_garbage_gives_typed_errors(data: bytes, max_bytes: int) -> None:
    _, b = transport_pair()
    b.feed(data)
    try:
        while b.read_frames(max_bytes):
            pass
        b.feed_eof()
    except (DecryptionError, DecodeError):
        pass


class _Pipe:
    """A one-direction raw connection over trio memory streams (only what NoiseConnection uses)."""

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        self.stream = stream
        self.writes: list[int] = []
        self.local_addr = self.remote_addr = None
        self.direction = Direction.OUTBOUND

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(len(data))
        await self.stream.send_all(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


def noise_connections() -> tuple[NoiseConnection, NoiseConnection, _Pipe]:
    left, right = trio.testing.memory_stream_pair()
    k1, k2 = os.urandom(32), os.urandom(32)
    me = object()
    pipe = _Pipe(left)
    a = NoiseConnection(pipe, NoiseTransport(k1, k2), local_peer=me, remote_peer=me, remote_public_key=me)  # type: ignore[arg-type]
    b = NoiseConnection(_Pipe(right), NoiseTransport(k2, k1), local_peer=me, remote_peer=me, remote_public_key=me)  # type: ignore[arg-type]
    return a, b, pipe


async def test_send_chunks_reuses_buffers_without_mixing_data_up() -> None:
    a, b, pipe = noise_connections()
    payloads = [os.urandom(300_000 + i) for i in range(6)]  # pooled buffers, used one after another
    async with trio.open_nursery() as nursery:

        async def send() -> None:
            for p in payloads:
                await a.send_chunks([p[:12], p[12:70_000], p[70_000:]])

        nursery.start_soon(send)
        got = bytearray()
        while len(got) < sum(map(len, payloads)):
            for f in await b.receive_frames():
                got += f
    assert bytes(got) == b"".join(payloads)
    assert len(pipe.writes) == len(payloads)  # one raw write per call
    assert b._transport.buffered == 0


async def test_receive_frames_returns_empty_at_eof() -> None:
    a, b, _ = noise_connections()
    await a.send_all(b"last words")
    await a._raw.stream.send_eof()  # type: ignore[attr-defined]
    assert await b.receive_frames() == [b"last words"]
    assert await b.receive_frames() == []
    assert a.record_size == MAX_PLAINTEXT


# ---- yamux core: frame chunks and the RTT probe ------------------------------------------------


def test_data_frames_are_header_and_payload_chunks() -> None:
    core = YamuxCore(True, max_frame=1000)
    key = core.open_stream(0.0)
    core.frames_to_send()
    assert core.send_data(key, memoryview(b"a" * 2500)) == 2500
    assert core.pending_output == 2500 + 3 * HEADER_SIZE
    chunks = core.frames_to_send()
    assert [len(c) for c in chunks] == [12, 1000, 12, 1000, 12, 500]
    assert decode_header(chunks[0]).type == TYPE_DATA and decode_header(chunks[4]).length == 500
    assert core.pending_output == 0 and core.frames_to_send() == []
    core.send_data(key, memoryview(b"bb"))
    assert bytes(core.data_to_send()) == encode_frame(TYPE_DATA, 0, key, 2, b"bb")


def test_rtt_probe_rides_with_the_first_frame() -> None:
    core = YamuxCore(True)
    core.start(10.0)
    assert core.pending_output == 0  # no write of its own
    key = core.open_stream(10.5)
    frames = [decode_header(c) for c in core.frames_to_send()]
    assert [(f.type, f.flags) for f in frames] == [(TYPE_PING, FLAG_SYN), (TYPE_WINDOW_UPDATE, FLAG_SYN)]
    assert frames[1].stream_id == key
    core.receive_data(encode_frame(TYPE_PING, FLAG_ACK, 0, frames[0].length), 10.75)
    assert core.rtt == pytest.approx(0.25)
    core.send_data(key, memoryview(b"x"))
    assert all(decode_header(c).type != TYPE_PING for c in core.frames_to_send()[::2])  # only once


def test_rtt_probe_is_any_ping() -> None:
    core = YamuxCore(False)
    core.start(0.0)
    core.ping(1.0)
    core.receive_data(encode_frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0), 1.0)
    core.send_data(1, memoryview(b"x"))
    types = [decode_header(c).type for c in core.frames_to_send() if len(c) == HEADER_SIZE]
    assert types.count(TYPE_PING) == 1


# ---- the muxer driver ---------------------------------------------------------------------------


async def test_received_pieces_reach_the_reader_without_a_copy() -> None:
    async with muxer_pair_factory(Yamux())() as (client, server):
        assert isinstance(server, MuxedConnection)
        out = await client.open_stream()
        await out.send_all(b"!")
        inc = await server.accept_stream()
        assert await receive_exactly(inc, 1) == b"!"
        piece = os.urandom(5000)
        inc._on_data(memoryview(piece))  # type: ignore[attr-defined]  # a whole record, as Noise hands it over
        assert await inc.receive_some(10_000) is piece
        inc._on_data(memoryview(piece)[1:])  # type: ignore[attr-defined]  # part of a record: copied
        got = await inc.receive_some(10_000)
        assert got == piece[1:] and got is not piece


async def test_small_pieces_are_joined_and_large_reads_split() -> None:
    async with muxer_pair_factory(Yamux())() as (client, server):
        out = await client.open_stream()
        await out.send_all(b"!")
        inc = await server.accept_stream()
        assert await receive_exactly(inc, 1) == b"!"
        for i in range(10):
            inc._on_data(bytes([i]) * 10)  # type: ignore[attr-defined]
        assert await inc.receive_some(25) == b"\x00" * 10 + b"\x01" * 10 + b"\x02" * 5
        assert await inc.receive_some() == b"\x02" * 5 + b"".join(bytes([i]) * 10 for i in range(3, 10))


async def test_inbound_streams_go_straight_to_the_handler() -> None:
    async with muxer_pair_factory(Yamux())() as (client, server):
        assert isinstance(server, MuxedConnection)
        handed: list[object] = []
        server.set_inbound_handler(handed.append)
        out = await client.open_stream()
        await out.send_all(b"hi")
        await trio.testing.wait_all_tasks_blocked()
        assert len(handed) == 1
        assert await receive_exactly(handed[0], 2) == b"hi"  # type: ignore[arg-type]

        def refuse(_: object) -> None:
            raise RuntimeError("nursery closed")

        server.set_inbound_handler(refuse)
        refused = await client.open_stream()
        await refused.send_all(b"x")
        with pytest.raises(trio.BrokenResourceError):  # StreamReset: the remote reset it
            await refused.receive_some()


async def test_stream_calls_that_do_not_wait_still_yield_now_and_then() -> None:
    async with muxer_pair_factory(Yamux())() as (client, _server):
        out = await client.open_stream()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
            before = ticks
            assert before > 0
            for _ in range(YIELD_EVERY * 4):
                await out.send_all(b"z")  # never waits: the window is far from used up
            assert ticks - before >= 3
            nursery.cancel_scope.cancel()


# ---- TCP: own reads and writes, read-ahead, cork ------------------------------------------------


def socket_pair() -> tuple[SocketConnection, SocketConnection]:
    a, b = trio.socket.socketpair()
    return (
        SocketConnection(trio.SocketStream(a), Direction.OUTBOUND, "memory"),
        SocketConnection(trio.SocketStream(b), Direction.INBOUND, "memory"),
    )


async def test_socket_connection_stream_semantics() -> None:
    a, b = socket_pair()
    with pytest.raises(ValueError):
        await a.receive_some(0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await b.receive_some()
        await a.send_all(b"x")
    await a.send_all(memoryview(b"half"))
    await a.send_eof()  # half-close: b reads to EOF, and can still answer
    assert await receive_exactly(b, 4) == b"half"
    assert await b.receive_some() == b""
    await b.send_all(b"answer")
    assert await receive_exactly(a, 6) == b"answer"
    await b.send_all(b"pending")
    with trio.CancelScope() as scope:  # a cancellation point even when data is waiting
        scope.cancel()
        await a.receive_some()
    assert scope.cancelled_caught
    assert await receive_exactly(a, 7) == b"pending"
    await a.aclose()
    await a.aclose()  # idempotent
    with pytest.raises(trio.ClosedResourceError):
        await a.receive_some()
    await b.aclose()


async def test_socket_calls_that_do_not_wait_still_yield_now_and_then() -> None:
    a, b = socket_pair()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.lowlevel.checkpoint()
        before = ticks
        for _ in range(TCP_YIELD_EVERY * 3):
            await a.send_all(b"w")  # the socket buffer never fills: no call waits
        assert ticks - before >= 2
        nursery.cancel_scope.cancel()
    await a.aclose()
    await b.aclose()


async def test_small_reads_are_served_from_one_read_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = socket_pair()
    reads: list[int] = []
    real_read = os.read

    def counting_read(fd: int, n: int) -> bytes:
        reads.append(n)
        return real_read(fd, n)

    monkeypatch.setattr("mycel.transports.tcp.os.read", counting_read)
    await a.send_all(b"\x13/multistream/1.0.0\n" + b"x" * 100)
    assert await b.receive_some(1) == b"\x13"
    assert await b.receive_some(19) == b"/multistream/1.0.0\n"
    assert await b.receive_some(60) == b"x" * 60
    assert await b.receive_some(READ_AHEAD * 2) == b"x" * 40
    assert reads == [READ_AHEAD]
    await a.aclose()
    assert await b.receive_some(5) == b""
    await b.aclose()


async def test_cork_holds_writes_until_a_read_would_wait() -> None:
    a, b = socket_pair()
    a.cork()
    await a.send_all(b"header ")
    await a.send_all(b"answer")
    with trio.move_on_after(0.05) as scope:  # nothing has left yet
        await b.receive_some()
    assert scope.cancelled_caught
    async with trio.open_nursery() as nursery:
        got: list[bytes] = []

        async def read_a() -> None:
            got.append(bytes(await a.receive_some()))  # waits, so the held writes go out first

        nursery.start_soon(read_a)
        assert await b.receive_some() == b"header answer"
        await b.send_all(b"reply")
    assert got == [b"reply"]
    await a.send_all(b"y" * CORK_LIMIT)  # a full cork is sent at once
    assert len(await receive_exactly(b, CORK_LIMIT)) == CORK_LIMIT
    await a.send_all(b"tail")
    await a.uncork()
    assert await b.receive_some() == b"tail"
    await a.aclose()
    await b.aclose()


async def test_socket_errors_are_trio_errors() -> None:
    a, b = socket_pair()
    await a.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await a.send_all(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await a.receive_some()
    b._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # type: ignore[attr-defined]
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(100):
            await b.send_all(b"z" * 65536)
    await b.aclose()


# ---- host -----------------------------------------------------------------------------------------


async def test_connect_remembers_parsed_addresses_within_a_bound() -> None:
    async with trio.open_nursery() as nursery:
        host = Host(HostConfig(), nursery)
        peer = host.peer_id
        first = host._parse_addr(f"/ip4/10.0.0.1/tcp/1/p2p/{peer}")
        assert first[1] == peer and str(first[0]) == "/ip4/10.0.0.1/tcp/1"
        assert host._parse_addr(f"/ip4/10.0.0.1/tcp/1/p2p/{peer}") is first
        for port in range(PARSED_ADDRS + 10):
            host._parse_addr(f"/ip4/10.0.0.1/tcp/{port}")
        assert len(host._parsed) <= PARSED_ADDRS
        nursery.cancel_scope.cancel()


async def test_socket_connection_through_trio_where_sockets_are_not_fds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mycel.transports.tcp._FD_IO", False)
    a, b = socket_pair()
    a.cork()
    await a.send_all(b"held ")
    await a.send_all(b"back")
    async with trio.open_nursery() as nursery:
        got: list[bytes] = []

        async def read_a() -> None:
            got.append(bytes(await a.receive_some()))  # flushes the cork before it waits

        nursery.start_soon(read_a)
        assert await receive_exactly(b, 9) == b"held back"
        await b.send_all(b"ok")
    assert got == [b"ok"]
    await a.aclose()
    await b.aclose()
