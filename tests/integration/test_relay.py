"""Circuit relay v2 between three hosts: A reserves on R, B dials A through R.

On the memory network and on TCP 127.0.0.1: streams both ways over the relayed connection, the
connection is limited (new_stream refuses unless the protocol opts in), the relay cuts circuits at the
data and duration limits, reservations are refreshed (MockClock), circuits to unreserved peers get
NO_RESERVATION, and cancelling a host mid-circuit ends everything promptly.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest
import trio
import trio.testing
from multiaddr import Multiaddr

from mycel.core.abc import MuxedStream, Transport
from mycel.core.errors import DialError, LimitedConnection, StreamReset
from mycel.core.framing import read_exactly
from mycel.core.identity import Identity
from mycel.host import Host, HostConfig, open_host
from mycel.muxers.yamux import Yamux
from mycel.network.peerstore import AddrSource
from mycel.protocols.identify import Identify
from mycel.protocols.ping import Ping
from mycel.protocols.relay import CircuitRelay, RelayRefused, RelayResources, RelayTransport, Status
from mycel.security.noise import Noise
from mycel.transports.memory import MemoryNetwork, MemoryTransport
from mycel.transports.tcp import TCP

ECHO = "/test/echo/1.0.0"


async def _echo(stream: MuxedStream) -> None:
    while data := await stream.receive_some(65536):
        await stream.send_all(data)
    await stream.send_eof()


@dataclass
class Trio:
    relay: Host
    a: Host  # the listener behind the relay
    b: Host  # the dialer
    a_transport: RelayTransport
    circuit_addr: Multiaddr  # A's address through R, with /p2p/A


def _base(kind: str, network: MemoryNetwork) -> list[Transport]:
    return [MemoryTransport(network)] if kind == "memory" else [TCP()]


@contextlib.asynccontextmanager
async def relay_trio(
    kind: str = "memory", resources: RelayResources | None = None, a_listen_relay: bool = True
) -> AsyncIterator[Trio]:
    network = MemoryNetwork()
    listen = "/memory/0" if kind == "memory" else "/ip4/127.0.0.1/tcp/0"
    common = dict(security=[Noise()], muxers=[Yamux()])
    relay_cfg = HostConfig(
        transports=_base(kind, network),
        services=[Identify(), Ping(), CircuitRelay(resources)],
        listen=[listen],
        **common,  # type: ignore[arg-type]
    )
    async with open_host(relay_cfg) as relay:
        relay_addr = relay.addrs[0]
        a_cfg = HostConfig(
            transports=[*_base(kind, network), RelayTransport()],
            listen=[listen, f"{relay_addr}/p2p-circuit"] if a_listen_relay else [listen, "/p2p-circuit"],
            **common,  # type: ignore[arg-type]
        )
        b_cfg = HostConfig(transports=[*_base(kind, network), RelayTransport()], listen=[listen], **common)  # type: ignore[arg-type]
        async with open_host(a_cfg) as a, open_host(b_cfg) as b:
            a_transport = next(t for t in a.transports if isinstance(t, RelayTransport))
            a.set_stream_handler(ECHO, _echo)
            circuit = Multiaddr(f"{relay_addr}/p2p-circuit/p2p/{a.peer_id}")
            if a_listen_relay:
                with trio.fail_after(10):
                    await a_transport.wait_reserved(relay.peer_id)
            yield Trio(relay, a, b, a_transport, circuit)


@pytest.mark.parametrize("kind", ["memory", "tcp"])
async def test_dial_through_relay_streams_both_ways(kind: str) -> None:
    async with relay_trio(kind) as t:
        # A advertises its relayed address
        assert t.circuit_addr in t.a.addrs
        assert any(str(a).endswith("/p2p-circuit") for a in t.a.advertised_addrs)
        with trio.fail_after(10):
            conn = await t.b.connect(t.circuit_addr)
        assert conn.remote_peer == t.a.peer_id
        assert conn.limited and conn.limit is not None
        assert conn.limit.duration == 120 and conn.limit.data == 1 << 17
        assert "p2p-circuit" in str(conn.remote_addr)
        # limited: an ordinary protocol is refused unless it opts in
        with pytest.raises(LimitedConnection):
            await t.b.new_stream(t.a.peer_id, ECHO)
        with trio.fail_after(10):
            stream = await t.b.new_stream(t.a.peer_id, ECHO, allow_limited=True)
            await stream.send_all(b"hello through the relay")
            await stream.send_eof()
            assert await read_exactly(stream, 23) == b"hello through the relay"
            # ping is allowed on limited connections
            rtts = await t.b.service(Ping).ping(t.a.peer_id)
            assert rtts and all(r >= 0 for r in rtts)
            # the other way: A opens a stream to B on the same relayed connection
            t.b.set_stream_handler(ECHO, _echo)
            back_conn = [c for c in t.a.connections(t.b.peer_id)]
            assert back_conn and back_conn[0].limited
            back = await t.a.new_stream(t.b.peer_id, ECHO, allow_limited=True)
            await back.send_all(b"back")
            await back.send_eof()
            assert await read_exactly(back, 4) == b"back"
        relay_svc = t.relay.service(CircuitRelay)
        assert relay_svc.core.circuit_count == 1
        assert relay_svc.bytes_relayed > 0


async def test_data_limit_cuts_the_circuit() -> None:
    resources = RelayResources(limit_data=64 * 1024)
    async with relay_trio("memory", resources) as t:
        with trio.fail_after(10):
            await t.b.connect(t.circuit_addr)
            stream = await t.b.new_stream(t.a.peer_id, ECHO, allow_limited=True)
            chunk = b"x" * 8192
            sent = 0
            with pytest.raises((StreamReset, trio.BrokenResourceError, trio.ClosedResourceError)):
                for _ in range(64):  # 512 KiB at most: far past the 64 KiB limit
                    await stream.send_all(chunk)
                    sent += len(chunk)
                    await read_exactly(stream, len(chunk))
        assert sent <= 64 * 1024
        relay_svc = t.relay.service(CircuitRelay)
        assert relay_svc.circuits_cut == 1
        with trio.fail_after(5):
            await relay_svc.wait_circuits_at_most(0)


async def test_duration_limit_cuts_the_circuit(autojump_clock: trio.testing.MockClock) -> None:
    resources = RelayResources(limit_duration=30)
    async with relay_trio("memory", resources) as t:
        conn = await t.b.connect(t.circuit_addr)
        assert conn.limit is not None and conn.limit.duration == 30
        stream = await t.b.new_stream(t.a.peer_id, ECHO, allow_limited=True)
        await stream.send_all(b"ok")
        assert await read_exactly(stream, 2) == b"ok"
        start = trio.current_time()
        with pytest.raises((StreamReset, trio.BrokenResourceError, trio.ClosedResourceError)):
            await stream.receive_some(10)  # nothing comes; the relay resets at 30 s
        assert 29 <= trio.current_time() - start <= 31
        assert t.relay.service(CircuitRelay).circuits_cut == 1


async def test_reservation_refreshed_and_expired(autojump_clock: trio.testing.MockClock) -> None:
    resources = RelayResources(reservation_ttl=600)
    clock = autojump_clock
    wall = lambda: 1_700_000_000.0 + clock.current_time()  # noqa: E731
    network = MemoryNetwork()
    common = dict(security=[Noise()], muxers=[Yamux()])
    relay_cfg = HostConfig(
        transports=[MemoryTransport(network)],
        services=[Identify(), CircuitRelay(resources, wall_clock=wall)],
        listen=["/memory/0"],
        **common,  # type: ignore[arg-type]
    )
    async with open_host(relay_cfg) as relay:
        a_cfg = HostConfig(
            transports=[MemoryTransport(network), RelayTransport([relay.addrs[0]], wall_clock=wall)],
            listen=["/memory/0", "/p2p-circuit"],
            **common,  # type: ignore[arg-type]
        )
        async with open_host(a_cfg) as a:
            transport = next(t for t in a.transports if isinstance(t, RelayTransport))
            first = await transport.wait_reserved(relay.peer_id)
            assert first.voucher_verified
            t0 = trio.current_time()
            second = await transport.wait_reserved(relay.peer_id, refreshed=2)
            # refreshed 2 min before expiry (600 s ttl: every 480 s)
            assert 2 * 480 - 2 <= trio.current_time() - t0 <= 2 * 480 + 2
            assert second.expire > first.expire
            assert relay.service(CircuitRelay).core.reservation_count == 1
        # A gone: its reservation goes with its connection
        core = relay.service(CircuitRelay).core
        await trio.testing.wait_all_tasks_blocked()
        assert core.reservation_count == 0


async def test_circuit_to_unreserved_peer_is_refused() -> None:
    async with relay_trio("memory", a_listen_relay=False) as t:
        # A is connected to R but holds no reservation
        await t.a.connect(t.relay.addrs[0])
        with trio.fail_after(10), pytest.raises(DialError) as info:
            await t.b.connect(t.circuit_addr)
        refused = [e for e in info.value.errors if isinstance(e, RelayRefused)]
        assert not refused or refused[0].status is Status.NO_RESERVATION
        assert "NO_RESERVATION" in str(info.value)
        assert t.relay.service(CircuitRelay).core.refused[Status.NO_RESERVATION] == 1


def _task_names() -> list[str]:
    """The tasks below this test's task (everything the hosts started lives there)."""

    def walk(task: trio.lowlevel.Task) -> list[str]:
        return [task.name] + [n for nur in task.child_nurseries for t in nur.child_tasks for n in walk(t)]

    return walk(trio.lowlevel.current_task())


