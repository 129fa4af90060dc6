"""Host lifecycle: cancellation at any point ends a host promptly, a closed host refuses new work.

Hangs are the failure mode here, so each case runs its own trio loop in a thread with a watchdog: a
regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from mycel import HostConfig, Identity, MuxedStream, open_host
from mycel.core.errors import HostClosed
from mycel.service import Service, ServiceHost
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


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def silent_tcp_server(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Accepts TCP connections and never says a word: a dial to it hangs in its handshake."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    held: list[trio.SocketStream] = []
    try:
        async with listeners[0]:
            task_status.started(listeners[0].socket.getsockname()[1])
            while True:
                held.append(await listeners[0].accept())
    finally:
        for stream in held:
            stream.socket.close()


@pytest.mark.parametrize("kind", ["tcp", "quic"])
def test_cancel_during_handshake_exits_promptly_and_leaks_nothing(kind: str) -> None:
    """A dial stuck in its handshake (the remote never answers) is cancelled with the host."""

    async def main() -> None:
        before = open_fds()
        async with trio.open_nursery() as outer:
            if kind == "tcp":
                port = await outer.start(silent_tcp_server)
                target = f"/ip4/127.0.0.1/tcp/{port}/p2p/{Identity.generate().peer_id}"
            else:  # a UDP socket that swallows every datagram
                sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
                await sock.bind(("127.0.0.1", 0))
                target = f"/ip4/127.0.0.1/udp/{sock.getsockname()[1]}/quic-v1/p2p/{Identity.generate().peer_id}"
            start = trio.current_time()
            with trio.CancelScope() as scope:
                async with open_host(stack_config(kind)) as host:
                    async with trio.open_nursery() as inner:
                        inner.start_soon(host.connect, target)
                        await trio.testing.wait_all_tasks_blocked(0.05)  # the dial is in its handshake
                        scope.cancel()
            assert trio.current_time() - start < 5.0
            outer.cancel_scope.cancel()
            if kind == "quic":
                sock.close()
        assert open_fds() <= before

    run_guarded(main)


def test_cancel_while_handlers_run_exits_promptly() -> None:
    """Stream handlers that never return are cancelled with the host, on both sides."""

    async def main() -> None:
        entered = trio.Event()

        async def stuck(stream: MuxedStream) -> None:
            entered.set()
            await trio.sleep_forever()

        before = open_fds()
        with trio.CancelScope() as scope:
            async with open_host(stack_config("tcp")) as a, open_host(stack_config("tcp")) as b:
                b.set_stream_handler("/stuck/1.0.0", stuck)
                await a.connect(b.addrs[0])
                streams = [await a.new_stream(b.peer_id, "/stuck/1.0.0") for _ in range(5)]
                await entered.wait()
                assert streams
                scope.cancel()
        assert open_fds() <= before

    run_guarded(main)


def test_cancel_during_startup_exits_promptly() -> None:
    """A service that never becomes ready cannot hold the host's start-up (or its exit) hostage."""

    class NeverReady(Service):
        async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            await trio.sleep_forever()

    async def main() -> None:
        config = stack_config("tcp").replace(services=[NeverReady()])
        with trio.move_on_after(0.2) as scope:
            async with open_host(config):
                raise AssertionError("the host must not start while a service is not ready")
        assert scope.cancelled_caught

    run_guarded(main)


def test_a_closed_host_refuses_new_work_and_opens_nothing() -> None:
    """Regression: a host used after its block dialed, handshook and leaked the connection."""

    async def main() -> None:
        async with open_host(stack_config("tcp")) as b:
            with b.subscribe() as events:
                async with open_host(stack_config("tcp")) as a:
                    pass
                assert a.is_closed
                with pytest.raises(HostClosed):
                    await a.connect(b.addrs[0])
                with pytest.raises(HostClosed):
                    await a.new_stream(b.peer_id, "/ipfs/ping/1.0.0")
                with pytest.raises(HostClosed):
                    await a.listen("/ip4/127.0.0.1/tcp/0")
                with pytest.raises(HostClosed):
                    a.spawn(trio.sleep, 0)
                with pytest.raises(trio.WouldBlock):
                    events.receive_nowait()  # b never saw a connection
            assert b.connections() == []

    run_guarded(main)


def test_open_host_keeps_the_cause_of_the_users_exception() -> None:
    """Regression: open_host re-raised the body's exception `from None`, dropping its cause."""

    async def main() -> None:
        with pytest.raises(ValueError) as info:
            async with open_host(stack_config("tcp")):
                try:
                    {}["missing"]
                except KeyError as exc:
                    raise ValueError("user error") from exc
        assert isinstance(info.value.__cause__, KeyError)
        assert not isinstance(info.value.__context__, BaseExceptionGroup)

    run_guarded(main)


def test_service_tasks_are_cancelled_with_the_host() -> None:
    """A service's long-running task is cancelled mid-work when the host closes; nothing is left."""

    class Busy(Service):
        def __init__(self) -> None:
            self.cancelled = False
            self.working = trio.Event()

        async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            try:
                while True:
                    await trio.sleep(0.001)  # a unit of work
                    self.working.set()
            except trio.Cancelled:
                self.cancelled = True
                raise

    async def main() -> None:
        async with open_host(stack_config("tcp").replace(services=[Busy()])) as host:
            busy = host.service(Busy)
            await busy.working.wait()
        assert busy.cancelled

    run_guarded(main)
