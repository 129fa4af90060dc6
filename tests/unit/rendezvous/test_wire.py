"""The rendezvous protobuf against hand-encoded bytes of the spec's schema (field numbers, enum values), and
the two forms of Register field 2 (a signed peer record, py-libp2p's unsigned PeerInfo)."""

from __future__ import annotations

import pytest
from multiaddr import Multiaddr

from mycel.core.errors import DecodeError
from mycel.core.identity import Identity
from mycel.core.keys import KeyType
from mycel.core.record import seal_peer_record
from mycel.core.varint import encode_uvarint
from mycel.protocols.rendezvous import Status
from mycel.protocols.rendezvous import rendezvous_pb2 as pb
from mycel.protocols.rendezvous.core import decode_registration, legacy_peer_info

ADDR = Multiaddr("/ip4/127.0.0.1/tcp/4001")


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return encode_uvarint(number << 3 | 2) + encode_uvarint(len(payload)) + payload


def varint_field(number: int, value: int) -> bytes:
    return encode_uvarint(number << 3) + encode_uvarint(value)


def test_register_matches_the_spec_encoding() -> None:
    record = b"\x01\x02\x03"
    spec = varint_field(1, 0) + field(2, field(1, b"app") + field(2, record) + varint_field(3, 7200))
    msg = pb.Message.FromString(spec)
    assert msg.type == pb.Message.REGISTER and msg.register.ns == "app"
    assert msg.register.signedPeerRecord == record and msg.register.ttl == 7200
    ours = pb.Message(type=pb.Message.REGISTER, register=pb.Message.Register(ns="app", signedPeerRecord=record, ttl=7200))
    # an explicit REGISTER (type 0) is still sent, and fields come in the spec's order
    assert ours.SerializeToString() == spec


def test_responses_and_statuses_match_the_spec() -> None:
    assert [s.value for s in Status] == [0, 100, 101, 102, 103, 200, 300, 400]
    assert {name: pb.Message.ResponseStatus.Value(name) for name in Status.__members__} == {
        s.name: s.value for s in Status
    }
    assert [pb.Message.MessageType.Value(n) for n in
            ("REGISTER", "REGISTER_RESPONSE", "UNREGISTER", "DISCOVER", "DISCOVER_RESPONSE")] == [0, 1, 2, 3, 4]  # fmt: skip
    spec = varint_field(1, 4) + field(6, field(1, field(1, b"ns")) + field(2, b"c") + varint_field(3, 103) + field(4, b"no"))
    msg = pb.Message.FromString(spec)
    answer = msg.discoverResponse
    assert msg.type == pb.Message.DISCOVER_RESPONSE and [r.ns for r in answer.registrations] == ["ns"]
    assert answer.cookie == b"c" and answer.status == Status.E_INVALID_COOKIE and answer.statusText == "no"
    # a REGISTER without ttl leaves it absent: the point applies its default
    assert not pb.Message.FromString(field(2, field(1, b"app"))).register.HasField("ttl")
    # an unknown message type arrives as its number (open enum), for the server to refuse
    assert pb.Message.FromString(varint_field(1, 9)).type == 9


def test_both_forms_of_field_two() -> None:
    ident = Identity.generate()
    signed = seal_peer_record(ident.private_key, [ADDR], 5).to_bytes()
    legacy = legacy_peer_info(ident.peer_id, [ADDR])
    assert legacy == field(1, ident.peer_id.to_bytes()) + field(2, ADDR.to_bytes())  # py-libp2p's PeerInfo
    assert decode_registration(signed, allow_legacy=False) == (ident.peer_id, (ADDR,), True)
    assert decode_registration(signed, allow_legacy=True) == (ident.peer_id, (ADDR,), True)
    assert decode_registration(legacy, allow_legacy=True) == (ident.peer_id, (ADDR,), False)
    with pytest.raises(DecodeError):
        decode_registration(legacy, allow_legacy=False)  # read as an envelope: not one
    rsa = Identity.generate(KeyType.RSA)  # a sha2-256 peer id
    assert decode_registration(legacy_peer_info(rsa.peer_id, [ADDR]), allow_legacy=True)[0] == rsa.peer_id
    with pytest.raises(DecodeError):  # a non-canonical address
        decode_registration(field(1, ident.peer_id.to_bytes()) + field(2, b"\x04\x7f\x00"), allow_legacy=True)