@pytest.mark.parametrize("kind", ["memory", "tcp"])
async def test_cancel_mid_circuit_exits_promptly_and_leaks_nothing(kind: str) -> None:
    """Cancelled while bytes flow through the relay (both copy loops busy) and a reservation is held:
    every host exits within its shutdown bound, the relay's tables empty, no task is left behind."""
    before = _task_names()
    start = trio.current_time()
    relay_svc: CircuitRelay | None = None
    with trio.move_on_after(30) as outer:
        async with relay_trio(kind, RelayResources(limit_data=None)) as t:
            relay_svc = t.relay.service(CircuitRelay)
            await t.b.connect(t.circuit_addr)
            stream = await t.b.new_stream(t.a.peer_id, ECHO, allow_limited=True)
            got = bytearray()
            with trio.CancelScope() as scope:  # the cancellation arrives in the middle of a transfer

                async def pump() -> None:
                    while True:
                        await stream.send_all(b"y" * 4096)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pump)
                    while len(got) < 32 * 1024:
                        got += await stream.receive_some(65536)
                    assert relay_svc.core.circuit_count == 1
                    scope.cancel()
            assert scope.cancelled_caught
    assert not outer.cancelled_caught
    assert trio.current_time() - start < 15
    assert relay_svc is not None
    assert relay_svc.core.circuit_count == 0
    assert relay_svc.core.reservation_count == 0
    await trio.testing.wait_all_tasks_blocked()
    assert _task_names() == before


