"""Hosts on a :class:`~mycel.sim.network.SimNetwork`: the same :class:`~mycel.host.Host` as anywhere, with
the simulated transport below it (plaintext security and yamux by default: the simulation models the
network, not the cipher; pass ``security=[Noise()]`` to pay for it)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import trio

from mycel.core.abc import SecurityProtocol, StreamMuxer
from mycel.core.identity import Identity
from mycel.host import Host, HostConfig, open_host
from mycel.muxers import Yamux
from mycel.security.plaintext import Plaintext
from mycel.service import Service
from mycel.sim.network import SimNetwork, SimNode


def sim_config(
    node: SimNode,
    *,
    services: Sequence[Service] = (),
    identity: Identity | None = None,
    security: Sequence[SecurityProtocol] | None = None,
    muxers: Sequence[StreamMuxer] | None = None,
    port: int = 4001,
    **kwargs: Any,
) -> HostConfig:
    """A HostConfig for a host on ``node``: its transport, its listen address (``port``: several hosts can
    share one node, i.e. one IP, on different ports), an identity drawn from the network's seeded generator
    (so runs repeat), plaintext + yamux unless given."""
    if identity is None:
        identity = Identity.from_seed(node.network.rng.randbytes(32))
    return HostConfig(
        identity=identity,
        transports=[node.transport()],
        security=list(security) if security is not None else [Plaintext()],
        muxers=list(muxers) if muxers is not None else [Yamux()],
        listen=[node.listen_addr(port)],
        services=list(services),
        **kwargs,
    )


@contextlib.asynccontextmanager
async def sim_hosts(
    network: SimNetwork,
    count: int,
    *,
    services: Callable[[int], Sequence[Service]] = lambda i: (),
    node: Callable[[SimNetwork, int], SimNode] | None = None,
    **kwargs: Any,
) -> AsyncIterator[list[Host]]:
    """Start ``count`` hosts, each on a new node (``node(network, i)`` makes it; default: a fullnode placed
    by the latency model) with ``services(i)``; the network's delivery task runs while the block does."""
    async with trio.open_nursery() as nursery:
        await nursery.start(network.run)
        async with contextlib.AsyncExitStack() as stack:
            hosts: list[Host] = []
            for i in range(count):
                where = node(network, i) if node is not None else network.add_node()
                config = sim_config(where, services=services(i), **kwargs)
                hosts.append(await stack.enter_async_context(open_host(config)))
            yield hosts
        nursery.cancel_scope.cancel()


async def connect_random(hosts: Sequence[Host], degree: int, rng: random.Random) -> int:
    """Each host dials ``degree`` others chosen at random (as gossipsub-interop's nodes do); returns the
    number of connections made. Dials run concurrently, 64 at a time."""
    made = 0
    limiter = trio.CapacityLimiter(64)

    async def dial(a: Host, b: Host) -> None:
        nonlocal made
        async with limiter:
            with contextlib.suppress(Exception):
                await a.connect(b.peer_id, b.listen_addrs)
                made += 1

    async with trio.open_nursery() as nursery:
        for i, host in enumerate(hosts):
            others = [j for j in range(len(hosts)) if j != i]
            for j in rng.sample(others, min(degree, len(others))):
                nursery.start_soon(dial, host, hosts[j])
    return made


__all__ = ["connect_random", "sim_config", "sim_hosts"]
