"""Regression tests for the published libp2p DoS advisories (REFERENCES.md §5.4), at the decoder level:
what a decoder holds, allocates or stores for hostile input must be bounded by the decoder itself.
(Stream caps, per-peer budgets and the swarm's handshake slots are tested with the muxers and the
resource manager; the flood tests with real processes are in tests/flood.)

* CVE-2022-23492 (go) / CVE-2022-23486 (rust): streams opened without back-pressure; allocations in
  multistream / protobuf parsing driven by length prefixes.
* GHSA-gcq9-qqwx-rgj3 (go) and cpp-libp2p #295: signed peer records for *other* peers accepted and
  stored (memory at ~2x amplification).
* CVE-2026-57497 / GHSA-g35j-m5xg-vh3q: identify with thousands of protocols / addresses through
  chunked identify messages.
* GHSA-xqvc-92cf-94j4 (py-libp2p): unbounded varint lengths in DHT / rendezvous messages.
"""

from __future__ import annotations

import struct
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import trio
from multiaddr import Multiaddr

from mycel.core.errors import DecodeError, InvalidSignature, MessageTooLarge, MuxerError, NegotiationError
from mycel.core.framing import MessageStream, receive_message
from mycel.core.identity import Identity
from mycel.core.record import MAX_RECORD_ADDRS, open_peer_record, seal_peer_record
from mycel.core.varint import LengthPrefixedDecoder, encode_uvarint, length_prefixed
from mycel.multistream.core import MAX_MESSAGE_SIZE as MS_MAX
from mycel.multistream.core import MessageDecoder
from mycel.muxers.events import StreamOpened
from mycel.muxers.mplex.core import NEW_STREAM, MplexCore, encode_frame
from mycel.muxers.yamux.core import FLAG_SYN, TYPE_DATA, TYPE_WINDOW_UPDATE, YamuxCore
from mycel.network.peerstore import MAX_ADDRS_PER_PEER, MAX_PROTOCOLS_PER_PEER, PeerStore
from mycel.protocols.identify import MAX_MESSAGE_SIZE, MAX_MESSAGES, PUSH_PROTOCOL, Identify, identify_pb2
from mycel.protocols.kad import dht_pb2
from mycel.protocols.kad.service import MAX_MESSAGE_SIZE as KAD_MAX
from mycel.protocols.ping import Ping
from mycel.testing.hosts import memory_hosts
from mycel.core.events import PeerIdentified

HUGE = (1 << 63) - 1  # the largest length a 9-byte uvarint can announce


