"""Side-by-side benchmark: mycel against raw trio TCP, js-libp2p, py-libp2p and go-libp2p (p2pd).

    .venv/bin/python benchmarks/compare.py [--bytes 1e9] [--repeats 3] [--only throughput latency memory pubsub dht]

Everything runs on 127.0.0.1, two processes per pair (a server and a client program from
``benchmarks/peers/``), over TCP + Noise + yamux; a second table runs QUIC (``/quic-v1``, 1452-byte
datagrams, and 16 KiB ones on loopback) and TCP + TLS + yamux, with ``--quic-bytes`` per QUIC transfer
(QUIC in Python moves tens of MB/s, not hundreds) and ``--tls-bytes`` per TLS one. Throughput pairs run in rounds (every pair once per
round, so drift in machine load hits all of them alike) and the table shows medians over the rounds;
the ratios are computed from the same run. CPU is user+system time of each process per GB moved,
read from /proc. "others" is the CPU other user-space processes (and the hypervisor's steal) took
while a row's client ran: rows marked "~" ran while that was more than 10% of the machine. The pubsub
section (gossipsub, mycel and js-libp2p: one publisher -> one subscriber, and a 20-host network) is
``pubsub.py``'s; its tables and targets join this report. So are the DHT section's (``dht.py``: 15 mycel +
15 js-libp2p kad-dht hosts; find-peer, get-value and find-providers times from a mycel and a js asker, and
mycel's bytes per routing-table entry and provider record).

Writes ``benchmarks/results/compare-<time>.{json,txt,png}`` (the PNG needs matplotlib: the ``bench``
extra). The interop peers come from ``interop/install.sh``, which is run if they are missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS = HERE / "peers"
RESULTS = HERE / "results"
sys.path.insert(0, str(PEERS))

import procstat  # noqa: E402


def _load_bench(name: str) -> Any:
    """``benchmarks/<name>.py``, under a name no test package or installed module can shadow."""
    spec = importlib.util.spec_from_file_location(f"mycel_bench_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look themselves up there)
    spec.loader.exec_module(module)
    return module


pubsub_bench = _load_bench("pubsub")
dht_bench = _load_bench("dht")

PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
NODE = REPO / "interop" / "js" / "node_modules" / "node" / "bin" / "node"
PY_LIBP2P = REPO / "interop" / ".peers" / "py-venv" / "bin" / "python"
P2PD = REPO / "interop" / ".peers" / "go" / "p2pd"

READY_TIMEOUT = 60.0
MB = 1e6
TARGETS = {
    "vs_js": 2.0,  # one stream, mycel / js-libp2p
    "vs_py": 8.0,  # one stream, mycel / py-libp2p
    "absolute_MBps": 500.0,
    "vs_raw": 0.35,
    "dial_vs_js": 0.5,  # dial + ping median, mycel / js (at most)
    "dial_ms": 5.0,
    "conn_KiB": 64.0,
    "stream_KiB": 4.0,
    "quic_vs_js": 1.0,  # QUIC one stream (1452-byte datagrams), mycel / js-libp2p QUIC (at least)
    "quic_dial_ms": 5.0,  # QUIC dial + ping median
}


JS_QUIC_PACKAGE = REPO / "interop" / "js" / "node_modules" / "@chainsafe" / "libp2p-quic"


@dataclass(frozen=True)
class Impl:
    key: str
    name: str
    program: tuple[str, ...]
    server_args: tuple[str, ...] = ("server",)
    client_args: tuple[str, ...] = ()
    stack: str = "noise"  # noise | tls | quic | raw: what the peer runs (its --stack option)

    def missing(self) -> str | None:
        if not Path(self.program[0]).exists():
            return f"{self.program[0]} is missing"
        if self.program[-1].endswith(".mjs") and self.stack != "noise":
            script = Path(self.program[-1]).read_text(errors="replace")
            if "--stack" not in script or (self.stack == "quic" and "libp2p-quic" not in script):
                return f"js {self.stack} not installed"
            if self.stack == "quic" and not JS_QUIC_PACKAGE.exists():
                return "js quic not installed"
        return None


def _stack(key: str, base: Impl, stack: str, name: str, *extra: str) -> Impl:
    """``base`` running another stack (``--stack``, plus ``extra`` options on both sides)."""
    args = ("--stack", stack, *extra)
    return Impl(key, name, base.program, (*base.server_args, *args), (*base.client_args, *args), stack)


IMPLS = {
    "raw": Impl("raw", "raw trio TCP", (PYTHON, str(PEERS / "mycel_peer.py")), ("server", "--stack", "raw"), ("--stack", "raw"), "raw"),
    "mycel": Impl("mycel", "mycel", (PYTHON, str(PEERS / "mycel_peer.py"))),
    "js": Impl("js", "js-libp2p 3.3", (str(NODE), str(PEERS / "js_peer.mjs"))),
    "py": Impl("py", "py-libp2p 0.8.1", (str(PY_LIBP2P), str(PEERS / "py_peer.py"))),
    "go": Impl("go", "go-libp2p (p2pd)", (PYTHON, str(PEERS / "go_peer.py"))),
}
IMPLS.update({
    "mycel-quic": _stack("mycel-quic", IMPLS["mycel"], "quic", "mycel QUIC"),
    "mycel-quic-16k": _stack("mycel-quic-16k", IMPLS["mycel"], "quic", "mycel QUIC 16 KiB", "--datagram-size", "16384"),
    "mycel-tls": _stack("mycel-tls", IMPLS["mycel"], "tls", "mycel TCP+TLS"),
    "js-quic": _stack("js-quic", IMPLS["js"], "quic", "js-libp2p 3.3 QUIC"),
    "js-tls": _stack("js-tls", IMPLS["js"], "tls", "js-libp2p 3.3 TCP+TLS"),
})  # fmt: skip

# (client, server, extra client arguments, label, note)
ONE_STREAM: list[tuple[str, str, tuple[str, ...], str, str]] = [
    ("raw", "raw", (), "raw trio TCP (ceiling)", "perf framing over plain TCP, no libp2p"),
    ("mycel", "mycel", (), "mycel <-> mycel", ""),
    ("js", "js", (), "js <-> js", ""),
    ("py", "py", (), "py <-> py", "py-libp2p's own PerfService as server"),
    ("mycel", "js", ("--negotiate",), "mycel -> js", "mycel dials; waits for the protocol answer (see note 1)"),
    ("js", "mycel", (), "js -> mycel", "js dials"),
    ("mycel", "go", ("--no-half-close",), "mycel -> go (p2pd)", "go = p2pd + its unix-socket pipe to a Python helper (note 2)"),
]
MULTI_STREAM: list[tuple[str, str, tuple[str, ...], str, str]] = [
    ("mycel", "mycel", (), "mycel <-> mycel", ""),
    ("js", "js", (), "js <-> js", ""),
]
# QUIC (--quic-bytes per transfer) and TCP+TLS+yamux (--tls-bytes), one stream
QUIC_TLS: list[tuple[str, str, tuple[str, ...], str, str]] = [
    ("mycel-quic", "mycel-quic", (), "mycel <-> mycel QUIC", "1452-byte datagrams (an Ethernet path)"),
    ("mycel-quic-16k", "mycel-quic-16k", (), "mycel <-> mycel QUIC 16K", "16 KiB datagrams: loopback carries them"),
    ("js-quic", "js-quic", (), "js <-> js QUIC", "@chainsafe/libp2p-quic"),
    ("mycel-quic", "js-quic", ("--negotiate",), "mycel -> js QUIC", "mycel dials, 1452-byte datagrams; waits for the protocol answer (note 1)"),
    ("mycel-tls", "mycel-tls", (), "mycel <-> mycel TLS", "TCP + TLS 1.3 + yamux"),
    ("js-tls", "js-tls", (), "js <-> js TLS", "TCP + TLS 1.3 + yamux"),
]
LATENCY = ["mycel", "js", "py", "mycel-quic", "js-quic", "mycel-tls", "js-tls"]
LATENCY_LABELS = {"mycel-quic": "mycel QUIC", "js-quic": "js-libp2p QUIC", "mycel-tls": "mycel TCP+TLS", "js-tls": "js-libp2p TCP+TLS"}
MEMORY_SERVERS = ["mycel", "js"]
NOTES = [
    "1. js-libp2p 3.3 loses a half-close that arrives with an optimistically negotiated stream (header, "
    "proposal, data and FIN in one go): its handler never sees EOF. mycel's client waits for the "
    "multistream answer when talking to js.",
    "2. p2pd has no perf: it pipes each stream through a unix socket to our Python helper, so that row "
    "measures go-libp2p's TCP+Noise+yamux plus the daemon's pipe; server CPU is p2pd + helper. The pipe "
    "cannot half-close, so downloads are read to length.",
]


def log(msg: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# -- processes ------------------------------------------------------------------------------------
def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            continue


class PeerProcess:
    """A peer program with a JSON-lines stdout; stderr goes to the run's log file."""

    def __init__(self, argv: Sequence[str], logfile: Any) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=logfile,
            cwd=str(REPO),
            start_new_session=True,  # its own process group: stopped with everything it started
        )

    def read_json(self, timeout: float) -> dict[str, Any]:
        """The next JSON object line on stdout (other lines are skipped); kill the peer on timeout."""
        assert self.proc.stdout is not None
        timer = threading.Timer(timeout, _kill_group, (self.proc,))
        timer.start()
        try:
            while True:
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"{self.argv[1]} exited ({self.proc.poll()}) without a result")
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    return obj
        finally:
            timer.cancel()

    def send_line(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"\n")
        self.proc.stdin.flush()

    def stop(self, grace: float = 10.0) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        _kill_group(self.proc)


