"""Attacker personas for gossipsub and the Sybil scenarios of the gossipsub v1.1 evaluation, reduced 1:4.

Personas (routers that misbehave at the protocol level; :class:`AttackRouter` is the real
:class:`~mycel.protocols.pubsub.core.GossipsubRouter` with a few decisions replaced):

* ``badboy`` — gossipsub-hardening's Sybil: GRAFTs every topic peer from the start and never prunes,
  forwards nothing (no messages, no IWANT answers) from ``attack_at`` on, and after a PRUNE GRAFTs again
  as soon as the backoff is over plus U(0, 15 s);
* ``covert-flash`` — behaves like an honest router until ``attack_at``, then becomes a bad boy at once
  (grafts everyone, drops everything);
* spammers, otherwise honest routers (they forward, so what happens to them is the spam's doing):
  ``ihave-spam`` (every heartbeat, to every peer, more IHAVE messages than accepted, full of ids it
  never delivers: broken promises, P7), ``iwant-spam`` (asks every peer, every heartbeat, for the same
  recent ids over and over and for unknown ones), ``graft-spam`` (PRUNEs its mesh peers and GRAFTs
  them again the next heartbeat, inside the backoff the PRUNE set: P7), ``invalid-spam`` (sends messages that fail the StrictNoSign checks: P4) and
  ``sub-flood`` (every heartbeat SUBSCRIBEs to hundreds of new topics and unsubscribes the last batch).

Scenarios (:data:`SCENARIOS`, :func:`scenario_options`, run by :func:`run_attack`): ``publishers`` +
``lurkers`` honest nodes, each dialing ``honest_degree`` random honest nodes; the publishers take
turns publishing 2 KiB messages from ``warmup`` on; ``sybils`` attackers each dial ``attack_degree``
honest nodes ``sybil_delay`` s after the first publish (or together with the honest nodes:
``cold_boot``): random ones, or densely one target (``eclipse="single"``), every honest node
(``"all"``: each attacker dials all of them) or only the publishers (``"publishers"``). 25 ms +- 10 % links. Honest nodes run the
report's parameters (D=8/6/12, D_score 6, D_lazy 12, flood publish) and, with ``scoring``, its score
parameters and thresholds (:func:`report_score_params`); ``v10`` turns all the v1.1 hardening off.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from mycel.protocols.pubsub.score import PeerScore, PeerScoreParams, PeerScoreThresholds, TopicScoreParams
from mycel.protocols.pubsub.service import Gossipsub
from mycel.service import ServiceHost
from mycel.sim.hosts import sim_config
from mycel.sim.interop_log import InteropLog, MessageStats, analyze_lines
from mycel.sim.latency import Uniform
from mycel.sim.network import SimNetwork
from mycel.sim.runner import InteropGossipsub, _cpu, interop_config, interop_identity, run_virtual
from mycel.sim.script import message_payload

TOPIC = "blocks"
CENSORS = ("badboy", "covert-flash")
SPAMMERS = ("ihave-spam", "iwant-spam", "graft-spam", "invalid-spam", "sub-flood")
PERSONAS = CENSORS + SPAMMERS
REGRAFT_JITTER = 15.0
IHAVE_RPCS = 12
"""IHAVE messages an ``ihave-spam`` attacker sends each peer per heartbeat (routers take 10)."""
IHAVE_IDS = 300
"""Made-up message ids in each of them."""
IWANT_REPEAT = 5
"""Times an ``iwant-spam`` attacker repeats each recent id in one IWANT."""
IWANT_RECENT = 16
"""Most recent message ids an ``iwant-spam`` attacker asks every peer for, every heartbeat."""
IWANT_UNKNOWN = 200
"""Unknown ids it adds to each IWANT."""
INVALID_PER_HEARTBEAT = 5
"""Invalid messages an ``invalid-spam`` attacker sends each peer per heartbeat."""
SUB_FLOOD_TOPICS = 500
"""New topics a ``sub-flood`` attacker subscribes to per heartbeat (and unsubscribes the batch before)."""
ECLIPSE_MODES = ("none", "single", "all", "publishers")


REPORT_RATE = 120.0
"""Messages per second the report's runs published (its counter thresholds and caps are for that rate)."""


def report_score_params(
    *, ip_colocation_weight: float = 0.0, behaviour_penalty_weight: float = 0.0, rate: float | None = None
) -> PeerScoreParams:
    """The gossipsub v1.1 evaluation's score parameters (gossipsub-hardening ``1k-attack-*`` configs).
    ``behaviour_penalty_weight`` (P7; 0 there) with Lighthouse's threshold 6 and decay 0.986 when set.

    ``rate`` (messages/s) rescales P3 to that rate: the report's mesh-delivery threshold (10) and cap
    (400) are counts at 120 msg/s; at ``rate`` they become ``10 * rate / 120`` and ``400 * rate / 120``
    and the weight grows by ``(120 / rate) ** 2``, so a peer delivering the same *share* of the traffic
    gets the same P3 (None: the literal parameters)."""
    k = 1.0 if rate is None else rate / REPORT_RATE
    topic = TopicScoreParams(
        topic_weight=0.25,
        time_in_mesh_weight=0.0027,
        time_in_mesh_quantum=1.0,
        time_in_mesh_cap=3600.0,
        first_message_deliveries_weight=0.664,
        first_message_deliveries_decay=0.9916,
        first_message_deliveries_cap=1500.0,
        mesh_message_deliveries_weight=-0.25 / (k * k),
        mesh_message_deliveries_decay=0.997,
        mesh_message_deliveries_cap=400.0 * k,
        mesh_message_deliveries_threshold=10.0 * k,
        mesh_message_deliveries_activation=60.0,
        mesh_message_deliveries_window=0.005,
        mesh_failure_penalty_weight=-0.25 / (k * k),
        mesh_failure_penalty_decay=0.997,
        invalid_message_deliveries_weight=-99.0,
        invalid_message_deliveries_decay=0.9994,
    )
    p7: dict[str, float] = {}
    if behaviour_penalty_weight:
        p7 = {"behaviour_penalty_weight": behaviour_penalty_weight, "behaviour_penalty_threshold": 6.0,
              "behaviour_penalty_decay": 0.986}
    return PeerScoreParams(
        topics={TOPIC: topic},
        ip_colocation_factor_weight=ip_colocation_weight,
        ip_colocation_factor_threshold=1,
        **p7,  # type: ignore[arg-type]
    )


