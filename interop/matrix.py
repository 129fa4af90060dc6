"""The interop matrix: mycel (in-process) against the real go / js / py-libp2p peers.

    .venv/bin/python -m interop                      # the whole matrix; table on stdout, JSON in interop/results/
    .venv/bin/python -m interop --impls js --repeat 10 --stacks tcp/noise/mplex

A cell is one peer implementation x one direction (mycel dials / mycel listens) x one stack
(transport/security/muxer; a standalone transport such as quic-v1 has neither). Its cases are
``peers.CASES``. A cell is ``unsupported`` when either side cannot run the stack, ``fail`` when any
case failed, else ``pass`` (cases the peer cannot do by itself are ``unsupported`` with a reason).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import trio

from interop.mycel_side import (
    CaseResult,
    InboundConnections,
    RecordingEcho,
    Status,
    error_detail,
    mycel_config,
    mycel_dials,
    mycel_listens,
    mycel_unsupported,
    services,
)
from interop.peers import CASES, IMPLS, PeerError, PeerImpl, Stack, Unsupported
from mycel.core.errors import reraise_unwrapped
from mycel.host import open_host

log = logging.getLogger("mycel.interop.matrix")

INTEROP_DIR = Path(__file__).resolve().parent
RESULTS_DIR = INTEROP_DIR / "results"

Direction = Literal["dial", "listen"]  # mycel's role in the cell
DIRECTIONS: tuple[Direction, ...] = ("dial", "listen")

# transport -> (securities, muxers) crossed for it; a standalone transport (QUIC brings its own
# security and streams) has (None,) for both. Adding a transport here adds its cells everywhere.
TRANSPORTS: dict[str, tuple[tuple[str | None, ...], tuple[str | None, ...]]] = {
    "tcp": (("noise", "tls"), ("yamux", "mplex")),
    "quic-v1": ((None,), (None,)),
}

CASE_TIMEOUT = 30.0  # seconds for one case (a 1 MiB echo through py-libp2p takes well under 1 s)
DIAL_TIMEOUT = 150.0  # seconds for a whole peer dialer run (7 cases) before it is killed
LOG_TAIL = 64 * 1024  # bytes of a peer's stderr kept with a failed cell
MYCEL_LOG_RECORDS = 400  # mycel log lines kept per cell (INFO and above); older ones are dropped


def stacks(transports: Iterable[str] = TRANSPORTS) -> list[Stack]:
    out = []
    for transport in transports:
        securities, muxers = TRANSPORTS[transport]
        for security in securities:
            for muxer in muxers:
                out.append(Stack(transport, security, muxer))
    return out


def parse_stack(text: str) -> Stack:
    """``tcp/noise/yamux`` or a standalone ``quic-v1``."""
    parts = text.split("/")
    if len(parts) == 1:
        return Stack(parts[0], None, None)
    if len(parts) == 3:
        return Stack(parts[0], parts[1], parts[2])
    raise ValueError(f"a stack is transport/security/muxer or a standalone transport: {text!r}")


@dataclass(frozen=True)
class CellSpec:
    impl: str
    direction: Direction
    stack: Stack

    @property
    def name(self) -> str:
        arrow = f"mycel -> {self.impl}" if self.direction == "dial" else f"{self.impl} -> mycel"
        return f"{arrow} ({self.stack})"

    @property
    def test_id(self) -> str:
        role = "mycel_dials" if self.direction == "dial" else "mycel_listens"
        return f"{self.impl}-{role}-{str(self.stack).replace('/', '-')}"


def cells(
    impls: Sequence[str] = tuple(IMPLS),
    directions: Sequence[Direction] = DIRECTIONS,
    stack_list: Sequence[Stack] | None = None,
) -> list[CellSpec]:
    chosen = stack_list if stack_list is not None else stacks()
    return [CellSpec(i, d, s) for s in chosen for i in impls for d in directions]


@dataclass
class CellResult:
    spec: CellSpec
    status: Status
    reason: str = ""  # why unsupported, or the first failure
    seconds: float = 0.0
    cases: dict[str, CaseResult] = field(default_factory=dict)
    peer_log: str = ""
    mycel_log: str = ""
    peer_returncode: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "impl": self.spec.impl,
            "mycel": "dials" if self.spec.direction == "dial" else "listens",
            "stack": str(self.spec.stack),
            "status": self.status,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
            "cases": {k: v.to_json() for k, v in self.cases.items()},
            "peer_returncode": self.peer_returncode,
            "peer_log": self.peer_log if self.status == "fail" else "",
            "mycel_log": self.mycel_log if self.status == "fail" else "",
        }


class _LogTail(logging.Handler):
    """The last MYCEL_LOG_RECORDS formatted mycel log records (bounded: older ones drop out)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=MYCEL_LOG_RECORDS)
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a broken log record must not break the cell
            self.handleError(record)


