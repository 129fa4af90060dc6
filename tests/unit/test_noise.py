"""Noise: the XX vector, the sans-IO handshake and transport cores, and NoiseConnection over trio."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import outcome
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import mycel.security.noise.protocol as noise_protocol_module
from mycel.core.abc import Direction
from mycel.core.errors import (
    DecodeError,
    DecryptionError,
    HandshakeError,
    PeerIdMismatch,
    ProtocolViolation,
    SimultaneousOpenError,
)
from mycel.core.identity import Identity
from mycel.core.keys import KeyType, private_key_from_protobuf
from mycel.core.peer_id import PeerId
from mycel.security.noise import (
    MAX_PLAINTEXT,
    Noise,
    NoiseConnection,
    NoiseHandshake,
    NoiseTransport,
    TransportCipher,
    XXHandshake,
    noise_handshake_pb2,
    select_muxer,
)
from mycel.security.noise.handshake import STATIC_KEY_DOMAIN
from mycel.testing.raw import DIALER_ADDR, LISTENER_ADDR, StreamRawConnection, memory_raw_pair

VECTORS: dict[str, Any] = json.loads(
    (pathlib.Path(__file__).resolve().parents[3] / "shared" / "vectors" / "vectors.json").read_text()
)
XX = VECTORS["noise_xx"]["vector"]
RSA_IDENTITY = Identity.from_private_key(
    private_key_from_protobuf(bytes.fromhex(VECTORS["private_keys_from_specs"]["vectors"]["rsa private key"]))
)
YAMUX, MPLEX = "/yamux/1.0.0", "/mplex/6.7.0"
T = TypeVar("T")


def identity_of(kind: str) -> Identity:
    return RSA_IDENTITY if kind == "RSA" else Identity.generate(KeyType[kind])


# --- helpers ------------------------------------------------------------------------------------


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


async def noise_pair(
    init_id: Identity | None = None,
    resp_id: Identity | None = None,
    *,
    init_muxers: Sequence[str] = (),
    resp_muxers: Sequence[str] = (),
    noise: Noise | None = None,
) -> tuple[NoiseConnection, NoiseConnection]:
    init_id = init_id or Identity.generate()
    resp_id = resp_id or Identity.generate()
    noise = noise or Noise()
    a, b = memory_raw_pair()
    out, inn = await run_both(
        lambda: noise.secure_outbound(a, init_id, resp_id.peer_id, init_muxers),
        lambda: noise.secure_inbound(b, resp_id, resp_muxers),
    )
    return out.unwrap(), inn.unwrap()


def make_cores(
    init_id: Identity,
    resp_id: Identity,
    *,
    expected: PeerId | None = None,
    init_muxers: Sequence[str] = (),
    resp_muxers: Sequence[str] = (),
) -> tuple[NoiseHandshake, NoiseHandshake]:
    init = NoiseHandshake(
        init_id,
        initiator=True,
        static_private=os.urandom(32),
        ephemeral_private=os.urandom(32),
        remote_peer=expected,
        muxers=init_muxers,
    )
    resp = NoiseHandshake(
        resp_id, initiator=False, static_private=os.urandom(32), ephemeral_private=os.urandom(32), muxers=resp_muxers
    )
    return init, resp


def drive(init: NoiseHandshake, resp: NoiseHandshake) -> None:
    while not (init.complete and resp.complete):
        resp.receive_data(init.data_to_send())
        init.receive_data(resp.data_to_send())


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(2, "big") + body


def unframe(data: bytes) -> bytes:
    assert int.from_bytes(data[:2], "big") == len(data) - 2
    return data[2:]


async def receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some()
        assert chunk, f"EOF after {len(buf)} of {n} bytes"
        buf += chunk
    return bytes(buf)


class SpyRaw(StreamRawConnection):
    """Counts send_all calls and records receive_some sizes."""

    def __init__(self, inner: StreamRawConnection) -> None:
        super().__init__(inner.stream, inner.local_addr, inner.remote_addr, inner.direction)
        self.sends = 0
        self.receive_sizes: list[int | None] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sends += 1
        await super().send_all(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        self.receive_sizes.append(max_bytes)
        return await super().receive_some(max_bytes)


# --- the cacophony XX vector --------------------------------------------------------------------


def test_xx_vector_reproduced() -> None:
    init = XXHandshake(
        initiator=True,
        static_private=bytes.fromhex(XX["init_static"]),
        ephemeral_private=bytes.fromhex(XX["init_ephemeral"]),
        prologue=bytes.fromhex(XX["init_prologue"]),
    )
    resp = XXHandshake(
        initiator=False,
        static_private=bytes.fromhex(XX["resp_static"]),
        ephemeral_private=bytes.fromhex(XX["resp_ephemeral"]),
        prologue=bytes.fromhex(XX["resp_prologue"]),
    )
    msgs = XX["messages"]
    senders = [init, resp, init]
    receivers = [resp, init, resp]
    for m, sender, receiver in zip(msgs[:3], senders, receivers, strict=True):
        ciphertext = sender.write_message(bytes.fromhex(m["payload"]))
        assert ciphertext.hex() == m["ciphertext"]
        assert receiver.read_message(ciphertext).hex() == m["payload"]
    assert init.complete and resp.complete
    assert init.handshake_hash.hex() == XX["handshake_hash"] == resp.handshake_hash.hex()
    assert init.remote_static == resp.local_static_public
    assert resp.remote_static == init.local_static_public
    # Transport messages continue alternating (responder first) and use our own ChaChaPoly code.
    i_send, i_recv = init.split()
    r_send, r_recv = resp.split()
    assert i_send == r_recv and i_recv == r_send
    ciphers = {id(init): TransportCipher(i_send), id(resp): TransportCipher(r_send)}
    deciphers = {id(init): TransportCipher(i_recv), id(resp): TransportCipher(r_recv)}
    for m, sender, receiver in zip(msgs[3:], [resp, init, resp], [init, resp, init], strict=True):
        ciphertext = ciphers[id(sender)].encrypt(bytes.fromhex(m["payload"]))
        assert ciphertext.hex() == m["ciphertext"]
        assert deciphers[id(receiver)].decrypt(ciphertext).hex() == m["payload"]


def test_xx_rejects_tampered_message() -> None:
    init = XXHandshake(initiator=True, static_private=os.urandom(32), ephemeral_private=os.urandom(32))
    resp = XXHandshake(initiator=False, static_private=os.urandom(32), ephemeral_private=os.urandom(32))
    resp.read_message(init.write_message())
    msg2 = bytearray(resp.write_message(b"payload"))
    msg2[40] ^= 1
    with pytest.raises(HandshakeError):
        init.read_message(bytes(msg2))
    with pytest.raises(HandshakeError, match="already failed"):
        init.read_message(bytes(msg2))


# --- sans-IO handshake core ---------------------------------------------------------------------


def test_core_message_shapes_and_result() -> None:
    a, b = Identity.generate(), Identity.generate(KeyType.Secp256k1)
    init, resp = make_cores(a, b, expected=b.peer_id, init_muxers=[YAMUX], resp_muxers=[YAMUX])
    msg1 = init.data_to_send()
    assert len(msg1) == 2 + 32  # just the ephemeral key: no payload, no extensions in msg 1
    resp.receive_data(msg1)
    msg2 = resp.data_to_send()
    init.receive_data(msg2)
    msg3 = init.data_to_send()
    resp.receive_data(msg3)
    assert init.complete and resp.complete
    assert init.data_to_send() == b"" and resp.data_to_send() == b""
    ri, rr = init.result, resp.result
    assert ri.remote_peer == b.peer_id and rr.remote_peer == a.peer_id
    assert ri.remote_public_key == b.public_key and rr.remote_public_key == a.public_key
    assert ri.early_muxer == rr.early_muxer == YAMUX
    assert ri.send_key == rr.recv_key and ri.recv_key == rr.send_key
    assert ri.handshake_hash == rr.handshake_hash
    # msg2 = e (32) + encrypted s (48) + encrypted payload; msg3 = encrypted s (48) + payload.
    assert len(msg2) - 2 > 32 + 48 + 16
    assert len(msg3) - 2 > 48 + 16


def test_core_two_initiators_see_a_simultaneous_open() -> None:
    """TCP simultaneous open: each side's message 1 arrives where the other awaits message 2."""
    a = NoiseHandshake(
        Identity.generate(), initiator=True, static_private=os.urandom(32), ephemeral_private=os.urandom(32)
    )
    b = NoiseHandshake(
        Identity.generate(), initiator=True, static_private=os.urandom(32), ephemeral_private=os.urandom(32)
    )
    a_out, b_out = a.data_to_send(), b.data_to_send()
    for core, data in ((a, b_out), (b, a_out)):
        with pytest.raises(SimultaneousOpenError, match="both ends are initiators"):
            core.receive_data(data)
    # a real message 2 that is merely cut short is not mistaken for one (it fails as a bad message)
    init, resp = make_cores(Identity.generate(), Identity.generate())
    resp.receive_data(init.data_to_send())
    msg2 = unframe(resp.data_to_send())
    with pytest.raises(HandshakeError) as info:
        init.receive_data(frame(msg2[:33]))
    assert not isinstance(info.value, SimultaneousOpenError)


