"""A host closing while inbound handshakes are pending, refused and stalled (issue #12): it exits promptly,
every attacking connection is closed, and the process's fds are back to what they were."""

from __future__ import annotations

import os
import socket

import trio
import trio.testing

from mycel import TCP, HostConfig, open_host
from mycel.network.limits import SourceLimits
from tests.flood.handshake_attacks import close_all, open_attack


def _closed_by_peer(sock: socket.socket) -> bool:
    """Reads (what the listener had queued, e.g. its multistream header) until EOF: True; False if the
    connection is still open after a second."""
    sock.settimeout(1.0)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


async def test_host_with_pending_handshakes_closes_promptly_and_leaks_nothing() -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    config = HostConfig(
        transports=[TCP()],
        listen=["/ip4/127.0.0.1/tcp/0"],
        services=[],
        source_limits=SourceLimits(limit_loopback=True),
        max_pending_inbound_handshakes=4,
    )
    socks: list[socket.socket] = []
    try:
        async with open_host(config) as host:
            port = int(str(host.listen_addrs[0]).split("/")[4])
            # 12 connections from 2 sources, each sends one byte of a multistream header and stalls
            socks = open_attack(["127.0.0.2", "127.0.0.3"], port, 6, first=b"\x13")
            await trio.testing.wait_all_tasks_blocked()
            stats = host.swarm.stats()
            assert stats["pending"] == 4, stats  # the table's 4 slots
            assert stats["admitted"] + stats["table_full"] == 12, stats
            t0 = trio.current_time()
        assert trio.current_time() - t0 < 1.0  # the pending handshakes were cancelled, not waited for
        closed = await trio.to_thread.run_sync(lambda: [_closed_by_peer(s) for s in socks])
        assert all(closed), closed
    finally:
        close_all(socks)
    assert len(os.listdir("/proc/self/fd")) <= fds_before
