"""Harnesses for the protocol services: identify (reading *and applying* what a peer says about itself),
the kad DHT server and response handling, and the gossipsub router's RPC handling. Identify and kad run
against real hosts on the memory transport (opened once per run); inputs are driven synchronously."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.message import DecodeError as PbDecodeError

from mycel.core.abc import Connection
from mycel.core.errors import DecodeError, ProtocolViolation
from mycel.core.identity import Identity
from mycel.core.varint import encode_uvarint
from mycel.host import Host
from mycel.network.peerstore import MAX_ADDRS_PER_PEER, MAX_PROTOCOLS_PER_PEER
from mycel.protocols.identify import MAX_MESSAGE_SIZE, MAX_OBSERVED, Identify, read_identify
from mycel.protocols.kad import dht_pb2
from mycel.protocols.kad.records import InvalidRecord
from mycel.protocols.kad.service import KadDHT
from mycel.protocols.pubsub import rpc_pb2
from mycel.protocols.pubsub.config import FLOODSUB, GOSSIPSUB_V10, GOSSIPSUB_V11, GOSSIPSUB_V12
from mycel.protocols.pubsub.core import GossipsubRouter, ValidationResult
from mycel.protocols.pubsub.messages import SIGN_PREFIX
from mycel.protocols.pubsub.wire import fragment_rpc
from mycel.testing.hosts import memory_hosts
from tests.unit.pubsub.mock_peer import TOPIC
from tests.unit.pubsub.test_fuzz_rpc import CFG

from fuzz.core import FakeReceiveStream, Harness, Source, blob, chance, chunks, drive, mutate, pick
from fuzz.records import _field, gen_key_pb, gen_multiaddr_bytes, gen_peer_record_envelope, identities


# instrumented under atheris on a loaded machine, setting up the hosts can take far longer than usual
_SLOW: dict[str, Any] = {"handshake_timeout": 300.0, "negotiate_timeout": 300.0, "handshake_stage_timeout": 300.0}


def _text(src: Source, max_len: int) -> bytes:
    """A string field's bytes: mostly ASCII, sometimes long, sometimes not UTF-8."""
    kind = src.int(0, 9)
    if kind < 7:
        return b"/p/" + str(src.int(0, 99)).encode()
    if kind == 7:
        return b"x" * src.int(0, max_len)
    if kind == 8:
        return b"\xff\xfe" + blob(src, 6)  # not UTF-8 (a proto2 string the parser hands back as bytes)
    return b""


# -- identify ------------------------------------------------------------------------------------------


def _identify_fields(src: Source, subject: Identity) -> list[bytes]:
    """The encoded fields of what ``subject`` says about itself, with hostile values."""
    fields: list[bytes] = []
    if chance(src, 90):
        fields.append(_field(1, subject.public_key.to_protobuf() if chance(src, 85) else gen_key_pb(src)))
    many = src.int(0, 9)
    n_addrs = src.int(0, 4) if many < 8 else src.int(100, 1500)
    fields += [_field(2, gen_multiaddr_bytes(src) if chance(src, 40) else pick(src, _LISTEN)) for _ in range(n_addrs)]
    many = src.int(0, 9)
    if many < 7:
        fields += [_field(3, _text(src, 40) if chance(src, 20) else pick(src, _PROTOCOLS)) for _ in range(src.int(0, 8))]
    else:  # thousands of protocols, as go's chunked identify brings them (CVE-2026-57497)
        fields += [_field(3, b"/p%d" % i) for i in range(src.int(300, 4000))]
    if chance(src, 60):
        fields.append(_field(4, gen_multiaddr_bytes(src)))
    if chance(src, 70):
        fields.append(_field(5, b"ipfs/0.1.0" if chance(src, 80) else _text(src, 3000)))
    if chance(src, 70):
        fields.append(_field(6, b"go-libp2p/0.49" if chance(src, 80) else _text(src, 3000)))
    if chance(src, 60):
        rec = src.int(0, 9)
        if rec < 6:  # the subject's own record
            fields.append(_field(8, gen_peer_record_envelope(src, subject.private_key)))
        elif rec < 9:  # somebody else's record, validly signed by them (GHSA-gcq9-qqwx-rgj3)
            other = pick(src, identities())
            fields.append(_field(8, gen_peer_record_envelope(src, other.private_key)))
        else:
            fields.append(_field(8, blob(src, 300)))
    if chance(src, 5):
        fields.append(_field(src.int(9, 40), blob(src, 30)))
    return fields


