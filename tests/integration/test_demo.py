"""`make demo` keeps working: the example runs to its end and says every stack worked."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"


async def test_demo_runs_every_stack() -> None:
    with trio.fail_after(120):
        done = await trio.run_process([sys.executable, str(DEMO)], capture_stdout=True, capture_stderr=True)
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    for line in ("over TCP: /noise + /yamux/1.0.0", "over TCP: /noise + /mplex/6.7.0",
                 "over TCP: /tls/1.0.0 + /yamux/1.0.0", "over QUIC v1: /tls/1.0.0 + /quic-v1"):  # fmt: skip
        assert line in out, out
    assert out.count("checksum OK") == 4, out
    assert "identify + ping + streams all worked" in out
