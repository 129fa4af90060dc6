"""Two `mycel` processes: ping and identify over TCP with Noise+yamux and Noise+mplex."""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio

MYCEL = [sys.executable, "-m", "mycel"]


async def start_listener(*extra: str) -> tuple[trio.Process, str]:
    proc = await trio.lowlevel.open_process(
        [*MYCEL, "listen", "--listen", "/ip4/127.0.0.1/tcp/0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = b""
    with trio.fail_after(30):
        while not line.endswith(b"\n"):
            chunk = await proc.stdout.receive_some(1)
            if not chunk:
                raise AssertionError("mycel listen exited without printing an address")
            line += chunk
    return proc, line.decode().strip()


async def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process([*MYCEL, *args], capture_stdout=True, capture_stderr=True, check=False)


@pytest.mark.parametrize("muxer", ["yamux", "mplex"])
async def test_ping_and_identify_between_processes(muxer: str) -> None:
    proc, addr = await start_listener("--muxer", muxer)
    try:
        assert addr.startswith("/ip4/127.0.0.1/tcp/") and "/p2p/12D3KooW" in addr
        res = await run("ping", addr, "-c", "2", "--muxer", muxer)
        out = res.stdout.decode()
        assert res.returncode == 0, res.stderr.decode()
        assert f"/noise, /{muxer}/" in out
        assert out.count(" ms") == 2
        res = await run("identify", addr, "--muxer", muxer)
        out = res.stdout.decode()
        assert res.returncode == 0, res.stderr.decode()
        assert "agent version:    mycel/" in out
        assert "/ipfs/ping/1.0.0" in out and "/echo/1.0.0" in out
        assert "signed record:    verified" in out
    finally:
        proc.terminate()
        await proc.wait()


async def test_ping_failure_is_one_line_and_nonzero() -> None:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    res = await run("ping", f"/ip4/127.0.0.1/tcp/{port}", "--timeout", "5")
    sock.close()
    assert res.returncode != 0
    err = res.stderr.decode().strip()
    assert err.startswith("mycel: error:") and "\n" not in err and "Traceback" not in err


async def test_id_command_creates_and_reloads(tmp_path: object) -> None:
    key = f"{tmp_path}/id.key"
    first = await run("id", "--key", key)
    second = await run("id", "--key", key)
    assert first.returncode == 0 and first.stdout == second.stdout
    assert b"peer id:  12D3KooW" in first.stdout
