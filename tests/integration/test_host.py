"""Hosts talking to each other in-process (memory transport and real TCP on 127.0.0.1)."""

from __future__ import annotations

import os
import socket
import struct

import pytest
import trio
from multiaddr import Multiaddr

from mycel import HostConfig, Identity, MuxedStream, open_host
from mycel.core.errors import DialError, PeerIdMismatch, ProtocolNotSupported, StreamReset
from mycel.core.events import ConnectionClosed, ConnectionOpened, PeerConnected, PeerIdentified, StreamHandlerFailed
from mycel.muxers.mplex import Mplex
from mycel.muxers.yamux import Yamux
from mycel.protocols.echo import ECHO_PROTOCOL, Echo
from mycel.protocols.identify import ID_PROTOCOL, PUSH_PROTOCOL, Identify
from mycel.protocols.ping import PING_PROTOCOL, Ping
from mycel.security.noise import Noise
from mycel.testing.hosts import memory_hosts
from mycel.transports.tcp import TCP


def services() -> list[object]:
    return [Identify(), Ping(), Echo()]


def tcp_config(**kw: object) -> HostConfig:
    base: dict[str, object] = dict(
        identity=Identity.generate(),
        transports=[TCP()],
        security=[Noise()],
        muxers=[Yamux(), Mplex()],
        services=services(),
        listen=["/ip4/127.0.0.1/tcp/0"],
    )
    base.update(kw)
    return HostConfig(**base)  # type: ignore[arg-type]


async def echo_roundtrip(stream: MuxedStream, data: bytes) -> bytes:
    got = bytearray()
    async with trio.open_nursery() as n:

        async def writer() -> None:
            await stream.send_all(data)
            await stream.send_eof()

        n.start_soon(writer)
        async for chunk in stream:
            got += chunk
    return bytes(got)


async def test_identify_and_ping_over_memory() -> None:
    async with memory_hosts(2, services=services) as (a, b):
        conn = await a.connect(b.addrs[0])
        assert conn.remote_peer == b.peer_id
        res = await a.service(Identify).identify_connection(conn)
        assert res.peer == b.peer_id
        assert res.agent_version and res.agent_version.startswith("mycel/")
        assert res.protocol_version == "ipfs/0.1.0"
        assert {ID_PROTOCOL, PUSH_PROTOCOL, PING_PROTOCOL, ECHO_PROTOCOL} <= set(res.protocols)
        assert res.signed_record_verified and res.signed_record_seq
        assert res.listen_addrs == [Multiaddr(str(b.listen_addrs[0]))]
        assert res.observed_addr == conn.local_addr
        rtts = await a.service(Ping).ping(b.peer_id, count=3)
        assert len(rtts) == 3 and all(r >= 0 for r in rtts)
        # b identified a automatically on the inbound connection
        info = await b.service(Identify).wait_identified(a.peer_id)
        assert ID_PROTOCOL in info.protocols


@pytest.mark.parametrize("muxer", ["yamux", "mplex"])
async def test_tcp_echo_1mib_and_streams(muxer: str) -> None:
    mux = [Yamux()] if muxer == "yamux" else [Mplex()]
    async with open_host(tcp_config(muxers=mux)) as a, open_host(tcp_config(muxers=mux)) as b:
        conn = await a.connect(b.addrs[0])
        assert conn.muxer_protocol == mux[0].protocol_id
        assert conn.security_protocol == "/noise"
        data = os.urandom(1 << 20)
        stream = await a.new_stream(b.peer_id, [ECHO_PROTOCOL])
        assert await echo_roundtrip(stream, data) == data
        results: list[bool] = []

        async def one(i: int) -> None:
            payload = os.urandom(64 * 1024)
            s = await a.new_stream(b.peer_id, ECHO_PROTOCOL)
            results.append(await echo_roundtrip(s, payload) == payload)

        async with trio.open_nursery() as n:
            for i in range(64):
                n.start_soon(one, i)
        assert results == [True] * 64
        assert len(a.connections(b.peer_id)) == 1


async def test_wrong_peer_id_is_refused() -> None:
    async with memory_hosts(2) as (a, b):
        other = Identity.generate().peer_id
        with pytest.raises(PeerIdMismatch):
            await a.connect(f"{b.listen_addrs[0]}/p2p/{other}")
        assert a.connections() == []


async def test_connection_reused_and_concurrent_dials_deduplicated() -> None:
    async with memory_hosts(2) as (a, b):
        conns = []

        async def dial() -> None:
            conns.append(await a.connect(b.addrs[0]))

        async with trio.open_nursery() as n:
            for _ in range(5):
                n.start_soon(dial)
        assert len({id(c) for c in conns}) == 1
        assert await a.connect(b.peer_id) is conns[0]


