"""python -m mycel.sim run on a gossipsub-interop params.json: logs, summary and plots written (#15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mycel.sim.interop_log import analyze
from mycel.sim.script import subnet_blob_msg


def test_cli_runs_a_params_json_and_writes_the_report(tmp_path: Path) -> None:
    params = tmp_path / "params.json"
    params.write_text(json.dumps(subnet_blob_msg(6, seed=2, messages=2, start=5).to_json()))
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}  # the CLI pins it itself
    proc = subprocess.run(
        [sys.executable, "-m", "mycel.sim", "run", str(params), "--nodes", "6", "--seed", "2", "--skip", "0", "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    brief = json.loads(proc.stdout.splitlines()[-1])
    assert brief["nodes"] == 6 and brief["min_reach"] == 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"] == "params" and len(summary["messages"]) == 2
    assert (out / "summary.md").read_text().startswith("# params: 6 nodes, seed 2")
    assert {p.name for p in out.glob("*.png")} == {"latency_cdf.png", "mesh_degree.png", "reach.png"}
    assert [m.reach for m in analyze(out / "hosts")] == [1.0, 1.0]


def test_cli_refuses_a_bad_params_file(tmp_path: Path) -> None:
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"script": [{"type": "publishPartial", "topicID": "t", "groupID": 1}]}))
    proc = subprocess.run(
        [sys.executable, "-m", "mycel.sim", "run", str(params), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "partial-message" in proc.stderr
