"""Events a host reports to applications (``host.subscribe()``).

The event channel is for applications and is lossy by design: each subscription has a bounded queue,
and when the subscriber falls behind, further events are dropped and counted
(``EventSubscription.dropped``, ``Host.dropped_events``). Services do not use it: they get the same
news through direct, reliable hooks (see :mod:`mycel.service`). Events are frozen values; a
``connection`` field is a handle to the connection, not a snapshot of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mycel.core.abc import Connection, Direction

if TYPE_CHECKING:
    from multiaddr import Multiaddr

    from mycel.core.addrs import Reachability
    from mycel.core.peer_id import PeerId
    from mycel.network.peerstore import PeerInfo


@dataclass(frozen=True)
class ConnectionOpened:
    """A connection (of any direction) was established and registered."""

    connection: Connection


@dataclass(frozen=True)
class ConnectionClosed:
    """A connection ended; ``remaining`` connections to the same peer are still open."""

    connection: Connection
    remaining: int = 0


@dataclass(frozen=True)
class PeerConnected:
    """The first connection to ``peer`` opened."""

    peer: PeerId


@dataclass(frozen=True)
class PeerDisconnected:
    """The last connection to ``peer`` closed."""

    peer: PeerId


@dataclass(frozen=True)
class PeerProtocolsChanged:
    """A connected peer's protocols changed (after identify or identify push)."""

    peer: PeerId
    added: frozenset[str]
    """Protocols the peer supports now and did not before."""
    removed: frozenset[str]
    """Protocols the peer no longer supports."""


@dataclass(frozen=True)
class LocalProtocolsChanged:
    """This host started (``added``) or stopped (``removed``) serving protocols."""

    added: frozenset[str]
    removed: frozenset[str]


@dataclass(frozen=True)
class StreamOpened:
    """A stream was negotiated, inbound (a handler runs) or outbound (``new_stream`` returned)."""

    peer: PeerId
    """The peer at the other end of the stream."""
    protocol: str
    """The negotiated protocol id."""
    direction: Direction
    """``INBOUND``: the peer opened it; ``OUTBOUND``: we did."""


@dataclass(frozen=True)
class StreamHandlerFailed:
    """A stream handler raised; the stream was reset. A bug in the handler is logged at ERROR with the
    traceback; a failure caused by the peer or the connection (a protocol violation, a reset) at INFO."""

    peer: PeerId
    """The peer that opened the stream."""
    protocol: str
    """The protocol id the handler was serving."""
    error: BaseException
    """What the handler raised."""


@dataclass(frozen=True)
class ServiceFailed:
    """A service's hook, ``run`` or spawned task raised; ``restarting`` tells what happens next."""

    service: str
    error: BaseException
    """What was raised."""
    restarting: bool


@dataclass(frozen=True)
class TaskFailed:
    """A task started with ``Host.spawn`` by the application raised (logged at ERROR)."""

    name: str
    """The task function's ``__qualname__`` (its ``repr`` if it has none)."""
    error: BaseException
    """What the task raised."""


@dataclass(frozen=True)
class PeerIdentified:
    """Identify (or identify push) completed for ``peer``; ``info`` is a frozen snapshot."""

    peer: PeerId
    info: PeerInfo


@dataclass(frozen=True)
class PeerFound:
    """A discovery source (mDNS, rendezvous, a bootstrap list, ...) reported ``peer`` at ``addrs``.

    Reported through :meth:`mycel.host.Host.peer_found`, which keeps the addresses in the peerstore
    (source ``DISCOVERY``) before emitting this event."""

    peer: PeerId
    addrs: tuple[Multiaddr, ...]
    """The addresses found (without ``/p2p``), in the order the source gave them."""
    source: str
    """Who found it: ``"mdns"``, ``"rendezvous"``, ``"bootstrap"``, or a name of the application's."""


@dataclass(frozen=True)
class ReachabilityChanged:
    """AutoNAT's verdict on whether others can dial us changed (``host.reachability``)."""

    reachability: Reachability
    addrs: tuple[Multiaddr, ...]
    """The addresses the verdict is about (for PUBLIC: the ones dialed back successfully)."""


@dataclass(frozen=True)
class ServiceEvent:
    """Base class of events that services report (gossipsub's drops and graylisting, ...)."""


Event = (
    ServiceEvent
    | ConnectionOpened
    | ConnectionClosed
    | PeerConnected
    | PeerDisconnected
    | PeerProtocolsChanged
    | LocalProtocolsChanged
    | StreamOpened
    | StreamHandlerFailed
    | ServiceFailed
    | TaskFailed
    | PeerIdentified
    | PeerFound
    | ReachabilityChanged
)
"""Any event a host emits."""

__all__ = [
    "ConnectionClosed",
    "ConnectionOpened",
    "Event",
    "LocalProtocolsChanged",
    "PeerConnected",
    "PeerDisconnected",
    "PeerFound",
    "PeerIdentified",
    "PeerProtocolsChanged",
    "ReachabilityChanged",
    "ServiceEvent",
    "ServiceFailed",
    "StreamHandlerFailed",
    "StreamOpened",
    "TaskFailed",
]
