"""Run ``python -m mycel.sim`` in a subprocess: the CLI pins ``PYTHONHASHSEED=0``, so a run's figures are the
same on every test run (in-process, set iteration order in the router follows pytest's random hash seed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def sim_cli(*args: str, out: Path, timeout: float = 600) -> dict[str, Any]:
    """Run ``python -m mycel.sim <args> --out <out> --quiet``; returns ``out/summary.json``."""
    proc = subprocess.run(
        [sys.executable, "-m", "mycel.sim", *args, "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary
