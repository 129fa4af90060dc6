"""The py-libp2p 0.8.1 interop peer. Run it with the py-libp2p virtualenv's python:

    interop/.peers/py-venv/bin/python interop/py/peer.py listen --transport tcp --security noise --muxer yamux
    interop/.peers/py-venv/bin/python interop/py/peer.py dial --transport tcp --security noise --muxer yamux <maddr>

    interop/.peers/py-venv/bin/python interop/py/peer.py listen --transport quic-v1 --security none --muxer none

Over TCP the host offers exactly the one security protocol and muxer asked for (py-libp2p's default
host would also offer TLS, secio and plaintext, and fall back to either muxer). Over QUIC it runs
py-libp2p's QUICTransport alone (RFC 9000 only, no draft-29), with four py-libp2p 0.8.1 bugs worked
around here: identify's observed address (quic_observed_addr), STOP_SENDING closing the read side
(stop_sending_closes_write_only) and two in QUICStream.read() (read_some).
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
from libp2p.identity.identify import identify as identify_module
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
from libp2p.transport.quic.config import QUICTransportConfig
from libp2p.transport.quic.stream import QUICStream
from libp2p.transport.quic.stream import StreamState as QUICStreamState

from interop import cases

log = logging.getLogger("mycel.interop.py_peer")

IDENTIFY = TProtocol("/ipfs/id/1.0.0")
IDENTIFY_LIMIT = 64 * 1024  # an identify answer longer than this is a failure, not buffered further
# py-libp2p's QUIC default is 1200 (the RFC 9000 minimum); its config suggests 1452 on paths with a
# 1500-byte MTU, which is also what go (quic-go) and mycel use. Fewer packets matter here: py-libp2p's
# QUIC costs CPU per packet and per open stream (aioquic walks every stream for every packet).
QUIC_DATAGRAM_SIZE = 1452
PEER_RECORD_DOMAIN = "libp2p-peer-record"


def unsupported_reason(args: argparse.Namespace) -> str | None:
    if args.ip != "127.0.0.1":
        return "interop peers stay on 127.0.0.1"
    if args.transport == "quic-v1":
        if args.security != "none" or args.muxer != "none":
            return "quic-v1 brings its own security (TLS 1.3) and streams: security and muxer must be none"
        return None
    if args.transport != "tcp":
        return f"transport {args.transport!r}: this py peer offers tcp and quic-v1"
    if args.security not in ("noise", "tls"):
        return f"security {args.security!r}: py-libp2p offers noise and tls here"
    if args.muxer not in ("yamux", "mplex"):
        return f"muxer {args.muxer!r}: py-libp2p offers yamux and mplex"
    return None


def listen_multiaddr(args: argparse.Namespace) -> multiaddr.Multiaddr:
    if args.transport == "quic-v1":
        return multiaddr.Multiaddr(f"/ip4/{args.ip}/udp/0/quic-v1")
    return multiaddr.Multiaddr(f"/ip4/{args.ip}/tcp/0")


def own_addr(args: argparse.Namespace, text: str) -> bool:
    """Whether ``text`` is one of our listen addresses for this transport on ``--ip``."""
    if args.transport == "quic-v1":
        return text.startswith(f"/ip4/{args.ip}/udp/") and "/quic-v1" in text
    return text.startswith(f"/ip4/{args.ip}/tcp/")


def make_host(args: argparse.Namespace) -> IHost:
    key_pair = create_new_key_pair()
    # with more than one connection allowed per peer, every dial waits a fixed 250 ms for a second
    one_per_peer = ConnectionConfig(max_connections_per_peer=1)
    if args.transport == "quic-v1":
        install_quic_fixes()
        # QUICTransportConfig extends ConnectionConfig; new_host merges connection_config into it
        # only with enable_quic=True. Draft-29 off: this peer speaks RFC 9000 /quic-v1 only. Host
        # security and muxer options do not apply (QUIC brings TLS 1.3 and its own streams).
        return new_host(
            key_pair=key_pair,
            listen_addrs=[listen_multiaddr(args)],
            enable_quic=True,
            enable_tcp=False,
            quic_transport_opt=QUICTransportConfig(enable_draft29=False, max_datagram_size=QUIC_DATAGRAM_SIZE),
            connection_config=one_per_peer,
        )
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
        listen_addrs=[listen_multiaddr(args)],
        connection_config=one_per_peer,
    )


def quic_observed_addr(remote: tuple[str, int] | None) -> multiaddr.Multiaddr | None:
    """The observed address of a QUIC connection: ``/ip4/<host>/udp/<port>/quic-v1``.

    py-libp2p 0.8.1's identify handler turns the remote (host, port) of *every* connection into
    ``/ip4/<host>/tcp/<port>`` (``identify._remote_address_to_multiaddr``), so over QUIC it tells the
    remote it was observed on a TCP port. The peer program swaps that helper for this one when it
    runs quic-v1 (its only transport then).
    """
    if remote is None:
        return None
    host, port = remote
    host = host.removeprefix("::ffff:")
    return multiaddr.Multiaddr(f"/{'ip6' if ':' in host else 'ip4'}/{host}/udp/{port}/quic-v1")


async def stop_sending_closes_write_only(self: QUICStream, error_code: int) -> None:
    """``QUICStream.handle_stop_sending`` without py-libp2p 0.8.1's bug.

    STOP_SENDING only ends our *sending* direction. py-libp2p marks an outbound stream CLOSED on it,
    read side included, so a read() that starts before the rest of the peer's data is processed
    raises QUICStreamClosedError (NetStream: StreamReset). mycel and go send STOP_SENDING when they
    close a stream whose FIN they have not read, e.g. right after answering identify, which made
    py's protocol negotiation on that stream fail now and then. As in py-libp2p, we answer with
    RESET_STREAM (RFC 9000 section 3.5).
    """
    self._write_closed = True
    self._backpressure_event.set()  # a writer waiting for capacity sees the closed write side
    async with self._state_lock:
        if self._state is not QUICStreamState.RESET:
            self._state = QUICStreamState.CLOSED if self._read_closed else QUICStreamState.WRITE_CLOSED
    try:
        self._connection._quic.reset_stream(self._stream_id, error_code)
        await self._connection._transmit()
    except Exception as exc:  # the stream or connection is already gone
        log.debug("RESET_STREAM after STOP_SENDING on stream %s: %s", self.stream_id, exc)


def install_quic_fixes() -> None:
    """Patch the two py-libp2p 0.8.1 QUIC bugs that our own reads (read_some) cannot work around."""
    setattr(identify_module, "_remote_address_to_multiaddr", quic_observed_addr)
    setattr(QUICStream, "handle_stop_sending", stop_sending_closes_write_only)


def quic_stream(stream: INetStream) -> QUICStream | None:
    muxed = cast(NetStream, stream).muxed_stream
    return muxed if isinstance(muxed, QUICStream) else None


def quic_read_side_done(quic: QUICStream) -> bool:
    """The remote's FIN arrived and nobody reset the stream (a reset leaves it in state RESET)."""
    return bool(getattr(quic, "_read_closed", False)) and not quic.is_reset()


