"""Real go / js / py-libp2p pubsub peers against each other (``interop/pubsub.py``), no mycel yet.

One test per cell. A pair cell is (dialer impl, its router) -> (listener impl, its router): both
subscribe, the dialer connects, each waits until it lists the other as a topic peer (and as a mesh
peer where it can tell and both run gossipsub), then each publishes one message that the other must
deliver with the right data, author and forwarder. The line cell is go -- js -- py (gossipsub): each
end's message reaches the other end through js.

What does not work is a finding, documented in interop/README.md ("Pubsub"), and its cell asserts
that exact failure (``UNDELIVERABLE``, ``JS_GRAFTS_FLOODSUB_PEERS``): if an upstream fix makes it
work, the cell fails and says to update the README. Nothing is skipped; a missing peer fails.

The cells run concurrently (``CONCURRENT_CELLS`` at a time) in one trio run shared by the module's
tests; a test then checks its own cell's outcome.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trio

from interop.pubsub import (
    IMPLS,
    ROUTERS,
    ImplKey,
    PubsubMessage,
    PubsubPeer,
    PubsubPeerError,
    PubsubTimeout,
    Router,
    expected_protocol,
    open_pubsub_peer,
    publish_until_received,
)
from mycel.core.errors import reraise_unwrapped

pytestmark = [pytest.mark.interop, pytest.mark.slow]

IMPL_KEYS: tuple[ImplKey, ...] = ("go", "js", "py")
CONCURRENT_CELLS = 4
CELL_TIMEOUT = 90.0
NONDELIVERY_WAIT = 3.0  # how long a known-undeliverable message gets before we call it not delivered

# (publisher impl, receiver impl, receiver router) -> why the receiver drops every such message
UNDELIVERABLE: dict[tuple[ImplKey, ImplKey, Router], str] = {
    ("py", "js", "floodsub"): (
        "@libp2p/floodsub 11.0.28 verifies a signature over the message re-encoded from its decoded fields, "
        "with the seqno turned into a BigInt and back: leading zero bytes are lost. py-libp2p's seqno is a "
        "counter started at the unix time (00 00 00 00 6b ...), so every py message fails StrictSign there"
    ),
}
UNDELIVERABLE_LOG = "floodsub rejected a message from {publisher}"  # js/pubsub.mjs's line for such a drop
JS_GRAFTS_FLOODSUB_PEERS = (
    "@libp2p/gossipsub 17.1.1 puts floodsub-only peers in its mesh: fallbackToFloodsub adds /floodsub/1.0.0 "
    "to the router's protocol list, which is also what decides who may be grafted (go and py do not)"
)


@dataclass(frozen=True)
class PairSpec:
    dialer: ImplKey
    dialer_router: Router
    listener: ImplKey
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


def pair_specs() -> list[PairSpec]:
    return [
        PairSpec(dialer, dialer_router, listener, listener_router)
        for dialer, listener in itertools.permutations(IMPL_KEYS, 2)
        for dialer_router, listener_router in ROUTER_PAIRS
    ]


PAIRS = pair_specs()
LINE_ID = "line:go-gossipsub--js-gossipsub--py-gossipsub"


@dataclass
class Outcome:
    error: str | None = None
    findings: list[str] = field(default_factory=list)  # known failures that reproduced as documented
    notes: list[str] = field(default_factory=list)
    elapsed: float = 0.0


def check_message(msg: PubsubMessage, publisher: PubsubPeer, receiver: PubsubPeer, via: PubsubPeer) -> None:
    assert msg.source == publisher.peer_id, f"{receiver.label}: author {msg.source}, want {publisher.peer_id}"
    assert msg.seqno, f"{receiver.label}: a signed message without a seqno: {msg}"
    if receiver.impl.reports_received_from:
        assert msg.received_from == via.peer_id, f"{receiver.label}: forwarded by {msg.received_from}, want {via.label}"


async def deliver(publisher: PubsubPeer, receiver: PubsubPeer, topic: str, cell: str, outcome: Outcome) -> None:
    """``publisher``'s message reaches ``receiver`` directly, or fails exactly as documented."""
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


async def run_pair(spec: PairSpec, outcome: Outcome) -> None:
    topic = f"mycel-interop/{spec.id}"
    async with (
        open_pubsub_peer(spec.dialer, spec.dialer_router) as dialer,
        open_pubsub_peer(spec.listener, spec.listener_router) as listener,
    ):
        for peer in (dialer, listener):
            assert peer.protocols, f"{peer.label} serves no pubsub protocol"
            if peer.router == "floodsub":
                assert peer.protocols == ["/floodsub/1.0.0"], peer.protocols
            else:
                assert "/floodsub/1.0.0" in peer.protocols and any(p.startswith("/meshsub/") for p in peer.protocols)
        await dialer.subscribe(topic)
        await listener.subscribe(topic)
        await dialer.connect(listener.addrs[0])
        await dialer.wait_topic_peers(topic, [listener.peer_id])
        await listener.wait_topic_peers(topic, [dialer.peer_id])
        for a, b in ((dialer, listener), (listener, dialer)):
            negotiated = await a.wait_negotiated(topic, b.peer_id)
            if negotiated is not None:  # each side opens its own stream, proposing newest first
                assert negotiated == expected_protocol(a.protocols, b.protocols), (a.label, b.label, negotiated)
                outcome.notes.append(f"{a.label} speaks {negotiated} to {b.label}")
            if a.router != "gossipsub":
                continue
            if b.router == "gossipsub":
                mesh = await a.wait_mesh(topic, [b.peer_id])
                outcome.notes.append(f"{a.label} mesh: {'cannot tell' if mesh is None else 'has ' + b.label}")
            elif a.impl.key == "js":
                await a.wait_mesh(topic, [b.peer_id])  # the quirk: a floodsub peer in a gossipsub mesh
                outcome.findings.append(f"{a.label} grafted {b.label}: {JS_GRAFTS_FLOODSUB_PEERS}")
        await deliver(dialer, listener, topic, spec.id, outcome)
        await deliver(listener, dialer, topic, spec.id, outcome)
        for peer in (dialer, listener):
            assert not peer.contract_errors(), f"{peer.label}: {peer.contract_errors()}"


