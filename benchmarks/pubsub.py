"""Gossipsub side by side: mycel and js-libp2p (``@libp2p/gossipsub`` 17.1.1), every host its own process.

    .venv/bin/python benchmarks/pubsub.py [--repeats 3] [--quick] [--only throughput network] [--signing signed unsigned]
    .venv/bin/python benchmarks/compare.py --only pubsub      # the same, as a section of make bench

Two tests, everything on 127.0.0.1 over TCP + Noise + yamux, peers from ``peers/mycel_pubsub.py`` and
``peers/js_pubsub.mjs`` (one contract: JSON commands on stdin, one reply line each):

* **throughput**: one publisher -> one subscriber, two processes per pair (mycel -> mycel, js -> js,
  mycel -> js, js -> mycel). The publisher publishes ``count`` messages back to back, awaiting each
  publish; the subscriber's messages/s are counted from its first to its last receipt. Queues are sized
  so nothing needs to drop (mycel's peer queue and subscription queue hold a whole run; js buffers
  without bound); what was lost or dropped anyway is reported. Pairs run in rounds; medians. Twice:
  **signed** (each side's default, StrictSign: Ed25519 signing and verifying per message) and
  **unsigned** (``--no-sign`` of both peers: StrictNoSign, message id = SHA-256 of the data, which the
  payload's publish clock and sequence number keep unique): the router and the stack without Ed25519.
* **network**: ``hosts`` processes of one implementation (``mycel``, ``js``) or half of each (``mixed``),
  each dialing ``dials`` others (a ring plus random chords, the same graph for every kind), all
  subscribed to one topic. After ``warmup`` messages, ``messages`` messages of ``size`` bytes per phase
  are published from random hosts at ``rate`` per second with IDONTWANT on (each router's default
  threshold: 1 KiB mycel, 512 B js) and off (threshold above the message size), alternating in
  ``rounds`` segments (on, off, off, on) and set on the running routers: the same mesh serves both
  phases. Latency is publish -> the last subscriber's receipt (wall clock in the payload);
  duplicates are receipts of a message a host had already seen (mycel: the router's ``duplicates``
  counter; js: the router's own "duplicate" verdicts, counted by wrapping ``validateReceivedMessage``).

Every wait is bounded in count and time; peers are stopped (stdin closed, then their process group
killed) on the way out, failure or not, and they exit by themselves when the driver's pipe closes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS = HERE / "peers"
sys.path.insert(0, str(PEERS))

import procstat  # noqa: E402

PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
NODE = REPO / "interop" / "js" / "node_modules" / "node" / "bin" / "node"
JS_GOSSIPSUB = REPO / "interop" / "js" / "node_modules" / "@libp2p" / "gossipsub"

PROGRAMS: dict[str, tuple[str, ...]] = {
    "mycel": (PYTHON, str(PEERS / "mycel_pubsub.py")),
    "js": (str(NODE), str(PEERS / "js_pubsub.mjs")),
}
NAMES = {"mycel": "mycel", "js": "js-libp2p"}
PAIRS = [("mycel", "mycel"), ("js", "js"), ("mycel", "js"), ("js", "mycel")]
TOPIC = "bench"
IDONTWANT_OFF = 1 << 30  # a threshold no message reaches
READY_TIMEOUT = 60.0
KiB = 1024

TARGETS = {
    "vs_js_1k": 2.0,  # messages/s at 1 KiB, mycel -> mycel / js -> js (at least)
    "p99_vs_js": 1.0,  # 20-host network p99 latency, mycel / js (at most)
    "idontwant_cut": 0.25,  # duplicate payload bytes IDONTWANT saves at 100 KiB (at least)
}
TARGET_NAMES = ("pubsub 1 KiB >= 2x js (signed)", "pubsub network p99 <= js", "IDONTWANT cuts dup bytes >= 25%")
UNSIGNED_TARGET = "pubsub 1 KiB >= 2x js (unsigned)"  # the same bar for the router + stack alone
SIGNING = ("signed", "unsigned")  # throughput: StrictSign (the defaults), StrictNoSign with SHA-256 ids
THROUGHPUT_KEY = {"signed": "throughput", "unsigned": "throughput_unsigned"}  # where run() puts each


def log(msg: str) -> None:
    sys.stderr.write(f"[pubsub {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


@dataclass
class Options:
    sizes: tuple[int, ...] = (100, KiB, 100 * KiB)
    bytes_per_run: float = 40e6  # throughput: messages per run = this / size, within [min_count, max_count]
    min_count: int = 300
    max_count: int = 6000
    repeats: int = 3
    pairs: tuple[tuple[str, str], ...] = tuple(PAIRS)
    signing: tuple[str, ...] = SIGNING  # throughput runs, one set of peers each
    unsigned_factor: int = 3  # unsigned runs publish this many times the messages: they run ~3x faster
    kinds: tuple[str, ...] = ("mycel", "js", "mixed")  # networks: all mycel, all js, half and half
    hosts: int = 20
    dials: int = 3
    size: int = 100 * KiB
    messages: int = 60  # per phase, in ``rounds`` segments
    rounds: int = 2  # phases alternate on, off, off, on, ...: drift (JIT warming up, load) hits both alike
    warmup: int = 20  # messages published (at the rate) before the phases, not counted
    rate: float = 5.0  # messages per second, network-wide: 20 js hosts need ~0.8 CPU for it, mycel ~0.2
    phases: tuple[str, ...] = ("on", "off")
    settle: float = 2.5  # seconds of heartbeats after the mesh is up, before publishing
    run_timeout: float = 60.0  # one throughput run, or one network phase's drain
    seed: int = 1

    @classmethod
    def quick(cls) -> Options:
        """A few seconds' worth: the code path of every part, not figures to quote."""
        return cls(
            sizes=(KiB,), bytes_per_run=1, min_count=200, max_count=200, repeats=1, pairs=(("mycel", "mycel"), ("js", "js")),
            signing=SIGNING, unsigned_factor=1,
            kinds=("mixed",), hosts=4, dials=1, size=8 * KiB, messages=10, rounds=1, warmup=0, rate=50.0, settle=1.2,
            run_timeout=20.0,
        )  # fmt: skip

    def count(self, size: int, signing: str = "signed") -> int:
        return _count(asdict(self), size, signing)


