"""Gossipsub v1.1 peer scoring (P1–P7): a sans-IO score table that the router drives with ``now``.

The score of a peer is ``TopicCap(Σ tᵢ·(w₁P₁ + w₂P₂ + w₃P₃ + w₃bP₃b + w₄P₄)) + w₅P₅ + w₆P₆ + w₇P₇``
(libp2p/specs ``pubsub/gossipsub/gossipsub-v1.1.md``, "Peer Scoring"). The counters, their caps, decay,
retention and message-delivery bookkeeping follow go-libp2p-pubsub's ``score.go`` / ``score_params.go``;
where we differ from go it is said at the place, with the reason.

Nothing here reads a clock, draws a random number or awaits: every call that depends on time takes
``now`` (seconds, monotonic), and the router calls :meth:`PeerScore.refresh` at
:meth:`PeerScore.next_refresh`. Durations are compared in whole nanoseconds, as go's ``time.Duration``,
so a P1 quantum count or an activation test gives go's answer at the boundaries.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from mycel.core.peer_id import PeerId

__all__ = [
    "PeerScore",
    "PeerScoreParams",
    "PeerScoreThresholds",
    "RejectReason",
    "ScoreBreakdown",
    "TopicScoreBreakdown",
    "TopicScoreParams",
    "score_parameter_decay",
]

_NANOS_PER_SECOND = 1_000_000_000

_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nanos(seconds: float) -> int:
    """``seconds`` as whole nanoseconds (go's ``time.Duration``), so divisions and comparisons are exact."""
    return round(seconds * _NANOS_PER_SECOND)


def _require(ok: bool, name: str, rule: str, value: object) -> None:
    """Raise ``ValueError`` naming the field when a validation rule does not hold."""
    if not ok:
        raise ValueError(f"{name} must be {rule} (got {value!r})")


def _require_finite(owner: TopicScoreParams | PeerScoreThresholds | PeerScoreParams) -> None:
    """Every number field of a params dataclass is a real number (go's ``isInvalidNumber``: no NaN, no ±inf)."""
    for f in dataclasses.fields(owner):
        value = getattr(owner, f.name)
        if isinstance(value, float | int) and not isinstance(value, bool):
            _require(math.isfinite(value), f.name, "a finite number", value)


def _require_decay(name: str, value: float) -> None:
    _require(0.0 < value < 1.0, name, "between 0 and 1 (exclusive)", value)


def _parse_whitelist(cidrs: Iterable[str]) -> tuple[_IPNetwork, ...]:
    """The CIDR strings of ``ip_colocation_factor_whitelist`` as networks; ``ValueError`` names a bad one."""
    networks: list[_IPNetwork] = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError as exc:
            raise ValueError(f"ip_colocation_factor_whitelist: {cidr!r} is not a CIDR network ({exc})") from None
    return tuple(networks)


def score_parameter_decay(decay: float, decay_interval: float = 1.0, decay_to_zero: float = 0.01) -> float:
    """The decay factor that takes a counter from 1 to ``decay_to_zero`` in ``decay`` seconds of refreshes.

    go's ``ScoreParameterDecay`` / ``ScoreParameterDecayWithBase`` (whose ``base`` is the decay interval):
    ``ticks = decay // decay_interval`` (whole intervals, as go divides durations) and the factor is
    ``decay_to_zero ** (1 / ticks)``; e.g. ``score_parameter_decay(10.0)`` ≈ 0.631. Raises ``ValueError``
    when ``decay`` is shorter than one interval (go would return 0, which no decay parameter accepts).
    """
    interval_ok = math.isfinite(decay_interval) and _nanos(decay_interval) >= 1
    _require(interval_ok, "decay_interval", "at least 1 ns", decay_interval)
    _require(0.0 < decay_to_zero < 1.0, "decay_to_zero", "between 0 and 1 (exclusive)", decay_to_zero)
    _require(math.isfinite(decay), "decay", "a finite number", decay)
    ticks = _nanos(decay) // _nanos(decay_interval)
    _require(ticks >= 1, "decay", f"at least one decay interval ({decay_interval} s)", decay)
    return float(decay_to_zero ** (1.0 / ticks))


# ---- parameters ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicScoreParams:
    """The score parameters of one topic (P1–P4 and the topic's weight), validated as go's
    ``TopicScoreParams.validate``: a term's decay, cap, threshold and activation are checked only when
    its weight is non-zero, except P4's decay, which is always checked. The defaults give a valid
    topic whose every term is off (all weights 0) and whose topic weight is 1.
    """

    topic_weight: float = 1.0
    """Multiplies the topic's contribution; >= 0."""

    time_in_mesh_weight: float = 0.0
    """P1 weight; >= 0."""
    time_in_mesh_quantum: float = 1.0
    """P1 unit (seconds): P1 is the number of whole quanta since the GRAFT; at least 1 ns."""
    time_in_mesh_cap: float = 1.0
    """P1 cap; > 0 when P1 is weighted."""

    first_message_deliveries_weight: float = 0.0
    """P2 weight; >= 0."""
    first_message_deliveries_decay: float = 0.5
    """P2 counter decay factor per refresh; in (0, 1) when P2 is weighted."""
    first_message_deliveries_cap: float = 1.0
    """P2 counter cap, applied at each increment; > 0 when P2 is weighted."""

    mesh_message_deliveries_weight: float = 0.0
    """P3 weight; <= 0."""
    mesh_message_deliveries_decay: float = 0.5
    """P3 counter decay factor; in (0, 1) when P3 is weighted."""
    mesh_message_deliveries_cap: float = 1.0
    """P3 counter cap; > 0 when P3 is weighted."""
    mesh_message_deliveries_threshold: float = 1.0
    """P3 expected deliveries; below it P3 is the deficit squared. > 0 when P3 is weighted."""
    mesh_message_deliveries_window: float = 0.01
    """Seconds after validation within which a mesh peer's duplicate still counts for P3; >= 0."""
    mesh_message_deliveries_activation: float = 1.0
    """Seconds in the mesh before P3 applies; >= 1 s when P3 is weighted (as go)."""

    mesh_failure_penalty_weight: float = 0.0
    """P3b weight; <= 0."""
    mesh_failure_penalty_decay: float = 0.5
    """P3b counter decay factor; in (0, 1) when P3b is weighted."""

    invalid_message_deliveries_weight: float = 0.0
    """P4 weight (P4 is the counter squared); <= 0."""
    invalid_message_deliveries_decay: float = 0.5
    """P4 counter decay factor; always in (0, 1)."""

    def __post_init__(self) -> None:
        _require_finite(self)
        _require(self.topic_weight >= 0, "topic_weight", ">= 0", self.topic_weight)
        # P1
        _require(self.time_in_mesh_weight >= 0, "time_in_mesh_weight", ">= 0", self.time_in_mesh_weight)
        quantum = self.time_in_mesh_quantum
        _require(_nanos(quantum) >= 1, "time_in_mesh_quantum", "at least 1 ns", quantum)
        if self.time_in_mesh_weight != 0:
            _require(self.time_in_mesh_cap > 0, "time_in_mesh_cap", "> 0", self.time_in_mesh_cap)
        # P2
        w2 = self.first_message_deliveries_weight
        _require(w2 >= 0, "first_message_deliveries_weight", ">= 0", w2)
        if w2 != 0:
            _require_decay("first_message_deliveries_decay", self.first_message_deliveries_decay)
            cap2 = self.first_message_deliveries_cap
            _require(cap2 > 0, "first_message_deliveries_cap", "> 0", cap2)
        # P3
        w3 = self.mesh_message_deliveries_weight
        _require(w3 <= 0, "mesh_message_deliveries_weight", "<= 0", w3)
        if w3 != 0:
            _require_decay("mesh_message_deliveries_decay", self.mesh_message_deliveries_decay)
            cap3 = self.mesh_message_deliveries_cap
            _require(cap3 > 0, "mesh_message_deliveries_cap", "> 0", cap3)
            threshold = self.mesh_message_deliveries_threshold
            _require(threshold > 0, "mesh_message_deliveries_threshold", "> 0", threshold)
            activation = self.mesh_message_deliveries_activation
            _require(activation >= 1.0, "mesh_message_deliveries_activation", "at least 1 s", activation)
        window = self.mesh_message_deliveries_window
        _require(window >= 0, "mesh_message_deliveries_window", ">= 0", window)
        # P3b
        w3b = self.mesh_failure_penalty_weight
        _require(w3b <= 0, "mesh_failure_penalty_weight", "<= 0", w3b)
        if w3b != 0:
            _require_decay("mesh_failure_penalty_decay", self.mesh_failure_penalty_decay)
        # P4
        w4 = self.invalid_message_deliveries_weight
        _require(w4 <= 0, "invalid_message_deliveries_weight", "<= 0", w4)
        _require_decay("invalid_message_deliveries_decay", self.invalid_message_deliveries_decay)


@dataclass(frozen=True, slots=True)
class PeerScoreThresholds:
    """The score thresholds the router compares scores with, validated as go's
    ``PeerScoreThresholds.validate``: graylist <= publish <= gossip <= 0 <= accept PX, opportunistic graft.
    """

    gossip_threshold: float = -10.0
    """Below it no gossip is sent to or accepted from the peer; <= 0."""
    publish_threshold: float = -50.0
    """Below it our own messages are not flood-published to the peer; <= gossip_threshold."""
    graylist_threshold: float = -80.0
    """Below it the peer's RPCs are ignored; <= publish_threshold."""
    accept_px_threshold: float = 10.0
    """PX from a pruning peer is followed only at or above it; >= 0."""
    opportunistic_graft_threshold: float = 20.0
    """A mesh whose median score is below it gets opportunistic grafts; >= 0."""

    def __post_init__(self) -> None:
        _require_finite(self)
        gossip, publish, graylist = self.gossip_threshold, self.publish_threshold, self.graylist_threshold
        _require(gossip <= 0, "gossip_threshold", "<= 0", gossip)
        _require(publish <= min(0, gossip), "publish_threshold", "<= 0 and <= gossip_threshold", publish)
        _require(graylist <= min(0, publish), "graylist_threshold", "<= 0 and <= publish_threshold", graylist)
        _require(self.accept_px_threshold >= 0, "accept_px_threshold", ">= 0", self.accept_px_threshold)
        og = self.opportunistic_graft_threshold
        _require(og >= 0, "opportunistic_graft_threshold", ">= 0", og)


def _empty_topics() -> Mapping[str, TopicScoreParams]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PeerScoreParams:
    """The score parameters: per-topic terms, the topic cap and the global terms P5–P7, decay and
    retention. Validated as go's ``PeerScoreParams.validate`` (``topics`` is kept as a read-only copy).
    """

    topics: Mapping[str, TopicScoreParams] = field(default_factory=_empty_topics, hash=False)
    """Score parameters per topic; topics not listed here do not score."""
    topic_score_cap: float = 0.0
    """Cap on the (positive) sum of the topic contributions; >= 0, 0 = no cap."""

    app_specific_score: Callable[[PeerId], float] | None = None
    """P5: a pure function of the peer id; None scores 0 (see also :meth:`PeerScore.set_app_score`)."""
    app_specific_weight: float = 1.0
    """P5 weight."""

    ip_colocation_factor_weight: float = 0.0
    """P6 weight; <= 0 (0 disables)."""
    ip_colocation_factor_threshold: int = 1
    """P6 applies when more than this many connected peers share an IP; >= 1."""
    ip_colocation_factor_whitelist: tuple[str, ...] = ()
    """CIDR networks (``"10.0.0.0/8"``) whose IPs never count for P6."""

    behaviour_penalty_weight: float = 0.0
    """P7 weight; <= 0 (0 disables)."""
    behaviour_penalty_threshold: float = 0.0
    """P7 is the square of the penalty counter's excess over this; >= 0."""
    behaviour_penalty_decay: float = 0.9
    """P7 counter decay factor; in (0, 1) when P7 is weighted."""

    decay_interval: float = 1.0
    """Seconds between refreshes (counter decay); at least 1 s (as go)."""
    decay_to_zero: float = 0.01
    """A decayed counter below this becomes 0; in (0, 1)."""
    retain_score: float = 3600.0
    """Seconds a disconnected peer's non-positive score is kept; >= 0."""

    def __post_init__(self) -> None:
        topics = dict(self.topics)
        for topic, params in topics.items():
            _require(isinstance(topic, str), "topics", "keyed by topic name (str)", topic)
            _require(isinstance(params, TopicScoreParams), f"topics[{topic!r}]", "a TopicScoreParams", params)
        object.__setattr__(self, "topics", MappingProxyType(topics))
        object.__setattr__(self, "ip_colocation_factor_whitelist", tuple(self.ip_colocation_factor_whitelist))
        _require_finite(self)
        _require(self.topic_score_cap >= 0, "topic_score_cap", ">= 0 (0 = no cap)", self.topic_score_cap)
        w6 = self.ip_colocation_factor_weight
        _require(w6 <= 0, "ip_colocation_factor_weight", "<= 0", w6)
        threshold6 = self.ip_colocation_factor_threshold
        _require(threshold6 >= 1, "ip_colocation_factor_threshold", "at least 1", threshold6)
        _parse_whitelist(self.ip_colocation_factor_whitelist)
        w7 = self.behaviour_penalty_weight
        _require(w7 <= 0, "behaviour_penalty_weight", "<= 0", w7)
        if w7 != 0:
            _require_decay("behaviour_penalty_decay", self.behaviour_penalty_decay)
        threshold7 = self.behaviour_penalty_threshold
        _require(threshold7 >= 0, "behaviour_penalty_threshold", ">= 0", threshold7)
        _require(self.decay_interval >= 1.0, "decay_interval", "at least 1 s", self.decay_interval)
        _require(0 < self.decay_to_zero < 1, "decay_to_zero", "between 0 and 1 (exclusive)", self.decay_to_zero)
        _require(self.retain_score >= 0, "retain_score", ">= 0", self.retain_score)


class RejectReason(enum.Enum):
    """Why a message was rejected, as far as the score is concerned (go's ``Reject*`` tracer reasons).

    * ``MISSING_SIGNATURE``, ``INVALID_SIGNATURE``, ``UNEXPECTED_SIGNATURE``, ``UNEXPECTED_AUTH_INFO``,
      ``SELF_ORIGIN``: the sender gets P4 at once; no delivery record is touched (the message id of
      such a message cannot be trusted).
    * ``BLACKLISTED_PEER``, ``BLACKLISTED_SOURCE``, ``VALIDATION_QUEUE_FULL``: nothing happens.
    * ``VALIDATION_THROTTLED``, ``VALIDATION_IGNORED``: the record is closed without a penalty, and later
      duplicates are not scored.
    * ``VALIDATION_FAILED``: the record turns invalid; P4 for the sender, for every peer that forwarded
      the message while it was being validated, and for every later duplicate.
    """

    MISSING_SIGNATURE = "missing signature"
    INVALID_SIGNATURE = "invalid signature"
    UNEXPECTED_SIGNATURE = "unexpected signature"
    UNEXPECTED_AUTH_INFO = "unexpected auth info"
    SELF_ORIGIN = "self originated message"
    BLACKLISTED_PEER = "blacklisted peer"
    BLACKLISTED_SOURCE = "blacklisted source"
    VALIDATION_QUEUE_FULL = "validation queue full"
    VALIDATION_THROTTLED = "validation throttled"
    VALIDATION_IGNORED = "validation ignored"
    VALIDATION_FAILED = "validation failed"


_PENALIZE_SENDER_ONLY = frozenset(
    {
        RejectReason.MISSING_SIGNATURE,
        RejectReason.INVALID_SIGNATURE,
        RejectReason.UNEXPECTED_SIGNATURE,
        RejectReason.UNEXPECTED_AUTH_INFO,
        RejectReason.SELF_ORIGIN,
    }
)
_NOT_SCORED = frozenset(
    {RejectReason.BLACKLISTED_PEER, RejectReason.BLACKLISTED_SOURCE, RejectReason.VALIDATION_QUEUE_FULL}
)


# ---- breakdowns (frozen snapshots) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicScoreBreakdown:
    """One topic's part of a peer's score, as of the last refresh (a snapshot)."""

    topic: str
    """The topic."""
    in_mesh: bool
    """Whether the peer is in our mesh for the topic."""
    mesh_time: float
    """Seconds since the GRAFT, as measured at the last refresh (0 when not in the mesh)."""
    time_in_mesh: float
    """P1: whole quanta of ``mesh_time``, capped (0 when not in the mesh)."""
    first_message_deliveries: float
    """P2: the first-delivery counter."""
    mesh_message_deliveries: float
    """The P3 counter (first and near-first deliveries while in the mesh)."""
    mesh_message_deliveries_active: bool
    """Whether the peer has been in the mesh longer than the P3 activation time."""
    mesh_deficit_penalty: float
    """P3: the delivery deficit squared when active and below the threshold, else 0."""
    mesh_failure_penalty: float
    """P3b: the sticky mesh-failure counter."""
    invalid_message_deliveries: float
    """The P4 counter; the P4 term is its square."""
    score: float
    """The topic's weighted terms summed, before ``topic_weight``."""
    weighted: float
    """``score`` times ``topic_weight``: what the topic adds before the topic cap."""


@dataclass(frozen=True, slots=True)
class ScoreBreakdown:
    """A peer's score and its parts (a snapshot, for debugging and metrics)."""

    peer: PeerId
    """The peer."""
    score: float
    """The total score, what :meth:`PeerScore.score` returns."""
    topics: tuple[TopicScoreBreakdown, ...]
    """The scored topics the peer has counters in, by topic name."""
    topic_total: float
    """The sum of the topic contributions after ``topic_score_cap``."""
    app_specific: float
    """P5: the application-specific value (before its weight)."""
    ip_colocation: float
    """P6: the sum over the peer's IPs of the squared surplus of peers at that IP."""
    behaviour_penalty: float
    """The P7 counter; the P7 term is the square of its excess over the threshold."""
    connected: bool
    """False for a disconnected peer whose score is retained."""


# ---- the score table ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class _TopicStats:
    in_mesh: bool = False
    graft_time: float = 0.0
    mesh_time_ns: int = 0  # updated at refresh, as go (the spec: "calculated lazily during the decay update")
    mesh_active: bool = False
    first_deliveries: float = 0.0
    mesh_deliveries: float = 0.0
    mesh_failure_penalty: float = 0.0
    invalid_deliveries: float = 0.0


@dataclass(slots=True)
class _PeerStats:
    topics: dict[str, _TopicStats] = field(default_factory=dict)  # scored topics only
    connected: bool = True
    ips: frozenset[str] = frozenset()  # while connected; the keys of PeerScore._ip_peers it is in
    behaviour_penalty: float = 0.0
    app_score: float | None = None  # set_app_score's override of params.app_specific_score


class _Status(enum.Enum):
    UNKNOWN = enum.auto()  # being validated
    VALID = enum.auto()
    INVALID = enum.auto()
    IGNORED = enum.auto()
    THROTTLED = enum.auto()


@dataclass(slots=True)
class _DeliveryRecord:
    first_seen: float
    status: _Status = _Status.UNKNOWN
    validated: float = 0.0
    peers: set[PeerId] = field(default_factory=set)  # forwarders seen so far; at most the connected peers


def _decayed(value: float, factor: float, decay_to_zero: float) -> float:
    value *= factor
    return 0.0 if value < decay_to_zero else value


def _time_in_mesh(t: _TopicStats, tp: TopicScoreParams) -> float:
    """P1: whole quanta in the mesh (go divides durations), capped; 0 outside the mesh."""
    if not t.in_mesh:
        return 0.0
    return min(float(t.mesh_time_ns // _nanos(tp.time_in_mesh_quantum)), tp.time_in_mesh_cap)


def _mesh_deficit(t: _TopicStats, tp: TopicScoreParams) -> float:
    """P3 (also what P3b adds at a prune): the deficit squared when active and below the threshold."""
    threshold = tp.mesh_message_deliveries_threshold
    if t.mesh_active and t.mesh_deliveries < threshold:
        deficit = threshold - t.mesh_deliveries
        return deficit * deficit
    return 0.0


def _topic_score(t: _TopicStats, tp: TopicScoreParams) -> float:
    """The topic's weighted P1–P4, before the topic weight (go's ``topicScore``)."""
    score = _time_in_mesh(t, tp) * tp.time_in_mesh_weight
    score += t.first_deliveries * tp.first_message_deliveries_weight
    score += _mesh_deficit(t, tp) * tp.mesh_message_deliveries_weight
    score += t.mesh_failure_penalty * tp.mesh_failure_penalty_weight
    score += t.invalid_deliveries * t.invalid_deliveries * tp.invalid_message_deliveries_weight
    return score


class PeerScore:
    """The gossipsub v1.1 score of every peer we are connected to (and of recently disconnected ones
    with a non-positive score), fed by the router's events and refreshed at :meth:`next_refresh`.

    Bounds: one record per connected peer; retained (disconnected) peers expire ``retain_score``
    after their disconnect, at most ``max_retained_peers`` of them (beyond, the oldest is forgotten
    early); delivery records expire ``delivery_record_ttl`` after first seen (go's 2-minute
    ``TimeCacheDuration``), at most ``max_delivery_records`` of them (beyond, the oldest is dropped and
    its late duplicates start a fresh record, as an expired one would).
    """

    __slots__ = (
        "_params",
        "_whitelist",
        "_peers",
        "_retained",
        "_ip_peers",
        "_deliveries",
        "_record_ttl",
        "_max_records",
        "_max_retained",
        "_next_refresh",
    )

    def __init__(
        self,
        params: PeerScoreParams,
        now: float,
        *,
        delivery_record_ttl: float = 120.0,
        max_delivery_records: int = 100_000,
        max_retained_peers: int = 50_000,
    ) -> None:
        _require(
            math.isfinite(delivery_record_ttl) and delivery_record_ttl >= 0,
            "delivery_record_ttl",
            ">= 0",
            delivery_record_ttl,
        )
        _require(max_delivery_records >= 1, "max_delivery_records", "at least 1", max_delivery_records)
        _require(max_retained_peers >= 1, "max_retained_peers", "at least 1", max_retained_peers)
        self._params = params
        self._whitelist = _parse_whitelist(params.ip_colocation_factor_whitelist)
        self._peers: dict[PeerId, _PeerStats] = {}
        # disconnected peers kept for their score → expiry time, in disconnect order (= expiry order)
        self._retained: OrderedDict[PeerId, float] = OrderedDict()
        # IP → the connected peers using it (P6); bounded by the connected peers' IPs
        self._ip_peers: dict[str, set[PeerId]] = {}
        # message id → delivery record, in first-seen order: max = ids seen within the TTL, capped
        self._deliveries: OrderedDict[bytes, _DeliveryRecord] = OrderedDict()
        self._record_ttl = delivery_record_ttl
        self._max_records = max_delivery_records
        self._max_retained = max_retained_peers
        self._next_refresh = now + params.decay_interval

    @property
    def params(self) -> PeerScoreParams:
        """The current parameters (with the topic parameters :meth:`set_topic_params` has set)."""
        return self._params

    # -- peers ------------------------------------------------------------------------------------

    def add_peer(self, peer: PeerId, now: float) -> None:
        """``peer`` is connected (again): a retained score is revived with its counters as they were."""
        stats = self._peers.get(peer)
        if stats is None:
            self._peers[peer] = _PeerStats()
        elif not stats.connected:
            stats.connected = True
            del self._retained[peer]

    def remove_peer(self, peer: PeerId, now: float) -> None:
        """``peer`` disconnected (go's ``RemovePeer``). A positive score is forgotten now; otherwise the
        score is retained until ``now + retain_score``: first-delivery counters are zeroed, a mesh topic
        with an active delivery deficit adds it to P3b, and the peer leaves every mesh. A peer already
        disconnected is left as it is.
        """
        stats = self._peers.get(peer)
        if stats is None or not stats.connected:
            return
        if self.score(peer, now) > 0:
            self._forget(peer)
            return
        for topic, t in stats.topics.items():
            t.first_deliveries = 0.0
            tp = self._params.topics.get(topic)
            if tp is not None and t.in_mesh:
                t.mesh_failure_penalty += _mesh_deficit(t, tp)
            t.in_mesh = False
            t.mesh_active = False  # go leaves it set (P3 stays frozen in the retained score); rust clears it
        stats.connected = False
        # P6 counts connected peers only (as rust-libp2p, which drops an IP with its connection); go keeps
        # a retained peer's IPs in the index until the record expires
        self._set_peer_ips(peer, stats, frozenset())
        self._retained[peer] = now + self._params.retain_score
        if len(self._retained) > self._max_retained:
            self._forget(next(iter(self._retained)))

    def _forget(self, peer: PeerId) -> None:
        stats = self._peers.pop(peer)
        self._set_peer_ips(peer, stats, frozenset())
        self._retained.pop(peer, None)

    def set_ips(self, peer: PeerId, ips: Iterable[str]) -> None:
        """The IPs of ``peer``'s current connections, for P6; replaces the previous set. The driver
        passes the remote IPs of direct connections (not relayed ones). As go: loopback addresses are
        skipped, an IPv4-mapped IPv6 address counts as IPv4, an IPv6 address also counts its /64, and
        whitelisted addresses never count. Ignored for a peer that is not connected; ``ValueError`` for
        a string that is not an IP address.
        """
        stats = self._peers.get(peer)
        if stats is None or not stats.connected:
            return
        self._set_peer_ips(peer, stats, self._colocation_keys(ips))

    def _colocation_keys(self, ips: Iterable[str]) -> frozenset[str]:
        keys: set[str] = set()
        for text in ips:
            ip = ipaddress.ip_address(text)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            if ip.is_loopback:
                continue
            candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
            if isinstance(ip, ipaddress.IPv6Address):
                candidates.append(ipaddress.IPv6Address(int(ip) >> 64 << 64))
            for candidate in candidates:
                if not any(candidate in net for net in self._whitelist):
                    keys.add(str(candidate))
        return frozenset(keys)

    def _set_peer_ips(self, peer: PeerId, stats: _PeerStats, new: frozenset[str]) -> None:
        for ip in new - stats.ips:
            self._ip_peers.setdefault(ip, set()).add(peer)
        for ip in stats.ips - new:
            sharing = self._ip_peers.get(ip)
            if sharing is not None:
                sharing.discard(peer)
                if not sharing:
                    del self._ip_peers[ip]
        stats.ips = new

    def peers(self) -> list[PeerId]:
        """Every peer with a score record: the connected ones and the retained disconnected ones."""
        return list(self._peers)

    # -- mesh ---------------------------------------------------------------------------------------

    def _topic_stats(self, peer: PeerId, topic: str) -> tuple[_TopicStats, TopicScoreParams] | None:
        """The counters of a known peer in a scored topic, created on first use (go's ``getTopicStats``)."""
        stats = self._peers.get(peer)
        tp = self._params.topics.get(topic)
        if stats is None or tp is None:
            return None
        t = stats.topics.get(topic)
        if t is None:
            t = stats.topics[topic] = _TopicStats()
        return t, tp

    def graft(self, peer: PeerId, topic: str, now: float) -> None:
        """``peer`` joined our mesh for ``topic``: P1 counts from ``now``, P3 activation starts over."""
        found = self._topic_stats(peer, topic)
        if found is None:
            return
        t, _ = found
        t.in_mesh = True
        t.graft_time = now
        t.mesh_time_ns = 0
        t.mesh_active = False

    def prune(self, peer: PeerId, topic: str, now: float) -> None:
        """``peer`` left our mesh for ``topic``: an active delivery deficit is added to P3b (sticky)."""
        found = self._topic_stats(peer, topic)
        if found is None:
            return
        t, tp = found
        t.mesh_failure_penalty += _mesh_deficit(t, tp)
        t.in_mesh = False
        # go leaves P3 active after a prune, so the deficit keeps counting (and grows as the counter
        # decays) until the next GRAFT, on top of P3b; rust-libp2p and js-libp2p-gossipsub (#212)
        # clear it, as the spec's P3 is about mesh peers and P3b is the sticky memory of the deficit.
        t.mesh_active = False

    # -- messages -----------------------------------------------------------------------------------

    def _record(self, msg_id: bytes, now: float) -> _DeliveryRecord:
        record = self._deliveries.get(msg_id)
        if record is None:
            if len(self._deliveries) >= self._max_records:
                self._deliveries.popitem(last=False)
            record = self._deliveries[msg_id] = _DeliveryRecord(first_seen=now)
        return record

    def _mark_invalid(self, peer: PeerId, topic: str) -> None:
        found = self._topic_stats(peer, topic)
        if found is not None:
            found[0].invalid_deliveries += 1.0

    def _mark_first(self, peer: PeerId, topic: str) -> None:
        found = self._topic_stats(peer, topic)
        if found is None:
            return
        t, tp = found
        t.first_deliveries = min(t.first_deliveries + 1.0, tp.first_message_deliveries_cap)
        if t.in_mesh:
            t.mesh_deliveries = min(t.mesh_deliveries + 1.0, tp.mesh_message_deliveries_cap)

    def _mark_duplicate(self, peer: PeerId, topic: str, validated: float | None, now: float) -> None:
        """P3 for a near-first delivery: during validation (``validated`` None) or within the window."""
        found = self._topic_stats(peer, topic)
        if found is None:
            return
        t, tp = found
        if not t.in_mesh:
            return
        if validated is not None and _nanos(now - validated) > _nanos(tp.mesh_message_deliveries_window):
            return
        t.mesh_deliveries = min(t.mesh_deliveries + 1.0, tp.mesh_message_deliveries_cap)

    def validate_message(self, msg_id: bytes, now: float) -> None:
        """We saw ``msg_id`` for the first time and start validating it: opens its delivery record, so
        duplicates that arrive during validation are remembered (go's ``ValidateMessage``).
        """
        self._record(msg_id, now)

    def deliver_message(self, peer: PeerId, msg_id: bytes, topic: str, now: float) -> None:
        """``msg_id``, first received from ``peer``, passed validation: P2 (and P3 when in the mesh) for
        ``peer``, P3 for the mesh peers that forwarded it during validation. A record that is no longer
        being validated is left as it is (P2 is counted all the same, as go).
        """
        self._mark_first(peer, topic)
        record = self._record(msg_id, now)
        if record.status is not _Status.UNKNOWN:
            return
        record.status = _Status.VALID
        record.validated = now
        for forwarder in record.peers:
            if forwarder != peer:
                self._mark_duplicate(forwarder, topic, None, now)

    def reject_message(self, peer: PeerId, msg_id: bytes, topic: str, reason: RejectReason, now: float) -> None:
        """``msg_id`` from ``peer`` was rejected for ``reason`` (see :class:`RejectReason` for what each
        one does to the score); go's ``RejectMessage``.
        """
        if reason in _PENALIZE_SENDER_ONLY:
            self._mark_invalid(peer, topic)
            return
        if reason in _NOT_SCORED:
            return
        record = self._record(msg_id, now)
        if record.status is not _Status.UNKNOWN:
            return
        forwarders, record.peers = record.peers, set()  # no longer needed: free them early
        if reason is RejectReason.VALIDATION_THROTTLED:
            record.status = _Status.THROTTLED
            return
        if reason is RejectReason.VALIDATION_IGNORED:
            record.status = _Status.IGNORED
            return
        record.status = _Status.INVALID
        self._mark_invalid(peer, topic)
        for forwarder in forwarders:
            self._mark_invalid(forwarder, topic)

    def duplicate_message(self, peer: PeerId, msg_id: bytes, topic: str, now: float) -> None:
        """``peer`` forwarded ``msg_id`` again (go's ``DuplicateMessage``): remembered while it is being
        validated; P3 (once per peer) within the window after it was accepted; P4 (every time) when it
        was rejected as invalid; nothing when throttled or ignored.
        """
        record = self._record(msg_id, now)
        if peer in record.peers:
            return
        status = record.status
        if status is _Status.UNKNOWN:
            record.peers.add(peer)
        elif status is _Status.VALID:
            record.peers.add(peer)
            self._mark_duplicate(peer, topic, record.validated, now)
        elif status is _Status.INVALID:
            self._mark_invalid(peer, topic)

    # -- other inputs --------------------------------------------------------------------------------

    def add_penalty(self, peer: PeerId, count: int = 1) -> None:
        """Add ``count`` to ``peer``'s P7 behaviour-penalty counter (broken IWANT promises, GRAFT during
        backoff, ...); ignored for a peer without a score record.
        """
        stats = self._peers.get(peer)
        if stats is not None:
            stats.behaviour_penalty += float(count)

    def set_app_score(self, peer: PeerId, value: float) -> None:
        """Use ``value`` as ``peer``'s P5 instead of ``params.app_specific_score`` (until the record is
        forgotten); ignored for a peer without a score record. ``ValueError`` if not finite.
        """
        _require(math.isfinite(value), "value", "a finite number", value)
        stats = self._peers.get(peer)
        if stats is not None:
            stats.app_score = float(value)

    def set_topic_params(self, topic: str, params: TopicScoreParams) -> None:
        """Score ``topic`` with ``params`` from now on (go's ``SetTopicScoreParams``). When a delivery cap
        is lowered, every peer's counters in the topic are cut down to the new caps.
        """
        old = self._params.topics.get(topic)
        self._params = dataclasses.replace(self._params, topics={**self._params.topics, topic: params})
        if old is None:
            return
        first_cap, mesh_cap = params.first_message_deliveries_cap, params.mesh_message_deliveries_cap
        if first_cap >= old.first_message_deliveries_cap and mesh_cap >= old.mesh_message_deliveries_cap:
            return
        for stats in self._peers.values():
            t = stats.topics.get(topic)
            if t is not None:
                t.first_deliveries = min(t.first_deliveries, first_cap)
                t.mesh_deliveries = min(t.mesh_deliveries, mesh_cap)

    # -- the score --------------------------------------------------------------------------------------

    def _app_specific(self, peer: PeerId, stats: _PeerStats) -> float:
        if stats.app_score is not None:
            return stats.app_score
        fn = self._params.app_specific_score
        return 0.0 if fn is None else float(fn(peer))

    def _ip_colocation(self, stats: _PeerStats) -> float:
        threshold = self._params.ip_colocation_factor_threshold
        result = 0.0
        for ip in stats.ips:
            surplus = len(self._ip_peers[ip]) - threshold
            if surplus > 0:
                result += float(surplus * surplus)
        return result

    def _topic_total(self, stats: _PeerStats) -> float:
        total = 0.0
        for topic, t in stats.topics.items():
            tp = self._params.topics.get(topic)
            if tp is not None:
                total += _topic_score(t, tp) * tp.topic_weight
        cap = self._params.topic_score_cap
        return cap if 0 < cap < total else total

    def _combine(self, topic_total: float, app_specific: float, ip_colocation: float, behaviour: float) -> float:
        """The total from its parts, in go's order of additions."""
        p = self._params
        score = topic_total + app_specific * p.app_specific_weight
        score += ip_colocation * p.ip_colocation_factor_weight
        if behaviour > p.behaviour_penalty_threshold:
            excess = behaviour - p.behaviour_penalty_threshold
            score += excess * excess * p.behaviour_penalty_weight
        return score

    def score(self, peer: PeerId, now: float) -> float:
        """``peer``'s score; 0.0 for a peer without a record. P1 and the P3 activation read the mesh
        time measured at the last :meth:`refresh` (as go and the spec: "calculated lazily during the
        decay update"), so the value changes only with events and refreshes, not with ``now``.
        """
        stats = self._peers.get(peer)
        if stats is None:
            return 0.0
        return self._combine(
            self._topic_total(stats),
            self._app_specific(peer, stats),
            self._ip_colocation(stats),
            stats.behaviour_penalty,
        )

    def breakdown(self, peer: PeerId, now: float) -> ScoreBreakdown | None:
        """``peer``'s score with every term, as :meth:`score` computes it; None for an unknown peer."""
        stats = self._peers.get(peer)
        if stats is None:
            return None
        topics: list[TopicScoreBreakdown] = []
        for topic in sorted(stats.topics):
            tp = self._params.topics.get(topic)
            if tp is None:
                continue
            t = stats.topics[topic]
            topic_score = _topic_score(t, tp)
            topics.append(
                TopicScoreBreakdown(
                    topic=topic,
                    in_mesh=t.in_mesh,
                    mesh_time=t.mesh_time_ns / _NANOS_PER_SECOND if t.in_mesh else 0.0,
                    time_in_mesh=_time_in_mesh(t, tp),
                    first_message_deliveries=t.first_deliveries,
                    mesh_message_deliveries=t.mesh_deliveries,
                    mesh_message_deliveries_active=t.mesh_active,
                    mesh_deficit_penalty=_mesh_deficit(t, tp),
                    mesh_failure_penalty=t.mesh_failure_penalty,
                    invalid_message_deliveries=t.invalid_deliveries,
                    score=topic_score,
                    weighted=topic_score * tp.topic_weight,
                )
            )
        topic_total = self._topic_total(stats)
        app_specific = self._app_specific(peer, stats)
        ip_colocation = self._ip_colocation(stats)
        return ScoreBreakdown(
            peer=peer,
            score=self._combine(topic_total, app_specific, ip_colocation, stats.behaviour_penalty),
            topics=tuple(topics),
            topic_total=topic_total,
            app_specific=app_specific,
            ip_colocation=ip_colocation,
            behaviour_penalty=stats.behaviour_penalty,
            connected=stats.connected,
        )

    # -- time ---------------------------------------------------------------------------------------------

    def next_refresh(self) -> float:
        """When :meth:`refresh` must run next: one ``decay_interval`` after the previous one was due."""
        return self._next_refresh

    def refresh(self, now: float) -> None:
        """Decay every counter of the connected peers (retained scores do not decay, so a peer cannot
        reset a bad score by reconnecting), measure mesh times and activate P3, forget retained peers
        whose retention has passed and delivery records past their TTL (go's ``refreshScores`` and
        ``gcDeliveryRecords``).
        """
        p = self._params
        while self._retained:
            peer, expire = next(iter(self._retained.items()))
            if now <= expire:
                break
            self._forget(peer)
        to_zero = p.decay_to_zero
        for stats in self._peers.values():
            if not stats.connected:
                continue
            for topic, t in stats.topics.items():
                tp = p.topics.get(topic)
                if tp is None:
                    continue
                t.first_deliveries = _decayed(t.first_deliveries, tp.first_message_deliveries_decay, to_zero)
                t.mesh_deliveries = _decayed(t.mesh_deliveries, tp.mesh_message_deliveries_decay, to_zero)
                t.mesh_failure_penalty = _decayed(t.mesh_failure_penalty, tp.mesh_failure_penalty_decay, to_zero)
                t.invalid_deliveries = _decayed(t.invalid_deliveries, tp.invalid_message_deliveries_decay, to_zero)
                if t.in_mesh:
                    t.mesh_time_ns = max(0, _nanos(now - t.graft_time))
                    if t.mesh_time_ns > _nanos(tp.mesh_message_deliveries_activation):
                        t.mesh_active = True
            stats.behaviour_penalty = _decayed(stats.behaviour_penalty, p.behaviour_penalty_decay, to_zero)
        # go collects expired records once a minute (so they live 2–3 min); here at every refresh
        while self._deliveries:
            record = next(iter(self._deliveries.values()))
            if now <= record.first_seen + self._record_ttl:
                break
            self._deliveries.popitem(last=False)
        # a late refresh does not bunch the following ones up (go's ticker drops missed ticks)
        self._next_refresh += p.decay_interval
        if self._next_refresh <= now:
            self._next_refresh = now + p.decay_interval

    def stats(self) -> dict[str, int]:
        """Sizes of the internal tables, for memory tests and metrics."""
        retained = len(self._retained)
        return {
            "peers": len(self._peers),
            "connected_peers": len(self._peers) - retained,
            "retained_peers": retained,
            "tracked_ips": len(self._ip_peers),
            "delivery_records": len(self._deliveries),
            "delivery_record_peers": sum(len(r.peers) for r in self._deliveries.values()),
        }
