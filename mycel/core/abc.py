"""The small abstract classes a layer implements to plug into a host.

A user who wants a custom transport, security protocol or muxer implements exactly one of these.

Layering (see ARCHITECTURE.md)::

    StreamTransport.dial/accept  -> RawConnection        (bytes, addresses)
    SecurityProtocol.secure_*    -> SecureConnection     (+ authenticated remote peer)
    StreamMuxer.new_connection   -> Connection           (streams; same type QUIC hands out)
    Connection.open/accept_stream-> MuxedStream          (a trio HalfCloseableStream + reset())
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

import trio
from multiaddr import Multiaddr

if TYPE_CHECKING:
    from mycel.core.identity import Identity
    from mycel.core.keys import PublicKey
    from mycel.core.peer_id import PeerId


class Direction(enum.Enum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class RawConnection(trio.abc.HalfCloseableStream):
    """A transport connection before security and multiplexing (TCP socket, memory pipe...)."""

    @property
    @abstractmethod
    def local_addr(self) -> Multiaddr: ...

    @property
    @abstractmethod
    def remote_addr(self) -> Multiaddr: ...

    @property
    @abstractmethod
    def direction(self) -> Direction: ...


class SecureConnection(trio.abc.HalfCloseableStream):
    """An authenticated, encrypted byte stream to one remote peer."""

    @property
    @abstractmethod
    def local_peer(self) -> PeerId: ...

    @property
    @abstractmethod
    def remote_peer(self) -> PeerId: ...

    @property
    @abstractmethod
    def remote_public_key(self) -> PublicKey: ...

    @property
    @abstractmethod
    def local_addr(self) -> Multiaddr: ...

    @property
    @abstractmethod
    def remote_addr(self) -> Multiaddr: ...

    @property
    @abstractmethod
    def direction(self) -> Direction: ...

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

    @property
    @abstractmethod
    def stream_id(self) -> int: ...

    @property
    @abstractmethod
    def direction(self) -> Direction: ...

    @property
    @abstractmethod
    def connection(self) -> Connection: ...

    @abstractmethod
    async def reset(self) -> None: ...


@dataclass
class ConnectionStats:
    opened_at: float = 0.0
    streams_opened: int = 0
    streams_accepted: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    extra: dict[str, object] = field(default_factory=dict)


class Connection(ABC):
    """A secured, multiplexed connection to one peer: what the swarm keeps.

    TCP+security+muxer and QUIC both produce this type. The owner must run :meth:`run` in a
    nursery for the connection to make progress; it returns when the connection is closed.
    """

    @property
    @abstractmethod
    def local_peer(self) -> PeerId: ...

    @property
    @abstractmethod
    def remote_peer(self) -> PeerId: ...

    @property
    @abstractmethod
    def remote_public_key(self) -> PublicKey: ...

    @property
    @abstractmethod
    def local_addr(self) -> Multiaddr: ...

    @property
    @abstractmethod
    def remote_addr(self) -> Multiaddr: ...

    @property
    @abstractmethod
    def direction(self) -> Direction: ...

    @property
    @abstractmethod
    def security_protocol(self) -> str: ...

    @property
    @abstractmethod
    def muxer_protocol(self) -> str: ...

    @property
    @abstractmethod
    def is_closed(self) -> bool: ...

    @property
    @abstractmethod
    def stats(self) -> ConnectionStats: ...

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
    async def accept(self) -> C: ...

    @abstractmethod
    async def aclose(self) -> None: ...


class Transport(ABC):
    """Base of every transport."""

    name: str

    @abstractmethod
    def can_dial(self, addr: Multiaddr) -> bool: ...

    @abstractmethod
    def can_listen(self, addr: Multiaddr) -> bool: ...


class StreamTransport(Transport):
    """A transport that yields raw byte streams needing security + muxer (TCP, memory, websocket)."""

    @abstractmethod
    async def dial(self, addr: Multiaddr) -> RawConnection: ...

    @abstractmethod
    async def open_listener(self, addr: Multiaddr) -> Listener[RawConnection]: ...


class ConnectionTransport(Transport):
    """A transport that yields secured, multiplexed connections itself (QUIC)."""

    @abstractmethod
    async def dial(self, addr: Multiaddr, identity: Identity, remote_peer: PeerId | None) -> Connection: ...

    @abstractmethod
    async def open_listener(self, addr: Multiaddr, identity: Identity) -> Listener[Connection]: ...
