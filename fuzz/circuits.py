"""Harnesses for circuit relay v2 messages (hop / stop, reservations with vouchers) and rendezvous
requests and responses."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from mycel.core.errors import DecodeError, InvalidSignature, ProtocolViolation
from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.host import Host
from mycel.protocols.relay.messages import (
    RelayError,
    decode_hop,
    decode_stop,
    limit_from_pb,
    open_voucher,
    parse_peer,
    seal_voucher,
    status_of,
)
from mycel.protocols.rendezvous import rendezvous_pb2
from mycel.protocols.rendezvous.core import Refused
from mycel.protocols.rendezvous.service import Rendezvous, _parse
from mycel.testing.hosts import memory_hosts

from fuzz.core import Harness, Source, blob, chance, mutate, pick
from fuzz.records import _ADDRS, _field, gen_multiaddr_bytes, gen_peer_record_envelope, identities, pb_varint
from fuzz.services import _SLOW

_RELAY = Identity.from_seed(b"\x61" * 32)
_CLIENT = Identity.from_seed(b"\x62" * 32)
_STATUSES = (0, 100, 200, 201, 202, 203, 204, 400, 401)


def _addrs(src: Source) -> bytes:
    """Address fields: a few valid ones mostly; else garbage among them, or hundreds."""
    n = src.int(0, 3) if chance(src, 92) else src.int(5, 200)
    hostile = chance(src, 25)
    return b"".join(_field(2, gen_multiaddr_bytes(src) if hostile else pick(src, _ADDRS)) for _ in range(n))


def _peer(src: Source) -> bytes:
    pid = pick(src, identities()).peer_id.to_bytes() if chance(src, 90) else blob(src, 40)
    return (_field(1, pid) if chance(src, 97) else b"") + _addrs(src)


def _voucher(src: Source) -> bytes:
    kind = src.int(0, 9)
    relay_key = _RELAY.private_key if kind < 8 else pick(src, identities()).private_key
    relay = _RELAY.peer_id if chance(src, 90) else pick(src, identities()).peer_id
    peer = _CLIENT.peer_id if chance(src, 90) else pick(src, identities()).peer_id
    env = seal_voucher(relay_key, relay, peer, pick(src, (0, 1, (1 << 64) - 1, src.int(0, 1 << 40))))
    return mutate(src, env) if chance(src, 10) else env


def gen_circuit_message(src: Source, hop: bool) -> bytes:
    """A HopMessage or StopMessage with hostile fields: unknown types and statuses, CONNECT without or
    with a garbage peer, hundreds of addresses, reservations with forged or foreign vouchers, limits at
    the integer bounds."""
    out = b""
    t = src.int(0, 2 if hop else 1) if chance(src, 95) else src.int(3, 1 << 31)
    connect, status = (1, 2) if hop else (0, 1)
    if chance(src, 97):
        out += _field(1, t)
    if chance(src, 92 if t == connect else 30):
        out += _field(2, _peer(src))
    if hop and chance(src, 50):
        rsv = b""
        if chance(src, 80):
            rsv += _field(1, pick(src, (0, 1, (1 << 64) - 1, src.int(0, 1 << 40))))
        rsv += _addrs(src)
        if chance(src, 80):
            rsv += _field(3, _voucher(src))
        out += _field(3, rsv)
    if chance(src, 40):
        lim = b""
        if chance(src, 70):
            lim += _field(1, pick(src, (0, 1, 120, 0xFFFFFFFF, src.int(0, 1 << 33))))
        if chance(src, 70):
            lim += _field(2, pick(src, (0, 1, 1 << 17, (1 << 64) - 1)))
        out += _field(4 if hop else 3, lim)
    if chance(src, 92 if t == status else 30):
        out += _field(5 if hop else 4, pick(src, _STATUSES) if chance(src, 90) else src.int(0, 1000))
    if chance(src, 5):
        out += pb_varint(src.int(6, 30) << 3 | 2) + pb_varint(3) + b"abc"
    return mutate(src, out) if chance(src, 8) else out


class RelayHarness(Harness):
    """``decode_hop`` / ``decode_stop`` (what the relay, the client and the stop side read), then what
    a client does with a reservation or a status: the voucher opened for the expected relay and peer,
    the limit, the peer of a CONNECT. Invariants: what decodes has a known type; a voucher that opens
    names exactly the relay and the peer asked for."""

    name = "relay"
    expected = (ProtocolViolation, RelayError, InvalidSignature)
    min_past_ratio = 0.5

    def one(self, src: Source) -> None:
        hop = chance(src, 60)
        body = gen_circuit_message(src, hop)
        msg = decode_hop(body) if hop else decode_stop(body)
        self.past = True
        status_of(msg)
        limit_from_pb(msg.limit)
        if msg.HasField("peer") and msg.peer.id:
            parse_peer(msg.peer, "peer")
        if hop and msg.HasField("reservation") and msg.reservation.HasField("voucher"):
            voucher = open_voucher(msg.reservation.voucher, _RELAY.peer_id, _CLIENT.peer_id)
            assert voucher.relay == _RELAY.peer_id and voucher.peer == _CLIENT.peer_id
        self.deep = True


def gen_rendezvous(src: Source, sender: Identity) -> bytes:
    """A rendezvous Message of every type: REGISTER with signed records (the sender's, another peer's,
    forged, oversized), namespaces from empty to far over the bound, TTLs at the uint64 bound, DISCOVER
    with hostile limits and cookies, and responses with many registrations (for the client side)."""

    def ns() -> bytes:
        k = src.int(0, 9)
        return b"ns" if k < 6 else (b"" if k == 6 else (b"n" * src.int(200, 400) if k < 9 else b"\xff\xfe"))

    t = pick(src, (0, 0, 2, 3, 3, 4)) if chance(src, 93) else src.int(1, 1000)
    out = _field(1, t)
    if t == 0 or chance(src, 10):
        reg = _field(1, ns())
        if chance(src, 95):
            rec = gen_peer_record_envelope(src, sender.private_key if chance(src, 80) else None)
            reg += _field(2, rec)
        if chance(src, 60):
            reg += _field(3, pick(src, (0, 1, 7200, 72 * 3600 + 1, (1 << 64) - 1)))
        out += _field(2, reg)
    if t == 2 or chance(src, 10):
        out += _field(4, _field(1, ns()) + (_field(2, blob(src, 40)) if chance(src, 30) else b""))
    if t == 3 or chance(src, 10):
        disc = _field(1, ns())
        if chance(src, 60):
            disc += _field(2, pick(src, (0, 1, 100, 1000, (1 << 64) - 1)))
        if chance(src, 30):
            disc += _field(3, blob(src, 60))
        out += _field(5, disc)
    if t == 4:
        resp = b""
        for _ in range(src.int(0, 5) if chance(src, 90) else src.int(50, 200)):
            who = pick(src, identities())
            reg = _field(1, ns()) + _field(2, gen_peer_record_envelope(src, who.private_key))
            resp += _field(1, reg + _field(3, src.int(0, 1 << 20)))
        out += _field(6, resp)
    return mutate(src, out) if chance(src, 8) else out


class RendezvousHarness(Harness):
    """A rendezvous point's ``_answer`` to requests from a connected peer (register, unregister,
    discover), and the client's ``_verify`` of the registrations in DISCOVER responses. Invariants: the
    store stays within its per-namespace / per-peer bounds; every stored or verified registration is of
    the peer whose record it is; answers to DISCOVER are bounded."""

    name = "rendezvous"
    expected = (ProtocolViolation, Refused, DecodeError, InvalidSignature)
    min_past_ratio = 0.6

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        async with memory_hosts(1, services=lambda: [Rendezvous(server=True)], **_SLOW) as (host,):
            self._host: Host = host
            self._sender = identities()[0]
            yield

    def one(self, src: Source) -> None:
        host = self._host
        svc = host.service(Rendezvous)
        request = _parse(gen_rendezvous(src, self._sender))
        self.past = True
        if request.type == rendezvous_pb2.Message.DISCOVER_RESPONSE:
            for reg in request.discoverResponse.registrations:
                found = svc._verify(host.peer_id, "", reg)
                if found is not None:
                    assert found.addrs
                    assert isinstance(found.peer, PeerId)
            self.deep = True
            return
        response = svc._answer(host, self._sender.peer_id, request)
        self.deep = True
        store = svc.store
        limits = svc.limits
        assert store.count(self._sender.peer_id) <= limits.max_per_peer
        if response is not None and response.HasField("discoverResponse"):
            assert len(response.discoverResponse.registrations) <= limits.max_discover
        if chance(src, 2):
            store.expire(1e12)  # now and then the store empties (time passes): registrations are taken again


HARNESSES = [RelayHarness, RendezvousHarness]
