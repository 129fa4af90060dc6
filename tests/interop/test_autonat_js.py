"""AutoNAT v1 between mycel and js-libp2p (``@libp2p/autonat`` 3.0.28, ``interop/js/autonat.mjs``), both
ways, TCP + Noise + yamux on 127.0.0.1.

js serves and verifies public addresses only (its own ``isPrivate`` list includes loopback and every test
range), so on this machine:

* mycel asks a js server: js parses our DIAL and answers E_DIAL_REFUSED ("no dialable addresses": loopback),
  and E_BAD_REQUEST for a DIAL naming another peer — its answers parse on our side;
* js asks a mycel server: js is given an observed address it counts as public (233.252.0.1, MCAST-TEST-NET,
  which nothing can reach over TCP) and asks as soon as identify shows our AutoNAT protocol; mycel drops that
  address (not the observed IP), dials only js's observed address and answers E_DIAL_ERROR, never
  dialing the announced one.
A js *dial-back* (OK) cannot happen on loopback or in the NAT lab's ranges (js refuses them all).
"""

from __future__ import annotations

import pytest
import trio

from interop.peers import INTEROP_DIR
from mycel.protocols.autonat import AutoNAT, V1Status
from mycel.protocols.autonat.messages import decode_v1_response, encode_v1_request, read_message, write_message
from mycel.protocols.autonat import V1_PROTOCOL
from mycel.protocols.identify import Identify
from mycel.host import open_host
from tests.interop.relay_support import peer_program
from tests.interop.test_autonat_py import mycel_config

pytestmark = [pytest.mark.interop]

NODE = INTEROP_DIR / "js" / "node_modules" / "node" / "bin" / "node"
SCRIPT = INTEROP_DIR / "js" / "autonat.mjs"
TIMEOUT = 30.0
ANNOUNCE = "/ip4/233.252.0.1/tcp/4001"


async def test_mycel_asks_a_js_server() -> None:
    async with peer_program([str(NODE), str(SCRIPT), "serve"], cwd=str(INTEROP_DIR / "js")) as js, open_host(mycel_config()) as m:
        with trio.fail_after(TIMEOUT):
            await m.connect(js["addrs"][0])
            server = next(p for p in m.connected_peers() if str(p) == js["peer_id"])
            await m.service(Identify).wait_identified(server)
            response = await m.service(AutoNAT).ask_v1(server)
            assert response.status is V1Status.E_DIAL_REFUSED, response
            assert "no dialable" in response.text
            # a DIAL naming another peer: js's E_BAD_REQUEST
            stream = await m.new_stream(server, V1_PROTOCOL)
            await write_message(stream, encode_v1_request(server, m.advertised_addrs))
            bad = decode_v1_response(await read_message(stream, 4096))
            assert bad.status is V1Status.E_BAD_REQUEST, bad


async def test_js_asks_a_mycel_server_which_never_dials_the_announced_address() -> None:
    async with open_host(mycel_config()) as m:
        autonat = m.service(AutoNAT)
        with m.subscribe() as events:
            argv = [str(NODE), str(SCRIPT), "ask", str(m.addrs[0]), ANNOUNCE]
            async with peer_program(argv, cwd=str(INTEROP_DIR / "js")):
                with trio.fail_after(TIMEOUT):
                    await autonat.wait_requests(1)
            dialed = []
            while True:
                try:
                    event = events.receive_nowait()
                except trio.WouldBlock:
                    break
                conn = getattr(event, "connection", None)
                if conn is not None:
                    dialed.append(str(conn.remote_addr))
        assert autonat.stats["served"] == 1 and autonat.stats["dial_backs"] == 0  # only the observed port, refused
        assert not [a for a in dialed if "233.252" in a]
