"""AutoNAT v1 between mycel and py-libp2p 0.8.1 (``interop/py/autonat_peer.py``: ``AutoNATService``), both
ways, TCP + Noise + yamux on 127.0.0.1 (mycel declares loopback public; py checks only the observed IP).

* mycel asks a py server: py dials back (OK, naming an address of ours), and refuses a request whose
  addresses are a third party's (E_DIAL_REFUSED: not the observed IP).
* py asks a mycel server: mycel dials py back on its listen address (OK), answers E_DIAL_ERROR when py
  listens nowhere (only its observed ephemeral port is tried), and never dials a third party py names.

Note: py 0.8.1's server "dials" with ``host.connect``, which reuses the connection the request came on,
so its OK does not prove a new connection reached us; mycel's server always dials a fresh one.
"""

from __future__ import annotations

import pytest
import trio
from multiaddr import Multiaddr

from interop.peers import INTEROP_DIR
from mycel.core.addrs import AddressPolicy
from mycel.host import HostConfig, open_host
from mycel.muxers.yamux import Yamux
from mycel.protocols.autonat import AutoNAT, AutoNATConfig, V1Status
from mycel.protocols.identify import Identify
from mycel.security.noise import Noise
from mycel.transports.tcp import TCP
from tests.interop.relay_support import peer_program

pytestmark = [pytest.mark.interop]

PYTHON = INTEROP_DIR / ".peers" / "py-venv" / "bin" / "python"
PROGRAM = INTEROP_DIR / "py" / "autonat_peer.py"
TIMEOUT = 30.0


def mycel_config(listen: str = "/ip4/127.0.0.1/tcp/0") -> HostConfig:
    """A mycel host on 127.0.0.1 with AutoNAT (rounds only when the test asks), loopback public."""
    return HostConfig(
        transports=[TCP()],
        security=[Noise()],
        muxers=[Yamux()],
        services=[Identify(), AutoNAT(AutoNATConfig(boot_delay=3600, retry_interval=3600))],
        listen=[listen],
        address_policy=AddressPolicy(public_ranges=("127.0.0.0/8",)),
    )


async def test_mycel_asks_a_py_server() -> None:
    async with peer_program([str(PYTHON), str(PROGRAM), "serve"]) as py, open_host(mycel_config()) as m:
        with trio.fail_after(TIMEOUT):
            await m.connect(py["addrs"][0])
            server = next(p for p in m.connected_peers() if str(p) == py["peer_id"])
            await m.service(Identify).wait_identified(server)
            autonat = m.service(AutoNAT)
            response = await autonat.ask_v1(server)
            assert response.status is V1Status.OK, response
            assert response.addr in m.advertised_addrs
            # a third party's address (another IP) is refused by py's observed-IP gate
            refused = await autonat.ask_v1(server, [Multiaddr("/ip4/127.0.0.2/tcp/4001")])
            assert refused.status is V1Status.E_DIAL_REFUSED, refused


async def test_py_asks_a_mycel_server() -> None:
    async with open_host(mycel_config()) as m:
        server = str(m.addrs[0])
        stats = m.service(AutoNAT).stats
        with trio.fail_after(TIMEOUT):
            async with peer_program([str(PYTHON), str(PROGRAM), "ask", server]) as result:
                assert result.get("status") == V1Status.OK, result
                assert result["addr"] and result["addr"].startswith("/ip4/127.0.0.1/tcp/")
            assert stats["served"] == 1 and stats["dial_backs"] == 1
            async with peer_program([str(PYTHON), str(PROGRAM), "ask", server, "--no-listen"]) as result:
                assert result.get("status") == V1Status.E_DIAL_ERROR, result
            async with open_host(mycel_config("/ip4/127.0.0.2/tcp/0")) as third:
                argv = [str(PYTHON), str(PROGRAM), "ask", server, "--addr", str(third.advertised_addrs[0])]
                async with peer_program(argv) as result:
                    assert result.get("status") == V1Status.E_DIAL_ERROR, result  # its observed port only
                assert not third.connections()
            assert stats["dial_backs"] == 1
