"""The connection conformance suite, and QUIC-specific behaviour, over real UDP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from hypothesis import strategies as st
from multiaddr import Multiaddr

from mycel.core.abc import Connection, Direction
from mycel.core.errors import ConnectionClosed, HandshakeError, InvalidCertificate, PeerIdMismatch, StreamReset
from mycel.core.identity import Identity
from mycel.core.keys import KeyType
from mycel.network.limits import SourceLimits
from mycel.testing import conformance
from mycel.testing.conformance import ConnectionPair, PairFactory, receive_exactly
from mycel.transports.quic import QUIC, QUICConnection, QUICListener, QUICOptions, quic_host_port
from mycel.transports.quic.connection import SEND_BUFFER

LOCAL = Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1")


@contextlib.asynccontextmanager
async def quic_pair(
    client_options: dict[str, Any] | None = None,
    server_options: dict[str, Any] | None = None,
    *,
    client_identity: Identity | None = None,
    server_identity: Identity | None = None,
) -> AsyncIterator[tuple[QUICConnection, QUICConnection, QUIC, QUIC]]:
    """A connected (client, server) pair with ``run()`` running on both, plus the two transports."""
    client_t = QUIC(**(client_options or {}))
    server_t = QUIC(**(server_options or {}))
    client_id = client_identity or Identity.generate()
    server_id = server_identity or Identity.generate()
    listener = await server_t.open_listener(LOCAL, server_id)
    accepted: list[Connection] = []
    async with trio.open_nursery() as nursery:

        async def accept() -> None:
            accepted.append(await listener.accept())

        nursery.start_soon(accept)
        client = await client_t.dial(listener.addrs[0], client_id, server_id.peer_id)
    server = accepted[0]
    assert isinstance(client, QUICConnection) and isinstance(server, QUICConnection)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        nursery.start_soon(server.run)
        try:
            yield client, server, client_t, server_t
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await client.aclose()
                await server.aclose()
                await listener.aclose()
            nursery.cancel_scope.cancel()


def factory(**server_options: Any) -> PairFactory:
    @contextlib.asynccontextmanager
    async def make_pair() -> AsyncIterator[ConnectionPair]:
        async with quic_pair(server_options=server_options) as (client, server, _, _):
            yield client, server

    return make_pair


# ---- the shared suite ------------------------------------------------------------------------


@pytest.mark.parametrize("check", conformance.ALL_CHECKS, ids=lambda c: c.__name__)
async def test_check(check: Callable[[PairFactory], Awaitable[None]]) -> None:
    await check(factory())


async def test_accept_backlog() -> None:
    await conformance.check_accept_backlog(factory(accept_backlog=8), backlog=8)


async def test_slow_reader_blocks() -> None:
    await conformance.check_slow_reader(factory(), expect="block")


async def test_stream_rules() -> None:
    await conformance.check_stream_rules(factory(), clogs=True)


async def test_large_datagrams() -> None:
    """With 16 KiB datagrams on both sides (loopback carries them) data still arrives intact."""
    opts = {"max_datagram_size": 16384}

    @contextlib.asynccontextmanager
    async def make_pair() -> AsyncIterator[ConnectionPair]:
        async with quic_pair(opts, opts) as (client, server, _, _):
            assert client._core.max_datagram_size == server._core.max_datagram_size == 16384
            yield client, server

    await conformance.check_large_transfer(make_pair)


# ---- addresses and sockets ---------------------------------------------------------------------


def test_multiaddr_parsing() -> None:
    quic = QUIC()
    assert quic_host_port(Multiaddr("/ip4/1.2.3.4/udp/4001/quic-v1")) == ("ip4", "1.2.3.4", 4001)
    assert quic_host_port(Multiaddr("/ip6/::1/udp/1/quic-v1")) == ("ip6", "::1", 1)
    assert quic_host_port(Multiaddr("/dns4/example.com/udp/1/quic-v1")) == ("dns4", "example.com", 1)
    for bad in ("/ip4/1.2.3.4/udp/1/quic", "/ip4/1.2.3.4/tcp/1", "/ip4/1.2.3.4/udp/1", "/ip4/1.2.3.4/udp/1/quic-v1/webtransport"):
        assert quic_host_port(Multiaddr(bad)) is None
        assert not quic.can_dial(Multiaddr(bad))
    assert quic.can_dial(Multiaddr("/dns4/example.com/udp/1/quic-v1"))
    assert not quic.can_listen(Multiaddr("/dns4/example.com/udp/1/quic-v1"))
    assert quic.can_listen(Multiaddr("/ip4/0.0.0.0/udp/0/quic-v1"))


def test_options_are_validated() -> None:
    with pytest.raises(ValueError):
        QUICOptions(max_datagram_size=1000)
    with pytest.raises(ValueError):
        QUICOptions(max_datagram_size=20000)  # aioquic corrupts STREAM frames beyond 16 KiB
    with pytest.raises(ValueError):
        QUIC(accept_backlog=0)
    assert QUIC(QUICOptions(idle_timeout=5), keepalive_interval=1.0).options.idle_timeout == 5


async def test_listen_on_port_zero_reports_the_real_port() -> None:
    quic = QUIC()
    listener = await quic.open_listener(LOCAL, Identity.generate())
    try:
        (addr,) = listener.addrs
        parsed = quic_host_port(addr)
        assert parsed is not None and parsed[0] == "ip4" and parsed[1] == "127.0.0.1" and parsed[2] > 0
        assert str(addr).endswith("/quic-v1")
    finally:
        await listener.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await listener.accept()


async def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    server_t, client_t = QUIC(), QUIC()
    server_id = Identity.generate()
    try:
        listener = await server_t.open_listener(Multiaddr("/ip6/::1/udp/0/quic-v1"), server_id)
    except Exception as exc:  # pragma: no cover - hosts without ::1
        pytest.skip(f"cannot bind ::1: {exc}")
    async with trio.open_nursery() as nursery:
        accepted: list[Connection] = []

        async def accept() -> None:
            accepted.append(await listener.accept())

        nursery.start_soon(accept)
        client = await client_t.dial(listener.addrs[0], Identity.generate(), server_id.peer_id)
    assert str(client.remote_addr).startswith("/ip6/::1/udp/")
    await client.aclose()
    await accepted[0].aclose()
    await listener.aclose()


async def test_listening_host_dials_from_its_listen_port() -> None:
    a, b = QUIC(), QUIC()
    a_id, b_id = Identity.generate(), Identity.generate()
    a_listener = await a.open_listener(LOCAL, a_id)
    b_listener = await b.open_listener(LOCAL, b_id)
    async with trio.open_nursery() as nursery:
        accepted: list[Connection] = []

        async def accept() -> None:
            accepted.append(await b_listener.accept())

        nursery.start_soon(accept)
        conn = await a.dial(b_listener.addrs[0], a_id, b_id.peer_id)
    assert accepted[0].remote_addr == a_listener.addrs[0]  # the dial came from A's listen port
    assert conn.local_addr == a_listener.addrs[0]
    assert not a._dial_endpoints  # no extra socket
    for c in (conn, accepted[0]):
        await c.aclose()
    await a_listener.aclose()
    await b_listener.aclose()


async def test_dial_only_transport_shares_one_socket_and_closes_it() -> None:
    server_t, client_t = QUIC(), QUIC()
    server_id, client_id = Identity.generate(), Identity.generate()
    listener = await server_t.open_listener(LOCAL, server_id)
    conns: list[Connection] = []
    async with trio.open_nursery() as nursery:

        async def accept_two() -> None:
            for _ in range(2):
                conns.append(await listener.accept())

        nursery.start_soon(accept_two)
        first = await client_t.dial(listener.addrs[0], client_id, server_id.peer_id)
        second = await client_t.dial(listener.addrs[0], client_id, server_id.peer_id)
    assert first.local_addr == second.local_addr
    (endpoint,) = client_t._dial_endpoints.values()
    assert endpoint.connections == 2
    async with trio.open_nursery() as nursery:  # both connections work independently
        for conn in (first, second):
            nursery.start_soon(conn.run)
        for conn in conns:
            nursery.start_soon(conn.run)
        for i, conn in enumerate((first, second)):
            out = await conn.open_stream()
            await out.send_all(b"conn %d" % i)
            await out.send_eof()
        got = set()
        for conn in conns:
            inc = await conn.accept_stream()
            got.add(await conformance.receive_until_eof(inc))
        assert got == {b"conn 0", b"conn 1"}
        await first.aclose()
        assert not endpoint.closed
        await second.aclose()
        assert endpoint.closed and not client_t._dial_endpoints
        nursery.cancel_scope.cancel()
    await listener.aclose()


# ---- hostile input -----------------------------------------------------------------------------


def _initial_from(server_addr: tuple[str, int], client: QUIC, identity: Identity) -> bytes:
    """A valid client Initial datagram for ``server_addr`` (from a connection we then abandon)."""
    from mycel.transports.quic.core import QuicCore

    core = QuicCore(configuration=client._configuration(identity, True))
    core.connect(server_addr, now=0.0)
    (datagram, _), *_ = core.datagrams_to_send(now=0.0)
    return datagram


async def test_garbage_and_unknown_connection_ids_are_ignored() -> None:
    async with quic_pair() as (client, server, client_t, _):
        server_ep, client_ep = server._endpoint, client._endpoint
        dropped = server_ep.dropped + client_ep.dropped
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", 0))
        short_unknown = bytes([0x40]) + os.urandom(8) + os.urandom(40)  # short header, unknown CID
        long_garbage = bytes([0xC0]) + b"\x00\x00\x00\x01" + bytes([8]) + os.urandom(8) + b"\x05"  # truncated
        garbage_initial = bytes([0xC0, 0, 0, 0, 1, 8]) + os.urandom(8) + bytes([8]) + os.urandom(8) + os.urandom(1300)
        version_negotiation = bytes([0x80, 0, 0, 0, 0, 8]) + os.urandom(8) + bytes([8]) + os.urandom(8) + b"\x00\x00\x00\x01"
        sent = [b"", b"\x00", os.urandom(2000), short_unknown, long_garbage, garbage_initial, version_negotiation]
        for target in (server_ep.local_sockaddr, client_ep.local_sockaddr):
            for datagram in sent:
                await sock.sendto(datagram, ("127.0.0.1", target[1]))
        # the live connection is unaffected
        out = await client.open_stream()
        await out.send_all(b"still here")
        inc = await server.accept_stream()
        assert await receive_exactly(inc, 10) == b"still here"
        await trio.testing.wait_all_tasks_blocked()
        assert server_ep.dropped + client_ep.dropped > dropped
        assert server_ep.connections == 1 and not server_ep._pending_inbound  # garbage Initial made nothing
        sock.close()


async def test_unsupported_version_gets_version_negotiation() -> None:
    async with quic_pair() as (_, server, _, _):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", 0))
        dcid, scid = os.urandom(8), os.urandom(8)
        packet = bytes([0xC0]) + b"\x1a\x2a\x3a\x4a" + bytes([8]) + dcid + bytes([8]) + scid + bytes(1200)
        await sock.sendto(packet, ("127.0.0.1", server._endpoint.local_sockaddr[1]))
        with trio.fail_after(5):
            reply, _ = await sock.recvfrom(2048)
        assert reply[1:5] == b"\x00\x00\x00\x00"  # version 0: a Version Negotiation packet
        assert reply[6:14] == scid and b"\x00\x00\x00\x01" in reply[14:]
        sock.close()


async def test_version_negotiation_is_limited_per_source() -> None:
    """An unsupported version is answered within its source's burst only (16; then 0.2/s): junk with a
    made-up version cannot make the listener answer at line rate (issue #12)."""
    server_t = QUIC(source_limits=SourceLimits(limit_loopback=True))
    listener = await server_t.open_listener(LOCAL, Identity.generate())
    assert isinstance(listener, QUICListener)
    port = listener.endpoint.local_sockaddr[1]
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind(("127.0.0.2", 0))
    attacker.setblocking(False)
    packet = bytes([0xC0]) + b"\x1a\x2a\x3a\x4a" + bytes([8]) + os.urandom(8) + bytes([8]) + os.urandom(8) + bytes(1200)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.accept)  # (drives the socket)
        for _ in range(50):
            attacker.sendto(packet, ("127.0.0.1", port))
        await trio.testing.wait_all_tasks_blocked()
        replies = 0
        with contextlib.suppress(BlockingIOError):
            while attacker.recv(2048):
                replies += 1
        stats = listener.stats()
        assert replies == stats["version_negotiation"] == 16, stats
        assert stats["ip_rate"] == 34, stats
        nursery.cancel_scope.cancel()
    attacker.close()
    await listener.aclose()


