"""``mycel pubsub sub`` and ``mycel pubsub pub``, and what they share with ``mycel chat``: a host that
runs gossipsub, connecting to the ``--connect`` peers, and showing a message as one safe line.

Message data is shown as UTF-8 text (bytes that are not UTF-8 as ``\\xNN``); control and bidi-override
characters a peer sent are escaped, so a message can neither take over the terminal nor span lines.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import unicodedata
from collections.abc import Callable, Sequence

import trio
from multiaddr import Multiaddr

from mycel.cli.main import CliError, build_config, connect, listen_addrs, load_identity, parse_multiaddr
from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.host import Host, HostConfig, open_host
from mycel.protocols.pubsub import Gossipsub, PublishError, PubsubMessage

SHORT_ID = 8  # characters of a peer id shown: its tail (every Ed25519 id starts with 12D3KooW)
_KEEP = {"\u200c", "\u200d"}  # zero-width (non-)joiners: parts of emoji and of some scripts' words


def safe_text(text: str) -> str:
    """``text`` with control, format (bidi overrides...), surrogate and unassigned characters and line
    separators escaped (``\\n``, ``\\x1b``, ``\\u202e``): what a peer sent, fit to print on one line."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        category = unicodedata.category(ch)
        if (category[0] == "C" or category in ("Zl", "Zp")) and ch not in _KEEP:
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def message_text(data: bytes) -> str:
    """Message data as one printable line: UTF-8 text, other bytes as ``\\xNN``."""
    return safe_text(data.decode("utf-8", "backslashreplace"))


def short_id(peer: PeerId) -> str:
    """The last characters of ``peer``'s id: enough to tell people in a room apart."""
    return str(peer)[-SHORT_ID:]


def message_author(msg: PubsubMessage) -> str:
    """Who wrote ``msg``: its (signed) source, or for an unsigned message the peer that relayed it."""
    if msg.source is not None:
        return str(msg.source)
    return f"anonymous via {msg.received_from}"


def message_json(msg: PubsubMessage) -> str:
    """``msg`` as one JSON object: topic, from, received_from, id (hex), seqno, and ``data`` (text) when
    the data is UTF-8, else ``data_base64``."""
    out: dict[str, object] = {
        "topic": msg.topic,
        "from": str(msg.source) if msg.source is not None else None,
        "received_from": str(msg.received_from) if msg.received_from is not None else None,
        "id": msg.id.hex(),
        "seqno": msg.seqno_int,
    }
    try:
        out["data"] = msg.data.decode("utf-8")
    except UnicodeDecodeError:
        out["data_base64"] = base64.b64encode(msg.data).decode("ascii")
    return json.dumps(out, ensure_ascii=False)


def identity_for(args: argparse.Namespace) -> Identity:
    """``--key FILE`` when given, else a fresh identity (several chats on one machine need their own)."""
    return load_identity(args.key) if args.key else Identity.generate()


def pubsub_config(args: argparse.Namespace, listen: Sequence[Multiaddr] = ()) -> HostConfig:
    """The command's stack (``--transport`` / ``--security`` / ``--muxer``) with gossipsub added."""
    config = build_config(args, identity_for(args), listen)
    return config.replace(services=[*config.services, Gossipsub()])


async def connect_all(
    host: Host, texts: Sequence[str], timeout: float, report: Callable[[str], None] | None = None
) -> list[PeerId]:
    """Connect to every ``--connect`` address at once; the peers reached.

    ``report``: told of each connection and failure, and the command goes on while one address
    worked; without it the first failure is the command's error.
    """
    targets = [parse_multiaddr(text, peer_address=True) for text in texts]
    peers: list[PeerId] = []
    errors: list[CliError] = []

    async def one(target: Multiaddr) -> None:
        try:
            conn = await connect(host, target, timeout)
        except CliError as exc:
            if report is None:
                raise
            report(str(exc))
            errors.append(exc)
            return
        peers.append(conn.remote_peer)
        if report is not None:
            report(f"connected to {conn.remote_peer}")

    async with trio.open_nursery() as nursery:
        for target in targets:
            nursery.start_soon(one, target)
    if errors and not peers:
        raise errors[-1] if len(errors) == 1 else CliError(f"could not connect to any of the {len(errors)} peers given")
    return peers


def say(text: str) -> None:
    """A line on stderr: what the command is doing (stdout carries only messages)."""
    print(f"mycel: {text}", file=sys.stderr, flush=True)


async def cmd_sub(args: argparse.Namespace) -> int:
    config = pubsub_config(args, listen_addrs(args))
    async with open_host(config) as host:
        pubsub = host.service(Gossipsub)
        async with pubsub.subscribe(args.topic) as sub:
            for addr in host.addrs:
                say(f"listening on {addr}")
            await connect_all(host, args.connect or [], args.timeout)
            say(f"subscribed to {args.topic!r}")
            seen = 0
            async for msg in sub:
                line = message_json(msg) if args.json else f"{message_author(msg)}: {message_text(msg.data)}"
                try:
                    print(line, flush=True)
                except BrokenPipeError:  # `mycel pubsub sub t | head -3`: the reader has what it wanted
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (no error at exit)
                    break
                seen += 1
                if args.count is not None and seen >= args.count:
                    break
    return 0


def _message_data(args: argparse.Namespace) -> bytes:
    if args.message == "-":
        return sys.stdin.buffer.read()
    return str(args.message).encode("utf-8", "surrogateescape")  # bytes the shell passed stay those bytes


async def cmd_pub(args: argparse.Namespace) -> int:
    if not args.connect:
        raise CliError("pub needs a peer to publish through: add --connect <multiaddr/p2p/...>", 2)
    data = _message_data(args)
    async with open_host(pubsub_config(args)) as host:
        pubsub = host.service(Gossipsub)
        await connect_all(host, args.connect, args.timeout)
        try:
            await pubsub.wait_ready(args.topic, args.wait_peers, timeout=args.timeout)
        except trio.TooSlowError:
            there = len(pubsub.peers(args.topic))
            wanted = f"{args.wait_peers} peers" if args.wait_peers > 1 else "a peer"
            found = f"only {there}" if there else "none"
            raise CliError(
                f"waited {args.timeout:g} s for {wanted} subscribed to {args.topic!r}, found {found} "
                f"(among {len(host.connected_peers())} connected); nothing was published"
            ) from None
        try:
            report = await pubsub.publish(args.topic, data)
        except PublishError as exc:
            raise CliError(f"not published: {exc}") from None
        try:
            await pubsub.flush(timeout=args.timeout)
        except trio.TooSlowError:
            raise CliError(f"published, but the message was not written to every peer within {args.timeout:g} s") from None
    peers = ", ".join(str(p) for p in report.peers)
    print(f"published {len(data)} bytes on {args.topic!r} to {report.sent_to} peer{'s' * (report.sent_to != 1)}: {peers}")
    return 0


async def cmd_pubsub(args: argparse.Namespace) -> int:
    """``mycel pubsub sub|pub``."""
    return await (cmd_sub if args.action == "sub" else cmd_pub)(args)
