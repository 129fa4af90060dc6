"""Test helpers for the sans-IO gossipsub router: a recording :class:`RouterOutput`, a factory that
builds a router with N fake peers of chosen kinds, directions and subscriptions (rust-libp2p's
``BehaviourTestBuilder``, go's ``getGossipsubs`` without hosts), and :class:`SimNet`, several routers
wired to each other in memory for the go tests that need a small network.

Nothing sleeps: time is a number the test moves (``Harness.now``), randomness is seeded, and peers
have fixed identities (``pid(i)``), so every run sees the same meshes and the same messages.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.protocols.pubsub import rpc_pb2
from mycel.protocols.pubsub.config import FLOODSUB, GOSSIPSUB_V12, GossipsubConfig
from mycel.protocols.pubsub.core import GossipsubRouter, PeerKind, PubsubEvent, ValidationResult
from mycel.protocols.pubsub.messages import PubsubMessage, encode_message
from mycel.protocols.pubsub.score import PeerScore, PeerScoreParams, PeerScoreThresholds

TOPIC = "test"
LOCAL = 0
"""Identity index of the router under test; its peers are 1..N, message authors from ``AUTHOR`` on."""
AUTHOR = 50_000

ACCEPT = ValidationResult.ACCEPT
REJECT = ValidationResult.REJECT
IGNORE = ValidationResult.IGNORE


@functools.cache
def identity(index: int) -> Identity:
    """A fixed Ed25519 identity per index (cached: the same index is the same peer in every test)."""
    return Identity.from_seed(index.to_bytes(4, "big") * 8)


def pid(index: int) -> PeerId:
    """The peer id of ``identity(index)``."""
    return identity(index).peer_id


def signed(topic: str, data: bytes, *, author: int = AUTHOR, seqno: int = 1) -> PubsubMessage:
    """A StrictSign message by ``identity(author)`` (no id yet: the router computes it)."""
    ident = identity(author)
    return encode_message(topic, data, key=ident.private_key, author=ident.peer_id, seqno=seqno)


def record_of(peer: PeerId) -> bytes:
    """The stand-in signed peer record our recorder holds for ``peer``."""
    return b"spr:" + peer.to_bytes()


class Recorder:
    """A :class:`RouterOutput` keeping one ordered log of everything the router did, with views."""

    def __init__(self) -> None:
        self.log: list[tuple[str, PeerId | None, Any]] = []
        self.full: set[PeerId] = set()
        """Peers whose outgoing queue is full: ``send_message`` to them returns False."""
        self.records: dict[PeerId, bytes] = {}

    # RouterOutput
    def send_control(self, peer: PeerId, rpc: rpc_pb2.RPC) -> None:
        self.log.append(("control", peer, rpc))

    def send_message(self, peer: PeerId, msg: PubsubMessage) -> bool:
        if peer in self.full:
            return False
        self.log.append(("message", peer, msg))
        return True

    def deliver(self, msg: PubsubMessage) -> None:
        self.log.append(("deliver", None, msg))

    def connect(self, peer: PeerId, signed_record: bytes | None) -> None:
        self.log.append(("connect", peer, signed_record))

    def peer_record(self, peer: PeerId) -> bytes | None:
        return self.records.get(peer)

    def notify(self, event: PubsubEvent) -> None:
        self.log.append(("event", None, event))

    # views
    def clear(self) -> None:
        self.log.clear()

    def _of(self, kind: str) -> list[tuple[PeerId | None, Any]]:
        return [(peer, item) for k, peer, item in self.log if k == kind]

    def controls(self, peer: PeerId | None = None) -> list[rpc_pb2.RPC]:
        """Control RPCs sent (to ``peer`` only, if given), in order."""
        return [rpc for p, rpc in self._of("control") if peer is None or p == peer]

    def control_peers(self) -> list[PeerId]:
        """The receiver of every control RPC, in order (a peer twice = two RPCs)."""
        return [p for p, _ in self._of("control") if p is not None]

    def _entries(self, field: str) -> list[tuple[PeerId, Any]]:
        return [(p, e) for p, rpc in self._of("control") if p is not None for e in getattr(rpc.control, field)]

    def grafts(self) -> list[tuple[PeerId, str]]:
        return [(p, g.topicID) for p, g in self._entries("graft")]

    def prunes(self) -> list[tuple[PeerId, rpc_pb2.ControlPrune]]:
        return self._entries("prune")

    def ihaves(self) -> list[tuple[PeerId, rpc_pb2.ControlIHave]]:
        return self._entries("ihave")

    def iwants(self) -> list[tuple[PeerId, list[bytes]]]:
        return [(p, list(w.messageIDs)) for p, w in self._entries("iwant")]

    def idontwants(self) -> list[tuple[PeerId, list[bytes]]]:
        return [(p, list(w.messageIDs)) for p, w in self._entries("idontwant")]

    def subscriptions(self) -> list[tuple[PeerId, bool, str]]:
        return [(p, s.subscribe, s.topicid) for p, rpc in self._of("control") if p is not None for s in rpc.subscriptions]

    def sent(self) -> list[tuple[PeerId, PubsubMessage]]:
        return [(p, m) for p, m in self._of("message") if p is not None]

    def receivers(self, msg_id: bytes) -> list[PeerId]:
        """Peers the message with ``msg_id`` was sent to (a peer twice = sent twice)."""
        return [p for p, m in self.sent() if m.id == msg_id]

    def delivered(self) -> list[PubsubMessage]:
        return [m for _, m in self._of("deliver")]

    def connects(self) -> list[tuple[PeerId, bytes | None]]:
        return [(p, r) for p, r in self._of("connect") if p is not None]

    def events(self) -> list[PubsubEvent]:
        return [e for _, e in self._of("event")]


class Harness:
    """One router under test, its recorder, its peers (``peers[i]`` is ``pid(i + 1)``) and the time."""

    def __init__(self, router: GossipsubRouter, out: Recorder, peers: list[PeerId], now: float) -> None:
        self.router = router
        self.out = out
        self.peers = peers
        self.now = now
        self._seqno = 0

    @property
    def config(self) -> GossipsubConfig:
        return self.router.config

    def mesh(self, topic: str = TOPIC) -> set[PeerId]:
        return self.router.mesh_peers(topic)

    def score(self, peer: PeerId) -> float:
        return self.router.score.score(peer, self.now)

    @property
    def scores(self) -> PeerScore:
        """The router's score table (the config must enable scoring: see :func:`scoring`)."""
        assert isinstance(self.router.score, PeerScore), "scoring is off"
        return self.router.score

    # time
    def advance(self, seconds: float) -> None:
        """Move time without running any timer."""
        self.now += seconds

    def heartbeat(self, count: int = 1) -> None:
        """Move one heartbeat interval forward and run the heartbeat, ``count`` times."""
        for _ in range(count):
            self.now += self.config.heartbeat_interval
            self.router.heartbeat(self.now)

    # peers
    def add_peer(
        self, index: int, protocol: str = GOSSIPSUB_V12, *, outbound: bool = False, topics: Iterable[str] = (TOPIC,)
    ) -> PeerId:
        """Connect ``pid(index)`` speaking ``protocol``; it announces ``topics``."""
        peer = pid(index)
        self.router.add_peer(peer, protocol, outbound=outbound, now=self.now)
        topics = list(topics)
        if topics:
            self.rpc(peer, subscribe=topics)
        return peer

    # RPCs from peers
    def rpc(
        self,
        peer: PeerId,
        *,
        subscribe: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        publish: Iterable[PubsubMessage | rpc_pb2.Message] = (),
        ihave: Iterable[tuple[str, Sequence[bytes]]] = (),
        iwant: Sequence[bytes] = (),
        graft: Iterable[str] = (),
        prune: Iterable[rpc_pb2.ControlPrune] = (),
        idontwant: Sequence[bytes] = (),
    ) -> list[PubsubMessage]:
        """Build one RPC from ``peer``, put it through an encode/decode round trip as the wire would,
        and hand it to the router; returns what the router wants validated."""
        rpc = rpc_pb2.RPC()
        for t in subscribe:
            rpc.subscriptions.add(subscribe=True, topicid=t)
        for t in unsubscribe:
            rpc.subscriptions.add(subscribe=False, topicid=t)
        for m in publish:
            rpc.publish.append(rpc_pb2.Message.FromString(m.raw) if isinstance(m, PubsubMessage) else m)
        ctl = rpc.control
        for t, ids in ihave:
            ctl.ihave.add(topicID=t, messageIDs=list(ids))
        if iwant:
            ctl.iwant.add(messageIDs=list(iwant))
        for t in graft:
            ctl.graft.add(topicID=t)
        ctl.prune.extend(prune)
        if idontwant:
            ctl.idontwant.add(messageIDs=list(idontwant))
        if not ctl.ListFields():
            rpc.ClearField("control")
        return self.router.handle_rpc(peer, rpc_pb2.RPC.FromString(rpc.SerializeToString()), self.now)

    def graft(self, peer: PeerId, *topics: str) -> None:
        self.rpc(peer, graft=topics or (TOPIC,))

    def prune(
        self, peer: PeerId, topic: str = TOPIC, *, backoff: int | None = None, px: Iterable[tuple[PeerId, bytes | None]] = ()
    ) -> None:
        p = rpc_pb2.ControlPrune(topicID=topic)
        if backoff is not None:
            p.backoff = backoff
        for peer_id, rec in px:
            info = p.peers.add(peerID=peer_id.to_bytes())
            if rec is not None:
                info.signedPeerRecord = rec
        self.rpc(peer, prune=[p])

    def ihave(self, peer: PeerId, ids: Sequence[bytes], topic: str = TOPIC) -> None:
        self.rpc(peer, ihave=[(topic, ids)])

    # messages
    def message(self, data: bytes = b"hello", topic: str = TOPIC, *, author: int = AUTHOR) -> PubsubMessage:
        """A new signed message by ``identity(author)`` with its id under this router's id function."""
        self._seqno += 1
        msg = signed(topic, data, author=author, seqno=self._seqno)
        return dataclasses.replace(msg, id=self.router.message_id(msg))

    def receive(
        self, peer: PeerId, msg: PubsubMessage, result: ValidationResult | None = ACCEPT
    ) -> PubsubMessage | None:
        """``peer`` sends ``msg``; when the router wants it validated, report ``result`` (None: leave it
        pending). Returns the message handed out for validation, if any."""
        got = self.rpc(peer, publish=[msg])
        assert len(got) <= 1
        if got and result is not None:
            self.router.validation_complete(got[0], result, self.now)
        return got[0] if got else None

    def publish(self, data: bytes = b"ours", topic: str = TOPIC) -> tuple[PubsubMessage, list[PeerId]]:
        """Publish as our application does: signed by us, id set; returns it and whom it went to."""
        msg = self.message(data, topic, author=LOCAL)
        return msg, self.router.publish(msg, self.now)