@contextlib.asynccontextmanager
async def _one_half_open(
    server_t: QUIC, client_t: QUIC
) -> AsyncIterator[tuple[QUICListener, Identity, Identity, trio.Nursery]]:
    """A listener (accepting, its connections run) whose only pending slot holds a handshake that one
    Initial started and nobody finishes."""
    server_id, client_id = Identity.generate(), Identity.generate()
    listener = await server_t.open_listener(LOCAL, server_id)
    assert isinstance(listener, QUICListener)
    port = listener.endpoint.local_sockaddr[1]
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    async with trio.open_nursery() as nursery:

        async def accept_loop() -> None:
            while True:
                conn = await listener.accept()
                nursery.start_soon(conn.run)

        nursery.start_soon(accept_loop)
        await sock.sendto(_initial_from(("127.0.0.1", port), client_t, client_id), ("127.0.0.1", port))
        await trio.testing.wait_all_tasks_blocked()
        assert len(listener.endpoint._pending_inbound) == 1  # a half-open handshake holds the only slot
        yield listener, server_id, client_id, nursery
        nursery.cancel_scope.cancel()
    sock.close()
    await listener.aclose()


async def test_pending_handshakes_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    # (a handshake counts as stalled only after 10 s here: nothing is evicted)
    server_t = QUIC(max_pending_handshakes=1, handshake_timeout=5.0, source_limits=SourceLimits(stall_after=10.0))
    client_t = QUIC(handshake_timeout=2.0)
    async with _one_half_open(server_t, client_t) as (listener, server_id, client_id, _):
        with pytest.raises(HandshakeError, match="timed out"):
            await client_t.dial(listener.addrs[0], client_id, server_id.peer_id)  # its Initials are dropped
        assert listener.endpoint.dropped >= 1
        await trio.sleep(5)  # the half-open handshake times out and frees the slot
        assert not listener.endpoint._pending_inbound
        conn = await client_t.dial(listener.addrs[0], client_id, server_id.peer_id)
        assert conn.remote_peer == server_id.peer_id
        await conn.aclose()


