"""QUIC benchmark: two processes on 127.0.0.1 over ``/quic-v1``.

For each maximum datagram size: one-stream throughput (``/perf/1.0.0``, upload and download of
``--bytes`` each, median of ``--repeats``) and the median of ``--dials`` fresh dial + ping round trips
(QUIC handshake with libp2p TLS, then one ``/ipfs/ping/1.0.0`` exchange on a new stream).

Usage: python benchmarks/quic.py [--bytes 256e6] [--repeats 3] [--dials 50] [--sizes 1452,16384]
Prints a small table and writes JSON to benchmarks/results/quic-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import trio

from mycel import HostConfig, Identity, open_host
from mycel.protocols.perf import PERF_PROTOCOL, Perf, run_perf
from mycel.protocols.ping import Ping
from mycel.transports.quic import QUIC

HERE = pathlib.Path(__file__).resolve().parent


def config(datagram_size: int, listen: list[str], seed: bytes | None = None) -> HostConfig:
    identity = Identity.from_seed(seed) if seed else Identity.generate()
    return HostConfig(
        identity=identity,
        transports=[QUIC(max_datagram_size=datagram_size)],
        services=[Ping(), Perf()],
        listen=listen,
    )


async def server(datagram_size: int) -> None:
    async with open_host(config(datagram_size, ["/ip4/127.0.0.1/udp/0/quic-v1"], bytes(32))) as host:
        print(json.dumps({"addr": str(host.addrs[0])}), flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # serve until the parent closes our stdin


async def client(args: argparse.Namespace, datagram_size: int, addr: str) -> dict[str, object]:
    n = int(args.bytes)
    up: list[float] = []
    down: list[float] = []
    async with open_host(config(datagram_size, [])) as host:
        conn = await host.connect(addr)
        for _ in range(args.repeats):
            stream = await host.new_stream(conn.remote_peer, [PERF_PROTOCOL])
            res = await run_perf(stream, n, 0)
            await stream.aclose()
            up.append(n / res.upload_seconds)
            stream = await host.new_stream(conn.remote_peer, [PERF_PROTOCOL])
            res = await run_perf(stream, 0, n)
            await stream.aclose()
            down.append(n / res.download_seconds)
        await host.disconnect(conn.remote_peer)
    dials: list[float] = []
    async with open_host(config(datagram_size, [])) as host:
        for _ in range(args.dials):
            start = trio.current_time()
            conn = await host.connect(addr)
            await host.service(Ping).ping(conn.remote_peer)
            dials.append(trio.current_time() - start)
            await host.disconnect(conn.remote_peer)
    return {
        "max_datagram_size": datagram_size,
        "bytes": n,
        "upload_MBps": round(statistics.median(up) / 1e6, 1),
        "download_MBps": round(statistics.median(down) / 1e6, 1),
        "samples_MBps": {"up": [round(x / 1e6, 1) for x in up], "down": [round(x / 1e6, 1) for x in down]},
        "dial_ping_ms": {
            "median": round(statistics.median(dials) * 1000, 2),
            "p95": round(sorted(dials)[int(0.95 * (len(dials) - 1))] * 1000, 2),
            "n": len(dials),
        },
    }


def run_one(args: argparse.Namespace, size: int) -> dict[str, object]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--server", "--sizes", str(size)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        addr = json.loads(proc.stdout.readline())["addr"]
        return trio.run(client, args, size, addr)
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bytes", type=float, default=256e6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dials", type=int, default=50)
    parser.add_argument("--sizes", default="1452,16384", help="comma-separated max datagram sizes")
    parser.add_argument("--server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.server:
        trio.run(server, sizes[0])
        return 0
    results = [run_one(args, size) for size in sizes]
    print(f"QUIC over 127.0.0.1, one stream, {args.bytes / 1e6:g} MB each way, median of {args.repeats}:")
    print(f"  {'max datagram':>14}{'upload MB/s':>14}{'download MB/s':>16}{'dial+ping ms':>15}{'p95 ms':>9}")
    for r in results:
        d = r["dial_ping_ms"]
        assert isinstance(d, dict)
        print(
            f"  {r['max_datagram_size']:>14}{r['upload_MBps']:>14}{r['download_MBps']:>16}"
            f"{d['median']:>15}{d['p95']:>9}"
        )
    outdir = HERE / "results"
    outdir.mkdir(exist_ok=True)
    path = outdir / f"quic-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