REPORT_THRESHOLDS = PeerScoreThresholds(
    gossip_threshold=-4000.0,
    publish_threshold=-5000.0,
    graylist_threshold=-10000.0,
    accept_px_threshold=0.0,
    opportunistic_graft_threshold=0.0,
)
"""The evaluation's thresholds."""

LIGHTHOUSE_P7_WEIGHT = -15.92
"""Lighthouse's P7 weight, used for the spam personas (the report's runs had no P7)."""


def honest_config(
    *, scoring: bool, ip_colocation_weight: float = 0.0, behaviour_penalty_weight: float = 0.0, v10: bool = False,
    p3_rate: float | None = None, opportunistic_graft_threshold: float | None = None, prune_at_d_hi: bool = True,
) -> GossipsubConfig:
    """The evaluation's honest router: D=8/6/12, D_score 6, D_lazy 12, flood publishing, seen 2 min.

    ``v10``: the v1.1 hardening off, as the report's v1.0 baseline — no scoring, no flood publishing,
    no opportunistic grafting, no outbound quota (D_out 0), gossip to exactly D_lazy peers (no adaptive
    gossip factor); only options of :class:`GossipsubConfig`, no change to the router.
    ``opportunistic_graft_threshold``: instead of the report's 0 (None: the report's).
    ``prune_at_d_hi``: False prunes only meshes above D_hi, as the go the report ran (see
    :attr:`GossipsubConfig.prune_at_d_hi`).
    """
    if v10:
        return interop_config(
            d=8, d_lo=6, d_hi=12, d_score=6, d_lazy=12, seen_ttl=120.0, flood_publish=False,
            opportunistic_graft_ticks=0, d_out=0, gossip_factor=0.0, score_params=None, prune_at_d_hi=prune_at_d_hi,
        )
    params = (
        report_score_params(ip_colocation_weight=ip_colocation_weight, behaviour_penalty_weight=behaviour_penalty_weight, rate=p3_rate)
        if scoring else None
    )
    thresholds = REPORT_THRESHOLDS
    if opportunistic_graft_threshold is not None:
        thresholds = dataclasses.replace(thresholds, opportunistic_graft_threshold=opportunistic_graft_threshold)
    return interop_config(
        d=8, d_lo=6, d_hi=12, d_score=6, d_lazy=12, flood_publish=True, seen_ttl=120.0,
        score_params=params, score_thresholds=thresholds, prune_at_d_hi=prune_at_d_hi,
    )


class AttackRouter(GossipsubRouter):
    """A gossipsub router with an attacker's decisions (see the module docstring). Made by
    :class:`AttackGossipsub`; ``persona``, ``attack_at`` and the jitter generator are set there."""

    persona: str = "badboy"
    attack_at: float = 0.0
    jitter_rng: random.Random
    regraft_jitter: dict[tuple[str, PeerId], float]
    flood_batch: list[str]
    flood_serial: int
    copies: dict[tuple[PeerId, bytes], int]
    """``iwant-spam``: copies of each message received per peer (IWANT answers, mesh and flood copies)."""

    def attacking(self, now: float) -> bool:
        """Whether the attack (dropping everything, or spamming) has started."""
        return now >= self.attack_at

    def censoring(self, now: float) -> bool:
        """Whether the router drops what it should forward now."""
        return self.persona in CENSORS and self.attacking(now)

    def grafting_all(self, now: float) -> bool:
        """Whether the router grafts every topic peer now."""
        return self.persona == "badboy" or (self.persona == "covert-flash" and self.attacking(now))

    def _forward(self, msg: PubsubMessage, now: float, *, own: bool) -> list[PeerId]:
        if self.censoring(now) and not own:
            return []  # censor: nothing is passed on
        return super()._forward(msg, now, own=own)

    def _handle_iwant(self, peer: PeerId, iwants: Iterable[rpc_pb2.ControlIWant], score: float) -> list[PubsubMessage]:
        if self.censoring(self.next_heartbeat):  # gossip promises are broken once the attack runs
            return []
        return super()._handle_iwant(peer, iwants, score)

    def _handle_prune(self, peer: PeerId, prunes: Iterable[rpc_pb2.ControlPrune], score: float, now: float) -> None:
        prunes = list(prunes)
        super()._handle_prune(peer, prunes, score, now)
        for prune in prunes:
            self.regraft_jitter[(prune.topicID, peer)] = self.jitter_rng.uniform(0, REGRAFT_JITTER)

    def _receive_message(self, peer: PeerId, pb: rpc_pb2.Message, now: float) -> PubsubMessage | None:
        if self.persona == "iwant-spam":
            key = (peer, pb.data[:8])
            self.copies[key] = self.copies.get(key, 0) + 1
        return super()._receive_message(peer, pb, now)

    def heartbeat(self, now: float) -> None:
        super().heartbeat(now)
        if self.persona in SPAMMERS:
            if self.attacking(now):
                self._spam(now)
            return
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

    def _spam(self, now: float) -> None:
        peers = sorted(self.topics.get(TOPIC, ()))
        if self.persona == "sub-flood":
            rpc = rpc_pb2.RPC()
            for topic in self.flood_batch:
                rpc.subscriptions.add(subscribe=False, topicid=topic)
            self.flood_batch = [f"flood-{self.flood_serial + i}" for i in range(SUB_FLOOD_TOPICS)]
            self.flood_serial += SUB_FLOOD_TOPICS
            for topic in self.flood_batch:
                rpc.subscriptions.add(subscribe=True, topicid=topic)
            for p in sorted(self.peers):
                self.out.send_control(p, rpc)  # one RPC object, serialized per peer by the writer
            return
        if self.persona == "graft-spam":
            # flap: PRUNE a mesh peer, GRAFT it again the next heartbeat, inside the backoff the PRUNE set
            members = self.mesh.get(TOPIC)
            if members is None:
                return
            for p in peers:
                if p in members:
                    members.discard(p)
                    self._pending_for(p).prune.append(rpc_pb2.ControlPrune(topicID=TOPIC, backoff=int(self.config.prune_backoff)))
                else:
                    members.add(p)
                    self._pending_for(p).graft.append(TOPIC)
            self._flush()
            return
        rng = self.jitter_rng
        for p in peers:
            if self.persona == "ihave-spam":
                for _ in range(IHAVE_RPCS):
                    rpc = rpc_pb2.RPC()
                    rpc.control.ihave.add(topicID=TOPIC, messageIDs=[b"\xff" + rng.randbytes(7) for _ in range(IHAVE_IDS)])
                    self.out.send_control(p, rpc)
            elif self.persona == "iwant-spam":
                # the last ids it received, asked for again every heartbeat for longer than the mcache holds them
                recent = list(dict.fromkeys(key[1] for key in reversed(self.copies)))[:IWANT_RECENT]
                ids = recent * IWANT_REPEAT + [b"\xfe" + rng.randbytes(7) for _ in range(IWANT_UNKNOWN)]
                rpc = rpc_pb2.RPC()
                rpc.control.iwant.add(messageIDs=ids)
                self.out.send_control(p, rpc)
            elif self.persona == "invalid-spam":
                rpc = rpc_pb2.RPC()
                for _ in range(INVALID_PER_HEARTBEAT):
                    # StrictNoSign forbids from/seqno: every router rejects it (P4 for the sender)
                    rpc.publish.add(**{"from": self.local_peer.to_bytes()}, seqno=rng.randbytes(8), topic=TOPIC,
                                    data=b"\xfd" + rng.randbytes(63))
                self.out.send_control(p, rpc)


