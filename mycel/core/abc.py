"""The small abstract classes a layer implements to plug into a host.

A user who wants a custom transport, security protocol or muxer implements exactly one of these.

Layering (see ARCHITECTURE.md)::

    StreamTransport.dial/accept  -> RawConnection        (bytes, addresses)
    SecurityProtocol.secure_*    -> SecureConnection     (+ authenticated remote peer)
    StreamMuxer.new_connection   -> Connection           (streams; same type QUIC hands out)
    Connection.open/accept_stream-> MuxedStream          (a trio HalfCloseableStream + reset())

Optional capabilities (the ``typing.Protocol`` classes at the end: :class:`FrameReceiver`,
:class:`ChunkSender`, :class:`RecordSized`, :class:`Corkable`, :class:`InboundStreamPush`, :class:`HostBound`, and for
muxer cores :class:`FrameQueue`, :class:`FrameSizeAdjustable`, :class:`RttReporter`) are fast paths a
layer may offer by having the methods; nothing needs to inherit them. Without them everything works,
by the plain path.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NoReturn, Protocol, TypeVar, runtime_checkable

import trio
from multiaddr import Multiaddr

from mycel.core.errors import StreamConnectionLost, StreamResetError, StreamWriteClosed

if TYPE_CHECKING:
    from mycel.core.identity import Identity
    from mycel.core.keys import PublicKey
    from mycel.core.peer_id import PeerId


class Direction(enum.Enum):
    """Who opened a connection or stream: we did (OUTBOUND) or the remote did (INBOUND)."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


class RawConnection(trio.abc.HalfCloseableStream):
    """A transport connection before security and multiplexing (TCP socket, memory pipe...)."""

    shares_listen_port: bool = False
    """True for a dial that left from a port we listen on (``TCP(reuse_port=True)``): it can meet the
    peer's dial from its listen port as one TCP connection (simultaneous open), where both ends start the
    handshake as initiators; the swarm then redials with :meth:`StreamTransport.dial_ephemeral`."""

    @property
    @abstractmethod
    def local_addr(self) -> Multiaddr:
        """Our end of the connection, as a multiaddr (e.g. ``/ip4/127.0.0.1/tcp/4001``)."""

    @property
    @abstractmethod
    def remote_addr(self) -> Multiaddr:
        """The other end of the connection, as a multiaddr."""

    @property
    @abstractmethod
    def direction(self) -> Direction:
        """Whether we dialed (OUTBOUND) or accepted (INBOUND) the connection."""


class SecureConnection(trio.abc.HalfCloseableStream):
    """An authenticated, encrypted byte stream to one remote peer."""

    buffer_bound: int = 0
    """Bytes this connection may hold in buffers of its own between reads (a partial record or frame, one
    read ahead): the host reserves them in the connection's resource scope once the peer is known, for the
    connection's life (a refusal closes the connection)."""

    @property
    @abstractmethod
    def local_peer(self) -> PeerId:
        """Our peer id (the key we authenticated with)."""

    @property
    @abstractmethod
    def remote_peer(self) -> PeerId:
        """The authenticated peer id of the other side."""

    @property
    @abstractmethod
    def remote_public_key(self) -> PublicKey:
        """The other side's public key, as proven in the handshake."""

    @property
    @abstractmethod
    def local_addr(self) -> Multiaddr:
        """Our end of the underlying raw connection."""

    @property
    @abstractmethod
    def remote_addr(self) -> Multiaddr:
        """The other end of the underlying raw connection."""

    @property
    @abstractmethod
    def direction(self) -> Direction:
        """Whether we dialed (OUTBOUND) or accepted (INBOUND) the connection."""

    @property
    @abstractmethod
    def security_protocol(self) -> str:
        """The protocol id of the security protocol, e.g. ``/noise``."""

    @property
    def early_muxer(self) -> str | None:
        """The muxer agreed inside the handshake (Noise extensions, TLS ALPN), if any.

        When set, the upgrader skips the second multistream-select round.
        """
        return None