def scoring(
    *,
    thresholds: PeerScoreThresholds | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Config arguments enabling scoring with P7 weight −1 (one penalty = −1, two = −4) and P5 weight 1
    (``set_app_score`` values count as they are); ``params`` override PeerScoreParams fields."""
    base: dict[str, Any] = {"behaviour_penalty_weight": -1.0, "behaviour_penalty_decay": 0.9}
    base.update(params)
    return {"score_params": PeerScoreParams(**base), "score_thresholds": thresholds or PeerScoreThresholds()}


def make_router(
    n: int = 20,
    *,
    topics: Sequence[str] = (TOPIC,),
    join: bool = True,
    peer_topics: Sequence[str] | None = None,
    protocol: str | Sequence[str] = GOSSIPSUB_V12,
    outbound: bool | Sequence[bool] = False,
    direct: Iterable[int] = (),
    flood_only: bool = False,
    seed: int = 0,
    now: float = 0.0,
    clear: bool = True,
    config: GossipsubConfig | None = None,
    **config_fields: Any,
) -> Harness:
    """A router (identity ``LOCAL``) with ``n`` connected peers ``pid(1)..pid(n)``.

    Each peer speaks ``protocol`` (one for all, or one per peer), is outbound per ``outbound`` and
    subscribes to ``peer_topics`` (default: ``topics``). Then, with ``join``, the router subscribes to
    ``topics`` (building its meshes from the subscribed peers, as go's Join does). ``direct`` lists
    peer positions (0-based) that are direct peers. ``config_fields`` go to GossipsubConfig. With
    ``clear`` the recorder starts empty (the greetings, subscriptions and JOIN grafts are dropped).
    """
    if config is None:
        config = GossipsubConfig(**config_fields)
    elif config_fields:
        config = config.replace(**config_fields)
    peers = [pid(i + 1) for i in range(n)]
    out = Recorder()
    for p in peers:
        out.records[p] = record_of(p)
    router = GossipsubRouter(
        config,
        pid(LOCAL),
        out,
        random.Random(seed),
        now,
        direct_peers=[peers[i] for i in direct],
        flood_only=flood_only,
    )
    h = Harness(router, out, peers, now)
    protocols = [protocol] * n if isinstance(protocol, str) else list(protocol)
    directions = [outbound] * n if isinstance(outbound, bool) else list(outbound)
    for i in range(n):
        h.add_peer(i + 1, protocols[i], outbound=directions[i], topics=topics if peer_topics is None else peer_topics)
    if join:
        for t in topics:
            router.join(t, now)
    if clear:
        out.clear()
    return h


# --- several routers in memory ----------------------------------------------------------------------


class _NodeOutput(Recorder):
    """A node's output in a :class:`SimNet`: records like :class:`Recorder` and hands RPCs to the net."""

    def __init__(self, net: SimNet, index: int) -> None:
        super().__init__()
        self.net = net
        self.index = index

    def send_control(self, peer: PeerId, rpc: rpc_pb2.RPC) -> None:
        super().send_control(peer, rpc)
        self.net.queue.append((self.index, peer, rpc.SerializeToString()))

    def send_message(self, peer: PeerId, msg: PubsubMessage) -> bool:
        super().send_message(peer, msg)
        self.net.queue.append((self.index, peer, rpc_pb2.RPC(publish=[rpc_pb2.Message.FromString(msg.raw)]).SerializeToString()))
        return True

    def connect(self, peer: PeerId, signed_record: bytes | None) -> None:
        super().connect(peer, signed_record)
        target = self.net.index_of.get(peer)
        if target is not None:
            self.net.link(self.index, target)

    def peer_record(self, peer: PeerId) -> bytes | None:
        return record_of(peer)


class SimNet:
    """``n`` routers (identities ``pid(1)..pid(n)``, positions 0..n-1) linked in memory: what one sends
    reaches the other at once (in send order), every message is validated as ACCEPT, and time moves
    only in :meth:`run`, which fires each router's timers at the deadlines it asks for.

    ``config`` defaults to go's defaults, which publish to the mesh or fanout (``flood_publish=False``:
    go's router only floods with ``WithFloodPublish(true)``). ``configs`` overrides the config per position; ``flood_only`` positions run floodsub routers;
    ``protocols`` sets the newest protocol a node speaks; ``direct`` lists each node's direct peers.
    """

    def __init__(
        self,
        n: int,
        config: GossipsubConfig | None = None,
        *,
        configs: dict[int, GossipsubConfig] | None = None,
        flood_only: Iterable[int] = (),
        protocols: dict[int, str] | None = None,
        direct: dict[int, Sequence[int]] | None = None,
        seed: int = 0,
        validate: Callable[[int, PubsubMessage], ValidationResult] | None = None,
    ) -> None:
        self.now = 0.0
        self.queue: deque[tuple[int, PeerId, bytes]] = deque()
        self.links: set[frozenset[int]] = set()
        self.validate = validate
        flood = set(flood_only)
        self.protocols = {i: FLOODSUB for i in flood} | (protocols or {})
        self.outs = [_NodeOutput(self, i) for i in range(n)]
        self.routers = [
            GossipsubRouter(
                (configs or {}).get(i, config or GossipsubConfig(flood_publish=False)),
                pid(i + 1),
                self.outs[i],
                random.Random(seed * 1000 + i),
                self.now,
                direct_peers=[pid(j + 1) for j in (direct or {}).get(i, ())],
                flood_only=i in flood,
            )
            for i in range(n)
        ]
        self.index_of = {pid(i + 1): i for i in range(n)}
        self._seqno = 0

    def _protocol(self, a: int, b: int) -> str:
        pa, pb = self.protocols.get(a, GOSSIPSUB_V12), self.protocols.get(b, GOSSIPSUB_V12)
        return pa if PeerKind.from_protocol(pa) <= PeerKind.from_protocol(pb) else pb

    def link(self, dialer: int, listener: int) -> None:
        """Connect two nodes (outbound for ``dialer``); each greets the other."""
        if dialer == listener or frozenset((dialer, listener)) in self.links:
            return
        self.links.add(frozenset((dialer, listener)))
        proto = self._protocol(dialer, listener)
        self.routers[dialer].add_peer(pid(listener + 1), proto, outbound=True, now=self.now)
        self.routers[listener].add_peer(pid(dialer + 1), proto, outbound=False, now=self.now)
        self.pump()

    def unlink(self, a: int, b: int) -> None:
        """Close the connection between two nodes (both routers forget the other)."""
        if frozenset((a, b)) in self.links:
            self.links.discard(frozenset((a, b)))
            self.routers[a].remove_peer(pid(b + 1), self.now)
            self.routers[b].remove_peer(pid(a + 1), self.now)

    def isolate(self, node: int) -> None:
        """Close every connection of ``node`` (go's ``host.Close()``)."""
        for link in [link for link in self.links if node in link]:
            a, b = sorted(link)
            self.unlink(a, b)

    def connect_random(self, degree: int, rng: random.Random) -> None:
        """Each node dials ``degree`` random others (go's sparseConnect / denseConnect)."""
        n = len(self.routers)
        for i in range(n):
            for j in rng.sample([k for k in range(n) if k != i], degree):
                self.link(i, j)

    def degree(self, i: int) -> int:
        return sum(1 for link in self.links if i in link)

    def join(self, topic: str, nodes: Iterable[int]) -> None:
        for i in nodes:
            self.routers[i].join(topic, self.now)
        self.pump()

    def leave(self, topic: str, nodes: Iterable[int]) -> None:
        for i in nodes:
            self.routers[i].leave(topic, self.now)
        self.pump()

    def publish(self, node: int, data: bytes, topic: str = TOPIC) -> PubsubMessage:
        self._seqno += 1
        msg = signed(topic, data, author=node + 1, seqno=self._seqno)
        router = self.routers[node]
        msg = dataclasses.replace(msg, id=router.message_id(msg))
        router.publish(msg, self.now)
        self.pump()
        return msg

    def received(self, node: int) -> list[bytes]:
        """Payloads node ``node`` delivered to its application, in order."""
        return [m.data for m in self.outs[node].delivered()]

    def pump(self) -> None:
        """Deliver every queued RPC (and what it causes) until the network is quiet."""
        while self.queue:
            src, dst_peer, payload = self.queue.popleft()
            dst = self.index_of[dst_peer]
            router = self.routers[dst]
            if pid(src + 1) not in router.peers:
                continue
            for msg in router.handle_rpc(pid(src + 1), rpc_pb2.RPC.FromString(payload), self.now):
                result = self.validate(dst, msg) if self.validate is not None else ACCEPT
                router.validation_complete(msg, result, self.now)

    def run(self, seconds: float) -> None:
        """Advance time by ``seconds``, running every router's timers at their deadlines in order."""
        end = self.now + seconds
        while True:
            due = min(r.next_deadline() for r in self.routers)
            if due > end:
                break
            self.now = max(self.now, due)
            for r in self.routers:
                if r.next_deadline() <= self.now:
                    r.handle_timeout(self.now)
            self.pump()
        self.now = end