class AttackGossipsub(Gossipsub):
    """The gossipsub service with an :class:`AttackRouter` (one of :data:`PERSONAS`)."""

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
            router.flood_batch = []
            router.flood_serial = 0
            router.copies = {}
            task_status.started()


def attacker_config(persona: str) -> GossipsubConfig:
    """What attackers run: a bad boy never prunes for oversubscription (D_hi out of reach); the others
    the honest parameters (without scoring)."""
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
    """The attacker persona, one of :data:`PERSONAS`."""
    scoring: bool = True
    """Peer scoring on (the report's parameters) or off (to show the attack working)."""
    v10: bool = False
    """All the v1.1 hardening off (see :func:`honest_config`); implies no scoring."""
    p3_scaled: bool = False
    """P3 rescaled from the report's 120 msg/s to this run's rate (:func:`report_score_params`)."""
    opportunistic_graft_threshold: float | None = None
    """The honest nodes' opportunistic-graft threshold (None: the report's 0)."""
    prune_at_d_hi: bool = True
    """Honest meshes pruned on reaching D_hi (go today); False: only above it, as the go of the report."""
    seed: int = 0
    """Seed of the network, the identities and the routers' choices."""
    honest_degree: int = 20
    """Connections each honest node opens."""
    attack_degree: int = 20
    """Connections each attacker opens."""
    attack_at: float = 0.0
    """Seconds after the honest network formed when censoring attackers start dropping (0: as soon as
    they are connected; covert flash: 120)."""
    warmup: float = 10.0
    """Seconds from the honest network's forming to the first publish."""
    sybil_delay: float = 30.0
    """Seconds from the first publish to the attackers' connecting (the report's 30 s warm-up)."""
    cold_boot: bool = False
    """Attackers connect together with the honest nodes, before any score history (cold boot, dawn)."""
    duration: float = 300.0
    """Seconds of publishing."""
    publish_every: float = 1.0
    """Seconds between two messages (the publishers take turns)."""
    message_size: int = 2048
    """Bytes per published message."""
    recovery: float = 60.0
    """Messages published this long after the attack started count as "after recovery"."""
    eclipse: str = "none"
    """Which honest nodes the attackers dial: ``none`` (random), ``single`` (every attacker dials
    ``eclipse_target``), ``all`` (every attacker dials every honest node) or ``publishers`` (only them)."""
    eclipse_target: int | None = None
    """The target of ``eclipse="single"`` (default: the first lurker); setting it implies ``single``."""
    target_degree: int | None = None
    """``single``: the target dials only this many honest nodes and no other honest node dials it (a
    newcomer with few honest connections; None: like every honest node)."""
    sybils_per_ip: int = 1
    """Sybils sharing one IP (attack at dawn packs 16); with ``ip_colocation_weight`` P6 punishes them."""
    ip_colocation_weight: float = 0.0
    """P6 weight of the honest nodes' scoring (the report: 0, and -100 for attack at dawn)."""
    behaviour_penalty_weight: float | None = None
    """P7 weight of the honest nodes' scoring (None: Lighthouse's -15.92 for spam personas, else 0 as in
    the report)."""
    sample_every: float = 1.0
    """Seconds of virtual time between samples of the meshes (the heartbeat)."""
    check_every: float = 5.0
    """Seconds between checks of every honest node's scores of honest peers and of table sizes."""
    progress: Callable[[str], None] | None = None
    """Called with a line of progress now and then (None: quiet)."""

    def target_nodes(self) -> list[int]:
        """The honest nodes whose meshes the "≥ 3 honest peers" target is about."""
        honest_n = self.publishers + self.lurkers
        mode = self.eclipse_mode()
        if mode == "single":
            return [self.single_target()]
        if mode == "publishers":
            return list(range(self.publishers))
        return list(range(honest_n))

    def eclipse_mode(self) -> str:
        """``eclipse``, with ``eclipse_target`` implying ``single``."""
        if self.eclipse_target is not None:
            return "single"
        if self.eclipse not in ECLIPSE_MODES:
            raise ValueError(f"eclipse must be one of {ECLIPSE_MODES}, not {self.eclipse!r}")
        return self.eclipse

    def single_target(self) -> int:
        """The eclipsed node of ``single`` (the first lurker unless given)."""
        return self.eclipse_target if self.eclipse_target is not None else min(self.publishers, self.publishers + self.lurkers - 1)

    def p7_weight(self) -> float:
        """The honest nodes' P7 weight."""
        if self.behaviour_penalty_weight is not None:
            return self.behaviour_penalty_weight
        return LIGHTHOUSE_P7_WEIGHT if self.persona in SPAMMERS else 0.0


