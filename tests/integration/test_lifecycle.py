"""Host lifecycle: cancellation at any point ends a host promptly, a closed host refuses new work.

Hangs are the failure mode here, so each case runs its own trio loop in a thread with a watchdog: a
regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable

import pytest
import trio

from mycel import HostConfig, Identity, open_host
from mycel.muxers.yamux import Yamux
from mycel.security.noise import Noise
from mycel.testing.hosts import memory_hosts
from mycel.transports.quic import QUIC
from mycel.transports.tcp import TCP

WATCHDOG = 20.0  # seconds; a healthy case takes well under one


def run_guarded(fn: Callable[[], Awaitable[None]], timeout: float = WATCHDOG) -> None:
    """Run ``fn`` in a fresh trio loop on a daemon thread; fail if it has not finished in ``timeout``."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            trio.run(fn)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s: the host did not exit"
    if errors:
        raise errors[0]


def stack_config(kind: str) -> HostConfig:
    if kind == "tcp":
        return HostConfig(
            identity=Identity.generate(),
            transports=[TCP()],
            security=[Noise()],
            muxers=[Yamux()],
            listen=["/ip4/127.0.0.1/tcp/0"],
        )
    return HostConfig(identity=Identity.generate(), transports=[QUIC()], listen=["/ip4/127.0.0.1/udp/0/quic-v1"])


@pytest.mark.parametrize("kind", ["tcp", "quic"])
def test_cancelling_connected_hosts_exits_promptly(kind: str) -> None:
    """Regression: a cancelled connected host used to wait forever for its muxer's run task."""

    async def main() -> None:
        start = trio.current_time()
        with trio.CancelScope() as scope:
            async with open_host(stack_config(kind)) as a, open_host(stack_config(kind)) as b:
                await a.connect(b.addrs[0])
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert trio.current_time() - start < 5.0

    run_guarded(main)


def test_cancelling_connected_memory_hosts_exits_promptly() -> None:
    async def main() -> None:
        with trio.CancelScope() as scope:
            async with memory_hosts(2) as (a, b):
                await a.connect(b.addrs[0])
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught

    run_guarded(main)
