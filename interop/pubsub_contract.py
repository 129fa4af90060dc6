"""The pubsub peer contract, for the two Python pubsub peer programs (stdlib + trio only):
``py/pubsub_peer.py`` (py-libp2p, runs in its own virtualenv, which has no mycel) and ``go_pubsub.py``.

    <peer> pubsub --router gossipsub|floodsub [--ip 127.0.0.1]

The peer listens on TCP 127.0.0.1 (Noise + yamux), prints one ready line
``{"peer_id": ..., "addrs": [".../p2p/<id>"], "protocols": [pubsub protocol ids it serves]}``, then reads
JSON commands on stdin, one per line, and answers each with ``{"reply": <id>, "ok": true, ...}`` or
``{"reply": <id>, "ok": false, "error": "..."}``. Commands run concurrently (a slow ``connect`` does not
hold up a ``peers``), so replies may come out of order: match them by id.

    {"id": 1, "cmd": "connect", "addr": "<multiaddr with /p2p/>"}
    {"id": 2, "cmd": "subscribe", "topic": "t"}
    {"id": 3, "cmd": "publish", "topic": "t", "data": "<hex>"}
    {"id": 4, "cmd": "peers", "topic": "t"}    -> "peers": [ids of peers known subscribed to t],
                                                  "protocols": {id: pubsub protocol of our stream to it}
                                                  (the ones the implementation can tell; go: none)
    {"id": 5, "cmd": "mesh", "topic": "t"}     -> "peers": [mesh peer ids]; ok=false "unsupported: ..."

Every message delivered to the app on a subscribed topic, except the peer's own, is printed as
``{"event": "message", "topic", "data": hex, "from": id|null, "seqno": hex|null, "received_from": id|null}``.
The peer exits on stdin EOF or SIGTERM. Logs go to stderr. The js peer (``js/pubsub.mjs``) follows the
same contract; ``interop/pubsub.py`` drives all three.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from interop import cases
from interop.cases import emit as emit  # re-exported: the peer programs print through it

log = logging.getLogger("mycel.interop.pubsub")

ROUTERS = ("gossipsub", "floodsub")
MAX_COMMAND_LINE = 1024 * 1024  # a longer stdin line is a broken driver: the peer stops reading
UNSUPPORTED_PREFIX = "unsupported: "


class CommandError(Exception):
    """A command failed; the message is the reply's ``error``."""


class Unsupported(CommandError):
    """The implementation cannot do this (e.g. p2pd cannot list a mesh)."""

    def __init__(self, reason: str) -> None:
        super().__init__(UNSUPPORTED_PREFIX + reason)


class PubsubNode(Protocol):
    """What a peer program plugs into :func:`serve_commands`."""

    async def connect(self, addr: str) -> None: ...

    async def subscribe(self, topic: str) -> None: ...

    async def publish(self, topic: str, data: bytes) -> dict[str, Any]:
        """Publish; the returned fields go into the reply (may be empty)."""
        ...

    async def peers(self, topic: str) -> list[str]: ...

    def negotiated(self) -> dict[str, str]:
        """Peer id -> the pubsub protocol of our stream to it, where the implementation can tell."""
        ...

    async def mesh(self, topic: str) -> list[str]:
        """The topic's mesh peers; raise :class:`Unsupported` where the implementation cannot tell."""
        ...


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="libp2p pubsub interop peer (see interop/README.md)")
    sub = parser.add_subparsers(dest="mode", required=True)
    ps = sub.add_parser("pubsub", help="run a pubsub peer driven by JSON commands on stdin")
    ps.add_argument("--router", choices=ROUTERS, required=True)
    ps.add_argument("--ip", default="127.0.0.1")
    return parser.parse_args(argv)


def main(run: Callable[[argparse.Namespace], Awaitable[int]], argv: list[str] | None = None) -> int:
    """A peer program's ``main``: parse the command line, set up logging, refuse anything but
    127.0.0.1 (``{"unsupported": ...}``, exit 3), then ``trio.run(run, args)``."""
    return start(run, parse_args(argv))


