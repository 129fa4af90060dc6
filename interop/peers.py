"""Adapters that run the real go / js / py-libp2p interop peers as subprocesses.

    from interop.peers import GO, JS, PY, Stack

    stack = Stack("tcp", "noise", "yamux")
    async with JS.listen(stack) as listener:            # ready: peer id and addrs known
        result = await PY.dial(stack, listener.addrs[0], timeout=60)
        result.cases["echo_1mib"]["ok"]
        await listener.wait_for_event("stream_reset", timeout=5)

Every process started here is stopped by its PID (graceful first: stdin closed, then SIGTERM, then
SIGKILL to its process group, which also takes p2pd down with go_peer.py). Output is captured with
bounds: stdout lines up to 1 MiB each, at most 10,000 events kept, the last 256 KiB of stderr.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from mycel.core.errors import reraise_unwrapped

log = logging.getLogger("mycel.interop.peers")

INTEROP_DIR = Path(__file__).resolve().parent
REPO_DIR = INTEROP_DIR.parent
EXIT_UNSUPPORTED = 3
# transports that bring their own security and stream muxing (a Stack with security=muxer=None)
STANDALONE_TRANSPORTS = frozenset({"quic-v1"})
CASES = ("connect", "identify", "ping", "echo_1mib", "echo_64_streams", "half_close", "reset")

MAX_LINE = 1024 * 1024  # a longer stdout line is a broken peer: the adapter stops reading and kills it
MAX_EVENTS = 10_000  # events beyond this push out the oldest ones
STDERR_TAIL = 256 * 1024  # only the last 256 KiB of a peer's stderr are kept
READY_TIMEOUT = 60.0
STOP_GRACE = 5.0


class PeerError(Exception):
    """A peer program could not be started or did not follow the contract."""


class Unsupported(PeerError):
    """The implementation cannot run this stack; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Stack:
    transport: str
    security: str | None
    muxer: str | None

    def __str__(self) -> str:
        return "/".join(p for p in (self.transport, self.security, self.muxer) if p)

    def args(self) -> list[str]:
        return [
            "--transport", self.transport,
            "--security", self.security or "none",
            "--muxer", self.muxer or "none",
        ]  # fmt: skip


@dataclass
class DialResult:
    """What a dialer printed. ``cases`` is empty when it printed no report (see ``error``)."""

    cases: dict[str, dict[str, Any]]
    log: str
    returncode: int | None
    elapsed: float
    unsupported: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.cases) and all(c.get("ok") is True for c in self.cases.values())


class _Tail:
    """The last ``limit`` bytes written to it (bounded: older bytes are dropped)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()
        self.dropped = 0

    def feed(self, data: bytes | bytearray) -> None:
        self._buf += data
        excess = len(self._buf) - self.limit
        if excess > 0:
            del self._buf[:excess]
            self.dropped += excess

    def text(self) -> str:
        prefix = f"[... {self.dropped} earlier bytes dropped ...]\n" if self.dropped else ""
        return prefix + self._buf.decode(errors="replace")


class _LineSplitter:
    """Sans-IO: bytes in, complete lines out; a line over ``limit`` raises PeerError."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        self._buf += data
        if b"\n" not in data:
            if len(self._buf) > self.limit:
                raise PeerError(f"peer wrote a stdout line longer than {self.limit} bytes")
            return []
        *lines, rest = self._buf.split(b"\n")
        self._buf = bytearray(rest)
        if len(self._buf) > self.limit or any(len(line) > self.limit for line in lines):
            raise PeerError(f"peer wrote a stdout line longer than {self.limit} bytes")
        return [bytes(line) for line in lines]

    def rest(self) -> bytes:
        return bytes(self._buf)


