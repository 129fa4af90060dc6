"""The gossipsub (and floodsub) service: the trio driver of :class:`~mycel.protocols.pubsub.core.GossipsubRouter`.

Per peer: one inbound stream we read RPCs from, one outbound stream we write to (opened as soon as
identify says the peer speaks pubsub, or when it opens one to us), and a bounded outgoing queue with
two lanes — control (subscriptions, GRAFT/PRUNE, IHAVE/IWANT/IDONTWANT) is written before messages. A
full lane drops what does not fit and counts it (per peer, and as a :class:`MessageDropped` event);
nothing ever waits on a slow peer. Messages are validated by the application's validators under a
concurrency bound and a timeout, then delivered to every matching :class:`Subscription` (each with its
own bounded queue and drop counter) and forwarded.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from google.protobuf.message import DecodeError as PbDecodeError
from multiaddr import Multiaddr

from mycel.core.abc import Direction, MuxedStream
from mycel.core.addrs import remote_ips
from mycel.core.errors import MycelError
from mycel.core.peer_id import PeerId
from mycel.core.varint import LengthPrefixedDecoder
from mycel.network.peerstore import ADDRESS_TTL, AddrSource
from mycel.network.resources import MemoryBudget, MemoryScope
from mycel.protocols.pubsub import rpc_pb2
from mycel.protocols.pubsub.config import FLOODSUB, GOSSIPSUB_PROTOCOLS, GossipsubConfig, SignaturePolicy
from mycel.protocols.pubsub.core import (
    GossipsubRouter,
    MessageDropped,
    PeerJoinedTopic,
    PeerLeftTopic,
    PubsubEvent,
    SlowPeer,
    ValidationResult,
)
from mycel.protocols.pubsub.messages import PublishError, PubsubMessage, encode_message
from mycel.protocols.pubsub.wire import fragment_rpc, frame, message_frames
from mycel.service import Service, ServiceHost, StreamHandler, not_running

if TYPE_CHECKING:
    from mycel.protocols.pubsub.score import ScoreBreakdown

log = logging.getLogger("mycel.protocols.pubsub")

Validator = Callable[[PubsubMessage], "ValidationResult | bool | Awaitable[ValidationResult | bool]"]
"""``fn(message)``, plain or async, returning a :class:`ValidationResult` (or True = ACCEPT, False = REJECT)."""

READ_CHUNK = 65536
MAX_CONNECTORS = 8  # dials to direct and peer-exchange peers at once (go's Connectors)
MAX_INBOUND_STREAMS = 2  # per peer (one, plus one while a replaced connection winds down); more are closed
MAX_PENDING_CONNECTS = 128  # beyond, peer-exchange candidates are dropped (go's MaxPendingConnections)


@dataclass(frozen=True)
class PublishReport:
    """What :meth:`Gossipsub.publish` did: the message id and the peers the message was queued for."""

    message_id: bytes
    """The published message's id."""
    peers: tuple[PeerId, ...]

    @property
    def sent_to(self) -> int:
        """How many peers the message was queued for."""
        return len(self.peers)


class Subscription:
    """Messages of one topic, in arrival order: ``async for msg in sub`` or ``await sub.receive()``.

    The queue is bounded (``GossipsubConfig.subscription_queue_size``): when the application falls
    behind, new messages are dropped for this subscription only and counted in :attr:`dropped`; the
    router never waits for a subscriber.
    """

    def __init__(self, topic: str, maxsize: int) -> None:
        self.topic = topic
        self._send, self._recv = trio.open_memory_channel[PubsubMessage](maxsize)
        self.dropped = 0
        """Messages dropped because this subscription's queue was full."""
        self.received = 0
        """Messages put in this subscription's queue."""
        self._closed = False

    def _offer(self, msg: PubsubMessage) -> None:
        if self._closed:
            return
        try:
            self._send.send_nowait(msg)
            self.received += 1
        except trio.WouldBlock:
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # 1, 2, 4, 8...: log without flooding
                log.warning("subscription to %r is not keeping up: %d messages dropped", self.topic, self.dropped)

    async def receive(self) -> PubsubMessage:
        """The next message (waits for one). Raises ``trio.EndOfChannel`` once unsubscribed."""
        return await self._recv.receive()

    def receive_nowait(self) -> PubsubMessage:
        """The next message if one is queued, else ``trio.WouldBlock``."""
        return self._recv.receive_nowait()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> PubsubMessage:
        try:
            return await self._recv.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def _close(self) -> None:
        self._closed = True
        self._send.close()


