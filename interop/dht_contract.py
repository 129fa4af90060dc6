"""The DHT peer contract, for the two Python DHT peer programs (stdlib + trio only):
``py/dht_peer.py`` (py-libp2p, runs in its own virtualenv, which has no mycel) and ``go_dht.py``.

    <peer> dht --mode server|client [--ip 127.0.0.1]

The peer listens on TCP 127.0.0.1 (Noise + yamux), prints one ready line
``{"peer_id": ..., "addrs": [".../p2p/<id>"], "protocols": [kad protocol ids it serves (none as a client)],
"mode": "server"|"client"}``, then reads JSON commands on stdin, one per line, and answers each with
``{"reply": <id>, "ok": true, ...}`` or ``{"reply": <id>, "ok": false, "error": "..."}``. Commands run
concurrently, so replies may come out of order: match them by id.

    {"id": 1, "cmd": "connect", "addr": "<multiaddr with /p2p/>"}
    {"id": 2, "cmd": "pk_record"}                     -> "key_hex", "value_hex": a fresh RSA key made with
                                                         the peer's own crypto: /pk/<its peer id multihash>
                                                         -> its PublicKey protobuf (what @libp2p/interop puts)
    {"id": 3, "cmd": "put", "key_hex", "value_hex"}
    {"id": 4, "cmd": "get", "key_hex"}                 -> "value_hex"
    {"id": 5, "cmd": "provide", "cid": "<CIDv1 or v0 string>"}
    {"id": 6, "cmd": "find_providers", "cid", "count"} -> "providers": [peer ids]
    {"id": 7, "cmd": "find_peer", "peer_id"}           -> "addrs": [multiaddrs, without /p2p/]
    {"id": 8, "cmd": "closest", "key_hex"}             -> "peers": [peer ids]
    {"id": 9, "cmd": "routing_table"}                  -> "peers": [peer ids]

A command the implementation cannot do answers ``ok: false`` with an error starting ``"unsupported: "``.
The peer exits on stdin EOF or SIGTERM. Logs go to stderr. The js peer (``js/dht.mjs``) follows the same
contract; ``interop/dht.py`` drives all three.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from interop import pubsub_contract as _pubsub
from interop.pubsub_contract import CommandError, Unsupported
from interop.pubsub_contract import emit as emit  # re-exported: the peer programs print through it

MODES = ("server", "client")
KAD_PROTOCOL = "/ipfs/kad/1.0.0"


class DHTNode(Protocol):
    """What a peer program plugs into :func:`serve_commands`."""

    async def connect(self, addr: str) -> None: ...

    async def pk_record(self) -> tuple[bytes, bytes]:
        """A fresh ``/pk/<multihash>`` key and PublicKey protobuf value (RSA, the peer's own crypto)."""
        ...

    async def put(self, key: bytes, value: bytes) -> dict[str, Any]: ...

    async def get(self, key: bytes) -> bytes: ...

    async def provide(self, cid: str) -> dict[str, Any]: ...

    async def find_providers(self, cid: str, count: int) -> list[str]: ...

    async def find_peer(self, peer_id: str) -> list[str]: ...

    async def closest(self, key: bytes) -> list[str]: ...

    async def routing_table(self) -> list[str]: ...


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="libp2p DHT interop peer (see interop/README.md)")
    sub = parser.add_subparsers(dest="command", required=True)
    dht = sub.add_parser("dht", help="run a DHT peer driven by JSON commands on stdin")
    dht.add_argument("--mode", choices=MODES, required=True)
    dht.add_argument("--ip", default="127.0.0.1")
    return parser.parse_args(argv)


def main(run: Callable[[argparse.Namespace], Awaitable[int]], argv: list[str] | None = None) -> int:
    """A peer program's ``main``: as the pubsub contract's (127.0.0.1 only), with this command line."""
    return _pubsub.start(run, parse_args(argv))


def _str(cmd: dict[str, Any], name: str) -> str:
    value = cmd.get(name)
    if not isinstance(value, str):
        raise CommandError(f"{cmd.get('cmd')}: {name!r} must be a string")
    return value


def _hex(cmd: dict[str, Any], name: str) -> bytes:
    try:
        return bytes.fromhex(_str(cmd, name))
    except ValueError as exc:
        raise CommandError(f"{cmd.get('cmd')}: {name} is not hex: {exc}") from exc


async def run_command(node: DHTNode, cmd: dict[str, Any]) -> dict[str, Any]:
    """One command's reply fields (without ``reply``/``ok``); raises CommandError and anything else."""
    name = cmd.get("cmd")
    if name == "connect":
        await node.connect(_str(cmd, "addr"))
        return {}
    if name == "pk_record":
        key, value = await node.pk_record()
        return {"key_hex": key.hex(), "value_hex": value.hex()}
    if name == "put":
        return await node.put(_hex(cmd, "key_hex"), _hex(cmd, "value_hex"))
    if name == "get":
        return {"value_hex": (await node.get(_hex(cmd, "key_hex"))).hex()}
    if name == "provide":
        return await node.provide(_str(cmd, "cid"))
    if name == "find_providers":
        count = cmd.get("count", 20)
        if not isinstance(count, int) or count < 1:
            raise CommandError("find_providers: count must be a positive integer")
        return {"providers": sorted(set(await node.find_providers(_str(cmd, "cid"), count)))}
    if name == "find_peer":
        return {"addrs": sorted(set(await node.find_peer(_str(cmd, "peer_id"))))}
    if name == "closest":
        return {"peers": await node.closest(_hex(cmd, "key_hex"))}
    if name == "routing_table":
        return {"peers": sorted(await node.routing_table())}
    raise CommandError(f"unknown command {name!r}")


async def serve_commands(node: DHTNode) -> None:
    """Answer stdin commands until stdin reaches EOF or SIGTERM/SIGINT arrives (the pubsub contract's
    loop, with this contract's commands)."""

    async def runner(cmd: dict[str, Any]) -> dict[str, Any]:
        return await run_command(node, cmd)

    await _pubsub.serve_commands_with(runner)


__all__ = ["KAD_PROTOCOL", "MODES", "CommandError", "DHTNode", "Unsupported", "emit", "main", "serve_commands"]
