"""Circuit relay v2 against hostile peers: malformed, oversized and unexpected hop/stop messages, RESERVE
and CONNECT over a relayed connection, reservation floods (per IP, in all), hop stream floods from one
peer, a relay whose voucher is signed by the wrong key. Each gets its status or typed error, closes only
its own stream, and leaves the relay serving others."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from mycel.core.abc import MuxedStream
from mycel.core.errors import DialError, StreamReset
from mycel.core.framing import receive_message, send_message
from mycel.core.identity import Identity
from mycel.core.varint import encode_uvarint
from mycel.host import Host, HostConfig, open_host
from mycel.muxers.yamux import Yamux
from mycel.protocols.identify import Identify
from mycel.protocols.relay import (
    HOP_PROTOCOL,
    STOP_PROTOCOL,
    CircuitRelay,
    InvalidVoucher,
    RelayRefused,
    RelayResources,
    RelayTransport,
    Status,
    seal_voucher,
)
from mycel.protocols.relay.messages import decode_hop, decode_stop, read_hop, write_message
from mycel.protocols.relay.pb import circuit_pb2
from mycel.security.noise import Noise
from mycel.service import Service, ServiceHost
from mycel.transports.memory import MemoryNetwork, MemoryTransport
from mycel.transports.tcp import TCP

HOP = circuit_pb2.HopMessage
STOP = circuit_pb2.StopMessage


def _cfg(network: MemoryNetwork | None, *services: Service, relay_listen: str | None = None) -> HostConfig:
    base = MemoryTransport(network) if network is not None else TCP()
    listen = ["/memory/0" if network is not None else "/ip4/127.0.0.1/tcp/0"]
    if relay_listen:
        listen.append(relay_listen)
    return HostConfig(
        transports=[base, RelayTransport()],
        security=[Noise()],
        muxers=[Yamux()],
        services=[Identify(), *services],
        listen=listen,
    )


@contextlib.asynccontextmanager
async def relay_and_client(resources: RelayResources | None = None) -> AsyncIterator[tuple[Host, Host]]:
    network = MemoryNetwork()
    async with open_host(_cfg(network, CircuitRelay(resources))) as relay, open_host(_cfg(network)) as client:
        await client.connect(relay.addrs[0])
        yield relay, client


async def _hop_exchange(client: Host, relay: Host, raw: bytes) -> circuit_pb2.HopMessage | None:
    stream = await client.new_stream(relay.peer_id, HOP_PROTOCOL)
    try:
        await stream.send_all(raw)
        await stream.send_eof()
        body = await receive_message(stream, 4096)
        return None if body is None else decode_hop(body)
    finally:
        await stream.aclose()


@pytest.mark.parametrize(
    "raw",
    [
        encode_uvarint(3) + b"\xff\xff\xff",  # not a protobuf
        encode_uvarint(0),  # no type
        encode_uvarint(2) + b"\x08\x01",  # CONNECT without a peer
        encode_uvarint(6) + b"\x08\x01\x12\x02\x0a\x00",  # CONNECT to an empty peer id
    ],
)
async def test_malformed_hop_gets_malformed_message(raw: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "mycel.protocols.relay")
    async with relay_and_client() as (relay, client):
        with trio.fail_after(10):
            reply = await _hop_exchange(client, relay, raw)
        assert reply is not None and reply.status == Status.MALFORMED_MESSAGE
        assert any("malformed hop message from" in r.getMessage() and str(client.peer_id) in r.getMessage() for r in caplog.records)
        # the relay keeps serving the same peer
        with trio.fail_after(10):
            ok = await _hop_exchange(client, relay, _framed(HOP(type=HOP.RESERVE)))
        assert ok is not None and ok.status == Status.OK


def _framed(msg: circuit_pb2.HopMessage | circuit_pb2.StopMessage) -> bytes:
    body = msg.SerializeToString()
    return encode_uvarint(len(body)) + body


async def test_oversized_hop_is_refused_without_reading_it() -> None:
    async with relay_and_client() as (relay, client):
        with trio.fail_after(10):
            reply = await _hop_exchange(client, relay, encode_uvarint(1 << 20) + b"\x00" * 1024)
        assert reply is not None and reply.status == Status.MALFORMED_MESSAGE


async def test_status_as_a_request_is_unexpected() -> None:
    async with relay_and_client() as (relay, client):
        with trio.fail_after(10):
            reply = await _hop_exchange(client, relay, _framed(HOP(type=HOP.STATUS, status=circuit_pb2.OK)))
        assert reply is not None and reply.status == Status.UNEXPECTED_MESSAGE


async def test_reservation_flood_per_ip_and_total_on_tcp() -> None:
    """Five hosts on 127.0.0.1 reserve on a relay allowing 3 per IP: two are refused, counted, and the
    relay still relays for those that hold one."""
    resources = RelayResources(max_reservations_per_ip=3)
    async with open_host(_cfg(None, CircuitRelay(resources))) as relay:
        async with contextlib.AsyncExitStack() as stack:
            hosts = [await stack.enter_async_context(open_host(_cfg(None))) for _ in range(5)]
            statuses = []
            with trio.fail_after(20):
                for h in hosts:
                    await h.connect(relay.addrs[0])
                    reply = await _hop_exchange(h, relay, _framed(HOP(type=HOP.RESERVE)))
                    assert reply is not None
                    statuses.append(Status(reply.status))
            assert statuses.count(Status.OK) == 3
            assert statuses.count(Status.RESERVATION_REFUSED) == 2
            core = relay.service(CircuitRelay).core
            assert core.reservation_count == 3 and core.refused[Status.RESERVATION_REFUSED] == 2


async def test_hop_stream_flood_from_one_peer_is_bounded() -> None:
    """A peer opening many hop streams that never send anything holds at most max_hop_streams_per_peer;
    the rest are reset at once."""
    resources = RelayResources(max_hop_streams_per_peer=2, stream_timeout=30)
    async with relay_and_client(resources) as (relay, client):
        held, reset = 0, 0
        with trio.fail_after(10):
            for _ in range(6):
                try:
                    stream = await client.new_stream(relay.peer_id, HOP_PROTOCOL, lazy=False)
                    with trio.move_on_after(0.3):  # a held stream gets no answer: it waits for a message
                        await stream.receive_some(10)
                    held += 1
                except StreamReset:
                    reset += 1
        assert (held, reset) == (2, 4)


async def test_reserve_and_connect_over_a_relayed_connection_are_denied() -> None:
    """A peer reached only through a relay cannot reserve or CONNECT on the far end over that circuit
    (a mycel relay reached through another relay)."""
    network = MemoryNetwork()
    async with open_host(_cfg(network, CircuitRelay())) as r1:
        relay_addr = f"{r1.addrs[0]}/p2p-circuit"
        # r2 is itself a relay, reachable only through r1
        async with open_host(_cfg(network, CircuitRelay(), relay_listen=relay_addr)) as r2:
            r2_transport = next(t for t in r2.transports if isinstance(t, RelayTransport))
            with trio.fail_after(10):
                await r2_transport.wait_reserved()
            async with open_host(_cfg(network)) as client:
                with trio.fail_after(10):
                    conn = await client.connect(f"{relay_addr}/p2p/{r2.peer_id}")
                    assert conn.limited
                    stream = await client.new_stream(r2.peer_id, HOP_PROTOCOL, allow_limited=True)
                    await write_message(stream, HOP(type=HOP.RESERVE))
                    reply = await read_hop(stream)
                assert reply.status == Status.PERMISSION_DENIED
                assert r2.service(CircuitRelay).core.reservation_count == 0


class _ForgingRelay(Service):
    """A 'relay' that grants reservations with a voucher signed by another key."""

    def __init__(self) -> None:
        self.forger = Identity.generate()

    def handlers(self) -> dict[str, object]:  # type: ignore[override]
        return {HOP_PROTOCOL: self._hop}

    async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._host = host
        task_status.started()

    async def _hop(self, stream: MuxedStream) -> None:
        await read_hop(stream)
        reply = HOP(type=HOP.STATUS, status=circuit_pb2.OK)
        reply.reservation.expire = 4_000_000_000
        reply.reservation.voucher = seal_voucher(
            self.forger.private_key, self._host.peer_id, stream.connection.remote_peer, 4_000_000_000
        )
        await write_message(stream, reply)


async def test_voucher_signed_by_the_wrong_key_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    network = MemoryNetwork()
    async with open_host(_cfg(network, _ForgingRelay())) as fake:
        async with open_host(_cfg(network)) as client:
            transport = next(t for t in client.transports if isinstance(t, RelayTransport))
            with trio.fail_after(10), pytest.raises(InvalidVoucher, match="another key"):
                await transport.reserve(fake.peer_id, fake.addrs[0])
            assert not transport.reservations()


async def test_connect_to_unreserved_peer_is_no_reservation() -> None:
    async with relay_and_client() as (relay, client):
        msg = HOP(type=HOP.CONNECT)
        msg.peer.id = Identity.generate().peer_id.to_bytes()
        with trio.fail_after(10):
            reply = await _hop_exchange(client, relay, _framed(msg))
        assert reply is not None and reply.status == Status.NO_RESERVATION
        # and through the transport: a DialError carrying the relay's refusal
        target = Identity.generate().peer_id
        with trio.fail_after(10), pytest.raises(DialError) as info:
            await client.connect(f"{relay.addrs[0]}/p2p-circuit/p2p/{target}")
        assert "NO_RESERVATION" in str(info.value)


@contextlib.asynccontextmanager
async def client_and_stop_sender() -> AsyncIterator[tuple[Host, Host, RelayTransport, MuxedStream]]:
    """A relay client listening on /p2p-circuit, and a peer that opened a stop stream to it."""
    network = MemoryNetwork()
    async with open_host(_cfg(network, relay_listen="/p2p-circuit")) as client, open_host(_cfg(network)) as evil:
        await evil.connect(client.addrs[0])
        transport = next(t for t in client.transports if isinstance(t, RelayTransport))
        with trio.fail_after(10):
            stream = await evil.new_stream(client.peer_id, STOP_PROTOCOL)
        yield client, evil, transport, stream


@pytest.mark.parametrize(
    "raw, status",
    [
        (encode_uvarint(3) + b"\xff\xff\xff", Status.MALFORMED_MESSAGE),
        (_framed(STOP(type=STOP.STATUS, status=circuit_pb2.OK)), Status.UNEXPECTED_MESSAGE),
    ],
)
async def test_hostile_stop_messages_to_a_client(raw: bytes, status: Status) -> None:
    """A 'relay' sending garbage on the stop protocol gets the status back and the client keeps going."""
    async with client_and_stop_sender() as (client, evil, transport, stream):
        with trio.fail_after(10):
            await stream.send_all(raw)
            body = await receive_message(stream, 4096)
        assert body is not None and decode_stop(body).status == status
        assert transport.refused_stops == 1
        assert not [c for c in client.connections() if c.limited]


async def test_oversized_stop_message_is_refused() -> None:
    async with client_and_stop_sender() as (client, evil, transport, stream):
        with trio.fail_after(10):
            await send_message(stream, b"\x00" * 5000)
            body = await receive_message(stream, 4096)
        assert body is not None and decode_stop(body).status == Status.MALFORMED_MESSAGE


async def test_refused_reservation_is_a_typed_error() -> None:
    resources = RelayResources(max_reservations=1)
    network = MemoryNetwork()
    async with open_host(_cfg(network, CircuitRelay(resources))) as relay:
        async with open_host(_cfg(network)) as one, open_host(_cfg(network)) as two:
            t1 = next(t for t in one.transports if isinstance(t, RelayTransport))
            t2 = next(t for t in two.transports if isinstance(t, RelayTransport))
            with trio.fail_after(10):
                await t1.reserve(relay.peer_id, relay.addrs[0])
                with pytest.raises(RelayRefused) as info:
                    await t2.reserve(relay.peer_id, relay.addrs[0])
            assert info.value.status is Status.RESERVATION_REFUSED


async def test_stop_naming_another_peer_than_the_one_that_authenticates_is_dropped() -> None:
    """A 'relay' names X in its stop CONNECT, then handshakes as itself: the client closes the connection
    and never hands it to the swarm."""
    from multiaddr import Multiaddr

    from mycel.core.abc import Direction
    from mycel.network.upgrader import Upgrader
    from mycel.protocols.relay.transport import RelayedStream

    async with client_and_stop_sender() as (client, evil, transport, stream):
        with trio.fail_after(10):
            request = STOP(type=STOP.CONNECT)
            request.peer.id = Identity.generate().peer_id.to_bytes()  # X, not evil
            await write_message(stream, request)
            body = await receive_message(stream, 4096)
            assert body is not None and decode_stop(body).status == Status.OK
            raw = RelayedStream(stream, Multiaddr("/p2p-circuit"), Multiaddr("/p2p-circuit"), Direction.OUTBOUND)
            conn = await Upgrader(evil.identity, [Noise()], [Yamux()]).upgrade_outbound(raw, client.peer_id)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.run)  # ends once the client closes it
        assert transport.refused_stops == 1
        assert not [c for c in client.connections() if c.limited]


def _mutations(rng: random.Random, count: int) -> list[bytes]:
    """Framed hop messages: valid ones with random bytes flipped, cut or appended, and pure noise."""
    connect = HOP(type=HOP.CONNECT)
    connect.peer.id = Identity.generate().peer_id.to_bytes()
    connect.peer.addrs.append(b"\x04\x7f\x00\x00\x01\x06\x10\x00")
    seeds = [HOP(type=t).SerializeToString() for t in (HOP.RESERVE, HOP.STATUS)] + [connect.SerializeToString()]
    out = []
    for _ in range(count):
        body = bytearray(rng.choice(seeds))
        kind = rng.randrange(4)
        if kind == 0 and body:
            for _ in range(rng.randrange(1, 4)):
                body[rng.randrange(len(body))] = rng.randrange(256)
        elif kind == 1:
            body = body[: rng.randrange(len(body) + 1)]
        elif kind == 2:
            body += rng.randbytes(rng.randrange(1, 32))
        else:
            body = bytearray(rng.randbytes(rng.randrange(0, 64)))
        out.append(encode_uvarint(len(body)) + bytes(body))
    return out


async def test_mutated_hop_messages_get_a_status_and_the_relay_keeps_serving() -> None:
    """300 mutated hop messages (seeded), each on its own stream: every one is answered with a status or
    its stream closed; nothing else happens (no reservation for noise, no circuit), and a well-formed
    RESERVE still works afterwards."""
    rng = random.Random(13)
    async with relay_and_client() as (relay, client):
        core = relay.service(CircuitRelay).core
        answered = closed = 0
        with trio.fail_after(60):
            for raw in _mutations(rng, 300):
                try:
                    reply = await _hop_exchange(client, relay, raw)
                except (StreamReset, trio.BrokenResourceError, trio.ClosedResourceError):
                    closed += 1
                    continue
                if reply is None:
                    closed += 1
                else:
                    answered += 1
                    assert Status(reply.status) in {
                        Status.OK,  # a mutation that is still a valid RESERVE
                        Status.MALFORMED_MESSAGE,
                        Status.UNEXPECTED_MESSAGE,
                        Status.NO_RESERVATION,
                    }
                    if reply.status != Status.OK:
                        assert not reply.HasField("reservation")
            assert answered + closed == 300 and answered > 250
            assert core.circuit_count == 0 and core.reservation_count <= 1
            ok = await _hop_exchange(client, relay, _framed(HOP(type=HOP.RESERVE)))
        assert ok is not None and ok.status == Status.OK