def parse_line(line: bytes) -> dict[str, Any] | None:
    """A stdout line as a JSON object, or None if it is not one."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal the process group our child leads (``start_new_session``): the child and what it started."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def _stop_process(proc: trio.Process, close_stdin: bool = True) -> None:
    """Stop one child by PID: stdin EOF, then SIGTERM, then SIGKILL, each to its own process group."""
    with trio.CancelScope(shield=True):
        if close_stdin and proc.stdin is not None:
            await trio.aclose_forcefully(proc.stdin)
            with trio.move_on_after(STOP_GRACE):
                await proc.wait()
        if proc.returncode is None:
            _signal_group(proc.pid, signal.SIGTERM)
            with trio.move_on_after(STOP_GRACE):
                await proc.wait()
        if proc.returncode is None:
            log.warning("peer pid %d ignored SIGTERM: killing its process group", proc.pid)
            _signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
        # the child is gone; anything it started and left behind (p2pd) is still in its group
        _signal_group(proc.pid, signal.SIGKILL)


async def _drain_stderr(stream: trio.abc.ReceiveStream, tail: _Tail) -> None:
    async for chunk in stream:
        tail.feed(chunk)


class ListeningPeer:
    """A running listener: ``peer_id`` and ``addrs`` once entered; ``events()``; ``log``."""

    def __init__(self, impl: PeerImpl, stack: Stack) -> None:
        self.impl = impl
        self.stack = stack
        self.peer_id = ""
        self.addrs: list[str] = []
        self.info: dict[str, Any] = {}  # the whole ready line
        self._events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self._events_changed = trio.Condition()
        self._stderr = _Tail(STDERR_TAIL)
        self._proc: trio.Process | None = None
        self._stdout_closed = False

    @property
    def log(self) -> str:
        return self._stderr.text()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Events printed so far (``{"event": kind, ...}`` lines), optionally of one kind."""
        return [e for e in self._events if kind is None or e.get("event") == kind]

    async def wait_for_event(self, kind: str, timeout: float, count: int = 1) -> list[dict[str, Any]]:
        """Wait until ``count`` events of ``kind`` were printed; return them (fewer on timeout)."""
        with trio.move_on_after(timeout):
            async with self._events_changed:
                while len(self.events(kind)) < count and not self._stdout_closed:
                    await self._events_changed.wait()
        return self.events(kind)

    async def _read_stdout(self, stdout: trio.abc.ReceiveStream, ready: trio.Event, errors: list[str]) -> None:
        splitter = _LineSplitter(MAX_LINE)
        try:
            async for chunk in stdout:
                for line in splitter.feed(chunk):
                    await self._handle_line(line, ready, errors)
        except PeerError as exc:
            errors.append(str(exc))
            ready.set()
        finally:
            async with self._events_changed:
                self._stdout_closed = True
                self._events_changed.notify_all()
            ready.set()

    async def _handle_line(self, line: bytes, ready: trio.Event, errors: list[str]) -> None:
        obj = parse_line(line)
        if obj is None:
            if line.strip():
                log.debug("%s listener: non-JSON stdout line %r", self.impl.key, line[:200])
            return
        if "unsupported" in obj:
            errors.append(f"unsupported: {obj['unsupported']}")
            ready.set()
        elif "event" in obj:
            async with self._events_changed:
                self._events.append(obj)
                self._events_changed.notify_all()
        elif "peer_id" in obj and not ready.is_set():
            self.info = obj
            self.peer_id = str(obj["peer_id"])
            self.addrs = [str(a) for a in obj.get("addrs", [])]
            ready.set()

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[ListeningPeer]:
        reason = self.impl.unsupported_reason(self.stack)
        if reason is not None:
            raise Unsupported(reason)
        cmd = self.impl.command("listen", self.stack)
        log.info("starting %s listener: %s", self.impl.key, " ".join(cmd))
        proc = await trio.lowlevel.open_process(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, so a stuck peer is killed with its children
            cwd=str(REPO_DIR),
        )
        self._proc = proc
        assert proc.stdout is not None and proc.stderr is not None
        ready = trio.Event()
        errors: list[str] = []
        stopped = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_stdout, proc.stdout, ready, errors)
                nursery.start_soon(_drain_stderr, proc.stderr, self._stderr)
                with trio.move_on_after(READY_TIMEOUT) as waited:
                    await ready.wait()
                if waited.cancelled_caught:
                    raise PeerError(f"{self.impl.key} listener not ready after {READY_TIMEOUT:g}s:\n{self.log}")
                for err in errors:
                    if err.startswith("unsupported: "):
                        raise Unsupported(err.removeprefix("unsupported: "))
                    raise PeerError(f"{self.impl.key} listener: {err}")
                if not self.addrs:
                    raise PeerError(f"{self.impl.key} listener exited or gave no address:\n{self.log}")
                log.info("%s listener %s ready on %s", self.impl.key, self.peer_id, self.addrs)
                try:
                    yield self
                finally:
                    await _stop_process(proc)
                    stopped = True
                    nursery.cancel_scope.cancel()
        finally:
            if not stopped:
                await _stop_process(proc)

    async def __aenter__(self) -> ListeningPeer:
        self._cm = self._run()
        try:
            return await self._cm.__aenter__()
        except BaseExceptionGroup as group:
            reraise_unwrapped(group)

    async def __aexit__(self, *exc: Any) -> bool | None:
        try:
            return await self._cm.__aexit__(*exc)
        except BaseExceptionGroup as group:
            reraise_unwrapped(group)


