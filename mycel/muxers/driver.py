"""The one trio driver for the sans-IO muxer cores (yamux, mplex).

Tasks (all inside :meth:`MuxedConnection.run`): a reader that feeds large chunks from the secure
connection into the core and applies the events, a single writer that sends whatever the core has
queued in one write (frames from many streams are batched), and, for yamux, a keep-alive timer.
Waiting is done on trio parking lots that the events unpark; nothing polls.
"""

from __future__ import annotations

import logging
import operator
from collections import OrderedDict
from typing import TYPE_CHECKING

import trio
from trio.lowlevel import ParkingLot, cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled

from mycel.core.abc import Connection, ConnectionStats, Direction, MuxedStream, SecureConnection
from mycel.core.errors import (
    ConnectionClosed,
    MycelError,
    ProtocolViolation,
    ResourceLimitExceeded,
    StreamClosed,
    StreamReset,
)
from mycel.muxers.events import (
    GoAwayReceived,
    KeepaliveTimeout,
    MuxerCore,
    MuxerEvent,
    PongReceived,
    SendWindowOpened,
    StreamAborted,
    StreamData,
    StreamEnded,
    StreamOpened,
)

if TYPE_CHECKING:
    from multiaddr import Multiaddr

    from mycel.core.keys import PublicKey
    from mycel.core.peer_id import PeerId

logger = logging.getLogger("mycel.muxers")

RECEIVE_CHUNK = 256 * 1024  # bytes asked of the secure connection per read
DEFAULT_READ = 256 * 1024  # what receive_some(None) returns at most
OUTPUT_HIGH_WATER = 1024 * 1024  # stream writers wait while more than this is queued for the wire
CONTROL_HIGH_WATER = 4 * 1024 * 1024  # the reader stops reading while more than this is queued
CLOSE_TIMEOUT = 5.0  # seconds allowed to flush the last frames (GoAway, RSTs) when closing


class StreamResetError(StreamReset, trio.BrokenResourceError):
    """The stream was reset (by either side); raised by every later read or write."""


class StreamWriteClosed(StreamClosed, trio.ClosedResourceError):
    """Writing after ``send_eof``."""


class StreamConnectionLost(StreamResetError, ConnectionClosed):
    """The connection under the stream closed before the stream finished."""


class _PingWaiter:
    __slots__ = ("event", "rtt")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.rtt: float | None = None