async def test_dial_by_peer_id_races_addresses() -> None:
    async with open_host(tcp_config()) as a, open_host(tcp_config()) as b:
        # two dead addresses and the real one
        dead1, dead2 = trio.socket.socket(), trio.socket.socket()
        await dead1.bind(("127.0.0.1", 0))
        await dead2.bind(("127.0.0.1", 0))
        bad = [Multiaddr(f"/ip4/127.0.0.1/tcp/{s.getsockname()[1]}") for s in (dead1, dead2)]
        a.peerstore.add_addrs(b.peer_id, [*b.listen_addrs, *bad])
        conn = await a.connect(b.peer_id)
        assert conn.remote_peer == b.peer_id
        dead1.close()
        dead2.close()


async def test_connect_takes_full_addresses_of_the_peer_only() -> None:
    async with open_host(tcp_config()) as a, open_host(tcp_config()) as b, open_host(tcp_config()) as c:
        assert all("/p2p/" in str(x) for x in b.addrs)
        with pytest.raises(DialError, match="belongs to"):
            await a.connect(b.peer_id, c.addrs)  # c's address offered as b's
        with pytest.raises(DialError, match="/p2p/<id>"):
            await a.connect(b.listen_addrs[0], c.listen_addrs)  # extra addresses of an unnamed peer
        assert a.connections() == []
        conn = await a.connect(b.peer_id, b.addrs)  # /p2p/<b> on them is fine
        assert conn.remote_peer == b.peer_id
        assert a.peerstore.addrs(b.peer_id) == b.listen_addrs


async def test_dial_with_no_addresses() -> None:
    async with memory_hosts(1) as (a,):
        with pytest.raises(DialError):
            await a.connect(Identity.generate().peer_id)


async def test_unsupported_protocol() -> None:
    async with memory_hosts(2) as (a, b):
        await a.connect(b.addrs[0])
        with pytest.raises(ProtocolNotSupported):
            await a.new_stream(b.peer_id, ["/nope/1.0.0", "/nope/2.0.0"])
        # the connection survives a refused stream
        assert await a.service(Ping).ping(b.peer_id)


async def test_events_and_handler_failure_isolated() -> None:
    async with memory_hosts(2) as (a, b):

        async def broken(stream: MuxedStream) -> None:
            raise RuntimeError("handler bug")

        b.set_stream_handler("/broken/1.0.0", broken)
        with a.subscribe() as events_a, b.subscribe() as events_b:
            conn = await a.connect(b.addrs[0])
            assert isinstance(await events_a.receive(), PeerConnected)  # the peer's first connection
            assert isinstance(await events_a.receive(), ConnectionOpened)
            # the reset may overtake the negotiation answer, so either step may fail
            with pytest.raises(StreamReset):
                stream = await a.new_stream(b.peer_id, ["/broken/1.0.0"])
                await stream.receive_some(10)
            while not isinstance(ev := await events_b.receive(), StreamHandlerFailed):
                pass
            assert ev.protocol == "/broken/1.0.0" and isinstance(ev.error, RuntimeError)
            assert await a.service(Ping).ping(b.peer_id)
            await conn.aclose()
            while not isinstance(await events_b.receive(), ConnectionClosed):
                pass


async def test_handler_concurrency_limit_resets_excess() -> None:
    async with memory_hosts(2) as (a, b):
        release = trio.Event()
        entered = trio.Event()

        async def slow(stream: MuxedStream) -> None:
            entered.set()
            await release.wait()

        b.set_stream_handler("/slow/1.0.0", slow, max_concurrent=1)
        await a.connect(b.addrs[0])
        first = await a.new_stream(b.peer_id, ["/slow/1.0.0"])
        await entered.wait()
        with pytest.raises(StreamReset):
            second = await a.new_stream(b.peer_id, ["/slow/1.0.0"])
            await second.receive_some(1)
        release.set()
        await first.aclose()


async def test_identify_push_updates_protocols() -> None:
    async with memory_hosts(2) as (a, b):
        with a.subscribe() as events:
            await a.connect(b.addrs[0])
            await a.service(Identify).wait_identified(b.peer_id)
            await b.service(Identify).wait_identified(a.peer_id)

            async def noop(stream: MuxedStream) -> None:
                return None

            b.set_stream_handler("/new/1.0.0", noop)
            await b.service(Identify).push()
            while True:
                ev = await events.receive()
                if isinstance(ev, PeerIdentified) and "/new/1.0.0" in ev.info.protocols:
                    break
        assert "/new/1.0.0" in a.peerstore.protocols(b.peer_id)


async def test_garbage_connection_does_not_disturb_others() -> None:
    async with open_host(tcp_config(handshake_timeout=5.0)) as a, open_host(tcp_config()) as b:
        addr = a.listen_addrs[0]
        port = int(addr.value_for_protocol("tcp"))
        junk = await trio.open_tcp_stream("127.0.0.1", port)
        # an oversized multistream message: a protocol violation on the very first read
        await junk.send_all(b"\x13/multistream/1.0.0\n\xff\x0f" + os.urandom(300))
        # a closes the garbage connection (we see EOF or a reset) ...
        with trio.fail_after(5):
            while True:
                try:
                    if not await junk.receive_some(4096):
                        break
                except trio.BrokenResourceError:
                    break
        # ... and keeps serving everyone else
        await b.connect(a.addrs[0])
        assert await b.service(Ping).ping(a.peer_id)


