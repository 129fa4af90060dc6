"""multistream-select 1.0, sans-IO.

Messages are ``uvarint(len) || utf8 || "\\n"`` with the length counting the newline. The cores here only
turn bytes into messages and decide what to answer; :mod:`mycel.multistream.negotiate` drives them over a
trio stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mycel.core.errors import DecodeError, MessageTooLarge, NegotiationError, ProtocolNotSupported
from mycel.core.varint import decode_uvarint, encode_uvarint

PROTOCOL_ID = "/multistream/1.0.0"
NA = "na"
LS = "ls"
MAX_MESSAGE_SIZE = 1024  # go-multistream rejects longer messages
MAX_PROTOCOL_ID_LENGTH = 1023
MAX_ATTEMPTS = 32  # proposals a listener answers before giving up on the stream


def encode_message(text: str) -> bytes:
    """``uvarint(len) || text || "\\n"``; raises MessageTooLarge if that is over 1024 bytes."""
    body = text.encode() + b"\n"
    if len(body) > MAX_MESSAGE_SIZE:
        raise MessageTooLarge(f"multistream message of {len(body)} bytes")
    return encode_uvarint(len(body)) + body


def encode_ls_response(protocols: Sequence[str]) -> bytes:
    """The answer to ``ls``: one message whose body is each protocol encoded as a message, then ``"\\n"``."""
    inner = b"".join(encode_message(p) for p in protocols) + b"\n"
    return encode_uvarint(len(inner)) + inner


HEADER = encode_message(PROTOCOL_ID)
NA_MESSAGE = encode_message(NA)


_HEADER_LENGTH = len(PROTOCOL_ID) + 1  # the first message of every multistream-select exchange


class MessageDecoder:
    """Splits a byte stream into multistream messages (bounded to MAX_MESSAGE_SIZE each).

    With ``expect_header=True`` the first message must have the header's length (19 bytes): a peer that
    speaks something else (SSH, HTTP, TLS) fails at its first byte instead of leaving us waiting
    for as many bytes as its first byte happens to announce.
    """

    def __init__(self, *, expect_header: bool = False) -> None:
        self._buf = bytearray()
        self._expect_header = expect_header

    def feed(self, data: bytes | bytearray) -> None:
        """Append received bytes. Raises MessageTooLarge once more is buffered than a message may hold."""
        self._buf += data
        if len(self._buf) > MAX_MESSAGE_SIZE + 16:
            # more unread input than one message may hold: only possible if a message is oversized
            self.next_message()

    def _check_length(self, length: int) -> None:
        if self._expect_header:
            if length != _HEADER_LENGTH:
                start = bytes(self._buf[:16])
                raise NegotiationError(f"not a multistream-select peer (it began with {start!r})")
            self._expect_header = False

    def needed(self) -> int:
        """How many more bytes are needed before the next message is complete (≥ 1)."""
        res = decode_uvarint(self._buf)
        if res is None:
            return 1
        length, start = res
        self._check_length(length)
        if length > MAX_MESSAGE_SIZE:
            raise MessageTooLarge(f"multistream message of {length} bytes (limit {MAX_MESSAGE_SIZE})")
        return max(1, start + length - len(self._buf))

    def next_message(self) -> str | None:
        """The next whole message without its newline, or None until it is complete.

        Raises MessageTooLarge (over 1024 bytes) or DecodeError (no trailing newline, not UTF-8).
        """
        res = decode_uvarint(self._buf)
        if res is None:
            return None
        length, start = res
        self._check_length(length)
        if length > MAX_MESSAGE_SIZE:
            raise MessageTooLarge(f"multistream message of {length} bytes (limit {MAX_MESSAGE_SIZE})")
        end = start + length
        if end > len(self._buf):
            return None
        body = bytes(self._buf[start:end])
        del self._buf[:end]
        if not body.endswith(b"\n"):
            raise DecodeError("multistream message does not end with a newline")
        try:
            return body[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("multistream message is not UTF-8") from exc

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken as messages."""
        return len(self._buf)


@dataclass(frozen=True)
class Outcome:
    """What a core wants done after a message: bytes to send, and the agreed protocol if any."""

    send: bytes = b""
    selected: str | None = None
    """The protocol both sides agreed on, set once negotiation succeeded."""


class DialerCore:
    """The initiator: sends the header and proposals in order until one is echoed."""

    def __init__(self, protocols: Sequence[str]) -> None:
        if not protocols:
            raise ValueError("no protocols to propose")
        for p in protocols:
            if not p or len(p.encode()) > MAX_PROTOCOL_ID_LENGTH or "\n" in p:
                raise ValueError(f"invalid protocol id {p!r}")
        self._protocols = list(protocols)
        self._index = 0
        self._header_seen = False
        self.selected: str | None = None

    def initial_bytes(self) -> bytes:
        """Header and first proposal, to go out in one write."""
        return HEADER + encode_message(self._protocols[0])

    @property
    def proposing(self) -> str:
        """The protocol currently proposed (awaiting an echo or ``na``)."""
        return self._protocols[self._index]

    def receive(self, message: str) -> Outcome:
        """Take the listener's next message: the header, then an echo (selected) or ``na`` (propose the next).

        Raises ProtocolNotSupported once every protocol was refused, NegotiationError on anything else.
        """
        if not self._header_seen:
            if message != PROTOCOL_ID:
                raise NegotiationError(f"expected multistream header, got {message[:64]!r}")
            self._header_seen = True
            return Outcome()
        if message == self._protocols[self._index]:
            self.selected = message
            return Outcome(selected=message)
        if message == NA:
            self._index += 1
            if self._index >= len(self._protocols):
                raise ProtocolNotSupported(f"remote supports none of {self._protocols}")
            return Outcome(send=encode_message(self._protocols[self._index]))
        raise NegotiationError(f"unexpected answer {message[:64]!r} to proposal {self.proposing!r}")


class ListenerCore:
    """The responder: answers proposals with an echo (accept), ``na``, or the ``ls`` list."""

    def __init__(self, supports: Callable[[str], bool], protocols: Callable[[], Sequence[str]]) -> None:
        self._supports = supports
        self._protocols = protocols
        self._header_seen = False
        self._attempts = 0
        self.selected: str | None = None

    def receive(self, message: str) -> Outcome:
        """Take the dialer's next message: the header, then proposals or ``ls``.

        Raises NegotiationError on a wrong header or after 32 proposals on one stream.
        """
        if not self._header_seen:
            if message != PROTOCOL_ID:
                raise NegotiationError(f"expected multistream header, got {message[:64]!r}")
            self._header_seen = True
            return Outcome()
        self._attempts += 1
        if self._attempts > MAX_ATTEMPTS:
            raise NegotiationError(f"more than {MAX_ATTEMPTS} proposals on one stream")
        if message == LS:
            return Outcome(send=encode_ls_response(self._protocols()))
        if message and self._supports(message):
            self.selected = message
            return Outcome(send=encode_message(message), selected=message)
        return Outcome(send=NA_MESSAGE)
