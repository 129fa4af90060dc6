"""What the sans-IO muxer cores (yamux, mplex) emit, and the command interface the driver uses.

No trio here. A *key* identifies a stream inside one core: for yamux it is the stream id, for mplex
it is ``id << 1 | initiated_locally`` (both sides may use the same numeric id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Union


@dataclass(slots=True)
class StreamOpened:
    """The remote opened a stream; it waits in the accept backlog."""

    key: int
    """The new stream's key."""


@dataclass(slots=True)
class StreamData:
    """Payload for a stream. ``data`` may be a view into the bytes given to ``receive_data``."""

    key: int
    """The stream's key."""
    data: bytes | memoryview


@dataclass(slots=True)
class StreamEnded:
    """The remote half-closed the stream (no more data will come)."""

    key: int
    """The stream's key."""


@dataclass(slots=True)
class StreamAborted:
    """The stream was reset: by the remote, or by the core because of what the remote sent."""

    key: int
    """The stream's key."""
    by_remote: bool
    """True if the remote reset it, False if the core did (the remote broke the protocol)."""
    reason: str
    """Why, for logs and error messages."""


@dataclass(slots=True)
class SendWindowOpened:
    """The remote granted more send window on the stream (yamux)."""

    key: int
    """The stream's key."""


@dataclass(slots=True)
class PongReceived:
    """The answer to one of our pings (yamux); ``rtt`` in the units of ``now``."""

    opaque: int
    """The value :meth:`MuxerCore.ping` returned for the ping answered."""
    rtt: float


@dataclass(slots=True)
class GoAwayReceived:
    """The remote will accept no new streams; a non-zero ``code`` is an error (yamux)."""

    code: int


@dataclass(slots=True)
class KeepaliveTimeout:
    """Nothing arrived from the remote within the keep-alive timeout (yamux)."""


MuxerEvent = Union[
    StreamOpened,
    StreamData,
    StreamEnded,
    StreamAborted,
    SendWindowOpened,
    PongReceived,
    GoAwayReceived,
    KeepaliveTimeout,
]


class MuxerCore(Protocol):
    """The commands a sans-IO muxer core offers its driver.

    ``receive_data`` raises :class:`~mycel.core.errors.MuxerError` on a protocol violation; the core
    is then failed (every later ``receive_data`` raises too) and may have queued a last frame
    (yamux GoAway) in its output. Commands on a key the core no longer knows are ignored, except
    ``send_data`` which raises :class:`~mycel.core.errors.StreamClosed`.
    """

    protocol_id: str
    supports_ping: bool
    frames_received: int
    """Frames parsed so far (the driver yields to the scheduler every so many, whatever they are)."""
    refused: dict[str, int]
    """Inbound streams refused so far, by reason (the driver logs them, rate-limited)."""

    @property
    def backlogged(self) -> bool:
        """True when ``receive_data`` stopped after its frame budget: call ``receive_data(b"", now)``."""
        ...

    def release_memory(self) -> None:
        """Give back the whole memory reservation (the driver calls it once the connection is gone)."""
        ...

    @property
    def pending_output(self) -> int:
        """Bytes queued for the wire."""
        ...

    def data_to_send(self) -> bytearray:
        """Take every queued byte (the core starts a fresh buffer)."""
        ...

    def start(self, now: float) -> None:
        """Called once when the driver starts (yamux: measure the RTT, arm keep-alive)."""
        ...

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> list[MuxerEvent]:
        """Feed bytes from the wire; ``StreamData`` events may be views into ``data``, so the
        caller must not modify it while it uses them."""
        ...

    def open_stream(self, now: float) -> int:
        """Open an outbound stream and return its key.

        Raises ConnectionClosed when no new stream may be opened on this connection, and
        ResourceLimitExceeded when too many are unacknowledged (retry once some are).
        """
        ...

    def send_window(self, key: int) -> int:
        """How many payload bytes ``send_data`` would accept now."""
        ...

    def send_data(self, key: int, data: memoryview) -> int:
        """Queue frames for up to ``send_window(key)`` bytes of ``data``; return how many."""
        ...

    def send_eof(self, key: int) -> None:
        """Half-close the stream: queue a FIN (nothing if already sent or the key is unknown)."""

    def reset_stream(self, key: int) -> None:
        """Queue a reset of the stream and forget it."""

    def consume(self, key: int, n: int, now: float) -> None:
        """The reader took ``n`` buffered bytes of the stream (may queue a window update)."""
        ...

    def stop_receiving(self, key: int, now: float) -> None:
        """Discard unread and later payload of the stream (still crediting the sender)."""
        ...

    def stream_accepted(self, key: int) -> None:
        """The application took the inbound stream out of the backlog."""
        ...

    def has_stream(self, key: int) -> bool:
        """True while the core knows the stream (until it is fully closed or reset)."""

    def wire_id(self, key: int) -> int:
        """The stream id as written on the wire."""
        ...

    def ping(self, now: float) -> int:
        """Queue a ping and return its opaque value (yamux only)."""
        ...

    def close(self) -> None:
        """Refuse new streams from now on and tell the remote (yamux GoAway)."""
        ...

    def timer(self) -> float | None:
        """When ``handle_timer`` should next be called, or None."""
        ...

    def handle_timer(self, now: float) -> list[MuxerEvent]:
        """Run what was due at :meth:`timer` (yamux: keep-alive pings; a :class:`KeepaliveTimeout` event)."""
