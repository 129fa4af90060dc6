import functools
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.core.errors import DecodeError, MessageTooLarge, NegotiationError, ProtocolNotSupported
from mycel.core.varint import encode_uvarint
from mycel.multistream.core import (
    HEADER,
    MAX_ATTEMPTS,
    DialerCore,
    ListenerCore,
    MessageDecoder,
    encode_ls_response,
    encode_message,
)
from mycel.multistream.negotiate import select_inbound, select_outbound


def test_vectors(vectors: dict[str, Any]) -> None:
    for text, hex_ in vectors["multistream_select"]["vectors"]:
        assert encode_message(text.replace("\\n", "")).hex() == hex_


def test_ls_response_shape() -> None:
    resp = encode_ls_response(["/a", "/b"])
    dec = MessageDecoder()
    dec.feed(resp)
    # one outer message whose body is the inner messages followed by a final newline
    inner = dec.next_message()
    assert inner is not None and inner.encode().endswith(b"\n")


def test_dialer_falls_through_na_then_accepts() -> None:
    core = DialerCore(["/x", "/y"])
    assert core.initial_bytes() == HEADER + encode_message("/x")
    core.receive("/multistream/1.0.0")
    out = core.receive("na")
    assert out.send == encode_message("/y")
    assert core.receive("/y").selected == "/y"


def test_dialer_all_refused() -> None:
    core = DialerCore(["/x"])
    core.receive("/multistream/1.0.0")
    with pytest.raises(ProtocolNotSupported):
        core.receive("na")


def test_dialer_rejects_missing_header() -> None:
    with pytest.raises(NegotiationError):
        DialerCore(["/x"]).receive("/x")


def test_listener_answers() -> None:
    core = ListenerCore(lambda p: p == "/ok", lambda: ["/ok"])
    core.receive("/multistream/1.0.0")
    assert core.receive("/nope").send == encode_message("na")
    assert core.receive("ls").send == encode_ls_response(["/ok"])
    out = core.receive("/ok")
    assert out.selected == "/ok" and out.send == encode_message("/ok")


def test_listener_bounds_attempts() -> None:
    core = ListenerCore(lambda p: False, lambda: [])
    core.receive("/multistream/1.0.0")
    with pytest.raises(NegotiationError):
        for i in range(MAX_ATTEMPTS + 1):
            core.receive(f"/p{i}")


def test_oversized_message_rejected_before_body() -> None:
    dec = MessageDecoder()
    dec.feed(encode_uvarint(1025))
    with pytest.raises(MessageTooLarge):
        dec.next_message()


def test_missing_newline_rejected() -> None:
    dec = MessageDecoder()
    dec.feed(b"\x02ab")
    with pytest.raises(DecodeError):
        dec.next_message()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=64))
def test_fuzz_decoder(data: bytes, chunk: int) -> None:
    dec = MessageDecoder()
    try:
        for i in range(0, len(data), chunk):
            dec.feed(data[i : i + chunk])
            while dec.next_message() is not None:
                pass
    except (DecodeError, MessageTooLarge):
        pass


async def test_negotiation_over_stream_keeps_following_bytes() -> None:
    left, right = trio.testing.memory_stream_pair()
    result: dict[str, Any] = {}

    async def listener() -> None:
        result["l"] = await select_inbound(right, lambda p: p == "/b", lambda: ["/b"])
        result["data"] = await right.receive_some(100)

    async with trio.open_nursery() as n:
        n.start_soon(listener)
        result["d"] = await select_outbound(left, ["/a", "/b"])
        await left.send_all(b"payload")
    assert result == {"l": "/b", "d": "/b", "data": b"payload"}


async def test_pipelined_proposal_and_data_in_one_write() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(HEADER + encode_message("/echo") + b"early")
    proto = await select_inbound(right, lambda p: p == "/echo", lambda: ["/echo"])
    assert proto == "/echo"
    assert await right.receive_some(100) == b"early"


async def test_eof_during_negotiation() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(HEADER)
    await left.send_eof()
    with pytest.raises(NegotiationError):
        await select_inbound(right, lambda p: True, lambda: [])


@pytest.mark.parametrize("first", [b"SSH-2.0-OpenSSH_9.2\r\n", b"HTTP/1.1 400 Bad Request\r\n", b"\x16\x03\x01\x02\x00"])
def test_a_peer_speaking_something_else_fails_at_its_first_byte(first: bytes) -> None:
    from mycel.core.errors import NegotiationError
    from mycel.multistream.core import MessageDecoder

    decoder = MessageDecoder(expect_header=True)
    decoder.feed(first[:1])
    with pytest.raises(NegotiationError, match="not a multistream-select peer"):
        decoder.needed()
    plain = MessageDecoder()  # without the expectation, the same byte is just a length
    plain.feed(first[:1])
    assert plain.needed() >= 1


async def test_dialing_a_server_that_says_hello_in_another_protocol_fails_at_once() -> None:
    import trio

    from mycel import DialError, HostConfig, Identity, Noise, TCP, Yamux, open_host

    async def ssh_like(stream: trio.SocketStream) -> None:
        await stream.send_all(b"SSH-2.0-OpenSSH_9.2\r\n")
        await trio.sleep_forever()  # and waits for us, as an SSH server does

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, ssh_like, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        config = HostConfig(transports=[TCP()], security=[Noise()], muxers=[Yamux()], handshake_timeout=30)
        async with open_host(config) as host:
            with trio.fail_after(5):  # well before the 30 s handshake timeout
                with pytest.raises(DialError, match="not a multistream-select peer"):
                    await host.connect(f"/ip4/127.0.0.1/tcp/{port}/p2p/{Identity.generate().peer_id}")
        nursery.cancel_scope.cancel()