def start(run: Callable[[argparse.Namespace], Awaitable[int]], args: argparse.Namespace) -> int:
    """:func:`main` after parsing (``dht_contract.main`` parses its own command line)."""
    cases.setup_logging()
    if args.ip != "127.0.0.1":
        return cases.unsupported("interop peers stay on 127.0.0.1")
    return trio.run(run, args)


def emit_message(topic: str, data: bytes, source: str | None, seqno: bytes | None, received_from: str | None) -> None:
    emit(
        {
            "event": "message",
            "topic": topic,
            "data": data.hex(),
            "from": source,
            "seqno": seqno.hex() if seqno is not None else None,
            "received_from": received_from,
        }
    )


def _field(cmd: dict[str, Any], name: str) -> str:
    value = cmd.get(name)
    if not isinstance(value, str):
        raise CommandError(f"{cmd.get('cmd')}: {name!r} must be a string")
    return value


async def run_command(node: PubsubNode, cmd: dict[str, Any]) -> dict[str, Any]:
    """One command's reply fields (without ``reply``/``ok``); raises CommandError and anything else."""
    name = cmd.get("cmd")
    if name == "connect":
        await node.connect(_field(cmd, "addr"))
        return {}
    if name == "subscribe":
        await node.subscribe(_field(cmd, "topic"))
        return {}
    if name == "publish":
        try:
            data = bytes.fromhex(_field(cmd, "data"))
        except ValueError as exc:
            raise CommandError(f"publish: data is not hex: {exc}") from exc
        return await node.publish(_field(cmd, "topic"), data)
    if name == "peers":
        peers = sorted(await node.peers(_field(cmd, "topic")))
        negotiated = node.negotiated()
        return {"peers": peers, "protocols": {p: negotiated[p] for p in peers if p in negotiated}}
    if name == "mesh":
        return {"peers": sorted(await node.mesh(_field(cmd, "topic")))}
    raise CommandError(f"unknown command {name!r}")


Runner = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]  # a command -> its reply fields


async def _answer(runner: Runner, cmd: dict[str, Any]) -> None:
    reply: dict[str, Any] = {"reply": cmd.get("id")}
    try:
        reply.update(await runner(cmd), ok=True)
    except Exception as exc:  # every failure is the driver's to see, in the reply
        detail = str(exc) if isinstance(exc, CommandError) else f"{type(exc).__name__}: {exc}"
        log.info("command %s failed: %s", cmd.get("cmd"), detail)
        reply.update(ok=False, error=detail or type(exc).__name__)
    emit(reply)


async def serve_commands(node: PubsubNode) -> None:
    """Answer stdin commands until stdin reaches EOF or SIGTERM/SIGINT arrives."""

    async def runner(cmd: dict[str, Any]) -> dict[str, Any]:
        return await run_command(node, cmd)

    await serve_commands_with(runner)


async def serve_commands_with(runner: Runner) -> None:
    """The command loop behind :func:`serve_commands` (``dht_contract`` serves its commands with it):
    each stdin line is a command run concurrently by ``runner``, its reply printed; until stdin EOF or
    SIGTERM/SIGINT."""
    async with trio.open_nursery() as nursery:
        buf = bytearray()

        def on_data(data: bytes) -> bool:
            nonlocal buf
            buf += data
            *lines, rest = buf.split(b"\n")
            buf = bytearray(rest)
            if len(buf) > MAX_COMMAND_LINE:
                log.error("stdin line longer than %d bytes: stopping", MAX_COMMAND_LINE)
                return True
            for line in lines:
                if not line.strip():
                    continue
                try:
                    cmd = json.loads(line)
                except ValueError:
                    cmd = None
                if not isinstance(cmd, dict):
                    emit({"reply": None, "ok": False, "error": f"not a JSON object: {line[:200]!r}"})
                    continue
                nursery.start_soon(_answer, runner, cmd)
            return False

        async def read_stdin() -> None:
            await cases.read_stdin(on_data)
            nursery.cancel_scope.cancel()

        nursery.start_soon(read_stdin)
        nursery.start_soon(cases.cancel_on_signal, nursery.cancel_scope)
