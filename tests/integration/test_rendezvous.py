"""Rendezvous between mycel hosts on the memory transport: a point and its clients (register, discover with
cookies, unregister, refresh and expiry on trio's MockClock), hostile input at the point, and cancellation
mid-request."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import trio
import trio.testing
from multiaddr import Multiaddr

from mycel import PeerFound
from mycel.core.abc import MuxedStream
from mycel.core.errors import MycelError, StreamReset
from mycel.core.framing import receive_message, send_message
from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.core.record import PEER_RECORD_DOMAIN, PEER_RECORD_PAYLOAD_TYPE, Envelope, PeerRecord, seal_peer_record
from mycel.core.varint import encode_uvarint
from mycel.host import Host, open_host
from mycel.network.peerstore import AddrSource
from mycel.protocols.identify import Identify
from mycel.protocols.ping import Ping
from mycel.protocols.rendezvous import PROTOCOL, Limits, Refused, Rendezvous, Status
from mycel.protocols.rendezvous import rendezvous_pb2 as pb
from mycel.protocols.rendezvous.core import legacy_peer_info
from mycel.testing.hosts import memory_config
from mycel.transports.memory import MemoryNetwork

HOUR = 3600.0
Message = pb.Message


@contextlib.asynccontextmanager
async def rendezvous_hosts(
    clients: int, *, limits: Limits | None = None, connect: bool = True, **host_kwargs: Any
) -> AsyncIterator[tuple[Host, list[Host]]]:
    """A rendezvous point and ``clients`` client hosts, each connected to the point."""
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        point = await stack.enter_async_context(open_host(memory_config(
            network, services=[Identify(), Ping(), Rendezvous(server=True, limits=limits)])))  # fmt: skip
        others = []
        for _ in range(clients):
            config = memory_config(network, services=[Identify(), Ping(), Rendezvous()], **host_kwargs)
            host = await stack.enter_async_context(open_host(config))
            if connect:
                await host.connect(point.addrs[0])
            others.append(host)
        yield point, others


def rv(host: Host) -> Rendezvous:
    return host.service(Rendezvous)


async def test_register_then_discover_reports_and_connects() -> None:
    async with rendezvous_hosts(2) as (point, (a, b)):
        granted = await rv(a).register("app", server=point.peer_id)
        assert granted == 2 * HOUR
        assert rv(a).registered() == [(point.peer_id, "app")]
        with b.subscribe() as events:
            peers, cookie = await rv(b).discover("app", server=point.peer_id)
            assert [p.peer for p in peers] == [a.peer_id]
            assert peers[0].signed and set(peers[0].addrs) == set(a.advertised_addrs)
            assert 2 * HOUR - 5 <= peers[0].ttl <= 2 * HOUR
            assert cookie
            with trio.fail_after(10):
                found = await events.receive()
                while not isinstance(found, PeerFound):
                    found = await events.receive()
                while not b.connections(a.peer_id):  # discovery_connect: the host dials what it found
                    await events.receive()
        assert found.peer == a.peer_id and found.source == "rendezvous"
        entries = b.peerstore.addr_entries(a.peer_id)
        assert any(AddrSource.DISCOVERY in e.sources for e in entries)
        assert b.peerstore.peer_record(a.peer_id) is not None  # the signed record was kept
        # other namespaces are separate; an empty namespace asks for all
        assert (await rv(b).discover("other", server=point.peer_id)).peers == []
        await rv(b).register("other", server=point.peer_id)
        everything = await rv(a).discover(server=point.peer_id)
        assert sorted((p.namespace, str(p.peer)) for p in everything.peers) == sorted(
            [("app", str(a.peer_id)), ("other", str(b.peer_id))]
        )


async def test_cookies_page_and_poll() -> None:
    async with rendezvous_hosts(6) as (point, hosts):
        asker, registrants = hosts[0], hosts[1:5]
        for h in registrants:
            await rv(h).register("app", server=point.peer_id)
        seen: list[PeerId] = []
        cookie = None
        for _ in range(5):
            page = await rv(asker).discover("app", server=point.peer_id, limit=3, cookie=cookie)
            cookie = page.cookie
            if not page.peers:
                break
            assert len(page.peers) <= 3
            seen.extend(p.peer for p in page.peers)
        assert seen == [h.peer_id for h in registrants]
        await rv(hosts[5]).register("app", server=point.peer_id)
        newer = await rv(asker).discover("app", server=point.peer_id, cookie=cookie)
        assert [p.peer for p in newer.peers] == [hosts[5].peer_id]
        with pytest.raises(Refused) as info:
            await rv(asker).discover("elsewhere", server=point.peer_id, cookie=cookie)
        assert info.value.status == Status.E_INVALID_COOKIE


async def test_unregister_and_refusals() -> None:
    async with rendezvous_hosts(2) as (point, (a, b)):
        await rv(a).register("app", server=point.peer_id)
        await rv(a).unregister("app", server=point.peer_id)
        assert rv(a).registered() == []
        with trio.fail_after(10):
            while len(rv(point).store):  # UNREGISTER has no response: wait for the point to act on it
                await trio.testing.wait_all_tasks_blocked()
        assert (await rv(b).discover("app", server=point.peer_id)).peers == []
        await rv(a).unregister("never-registered", server=point.peer_id)  # a no-op
        with pytest.raises(Refused) as info:
            await rv(a).register("app", server=point.peer_id, ttl=73 * HOUR)
        assert info.value.status == Status.E_INVALID_TTL
        with pytest.raises(Refused) as info:
            await rv(a).register("x" * 256, server=point.peer_id)
        assert info.value.status == Status.E_INVALID_NAMESPACE
        with pytest.raises(ValueError):
            await rv(a).register("app", server=point.peer_id, ttl=0)
        assert rv(a).registered() == []  # nothing refused is refreshed


async def test_refresh_keeps_a_registration_and_expiry_drops_it(autojump_clock: trio.testing.MockClock) -> None:
    async with rendezvous_hosts(2) as (point, (a, b)):
        await rv(a).register("app", server=point.peer_id, ttl=2 * HOUR)
        await rv(b).register("app", server=point.peer_id, ttl=2 * HOUR)
        start = trio.current_time()
        # b stops refreshing (as if it went away without unregistering): its entry at the point stays
        rv(b)._held.clear()
        await trio.sleep(5 * HOUR)
        assert rv(a).stats["refreshes"] >= 2 and rv(a).stats["refresh_failures"] == 0
        peers = (await rv(b).discover("app", server=point.peer_id)).peers
        assert [p.peer for p in peers] == [a.peer_id]  # a refreshed; b's ran out after 2 h
        reg = rv(point).store.registrations("app")[0]
        assert reg.expires - trio.current_time() > 2 * HOUR / 8 - 1  # refreshed before 7/8 of the TTL
        assert trio.current_time() - start >= 5 * HOUR


async def test_failed_refresh_retries_then_recovers(autojump_clock: trio.testing.MockClock) -> None:
    async with rendezvous_hosts(1) as (point, (a,)):
        await rv(a).register("app", server=point.peer_id)
        point.remove_stream_handler(PROTOCOL)  # the point stops serving for a while
        await trio.sleep(2 * HOUR)
        assert rv(a).stats["refresh_failures"] >= 1
        point.set_stream_handler(PROTOCOL, rv(point)._serve)
        await trio.sleep(HOUR)
        assert rv(a).stats["refreshes"] >= 1
        assert [r.peer for r in rv(point).store.registrations("app")] == [a.peer_id]


async def _closed(stream: MuxedStream) -> None:
    """Read until the point closes or resets the stream."""
    with trio.fail_after(10):
        try:
            while await stream.receive_some(4096):
                pass
        except (StreamReset, MycelError, trio.BrokenResourceError):
            pass


async def test_hostile_input_closes_only_that_stream(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mycel.protocols.rendezvous")
    async with rendezvous_hosts(1) as (point, (a,)):
        bad = [
            encode_uvarint(10 * 1024 * 1024),  # an oversized length prefix
            encode_uvarint(5) + b"\xff\xff\xff\xff\xff",  # garbage protobuf
            encode_uvarint(3) + b"\x08\x01\x1a",  # a truncated field
        ]
        for blob in bad:
            stream = await a.new_stream(point.peer_id, PROTOCOL)
            await stream.send_all(blob)
            await _closed(stream)
        # a message type a client never sends, and a REGISTER without its body
        for msg in (Message(type=Message.REGISTER_RESPONSE), Message(type=Message.REGISTER), Message(type=cast(Any, 7))):
            stream = await a.new_stream(point.peer_id, PROTOCOL)
            await send_message(stream, msg.SerializeToString())
            await _closed(stream)
        assert rv(point).stats["bad_requests"] == 6
        assert str(a.peer_id) in caplog.text and "rendezvous stream from" in caplog.text
        assert "too large" in caplog.text.lower() or "exceeds" in caplog.text.lower()
        # the connection and the point are fine: a real request on the same connection works
        assert await rv(a).register("app", server=point.peer_id) == 2 * HOUR
        assert len(a.connections(point.peer_id)) == 1


async def test_registering_another_peer_is_refused() -> None:
    async with rendezvous_hosts(2) as (point, (a, b)):
        victim = b.peer_id
        stolen = seal_peer_record(b.identity.private_key, b.advertised_addrs, 1).to_bytes()  # b's valid record
        forged = seal_peer_record(Identity.generate().private_key, a.advertised_addrs, 1).to_bytes()
        stream = await a.new_stream(point.peer_id, PROTOCOL)
        for record, status in ((stolen, Status.E_NOT_AUTHORIZED), (forged, Status.E_NOT_AUTHORIZED),
                               (b"\x0a\x02\x08\x01", Status.E_INVALID_SIGNED_PEER_RECORD)):  # fmt: skip
            request = Message(type=Message.REGISTER, register=Message.Register(ns="app", signedPeerRecord=record))
            await send_message(stream, request.SerializeToString())
            data = await receive_message(stream, 4096)
            assert data is not None
            answer = Message.FromString(data)
            assert answer.type == Message.REGISTER_RESPONSE and answer.registerResponse.status == status
        await stream.aclose()
        assert len(rv(point).store) == 0 and rv(point).stats["refused"] == 3
        assert victim not in {r.peer for r in rv(point).store.registrations()}


async def test_a_lying_point_gains_nothing() -> None:
    """A point that hands out a forged registration (b's id, an attacker's addresses) is not believed."""
    network = MemoryNetwork()
    b = Identity.generate()
    attacker = Identity.generate()
    evil = [Multiaddr("/ip4/10.6.6.6/tcp/1")]
    # b's id with the attacker's address, signed by the attacker; and a valid record with no address
    forged = Envelope.seal(attacker.private_key, PEER_RECORD_DOMAIN, PEER_RECORD_PAYLOAD_TYPE,
                           PeerRecord(b.peer_id, 1, tuple(evil)).to_bytes())  # fmt: skip
    empty = seal_peer_record(attacker.private_key, [], 1)

    async def liar(stream: MuxedStream) -> None:
        await receive_message(stream, 4096)
        regs = [Message.Register(ns="app", signedPeerRecord=b"\x00garbage", ttl=60),
                Message.Register(ns="app", signedPeerRecord=forged.to_bytes(), ttl=60),
                Message.Register(ns="app", signedPeerRecord=empty.to_bytes(), ttl=60),
                Message.Register(ns="elsewhere", signedPeerRecord=b"", ttl=60)]  # fmt: skip
        answer = Message(type=Message.DISCOVER_RESPONSE, discoverResponse=Message.DiscoverResponse(registrations=regs))
        await send_message(stream, answer.SerializeToString())

    async with open_host(memory_config(network)) as point, open_host(
        memory_config(network, services=[Identify(), Rendezvous()])
    ) as a:
        point.set_stream_handler(PROTOCOL, liar)
        await a.connect(point.addrs[0])
        found = await rv(a).discover("app", server=point.peer_id)
        assert found.peers == [] and rv(a).stats["dropped_registrations"] == 4
        assert not a.peerstore.addrs(b.peer_id) and not a.peerstore.addrs(attacker.peer_id)


async def test_cancel_mid_request_exits_promptly() -> None:
    """A client stuck in a discover (the point never answers) and a point with a half-read request are
    both cancelled with their hosts, promptly."""
    network = MemoryNetwork()
    entered = trio.Event()

    async def silent(stream: MuxedStream) -> None:
        entered.set()
        await trio.sleep_forever()

    start = trio.current_time()
    with trio.CancelScope() as scope:
        async with open_host(memory_config(network, services=[Identify(), Rendezvous(server=True)])) as point, \
                open_host(memory_config(network, services=[Identify(), Rendezvous()])) as a, \
                open_host(memory_config(network)) as mute:  # fmt: skip
            mute.set_stream_handler(PROTOCOL, silent)
            await a.connect(point.addrs[0])
            await a.connect(mute.addrs[0])
            await rv(a).register("app", server=point.peer_id)
            half = await a.new_stream(point.peer_id, PROTOCOL)
            await half.send_all(encode_uvarint(100) + b"\x08")  # the point waits for the rest
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: rv(a).discover("app", server=mute.peer_id))
                await entered.wait()
                await trio.testing.wait_all_tasks_blocked()
                assert rv(a).stats["requests_sent"] == 2  # the register and the stuck discover
                scope.cancel()
    assert scope.cancelled_caught
    assert trio.current_time() - start < 5.0


async def test_new_listen_address_is_registered_again() -> None:
    async with rendezvous_hosts(1) as (point, (a,)):
        await rv(a).register("app", server=point.peer_id)
        before = set(rv(point).store.registrations("app")[0].addrs)
        new = await a.listen("/memory/0")
        with trio.fail_after(10):
            while rv(a).stats["refreshes"] < 1:  # the hook woke the refresher: it re-registers now
                await trio.testing.wait_all_tasks_blocked()
        after = set(rv(point).store.registrations("app")[0].addrs)
        assert set(new) <= after and before < after


async def test_unregister_during_a_refresh_wins(autojump_clock: trio.testing.MockClock) -> None:
    async with rendezvous_hosts(1) as (point, (a,)):
        await rv(a).register("app", server=point.peer_id)
        gate = trio.Event()
        arrived = trio.Event()

        async def gated(stream: MuxedStream) -> None:
            arrived.set()
            await gate.wait()
            await rv(point)._serve(stream)

        point.set_stream_handler(PROTOCOL, gated)
        await arrived.wait()  # the refresh (at 7/8 of 2 h) is held at the point
        assert rv(a).stats["refreshes"] == 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: rv(a).unregister("app", server=point.peer_id))
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
        with trio.fail_after(60):
            while rv(a).stats["refreshes"] < 1:
                await trio.testing.wait_all_tasks_blocked()
        await trio.testing.wait_all_tasks_blocked()  # the point has acted on every message sent
        assert rv(a).registered() == [] and len(rv(point).store) == 0


async def test_compat_point_answers_a_py_agent_in_its_form() -> None:
    """With py_libp2p_compat, a DISCOVER from a peer whose identify agent is py-libp2p gets every
    registration as py's unsigned PeerInfo (py cannot read a signed record); others get the spec's form."""
    network = MemoryNetwork()
    point_services = [Identify(), Rendezvous(server=True, py_libp2p_compat=True)]
    async with open_host(memory_config(network, services=point_services)) as point, open_host(
        memory_config(network, services=[Identify(), Rendezvous()])
    ) as a, open_host(memory_config(network, agent_version="py-libp2p/0.8.1")) as py_like:
        await a.connect(point.addrs[0])
        await rv(a).register("app", server=point.peer_id)
        signed = rv(point).store.registrations("app")[0].record
        await py_like.connect(point.addrs[0])  # and ask at once: the point waits for identify
        for asker, expected in ((py_like, legacy_peer_info(a.peer_id, a.advertised_addrs)), (a, signed)):
            stream = await asker.new_stream(point.peer_id, PROTOCOL)
            request = Message(type=Message.DISCOVER, discover=Message.Discover(ns="app"))
            await send_message(stream, request.SerializeToString())
            data = await receive_message(stream, 1 << 20)
            await stream.aclose()
            assert data is not None
            answer = Message.FromString(data).discoverResponse
            assert [r.signedPeerRecord for r in answer.registrations] == [expected]
