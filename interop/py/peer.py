"""The py-libp2p 0.8.1 interop peer. Run it with the py-libp2p virtualenv's python:

    interop/.peers/py-venv/bin/python interop/py/peer.py listen --transport tcp --security noise --muxer yamux
    interop/.peers/py-venv/bin/python interop/py/peer.py dial --transport tcp --security noise --muxer yamux <maddr>

The host offers exactly the one security protocol and muxer asked for (py-libp2p's default host would
also offer TLS, secio and plaintext, and fall back to either muxer).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))  # the repo root, for interop.cases

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TMuxerOptions, TProtocol, TSecurityOptions
from libp2p.host.ping import PingService
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.network.stream.net_stream import NetStream
from libp2p.peer.envelope import consume_envelope
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.perf import PerfService
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.tls.transport import PROTOCOL_ID as TLS_PROTOCOL_ID
from libp2p.security.tls.transport import TLSTransport
from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from interop import cases

log = logging.getLogger("mycel.interop.py_peer")

IDENTIFY = TProtocol("/ipfs/id/1.0.0")
IDENTIFY_LIMIT = 64 * 1024  # an identify answer longer than this is a failure, not buffered further
PEER_RECORD_DOMAIN = "libp2p-peer-record"


def unsupported_reason(args: argparse.Namespace) -> str | None:
    if args.transport != "tcp":
        return f"transport {args.transport!r}: this py peer is built with tcp only"
    if args.security not in ("noise", "tls"):
        return f"security {args.security!r}: py-libp2p offers noise and tls here"
    if args.muxer not in ("yamux", "mplex"):
        return f"muxer {args.muxer!r}: py-libp2p offers yamux and mplex"
    if args.ip != "127.0.0.1":
        return "interop peers stay on 127.0.0.1"
    return None


def make_host(args: argparse.Namespace) -> IHost:
    key_pair = create_new_key_pair()
    security: TSecurityOptions
    if args.security == "noise":
        noise_key = create_new_x25519_key_pair().private_key
        security = {NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=noise_key)}
    else:
        security = {TLS_PROTOCOL_ID: TLSTransport(key_pair)}
    muxers: TMuxerOptions = (
        {TProtocol(YAMUX_PROTOCOL_ID): Yamux} if args.muxer == "yamux" else {TProtocol(MPLEX_PROTOCOL_ID): Mplex}
    )
    return new_host(
        key_pair=key_pair,
        sec_opt=security,
        muxer_opt=muxers,
        listen_addrs=[multiaddr.Multiaddr(f"/ip4/{args.ip}/tcp/0")],
        # with more than one connection allowed per peer, every dial waits a fixed 250 ms for a second
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )


async def read_some(stream: INetStream, max_bytes: int) -> bytes:
    """``b""`` at EOF (py-libp2p raises StreamEOF on yamux and may return b"" on mplex)."""
    try:
        return bytes(await stream.read(max_bytes))
    except StreamEOF:
        return b""


# --- listen ----------------------------------------------------------------------------------------


def muxer_saw_reset(stream: INetStream) -> bool:
    """Whether the muxer recorded a remote reset on this stream.

    py-libp2p's yamux may drop a reset stream from its table before ``read`` looks at the reset flag,
    so ``read`` reports EOF; the flag on the muxed stream still tells the truth (mplex: ``event_reset``).
    """
    muxed = cast(NetStream, stream).muxed_stream
    if getattr(muxed, "reset_received", False):
        return True
    event = getattr(muxed, "event_reset", None)
    return isinstance(event, trio.Event) and event.is_set()


async def settle_remote_end(stream: INetStream) -> None:
    """Wait until py-libp2p's mplex has recorded how the remote ended the stream.

    Its reset handler closes the stream's message channel (waking our read with EOF) and only after a
    checkpoint sets ``event_reset`` together with ``event_remote_closed``; a clean close also sets
    ``event_remote_closed``. Waiting for that event makes the reset check below deterministic.
    """
    event = getattr(cast(NetStream, stream).muxed_stream, "event_remote_closed", None)
    if isinstance(event, trio.Event):
        with trio.move_on_after(5):
            await event.wait()


async def echo_handler(stream: INetStream) -> None:
    peer = str(stream.muxed_conn.peer_id)
    total = 0
    try:
        while True:
            data = await read_some(stream, cases.CHUNK)
            if not data:
                break
            total += len(data)
            await stream.write(data)
        await settle_remote_end(stream)
        if muxer_saw_reset(stream):
            log.info("echo from %s: %d bytes, then a reset that read() reported as EOF", peer, total)
            cases.emit_stream_reset(cases.ECHO, peer, "read() returned EOF but the muxer had received a reset")
            return
        await cast(NetStream, stream).close_write()
        log.info("echo from %s: %d bytes, then EOF", peer, total)
    except StreamReset as exc:
        log.info("echo from %s: %d bytes, then reset", peer, total)
        cases.emit_stream_reset(cases.ECHO, peer, f"StreamReset: {exc}")
    except Exception as exc:
        log.info("echo from %s: %d bytes, then %s: %s", peer, total, type(exc).__name__, exc)
        await stream.reset()


async def listen(args: argparse.Namespace) -> int:
    host = make_host(args)
    listen_addr = multiaddr.Multiaddr(f"/ip4/{args.ip}/tcp/0")
    async with host.run(listen_addrs=[listen_addr]):
        host.set_stream_handler(TProtocol(cases.ECHO), echo_handler)
        await PerfService(host).start()
        peer = str(host.get_id())
        addrs = []
        for addr in host.get_addrs():
            text = str(addr)
            if not text.startswith(f"/ip4/{args.ip}/tcp/"):
                continue
            addrs.append(text if "/p2p/" in text else f"{text}/p2p/{peer}")
        cases.emit({"peer_id": peer, "addrs": addrs})
        await cases.wait_for_shutdown()
    return 0


# --- dial ------------------------------------------------------------------------------------------


class PyCaseStream:
    def __init__(self, stream: INetStream) -> None:
        self._stream = stream

    async def write(self, data: bytes | memoryview) -> None:
        await self._stream.write(bytes(data))

    async def read(self, max_bytes: int) -> bytes:
        return await read_some(self._stream, max_bytes)

    async def close_write(self) -> None:
        await cast(NetStream, self._stream).close_write()

    async def reset(self) -> None:
        await self._stream.reset()

    async def close(self) -> None:
        try:
            await self._stream.close()
        except Exception as exc:  # closing a stream the remote already tore down
            log.debug("close: %s", exc)


def decode_identify(raw: bytes) -> Identify:
    """Merge the uvarint-delimited Identify messages of one identify stream."""
    merged = Identify()
    pos = 0
    while pos < len(raw):
        length, shift = 0, 0
        while True:
            if pos >= len(raw) or shift > 63:
                raise cases.CaseFailed("truncated length prefix in the identify stream")
            byte = raw[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if pos + length > len(raw):
            raise cases.CaseFailed("truncated identify message")
        msg = Identify()
        msg.ParseFromString(raw[pos : pos + length])
        merged.MergeFrom(msg)
        pos += length
    return merged


async def dial(args: argparse.Namespace) -> int:
    target = multiaddr.Multiaddr(args.target)
    info = info_from_p2p_addr(target)
    remote: ID = info.peer_id
    host = make_host(args)
    async with host.run(listen_addrs=[multiaddr.Multiaddr(f"/ip4/{args.ip}/tcp/0")]):

        async def connect() -> cases.Report:
            start = time.perf_counter()
            await host.connect(info)
            ms = (time.perf_counter() - start) * 1000
            return {"ok": True, "detail": "host.connect()", "ms": round(ms, 3)}

        async def identify() -> cases.Report:
            stream = await host.new_stream(remote, [IDENTIFY])
            raw = bytearray()
            try:
                while True:
                    data = await read_some(stream, 4096)
                    if not data:
                        break
                    raw += data
                    if len(raw) > IDENTIFY_LIMIT:
                        raise cases.CaseFailed(f"identify answer longer than {IDENTIFY_LIMIT} bytes")
            finally:
                await PyCaseStream(stream).close()
            msg = decode_identify(bytes(raw))
            record = "absent"
            record_addrs: list[str] = []
            if msg.HasField("signedPeerRecord"):
                try:
                    _, peer_record = consume_envelope(msg.signedPeerRecord, PEER_RECORD_DOMAIN)
                    if peer_record.peer_id != remote:
                        record = "invalid: record is for another peer"
                    else:
                        record = "verified"
                        record_addrs = [str(a) for a in peer_record.addrs]
                except Exception as exc:
                    record = f"invalid: {type(exc).__name__}: {exc}"
            return {
                "ok": bool(msg.protocols) and record in ("verified", "absent"),
                "detail": "identify stream parsed with py-libp2p's protobuf; record checked by consume_envelope",
                "agent_version": msg.agent_version,
                "protocol_version": msg.protocol_version,
                "protocols": list(msg.protocols),
                "listen_addrs": [str(multiaddr.Multiaddr(a)) for a in msg.listen_addrs],
                "observed_addr": str(multiaddr.Multiaddr(msg.observed_addr)) if msg.observed_addr else "",
                "signed_peer_record": record,
                "signed_peer_record_addrs": record_addrs,
            }

        async def ping() -> cases.Report:
            rtts = [rtt async for rtt in PingService(host).ping_iter(remote, 1)]
            return {"ok": True, "detail": "py-libp2p PingService (integer ms)", "rtt_ms": rtts[0]}

        async def open_echo() -> cases.CaseStream:
            return PyCaseStream(await host.new_stream(remote, [TProtocol(cases.ECHO)]))

        hooks = cases.DialHooks(
            connect=connect,
            identify=identify,
            ping=ping,
            open_echo=open_echo,
            # py-libp2p's mplex stream holds one lock across read() and write(): a pending read blocks
            # every write on that stream, so a streaming echo (read while writing) deadlocks
            concurrent_read_write=args.muxer != "mplex",
            reset_detail=f"stream.reset() sent a {args.muxer} reset",
        )
        results = await cases.run_dial_cases(hooks, args.case_timeout)
        cases.emit(results)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = cases.parse_args(argv)
    cases.setup_logging()
    reason = unsupported_reason(args)
    if reason is not None:
        return cases.unsupported(reason)
    if args.mode == "listen":
        return trio.run(listen, args)
    return trio.run(cases.until_sigterm, lambda: dial(args))


if __name__ == "__main__":
    sys.exit(main())