def test_core_byte_by_byte_and_bytes_wanted() -> None:
    init, resp = make_cores(Identity.generate(), Identity.generate())
    msg1 = init.data_to_send()
    assert resp.bytes_wanted() == 2
    resp.receive_data(msg1[:1])
    assert resp.bytes_wanted() == 1
    resp.receive_data(msg1[1:2])
    assert resp.bytes_wanted() == 32
    for i in range(2, len(msg1)):
        assert resp.bytes_wanted() == len(msg1) - i
        resp.receive_data(msg1[i : i + 1])
    msg2 = resp.data_to_send()
    for i in range(len(msg2)):
        init.receive_data(msg2[i : i + 1])
    assert init.bytes_wanted() == 0
    resp.receive_data(init.data_to_send())
    assert init.complete and resp.complete


def test_core_keeps_bytes_after_final_message() -> None:
    init, resp = make_cores(Identity.generate(), Identity.generate())
    resp.receive_data(init.data_to_send())
    init.receive_data(resp.data_to_send())
    msg3 = init.data_to_send()
    r = init.result
    transport = NoiseTransport(r.send_key, r.recv_key)
    first_frames = bytes(transport.encrypt(b"early data after the handshake"))
    resp.receive_data(msg3 + first_frames)
    assert resp.complete
    leftover = resp.take_leftover()
    assert leftover == first_frames
    rr = resp.result
    peer_transport = NoiseTransport(rr.send_key, rr.recv_key)
    peer_transport.feed(leftover)
    assert peer_transport.read() == b"early data after the handshake"


