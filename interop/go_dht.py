"""The go-libp2p DHT interop peer: p2pd's Kademlia DHT driven through the daemon control protocol.

    .venv/bin/python interop/go_dht.py dht --mode server|client

Contract: ``interop/dht_contract.py`` (README "DHT"). p2pd (hivemind 1.1.12's build of go-libp2p-daemon,
go-libp2p-kad-dht v0.25.1) runs with TCP + Noise + yamux on 127.0.0.1 and ``-dhtServer`` or ``-dhtClient``
(``-dht`` would be kad-dht's ModeAuto, which stays a client until AutoNAT says the node is public: never on
loopback). No ``-b``: nothing is bootstrapped, the tests connect the peers. Every DHT option is kad-dht's
default: protocol ``/ipfs/kad/1.0.0``, k = 20, α = 10, validators ``pk`` and ``ipns`` only (a key in any other
namespace is refused), no query or routing-table address filters.

What the control protocol cannot do, this peer cannot either:

* ``routing_table`` answers ``unsupported`` (DHTRequest has no such query); ``closest`` is GET_CLOSEST_PEERS.
* ``pk_record``: the daemon cannot make keys. The RSA key comes from mycel's key code (``cryptography``
  underneath); go's DHT then validates the record with its own ``pk`` validator when it is put.
* ``provide`` / ``find_providers`` take the CID as bytes: the string is decoded here (multibase, or base58
  for CIDv0) and go parses the bytes (``cid.Cast``).
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

from interop import dht_contract as contract
from interop.go_peer import P2PD, own_addr, run_p2pd, split_target
from interop.p2pd.client import ControlClient
from interop.p2pd.identify_check import addr_to_str
from mycel.core.keys import RsaPrivateKey
from mycel.core.multibase import b58decode, b58encode, multibase_decode
from mycel.core.peer_id import PeerId

log = logging.getLogger("mycel.interop.go_dht")

CONNECT_TIMEOUT = 30  # seconds, passed to the daemon's CONNECT
QUERY_TIMEOUT = 30  # seconds, passed to every DHT request (the daemon's default is 60)
RSA_BITS = 2048


def cid_bytes(text: str) -> bytes:
    """A CID string as bytes: CIDv0 is a bare base58btc multihash (``Qm...``), CIDv1 is multibase."""
    try:
        if text.startswith("Qm") and len(text) == 46:
            return b58decode(text)
        return multibase_decode(text)
    except ValueError as exc:
        raise contract.CommandError(f"not a CID: {text!r} ({exc})") from exc


class GoDHTNode:
    """The contract's commands over one p2pd's control socket."""

    def __init__(self, control: ControlClient, mode: str) -> None:
        self.control = control
        self.mode = mode

    async def connect(self, addr: str) -> None:
        try:
            peer_id, binary = split_target(addr)
        except ValueError as exc:
            raise contract.CommandError(str(exc)) from exc
        await self.control.connect(peer_id, [binary], timeout=CONNECT_TIMEOUT)

    async def pk_record(self) -> tuple[bytes, bytes]:
        public = RsaPrivateKey.generate(RSA_BITS).public_key
        return b"/pk/" + PeerId.from_public_key(public).to_bytes(), public.to_protobuf()

    async def put(self, key: bytes, value: bytes) -> dict[str, Any]:
        await self.control.dht_put_value(key, value, timeout=QUERY_TIMEOUT)
        return {}

    async def get(self, key: bytes) -> bytes:
        return await self.control.dht_get_value(key, timeout=QUERY_TIMEOUT)

    async def provide(self, cid: str) -> dict[str, Any]:
        await self.control.dht_provide(cid_bytes(cid), timeout=QUERY_TIMEOUT)
        return {}

    async def find_providers(self, cid: str, count: int) -> list[str]:
        found = await self.control.dht_find_providers(cid_bytes(cid), count, timeout=QUERY_TIMEOUT)
        return [b58encode(p.peer_id) for p in found]

    async def find_peer(self, peer_id: str) -> list[str]:
        try:
            raw = b58decode(peer_id)
        except ValueError as exc:
            raise contract.CommandError(f"not a peer id: {peer_id!r}") from exc
        found = await self.control.dht_find_peer(raw, timeout=QUERY_TIMEOUT)
        return [addr_to_str(a) for a in found.addrs]

    async def closest(self, key: bytes) -> list[str]:
        return [b58encode(p) for p in await self.control.dht_get_closest_peers(key, timeout=QUERY_TIMEOUT)]

    async def routing_table(self) -> list[str]:
        raise contract.Unsupported("p2pd's control protocol cannot list the DHT routing table")


async def run(args: argparse.Namespace) -> int:
    extra = ["-dhtServer" if args.mode == "server" else "-dhtClient"]
    async with run_p2pd("tcp", "noise", "yamux", args.ip, extra) as daemon:
        me = await daemon.control.identify()
        peer = b58encode(daemon.peer_id)
        addrs = [f"{a}/p2p/{peer}" for a in map(addr_to_str, me.addrs) if own_addr("tcp", args.ip, a)]
        protocols = [contract.KAD_PROTOCOL] if args.mode == "server" else []
        contract.emit({"peer_id": peer, "addrs": addrs, "protocols": protocols, "mode": args.mode})
        await contract.serve_commands(GoDHTNode(daemon.control, args.mode))
    return 0


if __name__ == "__main__":
    if not P2PD.exists():
        sys.exit(f"p2pd not found at {P2PD}: run interop/install.sh")
    sys.exit(contract.main(run))
