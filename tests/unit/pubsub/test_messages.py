"""Pubsub messages: signing and the signature policies, message ids (default, content hash, Ethereum
consensus with its snappy decompressor), and the parameter presets."""

from __future__ import annotations

import hashlib
import struct

import cramjam
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.core.identity import Identity
from mycel.core.keys import KeyType
from mycel.protocols.pubsub import rpc_pb2
from mycel.protocols.pubsub.config import (
    ETHEREUM_MAX_MESSAGE_SIZE,
    GossipsubConfig,
    SignaturePolicy,
    ethereum_consensus,
    go_defaults,
    spec_defaults,
)
from mycel.protocols.pubsub.messages import (
    SIGN_PREFIX,
    InvalidMessage,
    MessageCheck,
    PubsubMessage,
    check_message,
    content_hash_message_id,
    decode_message,
    default_message_id,
    encode_message,
    ethereum_message_id,
    snappy_decompress,
)

ALICE = Identity.from_seed(b"\x01" * 32)


def _signed(data: bytes = b"hi", topic: str = "t", identity: Identity = ALICE, seqno: int = 7) -> PubsubMessage:
    return encode_message(topic, data, key=identity.private_key, author=identity.peer_id, seqno=seqno)


def _roundtrip(msg: PubsubMessage) -> PubsubMessage:
    return decode_message(rpc_pb2.Message.FromString(msg.raw))


def test_signed_message_carries_author_seqno_and_a_verifiable_signature() -> None:
    msg = _roundtrip(_signed())
    assert msg.source == ALICE.peer_id
    assert msg.seqno == (7).to_bytes(8, "big") and msg.seqno_int == 7
    assert msg.key is None  # Ed25519 ids inline the key
    check_message(msg, strict_sign=True)
    # the signature covers "libp2p-pubsub:" + the message without signature and key (spec)
    pb = rpc_pb2.Message.FromString(msg.raw)
    pb.ClearField("signature")
    assert msg.signature is not None
    assert ALICE.private_key.public_key.verify(SIGN_PREFIX + pb.SerializeToString(), msg.signature)


def test_rsa_author_sends_its_key_and_it_verifies() -> None:
    rsa = Identity.generate(KeyType.RSA)
    msg = _roundtrip(_signed(identity=rsa))
    assert msg.key == rsa.private_key.public_key.to_protobuf()
    check_message(msg, strict_sign=True)


def _tampered(msg: PubsubMessage, **fields: object) -> PubsubMessage:
    pb = rpc_pb2.Message.FromString(msg.raw)
    for name, value in fields.items():
        if value is None:
            pb.ClearField(name)
        else:
            setattr(pb, name, value)
    return decode_message(pb)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"signature": None}, MessageCheck.MISSING_SIGNATURE),
        ({"data": b"changed"}, MessageCheck.INVALID_SIGNATURE),
        ({"topic": "other"}, MessageCheck.INVALID_SIGNATURE),
        ({"seqno": b"\x00" * 7 + b"\x08"}, MessageCheck.INVALID_SIGNATURE),
        ({"seqno": b"\x01"}, MessageCheck.INVALID_SIGNATURE),
        ({"signature": b"\x00" * 64}, MessageCheck.INVALID_SIGNATURE),
        ({"seqno": None}, MessageCheck.MISSING_SIGNATURE),
    ],
)
def test_strict_sign_rejects_tampered_or_unsigned_messages(fields: dict[str, object], reason: MessageCheck) -> None:
    msg = _tampered(_signed(), **fields)
    with pytest.raises(InvalidMessage) as err:
        check_message(msg, strict_sign=True)
    assert err.value.reason is reason


def test_strict_sign_rejects_a_key_of_someone_else() -> None:
    other = Identity.from_seed(b"\x02" * 32)
    msg = _tampered(_signed(), key=other.private_key.public_key.to_protobuf())
    with pytest.raises(InvalidMessage) as err:
        check_message(msg, strict_sign=True)
    assert err.value.reason is MessageCheck.INVALID_SIGNATURE


def test_bad_author_bytes_are_an_invalid_message() -> None:
    pb = rpc_pb2.Message(data=b"x", topic="t")
    setattr(pb, "from", b"\xff\xff garbage")
    with pytest.raises(InvalidMessage) as err:
        decode_message(pb)
    assert err.value.reason is MessageCheck.BAD_AUTHOR


def test_strict_no_sign_accepts_bare_messages_and_rejects_any_auth_field() -> None:
    bare = _roundtrip(encode_message("t", b"x", key=None, author=None, seqno=None))
    assert bare.source is None and bare.seqno is None and bare.signature is None
    check_message(bare, strict_sign=False)
    with pytest.raises(InvalidMessage) as err:
        check_message(_roundtrip(_signed()), strict_sign=False)
    assert err.value.reason is MessageCheck.UNEXPECTED_SIGNATURE
    only_from = _tampered(_signed(), signature=None)
    with pytest.raises(InvalidMessage) as err:
        check_message(only_from, strict_sign=False)
    assert err.value.reason is MessageCheck.UNEXPECTED_AUTH_INFO


def test_default_message_id_is_from_then_seqno() -> None:
    msg = _signed(seqno=0x0102030405060708)
    assert default_message_id(msg) == ALICE.peer_id.to_bytes() + bytes.fromhex("0102030405060708")