class SecurityProtocol(ABC):
    """A security handshake (Noise, TLS, plaintext) over a :class:`RawConnection`."""

    protocol_id: str

    @abstractmethod
    async def secure_outbound(
        self,
        conn: RawConnection,
        identity: Identity,
        remote_peer: PeerId | None,
        muxer_ids: Sequence[str] = (),
    ) -> SecureConnection:
        """Run the initiator side. If ``remote_peer`` is given, the authenticated key must match it
        (raise :class:`~mycel.core.errors.PeerIdMismatch` otherwise). ``muxer_ids`` (preference
        order) may be offered for inlined muxer negotiation."""

    @abstractmethod
    async def secure_inbound(
        self,
        conn: RawConnection,
        identity: Identity,
        muxer_ids: Sequence[str] = (),
    ) -> SecureConnection:
        """Run the responder side."""


class MuxedStream(trio.abc.HalfCloseableStream):
    """One stream of a :class:`Connection`.

    ``send_eof`` half-closes our side; ``receive_some`` returns ``b""`` once the remote half-closed;
    ``reset`` abandons the stream in both directions (pending and later I/O raise StreamReset).
    """

    protocol: str | None = None
    """The protocol negotiated on the stream (set by the host once multistream-select agreed)."""

    @property
    @abstractmethod
    def stream_id(self) -> int:
        """The muxer's id of this stream on its connection (unique while the stream lives)."""

    @property
    @abstractmethod
    def direction(self) -> Direction:
        """OUTBOUND if we opened the stream, INBOUND if the remote did."""

    @property
    @abstractmethod
    def connection(self) -> Connection:
        """The connection this stream belongs to."""

    @abstractmethod
    async def reset(self) -> None:
        """Abandon the stream in both directions; the remote's reads and writes fail with a reset."""


@dataclass
class ConnectionStats:
    """Counters a connection keeps about itself (``Connection.stats``)."""

    opened_at: float = 0.0
    """When the connection started running (trio clock, seconds)."""
    streams_opened: int = 0
    """Outbound streams opened."""
    streams_accepted: int = 0
    """Inbound streams accepted."""
    bytes_sent: int = 0
    """Bytes handed to the secure channel or the QUIC connection."""
    bytes_received: int = 0
    """Bytes received from it."""
    extra: dict[str, object] = field(default_factory=dict)
    """Figures of one kind of connection (e.g. ``streams``, ``rtt``)."""


@dataclass(frozen=True)
class ConnectionLimit:
    """What a relay allows on a relayed connection (circuit relay v2's ``Limit``): ``duration``
    seconds and ``data`` bytes per direction before the relay cuts it; None: no limit of that kind."""

    duration: float | None = None
    data: int | None = None


class Connection(ABC):
    """A secured, multiplexed connection to one peer: what the swarm keeps.

    TCP+security+muxer and QUIC both produce this type. The owner must run :meth:`run` in a
    nursery for the connection to make progress; it returns when the connection is closed.
    """

    limit: ConnectionLimit | None = None
    """Set (by the relay transport) on a connection relayed under limits: the relay cuts it after
    ``limit.duration`` seconds or ``limit.data`` bytes. ``None`` for a direct connection (or a relay
    that announced no limit, as go treats it). Such a connection is *limited*: ``host.new_stream``
    refuses to open streams on it except for the protocols that opt in (identify, ping, DCUtR, or a
    call with ``allow_limited=True``), as go's ``WithAllowLimitedConn``."""

    @property
    def limited(self) -> bool:
        """True when the connection is relayed under limits (:attr:`limit` is set)."""
        return self.limit is not None

    @property
    @abstractmethod
    def local_peer(self) -> PeerId:
        """Our peer id."""

    @property
    @abstractmethod
    def remote_peer(self) -> PeerId:
        """The authenticated peer id of the other side."""

    @property
    @abstractmethod
    def remote_public_key(self) -> PublicKey:
        """The other side's public key, as proven in the handshake."""

    @property
    @abstractmethod
    def local_addr(self) -> Multiaddr:
        """Our end of the connection, as a multiaddr."""

    @property
    @abstractmethod
    def remote_addr(self) -> Multiaddr:
        """The other end of the connection, as a multiaddr (what we dialed, or where it came from)."""

    @property
    @abstractmethod
    def direction(self) -> Direction:
        """Whether we dialed (OUTBOUND) or accepted (INBOUND) the connection."""

    @property
    @abstractmethod
    def security_protocol(self) -> str:
        """The security protocol id negotiated (``/noise``, ``/tls/1.0.0``; QUIC reports ``/tls/1.0.0``)."""

    @property
    @abstractmethod
    def muxer_protocol(self) -> str:
        """The muxer protocol id negotiated (``/yamux/1.0.0``, ``/mplex/6.7.0``, ``/quic-v1``)."""

    @property
    @abstractmethod
    def is_closed(self) -> bool:
        """True once the connection is closed (by either side or by an error)."""

    @property
    def close_reason(self) -> str:
        """Why the connection closed (``""`` while open, or if the implementation does not say)."""
        return ""

    @property
    @abstractmethod
    def stats(self) -> ConnectionStats:
        """Counters of the connection (opened at, streams, bytes; ``extra`` per kind)."""

    @abstractmethod
    async def run(self) -> None:
        """Drive I/O until the connection closes (remote close, error, or :meth:`aclose`)."""

    @abstractmethod
    async def open_stream(self) -> MuxedStream:
        """Open a new outbound stream. Raises ConnectionClosed if the connection is closed."""

    @abstractmethod
    async def accept_stream(self) -> MuxedStream:
        """Wait for the next inbound stream. Raises ConnectionClosed once the connection is closed."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close the connection and every stream on it. Idempotent."""


