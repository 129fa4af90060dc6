"""Run a gossipsub-interop :class:`~mycel.sim.script.Script` on N real mycel hosts over a
:class:`~mycel.sim.network.SimNetwork`, on virtual time, and collect what the reports need.

Each node is what the gossipsub-interop node contract asks for: the Ed25519 key seeded with its
little-endian node id, StrictNoSign, the message id read from the first 8 bytes of the data, one JSON
log line per receipt (:mod:`mycel.sim.interop_log`). Below the router everything is the real host
(identify, yamux, plaintext); the network is modelled: gossipsub-interop's 8 regions, 20 % supernodes at
1 Gbit/s and 80 % fullnodes at 50 Mbit/s.

Determinism: a run is a function of its seed given the same ``PYTHONHASHSEED`` (set iteration order in
the router depends on it); the CLI pins it to 0.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import random
import resource
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio
import trio.testing
from multiaddr import Multiaddr

from mycel.core.errors import MycelError
from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.host import Host, open_host
from mycel.network.connmgr import ConnManagerConfig
from mycel.protocols.identify import Identify
from mycel.protocols.pubsub.config import GossipsubConfig, SignaturePolicy, go_defaults
from mycel.protocols.pubsub.core import ValidationResult
from mycel.protocols.pubsub.messages import PublishError, PubsubMessage
from mycel.protocols.pubsub.service import Gossipsub
from mycel.protocols.pubsub import rpc_pb2
from mycel.sim.hosts import sim_config
from mycel.sim.interop_log import InteropLog, MessageStats, NodeLogger, analyze_lines, quantile
from mycel.sim.latency import Regions, Uniform
from mycel.sim.network import SimNetwork, SimNode
from mycel.sim.script import (
    Connect,
    InitGossipSub,
    Instruction,
    Publish,
    Script,
    SetTopicValidationDelay,
    SubscribeToTopic,
    WaitUntil,
    gossipsub_changes,
    message_id_of,
    message_payload,
)

log = logging.getLogger("mycel.sim")

NO_IDONTWANT = 2**62
"""An ``idontwant_message_threshold`` no message reaches: IDONTWANT off."""


def interop_identity(node_id: int) -> Identity:
    """gossipsub-interop's key: Ed25519 seeded with the little-endian node id, zero-padded to 32 bytes."""
    return Identity.from_seed(node_id.to_bytes(8, "little") + bytes(24))


def interop_message_id(msg: PubsubMessage) -> bytes:
    """The message id function of gossipsub-interop: the first 8 bytes of the data."""
    return _id_bytes(msg.data)


def _id_bytes(data: bytes) -> bytes:
    return data[:8].ljust(8, b"\0")


def interop_config(**changes: Any) -> GossipsubConfig:
    """go-libp2p's defaults with gossipsub-interop's message rules (StrictNoSign, id from the data)."""
    return go_defaults(signature_policy=SignaturePolicy.STRICT_NO_SIGN, message_id_fn=interop_message_id, **changes)


class InteropGossipsub(Gossipsub):
    """The gossipsub service, logging every receipt the way gossipsub-interop's nodes do: the first copy
    when it is delivered (after validation), each duplicate when it arrives."""

    def __init__(self, config: GossipsubConfig, logger: NodeLogger, *, seed: int, t0: float = 0.0) -> None:
        super().__init__(config, seed=seed)
        self.logger = logger
        self.t0 = t0

    def _on_rpc(self, peer: PeerId, rpc: rpc_pb2.RPC) -> None:
        if rpc.publish and self._router is not None:
            seen = self._router.seen
            now = trio.current_time() - self.t0
            for pb in rpc.publish:
                data = pb.data
                if _id_bytes(data) in seen and pb.topic in self._router.subscriptions:
                    self.logger.received(now, message_id_of(data), peer.to_base58(), pb.topic)
        super()._on_rpc(peer, rpc)

    def _deliver(self, msg: PubsubMessage) -> None:
        sender = msg.received_from.to_base58() if msg.received_from is not None else ""
        self.logger.received(trio.current_time() - self.t0, message_id_of(msg.data), sender, msg.topic)
        super()._deliver(msg)


