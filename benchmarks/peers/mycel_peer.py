"""mycel's benchmark peer (and the raw trio TCP ceiling). Run with the repo's virtualenv.

    mycel_peer.py server [--stack noise|tls|quic|raw]  one JSON line {"peer_id", "addrs", "pid"}; serves
                                                       /perf/1.0.0 and ping until stdin closes
    mycel_peer.py client perf    ADDR --bytes N [--streams K] [--server-pid P ...] [--no-half-close]
    mycel_peer.py client dials   ADDR --count N        fresh dial + one ping, N times
    mycel_peer.py client ping    ADDR --count N        N pings on one open stream
    mycel_peer.py client conns   ADDR --count N        hold N idle connections (memory test)
    mycel_peer.py client streams ADDR --count N        hold N idle negotiated streams on one connection

``--stack`` (server and client alike): ``noise`` (default; ``mycel`` is an alias) = TCP + Noise + yamux,
``tls`` = TCP + TLS + yamux, ``quic`` = /quic-v1 (``--datagram-size`` sets QUICOptions.max_datagram_size),
``raw`` = the perf framing over plain trio TCP. Every client prints one JSON object on stdout. The memory clients first print {"phase": "warm"} after a
few warm-up connections/streams, wait for a line on stdin, open the rest, print {"phase": "ready"} and
hold everything until stdin closes; the driver reads the server's RSS at both points.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

import trio
from multiaddr import Multiaddr

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import procstat  # noqa: E402
from control import wait_stdin_closed, wait_stdin_line  # noqa: E402

from mycel import HostConfig, Identity, open_host  # noqa: E402
from mycel.network.connmgr import ConnManagerConfig  # noqa: E402
from mycel.network.resources import ResourceLimits  # noqa: E402
from mycel.core.abc import Connection  # noqa: E402
from mycel.core.addrs import split_peer_id  # noqa: E402
from mycel.core.errors import MycelError  # noqa: E402
from mycel.multistream import select_outbound  # noqa: E402
from mycel.muxers.driver import MuxedConnection  # noqa: E402
from mycel.muxers.yamux import Yamux  # noqa: E402
from mycel.network.upgrader import Upgrader  # noqa: E402
from mycel.protocols.perf import PERF_PROTOCOL, Perf, serve_perf  # noqa: E402
from mycel.protocols.ping import PING_PROTOCOL, Ping, ping_stream  # noqa: E402
from mycel.security.noise import Noise  # noqa: E402
from mycel.security.tls import TLS  # noqa: E402
from mycel.transports.quic import QUIC  # noqa: E402
from mycel.transports.tcp import TCP  # noqa: E402

BLOCK = 256 * 1024
_ZEROS = memoryview(bytes(BLOCK))
MAX_STREAMS = 1_000_000  # the server's per-protocol handler limit: the memory test holds 10,000 streams


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


STACKS = ("noise", "mycel", "tls", "quic", "raw")
DATAGRAM_SIZE = 1452  # default QUIC max datagram size (--datagram-size): a 1500-byte Ethernet path
_quic = {"max_datagram_size": DATAGRAM_SIZE}  # set from the command line


# The memory test holds 1,000 connections and 10,000 streams from one peer: far over the default
# per-peer limits and the connection manager's watermarks, so the benchmark hosts have none.
UNBOUNDED = {"resources": ResourceLimits.unlimited(), "connmgr": ConnManagerConfig(low=1 << 30, high=1 << 30)}
# ... and yamux's own per-connection bounds (a 32 MiB window budget: 128 streams at 256 KiB; 1,000 inbound
# streams; 256 new ones a second) would refuse the 10,000 idle streams too
UNBOUNDED_YAMUX: dict[str, Any] = {
    "connection_memory": 1 << 40,
    "peer_memory": 1 << 40,
    "max_inbound_streams": 1 << 20,
    "peer_inbound_streams": 1 << 20,
    "inbound_stream_rate": 1e9,
    "inbound_stream_burst": 1 << 20,
}


def host_config(listen: bool, services: list[Any], stack: str = "noise") -> HostConfig:
    if stack == "quic":
        return HostConfig(
            identity=Identity.generate(),
            transports=[QUIC(max_datagram_size=_quic["max_datagram_size"])],
            services=services,
            listen=["/ip4/127.0.0.1/udp/0/quic-v1"] if listen else [],
            handler_concurrency=MAX_STREAMS,
            **UNBOUNDED,  # type: ignore[arg-type]
        )
    return HostConfig(
        identity=Identity.generate(),
        transports=[TCP()],
        security=[TLS() if stack == "tls" else Noise()],
        muxers=[Yamux(**UNBOUNDED_YAMUX)],
        services=services,
        listen=["/ip4/127.0.0.1/tcp/0"] if listen else [],
        handler_concurrency=MAX_STREAMS,
        **UNBOUNDED,  # type: ignore[arg-type]
    )


# -- server ---------------------------------------------------------------------------------------
async def serve(stack: str) -> None:
    if stack == "raw":

        async def raw_handler(stream: trio.SocketStream) -> None:
            try:
                await serve_perf(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError, MycelError):
                pass

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(trio.serve_tcp, raw_handler, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            emit({"peer_id": "", "addrs": [f"/ip4/127.0.0.1/tcp/{port}"], "pid": os.getpid()})
            await wait_stdin_closed()
            nursery.cancel_scope.cancel()
        return
    async with open_host(host_config(True, [Ping(), Perf()], stack)) as host:
        emit({"peer_id": str(host.peer_id), "addrs": [str(a) for a in host.addrs], "pid": os.getpid()})
        await wait_stdin_closed()


# -- perf -----------------------------------------------------------------------------------------
async def send_zeros(stream: trio.abc.SendStream, n: int) -> None:
    while n > 0:
        k = min(n, BLOCK)
        await stream.send_all(_ZEROS[:k])
        n -= k


async def drain(stream: trio.abc.ReceiveStream, limit: int | None = None) -> int:
    """Read to EOF (or, with ``limit``, until that many bytes); a reset after the data counts as the end."""
    total = 0
    while limit is None or total < limit:
        try:
            chunk = await stream.receive_some(BLOCK)
        except (trio.BrokenResourceError, MycelError):
            if limit is None:  # p2pd turns our half-close into a reset once it has everything
                return total
            raise
        if not chunk:
            break
        total += len(chunk)
    return total


async def perf_stream(stream: trio.abc.HalfCloseableStream, upload: int, download: int, half_close: bool) -> None:
    await stream.send_all(struct.pack(">Q", download))
    await send_zeros(stream, upload)
    if half_close or upload:
        await stream.send_eof()
        got = await drain(stream)
    else:  # the go daemon pipe cannot half-close: read exactly what we asked for
        got = await drain(stream, download)
    if got != download:
        raise RuntimeError(f"perf: asked for {download} bytes, got {got}")


async def perf(args: argparse.Namespace) -> dict[str, Any]:
    n, k = int(args.bytes), args.streams
    pids = [int(p) for p in args.server_pid]
    phases = []

    def server_cpu() -> float:
        return sum(procstat.cpu_seconds(p) for p in pids)

    async def phase(direction: str, open_stream: Any) -> None:
        sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
        streams = [await open_stream() for _ in range(k)]
        y0, c0, s0, t0 = procstat.system_busy_seconds(), procstat.cpu_seconds(), server_cpu(), trio.current_time()
        async with trio.open_nursery() as nursery:
            for stream, size in zip(streams, sizes):
                up, down = (size, 0) if direction == "upload" else (0, size)
                nursery.start_soon(perf_stream, stream, up, down, not args.no_half_close)
        t1, c1, s1, y1 = trio.current_time(), procstat.cpu_seconds(), server_cpu(), procstat.system_busy_seconds()
        for stream in streams:
            await stream.aclose()
        phases.append({
            "direction": direction, "bytes": n, "streams": k, "seconds": t1 - t0,
            "client_cpu": c1 - c0, "server_cpu": s1 - s0, "system_cpu": y1 - y0,
        })  # fmt: skip

    if args.stack == "raw":
        if k != 1:
            raise SystemExit("raw TCP has one stream per connection")
        port = int(args.addr.rsplit("/", 1)[1])

        async def open_raw() -> trio.SocketStream:
            return await trio.open_tcp_stream("127.0.0.1", port)

        for direction in args.directions:
            await phase(direction, open_raw)
        return {"phases": phases}

    async with open_host(host_config(False, [Ping()], args.stack)) as host:
        conn = await host.connect(args.addr)

        async def open_perf() -> trio.abc.HalfCloseableStream:
            return await host.new_stream(conn.remote_peer, [PERF_PROTOCOL], lazy=not (args.no_half_close or args.negotiate))

        for direction in args.directions:
            await phase(direction, open_perf)
        await host.disconnect(conn.remote_peer)
    return {"phases": phases}


# -- latency --------------------------------------------------------------------------------------
async def dials(args: argparse.Namespace) -> dict[str, Any]:
    out: list[float] = []
    connect: list[float] = []
    pids = [int(p) for p in args.server_pid]
    async with open_host(host_config(False, [Ping()], args.stack)) as host:
        ping = host.service(Ping)
        for i in range(args.count + args.warmup):
            if i == args.warmup:
                c0, s0 = procstat.cpu_seconds(), sum(procstat.cpu_seconds(p) for p in pids)
            start = trio.current_time()
            conn = await host.connect(args.addr)
            mid = trio.current_time()
            await ping.ping(conn.remote_peer)
            end = trio.current_time()
            out.append(end - start)
            connect.append(mid - start)
            await host.disconnect(conn.remote_peer)
        c1, s1 = procstat.cpu_seconds(), sum(procstat.cpu_seconds(p) for p in pids)
    n = max(1, args.count)
    return {
        "seconds": out[args.warmup :],
        "connect_seconds": connect[args.warmup :],
        "client_cpu_per_dial": (c1 - c0) / n,  # including the disconnects
        "server_cpu_per_dial": (s1 - s0) / n if pids else None,
    }


async def pings(args: argparse.Namespace) -> dict[str, Any]:
    async with open_host(host_config(False, [Ping()], args.stack)) as host:
        conn = await host.connect(args.addr)
        stream = await host.new_stream(conn.remote_peer, [PING_PROTOCOL])
        rtts = await ping_stream(stream, args.count + args.warmup)
        await stream.aclose()
    return {"seconds": rtts[args.warmup :]}


# -- memory ---------------------------------------------------------------------------------------
async def hold_conns(args: argparse.Namespace) -> None:
    """Open ``count`` connections (after ``warmup``), each checked with a yamux ping, and hold them."""
    if args.stack not in ("noise", "mycel"):
        raise SystemExit("the memory test holds TCP+Noise+yamux connections only")
    procstat.raise_nofile(args.count + args.warmup + 256)
    base, peer = split_peer_id(Multiaddr(args.addr))
    identity = Identity.generate()
    upgrader = Upgrader(identity, [Noise()], [Yamux(keepalive_interval=None)])
    tcp = TCP()
    conns: list[Connection] = []

    async def open_one(nursery: trio.Nursery) -> None:
        raw = await tcp.dial(base)
        conn = await upgrader.upgrade_outbound(raw, peer)
        assert isinstance(conn, MuxedConnection)
        nursery.start_soon(conn.run)
        await conn.ping()  # answered: the listener has the connection up and its muxer running
        conns.append(conn)

    async with trio.open_nursery() as nursery:
        for _ in range(args.warmup):
            await open_one(nursery)
        emit({"phase": "warm", "count": len(conns)})
        await wait_stdin_line()
        limiter = trio.CapacityLimiter(32)

        async def limited() -> None:
            async with limiter:
                await open_one(nursery)

        async with trio.open_nursery() as openers:
            for _ in range(args.count):
                openers.start_soon(limited)
        emit({"phase": "ready", "count": len(conns) - args.warmup})
        await wait_stdin_closed()
        nursery.cancel_scope.cancel()


async def hold_streams(args: argparse.Namespace) -> None:
    """Open ``count`` streams negotiated to /perf/1.0.0 on one connection and hold them idle."""
    async with open_host(host_config(False, [Ping()], args.stack)) as host:
        conn = await host.connect(args.addr)
        streams: list[Any] = []

        async def open_one() -> None:
            stream = await conn.open_stream()
            await select_outbound(stream, [args.protocol])  # a round trip: the remote handler is running
            streams.append(stream)

        for _ in range(args.warmup):
            await open_one()
        emit({"phase": "warm", "count": len(streams)})
        await wait_stdin_line()
        limiter = trio.CapacityLimiter(64)

        async def limited() -> None:
            async with limiter:
                await open_one()

        async with trio.open_nursery() as openers:
            for _ in range(args.count):
                openers.start_soon(limited)
        assert isinstance(conn, MuxedConnection)
        await conn.ping()
        emit({"phase": "ready", "count": len(streams) - args.warmup})
        await wait_stdin_closed()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    srv = sub.add_parser("server")
    srv.add_argument("--stack", choices=STACKS, default="noise")
    srv.add_argument("--datagram-size", type=int, default=DATAGRAM_SIZE, help="QUIC max datagram size")
    srv.add_argument("--profile", help="write a cProfile of the server to this file")
    cli = sub.add_parser("client")
    cli.add_argument("test", choices=["perf", "dials", "ping", "conns", "streams"])
    cli.add_argument("addr")
    cli.add_argument("--stack", choices=STACKS, default="noise")
    cli.add_argument("--datagram-size", type=int, default=DATAGRAM_SIZE, help="QUIC max datagram size")
    cli.add_argument("--bytes", type=float, default=1e9)
    cli.add_argument("--streams", type=int, default=1)
    cli.add_argument("--directions", nargs="+", default=["upload", "download"])
    cli.add_argument("--server-pid", action="append", default=[])
    cli.add_argument("--no-half-close", action="store_true")
    cli.add_argument("--negotiate", action="store_true", help="wait for the multistream answer before sending")
    cli.add_argument("--count", type=int, default=200)
    cli.add_argument("--warmup", type=int, default=5)
    cli.add_argument("--protocol", default=PERF_PROTOCOL)
    cli.add_argument("--profile", help="write a cProfile of the client to this file")
    args = parser.parse_args()
    procstat.raise_nofile(32768)
    _quic["max_datagram_size"] = args.datagram_size

    if args.mode == "server":
        run: Any = functools.partial(serve, args.stack)
    else:
        run = {
            "perf": functools.partial(perf, args),
            "dials": functools.partial(dials, args),
            "ping": functools.partial(pings, args),
            "conns": functools.partial(hold_conns, args),
            "streams": functools.partial(hold_streams, args),
        }[args.test]

    async def body() -> None:
        result = await run()
        if result is not None:
            emit(result)

    if args.profile:
        import cProfile

        cProfile.runctx("trio.run(body)", globals(), {"trio": trio, "body": body}, args.profile)
    else:
        trio.run(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
