"""Hop/stop codecs with hostile fields, framing bounds, and reservation vouchers."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given, settings, strategies as st

from mycel.core.errors import DecodeError, MessageTooLarge, ProtocolViolation
from mycel.core.identity import Identity
from mycel.core.record import Envelope
from mycel.core.varint import encode_uvarint
from mycel.protocols.relay.messages import (
    MAX_ADDRS,
    VOUCHER_DOMAIN,
    InvalidVoucher,
    RelayMessageError,
    decode_hop,
    decode_stop,
    open_voucher,
    read_hop,
    seal_voucher,
)
from mycel.protocols.relay.pb import circuit_pb2

HOP, STOP = circuit_pb2.HopMessage, circuit_pb2.StopMessage
PEER = Identity.generate().peer_id


def test_valid_messages_decode() -> None:
    msg = HOP(type=HOP.CONNECT)
    msg.peer.id = PEER.to_bytes()
    assert decode_hop(msg.SerializeToString()).peer.id == PEER.to_bytes()
    stop = STOP(type=STOP.STATUS, status=circuit_pb2.OK)
    assert decode_stop(stop.SerializeToString()).status == circuit_pb2.OK
    assert decode_hop(HOP(type=HOP.RESERVE).SerializeToString()).type == HOP.RESERVE


def _hop(**fields: object) -> bytes:
    return HOP(**fields).SerializeToString()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"", "without a type"),
        (b"\xff\xff\xff", "malformed"),
        # proto2 closed enums: an unknown value is dropped while parsing, so the field is missing
        (encode_uvarint(1 << 3) + encode_uvarint(7), "without a type"),  # type = 7
        (_hop(type=HOP.CONNECT), "without a peer"),
        (_hop(type=HOP.STATUS), "without a status"),
        (_hop(type=HOP.STATUS) + b"\x28\x07", "without a status"),  # status = 7
    ],
)
def test_hostile_hop_fields(body: bytes, reason: str) -> None:
    with pytest.raises(RelayMessageError, match=reason):
        decode_hop(body)


def test_bad_peer_ids_and_addresses() -> None:
    msg = HOP(type=HOP.CONNECT)
    msg.peer.id = b"\x00\x01garbage"
    with pytest.raises(RelayMessageError, match="invalid peer id"):
        decode_hop(msg.SerializeToString())
    msg.peer.id = PEER.to_bytes()
    msg.peer.addrs.append(b"\x04\x7f\x00")  # a truncated ip4
    with pytest.raises(RelayMessageError, match="multiaddr"):
        decode_hop(msg.SerializeToString())
    msg = HOP(type=HOP.STATUS, status=circuit_pb2.OK)
    for _ in range(MAX_ADDRS + 1):
        msg.reservation.addrs.append(b"\x04\x7f\x00\x00\x01\x06\x10\x00")
    with pytest.raises(RelayMessageError, match="addresses"):
        decode_hop(msg.SerializeToString())
    stop = STOP(type=STOP.CONNECT)
    with pytest.raises(RelayMessageError, match="without a peer"):
        decode_stop(stop.SerializeToString())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_protocol_violations(body: bytes) -> None:
    for decode in (decode_hop, decode_stop):
        try:
            decode(body)
        except ProtocolViolation:
            pass


async def test_oversized_message_refused_before_reading_it() -> None:
    send, recv = trio.testing.memory_stream_pair()
    await send.send_all(encode_uvarint(1 << 20) + b"x" * 100)
    with pytest.raises(MessageTooLarge):
        await read_hop(recv)


async def test_stream_ending_early_is_a_violation() -> None:
    send, recv = trio.testing.memory_stream_pair()
    await send.send_eof()
    with pytest.raises(RelayMessageError, match="ended"):
        await read_hop(recv)


def test_voucher_roundtrip_and_wrong_keys() -> None:
    relay, me, other = Identity.generate(), Identity.generate(), Identity.generate()
    data = seal_voucher(relay.private_key, relay.peer_id, me.peer_id, 1_700_000_000)
    voucher = open_voucher(data, relay.peer_id, me.peer_id)
    assert voucher.relay == relay.peer_id and voucher.peer == me.peer_id and voucher.expiration == 1_700_000_000
    # signed by another key than the relay's
    forged = seal_voucher(other.private_key, relay.peer_id, me.peer_id, 1_700_000_000)
    with pytest.raises(InvalidVoucher, match="another key"):
        open_voucher(forged, relay.peer_id, me.peer_id)
    # a genuine voucher for someone else
    with pytest.raises(InvalidVoucher, match="not for"):
        open_voucher(data, relay.peer_id, other.peer_id)
    # a valid envelope of another domain (a peer record's) does not verify as a voucher
    env = Envelope.seal(relay.private_key, "libp2p-peer-record", b"\x03\x02", b"")
    with pytest.raises(InvalidVoucher):
        open_voucher(env.to_bytes(), relay.peer_id, me.peer_id)
    # right domain, wrong payload type
    env = Envelope.seal(relay.private_key, VOUCHER_DOMAIN, b"\x03\x01", b"")
    with pytest.raises(InvalidVoucher, match="payload type"):
        open_voucher(env.to_bytes(), relay.peer_id, me.peer_id)
    # garbage
    with pytest.raises(DecodeError):
        open_voucher(b"\x01\x02\x03", relay.peer_id, me.peer_id)
