"""The NAT-PMP / PCP clients and PortMapper against the scripted gateway (tests/nat/gateway.py) on
127.0.0.1; it records every request and can refuse or send junk first. A real miniupnpd answers them in
tests/nat/test_portmap_miniupnpd.py, and tests/nat/test_portmap_lab.py maps through a lab router.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import pytest
import trio

from mycel.portmap import NatPmpClient, PcpClient, PortMapError, PortMapper
from tests.nat.gateway import Gateway as ScriptedGateway


@dataclass
class Gateway:
    """The scripted gateway (tests/nat/gateway.py) on a UDP socket of 127.0.0.1."""

    sock: trio.socket.SocketType
    script: ScriptedGateway = field(default_factory=lambda: ScriptedGateway("198.18.0.2"))
    junk_first: bool = False

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def requests(self) -> list[tuple[str, int, int]]:
        return self.script.requests

    async def serve(self) -> None:
        while True:
            data, addr = await self.sock.recvfrom(2048)
            if self.junk_first:
                await self.sock.sendto(b"\x00\x99junk", addr)
            reply = self.script.answer(data, addr[0])
            if reply is not None:
                await self.sock.sendto(reply, addr)


@pytest.fixture
async def gateway(nursery: trio.Nursery) -> Gateway:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    gw = Gateway(sock)
    nursery.start_soon(gw.serve)
    return gw


async def test_mapper_maps_renews_and_deletes(gateway: Gateway) -> None:
    gateway.junk_first = True  # datagrams that answer nothing are skipped
    client = NatPmpClient("127.0.0.1", port=gateway.port)
    with trio.fail_after(10):
        async with PortMapper(client, [("tcp", 4001), ("udp", 4001)], lifetime=1) as mapper:
            assert mapper.external_ip == "198.18.0.2"
            assert {k: m.external_port for k, m in mapper.mappings.items()} == {("tcp", 4001): 5001, ("udp", 4001): 5001}
            await mapper.wait_renewals(4)  # each port renewed at half its 1 s lifetime, twice
        assert not mapper.mappings
    assert gateway.requests[-2:] == [("tcp", 4001, 0), ("udp", 4001, 0)]  # deleted on exit
    assert sum(1 for r in gateway.requests if r[2] == 1) >= 6  # 2 maps + 4 renewals


async def test_cancelling_the_mapper_still_deletes_promptly(gateway: Gateway) -> None:
    client = NatPmpClient("127.0.0.1", port=gateway.port)
    with trio.fail_after(5):
        with trio.CancelScope() as scope:
            async with PortMapper(client, [("tcp", 4002)], lifetime=3600):
                scope.cancel()  # mid-run: the renewal task is cancelled, the deletion still goes out
                await trio.sleep_forever()
    assert gateway.requests[-1] == ("tcp", 4002, 0)


async def test_refusals_are_typed(gateway: Gateway) -> None:
    gateway.script.refuse = 2  # NOT_AUTHORIZED
    with trio.fail_after(5):
        with pytest.raises(PortMapError) as info:
            await NatPmpClient("127.0.0.1", port=gateway.port).map("tcp", 4003, 60)
        assert info.value.code == 2
        with pytest.raises(PortMapError) as info:
            await PcpClient("127.0.0.1", port=gateway.port).map("tcp", 4003, 60)
        assert info.value.code == 2


async def test_pcp_maps_and_deletes_with_one_nonce(gateway: Gateway) -> None:
    client = PcpClient("127.0.0.1", port=gateway.port)
    with trio.fail_after(5):
        got = await client.map("udp", 4004, 120)
        assert (got.external_port, str(got.external_address), got.lifetime) == (5004, "198.18.0.2", 120)
        await client.unmap("udp", 4004)
    assert gateway.requests == [("udp", 4004, 120), ("udp", 4004, 0)]


async def test_no_gateway_is_a_typed_error_not_a_hang() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now: ICMP port unreachable, or no answer at all
    with trio.fail_after(10):
        with pytest.raises(PortMapError):
            await NatPmpClient("127.0.0.1", port=port, tries=2).external_address()
