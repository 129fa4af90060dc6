"""The bad-boy Sybil attack, reduced: with the v1.1 evaluation's scoring honest nodes score the Sybils down
and keep more honest peers in their meshes; with scoring off the same run shows the Sybils holding the
meshes (the attack working: the test can fail) (#15). The full 10 + 90 + 400 run is `make sim`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

from mycel import Identify
from mycel.protocols.pubsub.service import Gossipsub
from mycel.sim import SimNetwork, Uniform, sim_hosts
from mycel.sim.attacks import AttackGossipsub, AttackRouter, attacker_config
from mycel.sim.runner import interop_config
from tests.sim.pinned import sim_cli


def _run(scoring: bool, out: Path) -> dict[str, Any]:
    return sim_cli(
        "attack", "--publishers", "3", "--lurkers", "17", "--sybils", "40", "--honest-degree", "6", "--attack-degree", "8",
        "--duration", "100", "--warmup", "5", "--seed", "3", "--scoring", "on" if scoring else "off", out=out,
    )


def test_badboy_sybils_with_scoring_on_and_off(tmp_path: Path) -> None:
    on = _run(scoring=True, out=tmp_path / "on")
    off = _run(scoring=False, out=tmp_path / "off")
    assert on["messages"] == off["messages"] == 100
    # scoring on: every message still reaches every honest node, no honest node is graylisted, the
    # Sybils (who forward nothing) score below zero and honest peers above
    assert on["honest_delivery"] == 1.0 and on["graylisted_honest"] == 0
    assert on["score_sybil_mean"] < 0 < on["score_honest_mean"]
    # ... and hold fewer mesh slots than when nobody scores them
    assert on["honest_in_mesh_mean_last"] >= off["honest_in_mesh_mean_last"] + 1.0, (on, off)
    assert on["sybils_in_mesh_mean_last"] < off["sybils_in_mesh_mean_last"], (on, off)


async def test_a_bad_boy_grafts_its_peers_censors_and_is_cancelled_promptly(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(seed=9, latency=Uniform(0.02))
    bad = AttackGossipsub(attacker_config("badboy"), persona="badboy", attack_at=0.0, seed=1)
    services = [Gossipsub(interop_config(), seed=0), bad, Gossipsub(interop_config(), seed=2)]
    got: list[bytes] = []
    with trio.CancelScope() as everything:
        async with sim_hosts(net, 3, services=lambda i: [Identify(), services[i]]) as (a, b, c):
            await a.connect(b.peer_id, b.listen_addrs)  # a chain a - bad boy - c: c hears only through b
            await c.connect(b.peer_id, b.listen_addrs)
            for svc in services:
                svc.join("t")
            assert isinstance(bad.router, AttackRouter)
            async with c.service(Gossipsub).subscribe("t") as sub:
                await trio.sleep(3)  # a few heartbeats: the bad boy has grafted both
                assert bad.router.mesh["t"] == {a.peer_id, c.peer_id}
                assert b.peer_id in services[0].mesh("t") and b.peer_id in services[2].mesh("t")
                await services[0].publish("t", b"x" * 16)
                with trio.move_on_after(10):  # gossip rounds too: the bad boy answers no IWANT
                    got.append((await sub.receive()).data)
                assert got == []
                start = trio.current_time()
                everything.cancel()  # mid-work: heartbeats, streams and the attacker's nursery all end
    assert everything.cancelled_caught
    assert trio.current_time() - start < 1.0
