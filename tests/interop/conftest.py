"""Fixtures for the interop tests: a throw-away redis-server on 127.0.0.1; the pubsub cells run once per module."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import AsyncIterator

import pytest
import trio

from interop.pubsub_cells import Outcome, run_cells

REDIS_READY = b"Ready to accept connections"
REDIS_START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def redis_addr() -> AsyncIterator[str]:
    """``127.0.0.1:<port>`` of a redis-server started for this test (no persistence), stopped after."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server not found: apt-get install -y redis-server")
    port = free_port()
    argv = [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
            "--daemonize", "no"]  # fmt: skip
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    seen = bytearray()
    try:
        with trio.fail_after(REDIS_START_TIMEOUT):
            while REDIS_READY not in seen:
                chunk = await proc.stdout.receive_some(4096)
                if not chunk:
                    pytest.fail(f"redis-server exited: {seen.decode(errors='replace')}")
                seen += chunk
                del seen[:-4096]  # only the tail matters for the ready line
        # after the ready line redis logs only at shutdown: the unread pipe cannot fill
        yield f"127.0.0.1:{port}"
    finally:
        with trio.CancelScope(shield=True):
            proc.terminate()
            with trio.move_on_after(5):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


@pytest.fixture(scope="module")
def pubsub_outcomes(request: pytest.FixtureRequest) -> dict[str, Outcome]:
    """The pubsub cells (``PUBSUB_CELLS`` of the test module) selected in this session, run once,
    concurrently (``interop.pubsub_cells.run_cells``): cell id -> Outcome. Tests take a ``cell`` param."""
    cells = request.module.PUBSUB_CELLS
    selected = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if getattr(item, "module", None) is request.module and callspec is not None and "cell" in callspec.params:
            selected.append(str(callspec.params["cell"]))
    return run_cells({cell_id: cells[cell_id] for cell_id in selected})
