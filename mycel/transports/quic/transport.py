"""The ``/quic-v1`` transport: QUIC (RFC 9000) with libp2p TLS, on aioquic's sans-IO core."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import ipaddress
import logging
import os
import random
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import trio
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from multiaddr import Multiaddr
from trio.lowlevel import ParkingLot

from mycel.core.abc import Connection, ConnectionTransport, Direction, Listener
from mycel.core.addrs import DNS_PROTOCOLS
from mycel.core.errors import DialError, TransportError
from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.network.limits import SourceLimits
from mycel.security.tls.certificate import CertificateCache, LocalCertificate, VerificationCache
from mycel.security.tls.session import ALPN_LIBP2P
from mycel.transports.quic.connection import QUICConnection
from mycel.transports.quic.core import (
    CIPHER_SUITES,
    DEFAULT_CONNECTION_WINDOW,
    DEFAULT_MAX_INBOUND_STREAMS,
    DEFAULT_STREAM_WINDOW,
    QuicCore,
)
from mycel.transports.quic.endpoint import (
    CID_LENGTH,
    SUPPORTED_VERSIONS,
    NetworkAddress,
    UDPEndpoint,
    quic_multiaddr,
)

__all__ = ["QUIC", "QUICListener", "QUICOptions", "quic_host_port"]

log = logging.getLogger("mycel.transports.quic")

_FAMILIES: Final = {"ip4": socket.AF_INET, "ip6": socket.AF_INET6, "dns4": socket.AF_INET, "dns6": socket.AF_INET6}
# Handshake datagrams are at most this big (a 1500-byte Ethernet MTU minus IPv6 and UDP headers);
# max_datagram_size applies once the handshake is done, capped by the peer's max_udp_payload_size.
HANDSHAKE_DATAGRAM_SIZE: Final = 1452
# aioquic writes STREAM frame lengths as 2-byte varints (< 16384): bigger datagrams corrupt frames.
MAX_DATAGRAM_SIZE: Final = 16384
ACCEPT_QUEUE: Final = 64  # established inbound connections not yet accepted; beyond: closed
PUNCH_PAYLOAD: Final = 64  # bytes of each random hole-punch datagram (QUIC.hole_punch)
PUNCH_INTERVAL: Final = (0.010, 0.200)  # seconds between them, uniform (go's figures)


def quic_host_port(addr: Multiaddr) -> tuple[str, str, int] | None:
    """For ``/{ip4,ip6,dns,dns4,dns6}/<host>/udp/<port>/quic-v1``: (proto, host, port)."""
    return _parse_quic_addr(addr.to_bytes())


@functools.lru_cache(maxsize=256)  # a dial asks several times (can_dial, resolve); parsing is ~20 us
def _parse_quic_addr(packed: bytes) -> tuple[str, str, int] | None:
    parts = list(Multiaddr(packed).items())
    if len(parts) != 3:
        return None
    (p0, host), (p1, port), (p2, _) = parts
    if p2.name != "quic-v1" or p1.name != "udp" or p0.name not in ("ip4", "ip6", *DNS_PROTOCOLS):
        return None
    return p0.name, str(host), int(str(port))


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _sockaddr(family: int, host: str, port: int) -> NetworkAddress:
    """The address tuple recvfrom reports for this peer (aioquic compares them for equality)."""
    host = str(ipaddress.ip_address(host.split("%", 1)[0]))
    return (host, port) if family == socket.AF_INET else (host, port, 0, 0)


def _source_ip(family: int, target: NetworkAddress) -> str | None:
    """The address the kernel would send from to reach ``target`` (a connect() sends nothing for UDP)."""
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.connect(target)
        return str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()


@dataclass(frozen=True)
class QUICOptions:
    """Tunables of the QUIC transport (defaults follow go-libp2p where it has one)."""

    # UDP payload after the handshake: 1452 fits a 1500-byte Ethernet MTU (IPv6 + UDP headers). There
    # is no path-MTU probing: set more only for paths known to carry it (loopback carries
    # any size up to MAX_DATAGRAM_SIZE).
    max_datagram_size: int = 1452
    """Largest UDP payload in bytes once the handshake is done (capped by the peer's limit; handshake
    datagrams are at most 1452). ValueError outside 1200..16384.
    """
    idle_timeout: float = 30.0  # seconds without any packet before a connection is dropped
    """Seconds without any packet before a connection is dropped (must be positive)."""
    keepalive_interval: float | None = 15.0  # PING after this much silence (None: never)
    """Seconds of silence on an open connection before we send a PING; None: never."""
    handshake_timeout: float = 10.0
    """Seconds a connection may take to complete its handshake; then it fails with HandshakeError."""
    stream_window: int = DEFAULT_STREAM_WINDOW  # unread bytes a stream may hold
    """Unread bytes one stream may hold (flow-control window; default 2 MiB)."""
    connection_window: int = DEFAULT_CONNECTION_WINDOW  # unread bytes a connection may hold
    """Unread bytes all streams of a connection may hold together (default 8 MiB)."""
    max_inbound_streams: int = DEFAULT_MAX_INBOUND_STREAMS  # concurrent streams the peer may open
    """Streams the peer may have open at once (default 256)."""
    accept_backlog: int = DEFAULT_MAX_INBOUND_STREAMS  # inbound streams not yet accepted; beyond: reset
    """Inbound streams not yet accepted; beyond it new ones are reset (default 256)."""
    max_pending_handshakes: int = 64  # inbound handshakes in progress per socket; beyond: Initials dropped
    """Inbound handshakes in progress per UDP socket; beyond it the oldest one stalled for
    ``source_limits.stall_after`` seconds is dropped for the newcomer, or new Initial packets are dropped."""
    source_limits: SourceLimits | None = None
    """Per-source limits on inbound handshakes (pending and new ones per second, per IPv4 /32 and IPv6
    /56, /48), applied to a new client's Initial before any connection state is made. None: the host's
    ``HostConfig.source_limits`` (go's figures outside a host)."""
    retry_threshold: int | None = 16
    """With this many inbound handshakes in progress, a new client must first prove its address with a
    stateless Retry (RFC 9000 section 8.1.2); None: never."""
    immediate_ack: bool = False  # ACK every batch of datagrams at its end (else a lone packet waits <= 1 ms)
    """ACK at the end of every batch of datagrams with an ack-eliciting packet; otherwise a lone
    packet's ACK may wait up to 1 ms.
    """
    congestion_control: str = "reno"  # aioquic's "reno" or "cubic"
    """aioquic's congestion controller: ``"reno"`` or ``"cubic"``."""
    gso: bool = True  # batch sends with UDP GSO where the kernel supports it
    """Batch sends with UDP GSO where the kernel supports it."""
    gro: bool = True  # read runs of datagrams with one system call (UDP GRO) where the kernel supports it
    """Read runs of datagrams with one system call (UDP GRO) where the kernel supports it."""

    def __post_init__(self) -> None:
        if not SMALLEST_MAX_DATAGRAM_SIZE <= self.max_datagram_size <= MAX_DATAGRAM_SIZE:
            raise ValueError(f"max_datagram_size must be in [{SMALLEST_MAX_DATAGRAM_SIZE}, {MAX_DATAGRAM_SIZE}]")
        if self.idle_timeout <= 0 or self.handshake_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.accept_backlog < 1 or self.max_pending_handshakes < 1 or self.max_inbound_streams < 1:
            raise ValueError("bounds must be at least 1")
        if self.retry_threshold is not None and self.retry_threshold < 0:
            raise ValueError("retry_threshold must be >= 0 or None")


class QUICListener(Listener[Connection]):
    """Accepts QUIC connections on one UDP endpoint (which also carries our outbound connections)."""

    def __init__(self, transport: QUIC, endpoint: UDPEndpoint, identity: Identity) -> None:
        self._transport = transport
        self._endpoint = endpoint
        self._identity = identity
        self._queue: deque[QUICConnection] = deque()  # established, not yet accepted (ACCEPT_QUEUE)
        self._lot = ParkingLot()
        self._closed = False
        endpoint.listener = self

    @property
    def addrs(self) -> list[Multiaddr]:
        return [self._endpoint.local_multiaddr]

    @property
    def endpoint(self) -> UDPEndpoint:
        """The UDP endpoint (socket) this listener accepts on."""
        return self._endpoint

    stats_name = "quic"  # the swarm reports stats() under quic_<counter>

    def stats(self) -> dict[str, int]:
        """The endpoint's counters of new clients' Initials (see UDPEndpoint.stats)."""
        return self._endpoint.stats()

    def make_inbound(
        self, endpoint: UDPEndpoint, original_cid: bytes, addr: NetworkAddress, retry: tuple[bytes, bytes] | None = None
    ) -> QUICConnection:
        """Called by the endpoint for a new client's Initial packet (destination id ``original_cid``): a
        connection to handshake with it. After a Retry, ``retry`` is (the client's first destination id,
        the id our Retry chose), for the transport parameters."""
        return self._transport._new_connection(
            endpoint, self._identity, Direction.INBOUND, addr, None, original_cid=original_cid, retry=retry
        )

    def deliver(self, conn: QUICConnection) -> None:
        """Called once ``conn`` is established: queue it for :meth:`accept`; with 64 already waiting it is
        closed (CONNECTION_REFUSED) instead.
        """
        if len(self._queue) >= ACCEPT_QUEUE:
            log.warning("%d QUIC connections waiting to be accepted on %s; closing one", ACCEPT_QUEUE, self.addrs[0])
            conn.close_now("accept queue full", 0x2)  # CONNECTION_REFUSED
            return
        self._queue.append(conn)
        self._lot.unpark(count=1)

    async def accept(self) -> Connection:
        while True:
            while self._queue:
                conn = self._queue.popleft()
                if not conn.is_closed:
                    return conn
            if self._closed:
                raise trio.ClosedResourceError("the QUIC listener was closed")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._endpoint.drive)  # inbound handshakes need the socket read
                await self._lot.park()
                nursery.cancel_scope.cancel()

    async def aclose(self) -> None:
        """Stop accepting; connections already accepted keep working (and keep the socket open)."""
        if not self._closed:
            self._closed = True
            endpoint = self._endpoint
            if endpoint.listener is self:
                endpoint.listener = None
            while self._queue:
                self._queue.popleft().close_now("listener closed")
            self._lot.unpark_all()
            self._transport._listener_closed(self)
            if endpoint.connections == 0:
                endpoint.close()
        await trio.lowlevel.checkpoint()


