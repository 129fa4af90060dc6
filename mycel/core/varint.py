"""Unsigned varints (multiformats unsigned-varint) and varint-length-prefixed framing.

Decoders reject non-minimal encodings and anything longer than 9 bytes (63 bits), as the spec asks.
"""

from __future__ import annotations

from mycel.core.errors import DecodeError, MessageTooLarge

MAX_VARINT_BYTES = 9
_MAX_VALUE = (1 << 63) - 1


def encode_uvarint(value: int) -> bytes:
    """The minimal uvarint encoding of ``value``; raises ValueError outside ``0 <= value < 2**63``."""
    if value < 0 or value > _MAX_VALUE:
        raise ValueError(f"uvarint out of range: {value}")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_uvarint(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int] | None:
    """Decode a uvarint at ``offset``.

    Returns ``(value, new_offset)``, or ``None`` if ``data`` ends before the varint does.
    Raises :class:`DecodeError` for a non-minimal or over-long varint.
    """
    value = 0
    shift = 0
    end = len(data)
    i = offset
    while i < end:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i - offset > 1:
                raise DecodeError("non-minimal uvarint")
            return value, i
        shift += 7
        if i - offset >= MAX_VARINT_BYTES:
            raise DecodeError("uvarint longer than 9 bytes")
    return None


def decode_uvarint_exact(data: bytes) -> int:
    """Decode a buffer that must hold exactly one uvarint."""
    res = decode_uvarint(data)
    if res is None:
        raise DecodeError("truncated uvarint")
    value, end = res
    if end != len(data):
        raise DecodeError("trailing bytes after uvarint")
    return value


def length_prefixed(payload: bytes) -> bytes:
    """``uvarint(len(payload)) || payload``: one message as :class:`LengthPrefixedDecoder` reads it."""
    return encode_uvarint(len(payload)) + payload


class LengthPrefixedDecoder:
    """Sans-IO decoder for a stream of ``uvarint(len) || payload`` messages.

    Feed bytes with :meth:`feed`; take whole messages with :meth:`next_message`. A length over
    ``max_size`` raises :class:`MessageTooLarge` as soon as the prefix is seen, before the body
    is buffered, so memory stays bounded by ``max_size`` plus one read.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received; nothing is parsed until :meth:`next_message`."""
        self._buf += data

    def next_message(self) -> bytes | None:
        """The next whole message, or None until enough bytes were fed.

        Raises MessageTooLarge for a length prefix over ``max_size`` (before the body is buffered),
        DecodeError for a malformed prefix.
        """
        res = decode_uvarint(self._buf, self._pos)
        if res is None:
            return None
        length, start = res
        if length > self.max_size:
            raise MessageTooLarge(f"message of {length} bytes exceeds limit {self.max_size}")
        end = start + length
        if end > len(self._buf):
            return None
        msg = bytes(self._buf[start:end])
        self._pos = end
        if self._pos > 65536 or self._pos == len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        return msg

    def take_rest(self) -> bytes:
        """Return and clear the bytes after the last whole message."""
        rest = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = 0
        return rest

    @property
    def buffered(self) -> int:
        """Bytes fed and not yet taken as messages."""
        return len(self._buf) - self._pos
