"""The p2pd control client: codec, fuzzing, and a fake daemon on a real unix socket."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from interop.p2pd import p2pd_pb2 as pb
from interop.p2pd.client import (
    MAX_CONTROL_MESSAGE,
    ControlClient,
    DaemonError,
    accept_daemon_stream,
    check_ok,
    dht_request,
    decode_dht_response,
    decode_ps_message,
    decode_response,
    decode_stream_info,
    encode_request,
    open_unix_listener,
    stream_handler_request,
    unix_multiaddr,
)
from mycel.core.errors import DecodeError, MessageTooLarge
from mycel.core.varint import LengthPrefixedDecoder, encode_uvarint, length_prefixed

PEER = b"\x00\x24\x08\x01\x12\x20" + bytes(range(32))
ADDR = b"\x04\x7f\x00\x00\x01\x06\x10\x00"  # /ip4/127.0.0.1/tcp/4096


def test_request_is_one_delimited_message() -> None:
    wire = encode_request(pb.Request(type=pb.Request.LIST_PEERS))
    decoder = LengthPrefixedDecoder(MAX_CONTROL_MESSAGE)
    decoder.feed(wire)
    body = decoder.next_message()
    assert body is not None and decoder.buffered == 0
    assert pb.Request.FromString(body).type == pb.Request.LIST_PEERS


def test_stream_handler_request_always_sets_balanced() -> None:
    req = stream_handler_request(unix_multiaddr("/tmp/x.sock"), ["/echo/1.0.0"])
    assert req.streamHandler.HasField("balanced") and req.streamHandler.balanced is False
    assert b"\x18\x00" in req.streamHandler.SerializeToString()  # field 3 on the wire


def test_unix_multiaddr_keeps_the_leading_slash() -> None:
    # go-multiaddr: code 0x0190 as uvarint, then the length-prefixed path with its leading "/"
    assert unix_multiaddr("/tmp/x.sock") == b"\x90\x03\x0b/tmp/x.sock"


def test_error_response_raises_daemon_error_with_message() -> None:
    resp = pb.Response(type=pb.Response.ERROR, error=pb.ErrorResponse(msg="no route"))
    with pytest.raises(DaemonError, match="no route"):
        check_ok(decode_response(resp.SerializeToString()))


def test_missing_required_field_is_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_response(b"")  # Response.type is required
    with pytest.raises(DecodeError):
        decode_stream_info(pb.StreamInfo(peer=PEER, addr=ADDR).SerializePartialToString())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_decode_response_raises_only_decode_error(data: bytes) -> None:
    try:
        decode_response(data)
    except DecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_decode_stream_info_raises_only_decode_error(data: bytes) -> None:
    try:
        info = decode_stream_info(data)
    except DecodeError:
        return
    assert isinstance(info.protocol, str)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.lists(st.integers(min_value=1, max_value=16), max_size=8))
def test_fuzz_delimited_framing_any_split(body: bytes, cuts: list[int]) -> None:
    """A message split at any points decodes the same; bytes after it are kept for the stream."""
    wire = length_prefixed(body) + b"STREAM"
    decoder = LengthPrefixedDecoder(MAX_CONTROL_MESSAGE)
    got = None
    pos = 0
    for cut in [*cuts, len(wire)]:
        decoder.feed(wire[pos : pos + cut])
        pos += cut
        if got is None:
            got = decoder.next_message()
    assert got == body
    assert decoder.take_rest() + wire[pos:] == b"STREAM"


def test_oversized_prefix_is_rejected_before_buffering() -> None:
    decoder = LengthPrefixedDecoder(MAX_CONTROL_MESSAGE)
    decoder.feed(encode_uvarint(MAX_CONTROL_MESSAGE + 1))
    with pytest.raises(MessageTooLarge):
        decoder.next_message()


# --- against a fake daemon on a unix socket ---------------------------------------------------------

Handler = Callable[[trio.SocketStream, pb.Request], Awaitable[None]]


async def _read_request(sock: trio.SocketStream) -> pb.Request:
    decoder = LengthPrefixedDecoder(MAX_CONTROL_MESSAGE)
    while (body := decoder.next_message()) is None:
        data = await sock.receive_some()
        assert data, "client closed before sending a request"
        decoder.feed(data)
    request = pb.Request()
    request.ParseFromString(body)
    return request


async def _send(sock: trio.SocketStream, msg: pb.Response | pb.StreamInfo, extra: bytes = b"") -> None:
    await sock.send_all(length_prefixed(msg.SerializeToString()) + extra)


class FakeDaemon:
    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.requests: list[pb.Request] = []

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = await open_unix_listener(self.path)
        task_status.started()

        async def one(sock: trio.SocketStream) -> None:
            async with sock:
                req = await _read_request(sock)
                self.requests.append(req)
                await self.handler(sock, req)

        await trio.serve_listeners(one, [listener])


@pytest.fixture
async def sockdir() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="p2pdtest") as d:
        yield d


async def test_identify_connect_and_list_peers(sockdir: str) -> None:
    async def handler(sock: trio.SocketStream, req: pb.Request) -> None:
        if req.type == pb.Request.IDENTIFY:
            await _send(sock, pb.Response(type=pb.Response.OK, identify=pb.IdentifyResponse(id=PEER, addrs=[ADDR])))
        elif req.type == pb.Request.CONNECT:
            await _send(sock, pb.Response(type=pb.Response.ERROR, error=pb.ErrorResponse(msg="dial backoff")))
        elif req.type == pb.Request.LIST_PEERS:
            await _send(sock, pb.Response(type=pb.Response.OK, peers=[pb.PeerInfo(id=PEER, addrs=[ADDR])]))

    daemon = FakeDaemon(os.path.join(sockdir, "d.sock"), handler)
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.serve)
        client = ControlClient(daemon.path)
        me = await client.identify()
        assert me.peer_id == PEER and me.addrs == (ADDR,)
        with pytest.raises(DaemonError, match="dial backoff"):
            await client.connect(PEER, [ADDR], timeout=7)
        peers = await client.list_peers()
        assert [p.peer_id for p in peers] == [PEER]
        assert daemon.requests[1].connect.timeout == 7
        nursery.cancel_scope.cancel()


async def test_stream_open_keeps_bytes_sent_with_the_response(sockdir: str) -> None:
    async def handler(sock: trio.SocketStream, req: pb.Request) -> None:
        assert req.type == pb.Request.STREAM_OPEN
        info = pb.StreamInfo(peer=PEER, addr=ADDR, proto=req.streamOpen.proto[0])
        # the response and the first stream bytes arrive in one write
        await _send(sock, pb.Response(type=pb.Response.OK, streamInfo=info), extra=b"early")
        async for data in sock:  # then pipe: echo until the client half-closes
            await sock.send_all(data)
        await sock.send_eof()

    daemon = FakeDaemon(os.path.join(sockdir, "d.sock"), handler)
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.serve)
        stream = await ControlClient(daemon.path).stream_open(PEER, ["/echo/1.0.0"])
        assert stream.info.protocol == "/echo/1.0.0"
        assert await stream.receive_some(2) == b"ea"
        assert await stream.receive_some() == b"rly"
        await stream.send_all(b"ping")
        await stream.send_eof()
        got = b""
        while data := await stream.receive_some():
            got += data
        assert got == b"ping"
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_inbound_handler_stream_reads_bare_stream_info(sockdir: str) -> None:
    path = os.path.join(sockdir, "h.sock")
    listener = await open_unix_listener(path)
    async with trio.open_nursery() as nursery:
        accepted: list[bytes] = []

        async def serve(sock: trio.SocketStream) -> None:
            stream = await accept_daemon_stream(sock)
            assert stream.info.peer_id == PEER
            accepted.append(await stream.receive_some())
            await stream.aclose()
            nursery.cancel_scope.cancel()

        nursery.start_soon(trio.serve_listeners, serve, [listener])
        sock = await trio.open_unix_socket(path)
        await _send(sock, pb.StreamInfo(peer=PEER, addr=ADDR, proto="/echo/1.0.0"), extra=b"payload")
        await trio.sleep_forever()
    assert accepted == [b"payload"]


async def test_abort_with_unread_bytes_resets_the_other_end(sockdir: str) -> None:
    """What go_peer relies on: close with unread data -> the daemon's next read fails (ECONNRESET)."""
    a, b = trio.socket.socketpair()
    left, right = trio.SocketStream(a), trio.SocketStream(b)
    from interop.p2pd.client import DaemonStream, StreamInfo

    stream = DaemonStream(left, b"", StreamInfo(PEER, ADDR, "/echo/1.0.0"))
    await right.send_all(b"unread bytes")
    await trio.testing.wait_all_tasks_blocked()
    await stream.abort()
    with pytest.raises(trio.BrokenResourceError):
        await right.receive_some()
    await right.aclose()


