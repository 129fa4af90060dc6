"""The py-libp2p 0.8.1 DHT interop peer (contract: ``interop/dht_contract.py``, README "DHT").

    interop/.peers/py-venv/bin/python interop/py/dht_peer.py dht --mode server|client

TCP + Noise + yamux on 127.0.0.1, the host from ``peer.py`` (one security, one muxer, one connection per
peer), and ``KadDHT(host, DHTMode.SERVER|CLIENT)`` with its defaults: protocol ``/ipfs/kad/1.0.0`` (the
same id as go and js), validators ``pk`` and ``ipns``, ``strict_validation=False`` (a key with no
registered namespace is stored unvalidated), random walk off. It runs as a service
(``background_trio_service``).

What py-libp2p's API makes of the contract:

* ``connect``: ``host.connect`` then ``dht.add_peer`` (py-libp2p adds no peer to its routing table on
  connect; its table fills from inbound DHT requests and lookups).
* ``put`` / ``get``: ``put_value`` and ``get_value`` take the key as a ``str`` and send
  ``key.encode("utf-8")``. A key that is not UTF-8, such as the standard ``/pk/<binary multihash>``,
  cannot be expressed: the command fails ("unsupported: ..."). py's own ``pk`` validator expects
  ``/pk/<hex of the multihash>`` instead (README, DHT quirks).
* ``provide`` / ``find_providers``: the CID string goes to py-libp2p (``parse_cid``: its multihash is
  the DHT key).
* ``closest``: ``peer_routing.find_closest_peers_network``; ``routing_table``: ``get_peer_ids``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))  # the repo root, for interop.*

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.crypto.rsa import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.common import PROTOCOL_ID
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.tools.anyio_service import background_trio_service

from interop import dht_contract as contract
from interop.py.peer import make_host, own_addr

log = logging.getLogger("mycel.interop.py_dht")

QUERY_TIMEOUT = 30.0  # seconds per command that queries the network


def text_key(key: bytes) -> str:
    """The ``str`` py-libp2p's value API wants for ``key`` (it sends ``key.encode("utf-8")``)."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise contract.Unsupported(
            f"py-libp2p's put_value/get_value take a str key sent as UTF-8; {key[:8].hex()}... is not UTF-8"
        ) from exc


class PyDHTNode:
    """The contract's commands over one py-libp2p host + KadDHT."""

    def __init__(self, host: IHost, dht: KadDHT) -> None:
        self.host = host
        self.dht = dht

    async def connect(self, addr: str) -> None:
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        await self.host.connect(info)
        await self.dht.add_peer(info.peer_id)

    async def pk_record(self) -> tuple[bytes, bytes]:
        public = create_new_key_pair(2048).public_key
        return b"/pk/" + ID.from_pubkey(public).to_bytes(), public.serialize()

    async def put(self, key: bytes, value: bytes) -> dict[str, Any]:
        with trio.fail_after(QUERY_TIMEOUT):
            await self.dht.put_value(text_key(key), value)
        return {}

    async def get(self, key: bytes) -> bytes:
        with trio.fail_after(QUERY_TIMEOUT):
            value = await self.dht.get_value(text_key(key))
        if value is None:
            raise contract.CommandError("not found")
        return value

    async def provide(self, cid: str) -> dict[str, Any]:
        with trio.fail_after(QUERY_TIMEOUT):
            ok = await self.dht.provide(cid)
        if not ok:
            raise contract.CommandError("py-libp2p's provide returned False (no peer took the record)")
        return {}

    async def find_providers(self, cid: str, count: int) -> list[str]:
        with trio.fail_after(QUERY_TIMEOUT):
            found = await self.dht.find_providers(cid, count)
        return [str(p.peer_id) for p in found]

    async def find_peer(self, peer_id: str) -> list[str]:
        with trio.fail_after(QUERY_TIMEOUT):
            found = await self.dht.find_peer(ID.from_base58(peer_id))
        if found is None:
            raise contract.CommandError(f"{peer_id} not found")
        return [str(a) for a in found.addrs]

    async def closest(self, key: bytes) -> list[str]:
        with trio.fail_after(QUERY_TIMEOUT):
            peers = await self.dht.peer_routing.find_closest_peers_network(key)
        return [str(p) for p in peers]

    async def routing_table(self) -> list[str]:
        return [str(p) for p in self.dht.routing_table.get_peer_ids()]


async def run(args: argparse.Namespace) -> int:
    host_args = argparse.Namespace(transport="tcp", security="noise", muxer="yamux", ip=args.ip)
    host = make_host(host_args)
    dht = KadDHT(host, DHTMode.SERVER if args.mode == "server" else DHTMode.CLIENT)
    listen = multiaddr.Multiaddr(f"/ip4/{args.ip}/tcp/0")
    async with host.run(listen_addrs=[listen]), background_trio_service(dht):
        peer = str(host.get_id())
        addrs = []
        for addr in host.get_addrs():
            text = str(addr)
            if own_addr(host_args, text):
                addrs.append(text if "/p2p/" in text else f"{text}/p2p/{peer}")
        protocols: list[TProtocol] = [PROTOCOL_ID] if args.mode == "server" else []
        contract.emit({"peer_id": peer, "addrs": addrs, "protocols": protocols, "mode": args.mode})
        await contract.serve_commands(PyDHTNode(host, dht))
    return 0


if __name__ == "__main__":
    sys.exit(contract.main(run))
