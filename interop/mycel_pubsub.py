"""mycel's pubsub service in-process, behind the same interface as the go / js / py peer programs.

    async with open_mycel_pubsub_peer("gossipsub") as mycel:     # a PubsubNode (interop/pubsub.py)
        await mycel.subscribe("t"); await mycel.connect(js.addrs[0])

A mycel host on TCP + Noise + yamux, 127.0.0.1, with Identify and ``Gossipsub()`` or ``Floodsub()`` at
their defaults (the lead's API: ``host.service(Gossipsub)``, ``ps.subscribe``, ``ps.publish``,
``ps.peers``, ``ps.mesh``, ``ps.wait_ready``). Unlike a peer program its state is in this process, so the
waits are events, not polls: topic peers wake on the host's events (PeerJoinedTopic and the rest), the
mesh on ``wait_ready`` (a mesh peer more is a peer more a message goes to).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from typing import Any

import trio

from interop.mycel_side import mycel_config
from interop.peers import Stack
from interop.pubsub import CommandFailed, PubsubImpl, PubsubMessage, PubsubNode, PubsubTimeout, Router
from mycel.host import Host, open_host
from mycel.protocols.identify import Identify
from mycel.protocols.pubsub import (
    FLOODSUB,
    GOSSIPSUB_V10,
    GOSSIPSUB_V11,
    GOSSIPSUB_V12,
    Floodsub,
    Gossipsub,
    PublishError,
    Subscription,
)
from mycel.protocols.pubsub import PubsubMessage as MycelMessage
from mycel.protocols.pubsub.core import PeerKind

MYCEL = PubsubImpl(
    key="mycel",
    name="mycel (in-process)",
    program=(),
    reports_mesh=True,
    reports_received_from=True,
    reports_protocols=True,
)
KIND_PROTOCOL = {
    PeerKind.FLOODSUB: FLOODSUB,
    PeerKind.GOSSIPSUB_V10: GOSSIPSUB_V10,
    PeerKind.GOSSIPSUB_V11: GOSSIPSUB_V11,
    PeerKind.GOSSIPSUB_V12: GOSSIPSUB_V12,
}
LOG_LINES = 200  # host events kept for error messages


def to_message(msg: MycelMessage) -> PubsubMessage:
    return PubsubMessage(
        topic=msg.topic,
        data=msg.data,
        source=str(msg.source) if msg.source is not None else None,
        seqno=msg.seqno.hex() if msg.seqno is not None else None,
        received_from=str(msg.received_from) if msg.received_from is not None else None,
    )


class MycelPubsubPeer(PubsubNode):
    """A mycel host with its pubsub service, driven by method calls."""

    def __init__(self, host: Host, service: Gossipsub, router: Router, nursery: trio.Nursery) -> None:
        super().__init__(MYCEL, router)
        self.host = host
        self.service = service
        self.nursery = nursery
        self.peer_id = str(host.peer_id)
        self.addrs = [str(a) for a in host.addrs]
        self.protocols = list(service.protocols)
        self._events: list[str] = []
        self._state_changed = trio.Event()  # set (and replaced) on every host event

    @property
    def log(self) -> str:
        return "\n".join(self._events[-LOG_LINES:])

    async def _watch_events(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.host.subscribe() as events:
            task_status.started()
            async for event in events:
                self._events.append(repr(event))
                del self._events[:-LOG_LINES]
                self._state_changed.set()
                self._state_changed = trio.Event()

    async def connect(self, addr: str) -> None:
        await self.host.connect(addr)

    async def subscribe(self, topic: str) -> None:
        await self.nursery.start(self._subscription, topic)

    async def _subscription(self, topic: str, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self.service.subscribe(topic) as sub:
            task_status.started()
            await self._forward(sub)

    async def _forward(self, sub: Subscription) -> None:
        async for msg in sub:
            self._deliver(to_message(msg))

    async def publish(self, topic: str, data: bytes) -> dict[str, Any]:
        try:
            report = await self.service.publish(topic, data)
        except PublishError as exc:
            raise CommandFailed(str(self.error(f"publish on {topic!r} failed: {exc}")), str(exc)) from exc
        return {"recipients": [str(p) for p in report.peers]}

    async def peers(self, topic: str) -> list[str]:
        return [str(p) for p in self.service.peers(topic)]

    async def negotiated(self, topic: str) -> dict[str, str]:
        states = self.service.router.peers  # peer -> what its pubsub stream speaks
        return {str(p): KIND_PROTOCOL[states[p].kind] for p in self.service.peers(topic) if p in states}

    async def mesh(self, topic: str) -> list[str] | None:
        if isinstance(self.service, Floodsub):
            return None
        return [str(p) for p in self.service.mesh(topic)]

    # --- waiting: on events (the state is in this process) ---

    async def _wait_for(self, what: str, check: Callable[[], bool], wake: Callable[[], Any], timeout: float) -> None:
        with trio.move_on_after(timeout):
            while not check():
                await wake()
            return
        raise self.error(f"{what}: not after {timeout:g}s", PubsubTimeout)

    async def wait_topic_peers(self, topic: str, peer_ids: Collection[str], timeout: float = 20.0) -> list[str]:
        want = set(peer_ids)

        def check() -> bool:
            return want <= {str(p) for p in self.service.peers(topic)}

        async def wake() -> None:
            await self._state_changed.wait()  # PeerJoinedTopic and every other host event

        await self._wait_for(f"topic peers of {topic!r} to include {sorted(want)}", check, wake, timeout)
        return await self.peers(topic)

    async def wait_mesh(self, topic: str, peer_ids: Collection[str], timeout: float = 20.0) -> list[str] | None:
        if isinstance(self.service, Floodsub):
            return None
        want = set(peer_ids)

        def check() -> bool:
            return want <= {str(p) for p in self.service.mesh(topic)}

        async def wake() -> None:
            # a peer grafted is one more peer a message would go to
            await self.service.wait_ready(topic, min_peers=self.service.router.ready_peers(topic) + 1)

        await self._wait_for(f"mesh of {topic!r} to include {sorted(want)}", check, wake, timeout)
        return await self.mesh(topic)

    async def wait_negotiated(self, topic: str, peer_id: str, timeout: float = 20.0) -> str | None:
        """Known once the peer is a topic peer (its subscriptions come over its pubsub stream)."""
        await self.wait_topic_peers(topic, [peer_id], timeout)
        return (await self.negotiated(topic)).get(peer_id)


@asynccontextmanager
async def open_mycel_pubsub_peer(router: Router) -> AsyncIterator[MycelPubsubPeer]:
    """A mycel host with ``Gossipsub()`` or ``Floodsub()`` listening on 127.0.0.1, closed on exit."""
    service: Gossipsub = Floodsub() if router == "floodsub" else Gossipsub()
    config = mycel_config(Stack("tcp", "noise", "yamux"), [Identify(), service], listen=True)
    async with open_host(config) as host, trio.open_nursery() as nursery:
        peer = MycelPubsubPeer(host, host.service(type(service)), router, nursery)
        await nursery.start(peer._watch_events)
        try:
            yield peer
        finally:
            peer._stopped()
            nursery.cancel_scope.cancel()
