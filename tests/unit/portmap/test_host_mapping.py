"""Port-mapped addresses on a real host: ``host.set_mapped_addrs`` advertises them after the listen and
observed ones and identify pushes them to connected peers; the PortMapping service maps a real host's
listen port over NAT-PMP and PCP on the scripted gateway (tests/nat/gateway.py) on 127.0.0.1, advertises
the external address, and deletes the mapping when the host is cancelled mid-run — promptly."""

from __future__ import annotations

import socket

import pytest
import trio
from multiaddr import Multiaddr

from mycel.host import HostConfig, open_host
from mycel.muxers.yamux import Yamux
from mycel.portmap import PortMapping
from mycel.protocols.identify import Identify
from mycel.security.noise import Noise
from mycel.service import Service, ServiceHost
from mycel.transports.tcp import TCP
from tests.nat.gateway import Gateway

TIMEOUT = 10


def _config(*services: Service) -> HostConfig:
    return HostConfig(
        transports=[TCP()], security=[Noise()], muxers=[Yamux()], services=[Identify(), *services],
        listen=["/ip4/127.0.0.1/tcp/0"], handshake_timeout=5.0,
    )


class Recorder(Service):
    """Counts local_addrs_changed calls."""

    def __init__(self) -> None:
        self.changes = 0

    def local_addrs_changed(self, host: ServiceHost) -> None:
        self.changes += 1


async def test_mapped_addresses_are_advertised_pushed_and_withdrawn() -> None:
    external = Multiaddr("/ip4/198.18.0.2/tcp/5001")
    async with open_host(_config(Recorder())) as a, open_host(_config()) as b:
        with trio.fail_after(TIMEOUT):
            await b.connect(a.addrs[0])
            await a.service(Identify).wait_identified(b.peer_id)
        recorder = a.service(Recorder)
        before = recorder.changes
        a.set_mapped_addrs("portmap", [external, external])
        assert a.advertised_addrs[-1] == external and a.advertised_addrs.count(external) == 1
        assert recorder.changes == before + 1
        a.set_mapped_addrs("portmap", [external])  # no change: no notification
        assert recorder.changes == before + 1
        with b.subscribe() as events, trio.fail_after(TIMEOUT):
            while external not in b.peerstore.addrs(a.peer_id):
                await events.receive()  # identify push arrives as a PeerIdentified event
        a.set_mapped_addrs("portmap", [])
        assert external not in a.advertised_addrs and recorder.changes == before + 2


class ScriptedGateway:
    def __init__(self) -> None:
        self.script = Gateway("198.18.0.2")
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        await self.sock.bind(("127.0.0.1", 0))
        task_status.started(self.sock.getsockname()[1])
        while True:
            data, addr = await self.sock.recvfrom(2048)
            reply = self.script.answer(data, addr[0])
            if reply is not None:
                await self.sock.sendto(reply, addr)


@pytest.mark.parametrize("protocol", ["natpmp", "pcp"])
async def test_service_maps_a_real_host_and_deletes_when_cancelled(protocol: str, nursery: trio.Nursery) -> None:
    gateway = ScriptedGateway()
    port = await nursery.start(gateway.serve)
    service = PortMapping(gateway="127.0.0.1", port=port, protocols=[protocol], lifetime=2, include_loopback=True)
    with trio.CancelScope() as scope:
        async with open_host(_config(service)) as host:
            listen_port = int(host.listen_addrs[0].value_for_protocol("tcp"))
            pm = host.service(PortMapping)
            with trio.fail_after(TIMEOUT):
                await pm.wait_until(lambda s: s.renewals >= 1)  # renewed at half the 2 s lifetime
            assert Multiaddr(f"/ip4/198.18.0.2/tcp/{listen_port + 1000}") in host.advertised_addrs
            cancelled_at = trio.current_time()
            scope.cancel()  # mid-run: the host exits, the service deletes its mapping on the way
    assert trio.current_time() - cancelled_at < 2
    assert gateway.script.requests[-1] == ("tcp", listen_port, 0)
    assert gateway.script.mappings == {}
