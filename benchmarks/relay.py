"""Circuit relay v2 figures: throughput through a mycel relay vs through a js relay, and relay memory per circuit.

    .venv/bin/python benchmarks/relay.py [--bytes 32e6] [--rounds 3] [--circuits 20] [--quick] [--json FILE]

Three roles, TCP + Noise + yamux on 127.0.0.1: a relay in its own process (mycel: this script with
``--serve-relay``, unlimited circuits, ``--buffer`` bytes per copy: 64 KiB by default, go's 2 KiB with
``--buffer 2048``; js: ``interop/js/relay.mjs relay --unlimited``), and two mycel hosts in
this process: A holds a reservation on the relay and drains a stream, B dials A through the relay and
writes ``--bytes`` on one stream, then waits for A's byte count. Throughput = bytes / (first write to the
count's arrival). The two relays run in the same run, alternately (``--rounds`` each, median reported).

Memory per circuit: ``--circuits`` more mycel dialers each open one relayed connection to A (a stream
open on each, idle); the relay process reports what it holds before and after — the mycel relay its
``tracemalloc`` traced bytes (Python objects: reservation/circuit tables, both streams' state, the
connections' muxer and Noise state), both relays their resident set size (``/proc/<pid>/status``
VmRSS, noisier). Per circuit = delta / circuits.

Every child process is stopped on exit (stdin EOF, SIGTERM, SIGKILL), also on failure; every wait is
bounded (``--timeout`` for the whole run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from interop.peers import _stop_process  # noqa: E402
from mycel.core.abc import MuxedStream  # noqa: E402
from mycel.core.framing import read_exactly  # noqa: E402
from mycel.host import Host, HostConfig, open_host  # noqa: E402
from mycel.muxers.yamux import Yamux  # noqa: E402
from mycel.protocols.identify import Identify  # noqa: E402
from mycel.protocols.relay import CircuitRelay, RelayResources, RelayTransport  # noqa: E402
from mycel.security.noise import Noise  # noqa: E402
from mycel.transports.tcp import TCP  # noqa: E402

NODE = ROOT / "interop" / "js" / "node_modules" / "node" / "bin" / "node"
JS_RELAY = ROOT / "interop" / "js" / "relay.mjs"
SINK = "/bench/sink/1.0.0"
HOLD = "/bench/hold/1.0.0"
CHUNK = 64 * 1024
LINE_LIMIT = 64 * 1024

log = logging.getLogger("mycel.bench.relay")


def _config(*listen: str, services: list[Any] | None = None) -> HostConfig:
    return HostConfig(
        transports=[TCP(), RelayTransport()],
        security=[Noise()],
        muxers=[Yamux()],
        services=services if services is not None else [Identify()],
        listen=["/ip4/127.0.0.1/tcp/0", *listen],
        max_pending_inbound_handshakes=1024,
    )


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


# -- the mycel relay process ----------------------------------------------------------------------


async def serve_relay(buffer_size: int) -> None:
    """Run an unlimited mycel relay; print its address; answer ``stats`` lines on stdin until EOF."""
    tracemalloc.start()
    resources = RelayResources(
        limit_data=None, limit_duration=None, max_circuits=1024, max_circuits_per_ip=1024, buffer_size=buffer_size
    )
    async with open_host(_config(services=[Identify(), CircuitRelay(resources)])) as relay:
        print(json.dumps({"peer_id": str(relay.peer_id), "addrs": [str(a) for a in relay.addrs]}), flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(0))
        buf = bytearray()
        async for data in stdin:
            buf += data
            while b"\n" in buf:
                line, _, rest = bytes(buf).partition(b"\n")
                buf = bytearray(rest)
                if line.strip() == b"stats":
                    svc = relay.service(CircuitRelay)
                    traced, _ = tracemalloc.get_traced_memory()
                    print(json.dumps({"circuits": svc.core.circuit_count, "traced": traced,
                                      "rss": rss_bytes(os.getpid())}), flush=True)  # fmt: skip


# -- driving a relay process ----------------------------------------------------------------------


class RelayProcess:
    """A relay in a child process: its ready line, and (mycel) its stats on request."""

    def __init__(self, name: str, proc: trio.Process, ready: dict[str, Any]) -> None:
        self.name = name
        self.proc = proc
        self.peer_id: str = ready["peer_id"]
        self.addr: str = ready["addrs"][0]
        if "/p2p/" not in self.addr:
            self.addr = f"{self.addr}/p2p/{self.peer_id}"
        self._buf = bytearray()

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while b"\n" not in self._buf:
            data = await self.proc.stdout.receive_some(4096)
            if not data:
                raise RuntimeError(f"{self.name} relay exited")
            self._buf += data
            if len(self._buf) > LINE_LIMIT:
                raise RuntimeError(f"{self.name} relay: line too long")
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        obj: dict[str, Any] = json.loads(line)
        return obj

    async def stats(self) -> dict[str, Any]:
        """mycel: {circuits, traced, rss}; js: {rss} read from /proc."""
        if self.name != "mycel":
            return {"rss": rss_bytes(self.proc.pid)}
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(b"stats\n")
        return await self.line()


@contextlib.asynccontextmanager
async def relay_process(name: str, buffer_size: int = 65536) -> AsyncIterator[RelayProcess]:
    if name == "mycel":
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve-relay", "--buffer", str(buffer_size)]
    else:
        argv = [str(NODE), str(JS_RELAY), "relay", "--unlimited"]
    proc = await trio.lowlevel.open_process(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, cwd=str(ROOT)
    )
    try:
        first = RelayProcess.__new__(RelayProcess)
        first.name, first.proc, first._buf = name, proc, bytearray()
        with trio.fail_after(30):
            ready = await first.line()
        relay = RelayProcess(name, proc, ready)
        relay._buf = first._buf
        yield relay
    finally:
        await _stop_process(proc)  # stdin EOF, SIGTERM, SIGKILL to its group


# -- the measurements -----------------------------------------------------------------------------


async def _sink(stream: MuxedStream) -> None:
    total = 0
    while data := await stream.receive_some(CHUNK):
        total += len(data)
    await stream.send_all(total.to_bytes(8, "big"))
    await stream.send_eof()


async def _hold(stream: MuxedStream) -> None:
    await stream.receive_some(1)  # keeps the stream (and its circuit) open until the dialer leaves


async def throughput(relay: RelayProcess, nbytes: int) -> float:
    """MB/s of one stream B -> A through ``relay``."""
    async with open_host(_config(f"{relay.addr}/p2p-circuit")) as a, open_host(_config()) as b:
        a.set_stream_handler(SINK, _sink)
        transport = next(t for t in a.transports if isinstance(t, RelayTransport))
        with trio.fail_after(30):
            await transport.wait_reserved()
            await b.connect(f"{relay.addr}/p2p-circuit/p2p/{a.peer_id}")
        stream = await b.new_stream(a.peer_id, SINK, allow_limited=True)
        block = bytes(CHUNK)
        start = time.perf_counter()
        left = nbytes
        while left > 0:
            n = min(CHUNK, left)
            await stream.send_all(block if n == CHUNK else block[:n])
            left -= n
        await stream.send_eof()
        got = int.from_bytes(await read_exactly(stream, 8), "big")
        elapsed = time.perf_counter() - start
        if got != nbytes:
            raise RuntimeError(f"{relay.name}: A received {got} of {nbytes} bytes")
        return nbytes / elapsed / 1e6


async def memory_per_circuit(relay: RelayProcess, circuits: int, settle: float) -> dict[str, float]:
    """Bytes the relay holds per idle relayed connection (with one open stream each)."""
    async with open_host(_config(f"{relay.addr}/p2p-circuit")) as a:
        a.set_stream_handler(HOLD, _hold)
        transport = next(t for t in a.transports if isinstance(t, RelayTransport))
        with trio.fail_after(30):
            await transport.wait_reserved()
        async with contextlib.AsyncExitStack() as stack:
            dialers: list[Host] = [await stack.enter_async_context(open_host(_config())) for _ in range(circuits)]
            for b in dialers:  # connected to the relay first, so that only the circuits differ below
                await b.connect(relay.addr)
            await trio.sleep(settle)  # let the relay settle (identify exchanges) before the baseline
            before = await relay.stats()
            streams = []
            with trio.fail_after(60):
                for b in dialers:
                    await b.connect(f"{relay.addr}/p2p-circuit/p2p/{a.peer_id}")
                    stream = await b.new_stream(a.peer_id, HOLD, allow_limited=True)
                    await stream.send_all(b"")
                    streams.append(stream)
            await trio.sleep(settle)  # the circuits' identify exchanges finish
            after = await relay.stats()
            if relay.name == "mycel" and after["circuits"] != circuits:
                raise RuntimeError(f"mycel relay holds {after['circuits']} circuits, expected {circuits}")
            out = {"rss_per_circuit": (after["rss"] - before["rss"]) / circuits}
            if "traced" in after:
                out["traced_per_circuit"] = (after["traced"] - before["traced"]) / circuits
            return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "bytes": args.bytes, "rounds": args.rounds, "circuits": args.circuits, "mycel_buffer_size": args.buffer
    }  # fmt: skip
    with trio.fail_after(args.timeout):
        async with relay_process("mycel", args.buffer) as mycel_relay, relay_process("js") as js_relay:
            relays = {"mycel": mycel_relay, "js": js_relay}
            speeds: dict[str, list[float]] = {"mycel": [], "js": []}
            for i in range(args.rounds):
                order = ["mycel", "js"] if i % 2 == 0 else ["js", "mycel"]
                for name in order:
                    mbps = await throughput(relays[name], args.bytes)
                    speeds[name].append(mbps)
                    log.info("round %d %s relay: %.1f MB/s", i + 1, name, mbps)
            for name, values in speeds.items():
                results[f"{name}_relay_MBps"] = round(statistics.median(values), 1)
                results[f"{name}_relay_MBps_all"] = [round(v, 1) for v in values]
            for name, relay in relays.items():
                mem = await memory_per_circuit(relay, args.circuits, args.settle)
                results[f"{name}_relay_memory"] = {k: round(v) for k, v in mem.items()}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bytes", type=float, default=32e6, help="bytes per throughput run (default 32e6)")
    parser.add_argument("--rounds", type=int, default=3, help="throughput runs per relay (default 3)")
    parser.add_argument("--circuits", type=int, default=20, help="circuits for the memory figure (default 20)")
    parser.add_argument("--settle", type=float, default=0.5, help="seconds the relay settles before a memory reading")
    parser.add_argument("--quick", action="store_true", help="2 MB, 1 round, 4 circuits, 0.1 s settle (for make test)")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound on the whole run, seconds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--buffer", type=int, default=65536, help="the mycel relay's buffer_size (default 64 KiB; go's is 2 KiB)"
    )
    parser.add_argument("--serve-relay", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_relay:
        logging.basicConfig(level=logging.WARNING)
        trio.run(serve_relay, args.buffer)
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    if args.quick:
        args.bytes, args.rounds, args.circuits, args.settle = 2e6, 1, 4, 0.1
    args.bytes = int(args.bytes)
    results = trio.run(run, args)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
