"""A client for the libp2p daemon control protocol (go-libp2p-daemon ``specs/CONTROL.md``).

Every message on the control socket is a uvarint-delimited protobuf. Each request here uses its own
control connection: plain requests close it after the one response; ``stream_open`` keeps it, because
after the OK response the daemon pipes the libp2p stream through that same socket, and so does
``pubsub_subscribe``: after its OK the daemon writes one delimited ``PSMessage`` per message on the topic
until we close the connection, which cancels the subscription. DHT requests (``dht_*``) are plain
requests, except FIND_PROVIDERS, GET_CLOSEST_PEERS and SEARCH_VALUE: after Response{OK, dht: BEGIN} the
daemon writes bare delimited ``DHTResponse`` VALUEs, then an END, on the same connection. Inbound streams for a
``stream_handler`` registration arrive as connections to a unix socket we listen on, each starting with
a bare (not wrapped) delimited ``StreamInfo``.

The codec functions are sans-IO; :class:`ControlClient` and :class:`DaemonStream` are the trio driver.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import trio
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message

from interop.p2pd import p2pd_pb2 as pb
from mycel.core.errors import DecodeError, MycelError
from mycel.core.varint import LengthPrefixedDecoder, encode_uvarint, length_prefixed

log = logging.getLogger("mycel.interop.p2pd")

MAX_CONTROL_MESSAGE = 4 * 1024 * 1024  # the daemon's own cap; a longer prefix raises MessageTooLarge
READ_CHUNK = 256 * 1024

M = TypeVar("M", bound=Message)


class DaemonError(MycelError):
    """The daemon answered a request with ERROR (``str(err)`` is its message)."""


@dataclass(frozen=True)
class PeerEntry:
    """One peer as the daemon reports it: raw peer-id bytes and binary multiaddrs."""

    peer_id: bytes
    addrs: tuple[bytes, ...]


@dataclass(frozen=True)
class PubsubMessage:
    """One message from a daemon subscription: ``source`` is the author's raw peer id (or b"")."""

    source: bytes
    data: bytes
    seqno: bytes
    topics: tuple[str, ...]


@dataclass(frozen=True)
class StreamInfo:
    peer_id: bytes
    addr: bytes
    protocol: str


# --- sans-IO codec ---------------------------------------------------------------------------------


def encode_request(request: pb.Request) -> bytes:
    return length_prefixed(request.SerializeToString())


def _parse(msg: M, data: bytes) -> M:
    """``msg`` parsed from ``data``, required fields present, or ``DecodeError``."""
    name = type(msg).__name__
    try:
        msg.ParseFromString(data)
    except ProtobufDecodeError as exc:
        raise DecodeError(f"bad p2pd {name}: {exc}") from exc
    if not msg.IsInitialized():  # the parser does not insist on required fields; we do
        raise DecodeError(f"p2pd {name} lacks {msg.FindInitializationErrors()}")
    return msg


def decode_response(data: bytes) -> pb.Response:
    """Parse one Response body; ``DecodeError`` if it is not a valid Response."""
    return _parse(pb.Response(), data)


def decode_dht_response(data: bytes) -> pb.DHTResponse:
    return _parse(pb.DHTResponse(), data)


def decode_stream_info(data: bytes) -> StreamInfo:
    msg = _parse(pb.StreamInfo(), data)
    return StreamInfo(peer_id=msg.peer, addr=msg.addr, protocol=msg.proto)


def decode_ps_message(data: bytes) -> PubsubMessage:
    msg = _parse(pb.PSMessage(), data)
    source: bytes = getattr(msg, "from")  # a Python keyword: no attribute syntax
    return PubsubMessage(source=source, data=msg.data, seqno=msg.seqno, topics=tuple(msg.topicIDs))


def check_ok(response: pb.Response) -> pb.Response:
    if response.type != pb.Response.OK:
        raise DaemonError(response.error.msg if response.HasField("error") else "daemon error")
    return response


def identify_request() -> pb.Request:
    return pb.Request(type=pb.Request.IDENTIFY)


def connect_request(peer_id: bytes, addrs: Sequence[bytes], timeout: int) -> pb.Request:
    return pb.Request(
        type=pb.Request.CONNECT,
        connect=pb.ConnectRequest(peer=peer_id, addrs=list(addrs), timeout=timeout),
    )


