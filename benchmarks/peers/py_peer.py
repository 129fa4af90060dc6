"""py-libp2p 0.8.1 benchmark peer (TCP + Noise + yamux), the same contract as mycel_peer.py.
Run it with the py-libp2p virtualenv's python (interop/.peers/py-venv/bin/python):

    py_peer.py server                      {"peer_id", "addrs", "pid"}; py-libp2p's PerfService + ping
    py_peer.py client perf  ADDR --bytes N [--streams K] [--server-pid P ...] [--directions ...]
    py_peer.py client dials ADDR --count N fresh dial + one ping, N times
    py_peer.py client ping  ADDR --count N N pings on one open stream

The host offers exactly Noise and yamux, and allows one connection per peer (otherwise py-libp2p waits
a fixed 250 ms on every dial, see interop/README.md). Perf client logic is ours over py-libp2p streams.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import multiaddr  # noqa: E402
import trio  # noqa: E402
from control import wait_stdin_closed  # noqa: E402
from libp2p import new_host  # noqa: E402
from libp2p.crypto.ed25519 import create_new_key_pair  # noqa: E402
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair  # noqa: E402
from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.host.ping import handle_ping  # noqa: E402
from libp2p.network.config import ConnectionConfig  # noqa: E402
from libp2p.network.stream.exceptions import StreamEOF  # noqa: E402
from libp2p.peer.peerinfo import info_from_p2p_addr  # noqa: E402
from libp2p.perf import PerfService  # noqa: E402
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID  # noqa: E402
from libp2p.security.noise.transport import Transport as NoiseTransport  # noqa: E402
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID  # noqa: E402
from libp2p.stream_muxer.yamux.yamux import Yamux  # noqa: E402

import procstat  # noqa: E402

PERF = TProtocol("/perf/1.0.0")
PING = TProtocol("/ipfs/ping/1.0.0")
BLOCK = 64 * 1024
_ZEROS = bytes(BLOCK)


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def make_host(listen: bool) -> Any:
    key_pair = create_new_key_pair()
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    addrs = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=addrs if listen else None,
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )


async def read_some(stream: Any, n: int) -> bytes:
    try:
        return bytes(await stream.read(n))
    except StreamEOF:
        return b""




async def server(_: argparse.Namespace) -> None:
    host = make_host(True)
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        await PerfService(host).start()
        host.set_stream_handler(PING, handle_ping)
        peer = str(host.get_id())
        addrs = []
        for addr in host.get_addrs():
            text = str(addr)
            if text.startswith("/ip4/127.0.0.1/tcp/"):
                addrs.append(text if "/p2p/" in text else f"{text}/p2p/{peer}")
        emit({"peer_id": peer, "addrs": addrs, "pid": os.getpid()})
        await wait_stdin_closed()


async def perf_stream(stream: Any, upload: int, download: int) -> None:
    await stream.write(struct.pack(">Q", download))
    left = upload
    while left > 0:
        k = min(left, BLOCK)
        await stream.write(_ZEROS if k == BLOCK else _ZEROS[:k])
        left -= k
    await stream.close_write()
    got = 0
    while True:
        data = await read_some(stream, BLOCK)
        if not data:
            break
        got += len(data)
    if got != download:
        raise RuntimeError(f"perf: asked for {download} bytes, got {got}")


async def perf(args: argparse.Namespace) -> dict[str, Any]:
    n, k = int(args.bytes), args.streams
    pids = [int(p) for p in args.server_pid]
    info = info_from_p2p_addr(multiaddr.Multiaddr(args.addr))
    host = make_host(False)
    phases = []
    async with host.run(listen_addrs=[]):
        await host.connect(info)
        for direction in args.directions:
            sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
            streams = [await host.new_stream(info.peer_id, [PERF]) for _ in range(k)]
            y0 = procstat.system_busy_seconds()
            c0 = procstat.cpu_seconds()
            s0 = sum(procstat.cpu_seconds(p) for p in pids)
            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for stream, size in zip(streams, sizes):
                    up, down = (size, 0) if direction == "upload" else (0, size)
                    nursery.start_soon(perf_stream, stream, up, down)
            t1 = time.perf_counter()
            c1 = procstat.cpu_seconds()
            s1 = sum(procstat.cpu_seconds(p) for p in pids)
            y1 = procstat.system_busy_seconds()
            for stream in streams:
                await stream.close()
            phases.append({
                "direction": direction, "bytes": n, "streams": k, "seconds": t1 - t0,
                "client_cpu": c1 - c0, "server_cpu": s1 - s0, "system_cpu": y1 - y0,
            })  # fmt: skip
        await host.disconnect(info.peer_id)
    return {"phases": phases}


async def ping_once(stream: Any) -> float:
    payload = os.urandom(32)
    start = time.perf_counter()
    await stream.write(payload)
    got = b""
    while len(got) < 32:
        data = await read_some(stream, 32 - len(got))
        if not data:
            raise RuntimeError("ping stream ended early")
        got += data
    if got != payload:
        raise RuntimeError("ping echo differs")
    return time.perf_counter() - start


async def dials(args: argparse.Namespace) -> dict[str, Any]:
    info = info_from_p2p_addr(multiaddr.Multiaddr(args.addr))
    host = make_host(False)
    seconds: list[float] = []
    connect: list[float] = []
    async with host.run(listen_addrs=[]):
        for i in range(args.count + args.warmup):
            t0 = time.perf_counter()
            await host.connect(info)
            t1 = time.perf_counter()
            stream = await host.new_stream(info.peer_id, [PING])
            await ping_once(stream)
            t2 = time.perf_counter()
            await stream.close()
            await host.disconnect(info.peer_id)
            if i >= args.warmup:
                seconds.append(t2 - t0)
                connect.append(t1 - t0)
    return {"seconds": seconds, "connect_seconds": connect}


async def pings(args: argparse.Namespace) -> dict[str, Any]:
    info = info_from_p2p_addr(multiaddr.Multiaddr(args.addr))
    host = make_host(False)
    async with host.run(listen_addrs=[]):
        await host.connect(info)
        stream = await host.new_stream(info.peer_id, [PING])
        rtts = [await ping_once(stream) for _ in range(args.count + args.warmup)]
        await stream.close()
        await host.disconnect(info.peer_id)
    return {"seconds": rtts[args.warmup :]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("server")
    cli = sub.add_parser("client")
    cli.add_argument("test", choices=["perf", "dials", "ping"])
    cli.add_argument("addr")
    cli.add_argument("--bytes", type=float, default=1e9)
    cli.add_argument("--streams", type=int, default=1)
    cli.add_argument("--directions", nargs="+", default=["upload", "download"])
    cli.add_argument("--server-pid", action="append", default=[])
    cli.add_argument("--count", type=int, default=200)
    cli.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    if args.mode == "server":
        trio.run(server, args)
        return 0
    run = {"perf": perf, "dials": dials, "ping": pings}[args.test]

    async def body() -> None:
        emit(await run(args))

    trio.run(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