QUEUE_MEMORY_CHUNK = 64 * 1024
"""A peer's outgoing queue reserves host memory in steps of this size (see :class:`_PeerQueue`)."""


class _PeerQueue:
    """The outgoing queue of one peer: control lane first, then messages; both bounded in count
    (``size`` each) and, when the host gives it a memory scope (the service's, charged to the peer),
    in bytes: what is queued is reserved in :data:`QUEUE_MEMORY_CHUNK` steps before it is queued and
    released as it is written, and an item the scope refuses is dropped like one over the count."""

    __slots__ = (
        "budget", "control", "control_bytes", "dropped", "memory", "messages", "queued", "size", "wakeup", "written",
    )

    def __init__(self, size: int, memory: MemoryScope | None = None) -> None:
        self.size = size
        self.control: deque[rpc_pb2.RPC] = deque()
        self.control_bytes = 0  # of the RPCs in ``control`` (released when the lane is drained)
        self.messages: deque[tuple[bytes, bytes]] = deque()  # (message id, encoded message)
        self.dropped = 0
        self.queued = 0  # items ever queued, and ever written to the stream (for flush())
        self.written = 0
        self.wakeup = trio.Event()
        self.memory = memory
        self.budget = MemoryBudget(memory, QUEUE_MEMORY_CHUNK) if memory is not None else None

    def put_control(self, rpc: rpc_pb2.RPC) -> bool:
        n = rpc.ByteSize() if self.budget is not None else 0
        if len(self.control) >= self.size or (self.budget is not None and not self.budget.grow(n)):
            self.dropped += 1
            return False
        self.control.append(rpc)
        self.control_bytes += n
        self.queued += 1
        self.wakeup.set()
        return True

    def put_message(self, msg_id: bytes, raw: bytes) -> bool:
        if len(self.messages) >= self.size or (self.budget is not None and not self.budget.grow(len(raw))):
            self.dropped += 1
            return False
        self.messages.append((msg_id, raw))
        self.queued += 1
        self.wakeup.set()
        return True

    def drained_control(self) -> None:
        """The control lane was emptied: its bytes go back."""
        if self.budget is not None and self.control_bytes:
            self.budget.shrink(self.control_bytes)
        self.control_bytes = 0

    def took_message(self, raw: bytes) -> None:
        """A message left the queue (written or no longer wanted): its bytes go back."""
        if self.budget is not None:
            self.budget.shrink(len(raw))

    def close(self) -> None:
        """The peer is gone: release every byte reserved (idempotent)."""
        if self.memory is not None:
            self.memory.close()


class _PeerLink:
    """What the driver holds for one peer: its queue, its writer task's scope and its streams."""

    __slots__ = ("inbound", "outbound", "queue", "writer")

    def __init__(self, queue: _PeerQueue) -> None:
        self.queue = queue
        self.writer: trio.CancelScope | None = None
        self.outbound: MuxedStream | None = None
        self.inbound = 0  # inbound streams being read


