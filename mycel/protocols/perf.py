"""Perf (``/perf/1.0.0``): the client sends u64 BE "bytes to send back", uploads, half-closes, then
reads the requested bytes until EOF. Not enabled by default (it lets a peer ask for unbounded work)."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from mycel.core.abc import MuxedStream
from mycel.core.errors import ProtocolViolation, UnexpectedEOF
from mycel.service import Service, StreamHandler

PERF_PROTOCOL = "/perf/1.0.0"
BLOCK = 256 * 1024
_ZEROS = bytes(BLOCK)


@dataclass(frozen=True)
class PerfResult:
    """What one :func:`run_perf` measured; seconds on the trio clock."""

    upload_bytes: int
    """Bytes we sent."""
    download_bytes: int
    """Bytes the server sent back (what we asked for)."""
    upload_seconds: float
    """From the request until our half-close was sent."""
    download_seconds: float
    """From our half-close until the server's EOF."""


async def _send_zeros(stream: trio.abc.SendStream, n: int) -> None:
    view = memoryview(_ZEROS)
    while n > 0:
        k = min(n, BLOCK)
        await stream.send_all(view[:k])
        n -= k


async def _drain(stream: trio.abc.ReceiveStream) -> int:
    total = 0
    while True:
        chunk = await stream.receive_some(BLOCK)
        if not chunk:
            return total
        total += len(chunk)


async def serve_perf(stream: trio.abc.HalfCloseableStream) -> None:
    """Serve one perf request: read the 8-byte length, drain the upload to EOF, send that many zero
    bytes, half-close. Raises ProtocolViolation if the stream ends before the length.
    """
    # read inline rather than through framing.read_exactly: an idle perf stream (what the memory
    # benchmark holds 10,000 of) then costs no second coroutine frame
    header = b""
    while len(header) < 8:
        chunk = await stream.receive_some(8 - len(header))
        if not chunk:
            raise UnexpectedEOF("perf stream ended before the 8-byte length", received=len(header), expected=8)
        header += chunk
    (to_send,) = struct.unpack(">Q", header)
    await _drain(stream)
    await _send_zeros(stream, to_send)
    await stream.send_eof()


async def run_perf(stream: trio.abc.HalfCloseableStream, upload: int, download: int) -> PerfResult:
    """Run one perf request as the client: send ``upload`` bytes, ask for ``download`` back.

    Raises ProtocolViolation if the server sends back another amount.
    """
    start = trio.current_time()
    await stream.send_all(struct.pack(">Q", download))
    await _send_zeros(stream, upload)
    await stream.send_eof()
    mid = trio.current_time()
    got = await _drain(stream)
    end = trio.current_time()
    if got != download:
        raise ProtocolViolation(f"perf: asked for {download} bytes, got {got}")
    return PerfResult(upload, download, mid - start, end - mid)


class Perf(Service):
    """The perf service: serves ``/perf/1.0.0``. Not in the default services: a peer may ask it for
    unbounded work (up to 2**64-1 bytes per stream).
    """

    def handlers(self) -> Mapping[str, StreamHandler]:
        return {PERF_PROTOCOL: self._handle}

    async def _handle(self, stream: MuxedStream) -> None:
        await serve_perf(stream)
