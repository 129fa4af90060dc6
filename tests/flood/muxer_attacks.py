"""Shared pieces of the flood tests: a mycel listener in its own process, its RSS, raw attacker
connections (TCP + Noise done properly, then hand-written muxer frames), and a well-behaved peer's
checks (pings and a 1 MiB echo) to run *during* an attack."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import trio
from multiaddr import Multiaddr

from mycel import HostConfig, open_host
from mycel.core.abc import Connection, SecureConnection, StreamMuxer
from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.host import Host
from mycel.multistream.core import encode_message
from mycel.muxers.yamux import Yamux
from mycel.network.upgrader import Upgrader
from mycel.protocols.echo import ECHO_PROTOCOL
from mycel.protocols.ping import Ping
from mycel.security.noise import Noise
from mycel.transports.tcp import TCP

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
RSS_BOUND = 64 * MiB  # growth of the listener's RSS any single attacker may cause


@dataclass
class Listener:
    """The listener process: its full address (with /p2p), peer id and pid."""

    addr: Multiaddr
    peer: PeerId
    pid: int
    process: subprocess.Popen[bytes]

    def rss(self) -> int:
        """Resident set size in bytes (``VmRSS`` of /proc/<pid>/status)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def alive(self) -> bool:
        """The process has not exited."""
        return self.process.poll() is None


@contextlib.contextmanager
def listener_process(muxer: str = "yamux", *options: str) -> Iterator[Listener]:
    """Start ``tests.flood.muxer_listener`` (with ``options``); stopped (stdin closed, then killed) on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.flood.muxer_listener", "--muxer", muxer, *options],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"listener exited ({proc.wait()}) before it was ready")
        info = json.loads(line)
        addr = Multiaddr(info["addr"])
        yield Listener(addr, PeerId.from_string(addr.get_peer_id()), int(info["pid"]), proc)
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _RawMuxer(StreamMuxer):
    """Agrees on a muxer protocol and hands back the secure connection itself: the attacker writes
    the muxer's frames by hand."""

    def __init__(self, protocol_id: str) -> None:
        self.protocol_id = protocol_id

    def new_connection(self, secure: SecureConnection) -> Connection:
        return secure  # type: ignore[return-value]


async def raw_connection(listener: Listener, muxer: str = "/yamux/1.0.0") -> SecureConnection:
    """A fresh identity's TCP + Noise connection to the listener, with ``muxer`` agreed and nothing else."""
    upgrader = Upgrader(Identity.generate(), [Noise()], [_RawMuxer(muxer)])
    tcp_addr = listener.addr.decapsulate(Multiaddr(f"/p2p/{listener.peer}"))
    raw = await TCP().dial(tcp_addr)
    secure: SecureConnection = await upgrader.upgrade_outbound(raw, listener.peer)  # type: ignore[assignment]
    return secure


def negotiation(protocol: str) -> bytes:
    """The multistream-select bytes a dialer sends to pick ``protocol`` without waiting."""
    return encode_message("/multistream/1.0.0") + encode_message(protocol)


@contextlib.asynccontextmanager
async def legit_peer(listener: Listener) -> AsyncIterator[Host]:
    """A well-behaved mycel host connected to the listener."""
    config = HostConfig(transports=[TCP()], security=[Noise()], muxers=[Yamux()], services=[Ping()])
    async with open_host(config) as host:
        await host.connect(listener.addr)
        yield host


async def served(host: Host, listener: Listener, pings: int = 3) -> list[float]:
    """The checks a well-behaved peer runs during an attack: ``pings`` pings and a 1 MiB echo on a
    new stream; returns the ping RTTs (raises if anything fails)."""
    rtts = await host.service(Ping).ping(listener.peer, count=pings)
    stream = await host.new_stream(listener.peer, [ECHO_PROTOCOL])
    payload = os.urandom(MiB)
    received = bytearray()

    async def read_all() -> None:
        while len(received) < MiB:
            chunk = await stream.receive_some(256 * 1024)
            if not chunk:
                break
            received.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await stream.send_all(payload)
    await stream.aclose()
    assert bytes(received) == payload, "the 1 MiB echo came back wrong"
    return rtts


class YamuxFrames:
    """Parses the yamux frames the listener sends to a raw attacker: send windows it grants per
    stream, and its pings (kept, so the attacker can answer them when it likes)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.skip = 0  # payload bytes of the current data frame still to drop
        self.windows: dict[int, int] = {}  # stream -> bytes we may still send
        self.pings: list[int] = []  # opaque values of the listener's pings not answered yet
        self.resets: set[int] = set()

    def feed(self, data: bytes | bytearray) -> None:
        """Take bytes from the wire."""
        self.buf += data
        pos = 0
        end = len(self.buf)
        while True:
            if self.skip:
                n = min(self.skip, end - pos)
                self.skip -= n
                pos += n
                if self.skip:
                    break
            if end - pos < 12:
                break
            _, type_, flags, sid, length = struct.unpack_from(">BBHII", self.buf, pos)
            pos += 12
            if type_ == 0:
                self.skip = length
            if type_ == 1 and sid in self.windows:
                self.windows[sid] += length
            if type_ == 2 and flags & 1:
                self.pings.append(length)
            if type_ in (0, 1) and flags & 8:
                self.resets.add(sid)
        del self.buf[:pos]
