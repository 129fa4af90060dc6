"""/plaintext/2.0.0: exchange, verification, byte-exact reads, pass-through stream."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import outcome
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.core.abc import Direction
from mycel.core.errors import DecodeError, HandshakeError, MessageTooLarge, PeerIdMismatch
from mycel.core.identity import Identity
from mycel.core.keys import KeyType
from mycel.core.varint import encode_uvarint, length_prefixed
from mycel.security import plaintext_exchange_pb2
from mycel.security.plaintext import Plaintext, PlaintextConnection, decode_exchange, encode_exchange
from mycel.testing.raw import DIALER_ADDR, LISTENER_ADDR, memory_raw_pair


async def run_both(
    first: Callable[[], Awaitable[Any]], second: Callable[[], Awaitable[Any]]
) -> tuple[outcome.Outcome[Any], outcome.Outcome[Any]]:
    results: dict[int, outcome.Outcome[Any]] = {}

    async def run(i: int, fn: Callable[[], Awaitable[Any]]) -> None:
        results[i] = await outcome.acapture(fn)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, 0, first)
        nursery.start_soon(run, 1, second)
    return results[0], results[1]


async def plaintext_pair(
    init_id: Identity | None = None, resp_id: Identity | None = None
) -> tuple[PlaintextConnection, PlaintextConnection]:
    init_id = init_id or Identity.generate()
    resp_id = resp_id or Identity.generate()
    a, b = memory_raw_pair()
    out, inn = await run_both(
        lambda: Plaintext().secure_outbound(a, init_id, resp_id.peer_id, ["/yamux/1.0.0"]),
        lambda: Plaintext().secure_inbound(b, resp_id),
    )
    return out.unwrap(), inn.unwrap()


async def receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some()
        assert chunk
        buf += chunk
    return bytes(buf)


@pytest.mark.parametrize("kind", [KeyType.Ed25519, KeyType.Secp256k1, KeyType.ECDSA])
async def test_exchange_and_pass_through(kind: KeyType) -> None:
    init_id, resp_id = Identity.generate(kind), Identity.generate()
    a, b = await plaintext_pair(init_id, resp_id)
    assert a.remote_peer == resp_id.peer_id and b.remote_peer == init_id.peer_id
    assert a.remote_public_key == resp_id.public_key and b.remote_public_key == init_id.public_key
    assert a.local_peer == init_id.peer_id
    assert a.security_protocol == "/plaintext/2.0.0" == Plaintext.protocol_id
    assert a.early_muxer is None
    assert (a.local_addr, a.remote_addr, a.direction) == (DIALER_ADDR, LISTENER_ADDR, Direction.OUTBOUND)
    assert b.direction is Direction.INBOUND
    await a.send_all(b"hello")
    assert await receive_exactly(b, 5) == b"hello"
    await b.send_all(b"world")
    await b.send_eof()
    assert await receive_exactly(a, 5) == b"world"
    assert await a.receive_some() == b""


def test_exchange_message_layout() -> None:
    ident = Identity.generate()
    data = encode_exchange(ident)
    msg = plaintext_exchange_pb2.Exchange()
    msg.ParseFromString(data[1:])
    assert data[0] == len(data) - 1
    assert msg.id == ident.peer_id.to_bytes()
    assert msg.pubkey == ident.public_key.to_protobuf()
    key, peer = decode_exchange(data[1:])
    assert key == ident.public_key and peer == ident.peer_id


async def test_peer_id_mismatch() -> None:
    a, b = memory_raw_pair()
    init_id, resp_id, other = Identity.generate(), Identity.generate(), Identity.generate()
    out, inn = await run_both(
        lambda: Plaintext().secure_outbound(a, init_id, other.peer_id),
        lambda: Plaintext().secure_inbound(b, resp_id),
    )
    with pytest.raises(PeerIdMismatch) as info:
        out.unwrap()
    assert str(other.peer_id) in str(info.value) and str(resp_id.peer_id) in str(info.value)
    assert isinstance(inn.unwrap(), PlaintextConnection)  # the listener cannot tell


async def test_id_not_matching_key_rejected() -> None:
    a, b = memory_raw_pair()
    liar, victim = Identity.generate(), Identity.generate()
    forged = plaintext_exchange_pb2.Exchange(id=victim.peer_id.to_bytes(), pubkey=liar.public_key.to_protobuf())

    async def liar_side() -> None:
        await a.send_all(length_prefixed(forged.SerializeToString()))

    _, inn = await run_both(liar_side, lambda: Plaintext().secure_inbound(b, Identity.generate()))
    with pytest.raises(HandshakeError, match="does not match its public key"):
        inn.unwrap()


async def test_bytes_after_exchange_are_not_consumed() -> None:
    a, b = memory_raw_pair()
    peer = Identity.generate()

    async def eager_peer() -> None:
        await a.send_all(encode_exchange(peer) + b"/multistream/1.0.0\n")

    _, inn = await run_both(eager_peer, lambda: Plaintext().secure_inbound(b, Identity.generate()))
    conn = inn.unwrap()
    assert conn.remote_peer == peer.peer_id
    assert await receive_exactly(conn, 19) == b"/multistream/1.0.0\n"


async def test_oversized_and_truncated_exchanges() -> None:
    a, b = memory_raw_pair()
    _, inn = await run_both(
        lambda: a.send_all(encode_uvarint(100_000)), lambda: Plaintext().secure_inbound(b, Identity.generate())
    )
    with pytest.raises(MessageTooLarge):
        inn.unwrap()

    a, b = memory_raw_pair()

    async def truncated() -> None:
        await a.send_all(encode_exchange(Identity.generate())[:20])
        await a.send_eof()

    _, inn = await run_both(truncated, lambda: Plaintext().secure_inbound(b, Identity.generate()))
    with pytest.raises(HandshakeError, match="closed during"):
        inn.unwrap()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", DecodeError),
        (b"\xff", DecodeError),
        (plaintext_exchange_pb2.Exchange(id=b"\x00\x00").SerializeToString(), DecodeError),
        (plaintext_exchange_pb2.Exchange(id=b"\x00\x00", pubkey=b"\x08\x01").SerializeToString(), DecodeError),
    ],
)
def test_decode_exchange_rejects(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_exchange(body)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_decode_exchange(body: bytes) -> None:
    try:
        decode_exchange(body)
    except (DecodeError, HandshakeError):
        pass


async def test_trio_half_closeable_stream_conformance() -> None:
    await trio.testing.check_half_closeable_stream(plaintext_pair, None)
