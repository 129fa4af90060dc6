"""The rendezvous service (``/rendezvous/1.0.0``): a client that registers, refreshes and discovers, and,
with ``server=True``, a rendezvous point serving the :class:`~mycel.protocols.rendezvous.core.RegistrationStore`.

Every client request opens a stream of its own (as go and py-libp2p do); a server answers any number of
requests on a stream, up to ``MAX_REQUESTS_PER_STREAM``. Inbound requests above ``MAX_REQUEST_SIZE``,
undecodable protobufs, a request without its body or a message type a client never sends close that
stream with a typed error (:class:`~mycel.core.errors.ProtocolViolation`), logged with the peer and the
reason; refusals of well-formed requests are answered with the spec's status codes.

py-libp2p 0.8.1 speaks an older dialect (``py_libp2p_compat=True`` opts in; README of this package):
its REGISTER carries an unsigned ``PeerInfo`` where the spec has a signed peer record. With the flag, a
server takes those (only for the sender's own id), and answers a DISCOVER from a peer whose identify
agent is ``py-libp2p/...`` in that form; a client reads them, and re-registers in that form at a server
that refused its signed record with ``E_NOT_AUTHORIZED`` (what py's server answers to one).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple, cast

import trio
from multiaddr import Multiaddr

from mycel.core.abc import MuxedStream
from mycel.core.errors import DecodeError, InvalidSignature, MycelError, ProtocolViolation
from mycel.core.framing import receive_message, send_message
from mycel.core.peer_id import PeerId
from mycel.core.record import seal_peer_record
from mycel.protocols.rendezvous import rendezvous_pb2
from mycel.protocols.rendezvous.core import (
    MAX_TTL,
    Limits,
    Refused,
    RegistrationStore,
    Status,
    decode_registration,
    legacy_peer_info,
)
from mycel.service import Service, ServiceHost, StreamHandler, not_running

log = logging.getLogger("mycel.protocols.rendezvous")

PROTOCOL = "/rendezvous/1.0.0"
MAX_REQUEST_SIZE = 64 * 1024  # a server's cap on an inbound message (a REGISTER's record is at most 8 KiB)
MAX_RESPONSE_SIZE = 4 * 1024 * 1024  # a client's cap on a response (py-libp2p's cap on every message)
MAX_REQUESTS_PER_STREAM = 1000  # an inbound stream serving more is closed (a new one may follow)
MAX_HELD = 1000  # registrations a client keeps refreshed (the spec's per-peer bound); beyond, register() refuses
REFRESH_AT = 7 / 8  # a registration is refreshed when this much of its granted TTL has passed
RETRY_MIN = 60.0  # a failed refresh is retried after this, doubling up to RETRY_MAX
RETRY_MAX = 1800.0
PY_AGENT = "py-libp2p/"
IDENTIFY_WAIT = 2.0  # compat: how long a DISCOVER waits for identify to name the asker's implementation
MAX_IDENTIFY_WAITS = 1024  # peers waited for at once; beyond, a DISCOVER is answered in the spec's form

Message = rendezvous_pb2.Message
SOURCE = "rendezvous"


@dataclass(frozen=True)
class DiscoveredPeer:
    """A registration a rendezvous point gave us."""

    peer: PeerId
    """The registered peer."""
    addrs: tuple[Multiaddr, ...]
    """Its addresses (without ``/p2p``)."""
    namespace: str
    """The namespace it registered in."""
    ttl: int
    """Seconds the registration has left (the point's word, capped at 72 h)."""
    signed: bool
    """The addresses came in a verified signed peer record (False: py-libp2p's unsigned form)."""


class DiscoverResult(NamedTuple):
    """What :meth:`Rendezvous.discover` returns: ``peers, cookie = await rv.discover(...)``."""

    peers: list[DiscoveredPeer]
    cookie: bytes
    """Give it to the next ``discover`` of the same namespace at the same point to get only newer ones."""


@dataclass
class _Held:
    """A registration the client keeps refreshed."""

    ttl: float | None
    granted: float
    refresh_at: float
    failures: int = 0
    busy: bool = False


class Rendezvous(Service):
    """Rendezvous as a host service: always a client; also a rendezvous point with ``server=True``.

    ``limits``: the point's bounds (:class:`~mycel.protocols.rendezvous.core.Limits`). ``request_timeout``
    bounds each client request. ``py_libp2p_compat``: interoperate with py-libp2p 0.8.1's unsigned
    registrations (see the module's docstring); off, only signed peer records are sent and accepted.
    """

    def __init__(
        self,
        *,
        server: bool = False,
        limits: Limits | None = None,
        py_libp2p_compat: bool = False,
        request_timeout: float = 30.0,
    ) -> None:
        self.server = server
        self.limits = limits or Limits()
        self.py_libp2p_compat = py_libp2p_compat
        self.request_timeout = request_timeout
        self._host: ServiceHost | None = None
        self._store: RegistrationStore | None = None
        self._held: dict[tuple[PeerId, str], _Held] = {}
        self._identified: dict[PeerId, trio.Event] = {}  # compat: DISCOVERs waiting for identify
        self._legacy_servers: set[PeerId] = set()  # points that took only the unsigned form (compat)
        self._wake = trio.Event()
        self._record: tuple[tuple[Multiaddr, ...], bytes] | None = None
        self._last_seq = 0
        self.stats: dict[str, int] = dict.fromkeys(
            ("requests_served", "refused", "bad_requests", "requests_sent", "refreshes", "refresh_failures",
             "dropped_registrations"),
            0,
        )  # fmt: skip
        """Requests served, refused (answered with an error status) and bad (stream closed); requests sent,
        refreshes done and failed; registrations in DISCOVER responses that did not verify."""

    # --- Service ---------------------------------------------------------------------------------------

    def handlers(self) -> Mapping[str, StreamHandler]:
        """The rendezvous handler, when this is a rendezvous point."""
        return {PROTOCOL: self._serve} if self.server else {}

    async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the store (a point) and refresh our registrations before they expire."""
        self._host = host
        if self.server:
            self._store = RegistrationStore(os.urandom(8), self.limits, allow_legacy=self.py_libp2p_compat)
        task_status.started()
        while True:
            deadline = min((h.refresh_at for h in self._held.values() if not h.busy), default=math.inf)
            with trio.move_on_at(deadline):
                await self._wake.wait()
            if self._wake.is_set():
                self._wake = trio.Event()
            now = trio.current_time()
            for key, held in list(self._held.items()):
                if held.refresh_at <= now and not held.busy:
                    held.busy = True
                    host.spawn(self._refresh, key, held)

    def local_addrs_changed(self, host: ServiceHost) -> None:
        """Our addresses changed: refresh every registration now, with a record of the new ones."""
        now = trio.current_time()
        for held in self._held.values():
            held.refresh_at = min(held.refresh_at, now)
        self._wake.set()

    # --- the client ------------------------------------------------------------------------------------

    def _running(self) -> ServiceHost:
        if self._host is None:
            raise not_running(self)
        return self._host

    async def register(self, namespace: str, *, server: PeerId, ttl: float | None = None) -> float:
        """Register this host in ``namespace`` at the rendezvous point ``server`` (connected to if need be),
        for ``ttl`` seconds (None: the point's default, 2 h). Returns the TTL granted; the registration is
        refreshed before it runs out until :meth:`unregister`. Raises
        :class:`~mycel.protocols.rendezvous.core.Refused` with the point's status, ``trio.TooSlowError``
        after ``request_timeout``, a :class:`~mycel.core.errors.MycelError` when the point is unreachable
        or answers garbage."""
        host = self._running()
        if ttl is not None and not 0 < ttl < 2**63:
            raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")
        key = (server, namespace)
        if key not in self._held and len(self._held) >= MAX_HELD:
            raise Refused(Status.E_NOT_AUTHORIZED, f"this client already keeps {MAX_HELD} registrations")
        granted = await self._register_once(host, namespace, server, ttl)
        now = trio.current_time()
        self._held[key] = _Held(ttl, granted, now + granted * REFRESH_AT)
        self._wake.set()
        log.info("registered in %r at %s for %g s", namespace, server, granted)
        return granted

    async def _register_once(self, host: ServiceHost, namespace: str, server: PeerId, ttl: float | None) -> float:
        legacy = server in self._legacy_servers
        try:
            return await self._send_register(host, namespace, server, ttl, legacy=legacy)
        except Refused as exc:
            if legacy or not self.py_libp2p_compat or exc.status != Status.E_NOT_AUTHORIZED:
                raise
        # py-libp2p 0.8.1 reads our signed record as its PeerInfo, sees another id and says E_NOT_AUTHORIZED
        granted = await self._send_register(host, namespace, server, ttl, legacy=True)
        log.info("%s takes only unsigned (py-libp2p) registrations", server)
        if len(self._legacy_servers) < MAX_HELD:
            self._legacy_servers.add(server)
        return granted

    async def _send_register(
        self, host: ServiceHost, namespace: str, server: PeerId, ttl: float | None, *, legacy: bool
    ) -> float:
        addrs = tuple(host.advertised_addrs)
        if not addrs:
            raise Refused(Status.E_INVALID_SIGNED_PEER_RECORD, "this host has no address to register")
        record = legacy_peer_info(host.peer_id, addrs) if legacy else self._signed_record(host, addrs)
        body = Message.Register(ns=namespace, signedPeerRecord=record)
        if ttl is None and self.py_libp2p_compat:
            ttl = self.limits.default_ttl  # py's server reads a missing ttl as 0 and refuses it
        if ttl is not None:
            body.ttl = math.ceil(ttl)
        response = await self._ask(server, Message(type=Message.REGISTER, register=body))
        answer = _answer_of(server, response, "registerResponse").registerResponse
        if answer.ttl:
            return float(min(answer.ttl, MAX_TTL))
        return float(ttl if ttl is not None else self.limits.default_ttl)  # a point that names no TTL

    def _signed_record(self, host: ServiceHost, addrs: tuple[Multiaddr, ...]) -> bytes:
        if self._record is None or self._record[0] != addrs:
            seq = max(time.time_ns(), self._last_seq + 1)
            self._last_seq = seq
            self._record = (addrs, seal_peer_record(host.identity.private_key, addrs, seq).to_bytes())
        return self._record[1]

    async def _refresh(self, key: tuple[PeerId, str], held: _Held) -> None:
        host = self._running()
        server, namespace = key
        if self._held.get(key) is not held:  # unregistered (or registered anew) since it was due
            held.busy = False
            return
        try:
            granted = await self._register_once(host, namespace, server, held.ttl)
        except (MycelError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.stats["refresh_failures"] += 1
            held.failures += 1
            delay = min(RETRY_MIN * 2 ** (held.failures - 1), RETRY_MAX)
            held.refresh_at = trio.current_time() + delay
            log.info("refreshing %r at %s failed (%s); again in %g s", namespace, server, exc, delay)
        else:
            self.stats["refreshes"] += 1
            held.failures = 0
            held.granted = granted
            held.refresh_at = trio.current_time() + granted * REFRESH_AT
            log.debug("refreshed %r at %s for %g s", namespace, server, granted)
            if key not in self._held:  # unregister() ran while this REGISTER was on its way: undo it
                try:
                    await self._send_unregister(host, namespace, server)
                except (MycelError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    log.info("could not take back the refresh of %r at %s (it expires)", namespace, server)
        finally:
            held.busy = False
            self._wake.set()

    async def unregister(self, namespace: str, *, server: PeerId) -> None:
        """Stop refreshing our registration in ``namespace`` at ``server`` and tell it (UNREGISTER has no
        response). Raises as :meth:`register` when the point cannot be reached."""
        host = self._running()
        self._held.pop((server, namespace), None)
        self._wake.set()
        await self._send_unregister(host, namespace, server)

    async def _send_unregister(self, host: ServiceHost, namespace: str, server: PeerId) -> None:
        body = Message.Unregister(ns=namespace, id=host.peer_id.to_bytes())
        await self._ask(server, Message(type=Message.UNREGISTER, unregister=body), answer=False)

    def registered(self) -> list[tuple[PeerId, str]]:
        """The (point, namespace) registrations this client keeps refreshed."""
        return list(self._held)

    async def discover(
        self, namespace: str = "", *, server: PeerId, limit: int | None = None, cookie: bytes | None = None
    ) -> DiscoverResult:
        """Ask ``server`` for the peers registered in ``namespace`` (empty: every namespace), at most
        ``limit`` (None: as many as the point gives, at most 1000), only those newer than ``cookie``.

        Each peer whose registration verifies is reported to the host (``host.peer_found(..., "rendezvous",
        ttl)``: kept in the peerstore, connected to within ``discovery_connect``); a signed record also goes
        to the peerstore as the peer's certified addresses. Registrations that do not verify are dropped
        and counted (``stats["dropped_registrations"]``). Raises as :meth:`register`."""
        host = self._running()
        body = Message.Discover(ns=namespace)
        if limit is not None:
            body.limit = limit
        if cookie:
            body.cookie = cookie
        response = await self._ask(server, Message(type=Message.DISCOVER, discover=body))
        answer = _answer_of(server, response, "discoverResponse").discoverResponse
        peers: list[DiscoveredPeer] = []
        for reg in answer.registrations[: limit or self.limits.max_discover]:
            found = self._verify(server, namespace, reg)
            if found is None:
                self.stats["dropped_registrations"] += 1
                continue
            peers.append(found)
            if found.peer == host.peer_id:
                continue
            if found.signed:
                try:
                    host.peerstore.consume_peer_record(reg.signedPeerRecord, found.ttl, expected_peer=found.peer)
                except (DecodeError, InvalidSignature) as exc:  # verified above; kept for a peerstore's own checks
                    log.debug("peer record of %s not kept: %s", found.peer, exc)
            host.peer_found(found.peer, found.addrs, SOURCE, ttl=found.ttl)
        return DiscoverResult(peers, bytes(answer.cookie))

    def _verify(self, server: PeerId, namespace: str, reg: rendezvous_pb2.Message.Register) -> DiscoveredPeer | None:
        if namespace and reg.ns != namespace:
            log.info("%s answered a DISCOVER of %r with a registration in %r: dropped", server, namespace, reg.ns)
            return None
        try:
            peer, addrs, signed = decode_registration(reg.signedPeerRecord, allow_legacy=self.py_libp2p_compat)
        except (DecodeError, InvalidSignature, ValueError) as exc:
            log.info("registration from %s in %r does not verify: %s", server, reg.ns, exc)
            return None
        if not addrs:
            log.info("registration of %s from %s in %r has no address: dropped", peer, server, reg.ns)
            return None
        ttl = int(min(reg.ttl, MAX_TTL)) if reg.ttl else int(self.limits.default_ttl)
        return DiscoveredPeer(peer, addrs, reg.ns, ttl, signed)

    async def _ask(self, server: PeerId, request: rendezvous_pb2.Message, *, answer: bool = True) -> rendezvous_pb2.Message:
        host = self._running()
        self.stats["requests_sent"] += 1
        with trio.fail_after(self.request_timeout):
            stream = await host.new_stream(server, PROTOCOL)
            try:
                await send_message(stream, request.SerializeToString())
                if not answer:
                    await stream.send_eof()
                    return Message()
                data = await receive_message(stream, MAX_RESPONSE_SIZE)
            finally:
                with trio.CancelScope(shield=True):
                    await _close_quietly(stream)
        if data is None:
            raise DecodeError(f"{server} closed the stream without answering")
        return _parse(data)

    # --- the rendezvous point --------------------------------------------------------------------------

    @property
    def store(self) -> RegistrationStore:
        """The point's registrations (a server only)."""
        self._running()
        if self._store is None:
            raise not_running(self)
        return self._store

    async def _serve(self, stream: MuxedStream) -> None:
        host = self._running()
        sender = stream.connection.remote_peer
        for _ in range(MAX_REQUESTS_PER_STREAM):
            try:
                data = await receive_message(stream, MAX_REQUEST_SIZE)
                if data is None:
                    return
                request = _parse(data)
                legacy = request.type == Message.DISCOVER and await self._speaks_legacy(host, sender)
                response = self._answer(host, sender, request, legacy=legacy)
            except ProtocolViolation as exc:
                self.stats["bad_requests"] += 1
                log.info("rendezvous stream from %s closed: %s", sender, exc)
                return
            self.stats["requests_served"] += 1
            if response is not None:
                await send_message(stream, response.SerializeToString())
        log.info("rendezvous stream from %s closed after %d requests", sender, MAX_REQUESTS_PER_STREAM)

    async def _speaks_legacy(self, host: ServiceHost, sender: PeerId) -> bool:
        """Compat: whether ``sender`` is py-libp2p (its identify agent), waiting up to ``IDENTIFY_WAIT`` for
        identify when it has not told us yet (a py client asks right after connecting)."""
        if not self.py_libp2p_compat:
            return False
        if host.peerstore.agent_version(sender) is None and host.connections(sender):
            if sender in self._identified or len(self._identified) < MAX_IDENTIFY_WAITS:
                done = self._identified.setdefault(sender, trio.Event())
                with trio.move_on_after(IDENTIFY_WAIT):
                    await done.wait()
                if self._identified.get(sender) is done:  # identify did not come: forget the wait
                    del self._identified[sender]
        return (host.peerstore.agent_version(sender) or "").startswith(PY_AGENT)

    def peer_protocols_changed(self, host: ServiceHost, peer: PeerId, added: frozenset[str], removed: frozenset[str]) -> None:
        """Identify told us about ``peer``: a DISCOVER waiting for its agent version may go on."""
        done = self._identified.pop(peer, None)
        if done is not None:
            done.set()

    def peer_disconnected(self, host: ServiceHost, peer: PeerId) -> None:
        """Nothing more will be learnt of ``peer``."""
        self.peer_protocols_changed(host, peer, frozenset(), frozenset())

    def _answer(
        self, host: ServiceHost, sender: PeerId, request: rendezvous_pb2.Message, *, legacy: bool = False
    ) -> rendezvous_pb2.Message | None:
        store = self.store
        now = trio.current_time()
        t = request.type
        if t == Message.REGISTER:
            if not request.HasField("register"):
                raise DecodeError("REGISTER without its body")
            body = request.register
            try:
                reg = store.register(sender, body.ns, body.signedPeerRecord, body.ttl if body.HasField("ttl") else None, now)
            except Refused as exc:
                self.stats["refused"] += 1
                log.info("REGISTER of %s in %r refused: %s", sender, body.ns[:64], exc)
                return Message(type=Message.REGISTER_RESPONSE, registerResponse=Message.RegisterResponse(
                    status=_status(exc.status), statusText=exc.text))  # fmt: skip
            log.debug("registered %s in %r for %d s", sender, reg.namespace, reg.ttl(now))
            return Message(type=Message.REGISTER_RESPONSE, registerResponse=Message.RegisterResponse(
                status=_status(Status.OK), ttl=reg.ttl(now)))  # fmt: skip
        if t == Message.UNREGISTER:
            if not request.HasField("unregister"):
                raise DecodeError("UNREGISTER without its body")
            try:
                store.unregister(sender, request.unregister.ns, now)
            except Refused as exc:
                self.stats["refused"] += 1
                log.info("UNREGISTER of %s ignored: %s", sender, exc)
            return None
        if t == Message.DISCOVER:
            if not request.HasField("discover"):
                raise DecodeError("DISCOVER without its body")
            body = request.discover
            try:
                regs, cookie = store.discover(body.ns, body.limit, body.cookie, now)
            except Refused as exc:
                self.stats["refused"] += 1
                log.info("DISCOVER of %s in %r refused: %s", sender, body.ns[:64], exc)
                return Message(type=Message.DISCOVER_RESPONSE, discoverResponse=Message.DiscoverResponse(
                    status=_status(exc.status), statusText=exc.text))  # fmt: skip
            return Message(type=Message.DISCOVER_RESPONSE, discoverResponse=Message.DiscoverResponse(
                registrations=[r.to_pb(now, legacy=legacy) for r in regs], cookie=cookie, status=_status(Status.OK)))  # fmt: skip
        raise DecodeError(f"a client sent message type {t}")


def _answer_of(server: PeerId, response: rendezvous_pb2.Message, field: str) -> rendezvous_pb2.Message:
    """``response`` if it is the ``field`` answer with status OK: DecodeError for another message,
    :class:`Refused` for an error status."""
    kind = Message.REGISTER_RESPONSE if field == "registerResponse" else Message.DISCOVER_RESPONSE
    if response.type != kind or not response.HasField(field):
        raise DecodeError(f"{server} answered with message type {response.type}, not {field}")
    answer = getattr(response, field)
    if int(answer.status) != Status.OK:
        raise Refused(answer.status, answer.statusText)
    return response


def _status(status: int) -> rendezvous_pb2.Message.ResponseStatus:
    return cast(rendezvous_pb2.Message.ResponseStatus, status)


def _parse(data: bytes) -> rendezvous_pb2.Message:
    msg = Message()
    try:
        msg.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError, or a string field that is not UTF-8
        raise DecodeError(f"undecodable rendezvous message: {exc}") from None
    return msg


async def _close_quietly(stream: MuxedStream) -> None:
    try:
        await stream.aclose()
    except (MycelError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


__all__ = [
    "MAX_REQUEST_SIZE",
    "MAX_RESPONSE_SIZE",
    "PROTOCOL",
    "DiscoverResult",
    "DiscoveredPeer",
    "Rendezvous",
]
