"""The go-libp2p interop peer: runs ``p2pd`` (go-libp2p-daemon from the hivemind 1.1.12 wheel) and
drives it through the daemon control protocol.

    .venv/bin/python interop/go_peer.py listen --transport tcp --security noise --muxer yamux
    .venv/bin/python interop/go_peer.py dial --transport tcp --security noise --muxer yamux <maddr>/p2p/<id>
    .venv/bin/python interop/go_peer.py listen --transport quic-v1 --security none --muxer none

QUIC: this p2pd build listens on ``/quic-v1`` (RFC 9000, quic-go) when given it in ``-hostAddrs``; its
``-quic`` flag is deprecated and always on. Draft-29 ``/quic`` is gone ("no transport for protocol").

The transport, security, muxer, ping and identify responders are go's. Things the daemon does not
offer are done by this script over go streams, and the report says so: the echo handler (this p2pd
build has no ``-echo``; we register a STREAM_HANDLER and echo over the unix socket), the ping and
identify *dialer* logic, and the stream reset (closing the control socket with unread bytes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import logging

import trio
from multiaddr import Multiaddr

from interop import cases
from interop.p2pd.client import (
    ControlClient,
    DaemonStream,
    accept_daemon_stream,
    open_unix_listener,
    unix_multiaddr,
)
from interop.p2pd.identify_check import addr_to_str, check_peer_record, decode_identify_stream
from mycel.core.multibase import b58decode, b58encode

log = logging.getLogger("mycel.interop.go_peer")

INTEROP_DIR = Path(__file__).resolve().parent
P2PD = Path(os.environ.get("MYCEL_P2PD", INTEROP_DIR / ".peers" / "go" / "p2pd"))
SUPPORTED_SECURITY = ("noise", "tls")
SUPPORTED_MUXERS = ("yamux",)
READY_TIMEOUT = 20.0
STDOUT_LINE_LIMIT = 64 * 1024  # longest p2pd banner we buffer while waiting for readiness
IDENTIFY_LIMIT = 10 * 8 * 1024 + 64  # 10 messages of at most 8 KiB each, plus prefixes


def unsupported_reason(transport: str, security: str, muxer: str) -> str | None:
    if transport == "quic-v1":
        if security != "none" or muxer != "none":
            return "quic-v1 brings its own security (TLS 1.3) and streams: security and muxer must be none"
        return None
    if transport != "tcp":
        return f"transport {transport!r}: this adapter drives p2pd over tcp and quic-v1"
    if security not in SUPPORTED_SECURITY:
        return f"security {security!r}: p2pd offers noise and tls"
    if muxer not in SUPPORTED_MUXERS:
        return f"muxer {muxer!r}: p2pd (go-libp2p) has no mplex, only yamux"
    return None


@dataclass
class Daemon:
    control: ControlClient
    peer_id: bytes
    workdir: str
    pid: int


def host_addr(transport: str, ip: str) -> str:
    """p2pd's ``-hostAddrs`` for the transport (this build's QUIC is quic-go speaking RFC 9000 /quic-v1)."""
    return f"/ip4/{ip}/udp/0/quic-v1" if transport == "quic-v1" else f"/ip4/{ip}/tcp/0"


def own_addr(transport: str, ip: str, addr: str) -> bool:
    """Whether ``addr`` (from p2pd's IDENTIFY) is one of our listen addresses for ``transport``."""
    if transport == "quic-v1":
        return addr.startswith(f"/ip4/{ip}/udp/") and addr.endswith("/quic-v1")
    return addr.startswith(f"/ip4/{ip}/tcp/")


@asynccontextmanager
async def run_p2pd(
    transport: str, security: str, muxer: str, ip: str, extra_args: Sequence[str] = ()
) -> AsyncIterator[Daemon]:
    """Start p2pd on 127.0.0.1 and a private unix control socket; stop it (by PID) on exit.

    ``extra_args`` go to p2pd as they are (``go_pubsub.py``: ``-pubsub -pubsubRouter ...``).
    """
    workdir = tempfile.mkdtemp(prefix="mycel-p2pd-")
    control_path = os.path.join(workdir, "p2pd.sock")
    argv = [str(P2PD), "-listen", f"/unix{control_path}", "-hostAddrs", host_addr(transport, ip)]
    if transport == "tcp":
        argv += [
            f"-noise={'true' if security == 'noise' else 'false'}",
            f"-tls={'true' if security == 'tls' else 'false'}",
            "-muxer", muxer,
        ]  # fmt: skip
    argv += extra_args
    log.info("starting %s", " ".join(argv))
    proc = await trio.lowlevel.open_process(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        async with trio.open_nursery() as nursery:
            banner = bytearray()
            with trio.fail_after(READY_TIMEOUT):
                while b"Peer Addrs:" not in banner:
                    data = await proc.stdout.receive_some(4096)
                    if not data:
                        raise RuntimeError(f"p2pd exited before it was ready: {banner.decode(errors='replace')}")
                    banner += data
                    if len(banner) > STDOUT_LINE_LIMIT:
                        raise RuntimeError("p2pd banner too long")
            log.info("p2pd ready: %s", banner.decode(errors="replace").strip().replace("\n", " | "))
            stdout = proc.stdout

            async def forward_stdout() -> None:  # keep the pipe drained; nothing is stored
                async for chunk in stdout:
                    sys.stderr.write("p2pd: " + chunk.decode(errors="replace"))

            nursery.start_soon(forward_stdout)
            control = ControlClient(control_path)
            me = await control.identify()
            yield Daemon(control=control, peer_id=me.peer_id, workdir=workdir, pid=proc.pid)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.terminate()
                with trio.move_on_after(5):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            shutil.rmtree(workdir, ignore_errors=True)


def split_target(target: str) -> tuple[bytes, bytes]:
    """``/ip4/.../tcp/N/p2p/<id>`` -> (peer id bytes, binary transport multiaddr)."""
    head, sep, peer = target.rpartition("/p2p/")
    if not sep or not peer or "/" in peer:
        raise ValueError(f"target must end in /p2p/<peer id>: {target}")
    return b58decode(peer), bytes(Multiaddr(head).to_bytes())


# --- listen ----------------------------------------------------------------------------------------


async def echo_handler(sock: trio.SocketStream) -> None:
    """Echo one inbound daemon stream; p2pd closes the socket when the remote half-closes or resets."""
    try:
        stream = await accept_daemon_stream(sock)
    except Exception as exc:
        log.warning("bad inbound daemon connection: %s", exc)
        await trio.aclose_forcefully(sock)
        return
    peer = b58encode(stream.info.peer_id)
    total = 0
    try:
        while True:
            data = await stream.receive_some(cases.CHUNK)
            if not data:
                break
            total += len(data)
            await stream.send_all(data)
        await stream.send_eof()
        log.info("echo from %s: %d bytes, EOF", peer, total)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        # p2pd closes our socket as soon as the remote stream ends, reset or half-closed alike
        log.info("echo from %s: %d bytes, then the daemon closed the socket (%s)", peer, total, exc)
    finally:
        await trio.aclose_forcefully(stream)


async def listen(args: argparse.Namespace) -> int:
    async with run_p2pd(args.transport, args.security, args.muxer, args.ip) as daemon:
        handler_path = os.path.join(daemon.workdir, "echo.sock")
        listener = await open_unix_listener(handler_path)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, echo_handler, [listener])
            await daemon.control.stream_handler(unix_multiaddr(handler_path), [cases.ECHO])
            me = await daemon.control.identify()
            peer = b58encode(daemon.peer_id)
            addrs = [addr_to_str(a) for a in me.addrs]
            addrs = [f"{a}/p2p/{peer}" for a in addrs if own_addr(args.transport, args.ip, a)]
            cases.emit({"peer_id": peer, "addrs": addrs})
            await cases.wait_for_shutdown()
            nursery.cancel_scope.cancel()
    return 0


# --- dial ------------------------------------------------------------------------------------------


class GoCaseStream:
    """A go stream through p2pd's control socket, in the shape the cases want."""

    def __init__(self, stream: DaemonStream) -> None:
        self._stream = stream

    async def write(self, data: bytes | memoryview) -> None:
        await self._stream.send_all(data)

    async def read(self, max_bytes: int) -> bytes:
        return await self._stream.receive_some(max_bytes)

    async def close_write(self) -> None:
        await self._stream.send_eof()

    async def reset(self) -> None:
        await self._stream.abort()

    async def close(self) -> None:
        await trio.aclose_forcefully(self._stream)


async def read_all(stream: DaemonStream, limit: int) -> bytes:
    got = bytearray()
    while True:
        data = await stream.receive_some(cases.CHUNK)
        if not data:
            return bytes(got)
        got += data
        if len(got) > limit:
            raise cases.CaseFailed(f"more than {limit} bytes on the stream")


async def dial(args: argparse.Namespace) -> int:
    peer_id, addr = split_target(args.target)
    async with run_p2pd(args.transport, args.security, args.muxer, args.ip) as daemon:
        control = daemon.control

        async def connect() -> cases.Report:
            start = time.perf_counter()
            await control.connect(peer_id, [addr], timeout=int(args.case_timeout))
            ms = (time.perf_counter() - start) * 1000
            return {"ok": True, "detail": "CONNECT through the daemon", "ms": round(ms, 3)}

        async def identify() -> cases.Report:
            stream = await control.stream_open(peer_id, ["/ipfs/id/1.0.0"])
            try:
                raw = await read_all(stream, IDENTIFY_LIMIT)
            finally:
                await stream.aclose()
            info = decode_identify_stream(raw)
            if info.signed_peer_record:
                verdict, record_addrs = check_peer_record(info.signed_peer_record, peer_id)
            else:
                verdict, record_addrs = "absent", []
            go_view = [p for p in await control.list_peers() if p.peer_id == peer_id]
            go_addrs = [addr_to_str(a) for a in go_view[0].addrs] if go_view else []
            return {
                "ok": bool(info.protocols) and verdict in ("verified", "absent"),
                "detail": "identify read and checked by the adapter over a go stream; go_peerstore_addrs from LIST_PEERS",
                "agent_version": info.agent_version,
                "protocol_version": info.protocol_version,
                "protocols": info.protocols,
                "listen_addrs": info.listen_addrs,
                "observed_addr": info.observed_addr,
                "signed_peer_record": verdict,
                "signed_peer_record_addrs": record_addrs,
                "go_peerstore_addrs": go_addrs,
            }

        async def ping() -> cases.Report:
            stream = await control.stream_open(peer_id, ["/ipfs/ping/1.0.0"])
            try:
                payload = os.urandom(32)
                start = time.perf_counter()
                await stream.send_all(payload)
                got = bytearray()
                while len(got) < 32:
                    data = await stream.receive_some(32 - len(got))
                    if not data:
                        raise cases.CaseFailed(f"EOF after {len(got)} of 32 ping bytes")
                    got += data
                rtt = (time.perf_counter() - start) * 1000
            finally:
                await stream.aclose()
            if bytes(got) != payload:
                raise cases.CaseFailed("ping payload came back different")
            return {"ok": True, "detail": "ping logic is ours (32-byte echo), the stream is go's", "rtt_ms": round(rtt, 3)}

        async def open_echo() -> cases.CaseStream:
            return GoCaseStream(await control.stream_open(peer_id, [cases.ECHO]))

        hooks = cases.DialHooks(
            connect=connect,
            identify=identify,
            ping=ping,
            open_echo=open_echo,
            half_close_keeps_reading=False,
            reset_detail=(
                "p2pd has no stream reset: we closed the control socket with echoed bytes unread, "
                "which makes p2pd's read fail (ECONNRESET) and go reset the stream"
            ),
        )
        results = await cases.run_dial_cases(hooks, args.case_timeout)
        results["half_close"]["detail"] = "control socket shut for writing (SHUT_WR); " + results["half_close"]["detail"]
        cases.emit(results)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = cases.parse_args(argv)
    cases.setup_logging()
    reason = unsupported_reason(args.transport, args.security, args.muxer)
    if reason is not None:
        return cases.unsupported(reason)
    if args.ip != "127.0.0.1":
        return cases.unsupported("interop peers stay on 127.0.0.1")
    if not P2PD.exists():
        print(f"p2pd not found at {P2PD}: run interop/install.sh", file=sys.stderr)
        return 2
    if args.mode == "listen":
        return trio.run(listen, args)
    return trio.run(cases.until_sigterm, lambda: dial(args))


if __name__ == "__main__":
    sys.exit(main())
