"""DCUtR between three hosts on 127.0.0.1 (the NAT lab in tests/nat does it through real NAT).

B (the listener) reserves on relay R; A dials B through R; B's DCUtR service punches and the relayed
connection is replaced by a direct one (TCP with reuse_port, and QUIC). Also: a peer without DCUtR
stays relayed; malformed messages reset only their stream; cancelling the hosts mid hole punch ends
everything promptly; TCP dials leave from the listen port with reuse_port (and fall back when that
4-tuple is taken).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import trio
import trio.testing
from multiaddr import Multiaddr

from mycel.core.abc import Transport
from mycel.core.framing import send_message
from mycel.host import Host, HostConfig, open_host
from mycel.muxers.yamux import Yamux
from mycel.protocols.dcutr import PROTOCOL, DCUtR
from mycel.protocols.identify import Identify
from mycel.protocols.ping import Ping
from mycel.protocols.relay import CircuitRelay, RelayTransport
from mycel.security.noise import Noise
from mycel.transports.quic import QUIC
from mycel.transports.tcp import TCP


@dataclass
class Trio:
    relay: Host
    a: Host  # dials through the relay (the spec's A)
    b: Host  # listens with a reservation (B: runs the hole punch)


def _transports(kind: str) -> list[Transport]:
    return [TCP(reuse_port=True) if kind == "tcp" else QUIC(), RelayTransport()]


def _listen(kind: str) -> str:
    return "/ip4/127.0.0.1/tcp/0" if kind == "tcp" else "/ip4/127.0.0.1/udp/0/quic-v1"


@contextlib.asynccontextmanager
async def dcutr_trio(kind: str, *, a_dcutr: bool = True, attempt_timeout: float = 3.0) -> AsyncIterator[Trio]:
    common = dict(security=[Noise()], muxers=[Yamux()])
    relay_cfg = HostConfig(
        transports=_transports(kind)[:1], services=[Identify(), Ping(), CircuitRelay()], listen=[_listen(kind)], **common  # type: ignore[arg-type]
    )
    dcutr = DCUtR(attempt_timeout=attempt_timeout, relay_close_grace=0.0)
    async with open_host(relay_cfg) as relay:
        relay_addr = relay.addrs[0]
        a_cfg = HostConfig(
            transports=_transports(kind),
            services=[Identify(), Ping(), *([dcutr] if a_dcutr else [])],
            listen=[_listen(kind)],
            **common,  # type: ignore[arg-type]
        )
        b_cfg = HostConfig(
            transports=_transports(kind),
            services=[Identify(), Ping(), dcutr],
            listen=[_listen(kind), f"{relay_addr}/p2p-circuit"],
            **common,  # type: ignore[arg-type]
        )
        async with open_host(a_cfg) as a, open_host(b_cfg) as b:
            for host in (a, b):  # loopback is not offered by default: offer it here
                if a_dcutr or host is b:
                    host.service(DCUtR).set_public_addrs([x for x in host.listen_addrs if "p2p-circuit" not in str(x)])
            transport = next(t for t in b.transports if isinstance(t, RelayTransport))
            with trio.fail_after(10):
                await transport.wait_reserved(relay.peer_id)
            yield Trio(relay, a, b)


@pytest.mark.parametrize("kind", ["tcp", "quic"])
async def test_relayed_connection_is_replaced_by_a_direct_one(kind: str) -> None:
    async with dcutr_trio(kind) as t:
        circuit = Multiaddr(f"{t.relay.addrs[0]}/p2p-circuit/p2p/{t.b.peer_id}")
        with trio.fail_after(15):
            relayed = await t.a.connect(circuit)
            assert relayed.limited
            result = await t.b.service(DCUtR).wait_result(t.a.peer_id, initiator=True)
            assert result.success, result
            assert 1 <= result.attempts <= 3 and result.relay_rtt is not None
            with t.a.subscribe() as events:
                while not relayed.is_closed:  # B closes the relayed connection (grace 0 here)
                    await events.receive()
        direct = [c for c in t.a.connections(t.b.peer_id)]
        assert direct and not any(c.limited for c in direct)
        assert "p2p-circuit" not in str(direct[0].remote_addr)
        with trio.fail_after(5):
            assert await t.a.service(Ping).ping(t.b.peer_id)  # the direct connection carries streams
        assert t.a.service(DCUtR).stats["answered"] >= 1


async def test_peer_without_dcutr_stays_relayed() -> None:
    async with dcutr_trio("tcp", a_dcutr=False) as t:
        circuit = Multiaddr(f"{t.relay.addrs[0]}/p2p-circuit/p2p/{t.b.peer_id}")
        with trio.fail_after(15):
            relayed = await t.a.connect(circuit)
            result = await t.b.service(DCUtR).wait_result(t.a.peer_id)
        assert not result.success and result.error is not None and "does not speak" in result.error
        assert not relayed.is_closed and relayed.limited
        with trio.fail_after(5):
            assert await t.b.service(Ping).ping(t.a.peer_id)


async def test_malformed_messages_reset_only_their_stream(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mycel.protocols.dcutr")
    async with dcutr_trio("tcp") as t:
        with trio.fail_after(10):
            conn = await t.a.connect(t.b.addrs[0])  # a direct connection: B starts no hole punch on it
            for junk in (b"\x08\x07", b"\xff\xff", b"\x08\xac\x02"):  # unknown type, not protobuf, SYNC first
                stream = await t.a.open_stream_on(conn, [PROTOCOL])
                await send_message(stream, junk)
                with pytest.raises(trio.BrokenResourceError):  # B reset it (StreamResetError)
                    while await stream.receive_some(100):
                        pass
            assert await t.a.service(Ping).ping(t.b.peer_id)  # the connection is fine
        assert not conn.is_closed
        assert t.b.service(DCUtR).stats["answered"] == 0
        assert any("dcutr: exchange from" in r.getMessage() for r in caplog.records)


async def test_cancelling_mid_hole_punch_ends_promptly() -> None:
    """B punches toward an address where nobody answers (a refused port) and waits for a connection
    that never comes; closing everything then returns at once, with no task left behind."""
    with trio.fail_after(20):
        async with dcutr_trio("tcp", attempt_timeout=30.0) as t:
            dead = Multiaddr("/ip4/127.0.0.1/tcp/9")  # discard port: nothing listens
            t.a.service(DCUtR).set_public_addrs([dead])
            t.b.service(DCUtR).set_public_addrs([dead])
            circuit = Multiaddr(f"{t.relay.addrs[0]}/p2p-circuit/p2p/{t.b.peer_id}")
            await t.a.connect(circuit)
            svc = t.b.service(DCUtR)
            while svc.stats["started"] == 0 or t.a.service(DCUtR).stats["answered"] == 0:
                await trio.testing.wait_all_tasks_blocked()
            assert svc._active  # the hole punch is running (waiting for the direct connection)
            started = trio.current_time()
        assert trio.current_time() - started < 5.0
    assert not svc._active


async def test_tcp_reuse_port_dials_from_the_listen_port() -> None:
    a, b = TCP(reuse_port=True), TCP(reuse_port=True)
    la = await a.open_listener(Multiaddr("/ip4/127.0.0.1/tcp/0"))
    lb = await b.open_listener(Multiaddr("/ip4/127.0.0.1/tcp/0"))
    try:
        port_a = int(str(la.addrs[0]).rsplit("/", 1)[1])
        with trio.fail_after(5):
            first = await a.dial(lb.addrs[0])
            inbound = await lb.accept()
            assert int(str(inbound.remote_addr).rsplit("/", 1)[1]) == port_a
            second = await a.dial(lb.addrs[0])  # same 4-tuple taken: an ephemeral port instead
            inbound2 = await lb.accept()
            assert int(str(inbound2.remote_addr).rsplit("/", 1)[1]) != port_a
        for c in (first, second, inbound, inbound2):
            await c.aclose()
        assert a.can_hole_punch(lb.addrs[0]) and not TCP().can_hole_punch(lb.addrs[0])
    finally:
        await la.aclose()
        await lb.aclose()


async def test_tcp_listener_adopts_punched_sockets_up_to_its_bound() -> None:
    """A hole-punched socket waits in the listener for the swarm's accept (which it wakes); beyond
    ADOPT_QUEUE waiting, adopt() refuses (the caller closes it) and the listener closes what waits."""
    from mycel.transports.tcp import ADOPT_QUEUE

    tcp = TCP(reuse_port=True)
    listener = await tcp.open_listener(Multiaddr("/ip4/127.0.0.1/tcp/0"))
    conns = []
    try:
        async with trio.open_nursery() as nursery:
            got: list[object] = []

            async def accept_one() -> None:
                got.append(await listener.accept())

            nursery.start_soon(accept_one)
            await trio.testing.wait_all_tasks_blocked()  # blocked in the socket's accept
            first = await tcp.dial(listener.addrs[0])  # a connection of ours to adopt
            conns.append(first)
            assert listener.adopt(first)  # type: ignore[attr-defined]
        assert got == [first]  # the blocked accept woke for it
        for _ in range(ADOPT_QUEUE):
            assert listener.adopt(first)  # type: ignore[attr-defined]
        assert not listener.adopt(first)  # type: ignore[attr-defined]
    finally:
        await listener.aclose()  # closes the waiting ones
        for c in conns:
            await c.aclose()
