"""Bootstrap without a network: HostConfig validation, the schedule (rounds, backoff, jitter), the grouping
of the list by peer, and the host adding the service by itself."""

from __future__ import annotations

import math
import random

import pytest
from multiaddr import Multiaddr

from mycel.core.errors import ConfigError
from mycel.core.identity import Identity
from mycel.discovery import IPFS_BOOTSTRAP_PEERS, Bootstrap
from mycel.discovery.bootstrap import BootstrapSchedule, backoff_delay, bootstrap_targets
from mycel.host import HostConfig, open_host
from mycel.protocols.kad.bootstrap import IPFS_BOOTSTRAP_PEERS as KAD_LIST
from mycel.protocols.ping import Ping
from mycel.testing.hosts import memory_config
from mycel.transports.memory import MemoryNetwork

A = "QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN"
B = "QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa"


# --- HostConfig ---------------------------------------------------------------------------------------


def test_config_accepts_addresses_naming_their_peer() -> None:
    config = HostConfig(
        bootstrap=[f"/ip4/10.0.0.1/tcp/4001/p2p/{A}", Multiaddr(f"/dnsaddr/boot.test/p2p/{B}"), *IPFS_BOOTSTRAP_PEERS],
        dns_nameservers=["127.0.0.1:5353", "[::1]:53"],
        bootstrap_min_peers=2,
    )
    assert isinstance(config.bootstrap, tuple) and len(config.bootstrap) == 7
    assert config.dns_nameservers == ("127.0.0.1:5353", "[::1]:53")
    assert HostConfig().bootstrap_min_peers == 4  # go's MinPeerThreshold


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bootstrap": f"/ip4/10.0.0.1/tcp/4001/p2p/{A}"}, "HostConfig.bootstrap: expected a list"),
        ({"bootstrap": ["/ip4/10.0.0.1/tcp/4001"]}, r"bootstrap\[0\].*does not name its peer.*/p2p/<peer id>"),
        ({"bootstrap": [f"/p2p/{A}", "/dnsaddr/boot.test"]}, r"bootstrap\[1\].*does not name its peer"),
        ({"bootstrap": ["not a multiaddr"]}, r"bootstrap\[0\].*is not a multiaddr"),
        ({"bootstrap_min_peers": 0}, "bootstrap_min_peers: must be a positive integer"),
        ({"bootstrap_backoff": -1}, "bootstrap_backoff: must be a positive number"),
        ({"bootstrap_backoff_max": math.inf}, "bootstrap_backoff_max: must be a positive number"),
        ({"bootstrap_backoff": 10, "bootstrap_backoff_max": 5}, "below bootstrap_backoff"),
        ({"dns_nameservers": "127.0.0.1"}, "dns_nameservers: expected a list"),
        ({"dns_nameservers": ["dns.google"]}, r"dns_nameservers\[0\].*not an IP address"),
    ],
)
def test_config_rejects(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        HostConfig(**changes)  # type: ignore[arg-type]


def test_public_list_is_shipped_as_data_in_both_places() -> None:
    assert KAD_LIST is IPFS_BOOTSTRAP_PEERS
    assert len(IPFS_BOOTSTRAP_PEERS) == 5
    targets = bootstrap_targets(IPFS_BOOTSTRAP_PEERS)
    assert len(targets) == 5 and all(len(addrs) == 1 for addrs in targets.values())


# --- the list grouped by peer ------------------------------------------------------------------------------


def test_targets_group_by_peer_and_skip_ourselves() -> None:
    own = Identity.generate().peer_id
    targets = bootstrap_targets(
        [
            f"/ip4/10.0.0.1/tcp/4001/p2p/{A}",
            f"/dnsaddr/boot.test/p2p/{A}",
            f"/ip4/10.0.0.1/tcp/4001/p2p/{A}",  # a repeat
            f"/ip4/10.0.0.2/tcp/4001/p2p/{B}",
            f"/ip4/10.0.0.3/tcp/4001/p2p/{own}",
        ],
        own,
    )
    assert [str(p) for p in targets] == [A, B]
    a_addrs = [str(x) for x in next(iter(targets.values()))]
    assert a_addrs == ["/ip4/10.0.0.1/tcp/4001", f"/dnsaddr/boot.test/p2p/{A}"]  # dnsaddr keeps its filter
    with pytest.raises(ValueError):
        bootstrap_targets(["/ip4/10.0.0.1/tcp/1"])


# --- the schedule ------------------------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_and_caps() -> None:
    rng = random.Random(1)
    for failures in range(1, 12):
        nominal = min(300.0, 2.0 ** (failures - 1))
        for _ in range(50):
            delay = backoff_delay(failures, 1.0, 300.0, rng)
            assert nominal / 2 <= delay <= nominal
    assert backoff_delay(10_000, 1.0, 300.0, rng) <= 300.0  # no overflow for long outages
    spread = {round(backoff_delay(5, 1.0, 300.0, rng), 6) for _ in range(20)}
    assert len(spread) > 10  # jittered: hosts that failed together do not retry together


def test_schedule_rounds_backoff_and_content() -> None:
    rng = random.Random(2)
    s = BootstrapSchedule(min_peers=4, backoff=1.0, backoff_max=300.0, attempts=3)
    assert s.due(0.0, connected=0)  # a round at start
    assert s.next_deadline() == math.inf

    # a round that left bootstrap peers unreachable: back off, growing, capped
    pauses = []
    now = 0.0
    for _ in range(12):
        pause = s.round_done(now, connected=1, unreachable=2, rng=rng)
        assert pause is not None
        pauses.append(pause)
        assert not s.due(now, connected=1)  # no round before the pause ends ...
        assert not s.peer_lost(connected=5)
        assert s.peer_lost(connected=0)  # ... not even when woken by a disconnect
        assert not s.due(now + pause / 2, connected=0)
        assert s.next_deadline() == now + pause
        now += pause
        assert s.due(now, connected=1)
    assert 2 <= pauses[0] <= 4  # continues the per-try sequence: 1, 2, then 4 (jittered)
    assert all(p <= 300 for p in pauses) and pauses[-1] >= 150
    assert s.failed_rounds == 12

    # enough peers: content, and the backoff is forgotten
    assert s.round_done(now, connected=4, unreachable=1, rng=rng) is None
    assert s.failed_rounds == 0 and s.next_deadline() == math.inf
    assert not s.due(now, connected=2)  # content: only a disconnect starts a round
    assert not s.peer_lost(connected=4)
    assert s.peer_lost(connected=3)
    assert s.due(now, connected=3)

    # every bootstrap peer connected but still short: content too (nothing left to dial)
    s.round_started()
    assert s.round_done(now, connected=2, unreachable=0, rng=rng) is None
    assert not s.due(now + 1000, connected=2)


def test_a_peer_lost_during_a_round_is_not_forgotten() -> None:
    """A disconnect while a round dials (its wake-up lands while the driver is busy) makes the next round
    due at once instead of leaving the host short of peers and content."""
    rng = random.Random(4)
    s = BootstrapSchedule(min_peers=2, backoff=1.0, backoff_max=10.0)
    s.round_started()
    assert s.peer_lost(connected=1)
    assert s.round_done(5.0, connected=1, unreachable=0, rng=rng) is None
    assert s.due(5.0, connected=1)
    s.round_started()  # the next round brings the peer back: content again
    assert s.round_done(6.0, connected=2, unreachable=0, rng=rng) is None
    assert not s.due(6.0, connected=1) and s.content


def test_schedule_becomes_content_when_peers_arrive_during_backoff() -> None:
    s = BootstrapSchedule(min_peers=2, backoff=1.0, backoff_max=10.0)
    pause = s.round_done(0.0, connected=0, unreachable=1, rng=random.Random(3))
    assert pause is not None
    assert not s.due(pause + 1, connected=2)  # other peers connected meanwhile
    assert s.content and s.next_deadline() == math.inf  # the driver sleeps until a disconnect


# --- the host adds the service -----------------------------------------------------------------------------


async def test_host_adds_bootstrap_only_when_listed() -> None:
    network = MemoryNetwork()
    async with open_host(memory_config(network)) as plain:
        with pytest.raises(LookupError):
            plain.service(Bootstrap)
    unreachable = [f"/memory/999999/p2p/{A}"]
    async with open_host(memory_config(network, bootstrap=unreachable, bootstrap_min_peers=1)) as host:
        service = host.service(Bootstrap)
        assert host.service_state(Bootstrap).running
        assert [str(p) for p in service.targets] == [A]
    mine = Bootstrap(attempts=1)
    config = memory_config(network, services=[Ping(), mine], bootstrap=unreachable)
    async with open_host(config) as host:
        assert host.service(Bootstrap) is mine  # the one listed, not a second one
        assert sum(isinstance(s.service, Bootstrap) for s in host._slots) == 1


def test_bootstrap_arguments_are_checked() -> None:
    for bad in ({"attempts": 0}, {"concurrency": 0}, {"dial_timeout": 0}):
        with pytest.raises(ValueError):
            Bootstrap(**bad)  # type: ignore[arg-type]
