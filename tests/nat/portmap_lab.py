"""Helpers of the port-mapping lab tests: miniupnpd on a lab router, its log read as it comes."""

from __future__ import annotations

import select
import subprocess
import time


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> str:
    """Read ``proc``'s stdout until a line contains ``needle``; everything read so far (AssertionError
    with it when the process ends or ``timeout`` seconds pass first)."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return "".join(lines)
    raise AssertionError(f"miniupnpd never said {needle!r}: {''.join(lines)}")
