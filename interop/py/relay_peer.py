"""The py-libp2p 0.8.1 circuit relay v2 interop peer (``libp2p.relay.circuit_v2``): a relay.

    interop/.peers/py-venv/bin/python interop/py/relay_peer.py relay

TCP + Noise + yamux on 127.0.0.1 (the host from ``peer.py``) running ``CircuitV2Protocol(allow_hop=True)``
with py's default limits. One ready line ``{"peer_id", "addrs": [".../p2p/<id>"]}``; it exits on stdin EOF
or SIGTERM; logs go to stderr. Used by ``tests/interop/test_relay_py.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))  # the repo root, for interop.*

import multiaddr
import trio
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.tools.anyio_service import background_trio_service

from interop import cases
from interop.py.peer import make_host, own_addr


async def run(args: argparse.Namespace) -> int:
    host_args = argparse.Namespace(transport="tcp", security="noise", muxer="yamux", ip=args.ip)
    host = make_host(host_args)
    listen = multiaddr.Multiaddr(f"/ip4/{args.ip}/tcp/0")
    async with host.run(listen_addrs=[listen]):
        relay = CircuitV2Protocol(host, allow_hop=True)
        async with background_trio_service(relay):
            await relay.event_started.wait()
            peer = str(host.get_id())
            addrs = []
            for addr in host.get_addrs():
                text = str(addr)
                if own_addr(host_args, text):
                    addrs.append(text if "/p2p/" in text else f"{text}/p2p/{peer}")
            cases.emit({"peer_id": peer, "addrs": addrs})
            await cases.wait_for_shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="py-libp2p circuit relay v2 interop peer")
    sub = parser.add_subparsers(dest="command", required=True)
    relay = sub.add_parser("relay", help="run a relay until stdin closes")
    relay.add_argument("--ip", default="127.0.0.1")
    args = parser.parse_args(argv)
    cases.setup_logging()
    if args.ip != "127.0.0.1":
        return cases.unsupported("interop peers stay on 127.0.0.1")
    return trio.run(run, args)


if __name__ == "__main__":
    raise SystemExit(main())