def list_peers_request() -> pb.Request:
    return pb.Request(type=pb.Request.LIST_PEERS)


def stream_open_request(peer_id: bytes, protocols: Sequence[str], timeout: int) -> pb.Request:
    return pb.Request(
        type=pb.Request.STREAM_OPEN,
        streamOpen=pb.StreamOpenRequest(peer=peer_id, proto=list(protocols), timeout=timeout),
    )


def stream_handler_request(addr: bytes, protocols: Sequence[str]) -> pb.Request:
    return pb.Request(
        type=pb.Request.STREAM_HANDLER,
        streamHandler=pb.StreamHandlerRequest(addr=addr, proto=list(protocols), balanced=False),
    )


def disconnect_request(peer_id: bytes) -> pb.Request:
    return pb.Request(type=pb.Request.DISCONNECT, disconnect=pb.DisconnectRequest(peer=peer_id))


def pubsub_request(kind: pb.PSRequest.Type, topic: str | None = None, data: bytes | None = None) -> pb.Request:
    ps = pb.PSRequest(type=kind)
    if topic is not None:
        ps.topic = topic
    if data is not None:
        ps.data = data
    return pb.Request(type=pb.Request.PUBSUB, pubsub=ps)


def dht_request(
    kind: pb.DHTRequest.Type,
    *,
    peer: bytes | None = None,
    cid: bytes | None = None,
    key: bytes | None = None,
    value: bytes | None = None,
    count: int | None = None,
    timeout: int | None = None,
) -> pb.Request:
    """A DHT request; ``cid`` is a binary CID, ``key`` a record key as bytes, ``timeout`` in seconds."""
    dht = pb.DHTRequest(type=kind)
    if peer is not None:
        dht.peer = peer
    if cid is not None:
        dht.cid = cid
    if key is not None:
        dht.key = key
    if value is not None:
        dht.value = value
    if count is not None:
        dht.count = count
    if timeout is not None:
        dht.timeout = timeout
    return pb.Request(type=pb.Request.DHT, dht=dht)


def _peer_entry(info: pb.PeerInfo) -> PeerEntry:
    return PeerEntry(info.id, tuple(info.addrs))


# --- trio driver -----------------------------------------------------------------------------------


class DaemonStream(trio.abc.HalfCloseableStream):
    """A libp2p stream piped through a daemon socket; bytes read past the header come out first."""

    def __init__(self, sock: trio.SocketStream, prefix: bytes, info: StreamInfo) -> None:
        self.socket = sock
        self.info = info
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            if max_bytes is None or max_bytes >= len(self._prefix):
                data, self._prefix = self._prefix, b""
            else:
                data, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            return data
        return await self.socket.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.socket.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.socket.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """``shutdown(SHUT_WR)`` on the control socket."""
        await self.socket.send_eof()

    async def aclose(self) -> None:
        await self.socket.aclose()

    async def abort(self) -> None:
        """Close the socket while bytes the daemon sent are still unread.

        On Linux a unix stream socket closed with unread data makes the peer's next read fail with
        ECONNRESET instead of returning EOF; that is the closest thing to a reset the daemon offers.
        """
        self.socket.socket.close()
        await trio.lowlevel.checkpoint()


async def _read_message(sock: trio.SocketStream, decoder: LengthPrefixedDecoder) -> bytes:
    """Read until one whole delimited message is buffered; EOF first is a DecodeError."""
    while True:
        msg = decoder.next_message()
        if msg is not None:
            return msg
        data = await sock.receive_some(READ_CHUNK)
        if not data:
            raise DecodeError("daemon closed the control connection mid-message")
        decoder.feed(data)