SCENARIOS: dict[str, dict[str, Any]] = {
    "badboy": {"persona": "badboy"},
    "eclipse-single": {"persona": "badboy", "eclipse": "single"},
    "eclipse-single-sparse": {"persona": "badboy", "eclipse": "single", "target_degree": 2},
    "eclipse-all": {"persona": "badboy", "eclipse": "all"},
    "eclipse-publishers": {"persona": "badboy", "eclipse": "publishers"},
    "covert-flash": {"persona": "covert-flash", "attack_at": 120.0},
    "cold-boot": {"persona": "badboy", "cold_boot": True, "warmup": 0.0},
    "attack-at-dawn": {"persona": "badboy", "cold_boot": True, "warmup": 0.0, "sybils_per_ip": 16, "ip_colocation_weight": -100.0},
    **{p: {"persona": p} for p in SPAMMERS},
}
"""The evaluation's scenarios: option changes on top of :class:`AttackOptions` (the report's 1:4
sizes by default). Attack at dawn: the Sybils, packed 16 per IP, are there from the network's start and
the honest nodes weigh P6 at -100. ``eclipse-single-sparse``: the eclipsed node has only 2 honest
connections (a newcomer), the case where censoring Sybils can cost it messages."""


def scenario_options(name: str, **changes: Any) -> AttackOptions:
    """The :class:`AttackOptions` of scenario ``name`` (:data:`SCENARIOS`) with ``changes`` on top."""
    try:
        base = SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {sorted(SCENARIOS)}") from None
    return AttackOptions(**{**base, **changes})


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
    """Virtual times of the mesh samples."""
    honest_in_mesh: list[list[int]]
    """Per sample, each honest node's count of honest peers in its mesh."""
    sybils_in_mesh: list[list[int]]
    """Per sample: attackers in each honest node's mesh."""
    scores_honest: list[float]
    """Scores of honest peers as honest nodes see them, at the end."""
    scores_sybil: list[float]
    """Scores of attackers as honest nodes see them, at the end."""
    graylisted_honest: int
    """(node, honest peer) pairs where the node's score of the peer was below the graylist threshold at
    some check over the run (0 expected with scoring on)."""
    wall_seconds: float
    """Wall-clock seconds of the run."""
    cpu_seconds: float
    """CPU seconds of the run."""
    max_rss_mib: float
    """Peak resident memory, MiB."""
    origin: float = 0.0
    """Virtual second at which the honest network was formed: the attack and publishing times count from it."""
    attack_start: float = 0.0
    """Virtual second the attack started (attackers connected, or the flash)."""
    min_honest_score: float | None = None
    """The lowest score any honest node gave any honest peer at any check (None: scoring off)."""
    received: list[int] = field(default_factory=list)
    """Messages each honest node received (validated and delivered), not counting its own."""
    expected: list[int] = field(default_factory=list)
    """Messages each honest node should have received (all published but its own)."""
    state_max: dict[str, int] = field(default_factory=dict)
    """Largest size over the run and the honest nodes of each router table (checked every
    ``check_every``): peers, topics, topics of one peer, promises, backoff, seen, mcache, queue."""
    honest_counters: dict[str, int] = field(default_factory=dict)
    """The honest routers' counters summed (ignored IHAVE/IWANT, refused GRAFTs, invalid messages...)."""
    sybil_penalties: dict[str, float] = field(default_factory=dict)
    """Means over (honest node, attacker) of the attackers' P7 counter and P4 invalid deliveries, and
    the share of attackers graylisted, at the end."""
    max_copies_per_peer_and_id: int | None = None
    """``iwant-spam``: most copies of one message one attacker got from one honest peer."""
    log: InteropLog = field(repr=False, default_factory=InteropLog)
    """The gossipsub-interop log lines of the run."""