async def test_relay_address_pushed_to_peers_and_reservation_taken_again_after_a_drop() -> None:
    """C, connected to A before A reserves, learns A's /p2p-circuit address by identify push; when A's
    connection to the relay drops, A reserves again and keeps advertising it."""
    async with relay_trio("memory", a_listen_relay=False) as t:
        network_addr = t.a.addrs[0]
        await t.b.connect(network_addr)  # B plays C here: a direct peer of A
        with t.b.subscribe() as events:
            listener = await t.a.listen(f"{t.relay.addrs[0]}/p2p-circuit")
            assert listener == []  # no reservation yet: no address yet
            with trio.fail_after(10):
                await t.a_transport.wait_reserved(t.relay.peer_id)
                circuit_base = Multiaddr(f"{t.relay.addrs[0]}/p2p-circuit")
                while circuit_base not in t.b.peerstore.addrs(t.a.peer_id, trio.current_time()):
                    await events.receive()  # identify push arrives (PeerIdentified)
        with trio.fail_after(10):
            await t.a.disconnect(t.relay.peer_id)
            again = await t.a_transport.wait_reserved(t.relay.peer_id, refreshed=1)
        assert again.refreshed == 1
        assert t.relay.service(CircuitRelay).core.reservation(t.a.peer_id, trio.current_time()) is not None
        assert t.circuit_addr in t.a.addrs