async def test_daemon_closing_mid_message_is_decode_error(sockdir: str) -> None:
    async def handler(sock: trio.SocketStream, req: pb.Request) -> None:
        await sock.send_all(encode_uvarint(100) + b"short")

    daemon = FakeDaemon(os.path.join(sockdir, "d.sock"), handler)
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.serve)
        with pytest.raises(DecodeError):
            await ControlClient(daemon.path).identify()
        nursery.cancel_scope.cancel()


# --- pubsub (PSRequest) -----------------------------------------------------------------------------


@given(st.binary(max_size=512))
@settings(max_examples=300, deadline=None)
def test_fuzz_decode_ps_message_raises_only_decode_error(data: bytes) -> None:
    try:
        decode_ps_message(data)
    except DecodeError:
        pass


def test_ps_message_keeps_author_seqno_and_topics() -> None:
    msg = pb.PSMessage(data=b"hi", seqno=b"\x00\x01", topicIDs=["t"])
    setattr(msg, "from", PEER)  # `from` is a Python keyword
    got = decode_ps_message(msg.SerializeToString())
    assert (got.source, got.data, got.seqno, got.topics) == (PEER, b"hi", b"\x00\x01", ("t",))


async def test_pubsub_requests_and_a_subscription_stream(sockdir: str) -> None:
    def ps_message(data: bytes) -> bytes:
        msg = pb.PSMessage(data=data, seqno=b"\x01", topicIDs=["t"])
        setattr(msg, "from", PEER)
        return length_prefixed(msg.SerializeToString())

    async def handler(sock: trio.SocketStream, req: pb.Request) -> None:
        assert req.type == pb.Request.PUBSUB
        ps = req.pubsub
        if ps.type == pb.PSRequest.LIST_PEERS:
            await _send(sock, pb.Response(type=pb.Response.OK, pubsub=pb.PSResponse(peerIDs=[PEER])))
        elif ps.type == pb.PSRequest.GET_TOPICS:
            await _send(sock, pb.Response(type=pb.Response.OK, pubsub=pb.PSResponse(topics=["t"])))
        elif ps.type == pb.PSRequest.PUBLISH:
            assert (ps.topic, ps.data) == ("t", b"payload")
            await _send(sock, pb.Response(type=pb.Response.OK))
        elif ps.type == pb.PSRequest.SUBSCRIBE and ps.topic == "bad":
            await _send(sock, pb.Response(type=pb.Response.ERROR, error=pb.ErrorResponse(msg="no topic")))
        elif ps.type == pb.PSRequest.SUBSCRIBE:
            # the OK and the first message in one write, then one split across writes, then EOF
            await _send(sock, pb.Response(type=pb.Response.OK), extra=ps_message(b"one"))
            second = ps_message(b"two")
            await sock.send_all(second[:3])
            await trio.testing.wait_all_tasks_blocked()
            await sock.send_all(second[3:])

    daemon = FakeDaemon(os.path.join(sockdir, "d.sock"), handler)
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.serve)
        client = ControlClient(daemon.path)
        assert await client.pubsub_list_peers("t") == [PEER]
        assert await client.pubsub_get_topics() == ["t"]
        await client.pubsub_publish("t", b"payload")
        with pytest.raises(DaemonError, match="no topic"):
            await client.pubsub_subscribe("bad")
        sub = await client.pubsub_subscribe("t")
        first, second = await sub.receive(), await sub.receive()
        assert first is not None and second is not None
        assert (first.data, second.data, first.source) == (b"one", b"two", PEER)
        assert await sub.receive() is None  # the daemon closed the subscription
        await sub.aclose()
        assert daemon.requests[0].pubsub.topic == "t"
        nursery.cancel_scope.cancel()


