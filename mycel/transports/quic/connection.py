"""A QUIC connection as a mycel :class:`Connection`; native QUIC streams as :class:`MuxedStream`.

Everything here is synchronous except the waiting done by stream and connection methods: datagrams
are fed in by the :class:`~mycel.transports.quic.endpoint.UDPEndpoint` that owns the socket, events
are applied right away, and what the core wants to send is sent inline (non-blocking UDP sends) when
it is urgent or fills a datagram; small writes, ACKs and credit updates are deferred until the tasks
that are running have had their turn (:meth:`QUICConnection._flush_soon`), so that what they write
together shares datagrams. Waiting is done on trio parking lots that the events unpark; nothing polls.
Stream calls that need not wait yield to the scheduler once every ``YIELD_EVERY`` calls.

Stream semantics: ``send_eof`` = FIN; ``aclose`` = FIN + STOP_SENDING (later data from the peer is
dropped on arrival; the peer's later writes complete and are discarded); ``reset`` = RESET_STREAM +
STOP_SENDING. A RESET_STREAM from the peer fails both directions of the stream.
"""

from __future__ import annotations

import datetime
import enum
import logging
import operator
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

import trio
from aioquic.quic import events
from aioquic.quic.packet import QuicErrorCode, QuicFrameType
from multiaddr import Multiaddr
from trio.lowlevel import ParkingLot, cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled

from mycel.core.abc import Connection, ConnectionStats, Direction, MuxedStreamBase
from mycel.core.errors import ConnectionClosed, HandshakeError, InvalidCertificate, MycelError, PeerIdMismatch
from mycel.core.identity import Identity
from mycel.core.keys import PublicKey
from mycel.core.peer_id import PeerId
from mycel.core.yielding import YieldBudget
from mycel.network.resources import MemoryBudget, MemoryScope
from mycel.security.tls.certificate import VerificationCache
from mycel.security.tls.session import ALPN_LIBP2P
from mycel.transports.quic.core import QuicCore

if TYPE_CHECKING:
    from mycel.transports.quic.endpoint import NetworkAddress, UDPEndpoint

__all__ = ["QUICConnection", "QUICStream", "SECURITY_PROTOCOL", "MUXER_PROTOCOL"]

log = logging.getLogger("mycel.transports.quic")

SECURITY_PROTOCOL: Final = "/tls/1.0.0"  # libp2p TLS inside the QUIC handshake
MUXER_PROTOCOL: Final = "/quic-v1"  # QUIC's native streams
RESET_CODE: Final = 0  # application error code of our RESET_STREAM/STOP_SENDING (go-libp2p uses 0 too)
DEFAULT_READ: Final = 256 * 1024  # what receive_some(None) returns at most
# Per stream, writers wait while this much is written but unsent, or while the peer's flow-control
# credit is used up (nothing is buffered beyond it); they are woken once there is credit again and
# less than SEND_LOW_WATER is unsent.
SEND_BUFFER: Final = 4 * 1024 * 1024
SEND_LOW_WATER: Final = SEND_BUFFER // 2
YIELD_EVERY: Final = 32  # a stream call that need not wait yields to the scheduler once per this many
_CRYPTO_ALERT_BAD_CERTIFICATE: Final = QuicErrorCode.CRYPTO_ERROR + 42
_CRYPTO_ALERT_NO_APPLICATION_PROTOCOL: Final = QuicErrorCode.CRYPTO_ERROR + 120


class _State(enum.Enum):
    HANDSHAKING = "handshaking"
    OPEN = "open"
    CLOSED = "closed"


