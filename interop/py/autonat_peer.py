"""The py-libp2p 0.8.1 AutoNAT v1 interop peer (``libp2p.host.autonat.AutoNATService``).

    interop/.peers/py-venv/bin/python interop/py/autonat_peer.py serve
    interop/.peers/py-venv/bin/python interop/py/autonat_peer.py ask <server addr>/p2p/<S> [--addr <maddr>]... [--no-listen]

TCP + Noise + yamux on 127.0.0.1 (the host from ``peer.py``). ``serve`` answers AutoNAT v1 requests: one
ready line ``{"peer_id", "addrs": [".../p2p/<id>"]}``, then it runs until stdin EOF or SIGTERM. ``ask``
connects to S, asks it to dial us back (on ``--addr`` addresses, default: our listen addresses; with
``--no-listen`` we listen nowhere) and prints ``{"peer_id", "status", "addr"}`` (status: py's
``ResponseStatus`` number; ``"error"`` on failure), then waits for stdin EOF or SIGTERM.
Used by ``tests/interop/test_autonat_py.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))  # the repo root, for interop.*

import multiaddr
import trio
from libp2p.host.autonat.autonat import AutoNATService
from libp2p.peer.peerinfo import info_from_p2p_addr

from interop import cases
from interop.py.peer import make_host, own_addr


def _host_args(ip: str) -> argparse.Namespace:
    return argparse.Namespace(transport="tcp", security="noise", muxer="yamux", ip=ip)


async def serve(args: argparse.Namespace) -> int:
    host_args = _host_args(args.ip)
    host = make_host(host_args)
    async with host.run(listen_addrs=[multiaddr.Multiaddr(f"/ip4/{args.ip}/tcp/0")]):
        AutoNATService(host, serve=True)
        peer = str(host.get_id())
        addrs = []
        for addr in host.get_addrs():
            text = str(addr)
            if own_addr(host_args, text):
                addrs.append(text if "/p2p/" in text else f"{text}/p2p/{peer}")
        cases.emit({"peer_id": peer, "addrs": addrs})
        await cases.wait_for_shutdown()
    return 0


async def ask(args: argparse.Namespace) -> int:
    host = make_host(_host_args(args.ip))
    listen = [] if args.no_listen else [multiaddr.Multiaddr(f"/ip4/{args.ip}/tcp/0")]
    async with host.run(listen_addrs=listen):
        service = AutoNATService(host, serve=False)
        info = info_from_p2p_addr(multiaddr.Multiaddr(args.server))
        result: dict[str, object] = {"peer_id": str(host.get_id())}
        try:
            with trio.fail_after(30):
                await host.connect(info)
                addrs = [multiaddr.Multiaddr(a).to_bytes() for a in args.addr] if args.addr else None
                if addrs is None and args.no_listen:
                    addrs = []
                status, addr = await service.query_server(info.peer_id, addrs)
            result.update(status=status, addr=str(multiaddr.Multiaddr(addr)) if addr else None)
        except Exception as exc:  # reported to the test, which fails on it
            result.update(error=f"{type(exc).__name__}: {exc}")
        cases.emit(result)
        await cases.wait_for_shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="py-libp2p AutoNAT v1 interop peer")
    sub = parser.add_subparsers(dest="command", required=True)
    server = sub.add_parser("serve", help="answer AutoNAT v1 requests until stdin closes")
    server.add_argument("--ip", default="127.0.0.1")
    client = sub.add_parser("ask", help="ask a server to dial us back, print its answer")
    client.add_argument("server", help="<addr>/p2p/<server id>")
    client.add_argument("--addr", action="append", default=[], help="an address to be dialed on (repeatable)")
    client.add_argument("--no-listen", action="store_true", help="listen on nothing")
    client.add_argument("--ip", default="127.0.0.1")
    args = parser.parse_args(argv)
    cases.setup_logging()
    if args.ip != "127.0.0.1":
        return cases.unsupported("interop peers stay on 127.0.0.1")
    return trio.run(serve if args.command == "serve" else ask, args)


if __name__ == "__main__":
    raise SystemExit(main())
