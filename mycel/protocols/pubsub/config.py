"""Gossipsub parameters, with the presets users ask for: the spec's, go-libp2p's and Ethereum consensus'.

Every duration is in seconds. Defaults are go-libp2p-pubsub's (``GossipsubConfig()``), which is what
most of the libp2p world runs; :func:`spec_defaults` gives the v1.0 spec's numbers and
:func:`ethereum_consensus` the consensus-specs profile with Lighthouse's score thresholds.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mycel.protocols.pubsub.score import PeerScoreParams, PeerScoreThresholds

if TYPE_CHECKING:
    from mycel.protocols.pubsub.messages import MessageIdFn

GOSSIPSUB_V12 = "/meshsub/1.2.0"
GOSSIPSUB_V11 = "/meshsub/1.1.0"
GOSSIPSUB_V10 = "/meshsub/1.0.0"
FLOODSUB = "/floodsub/1.0.0"
GOSSIPSUB_PROTOCOLS = (GOSSIPSUB_V12, GOSSIPSUB_V11, GOSSIPSUB_V10, FLOODSUB)
"""Protocol ids a gossipsub router advertises, in order of preference (spec ids only)."""

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
ETHEREUM_MAX_MESSAGE_SIZE = 12_234_442  # max(32 + n + n/6 + 1024, 1 MiB) for n = 10 MiB (consensus-specs)


class SignaturePolicy(enum.Enum):
    """How messages are authored and checked (pubsub spec "Signature policy")."""

    STRICT_SIGN = "strict-sign"
    """Every message carries ``from``, ``seqno`` and a signature (and ``key`` when the id does not inline
    it); ours are signed, unsigned or badly signed ones are rejected. The default."""
    STRICT_NO_SIGN = "strict-no-sign"
    """No message carries ``from``, ``seqno``, ``signature`` or ``key``; a message with any of them is
    rejected. The message id must then come from the data (Ethereum consensus)."""


@dataclass(frozen=True)
class GossipsubConfig:
    """Router parameters (names follow the spec; defaults are go-libp2p-pubsub's except
    ``flood_publish``, which is on as in rust and js).

    Mesh: ``d`` target degree, ``d_lo``/``d_hi`` the bounds that trigger grafting/pruning, ``d_score``
    peers kept by score when pruning, ``d_out`` outbound peers kept, ``d_lazy`` minimum gossip targets.
    Gossip: ``history_length`` heartbeats of messages cached, of which ``history_gossip`` are gossiped;
    ``gossip_factor`` of the non-mesh peers get IHAVE (at least ``d_lazy``).
    """

    d: int = 6
    d_lo: int = 5
    d_hi: int = 12
    d_score: int = 4
    d_out: int = 2
    d_lazy: int = 6
    gossip_factor: float = 0.25
    history_length: int = 5
    history_gossip: int = 3
    heartbeat_interval: float = 1.0
    """Seconds between heartbeats (mesh maintenance, gossip, cache shift)."""
    heartbeat_initial_delay: float = 0.1
    """Seconds from start to the first heartbeat."""
    fanout_ttl: float = 60.0
    """Seconds a fanout set (topics we publish to without subscribing) lives after our last publish."""
    seen_ttl: float = 120.0
    """Seconds a message id stays in the seen cache (duplicates within it are dropped unprocessed)."""
    prune_peers: int = 16
    """Peers offered in a PRUNE's peer exchange."""
    prune_backoff: float = 60.0
    """Seconds a pruned peer must wait before grafting again (sent in our PRUNEs)."""
    unsubscribe_backoff: float = 10.0
    """The backoff in the PRUNEs we send when we leave a topic."""
    graft_flood_threshold: float = 10.0
    """A GRAFT this soon after our PRUNE's backoff started counts double in P7 (go)."""
    prune_at_d_hi: bool = True
    """The heartbeat prunes a mesh back to ``d`` once it *reaches* ``d_hi`` (go-libp2p-pubsub since v0.13,
    #589, Dec 2024: otherwise a mesh held at ``d_hi`` by the GRAFT rule never shrinks). False: only *above*
    ``d_hi``, as the spec's ``|mesh| > D_high``, the rust-libp2p versions we read, and the go that the v1.1
    evaluation ran."""
    opportunistic_graft_ticks: int = 60
    """Heartbeats between opportunistic grafting rounds (0 disables it)."""
    opportunistic_graft_peers: int = 2
    """Peers grafted per opportunistic round when the mesh median score is low."""
    gossip_retransmission: int = 3
    """How many times one peer's IWANT for one message id is answered (go's GossipRetransmission);
    later asks for it are ignored."""
    max_ihave_length: int = 5000
    """Message ids taken from one peer's IHAVEs per heartbeat (and put in one IHAVE of ours)."""
    max_ihave_messages: int = 10
    """IHAVE messages accepted from one peer per heartbeat."""
    iwant_followup_time: float = 3.0
    """How long a peer has to deliver what it advertised after our IWANT before P7 counts it."""
    idontwant_message_threshold: int = 1024
    """Messages at least this big make us send IDONTWANT to our mesh peers (v1.2)."""
    idontwant_message_ttl: int = 3
    """Heartbeats an IDONTWANT from a peer is kept."""
    max_idontwant_messages: int = 1000
    """RPCs with IDONTWANTs accepted from one peer per heartbeat (go's MaxIDontWantMessages)."""
    max_idontwant_length: int = 10
    """Message ids taken from the IDONTWANTs of one RPC (go's MaxIDontWantLength)."""
    direct_peers: tuple[str, ...] = ()
    """Multiaddrs (with ``/p2p/``) of peers we always forward to and never mesh with; kept connected."""
    direct_connect_ticks: int = 300
    """Heartbeats between attempts to reconnect to direct peers."""
    flood_publish: bool = True
    """Our own messages go to every topic peer above the publish threshold, not only the mesh (v1.1,
    optional in the spec). On by default as in rust-libp2p and js-libp2p; go has it off
    (:func:`go_defaults`). Lower latency for the publisher's first hop, more upload per publish."""
    do_px: bool = False
    """Offer peer exchange in our PRUNEs (bootstrappers turn this on)."""
    max_px_peers: int = 16
    """Peers taken from one PRUNE's peer exchange."""
    signature_policy: SignaturePolicy = SignaturePolicy.STRICT_SIGN
    """StrictSign (default) or StrictNoSign; the same across a network."""
    message_id_fn: MessageIdFn | None = None
    """``fn(message) -> bytes``; None = ``from ‖ seqno`` (the default id; needs StrictSign)."""
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    """The largest message payload accepted or published, for topics not in ``topic_max_message_size``."""
    topic_max_message_size: Mapping[str, int] = field(default_factory=dict)
    """Per-topic payload limits that override ``max_message_size``."""
    max_rpc_size: int | None = None
    """Largest RPC frame accepted or sent (None: max message size + 64 KiB for headers and control);
    bigger outgoing RPCs are split."""
    score_params: PeerScoreParams | None = None
    """Peer scoring (v1.1); None disables scoring (every score is 0)."""
    score_thresholds: PeerScoreThresholds = field(default_factory=PeerScoreThresholds)
    """Gossip, publish, graylist, accept-PX and opportunistic-graft thresholds (used when scoring is on)."""
    max_topics_per_peer: int = 100
    """Subscriptions one peer may hold with us; beyond, new subscriptions are ignored and counted
    (except to topics we are subscribed to, which are always accepted)."""
    max_subscriptions_per_rpc: int = 5000
    """Subscription changes read from one RPC; the rest are ignored and counted."""
    max_topics: int = 10_000
    """Topics tracked across all peers (peer subscriptions), so a subscription flood leaves memory flat
    (our own topics are tracked beyond it)."""
    max_mcache_messages: int = 100_000
    """Messages held in the message cache; beyond, the oldest are forgotten early."""
    max_seen: int = 1_000_000
    """Message ids remembered as seen; beyond, the oldest are forgotten early."""
    peer_queue_size: int = 1024
    """Outgoing RPC pieces queued per peer; beyond, messages to that peer are dropped and counted. Control
    messages have their own lane of the same size, written first; a peer that overflows it is dropped
    from pubsub (its streams closed) rather than left with a wrong view of our meshes."""
    validation_concurrency: int = 1024
    """Messages being validated at once; beyond, new messages are dropped as throttled (not scored)."""
    validation_timeout: float = 10.0
    """A validator still running after this long counts as IGNORE."""
    allow_publish_to_zero_peers: bool = False
    """``publish`` with nobody to send to raises :class:`PublishError` unless this is set."""
    subscription_queue_size: int = 1024
    """Messages waiting in one subscription; beyond, they are dropped for it and counted on it."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.d < 0 or self.d_lo < 0 or self.d_hi < 0:
            problems.append("d, d_lo and d_hi must be >= 0")
        if not (self.d_lo <= self.d <= self.d_hi):
            problems.append(f"need d_lo <= d <= d_hi (got {self.d_lo}, {self.d}, {self.d_hi})")
        if self.d_out < 0 or (self.d_lo > 0 and self.d_out >= self.d_lo) or self.d_out > self.d // 2:
            problems.append(f"d_out must be < d_lo and <= d / 2 (got {self.d_out})")
        if self.d_score < 0 or self.d_score > self.d:
            problems.append(f"d_score must be in [0, d] (got {self.d_score})")
        if not 0 < self.history_gossip <= self.history_length:
            problems.append("need 0 < history_gossip <= history_length")
        if self.heartbeat_interval <= 0 or self.heartbeat_initial_delay < 0:
            problems.append("heartbeat_interval must be > 0 and heartbeat_initial_delay >= 0")
        if not 0 <= self.gossip_factor <= 1:
            problems.append("gossip_factor must be in [0, 1]")
        for name in (
            "max_message_size",
            "peer_queue_size",
            "validation_concurrency",
            "subscription_queue_size",
            "max_topics_per_peer",
            "max_subscriptions_per_rpc",
            "max_topics",
            "max_mcache_messages",
            "max_seen",
        ):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0")
        for topic, size in self.topic_max_message_size.items():
            if size <= 0:
                problems.append(f"topic_max_message_size[{topic!r}] must be > 0")
        if self.message_id_fn is None and self.signature_policy is SignaturePolicy.STRICT_NO_SIGN:
            problems.append("StrictNoSign messages have no from/seqno: give a message_id_fn (e.g. content_hash_message_id)")
        if problems:
            raise ValueError("GossipsubConfig: " + "; ".join(problems))

    def replace(self, **changes: Any) -> GossipsubConfig:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def message_size_limit(self, topic: str) -> int:
        """The largest payload accepted on ``topic``."""
        return self.topic_max_message_size.get(topic, self.max_message_size)

    @property
    def rpc_size_limit(self) -> int:
        """The largest RPC frame read or written."""
        if self.max_rpc_size is not None:
            return self.max_rpc_size
        biggest = max([self.max_message_size, *self.topic_max_message_size.values()])
        return biggest + 65536


def spec_defaults(**changes: Any) -> GossipsubConfig:
    """The gossipsub v1.0 spec's parameters (D=6, D_lo=4, D_hi=12, mcache 5/3, seen 120 s)."""
    base = GossipsubConfig(d=6, d_lo=4, d_hi=12, d_lazy=6, d_score=4, d_out=2, heartbeat_initial_delay=1.0)
    return base.replace(**changes) if changes else base


