"""Circuit relay v2 through a py-libp2p 0.8.1 relay (``interop/py/relay_peer.py``: ``CircuitV2Protocol`` with
hop on, py's default limits): a mycel listener reserves on it (py's voucher checked), a mycel dialer reaches
it through the relay, echo both ways; TCP + Noise + yamux on 127.0.0.1."""

from __future__ import annotations

import pytest
import trio

from interop.peers import INTEROP_DIR
from mycel.core.framing import read_exactly
from mycel.host import open_host
from mycel.protocols.relay import RelayTransport
from tests.interop.relay_support import echo, mycel_config, peer_program

pytestmark = [pytest.mark.interop]

PYTHON = INTEROP_DIR / ".peers" / "py-venv" / "bin" / "python"
PROGRAM = INTEROP_DIR / "py" / "relay_peer.py"
ECHO = "/test/echo/1.0.0"
PY_ECHO = "/echo/1.0.0"  # what relay_peer.py dial speaks
TIMEOUT = 30.0


async def test_py_relay_relays_mycel_to_mycel() -> None:
    async with peer_program([str(PYTHON), str(PROGRAM), "relay"]) as relay:
        relay_addr = relay["addrs"][0]
        async with open_host(mycel_config(f"{relay_addr}/p2p-circuit")) as a, open_host(mycel_config()) as b:
            a.set_stream_handler(ECHO, echo)
            b.set_stream_handler(ECHO, echo)
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


async def test_py_dialer_through_a_mycel_relay() -> None:
    """py-libp2p's CircuitV2Transport reaches a mycel listener through mycel's relay and echoes on it."""
    async with open_host(mycel_config(relay=True)) as relay:
        relay_addr = str(relay.addrs[0])
        async with open_host(mycel_config(f"{relay_addr}/p2p-circuit")) as a:
            a.set_stream_handler(PY_ECHO, echo)
            transport = next(t for t in a.transports if isinstance(t, RelayTransport))
            with trio.fail_after(TIMEOUT):
                await transport.wait_reserved()
                argv = [str(PYTHON), str(PROGRAM), "dial", f"{relay_addr}/p2p-circuit/p2p/{a.peer_id}", "20000"]
                async with peer_program(argv) as result:
                    assert result.get("ok"), result
                    assert result["bytes"] == 20000
                    relayed = [c for c in a.connections() if str(c.remote_peer) == result["peer_id"]]
                    assert relayed and all(c.limited for c in relayed)