async def test_a_stalled_handshake_is_evicted_for_a_new_client(autojump_clock: trio.testing.MockClock) -> None:
    """With the table full, a handshake that has been stalled for ``stall_after`` (1 s) makes room for a new
    client instead of the newcomer's Initials being dropped (issue #12)."""
    client_t = QUIC(handshake_timeout=2.0)
    async with _one_half_open(QUIC(max_pending_handshakes=1, handshake_timeout=5.0), client_t) as (
        listener, server_id, client_id, _,
    ):  # fmt: skip
        await trio.sleep(1.0)  # the half-open handshake has now been stalled for stall_after
        conn = await client_t.dial(listener.addrs[0], client_id, server_id.peer_id)
        assert conn.remote_peer == server_id.peer_id
        assert listener.stats()["evicted_stalled"] == 1
        await conn.aclose()


async def test_retry_past_the_threshold(autojump_clock: trio.testing.MockClock) -> None:
    """Past ``retry_threshold`` handshakes in progress, a new client gets a stateless Retry and must come
    back with its token: mycel's dialer does, and connects; an Initial with a forged token is dropped."""
    server_t = QUIC(retry_threshold=0)
    client_t = QUIC()
    server_id, client_id = Identity.generate(), Identity.generate()
    listener = await server_t.open_listener(LOCAL, server_id)
    assert isinstance(listener, QUICListener)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.accept)
        conn = await client_t.dial(listener.addrs[0], client_id, server_id.peer_id)
        assert conn.remote_peer == server_id.peer_id
        stats = listener.stats()
        assert stats["retry_sent"] == 1 and stats["admitted"] == 2, stats  # (the Retry round costs a token)
        await conn.aclose()
        nursery.start_soon(listener.accept)  # (the first accept returned: this one drives the socket)
        forger = QuicConnection(
            configuration=QuicConfiguration(is_client=True, alpn_protocols=["libp2p"], token=os.urandom(48))
        )
        port = listener.endpoint.local_sockaddr[1]
        forger.connect(("127.0.0.1", port), now=0.0)
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", 0))
        for datagram, _ in forger.datagrams_to_send(now=0.0):
            await sock.sendto(datagram, ("127.0.0.1", port))
        await trio.testing.wait_all_tasks_blocked()
        assert listener.stats()["bad_token"] == 1
        assert not listener.endpoint._pending_inbound
        sock.close()
        nursery.cancel_scope.cancel()
    await listener.aclose()


