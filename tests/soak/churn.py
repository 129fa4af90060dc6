"""A churn soak against one mycel node (issue 12): client hosts connect, open echo streams, ping, publish
on gossipsub and disconnect, continuously, for a set time; the node's RSS, open fds and trio task count
are sampled throughout and must stay flat.

    python -m tests.soak --minutes 30        # make soak
    python -m tests.soak --minutes 3         # what make test runs (tests/soak/test_soak.py)

Flat means: the least-squares slope of RSS over the second half of the run (after warm-up: glibc arenas,
caches and the gossipsub seen-cache reach their steady size in the first half) stays under a bound, and
once the churn stops and the clients are gone the fds and tasks are back at the idle baseline.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from mycel import Gossipsub, HostConfig, Identify, Ping, open_host
from mycel.core.errors import MycelError
from mycel.protocols.echo import ECHO_PROTOCOL
from mycel.protocols.pubsub import PublishError
from tests.soak.listener import TOPIC

ROOT = Path(__file__).resolve().parents[2]
ECHO_BYTES = 64 * 1024


@dataclass
class SoakResult:
    """What a soak run measured."""

    minutes: float
    sessions: int = 0
    """Client sessions completed (connect, echo, ping, publish, disconnect)."""
    errors: list[str] = field(default_factory=list)
    samples: list[dict[str, float]] = field(default_factory=list)
    """The node's resource lines during the churn."""
    idle_before: dict[str, float] = field(default_factory=dict)
    idle_after: dict[str, float] = field(default_factory=dict)
    published: int = 0
    received: int = 0

    def slope(self, key: str) -> float:
        """Least-squares slope of ``key`` per minute over the second half of the churn."""
        half = self.samples[len(self.samples) // 2 :]
        if len(half) < 3:
            return 0.0
        xs = [s["t"] / 60 for s in half]
        ys = [s[key] for s in half]
        return statistics.linear_regression(xs, ys).slope

    def report(self) -> str:
        peak = max(s["rss_kb"] for s in self.samples) if self.samples else 0
        return "\n".join(
            [
                f"soak: {self.minutes:g} min, {self.sessions} client sessions, {len(self.errors)} errors, "
                f"{self.published} messages published, {self.received} received by the node",
                f"  RSS: idle {self.idle_before.get('rss_kb', 0) / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
                f"after {self.idle_after.get('rss_kb', 0) / 1024:.1f} MiB; slope over the second half "
                f"{self.slope('rss_kb') / 1024:+.2f} MiB/min",
                f"  fds: idle {self.idle_before.get('fds')}, after {self.idle_after.get('fds')}; slope "
                f"{self.slope('fds'):+.2f}/min",
                f"  tasks: idle {self.idle_before.get('tasks')}, after {self.idle_after.get('tasks')}; slope "
                f"{self.slope('tasks'):+.2f}/min",
            ]
        )


async def _session(addr: str, rng: random.Random, result: SoakResult) -> None:
    """One client's life: connect, echo on 1-4 streams, ping, publish 3 messages, leave."""
    config = HostConfig(services=[Identify(), Ping(), Gossipsub()])
    async with open_host(config) as host:
        await host.connect(addr)
        peer = host.connected_peers()[0]
        payload = rng.randbytes(ECHO_BYTES)

        async def echo() -> None:
            stream = await host.new_stream(peer, ECHO_PROTOCOL)
            try:
                await stream.send_all(payload)
                await stream.send_eof()
                got = bytearray()
                while chunk := await stream.receive_some(65536):
                    got += chunk
                if got != payload:
                    raise AssertionError(f"echo returned {len(got)} bytes, not the {len(payload)} sent")
            finally:
                await stream.aclose()

        async with trio.open_nursery() as nursery:
            for _ in range(rng.randint(1, 4)):
                nursery.start_soon(echo)
        await host.service(Ping).ping(peer)
        pubsub = host.service(Gossipsub)
        await pubsub.wait_ready(TOPIC, 1, timeout=10)
        for i in range(3):
            try:
                await pubsub.publish(TOPIC, f"{host.peer_id} {i}".encode())
                result.published += 1
            except PublishError as exc:
                raise AssertionError(f"publish failed: {exc}") from exc
        await pubsub.flush()


async def _read_samples(stdout: trio.abc.ReceiveStream, into: list[dict[str, float]], first: trio.Event,
                        addrs: list[str]) -> None:
    buffer = b""
    while chunk := await stdout.receive_some(65536):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            item = json.loads(line)
            if "addrs" in item:
                addrs.extend(item["addrs"])
                first.set()
            else:
                into.append(item)


async def run_soak(
    minutes: float, *, clients: int = 6, interval: float = 2.0, seed: int = 1, small_tables: bool = False
) -> SoakResult:
    """Run the churn for ``minutes`` with ``clients`` concurrent client loops; returns what was measured.
    ``small_tables``: the node keeps 300 peers in its peerstore and a 30 s seen cache, so a short run
    reaches the steady state that the default TTLs reach after ~15 minutes."""
    result = SoakResult(minutes)
    rng = random.Random(seed)
    samples: list[dict[str, float]] = []
    addrs: list[str] = []
    ready = trio.Event()
    cmd = [sys.executable, "-m", "tests.soak.listener", "--interval", str(interval)]
    if small_tables:
        cmd.append("--small-tables")
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(
            lambda task_status: trio.run_process(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, check=False, task_status=task_status
            )
        )
        assert proc.stdout is not None and proc.stdin is not None
        nursery.start_soon(_read_samples, proc.stdout, samples, ready, addrs)
        with trio.fail_after(30):
            await ready.wait()
            while len(samples) < 2:  # two idle samples: the baseline
                await trio.sleep(interval / 2)
        result.idle_before = samples[-1]
        tcp = next(a for a in addrs if "/tcp/" in a)
        quic = next((a for a in addrs if "/quic-v1" in a), tcp)
        churn_start = len(samples)
        deadline = trio.current_time() + minutes * 60

        async def client_loop(n: int) -> None:
            local = random.Random(rng.random())
            while trio.current_time() < deadline:
                addr = quic if n % 3 == 2 else tcp  # a third of the clients over QUIC
                try:
                    with trio.fail_after(30):
                        await _session(addr, local, result)
                    result.sessions += 1
                except (MycelError, OSError, AssertionError, trio.TooSlowError) as exc:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                    if len(result.errors) > 50:
                        return

        async with trio.open_nursery() as churn:
            for n in range(clients):
                churn.start_soon(client_loop, n)
        result.samples = samples[churn_start:]
        # the clients are gone: the node must settle back to where it started
        settle = len(samples)
        with trio.move_on_after(20):
            while True:
                await trio.sleep(interval)
                last = samples[-1]
                if len(samples) > settle + 1 and last["conns"] == 0 and last["tasks"] <= result.idle_before["tasks"]:
                    break
        result.idle_after = samples[-1]
        result.received = int(samples[-1]["received"])
        await proc.stdin.aclose()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--json", type=Path, help="also write the samples and figures here")
    parser.add_argument("--small-tables", action="store_true", help="peerstore of 300 peers, seen cache 30 s")
    args = parser.parse_args(argv)
    result = trio.run(lambda: run_soak(args.minutes, clients=args.clients, small_tables=args.small_tables))
    print(result.report())
    for error in result.errors[:10]:
        print("  error:", error)
    if args.json:
        args.json.write_text(json.dumps(result.__dict__ | {"rss_slope_kb_per_min": result.slope("rss_kb")}, indent=1))
    return 1 if result.errors else 0
