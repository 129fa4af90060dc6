"""The dial cases and the command line shared by the Python peer programs (go_peer.py, py/peer.py).

Only trio and the standard library: py/peer.py imports this from the py-libp2p virtualenv, which has
no mycel. The js peer (js/peer.mjs) implements the same cases with the same report shape.

Report shape (one JSON object on stdout)::

    {"connect": {...}, "identify": {...}, "ping": {...}, "echo_1mib": {...},
     "echo_64_streams": {...}, "half_close": {...}, "reset": {...}}

each value ``{"ok": bool, "detail": str, ...figures}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

log = logging.getLogger("mycel.interop.cases")

ECHO = "/echo/1.0.0"
PERF = "/perf/1.0.0"
CASES = ("connect", "identify", "ping", "echo_1mib", "echo_64_streams", "half_close", "reset")
EXIT_UNSUPPORTED = 3
CHUNK = 64 * 1024

Report = dict[str, Any]


class CaseStream(Protocol):
    """The few stream operations the cases need, whatever the implementation underneath."""

    async def write(self, data: bytes | memoryview) -> None: ...

    async def read(self, max_bytes: int) -> bytes:
        """Return up to ``max_bytes``; ``b""`` at EOF; raise on reset."""
        ...

    async def close_write(self) -> None: ...

    async def reset(self) -> None: ...

    async def close(self) -> None: ...


OpenStream = Callable[[], Awaitable[CaseStream]]


@dataclass
class DialHooks:
    """What an implementation plugs into :func:`run_dial_cases`."""

    connect: Callable[[], Awaitable[Report]]
    identify: Callable[[], Awaitable[Report]]
    ping: Callable[[], Awaitable[Report]]
    open_echo: OpenStream
    # False where the stream cannot be half-closed without losing the echo (p2pd's control socket):
    # the echo cases then read the whole echo back before closing.
    half_close_keeps_reading: bool = True
    # False where a stream cannot write while a read is pending (py-libp2p 0.8.1 mplex: read() and
    # write() share one lock): the echo cases then alternate writes and reads (see echo_roundtrip).
    concurrent_read_write: bool = True
    reset_detail: str = "reset the stream"


class CaseFailed(Exception):
    """A case ran but the behaviour was wrong; the message is the detail."""


# --- cases -----------------------------------------------------------------------------------------


async def _pump_out(stream: CaseStream, payload: bytes) -> None:
    view = memoryview(payload)
    for off in range(0, len(view), CHUNK):
        await stream.write(view[off : off + CHUNK])


async def _read_until_eof(stream: CaseStream, limit: int) -> bytearray:
    """Read to EOF; more than ``limit`` bytes is a failure (the echo can never be longer)."""
    got = bytearray()
    while True:
        data = await stream.read(CHUNK)
        if not data:
            return got
        got += data
        if len(got) > limit:
            raise CaseFailed(f"received {len(got)} bytes, more than the {limit} sent")


async def _read_exactly(stream: CaseStream, n: int) -> bytearray:
    got = bytearray()
    while len(got) < n:
        data = await stream.read(min(CHUNK, n - len(got)))
        if not data:
            raise CaseFailed(f"EOF after {len(got)} of {n} echoed bytes")
        got += data
    return got


def _first_mismatch(a: bytes | bytearray, b: bytes | bytearray) -> int:
    n = min(len(a), len(b))
    lo = 0
    # binary search on prefix equality: no per-byte loop over a whole MiB
    hi = n
    while lo < hi:
        mid = (lo + hi) // 2
        if a[lo : mid + 1] == b[lo : mid + 1]:
            lo = mid + 1
        else:
            hi = mid
    return lo


async def _lockstep(stream: CaseStream, payload: bytes, got: bytearray) -> None:
    """Write chunk by chunk, reading back all but the last chunk's echo after each write (never a read
    and a write pending at once), then half-close and read the rest to EOF."""
    view = memoryview(payload)
    written = 0
    for off in range(0, len(view), CHUNK):
        chunk = view[off : off + CHUNK]
        await stream.write(chunk)
        written += len(chunk)
        while len(got) < written - CHUNK:
            data = await stream.read(CHUNK)
            if not data:
                raise CaseFailed(f"EOF after {len(got)} of {len(payload)} echoed bytes")
            got += data
    await stream.close_write()
    got.extend(await _read_until_eof(stream, len(payload) - len(got)))


async def echo_roundtrip(
    open_echo: OpenStream, payload: bytes, half_close_keeps_reading: bool, concurrent: bool = True
) -> bytearray:
    """Write ``payload`` on a fresh echo stream, half-close, read to EOF; return what came back."""
    stream = await open_echo()
    got = bytearray()
    try:
        if not concurrent:
            await _lockstep(stream, payload, got)
        elif half_close_keeps_reading:

            async def writer() -> None:
                await _pump_out(stream, payload)
                await stream.close_write()

            async def reader() -> None:
                got.extend(await _read_until_eof(stream, len(payload)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                nursery.start_soon(reader)
        else:

            async def writer_only() -> None:
                await _pump_out(stream, payload)

            async def reader_exact() -> None:
                got.extend(await _read_exactly(stream, len(payload)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer_only)
                nursery.start_soon(reader_exact)
    finally:
        await stream.close()
    return got


def _compare(payload: bytes, got: bytes | bytearray) -> None:
    if got != payload:
        at = _first_mismatch(payload, got)
        raise CaseFailed(f"echo differs: sent {len(payload)} bytes, got {len(got)}, first difference at {at}")


async def case_echo_1mib(hooks: DialHooks) -> Report:
    payload = os.urandom(1 << 20)
    start = time.perf_counter()
    got = await echo_roundtrip(hooks.open_echo, payload, hooks.half_close_keeps_reading, hooks.concurrent_read_write)
    elapsed = time.perf_counter() - start
    _compare(payload, got)
    how = "write, half-close, read to EOF" if hooks.half_close_keeps_reading else "write, read 1 MiB back, close"
    if not hooks.concurrent_read_write:
        how = "writes and reads alternated in 64 KiB steps, then half-close, read to EOF"
    return {
        "ok": True,
        "detail": f"1 MiB echoed intact ({how})",
        "bytes": len(payload),
        "ms": round(elapsed * 1000, 3),
        "mb_s": round(len(payload) / elapsed / 1e6, 2),
    }


async def case_echo_64_streams(hooks: DialHooks) -> Report:
    n, size = 64, 64 * 1024
    errors: list[str] = []
    good = 0

    async def one(i: int) -> None:
        nonlocal good
        payload = os.urandom(size)
        try:
            got = await echo_roundtrip(
                hooks.open_echo, payload, hooks.half_close_keeps_reading, hooks.concurrent_read_write
            )
            _compare(payload, got)
            good += 1
        except Exception as exc:  # one stream's failure is a finding, not a crash
            errors.append(f"stream {i}: {_error_detail(exc)}")

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    elapsed = time.perf_counter() - start
    detail = f"{good}/{n} streams of {size} bytes echoed intact"
    if errors:
        detail += "; first error: " + sorted(errors)[0]
    return {"ok": good == n, "detail": detail, "streams": n, "ok_streams": good, "ms": round(elapsed * 1000, 3)}


async def case_half_close(hooks: DialHooks) -> Report:
    payload = os.urandom(10_000)
    stream = await hooks.open_echo()
    try:
        await _pump_out(stream, payload)
        await stream.close_write()
        got = await _read_until_eof(stream, len(payload))
    finally:
        await stream.close()
    if len(got) < len(payload):
        raise CaseFailed(f"EOF after {len(got)} of {len(payload)} bytes: the echo was cut short by the half-close")
    _compare(payload, got)
    return {"ok": True, "detail": "all bytes echoed after our half-close, then EOF", "sent": len(payload), "received": len(got)}


async def case_reset(hooks: DialHooks) -> Report:
    stream = await hooks.open_echo()
    try:
        await stream.write(b"r" * 64)
        first = await stream.read(1)  # the remote handler is running and echoing
        if not first:
            raise CaseFailed("echo stream ended before anything was echoed")
        await stream.reset()
    except BaseException:
        await stream.close()
        raise
    payload = os.urandom(4096)
    got = await echo_roundtrip(hooks.open_echo, payload, hooks.half_close_keeps_reading, hooks.concurrent_read_write)
    _compare(payload, got)
    return {"ok": True, "detail": f"{hooks.reset_detail}; a new echo stream on the same connection then worked"}


# --- orchestration ---------------------------------------------------------------------------------


def _error_detail(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):  # a nursery's group: report what is inside
        return "; ".join(sorted({_error_detail(sub) for sub in exc.exceptions}))
    if isinstance(exc, CaseFailed):
        return str(exc)
    text = str(exc)
    if not text and exc.__cause__ is not None:  # py-libp2p wraps muxer errors without a message
        return f"{type(exc).__name__} (from {_error_detail(exc.__cause__)})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def guarded(name: str, fn: Callable[[], Awaitable[Report]], timeout: float) -> Report:
    """Run one case; any exception or the timeout becomes ``{"ok": False, "detail": ...}``."""
    start = time.perf_counter()
    with trio.move_on_after(timeout):
        try:
            report = await fn()
        except Exception as exc:
            log.info("case %s failed: %s", name, _error_detail(exc), exc_info=True)
            return {"ok": False, "detail": _error_detail(exc)}
        report.setdefault("ok", True)
        report.setdefault("detail", "")
        return report
    log.info("case %s timed out after %.1fs", name, time.perf_counter() - start)
    return {"ok": False, "detail": f"timed out after {timeout:g}s"}


async def run_dial_cases(hooks: DialHooks, case_timeout: float) -> dict[str, Report]:
    steps: dict[str, Callable[[], Awaitable[Report]]] = {
        "connect": hooks.connect,
        "identify": hooks.identify,
        "ping": hooks.ping,
        "echo_1mib": lambda: case_echo_1mib(hooks),
        "echo_64_streams": lambda: case_echo_64_streams(hooks),
        "half_close": lambda: case_half_close(hooks),
        "reset": lambda: case_reset(hooks),
    }
    results: dict[str, Report] = {}
    for name, fn in steps.items():
        results[name] = await guarded(name, fn, case_timeout)
    return results


# --- command line ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="libp2p interop peer (listen or dial)")
    sub = parser.add_subparsers(dest="mode", required=True)
    for mode in ("listen", "dial"):
        p = sub.add_parser(mode)
        p.add_argument("--transport", required=True)
        p.add_argument("--security", required=True)
        p.add_argument("--muxer", required=True)
        p.add_argument("--ip", default="127.0.0.1")
        p.add_argument("--case-timeout", type=float, default=30.0, help="seconds per dial case")
        if mode == "dial":
            p.add_argument("target", help="multiaddr ending in /p2p/<peer id>")
    return parser.parse_args(argv)


def emit(obj: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed at once (the adapters wait for it)."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def emit_stream_reset(protocol: str, peer: str, detail: str = "") -> None:
    event: dict[str, Any] = {"event": "stream_reset", "protocol": protocol, "peer": peer}
    if detail:
        event["detail"] = detail
    emit(event)


def unsupported(reason: str) -> int:
    emit({"unsupported": reason})
    return EXIT_UNSUPPORTED


def setup_logging() -> None:
    level = os.environ.get("INTEROP_LOG", "INFO").upper()
    logging.basicConfig(
        stream=sys.stderr, level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )


async def until_sigterm(fn: Callable[[], Awaitable[int]]) -> int:
    """Run ``fn``; a SIGTERM cancels it (so its cleanup runs) and gives exit status 143."""
    import signal

    result: list[int] = []
    async with trio.open_nursery() as nursery:

        async def body() -> None:
            result.append(await fn())
            nursery.cancel_scope.cancel()

        async def watch() -> None:
            with trio.open_signal_receiver(signal.SIGTERM) as sigs:
                async for _ in sigs:
                    log.info("SIGTERM: stopping")
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(watch)
        nursery.start_soon(body)
    return result[0] if result else 143


async def wait_for_shutdown() -> None:
    """Return when stdin reaches EOF or SIGTERM/SIGINT arrives."""
    async with trio.open_nursery() as nursery:

        async def stdin_eof() -> None:
            await read_stdin(lambda _: False)
            nursery.cancel_scope.cancel()

        nursery.start_soon(stdin_eof)
        nursery.start_soon(cancel_on_signal, nursery.cancel_scope)


async def read_stdin(on_data: Callable[[bytes], bool]) -> None:
    """Hand stdin's bytes to ``on_data`` until EOF, or until it returns True (stop reading)."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    try:
        while data := await stdin.receive_some(65536):
            if on_data(data):
                break
    except (trio.BrokenResourceError, OSError):
        pass
    finally:
        await stdin.aclose()
    log.info("stdin closed: shutting down")


async def cancel_on_signal(scope: trio.CancelScope) -> None:
    """Cancel ``scope`` when SIGTERM or SIGINT arrives."""
    import signal

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
        async for sig in sigs:
            log.info("signal %s: shutting down", sig)
            scope.cancel()
            return
