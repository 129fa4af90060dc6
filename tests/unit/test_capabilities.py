"""Optional fast paths are declared as Protocols in mycel.core.abc: the real layers have them, the driver
and the swarm use them when present, and a minimal custom layer without any of them still works."""

from __future__ import annotations

import ast

import os
import pathlib

import trio
from multiaddr import Multiaddr

from mycel import HostConfig, Identity, open_host
from mycel.core.abc import (
    ChunkSender,
    Connection,
    Corkable,
    Direction,
    FrameQueue,
    FrameReceiver,
    FrameSizeAdjustable,
    InboundStreamPush,
    MuxedStream,
    RawConnection,
    RecordSized,
    RttReporter,
    SecureConnection,
    StreamMuxer,
)
from mycel.muxers.driver import MuxedConnection
from mycel.muxers.mplex import Mplex, MplexCore
from mycel.muxers.yamux import Yamux, YamuxCore
from mycel.protocols.ping import Ping
from mycel.security.noise.connection import NoiseConnection
from mycel.security.noise.transport import MAX_PLAINTEXT, NoiseTransport
from mycel.security.plaintext import Plaintext, PlaintextConnection
from mycel.security.tls.connection import TLSConnection
from mycel.testing.conformance import receive_exactly
from mycel.testing.fake_secure import FakeSecureConnection, memory_secure_pair
from mycel.testing.raw import StreamRawConnection, memory_raw_pair
from mycel.transports.quic.connection import QUICConnection
from mycel.transports.tcp import SocketConnection
from tests.integration.test_custom_layers import PipeTransport

ROOT = pathlib.Path(__file__).resolve().parents[2]
ALL = (FrameReceiver, ChunkSender, RecordSized, Corkable, InboundStreamPush, FrameQueue, FrameSizeAdjustable, RttReporter)


def noise_pair() -> tuple[NoiseConnection, NoiseConnection]:
    a, b = memory_raw_pair()
    k1, k2 = os.urandom(32), os.urandom(32)
    me = Identity.generate()

    def connection(raw: RawConnection, transport: NoiseTransport) -> NoiseConnection:
        return NoiseConnection(
            raw, transport, local_peer=me.peer_id, remote_peer=me.peer_id, remote_public_key=me.public_key
        )

    return connection(a, NoiseTransport(k1, k2)), connection(b, NoiseTransport(k2, k1))


def capabilities(obj: object) -> set[str]:
    return {cap.__name__ for cap in ALL if isinstance(obj, cap)}


# ---- the real layers declare what they offer ----------------------------------------------------


async def test_noise_connection_offers_frames_chunks_and_record_size() -> None:
    a, _ = noise_pair()
    assert capabilities(a) == {"FrameReceiver", "ChunkSender", "RecordSized"}
    assert a.record_size == MAX_PLAINTEXT


async def test_tcp_connection_is_corkable() -> None:
    sa, sb = trio.socket.socketpair()
    with sa, sb:
        conn = SocketConnection(trio.SocketStream(sa), Direction.OUTBOUND, "memory")
        assert capabilities(conn) == {"Corkable"}
    assert issubclass(SocketConnection, Corkable)  # method-only Protocols also work with issubclass


def test_muxer_cores() -> None:
    assert capabilities(YamuxCore(True)) == {"FrameQueue", "FrameSizeAdjustable", "RttReporter"}
    assert capabilities(MplexCore()) == {"FrameSizeAdjustable"}


async def test_muxed_and_quic_connections_push_inbound_streams() -> None:
    a, _ = memory_secure_pair()
    conn = Yamux().new_connection(a)
    assert capabilities(conn) == {"InboundStreamPush"}
    assert capabilities(Mplex().new_connection(a)) == {"InboundStreamPush"}
    assert issubclass(QUICConnection, InboundStreamPush)


async def test_plain_layers_offer_nothing() -> None:
    raw, _ = memory_raw_pair()
    secure, _ = memory_secure_pair()
    assert capabilities(raw) == set()
    assert capabilities(secure) == set()
    assert not issubclass(PlaintextConnection, (FrameReceiver, ChunkSender))
    assert not issubclass(TLSConnection, (FrameReceiver, ChunkSender))


def static_conformance(
    noise: NoiseConnection, tcp: SocketConnection, yamux: YamuxCore, mplex: MplexCore, muxed: MuxedConnection
) -> None:
    """Never called: mypy checks that the real classes match the Protocols' signatures."""
    receiver: FrameReceiver = noise
    sender: ChunkSender = noise
    sized: RecordSized = noise
    corkable: Corkable = tcp
    queue: FrameQueue = yamux
    adjustable: list[FrameSizeAdjustable] = [yamux, mplex]
    rtt: RttReporter = yamux
    push: InboundStreamPush = muxed
    del receiver, sender, sized, corkable, queue, adjustable, rtt, push


# ---- the driver uses them when both sides have them ---------------------------------------------


async def test_driver_lines_frames_up_with_records_only_when_offered() -> None:
    noise, _ = noise_pair()
    yamux_core = YamuxCore(True, max_frame=1 << 20)
    MuxedConnection(noise, yamux_core)
    assert yamux_core.max_frame == MAX_PLAINTEXT
    plain, _ = memory_secure_pair()
    untouched = YamuxCore(True, max_frame=1 << 20)
    MuxedConnection(plain, untouched)
    assert untouched.max_frame == 1 << 20