async def run_attack_async(opts: AttackOptions) -> AttackResult:
    """Run the scenario (under ``trio.run`` with a MockClock)."""
    wall0, cpu0 = time.monotonic(), _cpu()
    progress = opts.progress or (lambda text: None)
    if opts.persona not in PERSONAS:
        raise ValueError(f"unknown persona {opts.persona!r}; known: {PERSONAS}")
    mode = opts.eclipse_mode()
    rng = random.Random(opts.seed)
    net = SimNetwork(seed=opts.seed, latency=Uniform(0.025, 0.1))
    honest_n = opts.publishers + opts.lurkers
    ilog = InteropLog()
    t0 = trio.current_time()
    attack_at = opts.attack_at
    honest_cfg = honest_config(
        scoring=opts.scoring, ip_colocation_weight=opts.ip_colocation_weight, behaviour_penalty_weight=opts.p7_weight(),
        v10=opts.v10, p3_rate=1.0 / opts.publish_every if opts.p3_scaled else None,
        opportunistic_graft_threshold=opts.opportunistic_graft_threshold, prune_at_d_hi=opts.prune_at_d_hi,
    )
    gray = honest_cfg.score_thresholds.graylist_threshold
    honest_svcs = [InteropGossipsub(honest_cfg, ilog.node(i), seed=opts.seed * 7919 + i, t0=t0) for i in range(honest_n)]
    sybil_svcs = [
        AttackGossipsub(attacker_config(opts.persona), persona=opts.persona, attack_at=math.inf, seed=opts.seed * 104729 + k)
        for k in range(opts.sybils)
    ]
    honest_idents = [interop_identity(i) for i in range(honest_n)]
    sybil_idents = [Identity.from_seed(rng.randbytes(32)) for _ in range(opts.sybils)]
    honest_peers = {ident.peer_id for ident in honest_idents}
    honest_nodes = [net.add_node() for _ in range(honest_n)]
    per_ip = max(1, opts.sybils_per_ip)
    sybil_machines = [net.add_node() for _ in range(math.ceil(opts.sybils / per_ip))]
    honest_addrs = [Multiaddr(node.listen_addr()) for node in honest_nodes]
    published = [0] * honest_n

    times: list[float] = []
    honest_in_mesh: list[list[int]] = []
    sybils_in_mesh: list[list[int]] = []
    state_max: dict[str, int] = {}
    graylisted_pairs: set[tuple[int, PeerId]] = set()
    min_score: list[float] = []

    # at most 32 handshakes towards one honest node at a time (its listener refuses beyond 64 pending)
    limiters = [trio.CapacityLimiter(32) for _ in range(honest_n)]

    async def dial(host: Host, j: int) -> None:
        async with limiters[j]:
            with contextlib.suppress(MycelError, OSError):
                await host.connect(honest_idents[j].peer_id, [honest_addrs[j]])

    def sybil_targets() -> list[int]:
        deg = opts.attack_degree
        if mode == "publishers":
            return rng.sample(range(opts.publishers), min(deg, opts.publishers))
        if mode == "all":  # densely: every attacker dials every honest node (attack_degree is not used)
            return list(range(honest_n))
        targets = rng.sample(range(honest_n), min(deg, honest_n))
        if mode == "single":
            target = opts.single_target()
            if target not in targets:
                targets[0] = target
        return targets

    sparse = opts.single_target() if mode == "single" and opts.target_degree is not None else None

    async def connect_honest(hosts: list[Host]) -> None:
        async with trio.open_nursery() as nursery:
            for i, host in enumerate(hosts):
                others = [j for j in range(honest_n) if j != i and j != sparse]
                degree = opts.target_degree if i == sparse and opts.target_degree is not None else opts.honest_degree
                for j in rng.sample(others, min(degree, len(others))):
                    nursery.start_soon(dial, host, j)

    async def connect_sybils(sybils: list[Host]) -> None:
        async with trio.open_nursery() as nursery:
            for host in sybils:
                for j in sybil_targets():
                    nursery.start_soon(dial, host, j)

    def check(now: float) -> None:
        sizes: dict[str, int] = {}
        for i, svc in enumerate(honest_svcs):
            router = svc.router
            if isinstance(router.score, PeerScore):
                for p in router.peers:
                    if p in honest_peers:
                        s = router.score.score(p, now)
                        if not min_score or s < min_score[0]:
                            min_score[:] = [s]
                        if s < gray:
                            graylisted_pairs.add((i, p))
            sizes["peers"] = len(router.peers)
            sizes["topics"] = len(router.topics)
            sizes["topics_of_one_peer"] = max((len(s.topics) for s in router.peers.values()), default=0)
            sizes["promises"] = sum(len(v) for v in router.promises.values())
            sizes["backoff"] = sum(len(v) for v in router.backoff.values())
            sizes["seen"] = len(router.seen)
            sizes["mcache"] = len(router.mcache)
            sizes["queue"] = max((len(link.queue.control) + len(link.queue.messages) for link in svc._links.values()), default=0)
            for key, value in sizes.items():
                if value > state_max.get(key, -1):
                    state_max[key] = value

    async def sample() -> None:
        ticks = 0
        per_check = max(1, round(opts.check_every / opts.sample_every))
        while True:
            await trio.sleep(opts.sample_every)
            now = trio.current_time()
            times.append(now - t0)
            good: list[int] = []
            bad: list[int] = []
            for svc in honest_svcs:
                mesh = svc.router.mesh.get(TOPIC, set())
                h = sum(1 for p in mesh if p in honest_peers)
                good.append(h)
                bad.append(len(mesh) - h)
            honest_in_mesh.append(good)
            sybils_in_mesh.append(bad)
            ticks += 1
            if ticks % per_check == 0:
                check(now)

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
                published[i] += 1
            except PublishError as exc:
                svc.logger.error(now, f"publish failed: {exc}", id=str(k + 1))
            if k % 30 == 0:
                progress(f"t={now:6.1f}s message {k + 1}/{count}")
            await trio.sleep_until(start + (k + 1) * opts.publish_every)
        await trio.sleep(5)  # the last messages settle

    origin = 0.0
    attack_start = 0.0

    async def attackers(sybils: list[Host], at: float) -> None:
        nonlocal attack_start
        await trio.sleep_until(at)
        await connect_sybils(sybils)
        connected = trio.current_time()
        for sy in sybil_svcs:
            router = sy.router
            assert isinstance(router, AttackRouter)
            router.attack_at = t0 + origin + attack_at if attack_at > 0 else 0.0
        attack_start = max(connected - t0, origin + attack_at if attack_at > 0 else 0.0)
        progress(f"{opts.sybils} {opts.persona} attackers connected at t={connected - t0:.1f}s; attack from t={attack_start:.1f}s")

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
            progress(f"{honest_n} honest + {opts.sybils} attacker hosts up ({time.monotonic() - wall0:.1f}s wall)")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample)
                if opts.cold_boot:
                    async with trio.open_nursery() as both:
                        both.start_soon(connect_honest, hosts)
                        both.start_soon(attackers, sybils, trio.current_time())
                else:
                    await connect_honest(hosts)
                connected = trio.current_time()
                origin = connected - t0
                progress(f"honest network formed at t={origin:.1f}s ({time.monotonic() - wall0:.1f}s wall)")
                if not opts.cold_boot:
                    nursery.start_soon(attackers, sybils, connected + opts.warmup + opts.sybil_delay)
                await publish_loop(connected + opts.warmup)
                nursery.cancel_scope.cancel()
            check(trio.current_time())
            scores_h: list[float] = []
            scores_s: list[float] = []
            p7: list[float] = []
            p4: list[float] = []
            counters: dict[str, int] = {}
            for svc in honest_svcs:
                for key, value in svc.router.counters.items():
                    counters[key] = counters.get(key, 0) + value
                for peer, b in svc.scores().items():
                    if peer in honest_peers:
                        scores_h.append(b.score)
                    else:
                        scores_s.append(b.score)
                        p7.append(b.behaviour_penalty)
                        p4.append(sum(t.invalid_message_deliveries for t in b.topics))
            received = [svc.router.counters["delivered"] for svc in honest_svcs]
            copies = max(
                (max(sy.router.copies.values(), default=0) for sy in sybil_svcs if isinstance(sy.router, AttackRouter)),
                default=0,
            )
        outer.cancel_scope.cancel()

    total = sum(published)
    penalties: dict[str, float] = {}
    if scores_s:
        penalties = {
            "behaviour_penalty_mean": sum(p7) / len(p7),
            "invalid_deliveries_mean": sum(p4) / len(p4),
            "graylisted_share": sum(1 for s in scores_s if s < gray) / len(scores_s),
        }
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
        graylisted_honest=len(graylisted_pairs),
        wall_seconds=time.monotonic() - wall0,
        cpu_seconds=_cpu() - cpu0,
        max_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        origin=origin,
        attack_start=attack_start,
        min_honest_score=min_score[0] if min_score else None,
        received=received,
        expected=[total - published[i] for i in range(honest_n)],
        state_max=state_max,
        honest_counters=counters,
        sybil_penalties=penalties,
        max_copies_per_peer_and_id=copies if opts.persona == "iwant-spam" else None,
        log=ilog,
    )


