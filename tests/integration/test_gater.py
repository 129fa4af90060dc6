"""The connection gater: each stage refusing, for dials (a typed error) and for inbound connections
(closed, nothing registered, resources released)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
from multiaddr import Multiaddr

from mycel.core.abc import Connection, Direction
from mycel.core.errors import ConnectionGated, DialError, MycelError
from mycel.core.peer_id import PeerId
from mycel.core.identity import Identity
from mycel.host import Host, HostConfig, open_host
from mycel.network.gater import AllowAll, ConnectionGater
from mycel.network.resources import ResourceLimits
from mycel.protocols.identify import Identify
from mycel.protocols.ping import Ping
from mycel.transports.quic import QUIC
from mycel.testing.hosts import memory_config
from mycel.transports.memory import MemoryNetwork


class Refuse(AllowAll):
    """Refuses at one stage and records every stage it was asked at."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.asked: list[str] = []

    def _answer(self, stage: str) -> bool:
        self.asked.append(stage)
        return stage != self.stage

    def intercept_peer_dial(self, peer: PeerId) -> bool:
        return self._answer("intercept_peer_dial")

    def intercept_addr_dial(self, peer: PeerId | None, addr: Multiaddr) -> bool:
        return self._answer("intercept_addr_dial")

    def intercept_accept(self, local_addr: Multiaddr, remote_addr: Multiaddr) -> bool:
        return self._answer("intercept_accept")

    def intercept_secured(self, direction: Direction, peer: PeerId, local_addr: Multiaddr, remote_addr: Multiaddr) -> bool:
        return self._answer(f"intercept_secured:{direction.value}")

    def intercept_upgraded(self, conn: Connection) -> bool:
        return self._answer("intercept_upgraded")


@contextlib.asynccontextmanager
async def pair(client_gater: ConnectionGater | None, server_gater: ConnectionGater | None) -> AsyncIterator[tuple[Host, Host]]:
    network = MemoryNetwork()
    async with open_host(memory_config(network, gater=server_gater)) as server, open_host(
        memory_config(network, gater=client_gater)
    ) as client:
        yield client, server


def nothing_held(host: Host) -> bool:
    stats: dict[str, Any] = host.resources.stats()
    return not any(v for k, v in stats["system"].items() if k != "limit") and not stats["peers"]


@pytest.mark.parametrize("stage", ["intercept_peer_dial", "intercept_addr_dial", "intercept_secured:outbound", "intercept_upgraded"])
async def test_dial_stage_refusal_is_connection_gated(stage: str) -> None:
    gater = Refuse(stage)
    async with pair(gater, None) as (client, server):
        with pytest.raises(ConnectionGated):
            await client.connect(server.addrs[0])
        assert client.connections() == [] and nothing_held(client)
        assert gater.asked[-1] == stage  # no later stage was asked
        await trio.testing.wait_all_tasks_blocked()
        assert server.connections() == []


async def test_all_stages_asked_in_order_when_allowed() -> None:
    client_gater, server_gater = Refuse("none"), Refuse("none")
    async with pair(client_gater, server_gater) as (client, server):
        await client.connect(server.addrs[0])
        await client.service(Ping).ping(server.peer_id)
    assert client_gater.asked == [
        "intercept_peer_dial",
        "intercept_addr_dial",
        "intercept_secured:outbound",
        "intercept_upgraded",
    ]
    assert server_gater.asked == ["intercept_accept", "intercept_secured:inbound", "intercept_upgraded"]


@pytest.mark.parametrize("stage", ["intercept_accept", "intercept_secured:inbound", "intercept_upgraded"])
async def test_inbound_stage_refusal_closes_the_connection(stage: str) -> None:
    gater = Refuse(stage)
    async with pair(None, gater) as (client, server):
        with pytest.raises((DialError, MycelError, trio.BrokenResourceError)):
            with trio.fail_after(10):
                await client.connect(server.addrs[0])
                await client.service(Ping).ping(server.peer_id)
        await trio.testing.wait_all_tasks_blocked()
        assert gater.asked[-1] == stage
        assert server.connections() == [] and nothing_held(server)


async def test_a_raising_gater_refuses() -> None:
    class Broken(AllowAll):
        def intercept_peer_dial(self, peer: PeerId) -> bool:
            raise RuntimeError("bug in the gater")

    async with pair(Broken(), None) as (client, server):
        with pytest.raises(ConnectionGated):
            await client.connect(server.addrs[0])


def test_config_rejects_a_non_gater() -> None:
    from mycel.core.errors import ConfigError

    with pytest.raises(ConfigError):
        memory_config(MemoryNetwork(), gater=object())


# -- QUIC: connections arrive secured and muxed from the transport -----------------------------------
def quic_config(gater: ConnectionGater | None = None, **kw: Any) -> HostConfig:
    return HostConfig(
        identity=Identity.generate(),
        transports=[QUIC()],
        services=[Identify(), Ping()],
        listen=["/ip4/127.0.0.1/udp/0/quic-v1"],
        gater=gater,
        **kw,
    )


@pytest.mark.parametrize("stage", ["intercept_addr_dial", "intercept_secured:outbound", "intercept_upgraded"])
async def test_quic_dial_stage_refusal(stage: str) -> None:
    gater = Refuse(stage)
    async with open_host(quic_config()) as server, open_host(quic_config(gater)) as client:
        with pytest.raises(ConnectionGated):
            await client.connect(server.addrs[0])
        assert client.connections() == [] and nothing_held(client)
        assert gater.asked[-1] == stage


@pytest.mark.parametrize("stage", ["intercept_accept", "intercept_secured:inbound", "intercept_upgraded"])
async def test_quic_inbound_stage_refusal(stage: str) -> None:
    gater = Refuse(stage)
    async with open_host(quic_config(gater)) as server, open_host(quic_config()) as client:
        with pytest.raises((DialError, MycelError, trio.BrokenResourceError)):
            with trio.fail_after(10):
                await client.connect(server.addrs[0])
                await client.service(Ping).ping(server.peer_id)
        await trio.testing.wait_all_tasks_blocked()
        assert gater.asked[-1] == stage
        assert server.connections() == [] and nothing_held(server)


async def test_quic_connections_are_accounted_and_bounded() -> None:
    limits = ResourceLimits.unlimited().override(system={"conns_inbound": 1})
    async with open_host(quic_config(resources=limits)) as server, open_host(quic_config()) as a, open_host(
        quic_config()
    ) as b:
        await a.connect(server.addrs[0])
        await a.service(Ping).ping(server.peer_id)
        stats = server.resources.stats()
        assert stats["system"]["conns_inbound"] == 1 and stats["system"]["fds"] == 0  # QUIC shares one socket
        with pytest.raises((DialError, MycelError, trio.BrokenResourceError)):
            with trio.fail_after(10):
                await b.connect(server.addrs[0])
                await b.service(Ping).ping(server.peer_id)
        assert server.resources.stats()["refused"] == {"system": {"conns_inbound": 1}}
        await a.service(Ping).ping(server.peer_id)
