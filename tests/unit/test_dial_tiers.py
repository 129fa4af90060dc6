"""Tiered dialing: QUIC addresses first, TCP after a head start or as soon as every QUIC dial failed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing
from multiaddr import Multiaddr

from mycel.core.abc import Connection, ConnectionStats, ConnectionTransport, Direction, Listener, MuxedStream
from mycel.core.errors import DialError, TransportError
from mycel.core.identity import Identity
from mycel.core.keys import PublicKey
from mycel.core.peer_id import PeerId
from mycel.network.swarm import PRIVATE_TIER_DELAY, PUBLIC_TIER_DELAY, Swarm, dial_tiers, tier_delay

QUIC_LOCAL = Multiaddr("/ip4/127.0.0.1/udp/4001/quic-v1")
TCP_LOCAL = Multiaddr("/ip4/127.0.0.1/tcp/4001")
QUIC_PUBLIC = Multiaddr("/ip4/203.0.114.7/udp/4001/quic-v1")
TCP_PUBLIC = Multiaddr("/ip4/203.0.114.7/tcp/4001")


class FakeConnection(Connection):
    def __init__(self, peer: PeerId, addr: Multiaddr) -> None:
        self._peer = peer
        self._addr = addr
        self._closed = trio.Event()

    @property
    def local_peer(self) -> PeerId:
        return self._peer

    @property
    def remote_peer(self) -> PeerId:
        return self._peer

    @property
    def remote_public_key(self) -> PublicKey:
        raise NotImplementedError

    @property
    def local_addr(self) -> Multiaddr:
        return self._addr

    @property
    def remote_addr(self) -> Multiaddr:
        return self._addr

    @property
    def direction(self) -> Direction:
        return Direction.OUTBOUND

    @property
    def security_protocol(self) -> str:
        return "fake"

    @property
    def muxer_protocol(self) -> str:
        return "fake"

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    @property
    def stats(self) -> ConnectionStats:
        raise NotImplementedError

    async def run(self) -> None:
        await self._closed.wait()

    async def open_stream(self) -> MuxedStream:
        raise NotImplementedError

    async def accept_stream(self) -> MuxedStream:
        await self._closed.wait()
        raise trio.ClosedResourceError

    async def aclose(self) -> None:
        self._closed.set()


class FakeTransport(ConnectionTransport):
    """Dials succeed after ``delay`` seconds (of trio's clock), or fail, or never finish."""

    def __init__(self, name: str, proto: str, behaviour: str, delay: float = 0.0) -> None:
        self.name = name
        self.proto = proto
        self.behaviour = behaviour
        self.delay = delay
        self.started: list[tuple[float, Multiaddr]] = []
        self.closed: list[FakeConnection] = []

    def can_dial(self, addr: Multiaddr) -> bool:
        return any(p.name == self.proto for p in addr.protocols())

    def can_listen(self, addr: Multiaddr) -> bool:
        return False

    async def dial(self, addr: Multiaddr, identity: Identity, remote_peer: PeerId | None) -> Connection:
        self.started.append((trio.current_time(), addr))
        if self.behaviour == "hang":
            await trio.sleep_forever()
        await trio.sleep(self.delay)
        if self.behaviour == "fail":
            raise TransportError(f"{self.name} refused")
        assert remote_peer is not None
        return FakeConnection(remote_peer, addr)

    async def open_listener(self, addr: Multiaddr, identity: Identity) -> Listener[Connection]:
        raise NotImplementedError


def make_swarm(nursery: trio.Nursery, transports: list[ConnectionTransport], **kw: float | None) -> Swarm:
    def noop(conn: Connection, *rest: int) -> None:
        pass

    async def on_stream(stream: MuxedStream) -> None:
        pass

    return Swarm(
        nursery,
        Identity.generate(),
        transports,
        None,
        handshake_timeout=kw.pop("handshake_timeout", None) or 15.0,
        max_pending_inbound=4,
        on_connection=noop,
        on_disconnect=noop,
        on_stream=on_stream,
        tier_delay=kw.pop("tier_delay", None),
    )


def test_quic_addresses_form_the_first_tier() -> None:
    tcp6 = Multiaddr("/ip6/::1/tcp/1")
    quic6 = Multiaddr("/ip6/::1/udp/1/quic-v1")
    assert dial_tiers([TCP_LOCAL, QUIC_LOCAL, tcp6, quic6]) == [[QUIC_LOCAL, quic6], [TCP_LOCAL, tcp6]]
    assert dial_tiers([TCP_LOCAL]) == [[TCP_LOCAL]]
    assert dial_tiers([QUIC_LOCAL]) == [[QUIC_LOCAL]]


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("/ip4/127.0.0.1/udp/1/quic-v1", PRIVATE_TIER_DELAY),
        ("/ip4/10.1.2.3/udp/1/quic-v1", PRIVATE_TIER_DELAY),
        ("/ip4/192.168.1.9/udp/1/quic-v1", PRIVATE_TIER_DELAY),
        ("/ip6/::1/udp/1/quic-v1", PRIVATE_TIER_DELAY),
        ("/ip6/fe80::1/udp/1/quic-v1", PRIVATE_TIER_DELAY),
        ("/dns4/localhost/udp/1/quic-v1", PRIVATE_TIER_DELAY),
        ("/ip4/8.8.8.8/udp/1/quic-v1", PUBLIC_TIER_DELAY),
        ("/ip6/2001:4860::8888/udp/1/quic-v1", PUBLIC_TIER_DELAY),
        ("/dns4/example.com/udp/1/quic-v1", PUBLIC_TIER_DELAY),
    ],
)
def test_head_start_depends_on_address_scope(addr: str, expected: float) -> None:
    assert tier_delay([Multiaddr(addr)]) == expected
    assert tier_delay([QUIC_LOCAL, QUIC_PUBLIC]) == PUBLIC_TIER_DELAY  # one public address: the long one