def run_attack(opts: AttackOptions) -> AttackResult:
    """:func:`run_attack_async` in a fresh ``trio.run`` on virtual time."""
    return run_virtual(run_attack_async, opts, seed=opts.seed)


def target_recovery(result: AttackResult, *, need: int = 3) -> dict[str, Any]:
    """The "targeted node's mesh holds >= ``need`` honest peers within 60 s of the attack" figures, from
    the per-heartbeat samples of the targets' meshes: for each target the first sample at or after the
    attack start with >= ``need`` honest mesh peers, and the fewest honest peers it had from then on.
    Returns the slowest target's delay (None if one never got there), the minimum thereafter over the
    targets, the fewest honest peers any target had after the attack started, the delay after which
    every target stayed at >= ``need`` to the end (None: one ended below), and the fewest honest peers
    of any target from 60 s after the attack on (the target is met when that is >= ``need``)."""
    targets = result.options.target_nodes()
    start = result.attack_start
    rows = [(t, row) for t, row in zip(result.times, result.honest_in_mesh) if t >= start]
    delays: list[float | None] = []
    after_min: list[int] = []
    for node in targets:
        first: float | None = None
        lowest: int | None = None
        for t, row in rows:
            if first is None and row[node] >= need:
                first = t
            if first is not None:
                lowest = row[node] if lowest is None else min(lowest, row[node])
        delays.append(None if first is None else first - start)
        if lowest is not None:
            after_min.append(lowest)
    reached = [d for d in delays if d is not None]
    held: list[float | None] = []  # per target: from when on (after the start) it never fell below need
    for node in targets:
        since: float | None = start
        for t, row in rows:
            if row[node] < need:
                since = None
            elif since is None:
                since = t
        held.append(None if since is None or not rows else since - start)
    later = [row[n] for t, row in rows if t >= start + 60 for n in targets]
    return {
        "targets": len(targets),
        "time_to_3_honest": max(reached) if reached and len(reached) == len(delays) else None,
        "targets_never_3_honest": len(delays) - len(reached),
        "min_honest_after_reaching_3": min(after_min) if after_min else None,
        "min_honest_after_attack": min((row[n] for _, row in rows for n in targets), default=None),
        "held_3_honest_from": None if None in held or not held else max(h for h in held if h is not None),
        "min_honest_60s_after_attack": min(later) if later else None,
    }


