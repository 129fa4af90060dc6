"""The py-libp2p 0.8.1 pubsub interop peer (contract: ``interop/pubsub_contract.py``, README "Pubsub").

    interop/.peers/py-venv/bin/python interop/py/pubsub_peer.py pubsub --router gossipsub|floodsub

TCP + Noise + yamux on 127.0.0.1, the host from ``peer.py`` (one security, one muxer, one connection per
peer). Routers, as py-libp2p 0.8.1 ships them, except:

* GossipSub has no default protocol list (``protocols`` is a required argument): we pass every
  protocol id py-libp2p defines, newest first: ``/meshsub/2.0.0``, ``/meshsub/1.4.0`` (not in the
  specs), ``/meshsub/1.3.0``, ``/meshsub/1.2.0``, ``/meshsub/1.1.0``, ``/meshsub/1.0.0``, and
  ``/floodsub/1.0.0``, which its GossipSub handles (floodsub peers get every message) and which go's
  and js's gossipsub also serve, so that a floodsub-only peer can talk to it.
* D=6, D_lo=5, D_hi=12 (go's values; GossipSub has no defaults for them either) and a 1 s heartbeat:
  the constructor's default heartbeat_interval is 120 s, which would keep a mesh from forming for two
  minutes (go and js beat every second). Everything else is GossipSub's default.
* FloodSub gets ``/floodsub/1.0.0``.

``received_from`` comes from a topic validator: py-libp2p calls it with the forwarding peer once per
message id, before the message reaches the subscription.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))  # the repo root, for interop.*

import multiaddr
import trio
from libp2p.abc import IHost, ISubscriptionAPI
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub import floodsub, gossipsub
from libp2p.pubsub.floodsub import FloodSub
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from interop import pubsub_contract as contract
from interop.py.peer import make_host, own_addr

log = logging.getLogger("mycel.interop.py_pubsub")

GOSSIPSUB_PROTOCOLS = [
    gossipsub.PROTOCOL_ID_V20,
    gossipsub.PROTOCOL_ID_V14,
    gossipsub.PROTOCOL_ID_V13,
    gossipsub.PROTOCOL_ID_V12,
    gossipsub.PROTOCOL_ID_V11,
    gossipsub.PROTOCOL_ID,
    floodsub.PROTOCOL_ID,
]
FLOODSUB_PROTOCOLS = [floodsub.PROTOCOL_ID]
HEARTBEAT_INTERVAL = 1  # seconds; py-libp2p's GossipSub default is 120
FORWARDERS_KEPT = 10_000  # message id -> forwarding peer, for received_from (oldest dropped)


def make_router(name: str) -> GossipSub | FloodSub:
    if name == "floodsub":
        return FloodSub(protocols=FLOODSUB_PROTOCOLS)
    return GossipSub(
        protocols=GOSSIPSUB_PROTOCOLS,
        degree=6,
        degree_low=5,
        degree_high=12,
        heartbeat_interval=HEARTBEAT_INTERVAL,
    )


class PyPubsubNode:
    """The contract's commands over one py-libp2p host + Pubsub."""

    def __init__(self, host: IHost, pubsub: Pubsub, router: GossipSub | FloodSub, nursery: trio.Nursery) -> None:
        self.host = host
        self.pubsub = pubsub
        self.router = router
        self.nursery = nursery
        self.me = host.get_id()
        self.subscriptions: dict[str, ISubscriptionAPI] = {}
        self.forwarders: OrderedDict[bytes, ID] = OrderedDict()

    def _note_forwarder(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """Topic validator: remember who forwarded each message to us; accept everything."""
        self.forwarders[msg.from_id + msg.seqno] = forwarder
        while len(self.forwarders) > FORWARDERS_KEPT:
            self.forwarders.popitem(last=False)
        return True

    async def connect(self, addr: str) -> None:
        await self.host.connect(info_from_p2p_addr(multiaddr.Multiaddr(addr)))

    async def subscribe(self, topic: str) -> None:
        if topic in self.subscriptions:
            return
        self.pubsub.set_topic_validator(topic, self._note_forwarder, False)
        subscription = await self.pubsub.subscribe(topic)
        self.subscriptions[topic] = subscription
        self.nursery.start_soon(self._deliver, topic, subscription)

    async def _deliver(self, topic: str, subscription: ISubscriptionAPI) -> None:
        while True:
            msg = await subscription.get()
            source = ID(msg.from_id) if msg.from_id else None
            if source == self.me:
                continue  # py-libp2p hands our own published messages to our subscription
            forwarder = self.forwarders.pop(msg.from_id + msg.seqno, None)
            contract.emit_message(
                topic,
                msg.data,
                str(source) if source is not None else None,
                msg.seqno if msg.HasField("seqno") else None,
                str(forwarder) if forwarder is not None else None,
            )

    async def publish(self, topic: str, data: bytes) -> dict[str, Any]:
        await self.pubsub.publish(topic, data)
        return {}

    async def peers(self, topic: str) -> list[str]:
        return [str(p) for p in self.pubsub.peer_topics.get(topic, set())]

    def negotiated(self) -> dict[str, str]:
        return {str(peer): str(protocol) for peer, protocol in self.router.peer_protocol.items()}

    async def mesh(self, topic: str) -> list[str]:
        if not isinstance(self.router, GossipSub):
            raise contract.Unsupported("floodsub has no mesh")
        return [str(p) for p in self.router.mesh.get(topic, set())]


async def run(args: argparse.Namespace) -> int:
    host_args = argparse.Namespace(transport="tcp", security="noise", muxer="yamux", ip=args.ip)
    host = make_host(host_args)
    router = make_router(args.router)
    pubsub = Pubsub(host, router)
    listen = multiaddr.Multiaddr(f"/ip4/{args.ip}/tcp/0")
    async with host.run(listen_addrs=[listen]), trio.open_nursery() as nursery:
        async with background_trio_service(pubsub):
            if isinstance(router, GossipSub):
                async with background_trio_service(router):
                    await serve(host, pubsub, router, host_args, nursery)
            else:
                await serve(host, pubsub, router, host_args, nursery)
        nursery.cancel_scope.cancel()
    return 0


async def serve(
    host: IHost, pubsub: Pubsub, router: GossipSub | FloodSub, host_args: argparse.Namespace, nursery: trio.Nursery
) -> None:
    await pubsub.wait_until_ready()
    peer = str(host.get_id())
    addrs = []
    for addr in host.get_addrs():
        text = str(addr)
        if own_addr(host_args, text):
            addrs.append(text if "/p2p/" in text else f"{text}/p2p/{peer}")
    protocols: list[TProtocol] = list(router.get_protocols())
    contract.emit({"peer_id": peer, "addrs": addrs, "protocols": protocols})
    await contract.serve_commands(PyPubsubNode(host, pubsub, router, nursery))


if __name__ == "__main__":
    sys.exit(contract.main(run))
