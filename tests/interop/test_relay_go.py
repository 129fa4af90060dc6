"""Circuit relay v2 through a go-libp2p relay (p2pd from hivemind 1.1.12, go-libp2p v0.32; its relay service
is on by default): a mycel listener holds a reservation on the go relay (go's voucher verified, go's
limit announced), a mycel dialer reaches it through the relay, echo both ways; TCP + Noise + yamux on
127.0.0.1.
"""

from __future__ import annotations

import pytest
import trio

from interop.go_peer import own_addr, run_p2pd
from interop.p2pd.identify_check import addr_to_str
from mycel.core.events import ConnectionClosed
from mycel.core.errors import LimitedConnection, MycelError
from mycel.core.framing import read_exactly
from mycel.core.multibase import b58encode
from mycel.core.peer_id import PeerId
from mycel.host import Host, open_host
from mycel.protocols.relay import RelayTransport
from tests.interop.relay_support import echo, mycel_config

pytestmark = [pytest.mark.interop]

ECHO = "/test/echo/1.0.0"
TIMEOUT = 30.0


async def _roundtrip(host: Host, peer: PeerId, payload: bytes) -> bytes:
    stream = await host.new_stream(peer, ECHO, allow_limited=True)
    await stream.send_all(payload)
    await stream.send_eof()
    return await read_exactly(stream, len(payload))


async def test_go_relay_relays_mycel_to_mycel() -> None:
    async with run_p2pd("tcp", "noise", "yamux", "127.0.0.1") as daemon:
        me = await daemon.control.identify()
        tcp_addrs = [a for a in (addr_to_str(x) for x in me.addrs) if own_addr("tcp", "127.0.0.1", a)]
        relay_addr = f"{tcp_addrs[0]}/p2p/{b58encode(daemon.peer_id)}"
        async with open_host(mycel_config(f"{relay_addr}/p2p-circuit")) as a, open_host(mycel_config()) as b:
            a.set_stream_handler(ECHO, echo)
            b.set_stream_handler(ECHO, echo)
            transport = next(t for t in a.transports if isinstance(t, RelayTransport))
            with trio.fail_after(TIMEOUT):
                rsvp = await transport.wait_reserved()
            assert rsvp.voucher_verified  # signed by go with the relay's key, naming us
            assert rsvp.limit is not None  # go's DefaultLimit (the daemon's -relay* flags do not reach it)
            assert rsvp.limit.duration == 120 and rsvp.limit.data == 1 << 17
            circuit = f"{relay_addr}/p2p-circuit/p2p/{a.peer_id}"
            assert any(str(x) == circuit for x in a.addrs)  # advertised
            with trio.fail_after(TIMEOUT):
                conn = await b.connect(circuit)
                assert conn.limited and conn.remote_peer == a.peer_id
                with pytest.raises(LimitedConnection):
                    await b.new_stream(a.peer_id, ECHO)
                payload = bytes(range(256)) * 200  # 50 KiB each way, within go's 128 KiB
                assert await _roundtrip(b, a.peer_id, payload) == payload
                assert await _roundtrip(a, b.peer_id, b"back through go") == b"back through go"
                # past 128 KiB in one direction go resets the circuit: the connection ends
                with b.subscribe() as events:
                    stream = await b.new_stream(a.peer_id, ECHO, allow_limited=True)
                    with pytest.raises((MycelError, trio.BrokenResourceError, trio.ClosedResourceError)):
                        for _ in range(64):  # 1 MiB at most
                            await stream.send_all(bytes(16384))
                            await read_exactly(stream, 16384)
                    async for event in events:  # the relayed connection itself ends
                        if isinstance(event, ConnectionClosed) and event.connection is conn:
                            break
                assert conn.is_closed


async def test_go_dials_mycel_through_a_mycel_relay() -> None:
    """go as a relay client: p2pd connects to a mycel listener through mycel's relay (hop CONNECT, then go's
    Noise + yamux over the relayed stream) and echoes on a stream of that limited connection."""
    from multiaddr import Multiaddr

    from mycel.protocols.relay import CircuitRelay
    async with open_host(mycel_config(relay=True)) as relay:
        relay_addr = str(relay.addrs[0])
        async with open_host(mycel_config(f"{relay_addr}/p2p-circuit")) as a:
            a.set_stream_handler(ECHO, echo)
            transport = next(t for t in a.transports if isinstance(t, RelayTransport))
            with trio.fail_after(TIMEOUT):
                await transport.wait_reserved()
            async with run_p2pd("tcp", "noise", "yamux", "127.0.0.1") as daemon:
                go_peer = b58encode(daemon.peer_id)
                with trio.fail_after(TIMEOUT):
                    circuit = Multiaddr(f"{relay_addr}/p2p-circuit")
                    await daemon.control.connect(a.peer_id.to_bytes(), [circuit.to_bytes()])
                    relayed = [c for c in a.connections() if str(c.remote_peer) == go_peer]
                    assert relayed and all(c.limited for c in relayed)
                    stream = await daemon.control.stream_open(a.peer_id.to_bytes(), [ECHO])
                    await stream.send_all(b"hello from go")  # (no EOF: p2pd would close its socket both ways)
                    got = bytearray()
                    while len(got) < 13 and (data := await stream.receive_some(100)):
                        got += data
                    assert bytes(got) == b"hello from go"
                assert relay.service(CircuitRelay).core.circuit_count == 1
