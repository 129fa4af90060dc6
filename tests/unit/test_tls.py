"""``/tls/1.0.0``: the handshake (mutual certificates, ALPN muxers, peer ids) and TLSConnection over trio."""

from __future__ import annotations

import datetime
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import outcome
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL

from mycel.core.abc import Direction
from mycel.core.errors import (
    DecodeError,
    HandshakeError,
    InvalidCertificate,
    PeerIdMismatch,
    ProtocolViolation,
    SimultaneousOpenError,
)
from mycel.core.identity import Identity
from mycel.core.keys import KeyType
from mycel.security.tls import TLS, TLSConnection, TLSSession
from mycel.security.tls.certificate import CERTIFICATE_VALIDITY, LocalCertificate, generate_certificate
from mycel.security.tls.connection import SEND_BATCH
from mycel.security.tls.session import make_context
from mycel.testing.raw import DIALER_ADDR, LISTENER_ADDR, StreamRawConnection, memory_raw_pair
from tests.unit.test_tls_certificate import RSA_KEY, build, der, libp2p_extension

YAMUX, MPLEX = "/yamux/1.0.0", "/mplex/6.7.0"
T = TypeVar("T")


def identity_of(kind: str) -> Identity:
    return Identity.from_private_key(RSA_KEY) if kind == "RSA" else Identity.generate(KeyType[kind])


def socket_raw_pair() -> tuple[StreamRawConnection, StreamRawConnection]:
    a, b = trio.socket.socketpair()
    return (
        StreamRawConnection(trio.SocketStream(a), DIALER_ADDR, LISTENER_ADDR, Direction.OUTBOUND),
        StreamRawConnection(trio.SocketStream(b), LISTENER_ADDR, DIALER_ADDR, Direction.INBOUND),
    )


async def run_both(
    first: Callable[[], Awaitable[T]], second: Callable[[], Awaitable[Any]]
) -> tuple[outcome.Outcome[T], outcome.Outcome[Any]]:
    results: dict[int, outcome.Outcome[Any]] = {}

    async def run(i: int, fn: Callable[[], Awaitable[Any]]) -> None:
        results[i] = await outcome.acapture(fn)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, 0, first)
        nursery.start_soon(run, 1, second)
    return results[0], results[1]


async def tls_pair(
    client_id: Identity | None = None,
    server_id: Identity | None = None,
    *,
    client_muxers: Sequence[str] = (),
    server_muxers: Sequence[str] = (),
    client: TLS | None = None,
    server: TLS | None = None,
    raw: tuple[StreamRawConnection, StreamRawConnection] | None = None,
) -> tuple[TLSConnection, TLSConnection]:
    client_id = client_id or Identity.generate()
    server_id = server_id or Identity.generate()
    a, b = raw or socket_raw_pair()
    out, inn = await run_both(
        lambda: (client or TLS()).secure_outbound(a, client_id, server_id.peer_id, client_muxers),
        lambda: (server or TLS()).secure_inbound(b, server_id, server_muxers),
    )
    return out.unwrap(), inn.unwrap()


async def receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some()
        assert chunk, f"EOF after {len(buf)} of {n} bytes"
        buf += chunk
    return bytes(buf)


def tls_with_certificate(cert: LocalCertificate) -> TLS:
    tls = TLS()
    context = make_context(cert)
    tls._contexts.get = lambda identity, now: (cert, context)  # type: ignore[method-assign]
    return tls


def certificate_without_extension() -> LocalCertificate:
    from cryptography.hazmat.primitives.asymmetric import ec

    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build(key=key, not_before=now - datetime.timedelta(hours=1), not_after=now + datetime.timedelta(hours=1))
    return LocalCertificate(cert, key, der(cert), now + datetime.timedelta(hours=1))


def certificate_with_bad_signature(identity: Identity) -> LocalCertificate:
    from cryptography.hazmat.primitives.asymmetric import ec

    now = datetime.datetime.now(datetime.timezone.utc)
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    cert = build(
        key=key,
        extensions=[(libp2p_extension(identity, other), False)],  # signed over another key's SPKI
        not_before=now - datetime.timedelta(hours=1),
        not_after=now + datetime.timedelta(hours=1),
    )
    return LocalCertificate(cert, key, der(cert), now + datetime.timedelta(hours=1))


# ---- handshake ---------------------------------------------------------------------------------


