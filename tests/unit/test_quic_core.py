"""QuicCore, the sans-IO part of /quic-v1: the short receive path, ACK policy, pacing bursts, connection
ids, key shares, prompt close reports and cycle breaking (all in memory, no sockets, no trio)."""

from __future__ import annotations

import functools
import gc
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aioquic.quic import connection as aioquic_connection
from aioquic.quic import events
from aioquic.quic.connection import QuicConnection
from aioquic.tls import Epoch, Group

from mycel.core.identity import Identity
from mycel.transports.quic import QUIC
from mycel.transports.quic.core import (
    ACTIVE_CONNECTION_IDS,
    BULK_ACK_PACKETS,
    PACING_BURST,
    QuicCore,
    _Pacer,
)

CLIENT_ADDR = ("127.0.0.1", 1)
SERVER_ADDR = ("127.0.0.1", 2)
_IDS = (Identity.generate(), Identity.generate())


def handshaken(quic: QUIC | None = None, now: float = 1.0) -> tuple[QuicCore, QuicCore]:
    """A client and a server core with the handshake done and confirmed on both sides."""
    quic = quic or QUIC()
    client = QuicCore(configuration=quic._configuration(_IDS[0], True))
    client.connect(SERVER_ADDR, now=now)
    server = QuicCore(
        configuration=quic._configuration(_IDS[1], False),
        original_destination_connection_id=client._peer_cid.cid,
    )
    for _ in range(6):
        exchange(client, server, now)
    for _ in range(3):  # the delayed ACKs too: nothing is left to acknowledge
        now += 0.1
        client.handle_timer(now)
        server.handle_timer(now)
        exchange(client, server, now)
    assert client._handshake_confirmed and server._handshake_confirmed
    assert not client.ack_pending and not server.ack_pending
    drain(client)
    drain(server)
    unlimited(client)
    return client, server


def unlimited(core: QuicCore) -> None:
    """No congestion window or pacing in the way: every datagrams_to_send() sends everything."""
    core._loss._cc.congestion_window = 1 << 30
    setattr(core._loss._pacer, "next_send_time", lambda now: None)


def exchange(client: QuicCore, server: QuicCore, now: float) -> None:
    for datagram, _ in client.datagrams_to_send(now):
        server.receive_datagram(datagram, CLIENT_ADDR, now)
    for datagram, _ in server.datagrams_to_send(now):
        client.receive_datagram(datagram, SERVER_ADDR, now)


def drain(core: QuicCore) -> list[Any]:
    out = []
    while (ev := core.next_event()) is not None:
        out.append(ev)
    return out


@contextmanager
def count_header_parses() -> Iterator[list[int]]:
    """How often aioquic's general receive path parsed a packet header."""
    calls = [0]
    original = getattr(aioquic_connection, "pull_quic_header")

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    setattr(aioquic_connection, "pull_quic_header", counting)
    try:
        yield calls
    finally:
        setattr(aioquic_connection, "pull_quic_header", original)


