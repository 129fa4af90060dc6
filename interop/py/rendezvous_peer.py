"""The py-libp2p 0.8.1 rendezvous interop peer (``libp2p.discovery.rendezvous``), driven by JSON lines.

    interop/.peers/py-venv/bin/python interop/py/rendezvous_peer.py rendezvous --mode server|client

TCP + Noise + yamux on 127.0.0.1 (the host from ``peer.py``). ``server`` runs ``RendezvousService`` (a
rendezvous point); both modes can act as a client (``RendezvousClient``, one per point, no automatic
refresh). One ready line ``{"peer_id", "addrs": [".../p2p/<id>"], "protocols", "mode"}``, then commands on
stdin, one JSON object a line, each answered ``{"reply": <id>, "ok": true, ...}`` or ``ok: false, "error"``
(the command loop of ``interop/pubsub_contract.py``):

    {"id": 1, "cmd": "connect", "addr": "<multiaddr with /p2p/>"}
    {"id": 2, "cmd": "register", "server": "<peer id>", "ns": "app", "ttl": 7200}   -> "ttl": granted
    {"id": 3, "cmd": "unregister", "server": "<peer id>", "ns": "app"}
    {"id": 4, "cmd": "discover", "server": "<peer id>", "ns": "app", "limit": 0, "cookie_hex": ""}
                                           -> "peers": [{"id", "addrs"}], "cookie_hex"
    {"id": 5, "cmd": "registrations", "ns": "app"}   (server) -> "peers": [{"id", "addrs", "ttl"}]

A refusal by the point is ``ok: false`` with ``"error": "refused <status number>: <text>"``. The peer
exits on stdin EOF or SIGTERM; logs go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))  # the repo root, for interop.*

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.discovery.rendezvous.client import RendezvousClient
from libp2p.discovery.rendezvous.config import RENDEZVOUS_PROTOCOL
from libp2p.discovery.rendezvous.errors import RendezvousError
from libp2p.discovery.rendezvous.service import RendezvousService
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr

from interop import cases
from interop import pubsub_contract as contract
from interop.py.peer import make_host, own_addr

MODES = ("server", "client")
TIMEOUT = 30.0  # seconds per command


class RendezvousNode:
    """The commands over one py-libp2p host (and its rendezvous point in server mode)."""

    def __init__(self, host: IHost, service: RendezvousService | None) -> None:
        self.host = host
        self.service = service
        self.clients: dict[str, RendezvousClient] = {}

    def client(self, server: str) -> RendezvousClient:
        if server not in self.clients:
            self.clients[server] = RendezvousClient(self.host, ID.from_base58(server), enable_refresh=False)
        return self.clients[server]

    async def run(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd.get("cmd")
        try:
            with trio.fail_after(TIMEOUT):
                if name == "connect":
                    await self.host.connect(info_from_p2p_addr(multiaddr.Multiaddr(_str(cmd, "addr"))))
                    return {}
                if name == "register":
                    ttl = await self.client(_str(cmd, "server")).register(_str(cmd, "ns"), int(cmd.get("ttl", 7200)))
                    return {"ttl": ttl}
                if name == "unregister":
                    await self.client(_str(cmd, "server")).unregister(_str(cmd, "ns"))
                    return {}
                if name == "discover":
                    cookie = bytes.fromhex(str(cmd.get("cookie_hex", "")))
                    limit = int(cmd.get("limit", 0)) or 100
                    peers, next_cookie = await self.client(_str(cmd, "server")).discover(_str(cmd, "ns"), limit, cookie)
                    return {
                        "peers": [{"id": str(p.peer_id), "addrs": [str(a) for a in p.addrs]} for p in peers],
                        "cookie_hex": bytes(next_cookie).hex(),
                    }
                if name == "registrations":
                    if self.service is None:
                        raise contract.Unsupported("registrations: not a rendezvous point")
                    self.service.cleanup_all_expired()
                    regs = self.service.registrations.get(_str(cmd, "ns"), {})
                    return {"peers": [
                        {"id": str(r.peer_id), "addrs": [str(multiaddr.Multiaddr(a)) for a in r.addrs], "ttl": r.ttl}
                        for r in regs.values()
                    ]}  # fmt: skip
        except RendezvousError as exc:
            raise contract.CommandError(f"refused {int(exc.status)}: {exc.message}") from exc
        raise contract.CommandError(f"unknown command {name!r}")


def _str(cmd: dict[str, Any], name: str) -> str:
    value = cmd.get(name)
    if not isinstance(value, str):
        raise contract.CommandError(f"{cmd.get('cmd')}: {name!r} must be a string")
    return value


async def run(args: argparse.Namespace) -> int:
    host_args = argparse.Namespace(transport="tcp", security="noise", muxer="yamux", ip=args.ip)
    host = make_host(host_args)
    listen = multiaddr.Multiaddr(f"/ip4/{args.ip}/tcp/0")
    async with host.run(listen_addrs=[listen]):
        service = RendezvousService(host) if args.mode == "server" else None
        node = RendezvousNode(host, service)
        peer = str(host.get_id())
        addrs = []
        for addr in host.get_addrs():
            text = str(addr)
            if own_addr(host_args, text):
                addrs.append(text if "/p2p/" in text else f"{text}/p2p/{peer}")
        protocols = [str(RENDEZVOUS_PROTOCOL)] if service is not None else []
        contract.emit({"peer_id": peer, "addrs": addrs, "protocols": protocols, "mode": args.mode})
        await contract.serve_commands_with(node.run)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="py-libp2p rendezvous interop peer")
    sub = parser.add_subparsers(dest="command", required=True)
    rv = sub.add_parser("rendezvous", help="run a rendezvous peer driven by JSON commands on stdin")
    rv.add_argument("--mode", choices=MODES, required=True)
    rv.add_argument("--ip", default="127.0.0.1")
    args = parser.parse_args(argv)
    cases.setup_logging()
    if args.ip != "127.0.0.1":
        return cases.unsupported("interop peers stay on 127.0.0.1")
    return trio.run(run, args)


if __name__ == "__main__":
    sys.exit(main())
