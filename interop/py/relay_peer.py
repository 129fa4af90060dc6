"""The py-libp2p 0.8.1 circuit relay v2 interop peer (``libp2p.relay.circuit_v2``): a relay.

    interop/.peers/py-venv/bin/python interop/py/relay_peer.py relay
    interop/.peers/py-venv/bin/python interop/py/relay_peer.py dial <relay addr>/p2p-circuit/p2p/<T> <bytes>

TCP + Noise + yamux on 127.0.0.1 (the host from ``peer.py``). ``relay`` runs ``CircuitV2Protocol(allow_hop=
True)`` with py's default limits: one ready line ``{"peer_id", "addrs": [".../p2p/<id>"]}``, then it runs
until stdin EOF or SIGTERM. ``dial`` dials T through the relay with py's ``CircuitV2Transport``, echoes
``<bytes>`` on ``/echo/1.0.0``, prints ``{"peer_id", "ok", "bytes"}`` (or ``"error"``) and keeps the
connection until stdin EOF or SIGTERM. Logs go to stderr.
Used by ``tests/interop/test_relay_py.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))  # the repo root, for interop.*

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.relay.circuit_v2.config import RelayConfig
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.tools.anyio_service import background_trio_service

from interop import cases
from interop.py.peer import make_host, own_addr

ECHO = "/echo/1.0.0"


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


async def dial(args: argparse.Namespace) -> int:
    host_args = argparse.Namespace(transport="tcp", security="noise", muxer="yamux", ip=args.ip)
    host = make_host(host_args)
    target = multiaddr.Multiaddr(args.target)
    async with host.run(listen_addrs=[multiaddr.Multiaddr(f"/ip4/{args.ip}/tcp/0")]):
        protocol = CircuitV2Protocol(host, allow_hop=False)
        async with background_trio_service(protocol):
            await protocol.event_started.wait()
            transport = CircuitV2Transport(host, protocol, RelayConfig())
            result: dict[str, object] = {"peer_id": str(host.get_id())}
            try:
                with trio.fail_after(30):
                    conn = await transport.dial(target)
                    peer = conn.muxed_conn.peer_id
                    stream = await host.new_stream(peer, [TProtocol(ECHO)])
                    payload = os.urandom(args.bytes)
                    await stream.write(payload)
                    got = b""
                    while len(got) < len(payload):
                        chunk = await stream.read(65536)
                        if not chunk:
                            break
                        got += chunk
                    await stream.close()
                result.update(ok=got == payload, bytes=len(got))
            except Exception as exc:  # reported to the test, which fails on it
                result.update(ok=False, error=f"{type(exc).__name__}: {exc}")
            cases.emit(result)
            await cases.wait_for_shutdown()  # the connection stays up until the test lets go
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="py-libp2p circuit relay v2 interop peer")
    sub = parser.add_subparsers(dest="command", required=True)
    relay = sub.add_parser("relay", help="run a relay until stdin closes")
    relay.add_argument("--ip", default="127.0.0.1")
    dialer = sub.add_parser("dial", help="echo bytes to a peer through a relay, print the result")
    dialer.add_argument("target", help="<relay addr>/p2p/<relay>/p2p-circuit/p2p/<target>")
    dialer.add_argument("bytes", type=int)
    dialer.add_argument("--ip", default="127.0.0.1")
    args = parser.parse_args(argv)
    cases.setup_logging()
    if args.ip != "127.0.0.1":
        return cases.unsupported("interop peers stay on 127.0.0.1")
    return trio.run(run if args.command == "relay" else dial, args)


if __name__ == "__main__":
    raise SystemExit(main())
