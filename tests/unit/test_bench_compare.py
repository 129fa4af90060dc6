"""benchmarks/compare.py: /proc readings, the targets and the table from a run's results, and one real
mycel server/client pair driven the way `make bench` drives it."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


compare = _load("bench_compare", ROOT / "benchmarks" / "compare.py")
procstat = sys.modules["procstat"]


def test_proc_readings() -> None:
    me = os.getpid()
    assert procstat.cpu_seconds(me) > 0
    assert procstat.cpu_seconds() > 0
    assert procstat.rss_bytes(me) > 1024 * 1024
    before = procstat.system_busy_seconds()
    sum(i * i for i in range(300_000))
    assert procstat.system_busy_seconds() >= before
    assert procstat.raise_nofile(256) >= 256
    cpus = procstat.user_processes_cpu()
    assert cpus[me] > 0 and all(pid > 0 for pid in cpus)  # kernel threads have no command line
    assert procstat.steal_seconds() >= 0


def test_disturbance_counts_other_processes_only() -> None:
    # a grandchild spinning: not a peer we started, so it counts as "others" unless named as ours. Both
    # views are taken over the same interval, so whatever else the machine does cancels out.
    spin = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import os; print(os.getpid(), flush=True)\\nwhile True: pass'])"
    busy = subprocess.Popen([sys.executable, "-c", spin], start_new_session=True, stdout=subprocess.PIPE)
    try:
        assert busy.stdout is not None
        spinner = int(busy.stdout.readline())
        with compare.Disturbance(ours=[spinner]) as without_it, compare.Disturbance() as with_it:
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                sum(i * i for i in range(1000))  # our own work is never "others"
    finally:
        os.killpg(busy.pid, signal.SIGKILL)
        busy.wait()
    assert with_it.share is not None and without_it.share is not None
    assert with_it.share - without_it.share > 0.05  # the spinner's share (up to half of 2 CPUs)


def phase(direction: str, mbps: float, cpu: float = 1.0) -> dict[str, Any]:
    seconds = 1e9 / (mbps * 1e6)
    return {
        "direction": direction, "bytes": 1e9, "streams": 1, "seconds": seconds,
        "client_cpu": cpu, "server_cpu": cpu, "system_cpu": 2 * cpu,
    }  # fmt: skip


def row(label: str, up: float, down: float, others: float = 0.0) -> dict[str, Any]:
    r = compare.PerfRow(label, "a", "b", "")
    for _ in range(3):
        r.samples["upload"].append(phase("upload", up))
        r.samples["download"].append(phase("download", down))
        r.others.append(others)
    summary: dict[str, Any] = r.summary()
    return summary


def results(mycel: float, dial_ms: float, conn_kib: float, quic: float = 30.0, quic_dial_ms: float = 4.5) -> dict[str, Any]:
    return {
        "meta": {"started": "now", "bytes": 1e9, "quic_bytes": 64e6, "tls_bytes": 5e8, "repeats": 3, "cpus": 2, "loadavg_start": 0.1, "loadavg_end": 0.2},
        "throughput": {
            "one_stream": [
                row("raw trio TCP (ceiling)", 1500, 1500),
                row("mycel <-> mycel", mycel, mycel, others=0.3),
                row("js <-> js", 200, 200),
                row("py <-> py", 40, 40),
            ],
            "16_streams": [row("mycel <-> mycel", 600, 600)],
            "quic_tls": [
                row("mycel <-> mycel QUIC", quic, quic),
                row("js <-> js QUIC", 24, 24),
                row("mycel <-> mycel TLS", 350, 340),
            ],
        },
        "latency": {
            "mycel": {"dial_ping_ms": {"median": dial_ms, "p95": dial_ms * 1.5, "n": 200},
                      "connect_ms": {"median": dial_ms / 2}, "ping_rtt_ms": {"median": 0.4, "p95": 0.6}},
            "js": {"dial_ping_ms": {"median": 18.0, "p95": 30.0, "n": 200},
                   "connect_ms": {"median": 10.0}, "ping_rtt_ms": {"median": 0.9, "p95": 2.0}},
            "py": {"error": "RuntimeError: boom"},
            "mycel-quic": {"dial_ping_ms": {"median": quic_dial_ms, "p95": 9.0, "n": 200}, "connect_ms": {"median": 3.0},
                           "ping_rtt_ms": {"median": 0.5, "p95": 0.7}, "client_cpu_ms_per_dial": 3.2, "server_cpu_ms_per_dial": 3.1},
            "js-quic": {"error": "n/a (js quic not installed)"},
        },  # fmt: skip
        "memory": {"mycel": {"conns": {"per_item_KiB": conn_kib, "count": 1000}, "streams": {"per_item_KiB": 3.1, "count": 10000}}},
    }


def test_targets_and_table() -> None:
    res = results(mycel=600, dial_ms=4.0, conn_kib=25.0)
    ev = compare.evaluate(res)
    assert ev["mycel_vs_js_upload"] == pytest.approx(3.0)
    assert ev["mycel_vs_py_download"] == pytest.approx(15.0)
    assert ev["mycel_vs_raw_upload"] == pytest.approx(0.4)
    assert ev["dial_mycel_vs_js"] == pytest.approx(4 / 18)
    assert all(ev["met"].values())
    res["targets"] = ev
    table = compare.render(res)
    assert "~ mycel <-> mycel" in table  # others took 30% of the machine during that row
    assert "  js <-> js" in table and "~ js <-> js" not in table
    assert "failed: RuntimeError: boom" in table
    assert "MISSED" not in table
    assert ev["quic_vs_js_upload"] == pytest.approx(30 / 24)
    assert ev["met"]["QUIC dial+ping median < 5 ms"] is True
    assert "One stream over QUIC (64 MB per transfer) and TCP+TLS+yamux (500 MB)" in table
    assert "  mycel QUIC" in table and "3.2/3.1" in table  # the QUIC latency row with CPU per dial
    assert "  js-libp2p QUIC        n/a (js quic not installed)" in table
    table_with_missing_row = compare.render({**res, "throughput": {"quic_tls": [row("mycel <-> mycel QUIC", 30, 30), js_quic_missing()]}})
    assert "  js <-> js QUIC                 n/a  n/a (js quic not installed)" in table_with_missing_row

    slow = results(mycel=300, dial_ms=9.0, conn_kib=80.0, quic=20.0, quic_dial_ms=12.0)
    ev = compare.evaluate(slow)
    assert ev["met"]["one stream >= 500 MB/s"] is False
    assert ev["met"]["one stream >= 8x py-libp2p"] is False
    assert ev["met"]["dial+ping median <= 5 ms"] is False
    assert ev["met"]["idle connection <= 64 KiB"] is False
    assert ev["met"]["one stream >= 2x js"] is False  # 1.5x
    assert ev["met"]["QUIC one stream >= js-libp2p QUIC"] is False
    assert ev["met"]["QUIC dial+ping median < 5 ms"] is False


def js_quic_missing() -> dict[str, Any]:
    r = compare.PerfRow("js <-> js QUIC", "js-quic", "js-quic", "")
    r.errors.append("n/a (js quic not installed)")
    summary: dict[str, Any] = r.summary()
    return summary


def test_unavailable_stacks_are_reported_not_run(tmp_path: Path) -> None:
    impl = compare.Impl("x", "x", (str(tmp_path / "node"), str(tmp_path / "peer.mjs")), stack="quic")
    assert impl.missing() == f"{tmp_path / 'node'} is missing"
    (tmp_path / "node").write_text("")
    (tmp_path / "peer.mjs").write_text("// TCP + Noise only")
    assert impl.missing() == "js quic not installed"
    assert compare.IMPLS["mycel-quic"].missing() is None
    assert compare.IMPLS["mycel-quic"].server_args == ("server", "--stack", "quic")
    assert compare.IMPLS["mycel-quic-16k"].client_args == ("--stack", "quic", "--datagram-size", "16384")


def test_missing_figures_are_not_judged() -> None:
    ev = compare.evaluate({"meta": {}})
    assert all(ok is None for ok in ev["met"].values())


def test_chart(tmp_path: Path) -> None:
    path = tmp_path / "chart.png"
    assert compare.chart(results(600, 4.0, 25.0), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_mycel_pair_as_make_bench_runs_it(tmp_path: Path) -> None:
    with open(tmp_path / "log", "wb") as log, compare.server(compare.IMPLS["mycel"], log) as srv:
        res = compare.run_client(compare.IMPLS["mycel"], "perf", srv, ["--bytes", "2000000", "--streams", "2"], 60, log)
    directions = [p["direction"] for p in res["phases"]]
    assert directions == ["upload", "download"]
    for p in res["phases"]:
        assert p["bytes"] == 2_000_000 and p["streams"] == 2 and p["seconds"] > 0
        assert p["server_cpu"] >= 0 and p["system_cpu"] >= 0