@pytest.mark.parametrize("client_kind", ["Ed25519", "Secp256k1", "ECDSA", "RSA"])
@pytest.mark.parametrize("server_kind", ["Ed25519", "Secp256k1", "ECDSA", "RSA"])
async def test_handshake_every_key_type(client_kind: str, server_kind: str) -> None:
    client_id, server_id = identity_of(client_kind), identity_of(server_kind)
    a, b = await tls_pair(client_id, server_id)
    assert a.remote_peer == server_id.peer_id and b.remote_peer == client_id.peer_id
    assert a.local_peer == client_id.peer_id and b.local_peer == server_id.peer_id
    assert a.remote_public_key == server_id.public_key and b.remote_public_key == client_id.public_key
    assert a.security_protocol == b.security_protocol == "/tls/1.0.0"
    assert (a.local_addr, a.remote_addr, a.direction) == (DIALER_ADDR, LISTENER_ADDR, Direction.OUTBOUND)
    assert (b.local_addr, b.remote_addr, b.direction) == (LISTENER_ADDR, DIALER_ADDR, Direction.INBOUND)
    await a.send_all(b"ping")
    assert await receive_exactly(b, 4) == b"ping"
    await b.send_all(b"pong")
    assert await receive_exactly(a, 4) == b"pong"


async def test_tls13_only_and_no_sni() -> None:
    a, b = await tls_pair()
    for conn in (a, b):
        ssl = conn._session._ssl
        assert ssl.get_protocol_version_name() == "TLSv1.3"
        assert ssl.get_cipher_name() == "TLS_AES_128_GCM_SHA256"
    assert b._session._ssl.get_servername() is None  # the client sent no SNI


@pytest.mark.parametrize(
    "client_muxers, server_muxers, expected",
    [
        ([YAMUX, MPLEX], [YAMUX, MPLEX], YAMUX),
        ([MPLEX, YAMUX], [YAMUX, MPLEX], MPLEX),  # the client's preference wins
        ([YAMUX], [MPLEX, YAMUX], YAMUX),
        ([YAMUX], [MPLEX], None),  # no common muxer: ALPN "libp2p", multistream decides later
        ([], [YAMUX], None),
        ([YAMUX], [], None),
    ],
)
async def test_alpn_muxer_negotiation(
    client_muxers: list[str], server_muxers: list[str], expected: str | None
) -> None:
    a, b = await tls_pair(client_muxers=client_muxers, server_muxers=server_muxers)
    assert a.early_muxer == b.early_muxer == expected
    assert a.alpn == b.alpn == (expected or "libp2p")


def test_two_clients_see_a_simultaneous_open() -> None:
    """TCP simultaneous open: each client receives the other's ClientHello where a ServerHello was due."""
    tls = TLS()
    now = datetime.datetime.now(datetime.timezone.utc)
    a, b = (TLSSession(tls._contexts.get(Identity.generate(), now)[1], is_client=True, now=now) for _ in range(2))
    assert not a.handshake() and not b.handshake()
    a_hello, b_hello = a.data_to_send(), b.data_to_send()
    a.receive_data(b_hello[:3])  # byte by byte up to the message type
    a.receive_data(b_hello[3:])
    b.receive_data(a_hello)
    for session in (a, b):
        with pytest.raises(SimultaneousOpenError, match="both ends are clients"):
            session.handshake()


async def test_server_aborts_without_a_common_alpn() -> None:
    a_raw, b_raw = socket_raw_pair()
    server_id = Identity.generate()
    tls = TLS()
    now = datetime.datetime.now(datetime.timezone.utc)
    session = TLSSession(tls._contexts.get(Identity.generate(), now)[1], is_client=True, now=now)
    session._ssl.set_alpn_protos([b"/not-libp2p"])  # a client that does not offer "libp2p"

    async def client() -> None:
        while not session.handshake():
            await a_raw.send_all(session.data_to_send())
            data = await a_raw.receive_some()
            if not data:
                raise HandshakeError("closed")
            session.receive_data(data)

    out, inn = await run_both(client, lambda: tls.secure_inbound(b_raw, server_id, [YAMUX]))
    with pytest.raises(HandshakeError, match="no common ALPN"):
        inn.unwrap()
    with pytest.raises(HandshakeError):
        out.unwrap()


