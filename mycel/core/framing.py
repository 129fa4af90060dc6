"""Framing helpers for protocol authors: exact reads and unsigned-varint-length-prefixed messages.

Most libp2p protocols (identify, kad, gossipsub, relay, DCUtR, AutoNAT) frame every protobuf as
``uvarint(len(body)) || body`` on a stream. Pick the helper that fits the exchange:

* :func:`read_exactly` reads a fixed number of bytes (ping's 32-byte payloads).
* :func:`send_message` / :func:`receive_message` send and read *one* framed message. Reading never
  consumes a byte past the message, so the stream can be handed on afterwards (a handshake followed
  by another protocol on the same stream).
* :class:`MessageStream` reads ahead into a buffer: for protocols that exchange many messages on one
  stream (gossipsub's RPC stream). :class:`ProtobufStream` is the same for one protobuf message type.

Every reader takes a ``max_size``: a length prefix above it raises
:class:`~mycel.core.errors.MessageTooLarge` before any of the body is read, so a remote can never make
us buffer more than ``max_size`` (plus one read) per stream. Malformed prefixes raise
:class:`~mycel.core.errors.DecodeError`, a stream that ends inside a message
:class:`~mycel.core.errors.UnexpectedEOF`; all three are
:class:`~mycel.core.errors.ProtocolViolation`, so a handler can close the stream and move on.

Example, a request/response protocol::

    await send_message(stream, request.SerializeToString())
    await stream.send_eof()
    reply = await receive_message(stream, max_size=4096)
    if reply is None:
        raise ProtocolViolation("no reply")
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Generic, Self, TypeVar

import trio
from google.protobuf.message import DecodeError as _PbDecodeError
from google.protobuf.message import Message

from mycel.core.errors import DecodeError, MessageTooLarge, UnexpectedEOF
from mycel.core.varint import LengthPrefixedDecoder, decode_uvarint, encode_uvarint

__all__ = [
    "READ_CHUNK",
    "MessageStream",
    "ProtobufStream",
    "parse_message",
    "read_exactly",
    "receive_message",
    "send_message",
]

READ_CHUNK = 64 * 1024  # the most asked of the stream per receive_some call by these helpers

M = TypeVar("M", bound=Message)
T = TypeVar("T")


async def read_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    """Read exactly ``n`` bytes from ``stream``.

    Raises :class:`~mycel.core.errors.UnexpectedEOF` (``received`` = the bytes that did arrive,
    ``expected`` = ``n``) if the stream ends first; ``received == 0`` tells a stream that ended
    cleanly before the read from one cut short. ``n == 0`` returns ``b""`` (after a checkpoint, like
    any trio receive). Nothing past the ``n`` bytes is consumed.
    """
    if n <= 0:
        if n < 0:
            raise ValueError(f"cannot read a negative number of bytes ({n})")
        await trio.lowlevel.checkpoint()
        return b""
    chunk = await stream.receive_some(min(n, READ_CHUNK))
    if len(chunk) == n:
        return bytes(chunk)  # the common case: one read (and no copy of a bytes result)
    buf = bytearray()
    while chunk:
        buf += chunk
        if len(buf) == n:
            return bytes(buf)
        chunk = await stream.receive_some(min(n - len(buf), READ_CHUNK))
    raise UnexpectedEOF(f"stream ended after {len(buf)} of {n} bytes", received=len(buf), expected=n)


def _frame(payload: bytes | bytearray | memoryview) -> bytes:
    return encode_uvarint(len(payload)) + payload


async def send_message(stream: trio.abc.SendStream, payload: bytes | bytearray | memoryview) -> None:
    """Send ``payload`` as one ``uvarint(len) || payload`` message, in a single ``send_all``."""
    await stream.send_all(_frame(payload))


async def receive_message(stream: trio.abc.ReceiveStream, max_size: int) -> bytes | None:
    """Read one ``uvarint(len) || body`` message and return the body, consuming nothing after it.

    Returns ``None`` if the stream ends cleanly before the message starts. Raises
    :class:`~mycel.core.errors.MessageTooLarge` as soon as the length prefix says more than
    ``max_size`` (no byte of the body is read), :class:`~mycel.core.errors.DecodeError` for a
    non-minimal or over-long (more than 9 bytes) prefix, and
    :class:`~mycel.core.errors.UnexpectedEOF` if the stream ends inside the message.

    The prefix is read one byte at a time (at most 9 reads) so that nothing past the message is
    taken from the stream; to read many messages from one stream, :class:`MessageStream` is cheaper.
    """
    prefix = bytearray()
    while True:
        byte = await stream.receive_some(1)
        if not byte:
            if not prefix:
                return None
            raise UnexpectedEOF(f"stream ended inside a length prefix ({len(prefix)} bytes)", received=len(prefix))
        prefix += byte
        decoded = decode_uvarint(prefix)  # DecodeError: non-minimal, or longer than 9 bytes
        if decoded is not None:
            length = decoded[0]
            break
    if length > max_size:
        raise MessageTooLarge(f"message of {length} bytes exceeds limit {max_size}")
    try:
        return await read_exactly(stream, length)
    except UnexpectedEOF as exc:
        raise UnexpectedEOF(
            f"stream ended inside a message: {exc.received} of {length} bytes", received=exc.received, expected=length
        ) from None


class _Messages(trio.abc.AsyncResource, Generic[T]):
    """``async for`` over :meth:`receive` until it returns ``None``."""

    @abstractmethod
    async def receive(self) -> T | None: ...

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        msg = await self.receive()
        if msg is None:
            raise StopAsyncIteration
        return msg


class MessageStream(_Messages[bytes]):
    """Length-prefixed messages (``uvarint(len) || body``) in both directions on one stream.

    Reads ahead: each ``receive_some`` may bring several messages, and they are buffered until taken,
    so many small messages cost one read. Bounded: the buffer holds at most one partial message of
    up to ``max_size`` bytes plus one read of ``read_size``; a longer length prefix raises
    :class:`~mycel.core.errors.MessageTooLarge` before its body is buffered. After an error the
    stream is left as it is (a protocol violation usually means closing or resetting it).

    Because it reads ahead, use it for the rest of the stream's life, or hand the stream on only at
    a point where the remote cannot have sent more (use :func:`receive_message` otherwise).

    ``async for body in messages:`` iterates until the remote half-closes. ``aclose()`` (or
    ``async with``) closes the underlying stream; :attr:`stream` gives it, for ``send_eof`` or
    ``reset``.
    """

    def __init__(self, stream: trio.abc.Stream, *, max_size: int, read_size: int = READ_CHUNK) -> None:
        if max_size < 0 or read_size < 1:
            raise ValueError("max_size must be >= 0 and read_size >= 1")
        self._stream = stream
        self._decoder = LengthPrefixedDecoder(max_size)
        self._read_size = read_size
        self._eof = False

    @property
    def stream(self) -> trio.abc.Stream:
        """The underlying stream."""
        return self._stream

    @property
    def max_size(self) -> int:
        """The largest message body :meth:`receive` accepts."""
        return self._decoder.max_size

    async def send(self, payload: bytes | bytearray | memoryview) -> None:
        """Send one message (prefix and body in one ``send_all``)."""
        await self._stream.send_all(_frame(payload))

    async def receive(self) -> bytes | None:
        """The next message's body; ``None`` once the remote has half-closed after a whole message.

        Raises :class:`~mycel.core.errors.MessageTooLarge`, :class:`~mycel.core.errors.DecodeError`
        or :class:`~mycel.core.errors.UnexpectedEOF` (the stream ended inside a message).
        """
        decoder = self._decoder
        while True:
            msg = decoder.next_message()
            if msg is not None:
                return msg
            if self._eof:
                if decoder.buffered:
                    raise UnexpectedEOF(
                        f"stream ended inside a message ({decoder.buffered} bytes of it arrived)",
                        received=decoder.buffered,
                    )
                await trio.lowlevel.checkpoint()
                return None
            data = await self._stream.receive_some(self._read_size)
            if data:
                decoder.feed(data)
            else:
                self._eof = True

    async def aclose(self) -> None:
        """Close the underlying stream."""
        await self._stream.aclose()


def parse_message(message_type: type[M], body: bytes) -> M:
    """Parse ``body`` as a ``message_type`` protobuf; a malformed body raises mycel's
    :class:`~mycel.core.errors.DecodeError` (a ProtocolViolation), not protobuf's."""
    msg: M = message_type()
    try:
        msg.ParseFromString(body)
    except _PbDecodeError as exc:
        raise DecodeError(f"malformed {message_type.__name__} protobuf: {exc}") from None
    return msg


