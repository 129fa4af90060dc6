"""The ``mycel`` command: id, listen, ping, identify.

Errors are one readable line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import trio

from mycel.core.errors import MycelError
from mycel.core.identity import Identity
from mycel.host import HostConfig, open_host

DEFAULT_KEY = os.path.join(os.path.expanduser("~"), ".mycel", "identity.key")


def _stack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--security", action="append", choices=["noise", "plaintext"],
                        help="security protocols in preference order (default: noise)")
    parser.add_argument("--muxer", action="append", choices=["yamux", "mplex"],
                        help="stream muxers in preference order (default: yamux, mplex)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log to stderr (-vv for debug)")


def build_config(args: argparse.Namespace, identity: Identity, listen: Sequence[str] = ()) -> HostConfig:
    from mycel.core.abc import SecurityProtocol, StreamMuxer
    from mycel.muxers.mplex import Mplex
    from mycel.muxers.yamux import Yamux
    from mycel.protocols.echo import Echo
    from mycel.protocols.identify import Identify
    from mycel.protocols.ping import Ping
    from mycel.security.noise import Noise
    from mycel.security.plaintext import Plaintext

    security: list[SecurityProtocol] = []
    for name in args.security or ["noise"]:
        security.append(Noise() if name == "noise" else Plaintext())
    muxers: list[StreamMuxer] = []
    for name in args.muxer or ["yamux", "mplex"]:
        muxers.append(Yamux() if name == "yamux" else Mplex())
    return HostConfig(
        identity=identity,
        security=security,
        muxers=muxers,
        services=[Identify(), Ping(), Echo()],
        listen=list(listen),
    )


async def cmd_id(args: argparse.Namespace) -> int:
    identity = Identity.load_or_create(args.key)
    print(f"peer id:  {identity.peer_id}")
    print(f"key type: {identity.private_key.key_type.name}")
    print(f"key file: {args.key}")
    return 0


async def cmd_listen(args: argparse.Namespace) -> int:
    identity = Identity.load_or_create(args.key) if args.key else Identity.generate()
    config = build_config(args, identity, args.listen or ["/ip4/127.0.0.1/tcp/0"])
    async with open_host(config) as host:
        for addr in host.addrs:
            print(addr, flush=True)
        await trio.sleep_forever()
    return 0


async def cmd_ping(args: argparse.Namespace) -> int:
    from mycel.protocols.ping import Ping

    config = build_config(args, Identity.generate())
    async with open_host(config) as host:
        with trio.fail_after(args.timeout):
            conn = await host.connect(args.multiaddr)
        print(f"connected to {conn.remote_peer} ({conn.security_protocol}, {conn.muxer_protocol})", flush=True)
        with trio.fail_after(args.timeout + args.count):
            rtts = await host.service(Ping).ping(conn.remote_peer, args.count)
        for i, rtt in enumerate(rtts, 1):
            print(f"ping {i}: {rtt * 1000:.3f} ms", flush=True)
    return 0


async def cmd_identify(args: argparse.Namespace) -> int:
    from mycel.protocols.identify import Identify

    config = build_config(args, Identity.generate())
    async with open_host(config) as host:
        with trio.fail_after(args.timeout):
            conn = await host.connect(args.multiaddr)
            res = await host.service(Identify).identify_connection(conn)
        print(f"peer id:          {res.peer}")
        print(f"agent version:    {res.agent_version}")
        print(f"protocol version: {res.protocol_version}")
        print(f"signed record:    {'verified, seq ' + str(res.signed_record_seq) if res.signed_record_verified else 'none'}")
        print(f"observed us at:   {res.observed_addr}")
        print("listen addrs:")
        for a in res.listen_addrs:
            print(f"  {a}")
        print("protocols:")
        for p in sorted(res.protocols):
            print(f"  {p}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mycel", description="mycel libp2p node")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("id", help="create or show the identity")
    p.add_argument("--key", default=DEFAULT_KEY, help=f"key file (default {DEFAULT_KEY})")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p = sub.add_parser("listen", help="serve ping, identify and echo; print listen addresses")
    p.add_argument("--listen", action="append", metavar="MULTIADDR")
    p.add_argument("--key", help="identity key file (created if missing; default: a fresh key)")
    _stack_options(p)
    for name, helptext in (("ping", "ping a peer"), ("identify", "ask a peer who it is")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("multiaddr")
        p.add_argument("--timeout", type=float, default=10.0)
        if name == "ping":
            p.add_argument("-c", "--count", type=int, default=3)
        _stack_options(p)
    return parser


COMMANDS = {"id": cmd_id, "listen": cmd_listen, "ping": cmd_ping, "identify": cmd_identify}


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.verbose == 0:
        logging.getLogger("mycel").setLevel(logging.ERROR)
    try:
        return trio.run(COMMANDS[args.command], args)
    except KeyboardInterrupt:
        return 130
    except trio.TooSlowError:
        print("mycel: error: timed out", file=sys.stderr)
        return 1
    except (MycelError, OSError, ValueError) as exc:
        print(f"mycel: error: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        leaf = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        print(f"mycel: error: {leaf}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