def test_core_peer_id_mismatch_names_both_ids() -> None:
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    init, resp = make_cores(a, b, expected=c.peer_id)
    resp.receive_data(init.data_to_send())
    with pytest.raises(PeerIdMismatch) as info:
        init.receive_data(resp.data_to_send())
    assert str(c.peer_id) in str(info.value) and str(b.peer_id) in str(info.value)
    assert init.data_to_send() == b""  # no msg 3 is sent to an impostor
    with pytest.raises(HandshakeError, match="already failed"):
        init.receive_data(b"\x00")


def _forge(core: NoiseHandshake, payload: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "_our_payload", lambda: payload)


def test_core_rejects_sig_over_another_static_key(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = Identity.generate(), Identity.generate()
    init, resp = make_cores(a, b)
    forged = noise_handshake_pb2.NoiseHandshakePayload(
        identity_key=b.public_key.to_protobuf(),
        identity_sig=b.private_key.sign(STATIC_KEY_DOMAIN + os.urandom(32)),  # replayed from another session
    ).SerializeToString()
    _forge(resp, forged, monkeypatch)
    resp.receive_data(init.data_to_send())
    with pytest.raises(HandshakeError, match="identity_sig does not verify"):
        init.receive_data(resp.data_to_send())


def test_core_rejects_claimed_identity_signed_by_other_key(monkeypatch: pytest.MonkeyPatch) -> None:
    a, victim, attacker = Identity.generate(), Identity.generate(), Identity.generate()
    init, resp = make_cores(a, attacker)
    forged = noise_handshake_pb2.NoiseHandshakePayload(
        identity_key=victim.public_key.to_protobuf(),
        identity_sig=attacker.private_key.sign(STATIC_KEY_DOMAIN + resp.local_static_public),
    ).SerializeToString()
    _forge(resp, forged, monkeypatch)
    resp.receive_data(init.data_to_send())
    with pytest.raises(HandshakeError, match="identity_sig does not verify"):
        init.receive_data(resp.data_to_send())


def test_core_responder_rejects_forged_initiator(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = Identity.generate(), Identity.generate()
    init, resp = make_cores(a, b)
    forged = noise_handshake_pb2.NoiseHandshakePayload(
        identity_key=a.public_key.to_protobuf(), identity_sig=b"\x00" * 64
    ).SerializeToString()
    _forge(init, forged, monkeypatch)
    resp.receive_data(init.data_to_send())
    init.receive_data(resp.data_to_send())
    with pytest.raises(HandshakeError, match="identity_sig"):
        resp.receive_data(init.data_to_send())


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        (b"\xff\xff", DecodeError, "malformed"),
        (b"", DecodeError, "lacks identity_key"),
        (
            noise_handshake_pb2.NoiseHandshakePayload(identity_key=b"junk", identity_sig=b"x").SerializeToString(),
            DecodeError,
            "truncated key protobuf",
        ),
        (b"\x0a\x00\x12\x00\x22\x04\x12\x02\xff\xfe", DecodeError, "lacks Type"),
    ],
)
def test_core_rejects_malformed_payloads(
    payload: bytes, error: type[Exception], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    init, resp = make_cores(Identity.generate(), Identity.generate())
    _forge(resp, payload, monkeypatch)
    resp.receive_data(init.data_to_send())
    with pytest.raises(error, match=message):
        init.receive_data(resp.data_to_send())


def test_core_rejects_invalid_utf8_muxer_names(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = Identity.generate(), Identity.generate()
    init, resp = make_cores(a, b)
    base = noise_handshake_pb2.NoiseHandshakePayload(
        identity_key=b.public_key.to_protobuf(),
        identity_sig=b.private_key.sign(STATIC_KEY_DOMAIN + resp.local_static_public),
    ).SerializeToString()
    _forge(resp, base + b"\x22\x04\x12\x02\xff\xfe", monkeypatch)
    resp.receive_data(init.data_to_send())
    with pytest.raises(DecodeError, match="UTF-8"):
        init.receive_data(resp.data_to_send())


def test_core_oversized_message_rejected_before_buffering() -> None:
    resp = NoiseHandshake(
        Identity.generate(),
        initiator=False,
        static_private=os.urandom(32),
        ephemeral_private=os.urandom(32),
        max_message_size=1024,
    )
    with pytest.raises(HandshakeError, match="message 1 of 2000 bytes"):
        resp.receive_data(b"\x07\xd0")


def test_core_msg1_with_a_payload_rejected_at_its_length() -> None:
    """Message 1 is the initiator's 32-byte ephemeral key, no payload: anything longer is refused as soon as
    its length arrives (issue #12: a 65,535-byte message 1 was accepted and waited for)."""
    def responder() -> NoiseHandshake:
        return NoiseHandshake(
            Identity.generate(), initiator=False, static_private=os.urandom(32), ephemeral_private=os.urandom(32)
        )

    with pytest.raises(HandshakeError, match="message 1 of 33 bytes"):
        responder().receive_data(b"\x00\x21")
    with pytest.raises(HandshakeError, match="message 1 of 65535 bytes"):
        responder().receive_data(b"\xff\xff")
    resp = responder()
    resp.receive_data(b"\x00\x20" + os.urandom(32))  # exactly the key: answered with message 2
    assert resp.data_to_send()
    # message 3 (the initiator's identity payload) is bounded by max_message_size, not by 32 bytes
    with pytest.raises(HandshakeError, match="65535 bytes exceeds 1024"):
        NoiseHandshake(
            Identity.generate(),
            initiator=False,
            static_private=os.urandom(32),
            ephemeral_private=os.urandom(32),
            max_message_size=1024,
        ).receive_data(b"\x00\x20" + os.urandom(32) + b"\xff\xff")


@pytest.mark.parametrize(
    ("init_muxers", "resp_muxers", "expected"),
    [
        ([YAMUX, MPLEX], [MPLEX, YAMUX], YAMUX),  # the initiator's preference wins
        ([MPLEX, YAMUX], [YAMUX, MPLEX], MPLEX),
        ([MPLEX, YAMUX], [YAMUX], YAMUX),
        ([], [YAMUX], None),
        ([YAMUX], [], None),
        ([], [], None),
    ],
)
def test_select_muxer(init_muxers: list[str], resp_muxers: list[str], expected: str | None) -> None:
    assert select_muxer(init_muxers, resp_muxers) == expected
    init, resp = make_cores(Identity.generate(), Identity.generate(), init_muxers=init_muxers, resp_muxers=resp_muxers)
    drive(init, resp)
    assert init.result.early_muxer == resp.result.early_muxer == expected
    assert init.result.remote_muxers == tuple(resp_muxers)
    assert resp.result.remote_muxers == tuple(init_muxers)


def test_select_muxer_no_overlap() -> None:
    with pytest.raises(HandshakeError, match="no common muxer"):
        select_muxer([YAMUX], [MPLEX])
    init, resp = make_cores(Identity.generate(), Identity.generate(), init_muxers=[YAMUX], resp_muxers=[MPLEX])
    resp.receive_data(init.data_to_send())
    with pytest.raises(HandshakeError, match="no common muxer"):
        init.receive_data(resp.data_to_send())


def test_responder_checks_muxer_overlap_too(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = Identity.generate(), Identity.generate()
    init, resp = make_cores(a, b, init_muxers=[YAMUX], resp_muxers=[MPLEX])
    # An initiator that ignores the rule and completes anyway: the responder must still refuse.
    monkeypatch.setattr("mycel.security.noise.handshake.select_muxer", lambda i, r: None)
    resp.receive_data(init.data_to_send())
    init.receive_data(resp.data_to_send())
    monkeypatch.undo()
    with pytest.raises(HandshakeError, match="no common muxer"):
        resp.receive_data(init.data_to_send())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300), st.booleans())
def test_fuzz_responder_core_with_garbage(msg1: bytes, msg3: bytes, framed: bool) -> None:
    _, resp = make_cores(Identity.from_seed(bytes(32)), Identity.from_seed(bytes(32)))
    try:
        resp.receive_data(frame(msg1) if framed else msg1)
        resp.receive_data(frame(msg3) if framed else msg3)
    except (HandshakeError, ProtocolViolation):
        return
    assert not resp.complete  # a random msg 3 can never authenticate


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_fuzz_initiator_core_with_garbage_msg2(body: bytes, framed: bool) -> None:
    init, _ = make_cores(Identity.from_seed(bytes(32)), Identity.from_seed(bytes(32)))
    try:
        init.receive_data(frame(body) if framed else body)
    except (HandshakeError, ProtocolViolation):
        return
    assert not init.complete  # random bytes can never authenticate


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_fuzz_mutated_or_truncated_handshake_messages(data: st.DataObject) -> None:
    a, b = Identity.from_seed(bytes(32)), Identity.from_seed(bytes([1] * 32))
    init, resp = make_cores(a, b)
    resp.receive_data(init.data_to_send())
    msg2 = bytearray(unframe(resp.data_to_send()))
    target_msg3 = data.draw(st.booleans())
    if target_msg3:
        init.receive_data(frame(bytes(msg2)))
        msg = bytearray(unframe(init.data_to_send()))
        receiver = resp
    else:
        msg = msg2
        receiver = init
    if data.draw(st.booleans()):
        pos = data.draw(st.integers(min_value=0, max_value=len(msg) - 1))
        msg[pos] ^= data.draw(st.integers(min_value=1, max_value=255))
    else:
        msg = msg[: data.draw(st.integers(min_value=0, max_value=len(msg) - 1))]
    with pytest.raises(HandshakeError):
        receiver.receive_data(frame(bytes(msg)))


# --- sans-IO transport core ---------------------------------------------------------------------


def transport_pair() -> tuple[NoiseTransport, NoiseTransport]:
    k1, k2 = os.urandom(32), os.urandom(32)
    return NoiseTransport(k1, k2), NoiseTransport(k2, k1)


def test_transport_splits_at_65519() -> None:
    a, b = transport_pair()
    data = os.urandom(MAX_PLAINTEXT + 1)
    wire = bytes(a.encrypt(data))
    assert int.from_bytes(wire[:2], "big") == 65535
    assert int.from_bytes(wire[65537:65539], "big") == 1 + 16
    assert len(wire) == 65537 + 2 + 17
    assert a.send_nonce == 2
    b.feed(wire)
    assert b.read() == data
    assert b.recv_nonce == 2
    assert a.encrypt(b"") == bytearray()


def test_transport_read_respects_max_bytes() -> None:
    a, b = transport_pair()
    b.feed(bytes(a.encrypt(b"0123456789")))
    assert b.read(4) == b"0123"
    assert b.read(4) == b"4567"
    assert b.read() == b"89"
    assert b.read() is None


def test_transport_empty_frames_are_skipped() -> None:
    a, b = transport_pair()
    wire = frame(a._send.encrypt(b""))  # an empty plaintext frame (16-byte tag only)
    b.feed(wire)
    assert b.read() is None
    b.feed(bytes(a.encrypt(b"x")))
    assert b.read() == b"x"


def test_transport_bad_tag_and_truncation() -> None:
    a, b = transport_pair()
    wire = bytearray(a.encrypt(b"hello"))
    wire[5] ^= 1
    b.feed(bytes(wire))
    with pytest.raises(DecryptionError):
        b.read()
    c, d = transport_pair()
    d.feed(bytes(c.encrypt(b"hello"))[:-1])
    assert d.read() is None
    with pytest.raises(DecodeError, match="inside a Noise frame"):
        d.feed_eof()
    e, f = transport_pair()
    f.feed(frame(b"short"))
    with pytest.raises(DecryptionError):
        f.read()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=8), st.lists(st.integers(min_value=1, max_value=5000), max_size=30))
