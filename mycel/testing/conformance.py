"""Checks every :class:`~mycel.core.abc.Connection` implementation must pass (yamux, mplex, QUIC...).

Each check is an ``async`` function taking ``make_pair``: a factory returning an async context
manager that yields a connected ``(client_conn, server_conn)`` pair whose ``run()`` is already
running (see :func:`muxer_pair_factory`). Checks raise AssertionError on failure and guard against
hangs with a generous ``trio.fail_after``; none of them sleeps to wait for something.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Literal

import trio
import trio.testing

from mycel.core.abc import Connection, Direction, MuxedStream, SecureConnection, StreamMuxer
from mycel.core.errors import ConnectionClosed, StreamClosed, StreamReset, UnexpectedEOF
from mycel.core.framing import read_exactly
from mycel.testing.fake_secure import socketpair_secure_pair

ConnectionPair = tuple[Connection, Connection]
PairFactory = Callable[[], AbstractAsyncContextManager[ConnectionPair]]
SecurePairMaker = Callable[[], tuple[SecureConnection, SecureConnection]]

CHECK_TIMEOUT = 30.0  # a check that takes longer than this is hung


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-looking test data."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d" % (seed, counter)).digest() * 64  # 2 KiB per hash
        counter += 1
    return bytes(out[:size])


async def receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    """Read exactly ``n`` bytes; AssertionError if the stream ends first."""
    try:
        return await read_exactly(stream, n)
    except UnexpectedEOF as exc:
        raise AssertionError(str(exc)) from None


async def receive_until_eof(stream: trio.abc.ReceiveStream, limit: int = 1 << 30) -> bytes:
    """Read until EOF (at most ``limit`` bytes)."""
    buf = bytearray()
    while True:
        chunk = await stream.receive_some()
        if not chunk:
            return bytes(buf)
        buf += chunk
        _expect(len(buf) <= limit, f"more than {limit} bytes before EOF")


def muxer_pair_factory(
    client_muxer: StreamMuxer,
    server_muxer: StreamMuxer | None = None,
    *,
    secure_pair: SecurePairMaker = socketpair_secure_pair,
) -> PairFactory:
    """A ``make_pair`` for a StreamMuxer over ``secure_pair()`` (default: a real socketpair)."""

    @contextlib.asynccontextmanager
    async def make_pair() -> AsyncIterator[ConnectionPair]:
        a, b = secure_pair()
        client = client_muxer.new_connection(a)
        server = (server_muxer or client_muxer).new_connection(b)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            nursery.start_soon(server.run)
            try:
                yield client, server
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    await client.aclose()
                    await server.aclose()
                nursery.cancel_scope.cancel()

    return make_pair


async def _open_pair(client: Connection, server: Connection) -> tuple[MuxedStream, MuxedStream]:
    """Open a stream from ``client``, write one byte so every muxer announces it, accept it."""
    out = await client.open_stream()
    await out.send_all(b"\x00")
    inc = await server.accept_stream()
    _expect(await receive_exactly(inc, 1) == b"\x00", "first byte garbled")
    return out, inc


# ---- checks ------------------------------------------------------------------------------


async def check_open_accept(make_pair: PairFactory) -> None:
    """Streams open both ways; directions, back-references and peers are right."""
    with trio.fail_after(CHECK_TIMEOUT):
        async with make_pair() as (client, server):
            _expect(client.remote_peer == server.local_peer, "client.remote_peer != server.local_peer")
            _expect(server.remote_peer == client.local_peer, "server.remote_peer != client.local_peer")
            _expect(client.direction is Direction.OUTBOUND, "client connection not OUTBOUND")
            _expect(server.direction is Direction.INBOUND, "server connection not INBOUND")
            _expect(client.muxer_protocol == server.muxer_protocol, "muxer protocols differ")
            for opener, acceptor in ((client, server), (server, client)):
                out = await opener.open_stream()
                await out.send_all(b"hello")
                inc = await acceptor.accept_stream()
                _expect(await receive_exactly(inc, 5) == b"hello", "payload garbled")
                _expect(out.direction is Direction.OUTBOUND, "opened stream not OUTBOUND")
                _expect(inc.direction is Direction.INBOUND, "accepted stream not INBOUND")
                _expect(out.connection is opener and inc.connection is acceptor, "wrong stream.connection")
                _expect(out.stream_id == inc.stream_id, "stream ids differ between the two ends")
                await out.aclose()
                await inc.aclose()
            _expect(client.stats.streams_opened == 1 and client.stats.streams_accepted == 1, "client stats")
            _expect(server.stats.streams_opened == 1 and server.stats.streams_accepted == 1, "server stats")
            _expect(client.stats.bytes_sent > 0 and server.stats.bytes_received > 0, "byte counters")


async def check_data_both_ways(make_pair: PairFactory) -> None:
    """Request/response in both directions on one stream, many rounds."""
    with trio.fail_after(CHECK_TIMEOUT):
        async with make_pair() as (client, server):
            out, inc = await _open_pair(client, server)
            for i in range(50):
                msg = pattern(1 + i * 97, seed=i)
                await out.send_all(msg)
                _expect(await receive_exactly(inc, len(msg)) == msg, f"round {i}: request garbled")
                await inc.send_all(msg[::-1])
                _expect(await receive_exactly(out, len(msg)) == msg[::-1], f"round {i}: response garbled")
            await out.send_all(bytearray(b"ba"))
            await out.send_all(memoryview(b"mv"))
            await out.send_all(b"")
            _expect(await receive_exactly(inc, 4) == b"bamv", "bytearray/memoryview payloads")


async def check_large_transfer(make_pair: PairFactory, size: int = 3 * 1024 * 1024 + 12345) -> None:
    """``size`` bytes each way at once on one stream (more than any initial window)."""
    up = pattern(size, seed=1)
    down = pattern(size, seed=2)
    with trio.fail_after(CHECK_TIMEOUT):
        async with make_pair() as (client, server):
            out, inc = await _open_pair(client, server)
            got: dict[str, bytes] = {}

            async def send(stream: MuxedStream, data: bytes) -> None:
                await stream.send_all(data)
                await stream.send_eof()

            async def receive(stream: MuxedStream, name: str) -> None:
                got[name] = await receive_until_eof(stream, limit=2 * size)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send, out, up)
                nursery.start_soon(send, inc, down)
                nursery.start_soon(receive, inc, "up")
                nursery.start_soon(receive, out, "down")
            _expect(got["up"] == up, f"upload garbled ({len(got['up'])} of {size} bytes)")
            _expect(got["down"] == down, f"download garbled ({len(got['down'])} of {size} bytes)")


async def check_concurrent_streams(make_pair: PairFactory, count: int = 64, size: int = 100_000) -> None:
    """``count`` streams echo ``size`` bytes each, all at the same time."""
    with trio.fail_after(CHECK_TIMEOUT):
        async with make_pair() as (client, server):

            async def echo(stream: MuxedStream) -> None:
                data = await receive_until_eof(stream, limit=size)
                await stream.send_all(data)
                await stream.send_eof()

            async def serve(nursery: trio.Nursery) -> None:
                for _ in range(count):
                    nursery.start_soon(echo, await server.accept_stream())

            results: dict[int, bool] = {}

            async def one(i: int) -> None:
                msg = pattern(size, seed=100 + i)
                stream = await client.open_stream()
                await stream.send_all(msg)
                await stream.send_eof()
                results[i] = await receive_until_eof(stream, limit=size) == msg

            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve, nursery)
                for i in range(count):
                    nursery.start_soon(one, i)
            _expect(len(results) == count and all(results.values()), "some echoes were garbled")


async def check_half_close(make_pair: PairFactory) -> None:
    """After send_eof the other side reads every byte, then b""; the reverse direction still works."""
    with trio.fail_after(CHECK_TIMEOUT):
        async with make_pair() as (client, server):
            out, inc = await _open_pair(client, server)
            await out.send_all(b"last words")
            await out.send_eof()
            _expect(await receive_exactly(inc, 10) == b"last words", "data before EOF garbled")
            _expect(await inc.receive_some() == b"", "no EOF after the last byte")
            _expect(await inc.receive_some() == b"", "EOF is not sticky")
            with _raises(trio.ClosedResourceError):
                await out.send_all(b"more")
            await out.send_eof()  # repeating is fine
            reply = pattern(300_000, seed=3)  # more than one window after the half-close
            async with trio.open_nursery() as nursery:
                nursery.start_soon(inc.send_all, reply)
                got = await receive_exactly(out, len(reply))
            _expect(got == reply, "reply after half-close garbled")
            await inc.send_eof()
            _expect(await out.receive_some() == b"", "no EOF for the reverse direction")
            await out.aclose()
            await inc.aclose()


async def check_reset(make_pair: PairFactory) -> None:
    """A reset is seen as StreamReset on the other side, by blocked readers and by writers."""
    with trio.fail_after(CHECK_TIMEOUT):
        async with make_pair() as (client, server):
            # the remote resets while we are blocked reading
            out, inc = await _open_pair(client, server)
            async with trio.open_nursery() as nursery:

                async def blocked_reader() -> None:
                    with _raises(StreamReset):
                        await inc.receive_some()

                nursery.start_soon(blocked_reader)
                await trio.testing.wait_all_tasks_blocked()
                await out.reset()
            with _raises(StreamReset):
                while True:  # the remote's writes fail too, at the latest once the RST arrived
                    await inc.send_all(b"x" * 1000)
            with _raises(StreamReset):
                await out.send_all(b"x")
            with _raises(StreamReset):
                await out.receive_some()
            await out.reset()  # idempotent
            await out.aclose()

            # data that was in flight when the stream was reset is not delivered after the reset
            out, inc = await _open_pair(server, client)
            await out.send_all(b"doomed")
            await out.reset()
            with _raises(StreamReset):
                while True:
                    await inc.receive_some()

            # other streams are unaffected
            out, inc = await _open_pair(client, server)
            await out.send_all(b"fine")
            _expect(await receive_exactly(inc, 4) == b"fine", "a reset leaked onto another stream")


async def check_close_wakes_blocked(make_pair: PairFactory) -> None:
    """Closing a connection wakes blocked readers, writers, acceptors on both ends; no new streams."""
    with trio.fail_after(CHECK_TIMEOUT):
        async with make_pair() as (client, server):
            a_out, a_in = await _open_pair(client, server)
            b_out, b_in = await _open_pair(client, server)
            woken: list[str] = []

            async def expect_failure(name: str, fn: Callable[[], Awaitable[object]]) -> None:
                with _raises(StreamReset, ConnectionClosed, trio.ClosedResourceError, trio.BrokenResourceError):
                    while True:  # a writer may need a few rounds before it blocks
                        await fn()
                woken.append(name)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(expect_failure, "client reader", a_out.receive_some)
                nursery.start_soon(expect_failure, "server reader", a_in.receive_some)
                nursery.start_soon(expect_failure, "client writer", lambda: b_out.send_all(b"w" * 65536))
                nursery.start_soon(expect_failure, "client acceptor", client.accept_stream)
                nursery.start_soon(expect_failure, "server acceptor", server.accept_stream)
                await trio.testing.wait_all_tasks_blocked()
                await client.aclose()
            _expect(len(woken) == 5, f"not all blocked tasks woke: {woken}")
            _expect(client.is_closed, "client.is_closed is False after aclose()")
            with _raises(ConnectionClosed):
                await client.open_stream()
            with _raises(ConnectionClosed):
                await server.accept_stream()  # returns only once the server noticed the close
            _expect(server.is_closed, "server did not notice the remote close")
            await client.aclose()  # idempotent


async def check_accept_backlog(make_pair: PairFactory, backlog: int, extra: int = 4) -> None:
    """With ``backlog`` streams waiting to be accepted, further inbound streams are reset."""
    with trio.fail_after(CHECK_TIMEOUT):
        async with make_pair() as (client, server):
            streams = []
            for i in range(backlog + extra):
                stream = await client.open_stream()
                try:
                    await stream.send_all(b"%d." % i)
                except StreamReset:
                    _expect(i >= backlog, f"stream {i} (within the backlog) was reset")
                streams.append(stream)
            for stream in streams[backlog:]:
                with _raises(StreamReset):
                    while True:
                        await stream.receive_some()
            for i in range(backlog):
                inc = await server.accept_stream()
                expected = b"%d." % i
                _expect(await receive_exactly(inc, len(expected)) == expected, f"backlog entry {i} wrong")
            async with trio.open_nursery() as nursery:
                accepted: list[MuxedStream] = []

                async def accept_one() -> None:
                    accepted.append(await server.accept_stream())

                nursery.start_soon(accept_one)
                await trio.testing.wait_all_tasks_blocked()
                _expect(not accepted, "a refused stream was accepted")
                nursery.cancel_scope.cancel()
            # after draining the backlog new streams are accepted again
            out, inc = await _open_pair(client, server)
            await out.aclose()


async def check_slow_reader(
    make_pair: PairFactory, expect: Literal["block", "reset"], amount: int = 8 * 1024 * 1024
) -> None:
    """A stream nobody reads does not stall other streams.

    ``expect="block"``: its writer blocks (flow control) until the reader catches up.
    ``expect="reset"``: the receiver resets it once its buffer bound is passed.
    """
    with trio.fail_after(CHECK_TIMEOUT):
        async with make_pair() as (client, server):
            slow_out, slow_in = await _open_pair(client, server)
            fast_out, fast_in = await _open_pair(client, server)
            chunk = pattern(256 * 1024, seed=4)
            sent = 0
            finished = trio.Event()

            async def flood() -> None:
                nonlocal sent
                if expect == "reset":
                    with _raises(StreamReset):
                        while True:
                            await slow_out.send_all(chunk)
                            sent += len(chunk)
                else:
                    while sent < amount:
                        await slow_out.send_all(chunk)
                        sent += len(chunk)
                finished.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                for i in range(20):  # the other stream keeps flowing meanwhile
                    msg = pattern(20_000, seed=i)
                    await fast_out.send_all(msg)
                    _expect(await receive_exactly(fast_in, len(msg)) == msg, "other stream garbled")
                    await fast_in.send_all(msg[:10])
                    _expect(await receive_exactly(fast_out, 10) == msg[:10], "other stream reply garbled")
                if expect == "block":
                    await trio.testing.wait_all_tasks_blocked()
                    _expect(not finished.is_set(), f"the writer was not held back ({sent} bytes sent)")
                    got = await receive_exactly(slow_in, amount)
                    _expect(len(got) == amount, "slow stream lost data")
                else:
                    await finished.wait()
                    with _raises(StreamReset):
                        while True:
                            await slow_in.receive_some()
            _expect(finished.is_set(), "flood did not finish")


async def check_aclose_discards(make_pair: PairFactory, size: int = 2 * 1024 * 1024) -> None:
    """After ``aclose()`` the remote sees EOF, and its later writes complete instead of stalling."""
    with trio.fail_after(CHECK_TIMEOUT):
        async with make_pair() as (client, server):
            out, inc = await _open_pair(client, server)
            await out.aclose()
            _expect(await inc.receive_some() == b"", "aclose() did not half-close")
            await inc.send_all(pattern(size))  # must not block on a reader that is gone
            await inc.send_eof()
            with _raises(trio.ClosedResourceError):
                await out.receive_some()
            with _raises(trio.ClosedResourceError):
                await out.send_all(b"x")
            await out.aclose()
            # the connection is still fine
            out, inc = await _open_pair(client, server)
            await inc.send_all(b"ok")
            _expect(await receive_exactly(out, 2) == b"ok", "connection broken after aclose()")


async def check_stream_rules(make_pair: PairFactory, clogs: bool) -> None:
    """trio's stream rules: argument checks, BusyResourceError, ClosedResourceError after aclose.

    ``clogs``: a writer blocks when the peer does not read (flow control), so concurrent
    ``send_all`` calls can be checked.
    """
    with trio.fail_after(CHECK_TIMEOUT):
        async with make_pair() as (client, server):
            out, inc = await _open_pair(client, server)
            for bad in (0, -1):
                with _raises(ValueError):
                    await inc.receive_some(bad)
            with _raises(trio.BusyResourceError):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(inc.receive_some, 1)
                    nursery.start_soon(inc.receive_some, 1)
            # a blocked reader is woken by aclose() with ClosedResourceError
            async with trio.open_nursery() as nursery:

                async def reader() -> None:
                    with _raises(trio.ClosedResourceError):
                        await inc.receive_some(10)

                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                await inc.aclose()
            await inc.aclose()
            with _raises(trio.ClosedResourceError):
                await inc.send_all(b"")
            with _raises(trio.ClosedResourceError):
                await inc.wait_send_all_might_not_block()
            # a cancelled aclose still closes
            out2, inc2 = await _open_pair(client, server)
            with trio.CancelScope() as scope:
                scope.cancel()
                await out2.aclose()
            with _raises(trio.ClosedResourceError):
                await out2.send_all(b"x")
            _expect(await inc2.receive_some() == b"", "cancelled aclose() did not half-close")
            if clogs:
                out3, inc3 = await _open_pair(client, server)
                with _raises(trio.BusyResourceError):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(out3.send_all, b"x" * (32 * 1024 * 1024))
                        await trio.testing.wait_all_tasks_blocked()
                        nursery.start_soon(out3.send_all, b"y")
                await out3.reset()
                out4, inc4 = await _open_pair(client, server)
                async with trio.open_nursery() as nursery:  # fill the send window, then give up
                    nursery.start_soon(out4.send_all, b"z" * (32 * 1024 * 1024))
                    await trio.testing.wait_all_tasks_blocked()
                    nursery.cancel_scope.cancel()
                returned = trio.Event()
                async with trio.open_nursery() as nursery:

                    async def wait_then_report() -> None:
                        await out4.wait_send_all_might_not_block()
                        returned.set()

                    async def drain() -> None:
                        while True:
                            await inc4.receive_some()

                    nursery.start_soon(wait_then_report)
                    await trio.testing.wait_all_tasks_blocked()
                    _expect(not returned.is_set(), "wait_send_all_might_not_block did not block on a full window")
                    nursery.start_soon(drain)  # reading reopens the window and wakes the waiter
                    await returned.wait()
                    nursery.cancel_scope.cancel()
                await out4.reset()


async def check_error_order(make_pair: PairFactory) -> None:
    """Why a stream cannot be used is said in one order: closed by us (a plain
    ``trio.ClosedResourceError``), then, for writes, half-closed by us (StreamClosed), then reset
    (StreamReset), then the connection gone (StreamReset or ConnectionClosed). A repeated ``send_eof``
    does nothing, whatever happened after the first."""
    with trio.fail_after(CHECK_TIMEOUT):
        async with make_pair() as (client, server):
            half, _ = await _open_pair(client, server)
            await half.send_eof()
            await half.send_eof()
            await half.reset()
            with _raises(StreamClosed):
                await half.send_all(b"x")
            await half.send_eof()
            with _raises(StreamReset):
                await half.receive_some()

            reset, _ = await _open_pair(client, server)
            await reset.reset()
            for call in (lambda: reset.send_all(b"x"), reset.send_eof, reset.receive_some):
                with _raises(StreamReset):
                    await call()

            closed, _ = await _open_pair(client, server)
            await closed.reset()
            await closed.aclose()
            for call in (lambda: closed.send_all(b"x"), closed.send_eof, closed.receive_some):
                try:
                    await call()
                except trio.ClosedResourceError as exc:
                    _expect(not isinstance(exc, (StreamClosed, StreamReset)), f"after aclose(): {exc!r}")
                else:
                    raise AssertionError("no ClosedResourceError after aclose()")

            lost, _ = await _open_pair(client, server)
            ended, _ = await _open_pair(client, server)
            await ended.send_eof()
            await client.aclose()
            for call in (lambda: lost.send_all(b"x"), lost.send_eof, lost.receive_some):
                with _raises(StreamReset, ConnectionClosed):
                    await call()
            await ended.send_eof()
            with _raises(StreamClosed):
                await ended.send_all(b"x")


ALL_CHECKS = (
    check_open_accept,
    check_data_both_ways,
    check_large_transfer,
    check_concurrent_streams,
    check_half_close,
    check_reset,
    check_close_wakes_blocked,
    check_aclose_discards,
    check_error_order,
)
"""Checks that need no parameters beyond ``make_pair``."""


class _raises:
    """``with _raises(E1, E2):`` — the block must raise one of the given exceptions."""

    def __init__(self, *expected: type[BaseException]) -> None:
        self.expected = expected

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc_type is None:
            raise AssertionError(f"expected {', '.join(e.__name__ for e in self.expected)}")
        if isinstance(exc, BaseExceptionGroup):
            # nursery-wrapped: accept a group made only of expected exceptions
            matched, rest = exc.split(self.expected)
            return matched is not None and rest is None
        return issubclass(exc_type, self.expected)