class MuxedStreamImpl(MuxedStream):
    """One stream of a :class:`MuxedConnection` (a trio HalfCloseableStream plus ``reset``)."""

    __slots__ = (
        "_conn",
        "_key",
        "_direction",
        "_buf",
        "_off",
        "_eof",
        "_reset",
        "_write_closed",
        "_closed",
        "_receiving",
        "_sending",
        "_read_lot",
        "_send_lot",
        "protocol",
    )

    def __init__(self, conn: MuxedConnection, key: int, direction: Direction) -> None:
        self._conn = conn
        self._key = key
        self._direction = direction
        self._buf = bytearray()  # received, unread bytes start at _off
        self._off = 0
        self._eof = False  # the remote half-closed
        self._reset = False
        self._write_closed = False  # we sent FIN
        self._closed = False  # aclose() was called
        self._receiving = False
        self._sending = False
        self._read_lot = ParkingLot()
        self._send_lot = ParkingLot()
        self.protocol: str | None = None

    # ---- MuxedStream properties ---------------------------------------------------------

    @property
    def stream_id(self) -> int:
        return self._conn._core.wire_id(self._key)

    @property
    def direction(self) -> Direction:
        return self._direction

    @property
    def connection(self) -> MuxedConnection:
        return self._conn

    def __repr__(self) -> str:
        return f"<MuxedStream {self.stream_id} {self._direction.value} of {self._conn!r}>"

    # ---- driver side --------------------------------------------------------------------

    def _on_data(self, data: bytes | memoryview) -> None:
        self._buf += data
        if self._read_lot:
            self._read_lot.unpark_all()

    def _on_eof(self) -> None:
        self._eof = True
        if self._read_lot:
            self._read_lot.unpark_all()

    def _on_reset(self) -> None:
        self._reset = True
        self._buf = bytearray()
        self._off = 0
        self._wake_all()

    def _wake_all(self) -> None:
        self._read_lot.unpark_all()
        self._send_lot.unpark_all()

    # ---- receiving ----------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = DEFAULT_READ
        else:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            await checkpoint_if_cancelled()
            parked = False
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("the stream was closed")
                if self._reset:
                    raise StreamResetError(f"stream {self.stream_id} was reset")
                if len(self._buf) > self._off:
                    data = self._take(max_bytes)
                    break
                if self._eof:
                    data = b""
                    break
                if self._conn._closed:
                    raise StreamConnectionLost(f"connection closed: {self._conn._close_reason}")
                await self._read_lot.park()
                parked = True
            if not parked:
                await cancel_shielded_checkpoint()
            return data
        finally:
            self._receiving = False

    def _take(self, max_bytes: int) -> bytes:
        buf = self._buf
        off = self._off
        end = min(len(buf), off + max_bytes)
        with memoryview(buf) as view:
            data = bytes(view[off:end])
        if end == len(buf):
            self._buf = bytearray()  # drop the capacity too: idle streams stay small
            self._off = 0
        elif end > 65536 and end * 2 > len(buf):
            del buf[:end]  # compact once the consumed prefix dominates (amortised O(1) per byte)
            self._off = 0
        else:
            self._off = end
        conn = self._conn
        if not conn._closed:
            conn._core.consume(self._key, end - off, trio.current_time())
            conn._wake_writer()
        return data

    # ---- sending ------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        if self._write_closed:
            raise StreamWriteClosed(f"stream {self.stream_id} was closed for writing")
        if self._reset:
            raise StreamResetError(f"stream {self.stream_id} was reset")
        if self._conn._closed:
            raise StreamConnectionLost(f"connection closed: {self._conn._close_reason}")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await checkpoint_if_cancelled()
            self._check_writable()
            view = memoryview(data)
            if view.itemsize != 1 or view.ndim != 1:
                view = view.cast("B")
            conn = self._conn
            core = conn._core
            key = self._key
            total = len(view)
            pos = 0
            parked = False
            while pos < total:
                room = OUTPUT_HIGH_WATER - core.pending_output
                if room <= 0:
                    await conn._flush_lot.park()  # backpressure: wait for the writer
                    parked = True
                    self._check_writable()
                    continue
                window = core.send_window(key)
                if window <= 0:
                    await self._send_lot.park()  # the window update unparks us
                    parked = True
                    self._check_writable()
                    continue
                pos += core.send_data(key, view[pos : pos + min(room, window)])
                conn._wake_writer()
            if not parked:
                await cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await checkpoint_if_cancelled()
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            conn = self._conn
            parked = False
            while not (self._write_closed or self._reset or self._closed or conn._closed):
                if conn._core.send_window(self._key) <= 0:
                    await self._send_lot.park()
                elif conn._core.pending_output >= OUTPUT_HIGH_WATER:
                    await conn._flush_lot.park()
                else:
                    break
                parked = True
            if not parked:
                await cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await checkpoint_if_cancelled()
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            if not self._write_closed:
                if self._reset:
                    raise StreamResetError(f"stream {self.stream_id} was reset")
                conn = self._conn
                if conn._closed:
                    raise StreamConnectionLost(f"connection closed: {conn._close_reason}")
                self._write_closed = True
                conn._core.send_eof(self._key)
                conn._wake_writer()
                conn._forget_if_done(self)
            await cancel_shielded_checkpoint()
        finally:
            self._sending = False

    # ---- closing ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Half-close our side and stop reading; the stream is freed once the remote finishes."""
        if not self._closed:
            self._closed = True
            conn = self._conn
            if not self._reset and not conn._closed:
                core = conn._core
                if not self._write_closed:
                    self._write_closed = True
                    core.send_eof(self._key)
                core.stop_receiving(self._key, trio.current_time())  # credits unread data too
                conn._wake_writer()
            self._buf = bytearray()
            self._off = 0
            self._wake_all()
            conn._forget_if_done(self)
        await checkpoint()

    async def reset(self) -> None:
        """Abandon the stream both ways (RST); pending and later I/O raise StreamReset."""
        if not self._reset:
            conn = self._conn
            if not conn._closed:
                conn._core.reset_stream(self._key)  # also after aclose(): aborts the remote's side
                conn._wake_writer()
            self._on_reset()
            conn._forget_if_done(self)
        await checkpoint()


