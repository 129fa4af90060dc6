"""Check the py peer's workarounds for py-libp2p 0.8.1 QUIC bugs, without a network.

    interop/.peers/py-venv/bin/python interop/py/check_quic_workarounds.py

Drives py-libp2p's own ``QUICStream`` (on a stand-in connection: no sockets, no aioquic) through the
interleavings that break it, once as py-libp2p does it and once through the peer's workaround, and
prints one JSON object: ``{check: {"py_libp2p": what py-libp2p does, "peer": what the peer does,
"ok": the peer got it right}}``. Exit status 0 when every check is ok. Run by
interop/tests/test_py_quic_workarounds.py.
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))  # the repo root

import trio
import trio.testing
from libp2p.network.stream.exceptions import StreamReset
from libp2p.network.stream.net_stream import NetStream
from libp2p.transport.quic.config import QUICTransportConfig
from libp2p.transport.quic.stream import QUICStream, StreamDirection

from interop.py import peer

Check = dict[str, Any]


async def _no_io() -> None:
    await trio.lowlevel.checkpoint()


def new_stream(direction: StreamDirection) -> QUICStream:
    """A py-libp2p QUICStream on a connection that sends nothing."""
    quic = types.SimpleNamespace(reset_stream=lambda *args: None, send_stream_data=lambda *args, **kw: None)
    conn = types.SimpleNamespace(
        _transport=types.SimpleNamespace(_config=QUICTransportConfig()),
        _quic=quic,
        _transmit=_no_io,
        _signal_activity=lambda: None,
        _remove_stream=lambda stream_id: None,
        remote_peer_id=lambda: "remote",
        peer_id="remote",
    )
    return QUICStream(cast(Any, conn), 4, direction, ("127.0.0.1", 4001))


def net(stream: QUICStream) -> NetStream:
    return NetStream(stream, None, None)


async def read_all(read: Callable[[], Awaitable[bytes]]) -> tuple[bytes, str]:
    """Read to the end; (bytes, how it ended)."""
    got = bytearray()
    try:
        while True:
            data = await read()
            if not data:
                return bytes(got), "eof"
            got += data
    except Exception as exc:
        return bytes(got), type(exc).__name__


async def eof_race(through_peer: bool) -> tuple[int, int]:
    """The last data and FIN arrive while read() waits for its state lock: (runs that lost bytes, runs)."""
    lost = runs = 0
    for ticks in range(8):
        for _ in range(10):
            stream = new_stream(StreamDirection.INBOUND)
            await stream.handle_data_received(b"a" * 10, False)
            ns = net(stream)
            result: list[bytes] = []

            async def reader() -> None:
                if through_peer:
                    got, _ = await read_all(lambda: peer.read_some(ns, 5))
                else:
                    got, _ = await read_all(lambda: stream.read(5))
                result.append(got)

            async def feeder() -> None:
                for _ in range(ticks):
                    await trio.lowlevel.checkpoint()
                await stream.handle_data_received(b"b" * 7, True)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                nursery.start_soon(feeder)
            runs += 1
            lost += len(result[0]) != 17
    return lost, runs


async def check_eof_race() -> Check:
    lost_plain, runs = await eof_race(through_peer=False)
    lost_peer, _ = await eof_race(through_peer=True)
    return {
        "py_libp2p": f"QUICStream.read() lost the stream's tail in {lost_plain}/{runs} interleavings",
        "peer": f"read_some lost it in {lost_peer}/{runs}",
        "ok": lost_peer == 0,
    }


async def check_eof_after_half_close() -> Check:
    async def run(through_peer: bool) -> tuple[bytes, str]:
        stream = new_stream(StreamDirection.OUTBOUND)
        await stream.close_write()
        await stream.handle_data_received(b"echo", True)
        ns = net(stream)
        if through_peer:
            return await read_all(lambda: peer.read_some(ns, 100))
        return await read_all(lambda: ns.read(100))

    plain = await run(through_peer=False)
    patched = await run(through_peer=True)
    return {
        "py_libp2p": f"after our FIN and theirs, NetStream.read() gave {plain[0]!r}, then {plain[1]}",
        "peer": f"read_some gave {patched[0]!r}, then {patched[1]}",
        "ok": patched == (b"echo", "eof"),
    }


async def check_reset_still_raises() -> Check:
    stream = new_stream(StreamDirection.OUTBOUND)
    await stream.handle_data_received(b"x", False)
    await stream.handle_reset(0)
    ns = net(stream)
    got, end = await read_all(lambda: peer.read_some(ns, 100))
    return {
        "py_libp2p": "a received RESET_STREAM puts the stream in state RESET",
        "peer": f"read_some gave {got!r}, then {end}",
        "ok": end == StreamReset.__name__,
    }


async def first_read_after_stop_sending(patched: bool) -> str:
    """STOP_SENDING arrives, a read starts, then the peer's answer: what that first read returns."""
    stream = new_stream(StreamDirection.OUTBOUND)
    if patched:
        await peer.stop_sending_closes_write_only(stream, 0)
    else:
        await QUICStream.handle_stop_sending(stream, 0)
    outcome: list[str] = []

    async def reader() -> None:
        try:
            outcome.append(repr(await stream.read(100)))
        except Exception as exc:
            outcome.append(type(exc).__name__)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        await stream.handle_data_received(b"answer", True)
    return outcome[0]


async def check_stop_sending_keeps_reading() -> Check:
    plain = await first_read_after_stop_sending(patched=False)
    fixed = await first_read_after_stop_sending(patched=True)
    return {
        "py_libp2p": f"a read on an outbound stream after STOP_SENDING, before the peer's data: {plain}",
        "peer": f"with the patched handler: {fixed}",
        "ok": fixed == repr(b"answer"),
    }


def check_observed_addr() -> Check:
    got = str(peer.quic_observed_addr(("127.0.0.1", 4242)))
    mapped = str(peer.quic_observed_addr(("::ffff:127.0.0.1", 4242)))
    want = "/ip4/127.0.0.1/udp/4242/quic-v1"
    return {
        "py_libp2p": "identify reports /ip4/<host>/tcp/<port> for every connection",
        "peer": f"{got}; IPv4-mapped: {mapped}",
        "ok": got == want and mapped == want,
    }


async def main() -> int:
    results = {
        "eof_race": await check_eof_race(),
        "eof_after_half_close": await check_eof_after_half_close(),
        "reset_still_raises": await check_reset_still_raises(),
        "stop_sending_keeps_reading": await check_stop_sending_keeps_reading(),
        "observed_addr": check_observed_addr(),
    }
    print(json.dumps(results, indent=2))
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(trio.run(main))
