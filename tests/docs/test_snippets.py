"""Every Python snippet of the documentation runs, each bounded in time (#16). See snippets.py."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.docs.snippets import LANGUAGES, Run, Snippet, all_blocks, runs

TIMEOUT = 60  # seconds per snippet; most take 1-3 s
ADDRESS = re.compile(r"(/(?:ip4|ip6)/\S+/p2p/12D3KooW\w+)")
RUNS = runs()


async def _run(snippet: Snippet, tmp: Path, *args: str) -> str:
    script = tmp / (snippet.title or "snippet.py")
    script.write_text(snippet.code)
    with trio.fail_after(TIMEOUT):
        res = await trio.run_process([sys.executable, str(script), *args], cwd=tmp, capture_stdout=True,
                                     capture_stderr=True, check=False)
    out, err = res.stdout.decode(), res.stderr.decode()
    assert res.returncode == 0, f"{snippet.id} exited {res.returncode}\n{out}\n{err}"
    return out


@pytest.mark.parametrize("run", RUNS, ids=[r.main.id for r in RUNS])
async def test_snippet_runs(run: Run, tmp_path: Path) -> None:
    if run.server is None:
        await _run(run.main, tmp_path)
        return
    script = tmp_path / "server.py"
    script.write_text(run.server.code)
    # the server must answer Ctrl-C even when the test runs in a background job (a shell then starts
    # it with SIGINT ignored, and Python installs no KeyboardInterrupt for an ignored SIGINT)
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(script)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    try:
        seen = b""
        with trio.fail_after(TIMEOUT):
            while not (m := ADDRESS.search(seen.decode(errors="replace"))):
                chunk = await proc.stdout.receive_some()
                assert chunk, f"{run.server.id} ended before printing its address: {seen!r}"
                seen += chunk
        out = await _run(run.main, tmp_path, m[1])
        assert out.strip(), f"{run.main.id} printed nothing"
        assert proc.returncode is None, f"{run.server.id} did not stay up"  # kept alive for more clients
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the server must stop cleanly
        with trio.fail_after(30):  # (10 s was too short on a loaded CI machine)
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()
        await proc.stdout.aclose()


def test_every_block_is_python_or_says_what_it_is() -> None:
    blocks = all_blocks()
    assert len([b for b in blocks if b.language == "python"]) >= 20
    for block in blocks:
        assert block.language in LANGUAGES, f"{block.id}: ```{block.language} — tag it python, sh or text"