@dataclass
class Server:
    impl: Impl
    process: PeerProcess
    addr: str
    pids: list[int]

    def pid_args(self) -> list[str]:
        return [arg for pid in self.pids for arg in ("--server-pid", str(pid))]


@contextmanager
def server(impl: Impl, logfile: Any) -> Iterator[Server]:
    process = PeerProcess([*impl.program, *impl.server_args], logfile)
    try:
        ready = process.read_json(READY_TIMEOUT)
        pids = [int(p) for p in ready.get("pids", [ready["pid"]])]
        yield Server(impl, process, str(ready["addrs"][0]), pids)
    finally:
        process.stop()


def run_client(impl: Impl, test: str, srv: Server, args: Sequence[str], timeout: float, logfile: Any) -> dict[str, Any]:
    argv = [*impl.program, "client", test, srv.addr, *impl.client_args, *srv.pid_args(), *args]
    process = PeerProcess(argv, logfile)
    try:
        return process.read_json(timeout)
    finally:
        process.stop(grace=timeout)


class Disturbance:
    """How much of the machine other work took while a client ran: the CPU of every other user-space
    process (not our server, client or driver) plus hypervisor steal, as a share of wall time x CPUs."""

    def __init__(self, ours: Sequence[int] = ()) -> None:
        self.ours = set(ours) | {os.getpid()}
        self.share: float | None = None

    def __enter__(self) -> Disturbance:
        self.t0 = time.monotonic()
        self.cpu0 = procstat.user_processes_cpu()
        self.steal0 = procstat.steal_seconds()
        return self

    def __exit__(self, *exc: Any) -> None:
        wall = time.monotonic() - self.t0
        cpu1 = procstat.user_processes_cpu()
        other = procstat.steal_seconds() - self.steal0
        for pid, cpu in cpu1.items():
            if pid in self.ours or self._is_our_child(pid):
                continue
            other += cpu - self.cpu0.get(pid, 0.0)
        self.share = max(0.0, other) / (wall * (os.cpu_count() or 1)) if wall > 0 else None

    @staticmethod
    def _is_our_child(pid: int) -> bool:
        """A peer we started that is still running (reaped clients are gone from /proc anyway)."""
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            return int(stat[stat.rindex(b")") + 2 :].split()[1]) == os.getpid()
        except (OSError, ValueError, IndexError):
            return False