def _classify(cases: dict[str, CaseResult]) -> tuple[Status, str]:
    failed = [f"{name}: {c.detail}" for name, c in cases.items() if c.status == "fail"]
    if failed:
        return "fail", failed[0]
    return "pass", ""


def _tail(text: str) -> str:
    return text[-LOG_TAIL:]


async def run_cell(
    spec: CellSpec, case_timeout: float = CASE_TIMEOUT, dial_timeout: float = DIAL_TIMEOUT
) -> CellResult:
    """Run one cell; never raises for what the peer or mycel did (that is the cell's result)."""
    impl = IMPLS[spec.impl]
    start = time.perf_counter()
    reasons = [r for r in (impl.unsupported_reason(spec.stack), mycel_unsupported(spec.stack)) if r]
    if reasons:
        return CellResult(spec, "unsupported", "; ".join(reasons))
    missing = impl.missing()
    if missing:
        return CellResult(spec, "fail", f"{impl.key} peer not installed: {missing} (make interop-peers)")
    factor = impl.timeout_factor(spec.stack)
    case_timeout, dial_timeout = case_timeout * factor, dial_timeout * factor
    tail = _LogTail()
    mycel_logger = logging.getLogger("mycel")
    saved_level = mycel_logger.level
    mycel_logger.addHandler(tail)
    if mycel_logger.getEffectiveLevel() > logging.INFO:
        mycel_logger.setLevel(logging.INFO)
    result = CellResult(spec, "fail")
    try:
        try:
            if spec.direction == "dial":
                await _mycel_dials(impl, spec.stack, result, case_timeout)
            else:
                await _mycel_listens(impl, spec.stack, result, case_timeout, dial_timeout)
        except BaseExceptionGroup as group:
            reraise_unwrapped(group)
    except Unsupported as exc:
        result.status, result.reason = "unsupported", f"{impl.name}: {exc.reason}"
    except PeerError as exc:
        result.status, result.reason = "fail", f"peer: {str(exc).splitlines()[0]}"
        result.peer_log = result.peer_log or _tail(str(exc))
    except Exception as exc:  # a harness or mycel bug: the cell fails with it, the run goes on
        log.exception("cell %s crashed", spec.name)
        result.status, result.reason = "fail", f"cell crashed: {error_detail(exc)}"
    finally:
        mycel_logger.removeHandler(tail)
        mycel_logger.setLevel(saved_level)
    result.mycel_log = "\n".join(tail.lines)
    result.seconds = time.perf_counter() - start
    return result


async def _mycel_dials(impl: PeerImpl, stack: Stack, result: CellResult, case_timeout: float) -> None:
    echo = RecordingEcho(lagged=False)  # not dialed in this direction; served for completeness
    config = mycel_config(stack, services(echo), listen=False)
    async with impl.listen(stack) as peer:
        try:
            async with open_host(config) as host:
                result.cases = await mycel_dials(host, impl, peer, stack, case_timeout)
        finally:
            result.peer_returncode = peer.returncode
            result.peer_log = _tail(peer.log)
    # the adapter stopped the listener; a listener that had exited on its own crashed
    result.status, result.reason = _classify(result.cases)
    if result.peer_returncode is not None and result.status == "pass":
        result.status = "fail"
        result.reason = f"the {impl.key} listener exited ({result.peer_returncode}) during the cell"


async def _mycel_listens(
    impl: PeerImpl, stack: Stack, result: CellResult, case_timeout: float, dial_timeout: float
) -> None:
    echo = RecordingEcho(lagged=impl.echo_after_half_close)
    inbound = InboundConnections()
    config = mycel_config(stack, services(echo), listen=True)
    async with open_host(config) as host, trio.open_nursery() as nursery:
        await nursery.start(inbound.collect, host)
        dialed = await impl.dial(stack, str(host.addrs[0]), timeout=dial_timeout, case_timeout=case_timeout)
        result.peer_log = _tail(dialed.log)
        result.peer_returncode = dialed.returncode
        if dialed.unsupported:
            result.status, result.reason = "unsupported", f"{impl.name}: {dialed.unsupported}"
            nursery.cancel_scope.cancel()
            return
        result.cases = await mycel_listens(host, impl, echo, inbound, stack, dialed, case_timeout)
        nursery.cancel_scope.cancel()
    result.status, result.reason = _classify(result.cases)
    if dialed.error:
        result.status = "fail"
        result.reason = f"{impl.key} dialer: {dialed.error}" + (f"; {result.reason}" if result.reason else "")
    elif dialed.returncode != 0:
        result.status = "fail"
        result.reason = f"{impl.key} dialer exited {dialed.returncode}" + (
            f"; {result.reason}" if result.reason else ""
        )


