"""TCP transport: ``/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>``.

trio's SocketStream already sets TCP_NODELAY; we check it rather than trust it.

:class:`SocketConnection` does its own reads and writes on the non-blocking socket (``os.read`` /
``os.write``, waiting with ``trio.lowlevel.wait_readable/writable``): a call that completes at once is a
cancellation point but, unlike trio's SocketStream, a schedule point only every YIELD_EVERY calls; and
small reads are served from one read-ahead. On this machine each loopback ``send`` costs 0.1-0.3 ms (it
wakes the peer), so fewer, fuller writes and reads are what make a dial fast.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import operator
import os
import socket

import trio
from multiaddr import Multiaddr

from mycel.core.abc import Direction, Listener, RawConnection, StreamTransport
from mycel.core.addrs import ip_multiaddr, tcp_host_port
from mycel.core.errors import DialError, TransportError
from mycel.core.yielding import YieldBudget

log = logging.getLogger("mycel.transports.tcp")

_FAMILIES = {"ip4": socket.AF_INET, "ip6": socket.AF_INET6, "dns4": socket.AF_INET, "dns6": socket.AF_INET6}
# A read for less than this asks the socket for this much and keeps the rest for the next reads, so the
# exact little reads of multistream-select and the Noise handshake cost one recv, not one per field.
# Bounded: at most one such read is kept.
READ_AHEAD = 64 * 1024
DEFAULT_READ = 64 * 1024  # receive_some(None)
CORK_LIMIT = 64 * 1024  # corked writes are sent once this much is pending
# Reads and writes that complete at once skip trio's schedule point (in-process, a dial+ping costs 30%
# more CPU with one after every socket call); every YIELD_EVERY-th such call still yields, so a task
# looping on a connection whose kernel buffers never run dry or full cannot starve the others.
YIELD_EVERY = 32
_FD_IO = os.name == "posix"  # sockets are file descriptors (os.read/os.write); elsewhere trio's stream does I/O
ADOPT_QUEUE = 16  # hole-punched sockets waiting for the swarm's accept (TCP.hole_punch); beyond: closed
_REUSE_PORT = hasattr(socket, "SO_REUSEPORT")


class SocketConnection(RawConnection):
    """A connected socket (TCP, or a unix socketpair for the memory transport) with multiaddrs.

    ``cork()`` holds small writes back until the next read would wait, or ``uncork()``: during an
    upgrade the listener's multistream header, its answer and Noise message 2 then leave in one write.
    """

    def __init__(self, stream: trio.SocketStream, direction: Direction, transport: str = "tcp") -> None:
        self._stream = stream
        self._sock = stream.socket
        self._direction = direction
        self._ahead = b""  # read ahead, not yet returned, from _ahead_pos on
        self._ahead_pos = 0
        self._corked = False
        self._pending = b""  # corked writes not yet sent; < CORK_LIMIT bytes
        self._receiving = False
        self._sending = False
        self._yields = YieldBudget(YIELD_EVERY)
        sock = stream.socket
        self.remote_ip: str | None = None
        """The remote's IP address as text (None for a unix socketpair): per-source limits key on it
        without parsing the multiaddr."""
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local = sock.getsockname()
            remote = sock.getpeername()
            self._local = ip_multiaddr(local[0], local[1], transport)
            self._remote = ip_multiaddr(remote[0], remote[1], transport)
            self.remote_ip = remote[0]
        else:  # unix socketpair (memory transport) sets its own addresses
            self._local = Multiaddr("/memory/0")
            self._remote = Multiaddr("/memory/0")

    def set_addrs(self, local: Multiaddr, remote: Multiaddr) -> None:
        """Replace the addresses reported (the memory transport sets its ``/memory/<n>`` ones)."""
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

    def _fd(self) -> int:
        fd = self._sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the connection was closed")
        return fd

    # -- writing ------------------------------------------------------------------------------------
    def cork(self) -> None:
        """Hold writes back until a read would wait (or ``uncork``); see the class docstring."""
        self._corked = True

    async def uncork(self) -> None:
        """Send what is held back and stop corking."""
        self._corked = False
        if self._pending:
            await self._guarded_flush()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this connection")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._fd()
            if self._corked:
                self._pending += data
                if len(self._pending) >= CORK_LIMIT:
                    await self._flush()
                await self._yields.spend()
                return
            if self._pending:
                await self._flush()
            with memoryview(data) as view:
                await self._write(view if view.itemsize == 1 else view.cast("B"))
            await self._yields.spend()
        finally:
            self._sending = False

    async def _guarded_flush(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this connection")
        self._sending = True
        try:
            await self._flush()
        finally:
            self._sending = False

    async def _flush(self) -> None:
        pending, self._pending = self._pending, b""
        await self._write(memoryview(pending))

    async def _write(self, view: memoryview) -> None:
        if not _FD_IO:
            await self._stream.send_all(view)
            return
        while view:
            try:
                n = os.write(self._fd(), view)
            except BlockingIOError:
                self._yields.waited()
                await trio.lowlevel.wait_writable(self._sock)
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket write failed: {exc}") from exc
            view = view[n:]

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if self._pending:
            await self._guarded_flush()
        await self._stream.send_eof()

    # -- reading ------------------------------------------------------------------------------------
    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        want = DEFAULT_READ if max_bytes is None else operator.index(max_bytes)
        if want < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this connection")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            ahead = self._ahead
            if ahead:  # served from memory (at most READ_AHEAD bytes are ever held)
                pos = self._ahead_pos
                end = min(len(ahead), pos + want)
                if end == len(ahead):
                    self._ahead = b""
                    self._ahead_pos = 0
                    data = ahead[pos:] if pos else ahead
                else:
                    self._ahead_pos = end
                    data = ahead[pos:end]
            elif want >= READ_AHEAD:
                data = await self._read(want)
            else:
                data = await self._read(READ_AHEAD)
                if len(data) > want:
                    self._ahead = data
                    self._ahead_pos = want
                    data = data[:want]
            await self._yields.spend()
            return data
        finally:
            self._receiving = False

    async def _read(self, n: int) -> bytes:
        if not _FD_IO:
            if self._pending:
                await self._guarded_flush()
            return bytes(await self._stream.receive_some(n))
        while True:
            try:
                return os.read(self._fd(), n)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket read failed: {exc}") from exc
            if self._pending:  # about to wait: the peer may be waiting for what we held back
                await self._guarded_flush()
            self._yields.waited()
            await trio.lowlevel.wait_readable(self._sock)


    async def aclose(self) -> None:
        if self._pending and self._sock.fileno() >= 0:
            with trio.move_on_after(0):  # best effort: never wait for a slow peer while closing
                try:
                    await self._guarded_flush()
                except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
                    pass
        await self._stream.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._local} <-> {self._remote}>"


class _TCPListener(Listener[RawConnection]):
    def __init__(self, listeners: list[trio.SocketListener], addrs: list[Multiaddr]) -> None:
        self._listeners = listeners
        self._addrs = addrs
        # hole-punched connections handed to the swarm as inbound ones (TCP.hole_punch), bounded
        self._adopted: list[RawConnection] = []
        self._accepting: trio.CancelScope | None = None
        self.on_close: list[_TCPListener] | None = None  # the transport's list of live listeners

    def adopt(self, conn: RawConnection) -> bool:
        """Hand ``conn`` (a simultaneous-open socket) to whoever accepts, as an inbound connection;
        False when ADOPT_QUEUE are already waiting (the caller closes it)."""
        if len(self._adopted) >= ADOPT_QUEUE:
            return False
        self._adopted.append(conn)
        if self._accepting is not None:
            self._accepting.cancel()  # (accept() is a cancellation point before the syscall succeeds)
        return True

    @property
    def addrs(self) -> list[Multiaddr]:
        return list(self._addrs)

    async def accept(self) -> RawConnection:
        # one listener socket per address; accept() is called by a single task in the swarm
        listener = self._listeners[0]
        while True:
            if self._adopted:
                await trio.lowlevel.checkpoint()
                return self._adopted.pop(0)
            stream: trio.SocketStream | None = None
            try:
                with trio.CancelScope() as self._accepting:  # cancelled by adopt()
                    stream = await listener.accept()
            except OSError as exc:  # EMFILE, ECONNABORTED...: keep the listener alive
                log.warning("accept failed on %s: %s", self._addrs[0], exc)
                await trio.lowlevel.checkpoint()
                continue
            finally:
                self._accepting = None
            if stream is None:  # a hole-punched connection was adopted meanwhile
                continue
            try:
                return SocketConnection(stream, Direction.INBOUND)
            except OSError as exc:  # reset while in the backlog: getpeername() fails (ENOTCONN)
                log.info("inbound connection on %s gone before it was accepted: %s", self._addrs[0], exc)
                await stream.aclose()

    def hole_punch_bind(self, family: int, target_loopback: bool) -> tuple[str, int] | None:
        """The ``(ip, port)`` a dial of ``family`` should bind to so it leaves from this listener's port
        (None if this listener does not suit: other family, or loopback-bound for an outside target)."""
        sock = self._listeners[0].socket
        if sock.family != family:
            return None
        ip, port = sock.getsockname()[:2]
        if ipaddress.ip_address(ip.split("%", 1)[0]).is_loopback and not target_loopback:
            return None
        return ip, port

    async def aclose(self) -> None:
        if self.on_close is not None and self in self.on_close:
            self.on_close.remove(self)
        for conn in self._adopted:
            await conn.aclose()
        self._adopted.clear()
        for listener in self._listeners:
            await listener.aclose()


class TCP(StreamTransport):
    """TCP with a dial timeout; resolves ``/dns*`` names with getaddrinfo.

    ``reuse_port=True`` (go's default, off here) makes listeners ``SO_REUSEPORT`` and dials leave from a
    listen port (same family; not a loopback-bound one for an outside target), falling back to an
    ephemeral port when that 4-tuple is taken: peers then observe the address we listen on behind an
    endpoint-independent NAT, and :meth:`hole_punch` (DCUtR's TCP simultaneous open) works. Two such hosts
    dialing each other at once may meet as one connection with two initiators: the handshake raises
    :class:`~mycel.core.errors.SimultaneousOpenError` and the swarm redials with :meth:`dial_ephemeral`.
    """

    name = "tcp"

    def __init__(self, *, dial_timeout: float = 10.0, backlog: int = 512, reuse_port: bool = False) -> None:
        self.dial_timeout = dial_timeout
        self.backlog = backlog
        self.reuse_port = reuse_port and _REUSE_PORT
        self._listeners: list[_TCPListener] = []

    def __deepcopy__(self, memo: dict[int, object]) -> TCP:
        """A copy with the settings and none of the live listeners (each host gets its own)."""
        return TCP(dial_timeout=self.dial_timeout, backlog=self.backlog, reuse_port=self.reuse_port)

    def _listener_for(self, family: int, host: str) -> tuple[_TCPListener, tuple[str, int]] | None:
        """With ``reuse_port``: a listener whose port a dial to ``host`` leaves from, and that address."""
        if not self.reuse_port:
            return None
        loopback = ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
        for listener in self._listeners:
            bind = listener.hole_punch_bind(family, loopback)
            if bind is not None:
                return listener, bind
        return None

    def _bind_for(self, family: int, host: str) -> tuple[str, int] | None:
        found = self._listener_for(family, host)
        return None if found is None else found[1]

    async def _connect(self, family: int, host: str, port: int, bind: tuple[str, int] | None) -> trio.socket.SocketType:
        """A connected socket to ``host:port``, leaving from ``bind`` when given (SO_REUSEPORT)."""
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            if bind is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                await sock.bind(bind)
            await sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def can_hole_punch(self, addr: Multiaddr) -> bool:
        """True for ``/ip4|ip6/…/tcp/…`` when we listen with ``reuse_port`` on that family."""
        parsed = tcp_host_port(addr)
        if parsed is None or parsed[0] not in ("ip4", "ip6"):
            return False
        return self._bind_for(_FAMILIES[parsed[0]], parsed[1]) is not None

    async def hole_punch(self, addr: Multiaddr, *, timeout: float) -> bool:
        """DCUtR's TCP simultaneous open, listener side (B): connect to ``addr`` from our listen port
        while the peer dials us; the socket is handed to our listener as an *inbound* connection (B
        acts as the server above TCP, as the spec says), so the swarm upgrades and registers it.
        Returns whether a connection came of it (the peer's SYN may also land on the listener itself)."""
        parsed = tcp_host_port(addr)
        if parsed is None or parsed[0] not in ("ip4", "ip6"):
            return False
        family, host, port = _FAMILIES[parsed[0]], parsed[1], parsed[2]
        found = self._listener_for(family, host)
        if found is None:
            return False
        listener, bind = found
        try:
            with trio.fail_after(timeout):
                sock = await self._connect(family, host, port, bind)
        except (OSError, trio.TooSlowError) as exc:
            log.debug("hole punch to %s from port %d: %s", addr, bind[1], exc)
            return False
        try:
            conn = SocketConnection(trio.SocketStream(sock), Direction.INBOUND)
        except OSError as exc:  # reset at once
            sock.close()
            log.debug("hole punch to %s: connection gone at once: %s", addr, exc)
            return False
        if listener.adopt(conn):
            return True
        await conn.aclose()
        log.info("hole punch to %s: connected, but no listener took it (queue full or closed)", addr)
        return False

    def can_dial(self, addr: Multiaddr) -> bool:
        return tcp_host_port(addr) is not None

    def can_listen(self, addr: Multiaddr) -> bool:
        parsed = tcp_host_port(addr)
        return parsed is not None and parsed[0] in ("ip4", "ip6")

    async def resolve(self, addr: Multiaddr) -> list[tuple[int, str, int]]:
        """The ``(family, host, port)`` targets of a TCP address: itself for ``/ip4``/``/ip6``, the
        getaddrinfo results for ``/dns*`` (IPv6 first for ``/dns``). Raises DialError if it is not a TCP
        address or does not resolve.
        """
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
        return await self._dial(addr, shared=True)

    async def dial_ephemeral(self, addr: Multiaddr) -> RawConnection:
        """A dial from an ephemeral port even with ``reuse_port`` (the swarm's retry after a simultaneous open)."""
        return await self._dial(addr, shared=False)

    async def _dial(self, addr: Multiaddr, *, shared: bool) -> RawConnection:
        targets = await self.resolve(addr)
        errors: list[BaseException] = []
        for family, host, port in targets:
            # a plain socket connect: trio.open_tcp_stream's happy-eyeballs machinery costs ~0.3 ms a dial
            bind = self._bind_for(family, host) if shared else None
            try:
                with trio.fail_after(self.dial_timeout):
                    try:
                        sock = await self._connect(family, host, port, bind)
                    except OSError as exc:  # that 4-tuple is taken (a second dial to one address): ephemeral
                        if bind is None or exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                            raise
                        sock = await self._connect(family, host, port, None)
            except (OSError, trio.TooSlowError) as exc:
                errors.append(exc)
                continue
            conn = SocketConnection(trio.SocketStream(sock), Direction.OUTBOUND)
            conn.shares_listen_port = bind is not None and sock.getsockname()[1] == bind[1]
            return conn
        raise DialError(f"TCP dial to {addr} failed: {errors[-1] if errors else 'no address'}", errors)

    async def open_listener(self, addr: Multiaddr) -> Listener[RawConnection]:
        parsed = tcp_host_port(addr)
        if parsed is None or parsed[0] not in ("ip4", "ip6"):
            raise TransportError(f"cannot listen on {addr}")
        proto, host, port = parsed
        try:
            if self.reuse_port:  # one socket, SO_REUSEPORT before bind so that dials can share the port
                sock = trio.socket.socket(_FAMILIES[proto], socket.SOCK_STREAM)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    if proto == "ip6":
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    await sock.bind((host, port))
                    sock.listen(self.backlog)
                except BaseException:
                    sock.close()
                    raise
                listeners = [trio.SocketListener(sock)]
            else:
                listeners = await trio.open_tcp_listeners(port, host=host, backlog=self.backlog)
        except OSError as exc:
            raise TransportError(f"cannot listen on {addr}: {exc}") from exc
        bound: list[Multiaddr] = []
        for lst in listeners:
            sockname = lst.socket.getsockname()
            bound.append(ip_multiaddr(sockname[0], sockname[1]))
        listener = _TCPListener(listeners, bound)
        listener.on_close = self._listeners
        self._listeners.append(listener)
        return listener