def test_fuzz_transport_any_chunking(messages: list[bytes], cuts: list[int]) -> None:
    a, b = transport_pair()
    wire = b"".join(bytes(a.encrypt(m)) for m in messages)
    got = bytearray()
    pos = 0
    for size in [*cuts, len(wire)]:
        piece = wire[pos : pos + size]
        pos += len(piece)
        if piece:
            b.feed(piece)
        while (out := b.read(data_limit := 1000)) is not None:
            assert 0 < len(out) <= data_limit
            got += out
    b.feed_eof()
    assert bytes(got) == b"".join(messages)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_transport_garbage(data: bytes) -> None:
    _, b = transport_pair()
    b.feed(data)
    try:
        while b.read() is not None:
            pass
        b.feed_eof()
    except (DecryptionError, DecodeError):
        pass


# --- trio adapter -------------------------------------------------------------------------------


@pytest.mark.parametrize("init_kind", ["Ed25519", "Secp256k1", "ECDSA", "RSA"])
@pytest.mark.parametrize("resp_kind", ["Ed25519", "RSA"])
async def test_handshake_every_key_type(init_kind: str, resp_kind: str) -> None:
    init_id, resp_id = identity_of(init_kind), identity_of(resp_kind)
    a, b = await noise_pair(init_id, resp_id)
    assert a.remote_peer == resp_id.peer_id and b.remote_peer == init_id.peer_id
    assert a.local_peer == init_id.peer_id and b.local_peer == resp_id.peer_id
    assert a.remote_public_key == resp_id.public_key and b.remote_public_key == init_id.public_key
    assert a.security_protocol == b.security_protocol == "/noise"
    assert (a.local_addr, a.remote_addr, a.direction) == (DIALER_ADDR, LISTENER_ADDR, Direction.OUTBOUND)
    assert (b.local_addr, b.remote_addr, b.direction) == (LISTENER_ADDR, DIALER_ADDR, Direction.INBOUND)
    assert a.early_muxer is None and b.early_muxer is None
    await a.send_all(b"ping")
    assert await receive_exactly(b, 4) == b"ping"
    await b.send_all(b"pong")
    assert await receive_exactly(a, 4) == b"pong"