async def run_line(outcome: Outcome) -> None:
    """go -- js -- py, all gossipsub: the ends connect to js only; each end's message reaches the other."""
    topic = "mycel-interop/line"
    async with (
        open_pubsub_peer("go", "gossipsub") as go,
        open_pubsub_peer("js", "gossipsub") as js,
        open_pubsub_peer("py", "gossipsub") as py,
    ):
        for peer in (go, js, py):
            await peer.subscribe(topic)
        await go.connect(js.addrs[0])
        await py.connect(js.addrs[0])
        await js.wait_topic_peers(topic, [go.peer_id, py.peer_id])
        await go.wait_topic_peers(topic, [js.peer_id])
        await py.wait_topic_peers(topic, [js.peer_id])
        await js.wait_mesh(topic, [go.peer_id, py.peer_id])
        await py.wait_mesh(topic, [js.peer_id])
        got = await publish_until_received(go, topic, b"line: from go", [js, py])
        check_message(got[js.peer_id], go, js, via=go)
        check_message(got[py.peer_id], go, py, via=js)
        got = await publish_until_received(py, topic, b"line: from py", [js, go])
        check_message(got[js.peer_id], py, js, via=py)
        check_message(got[go.peer_id], py, go, via=js)
        # the ends never met: neither knows the other as a topic peer (no PX on these routers)
        assert go.peer_id not in await py.peers(topic)
        assert py.peer_id not in await go.peers(topic)
        for peer in (go, js, py):
            assert not peer.contract_errors(), f"{peer.label}: {peer.contract_errors()}"


async def run_cell(run: Callable[[Outcome], Awaitable[None]], limiter: trio.CapacityLimiter) -> Outcome:
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


def run_cells(ids: list[str]) -> dict[str, Outcome]:
    by_id = {spec.id: spec for spec in PAIRS}
    outcomes: dict[str, Outcome] = {}

    async def main() -> None:
        limiter = trio.CapacityLimiter(CONCURRENT_CELLS)

        async def one(cell_id: str) -> None:
            if cell_id == LINE_ID:
                outcomes[cell_id] = await run_cell(run_line, limiter)
            else:
                spec = by_id[cell_id]
                outcomes[cell_id] = await run_cell(lambda outcome: run_pair(spec, outcome), limiter)

        async with trio.open_nursery() as nursery:
            for cell_id in ids:
                nursery.start_soon(one, cell_id)

    trio.run(main)
    return outcomes


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest) -> dict[str, Outcome]:
    """The outcome of every cell selected in this module, run concurrently once."""
    ids = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if getattr(item, "module", None) is request.module and callspec is not None and "cell" in callspec.params:
            ids.append(str(callspec.params["cell"]))
    return run_cells(ids)


def check_outcome(outcome: Outcome, cell: str) -> None:
    assert outcome.error is None, f"{cell} ({outcome.elapsed:.1f}s): {outcome.error}"


@pytest.mark.parametrize("cell", [spec.id for spec in PAIRS])
def test_pair(outcomes: dict[str, Outcome], cell: str) -> None:
    check_outcome(outcomes[cell], cell)


@pytest.mark.parametrize("cell", [LINE_ID])
def test_line_through_the_middle(outcomes: dict[str, Outcome], cell: str) -> None:
    check_outcome(outcomes[cell], cell)


def test_every_impl_is_installed() -> None:
    for impl in IMPLS.values():
        assert impl.missing() is None, f"{impl.name}: {impl.missing()} (make interop-peers)"


async def test_go_ready_line_protocols_are_what_js_identify_sees() -> None:
    """go's ready line cannot ask p2pd: it lists go-libp2p-pubsub v0.10.0's ids. js identifies go to check."""
    from interop.peers import JS, Stack

    for router in ROUTERS:
        async with open_pubsub_peer("go", router) as go:
            result = await JS.dial(Stack("tcp", "noise", "yamux"), go.addrs[0], timeout=60, case_timeout=5)
            seen = result.cases.get("identify", {}).get("protocols", [])
            pubsub_seen = sorted(p for p in seen if p.startswith(("/meshsub/", "/floodsub/")))
            assert pubsub_seen == sorted(go.protocols), (router, seen, result.error, result.log[-2000:])


async def test_peer_errors_carry_stderr_and_the_process_is_reaped() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with open_pubsub_peer("js", "floodsub") as js:
            assert await js.mesh("t") is None  # floodsub has no mesh: None, not an error
            with pytest.raises(Exception, match="(?s)unknown command.*stderr") as failed:
                await js.request("no-such-command")
            assert "js-pubsub" in str(failed.value)  # the stderr tail came with it
            raise RuntimeError("boom")
    assert js.returncode is not None  # stopped and reaped although the body failed
    with pytest.raises(PubsubPeerError, match="exited"):
        await js.next_message(timeout=5)
    assert [msg async for msg in js] == []  # the iterator ends with the process