class ControlClient:
    """Talks to one daemon over its unix control socket (one control connection per request)."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    async def _roundtrip(self, request: pb.Request) -> tuple[pb.Response, trio.SocketStream, bytes]:
        sock = await trio.open_unix_socket(self.socket_path)
        try:
            await sock.send_all(encode_request(request))
            decoder = LengthPrefixedDecoder(MAX_CONTROL_MESSAGE)
            response = decode_response(await _read_message(sock, decoder))
            return response, sock, decoder.take_rest()
        except BaseException:
            await trio.aclose_forcefully(sock)
            raise

    async def _request(self, request: pb.Request) -> pb.Response:
        response, sock, _ = await self._roundtrip(request)
        await sock.aclose()
        return check_ok(response)

    async def identify(self) -> PeerEntry:
        response = await self._request(identify_request())
        return PeerEntry(response.identify.id, tuple(response.identify.addrs))

    async def connect(self, peer_id: bytes, addrs: Sequence[bytes], timeout: int = 30) -> None:
        await self._request(connect_request(peer_id, addrs, timeout))

    async def disconnect(self, peer_id: bytes) -> None:
        await self._request(disconnect_request(peer_id))

    async def list_peers(self) -> list[PeerEntry]:
        response = await self._request(list_peers_request())
        return [PeerEntry(p.id, tuple(p.addrs)) for p in response.peers]

    async def stream_open(self, peer_id: bytes, protocols: Sequence[str], timeout: int = 30) -> DaemonStream:
        response, sock, rest = await self._roundtrip(stream_open_request(peer_id, protocols, timeout))
        try:
            check_ok(response)
            info = response.streamInfo
            return DaemonStream(sock, rest, StreamInfo(info.peer, info.addr, info.proto))
        except BaseException:
            await trio.aclose_forcefully(sock)
            raise

    async def stream_handler(self, listen_addr: bytes, protocols: Sequence[str]) -> None:
        await self._request(stream_handler_request(listen_addr, protocols))

    # --- DHT (p2pd -dht / -dhtServer / -dhtClient) ---

    async def _dht(self, request: pb.Request) -> pb.DHTResponse | None:
        response = await self._request(request)
        return response.dht if response.HasField("dht") else None

    async def _dht_stream(self, request: pb.Request) -> list[pb.DHTResponse]:
        """A streaming DHT request: every VALUE between BEGIN and END (the daemon ends the stream itself
        when the query ends or its timeout passes)."""
        response, sock, rest = await self._roundtrip(request)
        try:
            check_ok(response)
            if not response.HasField("dht") or response.dht.type != pb.DHTResponse.BEGIN:
                raise DecodeError(f"p2pd answered a streaming DHT request without BEGIN: {response}")
            decoder = LengthPrefixedDecoder(MAX_CONTROL_MESSAGE)
            decoder.feed(rest)
            values: list[pb.DHTResponse] = []
            while (msg := decode_dht_response(await _read_message(sock, decoder))).type != pb.DHTResponse.END:
                if msg.type != pb.DHTResponse.VALUE:
                    raise DecodeError(f"p2pd sent DHTResponse {msg.type} inside a stream")
                values.append(msg)
            return values
        finally:
            await trio.aclose_forcefully(sock)

    async def dht_find_peer(self, peer_id: bytes, timeout: int | None = None) -> PeerEntry:
        found = await self._dht(dht_request(pb.DHTRequest.FIND_PEER, peer=peer_id, timeout=timeout))
        if found is None or not found.HasField("peer"):
            raise DecodeError("p2pd answered FIND_PEER without a peer")
        return _peer_entry(found.peer)

    async def dht_get_value(self, key: bytes, timeout: int | None = None) -> bytes:
        found = await self._dht(dht_request(pb.DHTRequest.GET_VALUE, key=key, timeout=timeout))
        if found is None or not found.HasField("value"):
            raise DecodeError("p2pd answered GET_VALUE without a value")
        return found.value

    async def dht_get_public_key(self, peer_id: bytes, timeout: int | None = None) -> bytes:
        """The peer's PublicKey protobuf, as go's DHT finds it (peerstore, the peer, or ``/pk/``)."""
        found = await self._dht(dht_request(pb.DHTRequest.GET_PUBLIC_KEY, peer=peer_id, timeout=timeout))
        if found is None or not found.HasField("value"):
            raise DecodeError("p2pd answered GET_PUBLIC_KEY without a value")
        return found.value

    async def dht_put_value(self, key: bytes, value: bytes, timeout: int | None = None) -> None:
        await self._dht(dht_request(pb.DHTRequest.PUT_VALUE, key=key, value=value, timeout=timeout))

    async def dht_provide(self, cid: bytes, timeout: int | None = None) -> None:
        await self._dht(dht_request(pb.DHTRequest.PROVIDE, cid=cid, timeout=timeout))

    async def dht_find_providers(self, cid: bytes, count: int = 0, timeout: int | None = None) -> list[PeerEntry]:
        """Up to ``count`` providers (0: the daemon's default, 20)."""
        values = await self._dht_stream(
            dht_request(pb.DHTRequest.FIND_PROVIDERS, cid=cid, count=count or None, timeout=timeout)
        )
        return [_peer_entry(v.peer) for v in values if v.HasField("peer")]

    async def dht_get_closest_peers(self, key: bytes, timeout: int | None = None) -> list[bytes]:
        """Raw ids of the k closest peers to ``key`` that go's lookup found."""
        values = await self._dht_stream(dht_request(pb.DHTRequest.GET_CLOSEST_PEERS, key=key, timeout=timeout))
        return [v.value for v in values]

    async def dht_search_value(self, key: bytes, timeout: int | None = None) -> list[bytes]:
        """Every better value SEARCH_VALUE streamed (the last is the best)."""
        values = await self._dht_stream(dht_request(pb.DHTRequest.SEARCH_VALUE, key=key, timeout=timeout))
        return [v.value for v in values]

    # --- pubsub (p2pd -pubsub) ---

    async def pubsub_get_topics(self) -> list[str]:
        response = await self._request(pubsub_request(pb.PSRequest.GET_TOPICS))
        return list(response.pubsub.topics)

    async def pubsub_list_peers(self, topic: str) -> list[bytes]:
        """Raw ids of the peers the daemon's router knows to be subscribed to ``topic``."""
        response = await self._request(pubsub_request(pb.PSRequest.LIST_PEERS, topic))
        return list(response.pubsub.peerIDs)

    async def pubsub_publish(self, topic: str, data: bytes) -> None:
        await self._request(pubsub_request(pb.PSRequest.PUBLISH, topic, data))

    async def pubsub_subscribe(self, topic: str) -> PubsubSubscription:
        """Subscribe on a connection of its own; it then streams the topic's messages."""
        response, sock, rest = await self._roundtrip(pubsub_request(pb.PSRequest.SUBSCRIBE, topic))
        try:
            check_ok(response)
        except BaseException:
            await trio.aclose_forcefully(sock)
            raise
        return PubsubSubscription(sock, rest, topic)


class PubsubSubscription:
    """A daemon subscription: the control connection that now streams delimited PSMessages."""

    def __init__(self, sock: trio.SocketStream, rest: bytes, topic: str) -> None:
        self.socket = sock
        self.topic = topic
        self._decoder = LengthPrefixedDecoder(MAX_CONTROL_MESSAGE)
        self._decoder.feed(rest)

    async def receive(self) -> PubsubMessage | None:
        """The next message on the topic; None once the daemon closed the connection."""
        while True:
            msg = self._decoder.next_message()
            if msg is not None:
                return decode_ps_message(msg)
            data = await self.socket.receive_some(READ_CHUNK)
            if not data:
                return None
            self._decoder.feed(data)

    async def aclose(self) -> None:
        """Close the connection: the daemon cancels the subscription."""
        await self.socket.aclose()


async def accept_daemon_stream(sock: trio.SocketStream) -> DaemonStream:
    """Read the bare StreamInfo the daemon writes on an inbound handler connection."""
    decoder = LengthPrefixedDecoder(MAX_CONTROL_MESSAGE)
    info = decode_stream_info(await _read_message(sock, decoder))
    return DaemonStream(sock, decoder.take_rest(), info)


async def open_unix_listener(path: str, backlog: int = 128) -> trio.SocketListener:
    """A listening unix socket for inbound daemon streams (``backlog`` bounds pending connects)."""
    if os.path.exists(path):
        os.unlink(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(path)
    except BaseException:
        sock.close()
        raise
    sock.listen(backlog)
    return trio.SocketListener(sock)


P_UNIX = 0x0190


def unix_multiaddr(path: str) -> bytes:
    """Binary ``/unix/<abs path>`` as go-multiaddr encodes it: the value keeps its leading slash."""
    raw = os.fsencode(path)
    return encode_uvarint(P_UNIX) + length_prefixed(raw)