_LISTEN = [b"\x04\x7f\x00\x00\x01\x06\x0f\xa1", b"\x04\xc6\x12\x00\x01\x91\x02\x0f\xa1\xcc\x03"]
_PROTOCOLS = [b"/ipfs/id/1.0.0", b"/ipfs/ping/1.0.0", b"/meshsub/1.1.0", b"/ipfs/kad/1.0.0", b"/ipfs/id/push/1.0.0"]


def gen_identify_wire(src: Source, subject: Identity) -> bytes:
    """The bytes of an identify stream: the fields spread over 1..MAX_MESSAGES (+1) delimited messages
    of at most MAX_MESSAGE_SIZE bytes (go's chunking), sometimes one oversized, a lying length or a cut."""
    fields = _identify_fields(src, subject)
    messages: list[bytes] = []
    current = b""
    limit = MAX_MESSAGE_SIZE if chance(src, 95) else MAX_MESSAGE_SIZE * 2
    for f in fields:
        if current and len(current) + len(f) > limit:
            messages.append(current)
            current = b""
        current += f
    messages.append(current)
    if chance(src, 30):  # go splits even small messages: the signed record in a message of its own
        cut = src.int(0, len(messages[-1]))
        messages[-1:] = [messages[-1][:cut], messages[-1][cut:]]
    wire = b"".join(encode_uvarint(len(m)) + m for m in messages)
    if chance(src, 5):
        wire += encode_uvarint(src.int(0, 1 << 40)) + blob(src, 10)
    return mutate(src, wire) if chance(src, 8) else wire


class IdentifyHarness(Harness):
    """``read_identify`` on chunked identify streams, then ``Identify._apply`` (what a host does with the
    answer: peerstore addresses, protocols, versions, signed record, observed address, services told)
    on a real host connected to the peer the message claims to be. Invariants: nothing but str protocol
    ids and versions stored, every stored address renders, per-peer bounds hold, no signed record of
    any other peer is stored, our observed-address list stays bounded."""

    name = "identify"
    expected = (ProtocolViolation,)
    min_past_ratio = 0.5

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        async with memory_hosts(2, **_SLOW) as (a, b):
            conn = await a.connect(b.peer_id, b.listen_addrs)
            await a.service(Identify).wait_identified(b.peer_id, timeout=600)
            self._host: Host = a
            self._conn: Connection = conn
            self._subject = b.identity
            yield

    def one(self, src: Source) -> None:
        host, conn, subject = self._host, self._conn, self._subject
        wire = gen_identify_wire(src, subject)
        msg = drive(read_identify(FakeReceiveStream(chunks(src, wire, 6))))  # type: ignore[arg-type]
        self.past = True
        service = host.service(Identify)
        service._apply(host, conn, msg, push=chance(src, 50))
        self.deep = True
        store = host.peerstore
        peer = subject.peer_id
        protocols = store.protocols(peer)
        assert all(isinstance(p, str) for p in protocols), f"non-str protocol ids stored: {list(protocols)[:3]}"
        assert len(protocols) <= MAX_PROTOCOLS_PER_PEER
        agent, version = store.agent_version(peer), store.protocol_version(peer)
        assert agent is None or isinstance(agent, str), f"agent version stored as {type(agent).__name__}"
        assert version is None or isinstance(version, str), f"protocol version stored as {type(version).__name__}"
        addrs = store.addrs(peer)
        assert len(addrs) <= MAX_ADDRS_PER_PEER
        for a in addrs:
            str(a)  # an address that does not render breaks every later dial
        for other in store.peers():
            if other != peer:
                assert store.peer_record(other) is None, "a signed peer record of another peer was stored"
        assert len(service.observed_addrs) <= MAX_OBSERVED
        for a in service.observed_addrs:
            str(a)