@dataclass
class PeerImpl:
    """One implementation's peer program and what it supports."""

    key: str
    name: str
    transports: frozenset[str]
    securities: frozenset[str]
    muxers: frozenset[str]
    program: Sequence[str]  # interpreter + script, relative to the repo root
    notes: dict[str, str] = field(default_factory=dict)
    # can the listener tell a remote reset from a half-close (and print a stream_reset event)?
    reports_resets: bool = True
    # does an echo stream survive the dialer's half-close until the echo is complete?
    echo_after_half_close: bool = True
    # transport -> how many times the usual per-case timeout this peer needs (slow implementations)
    case_timeout_factor: Mapping[str, float] = field(default_factory=dict)

    def missing(self) -> str | None:
        """Why the peer program cannot run here (not installed), or None."""
        for part in self.program[:1]:
            if not Path(part).exists():
                return f"{part} missing: run interop/install.sh"
        return None

    def unsupported_reason(self, stack: Stack) -> str | None:
        if stack.transport not in self.transports:
            return f"{self.name}: transport {stack.transport} not supported (has {sorted(self.transports)})"
        if stack.transport in STANDALONE_TRANSPORTS:
            if stack.security is not None or stack.muxer is not None:
                return f"{stack.transport} brings its own security and streams: {stack} is not a stack"
            return None
        if stack.security not in self.securities:
            return f"{self.name}: security {stack.security} not supported (has {sorted(self.securities)})"
        if stack.muxer not in self.muxers:
            return f"{self.name}: muxer {stack.muxer} not supported (has {sorted(self.muxers)})"
        return None

    def timeout_factor(self, stack: Stack) -> float:
        """Scale for the per-case (and whole-dialer) timeouts of a cell with this peer on ``stack``."""
        return self.case_timeout_factor.get(stack.transport, 1.0)

    def command(self, mode: str, stack: Stack, *extra: str) -> list[str]:
        return [*self.program, mode, *stack.args(), *extra]

    def listen(self, stack: Stack) -> ListeningPeer:
        """``async with impl.listen(stack) as peer:`` starts a listener and waits for its ready line."""
        return ListeningPeer(self, stack)

    async def dial(self, stack: Stack, target: str, timeout: float, case_timeout: float | None = None) -> DialResult:
        """Run the dialer against ``target`` (a multiaddr with /p2p/); kill it after ``timeout`` s."""
        reason = self.unsupported_reason(stack)
        if reason is not None:
            return DialResult({}, "", None, 0.0, unsupported=reason)
        per_case = case_timeout if case_timeout is not None else max(5.0, min(30.0, timeout / 4))
        cmd = self.command("dial", stack, "--case-timeout", f"{per_case:g}", target)
        log.info("starting %s dialer: %s", self.key, " ".join(cmd))
        start = trio.current_time()
        proc = await trio.lowlevel.open_process(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            cwd=str(REPO_DIR),
        )
        assert proc.stdout is not None and proc.stderr is not None
        stderr = _Tail(STDERR_TAIL)
        objects: list[dict[str, Any]] = []
        error: str | None = None
        try:
            with trio.move_on_after(timeout) as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_drain_stderr, proc.stderr, stderr)
                    splitter = _LineSplitter(MAX_LINE)
                    try:
                        async for chunk in proc.stdout:
                            for line in splitter.feed(chunk):
                                obj = parse_line(line)
                                if obj is not None:
                                    objects.append(obj)
                        tail = parse_line(splitter.rest())
                        if tail is not None:
                            objects.append(tail)
                    except PeerError as exc:
                        error = str(exc)
                        nursery.cancel_scope.cancel()
                    await proc.wait()
            if scope.cancelled_caught:
                error = f"dialer killed after {timeout:g}s"
        except BaseExceptionGroup as group:
            reraise_unwrapped(group)
        finally:
            await _stop_process(proc, close_stdin=False)
        elapsed = trio.current_time() - start
        report = next((o for o in reversed(objects) if "connect" in o), None)
        unsupported = next((str(o["unsupported"]) for o in objects if "unsupported" in o), None)
        if report is None and error is None and unsupported is None:
            error = f"dialer exited {proc.returncode} without a report"
        return DialResult(
            cases=report or {},
            log=stderr.text(),
            returncode=proc.returncode,
            elapsed=elapsed,
            unsupported=unsupported,
            error=error,
        )