# -- statistics -----------------------------------------------------------------------------------
def median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


def p95(xs: Sequence[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass
class PerfRow:
    label: str
    client: str
    server: str
    note: str
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"upload": [], "download": []})
    errors: list[str] = field(default_factory=list)
    others: list[float] = field(default_factory=list)  # share of the machine other work took, per run

    def mbps(self, direction: str) -> list[float]:
        return [p["bytes"] / p["seconds"] / MB for p in self.samples[direction]]

    def cpu_per_gb(self, direction: str, side: str) -> float | None:
        return median([p[f"{side}_cpu"] / (p["bytes"] / 1e9) for p in self.samples[direction]])

    def others_share(self) -> float | None:
        """Median share of the machine other work took during this row's runs."""
        return median(self.others)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "client": self.client, "server": self.server, "note": self.note}
        for d in ("upload", "download"):
            out[d] = {
                "median_MBps": median(self.mbps(d)),
                "samples_MBps": [round(x, 1) for x in self.mbps(d)],
                "client_cpu_s_per_GB": self.cpu_per_gb(d, "client"),
                "server_cpu_s_per_GB": self.cpu_per_gb(d, "server"),
                "phases": self.samples[d],
            }
        out["others_share"] = self.others_share()
        out["others_per_run"] = [round(x, 3) for x in self.others]
        out["errors"] = self.errors
        return out


