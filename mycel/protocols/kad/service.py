"""The Kademlia DHT service (``/ipfs/kad/1.0.0``): the trio driver of the routing table, the lookup state
machine, the record validators and the provider store.

Server mode serves FIND_NODE, GET_VALUE, PUT_VALUE, GET_PROVIDERS, ADD_PROVIDER (and the deprecated PING)
on inbound streams, several requests per stream, each message ≤ 4 MiB; client mode only asks. The routing
table admits only peers that identify says serve the kad protocol, checked with a trivial FIND_NODE
before they enter (go's check-before-add); a full bucket asks the driver to check its stalest entry.
Lookups run :class:`~mycel.protocols.kad.lookup.ClosestPeersLookup` with one task per request.

The DHT is a :class:`~mycel.routing.PeerRouting` and :class:`~mycel.routing.ContentRouting`: a host that
runs it finds peers by id in ``host.connect(peer_id)``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import trio
from multiaddr import Multiaddr

from mycel.core.abc import MuxedStream
from mycel.core.addrs import Reachability, remote_ips
from mycel.core.errors import DecodeError, MycelError
from mycel.core.events import ServiceEvent
from mycel.core.framing import receive_message, send_message
from mycel.core.peer_id import PeerId
from mycel.network.peerstore import ADDRESS_TTL, AddrSource
from mycel.protocols.kad import dht_pb2
from mycel.protocols.kad.distance import kad_key, peer_key
from mycel.protocols.kad.lookup import ClosestPeersLookup
from mycel.protocols.kad.providers import ProviderStorage, ProviderStore, accept_add_provider
from mycel.protocols.kad.records import DhtRecord, InvalidRecord, NamespacedValidator, default_validator
from mycel.protocols.kad.store import (
    MemoryRecordStore,
    RecordStore,
    SqliteProviderStore,
    SqliteRecordStore,
    StaleRecord,
    get_validated,
    put_validated,
)
from mycel.protocols.kad.routing import Added, CheckNew, DiversityFilter, PingRequest, RoutingTable, filter_results
from mycel.routing import Content, ProviderRecord, content_key
from mycel.service import Service, ServiceHost, StreamHandler, not_running

log = logging.getLogger("mycel.protocols.kad")

PROTOCOL = "/ipfs/kad/1.0.0"
MAX_MESSAGE_SIZE = 4 * 1024 * 1024  # go's and py's inbound cap on every kad message
MAX_REQUESTS_PER_STREAM = 1024  # an inbound stream serving more is closed (a new one may follow)
MAX_PEER_RECORD = 8 * 1024  # a closerPeers/providerPeers entry above this is dropped (go's peer record bound)
RESULT_MAX_PER_GROUP = 3  # peers of one public IP group taken from one response (go's diversity cap)
MAX_CHECKS = 32
FIX_LOW_PEERS_INTERVAL = 120.0  # go's periodicBootstrapInterval: how often a small table tries to grow
LOW_PEERS = 10  # go's minRTRefreshThreshold: a table of at most this many peers tries to grow
BOOTSTRAP_PEERS_PER_FIX = 2  # go's maxNBoostrappers: an empty table reconnects to this many bootstrap peers
REPUBLISH_INTERVAL = 22 * 3600.0  # go's reprovide interval (provider records live 48 h)
MAX_PROVIDED = 100_000  # keys we keep republishing; beyond, the oldest is no longer republished  # check-before-add FIND_NODEs in flight; beyond, offers wait for the next identify

Mode = Literal["server", "client", "auto"]
T = TypeVar("T")
Message = dht_pb2.Message


P = ParamSpec("P")


def _query(kind: str) -> Callable[[Callable[Concatenate[KadDHT, P], Awaitable[T]]], Callable[Concatenate[KadDHT, P], Awaitable[T]]]:
    """Time a public query method for :attr:`KadDHT.query_observers`."""

    def wrap(fn: Callable[Concatenate[KadDHT, P], Awaitable[T]]) -> Callable[Concatenate[KadDHT, P], Awaitable[T]]:
        async def timed(self: KadDHT, /, *args: P.args, **kwargs: P.kwargs) -> T:
            with self._timed(kind):
                return await fn(self, *args, **kwargs)

        functools.update_wrapper(timed, fn)  # name and docstring (the API reference reads them)
        return timed

    return wrap


@dataclass(frozen=True)
class TableHealth:
    """How well a DHT node is plugged in (``KadDHT.health()``): what go reports as its routing table's
    state, in one value to log or export."""

    size: int
    """Peers in the routing table."""
    k: int
    """Bucket size: a table with fewer than ``k`` peers cannot answer a lookup with ``k`` peers."""
    buckets: tuple[int, ...]
    """Peers per bucket: index ``i`` counts CPL ``i``, the last index CPL >= it."""
    connected: int
    """Table peers with an open connection now."""
    since_self_lookup: float | None
    """Seconds since the last self-lookup (``None``: none yet)."""
    overdue_refreshes: int
    """Buckets that went a whole refresh interval (10 min) without a refresh: 0 while the timer keeps up."""

    @property
    def healthy(self) -> bool:
        """At least ``k`` peers and a self-lookup done: lookups from this node can succeed."""
        return self.size >= self.k and self.since_self_lookup is not None


@dataclass(frozen=True)
class RoutingTablePeerAdded(ServiceEvent):
    """``peer`` entered the DHT's routing table, which now holds ``size`` peers: wait for the first one
    after connecting to bootstrap peers instead of polling ``len(dht.routing_table)``."""

    peer: PeerId
    size: int


class KadDHT(Service):
    """The Kademlia DHT as a host service.

    ``mode``: ``"server"`` answers queries and advertises the protocol, ``"client"`` only asks (switch with
    :meth:`set_mode`). ``alpha`` requests in flight per lookup (10 as go; 3 as rust and the paper), ``beta``
    the convergence parameter, ``k`` the bucket size and result count. ``diversity=False`` turns off the IP
    diversity filter (needed on transports without IP addresses, such as the memory transport);
    ``group_private=True`` groups private addresses like public ones (a simulation on 10.x.y.z, where each
    /16 stands for an operator's public block).
    """

    def __init__(
        self,
        *,
        mode: Mode = "server",
        k: int = 20,
        alpha: int = 10,
        beta: int = 3,
        request_timeout: float = 10.0,
        diversity: bool = True,
        validator: NamespacedValidator | None = None,
        seed: int | None = None,
        bootstrap: Iterable[str] = (),
        datastore: str | os.PathLike[str] | None = None,
        disjoint_paths: int | None = None,
        group_private: bool = False,
    ) -> None:
        if mode not in ("server", "client", "auto"):
            raise ValueError(f"mode is 'server', 'client' or 'auto', not {mode!r}")
        self.auto = mode == "auto"
        """In ``auto`` mode the DHT is a client until AutoNAT finds us public, then a server (go's ModeAuto)."""
        self.mode: Mode = "client" if mode == "auto" else mode
        self.k = k
        self.alpha = alpha
        self.beta = beta
        self.request_timeout = request_timeout
        self.diversity = diversity
        self.group_private = group_private
        """The diversity filter (table and lookup results) groups private addresses too."""
        self.validator = validator or default_validator()
        self.seed = seed
        self.bootstrap_peers: tuple[str, ...] = tuple(bootstrap)
        """Multiaddrs (with ``/p2p/``) connected to on start, then a self-lookup fills the table; when empty,
        the peers of ``HostConfig.bootstrap`` (dialed by the host's Bootstrap service) are used."""
        self._host: ServiceHost | None = None
        self._table: RoutingTable | None = None
        self._rng = random.Random(seed)
        self.datastore = datastore
        self.disjoint_paths = disjoint_paths
        """Lookups over this many disjoint paths (S/Kademlia) when set; None: one path."""
        """A SQLite file keeping records and providers across restarts (None: in memory)."""
        self._records: RecordStore = MemoryRecordStore()
        self._providers: ProviderStorage = ProviderStore()
        self._checking: set[PeerId] = set()
        self._grew = trio.Event()  # set (and replaced) whenever a peer enters the routing table
        self._provided: dict[bytes, float] = {}  # keys we provide -> when last announced (republished)
        self._last_self_lookup: float | None = None  # when our last self-lookup completed
        self.query_observers: list[Callable[[str, float], None]] = []
        """Called with ``(kind, seconds)`` after each query (``closest_peers``, ``find_peer``, ``put``, ``get``,
        ``provide``, ``find_providers``), whether it succeeded or not: the metrics service listens here."""
        self.stats: dict[str, int] = dict.fromkeys(
            ("requests_served", "requests_sent", "request_failures", "bad_requests", "lookups", "lookup_rounds"), 0
        )
        """Counters of requests served and sent, failures, refused requests, lookups and their rounds (hops: a
        peer named in an answer to a round-``r`` request is asked in round ``r + 1``)."""

    # --- Service ---------------------------------------------------------------------------------------

    def handlers(self) -> Mapping[str, StreamHandler]:
        """The kad protocol handler, in server mode only."""
        return {PROTOCOL: self._serve} if self.mode == "server" else {}

    async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Create the routing table and keep it fresh (bucket refreshes and the self-lookup on its timers)."""
        self._host = host
        if self.datastore is not None:
            path = self.datastore
            self._records = await trio.to_thread.run_sync(lambda: SqliteRecordStore(path))
            self._providers = await trio.to_thread.run_sync(lambda: SqliteProviderStore(path))
        if self.seed is None:
            self._rng.seed(int.from_bytes(os.urandom(8), "big"))
        # public IPs are capped per group (go's filter); peers seen only on private/loopback addresses or
        # transports without IPs (memory) are admitted without a group, as a LAN DHT does
        diversity = DiversityFilter(admit_without_ip=True, group_private=self.group_private) if self.diversity else None
        self._table = RoutingTable(host.peer_id, k=self.k, now=trio.current_time(), diversity=diversity)
        for peer in host.connected_peers():
            self._consider(host, peer, host.peerstore.protocols(peer))
        task_status.started()
        if self.bootstrap_peers:
            host.spawn(self.bootstrap)
        elif host.config.bootstrap:  # the host's Bootstrap service dials HostConfig.bootstrap
            host.spawn(self._self_lookup_when_joined)
        host.spawn(self._fix_low_peers_loop)
        while True:
            await trio.sleep_until(min(self._table.next_refresh(), self._next_republish()))
            if trio.current_time() >= self._table.next_refresh():
                await self._refresh()
            await self._republish()

    def _next_republish(self) -> float:
        return min(self._provided.values(), default=math.inf) + REPUBLISH_INTERVAL

    async def _republish(self) -> None:
        """Announce again what we provide, every 22 h (go's reprovide interval; records live 48 h)."""
        now = trio.current_time()
        for key, last in list(self._provided.items()):
            if now >= last + REPUBLISH_INTERVAL:
                await self.provide(key)

    async def bootstrap(self) -> int:
        """Connect to the bootstrap peers (8 at a time, 10 s each) and look ourselves up to fill the table;
        returns how many connected. Failures are logged, never raised."""
        host, _ = self._running()
        connected = 0
        limiter = trio.CapacityLimiter(8)

        async def dial(addr: str) -> None:
            nonlocal connected
            async with limiter:
                connected += await self._dial_bootstrap_peer(host, addr)

        async with trio.open_nursery() as nursery:
            for addr in self.bootstrap_peers:
                nursery.start_soon(dial, addr)
        if connected:
            with trio.move_on_after(10):  # identify, then our check of each server, fill the table
                while not len(self._running()[1]):
                    await self._grew.wait()
            await self._self_lookup(host)
        return connected

    async def _fix_low_peers_loop(self) -> None:
        """Every 2 minutes (go's fixLowPeers), a table of at most 10 peers tries to grow: offer it every
        connected peer; if it is empty, reconnect to 2 random bootstrap peers of our own list (all of them
        refused or failed at start: at scale the well-known servers reach their inbound limits while
        everyone joins); once it holds a peer, look ourselves up. go then refreshes every bucket; the
        self-lookup meets our neighbours, the buckets' own timer does the rest."""
        while True:
            await trio.sleep(FIX_LOW_PEERS_INTERVAL)
            await self.fix_low_peers()

    async def fix_low_peers(self) -> None:
        """One round of the low-peers repair (see :meth:`_fix_low_peers_loop`); failures are logged."""
        host, table = self._running()
        if len(table) > LOW_PEERS:
            return
        for peer in host.connected_peers():
            self._consider(host, peer, host.peerstore.protocols(peer))
        if not len(table) and self.bootstrap_peers:
            connected = 0
            for i in self._rng.sample(range(len(self.bootstrap_peers)), len(self.bootstrap_peers)):
                connected += await self._dial_bootstrap_peer(host, self.bootstrap_peers[i])
                if connected >= BOOTSTRAP_PEERS_PER_FIX:
                    break
            if connected:
                with trio.move_on_after(10):  # identify, then our check of each server
                    while not len(table):
                        await self._grew.wait()
        if len(table):
            await self._self_lookup(host)

    async def _dial_bootstrap_peer(self, host: ServiceHost, addr: str) -> int:
        """Connect to one bootstrap peer within 10 s: 1 if connected, 0 if not (logged)."""
        with trio.move_on_after(10):
            try:
                await host.connect(addr)
                return 1
            except (MycelError, OSError) as exc:
                log.info("bootstrap peer %s: %s", addr, exc)
                return 0
        log.info("bootstrap peer %s: no connection within 10 s", addr)
        return 0

    async def _self_lookup(self, host: ServiceHost) -> None:
        """Look ourselves up: meets our neighbours, and tells them about us."""
        await self._lookup(host.peer_id.to_bytes())
        self._last_self_lookup = trio.current_time()

    async def _self_lookup_when_joined(self) -> None:
        """With no list of its own the DHT uses the host's bootstrap connections: once they put a first peer
        in the table (identify, then the check), look ourselves up to fill it (go refreshes then too)."""
        while not len(self._running()[1]):
            await self._grew.wait()
        await self._self_lookup(self._running()[0])

    def peer_protocols_changed(self, host: ServiceHost, peer: PeerId, added: frozenset[str], removed: frozenset[str]) -> None:
        """DHT servers are offered to the routing table; a peer that stops serving kad leaves it."""
        if self._table is None:
            return
        if PROTOCOL in removed:
            self._table.remove(peer, trio.current_time())
            host.connmgr.untag_peer(peer, "kad")
        self._consider(host, peer, added)

    def _consider(self, host: ServiceHost, peer: PeerId, protocols: Iterable[str]) -> None:
        if PROTOCOL not in protocols or self._table is None:
            return
        result = self._table.offer(peer, _ips(host, peer), trio.current_time())
        self._act(host, result)

    def _act(self, host: ServiceHost, result: object) -> None:
        if isinstance(result, Added) and self._table is not None:
            host.connmgr.tag_peer(result.peer, "kad", 5)  # table peers are kept longer (go's "kbucket" tag)
            host.emit(RoutingTablePeerAdded(result.peer, len(self._table)))
            self._grew.set()
            self._grew = trio.Event()
        if isinstance(result, CheckNew | PingRequest):
            target = result.peer
            if target not in self._checking and len(self._checking) < MAX_CHECKS:
                self._checking.add(target)
                host.spawn(self._check, target, isinstance(result, CheckNew))

    async def _check(self, peer: PeerId, new: bool) -> None:
        """A trivial FIND_NODE (our own id): the peer answers, or it is not a working DHT server."""
        host, table = self._running()
        try:
            answered = await self._ask(peer, Message(type=Message.FIND_NODE, key=host.peer_id.to_bytes())) is not None
        finally:
            self._checking.discard(peer)
        now = trio.current_time()
        if new:
            if answered:
                self._act(host, table.offer(peer, _ips(host, peer), now, verified=True))
        else:
            promoted = table.check_result(peer, answered, now).promoted
            if promoted is not None:
                host.connmgr.tag_peer(promoted, "kad", 5)
                host.emit(RoutingTablePeerAdded(promoted, len(table)))
                self._grew.set()
                self._grew = trio.Event()

    async def _refresh(self) -> None:
        host, table = self._running()
        now = trio.current_time()
        if table.self_lookup_due(now):
            table.mark_self_lookup(now)
            if len(table):
                await self._self_lookup(host)
        for target in table.due_refreshes(now, self._rng):
            table.mark_refreshed(target.cpl, now)
            if len(table):
                await self._lookup(target.key, target.position)

    # --- server ----------------------------------------------------------------------------------------

    async def _serve(self, stream: MuxedStream) -> None:
        host, _ = self._running()
        sender = stream.connection.remote_peer
        for _ in range(MAX_REQUESTS_PER_STREAM):
            try:
                data = await receive_message(stream, MAX_MESSAGE_SIZE)
            except MycelError as exc:
                log.info("kad stream from %s closed: %s", sender, exc)
                return
            if data is None:
                return
            try:
                request = Message.FromString(data)
            except Exception:
                self.stats["bad_requests"] += 1
                log.info("undecodable kad request from %s", sender)
                return
            try:
                response = await self._answer(host, sender, request)
            except (InvalidRecord, DecodeError, MycelError) as exc:
                self.stats["bad_requests"] += 1
                log.info("kad request %s from %s refused: %s", request.type, sender, exc)
                return
            self.stats["requests_served"] += 1
            if response is not None:
                await send_message(stream, response.SerializeToString())

    async def _answer(self, host: ServiceHost, sender: PeerId, request: dht_pb2.Message) -> dht_pb2.Message | None:
        t = request.type
        if t == Message.PING:
            return Message(type=Message.PING)
        if t == Message.FIND_NODE:
            return self._find_node(host, request.key, sender)
        if t == Message.GET_VALUE:
            response = self._closer(host, Message(type=t, key=request.key), request.key, sender)
            record = await self._get_record(request.key)
            if record is not None:
                response.record.CopyFrom(record.to_pb())
            return response
        if t == Message.PUT_VALUE:
            if not request.HasField("record") or request.record.key != request.key:
                raise InvalidRecord("PUT_VALUE whose record key is not the message key")
            await self._store(DhtRecord.from_pb(request.record))
            return request  # the spec: echo the request
        if t == Message.GET_PROVIDERS:
            response = self._closer(host, Message(type=t, key=request.key), request.key, sender)
            found = await self._blocking(self._providers.get, request.key, time.time(), self.k)
            for rec in found:
                response.providerPeers.add(id=rec.provider.to_bytes(), addrs=list(rec.addrs))
            return response
        if t == Message.ADD_PROVIDER:
            for entry in accept_add_provider(sender, request):
                update = await self._blocking(self._providers.add, request.key, entry.peer, entry.addrs, time.time())
                _remember(host, update.peer, update.addrs, update.ttl)
            return None  # go does not answer ADD_PROVIDER
        raise DecodeError(f"unknown kad message type {t}")

    def _find_node(self, host: ServiceHost, key: bytes, sender: PeerId) -> dht_pb2.Message:
        """FIND_NODE as go answers it: asked for ourselves, we name ourselves (go's check-before-add
        refuses a server whose answer is empty, so a go node that met us first never admitted us); asked
        for a peer we are connected to but do not keep in the table (a client), we add it, so find_peer
        works through us."""
        response = Message(type=Message.FIND_NODE, key=key)
        if key == host.peer_id.to_bytes():
            own = [a.to_bytes() for a in host.advertised_addrs]
            response.closerPeers.add(id=key, addrs=own, connection=Message.CONNECTED)
            return response
        self._closer(host, response, key, sender)
        try:
            target = PeerId.from_bytes(key)
        except (DecodeError, ValueError):
            return response
        if target != sender and host.connections(target) and all(e.id != key for e in response.closerPeers):
            addrs = host.peerstore.addrs(target)
            if addrs:
                response.closerPeers.add(id=key, addrs=[a.to_bytes() for a in addrs], connection=Message.CONNECTED)
        return response

    def _closer(self, host: ServiceHost, response: dht_pb2.Message, key: bytes, sender: PeerId) -> dht_pb2.Message:
        _, table = self._running()
        for peer in table.closest(kad_key(key), self.k + 1):
            if peer == sender:
                continue
            addrs = host.peerstore.addrs(peer)
            response.closerPeers.add(id=peer.to_bytes(), addrs=[a.to_bytes() for a in addrs], connection=(
                Message.CONNECTED if host.connections(peer) else Message.CAN_CONNECT
            ))
            if len(response.closerPeers) >= self.k:
                break
        return response

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a store: inline when in memory, in a worker thread when it is the SQLite one."""
        if self.datastore is None:
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args)

    async def _store(self, record: DhtRecord) -> None:
        try:
            await self._blocking(put_validated, self._records, self.validator, record.key, record.value, _utcnow())
        except StaleRecord:
            pass  # ours is better: kept (the PUT is still answered, as go does)

    async def _get_record(self, key: bytes) -> DhtRecord | None:
        return await self._blocking(get_validated, self._records, self.validator, key, _utcnow())

    # --- client ----------------------------------------------------------------------------------------

    async def _ask(self, peer: PeerId, request: dht_pb2.Message, *, answer: bool = True) -> dht_pb2.Message | None:
        """One request on a new stream; the response (None on any failure, logged at DEBUG)."""
        host, _ = self._running()
        self.stats["requests_sent"] += 1
        try:
            with trio.fail_after(self.request_timeout):
                stream = await host.new_stream(peer, PROTOCOL)
                try:
                    await send_message(stream, request.SerializeToString())
                    if not answer:
                        return Message()
                    data = await receive_message(stream, MAX_MESSAGE_SIZE)
                finally:
                    with trio.CancelScope(shield=True):
                        await _close_quietly(stream)
            if data is None:
                raise DecodeError("stream closed before the response")
            response: dht_pb2.Message = Message.FromString(data)
            return response
        except (MycelError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.stats["request_failures"] += 1
            log.debug("kad request to %s failed: %r", peer, exc)
            return None
        except Exception as exc:  # a malformed protobuf
            self.stats["request_failures"] += 1
            log.info("kad response from %s undecodable: %r", peer, exc)
            return None

    async def _lookup(
        self, key: bytes, position: int | None = None, request: dht_pb2.Message | None = None,
        on_response: Any = None,
    ) -> list[PeerId]:
        """Run one iterative lookup for ``key``; ``on_response(peer, message)`` sees every answer and may
        return True to end the lookup early."""
        host, table = self._running()
        self.stats["lookups"] += 1
        target = position if position is not None else kad_key(key)
        message = request or Message(type=Message.FIND_NODE, key=key)
        now = trio.current_time()
        lookup = ClosestPeersLookup(
            target,
            table.closest(target, self.k),
            now=now,
            k=self.k,
            alpha=self.alpha,
            beta=self.beta,
            request_timeout=self.request_timeout,
            accept=lambda p: p != host.peer_id,
            disjoint_paths=self.disjoint_paths,
        )
        send, receive = trio.open_memory_channel[tuple[PeerId, dht_pb2.Message | None]](math.inf)
        async with trio.open_nursery() as nursery:

            async def ask(peer: PeerId) -> None:
                await send.send((peer, await self._ask(peer, message)))

            while not lookup.finished:
                for peer in lookup.next_requests(trio.current_time()):
                    nursery.start_soon(ask, peer)
                deadline = lookup.next_deadline()
                if lookup.finished:
                    break
                if deadline is None and lookup.num_waiting() == 0:
                    break
                with trio.move_on_at(deadline if deadline is not None else math.inf):
                    peer, response = await receive.receive()
                    now = trio.current_time()
                    if response is None:
                        lookup.on_failure(peer, now)
                        continue
                    closer = self._learn(host, response.closerPeers)
                    done = bool(on_response(peer, response)) if on_response is not None else False
                    lookup.on_success(peer, closer, now, done=done)
                    self._act(host, table.offer(peer, _ips(host, peer), now, verified=True))
                    continue
                lookup.on_timeout(trio.current_time())
            nursery.cancel_scope.cancel()
        self.stats["lookup_rounds"] += lookup.rounds
        return lookup.result()

    def _learn(self, host: ServiceHost, peers: Iterable[dht_pb2.Message.Peer]) -> list[PeerId]:
        """The peers of one response's closerPeers: the first k well-formed entries, minus every peer of an
        over-represented public IP group (go's filterPeersByIPDiversity: a Sybil flood from one /16
        contributes nothing); their addresses go to the peerstore."""
        taken: list[tuple[tuple[PeerId, list[Multiaddr]], Sequence[str]]] = []
        for entry in peers:
            if len(taken) >= self.k:
                break  # hostile peers send unbounded lists: the first k only
            if entry.ByteSize() > MAX_PEER_RECORD:
                continue  # go's bound on a peer entry, in and out
            try:
                peer = PeerId.from_bytes(entry.id)
            except (DecodeError, ValueError):
                continue
            addrs = _parse_addrs(entry.addrs)
            taken.append(((peer, addrs), [ip for a in addrs for ip in _ip_of(a)]))
        if self.diversity:
            taken = filter_results(taken, RESULT_MAX_PER_GROUP, group_private=self.group_private)
        out: list[PeerId] = []
        for (peer, addrs), _ in taken:
            if addrs and peer != host.peer_id:
                host.peerstore.add_addrs(peer, addrs, source=AddrSource.ROUTING, ttl=ADDRESS_TTL)
            out.append(peer)
        return out

    # --- the API ---------------------------------------------------------------------------------------

    def _running(self) -> tuple[ServiceHost, RoutingTable]:
        if self._host is None or self._table is None:
            raise not_running(self)
        return self._host, self._table

    def set_mode(self, mode: Mode) -> None:
        """Switch between ``"server"`` (serve and advertise the kad protocol) and ``"client"`` (only ask).

        Connected peers learn of it through identify push and add us to, or drop us from, their tables.
        ``"auto"``: follow AutoNAT (``host.reachability``): server when public, client otherwise."""
        host, _ = self._running()
        if mode not in ("server", "client", "auto"):
            raise ValueError(f"mode is 'server', 'client' or 'auto', not {mode!r}")
        self.auto = mode == "auto"
        if mode == "auto":
            mode = "server" if host.reachability is Reachability.PUBLIC else "client"
        if mode == self.mode:
            return
        self.mode = mode
        if mode == "server":
            host.set_stream_handler(PROTOCOL, self._serve)
        else:
            host.remove_stream_handler(PROTOCOL)

    def reachability_changed(self, host: ServiceHost, reachability: Reachability, addrs: tuple[Multiaddr, ...]) -> None:
        """In ``auto`` mode, switch to server on a public verdict and back to client otherwise."""
        if self.auto:
            self.set_mode("auto")

    @property
    def routing_table(self) -> RoutingTable:
        """The routing table (``len()``, ``buckets()``, ``peers()``)."""
        return self._running()[1]

    @contextlib.contextmanager
    def _timed(self, kind: str) -> Iterator[None]:
        start = trio.current_time()
        try:
            yield
        finally:
            elapsed = trio.current_time() - start
            for observer in self.query_observers:
                try:
                    observer(kind, elapsed)
                except Exception:  # an observer's bug must not fail the query
                    log.exception("DHT query observer %r failed", observer)

    def health(self) -> TableHealth:
        """The routing table's health now (size, buckets, connected peers, refresh state)."""
        host, table = self._running()
        now = trio.current_time()
        connected = set(host.connected_peers())
        last = self._last_self_lookup
        return TableHealth(
            size=len(table),
            k=self.k,
            buckets=tuple(table.buckets()),
            connected=sum(1 for peer in table.peers() if peer in connected),
            since_self_lookup=None if last is None else now - last,
            overdue_refreshes=table.overdue_refreshes(now),
        )

    @_query("closest_peers")
    async def closest_peers(self, key: bytes) -> list[PeerId]:
        """The k peers closest to ``key`` that answered a lookup, nearest first."""
        return await self._lookup(key)

    @_query("find_peer")
    async def find_peer(self, peer: PeerId) -> list[Multiaddr]:
        """Addresses of ``peer`` (PeerRouting): the peerstore's when connected, else from a lookup."""
        host, _ = self._running()
        if host.connections(peer):
            return host.peerstore.addrs(peer)
        found: list[Multiaddr] = []

        def seen(_: PeerId, response: dht_pb2.Message) -> bool:
            for entry in response.closerPeers:
                if entry.id == peer.to_bytes() and entry.addrs:
                    return True
            return False

        await self._lookup(peer.to_bytes(), on_response=seen)
        found = host.peerstore.addrs(peer)
        return found

    @_query("put")
    async def put(self, key: bytes, value: bytes) -> int:
        """Store ``value`` under ``key`` on the k closest peers (and here); returns how many peers took it.

        Raises :class:`~mycel.protocols.kad.records.InvalidRecord` when the validator refuses it."""
        now = datetime.now(timezone.utc)
        self.validator.validate(key, value, now)
        record = DhtRecord.received(key, value, now)
        if self.mode == "server":
            await self._store(record)
        peers = await self._lookup(key)
        request = Message(type=Message.PUT_VALUE, key=key, record=record.to_pb())
        stored = 0

        async def put_one(peer: PeerId) -> None:
            nonlocal stored
            if await self._ask(peer, request) is not None:
                stored += 1

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(put_one, peer)
        return stored

    @_query("get")
    async def get(self, key: bytes, *, quorum: int = 1) -> bytes | None:
        """The best value for ``key`` found among the closest peers (the validator's selection), or None.

        The lookup ends once ``quorum`` valid values arrived. Peers that answered with an outdated value
        or none are then sent the best one (PUT_VALUE), as go corrects them."""
        now = datetime.now(timezone.utc)
        values: list[bytes] = []
        answered: dict[PeerId, bytes | None] = {}
        local = await self._get_record(key)
        if local is not None:
            values.append(local.value)

        def collect(peer: PeerId, response: dht_pb2.Message) -> bool:
            answered[peer] = None
            if response.HasField("record") and response.record.key == key:
                try:
                    self.validator.validate(key, response.record.value, now)
                except (InvalidRecord, MycelError):
                    return False
                value = bytes(response.record.value)
                answered[peer] = value
                values.append(value)
            return len(values) >= quorum

        await self._lookup(key, request=Message(type=Message.GET_VALUE, key=key), on_response=collect)
        if not values:
            return None
        best = values[self.validator.select(key, values)]
        stale = [peer for peer, value in answered.items() if value != best][: self.k]
        if stale:
            record = DhtRecord.received(key, best, now)
            request = Message(type=Message.PUT_VALUE, key=key, record=record.to_pb())

            async def correct(peer: PeerId) -> None:
                await self._ask(peer, request)

            async with trio.open_nursery() as nursery:
                for peer in stale:
                    nursery.start_soon(correct, peer)
        return best

    @_query("provide")
    async def provide(self, content: Content) -> int:
        """Announce to the k closest peers that we provide ``content`` (a ``multiformats.CID``, CID text or
        multihash bytes: the key is the multihash); returns how many peers the announcement was delivered
        to (ADD_PROVIDER has no answer: delivered, not stored). Raises DecodeError for a malformed CID."""
        host, _ = self._running()
        key = content_key(content)
        if self.mode == "server":
            own = [a.to_bytes() for a in host.advertised_addrs]
            await self._blocking(self._providers.add, key, host.peer_id, own, time.time())
        peers = await self._lookup(key)
        request = Message(type=Message.ADD_PROVIDER, key=key)
        request.providerPeers.add(id=host.peer_id.to_bytes(), addrs=[a.to_bytes() for a in host.advertised_addrs])
        self._provided.pop(key, None)
        self._provided[key] = trio.current_time()
        while len(self._provided) > MAX_PROVIDED:
            self._provided.pop(next(iter(self._provided)))
        delivered = 0

        async def add_one(peer: PeerId) -> None:
            nonlocal delivered
            if await self._ask(peer, request, answer=False) is not None:
                delivered += 1

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(add_one, peer)
        return delivered

    async def find_providers(self, content: Content, *, limit: int = 20) -> AsyncIterator[ProviderRecord]:
        """Providers of ``content`` (a CID, its text or a multihash), each yielded as soon as a peer names it
        (at most ``limit``)."""
        host, _ = self._running()
        key = content_key(content)
        seen: set[PeerId] = set()
        found: list[ProviderRecord] = []
        for rec in await self._blocking(self._providers.get, key, time.time(), limit):
            seen.add(rec.provider)
            found.append(ProviderRecord(rec.provider, tuple(Multiaddr(a) for a in rec.addrs)))
        for item in found:
            yield item
        if len(seen) >= limit:
            return
        send, receive = trio.open_memory_channel[ProviderRecord](math.inf)

        def collect(_: PeerId, response: dht_pb2.Message) -> bool:
            for entry in response.providerPeers:
                if len(seen) >= limit:
                    break
                if entry.ByteSize() > MAX_PEER_RECORD:
                    continue
                try:
                    peer = PeerId.from_bytes(entry.id)
                except (DecodeError, ValueError):
                    continue
                if peer in seen:
                    continue
                seen.add(peer)
                _remember(host, peer, entry.addrs, ADDRESS_TTL)
                send.send_nowait(ProviderRecord(peer, tuple(host.peerstore.addrs(peer))))
            return len(seen) >= limit

        # the lookup runs as a task of the service, not in a nursery here: a generator that yields inside
        # a nursery corrupts trio's cancel scope stack when its caller breaks out of the `async for`
        cancel = trio.CancelScope()
        failed: list[Exception] = []

        async def run() -> None:
            with cancel:
                try:
                    await self._lookup(key, request=Message(type=Message.GET_PROVIDERS, key=key), on_response=collect)
                except Exception as exc:  # the caller's error, not the service's
                    failed.append(exc)
                finally:
                    send.close()

        host.spawn(run)
        try:
            async for record in receive:
                yield record
        finally:
            cancel.cancel()
            receive.close()
        if failed:
            raise failed[0]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _parse_addrs(raw_addrs: Iterable[bytes]) -> list[Multiaddr]:
    addrs: list[Multiaddr] = []
    for raw in list(raw_addrs)[:32]:
        try:
            addrs.append(Multiaddr(bytes(raw)))
        except Exception:  # the multiaddr library raises assorted errors on garbage
            continue
    return addrs


@functools.lru_cache(maxsize=8192)  # pure; value_for_protocol parses the whole address each time
def _ip_of(addr: Multiaddr) -> tuple[str, ...]:
    for proto in ("ip4", "ip6"):
        try:
            return (addr.value_for_protocol(proto),)
        except Exception:
            continue
    return ()


def _remember(host: ServiceHost, peer: PeerId, raw_addrs: Iterable[bytes], ttl: float) -> None:
    addrs = _parse_addrs(raw_addrs)
    if addrs and peer != host.peer_id:
        host.peerstore.add_addrs(peer, addrs, source=AddrSource.ROUTING, ttl=ttl)


def _ips(host: ServiceHost, peer: PeerId) -> list[str]:
    return remote_ips(host.connections(peer))


async def _close_quietly(stream: MuxedStream) -> None:
    try:
        await stream.aclose()
    except (MycelError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


__all__ = ["KadDHT", "MAX_MESSAGE_SIZE", "PROTOCOL", "RoutingTablePeerAdded"]