# ---- authentication ----------------------------------------------------------------------------


async def test_peer_id_mismatch(caplog: pytest.LogCaptureFixture) -> None:
    server_t, client_t = QUIC(), QUIC()
    server_id, client_id, other = Identity.generate(), Identity.generate(), Identity.generate()
    listener = await server_t.open_listener(LOCAL, server_id)
    assert isinstance(listener, QUICListener)
    with caplog.at_level(logging.INFO, logger="mycel.transports.quic"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listener.accept)
            with pytest.raises(PeerIdMismatch) as info:
                await client_t.dial(listener.addrs[0], client_id, other.peer_id)
            assert str(other.peer_id) in str(info.value) and str(server_id.peer_id) in str(info.value)
            await trio.testing.wait_all_tasks_blocked()
            assert not listener._queue  # the server never got an authenticated connection
            nursery.cancel_scope.cancel()
    assert "QUIC handshake to" in caplog.text and "failed" in caplog.text
    assert not client_t._dial_endpoints  # the failed dial left nothing behind
    await listener.aclose()


def _certificate_without_extension(now: datetime.datetime) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from mycel.security.tls.certificate import LocalCertificate

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "no libp2p extension")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    return LocalCertificate(cert, key, cert.public_bytes(Encoding.DER), now + datetime.timedelta(hours=1))


