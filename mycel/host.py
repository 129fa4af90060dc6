"""HostConfig + open_host(): the user's entry point."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio
from multiaddr import Multiaddr

from mycel import __version__
from mycel.core.abc import (
    Connection,
    Direction,
    MuxedStream,
    SecurityProtocol,
    StreamMuxer,
    StreamTransport,
    Transport,
)
from mycel.core.addrs import as_multiaddr, expand_unspecified, split_peer_id, with_peer_id
from mycel.core.errors import ConfigError, DialError, MycelError, NegotiationError
from mycel.core.events import (
    ConnectionClosed,
    ConnectionOpened,
    Event,
    StreamHandlerFailed,
    StreamOpened,
)
from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.multistream import select_inbound, select_lazy, select_outbound
from mycel.network.peerstore import PeerStore
from mycel.network.swarm import Swarm
from mycel.network.upgrader import Upgrader
from mycel.service import Service, StreamHandler

log = logging.getLogger("mycel.host")

S = TypeVar("S", bound=Service)

EVENT_QUEUE_SIZE = 256  # per subscriber; when full, further events are dropped and counted
PARSED_ADDRS = 256  # multiaddr strings whose parse connect() remembers; at the bound the memo is cleared
DEFAULT_HANDLER_CONCURRENCY = 1024  # inbound streams per protocol being handled at once; beyond: reset


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
    from mycel.muxers.mplex import Mplex
    from mycel.muxers.yamux import Yamux

    return [Yamux(), Mplex()]


def _default_services() -> list[Service]:
    from mycel.protocols.identify import Identify
    from mycel.protocols.ping import Ping

    return [Identify(), Ping()]


@dataclass(frozen=True)
class HostConfig:
    """Everything a host is made of. Order in ``security`` and ``muxers`` is preference order.

    Plaintext security is never enabled unless it is listed in ``security`` by the user.
    """

    identity: Identity = field(default_factory=Identity.generate)
    transports: Sequence[Transport] = field(default_factory=_default_transports)
    security: Sequence[SecurityProtocol] = field(default_factory=_default_security)
    muxers: Sequence[StreamMuxer] = field(default_factory=_default_muxers)
    listen: Sequence[str | Multiaddr] = ()
    services: Sequence[Service] = field(default_factory=_default_services)
    agent_version: str = f"mycel/{__version__}"
    protocol_version: str = "ipfs/0.1.0"
    handshake_timeout: float = 15.0
    negotiate_timeout: float = 10.0
    max_pending_inbound_handshakes: int = 64
    handler_concurrency: int = DEFAULT_HANDLER_CONCURRENCY
    # head start of QUIC addresses over TCP when a peer has both; None: 30 ms for loopback/private
    # addresses, 250 ms for public ones (go-libp2p's figures). The next tier starts early when all fail.
    dial_tier_delay: float | None = None

    def __post_init__(self) -> None:
        if not self.transports:
            raise ConfigError("at least one transport is needed")
        if any(isinstance(t, StreamTransport) for t in self.transports):
            if not self.security:
                raise ConfigError("a stream transport needs at least one security protocol")
            if not self.muxers:
                raise ConfigError("a stream transport needs at least one stream muxer")
        for name, items in (("security", self.security), ("muxers", self.muxers)):
            ids = [x.protocol_id for x in items]
            if len(set(ids)) != len(ids):
                raise ConfigError(f"duplicate protocol in {name}: {ids}")
        for addr in self.listen:
            as_multiaddr(addr)
        if self.handshake_timeout <= 0 or self.negotiate_timeout <= 0:
            raise ConfigError("timeouts must be positive")
        if self.dial_tier_delay is not None and self.dial_tier_delay < 0:
            raise ConfigError("dial_tier_delay must not be negative")
        object.__setattr__(self, "transports", tuple(self.transports))
        object.__setattr__(self, "security", tuple(self.security))
        object.__setattr__(self, "muxers", tuple(self.muxers))
        object.__setattr__(self, "services", tuple(self.services))
        object.__setattr__(self, "listen", tuple(self.listen))

    def replace(self, **changes: Any) -> HostConfig:
        return dataclasses.replace(self, **changes)


class _Handler:
    def __init__(self, func: StreamHandler, limit: int) -> None:
        self.func = func
        self.limit = limit
        self.active = 0


class Host:
    """A running libp2p host. Create with ``async with open_host(config) as host``."""

    def __init__(self, config: HostConfig, nursery: trio.Nursery) -> None:
        self.config = config
        self.identity = config.identity
        self.peerstore = PeerStore()
        self._nursery = nursery
        self._handlers: dict[str, _Handler] = {}
        self._subscribers: list[trio.MemorySendChannel[Event]] = []
        self.dropped_events = 0
        self._addrs_cache: tuple[tuple[Multiaddr, ...], list[Multiaddr]] | None = None
        # connect("/ip4/…/p2p/…") parses the same strings again and again; parsing and splitting off
        # /p2p costs ~0.3 ms with the multiaddr package, a sixth of a loopback dial
        self._parsed: dict[str, tuple[Multiaddr, PeerId | None]] = {}
        self._services = list(config.services)
        stream_transports = any(isinstance(t, StreamTransport) for t in config.transports)
        upgrader = Upgrader(self.identity, config.security, config.muxers) if stream_transports else None
        self.swarm = Swarm(
            nursery,
            self.identity,
            config.transports,
            upgrader,
            handshake_timeout=config.handshake_timeout,
            max_pending_inbound=config.max_pending_inbound_handshakes,
            on_connection=self._connection_opened,
            on_disconnect=self._connection_closed,
            on_stream=self._handle_inbound_stream,
            tier_delay=config.dial_tier_delay,
        )

    # -- identity and addresses -----------------------------------------------------------------
    @property
    def peer_id(self) -> PeerId:
        return self.identity.peer_id

    @property
    def listen_addrs(self) -> list[Multiaddr]:
        """The bound addresses (port 0 resolved), without ``/p2p``."""
        return self.swarm.listen_addrs

    @property
    def addrs(self) -> list[Multiaddr]:
        """Addresses others can dial us on, each ending in ``/p2p/<our id>``.

        Unspecified listen addresses (0.0.0.0, ::) are expanded to every interface address.
        """
        listen = tuple(self.listen_addrs)
        if self._addrs_cache is None or self._addrs_cache[0] != listen:
            out = [with_peer_id(a, self.peer_id) for addr in listen for a in expand_unspecified(addr)]
            self._addrs_cache = (listen, out)
        return list(self._addrs_cache[1])

    @property
    def advertised_addrs(self) -> list[Multiaddr]:
        """Listen addresses without ``/p2p``, unspecified ones expanded, as identify announces them."""
        return [split_peer_id(a)[0] for a in self.addrs]

    # -- services -------------------------------------------------------------------------------
    def service(self, kind: type[S]) -> S:
        for svc in self._services:
            if isinstance(svc, kind):
                return svc
        raise LookupError(f"no {kind.__name__} service in this host")

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run a background task for the host's lifetime (cancelled when the host closes)."""
        self._nursery.start_soon(fn, *args)

    # -- events ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def subscribe(self, maxsize: int = EVENT_QUEUE_SIZE) -> Iterator[trio.MemoryReceiveChannel[Event]]:
        send, recv = trio.open_memory_channel[Event](maxsize)
        self._subscribers.append(send)
        try:
            yield recv
        finally:
            self._subscribers.remove(send)
            send.close()

    def emit(self, event: Event) -> None:
        for sub in self._subscribers:
            try:
                sub.send_nowait(event)
            except trio.WouldBlock:
                self.dropped_events += 1
            except trio.BrokenResourceError:
                pass

    def _connection_opened(self, conn: Connection) -> None:
        log.debug("connected to %s via %s (%s)", conn.remote_peer, conn.remote_addr, conn.direction.value)
        self.peerstore.set_public_key(conn.remote_peer, conn.remote_public_key)
        if conn.direction is Direction.OUTBOUND:
            self.peerstore.add_addrs(conn.remote_peer, [conn.remote_addr])
        for svc in self._services:
            svc.connection_opened(self, conn)
        self.emit(ConnectionOpened(conn))

    def _connection_closed(self, conn: Connection) -> None:
        log.debug("disconnected from %s", conn.remote_peer)
        for svc in self._services:
            svc.connection_closed(self, conn)
        self.emit(ConnectionClosed(conn))

    # -- streams --------------------------------------------------------------------------------
    def set_stream_handler(self, protocol_id: str, handler: StreamHandler, *, max_concurrent: int | None = None) -> None:
        """Serve ``protocol_id``. ``handler(stream)`` runs in the host; the stream is closed when it returns.

        At most ``max_concurrent`` streams of this protocol are handled at once; more are reset.
        """
        self._handlers[protocol_id] = _Handler(handler, max_concurrent or self.config.handler_concurrency)

    def remove_stream_handler(self, protocol_id: str) -> None:
        self._handlers.pop(protocol_id, None)

    @property
    def protocols(self) -> list[str]:
        return list(self._handlers)

    async def _handle_inbound_stream(self, stream: MuxedStream) -> None:
        peer = stream.connection.remote_peer
        try:
            with trio.fail_after(self.config.negotiate_timeout):
                proto = await select_inbound(stream, self._handlers.__contains__, lambda: list(self._handlers))
        except (MycelError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("inbound stream from %s: negotiation failed: %r", peer, exc)
            await _reset_quietly(stream)
            return
        handler = self._handlers.get(proto)
        if handler is None:
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
            await handler.func(stream)
        except Exception as exc:  # a handler's failure is the handler's: log, report, keep serving
            log.info("handler for %s from %s failed: %r", proto, peer, exc)
            self.emit(StreamHandlerFailed(peer, proto, exc))
            await _reset_quietly(stream)
        finally:
            handler.active -= 1
            with trio.CancelScope(shield=True):
                with contextlib.suppress(MycelError, trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.aclose()

    async def new_stream(
        self, peer: PeerId | str | Multiaddr, protocols: Sequence[str] | str, *, lazy: bool | None = None
    ) -> MuxedStream:
        """Open a stream to ``peer`` speaking the first of ``protocols`` it accepts.

        Dials if needed (from peerstore addresses, or the multiaddr given). With a single protocol the
        peer is known to support (from identify), or ``lazy=True``, negotiation is optimistic and costs
        no round trip: a refusal then surfaces as ProtocolNotSupported from the first read.
        """
        if isinstance(protocols, str):
            protocols = [protocols]
        if not protocols:
            raise ValueError("no protocols given")
        conn = await self.connect(peer)
        stream = await conn.open_stream()
        known = self.peerstore.protocols(conn.remote_peer)
        try:
            if len(protocols) == 1 and (lazy or (lazy is None and protocols[0] in known)):
                optimistic = await select_lazy(stream, protocols[0])
                self.emit(StreamOpened(conn.remote_peer, protocols[0], Direction.OUTBOUND))
                return optimistic
            with trio.fail_after(self.config.negotiate_timeout):
                proto = await select_outbound(stream, protocols)
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
        ``addrs`` are more addresses of that peer; a ``/p2p/<id>`` on them must name the same peer."""
        if isinstance(target, PeerId):
            peer = target
        else:
            text = str(target)
            if text.startswith("/"):
                base, maybe_peer = self._parse_addr(text)
                if maybe_peer is None:
                    if addrs:
                        raise DialError("more addresses need a peer to belong to: put /p2p/<id> on the target")
                    return await self.swarm.dial_addr(base)
                # an explicit address is what gets dialed (with any extra ones), not the whole peerstore
                peer = maybe_peer
                extra = [base, *self._own_addrs(peer, addrs)]
                self.peerstore.add_addrs(peer, extra)
                return await self.swarm.dial_peer(peer, extra)
            peer = PeerId.from_string(text)
        if addrs:
            self.peerstore.add_addrs(peer, self._own_addrs(peer, addrs))
        existing = self.swarm.connections(peer)
        if existing:
            return existing[0]
        known = self.peerstore.addrs(peer)
        if not known:
            raise DialError(f"no addresses known for {peer}")
        return await self.swarm.dial_peer(peer, known)

    def _own_addrs(self, peer: PeerId, addrs: Sequence[Multiaddr | str]) -> list[Multiaddr]:
        """``addrs`` without their ``/p2p/<peer>`` suffix; an address of another peer is an error."""
        out = []
        for addr in addrs:
            base, owner = self._parse_addr(str(addr))
            if owner is not None and owner != peer:
                raise DialError(f"{addr} belongs to {owner}, not to {peer}")
            out.append(base)
        return out

    def _parse_addr(self, text: str) -> tuple[Multiaddr, PeerId | None]:
        parsed = self._parsed.get(text)
        if parsed is None:
            parsed = split_peer_id(as_multiaddr(text))
            if len(self._parsed) >= PARSED_ADDRS:
                self._parsed.clear()
            self._parsed[text] = parsed
        return parsed

    def connections(self, peer: PeerId | None = None) -> list[Connection]:
        return self.swarm.connections(peer)

    def connected_peers(self) -> list[PeerId]:
        return self.swarm.connected_peers()

    async def disconnect(self, peer: PeerId) -> None:
        for conn in self.swarm.connections(peer):
            await conn.aclose()

    async def listen(self, addr: str | Multiaddr) -> list[Multiaddr]:
        return await self.swarm.listen(as_multiaddr(addr))


async def _reset_quietly(stream: MuxedStream) -> None:
    with contextlib.suppress(MycelError, trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.reset()


@contextlib.asynccontextmanager
async def open_host(config: HostConfig | None = None) -> AsyncIterator[Host]:
    """Start a host: listeners are bound and services running when the block is entered."""
    config = config or HostConfig()
    try:
        async with trio.open_nursery() as nursery:
            host = Host(config, nursery)
            try:
                for svc in host._services:
                    for proto, handler in svc.handlers().items():
                        host.set_stream_handler(proto, handler)
                for svc in host._services:
                    await nursery.start(svc.run, host)
                for addr in config.listen:
                    await host.listen(addr)
                log.info("host %s listening on %s", host.peer_id, [str(a) for a in host.listen_addrs])
                yield host
            finally:
                with trio.CancelScope(shield=True):
                    await host.swarm.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Policy, decided once: background tasks of the host never raise, so an exception here is the
        # user's own (from the body of the `async with`); hand it back unwrapped.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


__all__ = ["Host", "HostConfig", "open_host"]