class Gossipsub(Service):
    """The gossipsub router as a host service (``/meshsub/1.2.0``, ``1.1.0``, ``1.0.0``, ``/floodsub/1.0.0``).

    ``Gossipsub(config)`` or ``Gossipsub(d=8, ...)`` for :class:`GossipsubConfig` fields; ``seed`` makes
    the router's random choices reproducible (tests, simulations); ``deliver_own`` also delivers our
    own messages to our subscriptions (go does, js does not by default).
    """

    protocols: tuple[str, ...] = GOSSIPSUB_PROTOCOLS
    flood_only = False

    def __init__(
        self, config: GossipsubConfig | None = None, *, seed: int | None = None, deliver_own: bool = False, **changes: Any
    ) -> None:
        base = config or GossipsubConfig()
        self.config = base.replace(**changes) if changes else base
        self.seed = seed
        self.deliver_own = deliver_own
        self._host: ServiceHost | None = None
        self._router: GossipsubRouter | None = None
        self._links: dict[PeerId, _PeerLink] = {}
        self._subs: dict[str, list[Subscription]] = {}
        self._joined: set[str] = set()  # topics joined explicitly (join()), kept without subscriptions
        self._validators: dict[str, list[tuple[Validator, float | None]]] = {}
        self._validating = 0
        self._changed = trio.Event()
        self._seqno = 0
        self._connects: deque[tuple[PeerId, bytes | None]] = deque()
        self._connect_wakeup = trio.Event()
        self._connecting: set[PeerId] = set()
        self._flush_waiters = 0
        self.dropped_to_peers: dict[PeerId, int] = {}
        """Messages and control RPCs dropped per connected peer because its outgoing queue was full
        (forgotten when the peer disconnects; the total is ``stats()["dropped_to_peers"]``)."""

    # --- Service ---------------------------------------------------------------------------------

    def handlers(self) -> Mapping[str, StreamHandler]:
        """One handler per protocol id we speak (inbound RPC streams)."""
        return {proto: self._handle_stream for proto in self.protocols}

    async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the router and its timer; dial configured direct peers."""
        self._host = host
        seed = self.seed if self.seed is not None else int.from_bytes(os.urandom(8), "big")
        direct: list[PeerId] = []
        for text in self.config.direct_peers:
            addr = Multiaddr(text)
            peer = PeerId.from_string(addr.value_for_protocol("p2p"))
            host.peerstore.add_addrs(peer, [addr.decapsulate(f"/p2p/{peer}")], source=AddrSource.USER)
            direct.append(peer)
        self._seqno = time.time_ns()
        self._router = GossipsubRouter(
            self.config,
            host.peer_id,
            _Output(self),
            random.Random(seed),
            trio.current_time(),
            direct_peers=direct,
            flood_only=self.flood_only,
        )
        for peer in host.connected_peers():
            self._maybe_open(host, peer, host.peerstore.protocols(peer))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._timer)
                nursery.start_soon(self._connector, host)
                task_status.started()
                for peer in direct:
                    self._connects.append((peer, None))
                self._connect_wakeup.set()
        finally:
            for link in self._links.values():  # the queues' memory goes back to the host's scopes
                link.queue.close()

    def peer_protocols_changed(self, host: ServiceHost, peer: PeerId, added: frozenset[str], removed: frozenset[str]) -> None:
        """Open our stream to a peer as soon as it is known to speak pubsub."""
        self._maybe_open(host, peer, added)

    def peer_disconnected(self, host: ServiceHost, peer: PeerId) -> None:
        """Forget the peer (its score is retained by the router as the spec says)."""
        self._drop_peer(peer)

    def _maybe_open(self, host: ServiceHost, peer: PeerId, protocols: frozenset[str]) -> None:
        if self._router is None or not protocols.intersection(self.protocols):
            return
        link = self._links.get(peer)
        if link is not None and link.writer is not None:
            return
        self._ensure_link(peer)
        host.spawn(self._writer, peer)

    def _ensure_link(self, peer: PeerId) -> _PeerLink:
        link = self._links.get(peer)
        if link is None:
            memory = self._host.resources.service_scope(type(self).__name__, peer) if self._host is not None else None
            link = self._links[peer] = _PeerLink(_PeerQueue(self.config.peer_queue_size, memory))
        return link

    def _drop_peer(self, peer: PeerId) -> None:
        link = self._links.pop(peer, None)
        if link is None:
            return
        link.queue.close()
        self.dropped_to_peers.pop(peer, None)  # bounded by the connected peers; the total stays in stats()
        if link.writer is not None:
            link.writer.cancel()
        if self._router is not None:
            topics = self._topics_of(peer)
            self._router.remove_peer(peer, trio.current_time())
            self._report_topics(peer, topics, frozenset())
        self._changed_now()

    def _topics_of(self, peer: PeerId) -> frozenset[str]:
        state = self._router.peers.get(peer) if self._router is not None else None
        return frozenset(state.topics) if state is not None else frozenset()

    def _report_topics(self, peer: PeerId, before: frozenset[str], after: frozenset[str]) -> None:
        if self._host is None or before == after:
            return
        for topic in sorted(after - before):
            self._host.emit(PeerJoinedTopic(peer, topic))
        for topic in sorted(before - after):
            self._host.emit(PeerLeftTopic(peer, topic))

    # --- the writer: our stream to the peer ---------------------------------------------------------

    async def _writer(self, peer: PeerId) -> None:
        host, router = self._running()
        link = self._links.get(peer)
        if link is None or link.writer is not None:
            return
        with trio.CancelScope() as scope:
            link.writer = scope
            try:
                stream = await host.new_stream(peer, list(self.protocols))
            except (MycelError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                log.debug("no pubsub stream to %s: %r", peer, exc)
                if self._links.get(peer) is link:
                    self._drop_peer(peer)
                return
            link.outbound = stream
            conn = stream.connection
            outbound = any(c.direction is Direction.OUTBOUND for c in host.connections(peer)) or (
                conn.direction is Direction.OUTBOUND
            )
            router.add_peer(peer, stream.protocol or FLOODSUB, outbound=outbound, now=trio.current_time())
            router.set_peer_ips(peer, _ips(host, peer))
            self._changed_now()
            try:
                await self._write_loop(stream, link.queue, router, peer)
            except (MycelError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                log.debug("pubsub stream to %s failed: %r", peer, exc)
            finally:
                with trio.CancelScope(shield=True):
                    await _close_quietly(stream)
        if self._links.get(peer) is link:
            self._drop_peer(peer)

    async def _write_loop(
        self, stream: MuxedStream, queue: _PeerQueue, router: GossipsubRouter, peer: PeerId
    ) -> None:
        limit = self.config.rpc_size_limit
        large = self.config.idontwant_message_threshold
        while True:
            await queue.wakeup.wait()
            queue.wakeup = trio.Event()
            pieces: list[bytes] = []
            while queue.control:
                for payload in fragment_rpc(queue.control.popleft(), limit):
                    pieces.append(frame(payload))
            queue.drained_control()
            small: list[bytes] = []
            while queue.messages:
                while queue.control:  # control first, also when it arrived during a large message
                    for payload in fragment_rpc(queue.control.popleft(), limit):
                        pieces.append(frame(payload))
                queue.drained_control()
                msg_id, raw = queue.messages.popleft()
                queue.took_message(raw)
                state = router.peers.get(peer)
                if state is not None and msg_id in state.dont_send:
                    # it said IDONTWANT after we queued the message (go checks when a message leaves
                    # the queue too): a large copy saved, the point of IDONTWANT
                    router.counters["idontwant_saved"] += 1
                    continue
                if len(raw) < large:
                    small.append(raw)
                    continue
                # a large message goes out alone, so that an IDONTWANT arriving while it is on the
                # wire still stops the next ones
                pieces += message_frames(small, limit) if small else []
                pieces += message_frames([raw], limit)
                small = []
                await stream.send_all(b"".join(pieces))
                pieces = []
            if small:
                pieces += message_frames(small, limit)
            if pieces:
                await stream.send_all(b"".join(pieces))
            # everything no longer in the queues went out (or was not wanted): flush() waits on this
            queue.written = queue.queued - len(queue.control) - len(queue.messages)
            if self._flush_waiters:
                self._changed_now()

    # --- the reader: the peer's stream to us -------------------------------------------------------

    async def _handle_stream(self, stream: MuxedStream) -> None:
        host, router = self._running()
        peer = stream.connection.remote_peer
        link = self._ensure_link(peer)
        if peer not in router.peers:
            # the peer speaks first: register it with the protocol it chose, then open our side
            outbound = stream.connection.direction is Direction.OUTBOUND
            router.add_peer(peer, stream.protocol or FLOODSUB, outbound=outbound, now=trio.current_time())
            router.set_peer_ips(peer, _ips(host, peer))
            self._changed_now()
        if link.writer is None:
            host.spawn(self._writer, peer)
        if link.inbound >= MAX_INBOUND_STREAMS:
            log.info("refusing another inbound pubsub stream from %s (%d open)", peer, link.inbound)
            return
        link.inbound += 1
        decoder = LengthPrefixedDecoder(self.config.rpc_size_limit)
        try:
            while True:
                data = await stream.receive_some(READ_CHUNK)
                if not data:
                    return
                decoder.feed(data)
                while (payload := decoder.next_message()) is not None:
                    try:
                        rpc = rpc_pb2.RPC.FromString(payload)
                    except PbDecodeError as exc:
                        log.info("dropping an undecodable RPC from %s: %s", peer, exc)
                        continue
                    self._on_rpc(peer, rpc)
                if self._links.get(peer) is not link:
                    return  # the peer was dropped from pubsub meanwhile: this stream ends too
                await trio.lowlevel.checkpoint()
        except MycelError as exc:  # oversized frame, bad varint, stream reset: only this stream ends
            log.info("pubsub stream from %s closed: %s", peer, exc)
        finally:
            link.inbound -= 1

    def _on_rpc(self, peer: PeerId, rpc: rpc_pb2.RPC) -> None:
        router = self._router
        assert router is not None
        now = trio.current_time()
        before = self._topics_of(peer) if rpc.subscriptions else None
        for msg in router.handle_rpc(peer, rpc, now):
            self._validate(msg, now)
        if before is not None:
            self._report_topics(peer, before, self._topics_of(peer))
        self._changed_now()

    # --- validation ----------------------------------------------------------------------------------

    def _validate(self, msg: PubsubMessage, now: float) -> None:
        router = self._router
        assert router is not None
        validators = self._validators.get(msg.topic)
        if not validators:
            router.validation_complete(msg, ValidationResult.ACCEPT, now)
            return
        if self._validating >= self.config.validation_concurrency:
            router.validation_complete(msg, ValidationResult.THROTTLED, now)
            return
        self._validating += 1
        host, _ = self._running()
        host.spawn(self._run_validators, msg, validators)

    async def _run_validators(self, msg: PubsubMessage, validators: list[tuple[Validator, float | None]]) -> None:
        try:
            result = await self._decide(msg, validators)
        finally:
            self._validating -= 1
        if self._router is not None:  # also when the sender has left: the verdict is about the message
            self._router.validation_complete(msg, result, trio.current_time())

    async def _decide(self, msg: PubsubMessage, validators: list[tuple[Validator, float | None]]) -> ValidationResult:
        for fn, timeout in validators:
            result: ValidationResult = ValidationResult.IGNORE
            with trio.move_on_after(timeout if timeout is not None else self.config.validation_timeout):
                try:
                    value = fn(msg)
                    if inspect.isawaitable(value):
                        value = await value
                    result = _as_result(value)
                except Exception:
                    log.exception("validator for %r raised; the message is ignored", msg.topic)
                    result = ValidationResult.IGNORE
            if result is not ValidationResult.ACCEPT:
                return result
        return ValidationResult.ACCEPT

    def add_validator(self, topic: str, fn: Validator, *, timeout: float | None = None) -> None:
        """Validate every message of ``topic`` (ours and received) with ``fn`` before it is delivered or
        forwarded; several validators run in order and the first non-ACCEPT decides. ``timeout``
        (default ``config.validation_timeout``) turns a slow verdict into IGNORE."""
        self._validators.setdefault(topic, []).append((fn, timeout))

    def remove_validator(self, topic: str, fn: Validator) -> None:
        """Stop using ``fn`` for ``topic``."""
        entries = [e for e in self._validators.get(topic, []) if e[0] is not fn]
        if entries:
            self._validators[topic] = entries
        else:
            self._validators.pop(topic, None)

    # --- timers and dials ----------------------------------------------------------------------------

    async def _timer(self) -> None:
        router = self._router
        assert router is not None
        while True:
            deadline = router.next_deadline()
            if math.isfinite(deadline):
                await trio.sleep_until(deadline)
            router.handle_timeout(trio.current_time())
            self._changed_now()
            if self._host is not None:  # mesh peers are kept by the connection manager (go tags them too)
                self._host.connmgr.set_tag_peers("pubsub-mesh", {p for m in router.mesh.values() for p in m}, 20)

    async def _connector(self, host: ServiceHost) -> None:
        limiter = trio.CapacityLimiter(MAX_CONNECTORS)
        async with trio.open_nursery() as nursery:
            while True:
                await self._connect_wakeup.wait()
                self._connect_wakeup = trio.Event()
                while self._connects:
                    peer, record = self._connects.popleft()
                    if peer in self._connecting or host.connections(peer):
                        continue
                    self._connecting.add(peer)
                    nursery.start_soon(self._connect_one, host, limiter, peer, record)

    async def _connect_one(self, host: ServiceHost, limiter: trio.CapacityLimiter, peer: PeerId, record: bytes | None) -> None:
        try:
            async with limiter:
                if record is not None:
                    try:
                        host.peerstore.consume_peer_record(record, ADDRESS_TTL, expected_peer=peer)
                    except MycelError as exc:
                        log.info("peer exchange: bad signed record for %s: %s", peer, exc)
                        return
                if not host.peerstore.addrs(peer):
                    return  # nothing to dial (PX without a record): go would ask the DHT
                with trio.move_on_after(30):
                    await host.connect(peer)
        except (MycelError, OSError) as exc:
            log.debug("pubsub could not connect to %s: %r", peer, exc)
        finally:
            self._connecting.discard(peer)

    def _queue_connect(self, peer: PeerId, record: bytes | None) -> None:
        if len(self._connects) >= MAX_PENDING_CONNECTS:
            return
        self._connects.append((peer, record))
        self._connect_wakeup.set()

    # --- the application's API ---------------------------------------------------------------------

    def _running(self) -> tuple[ServiceHost, GossipsubRouter]:
        if self._host is None or self._router is None:
            raise not_running(self)
        return self._host, self._router

    def _changed_now(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @asynccontextmanager
    async def subscribe(self, topic: str, *, maxsize: int | None = None) -> AsyncIterator[Subscription]:
        """Receive the messages of ``topic`` while the block runs (joins the topic's mesh on entry, and
        leaves it on exit unless another subscription or :meth:`join` holds it)."""
        _, router = self._running()
        sub = Subscription(topic, maxsize or self.config.subscription_queue_size)
        self._subs.setdefault(topic, []).append(sub)
        router.join(topic, trio.current_time())
        self._changed_now()
        try:
            yield sub
        finally:
            sub._close()
            subs = self._subs.get(topic, [])
            if sub in subs:
                subs.remove(sub)
            if not subs:
                self._subs.pop(topic, None)
                if topic not in self._joined and self._router is not None:
                    self._router.leave(topic, trio.current_time())
                    self._changed_now()

    def join(self, topic: str) -> None:
        """Take part in ``topic`` (mesh, forwarding) without receiving its messages."""
        _, router = self._running()
        self._joined.add(topic)
        router.join(topic, trio.current_time())
        self._changed_now()

    def leave(self, topic: str) -> None:
        """Undo :meth:`join` (the topic stays joined while subscriptions to it are open)."""
        _, router = self._running()
        self._joined.discard(topic)
        if topic not in self._subs:
            router.leave(topic, trio.current_time())
            self._changed_now()

    async def wait_ready(self, topic: str, min_peers: int = 1, *, timeout: float | None = None) -> None:
        """Wait until a message published on ``topic`` would reach at least ``min_peers`` peers (mesh or
        floodsub peers when subscribed, topic peers otherwise). Raises ``trio.TooSlowError`` after
        ``timeout`` seconds."""
        _, router = self._running()
        with trio.fail_after(timeout if timeout is not None else math.inf):
            while router.ready_peers(topic) < min_peers:
                await self._changed.wait()

    async def flush(self, *, timeout: float | None = None) -> None:
        """Wait until everything queued for peers so far (our messages, forwarded ones, control RPCs) is
        written to their streams, or those peers are gone. :meth:`publish` only queues: call this before
        closing the host when the last messages must leave. Raises ``trio.TooSlowError`` after
        ``timeout`` seconds (a peer that does not read)."""
        self._running()
        links = self._links
        targets = [(peer, link, link.queue.queued) for peer, link in links.items()]
        with trio.fail_after(timeout if timeout is not None else math.inf):
            while any(link.queue.written < n and links.get(peer) is link for peer, link, n in targets):
                self._flush_waiters += 1
                try:
                    await self._changed.wait()
                finally:
                    self._flush_waiters -= 1

    async def publish(self, topic: str, data: bytes) -> PublishReport:
        """Publish ``data`` on ``topic``; returns the peers it was queued for.

        Raises :class:`PublishError` when it is too big, a validator refuses it, or nobody is there to
        receive it (unless ``allow_publish_to_zero_peers``).
        """
        host, router = self._running()
        data = bytes(data)
        limit = self.config.message_size_limit(topic)
        if len(data) > limit:
            raise PublishError(f"message of {len(data)} bytes exceeds the limit of {limit} for {topic!r}", "too_large")
        if self.config.signature_policy is SignaturePolicy.STRICT_SIGN:
            self._seqno += 1
            msg = encode_message(
                topic, data, key=host.identity.private_key, author=host.peer_id, seqno=self._seqno
            )
        else:
            msg = encode_message(topic, data, key=None, author=None, seqno=None)
        msg_id = router.message_id(msg)
        msg = _with_id(msg, msg_id)
        validators = self._validators.get(topic)
        if validators:
            result = await self._decide(msg, validators)
            if result is not ValidationResult.ACCEPT:
                raise PublishError(f"a validator refused our message ({result.value})", "rejected")
        if msg_id in router.seen:
            raise PublishError("a message with this id was already published or seen (duplicate)", "duplicate")
        sent = router.publish(msg, trio.current_time())
        if self.deliver_own:
            self._deliver(msg)
        self._changed_now()
        if not sent and not self.config.allow_publish_to_zero_peers:
            raise PublishError(f"no peers to send the message on {topic!r} to (see wait_ready)", "no_peers")
        return PublishReport(msg_id, tuple(sent))

    def peers(self, topic: str) -> set[PeerId]:
        """Peers we know to be subscribed to ``topic``."""
        _, router = self._running()
        return router.topic_peers(topic)

    def mesh(self, topic: str) -> set[PeerId]:
        """Our mesh peers for ``topic``."""
        _, router = self._running()
        return router.mesh_peers(topic)

    def topics(self) -> set[str]:
        """Topics we are subscribed to or joined."""
        _, router = self._running()
        return set(router.subscriptions)

    def scores(self) -> dict[PeerId, ScoreBreakdown]:
        """Each known peer's score with its P1–P7 breakdown per topic (empty when scoring is off)."""
        _, router = self._running()
        from mycel.protocols.pubsub.score import PeerScore

        if not isinstance(router.score, PeerScore):
            return {}
        now = trio.current_time()
        out: dict[PeerId, ScoreBreakdown] = {}
        for peer in router.score.peers():
            b = router.score.breakdown(peer, now)
            if b is not None:
                out[peer] = b
        return out

    def stats(self) -> dict[str, int]:
        """Counters and table sizes of the router (messages, duplicates, drops, ...)."""
        _, router = self._running()
        return {**router.counters, **router.stats(), "validating": self._validating}

    @property
    def router(self) -> GossipsubRouter:
        """The sans-IO router (for inspection and tests)."""
        return self._running()[1]

    # --- outputs of the router ---------------------------------------------------------------------

    def _deliver(self, msg: PubsubMessage) -> None:
        for sub in self._subs.get(msg.topic, ()):
            sub._offer(msg)

    def _dropped(self, peer: PeerId, topic: str) -> None:
        count = self.dropped_to_peers.get(peer, 0) + 1
        self.dropped_to_peers[peer] = count
        if count & (count - 1) == 0 and self._host is not None:
            log.info("outgoing queue to %s is full: %d messages dropped so far", peer, count)
            self._host.emit(MessageDropped(peer, topic, count))
            self._host.emit(SlowPeer(peer, self.config.peer_queue_size))