@pytest.mark.parametrize("size", [1, MAX_PLAINTEXT, MAX_PLAINTEXT + 1, 1_500_000, 5_000_000])
async def test_data_both_ways_concurrently(size: int) -> None:
    a, b = await noise_pair()
    up, down = os.urandom(size), os.urandom(size)
    got: dict[str, bytes] = {}

    async def read(name: str, stream: NoiseConnection) -> None:
        got[name] = await receive_exactly(stream, size)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send_all, up)
        nursery.start_soon(b.send_all, down)
        nursery.start_soon(read, "b", b)
        nursery.start_soon(read, "a", a)
    assert got["b"] == up and got["a"] == down


async def test_send_all_is_one_raw_write_up_to_the_batch_size() -> None:
    a_raw, b_raw = memory_raw_pair()
    spy = SpyRaw(a_raw)
    init_id, resp_id = Identity.generate(), Identity.generate()
    out, inn = await run_both(
        lambda: Noise().secure_outbound(spy, init_id, resp_id.peer_id),
        lambda: Noise().secure_inbound(b_raw, resp_id),
    )
    a, b = out.unwrap(), inn.unwrap()
    before = spy.sends
    data = os.urandom(1_200_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send_all, data)
        assert await receive_exactly(b, len(data)) == data
    assert spy.sends - before == 1


