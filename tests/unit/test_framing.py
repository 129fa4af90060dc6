"""The public framing helpers: exact reads, one varint-prefixed message, MessageStream, ProtobufStream."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.core.abc import Direction
from mycel.core.errors import DecodeError, MessageTooLarge, ProtocolViolation, UnexpectedEOF
from mycel.core.framing import (
    MessageStream,
    ProtobufStream,
    parse_message,
    read_exactly,
    receive_message,
    send_message,
)
from mycel.core.varint import encode_uvarint, length_prefixed
from mycel.protocols.identify import identify_pb2
from mycel.protocols.ping import PING_SIZE, PingFailed, ping_stream, serve_ping
from mycel.testing.raw import DIALER_ADDR, LISTENER_ADDR, StreamRawConnection


class Trickle(StreamRawConnection):
    """Wraps a stream; hands out at most ``step`` bytes per read and counts what it handed out."""

    def __init__(self, inner: trio.abc.HalfCloseableStream, step: int = 1) -> None:
        super().__init__(inner, DIALER_ADDR, LISTENER_ADDR, Direction.INBOUND)
        self.step = step
        self.reads = 0
        self.delivered = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        want = self.step if max_bytes is None else min(self.step, max_bytes)
        data = bytes(await self.stream.receive_some(want))
        self.reads += 1
        self.delivered += len(data)
        return data


class Counting(Trickle):
    """Like :class:`Trickle` but never splits: counts the reads a reader needed."""

    def __init__(self, inner: trio.abc.HalfCloseableStream) -> None:
        super().__init__(inner, step=1 << 30)


def pair() -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
    a, b = trio.testing.memory_stream_pair()
    return a, b


# ---- read_exactly -------------------------------------------------------------------------------


async def test_read_exactly_one_byte_at_a_time() -> None:
    a, b = pair()
    trickle = Trickle(b)
    await a.send_all(b"hello world, and more")
    assert await read_exactly(trickle, 11) == b"hello world"
    assert trickle.delivered == 11  # nothing past the 11 bytes was taken
    assert await read_exactly(trickle, 10) == b", and more"


async def test_read_exactly_across_chunk_boundaries() -> None:
    a, b = pair()
    trickle = Trickle(b, step=7)
    payload = bytes(range(256)) * 3
    await a.send_all(payload)
    got = [await read_exactly(trickle, n) for n in (5, 100, 1, 400, 262)]
    assert b"".join(got) == payload
    assert [len(x) for x in got] == [5, 100, 1, 400, 262]


async def test_read_exactly_larger_than_one_read() -> None:
    a, b = pair()
    payload = b"x" * 300_000  # more than READ_CHUNK: several reads
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send_all, payload)
        assert await read_exactly(b, len(payload)) == payload


async def test_read_exactly_zero() -> None:
    a, b = pair()
    await a.send_all(b"x")
    assert await read_exactly(b, 0) == b""
    assert await read_exactly(b, 1) == b"x"
    with pytest.raises(ValueError):
        await read_exactly(b, -1)


async def test_read_exactly_eof() -> None:
    a, b = pair()
    await a.send_eof()
    with pytest.raises(UnexpectedEOF) as clean:
        await read_exactly(b, 4)
    assert (clean.value.received, clean.value.expected) == (0, 4)

    a, b = pair()
    await a.send_all(b"abc")
    await a.send_eof()
    with pytest.raises(UnexpectedEOF) as cut:
        await read_exactly(Trickle(b), 8)
    assert (cut.value.received, cut.value.expected) == (3, 8)
    assert isinstance(cut.value, ProtocolViolation)


# ---- send_message / receive_message --------------------------------------------------------------


async def test_send_message_is_one_send_all() -> None:
    sent: list[bytes] = []

    class Recorder(trio.abc.SendStream):
        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            sent.append(bytes(data))

        async def wait_send_all_might_not_block(self) -> None:
            pass

        async def aclose(self) -> None:
            pass

    await send_message(Recorder(), b"x" * 300)
    await send_message(Recorder(), memoryview(b"view"))
    await send_message(Recorder(), b"")
    assert sent == [encode_uvarint(300) + b"x" * 300, b"\x04view", b"\x00"]


async def test_receive_message_does_not_read_past_the_message() -> None:
    a, b = pair()
    trickle = Trickle(b, step=1 << 20)
    await send_message(a, b"first")
    await send_message(a, b"")
    await a.send_all(b"trailing bytes")
    assert await receive_message(trickle, 100) == b"first"
    assert await receive_message(trickle, 100) == b""
    assert await read_exactly(trickle, 14) == b"trailing bytes"


async def test_receive_message_one_byte_at_a_time() -> None:
    a, b = pair()
    body = bytes(range(200))  # a two-byte prefix
    await send_message(a, body)
    await a.send_all(b"!")
    trickle = Trickle(b)
    assert await receive_message(trickle, 1000) == body
    assert trickle.delivered == 2 + len(body)


async def test_receive_message_clean_eof_is_none() -> None:
    a, b = pair()
    await send_message(a, b"last")
    await a.send_eof()
    assert await receive_message(b, 10) == b"last"
    assert await receive_message(b, 10) is None


async def test_receive_message_eof_inside() -> None:
    a, b = pair()
    await a.send_all(b"\x80")  # a prefix that needs another byte
    await a.send_eof()
    with pytest.raises(UnexpectedEOF) as in_prefix:
        await receive_message(b, 1000)
    assert in_prefix.value.received == 1 and in_prefix.value.expected is None

    a, b = pair()
    await a.send_all(encode_uvarint(10) + b"abcd")
    await a.send_eof()
    with pytest.raises(UnexpectedEOF) as in_body:
        await receive_message(b, 1000)
    assert (in_body.value.received, in_body.value.expected) == (4, 10)


async def test_oversized_prefix_rejected_before_the_body_is_read() -> None:
    a, b = pair()
    counting = Counting(b)
    # only the prefix is ever sent, and the stream stays open: reading any body would hang
    await a.send_all(encode_uvarint(1001))
    with trio.fail_after(5):
        with pytest.raises(MessageTooLarge):
            await receive_message(counting, 1000)
    assert counting.delivered == 2  # the two prefix bytes, nothing more asked for
    await a.send_all(b"after")
    assert await read_exactly(b, 5) == b"after"


async def test_max_size_is_inclusive() -> None:
    a, b = pair()
    await send_message(a, b"12345")
    assert await receive_message(b, 5) == b"12345"


@pytest.mark.parametrize("prefix", [b"\x80\x00", b"\x81\x80\x00", b"\xff" * 9 + b"\x01"])
async def test_bad_varint_prefix(prefix: bytes) -> None:
    a, b = pair()
    await a.send_all(prefix + b"body")
    counting = Counting(b)
    with pytest.raises(DecodeError):
        await receive_message(counting, 1 << 62)
    assert counting.delivered <= 9  # never more than a varint's worth


# ---- MessageStream ------------------------------------------------------------------------------


async def test_message_stream_many_messages_in_one_chunk() -> None:
    a, b = pair()
    bodies = [b"m%d" % i * (i % 7) for i in range(1000)]
    await a.send_all(b"".join(length_prefixed(x) for x in bodies))
    await a.send_eof()
    counting = Counting(b)
    messages = MessageStream(counting, max_size=100)
    got = [body async for body in messages]
    assert got == bodies
    assert counting.reads <= 3  # one chunk (plus the EOF read): not one read per message
    assert await messages.receive() is None  # EOF is sticky


async def test_message_stream_round_trip_both_ways() -> None:
    a, b = pair()
    left = MessageStream(a, max_size=1 << 16)
    right = MessageStream(b, max_size=1 << 16)
    async with trio.open_nursery() as nursery:

        async def echo() -> None:
            async for msg in right:
                await right.send(msg[::-1])
            await b.send_eof()

        nursery.start_soon(echo)
        for i in range(50):
            await left.send(b"ping %d" % i)
            assert await left.receive() == (b"ping %d" % i)[::-1]
        await a.send_eof()
        assert await left.receive() is None
    assert left.stream is a and left.max_size == 1 << 16
    await left.aclose()


async def test_message_stream_trickled_and_bounded() -> None:
    a, b = pair()
    await a.send_all(length_prefixed(b"ok" * 10) + encode_uvarint(33))
    messages = MessageStream(Trickle(b, step=3), max_size=32)
    assert await messages.receive() == b"ok" * 10
    with trio.fail_after(5), pytest.raises(MessageTooLarge):
        await messages.receive()  # the body of 33 bytes was never sent


async def test_message_stream_eof_inside_a_message() -> None:
    a, b = pair()
    await a.send_all(encode_uvarint(10) + b"abc")
    await a.send_eof()
    with pytest.raises(UnexpectedEOF) as info:
        await MessageStream(b, max_size=100).receive()
    assert info.value.received == 4  # the prefix and the three bytes


async def test_message_stream_context_manager_closes() -> None:
    a, b = pair()
    async with MessageStream(a, max_size=10) as messages:
        await messages.send(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await a.send_all(b"y")


# ---- ProtobufStream -----------------------------------------------------------------------------


async def test_protobuf_stream_round_trip() -> None:
    a, b = pair()
    out = ProtobufStream(a, identify_pb2.Identify, max_size=8192)
    inc = ProtobufStream(b, identify_pb2.Identify, max_size=8192)
    sent = [
        identify_pb2.Identify(agentVersion="mycel", protocols=["/ipfs/ping/1.0.0", "/ipfs/id/1.0.0"]),
        identify_pb2.Identify(),
        identify_pb2.Identify(listenAddrs=[b"\x04\x7f\x00\x00\x01"], signedPeerRecord=b"r" * 500),
    ]
    for msg in sent:
        await out.send(msg)
    await a.send_eof()
    got = [msg async for msg in inc]
    assert got == sent
    assert inc.message_type is identify_pb2.Identify and inc.max_size == 8192
    assert inc.stream is b
    assert await inc.receive() is None


async def test_protobuf_stream_bad_protobuf_is_decode_error() -> None:
    a, b = pair()
    await send_message(a, b"\xff\xff\xff")
    with pytest.raises(DecodeError):
        await ProtobufStream(b, identify_pb2.Identify, max_size=100).receive()
    with pytest.raises(DecodeError):
        parse_message(identify_pb2.Identify, b"\x0a\x05ab")


async def test_protobuf_stream_oversize() -> None:
    a, b = pair()
    await ProtobufStream(a, identify_pb2.Identify, max_size=10_000).send(identify_pb2.Identify(agentVersion="x" * 100))
    with pytest.raises(MessageTooLarge):
        await ProtobufStream(b, identify_pb2.Identify, max_size=50).receive()


# ---- properties ---------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(1, 50))
def test_round_trip_any_chunking(bodies: list[bytes], step: int) -> None:
    async def run() -> None:
        a, b = pair()
        for body in bodies:
            await send_message(a, body)
        await a.send_eof()
        one_by_one = Trickle(b, step=step)
        assert [await receive_message(one_by_one, 300) for _ in bodies] == bodies
        assert await receive_message(one_by_one, 300) is None

        a, b = pair()
        await a.send_all(b"".join(length_prefixed(x) for x in bodies))
        await a.send_eof()
        assert [m async for m in MessageStream(Trickle(b, step=step), max_size=300)] == bodies

    trio.run(run)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 9))
def test_garbage_raises_only_protocol_violations(data: bytes, step: int) -> None:
    async def run() -> None:
        for reader in ("one", "stream", "protobuf"):
            a, b = pair()
            await a.send_all(data)
            await a.send_eof()
            stream = Trickle(b, step=step)
            try:
                if reader == "one":
                    while await receive_message(stream, 64) is not None:
                        pass
                elif reader == "stream":
                    async for _ in MessageStream(stream, max_size=64):
                        pass
                else:
                    async for _ in ProtobufStream(stream, identify_pb2.Identify, max_size=64):
                        pass
            except ProtocolViolation:
                pass

    trio.run(run)


# ---- users of read_exactly keep their semantics ---------------------------------------------------


async def test_serve_ping_ends_cleanly_between_pings_and_rejects_a_truncated_payload() -> None:
    a, b = pair()
    await a.send_all(b"p" * PING_SIZE * 2)
    await a.send_eof()
    await serve_ping(b)  # two echoes, then a clean end
    assert await read_exactly(a, PING_SIZE * 2) == b"p" * PING_SIZE * 2

    a, b = pair()
    await a.send_all(b"p" * (PING_SIZE + 5))
    await a.send_eof()
    with pytest.raises(ProtocolViolation, match=r"truncated ping payload \(5 bytes\)"):
        await serve_ping(b)


async def test_ping_stream_fails_when_the_echo_is_cut_short() -> None:
    a, b = pair()
    async with trio.open_nursery() as nursery:

        async def half_echo() -> None:
            await b.send_all((await read_exactly(b, PING_SIZE))[:10])
            await b.send_eof()

        nursery.start_soon(half_echo)
        with pytest.raises(PingFailed, match="stream ended mid-ping"):
            await ping_stream(a)
