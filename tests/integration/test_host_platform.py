"""Regressions of the host-platform issue: identify waits that end, consistent dial errors, config
validation, the peerstore's provenance in a running host, the event channel's drop count."""

from __future__ import annotations

import pathlib

import pytest
import trio
import trio.testing
from multiaddr import Multiaddr

from mycel import (
    TCP,
    ConfigError,
    ConnectionClosed,
    DialError,
    DialPeerMismatch,
    HostConfig,
    Identify,
    Identity,
    MuxedStream,
    Noise,
    PeerIdentified,
    PeerIdMismatch,
    Ping,
    Yamux,
    open_host,
)
from mycel.core.errors import ProtocolNotSupported, StreamReset
from mycel.network.peerstore import AddrSource
from mycel.protocols.identify import ID_PROTOCOL
from mycel.testing.hosts import memory_hosts


async def test_wait_identified_fails_when_identify_fails() -> None:
    """Regression: wait_identified waited forever when the peer's identify failed."""
    async with memory_hosts(2) as (a, b):

        async def broken_identify(stream: MuxedStream) -> None:
            await stream.reset()

        b.set_stream_handler(ID_PROTOCOL, broken_identify)
        await a.connect(b.addrs[0])
        with trio.fail_after(10), pytest.raises((StreamReset, ProtocolNotSupported)):
            await a.service(Identify).wait_identified(b.peer_id)


async def test_wait_identified_fails_when_the_peer_leaves_first() -> None:
    """Regression: wait_identified waited forever when the peer disconnected before identify."""
    async with memory_hosts(2) as (a, b):
        started = trio.Event()

        async def slow_identify(stream: MuxedStream) -> None:
            started.set()
            await trio.sleep_forever()

        b.set_stream_handler(ID_PROTOCOL, slow_identify)
        await a.connect(b.addrs[0])
        async with trio.open_nursery() as nursery:

            async def leave() -> None:
                await started.wait()
                await a.disconnect(b.peer_id)

            nursery.start_soon(leave)
            with trio.fail_after(10), pytest.raises(ConnectionClosed):
                await a.service(Identify).wait_identified(b.peer_id)


async def test_wait_identified_of_a_peer_that_never_comes_times_out() -> None:
    async with memory_hosts(1) as (a,):
        with pytest.raises(trio.TooSlowError):
            await a.service(Identify).wait_identified(Identity.generate().peer_id, timeout=0.05)


@pytest.mark.parametrize("count", [1, 2])
async def test_dialing_the_wrong_peer_fails_alike_for_one_address_or_more(count: int) -> None:
    """Regression: PeerIdMismatch escaped as itself with one address, folded into DialError with two."""
    async with memory_hosts(3) as (a, b, c):
        wrong = [b.listen_addrs[0], c.listen_addrs[0]][:count]
        impostor = Identity.generate().peer_id
        with pytest.raises(DialPeerMismatch) as info:
            await a.connect(impostor, wrong)
        assert isinstance(info.value, DialError) and isinstance(info.value, PeerIdMismatch)
        assert len(info.value.errors) == count
        assert all(isinstance(e, PeerIdMismatch) for e in info.value.errors)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"transports": [TCP]}, r"HostConfig.transports\[0\]: got the class TCP; pass an instance"),
        ({"security": [Noise]}, r"HostConfig.security\[0\]: got the class Noise"),
        ({"muxers": [Yamux, Yamux()]}, r"HostConfig.muxers\[0\]: got the class Yamux"),
        ({"services": [Ping]}, r"HostConfig.services\[0\]: got the class Ping"),
        ({"services": [object()]}, r"HostConfig.services\[0\]: expected a Service, got object"),
        ({"identity": "node.key"}, r"HostConfig.identity: expected an Identity, got str \(load one"),
        ({"identity": pathlib.Path("node.key")}, r"HostConfig.identity: expected an Identity"),
        ({"listen": "/ip4/127.0.0.1/tcp/0"}, r"HostConfig.listen: expected a list of addresses"),
        ({"listen": ["not an address"]}, r"HostConfig.listen\[0\]: 'not an address' is not a multiaddr"),
        ({"transports": TCP()}, r"HostConfig.transports: expected a list"),
        ({"handshake_timeout": 0}, r"HostConfig.handshake_timeout: must be a positive number"),
        ({"handler_concurrency": 0}, r"HostConfig.handler_concurrency: must be a positive integer"),
    ],
)
def test_wrong_config_types_fail_at_construction_naming_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        HostConfig(**changes)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


