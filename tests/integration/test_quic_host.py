"""Hosts over QUIC (``/quic-v1``), over TCP and QUIC together, and over TCP with TLS security."""

from __future__ import annotations

import os
from typing import Any

import pytest
import trio
import trio.testing
from multiaddr import Multiaddr

from mycel import HostConfig, Identity, MuxedStream, open_host
from mycel.core.errors import PeerIdMismatch
from mycel.core.events import ConnectionClosed, ConnectionOpened
from mycel.host import Host
from mycel.muxers.mplex import Mplex
from mycel.muxers.yamux import Yamux
from mycel.protocols.echo import ECHO_PROTOCOL, Echo
from mycel.protocols.identify import ID_PROTOCOL, Identify
from mycel.protocols.ping import PING_PROTOCOL, Ping
from mycel.security.noise import Noise
from mycel.security.tls import TLS
from mycel.transports.quic import QUIC
from mycel.transports.tcp import TCP

QUIC_LISTEN = "/ip4/127.0.0.1/udp/0/quic-v1"
TCP_LISTEN = "/ip4/127.0.0.1/tcp/0"


def config(**kw: Any) -> HostConfig:
    base: dict[str, Any] = dict(
        identity=Identity.generate(),
        transports=[QUIC()],
        services=[Identify(), Ping(), Echo()],
        listen=[QUIC_LISTEN],
    )
    base.update(kw)
    return HostConfig(**base)


async def echo_roundtrip(stream: MuxedStream, data: bytes) -> bytes:
    got = bytearray()
    async with trio.open_nursery() as nursery:

        async def writer() -> None:
            await stream.send_all(data)
            await stream.send_eof()

        nursery.start_soon(writer)
        async for chunk in stream:
            got += chunk
    return bytes(got)


async def exercise(a: Host, b: Host, addr: Multiaddr) -> None:
    """Identify, ping, echo 1 MiB and 64 concurrent echo streams from ``a`` to ``b`` at ``addr``."""
    conn = await a.connect(addr)
    assert conn.remote_peer == b.peer_id
    res = await a.service(Identify).identify_connection(conn)
    assert res.peer == b.peer_id
    assert {ID_PROTOCOL, PING_PROTOCOL, ECHO_PROTOCOL} <= set(res.protocols)
    assert res.signed_record_verified
    assert set(res.listen_addrs) == {Multiaddr(str(x)) for x in b.listen_addrs}
    assert res.observed_addr == conn.local_addr
    info = await b.service(Identify).wait_identified(a.peer_id)
    assert ID_PROTOCOL in info.protocols
    rtts = await a.service(Ping).ping(b.peer_id, count=3)
    assert len(rtts) == 3 and all(r >= 0 for r in rtts)
    data = os.urandom(1 << 20)
    stream = await a.new_stream(b.peer_id, [ECHO_PROTOCOL])
    assert await echo_roundtrip(stream, data) == data
    results: list[bool] = []

    async def one() -> None:
        payload = os.urandom(64 * 1024)
        s = await a.new_stream(b.peer_id, ECHO_PROTOCOL)
        results.append(await echo_roundtrip(s, payload) == payload)

    async with trio.open_nursery() as nursery:
        for _ in range(64):
            nursery.start_soon(one)
    assert results == [True] * 64
    assert len(a.connections(b.peer_id)) == 1


async def test_quic_hosts_ping_identify_echo_and_streams() -> None:
    async with open_host(config()) as a, open_host(config()) as b:
        addr = b.addrs[0]
        assert str(addr).startswith("/ip4/127.0.0.1/udp/") and "/quic-v1/p2p/" in str(addr)
        await exercise(a, b, addr)
        (conn,) = a.connections(b.peer_id)
        assert conn.security_protocol == "/tls/1.0.0" and conn.muxer_protocol == "/quic-v1"
        assert conn.local_addr == a.listen_addrs[0]  # a listening host dials from its listen port


async def test_quic_dial_only_host() -> None:
    async with open_host(config(listen=[])) as a, open_host(config()) as b:
        await exercise(a, b, b.addrs[0])


async def test_tcp_and_quic_host() -> None:
    both = dict(transports=[TCP(), QUIC()], security=[Noise()], muxers=[Yamux(), Mplex()], listen=[TCP_LISTEN, QUIC_LISTEN])
    async with open_host(config(**both)) as a, open_host(config(**both)) as b:
        assert len(b.addrs) == 2
        quic_addr = next(x for x in b.addrs if "/quic-v1" in str(x))
        tcp_addr = next(x for x in b.addrs if "/tcp/" in str(x))
        await exercise(a, b, quic_addr)
        assert a.connections(b.peer_id)[0].muxer_protocol == "/quic-v1"
        await a.disconnect(b.peer_id)
        with trio.fail_after(5):
            while a.connections(b.peer_id):
                await trio.testing.wait_all_tasks_blocked()
        await exercise(a, b, tcp_addr)
        assert a.connections(b.peer_id)[0].muxer_protocol == "/yamux/1.0.0"
    # a QUIC-only host reaches the mixed host over QUIC
    async with open_host(config(**both)) as b, open_host(config()) as c:
        await exercise(c, b, next(x for x in b.addrs if "/quic-v1" in str(x)))