@pytest.mark.parametrize("closer", ["dialer", "listener"])
async def test_closing_a_relayed_connection_releases_the_stop_handler(closer: str) -> None:
    """The stop handler lives as long as its relayed connection, no longer (either side closing it)."""
    from mycel.core.events import ConnectionClosed, ConnectionOpened
    from mycel.protocols.relay import STOP_PROTOCOL

    async with relay_trio("memory") as t:
        handler = t.a._handlers[STOP_PROTOCOL]
        relay_svc = t.relay.service(CircuitRelay)
        with t.a.subscribe() as events, trio.fail_after(10):
            conn = await t.b.connect(t.circuit_addr)
            async for event in events:  # A registered its end of the relayed connection
                if isinstance(event, ConnectionOpened) and event.connection.remote_peer == t.b.peer_id:
                    a_end = event.connection
                    break
            assert handler.active == 1 and a_end.limited
            await (conn if closer == "dialer" else a_end).aclose()
            async for event in events:
                if isinstance(event, ConnectionClosed) and event.connection is a_end:
                    break
            await trio.testing.wait_all_tasks_blocked()
        assert handler.active == 0
        with trio.fail_after(10):  # the relay notices too: its side of the circuit ends
            await relay_svc.wait_circuits_at_most(0)


async def test_direct_address_wins_over_the_relayed_one() -> None:
    """B knows A's direct and relayed addresses: the relayed dial waits (go's 500 ms ranker delay), the
    direct one wins, and B's connection to A is not limited."""
    async with relay_trio("tcp") as t:
        direct = t.a.addrs[0]
        assert "p2p-circuit" not in str(direct)
        with trio.fail_after(10):
            conn = await t.b.connect(t.a.peer_id, [t.circuit_addr, direct])
        assert not conn.limited and "p2p-circuit" not in str(conn.remote_addr)
        assert t.relay.service(CircuitRelay).core.circuit_count == 0


async def test_relayed_dial_waits_when_a_direct_address_is_known(autojump_clock: trio.testing.MockClock) -> None:
    async with relay_trio("memory") as t:
        t.b.peerstore.add_addrs(t.a.peer_id, [Multiaddr("/memory/999999")], AddrSource.USER, 3600, trio.current_time())
        start = trio.current_time()
        conn = await t.b.connect(t.circuit_addr)  # only the relayed address is dialed; it still waits
        assert conn.limited
        assert trio.current_time() - start >= 0.5


async def test_one_dialer_holds_more_circuits_than_hop_exchanges() -> None:
    """Open circuits do not count as hop exchanges in progress: one peer keeps 3 circuits open (to 3
    reserved peers) with max_hop_streams_per_peer=2; the 4th is refused by max_circuits=3."""
    resources = RelayResources(max_hop_streams_per_peer=2, max_circuits=3)
    network = MemoryNetwork()
    common = dict(security=[Noise()], muxers=[Yamux()])
    relay_cfg = HostConfig(transports=[MemoryTransport(network)], services=[Identify(), CircuitRelay(resources)], listen=["/memory/0"], **common)  # type: ignore[arg-type]
    async with open_host(relay_cfg) as relay, contextlib.AsyncExitStack() as stack:
        circuit = f"{relay.addrs[0]}/p2p-circuit"
        targets = []
        for _ in range(4):
            cfg = HostConfig(transports=[MemoryTransport(network), RelayTransport()], listen=["/memory/0", circuit], **common)  # type: ignore[arg-type]
            host = await stack.enter_async_context(open_host(cfg))
            with trio.fail_after(10):
                await next(t for t in host.transports if isinstance(t, RelayTransport)).wait_reserved()
            targets.append(host)
        b_cfg = HostConfig(transports=[MemoryTransport(network), RelayTransport()], listen=["/memory/0"], **common)  # type: ignore[arg-type]
        b = await stack.enter_async_context(open_host(b_cfg))
        with trio.fail_after(10):
            for target in targets[:3]:
                conn = await b.connect(f"{circuit}/p2p/{target.peer_id}")
                assert conn.limited
            assert relay.service(CircuitRelay).core.circuits_of(b.peer_id) == 3
            with pytest.raises(DialError, match="RESOURCE_LIMIT_EXCEEDED"):
                await b.connect(f"{circuit}/p2p/{targets[3].peer_id}")
