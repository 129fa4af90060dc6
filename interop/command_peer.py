"""A peer program driven by JSON commands on its stdin, as the pubsub and DHT peers are (their contracts:
``pubsub_contract.py``, ``dht_contract.py``): the process, its stdout read as JSON lines (a ready line,
replies matched to our commands by id, events), its stderr tail, and starting / stopping it.

``interop.pubsub.PubsubPeer`` and ``interop.dht.DHTPeer`` each own a :class:`CommandProcess` and start
through :func:`open_peer_program`.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import trio

from interop.peers import (
    MAX_LINE,
    REPO_DIR,
    STDERR_TAIL,
    PeerError,
    _drain_stderr,
    _LineSplitter,
    _stop_process,
    _Tail,
    parse_line,
)
from mycel.core.errors import reraise_unwrapped

log = logging.getLogger("mycel.interop.command_peer")


class CommandFailedMixin(Exception):
    """The peer answered a command with ok=false; ``error`` is its reason (mixed into each harness's
    ``CommandFailed``, which also derives from that harness's error class)."""

    def __init__(self, message: str, error: str) -> None:
        super().__init__(message)
        self.error = error

    @property
    def unsupported(self) -> bool:
        return self.error.startswith("unsupported: ")


def ready_fields(obj: dict[str, Any]) -> tuple[str, list[str], list[str]]:
    """``peer_id``, ``addrs`` and ``protocols`` of a ready line."""
    return str(obj["peer_id"]), [str(a) for a in obj.get("addrs", [])], [str(p) for p in obj.get("protocols", [])]


class CommandProcess:
    """The process of a peer program and its stdout lines: ``on_ready`` gets the ready line (the first
    with ``peer_id``), ``on_event`` every other line that is not a reply, ``on_closed`` is called once
    stdout ends. Contract violations go to ``contract_errors``."""

    def __init__(
        self,
        proc: trio.Process,
        on_ready: Callable[[dict[str, Any]], None],
        on_event: Callable[[dict[str, Any], bytes], None],
        on_closed: Callable[[], None],
        contract_errors: list[str],
    ) -> None:
        self.proc = proc
        self.stderr = _Tail(STDERR_TAIL)
        self.ready = trio.Event()
        self.closed = False
        self.contract_errors = contract_errors
        self._on_ready = on_ready
        self._on_event = on_event
        self._on_closed = on_closed
        self._next_id = 0
        self._pending: dict[int, tuple[trio.Event, list[dict[str, Any]]]] = {}
        self._send_lock = trio.Lock()

    @property
    def log(self) -> str:
        return self.stderr.text()

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def read_stdout(self, stdout: trio.abc.ReceiveStream) -> None:
        splitter = _LineSplitter(MAX_LINE)
        try:
            async for chunk in stdout:
                for line in splitter.feed(chunk):
                    self._handle_line(line)
        except PeerError as exc:
            self.contract_errors.append(str(exc))
        finally:
            self.closed = True
            self.ready.set()
            self._on_closed()
            for event, _ in self._pending.values():
                event.set()

    def _handle_line(self, line: bytes) -> None:
        obj = parse_line(line)
        if obj is None:
            if line.strip():
                log.debug("non-JSON stdout line %r", line[:200])
            return
        if "reply" in obj:
            waiter = self._pending.get(obj["reply"]) if isinstance(obj["reply"], int) else None
            if waiter is None:
                self.contract_errors.append(f"reply to no pending command: {line[:200]!r}")
                return
            waiter[1].append(obj)
            waiter[0].set()
        elif "unsupported" in obj:
            self.contract_errors.append(f"unsupported: {obj['unsupported']}")
            self.ready.set()
        elif "peer_id" in obj and not self.ready.is_set():
            self._on_ready(obj)
            self.ready.set()
        else:
            self._on_event(obj, line)

    async def request(
        self,
        cmd: str,
        fields: dict[str, Any],
        timeout: float,
        error: Callable[[str, bool], PeerError],
        failed: type[CommandFailedMixin],
    ) -> dict[str, Any]:
        """Send one command; return its reply. ``error(message, timed_out)`` is raised when the peer is
        gone or did not answer within ``timeout``, ``failed`` (with that message) on ok=false."""
        if self.closed:
            raise error(f"{cmd}: the peer has exited (returncode {self.returncode})", False)
        self._next_id += 1
        cid = self._next_id
        event = trio.Event()
        box: list[dict[str, Any]] = []
        self._pending[cid] = (event, box)
        try:
            line = json.dumps({"id": cid, "cmd": cmd, **fields}, separators=(",", ":")) + "\n"
            stdin = self.proc.stdin
            assert stdin is not None
            try:
                async with self._send_lock:
                    await stdin.send_all(line.encode())
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise error(f"{cmd}: cannot write to the peer's stdin ({exc})", False) from exc
            with trio.move_on_after(timeout):
                await event.wait()
            if not box:
                if self.closed:
                    raise error(f"{cmd}: the peer exited before replying (returncode {self.returncode})", False)
                raise error(f"{cmd} {fields}: no reply after {timeout:g}s", True)
        finally:
            del self._pending[cid]
        reply = box[0]
        if reply.get("ok") is not True:
            reason = str(reply.get("error", "no error given"))
            raise failed(str(error(f"{cmd} {fields} failed: {reason}", False)), reason)
        return reply


class PeerProgram(Protocol):
    """What :func:`open_peer_program` needs of the peer object it makes."""

    process: CommandProcess
    peer_id: str
    addrs: list[str]
    protocols: list[str]

    @property
    def label(self) -> str: ...

    def error(self, message: str) -> PeerError: ...


P = TypeVar("P", bound=PeerProgram)


@asynccontextmanager
async def open_peer_program(
    cmd: Sequence[str], make: Callable[[trio.Process], P], ready_timeout: float
) -> AsyncIterator[P]:
    """Start ``cmd`` in its own process group, make its peer object, wait for its ready line; stop it
    (by PID: stdin EOF, SIGTERM, SIGKILL to its group) on exit, even on failure."""
    proc = await trio.lowlevel.open_process(
        list(cmd),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: a stuck peer is killed with its children (p2pd)
        cwd=str(REPO_DIR),
    )
    peer = make(proc)
    process = peer.process
    try:
        try:
            async with trio.open_nursery() as nursery:
                assert proc.stdout is not None and proc.stderr is not None
                nursery.start_soon(process.read_stdout, proc.stdout)
                nursery.start_soon(_drain_stderr, proc.stderr, process.stderr)
                with trio.move_on_after(ready_timeout):
                    await process.ready.wait()
                if not process.ready.is_set():
                    raise peer.error(f"not ready after {ready_timeout:g}s")
                if not peer.peer_id or not peer.addrs:
                    raise peer.error(f"exited or gave no address: {process.contract_errors}")
                log.info("%s %s ready on %s serving %s", peer.label, peer.peer_id, peer.addrs, peer.protocols)
                try:
                    yield peer
                finally:
                    await _stop_process(proc)
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            reraise_unwrapped(group)
    finally:
        await _stop_process(proc)  # a no-op when already stopped