def missing(impl: str) -> str | None:
    """Why ``impl``'s peer cannot run here, or None."""
    program = PROGRAMS[impl]
    if not Path(program[0]).exists():
        return f"{program[0]} is missing (interop/install.sh)"
    if impl == "js" and not JS_GOSSIPSUB.exists():
        return "@libp2p/gossipsub is not installed in interop/js"
    return None


# -- peer processes -------------------------------------------------------------------------------
class PeerError(RuntimeError):
    pass


class Peer:
    """A pubsub peer process: a ready line, then JSON commands with one reply each (read by a thread)."""

    def __init__(self, impl: str, args: Sequence[str], logfile: BinaryIO | None) -> None:
        self.impl = impl
        self.proc = subprocess.Popen(
            [*PROGRAMS[impl], *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=logfile if logfile is not None else subprocess.DEVNULL,
            cwd=str(REPO),
            start_new_session=True,  # its own process group: killed with whatever it started
        )
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._replies: dict[int, dict[str, Any]] = {}
        self._next = 0
        self._ready: dict[str, Any] | None = None
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            with self._cond:
                if "reply" in obj:
                    if isinstance(obj["reply"], int):
                        self._replies[obj["reply"]] = obj
                elif self._ready is None:
                    self._ready = obj
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def ready(self, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready is not None or self._eof, timeout):
                raise PeerError(f"{self.impl} peer not ready after {timeout:.0f} s")
            if self._ready is None:
                raise PeerError(f"{self.impl} peer exited ({self.proc.poll()}) before its ready line")
            return self._ready

    @property
    def addr(self) -> str:
        ready = self.ready()
        addr = str(ready["addrs"][0])
        return addr if "/p2p/" in addr else f"{addr}/p2p/{ready['peer_id']}"

    @property
    def pid(self) -> int:
        return int(self.ready()["pid"])

    def send(self, cmd: str, **params: Any) -> int:
        """Send a command; returns its id for :meth:`result`."""
        with self._lock:
            self._next += 1
            ident = self._next
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps({"id": ident, "cmd": cmd, **params}) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise PeerError(f"{self.impl} peer is gone ({self.proc.poll()})") from exc
        return ident

    def result(self, ident: int, timeout: float) -> dict[str, Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: ident in self._replies or self._eof, timeout):
                raise PeerError(f"{self.impl} peer: no reply after {timeout:.0f} s")
            if ident not in self._replies:
                raise PeerError(f"{self.impl} peer exited ({self.proc.poll()})")
            reply = self._replies.pop(ident)
        if not reply.get("ok"):
            raise PeerError(f"{self.impl} peer: {reply.get('error')}")
        return reply

    def call(self, cmd: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        return self.result(self.send(cmd, **params), timeout)

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=3)
            except (ProcessLookupError, PermissionError):
                break
            except subprocess.TimeoutExpired:
                continue


@contextmanager
def peers(specs: Sequence[tuple[str, Sequence[str]]], logfile: BinaryIO | None) -> Iterator[list[Peer]]:
    """Start every peer at once, wait for all of them, and stop them all on the way out."""
    with ExitStack() as stack:
        started: list[Peer] = []
        for impl, args in specs:
            peer = Peer(impl, args, logfile)
            stack.callback(peer.stop)
            started.append(peer)
        for peer in started:
            peer.ready()
        yield started


def call_all(targets: Sequence[Peer], cmd: str, timeout: float = 30.0, **params: Any) -> list[dict[str, Any]]:
    """The same command to every peer at once; their replies in order."""
    ids = [p.send(cmd, **params) for p in targets]
    deadline = time.monotonic() + timeout
    return [p.result(i, max(0.1, deadline - time.monotonic())) for p, i in zip(targets, ids)]


# -- statistics -----------------------------------------------------------------------------------
def median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


def quantile(xs: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile."""
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


class Others:
    """The share of the machine that work other than ours (this driver and the given peers) took while
    the block ran: machine-wide busy CPU time from /proc/stat minus our processes' own, over wall time x
    CPUs. Loopback traffic's softirq time counts as others, so a quiet machine reads a few percent."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.share = 0.0

    def _ours(self) -> float:
        total: float = procstat.cpu_seconds()
        for pid in self.pids:
            try:
                total += procstat.cpu_seconds(pid)
            except OSError:
                pass
        return total

    def __enter__(self) -> Others:
        self.t0, self.busy0, self.ours0 = time.monotonic(), procstat.system_busy_seconds(), self._ours()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self.t0
        other = (procstat.system_busy_seconds() - self.busy0) - (self._ours() - self.ours0)
        self.share = max(0.0, other) / (wall * (os.cpu_count() or 1)) if wall > 0 else 0.0


# -- throughput -----------------------------------------------------------------------------------
def pair_label(pub: str, sub: str) -> str:
    return f"{pub} -> {sub}"


def throughput(opts: Options, logfile: BinaryIO | None, signing: str = "signed") -> dict[str, Any]:
    """Every pair of ``opts.pairs``, every size, ``opts.repeats`` rounds; ``signing``: "signed" (each
    side's default, StrictSign) or "unsigned" (StrictNoSign, SHA-256 content ids on both sides)."""
    if signing not in SIGNING:
        raise ValueError(f"signing must be one of {SIGNING}, not {signing!r}")
    extra = ["--no-sign"] if signing == "unsigned" else []
    rows: dict[str, dict[str, Any]] = {}
    runnable: list[tuple[str, str]] = []
    for pub, sub in opts.pairs:
        label = pair_label(pub, sub)
        rows[label] = {"publisher": pub, "subscriber": sub, "sizes": {str(s): {"runs": []} for s in opts.sizes}, "errors": []}
        why = missing(pub) or missing(sub)
        if why:
            rows[label]["errors"].append(f"n/a ({why})")
        else:
            runnable.append((pub, sub))
    if not runnable:
        return {"signing": signing, "rows": rows}
    most = max(opts.count(s, signing) for s in opts.sizes)
    specs: list[tuple[str, Sequence[str]]] = []
    for pub, sub in runnable:
        specs.append((sub, extra))
        specs.append((pub, [*extra, "--peer-queue", str(most + 1024)] if pub == "mycel" else extra))
    with peers(specs, logfile) as started:
        pids = [p.pid for p in started]
        pairs: list[tuple[str, Peer, Peer]] = []
        for k, (pub, sub) in enumerate(runnable):
            label = pair_label(pub, sub)
            publisher, subscriber = started[2 * k + 1], started[2 * k]
            try:
                subscriber.call("subscribe", topic=TOPIC, maxsize=most + 1024)
                publisher.call("connect", addr=subscriber.addr)
                publisher.call("wait", timeout=25, topic=TOPIC, peers=1, within=20)
                pairs.append((label, publisher, subscriber))
            except PeerError as exc:
                rows[label]["errors"].append(f"setup: {exc}")
                log(f"throughput {signing} {label}: setup failed: {exc}")
        for r in range(opts.repeats):
            for size in opts.sizes:
                for label, publisher, subscriber in pairs:
                    row = rows[label]
                    if len(row["errors"]) >= 2:
                        continue
                    try:
                        with Others(pids) as others:
                            run = one_run(publisher, subscriber, size, opts.count(size, signing), opts.run_timeout)
                        run["others"] = others.share
                    except PeerError as exc:
                        row["errors"].append(str(exc))
                        log(f"throughput {signing} round {r + 1} {label} {size} B failed: {exc}")
                        continue
                    row["sizes"][str(size)]["runs"].append(run)
                    log(
                        f"throughput {signing} round {r + 1}/{opts.repeats} {label} {size} B: {fmt(run['msgs_per_s'])} msg/s "
                        f"({run['received']}/{run['count']} received, {run['dropped']} dropped; others {100 * others.share:.0f}%)"
                    )
    for row in rows.values():
        for size, entry in row["sizes"].items():
            runs = entry["runs"]
            rates = [x["msgs_per_s"] for x in runs if x["msgs_per_s"] is not None]
            entry["msgs_per_s"] = median(rates)
            entry["MBps"] = None if entry["msgs_per_s"] is None else entry["msgs_per_s"] * int(size) / 1e6
            entry["lost"] = sum(x["count"] - x["received"] for x in runs)
            entry["dropped"] = sum(x["dropped"] for x in runs)
            entry["count"] = runs[0]["count"] if runs else None
            entry["others"] = median([x["others"] for x in runs])
    return {"signing": signing, "rows": rows}


def one_run(publisher: Peer, subscriber: Peer, size: int, count: int, timeout: float) -> dict[str, Any]:
    """``count`` messages of ``size`` bytes; what the subscriber got, from its first to its last receipt."""
    subscriber.call("reset")
    before_sub = subscriber.call("stats", topic=TOPIC, receipts=False)
    before_pub = publisher.call("stats", topic=TOPIC, receipts=False)
    pub = publisher.call("publish", timeout=timeout, topic=TOPIC, size=size, count=count)
    deadline = time.monotonic() + timeout
    last, stalled_since = -1, time.monotonic()
    while True:
        stats = subscriber.call("stats", topic=TOPIC, receipts=False)
        now = time.monotonic()
        if stats["received"] >= pub["published"] or now > deadline:
            break
        if stats["received"] != last:
            last, stalled_since = stats["received"], now
        elif now - stalled_since > 3.0:
            break  # nothing new for 3 s: the rest is lost
        time.sleep(0.02)
    after_pub = publisher.call("stats", topic=TOPIC, receipts=False)
    received = int(stats["received"])
    span = (stats["last_us"] - stats["first_us"]) / 1e6 if received > 1 else 0.0
    return {
        "count": count,
        "published": pub["published"],
        "failed": pub["failed"],
        "received": received,
        "seconds": span,
        "msgs_per_s": (received - 1) / span if span > 0 else None,
        "end_to_end_msgs_per_s": received / ((stats["last_us"] - pub["start_us"]) / 1e6) if received else None,
        "publish_seconds": pub["seconds"],
        "publisher_cpu": after_pub["cpu"] - before_pub["cpu"],
        "subscriber_cpu": stats["cpu"] - before_sub["cpu"],
        "dropped": (stats["dropped_sub"] - before_sub["dropped_sub"]) + (after_pub["dropped_peers"] - before_pub["dropped_peers"]),
    }


# -- network --------------------------------------------------------------------------------------
def topology(n: int, dials: int, seed: int) -> list[tuple[int, int]]:
    """Who dials whom: i dials i+1 (a ring: connected), then random others up to ``dials`` each."""
    rng = random.Random(seed)
    edges: set[frozenset[int]] = set()
    out: list[tuple[int, int]] = []

    def add(a: int, b: int) -> bool:
        if a == b or frozenset((a, b)) in edges:
            return False
        edges.add(frozenset((a, b)))
        out.append((a, b))
        return True

    for i in range(n):
        if n > 1:
            add(i, (i + 1) % n)
        made, tries = 1, 0
        while made < dials and tries < 50 * n:
            tries += 1
            made += add(i, rng.randrange(n))
    return out


def kind_impls(kind: str, n: int) -> list[str]:
    if kind == "mixed":
        return ["mycel" if i % 2 == 0 else "js" for i in range(n)]
    return [kind] * n


def network(opts: Options, logfile: BinaryIO | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in opts.kinds:
        impls = kind_impls(kind, opts.hosts)
        why = next((w for w in (missing(i) for i in set(impls)) if w), None)
        if why:
            out[kind] = {"error": f"n/a ({why})"}
            continue
        t0 = time.monotonic()
        try:
            out[kind] = one_network(opts, impls, logfile)
            out[kind]["seconds"] = round(time.monotonic() - t0, 1)
            phases = out[kind]["phases"]
            log(f"network {kind}: " + "; ".join(f"IDONTWANT {p}: p50 {fmt(v['latency_ms']['p50'], '.1f')} ms, "
                f"p99 {fmt(v['latency_ms']['p99'], '.1f')} ms, {fmt(v['dups_per_msg_per_host'], '.2f')} dups/msg/host"
                for p, v in phases.items()) + f" ({time.monotonic() - t0:.0f} s)")  # fmt: skip
        except PeerError as exc:
            out[kind] = {"error": str(exc)}
            log(f"network {kind} failed: {exc}")
    return out


def one_network(opts: Options, impls: list[str], logfile: BinaryIO | None) -> dict[str, Any]:
    n = len(impls)
    edges = topology(n, opts.dials, opts.seed)
    degree = [sum(1 for e in edges if i in e) for i in range(n)]
    with peers([(impl, []) for impl in impls], logfile) as hosts:
        call_all(hosts, "subscribe", topic=TOPIC, keep=True, maxsize=opts.messages * 4 + 1024)
        ids = [(hosts[a], hosts[a].send("connect", addr=hosts[b].addr)) for a, b in edges]
        for peer, ident in ids:
            peer.result(ident, 30)
        for host, d in zip(hosts, degree):
            host.call("wait", timeout=25, topic=TOPIC, peers=d, within=20)
        time.sleep(opts.settle)  # heartbeats: meshes fill up to D where the graph allows
        meshes = [int(s["mesh"]) for s in call_all(hosts, "stats", topic=TOPIC, receipts=False)]
        rng = random.Random(opts.seed + 1)
        if opts.warmup:  # JIT, caches, the first IDONTWANTs: not what a phase should measure
            publish_segment(opts, hosts, rng, 0, opts.warmup)
        seq = opts.warmup
        segments: dict[str, list[Segment]] = {phase: [] for phase in opts.phases}
        per_round = max(1, opts.messages // opts.rounds)
        for r in range(opts.rounds):
            for phase in opts.phases if r % 2 == 0 else reversed(opts.phases):  # on, off, off, on, ...
                for host, impl in zip(hosts, impls):
                    threshold = IDONTWANT_OFF if phase == "off" else (1024 if impl == "mycel" else 512)
                    host.call("idontwant", threshold=threshold)
                segments[phase].append(publish_segment(opts, hosts, rng, seq, per_round))
                seq += per_round
    phases = {phase: summarize(opts, impls, segs) for phase, segs in segments.items()}
    return {"impls": impls, "edges": len(edges), "degree": degree, "mesh": meshes, "phases": phases}


@dataclass
class Segment:
    """One stretch of publishing: who published what, every host's counters before and after."""

    count: int
    origin: dict[int, int]  # message number -> the index of the host that published it
    before: list[dict[str, Any]]
    after: list[dict[str, Any]]
    failed: int
    others: float


def publish_segment(opts: Options, hosts: list[Peer], rng: random.Random, seq0: int, count: int) -> Segment:
    """Publish ``count`` messages from random hosts at the rate and wait (bounded) for every host to
    have them."""
    n = len(hosts)
    call_all(hosts, "reset")
    origin: dict[int, int] = {}
    with Others([h.pid for h in hosts]) as others:
        before = call_all(hosts, "stats", topic=TOPIC, receipts=False)
        sent: list[tuple[Peer, int]] = []
        start = time.monotonic()
        for k in range(count):
            i = rng.randrange(n)
            origin[seq0 + k] = i
            sent.append((hosts[i], hosts[i].send("publish", topic=TOPIC, size=opts.size, count=1, index=i, first_seq=seq0 + k)))
            time.sleep(max(0.0, start + (k + 1) / opts.rate - time.monotonic()))
        failed = sum(int(peer.result(ident, opts.run_timeout)["failed"]) for peer, ident in sent)
        expected = (count - failed) * (n - 1)
        deadline, last, stalled_since = time.monotonic() + opts.run_timeout, -1, time.monotonic()
        while True:
            got = sum(int(s["received"]) for s in call_all(hosts, "stats", topic=TOPIC, receipts=False))
            now = time.monotonic()
            if got >= expected or now > deadline:
                break
            if got != last:
                last, stalled_since = got, now
            elif now - stalled_since > 3.0:
                break  # nothing new for 3 s: the rest is lost
            time.sleep(0.05)
        after = call_all(hosts, "stats", topic=TOPIC, receipts=True)
    return Segment(count, origin, before, after, failed, others.share)


def summarize(opts: Options, impls: list[str], segments: Sequence[Segment]) -> dict[str, Any]:
    """One phase (IDONTWANT on or off) over its segments."""
    n = len(impls)
    latency: list[float] = []
    complete = receipts = 0
    dups, cpu = [0] * n, [0.0] * n
    for seg in segments:
        first_pub: dict[int, int] = {}
        last_recv: dict[int, int] = {}
        receivers: dict[int, int] = {}
        for stats in seg.after:
            for o, s, pub_us, recv_us in stats.get("receipts", []):
                if seg.origin.get(s) != o:
                    continue
                first_pub[s] = pub_us
                last_recv[s] = max(last_recv.get(s, 0), recv_us)
                receivers[s] = receivers.get(s, 0) + 1
        done = [s for s in last_recv if receivers[s] >= n - 1]  # every other host got it: the last one's receipt
        latency += [(last_recv[s] - first_pub[s]) / 1000 for s in done]
        complete += len(done)
        receipts += sum(receivers.values())
        for i, (a, b) in enumerate(zip(seg.after, seg.before)):
            dups[i] += int(a["duplicates"]) - int(b["duplicates"])
            cpu[i] += float(a["cpu"]) - float(b["cpu"])
    messages = sum(seg.count for seg in segments)
    failed = sum(seg.failed for seg in segments)
    delivered = messages - failed
    per_kind: dict[str, Any] = {}
    for impl in sorted(set(impls)):
        idx = [i for i, x in enumerate(impls) if x == impl]
        per_kind[impl] = {
            "hosts": len(idx),
            "dups_per_msg_per_host": sum(dups[i] for i in idx) / (delivered * len(idx)) if delivered else None,
            "cpu_seconds": sum(cpu[i] for i in idx),
        }
    return {
        "messages": messages,
        "failed": failed,
        "complete": complete,
        "receipts": receipts,
        "expected_receipts": delivered * (n - 1),
        "latency_ms": {"p50": quantile(latency, 0.5), "p99": quantile(latency, 0.99), "max": max(latency, default=None)},
        "duplicates": sum(dups),
        "dups_per_msg_per_host": sum(dups) / (delivered * n) if delivered else None,
        "dup_bytes": sum(dups) * opts.size,
        "cpu_seconds": sum(cpu),
        "per_kind": per_kind,
        "others": sum(seg.others for seg in segments) / len(segments) if segments else 0.0,
    }


# -- the whole section ----------------------------------------------------------------------------
def run(opts: Options, logfile: BinaryIO | None, only: Sequence[str] = ("throughput", "network")) -> dict[str, Any]:
    started = time.monotonic()
    res: dict[str, Any] = {"options": {k: v for k, v in asdict(opts).items()}}
    if "throughput" in only:
        for signing in opts.signing:
            res[THROUGHPUT_KEY[signing]] = throughput(opts, logfile, signing)
    if "network" in only:
        res["network"] = network(opts, logfile)
    res["seconds"] = round(time.monotonic() - started, 1)
    res["targets"] = evaluate(res)
    return res


def evaluate(res: dict[str, Any]) -> dict[str, Any]:
    """The issue's pubsub targets, from this run's medians (``vs_js``: signed, ``vs_js_unsigned``: unsigned,
    when the run had those rows)."""

    def vs_js(signing: str) -> dict[str, float | None]:
        rows = res.get(THROUGHPUT_KEY[signing], {}).get("rows", {})

        def rate(label: str, size: int) -> float | None:
            value: float | None = rows.get(label, {}).get("sizes", {}).get(str(size), {}).get("msgs_per_s")
            return value

        return {str(s): ratio(rate("mycel -> mycel", s), rate("js -> js", s)) for s in res.get("options", {}).get("sizes", ())}

    out: dict[str, Any] = {"vs_js": vs_js("signed")}
    if THROUGHPUT_KEY["unsigned"] in res:
        out["vs_js_unsigned"] = vs_js("unsigned")
    net = res.get("network", {})

    def phase(kind: str, name: str) -> dict[str, Any]:
        value: dict[str, Any] = net.get(kind, {}).get("phases", {}).get(name, {})
        return value

    p99 = {k: phase(k, "on").get("latency_ms", {}).get("p99") for k in ("mycel", "js")}
    out["p99_ms"] = p99
    out["p99_mycel_vs_js"] = ratio(p99["mycel"], p99["js"])
    cut: dict[str, float | None] = {}
    for kind in net:
        on, off = phase(kind, "on").get("dup_bytes"), phase(kind, "off").get("dup_bytes")
        cut[kind] = None if on is None or not off else 1 - on / off
    out["idontwant_cut"] = cut
    vs_1k: float | None = out["vs_js"].get(str(KiB))
    unsigned_1k: float | None = out.get("vs_js_unsigned", {}).get(str(KiB))
    p99_ratio: float | None = out["p99_mycel_vs_js"]
    mycel_cut = cut.get("mycel")
    met = dict(zip(TARGET_NAMES, (
        None if vs_1k is None else vs_1k >= TARGETS["vs_js_1k"],
        None if p99_ratio is None else p99_ratio <= TARGETS["p99_vs_js"],
        None if mycel_cut is None else mycel_cut >= TARGETS["idontwant_cut"],
    )))  # fmt: skip
    names = list(met)  # the signed verdict stays the primary one; the unsigned one follows it
    names.insert(1, UNSIGNED_TARGET)
    met[UNSIGNED_TARGET] = None if unsigned_1k is None else unsigned_1k >= TARGETS["vs_js_1k"]
    out["met"] = {name: met[name] for name in names}
    return out


def fmt(x: float | None, spec: str = ".0f") -> str:
    return "-" if x is None else format(x, spec)


def size_name(size: int) -> str:
    return f"{size // KiB} KiB" if size >= KiB and size % KiB == 0 else f"{size} B"


def render(res: dict[str, Any]) -> list[str]:
    """The pubsub tables (lines)."""
    return sum((render_throughput(res, signing) for signing in SIGNING), []) + render_network(res)


def render_throughput(res: dict[str, Any], signing: str = "signed") -> list[str]:
    tp = res.get(THROUGHPUT_KEY[signing])
    if not tp:
        return []
    opts = res["options"]
    sizes = [int(s) for s in opts["sizes"]]
    mid = str(sizes[len(sizes) // 2])
    counts = ", ".join(f"{_count(opts, s, signing)} x {size_name(s)}" for s in sizes)
    if signing == "signed":
        title = (
            f"Pubsub, one publisher -> one subscriber, TCP+Noise+yamux, signed (StrictSign, both sides' default) (messages/s "
            f"from the first to the last receipt, and MB/s of payload; median of {opts['repeats']} rounds, {counts} per run)"
        )
    else:
        title = (
            f"Pubsub unsigned: the same with StrictNoSign and message id = SHA-256 of the data on both sides (no Ed25519: "
            f"the router + stack's own cost; {counts} per run)"
        )
    lines = [
        title,
        f"  {'':22}" + "".join(f"{size_name(s):>17}" for s in sizes)
        + f"{'lost/dropped':>14}{'others':>8}  CPU us/msg pub/sub at {size_name(int(mid))}",
    ]  # fmt: skip
    for label, row in tp["rows"].items():
        entries = [row["sizes"][str(s)] for s in sizes]
        if row["errors"] and not any(e["runs"] for e in entries):
            lines.append(f"  {label:22}{row['errors'][0][:100]}")
            continue
        others = max((e["others"] for e in entries if e.get("others") is not None), default=None)
        mark = "~" if others is not None and others > 0.10 else " "
        cells = "".join(f"{fmt(e['msgs_per_s']):>9}{fmt(e['MBps'], '.1f'):>8}" for e in entries)
        runs = row["sizes"][mid]["runs"]
        pub_us = median([1e6 * x["publisher_cpu"] / x["count"] for x in runs])
        sub_us = median([1e6 * x["subscriber_cpu"] / x["count"] for x in runs])
        lost = f"{sum(e['lost'] for e in entries)}/{sum(e['dropped'] for e in entries)}"
        note = f"  [{len(row['errors'])} failed runs]" if row["errors"] else ""
        lines.append(
            f"{mark} {label:22}{cells}{lost:>14}{fmt(None if others is None else 100 * others) + '%':>8}"
            f"  {fmt(pub_us)}/{fmt(sub_us)}{note}"
        )
    vs = res.get("targets", {}).get("vs_js" if signing == "signed" else "vs_js_unsigned", {})
    lines.append(f"  {'mycel / js (same-kind)':22}" + "".join(f"{fmt(vs.get(str(s)), '.2f') + 'x':>17}" for s in sizes))
    lines.append("")
    return lines


def render_network(res: dict[str, Any]) -> list[str]:
    net = res.get("network")
    if not net:
        return []
    opts = res["options"]
    lines = [
        f"Pubsub network: {opts['hosts']} hosts (one process each) on 127.0.0.1, each dialing {opts['dials']}, one topic; "
        f"{opts['messages']} messages of {size_name(int(opts['size']))} per phase from random hosts at {fmt(opts['rate'], 'g')}/s "
        f"(after {opts['warmup']} not counted; phases alternate in {opts['rounds']} rounds)",
        f"  {'hosts (mean mesh)':24}{'IDONTWANT':>10}{'p50 ms':>8}{'p99 ms':>8}{'complete':>10}{'dups/msg/host':>15}{'dup MB':>8}"
        f"{'CPU s':>7}{'others':>8}  per kind (dups/msg/host, CPU s)",
    ]  # fmt: skip
    for kind, e in net.items():
        if "error" in e:
            lines.append(f"  {kind:24}{e['error'][:100]}")
            continue
        impls = e["impls"]
        name = f"mixed {impls.count('mycel')}+{impls.count('js')}" if kind == "mixed" else f"{kind} x{len(impls)}"
        mesh = sum(e["mesh"]) / len(e["mesh"])
        name = f"{name} (mesh {mesh:.1f})"
        for phase, p in e["phases"].items():
            lat = p["latency_ms"]
            mark = "~" if p["others"] > 0.10 else " "
            kinds = ""
            if len(p["per_kind"]) > 1:
                kinds = "  ".join(f"{k} {fmt(v['dups_per_msg_per_host'], '.2f')}, {fmt(v['cpu_seconds'], '.1f')}" for k, v in p["per_kind"].items())
            lines.append(
                f"{mark} {name:24}{phase:>10}{fmt(lat['p50'], '.1f'):>8}{fmt(lat['p99'], '.1f'):>8}"
                f"{str(p['complete']) + '/' + str(p['messages'] - p['failed']):>10}{fmt(p['dups_per_msg_per_host'], '.2f'):>15}"
                f"{fmt(p['dup_bytes'] / 1e6, '.1f'):>8}{fmt(p['cpu_seconds'], '.1f'):>7}{fmt(100 * p['others']) + '%':>8}  {kinds}"
            )
    cut = res.get("targets", {}).get("idontwant_cut", {})
    lines.append("  IDONTWANT cuts duplicate payload bytes by: " + ", ".join(f"{k} {fmt(None if v is None else v * 100)}%" for k, v in cut.items()))
    lines.append(
        "  latency: publish -> receipt at the last of the other hosts (messages every host got); duplicates: receipts of "
        "a message already seen (mycel: its router's counter; js: its router's 'duplicate' verdicts); ~ = others > 10%"
    )
    lines.append("")
    return lines


def _count(opts: dict[str, Any], size: int, signing: str = "signed") -> int:
    """Messages per throughput run of ``size`` bytes under the run's options (as JSON)."""
    count = max(int(opts["min_count"]), min(int(opts["max_count"]), int(float(opts["bytes_per_run"]) / size)))
    return count * int(opts.get("unsigned_factor", 1)) if signing == "unsigned" else count


def render_targets(res: dict[str, Any]) -> list[str]:
    """One line of ratios, then one line per target."""
    ev = res.get("targets", {})
    cut = ev.get("idontwant_cut", {})

    def ratios(key: str) -> str:
        return "  ".join(f"{size_name(int(s))} {fmt(v, '.2f')}x" for s, v in ev.get(key, {}).items())

    unsigned = f"   | unsigned: {ratios('vs_js_unsigned')}" if "vs_js_unsigned" in ev else ""
    lines = [
        f"  pubsub mycel / js msg/s, signed: {ratios('vs_js')}{unsigned}"
        + f"   | network p99 mycel / js: {fmt(ev.get('p99_mycel_vs_js'), '.2f')}x"
        + "   | IDONTWANT cut: " + ", ".join(f"{k} {fmt(None if v is None else v * 100)}%" for k, v in cut.items())
    ]  # fmt: skip
    for name, ok in ev.get("met", {}).items():
        lines.append(f"  {name:34}{'  n/a' if ok is None else '  met' if ok else '  MISSED'}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=Options.repeats, help="throughput rounds (medians are over these)")
    parser.add_argument("--only", nargs="+", choices=["throughput", "network"], default=["throughput", "network"])
    parser.add_argument("--signing", nargs="+", choices=SIGNING, default=list(SIGNING), help="throughput: signed, unsigned rows")
    parser.add_argument("--kinds", nargs="+", choices=["mycel", "js", "mixed"], default=list(Options.kinds), help="networks to run")
    parser.add_argument("--hosts", type=int, default=Options.hosts)
    parser.add_argument("--messages", type=int, default=Options.messages, help="network messages per phase")
    parser.add_argument("--rate", type=float, default=Options.rate, help="network messages per second")
    parser.add_argument("--quick", action="store_true", help="a few seconds: every code path, small numbers")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the peers are stopped on the way out
    if args.quick:
        opts = Options.quick()
    else:
        opts = Options(
            repeats=args.repeats, signing=tuple(args.signing), kinds=tuple(args.kinds), hosts=args.hosts, messages=args.messages,
            rate=args.rate,
        )  # fmt: skip
    res = run(opts, None, args.only)
    print("\n".join([*render(res), "Targets (pubsub)", *render_targets(res)]))
    print(f"\n{res['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