async def test_server_certificate_without_extension_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    server_t, client_t = QUIC(), QUIC()
    bad = _certificate_without_extension(datetime.datetime.now(datetime.timezone.utc))
    monkeypatch.setattr(server_t, "_certificate", lambda identity: bad)
    server_id = Identity.generate()
    listener = await server_t.open_listener(LOCAL, server_id)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.accept)
        with pytest.raises(InvalidCertificate, match="lacks the libp2p public key extension"):
            await client_t.dial(listener.addrs[0], Identity.generate(), server_id.peer_id)
        nursery.cancel_scope.cancel()
    await listener.aclose()


@pytest.mark.parametrize("certificate", ["without extension", "none"])
async def test_server_rejects_bad_client_certificate(monkeypatch: pytest.MonkeyPatch, certificate: str) -> None:
    server_t, client_t = QUIC(), QUIC()
    if certificate == "none":
        real = client_t._configuration

        def no_certificate(identity: Identity, is_client: bool) -> Any:
            config = real(identity, is_client)
            config.certificate = config.private_key = None
            return config

        monkeypatch.setattr(client_t, "_configuration", no_certificate)
    else:
        bad = _certificate_without_extension(datetime.datetime.now(datetime.timezone.utc))
        monkeypatch.setattr(client_t, "_certificate", lambda identity: bad)
    server_id = Identity.generate()
    listener = await server_t.open_listener(LOCAL, server_id)
    assert isinstance(listener, QUICListener)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.accept)
        # TLS 1.3: the client finishes before the server has checked its certificate...
        client = await client_t.dial(listener.addrs[0], Identity.generate(), server_id.peer_id)
        assert isinstance(client, QUICConnection)
        nursery.start_soon(client.run)
        with trio.fail_after(5), pytest.raises(ConnectionClosed):
            await client.accept_stream()  # ...and then learns that the server closed the connection
        assert "0x12a" in client.close_reason or "certificate" in client.close_reason
        assert not listener._queue
        nursery.cancel_scope.cancel()
    await listener.aclose()