@dataclass
class RunOptions:
    """How a scenario is run: the network model and the router's base configuration."""

    nodes: int
    """Nodes in the run."""
    seed: int = 0
    """Seed of the network, the identities and the routers' choices (same seed, same log)."""
    latency: str = "regions"
    """``regions`` (gossipsub-interop's 8) or ``uniform`` (25 ms +- 10 %, the v1.1 evaluation's)."""
    supernode_fraction: float = 0.2
    """Share of nodes that are supernodes."""
    supernode_mbit: float = 1024.0
    """Up and down bandwidth of a supernode, Mbit/s."""
    fullnode_mbit: float = 50.0
    """Up and down bandwidth of a fullnode, Mbit/s."""
    loss: float = 0.0
    """Probability that a segment is lost (costs a retransmission timeout)."""
    idontwant: bool = True
    """Whether routers send IDONTWANT for large messages (gossipsub v1.2)."""
    config: GossipsubConfig = field(default_factory=interop_config)
    """The routers' configuration (gossipsub-interop's parameters by default)."""
    mesh_every: float = 1.0
    """Seconds between samples of every node's mesh degree."""
    partition: PartitionPlan | None = None
    """Half of the network cut off for a while, then healed (None: no partition)."""
    progress: Callable[[str], None] | None = None
    """Called with a line of progress now and then (None: quiet)."""


@dataclass(frozen=True)
class PartitionPlan:
    """Cut ``fraction`` of the nodes (chosen at random) off from the rest at ``start`` for ``duration``
    seconds (``cut``: connections across are reset; else bytes across are held until the heal)."""

    start: float
    duration: float
    fraction: float = 0.5
    cut: bool = False


@dataclass
class RunResult:
    """What a run produced."""

    options: RunOptions
    """The options the run used."""
    script: Script
    """The scenario that ran."""
    log: InteropLog
    """The gossipsub-interop log lines of the run."""
    messages: list[MessageStats]
    """Per-message delivery figures (reach, times, duplicates)."""
    mesh_times: list[float]
    """Virtual times of the mesh samples."""
    mesh_degrees: list[list[int]]
    """Per sample (at :attr:`mesh_times`), every node's mesh degree on its first topic (-1: not subscribed)."""
    supernodes: list[bool]
    """Per node: whether it is a supernode."""
    regions: list[str]
    """Per node: its region."""
    wall_seconds: float
    """Wall-clock seconds of the run."""
    cpu_seconds: float
    """User + system CPU time of the run (the machine may be shared: wall clock alone misleads)."""
    max_rss_mib: float
    """Peak resident memory, MiB."""
    bytes_delivered: int
    """Bytes the simulated network delivered."""
    router_totals: dict[str, int]
    """The routers' counters summed over all nodes."""
    partition_window: tuple[float, float] | None = None
    """Virtual start and end of the partition, when there was one."""


