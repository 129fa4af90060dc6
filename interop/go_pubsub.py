"""The go-libp2p pubsub interop peer: p2pd ``-pubsub`` driven through the daemon control protocol.

    .venv/bin/python interop/go_pubsub.py pubsub --router gossipsub|floodsub

Contract: ``interop/pubsub_contract.py`` (README "Pubsub"). p2pd (hivemind 1.1.12's build of
go-libp2p-daemon, with go-libp2p-pubsub v0.10.0) runs with TCP + Noise + yamux on 127.0.0.1 and
``-pubsub -pubsubRouter <router>``, all pubsub options at their defaults: messages signed, signatures
required (StrictSign), gossipsub D=6/5/12, heartbeat 1 s after 100 ms. Each ``subscribe`` opens a
control connection of its own, which then streams the topic's PSMessages.

What the control protocol cannot tell, this peer cannot either:

* ``mesh`` answers ``unsupported`` (PSRequest has GET_TOPICS, LIST_PEERS, PUBLISH, SUBSCRIBE only).
* ``received_from`` is always null (a PSMessage carries the author, not the forwarding peer), and
  ``peers`` cannot say which pubsub protocol go speaks with each peer.
* ``protocols`` in the ready line is go-libp2p-pubsub v0.10.0's list for the router, not read from the
  daemon (which has no such query); js's identify of this peer confirms it (README).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio

from interop import pubsub_contract as contract
from interop.go_peer import P2PD, own_addr, run_p2pd, split_target
from interop.p2pd.client import ControlClient, PubsubSubscription
from interop.p2pd.identify_check import addr_to_str
from mycel.core.multibase import b58encode

log = logging.getLogger("mycel.interop.go_pubsub")

# go-libp2p-pubsub v0.10.0: GossipSubDefaultProtocols and FloodSubID
PROTOCOLS = {
    "gossipsub": ["/meshsub/1.1.0", "/meshsub/1.0.0", "/floodsub/1.0.0"],
    "floodsub": ["/floodsub/1.0.0"],
}
CONNECT_TIMEOUT = 30  # seconds, passed to the daemon's CONNECT


class GoPubsubNode:
    """The contract's commands over one p2pd's control socket."""

    def __init__(self, control: ControlClient, peer_id: bytes, nursery: trio.Nursery) -> None:
        self.control = control
        self.peer_id = peer_id
        self.nursery = nursery
        self.subscriptions: dict[str, PubsubSubscription] = {}
        self._subscribing: dict[str, trio.Lock] = {}

    async def connect(self, addr: str) -> None:
        try:
            peer_id, binary = split_target(addr)
        except ValueError as exc:
            raise contract.CommandError(str(exc)) from exc
        await self.control.connect(peer_id, [binary], timeout=CONNECT_TIMEOUT)

    async def subscribe(self, topic: str) -> None:
        async with self._subscribing.setdefault(topic, trio.Lock()):
            if topic in self.subscriptions:
                return
            subscription = await self.control.pubsub_subscribe(topic)
            self.subscriptions[topic] = subscription
            self.nursery.start_soon(self._deliver, subscription)

    async def _deliver(self, subscription: PubsubSubscription) -> None:
        try:
            while (msg := await subscription.receive()) is not None:
                if msg.source == self.peer_id:
                    continue  # go-libp2p-pubsub hands our own published messages to our subscription
                contract.emit_message(
                    subscription.topic,
                    msg.data,
                    b58encode(msg.source) if msg.source else None,
                    msg.seqno or None,
                    None,
                )
            log.warning("p2pd closed the subscription to %r", subscription.topic)
        finally:
            self.subscriptions.pop(subscription.topic, None)
            with trio.CancelScope(shield=True):
                await subscription.aclose()

    async def publish(self, topic: str, data: bytes) -> dict[str, Any]:
        await self.control.pubsub_publish(topic, data)
        return {}

    async def peers(self, topic: str) -> list[str]:
        return [b58encode(p) for p in await self.control.pubsub_list_peers(topic)]

    def negotiated(self) -> dict[str, str]:
        return {}  # p2pd does not say which protocol its router speaks with a peer

    async def mesh(self, topic: str) -> list[str]:
        raise contract.Unsupported(
            "p2pd's control protocol cannot list a mesh (PSRequest: GET_TOPICS, LIST_PEERS, PUBLISH, SUBSCRIBE)"
        )


async def run(args: argparse.Namespace) -> int:
    extra = ["-pubsub", "-pubsubRouter", args.router]
    async with run_p2pd("tcp", "noise", "yamux", args.ip, extra) as daemon:
        me = await daemon.control.identify()
        peer = b58encode(daemon.peer_id)
        addrs = [f"{a}/p2p/{peer}" for a in map(addr_to_str, me.addrs) if own_addr("tcp", args.ip, a)]
        async with trio.open_nursery() as nursery:
            contract.emit({"peer_id": peer, "addrs": addrs, "protocols": PROTOCOLS[args.router]})
            await contract.serve_commands(GoPubsubNode(daemon.control, daemon.peer_id, nursery))
            nursery.cancel_scope.cancel()
    return 0


if __name__ == "__main__":
    if not P2PD.exists():
        sys.exit(f"p2pd not found at {P2PD}: run interop/install.sh")
    sys.exit(contract.main(run))
