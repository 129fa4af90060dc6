"""Circuit relay v2 through a py-libp2p 0.8.1 relay (``interop/py/relay_peer.py``: ``CircuitV2Protocol`` with
hop on, py's default limits): a mycel listener reserves on it (py's voucher checked), a mycel dialer reaches
it through the relay, echo both ways; TCP + Noise + yamux on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from interop.peers import INTEROP_DIR, REPO_DIR, _stop_process
from mycel.core.abc import MuxedStream
from mycel.core.framing import read_exactly
from mycel.host import HostConfig, open_host
from mycel.muxers.yamux import Yamux
from mycel.protocols.identify import Identify
from mycel.protocols.ping import Ping
from mycel.protocols.relay import RelayTransport
from mycel.security.noise import Noise
from mycel.transports.tcp import TCP

pytestmark = [pytest.mark.interop]

PYTHON = INTEROP_DIR / ".peers" / "py-venv" / "bin" / "python"
PROGRAM = INTEROP_DIR / "py" / "relay_peer.py"
ECHO = "/test/echo/1.0.0"
TIMEOUT = 30.0
LINE_LIMIT = 64 * 1024


async def _echo(stream: MuxedStream) -> None:
    while data := await stream.receive_some(65536):
        await stream.send_all(data)
    await stream.send_eof()


@contextlib.asynccontextmanager
async def py_relay() -> AsyncIterator[dict[str, Any]]:
    proc = await trio.lowlevel.open_process(
        [str(PYTHON), str(PROGRAM), "relay"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=str(REPO_DIR),
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        buf = bytearray()
        with trio.fail_after(TIMEOUT):
            while b"\n" not in buf:
                data = await proc.stdout.receive_some(4096)
                if not data:
                    raise RuntimeError("the py relay exited before it was ready")
                buf += data
                if len(buf) > LINE_LIMIT:
                    raise RuntimeError("py relay line too long")
        yield json.loads(buf.split(b"\n", 1)[0])
    finally:
        await _stop_process(proc)


def _config(*listen: str) -> HostConfig:
    return HostConfig(
        transports=[TCP(), RelayTransport()],
        security=[Noise()],
        muxers=[Yamux()],
        services=[Identify(), Ping()],
        listen=["/ip4/127.0.0.1/tcp/0", *listen],
    )


async def test_py_relay_relays_mycel_to_mycel() -> None:
    async with py_relay() as relay:
        relay_addr = relay["addrs"][0]
        async with open_host(_config(f"{relay_addr}/p2p-circuit")) as a, open_host(_config()) as b:
            a.set_stream_handler(ECHO, _echo)
            b.set_stream_handler(ECHO, _echo)
            transport = next(t for t in a.transports if isinstance(t, RelayTransport))
            with trio.fail_after(TIMEOUT):
                rsvp = await transport.wait_reserved()
            assert str(rsvp.relay) == relay["peer_id"]
            assert rsvp.voucher_verified  # py 0.8.1 signs spec vouchers with the relay's key
            assert rsvp.limit is not None and rsvp.limit.duration == 3600 and rsvp.limit.data == 1 << 30  # py's defaults
            with trio.fail_after(TIMEOUT):
                conn = await b.connect(f"{relay_addr}/p2p-circuit/p2p/{a.peer_id}")
                assert conn.remote_peer == a.peer_id and conn.limited and "p2p-circuit" in str(conn.remote_addr)
                stream = await b.new_stream(a.peer_id, ECHO, allow_limited=True)
                await stream.send_all(b"mycel to mycel via py")
                await stream.send_eof()
                assert await read_exactly(stream, 21) == b"mycel to mycel via py"
