"""Ping: two hosts in one process, or this host against any libp2p node.

    python examples/ping.py                                         # a second host is started here
    python examples/ping.py /ip4/1.2.3.4/tcp/4001/p2p/12D3KooW...   # any libp2p node that serves ping

`/ipfs/ping/1.0.0` sends 32 random bytes and times their echo; `host.service(Ping).ping(peer, count)`
returns one round-trip time (seconds) per ping and raises PingFailed when an answer is wrong or missing.
"""

from __future__ import annotations

import sys

import trio

from mycel import Host, HostConfig, Identify, Ping, open_host


async def ping_peer(me: Host, target: str, count: int) -> None:
    """Connect to ``target`` (a multiaddr ending in /p2p/<peer id>) and ping it ``count`` times."""
    with trio.fail_after(10):
        conn = await me.connect(target)
        rtts = await me.service(Ping).ping(conn.remote_peer, count=count)
    for i, rtt in enumerate(rtts, 1):
        print(f"ping {i} to {conn.remote_peer}: {rtt * 1000:.2f} ms", flush=True)
    print(f"{len(rtts)} of {count} answered over {conn.remote_addr}", flush=True)


async def main(target: str | None, count: int = 3) -> None:
    async with open_host(HostConfig(services=[Identify(), Ping()])) as me:
        if target is not None:
            await ping_peer(me, target, count)
            return
        # nobody named: start a node to ping, on 127.0.0.1
        async with open_host(HostConfig(services=[Ping()], listen=["/ip4/127.0.0.1/tcp/0"])) as other:
            await ping_peer(me, str(other.addrs[0]), count)  # addrs end in /p2p/<its id>


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else None)
