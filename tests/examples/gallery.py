"""Run every script of examples/ with a given Python and check what it prints.

Shared by tests/examples (the development tree's interpreter) and tests/packaging (a clean venv with
the built wheel installed): `check_all(python, examples_dir, tmp)` runs them all and raises
AssertionError with the script's output when one fails.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TIMEOUT = 60  # seconds per script; each takes 1-4 s on an idle machine
PEER_ID = r"12D3KooW\w{44}"


async def run(python: str, script: Path, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``python script args`` in ``cwd``; its stdout, after asserting it exited 0."""
    with trio.fail_after(TIMEOUT):
        res = await trio.run_process([python, str(script), *args], cwd=cwd, capture_stdout=True,
                                     capture_stderr=True, check=False, env=env)
    out, err = res.stdout.decode(), res.stderr.decode()
    assert res.returncode == 0, f"{script.name} exited {res.returncode}\n{out}\n{err}"
    assert "Traceback" not in err, err
    return out


class Lines:
    """A running process's stdout, line by line, with a deadline on each wait."""

    def __init__(self, proc: trio.Process) -> None:
        assert proc.stdout is not None
        self.proc, self.stdout, self.buf, self.seen = proc, proc.stdout, b"", list[str]()

    async def until(self, pattern: str) -> re.Match[str]:
        """Read lines until one matches ``pattern`` (a regex); the match."""
        with trio.fail_after(TIMEOUT):
            for line in self.seen:
                if m := re.search(pattern, line):
                    return m
            while True:
                while b"\n" not in self.buf:
                    chunk = await self.stdout.receive_some()
                    assert chunk, f"ended before {pattern!r}: {self.seen}"
                    self.buf += chunk
                raw, self.buf = self.buf.split(b"\n", 1)
                line = raw.decode()
                self.seen.append(line)
                if m := re.search(pattern, line):
                    return m


async def check_ping(python: str, examples: Path, tmp: Path) -> None:
    out = await run(python, examples / "ping.py", cwd=tmp)
    assert len(re.findall(rf"ping \d to {PEER_ID}: [\d.]+ ms", out)) == 3, out
    assert "3 of 3 answered over /ip4/127.0.0.1/tcp/" in out, out


async def check_echo(python: str, examples: Path, tmp: Path) -> None:
    out = await run(python, examples / "echo.py", cwd=tmp)
    assert re.fullmatch(rf"{PEER_ID} echoed b'hello, mycel'\n", out), out


async def check_file_transfer(python: str, examples: Path, tmp: Path) -> None:
    data = os.urandom(300_000)
    (tmp / "photo.jpg").write_bytes(data)
    out = await run(python, examples / "file_transfer.py", str(tmp / "photo.jpg"), cwd=tmp)
    digest = hashlib.sha256(data).hexdigest()
    assert f"received photo.jpg: 300000 bytes in " in out and f"sha256 {digest} OK" in out, out
    assert "asked for a file the sender lacks: no file 'missing.txt'" in out, out


async def check_rpc(python: str, examples: Path, tmp: Path) -> None:
    out = await run(python, examples / "rpc.py", cwd=tmp)
    assert "add(2, 3) = 5\nupper('mycel') = MYCEL\n" in out, out
    assert "10 parallel calls: [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]" in out, out
    assert "divide(1, 0) -> RpcError: LookupError: no method 'divide'" in out, out
    assert "add(1,) -> RpcError: TypeError:" in out, out


async def check_sim_ring(python: str, examples: Path, tmp: Path) -> None:
    first = await run(python, examples / "sim_ring.py", cwd=tmp)
    hops = re.findall(r"host +(\d+) -> host +(\d+): +([\d.]+) ms", first)
    assert [(int(a), int(b)) for a, b, _ in hops] == [(i, (i + 1) % 12) for i in range(12)], first
    # every hop is at least a one-way trip of the latency model, the whole ring their sum
    assert all(float(ms) >= 5 for _, _, ms in hops), first
    total = float(re.findall(r"round trip of the ring: ([\d.]+) virtual ms", first)[0])
    assert abs(total - sum(float(ms) for _, _, ms in hops)) < 0.5, first
    second = await run(python, examples / "sim_ring.py", cwd=tmp)  # a seed gives the same run
    assert first.splitlines()[:-1] == second.splitlines()[:-1]


async def check_relayed(python: str, examples: Path, tmp: Path) -> None:
    out = await run(python, examples / "relayed.py", cwd=tmp)
    assert re.search(rf"A's addresses: /ip4/127.0.0.1/tcp/\d+/p2p/{PEER_ID}/p2p-circuit/p2p/{PEER_ID}\n", out), out
    assert "(limited: True, ConnectionLimit(duration=120.0, data=131072))" in out, out
    assert "hello B, from behind the relay" in out, out
    assert re.search(r"ping through the relay: [\d.]+ ms; relayed \d+ bytes", out), out


