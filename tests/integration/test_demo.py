"""`make demo` keeps working: the example runs to its end, says every stack worked, and ends with gossip
where every host received every message."""

from __future__ import annotations

import re
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

    # gossip: five hosts in a ring, one row per receiver: four messages (direct or relayed) and its mesh
    rows = [line for line in out.splitlines() if re.match(r"\[gossip\] (amy|ben|cleo|dov|eli) ", line)]
    assert len(rows) == 5, out
    for row in rows:
        assert row.count("direct") + row.count("via ") == 4 and "MISSING" not in row, row
        assert re.search(r" 2: \w+, \w+$", row), row  # a mesh with both neighbours
    assert out.splitlines()[-1].startswith("[gossip] done: every host received every message (20 of 20) in "), out