class QUIC(ConnectionTransport):
    """QUIC v1 (``/quic-v1``) with libp2p TLS and native streams.

    A listening transport dials from its listen socket (same family, and not a loopback-bound socket
    for a non-loopback target); otherwise all dials of one address family share one ephemeral socket,
    which is closed when its last connection closes. ``wall_clock`` gives the time used for
    certificate validity.
    """

    name = "quic-v1"

    def __init__(
        self,
        options: QUICOptions | None = None,
        *,
        wall_clock: Callable[[], datetime.datetime] | None = None,
        **overrides: Any,
    ) -> None:
        self.options = dataclasses.replace(options or QUICOptions(), **overrides)
        self._wall_clock = wall_clock or _utc_now
        self._certs: CertificateCache[None] = CertificateCache(lambda _cert: None)
        self._verified = VerificationCache()  # peers' certificates that verified (see VerificationCache)
        self._listeners: list[QUICListener] = []
        self._dial_endpoints: dict[int, UDPEndpoint] = {}

    def attach_host(self, host: Any) -> None:
        """Called by the host on its copy of the transport: unless these options set their own, inbound
        handshakes are limited per source as the host's ``HostConfig.source_limits`` says."""
        if self.options.source_limits is None:
            self.options = dataclasses.replace(self.options, source_limits=host.config.source_limits)

    # ---- addresses ------------------------------------------------------------------------

    def can_dial(self, addr: Multiaddr) -> bool:
        return quic_host_port(addr) is not None

    def can_listen(self, addr: Multiaddr) -> bool:
        parsed = quic_host_port(addr)
        return parsed is not None and parsed[0] in ("ip4", "ip6")

    async def _resolve(self, addr: Multiaddr) -> list[tuple[int, str, int]]:
        parsed = quic_host_port(addr)
        if parsed is None:
            raise DialError(f"not a QUIC address: {addr}")
        proto, host, port = parsed
        if proto in ("ip4", "ip6"):
            return [(_FAMILIES[proto], host, port)]
        try:
            infos = await trio.socket.getaddrinfo(host, port, family=_FAMILIES.get(proto, 0), type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise DialError(f"cannot resolve {host}: {exc}") from exc
        out = [(int(fam), str(sa[0]), int(sa[1])) for fam, _, _, _, sa in infos]
        if not out:
            raise DialError(f"{host} has no address")
        return out

    # ---- connections ------------------------------------------------------------------------

    def _certificate(self, identity: Identity) -> LocalCertificate:
        return self._certs.get(identity, self._wall_clock())[0]

    def _configuration(self, identity: Identity, is_client: bool) -> QuicConfiguration:
        cert = self._certificate(identity)
        opts = self.options
        return QuicConfiguration(
            is_client=is_client,
            alpn_protocols=[ALPN_LIBP2P],
            certificate=cert.certificate,
            private_key=cert.private_key,
            verify_mode=ssl.CERT_NONE,  # the libp2p rules are applied by QUICConnection after the handshake
            server_name=None,  # libp2p clients send no SNI
            max_datagram_size=min(opts.max_datagram_size, HANDSHAKE_DATAGRAM_SIZE),
            idle_timeout=opts.idle_timeout,
            connection_id_length=CID_LENGTH,
            congestion_control_algorithm=opts.congestion_control,
            supported_versions=list(SUPPORTED_VERSIONS),
            cipher_suites=list(CIPHER_SUITES),
        )

    def _new_connection(
        self,
        endpoint: UDPEndpoint,
        identity: Identity,
        direction: Direction,
        addr: NetworkAddress,
        expected_peer: PeerId | None,
        *,
        original_cid: bytes | None = None,
        retry: tuple[bytes, bytes] | None = None,
    ) -> QUICConnection:
        opts = self.options
        core = QuicCore(
            configuration=self._configuration(identity, direction is Direction.OUTBOUND),
            original_destination_connection_id=retry[0] if retry is not None else original_cid,
            retry_source_connection_id=retry[1] if retry is not None else None,
            stream_window=opts.stream_window,
            connection_window=opts.connection_window,
            max_inbound_streams=opts.max_inbound_streams,
            immediate_ack=opts.immediate_ack,
        )
        conn = QUICConnection(
            endpoint,
            core,
            direction=direction,
            identity=identity,
            remote_addr=addr,
            expected_peer=expected_peer,
            wall_clock=self._wall_clock,
            accept_backlog=opts.accept_backlog,
            keepalive_interval=opts.keepalive_interval,
            max_datagram_size=opts.max_datagram_size,
            handshake_deadline=trio.current_time() + opts.handshake_timeout,
            verifier=self._verified,
        )
        endpoint.register(conn, core.host_cids, original_cid=original_cid)
        return conn

    async def dial(self, addr: Multiaddr, identity: Identity, remote_peer: PeerId | None) -> Connection:
        targets = await self._resolve(addr)
        family, host, port = targets[0]
        endpoint = self._endpoint_for_dial(family, host)
        sockaddr = _sockaddr(family, host, port)
        conn = self._new_connection(endpoint, identity, Direction.OUTBOUND, sockaddr, remote_peer)
        if ipaddress.ip_address(str(endpoint.local_sockaddr[0]).split("%", 1)[0]).is_unspecified:
            source = _source_ip(family, sockaddr)
            if source is not None:
                conn.local_addr_override = quic_multiaddr(source, endpoint.local_sockaddr[1])
        try:
            conn._core.connect(sockaddr, now=trio.current_time())
            conn.process(trio.current_time())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(endpoint.drive)
                await conn._established.wait()
                nursery.cancel_scope.cancel()
            await conn.wait_established()  # raises the handshake's error, if any
        except BaseException:
            conn.close_now("dial failed")
            raise
        return conn

    def _listen_endpoint(self, family: int, host: str) -> UDPEndpoint | None:
        target_loopback = ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
        for listener in self._listeners:
            endpoint = listener.endpoint
            if endpoint.family != family or endpoint.closed:
                continue
            bound = ipaddress.ip_address(str(endpoint.local_sockaddr[0]).split("%", 1)[0])
            if bound.is_loopback and not target_loopback:
                continue
            return endpoint
        return None

    def can_hole_punch(self, addr: Multiaddr) -> bool:
        """True for ``/ip4|ip6/…/udp/…/quic-v1`` when we listen on that family."""
        parsed = quic_host_port(addr)
        if parsed is None or parsed[0] not in ("ip4", "ip6"):
            return False
        return self._listen_endpoint(_FAMILIES[parsed[0]], parsed[1]) is not None

    async def hole_punch(self, addr: Multiaddr, *, timeout: float) -> bool:
        """DCUtR over QUIC, listener side (B): send random datagrams to ``addr`` from our listen socket
        every 10-200 ms for ``timeout`` seconds (or until cancelled), so that our NAT lets the peer's
        Initial in; the peer dials as the QUIC client and the connection arrives on our listener.
        Returns False (it never knows whether the punch worked; the caller watches for the connection)."""
        parsed = quic_host_port(addr)
        if parsed is None or parsed[0] not in ("ip4", "ip6"):
            return False
        family = _FAMILIES[parsed[0]]
        endpoint = self._listen_endpoint(family, parsed[1])
        if endpoint is None:
            return False
        target = _sockaddr(family, parsed[1], parsed[2])
        rng = random.Random(os.urandom(8))
        with trio.move_on_after(timeout):
            while not endpoint.closed:
                endpoint.send([(os.urandom(PUNCH_PAYLOAD), target)])
                await trio.sleep(rng.uniform(*PUNCH_INTERVAL))
        return False

    def _endpoint_for_dial(self, family: int, host: str) -> UDPEndpoint:
        listening = self._listen_endpoint(family, host)
        if listening is not None:
            return listening
        existing = self._dial_endpoints.get(family)
        if existing is not None and not existing.closed:
            return existing
        try:
            endpoint = self._open_endpoint(family, "::" if family == socket.AF_INET6 else "0.0.0.0", 0)
        except OSError as exc:
            raise DialError(f"cannot open a UDP socket: {exc}") from exc
        self._dial_endpoints[family] = endpoint
        return endpoint

    def _open_endpoint(self, family: int, host: str, port: int) -> UDPEndpoint:
        """A UDP socket bound to ``host:port`` (IPv6 sockets v6-only) behind an endpoint; OSError if not."""
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        return UDPEndpoint(
            sock,
            max_pending_handshakes=self.options.max_pending_handshakes,
            source_limits=self.options.source_limits,
            retry_threshold=self.options.retry_threshold,
            on_close=self._endpoint_closed,
            gso=self.options.gso,
            gro=self.options.gro,
        )

    async def open_listener(self, addr: Multiaddr, identity: Identity) -> Listener[Connection]:
        parsed = quic_host_port(addr)
        if parsed is None or parsed[0] not in ("ip4", "ip6"):
            raise TransportError(f"cannot listen on {addr}")
        proto, host, port = parsed
        family = _FAMILIES[proto]
        try:
            endpoint = self._open_endpoint(family, host, port)
        except OSError as exc:
            raise TransportError(f"cannot listen on {addr}: {exc}") from exc
        listener = QUICListener(self, endpoint, identity)
        self._listeners.append(listener)
        await trio.lowlevel.checkpoint()
        log.debug("QUIC listening on %s", endpoint.local_multiaddr)
        return listener

    def _listener_closed(self, listener: QUICListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _endpoint_closed(self, endpoint: UDPEndpoint) -> None:
        for family, ep in list(self._dial_endpoints.items()):
            if ep is endpoint:
                del self._dial_endpoints[family]
