"""Drive the real go / js / py-libp2p pubsub peers from trio (the contract: ``pubsub_contract.py``).

    from interop.pubsub import open_pubsub_peer, publish_until_received

    async with open_pubsub_peer("js", "gossipsub") as js, open_pubsub_peer("go", "gossipsub") as go:
        await js.subscribe("t"); await go.subscribe("t")
        await js.connect(go.addrs[0])
        await js.wait_topic_peers("t", [go.peer_id]); await go.wait_topic_peers("t", [js.peer_id])
        await js.wait_mesh("t", [go.peer_id])            # None where the peer cannot tell (go, floodsub)
        got = await publish_until_received(js, "t", b"hi", [go])
        got[go.peer_id].source == js.peer_id
        msg = await go.next_message(timeout=5)            # or: async for msg in go: ...

``PubsubNode`` is the interface; ``PubsubPeer`` runs a peer program, ``interop.mycel_pubsub`` runs mycel
in-process behind the same interface, and ``interop.pubsub_cells`` holds the scenarios for any mix.

Each peer is a subprocess in its own process group, stopped by PID on exit (stdin EOF, then SIGTERM,
then SIGKILL to its group, which also takes p2pd down with go_pubsub.py), whether the body failed or
not. Its stderr is kept (the last 256 KiB, ``peer.log``) and the tail is attached to every error.

Nothing here sleeps to wait for something to happen. Messages are events (the peer prints them).
Subscriptions and meshes are state inside a remote process that has no event for them, so
``wait_topic_peers`` / ``wait_mesh`` poll the ``peers`` / ``mesh`` command every ``POLL_INTERVAL``
until a deadline; that interval is the only ``trio.sleep``.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import trio

from interop.command_peer import CommandFailedMixin, CommandProcess, open_peer_program, ready_fields
from interop.peers import INTEROP_DIR, MAX_EVENTS, PeerError, _repo_python

log = logging.getLogger("mycel.interop.pubsub")

ImplKey = Literal["go", "js", "py"]  # the peer programs
NodeKey = Literal["go", "js", "py", "mycel"]  # and mycel in-process (interop/mycel_pubsub.py)
Router = Literal["gossipsub", "floodsub"]
ROUTERS: tuple[Router, ...] = ("gossipsub", "floodsub")

READY_TIMEOUT = 60.0
COMMAND_TIMEOUT = 30.0
POLL_INTERVAL = 0.1  # seconds between two polls of a remote peer's state (peers / mesh)
ERROR_LOG_TAIL = 6000  # characters of a peer's stderr attached to an error message


@dataclass(frozen=True)
class PubsubImpl:
    """One implementation: its pubsub peer program (none for mycel, which runs in-process) and what it
    can report."""

    key: NodeKey
    name: str
    program: tuple[str, ...]
    reports_mesh: bool  # can its gossipsub router list a topic's mesh (the `mesh` command)?
    reports_received_from: bool  # does a message event say which peer forwarded it?
    reports_protocols: bool  # does `peers` say which pubsub protocol it speaks with each peer?

    def missing(self) -> str | None:
        """Why the peer program cannot run here (not installed), or None."""
        if self.program and not Path(self.program[0]).exists():
            return f"{self.program[0]} missing: run interop/install.sh"
        return None

    def command(self, router: Router) -> list[str]:
        return [*self.program, "pubsub", "--router", router]


IMPLS: dict[ImplKey, PubsubImpl] = {
    "go": PubsubImpl(
        key="go",
        name="go-libp2p-pubsub v0.10.0 (p2pd from hivemind 1.1.12)",
        program=(_repo_python(), str(INTEROP_DIR / "go_pubsub.py")),
        reports_mesh=False,
        reports_received_from=False,
        reports_protocols=False,
    ),
    "js": PubsubImpl(
        key="js",
        name="@libp2p/gossipsub 17.1.1 / @libp2p/floodsub 11.0.28 (libp2p 3.3.11)",
        program=(str(INTEROP_DIR / "js" / "node_modules" / "node" / "bin" / "node"), str(INTEROP_DIR / "js" / "pubsub.mjs")),
        reports_mesh=True,
        reports_received_from=True,
        reports_protocols=True,
    ),
    "py": PubsubImpl(
        key="py",
        name="py-libp2p 0.8.1",
        program=(str(INTEROP_DIR / ".peers" / "py-venv" / "bin" / "python"), str(INTEROP_DIR / "py" / "pubsub_peer.py")),
        reports_mesh=True,
        reports_received_from=True,
        reports_protocols=True,
    ),
}


class PubsubPeerError(PeerError):
    """A pubsub peer failed, broke the contract, or was too slow; the message ends with its stderr tail."""


class CommandFailed(CommandFailedMixin, PubsubPeerError):
    """The peer answered a command with ok=false; ``error`` is its reason (``unsupported``: it cannot)."""


class PubsubTimeout(PubsubPeerError):
    """What we waited for did not happen before the deadline."""


@dataclass(frozen=True)
class PubsubMessage:
    """A message a peer delivered to its app. ``source``: the author's peer id (None if unsigned);
    ``seqno``: hex; ``received_from``: the peer that forwarded it, where the implementation says."""

    topic: str
    data: bytes
    source: str | None
    seqno: str | None
    received_from: str | None

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> PubsubMessage:
        def opt(name: str) -> str | None:
            value = event.get(name)
            return str(value) if value is not None else None

        return cls(
            topic=str(event["topic"]),
            data=bytes.fromhex(str(event["data"])),
            source=opt("from"),
            seqno=opt("seqno"),
            received_from=opt("received_from"),
        )


class PubsubNode:
    """A pubsub node under test, whatever runs it: ``peer_id``, ``addrs``, ``protocols``, the contract's
    commands, the messages it delivered, and waiting helpers. :class:`PubsubPeer` is a peer program;
    ``interop.mycel_pubsub.MycelPubsubPeer`` is mycel in-process."""

    def __init__(self, impl: PubsubImpl, router: Router) -> None:
        self.impl = impl
        self.router = router
        self.peer_id = ""
        self.addrs: list[str] = []
        self.protocols: list[str] = []
        self._messages: deque[PubsubMessage] = deque(maxlen=MAX_EVENTS)
        self._dropped = 0  # messages pushed out of the bounded deque
        self._cursor = 0  # absolute index of the next message next_message() returns
        self._arrived = trio.Event()  # set (and replaced) whenever a message arrives or the node stops
        self._closed = False
        self._contract_errors: list[str] = []

    def __repr__(self) -> str:
        return f"<{self.impl.key} {self.router} {self.peer_id or '(starting)'}>"

    @property
    def label(self) -> str:
        return f"{self.impl.key}/{self.router}"

    @property
    def log(self) -> str:
        """What the node logged (a peer program's stderr tail)."""
        return ""

    @property
    def received(self) -> list[PubsubMessage]:
        """Every message delivered so far (the last ``MAX_EVENTS``), in arrival order."""
        return list(self._messages)

    def error(self, message: str, cls: type[PubsubPeerError] = PubsubPeerError) -> PubsubPeerError:
        tail = self.log[-ERROR_LOG_TAIL:]
        return cls(f"{self.label} {self.peer_id}: {message}\n--- {self.label} log (tail) ---\n{tail}")

    def contract_errors(self) -> list[str]:
        """Contract violations seen so far (bad stdout lines, replies to nothing)."""
        return list(self._contract_errors)

    def _wake(self) -> None:
        self._arrived.set()
        self._arrived = trio.Event()

    def _deliver(self, msg: PubsubMessage) -> None:
        if len(self._messages) == self._messages.maxlen:
            self._dropped += 1
        self._messages.append(msg)
        self._wake()

    def _stopped(self) -> None:
        self._closed = True
        self._wake()

    def _exit_status(self) -> str:
        return "the node stopped"

    # --- commands (the contract's) ---

    async def connect(self, addr: str) -> None:
        raise NotImplementedError

    async def subscribe(self, topic: str) -> None:
        raise NotImplementedError

    async def publish(self, topic: str, data: bytes) -> dict[str, Any]:
        """Publish ``data``; the reply's fields (js adds ``recipients``). CommandFailed if refused."""
        raise NotImplementedError

    async def peers(self, topic: str) -> list[str]:
        """Peers the router knows to be subscribed to ``topic``."""
        raise NotImplementedError

    async def negotiated(self, topic: str) -> dict[str, str]:
        """Topic peer -> the pubsub protocol of the node's stream to it, where the implementation says."""
        raise NotImplementedError

    async def mesh(self, topic: str) -> list[str] | None:
        """The topic's mesh peers; None where the implementation cannot tell (go's p2pd, floodsub)."""
        raise NotImplementedError

    # --- waiting ---

    async def wait_topic_peers(self, topic: str, peer_ids: Collection[str], timeout: float = 20.0) -> list[str]:
        """Poll ``peers`` until it lists every one of ``peer_ids``; return the last answer."""
        return await self._poll(f"topic peers of {topic!r}", lambda: self.peers(topic), peer_ids, timeout)

    async def wait_mesh(self, topic: str, peer_ids: Collection[str], timeout: float = 20.0) -> list[str] | None:
        """Poll ``mesh`` until it lists every one of ``peer_ids``; None if the peer cannot tell."""
        if await self.mesh(topic) is None:
            return None

        async def mesh() -> list[str]:
            return await self.mesh(topic) or []

        return await self._poll(f"mesh of {topic!r}", mesh, peer_ids, timeout)

    async def wait_negotiated(self, topic: str, peer_id: str, timeout: float = 20.0) -> str | None:
        """The pubsub protocol of this peer's stream to ``peer_id`` once there is one; None if it cannot tell."""
        if not self.impl.reports_protocols:
            return None
        deadline = trio.current_time() + timeout
        while (protocol := (await self.negotiated(topic)).get(peer_id)) is None:
            if trio.current_time() >= deadline:
                raise self.error(f"no pubsub stream to {peer_id} after {timeout:g}s", PubsubTimeout)
            await trio.sleep(POLL_INTERVAL)  # remote state without an event: poll it (bounded above)
        return protocol

    async def _poll(
        self, what: str, query: Callable[[], Awaitable[list[str]]], want: Collection[str], timeout: float
    ) -> list[str]:
        deadline = trio.current_time() + timeout
        while True:
            got = await query()
            if set(want) <= set(got):
                return got
            if trio.current_time() >= deadline:
                raise self.error(f"{what}: want {sorted(want)}, still {sorted(got)} after {timeout:g}s", PubsubTimeout)
            # the remote peer has no event for this: poll it (bounded by the deadline above)
            await trio.sleep(POLL_INTERVAL)

    async def next_message(self, timeout: float = 20.0) -> PubsubMessage:
        """The next message in arrival order (each returned once); PubsubTimeout after ``timeout``."""
        with trio.move_on_after(timeout):
            while True:
                first = self._cursor - self._dropped
                if first < 0:  # older messages were pushed out of the bounded buffer
                    self._cursor, first = self._dropped, 0
                if first < len(self._messages):
                    self._cursor += 1
                    return self._messages[first]
                if self._closed:
                    raise self.error(f"no more messages: {self._exit_status()}")
                await self._arrived.wait()
        raise self.error(f"no message within {timeout:g}s", PubsubTimeout)

    def __aiter__(self) -> PubsubNode:
        return self

    async def __anext__(self) -> PubsubMessage:
        try:
            return await self.next_message(timeout=math.inf)
        except PubsubPeerError:
            if self._closed:
                raise StopAsyncIteration from None
            raise

    def find_message(self, predicate: Callable[[PubsubMessage], bool]) -> PubsubMessage | None:
        return next((m for m in self._messages if predicate(m)), None)

    async def wait_for_message(self, predicate: Callable[[PubsubMessage], bool], timeout: float) -> PubsubMessage:
        """The first message so far (or to come) that matches; does not move ``next_message``'s place."""
        with trio.move_on_after(timeout):
            while True:
                found = self.find_message(predicate)
                if found is not None:
                    return found
                if self._closed:
                    raise self.error(f"{self._exit_status()} before a matching message")
                await self._arrived.wait()
        raise self.error(f"no matching message within {timeout:g}s; got {self.received!r}", PubsubTimeout)

class PubsubPeer(PubsubNode):
    """A running pubsub peer program (go, js or py), driven over its stdin and stdout."""

    def __init__(self, impl: PubsubImpl, router: Router, proc: trio.Process) -> None:
        super().__init__(impl, router)
        self.info: dict[str, Any] = {}  # the whole ready line
        self.process = CommandProcess(proc, self._on_ready, self._on_event, self._stopped, self._contract_errors)

    @property
    def log(self) -> str:
        return self.process.log

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def _exit_status(self) -> str:
        return f"the peer exited (returncode {self.returncode})"

    # --- output ---

    def _on_ready(self, obj: dict[str, Any]) -> None:
        self.info = obj
        self.peer_id, self.addrs, self.protocols = ready_fields(obj)

    def _on_event(self, obj: dict[str, Any], line: bytes) -> None:
        if obj.get("event") != "message":
            return
        try:
            msg = PubsubMessage.from_event(obj)
        except (KeyError, ValueError) as exc:
            self._contract_errors.append(f"bad message event ({exc}): {line[:200]!r}")
            return
        self._deliver(msg)

    # --- commands ---

    async def request(self, cmd: str, timeout: float = COMMAND_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Send one command; return its reply. CommandFailed on ok=false, PubsubTimeout after ``timeout``."""
        return await self.process.request(cmd, fields, timeout, self._request_error, CommandFailed)

    def _request_error(self, message: str, timed_out: bool) -> PeerError:
        return self.error(message, PubsubTimeout if timed_out else PubsubPeerError)

    async def connect(self, addr: str) -> None:
        await self.request("connect", addr=addr)

    async def subscribe(self, topic: str) -> None:
        await self.request("subscribe", topic=topic)

    async def publish(self, topic: str, data: bytes) -> dict[str, Any]:
        return await self.request("publish", topic=topic, data=data.hex())

    async def peers(self, topic: str) -> list[str]:
        return [str(p) for p in (await self.request("peers", topic=topic))["peers"]]

    async def negotiated(self, topic: str) -> dict[str, str]:
        reply = await self.request("peers", topic=topic)  # js and py say; go's p2pd cannot
        return {str(k): str(v) for k, v in dict(reply.get("protocols") or {}).items()}

    async def mesh(self, topic: str) -> list[str] | None:
        try:
            return [str(p) for p in (await self.request("mesh", topic=topic))["peers"]]
        except CommandFailed as exc:
            if exc.unsupported:
                return None
            raise


@asynccontextmanager
async def open_pubsub_peer(
    impl: ImplKey | PubsubImpl, router: Router, ready_timeout: float = READY_TIMEOUT
) -> AsyncIterator[PubsubPeer]:
    """Start a pubsub peer and wait for its ready line; stop it (by PID) on exit, even on failure."""
    spec = IMPLS[impl] if isinstance(impl, str) else impl
    missing = spec.missing()
    if missing is not None:
        raise PubsubPeerError(f"{spec.key}: {missing}")
    cmd = spec.command(router)
    log.info("starting %s %s pubsub peer: %s", spec.key, router, " ".join(cmd))
    async with open_peer_program(cmd, lambda proc: PubsubPeer(spec, router, proc), ready_timeout) as peer:
        yield peer


def expected_protocol(dialer_protocols: Collection[str], listener_protocols: Collection[str]) -> str | None:
    """What multistream-select should settle on: the newest pubsub protocol both serve (every peer here
    proposes newest first, /floodsub/1.0.0 last); None if they share none."""

    def rank(protocol: str) -> tuple[int, tuple[int, ...]]:
        name, _, version = protocol.strip("/").partition("/")
        numbers = tuple(int(x) for x in version.split(".") if x.isdigit())
        return (0 if name == "floodsub" else 1, numbers)

    common = set(dialer_protocols) & set(listener_protocols)
    return max(common, key=rank) if common else None


async def publish_until_received(
    publisher: PubsubNode,
    topic: str,
    data: bytes,
    receivers: Sequence[PubsubNode],
    timeout: float = 20.0,
    retry_after: float = 2.0,
) -> dict[str, PubsubMessage]:
    """Publish ``data`` until every receiver delivered a message with it authored by ``publisher``.

    Publishes again (same data, new seqno) when ``retry_after`` passes without every receiver having it,
    or after a failed publish (js gossipsub refuses while it knows no peer on the topic). Returns the first
    matching message per receiver peer id. Receivers may see the data more than once.
    """
    deadline = trio.current_time() + timeout

    def matches(msg: PubsubMessage) -> bool:
        return msg.topic == topic and msg.data == data and msg.source == publisher.peer_id

    got: dict[str, PubsubMessage] = {}
    failures: list[str] = []
    while True:
        try:
            await publisher.publish(topic, data)
            published = True
        except CommandFailed as exc:
            failures.append(exc.error)
            published = False
        if published:
            window_end = min(deadline, trio.current_time() + retry_after)
            for receiver in receivers:
                if receiver.peer_id in got:
                    continue
                try:
                    got[receiver.peer_id] = await receiver.wait_for_message(
                        matches, timeout=max(0.0, window_end - trio.current_time())
                    )
                except PubsubTimeout:
                    pass
            if len(got) == len(receivers):
                return got
        if trio.current_time() >= deadline:
            missing = [r for r in receivers if r.peer_id not in got]
            details = "\n".join(str(r.error(f"received {r.received!r}")) for r in missing)
            raise publisher.error(
                f"{data!r} on {topic!r} did not reach {[r.label for r in missing]} within {timeout:g}s "
                f"(publish failures: {failures[-3:]})\n{details}",
                PubsubTimeout,
            )
        if not published:
            # refused at once (js gossipsub while it knows no peer on the topic): that is state in the
            # remote process with no event for it, so poll again shortly (bounded by the deadline)
            await trio.sleep(min(POLL_INTERVAL, max(0.0, deadline - trio.current_time())))

__all__ = [
    "IMPLS", "ROUTERS", "CommandFailed", "ImplKey", "NodeKey", "PubsubImpl", "PubsubMessage", "PubsubNode", "PubsubPeer",
    "PubsubPeerError", "PubsubTimeout", "Router", "expected_protocol", "open_pubsub_peer", "publish_until_received",
]  # fmt: skip
