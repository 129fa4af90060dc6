"""AutoNAT v1 between mycel and go-libp2p (p2pd from hivemind 1.1.12, go-libp2p v0.32, ``-autonat``), TCP +
Noise + yamux on 127.0.0.1.

go's server dials back public addresses only and refuses a requester whose *observed* address is not public
(loopback here) before dialing anything, so mycel asking go gets a well-formed E_DIAL_REFUSED; a DIAL naming
another peer gets E_BAD_REQUEST. The other way (go's client asking mycel) is not driven: go's client has no
daemon command, starts 15 s after boot, and asks about public addresses only, which p2pd on loopback has not.
"""

from __future__ import annotations

import pytest
import trio

from interop.go_peer import own_addr, run_p2pd
from interop.p2pd.identify_check import addr_to_str
from mycel.core.multibase import b58encode
from mycel.core.peer_id import PeerId
from mycel.host import open_host
from mycel.protocols.autonat import V1_PROTOCOL, AutoNAT, V1Status
from mycel.protocols.autonat.messages import decode_v1_response, encode_v1_request, read_message, write_message
from mycel.protocols.identify import Identify
from tests.interop.test_autonat_py import mycel_config

pytestmark = [pytest.mark.interop]

TIMEOUT = 30.0


async def test_mycel_asks_a_go_server() -> None:
    async with run_p2pd("tcp", "noise", "yamux", "127.0.0.1", ["-autonat"]) as daemon, open_host(mycel_config()) as m:
        me = await daemon.control.identify()
        tcp_addrs = [a for a in (addr_to_str(x) for x in me.addrs) if own_addr("tcp", "127.0.0.1", a)]
        go = PeerId.from_bytes(daemon.peer_id)
        with trio.fail_after(TIMEOUT):
            await m.connect(f"{tcp_addrs[0]}/p2p/{b58encode(daemon.peer_id)}")
            await m.service(Identify).wait_identified(go)
            assert V1_PROTOCOL in m.peerstore.protocols(go)
            response = await m.service(AutoNAT).ask_v1(go)
            assert response.status is V1Status.E_DIAL_REFUSED, response
            stream = await m.new_stream(go, V1_PROTOCOL)
            await write_message(stream, encode_v1_request(go, m.advertised_addrs))
            bad = decode_v1_response(await read_message(stream, 4096))
            assert bad.status is V1Status.E_BAD_REQUEST, bad
