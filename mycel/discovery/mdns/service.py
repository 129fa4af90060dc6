"""The trio driver of mDNS: one UDP socket on port 5353, the sans-IO core, and the host's ``peer_found``.

The socket is bound to ``0.0.0.0:5353`` with SO_REUSEADDR and SO_REUSEPORT (other mDNS responders on
the machine — avahi, another host — share the port; multicast reaches every socket), joins
224.0.0.251 on each chosen interface and sends multicast on each of them in turn (IP_MULTICAST_IF,
TTL 255 as RFC 6762 §11 asks, loopback on so that hosts on one machine hear each other). Interfaces
(:func:`multicast_interfaces`): up, multicast-capable, with an IPv4 address; loopback only when there is
nothing else. They are looked up again before each query round, so an interface that comes up later
is joined. IPv4 only (see the package docstring).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import random
import socket as stdsocket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import psutil
import trio
from multiaddr import Multiaddr

from mycel.core.events import ServiceEvent
from mycel.core.peer_id import PeerId
from mycel.discovery.mdns.core import (
    MDNS_PORT,
    MdnsConfig,
    MdnsCore,
    MdnsPeerDiscovered,
    MdnsPeerGone,
    Outgoing,
)
from mycel.network.peerstore import AddrSource
from mycel.service import Service, ServiceHost, not_running

log = logging.getLogger("mycel.discovery.mdns")

MDNS_GROUP = "224.0.0.251"
SOURCE = "mdns"
"""The ``source`` of the ``PeerFound`` events this service reports."""
_RECV_SIZE = 9000 + 1  # one byte more than the codec accepts, so an oversized datagram is seen as one
_GOODBYE_TIMEOUT = 1.0


@dataclass(frozen=True)
class MdnsPeerLost(ServiceEvent):
    """mDNS lost a peer it had found: it said goodbye (TTL 0) or its records expired; its mDNS
    addresses were removed from the peerstore (a connection to it stays open)."""

    peer: PeerId
    reason: str
    """``"goodbye"`` or ``"expired"``."""


def multicast_interfaces(only: Sequence[str] | None = None) -> list[str]:
    """IPv4 addresses of the interfaces to use (up, multicast, not loopback unless nothing else);
    ``only``: take these addresses as given."""
    if only is not None:
        return list(only)
    stats = psutil.net_if_stats()
    chosen: list[str] = []
    loopback: list[str] = []
    for name, addrs in psutil.net_if_addrs().items():
        st = stats.get(name)
        if st is None or not st.isup:
            continue
        flags = set(getattr(st, "flags", "").split(","))
        for a in addrs:
            if a.family != stdsocket.AF_INET:
                continue
            if "loopback" in flags or a.address.startswith("127."):
                loopback.append(a.address)
            elif "multicast" in flags or not flags - {""}:
                chosen.append(a.address)
    return chosen or loopback


class MDNS(Service):
    """Local-network discovery by multicast DNS (libp2p discovery/mdns spec).

    Announces the host's addresses as ``dnsaddr=`` TXT strings under ``_p2p._udp.local``, queries for
    others, reports each found peer with ``host.peer_found(peer, addrs, "mdns", ttl)`` (the host keeps
    the addresses and connects up to ``HostConfig.discovery_connect``), and says goodbye when the host
    stops. A goodbye or an expiry removes the peer's mDNS addresses from the peerstore and emits
    :class:`MdnsPeerLost`.

    ``interfaces``: IPv4 addresses of the interfaces to use (default: every multicast interface);
    ``port`` / ``group``: only for tests (5353 / 224.0.0.251 is what every libp2p speaks);
    ``config``: the core's parameters (:class:`MdnsConfig`).
    """

    def __init__(
        self,
        *,
        interfaces: Sequence[str] | None = None,
        port: int = MDNS_PORT,
        group: str = MDNS_GROUP,
        config: MdnsConfig | None = None,
    ) -> None:
        self.interfaces = None if interfaces is None else list(interfaces)
        self.port = port
        self.group = group
        self.config = dataclasses.replace(config or MdnsConfig(), port=port)
        self._core: MdnsCore | None = None
        self._sock: trio.socket.SocketType | None = None
        self._joined: set[str] = set()
        self._wake = trio.Event()
        self._send_lock = trio.Lock()
        self._host: ServiceHost | None = None

    def clone(self) -> MDNS:
        """A fresh copy with the same settings (a new peer name is drawn when it runs)."""
        return MDNS(interfaces=self.interfaces, port=self.port, group=self.group, config=self.config)

    @property
    def core(self) -> MdnsCore:
        """The running core (its peer name, found peers and stats)."""
        if self._core is None:
            raise not_running(self)
        return self._core

    @property
    def socket(self) -> trio.socket.SocketType | None:
        """The UDP socket while running (None before and after)."""
        return self._sock

    def peers(self) -> dict[PeerId, tuple[Multiaddr, ...]]:
        """Peers found and still announced, with every address parsed from their TXT strings."""
        return self.core.peers()

    def local_addrs_changed(self, host: ServiceHost) -> None:
        if self._core is not None:
            self._core.set_addrs(host.addrs, trio.current_time())
            log.debug("mdns: announcing %s", [str(a) for a in self._core.addrs])
            self._wake.set()

    async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._host = host
        rng = random.Random(os.urandom(16))
        core = MdnsCore(host.peer_id, rng, self.config)
        sock = trio.socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
        try:
            sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEADDR, 1)
            if hasattr(stdsocket, "SO_REUSEPORT"):
                sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEPORT, 1)
            sock.setsockopt(stdsocket.IPPROTO_IP, stdsocket.IP_MULTICAST_TTL, 255)
            sock.setsockopt(stdsocket.IPPROTO_IP, stdsocket.IP_MULTICAST_LOOP, 1)
            await sock.bind(("", self.port))
            self._sock = sock
            self._join_interfaces()
            self._core = core
            core.set_addrs(host.addrs, trio.current_time())
            core.start(trio.current_time())
            log.info(
                "mdns: %s is %s on %s", host.peer_id, core.peer_name, ",".join(sorted(self._joined)) or "no interface"
            )
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive_loop, core, sock)
                await self._timer_loop(core, sock)
        finally:
            try:
                await self._say_goodbye(core, sock)
            finally:
                sock.close()
                self._sock = None
                self._core = None
                self._joined.clear()

    # -- internals ------------------------------------------------------------------------------
    def _join_interfaces(self) -> None:
        assert self._sock is not None
        for ip in multicast_interfaces(self.interfaces):
            if ip in self._joined:
                continue
            mreq = struct.pack("4s4s", stdsocket.inet_aton(self.group), stdsocket.inet_aton(ip))
            try:
                self._sock.setsockopt(stdsocket.IPPROTO_IP, stdsocket.IP_ADD_MEMBERSHIP, mreq)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:  # already a member (an interface with two addresses)
                    log.info("mdns: cannot join %s on %s: %s", self.group, ip, exc)
                    continue
            self._joined.add(ip)

    async def _send(self, sock: trio.socket.SocketType, out: Outgoing) -> None:
        if out.dest is not None:
            try:
                await sock.sendto(out.data, out.dest)
            except OSError as exc:
                log.debug("mdns: unicast to %s failed: %s", out.dest, exc)
            return
        async with self._send_lock:  # IP_MULTICAST_IF is per socket: one sender at a time
            for ip in sorted(self._joined):
                try:
                    sock.setsockopt(stdsocket.IPPROTO_IP, stdsocket.IP_MULTICAST_IF, stdsocket.inet_aton(ip))
                    await sock.sendto(out.data, (self.group, self.port))
                except OSError as exc:  # an interface that went away: the next round looks again
                    log.debug("mdns: multicast on %s failed: %s", ip, exc)

    async def _flush(self, core: MdnsCore, sock: trio.socket.SocketType) -> None:
        for out in core.datagrams_to_send():
            await self._send(sock, out)
        host = self._host
        assert host is not None
        for ev in core.events():
            if isinstance(ev, MdnsPeerDiscovered):
                addrs = ev.addrs
                if not _is_loopback(ev.source_ip):  # their loopback is not ours
                    addrs = tuple(a for a in addrs if not _addr_is_loopback(a))
                host.peer_found(ev.peer, addrs, SOURCE, ttl=ev.ttl)
            elif isinstance(ev, MdnsPeerGone):
                host.peerstore.clear_addrs(ev.peer, AddrSource.DISCOVERY)
                host.emit(MdnsPeerLost(ev.peer, ev.reason))

    async def _timer_loop(self, core: MdnsCore, sock: trio.socket.SocketType) -> None:
        while True:
            queries_before = core.stats.queries_sent
            core.handle_timer(trio.current_time())
            if core.stats.queries_sent != queries_before and self.interfaces is None:
                self._join_interfaces()
            await self._flush(core, sock)
            deadline = core.next_deadline()
            self._wake = trio.Event()
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self._wake.wait()

    async def _receive_loop(self, core: MdnsCore, sock: trio.socket.SocketType) -> None:
        while True:
            try:
                data, src = await sock.recvfrom(_RECV_SIZE)
            except OSError as exc:  # e.g. ICMP errors reported on the socket: keep listening
                log.debug("mdns: receive error: %s", exc)
                continue
            core.receive(data, (str(src[0]), int(src[1])), trio.current_time())
            await self._flush(core, sock)
            self._wake.set()

    async def _say_goodbye(self, core: MdnsCore, sock: trio.socket.SocketType) -> None:
        data = core.goodbye()
        if data is None or not self._joined:
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + _GOODBYE_TIMEOUT
            await self._send(sock, Outgoing(data))
            log.debug("mdns: goodbye sent (%d bytes)", len(data))


def _is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"


def _addr_is_loopback(addr: Multiaddr) -> bool:
    for proto, value in addr.items():
        if proto.name in ("ip4", "ip6"):
            return _is_loopback(str(value))
        return False
    return False


__all__ = ["MDNS", "MDNS_GROUP", "SOURCE", "MdnsPeerLost", "multicast_interfaces"]