async def test_peer_id_mismatch(caplog: pytest.LogCaptureFixture) -> None:
    a_raw, b_raw = socket_raw_pair()
    client_id, server_id, other = Identity.generate(), Identity.generate(), Identity.generate()
    with caplog.at_level("INFO", logger="mycel.security.tls"):
        out, inn = await run_both(
            lambda: TLS().secure_outbound(a_raw, client_id, other.peer_id),
            lambda: TLS().secure_inbound(b_raw, server_id),
        )
    with pytest.raises(PeerIdMismatch) as info:
        out.unwrap()
    assert str(other.peer_id) in str(info.value) and str(server_id.peer_id) in str(info.value)
    with pytest.raises(HandshakeError):  # the server got our alert
        inn.unwrap()
    assert "TLS handshake with /ip4/127.0.0.1/tcp/2 (outbound) failed" in caplog.text
    with pytest.raises(trio.ClosedResourceError):  # the failed connection was closed
        await a_raw.send_all(b"x")


@pytest.mark.parametrize("bad", ["no extension", "bad signature"])
async def test_client_rejects_a_bad_server_certificate(bad: str) -> None:
    server_id = Identity.generate()
    cert = certificate_without_extension() if bad == "no extension" else certificate_with_bad_signature(server_id)
    a_raw, b_raw = socket_raw_pair()
    out, inn = await run_both(
        lambda: TLS().secure_outbound(a_raw, Identity.generate(), server_id.peer_id),
        lambda: tls_with_certificate(cert).secure_inbound(b_raw, server_id),
    )
    with pytest.raises(InvalidCertificate, match="lacks the libp2p" if bad == "no extension" else "signature is invalid"):
        out.unwrap()
    with pytest.raises(HandshakeError):
        inn.unwrap()


@pytest.mark.parametrize("bad", ["no extension", "bad signature"])
async def test_server_rejects_a_bad_client_certificate(bad: str) -> None:
    client_id, server_id = Identity.generate(), Identity.generate()
    cert = certificate_without_extension() if bad == "no extension" else certificate_with_bad_signature(client_id)
    a_raw, b_raw = socket_raw_pair()
    out, inn = await run_both(
        lambda: tls_with_certificate(cert).secure_outbound(a_raw, client_id, server_id.peer_id),
        lambda: TLS().secure_inbound(b_raw, server_id),
    )
    with pytest.raises(InvalidCertificate):
        inn.unwrap()
    # TLS 1.3: the client finished before the server checked its certificate; it learns on reading
    client_conn = out.unwrap()
    with pytest.raises((DecodeError, trio.BrokenResourceError)):
        await client_conn.receive_some()


async def test_server_requires_a_client_certificate() -> None:
    a_raw, b_raw = socket_raw_pair()
    ctx = SSL.Context(SSL.TLS_METHOD)  # a client with no certificate at all
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_verify(SSL.VERIFY_NONE, lambda *args: True)
    ssl = SSL.Connection(ctx, None)
    ssl.set_alpn_protos([b"libp2p"])
    ssl.set_connect_state()

    async def client() -> None:
        for _ in range(10):
            try:
                ssl.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                await a_raw.send_all(ssl.bio_read(65536))
            except SSL.WantReadError:
                pass
            data = await a_raw.receive_some()
            if not data:
                return
            ssl.bio_write(data)

    _, inn = await run_both(client, lambda: TLS().secure_inbound(b_raw, Identity.generate()))
    with pytest.raises(HandshakeError):
        inn.unwrap()


async def test_tls12_peer_is_refused() -> None:
    a_raw, b_raw = socket_raw_pair()
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    ssl = SSL.Connection(ctx, None)
    ssl.set_connect_state()

    async def client() -> None:
        try:
            ssl.do_handshake()
        except SSL.WantReadError:
            pass
        await a_raw.send_all(ssl.bio_read(65536))
        await a_raw.receive_some()

    _, inn = await run_both(client, lambda: TLS().secure_inbound(b_raw, Identity.generate()))
    with pytest.raises(HandshakeError, match="protocol"):
        inn.unwrap()


