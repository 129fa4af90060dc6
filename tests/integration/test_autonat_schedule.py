"""When the AutoNAT client runs its rounds (MockClock, memory transport): the first once boot_delay has
passed and a server is there, then every retry_interval while unsettled; a change of our addresses brings
the next round forward, but never closer than min_interval to the last one; with no server, no round."""

from __future__ import annotations

import trio
import trio.testing

from mycel.protocols.autonat import AutoNAT, AutoNATConfig
from mycel.protocols.identify import Identify
from mycel.testing.hosts import memory_hosts

CONFIG = AutoNATConfig(boot_delay=15.0, retry_interval=90.0, min_interval=15.0, seed=1)


async def _rounds_after(autonat: AutoNAT, n: int) -> float:
    """Wait until ``autonat`` has finished ``n`` rounds; the (virtual) time it happened."""
    await autonat.wait_rounds(n)
    return trio.current_time()


async def test_rounds_follow_boot_delay_retry_and_min_interval(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_hosts(2, services=lambda: [Identify(), AutoNAT(CONFIG)]) as (client, server):
        autonat = client.service(AutoNAT)
        start = trio.current_time()
        await trio.sleep(60)
        assert autonat.rounds == 0  # nobody to ask: no round, even past boot_delay
        await client.connect(server.addrs[0])
        await client.service(Identify).wait_identified(server.peer_id)
        first = await _rounds_after(autonat, 1)
        assert first - start < 61.0  # at once: boot_delay has passed
        second = await _rounds_after(autonat, 2)
        assert 89.0 <= second - first <= 91.0  # unsettled (memory addresses: servers refuse): retry_interval
        # an address change brings the next round forward, but not within min_interval of the last
        await client.listen("/memory/0")
        third = await _rounds_after(autonat, 3)
        assert 14.5 <= third - second <= 16.0
        client.service(AutoNAT).local_addrs_changed(client)  # (what the host calls on a change)
        fourth = await _rounds_after(autonat, 4)
        assert 14.5 <= fourth - third <= 16.0
