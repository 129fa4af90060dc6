"""trio adapter for the Noise transport phase: a :class:`SecureConnection` over a RawConnection."""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator
from typing import Final

import trio
from multiaddr import Multiaddr

from mycel.core.abc import Direction, RawConnection, SecureConnection
from mycel.core.errors import ProtocolViolation
from mycel.core.keys import PublicKey
from mycel.core.peer_id import PeerId
from mycel.security.noise.transport import MAX_PLAINTEXT, NoiseTransport

__all__ = ["NoiseConnection", "RECEIVE_CHUNK", "SEND_BATCH"]

# Size of each raw read. The transport core is fed only once drained, so it holds at most one such
# chunk plus one partial frame; a fast sender is held back by TCP flow control, not by our memory.
RECEIVE_CHUNK: Final = 256 * 1024
# One underlying send_all carries up to 64 frames (~4 MiB of plaintext); larger writes are cut into
# such batches so a huge send_all never doubles its memory in one go.
SEND_BATCH: Final = 64 * MAX_PLAINTEXT


class NoiseConnection(SecureConnection):
    """An authenticated, encrypted stream. Failed authentication of a received frame raises
    :class:`~mycel.core.errors.DecryptionError`; later receives raise ``trio.BrokenResourceError``."""

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
        self._raw = raw
        self._transport = transport
        self._local_peer = local_peer
        self._remote_peer = remote_peer
        self._remote_public_key = remote_public_key
        self._early_muxer = early_muxer
        self._protocol_id = protocol_id
        self._eof = False
        self._error: ProtocolViolation | None = None
        self._sending = False
        self._receiving = False
        if initial_data:
            transport.feed(initial_data)

    # --- identity and addressing ---

    @property
    def local_peer(self) -> PeerId:
        return self._local_peer

    @property
    def remote_peer(self) -> PeerId:
        return self._remote_peer

    @property
    def remote_public_key(self) -> PublicKey:
        return self._remote_public_key

    @property
    def local_addr(self) -> Multiaddr:
        return self._raw.local_addr

    @property
    def remote_addr(self) -> Multiaddr:
        return self._raw.remote_addr

    @property
    def direction(self) -> Direction:
        return self._raw.direction

    @property
    def security_protocol(self) -> str:
        return self._protocol_id

    @property
    def early_muxer(self) -> str | None:
        return self._early_muxer

    @property
    def raw(self) -> RawConnection:
        return self._raw

    # --- stream ---

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with self._send_guard():
            view = memoryview(data).cast("B")
            if not view:
                await self._raw.send_all(b"")
                return
            for off in range(0, len(view), SEND_BATCH):
                await self._raw.send_all(self._transport.encrypt(view[off : off + SEND_BATCH]))

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
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this Noise connection")
        self._receiving = True
        try:
            if self._error is not None:
                raise trio.BrokenResourceError("Noise connection failed earlier") from self._error
            while True:
                try:
                    plain = self._transport.read(max_bytes)
                except ProtocolViolation as exc:
                    self._error = exc
                    raise
                if plain is not None:
                    return plain
                if self._eof:
                    await trio.lowlevel.checkpoint()
                    return b""
                chunk = await self._raw.receive_some(RECEIVE_CHUNK)
                if not chunk:
                    self._eof = True
                    try:
                        self._transport.feed_eof()
                    except ProtocolViolation as exc:
                        self._error = exc
                        raise
                    return b""
                self._transport.feed(chunk)
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        await self._raw.aclose()

    def __repr__(self) -> str:
        return f"<NoiseConnection {self._direction_word()} {self._remote_peer!r} {self._raw.remote_addr}>"

    def _direction_word(self) -> str:
        return "to" if self._raw.direction is Direction.OUTBOUND else "from"
