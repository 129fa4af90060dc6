"""mycel Kademlia DHT benchmark peer, driven by ``benchmarks/dht.py`` (the same contract as the interop
DHT peers, ``interop/dht_contract.py``, whose js side is ``interop/js/dht.mjs``).

    .venv/bin/python benchmarks/peers/mycel_dht.py dht --mode server|client

One mycel host on TCP 127.0.0.1 (Noise, yamux, Identify, Ping, ``KadDHT(mode=...)``), one ready line
``{"peer_id", "addrs", "protocols", "mode"}``, then the contract's JSON commands on stdin (connect,
pk_record, put, get, provide, find_providers, find_peer, closest, routing_table) and one more:

    {"id": 10, "cmd": "stats"}   -> "stats": KadDHT.stats (requests_sent, requests_served, lookups, ...)

Exits on stdin EOF or SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: interop/ and mycel/

from interop import dht_contract as contract  # noqa: E402
from interop import pubsub_contract  # noqa: E402
from interop.dht import CommandFailed, DHTPeerError, open_mycel_dht_node  # noqa: E402


async def run(args: argparse.Namespace) -> int:
    async with open_mycel_dht_node(args.mode) as node:
        contract.emit({"peer_id": node.peer_id, "addrs": node.addrs, "protocols": node.protocols, "mode": args.mode})

        async def runner(cmd: dict[str, Any]) -> dict[str, Any]:
            if cmd.get("cmd") == "stats":
                return {"stats": dict(node.dht.stats)}
            if cmd.get("cmd") == "provide" and isinstance(cmd.get("cid"), str):
                await node.provide(cmd["cid"])  # MycelDHTNode.provide returns None, the contract {}
                return {}
            try:
                return await contract.run_command(node, cmd)  # type: ignore[arg-type]
            except CommandFailed as exc:
                raise contract.CommandError(exc.error) from None
            except DHTPeerError as exc:
                raise contract.CommandError(str(exc).partition("\n")[0]) from None

        await pubsub_contract.serve_commands_with(runner)
    return 0


if __name__ == "__main__":
    sys.exit(contract.main(run))
