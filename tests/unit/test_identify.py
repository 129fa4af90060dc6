"""Identify message reading: merging split messages, bounds, garbage."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.core.errors import DecodeError, MessageTooLarge, ProtocolViolation
from mycel.core.varint import encode_uvarint, length_prefixed
from mycel.protocols.identify import MAX_MESSAGE_SIZE, MAX_MESSAGES, read_identify
from mycel.protocols.identify import identify_pb2


async def feed(data: bytes) -> identify_pb2.Identify:
    send, recv = trio.testing.memory_stream_pair()
    await send.send_all(data)
    await send.send_eof()
    return await read_identify(recv)


async def test_go_style_split_messages_are_merged() -> None:
    first = identify_pb2.Identify(agentVersion="go-libp2p/0.x", protocols=["/a", "/b"])
    second = identify_pb2.Identify(protocols=["/c"], signedPeerRecord=b"rec")
    msg = await feed(length_prefixed(first.SerializeToString()) + length_prefixed(second.SerializeToString()))
    assert msg.agentVersion == "go-libp2p/0.x"
    assert list(msg.protocols) == ["/a", "/b", "/c"]
    assert msg.signedPeerRecord == b"rec"


async def test_too_many_messages() -> None:
    one = length_prefixed(identify_pb2.Identify(protocols=["/x"]).SerializeToString())
    with pytest.raises(MessageTooLarge):
        await feed(one * (MAX_MESSAGES + 1))


async def test_oversized_message_rejected_from_its_prefix() -> None:
    with pytest.raises(MessageTooLarge):
        await feed(encode_uvarint(MAX_MESSAGE_SIZE + 1) + b"\x00" * 10)


async def test_truncated_and_empty() -> None:
    with pytest.raises(DecodeError):
        await feed(encode_uvarint(20) + b"\x0a\x03abc")
    with pytest.raises(DecodeError):
        await feed(b"")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_read_identify(data: bytes) -> None:
    async def run() -> None:
        try:
            await feed(data)
        except ProtocolViolation:
            pass

    trio.run(run)
