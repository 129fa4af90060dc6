"""The whole evaluation behind ``make sim``: the scale run (``subnet-blob-msg``, IDONTWANT on and off), the
partition run and the Sybil attacks with scoring on and off; writes ``report.md``, JSON and PNGs."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mycel.sim.attacks import AttackOptions, evaluate_attacks
from mycel.sim.dht import DhtOptions, evaluation_lines
from mycel.sim.report import plot_latency_cdf, write_run
from mycel.sim.runner import PartitionPlan, RunOptions, run, summarize
from mycel.sim.script import subnet_blob_msg


@dataclass
class EvalOptions:
    """Sizes of the evaluation's runs."""

    nodes: int = 1000
    """Nodes of the scale run (subnet-blob-msg)."""
    messages: int = 16
    """Messages of the scale run."""
    partition_nodes: int = 200
    """Nodes of the partition run."""
    honest_publishers: int = 10
    """Honest publishers of the attack runs."""
    honest_lurkers: int = 90
    """Honest lurkers of the attack runs."""
    sybils: int = 400
    """Attackers of the attack runs."""
    attack_duration: float = 300.0
    """Virtual seconds each attack run lasts."""
    attack_honest_degree: int = 20
    """Connections each honest node of the attack runs opens."""
    attack_degree: int = 20
    """Connections each attacker opens."""
    seed: int = 1
    """Seed of every run."""
    dht_servers: int = 1000
    """DHT servers of the DHT run (:mod:`mycel.sim.dht`; 0: no DHT run)."""


def _pct(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f} %"


def _s(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f} s"


def evaluate(out: str | Path, opts: EvalOptions, progress: Callable[[str], None]) -> Path:
    """Run everything and write ``out/report.md``; returns its path."""
    base = Path(out)
    base.mkdir(parents=True, exist_ok=True)
    lines = ["# mycel.sim evaluation", ""]
    # 1. scale
    script = subnet_blob_msg(opts.nodes, opts.seed, messages=opts.messages)
    scale: dict[str, dict[str, Any]] = {}
    lat: dict[str, list[float]] = {}
    for idw in (True, False):
        tag = "idontwant-on" if idw else "idontwant-off"
        progress(f"scale: subnet-blob-msg, {opts.nodes} nodes, {tag}")
        result = run(script, RunOptions(nodes=opts.nodes, seed=opts.seed, idontwant=idw, progress=progress))
        summary = summarize(result)
        write_run(result, summary, base / f"scale-{tag}", logs=idw)
        scale[tag] = summary
        lat[tag] = [x for m in result.messages[4:] for x in m.latencies]
    plot_latency_cdf(lat, base / "scale_latency_cdf.png", title=f"subnet-blob-msg, {opts.nodes} nodes: delivery latency")
    on, off = scale["idontwant-on"], scale["idontwant-off"]
    saved = 1 - on["duplicate_payload_bytes"] / off["duplicate_payload_bytes"] if off["duplicate_payload_bytes"] else math.nan
    lines += [
        f"## Scale: subnet-blob-msg, {opts.nodes} nodes (16 x 98,304 B, 20 connections, 5 ms validation, regions, 20 % supernodes)",
        "",
        "| run | wall | CPU | peak RSS | min reach (msgs 5+) | latency p50 | p99 | longest time to all | dups/node/msg | dup payload bytes | mesh samples out of [D_lo, D_hi] | of which > 3 heartbeats | empty meshes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tag, s in scale.items():
        mesh = s["mesh"]
        lines.append(
            f"| {tag} | {s['wall_seconds']} s | {s['cpu_seconds']} s | {s['max_rss_mib']} MiB | {_pct(s['min_reach'])} | "
            f"{_s(s['latency_p50'])} | {_s(s['latency_p99'])} | {_s(s['max_time_to_all'])} | {s['avg_duplicates_per_node_per_message']} | "
            f"{s['duplicate_payload_bytes']:,} | {mesh['out_of_range']} / {mesh['samples']} | {mesh['persistent']} | {mesh['empty']} |"
        )
    lines += ["", f"IDONTWANT on sends {_pct(saved)} fewer duplicate payload bytes than off.", "",
              "![latency](scale_latency_cdf.png) ![mesh](scale-idontwant-on/mesh_degree.png)", ""]
    # 2. partition
    n = opts.partition_nodes
    progress(f"partition: {n} nodes, half cut off for 60 s")
    pscript = subnet_blob_msg(n, opts.seed, messages=10, start=30)
    presult = run(pscript, RunOptions(nodes=n, seed=opts.seed, partition=PartitionPlan(start=40.0, duration=60.0), progress=progress))
    psummary = summarize(presult, skip=0)
    write_run(presult, psummary, base / "partition", logs=False)
    lines += [f"## Partition: {n} nodes, half cut off from t=40 s to t=100 s", "",
              "| message | published at | reach | time to all |", "|---|---|---|---|"]
    for m in presult.messages:
        lines.append(f"| {m.id} | {m.published_at} s | {_pct(m.reach)} | {_s(m.time_to_all)} |")
    lines += ["", "![mesh](partition/mesh_degree.png)", ""]
    # 3. attacks
    progress("attacks: every scenario with scoring on and off, v1.0-like baselines, spam personas")
    aopts = AttackOptions(
        publishers=opts.honest_publishers, lurkers=opts.honest_lurkers, sybils=opts.sybils, honest_degree=opts.attack_honest_degree,
        attack_degree=opts.attack_degree, duration=opts.attack_duration, seed=opts.seed,
    )
    table, attacks = evaluate_attacks(base, aopts, progress)
    lines += [
        f"## Sybil attacks: {opts.honest_publishers} publishers + {opts.honest_lurkers} lurkers + {opts.sybils} Sybils "
        f"(the report's 1:4), honest degree {opts.attack_honest_degree}, attack degree {opts.attack_degree}, the report's score parameters",
        "",
        *table,
        "",
        "![scores](attack-badboy-scoring-on/scores.png) ![mesh](attack-eclipse-all-v10/honest_in_mesh.png)",
        "",
    ]
    # 4. the DHT at scale (its summary.json and summary.md in dht-<servers>/)
    if opts.dht_servers:
        progress(f"dht: {opts.dht_servers} servers")
        lines += evaluation_lines(base / f"dht-{opts.dht_servers}", DhtOptions(servers=opts.dht_servers, seed=opts.seed, progress=progress))
    (base / "evaluation.json").write_text(json.dumps({"scale": scale, "partition": psummary, "attacks": attacks}, indent=1) + "\n")
    report = base / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


__all__ = ["EvalOptions", "evaluate"]
