"""Probes of why the eclipsed lurker keeps 2 honest mesh peers, not 3 (#15; benchmarks/sim/report.md).

Reduced eclipse-single (2 publishers + 18 lurkers + 80 Sybils, degree 4, 150 s of publishing, seed 1) with one
departure from the report's setup per run: P3 rescaled to the message rate, opportunistic grafting above 0,
D_out 3, or 10 msg/s. Prints one JSON line per run. ``PYTHONHASHSEED`` is pinned as the CLI does.

    .venv/bin/python benchmarks/sim/eclipse_target_probe.py [RUN ...]   (default: every run in RUNS)
    .venv/bin/python benchmarks/sim/eclipse_target_probe.py trace       (who prunes the target, who refuses it)
    .venv/bin/python benchmarks/sim/eclipse_target_probe.py heartbeats  (the target's mesh at each heartbeat)
    .venv/bin/python benchmarks/sim/eclipse_target_probe.py heartbeats-full  (the same at the issue's size)
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

RUNS: dict[str, dict[str, Any]] = {
    "report": {},
    "p3-scaled+og1": {"p3_scaled": True, "opportunistic_graft_threshold": 1.0},
    "d_out-3": {"d_out": 3},
    "10-msg-per-s": {"publish_every": 0.1},
    "10-msg-per-s+p3-scaled": {"publish_every": 0.1, "p3_scaled": True},
    "prune-above-d-hi": {"prune_at_d_hi": False},
}
KEYS = ("honest_delivery", "min_honest_60s_after_attack", "held_3_honest_from", "honest_in_mesh_mean_last",
        "sybils_in_mesh_mean_last", "score_honest_mean", "score_sybil_mean", "graylisted_honest", "cpu_seconds")


def trace() -> dict[str, Any]:
    """The report's parameters, with every PRUNE the target gets from an honest peer and every GRAFT of the
    target an honest peer refuses recorded (time, whether the refuser's mesh was at D_hi, the target's
    direction as the refuser sees it)."""
    import mycel.sim.attacks as attacks
    from mycel.protocols.pubsub.core import GossipsubRouter
    from mycel.sim.runner import interop_identity

    opts = attacks.scenario_options(
        "eclipse-single", publishers=2, lurkers=18, sybils=80, honest_degree=4, attack_degree=4, duration=150.0, seed=1
    )
    honest = {interop_identity(i).peer_id for i in range(opts.publishers + opts.lurkers)}
    target = interop_identity(opts.single_target()).peer_id
    prunes: list[float] = []
    refusals: list[tuple[float, bool, bool]] = []
    handle_graft, handle_prune = GossipsubRouter._handle_graft, GossipsubRouter._handle_prune

    def graft(self: GossipsubRouter, peer: Any, state: Any, grafts: Any, score: float, now: float) -> Any:
        grafts = list(grafts)
        full = any(len(self.mesh.get(g.topicID, ())) >= self.config.d_hi for g in grafts)
        out = handle_graft(self, peer, state, grafts, score, now)
        if peer == target and self.local_peer in honest and out:
            refusals.append((now, full, state.outbound))
        return out

    def prune(self: GossipsubRouter, peer: Any, items: Any, score: float, now: float) -> None:
        if self.local_peer == target and peer in honest:
            prunes.append(now)
        handle_prune(self, peer, items, score, now)

    GossipsubRouter._handle_graft = graft  # type: ignore[method-assign]
    GossipsubRouter._handle_prune = prune  # type: ignore[method-assign,assignment]
    result = attacks.run_attack(opts)
    summary = attacks.summarize_attack(result)
    start = result.attack_start
    return {
        "run": "trace", "attack_at": round(start, 1),
        "prunes_from_honest_before_attack": sum(1 for t in prunes if t < start),
        "prunes_from_honest_after_attack": sum(1 for t in prunes if t >= start),
        "prunes_from_honest_in_first_10s_of_attack": sum(1 for t in prunes if start <= t < start + 10),
        "target_grafts_refused_by_honest": len(refusals),
        "of_which_refuser_at_d_hi": sum(1 for _, full, _ in refusals if full),
        "of_which_target_inbound_to_refuser": sum(1 for _, _, outbound in refusals if not outbound),
        **{k: summary[k] for k in KEYS},
    }


def heartbeats(until: float = 80.0, *, full: bool = False) -> None:
    """The report's parameters; at each of the target's heartbeats from the attack to ``until``, print its
    mesh before and after, with each honest member's index, score and whether the target dialled it
    (``full``: at the issue's size, 10 + 90 + 400 at degree 20, publishing for 100 s)."""
    import mycel.sim.attacks as attacks
    from mycel.protocols.pubsub.core import GossipsubRouter
    from mycel.sim.runner import interop_identity

    sizes: dict[str, Any] = {} if full else {
        "publishers": 2, "lurkers": 18, "sybils": 80, "honest_degree": 4, "attack_degree": 4}
    opts = attacks.scenario_options("eclipse-single", duration=100.0, seed=1, **sizes)
    honest = {interop_identity(i).peer_id: i for i in range(opts.publishers + opts.lurkers)}
    target = interop_identity(opts.single_target()).peer_id
    beat = GossipsubRouter.heartbeat

    def traced(self: GossipsubRouter, now: float) -> None:
        if self.local_peer != target or not 38.0 < now < until:
            beat(self, now)
            return
        before = [p for m in self.mesh.values() for p in m]
        members = [(honest[p], round(self._score(p, now), 2), self.peers[p].outbound) for p in before if p in honest]
        beat(self, now)
        after = sorted(honest[p] for m in self.mesh.values() for p in m if p in honest)
        print(f"t={now:.1f} mesh {len(before)} -> {sum(len(m) for m in self.mesh.values())}; honest members "
              f"(index, score, dialled) {members}; honest after {after}", flush=True)

    GossipsubRouter.heartbeat = traced  # type: ignore[method-assign]
    attacks.run_attack(opts)


def main() -> None:
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    import mycel.sim.attacks as attacks

    plain = attacks.honest_config
    if sys.argv[1:] == ["trace"]:
        print(json.dumps(trace()), flush=True)
        return
    if sys.argv[1:] == ["heartbeats"]:
        heartbeats()
        return
    if sys.argv[1:] == ["heartbeats-full"]:
        heartbeats(150.0, full=True)
        return
    for name in sys.argv[1:] or list(RUNS):
        changes = dict(RUNS[name])
        d_out = changes.pop("d_out", None)
        attacks.honest_config = (
            plain if d_out is None else (lambda **kw: dataclasses.replace(plain(**kw), d_out=d_out))
        )
        opts = attacks.scenario_options(
            "eclipse-single", publishers=2, lurkers=18, sybils=80, honest_degree=4, attack_degree=4, duration=150.0,
            seed=1, **changes,
        )
        summary = attacks.summarize_attack(attacks.run_attack(opts))
        print(json.dumps({"run": name, **{k: summary[k] for k in KEYS}}), flush=True)


if __name__ == "__main__":
    main()