async def test_expired_certificates_are_refused() -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    client_id, server_id = Identity.generate(), Identity.generate()
    # the client's clock is two days ahead: the server's certificate has expired in its eyes
    a_raw, b_raw = socket_raw_pair()
    out, inn = await run_both(
        lambda: TLS(clock=lambda: now + 2 * CERTIFICATE_VALIDITY).secure_outbound(a_raw, client_id, None),
        lambda: TLS(clock=lambda: now).secure_inbound(b_raw, server_id),
    )
    with pytest.raises(InvalidCertificate, match="valid from"):
        out.unwrap()
    with pytest.raises(HandshakeError):
        inn.unwrap()
    # the client presents a certificate that expired yesterday: the server refuses it
    stale = generate_certificate(client_id.private_key, now - 2 * CERTIFICATE_VALIDITY)
    a_raw, b_raw = socket_raw_pair()
    out, inn = await run_both(
        lambda: tls_with_certificate(stale).secure_outbound(a_raw, client_id, server_id.peer_id),
        lambda: TLS().secure_inbound(b_raw, server_id),
    )
    with pytest.raises(InvalidCertificate, match="valid from"):
        inn.unwrap()


async def test_certificate_is_reused_per_identity() -> None:
    tls, identity = TLS(), Identity.generate()
    first = tls.certificate(identity)
    await tls_pair(server_id=identity, server=tls)
    await tls_pair(server_id=identity, server=tls)
    assert tls.certificate(identity) is first


async def test_a_known_certificate_is_not_verified_in_full_again() -> None:
    client, server = TLS(), TLS()
    client_id, server_id = Identity.generate(), Identity.generate()
    for _ in range(3):
        out, inn = await tls_pair(client_id, server_id, client=client, server=server)
        assert out.remote_peer == server_id.peer_id and inn.remote_peer == client_id.peer_id
    assert client._verified.hits == 2 and server._verified.hits == 2
    a, b = socket_raw_pair()
    refused, _ = await run_both(  # a known certificate, but not the peer we asked for
        lambda: client.secure_outbound(a, client_id, Identity.generate().peer_id),
        lambda: server.secure_inbound(b, server_id),
    )
    with pytest.raises(PeerIdMismatch):
        refused.unwrap()
    assert client._verified.hits == 3


async def test_handshake_eof_and_garbage() -> None:
    a_raw, b_raw = memory_raw_pair()

    async def close_early() -> None:
        await a_raw.send_all(b"\x16\x03\x01\x00\x10partial")
        await a_raw.send_eof()

    _, inn = await run_both(close_early, lambda: TLS().secure_inbound(b_raw, Identity.generate()))
    with pytest.raises(HandshakeError, match="closed during"):
        inn.unwrap()

    a_raw, b_raw = memory_raw_pair()
    _, inn = await run_both(
        lambda: a_raw.send_all(b"GET / HTTP/1.1\r\n\r\n" * 10), lambda: TLS().secure_inbound(b_raw, Identity.generate())
    )
    with pytest.raises(HandshakeError, match="TLS handshake failed"):
        inn.unwrap()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=600), min_size=1, max_size=4))
def test_fuzz_server_handshake_with_garbage(chunks: list[bytes]) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    session = TLSSession(_FUZZ_CONTEXT, is_client=False, now=now)
    try:
        for chunk in chunks:
            session.receive_data(chunk)
            session.handshake()
            session.data_to_send()
    except HandshakeError:
        pass


_FUZZ_CONTEXT = TLS()._contexts.get(Identity.generate(), datetime.datetime.now(datetime.timezone.utc))[1]


# ---- the connection ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 16384, 16385, 1_500_000, 5_000_000])
async def test_data_both_ways_concurrently(size: int) -> None:
    a, b = await tls_pair()
    up, down = os.urandom(size), os.urandom(size)
    got: dict[str, bytes] = {}

    async def read(name: str, stream: TLSConnection) -> None:
        got[name] = await receive_exactly(stream, size)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send_all, up)
        nursery.start_soon(b.send_all, down)
        nursery.start_soon(read, "b", b)
        nursery.start_soon(read, "a", a)
    assert got["b"] == up and got["a"] == down


async def test_bytearray_and_memoryview_payloads() -> None:
    a, b = await tls_pair()
    await a.send_all(bytearray(b"ba"))
    await a.send_all(memoryview(b"mv"))
    await a.send_all(b"")
    assert await receive_exactly(b, 4) == b"bamv"


class SpyRaw(StreamRawConnection):
    def __init__(self, inner: StreamRawConnection) -> None:
        super().__init__(inner.stream, inner.local_addr, inner.remote_addr, inner.direction)
        self.sends = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sends += 1
        await super().send_all(data)


