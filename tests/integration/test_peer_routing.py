"""Peer routing in the host: ``host.find_peer`` asks the services that implement ``PeerRouting``, and
``host.connect(peer_id)`` with no known address asks them before dialing (#11, item 5)."""

from __future__ import annotations

from typing import Self

import pytest
from multiaddr import Multiaddr

from mycel import Identify, PeerId, Service
from mycel.core.errors import MycelError
from mycel.network.peerstore import AddrSource
from mycel.routing import PeerNotFound, PeerRouting
from mycel.testing.hosts import memory_hosts


class StaticRouter(Service):
    """Answers from a directory shared by every host's copy (a stand-in for the DHT)."""

    def __init__(self, directory: dict[PeerId, list[Multiaddr]], *, fail: bool = False) -> None:
        self.directory = directory
        self.fail = fail
        self.asked: list[PeerId] = []

    def clone(self) -> Self:
        return type(self)(self.directory, fail=self.fail)

    async def find_peer(self, peer: PeerId) -> list[Multiaddr]:
        self.asked.append(peer)
        if self.fail:
            raise MycelError("router down")
        return list(self.directory.get(peer, []))


async def test_connect_by_peer_id_asks_the_routers() -> None:
    directory: dict[PeerId, list[Multiaddr]] = {}
    async with memory_hosts(2, services=lambda: [Identify(), StaticRouter(directory)]) as (a, b):
        directory[b.peer_id] = list(b.listen_addrs)
        assert isinstance(a.service(StaticRouter), PeerRouting)
        assert not a.peerstore.addrs(b.peer_id)
        conn = await a.connect(b.peer_id)
        assert conn.remote_peer == b.peer_id
        assert a.service(StaticRouter).asked == [b.peer_id]
        entries = a.peerstore.addr_entries(b.peer_id)
        assert {str(e.addr) for e in entries if AddrSource.ROUTING in e.sources} == {str(x) for x in b.listen_addrs}


async def test_a_failing_router_is_skipped_and_not_found_is_typed() -> None:
    directory: dict[PeerId, list[Multiaddr]] = {}
    services = lambda: [Identify(), StaticRouter({}, fail=True), StaticRouterB(directory)]  # noqa: E731
    async with memory_hosts(2, services=services) as (a, b):
        directory[b.peer_id] = list(b.listen_addrs)
        assert await a.find_peer(b.peer_id) == [Multiaddr(str(x)) for x in b.listen_addrs]
        stranger = PeerId.from_string("12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN")
        with pytest.raises(PeerNotFound) as err:
            await a.find_peer(stranger)
        assert [str(e) for e in err.value.errors] == ["router down"]


class StaticRouterB(StaticRouter):
    """A second router kind (a host holds one service per class)."""


async def test_connect_without_routers_says_so() -> None:
    async with memory_hosts(2, services=lambda: [Identify()]) as (a, b):
        assert a.peer_routers() == []
        with pytest.raises(PeerNotFound, match="no peer router"):
            await a.connect(b.peer_id)
