"""Each inbound handshake stage has its own deadline (issue #12): a peer that completes the security
handshake but never selects a muxer is cut at the muxer stage's deadline, counted as ``timeout_muxer``."""

from __future__ import annotations

import trio
import trio.testing

from mycel import TCP, HostConfig, Identity, Noise, open_host
from mycel.network.limits import SourceLimits
from mycel.network.upgrader import LazySelectConnection


async def test_a_peer_that_never_selects_a_muxer_is_cut_at_the_muxer_stage_deadline() -> None:
    config = HostConfig(
        transports=[TCP()],
        listen=["/ip4/127.0.0.1/tcp/0"],
        services=[],
        source_limits=SourceLimits(limit_loopback=True),
        handshake_stage_timeout=0.5,
    )
    async with open_host(config) as host:
        raw = await TCP().dial(host.listen_addrs[0])
        # /noise, then the Noise handshake offering no muxer (so none is agreed inside it), then silence
        secure = await Noise().secure_outbound(LazySelectConnection(raw, "/noise"), Identity.generate(), None, ())
        assert secure.early_muxer is None
        t0 = trio.current_time()
        with trio.fail_after(3):
            while True:
                try:
                    if not await secure.receive_some(4096):  # (the listener's multistream header comes first)
                        break
                except trio.BrokenResourceError:
                    break
        assert 0.3 < trio.current_time() - t0 < 2.0
        await trio.testing.wait_all_tasks_blocked()  # (the listener's task finishes after closing)
        stats = host.swarm.stats()
        assert stats["timeout_muxer"] == 1, stats
        assert stats["timeout_select"] == stats["timeout_security"] == 0, stats
        assert stats["pending"] == 0
        await secure.aclose()
