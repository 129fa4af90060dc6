"""AutoNAT message codecs: round trips, and hostile or malformed fields refused with a typed error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multiaddr import Multiaddr

from mycel.core.errors import ProtocolViolation
from mycel.core.identity import Identity
from mycel.protocols.autonat.messages import (
    MAX_ADDRS,
    AutoNATMessageError,
    DialStatus,
    V1Status,
    V2DataRequest,
    V2Request,
    V2Response,
    V2Status,
    decode_v1_request,
    decode_v1_response,
    decode_v2_dial_back,
    decode_v2_message,
    encode_v1_request,
    encode_v1_response,
    encode_v2_data,
    encode_v2_data_request,
    encode_v2_dial_back,
    encode_v2_request,
    encode_v2_response,
)
from mycel.protocols.autonat.pb import autonat_v1_pb2, autonat_v2_pb2

PEER = Identity.generate().peer_id
ADDRS = [Multiaddr("/ip4/8.8.8.8/tcp/4001"), Multiaddr("/ip4/8.8.8.8/udp/4001/quic-v1")]


def test_v1_round_trips() -> None:
    req = decode_v1_request(encode_v1_request(PEER, ADDRS))
    assert req.peer == PEER and list(req.addrs) == ADDRS
    resp = decode_v1_response(encode_v1_response(V1Status.OK, "fine", ADDRS[0]))
    assert resp.status is V1Status.OK and resp.text == "fine" and resp.addr == ADDRS[0]
    assert decode_v1_response(encode_v1_response(V1Status.E_DIAL_ERROR, "x" * 10_000)).text == "x" * 256


def test_v1_hostile_requests() -> None:
    Msg = autonat_v1_pb2.Message
    cases = [
        b"\xff\xff\xff",  # not protobuf
        Msg(type=Msg.DIAL_RESPONSE).SerializeToString(),  # wrong type
        Msg(type=Msg.DIAL).SerializeToString(),  # no dial
        Msg(type=Msg.DIAL, dial=Msg.Dial(peer=Msg.PeerInfo())).SerializeToString(),  # no id
        Msg(type=Msg.DIAL, dial=Msg.Dial(peer=Msg.PeerInfo(id=b"\x00\x01nonsense"))).SerializeToString(),
    ]
    for body in cases:
        with pytest.raises(AutoNATMessageError):
            decode_v1_request(body)
    assert issubclass(AutoNATMessageError, ProtocolViolation)


def test_v1_bad_addresses_are_skipped_and_bounded() -> None:
    Msg = autonat_v1_pb2.Message
    raw = [b"\x99\x99garbage"] + [Multiaddr(f"/ip4/8.8.8.8/tcp/{p}").to_bytes() for p in range(1, 500)]
    body = Msg(type=Msg.DIAL, dial=Msg.Dial(peer=Msg.PeerInfo(id=PEER.to_bytes(), addrs=raw))).SerializeToString()
    req = decode_v1_request(body)
    assert len(req.addrs) == MAX_ADDRS - 1  # the first MAX_ADDRS entries read, the junk one skipped


def test_v1_hostile_responses() -> None:
    Msg = autonat_v1_pb2.Message
    unknown_status = Msg(type=Msg.DIAL_RESPONSE)
    unknown_status.dialResponse.statusText = "?"
    with pytest.raises(AutoNATMessageError):
        decode_v1_response(unknown_status.SerializeToString())  # no status
    raw = bytearray(encode_v1_response(V1Status.OK))
    with pytest.raises(AutoNATMessageError):
        decode_v1_response(encode_v1_request(PEER, ADDRS))  # a DIAL, not a response
    bad = Msg(type=Msg.DIAL_RESPONSE)
    bad.dialResponse.ParseFromString(b"\x08\x07")  # status 7: not in the enum (proto2 keeps it unknown)
    with pytest.raises(AutoNATMessageError):
        decode_v1_response(bad.SerializeToString())
    assert raw


def test_v2_round_trips() -> None:
    req = decode_v2_message(encode_v2_request(ADDRS, 2**64 - 1))
    assert isinstance(req, V2Request) and list(req.addrs) == ADDRS and req.nonce == 2**64 - 1
    data_req = decode_v2_message(encode_v2_data_request(1, 30_000))
    assert data_req == V2DataRequest(1, 30_000)
    assert decode_v2_message(encode_v2_data(b"\x00" * 4096)) == b"\x00" * 4096
    resp = decode_v2_message(encode_v2_response(V2Status.OK, 1, DialStatus.OK))
    assert resp == V2Response(V2Status.OK, 1, DialStatus.OK)
    assert decode_v2_dial_back(encode_v2_dial_back(12345)) == 12345


def test_v2_hostile_messages() -> None:
    with pytest.raises(AutoNATMessageError):
        decode_v2_message(b"")  # no oneof set
    with pytest.raises(AutoNATMessageError):
        decode_v2_message(b"\x0a\xff")  # truncated
    too_many = autonat_v2_pb2.Message(
        dialRequest=autonat_v2_pb2.DialRequest(addrs=[ADDRS[0].to_bytes()] * (MAX_ADDRS + 1), nonce=1)
    )
    with pytest.raises(AutoNATMessageError, match="addresses"):
        decode_v2_message(too_many.SerializeToString())
    big = autonat_v2_pb2.Message(dialDataResponse=autonat_v2_pb2.DialDataResponse(data=b"x" * 4097))
    with pytest.raises(AutoNATMessageError, match="4096"):
        decode_v2_message(big.SerializeToString())
    odd = autonat_v2_pb2.Message(dialResponse=autonat_v2_pb2.DialResponse(status=7))  # type: ignore[arg-type]
    with pytest.raises(AutoNATMessageError, match="unknown status"):
        decode_v2_message(odd.SerializeToString())
    junk_addr = autonat_v2_pb2.Message(dialRequest=autonat_v2_pb2.DialRequest(addrs=[b"\xff\xff", ADDRS[0].to_bytes()]))
    req = decode_v2_message(junk_addr.SerializeToString())
    assert isinstance(req, V2Request) and req.addrs == (None, ADDRS[0])  # indexes kept


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_decoders_never_raise_anything_but_typed_errors(data: bytes) -> None:
    for decode in (decode_v1_request, decode_v1_response, decode_v2_message, decode_v2_dial_back):
        try:
            decode(data)
        except AutoNATMessageError:
            pass