async def test_send_all_is_one_raw_write_per_batch() -> None:
    a_raw, b_raw = socket_raw_pair()
    spy = SpyRaw(a_raw)
    a, b = await tls_pair(raw=(spy, b_raw))
    before = spy.sends
    data = os.urandom(SEND_BATCH + 1000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send_all, data)
        assert await receive_exactly(b, len(data)) == data
    assert spy.sends - before == 2


async def test_half_close_is_close_notify() -> None:
    a, b = await tls_pair()
    await a.send_all(b"last words")
    await a.send_eof()
    assert await receive_exactly(b, 10) == b"last words"
    assert await b.receive_some() == b""
    assert await b.receive_some() == b""  # stays at EOF
    assert b._session.close_notify_sent is False and b._eof
    with pytest.raises(trio.ClosedResourceError):
        await a.send_all(b"more")
    await a.send_eof()  # repeating is fine
    reply = os.urandom(300_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.send_all, reply)
        assert await receive_exactly(a, len(reply)) == reply  # TLS 1.3 half-close: the other way still works
    await b.send_eof()
    assert await a.receive_some() == b""
    # as go's CloseWrite: close_notify only, the TCP connection stays open until aclose()
    assert isinstance(a.raw, StreamRawConnection)
    got: list[bytes | bytearray] = []
    async with trio.open_nursery() as nursery:

        async def read_raw() -> None:
            got.append(await a.raw.receive_some())

        nursery.start_soon(read_raw)
        await trio.testing.wait_all_tasks_blocked()
        assert not got  # nothing more arrived: no FIN
        nursery.cancel_scope.cancel()
    await a.aclose()
    assert await b.raw.receive_some() == b""  # now the transport is closed


async def test_aclose_sends_close_notify() -> None:
    a, b = await tls_pair()
    await a.send_all(b"bye")
    await a.aclose()
    assert await receive_exactly(b, 3) == b"bye"
    assert await b.receive_some() == b""  # a clean EOF, not an error
    with pytest.raises(trio.ClosedResourceError):
        await a.receive_some()
    await a.aclose()  # idempotent


async def test_transport_eof_between_records_is_eof() -> None:
    a_raw, b_raw = socket_raw_pair()
    a, b = await tls_pair(raw=(a_raw, b_raw))
    await a.send_all(b"complete record")
    await a_raw.send_eof()  # no close_notify: a peer that just closed TCP
    assert await receive_exactly(b, 15) == b"complete record"
    assert await b.receive_some() == b""


async def test_transport_eof_inside_a_record_is_an_error() -> None:
    a_raw, b_raw = socket_raw_pair()
    a, b = await tls_pair(raw=(a_raw, b_raw))
    a._session.write(b"will be cut")
    wire = a._session.data_to_send()
    await a_raw.send_all(wire[:-3])
    await a_raw.send_eof()
    with pytest.raises(DecodeError, match="inside a TLS record"):
        await b.receive_some()
    with pytest.raises(trio.BrokenResourceError):
        await b.receive_some()


async def test_tampered_record_is_a_decode_error() -> None:
    a_raw, b_raw = socket_raw_pair()
    a, b = await tls_pair(raw=(a_raw, b_raw))
    a._session.write(b"tampered in flight")
    wire = bytearray(a._session.data_to_send())
    wire[-1] ^= 0x80
    await a_raw.send_all(bytes(wire))
    with pytest.raises(DecodeError) as info:
        await b.receive_some()
    assert isinstance(info.value, ProtocolViolation)
    with pytest.raises(trio.BrokenResourceError):
        await b.receive_some()


async def test_receive_respects_max_bytes() -> None:
    a, b = await tls_pair()
    await a.send_all(b"0123456789" * 5000)
    first = await b.receive_some(7)
    assert first == b"0123456"
    rest = await receive_exactly(b, 50000 - 7)
    assert first + rest == b"0123456789" * 5000
    with pytest.raises(ValueError):
        await b.receive_some(0)


async def test_concurrent_receivers_are_refused() -> None:
    a, b = await tls_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await b.receive_some()
        await a.send_all(b"x")


async def _stream_maker() -> tuple[TLSConnection, TLSConnection]:
    return await tls_pair()


async def test_trio_half_closeable_stream_conformance() -> None:
    await trio.testing.check_half_closeable_stream(_stream_maker, None)
