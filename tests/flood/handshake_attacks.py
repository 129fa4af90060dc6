"""Handshake and QUIC flood attacks against a real mycel listener in a subprocess (issue #12 item 2).

``python -m tests.flood.handshake_attacks serve [--limit-loopback] [--stage-timeout S] [--quic]``
runs the victim: a mycel host listening on 127.0.0.1 (TCP, and QUIC with ``--quic``) that prints one
JSON line (addresses, peer id, pid) and then answers each ``stats`` line on stdin with one JSON line
(RSS, open fds, connections, the swarm's handshake counters); it exits at EOF on stdin.

The test side: :func:`victim` starts it, :class:`Victim` reads its figures, :func:`legit_rounds` is the
well-behaved peer (fresh dial + ping, again and again, each under a deadline) that must be served
*during* an attack, and the attackers are plain sockets bound to other loopback addresses
(127.0.0.2...), so per-source limits tell them apart from the legit peer on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

REPO = Path(__file__).resolve().parents[2]


# -- the victim (subprocess) ------------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _serve(args: argparse.Namespace) -> None:
    from mycel import QUIC, TCP, HostConfig, Identify, Ping, open_host

    fields = {f.name for f in dataclasses.fields(HostConfig)}
    extra: dict[str, Any] = {}
    if "source_limits" in fields:  # (absent before issue #12: the attacks then show what they did)
        from mycel.network.limits import SourceLimits

        extra["source_limits"] = SourceLimits(limit_loopback=args.limit_loopback)
    if "handshake_stage_timeout" in fields and args.stage_timeout:
        extra["handshake_stage_timeout"] = args.stage_timeout
    transports: list[Any] = [TCP()]
    listen = ["/ip4/127.0.0.1/tcp/0"]
    if args.quic:
        transports.append(QUIC())  # (it takes the host's source_limits)
        listen.append("/ip4/127.0.0.1/udp/0/quic-v1")
    config = HostConfig(transports=transports, listen=listen, services=[Identify(), Ping()], **extra)
    async with open_host(config) as host:
        pid = os.getpid()
        ready = {
            "pid": pid,
            "peer": str(host.peer_id),
            "tcp": next(str(a) for a in host.listen_addrs if "/tcp/" in str(a)),
            "quic": next((str(a) for a in host.listen_addrs if "/quic-v1" in str(a)), None),
        }
        print(json.dumps(ready), flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(0))
        buf = b""
        while True:
            data = await stdin.receive_some(4096)
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip() == b"stats":
                    stats_fn: Callable[[], Any] | None = getattr(host.swarm, "stats", None)
                    stats = dict(stats_fn()) if stats_fn is not None else {}
                    report = {
                        "rss_kib": _rss_kib(pid),
                        "fds": _fds(pid),
                        "conns": len(host.connections()),
                        "swarm": stats,
                    }
                    print(json.dumps(report), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cmd", choices=["serve"])
    parser.add_argument("--limit-loopback", action="store_true")
    parser.add_argument("--stage-timeout", type=float, default=0.0)
    parser.add_argument("--quic", action="store_true")
    trio.run(_serve, parser.parse_args())


# -- the test side ------------------------------------------------------------------------------------------


class Victim:
    """The running listener: its addresses and a way to ask for its figures."""

    def __init__(self, process: trio.Process, ready: dict[str, Any], lines: _Lines) -> None:
        self.process = process
        self.pid = int(ready["pid"])
        self.peer = str(ready["peer"])
        self.tcp = str(ready["tcp"])
        self.quic: str | None = ready.get("quic")
        self._lines = lines

    @property
    def tcp_port(self) -> int:
        return int(self.tcp.split("/")[4])

    @property
    def quic_port(self) -> int:
        assert self.quic is not None
        return int(self.quic.split("/")[4])

    def rss_kib(self) -> int:
        return _rss_kib(self.pid)

    def fds(self) -> int:
        return _fds(self.pid)

    def cpu_seconds(self) -> float:
        """User + system CPU time the victim has used."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def stats(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(b"stats\n")
        out: dict[str, Any] = json.loads(await self._lines.next())
        return out

    async def settle(self, fds: int, timeout: float = 8.0) -> dict[str, Any]:
        """Poll (every 50 ms, at most ``timeout`` s: another process has no event to wait on) until the
        victim holds no more than ``fds`` descriptors and no connection; its last figures."""
        with trio.move_on_after(timeout):
            while True:
                stats = await self.stats()
                if stats["fds"] <= fds and stats["conns"] == 0:
                    return stats
                await trio.sleep(0.05)
        return await self.stats()


class _Lines:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buf = b""

    async def next(self, timeout: float = 20.0) -> bytes:
        with trio.fail_after(timeout):
            while b"\n" not in self._buf:
                data = await self._stream.receive_some(65536)
                if not data:
                    raise EOFError("victim exited")
                self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return line


