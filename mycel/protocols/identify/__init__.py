"""Identify (``/ipfs/id/1.0.0``) and Identify Push (``/ipfs/id/push/1.0.0``).

On every new connection we ask the remote who it is; we answer the same question with our public key,
listen addresses, protocols, the address we observe the asker on, and a signed peer record. Go splits
large messages, so up to MAX_MESSAGES delimited messages are read until EOF and merged.

What we learn goes to the peerstore with its provenance (listen addresses as IDENTIFY, those of a
verified signed peer record as CERTIFIED; addresses the user gave are never overwritten) and the
peer's protocols go through ``host.update_peer_protocols`` so every service hears of changes.

When our protocols or addresses change, a push goes to every connected peer that supports it,
debounced by ``push_delay``. Pushes from a peer are bounded: one at a time per peer and a token
bucket of PUSH_BURST pushes refilled at PUSH_RATE per second; the excess is reset and logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from google.protobuf.message import DecodeError as PbDecodeError
from multiaddr import Multiaddr

from mycel.core.abc import Connection, Direction, MuxedStream
from mycel.core.errors import ConnectionClosed, DecodeError, MessageTooLarge, MycelError, ProtocolViolation
from mycel.core.events import PeerIdentified
from mycel.core.keys import public_key_from_protobuf
from mycel.core.record import seal_peer_record
from mycel.core.framing import send_message
from mycel.core.varint import LengthPrefixedDecoder
from mycel.network.peerstore import CONNECTED_TTL, AddrSource, PeerInfo
from mycel.protocols.identify import identify_pb2
from mycel.service import Service, ServiceHost, StreamHandler, not_running

if TYPE_CHECKING:
    from mycel.core.peer_id import PeerId

ID_PROTOCOL = "/ipfs/id/1.0.0"
PUSH_PROTOCOL = "/ipfs/id/push/1.0.0"
MAX_MESSAGE_SIZE = 8192  # per delimited message (go's signedIDSize)
MAX_MESSAGES = 10  # delimited messages merged per identify exchange
MAX_OBSERVED = 16  # observed addresses of ourselves remembered (newest kept)
MAX_LISTEN_ADDRS = 64  # listen addresses parsed per identify (the peerstore's per-peer bound); the rest ignored
READ_CHUNK = 8192
PUSH_DELAY = 0.05  # seconds a local change waits for more changes before one push goes out
PUSH_BURST = 5  # pushes a peer may send at once; beyond, one per 1 / PUSH_RATE seconds; excess reset
PUSH_RATE = 1.0
MAX_PUSH_PEERS = 32  # peers pushed to at once

log = logging.getLogger("mycel.protocols.identify")


class IdentifyError(ProtocolViolation):
    """The remote's identify message was malformed or did not match its identity."""


@dataclass(frozen=True)
class IdentifyResult:
    """What one identify exchange told us (the peerstore keeps the merged view)."""

    peer: PeerId
    """The peer identified."""
    protocol_version: str | None
    """Its protocol version (e.g. ``ipfs/0.1.0``), as the peerstore now holds it; None if never sent."""
    agent_version: str | None
    """Its agent (implementation and version), as the peerstore now holds it; None if never sent."""
    listen_addrs: list[Multiaddr]
    """The addresses it says it listens on (unparseable ones left out)."""
    protocols: list[str]
    """The protocols it says it supports."""
    observed_addr: Multiaddr | None
    """The address it saw this connection come from (our address as the peer sees it), if sent."""
    signed_record_verified: bool
    """True if the message carried a signed peer record that verified and was stored."""
    signed_record_seq: int | None
    """The sequence number of the live signed peer record held for the peer, if any."""


async def read_identify(stream: trio.abc.ReceiveStream) -> identify_pb2.Identify:
    """Read up to MAX_MESSAGES delimited Identify messages until EOF and merge them."""
    decoder = LengthPrefixedDecoder(MAX_MESSAGE_SIZE)
    merged = identify_pb2.Identify()
    count = 0
    while True:
        data = await stream.receive_some(READ_CHUNK)
        if data:
            decoder.feed(data)
        while (msg := decoder.next_message()) is not None:
            count += 1
            if count > MAX_MESSAGES:
                raise MessageTooLarge(f"more than {MAX_MESSAGES} identify messages")
            try:
                merged.MergeFromString(msg)
            except PbDecodeError as exc:
                raise DecodeError(f"bad identify protobuf: {exc}") from exc
        if not data:
            if decoder.buffered:
                raise DecodeError("identify stream ended inside a message")
            if count == 0:
                raise DecodeError("identify stream ended without a message")
            return merged