async def run_matrix(
    specs: Sequence[CellSpec],
    *,
    repeat: int = 1,
    case_timeout: float = CASE_TIMEOUT,
    on_cell: Callable[[CellResult], None] | None = None,
) -> list[CellResult]:
    """Run cells one after another (2 shared cores: parallel cells would make timings and timeouts
    depend on each other). ``on_cell(result)`` is called after each cell."""
    results = []
    for _ in range(repeat):
        for spec in specs:
            res = await run_cell(spec, case_timeout=case_timeout)
            results.append(res)
            if on_cell is not None:
                on_cell(res)
    return results


# --- output ----------------------------------------------------------------------------------------

SHORT = {
    "connect": "conn",
    "identify": "id",
    "ping": "ping",
    "echo_1mib": "1MiB",
    "echo_64_streams": "64str",
    "half_close": "half",
    "reset": "reset",
}
MARK = {"pass": "ok", "fail": "FAIL", "unsupported": "n/a"}


def render(results: Sequence[CellResult], *, details: bool = True) -> str:
    """The table (one row per cell), then the reasons for n/a and the details of failures."""
    head = ["peer", "mycel", "stack", *(SHORT[c] for c in CASES), "cell", "secs", "reason"]
    rows = [head]
    for r in results:
        marks = [MARK[r.cases[c].status] if c in r.cases else "-" for c in CASES]
        reason = r.reason
        if r.status == "pass":
            na = [SHORT[c] for c in CASES if c in r.cases and r.cases[c].status == "unsupported"]
            reason = f"n/a: {', '.join(na)} (see below)" if na else ""
        rows.append([
            r.spec.impl,
            "dials" if r.spec.direction == "dial" else "listens",
            str(r.spec.stack),
            *marks,
            r.status.upper() if r.status == "fail" else r.status,
            f"{r.seconds:.1f}",
            reason if len(reason) <= 100 else reason[:97] + "...",
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows]
    if details:
        na_reasons: dict[str, list[str]] = {}
        for r in results:
            for name, c in r.cases.items():
                if c.status == "unsupported":
                    na_reasons.setdefault(f"{SHORT[name]}: {c.detail}", []).append(r.spec.name)
        if na_reasons:
            lines += ["", "Unsupported cases (the other implementation cannot do them by itself):"]
            for reason, names in na_reasons.items():
                lines.append(f"  {reason}\n      in: {', '.join(names)}")
        failed = [r for r in results if r.status == "fail"]
        if failed:
            lines += ["", "Failures:"]
            for r in failed:
                lines.append(f"  {r.spec.name}: {r.reason}")
                for name, c in r.cases.items():
                    if c.status == "fail":
                        lines.append(f"    {name}: {c.detail}")
                if r.peer_log:
                    lines.append("    peer log (last lines):")
                    lines += ["      " + ln for ln in r.peer_log.splitlines()[-25:]]
                if r.mycel_log:
                    lines.append("    mycel log (last lines):")
                    lines += ["      " + ln for ln in r.mycel_log.splitlines()[-15:]]
    counts = {s: sum(1 for r in results if r.status == s) for s in ("pass", "fail", "unsupported")}
    total = sum(r.seconds for r in results)
    lines += ["", f"{len(results)} cells: {counts['pass']} pass, {counts['fail']} fail, "
              f"{counts['unsupported']} unsupported; {total:.1f}s in cells"]  # fmt: skip
    return "\n".join(lines)


def to_json(results: Sequence[CellResult], elapsed: float) -> dict[str, Any]:
    return {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "elapsed_seconds": round(elapsed, 3),
        "peers": {k: {"name": v.name, "notes": v.notes} for k, v in IMPLS.items()},
        "summary": {s: sum(1 for r in results if r.status == s) for s in ("pass", "fail", "unsupported")},
        "cells": [r.to_json() for r in results],
    }


def write_json(results: Sequence[CellResult], elapsed: float, path: Path | None = None) -> Path:
    if path is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = RESULTS_DIR / f"matrix-{stamp}-{os.getpid()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(results, elapsed), indent=2) + "\n")
    return path


__all__ = [
    "CASE_TIMEOUT", "CellResult", "CellSpec", "DIRECTIONS", "Direction", "TRANSPORTS", "cells", "parse_stack",
    "render", "run_cell", "run_matrix", "stacks", "to_json", "write_json",
]  # fmt: skip
