"""``python -m mycel.sim run SCENARIO --nodes N --seed S --out DIR``: run a gossipsub-interop scenario
(a params.json path or a built-in name: ``subnet-blob-msg``, ``simple-fanout``) on N simulated hosts and
write the logs (gossipsub-interop's layout: ``DIR/hosts/node<N>/node<N>.stdout``), ``summary.json``,
``summary.md`` and plots.

The process re-executes itself with ``PYTHONHASHSEED=0`` so that a seed gives the same run every time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence


def _pin_hash_seed(argv: Sequence[str]) -> None:
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        os.execve(sys.executable, [sys.executable, "-m", "mycel.sim", *argv], env)


def _progress(quiet: bool) -> object:
    start = time.monotonic()

    def show(text: str) -> None:
        if not quiet:
            print(f"[{time.monotonic() - start:7.1f}s] {text}", file=sys.stderr, flush=True)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """The ``mycel.sim`` command line."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m mycel.sim", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run a gossipsub-interop scenario")
    run_p.add_argument("scenario", help="params.json path or built-in name (subnet-blob-msg, simple-fanout)")
    run_p.add_argument("--nodes", type=int, default=100)
    run_p.add_argument("--seed", type=int, default=0)
    run_p.add_argument("--out", required=True)
    run_p.add_argument("--messages", type=int, default=16, help="built-in scenarios: messages published")
    run_p.add_argument("--start", type=float, default=120.0, help="built-in scenarios: first publish (s)")
    run_p.add_argument("--no-idontwant", action="store_true", help="never send IDONTWANT")
    run_p.add_argument("--latency", choices=["regions", "uniform"], default="regions")
    run_p.add_argument("--partition", metavar="START:DURATION", help="cut half the nodes off for DURATION s at START")
    run_p.add_argument("--skip", type=int, default=4, help="warm-up messages left out of the totals")
    run_p.add_argument("--no-logs", action="store_true", help="do not write the per-node logs")
    run_p.add_argument("--quiet", action="store_true")
    args = parser.parse_args(args_list)
    _pin_hash_seed(args_list)

    if args.command == "run":
        from mycel.sim.report import write_run
        from mycel.sim.runner import PartitionPlan, RunOptions, run, summarize
        from mycel.sim.script import BUILTIN, ScenarioError, load_params

        try:
            if args.scenario in BUILTIN:
                script = BUILTIN[args.scenario](args.nodes, args.seed, messages=args.messages, start=args.start)
            else:
                script = load_params(args.scenario)
        except ScenarioError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        plan = None
        if args.partition:
            start, _, duration = args.partition.partition(":")
            plan = PartitionPlan(float(start), float(duration))
        options = RunOptions(
            nodes=args.nodes, seed=args.seed, latency=args.latency, idontwant=not args.no_idontwant,
            partition=plan, progress=_progress(args.quiet),  # type: ignore[arg-type]
        )
        result = run(script, options)
        summary = summarize(result, skip=args.skip)
        md = write_run(result, summary, args.out, logs=not args.no_logs)
        brief = {k: summary[k] for k in ("nodes", "wall_seconds", "cpu_seconds", "max_rss_mib", "min_reach", "latency_p99", "max_time_to_all")}
        print(json.dumps(brief))
        print(f"report: {md}", file=sys.stderr)
        return 0

    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