def _why(exc: BaseException) -> str:
    """A log reason that is never empty (``trio.TooSlowError`` has no message)."""
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _addr_from_bytes(raw: bytes) -> Multiaddr | None:
    """A multiaddr that parses in full and encodes back to exactly ``raw``, else None.

    ``Multiaddr(bytes)`` is lazy and lenient: garbage got into the peerstore and failed later, when a
    dial rendered it (found by fuzzing the apply step)."""
    try:
        addr = Multiaddr(raw)
        canonical = Multiaddr(str(addr)).to_bytes()
    except Exception:  # the multiaddr package raises a variety of errors for bad bytes
        return None
    return addr if canonical == raw else None


def _text(value: str | bytes) -> str:
    """A proto2 ``string`` field as str: upb hands back bytes when they are not UTF-8."""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


class _Waiter:
    """The outcome of the identify of one connected peer, for ``wait_identified``."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: BaseException | None = None


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, now: float) -> None:
        self.tokens = float(PUSH_BURST)
        self.at = now

    def take(self, now: float) -> bool:
        self.tokens = min(float(PUSH_BURST), self.tokens + (now - self.at) * PUSH_RATE)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class Identify(Service):
    """The identify service: runs identify on every new connection, answers it, and pushes changes.

    ``identify(peer)`` asks again; ``wait_identified(peer)`` waits for the automatic identify.
    """

    def __init__(self, *, push: bool = True, push_delay: float = PUSH_DELAY) -> None:
        self._host: ServiceHost | None = None
        self.push_enabled = push
        """Whether we push our changes to peers (we always accept pushes)."""
        self.push_delay = push_delay
        """Seconds a local change waits for more changes before one push goes out."""
        self.observed_addrs: list[Multiaddr] = []
        """Addresses peers observed us on, newest first (at most MAX_OBSERVED)."""
        self.pushes_rejected = 0
        """Identify pushes reset because a peer sent too many (see PUSH_BURST, PUSH_RATE)."""
        self._waiters: dict[PeerId, _Waiter] = {}
        self._push_buckets: dict[PeerId, _Bucket] = {}
        self._pushing: set[PeerId] = set()
        self._push_wanted = trio.Event()
        self._record: tuple[tuple[Multiaddr, ...], bytes] | None = None
        self._last_seq = 0

    @property
    def host(self) -> ServiceHost:
        """The host this copy runs in; raises ServiceNotRunning outside one."""
        if self._host is None:
            raise not_running(self)
        return self._host

    def handlers(self) -> Mapping[str, StreamHandler]:
        return {ID_PROTOCOL: self._handle_id, PUSH_PROTOCOL: self._handle_push}

    async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._host = host
        task_status.started()
        while True:  # one push per burst of local changes
            await self._push_wanted.wait()
            await trio.sleep(self.push_delay)  # debounce: let the burst of changes finish
            self._push_wanted = trio.Event()
            await self.push()

    # -- our side ------------------------------------------------------------------------------
    def _signed_record(self, host: ServiceHost, addrs: list[Multiaddr]) -> bytes:
        key = tuple(addrs)
        if self._record is None or self._record[0] != key:
            seq = max(time.time_ns(), self._last_seq + 1)
            self._last_seq = seq
            env = seal_peer_record(host.identity.private_key, addrs, seq)
            self._record = (key, env.to_bytes())
        return self._record[1]

    def build_message(self, host: ServiceHost, observed: Multiaddr | None) -> identify_pb2.Identify:
        """Our identify message, with ``observed`` as the address we see the asker on."""
        addrs = host.advertised_addrs
        msg = identify_pb2.Identify(
            protocolVersion=host.config.protocol_version,
            agentVersion=host.config.agent_version,
            publicKey=host.identity.public_key.to_protobuf(),
            listenAddrs=[a.to_bytes() for a in addrs],
            protocols=host.protocols,
            signedPeerRecord=self._signed_record(host, addrs),
        )
        if observed is not None:
            msg.observedAddr = observed.to_bytes()
        return msg

    async def _handle_id(self, stream: MuxedStream) -> None:
        msg = self.build_message(self.host, stream.connection.remote_addr)
        await send_message(stream, msg.SerializeToString())
        await stream.send_eof()

    async def _handle_push(self, stream: MuxedStream) -> None:
        host = self.host
        conn = stream.connection
        peer = conn.remote_peer
        bucket = self._push_buckets.get(peer)
        if bucket is None:
            bucket = self._push_buckets[peer] = _Bucket(trio.current_time())
        if peer in self._pushing or not bucket.take(trio.current_time()):
            self.pushes_rejected += 1
            log.info("identify push from %s rejected: more than %d pushes in a burst", peer, PUSH_BURST)
            await stream.reset()
            return
        self._pushing.add(peer)
        try:
            with trio.fail_after(host.config.negotiate_timeout):
                msg = await read_identify(stream)
            self._apply(host, conn, msg, push=True)
        finally:
            self._pushing.discard(peer)

    # -- their side ----------------------------------------------------------------------------
    def peer_connected(self, host: ServiceHost, peer: PeerId) -> None:
        waiter = self._waiters.get(peer)
        if waiter is None or waiter.done.is_set():  # (a pending one is someone's wait_identified)
            self._waiters[peer] = _Waiter()

    def peer_disconnected(self, host: ServiceHost, peer: PeerId) -> None:
        waiter = self._waiters.pop(peer, None)
        if waiter is not None and not waiter.done.is_set():
            waiter.error = ConnectionClosed(f"{peer} disconnected before identify completed")
            waiter.done.set()
        self._push_buckets.pop(peer, None)

    def connection_opened(self, host: ServiceHost, conn: Connection) -> None:
        host.spawn(self._identify_quietly, conn)

    def local_protocols_changed(self, host: ServiceHost, added: frozenset[str], removed: frozenset[str]) -> None:
        self._push_wanted.set()

    def local_addrs_changed(self, host: ServiceHost) -> None:
        self._push_wanted.set()

    async def _identify_quietly(self, conn: Connection) -> None:
        try:
            await self.identify_connection(conn)
        except (MycelError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.info("identify of %s failed: %s", conn.remote_peer, _why(exc))
            waiter = self._waiters.get(conn.remote_peer)
            if waiter is not None and not waiter.done.is_set():
                waiter.error = exc
                waiter.done.set()

    async def identify_connection(self, conn: Connection) -> IdentifyResult:
        """Run identify over ``conn`` and apply the answer (peerstore, services, events)."""
        host = self.host
        with trio.fail_after(host.config.negotiate_timeout):
            stream = await host.new_stream(conn.remote_peer, [ID_PROTOCOL], conn=conn, lazy=False)
            try:
                await stream.send_eof()
                msg = await read_identify(stream)
            finally:
                await stream.aclose()
        return self._apply(host, conn, msg, push=False)

    async def identify(self, peer: PeerId) -> IdentifyResult:
        """Ask ``peer`` (over an existing or new connection) who it is."""
        conn = await self.host.connect(peer)
        return await self.identify_connection(conn)

    async def wait_identified(self, peer: PeerId, *, timeout: float | None = None) -> PeerInfo:
        """Wait until the automatic identify of ``peer`` has completed; returns its peerstore snapshot.

        A peer that is not connected yet gets ``timeout`` seconds (default: the host's handshake plus
        negotiate timeouts) to connect and be identified, then trio.TooSlowError. Raises
        ConnectionClosed if the peer disconnects first, and the identify error (IdentifyError,
        StreamReset, ...) if identify failed."""
        host = self.host
        if timeout is None:
            timeout = host.config.handshake_timeout + host.config.negotiate_timeout
        waiter = self._waiters.get(peer)
        if waiter is None:
            waiter = self._waiters[peer] = _Waiter()
        try:
            with trio.fail_after(timeout):
                await waiter.done.wait()
        finally:
            if not waiter.done.is_set() and not host.connections(peer) and self._waiters.get(peer) is waiter:
                del self._waiters[peer]  # nobody connected: forget the waiter (no unbounded growth)
        if waiter.error is not None:
            raise waiter.error
        return host.peerstore.snapshot(peer, trio.current_time())

    def _apply(self, host: ServiceHost, conn: Connection, msg: identify_pb2.Identify, *, push: bool) -> IdentifyResult:
        peer = conn.remote_peer
        store = host.peerstore
        now = trio.current_time()
        if msg.HasField("publicKey"):
            try:
                key = public_key_from_protobuf(msg.publicKey)
            except MycelError as exc:
                raise IdentifyError(f"bad public key from {peer}: {exc}") from exc
            if key != conn.remote_public_key:
                raise IdentifyError(f"{peer} sent an identify public key that is not its own")
        # at most MAX_LISTEN_ADDRS are parsed (the peerstore keeps no more per peer): thousands of them,
        # chunked over several messages (CVE-2026-57497), cost no more than that
        listen = [a for a in (_addr_from_bytes(b) for b in msg.listenAddrs[:MAX_LISTEN_ADDRS]) if a is not None]
        # a protocol id that is not UTF-8 comes back as bytes and can never match one of ours: dropped
        protocols = [p for p in msg.protocols if isinstance(p, str)]
        verified = False
        if msg.HasField("signedPeerRecord"):
            try:
                store.consume_peer_record(msg.signedPeerRecord, CONNECTED_TTL, now, expected_peer=peer)
                verified = True
            except MycelError as exc:
                log.info("ignoring invalid signed peer record from %s: %s", peer, exc)
        if listen or not push:
            store.set_addrs(peer, listen, AddrSource.IDENTIFY, CONNECTED_TTL, now)
        if conn.direction is Direction.OUTBOUND:
            store.add_addrs(peer, [conn.remote_addr], AddrSource.CONNECTION, CONNECTED_TTL, now)
        if protocols or not push:
            host.update_peer_protocols(peer, protocols)
        if msg.HasField("agentVersion"):
            store.set_agent_version(peer, _text(msg.agentVersion))
        if msg.HasField("protocolVersion"):
            store.set_protocol_version(peer, _text(msg.protocolVersion))
        observed = _addr_from_bytes(msg.observedAddr) if msg.HasField("observedAddr") else None
        if observed is not None:
            host.record_observed_addr(conn, observed)
            if observed in self.observed_addrs:
                self.observed_addrs.remove(observed)
            self.observed_addrs.insert(0, observed)
            del self.observed_addrs[MAX_OBSERVED:]
        info = store.snapshot(peer, now)
        result = IdentifyResult(
            peer=peer,
            protocol_version=info.protocol_version,
            agent_version=info.agent_version,
            listen_addrs=listen,
            protocols=protocols,
            observed_addr=observed,
            signed_record_verified=verified,
            signed_record_seq=info.record_seq,
        )
        waiter = self._waiters.get(peer)
        if waiter is not None and not waiter.done.is_set():
            waiter.done.set()
        host.emit(PeerIdentified(peer, info))
        return result

    # -- push ----------------------------------------------------------------------------------
    async def push(self) -> None:
        """Send our current identify to every connected peer that supports push (at most
        MAX_PUSH_PEERS at once)."""
        host = self.host
        if not self.push_enabled:
            return
        limit = trio.CapacityLimiter(MAX_PUSH_PEERS)
        async with trio.open_nursery() as nursery:
            for conn in host.connections():
                if PUSH_PROTOCOL in host.peerstore.protocols(conn.remote_peer):
                    nursery.start_soon(self._push_one, host, conn, limit)

    async def _push_one(self, host: ServiceHost, conn: Connection, limit: trio.CapacityLimiter) -> None:
        async with limit:
            try:
                with trio.fail_after(host.config.negotiate_timeout):
                    stream = await host.new_stream(conn.remote_peer, [PUSH_PROTOCOL], conn=conn)
                    try:
                        msg = self.build_message(host, conn.remote_addr)
                        await send_message(stream, msg.SerializeToString())
                        await stream.send_eof()
                    finally:
                        await stream.aclose()
            except (MycelError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.info("identify push to %s failed: %s", conn.remote_peer, _why(exc))


__all__ = ["ID_PROTOCOL", "PUSH_PROTOCOL", "Identify", "IdentifyError", "IdentifyResult", "read_identify"]