async def test_identify_does_not_overwrite_addresses_the_user_gave() -> None:
    async with memory_hosts(2) as (a, b):
        extra = Multiaddr("/ip4/198.18.0.1/tcp/4001")  # ours to remember, never dialed
        a.peerstore.add_addrs(b.peer_id, [extra])  # USER, permanent
        with a.subscribe() as events:
            await a.connect(b.addrs[0])
            with trio.fail_after(10):
                while not isinstance(await events.receive(), PeerIdentified):
                    pass
        addrs = a.peerstore.addrs(b.peer_id)
        assert extra in addrs and b.listen_addrs[0] in addrs
        sources = {e.addr: e.sources for e in a.peerstore.addr_entries(b.peer_id)}
        assert sources[extra] == frozenset([AddrSource.USER])
        assert AddrSource.CERTIFIED in sources[b.listen_addrs[0]]  # from b's signed peer record


async def test_new_listen_addresses_are_pushed_to_connected_peers() -> None:
    def config() -> HostConfig:
        return HostConfig(
            identity=Identity.generate(),
            transports=[TCP()],
            security=[Noise()],
            muxers=[Yamux()],
            services=[Identify(push_delay=0.01), Ping()],
            listen=["/ip4/127.0.0.1/tcp/0"],
        )

    async with open_host(config()) as a, open_host(config()) as b:
        await a.connect(b.addrs[0])
        await a.service(Identify).wait_identified(b.peer_id)
        with a.subscribe() as events:
            (new,) = await b.listen("/ip4/127.0.0.1/tcp/0")
            with trio.fail_after(10):
                while new not in a.peerstore.addrs(b.peer_id):
                    await events.receive()  # a PeerIdentified for the push


async def test_a_slow_subscriber_loses_events_and_is_told_how_many() -> None:
    async with memory_hosts(2) as (a, b):
        with a.subscribe(maxsize=1) as events:
            await a.connect(b.addrs[0])
            await a.service(Ping).ping(b.peer_id)
            assert events.dropped > 0
            assert a.dropped_events == events.dropped
            assert events.receive_nowait() is not None  # the first one was kept


async def test_the_peerstore_expires_entries_on_a_timer(autojump_clock: trio.testing.MockClock) -> None:
    """Expired addresses are dropped by the host's timer at their deadline (no polling loop)."""
    from mycel.network.peerstore import TEMP_TTL

    async with memory_hosts(1) as (a,):
        stranger = Identity.generate().peer_id
        a.peerstore.add_addrs(stranger, [Multiaddr("/ip4/198.18.0.2/tcp/4001")], AddrSource.DISCOVERY, TEMP_TTL)
        assert a.peerstore.next_expiry() is not None
        await trio.sleep(TEMP_TTL - 1)
        assert a.peerstore.stats().expired_addrs == 0 and stranger in a.peerstore
        await trio.sleep(2)
        assert a.peerstore.stats().expired_addrs == 1  # dropped by expire(), not only hidden by reads
        assert stranger not in a.peerstore


async def test_an_identify_timeout_is_logged_with_a_reason(caplog: pytest.LogCaptureFixture) -> None:
    """The identify-timeout log line had an empty reason (TooSlowError has no message)."""
    import logging

    caplog.set_level(logging.INFO, logger="mycel.protocols.identify")
    # (no pushes: b's push after its handler change would identify it to a all the same)
    services = lambda: [Identify(push=False), Ping()]  # noqa: E731
    async with memory_hosts(2, services=services, negotiate_timeout=0.2) as (a, b):

        async def silent(stream: MuxedStream) -> None:
            await trio.sleep_forever()

        b.set_stream_handler(ID_PROTOCOL, silent)
        await a.connect(b.addrs[0])
        with pytest.raises(trio.TooSlowError):
            await a.service(Identify).wait_identified(b.peer_id)
    lines = [r.getMessage() for r in caplog.records if "identify of" in r.getMessage()]
    assert lines and lines[0].endswith("failed: timed out")


async def test_streams_left_in_negotiation_are_bounded_per_connection() -> None:
    """Regression (#12): a peer opening streams it never negotiates held a task and a 10 s timer for
    each, without bound. Beyond max_negotiating_streams they are reset; other peers are served."""
    async with memory_hosts(3, max_negotiating_streams=8) as (a, b, c):
        conn = await a.connect(b.addrs[0])
        await a.service(Identify).wait_identified(b.peer_id)  # (its stream would take a slot too)
        streams = [await conn.open_stream() for _ in range(20)]  # and never a protocol proposal
        answered = refused = 0
        with trio.fail_after(10):
            for stream in streams:
                try:
                    assert await stream.receive_some(100)  # b's multistream header: b is negotiating
                    answered += 1
                except StreamReset:
                    refused += 1
        assert (answered, refused) == (8, 12)
        assert b.refused_streams == 12
        await c.connect(b.addrs[0])
        assert await c.service(Ping).ping(b.peer_id)  # everyone else is served
        for stream in streams:
            await stream.reset()
        with trio.fail_after(10):  # the slots come back once the stuck streams are gone
            while True:
                try:
                    assert await a.service(Ping).ping(b.peer_id)
                    break
                except StreamReset:
                    await trio.sleep(0)