# -- kad -----------------------------------------------------------------------------------------------

M = dht_pb2.Message


def _kad_key(src: Source, sender: bytes) -> bytes:
    kind = src.int(0, 9)
    if kind < 3:
        return blob(src, 40)
    if kind < 5:
        return b"/pk/" + (sender if chance(src, 70) else blob(src, 38))
    if kind < 7:
        return b"/ipns/" + (sender if chance(src, 70) else blob(src, 38))
    if kind == 7:
        return bytes.fromhex("1220") + src.bytes(32)
    if kind == 8:
        return blob(src, 3000)
    return b""


def _kad_peer(src: Source) -> M.Peer:
    pid = pick(src, identities()).peer_id.to_bytes() if chance(src, 70) else blob(src, 50)
    n = src.int(0, 4) if chance(src, 90) else src.int(30, 300)
    return M.Peer(id=pid, addrs=[gen_multiaddr_bytes(src) for _ in range(n)], connection=pick(src, (M.NOT_CONNECTED, M.CONNECTED, M.CAN_CONNECT, M.CANNOT_CONNECT)))


def gen_kad_message(src: Source, sender: Identity) -> bytes:
    """A kad ``Message`` of every type (and unknown ones) with hostile keys, records (the sender's real
    public key under /pk/, garbage values, records under another key than the message's, 70 KB values),
    provider and closer peer entries (garbage ids, hundreds of addresses)."""
    t = pick(src, (0, 1, 2, 3, 4, 5)) if chance(src, 92) else src.int(6, 1 << 31)
    sid = sender.peer_id.to_bytes()
    key = _kad_key(src, sid)
    msg = M(type=t, key=key)  # type: ignore[arg-type]
    if chance(src, 50):
        rkey = key if chance(src, 80) else _kad_key(src, sid)
        if key.startswith(b"/pk/") and chance(src, 70):
            value = sender.public_key.to_protobuf()
        else:
            value = blob(src, 200) if chance(src, 95) else b"v" * src.int(60_000, 80_000)
        msg.record.CopyFrom(dht_pb2.Record(key=rkey, value=value, timeReceived=blob(src, 30).decode("latin-1")))
    if chance(src, 50):
        msg.providerPeers.extend(_kad_peer(src) for _ in range(src.int(0, 4)))
        if chance(src, 50) and msg.providerPeers:
            msg.providerPeers[0].id = sid
    if chance(src, 50):
        msg.closerPeers.extend(_kad_peer(src) for _ in range(src.int(0, 6) if chance(src, 90) else src.int(20, 200)))
    out: bytes = msg.SerializeToString()
    return mutate(src, out) if chance(src, 8) else out


class KadHarness(Harness):
    """The DHT server's ``_answer`` on decoded requests from a connected peer (what a hostile client
    sends) and the client's ``_learn`` on the same messages' closerPeers (what a hostile server answers).
    Invariants: answers hold at most k peers and stay under 4 MiB; only valid /pk/ and /ipns/ records
    are stored; the peerstore stays within its per-peer address bound."""

    name = "kad"
    expected = (PbDecodeError, InvalidRecord, DecodeError, ProtocolViolation)
    min_past_ratio = 0.5

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        async with memory_hosts(2, services=lambda: [Identify(), KadDHT(diversity=False)], **_SLOW) as (a, b):
            await a.connect(b.peer_id, b.listen_addrs)
            await a.service(Identify).wait_identified(b.peer_id, timeout=600)
            self._host: Host = a
            self._sender = b.identity
            yield

    def one(self, src: Source) -> None:
        host = self._host
        dht = host.service(KadDHT)
        request = M.FromString(gen_kad_message(src, self._sender))
        self.past = True
        if chance(src, 30):
            learned = dht._learn(host, request.closerPeers)
            assert len(learned) <= dht.k
            self.deep = True
            return
        response = drive(dht._answer(host, self._sender.peer_id, request))
        self.deep = True
        if response is not None:
            assert len(response.closerPeers) <= dht.k + 1
            assert response.ByteSize() < 4 * 1024 * 1024
        for peer in host.peerstore.peers():
            assert len(host.peerstore.addrs(peer)) <= MAX_ADDRS_PER_PEER