async def read_some(stream: INetStream, max_bytes: int) -> bytes:
    """``b""`` at EOF (py-libp2p raises StreamEOF on yamux and QUIC and may return b"" on mplex).

    Two py-libp2p 0.8.1 QUIC bugs are worked around here, both in ``QUICStream.read()``, which checks
    its buffer, then waits for its state lock (a checkpoint), then checks the stream's state:

    * the remote's last data and FIN can arrive during that wait; read() then reports EOF while those
      bytes sit in the buffer (the tail of a stream is lost, seen as a short echo). After EOF we
      drain what is left in the buffer.
    * once we have half-closed and the remote's FIN has arrived, the state is CLOSED and read()
      raises QUICStreamClosedError, which NetStream reports as StreamReset (and then keeps raising).
      A stream that was really reset is in state RESET; anything else with the FIN received is EOF.
    """
    try:
        return bytes(await stream.read(max_bytes))
    except StreamEOF:
        pass
    except StreamReset:
        quic = quic_stream(stream)
        if quic is None or not quic_read_side_done(quic):
            raise
    quic = quic_stream(stream)
    if quic is not None and quic_read_side_done(quic) and len(quic._receive_buffer) > 0:
        log.debug("QUIC stream %s: %d bytes left in the buffer at EOF", quic.stream_id, len(quic._receive_buffer))
        return bytes(await quic.read(max_bytes))  # read() returns buffered bytes before any state check
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
    async with host.run(listen_addrs=[listen_multiaddr(args)]):
        host.set_stream_handler(TProtocol(cases.ECHO), echo_handler)
        await PerfService(host).start()
        peer = str(host.get_id())
        addrs = []
        for addr in host.get_addrs():
            text = str(addr)
            if not own_addr(args, text):
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
    async with host.run(listen_addrs=[listen_multiaddr(args)]):

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
