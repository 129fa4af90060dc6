"""Circuit relay v2 with js-libp2p 3.x (``@libp2p/circuit-relay-v2`` 4.2.13, ``interop/js/relay.mjs``), TCP +
Noise + yamux on 127.0.0.1:

* a js relay relays mycel <-> mycel: a mycel listener holds a reservation on it (its voucher verified), a
  mycel dialer reaches it through it, echo both ways on the limited connection;
* mycel's relay serves js clients: a js listener reserves on it and a mycel dialer reaches the js peer
  through it; a js dialer reaches a mycel listener through it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from interop.peers import INTEROP_DIR
from mycel.core.events import ConnectionOpened, Event
from mycel.core.framing import read_exactly
from mycel.host import EventSubscription, Host, open_host
from mycel.protocols.relay import CircuitRelay, RelayTransport
from tests.interop.relay_support import echo, mycel_config, peer_program

pytestmark = [pytest.mark.interop]

NODE = INTEROP_DIR / "js" / "node_modules" / "node" / "bin" / "node"
SCRIPT = INTEROP_DIR / "js" / "relay.mjs"
ECHO = "/echo/1.0.0"
TIMEOUT = 30.0


@contextlib.asynccontextmanager
async def js_peer(*args: str) -> AsyncIterator[dict[str, Any]]:
    """Run ``relay.mjs args``; yield its ready line; stop it (by PID) on exit."""
    async with peer_program([str(NODE), str(SCRIPT), *args], cwd=str(INTEROP_DIR / "js")) as line:
        yield line


async def js_dial(target: str, size: int) -> dict[str, Any]:
    """``relay.mjs dial target size``: its result line."""
    async with js_peer("dial", target, str(size)) as result:
        return result


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
        async with open_host(mycel_config(f"{relay_addr}/p2p-circuit")) as a:
            a.set_stream_handler(ECHO, echo)
            with trio.fail_after(TIMEOUT):
                rsvp = await _relay_transport(a).wait_reserved()
            assert rsvp.voucher_verified  # js signs vouchers with its key; we checked it
            assert str(rsvp.relay) == relay["peer_id"]
            async with open_host(mycel_config()) as b:
                b.set_stream_handler(ECHO, echo)
                with trio.fail_after(TIMEOUT):
                    conn = await b.connect(f"{relay_addr}/p2p-circuit/p2p/{a.peer_id}")
                    assert conn.limited and conn.limit is not None and conn.limit.data == 1 << 17
                    assert await _echo_roundtrip(b, a.peer_id, b"mycel to mycel via js") == b"mycel to mycel via js"
                    assert await _echo_roundtrip(a, b.peer_id, b"and back") == b"and back"


async def test_mycel_relay_serves_js_listener() -> None:
    async with open_host(mycel_config(relay=True)) as relay:
        relay_addr = str(relay.addrs[0])
        async with js_peer("listen", relay_addr) as js:
            assert any(a.startswith(f"{relay_addr}/p2p-circuit") for a in js["addrs"])
            assert relay.service(CircuitRelay).core.reservation_count == 1
            async with open_host(mycel_config()) as b:
                with trio.fail_after(TIMEOUT):
                    conn = await b.connect(f"{relay_addr}/p2p-circuit/p2p/{js['peer_id']}")
                    assert conn.limited
                    payload = bytes(range(256)) * 100
                    assert await _echo_roundtrip(b, conn.remote_peer, payload) == payload
                assert relay.service(CircuitRelay).bytes_relayed >= 2 * len(payload)


async def test_js_dialer_through_mycel_relay() -> None:
    async with open_host(mycel_config(relay=True)) as relay:
        relay_addr = str(relay.addrs[0])
        async with open_host(mycel_config(f"{relay_addr}/p2p-circuit")) as a:
            a.set_stream_handler(ECHO, echo)
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