async def test_quic_wrong_peer_id_is_refused() -> None:
    async with open_host(config()) as a, open_host(config()) as b:
        other = Identity.generate().peer_id
        with pytest.raises(PeerIdMismatch):
            await a.connect(f"{b.listen_addrs[0]}/p2p/{other}")
        assert a.connections() == []
        await a.connect(b.addrs[0])  # the right id still works afterwards


async def test_remote_sees_close_when_quic_host_exits() -> None:
    async with open_host(config()) as a:
        with a.subscribe() as events:
            async with open_host(config()) as b:
                conn = await b.connect(a.addrs[0])
                assert conn.remote_peer == a.peer_id
                while not isinstance(await events.receive(), ConnectionOpened):
                    pass
            with trio.fail_after(5):  # b's CONNECTION_CLOSE reaches a
                while not isinstance(await events.receive(), ConnectionClosed):
                    pass
        assert a.connections() == []


@pytest.mark.parametrize("muxers", [["yamux"], ["mplex", "yamux"]])
async def test_tls_over_tcp_hosts(muxers: list[str]) -> None:
    made = {"yamux": Yamux, "mplex": Mplex}
    tls = dict(transports=[TCP()], security=[TLS()], listen=[TCP_LISTEN])
    async with open_host(config(muxers=[made[m]() for m in muxers], **tls)) as a, open_host(
        config(muxers=[Yamux(), Mplex()], **tls)
    ) as b:
        await exercise(a, b, b.addrs[0])
        (conn,) = a.connections(b.peer_id)
        assert conn.security_protocol == "/tls/1.0.0"
        assert conn.muxer_protocol == f"/{muxers[0]}/" + ("1.0.0" if muxers[0] == "yamux" else "6.7.0")


async def test_tls_and_noise_negotiated_by_preference() -> None:
    async with open_host(config(transports=[TCP()], security=[TLS(), Noise()], muxers=[Yamux()], listen=[TCP_LISTEN])) as a, open_host(
        config(transports=[TCP()], security=[Noise(), TLS()], muxers=[Yamux()], listen=[TCP_LISTEN])
    ) as b:
        conn = await a.connect(b.addrs[0])
        assert conn.security_protocol == "/tls/1.0.0"  # the dialer's preference wins
        assert await a.service(Ping).ping(b.peer_id)


async def test_quic_unread_bytes_are_charged_to_the_peers_scope_and_a_stream_over_it_is_reset() -> None:
    """#12: bytes a QUIC connection's streams hold unread count in the host's scopes (flow control alone
    allows 8 MiB per connection); a stream whose data finds no room in the peer's scope is reset, counted,
    and the other streams of the same connection are served; what was held comes back."""
    from mycel.core.errors import MycelError
    from mycel.network.resources import ResourceLimits

    limit = 1024 * 1024
    hold = trio.Event()
    holding: list[MuxedStream] = []

    async def hoard(stream: MuxedStream) -> None:  # reads nothing until told
        holding.append(stream)
        await hold.wait()

    server_config = config(resources=ResourceLimits.unlimited().override(peer={"memory": limit}))
    async with open_host(server_config) as server, open_host(config(listen=[])) as client:
        server.set_stream_handler("/hoard/1", hoard)
        conn = await client.connect(server.addrs[0])
        stream = await client.new_stream(server.peer_id, ["/hoard/1"])
        with pytest.raises(MycelError):  # the server resets it once its scope is full
            with trio.fail_after(10):
                for _ in range(64):
                    await stream.send_all(b"x" * 32768)
        refused = server.resources.stats()["refused"]
        assert refused.get("peer", {}).get("memory", 0) >= 1, refused
        assert server.resources.stats()["peers"][str(client.peer_id)]["memory"] <= limit
        other = await client.new_stream(server.peer_id, [ECHO_PROTOCOL])
        assert other.connection is conn
        assert await echo_roundtrip(other, b"still served") == b"still served"
        hold.set()
        await client.disconnect(server.peer_id)
        with trio.fail_after(10):  # the server sees the close (no sleeping: every task runs until blocked)
            while server.resources.system.memory:
                await trio.testing.wait_all_tasks_blocked(cushion=0.001)
