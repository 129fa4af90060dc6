"""The PortMapping service's schedule and choices, on MockClock with scripted backends and a stand-in
host: protocols tried in order, renewal at half the lifetime, a failed renewal retried at a quarter of
what is left, re-mapping after expiry or a gateway epoch that went back, listen port changes, loopback
left alone, deletion and withdrawal on exit. Plus the pure helpers (epoch test, /proc/net/route,
addresses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import pytest
import trio
import trio.testing
from multiaddr import Multiaddr

from mycel.portmap import PortMapError, PortMapping
from mycel.portmap.service import (
    SOURCE,
    Backend,
    Lease,
    default_gateway,
    epoch_lost,
    mappable_ports,
    mapped_addrs,
    renewal_delay,
    retry_delay,
)
from mycel.service import ServiceHost


@dataclass
class FakeBackend:
    """Grants every request with ``lifetime`` (port + 1000) unless told to refuse; records calls."""

    name: str
    lifetime: int = 100
    refuse: bool = False
    fail_renewals: bool = False
    epoch: int | None = None
    calls: list[tuple[float, str, str, int]] = field(default_factory=list)  # (time, map|unmap, protocol, port)

    async def map(self, protocol: str, internal_port: int, lifetime: int, external_port: int) -> Lease:
        self.calls.append((trio.current_time(), "map", protocol, internal_port))
        if self.refuse or (self.fail_renewals and external_port):
            raise PortMapError(f"{self.name} refuses", 2)
        return Lease(protocol, internal_port, "198.18.0.2", internal_port + 1000, self.lifetime, self.epoch)

    async def unmap(self, lease: Lease) -> None:
        self.calls.append((trio.current_time(), "unmap", lease.protocol, lease.internal_port))

    def maps(self) -> list[float]:
        return [t for t, kind, _, _ in self.calls if kind == "map"]


@dataclass
class FakeHost:
    listen_addrs: list[Multiaddr]
    published: list[list[Multiaddr]] = field(default_factory=list)

    def set_mapped_addrs(self, source: str, addrs: list[Multiaddr]) -> None:
        assert source == SOURCE
        self.published.append(list(addrs))


LISTEN = [Multiaddr("/ip4/10.0.1.2/tcp/4001"), Multiaddr("/ip4/10.0.1.2/udp/4001/quic-v1")]


async def _run(service: PortMapping, host: FakeHost, nursery: trio.Nursery) -> trio.CancelScope:
    scope = trio.CancelScope()

    async def runner() -> None:
        with scope:
            await service.run(cast(ServiceHost, host))

    nursery.start_soon(runner)
    await trio.testing.wait_all_tasks_blocked()
    return scope


async def test_maps_renews_at_half_the_lifetime_and_deletes_on_exit(autojump_clock: trio.testing.MockClock) -> None:
    backend = FakeBackend("pcp", lifetime=100)
    service = PortMapping(backends=[cast(Backend, backend)])
    host = FakeHost(list(LISTEN))
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        scope = await _run(service, host, nursery)
        assert host.published[-1] == [Multiaddr("/ip4/198.18.0.2/tcp/5001"), Multiaddr("/ip4/198.18.0.2/udp/5001/quic-v1")]
        await service.wait_until(lambda s: s.renewals >= 4)
        scope.cancel()
    assert [round(t - start) for t in backend.maps()] == [0, 0, 50, 50, 100, 100]
    assert [c[1:] for c in backend.calls[-2:]] == [("unmap", "tcp", 4001), ("unmap", "udp", 4001)]
    assert host.published[-1] == [] and service.leases == {}


async def test_protocols_are_tried_in_order_until_one_grants(autojump_clock: trio.testing.MockClock) -> None:
    pcp, natpmp, upnp = FakeBackend("pcp", refuse=True), FakeBackend("natpmp"), FakeBackend("upnp")
    service = PortMapping(backends=[cast(Backend, b) for b in (pcp, natpmp, upnp)])
    async with trio.open_nursery() as nursery:
        scope = await _run(service, FakeHost(list(LISTEN)), nursery)
        assert service.backend is cast(Backend, natpmp) and len(service.leases) == 2
        scope.cancel()
    assert len(pcp.calls) == 1  # refused on the first port: the next protocol is tried
    assert upnp.calls == []


async def test_nothing_answers_then_retried_after_the_interval(autojump_clock: trio.testing.MockClock) -> None:
    pcp = FakeBackend("pcp", refuse=True)
    service = PortMapping(backends=[cast(Backend, pcp)], retry_interval=300)
    host = FakeHost(list(LISTEN))
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        scope = await _run(service, host, nursery)
        assert service.backend is None and host.published[-1] == []
        await trio.sleep(301)
        pcp.refuse = False
        await trio.sleep(300)
        assert len(service.leases) == 2
        scope.cancel()
    assert [round(t - start) for t in pcp.maps()] == [0, 300, 600, 600]


async def test_failed_renewals_retry_then_map_again_after_expiry(autojump_clock: trio.testing.MockClock) -> None:
    backend = FakeBackend("natpmp", lifetime=100)
    service = PortMapping(backends=[cast(Backend, backend)])
    host = FakeHost([LISTEN[0]])
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        scope = await _run(service, host, nursery)
        backend.fail_renewals = True
        await trio.sleep(101)  # renewals at 50, 62.5, 71.9, 78.9, 84.2, ... all refused; expired at 100
        backend.fail_renewals = False
        await trio.sleep(10)
        assert len(service.leases) == 1
        scope.cancel()
    times = [round(t - start, 1) for t in backend.maps()]
    assert times[:4] == [0, 50, 62.5, 71.9]
    assert all(b >= a for a, b in zip(times, times[1:], strict=False)) and 100 <= times[-1] < 101
    assert service.renewals == 0  # the mapping that came back was made anew, not renewed


async def test_epoch_that_went_back_maps_everything_again(autojump_clock: trio.testing.MockClock) -> None:
    backend = FakeBackend("natpmp", lifetime=1000, epoch=5000)
    service = PortMapping(backends=[cast(Backend, backend)])
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        scope = await _run(service, FakeHost(list(LISTEN)), nursery)
        backend.epoch = 10  # the gateway rebooted: the first renewal (tcp, at 500 s) tells us
        await service.wait_until(lambda s: s.renewals >= 2)
        scope.cancel()
    assert service.state_losses == 1
    assert [round(t - start) for t in backend.maps()] == [0, 0, 500, 500]


async def test_listen_port_changes_are_followed(autojump_clock: trio.testing.MockClock) -> None:
    backend = FakeBackend("pcp")
    service = PortMapping(backends=[cast(Backend, backend)])
    host = FakeHost([LISTEN[0]])
    async with trio.open_nursery() as nursery:
        scope = await _run(service, host, nursery)
        host.listen_addrs = [Multiaddr("/ip4/10.0.1.2/tcp/4002")]
        service.local_addrs_changed(cast(ServiceHost, host))
        await trio.testing.wait_all_tasks_blocked()
        assert list(service.leases) == [("tcp", 4002)]
        assert host.published[-1] == [Multiaddr("/ip4/198.18.0.2/tcp/5002")]
        scope.cancel()
    assert [c[1:] for c in backend.calls] == [("map", "tcp", 4001), ("unmap", "tcp", 4001), ("map", "tcp", 4002), ("unmap", "tcp", 4002)]


async def test_a_loopback_only_host_is_left_alone(autojump_clock: trio.testing.MockClock) -> None:
    backend = FakeBackend("pcp")
    service = PortMapping(backends=[cast(Backend, backend)])
    host = FakeHost([Multiaddr("/ip4/127.0.0.1/tcp/4001"), Multiaddr("/ip6/::1/tcp/4001")])
    async with trio.open_nursery() as nursery:
        scope = await _run(service, host, nursery)
        await trio.sleep(3600)
        scope.cancel()
    assert backend.calls == [] and all(p == [] for p in host.published)


async def test_cancelled_while_a_gateway_hangs_exits_at_once(autojump_clock: trio.testing.MockClock) -> None:
    class Hanging(FakeBackend):
        async def map(self, protocol: str, internal_port: int, lifetime: int, external_port: int) -> Lease:
            await trio.sleep_forever()
            raise AssertionError

    service = PortMapping(backends=[cast(Backend, Hanging("upnp"))])
    async with trio.open_nursery() as nursery:
        scope = await _run(service, FakeHost(list(LISTEN)), nursery)
        start = trio.current_time()
        scope.cancel()
    assert trio.current_time() - start < 0.01


def test_epoch_rules() -> None:
    assert not epoch_lost(1000, 50.0, 1100, 150.0)  # both clocks moved 100 s
    assert epoch_lost(1000, 50.0, 999, 51.0)  # went back
    assert epoch_lost(1000, 50.0, 1010, 150.0)  # the gateway's clock moved far less: it restarted
    assert epoch_lost(1000, 50.0, 5000, 150.0)  # far more
    assert not epoch_lost(1000, 50.0, 1002, 50.5)  # within 2 s


def test_delays() -> None:
    lease = Lease("tcp", 1, "198.18.0.2", 1, 7200)
    assert renewal_delay(lease) == 3600
    assert renewal_delay(Lease("tcp", 1, "198.18.0.2", 1, 0)) == float("inf")  # permanent
    assert retry_delay(lease, 3600) == 900 and retry_delay(lease, 7196) == 1.0


def test_default_gateway_from_proc_net_route() -> None:
    table = (
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t0001000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "eth0\t00000000\t0101000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    )
    assert default_gateway(table) == "10.0.1.1"
    assert default_gateway(table.splitlines()[0] + "\neth0\t0001000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n") is None
    assert default_gateway("garbage\nx 00000000 zz 0003\n") is None


def test_ports_and_addresses() -> None:
    listen = [
        Multiaddr("/ip4/0.0.0.0/tcp/4001"),
        Multiaddr("/ip4/0.0.0.0/udp/4001/quic-v1"),
        Multiaddr("/ip4/127.0.0.1/tcp/4003"),
        Multiaddr("/ip6/::/tcp/4001"),
        Multiaddr("/ip4/0.0.0.0/tcp/4002/ws"),
    ]
    assert mappable_ports(listen) == [("tcp", 4001), ("udp", 4001), ("tcp", 4002)]
    assert mappable_ports(listen, include_loopback=True) == [("tcp", 4001), ("udp", 4001), ("tcp", 4003), ("tcp", 4002)]
    leases = {("tcp", 4002): Lease("tcp", 4002, "198.18.0.2", 6000, 60), ("udp", 4001): Lease("udp", 4001, "198.18.0.2", 4001, 60)}
    assert mapped_addrs(listen, leases) == [Multiaddr("/ip4/198.18.0.2/udp/4001/quic-v1"), Multiaddr("/ip4/198.18.0.2/tcp/6000/ws")]
    for bad in ("0.0.0.0", "2001:db8::1", "224.0.0.1", "127.0.0.1", "junk"):  # a gateway's answer we cannot advertise
        assert mapped_addrs(listen, {("tcp", 4002): Lease("tcp", 4002, bad, 6000, 60)}) == []


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        PortMapping(protocols=["upnp", "smoke-signals"])
    with pytest.raises(ValueError):
        PortMapping(lifetime=0)


def test_retransmission_schedules_follow_the_rfcs() -> None:
    from mycel.portmap import natpmp, pcp

    assert natpmp.retransmit_timeouts() == [0.25, 0.5, 1, 2, 4, 8, 16, 32, 64]  # RFC 6886 §3.1: 9 sends
    assert natpmp.retransmit_timeouts(20)[-1] == 64  # never more than 9
    assert pcp.retransmit_timeouts([0, 0, 0]) == [3, 6, 12]  # RFC 6887 §8.1.1: IRT 3 s, doubling
    assert pcp.retransmit_timeouts([0.1, -0.1]) == pytest.approx([3.3, 5.94])  # (1 + RAND) each time
    assert pcp.retransmit_timeouts([0.0] * 12)[-1] == 1024  # MRT
    with pytest.raises(ValueError):
        pcp.retransmit_timeouts([0.5])
