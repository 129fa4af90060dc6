"""Hostile identify input is bounded: thousands of protocols or addresses, floods of pushes."""

from __future__ import annotations

import logging

import pytest
import trio
from multiaddr import Multiaddr

from mycel import MuxedStream
from mycel.core.errors import StreamReset
from mycel.core.varint import length_prefixed
from mycel.network.peerstore import MAX_ADDRS_PER_PEER, MAX_PROTOCOLS_PER_PEER
from mycel.protocols.identify import ID_PROTOCOL, MAX_MESSAGE_SIZE, PUSH_BURST, PUSH_PROTOCOL, Identify, identify_pb2
from mycel.protocols.ping import Ping
from mycel.testing.hosts import memory_hosts


def bloated_messages(protocols: int, addrs: int) -> bytes:
    """Identify messages (each under MAX_MESSAGE_SIZE) carrying ``protocols`` protocols and ``addrs``
    listen addresses in 198.18.0.0/15 (never dialed)."""
    protos = [f"/p/{i}" for i in range(protocols)]
    addresses = [Multiaddr(f"/ip4/198.18.{i // 250}.{i % 250}/tcp/4001").to_bytes() for i in range(addrs)]
    out = []
    msg = identify_pb2.Identify()
    for kind, items in (("protocols", protos), ("listenAddrs", addresses)):
        for item in items:
            getattr(msg, kind).append(item)
            if msg.ByteSize() > MAX_MESSAGE_SIZE - 64:
                out.append(length_prefixed(msg.SerializeToString()))
                msg = identify_pb2.Identify()
    out.append(length_prefixed(msg.SerializeToString()))
    assert len(out) <= 10, "must fit identify's 10-message bound to reach the peerstore"
    return b"".join(out)


async def test_a_peer_announcing_thousands_of_protocols_and_addresses_is_bounded() -> None:
    payload = bloated_messages(protocols=4000, addrs=3000)

    async def evil_identify(stream: MuxedStream) -> None:
        await stream.send_all(payload)
        await stream.send_eof()

    async with memory_hosts(3) as (a, b, c):
        b.set_stream_handler(ID_PROTOCOL, evil_identify)
        conn = await a.connect(b.addrs[0])
        await a.service(Identify).identify_connection(conn)
        assert len(a.peerstore.protocols(b.peer_id)) == MAX_PROTOCOLS_PER_PEER
        assert len(a.peerstore.addrs(b.peer_id)) <= MAX_ADDRS_PER_PEER
        assert a.peerstore.stats().dropped_protocols > 0
        # the same through identify push
        stream = await b.new_stream(a.peer_id, PUSH_PROTOCOL)
        await stream.send_all(payload)
        await stream.send_eof()
        await stream.aclose()
        # a keeps serving everyone
        await c.connect(a.addrs[0])
        assert await c.service(Ping).ping(a.peer_id)
        assert len(a.peerstore.protocols(b.peer_id)) <= MAX_PROTOCOLS_PER_PEER


async def test_a_flood_of_identify_pushes_is_cut_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mycel.protocols.identify")
    # b's own identify service must not push while the test floods (its automatic push after its listeners
    # bound would be one more push from b, refused or not, that the loop below does not count)
    async with memory_hosts(3, services=lambda: [Identify(push=False), Ping()]) as (a, b, c):
        await b.connect(a.addrs[0])
        await b.service(Identify).wait_identified(a.peer_id)
        message = length_prefixed(b.service(Identify).build_message(b, None).SerializeToString())
        refused = 0
        for _ in range(4 * PUSH_BURST):
            try:
                stream = await b.new_stream(a.peer_id, PUSH_PROTOCOL)
                await stream.send_all(message)
                await stream.send_eof()
                with trio.fail_after(5):
                    await stream.receive_some(1)  # b: EOF when handled, StreamReset when refused
                await stream.aclose()
            except StreamReset:
                refused += 1
        assert refused > 0
        assert a.service(Identify).pushes_rejected == refused
        assert any("identify push from" in r.getMessage() and str(b.peer_id) in r.getMessage() for r in caplog.records)
        # the flood closed only the flooding streams: everyone is still served
        assert await b.service(Ping).ping(a.peer_id)
        await c.connect(a.addrs[0])
        assert await c.service(Ping).ping(a.peer_id)
