"""Dial each multiaddr given (with /p2p; TCP or QUIC) and ping it once, within 5 s each: ``python
tests/nat/portmap_dial.py <addr>...``; prints one line per address, ``{"addr": …, "ok": true,
"rtt_ms": …, "identified": [the addresses identify announced]}`` or ``{"addr": …, "ok": false, "error": …}``."""

from __future__ import annotations

import json
import sys

import trio

from mycel.core.errors import MycelError
from mycel.host import HostConfig, open_host
from mycel.muxers.yamux import Yamux
from mycel.protocols.identify import Identify
from mycel.protocols.ping import Ping
from mycel.security.noise import Noise
from mycel.transports.quic import QUIC
from mycel.transports.tcp import TCP


async def main(addrs: list[str]) -> None:
    cfg = HostConfig(
        transports=[TCP(dial_timeout=5), QUIC()], security=[Noise()], muxers=[Yamux()], services=[Identify(), Ping()]
    )
    async with open_host(cfg) as host:
        for addr in addrs:
            try:
                with trio.fail_after(5):
                    conn = await host.connect(addr)
                    rtts = await host.service(Ping).ping(conn.remote_peer)
                    await host.service(Identify).wait_identified(conn.remote_peer)
                    seen = [str(a) for a in host.peerstore.addrs(conn.remote_peer)]
                    await conn.aclose()
            except (MycelError, trio.TooSlowError, OSError) as exc:
                print(json.dumps({"addr": addr, "ok": False, "error": repr(exc)}), flush=True)
            else:
                print(json.dumps({"addr": addr, "ok": True, "rtt_ms": rtts[0] * 1000, "identified": seen}), flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
