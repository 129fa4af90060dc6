"""What the relay interop tests (``test_relay_*.py``) share: an echo handler, the mycel host config (TCP +
Noise + yamux on 127.0.0.1, with the relay transport), and a peer program run for its first JSON line."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import AsyncIterator, Sequence
from typing import Any

import trio

from interop.peers import REPO_DIR, _stop_process
from mycel.core.abc import MuxedStream
from mycel.host import HostConfig
from mycel.muxers.yamux import Yamux
from mycel.protocols.identify import Identify
from mycel.protocols.ping import Ping
from mycel.protocols.relay import CircuitRelay, RelayTransport
from mycel.security.noise import Noise
from mycel.transports.tcp import TCP

READY_TIMEOUT = 30.0
LINE_LIMIT = 64 * 1024


async def echo(stream: MuxedStream) -> None:
    """Echo until EOF, then half-close."""
    while data := await stream.receive_some(65536):
        await stream.send_all(data)
    await stream.send_eof()


def mycel_config(*listen: str, relay: bool = False) -> HostConfig:
    """A mycel host on 127.0.0.1 with the relay transport, also listening on ``listen`` (e.g. a
    ``.../p2p-circuit`` address to reserve on); ``relay``: it is a relay too."""
    services = [Identify(), Ping(), CircuitRelay()] if relay else [Identify(), Ping()]
    return HostConfig(
        transports=[TCP(), RelayTransport()],
        security=[Noise()],
        muxers=[Yamux()],
        services=services,
        listen=["/ip4/127.0.0.1/tcp/0", *listen],
    )


async def first_line(stream: trio.abc.ReceiveStream) -> dict[str, Any]:
    """The first JSON line a peer program prints."""
    buf = bytearray()
    while b"\n" not in buf:
        data = await stream.receive_some(4096)
        if not data:
            raise RuntimeError(f"the peer program exited before its line: {buf.decode(errors='replace')}")
        buf += data
        if len(buf) > LINE_LIMIT:
            raise RuntimeError("the peer program's line is too long")
    obj: dict[str, Any] = json.loads(buf.split(b"\n", 1)[0])
    return obj


@contextlib.asynccontextmanager
async def peer_program(argv: Sequence[str], cwd: str = str(REPO_DIR)) -> AsyncIterator[dict[str, Any]]:
    """Run ``argv`` in its own process group; yield its first JSON line; stop it (stdin EOF, SIGTERM,
    SIGKILL to the group) on exit, also on failure."""
    proc = await trio.lowlevel.open_process(
        list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=cwd, start_new_session=True
    )
    assert proc.stdout is not None
    try:
        with trio.fail_after(READY_TIMEOUT):
            line = await first_line(proc.stdout)
        yield line
    finally:
        await _stop_process(proc)
