"""trio adapter for the Noise transport phase: a :class:`SecureConnection` over a RawConnection."""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator, Sequence
from typing import Final

import trio

from mycel.core.abc import Direction, RawConnection
from mycel.core.errors import ProtocolViolation
from mycel.core.keys import PublicKey
from mycel.core.peer_id import PeerId
from mycel.security.base import RawSecureConnection
from mycel.security.noise.transport import MAX_FRAME, MAX_PLAINTEXT, NoiseTransport

__all__ = ["NoiseConnection", "RECEIVE_CHUNK", "SEND_BATCH"]

# Size of each raw read. The transport core is fed only once drained, so it holds at most one such
# chunk plus one partial frame; a fast sender is held back by TCP flow control, not by our memory.
RECEIVE_CHUNK: Final = 1024 * 1024
# One underlying send_all carries up to 64 frames (~4 MiB of plaintext); larger writes are cut into
# such batches so a huge send_all never doubles its memory in one go.
SEND_BATCH: Final = 64 * MAX_PLAINTEXT
# Ciphertext of a batch of POOLED_MIN bytes or more goes into a reused buffer: fresh megabyte-sized
# buffers on every write cost page faults that were ~10% of a bulk sender's time.
POOLED_MIN: Final = 64 * 1024
POOLED_DEFAULT: Final = NoiseTransport.sealed_bound(16 * MAX_PLAINTEXT, 64)  # a muxer batch of ~1 MiB
# Kept for reuse per trio run, beyond that buffers are dropped: two ~1 MiB buffers, enough for a bulk
# sender (one batch in flight per connection) and one more; a larger pool stayed resident after
# churn (8 MiB kept: +5 MiB RSS after 1000 hostile connections, #12).
POOL_KEEP_BYTES: Final = 2 * 1024 * 1024


class _BufferPool:
    """Reusable ciphertext buffers shared by the Noise connections of one trio run (a ``RunVar``).

    Bounded: buffers are kept while their total is at most ``POOL_KEEP_BYTES``; idle connections hold
    none (a buffer is only borrowed for the length of one send).
    """

    __slots__ = ("_free", "_kept")

    def __init__(self) -> None:
        self._free: list[bytearray] = []
        self._kept = 0

    def take(self, size: int) -> bytearray:
        free = self._free
        for i in range(len(free) - 1, -1, -1):
            if len(free[i]) >= size:
                buf = free.pop(i)
                self._kept -= len(buf)
                return buf
        return bytearray(max(size, POOLED_DEFAULT))

    def give(self, buf: bytearray) -> None:
        if self._kept + len(buf) <= POOL_KEEP_BYTES:
            self._free.append(buf)
            self._kept += len(buf)


_POOL: trio.lowlevel.RunVar[_BufferPool] = trio.lowlevel.RunVar("mycel.noise.send_buffers")


def _pool() -> _BufferPool:
    try:
        return _POOL.get()
    except LookupError:
        pool = _BufferPool()
        _POOL.set(pool)
        return pool


