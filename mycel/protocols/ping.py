"""Ping (``/ipfs/ping/1.0.0``): 32 random bytes echoed back; RTT = write → full echo read."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import trio

from mycel.core.abc import MuxedStream
from mycel.core.errors import MycelError, UnexpectedEOF
from mycel.core.framing import read_exactly
from mycel.service import Service, StreamHandler, not_running

if TYPE_CHECKING:
    from mycel.core.peer_id import PeerId
    from mycel.service import ServiceHost

PING_PROTOCOL = "/ipfs/ping/1.0.0"
PING_SIZE = 32
MAX_INBOUND_PER_PEER = 2  # the spec's SHOULD; a third concurrent ping stream from one peer is reset

log = logging.getLogger("mycel.protocols.ping")


class PingFailed(MycelError):
    """The echo did not match, or the stream ended early."""


async def ping_stream(stream: trio.abc.Stream, count: int = 1) -> list[float]:
    """Run ``count`` pings over an already negotiated stream; returns RTTs in seconds."""
    rtts: list[float] = []
    for _ in range(count):
        payload = os.urandom(PING_SIZE)
        start = trio.current_time()
        await stream.send_all(payload)
        try:
            echo = await read_exactly(stream, PING_SIZE)
        except UnexpectedEOF:
            raise PingFailed("stream ended mid-ping") from None
        if echo != payload:
            raise PingFailed("ping echo did not match")
        rtts.append(trio.current_time() - start)
    return rtts


async def serve_ping(stream: trio.abc.Stream) -> None:
    """Echo 32-byte payloads until the remote half-closes."""
    while True:
        try:
            data = await read_exactly(stream, PING_SIZE)
        except UnexpectedEOF as exc:
            if not exc.received:
                return  # a clean end between pings
            raise UnexpectedEOF(  # a ProtocolViolation
                f"truncated ping payload ({exc.received} bytes)", received=exc.received, expected=PING_SIZE
            ) from None
        await stream.send_all(data)


class Ping(Service):
    """The ping service: answers pings (at most MAX_INBOUND_PER_PEER streams per peer) and sends them.

    Every RTT measured by :meth:`ping` feeds the peer's latency in the peerstore (an EWMA).
    """

    def __init__(self) -> None:
        self._host: ServiceHost | None = None
        self._inbound: dict[PeerId, int] = {}

    def handlers(self) -> Mapping[str, StreamHandler]:
        return {PING_PROTOCOL: self._handle}

    async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._host = host
        task_status.started()

    async def _handle(self, stream: MuxedStream) -> None:
        peer = stream.connection.remote_peer
        if self._inbound.get(peer, 0) >= MAX_INBOUND_PER_PEER:
            log.debug("more than %d ping streams from %s; resetting", MAX_INBOUND_PER_PEER, peer)
            await stream.reset()
            return
        self._inbound[peer] = self._inbound.get(peer, 0) + 1
        try:
            await serve_ping(stream)
        finally:
            left = self._inbound[peer] - 1
            if left:
                self._inbound[peer] = left
            else:
                del self._inbound[peer]

    async def ping(self, peer: PeerId | str, count: int = 1) -> list[float]:
        """Ping ``peer`` (dialing it if needed) ``count`` times on one stream; RTTs in seconds."""
        if self._host is None:
            raise not_running(self)
        stream = await self._host.new_stream(peer, [PING_PROTOCOL], lazy=True)  # we read at once
        try:
            rtts = await ping_stream(stream, count)
            await stream.send_eof()
        finally:
            await stream.aclose()
        remote = stream.connection.remote_peer
        for rtt in rtts:
            self._host.peerstore.record_latency(remote, rtt)
        return rtts
