"""The rendezvous point's registrations, sans-IO: what a server keeps and how it answers.

:class:`RegistrationStore` takes every request with the authenticated peer that sent it and ``now`` (seconds
on any monotonic clock); it does no I/O, reads no clock and draws no randomness (the cookie ``epoch`` is
given in). Refusals raise :class:`Refused` with the spec's status; the driver turns them into responses.

Bounds (:class:`Limits`), and what happens at each:

* a namespace is 1..255 bytes of UTF-8 (``E_INVALID_NAMESPACE``); a TTL outside ``[min_ttl, max_ttl]``
  (defaults: the spec's recommended 2 h .. 72 h) is ``E_INVALID_TTL``; no TTL means ``default_ttl`` (2 h);
* a record larger than ``max_record_size``, undecodable, badly signed or with no addresses is
  ``E_INVALID_SIGNED_PEER_RECORD``; a valid record of another peer than the sender is ``E_NOT_AUTHORIZED``;
* a peer holding ``max_per_peer`` registrations (the spec's 1000) gets ``E_NOT_AUTHORIZED`` for a new
  namespace (refreshing one it holds always works); a full namespace (``max_per_namespace``) or a full
  store (``max_registrations``) is ``E_UNAVAILABLE`` — nothing is evicted to make room;
* a DISCOVER returns at most ``max_discover`` registrations (the spec's 1000) and at most
  ``max_response_bytes`` of them, oldest first; the cookie it returns asks for what came after.

Cookies are stateless (nothing is kept per asker): ``01 || epoch(8) || seq(8) || namespace``, where ``seq``
is the store's registration counter. A refreshed registration gets a new ``seq``, so a poller holding a
cookie sees it again. A cookie of another store (``epoch``), for another namespace, from the future or
malformed is ``E_INVALID_COOKIE``.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

from google.protobuf.message import DecodeError as _PbDecodeError
from multiaddr import Multiaddr

from mycel.core.errors import DecodeError, InvalidSignature, MycelError
from mycel.core.peer_id import PeerId
from mycel.core.record import _parse_multiaddr, open_peer_record  # the canonical-bytes check peer records use
from mycel.protocols.rendezvous import rendezvous_pb2

__all__ = [
    "DEFAULT_TTL",
    "MAX_NAMESPACE_LENGTH",
    "MAX_TTL",
    "MIN_TTL",
    "Limits",
    "Refused",
    "Registration",
    "RegistrationStore",
    "Status",
    "decode_registration",
    "legacy_peer_info",
]

DEFAULT_TTL = 2 * 3600  # the spec: a REGISTER without ttl lasts 2 h
MIN_TTL = 2 * 3600  # the spec's recommended minimum
MAX_TTL = 72 * 3600  # the spec's upper bound
MAX_NAMESPACE_LENGTH = 255
MAX_LEGACY_ADDRS = 32  # addresses taken from an unsigned (py-libp2p) registration; more are refused
_COOKIE_VERSION = 1
_COOKIE_HEAD = 17  # version, epoch, seq


class Status(IntEnum):
    """``Message.ResponseStatus``."""

    OK = 0
    E_INVALID_NAMESPACE = 100
    E_INVALID_SIGNED_PEER_RECORD = 101
    E_INVALID_TTL = 102
    E_INVALID_COOKIE = 103
    E_NOT_AUTHORIZED = 200
    E_INTERNAL_ERROR = 300
    E_UNAVAILABLE = 400


class Refused(MycelError):
    """A request the rendezvous point refuses (or a client was refused): ``status`` and ``text`` as sent."""

    def __init__(self, status: int, text: str) -> None:
        try:
            name = Status(status).name
        except ValueError:
            name = f"status {status}"
        super().__init__(f"{name}: {text}" if text else name)
        self.status = status
        self.text = text


@dataclass(frozen=True)
class Limits:
    """A rendezvous point's bounds (see the module's docstring for what happens at each)."""

    min_ttl: float = MIN_TTL
    """Shortest TTL accepted, seconds (the spec recommends 2 h); shorter: ``E_INVALID_TTL``."""
    max_ttl: float = MAX_TTL
    """Longest TTL accepted, seconds (the spec's bound, 72 h); longer: ``E_INVALID_TTL``."""
    default_ttl: float = DEFAULT_TTL
    """The TTL of a REGISTER that names none (the spec's 2 h)."""
    max_namespace_length: int = MAX_NAMESPACE_LENGTH
    """Longest namespace, in UTF-8 bytes (the spec's 255)."""
    max_per_peer: int = 1000
    """Registrations one peer may hold (the spec's 1000); a new one beyond: ``E_NOT_AUTHORIZED``."""
    max_per_namespace: int = 10_000
    """Registrations one namespace may hold; a new one beyond: ``E_UNAVAILABLE``."""
    max_registrations: int = 100_000
    """Registrations the point holds in all; a new one beyond: ``E_UNAVAILABLE``."""
    max_discover: int = 1000
    """Registrations in one DISCOVER response at most (the spec's 1000)."""
    max_record_size: int = 8 * 1024
    """Largest signed peer record taken, bytes; larger: ``E_INVALID_SIGNED_PEER_RECORD``."""
    max_response_bytes: int = 1 << 20
    """Bytes of registrations in one DISCOVER response at most; the cookie gives the rest."""

    def __post_init__(self) -> None:
        if not 0 < self.min_ttl <= self.default_ttl <= self.max_ttl:
            raise ValueError("need 0 < min_ttl <= default_ttl <= max_ttl")
        for name in ("max_namespace_length", "max_per_peer", "max_per_namespace", "max_registrations",
                     "max_discover", "max_record_size", "max_response_bytes"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass(frozen=True)
class Registration:
    """One peer in one namespace, as registered (and as it is handed out by DISCOVER)."""

    namespace: str
    peer: PeerId
    record: bytes
    """Register field 2 as the peer sent it: a signed peer record envelope, or (``signed`` False) the
    unsigned PeerInfo py-libp2p 0.8.1 sends."""
    addrs: tuple[Multiaddr, ...]
    """The addresses in the record."""
    signed: bool
    """True for a verified signed peer record, False for py-libp2p's unsigned PeerInfo."""
    expires: float
    """When it runs out, on the ``now`` clock the store was given."""
    seq: int
    """The store's counter when it was registered (refreshing gives a new one)."""

    def ttl(self, now: float) -> int:
        """Whole seconds it has left (at least 1 while it is live)."""
        return max(1, math.floor(self.expires - now))

    def to_pb(self, now: float, *, legacy: bool = False) -> rendezvous_pb2.Message.Register:
        """As a ``Register`` of a DISCOVER_RESPONSE; ``legacy``: the unsigned PeerInfo form py-libp2p
        0.8.1 reads (a signed record is then given as its peer id and addresses)."""
        record = self.record
        if legacy and self.signed:
            record = legacy_peer_info(self.peer, self.addrs)
        return rendezvous_pb2.Message.Register(ns=self.namespace, signedPeerRecord=record, ttl=self.ttl(now))


def legacy_peer_info(peer: PeerId, addrs: tuple[Multiaddr, ...] | list[Multiaddr]) -> bytes:
    """The unsigned PeerInfo py-libp2p 0.8.1 puts in Register field 2."""
    out: bytes = rendezvous_pb2.LegacyPeerInfo(id=peer.to_bytes(), addrs=[a.to_bytes() for a in addrs]).SerializeToString()
    return out


def _looks_legacy(record: bytes) -> bool:
    """True when field 2 holds a PeerInfo rather than an Envelope: both start with field 1 (tag 0x0a), but
    an envelope's is a PublicKey protobuf (first byte 0x08, its key type) and a PeerInfo's a multihash
    (identity 0x00 or sha2-256 0x12)."""
    if len(record) < 3 or record[0] != 0x0A:
        return False
    # skip the length varint
    i = 1
    while i < len(record) and record[i] & 0x80:
        i += 1
    return i + 1 < len(record) and record[i + 1] in (0x00, 0x12)


def decode_registration(record: bytes, *, allow_legacy: bool) -> tuple[PeerId, tuple[Multiaddr, ...], bool]:
    """Verify Register field 2: the peer, its addresses, and whether they were signed.

    A signed peer record is verified (signature, key matches its peer id). With ``allow_legacy``, an
    unsigned py-libp2p PeerInfo is also taken (its addresses are then only the sender's word). Raises
    :class:`~mycel.core.errors.DecodeError` or :class:`~mycel.core.errors.InvalidSignature`.
    """
    if allow_legacy and _looks_legacy(record):
        info = rendezvous_pb2.LegacyPeerInfo()
        try:
            info.ParseFromString(record)
        except _PbDecodeError as exc:
            raise DecodeError(f"malformed PeerInfo: {exc}") from None
        if len(info.addrs) > MAX_LEGACY_ADDRS:
            raise DecodeError(f"PeerInfo with {len(info.addrs)} addresses (at most {MAX_LEGACY_ADDRS})")
        return PeerId.from_bytes(info.id), tuple(_parse_multiaddr(bytes(a)) for a in info.addrs), False
    _, peer_record = open_peer_record(record)
    return peer_record.peer_id, peer_record.addrs, True


def _check_namespace(namespace: str, limits: Limits, *, allow_empty: bool) -> None:
    size = len(namespace.encode("utf-8"))
    if size == 0 and not allow_empty:
        raise Refused(Status.E_INVALID_NAMESPACE, "empty namespace")
    if size > limits.max_namespace_length:
        raise Refused(Status.E_INVALID_NAMESPACE, f"namespace of {size} bytes (at most {limits.max_namespace_length})")


class RegistrationStore:
    """The registrations of a rendezvous point (see the module's docstring).

    ``epoch``: 8 random bytes, given by the driver, that tie cookies to this store. ``allow_legacy``: also
    take py-libp2p 0.8.1's unsigned registrations (off by default: the spec wants signed records).
    """

    def __init__(self, epoch: bytes, limits: Limits | None = None, *, allow_legacy: bool = False) -> None:
        if len(epoch) != 8:
            raise ValueError("epoch is 8 bytes")
        self.limits = limits or Limits()
        self.allow_legacy = allow_legacy
        self._epoch = bytes(epoch)
        self._seq = 0
        # namespace -> peer -> registration, in seq order (a refresh is moved to the end)
        self._namespaces: dict[str, dict[PeerId, Registration]] = {}
        self._all: dict[tuple[str, PeerId], Registration] = {}  # every registration, in seq order
        self._per_peer: dict[PeerId, int] = {}
        self._expiry: list[tuple[float, int, str, PeerId]] = []  # heap; stale entries skipped, rebuilt when large

    def __len__(self) -> int:
        return len(self._all)

    def namespaces(self) -> list[str]:
        """The namespaces with at least one registration."""
        return list(self._namespaces)

    def registrations(self, namespace: str | None = None) -> list[Registration]:
        """The registrations held (of one namespace, or all), oldest first; expired ones may remain until
        the next :meth:`expire`."""
        if namespace is None:
            return list(self._all.values())
        return list(self._namespaces.get(namespace, {}).values())

    def count(self, peer: PeerId) -> int:
        """How many registrations ``peer`` holds."""
        return self._per_peer.get(peer, 0)

    # --- requests ------------------------------------------------------------------------------------

    def register(self, sender: PeerId, namespace: str, record: bytes, ttl: float | None, now: float) -> Registration:
        """REGISTER from ``sender``: store (or refresh) its registration in ``namespace``; the granted TTL
        is ``registration.ttl(now)``. Raises :class:`Refused`."""
        self.expire(now)
        limits = self.limits
        _check_namespace(namespace, limits, allow_empty=False)
        if ttl is None:
            ttl = limits.default_ttl
        if not limits.min_ttl <= ttl <= limits.max_ttl:
            raise Refused(Status.E_INVALID_TTL, f"ttl {ttl:g} s outside {limits.min_ttl:g}..{limits.max_ttl:g} s")
        if len(record) > limits.max_record_size:
            raise Refused(Status.E_INVALID_SIGNED_PEER_RECORD, f"record of {len(record)} bytes (at most {limits.max_record_size})")
        if not record:
            raise Refused(Status.E_INVALID_SIGNED_PEER_RECORD, "no signed peer record")
        try:
            peer, addrs, signed = decode_registration(record, allow_legacy=self.allow_legacy)
        except (DecodeError, InvalidSignature, ValueError) as exc:
            raise Refused(Status.E_INVALID_SIGNED_PEER_RECORD, str(exc)) from None
        if peer != sender:
            raise Refused(Status.E_NOT_AUTHORIZED, f"a record of {peer} registered by {sender}: peers register only themselves")
        if not addrs:
            raise Refused(Status.E_INVALID_SIGNED_PEER_RECORD, "the record has no addresses")
        members = self._namespaces.get(namespace)
        held = members.get(sender) if members is not None else None
        if held is None:
            if self._per_peer.get(sender, 0) >= limits.max_per_peer:
                raise Refused(Status.E_NOT_AUTHORIZED, f"{limits.max_per_peer} registrations per peer")
            if members is not None and len(members) >= limits.max_per_namespace:
                raise Refused(Status.E_UNAVAILABLE, f"namespace full ({limits.max_per_namespace} registrations)")
            if len(self._all) >= limits.max_registrations:
                raise Refused(Status.E_UNAVAILABLE, f"rendezvous point full ({limits.max_registrations} registrations)")
        self._seq += 1
        reg = Registration(namespace, sender, bytes(record), addrs, signed, now + ttl, self._seq)
        if members is None:
            members = self._namespaces[namespace] = {}
        if held is not None:
            del members[sender]
            del self._all[(namespace, sender)]
        else:
            self._per_peer[sender] = self._per_peer.get(sender, 0) + 1
        members[sender] = reg
        self._all[(namespace, sender)] = reg
        heapq.heappush(self._expiry, (reg.expires, reg.seq, namespace, sender))
        if len(self._expiry) > 2 * len(self._all) + 64:
            self._expiry = [(r.expires, r.seq, r.namespace, r.peer) for r in self._all.values()]
            heapq.heapify(self._expiry)
        return reg

    def unregister(self, sender: PeerId, namespace: str, now: float) -> bool:
        """UNREGISTER from ``sender``: drop its registration in ``namespace`` (a no-op, False, when it has
        none). Raises :class:`Refused` for an invalid namespace (the driver only logs it: no response)."""
        self.expire(now)
        _check_namespace(namespace, self.limits, allow_empty=False)
        return self._remove(namespace, sender)

    def discover(
        self, namespace: str, limit: int | None, cookie: bytes | None, now: float
    ) -> tuple[list[Registration], bytes]:
        """DISCOVER: registrations of ``namespace`` (all namespaces when empty) newer than ``cookie``, oldest
        first, at most ``limit`` (0 or None: ``max_discover``) and ``max_response_bytes``; and the cookie
        for the next call. Raises :class:`Refused`."""
        self.expire(now)
        limits = self.limits
        _check_namespace(namespace, limits, allow_empty=True)
        after = self._open_cookie(cookie, namespace) if cookie else 0
        count = limits.max_discover if not limit else min(limit, limits.max_discover)
        held: dict[PeerId, Registration] | dict[tuple[str, PeerId], Registration]
        held = self._namespaces.get(namespace, {}) if namespace else self._all
        source: Iterator[Registration]
        if after:
            # held is in seq order: walk back from the newest to the cookie (a poller near the end costs
            # only what is new), then hand those out oldest first
            newer = list(itertools.takewhile(lambda r: r.seq > after, reversed(held.values())))
            source = reversed(newer)
        else:
            source = iter(held.values())
        out: list[Registration] = []
        budget = limits.max_response_bytes
        last = after
        for reg in source:
            if len(out) >= count:
                break
            size = len(reg.record) + len(reg.namespace) + 24  # the Register entry and its framing
            if out and size > budget:
                break
            budget -= size
            out.append(reg)
            last = reg.seq
        return out, self._cookie(last, namespace)

    def expire(self, now: float) -> int:
        """Drop registrations whose TTL ran out by ``now``; how many were dropped."""
        dropped = 0
        while self._expiry and self._expiry[0][0] <= now:
            _, seq, namespace, peer = heapq.heappop(self._expiry)
            reg = self._all.get((namespace, peer))
            if reg is not None and reg.seq == seq:
                self._remove(namespace, peer)
                dropped += 1
        return dropped

    def next_deadline(self) -> float:
        """When the next registration expires (``inf`` when none is held)."""
        return self._expiry[0][0] if self._expiry else math.inf

    # --- internals -----------------------------------------------------------------------------------

    def _remove(self, namespace: str, peer: PeerId) -> bool:
        members = self._namespaces.get(namespace)
        if members is None or peer not in members:
            return False
        del members[peer]
        if not members:
            del self._namespaces[namespace]
        del self._all[(namespace, peer)]
        left = self._per_peer[peer] - 1
        if left:
            self._per_peer[peer] = left
        else:
            del self._per_peer[peer]
        return True

    def _cookie(self, seq: int, namespace: str) -> bytes:
        return bytes([_COOKIE_VERSION]) + self._epoch + seq.to_bytes(8, "big") + namespace.encode("utf-8")

    def _open_cookie(self, cookie: bytes, namespace: str) -> int:
        if len(cookie) < _COOKIE_HEAD or cookie[0] != _COOKIE_VERSION:
            raise Refused(Status.E_INVALID_COOKIE, "malformed cookie")
        if cookie[1:9] != self._epoch:
            raise Refused(Status.E_INVALID_COOKIE, "a cookie of another rendezvous point (or before a restart)")
        if cookie[_COOKIE_HEAD:] != namespace.encode("utf-8"):
            raise Refused(Status.E_INVALID_COOKIE, "a cookie for another namespace")
        seq = int.from_bytes(cookie[9:17], "big")
        if seq > self._seq:
            raise Refused(Status.E_INVALID_COOKIE, "a cookie from the future")
        return seq
