"""Prove the interop peers and adapters work before mycel joins: every implementation dials every
implementation (itself included) over each stack both support, and a table is printed.

    .venv/bin/python interop/selfcheck.py                 # tcp/noise/yamux and tcp/noise/mplex
    .venv/bin/python interop/selfcheck.py --stacks tcp/tls/yamux --impls go,js --json out.json
    .venv/bin/python interop/selfcheck.py --stacks quic-v1 --impls go,py

Exit status 0 when every cell ran (failed cases are findings, shown in the table), 1 when a peer could
not be started at all.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio

from interop.peers import CASES, IMPLS, STANDALONE_TRANSPORTS, PeerError, PeerImpl, Stack

log = logging.getLogger("mycel.interop.selfcheck")

SHORT = {
    "connect": "conn",
    "identify": "id",
    "ping": "ping",
    "echo_1mib": "1MiB",
    "echo_64_streams": "64str",
    "half_close": "half",
    "reset": "reset",
}


@dataclass
class Cell:
    dialer: str
    listener: str
    stack: str
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    reset_seen: str = "-"
    seconds: float = 0.0
    error: str = ""


def parse_stack(text: str) -> Stack:
    """``tcp/noise/yamux``, or a transport with its own security and streams: ``quic-v1``."""
    parts = text.split("/")
    if len(parts) == 1 and text in STANDALONE_TRANSPORTS:
        return Stack(text, None, None)
    if len(parts) != 3:
        standalone = ", ".join(sorted(STANDALONE_TRANSPORTS))
        raise argparse.ArgumentTypeError(f"stack must be transport/security/muxer or one of {standalone}: {text}")
    return Stack(*parts)


async def run_cell(dialer: PeerImpl, listener: PeerImpl, stack: Stack, timeout: float) -> Cell:
    cell = Cell(dialer.key, listener.key, str(stack))
    start = time.perf_counter()
    try:
        async with listener.listen(stack) as peer:
            result = await dialer.dial(stack, peer.addrs[0], timeout=timeout)
            cell.cases = result.cases
            if result.error:
                cell.error = result.error
            if result.cases.get("reset", {}).get("ok"):
                if listener.reports_resets:
                    seen = await peer.wait_for_event("stream_reset", timeout=5.0)
                    cell.reset_seen = "yes" if seen else "NO"
                else:
                    cell.reset_seen = "n/a"
    except PeerError as exc:
        cell.error = str(exc).splitlines()[0]
    cell.seconds = time.perf_counter() - start
    return cell


def render(cells: list[Cell]) -> str:
    head = ["dialer", "listener", "stack", *(SHORT[c] for c in CASES), "rst@L", "secs", "notes"]
    rows = [head]
    for cell in cells:
        marks = []
        for case in CASES:
            entry = cell.cases.get(case)
            marks.append("-" if entry is None else ("ok" if entry.get("ok") else "FAIL"))
        notes = cell.error
        if not notes:
            failed = [f"{SHORT[c]}: {cell.cases[c].get('detail', '')}" for c in CASES if c in cell.cases and not cell.cases[c].get("ok")]
            notes = failed[0][:110] if failed else ""
        rows.append([cell.dialer, cell.listener, cell.stack, *marks, cell.reset_seen, f"{cell.seconds:.1f}", notes])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    lines = []
    for r in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    impls = [IMPLS[k] for k in args.impls.split(",")]
    missing = [f"{i.key}: {i.missing()}" for i in impls if i.missing()]
    if missing:
        print("\n".join(missing), file=sys.stderr)
        return 1
    cells: list[Cell] = []
    for stack in args.stacks:
        for dialer in impls:
            for listener in impls:
                if dialer.unsupported_reason(stack) or listener.unsupported_reason(stack):
                    continue
                print(f"... {dialer.key} -> {listener.key} over {stack}", file=sys.stderr, flush=True)
                cells.append(await run_cell(dialer, listener, stack, args.timeout))
    print(render(cells))
    if args.json:
        Path(args.json).write_text(json.dumps([c.__dict__ for c in cells], indent=2))
    if cells:
        secs = sorted(c.seconds for c in cells)
        print(f"\n{len(cells)} cells, {sum(secs):.1f}s total, median {secs[len(secs) // 2]:.1f}s per cell")
    return 1 if any(c.error and not c.cases for c in cells) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--stacks",
        type=parse_stack,
        nargs="+",
        default=[Stack("tcp", "noise", "yamux"), Stack("tcp", "noise", "mplex")],
    )
    parser.add_argument("--impls", default="go,js,py", help="comma-separated subset of go,js,py")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per dialer run")
    parser.add_argument("--json", help="also write the cells as JSON to this file")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    return trio.run(main_async, args)


if __name__ == "__main__":
    sys.exit(main())