class QUICStream(MuxedStreamBase["QUICConnection"]):
    """One bidirectional QUIC stream (a trio HalfCloseableStream plus ``reset``)."""

    __slots__ = ("_id", "_buf", "_off", "_discarding", "_written", "_read_lot", "_send_lot")

    _kind = "QUICStream"

    def __init__(self, conn: QUICConnection, stream_id: int, direction: Direction) -> None:
        super().__init__(conn, direction)
        self._id = stream_id
        self._buf = bytearray()  # received, unread bytes start at _off; flow control caps it at the window
        self._off = 0
        self._discarding = False  # the peer sent STOP_SENDING: our writes are dropped
        self._written = 0  # bytes handed to the core
        self._read_lot = ParkingLot()
        self._send_lot = ParkingLot()

    @property
    def stream_id(self) -> int:
        return self._id

    # ---- events from the connection -----------------------------------------------------

    def _on_data(self, data: bytes, end: bool) -> None:
        if data:
            conn = self._conn
            if self._closed or self._reset:
                conn._discard(self._id, len(data))
            elif conn._memory is not None and not conn._memory.grow(len(data)):
                # the host's scopes have no room for more unread bytes: this stream is reset (as mplex
                # resets the stream over its budget), its buffer freed; the others go on
                log.warning(
                    "QUIC stream %d from %s reset: no memory left in its resource scopes for %d more unread bytes",
                    self._id, conn._remote_peer, len(data),
                )
                conn._discard(self._id, len(data))
                conn._reset_stream(self._id, stop=True)
                conn._flush_soon()
                self._on_reset()
                conn._forget_if_done(self)
                return
            else:
                self._buf += data
                conn._core.unread += len(data)
        if end:
            self._eof = True
        if self._read_lot:
            self._read_lot.unpark_all()
        if end:
            self._conn._forget_if_done(self)

    def _on_reset(self) -> None:
        self._reset = True
        self._drop_buffer()
        self._wake_all()

    def _on_stop_sending(self) -> None:
        self._discarding = True
        if self._send_lot:
            self._send_lot.unpark_all()
        self._conn._forget_if_done(self)

    def _drop_buffer(self) -> None:
        unread = len(self._buf) - self._off
        if unread:
            self._conn._core.consume(self._id, unread)
            if self._conn._memory is not None:
                self._conn._memory.shrink(unread)
        self._buf = bytearray()
        self._off = 0

    def _wake_all(self) -> None:
        self._read_lot.unpark_all()
        self._send_lot.unpark_all()

    @property
    def _done(self) -> bool:
        """Nothing more can happen on this stream that the connection must dispatch."""
        return self._reset or ((self._eof or self._closed) and (self._write_closed or self._discarding))

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
                if len(self._buf) > self._off:
                    data = self._take(max_bytes)
                    break
                if self._eof:
                    data = b""
                    break
                if self._conn._state is _State.CLOSED:
                    self._raise_unreadable()  # the connection is gone
                await self._read_lot.park()
                parked = True
            await self._conn._yields.spend(parked)
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
        if conn._memory is not None:
            conn._memory.shrink(end - off)
        if conn._core.consume(self._id, end - off) and conn._state is not _State.CLOSED:
            conn._flush_soon()  # the credit update, with whatever else goes out this round
        return data

    # ---- sending ------------------------------------------------------------------------

    def _unsent(self) -> int:
        return self._conn._core.send_room(self._id, self._written, SEND_BUFFER)[0]

    def _room(self) -> int:
        return self._conn._core.send_room(self._id, self._written, SEND_BUFFER)[1]

    def _writable_again(self) -> bool:
        unsent, room = self._conn._core.send_room(self._id, self._written, SEND_BUFFER)
        return room > 0 and unsent <= SEND_LOW_WATER

    def _check_writable(self) -> None:
        if self._closed or self._write_closed or self._reset or self._conn._state is _State.CLOSED:
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
            total = len(view)
            pos = 0
            parked = False
            core = conn._core
            while pos < total:
                if self._discarding:
                    break  # the peer does not want more data: drop it (like a closed reader)
                unsent, room = core.send_room(self._id, self._written, SEND_BUFFER)
                if room <= 0:
                    conn._blocked_writers.add(self)
                    await self._send_lot.park()  # unparked when the unsent amount drops or on errors
                    parked = True
                    self._check_writable()
                    continue
                chunk = view[pos : pos + room]
                if not conn._write(self._id, chunk):
                    self._discarding = True  # the core refused: the peer stopped the stream meanwhile
                    break
                self._written += len(chunk)
                pos += len(chunk)
                if unsent + len(chunk) >= core.max_datagram_size:
                    conn._flush(ack=True)  # a full datagram (or more): send what the window allows now
                else:
                    conn._flush_soon(ack=True)  # small: goes out with what else is written this round
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
            parked = False
            while not (self._write_closed or self._reset or self._discarding or self._conn._state is _State.CLOSED):
                if self._room() > 0:
                    break
                self._conn._blocked_writers.add(self)
                await self._send_lot.park()
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
                if not self._discarding and conn._write(self._id, b"", end=True):
                    conn._flush_soon(ack=True)
                conn._forget_if_done(self)
            await self._conn._yields.spend(False)
        finally:
            self._sending = False

    # ---- closing ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """FIN our side and stop reading (STOP_SENDING); the stream is freed once both ends are done."""
        if not self._closed:
            self._closed = True
            conn = self._conn
            if not self._reset and conn._state is not _State.CLOSED:
                if not self._write_closed:
                    self._write_closed = True
                    if not self._discarding:
                        conn._write(self._id, b"", end=True)
                if not self._eof:
                    conn._stop_receiving(self._id)
                self._drop_buffer()
                conn._flush_soon()
            else:
                self._drop_buffer()
            self._wake_all()
            conn._forget_if_done(self)
        await checkpoint()

    async def reset(self) -> None:
        """Abandon the stream both ways (RESET_STREAM + STOP_SENDING); later I/O raises StreamReset."""
        if not self._reset:
            conn = self._conn
            if conn._state is not _State.CLOSED:
                conn._reset_stream(self._id, stop=not self._eof)
                conn._flush_soon()
            self._on_reset()
            conn._forget_if_done(self)
        await checkpoint()


