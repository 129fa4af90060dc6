"""The circuit relay v2 *client*: a transport that dials and listens through relays.

``RelayTransport()`` goes in ``HostConfig.transports`` next to TCP/QUIC (it lives here, with the relay
protocol, rather than under ``mycel/transports/``, because it is a client of the hop and stop protocols
and shares their messages). It is a :class:`~mycel.core.abc.ConnectionTransport`: it hands the swarm
finished connections, upgraded by the host's own security protocols and muxers over the relayed
stream, so everything above it sees one more ``Connection``.

Dialing ``/ip4/…/tcp/…/p2p/<relay>/p2p-circuit/p2p/<target>``: connect to the relay (through the host,
reusing a connection), open a hop stream, send ``CONNECT(target)``, and once the relay answers OK run
the security handshake (as initiator) and the muxer negotiation over that stream.

Listening on ``/p2p-circuit`` (accept relayed connections, reserving on the transport's configured
``relays``) or on ``<relay addr>/p2p/<relay>/p2p-circuit`` (reserve on that relay): the listener keeps a
reservation on each relay — refreshed before it expires, taken again when the relay connection drops —
and reports ``<relay addr>/p2p/<relay>/p2p-circuit`` for each live one as its addresses, so
``host.addrs`` and identify advertise them (``host.addrs_changed()`` is called when they change).
Inbound relayed connections arrive on the stop protocol: we answer OK, then run the handshake as
responder and check the peer is the one the relay named.

Relayed connections carry ``conn.limit`` (the relay's announced :class:`~mycel.core.abc.ConnectionLimit`):
they are *limited*, and ``host.new_stream`` refuses them unless the protocol opts in.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio
from multiaddr import Multiaddr

from mycel.core.abc import Connection, ConnectionLimit, ConnectionTransport, Direction, Listener, MuxedStream
from mycel.core.addrs import Reachability, as_multiaddr, split_peer_id
from mycel.core.errors import (
    ConfigError,
    DialError,
    MycelError,
    ProtocolViolation,
    TransportError,
)
from mycel.core.events import PeerDisconnected, ReachabilityChanged
from mycel.core.peer_id import PeerId
from mycel.network.upgrader import Upgrader
from mycel.protocols.relay.messages import (
    HOP_PROTOCOL,
    STOP_PROTOCOL,
    RelayError,
    RelayMessageError,
    RelayRefused,
    Status,
    limit_from_pb,
    open_voucher,
    parse_peer,
    pb_status,
    read_hop,
    read_stop,
    status_of,
    write_message,
)
from mycel.protocols.relay.pb import circuit_pb2
from mycel.protocols.relay.service import is_relayed
from mycel.testing.raw import StreamRawConnection

if TYPE_CHECKING:
    from mycel.core.identity import Identity
    from mycel.host import Host

log = logging.getLogger("mycel.protocols.relay.transport")

_HOP = circuit_pb2.HopMessage
_STOP = circuit_pb2.StopMessage
CIRCUIT = Multiaddr("/p2p-circuit")
INBOUND_QUEUE = 16  # upgraded relayed connections waiting for the swarm to take them; beyond: closed
MAX_INBOUND = 64  # stop streams (relayed connections arriving or open) at once; beyond: reset
REFRESH_MARGIN = 120.0  # refresh a reservation this long before it expires (at most half its life)
RETRY_MIN, RETRY_MAX = 1.0, 60.0  # backoff between failed reservation attempts on one relay
RELAY_DIAL_DELAY = 0.5  # go's dial ranker: relay addresses wait this long when the peer has direct ones
_STREAM_ERRORS = (MycelError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError)


def split_circuit(addr: Multiaddr) -> tuple[Multiaddr | None, PeerId]:
    """``<relay addr>/p2p/<relay>/p2p-circuit`` -> (relay addr or None, relay id); DialError if not that shape."""
    text = str(addr)
    head, sep, tail = text.partition("/p2p-circuit")
    if not sep or tail.strip("/"):
        raise DialError(f"{addr}: expected <relay address>/p2p/<relay>/p2p-circuit")
    base, relay = split_peer_id(head) if head else (Multiaddr(""), None)
    if relay is None:
        raise DialError(f"{addr}: /p2p-circuit needs /p2p/<relay> before it")
    return (base if str(base) else None), relay


class RelayedStream(StreamRawConnection):
    """A raw connection over a hop (dialer) or stop (listener) stream, for the upgrader."""

    def __init__(self, stream: MuxedStream, local: Multiaddr, remote: Multiaddr, direction: Direction) -> None:
        super().__init__(stream, local, remote, direction)
        self.muxed = stream
        self.closed = trio.Event()
        """Set once the connection over it was closed (the stop handler waits for it)."""

    async def aclose(self) -> None:
        self.closed.set()
        with contextlib.suppress(*_STREAM_ERRORS):
            await self.stream.aclose()


@dataclass
class RelayReservation:
    """A reservation we hold on a relay."""

    relay: PeerId
    expire: int
    """Unix seconds (the relay's word)."""
    addrs: list[Multiaddr]
    """Our addresses through this relay: ``<relay addr>/p2p/<relay>/p2p-circuit``."""
    limit: ConnectionLimit | None
    """The limit the relay announced for each relayed connection (None: none announced)."""
    voucher_verified: bool = False
    """True when the relay sent a voucher and it verified (signed by the relay's key, naming us)."""
    refreshed: int = 0
    """How many times a reservation on this relay was taken before this one (renewals, and new ones
    after the relay connection dropped)."""


@dataclass
class _RelaySlot:
    relay: PeerId
    addr: Multiaddr | None
    reservation: RelayReservation | None = None
    failures: int = 0
    taken: int = 0
    lost: trio.Event = field(default_factory=trio.Event)


class RelayListener(Listener[Connection]):
    """Keeps reservations on relays and yields the relayed connections that arrive (see the module)."""

    def __init__(self, transport: RelayTransport, relays: Sequence[tuple[Multiaddr | None, PeerId]]) -> None:
        self._transport = transport
        self._slots = {relay: _RelaySlot(relay, addr) for addr, relay in relays}
        self._send, self._recv = trio.open_memory_channel[Connection](INBOUND_QUEUE)
        self._scope = trio.CancelScope()
        self._closed = False
        self.changed = trio.Event()
        """Set (and replaced) whenever a reservation is taken, refreshed or lost."""

    @property
    def reservations(self) -> dict[PeerId, RelayReservation]:
        """The live reservations, by relay."""
        return {r: s.reservation for r, s in self._slots.items() if s.reservation is not None}

    @property
    def addrs(self) -> list[Multiaddr]:
        if self._closed:
            return []
        return [a for s in self._slots.values() if s.reservation is not None for a in s.reservation.addrs]

    async def accept(self) -> Connection:
        try:
            return await self._recv.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError("the relay listener is closed") from None

    def offer(self, conn: Connection) -> bool:
        """Queue an inbound relayed connection for the swarm; False when closed or full."""
        if self._closed:
            return False
        try:
            self._send.send_nowait(conn)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._scope.cancel()
        self._send.close()
        self._transport._listener_closed(self)
        await trio.lowlevel.checkpoint()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()
        self._transport._addrs_changed()

    async def keep_reservations(self) -> None:
        """Hold a reservation on every relay until the listener closes (host.spawn runs it)."""
        with self._scope:
            async with trio.open_nursery() as nursery:
                for slot in self._slots.values():
                    nursery.start_soon(self._keep, slot)

    async def _keep(self, slot: _RelaySlot) -> None:
        transport = self._transport
        while True:
            try:
                rsvp = await transport.reserve(slot.relay, slot.addr)
            except (MycelError, OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                slot.failures += 1
                delay = min(RETRY_MAX, RETRY_MIN * 2 ** (slot.failures - 1))
                log.info("reservation on %s failed (%s); trying again in %.0f s", slot.relay, exc, delay)
                if slot.reservation is not None:
                    slot.reservation = None
                    self._changed()
                await trio.sleep(delay)  # a backoff timer, not a wait for something to happen
                continue
            rsvp.refreshed = slot.taken
            slot.taken += 1
            slot.failures = 0
            slot.reservation = rsvp
            slot.lost = trio.Event()
            transport._watch_relay(slot)
            self._changed()
            remaining = max(0.0, rsvp.expire - transport.wall_clock())
            delay = remaining - min(REFRESH_MARGIN, remaining / 2)
            with trio.move_on_after(delay):
                await slot.lost.wait()
                log.info("connection to relay %s lost; reserving again", slot.relay)
                slot.reservation = None
                self._changed()


class RelayTransport(ConnectionTransport):
    """Dial and listen through circuit relays (see the module docstring).

    ``relays``: ``<addr>/p2p/<relay>`` of relays to reserve on when listening on plain ``/p2p-circuit``.
    ``max_inbound`` bounds relayed connections arriving or open at once (stop streams; beyond, reset).
    ``relay_dial_delay``: when the peerstore holds a direct address of the target, a relayed dial waits
    this long first, so that a direct dial racing it wins (go's ranker delays relay addresses 500 ms).
    ``listen_when_private``: follow AutoNAT (``ReachabilityChanged`` events): listen on ``/p2p-circuit``
    (reserving on ``relays``) while the host is found private, and close that listener once it is found
    public (go's autorelay, with static relays).
    """

    name = "p2p-circuit"

    def __init__(
        self,
        relays: Sequence[str | Multiaddr] = (),
        *,
        max_inbound: int = MAX_INBOUND,
        relay_dial_delay: float = RELAY_DIAL_DELAY,
        wall_clock: Callable[[], float] = time.time,
        listen_when_private: bool = False,
    ) -> None:
        self.relays: list[tuple[Multiaddr | None, PeerId]] = []
        for relay in relays:
            base, peer = split_peer_id(as_multiaddr(relay))
            if peer is None:
                raise ConfigError(f"RelayTransport.relays: {relay} needs /p2p/<relay id>")
            self.relays.append((base if str(base) else None, peer))
        if max_inbound < 1:
            raise ConfigError("RelayTransport.max_inbound: must be at least 1")
        self.max_inbound = max_inbound
        if relay_dial_delay < 0:
            raise ConfigError("RelayTransport.relay_dial_delay: must not be negative")
        self.relay_dial_delay = relay_dial_delay
        self.wall_clock = wall_clock
        self.listen_when_private = listen_when_private
        self._auto_listener: RelayListener | None = None  # the listener opened because we are private
        self._host: Host | None = None
        self._upgrader: Upgrader | None = None
        self._listeners: list[RelayListener] = []
        self._watch: dict[PeerId, list[_RelaySlot]] = {}
        self._changed: trio.Event | None = None  # set when any listener's reservations change
        self.refused_stops = 0
        """Stop streams refused (malformed, unexpected, no listener, wrong peer, queue full)."""

    # -- wiring ---------------------------------------------------------------------------------
    def attach_host(self, host: Host) -> None:
        """Called by the host on its own copy: upgrade with the host's security and muxers, serve stop."""
        self._host = host
        self._upgrader = Upgrader(host.identity, host.security, host.muxers)
        host.set_stream_handler(STOP_PROTOCOL, self._handle_stop, max_concurrent=self.max_inbound)
        host.spawn(self._watch_disconnects)

    def _attached(self) -> tuple[Host, Upgrader]:
        if self._host is None or self._upgrader is None:
            raise TransportError("RelayTransport is not attached to a host (put it in HostConfig.transports)")
        return self._host, self._upgrader

    def can_dial(self, addr: Multiaddr) -> bool:
        names = [p.name for p in addr.protocols()]
        return len(names) >= 2 and names[-1] == "p2p-circuit" and names[-2] == "p2p"

    def can_listen(self, addr: Multiaddr) -> bool:
        names = [p.name for p in addr.protocols()]
        return bool(names) and names[-1] == "p2p-circuit" and (len(names) == 1 or names[-2] == "p2p")

    @property
    def listeners(self) -> list[RelayListener]:
        """The open relay listeners."""
        return list(self._listeners)

    def reservations(self) -> dict[PeerId, RelayReservation]:
        """Every live reservation of every listener, by relay."""
        out: dict[PeerId, RelayReservation] = {}
        for listener in self._listeners:
            out.update(listener.reservations)
        return out

    async def wait_reserved(self, relay: PeerId | None = None, refreshed: int = 0) -> RelayReservation:
        """Wait until a reservation (on ``relay``, renewed at least ``refreshed`` times) is held."""
        while True:
            for peer, rsvp in self.reservations().items():
                if (relay is None or peer == relay) and rsvp.refreshed >= refreshed:
                    return rsvp
            if not self._listeners:
                raise TransportError("not listening on /p2p-circuit")
            if self._changed is None:
                self._changed = trio.Event()
            await self._changed.wait()

    def _addrs_changed(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        if self._host is not None:
            self._host.addrs_changed()

    def _listener_closed(self, listener: RelayListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)
            self._addrs_changed()

    def _watch_relay(self, slot: _RelaySlot) -> None:
        slots = self._watch.setdefault(slot.relay, [])
        if slot not in slots:
            slots.append(slot)

    async def _watch_disconnects(self) -> None:
        """Tell reservations that their relay's connection is gone (host events; lossy, so refresh
        timers remain the fallback)."""
        host, _ = self._attached()
        with host.subscribe(64) as events:
            async for event in events:
                if isinstance(event, PeerDisconnected):
                    for slot in self._watch.pop(event.peer, []):
                        slot.lost.set()
                elif isinstance(event, ReachabilityChanged) and self.listen_when_private:
                    await self._follow_reachability(host, event.reachability)

    async def _follow_reachability(self, host: Host, reachability: Reachability) -> None:
        """Private: listen on /p2p-circuit (reserve on our relays); public: stop that listener."""
        if reachability is Reachability.PRIVATE and self._auto_listener is None:
            try:
                await host.listen(CIRCUIT)
            except MycelError as exc:
                log.info("could not listen through relays after a private verdict: %s", exc)
                return
            self._auto_listener = self._listeners[-1] if self._listeners else None
            log.info("reachability private: reserving on %d relays", len(self.relays))
        elif reachability is Reachability.PUBLIC and self._auto_listener is not None:
            listener, self._auto_listener = self._auto_listener, None
            await listener.aclose()
            log.info("reachability public: relay reservations dropped")

    # -- listening ------------------------------------------------------------------------------
    async def open_listener(self, addr: Multiaddr, identity: Identity) -> Listener[Connection]:
        host, _ = self._attached()
        if len(list(addr.protocols())) == 1:
            relays = list(self.relays)
        else:
            relay_addr, relay = split_circuit(addr)
            relays = [(relay_addr, relay)]
        listener = RelayListener(self, relays)
        self._listeners.append(listener)
        if relays:
            host.spawn(listener.keep_reservations)
        return listener

    async def reserve(self, relay: PeerId, addr: Multiaddr | None) -> RelayReservation:
        """Take (or renew) a reservation on ``relay``; raises RelayRefused, RelayMessageError,
        InvalidVoucher (a voucher signed by another key, or for another peer), DialError."""
        host, _ = self._attached()
        conn = await host.connect(relay, [addr] if addr is not None else [])
        if is_relayed(conn):
            raise RelayError(f"will not reserve on {relay} over a relayed connection")
        stream = await host.open_stream_on(conn, [HOP_PROTOCOL])
        try:
            with trio.fail_after(host.config.negotiate_timeout):
                await write_message(stream, _HOP(type=_HOP.RESERVE))
                reply = await read_hop(stream)
        finally:
            with trio.CancelScope(shield=True), contextlib.suppress(*_STREAM_ERRORS):
                await stream.aclose()
        if reply.type != _HOP.STATUS:
            raise RelayMessageError(f"relay {relay} answered RESERVE with hop type {reply.type}")
        if status_of(reply) is not Status.OK:
            raise RelayRefused(f"relay {relay} refused the reservation: {status_of(reply).name}", status_of(reply))
        if not reply.HasField("reservation"):
            raise RelayMessageError(f"relay {relay} accepted the reservation but sent none")
        res = reply.reservation
        if res.expire <= self.wall_clock():
            raise RelayMessageError(f"relay {relay} sent a reservation that already expired ({res.expire})")
        verified = False
        if res.voucher:
            voucher = open_voucher(res.voucher, relay, host.peer_id)  # InvalidVoucher on a wrong key
            verified = True
            if voucher.expiration != res.expire:
                log.debug("relay %s: voucher expires at %d, reservation at %d", relay, voucher.expiration, res.expire)
        addrs = self._circuit_addrs(relay, res.addrs, conn)
        limit = limit_from_pb(reply.limit) if reply.HasField("limit") else None
        log.debug("reserved on %s until %d (%s)", relay, res.expire, [str(a) for a in addrs])
        return RelayReservation(relay, res.expire, addrs, limit, verified)

    def _circuit_addrs(self, relay: PeerId, raw: Sequence[bytes], conn: Connection) -> list[Multiaddr]:
        """``<relay addr>/p2p/<relay>/p2p-circuit`` for each address the relay announced that names it
        (not relayed ones); the address we reached it on when it announced none."""
        from mycel.protocols.relay.messages import parse_addrs

        out: list[Multiaddr] = []
        for addr in parse_addrs(raw, "Reservation"):
            base, owner = split_peer_id(addr)
            if (owner is not None and owner != relay) or any(p.name == "p2p-circuit" for p in base.protocols()):
                continue
            out.append(Multiaddr(f"{base}/p2p/{relay}/p2p-circuit"))
        if not out:
            out.append(Multiaddr(f"{conn.remote_addr}/p2p/{relay}/p2p-circuit"))
        return list(dict.fromkeys(out))

    # -- dialing --------------------------------------------------------------------------------
    async def dial(self, addr: Multiaddr, identity: Identity, remote_peer: PeerId | None) -> Connection:
        host, upgrader = self._attached()
        if remote_peer is None:
            raise DialError(f"{addr}: a relayed dial needs the target's peer id (/p2p/<target> at the end)")
        relay_addr, relay = split_circuit(addr)
        if relay in (remote_peer, host.peer_id):
            raise DialError(f"{addr}: the relay cannot be the target or ourselves")
        known = host.peerstore.addrs(remote_peer, trio.current_time())
        if self.relay_dial_delay and any(not _is_circuit(a) for a in known):
            await trio.sleep(self.relay_dial_delay)  # a head start for the direct dials racing this one
        relay_conn = await host.connect(relay, [relay_addr] if relay_addr is not None else [])
        if is_relayed(relay_conn):
            raise DialError(f"will not dial through {relay} over a relayed connection to it")
        stream = await host.open_stream_on(relay_conn, [HOP_PROTOCOL])
        try:
            request = _HOP(type=_HOP.CONNECT)
            request.peer.id = remote_peer.to_bytes()
            await write_message(stream, request)
            reply = await read_hop(stream)
            if reply.type != _HOP.STATUS:
                raise RelayMessageError(f"relay {relay} answered CONNECT with hop type {reply.type}")
            if status_of(reply) is not Status.OK:
                status = status_of(reply)
                raise RelayRefused(f"relay {relay} refused the circuit to {remote_peer}: {status.name}", status)
            limit = limit_from_pb(reply.limit) if reply.HasField("limit") else None
            raw = RelayedStream(stream, CIRCUIT, addr, Direction.OUTBOUND)
            conn = await upgrader.upgrade_outbound(raw, remote_peer)
        except BaseException:
            with trio.CancelScope(shield=True), contextlib.suppress(*_STREAM_ERRORS):
                await stream.reset()
            raise
        conn.limit = limit
        return conn

    # -- inbound (stop) -------------------------------------------------------------------------
    async def _handle_stop(self, stream: MuxedStream) -> None:
        host, upgrader = self._attached()
        relay_conn = stream.connection
        relay = relay_conn.remote_peer
        try:
            with trio.fail_after(host.config.negotiate_timeout):
                msg = await read_stop(stream)
        except ProtocolViolation as exc:
            self._refuse(relay, f"malformed stop message: {exc}")
            await _answer_stop(stream, Status.MALFORMED_MESSAGE)
            return
        if msg.type != _STOP.CONNECT:
            self._refuse(relay, f"unexpected stop message type {msg.type}")
            await _answer_stop(stream, Status.UNEXPECTED_MESSAGE)
            return
        src = parse_peer(msg.peer, "StopMessage CONNECT")
        listener = self._listeners[0] if self._listeners else None
        if listener is None:
            self._refuse(relay, f"relayed connection from {src}: not listening on /p2p-circuit")
            await _answer_stop(stream, Status.CONNECTION_FAILED)
            return
        await _answer_stop(stream, Status.OK)
        remote = Multiaddr(f"{relay_conn.remote_addr}/p2p/{relay}/p2p-circuit")
        raw = RelayedStream(stream, CIRCUIT, remote, Direction.INBOUND)
        try:
            with trio.fail_after(host.config.handshake_timeout):
                conn = await upgrader.upgrade_inbound(raw)
        except (MycelError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._refuse(relay, f"handshake with {src} failed: {exc!r}")
            await stream.reset()
            return
        if conn.remote_peer != src:  # the relay lied about who is calling (or the caller is someone else)
            self._refuse(relay, f"relay named {src} but {conn.remote_peer} authenticated")
            await conn.aclose()
            return
        conn.limit = limit_from_pb(msg.limit) if msg.HasField("limit") else None
        if not listener.offer(conn):
            self._refuse(relay, f"relayed connection from {src}: listener closed or its queue is full")
            await conn.aclose()
            return
        await raw.closed.wait()  # the stop stream is the connection: keep the handler until it closes

    def _refuse(self, relay: PeerId, reason: str) -> None:
        """Count a refused stop stream; log it the 1st, 2nd, 4th, 8th... time (a flood stays a few lines)."""
        self.refused_stops += 1
        count = self.refused_stops
        if count & (count - 1) == 0:
            log.info("stop stream from relay %s refused: %s (refusal #%d)", relay, reason, count)

    def __deepcopy__(self, memo: dict[int, object]) -> RelayTransport:
        fresh = RelayTransport(
            max_inbound=self.max_inbound, relay_dial_delay=self.relay_dial_delay, wall_clock=self.wall_clock
        )
        fresh.relays = list(self.relays)
        return fresh


def _is_circuit(addr: Multiaddr) -> bool:
    return any(p.name == "p2p-circuit" for p in addr.protocols())


async def _answer_stop(stream: MuxedStream, status: Status) -> None:
    with contextlib.suppress(*_STREAM_ERRORS):
        await write_message(stream, _STOP(type=_STOP.STATUS, status=pb_status(status)))


__all__ = ["RelayTransport", "RelayListener", "RelayReservation", "RelayedStream", "split_circuit"]
