"""A user's own transport, security protocol and muxer plug in by implementing one small class each."""

from __future__ import annotations

from collections.abc import Sequence

import trio
from multiaddr import Multiaddr

from mycel import HostConfig, Identity, open_host
from mycel.core.abc import (
    Connection,
    Direction,
    Listener,
    RawConnection,
    SecureConnection,
    SecurityProtocol,
    StreamMuxer,
    StreamTransport,
)
from mycel.core.identity import Identity as IdentityType
from mycel.core.peer_id import PeerId
from mycel.muxers.yamux import Yamux
from mycel.protocols.identify import Identify
from mycel.protocols.ping import Ping
from mycel.security.noise import Noise
from mycel.transports.tcp import SocketConnection


class PipeRegistry(dict[str, "trio.MemorySendChannel[RawConnection]"]):
    """The listeners all copies of a PipeTransport share. Each host deep-copies its transports, so
    what hosts must share (a network, a registry) returns itself from ``__deepcopy__``."""

    def __deepcopy__(self, memo: dict[int, object]) -> PipeRegistry:
        return self


class PipeTransport(StreamTransport):
    """A toy transport: `/memory/<n>` over socketpairs, written only against StreamTransport."""

    name = "pipe"

    def __init__(self) -> None:
        self.listeners = PipeRegistry()

    def can_dial(self, addr: Multiaddr) -> bool:
        return str(addr) in self.listeners

    def can_listen(self, addr: Multiaddr) -> bool:
        return str(addr).startswith("/memory/")

    async def dial(self, addr: Multiaddr) -> RawConnection:
        a, b = trio.socket.socketpair()
        client = SocketConnection(trio.SocketStream(a), Direction.OUTBOUND, "memory")
        server = SocketConnection(trio.SocketStream(b), Direction.INBOUND, "memory")
        client.set_addrs(Multiaddr("/memory/999"), addr)
        server.set_addrs(addr, Multiaddr("/memory/999"))
        await self.listeners[str(addr)].send(server)
        return client

    async def open_listener(self, addr: Multiaddr) -> Listener[RawConnection]:
        send, recv = trio.open_memory_channel[RawConnection](8)
        self.listeners[str(addr)] = send

        class _L(Listener[RawConnection]):
            @property
            def addrs(self) -> list[Multiaddr]:
                return [addr]

            async def accept(self) -> RawConnection:
                try:
                    return await recv.receive()
                except trio.EndOfChannel as exc:
                    raise trio.ClosedResourceError from exc

            async def aclose(self) -> None:
                send.close()

        return _L()


class BrandedNoise(SecurityProtocol):
    """A user's security protocol: here Noise under another protocol id, to show the plug-in point."""

    protocol_id = "/my-company/secure/1.0.0"

    def __init__(self) -> None:
        self.inner = Noise()
        self.handshakes = 0

    async def secure_outbound(
        self, conn: RawConnection, identity: IdentityType, remote_peer: PeerId | None, muxer_ids: Sequence[str] = ()
    ) -> SecureConnection:
        self.handshakes += 1
        return await self.inner.secure_outbound(conn, identity, remote_peer, ())

    async def secure_inbound(
        self, conn: RawConnection, identity: IdentityType, muxer_ids: Sequence[str] = ()
    ) -> SecureConnection:
        self.handshakes += 1
        return await self.inner.secure_inbound(conn, identity, ())


class BrandedMuxer(StreamMuxer):
    protocol_id = "/my-company/mux/1.0.0"

    def new_connection(self, secure: SecureConnection) -> Connection:
        return Yamux().new_connection(secure)


async def test_host_from_custom_layers() -> None:
    transport = PipeTransport()

    def config() -> HostConfig:
        return HostConfig(
            identity=Identity.generate(),
            transports=[transport],
            security=[BrandedNoise()],
            muxers=[BrandedMuxer()],
            services=[Identify(), Ping()],
        )

    async with open_host(config()) as a, open_host(config()) as b:
        await b.listen("/memory/1")
        conn = await a.connect(f"/memory/1/p2p/{b.peer_id}")
        assert conn.remote_peer == b.peer_id
        assert conn.security_protocol == "/noise"  # the wrapped implementation reports itself
        assert (await a.service(Ping).ping(b.peer_id))[0] >= 0
        res = await a.service(Identify).identify_connection(conn)
        assert res.peer == b.peer_id
        sec = a.security[0]  # the host's own copy (the config holds templates)
        assert isinstance(sec, BrandedNoise) and sec.handshakes == 1
