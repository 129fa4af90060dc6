"""Attacker personas for gossipsub and the Sybil scenario of the gossipsub v1.1 evaluation, reduced 1:4.

Personas (routers that misbehave at the protocol level; :class:`AttackRouter` is the real
:class:`~mycel.protocols.pubsub.core.GossipsubRouter` with a few decisions replaced):

* ``badboy`` — gossipsub-hardening's Sybil: GRAFTs every topic peer from the start and never prunes,
  forwards nothing (no messages, no IWANT answers) from ``attack_at`` on, and after a PRUNE GRAFTs again
  as soon as the backoff is over plus U(0, 15 s);
* ``covert-flash`` — behaves like an honest router until ``attack_at``, then becomes a bad boy at once
  (grafts everyone, drops everything).

Scenario (:func:`run_attack`): ``publishers`` + ``lurkers`` honest nodes, each dialing ``honest_degree``
random honest nodes, and ``sybils`` attackers each dialing ``attack_degree`` random honest nodes (or,
with ``eclipse_target``, the target first); 25 ms +- 10 % links; the publishers take turns publishing
2 KiB messages. Honest nodes run the report's parameters (D=8/6/12, D_score 6, D_lazy 12, flood publish)
and, with ``scoring``, its score parameters and thresholds (:func:`report_score_params`).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import trio.testing
from multiaddr import Multiaddr

from mycel.core.errors import MycelError
from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.host import Host, open_host
from mycel.network.connmgr import ConnManagerConfig
from mycel.protocols.identify import Identify
from mycel.protocols.pubsub import rpc_pb2
from mycel.protocols.pubsub.config import GossipsubConfig
from mycel.protocols.pubsub.core import GossipsubRouter
from mycel.protocols.pubsub.messages import PublishError, PubsubMessage
from mycel.protocols.pubsub.score import PeerScoreParams, PeerScoreThresholds, TopicScoreParams
from mycel.protocols.pubsub.service import Gossipsub
from mycel.service import ServiceHost
from mycel.sim.hosts import sim_config
from mycel.sim.interop_log import InteropLog, MessageStats, analyze_lines
from mycel.sim.latency import Uniform
from mycel.sim.network import SimNetwork
from mycel.sim.runner import InteropGossipsub, _cpu, interop_config, interop_identity, seed_trio_scheduler
from mycel.sim.script import message_payload

TOPIC = "blocks"
PERSONAS = ("badboy", "covert-flash")
REGRAFT_JITTER = 15.0


def report_score_params(*, ip_colocation_weight: float = 0.0) -> PeerScoreParams:
    """The gossipsub v1.1 evaluation's score parameters (gossipsub-hardening ``1k-attack-*`` configs)."""
    topic = TopicScoreParams(
        topic_weight=0.25,
        time_in_mesh_weight=0.0027,
        time_in_mesh_quantum=1.0,
        time_in_mesh_cap=3600.0,
        first_message_deliveries_weight=0.664,
        first_message_deliveries_decay=0.9916,
        first_message_deliveries_cap=1500.0,
        mesh_message_deliveries_weight=-0.25,
        mesh_message_deliveries_decay=0.997,
        mesh_message_deliveries_cap=400.0,
        mesh_message_deliveries_threshold=10.0,
        mesh_message_deliveries_activation=60.0,
        mesh_message_deliveries_window=0.005,
        mesh_failure_penalty_weight=-0.25,
        mesh_failure_penalty_decay=0.997,
        invalid_message_deliveries_weight=-99.0,
        invalid_message_deliveries_decay=0.9994,
    )
    return PeerScoreParams(
        topics={TOPIC: topic},
        ip_colocation_factor_weight=ip_colocation_weight,
        ip_colocation_factor_threshold=1,
    )


