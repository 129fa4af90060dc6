"""``python -m interop``: run the interop matrix (mycel against go, js and py-libp2p).

Prints a table (one row per cell: pass / FAIL / unsupported, with the reason; per case ok / FAIL /
n/a) and the details of failures with the peer's log, and writes the results as JSON to
``interop/results/matrix-<time>.json`` (or ``--json PATH``). Exit status 0 when no cell failed, 1
otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import trio

from interop.matrix import (
    CASE_TIMEOUT,
    DIRECTIONS,
    TRANSPORTS,
    CellResult,
    Direction,
    cells,
    parse_stack,
    render,
    run_matrix,
    stacks,
    write_json,
)
from interop.peers import IMPLS


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m interop",
        description="Run mycel against real go-, js- and py-libp2p peers: every peer x direction x stack.",
        epilog="Peers are installed by `make interop-peers` (interop/install.sh). Example: "
        "python -m interop --impls js,py --stacks tcp/noise/mplex --repeat 10",
    )
    parser.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated subset of {','.join(IMPLS)}")
    parser.add_argument(
        "--directions",
        default=",".join(DIRECTIONS),
        help="dial (mycel dials the peer) and/or listen (the peer dials mycel); default both",
    )
    parser.add_argument(
        "--transports", default=",".join(TRANSPORTS), help=f"comma-separated subset of {','.join(TRANSPORTS)}"
    )
    parser.add_argument(
        "--stacks",
        nargs="+",
        metavar="STACK",
        help="explicit stacks instead of --transports, e.g. tcp/noise/yamux tcp/tls/mplex quic-v1",
    )
    parser.add_argument("--repeat", type=int, default=1, help="run every selected cell N times (flakiness hunt)")
    parser.add_argument("--case-timeout", type=float, default=CASE_TIMEOUT, help="seconds per case")
    parser.add_argument("--json", type=Path, help="write the JSON here instead of interop/results/matrix-<time>.json")
    parser.add_argument("--no-details", action="store_true", help="table only: no failure details or peer logs")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log to stderr (-vv: debug)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)  # on the handler: cells raise mycel's logger to INFO for their own log tail
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    impls = [i for i in args.impls.split(",") if i]
    directions = [d for d in args.directions.split(",") if d]
    bad = [i for i in impls if i not in IMPLS] + [d for d in directions if d not in DIRECTIONS]
    try:
        if args.stacks:
            stack_list = [parse_stack(s) for s in args.stacks]
        else:
            transports = [t for t in args.transports.split(",") if t]
            bad += [t for t in transports if t not in TRANSPORTS]
            stack_list = stacks(transports)
    except ValueError as exc:
        parser.error(str(exc))
    if bad:
        parser.error(f"unknown: {', '.join(bad)}")
    dirs: list[Direction] = [d for d in DIRECTIONS if d in directions]
    specs = cells(impls, dirs, stack_list)

    def progress(res: CellResult) -> None:
        print(f"{res.status:>11}  {res.seconds:5.1f}s  {res.spec.name}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    results = trio.run(lambda: run_matrix(specs, repeat=args.repeat, case_timeout=args.case_timeout, on_cell=progress))
    elapsed = time.perf_counter() - start
    print(render(results, details=not args.no_details))
    path = write_json(results, elapsed, args.json)
    print(f"wall time {elapsed:.1f}s; JSON: {path}")
    return 1 if any(r.status == "fail" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
