"""``python -m mycel.sim run SCENARIO --nodes N --seed S --out DIR``: run a gossipsub-interop scenario
(a params.json path or a built-in name: ``subnet-blob-msg``, ``simple-fanout``) on N simulated hosts and
write the logs (gossipsub-interop's layout: ``DIR/hosts/node<N>/node<N>.stdout``), ``summary.json``,
``summary.md`` and plots.

``python -m mycel.sim attack --persona badboy --scoring on|off --out DIR`` runs the Sybil scenario
(:mod:`mycel.sim.attacks`); ``python -m mycel.sim dht --servers N --seed S --out DIR [--alpha 3 10]`` the DHT
at scale (:mod:`mycel.sim.dht`); ``python -m mycel.sim evaluate --out benchmarks/sim`` runs everything (``make sim``);
``python -m mycel.sim node --params params.json`` is one real node for test-plans' gossipsub-interop harness
(:mod:`mycel.sim.interop_node`).

The process re-executes itself with ``PYTHONHASHSEED=0``, and the runs break trio's deadline ties in the order the
deadlines were set (not by ``id()``), so that a seed gives the same run every time, on any machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence


SCENARIO_NAMES = (
    "badboy", "eclipse-single", "eclipse-single-sparse", "eclipse-all", "eclipse-publishers", "covert-flash", "cold-boot", "attack-at-dawn",
    "ihave-spam", "iwant-spam", "graft-spam", "invalid-spam", "sub-flood",
)
"""``mycel.sim.attacks.SCENARIOS`` (listed here so that ``--help`` does not import the simulator)."""
PERSONA_NAMES = ("badboy", "covert-flash", "ihave-spam", "iwant-spam", "graft-spam", "invalid-spam", "sub-flood")
"""``mycel.sim.attacks.PERSONAS``."""


def _pin_hash_seed(argv: Sequence[str]) -> None:
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        os.execve(sys.executable, [sys.executable, "-m", "mycel.sim", *argv], env)


def _progress(quiet: bool) -> Callable[[str], None]:
    start = time.monotonic()

    def show(text: str) -> None:
        if not quiet:
            print(f"[{time.monotonic() - start:7.1f}s] {text}", file=sys.stderr, flush=True)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """The ``mycel.sim`` command line."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m mycel.sim", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run a gossipsub-interop scenario")
    run_p.add_argument("scenario", help="params.json path or built-in name (subnet-blob-msg, simple-fanout)")
    run_p.add_argument("--nodes", type=int, default=100)
    run_p.add_argument("--seed", type=int, default=0)
    run_p.add_argument("--out", required=True)
    run_p.add_argument("--messages", type=int, default=16, help="built-in scenarios: messages published")
    run_p.add_argument("--start", type=float, default=120.0, help="built-in scenarios: first publish (s)")
    run_p.add_argument("--no-idontwant", action="store_true", help="never send IDONTWANT")
    run_p.add_argument("--latency", choices=["regions", "uniform"], default="regions")
    run_p.add_argument("--partition", metavar="START:DURATION", help="cut half the nodes off for DURATION s at START")
    run_p.add_argument("--skip", type=int, default=4, help="warm-up messages left out of the totals")
    run_p.add_argument("--no-logs", action="store_true", help="do not write the per-node logs")
    run_p.add_argument("--quiet", action="store_true")
    atk = sub.add_parser("attack", help="the Sybil attack scenario (scoring on or off)")
    atk.add_argument("--out", required=True)
    atk.add_argument("--seed", type=int, default=0)
    atk.add_argument("--scoring", choices=["on", "off"], default="on")
    atk.add_argument("--scenario", choices=sorted(SCENARIO_NAMES), help="a scenario of the evaluation (its options; flags below override)")
    atk.add_argument("--persona", choices=list(PERSONA_NAMES))
    atk.add_argument("--v10", action="store_true", help="all the v1.1 hardening off (no scoring, flood publish, opportunistic graft, D_out, adaptive gossip)")
    atk.add_argument("--eclipse", choices=["none", "single", "all", "publishers"])
    atk.add_argument("--cold-boot", action="store_true", help="attackers connect together with the honest nodes")
    atk.add_argument("--sybil-delay", type=float, help="seconds from the first publish to the attackers' connecting (30)")
    atk.add_argument("--attack-at", type=float, help="seconds after the network formed (covert flash: 120)")
    atk.add_argument("--publishers", type=int, default=10)
    atk.add_argument("--lurkers", type=int, default=90)
    atk.add_argument("--sybils", type=int, default=400)
    atk.add_argument("--eclipse-target", type=int, help="every Sybil dials this honest node first")
    atk.add_argument("--honest-degree", type=int, default=20)
    atk.add_argument("--attack-degree", type=int, default=20)
    atk.add_argument("--sybils-per-ip", type=int, help="attack at dawn: 16")
    atk.add_argument("--ip-colocation-weight", type=float, help="P6 weight (attack at dawn: -100)")
    atk.add_argument("--p3-scaled", action="store_true", help="P3 rescaled from the report's 120 msg/s to this run's rate")
    atk.add_argument("--opportunistic-graft-threshold", type=float, help="instead of the report's 0")
    atk.add_argument("--prune-above-d-hi", action="store_true",
                     help="honest meshes pruned only above D_hi (the go the report ran), not on reaching it (go today)")
    atk.add_argument("--report-rules", action="store_true",
                     help="the report's rules: --p3-scaled and --prune-above-d-hi together")
    atk.add_argument("--duration", type=float, default=300.0)
    atk.add_argument("--warmup", type=float, help="seconds from the connections to the first publish (10)")
    atk.add_argument("--quiet", action="store_true")
    ats = sub.add_parser("attacks", help="the evaluation's attack table only: every scenario, scoring on/off, v1.0-like, spam personas")
    ats.add_argument("--out", required=True)
    ats.add_argument("--seed", type=int, default=1)
    ats.add_argument("--publishers", type=int, default=10)
    ats.add_argument("--lurkers", type=int, default=90)
    ats.add_argument("--sybils", type=int, default=400)
    ats.add_argument("--spammers", type=int, help="attackers of the spam persona runs (default: a tenth of --sybils)")
    ats.add_argument("--honest-degree", type=int, default=20)
    ats.add_argument("--attack-degree", type=int, default=20)
    ats.add_argument("--duration", type=float, default=300.0)
    ats.add_argument("--spam-duration", type=float, help="seconds of publishing of the spam runs (default: --duration)")
    ats.add_argument("--scenarios", help="comma-separated subset of the Sybil scenarios")
    ats.add_argument("--quiet", action="store_true")
    dh = sub.add_parser("dht", help="the DHT at scale: FIND_NODE, PUT/GET, providers, partition, crashes, Sybils")
    dh.add_argument("--servers", type=int, default=1000)
    dh.add_argument("--seed", type=int, default=0)
    dh.add_argument("--out", required=True)
    dh.add_argument("--alpha", type=int, nargs="+", default=[3, 10], help="alphas compared (the first is used elsewhere)")
    dh.add_argument("--keys", type=int, default=200, help="random keys looked up per alpha")
    dh.add_argument("--ops", type=int, default=100, help="writer/reader pairs per operation round")
    dh.add_argument("--sybils", type=int, default=50)
    dh.add_argument("--latency", choices=["regions", "uniform"], default="regions")
    dh.add_argument("--phases", default=",".join(("find_node", "ops", "partition", "crash", "sybil")), help="comma-separated")
    dh.add_argument("--no-diversity", action="store_true", help="control run: the diversity filter does not group sim IPs")
    dh.add_argument("--no-refresh-round", action="store_true", help="measure after bootstrap and the tables' first 2-min low-peers repair, before their 10-min refresh")
    dh.add_argument("--quiet", action="store_true")
    nd = sub.add_parser("node", help="one real node under test-plans' gossipsub-interop contract (TCP port 9000)")
    nd.add_argument("--params", required=True)
    nd.add_argument("--node-id", type=int, help="default: N of the hostname node<N>")
    ev = sub.add_parser("evaluate", help="the whole evaluation (make sim): scale, partition, attacks")
    ev.add_argument("--out", default="benchmarks/sim")
    ev.add_argument("--nodes", type=int, default=1000)
    ev.add_argument("--partition-nodes", type=int, default=200)
    ev.add_argument("--sybils", type=int, default=400)
    ev.add_argument("--lurkers", type=int, default=90)
    ev.add_argument("--attack-duration", type=float, default=300.0)
    ev.add_argument("--seed", type=int, default=1)
    ev.add_argument("--dht-servers", type=int, default=1000, help="servers of the DHT run (0: none)")
    ev.add_argument("--quiet", action="store_true")
    args = parser.parse_args(args_list)
    if args.command == "node":  # a real node: wall clock, real sockets; no need to pin the hash seed
        import trio

        from mycel.sim.interop_node import node_id_from_hostname, run_node
        from mycel.sim.script import ScenarioError, load_params

        try:
            script = load_params(args.params)
            node_id = args.node_id if args.node_id is not None else node_id_from_hostname()
        except (ScenarioError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        trio.run(run_node, script, node_id)
        return 0
    _pin_hash_seed(args_list)

    if args.command == "run":
        from mycel.sim.report import write_run
        from mycel.sim.runner import PartitionPlan, RunOptions, run, summarize
        from mycel.sim.script import BUILTIN, ScenarioError, load_params

        try:
            if args.scenario in BUILTIN:
                script = BUILTIN[args.scenario](args.nodes, args.seed, messages=args.messages, start=args.start)
            else:
                script = load_params(args.scenario)
        except ScenarioError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        plan = None
        if args.partition:
            start, _, duration = args.partition.partition(":")
            try:
                plan = PartitionPlan(float(start), float(duration))
            except ValueError:
                parser.error(f"--partition wants START:DURATION in seconds, got {args.partition!r}")
        options = RunOptions(
            nodes=args.nodes, seed=args.seed, latency=args.latency, idontwant=not args.no_idontwant,
            partition=plan, progress=_progress(args.quiet),
        )
        result = run(script, options)
        summary = summarize(result, skip=args.skip)
        md = write_run(result, summary, args.out, logs=not args.no_logs)
        brief = {k: summary[k] for k in ("nodes", "wall_seconds", "cpu_seconds", "max_rss_mib", "min_reach", "latency_p99", "max_time_to_all")}
        print(json.dumps(brief))
        print(f"report: {md}", file=sys.stderr)
        return 0

    if args.command == "dht":
        from mycel.sim.dht import DhtOptions, run_dht, write_dht

        try:
            options_d = DhtOptions(
                servers=args.servers, seed=args.seed, alphas=tuple(args.alpha), keys=args.keys, ops=args.ops,
                sybils=args.sybils, latency=args.latency, phases=tuple(p for p in args.phases.split(",") if p),
                diversity=not args.no_diversity, refresh_round=not args.no_refresh_round, progress=_progress(args.quiet),
            )
            result_d = run_dht(options_d)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        summary_d = write_dht(result_d, args.out)
        print(json.dumps({k: v for k, v in summary_d.items() if not isinstance(v, (list, dict))}))
        print(f"report: {args.out}/summary.md", file=sys.stderr)
        return 0

    if args.command == "attack":
        from mycel.sim.attacks import run_attack, scenario_options, write_attack

        given = {
            "persona": args.persona, "attack_at": args.attack_at, "warmup": args.warmup, "eclipse": args.eclipse,
            "sybil_delay": args.sybil_delay, "sybils_per_ip": args.sybils_per_ip, "ip_colocation_weight": args.ip_colocation_weight,
            "cold_boot": args.cold_boot or None, "eclipse_target": args.eclipse_target,
            "p3_scaled": args.p3_scaled or args.report_rules or None,
            "opportunistic_graft_threshold": args.opportunistic_graft_threshold,
            "prune_at_d_hi": False if args.prune_above_d_hi or args.report_rules else None,
        }
        options_a = scenario_options(
            args.scenario or "badboy", publishers=args.publishers, lurkers=args.lurkers, sybils=args.sybils,
            scoring=args.scoring == "on", v10=args.v10, seed=args.seed, duration=args.duration, honest_degree=args.honest_degree,
            attack_degree=args.attack_degree, progress=_progress(args.quiet), **{k: v for k, v in given.items() if v is not None},
        )
        summary_a = write_attack(run_attack(options_a), args.out)
        print(json.dumps({k: v for k, v in summary_a.items() if not isinstance(v, (list, dict))}))
        return 0

    if args.command == "attacks":
        from pathlib import Path

        from mycel.sim.attacks import MAIN_SCENARIOS, AttackOptions, evaluate_attacks

        base = AttackOptions(
            publishers=args.publishers, lurkers=args.lurkers, sybils=args.sybils, honest_degree=args.honest_degree,
            attack_degree=args.attack_degree, duration=args.duration, seed=args.seed,
        )
        chosen = tuple(args.scenarios.split(",")) if args.scenarios else MAIN_SCENARIOS
        lines, _ = evaluate_attacks(
            args.out, base, _progress(args.quiet), scenarios=chosen, spammers=args.spammers, spam_duration=args.spam_duration
        )
        table = Path(args.out) / "attacks.md"
        table.write_text("\n".join(lines) + "\n")
        print(f"table: {table}", file=sys.stderr)
        return 0

    from mycel.sim.evaluate import EvalOptions, evaluate

    options_e = EvalOptions(
        nodes=args.nodes, partition_nodes=args.partition_nodes, sybils=args.sybils, honest_lurkers=args.lurkers,
        attack_duration=args.attack_duration, seed=args.seed, dht_servers=args.dht_servers,
    )
    report = evaluate(args.out, options_e, _progress(args.quiet))
    print(f"report: {report}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
