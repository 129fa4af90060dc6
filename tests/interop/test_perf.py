"""The test-plans ``perf`` command: JSON-line output, the zero-seed server identity, and a real
server + client pair of processes on 127.0.0.1."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from mycel.cli.perf import SERVER_PEER_ID, Reporter, multiaddr_for, server_identity, split_address
from tests.interop.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
SERVER_READY_TIMEOUT = 30.0


def test_server_identity_is_the_zero_seed_one() -> None:
    assert str(server_identity().peer_id) == SERVER_PEER_ID == "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"


def test_addresses() -> None:
    assert split_address("10.0.0.1:4001") == ("10.0.0.1", 4001)
    assert split_address("[::1]:4001") == ("::1", 4001)
    for bad in ("localhost:4001", "10.0.0.1", "10.0.0.1:x", "10.0.0.1:70000"):
        with pytest.raises(ValueError):
            split_address(bad)
    assert multiaddr_for("10.0.0.1", 4001, "tcp") == "/ip4/10.0.0.1/tcp/4001"
    assert multiaddr_for("::1", 4001, "quic-v1") == "/ip6/::1/udp/4001/quic-v1"


def test_reporter_writes_interval_bytes_then_totals() -> None:
    out = io.StringIO()
    rep = Reporter(out, start=10.0)
    rep.up = 100
    rep.tick(10.5)  # under a second: nothing yet
    rep.up = 300
    rep.tick(11.25)
    rep.down = 50
    rep.tick(11.5)
    rep.down = 80
    rep.tick(12.5)
    rep.final(13.0)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [
        {"type": "intermediary", "timeSeconds": 1.25, "uploadBytes": 300, "downloadBytes": 0},
        {"type": "intermediary", "timeSeconds": 1.25, "uploadBytes": 0, "downloadBytes": 80},
        {"type": "final", "timeSeconds": 3.0, "uploadBytes": 300, "downloadBytes": 80},
    ]


async def wait_listening(proc: trio.Process, port: int) -> None:
    """The server logs its listen addresses at -v; wait for the line naming our port."""
    assert proc.stderr is not None
    seen = bytearray()
    with trio.fail_after(SERVER_READY_TIMEOUT):
        while f"/tcp/{port}".encode() not in seen:
            chunk = await proc.stderr.receive_some(4096)
            if not chunk:
                pytest.fail(f"perf server exited: {seen.decode(errors='replace')}")
            seen += chunk


@pytest.mark.interop
@pytest.mark.slow
async def test_server_and_client_processes() -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    server = await trio.lowlevel.open_process(
        [PYTHON, "-m", "mycel.cli.perf", "--run-server", "--server-address", address, "-v"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    try:
        await wait_listening(server, port)
        for upload, download in ((10_000_000, 20_000_000), (1, 1), (0, 0)):
            with trio.fail_after(60):
                done = await trio.run_process(
                    [PYTHON, "-m", "mycel.cli.perf", "--server-address", address, "--transport", "tcp",
                     "--upload-bytes", str(upload), "--download-bytes", str(download)],
                    capture_stdout=True, capture_stderr=True, check=False, cwd=REPO,
                )  # fmt: skip
            assert done.returncode == 0, done.stderr.decode(errors="replace")
            lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
            final = lines[-1]
            assert final["type"] == "final"
            assert (final["uploadBytes"], final["downloadBytes"]) == (upload, download)
            assert final["timeSeconds"] > 0
            inter = lines[:-1]
            assert all(x["type"] == "intermediary" for x in inter)
            assert sum(x["uploadBytes"] for x in inter) <= upload
            assert sum(x["downloadBytes"] for x in inter) <= download
        assert server.returncode is None  # the server never exits on its own
    finally:
        server.kill()
        await server.wait()