async def test_handshake_reads_only_its_own_bytes() -> None:
    a_raw, b_raw = memory_raw_pair()
    spy = SpyRaw(b_raw)
    init_id, resp_id = Identity.generate(), Identity.generate()
    out, inn = await run_both(
        lambda: Noise().secure_outbound(a_raw, init_id, resp_id.peer_id),
        lambda: Noise().secure_inbound(spy, resp_id),
    )
    out.unwrap()
    inn.unwrap()
    # header (2), msg1 body (32), header (2), msg3 body: never an open-ended read
    assert spy.receive_sizes[:3] == [2, 32, 2]
    assert len(spy.receive_sizes) == 4 and spy.receive_sizes[3] is not None


async def test_first_transport_frame_in_same_write_as_msg3_is_not_lost() -> None:
    a_raw, b_raw = memory_raw_pair()
    init_id, resp_id = Identity.generate(), Identity.generate()

    async def manual_initiator() -> None:
        core = NoiseHandshake(init_id, initiator=True, static_private=os.urandom(32), ephemeral_private=os.urandom(32))
        await a_raw.send_all(core.data_to_send())
        while not core.complete:
            core.receive_data(await a_raw.receive_some(core.bytes_wanted()))
        r = core.result
        transport = NoiseTransport(r.send_key, r.recv_key)
        await a_raw.send_all(core.data_to_send() + bytes(transport.encrypt(b"sent together with msg 3")))

    _, inn = await run_both(manual_initiator, lambda: Noise().secure_inbound(b_raw, resp_id))
    conn = inn.unwrap()
    assert await receive_exactly(conn, 24) == b"sent together with msg 3"


