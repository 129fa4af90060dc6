"""Drive multistream-select over a trio stream.

Reads are exact (never past the end of a negotiation message), so nothing that follows the negotiation
(the security handshake, application data sent optimistically) is swallowed, and the stream needs no
wrapper afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from mycel.core.abc import Connection, Direction, MuxedStream
from mycel.core.errors import NegotiationError
from mycel.multistream.core import HEADER, DialerCore, ListenerCore, MessageDecoder


async def read_message(stream: trio.abc.ReceiveStream, decoder: MessageDecoder) -> str:
    """Read exactly one multistream message from ``stream`` (never past its end).

    Raises NegotiationError if the stream ends first, and what :meth:`MessageDecoder.next_message` raises.
    """
    while True:
        msg = decoder.next_message()
        if msg is not None:
            return msg
        data = await stream.receive_some(decoder.needed())
        if not data:
            raise NegotiationError("stream ended during multistream negotiation")
        decoder.feed(data)


async def select_outbound(stream: trio.abc.Stream, protocols: Sequence[str]) -> str:
    """Propose ``protocols`` in order; return the one the remote accepted."""
    core = DialerCore(protocols)
    decoder = MessageDecoder(expect_header=True)
    await stream.send_all(core.initial_bytes())
    while True:
        outcome = core.receive(await read_message(stream, decoder))
        if outcome.send:
            await stream.send_all(outcome.send)
        if outcome.selected is not None:
            return outcome.selected


async def select_inbound(
    stream: trio.abc.Stream,
    supports: Callable[[str], bool],
    protocols: Callable[[], Sequence[str]],
) -> str:
    """Answer proposals until one we support is chosen; return it."""
    core = ListenerCore(supports, protocols)
    decoder = MessageDecoder(expect_header=True)
    await stream.send_all(HEADER)
    while True:
        outcome = core.receive(await read_message(stream, decoder))
        if outcome.send:
            await stream.send_all(outcome.send)
        if outcome.selected is not None:
            return outcome.selected


async def select_lazy(stream: MuxedStream, protocol: str) -> MuxedStream:
    """Optimistic selection of a single protocol: send header + proposal and return at once.

    The answer is checked on the first read; data written before it travels right behind the proposal
    (0-RTT). A refusal surfaces as ProtocolNotSupported from the first ``receive_some``.
    """
    core = DialerCore([protocol])
    await stream.send_all(core.initial_bytes())
    return LazyNegotiatedStream(stream, core)


class LazyNegotiatedStream(MuxedStream):
    """A muxed stream whose multistream answer has not been read yet."""

    def __init__(self, inner: MuxedStream, core: DialerCore) -> None:
        self._inner = inner
        self._core: DialerCore | None = core
        self._lock = trio.Lock()
        self.protocol = core.proposing

    async def _settle(self) -> None:
        async with self._lock:
            core = self._core
            if core is None:
                return
            decoder = MessageDecoder(expect_header=True)
            while core.selected is None:
                core.receive(await read_message(self._inner, decoder))
            self._core = None

    @property
    def inner(self) -> MuxedStream:
        """The wrapped stream (reading it directly skips the check of the answer)."""
        return self._inner

    @property
    def stream_id(self) -> int:
        return self._inner.stream_id

    @property
    def direction(self) -> Direction:
        return self._inner.direction

    @property
    def connection(self) -> Connection:
        return self._inner.connection

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._core is not None:
            await self._settle()
        return await self._inner.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._inner.send_eof()

    async def reset(self) -> None:
        await self._inner.reset()

    async def aclose(self) -> None:
        await self._inner.aclose()