def summarize_attack(result: AttackResult) -> dict[str, Any]:
    """Delivery to honest nodes over the run and after recovery, the targets' honest mesh peers after the
    attack, graylisting of honest peers, scores, bounded tables, CPU."""
    o = result.options
    honest_n = o.publishers + o.lurkers
    attack = result.attack_start
    recovered_from = attack + o.recovery
    msgs = result.messages
    total = sum(m.receivers for m in msgs)
    delivered = sum(min(m.receivers, honest_n - 1) for m in msgs) / (len(msgs) * (honest_n - 1)) if msgs else math.nan
    after = [m for m in msgs if m.published_at is not None and m.published_at >= recovered_from]
    delivered_after = (
        sum(min(m.receivers, honest_n - 1) for m in after) / (len(after) * (honest_n - 1)) if after else math.nan
    )
    lat = sorted(x for m in msgs for x in m.latencies)
    min_honest = [min(row) for row in result.honest_in_mesh]
    targets = o.target_nodes()
    target_delivery = [result.received[n] / result.expected[n] for n in targets if result.expected and result.expected[n]]
    mode = o.eclipse_mode()
    return {
        "persona": o.persona,
        "scoring": o.scoring and not o.v10,
        "v10": o.v10,
        "p3_scaled": o.p3_scaled,
        "opportunistic_graft_threshold": o.opportunistic_graft_threshold,
        "prune_at_d_hi": o.prune_at_d_hi,
        "honest": honest_n,
        "sybils": o.sybils,
        "honest_degree": o.honest_degree,
        "attack_degree": o.attack_degree,
        "eclipse": mode,
        "eclipse_target": o.single_target() if mode == "single" else None,
        "cold_boot": o.cold_boot,
        "sybils_per_ip": o.sybils_per_ip,
        "ip_colocation_weight": o.ip_colocation_weight,
        "behaviour_penalty_weight": o.p7_weight(),
        "connected_at": result.origin,
        "attack_at": attack,
        "messages": len(msgs),
        "deliveries": total,
        "honest_delivery": delivered,
        "honest_delivery_after_recovery": delivered_after,
        "recovered_from": recovered_from,
        "target_delivery_min": min(target_delivery) if target_delivery else None,
        "latency_p50": _q(lat, 0.5),
        "latency_p99": _q(lat, 0.99),
        **target_recovery(result),
        "target_honest_in_mesh_last": (
            min(result.honest_in_mesh[-1][n] for n in targets) if result.honest_in_mesh else None
        ),
        "graylisted_honest": result.graylisted_honest,
        "min_honest_score": result.min_honest_score,
        "score_honest_mean": _mean(result.scores_honest),
        "score_sybil_mean": _mean(result.scores_sybil),
        "score_honest_min": min(result.scores_honest) if result.scores_honest else None,
        **{f"sybil_{k}": v for k, v in result.sybil_penalties.items()},
        "sybils_in_mesh_mean_last": _mean(result.sybils_in_mesh[-1]) if result.sybils_in_mesh else None,
        "honest_in_mesh_mean_last": _mean(result.honest_in_mesh[-1]) if result.honest_in_mesh else None,
        "max_copies_per_peer_and_id": result.max_copies_per_peer_and_id,
        "state_max": result.state_max,
        "honest_counters": {k: v for k, v in sorted(result.honest_counters.items()) if v},
        "wall_seconds": round(result.wall_seconds, 1),
        "cpu_seconds": round(result.cpu_seconds, 1),
        "max_rss_mib": round(result.max_rss_mib, 1),
        "honest_in_mesh_min_over_time": [(t, m) for k, (t, m) in enumerate(zip(result.times, min_honest)) if k % 5 == 0],
    }


MAIN_SCENARIOS = (
    "eclipse-single", "eclipse-all", "covert-flash", "cold-boot", "attack-at-dawn", "eclipse-publishers", "badboy",
)
"""The Sybil scenarios of the evaluation's attack table (each with scoring on and off)."""
V10_SCENARIOS = ("eclipse-all", "eclipse-publishers")
"""Scenarios also run with all the v1.1 hardening off (the report's v1.0 baseline)."""
P3_SCALED_SCENARIOS = ("eclipse-single", "covert-flash", "badboy")
"""Scenarios also run with P3 rescaled to the message rate (``p3_scaled``)."""
REPORT_RULES_SCENARIOS = MAIN_SCENARIOS
"""Scenarios also run under the report's rules: P3 rescaled to the message rate (the report set it for
120 msg/s) and meshes pruned only above D_hi (the go it ran; ``prune_at_d_hi=False``)."""