ConnT = TypeVar("ConnT", bound=Connection)


class MuxedStreamBase(MuxedStream, Generic[ConnT]):
    """A starting point for :class:`MuxedStream` implementations (the muxer driver's and QUIC's streams
    use it): the state every stream keeps, the common properties and ``repr``, and the order in which a
    stream says why it cannot be used.

    That order, the same for every stream: closed by us (``trio.ClosedResourceError``), then, for
    writes, half-closed by us (:class:`~mycel.core.errors.StreamWriteClosed`), then reset by either
    side (:class:`~mycel.core.errors.StreamResetError`), then its connection gone
    (:class:`~mycel.core.errors.StreamConnectionLost`).

    Subclasses write ``receive_some`` and ``send_all`` themselves. On every call they test the flags
    and their own connection's state inline, in one condition, and only when it holds call
    :meth:`_raise_unreadable` / :meth:`_raise_unwritable` to raise the right error: a shared method
    run on every call, reading ``connection.is_closed``, measured 30 ns more per ``send_all``.
    """

    __slots__ = (
        "_conn",
        "_direction",
        "_eof",
        "_reset",
        "_write_closed",
        "_closed",
        "_receiving",
        "_sending",
        "protocol",
    )

    _kind: ClassVar[str] = "MuxedStream"  # the name in repr()

    def __init__(self, conn: ConnT, direction: Direction) -> None:
        self._conn = conn
        self._direction = direction
        self._eof = False  # the remote half-closed
        self._reset = False  # reset by either side: both directions fail
        self._write_closed = False  # we half-closed (sent FIN)
        self._closed = False  # aclose() was called
        # a task is in receive_some / in a sending call: a second one gets BusyResourceError
        self._receiving = False
        self._sending = False
        self.protocol: str | None = None

    @property
    def direction(self) -> Direction:
        return self._direction

    @property
    def connection(self) -> ConnT:
        return self._conn

    def __repr__(self) -> str:
        return f"<{self._kind} {self.stream_id} {self._direction.value} of {self._conn!r}>"

    def _connection_lost(self) -> StreamConnectionLost:
        """The error for I/O on a stream whose connection is gone."""
        return StreamConnectionLost(f"connection closed: {self._conn.close_reason}")

    def _raise_unreadable(self) -> NoReturn:
        """Raise why the stream cannot be read, in the order above. Call it only when there is a
        reason: the stream is closed or reset, or (with nothing buffered) its connection is gone."""
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        if self._reset:
            raise StreamResetError(f"stream {self.stream_id} was reset")
        raise self._connection_lost()

    def _raise_unwritable(self) -> NoReturn:
        """Raise why no more data may be sent, in the order above. Call it only when there is a
        reason: closed, half-closed by us, reset, or the connection gone."""
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        if self._write_closed:
            raise StreamWriteClosed(f"stream {self.stream_id} was closed for writing")
        if self._reset:
            raise StreamResetError(f"stream {self.stream_id} was reset")
        raise self._connection_lost()

    def _check_eof_due(self) -> bool:
        """The checks of ``send_eof``: False if our side is already half-closed (a repeated
        ``send_eof`` does nothing), True if the FIN is to be sent now; raises like
        :meth:`_raise_unwritable` otherwise."""
        if self._write_closed and not self._closed:
            return False
        if self._closed or self._reset or self._conn.is_closed:
            self._raise_unwritable()
        return True


