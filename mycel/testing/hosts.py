"""Fixtures for users' tests too: connected host pairs over the in-memory transport."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from mycel.core.abc import SecurityProtocol, StreamMuxer
from mycel.core.identity import Identity
from mycel.host import Host, HostConfig, open_host
from mycel.service import Service
from mycel.transports.memory import MemoryNetwork, MemoryTransport


def memory_config(
    network: MemoryNetwork,
    *,
    security: Sequence[SecurityProtocol] | None = None,
    muxers: Sequence[StreamMuxer] | None = None,
    services: Sequence[Service] | None = None,
    **kwargs: Any,
) -> HostConfig:
    """A HostConfig on ``network``'s memory transport, listening on ``/memory/0``, with a fresh identity,
    Noise, yamux + mplex, and identify + ping unless given; ``kwargs`` are further HostConfig fields.
    """
    from mycel.muxers.mplex import Mplex
    from mycel.muxers.yamux import Yamux
    from mycel.protocols.identify import Identify
    from mycel.protocols.ping import Ping
    from mycel.security.noise import Noise

    return HostConfig(
        identity=kwargs.pop("identity", None) or Identity.generate(),
        transports=[MemoryTransport(network)],
        security=list(security) if security is not None else [Noise()],
        muxers=list(muxers) if muxers is not None else [Yamux(), Mplex()],
        services=list(services) if services is not None else [Identify(), Ping()],
        listen=kwargs.pop("listen", ["/memory/0"]),
        **kwargs,
    )


@contextlib.asynccontextmanager
async def memory_hosts(
    count: int = 2,
    *,
    services: Callable[[], Sequence[Service]] | None = None,
    **kwargs: Any,
) -> AsyncIterator[list[Host]]:
    """``count`` hosts on one MemoryNetwork, listening, not yet connected.

    ``services`` is a factory: each host needs service instances of its own.
    """
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        hosts = []
        for _ in range(count):
            config = memory_config(network, services=services() if services else None, **kwargs)
            hosts.append(await stack.enter_async_context(open_host(config)))
        yield hosts