async def run_script(script: Script, options: RunOptions) -> RunResult:
    """Run ``script`` on ``options.nodes`` hosts (call under ``trio.run(..., clock=MockClock(autojump_threshold=0))``)."""
    wall0 = time.monotonic()
    cpu0 = _cpu()
    n = options.nodes
    rng = random.Random(options.seed)
    if options.latency not in ("regions", "uniform"):
        raise ValueError(f"latency must be 'regions' or 'uniform', not {options.latency!r}")
    latency = Regions() if options.latency == "regions" else Uniform(0.025, 0.1)
    net = SimNetwork(seed=options.seed, latency=latency, loss=options.loss)
    ilog = InteropLog()
    progress = options.progress or (lambda text: None)
    t0 = trio.current_time()

    per_node = [script.for_node(i) for i in range(n)]
    identities = [interop_identity(i) for i in range(n)]
    peer_ids = [ident.peer_id for ident in identities]
    sim_nodes: list[SimNode] = []
    supernodes: list[bool] = []
    for _ in range(n):
        superb = rng.random() < options.supernode_fraction
        supernodes.append(superb)
        sim_nodes.append(net.add_node(up_mbit=options.supernode_mbit if superb else options.fullnode_mbit))
    addrs = [Multiaddr(node.listen_addr()) for node in sim_nodes]

    services: list[InteropGossipsub] = []
    for i in range(n):
        changes: dict[str, Any] = {}
        for ins in per_node[i]:
            if isinstance(ins, InitGossipSub):
                changes.update(gossipsub_changes(ins.params))
        if not options.idontwant:
            changes["idontwant_message_threshold"] = NO_IDONTWANT
        config = options.config.replace(**changes) if changes else options.config
        services.append(InteropGossipsub(config, ilog.node(i), seed=options.seed * 1_000_003 + i, t0=t0))

    topics_of: list[list[str]] = [[] for _ in range(n)]
    mesh_times: list[float] = []
    mesh_degrees: list[list[int]] = []
    done = 0
    all_done = trio.Event()
    last_wait = max((ins.elapsed_seconds for ins in script.instructions if isinstance(ins, WaitUntil)), default=0.0)

    async def dial(i: int, host: Host, j: int) -> None:
        if j >= n or j == i:
            raise MycelError(f"no node {j} to connect to")
        await host.connect(peer_ids[j], [addrs[j]])

    async def node_main(i: int, host: Host) -> None:
        nonlocal done
        svc = services[i]
        svc.logger.peer_id(trio.current_time() - t0, peer_ids[i].to_base58())
        await run_instructions(
            per_node[i], svc, lambda j: dial(i, host, j), t0=t0, topics=topics_of[i],
            on_publish=lambda t, mid: progress(f"t={t:6.1f}s  node {i} published message {mid}"),
        )
        done += 1
        if done == n:
            all_done.set()

    async def sample_meshes() -> None:
        while True:
            await trio.sleep(options.mesh_every)
            mesh_times.append(trio.current_time() - t0)
            row: list[int] = []
            for i, svc in enumerate(services):
                topics = topics_of[i]
                row.append(len(svc.router.mesh.get(topics[0], ())) if topics else -1)
            mesh_degrees.append(row)

    window: tuple[float, float] | None = None

    async def redial(i: int, host: Host) -> None:
        for ins in per_node[i]:
            if isinstance(ins, Connect):
                for j in ins.connect_to:
                    if j < n and j != i and not host.connections(peer_ids[j]):
                        with contextlib.suppress(MycelError, OSError):
                            await host.connect(peer_ids[j], [addrs[j]])

    async def partition_schedule(plan: PartitionPlan, hosts: list[Host]) -> None:
        nonlocal window
        await trio.sleep_until(t0 + plan.start)
        prng = random.Random(options.seed + 7)
        group = prng.sample(sim_nodes, int(len(sim_nodes) * plan.fraction))
        net.partition([group], cut=plan.cut)
        progress(f"t={plan.start:6.1f}s  partition: {len(group)} of {n} nodes cut off")
        await trio.sleep(plan.duration)
        net.heal()
        window = (plan.start, plan.start + plan.duration)
        progress(f"t={plan.start + plan.duration:6.1f}s  partition healed")
        # connections that died meanwhile (yamux keepalive gives up after 30 s) are dialed again, as a
        # node's peer store would: the script's connections are the node's known peers
        async with trio.open_nursery() as nursery:
            for i, host in enumerate(hosts):
                nursery.start_soon(redial, i, host)

    async with trio.open_nursery() as outer:
        await outer.start(net.run)
        async with contextlib.AsyncExitStack() as stack:
            hosts: list[Host] = []
            for i in range(n):
                host_config = sim_config(
                    sim_nodes[i],
                    services=[Identify(), services[i]],
                    identity=identities[i],
                    connmgr=ConnManagerConfig(low=400, high=500),
                )
                hosts.append(await stack.enter_async_context(open_host(host_config)))
            progress(f"{n} hosts up ({time.monotonic() - wall0:.1f}s wall)")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample_meshes)
                if options.partition is not None:
                    nursery.start_soon(partition_schedule, options.partition, hosts)
                for i, host in enumerate(hosts):
                    nursery.start_soon(node_main, i, host)
                await all_done.wait()
                await trio.sleep_until(t0 + last_wait)
                nursery.cancel_scope.cancel()
            totals: dict[str, int] = {}
            for svc in services:
                for key, value in svc.stats().items():
                    totals[key] = totals.get(key, 0) + value
        outer.cancel_scope.cancel()

    messages = analyze_lines(ilog.per_node())
    return RunResult(
        options=options,
        script=script,
        log=ilog,
        messages=messages,
        mesh_times=mesh_times,
        mesh_degrees=mesh_degrees,
        supernodes=supernodes,
        regions=[node.region for node in sim_nodes],
        wall_seconds=time.monotonic() - wall0,
        cpu_seconds=_cpu() - cpu0,
        max_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        bytes_delivered=net.bytes_delivered,
        router_totals=totals,
        partition_window=window,
    )