# -- the tests ------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, logfile: Any) -> None:
        self.args = args
        self.logfile = logfile
        self.results: dict[str, Any] = {}
        self.available = {k: impl for k, impl in IMPLS.items() if impl.missing() is None}
        for k, impl in IMPLS.items():
            if k not in self.available:
                log(f"skipping {impl.name}: {impl.missing()}")

    def perf_timeout(self, client: str, server: str, nbytes: float) -> float:
        if "quic" in client or "quic" in server:
            slowest = 3.0  # MB/s we are sure to beat, or it failed
        else:
            slowest = 20.0 if "py" in (client, server) else 150.0
        return 60 + 2 * nbytes / MB / slowest

    def wanted(self, *keys: str) -> bool:
        """The row's stack is one of --stacks (raw TCP goes with noise)."""
        stacks = {"raw" if s == "noise" else s for s in self.args.stacks} | set(self.args.stacks)
        return all(IMPLS[k].stack in stacks for k in keys)

    def not_available(self, *keys: str) -> str | None:
        for key in keys:
            if key not in self.available:
                return f"n/a ({IMPLS[key].missing() or 'not installed'})"
        return None

    def throughput(self) -> None:
        rows: dict[str, list[PerfRow]] = {"one_stream": [], "16_streams": [], "quic_tls": []}
        plan: list[tuple[str, PerfRow, tuple[str, ...], int, float]] = []
        groups = (("one_stream", ONE_STREAM, 1), ("16_streams", MULTI_STREAM, 16), ("quic_tls", QUIC_TLS, 1))
        for group, pairs, streams in groups:
            for client, server_key, extra, label, note in pairs:
                if not self.wanted(client, server_key):
                    continue
                row = PerfRow(label, client, server_key, note)
                unavailable = self.not_available(client, server_key)
                if unavailable:
                    row.errors.append(unavailable)
                else:
                    if "quic" in client or "quic" in server_key:
                        n = self.args.quic_bytes
                    else:
                        n = self.args.tls_bytes if group == "quic_tls" else self.args.bytes
                    plan.append((group, row, extra, streams, n))
                rows[group].append(row)
        needed = sorted({row.server for _, row, _, _, _ in plan})
        with ExitStack() as stack:
            servers: dict[str, Server] = {}
            for key in needed:
                try:
                    servers[key] = stack.enter_context(server(IMPLS[key], self.logfile))
                except Exception as exc:  # e.g. a peer that cannot run this stack: its rows say so
                    log(f"{IMPLS[key].name} server failed to start: {exc}")
                    for _, row, _, _, _ in plan:
                        if row.server == key:
                            row.errors.extend([f"server failed to start: {exc}"] * 2)
            for r in range(self.args.repeats):
                for group, row, extra, streams, n in plan:
                    if len(row.errors) >= 2:
                        continue  # failed twice: do not spend more time on it
                    srv = servers[row.server]
                    t0 = time.monotonic()
                    try:
                        with Disturbance(srv.pids) as noise:
                            res = run_client(
                                IMPLS[row.client], "perf", srv, ["--bytes", f"{n:.0f}", "--streams", str(streams), *extra],
                                self.perf_timeout(row.client, row.server, n), self.logfile,
                            )  # fmt: skip
                        row.others.append(noise.share or 0.0)
                        for phase in res["phases"]:
                            row.samples[phase["direction"]].append(phase)
                        figures = ", ".join(f"{d} {x:.0f} MB/s" for d in ("upload", "download") for x in row.mbps(d)[-1:])
                        log(f"round {r + 1}/{self.args.repeats} {group} {row.label}: {figures} ({time.monotonic() - t0:.1f} s)")
                    except Exception as exc:  # one failing pair is reported, the run goes on
                        row.errors.append(f"{type(exc).__name__}: {exc}")
                        log(f"round {r + 1} {group} {row.label} failed: {exc}")
        self.results["throughput"] = {group: [row.summary() for row in rs] for group, rs in rows.items() if rs}

    def latency(self) -> None:
        out: dict[str, Any] = {}
        for key in LATENCY:
            if not self.wanted(key):
                continue
            unavailable = self.not_available(key)
            if unavailable:
                out[key] = {"error": unavailable}
                continue
            impl = IMPLS[key]
            entry: dict[str, Any] = {}
            try:
                with server(impl, self.logfile) as srv:
                    t0 = time.monotonic()
                    with Disturbance(srv.pids) as dial_noise:
                        dials = run_client(impl, "dials", srv, ["--count", str(self.args.dials)], 300, self.logfile)
                    with Disturbance(srv.pids) as ping_noise:
                        pings = run_client(impl, "ping", srv, ["--count", str(self.args.pings)], 120, self.logfile)
                    log(f"latency {impl.name}: done in {time.monotonic() - t0:.1f} s")
                ms = [x * 1000 for x in dials["seconds"]]
                conn_ms = [x * 1000 for x in dials.get("connect_seconds", [])]
                rtt = [x * 1000 for x in pings["seconds"]]
                entry = {
                    "dial_ping_ms": {"median": median(ms), "p95": p95(ms), "n": len(ms), "samples": ms},
                    "connect_ms": {"median": median(conn_ms), "p95": p95(conn_ms)},
                    "ping_rtt_ms": {"median": median(rtt), "p95": p95(rtt), "n": len(rtt)},
                    "others_share": max(dial_noise.share or 0.0, ping_noise.share or 0.0),
                }
                for side in ("client", "server"):  # CPU milliseconds per dial, where the peer reports it
                    cpu = dials.get(f"{side}_cpu_per_dial")
                    if cpu is not None:
                        entry[f"{side}_cpu_ms_per_dial"] = cpu * 1000
            except Exception as exc:
                entry = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"latency {impl.name} failed: {exc}")
            out[key] = entry
        self.results["latency"] = out

    def memory(self) -> None:
        out: dict[str, Any] = {}
        client = IMPLS["mycel"]
        if "noise" not in self.args.stacks:
            return
        for key in MEMORY_SERVERS:
            if key not in self.available:
                out[key] = {"error": "not installed"}
                continue
            entry: dict[str, Any] = {}
            for test, count in (("conns", self.args.conns), ("streams", self.args.streams)):
                try:
                    entry[test] = self._memory_one(IMPLS[key], client, test, count)
                    log(f"memory {IMPLS[key].name} {test}: {entry[test]['per_item_KiB']:.2f} KiB each")
                except Exception as exc:
                    entry[test] = {"error": f"{type(exc).__name__}: {exc}"}
                    log(f"memory {IMPLS[key].name} {test} failed: {exc}")
            out[key] = entry
        self.results["memory"] = out

    def _memory_one(self, impl: Impl, client: Impl, test: str, count: int) -> dict[str, Any]:
        """Server RSS before and after ``count`` idle connections/streams from a mycel client."""
        warmup = 20
        with server(impl, self.logfile) as srv:
            argv = [*client.program, "client", test, srv.addr, "--count", str(count), "--warmup", str(warmup)]
            proc = PeerProcess(argv, self.logfile)
            try:
                proc.read_json(120)  # {"phase": "warm"}: the server has served the warm-up ones
                before = sum(procstat.rss_bytes(p) for p in srv.pids)
                t0 = time.monotonic()
                proc.send_line()
                ready = proc.read_json(600)
                elapsed = time.monotonic() - t0
                after = sum(procstat.rss_bytes(p) for p in srv.pids)
                server_cpu = sum(procstat.cpu_seconds(p) for p in srv.pids)
            finally:
                proc.stop(grace=60)
        made = int(ready.get("count", count))
        return {
            "count": made,
            "rss_before": before,
            "rss_after": after,
            "per_item_KiB": (after - before) / made / 1024 if made else None,
            "open_seconds": elapsed,
            "server_cpu_seconds_total": server_cpu,
        }

    def pubsub(self) -> None:
        """Gossipsub, mycel and js-libp2p side by side (``pubsub.py``; TCP + Noise + yamux only)."""
        if "noise" not in self.args.stacks:
            return
        opts = pubsub_bench.Options(repeats=self.args.pubsub_repeats, kinds=tuple(self.args.pubsub_kinds))
        self.results["pubsub"] = pubsub_bench.run(opts, self.logfile)

    def dht(self) -> None:
        """Kademlia DHT, mycel and js-libp2p in one 30-host network, and mycel's DHT memory (``dht.py``)."""
        self.results["dht"] = dht_bench.run(dht_bench.Options(ops=self.args.dht_ops))


