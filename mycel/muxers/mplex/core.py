"""Sans-IO mplex (``/mplex/6.7.0``): bytes in, events and bytes out.

Frame: ``uvarint(stream_id << 3 | flag) || uvarint(length) || data``. Both sides number their own
streams from 0, so a stream is keyed by ``stream_id << 1 | initiated_locally``. No flow control:
a stream whose unread data would exceed ``max_buffer`` is reset instead of growing memory, and so is
one whose data does not fit in the connection's memory budget (the unread data of all its streams).
Inbound streams are capped per connection and rate-limited; frames that do nothing (data, close or
reset for streams that do not exist) are tolerated up to a rate, beyond which the connection fails.
"""

from __future__ import annotations

import sys

from mycel.core.errors import ConnectionClosed, DecodeError, MuxerError, StreamClosed
from mycel.core.varint import decode_uvarint, encode_uvarint
from mycel.muxers.budget import GuardedSession, MemoryBudget, MemoryReserver, SessionGuard
from mycel.muxers.events import (
    MuxerEvent,
    StreamAborted,
    StreamData,
    StreamEnded,
    StreamOpened,
)

PROTOCOL_ID = "/mplex/6.7.0"

NEW_STREAM = 0
MESSAGE_RECEIVER = 1
MESSAGE_INITIATOR = 2
CLOSE_RECEIVER = 3
CLOSE_INITIATOR = 4
RESET_RECEIVER = 5
RESET_INITIATOR = 6

MAX_MESSAGE = 1024 * 1024
MAX_FRAME = 64 * 1024
MAX_BUFFER = 4 * 1024 * 1024
ACCEPT_BACKLOG = 256
MAX_STREAM_ID = (1 << 60) - 1
CONNECTION_MEMORY = 32 * 1024 * 1024
"""Unread bytes all streams of one connection may hold together; data beyond resets its stream."""
PEER_MEMORY = 48 * 1024 * 1024
"""Unread bytes all connections to one peer may hold together."""
MAX_INBOUND_STREAMS = 1000
"""Inbound streams open at once on one connection; beyond, new ones are reset."""
INBOUND_STREAM_RATE = 256.0
"""New inbound streams per second, sustained (after INBOUND_STREAM_BURST); beyond, reset."""
INBOUND_STREAM_BURST = 512
JUNK_RATE = 2000.0
"""Frames per second for streams that do not exist, after a burst of JUNK_BURST; beyond, the
connection fails with a protocol error."""
JUNK_BURST = 20000
FRAMES_PER_CALL = 1024
"""Frames one ``receive_data`` call parses at most; the rest waits for the next call (``backlogged``),
so a read full of tiny frames cannot keep the event loop to itself."""
_MAX_HEADER = 18  # two 9-byte varints


def encode_frame(stream_id: int, flag: int, payload: bytes = b"") -> bytes:
    """Encode one mplex message."""
    return encode_uvarint(stream_id << 3 | flag) + encode_uvarint(len(payload)) + payload


def decode_frame(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int, bytes, int] | None:
    """Decode one whole message at ``offset``: ``(stream_id, flag, payload, new_offset)`` or None."""
    res = decode_uvarint(data, offset)
    if res is None:
        return None
    header, pos = res
    res = decode_uvarint(data, pos)
    if res is None:
        return None
    length, pos = res
    if pos + length > len(data):
        return None
    return header >> 3, header & 7, bytes(data[pos : pos + length]), pos + length


class _Stream:
    __slots__ = ("key", "id", "local", "buffered", "accepted", "local_fin", "remote_fin", "discard", "reserved")

    def __init__(self, stream_id: int, local: bool) -> None:
        self.id = stream_id
        self.local = local  # we opened it (we are its initiator)
        self.key = stream_id << 1 | local
        self.buffered = 0  # received, not yet consumed by the reader
        self.accepted = local
        self.local_fin = False
        self.remote_fin = False
        self.discard = False
        self.reserved = 0  # bytes of the connection's memory budget held for the unread data


