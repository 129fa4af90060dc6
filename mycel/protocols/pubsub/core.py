"""The gossipsub router as a sans-IO state machine (v1.0, v1.1, v1.2, with floodsub peers).

No trio, no clock, no randomness of its own: every entry point takes ``now`` (seconds, monotonic), the
random source is passed in, and everything the router wants done goes to a :class:`RouterOutput`
(send a control RPC, send a message, deliver to the application, dial a peer, report an event) —
synchronous calls that never block. The driver (:mod:`mycel.protocols.pubsub.service`) calls
:meth:`GossipsubRouter.handle_timeout` at :meth:`GossipsubRouter.next_deadline`.

Flow of a received message: :meth:`handle_rpc` checks it (size, author, signature policy, seen cache:
duplicates are never validated twice) and returns the new ones to validate; the driver runs the
application's validators and reports each result to :meth:`validation_complete`, which delivers and
forwards accepted messages and scores rejected ones.

Behaviour follows the specs (pubsub/README.md, gossipsub-v1.0/v1.1/v1.2) and, where they leave room,
go-libp2p-pubsub (the reference most of the network runs).
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from mycel.core.events import ServiceEvent
from mycel.core.peer_id import PeerId
from mycel.protocols.pubsub import rpc_pb2
from mycel.protocols.pubsub.caches import MessageCache, SeenCache
from mycel.protocols.pubsub.config import (
    FLOODSUB,
    GOSSIPSUB_V10,
    GOSSIPSUB_V11,
    GOSSIPSUB_V12,
    GossipsubConfig,
    SignaturePolicy,
)
from mycel.protocols.pubsub.messages import (
    InvalidMessage,
    MessageCheck,
    PubsubMessage,
    check_message,
    decode_message,
    default_message_id,
)
from mycel.protocols.pubsub.score import PeerScore, PeerScoreThresholds, RejectReason

if TYPE_CHECKING:
    from mycel.protocols.pubsub.messages import MessageIdFn

log = logging.getLogger("mycel.protocols.pubsub")

MAX_BACKOFF = 24 * 3600.0  # a PRUNE's backoff is capped to a day (the peer only hurts itself)
BACKOFF_SLACK_HEARTBEATS = 2  # we wait this much past a backoff before grafting again (clock skew)


class PeerKind(enum.IntEnum):
    """What a peer speaks, from the protocol of its stream (higher = newer)."""

    FLOODSUB = 0
    GOSSIPSUB_V10 = 1
    GOSSIPSUB_V11 = 2
    GOSSIPSUB_V12 = 3

    @classmethod
    def from_protocol(cls, protocol: str) -> PeerKind:
        """The kind for a negotiated protocol id (unknown ids are treated as the newest gossipsub we
        speak only if they are one of ours; anything else is a ValueError)."""
        try:
            return _KINDS[protocol]
        except KeyError:
            raise ValueError(f"not a pubsub protocol: {protocol}") from None

    @property
    def is_gossipsub(self) -> bool:
        """True for meshsub peers (they take part in meshes and gossip)."""
        return self is not PeerKind.FLOODSUB


_KINDS = {
    GOSSIPSUB_V12: PeerKind.GOSSIPSUB_V12,
    GOSSIPSUB_V11: PeerKind.GOSSIPSUB_V11,
    GOSSIPSUB_V10: PeerKind.GOSSIPSUB_V10,
    FLOODSUB: PeerKind.FLOODSUB,
}


class ValidationResult(enum.Enum):
    """What a validator decided (gossipsub v1.1 extended validators)."""

    ACCEPT = "accept"
    """Deliver and forward."""
    REJECT = "reject"
    """Invalid: drop, and penalise the peers that sent it (P4)."""
    IGNORE = "ignore"
    """Drop without penalty."""
    THROTTLED = "throttled"
    """Not validated (the validation queue was full): drop without penalty."""


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PubsubEvent(ServiceEvent):
    """Base class of what the pubsub router reports."""


@dataclass(frozen=True)
class MessageDropped(PubsubEvent):
    """A message was not sent to ``peer`` because its outgoing queue was full (``count`` so far)."""

    peer: PeerId
    topic: str
    """The topic of the dropped message ("" for a control RPC)."""
    count: int


@dataclass(frozen=True)
class PeerGraylisted(PubsubEvent):
    """``peer``'s score fell below the graylist threshold: its RPCs are ignored until it recovers."""

    peer: PeerId
    score: float


@dataclass(frozen=True)
class InvalidMessageReceived(PubsubEvent):
    """``peer`` sent a message that failed checks or validation (``reason``)."""

    peer: PeerId
    topic: str
    """The message's topic."""
    reason: str


@dataclass(frozen=True)
class SlowPeer(PubsubEvent):
    """``peer``'s outgoing queue is full: it does not read fast enough."""

    peer: PeerId
    queued: int
    """How many items its queue holds (its bound)."""


@dataclass(frozen=True)
class PeerJoinedTopic(PubsubEvent):
    """``peer``, connected to us, subscribed to ``topic`` (it told us so, or did when its pubsub stream
    opened). Only peers we are connected to are known: gossipsub keeps no list of a topic's members."""

    peer: PeerId
    topic: str


@dataclass(frozen=True)
class PeerLeftTopic(PubsubEvent):
    """``peer`` is no longer in ``topic`` for us: it unsubscribed, or its pubsub stream or connection
    ended."""

    peer: PeerId
    topic: str


