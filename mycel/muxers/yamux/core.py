"""Sans-IO yamux (``/yamux/1.0.0``): bytes and ``now`` in, events and bytes out.

Frame: 12-byte big-endian header ``version u8 | type u8 | flags u16 | stream_id u32 | length u32``.
No trio, no clock, no randomness: the driver passes ``now`` (seconds) into every call that needs it.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass

from mycel.core.errors import ConnectionClosed, MuxerError, ResourceLimitExceeded, StreamClosed
from mycel.muxers.budget import GuardedSession, MemoryBudget, MemoryReserver, RateLimit, SessionGuard, check_rate
from mycel.muxers.events import (
    GoAwayReceived,
    KeepaliveTimeout,
    MuxerEvent,
    PongReceived,
    SendWindowOpened,
    StreamAborted,
    StreamData,
    StreamEnded,
    StreamOpened,
)

PROTOCOL_ID = "/yamux/1.0.0"

HEADER = struct.Struct(">BBHII")
HEADER_SIZE = 12
VERSION = 0

TYPE_DATA = 0
TYPE_WINDOW_UPDATE = 1
TYPE_PING = 2
TYPE_GO_AWAY = 3

FLAG_SYN = 0x1
FLAG_ACK = 0x2
FLAG_FIN = 0x4
FLAG_RST = 0x8
_STREAM_FLAGS = FLAG_SYN | FLAG_ACK | FLAG_FIN | FLAG_RST

GO_AWAY_NORMAL = 0
GO_AWAY_PROTOCOL_ERROR = 1
GO_AWAY_INTERNAL_ERROR = 2

INITIAL_WINDOW = 256 * 1024
MAX_WINDOW = 16 * 1024 * 1024
MAX_FRAME = 64 * 1024
ACCEPT_BACKLOG = 256
MAX_UNACKED_STREAMS = 256
KEEPALIVE_INTERVAL = 30.0
_MAX_U32 = 0xFFFFFFFF
_MAX_PENDING_PONGS = 64
_MAX_OUTSTANDING_PINGS = 64

# ---- per-connection budgets (settings of Yamux / YamuxCore; the resource system may feed them) ----
CONNECTION_MEMORY = 32 * 1024 * 1024
"""Receive-window bytes one connection may make us hold (go's connection scope: 32 MiB). Every stream
reserves its window from it (256 KiB at open, more when auto-tuning grows it); when it is used up new
inbound streams are refused (RST) and windows stop growing."""
PEER_MEMORY = 48 * 1024 * 1024
"""Receive-window bytes all connections to one peer may make us hold together (less than two
connections' worth: a peer gains little by opening more connections)."""
MAX_INBOUND_STREAMS = 1000
"""Inbound streams open at once on one connection (go-yamux's MaxIncomingStreams); beyond, RST."""
INBOUND_STREAM_RATE = 256.0
"""New inbound streams per second, sustained, on one connection; beyond (after the burst), RST."""
INBOUND_STREAM_BURST = 512
"""Inbound streams that may open at once before INBOUND_STREAM_RATE applies."""
PING_RATE = 100.0
"""Pings per second we answer on one connection (burst PING_BURST); more are not answered (and count
as frames that do nothing). go-yamux answers all, with at most 32 pongs queued."""
PING_BURST = 256
JUNK_RATE = 2000.0
"""Frames per second that do nothing (unanswered pings, empty window updates, empty data frames, data
for streams that are gone) one connection may send after a burst of JUNK_BURST; beyond, the
connection fails with a protocol error."""
JUNK_BURST = 20000
MAX_TUNING_RTT = 0.5
"""The largest RTT (seconds) receive-window auto-tuning believes: a peer answering our RTT probe late
cannot make every reader look fast."""
FRAMES_PER_CALL = 1024
"""Frames one ``receive_data`` call parses at most; the rest waits for the next call (``backlogged``),
so a read full of tiny frames cannot keep the event loop to itself."""


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded yamux header (for Data frames ``length`` is the payload size)."""

    type: int
    """``TYPE_DATA``, ``TYPE_WINDOW_UPDATE``, ``TYPE_PING`` or ``TYPE_GO_AWAY``."""
    flags: int
    """A combination of ``FLAG_SYN``, ``FLAG_ACK``, ``FLAG_FIN``, ``FLAG_RST``."""
    stream_id: int
    """The stream (0 for Ping and GoAway)."""
    length: int
    version: int = VERSION
    """The protocol version; 0 is the only one."""


def encode_frame(type: int, flags: int, stream_id: int, length: int, payload: bytes = b"") -> bytes:
    """Encode one frame (header plus, for Data, ``payload`` of ``length`` bytes)."""
    return HEADER.pack(VERSION, type, flags, stream_id, length) + payload


def decode_header(data: bytes | bytearray | memoryview) -> Frame:
    """Decode a 12-byte header without validating it."""
    version, type_, flags, stream_id, length = HEADER.unpack_from(data)
    return Frame(type_, flags, stream_id, length, version)


class _Stream:
    __slots__ = (
        "id",
        "outbound",
        "send_window",
        "recv_window",
        "recv_credit",
        "buffered",
        "epoch",
        "need_ack",
        "acked",
        "accepted",
        "local_fin",
        "remote_fin",
        "discard",
        "reserved",
    )

    def __init__(self, stream_id: int, outbound: bool, now: float) -> None:
        self.id = stream_id
        self.outbound = outbound
        self.send_window = INITIAL_WINDOW
        self.recv_window = INITIAL_WINDOW  # the window we aim to keep open for the peer
        self.recv_credit = INITIAL_WINDOW  # bytes the peer may still send
        self.buffered = 0  # received, not yet consumed by the reader
        self.epoch = now  # time of the last window update we sent
        self.need_ack = not outbound  # inbound: ACK rides on our first frame
        self.acked = not outbound
        self.accepted = outbound
        self.local_fin = False
        self.remote_fin = False
        self.discard = False
        self.reserved = INITIAL_WINDOW  # bytes of the connection's memory budget this stream holds


class YamuxCore(GuardedSession):
    """One yamux session. ``is_client`` = we initiated the connection (odd stream ids)."""

    # one per connection, idle or not: slots, not an instance dict (past 30 attributes, not even key-shared)
    __slots__ = (
        "is_client", "max_window", "max_frame", "accept_backlog", "max_unacked", "keepalive_interval",
        "keepalive_timeout", "window_growth_rtts", "rtt", "_tuning_rtt", "memory", "_guard", "_ping_rate",
        "_ping_per_s", "_ping_burst", "_max_remote_id", "_max_granted", "frames_received", "frames_per_call",
        "_backlog", "refused",
        "_streams", "_next_id", "_unacked", "_pending_accept", "_out", "_out_len", "_local_goaway",
        "_remote_goaway", "_error", "_hdr", "_remaining", "_target", "_fin_after", "_now", "_rtt_probe",
        "_pings", "_next_ping", "_pending_pongs", "_last_recv", "_keepalive_sent", "_heard",
    )

    protocol_id = PROTOCOL_ID
    supports_ping = True

    def __init__(
        self,
        is_client: bool,
        *,
        max_window: int = MAX_WINDOW,
        max_frame: int = MAX_FRAME,
        accept_backlog: int = ACCEPT_BACKLOG,
        max_unacked: int = MAX_UNACKED_STREAMS,
        keepalive_interval: float | None = KEEPALIVE_INTERVAL,
        keepalive_timeout: float | None = None,
        window_growth_rtts: float = 2.0,
        memory: MemoryReserver | None = None,
        max_inbound_streams: int = MAX_INBOUND_STREAMS,
        inbound_stream_rate: float = INBOUND_STREAM_RATE,
        inbound_stream_burst: int = INBOUND_STREAM_BURST,
        ping_rate: float = PING_RATE,
        ping_burst: int = PING_BURST,
        junk_rate: float = JUNK_RATE,
        junk_burst: int = JUNK_BURST,
        peer_streams: MemoryReserver | None = None,
    ) -> None:
        if max_window < INITIAL_WINDOW or max_window > _MAX_U32:
            raise ValueError("max_window must be between 256 KiB and 2**32-1")
        if max_frame < 1:
            raise ValueError("max_frame must be positive")
        self.is_client = is_client
        self.max_window = max_window
        self.max_frame = max_frame
        self.accept_backlog = accept_backlog
        self.max_unacked = max_unacked
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout if keepalive_timeout is not None else keepalive_interval
        self.window_growth_rtts = window_growth_rtts
        self.rtt: float | None = None  # last measured round-trip time
        self._tuning_rtt: float | None = None  # the smallest RTT measured (capped): drives auto-tuning
        self.memory: MemoryReserver = memory if memory is not None else MemoryBudget(CONNECTION_MEMORY)
        self._guard = SessionGuard(
            self.memory,
            max_inbound_streams,
            inbound_stream_rate,
            inbound_stream_burst,
            junk_rate,
            junk_burst,
            peer_streams,
        )
        check_rate(ping_rate, ping_burst)
        self._ping_per_s, self._ping_burst = ping_rate, ping_burst  # the bucket: made at the first ping
        self._ping_rate: RateLimit | None = None
        self._max_remote_id = 0  # the highest stream id the remote opened (or tried to)
        self._max_granted = INITIAL_WINDOW  # the largest receive window we ever granted
        self.frames_received = 0  # headers parsed (the driver yields every so many)
        self.frames_per_call = FRAMES_PER_CALL  # receive_data parses at most this many headers per call
        self._backlog: memoryview | None = None  # the rest of a call that reached frames_per_call
        self.refused = self._guard.refused  # inbound streams refused, by reason

        self._streams: dict[int, _Stream] = {}
        self._next_id = 1 if is_client else 2
        self._unacked = 0  # outbound streams the remote has not ACKed yet
        self._pending_accept = 0  # inbound streams the application has not accepted yet
        # queued frames, one bytes object each (a Data frame carries its payload): no growing buffer is
        # reallocated while frames are queued, and a secure channel can encrypt the frames in place
        self._out: list[bytes] = []
        self._out_len = 0
        self._local_goaway = False
        self._remote_goaway = False
        self._error: str | None = None

        # receive parser state
        self._hdr = bytearray()  # partial header; < 12 bytes
        self._remaining = 0  # payload bytes of the current Data frame still to come
        self._target: _Stream | None = None  # stream that gets them; None = discard
        self._fin_after = False  # the current Data frame carries FIN
        self._now = 0.0  # the latest time given to any call
        self._rtt_probe = False  # an RTT ping rides along with the next frame we queue

        # pings: opaque -> time sent; bounded, the oldest is forgotten at the bound
        self._pings: OrderedDict[int, float] = OrderedDict()
        self._next_ping = 0
        self._pending_pongs = 0  # pongs queued since the last drain; more are dropped
        self._last_recv: float | None = None
        self._keepalive_sent: float | None = None  # when the unanswered keep-alive ping went out
        self._heard = True  # something arrived since the keep-alive ping was sent

    # ---- output -------------------------------------------------------------------------

    @property
    def pending_output(self) -> int:
        """Bytes queued for the wire."""
        return self._out_len

    def data_to_send(self) -> bytearray:
        """Take every queued byte as one buffer (the queue is emptied)."""
        return bytearray().join(self.frames_to_send())

    def frames_to_send(self) -> list[bytes]:
        """Take the queued output as bytes chunks (frame headers, payloads), in order; what
        :meth:`data_to_send` joins."""
        out = self._out
        self._out = []
        self._out_len = 0
        self._pending_pongs = 0
        return out

    def _frame(self, type_: int, flags: int, stream_id: int, length: int) -> None:
        if self._rtt_probe:
            self._send_probe()
        self._out.append(HEADER.pack(VERSION, type_, flags, stream_id, length))
        self._out_len += HEADER_SIZE

    # ---- state queries ------------------------------------------------------------------

    @property
    def backlogged(self) -> bool:
        """True when the last ``receive_data`` stopped after ``frames_per_call`` frames: call
        ``receive_data(b"", now)`` to go on (before feeding more)."""
        return self._backlog is not None

    @property
    def is_failed(self) -> bool:
        """True once the remote broke the protocol (every later ``receive_data`` raises MuxerError)."""
        return self._error is not None

    @property
    def stream_count(self) -> int:
        """Streams the session knows (open, half-closed, or waiting to be accepted)."""
        return len(self._streams)

    @property
    def unacked_streams(self) -> int:
        """Outbound streams the remote has not acknowledged yet (at ``max_unacked``, ``open_stream`` raises)."""
        return self._unacked

    @property
    def pending_accept(self) -> int:
        """Inbound streams not yet taken by :meth:`stream_accepted`."""
        return self._pending_accept

    def has_stream(self, key: int) -> bool:
        """True while the session knows the stream (until it is closed both ways or reset)."""
        return key in self._streams

    def wire_id(self, key: int) -> int:
        """The yamux stream id: for yamux the key is the stream id."""
        return key

    def send_window(self, key: int) -> int:
        """Payload bytes the remote lets us send on the stream now (0 if unknown or half-closed by us)."""
        st = self._streams.get(key)
        if st is None or st.local_fin:
            return 0
        return st.send_window

    def receive_window(self, key: int) -> int:
        """The current target receive window of the stream (0 if unknown)."""
        st = self._streams.get(key)
        return st.recv_window if st is not None else 0

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Arm keep-alive. The first RTT sample (for window auto-tuning) is a ping queued with the
        first frame we send, so it costs no write of its own."""
        self._last_recv = now
        self._now = now
        if self._error is None and not self._local_goaway:
            self._rtt_probe = True

    def _send_probe(self) -> None:
        self._rtt_probe = False
        if self._error is None and not self._local_goaway:
            self.ping(self._now)

    def close(self) -> None:
        """Queue a GoAway (normal termination): no new streams either way; existing ones go on."""
        if self._local_goaway or self._error is not None:
            return
        self._local_goaway = True
        self._frame(TYPE_GO_AWAY, 0, 0, GO_AWAY_NORMAL)

    def _fail(self, reason: str) -> MuxerError:
        if self._error is None:
            self._error = reason
            self._local_goaway = True
            self._frame(TYPE_GO_AWAY, 0, 0, GO_AWAY_PROTOCOL_ERROR)
        return MuxerError(reason)

    # ---- memory budget (queries and release_memory: GuardedSession) ---------------------

    def _refuse(self, sid: int, reason: str | None) -> None:
        if reason is not None:
            self._guard.refuse(reason)
        self._frame(TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0)

    def _junk(self) -> None:
        """A frame that does nothing: a few are normal, a flood is an attack (CPU, not memory)."""
        self._guard.junk(self._now, "frames that do nothing")

    def _never_opened(self, sid: int) -> bool:
        if (sid & 1) == (0 if self.is_client else 1):  # the remote's numbering
            return sid > self._max_remote_id
        return sid >= self._next_id

    # ---- local commands -----------------------------------------------------------------

    def open_stream(self, now: float) -> int:
        """Open an outbound stream (queues its SYN) and return its id.

        Raises ConnectionClosed after a GoAway either way, a failure, or when ids run out, and
        ResourceLimitExceeded when ``max_unacked`` streams are unacknowledged (retry once some are).
        """
        if self._error is not None or self._local_goaway:
            raise ConnectionClosed("yamux session is closing")
        if self._remote_goaway:
            raise ConnectionClosed("remote sent GoAway: no new streams")
        if self._unacked >= self.max_unacked:
            raise ResourceLimitExceeded(f"{self._unacked} outbound streams not yet acknowledged")
        self._now = now
        sid = self._next_id
        if sid > _MAX_U32:
            raise ConnectionClosed("yamux stream ids exhausted")
        self._next_id = sid + 2
        st = _Stream(sid, True, now)
        st.reserved = self._guard.force(INITIAL_WINDOW)  # our own choice: counted even beyond the budget
        self._streams[sid] = st
        self._unacked += 1
        self._frame(TYPE_WINDOW_UPDATE, FLAG_SYN, sid, 0)
        return sid

    def send_data(self, key: int, data: memoryview) -> int:
        """Queue Data frames (at most ``max_frame`` bytes each) for up to :meth:`send_window` bytes of
        ``data``; return how many. Raises StreamClosed if the stream is unknown or half-closed by us.
        """
        st = self._streams.get(key)
        if st is None or st.local_fin:
            raise StreamClosed(f"yamux stream {key} is not writable")
        n = min(len(data), st.send_window)
        if n <= 0:
            return 0
        flags = 0
        if st.need_ack:
            flags = FLAG_ACK
            st.need_ack = False
        if self._rtt_probe:
            self._send_probe()
        append = self._out.append
        pack = HEADER.pack
        max_frame = self.max_frame
        pos = 0
        while pos < n:
            m = min(max_frame, n - pos)
            # header and payload as separate chunks: a secure channel may seal a large payload as a
            # record of its own, which the receiver can then hand to the reader without a copy
            append(pack(VERSION, TYPE_DATA, flags, key, m))
            append(data[pos : pos + m].tobytes())
            flags = 0
            pos += m
        self._out_len += n + HEADER_SIZE * -(-n // max_frame)
        st.send_window -= n
        return n

    def send_eof(self, key: int) -> None:
        """Half-close: queue a FIN (nothing if already sent or the stream is unknown)."""
        st = self._streams.get(key)
        if st is None or st.local_fin:
            return
        flags = FLAG_FIN
        if st.need_ack:
            flags |= FLAG_ACK
            st.need_ack = False
        st.local_fin = True
        self._frame(TYPE_DATA, flags, key, 0)
        if st.remote_fin:
            self._free(st)

    def reset_stream(self, key: int) -> None:
        """Queue an RST for the stream and forget it (nothing if unknown)."""
        st = self._streams.get(key)
        if st is None:
            return
        self._frame(TYPE_WINDOW_UPDATE, FLAG_RST, key, 0)
        self._free(st)

    def consume(self, key: int, n: int, now: float) -> None:
        """The reader took ``n`` buffered bytes of the stream; may queue a window update."""
        self._now = now
        st = self._streams.get(key)
        if st is None:
            return
        st.buffered -= n
        self._maybe_update_window(st, now)

    def stop_receiving(self, key: int, now: float) -> None:
        """Discard the stream's unread and later payload, still crediting the sender's window."""
        st = self._streams.get(key)
        if st is None:
            return
        st.discard = True
        st.buffered = 0
        self._maybe_update_window(st, now)

    def stream_accepted(self, key: int) -> None:
        """The application took the inbound stream out of the accept backlog."""
        st = self._streams.get(key)
        if st is not None and not st.accepted:
            st.accepted = True
            self._pending_accept -= 1

    def ping(self, now: float) -> int:
        """Queue a ping and return its opaque value (a :class:`PongReceived` reports its RTT); at most
        64 are remembered, the oldest is forgotten. Raises ConnectionClosed once the session failed.
        """
        if self._error is not None:
            raise ConnectionClosed("yamux session failed")
        self._rtt_probe = False  # any answered ping is an RTT sample
        self._now = now
        opaque = self._next_ping
        self._next_ping = (opaque + 1) & _MAX_U32
        if len(self._pings) >= _MAX_OUTSTANDING_PINGS:
            self._pings.popitem(last=False)
        self._pings[opaque] = now
        self._frame(TYPE_PING, FLAG_SYN, 0, opaque)
        return opaque

    # ---- timers (keep-alive) ------------------------------------------------------------

    def timer(self) -> float | None:
        """When :meth:`handle_timer` is due (keep-alive), or None without keep-alive or once failed."""
        if self.keepalive_interval is None or self._error is not None or self._last_recv is None:
            return None
        if self._keepalive_sent is not None and not self._heard:
            assert self.keepalive_timeout is not None
            return self._keepalive_sent + self.keepalive_timeout
        return self._last_recv + self.keepalive_interval

    def handle_timer(self, now: float) -> list[MuxerEvent]:
        """Keep-alive: ping after ``keepalive_interval`` of silence; a :class:`KeepaliveTimeout` event if
        nothing arrived within ``keepalive_timeout`` of that ping.
        """
        if self.keepalive_interval is None or self._error is not None or self._last_recv is None:
            return []
        if self._keepalive_sent is not None:
            if self._heard:
                self._keepalive_sent = None  # heard from the remote since: alive
            else:
                assert self.keepalive_timeout is not None
                if now >= self._keepalive_sent + self.keepalive_timeout:
                    return [KeepaliveTimeout()]
                return []
        if now >= self._last_recv + self.keepalive_interval:
            self.ping(now)
            self._keepalive_sent = now
            self._heard = False
        return []

    # ---- receiving ----------------------------------------------------------------------

    def _ping_allowed(self) -> bool:
        rate = self._ping_rate
        if rate is None:
            rate = self._ping_rate = RateLimit(self._ping_per_s, self._ping_burst)
        return rate.allow(self._now)

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> list[MuxerEvent]:
        """Feed bytes from the wire. Raises MuxerError on a violation (a GoAway is then queued)."""
        if self._error is not None:
            raise MuxerError(self._error)
        if self._backlog is not None:  # resume where the last call stopped
            rest, self._backlog = self._backlog, None
            data = rest if not data else bytes(rest) + bytes(data)
        self._now = now
        self._last_recv = now
        self._heard = True
        events: list[MuxerEvent] = []
        mv = memoryview(data)
        end = len(mv)
        pos = 0
        frames_left = self.frames_per_call
        unpack_from = HEADER.unpack_from
        try:
            while pos < end:
                if self._remaining:
                    n = min(self._remaining, end - pos)
                    st = self._target
                    if st is not None:
                        if st.discard:
                            self._maybe_update_window(st, now)
                        else:
                            st.buffered += n
                            events.append(StreamData(st.id, mv[pos : pos + n]))
                    pos += n
                    self._remaining -= n
                    if not self._remaining:
                        self._end_payload(events)
                    continue
                if frames_left <= 0:  # enough for one call: the driver lets others run, then resumes
                    self._backlog = mv[pos:end]
                    break
                frames_left -= 1
                if self._hdr:
                    take = HEADER_SIZE - len(self._hdr)
                    self._hdr += mv[pos : pos + take]
                    pos += take
                    if len(self._hdr) < HEADER_SIZE:
                        break
                    version, type_, flags, sid, length = unpack_from(self._hdr)
                    self._hdr.clear()
                elif end - pos < HEADER_SIZE:
                    self._hdr += mv[pos:end]
                    break
                else:
                    version, type_, flags, sid, length = unpack_from(mv, pos)
                    pos += HEADER_SIZE
                self.frames_received += 1
                self._handle_frame(version, type_, flags, sid, length, events)
        except MuxerError as exc:
            raise self._fail(str(exc)) from None
        return events

    def _end_payload(self, events: list[MuxerEvent]) -> None:
        st = self._target
        self._target = None
        if st is not None and self._fin_after:
            self._remote_fin(st, events)
        self._fin_after = False

    def _skip(self, length: int) -> None:
        self._target = None
        self._fin_after = False
        self._remaining = length

    def _handle_frame(
        self, version: int, type_: int, flags: int, sid: int, length: int, events: list[MuxerEvent]
    ) -> None:
        if version != VERSION:
            raise MuxerError(f"unsupported yamux version {version}")
        if type_ == TYPE_DATA or type_ == TYPE_WINDOW_UPDATE:
            if flags & ~_STREAM_FLAGS:
                raise MuxerError(f"unknown yamux flags {flags:#x}")
            if sid == 0:
                raise MuxerError("stream frame on stream id 0")
            self._stream_frame(type_, flags, sid, length, events)
        elif type_ == TYPE_PING:
            if sid != 0:
                raise MuxerError(f"ping on stream id {sid}")
            if flags == FLAG_SYN:
                # answered at PING_RATE, and no more than _MAX_PENDING_PONGS queued while the remote
                # does not read them; the rest count as frames that do nothing
                if self._pending_pongs < _MAX_PENDING_PONGS and self._ping_allowed():
                    self._pending_pongs += 1
                    self._frame(TYPE_PING, FLAG_ACK, 0, length)
                else:
                    self._junk()
            elif flags == FLAG_ACK:
                sent = self._pings.pop(length, None)
                if sent is not None:
                    rtt = self._now - sent
                    self.rtt = rtt
                    # auto-tuning believes the smallest sample: a late answer cannot inflate windows
                    tuning = min(rtt, MAX_TUNING_RTT)
                    if self._tuning_rtt is None or tuning < self._tuning_rtt:
                        self._tuning_rtt = tuning
                    events.append(PongReceived(length, rtt))
                else:
                    self._junk()
            else:
                raise MuxerError(f"bad ping flags {flags:#x}")
        elif type_ == TYPE_GO_AWAY:
            if sid != 0 or flags:
                raise MuxerError("malformed GoAway")
            self._remote_goaway = True
            events.append(GoAwayReceived(length))
        else:
            raise MuxerError(f"unknown yamux frame type {type_}")

    def _stream_frame(self, type_: int, flags: int, sid: int, length: int, events: list[MuxerEvent]) -> None:
        is_data = type_ == TYPE_DATA
        st = self._streams.get(sid)
        if flags & FLAG_SYN:
            if flags & FLAG_ACK:
                raise MuxerError(f"SYN and ACK together on stream {sid}")
            if st is not None:
                raise MuxerError(f"SYN for existing stream {sid}")
            if (sid & 1) == (1 if self.is_client else 0):
                raise MuxerError(f"remote opened stream {sid} with our id parity")
            if sid > self._max_remote_id:
                self._max_remote_id = sid
            if flags & FLAG_RST:
                st = None  # opened and reset at once: nothing to do
            elif self._local_goaway:
                self._refuse(sid, "closing")
            elif self._pending_accept >= self.accept_backlog:
                self._refuse(sid, "accept backlog full")
            elif self._guard.admit(self._now, INITIAL_WINDOW) is not None:
                self._refuse(sid, None)  # (counted by admit)
            else:
                st = _Stream(sid, False, self._now)
                self._streams[sid] = st
                self._pending_accept += 1
                events.append(StreamOpened(sid))
        if st is None:
            if is_data and length:
                # stream unknown: a stream that never existed has no window at all; one already freed
                # (or refused) may have data in flight, but no more than the largest window we ever
                # granted (a 2 GiB "payload" would otherwise be read and thrown away while pings wait)
                if self._never_opened(sid):
                    raise MuxerError(
                        f"{length} bytes of data for stream {sid}, never opened: exceed any window we grant"
                    )
                if length > self._max_granted:
                    raise MuxerError(f"{length} bytes of data for unknown stream {sid} exceed any window we grant")
                self._skip(length)
            if not flags & FLAG_SYN:
                self._junk()
            return
        if flags & FLAG_ACK and not st.acked:
            st.acked = True
            self._unacked -= 1
        if flags & FLAG_RST:
            if is_data and length:
                if length > st.recv_credit:
                    raise MuxerError(f"stream {sid}: {length} bytes exceed the receive window ({st.recv_credit})")
                self._skip(length)
            self._free(st)
            events.append(StreamAborted(sid, True, "reset by remote"))
            return
        if not is_data:
            if not length and not flags:
                self._junk()  # an empty window update
            if length:
                window = st.send_window + length
                if window > _MAX_U32:
                    raise MuxerError(f"send window of stream {sid} overflows")
                st.send_window = window
                events.append(SendWindowOpened(sid))
            if flags & FLAG_FIN:
                self._remote_fin(st, events)
            return
        if length:
            if length > st.recv_credit:
                raise MuxerError(f"stream {sid}: {length} bytes exceed the receive window ({st.recv_credit})")
            st.recv_credit -= length
            if st.remote_fin:
                self._skip(length)
                self._local_reset(st, "data after FIN", events)
                return
            self._target = st
            self._fin_after = bool(flags & FLAG_FIN)
            self._remaining = length
        elif flags & FLAG_FIN:
            self._remote_fin(st, events)
        elif not flags:
            self._junk()  # an empty data frame

    def _remote_fin(self, st: _Stream, events: list[MuxerEvent]) -> None:
        if st.remote_fin:
            return
        st.remote_fin = True
        events.append(StreamEnded(st.id))
        if st.local_fin:
            self._free(st)

    def _local_reset(self, st: _Stream, reason: str, events: list[MuxerEvent]) -> None:
        self._frame(TYPE_WINDOW_UPDATE, FLAG_RST, st.id, 0)
        self._free(st)
        events.append(StreamAborted(st.id, False, reason))

    def _free(self, st: _Stream) -> None:
        if self._streams.pop(st.id, None) is None:
            return
        if self._target is st:
            self._target = None  # the rest of the current payload is dropped
            self._fin_after = False
        if not st.acked:
            self._unacked -= 1
        if not st.accepted:
            self._pending_accept -= 1
        if not st.outbound:
            self._guard.stream_closed()
        self._guard.release(st.reserved)
        st.reserved = 0

    def _maybe_update_window(self, st: _Stream, now: float) -> None:
        if st.remote_fin or st.id not in self._streams:
            return
        window = st.recv_window
        delta = window - st.recv_credit - st.buffered
        if delta < window >> 1:
            return
        rtt = self._tuning_rtt
        if (
            rtt is not None
            and window < self.max_window
            and now - st.epoch < self.window_growth_rtts * rtt
        ):
            grown = min(window * 2, self.max_window)
            if self._guard.reserve(grown - window):  # a full budget keeps windows where they are
                st.reserved += grown - window
                delta += grown - window
                st.recv_window = grown
                if grown > self._max_granted:
                    self._max_granted = grown
        st.epoch = now
        st.recv_credit += delta
        flags = 0
        if st.need_ack:
            flags = FLAG_ACK
            st.need_ack = False
        self._frame(TYPE_WINDOW_UPDATE, flags, st.id, delta)
