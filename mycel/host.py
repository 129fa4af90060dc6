"""HostConfig + open_host(): the user's entry point.

A host is a swarm (transports, listeners, connections), stream handlers, a peerstore, and services.
Its lifecycle is one ``async with open_host(config) as host:`` block: on entry listeners are bound
and services running; on exit (or cancellation, at any point) everything is closed within
``HostConfig.shutdown_timeout`` and the host refuses new work with :class:`~mycel.core.errors.HostClosed`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import inspect
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio
from multiaddr import Multiaddr

from mycel import __version__
from mycel.core.abc import (
    Connection,
    Direction,
    HostBound,
    MuxedStream,
    SecurityProtocol,
    StreamMuxer,
    StreamTransport,
    Transport,
)
from mycel.core.addrs import (
    AddressPolicy,
    Reachability,
    as_multiaddr,
    expand_unspecified,
    split_peer_id,
    with_peer_id,
)
from mycel.core.errors import (
    ConfigError,
    ConnectionClosed as ConnectionClosedError,
    DialError,
    HostClosed,
    LimitedConnection,
    MycelError,
    NegotiationError,
    ProtocolViolation,
    StreamClosed,
    StreamReset,
    ResourceLimitExceeded,
    TransportError,
    reraise_unwrapped,
    single_exception,
)
from mycel.core.events import (
    ConnectionClosed,
    ConnectionOpened,
    Event,
    LocalProtocolsChanged,
    PeerConnected,
    PeerDisconnected,
    PeerFound,
    PeerProtocolsChanged,
    ReachabilityChanged,
    ServiceFailed,
    StreamHandlerFailed,
    StreamOpened,
    TaskFailed,
)
from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.multistream import select_inbound, select_lazy, select_outbound
from mycel.network.peerstore import ADDRESS_TTL, AddrSource, PeerStore, CONNECTED_TTL, PERMANENT_TTL
from mycel.network.connmgr import ConnManager, ConnManagerConfig
from mycel.network.observed import ObservedAddrs
from mycel.network.gater import ConnectionGater
from mycel.network.resources import (
    RefusalReporter,
    ResourceLimitReached,
    ResourceLimits,
    ResourceManager,
    StreamScope,
    charge_muxer_memory,
)
from mycel.metrics.config import MetricsConfig
from mycel.network.limits import SourceLimits
from mycel.muxers.trim import MemoryTrimmer
from mycel.network.swarm import Swarm
from mycel.network.upgrader import Upgrader
from mycel.routing import PeerNotFound, PeerRouting
from mycel.service import Service, ServiceHost, ServiceState, StreamHandler

log = logging.getLogger("mycel.host")

S = TypeVar("S", bound=Service)

EVENT_QUEUE_SIZE = 256  # per subscriber; when full, further events are dropped and counted
EXPIRY_INTERVAL = 1.0
"""Seconds between two peerstore expiry passes at least (a disconnected peer with nothing worth keeping
is forgotten within this)."""
PARSED_ADDRS = 256  # multiaddr strings whose parse connect() remembers; at the bound the memo is cleared
DEFAULT_HANDLER_CONCURRENCY = 1024  # inbound streams per protocol being handled at once; beyond: reset
MAX_NEGOTIATING_STREAMS = 128  # inbound streams per connection in negotiation (rust's default); beyond: reset
# protocols new_stream opens on a limited (relayed) connection without allow_limited=True: the ones go
# opens with WithAllowLimitedConn (identify, identify push, ping, DCUtR)
LIMITED_CONN_PROTOCOLS = frozenset({"/ipfs/id/1.0.0", "/ipfs/id/push/1.0.0", "/ipfs/ping/1.0.0", "/libp2p/dcutr"})

# Errors a stream handler raises because of its peer or its connection (logged at INFO, no traceback);
# anything else a handler raises is a bug in the handler (logged at ERROR with the traceback).
_PEER_ERRORS = (
    ProtocolViolation,
    StreamReset,
    StreamClosed,
    ConnectionClosedError,
    NegotiationError,
    TransportError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
)


def _default_transports() -> list[Transport]:
    """TCP, and QUIC (/quic-v1) when aioquic is installed: the two transports go-libp2p dials by default."""
    from mycel.transports.tcp import TCP

    try:
        from mycel.transports.quic import QUIC
    except ImportError:  # aioquic missing: a TCP-only host
        return [TCP()]
    return [TCP(), QUIC()]


def _default_security() -> list[SecurityProtocol]:
    """Noise, then TLS 1.3: the two security protocols every go, rust and js node speaks."""
    from mycel.security.noise import Noise
    from mycel.security.tls import TLS

    return [Noise(), TLS()]


def _default_muxers() -> list[StreamMuxer]:
    """Yamux, then mplex (for older peers)."""
    from mycel.muxers.mplex import Mplex
    from mycel.muxers.yamux import Yamux

    return [Yamux(), Mplex()]


def _default_services() -> list[Service]:
    """Identify (with push) and ping."""
    from mycel.protocols.identify import Identify
    from mycel.protocols.ping import Ping

    return [Identify(), Ping()]


def _check_items(name: str, items: object, kind: type, example: str) -> None:
    """Fail with one line naming the field when ``items`` is not a sequence of ``kind`` instances."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise ConfigError(f"HostConfig.{name}: expected a list of {kind.__name__} objects, got {items!r}")
    for i, item in enumerate(items):
        if isinstance(item, type):
            raise ConfigError(
                f"HostConfig.{name}[{i}]: got the class {item.__name__}; pass an instance, e.g. {example}"
            )
        if not isinstance(item, kind):
            raise ConfigError(f"HostConfig.{name}[{i}]: expected a {kind.__name__}, got {type(item).__name__}")


def _check_bootstrap(config: HostConfig) -> None:
    """The bootstrap fields: addresses naming their peer, a positive minimum, sane backoff, parseable DNS servers."""
    entries = config.bootstrap
    if isinstance(entries, (str, bytes, Multiaddr)) or not isinstance(entries, Sequence):
        raise ConfigError(f"HostConfig.bootstrap: expected a list of multiaddrs, got {entries!r}")
    for i, addr in enumerate(entries):
        try:
            _, peer = split_peer_id(as_multiaddr(addr))
        except Exception as exc:
            raise ConfigError(f"HostConfig.bootstrap[{i}]: {addr!r} is not a multiaddr ({exc})") from None
        if peer is None:
            raise ConfigError(
                f"HostConfig.bootstrap[{i}]: {addr!r} does not name its peer; end it in /p2p/<peer id> "
                "(e.g. /ip4/1.2.3.4/tcp/4001/p2p/12D3KooW... or /dnsaddr/example.com/p2p/12D3KooW...)"
            )
    if not isinstance(config.bootstrap_min_peers, int) or config.bootstrap_min_peers < 1:
        raise ConfigError(f"HostConfig.bootstrap_min_peers: must be a positive integer, got {config.bootstrap_min_peers!r}")
    base, cap = config.bootstrap_backoff, config.bootstrap_backoff_max
    for name, value in (("bootstrap_backoff", base), ("bootstrap_backoff_max", cap)):
        if not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ConfigError(f"HostConfig.{name}: must be a positive number of seconds, got {value!r}")
    if cap < base:
        raise ConfigError(f"HostConfig.bootstrap_backoff_max ({cap}) is below bootstrap_backoff ({base})")
    servers = config.dns_nameservers
    if isinstance(servers, (str, bytes)) or not isinstance(servers, Sequence):
        raise ConfigError(f"HostConfig.dns_nameservers: expected a list of addresses, got {servers!r}")
    if servers:
        from mycel.discovery.dnsaddr import parse_nameserver

        for i, server in enumerate(servers):
            try:
                parse_nameserver(server)
            except (ValueError, TypeError, AttributeError):
                raise ConfigError(
                    f"HostConfig.dns_nameservers[{i}]: {server!r} is not an IP address with an optional port "
                    "(e.g. 127.0.0.1:5353 or [::1]:53)"
                ) from None


