"""TCP transport: ``/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>``.

trio's SocketStream already sets TCP_NODELAY; we check it rather than trust it.
"""

from __future__ import annotations

import logging
import socket

import trio
from multiaddr import Multiaddr

from mycel.core.abc import Direction, Listener, RawConnection, StreamTransport
from mycel.core.addrs import ip_multiaddr, tcp_host_port
from mycel.core.errors import DialError, TransportError

log = logging.getLogger("mycel.transports.tcp")

_FAMILIES = {"ip4": socket.AF_INET, "ip6": socket.AF_INET6, "dns4": socket.AF_INET, "dns6": socket.AF_INET6}


class SocketConnection(RawConnection):
    """A connected trio.SocketStream with multiaddrs."""

    def __init__(self, stream: trio.SocketStream, direction: Direction, transport: str = "tcp") -> None:
        self._stream = stream
        self._direction = direction
        sock = stream.socket
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local = sock.getsockname()
            remote = sock.getpeername()
            self._local = ip_multiaddr(local[0], local[1], transport)
            self._remote = ip_multiaddr(remote[0], remote[1], transport)
        else:  # unix socketpair (memory transport) sets its own addresses
            self._local = Multiaddr("/memory/0")
            self._remote = Multiaddr("/memory/0")

    def set_addrs(self, local: Multiaddr, remote: Multiaddr) -> None:
        self._local, self._remote = local, remote

    @property
    def local_addr(self) -> Multiaddr:
        return self._local

    @property
    def remote_addr(self) -> Multiaddr:
        return self._remote

    @property
    def direction(self) -> Direction:
        return self._direction

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._local} <-> {self._remote}>"


class _TCPListener(Listener[RawConnection]):
    def __init__(self, listeners: list[trio.SocketListener], addrs: list[Multiaddr]) -> None:
        self._listeners = listeners
        self._addrs = addrs

    @property
    def addrs(self) -> list[Multiaddr]:
        return list(self._addrs)

    async def accept(self) -> RawConnection:
        # one listener socket per address; accept() is called by a single task in the swarm
        listener = self._listeners[0]
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # EMFILE, ECONNABORTED...: keep the listener alive
                log.warning("accept failed on %s: %s", self._addrs[0], exc)
                await trio.lowlevel.checkpoint()
                continue
            return SocketConnection(stream, Direction.INBOUND)

    async def aclose(self) -> None:
        for listener in self._listeners:
            await listener.aclose()


class TCP(StreamTransport):
    """TCP with a dial timeout; resolves ``/dns*`` names with getaddrinfo."""

    name = "tcp"

    def __init__(self, *, dial_timeout: float = 10.0, backlog: int = 512) -> None:
        self.dial_timeout = dial_timeout
        self.backlog = backlog

    def can_dial(self, addr: Multiaddr) -> bool:
        return tcp_host_port(addr) is not None

    def can_listen(self, addr: Multiaddr) -> bool:
        parsed = tcp_host_port(addr)
        return parsed is not None and parsed[0] in ("ip4", "ip6")

    async def resolve(self, addr: Multiaddr) -> list[tuple[int, str, int]]:
        parsed = tcp_host_port(addr)
        if parsed is None:
            raise DialError(f"not a TCP address: {addr}")
        proto, host, port = parsed
        if proto in ("ip4", "ip6"):
            return [(_FAMILIES[proto], host, port)]
        family = _FAMILIES.get(proto, 0)
        try:
            infos = await trio.socket.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise DialError(f"cannot resolve {host}: {exc}") from exc
        out = [(int(fam), str(sa[0]), int(sa[1])) for fam, _, _, _, sa in infos]
        if proto == "dns":  # prefer IPv6 as the addressing spec says
            out.sort(key=lambda x: 0 if x[0] == socket.AF_INET6 else 1)
        return out

    async def dial(self, addr: Multiaddr) -> RawConnection:
        targets = await self.resolve(addr)
        errors: list[BaseException] = []
        for family, host, port in targets:
            # a plain socket connect: trio.open_tcp_stream's happy-eyeballs machinery costs ~0.3 ms a dial
            sock = trio.socket.socket(family, socket.SOCK_STREAM)
            try:
                with trio.fail_after(self.dial_timeout):
                    await sock.connect((host, port))
            except (OSError, trio.TooSlowError) as exc:
                sock.close()
                errors.append(exc)
                continue
            except BaseException:
                sock.close()
                raise
            return SocketConnection(trio.SocketStream(sock), Direction.OUTBOUND)
        raise DialError(f"TCP dial to {addr} failed: {errors[-1] if errors else 'no address'}", errors)

    async def open_listener(self, addr: Multiaddr) -> Listener[RawConnection]:
        parsed = tcp_host_port(addr)
        if parsed is None or parsed[0] not in ("ip4", "ip6"):
            raise TransportError(f"cannot listen on {addr}")
        _, host, port = parsed
        try:
            listeners = await trio.open_tcp_listeners(port, host=host, backlog=self.backlog)
        except OSError as exc:
            raise TransportError(f"cannot listen on {addr}: {exc}") from exc
        bound: list[Multiaddr] = []
        for lst in listeners:
            sockname = lst.socket.getsockname()
            bound.append(ip_multiaddr(sockname[0], sockname[1]))
        return _TCPListener(listeners, bound)