def evaluate_attacks(
    out: str | Path,
    base: AttackOptions,
    progress: Callable[[str], None],
    *,
    scenarios: Iterable[str] = MAIN_SCENARIOS,
    v10: Iterable[str] = V10_SCENARIOS,
    p3_scaled: Iterable[str] = P3_SCALED_SCENARIOS,
    report_rules: Iterable[str] = REPORT_RULES_SCENARIOS,
    spammers: int | None = None,
    spam_duration: float | None = None,
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Run every scenario with scoring on and off (and the ``v10`` ones with the hardening off), and
    each spam persona with scoring on (``spammers`` attackers, default a tenth of ``base.sybils``, for
    ``spam_duration`` s), on top of ``base`` (sizes, degrees, seed, duration); write each run into
    ``out/attack-<scenario>-<mode>/`` and return the report's markdown lines and the summaries."""
    root = Path(out)
    lines: list[str] = list(ATTACK_HEADER)
    summaries: dict[str, dict[str, Any]] = {}
    v10_set, scaled_set, rules_set = set(v10), set(p3_scaled), set(report_rules)
    keep = {"progress": progress}
    rules = "on, report's rules"
    tags = {
        "on": "scoring-on", "off": "scoring-off", "v1.0-like": "v10", "on, P3 scaled": "scoring-p3-scaled",
        rules: "scoring-report-rules",
    }
    for name in scenarios:
        modes = (
            ["on", "off"] + ([rules] if name in rules_set else []) + (["on, P3 scaled"] if name in scaled_set else [])
            + (["v1.0-like"] if name in v10_set else [])
        )
        for mode in modes:
            tag = f"{name}-{tags[mode]}"
            progress(f"attack: {tag}")
            opts = scenario_options(
                name, **_sizes(base), scoring=mode.startswith("on"), v10=mode == "v1.0-like",
                p3_scaled=mode in ("on, P3 scaled", rules), prune_at_d_hi=mode != rules, **keep
            )
            s = write_attack(run_attack(opts), root / f"attack-{tag}", logs=False)
            summaries[tag] = s
            lines.append(attack_row(name, mode, s))
    spam_lines = list(SPAM_HEADER)
    count = spammers if spammers is not None else max(1, base.sybils // 10)
    for persona in SPAMMERS:
        tag = f"{persona}-scoring-on"
        progress(f"attack: {tag}")
        sizes = {**_sizes(base), "sybils": count}
        if spam_duration is not None:
            sizes["duration"] = spam_duration
        opts = scenario_options(persona, **sizes, scoring=True, **keep)
        s = write_attack(run_attack(opts), root / f"attack-{tag}", logs=False)
        summaries[tag] = s
        spam_lines.append(spam_row(persona, s))
    lines += ["", *spam_lines]
    (root / "attacks.json").write_text(json.dumps(summaries, indent=1) + "\n")
    return lines, summaries


ATTACK_HEADER = (
    "| scenario | hardening | honest delivery | after recovery | worst target's delivery | latency p50 / p99 "
    "| targets >= 3 honest: first after attack / min thereafter / min from attack + 60 s | honest graylisted (pairs) / lowest honest score "
    "| mean score honest / Sybil | honest / Sybil mesh peers (mean, end) | CPU |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
)
"""The head of the Sybil table (:func:`attack_row`)."""
SPAM_HEADER = (
    "| persona (attackers) | honest delivery | mean attacker score (P7 counter / P4 count) | attackers graylisted "
    "| honest tables, max over nodes and run | what the honest routers refused | CPU |",
    "|---|---|---|---|---|---|---|",
)
"""The head of the spam table (:func:`spam_row`)."""


def attack_row(name: str, mode: str, s: dict[str, Any]) -> str:
    """One row of the Sybil table from a run's summary (``mode``: on, off, v1.0-like, on, P3 scaled, on,
    report's rules)."""
    first = s["time_to_3_honest"]
    return (
        f"| {name} | {'scoring ' + mode if mode.startswith(('on', 'off')) else mode} | {_pct(s['honest_delivery'])} "
        f"| {_pct(s['honest_delivery_after_recovery'])} | {_pct(s['target_delivery_min'])} "
        f"| {_sec(s['latency_p50'])} / {_sec(s['latency_p99'])} "
        f"| {'never' if first is None else f'{first:.0f} s'} / {_n(s['min_honest_after_reaching_3'])} / {_n(s['min_honest_60s_after_attack'])} "
        f"| {s['graylisted_honest']} / {_n(s['min_honest_score'])} | {_n(s['score_honest_mean'])} / {_n(s['score_sybil_mean'])} "
        f"| {_n(s['honest_in_mesh_mean_last'])} / {_n(s['sybils_in_mesh_mean_last'])} | {s['cpu_seconds']} s |"
    )


def spam_row(persona: str, s: dict[str, Any]) -> str:
    """One row of the spam table from a run's summary."""
    t = s["state_max"]
    c = s["honest_counters"]
    refused = ", ".join(
        f"{k} {c[k]:,}" for k in ("ihave_ignored", "broken_promises", "iwant_ignored", "graft_refused", "invalid",
                                  "subscriptions_refused", "graylisted_rpcs") if c.get(k)
    )
    copies = s["max_copies_per_peer_and_id"]
    return (
        f"| {persona} ({s['sybils']}) | {_pct(s['honest_delivery'])} | {_n(s['score_sybil_mean'])} "
        f"({_n(s.get('sybil_behaviour_penalty_mean'))} / {_n(s.get('sybil_invalid_deliveries_mean'))}) "
        f"| {_pct(s.get('sybil_graylisted_share'))} | topics {t.get('topics')}, of one peer {t.get('topics_of_one_peer')}, "
        f"promises {t.get('promises')}, backoff {t.get('backoff')}, queue {t.get('queue')}"
        f"{f', copies of one id to one peer {copies}' if copies is not None else ''} | {refused} | {s['cpu_seconds']} s |"
    )


def _sizes(o: AttackOptions) -> dict[str, Any]:
    return {
        "publishers": o.publishers, "lurkers": o.lurkers, "sybils": o.sybils, "honest_degree": o.honest_degree,
        "attack_degree": o.attack_degree, "duration": o.duration, "seed": o.seed,
    }


def _pct(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f} %"


def _sec(x: Any) -> str:
    return "–" if x is None else f"{x:.3f} s"


def _n(x: Any) -> str:
    if x is None:
        return "–"
    return f"{x:.2f}" if isinstance(x, float) else str(x)


def _mean(values: Iterable[float]) -> float | None:
    vals = list(values)
    return sum(vals) / len(vals) if vals else None


def _q(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def write_attack(result: AttackResult, out: str | Path, *, logs: bool = True) -> dict[str, Any]:
    """Write ``summary.json``, the honest nodes' logs (unless ``logs`` is False) and plots (scores honest
    vs Sybil, honest peers in meshes over time, delivery latency CDF) into ``out``; returns the summary."""
    from mycel.sim.report import plot_histograms, plot_latency_cdf

    base = Path(out)
    base.mkdir(parents=True, exist_ok=True)
    summary = summarize_attack(result)
    (base / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if logs:
        result.log.write(base)
    tag = f"{summary['persona']}, {'v1.0-like' if summary['v10'] else 'scoring ' + ('on' if summary['scoring'] else 'off')}"
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
    if result.options.sybils:
        ax.axvline(result.attack_start, color="red", alpha=0.4, label="attack")
    _finish(plt, fig, ax, path, title=title, xlabel="virtual time (s)", ylabel="peers in mesh")


__all__ = [
    "CENSORS",
    "PERSONAS",
    "SCENARIOS",
    "SPAMMERS",
    "REPORT_THRESHOLDS",
    "AttackGossipsub",
    "AttackOptions",
    "AttackResult",
    "AttackRouter",
    "attacker_config",
    "honest_config",
    "report_score_params",
    "run_attack",
    "scenario_options",
    "summarize_attack",
    "target_recovery",
    "ATTACK_HEADER",
    "SPAM_HEADER",
    "attack_row",
    "evaluate_attacks",
    "spam_row",
    "write_attack",
]
