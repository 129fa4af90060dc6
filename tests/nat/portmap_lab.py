"""Helpers of the port-mapping lab tests: miniupnpd on a lab router, its log read as it comes."""

from __future__ import annotations

import os
import select
import subprocess
import time


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> str:
    """Read ``proc``'s stdout until it contains ``needle``; everything read so far (AssertionError with
    it when the process ends or ``timeout`` seconds pass first).

    Reads the pipe itself (``os.read``), not through the text wrapper: ``select`` on a wrapper whose
    buffer already holds the line would wait for more output that may never come."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    text = ""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        text += chunk.decode(errors="replace")
        if needle in text:
            return text
    raise AssertionError(f"miniupnpd never said {needle!r}: {text}")
