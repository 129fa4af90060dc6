"""Dial a multiaddr (with /p2p) and ping it once, within 3 s: ``python tests/nat/dial_probe.py <addr>``;
prints ``{"ok": true, "rtt_ms": …}`` or ``{"ok": false, "error": …}``."""

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
from mycel.transports.tcp import TCP


async def main(addr: str) -> None:
    cfg = HostConfig(transports=[TCP(dial_timeout=3)], security=[Noise()], muxers=[Yamux()], services=[Identify(), Ping()])
    async with open_host(cfg) as host:
        try:
            with trio.fail_after(3):
                conn = await host.connect(addr)
                rtts = await host.service(Ping).ping(conn.remote_peer)
        except (MycelError, trio.TooSlowError, OSError) as exc:
            print(json.dumps({"ok": False, "error": repr(exc)}), flush=True)
        else:
            print(json.dumps({"ok": True, "rtt_ms": rtts[0] * 1000}), flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