# ---- timers ------------------------------------------------------------------------------------


async def test_idle_timeout_closes_a_silent_connection(autojump_clock: trio.testing.MockClock) -> None:
    opts = {"idle_timeout": 5.0, "keepalive_interval": 1.0}
    async with quic_pair(opts, opts) as (client, server, _, _):
        server._endpoint.send = lambda datagrams: 0  # type: ignore[method-assign]  # the server goes silent
        server._endpoint._dispatch = lambda data, addr, now: None  # type: ignore[method-assign]
        start = trio.current_time()
        with trio.fail_after(60), pytest.raises(ConnectionClosed):
            await client.accept_stream()
        assert 4.0 <= trio.current_time() - start <= 7.0
        assert "Idle timeout" in client.close_reason


async def test_keepalive_keeps_an_idle_connection_open(autojump_clock: trio.testing.MockClock) -> None:
    opts = {"idle_timeout": 5.0, "keepalive_interval": 2.0}
    async with quic_pair(opts, opts) as (client, server, _, _):
        await trio.sleep(60)  # virtual time: many idle timeouts' worth, kept alive by PINGs
        assert not client.is_closed and not server.is_closed
        out = await client.open_stream()
        await out.send_all(b"alive")
        inc = await server.accept_stream()
        assert await receive_exactly(inc, 5) == b"alive"


async def test_without_keepalive_an_idle_connection_times_out(autojump_clock: trio.testing.MockClock) -> None:
    opts = {"idle_timeout": 5.0, "keepalive_interval": None}
    async with quic_pair(opts, opts) as (client, server, _, _):
        with trio.fail_after(60), pytest.raises(ConnectionClosed):
            await server.accept_stream()
        assert client.is_closed or "Idle timeout" in server.close_reason


# ---- limits ------------------------------------------------------------------------------------


async def test_unread_data_is_bounded_by_the_stream_window() -> None:
    window = 256 * 1024
    async with quic_pair(server_options={"stream_window": window, "connection_window": 4 * window}) as (
        client,
        server,
        _,
        _,
    ):
        out = await client.open_stream()
        await out.send_all(b"x")
        inc = await server.accept_stream()
        blocked = trio.Event()
        async with trio.open_nursery() as nursery:

            async def flood() -> None:
                await out.send_all(bytes(8 * window))
                blocked.set()

            nursery.start_soon(flood)
            await trio.testing.wait_all_tasks_blocked()
            assert not blocked.is_set()  # the writer is held back by flow control
            assert server._core.unread <= window  # and the reader never holds more than its window
            assert out._unsent() <= SEND_BUFFER
            got = await receive_exactly(inc, 1 + 8 * window)
            assert len(got) == 1 + 8 * window
            await blocked.wait()
        assert server._core.unread == 0


