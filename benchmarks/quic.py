"""QUIC benchmark: mycel <-> mycel over ``/quic-v1`` on 127.0.0.1, two processes (``peers/mycel_peer.py``).

For each maximum datagram size (``--sizes``; 1452 fits a 1500-byte Ethernet path, loopback carries
16 KiB): one-stream throughput (``/perf/1.0.0``, upload and download of ``--bytes`` each) with the CPU
each side spent per GB, and fresh dial + ping round trips (QUIC handshake with libp2p TLS inside, then
one ``/ipfs/ping/1.0.0`` exchange on a new stream) with the CPU per dial. Rounds alternate the sizes;
the table shows medians over ``--repeats`` rounds.

Usage: python benchmarks/quic.py [--bytes 50e6] [--repeats 3] [--dials 100] [--sizes 1452,16384]
Prints a small table and writes JSON to benchmarks/results/quic-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))
sys.path.insert(0, str(HERE))

from compare import PYTHON, PEERS, PeerProcess  # noqa: E402

PEER = (PYTHON, str(PEERS / "mycel_peer.py"))


def run_size(size: int, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    quic = ("--stack", "quic", "--datagram-size", str(size))
    server = PeerProcess([*PEER, "server", *quic], log)
    try:
        ready = server.read_json(60)
        addr, pid = str(ready["addrs"][0]), str(ready["pid"])
        out: dict[str, Any] = {}
        if args.bytes:
            client = PeerProcess([*PEER, "client", "perf", addr, *quic, "--bytes", f"{args.bytes:.0f}", "--server-pid", pid], log)
            try:
                out["phases"] = client.read_json(60 + 2 * args.bytes / 3e6)["phases"]
            finally:
                client.stop()
        if args.dials:
            client = PeerProcess([*PEER, "client", "dials", addr, *quic, "--count", str(args.dials), "--server-pid", pid], log)
            try:
                out["dials"] = client.read_json(300)
            finally:
                client.stop()
        return out
    finally:
        server.stop()


def summarize(size: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(xs: list[float]) -> float | None:
        return round(statistics.median(xs), 2) if xs else None

    out: dict[str, Any] = {"max_datagram_size": size}
    for d in ("upload", "download"):
        phases = [p for r in runs for p in r.get("phases", []) if p["direction"] == d]
        out[f"{d}_MBps"] = med([p["bytes"] / p["seconds"] / 1e6 for p in phases])
        out[f"{d}_cpu_s_per_GB"] = {
            side: med([p[f"{side}_cpu"] / (p["bytes"] / 1e9) for p in phases]) for side in ("client", "server")
        }
        out[f"{d}_samples_MBps"] = [round(p["bytes"] / p["seconds"] / 1e6, 1) for p in phases]
    dials = [r["dials"] for r in runs if "dials" in r]
    ms = [x * 1000 for d in dials for x in d["seconds"]]
    out["dial_ping_ms"] = {
        "median": med(ms),
        "p95": round(sorted(ms)[int(0.95 * (len(ms) - 1))], 2) if ms else None,
        "n": len(ms),
        "medians_per_round": [med([x * 1000 for x in d["seconds"]]) for d in dials],
    }
    out["dial_cpu_ms"] = {
        side: med([d[f"{side}_cpu_per_dial"] * 1000 for d in dials if d.get(f"{side}_cpu_per_dial") is not None])
        for side in ("client", "server")
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bytes", type=float, default=50e6, help="bytes per transfer and direction (0: none)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dials", type=int, default=100, help="dial + ping round trips per round (0: none)")
    parser.add_argument("--sizes", default="1452,16384", help="comma-separated max datagram sizes")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    outdir = HERE / "results"
    outdir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
    with open(outdir / f"quic-{stamp}.log", "wb") as log:
        for round_ in range(args.repeats):
            for size in sizes:
                runs[size].append(run_size(size, args, log))
                sys.stderr.write(f"[quic] round {round_ + 1}/{args.repeats}, datagrams of {size} bytes: done\n")
    results = [summarize(size, runs[size]) for size in sizes]
    print(f"mycel QUIC over 127.0.0.1, one stream, {args.bytes / 1e6:g} MB each way, median of {args.repeats} rounds"
          f" (load average {os.getloadavg()[0]:.2f}):")  # fmt: skip
    print(f"  {'max datagram':>12}{'upload MB/s':>13}{'download MB/s':>15}{'CPU s/GB up cli/srv':>22}"
          f"{'down cli/srv':>15}{'dial+ping ms':>14}{'p95':>7}{'CPU ms/dial cli/srv':>21}")  # fmt: skip
    for r in results:
        up, down, cpu = (
            "{client}/{server}".format(**r[key]) for key in ("upload_cpu_s_per_GB", "download_cpu_s_per_GB", "dial_cpu_ms")
        )
        dial = r["dial_ping_ms"]
        print(
            f"  {r['max_datagram_size']:>12}{r['upload_MBps']!s:>13}{r['download_MBps']!s:>15}{up:>22}{down:>15}"
            f"{dial['median']!s:>14}{dial['p95']!s:>7}{cpu:>21}"
        )
    path = outdir / f"quic-{stamp}.json"
    path.write_text(json.dumps({"args": vars(args), "results": results, "runs": {str(k): v for k, v in runs.items()}}, indent=1))
    print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