@asynccontextmanager
async def victim(*args: str) -> AsyncIterator[Victim]:
    """Start the listener subprocess (options as for ``serve``); stop it on the way out."""
    argv = [sys.executable, "-m", "tests.flood.handshake_attacks", "serve", *args]
    process = await trio.lowlevel.open_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(REPO))
    try:
        assert process.stdout is not None
        lines = _Lines(process.stdout)
        ready = json.loads(await lines.next())
        yield Victim(process, ready, lines)
    finally:
        with trio.CancelScope(shield=True):
            if process.stdin is not None:
                await process.stdin.aclose()
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


@dataclasses.dataclass
class LegitResult:
    ok: int = 0
    failed: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    seconds: list[float] = dataclasses.field(default_factory=list)


async def legit_rounds(addr: str, rounds: int, *, quic: bool = False, deadline: float = 2.0) -> LegitResult:
    """The well-behaved peer: ``rounds`` times a fresh host-level dial to ``addr`` and a ping, each under
    ``deadline`` seconds, then a disconnect. Counts successes and failures."""
    from mycel import QUIC, TCP, HostConfig, Identify, Ping, open_host
    from mycel.core.peer_id import PeerId

    result = LegitResult()
    transports: list[Any] = [QUIC()] if quic else [TCP()]
    config = HostConfig(transports=transports, services=[Identify(), Ping()])
    async with open_host(config) as host:
        peer = PeerId.from_string(addr.rsplit("/", 1)[-1])
        for _ in range(rounds):
            t0 = trio.current_time()
            try:
                with trio.fail_after(deadline):
                    await host.connect(addr)
                    await host.service(Ping).ping(peer)
                result.ok += 1
                result.seconds.append(trio.current_time() - t0)
            except Exception as exc:  # noqa: BLE001 - every failure is counted and named
                result.failed += 1
                result.errors.append(f"{type(exc).__name__}: {exc}")
            with trio.move_on_after(2):
                await host.disconnect(peer)
    return result


def attack_socket(source: str, port: int) -> socket.socket:
    """A blocking TCP connection from ``source`` (a loopback address) to 127.0.0.1:``port``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((source, 0))
    sock.settimeout(2.0)
    sock.connect(("127.0.0.1", port))
    return sock


def open_attack(sources: list[str], port: int, per_source: int, first: bytes = b"") -> list[socket.socket]:
    """``per_source`` connections from each of ``sources``, each sending ``first`` (may be empty: a
    half-open handshake that never starts). Connections the kernel or victim refuses are skipped."""
    socks: list[socket.socket] = []
    for _ in range(per_source):
        for source in sources:
            try:
                sock = attack_socket(source, port)
                if first:
                    sock.send(first)
            except OSError:
                continue
            socks.append(sock)
    return socks


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


# -- QUIC ------------------------------------------------------------------------------------------------------


def quic_initials(count: int, port: int) -> list[bytes]:
    """``count`` valid client Initial datagrams (aioquic clients, each a fresh connection id) for a
    listener at 127.0.0.1:``port``: each starts a real handshake the attacker will never finish."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    out = []
    for _ in range(count):
        client = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=["libp2p"]))
        client.connect(("127.0.0.1", port), now=0.0)
        out.append(client.datagrams_to_send(now=0.0)[0][0])
    return out


def send_datagrams(sources: list[str], port: int, datagrams: list[bytes]) -> list[socket.socket]:
    """Send ``datagrams`` round-robin from UDP sockets bound to ``sources``; the sockets (to close later)."""
    socks = []
    for source in sources:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((source, 0))
        socks.append(sock)
    for i, data in enumerate(datagrams):
        socks[i % len(socks)].sendto(data, ("127.0.0.1", port))
    return socks


JUNK_SENDER = """
import os, socket, sys, time
sources, port, rate, seconds = sys.argv[1].split(","), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
socks = []
for src in sources:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((src, 0)); socks.append(s)
def junk():
    # an Initial-shaped datagram: long header, QUIC v1, 8-byte DCID and SCID, no token, a length that fits,
    # padded to 1200 bytes, the rest random (it decrypts to nothing)
    head = bytes([0xC3]) + b"\\x00\\x00\\x00\\x01" + b"\\x08" + os.urandom(8) + b"\\x08" + os.urandom(8) + b"\\x00"
    rest = 1200 - len(head) - 2
    return head + bytes([0x40 | rest >> 8, rest & 0xFF]) + os.urandom(rest)
pool = [junk() for _ in range(2000)]
sent, t0 = 0, time.monotonic()
while True:
    elapsed = time.monotonic() - t0
    if elapsed >= seconds:
        break
    if sent > elapsed * rate:
        time.sleep(0.001)
        continue
    for _ in range(100):
        try:
            socks[sent % len(socks)].sendto(pool[sent % len(pool)], ("127.0.0.1", port))
        except OSError:
            pass
        sent += 1
print(sent, flush=True)
"""


async def junk_burst(sources: list[str], port: int, rate: float, seconds: float) -> trio.Process:
    """Start a subprocess sending Initial-shaped junk at ``rate`` datagrams/s for ``seconds``; it prints
    how many it sent and exits."""
    argv = [sys.executable, "-c", JUNK_SENDER, ",".join(sources), str(port), str(rate), str(seconds)]
    return await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)


if __name__ == "__main__":
    main()