REPORT_THRESHOLDS = PeerScoreThresholds(
    gossip_threshold=-4000.0,
    publish_threshold=-5000.0,
    graylist_threshold=-10000.0,
    accept_px_threshold=0.0,
    opportunistic_graft_threshold=0.0,
)
"""The evaluation's thresholds."""


def honest_config(*, scoring: bool, ip_colocation_weight: float = 0.0) -> GossipsubConfig:
    """The evaluation's honest router: D=8/6/12, D_score 6, D_lazy 12, flood publishing, seen 2 min."""
    params = report_score_params(ip_colocation_weight=ip_colocation_weight) if scoring else None
    return interop_config(
        d=8, d_lo=6, d_hi=12, d_score=6, d_lazy=12, flood_publish=True, seen_ttl=120.0,
        score_params=params, score_thresholds=REPORT_THRESHOLDS,
    )


class AttackRouter(GossipsubRouter):
    """A gossipsub router with an attacker's decisions (see the module docstring). Made by
    :class:`AttackGossipsub`; ``persona``, ``attack_at`` and the jitter generator are set there."""

    persona: str = "badboy"
    attack_at: float = 0.0
    jitter_rng: random.Random
    regraft_jitter: dict[tuple[str, PeerId], float]

    def attacking(self, now: float) -> bool:
        """Whether the attack (dropping everything) has started."""
        return now >= self.attack_at

    def grafting_all(self, now: float) -> bool:
        """Whether the router grafts every topic peer now."""
        return self.persona == "badboy" or self.attacking(now)

    def _forward(self, msg: PubsubMessage, now: float, *, own: bool) -> list[PeerId]:
        if self.attacking(now) and not own:
            return []  # censor: nothing is passed on
        return super()._forward(msg, now, own=own)

    def _handle_iwant(self, peer: PeerId, iwants: Iterable[rpc_pb2.ControlIWant], score: float) -> list[PubsubMessage]:
        if self.next_heartbeat >= self.attack_at:  # gossip promises are broken once the attack runs
            return []
        return super()._handle_iwant(peer, iwants, score)

    def _handle_prune(self, peer: PeerId, prunes: Iterable[rpc_pb2.ControlPrune], score: float, now: float) -> None:
        prunes = list(prunes)
        super()._handle_prune(peer, prunes, score, now)
        for prune in prunes:
            self.regraft_jitter[(prune.topicID, peer)] = self.jitter_rng.uniform(0, REGRAFT_JITTER)

    def heartbeat(self, now: float) -> None:
        super().heartbeat(now)
        if not self.grafting_all(now):
            return
        grafted = False
        for topic, members in self.mesh.items():
            backoffs = self.backoff.get(topic, {})
            for p in sorted(self.topics.get(topic, ())):
                if p in members:
                    continue
                expire = backoffs.get(p)
                if expire is not None and now < expire + self.regraft_jitter.get((topic, p), 0.0):
                    continue
                members.add(p)
                self._pending_for(p).graft.append(topic)
                grafted = True
        if grafted:
            self._flush()


