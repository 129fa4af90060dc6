"""The ``perf`` command of libp2p/test-plans (``perf/``), speaking ``/perf/1.0.0``.

    python -m mycel.cli.perf --run-server --server-address 0.0.0.0:4001
    python -m mycel.cli.perf --server-address 10.0.0.1:4001 --transport tcp --upload-bytes N --download-bytes M

The server uses the identity from the all-zero Ed25519 seed (peer id SERVER_PEER_ID), listens on tcp
and, when mycel's QUIC is built, on quic-v1 at the same port number, and never exits. The client
dials ``<address>/p2p/SERVER_PEER_ID``, runs one perf exchange and prints JSON lines on stdout:
``{"type": "intermediary", "timeSeconds", "uploadBytes", "downloadBytes"}`` about every second
(bytes moved in that interval), then ``{"type": "final", ...}`` with the totals and the time
including connection establishment. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import struct
import sys
from collections.abc import Sequence
from typing import TextIO

import trio

from mycel.core.errors import MycelError, ProtocolViolation
from mycel.core.identity import Identity
from mycel.host import HostConfig, open_host
from mycel.protocols.perf import PERF_PROTOCOL, Perf

log = logging.getLogger("mycel.cli.perf")

SERVER_SEED = bytes(32)
SERVER_PEER_ID = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
BLOCK = 256 * 1024  # bytes per write and largest read; one report check per block
REPORT_INTERVAL = 1.0  # seconds between intermediary lines
_ZEROS = memoryview(bytes(BLOCK))


def server_identity() -> Identity:
    return Identity.from_seed(SERVER_SEED)


def split_address(text: str) -> tuple[str, int]:
    """``ip:port`` (``[v6]:port`` too) → (ip, port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"--server-address wants ip:port, got {text!r}") from None
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--server-address wants ip:port, got {text!r}")
    return host, int(port)


def multiaddr_for(ip: str, port: int, transport: str) -> str:
    family = "ip6" if ":" in ip else "ip4"
    if transport == "tcp":
        return f"/{family}/{ip}/tcp/{port}"
    if transport == "quic-v1":
        return f"/{family}/{ip}/udp/{port}/quic-v1"
    raise ValueError(f"transport {transport!r} is not supported (tcp, quic-v1)")


def _quic_available() -> bool:
    try:
        import mycel.transports.quic  # noqa: F401
    except ImportError:
        return False
    return True


def _tls_available() -> bool:
    try:
        import mycel.security.tls  # noqa: F401
    except ImportError:
        return False
    return True


def perf_config(identity: Identity, listen: Sequence[str], transports: Sequence[str]) -> HostConfig:
    """Noise and TLS (when built), yamux and mplex, so any client stack is accepted."""
    from mycel.core.abc import SecurityProtocol, StreamMuxer, Transport
    from mycel.muxers.mplex import Mplex
    from mycel.muxers.yamux import Yamux
    from mycel.protocols.identify import Identify
    from mycel.protocols.ping import Ping
    from mycel.security.noise import Noise
    from mycel.transports.tcp import TCP

    security: list[SecurityProtocol] = [Noise()]
    if _tls_available():
        from mycel.security.tls import TLS

        security.append(TLS())
    muxers: list[StreamMuxer] = [Yamux(), Mplex()]
    chosen: list[Transport] = []
    if "tcp" in transports:
        chosen.append(TCP())
    if "quic-v1" in transports:
        from mycel.transports.quic import QUIC

        chosen.append(QUIC())
    return HostConfig(
        identity=identity,
        transports=chosen,
        security=security,
        muxers=muxers,
        services=[Identify(), Ping(), Perf()],
        listen=list(listen),
    )


class Reporter:
    """Writes the intermediary and final JSON lines; ``tick`` is called after every block moved."""

    def __init__(self, out: TextIO, start: float) -> None:
        self.out = out
        self.start = start
        self.last = start
        self.up = self.down = 0  # totals
        self._up_mark = self._down_mark = 0  # totals at the last report

    def _line(self, kind: str, seconds: float, up: int, down: int) -> None:
        obj = {"type": kind, "timeSeconds": round(seconds, 6), "uploadBytes": up, "downloadBytes": down}
        self.out.write(json.dumps(obj) + "\n")
        self.out.flush()

    def tick(self, now: float) -> None:
        if now - self.last >= REPORT_INTERVAL:
            self._line("intermediary", now - self.last, self.up - self._up_mark, self.down - self._down_mark)
            self.last, self._up_mark, self._down_mark = now, self.up, self.down

    def final(self, now: float) -> None:
        self._line("final", now - self.start, self.up, self.down)


async def run_client(
    address: str, transport: str, upload: int, download: int, out: TextIO = sys.stdout
) -> None:
    ip, port = split_address(address)
    target = f"{multiaddr_for(ip, port, transport)}/p2p/{SERVER_PEER_ID}"
    config = perf_config(Identity.generate(), [], [transport])
    async with open_host(config) as host:
        start = trio.current_time()
        report = Reporter(out, start)
        conn = await host.connect(target)
        log.info(
            "connected to %s via %s (%s, %s)", conn.remote_peer, target, conn.security_protocol, conn.muxer_protocol
        )
        stream = await host.new_stream(conn.remote_peer, [PERF_PROTOCOL], lazy=True)
        try:
            await stream.send_all(struct.pack(">Q", download))
            left = upload
            while left > 0:
                n = min(left, BLOCK)
                await stream.send_all(_ZEROS[:n])
                left -= n
                report.up += n
                report.tick(trio.current_time())
            await stream.send_eof()
            while True:
                chunk = await stream.receive_some(BLOCK)
                if not chunk:
                    break
                report.down += len(chunk)
                if report.down > download:
                    raise ProtocolViolation(f"perf server sent more than the {download} bytes asked for")
                report.tick(trio.current_time())
        finally:
            await stream.aclose()
        if report.down != download:
            raise ProtocolViolation(f"perf: asked for {download} bytes, got {report.down}")
        report.final(trio.current_time())


async def run_server(address: str) -> None:
    ip, port = split_address(address)
    transports = ["tcp", "quic-v1"] if _quic_available() else ["tcp"]
    listen = [multiaddr_for(ip, port, t) for t in transports]
    async with open_host(perf_config(server_identity(), listen, transports)) as host:
        log.info("perf server %s listening on %s", host.peer_id, [str(a) for a in host.listen_addrs])
        await trio.sleep_forever()


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perf", description="libp2p perf (test-plans contract), /perf/1.0.0")
    parser.add_argument("--run-server", action="store_true", help="serve /perf/1.0.0 (never exits)")
    parser.add_argument("--server-address", required=True, help="ip:port to listen on (server) or dial (client)")
    parser.add_argument("--transport", default="tcp", choices=["tcp", "quic-v1"])
    parser.add_argument("--upload-bytes", type=int, default=0)
    parser.add_argument("--download-bytes", type=int, default=0)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.upload_bytes < 0 or args.download_bytes < 0 or args.download_bytes >= 1 << 64:
        print("perf: byte counts must be in 0..2^64-1", file=sys.stderr)
        return 2
    try:
        if args.run_server:
            trio.run(run_server, args.server_address)
        else:
            if args.transport == "quic-v1" and not _quic_available():
                print("perf: this mycel build has no QUIC", file=sys.stderr)
                return 2
            trio.run(run_client, args.server_address, args.transport, args.upload_bytes, args.download_bytes)
    except KeyboardInterrupt:
        return 130
    except (MycelError, OSError, ValueError) as exc:
        print(f"perf: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