async def test_early_muxer_negotiated_over_trio() -> None:
    a, b = await noise_pair(init_muxers=[YAMUX, MPLEX], resp_muxers=[MPLEX, YAMUX])
    assert a.early_muxer == b.early_muxer == YAMUX


async def test_no_common_muxer_fails_both_sides() -> None:
    a_raw, b_raw = memory_raw_pair()
    init_id, resp_id = Identity.generate(), Identity.generate()
    out, inn = await run_both(
        lambda: Noise().secure_outbound(a_raw, init_id, resp_id.peer_id, [YAMUX]),
        lambda: Noise().secure_inbound(b_raw, resp_id, [MPLEX]),
    )
    with pytest.raises(HandshakeError, match="no common muxer"):
        out.unwrap()
    with pytest.raises(HandshakeError, match="closed during"):
        inn.unwrap()


async def test_peer_id_mismatch_over_trio(caplog: pytest.LogCaptureFixture) -> None:
    a_raw, b_raw = memory_raw_pair()
    init_id, resp_id, other = Identity.generate(), Identity.generate(), Identity.generate()
    with caplog.at_level("INFO", logger="mycel.security.noise"):
        out, inn = await run_both(
            lambda: Noise().secure_outbound(a_raw, init_id, other.peer_id),
            lambda: Noise().secure_inbound(b_raw, resp_id),
        )
    with pytest.raises(PeerIdMismatch) as info:
        out.unwrap()
    assert str(other.peer_id) in str(info.value) and str(resp_id.peer_id) in str(info.value)
    with pytest.raises(HandshakeError):
        inn.unwrap()
    assert "Noise handshake with /ip4/127.0.0.1/tcp/2 (outbound) failed" in caplog.text
    with pytest.raises(trio.ClosedResourceError):  # the failed connection was closed
        await a_raw.send_all(b"x")


async def test_handshake_eof_and_garbage() -> None:
    a_raw, b_raw = memory_raw_pair()

    async def send_partial() -> None:
        await a_raw.send_all(b"\x00\x20" + bytes(10))
        await a_raw.send_eof()

    _, inn = await run_both(send_partial, lambda: Noise().secure_inbound(b_raw, Identity.generate()))
    with pytest.raises(HandshakeError, match="closed during"):
        inn.unwrap()

    a_raw, b_raw = memory_raw_pair()
    _, inn = await run_both(
        lambda: a_raw.send_all(b"\xff\xff"),
        lambda: Noise(handshake_max_message=4096).secure_inbound(b_raw, Identity.generate()),
    )
    with pytest.raises(HandshakeError, match="message 1 of 65535 bytes"):
        inn.unwrap()


async def test_half_close() -> None:
    a, b = await noise_pair()
    await a.send_all(b"last words")
    await a.send_eof()
    assert await receive_exactly(b, 10) == b"last words"
    assert await b.receive_some() == b""
    assert await b.receive_some() == b""  # stays at EOF
    await b.send_all(b"reply after half-close")
    assert await receive_exactly(a, 22) == b"reply after half-close"
    await b.send_eof()
    assert await a.receive_some() == b""