class AttackGossipsub(Gossipsub):
    """The gossipsub service with an :class:`AttackRouter` (persona ``badboy`` or ``covert-flash``)."""

    def __init__(self, config: GossipsubConfig, *, persona: str, attack_at: float, seed: int) -> None:
        if persona not in PERSONAS:
            raise ValueError(f"unknown persona {persona!r}; known: {PERSONAS}")
        super().__init__(config, seed=seed)
        self.persona = persona
        self.attack_at = attack_at

    async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the real service, with its router turned into an :class:`AttackRouter`."""
        async with trio.open_nursery() as nursery:
            await nursery.start(super().run, host)
            router = self._router
            assert router is not None
            router.__class__ = AttackRouter
            assert isinstance(router, AttackRouter)
            router.persona = self.persona
            router.attack_at = self.attack_at
            router.jitter_rng = random.Random(self.seed)
            router.regraft_jitter = {}
            task_status.started()


def attacker_config(persona: str) -> GossipsubConfig:
    """What attackers run: a bad boy never prunes for oversubscription (D_hi out of reach)."""
    if persona == "badboy":
        return interop_config(d=8, d_lo=6, d_hi=100_000, flood_publish=False)
    return interop_config(d=8, d_lo=6, d_hi=12, d_score=6, d_lazy=12)


@dataclass
class AttackOptions:
    """The Sybil scenario (see the module docstring)."""

    publishers: int = 10
    """Honest nodes that publish."""
    lurkers: int = 90
    """Honest nodes that only listen."""
    sybils: int = 400
    """Attacker nodes running ``persona``."""
    persona: str = "badboy"
    """The attacker persona: ``"badboy"``, ``"covert-flash"``, ``"eclipse"`` or ``"dawn"`` (see the module docs)."""
    scoring: bool = True
    """Peer scoring on (the report's parameters) or off (to show the attack working)."""
    seed: int = 0
    """Seed of the network, the identities and the routers' choices."""
    honest_degree: int = 20
    """Connections each honest node opens."""
    attack_degree: int = 20
    """Connections each attacker opens."""
    attack_at: float = 0.0
    """Seconds after the start when attackers stop forwarding (badboy: 0; covert flash: 120)."""
    warmup: float = 10.0
    """Seconds before the first publish (connections and meshes form)."""
    duration: float = 300.0
    """Seconds of publishing."""
    publish_every: float = 1.0
    """Seconds between two messages (the publishers take turns)."""
    message_size: int = 2048
    """Bytes per published message."""
    recovery: float = 60.0
    """Messages published this long after ``attack_at`` (or the first publish) count as "after recovery"."""
    eclipse_target: int | None = None
    """An honest node every Sybil dials first (eclipse single target)."""
    sybils_per_ip: int = 1
    """Sybils sharing one IP (attack at dawn packs 16); with ``ip_colocation_weight`` P6 punishes them."""
    ip_colocation_weight: float = 0.0
    """P6 weight of the honest nodes' scoring (the report: 0, and -100 for attack at dawn)."""
    sample_every: float = 5.0
    """Seconds of virtual time between samples of meshes and scores."""
    progress: Callable[[str], None] | None = None
    """Called with a line of progress now and then (None: quiet)."""


@dataclass
class AttackResult:
    """What an attack run produced."""

    options: AttackOptions
    """The options the run used."""
    messages: list[MessageStats]
    """Per-message delivery figures (reach, times, duplicates) over the honest nodes."""
    honest_ids: list[str]
    """Peer ids of the honest nodes."""
    times: list[float]
    """Virtual times of the samples."""
    honest_in_mesh: list[list[int]]
    """Per sample, each honest node's count of honest peers in its mesh."""
    sybils_in_mesh: list[list[int]]
    """Per sample: attackers in each honest node's mesh."""
    scores_honest: list[float]
    """Scores of honest peers as honest nodes see them, at the end."""
    scores_sybil: list[float]
    """Scores of attackers as honest nodes see them, at the end."""
    graylisted_honest: int
    """Honest peers graylisted by honest nodes (0 expected with scoring on)."""
    wall_seconds: float
    """Wall-clock seconds of the run."""
    cpu_seconds: float
    """CPU seconds of the run."""
    max_rss_mib: float
    """Peak resident memory, MiB."""
    origin: float = 0.0
    """Virtual second at which every connection was made: the attack and publishing times count from it."""
    log: InteropLog = field(repr=False, default_factory=InteropLog)
    """The gossipsub-interop log lines of the run."""


async def run_attack_async(opts: AttackOptions) -> AttackResult:
    """Run the scenario (under ``trio.run`` with a MockClock)."""
    wall0, cpu0 = time.monotonic(), _cpu()
    progress = opts.progress or (lambda text: None)
    rng = random.Random(opts.seed)
    net = SimNetwork(seed=opts.seed, latency=Uniform(0.025, 0.1))
    honest_n = opts.publishers + opts.lurkers
    ilog = InteropLog()
    t0 = trio.current_time()
    attack_at = opts.attack_at
    honest_cfg = honest_config(scoring=opts.scoring, ip_colocation_weight=opts.ip_colocation_weight)
    honest_svcs = [InteropGossipsub(honest_cfg, ilog.node(i), seed=opts.seed * 7919 + i, t0=t0) for i in range(honest_n)]
    sybil_svcs = [
        AttackGossipsub(attacker_config(opts.persona), persona=opts.persona, attack_at=math.inf if attack_at > 0 else 0.0, seed=opts.seed * 104729 + k)
        for k in range(opts.sybils)
    ]
    honest_idents = [interop_identity(i) for i in range(honest_n)]
    sybil_idents = [Identity.from_seed(rng.randbytes(32)) for _ in range(opts.sybils)]
    honest_peers = {ident.peer_id for ident in honest_idents}
    honest_nodes = [net.add_node() for _ in range(honest_n)]
    sybil_machines = [net.add_node() for _ in range(math.ceil(opts.sybils / max(1, opts.sybils_per_ip)))]
    per_ip = max(1, opts.sybils_per_ip)
    honest_addrs = [Multiaddr(node.listen_addr()) for node in honest_nodes]

    times: list[float] = []
    honest_in_mesh: list[list[int]] = []
    sybils_in_mesh: list[list[int]] = []

    # at most 32 handshakes towards one honest node at a time (its listener refuses beyond 64 pending)
    limiters = [trio.CapacityLimiter(32) for _ in range(honest_n)]

    async def dial(host: Host, j: int) -> None:
        async with limiters[j]:
            with contextlib.suppress(MycelError, OSError):
                await host.connect(honest_idents[j].peer_id, [honest_addrs[j]])

    async def connect_all(hosts: list[Host], sybils: list[Host]) -> None:
        async with trio.open_nursery() as nursery:
            for i, host in enumerate(hosts):
                others = [j for j in range(honest_n) if j != i]
                for j in rng.sample(others, min(opts.honest_degree, len(others))):
                    nursery.start_soon(dial, host, j)
            for host in sybils:
                targets = rng.sample(range(honest_n), min(opts.attack_degree, honest_n))
                if opts.eclipse_target is not None and opts.eclipse_target not in targets:
                    targets[0] = opts.eclipse_target
                for j in targets:
                    nursery.start_soon(dial, host, j)

    async def sample() -> None:
        while True:
            await trio.sleep(opts.sample_every)
            times.append(trio.current_time() - t0)
            good: list[int] = []
            bad: list[int] = []
            for svc in honest_svcs:
                mesh = svc.router.mesh.get(TOPIC, set())
                h = sum(1 for p in mesh if p in honest_peers)
                good.append(h)
                bad.append(len(mesh) - h)
            honest_in_mesh.append(good)
            sybils_in_mesh.append(bad)

    async def publish_loop(start: float) -> None:
        await trio.sleep_until(start)
        count = int(opts.duration / opts.publish_every)
        for k in range(count):
            i = k % opts.publishers
            svc = honest_svcs[i]
            now = trio.current_time() - t0
            try:
                await svc.publish(TOPIC, message_payload(k + 1, opts.message_size))
                svc.logger.published(now, k + 1, TOPIC, opts.message_size)
            except PublishError as exc:
                svc.logger.error(now, f"publish failed: {exc}", id=str(k + 1))
            if k % 30 == 0:
                progress(f"t={now:6.1f}s message {k + 1}/{count}")
            await trio.sleep_until(start + (k + 1) * opts.publish_every)
        await trio.sleep(5)  # the last messages settle

    origin = 0.0
    async with trio.open_nursery() as outer:
        await outer.start(net.run)
        async with contextlib.AsyncExitStack() as stack:
            hosts: list[Host] = []
            sybils: list[Host] = []
            conn = ConnManagerConfig(low=600, high=700)
            for i in range(honest_n):
                cfg = sim_config(honest_nodes[i], services=[Identify(), honest_svcs[i]], identity=honest_idents[i], connmgr=conn)
                hosts.append(await stack.enter_async_context(open_host(cfg)))
            for k in range(opts.sybils):
                cfg = sim_config(
                    sybil_machines[k // per_ip], services=[Identify(), sybil_svcs[k]], identity=sybil_idents[k], connmgr=conn,
                    port=4001 + k % per_ip,
                )
                sybils.append(await stack.enter_async_context(open_host(cfg)))
            for i, svc in enumerate(honest_svcs):
                svc.logger.peer_id(0.0, honest_idents[i].peer_id.to_base58())
                svc.join(TOPIC)
            for sy in sybil_svcs:
                sy.join(TOPIC)
            progress(f"{honest_n} honest + {opts.sybils} sybil hosts up ({time.monotonic() - wall0:.1f}s wall)")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample)
                await connect_all(hosts, sybils)
                connected = trio.current_time()
                progress(f"connected at t={connected - t0:.1f}s ({time.monotonic() - wall0:.1f}s wall)")
                for sy in sybil_svcs:  # times count from here: the network is formed
                    router = sy.router
                    assert isinstance(router, AttackRouter)
                    router.attack_at = connected + attack_at if attack_at > 0 else 0.0
                origin = connected - t0
                await publish_loop(connected + opts.warmup)
                nursery.cancel_scope.cancel()
            scores_h: list[float] = []
            scores_s: list[float] = []
            graylisted = 0
            gray = REPORT_THRESHOLDS.graylist_threshold
            for svc in honest_svcs:
                for peer, b in svc.scores().items():
                    if peer in honest_peers:
                        scores_h.append(b.score)
                        graylisted += b.score < gray
                    else:
                        scores_s.append(b.score)
        outer.cancel_scope.cancel()

    messages = analyze_lines(ilog.per_node())
    return AttackResult(
        options=opts,
        messages=messages,
        honest_ids=[str(p) for p in honest_peers],
        times=times,
        honest_in_mesh=honest_in_mesh,
        sybils_in_mesh=sybils_in_mesh,
        scores_honest=scores_h,
        scores_sybil=scores_s,
        graylisted_honest=graylisted,
        wall_seconds=time.monotonic() - wall0,
        cpu_seconds=_cpu() - cpu0,
        max_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        origin=origin,
        log=ilog,
    )


def run_attack(opts: AttackOptions) -> AttackResult:
    """:func:`run_attack_async` in a fresh ``trio.run`` on virtual time."""
    seed_trio_scheduler(opts.seed)
    return trio.run(run_attack_async, opts, clock=trio.testing.MockClock(autojump_threshold=0))


def summarize_attack(result: AttackResult) -> dict[str, Any]:
    """Delivery to honest nodes over the run and after recovery, honest peers in meshes, scores."""
    o = result.options
    honest_n = o.publishers + o.lurkers
    start = result.origin + o.warmup
    attack = result.origin + o.attack_at
    recovered_from = max(attack, start) + o.recovery
    msgs = result.messages
    total = sum(m.receivers for m in msgs)
    delivered = sum(min(m.receivers, honest_n - 1) for m in msgs) / (len(msgs) * (honest_n - 1)) if msgs else math.nan
    after = [m for m in msgs if m.published_at is not None and m.published_at >= recovered_from]
    delivered_after = (
        sum(min(m.receivers, honest_n - 1) for m in after) / (len(after) * (honest_n - 1)) if after else math.nan
    )
    lat = sorted(x for m in msgs for x in m.latencies)
    min_honest = [min(row) for row in result.honest_in_mesh]
    after_samples = [min(row) for t, row in zip(result.times, result.honest_in_mesh) if t >= max(attack, start) + 60]
    target = o.eclipse_target
    return {
        "persona": o.persona,
        "scoring": o.scoring,
        "honest": honest_n,
        "sybils": o.sybils,
        "eclipse_target": target,
        "attack_at": attack,
        "connected_at": result.origin,
        "messages": len(msgs),
        "deliveries": total,
        "honest_delivery": delivered,
        "honest_delivery_after_recovery": delivered_after,
        "recovered_from": recovered_from,
        "latency_p50": _q(lat, 0.5),
        "latency_p99": _q(lat, 0.99),
        "min_honest_in_mesh_after_60s": min(after_samples) if after_samples else None,
        "target_honest_in_mesh_last": result.honest_in_mesh[-1][target] if target is not None and result.honest_in_mesh else None,
        "graylisted_honest": result.graylisted_honest,
        "score_honest_mean": _mean(result.scores_honest),
        "score_sybil_mean": _mean(result.scores_sybil),
        "score_honest_min": min(result.scores_honest) if result.scores_honest else None,
        "sybils_in_mesh_mean_last": _mean(result.sybils_in_mesh[-1]) if result.sybils_in_mesh else None,
        "honest_in_mesh_mean_last": _mean(result.honest_in_mesh[-1]) if result.honest_in_mesh else None,
        "wall_seconds": round(result.wall_seconds, 1),
        "cpu_seconds": round(result.cpu_seconds, 1),
        "max_rss_mib": round(result.max_rss_mib, 1),
        "honest_in_mesh_min_over_time": list(zip(result.times, min_honest)),
    }


def _mean(values: Iterable[float]) -> float | None:
    vals = list(values)
    return sum(vals) / len(vals) if vals else None


def _q(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def write_attack(result: AttackResult, out: str | Path) -> dict[str, Any]:
    """Write ``summary.json``, the honest nodes' logs and plots (scores honest vs Sybil, honest peers in
    meshes over time, delivery latency CDF) into ``out``; returns the summary."""
    from mycel.sim.report import plot_histograms, plot_latency_cdf

    base = Path(out)
    base.mkdir(parents=True, exist_ok=True)
    summary = summarize_attack(result)
    (base / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    result.log.write(base)
    tag = f"{summary['persona']}, scoring {'on' if summary['scoring'] else 'off'}"
    plot_histograms(
        {"honest peers": result.scores_honest, "sybils": result.scores_sybil},
        base / "scores.png", title=f"scores seen by honest nodes ({tag})", xlabel="score",
    )
    plot_latency_cdf(
        {tag: [x for m in result.messages for x in m.latencies]}, base / "latency_cdf.png", title=f"delivery latency ({tag})"
    )
    _plot_mesh(result, base / "honest_in_mesh.png", title=f"honest peers in honest meshes ({tag})")
    return summary


def _plot_mesh(result: AttackResult, path: Path, *, title: str) -> None:
    from mycel.sim.report import _finish, _plt

    plt = _plt()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(result.times, [min(r) for r in result.honest_in_mesh], label="honest peers, min over honest nodes")
    ax.plot(result.times, [sorted(r)[len(r) // 2] for r in result.honest_in_mesh], label="honest peers, median")
    ax.plot(result.times, [sorted(r)[len(r) // 2] for r in result.sybils_in_mesh], label="sybils, median")
    if result.options.attack_at:
        ax.axvline(result.origin + result.options.attack_at, color="red", alpha=0.4, label="attack")
    _finish(plt, fig, ax, path, title=title, xlabel="virtual time (s)", ylabel="peers in mesh")


__all__ = [
    "PERSONAS",
    "REPORT_THRESHOLDS",
    "AttackGossipsub",
    "AttackOptions",
    "AttackResult",
    "AttackRouter",
    "attacker_config",
    "honest_config",
    "report_score_params",
    "run_attack",
    "summarize_attack",
    "write_attack",
]
