"""Services: protocols that live inside a host (identify, ping, gossipsub, kad, ...).

The contract, in the order a host keeps it:

* No state is shared between hosts: the first host started from a config runs the service objects
  in it; every other host (a shared config, ``config.replace()``) runs its own copy, made with
  :meth:`Service.clone` (a deep copy by default) from a pristine copy taken before the first host
  started. ``host.service(Kind)`` always gives the one a host runs.
* ``handlers()`` are installed, then ``run(host)`` is started with ``nursery.start`` in a nursery of
  the service's own; the host is entered once every service has called ``task_status.started()``.
* The **notification hooks** below are plain synchronous calls, made by the host in a fixed order,
  each exactly once per change (never through the lossy event channel):

  - ``peer_connected(host, peer)``: the first connection to ``peer`` opened;
  - ``connection_opened(host, conn)``: every connection, after ``peer_connected`` for the first one;
  - ``peer_protocols_changed(host, peer, added, removed)``: identify (or identify push) told us of a
    connected peer's protocols; the first call after ``peer_connected`` reports all of them as
    ``added``; later calls only real changes. No call once the peer is disconnected;
  - ``connection_closed(host, conn, remaining)``: every connection, with the number of connections to
    that peer still open;
  - ``peer_disconnected(host, peer)``: the last connection to ``peer`` closed (after its
    ``connection_closed``);
  - ``local_protocols_changed(host, added, removed)``: a stream handler of this host was added or
    removed;
  - ``local_addrs_changed(host)``: the addresses this host advertises changed;
  - ``peer_found(host, event)``: discovery reported a peer (:meth:`~mycel.host.Host.peer_found`);
  - ``reachability_changed(host, reachability, addrs)``: AutoNAT's verdict on whether others can dial
    us changed (public / private / unknown).

  Hooks must not block: start work with ``host.spawn`` (it runs in the service's own nursery).
* **Isolation**: an exception raised by a hook, by ``run`` or by a task the service spawned is logged
  at ERROR with its traceback and reported as a :class:`~mycel.core.events.ServiceFailed` event; the
  service is then stopped (its tasks cancelled, its handlers removed, no more hooks) or, when
  ``restart_on_failure`` is set, started again (at most ``max_restarts`` times). The host and the
  other services go on. An exception raised by a stream handler only fails that stream (see
  ``Host.set_stream_handler``).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

import trio
from multiaddr import Multiaddr

from mycel.core.abc import Connection, MuxedStream
from mycel.core.errors import ServiceNotRunning

if TYPE_CHECKING:
    from mycel.core.addrs import Reachability
    from mycel.core.events import Event, PeerFound
    from mycel.core.identity import Identity
    from mycel.core.peer_id import PeerId
    from mycel.host import HostConfig
    from mycel.network.connmgr import ConnManager
    from mycel.network.peerstore import PeerStore
    from mycel.network.resources import ResourceManager

StreamHandler = Callable[[MuxedStream], Awaitable[None]]
"""``async def handler(stream)``: serves one inbound stream; the host closes the stream afterwards."""


class ServiceHost(Protocol):
    """What a service may use of the host it runs in (a narrow view of :class:`~mycel.host.Host`).

    The object services receive also ties the work they start to the service: tasks started with
    :meth:`spawn` run in the service's own nursery, and their failure stops that service only.
    """

    @property
    def peer_id(self) -> PeerId:
        """The host's peer id."""

    @property
    def identity(self) -> Identity:
        """The host's key pair and peer id."""

    @property
    def config(self) -> HostConfig:
        """The configuration the host was started with."""

    @property
    def peerstore(self) -> PeerStore:
        """What the host knows about other peers (addresses, keys, protocols, ...)."""

    @property
    def protocols(self) -> list[str]:
        """The protocols the host serves (its stream handlers)."""

    @property
    def addrs(self) -> list[Multiaddr]:
        """Addresses others can dial the host on, each ending in ``/p2p/<its id>``."""

    @property
    def advertised_addrs(self) -> list[Multiaddr]:
        """The host's addresses without ``/p2p``, as identify announces them."""

    @property
    def listen_addrs(self) -> list[Multiaddr]:
        """The bound listen addresses (port 0 resolved, unspecified ones not expanded), without ``/p2p``."""

    @property
    def reachability(self) -> Reachability:
        """Whether others can dial us (AutoNAT's last verdict)."""

    def set_reachability(self, reachability: Reachability, addrs: Sequence[Multiaddr] = ()) -> None:
        """Record AutoNAT's verdict; on a change every service hears ``reachability_changed``."""

    def record_observed_addr(self, conn: Connection, observed: Multiaddr) -> None:
        """The peer on ``conn`` sees us as ``observed`` (identify reports it)."""

    def set_mapped_addrs(self, source: str, addrs: Sequence[Multiaddr]) -> None:
        """Advertise the external addresses a NAT gateway maps to us (port mapping), replacing those
        ``source`` set before; services hear ``local_addrs_changed``."""

    async def dial_direct(self, peer: PeerId, addr: Multiaddr) -> Connection:
        """A new connection to ``peer`` at ``addr`` even if one is open (AutoNAT's dial-back)."""

    def connections(self, peer: PeerId | None = None) -> list[Connection]:
        """Open connections (to ``peer``, or all)."""

    def connected_peers(self) -> list[PeerId]:
        """Peers with at least one open connection."""

    async def connect(self, target: PeerId | str | Multiaddr, addrs: Sequence[Multiaddr | str] = ()) -> Connection:
        """Connect to a peer, reusing a live connection (see :meth:`~mycel.host.Host.connect`)."""

    async def new_stream(
        self,
        peer: PeerId | str | Multiaddr,
        protocols: Sequence[str] | str,
        *,
        lazy: bool | None = None,
        conn: Connection | None = None,
        allow_limited: bool = False,
    ) -> MuxedStream:
        """Open a stream to ``peer`` speaking the first of ``protocols`` it accepts (see
        :meth:`~mycel.host.Host.new_stream`; ``allow_limited`` lets it use a relayed connection).
        """

    def set_stream_handler(self, protocol_id: str, handler: StreamHandler, *, max_concurrent: int | None = None) -> None:
        """Serve ``protocol_id`` with ``handler`` (see :meth:`~mycel.host.Host.set_stream_handler`); the
        handler belongs to the service and is removed when it stops.
        """

    def remove_stream_handler(self, protocol_id: str) -> None:
        """Stop serving ``protocol_id`` (streams being handled go on)."""

    def update_peer_protocols(self, peer: PeerId, protocols: Sequence[str]) -> None:
        """Record ``peer``'s full protocol list and tell the services what changed (identify does)."""

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start ``fn(*args)`` in the service's own nursery; if it raises, that service fails (alone)."""

    def emit(self, event: Event) -> None:
        """Report ``event`` to the host's subscribers (never waits; a full queue drops it)."""

    @property
    def resources(self) -> ResourceManager:
        """The host's resource manager: reserve memory for queues with
        ``resources.service_scope(name, peer).reserve(n)`` (release it, and ``close()`` the scope)."""

    @property
    def connmgr(self) -> ConnManager:
        """The host's connection manager: ``tag_peer``/``protect`` the peers this service relies on."""

    def peer_found(self, peer: PeerId, addrs: Sequence[Multiaddr | str], source: str, ttl: float = 3600.0) -> None:
        """Report a peer that this (discovery) service found (see :meth:`~mycel.host.Host.peer_found`)."""