def test_content_hash_id_ignores_the_author() -> None:
    a = _signed(data=b"same")
    b = _signed(data=b"same", identity=Identity.from_seed(b"\x03" * 32))
    assert content_hash_message_id(a) == content_hash_message_id(b) == hashlib.sha256(b"same").digest()


def _bare(topic: str, data: bytes) -> PubsubMessage:
    return encode_message(topic, data, key=None, author=None, seqno=None)


def test_ethereum_message_id_for_valid_snappy() -> None:
    topic = "/eth2/b5303f2a/beacon_block/ssz_snappy"
    payload = b"\x00" * 100 + b"block body" * 20
    compressed = bytes(cramjam.snappy.compress_raw(payload))
    expected = hashlib.sha256(
        b"\x01\x00\x00\x00" + struct.pack("<Q", len(topic)) + topic.encode() + payload
    ).digest()[:20]
    assert ethereum_message_id(_bare(topic, compressed)) == expected
    assert len(expected) == 20


def test_ethereum_message_id_for_invalid_snappy_uses_the_raw_data() -> None:
    topic = "/eth2/b5303f2a/beacon_attestation_1/ssz_snappy"
    junk = b"\xff\xff\xff\xff\x0f not snappy"
    expected = hashlib.sha256(b"\x00\x00\x00\x00" + struct.pack("<Q", len(topic)) + topic.encode() + junk).digest()[:20]
    assert ethereum_message_id(_bare(topic, junk)) == expected


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4000), st.integers(min_value=1, max_value=64))
def test_snappy_decompress_matches_an_independent_compressor(data: bytes, repeat: int) -> None:
    payload = data * (repeat if len(data) < 64 else 1)  # repetition exercises overlapping copies
    compressed = bytes(cramjam.snappy.compress_raw(payload))
    assert snappy_decompress(compressed, max_size=1 << 20) == payload


@pytest.mark.parametrize(
    "block",
    [
        b"",  # no preamble
        b"\x05\x10hel",  # literal shorter than announced
        b"\x05\x01\x00",  # copy before any output
        b"\x02\x08abc",  # literal longer than announced
        b"\x80\x80\x80\x80\x80\x80\x01",  # preamble too long
        b"\x0a\x08abc\x09\x03",  # copy with 1-byte offset 3, len 6: output 9 != 10 announced
    ],
)
def test_snappy_decompress_refuses_malformed_blocks(block: bytes) -> None:
    with pytest.raises(ValueError):
        snappy_decompress(block, max_size=1 << 20)


def test_snappy_decompress_refuses_an_announced_size_above_the_limit_before_work() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        snappy_decompress(b"\xff\xff\xff\x7f", max_size=10 * 1024 * 1024)


def test_presets() -> None:
    spec = spec_defaults()
    assert (spec.d, spec.d_lo, spec.d_hi, spec.history_length, spec.history_gossip, spec.seen_ttl) == (6, 4, 12, 5, 3, 120.0)
    go = go_defaults()
    assert go.flood_publish is False and GossipsubConfig().flood_publish is True  # go opts in; rust and js default on
    assert (go.d, go.d_lo, go.d_hi, go.d_score, go.d_out, go.d_lazy, go.gossip_factor) == (6, 5, 12, 4, 2, 6, 0.25)
    assert (go.heartbeat_interval, go.heartbeat_initial_delay, go.fanout_ttl, go.prune_backoff, go.unsubscribe_backoff) == (
        1.0,
        0.1,
        60.0,
        60.0,
        10.0,
    )
    assert (go.max_ihave_length, go.max_ihave_messages, go.gossip_retransmission, go.iwant_followup_time) == (5000, 10, 3, 3.0)
    assert (go.idontwant_message_threshold, go.max_message_size) == (1024, 1 << 20)
    eth = ethereum_consensus()
    assert (eth.d, eth.d_lo, eth.d_hi, eth.d_lazy, eth.heartbeat_interval, eth.history_length, eth.seen_ttl) == (
        8,
        6,
        12,
        6,
        0.7,
        6,
        768.0,
    )
    assert eth.signature_policy is SignaturePolicy.STRICT_NO_SIGN
    assert eth.message_id_fn is ethereum_message_id
    assert eth.max_message_size == ETHEREUM_MAX_MESSAGE_SIZE == 12_234_442
    th = eth.score_thresholds
    assert (th.gossip_threshold, th.publish_threshold, th.graylist_threshold, th.accept_px_threshold) == (-4000, -8000, -16000, 100)
    assert th.opportunistic_graft_threshold == 5


@pytest.mark.parametrize(
    "changes",
    [
        {"d": 3, "d_lo": 4},
        {"d_hi": 5},
        {"d_out": 4},  # go: d_out < d_lo and <= d / 2
        {"d_score": 7},
        {"history_gossip": 6},
        {"heartbeat_interval": 0},
        {"gossip_factor": 1.5},
        {"max_message_size": 0},
        {"signature_policy": SignaturePolicy.STRICT_NO_SIGN},  # without a message_id_fn
    ],
)
def test_invalid_configs_are_refused_with_the_reason(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="GossipsubConfig"):
        GossipsubConfig(**changes)  # type: ignore[arg-type]
