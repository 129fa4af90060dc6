"""A host that listens on TCP and QUIC at once is reached over QUIC by a default host; TCP is the fallback."""

from __future__ import annotations

import socket

from multiaddr import Multiaddr

from mycel import HostConfig, Identity, open_host
from mycel.protocols.ping import Ping

LISTEN = ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]


async def test_default_host_dials_quic_first_when_the_peer_has_both() -> None:
    # a long head start so that only the tier order decides, not how fast this machine is right now
    async with open_host(HostConfig(listen=LISTEN)) as server, open_host(HostConfig(dial_tier_delay=30.0)) as client:
        kinds = sorted(a.protocols()[-1].name for a in server.listen_addrs)
        assert kinds == ["quic-v1", "tcp"]
        tcp_first = sorted(server.listen_addrs, key=lambda a: a.protocols()[-1].name != "tcp")
        conn = await client.connect(server.peer_id, tcp_first)
        assert "quic-v1" in str(conn.remote_addr)
        assert conn.security_protocol != "/noise"
        rtts = await client.service(Ping).ping(server.peer_id)
        assert len(rtts) == 1 and rtts[0] > 0
        assert client.connections(server.peer_id) == [conn]  # the ping reused the QUIC connection


async def test_tcp_is_used_when_the_quic_address_fails_fast() -> None:
    # nothing listens on this UDP port: the QUIC dial fails (or is silent), TCP takes over
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    async with open_host(HostConfig(listen=LISTEN[:1])) as server, open_host(HostConfig()) as client:
        dead = Multiaddr(f"/ip4/127.0.0.1/udp/{dead_port}/quic-v1")
        conn = await client.connect(server.peer_id, [dead, *server.listen_addrs])
        assert "/tcp/" in str(conn.remote_addr)
        assert conn.security_protocol == "/noise"
