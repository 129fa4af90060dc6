"""A mycel listener for the flood tests, run as its own process (``python -m tests.flood.muxer_listener``).

Listens on 127.0.0.1 (TCP + Noise + yamux/mplex) with the ping and echo services, prints one JSON
line ``{"addr": ..., "pid": ...}`` and runs until its stdin closes. ``--muxer mplex`` puts mplex first; ``--no-trim`` turns malloc_trim off (for the churn measurement).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import trio

from mycel import HostConfig, open_host
from mycel.muxers.mplex import Mplex
from mycel.muxers.yamux import Yamux
from mycel.protocols.echo import Echo
from mycel.protocols.ping import Ping
from mycel.security.noise import Noise
from mycel.transports.tcp import TCP


async def main(muxer: str, trim: bool) -> None:
    yamux, mplex = Yamux(trim_memory=trim), Mplex(trim_memory=trim)
    muxers = [mplex, yamux] if muxer == "mplex" else [yamux, mplex]
    config = HostConfig(
        transports=[TCP()],
        security=[Noise()],
        muxers=muxers,
        listen=["/ip4/127.0.0.1/tcp/0"],
        services=[Ping(), Echo()],
    )
    async with open_host(config) as host:
        addr = f"{host.listen_addrs[0]}/p2p/{host.peer_id}"
        print(json.dumps({"addr": addr, "pid": __import__("os").getpid()}), flush=True)
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--muxer", default="yamux", choices=["yamux", "mplex"])
    parser.add_argument("--no-trim", action="store_true", help="no malloc_trim after connections close")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    trio.run(main, args.muxer, not args.no_trim)
