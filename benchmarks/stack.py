"""Connection-stack benchmark: two processes on 127.0.0.1, figures side by side in one run.

  raw trio TCP throughput (the ceiling) vs mycel TCP+Noise+yamux one-stream throughput, upload and
  download, the ratio between them, and the median of fresh dials (TCP connect + Noise + yamux + one
  ping round trip).

Usage: python benchmarks/stack.py [--bytes 1e9] [--repeats 3] [--dials 50] [--muxer yamux|mplex]
Both sides speak /perf/1.0.0 (raw TCP: the same framing without libp2p). Prints a table and writes JSON
to benchmarks/results/stack-<time>.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import trio

from mycel import HostConfig, Identity, open_host
from mycel.protocols.perf import PERF_PROTOCOL, Perf, run_perf, serve_perf
from mycel.protocols.ping import Ping
from mycel.security.noise import Noise
from mycel.transports.tcp import TCP

HERE = pathlib.Path(__file__).resolve().parent


def muxer(name: str):  # type: ignore[no-untyped-def]
    if name == "mplex":
        from mycel.muxers.mplex import Mplex

        return Mplex()
    from mycel.muxers.yamux import Yamux

    return Yamux()


def config(name: str, listen: list[str], seed: bytes | None = None) -> HostConfig:
    identity = Identity.from_seed(seed) if seed else Identity.generate()
    return HostConfig(
        identity=identity,
        transports=[TCP()],
        security=[Noise()],
        muxers=[muxer(name)],
        services=[Ping(), Perf()],
        listen=listen,
    )


# -- server process -------------------------------------------------------------------------------
async def server(muxer_name: str) -> None:
    async def raw_handler(stream: trio.SocketStream) -> None:
        try:
            await serve_perf(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, raw_handler, 0, host="127.0.0.1"))
        raw_port = listeners[0].socket.getsockname()[1]
        async with open_host(config(muxer_name, ["/ip4/127.0.0.1/tcp/0"], bytes(32))) as host:
            print(json.dumps({"raw": raw_port, "mycel": str(host.addrs[0])}), flush=True)
            # serve until the parent closes our stdin
            await trio.to_thread.run_sync(sys.stdin.read)
            nursery.cancel_scope.cancel()


# -- client side ----------------------------------------------------------------------------------
async def raw_perf(port: int, upload: int, download: int) -> tuple[float, float]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        res = await run_perf(stream, upload, download)
    return res.upload_seconds, res.download_seconds


async def client(args: argparse.Namespace, addrs: dict[str, object]) -> dict[str, object]:
    n = int(args.bytes)
    out: dict[str, list[float]] = {k: [] for k in ("raw_up", "raw_down", "mycel_up", "mycel_down")}
    async with open_host(config(args.muxer, [])) as host:
        conn = await host.connect(str(addrs["mycel"]))
        for _ in range(args.repeats):
            up, _ = await raw_perf(int(str(addrs["raw"])), n, 0)
            out["raw_up"].append(n / up)
            _, down = await raw_perf(int(str(addrs["raw"])), 0, n)
            out["raw_down"].append(n / down)
            stream = await host.new_stream(conn.remote_peer, [PERF_PROTOCOL])
            res = await run_perf(stream, n, 0)
            await stream.aclose()
            out["mycel_up"].append(n / res.upload_seconds)
            stream = await host.new_stream(conn.remote_peer, [PERF_PROTOCOL])
            res = await run_perf(stream, 0, n)
            await stream.aclose()
            out["mycel_down"].append(n / res.download_seconds)
        await host.disconnect(conn.remote_peer)

    dials: list[float] = []
    async with open_host(config(args.muxer, [])) as host:
        for _ in range(args.dials):
            start = trio.current_time()
            conn = await host.connect(str(addrs["mycel"]))
            await host.service(Ping).ping(conn.remote_peer)
            dials.append(trio.current_time() - start)
            await host.disconnect(conn.remote_peer)
    med = {k: statistics.median(v) for k, v in out.items()}
    return {
        "bytes": n,
        "repeats": args.repeats,
        "muxer": args.muxer,
        "throughput_MBps": {k: round(v / 1e6, 1) for k, v in med.items()},
        "samples_MBps": {k: [round(x / 1e6, 1) for x in v] for k, v in out.items()},
        "ratio_up": round(med["mycel_up"] / med["raw_up"], 3),
        "ratio_down": round(med["mycel_down"] / med["raw_down"], 3),
        "dial_ping_ms": {
            "median": round(statistics.median(dials) * 1000, 3),
            "p95": round(sorted(dials)[int(0.95 * (len(dials) - 1))] * 1000, 3),
            "n": len(dials),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bytes", type=float, default=1e9)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dials", type=int, default=50)
    parser.add_argument("--muxer", default="yamux", choices=["yamux", "mplex"])
    parser.add_argument("--server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.server:
        trio.run(server, args.muxer)
        return 0
    proc = subprocess.Popen(
        [sys.executable, __file__, "--server", "--muxer", args.muxer],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        addrs = json.loads(proc.stdout.readline())
        result = trio.run(client, args, addrs)
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=10)
    t = result["throughput_MBps"]
    assert isinstance(t, dict)
    d = result["dial_ping_ms"]
    assert isinstance(d, dict)
    print(f"one stream, {args.bytes / 1e9:g} GB each way, median of {args.repeats} (MB/s):")
    print(f"  {'':28}{'upload':>10}{'download':>10}")
    print(f"  {'raw trio TCP (ceiling)':28}{t['raw_up']:>10}{t['raw_down']:>10}")
    print(f"  {'mycel TCP+Noise+' + args.muxer:28}{t['mycel_up']:>10}{t['mycel_down']:>10}")
    print(f"  {'ratio mycel / raw':28}{result['ratio_up']:>10}{result['ratio_down']:>10}")
    print(f"fresh dial + ping ({d['n']} dials): median {d['median']} ms, p95 {d['p95']} ms")
    outdir = HERE / "results"
    outdir.mkdir(exist_ok=True)
    path = outdir / f"stack-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