class MuxedConnection(Connection):
    """A secured connection multiplexed by a sans-IO core; what Yamux/Mplex.new_connection return."""

    def __init__(self, secure: SecureConnection, core: MuxerCore, *, close_timeout: float = CLOSE_TIMEOUT) -> None:
        self._secure = secure
        self._core = core
        self._close_timeout = close_timeout
        self._streams: dict[int, MuxedStreamImpl] = {}
        # Inbound streams not yet accepted; bounded by the core's accept backlog (it resets the excess).
        self._accept_queue: OrderedDict[int, MuxedStreamImpl] = OrderedDict()
        self._accept_lot = ParkingLot()
        self._open_lot = ParkingLot()
        self._writer_lot = ParkingLot()
        self._flush_lot = ParkingLot()
        self._pings: dict[int, _PingWaiter] = {}
        self._closed = False
        self._close_reason = ""
        self._started = False
        self._running = False
        self._run_done = trio.Event()
        self._writer_idle = True
        self._writer_dead = False
        self._reader_scope: trio.CancelScope | None = None
        self._stats = ConnectionStats()

    def __repr__(self) -> str:
        return f"<MuxedConnection {self._core.protocol_id} to {self._secure.remote_peer}>"

    # ---- Connection properties ----------------------------------------------------------

    @property
    def local_peer(self) -> PeerId:
        return self._secure.local_peer

    @property
    def remote_peer(self) -> PeerId:
        return self._secure.remote_peer

    @property
    def remote_public_key(self) -> PublicKey:
        return self._secure.remote_public_key

    @property
    def local_addr(self) -> Multiaddr:
        return self._secure.local_addr

    @property
    def remote_addr(self) -> Multiaddr:
        return self._secure.remote_addr

    @property
    def direction(self) -> Direction:
        return self._secure.direction

    @property
    def security_protocol(self) -> str:
        return self._secure.security_protocol

    @property
    def muxer_protocol(self) -> str:
        return self._core.protocol_id

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def close_reason(self) -> str:
        """Why the connection closed ("" while open)."""
        return self._close_reason

    @property
    def stats(self) -> ConnectionStats:
        extra = self._stats.extra
        extra["streams"] = len(self._streams)
        rtt = getattr(self._core, "rtt", None)
        if rtt is not None:
            extra["rtt"] = rtt
        return self._stats

    # ---- streams ------------------------------------------------------------------------

    async def open_stream(self) -> MuxedStreamImpl:
        await checkpoint_if_cancelled()
        parked = False
        while True:
            if self._closed:
                raise ConnectionClosed(f"connection closed: {self._close_reason}")
            try:
                key = self._core.open_stream(trio.current_time())
                break
            except ResourceLimitExceeded:
                await self._open_lot.park()  # unparked when the remote acknowledges streams
                parked = True
        stream = MuxedStreamImpl(self, key, Direction.OUTBOUND)
        self._streams[key] = stream
        self._stats.streams_opened += 1
        self._wake_writer()
        if not parked:
            await cancel_shielded_checkpoint()
        return stream

    async def accept_stream(self) -> MuxedStreamImpl:
        await checkpoint_if_cancelled()
        parked = False
        while True:
            if self._closed:
                raise ConnectionClosed(f"connection closed: {self._close_reason}")
            if self._accept_queue:
                key, stream = self._accept_queue.popitem(last=False)
                self._core.stream_accepted(key)
                self._stats.streams_accepted += 1
                break
            await self._accept_lot.park()
            parked = True
        if not parked:
            await cancel_shielded_checkpoint()
        return stream

    async def ping(self) -> float:
        """Round-trip time in seconds, measured with a muxer ping (yamux only)."""
        if not self._core.supports_ping:
            raise NotImplementedError(f"{self._core.protocol_id} has no ping")
        if self._closed:
            raise ConnectionClosed(f"connection closed: {self._close_reason}")
        opaque = self._core.ping(trio.current_time())
        waiter = _PingWaiter()
        self._pings[opaque] = waiter
        self._wake_writer()
        try:
            await waiter.event.wait()
        finally:
            if self._pings.get(opaque) is waiter:
                del self._pings[opaque]
        if waiter.rtt is None:
            raise ConnectionClosed(f"connection closed: {self._close_reason}")
        return waiter.rtt

    def _forget_if_done(self, stream: MuxedStreamImpl) -> None:
        key = stream._key
        if not self._core.has_stream(key) and self._streams.get(key) is stream:
            del self._streams[key]

    # ---- running ------------------------------------------------------------------------

    async def run(self) -> None:
        if self._started:
            raise RuntimeError("run() was already called")
        self._started = True
        if self._closed:
            await self._close_transport()
            return
        self._running = True
        now = trio.current_time()
        self._stats.opened_at = now
        try:
            self._core.start(now)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer_loop)
                if self._core.timer() is not None:
                    nursery.start_soon(self._timer_loop)
                with trio.CancelScope() as self._reader_scope:
                    reason = await self._reader_loop()
                    self._mark_closed(reason)
                with trio.move_on_after(self._close_timeout):
                    await self._wait_flushed()  # best effort: GoAway, RSTs
                nursery.cancel_scope.cancel()
        finally:
            self._mark_closed("run() ended")
            self._running = False
            await self._close_transport()
            self._run_done.set()

    async def aclose(self) -> None:
        if not self._closed:
            self._terminate("closed locally")
        if self._running:
            await self._run_done.wait()
        else:
            await self._close_transport()

    async def _close_transport(self) -> None:
        try:
            await self._secure.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, MycelError, OSError) as exc:
            logger.debug("closing transport to %s: %r", self._secure.remote_peer, exc)

    def _terminate(self, reason: str) -> None:
        """Close from inside a callback or another task: mark closed and stop the reader."""
        self._mark_closed(reason)
        if self._reader_scope is not None:
            self._reader_scope.cancel()

    def _mark_closed(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        self._core.close()
        self._wake_writer()
        for stream in list(self._streams.values()):
            stream._wake_all()
        self._accept_queue.clear()
        self._accept_lot.unpark_all()
        self._open_lot.unpark_all()
        self._flush_lot.unpark_all()
        for waiter in self._pings.values():
            waiter.event.set()

    async def _reader_loop(self) -> str:
        secure = self._secure
        core = self._core
        stats = self._stats
        while True:
            try:
                data = await secure.receive_some(RECEIVE_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError, MycelError) as exc:
                if not self._closed:
                    logger.info("connection to %s failed: %r", secure.remote_peer, exc)
                return f"transport error: {exc!r}"
            if not data:
                return "remote closed the connection"
            stats.bytes_received += len(data)
            try:
                events = core.receive_data(data, trio.current_time())
            except ProtocolViolation as exc:
                logger.warning(
                    "%s violation from %s, closing the connection: %s", core.protocol_id, secure.remote_peer, exc
                )
                return f"protocol violation: {exc}"
            if events:
                self._dispatch(events)
                if self._closed:
                    return self._close_reason
            if core.pending_output:
                self._wake_writer()
                while core.pending_output > CONTROL_HIGH_WATER and not self._writer_dead:
                    await self._flush_lot.park()  # backpressure: stop reading until the writer catches up

    def _dispatch(self, events: list[MuxerEvent]) -> None:
        streams = self._streams
        core = self._core
        for ev in events:
            if isinstance(ev, StreamData):
                stream = streams.get(ev.key)
                if stream is not None:
                    stream._on_data(ev.data)
                else:
                    core.consume(ev.key, len(ev.data), trio.current_time())
            elif isinstance(ev, SendWindowOpened):
                stream = streams.get(ev.key)
                if stream is not None:
                    stream._send_lot.unpark_all()
            elif isinstance(ev, StreamOpened):
                stream = MuxedStreamImpl(self, ev.key, Direction.INBOUND)
                streams[ev.key] = stream
                self._accept_queue[ev.key] = stream
                self._accept_lot.unpark(count=1)
            elif isinstance(ev, StreamEnded):
                stream = streams.get(ev.key)
                if stream is not None:
                    stream._on_eof()
                    self._forget_if_done(stream)
            elif isinstance(ev, StreamAborted):
                stream = streams.pop(ev.key, None)
                self._accept_queue.pop(ev.key, None)
                if stream is not None:
                    stream._on_reset()
                if not ev.by_remote:
                    logger.info(
                        "%s: reset stream %d from %s: %s",
                        core.protocol_id,
                        core.wire_id(ev.key),
                        self._secure.remote_peer,
                        ev.reason,
                    )
            elif isinstance(ev, PongReceived):
                waiter = self._pings.pop(ev.opaque, None)
                if waiter is not None:
                    waiter.rtt = ev.rtt
                    waiter.event.set()
            elif isinstance(ev, GoAwayReceived):
                if ev.code != 0:
                    logger.warning("%s sent GoAway with error code %d", self._secure.remote_peer, ev.code)
                    self._terminate(f"remote sent GoAway (error code {ev.code})")
                else:
                    self._open_lot.unpark_all()  # openers now get ConnectionClosed
            elif isinstance(ev, KeepaliveTimeout):
                logger.info("keep-alive timeout on connection to %s", self._secure.remote_peer)
                self._terminate("keep-alive timeout")
        if self._open_lot:
            self._open_lot.unpark_all()

    # ---- writing ------------------------------------------------------------------------

    def _wake_writer(self) -> None:
        if self._writer_lot:
            self._writer_lot.unpark_all()

    async def _wait_flushed(self) -> None:
        while (self._core.pending_output or not self._writer_idle) and not self._writer_dead:
            await self._flush_lot.park()

    async def _writer_loop(self) -> None:
        core = self._core
        secure = self._secure
        stats = self._stats
        try:
            while True:
                if not core.pending_output:
                    self._writer_idle = True
                    self._flush_lot.unpark_all()
                    await self._writer_lot.park()
                    continue
                self._writer_idle = False
                out = core.data_to_send()
                await secure.send_all(out)
                stats.bytes_sent += len(out)
                if self._flush_lot:
                    self._flush_lot.unpark_all()
        except (trio.BrokenResourceError, trio.ClosedResourceError, MycelError) as exc:
            if not self._closed:
                logger.info("writing to %s failed: %r", secure.remote_peer, exc)
            self._writer_dead = True
            self._flush_lot.unpark_all()
            self._terminate(f"write failed: {exc!r}")

    async def _timer_loop(self) -> None:
        core = self._core
        while not self._closed:
            deadline = core.timer()
            if deadline is None:
                return
            await trio.sleep_until(deadline)
            events = core.handle_timer(trio.current_time())
            if events:
                self._dispatch(events)
            self._wake_writer()
