"""A peer reachable only through a relay (circuit relay v2), on 127.0.0.1.

    python examples/relayed.py

Three hosts: R runs the relay service (CircuitRelay); A stands for a peer behind NAT — it does not
listen on any address of its own, only on R's circuit address, after taking a reservation there; B
dials A at `<R's address>/p2p-circuit/p2p/<A>`, knowing nothing else. The relayed connection is
*limited* (go's defaults: 2 minutes, 128 KiB per direction), so B opens its stream with
`allow_limited=True`; identify and ping are allowed on it anyway.

This example is relayed only. Upgrading the relayed connection to a direct one by hole punching
(`mycel.protocols.dcutr.DCUtR` on both peers) needs real NATs to punch through: the NAT lab in
`tests/nat` (root, nftables, network namespaces) shows that part, and `make natlab` measures it.
"""

from __future__ import annotations

import trio

from mycel import (
    CircuitRelay,
    HostConfig,
    Identify,
    MuxedStream,
    Ping,
    RelayTransport,
    TCP,
    open_host,
)

PROTOCOL = "/example/hello/1.0.0"
LISTEN = ["/ip4/127.0.0.1/tcp/0"]


async def hello(stream: MuxedStream) -> None:
    name = b"".join([chunk async for chunk in stream])[:100]  # to B's EOF
    await stream.send_all(b"hello " + name + b", from behind the relay")
    await stream.aclose()


async def main() -> None:
    relay_config = HostConfig(transports=[TCP()], services=[Identify(), Ping(), CircuitRelay()], listen=LISTEN)
    async with open_host(relay_config) as relay:
        relay_addr = relay.addrs[0]  # ends in /p2p/<R>
        # A: no address of its own, only a reservation on R
        a_config = HostConfig(transports=[TCP(), RelayTransport()], services=[Identify(), Ping()],
                              listen=[f"{relay_addr}/p2p-circuit"])
        b_config = HostConfig(transports=[TCP(), RelayTransport()], services=[Identify(), Ping()])
        async with open_host(a_config) as a, open_host(b_config) as b:
            a.set_stream_handler(PROTOCOL, hello)
            relay_transport = next(t for t in a.transports if isinstance(t, RelayTransport))
            with trio.fail_after(10):
                await relay_transport.wait_reserved(relay.peer_id)
            print("A's addresses:", *a.addrs)
            circuit = f"{relay_addr}/p2p-circuit/p2p/{a.peer_id}"
            with trio.fail_after(10):
                conn = await b.connect(circuit)
                print(f"B connected to A over {conn.remote_addr} (limited: {conn.limited}, {conn.limit})")
                stream = await b.new_stream(a.peer_id, [PROTOCOL], allow_limited=True)
                await stream.send_all(b"B")
                await stream.send_eof()
                print(b"".join([chunk async for chunk in stream]).decode())
                (rtt,) = await b.service(Ping).ping(a.peer_id)
            print(f"ping through the relay: {rtt * 1000:.2f} ms; relayed {relay.service(CircuitRelay).bytes_relayed} bytes")


if __name__ == "__main__":
    trio.run(main)