class Floodsub(Gossipsub):
    """A floodsub router (``/floodsub/1.0.0`` only): every message goes to every peer in its topic."""

    protocols = (FLOODSUB,)
    flood_only = True


class _Output:
    """The router's RouterOutput, backed by the service's queues."""

    __slots__ = ("_svc",)

    def __init__(self, svc: Gossipsub) -> None:
        self._svc = svc

    def send_control(self, peer: PeerId, rpc: rpc_pb2.RPC) -> None:
        link = self._svc._links.get(peer)
        if link is not None and not link.queue.put_control(rpc):
            if self._svc._router is not None:
                self._svc._router.counters["dropped_to_peers"] += 1
            self._svc._dropped(peer, "")
            # a lost GRAFT/PRUNE/subscription would leave our view of the peer wrong for good: a peer
            # that cannot take our control messages is dropped from pubsub (streams closed; it may
            # open a new one), never left half in step
            if link.writer is not None:
                log.warning("control queue to %s is full: dropping it from pubsub", peer)
                link.writer.cancel()

    def send_message(self, peer: PeerId, msg: PubsubMessage) -> bool:
        link = self._svc._links.get(peer)
        if link is None:
            return False
        if link.queue.put_message(msg.id, msg.raw):
            return True
        self._svc._dropped(peer, msg.topic)
        return False

    def deliver(self, msg: PubsubMessage) -> None:
        self._svc._deliver(msg)

    def connect(self, peer: PeerId, signed_record: bytes | None) -> None:
        self._svc._queue_connect(peer, signed_record)

    def peer_record(self, peer: PeerId) -> bytes | None:
        host = self._svc._host
        return host.peerstore.peer_record(peer) if host is not None else None

    def notify(self, event: PubsubEvent) -> None:
        host = self._svc._host
        if host is not None:
            host.emit(event)


def _as_result(value: object) -> ValidationResult:
    if isinstance(value, ValidationResult):
        return value
    if value is True:
        return ValidationResult.ACCEPT
    if value is False:
        return ValidationResult.REJECT
    raise TypeError(f"a validator must return a ValidationResult or a bool, not {value!r}")


def _with_id(msg: PubsubMessage, msg_id: bytes) -> PubsubMessage:
    return PubsubMessage(
        topic=msg.topic,
        data=msg.data,
        source=msg.source,
        seqno=msg.seqno,
        signature=msg.signature,
        key=msg.key,
        raw=msg.raw,
        id=msg_id,
        received_from=None,
    )


def _ips(host: ServiceHost, peer: PeerId) -> list[str]:
    return remote_ips(host.connections(peer))


async def _close_quietly(stream: MuxedStream) -> None:
    try:
        await stream.aclose()
    except (MycelError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


__all__ = ["Floodsub", "Gossipsub", "PublishReport", "Subscription", "Validator"]
