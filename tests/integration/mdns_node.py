"""A mycel host with MDNS and no peer addresses, for the mDNS tests in network namespaces.

Run as ``python -m tests.integration.mdns_node [--listen MULTIADDR]``; it prints one JSON object a line:
``{"event": "ready", "peer", "name", "addrs", "response_bytes", "opening"}`` once listening and announcing
(``opening``: ``time.monotonic()`` when the host began to open, a clock all namespaces share), then
``connected`` / ``disconnected`` (peer), ``found`` (peer, addrs: what mDNS parsed) and ``lost`` (peer,
reason, discovery_addrs: how many DISCOVERY addresses of it the peerstore still holds) with ``t`` (seconds since start), and ``closed`` (how many of its sockets are still open: 0)
after SIGTERM/SIGINT,
which closes the host (the mDNS service says goodbye) and exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time

import trio

from mycel import MDNS, HostConfig, Identify, Identity, Noise, Ping, Yamux, open_host
from mycel.core.events import PeerConnected, PeerDisconnected, PeerFound
from mycel.discovery.mdns import MdnsPeerLost
from mycel.network.peerstore import AddrSource
from mycel.transports import TCP


def _out(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def main(listen: list[str]) -> None:
    start = time.monotonic()
    config = HostConfig(
        identity=Identity.generate(),
        transports=[TCP()],
        security=[Noise()],
        muxers=[Yamux()],
        services=[Identify(), Ping(), MDNS()],
        listen=listen,
    )
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        opening = time.monotonic()
        async with open_host(config) as host:
            mdns = host.service(MDNS)
            with host.subscribe() as events:
                _out(
                    "ready",
                    peer=str(host.peer_id),
                    name=mdns.core.peer_name,
                    addrs=[str(a) for a in mdns.core.addrs],
                    response_bytes=len(mdns.core.response()),
                    opening=opening,
                )
                # what happened while the host started, before the subscription
                for peer, addrs in mdns.peers().items():
                    _out("found", peer=str(peer), addrs=[str(a) for a in addrs], t=round(time.monotonic() - start, 3))
                for peer in host.connected_peers():
                    _out("connected", peer=str(peer), t=round(time.monotonic() - start, 3))
                async with trio.open_nursery() as nursery:

                    async def watch() -> None:
                        async for ev in events:
                            t = round(time.monotonic() - start, 3)
                            if isinstance(ev, PeerConnected):
                                _out("connected", peer=str(ev.peer), t=t)
                            elif isinstance(ev, PeerDisconnected):
                                _out("disconnected", peer=str(ev.peer), t=t)
                            elif isinstance(ev, PeerFound) and ev.source == "mdns":
                                parsed = mdns.peers().get(ev.peer, ())
                                _out("found", peer=str(ev.peer), addrs=[str(a) for a in parsed], t=t)
                            elif isinstance(ev, MdnsPeerLost):
                                left = [e for e in host.peerstore.addr_entries(ev.peer) if AddrSource.DISCOVERY in e.sources]
                                _out("lost", peer=str(ev.peer), reason=ev.reason, discovery_addrs=len(left), t=t)

                    nursery.start_soon(watch)
                    async for _ in signals:
                        break
                    nursery.cancel_scope.cancel()
                socks = mdns.sockets
        _out("closed", sockets_open=sum(1 for s in socks if s.fileno() != -1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", action="append", default=None)
    parser.add_argument("--verbose", action="store_true", help="mDNS debug logs on stderr")
    args = parser.parse_args()
    if args.verbose:
        logging.basicConfig(level=logging.WARNING, format="%(relativeCreated)d %(name)s %(message)s")
        logging.getLogger("mycel.discovery.mdns").setLevel(logging.DEBUG)
    trio.run(main, args.listen or ["/ip4/0.0.0.0/tcp/0"])
    sys.exit(0)
