"""The churn soak, reduced for `make test` (3 minutes; `make soak` runs 30): client hosts connect over TCP
and QUIC, echo, ping, publish on gossipsub and leave, continuously; the node's RSS must stop growing
(slope over the second half under a bound), its fds and tasks return to the idle baseline, and no client
session fails (#12)."""

from __future__ import annotations

import os

from tests.soak.churn import run_soak

MINUTES = float(os.environ.get("MYCEL_SOAK_MINUTES", "3"))
RSS_SLOPE_KB_PER_MIN = 2048  # steady state: well under 2 MiB/min once arenas and caches are warm


async def test_churn_soak_keeps_resources_flat() -> None:
    result = await run_soak(MINUTES, small_tables=True)
    print("\n" + result.report())
    assert not result.errors, result.errors[:5]
    assert result.sessions >= 100 * MINUTES, "the churn did not run: too few client sessions"
    assert result.received == result.published, "the node lost gossip messages"
    assert result.slope("rss_kb") < RSS_SLOPE_KB_PER_MIN, result.report()
    assert result.idle_after["fds"] <= result.idle_before["fds"], result.report()
    assert result.idle_after["tasks"] <= result.idle_before["tasks"], result.report()
    assert result.idle_after["conns"] == 0