async def test_inbound_stream_limit_blocks_the_opener() -> None:
    async with quic_pair(server_options={"max_inbound_streams": 4}) as (client, server, _, _):
        opened = []
        for i in range(4):
            out = await client.open_stream()
            await out.send_all(b"%d" % i)
            opened.append((out, await server.accept_stream()))
        fifth: list[Any] = []
        async with trio.open_nursery() as nursery:

            async def open_fifth() -> None:
                fifth.append(await client.open_stream())

            nursery.start_soon(open_fifth)
            await trio.testing.wait_all_tasks_blocked()
            assert not fifth  # MAX_STREAMS: the peer lets us have 4 streams at a time
            out, inc = opened[0]
            await out.send_eof()
            await inc.send_eof()
            assert await conformance.receive_until_eof(inc) == b"0"
            assert await conformance.receive_until_eof(out) == b""
            await out.aclose()
            await inc.aclose()
        assert fifth and fifth[0].direction is Direction.OUTBOUND


async def test_unidirectional_streams_are_refused() -> None:
    async with quic_pair() as (client, server, _, _):
        client._core._remote_max_streams_uni = 1  # a misbehaving client ignores our limit of 0
        client._core.send_stream_data(2, b"uni")  # a client-initiated unidirectional stream
        client._flush()
        with trio.fail_after(5), pytest.raises(ConnectionClosed):
            await server.accept_stream()
        assert "0x4" in server.close_reason or "stream" in server.close_reason.lower()


async def test_close_is_seen_by_the_peer_and_frees_the_socket() -> None:
    async with quic_pair() as (client, server, client_t, _):
        await client.aclose()
        with trio.fail_after(5), pytest.raises(ConnectionClosed):
            await server.accept_stream()
        assert server.is_closed and client.is_closed
        assert not client_t._dial_endpoints  # the dial socket closed with its last connection
        with pytest.raises(ConnectionClosed):
            await client.open_stream()


async def test_connection_properties() -> None:
    client_id = Identity.generate(KeyType.Secp256k1)
    server_id = Identity.generate(KeyType.ECDSA)
    async with quic_pair(client_identity=client_id, server_identity=server_id) as (client, server, _, _):
        assert client.remote_peer == server_id.peer_id and server.remote_peer == client_id.peer_id
        assert client.remote_public_key == server_id.public_key
        assert server.remote_public_key == client_id.public_key
        assert client.security_protocol == "/tls/1.0.0" and client.muxer_protocol == "/quic-v1"
        assert client.remote_addr == server.local_addr
        assert client.direction is Direction.OUTBOUND and server.direction is Direction.INBOUND
        await client.open_stream()
        assert client.stats.streams_opened == 1 and client.stats.bytes_sent > 0
        assert "rtt" in client.stats.extra


async def test_a_failing_connection_closes_only_itself(caplog: pytest.LogCaptureFixture) -> None:
    async with quic_pair() as (client, server, client_t, server_t):
        (listener,) = server_t._listeners
        async with trio.open_nursery() as nursery:
            accepted: list[Connection] = []

            async def accept() -> None:
                accepted.append(await listener.accept())

            nursery.start_soon(accept)
            other = await client_t.dial(client.remote_addr, Identity.generate(), server.local_peer)
        other_server = accepted[0]
        assert isinstance(other, QUICConnection) and other.local_addr == client.local_addr  # same sockets

        def broken(now: float) -> None:
            raise RuntimeError("bug while applying events")

        server._apply_events = broken  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other.run)
            nursery.start_soon(other_server.run)
            with caplog.at_level(logging.WARNING, logger="mycel.transports.quic"):
                out = await client.open_stream()
                await out.send_all(b"trigger")
                with trio.fail_after(5), pytest.raises(ConnectionClosed):
                    await client.accept_stream()  # the server closed the broken connection
            assert server.is_closed and "internal error" in server.close_reason
            assert "bug while applying events" in caplog.text
            s = await other.open_stream()  # the other connection on the same sockets is fine
            await s.send_all(b"fine")
            await s.send_eof()
            inc = await other_server.accept_stream()
            assert await conformance.receive_until_eof(inc) == b"fine"
            assert not other.is_closed and not other_server.is_closed
            await other.aclose()
            nursery.cancel_scope.cancel()


# ---- fuzzing -----------------------------------------------------------------------------------