class MplexCore(GuardedSession):
    """One mplex session."""

    # one per connection, idle or not: slots, not an instance dict (past 30 attributes, not even key-shared)
    __slots__ = (
        "max_buffer", "accept_backlog", "max_frame", "max_message", "_streams", "_next_id", "_pending_accept",
        "_out", "_closed", "_error", "memory", "_guard", "_now", "frames_received", "frames_per_call",
        "_backlog", "refused", "_hdr", "_remaining", "_target",
    )

    protocol_id = PROTOCOL_ID
    supports_ping = False

    def __init__(
        self,
        *,
        max_buffer: int = MAX_BUFFER,
        accept_backlog: int = ACCEPT_BACKLOG,
        max_frame: int = MAX_FRAME,
        max_message: int = MAX_MESSAGE,
        memory: MemoryReserver | None = None,
        max_inbound_streams: int = MAX_INBOUND_STREAMS,
        inbound_stream_rate: float = INBOUND_STREAM_RATE,
        inbound_stream_burst: int = INBOUND_STREAM_BURST,
        junk_rate: float = JUNK_RATE,
        junk_burst: int = JUNK_BURST,
        peer_streams: MemoryReserver | None = None,
    ) -> None:
        if not 1 <= max_frame <= max_message:
            raise ValueError("max_frame must be between 1 and max_message")
        self.max_buffer = max_buffer
        self.accept_backlog = accept_backlog
        self.max_frame = max_frame
        self.max_message = max_message
        self._streams: dict[int, _Stream] = {}
        self._next_id = 0
        self._pending_accept = 0
        self._out = bytearray()
        self._closed = False
        self._error: str | None = None
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
        self._now = 0.0
        self.frames_received = 0  # headers parsed (the driver yields every so many)
        self.frames_per_call = FRAMES_PER_CALL  # receive_data parses at most this many headers per call
        self._backlog: memoryview | None = None  # the rest of a call that reached frames_per_call
        self.refused = self._guard.refused  # inbound streams refused, by reason

        self._hdr = bytearray()  # partial header (two varints); < 18 bytes
        self._remaining = 0  # payload bytes of the current message still to come
        self._target: _Stream | None = None  # stream that gets them; None = discard

    # ---- output / queries ---------------------------------------------------------------

    @property
    def pending_output(self) -> int:
        """Bytes queued for the wire."""
        return len(self._out)

    def data_to_send(self) -> bytearray:
        """Take every queued byte (the core starts a fresh buffer)."""
        out = self._out
        self._out = bytearray()
        return out

    def _frame(self, stream_id: int, flag: int, length: int = 0) -> None:
        self._out += encode_uvarint(stream_id << 3 | flag)
        self._out += encode_uvarint(length)

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
    def pending_accept(self) -> int:
        """Inbound streams not yet taken by :meth:`stream_accepted`."""
        return self._pending_accept

    def has_stream(self, key: int) -> bool:
        """True while the session knows the stream (until it is closed both ways or reset)."""
        return key in self._streams

    def wire_id(self, key: int) -> int:
        """The mplex stream id (``key >> 1``; both sides number their streams from 0)."""
        return key >> 1

    def send_window(self, key: int) -> int:
        """``sys.maxsize`` (mplex has no flow control), or 0 if the stream is unknown or half-closed by us."""
        st = self._streams.get(key)
        if st is None or st.local_fin:
            return 0
        return sys.maxsize  # no flow control

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Nothing to do: mplex has no keep-alive and no RTT measurement."""
        pass

    def close(self) -> None:
        """Refuse new streams from now on, ours and the remote's; mplex has no GoAway, so nothing is sent
        (the driver closes the transport)."""
        self._closed = True  # mplex has no GoAway: the driver closes the transport

    def timer(self) -> float | None:
        """Always None: mplex has no timers."""
        return None

    def handle_timer(self, now: float) -> list[MuxerEvent]:
        """Nothing to do (no timers); returns no events."""
        return []

    def ping(self, now: float) -> int:
        """Raises NotImplementedError: mplex has no ping (``supports_ping`` is False)."""
        raise NotImplementedError("mplex has no ping")

    # ---- local commands -----------------------------------------------------------------

    def open_stream(self, now: float) -> int:
        """Open an outbound stream (queues NewStream, named by its id) and return its key.

        Raises ConnectionClosed once the session is closed or failed, or when ids run out.
        """
        if self._closed or self._error is not None:
            raise ConnectionClosed("mplex session is closed")
        sid = self._next_id
        if sid > MAX_STREAM_ID:
            raise ConnectionClosed("mplex stream ids exhausted")
        self._next_id = sid + 1
        st = _Stream(sid, True)
        self._streams[st.key] = st
        name = str(sid).encode()
        self._frame(sid, NEW_STREAM, len(name))
        self._out += name
        return st.key

    def send_data(self, key: int, data: memoryview) -> int:
        """Queue all of ``data`` as messages of at most ``max_frame`` bytes; return its length.

        Raises StreamClosed if the stream is unknown or half-closed by us.
        """
        st = self._streams.get(key)
        if st is None or st.local_fin:
            raise StreamClosed(f"mplex stream {key >> 1} is not writable")
        flag = MESSAGE_INITIATOR if st.local else MESSAGE_RECEIVER
        header = encode_uvarint(st.id << 3 | flag)
        out = self._out
        max_frame = self.max_frame
        n = len(data)
        pos = 0
        while pos < n:
            m = min(max_frame, n - pos)
            out += header
            out += encode_uvarint(m)
            out += data[pos : pos + m]
            pos += m
        return n

    def send_eof(self, key: int) -> None:
        """Half-close: queue a Close (nothing if already sent or the stream is unknown)."""
        st = self._streams.get(key)
        if st is None or st.local_fin:
            return
        st.local_fin = True
        self._frame(st.id, CLOSE_INITIATOR if st.local else CLOSE_RECEIVER)
        if st.remote_fin:
            self._free(st)

    def reset_stream(self, key: int) -> None:
        """Queue a Reset for the stream and forget it (nothing if unknown)."""
        st = self._streams.get(key)
        if st is None:
            return
        self._frame(st.id, RESET_INITIATOR if st.local else RESET_RECEIVER)
        self._free(st)

    def consume(self, key: int, n: int, now: float) -> None:
        """The reader took ``n`` buffered bytes of the stream (they no longer count towards ``max_buffer``
        nor the memory budget)."""
        st = self._streams.get(key)
        if st is not None:
            st.buffered -= n
            self._unreserve(st, st.reserved - max(st.buffered, 0))

    def stop_receiving(self, key: int, now: float) -> None:
        """Discard the stream's unread and later payload."""
        st = self._streams.get(key)
        if st is not None:
            st.discard = True
            st.buffered = 0
            self._unreserve(st, st.reserved)

    # ---- memory budget (queries and release_memory: GuardedSession) ---------------------

    def _unreserve(self, st: _Stream, n: int) -> None:
        if n > 0:
            st.reserved -= n
            self._guard.release(n)

    def stream_accepted(self, key: int) -> None:
        """The application took the inbound stream out of the accept backlog."""
        st = self._streams.get(key)
        if st is not None and not st.accepted:
            st.accepted = True
            self._pending_accept -= 1

    # ---- receiving ----------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> list[MuxerEvent]:
        """Feed bytes from the wire. Raises MuxerError on a violation."""
        if self._error is not None:
            raise MuxerError(self._error)
        if self._backlog is not None:  # resume where the last call stopped
            rest, self._backlog = self._backlog, None
            data = rest if not data else bytes(rest) + bytes(data)
        self._now = now
        events: list[MuxerEvent] = []
        mv = memoryview(data)
        end = len(mv)
        pos = 0
        frames_left = self.frames_per_call
        try:
            while pos < end:
                if self._remaining:
                    n = min(self._remaining, end - pos)
                    st = self._target
                    if st is not None and not st.discard:  # (counted in ``buffered`` at its header)
                        events.append(StreamData(st.key, mv[pos : pos + n]))
                    pos += n
                    self._remaining -= n
                    if not self._remaining:
                        self._target = None
                    continue
                if frames_left <= 0:  # enough for one call: the driver lets others run, then resumes
                    self._backlog = mv[pos:end]
                    break
                frames_left -= 1
                if self._hdr:
                    # Complete the header from a bounded prefix; give back what it did not use.
                    had = len(self._hdr)
                    take = min(_MAX_HEADER - had, end - pos)
                    self._hdr += mv[pos : pos + take]
                    parsed = self._parse_header(self._hdr, 0)
                    if parsed is None:
                        pos += take
                        continue
                    header, length, used = parsed
                    pos += used - had
                    self._hdr.clear()
                else:
                    parsed = self._parse_header(mv, pos)
                    if parsed is None:
                        self._hdr += mv[pos:end]
                        break
                    header, length, pos = parsed
                self.frames_received += 1
                self._handle_frame(header >> 3, header & 7, length, events)
        except MuxerError as exc:
            self._error = str(exc)
            raise
        return events

    def _parse_header(self, buf: bytearray | memoryview, pos: int) -> tuple[int, int, int] | None:
        try:
            res = decode_uvarint(buf, pos)
            if res is None:
                return None
            header, p = res
            res = decode_uvarint(buf, p)
        except DecodeError as exc:
            raise MuxerError(f"bad mplex header: {exc}") from None
        if res is None:
            return None
        length, p = res
        if length > self.max_message:
            raise MuxerError(f"mplex message of {length} bytes exceeds {self.max_message}")
        return header, length, p

    def _handle_frame(self, sid: int, flag: int, length: int, events: list[MuxerEvent]) -> None:
        if flag == NEW_STREAM:
            key = sid << 1
            if key in self._streams:
                raise MuxerError(f"NewStream for existing stream {sid}")
            if self._closed:
                self._guard.refuse("closing")
                self._frame(sid, RESET_RECEIVER)
            elif self._pending_accept >= self.accept_backlog:
                self._guard.refuse("accept backlog full")
                self._frame(sid, RESET_RECEIVER)
            elif self._guard.admit(self._now, 0) is not None:
                self._frame(sid, RESET_RECEIVER)
            else:
                new = _Stream(sid, False)
                self._streams[key] = new
                self._pending_accept += 1
                events.append(StreamOpened(key))
            self._skip(length)  # the stream name is informational only
            return
        if flag > RESET_INITIATOR:
            raise MuxerError(f"unknown mplex flag {flag}")
        # Odd flags (1, 3, 5) come from the receiver of a stream we opened; even from its initiator.
        key = sid << 1 | (flag & 1)
        st = self._streams.get(key)
        if flag <= MESSAGE_INITIATOR:
            if st is None:
                self._guard.junk(self._now, "frames for streams that do not exist")
                self._skip(length)
            elif st.discard:
                self._skip(length)
            elif st.remote_fin:
                self._skip(length)
                self._local_reset(st, "data after close", events)
            elif st.buffered + length > self.max_buffer:
                self._skip(length)
                self._local_reset(st, f"unread data would exceed {self.max_buffer} bytes", events)
            elif length:
                need = st.buffered + length - st.reserved
                if need > 0:
                    if not self._guard.reserve(need):
                        self._skip(length)
                        self._local_reset(st, "unread data of the connection exceed its memory budget", events)
                        return
                    st.reserved += need
                st.buffered += length
                self._target = st
                self._remaining = length
            return
        self._skip(length)  # close/reset carry no data; tolerate and drop any
        if st is None:
            self._guard.junk(self._now, "frames for streams that do not exist")
            return
        if flag <= CLOSE_INITIATOR:
            if not st.remote_fin:
                st.remote_fin = True
                events.append(StreamEnded(key))
                if st.local_fin:
                    self._free(st)
        else:
            self._free(st)
            events.append(StreamAborted(key, True, "reset by remote"))

    def _skip(self, length: int) -> None:
        self._target = None
        self._remaining = length

    def _local_reset(self, st: _Stream, reason: str, events: list[MuxerEvent]) -> None:
        self._frame(st.id, RESET_INITIATOR if st.local else RESET_RECEIVER)
        self._free(st)
        events.append(StreamAborted(st.key, False, reason))

    def _free(self, st: _Stream) -> None:
        if self._streams.pop(st.key, None) is None:
            return
        if self._target is st:
            self._target = None
        if not st.accepted:
            self._pending_accept -= 1
        if not st.local:
            self._guard.stream_closed()
        self._unreserve(st, st.reserved)