# -- gossipsub -----------------------------------------------------------------------------------------

# the router configuration of the gossipsub unit fuzz (small bounds, so a fuzzing peer fills them, and
# scores that graylist it only after a dozen bad inputs, so most of what it sends is really processed)
_TOPIC = TOPIC
_PS_CFG = CFG
_PROTOS = (GOSSIPSUB_V12, GOSSIPSUB_V11, GOSSIPSUB_V10, FLOODSUB)


class _Out:
    """A RouterOutput that only counts (the fuzz checks bounds, not traffic)."""

    def __init__(self) -> None:
        self.sent = 0
        self.dials = 0

    def send_control(self, peer: object, rpc: object) -> None:
        self.sent += 1

    def send_message(self, peer: object, msg: object) -> bool:
        self.sent += 1
        return True

    def deliver(self, msg: object) -> None:
        pass

    def connect(self, peer: object, signed_record: bytes | None) -> None:
        self.dials += 1

    def peer_record(self, peer: object) -> bytes | None:
        return None

    def notify(self, event: object) -> None:
        pass


def _ps_topic(src: Source) -> bytes:
    kind = src.int(0, 9)
    if kind < 6:
        return _TOPIC.encode()
    if kind < 8:
        return pick(src, (b"other", b"", b"t" * 5000))
    return _text(src, 100)


def _ps_message(src: Source, authors: list[Identity]) -> bytes:
    author = pick(src, authors)
    fields = []
    if chance(src, 90):
        fields.append(_field(1, author.peer_id.to_bytes() if chance(src, 85) else blob(src, 40)))
    fields.append(_field(2, blob(src, 64) if chance(src, 95) else b"d" * src.int(4000, 5000)))
    if chance(src, 90):
        fields.append(_field(3, src.bytes(8) if chance(src, 85) else blob(src, 16)))
    if chance(src, 95):
        fields.append(_field(4, _ps_topic(src)))
    body = b"".join(fields)
    if chance(src, 75):
        sig = author.private_key.sign(SIGN_PREFIX + body) if chance(src, 90) else blob(src, 64)
        body += _field(5, sig)
    if chance(src, 15):
        body += _field(6, author.public_key.to_protobuf() if chance(src, 60) else gen_key_pb(src))
    return body


def gen_rpc(src: Source, authors: list[Identity]) -> bytes:
    """An RPC (raw protobuf) with subscriptions (hundreds, non-UTF-8 topics), messages (validly signed
    most of the time) and control (IHAVE/IWANT/IDONTWANT with thousands of ids, GRAFT, PRUNE with PX
    records of other peers and backoffs up to 2^64 - 1)."""
    out = b""
    n_subs = src.int(0, 4) if chance(src, 90) else src.int(100, 400)
    for i in range(n_subs):
        topic = _ps_topic(src) if n_subs < 10 else b"flood-%d" % i
        out += _field(1, _field(1, src.int(0, 1)) + _field(2, topic))
    for _ in range(src.int(0, 4)):
        out += _field(2, _ps_message(src, authors))
    if chance(src, 60):
        ctl = b""

        def ids() -> bytes:
            n = src.int(0, 8) if chance(src, 85) else src.int(500, 6000)
            return b"".join(_field(2 if True else 1, b"id-%d" % src.int(0, n + 5)) for _ in range(n))

        for _ in range(src.int(0, 2)):
            ctl += _field(1, _field(1, _ps_topic(src)) + ids())  # IHAVE
        for _ in range(src.int(0, 2)):
            ctl += _field(2, b"".join(_field(1, b"id-%d" % src.int(0, 50)) for _ in range(src.int(0, 40))))  # IWANT
        for _ in range(src.int(0, 3)):
            ctl += _field(3, _field(1, _ps_topic(src)))  # GRAFT
        for _ in range(src.int(0, 2)):
            prune = _field(1, _ps_topic(src))
            for _ in range(src.int(0, 6) if chance(src, 90) else src.int(20, 60)):
                who = pick(src, identities())
                info = _field(1, who.peer_id.to_bytes() if chance(src, 85) else blob(src, 40))
                if chance(src, 50):
                    info += _field(2, gen_peer_record_envelope(src, pick(src, identities()).private_key))
                prune += _field(2, info)
            if chance(src, 60):
                prune += _field(3, pick(src, (0, 1, 60, (1 << 64) - 1, src.int(0, (1 << 64) - 1))))
            ctl += _field(4, prune)
        for _ in range(src.int(0, 2)):
            ctl += _field(5, b"".join(_field(1, b"id-%d" % src.int(0, 50)) for _ in range(src.int(0, 40))))
        out += _field(3, ctl)
    return mutate(src, out) if chance(src, 8) else out


