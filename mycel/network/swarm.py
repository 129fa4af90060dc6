"""The swarm: listeners, dialing (with address racing), the connection registry, inbound streams.

Everything it starts runs in the nursery it is given; closing the swarm closes every listener and
connection. A failing connection or handshake is logged and forgotten; it never takes the swarm down.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import trio
from multiaddr import Multiaddr

from mycel.core.abc import (
    Connection,
    ConnectionTransport,
    Corkable,
    Direction,
    InboundStreamPush,
    Listener,
    MuxedStream,
    RawConnection,
    StreamTransport,
    Transport,
)
from mycel.core.addrs import split_peer_id
from mycel.core.errors import (
    ConnectionClosed,
    ConnectionGated,
    DialError,
    DialPeerMismatch,
    HostClosed,
    MycelError,
    PeerIdMismatch,
    SimultaneousOpenError,
    TransportError,
)
from mycel.network.gater import ConnectionGater, allowed
from mycel.network.resources import ConnectionScope, ResourceLimits, ResourceManager, holds_fd
from mycel.network.limits import Refusal, SourceLimiter, SourceLimits, Ticket, WarningThrottle
from mycel.network.upgrader import STAGES, Upgrader

if TYPE_CHECKING:
    from mycel.core.identity import Identity
    from mycel.core.peer_id import PeerId

log = logging.getLogger("mycel.network.swarm")

MAX_PARALLEL_DIALS = 8  # addresses of one peer tried at once; the rest wait for a free slot
# Head start of one dial tier over the next (QUIC before TCP), go-libp2p's happy-eyeballs figures: about one
# RTT. The next tier starts at once when every dial of the previous one has failed.
PRIVATE_TIER_DELAY = 0.030  # loopback and private addresses
PUBLIC_TIER_DELAY = 0.250


def dial_tiers(addrs: Sequence[Multiaddr]) -> list[list[Multiaddr]]:
    """Group addresses into dial tiers, best first: QUIC (one round trip to a secure, multiplexed
    connection), then everything else. Order inside a tier is kept."""
    quic = [a for a in addrs if _is_quic(a)]
    other = [a for a in addrs if not _is_quic(a)]
    return [tier for tier in (quic, other) if tier]


def tier_delay(tier: Sequence[Multiaddr]) -> float:
    """How long ``tier`` gets before the next tier starts: short when every address is local."""
    return PRIVATE_TIER_DELAY if all(_is_private(a) for a in tier) else PUBLIC_TIER_DELAY


def _is_quic(addr: Multiaddr) -> bool:
    return any(p.name in ("quic-v1", "quic") for p in addr.protocols())


def _is_private(addr: Multiaddr) -> bool:
    for proto in addr.protocols():
        if proto.name in ("ip4", "ip6"):
            try:
                ip = ipaddress.ip_address(addr.value_for_protocol(proto.code))
            except ValueError:
                return False
            return bool(ip.is_private or ip.is_loopback or ip.is_link_local)
        if proto.name in ("dns", "dns4", "dns6", "dnsaddr"):
            return bool(addr.value_for_protocol(proto.code) == "localhost")
    return False


class _PendingDial:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.conn: Connection | None = None
        self.error: BaseException | None = None


class SwarmObserver(Protocol):
    """Hears how dials and handshakes went (the metrics service is one): add it to ``Swarm.observers``.
    Calls are synchronous and must not block; an observer that raises is logged and skipped."""

    def completed_handshake(self, conn: Connection, seconds: float) -> None:
        """``conn`` is up: dialed (dial + security + muxer) or accepted (security + muxer) in ``seconds``."""

    def failed_dialing(self, addr: Multiaddr, error: BaseException) -> None:
        """Dialing ``addr`` failed with ``error``."""


class Swarm:
    """Listeners, dials and the registry of live connections of one host (the host builds it).

    Everything runs in ``nursery``. Inbound raw connections are upgraded by ``upgrader`` within
    ``handshake_timeout`` seconds, each stage within ``stage_timeout``, at most ``max_pending_inbound``
    at a time and within ``source_limits`` per source (see :mod:`mycel.network.limits`: refused at
    accept, or the longest-stalled handshake is evicted; :meth:`stats` counts it all);
    ``on_connection`` / ``on_disconnect`` are called once per registered connection, and ``on_stream``
    runs for each inbound stream. ``tier_delay`` (seconds) overrides the head start of QUIC dials over
    the next tier; None picks it by address (30 ms private, 250 ms public).

    Every connection holds a scope of ``resources`` from its first byte (transient, then its peer's
    once the handshake names it) until it ends; ``gater`` is asked at each stage (see
    :mod:`mycel.network.gater`). A refusal fails a dial, and closes an inbound connection.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        identity: Identity,
        transports: Sequence[Transport],
        upgrader: Upgrader | None,
        *,
        handshake_timeout: float,
        max_pending_inbound: int,
        on_connection: Callable[[Connection], None],
        on_disconnect: Callable[[Connection, int], None],
        on_stream: Callable[[MuxedStream], Awaitable[None]],
        tier_delay: float | None = None,
        source_limits: SourceLimits | None = None,
        stage_timeout: float | None = None,
        resources: ResourceManager | None = None,
        gater: ConnectionGater | None = None,
    ) -> None:
        self._nursery = nursery
        self.resources = resources if resources is not None else ResourceManager(ResourceLimits.unlimited())
        self.gater = gater
        self._scopes: dict[Connection, ConnectionScope] = {}  # every connection we hold, until it ends
        self._tier_delay = tier_delay  # None: PRIVATE_/PUBLIC_TIER_DELAY by address
        self.identity = identity
        self.transports = list(transports)
        self.upgrader = upgrader
        self.handshake_timeout = handshake_timeout
        self._limiter = SourceLimiter(source_limits or SourceLimits(), max_pending_inbound)
        self._simultaneous_opens = 0  # outbound dials redialed after a TCP simultaneous open
        self._stage_timeout = stage_timeout
        self._refusals = WarningThrottle(log)
        self._on_connection = on_connection
        self._on_disconnect = on_disconnect
        self._on_stream = on_stream
        self._conns: dict[PeerId, list[Connection]] = {}
        self._dials: dict[PeerId, _PendingDial] = {}
        self._listeners: list[Listener[RawConnection] | Listener[Connection]] = []
        self._closed = False
        self.observers: list[SwarmObserver] = []
        """Told of every completed handshake and failed dial (see :class:`SwarmObserver`)."""

    # -- registry -----------------------------------------------------------------------------
    def scope_of(self, conn: Connection) -> ConnectionScope | None:
        """The resource scope of a live connection (None once it ended)."""
        return self._scopes.get(conn)

    def _release(self, conn: Connection) -> None:
        scope = self._scopes.pop(conn, None)
        if scope is not None:
            scope.done()

    def _open_scope(self, direction: Direction, local: Multiaddr, remote: Multiaddr) -> ConnectionScope:
        """The gater's accept/address stage, then a pending (transient) connection scope."""
        gater = self.gater
        if gater is not None:
            if direction is Direction.INBOUND:
                if not allowed(gater, "intercept_accept", local, remote):
                    raise ConnectionGated(f"gater refused the connection from {remote}")
        return self.resources.open_connection(direction, remote, fd=holds_fd(remote))

    def _check_upgraded(self, conn: Connection) -> None:
        if self.gater is not None and not allowed(self.gater, "intercept_upgraded", conn):
            raise ConnectionGated(f"gater refused the upgraded connection with {conn.remote_peer}")

    def _admit_secured(self, conn: Connection, scope: ConnectionScope) -> None:
        """For a connection its transport secured and muxed (QUIC): the gater's secured and upgraded
        stages, and the scope moved to the peer."""
        gater = self.gater
        if gater is not None and not allowed(
            gater, "intercept_secured", conn.direction, conn.remote_peer, conn.local_addr, conn.remote_addr
        ):
            raise ConnectionGated(f"gater refused the secured connection with {conn.remote_peer}")
        scope.set_peer(conn.remote_peer)
        charge = getattr(conn, "charge_memory", None)  # QUIC: its streams' unread bytes
        if charge is not None:
            charge(scope.memory)
        self._check_upgraded(conn)
    def connections(self, peer: PeerId | None = None) -> list[Connection]:
        """The open connections, to ``peer`` only when given."""
        if peer is not None:
            return [c for c in self._conns.get(peer, ()) if not c.is_closed]
        return [c for conns in self._conns.values() for c in conns if not c.is_closed]

    def connected_peers(self) -> list[PeerId]:
        """Peers with at least one open connection."""
        return [p for p, conns in self._conns.items() if any(not c.is_closed for c in conns)]

    @property
    def listen_addrs(self) -> list[Multiaddr]:
        """The addresses every listener actually bound (ports resolved)."""
        return [a for lst in self._listeners for a in lst.addrs]

    def _register(self, conn: Connection) -> bool:
        """Keep and run ``conn``; False (and the connection closed) once the swarm is closing.

        Every registered connection gets exactly one ``on_connection`` and, when it ends, exactly one
        ``on_disconnect`` (with the number of that peer's connections still registered)."""
        if self._closed:
            self._release(conn)
            self._nursery.start_soon(_close_quietly, conn)
            return False
        self._conns.setdefault(conn.remote_peer, []).append(conn)
        self._nursery.start_soon(self._run_connection, conn)
        self._on_connection(conn)
        return True

    async def _run_connection(self, conn: Connection) -> None:
        try:
            async with trio.open_nursery() as nursery:
                if isinstance(conn, InboundStreamPush):  # streams handed over as they open: no accept task
                    on_stream = self._on_stream
                    conn.set_inbound_handler(lambda stream: nursery.start_soon(on_stream, stream))
                else:
                    nursery.start_soon(self._accept_streams, conn, nursery)
                try:
                    await conn.run()
                except MycelError as exc:
                    log.info("connection to %s ended: %s", conn.remote_peer, exc)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    log.debug("connection to %s broke: %r", conn.remote_peer, exc)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await conn.aclose()
            self._release(conn)
            peers = self._conns.get(conn.remote_peer, [])
            if conn in peers:
                peers.remove(conn)
            if not peers:
                self._conns.pop(conn.remote_peer, None)
            self._on_disconnect(conn, len(peers))

    async def _accept_streams(self, conn: Connection, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await conn.accept_stream()
            except (ConnectionClosed, trio.ClosedResourceError, trio.BrokenResourceError):
                return
            nursery.start_soon(self._on_stream, stream)

    # -- listening ----------------------------------------------------------------------------
    async def listen(self, addr: Multiaddr) -> list[Multiaddr]:
        """Listen on ``addr`` with the first transport that can; return the addresses bound.

        Raises TransportError when no transport can, or a stream transport has no upgrader (no
        security or muxers configured); HostClosed once the swarm is closing.
        """
        self._check_open()
        for transport in self.transports:
            if not transport.can_listen(addr):
                continue
            if isinstance(transport, StreamTransport):
                if self.upgrader is None:
                    raise TransportError(f"{transport.name} needs security and muxers configured")
                listener = await transport.open_listener(addr)
                self._listeners.append(listener)
                self._nursery.start_soon(self._accept_raw_loop, listener)
                return listener.addrs
            if isinstance(transport, ConnectionTransport):
                clistener = await transport.open_listener(addr, self.identity)
                self._listeners.append(clistener)
                self._nursery.start_soon(self._accept_conn_loop, clistener)
                return clistener.addrs
        raise TransportError(f"no transport can listen on {addr}")

    async def _accept_raw_loop(self, listener: Listener[RawConnection]) -> None:
        while True:
            try:
                raw = await listener.accept()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            now = trio.current_time()
            ip = getattr(raw, "remote_ip", None)  # (SocketConnection has it: no multiaddr parsing, ~15 us)
            ticket, evicted = self._limiter.admit(ip if ip is not None else _ip_of(raw.remote_addr), now)
            for old in evicted:
                assert isinstance(old.data, _Watch)
                old.data.evict()
                self._refusals.warn("evicted", now, "evicting a stalled inbound handshake from %s", old.source)
            if isinstance(ticket, Refusal):
                self._refusals.warn(ticket.reason, now, "refusing %s: %s", raw.remote_addr, ticket.detail)
                await raw.aclose()
                continue
            ticket.data = watch = _Watch(self, ticket)
            watch.evicted_others = bool(evicted)
            self._nursery.start_soon(self._admitted_handshake, raw, watch)

    def stats(self) -> dict[str, int]:
        """Inbound handshake counters: admitted, pending, refusals by reason (``ip_pending``, ``ip_rate``,
        ``table_full``), ``evicted_stalled``, and ``timeout_<stage>`` per stage deadline missed; outbound
        ``dial_simultaneous_open`` (dials redialed from an ephemeral port after a TCP simultaneous open); then
        the counters of listeners that keep their own (QUIC: ``quic_<counter>``, summed over its listeners)."""
        out = {**{f"timeout_{stage}": 0 for stage in STAGES}, **self._limiter.stats()}
        out["dial_simultaneous_open"] = self._simultaneous_opens
        for listener in self._listeners:
            counters = getattr(listener, "stats", None)
            if counters is not None:
                name = getattr(listener, "stats_name", type(listener).__name__)
                for key, value in counters().items():
                    out[f"{name}_{key}"] = out.get(f"{name}_{key}", 0) + value
        return out

    async def _admitted_handshake(self, raw: RawConnection, watch: _Watch) -> None:
        ended = False  # (the handshake closes what it fails on itself)
        try:
            with watch.scope:  # cancelled at the current stage's deadline, or to evict the handshake
                await self._handshake_inbound(raw, watch)
                ended = True
        finally:
            self._limiter.release(watch.ticket)
            if not ended:  # stage deadline, eviction, or the host is closing: the socket goes too
                with trio.CancelScope(shield=True):
                    await raw.aclose()
        if watch.scope.cancelled_caught and not watch.evicted:
            stage = watch.stage
            self._limiter.count(f"timeout_{stage}")
            now, source = trio.current_time(), watch.ticket.source
            self._refusals.warn(f"timeout_{stage}", now, "inbound handshake from %s: %s stage timed out", source, stage)

    async def _handshake_inbound(self, raw: RawConnection, watch: _Watch) -> None:
        assert self.upgrader is not None
        scope: ConnectionScope | None = None
        if watch.evicted_others:
            # handshakes evicted to admit this one release their transient scope when they next run: let them
            await trio.lowlevel.checkpoint()
        start = trio.current_time()
        try:
            scope = self._open_scope(Direction.INBOUND, raw.local_addr, raw.remote_addr)
            with trio.fail_after(self.handshake_timeout):
                upgrade = self.upgrader.upgrade_inbound(raw, scope, observer=watch)
                conn = await _corked(raw, upgrade)
            self._check_upgraded(conn)
            self._scopes[conn], scope = scope, None
        except trio.TooSlowError:
            log.info("inbound handshake from %s timed out", raw.remote_addr)
            await raw.aclose()
            return
        except (MycelError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.info("inbound handshake from %s failed: %s", raw.remote_addr, exc)
            await raw.aclose()
            return
        finally:
            if scope is not None:
                scope.done()
        if self.observers:
            self._observe("completed_handshake", conn, trio.current_time() - start)
        self._register(conn)

    async def _accept_conn_loop(self, listener: Listener[Connection]) -> None:
        while True:
            try:
                conn = await listener.accept()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            try:
                scope = self._open_scope(Direction.INBOUND, conn.local_addr, conn.remote_addr)
                try:
                    self._admit_secured(conn, scope)
                except BaseException:
                    scope.done()
                    raise
            except MycelError as exc:
                log.info("inbound connection from %s refused: %s", conn.remote_addr, exc)
                self._nursery.start_soon(_close_quietly, conn)
                continue
            self._scopes[conn] = scope
            self._register(conn)

    # -- dialing ------------------------------------------------------------------------------
    def _transport_for(self, addr: Multiaddr) -> Transport | None:
        for transport in self.transports:
            if transport.can_dial(addr):
                return transport
        return None

    def _check_open(self) -> None:
        if self._closed:
            raise HostClosed("the host is closed; it dials nothing new")

    async def dial_addr(self, addr: Multiaddr) -> Connection:
        """Dial one address; ``/p2p/<id>`` at the end is checked against the remote's key."""
        self._check_open()
        base, peer = split_peer_id(addr)
        if peer is not None:
            return await self.dial_peer(peer, [base])
        return await self._dial_one(base, None)

    async def dial_peer(self, peer: PeerId, addrs: Sequence[Multiaddr]) -> Connection:
        """Reuse a live connection to ``peer`` or dial ``addrs`` (raced), deduplicating concurrent dials.

        Failures raise :class:`DialError` (:class:`DialPeerMismatch` when an address led to another
        peer), however many addresses were tried; :class:`HostClosed` once the swarm is closing."""
        self._check_open()
        if peer == self.identity.peer_id:
            raise DialError("refusing to dial ourselves")
        if self.gater is not None and not allowed(self.gater, "intercept_peer_dial", peer):
            raise ConnectionGated(f"gater refused dialing {peer}")
        existing = self.connections(peer)
        if existing:
            return existing[0]
        pending = self._dials.get(peer)
        if pending is not None:
            await pending.done.wait()
            if pending.conn is not None and not pending.conn.is_closed:
                return pending.conn
            if isinstance(pending.error, HostClosed):
                raise HostClosed("the host closed while dialing") from pending.error
            kind = DialPeerMismatch if isinstance(pending.error, PeerIdMismatch) else DialError
            errors = [pending.error] if pending.error is not None else []
            raise kind(f"dial to {peer} failed: {pending.error}", errors) from pending.error
        pending = _PendingDial()
        self._dials[peer] = pending
        try:
            conn = await self._race(peer, list(addrs))
            pending.conn = conn
            return conn
        except BaseException as exc:
            pending.error = exc
            raise
        finally:
            del self._dials[peer]
            pending.done.set()

    async def dial_new(self, peer: PeerId, addr: Multiaddr) -> Connection:
        """Dial ``peer`` at ``addr`` for a new connection even if one is open (AutoNAT's dial-back);
        the connection is registered like any other."""
        self._check_open()
        if peer == self.identity.peer_id:
            raise DialError("refusing to dial ourselves")
        return await self._dial_one(addr, peer)

    async def _race(self, peer: PeerId, addrs: list[Multiaddr]) -> Connection:
        """Dial ``addrs`` tier by tier (QUIC first): a tier starts when the previous one has had its head
        start or has failed entirely; dials already running go on, and the first connection wins."""
        candidates = [a for a in dict.fromkeys(addrs) if self._transport_for(a) is not None]
        if not candidates:
            raise DialError(f"no dialable address for {peer} (have {[str(a) for a in addrs]})")
        if len(candidates) == 1:
            return await self._dial_one(candidates[0], peer)
        winner: list[Connection] = []
        errors: list[BaseException] = []
        slots = trio.Semaphore(MAX_PARALLEL_DIALS)

        async def attempt(addr: Multiaddr, scope: trio.CancelScope, left: list[int], failed: trio.Event) -> None:
            try:
                async with slots:
                    try:
                        conn = await self._dial_one(addr, peer, register=False)
                    except (MycelError, OSError) as exc:
                        log.debug("dial %s failed: %s", addr, exc)
                        # the address's own failure, not _dial_one's wrapper of it
                        errors.append(exc.errors[0] if isinstance(exc, DialError) and len(exc.errors) == 1 else exc)
                        return
            finally:
                left[0] -= 1
                if not left[0]:
                    failed.set()  # (or succeeded: then the scope is cancelled below anyway)
            if winner:
                self._release(conn)
                await conn.aclose()
                return
            winner.append(conn)
            scope.cancel()

        tiers = dial_tiers(candidates)
        async with trio.open_nursery() as nursery:
            for i, tier in enumerate(tiers):
                left, failed = [len(tier)], trio.Event()
                for addr in tier:
                    nursery.start_soon(attempt, addr, nursery.cancel_scope, left, failed)
                if i + 1 < len(tiers):
                    delay = self._tier_delay if self._tier_delay is not None else tier_delay(tier)
                    with trio.move_on_after(delay):
                        await failed.wait()
                    if winner:
                        break
        if not winner:
            kind = DialPeerMismatch if any(isinstance(e, PeerIdMismatch) for e in errors) else DialError
            if errors and all(isinstance(e, ConnectionGated) for e in errors):
                kind = ConnectionGated
            raise kind(f"all {len(candidates)} addresses of {peer} failed: {_summary(errors)}", errors)
        if not self._register(winner[0]):
            raise HostClosed("the host closed while dialing")
        return winner[0]

    async def _dial_one(self, addr: Multiaddr, peer: PeerId | None, register: bool = True) -> Connection:
        transport = self._transport_for(addr)
        if transport is None:
            raise DialError(f"no transport for {addr}")
        if self.gater is not None and not allowed(self.gater, "intercept_addr_dial", peer, addr):
            raise ConnectionGated(f"gater refused dialing {addr}")
        try:
            scope = self.resources.open_connection(Direction.OUTBOUND, addr, fd=holds_fd(addr))
        except MycelError as exc:
            raise _dial_failure(addr, exc) from exc
        start = trio.current_time()
        try:
            conn = await self._dial_scoped(transport, addr, peer, scope)
        except BaseException as exc:
            scope.done()
            if self.observers and isinstance(exc, (MycelError, OSError)):
                self._observe("failed_dialing", addr, exc)
            raise
        if self.observers:
            self._observe("completed_handshake", conn, trio.current_time() - start)
        self._scopes[conn] = scope
        if register and not self._register(conn):
            raise HostClosed("the host closed while dialing")
        return conn

    def _observe(self, event: str, *args: Any) -> None:
        for observer in self.observers:
            try:
                getattr(observer, event)(*args)
            except Exception:
                log.exception("swarm observer %r failed in %s", observer, event)

    async def _dial_scoped(
        self, transport: Transport, addr: Multiaddr, peer: PeerId | None, scope: ConnectionScope
    ) -> Connection:
        if isinstance(transport, ConnectionTransport):
            try:
                with trio.fail_after(self.handshake_timeout):
                    conn = await transport.dial(addr, self.identity, peer)
                try:
                    self._admit_secured(conn, scope)
                except BaseException:
                    with trio.CancelScope(shield=True):
                        await _close_quietly(conn)
                    raise
            except trio.TooSlowError as exc:
                raise DialError(f"handshake with {addr} timed out", [exc]) from exc
            except DialError:
                raise
            except (MycelError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise _dial_failure(addr, exc) from exc
        elif isinstance(transport, StreamTransport):
            if self.upgrader is None:
                raise DialError(f"{transport.name} needs security and muxers configured")
            try:
                raw = await transport.dial(addr)
            except DialError:
                raise
            except (MycelError, OSError) as exc:
                raise _dial_failure(addr, exc) from exc
            try:
                with trio.fail_after(self.handshake_timeout):
                    try:
                        conn = await _corked(raw, self.upgrader.upgrade_outbound(raw, peer, scope))
                    except SimultaneousOpenError as exc:
                        if not raw.shares_listen_port:
                            raise
                        # our dial and the peer's, both from listen ports, met as one TCP connection with two
                        # initiators: dial once more from a port of our own (the peer does the same)
                        self._simultaneous_opens += 1
                        log.info("dial %s: simultaneous open (%s); redialing from an ephemeral port", addr, exc)
                        await raw.aclose()
                        raw = await transport.dial_ephemeral(addr)
                        conn = await _corked(raw, self.upgrader.upgrade_outbound(raw, peer, scope))
                self._check_upgraded(conn)
            except trio.TooSlowError as exc:
                await raw.aclose()
                raise DialError(f"handshake with {addr} timed out", [exc]) from exc
            except (MycelError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                await raw.aclose()
                raise _dial_failure(addr, exc) from exc
            except BaseException:
                with trio.CancelScope(shield=True):
                    await raw.aclose()
                raise
        else:
            raise DialError(f"unsupported transport type {type(transport).__name__}")
        return conn

    # -- shutdown -----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` started: no new dial, listener or connection is accepted."""
        return self._closed

    async def aclose(self) -> None:
        """Stop listening and close every connection (concurrently: one slow peer delays no other)."""
        self._closed = True
        async with trio.open_nursery() as nursery:
            for listener in self._listeners:
                nursery.start_soon(_close_quietly, listener)
            for conns in list(self._conns.values()):
                for conn in list(conns):
                    nursery.start_soon(_close_quietly, conn)


async def _close_quietly(thing: Connection | Listener[RawConnection] | Listener[Connection]) -> None:
    try:
        await thing.aclose()
    except (trio.ClosedResourceError, trio.BrokenResourceError, MycelError, OSError) as exc:
        log.debug("closing %r: %r", thing, exc)


class _Watch:
    """One admitted inbound handshake: its ticket, and the one cancel scope that both evicts it and
    enforces the deadline of the stage it is in (moved at each stage: no scope per stage)."""

    __slots__ = ("limiter", "ticket", "scope", "timeout", "stage", "evicted", "evicted_others", "set_at")

    def __init__(self, swarm: Swarm, ticket: Ticket) -> None:
        self.limiter = swarm._limiter
        self.ticket = ticket
        self.scope = trio.CancelScope()
        self.timeout = swarm._stage_timeout
        self.stage = ""
        self.evicted = False
        self.evicted_others = False  # admitting this one evicted stalled handshakes
        self.set_at = -math.inf  # when the deadline was last moved

    def stage_started(self, stage: str) -> None:
        """The upgrader starts ``stage``: the previous one finished (progress), this one's deadline runs."""
        now = trio.current_time()
        self.stage = stage
        self.limiter.progress(self.ticket, now)
        if self.timeout is not None and now - self.set_at > self.timeout / 20:
            # moving a cancel scope's deadline costs trio a heap entry: a stage that starts within a
            # twentieth of the timeout of the last move keeps that deadline (it gets >= 95 % of its time)
            self.scope.deadline = now + self.timeout
            self.set_at = now

    def evict(self) -> None:
        """Abort the handshake to make room for a newer one."""
        self.evicted = True
        self.scope.cancel()


def _ip_of(addr: Multiaddr) -> str | None:
    """The IP address in a multiaddr (None if it has none)."""
    for proto in addr.protocols():
        if proto.name in ("ip4", "ip6"):
            return str(addr.value_for_protocol(proto.code))
    return None


def _dial_failure(addr: Multiaddr, exc: BaseException) -> DialError:
    """The DialError for one address: DialPeerMismatch when the remote was another peer."""
    if isinstance(exc, ConnectionGated):
        return exc
    if isinstance(exc, PeerIdMismatch):
        return DialPeerMismatch(f"dial {addr}: {exc}", [exc])
    return DialError(f"dial {addr} failed: {exc}", [exc])


def _summary(errors: Sequence[BaseException]) -> str:
    return "; ".join(dict.fromkeys(str(e) or type(e).__name__ for e in errors)) or "no reason given"


async def _corked(raw: RawConnection, upgrade: Awaitable[Connection]) -> Connection:
    """Run an upgrade with the raw connection's small writes held back until it must wait for the
    peer (:class:`~mycel.core.abc.Corkable` transports, like TCP): the listener's multistream header,
    its answer and Noise message 2 leave in one write instead of three."""
    if not isinstance(raw, Corkable):
        return await upgrade
    raw.cork()
    conn = await upgrade
    await raw.uncork()
    return conn
