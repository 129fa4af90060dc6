"""``mycel dht``: a Kademlia DHT node on the command line (serve, put, put-pk, get, provide,
find-providers, find-peer).

Every action starts a host (Identify and a :class:`~mycel.protocols.kad.KadDHT`, server mode unless
``--client``), connects to the ``--connect`` peers, waits for the first peer to enter its routing table
(the :class:`~mycel.protocols.kad.RoutingTablePeerAdded` event, no polling), runs a self-lookup to fill
the table, then does its one thing. Results go to stdout, one line each (or one JSON object each with
``--json``); status lines go to stderr. Exit status 1 with a one-line message when nothing was found.

Record keys are text (``/pk/<peer id>`` and ``/ipns/<peer id>`` hold the peer id's bytes, as the
validators expect), or hex with ``--hex``. Content keys are multihashes: hex, a CIDv0 (``Qm…``) or a
CIDv1 in a multibase (``bafy…``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Iterator

import trio

from mycel.cli.main import CliError, build_config, listen_addrs
from mycel.cli.pubsub import connect_all, identity_for, message_text, say
from mycel.core.errors import DecodeError, MycelError
from mycel.core.identity import Identity
from mycel.core.keys import public_key_from_protobuf
from mycel.core.peer_id import PeerId
from mycel.host import Host, open_host
from mycel.protocols.kad import KadDHT, RoutingTablePeerAdded
from mycel.protocols.kad.records import InvalidRecord
from mycel.routing import content_key as routing_content_key

PEER_KEY_NAMESPACES = ("/pk/", "/ipns/")  # record keys whose rest is a peer id's bytes


# -- keys ------------------------------------------------------------------------------------------


def record_key(text: str, *, hex_key: bool = False) -> bytes:
    """KEY as typed: ``/pk/<peer id>`` → ``b"/pk/" + peer id bytes`` (also ``/ipns/``), other text as
    UTF-8, or hex with ``hex_key``."""
    if hex_key:
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise CliError(f"{text!r} is not hex", 2) from None
    for namespace in PEER_KEY_NAMESPACES:
        if text.startswith(namespace):
            try:
                return namespace.encode() + PeerId.from_string(text[len(namespace):]).to_bytes()
            except (DecodeError, ValueError) as exc:
                raise CliError(f"{text!r}: {namespace}<peer id> needs a peer id after {namespace} ({exc})", 2) from None
    return text.encode("utf-8", "surrogateescape")


def key_text(key: bytes) -> str:
    """A record key as a person reads it (``/pk/12D3KooW…``), the inverse of :func:`record_key`."""
    for namespace in PEER_KEY_NAMESPACES:
        if key.startswith(namespace.encode()):
            try:
                return namespace + str(PeerId.from_bytes(key[len(namespace):]))
            except (DecodeError, ValueError):
                break
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return key.hex()
    return text if text.isprintable() else key.hex()


def content_key(text: str) -> bytes:
    """A content key as typed: a hex multihash, or a CID (``Qm…``, ``bafy…``, parsed by ``multiformats``);
    its multihash."""
    with contextlib.suppress(ValueError, DecodeError):
        return routing_content_key(bytes.fromhex(text))
    try:
        return routing_content_key(text)
    except DecodeError:
        raise CliError(f"{text!r} is neither a hex multihash (1220…) nor a CID (Qm…, bafy…)", 2) from None


def value_text(key: bytes, value: bytes) -> str:
    """A record value on one line: a /pk/ value as its key type and hex, text as text, else hex."""
    if key.startswith(b"/pk/"):
        with contextlib.suppress(DecodeError, ValueError):
            public = public_key_from_protobuf(value)
            return f"{public.key_type.name} public key {value.hex()}"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return value.hex()
    return message_text(value) if text.isprintable() else value.hex()


# -- the node --------------------------------------------------------------------------------------


def _print(args: argparse.Namespace, text: str, **fields: object) -> None:
    print(json.dumps(fields, ensure_ascii=False) if args.json else text, flush=True)


@contextlib.asynccontextmanager
async def dht_node(args: argparse.Namespace, identity: Identity | None = None) -> AsyncIterator[tuple[Host, KadDHT]]:
    """A host with the DHT, listening, connected to ``--connect`` and with a routing table that holds at
    least one peer (when ``--connect`` names any)."""
    config = build_config(args, identity or identity_for(args), listen_addrs(args))
    config = config.replace(services=[*config.services, KadDHT(mode="client" if args.client else "server")])
    async with open_host(config) as host:
        dht = host.service(KadDHT)
        if args.connect:
            with host.subscribe() as events:
                await connect_all(host, args.connect, args.timeout, say if args.verbose else None)
                if not len(dht.routing_table):
                    with trio.move_on_after(args.timeout):
                        async for event in events:  # (any event: the subscription may drop some)
                            if isinstance(event, RoutingTablePeerAdded) or len(dht.routing_table):
                                break
                if not len(dht.routing_table):
                    raise CliError(
                        f"no DHT server among the --connect peers within {args.timeout:g} s "
                        f"(connected to {len(host.connected_peers())}; is one running `mycel dht serve`?)"
                    )
            with trio.move_on_after(args.timeout):
                await dht.closest_peers(host.peer_id.to_bytes())  # a self-lookup: the table fills up
            if args.verbose:
                say(f"{len(dht.routing_table)} peers in the routing table")
        yield host, dht


async def _stay(host: Host, dht: KadDHT, args: argparse.Namespace) -> None:
    """Serve the DHT until interrupted (``-v``: say who enters the routing table)."""
    with host.subscribe() as events:
        async for event in events:
            if args.verbose and isinstance(event, RoutingTablePeerAdded):
                say(f"routing table: {event.peer} added ({event.size} peers)")


@contextlib.contextmanager
def deadline(what: str, timeout: float) -> Iterator[None]:
    """A query that takes longer than ``timeout`` is a CliError naming it."""
    with trio.move_on_after(timeout) as scope:
        yield
    if scope.cancelled_caught:
        raise CliError(f"{what}: no result within {timeout:g} s")


# -- the actions -----------------------------------------------------------------------------------


async def cmd_serve(args: argparse.Namespace) -> int:
    async with dht_node(args) as (host, dht):
        for addr in host.addrs:
            print(addr, flush=True)
        say(f"DHT {dht.mode} {host.peer_id}, {len(dht.routing_table)} peers in the routing table")
        await _stay(host, dht, args)
    return 0


async def _put(
    args: argparse.Namespace, key: bytes, value: bytes, what: str = "", identity: Identity | None = None
) -> int:
    async with dht_node(args, identity) as (host, dht):
        try:
            with deadline(f"put {key_text(key)}", args.timeout):
                stored = await dht.put(key, value)
        except InvalidRecord as exc:
            raise CliError(f"the DHT's validators refuse {key_text(key)}: {exc}") from None
        if not stored:
            raise CliError(f"no peer stored {key_text(key)} (are the --connect peers DHT servers?)")
        _print(args, f"stored {key_text(key)} ({len(value)} bytes{what}) on {stored} peer{'s' * (stored != 1)}",
               key=key_text(key), bytes=len(value), stored_on=stored)
        if args.stay:
            await _serve_on(host, dht, args)
    return 0


async def _serve_on(host: Host, dht: KadDHT, args: argparse.Namespace) -> None:
    say(f"staying up as a DHT {dht.mode} at {host.addrs[0]}")
    await _stay(host, dht, args)


async def cmd_put(args: argparse.Namespace) -> int:
    key = record_key(args.key_text, hex_key=args.hex)
    if args.value == "-":
        value = sys.stdin.buffer.read()
    elif args.hex:
        try:
            value = bytes.fromhex(args.value)
        except ValueError:
            raise CliError(f"{args.value!r} is not hex (--hex: KEY and VALUE are hex)", 2) from None
    else:
        value = str(args.value).encode("utf-8", "surrogateescape")
    return await _put(args, key, value)


async def cmd_put_pk(args: argparse.Namespace) -> int:
    identity = identity_for(args)
    public = identity.private_key.public_key
    return await _put(args, b"/pk/" + identity.peer_id.to_bytes(), public.to_protobuf(),
                      f", {public.key_type.name} public key", identity)


async def cmd_get(args: argparse.Namespace) -> int:
    key = record_key(args.key_text, hex_key=args.hex)
    async with dht_node(args) as (_, dht):
        with deadline(f"get {key_text(key)}", args.timeout):
            value = await dht.get(key)
    if value is None:
        raise CliError(f"no value found for {key_text(key)}")
    fields: dict[str, object] = {"key": key_text(key), "value_hex": value.hex()}
    with contextlib.suppress(UnicodeDecodeError):
        fields["value"] = value.decode("utf-8")
    _print(args, f"{key_text(key)}: {value.hex() if args.hex else value_text(key, value)}", **fields)
    return 0


async def cmd_provide(args: argparse.Namespace) -> int:
    key = content_key(args.content)
    async with dht_node(args) as (host, dht):
        with deadline(f"provide {key.hex()}", args.timeout):
            await dht.provide(key)
        shown = args.content if args.content == key.hex() else f"{args.content} (multihash {key.hex()})"
        _print(args, f"providing {shown} as {host.peer_id}",
               key=args.content, multihash=key.hex(), provider=str(host.peer_id))
        if args.stay:
            await _serve_on(host, dht, args)
    return 0


async def cmd_find_providers(args: argparse.Namespace) -> int:
    key = content_key(args.content)
    found = 0
    async with dht_node(args) as (_, dht):
        with deadline(f"find-providers {args.content}", args.timeout):
            async for rec in dht.find_providers(key, limit=args.limit):
                found += 1
                addrs = [f"{a}/p2p/{rec.peer}" for a in rec.addrs]
                _print(args, " ".join([str(rec.peer), *addrs]), peer=str(rec.peer), addrs=addrs)
    if not found:
        raise CliError(f"no providers found for {args.content}")
    return 0


async def cmd_find_peer(args: argparse.Namespace) -> int:
    try:
        peer = PeerId.from_string(args.peer)
    except (DecodeError, ValueError) as exc:
        raise CliError(f"{args.peer!r} is not a peer id ({exc})", 2) from None
    async with dht_node(args) as (_, dht):
        with deadline(f"find-peer {peer}", args.timeout):
            addrs = await dht.find_peer(peer)
    if not addrs:
        raise CliError(f"peer {peer} not found in the DHT")
    texts = [f"{a}/p2p/{peer}" for a in addrs]
    if args.json:
        _print(args, "", peer=str(peer), addrs=texts)
    else:
        for text in texts:
            print(text, flush=True)
    return 0


ACTIONS = {
    "serve": cmd_serve,
    "put": cmd_put,
    "put-pk": cmd_put_pk,
    "get": cmd_get,
    "provide": cmd_provide,
    "find-providers": cmd_find_providers,
    "find-peer": cmd_find_peer,
}


async def cmd_dht(args: argparse.Namespace) -> int:
    """``mycel dht ACTION``."""
    if args.action != "serve" and not args.connect:
        raise CliError(f"dht {args.action} needs a DHT peer to start from: add --connect <multiaddr/p2p/...>", 2)
    try:
        return await ACTIONS[args.action](args)
    except MycelError as exc:
        raise CliError(f"dht {args.action} failed: {exc}") from None