def _all_str(rpc: rpc_pb2.RPC) -> bool:
    """Whether every topic in ``rpc`` is a str (a proto2 string that is not UTF-8 parses as bytes)."""
    ctl = rpc.control
    topics = [s.topicid for s in rpc.subscriptions] + [m.topic for m in rpc.publish]
    topics += [i.topicID for i in ctl.ihave] + [g.topicID for g in ctl.graft] + [p.topicID for p in ctl.prune]
    return all(isinstance(t, str) for t in topics)


class GossipsubHarness(Harness):
    """The gossipsub router's ``handle_rpc`` (what the service does with every decoded RPC), for peers of
    every protocol version, with validation verdicts and time passing; now and then the decoded RPC is
    cut up again by ``wire.fragment_rpc`` (each piece within the limit and decodable). Invariants: the
    router's tables stay within their bounds after every RPC."""

    name = "gossipsub"
    expected = (PbDecodeError,)
    min_past_ratio = 0.6

    def __init__(self) -> None:
        super().__init__()
        self._authors = [Identity.from_seed(bytes([i]) * 32) for i in range(1, 4)]
        self._fresh()

    def _fresh(self) -> None:
        self._out = _Out()
        self._now = 0.0
        me = Identity.from_seed(b"\x50" * 32)
        self._router = GossipsubRouter(_PS_CFG, me.peer_id, self._out, random.Random(7), 0.0)
        self._router.join(_TOPIC, 0.0)
        self._peers = [a.peer_id for a in self._authors]
        for p, proto in zip(self._peers, _PROTOS, strict=False):
            self._router.add_peer(p, proto, outbound=False, now=0.0)
        self._rpcs = 0

    def one(self, src: Source) -> None:
        if self._rpcs >= 200:  # a fresh router now and then: a graylisted peer would see no more processing
            self._fresh()
        self._rpcs += 1
        r = self._router
        rpc = rpc_pb2.RPC.FromString(gen_rpc(src, self._authors))
        self.past = True
        if chance(src, 15) and _all_str(rpc):
            # wire.fragment_rpc keeps every piece within the limit (it cuts up RPCs we build: their topics
            # are str; a received one with a non-UTF-8 topic, bytes from the parser, is never sent on)
            limit = pick(src, (64, 1024, 65536))
            for piece in fragment_rpc(rpc, limit):
                assert len(piece) <= limit
                rpc_pb2.RPC.FromString(piece)
        msgs = r.handle_rpc(pick(src, self._peers), rpc, self._now)
        for msg in msgs:
            r.validation_complete(msg, pick(src, list(ValidationResult)), self._now)
        self.deep = bool(msgs)
        self._now += src.int(0, 3000) / 1000
        while r.next_deadline() <= self._now:
            r.handle_timeout(max(r.next_deadline(), 0.0))
        stats = r.stats()
        cfg = _PS_CFG
        assert stats["topics"] <= cfg.max_topics + len(r.subscriptions)
        assert all(len(s.topics) <= cfg.max_topics_per_peer + len(r.subscriptions) for s in r.peers.values())
        assert stats["mcache"] <= cfg.max_mcache_messages
        assert stats["seen"] <= cfg.max_seen
        assert all(isinstance(t, str) for t in r.topics), "a non-str topic entered the router's tables"
        assert self._out.dials <= self._rpcs * 2 * cfg.max_px_peers


HARNESSES = [IdentifyHarness, KadHarness, GossipsubHarness]
