"""The discovery interface: ``host.peer_found`` records, notifies, emits and connects up to a bound."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from mycel import PeerFound
from mycel.core.events import PeerConnected
from mycel.network.peerstore import AddrSource
from mycel.service import Service, ServiceHost
from mycel.testing.hosts import memory_hosts


class _Recorder(Service):
    def __init__(self) -> None:
        self.found: list[PeerFound] = []

    def peer_found(self, host: ServiceHost, event: PeerFound) -> None:
        self.found.append(event)


async def test_peer_found_records_emits_notifies_and_connects() -> None:
    async with memory_hosts(2, services=lambda: [_Recorder()]) as (a, b):
        with a.subscribe() as events:
            a.peer_found(b.peer_id, b.addrs, "test", ttl=120)
            with trio.fail_after(10):
                got = [await events.receive() for _ in range(1)]
                while not a.connections(b.peer_id):
                    got.append(await events.receive())
        found = [e for e in got if isinstance(e, PeerFound)]
        assert found and found[0].peer == b.peer_id and found[0].source == "test"
        assert found[0].addrs and all("/p2p/" not in str(x) for x in found[0].addrs)
        assert any(isinstance(e, PeerConnected) and e.peer == b.peer_id for e in got)
        entries = a.peerstore.addr_entries(b.peer_id)
        assert any(AddrSource.DISCOVERY in e.sources for e in entries)
        assert [e.peer for e in a.service(_Recorder).found] == [b.peer_id]


async def test_discovery_connect_zero_only_records() -> None:
    async with memory_hosts(2, discovery_connect=0) as (a, b):
        a.peer_found(b.peer_id, b.addrs, "test")
        await trio.testing.wait_all_tasks_blocked()
        assert not a.connections(b.peer_id)
        assert a.peerstore.addrs(b.peer_id)


async def test_discovery_connects_only_up_to_the_bound() -> None:
    async with memory_hosts(5, discovery_connect=2) as hosts:
        a, others = hosts[0], hosts[1:]
        with a.subscribe() as events:
            for h in others:
                a.peer_found(h.peer_id, h.addrs, "test")
            with trio.fail_after(10):
                connected = 0
                while connected < 2:
                    connected += isinstance(await events.receive(), PeerConnected)
            await trio.testing.wait_all_tasks_blocked()
        assert len(a.connected_peers()) == 2
        # every reported peer is remembered even when not dialed
        assert all(a.peerstore.addrs(h.peer_id) for h in others)


async def test_own_id_and_foreign_addresses_are_ignored() -> None:
    async with memory_hosts(3) as (a, b, c):
        with a.subscribe() as events:
            a.peer_found(a.peer_id, a.addrs, "test")
            a.peer_found(b.peer_id, c.addrs, "test")  # addresses naming another peer: a lie
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.WouldBlock):
                events.receive_nowait()
        assert not a.connected_peers()
        assert not a.peerstore.addrs(b.peer_id)