async def test_quic_wins_within_its_head_start_and_tcp_is_never_dialed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    quic = FakeTransport("quic", "quic-v1", "ok", delay=PRIVATE_TIER_DELAY / 2)
    tcp = FakeTransport("tcp", "tcp", "ok")
    peer = Identity.generate().peer_id
    async with trio.open_nursery() as nursery:
        swarm = make_swarm(nursery, [quic, tcp])
        conn = await swarm.dial_peer(peer, [TCP_LOCAL, QUIC_LOCAL])
        assert conn.remote_addr == QUIC_LOCAL
        assert tcp.started == []
        assert swarm.connections(peer) == [conn]
        await swarm.aclose()


async def test_tcp_starts_after_the_head_start_when_quic_is_silent(autojump_clock: trio.testing.MockClock) -> None:
    quic = FakeTransport("quic", "quic-v1", "hang")
    tcp = FakeTransport("tcp", "tcp", "ok", delay=0.001)
    peer = Identity.generate().peer_id
    async with trio.open_nursery() as nursery:
        swarm = make_swarm(nursery, [quic, tcp])
        t0 = trio.current_time()
        conn = await swarm.dial_peer(peer, [TCP_LOCAL, QUIC_LOCAL])
        assert conn.remote_addr == TCP_LOCAL
        assert [t - t0 for t, _ in tcp.started] == [pytest.approx(PRIVATE_TIER_DELAY)]
        await swarm.aclose()


async def test_public_addresses_get_the_long_head_start(autojump_clock: trio.testing.MockClock) -> None:
    quic = FakeTransport("quic", "quic-v1", "hang")
    tcp = FakeTransport("tcp", "tcp", "ok")
    async with trio.open_nursery() as nursery:
        swarm = make_swarm(nursery, [quic, tcp])
        t0 = trio.current_time()
        conn = await swarm.dial_peer(Identity.generate().peer_id, [QUIC_PUBLIC, TCP_PUBLIC])
        assert conn.remote_addr == TCP_PUBLIC
        assert [t - t0 for t, _ in tcp.started] == [pytest.approx(PUBLIC_TIER_DELAY)]
        await swarm.aclose()


async def test_tcp_starts_at_once_when_every_quic_dial_failed(autojump_clock: trio.testing.MockClock) -> None:
    quic = FakeTransport("quic", "quic-v1", "fail")
    tcp = FakeTransport("tcp", "tcp", "ok")
    async with trio.open_nursery() as nursery:
        swarm = make_swarm(nursery, [quic, tcp])
        t0 = trio.current_time()
        conn = await swarm.dial_peer(Identity.generate().peer_id, [QUIC_PUBLIC, TCP_PUBLIC])
        assert conn.remote_addr == TCP_PUBLIC
        assert [t - t0 for t, _ in tcp.started] == [0.0]
        await swarm.aclose()


async def test_configured_head_start(autojump_clock: trio.testing.MockClock) -> None:
    quic = FakeTransport("quic", "quic-v1", "ok", delay=0.5)
    tcp = FakeTransport("tcp", "tcp", "ok")
    async with trio.open_nursery() as nursery:
        swarm = make_swarm(nursery, [quic, tcp], tier_delay=1.0)
        conn = await swarm.dial_peer(Identity.generate().peer_id, [TCP_PUBLIC, QUIC_PUBLIC])
        assert conn.remote_addr == QUIC_PUBLIC  # 0.5 s QUIC beats TCP held back by 1 s
        assert tcp.started == []
        await swarm.aclose()


async def test_slower_quic_keeps_going_once_tcp_started(autojump_clock: trio.testing.MockClock) -> None:
    quic = FakeTransport("quic", "quic-v1", "ok", delay=0.040)  # done at 40 ms
    tcp = FakeTransport("tcp", "tcp", "ok", delay=0.100)  # started at 30 ms, would be done at 130 ms
    async with trio.open_nursery() as nursery:
        swarm = make_swarm(nursery, [quic, tcp])
        conn = await swarm.dial_peer(Identity.generate().peer_id, [TCP_LOCAL, QUIC_LOCAL])
        assert conn.remote_addr == QUIC_LOCAL
        assert len(tcp.started) == 1  # it was started, then cancelled by the winner
        await swarm.aclose()


async def test_every_tier_failing_reports_all_errors(autojump_clock: trio.testing.MockClock) -> None:
    quic = FakeTransport("quic", "quic-v1", "fail")
    tcp = FakeTransport("tcp", "tcp", "fail")
    async with trio.open_nursery() as nursery:
        swarm = make_swarm(nursery, [quic, tcp])
        with pytest.raises(DialError) as info:
            await swarm.dial_peer(Identity.generate().peer_id, [TCP_LOCAL, QUIC_LOCAL])
        assert "all 2 addresses" in str(info.value)
        assert sorted(str(e) for e in info.value.errors) == ["quic refused", "tcp refused"]
        await swarm.aclose()


async def test_connection_transport_handshake_timeout_is_a_dial_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    quic = FakeTransport("quic", "quic-v1", "hang")
    async with trio.open_nursery() as nursery:
        swarm = make_swarm(nursery, [quic], handshake_timeout=2.0)
        with pytest.raises(DialError, match="timed out"):
            await swarm.dial_peer(Identity.generate().peer_id, [QUIC_LOCAL])
        await swarm.aclose()