async def run_instructions(
    instructions: Sequence[Instruction],
    svc: InteropGossipsub,
    dial: Callable[[int], Awaitable[object]],
    *,
    t0: float,
    topics: list[str] | None = None,
    on_publish: Callable[[float, int], None] | None = None,
) -> None:
    """Run one node's instructions (``initGossipSub`` was applied when the service was made):
    ``dial(node_id)`` connects to another node; ``waitUntil`` counts from ``t0`` on trio's clock;
    failures are logged as ``Error`` lines and the script goes on, as gossipsub-interop's nodes do."""
    logger = svc.logger
    for ins in instructions:
        if isinstance(ins, WaitUntil):
            await trio.sleep_until(t0 + ins.elapsed_seconds)
        elif isinstance(ins, Connect):
            for j in ins.connect_to:
                try:
                    await dial(j)
                except (MycelError, OSError) as exc:
                    logger.error(trio.current_time() - t0, f"connect failed: {exc}", node=j)
        elif isinstance(ins, SubscribeToTopic):
            svc.join(ins.topic)
            if topics is not None:
                topics.append(ins.topic)
        elif isinstance(ins, SetTopicValidationDelay):
            svc.add_validator(ins.topic, _delay_validator(ins.delay))
        elif isinstance(ins, Publish):
            data = message_payload(ins.message_id, ins.size)
            now = trio.current_time() - t0
            try:
                await svc.publish(ins.topic, data)
                logger.published(now, ins.message_id, ins.topic, ins.size)
            except PublishError as exc:
                logger.error(now, f"publish failed: {exc}", id=str(ins.message_id))
            if on_publish is not None:
                on_publish(now, ins.message_id)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _delay_validator(delay: float) -> Callable[[PubsubMessage], Any]:
    async def validate(msg: PubsubMessage) -> ValidationResult:
        await trio.sleep(delay)
        return ValidationResult.ACCEPT

    return validate


def run(script: Script, options: RunOptions) -> RunResult:
    """:func:`run_script` in a fresh ``trio.run`` on a :class:`trio.testing.MockClock` (virtual time)."""
    return run_virtual(run_script, script, options, seed=options.seed)


_T = TypeVar("_T")


def run_virtual(fn: Callable[..., Awaitable[_T]], *args: Any, seed: int) -> _T:
    """``trio.run(fn, *args)`` on a :class:`trio.testing.MockClock` (virtual time), repeatable from ``seed``:
    trio's scheduler seeded (:func:`seed_trio_scheduler`) and its deadline ties broken in the order the
    deadlines were set (:func:`order_deadline_ties`)."""
    seed_trio_scheduler(seed)

    async def main() -> _T:
        order_deadline_ties()
        return await fn(*args)

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def seed_trio_scheduler(seed: int) -> None:
    """Seed the generator trio's scheduler uses to perturb the order of ready tasks (it reverses each
    batch at random), so that a simulation repeats exactly from its seed."""
    scheduler_rng = getattr(trio._core._run, "_r", None)
    if isinstance(scheduler_rng, random.Random):
        scheduler_rng.seed(seed)


def order_deadline_ties() -> None:
    """Make the running trio loop expire cancel scopes with equal deadlines in the order their deadlines
    were set, not by ``id()`` of the scope as trio does: on virtual time many timers land on the same
    instant, and the ids depend on the process's allocation history (its environment, its paths), so two
    checkouts ran the same seed to different figures. Call first thing inside ``trio.run``; a no-op if
    trio's internals are not the expected shape."""
    runner = getattr(getattr(trio._core._run, "GLOBAL_RUN_CONTEXT", None), "runner", None)
    deadlines = getattr(runner, "deadlines", None)
    heap = getattr(deadlines, "_heap", None)
    if runner is None or deadlines is None or not isinstance(heap, list) or isinstance(deadlines, _OrderedDeadlines):
        return
    ordered = _OrderedDeadlines()
    ordered._heap = [(d, next(ordered._counter), scope) for d, _, scope in sorted(heap, key=lambda e: (e[0], e[1]))]
    ordered._active = deadlines._active
    runner.deadlines = ordered


class _OrderedDeadlines(trio._core._run.Deadlines):
    """trio's deadline heap with a set-order tie-breaker (see :func:`order_deadline_ties`)."""

    def __init__(self) -> None:
        super().__init__()
        self._counter = itertools.count()

    def add(self, deadline: float, cancel_scope: Any) -> None:
        heapq.heappush(self._heap, (deadline, next(self._counter), cancel_scope))
        self._active += 1


