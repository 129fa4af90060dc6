"""The node under soak: one mycel host on 127.0.0.1 (TCP + QUIC; identify, ping, echo, gossipsub subscribed
to the soak topic) that prints a JSON line of its resources every ``--interval`` seconds until its stdin
closes: ``{"t", "rss_kb", "fds", "tasks", "conns", "received"}``. The first line is ``{"addrs": [...]}``."""

from __future__ import annotations

import argparse
import json
import os
import sys

import trio

from mycel import Gossipsub, HostConfig, Identify, Ping, open_host
from mycel.protocols.pubsub import GossipsubConfig
from mycel.protocols.echo import Echo

TOPIC = "soak"
SMALL_PEERSTORE = 300


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def main(interval: float, small_tables: bool) -> None:
    # small tables: the peerstore's and the seen cache's steady state is reached in a minute, not in the
    # 15 minutes that the default TTLs (a disconnected peer's addresses) take: for the short soak in CI
    pubsub_config = GossipsubConfig(seen_ttl=30.0) if small_tables else GossipsubConfig()
    config = HostConfig(
        services=[Identify(), Ping(), Echo(), Gossipsub(pubsub_config)],
        listen=["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"],
    )
    received = 0
    async with open_host(config) as host:
        if small_tables:
            host.peerstore.max_peers = SMALL_PEERSTORE
        print(json.dumps({"addrs": [str(a) for a in host.addrs]}), flush=True)
        pubsub = host.service(Gossipsub)

        async def consume() -> None:
            nonlocal received
            async with pubsub.subscribe(TOPIC) as sub:
                async for _ in sub:
                    received += 1

        async def report() -> None:
            start = trio.current_time()
            while True:
                stats = trio.lowlevel.current_statistics()
                line = {
                    "t": round(trio.current_time() - start, 2),
                    "rss_kb": rss_kb(),
                    "fds": fds(),
                    "tasks": stats.tasks_living,
                    "conns": len(host.connections()),
                    "received": received,
                }
                print(json.dumps(line), flush=True)
                await trio.sleep(interval)

        async def until_stdin_closes() -> None:
            stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
            while await stdin.receive_some(1024):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            nursery.start_soon(report)
            await until_stdin_closes()
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--small-tables", action="store_true", help=f"peerstore of {SMALL_PEERSTORE} peers, seen cache 30 s")
    args = parser.parse_args()
    trio.run(main, args.interval, args.small_tables)
