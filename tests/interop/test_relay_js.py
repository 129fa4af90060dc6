"""Circuit relay v2 with js-libp2p 3.x (``@libp2p/circuit-relay-v2`` 4.2.13, ``interop/js/relay.mjs``), TCP +
Noise + yamux on 127.0.0.1:

* a js relay relays mycel <-> mycel: a mycel listener holds a reservation on it (its voucher verified), a
  mycel dialer reaches it through it, echo both ways on the limited connection;
* mycel's relay serves js clients: a js listener reserves on it and a mycel dialer reaches the js peer
  through it; a js dialer reaches a mycel listener through it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from interop.peers import INTEROP_DIR, _stop_process
from mycel.core.abc import MuxedStream
from mycel.core.events import ConnectionOpened, Event
from mycel.core.framing import read_exactly
from mycel.host import EventSubscription, Host, HostConfig, open_host
from mycel.muxers.yamux import Yamux
from mycel.protocols.identify import Identify
from mycel.protocols.ping import Ping
from mycel.protocols.relay import CircuitRelay, RelayTransport
from mycel.security.noise import Noise
from mycel.transports.tcp import TCP

pytestmark = [pytest.mark.interop]

NODE = INTEROP_DIR / "js" / "node_modules" / "node" / "bin" / "node"
SCRIPT = INTEROP_DIR / "js" / "relay.mjs"
ECHO = "/echo/1.0.0"
TIMEOUT = 30.0
LINE_LIMIT = 64 * 1024


async def _echo(stream: MuxedStream) -> None:
    while data := await stream.receive_some(65536):
        await stream.send_all(data)
    await stream.send_eof()


async def _first_line(stream: trio.abc.ReceiveStream) -> dict[str, Any]:
    buf = bytearray()
    while b"\n" not in buf:
        data = await stream.receive_some(4096)
        if not data:
            raise RuntimeError(f"js relay peer exited before its line: {buf.decode(errors='replace')}")
        buf += data
        if len(buf) > LINE_LIMIT:
            raise RuntimeError("js relay peer line too long")
    obj: dict[str, Any] = json.loads(buf.split(b"\n", 1)[0])
    return obj


@contextlib.asynccontextmanager
async def js_peer(*args: str) -> AsyncIterator[dict[str, Any]]:
    """Run ``relay.mjs args``; yield its ready line; close its stdin and stop it (by PID) on exit."""
    proc = await trio.lowlevel.open_process(
        [str(NODE), str(SCRIPT), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=str(INTEROP_DIR / "js"),
        start_new_session=True,  # its own process group, stopped as a whole
    )
    assert proc.stdout is not None
    try:
        with trio.fail_after(TIMEOUT):
            yield await _first_line(proc.stdout)
    finally:
        await _stop_process(proc)  # stdin EOF, SIGTERM, SIGKILL to its group


async def js_dial(target: str, size: int) -> dict[str, Any]:
    """``relay.mjs dial target size``: its result line."""
    async with js_peer("dial", target, str(size)) as result:
        return result


def _config(*, relay: bool = False, listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)) -> HostConfig:
    services = [Identify(), Ping(), CircuitRelay()] if relay else [Identify(), Ping()]
    return HostConfig(
        transports=[TCP(), RelayTransport()], security=[Noise()], muxers=[Yamux()], services=services, listen=listen
    )


def _relay_transport(host: Host) -> RelayTransport:
    return next(t for t in host.transports if isinstance(t, RelayTransport))


async def _echo_roundtrip(host: Host, peer: Any, payload: bytes) -> bytes:
    stream = await host.new_stream(peer, ECHO, allow_limited=True)
    await stream.send_all(payload)
    await stream.send_eof()
    return await read_exactly(stream, len(payload))


async def test_js_relay_relays_mycel_to_mycel() -> None:
    async with js_peer("relay") as relay:
        relay_addr = relay["addrs"][0]
        async with open_host(_config(listen=("/ip4/127.0.0.1/tcp/0", f"{relay_addr}/p2p-circuit"))) as a:
            a.set_stream_handler(ECHO, _echo)
            with trio.fail_after(TIMEOUT):
                rsvp = await _relay_transport(a).wait_reserved()
            assert rsvp.voucher_verified  # js signs vouchers with its key; we checked it
            assert str(rsvp.relay) == relay["peer_id"]
            async with open_host(_config()) as b:
                b.set_stream_handler(ECHO, _echo)
                with trio.fail_after(TIMEOUT):
                    conn = await b.connect(f"{relay_addr}/p2p-circuit/p2p/{a.peer_id}")
                    assert conn.limited and conn.limit is not None and conn.limit.data == 1 << 17
                    assert await _echo_roundtrip(b, a.peer_id, b"mycel to mycel via js") == b"mycel to mycel via js"
                    assert await _echo_roundtrip(a, b.peer_id, b"and back") == b"and back"


async def test_mycel_relay_serves_js_listener() -> None:
    async with open_host(_config(relay=True)) as relay:
        relay_addr = str(relay.addrs[0])
        async with js_peer("listen", relay_addr) as js:
            assert any(a.startswith(f"{relay_addr}/p2p-circuit") for a in js["addrs"])
            assert relay.service(CircuitRelay).core.reservation_count == 1
            async with open_host(_config()) as b:
                with trio.fail_after(TIMEOUT):
                    conn = await b.connect(f"{relay_addr}/p2p-circuit/p2p/{js['peer_id']}")
                    assert conn.limited
                    payload = bytes(range(256)) * 100
                    assert await _echo_roundtrip(b, conn.remote_peer, payload) == payload
                assert relay.service(CircuitRelay).bytes_relayed >= 2 * len(payload)


async def test_js_dialer_through_mycel_relay() -> None:
    async with open_host(_config(relay=True)) as relay:
        relay_addr = str(relay.addrs[0])
        async with open_host(_config(listen=("/ip4/127.0.0.1/tcp/0", f"{relay_addr}/p2p-circuit"))) as a:
            a.set_stream_handler(ECHO, _echo)
            with trio.fail_after(TIMEOUT):
                await _relay_transport(a).wait_reserved()
                with a.subscribe() as events:
                    result = await js_dial(f"{relay_addr}/p2p-circuit/p2p/{a.peer_id}", 20_000)
                    opened = []
                    while (event := _next_nowait(events)) is not None:
                        if isinstance(event, ConnectionOpened):
                            opened.append(event.connection)
            assert result["ok"], result
            assert result["bytes"] == 20_000 and result["limited"] is True
            # js reached us through the relay: the connection we accepted was relayed and limited
            assert [c for c in opened if c.limited and "p2p-circuit" in str(c.remote_addr)]


def _next_nowait(events: EventSubscription) -> Event | None:
    try:
        return events.receive_nowait()
    except trio.WouldBlock:
        return None