class RouterOutput(Protocol):
    """Where the router's decisions go; every call is synchronous and must not block."""

    def send_control(self, peer: PeerId, rpc: rpc_pb2.RPC) -> None:
        """Send subscriptions and/or control messages to ``peer`` (priority lane)."""

    def send_message(self, peer: PeerId, msg: PubsubMessage) -> bool:
        """Queue ``msg`` for ``peer``; False if it was dropped (queue full)."""

    def deliver(self, msg: PubsubMessage) -> None:
        """Hand a validated message to the application's subscriptions."""

    def connect(self, peer: PeerId, signed_record: bytes | None) -> None:
        """Dial ``peer`` (a direct peer, or one from peer exchange with its signed record)."""

    def peer_record(self, peer: PeerId) -> bytes | None:
        """The signed peer record we hold for ``peer`` (offered in peer exchange), if any."""

    def notify(self, event: PubsubEvent) -> None:
        """Report an event to the application."""


@dataclass(slots=True)
class _Peer:
    kind: PeerKind
    outbound: bool
    topics: set[str] = field(default_factory=set)
    dont_send: dict[bytes, int] = field(default_factory=dict)  # IDONTWANT id -> heartbeats left
    ihave_count: int = 0  # IHAVE messages this heartbeat
    iasked: int = 0  # ids we asked this peer for this heartbeat
    idontwant_count: int = 0  # IDONTWANT messages this heartbeat
    graylisted: bool = False


@dataclass(slots=True)
class _Pending:
    subs: list[tuple[bool, str]] = field(default_factory=list)
    ihave: list[rpc_pb2.ControlIHave] = field(default_factory=list)
    iwant: list[bytes] = field(default_factory=list)
    graft: list[str] = field(default_factory=list)
    prune: list[rpc_pb2.ControlPrune] = field(default_factory=list)
    idontwant: list[bytes] = field(default_factory=list)


class _NoScore:
    """Scoring disabled: every peer scores 0 and nothing is recorded."""

    def add_peer(self, peer: PeerId, now: float) -> None: ...
    def remove_peer(self, peer: PeerId, now: float) -> None: ...
    def set_ips(self, peer: PeerId, ips: Iterable[str]) -> None: ...
    def graft(self, peer: PeerId, topic: str, now: float) -> None: ...
    def prune(self, peer: PeerId, topic: str, now: float) -> None: ...
    def validate_message(self, msg_id: bytes, now: float) -> None: ...
    def deliver_message(self, peer: PeerId, msg_id: bytes, topic: str, now: float) -> None: ...
    def reject_message(self, peer: PeerId, msg_id: bytes, topic: str, reason: RejectReason, now: float) -> None: ...
    def duplicate_message(self, peer: PeerId, msg_id: bytes, topic: str, now: float) -> None: ...
    def add_penalty(self, peer: PeerId, count: int = 1) -> None: ...
    def refresh(self, now: float) -> None: ...

    def score(self, peer: PeerId, now: float) -> float:
        return 0.0

    def next_refresh(self) -> float:
        return float("inf")


_NO_SCORE_THRESHOLDS = PeerScoreThresholds(0.0, 0.0, 0.0, 0.0, 0.0)

_CHECK_REASONS = {
    MessageCheck.MISSING_SIGNATURE: RejectReason.MISSING_SIGNATURE,
    MessageCheck.INVALID_SIGNATURE: RejectReason.INVALID_SIGNATURE,
    MessageCheck.UNEXPECTED_SIGNATURE: RejectReason.UNEXPECTED_SIGNATURE,
    MessageCheck.UNEXPECTED_AUTH_INFO: RejectReason.UNEXPECTED_AUTH_INFO,
    MessageCheck.BAD_AUTHOR: RejectReason.INVALID_SIGNATURE,
}


