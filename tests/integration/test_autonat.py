"""AutoNAT v1/v2 and observed addresses between hosts on 127.0.0.1, with loopback declared public.

A server dials back a reachable client (public) and fails to reach a client with no listener
(private); a request naming a third party's address never makes the server dial it (v1) or costs the
requester 30-100 kB first (v2); the verdict reaches host.reachability, a ReachabilityChanged event and
a DHT in auto mode (server once public, seen by peers through identify push); malformed and
over-limit requests get typed answers; cancelling a host in the middle of a dial-back ends at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator, Sequence

import pytest
import trio
import trio.testing
from multiaddr import Multiaddr

from mycel.core.addrs import AddressPolicy, Reachability
from mycel.core.abc import MuxedStream
from mycel.core.errors import MycelError
from mycel.core.events import ConnectionClosed, ConnectionOpened, PeerFound, ReachabilityChanged
from mycel.core.framing import receive_message, send_message
from mycel.core.identity import Identity
from mycel.host import EventSubscription, Host, HostConfig, open_host
from mycel.muxers.yamux import Yamux
from mycel.protocols.autonat import (
    DIAL_REQUEST_PROTOCOL,
    V1_PROTOCOL,
    AutoNAT,
    AutoNATConfig,
    AutoNATMessageError,
    V1Status,
)
from mycel.protocols.autonat.messages import V2Response, V2Status, decode_v1_response, decode_v2_message, read_message
from mycel.protocols.identify import Identify
from mycel.protocols.kad import KadDHT
from mycel.protocols.kad.service import PROTOCOL as KAD_PROTOCOL
from mycel.service import Service, ServiceHost
from mycel.security.noise import Noise
from mycel.transports.tcp import TCP

TIMEOUT = 20  # bounds a failure; a pass takes well under a second (the machine is shared and loaded)
LOOPBACK_PUBLIC = AddressPolicy(public_ranges=("127.0.0.0/8",))
# rounds only when a test asks (probe()), unless it sets boot_delay itself
MANUAL = AutoNATConfig(boot_delay=3600, retry_interval=3600, seed=1)


def _config(listen: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",), *extra: Service, autonat: AutoNATConfig = MANUAL) -> HostConfig:
    return HostConfig(
        transports=[TCP()],
        security=[Noise()],
        muxers=[Yamux()],
        services=[Identify(), AutoNAT(autonat), *extra],
        listen=list(listen),
        address_policy=LOOPBACK_PUBLIC,
        handshake_timeout=5.0,
    )


async def next_verdict(events: EventSubscription) -> ReachabilityChanged:
    """The next ReachabilityChanged event of a subscription (other events skipped)."""
    async for event in events:
        if isinstance(event, ReachabilityChanged):
            return event
    raise AssertionError("the subscription ended")


@contextlib.asynccontextmanager
async def pair(
    client_listen: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",),
    *,
    client: AutoNATConfig = MANUAL,
    server: AutoNATConfig = MANUAL,
    client_extra: Sequence[Service] = (),
) -> AsyncIterator[tuple[Host, Host]]:
    async with open_host(_config(autonat=server)) as s, open_host(_config(client_listen, *client_extra, autonat=client)) as c:
        with trio.fail_after(TIMEOUT):
            await c.connect(s.addrs[0])
            await c.service(Identify).wait_identified(s.peer_id)
        yield s, c


async def test_reachable_client_is_public_and_the_host_says_so() -> None:
    async with pair() as (s, c):
        with c.subscribe() as events:
            with trio.fail_after(TIMEOUT):
                verdict = await c.service(AutoNAT).probe()
            assert verdict is Reachability.PUBLIC
            assert c.reachability is Reachability.PUBLIC
            event = await next_verdict(events)  # (already queued)
            assert event.reachability is Reachability.PUBLIC
            assert event.addrs and event.addrs[0] == c.advertised_addrs[0]
            assert s.service(AutoNAT).stats["served"] == 2  # the round asked v1 and v2
            assert s.service(AutoNAT).stats["dial_backs"] >= 1
            # the dial-back connection was closed: one connection left between them
            with trio.fail_after(5):
                while len(c.connections(s.peer_id)) != 1:
                    await events.receive()  # ConnectionClosed


async def test_client_without_listener_is_private() -> None:
    async with pair(client_listen=()) as (s, c):
        autonat = c.service(AutoNAT)
        with trio.fail_after(TIMEOUT):
            response = await autonat.ask_v1(s.peer_id)
        # only the observed address (the client's ephemeral port) was dialable; nothing listens there
        assert response.status is V1Status.E_DIAL_ERROR
        with trio.fail_after(TIMEOUT):
            assert await autonat.probe() is Reachability.PRIVATE
        assert c.reachability is Reachability.PRIVATE


async def test_closed_listener_address_is_private_then_public_when_listening() -> None:
    # the client advertises an address where nothing listens any more
    async with open_host(_config()) as gone:
        dead = gone.advertised_addrs[0]
    async with pair() as (s, c):
        with trio.fail_after(TIMEOUT):
            response = await c.service(AutoNAT).ask_v1(s.peer_id, [dead])
            assert response.status is V1Status.E_DIAL_ERROR
            response = await c.service(AutoNAT).ask_v1(s.peer_id, [dead, *c.advertised_addrs])
            assert response.status is V1Status.OK and response.addr == c.advertised_addrs[0]


async def test_v1_request_naming_a_third_party_is_never_dialed() -> None:
    async with open_host(_config(["/ip4/127.0.0.2/tcp/0"])) as third, pair() as (s, c):
        seen: list[object] = []
        with third.subscribe() as events:
            with trio.fail_after(TIMEOUT):
                response = await c.service(AutoNAT).ask_v1(s.peer_id, third.advertised_addrs)
            # only the requester's own observed address was tried (and refused: nothing listens there)
            assert response.status is V1Status.E_DIAL_ERROR
            await trio.testing.wait_all_tasks_blocked()
            with contextlib.suppress(trio.WouldBlock):
                while True:
                    seen.append(events.receive_nowait())
        assert not [e for e in seen if isinstance(e, ConnectionOpened)]
        assert not third.connections()


async def test_v1_peer_id_mismatch_and_rate_limit() -> None:
    server = AutoNATConfig(boot_delay=3600, v1_peer_limit=2, seed=2)
    async with pair(server=server) as (s, c):
        autonat = c.service(AutoNAT)
        with trio.fail_after(TIMEOUT):
            assert (await autonat.ask_v1(s.peer_id)).status is V1Status.OK
            assert (await autonat.ask_v1(s.peer_id)).status is V1Status.OK
            third = await autonat.ask_v1(s.peer_id)
        assert third.status is V1Status.E_DIAL_REFUSED and "too many" in third.text
        assert s.service(AutoNAT).stats["rate_limited"] == 1
        # a DIAL naming another peer id is a bad request
        with trio.fail_after(TIMEOUT):
            stream = await c.new_stream(s.peer_id, V1_PROTOCOL)
            from mycel.protocols.autonat.messages import encode_v1_request

            await send_message(stream, encode_v1_request(s.peer_id, c.advertised_addrs))
            body = await receive_message(stream, 4096)
        assert body is not None and decode_v1_response(body).status is V1Status.E_BAD_REQUEST


@pytest.mark.parametrize("junk", [b"\x00\x01\x02garbage", b"\x08\x01"])  # not protobuf; a DIAL_RESPONSE
async def test_v1_malformed_requests_get_bad_request(junk: bytes) -> None:
    async with pair() as (s, c):
        with trio.fail_after(TIMEOUT):
            stream = await c.new_stream(s.peer_id, V1_PROTOCOL)
            await send_message(stream, junk)
            body = await receive_message(stream, 4096)
        assert body is not None and decode_v1_response(body).status is V1Status.E_BAD_REQUEST
        assert s.service(AutoNAT).stats["bad_requests"] == 1


async def test_oversized_requests_are_cut_off() -> None:
    async with pair() as (s, c):
        for protocol in (V1_PROTOCOL, DIAL_REQUEST_PROTOCOL):
            with trio.fail_after(TIMEOUT):
                stream = await c.new_stream(s.peer_id, protocol)
                await send_message(stream, b"\x00" * 9000)  # over both versions' message bounds
                body = await _answer_or_reset(stream)
            if protocol == V1_PROTOCOL:
                assert body is not None and decode_v1_response(body).status is V1Status.E_BAD_REQUEST
            else:
                assert body is None  # v2 resets
        assert s.service(AutoNAT).stats["bad_requests"] == 2
        assert c.connections(s.peer_id)  # only the streams were affected


async def _answer_or_reset(stream: trio.abc.Stream) -> bytes | None:
    try:
        return await receive_message(stream, 8192)
    except (MycelError, trio.BrokenResourceError):
        return None


async def test_v2_reachable_address_with_nonce() -> None:
    client = AutoNATConfig(boot_delay=3600, confidence=1, seed=3)
    async with pair(client=client) as (s, c):
        autonat = c.service(AutoNAT)
        with trio.fail_after(TIMEOUT):
            addr, reachable = await autonat.ask_v2(s.peer_id, c.advertised_addrs)
        assert addr == c.advertised_addrs[0] and reachable is True
        assert s.service(AutoNAT).stats["dial_data_bytes"] == 0  # same IP: no cost asked
        with trio.fail_after(TIMEOUT):
            await autonat.probe()
        assert autonat.addr_reachability()[c.advertised_addrs[0]] is Reachability.PUBLIC


async def test_v2_third_party_address_costs_dial_data() -> None:
    async with open_host(_config(["/ip4/127.0.0.2/tcp/0"])) as third, pair() as (s, c):
        autonat = c.service(AutoNAT)
        # a client unwilling to pay: resets, nothing is dialed
        autonat.config = dataclasses.replace(autonat.config, max_dial_data=1000)
        with trio.fail_after(TIMEOUT), pytest.raises(AutoNATMessageError):
            await autonat.ask_v2(s.peer_id, third.advertised_addrs)
        assert not third.connections()
        assert s.service(AutoNAT).stats["dial_data_bytes"] == 0
        # one that pays: the server dials the address, but the peer there is not the requester
        autonat.config = dataclasses.replace(autonat.config, max_dial_data=100_000)
        with trio.fail_after(TIMEOUT):
            addr, reachable = await autonat.ask_v2(s.peer_id, third.advertised_addrs)
        assert addr == third.advertised_addrs[0] and reachable is False
        assert 30_000 <= s.service(AutoNAT).stats["dial_data_bytes"] <= 100_000 + 4096


async def test_v2_hostile_messages() -> None:
    async with pair() as (s, c):
        for body in (b"\xff\xff", b""):  # junk; an empty Message
            with trio.fail_after(TIMEOUT):
                stream = await c.new_stream(s.peer_id, DIAL_REQUEST_PROTOCOL)
                await send_message(stream, body)
                assert await _answer_or_reset(stream) is None
        assert s.service(AutoNAT).stats["bad_requests"] == 2
        # a request with no address the server will dial: refused, answered
        from mycel.protocols.autonat.messages import encode_v2_request

        with trio.fail_after(TIMEOUT):
            stream = await c.new_stream(s.peer_id, DIAL_REQUEST_PROTOCOL)
            await send_message(stream, encode_v2_request([Multiaddr("/ip4/10.0.0.1/tcp/1")], 7))
            answer = await receive_message(stream, 8192)
        assert answer is not None
        reply = decode_v2_message(answer)
        assert isinstance(reply, V2Response) and reply.status is V2Status.E_DIAL_REFUSED


async def test_automatic_rounds_reach_a_verdict_and_the_dht_follows() -> None:
    client = AutoNATConfig(boot_delay=0.0, retry_interval=0.2, seed=4)
    server_cfg = _config(["/ip4/127.0.0.1/tcp/0"], KadDHT(mode="server", diversity=False))
    client_cfg = _config(["/ip4/127.0.0.1/tcp/0"], KadDHT(mode="auto", diversity=False), autonat=client)
    async with open_host(server_cfg) as s, open_host(client_cfg) as c:
        dht = c.service(KadDHT)
        assert dht.mode == "client" and KAD_PROTOCOL not in c.protocols
        with c.subscribe() as events, s.subscribe() as s_events:
            with trio.fail_after(TIMEOUT):
                await c.connect(s.addrs[0])
                verdict = await next_verdict(events)
            assert verdict.reachability is Reachability.PUBLIC
            assert c.service(KadDHT).mode == "server" and KAD_PROTOCOL in c.protocols
            # the server learns it through identify push (a PeerIdentified event when it arrives)
            with trio.fail_after(TIMEOUT):
                while KAD_PROTOCOL not in s.peerstore.protocols(c.peer_id):
                    await s_events.receive()
        # and back to client when a verdict says private
        c.set_reachability(Reachability.PRIVATE)
        assert dht.mode == "client" and KAD_PROTOCOL not in c.protocols


async def test_observed_address_is_advertised_pushed_and_dropped_with_its_connection() -> None:
    policy = AddressPolicy(public_ranges=("127.0.0.0/8",), observed_threshold=1)
    async with open_host(_config().replace(address_policy=policy)) as s, open_host(_config().replace(address_policy=policy)) as c:
        with trio.fail_after(TIMEOUT):
            conn = await c.connect(s.addrs[0])
            await s.service(Identify).wait_identified(c.peer_id)
        inbound = s.connections(c.peer_id)[0]
        port = inbound.local_addr.value_for_protocol("tcp")
        external = Multiaddr(f"/ip4/198.18.7.7/tcp/{port}")
        s.record_observed_addr(inbound, external)
        assert external in s.advertised_addrs
        with c.subscribe() as c_events, trio.fail_after(TIMEOUT):
            while external not in c.peerstore.addrs(s.peer_id):
                await c_events.receive()  # identify push arrives as a PeerIdentified event
        with s.subscribe() as s_events:
            await conn.aclose()
            with trio.fail_after(TIMEOUT):
                while not (isinstance(event := await s_events.receive(), ConnectionClosed) and event.connection is inbound):
                    pass
        assert external not in s.advertised_addrs
        assert len(s.observed) == 0


async def test_host_cancelled_mid_dial_back_exits_promptly() -> None:
    # a TCP listener that accepts and never speaks: the server's dial-back hangs in the handshake
    hung = trio.Event()

    async def silent(stream: trio.SocketStream) -> None:
        hung.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as outer:
        listeners = await outer.start(functools.partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        server = AutoNATConfig(boot_delay=3600, dial_timeout=60, seed=5)
        started = trio.Event()
        done = trio.Event()
        async with open_host(_config(autonat=server)) as s, open_host(_config()) as c:
            await c.connect(s.addrs[0])

            async def ask() -> None:
                started.set()
                with contextlib.suppress(MycelError, trio.BrokenResourceError):
                    await c.service(AutoNAT).ask_v1(s.peer_id, [Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")])
                done.set()

            async with trio.open_nursery() as inner:
                inner.start_soon(ask)
                with trio.fail_after(TIMEOUT):
                    await hung.wait()  # the server's dial reached the silent listener
                inner.cancel_scope.cancel()
            t0 = trio.current_time()
        assert trio.current_time() - t0 < 5.0  # both hosts closed within their shutdown timeout
        assert s.is_closed and c.is_closed
        outer.cancel_scope.cancel()


async def test_relay_client_reserves_while_private_and_stops_when_public() -> None:
    from mycel.protocols.relay import CircuitRelay, RelayTransport

    relay_cfg = _config(["/ip4/127.0.0.1/tcp/0"], CircuitRelay())
    async with open_host(relay_cfg) as r:
        transport = RelayTransport([str(r.addrs[0])], listen_when_private=True)
        client = AutoNATConfig(boot_delay=0.0, retry_interval=3600, seed=6)
        a_cfg = _config((), autonat=client).replace(transports=[TCP(), transport])
        async with open_host(a_cfg) as a:
            mine = next(t for t in a.transports if isinstance(t, RelayTransport))
            assert not mine.listeners
            with a.subscribe() as events, trio.fail_after(TIMEOUT):
                await a.connect(r.addrs[0])  # a round starts once R's AutoNAT protocol is known: private
                verdict = await next_verdict(events)
                assert verdict.reachability is Reachability.PRIVATE
                await trio.testing.wait_all_tasks_blocked()  # the transport hears the same event and listens
                assert len(mine.listeners) == 1
                rsvp = await mine.wait_reserved(r.peer_id)
            assert rsvp.relay == r.peer_id
            assert any(str(x).endswith("/p2p-circuit") for x in a.advertised_addrs)
            with trio.fail_after(TIMEOUT), a.subscribe() as events:
                a.set_reachability(Reachability.PUBLIC)
                while mine.listeners:
                    await events.receive()  # the transport reacts to the same event, then closes its listener
            assert not any("p2p-circuit" in str(x) for x in a.advertised_addrs)


async def test_v2_only_verdict_sets_the_host_reachability() -> None:
    server = AutoNATConfig(boot_delay=3600, v1=False, seed=7)
    client = AutoNATConfig(boot_delay=3600, v1=False, confidence=1, seed=8)
    async with pair(client=client, server=server) as (s, c):
        assert V1_PROTOCOL not in s.protocols and DIAL_REQUEST_PROTOCOL in s.protocols
        with trio.fail_after(TIMEOUT):
            await c.service(AutoNAT).probe()
        assert c.reachability is Reachability.PUBLIC
        assert c.service(AutoNAT).reachability is Reachability.UNKNOWN  # (the v1 verdict: never asked)


async def test_request_flood_is_rate_limited_and_bounded() -> None:
    server = AutoNATConfig(boot_delay=3600, v1_peer_limit=3, v2_peer_limit=4, seed=9)
    async with pair(server=server) as (s, c):
        autonat = c.service(AutoNAT)
        results: list[V1Status] = []

        async def ask_once() -> None:
            results.append((await autonat.ask_v1(s.peer_id)).status)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for _ in range(40):
                    nursery.start_soon(ask_once)
        served = s.service(AutoNAT)
        # one v1 request of a peer at a time: the concurrent rest refused at once, nothing queued
        assert results.count(V1Status.OK) == 1
        assert results.count(V1Status.E_DIAL_REFUSED) == 39
        assert served.stats["rate_limited"] == 39 and served.stats["served"] == 1
        assert not served._inflight
        # three a minute: two more, then "too many requests"
        with trio.fail_after(20):
            later = [await autonat.ask_v1(s.peer_id) for _ in range(4)]
        assert [r.status for r in later] == [V1Status.OK, V1Status.OK, V1Status.E_DIAL_REFUSED, V1Status.E_DIAL_REFUSED]
        assert "too many" in later[-1].text
        # v2: four served, the rest rejected
        outcomes = []
        with trio.fail_after(20):
            for _ in range(8):
                outcomes.append(await autonat.ask_v2(s.peer_id, c.advertised_addrs))
        assert outcomes.count((c.advertised_addrs[0], True)) == 4
        assert outcomes.count((None, None)) == 4  # E_REQUEST_REJECTED
        assert c.connections(s.peer_id)  # the flood cost the requester its answers, not its connection


async def test_host_cancelled_mid_probe_exits_promptly() -> None:
    # the client's probe waits on a server whose dial-back hangs (a silent listener at the client's address)
    hung = trio.Event()

    async def silent(stream: trio.SocketStream) -> None:
        hung.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as outer:
        listeners = await outer.start(functools.partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        server = AutoNATConfig(boot_delay=3600, dial_timeout=60, request_timeout=60, seed=10)
        client = AutoNATConfig(boot_delay=3600, request_timeout=60, seed=11)
        async with open_host(_config(autonat=server)) as s:
            with trio.CancelScope() as scope:
                async with open_host(_config(autonat=client)) as c:
                    await c.connect(s.addrs[0])
                    autonat = c.service(AutoNAT)
                    c.spawn(autonat.ask_v1, s.peer_id, [Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")])
                    with trio.fail_after(TIMEOUT):
                        await hung.wait()
                    t0 = trio.current_time()
                    scope.cancel()
            assert trio.current_time() - t0 < 5.0
            assert c.is_closed
            assert not s.is_closed and s.service_state(AutoNAT).running  # the server lives on
        outer.cancel_scope.cancel()


async def test_hostile_servers_get_typed_errors_and_no_verdict() -> None:
    from mycel.protocols.autonat.messages import (
        encode_v2_data_request,
        encode_v2_dial_back,
        encode_v2_response,
    )
    from mycel.protocols.autonat.messages import DIAL_BACK_PROTOCOL, DialStatus

    quiet = AutoNATConfig(boot_delay=3600, server=False, seed=12)
    async with pair(server=quiet) as (s, c):
        autonat = c.service(AutoNAT)

        async def garbage_v1(stream: MuxedStream) -> None:
            await read_message(stream, 4096)
            await send_message(stream, b"\x08\x01\x1a\x05hello")  # DIAL_RESPONSE without a status

        async def greedy_v2(stream: MuxedStream) -> None:
            await read_message(stream, 8192)
            await send_message(stream, encode_v2_data_request(0, 10_000_000))  # 10 MB to pay
            await stream.receive_some(1)

        async def liar_v2(stream: MuxedStream) -> None:
            # claims a successful dial-back, sent with a nonce that is not the request's
            await read_message(stream, 8192)
            back = await s.new_stream(c.peer_id, [DIAL_BACK_PROTOCOL])
            await send_message(back, encode_v2_dial_back(12345))
            with contextlib.suppress(MycelError, trio.BrokenResourceError):
                await back.receive_some(10)
            await send_message(stream, encode_v2_response(V2Status.OK, 0, DialStatus.OK))

        s.set_stream_handler(V1_PROTOCOL, garbage_v1)
        s.set_stream_handler(DIAL_REQUEST_PROTOCOL, greedy_v2)
        with trio.fail_after(TIMEOUT):
            with pytest.raises(AutoNATMessageError):
                await autonat.ask_v1(s.peer_id)
            with pytest.raises(AutoNATMessageError, match="10000000"):
                await autonat.ask_v2(s.peer_id, c.advertised_addrs)
            assert autonat.stats["bad_responses"] == 1
            s.set_stream_handler(DIAL_REQUEST_PROTOCOL, liar_v2)
            addr, reachable = await autonat.ask_v2(s.peer_id, c.advertised_addrs)
        assert addr == c.advertised_addrs[0] and reachable is None  # discarded: the nonce never came back
        with trio.fail_after(TIMEOUT):
            await autonat.probe()  # nothing counts as an observation of ours
        assert c.reachability is Reachability.UNKNOWN
        assert c.connections(s.peer_id)


async def test_dial_data_dribbled_in_tiny_chunks_is_refused() -> None:
    from mycel.protocols.autonat.messages import V2DataRequest, encode_v2_data, encode_v2_request

    async with open_host(_config(["/ip4/127.0.0.2/tcp/0"])) as third, pair() as (s, c):
        with trio.fail_after(TIMEOUT):
            stream = await c.new_stream(s.peer_id, DIAL_REQUEST_PROTOCOL)
            await send_message(stream, encode_v2_request(third.advertised_addrs, 1))
            ask = decode_v2_message(await read_message(stream, 8192))
            assert isinstance(ask, V2DataRequest) and 30_000 <= ask.num_bytes <= 100_000
            with pytest.raises((MycelError, trio.BrokenResourceError)):
                for _ in range(ask.num_bytes):  # one byte a message: cut off long before the end
                    await send_message(stream, encode_v2_data(b"x"))
                await read_message(stream, 8192)
        assert s.service(AutoNAT).stats["dial_data_bytes"] == 0
        assert s.service(AutoNAT).stats["bad_requests"] == 1
        assert not third.connections()


class _Follower(Service):
    """Records the reachability it is told of; its peer_found hook raises (to make the host restart it)."""

    restart_on_failure = True
    restart_backoff = 0.0

    def __init__(self) -> None:
        self.told: list[Reachability] = []

    def reachability_changed(self, host: ServiceHost, reachability: Reachability, addrs: tuple[Multiaddr, ...]) -> None:
        self.told.append(reachability)

    def peer_found(self, host: ServiceHost, event: PeerFound) -> None:
        raise RuntimeError("fail on purpose")


async def test_a_restarted_service_is_told_the_current_reachability() -> None:
    async with open_host(_config((), _Follower())) as c:
        c.set_reachability(Reachability.PUBLIC)
        c.set_reachability(Reachability.PUBLIC)  # no change: no second call
        assert c.service(_Follower).told == [Reachability.PUBLIC]
        c.peer_found(Identity.generate().peer_id, [], "test")  # its hook raises: the service fails, is started again
        await trio.testing.wait_all_tasks_blocked()
        assert c.service_state(_Follower).failures == 1 and c.service_state(_Follower).running
        assert c.service(_Follower).told == [Reachability.PUBLIC]  # the fresh copy heard it on restart
