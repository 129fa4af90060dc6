"""The service contract: ordered, exactly-once peer and protocol notifications; isolation of a
service that fails; per-host copies of services and transports."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping

import pytest
import trio

from mycel import HostConfig, Identity, MuxedStream, open_host
from mycel.core.abc import Connection
from mycel.core.errors import ServiceNotRunning
from mycel.core.events import PeerIdentified, ServiceFailed, StreamHandlerFailed, TaskFailed
from mycel.core.peer_id import PeerId
from mycel.protocols.identify import ID_PROTOCOL, PUSH_PROTOCOL, Identify
from mycel.protocols.ping import PING_PROTOCOL, Ping
from mycel.service import Service, ServiceHost, StreamHandler
from mycel.testing.hosts import memory_config, memory_hosts
from mycel.transports.memory import MemoryNetwork

NEW_PROTOCOL = "/test/new/1.0.0"


class Recorder(Service):
    """Records every notification, in order, as plain tuples."""

    def __init__(self) -> None:
        self.log: list[tuple[object, ...]] = []
        self.changed = trio.Event()

    def _add(self, *entry: object) -> None:
        self.log.append(entry)
        self.changed.set()

    async def next_change(self) -> None:
        await self.changed.wait()
        self.changed = trio.Event()

    def peer_connected(self, host: ServiceHost, peer: PeerId) -> None:
        self._add("peer_connected", peer)

    def peer_disconnected(self, host: ServiceHost, peer: PeerId) -> None:
        self._add("peer_disconnected", peer)

    def connection_opened(self, host: ServiceHost, conn: Connection) -> None:
        self._add("connection_opened", conn.remote_peer)

    def connection_closed(self, host: ServiceHost, conn: Connection, remaining: int) -> None:
        self._add("connection_closed", conn.remote_peer, remaining)

    def peer_protocols_changed(
        self, host: ServiceHost, peer: PeerId, added: frozenset[str], removed: frozenset[str]
    ) -> None:
        self._add("protocols", peer, added, removed)

    def local_protocols_changed(self, host: ServiceHost, added: frozenset[str], removed: frozenset[str]) -> None:
        self._add("local_protocols", added, removed)


def with_recorder() -> list[Service]:
    return [Identify(push_delay=0.01), Ping(), Recorder()]


async def wait_for(rec: Recorder, kind: str, count: int = 1) -> None:
    with trio.fail_after(10):
        while sum(1 for e in rec.log if e[0] == kind) < count:
            await rec.next_change()


def peer_entries(rec: Recorder) -> list[tuple[object, ...]]:
    return [e for e in rec.log if e[0] != "local_protocols"]


async def test_notifications_in_order_exactly_once() -> None:
    async with memory_hosts(2, services=with_recorder) as (a, b):
        rec = a.service(Recorder)
        b_protocols = frozenset(b.protocols)
        assert {ID_PROTOCOL, PUSH_PROTOCOL, PING_PROTOCOL} <= b_protocols

        # connect: peer_connected, connection_opened, then all of b's protocols once identify is done
        conn1 = await a.connect(b.addrs[0])
        await wait_for(rec, "protocols")
        assert peer_entries(rec) == [
            ("peer_connected", b.peer_id),
            ("connection_opened", b.peer_id),
            ("protocols", b.peer_id, b_protocols, frozenset()),
        ]

        # identify push: b serves a new protocol, then stops serving it
        async def serve_new(stream: MuxedStream) -> None:
            pass

        b.set_stream_handler(NEW_PROTOCOL, serve_new)
        await wait_for(rec, "protocols", 2)
        assert peer_entries(rec)[-1] == ("protocols", b.peer_id, frozenset([NEW_PROTOCOL]), frozenset())
        b.remove_stream_handler(NEW_PROTOCOL)
        await wait_for(rec, "protocols", 3)
        assert peer_entries(rec)[-1] == ("protocols", b.peer_id, frozenset(), frozenset([NEW_PROTOCOL]))

        # a second connection: connection_opened only; its identify changes nothing, so no news
        with a.subscribe() as events:
            conn2 = await a.swarm.dial_addr(b.listen_addrs[0])
            with trio.fail_after(10):
                while not isinstance(await events.receive(), PeerIdentified):
                    pass
        assert conn2 is not conn1
        assert peer_entries(rec)[5:] == [("connection_opened", b.peer_id)]

        # closing one of two: connection_closed with one left; closing the last: peer_disconnected
        await conn1.aclose()
        await wait_for(rec, "connection_closed")
        assert peer_entries(rec)[6:] == [("connection_closed", b.peer_id, 1)]
        await conn2.aclose()
        await wait_for(rec, "peer_disconnected")
        assert peer_entries(rec)[7:] == [("connection_closed", b.peer_id, 0), ("peer_disconnected", b.peer_id)]

        # reconnect: the whole sequence again, protocols reported afresh
        await a.connect(b.peer_id)
        await wait_for(rec, "protocols", 4)
        assert peer_entries(rec)[9:] == [
            ("peer_connected", b.peer_id),
            ("connection_opened", b.peer_id),
            ("protocols", b.peer_id, b_protocols, frozenset()),
        ]
        kinds = [e[0] for e in peer_entries(rec)]
        assert kinds.count("peer_connected") == 2 and kinds.count("peer_disconnected") == 1


async def test_local_protocol_changes_reach_services() -> None:
    async with memory_hosts(1, services=with_recorder) as (a,):
        rec = a.service(Recorder)
        rec.log.clear()

        async def serve(stream: MuxedStream) -> None:
            pass

        a.set_stream_handler(NEW_PROTOCOL, serve)
        a.set_stream_handler(NEW_PROTOCOL, serve)  # replacing a handler changes no protocol
        a.remove_stream_handler(NEW_PROTOCOL)
        a.remove_stream_handler(NEW_PROTOCOL)  # nothing to remove: no news
        assert rec.log == [
            ("local_protocols", frozenset([NEW_PROTOCOL]), frozenset()),
            ("local_protocols", frozenset(), frozenset([NEW_PROTOCOL])),
        ]


# -- isolation ------------------------------------------------------------------------------------
class Crashing(Service):
    """Fails in the way it is told to; serves /crash/1.0.0 while it runs."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.started = 0
        self.told: list[tuple[str, PeerId]] = []

    def handlers(self) -> Mapping[str, StreamHandler]:
        return {"/crash/1.0.0": self._serve}

    async def _serve(self, stream: MuxedStream) -> None:
        await stream.send_all(b"ok")

    async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.started += 1
        if self.how == "run":
            raise RuntimeError("run failed before it started")
        task_status.started()

    def peer_connected(self, host: ServiceHost, peer: PeerId) -> None:
        self.told.append(("peer_connected", peer))

    def peer_protocols_changed(
        self, host: ServiceHost, peer: PeerId, added: frozenset[str], removed: frozenset[str]
    ) -> None:
        self.told.append(("protocols", peer))

    def connection_opened(self, host: ServiceHost, conn: Connection) -> None:
        self.told.append(("connection_opened", conn.remote_peer))
        if self.how == "hook":
            raise RuntimeError("hook bug")
        if self.how == "task":
            host.spawn(self._task)

    async def _task(self) -> None:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("task bug")


