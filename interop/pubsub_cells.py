"""The pubsub interop scenarios, for any mix of nodes (go, js, py peer programs and mycel in-process).

    pair     (dialer, its router) -> (listener, its router): both subscribe, the dialer connects, each
             lists the other as a topic peer (and as a mesh peer where it can tell and both run
             gossipsub), speaks the newest protocol both serve, and delivers the other's message
             with the right data, author and forwarder.
    network  nodes and the edges between them (a tree: a line or a star): every node's message
             reaches every other node, through the nodes in between (``received_from`` is the
             neighbour on the path, where the receiver says).

What does not work is a finding, documented in interop/README.md ("Pubsub quirks found"): its cell
asserts that exact failure (``UNDELIVERABLE``, js grafting floodsub peers), so it fails once upstream
changes, and the README gets updated. ``run_cells`` runs cells concurrently; a cell's exception is its
outcome, the others go on.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import trio

from interop.pubsub import (
    NodeKey,
    PubsubMessage,
    PubsubNode,
    PubsubTimeout,
    Router,
    expected_protocol,
    open_pubsub_peer,
    publish_until_received,
)
from mycel.core.errors import reraise_unwrapped

CONCURRENT_CELLS = 4
CELL_TIMEOUT = 90.0
NONDELIVERY_WAIT = 3.0  # how long a known-undeliverable message gets before we call it not delivered

# (publisher, receiver, receiver's router) -> why the receiver drops every such message
UNDELIVERABLE: dict[tuple[NodeKey, NodeKey, Router], str] = {
    ("py", "js", "floodsub"): (
        "@libp2p/floodsub 11.0.28 verifies a signature over the message re-encoded from its decoded fields, "
        "with the seqno turned into a BigInt and back: leading zero bytes are lost. py-libp2p's seqno is a "
        "counter started at the unix time (00 00 00 00 6b ...), so every py message fails StrictSign there"
    ),
}
UNDELIVERABLE_LOG = "floodsub rejected a message from {publisher}"  # js/pubsub.mjs's line for such a drop
JS_GRAFTS_FLOODSUB_PEERS = (
    "@libp2p/gossipsub 17.1.1 puts floodsub-only peers in its mesh: fallbackToFloodsub adds /floodsub/1.0.0 "
    "to the router's protocol list, which is also what decides who may be grafted (go, py, mycel do not)"
)


@asynccontextmanager
async def open_node(key: NodeKey, router: Router) -> AsyncIterator[PubsubNode]:
    """A peer program, or mycel in-process (imported only then: the peer cells do not need mycel's pubsub)."""
    if key == "mycel":
        from interop.mycel_pubsub import open_mycel_pubsub_peer

        async with open_mycel_pubsub_peer(router) as node:
            yield node
    else:
        async with open_pubsub_peer(key, router) as peer:
            yield peer


@dataclass
class Outcome:
    error: str | None = None
    findings: list[str] = field(default_factory=list)  # known failures that reproduced as documented
    notes: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    def check(self, cell: str) -> None:
        """AssertionError with the cell's error, if it failed."""
        assert self.error is None, f"{cell} ({self.elapsed:.1f}s): {self.error}"


CellRun = Callable[[Outcome], Awaitable[None]]


def check_message(msg: PubsubMessage, publisher: PubsubNode, receiver: PubsubNode, via: PubsubNode) -> None:
    assert msg.source == publisher.peer_id, f"{receiver.label}: author {msg.source}, want {publisher.peer_id}"
    assert msg.seqno, f"{receiver.label}: a signed message without a seqno: {msg}"
    if receiver.impl.reports_received_from:
        assert msg.received_from == via.peer_id, f"{receiver.label}: forwarded by {msg.received_from}, want {via.label}"


def check_peer(node: PubsubNode) -> None:
    assert node.protocols, f"{node.label} serves no pubsub protocol"
    if node.router == "floodsub":
        assert node.protocols == ["/floodsub/1.0.0"], (node.label, node.protocols)
    else:
        assert "/floodsub/1.0.0" in node.protocols, (node.label, node.protocols)
        assert any(p.startswith("/meshsub/") for p in node.protocols), (node.label, node.protocols)


async def check_link(a: PubsubNode, b: PubsubNode, topic: str, outcome: Outcome) -> None:
    """``a``'s view of its neighbour ``b`` (both subscribed, connected, ``b`` listed as a topic peer):
    the protocol ``a`` speaks to it, and ``a``'s mesh (if ``a`` runs gossipsub and can tell)."""
    negotiated = await a.wait_negotiated(topic, b.peer_id)
    if negotiated is not None:  # each side opens its own stream, proposing newest first
        assert negotiated == expected_protocol(a.protocols, b.protocols), (a.label, b.label, negotiated)
        outcome.notes.append(f"{a.label} speaks {negotiated} to {b.label}")
    if a.router != "gossipsub":
        return
    if b.router == "gossipsub":
        mesh = await a.wait_mesh(topic, [b.peer_id])
        outcome.notes.append(f"{a.label} mesh: {'cannot tell' if mesh is None else 'has ' + b.label}")
    elif a.impl.key == "js":
        await a.wait_mesh(topic, [b.peer_id])  # the quirk: a floodsub peer in a gossipsub mesh
        outcome.findings.append(f"{a.label} grafted {b.label}: {JS_GRAFTS_FLOODSUB_PEERS}")


async def deliver(publisher: PubsubNode, receiver: PubsubNode, topic: str, cell: str, outcome: Outcome) -> None:
    """``publisher``'s message reaches its neighbour ``receiver``, or fails exactly as documented."""
    data = f"{cell}: from {publisher.label} {publisher.peer_id}".encode()
    reason = UNDELIVERABLE.get((publisher.impl.key, receiver.impl.key, receiver.router))
    if reason is None:
        got = await publish_until_received(publisher, topic, data, [receiver])
        check_message(got[receiver.peer_id], publisher, receiver, via=publisher)
        return
    await publisher.publish(topic, data)
    try:
        msg = await receiver.wait_for_message(lambda m: m.data == data, timeout=NONDELIVERY_WAIT)
    except PubsubTimeout:
        expected = UNDELIVERABLE_LOG.format(publisher=publisher.peer_id)
        assert expected in receiver.log and "Invalid message signature" in receiver.log, (
            f"{publisher.label} -> {receiver.label}: not delivered, but not for the documented reason "
            f"({reason})\n{receiver.log[-4000:]}"
        )
        outcome.findings.append(f"{publisher.label} -> {receiver.label} not delivered: {reason}")
        return
    raise AssertionError(
        f"{publisher.label} -> {receiver.label} works now ({msg}): the documented failure is gone, "
        "update UNDELIVERABLE and interop/README.md"
    )


@dataclass(frozen=True)
class PairSpec:
    dialer: NodeKey
    dialer_router: Router
    listener: NodeKey
    listener_router: Router

    @property
    def id(self) -> str:
        return f"{self.dialer}-{self.dialer_router}->{self.listener}-{self.listener_router}"


ROUTER_PAIRS: tuple[tuple[Router, Router], ...] = (
    ("gossipsub", "gossipsub"),
    ("floodsub", "floodsub"),
    ("gossipsub", "floodsub"),  # hybrid, both ways round
    ("floodsub", "gossipsub"),
)


async def run_pair(spec: PairSpec, outcome: Outcome) -> None:
    topic = f"mycel-interop/{spec.id}"
    async with (
        open_node(spec.dialer, spec.dialer_router) as dialer,
        open_node(spec.listener, spec.listener_router) as listener,
    ):
        check_peer(dialer)
        check_peer(listener)
        await dialer.subscribe(topic)
        await listener.subscribe(topic)
        await dialer.connect(listener.addrs[0])
        await dialer.wait_topic_peers(topic, [listener.peer_id])
        await listener.wait_topic_peers(topic, [dialer.peer_id])
        await check_link(dialer, listener, topic, outcome)
        await check_link(listener, dialer, topic, outcome)
        await deliver(dialer, listener, topic, spec.id, outcome)
        await deliver(listener, dialer, topic, spec.id, outcome)
        for a, b in ((dialer, listener), (listener, dialer)):
            if a.router == "gossipsub" and b.router == "floodsub" and a.impl.key != "js":
                # a floodsub peer is flooded to, never grafted (a snapshot, after joining and a few messages)
                assert b.peer_id not in (await a.mesh(topic) or []), f"{a.label} has {b.label} in its mesh"
        for node in (dialer, listener):
            assert not node.contract_errors(), f"{node.label}: {node.contract_errors()}"


@dataclass(frozen=True)
class NetworkSpec:
    """``nodes`` and ``edges`` (``(i, j)``: node i dials node j); the edges must form a tree."""

    name: str
    nodes: tuple[tuple[NodeKey, Router], ...]
    edges: tuple[tuple[int, int], ...]

    @property
    def id(self) -> str:
        return self.name

    def neighbours(self, i: int) -> set[int]:
        return {b for a, b in self.edges if a == i} | {a for a, b in self.edges if b == i}

    def next_hop(self, src: int, dst: int) -> int:
        """The neighbour of ``dst`` on the (only) path from ``src`` to ``dst``."""
        previous = {src: src}
        frontier = [src]
        while frontier:
            here = frontier.pop()
            for there in self.neighbours(here):
                if there not in previous:
                    previous[there] = here
                    frontier.append(there)
        return previous[dst]


def line(*nodes: tuple[NodeKey, Router]) -> NetworkSpec:
    """Each node dials the next one."""
    name = "line:" + "--".join(f"{k}-{r}" for k, r in nodes)
    return NetworkSpec(name, tuple(nodes), tuple((i, i + 1) for i in range(len(nodes) - 1)))


def star(center: tuple[NodeKey, Router], *leaves: tuple[NodeKey, Router]) -> NetworkSpec:
    """Every leaf dials the centre (node 0)."""
    name = f"star:{center[0]}-{center[1]}<-" + ",".join(f"{k}-{r}" for k, r in leaves)
    return NetworkSpec(name, (center, *leaves), tuple((i, 0) for i in range(1, len(leaves) + 1)))


async def run_network(spec: NetworkSpec, outcome: Outcome) -> None:
    topic = f"mycel-interop/{spec.id}"
    async with AsyncExitStack() as stack:
        nodes: list[PubsubNode] = []
        for key, router in spec.nodes:
            nodes.append(await stack.enter_async_context(open_node(key, router)))
        for node in nodes:
            await node.subscribe(topic)
        for a, b in spec.edges:
            await nodes[a].connect(nodes[b].addrs[0])
        for i, node in enumerate(nodes):
            await node.wait_topic_peers(topic, [nodes[j].peer_id for j in spec.neighbours(i)])
        for i, node in enumerate(nodes):
            for j in sorted(spec.neighbours(i)):
                await check_link(node, nodes[j], topic, outcome)
        for i, publisher in enumerate(nodes):
            others = [n for j, n in enumerate(nodes) if j != i]
            data = f"{spec.id}: from {publisher.label} {publisher.peer_id}".encode()
            got = await publish_until_received(publisher, topic, data, others)
            for j, receiver in enumerate(nodes):
                if j != i:
                    check_message(got[receiver.peer_id], publisher, receiver, via=nodes[spec.next_hop(i, j)])
        # no node learned of a node it is not connected to (no peer exchange on these routers)
        for i, node in enumerate(nodes):
            strangers = {nodes[j].peer_id for j in range(len(nodes)) if j != i and j not in spec.neighbours(i)}
            assert not strangers & set(await node.peers(topic)), f"{node.label} knows non-neighbours"
            assert not node.contract_errors(), f"{node.label}: {node.contract_errors()}"


async def run_cell(run: CellRun, limiter: trio.CapacityLimiter) -> Outcome:
    """Run one cell; whatever it raises becomes the outcome's error (the other cells go on)."""
    outcome = Outcome()
    async with limiter:
        start = time.perf_counter()
        try:
            try:
                with trio.fail_after(CELL_TIMEOUT):
                    await run(outcome)
            except BaseExceptionGroup as group:
                reraise_unwrapped(group)
        except Exception as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
        outcome.elapsed = time.perf_counter() - start
    return outcome


def cell_runs(pairs: Sequence[PairSpec], networks: Sequence[NetworkSpec]) -> dict[str, CellRun]:
    """Cell id -> what runs it."""
    runs: dict[str, CellRun] = {}
    for pair in pairs:
        runs[pair.id] = functools.partial(run_pair, pair)
    for network in networks:
        runs[network.id] = functools.partial(run_network, network)
    return runs


def run_cells(cells: Mapping[str, CellRun], concurrency: int = CONCURRENT_CELLS) -> dict[str, Outcome]:
    """Run the cells, ``concurrency`` at a time, in one ``trio.run``; cell id -> outcome."""
    outcomes: dict[str, Outcome] = {}

    async def main() -> None:
        limiter = trio.CapacityLimiter(concurrency)

        async def one(cell_id: str, run: CellRun) -> None:
            outcomes[cell_id] = await run_cell(run, limiter)

        async with trio.open_nursery() as nursery:
            for cell_id, run in cells.items():
                nursery.start_soon(one, cell_id, run)

    trio.run(main)
    return outcomes


def render(outcomes: Mapping[str, Outcome]) -> str:
    """One line per cell: status, time, findings."""
    lines = []
    for cell_id, o in sorted(outcomes.items()):
        status = "pass" if o.error is None else "FAIL"
        findings = f" ({len(o.findings)} known finding{'s' * (len(o.findings) != 1)})" if o.findings else ""
        lines.append(f"{status:4} {o.elapsed:5.1f}s {cell_id}{findings}")
    return "\n".join(lines)
