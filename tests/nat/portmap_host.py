"""A mycel host behind a lab router running the PortMapping service: ``python
tests/nat/portmap_host.py <protocol> <lifetime>`` (protocol: pcp, natpmp or upnp; listens on TCP
4001 and QUIC 4001). Prints ``mapped`` (its advertised addresses, the protocol) once every port is
mapped, ``renewed`` after two renewals; exits (deleting the mappings) when stdin closes, then prints
``closed`` with the addresses it advertised last."""

from __future__ import annotations

import json
import sys

import trio

from mycel.host import HostConfig, open_host
from mycel.muxers.yamux import Yamux
from mycel.portmap import PortMapping
from mycel.protocols.identify import Identify
from mycel.protocols.ping import Ping
from mycel.security.noise import Noise
from mycel.transports.quic import QUIC
from mycel.transports.tcp import TCP


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main(protocol: str, lifetime: int) -> None:
    cfg = HostConfig(
        transports=[TCP(), QUIC()], security=[Noise()], muxers=[Yamux()],
        services=[Identify(), Ping(), PortMapping(protocols=[protocol], lifetime=lifetime, upnp_timeout=3)],
        listen=["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"],
    )
    stdin = trio.wrap_file(sys.stdin)
    async with open_host(cfg) as host:
        pm = host.service(PortMapping)
        with trio.fail_after(20):
            await pm.wait_until(lambda s: len(s.leases) == 2)
        assert pm.backend is not None
        emit(event="mapped", protocol=pm.backend.name, addrs=[str(a) for a in host.addrs])
        with trio.fail_after(4 * lifetime + 10):
            await pm.wait_until(lambda s: s.renewals >= 2)
        emit(event="renewed", renewals=pm.renewals)
        while await stdin.readline():
            pass
    emit(event="closed", addrs=[str(a) for a in host.addrs])


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