class Restarting(Crashing):
    """Fails in its first life only: its copies (what a restart runs) behave."""

    restart_on_failure = True
    max_restarts = 1
    restart_backoff = 0.0

    def clone(self) -> Restarting:
        copy = super().clone()
        copy.how = "none"
        return copy


@pytest.mark.parametrize("how", ["hook", "task", "run"])
async def test_a_failing_service_stops_alone(how: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="mycel")
    network = MemoryNetwork()
    cfg_a = memory_config(network, services=[Identify(), Ping(), Crashing(how)])
    cfg_b = memory_config(network)
    async with open_host(cfg_b) as b, open_host(cfg_a) as a:
        if how != "run":  # (run fails during start-up; the host starts all the same)
            with a.subscribe() as events:
                assert "/crash/1.0.0" in a.protocols
                await a.connect(b.addrs[0])
                with trio.fail_after(10):
                    while not isinstance(ev := await events.receive(), ServiceFailed):
                        pass
            assert ev.service == "Crashing" and isinstance(ev.error, RuntimeError) and not ev.restarting
        state = a.service_state(Crashing)
        assert not state.running and state.failures == 1 and state.stopped_by_failure
        assert "/crash/1.0.0" not in a.protocols  # its handlers went with it
        # the host and the other services go on
        await a.connect(b.addrs[0])
        assert await a.service(Ping).ping(b.peer_id)
        info = await a.service(Identify).wait_identified(b.peer_id)
        assert PING_PROTOCOL in info.protocols
        # logged loudly, with the traceback
        failed = [r for r in caplog.records if "Crashing" in r.getMessage() and r.levelno == logging.ERROR]
        assert failed and failed[0].exc_info is not None