def go_defaults(**changes: Any) -> GossipsubConfig:
    """go-libp2p-pubsub's defaults: ``GossipsubConfig()`` with flood publishing off (go's
    ``WithFloodPublish`` is opt-in)."""
    return GossipsubConfig(**{"flood_publish": False, **changes})


def ethereum_consensus(
    *,
    score_params: PeerScoreParams | None = None,
    message_id_fn: Callable[..., bytes] | None = None,
    **changes: Any,
) -> GossipsubConfig:
    """The Ethereum consensus profile: D=8/6/12, D_lazy=6, heartbeat 0.7 s, mcache 6/3, fanout 60 s,
    seen 768 s, StrictNoSign, the Altair message id (:func:`~mycel.protocols.pubsub.messages.ethereum_message_id`),
    12,234,442-byte messages and Lighthouse's score thresholds (gossip −4000, publish −8000, graylist
    −16000, accept PX 100, opportunistic graft 5). Lighthouse's per-topic score parameters depend on
    the chain's topics; pass them as ``score_params``.
    """
    from mycel.protocols.pubsub.messages import ethereum_message_id

    base = GossipsubConfig(
        d=8,
        d_lo=6,
        d_hi=12,
        d_lazy=6,
        d_score=4,
        d_out=2,
        heartbeat_interval=0.7,
        history_length=6,
        history_gossip=3,
        fanout_ttl=60.0,
        seen_ttl=768.0,
        signature_policy=SignaturePolicy.STRICT_NO_SIGN,
        message_id_fn=message_id_fn or ethereum_message_id,
        max_message_size=ETHEREUM_MAX_MESSAGE_SIZE,
        score_params=score_params or PeerScoreParams(),
        score_thresholds=PeerScoreThresholds(
            gossip_threshold=-4000.0,
            publish_threshold=-8000.0,
            graylist_threshold=-16000.0,
            accept_px_threshold=100.0,
            opportunistic_graft_threshold=5.0,
        ),
    )
    return base.replace(**changes) if changes else base


__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "ETHEREUM_MAX_MESSAGE_SIZE",
    "FLOODSUB",
    "GOSSIPSUB_PROTOCOLS",
    "GOSSIPSUB_V10",
    "GOSSIPSUB_V11",
    "GOSSIPSUB_V12",
    "GossipsubConfig",
    "SignaturePolicy",
    "ethereum_consensus",
    "go_defaults",
    "spec_defaults",
]