class StreamMuxer(ABC):
    """A stream multiplexer (yamux, mplex) that turns a SecureConnection into a Connection."""

    protocol_id: str

    @abstractmethod
    def new_connection(self, secure: SecureConnection) -> Connection:
        """Wrap ``secure``. The returned connection does nothing until its ``run()`` is started."""


C = TypeVar("C")


class Listener(ABC, Generic[C]):
    """What a transport listens with: yields connections and reports its real addresses."""

    @property
    @abstractmethod
    def addrs(self) -> list[Multiaddr]:
        """The addresses actually bound (port 0 resolved to the real port)."""

    @abstractmethod
    async def accept(self) -> C:
        """Wait for the next inbound connection; ClosedResourceError once the listener is closed."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop listening and release the address. Idempotent."""


class Transport(ABC):
    """Base of every transport."""

    name: str

    @abstractmethod
    def can_dial(self, addr: Multiaddr) -> bool:
        """Whether this transport can dial ``addr`` (it looks only at the address)."""

    @abstractmethod
    def can_listen(self, addr: Multiaddr) -> bool:
        """Whether this transport can listen on ``addr``."""


class StreamTransport(Transport):
    """A transport that yields raw byte streams needing security + muxer (TCP, memory, websocket)."""

    @abstractmethod
    async def dial(self, addr: Multiaddr) -> RawConnection:
        """Open a raw connection to ``addr``; raises DialError or OSError on failure."""

    async def dial_ephemeral(self, addr: Multiaddr) -> RawConnection:
        """Like :meth:`dial`, never leaving from a listen port (the retry after a simultaneous open);
        the same as :meth:`dial` for transports that do not share listen ports."""
        return await self.dial(addr)

    @abstractmethod
    async def open_listener(self, addr: Multiaddr) -> Listener[RawConnection]:
        """Listen on ``addr`` (port 0 picks one); the listener reports the bound addresses."""


class ConnectionTransport(Transport):
    """A transport that yields secured, multiplexed connections itself (QUIC)."""

    @abstractmethod
    async def dial(self, addr: Multiaddr, identity: Identity, remote_peer: PeerId | None) -> Connection:
        """Open a secured, multiplexed connection to ``addr``, authenticating ``remote_peer`` when given (PeerIdMismatch otherwise)."""

    @abstractmethod
    async def open_listener(self, addr: Multiaddr, identity: Identity) -> Listener[Connection]:
        """Listen on ``addr`` as ``identity`` (port 0 picks one)."""


# ---- capabilities: optional fast paths ------------------------------------------------------------
# Declared, not probed: a layer offers one by having the members (structural typing; inheriting the
# Protocol is optional). Users check ``isinstance(x, Capability)`` once, when they set up (a
# connection, a loop), never per frame. Without the capability the plain path (receive_some,
# send_all, accept_stream) is taken.

if TYPE_CHECKING:
    from abc import ABCMeta as _ProtocolMeta
else:
    _ProtocolMeta = type(Protocol)


class _CapabilityMeta(_ProtocolMeta):
    """``isinstance(x, Capability)`` as a few ``hasattr`` calls (0.4 µs): typing's runtime-protocol
    check costs 3-5 µs on Python 3.11, and a connection makes about eight of them per side."""

    def __instancecheck__(cls, obj: object) -> bool:
        names: tuple[str, ...] | None = cls.__dict__.get("_abc_capability_members")
        if names is None:
            declared = set(getattr(cls, "__annotations__", {})) | set(vars(cls))
            names = tuple(sorted(n for n in declared if not n.startswith("_")))
            # (an ``_abc_`` name: typing does not count it as a member of the Protocol)
            type.__setattr__(cls, "_abc_capability_members", names)
        return all(hasattr(obj, name) for name in names)


@runtime_checkable
class FrameReceiver(Protocol, metaclass=_CapabilityMeta):
    """A secure channel that hands out its decrypted records one by one (Noise does).

    What a custom security layer gains: the muxer driver's reader feeds each record to the muxer core
    as it is, instead of asking ``receive_some`` for one joined buffer per read (no large buffer is
    built and freed per read of bulk data).
    """

    async def receive_frames(self, max_bytes: int) -> Sequence[bytes | bytearray]:
        """Up to about ``max_bytes`` of plaintext, one item per record, never joined; empty at EOF.

        Fails like ``receive_some`` does.
        """
        ...