class Service:
    """Base class of services. Override what you need; every hook's default does nothing.

    Class attributes: ``restart_on_failure`` (default False: a failed service stays stopped),
    ``max_restarts`` (how many times a failed service is started again before it stays stopped) and
    ``restart_backoff`` (seconds before the first restart; doubled for each further one).
    """

    restart_on_failure: ClassVar[bool] = False
    max_restarts: ClassVar[int] = 3
    restart_backoff: ClassVar[float] = 0.5

    def clone(self) -> Self:
        """A fresh, not yet running copy for another host. The default deep-copies the object, which
        suits a service holding only its settings until it runs. Override it to share something
        across hosts (a store, a channel to the application)."""
        return copy.deepcopy(self)

    def handlers(self) -> Mapping[str, StreamHandler]:
        """Stream handlers to install before ``run`` starts: ``{protocol id: handler}``."""
        return {}

    async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The service's long-running part; call ``task_status.started()`` once ready.

        Returning early is fine (the default only signals readiness); the service stays installed.
        """
        task_status.started()

    def peer_connected(self, host: ServiceHost, peer: PeerId) -> None:
        """The first connection to ``peer`` opened."""

    def peer_disconnected(self, host: ServiceHost, peer: PeerId) -> None:
        """The last connection to ``peer`` closed."""

    def connection_opened(self, host: ServiceHost, conn: Connection) -> None:
        """A connection opened (every one, not only a peer's first)."""

    def connection_closed(self, host: ServiceHost, conn: Connection, remaining: int) -> None:
        """A connection closed; ``remaining`` connections to the same peer are still open."""

    def peer_protocols_changed(
        self, host: ServiceHost, peer: PeerId, added: frozenset[str], removed: frozenset[str]
    ) -> None:
        """A connected peer's protocols changed (identify, identify push)."""

    def local_protocols_changed(self, host: ServiceHost, added: frozenset[str], removed: frozenset[str]) -> None:
        """This host started or stopped serving protocols."""

    def local_addrs_changed(self, host: ServiceHost) -> None:
        """The addresses this host advertises changed."""

    def peer_found(self, host: ServiceHost, event: PeerFound) -> None:
        """Discovery reported a peer (its addresses are already in the peerstore)."""

    def reachability_changed(self, host: ServiceHost, reachability: Reachability, addrs: tuple[Multiaddr, ...]) -> None:
        """AutoNAT's verdict on whether others can dial us changed."""


class ServiceState:
    """Where a service is in its life: a plain record kept by the host (read-only for users)."""

    __slots__ = ("failures", "name", "running", "stopped_by_failure")

    def __init__(self, name: str) -> None:
        self.name = name
        self.running = False
        self.failures = 0
        self.stopped_by_failure = False

    def __repr__(self) -> str:
        return f"<ServiceState {self.name} running={self.running} failures={self.failures}>"


def not_running(service: object) -> ServiceNotRunning:
    """The error a service raises when used while not running in a host."""
    kind = type(service).__name__
    return ServiceNotRunning(
        f"this {kind} is not running in a host; each host runs its own copy: use host.service({kind})"
    )


__all__ = ["Service", "ServiceHost", "ServiceState", "StreamHandler", "not_running"]