def summarize(result: RunResult, *, skip: int = 4) -> dict[str, Any]:
    """The JSON summary of a run: per message reach, time to disseminate, p50, latencies and duplicates;
    totals over the messages after the first ``skip`` warm-up ones; mesh degree bounds."""
    msgs = result.messages
    checked = msgs[skip:] if len(msgs) > skip else []
    cfg = result.options.config
    lat_all = sorted(x for m in checked for x in m.latencies)
    dup_bytes = sum(m.duplicates * (m.size or 0) for m in msgs)
    mesh = mesh_summary(result, cfg.d_lo, cfg.d_hi, after=_first_publish(result))
    return {
        "scenario": result.script.name,
        "nodes": result.options.nodes,
        "seed": result.options.seed,
        "idontwant": result.options.idontwant,
        "wall_seconds": round(result.wall_seconds, 1),
        "cpu_seconds": round(result.cpu_seconds, 1),
        "max_rss_mib": round(result.max_rss_mib, 1),
        "messages": [
            {
                "id": m.id,
                "publisher": m.publisher,
                "published_at": m.published_at,
                "reach": m.reach,
                "receivers": m.receivers,
                "time_to_disseminate": _r(m.time_to_disseminate),
                "p50": _r(m.p50),
                "latency_p50": _r(m.quantile(0.5)),
                "latency_p99": _r(m.quantile(0.99)),
                "time_to_all": _r(m.time_to_all),
                "avg_duplicates": _r(m.avg_duplicates),
            }
            for m in msgs
        ],
        "checked_from_message": skip + 1,
        "min_reach": min((m.reach for m in checked), default=math.nan),
        "latency_p50": _r(quantile(lat_all, 0.5)),
        "latency_p99": _r(quantile(lat_all, 0.99)),
        "max_time_to_all": _r(max((m.time_to_all for m in checked), default=math.nan)),
        "avg_duplicates_per_node_per_message": _r(sum(m.avg_duplicates for m in msgs) / len(msgs)) if msgs else None,
        "duplicate_payload_bytes": dup_bytes,
        "bytes_delivered": result.bytes_delivered,
        "mesh": mesh,
        "router": {k: result.router_totals.get(k, 0) for k in sorted(result.router_totals)},
    }


def _first_publish(result: RunResult) -> float:
    times = [m.published_at for m in result.messages if m.published_at is not None]
    return min(times) if times else 0.0


def mesh_summary(result: RunResult, d_lo: int, d_hi: int, *, after: float, heartbeats: int = 3) -> dict[str, Any]:
    """Mesh degrees of subscribed nodes at samples from ``after`` on: min, max, samples out of
    [d_lo, d_hi], empty meshes, and ``persistent``: times a node stayed out of bounds for more than
    ``heartbeats`` heartbeats in a row (a mesh may leave the bounds between heartbeats: a GRAFT or PRUNE
    from a peer; the next heartbeat restores it)."""
    lo, hi, out_of_range, empty, samples, persistent = math.inf, -math.inf, 0, 0, 0, 0
    span = heartbeats * result.options.config.heartbeat_interval
    since: dict[int, float] = {}  # node -> time it left the bounds
    for t, row in zip(result.mesh_times, result.mesh_degrees):
        if t < after:
            continue
        for node, d in enumerate(row):
            if d < 0:
                continue
            samples += 1
            lo, hi = min(lo, d), max(hi, d)
            if d == 0:
                empty += 1
            if d_lo <= d <= d_hi:
                since.pop(node, None)
                continue
            out_of_range += 1
            left = since.setdefault(node, t)
            if t - left > span:
                persistent += 1
                since[node] = t  # counted once per span
    return {
        "from": after,
        "d_lo": d_lo,
        "d_hi": d_hi,
        "min": lo if samples else None,
        "max": hi if samples else None,
        "samples": samples,
        "out_of_range": out_of_range,
        "persistent": persistent,
        "empty": empty,
    }


def _r(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, 4)


__all__ = [
    "InteropGossipsub",
    "PartitionPlan",
    "RunOptions",
    "RunResult",
    "interop_config",
    "interop_identity",
    "interop_message_id",
    "mesh_summary",
    "run",
    "run_instructions",
    "run_script",
    "summarize",
]