# --- DHT (p2pd -dht*) ---------------------------------------------------------------------------------


@given(st.binary(max_size=256))
@settings(max_examples=300, deadline=None)
def test_fuzz_decode_dht_response_raises_only_decode_error(data: bytes) -> None:
    try:
        decode_dht_response(data)
    except DecodeError:
        pass


def test_dht_request_sets_only_the_fields_given() -> None:
    req = dht_request(pb.DHTRequest.PUT_VALUE, key=b"/pk/\x12\x20", value=b"v", timeout=30)
    assert req.type == pb.Request.DHT
    fields = {f.name for f, _ in req.dht.ListFields()}
    assert fields == {"type", "key", "value", "timeout"}
    assert pb.Request.FromString(req.SerializeToString()).dht.key == b"/pk/\x12\x20"


async def test_dht_plain_and_streaming_requests(sockdir: str) -> None:
    cid = b"\x12\x20" + bytes(32)

    def dht_value(**fields: object) -> bytes:
        return length_prefixed(pb.DHTResponse(type=pb.DHTResponse.VALUE, **fields).SerializeToString())  # type: ignore[arg-type]

    end = length_prefixed(pb.DHTResponse(type=pb.DHTResponse.END).SerializeToString())
    begin = pb.Response(type=pb.Response.OK, dht=pb.DHTResponse(type=pb.DHTResponse.BEGIN))

    async def handler(sock: trio.SocketStream, req: pb.Request) -> None:
        assert req.type == pb.Request.DHT
        dht = req.dht
        if dht.type == pb.DHTRequest.FIND_PEER:
            found = pb.DHTResponse(type=pb.DHTResponse.VALUE, peer=pb.PeerInfo(id=PEER, addrs=[ADDR]))
            await _send(sock, pb.Response(type=pb.Response.OK, dht=found))
        elif dht.type == pb.DHTRequest.GET_VALUE and dht.key == b"missing":
            await _send(sock, pb.Response(type=pb.Response.ERROR, error=pb.ErrorResponse(msg="routing: not found")))
        elif dht.type == pb.DHTRequest.GET_VALUE:
            await _send(sock, pb.Response(type=pb.Response.OK, dht=pb.DHTResponse(type=pb.DHTResponse.VALUE, value=b"v")))
        elif dht.type in (pb.DHTRequest.PUT_VALUE, pb.DHTRequest.PROVIDE):
            await _send(sock, pb.Response(type=pb.Response.OK))
        elif dht.type == pb.DHTRequest.FIND_PROVIDERS:
            assert (dht.cid, dht.count) == (cid, 1)
            # BEGIN and the first VALUE in one write, the END split across two
            await _send(sock, begin, extra=dht_value(peer=pb.PeerInfo(id=PEER, addrs=[ADDR])))
            await sock.send_all(end[:1])
            await trio.testing.wait_all_tasks_blocked()
            await sock.send_all(end[1:])
        elif dht.type == pb.DHTRequest.GET_CLOSEST_PEERS:
            await _send(sock, begin, extra=dht_value(value=PEER) + dht_value(value=PEER[::-1]) + end)
        elif dht.type == pb.DHTRequest.SEARCH_VALUE:
            await _send(sock, begin, extra=dht_value(value=b"v1"))  # then EOF without END

    daemon = FakeDaemon(os.path.join(sockdir, "d.sock"), handler)
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.serve)
        client = ControlClient(daemon.path)
        found = await client.dht_find_peer(PEER, timeout=5)
        assert (found.peer_id, found.addrs) == (PEER, (ADDR,))
        assert await client.dht_get_value(b"k") == b"v"
        with pytest.raises(DaemonError, match="not found"):
            await client.dht_get_value(b"missing")
        await client.dht_put_value(b"k", b"v")
        await client.dht_provide(cid)
        providers = await client.dht_find_providers(cid, 1)
        assert [p.peer_id for p in providers] == [PEER]
        assert await client.dht_get_closest_peers(b"k") == [PEER, PEER[::-1]]
        with pytest.raises(DecodeError, match="mid-message"):
            await client.dht_search_value(b"k")
        timeouts = [r.dht.timeout for r in daemon.requests if r.dht.HasField("timeout")]
        assert timeouts == [5]  # only where asked for
        nursery.cancel_scope.cancel()
