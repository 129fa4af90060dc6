"""The go adapter's own identify decoding and signed-peer-record check."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st
from multiaddr import Multiaddr

from interop.p2pd import interop_identify_pb2 as pb
from interop.p2pd.identify_check import (
    PEER_RECORD_DOMAIN,
    check_peer_record,
    decode_identify_stream,
    peer_id_from_public_key,
)
from mycel.core.errors import DecodeError, MessageTooLarge
from mycel.core.varint import encode_uvarint, length_prefixed

# vectors.json signed_envelopes[1]: a go-libp2p record.Seal peer record (verified independently)
GO_ENVELOPE = bytes.fromhex(
    "0a240801122079b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664120203011a500a26"
    "00240801122079b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad0496641088ef99abc5e88c"
    "91111a0d0a0b047f00000191020fa1cd031a0d0a0b04c0a8000a91022328cd032a40d85c6ac219c546773786025106"
    "fb199fa63b456e808af9cdbed155efd4dc1114cf7eb912a0b1cc2adfcb129f4fe54bdc47fb03987733be3107fed37c"
    "6495e30a"
)
GO_PEER = bytes.fromhex("00240801122079b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664")


def _seal(key: ed25519.Ed25519PrivateKey, record: pb.PeerRecord) -> bytes:
    public = pb.PublicKey(Type=1, Data=key.public_key().public_bytes_raw())
    payload = record.SerializeToString()
    unsigned = b"".join(length_prefixed(p) for p in (PEER_RECORD_DOMAIN, b"\x03\x01", payload))
    envelope = pb.Envelope(public_key=public, payload_type=b"\x03\x01", payload=payload, signature=key.sign(unsigned))
    return bytes(envelope.SerializeToString())


def _peer_of(key: ed25519.Ed25519PrivateKey) -> bytes:
    public = pb.PublicKey(Type=1, Data=key.public_key().public_bytes_raw())
    return peer_id_from_public_key(bytes(public.SerializeToString()))


def test_go_sealed_record_verifies() -> None:
    verdict, addrs = check_peer_record(GO_ENVELOPE, GO_PEER)
    assert verdict == "verified"
    assert addrs == ["/ip4/127.0.0.1/udp/4001/quic-v1", "/ip4/192.168.0.10/udp/9000/quic-v1"]


def test_record_for_another_peer_is_rejected() -> None:
    verdict, _ = check_peer_record(GO_ENVELOPE, GO_PEER[:-1] + b"\x00")
    assert verdict.startswith("invalid")


def test_tampered_payload_fails_signature() -> None:
    env = pb.Envelope.FromString(GO_ENVELOPE)
    env.payload = env.payload[:-1] + bytes([env.payload[-1] ^ 1])
    verdict, _ = check_peer_record(env.SerializeToString(), GO_PEER)
    assert verdict == "invalid: signature does not verify"


def test_record_signed_by_someone_else_is_rejected() -> None:
    signer, claimed = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    record = pb.PeerRecord(peer_id=_peer_of(claimed), seq=1)
    verdict, _ = check_peer_record(_seal(signer, record), _peer_of(claimed))
    assert verdict.startswith("invalid")
    good, _ = check_peer_record(_seal(claimed, record), _peer_of(claimed))
    assert good == "verified"


def test_identify_split_over_messages_is_merged() -> None:
    first = pb.Identify(agentVersion="go/1", protocols=["/ipfs/ping/1.0.0"])
    second = pb.Identify(protocols=["/echo/1.0.0"], listenAddrs=[Multiaddr("/ip4/127.0.0.1/tcp/1").to_bytes()])
    data = length_prefixed(first.SerializeToString()) + length_prefixed(second.SerializeToString())
    info = decode_identify_stream(data)
    assert info.agent_version == "go/1"
    assert info.protocols == ["/ipfs/ping/1.0.0", "/echo/1.0.0"]
    assert info.listen_addrs == ["/ip4/127.0.0.1/tcp/1"]


def test_identify_limits() -> None:
    with pytest.raises(DecodeError):
        decode_identify_stream(b"")
    with pytest.raises(DecodeError):
        decode_identify_stream(length_prefixed(b"") + b"\x05ab")  # truncated second message
    with pytest.raises(MessageTooLarge):
        decode_identify_stream(encode_uvarint(8 * 1024 + 1))
    with pytest.raises(MessageTooLarge):
        decode_identify_stream(length_prefixed(b"") * 11)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_identify_stream_raises_only_typed_errors(data: bytes) -> None:
    try:
        decode_identify_stream(data)
    except (DecodeError, MessageTooLarge):
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.binary(max_size=40))
def test_fuzz_peer_record_check_never_raises(data: bytes, peer: bytes) -> None:
    verdict, addrs = check_peer_record(data, peer)
    assert verdict != "verified" or addrs is not None
