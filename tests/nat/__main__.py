"""``python -m tests.nat`` (``make natlab``): the NAT lab's full figures — 50 hole punches each over TCP
and QUIC between endpoint-independent NATs, symmetric NATs, and 5 % loss — as JSON on stdout and in
``tests/nat/results/natlab.json``. Options: ``--runs 50 --sym-runs 10 --loss-runs 50 --logs DIR``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

from mycel.testing.natlab import NatKind
from tests.nat.harness import NatRun, Summary

EIM = NatKind.ENDPOINT_INDEPENDENT


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--sym-runs", type=int, default=10)
    parser.add_argument("--loss-runs", type=int, default=50)
    parser.add_argument("--logs", type=pathlib.Path, default=None, help="directory for the processes' logs")
    args = parser.parse_args()
    if args.logs is not None:
        args.logs.mkdir(parents=True, exist_ok=True)
    figures: dict[str, list[dict[str, object]]] = {"eim": [], "symmetric": [], "loss_5_percent": []}
    started = time.monotonic()
    with NatRun(EIM, EIM, log_dir=args.logs) as run:
        for case, count in (("eim", args.runs), ("symmetric", args.sym_runs), ("loss_5_percent", args.loss_runs)):
            if case == "symmetric":
                run.lab.set_nat(NatKind.SYMMETRIC, NatKind.SYMMETRIC)
            elif case == "loss_5_percent":
                run.lab.set_nat(EIM, EIM)
                run.lab.set_loss(5)
            for transport in ("tcp", "quic"):
                summary = Summary(transport)
                for _ in range(count):
                    summary.runs.append(run.run(transport))
                row = summary.as_dict()
                row["failures"] = [r.dialer | {"listener": r.listener} for r in summary.runs if not r.success][:3]
                if case == "symmetric":
                    row["relayed_still_working"] = sum(
                        1 for r in summary.runs if not r.dialer.get("direct") and r.dialer.get("relayed_ping_ms")
                    )
                figures[case].append(row)
                print(json.dumps({"case": case, **row}), flush=True)
    out = {"seconds": round(time.monotonic() - started, 1), **figures}
    path = pathlib.Path(__file__).with_name("results")
    path.mkdir(exist_ok=True)
    (path / "natlab.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"seconds": out["seconds"], "written": str(path / "natlab.json")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