def _repo_python() -> str:
    venv = REPO_DIR / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


GO = PeerImpl(
    key="go",
    name="go-libp2p (p2pd from hivemind 1.1.12)",
    transports=frozenset({"tcp", "quic-v1"}),
    securities=frozenset({"noise", "tls"}),
    muxers=frozenset({"yamux"}),
    program=(_repo_python(), str(INTEROP_DIR / "go_peer.py")),
    notes={
        "echo": "listener echo is ours over p2pd's STREAM_HANDLER pipe (this p2pd has no -echo)",
        "half_close": "p2pd turns a half-close into a full close/reset in both directions",
        "reset": "dialer reset = control socket closed with unread bytes (go resets the stream)",
    },
    reports_resets=False,
    echo_after_half_close=False,
)
JS = PeerImpl(
    key="js",
    name="js-libp2p 3.x (libp2p 3.3.11 + @chainsafe/libp2p-quic 2.1.1, Node 22)",
    transports=frozenset({"tcp", "quic-v1"}),
    securities=frozenset({"noise", "tls"}),
    muxers=frozenset({"yamux", "mplex"}),
    program=(str(INTEROP_DIR / "js" / "node_modules" / "node" / "bin" / "node"), str(INTEROP_DIR / "js" / "peer.mjs")),
)
PY = PeerImpl(
    key="py",
    name="py-libp2p 0.8.1",
    transports=frozenset({"tcp", "quic-v1"}),
    securities=frozenset({"noise", "tls"}),
    muxers=frozenset({"yamux", "mplex"}),
    program=(str(INTEROP_DIR / ".peers" / "py-venv" / "bin" / "python"), str(INTEROP_DIR / "py" / "peer.py")),
    notes={
        "quic-v1": "py-libp2p's QUIC is CPU-bound: 64 concurrent 64 KiB echoes take 6-12 s on an idle 2-core "
        "machine (aioquic walks every open stream for every packet), so its QUIC cases get twice the timeout",
    },
    case_timeout_factor={"quic-v1": 2.0},
)
IMPLS: dict[str, PeerImpl] = {impl.key: impl for impl in (GO, JS, PY)}

__all__ = [
    "CASES", "DialResult", "GO", "IMPLS", "JS", "ListeningPeer", "PY", "PeerError", "PeerImpl",
    "STANDALONE_TRANSPORTS", "Stack",
    "Unsupported",
]  # fmt: skip
