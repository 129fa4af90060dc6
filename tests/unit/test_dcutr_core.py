"""DCUtR's sans-IO exchange and message codec: roles, RTT timing, attempts, size caps, hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multiaddr import Multiaddr

from mycel.core.errors import ProtocolViolation
from mycel.core.varint import encode_uvarint
from mycel.protocols.dcutr import MAX_MESSAGE_SIZE, DCUtRError, DCUtRMessageError, Initiator, Responder
from mycel.protocols.dcutr.messages import CONNECT, MAX_ADDRS, SYNC, decode, encode
from mycel.protocols.dcutr.pb import holepunch_pb2

A = [Multiaddr("/ip4/198.18.0.2/tcp/4001"), Multiaddr("/ip4/198.18.0.2/udp/4001/quic-v1")]
B = [Multiaddr("/ip4/198.18.0.3/tcp/4002")]


def test_exchange_times_the_punch_at_half_the_rtt() -> None:
    b, a = Initiator(B), Responder(A)
    connect = b.connect(now=10.0)
    reply = a.on_connect(connect)
    assert a.remote_addrs == tuple(B)
    plan = b.on_connect(reply, now=10.08)
    assert plan.remote_addrs == tuple(A)
    assert plan.rtt == pytest.approx(0.08)
    assert plan.punch_at == pytest.approx(10.12)  # SYNC leaves at 10.08, A gets it ~RTT/2 later
    assert a.on_sync(plan.sync) == tuple(B)


def test_three_attempts_then_exhausted() -> None:
    b = Initiator(B)
    for _ in range(3):
        b.connect(now=0.0)
    assert b.exhausted and b.attempts == 3
    with pytest.raises(DCUtRError):
        b.connect(now=1.0)


def test_no_address_to_offer_is_an_error_not_a_message() -> None:
    with pytest.raises(DCUtRError):
        Initiator([]).connect(now=0.0)
    with pytest.raises(DCUtRError):
        Responder([]).on_connect(encode(CONNECT, B))


def test_out_of_order_and_wrong_types_are_refused() -> None:
    a = Responder(A)
    with pytest.raises(DCUtRMessageError):
        a.on_sync(encode(SYNC))  # SYNC before CONNECT
    with pytest.raises(DCUtRMessageError):
        a.on_connect(encode(SYNC))  # a SYNC where CONNECT belongs
    a.on_connect(encode(CONNECT, B))
    with pytest.raises(DCUtRMessageError):
        a.on_connect(encode(CONNECT, B))  # twice
    with pytest.raises(DCUtRMessageError):
        Initiator(B).on_connect(encode(CONNECT, A), now=0.0)  # an answer to nothing


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xff\xff",  # not protobuf
        holepunch_pb2.HolePunch().SerializePartialToString(),  # the required type missing
        b"\x08\x07",  # an unknown type (7)
        b"\x12\x03abc",  # addresses but no type
        b"x" * (MAX_MESSAGE_SIZE + 1),  # too large
    ],
)
def test_malformed_messages_get_a_typed_error(body: bytes) -> None:
    with pytest.raises(DCUtRMessageError) as info:
        decode(body, CONNECT)
    assert isinstance(info.value, ProtocolViolation)  # the stream is reset, nothing else


def test_bad_and_relay_addresses_are_skipped_and_capped() -> None:
    msg = holepunch_pb2.HolePunch(type=CONNECT)
    msg.ObsAddrs.append(b"\x00junk")
    msg.ObsAddrs.append(Multiaddr("/ip4/198.18.0.1/tcp/1/p2p-circuit").to_bytes())
    msg.ObsAddrs.extend(Multiaddr(f"/ip4/198.18.0.9/tcp/{1000 + i}").to_bytes() for i in range(MAX_ADDRS + 5))
    addrs = decode(msg.SerializeToString(), CONNECT)
    assert len(addrs) == MAX_ADDRS
    assert all("p2p-circuit" not in str(a) for a in addrs)
    # a CONNECT with nothing usable is refused by the core
    only_relay = encode(CONNECT, [Multiaddr("/ip4/198.18.0.1/tcp/1/p2p-circuit")])
    with pytest.raises(DCUtRError):
        Responder(A).on_connect(only_relay)


async def test_reader_refuses_an_oversized_prefix_before_reading_the_body() -> None:
    import trio.testing

    from mycel.protocols.dcutr.messages import read

    send, receive = trio.testing.memory_stream_pair()
    await send.send_all(encode_uvarint(MAX_MESSAGE_SIZE + 1))
    with pytest.raises(DCUtRMessageError):
        await read(receive)
    await send.send_all(b"")
    await send.aclose()
    with pytest.raises(DCUtRMessageError):  # ended before any message
        await read(receive)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=MAX_MESSAGE_SIZE + 8))
def test_any_bytes_give_addresses_or_a_typed_error(body: bytes) -> None:
    for kind in (CONNECT, SYNC):
        try:
            addrs = decode(body, kind)
        except DCUtRMessageError:
            continue
        assert len(addrs) <= MAX_ADDRS
        assert all("p2p-circuit" not in str(a) for a in addrs)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=40), st.sampled_from([CONNECT, SYNC, 7]))
def test_responder_on_mutated_connects(raw_addrs: list[bytes], kind: int) -> None:
    msg = holepunch_pb2.HolePunch(type=kind) if kind in (CONNECT, SYNC) else holepunch_pb2.HolePunch()  # type: ignore[arg-type]
    msg.ObsAddrs.extend(raw_addrs)
    body = msg.SerializePartialToString() if kind == 7 else msg.SerializeToString()
    if kind == 7:
        body += b"\x08\x07"  # an unknown type number
    try:
        Responder(A).on_connect(body)
    except DCUtRError:  # DCUtRMessageError is one too
        pass