def _with_bootstrap(config: HostConfig) -> list[Service]:
    """The services a host runs: the config's, plus a Bootstrap service when ``config.bootstrap`` is set
    and the config lists none."""
    services = list(config.services)
    if config.metrics is not None:
        from mycel.metrics.service import Metrics

        if not any(isinstance(s, Metrics) for s in services):
            services.append(Metrics(config.metrics))
    if config.bootstrap:
        from mycel.discovery.bootstrap import Bootstrap

        if not any(isinstance(s, Bootstrap) for s in services):
            services.append(Bootstrap())
    return services


@dataclass(frozen=True)
class HostConfig:
    """Everything a host is made of; share it, copy it with :meth:`replace`.

    No state is shared between hosts: the first host started from a config uses the transport,
    security, muxer and service objects in it; every other host uses its own copies (``copy.deepcopy``;
    ``Service.clone`` for services), made from copies put aside before the first host started. So one
    config can start many hosts. Something hosts must share (a simulated network) returns itself
    from ``__deepcopy__``, as :class:`~mycel.transports.memory.MemoryNetwork` does.
    Order in ``security`` and ``muxers`` is preference order. Plaintext security is never enabled
    unless it is listed in ``security`` by the user. Wrong types fail here, naming the field.
    """

    identity: Identity = field(default_factory=Identity.generate)
    """The host's key pair and peer id (``Identity.generate()``, ``Identity.load_or_create(path)``)."""
    transports: Sequence[Transport] = field(default_factory=_default_transports)
    """Transports to dial and listen with (default: TCP and QUIC)."""
    security: Sequence[SecurityProtocol] = field(default_factory=_default_security)
    """Security protocols for stream transports, in preference order (default: Noise, TLS)."""
    muxers: Sequence[StreamMuxer] = field(default_factory=_default_muxers)
    """Stream muxers for stream transports, in preference order (default: yamux, mplex)."""
    listen: Sequence[str | Multiaddr] = ()
    """Addresses to listen on when the host starts (e.g. ``"/ip4/0.0.0.0/tcp/4001"``)."""
    services: Sequence[Service] = field(default_factory=_default_services)
    """Services each host runs its own copy of (default: identify, ping)."""
    agent_version: str = f"mycel/{__version__}"
    """Our agent version, as identify reports it."""
    protocol_version: str = "ipfs/0.1.0"
    """Our protocol version, as identify reports it."""
    handshake_timeout: float = 15.0
    """Seconds a connection has to complete security and muxer negotiation."""
    negotiate_timeout: float = 10.0
    """Seconds a stream has to agree on a protocol (multistream-select)."""
    max_pending_inbound_handshakes: int = 64
    """Inbound connections in their handshake at once; beyond, the one stalled longest (no stage finished
    for ``source_limits.stall_after`` seconds) is dropped for the newcomer, or the newcomer is closed."""
    source_limits: SourceLimits = field(default_factory=SourceLimits)
    """Per-source limits on inbound handshakes (pending and rate per IPv4 /32, IPv6 /56 and /48, go's
    defaults); loopback is exempt unless ``SourceLimits(limit_loopback=True)``."""
    handshake_stage_timeout: float = 5.0
    """Seconds each stage of an inbound handshake (security selection, security handshake, muxer
    selection) may take, within ``handshake_timeout`` for the whole."""
    handler_concurrency: int = DEFAULT_HANDLER_CONCURRENCY
    """Default bound of inbound streams per protocol handled at once; beyond, new ones are reset."""
    max_negotiating_streams: int = MAX_NEGOTIATING_STREAMS
    """Inbound streams of one connection still choosing their protocol at once; beyond, new ones are
    reset (a peer opening streams it never negotiates holds at most this many tasks and timers)."""
    dial_tier_delay: float | None = None
    """Head start of QUIC addresses over TCP when a peer has both; None: 30 ms for loopback/private
    addresses, 250 ms for public ones (go-libp2p's figures). The next tier starts early when all fail."""
    shutdown_timeout: float = 2.0
    """Seconds allowed for a graceful close (listeners, goodbyes to peers) before everything is cancelled."""
    event_queue_size: int = EVENT_QUEUE_SIZE
    """Default queue bound of ``host.subscribe()``; a full queue drops (and counts) further events."""
    discovery_connect: int = 8
    """Connect to peers that discovery reports (:meth:`Host.peer_found`) while fewer than this many peers
    are connected, with at most this many such dials at once; 0 only records them in the peerstore."""
    resources: ResourceLimits = field(default_factory=ResourceLimits.autoscale)
    """Limits of the resource manager (``host.resources``): connections, streams, memory and file
    descriptors per scope (system, transient, peer, protocol, service, ...), and the allowlist. Default:
    go-libp2p's figures scaled to this machine; ``ResourceLimits.unlimited()`` for none."""
    connmgr: ConnManagerConfig = field(default_factory=ConnManagerConfig)
    """Watermarks of the connection manager (``host.connmgr``): above ``high`` connections, the least
    valuable unprotected peers past their grace period are disconnected down to ``low``."""
    gater: ConnectionGater | None = None
    """A :class:`~mycel.network.gater.ConnectionGater` asked at each stage of every connection."""
    address_policy: AddressPolicy = field(default_factory=AddressPolicy)
    """How addresses are classified (``public_ranges`` declares test ranges public, e.g. 127.0.0.0/8 or
    198.18.0.0/15) and how many distinct observers confirm an observed address (go's 4)."""
    bootstrap: Sequence[str | Multiaddr] = ()
    """Peers to connect to on start and whenever fewer than ``bootstrap_min_peers`` are connected:
    multiaddrs ending in ``/p2p/<id>``, ``/dnsaddr/<domain>/p2p/<id>`` ones resolved through DNS TXT
    records. Non-empty, it adds a :class:`~mycel.discovery.Bootstrap` service (unless ``services`` lists
    one); a DHT with no list of its own uses these. go's public list: ``mycel.discovery.IPFS_BOOTSTRAP_PEERS``."""
    bootstrap_min_peers: int = 4
    """Below this many connected peers, bootstrap peers are dialed again (go's ``MinPeerThreshold``)."""
    bootstrap_backoff: float = 1.0
    """Seconds before a failed bootstrap dial is tried again; doubled per failure, jittered."""
    bootstrap_backoff_max: float = 300.0
    """The longest pause between bootstrap tries or rounds, in seconds."""
    dns_nameservers: Sequence[str] = ()
    """DNS servers (``"ip"`` or ``"ip:port"``, ``"[ip6]:port"``) for ``/dnsaddr`` resolution; empty: the
    system's (``/etc/resolv.conf``)."""
    metrics: MetricsConfig | None = None
    """Prometheus metrics (the ``metrics`` extra): a :class:`~mycel.metrics.MetricsConfig` adds a
    :class:`~mycel.metrics.Metrics` service (unless ``services`` lists one) with a registry of this
    host's own and an HTTP exporter on 127.0.0.1. None (the default): no metrics."""

    def __post_init__(self) -> None:
        if not isinstance(self.identity, Identity):
            hint = " (load one with Identity.load_or_create(path))" if isinstance(self.identity, (str, bytes)) else ""
            raise ConfigError(f"HostConfig.identity: expected an Identity, got {type(self.identity).__name__}{hint}")
        _check_items("transports", self.transports, Transport, "TCP()")
        _check_items("security", self.security, SecurityProtocol, "Noise()")
        _check_items("muxers", self.muxers, StreamMuxer, "Yamux()")
        _check_items("services", self.services, Service, "Ping()")
        if isinstance(self.listen, (str, bytes, Multiaddr)) or not isinstance(self.listen, Sequence):
            raise ConfigError(f"HostConfig.listen: expected a list of addresses, got {self.listen!r}")
        if not self.transports:
            raise ConfigError("HostConfig.transports: at least one transport is needed")
        if any(isinstance(t, StreamTransport) for t in self.transports):
            if not self.security:
                raise ConfigError("HostConfig.security: a stream transport needs at least one security protocol")
            if not self.muxers:
                raise ConfigError("HostConfig.muxers: a stream transport needs at least one stream muxer")
        for name, items in (("security", self.security), ("muxers", self.muxers)):
            ids = [x.protocol_id for x in items]
            if len(set(ids)) != len(ids):
                raise ConfigError(f"HostConfig.{name}: duplicate protocol in {ids}")
        for i, addr in enumerate(self.listen):
            try:
                as_multiaddr(addr)
            except Exception as exc:
                raise ConfigError(f"HostConfig.listen[{i}]: {addr!r} is not a multiaddr ({exc})") from None
        if not isinstance(self.source_limits, SourceLimits):
            raise ConfigError(f"HostConfig.source_limits: expected SourceLimits, got {type(self.source_limits).__name__}")
        for name in ("handshake_timeout", "handshake_stage_timeout", "negotiate_timeout", "shutdown_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"HostConfig.{name}: must be a positive number of seconds, got {value!r}")
        for name in (
            "max_pending_inbound_handshakes",
            "handler_concurrency",
            "event_queue_size",
            "max_negotiating_streams",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"HostConfig.{name}: must be a positive integer, got {value!r}")
        if not isinstance(self.discovery_connect, int) or self.discovery_connect < 0:
            raise ConfigError(f"HostConfig.discovery_connect: must be an integer >= 0, got {self.discovery_connect!r}")
        if not isinstance(self.resources, ResourceLimits):
            raise ConfigError(f"HostConfig.resources: expected ResourceLimits, got {type(self.resources).__name__}")
        if not isinstance(self.connmgr, ConnManagerConfig):
            raise ConfigError(f"HostConfig.connmgr: expected ConnManagerConfig, got {type(self.connmgr).__name__}")
        if not isinstance(self.address_policy, AddressPolicy):
            raise ConfigError(f"HostConfig.address_policy: expected AddressPolicy, got {type(self.address_policy).__name__}")
        if self.metrics is not None and not isinstance(self.metrics, MetricsConfig):
            raise ConfigError(f"HostConfig.metrics: expected MetricsConfig or None, got {type(self.metrics).__name__}")
        if self.gater is not None and not isinstance(self.gater, ConnectionGater):
            raise ConfigError(f"HostConfig.gater: {type(self.gater).__name__} is not a ConnectionGater")
        _check_bootstrap(self)
        if self.dial_tier_delay is not None and self.dial_tier_delay < 0:
            raise ConfigError("HostConfig.dial_tier_delay: must not be negative")
        for name, text in (("agent_version", self.agent_version), ("protocol_version", self.protocol_version)):
            if not isinstance(text, str):
                raise ConfigError(f"HostConfig.{name}: expected a str, got {type(text).__name__}")
        object.__setattr__(self, "transports", tuple(self.transports))
        object.__setattr__(self, "security", tuple(self.security))
        object.__setattr__(self, "muxers", tuple(self.muxers))
        object.__setattr__(self, "services", tuple(self.services))
        object.__setattr__(self, "listen", tuple(self.listen))
        object.__setattr__(self, "bootstrap", tuple(self.bootstrap))
        object.__setattr__(self, "dns_nameservers", tuple(self.dns_nameservers))

    def replace(self, **changes: Any) -> HostConfig:
        """A copy with ``changes`` applied (``dataclasses.replace``), validated again."""
        return dataclasses.replace(self, **changes)


class EventSubscription:
    """A bounded, lossy queue of host events for an application (``with host.subscribe() as events``).

    Iterate it (``async for event in events``) or call :meth:`receive`. When the queue is full, new
    events are dropped and counted in :attr:`dropped`; the host never waits for a subscriber.
    """

    def __init__(self, maxsize: int) -> None:
        self._send, self._recv = trio.open_memory_channel[Event](maxsize)
        self.dropped = 0
        """Events this subscription missed because its queue was full."""

    def _offer(self, event: Event) -> bool:
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.dropped += 1
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        return True

    async def receive(self) -> Event:
        """The next event (waits for one)."""
        return await self._recv.receive()

    def receive_nowait(self) -> Event:
        """The next event, or ``trio.WouldBlock`` if none is queued."""
        return self._recv.receive_nowait()

    def __aiter__(self) -> EventSubscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._recv.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def _close(self) -> None:
        self._send.close()


class _Handler:
    __slots__ = ("active", "func", "limit", "owner")

    def __init__(self, func: StreamHandler, limit: int, owner: _ServiceSlot | None) -> None:
        self.func = func
        self.limit = limit
        self.active = 0
        self.owner = owner


def _check_async_handler(protocol_id: str, handler: object) -> None:
    """Reject handlers that are plain functions: they would fail on every stream, silently."""
    inner = handler
    while isinstance(inner, functools.partial):
        inner = inner.func
    if not callable(inner):
        raise TypeError(f"stream handler for {protocol_id} is not callable: {handler!r}")
    call = inner if inspect.isfunction(inner) or inspect.ismethod(inner) else getattr(inner, "__call__", None)
    if getattr(call, "__name__", "") == "<lambda>":
        return  # `lambda stream: serve(stream, x)` returns a coroutine: checked when it is called
    if (inspect.isfunction(call) or inspect.ismethod(call)) and not inspect.iscoroutinefunction(call):
        raise TypeError(
            f"stream handler for {protocol_id} must be an async function (async def handler(stream)), "
            f"got the plain function {getattr(inner, '__qualname__', inner)!r}"
        )


class Host:
    """A running libp2p host. Create with ``async with open_host(config) as host``.

    It keeps connections (``connect``, ``connections``, ``disconnect``), opens and serves streams
    (``new_stream``, ``set_stream_handler``), runs services (``service(Kind)``), reports events to
    applications (``subscribe``) and remembers other peers (``peerstore``).
    """

    def __init__(self, config: HostConfig, nursery: trio.Nursery) -> None:
        self.config = config
        """The configuration this host was started with (see HostConfig on which objects it runs)."""
        self.identity = config.identity
        """Our key pair and peer id."""
        self.peerstore = PeerStore(clock=trio.current_time, on_deadline_changed=self._wake_expiry)
        """What we know about other peers (addresses with provenance and TTLs, keys, protocols, ...)."""
        self.dropped_events = 0
        """Events dropped across all subscriptions because their queues were full."""
        self._nursery = nursery
        self._closed = False
        self._handlers: dict[str, _Handler] = {}
        self._subscriptions: list[EventSubscription] = []
        self._addrs_cache: tuple[tuple[Multiaddr, ...], int, int, list[Multiaddr]] | None = None
        self._mapped: dict[str, tuple[Multiaddr, ...]] = {}  # source (e.g. "portmap") -> external addresses
        self._mapped_version = 0
        self.observed = ObservedAddrs(config.address_policy)
        """Addresses peers observed us on (identify), confirmed by enough distinct observers."""
        self._reachability = Reachability.UNKNOWN
        # connect("/ip4/…/p2p/…") parses the same strings again and again; parsing and splitting off
        # /p2p costs ~0.3 ms with the multiaddr package, a sixth of a loopback dial
        self._parsed: dict[str | bytes, tuple[Multiaddr, PeerId | None]] = {}
        # connections registered per peer (first opened -> peer_connected; last closed -> peer_disconnected)
        self._conn_counts: dict[PeerId, int] = {}
        # protocols of each connected peer as services were last told (identify diffs against this)
        self._told_protocols: dict[PeerId, frozenset[str]] = {}
        # inbound streams in negotiation per connection (bounded by config.max_negotiating_streams)
        self._negotiating: dict[Connection, int] = {}
        self.refused_streams = 0
        """Inbound streams reset because too many were still negotiating on their connection."""
        self._expiry_changed = trio.Event()
        self._expiry_armed = math.inf  # when the expiry timer will run (-inf while it runs)
        self._expiry_floor = -math.inf  # the earliest it may run again
        # peers reported by discovery that we are dialing now (bounded by config.discovery_connect)
        self._discovery_dials: set[PeerId] = set()
        # every host has its own copy of each component: config objects are templates
        transports = [_for_this_host(t, copy.deepcopy) for t in config.transports]
        security = [_for_this_host(s, copy.deepcopy) for s in config.security]
        muxers = [_for_this_host(m, copy.deepcopy) for m in config.muxers]
        self.transports: tuple[Transport, ...] = tuple(transports)
        """This host's own copies of the configured transports."""
        self.security: tuple[SecurityProtocol, ...] = tuple(security)
        """This host's own copies of the configured security protocols (preference order)."""
        self.muxers: tuple[StreamMuxer, ...] = tuple(muxers)
        for muxer in muxers:  # a muxer's trailing malloc_trim runs in this host's nursery: it ends with it
            trimmer = getattr(muxer, "trimmer", None)
            if isinstance(trimmer, MemoryTrimmer):
                trimmer.attach(nursery.start_soon)
        """This host's own copies of the configured stream muxers (preference order)."""
        self._slots = [_ServiceSlot(self, svc) for svc in _with_bootstrap(config)]
        stream_transports = any(isinstance(t, StreamTransport) for t in transports)
        self.resources = ResourceManager(config.resources, on_refused=self._resource_refused)
        """The resource manager: usage, limits and refusals in ``host.resources.stats()``."""
        self._refusal_reports = RefusalReporter()
        for muxer in muxers:  # their receive buffers count against the system scope's memory
            charge_muxer_memory(muxer, self.resources)
        self.connmgr = ConnManager(config.connmgr, close=_close_connection)
        """The connection manager: ``tag_peer``, ``protect``, watermarks."""
        upgrader = Upgrader(self.identity, security, muxers, gater=config.gater) if stream_transports else None
        self.swarm = Swarm(
            nursery,
            self.identity,
            transports,
            upgrader,
            handshake_timeout=config.handshake_timeout,
            # one bound for pending handshakes: the swarm's table evicts stalled ones before the
            # transient scope would refuse a fresh one
            max_pending_inbound=max(1, min(config.max_pending_inbound_handshakes, config.resources.transient.conns_inbound)),
            on_connection=self._connection_opened,
            on_disconnect=self._connection_closed,
            on_stream=self._handle_inbound_stream,
            tier_delay=config.dial_tier_delay,
            source_limits=config.source_limits,
            stage_timeout=config.handshake_stage_timeout,
            resources=self.resources,
            gater=config.gater,
        )
        for transport in transports:  # (the circuit relay transport works through this host)
            if isinstance(transport, HostBound):
                transport.attach_host(self)

    # -- identity and addresses -----------------------------------------------------------------
    @property
    def peer_id(self) -> PeerId:
        """Our peer id."""
        return self.identity.peer_id

    @property
    def is_closed(self) -> bool:
        """True once the host's ``async with`` block has begun to exit."""
        return self._closed

    @property
    def listen_addrs(self) -> list[Multiaddr]:
        """The bound addresses (port 0 resolved), without ``/p2p``."""
        return self.swarm.listen_addrs

    @property
    def addrs(self) -> list[Multiaddr]:
        """Addresses others can dial us on, each ending in ``/p2p/<our id>``.

        Unspecified listen addresses (0.0.0.0, ::) are expanded to every interface address; observed
        addresses that enough distinct peers confirmed (``host.observed``) follow them, then the
        external addresses port mapping obtained (:meth:`set_mapped_addrs`).
        """
        listen = tuple(self.listen_addrs)
        version = self.observed.version
        cache = self._addrs_cache
        if cache is None or cache[0] != listen or cache[1] != version or cache[2] != self._mapped_version:
            expanded = [a for addr in listen for a in expand_unspecified(addr)]
            extra = [a for a in self.observed.addrs(expanded) if a not in expanded]
            for mapped in self._mapped.values():
                extra += [a for a in mapped if a not in expanded and a not in extra]
            out = [with_peer_id(a, self.peer_id) for a in expanded + extra]
            cache = self._addrs_cache = (listen, version, self._mapped_version, out)
        return list(cache[3])

    def set_mapped_addrs(self, source: str, addrs: Sequence[Multiaddr]) -> None:
        """Advertise ``addrs`` (without ``/p2p``) as the external addresses a NAT gateway maps to us,
        replacing those ``source`` (e.g. ``"portmap"``) set before; ``[]`` withdraws them. On a change
        services are told (``local_addrs_changed``: identify pushes them)."""
        new = tuple(dict.fromkeys(split_peer_id(as_multiaddr(a))[0] for a in addrs))
        if self._mapped.get(source, ()) == new:
            return
        if new:
            self._mapped[source] = new
        else:
            self._mapped.pop(source, None)
        self._mapped_version += 1
        log.info("port-mapped addresses from %s now %s", source, [str(a) for a in new])
        self.addrs_changed()

    @property
    def advertised_addrs(self) -> list[Multiaddr]:
        """Listen addresses without ``/p2p``, unspecified ones expanded, as identify announces them."""
        return [split_peer_id(a)[0] for a in self.addrs]

    def addrs_changed(self) -> None:
        """Tell services our addresses changed (identify pushes them): a transport whose listener's
        addresses change by themselves (relay reservations taken or lost) calls this."""
        if not self._closed:
            self._notify("local_addrs_changed")

    def record_observed_addr(self, conn: Connection, observed: Multiaddr) -> None:
        """The peer on ``conn`` sees us as ``observed`` (identify calls this): once enough distinct
        observers agree, the address is advertised and services are told (identify pushes it)."""
        if conn.is_closed:  # (identify can finish after its connection closed: it would never be removed)
            return
        listen = [a for addr in self.listen_addrs for a in expand_unspecified(addr)]
        if self.observed.record(conn, conn.local_addr, conn.remote_addr, observed, listen):
            log.info("confirmed observed addresses now %s", [str(a) for a in self.observed.addrs(listen)])
            self.addrs_changed()

    @property
    def reachability(self) -> Reachability:
        """Whether others can dial us, as AutoNAT last found (UNKNOWN until it has)."""
        return self._reachability

    def set_reachability(self, reachability: Reachability, addrs: Sequence[Multiaddr] = ()) -> None:
        """Record a new reachability verdict (AutoNAT calls this): on a change, services hear of it
        (``reachability_changed``) and a :class:`~mycel.core.events.ReachabilityChanged` is emitted."""
        if reachability is self._reachability or self._closed:
            return
        self._reachability = reachability
        log.info("reachability is now %s (%s)", reachability.value, [str(a) for a in addrs])
        self._notify("reachability_changed", reachability, tuple(addrs))
        self.emit(ReachabilityChanged(reachability, tuple(addrs)))

    async def dial_direct(self, peer: PeerId, addr: Multiaddr) -> Connection:
        """A new connection to ``peer`` at ``addr`` even when one is open already (AutoNAT's dial-back);
        it is registered like any other: close it when done."""
        self._check_open()
        return await self.swarm.dial_new(peer, addr)

    # -- services -------------------------------------------------------------------------------
    def service(self, kind: type[S]) -> S:
        """This host's running copy of the service of type ``kind`` (LookupError if there is none)."""
        for slot in self._slots:
            if isinstance(slot.service, kind):
                return slot.service
        raise LookupError(f"no {kind.__name__} service in this host")

    def service_state(self, kind: type[Service]) -> ServiceState:
        """Whether the service of type ``kind`` runs, and how often it failed."""
        for slot in self._slots:
            if isinstance(slot.service, kind):
                return slot.state
        raise LookupError(f"no {kind.__name__} service in this host")

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in the background for the host's lifetime (cancelled when it closes).

        An exception from it is logged at ERROR with its traceback and reported as
        :class:`TaskFailed`; it does not take the host down. Raises HostClosed once the host closed.
        """
        self._check_open()
        self._nursery.start_soon(self._guarded_task, fn, args)

    async def _guarded_task(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        name = getattr(fn, "__qualname__", repr(fn))
        try:
            await fn(*args)
        except Exception as exc:
            log.error("background task %s failed", name, exc_info=exc)
            self.emit(TaskFailed(name, exc))

    def _check_open(self) -> None:
        if self._closed:
            raise HostClosed("the host is closed (used after its `async with open_host(...)` block)")

    # -- events ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def subscribe(self, maxsize: int | None = None) -> Iterator[EventSubscription]:
        """Receive the host's events for the duration of the ``with`` block (bounded and lossy)."""
        sub = EventSubscription(maxsize or self.config.event_queue_size)
        self._subscriptions.append(sub)
        try:
            yield sub
        finally:
            self._subscriptions.remove(sub)
            sub._close()

    def emit(self, event: Event) -> None:
        """Hand ``event`` to every subscription (never waits; a full queue drops and counts it)."""
        for sub in self._subscriptions:
            if not sub._offer(event):
                self.dropped_events += 1

    def _notify(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on every running service, in config order; a raising service fails alone."""
        for slot in self._slots:
            if slot.accepts_hooks and hook in slot.hooks:
                try:
                    getattr(slot.service, hook)(slot.view, *args)
                except Exception as exc:
                    if isinstance(exc, HostClosed) and self._closed:
                        # news that arrives while the host shuts down (a late identify) can no longer start
                        # work: a hook that tries (spawn) is told HostClosed, and that is no failure
                        log.debug("%s hook of %s ignored: the host is closing", hook, slot.state.name)
                        continue
                    slot.fail(exc, f"its {hook} hook raised")

    def _connection_opened(self, conn: Connection) -> None:
        peer = conn.remote_peer
        log.debug("connected to %s via %s (%s)", peer, conn.remote_addr, conn.direction.value)
        now = trio.current_time()
        store = self.peerstore
        count = self._conn_counts.get(peer, 0) + 1
        self._conn_counts[peer] = count
        if count == 1:
            store.mark_connected(peer, True, now)  # first: a connected peer is never evicted
            self._told_protocols[peer] = frozenset()
        if not peer.inlines_key:  # (an inlined key is read from the id itself)
            with contextlib.suppress(MycelError):
                store.set_public_key(peer, conn.remote_public_key)
        if conn.direction is Direction.OUTBOUND:
            store.add_addrs(peer, [conn.remote_addr], AddrSource.CONNECTION, CONNECTED_TTL, now)
        if count == 1:
            self._notify("peer_connected", peer)
            self.emit(PeerConnected(peer))
        self._notify("connection_opened", conn)
        self.emit(ConnectionOpened(conn))
        self.connmgr.opened(conn, peer)

    def _resource_refused(self, err: ResourceLimitExceeded) -> None:
        """A reservation was refused (already counted): a WARNING and an event, each at most once per
        scope and resource every 10 s."""
        scope, resource = err.scope or "?", err.resource or "?"
        if self._refusal_reports.due(scope, resource, trio.current_time()):
            count = self.resources.refusals.get((scope, resource), 0)
            log.warning("resource limit reached (%d so far of this kind): %s", count, err)
            peer = err.peer if isinstance(err.peer, PeerId) else None
            self.emit(ResourceLimitReached(scope, resource, count, peer))

    def _connection_closed(self, conn: Connection, remaining: int) -> None:
        peer = conn.remote_peer
        log.debug("disconnected from %s (%d connections left)", peer, remaining)
        count = self._conn_counts.get(peer, 0) - 1
        if count > 0:
            self._conn_counts[peer] = count
        else:
            self._conn_counts.pop(peer, None)
        self.connmgr.closed(conn)
        if self.observed.remove(conn):
            self.addrs_changed()
        self._notify("connection_closed", conn, max(count, 0))
        self.emit(ConnectionClosed(conn, max(count, 0)))
        if count <= 0:
            self._told_protocols.pop(peer, None)
            self.peerstore.mark_connected(peer, False, trio.current_time())
            self._notify("peer_disconnected", peer)
            self.emit(PeerDisconnected(peer))

    def update_peer_protocols(self, peer: PeerId, protocols: Sequence[str]) -> None:
        """Record ``peer``'s full protocol list (identify does) and tell services what changed.

        Services hear of a peer's protocols only while it is connected: the first report after
        ``peer_connected`` lists every protocol as added, later ones only the differences.
        """
        self.peerstore.set_protocols(peer, protocols)
        told = self._told_protocols.get(peer)
        if told is None:  # not connected (identify finished after the peer left): store only
            return
        now = frozenset(self.peerstore.protocols(peer))
        added, removed = now - told, told - now
        if not added and not removed:
            return
        self._told_protocols[peer] = now
        self._notify("peer_protocols_changed", peer, added, removed)
        self.emit(PeerProtocolsChanged(peer, added, removed))

    # -- streams --------------------------------------------------------------------------------
    def set_stream_handler(
        self,
        protocol_id: str,
        handler: StreamHandler,
        *,
        max_concurrent: int | None = None,
        _owner: _ServiceSlot | None = None,
    ) -> None:
        """Serve ``protocol_id`` with ``async def handler(stream)``; the stream is closed when it returns.

        At most ``max_concurrent`` streams of this protocol are handled at once; more are reset. A
        handler that raises resets its stream: errors caused by the peer are logged at INFO, any
        other exception at ERROR with its traceback; both are reported as StreamHandlerFailed.
        Connected peers learn of the new protocol through identify push.
        """
        _check_async_handler(protocol_id, handler)
        if not isinstance(protocol_id, str) or not protocol_id:
            raise ValueError(f"a protocol id is a non-empty string, got {protocol_id!r}")
        new = protocol_id not in self._handlers
        self._handlers[protocol_id] = _Handler(handler, max_concurrent or self.config.handler_concurrency, _owner)
        if new:
            self._local_protocols_changed(frozenset([protocol_id]), frozenset())

    def remove_stream_handler(self, protocol_id: str) -> None:
        """Stop serving ``protocol_id`` (streams being handled go on); peers are told by identify push."""
        if self._handlers.pop(protocol_id, None) is not None:
            self._local_protocols_changed(frozenset(), frozenset([protocol_id]))

    def _local_protocols_changed(self, added: frozenset[str], removed: frozenset[str]) -> None:
        if self._closed:
            return
        self._notify("local_protocols_changed", added, removed)
        self.emit(LocalProtocolsChanged(added, removed))

    @property
    def protocols(self) -> list[str]:
        """The protocols this host serves (its stream handlers)."""
        return list(self._handlers)

    async def _handle_inbound_stream(self, stream: MuxedStream) -> None:
        # one coroutine from reservation to the handler's end: its frame lives as long as the stream
        cscope = self.swarm.scope_of(stream.connection)
        scope: StreamScope | None = None
        if cscope is not None:  # (None: a connection being closed)
            try:
                scope = cscope.open_stream(Direction.INBOUND)
            except ResourceLimitExceeded:  # counted and reported by the resource manager
                await _reset_quietly(stream)
                return
        try:
            conn = stream.connection
            peer = conn.remote_peer
            busy = self._negotiating.get(conn, 0)
            if busy >= self.config.max_negotiating_streams:
                self.refused_streams += 1
                if self.refused_streams & (self.refused_streams - 1) == 0:  # 1st, 2nd, 4th, 8th, ...: logs stay few
                    log.info(
                        "%s keeps %d streams in negotiation; resetting new ones (%d so far)",
                        peer,
                        busy,
                        self.refused_streams,
                    )
                await _reset_quietly(stream)
                return
            self._negotiating[conn] = busy + 1
            try:
                with trio.fail_after(self.config.negotiate_timeout):
                    proto = await select_inbound(stream, self._handlers.__contains__, lambda: list(self._handlers))
            except (MycelError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.debug("inbound stream from %s: negotiation failed: %r", peer, exc)
                await _reset_quietly(stream)
                return
            finally:
                left = self._negotiating[conn] - 1
                if left:
                    self._negotiating[conn] = left
                else:
                    del self._negotiating[conn]
            handler = self._handlers.get(proto)
            if handler is None:
                await _reset_quietly(stream)
                return
            if scope is not None:
                try:
                    scope.set_protocol(proto)
                    if handler.owner is not None:
                        scope.set_service(handler.owner.state.name)
                except ResourceLimitExceeded:  # counted and reported by the resource manager
                    await _reset_quietly(stream)
                    return
            if handler.active >= handler.limit:
                log.warning("too many %s streams being handled (%d); resetting one from %s", proto, handler.limit, peer)
                await _reset_quietly(stream)
                return
            stream.protocol = proto
            self.emit(StreamOpened(peer, proto, Direction.INBOUND))
            handler.active += 1
            try:
                result = handler.func(stream)
                if not inspect.isawaitable(result):
                    raise TypeError(f"stream handler for {proto} returned {type(result).__name__}, not an awaitable")
                await result
            except _PEER_ERRORS as exc:  # the peer's or the connection's doing: log, report, keep serving
                log.info("%s stream from %s failed: %s", proto, peer, _reason(exc))
                self.emit(StreamHandlerFailed(peer, proto, exc))
                await _reset_quietly(stream)
            except Exception as exc:  # a bug in the handler: loud, with the traceback
                log.error("handler for %s from %s raised", proto, peer, exc_info=exc)
                self.emit(StreamHandlerFailed(peer, proto, exc))
                await _reset_quietly(stream)
            finally:
                handler.active -= 1
                with trio.CancelScope(shield=True):
                    with contextlib.suppress(MycelError, trio.BrokenResourceError, trio.ClosedResourceError):
                        await stream.aclose()
        finally:
            if scope is not None:
                scope.done()

    async def new_stream(
        self,
        peer: PeerId | str | Multiaddr,
        protocols: Sequence[str] | str,
        *,
        lazy: bool | None = None,
        conn: Connection | None = None,
        allow_limited: bool = False,
    ) -> MuxedStream:
        """Open a stream to ``peer`` speaking the first of ``protocols`` it accepts.

        Dials if needed (from peerstore addresses, or the multiaddr given), or uses ``conn`` when
        given (it must be a connection to that peer). With a single protocol the peer is known to
        support (from identify), or ``lazy=True``, negotiation is optimistic and costs no round
        trip: a refusal then surfaces as ProtocolNotSupported from the first read.

        A limited (relayed) connection is used only with ``allow_limited=True`` or for the
        protocols in ``LIMITED_CONN_PROTOCOLS`` (identify, ping, DCUtR); otherwise
        :class:`~mycel.core.errors.LimitedConnection` is raised, as go's ``ErrLimitedConn``.
        """
        if isinstance(protocols, str):
            protocols = [protocols]
        if not protocols:
            raise ValueError("no protocols given")
        self._check_open()
        if conn is None:
            conn = await self.connect(peer)
        elif isinstance(peer, PeerId) and conn.remote_peer != peer:
            raise ValueError(f"connection {conn!r} is to {conn.remote_peer}, not to {peer}")
        return await self.open_stream_on(conn, protocols, lazy=lazy, allow_limited=allow_limited)

    async def open_stream_on(
        self,
        conn: Connection,
        protocols: Sequence[str] | str,
        *,
        lazy: bool | None = None,
        allow_limited: bool = False,
    ) -> MuxedStream:
        """Open a stream on the connection ``conn`` and negotiate the first of ``protocols`` it accepts
        (on a limited connection only as :meth:`new_stream` says)."""
        if isinstance(protocols, str):
            protocols = [protocols]
        if not protocols:
            raise ValueError("no protocols given")
        self._check_open()
        if conn.limited and not allow_limited and not LIMITED_CONN_PROTOCOLS.issuperset(protocols):
            raise LimitedConnection(
                f"the connection to {conn.remote_peer} is limited (relayed); {list(protocols)} did not opt in"
            )
        cscope = self.swarm.scope_of(conn)
        scope = cscope.open_stream(Direction.OUTBOUND) if cscope is not None else None
        try:
            stream = await conn.open_stream()
        except BaseException:
            if scope is not None:
                scope.done()
            raise
        if cscope is not None and scope is not None:
            cscope.track_outbound(stream, scope)  # released once the stream is over
        try:
            if len(protocols) == 1 and (
                lazy or (lazy is None and protocols[0] in self.peerstore.protocols(conn.remote_peer))
            ):
                if scope is not None:
                    scope.set_protocol(protocols[0])
                optimistic = await select_lazy(stream, protocols[0])
                self.emit(StreamOpened(conn.remote_peer, protocols[0], Direction.OUTBOUND))
                return optimistic
            with trio.fail_after(self.config.negotiate_timeout):
                proto = await select_outbound(stream, protocols)
            if scope is not None:
                scope.set_protocol(proto)
        except BaseException:
            with trio.CancelScope(shield=True):
                await _reset_quietly(stream)
            raise
        stream.protocol = proto
        self.emit(StreamOpened(conn.remote_peer, proto, Direction.OUTBOUND))
        return stream

    # -- connections ----------------------------------------------------------------------------
    async def connect(self, target: PeerId | str | Multiaddr, addrs: Sequence[Multiaddr | str] = ()) -> Connection:
        """Connect to a peer (reusing a live connection). ``target`` is a PeerId, a peer id string, or a
        multiaddr (with ``/p2p/<id>`` to authenticate the remote; without it any peer is accepted).
        ``addrs`` are more addresses of that peer; a ``/p2p/<id>`` on them must name the same peer.

        Raises DialError (DialPeerMismatch when an address led to another peer), HostClosed once
        the host is closed."""
        self._check_open()
        now = trio.current_time()
        if isinstance(target, PeerId):
            peer = target
        else:
            text = target if isinstance(target, str) else None
            if text is None or text.startswith("/"):
                base, maybe_peer = self._parse_addr(target)
                if maybe_peer is None:
                    if addrs:
                        raise DialError("more addresses need a peer to belong to: put /p2p/<id> on the target")
                    return await self.swarm.dial_addr(base)
                # an explicit address is what gets dialed (with any extra ones), not the whole peerstore
                peer = maybe_peer
                extra = [base, *self._own_addrs(peer, addrs)]
                self.peerstore.add_addrs(peer, extra, AddrSource.USER, PERMANENT_TTL, now)
                return await self.swarm.dial_peer(peer, extra)
            assert text is not None
            try:
                peer = PeerId.from_string(text)
            except (MycelError, ValueError) as exc:
                raise DialError(
                    f"{text!r} is neither a peer id nor a multiaddr (e.g. /ip4/1.2.3.4/tcp/4001/p2p/<peer id>)"
                ) from exc
        if addrs:
            self.peerstore.add_addrs(peer, self._own_addrs(peer, addrs), AddrSource.USER, PERMANENT_TTL, now)
        existing = self.swarm.connections(peer)
        if existing:  # a direct connection before a limited (relayed) one
            return min(existing, key=lambda c: c.limited)
        known = self.peerstore.addrs(peer, now)
        if not known:
            if not self.peer_routers():
                raise PeerNotFound(f"no addresses known for {peer} (and no peer router, e.g. a DHT, to ask)")
            known = await self.find_peer(peer)
        return await self.swarm.dial_peer(peer, known)

    # -- discovery ------------------------------------------------------------------------------
    def peer_found(
        self, peer: PeerId, addrs: Sequence[Multiaddr | str], source: str, ttl: float = ADDRESS_TTL
    ) -> None:
        """Report a peer found by discovery (mDNS, rendezvous, a bootstrap list, the application, ...).

        Its addresses go into the peerstore (source ``DISCOVERY``, kept ``ttl`` seconds), services hear it
        through their ``peer_found`` hook, subscribers get a :class:`~mycel.core.events.PeerFound`, and
        the host connects to it while fewer than ``HostConfig.discovery_connect`` peers are connected
        (a failed dial is logged at DEBUG: discovery is a hint). Our own id and addresses of other
        peers (a ``/p2p`` naming someone else) are ignored. Never waits.
        """
        if self._closed or peer == self.peer_id:
            return
        try:
            found = tuple(self._own_addrs(peer, addrs))
        except (DialError, MycelError, ValueError) as exc:
            log.info("discovery (%s) reported %s with a bad address: %s", source, peer, exc)
            return
        if found:
            self.peerstore.add_addrs(peer, found, AddrSource.DISCOVERY, ttl, trio.current_time())
        event = PeerFound(peer, found, source)
        self._notify("peer_found", event)
        self.emit(event)
        limit = self.config.discovery_connect
        if (
            found
            and limit
            and peer not in self._discovery_dials
            and len(self._discovery_dials) < limit
            and not self.swarm.connections(peer)
            and len(self._conn_counts) < limit
        ):
            self._discovery_dials.add(peer)
            self._nursery.start_soon(self._dial_discovered, peer, source)

    async def _dial_discovered(self, peer: PeerId, source: str) -> None:
        try:
            if len(self._conn_counts) < self.config.discovery_connect and not self._closed:
                await self.connect(peer)
        except (MycelError, OSError) as exc:
            log.debug("could not connect to %s found by %s: %s", peer, source, exc)
        finally:
            self._discovery_dials.discard(peer)

    def peer_routers(self) -> list[PeerRouting]:
        """The running services that can find peers (``PeerRouting``: the DHT, ...), in config order."""
        return [
            slot.service for slot in self._slots if slot.state.running and isinstance(slot.service, PeerRouting)
        ]

    async def find_peer(self, peer: PeerId | str) -> list[Multiaddr]:
        """Ask the peer routers for ``peer``'s addresses (each in turn until one knows); they are kept in
        the peerstore as ROUTING addresses for an hour. Raises :class:`~mycel.routing.PeerNotFound`."""
        self._check_open()
        if not isinstance(peer, PeerId):
            peer = PeerId.from_string(peer)
        failures: list[BaseException] = []
        for router in self.peer_routers():
            try:
                found = [a for a in (await router.find_peer(peer)) if a is not None]
            except MycelError as exc:  # a router that failed: the next one may know
                failures.append(exc)
                continue
            if found:
                addrs = self._own_addrs(peer, found)
                self.peerstore.add_addrs(peer, addrs, AddrSource.ROUTING, ADDRESS_TTL, trio.current_time())
                return addrs
        raise PeerNotFound(f"no router found addresses for {peer}", failures)

    def _own_addrs(self, peer: PeerId, addrs: Sequence[Multiaddr | str]) -> list[Multiaddr]:
        """``addrs`` without their ``/p2p/<peer>`` suffix; an address of another peer is an error."""
        out = []
        for addr in addrs:
            base, owner = self._parse_addr(addr)
            if owner is not None and owner != peer:
                raise DialError(f"{addr} belongs to {owner}, not to {peer}")
            out.append(base)
        return out

    def _parse_addr(self, addr: str | Multiaddr) -> tuple[Multiaddr, PeerId | None]:
        # keyed by the text, or by the bytes of a Multiaddr (str() of one costs ~30 us: not per dial)
        key: str | bytes = addr if isinstance(addr, str) else addr.to_bytes()
        parsed = self._parsed.get(key)
        if parsed is None:
            try:
                parsed = split_peer_id(as_multiaddr(addr))
            except (MycelError, ValueError) as exc:
                raise DialError(f"{addr!r} is not a valid multiaddr: {exc}") from exc
            if len(self._parsed) >= PARSED_ADDRS:
                self._parsed.clear()
            self._parsed[key] = parsed
        return parsed

    def connections(self, peer: PeerId | None = None) -> list[Connection]:
        """Open connections (to ``peer``, or all)."""
        return self.swarm.connections(peer)

    def connected_peers(self) -> list[PeerId]:
        """Peers with at least one open connection."""
        return self.swarm.connected_peers()

    async def disconnect(self, peer: PeerId) -> None:
        """Close every connection to ``peer`` (several at once)."""
        conns = self.swarm.connections(peer)
        if len(conns) == 1:
            await conns[0].aclose()
            return
        async with trio.open_nursery() as nursery:
            for conn in conns:
                nursery.start_soon(conn.aclose)

    async def listen(self, addr: str | Multiaddr) -> list[Multiaddr]:
        """Listen on ``addr`` (port 0 picks a free port); returns the bound addresses.

        Services are told (``local_addrs_changed``), so identify pushes the new addresses to peers."""
        self._check_open()
        bound = await self.swarm.listen(as_multiaddr(addr))
        self._notify("local_addrs_changed")
        return bound

    # -- peerstore expiry -------------------------------------------------------------------------
    def _wake_expiry(self) -> None:
        # the store's next deadline may have moved earlier: wake the timer, unless it is already set
        # for the earliest time it may run (then an earlier deadline changes nothing: no wake per dial)
        if self._expiry_armed > self._expiry_floor:
            self._expiry_changed.set()

    async def _expire_peerstore(self) -> None:
        """Drop expired peerstore entries when they expire: a timer, no polling loop. It runs at most
        every EXPIRY_INTERVAL, so a disconnected peer left with nothing worth keeping is forgotten within
        that, and a churn of connections costs one expiry pass a second, not one wake-up per connection."""
        while True:
            self._expiry_changed = trio.Event()
            deadline = self.peerstore.next_expiry()
            armed = math.inf if deadline is None else max(deadline, self._expiry_floor)
            self._expiry_armed = armed
            with trio.move_on_at(armed):
                await self._expiry_changed.wait()
                continue
            self._expiry_armed = -math.inf  # running: a change now is seen by the next loop
            now = trio.current_time()
            self._expiry_floor = now + EXPIRY_INTERVAL
            self.peerstore.expire(now)

    # -- shutdown -------------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        """Refuse new work, then close listeners and connections (bounded by shutdown_timeout)."""
        self._closed = True
        try:
            with trio.move_on_after(self.config.shutdown_timeout):
                await self.swarm.aclose()
        finally:
            for muxer in self.muxers:  # a muxer's trailing malloc_trim task must not outlive the host
                trimmer = getattr(muxer, "trimmer", None)
                if isinstance(trimmer, MemoryTrimmer):
                    trimmer.finish()


_HOOKS = (
    "peer_connected",
    "peer_disconnected",
    "connection_opened",
    "connection_closed",
    "peer_protocols_changed",
    "local_protocols_changed",
    "local_addrs_changed",
    "peer_found",
    "reachability_changed",
)


class _ServiceSlot:
    """One service in one host: its own nursery, its state, its failures, its view of the host."""

    def __init__(self, host: Host, template: Service) -> None:
        self.host = host
        self.template = template
        self.service = _for_this_host(template, _clone_service)
        # the hooks this kind of service overrides: the host skips calling the no-op defaults
        self.hooks = frozenset(h for h in _HOOKS if getattr(type(template), h) is not getattr(Service, h))
        self.state = ServiceState(type(template).__name__)
        self.view = _ServiceView(host, self)
        self.nursery: trio.Nursery | None = None
        self.accepts_hooks = False
        self._failure: BaseException | None = None

    async def supervise(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the service; on failure stop it for good or start a fresh copy (restart_on_failure)."""
        started = False
        while True:
            self._failure = None
            try:
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    self.accepts_hooks = True
                    self._install_handlers()
                    await nursery.start(self.service.run, self.view)
                    self.state.running = True
                    if started:  # a restarted service hears of the peers that are connected now
                        self._replay()
                    if not started:
                        started = True
                        task_status.started()
                    nursery.start_soon(trio.sleep_forever)  # the nursery outlives run(): spawn() works
            except BaseExceptionGroup as group:
                errors, rest = group.split(Exception)
                if rest is not None and errors is None:
                    raise
                if errors is not None:
                    exc = single_exception(errors) or errors
                    if rest is not None:  # cancelled (or interrupted) while failing: log, then go
                        log.error("service %s failed while stopping", self.state.name, exc_info=exc)
                        raise rest from None
                    self._failure = self._failure or exc
            except Exception as exc:  # run() failed before it started
                self._failure = self._failure or exc
            finally:
                self.nursery = None
                self.accepts_hooks = False
                self.state.running = False
            failure = self._failure
            if failure is None:  # the service's nursery ended without an error: only on cancellation
                return
            restarting = self._stopped(failure)
            if not started:
                started = True
                task_status.started()
            if not restarting:
                return
            await trio.sleep(self.template.restart_backoff * 2 ** (self.state.failures - 1))
            self.service = _fresh_copy(self.template, _clone_service)

    def _replay(self) -> None:
        """Tell a (re)started service what is connected, as if it had been running all along."""
        host, service, view = self.host, self.service, self.view
        try:
            for peer in list(host._conn_counts):
                service.peer_connected(view, peer)
                for conn in host.connections(peer):
                    service.connection_opened(view, conn)
                told = host._told_protocols.get(peer)
                if told:
                    service.peer_protocols_changed(view, peer, told, frozenset())
            if host.reachability is not Reachability.UNKNOWN:  # (a DHT in auto mode picks its mode again)
                service.reachability_changed(view, host.reachability, ())
        except Exception as exc:
            self.fail(exc, "a hook raised while it was told of the connected peers")

    def fail(self, exc: BaseException, how: str = "it raised") -> None:
        """Record a failure from a hook and stop the service's tasks (supervise() takes it from there)."""
        if self._failure is not None or not self.accepts_hooks:
            return
        self._failure = exc
        self.accepts_hooks = False
        log.debug("service %s failed: %s", self.state.name, how)
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    def _stopped(self, failure: BaseException) -> bool:
        """Bookkeeping after a failure; True when the service is to be started again."""
        state = self.state
        state.failures += 1
        restarting = self.template.restart_on_failure and state.failures <= self.template.max_restarts
        log.error(
            "service %s stopped after a failure (%s)%s",
            state.name,
            _reason(failure),
            "; restarting it" if restarting else "; it stays stopped",
            exc_info=failure,
        )
        self._remove_handlers()
        state.stopped_by_failure = not restarting
        self.host.emit(ServiceFailed(state.name, failure, restarting))
        return restarting

    def _install_handlers(self) -> None:
        for proto, handler in self.service.handlers().items():
            self.host.set_stream_handler(proto, handler, _owner=self)

    def _remove_handlers(self) -> None:
        host = self.host
        mine = [p for p, h in host._handlers.items() if h.owner is self]
        for proto in mine:
            host.remove_stream_handler(proto)


class _ServiceView:
    """The host as one service sees it (:class:`~mycel.service.ServiceHost`): ``spawn`` runs in the
    service's nursery, and stream handlers it installs belong to it."""

    def __init__(self, host: Host, slot: _ServiceSlot) -> None:
        self._host = host
        self._slot = slot

    @property
    def peer_id(self) -> PeerId:
        return self._host.peer_id

    @property
    def identity(self) -> Identity:
        return self._host.identity

    @property
    def config(self) -> HostConfig:
        return self._host.config

    @property
    def peerstore(self) -> PeerStore:
        return self._host.peerstore

    @property
    def protocols(self) -> list[str]:
        return self._host.protocols

    @property
    def addrs(self) -> list[Multiaddr]:
        return self._host.addrs

    @property
    def advertised_addrs(self) -> list[Multiaddr]:
        return self._host.advertised_addrs

    @property
    def listen_addrs(self) -> list[Multiaddr]:
        return self._host.listen_addrs

    @property
    def reachability(self) -> Reachability:
        return self._host.reachability

    def set_reachability(self, reachability: Reachability, addrs: Sequence[Multiaddr] = ()) -> None:
        self._host.set_reachability(reachability, addrs)

    def record_observed_addr(self, conn: Connection, observed: Multiaddr) -> None:
        self._host.record_observed_addr(conn, observed)

    def set_mapped_addrs(self, source: str, addrs: Sequence[Multiaddr]) -> None:
        self._host.set_mapped_addrs(source, addrs)

    async def dial_direct(self, peer: PeerId, addr: Multiaddr) -> Connection:
        return await self._host.dial_direct(peer, addr)

    def connections(self, peer: PeerId | None = None) -> list[Connection]:
        return self._host.connections(peer)

    def connected_peers(self) -> list[PeerId]:
        return self._host.connected_peers()

    async def connect(self, target: PeerId | str | Multiaddr, addrs: Sequence[Multiaddr | str] = ()) -> Connection:
        return await self._host.connect(target, addrs)

    async def new_stream(
        self,
        peer: PeerId | str | Multiaddr,
        protocols: Sequence[str] | str,
        *,
        lazy: bool | None = None,
        conn: Connection | None = None,
        allow_limited: bool = False,
    ) -> MuxedStream:
        return await self._host.new_stream(peer, protocols, lazy=lazy, conn=conn, allow_limited=allow_limited)

    def set_stream_handler(self, protocol_id: str, handler: StreamHandler, *, max_concurrent: int | None = None) -> None:
        self._host.set_stream_handler(protocol_id, handler, max_concurrent=max_concurrent, _owner=self._slot)

    def remove_stream_handler(self, protocol_id: str) -> None:
        self._host.remove_stream_handler(protocol_id)

    def update_peer_protocols(self, peer: PeerId, protocols: Sequence[str]) -> None:
        self._host.update_peer_protocols(peer, protocols)

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start ``fn(*args)`` in this service's nursery; if it raises, this service fails (alone)."""
        self._host._check_open()
        nursery = self._slot.nursery
        if nursery is None:
            raise HostClosed(f"service {self._slot.state.name} is not running")
        nursery.start_soon(fn, *args)

    def emit(self, event: Event) -> None:
        self._host.emit(event)

    @property
    def resources(self) -> ResourceManager:
        return self._host.resources

    @property
    def connmgr(self) -> ConnManager:
        return self._host.connmgr

    def peer_found(
        self, peer: PeerId, addrs: Sequence[Multiaddr | str], source: str, ttl: float = ADDRESS_TTL
    ) -> None:
        self._host.peer_found(peer, addrs, source, ttl)


_PRISTINE = "_mycel_pristine"  # attribute on a config object: a copy of it taken before it first ran
C = TypeVar("C")


def _clone_service(service: Service) -> Service:
    return service.clone()  # (the service's own clone(), not Service.clone)


def _for_this_host(template: C, copier: Callable[[C], C]) -> C:
    """The object a starting host uses for ``template`` (a transport, security protocol, muxer or
    service from its config).

    The first host to start from a config runs the objects in it, so a user holding one (``ping =
    Ping()``) holds the running one. Just before, a pristine copy is put aside; every later host (a
    shared config, ``config.replace()``, a restart) gets its own copy of that, so no state is ever
    shared between hosts. Objects that cannot take an attribute are always copied.
    """
    if _PRISTINE in getattr(template, "__dict__", {}):
        return _fresh_copy(template, copier)
    try:
        pristine: object = copier(template)
    except Exception as exc:  # kept to report if a second host ever needs a copy
        pristine = exc
    try:
        setattr(template, _PRISTINE, pristine)
    except (AttributeError, TypeError):  # slots or frozen: copy for every host instead
        return _fresh_copy_of(template, pristine, copier)
    return template


def _fresh_copy(template: C, copier: Callable[[C], C]) -> C:
    pristine = getattr(template, "__dict__", {}).get(_PRISTINE)
    if pristine is None:
        return copier(template)
    return _fresh_copy_of(template, pristine, copier)


def _fresh_copy_of(template: C, pristine: object, copier: Callable[[C], C]) -> C:
    if isinstance(pristine, Exception):
        raise ConfigError(
            f"{type(template).__name__} is used by a second host but cannot be copied ({pristine}); "
            "give it a __deepcopy__ (or, for a service, a clone()) that makes a fresh object"
        ) from pristine
    return copier(pristine)  # type: ignore[arg-type]


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _close_connection(conn: Connection) -> None:
    with contextlib.suppress(MycelError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await conn.aclose()


async def _reset_quietly(stream: MuxedStream) -> None:
    with contextlib.suppress(MycelError, trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.reset()


@contextlib.asynccontextmanager
async def open_host(config: HostConfig | None = None) -> AsyncIterator[Host]:
    """Start a host: listeners are bound and services running when the block is entered.

    Leaving the block (normally, by an exception, or by cancellation) closes listeners and
    connections within ``config.shutdown_timeout`` and cancels everything the host started. The
    exception-group policy is :func:`mycel.core.errors.reraise_unwrapped`: an exception of the body
    comes out as itself, with its cause and context.
    """
    config = config or HostConfig()
    try:
        async with trio.open_nursery() as nursery:
            host = Host(config, nursery)
            try:
                nursery.start_soon(host._expire_peerstore)
                nursery.start_soon(host.connmgr.run)
                for slot in host._slots:
                    await nursery.start(slot.supervise)
                for addr in config.listen:
                    await host.swarm.listen(as_multiaddr(addr))
                if config.listen:  # services started before the listeners: tell them (mDNS announces them)
                    host._notify("local_addrs_changed")
                log.info("host %s listening on %s", host.peer_id, [str(a) for a in host.listen_addrs])
                yield host
            finally:
                host._closed = True
                with trio.CancelScope(shield=True):
                    await host._shutdown()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        reraise_unwrapped(group)


__all__ = ["EventSubscription", "Host", "HostConfig", "open_host"]
