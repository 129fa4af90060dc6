"""Sans-IO Noise transport phase: plaintext <-> ``u16 BE length || ChaChaPoly ciphertext`` frames.

ChaCha20-Poly1305 with nonce ``4 zero bytes || u64 LE counter`` and empty associated data, as the
Noise spec defines for ``ChaChaPoly``; done with ``cryptography`` directly for speed.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from mycel.core.errors import DecodeError, DecryptionError, MycelError

__all__ = ["FRAME_OVERHEAD", "MAX_FRAME", "MAX_PLAINTEXT", "TAG_SIZE", "TransportCipher", "NoiseTransport"]

MAX_FRAME: Final = 65535
TAG_SIZE: Final = 16
MAX_PLAINTEXT: Final = MAX_FRAME - TAG_SIZE  # 65519
FRAME_OVERHEAD: Final = 2 + TAG_SIZE  # length prefix and tag added to every frame
# encrypt_chunks() copies chunks shorter than this into shared frames; longer ones are encrypted in place
SMALL_CHUNK: Final = 4096
MAX_NONCE: Final = (1 << 64) - 1  # reserved by the Noise spec; we stop before using it
_NONCE = struct.Struct("<4xQ")
_LEN = struct.Struct(">H")


class TransportCipher:
    """One direction of a Noise transport: a key and its message counter."""

    __slots__ = ("_aead", "nonce")

    def __init__(self, key: bytes, nonce: int = 0) -> None:
        if len(key) != 32:
            raise ValueError("ChaChaPoly key must be 32 bytes")
        self._aead = ChaCha20Poly1305(bytes(key))
        self.nonce = nonce

    def _next_nonce(self) -> bytes:
        n = self.nonce
        if n >= MAX_NONCE:
            raise MycelError("Noise nonce space exhausted; the connection must be closed")
        self.nonce = n + 1
        return _NONCE.pack(n)

    def encrypt(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        """Encrypt one message with the next nonce (ciphertext is 16 bytes longer).

        Raises MycelError once the nonce space is exhausted.
        """
        return self._aead.encrypt(self._next_nonce(), plaintext, None)

    def encrypt_into(self, plaintext: memoryview, out: memoryview) -> None:
        """Encrypt into ``out``, which must be exactly ``len(plaintext) + 16`` bytes."""
        self._aead.encrypt_into(self._next_nonce(), plaintext, None, out)

    def decrypt(self, ciphertext: bytes | bytearray | memoryview) -> bytes:
        """Decrypt one message; :class:`DecryptionError` if it does not authenticate."""
        n = self.nonce
        if n >= MAX_NONCE:
            raise MycelError("Noise nonce space exhausted; the connection must be closed")
        try:
            plaintext = self._aead.decrypt(_NONCE.pack(n), ciphertext, None)
        except InvalidTag:
            raise DecryptionError(f"Noise frame {n} failed authentication") from None
        self.nonce = n + 1
        return plaintext


class NoiseTransport:
    """Frames and encrypts outgoing data, decrypts incoming frames.

    Feed received bytes with :meth:`feed` only after :meth:`read` returned ``None``; then the
    buffered ciphertext is at most one fed chunk plus one partial frame (< 65537 bytes), and
    :meth:`read` decrypts at most that much at once. Bytes of an incomplete frame are the only ones
    ever copied on input.
    """

    __slots__ = ("_send", "_recv", "_data", "_pos", "_partial", "_plain", "_plain_pos", "_held")

    def __init__(self, send_key: bytes, recv_key: bytes, *, send_nonce: int = 0, recv_nonce: int = 0) -> None:
        self._send = TransportCipher(send_key, send_nonce)
        self._recv = TransportCipher(recv_key, recv_nonce)
        self._data: bytes = b""  # last fed chunk, parsed in place from _pos
        self._pos = 0
        self._partial = bytearray()  # an incomplete frame (header included); < 65537 bytes
        self._plain: bytes = b""  # decrypted bytes not yet returned (when read() got max_bytes)
        self._plain_pos = 0
        self._held: bytearray | memoryview | None = None  # a complete frame read_frames() left for later

    @property
    def send_nonce(self) -> int:
        """The nonce the next outgoing frame will use (frames sent so far, from the starting nonce)."""
        return self._send.nonce

    @property
    def recv_nonce(self) -> int:
        """The nonce the next incoming frame must have been sealed with."""
        return self._recv.nonce

    # --- outgoing ---

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytearray:
        """Return the frames carrying ``data``, split at 65519 plaintext bytes."""
        src = memoryview(data).cast("B")
        total = len(src)
        if total == 0:
            return bytearray()
        frames = -(-total // MAX_PLAINTEXT)
        out = bytearray(total + frames * (2 + TAG_SIZE))
        dst = memoryview(out)
        o = 0
        for off in range(0, total, MAX_PLAINTEXT):
            chunk = src[off : off + MAX_PLAINTEXT]
            clen = len(chunk) + TAG_SIZE
            _LEN.pack_into(out, o, clen)
            self._send.encrypt_into(chunk, dst[o + 2 : o + 2 + clen])
            o += 2 + clen
        return out

    @staticmethod
    def sealed_bound(total: int, chunks: int) -> int:
        """An upper bound on what :meth:`encrypt_chunks` writes for ``chunks`` buffers of ``total`` bytes."""
        return total + (chunks + total // MAX_PLAINTEXT + 1) * FRAME_OVERHEAD

    def encrypt_chunks(self, chunks: Sequence[bytes | bytearray | memoryview], out: bytearray) -> int:
        """Encrypt ``chunks`` (in order, as one byte stream) into ``out``; return the bytes written.

        ``out`` must hold :meth:`sealed_bound` bytes. A chunk of ``SMALL_CHUNK`` bytes or more becomes
        frames of its own, encrypted straight from its buffer; shorter chunks are copied together into
        shared frames, so many small writes (headers, control frames) cost few frames.
        """
        o = 0
        staged = bytearray()  # small chunks waiting for a frame; < MAX_PLAINTEXT bytes
        with memoryview(out) as dst:
            for chunk in chunks:
                n = len(chunk)
                if not n:
                    continue
                if n < SMALL_CHUNK:
                    if len(staged) + n > MAX_PLAINTEXT:
                        o = self._seal(staged, dst, o)
                        staged = bytearray()
                    staged += chunk
                    continue
                if staged:
                    o = self._seal(staged, dst, o)
                    staged = bytearray()
                with memoryview(chunk) as src:
                    if src.ndim != 1 or src.itemsize != 1:
                        src = src.cast("B")
                    for off in range(0, n, MAX_PLAINTEXT):
                        o = self._seal(src[off : off + MAX_PLAINTEXT], dst, o)
            if staged:
                o = self._seal(staged, dst, o)
        return o

    def _seal(self, plain: bytes | bytearray | memoryview, dst: memoryview, o: int) -> int:
        clen = len(plain) + TAG_SIZE
        _LEN.pack_into(dst, o, clen)
        self._send.encrypt_into(plain if isinstance(plain, memoryview) else memoryview(plain), dst[o + 2 : o + 2 + clen])
        return o + 2 + clen

    # --- incoming ---

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add received ciphertext bytes."""
        chunk = data if isinstance(data, bytes) else bytes(data)
        if self._pos < len(self._data):  # caller fed before draining; keep the rest
            chunk = self._data[self._pos :] + chunk
        self._data = chunk
        self._pos = 0

    def feed_eof(self) -> None:
        """The peer closed its side; :class:`DecodeError` if a frame was cut short."""
        if self._partial or self._pos < len(self._data):
            pending = len(self._partial) + len(self._data) - self._pos
            raise DecodeError(f"connection closed inside a Noise frame ({pending} bytes pending)")

    @property
    def buffered(self) -> int:
        """Ciphertext bytes received but not yet decrypted."""
        held = len(self._held) + 2 if self._held is not None else 0
        return held + len(self._partial) + len(self._data) - self._pos

    def read(self, max_bytes: int | None = None) -> bytes | None:
        """Decrypt complete buffered frames and return up to ``max_bytes`` of plaintext.

        Returns ``None`` when no plaintext is available (more bytes must be fed). Raises
        :class:`DecryptionError` for a frame that does not authenticate. Frames beyond ``max_bytes``
        stay encrypted until the next call, so the result is never cut out of a larger buffer.
        """
        if self._plain_pos < len(self._plain):
            return self._take_plain(max_bytes)
        pieces = self.read_frames(max_bytes)
        if not pieces:
            return None
        plain = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if max_bytes is None or len(plain) <= max_bytes:
            return plain
        self._plain = plain  # one frame larger than max_bytes: at most 65519 bytes are kept
        self._plain_pos = 0
        return self._take_plain(max_bytes)

    def read_frames(self, max_bytes: int | None = None) -> list[bytes]:
        """Decrypt complete buffered frames, one plaintext per frame, while they fit in ``max_bytes``
        (the first one always does). An empty list means more bytes must be fed.

        No frame is joined to another or copied again: a receiver handles many 64 KiB pieces instead of
        building (and freeing) quarter-megabyte buffers, which made the allocator thrash.
        """
        out: list[bytes] = []
        total = 0
        decrypt = self._recv.decrypt
        while True:
            frame = self._held
            if frame is None:
                frame = self._next_frame()
                if frame is None:
                    break
            else:
                self._held = None
            size = len(frame) - TAG_SIZE
            if out and max_bytes is not None and total + size > max_bytes:
                self._held = frame
                break
            plain = decrypt(frame)
            if plain:
                out.append(plain)
                total += len(plain)
        return out

    def _take_plain(self, max_bytes: int | None) -> bytes:
        start = self._plain_pos
        end = len(self._plain) if max_bytes is None else min(len(self._plain), start + max_bytes)
        out = self._plain[start:end]
        if end == len(self._plain):
            self._plain = b""
            self._plain_pos = 0
        else:
            self._plain_pos = end
        return out

    def _drained(self) -> None:
        """Every fed byte is parsed: let go of the chunk (up to a whole socket read, which an idle
        connection would otherwise hold until its next read)."""
        self._data = b""
        self._pos = 0

    def _next_frame(self) -> bytearray | memoryview | None:
        data, pos = self._data, self._pos
        avail = len(data) - pos
        partial = self._partial
        if partial:
            if len(partial) < 2:
                take = min(2 - len(partial), avail)
                partial += data[pos : pos + take]
                pos += take
                avail -= take
                if len(partial) < 2:
                    self._drained()
                    return None
            need = 2 + (partial[0] << 8 | partial[1]) - len(partial)
            take = min(need, avail)
            partial += memoryview(data)[pos : pos + take]
            self._pos = pos + take
            if take < need:
                self._drained()
                return None
            body = partial[2:]  # frames that straddle reads are the only copied ones
            partial.clear()
            return body
        if avail < 2:
            if avail:
                partial += data[pos:]
            self._drained()
            return None
        length = data[pos] << 8 | data[pos + 1]
        if avail < 2 + length:
            partial += memoryview(data)[pos:]
            self._drained()
            return None
        self._pos = pos + 2 + length
        return memoryview(data)[pos + 2 : pos + 2 + length]