async def test_rtt_shows_in_stats_for_yamux_only() -> None:
    for muxer, has_rtt in ((Yamux(), True), (Mplex(), False)):
        a, b = memory_secure_pair()
        client, server = muxer.new_connection(a), muxer.new_connection(b)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            nursery.start_soon(server.run)
            if has_rtt:
                assert isinstance(client, MuxedConnection)
                await client.ping()
            assert ("rtt" in client.stats.extra) is has_rtt
            await client.aclose()
            await server.aclose()


# ---- a minimal custom layer without any of them takes the plain path ------------------------------


class BareSecure(FakeSecureConnection):
    """A secure channel with only the SecureConnection methods, counting the plain calls used."""

    def __init__(self, inner: SecureConnection) -> None:
        super().__init__(inner, direction=inner.direction)
        self.inner = inner
        self.receives = self.sends = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        self.receives += 1
        return await self.inner.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sends += 1
        await self.inner.send_all(data)


async def test_muxer_over_a_bare_secure_channel_reads_and_writes_plainly() -> None:
    a, b = noise_pair()
    bare_a, bare_b = BareSecure(a), BareSecure(b)
    assert capabilities(bare_a) == set()
    client, server = Yamux().new_connection(bare_a), Yamux().new_connection(bare_b)
    payload = os.urandom(300_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        nursery.start_soon(server.run)
        out = await client.open_stream()
        nursery.start_soon(out.send_all, payload)  # more than one window: the reader must keep up
        inc = await server.accept_stream()
        assert await receive_exactly(inc, len(payload)) == payload
        await client.aclose()
        await server.aclose()
    assert bare_a.sends and bare_b.receives  # the plain receive_some / send_all path


class BareConnection(Connection):
    """A Connection with only the abstract methods (no set_inbound_handler): the swarm must accept."""

    def __init__(self, inner: Connection) -> None:
        self.inner = inner
        self.accepts = 0

    local_peer = property(lambda self: self.inner.local_peer)
    remote_peer = property(lambda self: self.inner.remote_peer)
    remote_public_key = property(lambda self: self.inner.remote_public_key)
    local_addr = property(lambda self: self.inner.local_addr)
    remote_addr = property(lambda self: self.inner.remote_addr)
    direction = property(lambda self: self.inner.direction)
    security_protocol = property(lambda self: self.inner.security_protocol)
    muxer_protocol = property(lambda self: self.inner.muxer_protocol)
    is_closed = property(lambda self: self.inner.is_closed)
    stats = property(lambda self: self.inner.stats)

    async def run(self) -> None:
        await self.inner.run()

    async def open_stream(self) -> MuxedStream:
        return await self.inner.open_stream()

    async def accept_stream(self) -> MuxedStream:
        self.accepts += 1
        return await self.inner.accept_stream()

    async def aclose(self) -> None:
        await self.inner.aclose()


class BareMuxer(StreamMuxer):
    protocol_id = Mplex.protocol_id  # mplex: a core without frames_to_send or rtt

    def __init__(self) -> None:
        self.connections: list[BareConnection] = []

    def new_connection(self, secure: SecureConnection) -> Connection:
        conn = BareConnection(Mplex().new_connection(secure))
        self.connections.append(conn)
        return conn


class BarePipeTransport(PipeTransport):
    """Socketpairs wrapped as plain RawConnections (no cork)."""

    async def dial(self, addr: Multiaddr) -> RawConnection:
        a, b = trio.socket.socketpair()
        here = Multiaddr("/memory/999")
        client = StreamRawConnection(trio.SocketStream(a), here, addr, Direction.OUTBOUND)
        server = StreamRawConnection(trio.SocketStream(b), addr, here, Direction.INBOUND)
        await self.listeners[str(addr)].send(server)
        return client


async def test_host_over_layers_without_any_capability() -> None:
    transport = BarePipeTransport()
    muxers = BareMuxer(), BareMuxer()

    def config(muxer: BareMuxer) -> HostConfig:
        # plaintext: a secure channel with no receive_frames, send_chunks or record_size
        return HostConfig(
            identity=Identity.generate(),
            transports=[transport],
            security=[Plaintext()],
            muxers=[muxer],
            services=[Ping()],
        )

    async with open_host(config(muxers[0])) as a, open_host(config(muxers[1])) as b:
        await b.listen("/memory/7")
        conn = await a.connect(f"/memory/7/p2p/{b.peer_id}")
        assert not isinstance(conn, InboundStreamPush)
        assert len(await a.service(Ping).ping(b.peer_id, count=3)) == 3
        served = muxers[1].connections
        assert served and served[0].accepts >= 1  # the swarm's accept task handed the ping stream over


# ---- the stream layer's errors live in core.errors -------------------------------------------------


def test_stream_errors_live_in_core_errors_and_old_imports_still_work() -> None:
    from mycel.core import errors
    from mycel.muxers import driver

    assert driver.StreamResetError is errors.StreamResetError
    assert driver.StreamWriteClosed is errors.StreamWriteClosed
    assert driver.StreamConnectionLost is errors.StreamConnectionLost
    assert issubclass(errors.StreamResetError, (errors.StreamReset, trio.BrokenResourceError))
    assert issubclass(errors.StreamWriteClosed, (errors.StreamClosed, trio.ClosedResourceError))
    assert issubclass(errors.StreamConnectionLost, (errors.StreamResetError, errors.ConnectionClosed))


def test_quic_does_not_import_the_muxer_driver() -> None:
    # (`import mycel` itself re-exports every layer, so this looks at QUIC's own import statements)
    for path in (ROOT / "mycel" / "transports" / "quic").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("mycel.muxers"), f"{path.name} imports {node.module}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("mycel.muxers") for a in node.names), path.name
