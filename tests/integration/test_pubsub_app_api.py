"""What applications get from the gossipsub service beyond publish/subscribe: who joins and leaves a
topic (``PeerJoinedTopic`` / ``PeerLeftTopic`` host events), ``flush()`` before closing, and a newcomer
grafted into the mesh at once (a message sent right after it joined reaches it)."""

from __future__ import annotations

import pytest
import trio

from mycel.host import EventSubscription, Host
from mycel.protocols.identify import Identify
from mycel.protocols.ping import Ping
from mycel.protocols.pubsub import Gossipsub, PeerJoinedTopic, PeerLeftTopic, PublishError, ValidationResult
from mycel.testing.hosts import memory_hosts

WAIT = 10


def _services() -> list[Identify | Ping | Gossipsub]:
    return [Identify(), Ping(), Gossipsub()]


async def _membership(events: EventSubscription, count: int) -> list[PeerJoinedTopic | PeerLeftTopic]:
    """The next ``count`` topic membership events."""
    out: list[PeerJoinedTopic | PeerLeftTopic] = []
    with trio.fail_after(WAIT):
        async for event in events:
            if isinstance(event, PeerJoinedTopic | PeerLeftTopic):
                out.append(event)
                if len(out) == count:
                    break
    return out


async def _connect(a: Host, b: Host) -> None:
    await a.connect(b.peer_id, b.addrs)


async def test_topic_membership_events() -> None:
    async with memory_hosts(2, services=_services) as (h1, h2):
        ps2 = h2.service(Gossipsub)
        with h1.subscribe() as events:
            async with ps2.subscribe("a"):
                ps2.join("b")
                await _connect(h1, h2)
                joined = await _membership(events, 2)
                assert sorted(joined, key=lambda e: e.topic) == [PeerJoinedTopic(h2.peer_id, "a"), PeerJoinedTopic(h2.peer_id, "b")]
                ps2.leave("b")  # an unsubscription
                assert await _membership(events, 1) == [PeerLeftTopic(h2.peer_id, "b")]
                await h1.disconnect(h2.peer_id)  # a peer that goes away leaves its topics
                assert await _membership(events, 1) == [PeerLeftTopic(h2.peer_id, "a")]


async def test_flush_waits_until_queued_messages_are_written() -> None:
    async with memory_hosts(2, services=_services) as (h1, h2):
        ps1, ps2 = h1.service(Gossipsub), h2.service(Gossipsub)
        async with ps2.subscribe("a") as sub:
            await _connect(h1, h2)
            await ps1.wait_ready("a", 1, timeout=WAIT)
            reports = [await ps1.publish("a", bytes([i]) * 200_000) for i in range(4)]
            assert all(r.peers == (h2.peer_id,) for r in reports)
            await ps1.flush(timeout=WAIT)
            queue = ps1._links[h2.peer_id].queue
            assert queue.written == queue.queued and not queue.messages
            with trio.fail_after(WAIT):
                assert [(await sub.receive()).data[0] for _ in range(4)] == [0, 1, 2, 3]
        await ps1.flush(timeout=WAIT)  # nothing queued: returns at once


async def test_a_newcomer_gets_what_is_forwarded_right_after_it_joined() -> None:
    """hub's mesh grafts a peer as soon as it subscribes (not at the next heartbeat, up to a second
    later): a message relayed through hub right then reaches it."""
    async with memory_hosts(3, services=_services) as (hub, early, late):
        ps = {h: h.service(Gossipsub) for h in (hub, early, late)}
        async with ps[hub].subscribe("t"), ps[early].subscribe("t"), ps[late].subscribe("t") as got:
            with hub.subscribe() as events:
                await _connect(early, hub)
                await _connect(late, hub)
                await _membership(events, 2)  # both are in the topic for hub
            assert ps[hub].mesh("t") == {early.peer_id, late.peer_id}
            await ps[early].wait_ready("t", 1, timeout=WAIT)
            await ps[early].publish("t", b"relayed")
            with trio.fail_after(WAIT):
                assert (await got.receive()).data == b"relayed"


async def test_publish_errors_say_why() -> None:
    async with memory_hosts(1, services=lambda: [Identify(), Gossipsub(max_message_size=100)]) as (h1,):
        ps = h1.service(Gossipsub)
        with pytest.raises(PublishError) as err:
            await ps.publish("a", b"x")
        assert err.value.reason == "no_peers"
        with pytest.raises(PublishError) as err:
            await ps.publish("a", b"x" * 101)
        assert err.value.reason == "too_large"
        ps.add_validator("a", lambda msg: ValidationResult.IGNORE)
        with pytest.raises(PublishError) as err:
            await ps.publish("a", b"x")
        assert err.value.reason == "rejected"


async def test_control_queue_overflow_drops_the_peer_from_pubsub() -> None:
    async with memory_hosts(2, services=lambda: [Identify(), Ping(), Gossipsub(peer_queue_size=1)]) as (h1, h2):
        ps1, ps2 = h1.service(Gossipsub), h2.service(Gossipsub)
        with h1.subscribe() as events:
            ps2.join("x")
            await _connect(h1, h2)
            assert await _membership(events, 1) == [PeerJoinedTopic(h2.peer_id, "x")]
            for topic in ("t1", "t2", "t3"):  # three subscription RPCs at once: the one-slot lane overflows
                ps1.join(topic)
            assert await _membership(events, 1) == [PeerLeftTopic(h2.peer_id, "x")]
            assert h2.peer_id not in ps1.router.peers
            assert ps1.stats()["dropped_to_peers"] >= 1
