"""The DHT at scale on mycel.sim, reduced (#15): real KadDHT servers on the simulated network, tables built by
real bootstrap, thresholds asserted against the simulation's ground truth — FIND_NODE returns the true 20
closest for >= 95 % of keys, PUT/GET and PROVIDE/FIND_PROVIDERS succeed 100 % with no churn and >= 99 % with
10 % of the servers crashed, values cross a healed partition, 50 Sybils from one /16 hold <= 3 slots in any
honest table (and more without the diversity filter: the measurement can fail); same seed, same figures;
cancelled mid-run, the scenario ends promptly. The 1,000-server run is `make sim` / benchmarks/sim/dht.md."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio
import trio.testing

from mycel.sim.dht import DhtOptions, _Scenario
from tests.sim.pinned import sim_cli

SERVERS = "40"


def _strip(summary: dict[str, Any]) -> dict[str, Any]:
    """The measured figures, without the costs (CPU and wall clock differ from run to run)."""
    return {k: v for k, v in summary.items() if k not in ("wall_seconds", "cpu_seconds", "max_rss_mib", "phase_costs")}


def test_reduced_dht_meets_the_thresholds(tmp_path: Path) -> None:
    args = ("dht", "--servers", SERVERS, "--seed", "3", "--keys", "40", "--ops", "20", "--sybils", "50")
    s = sim_cli(*args, out=tmp_path / "a")
    assert s["tables"]["healthy"] == int(SERVERS)
    for r in s["find_node"]:  # alpha 3 and 10, same keys
        assert r["exact_fraction"] >= 0.95, r
        assert 1 <= r["rounds"]["mean"] <= 6 and r["requests"]["mean"] >= 10, r
    assert [r["alpha"] for r in s["find_node"]] == [3, 10]
    ops = s["ops_no_churn"]
    assert ops["get_fraction"] == ops["find_providers_fraction"] == 1.0, ops
    p = s["partition"]
    for counts in (p["read_after_heal_of_values_written_during"], p["written_after_heal_read_from_other_side"]):
        assert counts["get_fraction"] == counts["find_providers_fraction"] == 1.0, p
    assert p["find_node_after_heal"]["exact_fraction"] >= 0.95, p
    c = s["crash"]
    assert c["crashed"] == int(SERVERS) // 10
    for counts in (c["written_before_read_after"], c["written_and_read_after"]):
        assert counts["get_fraction"] >= 0.99 and counts["find_providers_fraction"] >= 0.99, c
    y = s["sybil"]
    assert y["sybils"] == 50 and y["diversity_filter"]
    assert y["max_slots_in_any_honest_table"] <= 3 and y["max_slots_per_cpl"] <= 2, y
    assert y["honest_tables_holding_a_sybil"] >= 1, y  # the Sybils did get in where the filter leaves room
    assert "DHT at scale: 40 servers" in (tmp_path / "a" / "summary.md").read_text()


def test_same_seed_gives_the_same_figures(tmp_path: Path) -> None:
    args = ("dht", "--servers", "20", "--seed", "3", "--keys", "20", "--ops", "5", "--phases", "find_node")
    first, second = sim_cli(*args, out=tmp_path / "a"), sim_cli(*args, out=tmp_path / "b")
    assert _strip(first) == _strip(second)
    assert first["find_node"][0]["exact"] == 20 and first["find_node"][0]["virtual_seconds"]["mean"] > 0


def test_without_the_diversity_filter_the_sybils_take_more_slots(tmp_path: Path) -> None:
    s = sim_cli(
        "dht", "--servers", "30", "--seed", "3", "--keys", "10", "--sybils", "10", "--phases", "sybil", "--no-diversity",
        out=tmp_path / "off",
    )
    y = s["sybil"]
    assert not y["diversity_filter"] and y["sybils"] == 10
    assert y["max_slots_in_any_honest_table"] > 3, y  # the control: the same attack works without the filter


async def test_cancelling_the_scenario_mid_run_ends_it_promptly(autojump_clock: trio.testing.MockClock) -> None:
    scenario = _Scenario(DhtOptions(servers=30, seed=2, keys=10, ops=5))
    done = trio.Event()

    async def run() -> None:
        await scenario.run()
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        while len(scenario.servers) < 20:  # mid-join: hosts up, bootstrap lookups in flight
            await trio.sleep(0.5)
        wall = time.monotonic()
        nursery.cancel_scope.cancel()
    assert time.monotonic() - wall < 10.0
    assert not done.is_set()
    assert all(not s.alive for s in scenario.servers), "every host ended with the scenario"
    assert all(not node.connections for node in scenario.net.nodes), "no connection left open"