# -- report ---------------------------------------------------------------------------------------
def fmt(x: float | None, spec: str = ".0f", missing: str = "-") -> str:
    return missing if x is None else format(x, spec)


def check(ok: bool | None) -> str:
    return "  n/a" if ok is None else ("  met" if ok else "  MISSED")


def evaluate(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, from this run's medians."""
    rows = {r["label"]: r for r in results.get("throughput", {}).get("one_stream", [])}

    def mb(label: str, d: str) -> float | None:
        r = rows.get(label)
        return r[d]["median_MBps"] if r else None

    out: dict[str, Any] = {}
    for d in ("upload", "download"):
        mycel = mb("mycel <-> mycel", d)
        out[f"mycel_vs_js_{d}"] = ratio(mycel, mb("js <-> js", d))
        out[f"mycel_vs_py_{d}"] = ratio(mycel, mb("py <-> py", d))
        out[f"mycel_vs_raw_{d}"] = ratio(mycel, mb("raw trio TCP (ceiling)", d))
        out[f"mycel_MBps_{d}"] = mycel
    lat = results.get("latency", {})
    m = lat.get("mycel", {}).get("dial_ping_ms", {}).get("median")
    j = lat.get("js", {}).get("dial_ping_ms", {}).get("median")
    p = lat.get("py", {}).get("dial_ping_ms", {}).get("median")
    out["dial_mycel_ms"] = m
    out["dial_mycel_vs_js"] = ratio(m, j)
    out["dial_mycel_vs_py"] = ratio(m, p)
    mem = results.get("memory", {}).get("mycel", {})
    out["conn_KiB"] = mem.get("conns", {}).get("per_item_KiB")
    out["stream_KiB"] = mem.get("streams", {}).get("per_item_KiB")
    quic_rows = {r["label"]: r for r in results.get("throughput", {}).get("quic_tls", [])}

    def quic_mb(label: str, d: str) -> float | None:
        r = quic_rows.get(label)
        return r[d]["median_MBps"] if r else None

    for d in ("upload", "download"):
        out[f"quic_MBps_{d}"] = quic_mb("mycel <-> mycel QUIC", d)
        out[f"quic_vs_js_{d}"] = ratio(out[f"quic_MBps_{d}"], quic_mb("js <-> js QUIC", d))
    q = lat.get("mycel-quic", {}).get("dial_ping_ms", {}).get("median")
    jq = lat.get("js-quic", {}).get("dial_ping_ms", {}).get("median")
    out["quic_dial_ms"] = q
    out["quic_dial_vs_js"] = ratio(q, jq)

    def both(key: str, target: float) -> bool | None:
        vals = [out[f"{key}_{d}"] for d in ("upload", "download")]
        return None if any(v is None for v in vals) else all(v >= target for v in vals)

    pubsub_targets = pubsub_bench.evaluate(results["pubsub"]) if "pubsub" in results else {}
    out["pubsub"] = pubsub_targets
    dht_targets = dht_bench.evaluate(results["dht"]) if "dht" in results else {}
    out["dht"] = dht_targets
    out["met"] = {
        "one stream >= 2x js": both("mycel_vs_js", TARGETS["vs_js"]),
        "one stream >= 8x py-libp2p": both("mycel_vs_py", TARGETS["vs_py"]),
        "one stream >= 500 MB/s": both("mycel_MBps", TARGETS["absolute_MBps"]),
        "one stream >= 35% of raw TCP": both("mycel_vs_raw", TARGETS["vs_raw"]),
        "dial+ping median <= 0.5x js": None if out["dial_mycel_vs_js"] is None else out["dial_mycel_vs_js"] <= TARGETS["dial_vs_js"],
        "dial+ping median <= 5 ms": None if m is None else m <= TARGETS["dial_ms"],
        "idle connection <= 64 KiB": None if out["conn_KiB"] is None else out["conn_KiB"] <= TARGETS["conn_KiB"],
        "idle stream <= 4 KiB": None if out["stream_KiB"] is None else out["stream_KiB"] <= TARGETS["stream_KiB"],
        "QUIC one stream >= js-libp2p QUIC": both("quic_vs_js", TARGETS["quic_vs_js"]),
        "QUIC dial+ping median < 5 ms": None if q is None else q < TARGETS["quic_dial_ms"],
        **pubsub_targets.get("met", {}),  # when the run had a pubsub section
        **dht_targets.get("met", {}),  # when the run had a DHT section
    }  # fmt: skip
    return out


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"mycel benchmark {meta['started']}: {meta['bytes'] / 1e9:g} GB per transfer, median of {meta['repeats']} rounds, "
        f"127.0.0.1, {meta['cpus']} CPUs, load average {meta['loadavg_start']:.2f} at start / {meta['loadavg_end']:.2f} at end",
        "",
    ]
    tp = results.get("throughput", {})
    quic_mb = meta.get("quic_bytes", meta["bytes"]) / 1e6
    groups = (
        ("one_stream", "One stream over TCP+Noise+yamux"),
        ("16_streams", "16 parallel streams, one connection (total)"),
        ("quic_tls", f"One stream over QUIC ({quic_mb:g} MB per transfer) and TCP+TLS+yamux ({meta.get('tls_bytes', meta['bytes']) / 1e6:g} MB)"),
    )
    for group, title in groups:
        if group not in tp:
            continue
        lines.append(f"{title} (MB/s; CPU s/GB client/server)")
        lines.append(f"  {'':26}{'upload':>8}{'download':>10}{'CPU up':>13}{'CPU down':>13}{'others':>8}  note")
        for r in tp[group]:
            if r["errors"] and not r["upload"]["samples_MBps"]:
                error = r["errors"][0]
                status = "n/a" if error.startswith("n/a") else "failed"
                lines.append(f"  {r['label']:26}{status:>8}  {error[:90]}")
                continue
            up, down = r["upload"], r["download"]
            others = r["others_share"]
            mark = "~" if others is not None and others > 0.10 else " "
            cpu = [f"{fmt(x['client_cpu_s_per_GB'], '.2f')}/{fmt(x['server_cpu_s_per_GB'], '.2f')}" for x in (up, down)]
            note = r["note"] + (f" [{len(r['errors'])} failed runs]" if r["errors"] else "")
            lines.append(
                f"{mark} {r['label']:26}{fmt(up['median_MBps']):>8}{fmt(down['median_MBps']):>10}"
                f"{cpu[0]:>13}{cpu[1]:>13}{fmt(None if others is None else others * 100, '.0f') + '%':>8}  {note}"
            )
        lines.append("")
    lat = results.get("latency")
    if lat:
        lines.append("Latency (ms)            dial+ping median   p95   (connect part)   ping RTT median   p95              CPU/dial cli/srv")
        for key, e in lat.items():
            name = LATENCY_LABELS.get(key, IMPLS[key].name if key in IMPLS else key)
            if "error" in e:
                error = e["error"]
                lines.append(f"  {name:22}{error[:80] if error.startswith('n/a') else 'failed: ' + error[:80]}")
                continue
            d, c, p = e["dial_ping_ms"], e["connect_ms"], e["ping_rtt_ms"]
            others = e.get("others_share")
            mark = "~" if others is not None and others > 0.10 else " "
            dial_cpu = ""
            if e.get("client_cpu_ms_per_dial") is not None:
                dial_cpu = f"{fmt(e['client_cpu_ms_per_dial'], '.1f')}/{fmt(e.get('server_cpu_ms_per_dial'), '.1f')}"
            lines.append(
                f"{mark} {name:22}{fmt(d['median'], '.2f'):>17}{fmt(d['p95'], '.2f'):>7}{fmt(c['median'], '.2f'):>15}"
                f"{fmt(p['median'], '.3f'):>20}{fmt(p['p95'], '.3f'):>7}"
                f"{fmt(None if others is None else others * 100, '.0f') + '% others':>14}{dial_cpu:>18}"
            )
        lines.append(f"  (fresh dials + one ping, n={next(iter(lat.values())).get('dial_ping_ms', {}).get('n', '?')}: TCP connect + Noise or TLS "
                     "+ yamux, or the QUIC handshake with TLS inside; ping RTT on one open stream)")  # fmt: skip
        lines.append("")
    mem = results.get("memory")
    if mem:
        lines.append("Memory: server RSS growth (KiB each; a mycel client opens them)")
        for key, e in mem.items():
            name = IMPLS[key].name
            parts = []
            for test, what in (("conns", "idle connection"), ("streams", "idle stream")):
                t = e.get(test, {})
                if "error" in t:
                    parts.append(f"{what}: failed ({t['error'][:50]})")
                elif t:
                    parts.append(f"{what}: {fmt(t['per_item_KiB'], '.2f')} (n={t['count']})")
            lines.append(f"  {name:22}" + ";  ".join(parts))
        lines.append("")
    if "pubsub" in results:
        lines.extend(pubsub_bench.render(results["pubsub"]))
    if "dht" in results:
        lines.extend(dht_bench.render(results["dht"]))
    ev = results.get("targets")
    if ev:
        lines.append("Targets (issue 4; QUIC and TLS; pubsub; DHT, issue 11), ratios from this run")
        lines.append(
            f"  mycel / js one stream:  up {fmt(ev['mycel_vs_js_upload'], '.2f')}x  down {fmt(ev['mycel_vs_js_download'], '.2f')}x"
            f"   | mycel / py: up {fmt(ev['mycel_vs_py_upload'], '.1f')}x  down {fmt(ev['mycel_vs_py_download'], '.1f')}x"
            f"   | mycel / raw TCP: up {fmt(ev['mycel_vs_raw_upload'], '.2f')}  down {fmt(ev['mycel_vs_raw_download'], '.2f')}"
        )
        lines.append(
            f"  dial+ping mycel / js: {fmt(ev['dial_mycel_vs_js'], '.2f')}x  (mycel / py-libp2p: {fmt(ev['dial_mycel_vs_py'], '.2f')}x)"
        )
        if ev.get("quic_vs_js_upload") is not None or ev.get("quic_dial_ms") is not None:
            lines.append(
                f"  QUIC mycel / js one stream: up {fmt(ev.get('quic_vs_js_upload'), '.2f')}x  down {fmt(ev.get('quic_vs_js_download'), '.2f')}x"
                f"   | QUIC dial+ping mycel / js: {fmt(ev.get('quic_dial_vs_js'), '.2f')}x"
            )
        if ev.get("pubsub"):
            lines.append(pubsub_bench.render_targets({"targets": ev["pubsub"]})[0])
        if ev.get("dht", {}).get("ratios"):
            lines.append("  DHT mycel / js median: " + "  ".join(
                f"{kind} {fmt(r['median'], '.2f')}x" for kind, r in ev["dht"]["ratios"].items()))
        for name, ok in ev["met"].items():
            lines.append(f"  {name:34}{check(ok)}")
        lines.append("")
    lines.append("Notes: " + " ".join(NOTES))
    lines.append("  ~ = other processes used more than 10% of the machine during that row (median).")
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is missing (pip install -e '.[bench]'): no chart")
        return False
    fig, axes = plt.subplots(3, 2, figsize=(14, 13))
    tp = results.get("throughput", {})
    panels = (
        (axes[0][0], "one_stream", "One stream, TCP+Noise+yamux (MB/s)"),
        (axes[0][1], "16_streams", "16 streams (MB/s)"),
        (axes[2][0], "quic_tls", "One stream, QUIC and TCP+TLS+yamux (MB/s, log scale)"),
    )
    pubsub_panel(axes[2][1], results.get("pubsub", {}))
    for ax, group, title in panels:
        rows = tp.get(group, [])
        labels = [r["label"] for r in rows]
        ups = [r["upload"]["median_MBps"] or 0 for r in rows]
        downs = [r["download"]["median_MBps"] or 0 for r in rows]
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], ups, 0.4, label="upload")
        ax.bar([x + 0.2 for x in xs], downs, 0.4, label="download")
        ax.set_xticks(list(xs), labels, rotation=25, ha="right", fontsize=8)
        ax.set_title(title)
        if group == "quic_tls":
            ax.set_yscale("log")  # QUIC moves tens of MB/s, TLS hundreds
        ax.legend()
    lat = results.get("latency", {})
    keys = [k for k, e in lat.items() if "error" not in e]
    ax = axes[1][0]
    xs = range(len(keys))
    ax.bar([x - 0.2 for x in xs], [lat[k]["dial_ping_ms"]["median"] for k in keys], 0.4, label="dial+ping median")
    ax.bar([x + 0.2 for x in xs], [lat[k]["dial_ping_ms"]["p95"] for k in keys], 0.4, label="dial+ping p95")
    ax.set_xticks(list(xs), [LATENCY_LABELS.get(k, IMPLS[k].name) for k in keys], fontsize=8, rotation=25, ha="right")
    ax.set_yscale("log")
    ax.set_title("Fresh dial + ping (ms, log scale)")
    ax.legend()
    ax = axes[1][1]
    mem = results.get("memory", {})
    labels, values = [], []
    for key, e in mem.items():
        for test, what in (("conns", "conn"), ("streams", "stream")):
            v = e.get(test, {}).get("per_item_KiB")
            if v is not None:
                labels.append(f"{IMPLS[key].name}\nidle {what}")
                values.append(v)
    ax.bar(range(len(values)), values)
    ax.set_xticks(list(range(len(values))), labels, fontsize=8)
    ax.set_title("Server memory (KiB each)")
    fig.suptitle(f"mycel benchmark {results['meta']['started']} ({results['meta']['bytes'] / 1e9:g} GB, median of {results['meta']['repeats']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def pubsub_panel(ax: Any, res: dict[str, Any]) -> None:
    """Pubsub messages/s per pair and message size (log scale), or nothing."""
    rows = res.get("throughput", {}).get("rows", {})
    sizes = [int(s) for s in res.get("options", {}).get("sizes", ())]
    if not rows or not sizes:
        ax.axis("off")
        return
    width = 0.8 / len(sizes)
    xs = range(len(rows))
    for k, size in enumerate(sizes):
        values = [r["sizes"][str(size)].get("msgs_per_s") or 0 for r in rows.values()]
        ax.bar([x - 0.4 + width * (k + 0.5) for x in xs], values, width, label=pubsub_bench.size_name(size))
    ax.set_xticks(list(xs), list(rows), rotation=25, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_title("Pubsub, one publisher -> one subscriber (messages/s, log scale)")
    ax.legend()


def ensure_peers(skip_install: bool) -> None:
    missing = [p for p in (NODE, PY_LIBP2P, P2PD) if not p.exists()]
    if missing and not skip_install:
        log(f"interop peers missing ({', '.join(str(p.relative_to(REPO)) for p in missing)}): running interop/install.sh")
        subprocess.run([str(REPO / "interop" / "install.sh")], check=False, cwd=str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bytes", type=float, default=1e9, help="bytes per transfer and direction (default 1e9)")
    parser.add_argument("--quic-bytes", type=float, default=50e6, help="bytes per QUIC transfer and direction (default 50e6)")
    parser.add_argument("--tls-bytes", type=float, default=5e8, help="bytes per TCP+TLS transfer and direction (default 5e8)")
    parser.add_argument("--repeats", type=int, default=3, help="throughput rounds (medians are over these)")
    parser.add_argument("--dials", type=int, default=200)
    parser.add_argument("--pings", type=int, default=500)
    parser.add_argument("--conns", type=int, default=1000, help="idle connections for the memory test")
    parser.add_argument("--streams", type=int, default=10000, help="idle streams for the memory test")
    parser.add_argument("--only", nargs="+", choices=["throughput", "latency", "memory", "pubsub", "dht"])
    parser.add_argument("--pubsub-repeats", type=int, default=pubsub_bench.Options.repeats, help="pubsub throughput rounds")
    parser.add_argument("--pubsub-kinds", nargs="+", choices=["mycel", "js", "mixed"], default=list(pubsub_bench.Options.kinds),
                        help="pubsub networks to run (default: %(default)s)")
    parser.add_argument("--dht-ops", type=int, default=dht_bench.Options.ops, help="DHT lookups of each kind per asker")
    parser.add_argument("--stacks", nargs="+", choices=["noise", "quic", "tls"], default=["noise", "quic", "tls"],
                        help="rows of these stacks only (default all; the memory test is noise only)")
    parser.add_argument("--no-install", action="store_true", help="do not run interop/install.sh")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    procstat.raise_nofile(65536)  # inherited by the peers: 1,000 connections need 1,000+ descriptors each
    ensure_peers(args.no_install)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = args.out / f"compare-{stamp}"
    started = time.monotonic()
    with open(f"{base}.log", "wb") as logfile:
        bench = Bench(args, logfile)
        meta = {
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "bytes": args.bytes,
            "quic_bytes": args.quic_bytes,
            "tls_bytes": args.tls_bytes,
            "repeats": args.repeats,
            "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg()[0],
            "python": platform.python_version(),
            "platform": platform.platform(),
        }
        bench.results["meta"] = meta
        tests = args.only or ["throughput", "latency", "memory", "pubsub", "dht"]
        for test in ("throughput", "latency", "memory", "pubsub", "dht"):
            if test in tests:
                getattr(bench, test)()
        meta["loadavg_end"] = os.getloadavg()[0]
        meta["seconds"] = round(time.monotonic() - started, 1)
    results = bench.results
    results["targets"] = evaluate(results)
    table = render(results)
    print(table)
    Path(f"{base}.json").write_text(json.dumps(results, indent=1))
    Path(f"{base}.txt").write_text(table + "\n")
    wrote = [f"{base}.json", f"{base}.txt", f"{base}.log"]
    if chart(results, Path(f"{base}.png")):
        wrote.append(f"{base}.png")
    print(f"\n{meta['seconds']:.0f} s; wrote " + ", ".join(os.path.relpath(w, REPO) for w in wrote))
    return 0


if __name__ == "__main__":
    sys.exit(main())
