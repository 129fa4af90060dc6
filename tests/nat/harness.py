"""Drive NAT-lab runs: the lab, a relay process and one long-lived peer process per NATed namespace
(``tests/nat/node.py``), and one hole punch per :meth:`NatRun.run` with fresh hosts.

Used by ``tests/nat/test_natlab.py`` (reduced counts in ``make test``) and ``python -m tests.nat`` (the
full figures, ``make natlab``).
"""

from __future__ import annotations

import json
import os
import pathlib
import select
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from mycel.testing.natlab import RELAY_IP, NatKind, NatLab
from mycel.testing.netns import Namespace

NODE = str(pathlib.Path(__file__).with_name("node.py"))
REPO = str(pathlib.Path(__file__).resolve().parents[2])
PY_PEER = str(pathlib.Path(__file__).with_name("py_dcutr_peer.py"))
PY_PEER_PYTHON = str(pathlib.Path(REPO) / "interop" / ".peers" / "py-venv" / "bin" / "python")  # make interop-peers


class NodeError(RuntimeError):
    """A lab process said something unexpected, died, or did not answer in time."""


class Node:
    """One ``node.py`` process in a namespace, spoken to with JSON lines."""

    def __init__(self, ns: Namespace, role: str, *args: str, log_path: pathlib.Path | None = None) -> None:
        """Start ``node.py role args...`` in ``ns``; see :meth:`script` for other programs."""
        self._start(ns, [NODE, role, *args], log_path)

    @classmethod
    def script(cls, ns: Namespace, argv: list[str], log_path: pathlib.Path | None = None) -> Node:
        """Start another JSON-lines program (``argv[0]`` a Python file) in ``ns``."""
        node = cls.__new__(cls)
        node._start(ns, argv, log_path)
        return node

    def _start(self, ns: Namespace, argv: list[str], log_path: pathlib.Path | None) -> None:
        self.label = f"{ns.label}:{pathlib.Path(argv[0]).stem}"
        self._log = open(log_path, "w") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
        self.proc = ns.python(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=REPO,
            env={"PYTHONPATH": REPO, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        self._pending = b""  # bytes read from stdout past the last whole line

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def expect(self, event: str, timeout: float = 60.0) -> dict[str, Any]:
        """The next JSON line (which must be ``event``), within ``timeout`` seconds."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NodeError(f"{self.label}: no {event!r} within {timeout} s")
            # our own line buffer over the raw pipe: a buffered readline() could keep a second line that
            # arrived with the first hidden from select(), and the next expect() would wait out its timeout
            if b"\n" not in self._pending:
                ready, _, _ = select.select([self.proc.stdout], [], [], left)
                if not ready:
                    continue
                data = os.read(self.proc.stdout.fileno(), 65536)
                if not data:
                    raise NodeError(f"{self.label}: exited ({self.proc.wait()}) while we waited for {event!r}")
                self._pending += data
                continue
            line, _, self._pending = self._pending.partition(b"\n")
            msg: dict[str, Any] = json.loads(line)
            if msg.get("event") != event:
                raise NodeError(f"{self.label}: expected {event!r}, got {msg}")
            return msg

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()  # type: ignore[union-attr]


@dataclass
class RunResult:
    """One hole punch run, as the dialer (A) and the listener (B) saw it."""

    transport: str
    dialer: dict[str, Any]
    listener: list[dict[str, Any]]

    @property
    def success(self) -> bool:
        return bool(self.dialer.get("direct")) and bool(self.dialer.get("relayed_closed"))

    @property
    def elapsed_ms(self) -> float | None:
        """B's time from the relayed connection's arrival to the direct connection (its DCUtR result)."""
        mine = [r for r in self.listener if r["initiator"]]
        return float(mine[-1]["elapsed_ms"]) if mine else None

    @property
    def attempts(self) -> int | None:
        mine = [r for r in self.listener if r["initiator"]]
        return mine[-1]["attempts"] if mine else None


@dataclass
class Summary:
    """Figures over many runs of one transport."""

    transport: str
    runs: list[RunResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        ok = [r for r in self.runs if r.success]
        elapsed = [r.elapsed_ms for r in ok if r.elapsed_ms is not None]
        attempts = [r.attempts for r in ok if r.attempts is not None]
        every = [r.attempts for r in self.runs if r.attempts is not None]
        relay_rtts = [r.dialer["relay_rtt_ms"] for r in self.runs if "relay_rtt_ms" in r.dialer]
        return {
            "transport": self.transport,
            "runs": len(self.runs),
            "direct": len(ok),
            "rate": len(ok) / len(self.runs) if self.runs else 0.0,
            "median_ms_relayed_to_direct": statistics.median(elapsed) if elapsed else None,
            "max_attempts": max(attempts) if attempts else None,
            "attempts_histogram": {n: attempts.count(n) for n in sorted(set(attempts))},
            "attempts_histogram_all_runs": {n: every.count(n) for n in sorted(set(every))},
            "median_relay_rtt_ms": statistics.median(relay_rtts) if relay_rtts else None,
            "relay_rtt_missing": len(self.runs) - len(relay_rtts),
            "median_direct_rtt_ms": statistics.median(r.dialer["direct_rtt_ms"] for r in ok) if ok else None,
        }


class NatRun:
    """A lab with a relay and the two peer processes; :meth:`run` does one hole punch."""

    def __init__(self, kind_a: NatKind, kind_b: NatKind, *, log_dir: pathlib.Path | None = None) -> None:
        self.lab = NatLab(kind_a, kind_b)
        self._log_dir = log_dir
        self.nodes: list[Node] = []

    def __enter__(self) -> NatRun:
        self.lab.__enter__()
        try:
            logs = self._log_dir
            self.relay = Node(self.lab.relay, "relay", RELAY_IP, log_path=logs / "relay.log" if logs else None)
            self.nodes.append(self.relay)
            self.dialer = Node(self.lab.a.ns, "peer", log_path=logs / "peer-a.log" if logs else None)
            self.nodes.append(self.dialer)
            self.listener = Node(self.lab.b.ns, "peer", log_path=logs / "peer-b.log" if logs else None)
            self.nodes.append(self.listener)
            ready = self.relay.expect("ready")
            self.relay_addrs = {"tcp": ready["tcp"], "quic": ready["quic"]}
            self.dialer.expect("ready")
            self.listener.expect("ready")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for node in self.nodes:
            try:
                node.close()
            except Exception:  # teardown goes on: the lab kills what is left
                pass
        self.lab.__exit__(exc_type, exc, tb)

    def run_py_dialer(self) -> RunResult:
        """One hole punch with py-libp2p as the dialer (A, in peer-a; tests/nat/py_dcutr_peer.py) and
        mycel as the listener (B): TCP only (py-libp2p hole punches over TCP)."""
        relay = self.relay_addrs["tcp"]
        self.listener.send(cmd="listen", transport="tcp", relay=relay)
        listening = self.listener.expect("listening")
        target = f"{relay}/p2p-circuit/p2p/{listening['peer']}"
        proc = subprocess.run(
            self.lab.a.ns.command([PY_PEER_PYTHON, "-u", PY_PEER, relay, target]),
            capture_output=True, text=True, timeout=120, cwd=REPO,
        )
        lines = proc.stdout.strip().splitlines()
        dialer: dict[str, Any] = json.loads(lines[-1]) if lines else {"error": proc.stderr[-2000:]}
        self.listener.send(cmd="report")
        report = self.listener.expect("report")
        self.listener.send(cmd="stop")
        self.listener.expect("stopped")
        return RunResult("tcp", dialer, report["results"])

    def run(self, transport: str) -> RunResult:
        relay = self.relay_addrs[transport]
        self.listener.send(cmd="listen", transport=transport, relay=relay)
        listening = self.listener.expect("listening")
        self.dialer.send(cmd="dial", transport=transport, relay=relay, target=listening["peer"])
        dialer = self.dialer.expect("result", timeout=60)
        self.listener.send(cmd="report")
        report = self.listener.expect("report")
        for node in (self.dialer, self.listener):
            node.send(cmd="stop")
            node.expect("stopped")
        return RunResult(transport, dialer, report["results"])