async def test_a_service_can_ask_to_be_restarted() -> None:
    network = MemoryNetwork()
    async with open_host(memory_config(network)) as b, open_host(
        memory_config(network, services=[Identify(), Ping(), Restarting("hook")])
    ) as a:
        first = a.service(Restarting)
        with a.subscribe() as events:
            await a.connect(b.addrs[0])
            with trio.fail_after(10):
                while not isinstance(ev := await events.receive(), ServiceFailed):
                    pass
            assert ev.restarting
            with trio.fail_after(10):
                while a.service_state(Restarting).running is False or a.service(Restarting) is first:
                    await events.receive()
        assert "/crash/1.0.0" in a.protocols  # the fresh copy installed its handlers again
        fresh = a.service(Restarting)
        assert fresh.started == 1
        # it hears of what is connected, as if it had been running all along
        assert ("peer_connected", b.peer_id) in fresh.told and ("connection_opened", b.peer_id) in fresh.told
        await a.service(Identify).wait_identified(b.peer_id)
        assert ("protocols", b.peer_id) in fresh.told


async def test_failing_background_task_of_the_application_is_isolated(caplog: pytest.LogCaptureFixture) -> None:
    async with memory_hosts(2) as (a, b):

        async def buggy() -> None:
            raise KeyError("app bug")

        with a.subscribe() as events:
            a.spawn(buggy)
            with trio.fail_after(10):
                while not isinstance(ev := await events.receive(), TaskFailed):
                    pass
        assert isinstance(ev.error, KeyError)
        await a.connect(b.addrs[0])
        assert await a.service(Ping).ping(b.peer_id)
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)


async def test_handler_bug_is_logged_at_error_with_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async with memory_hosts(2) as (a, b):

        async def broken(stream: MuxedStream) -> None:
            raise ZeroDivisionError("handler bug")

        b.set_stream_handler("/broken/1.0.0", broken)
        with b.subscribe() as events:
            await a.connect(b.addrs[0])
            stream = await a.new_stream(b.peer_id, "/broken/1.0.0", lazy=True)
            with trio.fail_after(10):
                while not isinstance(ev := await events.receive(), StreamHandlerFailed):
                    pass
            await stream.aclose()
        assert isinstance(ev.error, ZeroDivisionError)
    records = [r for r in caplog.records if r.levelno == logging.ERROR and "/broken/1.0.0" in r.getMessage()]
    assert records and records[0].exc_info is not None