async def test_truncated_frame_at_eof_is_decode_error() -> None:
    a_raw, b_raw = memory_raw_pair()
    init_id, resp_id = Identity.generate(), Identity.generate()
    out, inn = await run_both(
        lambda: Noise().secure_outbound(a_raw, init_id, resp_id.peer_id),
        lambda: Noise().secure_inbound(b_raw, resp_id),
    )
    a, b = out.unwrap(), inn.unwrap()
    wire = bytes(a._transport.encrypt(b"will be cut"))
    await a_raw.send_all(wire[:-3])
    await a_raw.send_eof()
    with pytest.raises(DecodeError, match="inside a Noise frame"):
        await b.receive_some()
    with pytest.raises(trio.BrokenResourceError):
        await b.receive_some()


async def test_bad_tag_is_decryption_error() -> None:
    a_raw, b_raw = memory_raw_pair()
    init_id, resp_id = Identity.generate(), Identity.generate()
    out, inn = await run_both(
        lambda: Noise().secure_outbound(a_raw, init_id, resp_id.peer_id),
        lambda: Noise().secure_inbound(b_raw, resp_id),
    )
    a, b = out.unwrap(), inn.unwrap()
    wire = bytearray(a._transport.encrypt(b"tampered in flight"))
    wire[-1] ^= 0x80
    await a_raw.send_all(bytes(wire))
    with pytest.raises(DecryptionError) as info:
        await b.receive_some()
    assert isinstance(info.value, ProtocolViolation)
    with pytest.raises(trio.BrokenResourceError):
        await b.receive_some()


async def test_concurrent_receivers_are_refused() -> None:
    a, b = await noise_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await b.receive_some()
        await a.send_all(b"x")


async def test_static_key_is_fresh_per_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[bytes] = []
    real = noise_protocol_module.x25519_keypair

    def spy(private: bytes | None = None) -> Any:
        key = real(private)
        made.append(key.public_bytes)
        return key

    monkeypatch.setattr(noise_protocol_module, "x25519_keypair", spy)
    noise = Noise(static_key_per_connection=True)
    await noise_pair(noise=noise)
    await noise_pair(noise=noise)
    assert len(made) == 8  # static + ephemeral, per side, per connection
    assert len(set(made)) == 8


async def test_static_key_reused_per_instance_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[bytes] = []
    real = noise_protocol_module.x25519_keypair

    def spy(private: bytes | None = None) -> Any:
        key = real(private)
        made.append(key.public_bytes)
        return key

    monkeypatch.setattr(noise_protocol_module, "x25519_keypair", spy)
    noise = Noise()
    await noise_pair(noise=noise)
    await noise_pair(noise=noise)
    assert len(made) == 5  # one static for the instance, ephemerals fresh per side per connection
    assert len(set(made)) == 5


def test_noise_rejects_bad_limit() -> None:
    with pytest.raises(ValueError):
        Noise(handshake_max_message=70000)


async def _stream_maker() -> tuple[NoiseConnection, NoiseConnection]:
    return await noise_pair()


async def _clogged_stream_maker() -> tuple[NoiseConnection, NoiseConnection]:
    # lockstep streams: send_all blocks until the peer has received everything
    left, right = trio.testing.lockstep_stream_pair()
    a = StreamRawConnection(left, DIALER_ADDR, LISTENER_ADDR, Direction.OUTBOUND)
    b = StreamRawConnection(right, LISTENER_ADDR, DIALER_ADDR, Direction.INBOUND)
    init_id, resp_id = Identity.generate(), Identity.generate()
    out, inn = await run_both(
        lambda: Noise().secure_outbound(a, init_id, resp_id.peer_id), lambda: Noise().secure_inbound(b, resp_id)
    )
    return out.unwrap(), inn.unwrap()


async def test_trio_half_closeable_stream_conformance() -> None:
    await trio.testing.check_half_closeable_stream(_stream_maker, _clogged_stream_maker)


def test_transport_lets_go_of_a_fed_chunk_once_it_is_parsed() -> None:
    """A drained transport holds no reference to the last socket read (up to 1 MiB per idle
    connection before, #12), whether the chunk ended on a frame boundary or inside a frame."""
    import sys

    a, b = transport_pair()
    whole = bytes(a.encrypt(os.urandom(3000)))
    held = sys.getrefcount(whole)
    b.feed(whole)
    assert sys.getrefcount(whole) > held  # kept while unparsed
    assert b.read() is not None and b.read() is None
    assert sys.getrefcount(whole) == held
    wire = bytes(a.encrypt(b"x" * 5000))
    cut = wire[:1000]  # ends inside the frame: its bytes move to the small partial buffer
    held = sys.getrefcount(cut)
    b.feed(cut)
    assert b.read() is None and sys.getrefcount(cut) == held
    b.feed(wire[1000:])
    assert b.read() == b"x" * 5000
