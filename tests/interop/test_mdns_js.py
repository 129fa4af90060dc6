"""mDNS interop: a js-libp2p peer with ``@libp2p/mdns`` (12.0.32, pinned in interop/js) and a mycel host,
each in a network namespace on one bridge, find each other with no address given — every address
each one announces parsed by the other — and connect.

js announces every private address it has, loopback included, as one TXT record per address in the
answer section; mycel announces its LAN addresses as one TXT record of several strings in the
additionals, with SRV and A records (what go needs). The mycel host listens twice so that it announces
two addresses (py-libp2p's ``dnsaddr2=`` defect loses every address after the first: not here).
"""

from __future__ import annotations

import sys

import trio

from interop.peers import INTEROP_DIR
from tests.integration.test_mdns_netns import MYCEL_NODE, WAIT, mdns_lan

NODE = str(INTEROP_DIR / "js" / "node_modules" / "node" / "bin" / "node")
JS_PEER = [NODE, str(INTEROP_DIR / "js" / "mdns-peer.mjs"), "--interval", "2000"]


def _strip(addrs: list[str]) -> set[str]:
    return {a.rsplit("/p2p/", 1)[0] for a in addrs}


async def test_js_and_mycel_find_each_other_with_every_address() -> None:
    mycel_cmd = [sys.executable, "-u", *MYCEL_NODE, "--listen", "/ip4/0.0.0.0/tcp/0", "--listen", "/ip4/0.0.0.0/tcp/0"]
    async with mdns_lan(2, "10.77.3.0/24", [JS_PEER, mycel_cmd]) as (lan, (js, mycel), _):
        js_announced = _strip(js.ready["mdns_addrs"])  # its LAN and its loopback address
        assert len(js_announced) >= 2 and any(a.startswith(f"/ip4/{lan.ips[0]}/") for a in js_announced)
        mycel_announced = _strip(mycel.ready["addrs"])  # two TCP listeners on its LAN address
        assert len(mycel_announced) == 2 and all(a.startswith(f"/ip4/{lan.ips[1]}/tcp/") for a in mycel_announced)
        with trio.fail_after(WAIT):
            # each parsed every address the other announced (a response sent while js was still adding
            # addresses may come first: the later one with all of them is what must arrive)
            await mycel.until(lambda: set(mycel.found(js.peer) or []) == js_announced)
            await js.until(lambda: set(js.found(mycel.peer) or []) == mycel_announced)
            await mycel.until(lambda: js.peer in mycel.connected())
            await js.until(lambda: mycel.peer in js.connected())