async def check_holepunch(python: str, examples: Path, tmp: Path) -> None:
    """The NAT lab (root): relayed, then direct through both NATs, over TCP and QUIC; without root it
    says what it needs and exits 2."""
    for transport, port in (("tcp", r"tcp/\d+"), ("quic", r"udp/\d+/quic-v1")):
        out = await run(python, examples / "holepunch.py", "--transport", transport, cwd=tmp)
        relay = rf"/ip4/198\.18\.0\.1/{port}/p2p/{PEER_ID}"
        assert re.search(rf"\[A\] A connected to B through the relay: {relay}/p2p-circuit \(limited: True\)", out), out
        assert re.search(rf"\[B\] B hole punch to /ip4/198\.18\.0\.2/{port}: direct after [123] attempt", out), out
        # the direct connection goes to B's router's public address, not through the relay
        assert re.search(rf"\[A\] A direct connection to B: /ip4/198\.18\.0\.3/{port} \(limited: False\)", out), out
        assert "the relayed connection is closed; the direct one is open: True" in out, out
        relayed, direct = map(float, re.findall(r"relayed RTT ([\d.]+) ms -> direct RTT ([\d.]+) ms", out)[0])
        # both measured; not compared: the lab has no link delay, so sub-ms RTTs of one run are noise
        # (tests/nat compares medians over many runs)
        assert relayed > 0 and direct > 0, out
        assert out.rstrip().endswith("lab torn down"), out
    not_root = ("import os, runpy, sys; os.geteuid = lambda: 1000; sys.argv = [sys.argv[1]]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')")
    with trio.fail_after(TIMEOUT):
        res = await trio.run_process([python, "-c", not_root, str(examples / "holepunch.py")], cwd=tmp,
                                     capture_stdout=True, capture_stderr=True, check=False)
    assert res.returncode == 2 and b"it needs root, `ip netns` (iproute2) and `nft`" in res.stderr, res


async def check_who_has(python: str, examples: Path, tmp: Path) -> None:
    (tmp / "notes.txt").write_bytes(b"who has this? " * 5000)
    out = await run(python, examples / "who_has.py", str(tmp / "notes.txt"), cwd=tmp)
    assert "[B] the DHT says 12D3KooW" in out, out
    assert out.splitlines()[-1].endswith("sha2-256 matches: it is notes.txt"), out


async def check_chat(python: str, examples: Path, tmp: Path) -> None:
    """Two chats: alice listens on 127.0.0.1, bob connects; a line typed by each reaches the other."""
    chat = str(examples / "chat.py")
    alice_args = [python, chat, "--nick", "alice", "--topic", "room", "--listen", "/ip4/127.0.0.1/tcp/0"]
    async with trio.open_nursery() as nursery:
        alice_proc = await nursery.start(_process, alice_args, tmp)
        alice = Lines(alice_proc)
        addr = (await alice.until(r"listening on (\S+)"))[1]
        bob_proc = await nursery.start(_process, [python, chat, "--nick", "bob", "--topic", "room", "--connect", addr], tmp)
        bob = Lines(bob_proc)
        bob_id = (await bob.until(rf"bob \(({PEER_ID})\) in room"))[1]
        await alice.until(rf"\* {bob_id[-8:]} joined room")
        await bob_proc.stdin.send_all(b"hello from bob\n")
        await alice.until(rf"<{bob_id[-8:]}> bob: hello from bob")
        await alice_proc.stdin.send_all(b"hi bob\n")
        await bob.until(r"<\w{8}> alice: hi bob")
        for proc, lines in ((bob_proc, bob), (alice_proc, alice)):
            await proc.stdin.aclose()  # Ctrl-D: leave
            await lines.until(r"^\* bye")
            with trio.fail_after(TIMEOUT):
                assert await proc.wait() == 0, lines.seen


async def _process(args: Sequence[str], cwd: Path, task_status: trio.TaskStatus[trio.Process]) -> None:
    proc = await trio.lowlevel.open_process(list(args), cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        task_status.started(proc)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                await pipe.aclose()


async def check_demo(python: str, examples: Path, tmp: Path) -> None:
    """make demo's script (checked in full by tests/integration/test_demo.py; run here against the wheel)."""
    out = await run(python, examples / "demo.py", cwd=tmp)
    assert "identify + ping + streams all worked" in out, out
    assert out.count("checksum OK") == 4, out
    assert "every host received every message (20 of 20)" in out, out


CHECKS = {
    "ping.py": check_ping,
    "echo.py": check_echo,
    "file_transfer.py": check_file_transfer,
    "rpc.py": check_rpc,
    "sim_ring.py": check_sim_ring,
    "relayed.py": check_relayed,
    "holepunch.py": check_holepunch,
    "who_has.py": check_who_has,
    "chat.py": check_chat,
}
"""Each example script and the check of what it prints."""

WHEEL_CHECKS = {**CHECKS, "demo.py": check_demo}
"""What tests/packaging runs against the wheel: every script of examples/."""
