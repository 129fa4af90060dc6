"""The trio driver of mDNS: UDP sockets on port 5353 (IPv4 and IPv6), the sans-IO core, and the host's
``peer_found``.

Each socket is bound to port 5353 (``0.0.0.0``; ``::`` with IPV6_V6ONLY) with SO_REUSEADDR and
SO_REUSEPORT (other mDNS responders on the machine — avahi, another host — share the port; multicast
reaches every socket), joins 224.0.0.251 / ff02::fb on each chosen interface and sends multicast on
each of them in turn (IP_MULTICAST_IF / IPV6_MULTICAST_IF, hop limit 255 as RFC 6762 §11 asks,
loopback on so that hosts on one machine hear each other). Interfaces: up and multicast-capable —
for IPv4 (:func:`multicast_interfaces`) those with an IPv4 address, loopback only when there is
nothing else; for IPv6 (:func:`multicast_interfaces6`) those with an IPv6 address, never loopback.
They are looked up again before each query round, so an interface that comes up later is joined.
Both families carry the same packets; a peer heard on both is one peer (the core keys peers by id).
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
MDNS_GROUP6 = "ff02::fb"
SOURCE = "mdns"
"""The ``source`` of the ``PeerFound`` events this service reports."""
_RECV_SIZE = 9000 + 1  # one byte more than the codec accepts, so an oversized datagram is seen as one
_GOODBYE_TIMEOUT = 1.0


@dataclass(frozen=True)
class MdnsPeerLost(ServiceEvent):
    """mDNS lost a peer it had found: it said goodbye (TTL 0) or its records expired; its addresses
    of source DISCOVERY were removed from the peerstore (a connection to it stays open)."""

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


def multicast_interfaces6(only: Sequence[str] | None = None) -> dict[str, int]:
    """Interfaces for IPv6 mDNS, ``{name: index}``: up, multicast, not loopback, with an IPv6 address;
    ``only``: these interface names as given (unknown names are left out)."""
    if only is None:
        stats = psutil.net_if_stats()
        names = []
        for name, addrs in psutil.net_if_addrs().items():
            st = stats.get(name)
            flags = set(getattr(st, "flags", "").split(",")) if st is not None else set()
            if st is None or not st.isup or "loopback" in flags or ("multicast" not in flags and flags - {""}):
                continue
            if any(a.family == stdsocket.AF_INET6 for a in addrs):
                names.append(name)
    else:
        names = list(only)
    found: dict[str, int] = {}
    for name in names:
        try:
            found[name] = stdsocket.if_nametoindex(name)
        except OSError:
            continue
    return found


@dataclass
class _Channel:
    """One socket (one address family) and the interfaces it joined: IPv4 address -> 0, or IPv6
    interface name -> index."""

    family: int
    sock: trio.socket.SocketType
    group: str
    joined: dict[str, int]
    lock: trio.Lock  # the multicast interface is a socket option: one multicast sender at a time


class MDNS(Service):
    """Local-network discovery by multicast DNS (libp2p discovery/mdns spec).

    Announces the host's addresses as ``dnsaddr=`` TXT strings under ``_p2p._udp.local``, queries for
    others, reports each found peer with ``host.peer_found(peer, addrs, "mdns", ttl)`` (the host keeps
    the addresses and connects up to ``HostConfig.discovery_connect``), and says goodbye when the host
    stops. A goodbye or an expiry removes the peer's DISCOVERY addresses from the peerstore (the
    peerstore does not tell discovery sources apart) and emits :class:`MdnsPeerLost`.

    ``interfaces``: IPv4 addresses of the interfaces to use (default: every multicast interface);
    ``interfaces6``: names of the interfaces for IPv6 (default: every multicast interface with an IPv6
    address — or none when ``interfaces`` is given); ``ipv6=False`` turns IPv6 off;
    ``port`` / ``group``: only for tests (5353 / 224.0.0.251 and ff02::fb is what every libp2p speaks);
    ``config``: the core's parameters (:class:`MdnsConfig`).
    """

    def __init__(
        self,
        *,
        interfaces: Sequence[str] | None = None,
        interfaces6: Sequence[str] | None = None,
        ipv6: bool = True,
        port: int = MDNS_PORT,
        group: str = MDNS_GROUP,
        config: MdnsConfig | None = None,
    ) -> None:
        self.interfaces = None if interfaces is None else list(interfaces)
        self.interfaces6 = None if interfaces6 is None else list(interfaces6)
        if self.interfaces6 is None and self.interfaces is not None:
            self.interfaces6 = []
        self.ipv6 = ipv6
        self.port = port
        self.group = group
        self.config = dataclasses.replace(config or MdnsConfig(), port=port)
        self._core: MdnsCore | None = None
        self._channels: list[_Channel] = []
        self._wake = trio.Event()
        self._host: ServiceHost | None = None

    def clone(self) -> MDNS:
        """A fresh copy with the same settings (a new peer name is drawn when it runs)."""
        return MDNS(
            interfaces=self.interfaces,
            interfaces6=self.interfaces6,
            ipv6=self.ipv6,
            port=self.port,
            group=self.group,
            config=self.config,
        )

    @property
    def core(self) -> MdnsCore:
        """The running core (its peer name, found peers and stats)."""
        if self._core is None:
            raise not_running(self)
        return self._core

    @property
    def socket(self) -> trio.socket.SocketType | None:
        """The IPv4 UDP socket while running (None before and after)."""
        return next((c.sock for c in self._channels if c.family == stdsocket.AF_INET), None)

    @property
    def sockets(self) -> list[trio.socket.SocketType]:
        """Every UDP socket while running (IPv4, and IPv6 when it could be opened)."""
        return [c.sock for c in self._channels]

    @property
    def interfaces_joined(self) -> list[str]:
        """The IPv4 addresses and IPv6 interface names the sockets joined the mDNS group on."""
        return [name for c in self._channels for name in sorted(c.joined)]

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
        core = MdnsCore(host.peer_id, random.Random(os.urandom(16)), self.config)
        channels: list[_Channel] = []
        try:
            channels.append(await self._open(stdsocket.AF_INET))
            if self.ipv6 and self.interfaces6 != []:
                try:
                    channels.append(await self._open(stdsocket.AF_INET6))
                except OSError as exc:  # no IPv6 on this machine: IPv4 alone
                    log.info("mdns: no IPv6 socket: %s", exc)
            self._channels = channels
            self._join_interfaces()
            self._core = core
            core.set_addrs(host.addrs, trio.current_time())
            core.start(trio.current_time())
            log.info("mdns: %s is %s on %s", host.peer_id, core.peer_name, ",".join(self.interfaces_joined) or "-")
            task_status.started()
            async with trio.open_nursery() as nursery:
                for channel in channels:
                    nursery.start_soon(self._receive_loop, core, channel)
                await self._timer_loop(core)
        finally:
            try:
                await self._say_goodbye(core)
            finally:
                for channel in channels:
                    channel.sock.close()
                self._channels = []
                self._core = None

    # -- internals ------------------------------------------------------------------------------
    async def _open(self, family: int) -> _Channel:
        sock = trio.socket.socket(family, stdsocket.SOCK_DGRAM)
        try:
            sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEADDR, 1)
            if hasattr(stdsocket, "SO_REUSEPORT"):
                sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEPORT, 1)
            if family == stdsocket.AF_INET:
                sock.setsockopt(stdsocket.IPPROTO_IP, stdsocket.IP_MULTICAST_TTL, 255)
                sock.setsockopt(stdsocket.IPPROTO_IP, stdsocket.IP_MULTICAST_LOOP, 1)
                await sock.bind(("", self.port))
                return _Channel(family, sock, self.group, {}, trio.Lock())
            sock.setsockopt(stdsocket.IPPROTO_IPV6, stdsocket.IPV6_V6ONLY, 1)
            sock.setsockopt(stdsocket.IPPROTO_IPV6, stdsocket.IPV6_MULTICAST_HOPS, 255)
            sock.setsockopt(stdsocket.IPPROTO_IPV6, stdsocket.IPV6_MULTICAST_LOOP, 1)
            await sock.bind(("::", self.port))
            return _Channel(family, sock, MDNS_GROUP6, {}, trio.Lock())
        except BaseException:
            sock.close()
            raise

    def _join_interfaces(self) -> None:
        for channel in self._channels:
            if channel.family == stdsocket.AF_INET:
                wanted = {ip: 0 for ip in multicast_interfaces(self.interfaces)}
            else:
                wanted = multicast_interfaces6(self.interfaces6)
            for name, index in wanted.items():
                if name in channel.joined:
                    continue
                try:
                    if channel.family == stdsocket.AF_INET:
                        mreq = struct.pack("4s4s", stdsocket.inet_aton(channel.group), stdsocket.inet_aton(name))
                        channel.sock.setsockopt(stdsocket.IPPROTO_IP, stdsocket.IP_ADD_MEMBERSHIP, mreq)
                    else:
                        mreq6 = stdsocket.inet_pton(stdsocket.AF_INET6, channel.group) + struct.pack("@I", index)
                        channel.sock.setsockopt(stdsocket.IPPROTO_IPV6, stdsocket.IPV6_JOIN_GROUP, mreq6)
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:  # EADDRINUSE: a member already (two addresses, one link)
                        log.info("mdns: cannot join %s on %s: %s", channel.group, name, exc)
                        continue
                channel.joined[name] = index

    async def _send(self, out: Outgoing) -> None:
        if out.dest is not None:
            family = stdsocket.AF_INET6 if ":" in out.dest[0] else stdsocket.AF_INET
            for channel in self._channels:
                if channel.family == family:
                    try:
                        await channel.sock.sendto(out.data, out.dest)
                    except OSError as exc:
                        log.debug("mdns: unicast to %s failed: %s", out.dest, exc)
            return
        for channel in self._channels:
            async with channel.lock:
                for name, index in sorted(channel.joined.items()):
                    try:
                        if channel.family == stdsocket.AF_INET:
                            iface = stdsocket.inet_aton(name)
                            channel.sock.setsockopt(stdsocket.IPPROTO_IP, stdsocket.IP_MULTICAST_IF, iface)
                            await channel.sock.sendto(out.data, (channel.group, self.port))
                        else:
                            channel.sock.setsockopt(stdsocket.IPPROTO_IPV6, stdsocket.IPV6_MULTICAST_IF, index)
                            await channel.sock.sendto(out.data, (channel.group, self.port, 0, index))
                    except OSError as exc:  # an interface that went away: the next round looks again
                        log.debug("mdns: multicast on %s failed: %s", name, exc)

    async def _flush(self, core: MdnsCore) -> None:
        for out in core.datagrams_to_send():
            await self._send(out)
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

    async def _timer_loop(self, core: MdnsCore) -> None:
        while True:
            queries_before = core.stats.queries_sent
            core.handle_timer(trio.current_time())
            if core.stats.queries_sent != queries_before:
                self._join_interfaces()
            await self._flush(core)
            deadline = core.next_deadline()
            self._wake = trio.Event()
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self._wake.wait()

    async def _receive_loop(self, core: MdnsCore, channel: _Channel) -> None:
        while True:
            try:
                data, src = await channel.sock.recvfrom(_RECV_SIZE)
            except OSError as exc:  # e.g. ICMP errors reported on the socket: keep listening
                log.debug("mdns: receive error: %s", exc)
                continue
            ip = str(src[0])
            if channel.family == stdsocket.AF_INET6 and len(src) > 3 and src[3] and "%" not in ip:
                ip = f"{ip}%{src[3]}"  # a link-local source: a unicast answer needs its interface
            core.receive(data, (ip, int(src[1])), trio.current_time())
            await self._flush(core)
            self._wake.set()

    async def _say_goodbye(self, core: MdnsCore) -> None:
        data = core.goodbye()
        if data is None or not any(c.joined for c in self._channels):
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + _GOODBYE_TIMEOUT
            await self._send(Outgoing(data))
            log.debug("mdns: goodbye sent (%d bytes)", len(data))


def _is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip.split("%", 1)[0] == "::1"


def _addr_is_loopback(addr: Multiaddr) -> bool:
    for proto, value in addr.items():
        if proto.name in ("ip4", "ip6"):
            return _is_loopback(str(value))
        return False
    return False


__all__ = ["MDNS", "MDNS_GROUP", "MDNS_GROUP6", "SOURCE", "MdnsPeerLost", "multicast_interfaces", "multicast_interfaces6"]