class QUICConnection(Connection):
    """A QUIC connection: libp2p TLS inside the handshake, native streams as libp2p streams."""

    def __init__(
        self,
        endpoint: UDPEndpoint,
        core: QuicCore,
        *,
        direction: Direction,
        identity: Identity,
        remote_addr: NetworkAddress,
        expected_peer: PeerId | None,
        wall_clock: Callable[[], datetime.datetime],
        accept_backlog: int,
        keepalive_interval: float | None,
        handshake_deadline: float,
        max_datagram_size: int,
        verifier: VerificationCache | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._core = core
        self._direction = direction
        self._identity = identity
        self._remote_sockaddr = remote_addr
        self._remote_multiaddr = endpoint.multiaddr_of(remote_addr)
        self._expected_peer = expected_peer
        self._wall_clock = wall_clock
        self._verifier = verifier if verifier is not None else VerificationCache(1)
        self._accept_backlog = accept_backlog
        self._keepalive_interval = keepalive_interval
        self._handshake_deadline: float | None = handshake_deadline
        self._max_datagram_size = max_datagram_size
        self._state = _State.HANDSHAKING
        # unread stream bytes charged to the host's resource scopes (charge_memory), in 256 KiB steps
        self._memory: MemoryBudget | None = None
        self._close_reason = ""
        self._error: MycelError | None = None  # why the handshake failed
        self._remote_peer: PeerId | None = None
        self._remote_public_key: PublicKey | None = None
        self._streams: dict[int, QUICStream] = {}
        # Inbound streams not yet accepted; at the bound new ones are reset.
        self._accept_queue: OrderedDict[int, QUICStream] = OrderedDict()
        self._inbound_handler: Callable[[QUICStream], None] | None = None  # see set_inbound_handler
        self._next_remote_stream = 1 if direction is Direction.OUTBOUND else 0  # lowest unseen peer stream id
        # Peer stream ids below _next_remote_stream not seen yet (at most MAX_STREAMS: the core refuses more).
        self._skipped_remote: set[int] = set()
        self._blocked_writers: set[QUICStream] = set()
        self._accept_lot = ParkingLot()
        self._open_lot = ParkingLot()
        self._established = trio.Event()  # handshake finished (successfully or not)
        self._done = trio.Event()  # closed
        self._started = False
        self._last_activity = 0.0
        self._ping_uid = 0
        self._timer_at: float | None = None  # what the endpoint's timer heap has for us
        self._ack_wanted = False  # a deferred flush (see _flush_soon) should send pending ACKs too
        self._yields = YieldBudget(YIELD_EVERY)
        self._stats = ConnectionStats()
        self._cids: set[bytes] = set()
        self.local_addr_override: Multiaddr | None = None  # the source address, if the socket's is 0.0.0.0/::

    def __repr__(self) -> str:
        peer = self._remote_peer or self._expected_peer or "?"
        return f"<QUICConnection {self._direction.value} {peer} {self.remote_addr}>"

    # ---- Connection properties ----------------------------------------------------------

    @property
    def local_peer(self) -> PeerId:
        return self._identity.peer_id

    @property
    def remote_peer(self) -> PeerId:
        if self._remote_peer is None:
            raise ConnectionClosed("the QUIC handshake has not authenticated the peer")
        return self._remote_peer

    @property
    def remote_public_key(self) -> PublicKey:
        if self._remote_public_key is None:
            raise ConnectionClosed("the QUIC handshake has not authenticated the peer")
        return self._remote_public_key

    @property
    def local_addr(self) -> Multiaddr:
        return self.local_addr_override or self._endpoint.local_multiaddr

    @property
    def remote_addr(self) -> Multiaddr:
        return self._remote_multiaddr

    @property
    def direction(self) -> Direction:
        return self._direction

    @property
    def security_protocol(self) -> str:
        return SECURITY_PROTOCOL

    @property
    def muxer_protocol(self) -> str:
        return MUXER_PROTOCOL

    @property
    def is_closed(self) -> bool:
        return self._state is _State.CLOSED

    @property
    def close_reason(self) -> str:
        """Why the connection closed ("" while open)."""
        return self._close_reason

    @property
    def stats(self) -> ConnectionStats:
        extra = self._stats.extra
        extra["streams"] = len(self._streams)
        rtt = self._core.smoothed_rtt
        if rtt is not None:
            extra["rtt"] = rtt
        return self._stats

    # ---- streams ------------------------------------------------------------------------

    async def open_stream(self) -> QUICStream:
        await checkpoint_if_cancelled()
        parked = False
        core = self._core
        while True:
            if self._state is not _State.OPEN:
                raise ConnectionClosed(f"connection closed: {self._close_reason or 'not established'}")
            stream_id = core.get_next_available_stream_id()
            if stream_id // 4 < core.remote_max_streams_bidi:
                break
            await self._open_lot.park()  # the peer's MAX_STREAMS unparks us
            parked = True
        core.send_stream_data(stream_id, b"")  # creates the stream; the peer sees it with the first byte
        core.track(stream_id)
        stream = QUICStream(self, stream_id, Direction.OUTBOUND)
        self._streams[stream_id] = stream
        self._stats.streams_opened += 1
        if not parked:
            await cancel_shielded_checkpoint()
        return stream

    async def accept_stream(self) -> QUICStream:
        await checkpoint_if_cancelled()
        parked = False
        while True:
            if self._accept_queue:
                _, stream = self._accept_queue.popitem(last=False)
                self._stats.streams_accepted += 1
                break
            if self._state is _State.CLOSED:
                raise ConnectionClosed(f"connection closed: {self._close_reason}")
            await self._accept_lot.park()
            parked = True
        if not parked:
            await cancel_shielded_checkpoint()
        return stream

    def _forget_if_done(self, stream: QUICStream) -> None:
        if stream._done and self._streams.get(stream._id) is stream:
            del self._streams[stream._id]
            self._core.forget(stream._id)
            self._blocked_writers.discard(stream)

    def _discard(self, stream_id: int, count: int) -> None:
        """Data arrived on a stream nobody reads: count it as consumed on arrival."""
        self._core.unread += count
        self._core.consume(stream_id, count)  # any credit update goes out with the flush after the events

    def _write(self, stream_id: int, data: bytes | memoryview, end: bool = False) -> bool:
        """Hand data (and/or FIN) to the core, which copies it; False if the stream cannot send any more."""
        try:
            self._core.send_stream_data(stream_id, cast(bytes, data), end_stream=end)
        except (RuntimeError, ValueError) as exc:  # reset or finished meanwhile
            log.debug("stream %d of %r cannot send: %s", stream_id, self, exc)
            return False
        return True

    def _stop_receiving(self, stream_id: int) -> None:
        try:
            self._core.stop_stream(stream_id, RESET_CODE)
        except ValueError:  # the core already discarded the stream
            pass

    def charge_memory(self, scope: MemoryScope) -> None:
        """Charge the bytes this connection's streams hold unread to ``scope`` (the host calls it with the
        connection's scope once the peer is known). Flow control bounds them per connection
        (``connection_window``); the scope bounds them per peer and host-wide: a stream whose data finds
        no room there is reset. The reservation ends with the scope (the connection's end)."""
        self._memory = MemoryBudget(scope, 256 * 1024)
        if self._core.unread:  # bytes that arrived before (kept even if refused: later data is held to the limit)
            self._memory.grow(self._core.unread)

    def _reset_stream(self, stream_id: int, stop: bool) -> None:
        try:
            self._core.reset_stream(stream_id, RESET_CODE)
        except ValueError:
            pass
        if stop:
            self._stop_receiving(stream_id)

    # ---- running ------------------------------------------------------------------------

    async def run(self) -> None:
        """Help drive the UDP endpoint until the connection closes."""
        if self._started:
            raise RuntimeError("run() was already called")
        self._started = True
        self._stats.opened_at = trio.current_time()
        try:
            if self._state is not _State.CLOSED:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._endpoint.drive)
                    await self._done.wait()
                    nursery.cancel_scope.cancel()
        finally:
            if self._state is not _State.CLOSED:
                self.close_now("run() ended")

    async def aclose(self) -> None:
        self.close_now("closed locally")
        await checkpoint()

    def close_now(self, reason: str, error_code: int = QuicErrorCode.NO_ERROR) -> None:
        """Send CONNECTION_CLOSE (if the core still can) and mark everything closed. Idempotent."""
        if self._state is _State.CLOSED:
            return
        if error_code == QuicErrorCode.NO_ERROR:  # an application close, after what was written
            if self._state is _State.OPEN:
                self._flush()
            self._core.close(error_code=QuicErrorCode.NO_ERROR, reason_phrase="")
        else:  # a transport close: TLS alerts are sent as CRYPTO_ERROR + alert
            frame = QuicFrameType.CRYPTO if error_code >= QuicErrorCode.CRYPTO_ERROR else QuicFrameType.PADDING
            self._core.close(error_code=error_code, frame_type=frame, reason_phrase=reason[:200])
        self._flush()
        self._mark_closed(reason)

    def fail_internally(self, exc: Exception) -> None:
        """Close after an unexpected error while handling this connection's packets or timers."""
        if self._error is None and self._state is _State.HANDSHAKING:
            self._error = HandshakeError(f"QUIC handshake failed: {exc!r}")
        try:
            self.close_now(f"internal error: {exc!r}", QuicErrorCode.INTERNAL_ERROR)
        except Exception:  # the core is broken: stop without a goodbye
            self._mark_closed(f"internal error: {exc!r}")

    def discard(self) -> None:
        """Drop a connection that never got a valid packet, sending nothing."""
        self._error = HandshakeError("no valid packet received")
        self._mark_closed("discarded")

    def _mark_closed(self, reason: str) -> None:
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        self._close_reason = reason
        for stream in list(self._streams.values()):
            stream._wake_all()
        self._streams.clear()
        self._blocked_writers.clear()
        self._accept_queue.clear()
        self._accept_lot.unpark_all()
        self._open_lot.unpark_all()
        self._established.set()
        self._done.set()
        self._endpoint.unregister(self)
        self._core.dispose()

    # ---- driven by the endpoint (synchronous) ---------------------------------------------

    def receive_datagram(self, data: bytes, addr: NetworkAddress, now: float) -> None:
        """Feed one datagram the endpoint received for this connection (called by the endpoint)."""
        self._core.receive_datagram(data, addr, now)
        self._stats.bytes_received += len(data)
        self._last_activity = now

    def process(self, now: float) -> None:
        """After a batch of datagrams (or a timer): apply the core's events, then send what it has
        queued (with the ACKs the batch calls for) and re-arm the timer."""
        if self._state is _State.CLOSED:
            return
        ack = self._core.end_of_batch(now)
        self._apply_events(now)
        self._flush(now)
        if ack and self._core.ack_pending and not self.is_closed:
            self._flush_soon(ack=True)  # with the answers of the tasks this batch woke, if any

    def timer(self) -> float | None:
        """When :meth:`handle_timer` must run next (None: never)."""
        if self._state is _State.CLOSED:
            return None
        at: float | None = self._core.get_timer()
        if self._state is _State.HANDSHAKING and self._handshake_deadline is not None:
            at = self._handshake_deadline if at is None else min(at, self._handshake_deadline)
        elif self._keepalive_interval is not None and self._state is _State.OPEN:
            due = self._last_activity + self._keepalive_interval
            at = due if at is None else min(at, due)
        return at

    def handle_timer(self, now: float) -> None:
        """Run the connection's timers that are due at ``now`` (loss recovery, idle, handshake timeout)."""
        if self._state is _State.CLOSED:
            return
        if self._state is _State.HANDSHAKING and self._handshake_deadline is not None and now >= self._handshake_deadline:
            self._fail(HandshakeError("QUIC handshake timed out"), QuicErrorCode.NO_ERROR)
            return
        if (
            self._state is _State.OPEN
            and self._keepalive_interval is not None
            and now >= self._last_activity + self._keepalive_interval
        ):
            self._ping_uid += 1
            self._core.send_ping(self._ping_uid)
            self._last_activity = now
        self._core.handle_timer(now)
        self.process(now)


    def _flush_soon(self, ack: bool = False) -> None:
        """Send what the core has queued once the tasks that are running now have had their turn
        (what they write together goes out in one datagram); ``ack``: let pending ACKs ride along."""
        if ack:
            self._ack_wanted = True
        self._endpoint.flush_soon(self)

    def flush_deferred(self, now: float) -> None:
        """The endpoint's deferred flush (see :meth:`_flush_soon`)."""
        if self._state is not _State.CLOSED:
            self._flush(now)

    def _flush(self, now: float | None = None, *, ack: bool = False) -> None:
        """Send what the core has queued; ``ack`` (or a deferred flush that asked for it): we are
        sending data, let a pending ACK ride along."""
        if now is None:
            now = trio.current_time()
        if ack or self._ack_wanted:
            self._ack_wanted = False
            self._core.ack_now(now)
        datagrams = self._core.datagrams_to_send(now)
        if datagrams:
            self._last_activity = now
            self._stats.bytes_sent += self._endpoint.send(datagrams)
        if self._blocked_writers:
            for stream in list(self._blocked_writers):
                if stream._writable_again() or stream._done or self._state is _State.CLOSED:
                    self._blocked_writers.discard(stream)
                    stream._send_lot.unpark_all()
        self._endpoint.schedule(self, self.timer())

    def _apply_events(self, now: float) -> None:
        core = self._core
        streams = self._streams
        while True:
            ev = core.next_event()
            if ev is None:
                break
            if isinstance(ev, events.StreamDataReceived):
                stream = streams.get(ev.stream_id)
                if stream is None:
                    stream = self._new_remote_stream(ev.stream_id)
                if stream is not None:
                    stream._on_data(ev.data, ev.end_stream)
                elif ev.data:
                    self._discard(ev.stream_id, len(ev.data))
            elif isinstance(ev, events.StreamReset):
                stream = streams.pop(ev.stream_id, None)
                if stream is None:
                    self._new_remote_stream(ev.stream_id, announce=False)
                else:
                    self._accept_queue.pop(ev.stream_id, None)
                    core.forget(ev.stream_id)
                    self._blocked_writers.discard(stream)
                    if not stream._reset:
                        self._reset_stream(ev.stream_id, stop=False)  # RESET fails both directions
                        stream._on_reset()
            elif isinstance(ev, events.StopSendingReceived):
                stream = streams.get(ev.stream_id)
                if stream is not None:
                    stream._on_stop_sending()
            elif isinstance(ev, events.HandshakeCompleted):
                self._on_handshake_completed(ev)
            elif isinstance(ev, events.ConnectionIdIssued):
                self._endpoint.add_cid(ev.connection_id, self)
            elif isinstance(ev, events.ConnectionIdRetired):
                self._cids.discard(ev.connection_id)
                self._endpoint.remove_cid(ev.connection_id, self)
            elif isinstance(ev, events.ConnectionTerminated):
                self._on_terminated(ev)
            if self._state is _State.CLOSED:
                while core.next_event() is not None:  # nothing after a close matters
                    pass
                return
        if self._open_lot:
            self._open_lot.unpark_all()  # MAX_STREAMS may have risen

    def _new_remote_stream(self, stream_id: int, announce: bool = True) -> QUICStream | None:
        """Register a stream the peer opened (first event for it); None if it is old or refused."""
        if (stream_id & 1) == (1 if self._direction is Direction.INBOUND else 0):
            return None  # one of ours, already forgotten
        if stream_id >= self._next_remote_stream:
            self._skipped_remote.update(range(self._next_remote_stream, stream_id, 4))
            self._next_remote_stream = stream_id + 4
        elif stream_id in self._skipped_remote:
            self._skipped_remote.discard(stream_id)
        else:
            return None  # seen before and already forgotten
        if not announce or self._state is not _State.OPEN:
            return None
        if len(self._accept_queue) >= self._accept_backlog:
            log.warning(
                "accept backlog of %d streams full on connection to %s; resetting stream %d",
                self._accept_backlog,
                self._remote_peer,
                stream_id,
            )
            self._reset_stream(stream_id, stop=True)
            return None
        stream = QUICStream(self, stream_id, Direction.INBOUND)
        self._streams[stream_id] = stream
        self._core.track(stream_id)
        if self._inbound_handler is not None:
            self._hand_over(stream, self._inbound_handler)
        else:
            self._accept_queue[stream_id] = stream
            self._accept_lot.unpark(count=1)
        return stream

    def set_inbound_handler(self, handler: Callable[[QUICStream], None] | None) -> None:
        """Hand each inbound stream to ``handler`` as it opens instead of queueing it for
        :meth:`accept_stream` (no accept-task hop). ``handler`` runs while datagrams are processed and
        must not block; if it raises, the stream is reset. Queued streams are handed over at once."""
        self._inbound_handler = handler
        if handler is not None and self._accept_queue:
            while self._accept_queue:
                _, stream = self._accept_queue.popitem(last=False)
                self._hand_over(stream, handler)
            if self._state is not _State.CLOSED:
                self._flush()  # any reset it caused

    def _hand_over(self, stream: QUICStream, handler: Callable[[QUICStream], None]) -> None:
        self._stats.streams_accepted += 1
        try:
            handler(stream)
        except Exception as exc:  # e.g. the handler's nursery is closing: refuse the stream
            log.info("inbound stream from %s not handled: %r", self._remote_peer, exc)
            if not stream._reset and self._state is not _State.CLOSED:
                self._reset_stream(stream._id, stop=True)
                stream._on_reset()
                self._forget_if_done(stream)

    def _on_handshake_completed(self, ev: events.HandshakeCompleted) -> None:
        if ev.alpn_protocol != ALPN_LIBP2P:
            error = HandshakeError(f"peer negotiated ALPN {ev.alpn_protocol!r}, not 'libp2p'")
            self._fail(error, _CRYPTO_ALERT_NO_APPLICATION_PROTOCOL)
            return
        chain = self._core.peer_certificates()
        try:
            if not chain:
                raise InvalidCertificate("peer sent no certificate")
            verified = self._verifier.verify(chain, self._wall_clock(), self._expected_peer, parsed=self._core.peer_leaf)
        except (InvalidCertificate, PeerIdMismatch) as exc:
            self._fail(exc, _CRYPTO_ALERT_BAD_CERTIFICATE)
            return
        self._remote_peer = verified.peer_id
        self._remote_public_key = verified.public_key
        self._core.raise_max_datagram_size(self._max_datagram_size)
        self._state = _State.OPEN
        self._handshake_deadline = None
        self._established.set()
        self._endpoint.handshake_done(self)
        log.debug("QUIC connection %s %s established", self._direction.value, self._remote_peer)

    def _fail(self, exc: MycelError, error_code: int) -> None:
        self._error = exc
        log.info(
            "QUIC handshake %s %s failed: %s",
            "to" if self._direction is Direction.OUTBOUND else "from",
            self.remote_addr,
            exc,
        )
        self.close_now(str(exc), error_code)

    def _on_terminated(self, ev: events.ConnectionTerminated) -> None:
        if self._state is _State.HANDSHAKING and self._error is None:
            self._error = HandshakeError(
                f"QUIC handshake failed: {ev.reason_phrase or 'connection closed'} (error 0x{ev.error_code:x})"
            )
        reason = ev.reason_phrase or f"error 0x{ev.error_code:x}"
        if ev.error_code not in (QuicErrorCode.NO_ERROR,) and self._state is _State.OPEN:
            log.info("QUIC connection to %s closed: %s", self._remote_peer, reason)
        self._mark_closed(f"connection terminated: {reason}")

    async def wait_established(self) -> None:
        """Wait for the handshake; raises the handshake's error if it failed."""
        await self._established.wait()
        if self._state is not _State.OPEN:
            if self._error is not None:
                raise self._error
            raise HandshakeError(f"QUIC handshake failed: {self._close_reason}")