async def test_connection_reset_before_accept_is_dropped() -> None:
    """A peer that connects and resets before the listener accepts (Linux hands over the socket, whose
    getpeername() then fails with ENOTCONN) must not end the listener, nor the host with it."""
    listener = await TCP().open_listener(Multiaddr("/ip4/127.0.0.1/tcp/0"))
    port = int(listener.addrs[0].value_for_protocol("tcp"))
    gone = socket.socket()
    gone.connect(("127.0.0.1", port))
    gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
    gone.close()
    good = await trio.open_tcp_stream("127.0.0.1", port)
    with trio.fail_after(5):
        raw = await listener.accept()
    assert raw.remote_addr.value_for_protocol("tcp") == str(good.socket.getsockname()[1])
    await raw.aclose()
    await good.aclose()
    await listener.aclose()


async def test_inbound_handshake_timeout_and_pending_bound() -> None:
    cfg = tcp_config(handshake_timeout=0.5, max_pending_inbound_handshakes=2)
    async with open_host(cfg) as a:
        port = int(a.listen_addrs[0].value_for_protocol("tcp"))
        silent = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        # the two silent ones occupy both handshake slots; a third is closed straight away
        third = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(0.4):
            assert await third.receive_some(100) == b""
        # the silent ones are dropped when the handshake timeout expires
        for s in silent:
            with trio.fail_after(5):
                data = await s.receive_some(100)  # a's multistream header
                while data:
                    data = await s.receive_some(100)


async def test_remote_sees_close_when_host_exits() -> None:
    async with open_host(tcp_config()) as a:
        with a.subscribe() as events:
            async with open_host(tcp_config()) as b:
                await b.connect(a.addrs[0])
                assert isinstance(await events.receive(), PeerConnected)
                assert isinstance(await events.receive(), ConnectionOpened)
            with trio.fail_after(5):
                while not isinstance(await events.receive(), ConnectionClosed):
                    pass
        assert a.connections() == []


async def test_security_refused_by_listener_fails_dial_cleanly() -> None:
    from mycel.security.plaintext import Plaintext
    from mycel.testing.hosts import memory_config
    from mycel.transports.memory import MemoryNetwork

    network = MemoryNetwork()
    async with (
        open_host(memory_config(network, security=[Plaintext()])) as plain,
        open_host(memory_config(network)) as noisy,
    ):
        with pytest.raises(DialError):
            await noisy.connect(plain.addrs[0])
        assert noisy.connections() == [] and plain.connections() == []


async def test_dns_and_ipv6_addresses() -> None:
    async with open_host(tcp_config(listen=["/ip4/127.0.0.1/tcp/0", "/ip6/::1/tcp/0"])) as a:
        addrs = [str(x) for x in a.listen_addrs]
        assert any(x.startswith("/ip6/::1/tcp/") for x in addrs)
        v4 = next(x for x in addrs if x.startswith("/ip4/"))
        v6 = next(x for x in addrs if x.startswith("/ip6/"))
        port4, port6 = v4.rsplit("/", 1)[1], v6.rsplit("/", 1)[1]
        assert port4 != "0" and port6 != "0"
        async with open_host(tcp_config(listen=[])) as b:
            conn = await b.connect(f"/dns4/localhost/tcp/{port4}/p2p/{a.peer_id}")
            assert conn.remote_peer == a.peer_id
            await b.disconnect(a.peer_id)
            conn = await b.connect(f"{v6}/p2p/{a.peer_id}")
            assert str(conn.remote_addr).startswith("/ip6/::1/")


async def test_plaintext_is_never_a_default() -> None:
    cfg = HostConfig()
    assert [s.protocol_id for s in cfg.security] == ["/noise", "/tls/1.0.0"]
    assert [t.name for t in cfg.transports] == ["tcp", "quic-v1"]
    assert [m.protocol_id for m in cfg.muxers] == ["/yamux/1.0.0", "/mplex/6.7.0"]


def test_config_validation() -> None:
    from mycel.core.errors import ConfigError

    with pytest.raises(ConfigError):
        HostConfig(security=[])
    with pytest.raises(ConfigError):
        HostConfig(muxers=[])
    with pytest.raises(ConfigError):
        HostConfig(muxers=[Yamux(), Yamux()])


async def test_unspecified_listen_address_is_expanded() -> None:
    async with open_host(tcp_config(listen=["/ip4/0.0.0.0/tcp/0"])) as a:
        addrs = [str(x) for x in a.addrs]
        assert addrs and all("/ip4/0.0.0.0/" not in x for x in addrs)
        assert any(x.startswith("/ip4/127.0.0.1/tcp/") for x in addrs)
        async with open_host(tcp_config(listen=[])) as b:
            loopback = next(x for x in addrs if x.startswith("/ip4/127.0.0.1/"))
            assert (await b.connect(loopback)).remote_peer == a.peer_id
