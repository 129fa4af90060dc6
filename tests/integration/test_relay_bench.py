"""benchmarks/relay.py --quick: the relay throughput and memory figures can be produced (a mycel relay and a
js relay in their own processes, each carrying 2 MB on one stream; 4 idle circuits for the memory figure)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trio

pytestmark = [pytest.mark.interop]

ROOT = Path(__file__).resolve().parents[2]


async def test_relay_benchmark_quick(tmp_path: Path) -> None:
    out = tmp_path / "relay.json"
    with trio.fail_after(120):
        done = await trio.run_process(
            [sys.executable, str(ROOT / "benchmarks" / "relay.py"), "--quick", "--json", str(out)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    results = json.loads(out.read_text())
    assert results["bytes"] == 2_000_000
    assert results["mycel_relay_MBps"] > 0 and results["js_relay_MBps"] > 0
    traced = results["mycel_relay_memory"]["traced_per_circuit"]
    assert 0 < traced < 1_000_000  # a few KiB of Python objects per circuit, not a leak-sized figure
    assert "rss_per_circuit" in results["js_relay_memory"]