def scenario(general_path: bool) -> tuple[list[tuple[Any, ...]], list[tuple[int, int]], dict[str, Any]]:
    """Stream data with a duplicate, a reordered pair, a key update and a datagram from another
    address, received by a server on the short path or on aioquic's general one. Returns what the
    server saw: its events, its ACK ranges and some receive state."""
    client, server = handshaken()
    if general_path:
        server.receive_datagram = functools.partial(QuicConnection.receive_datagram, server)  # type: ignore[method-assign]
    now = 2.0
    sent: list[bytes] = []

    def send(stream_id: int, data: bytes, end: bool = False) -> None:
        client.send_stream_data(stream_id, data, end_stream=end)
        sent.extend(d for d, _ in client.datagrams_to_send(now))

    send(0, b"a" * 3000)
    send(4, b"b" * 500)
    send(0, b"c" * 100, end=True)
    # as sent, with the first datagram again (a duplicate) and the last two swapped (reordered)
    order = [*sent[:-2], sent[-1], sent[-2], sent[0]]
    seen: list[tuple[Any, ...]] = []
    for datagram in order:
        server.receive_datagram(datagram, CLIENT_ADDR, now)
    client.request_key_update()
    sent.clear()
    send(8, b"d" * 200, end=True)
    for datagram in sent:
        server.receive_datagram(datagram, CLIENT_ADDR, now)
    idle_deadline = server._close_at  # (before the general path below refreshes it)
    sent.clear()
    send(4, b"e" * 10, end=True)
    server.receive_datagram(sent[0], ("127.0.0.1", 99), now)  # another address: not on the short path
    for ev in drain(server):
        if isinstance(ev, events.StreamDataReceived):
            seen.append(("data", ev.stream_id, ev.data, ev.end_stream))
        else:
            seen.append((type(ev).__name__,))
    space = server._spaces[Epoch.ONE_RTT]
    ranges = [(r.start, r.stop) for r in space.ack_queue]
    state = {
        "largest": space.largest_received_packet,
        "expected": space.expected_packet_number,
        "received": (space.received_packets._lower, sorted(space.received_packets._received)),
        "ack_due": space.ack_at is not None,
        "key_phase": server._cryptos[Epoch.ONE_RTT].recv.key_phase,
        "eliciting": server._eliciting,
        "paths": len(server._network_paths),
        "idle_deadline": idle_deadline,
        "largest_time": space.largest_received_time,
        "spin": (server._spin_bit, server._spin_highest_pn),
    }
    return seen, ranges, state


def test_short_receive_path_does_what_aioquic_does() -> None:
    fast = scenario(general_path=False)
    general = scenario(general_path=True)
    assert fast == general
    seen, _, state = fast
    data = {sid: b"".join(d for kind, s, d, _ in (e for e in seen if e[0] == "data") if s == sid) for sid in (0, 4, 8)}
    assert data == {0: b"a" * 3000 + b"c" * 100, 4: b"b" * 500 + b"e" * 10, 8: b"d" * 200}
    assert state["key_phase"] == 1  # the key update was followed


def test_one_rtt_datagrams_take_the_short_path() -> None:
    client, server = handshaken()
    client.send_stream_data(0, b"x" * 20000, end_stream=True)
    datagrams = [d for d, _ in client.datagrams_to_send(2.0)]
    assert len(datagrams) > 10
    with count_header_parses() as parses:
        for datagram in datagrams:
            server.receive_datagram(datagram, CLIENT_ADDR, 2.0)
        assert parses[0] == 0
        server.receive_datagram(datagrams[0], ("127.0.0.1", 99), 2.0)  # another path: the general one
        assert parses[0] == 1
    got = b"".join(ev.data for ev in drain(server) if isinstance(ev, events.StreamDataReceived))
    assert got == b"x" * 20000


def test_corrupt_and_reserved_bit_packets_on_the_short_path() -> None:
    client, server = handshaken()
    client.send_stream_data(0, b"y" * 100)
    (datagram, _), *_ = client.datagrams_to_send(2.0)
    corrupt = bytearray(datagram)
    corrupt[-1] ^= 0xFF
    server.receive_datagram(bytes(corrupt), CLIENT_ADDR, 2.0)  # fails authentication: dropped
    assert drain(server) == [] and not server._close_pending
    server.receive_datagram(datagram, CLIENT_ADDR, 2.0)
    assert [type(e).__name__ for e in drain(server)] == ["StreamDataReceived"]

    # a packet whose (protected) reserved bits are set: a protocol violation, the connection closes
    client._cryptos[Epoch.ONE_RTT].send.encrypt_packet = _with_reserved_bits(  # type: ignore[method-assign]
        client._cryptos[Epoch.ONE_RTT].send.encrypt_packet
    )
    client.send_stream_data(0, b"z" * 100)
    (bad, _), *_ = client.datagrams_to_send(2.1)
    server.receive_datagram(bad, CLIENT_ADDR, 2.1)
    assert server._close_event is not None and server._close_event.reason_phrase == "Reserved bits must be zero"


