"""``mycel chat``: a chat room on a gossipsub topic, one line a message.

**What goes on the wire.** Each line is published as plain UTF-8 text: ``nick: text`` when a nickname
is set, the bare text without one. Plain text is what the js-libp2p and go-libp2p chat peers of
libp2p/universal-connectivity publish and print, so in a room shared with them our lines read
``alice: hello`` on their screens and theirs show here as they are; a JSON envelope would reach their
users as raw JSON. A nickname is only a claim (anyone can write ``alice: ...``), so every message is
shown with the tail of its author's peer id too, which the message's signature proves.

**Finding peers.** ``--connect`` names them; without it the chat looks for peers on the local network
by mDNS (and listens on every interface so that they can reach it) unless ``--no-mdns`` is given.

**Who is there.** Gossipsub keeps no member list: a peer is in the room for us while it is connected
to us and subscribed to the topic (the service's ``PeerJoinedTopic`` / ``PeerLeftTopic`` events).
Peers of a peer are not seen, though their messages arrive through it.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence

import trio
from multiaddr import Multiaddr

from mycel.cli.main import CliError, listen_addrs
from mycel.cli.pubsub import connect_all, pubsub_config, safe_text, short_id
from mycel.core.peer_id import PeerId
from mycel.discovery.mdns import MDNS
from mycel.host import EventSubscription, Host, open_host
from mycel.protocols.pubsub import Gossipsub, PeerJoinedTopic, PeerLeftTopic, PublishError, PubsubMessage

NICK = re.compile(r"[^\s:]{1,32}")
"""A nickname: 1 to 32 characters, no white space, no colon (the separator)."""
_NICK_LINE = re.compile(r"([^\s:]{1,32}): (.*)", re.S)
MAX_NICKS = 4096  # nicknames remembered (peer -> last nick it wrote with), oldest forgotten first
FLUSH_TIMEOUT = 2.0  # seconds to let the last lines leave on exit
HELP = "/peers: who is in the room   /quit: leave (or Ctrl-D, Ctrl-C)   anything else: say it"


def encode_line(nick: str | None, text: str) -> bytes:
    """What a line typed by ``nick`` is published as."""
    return f"{nick}: {text}".encode() if nick else text.encode()


def parse_line(data: bytes) -> tuple[str | None, str]:
    """``(nick, text)`` of a received message; ``nick`` is None for plain text without a ``nick: ``
    prefix. Neither is escaped yet."""
    text = data.decode("utf-8", "backslashreplace")
    m = _NICK_LINE.fullmatch(text)
    return (m[1], m[2]) if m else (None, text)


async def stdin_lines(fd: int = 0) -> AsyncIterator[str]:
    """Lines typed on ``fd`` (UTF-8, line ends removed) until end of file.

    A thread reads with ``os.read``: unbuffered, so a read still waiting when the chat ends holds no
    lock the interpreter needs at exit; the thread is abandoned on cancellation.
    """
    buf = b""
    while True:
        chunk = await trio.to_thread.run_sync(os.read, fd, 65536, abandon_on_cancel=True)
        if not chunk:
            if buf:
                yield buf.decode("utf-8", "replace").rstrip("\r")
            return
        buf += chunk
        while b"\n" in buf:
            line, _, buf = buf.partition(b"\n")
            yield line.decode("utf-8", "replace").rstrip("\r")


class ChatRoom:
    """One chat on ``topic`` for an open host that runs :class:`Gossipsub`; every line it shows goes to
    ``out`` (system lines start with ``* ``, messages are ``<nick peer> text``)."""

    def __init__(self, host: Host, topic: str, nick: str | None, out: Callable[[str], None]) -> None:
        self.host = host
        self.pubsub = host.service(Gossipsub)
        self.topic = topic
        self.nick = nick
        self.out = out
        self.nicks: dict[PeerId, str] = {}
        self.present: set[PeerId] = set()
        self._active = trio.CancelScope()

    def stop(self) -> None:
        """Stop connecting and reading lines (Ctrl-C): :meth:`run` then leaves the room and returns."""
        self._active.cancel()

    def label(self, peer: PeerId) -> str:
        """``bob (1a2b3c4d)`` once ``peer`` has written as bob, else ``1a2b3c4d``."""
        nick = self.nicks.get(peer)
        return f"{safe_text(nick)} ({short_id(peer)})" if nick else short_id(peer)

    def show_message(self, msg: PubsubMessage) -> None:
        """Print a received message with who wrote it, and remember the author's nickname."""
        nick, text = parse_line(msg.data)
        if msg.source is not None:
            who = short_id(msg.source)
            if nick is not None:
                self.nicks.pop(msg.source, None)
                self.nicks[msg.source] = nick
                if len(self.nicks) > MAX_NICKS:
                    del self.nicks[next(iter(self.nicks))]
        else:  # unsigned (StrictNoSign): no author, only the neighbour that relayed it
            who = f"? via {short_id(msg.received_from)}" if msg.received_from is not None else "?"
        self.out(f"<{safe_text(nick)} {who}> {safe_text(text)}" if nick else f"<{who}> {safe_text(text)}")

    def _membership(self, peer: PeerId, present: bool) -> None:
        if present and peer not in self.present:
            self.present.add(peer)
            self.out(f"* {self.label(peer)} joined {self.topic}")
        elif not present and peer in self.present:
            self.present.discard(peer)
            self.out(f"* {self.label(peer)} left {self.topic}")

    def _resync(self) -> None:
        """After lost events: what changed is the difference with the router's view."""
        now = self.pubsub.peers(self.topic)
        for peer in sorted(now - self.present, key=str):
            self._membership(peer, True)
        for peer in sorted(self.present - now, key=str):
            self._membership(peer, False)

    async def _watch_members(self, events: EventSubscription) -> None:
        lost = events.dropped
        async for event in events:
            if isinstance(event, (PeerJoinedTopic, PeerLeftTopic)) and event.topic == self.topic:
                self._membership(event.peer, isinstance(event, PeerJoinedTopic))
            if events.dropped != lost:
                lost = events.dropped
                self._resync()

    async def _show_messages(self, sub: AsyncIterable[PubsubMessage]) -> None:
        async for msg in sub:
            self.show_message(msg)

    def peers_line(self) -> str:
        """The answer to ``/peers``."""
        peers = sorted(self.pubsub.peers(self.topic), key=str)
        if not peers:
            return f"* no one else is in {self.topic} (among the peers connected to us)"
        mesh = self.pubsub.mesh(self.topic)
        names = ", ".join(self.label(p) + (" [mesh]" if p in mesh else "") for p in peers)
        return f"* {len(peers)} in {self.topic}: {names}"

    async def say(self, text: str) -> None:
        """Publish one line; 'no one is listening' and other refusals are shown, not raised."""
        try:
            await self.pubsub.publish(self.topic, encode_line(self.nick, text))
        except PublishError as exc:
            if not self.pubsub.peers(self.topic):
                self.out(f"* no one is listening yet: not sent (nobody connected to us is in {self.topic})")
            else:
                self.out(f"* not sent: {exc}")

    async def _handle(self, line: str) -> bool:
        """One typed line; False to leave."""
        command = line.strip()
        if command == "/quit":
            return False
        if command == "/peers":
            self.out(self.peers_line())
        elif command == "/help":
            self.out(f"* {HELP}")
        elif command:
            await self.say(line)
        return True

    async def run(self, lines: AsyncIterable[str], connect: Sequence[str] = (), timeout: float = 10.0) -> None:
        """Join the room, show who is there and what they say, publish ``lines`` until they end (or
        ``/quit``, or :meth:`stop`), then leave."""
        pubsub = self.pubsub
        with self.host.subscribe() as events:
            async with pubsub.subscribe(self.topic) as sub, trio.open_nursery() as nursery:
                me = f"{safe_text(self.nick)} ({self.host.peer_id})" if self.nick else str(self.host.peer_id)
                self.out(f"* you are {me}, in {self.topic}")
                for addr in self.host.addrs:
                    self.out(f"* listening on {addr}")
                if self.host.addrs:
                    hint = f"mycel chat --topic {shlex.quote(self.topic)} --connect {self.host.addrs[0]}"
                    self.out(f"* others join with: {safe_text(hint)}")
                nursery.start_soon(self._show_messages, sub)
                nursery.start_soon(self._watch_members, events)
                self._resync()
                with self._active:
                    await self._join(connect, timeout)
                    async for line in lines:
                        if not await self._handle(line):
                            break
                with trio.move_on_after(FLUSH_TIMEOUT):
                    await pubsub.flush()  # the last lines typed leave before we do
                nursery.cancel_scope.cancel()
        self.out("* bye")

    async def _join(self, connect: Sequence[str], timeout: float) -> None:
        if not connect:
            if any(isinstance(s, MDNS) for s in self.host.config.services):
                self.out("* looking for peers on the local network (mDNS)")
            return
        peers = await connect_all(self.host, connect, timeout, report=lambda text: self.out(f"* {text}"))
        try:
            await self.pubsub.wait_ready(self.topic, 1, timeout=timeout)
        except trio.TooSlowError:
            self.out(f"* connected to {len(peers)}, but none of them is in {self.topic} yet")


async def _stop_on_sigint(room: ChatRoom) -> None:
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            room.stop()
            return


def _print(line: str) -> None:
    print(line, flush=True)


async def cmd_chat(args: argparse.Namespace) -> int:
    if args.nick is not None and not NICK.fullmatch(args.nick):
        raise CliError(f"nickname {args.nick!r}: use 1 to 32 characters without spaces or ':'", 2)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")  # a non-UTF-8 terminal still shows every line
    listen = listen_addrs(args)
    mdns = not args.connect and not args.no_mdns
    if mdns and not args.listen:  # peers on the LAN must reach us: every interface, not loopback
        listen = [Multiaddr(str(a).replace("/ip4/127.0.0.1/", "/ip4/0.0.0.0/", 1)) for a in listen]
    config = pubsub_config(args, listen)
    if mdns:
        config = config.replace(services=[*config.services, MDNS()])
    async with open_host(config) as host:
        room = ChatRoom(host, args.topic, args.nick, _print)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_sigint, room)
            await room.run(stdin_lines(), args.connect or [], args.timeout)
            nursery.cancel_scope.cancel()
    return 0

