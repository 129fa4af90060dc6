"""Signed envelopes and peer records: vectors from go/nim, sealing, verification, fuzzing."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multiaddr import Multiaddr

from mycel.core.errors import DecodeError, InvalidSignature
from mycel.core.keys import KeyType, PrivateKey, generate_private_key, private_key_from_protobuf
from mycel.core.pb import peer_record_pb2, signed_envelope_pb2
from mycel.core.peer_id import PeerId
from mycel.core.record import (
    PEER_RECORD_DOMAIN,
    PEER_RECORD_PAYLOAD_TYPE,
    Envelope,
    PeerRecord,
    open_peer_record,
    seal_peer_record,
)

VECTORS: dict[str, Any] = json.loads(
    (pathlib.Path(__file__).resolve().parents[3] / "shared" / "vectors" / "vectors.json").read_text()
)
ENVELOPES = VECTORS["signed_envelopes"]["vectors"]
TESTING_ENVELOPE = ENVELOPES[0]
PEER_RECORD_ENVELOPE = ENVELOPES[1]
UNSIGNED = VECTORS["peer_record_unsigned"]
ADDRS = (Multiaddr("/ip4/1.2.3.4/tcp/4001"), Multiaddr("/ip6/::1/udp/4001/quic-v1"))


def keys() -> list[PrivateKey]:
    return [
        generate_private_key(KeyType.Ed25519),
        generate_private_key(KeyType.Secp256k1),
        generate_private_key(KeyType.ECDSA),
        private_key_from_protobuf(bytes.fromhex(VECTORS["private_keys_from_specs"]["vectors"]["rsa private key"])),
    ]


# --- vectors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", ENVELOPES, ids=lambda v: v["domain"])
def test_envelope_vectors_open_and_re_encode(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["envelope_hex"])
    env = Envelope.open(raw, vector["domain"])
    assert env.to_bytes() == raw
    assert env.verify(vector["domain"])
    if "payload_utf8" in vector:
        assert env.payload == vector["payload_utf8"].encode()
        assert env.payload_type == vector["payload_type_utf8"].encode()
    else:
        assert env.payload_type == bytes.fromhex(vector["payload_type_hex"])


@pytest.mark.parametrize("vector", ENVELOPES, ids=lambda v: v["domain"])
def test_envelope_vector_wrong_domain_rejected(vector: dict[str, Any]) -> None:
    with pytest.raises(InvalidSignature):
        Envelope.open(bytes.fromhex(vector["envelope_hex"]), vector["domain"] + "x")


def test_envelope_vector_tampered_payload_rejected() -> None:
    raw = bytes.fromhex(TESTING_ENVELOPE["envelope_hex"])
    tampered = raw.replace(b"hello world!", b"hello world?")
    assert tampered != raw
    with pytest.raises(InvalidSignature):
        Envelope.open(tampered, TESTING_ENVELOPE["domain"])


def test_signed_peer_record_vector() -> None:
    env, record = open_peer_record(bytes.fromhex(PEER_RECORD_ENVELOPE["envelope_hex"]))
    assert env.payload_type == PEER_RECORD_PAYLOAD_TYPE
    assert record.seq == PEER_RECORD_ENVELOPE["peer_record"]["seq"]
    assert [str(a) for a in record.addrs] == PEER_RECORD_ENVELOPE["peer_record"]["addrs"]
    assert record.peer_id.matches_public_key(env.public_key)
    assert record.to_bytes() == env.payload


def test_unsigned_peer_record_vector() -> None:
    raw = bytes.fromhex(UNSIGNED["record_hex"])
    record = PeerRecord.from_bytes(raw)
    assert str(record.peer_id) == UNSIGNED["peer_id"]
    assert record.seq == UNSIGNED["seq"]
    assert [str(a) for a in record.addrs] == UNSIGNED["addrs"]
    assert record.to_bytes() == raw


# --- sealing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", keys(), ids=lambda k: k.key_type.name)
def test_seal_and_open_peer_record(key: PrivateKey) -> None:
    env = seal_peer_record(key, ADDRS, seq=42)
    got_env, record = open_peer_record(env.to_bytes())
    assert got_env == env
    assert record == PeerRecord(PeerId.from_public_key(key.public_key), 42, ADDRS)
    assert record.addrs == ADDRS


def test_envelope_seal_round_trip_and_fields() -> None:
    key = generate_private_key()
    env = Envelope.seal(key, "my-domain", b"\x99\x01", b"payload")
    assert env.public_key == key.public_key
    msg = signed_envelope_pb2.Envelope()
    msg.ParseFromString(env.to_bytes())
    assert msg.public_key == key.public_key.to_protobuf()
    assert (msg.payload_type, msg.payload, msg.signature) == (b"\x99\x01", b"payload", env.signature)
    assert Envelope.open(env.to_bytes(), "my-domain") == env
    with pytest.raises(InvalidSignature):
        Envelope.open(env.to_bytes(), "other-domain")


def test_signature_covers_payload_type() -> None:
    key = generate_private_key()
    env = Envelope.seal(key, "d", b"\x03\x01", b"payload")
    swapped = Envelope(env.public_key, b"\x03\x02", env.payload, env.signature)
    with pytest.raises(InvalidSignature):
        Envelope.open(swapped.to_bytes(), "d")


def test_default_seq_is_time_based_and_increasing() -> None:
    key = generate_private_key()
    first = open_peer_record(seal_peer_record(key, ADDRS).to_bytes())[1].seq
    second = open_peer_record(seal_peer_record(key, ADDRS).to_bytes())[1].seq
    assert first > 1_600_000_000 * 10**9
    assert second >= first


def test_peer_record_signed_by_other_key_rejected() -> None:
    victim, attacker = generate_private_key(), generate_private_key()
    record = PeerRecord(PeerId.from_public_key(victim.public_key), 1, ADDRS)
    env = Envelope.seal(attacker, PEER_RECORD_DOMAIN, PEER_RECORD_PAYLOAD_TYPE, record.to_bytes())
    with pytest.raises(InvalidSignature, match="another key"):
        open_peer_record(env.to_bytes())


def test_peer_record_wrong_payload_type_rejected() -> None:
    key = generate_private_key()
    record = PeerRecord(PeerId.from_public_key(key.public_key), 1, ADDRS)
    env = Envelope.seal(key, PEER_RECORD_DOMAIN, b"\x03\x02", record.to_bytes())
    with pytest.raises(DecodeError, match="not a peer record"):
        open_peer_record(env.to_bytes())


def test_peer_record_seq_must_be_uint64() -> None:
    pid = PeerId.from_public_key(generate_private_key().public_key)
    with pytest.raises(ValueError):
        PeerRecord(pid, -1, ())
    with pytest.raises(ValueError):
        PeerRecord(pid, 1 << 64, ())
    assert PeerRecord(pid, (1 << 64) - 1, ()).seq == (1 << 64) - 1


def test_peer_record_list_addrs_become_tuple() -> None:
    pid = PeerId.from_public_key(generate_private_key().public_key)
    record = PeerRecord(pid, 1, list(ADDRS))  # type: ignore[arg-type]
    assert record.addrs == ADDRS
    hash(record)


@pytest.mark.parametrize(
    ("addr_bytes", "message"),
    [(b"", "empty multiaddr"), (b"\x04\x01\x02", "invalid multiaddr"), (b"\xff\xff\x03", "invalid multiaddr")],
)
def test_peer_record_bad_multiaddr_rejected(addr_bytes: bytes, message: str) -> None:
    pid = PeerId.from_public_key(generate_private_key().public_key)
    msg = peer_record_pb2.PeerRecord(peer_id=pid.to_bytes(), seq=1)
    msg.addresses.add(multiaddr=addr_bytes)
    with pytest.raises(DecodeError, match=message):
        PeerRecord.from_bytes(msg.SerializeToString())


def test_envelope_without_key_rejected() -> None:
    msg = signed_envelope_pb2.Envelope(payload_type=b"\x03\x01", payload=b"x", signature=b"s")
    with pytest.raises(DecodeError, match="no public key"):
        Envelope.open(msg.SerializeToString(), PEER_RECORD_DOMAIN)


# --- fuzzing ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_envelope_open(data: bytes) -> None:
    try:
        Envelope.open(data, PEER_RECORD_DOMAIN)
    except (DecodeError, InvalidSignature):
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_open_peer_record(data: bytes) -> None:
    try:
        open_peer_record(data)
    except (DecodeError, InvalidSignature):
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_peer_record_from_bytes(data: bytes) -> None:
    try:
        record = PeerRecord.from_bytes(data)
    except DecodeError:
        return
    assert PeerRecord.from_bytes(record.to_bytes()) == record


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_mutated_signed_peer_record(data: st.DataObject) -> None:
    raw = bytearray(bytes.fromhex(PEER_RECORD_ENVELOPE["envelope_hex"]))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        pos = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        raw[pos] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(raw)))
    try:
        env, record = open_peer_record(bytes(raw[:cut]) + bytes(raw[cut:]))
    except (DecodeError, InvalidSignature):
        return
    # Whatever still opens must still be a record signed by its own peer.
    assert record.peer_id.matches_public_key(env.public_key)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_fuzz_peer_record_addresses(addr: bytes, seq: int) -> None:
    pid = PeerId.from_public_key(generate_private_key().public_key)
    msg = peer_record_pb2.PeerRecord(peer_id=pid.to_bytes(), seq=seq)
    msg.addresses.add(multiaddr=addr)
    try:
        record = PeerRecord.from_bytes(msg.SerializeToString())
    except DecodeError:
        return
    assert record.seq == seq
    assert record.addrs[0].to_bytes() == addr