class GossipsubRouter:
    """The router: peers, subscriptions, meshes, fanout, gossip, scoring (see the module docstring).

    ``flood_only=True`` makes it a floodsub router (``/floodsub/1.0.0``): every message goes to every
    peer in the topic; no mesh, no control messages.
    """

    def __init__(
        self,
        config: GossipsubConfig,
        local_peer: PeerId,
        output: RouterOutput,
        rng: random.Random,
        now: float,
        *,
        direct_peers: Iterable[PeerId] = (),
        flood_only: bool = False,
    ) -> None:
        self.config = config
        self.local_peer = local_peer
        self.out = output
        self.rng = rng
        self.flood_only = flood_only
        self.direct: frozenset[PeerId] = frozenset(direct_peers)
        self.msg_id_fn: MessageIdFn = config.message_id_fn or default_message_id
        self._strict_sign = config.signature_policy is SignaturePolicy.STRICT_SIGN
        self.score: PeerScore | _NoScore = (
            PeerScore(config.score_params, now) if config.score_params is not None and not flood_only else _NoScore()
        )
        # scoring off: every score is 0 and the thresholds are 0, as go leaves them (PX is then followed)
        self.thresholds = config.score_thresholds if isinstance(self.score, PeerScore) else _NO_SCORE_THRESHOLDS
        self.peers: dict[PeerId, _Peer] = {}
        self.topics: dict[str, set[PeerId]] = {}  # topic -> peers subscribed to it (never empty sets)
        self.subscriptions: set[str] = set()  # our own topics
        self.mesh: dict[str, set[PeerId]] = {}
        self.fanout: dict[str, set[PeerId]] = {}
        self.last_pub: dict[str, float] = {}
        self.backoff: dict[str, dict[PeerId, float]] = {}
        self.seen = SeenCache(config.seen_ttl, config.max_seen)
        self.mcache = MessageCache(config.history_length, config.history_gossip, config.max_mcache_messages)
        self.promises: dict[bytes, dict[PeerId, float]] = {}  # IWANT we sent: id -> peer -> deadline
        self.heartbeat_ticks = 0
        self.next_heartbeat = now + config.heartbeat_initial_delay
        self._pending: dict[PeerId, _Pending] = {}
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "rpcs_received",
                "messages_received",
                "duplicates",
                "invalid",
                "rejected",
                "ignored",
                "throttled",
                "delivered",
                "forwarded",
                "published",
                "dropped_to_peers",
                "graylisted_rpcs",
                "oversized",
                "not_subscribed",
                "subscriptions_refused",
                "iwant_ignored",
                "ihave_ignored",
                "idontwant_ignored",
                "idontwant_saved",
                "broken_promises",
                "graft_refused",
            ),
            0,
        )

    # --- peers -----------------------------------------------------------------------------------

    def add_peer(self, peer: PeerId, protocol: str, *, outbound: bool, now: float) -> None:
        """A pubsub stream to ``peer`` speaking ``protocol`` is ready: greet it with our topics."""
        if peer in self.peers:
            return
        self.peers[peer] = _Peer(PeerKind.from_protocol(protocol), outbound)
        self.score.add_peer(peer, now)
        if self.subscriptions:
            self._pending_for(peer).subs.extend((True, t) for t in sorted(self.subscriptions))
        self._flush()

    def remove_peer(self, peer: PeerId, now: float) -> None:
        """``peer`` is gone (no pubsub stream left)."""
        state = self.peers.pop(peer, None)
        if state is None:
            return
        for topic in state.topics:
            self._drop_topic_peer(topic, peer)
        for topic, peers in self.mesh.items():
            if peer in peers:
                peers.discard(peer)
        for peers in self.fanout.values():
            peers.discard(peer)
        self._pending.pop(peer, None)
        self.score.remove_peer(peer, now)

    def set_peer_ips(self, peer: PeerId, ips: Iterable[str]) -> None:
        """The IPs ``peer`` is connected from (P6, IP colocation)."""
        self.score.set_ips(peer, ips)

    def _drop_topic_peer(self, topic: str, peer: PeerId) -> None:
        peers = self.topics.get(topic)
        if peers is not None:
            peers.discard(peer)
            if not peers:
                del self.topics[topic]  # no empty topic entries (the subscription-flood leak)

    # --- the application's side ----------------------------------------------------------------

    def join(self, topic: str, now: float) -> None:
        """Subscribe: announce it to every peer and build the topic's mesh (from fanout peers first)."""
        if topic in self.subscriptions:
            return
        self.subscriptions.add(topic)
        for peer in self.peers:
            self._pending_for(peer).subs.append((True, topic))
        if not self.flood_only:
            self._build_mesh(topic, now)
        self._flush()

    def _build_mesh(self, topic: str, now: float) -> None:
        if topic in self.mesh:
            return
        d = self.config.d
        members = self.fanout.pop(topic, None)
        self.last_pub.pop(topic, None)
        if members is not None:
            members = {p for p in members if self._score(p, now) >= 0 and not self._in_backoff(topic, p, now)}
            if len(members) < d:
                members.update(
                    self._select_peers(
                        topic,
                        d - len(members),
                        lambda p: p not in members and p not in self.direct and not self._in_backoff(topic, p, now)
                        and self._score(p, now) >= 0,
                    )
                )
        else:
            members = set(
                self._select_peers(
                    topic,
                    d,
                    lambda p: p not in self.direct and not self._in_backoff(topic, p, now) and self._score(p, now) >= 0,
                )
            )
        self.mesh[topic] = members
        for peer in members:
            self.score.graft(peer, topic, now)
            self._pending_for(peer).graft.append(topic)

    def leave(self, topic: str, now: float) -> None:
        """Unsubscribe: announce it and leave the mesh with PRUNEs carrying the unsubscribe backoff."""
        if topic not in self.subscriptions:
            return
        self.subscriptions.discard(topic)
        for peer in self.peers:
            self._pending_for(peer).subs.append((False, topic))
        members = self.mesh.pop(topic, set())
        for peer in members:
            self.score.prune(peer, topic, now)
            self._pending_for(peer).prune.append(self._make_prune(peer, topic, do_px=self.config.do_px, unsubscribe=True, now=now))
            self._add_backoff(peer, topic, self.config.unsubscribe_backoff, now)
        self._flush()

    def message_id(self, msg: PubsubMessage) -> bytes:
        """The id of ``msg`` under this router's message-id function."""
        return self.msg_id_fn(msg)

    def publish(self, msg: PubsubMessage, now: float) -> list[PeerId]:
        """Send a message we authored (already validated locally); returns the peers it was queued for.

        The message must carry its id (``msg.id``); it is marked seen and cached for gossip.
        """
        if not self.seen.add(msg.id, now):
            return []
        self.mcache.put(msg)
        self.counters["published"] += 1
        sent = self._forward(msg, now, own=True)
        self._flush()
        return sent

    # --- the network's side --------------------------------------------------------------------

    def handle_rpc(self, peer: PeerId, rpc: rpc_pb2.RPC, now: float) -> list[PubsubMessage]:
        """Process one RPC from ``peer``; returns the new messages to validate (each with its id set).

        Subscriptions are applied, control messages answered, duplicates and invalid messages
        counted and scored; nothing raises for hostile input.
        """
        state = self.peers.get(peer)
        if state is None:
            return []
        self.counters["rpcs_received"] += 1
        score = self._score(peer, now)
        # direct peers are never graylisted: the spec has their RPCs "always accepted" (go's AcceptFrom)
        if score < self.thresholds.graylist_threshold and not self.flood_only and peer not in self.direct:
            self.counters["graylisted_rpcs"] += 1
            if not state.graylisted:
                state.graylisted = True
                log.info("ignoring RPCs from %s: score %.2f is below the graylist threshold", peer, score)
                self.out.notify(PeerGraylisted(peer, score))
            return []
        state.graylisted = False
        if rpc.subscriptions:
            self._handle_subscriptions(peer, state, rpc.subscriptions, now)
        to_validate: list[PubsubMessage] = []
        for pb in rpc.publish:
            msg = self._receive_message(peer, pb, now)
            if msg is not None:
                to_validate.append(msg)
        if rpc.HasField("control") and state.kind.is_gossipsub and not self.flood_only:
            self._handle_control(peer, state, rpc.control, score, now)
        self._flush()
        return to_validate

    def _handle_subscriptions(
        self, peer: PeerId, state: _Peer, subs: Iterable[rpc_pb2.RPC.SubOpts], now: float
    ) -> None:
        for i, sub in enumerate(subs):
            if i >= self.config.max_subscriptions_per_rpc:
                self.counters["subscriptions_refused"] += 1
                break
            topic = sub.topicid
            if not isinstance(topic, str):  # not UTF-8 (upb hands back bytes): no topic of anybody's
                self.counters["subscriptions_refused"] += 1
                continue
            if sub.subscribe:
                if topic in state.topics:
                    continue
                # the caps bound what a flood can make us hold; a topic of ours is always taken, or
                # squatters filling the tables would keep honest peers out of our meshes
                if topic not in self.subscriptions and (
                    len(state.topics) >= self.config.max_topics_per_peer
                    or (topic not in self.topics and len(self.topics) >= self.config.max_topics)
                ):
                    self.counters["subscriptions_refused"] += 1
                    continue
                state.topics.add(topic)
                self.topics.setdefault(topic, set()).add(peer)
                self._graft_newcomer(peer, state, topic, now)
            elif topic in state.topics:
                state.topics.discard(topic)
                self._drop_topic_peer(topic, peer)
                members = self.mesh.get(topic)
                if members is not None and peer in members:
                    members.discard(peer)
                    self.score.prune(peer, topic, now)
                fan = self.fanout.get(topic)
                if fan is not None:
                    fan.discard(peer)

    def _graft_newcomer(self, peer: PeerId, state: _Peer, topic: str, now: float) -> None:
        """A peer joined one of our topics while its mesh is below D_lo: graft it now, not at the next
        heartbeat (as rust-libp2p does), or what the mesh forwards in the meantime never reaches it."""
        members = self.mesh.get(topic)
        if (
            members is None
            or len(members) >= self.config.d_lo
            or not state.kind.is_gossipsub
            or peer in self.direct
            or self._in_backoff(topic, peer, now)
            or self._score(peer, now) < 0
        ):
            return
        members.add(peer)
        self.score.graft(peer, topic, now)
        self._pending_for(peer).graft.append(topic)

    def _receive_message(self, peer: PeerId, pb: rpc_pb2.Message, now: float) -> PubsubMessage | None:
        self.counters["messages_received"] += 1
        topic = pb.topic
        if topic not in self.subscriptions:
            self.counters["not_subscribed"] += 1  # not ours to relay (go ignores them too)
            return None
        if len(pb.data) > self.config.message_size_limit(topic):
            self.counters["oversized"] += 1
            log.info("dropping a %d-byte message on %r from %s: above the topic's limit", len(pb.data), topic, peer)
            return None
        try:
            msg = decode_message(pb)
        except InvalidMessage as exc:
            self._invalid(peer, topic, b"", exc, now)
            return None
        try:
            msg_id = self.msg_id_fn(msg)
        except Exception as exc:  # a user's id function failing on hostile data: that message only
            self.counters["invalid"] += 1
            log.info("message id function failed on a message from %s: %r", peer, exc)
            return None
        msg = _with(msg, msg_id, peer)
        if msg_id in self.seen:
            self.counters["duplicates"] += 1
            self.score.duplicate_message(peer, msg_id, topic, now)
            promised = self.promises.get(msg_id)
            if promised is not None:
                promised.pop(peer, None)
            return None
        try:
            check_message(msg, strict_sign=self._strict_sign)
        except InvalidMessage as exc:
            # not marked seen: a valid copy of the same id (from an honest peer) must still get through
            self._invalid(peer, topic, msg_id, exc, now)
            return None
        if msg.source == self.local_peer:
            self.seen.add(msg_id, now)
            self.score.reject_message(peer, msg_id, topic, RejectReason.SELF_ORIGIN, now)
            return None
        self.seen.add(msg_id, now)
        self.promises.pop(msg_id, None)  # kept on arrival, however long validation takes (go)
        self.score.validate_message(msg_id, now)
        if len(msg.data) >= self.config.idontwant_message_threshold:
            self._send_idontwant(msg, peer)
        return msg

    def _invalid(self, peer: PeerId, topic: str, msg_id: bytes, exc: InvalidMessage, now: float) -> None:
        self.counters["invalid"] += 1
        log.info("invalid message on %r from %s: %s", topic, peer, exc)
        self.score.reject_message(peer, msg_id, topic, _CHECK_REASONS[exc.reason], now)
        self.out.notify(InvalidMessageReceived(peer, topic, str(exc)))

    def _send_idontwant(self, msg: PubsubMessage, sender: PeerId) -> None:
        for p in self.mesh.get(msg.topic, ()):
            if p != sender and self.peers[p].kind is PeerKind.GOSSIPSUB_V12:
                self._pending_for(p).idontwant.append(msg.id)

    def validation_complete(self, msg: PubsubMessage, result: ValidationResult, now: float) -> None:
        """The validators decided on ``msg`` (returned by :meth:`handle_rpc`)."""
        peer = msg.received_from
        assert peer is not None
        if result is ValidationResult.ACCEPT:
            self.score.deliver_message(peer, msg.id, msg.topic, now)
            self.mcache.put(msg)
            self.counters["delivered"] += 1
            self.out.deliver(msg)
            self._forward(msg, now, own=False)
        else:
            if result is ValidationResult.REJECT:
                self.counters["rejected"] += 1
                reason = RejectReason.VALIDATION_FAILED
                self.out.notify(InvalidMessageReceived(peer, msg.topic, "rejected by a validator"))
            elif result is ValidationResult.IGNORE:
                self.counters["ignored"] += 1
                reason = RejectReason.VALIDATION_IGNORED
            else:
                self.counters["throttled"] += 1
                reason = RejectReason.VALIDATION_THROTTLED
            self.score.reject_message(peer, msg.id, msg.topic, reason, now)
        self._flush()

    def _forward(self, msg: PubsubMessage, now: float, *, own: bool) -> list[PeerId]:
        topic = msg.topic
        topic_peers = self.topics.get(topic, set())
        targets: set[PeerId] = set()
        publish_threshold = self.thresholds.publish_threshold
        if self.flood_only:
            targets.update(topic_peers)
        else:
            for p in topic_peers:
                state = self.peers[p]
                if not state.kind.is_gossipsub:
                    if self._score(p, now) >= publish_threshold:
                        targets.add(p)
                elif p in self.direct:
                    targets.add(p)
            if own and self.config.flood_publish:
                targets.update(p for p in topic_peers if self._score(p, now) >= publish_threshold)
            elif topic in self.mesh:
                targets.update(self.mesh[topic])
            else:
                fan = self.fanout.get(topic)
                if fan is None:
                    fan = set(
                        self._select_peers(
                            topic, self.config.d, lambda p: p not in self.direct and self._score(p, now) >= publish_threshold
                        )
                    )
                    if fan:
                        self.fanout[topic] = fan
                targets.update(fan)
                if fan:
                    self.last_pub[topic] = now
        targets.discard(self.local_peer)
        if msg.received_from is not None:
            targets.discard(msg.received_from)
        if msg.source is not None:
            targets.discard(msg.source)
        sent: list[PeerId] = []
        for p in targets:
            state = self.peers[p]
            if state.dont_send and msg.id in state.dont_send:
                continue
            if self.out.send_message(p, msg):
                sent.append(p)
            else:
                self.counters["dropped_to_peers"] += 1
        if not own:
            self.counters["forwarded"] += len(sent)
        return sent

    # --- control messages ----------------------------------------------------------------------

    def _handle_control(self, peer: PeerId, state: _Peer, ctl: rpc_pb2.ControlMessage, score: float, now: float) -> None:
        if ctl.ihave:
            iwant = self._handle_ihave(peer, state, ctl.ihave, score, now)
            if iwant:
                self._pending_for(peer).iwant.extend(iwant)
        if ctl.iwant:
            for msg in self._handle_iwant(peer, ctl.iwant, score):
                if not self.out.send_message(peer, msg):
                    self.counters["dropped_to_peers"] += 1
        if ctl.graft:
            prunes = self._handle_graft(peer, state, ctl.graft, score, now)
            if prunes:
                self._pending_for(peer).prune.extend(prunes)
        if ctl.prune:
            self._handle_prune(peer, ctl.prune, score, now)
        if ctl.idontwant:
            self._handle_idontwant(peer, state, ctl.idontwant)

    def _handle_ihave(
        self, peer: PeerId, state: _Peer, ihaves: Iterable[rpc_pb2.ControlIHave], score: float, now: float
    ) -> list[bytes]:
        cfg = self.config
        if score < self.thresholds.gossip_threshold:
            self.counters["ihave_ignored"] += 1
            return []
        state.ihave_count += 1
        if state.ihave_count > cfg.max_ihave_messages or state.iasked >= cfg.max_ihave_length:
            self.counters["ihave_ignored"] += 1
            return []
        wanted: dict[bytes, None] = {}
        for ihave in ihaves:
            if ihave.topicID not in self.mesh:
                continue
            for msg_id in ihave.messageIDs:
                if msg_id not in self.seen and msg_id not in wanted:
                    wanted[msg_id] = None
                    if len(wanted) >= cfg.max_ihave_length:
                        break
        if not wanted:
            return []
        ask = min(len(wanted), cfg.max_ihave_length - state.iasked)
        ids = list(wanted)
        self.rng.shuffle(ids)
        ids = ids[:ask]
        state.iasked += len(ids)
        # one promise per IWANT: a random id of it must arrive within the follow-up time (go)
        promised = self.rng.choice(ids)
        self.promises.setdefault(promised, {}).setdefault(peer, now + cfg.iwant_followup_time)  # never extended
        return ids

    def _handle_iwant(self, peer: PeerId, iwants: Iterable[rpc_pb2.ControlIWant], score: float) -> list[PubsubMessage]:
        if score < self.thresholds.gossip_threshold:
            self.counters["iwant_ignored"] += 1
            return []
        answered: dict[bytes, PubsubMessage] = {}
        unwanted = self.peers[peer].dont_send  # it told us (IDONTWANT) it has the message: not sent (go)
        for iwant in iwants:
            for msg_id in iwant.messageIDs:
                if msg_id in answered or msg_id in unwanted:
                    continue
                msg, count = self.mcache.get_for_peer(msg_id, peer)
                if msg is None:
                    continue
                if count > self.config.gossip_retransmission:
                    self.counters["iwant_ignored"] += 1
                    continue
                answered[msg_id] = msg
        return list(answered.values())

    def _handle_graft(
        self, peer: PeerId, state: _Peer, grafts: Iterable[rpc_pb2.ControlGraft], score: float, now: float
    ) -> list[rpc_pb2.ControlPrune]:
        refused: list[str] = []  # PX goes in their PRUNEs only if no GRAFT of this RPC was suspect (go)
        do_px = self.config.do_px
        cfg = self.config
        for graft in grafts:
            topic = graft.topicID
            members = self.mesh.get(topic)
            if members is None:
                do_px = False  # a topic we are not in: ignore (v1.1; no PRUNE, no PX leak)
                continue
            if peer in members:
                continue
            if peer in self.direct:
                log.warning("GRAFT from direct peer %s on %r: refused", peer, topic)
                self.counters["graft_refused"] += 1
                do_px = False
                refused.append(topic)
                continue
            expire = self.backoff.get(topic, {}).get(peer)
            if expire is not None and now < expire:
                # GRAFT during our backoff: penalty, and a second one if it came right after the PRUNE
                self.counters["graft_refused"] += 1
                self.score.add_penalty(peer, 1)
                if now < expire + cfg.graft_flood_threshold - cfg.prune_backoff:
                    self.score.add_penalty(peer, 1)
                do_px = False
                self._add_backoff(peer, topic, cfg.prune_backoff, now)
                refused.append(topic)
                continue
            if score < 0:
                self.counters["graft_refused"] += 1
                do_px = False
                self._add_backoff(peer, topic, cfg.prune_backoff, now)
                refused.append(topic)
                continue
            if len(members) >= cfg.d_hi and not state.outbound:
                self.counters["graft_refused"] += 1
                self._add_backoff(peer, topic, cfg.prune_backoff, now)
                refused.append(topic)
                continue
            members.add(peer)
            self.score.graft(peer, topic, now)
        return [self._make_prune(peer, topic, do_px=do_px, unsubscribe=False, now=now) for topic in refused]

    def _handle_prune(self, peer: PeerId, prunes: Iterable[rpc_pb2.ControlPrune], score: float, now: float) -> None:
        for prune in prunes:
            topic = prune.topicID
            members = self.mesh.get(topic)
            if members is None:
                continue
            if peer in members:
                members.discard(peer)
                self.score.prune(peer, topic, now)
            if prune.HasField("backoff") and prune.backoff > 0:
                self._add_backoff(peer, topic, min(float(prune.backoff), MAX_BACKOFF), now)
            else:
                self._add_backoff(peer, topic, self.config.prune_backoff, now)
            if prune.peers:
                if score < self.thresholds.accept_px_threshold:
                    continue
                self._px_connect(prune.peers)

    def _px_connect(self, infos: Iterable[rpc_pb2.PeerInfo]) -> None:
        taken = 0
        for info in infos:
            if taken >= self.config.max_px_peers:
                break
            try:
                pid = PeerId.from_bytes(info.peerID)
            except Exception:
                continue
            if pid == self.local_peer or pid in self.peers:
                continue
            taken += 1
            record = info.signedPeerRecord if info.HasField("signedPeerRecord") else None
            self.out.connect(pid, record)

    def _handle_idontwant(self, peer: PeerId, state: _Peer, idontwants: Iterable[rpc_pb2.ControlIDontWant]) -> None:
        cfg = self.config
        if state.idontwant_count >= cfg.max_idontwant_messages:
            self.counters["idontwant_ignored"] += 1
            return
        state.idontwant_count += 1
        taken = 0
        for idw in idontwants:
            for msg_id in idw.messageIDs:
                if taken >= cfg.max_idontwant_length:
                    self.counters["idontwant_ignored"] += 1
                    return
                taken += 1
                state.dont_send[msg_id] = cfg.idontwant_message_ttl

    def _make_prune(self, peer: PeerId, topic: str, *, do_px: bool, unsubscribe: bool, now: float) -> rpc_pb2.ControlPrune:
        prune = rpc_pb2.ControlPrune(topicID=topic)
        if self.peers[peer].kind is PeerKind.GOSSIPSUB_V10:
            return prune  # v1.0 peers know neither backoff nor PX
        backoff = self.config.unsubscribe_backoff if unsubscribe else self.config.prune_backoff
        prune.backoff = int(backoff)
        if do_px:
            candidates = sorted(
                p for p in self.topics.get(topic, ()) if p != peer and self._score(p, now) >= 0 and self.peers[p].kind.is_gossipsub
            )
            self.rng.shuffle(candidates)
            for p in candidates[: self.config.prune_peers]:
                info = prune.peers.add(peerID=p.to_bytes())
                record = self.out.peer_record(p)
                if record is not None:
                    info.signedPeerRecord = record
        return prune

    # --- timers ----------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """When :meth:`handle_timeout` must run next."""
        return min(self.next_heartbeat, self.score.next_refresh())

    def handle_timeout(self, now: float) -> None:
        """Run what is due: the heartbeat and/or the score decay."""
        if now >= self.score.next_refresh():
            self.score.refresh(now)
        if now >= self.next_heartbeat:
            self.next_heartbeat = max(self.next_heartbeat + self.config.heartbeat_interval, now)
            self.heartbeat(now)

    def heartbeat(self, now: float) -> None:
        """One heartbeat: mesh maintenance, fanout, gossip, caches, penalties (the spec's procedure)."""
        cfg = self.config
        self.heartbeat_ticks += 1
        self.seen.expire(now)
        self._expire_backoffs(now)
        for state in self.peers.values():
            state.ihave_count = 0
            state.iasked = 0
            state.idontwant_count = 0
            if state.dont_send:
                expired = [k for k, left in state.dont_send.items() if left <= 1]
                for k in expired:
                    del state.dont_send[k]
                for k in state.dont_send:
                    state.dont_send[k] -= 1
        self._apply_broken_promises(now)
        if self.flood_only:
            self.mcache.shift()
            return
        if self.direct and self.heartbeat_ticks % cfg.direct_connect_ticks == 1:
            for p in self.direct:
                if p not in self.peers:
                    self.out.connect(p, None)
        scores: dict[PeerId, float] = {}

        def score(p: PeerId) -> float:
            s = scores.get(p)
            if s is None:
                s = scores[p] = self._score(p, now)
            return s

        to_graft: dict[PeerId, list[str]] = {}
        to_prune: dict[PeerId, list[str]] = {}
        no_px: set[PeerId] = set()
        for topic, members in self.mesh.items():

            def prune_peer(p: PeerId, topic: str = topic, members: set[PeerId] = members) -> None:
                self.score.prune(p, topic, now)
                members.discard(p)
                self._add_backoff(p, topic, cfg.prune_backoff, now)
                to_prune.setdefault(p, []).append(topic)

            def graft_peer(p: PeerId, topic: str = topic, members: set[PeerId] = members) -> None:
                self.score.graft(p, topic, now)
                members.add(p)
                to_graft.setdefault(p, []).append(topic)

            for p in [p for p in members if score(p) < 0]:
                prune_peer(p)
                no_px.add(p)
            if len(members) < cfg.d_lo:
                for p in self._select_peers(
                    topic,
                    cfg.d - len(members),
                    lambda p, topic=topic, members=members: p not in members
                    and p not in self.direct
                    and not self._in_backoff(topic, p, now)
                    and score(p) >= 0,
                ):
                    graft_peer(p)
            if len(members) > cfg.d_hi or (cfg.prune_at_d_hi and len(members) == cfg.d_hi):  # oversubscribed
                plst = sorted(members)  # sets iterate in hash order (PYTHONHASHSEED): sort, then the seeded shuffle
                self.rng.shuffle(plst)
                plst.sort(key=score, reverse=True)
                rest = plst[cfg.d_score :]
                self.rng.shuffle(rest)
                plst[cfg.d_score :] = rest
                outbound = sum(1 for p in plst[: cfg.d] if self.peers[p].outbound)
                if outbound < cfg.d_out:

                    def rotate(i: int) -> None:
                        p = plst[i]
                        del plst[i]
                        plst.insert(0, p)

                    if outbound > 0:
                        left = outbound
                        for i in range(1, cfg.d):
                            if left <= 0:
                                break
                            if self.peers[plst[i]].outbound:
                                rotate(i)
                                left -= 1
                    need = cfg.d_out - outbound
                    for i in range(cfg.d, len(plst)):
                        if need <= 0:
                            break
                        if self.peers[plst[i]].outbound:
                            rotate(i)
                            need -= 1
                for p in plst[cfg.d :]:
                    prune_peer(p)
            if len(members) >= cfg.d_lo:
                outbound = sum(1 for p in members if self.peers[p].outbound)
                if outbound < cfg.d_out:
                    for p in self._select_peers(
                        topic,
                        cfg.d_out - outbound,
                        lambda p, topic=topic, members=members: p not in members
                        and p not in self.direct
                        and not self._in_backoff(topic, p, now)
                        and score(p) >= 0
                        and self.peers[p].outbound,
                    ):
                        graft_peer(p)
            if cfg.opportunistic_graft_ticks and self.heartbeat_ticks % cfg.opportunistic_graft_ticks == 0 and len(members) > 1:
                ordered = sorted(members, key=score)
                median = score(ordered[len(ordered) // 2])
                if median < self.thresholds.opportunistic_graft_threshold:
                    for p in self._select_peers(
                        topic,
                        cfg.opportunistic_graft_peers,
                        lambda p, topic=topic, members=members, median=median: p not in members
                        and p not in self.direct
                        and not self._in_backoff(topic, p, now)
                        and score(p) > median,
                    ):
                        graft_peer(p)
            self._emit_gossip(topic, members, score)
        for topic in [t for t, last in self.last_pub.items() if last + cfg.fanout_ttl < now]:
            self.fanout.pop(topic, None)
            del self.last_pub[topic]
        for topic, fan in self.fanout.items():
            topic_peers = self.topics.get(topic, set())
            for p in [p for p in fan if p not in topic_peers or score(p) < self.thresholds.publish_threshold]:
                fan.discard(p)
            if len(fan) < cfg.d:
                fan.update(
                    self._select_peers(
                        topic,
                        cfg.d - len(fan),
                        lambda p, fan=fan: p not in fan and p not in self.direct and score(p) >= self.thresholds.publish_threshold,
                    )
                )
            self._emit_gossip(topic, fan, score)
        for p, topics in to_graft.items():
            pending = self._pending_for(p)
            pending.graft.extend(topics)
            for topic in to_prune.pop(p, ()):
                pending.prune.append(self._make_prune(p, topic, do_px=cfg.do_px and p not in no_px, unsubscribe=False, now=now))
        for p, topics in to_prune.items():
            pending = self._pending_for(p)
            for topic in topics:
                pending.prune.append(self._make_prune(p, topic, do_px=cfg.do_px and p not in no_px, unsubscribe=False, now=now))
        self._flush()
        self.mcache.shift()

    def _emit_gossip(self, topic: str, exclude: set[PeerId], score: object) -> None:
        cfg = self.config
        assert callable(score)
        candidates = [
            p
            for p in self.topics.get(topic, ())
            if p not in exclude
            and p not in self.direct
            and self.peers[p].kind.is_gossipsub
            and score(p) >= self.thresholds.gossip_threshold
        ]
        if not candidates:  # e.g. every topic peer is in the mesh: no ids to collect or shuffle
            return
        ids = self.mcache.gossip_ids(topic)
        if not ids:
            return
        limit = cfg.max_ihave_length
        if len(ids) <= limit:  # more: each peer gets its own random sample below, the order is moot
            self.rng.shuffle(ids)
        target = max(cfg.d_lazy, int(cfg.gossip_factor * len(candidates)))
        if target < len(candidates):
            candidates.sort()
            self.rng.shuffle(candidates)
            candidates = candidates[:target]
        for p in candidates:
            # too many ids: each peer gets its own random sample (go: more of them reach someone)
            offer = self.rng.sample(ids, limit) if len(ids) > limit else ids
            self._pending_for(p).ihave.append(rpc_pb2.ControlIHave(topicID=topic, messageIDs=offer))

    def _apply_broken_promises(self, now: float) -> None:
        broken: dict[PeerId, int] = {}
        for msg_id in list(self.promises):
            peers = self.promises[msg_id]
            for p in [p for p, deadline in peers.items() if deadline < now]:
                del peers[p]
                broken[p] = broken.get(p, 0) + 1
            if not peers:
                del self.promises[msg_id]
        for p, count in broken.items():
            self.counters["broken_promises"] += count
            self.score.add_penalty(p, count)

    def _expire_backoffs(self, now: float) -> None:
        slack = BACKOFF_SLACK_HEARTBEATS * self.config.heartbeat_interval
        for topic in list(self.backoff):
            entries = self.backoff[topic]
            for p in [p for p, expire in entries.items() if expire + slack < now]:
                del entries[p]
            if not entries:
                del self.backoff[topic]

    # --- helpers ---------------------------------------------------------------------------------

    def _score(self, peer: PeerId, now: float) -> float:
        return self.score.score(peer, now)

    def _in_backoff(self, topic: str, peer: PeerId, now: float) -> bool:
        expire = self.backoff.get(topic, {}).get(peer)
        return expire is not None and now < expire + BACKOFF_SLACK_HEARTBEATS * self.config.heartbeat_interval

    def _add_backoff(self, peer: PeerId, topic: str, seconds: float, now: float) -> None:
        entries = self.backoff.setdefault(topic, {})
        expire = now + seconds
        if entries.get(peer, -1.0) < expire:
            entries[peer] = expire

    def _select_peers(self, topic: str, count: int, accept: object) -> list[PeerId]:
        if count <= 0:
            return []
        assert callable(accept)
        found = sorted(p for p in self.topics.get(topic, ()) if self.peers[p].kind.is_gossipsub and accept(p))
        self.rng.shuffle(found)  # sorted first, so a seed gives the same choice whatever PYTHONHASHSEED is
        return found[:count]

    def _pending_for(self, peer: PeerId) -> _Pending:
        pending = self._pending.get(peer)
        if pending is None:
            pending = self._pending[peer] = _Pending()
        return pending

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        for peer, p in pending.items():
            state = self.peers.get(peer)
            if state is None:
                continue
            rpc = rpc_pb2.RPC()
            for subscribe, topic in p.subs:
                rpc.subscriptions.add(subscribe=subscribe, topicid=topic)
            if state.kind.is_gossipsub and not self.flood_only:
                ctl = rpc.control
                if p.ihave:
                    ctl.ihave.extend(p.ihave)
                if p.iwant:
                    ctl.iwant.add(messageIDs=p.iwant)
                for topic in p.graft:
                    ctl.graft.add(topicID=topic)
                if p.prune:
                    ctl.prune.extend(p.prune)
                if p.idontwant and state.kind is PeerKind.GOSSIPSUB_V12:
                    ctl.idontwant.add(messageIDs=p.idontwant)
                if not ctl.ListFields():
                    rpc.ClearField("control")
            if rpc.ListFields():
                self.out.send_control(peer, rpc)

    # --- views -----------------------------------------------------------------------------------

    def topic_peers(self, topic: str) -> set[PeerId]:
        """Peers subscribed to ``topic``."""
        return set(self.topics.get(topic, ()))

    def mesh_peers(self, topic: str) -> set[PeerId]:
        """Our mesh for ``topic`` (empty if we are not subscribed)."""
        return set(self.mesh.get(topic, ()))

    def ready_peers(self, topic: str) -> int:
        """Peers a message on ``topic`` goes to right now: mesh (or fanout), floodsub and direct peers."""
        topic_peers = self.topics.get(topic, set())
        if self.flood_only:
            return len(topic_peers)
        extra = sum(1 for p in topic_peers if not self.peers[p].kind.is_gossipsub or p in self.direct)
        if topic in self.mesh:
            return len(self.mesh[topic]) + extra
        return len(topic_peers)

    def stats(self) -> dict[str, int]:
        """Sizes of every table (for memory tests and metrics)."""
        return {
            "peers": len(self.peers),
            "topics": len(self.topics),
            "topic_memberships": sum(len(v) for v in self.topics.values()),
            "mesh": sum(len(v) for v in self.mesh.values()),
            "fanout": sum(len(v) for v in self.fanout.values()),
            "backoff": sum(len(v) for v in self.backoff.values()),
            "seen": len(self.seen),
            "mcache": len(self.mcache),
            "promises": sum(len(v) for v in self.promises.values()),
            "dont_send": sum(len(s.dont_send) for s in self.peers.values()),
        }


def _with(msg: PubsubMessage, msg_id: bytes, peer: PeerId) -> PubsubMessage:
    return PubsubMessage(
        topic=msg.topic,
        data=msg.data,
        source=msg.source,
        seqno=msg.seqno,
        signature=msg.signature,
        key=msg.key,
        raw=msg.raw,
        id=msg_id,
        received_from=peer,
    )


__all__ = [
    "GossipsubRouter",
    "InvalidMessageReceived",
    "MessageDropped",
    "PeerGraylisted",
    "PeerJoinedTopic",
    "PeerKind",
    "PeerLeftTopic",
    "PubsubEvent",
    "RouterOutput",
    "SlowPeer",
    "ValidationResult",
]
