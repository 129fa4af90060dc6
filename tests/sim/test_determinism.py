"""A simulation repeats from its seed in any process: trio breaks ties between equal deadlines by ``id()`` of
the cancel scope, and ids follow the process's allocation history (its environment, its paths), so before
``order_deadline_ties`` two checkouts ran the same eclipse seed to different mesh figures (CI: 3.7 honest
mesh peers where this machine had 3.6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from mycel.sim.runner import run_virtual


def test_equal_deadlines_expire_in_the_order_they_were_set_whatever_the_scopes_ids() -> None:
    async def main() -> tuple[list[int], list[int]]:
        runner = trio._core._run.GLOBAL_RUN_CONTEXT.runner
        scopes = [trio.CancelScope() for _ in range(20)]
        by_id_desc = sorted(scopes, key=id, reverse=True)  # trio's own tie-breaker would expire these last-first
        at = trio.current_time() + 5
        set_order: list[int] = []  # tasks start in an order of trio's choosing

        async def hold(i: int) -> None:
            with by_id_desc[i] as scope:
                scope.deadline = at
                set_order.append(i)
                await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(hold, i)
            while len(set_order) < 20:
                await trio.sleep(0)
            heap = [(d, k, s) for d, k, s in runner.deadlines._heap if d == at]
            expiry_order = [by_id_desc.index(s) for _, _, s in sorted(heap, key=lambda e: (e[0], e[1]))]
            nursery.cancel_scope.cancel()
        return set_order, expiry_order

    set_order, expiry_order = run_virtual(main, seed=1)
    assert expiry_order == set_order


def _attack_summary(out: Path, pad: int) -> dict[str, Any]:
    env = {**os.environ, "MYCEL_TEST_PAD": "x" * pad}  # shifts every allocation of the child process
    subprocess.run(
        [sys.executable, "-m", "mycel.sim", "attack", "--scenario", "eclipse-single", "--seed", "1", "--warmup", "3",
         "--sybil-delay", "5", "--publishers", "3", "--lurkers", "9", "--honest-degree", "4", "--sybils", "16",
         "--attack-degree", "6", "--duration", "30", "--out", str(out), "--quiet"],
        check=True, env=env, capture_output=True, timeout=300,
    )
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in ("wall_seconds", "cpu_seconds", "max_rss_mib")}


def test_an_attack_run_gives_the_same_figures_whatever_the_environment(tmp_path: Path) -> None:
    a, b = _attack_summary(tmp_path / "a", 10), _attack_summary(tmp_path / "b", 3000)
    assert a == b
