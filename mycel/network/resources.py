"""Resource accounting in scopes: one budget for connections, streams, memory and file descriptors.

Sans-IO (no trio, no clock): the swarm, the host and services call it, and it answers at once.

Scopes, as go-libp2p's resource manager draws them::

    system ── transient                 connections before their peer is known, streams before
       │                                their protocol is
       ├── peer ── connection ── stream (memory of a connection is charged to its peer and system)
       ├── service, service-peer        streams and memory of a service (gossipsub, kad, ...)
       └── protocol, protocol-peer      streams of one protocol, overall and per peer

A reservation is charged to a scope *and every scope above it*; it is refused — a
:class:`~mycel.core.errors.ResourceLimitExceeded` naming the scope and the resource — when any of
them would go over its limit, and then nothing is charged. Every refusal is counted per scope and
resource (:meth:`ResourceManager.stats`) and reported to ``on_refused`` (the host logs it at a
rate-limited WARNING and emits :class:`ResourceLimitReached`).

Allowlisted peers and addresses (:attr:`ResourceLimits.allowlist`) are charged to separate
*allowlisted* system and transient scopes when the ordinary ones are full, so trusted peers stay
reachable while strangers exhaust the node.

Limits come from :meth:`ResourceLimits.autoscale` by default: go's ``DefaultLimits.AutoScale()``,
a base plus an increase per GiB of an eighth of the machine's memory, file descriptors from half the
process's limit. Every limit is a field; change one with :meth:`ResourceLimits.override`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mycel.core.abc import Direction
from mycel.core.errors import ConfigError, ResourceLimitExceeded
from mycel.core.events import ServiceEvent
from mycel.core.peer_id import PeerId
from mycel.muxers.budget import MemoryBudget as MuxerBudget, PeerBudgets

if TYPE_CHECKING:
    from multiaddr import Multiaddr

log = logging.getLogger("mycel.network.resources")

UNLIMITED = sys.maxsize
"""A limit that is never reached."""
MiB = 1 << 20
PRUNE_OUTBOUND_AT = 64  # outbound streams a connection tracks before it looks for finished ones
MAX_CACHED_SCOPES = 256  # protocol/service scopes a connection keeps at hand (our protocols are few)
GiB = 1 << 30

# The resources a scope counts; the names are those of ScopeLimit's fields and of refusal reasons.
RESOURCES = (
    "conns_inbound",
    "conns_outbound",
    "conns",
    "streams_inbound",
    "streams_outbound",
    "streams",
    "memory",
    "fds",
)


@dataclass(frozen=True)
class ScopeLimit:
    """The limits of one scope (:data:`UNLIMITED` for none)."""

    conns_inbound: int = UNLIMITED
    """Connections the remote opened."""
    conns_outbound: int = UNLIMITED
    """Connections we opened."""
    conns: int = UNLIMITED
    """Connections in both directions."""
    streams_inbound: int = UNLIMITED
    """Streams the remote opened."""
    streams_outbound: int = UNLIMITED
    """Streams we opened."""
    streams: int = UNLIMITED
    """Streams in both directions."""
    memory: int = UNLIMITED
    """Bytes reserved."""
    fds: int = UNLIMITED
    """File descriptors (a TCP connection holds one; QUIC and memory connections none)."""

    def __post_init__(self) -> None:
        for name in RESOURCES:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"ScopeLimit.{name}: must be an integer >= 0, got {value!r}")


def _scaled(base: ScopeLimit, per_gib: ScopeLimit, fd_fraction: float, memory: int, fds: int) -> ScopeLimit:
    """go's ``scale()``: base + increase x MiB available / 1024 (nothing added below 128 MiB); file
    descriptors a fraction of those available, never below the base."""
    mib = memory >> 20 if memory > 128 * MiB else 0

    def up(name: str) -> int:
        b, inc = getattr(base, name), getattr(per_gib, name)
        if b == UNLIMITED:
            return UNLIMITED
        return int(b + ((0 if inc == UNLIMITED else inc) * mib >> 10))

    fd = base.fds
    if fd_fraction > 0 and fds > 0 and fd != UNLIMITED:
        fd = max(fd, int(fd_fraction * fds))
    return ScopeLimit(**{name: up(name) for name in RESOURCES if name != "fds"}, fds=fd)


_Z = ScopeLimit(0, 0, 0, 0, 0, 0, 0, 0)  # an increase of nothing
# go-libp2p's DefaultLimits (p2p/host/resource-manager/limit_defaults.go): base, increase per GiB,
# fraction of the file descriptors. Unset fields there are unlimited here.
_SYSTEM = (ScopeLimit(64, 128, 128, 1024, 2048, 2048, 128 * MiB, 256), ScopeLimit(64, 128, 128, 1024, 2048, 2048, GiB, 0), 1.0)
_TRANSIENT = (ScopeLimit(32, 64, 64, 128, 256, 256, 32 * MiB, 64), ScopeLimit(16, 32, 32, 128, 256, 256, 128 * MiB, 0), 0.25)
_SERVICE = (
    ScopeLimit(streams_inbound=1024, streams_outbound=4096, streams=4096, memory=64 * MiB),
    dataclasses.replace(_Z, streams_inbound=512, streams_outbound=2048, streams=2048, memory=128 * MiB),
    0.0,
)
_SERVICE_PEER = (
    ScopeLimit(streams_inbound=128, streams_outbound=256, streams=256, memory=16 * MiB),
    dataclasses.replace(_Z, streams_inbound=4, streams_outbound=8, streams=8, memory=4 * MiB),
    0.0,
)
_PROTOCOL = (
    ScopeLimit(streams_inbound=512, streams_outbound=2048, streams=2048, memory=64 * MiB),
    dataclasses.replace(_Z, streams_inbound=256, streams_outbound=512, streams=512, memory=164 * MiB),
    0.0,
)
_PROTOCOL_PEER = (
    ScopeLimit(streams_inbound=64, streams_outbound=128, streams=256, memory=16 * MiB),
    dataclasses.replace(_Z, streams_inbound=4, streams_outbound=8, streams=16, memory=4),
    0.0,
)
_PEER = (
    ScopeLimit(8, 8, 8, 256, 512, 512, 64 * MiB, 4),
    dataclasses.replace(_Z, streams_inbound=128, streams_outbound=256, streams=256, memory=128 * MiB),
    1.0 / 64,
)
_CONN = (ScopeLimit(1, 1, 1, memory=32 * MiB, fds=1), _Z, 0.0)
_STREAM = (ScopeLimit(streams_inbound=1, streams_outbound=1, streams=1, memory=16 * MiB), _Z, 0.0)


def holds_fd(addr: Multiaddr) -> bool:
    """Whether a connection to or from ``addr`` holds a file descriptor of its own: TCP (and what
    runs over it) does; QUIC shares its UDP socket; memory and relayed connections hold none. Reads
    the binary form (``str(addr)`` costs ~10 µs, this well under 1)."""
    b = addr.to_bytes()
    if len(b) == 8 and b[0] == 0x04 and b[5] == 0x06:  # exactly /ip4/<4 bytes>/tcp/<port>
        return True
    if len(b) == 20 and b[0] == 0x29 and b[17] == 0x06:  # exactly /ip6/<16 bytes>/tcp/<port>
        return True
    ip_end = 5 if b[:1] == b"\x04" else 17 if b[:1] == b"\x29" else 0
    if ip_end and b[ip_end : ip_end + 2] == b"\x91\x02":  # /ip4|ip6/.../udp/...: QUIC, WebRTC
        return False
    text = str(addr)  # longer forms (dns names, /ws, circuits): rare on this path
    return "/tcp/" in text and "/p2p-circuit" not in text


def machine_memory() -> int:
    """Total physical memory in bytes (0 when the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def fd_limit() -> int:
    """The process's soft limit on open file descriptors (0 when unknown)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 0
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


@dataclass(frozen=True)
class ResourceLimits:
    """Every limit of a host's resource manager (``HostConfig.resources``).

    The default is :meth:`autoscale` (go's figures scaled to this machine). ``peers``, ``protocols``
    and ``services`` give single peers, protocols or services limits of their own. ``allowlist``
    holds peer ids and multiaddrs (``/ip4/10.0.0.0/ipcidr/8`` for a range, or a plain
    ``/ip4/1.2.3.4``): their connections are charged to the allowlisted scopes when the ordinary
    system/transient ones are full.
    """

    system: ScopeLimit = field(default_factory=ScopeLimit)
    """The whole host: every connection, stream and reservation."""
    transient: ScopeLimit = field(default_factory=ScopeLimit)
    """Connections in their handshake (no peer yet) and streams still negotiating their protocol."""
    allowlisted_system: ScopeLimit = field(default_factory=ScopeLimit)
    """The system scope of allowlisted addresses, used once the ordinary one is full."""
    allowlisted_transient: ScopeLimit = field(default_factory=ScopeLimit)
    """The transient scope of allowlisted addresses, used once the ordinary one is full."""
    peer: ScopeLimit = field(default_factory=ScopeLimit)
    """Each peer (all its connections and streams)."""
    conn: ScopeLimit = field(default_factory=ScopeLimit)
    """Each connection (its memory: buffers of its muxer and security)."""
    stream: ScopeLimit = field(default_factory=ScopeLimit)
    """Each stream."""
    service: ScopeLimit = field(default_factory=ScopeLimit)
    """Each service (streams of its handlers, memory it reserves), unless named in ``services``."""
    service_peer: ScopeLimit = field(default_factory=ScopeLimit)
    """Each service's share of one peer."""
    protocol: ScopeLimit = field(default_factory=ScopeLimit)
    """Each protocol (streams that negotiated it), unless named in ``protocols``."""
    protocol_peer: ScopeLimit = field(default_factory=ScopeLimit)
    """Each protocol's share of one peer."""
    peers: Mapping[PeerId, ScopeLimit] = field(default_factory=dict, hash=False)
    """Limits of single peers instead of ``peer``."""
    protocols: Mapping[str, ScopeLimit] = field(default_factory=dict, hash=False)
    """Limits of single protocols instead of ``protocol``."""
    services: Mapping[str, ScopeLimit] = field(default_factory=dict, hash=False)
    """Limits of single services (by class name) instead of ``service``."""
    allowlist: tuple[PeerId | str, ...] = ()
    """Trusted peer ids and multiaddrs/CIDRs (see the class description)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("peers", "protocols", "services"):
                if not isinstance(value, Mapping) or not all(isinstance(v, ScopeLimit) for v in value.values()):
                    raise ConfigError(f"ResourceLimits.{f.name}: expected a mapping to ScopeLimit, got {value!r}")
            elif f.name == "allowlist":
                object.__setattr__(self, "allowlist", tuple(value))
                Allowlist(self.allowlist)  # parse now: a typo fails here
            elif not isinstance(value, ScopeLimit):
                raise ConfigError(f"ResourceLimits.{f.name}: expected a ScopeLimit, got {type(value).__name__}")

    @classmethod
    def scaled(cls, memory: int, fds: int) -> ResourceLimits:
        """go's ``ScalingLimitConfig.Scale(memory, fds)``: ``memory`` is what libp2p may use."""
        s: dict[str, Any] = {}
        for name, spec in (
            ("system", _SYSTEM),
            ("transient", _TRANSIENT),
            ("allowlisted_system", _SYSTEM),
            ("allowlisted_transient", _TRANSIENT),
            ("service", _SERVICE),
            ("service_peer", _SERVICE_PEER),
            ("protocol", _PROTOCOL),
            ("protocol_peer", _PROTOCOL_PEER),
            ("peer", _PEER),
            ("conn", _CONN),
            ("stream", _STREAM),
        ):
            s[name] = _scaled(*spec, memory, fds)
        return cls(**s)

    @classmethod
    def autoscale(cls, memory: int | None = None, fds: int | None = None) -> ResourceLimits:
        """go's ``DefaultLimits.AutoScale()``: scaled to an eighth of the machine's memory and half the
        process's file descriptors (or the ``memory``/``fds`` totals given)."""
        mem = machine_memory() if memory is None else memory
        nfd = fd_limit() if fds is None else fds
        return cls.scaled(mem // 8, nfd // 2)

    @classmethod
    def unlimited(cls) -> ResourceLimits:
        """No limit anywhere (accounting and stats still work)."""
        return cls()

    def override(self, **scopes: Mapping[str, int] | ScopeLimit) -> ResourceLimits:
        """A copy with some limits changed: ``limits.override(peer={"streams_inbound": 16})``."""
        changes: dict[str, Any] = {}
        for name, value in scopes.items():
            current = getattr(self, name, None)
            if not isinstance(current, ScopeLimit):
                raise ConfigError(f"ResourceLimits has no scope {name!r}")
            changes[name] = value if isinstance(value, ScopeLimit) else dataclasses.replace(current, **value)
        return dataclasses.replace(self, **changes)


class Allowlist:
    """Peers and address ranges that are trusted (see :attr:`ResourceLimits.allowlist`)."""

    def __init__(self, entries: Iterable[PeerId | str | Multiaddr]) -> None:
        self.peers: set[PeerId] = set()
        self._nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            if isinstance(entry, PeerId):
                self.peers.add(entry)
                continue
            text = str(entry)
            if not text.startswith("/"):
                try:
                    self.peers.add(PeerId.from_string(text))
                except Exception as exc:
                    raise ConfigError(f"allowlist: {text!r} is neither a peer id nor a multiaddr") from exc
                continue
            parts = text.strip("/").split("/")
            try:
                if len(parts) >= 4 and parts[2] == "ipcidr":
                    self._nets.append(ipaddress.ip_network(f"{parts[1]}/{parts[3]}", strict=False))
                elif len(parts) >= 2 and parts[0] in ("ip4", "ip6"):
                    self._nets.append(ipaddress.ip_network(parts[1]))
                else:
                    raise ValueError("expected /ip4/... or /ip6/..., optionally /ipcidr/N")
                if "p2p" in parts:
                    self.peers.add(PeerId.from_string(parts[parts.index("p2p") + 1]))
            except Exception as exc:
                raise ConfigError(f"allowlist: cannot use {text!r}: {exc}") from exc

    def __bool__(self) -> bool:
        return bool(self.peers or self._nets)

    def allows_addr(self, addr: Multiaddr | None) -> bool:
        """True when ``addr``'s IP is in an allowlisted range."""
        if not self._nets or addr is None:
            return False
        parts = str(addr).split("/")
        if len(parts) < 3 or parts[1] not in ("ip4", "ip6"):
            return False
        try:
            ip = ipaddress.ip_address(parts[2])
        except ValueError:
            return False
        return any(ip in net for net in self._nets)


@dataclass(frozen=True)
class ResourceLimitReached(ServiceEvent):
    """A reservation was refused (reported at most once per scope and resource every few seconds;
    ``count`` says how many refusals of that kind there were in total)."""

    scope: str
    """The scope at its limit (``"system"``, ``"peer"``, ``"protocol:<id>"``, ...)."""
    resource: str
    """What ran out (``"conns_inbound"``, ``"streams_inbound"``, ``"memory"``, ...)."""
    count: int
    """Refusals of this scope and resource so far."""
    peer: PeerId | None = None
    """The peer refused, when there was one."""


class Scope:
    """Usage and limit of one scope; the manager and the scope handles update it."""

    __slots__ = (
        "conns_inbound",
        "conns_outbound",
        "fds",
        "kind",
        "limit",
        "memory",
        "name",
        "refs",
        "streams_inbound",
        "streams_outbound",
    )

    def __init__(self, kind: str, name: str, limit: ScopeLimit) -> None:
        self.kind = kind
        self.name = name
        self.limit = limit
        self.conns_inbound = self.conns_outbound = 0
        self.streams_inbound = self.streams_outbound = 0
        self.memory = 0
        self.fds = 0
        self.refs = 0  # handles (connections, streams) that point at this scope

    def idle(self) -> bool:
        """Nothing reserved and nobody holding it: a peer/protocol-peer scope may be dropped."""
        return not (self.refs or self.memory or self.conns_inbound or self.conns_outbound
                    or self.streams_inbound or self.streams_outbound or self.fds)  # fmt: skip

    def usage(self) -> dict[str, int]:
        """Current usage, by resource."""
        return {
            "conns_inbound": self.conns_inbound,
            "conns_outbound": self.conns_outbound,
            "streams_inbound": self.streams_inbound,
            "streams_outbound": self.streams_outbound,
            "memory": self.memory,
            "fds": self.fds,
        }


def _conn_refusal(scopes: tuple[Scope, ...], inbound: bool, fd: int) -> tuple[Scope, str] | None:
    for s in scopes:
        lim = s.limit
        total = s.conns_inbound + s.conns_outbound
        if total >= lim.conns:
            return s, "conns"
        if inbound:
            if s.conns_inbound >= lim.conns_inbound:
                return s, "conns_inbound"
        elif s.conns_outbound >= lim.conns_outbound:
            return s, "conns_outbound"
        if fd and s.fds + fd > lim.fds:
            return s, "fds"
    return None


def _stream_refusal(scopes: tuple[Scope, ...], inbound: bool) -> tuple[Scope, str] | None:
    for s in scopes:
        lim = s.limit
        if s.streams_inbound + s.streams_outbound >= lim.streams:
            return s, "streams"
        if inbound:
            if s.streams_inbound >= lim.streams_inbound:
                return s, "streams_inbound"
        elif s.streams_outbound >= lim.streams_outbound:
            return s, "streams_outbound"
    return None


def _add_conn(scopes: Iterable[Scope], inbound: bool, fd: int, n: int) -> None:
    for s in scopes:
        if inbound:
            s.conns_inbound += n
        else:
            s.conns_outbound += n
        s.fds += fd * n


def _add_stream(scopes: Iterable[Scope], inbound: bool, n: int) -> None:
    for s in scopes:
        if inbound:
            s.streams_inbound += n
        else:
            s.streams_outbound += n


_PER_PEER_KINDS = frozenset(("peer", "protocol-peer", "service-peer"))  # the scopes dropped once idle


class ResourceManager:
    """The host's scopes and their limits (``host.resources``).

    ``on_refused(error)`` is called for every refusal (after it was counted), with the
    :class:`~mycel.core.errors.ResourceLimitExceeded` about to be raised.
    """

    def __init__(
        self,
        limits: ResourceLimits | None = None,
        on_refused: Callable[[ResourceLimitExceeded], None] | None = None,
    ) -> None:
        self.limits = limits if limits is not None else ResourceLimits.autoscale()
        self.allowlist = Allowlist(self.limits.allowlist)
        self._on_refused = on_refused
        lim = self.limits
        self.system = Scope("system", "system", lim.system)
        self.transient = Scope("transient", "transient", lim.transient)
        # every connection's own memory cap: one limit and one name for refusals, shared (a connection's
        # MemoryScope counts its own bytes, so no Scope object per connection)
        self._conn_cap = Scope("conn", "conn", lim.conn)
        self.allowlisted_system = Scope("allowlisted-system", "allowlisted-system", lim.allowlisted_system)
        self.allowlisted_transient = Scope("allowlisted-transient", "allowlisted-transient", lim.allowlisted_transient)
        self._peers: dict[PeerId, Scope] = {}
        self._protocols: dict[str, Scope] = {}
        self._protocol_peers: dict[tuple[str, PeerId], Scope] = {}
        self._services: dict[str, Scope] = {}
        self._service_peers: dict[tuple[str, PeerId], Scope] = {}
        # refusals: (scope kind or "protocol:<id>"/"service:<name>", resource) -> count
        self.refusals: dict[tuple[str, str], int] = {}
        self._conns: set[ConnectionScope] = set()

    # -- scopes -------------------------------------------------------------------------------
    def peer_scope(self, peer: PeerId) -> Scope:
        """The scope of ``peer`` (created on first use, dropped once idle)."""
        scope = self._peers.get(peer)
        if scope is None:
            scope = self._peers[peer] = Scope("peer", "peer", self.limits.peers.get(peer, self.limits.peer))
        return scope

    def protocol_scope(self, protocol: str) -> Scope:
        """The scope of ``protocol`` (protocols are ours: the handlers we serve and dial)."""
        scope = self._protocols.get(protocol)
        if scope is None:
            scope = self._protocols[protocol] = Scope(
                "protocol", protocol, self.limits.protocols.get(protocol, self.limits.protocol)
            )
        return scope

    def _protocol_peer_scope(self, protocol: str, peer: PeerId) -> Scope:
        key = (protocol, peer)
        scope = self._protocol_peers.get(key)
        if scope is None:
            scope = self._protocol_peers[key] = Scope("protocol-peer", protocol, self.limits.protocol_peer)
        return scope

    def _service_scope(self, service: str) -> Scope:
        scope = self._services.get(service)
        if scope is None:
            scope = self._services[service] = Scope(
                "service", service, self.limits.services.get(service, self.limits.service)
            )
        return scope

    def _service_peer_scope(self, service: str, peer: PeerId) -> Scope:
        key = (service, peer)
        scope = self._service_peers.get(key)
        if scope is None:
            scope = self._service_peers[key] = Scope("service-peer", service, self.limits.service_peer)
        return scope

    def _drop_if_idle(self, scope: Scope, peer: PeerId | None = None) -> None:
        if peer is None or scope.kind not in _PER_PEER_KINDS or not scope.idle():
            return
        if scope.kind == "peer":
            if self._peers.get(peer) is scope:
                del self._peers[peer]
        elif scope.kind == "protocol-peer":
            self._protocol_peers.pop((scope.name, peer), None)
        elif scope.kind == "service-peer":
            self._service_peers.pop((scope.name, peer), None)

    # -- refusals -----------------------------------------------------------------------------
    def _refuse(self, scope: Scope, resource: str, what: str, peer: PeerId | None = None) -> ResourceLimitExceeded:
        key = scope.kind if scope.kind in ("system", "transient", "peer", "allowlisted-system",
                                           "allowlisted-transient", "conn", "stream") else f"{scope.kind}:{scope.name}"  # fmt: skip
        count = self.refusals.get((key, resource), 0) + 1
        self.refusals[(key, resource)] = count
        limit = getattr(scope.limit, resource)
        err = ResourceLimitExceeded(
            f"{what}: {key} scope at its {resource} limit ({limit})", scope=key, resource=resource, peer=peer
        )
        if self._on_refused is not None:
            self._on_refused(err)
        return err

    # -- connections --------------------------------------------------------------------------
    def open_connection(
        self, direction: Direction, remote_addr: Multiaddr | None = None, *, fd: bool = True
    ) -> ConnectionScope:
        """Reserve a connection that has no known peer yet (pending: system + transient scopes).

        Raises ResourceLimitExceeded when they are full and the address is not allowlisted (an
        allowlisted address falls back to the allowlisted scopes)."""
        inbound = direction is Direction.INBOUND
        nfd = 1 if fd else 0
        scopes: tuple[Scope, ...] = (self.transient, self.system)
        refusal = _conn_refusal(scopes, inbound, nfd)
        allowlisted = False
        if refusal is not None and self.allowlist.allows_addr(remote_addr):
            scopes = (self.allowlisted_transient, self.allowlisted_system)
            allowlisted = True
            refusal = _conn_refusal(scopes, inbound, nfd)
        if refusal is not None:
            raise self._refuse(*refusal, f"{direction.value} connection with {remote_addr}")
        _add_conn(scopes, inbound, nfd, 1)
        cs = ConnectionScope(self, inbound, nfd, scopes, allowlisted, remote_addr)
        self._conns.add(cs)
        return cs

    # -- services -----------------------------------------------------------------------------
    def system_memory(self) -> MemoryScope:
        """A handle reserving memory from the system scope alone (the muxers' buffers use one)."""
        return MemoryScope(self, (self.system,), None)

    def service_scope(self, service: str, peer: PeerId | None = None) -> MemoryScope:
        """A handle for reserving memory of ``service`` (e.g. its queues), with ``peer`` charged too
        when given. Release what it holds with :meth:`MemoryScope.close`."""
        scopes = [self._service_scope(service), self.system]
        if peer is not None:
            scopes.insert(0, self._service_peer_scope(service, peer))
        return MemoryScope(self, tuple(scopes), peer)

    # -- stats --------------------------------------------------------------------------------
    def prune_streams(self) -> int:
        """Release the scopes of outbound streams that have finished (they are released lazily, when a
        limit is reached); the number released."""
        return sum(cs._prune_outbound() for cs in list(self._conns))

    def stats(self) -> dict[str, Any]:
        """Usage, limits and refusals, by scope: ``connections`` (pending = in their handshake, and
        established, by direction), ``system``, ``transient``, the allowlisted ones, ``peers`` (usage
        of each peer), ``protocols``, ``services``, and ``refused`` (scope -> resource -> count)."""
        self.prune_streams()

        def one(s: Scope) -> dict[str, Any]:
            return {**s.usage(), "limit": dataclasses.asdict(s.limit)}

        refused: dict[str, dict[str, int]] = {}
        for (scope, resource), n in self.refusals.items():
            refused.setdefault(scope, {})[resource] = n
        sys_, tr, asys, atr = self.system, self.transient, self.allowlisted_system, self.allowlisted_transient
        pending_in = tr.conns_inbound + atr.conns_inbound
        pending_out = tr.conns_outbound + atr.conns_outbound
        return {
            "connections": {
                "pending_inbound": pending_in,
                "pending_outbound": pending_out,
                "established_inbound": sys_.conns_inbound + asys.conns_inbound - pending_in,
                "established_outbound": sys_.conns_outbound + asys.conns_outbound - pending_out,
            },
            "system": one(self.system),
            "transient": one(self.transient),
            "allowlisted_system": one(self.allowlisted_system),
            "allowlisted_transient": one(self.allowlisted_transient),
            "peers": {str(p): s.usage() for p, s in self._peers.items()},
            "protocols": {p: s.usage() for p, s in self._protocols.items()},
            "services": {n: s.usage() for n, s in self._services.items()},
            "refused": refused,
            "refused_total": sum(self.refusals.values()),
        }


class MemoryScope:
    """Memory reservations on a chain of scopes (a connection's, a stream's, a service's).

    ``reserve(n)`` raises ResourceLimitExceeded (nothing reserved) when a scope would go over;
    ``release(n)`` gives back. For a hot path, reserve in large chunks (:class:`MemoryBudget`)."""

    __slots__ = ("_mgr", "_peer", "_scopes", "reserved", "_cap")

    def __init__(
        self, mgr: ResourceManager, scopes: tuple[Scope, ...], peer: PeerId | None, cap: Scope | None = None
    ) -> None:
        self._mgr = mgr
        self._scopes = scopes
        self._peer = peer
        self.reserved = 0
        self._cap = cap  # a limit on this handle's own bytes (``reserved``), named by that scope in refusals
        for s in scopes:
            s.refs += 1

    def reserve(self, n: int) -> None:
        """Reserve ``n`` bytes in every scope of the chain, or none (ResourceLimitExceeded)."""
        cap = self._cap
        if cap is not None and self.reserved + n > cap.limit.memory:
            raise self._mgr._refuse(cap, "memory", f"reserving {n} bytes", self._peer)
        for s in self._scopes:
            if s.memory + n > s.limit.memory:
                raise self._mgr._refuse(s, "memory", f"reserving {n} bytes", self._peer)
        for s in self._scopes:
            s.memory += n
        self.reserved += n

    def fits(self, n: int) -> bool:
        """Whether ``n`` more bytes fit in every scope of the chain (nothing reserved or counted)."""
        cap = self._cap
        if cap is not None and self.reserved + n > cap.limit.memory:
            return False
        return all(s.memory + n <= s.limit.memory for s in self._scopes)

    def try_reserve(self, n: int) -> bool:
        """:meth:`reserve` that answers False instead of raising (the refusal is still counted)."""
        try:
            self.reserve(n)
        except ResourceLimitExceeded:
            return False
        return True

    def release(self, n: int) -> None:
        """Give back ``n`` bytes (at most what is reserved)."""
        n = min(n, self.reserved)
        for s in self._scopes:
            s.memory -= n
        self.reserved -= n

    def close(self) -> None:
        """Release everything and let go of the scopes. Idempotent."""
        if self._scopes:
            self.release(self.reserved)
            for s in self._scopes:
                s.refs -= 1
                self._mgr._drop_if_idle(s, self._peer)
            self._scopes = ()


class ScopeReserver:
    """A :class:`MemoryScope` behind the ``reserve(n) -> bool`` / ``release(n)`` interface of the
    muxers' budgets (:class:`mycel.muxers.budget.MemoryReserver`): a refusal answers False (and is
    counted) instead of raising, so a muxer's per-peer budget can sit inside the host's scopes."""

    __slots__ = ("scope",)

    def __init__(self, scope: MemoryScope) -> None:
        self.scope = scope

    def reserve(self, n: int) -> bool:
        """Take ``n`` bytes if every scope has room; False otherwise (nothing taken)."""
        return n <= 0 or self.scope.try_reserve(n)

    def release(self, n: int) -> None:
        """Give back ``n`` bytes."""
        if n > 0:
            self.scope.release(n)


def charge_muxer_memory(muxer: object, mgr: ResourceManager) -> bool:
    """Make the receive buffers of ``muxer`` (a Yamux or Mplex of this host) count against the system
    scope's memory: each per-peer budget of the muxer gets the system scope as its parent, so a
    refusal there refuses new streams (and stops window growth) as the muxer's own budgets do.
    False when ``muxer`` keeps no per-peer budgets."""
    budgets = getattr(muxer, "peer_budgets", None)
    if not isinstance(budgets, PeerBudgets):
        return False
    if not isinstance(budgets, ScopedPeerBudgets):
        setattr(muxer, "peer_budgets", ScopedPeerBudgets(budgets, ScopeReserver(mgr.system_memory())))
    return True


class ScopedPeerBudgets(PeerBudgets):
    """A muxer's per-peer budgets (:class:`mycel.muxers.budget.PeerBudgets`) inside a scope of the host."""

    __slots__ = ("reserver",)

    def __init__(self, template: PeerBudgets, reserver: ScopeReserver) -> None:
        super().__init__(template.limit, template.stream_limit)
        self.reserver = reserver

    def acquire(self, peer: object) -> tuple[MuxerBudget, MuxerBudget]:
        """The peer's budgets, the memory one with the host's scope as its parent."""
        memory, streams = super().acquire(peer)
        if memory.parent is None:
            memory.parent = self.reserver
        return memory, streams


class MemoryBudget:
    """Memory use tracked byte by byte but reserved from a :class:`MemoryScope` in ``chunk``-sized
    steps, so a hot path touches the scopes once per chunk, not once per buffer."""

    __slots__ = ("_chunk", "_scope", "used")

    def __init__(self, scope: MemoryScope, chunk: int = 256 * 1024) -> None:
        self._scope = scope
        self._chunk = chunk
        self.used = 0

    def grow(self, n: int) -> bool:
        """Account ``n`` more bytes; False (nothing accounted) when the scopes refuse."""
        need = self.used + n - self._scope.reserved
        if need > 0:
            step = -(-need // self._chunk) * self._chunk
            if not self._scope.fits(step):
                step = need  # near the limit: only what is needed (refused and counted if over)
            if not self._scope.try_reserve(step):
                return False
        self.used += n
        return True

    def shrink(self, n: int) -> None:
        """Account ``n`` bytes fewer; whole chunks no longer needed go back to the scopes."""
        self.used = max(0, self.used - n)
        spare = self._scope.reserved - self.used
        if spare >= 2 * self._chunk:
            self._scope.release(spare - self._chunk)


class ConnectionScope:
    """One connection's reservation: transient until :meth:`set_peer`, then the peer's. Its
    :meth:`open_stream` reserves streams; :meth:`done` releases everything (idempotent).

    Slotted, its tables made on first use: one lives as long as each connection, idle or not."""

    __slots__ = (
        "_mgr", "inbound", "_fd", "_scopes", "_system", "_transient", "allowlisted", "remote_addr", "peer",
        "_peer_scope", "_outbound", "_prune_at", "_cached", "memory", "_done",
    )

    def __init__(
        self,
        mgr: ResourceManager,
        inbound: bool,
        fd: int,
        scopes: tuple[Scope, ...],
        allowlisted: bool,
        remote_addr: Multiaddr | None,
    ) -> None:
        self._mgr = mgr
        self.inbound = inbound
        self._fd = fd
        self._scopes = scopes  # what the connection itself is charged to
        self._system = scopes[-1]
        self._transient = scopes[0]
        self.allowlisted = allowlisted
        self.remote_addr = remote_addr
        self.peer: PeerId | None = None
        self._peer_scope: Scope | None = None
        self._outbound: list[tuple[Any, StreamScope]] | None = None  # (stream, its scope): released lazily
        self._prune_at = PRUNE_OUTBOUND_AT
        # protocol/service scopes of this peer (_scopes_for), and the whole chains streams share (_chain)
        self._cached: dict[str, tuple[Scope, ...]] | None = None
        self.memory = MemoryScope(mgr, scopes, None, mgr._conn_cap)
        self._done = False

    def set_peer(self, peer: PeerId) -> None:
        """The handshake named the peer: move the connection from the transient scope to ``peer``'s.
        Raises ResourceLimitExceeded (the connection is to be closed) when ``peer`` is at its limit."""
        if self.peer is not None or self._done:
            return
        mgr = self._mgr
        ps = mgr.peer_scope(peer)
        refusal = _conn_refusal((ps,), self.inbound, self._fd)
        if refusal is not None:
            if peer in mgr.allowlist.peers or self.allowlisted:
                pass  # trusted peers are not held to per-peer connection limits
            else:
                mgr._drop_if_idle(ps, peer)
                raise mgr._refuse(*refusal, f"connection to {peer}", peer)
        _add_conn((ps,), self.inbound, self._fd, 1)
        _add_conn((self._transient,), self.inbound, self._fd, -1)
        ps.refs += 2  # the connection, and its memory scope (which lets go of the transient one)
        self._transient.refs -= 1
        mem = self.memory
        if mem.reserved:
            ps.memory += mem.reserved
            self._transient.memory -= mem.reserved
        self._scopes = mem._scopes = (ps, self._system)
        mem._peer = peer
        self.peer = peer
        self._peer_scope = ps

    def open_stream(self, direction: Direction) -> StreamScope:
        """Reserve a stream on this connection (peer + transient + system until its protocol is set).

        Raises ResourceLimitExceeded; for an outbound stream, finished streams are released first."""
        inbound = direction is Direction.INBOUND
        ps = self._peer_scope
        mgr = self._mgr
        scopes = (ps, mgr.transient, self._system) if ps is not None else (mgr.transient, self._system)
        refusal = _stream_refusal(scopes, inbound)
        if refusal is not None and not inbound and mgr.prune_streams():
            refusal = _stream_refusal(scopes, inbound)
        if refusal is not None:
            raise mgr._refuse(*refusal, f"{direction.value} stream with {self.peer}", self.peer)
        _add_stream(scopes, inbound, 1)
        return StreamScope(self, inbound, scopes)

    def _scopes_for(self, kind: str, name: str) -> tuple[Scope, ...]:
        """The protocol (``kind`` "p") or service ("s") scopes a stream of this connection is charged
        to: the per-peer one and the overall one, looked up once per connection and kept with it."""
        key = kind + name
        cached = self._cached
        if cached is None:
            cached = self._cached = {}
        scopes = cached.get(key)
        if scopes is None:
            mgr, peer = self._mgr, self.peer
            if kind == "p":
                overall = mgr.protocol_scope(name)
                per_peer = mgr._protocol_peer_scope(name, peer) if peer is not None else None
            else:
                overall = mgr._service_scope(name)
                per_peer = mgr._service_peer_scope(name, peer) if peer is not None else None
            if per_peer is not None:
                per_peer.refs += 1  # held until the connection ends
                scopes = (per_peer, overall)
            else:
                scopes = (overall,)
            if len(cached) < MAX_CACHED_SCOPES:
                cached[key] = scopes
            elif per_peer is not None:
                per_peer.refs -= 1  # not kept: (a bound on names; ours are few)
        return scopes

    def _chain(self, key: str, make: Callable[[], tuple[Scope, ...]]) -> tuple[Scope, ...]:
        """A stream's whole chain of scopes for ``key`` (its protocol, its service), built once per
        connection and shared by its streams instead of a new tuple for each. Holds no references of
        its own: the scopes in it are held by the connection (:meth:`_scopes_for`, its peer scope)."""
        cached = self._cached
        if cached is None:
            cached = self._cached = {}
        chain = cached.get(key)
        if chain is None:
            chain = make()
            if len(cached) < MAX_CACHED_SCOPES:
                cached[key] = chain
        return chain

    def track_outbound(self, stream: object, scope: StreamScope) -> None:
        """Keep an outbound stream's scope until the stream is seen finished (released lazily: at
        the next refusal, in ``stats()``, or when the connection ends)."""
        if self._outbound is None:
            self._outbound = []
        self._outbound.append((stream, scope))
        if len(self._outbound) >= self._prune_at:  # amortized: the list stays within twice the live ones
            self._prune_outbound()
            self._prune_at = max(PRUNE_OUTBOUND_AT, 2 * len(self._outbound))

    def _prune_outbound(self) -> int:
        if not self._outbound:  # None or empty
            return 0
        live = []
        n = 0
        for stream, scope in self._outbound:
            if _stream_finished(stream):
                scope.done()
                n += 1
            else:
                live.append((stream, scope))
        self._outbound = live
        return n

    def done(self) -> None:
        """The connection ended: release it and every stream scope still held. Idempotent."""
        if self._done:
            return
        self._done = True
        mgr = self._mgr
        for _, scope in self._outbound or ():
            scope.done()
        self._outbound = None
        self.memory.close()
        _add_conn(self._scopes, self.inbound, self._fd, -1)
        for key, scopes in (self._cached or {}).items():
            if key[0] in "ps" and len(scopes) == 2:  # a per-peer protocol/service scope and its overall one
                scopes[0].refs -= 1
                mgr._drop_if_idle(scopes[0], self.peer)
        self._cached = None
        if self._peer_scope is not None:
            self._peer_scope.refs -= 1
            mgr._drop_if_idle(self._peer_scope, self.peer)
        mgr._conns.discard(self)


def _stream_finished(stream: object) -> bool:
    """Whether a stream we opened is over: closed or reset by us, reset by the peer, or its connection
    gone (the flags every :class:`~mycel.core.abc.MuxedStreamBase` keeps)."""
    if getattr(stream, "_closed", False) or getattr(stream, "_reset", False):
        return True
    conn = getattr(stream, "connection", None)
    return bool(getattr(conn, "is_closed", False))


class StreamScope:
    """One stream's reservation. :meth:`set_protocol` moves it from the transient scope to its
    protocol's (and that protocol's per-peer scope); :meth:`set_service` charges a service too."""

    __slots__ = ("_conn", "_inbound", "_scopes", "done_", "protocol", "service")

    def __init__(self, conn: ConnectionScope, inbound: bool, scopes: tuple[Scope, ...]) -> None:
        self._conn = conn
        self._inbound = inbound
        self._scopes = scopes
        self.protocol: str | None = None
        self.service: str | None = None
        self.done_ = False

    def set_protocol(self, protocol: str) -> None:
        """The stream speaks ``protocol``: charge the protocol scopes instead of the transient one.
        Raises ResourceLimitExceeded (reset the stream) when the protocol is at its limit."""
        if self.protocol is not None or self.done_:
            return
        conn = self._conn
        new = conn._scopes_for("p", protocol)
        refusal = _stream_refusal(new, self._inbound)
        if refusal is not None and not self._inbound and conn._mgr.prune_streams():
            refusal = _stream_refusal(new, self._inbound)
        if refusal is not None:
            raise conn._mgr._refuse(*refusal, f"{protocol} stream with {conn.peer}", conn.peer)
        transient = conn._mgr.transient
        _add_stream(new, self._inbound, 1)
        _add_stream((transient,), self._inbound, -1)
        old = self._scopes
        # (peer, transient, system) or (transient, system): the transient one gives way to the protocol's
        if len(old) == 3 and old[1] is transient and old[0] is conn._peer_scope:
            self._scopes = conn._chain("P" + protocol, lambda: (old[0], old[2], *new))
        else:
            self._scopes = tuple(s for s in old if s is not transient) + new
        self.protocol = protocol

    def set_service(self, service: str) -> None:
        """The stream belongs to ``service``: charge the service scopes too (ResourceLimitExceeded)."""
        if self.service is not None or self.done_:
            return
        conn = self._conn
        new = conn._scopes_for("s", service)
        refusal = _stream_refusal(new, self._inbound)
        if refusal is not None:
            raise conn._mgr._refuse(*refusal, f"{service} stream with {conn.peer}", conn.peer)
        _add_stream(new, self._inbound, 1)
        old = self._scopes
        protocol = self.protocol
        if protocol is not None and conn._cached is not None and old is conn._cached.get("P" + protocol):
            self._scopes = conn._chain("S" + service + "\0" + protocol, lambda: (*old, *new))
        else:
            self._scopes = (*old, *new)
        self.service = service

    def done(self) -> None:
        """The stream ended: release it. Idempotent. (The scopes it used are held by its connection,
        which outlives it.)"""
        if not self.done_:
            self.done_ = True
            _add_stream(self._scopes, self._inbound, -1)


class RefusalReporter:
    """Rate-limits the reports of refusals: at most one per (scope, resource) every ``interval``
    seconds. Sans-IO: the caller passes ``now``."""

    def __init__(self, interval: float = 10.0, max_keys: int = 1024) -> None:
        self.interval = interval
        self._max_keys = max_keys
        self._last: dict[tuple[str, str], float] = {}

    def due(self, scope: str, resource: str, now: float) -> bool:
        """True when this refusal is to be reported (logged and emitted)."""
        key = (scope, resource)
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        if last is None and len(self._last) >= self._max_keys:
            self._last.clear()  # protocol/service names are ours, so this is a safety net only
        self._last[key] = now
        return True


__all__ = [
    "UNLIMITED",
    "Allowlist",
    "charge_muxer_memory",
    "ConnectionScope",
    "MemoryBudget",
    "MemoryScope",
    "RefusalReporter",
    "ResourceLimitReached",
    "ResourceLimits",
    "ResourceManager",
    "Scope",
    "ScopeLimit",
    "ScopeReserver",
    "ScopedPeerBudgets",
    "StreamScope",
    "fd_limit",
    "holds_fd",
    "machine_memory",
]