class NoiseConnection(RawSecureConnection):
    """An authenticated, encrypted stream. Failed authentication of a received frame raises
    :class:`~mycel.core.errors.DecryptionError`; later receives raise ``trio.BrokenResourceError``."""

    buffer_bound = 2 * (MAX_FRAME + 2)  # an incomplete frame and a complete one held for the next read

    def __init__(
        self,
        raw: RawConnection,
        transport: NoiseTransport,
        *,
        local_peer: PeerId,
        remote_peer: PeerId,
        remote_public_key: PublicKey,
        early_muxer: str | None = None,
        initial_data: bytes = b"",
        protocol_id: str = "/noise",
    ) -> None:
        super().__init__(
            raw,
            local_peer=local_peer,
            remote_peer=remote_peer,
            remote_public_key=remote_public_key,
            protocol_id=protocol_id,
            early_muxer=early_muxer,
        )
        self._transport = transport
        self._eof = False
        self._error: ProtocolViolation | None = None
        self._sending = False
        self._receiving = False
        if initial_data:
            transport.feed(initial_data)

    # --- identity and addressing ---








    @property
    def record_size(self) -> int:
        """The most plaintext one Noise frame carries; chunks of this size are sealed one per frame."""
        return MAX_PLAINTEXT



    # --- stream ---

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with self._send_guard():
            view = memoryview(data)
            if view.ndim != 1 or view.itemsize != 1:
                view = view.cast("B")
            if not view:
                await self._raw.send_all(b"")
                return
            for off in range(0, len(view), SEND_BATCH):
                await self._send_sealed([view[off : off + SEND_BATCH]])

    async def send_chunks(self, chunks: Sequence[bytes | bytearray | memoryview]) -> None:
        """Send ``chunks`` as one byte stream, encrypted without joining them first.

        Chunks of 4 KiB or more are encrypted straight from their buffers (see
        :meth:`NoiseTransport.encrypt_chunks`), so a muxer can hand over its frames as they are.
        """
        with self._send_guard():
            batch: list[bytes | bytearray | memoryview] = []
            size = 0
            for chunk in chunks:
                n = len(chunk)
                if size + n > SEND_BATCH and batch:
                    await self._send_sealed(batch)
                    batch, size = [], 0
                if n > SEND_BATCH:
                    view = memoryview(chunk)
                    for off in range(0, n, SEND_BATCH):
                        await self._send_sealed([view[off : off + SEND_BATCH]])
                    continue
                batch.append(chunk)
                size += n
            if batch:
                await self._send_sealed(batch)

    async def _send_sealed(self, chunks: Sequence[bytes | bytearray | memoryview]) -> None:
        """Encrypt ``chunks`` (at most SEND_BATCH bytes, or a single chunk of that size) and send."""
        transport = self._transport
        bound = transport.sealed_bound(sum(len(c) for c in chunks), len(chunks))
        if bound < POOLED_MIN:
            out = bytearray(bound)
            n = transport.encrypt_chunks(chunks, out)
            await self._raw.send_all(memoryview(out)[:n])
            return
        pool = _pool()
        out = pool.take(bound)
        try:
            n = transport.encrypt_chunks(chunks, out)
            with memoryview(out) as view:
                await self._raw.send_all(view[:n])
        finally:
            pool.give(out)

    async def wait_send_all_might_not_block(self) -> None:
        with self._send_guard():
            await self._raw.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        with self._send_guard():
            await self._raw.send_eof()

    @contextlib.contextmanager
    def _send_guard(self) -> Iterator[None]:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this Noise connection")
        self._sending = True
        try:
            yield
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)  # TypeError for non-integers, as trio streams do
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        frames = await self._receive(max_bytes, whole_frames=False)
        return frames[0] if frames else b""

    async def receive_frames(self, max_bytes: int = RECEIVE_CHUNK) -> list[bytes]:
        """Like ``receive_some`` but one plaintext per Noise frame, never joined (``[]`` at EOF).

        For a muxer reading bulk data: no large buffer is built and freed per read.
        """
        return await self._receive(max_bytes, whole_frames=True)

    async def _receive(self, max_bytes: int | None, whole_frames: bool) -> list[bytes]:
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this Noise connection")
        self._receiving = True
        transport = self._transport
        try:
            if self._error is not None:
                raise trio.BrokenResourceError("Noise connection failed earlier") from self._error
            while True:
                try:
                    if whole_frames:
                        frames = transport.read_frames(max_bytes)
                        if frames:
                            return frames
                    else:
                        plain = transport.read(max_bytes)
                        if plain is not None:
                            return [plain]
                except ProtocolViolation as exc:
                    self._error = exc
                    raise
                if self._eof:
                    await trio.lowlevel.checkpoint()
                    return []
                chunk = await self._raw.receive_some(RECEIVE_CHUNK)
                if not chunk:
                    self._eof = True
                    try:
                        transport.feed_eof()
                    except ProtocolViolation as exc:
                        self._error = exc
                        raise
                    return []
                transport.feed(chunk)
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        await self._raw.aclose()

    def __repr__(self) -> str:
        return f"<NoiseConnection {self._direction_word()} {self._remote_peer!r} {self._raw.remote_addr}>"

    def _direction_word(self) -> str:
        return "to" if self._raw.direction is Direction.OUTBOUND else "from"