@runtime_checkable
class ChunkSender(Protocol, metaclass=_CapabilityMeta):
    """A byte stream that sends several buffers as one, without joining them first (Noise does).

    What a custom security layer gains: with a :class:`FrameQueue` muxer core, the muxer driver hands
    over its frame headers and payloads as they are, and the layer can encrypt payloads straight from
    the buffers they were written in (no joined copy of the output per write).
    """

    async def send_chunks(self, chunks: Sequence[bytes | bytearray | memoryview]) -> None:
        """Send the concatenation of ``chunks``, like ``send_all`` of the joined bytes would."""
        ...


@runtime_checkable
class RecordSized(Protocol, metaclass=_CapabilityMeta):
    """A secure channel that seals plaintext in records of at most :attr:`record_size` bytes.

    What a custom security layer gains: a :class:`FrameSizeAdjustable` muxer cuts its frames no
    larger than one record, so each frame's payload is sealed on its own and reaches the remote reader
    whole (with a :class:`FrameReceiver`, one record = one frame, never reassembled).
    """

    @property
    def record_size(self) -> int:
        """The most plaintext one record carries (Noise: 65519 bytes)."""
        ...


@runtime_checkable
class Corkable(Protocol, metaclass=_CapabilityMeta):
    """A raw connection that can hold small writes back until it must wait for the peer (TCP does).

    What a custom transport gains: the swarm corks it for the connection upgrade, so the listener's
    multistream-select header, its answer and the first security message leave in one write (one
    wake-up of the peer) instead of three.
    """

    def cork(self) -> None:
        """Hold writes back until a read would wait, or :meth:`uncork`."""
        ...

    async def uncork(self) -> None:
        """Send what is held back and stop holding writes back."""
        ...


@runtime_checkable
class InboundStreamPush(Protocol, metaclass=_CapabilityMeta):
    """A connection that hands each inbound stream to a callback as it opens (the muxer driver and
    QUIC do), instead of only queueing it for :meth:`Connection.accept_stream`.

    What a custom connection gains: the swarm starts the stream's handler from the callback, with no
    accept task per connection and no hop through it for every stream.
    """

    def set_inbound_handler(self, handler: Callable[[MuxedStream], None] | None) -> None:
        """From now on call ``handler(stream)`` for each inbound stream (``None``: queue them again).

        ``handler`` runs inside the connection's own task and must not block; if it raises, the
        stream is reset. Streams queued before the call are handed over at once.
        """
        ...


@runtime_checkable
class HostBound(Protocol, metaclass=_CapabilityMeta):
    """A transport that works through the host it belongs to (the circuit relay transport dials the
    relay with the host and serves the relay's stop streams).

    The host calls :meth:`attach_host` once, on its own copy of the transport, before anything is
    dialed or listened on.
    """

    def attach_host(self, host: Any) -> None:
        """Remember ``host`` (a :class:`mycel.host.Host`) and install what the transport serves."""
        ...


# Capabilities of sans-IO muxer cores (see mycel.muxers.events.MuxerCore); a core does not import
# this module (no trio in cores): having the members is enough.


@runtime_checkable
class FrameQueue(Protocol, metaclass=_CapabilityMeta):
    """A muxer core that hands its queued output over as separate chunks (yamux does).

    What a custom core gains: with a :class:`ChunkSender` below, frame payloads go to the secure
    channel as the buffers they are, never copied into one joined output buffer.
    """

    def frames_to_send(self) -> Sequence[bytes | bytearray | memoryview]:
        """Take every queued chunk (frame headers and payloads, in wire order), like ``data_to_send``
        without the join."""
        ...


@runtime_checkable
class FrameSizeAdjustable(Protocol, metaclass=_CapabilityMeta):
    """A muxer core whose largest frame payload may be lowered before it starts (yamux, mplex).

    What a custom core gains: the driver lowers ``max_frame`` to a :class:`RecordSized` channel's
    record size, so frames and records line up.
    """

    max_frame: int


@runtime_checkable
class RttReporter(Protocol, metaclass=_CapabilityMeta):
    """A muxer core that measures the connection's round-trip time (yamux, with its pings).

    What a custom core gains: the measurement shows in ``Connection.stats.extra["rtt"]`` (seconds).
    """

    @property
    def rtt(self) -> float | None:
        """The last measured round-trip time, or ``None`` before the first measurement."""
        ...