def _with_reserved_bits(encrypt: Any) -> Any:
    def wrapped(plain_header: bytes, plain_payload: bytes, packet_number: int) -> bytes:
        protected: bytes = encrypt(bytes([plain_header[0] | 0x18]) + plain_header[1:], plain_payload, packet_number)
        return protected

    return wrapped


def test_peer_close_is_reported_at_once() -> None:
    client, server = handshaken()
    client.close(error_code=0, reason_phrase="bye")
    for datagram, _ in client.datagrams_to_send(2.0):
        server.receive_datagram(datagram, CLIENT_ADDR, 2.0)
    terminated = [e for e in drain(server) if isinstance(e, events.ConnectionTerminated)]
    assert len(terminated) == 1 and terminated[0].reason_phrase == "bye"  # not after 3 PTOs of draining


def test_acks_for_requests_wait_and_bulk_acks_do_not() -> None:
    client, server = handshaken()
    now = 2.0
    client.send_stream_data(0, b"q" * 10)
    for datagram, _ in client.datagrams_to_send(now):
        server.receive_datagram(datagram, CLIENT_ADDR, now)
    assert server.end_of_batch(now) is False  # one packet: its ACK may wait for an answer
    assert server.ack_pending
    client.send_stream_data(0, b"r" * 2000)
    for datagram, _ in client.datagrams_to_send(now):
        server.receive_datagram(datagram, CLIENT_ADDR, now)
    assert server.end_of_batch(now) is True  # two or more: ACK once the woken tasks had their turn
    assert server.datagrams_to_send(now) == []  # ... not yet
    client.send_stream_data(0, b"s" * 1400 * BULK_ACK_PACKETS)
    count = 0
    for datagram, _ in client.datagrams_to_send(now):
        server.receive_datagram(datagram, CLIENT_ADDR, now)
        count += 1
    assert count >= BULK_ACK_PACKETS
    server.end_of_batch(now)
    assert len(server.datagrams_to_send(now)) == 1  # a bulk run: the ACK goes now
    assert not server.ack_pending and server._eliciting == 0


def test_pacer_bursts_cover_the_timer_granularity() -> None:
    pacer = _Pacer(max_datagram_size=1452)
    pacer.update_rate(congestion_window=1_000_000, smoothed_rtt=0.010)
    rate = 1_000_000 / 0.010
    assert pacer.bucket_max == pytest.approx(PACING_BURST)  # aioquic's 16 packets would be 0.23 ms here
    assert pacer.bucket_max * rate > 16 * 1452
    pacer.update_rate(congestion_window=1_000_000, smoothed_rtt=0.0005)
    assert pacer.bucket_max == pytest.approx(0.0005)  # never more than one RTT's worth
    core = handshaken()[0]
    assert isinstance(core._loss._pacer, _Pacer)


def test_key_shares_and_connection_ids() -> None:
    client, server = handshaken()
    assert client.tls._supported_groups == [Group.X25519]  # one key share, one key generation
    assert client.tls._ec_private_keys == []
    assert len(client._host_cids) <= ACTIVE_CONNECTION_IDS and len(server._host_cids) <= ACTIVE_CONNECTION_IDS
    assert client._local_active_connection_id_limit == ACTIVE_CONNECTION_IDS


def test_disposed_cores_are_freed_without_the_collector() -> None:
    client, server = handshaken()
    client.send_stream_data(0, b"w" * 5000, end_stream=True)
    exchange(client, server, 2.0)
    client.send_stream_data(4, b"unacknowledged")
    client.datagrams_to_send(2.1)
    client.close()
    client.datagrams_to_send(2.2)
    refs = [weakref.ref(client), weakref.ref(server)]
    gc.collect()
    gc.disable()
    try:
        client.dispose()
        server.dispose()
        client.consume(0, 0)  # bookkeeping still works after dispose
        del client, server
        assert [r() for r in refs] == [None, None]  # reference counting alone freed both
    finally:
        gc.enable()