class ProtobufStream(_Messages[M]):
    """Length-prefixed protobuf messages of one type on one stream (a :class:`MessageStream`).

    ::

        rpcs = ProtobufStream(stream, pb.RPC, max_size=1 << 20)
        await rpcs.send(pb.RPC(...))
        async for rpc in rpcs:
            ...

    A body that is not a valid ``message_type`` raises :class:`~mycel.core.errors.DecodeError`;
    sizes are bounded as in :class:`MessageStream`.
    """

    def __init__(
        self, stream: trio.abc.Stream, message_type: type[M], *, max_size: int, read_size: int = READ_CHUNK
    ) -> None:
        self._messages = MessageStream(stream, max_size=max_size, read_size=read_size)
        self._type = message_type

    @property
    def stream(self) -> trio.abc.Stream:
        """The underlying stream."""
        return self._messages.stream

    @property
    def message_type(self) -> type[M]:
        """The protobuf class every received message is parsed as."""
        return self._type

    @property
    def max_size(self) -> int:
        """The largest serialized message :meth:`receive` accepts."""
        return self._messages.max_size

    async def send(self, msg: M) -> None:
        """Serialize ``msg`` and send it as one message."""
        await self._messages.send(msg.SerializeToString())

    async def receive(self) -> M | None:
        """The next message, or ``None`` once the remote has half-closed after a whole message."""
        body = await self._messages.receive()
        if body is None:
            return None
        return parse_message(self._type, body)

    async def aclose(self) -> None:
        """Close the underlying stream."""
        await self._messages.aclose()
