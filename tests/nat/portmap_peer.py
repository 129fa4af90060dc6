"""A host behind a lab router that maps its TCP port with NAT-PMP: ``python tests/nat/portmap_peer.py
<gateway>``. Prints ``mapped`` (its address through the mapping), ``renewed`` once the mapping was
renewed; on an ``unmap`` line on stdin deletes it (``unmapped``); exits when stdin closes."""

from __future__ import annotations

import json
import sys

import trio

from mycel.host import HostConfig, open_host
from mycel.muxers.yamux import Yamux
from mycel.portmap import NatPmpClient, PortMapper
from mycel.protocols.identify import Identify
from mycel.protocols.ping import Ping
from mycel.security.noise import Noise
from mycel.transports.tcp import TCP

PORT = 4001


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main(gateway: str) -> None:
    cfg = HostConfig(
        transports=[TCP()], security=[Noise()], muxers=[Yamux()], services=[Identify(), Ping()],
        listen=[f"/ip4/0.0.0.0/tcp/{PORT}"],
    )
    stdin = trio.wrap_file(sys.stdin)
    async with open_host(cfg) as host:
        async with PortMapper(NatPmpClient(gateway), [("tcp", PORT)], lifetime=2) as mapper:
            mapping = mapper.mappings[("tcp", PORT)]
            emit(event="mapped", addr=f"/ip4/{mapper.external_ip}/tcp/{mapping.external_port}/p2p/{host.peer_id}")
            await mapper.wait_renewals(1)  # renewed at half the 2 s lifetime
            emit(event="renewed", renewals=mapper.renewals)
            await stdin.readline()  # "unmap"
        emit(event="unmapped")
        while await stdin.readline():
            pass


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
