"""The py peer's workarounds for py-libp2p 0.8.1 QUIC bugs (interop/py/check_quic_workarounds.py).

The check runs in the py-libp2p virtualenv (this one has no py-libp2p); it reproduces each bug on
py-libp2p's own QUICStream and shows the peer program's way around it.
"""

from __future__ import annotations

import json

import pytest
import trio

from interop.peers import INTEROP_DIR, PY

pytestmark = [pytest.mark.interop]

CHECKS = ("eof_race", "eof_after_half_close", "reset_still_raises", "stop_sending_keeps_reading", "observed_addr")


async def test_py_peer_works_around_py_libp2p_quic_bugs() -> None:
    if PY.missing():
        pytest.skip("py peer not installed: run interop/install.sh")
    script = INTEROP_DIR / "py" / "check_quic_workarounds.py"
    with trio.fail_after(120):
        proc = await trio.run_process(
            [PY.program[0], str(script)], capture_stdout=True, capture_stderr=True, check=False
        )
    report = json.loads(proc.stdout)
    assert set(report) == set(CHECKS), report
    failed = {name: check for name, check in report.items() if not check["ok"]}
    assert not failed, json.dumps(failed, indent=2) + proc.stderr.decode(errors="replace")[-4000:]
    assert proc.returncode == 0
    # the stream's tail survives the EOF race, and a real reset still surfaces as one
    assert report["eof_race"]["peer"].startswith("read_some lost it in 0/")
    assert report["reset_still_raises"]["peer"].endswith("StreamReset")