@contextmanager
def peak_memory() -> Iterator[Callable[[], int]]:
    """Peak bytes allocated (tracemalloc) inside the block, read through the yielded function."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


class _Stream:
    """A receive stream that would deliver ``total`` bytes of ``fill`` after ``head`` (never all built)."""

    def __init__(self, head: bytes, total: int = 1 << 40) -> None:
        self.head = head
        self.left = total
        self.read = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        n = max_bytes or 65536
        if self.head:
            out, self.head = self.head[:n], self.head[n:]
        else:
            n = min(n, self.left)
            self.left -= n
            out = b"\x00" * n
        self.read += len(out)
        return out

    async def send_all(self, data: bytes) -> None:
        pass


# --- CVE-2022-23492 / CVE-2022-23486: streams without back-pressure, at the muxer decoders -----------


def test_yamux_syn_flood_is_refused_past_the_backlog_in_bounded_memory() -> None:
    """20,000 SYNs nobody accepts: the session keeps at most ``accept_backlog`` streams and answers the
    rest with RST; memory stays flat (the core holds no state for refused streams)."""
    core = YamuxCore(False, accept_backlog=256)
    core.start(0.0)
    batch = b"".join(struct.pack(">BBHII", 0, TYPE_WINDOW_UPDATE, FLAG_SYN, 2 * i + 1, 0) for i in range(1000))
    opened = 0
    with peak_memory() as peak:
        for rnd in range(20):
            # ids grow each round (a real attacker's do): every SYN is for a new stream
            frames = batch if rnd == 0 else b"".join(
                struct.pack(">BBHII", 0, TYPE_WINDOW_UPDATE, FLAG_SYN, 2 * (rnd * 1000 + i) + 1, 0) for i in range(1000)
            )
            opened += sum(isinstance(e, StreamOpened) for e in core.receive_data(frames, 0.0))
            core.data_to_send()  # the driver writes the RSTs out after each read
        assert peak() < 4 * 1024 * 1024
    # at most the backlog (the muxer's own inbound caps may hold it lower), the rest refused
    assert 0 < opened <= 256
    assert core.stream_count == opened and core.pending_accept == opened


def test_yamux_data_for_a_never_opened_stream_beyond_any_window_is_a_violation() -> None:
    """A 2 GiB Data frame on a stream that was never opened is not swallowed as payload."""
    core = YamuxCore(False)
    with pytest.raises(MuxerError):
        core.receive_data(struct.pack(">BBHII", 0, TYPE_DATA, 0, 7, 2**31), 0.0)


def test_mplex_newstream_flood_is_refused_past_the_backlog_in_bounded_memory() -> None:
    core = MplexCore(accept_backlog=256)
    opened = 0
    with peak_memory() as peak:
        for rnd in range(20):
            frames = b"".join(encode_frame(rnd * 1000 + i, NEW_STREAM, b"x" * 20) for i in range(1000))
            opened += sum(isinstance(e, StreamOpened) for e in core.receive_data(frames, 0.0))
            core.data_to_send()
        assert peak() < 4 * 1024 * 1024
    assert 0 < opened <= 256 and core.stream_count == opened


def test_mplex_message_length_is_bounded_before_any_payload() -> None:
    core = MplexCore()
    with pytest.raises(MuxerError):
        core.receive_data(encode_uvarint(1 << 3 | 2) + encode_uvarint(HUGE), 0.0)


# --- allocations driven by multistream / protobuf length prefixes -------------------------------------


def test_multistream_length_prefix_cannot_drive_an_allocation() -> None:
    """A multistream message announcing 2^63 - 1 bytes fails at its prefix; a peer that trickles bytes
    without a valid message cannot make the decoder buffer more than one message."""
    decoder = MessageDecoder(expect_header=False)
    decoder.feed(encode_uvarint(HUGE))
    with pytest.raises(MessageTooLarge):
        decoder.next_message()
    with pytest.raises(NegotiationError):  # the first message of a dialer/listener must be the header
        MessageDecoder(expect_header=True).feed(encode_uvarint(MS_MAX) + b"a" * 2000)
    trickle = MessageDecoder()  # a prefix that never ends, one byte at a time (as read_message reads)
    with pytest.raises(DecodeError):
        for _ in range(10_000):
            trickle.feed(b"\x81")
            trickle.next_message()
    assert trickle.buffered <= 9
    body = MessageDecoder()  # a body that never ends: refused once it is longer than a message may be
    body.feed(encode_uvarint(MS_MAX))
    with pytest.raises(DecodeError):  # 1024 bytes without the newline
        for _ in range(10_000):
            body.feed(b"a" * 7)
            body.next_message()
    assert body.buffered <= MS_MAX + 16 + 7


@pytest.mark.parametrize("max_size", [0, 4096, KAD_MAX])
def test_protobuf_length_prefix_over_the_limit_fails_before_the_body(max_size: int) -> None:
    decoder = LengthPrefixedDecoder(max_size)
    decoder.feed(encode_uvarint(max_size + 1))
    with pytest.raises(MessageTooLarge):
        decoder.next_message()
    decoder = LengthPrefixedDecoder(max_size)
    decoder.feed(encode_uvarint(HUGE))
    with pytest.raises(MessageTooLarge):
        decoder.next_message()


# --- GHSA-xqvc-92cf-94j4: unbounded varint lengths (DHT / rendezvous framing) --------------------------


@pytest.mark.parametrize("length", [KAD_MAX + 1, 1 << 40, HUGE])
async def test_dht_message_length_is_bounded_before_reading(length: int) -> None:
    """The kad reader (``receive_message`` with the 4 MiB bound) refuses a huge announced length having
    read only the prefix, and a 10-byte varint (> 63 bits) is a DecodeError."""
    stream = _Stream(encode_uvarint(length))
    with pytest.raises(MessageTooLarge):
        await receive_message(stream, KAD_MAX)  # type: ignore[arg-type]
    assert stream.read == len(encode_uvarint(length))
    with pytest.raises(DecodeError):
        await receive_message(_Stream(b"\xff" * 9 + b"\x01"), KAD_MAX)  # type: ignore[arg-type]


async def test_message_stream_never_buffers_past_its_bound() -> None:
    stream = _Stream(encode_uvarint(KAD_MAX) + b"\x00" * 10)
    messages = MessageStream(stream, max_size=1024)  # type: ignore[arg-type]
    with pytest.raises(MessageTooLarge):
        await messages.receive()
    assert stream.read <= 1024 + 65536


def test_a_dht_message_within_the_bound_parses() -> None:
    """The bound refuses only what is over it: a real 4 MiB-bounded request still decodes."""
    msg = dht_pb2.Message(type=dht_pb2.Message.FIND_NODE, key=b"k" * 64)
    decoder = LengthPrefixedDecoder(KAD_MAX)
    decoder.feed(length_prefixed(msg.SerializeToString()))
    body = decoder.next_message()
    assert body is not None and dht_pb2.Message.FromString(body).key == b"k" * 64


# --- GHSA-gcq9-qqwx-rgj3 / cpp-libp2p #295: signed peer records of other peers ------------------------


def test_records_of_other_peers_are_refused_and_store_nothing() -> None:
    """300 validly signed records of 300 fresh identities, all arriving from one peer: none is
    stored, the store holds no peer and its memory does not grow with them."""
    sender = Identity.from_seed(b"\x01" * 32).peer_id
    records = [
        seal_peer_record(Identity.generate().private_key, [Multiaddr("/ip4/198.18.0.1/tcp/1")], 1).to_bytes()
        for _ in range(300)
    ]
    store = PeerStore()
    refused = 0
    with peak_memory() as peak:
        for rec in records:
            with pytest.raises(InvalidSignature):
                store.consume_peer_record(rec, 60.0, 0.0, expected_peer=sender)
            refused += 1
        assert peak() < 512 * 1024
    assert refused == 300 and len(store) == 0


def test_a_record_with_thousands_of_addresses_costs_no_more_than_the_bound() -> None:
    """A record of 5,000 addresses (signed once, replayable through identify or gossipsub PX) parses only
    MAX_RECORD_ADDRS of them: its cost does not grow with what the peer put in it."""
    key = Identity.from_seed(b"\x02" * 32).private_key
    addrs = [Multiaddr(f"/ip4/198.18.{i // 250}.{i % 250}/tcp/4001") for i in range(5000)]
    big = seal_peer_record(key, addrs, 1).to_bytes()
    small = seal_peer_record(key, addrs[:MAX_RECORD_ADDRS], 1).to_bytes()
    _, record = open_peer_record(big)
    assert record.addrs == tuple(addrs[:MAX_RECORD_ADDRS])

    def cost(data: bytes) -> float:
        start = time.perf_counter()
        for _ in range(5):
            open_peer_record(data)
        return time.perf_counter() - start

    cost(small)
    assert cost(big) < 3 * cost(small) + 0.05  # the big one's extra bytes are only protobuf-skipped
    store = PeerStore()
    assert store.consume_peer_record(big, 60.0, 0.0, expected_peer=record.peer_id)
    assert len(store.addrs(record.peer_id, 0.0)) <= MAX_ADDRS_PER_PEER


# --- CVE-2026-57497: identify with thousands of protocols / addresses, chunked ------------------------


def _chunked_identify(subject: Identity, n_protocols: int, n_addrs: int, *, sybil_record: bool) -> bytes:
    """What a hostile peer streams: MAX_MESSAGES delimited messages of up to MAX_MESSAGE_SIZE bytes,
    full of protocol ids and listen addresses (one message carries another peer's signed record)."""
    fields = [identify_pb2.Identify(protocols=[f"/x/{i}"]).SerializeToString() for i in range(n_protocols)]
    fields += [identify_pb2.Identify(listenAddrs=[Multiaddr(f"/ip4/198.18.{i // 250}.{i % 250}/tcp/1").to_bytes()])
               .SerializeToString() for i in range(n_addrs)]
    if sybil_record:
        other = Identity.from_seed(b"\x07" * 32)
        rec = seal_peer_record(other.private_key, [Multiaddr("/ip4/198.18.9.9/tcp/1")], 1).to_bytes()
        fields.append(identify_pb2.Identify(signedPeerRecord=rec).SerializeToString())
    messages: list[bytes] = []
    current = b""
    for f in fields:
        if len(current) + len(f) > MAX_MESSAGE_SIZE:
            messages.append(current)
            current = b""
        current += f
    messages.append(current)
    assert len(messages) <= MAX_MESSAGES, len(messages)
    return b"".join(length_prefixed(m) for m in messages)


async def test_identify_push_with_thousands_of_protocols_and_addresses() -> None:
    """A peer pushes ~80 KB of identify (10 chunked messages): ~10,000 protocol ids, ~1,000 listen
    addresses and another peer's signed record. The host keeps at most MAX_PROTOCOLS_PER_PEER protocols
    and MAX_ADDRS_PER_PEER addresses for it, stores no record of the other peer, and keeps serving."""
    # no real pushes: the only push a receives is the hostile one
    async with memory_hosts(2, services=lambda: [Identify(push=False), Ping()]) as (a, b):
        await b.connect(a.peer_id, a.listen_addrs)
        await b.service(Identify).wait_identified(a.peer_id)
        await a.service(Identify).wait_identified(b.peer_id)
        wire = _chunked_identify(b.identity, 7000, 700, sybil_record=True)
        assert len(wire) > 60_000
        with a.subscribe() as events:
            stream = await b.new_stream(a.peer_id, [PUSH_PROTOCOL])
            await stream.send_all(wire)
            await stream.send_eof()
            with trio.fail_after(10):
                async for event in events:
                    if isinstance(event, PeerIdentified) and "/x/0" in event.info.protocols:
                        break
            await stream.aclose()
        store = a.peerstore
        protocols = store.protocols(b.peer_id)
        assert len(protocols) == MAX_PROTOCOLS_PER_PEER and all(isinstance(p, str) for p in protocols)
        assert len(store.addrs(b.peer_id)) <= MAX_ADDRS_PER_PEER
        sybil = Identity.from_seed(b"\x07" * 32).peer_id
        assert store.peer_record(sybil) is None
        assert sybil not in store
        # the well-behaved side of the same connection is still served
        with trio.fail_after(10):
            rtts = await a.service(Ping).ping(b.peer_id)
        assert len(rtts) == 1


async def test_identify_with_more_than_max_messages_is_refused() -> None:
    """An eleventh chunk is refused (MessageTooLarge): the chunk count, not only each chunk, is bounded."""
    from mycel.protocols.identify import read_identify

    one = length_prefixed(identify_pb2.Identify(protocols=["/a"]).SerializeToString())
    send, recv = trio.testing.memory_stream_pair()
    await send.send_all(one * (MAX_MESSAGES + 1))
    await send.send_eof()
    with pytest.raises(MessageTooLarge):
        await read_identify(recv)


async def test_identify_apply_drops_protocol_ids_and_versions_that_are_not_utf8() -> None:
    """Found by the fuzz of the apply step: a protocol id or version that is not UTF-8 came back from the
    proto2 parser as bytes and was stored as such (the peerstore held bytes where str is promised); an
    address that does not parse was stored and failed when a dial rendered it."""
    async with memory_hosts(2) as (a, b):
        conn = await a.connect(b.peer_id, b.listen_addrs)
        await a.service(Identify).wait_identified(b.peer_id)
        raw = (
            b"\x1a\x04\xff\xfe/x"  # protocols: not UTF-8
            + b"\x1a\x05/good"
            + b"\x2a\x02\xc3\x28"  # protocolVersion: not UTF-8
            + b"\x32\x03go\xff"  # agentVersion: not UTF-8
            + b"\x12\x07\x04\x7f\x00\x00\x01\x06\x0f"  # listenAddrs: tcp port cut short (lazy parser bait)
            + b"\x12\x08\x04\x7f\x00\x00\x01\x06\x0f\xa1"  # a good one: /ip4/127.0.0.1/tcp/4001
        )
        msg = identify_pb2.Identify.FromString(raw)
        result = a.service(Identify)._apply(a, conn, msg, push=False)
        assert result.protocols == ["/good"]
        assert a.peerstore.protocols(b.peer_id) == frozenset({"/good"})
        assert a.peerstore.agent_version(b.peer_id) == "go\ufffd"
        assert a.peerstore.protocol_version(b.peer_id) == "\ufffd("
        assert result.listen_addrs == [Multiaddr("/ip4/127.0.0.1/tcp/4001")]
        assert [str(x) for x in a.peerstore.addrs(b.peer_id)]  # every stored address renders
