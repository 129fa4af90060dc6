"""A RawConnection test double over any trio HalfCloseableStream (e.g. ``memory_stream_pair``)."""

from __future__ import annotations

import trio
import trio.testing
from multiaddr import Multiaddr

from mycel.core.abc import Direction, RawConnection

__all__ = ["StreamRawConnection", "memory_raw_pair", "DIALER_ADDR", "LISTENER_ADDR"]

DIALER_ADDR = Multiaddr("/ip4/127.0.0.1/tcp/1")
LISTENER_ADDR = Multiaddr("/ip4/127.0.0.1/tcp/2")


class StreamRawConnection(RawConnection):
    """Wraps a trio stream with fixed addresses and a direction."""

    def __init__(
        self,
        stream: trio.abc.HalfCloseableStream,
        local_addr: Multiaddr,
        remote_addr: Multiaddr,
        direction: Direction,
    ) -> None:
        self.stream = stream
        self._local_addr = local_addr
        self._remote_addr = remote_addr
        self._direction = direction

    @property
    def local_addr(self) -> Multiaddr:
        return self._local_addr

    @property
    def remote_addr(self) -> Multiaddr:
        return self._remote_addr

    @property
    def direction(self) -> Direction:
        return self._direction

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


def memory_raw_pair(
    dialer_addr: Multiaddr = DIALER_ADDR, listener_addr: Multiaddr = LISTENER_ADDR
) -> tuple[StreamRawConnection, StreamRawConnection]:
    """``(dialer, listener)`` connected by ``trio.testing.memory_stream_pair()``."""
    a, b = trio.testing.memory_stream_pair()
    dialer = StreamRawConnection(a, dialer_addr, listener_addr, Direction.OUTBOUND)
    listener = StreamRawConnection(b, listener_addr, dialer_addr, Direction.INBOUND)
    return dialer, listener
