"""CPU per dial + ping, both ends in one process: ``python benchmarks/dial_cpu.py [TREE] [--dials N]``.

Two hosts (TCP + Noise + Yamux + Ping, default ``HostConfig``) on 127.0.0.1; the client connects, pings
and disconnects N times; printed: process CPU (user + system) per round, and the garbage collections it
caused. ``TREE`` is a checkout of mycel to measure instead of this one (for a side-by-side A/B: run two
trees alternately and compare medians). For a figure the machine's load cannot blur, count instructions:

    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \\
        python benchmarks/dial_cpu.py TREE --dials 100     # and again with --dials 300:
    # (I(300) - I(100)) / 200 = instructions per dial + ping
``--stream-mib N`` measures one stream instead: one connection, N MiB written through one stream to a
sink handler in 256 KiB writes; with cachegrind, (I(48) - I(16)) / 32 = instructions per MiB.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree", nargs="?", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--dials", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--stream-mib", type=int, default=0, help="one stream of this many MiB instead of dials")
    args = parser.parse_args()
    sys.path.insert(0, args.tree)
    import trio

    import mycel
    from mycel import TCP, HostConfig, Noise, Ping, Yamux, open_host

    assert str(Path(mycel.__file__).resolve()).startswith(str(Path(args.tree).resolve())), mycel.__file__

    async def one_stream(server: Any, client: Any) -> None:
        done = trio.Event()

        async def sink(stream: Any) -> None:
            while await stream.receive_some(1 << 20):
                pass
            await stream.aclose()
            done.set()

        server.set_stream_handler("/sink/1.0.0", sink)
        await client.connect(server.addrs[0])
        stream = await client.new_stream(server.peer_id, ["/sink/1.0.0"])
        chunk = b"x" * (256 * 1024)
        t0, w0 = os.times(), time.perf_counter()
        for _ in range(args.stream_mib * 4):
            await stream.send_all(chunk)
        await stream.send_eof()
        await done.wait()
        t1, w1 = os.times(), time.perf_counter()
        cpu = (t1.user - t0.user) + (t1.system - t0.system)
        print(f"{args.tree}: {args.stream_mib} MiB through one stream: {cpu / args.stream_mib * 1e3:.2f} ms CPU per MiB, "
              f"{args.stream_mib / (w1 - w0):.0f} MiB/s wall (both ends in this process)")

    async def run() -> None:
        def config(**kw: object) -> HostConfig:
            return HostConfig(transports=[TCP()], security=[Noise()], muxers=[Yamux()], services=[Ping()], **kw)  # type: ignore[arg-type]

        async with open_host(config(listen=["/ip4/127.0.0.1/tcp/0"])) as server, open_host(config()) as client:
            addr = server.addrs[0]
            if args.stream_mib:
                await one_stream(server, client)
                return

            async def round_trip() -> None:
                await client.connect(addr)
                await client.service(Ping).ping(server.peer_id)
                await client.disconnect(server.peer_id)

            for _ in range(args.warmup):
                await round_trip()
            gc0 = [s["collections"] for s in gc.get_stats()]
            t0, w0 = os.times(), time.perf_counter()
            for _ in range(args.dials):
                await round_trip()
            t1, w1 = os.times(), time.perf_counter()
            n = args.dials
            user, system = (t1.user - t0.user) / n * 1e3, (t1.system - t0.system) / n * 1e3
            gcs = [s["collections"] - g for s, g in zip(gc.get_stats(), gc0)]
            print(f"{args.tree}: {user + system:.3f} ms CPU per dial + ping (user {user:.3f}, system {system:.3f}); "
                  f"{(w1 - w0) / n * 1e3:.3f} ms wall; gc collections per generation {gcs}")

    trio.run(run)


if __name__ == "__main__":
    main()
