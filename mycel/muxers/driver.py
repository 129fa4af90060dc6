"""The one trio driver for the sans-IO muxer cores (yamux, mplex).

Tasks (all inside :meth:`MuxedConnection.run`): a reader that feeds large chunks from the secure
connection into the core and applies the events, a single writer that sends whatever the core has
queued in one write (frames from many streams are batched), and, for yamux, a keep-alive timer.
Waiting is done on trio parking lots that the events unpark; nothing polls.
"""

from __future__ import annotations

import logging
import operator
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import trio
from trio.lowlevel import (
    Abort,
    ParkingLot,
    Task,
    cancel_shielded_checkpoint,
    checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from mycel.core.abc import (
    ChunkSender,
    Connection,
    ConnectionStats,
    Direction,
    FrameQueue,
    FrameReceiver,
    FrameSizeAdjustable,
    MuxedStreamBase,
    RecordSized,
    RttReporter,
    SecureConnection,
)
from mycel.core.yielding import YieldBudget
from mycel.core.errors import (
    ConnectionClosed,
    MycelError,
    ProtocolViolation,
    ResourceLimitExceeded,
)
# the stream errors lived here before they moved to core.errors; still importable from here
from mycel.core.errors import StreamConnectionLost as StreamConnectionLost
from mycel.core.errors import StreamResetError as StreamResetError
from mycel.core.errors import StreamWriteClosed as StreamWriteClosed
from mycel.muxers.budget import MemoryBudget, PeerBudgets
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

from mycel.muxers.trim import MemoryTrimmer

logger = logging.getLogger("mycel.muxers")

RECEIVE_CHUNK = 1024 * 1024  # bytes asked of the secure connection per read
# A core parses at most its frames_per_call (1024) frames per receive_data call (then it is
# ``backlogged``), and the reader yields to the scheduler once FRAMES_PER_CHECKPOINT frames went by
# since it last did: whatever the frames are (pings, data for streams that are gone), one connection
# runs at most ~2 x 1024 frames before others run. Bulk data (64 KiB frames) never comes near that.
FRAMES_PER_CHECKPOINT = 1024
REFUSAL_LOG_INTERVAL = 10.0  # seconds between two warnings about refused inbound streams (per connection)
DEFAULT_READ = 256 * 1024  # what receive_some(None) returns at most
OUTPUT_HIGH_WATER = 1024 * 1024  # stream writers wait while more than this is queued for the wire
CONTROL_HIGH_WATER = 4 * 1024 * 1024  # the reader stops reading while more than this is queued
CLOSE_TIMEOUT = 5.0  # seconds allowed to flush the last frames (GoAway, RSTs) when closing
JOIN_BELOW = 16 * 1024  # receive_some joins buffered pieces only while the result is smaller than this
# Stream calls that complete without waiting skip trio's schedule point, so a handler's writes reach
# the writer task together (one socket write); every YIELD_EVERY-th such call still yields, so a task
# looping on a busy stream cannot starve the others.
YIELD_EVERY = 32


class _PingWaiter:
    __slots__ = ("event", "rtt")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.rtt: float | None = None


class MuxedStreamImpl(MuxedStreamBase["MuxedConnection"]):
    """One stream of a :class:`MuxedConnection` (a trio HalfCloseableStream plus ``reset``)."""

    __slots__ = ("_key", "_chunks", "_head", "_reader", "_sender")

    def __init__(self, conn: MuxedConnection, key: int, direction: Direction) -> None:
        super().__init__(conn, direction)
        self._key = key
        # received, unread data: bytes objects in order (None while empty: idle streams stay small);
        # bounded by the stream's receive window (yamux) or the muxer's buffer limit (mplex)
        self._chunks: deque[bytes] | None = None
        self._head = 0  # bytes of _chunks[0] already read
        # the task waiting to read / to send (one each at most: concurrent use is BusyResourceError);
        # two slots instead of two ParkingLots save ~1 KiB per stream
        self._reader: Task | None = None
        self._sender: Task | None = None

    @property
    def stream_id(self) -> int:
        return self._conn._core.wire_id(self._key)

    # ---- driver side --------------------------------------------------------------------

    def _on_data(self, data: bytes | memoryview) -> None:
        if not isinstance(data, memoryview):
            chunk = data
        elif type(data.obj) is bytes and len(data) == len(data.obj):  # a whole decrypted record: no copy
            chunk = data.obj
        else:
            chunk = data.tobytes()  # part of what the connection read: copy once
        if self._chunks is None:
            self._chunks = deque()
        self._chunks.append(chunk)
        if self._reader is not None:
            self._wake_reader()

    def _on_eof(self) -> None:
        self._eof = True
        if self._reader is not None:
            self._wake_reader()

    def _on_reset(self) -> None:
        self._reset = True
        self._chunks = None
        self._head = 0
        self._wake_all()

    def _wake_all(self) -> None:
        if self._reader is not None:
            self._wake_reader()
        if self._sender is not None:
            self._wake_sender()

    def _wake_reader(self) -> None:
        task, self._reader = self._reader, None
        if task is not None:
            reschedule(task)

    def _wake_sender(self) -> None:
        task, self._sender = self._sender, None
        if task is not None:
            reschedule(task)

    # Waiting: the task parks itself in the slot and is rescheduled by the wake functions. Bound
    # methods as abort callbacks keep a parked (idle) stream to one small object.
    def _abort_read(self, _: object) -> Abort:
        self._reader = None
        return Abort.SUCCEEDED

    def _abort_send(self, _: object) -> Abort:
        self._sender = None
        return Abort.SUCCEEDED

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
                if self._closed or self._reset:
                    self._raise_unreadable()
                if self._chunks:
                    data = self._take(max_bytes)
                    break
                if self._eof:
                    data = b""
                    break
                if self._conn._closed:
                    self._raise_unreadable()  # the connection is gone
                self._reader = current_task()
                await wait_task_rescheduled(self._abort_read)
                parked = True
            await self._conn._yields.spend(parked)
            return data
        finally:
            self._receiving = False

    def _take(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` buffered bytes. A whole buffered piece is handed out without a copy;
        small pieces are joined (up to JOIN_BELOW) so many tiny frames do not mean many tiny reads."""
        chunks = self._chunks
        assert chunks
        parts: list[bytes] = []
        total = 0
        while chunks and total < max_bytes:
            head = chunks[0]
            off = self._head
            want = max_bytes - total
            if len(head) - off <= want:
                piece = head if not off else head[off:]
                chunks.popleft()
                self._head = 0
            else:
                piece = head[off : off + want]
                self._head = off + want
            parts.append(piece)
            total += len(piece)
            if total >= JOIN_BELOW:
                break
        if not chunks:
            self._chunks = None  # idle streams keep no deque
        conn = self._conn
        if not conn._closed:
            conn._core.consume(self._key, total, trio.current_time())
            conn._wake_writer()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # ---- sending ------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._closed or self._write_closed or self._reset or self._conn._closed:
            self._raise_unwritable()

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
                    self._sender = current_task()
                    await wait_task_rescheduled(self._abort_send)  # the window update wakes us
                    parked = True
                    self._check_writable()
                    continue
                pos += core.send_data(key, view[pos : pos + min(room, window)])
                conn._wake_writer()
            await conn._yields.spend(parked)
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
                    self._sender = current_task()
                    await wait_task_rescheduled(self._abort_send)
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
            if self._check_eof_due():
                conn = self._conn
                self._write_closed = True
                conn._core.send_eof(self._key)
                conn._wake_writer()
                conn._forget_if_done(self)
            await self._conn._yields.spend(False)
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
            self._chunks = None
            self._head = 0
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

    # one per connection, idle or not: slots, not an instance dict (past 30 attributes, not even key-shared)
    __slots__ = (
        "_secure", "_core", "_close_timeout", "_on_closed", "_refusals_logged", "_refusal_log_at", "_streams",
        "_accept_queue", "_accept_lot", "_inbound_handler", "_open_lot", "_writer_lot", "_flush_lot", "_pings",
        "_closed", "_close_reason", "_started", "_running", "_run_done", "_writer_idle", "_writer_dead",
        "_yields", "_reader_scope", "_stats", "_rtt_core",
    )

    def __init__(
        self,
        secure: SecureConnection,
        core: MuxerCore,
        *,
        close_timeout: float = CLOSE_TIMEOUT,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self._secure = secure
        self._core = core
        self._close_timeout = close_timeout
        # called once when the connection is gone (after the core's memory reservation is released)
        self._on_closed = on_closed
        self._refusals_logged = 0  # inbound-stream refusals already reported
        self._refusal_log_at = -float("inf")
        self._streams: dict[int, MuxedStreamImpl] = {}
        # Inbound streams not yet accepted; bounded by the core's accept backlog (it resets the excess).
        self._accept_queue: OrderedDict[int, MuxedStreamImpl] = OrderedDict()
        self._accept_lot = ParkingLot()
        self._inbound_handler: Callable[[MuxedStreamImpl], None] | None = None
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
        self._yields = YieldBudget(YIELD_EVERY)
        self._reader_scope: trio.CancelScope | None = None
        self._stats = ConnectionStats()
        # Frames no larger than one record of the secure channel (Noise: 65519 bytes): each payload is
        # then sealed on its own and reaches the remote reader as one piece.
        if isinstance(secure, RecordSized) and isinstance(core, FrameSizeAdjustable):
            record = secure.record_size
            if 0 < record < core.max_frame:
                core.max_frame = record
        self._rtt_core: RttReporter | None = core if isinstance(core, RttReporter) else None

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
        if self._rtt_core is not None:
            rtt = self._rtt_core.rtt
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
        await self._yields.spend(parked)
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
        await self._yields.spend(parked)
        return stream

    def set_inbound_handler(self, handler: Callable[[MuxedStreamImpl], None] | None) -> None:
        """Hand each inbound stream to ``handler`` as it opens, instead of queueing it for
        :meth:`accept_stream` (the swarm spawns its handler task from there: no accept-task hop).

        ``handler`` runs in the reader task and must not block; if it raises, the stream is reset.
        Streams already queued are handed over at once.
        """
        self._inbound_handler = handler
        if handler is not None:
            while self._accept_queue:
                _, stream = self._accept_queue.popitem(last=False)
                self._hand_over(stream, handler)

    def _hand_over(self, stream: MuxedStreamImpl, handler: Callable[[MuxedStreamImpl], None]) -> None:
        self._core.stream_accepted(stream._key)
        self._stats.streams_accepted += 1
        try:
            handler(stream)
        except Exception as exc:  # e.g. the handler's nursery is closing: refuse the stream
            logger.info("inbound stream from %s not handled: %r", self._secure.remote_peer, exc)
            if not self._closed:
                self._core.reset_stream(stream._key)
                self._wake_writer()
            stream._on_reset()
            self._forget_if_done(stream)

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
            try:
                # a cancelled close still closes (trio's aclose contract); _run_done must be set
                # whatever happens here, or every aclose() waiting on it hangs
                await self._close_transport()
            finally:
                self._release()
                self._run_done.set()

    async def aclose(self) -> None:
        if not self._closed:
            self._terminate("closed locally")
        if self._running:
            await self._run_done.wait()
        else:
            try:
                await self._close_transport()
            finally:
                if not self._started or self._run_done.is_set():
                    self._release()

    def _release(self) -> None:
        """Give back the core's memory reservation, drop the stream table and tell the muxer (once).

        The table goes so that streams and the connection do not keep each other alive in a cycle
        (with each stream's unread data) until the garbage collector's next full pass: streams a
        handler still holds stay usable (closed) through their own reference to the connection.
        """
        self._core.release_memory()
        self._streams.clear()
        callback, self._on_closed = self._on_closed, None
        if callback is not None:
            try:
                callback()
            except Exception:  # a muxer's bookkeeping must not break closing
                logger.exception("connection-closed callback failed")

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
        # whole decrypted frames when the secure channel offers them (Noise): nothing is joined
        receive_frames = secure.receive_frames if isinstance(secure, FrameReceiver) else None
        pieces: Sequence[bytes | bytearray]
        checkpoint_at = core.frames_received + FRAMES_PER_CHECKPOINT
        while True:
            try:
                if receive_frames is not None:
                    pieces = await receive_frames(RECEIVE_CHUNK)
                else:
                    data = await secure.receive_some(RECEIVE_CHUNK)
                    pieces = [data] if data else []
            except (trio.BrokenResourceError, trio.ClosedResourceError, MycelError) as exc:
                if not self._closed:
                    logger.info("connection to %s failed: %r", secure.remote_peer, exc)
                return f"transport error: {exc!r}"
            if not pieces:
                return "remote closed the connection"
            now = trio.current_time()
            try:
                if len(pieces) == 1:
                    stats.bytes_received += len(pieces[0])
                    events = core.receive_data(pieces[0], now)
                    fed = 1
                else:
                    events = []
                    fed = 0
                    for piece in pieces:
                        stats.bytes_received += len(piece)
                        events += core.receive_data(piece, now)
                        fed += 1
                        if core.backlogged:
                            break
                while core.backlogged or core.frames_received >= checkpoint_at:
                    # many frames in this read (a flood of small ones): let the others run every
                    # FRAMES_PER_CALL frames, then go on where the core stopped
                    checkpoint_at = core.frames_received + FRAMES_PER_CHECKPOINT
                    if events:
                        self._dispatch(events)
                        events = []
                        if self._closed:
                            return self._close_reason
                    self._wake_writer()
                    await cancel_shielded_checkpoint()
                    now = trio.current_time()
                    if core.backlogged:
                        events = core.receive_data(b"", now)
                    while fed < len(pieces) and not core.backlogged:
                        stats.bytes_received += len(pieces[fed])
                        events += core.receive_data(pieces[fed], now)
                        fed += 1
            except ProtocolViolation as exc:
                logger.warning(
                    "%s violation from %s, closing the connection: %s", core.protocol_id, secure.remote_peer, exc
                )
                return f"protocol violation: {exc}"
            if core.refused and now - self._refusal_log_at >= REFUSAL_LOG_INTERVAL:
                self._log_refusals(now)
            if events:
                self._dispatch(events)
                if self._closed:
                    return self._close_reason
                # let the streams we fed run before reading more (the transport's reads do not
                # yield when data is already there; without this a busy reader would fill windows)
                await cancel_shielded_checkpoint()
            if core.pending_output:
                self._wake_writer()
                while core.pending_output > CONTROL_HIGH_WATER and not self._writer_dead:
                    await self._flush_lot.park()  # backpressure: stop reading until the writer catches up

    def _log_refusals(self, now: float) -> None:
        core = self._core
        total = sum(core.refused.values())
        if total > self._refusals_logged:
            logger.warning(
                "%s: refused %d inbound streams from %s so far (%s)",
                core.protocol_id,
                total,
                self._secure.remote_peer,
                ", ".join(f"{reason}: {n}" for reason, n in sorted(core.refused.items())),
            )
            self._refusals_logged = total
            self._refusal_log_at = now

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
                    stream._wake_sender()
            elif isinstance(ev, StreamOpened):
                stream = MuxedStreamImpl(self, ev.key, Direction.INBOUND)
                streams[ev.key] = stream
                if self._inbound_handler is not None:
                    self._hand_over(stream, self._inbound_handler)
                else:
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
        # only when there is something to send: a reader consuming data (no window update due) must
        # not cost the writer two scheduling rounds for nothing
        if self._writer_lot and self._core.pending_output:
            self._writer_lot.unpark_all()

    async def _wait_flushed(self) -> None:
        while (self._core.pending_output or not self._writer_idle) and not self._writer_dead:
            await self._flush_lot.park()

    async def _writer_loop(self) -> None:
        core = self._core
        secure = self._secure
        stats = self._stats
        # frames as they are, when both sides can (yamux frames, Noise encrypting them in place)
        take_frames: Callable[[], Sequence[bytes | bytearray | memoryview]] | None = None
        send_chunks: Callable[[Sequence[bytes | bytearray | memoryview]], Awaitable[None]] | None = None
        if isinstance(core, FrameQueue) and isinstance(secure, ChunkSender):
            take_frames, send_chunks = core.frames_to_send, secure.send_chunks
        try:
            while True:
                if not core.pending_output:
                    self._writer_idle = True
                    self._flush_lot.unpark_all()
                    await self._writer_lot.park()
                    # one more round: tasks woken along with us (handlers answering the same read)
                    # queue their frames first, and all of it goes out in one write
                    await cancel_shielded_checkpoint()
                    continue
                self._writer_idle = False
                size = core.pending_output
                if take_frames is not None and send_chunks is not None:
                    await send_chunks(take_frames())
                else:
                    await secure.send_all(core.data_to_send())
                stats.bytes_sent += size
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


def budgeted_connection(
    secure: SecureConnection,
    make_core: Callable[[MemoryBudget, MemoryBudget], MuxerCore],
    peer_budgets: PeerBudgets,
    connection_memory: int,
    trimmer: MemoryTrimmer | None,
    close_timeout: float,
) -> MuxedConnection:
    """A :class:`MuxedConnection` whose core reserves from a ``connection_memory`` budget inside the
    remote peer's budget, and counts its inbound streams in the peer's; when the connection is gone the peer entry is dropped and memory trimmed."""
    peer = secure.remote_peer
    peer_memory, peer_streams = peer_budgets.acquire(peer)
    core = make_core(MemoryBudget(connection_memory, peer_memory), peer_streams)
    on_closed = _PeerRelease(peer_budgets, peer, trimmer)
    return MuxedConnection(secure, core, close_timeout=close_timeout, on_closed=on_closed)


class _PeerRelease:
    """What a budgeted connection does once it is gone: drop its peer's budget entry, trim memory
    (an object, not a closure: it lives as long as the connection)."""

    __slots__ = ("_budgets", "_peer", "_trimmer")

    def __init__(self, budgets: PeerBudgets, peer: object, trimmer: MemoryTrimmer | None) -> None:
        self._budgets, self._peer, self._trimmer = budgets, peer, trimmer

    def __call__(self) -> None:
        self._budgets.drop(self._peer)
        if self._trimmer is not None:
            self._trimmer.connection_closed()