_SHAPES = {
    "raw": b"",
    "short": bytes([0x40]),  # short header, then whatever
    "initial": bytes([0xC0, 0, 0, 0, 1, 8]) + bytes(8) + bytes([8]) + bytes(8),  # long header, version 1
    "handshake": bytes([0xE0, 0, 0, 0, 1, 8]) + bytes(8) + bytes([0]),
}


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(_SHAPES)), st.binary(max_size=1400), st.booleans())
def test_fuzz_datagrams_to_a_listener(shape: str, body: bytes, pad: bool) -> None:
    data = _SHAPES[shape] + body + (bytes(1200) if pad else b"")

    async def main() -> None:
        quic = QUIC()
        listener = await quic.open_listener(LOCAL, _FUZZ_SERVER)
        assert isinstance(listener, QUICListener)
        endpoint = listener.endpoint
        endpoint._dispatch(data, ("127.0.0.1", 9), trio.current_time())
        endpoint._process_dirty(trio.current_time())
        assert endpoint.connections == 0 and not endpoint._pending_inbound  # garbage never makes state
        await listener.aclose()

    trio.run(main)


_FUZZ_SERVER = Identity.generate()


def _handshaken_cores() -> tuple[Any, Any]:
    from mycel.transports.quic.core import QuicCore

    quic = QUIC()
    client = QuicCore(configuration=quic._configuration(Identity.generate(), True))
    client.connect(("127.0.0.1", 2), now=1.0)
    server = QuicCore(
        configuration=quic._configuration(_FUZZ_SERVER, False),
        original_destination_connection_id=client._peer_cid.cid,
    )
    for _ in range(6):
        for datagram, _ in client.datagrams_to_send(1.0):
            server.receive_datagram(datagram, ("127.0.0.1", 1), 1.0)
        for datagram, _ in server.datagrams_to_send(1.0):
            client.receive_datagram(datagram, ("127.0.0.1", 2), 1.0)
    assert server._handshake_complete and client._handshake_complete
    return client, server


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_an_established_core(data: st.DataObject) -> None:
    """Corrupted or forged 1-RTT packets with the right connection id: dropped or a clean close."""
    client, server = _handshaken_cores()
    client.send_stream_data(0, b"payload" * 50, end_stream=True)
    (datagram, _), *_ = client.datagrams_to_send(2.0)
    mutated = bytearray(datagram)
    for _ in range(data.draw(st.integers(0, 3))):
        pos = data.draw(st.integers(1 + 8, len(mutated) - 1))  # keep the header's connection id
        mutated[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        mutated = mutated[: data.draw(st.integers(1, len(mutated)))]
    server.receive_datagram(bytes(mutated), ("127.0.0.1", 1), 2.5)
    server.datagrams_to_send(2.5)
    while (ev := server.next_event()) is not None:
        assert type(ev).__name__ in {"StreamDataReceived", "ConnectionTerminated", "ProtocolNegotiated", "HandshakeCompleted", "ConnectionIdIssued"}


async def test_inbound_handler_gets_streams_without_accept() -> None:
    async with quic_pair() as (client, server, _, _):
        first = await client.open_stream()
        await first.send_all(b"queued")
        with trio.fail_after(5):
            while not server._accept_queue:
                await trio.testing.wait_all_tasks_blocked()
        handed: list[Any] = []

        def handler(stream: Any) -> None:
            if len(handed) == 2:
                raise RuntimeError("no more")
            handed.append(stream)

        server.set_inbound_handler(handler)
        assert len(handed) == 1 and not server._accept_queue  # the queued stream is handed over at once
        assert await receive_exactly(handed[0], 6) == b"queued"
        second = await client.open_stream()
        await second.send_all(b"direct")
        with trio.fail_after(5):
            while len(handed) < 2:
                await trio.testing.wait_all_tasks_blocked()
        assert await receive_exactly(handed[1], 6) == b"direct"
        third = await client.open_stream()
        await third.send_all(b"refused")
        with trio.fail_after(5), pytest.raises(StreamReset):  # the handler raised: the stream is reset
            while True:
                await third.receive_some()
        assert server.stats.streams_accepted == 3