async def test_plain_function_handler_is_rejected() -> None:
    async with memory_hosts(1) as (a,):

        def not_async(stream: MuxedStream) -> None:
            pass

        with pytest.raises(TypeError, match="async"):
            a.set_stream_handler("/sync/1.0.0", not_async)  # type: ignore[arg-type]
        assert "/sync/1.0.0" not in a.protocols

        async def serve(stream: MuxedStream, greeting: bytes) -> None:
            await stream.send_all(greeting)

        # what returns a coroutine is fine: a lambda, a partial of an async function
        a.set_stream_handler("/lambda/1.0.0", lambda stream: serve(stream, b"hi"))
        a.set_stream_handler("/partial/1.0.0", functools.partial(serve, greeting=b"hi"))


# -- per-host state -------------------------------------------------------------------------------
async def test_a_shared_config_gives_each_host_its_own_components() -> None:
    """Regression: hosts from one config (or .replace()) shared service and transport objects, so a
    host answered identify with another host's key."""
    network = MemoryNetwork()
    shared = memory_config(network)
    other = shared.replace(identity=Identity.generate())
    async with open_host(shared.replace(identity=Identity.generate())) as a, open_host(other) as b, open_host(
        other.replace(identity=Identity.generate())
    ) as c:
        # the first host runs the config's objects; the others run copies of their own
        assert a.service(Identify) is shared.services[0] and a.transports[0] is shared.transports[0]
        assert len({id(h.service(Identify)) for h in (a, b, c)}) == 3
        assert len({id(h.transports[0]) for h in (a, b, c)}) == 3
        assert b.service(Identify).observed_addrs is not a.service(Identify).observed_addrs
        for x, y in ((a, b), (b, c), (c, a)):
            conn = await x.connect(y.addrs[0])
            res = await x.service(Identify).identify_connection(conn)
            assert res.peer == y.peer_id and res.signed_record_verified
    # a service object no host runs says so when used
    with pytest.raises(ServiceNotRunning, match="host.service"):
        await Identify().identify(Identity.generate().peer_id)


async def test_a_host_started_after_another_from_one_config_gets_fresh_services() -> None:
    network = MemoryNetwork()
    config = memory_config(network)
    async with open_host(config) as a:
        first = a.service(Identify)
        assert first is config.services[0]
    async with open_host(config) as b, open_host(memory_config(network)) as c:
        assert b.service(Identify) is not first  # a fresh copy, not the one that ran in a
        await b.connect(c.addrs[0])
        assert await b.service(Ping).ping(c.peer_id)


def test_quic_transport_state_is_per_host() -> None:
    from mycel.transports.quic import QUIC

    config = HostConfig(transports=[QUIC()], listen=["/ip4/127.0.0.1/udp/0/quic-v1"])

    async def main() -> None:
        async with open_host(config) as a, open_host(config.replace(identity=Identity.generate())) as b:
            assert a.transports[0] is not b.transports[0]
            conn = await a.connect(b.addrs[0])
            assert conn.remote_peer == b.peer_id
            assert await a.service(Ping).ping(b.peer_id)

    trio.run(main)


class _SpawnsOnProtocols(Service):
    """Starts work when a peer's protocols change, as the DHT does."""

    def peer_protocols_changed(
        self, host: ServiceHost, peer: PeerId, added: frozenset[str], removed: frozenset[str]
    ) -> None:
        host.spawn(trio.sleep, 0)


async def test_a_hook_told_host_closed_during_shutdown_is_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    """Regression: a late identify during shutdown made the DHT's hook spawn, get HostClosed, and the host
    logged the service as failed with a traceback."""
    async with memory_hosts(2, services=lambda: [Identify(), _SpawnsOnProtocols()]) as (a, b):
        await a.connect(b.peer_id, b.addrs)
        a._closed = True  # what the host is while it shuts down
        try:
            a.update_peer_protocols(b.peer_id, ["/late/1.0.0"])
        finally:
            a._closed = False
        assert a.service_state(_SpawnsOnProtocols).running
        assert not any(r.levelno >= logging.ERROR for r in caplog.records)
        a.update_peer_protocols(b.peer_id, ["/late/2.0.0"])  # an open host: the hook's spawn works
        assert a.service_state(_SpawnsOnProtocols).running
