"""In-process transport over socketpairs: ``/memory/<n>``. For fast tests and demos.

There is no process-wide registry: hosts that should reach each other share one :class:`MemoryNetwork`.
"""

from __future__ import annotations

import itertools

import trio
from multiaddr import Multiaddr

from mycel.core.abc import Direction, Listener, RawConnection, StreamTransport
from mycel.core.errors import DialError, TransportError
from mycel.transports.tcp import SocketConnection

PENDING_BACKLOG = 64  # connections dialed but not yet accepted; further dials fail


def _memory_id(addr: Multiaddr) -> int | None:
    parts = list(addr.items())
    if len(parts) == 1 and parts[0][0].name == "memory":
        return int(str(parts[0][1]))
    return None


class MemoryNetwork:
    """A namespace of memory listeners. Port 0 picks a free id."""

    def __init__(self) -> None:
        self._listeners: dict[int, _MemoryListener] = {}
        self._ids = itertools.count(1)
        self._client_ids = itertools.count(1 << 40)

    def __deepcopy__(self, memo: dict[int, object]) -> MemoryNetwork:
        # a network is the medium hosts share: each host copies its transports, never the network
        return self

    def _bind(self, wanted: int) -> _MemoryListener:
        if wanted == 0:
            wanted = next(self._ids)
            while wanted in self._listeners:
                wanted = next(self._ids)
        if wanted in self._listeners:
            raise TransportError(f"/memory/{wanted} is in use")
        listener = _MemoryListener(self, wanted)
        self._listeners[wanted] = listener
        return listener

    def _unbind(self, ident: int) -> None:
        self._listeners.pop(ident, None)

    async def _dial(self, ident: int) -> RawConnection:
        listener = self._listeners.get(ident)
        if listener is None:
            raise DialError(f"nothing listens on /memory/{ident}")
        a, b = trio.socket.socketpair()
        client = SocketConnection(trio.SocketStream(a), Direction.OUTBOUND, "memory")
        server = SocketConnection(trio.SocketStream(b), Direction.INBOUND, "memory")
        local = Multiaddr(f"/memory/{next(self._client_ids)}")
        remote = Multiaddr(f"/memory/{ident}")
        client.set_addrs(local, remote)
        server.set_addrs(remote, local)
        try:
            listener._pending.send_nowait(server)
        except (trio.WouldBlock, trio.ClosedResourceError) as exc:
            await client.aclose()
            await server.aclose()
            raise DialError(f"/memory/{ident} is not accepting") from exc
        await trio.lowlevel.checkpoint()
        return client


class _MemoryListener(Listener[RawConnection]):
    def __init__(self, network: MemoryNetwork, ident: int) -> None:
        self._network = network
        self._ident = ident
        self._pending, self._incoming = trio.open_memory_channel[RawConnection](PENDING_BACKLOG)

    @property
    def addrs(self) -> list[Multiaddr]:
        return [Multiaddr(f"/memory/{self._ident}")]

    async def accept(self) -> RawConnection:
        try:
            return await self._incoming.receive()
        except trio.EndOfChannel as exc:
            raise trio.ClosedResourceError("listener closed") from exc

    async def aclose(self) -> None:
        self._network._unbind(self._ident)
        self._pending.close()
        while True:
            try:
                conn = self._incoming.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            await conn.aclose()


class MemoryTransport(StreamTransport):
    """The in-memory transport: dials and listens on ``/memory/<n>`` addresses of ``network`` (use one
    :class:`MemoryNetwork` for all hosts that should reach each other). Connections are socketpairs,
    so they need security and a muxer like TCP ones.
    """

    name = "memory"

    def __init__(self, network: MemoryNetwork) -> None:
        self.network = network

    def can_dial(self, addr: Multiaddr) -> bool:
        return _memory_id(addr) is not None

    def can_listen(self, addr: Multiaddr) -> bool:
        return _memory_id(addr) is not None

    async def dial(self, addr: Multiaddr) -> RawConnection:
        ident = _memory_id(addr)
        if ident is None:
            raise DialError(f"not a memory address: {addr}")
        return await self.network._dial(ident)

    async def open_listener(self, addr: Multiaddr) -> Listener[RawConnection]:
        ident = _memory_id(addr)
        if ident is None:
            raise TransportError(f"not a memory address: {addr}")
        return self.network._bind(ident)
