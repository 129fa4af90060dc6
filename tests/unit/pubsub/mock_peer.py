"""A sans-IO harness for attacking a :class:`GossipsubRouter`: the router under test, a recording
:class:`RouterOutput`, virtual time, and hand-driven peers that send whatever RPC a test builds (go's
``newMockGS``, without a network).

Time only moves when a test calls :meth:`Harness.advance`, which runs the router's timers at the
deadlines it asks for, one after the other, as the trio driver would.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.protocols.pubsub import rpc_pb2
from mycel.protocols.pubsub.config import GOSSIPSUB_V12, GossipsubConfig
from mycel.protocols.pubsub.core import GossipsubRouter, PubsubEvent, ValidationResult
from mycel.protocols.pubsub.messages import SIGN_PREFIX, PubsubMessage, encode_message

TOPIC = "mytopic"


@dataclass
class Recorder:
    """A RouterOutput that records everything the router asks for."""

    control: list[tuple[PeerId, rpc_pb2.RPC]] = field(default_factory=list)
    sent: list[tuple[PeerId, PubsubMessage]] = field(default_factory=list)
    delivered: list[PubsubMessage] = field(default_factory=list)
    dials: list[tuple[PeerId, bytes | None]] = field(default_factory=list)
    events: list[PubsubEvent] = field(default_factory=list)
    records: dict[PeerId, bytes] = field(default_factory=dict)
    accept_messages: bool = True
    """False makes every ``send_message`` fail, as a full queue does."""

    def send_control(self, peer: PeerId, rpc: rpc_pb2.RPC) -> None:
        self.control.append((peer, rpc))

    def send_message(self, peer: PeerId, msg: PubsubMessage) -> bool:
        if not self.accept_messages:
            return False
        self.sent.append((peer, msg))
        return True

    def deliver(self, msg: PubsubMessage) -> None:
        self.delivered.append(msg)

    def connect(self, peer: PeerId, signed_record: bytes | None) -> None:
        self.dials.append((peer, signed_record))

    def peer_record(self, peer: PeerId) -> bytes | None:
        return self.records.get(peer)

    def notify(self, event: PubsubEvent) -> None:
        self.events.append(event)

    # --- views -----------------------------------------------------------------------------------

    def controls_to(self, peer: PeerId) -> list[rpc_pb2.RPC]:
        return [rpc for p, rpc in self.control if p == peer]

    def prunes_to(self, peer: PeerId) -> list[rpc_pb2.ControlPrune]:
        return [prune for rpc in self.controls_to(peer) for prune in rpc.control.prune]

    def iwants_to(self, peer: PeerId) -> list[rpc_pb2.ControlIWant]:
        return [iwant for rpc in self.controls_to(peer) for iwant in rpc.control.iwant]

    def grafts_to(self, peer: PeerId) -> list[str]:
        return [g.topicID for rpc in self.controls_to(peer) for g in rpc.control.graft]

    def messages_to(self, peer: PeerId) -> list[PubsubMessage]:
        return [msg for p, msg in self.sent if p == peer]

    def clear(self) -> None:
        self.control.clear()
        self.sent.clear()
        self.delivered.clear()
        self.dials.clear()
        self.events.clear()


class Harness:
    """One router under test at virtual time ``now`` (seconds), seeded."""

    def __init__(self, config: GossipsubConfig | None = None, *, seed: int = 1, flood_only: bool = False) -> None:
        self.config = config or GossipsubConfig()
        self.rng = random.Random(seed)
        self.identity = Identity.from_seed(self.rng.randbytes(32))
        self.out = Recorder()
        self.now = 0.0
        self.router = GossipsubRouter(
            self.config, self.identity.peer_id, self.out, random.Random(seed), self.now, flood_only=flood_only
        )
        self._seqno = 0

    @property
    def peer_id(self) -> PeerId:
        return self.identity.peer_id

    def add_peer(self, protocol: str = GOSSIPSUB_V12, *, outbound: bool = False) -> MockPeer:
        """A new connected peer speaking ``protocol`` (deterministic identity)."""
        peer = MockPeer(self, Identity.from_seed(self.rng.randbytes(32)))
        self.router.add_peer(peer.peer_id, protocol, outbound=outbound, now=self.now)
        return peer

    def advance(self, seconds: float) -> None:
        """Move virtual time forward, running every timer that falls due on the way."""
        end = self.now + seconds
        while (deadline := self.router.next_deadline()) <= end:
            self.now = max(self.now, deadline)
            self.router.handle_timeout(self.now)
        self.now = end

    def heartbeats(self, count: int = 1) -> None:
        """Run exactly ``count`` more heartbeats (time stops at the last one)."""
        for _ in range(count):
            target = self.router.heartbeat_ticks + 1
            while self.router.heartbeat_ticks < target:
                self.now = max(self.now, self.router.next_deadline())
                self.router.handle_timeout(self.now)

    def publish(self, topic: str, data: bytes) -> PubsubMessage:
        """Publish ``data`` as the router's own application does (signed, with its id)."""
        self._seqno += 1
        msg = encode_message(topic, data, key=self.identity.private_key, author=self.peer_id, seqno=self._seqno)
        msg = dataclasses.replace(msg, id=self.router.message_id(msg))  # what the service does
        self.router.publish(msg, self.now)
        return msg

    def score(self, peer: MockPeer) -> float:
        return self.router.score.score(peer.peer_id, self.now)

    def in_mesh(self, peer: MockPeer, topic: str = TOPIC) -> bool:
        return peer.peer_id in self.router.mesh.get(topic, ())


class MockPeer:
    """A peer a test drives by hand: it sends RPCs to the router and reads what the router sent it."""

    def __init__(self, harness: Harness, identity: Identity) -> None:
        self.harness = harness
        self.identity = identity
        self.peer_id = identity.peer_id
        self._seqno = 0

    def send(
        self, rpc: rpc_pb2.RPC, *, validate: ValidationResult | Callable[[PubsubMessage], ValidationResult] | None = None
    ) -> list[PubsubMessage]:
        """Hand ``rpc`` to the router (through an encode/decode round trip, as on the wire); with
        ``validate``, the new messages are then given that verdict (a value, or a function of the message).
        """
        h = self.harness
        wire = rpc_pb2.RPC.FromString(rpc.SerializeToString())
        msgs = h.router.handle_rpc(self.peer_id, wire, h.now)
        if validate is not None:
            for msg in msgs:
                result = validate(msg) if callable(validate) else validate
                h.router.validation_complete(msg, result, h.now)
        return msgs

    # --- RPC builders ---------------------------------------------------------------------------------

    def message(self, topic: str, data: bytes, *, seqno: int | None = None, sign: bool = True) -> rpc_pb2.Message:
        """A message authored by this peer (signed as StrictSign wants unless ``sign=False``)."""
        if seqno is None:
            self._seqno += 1
            seqno = self._seqno
        if sign:
            msg = encode_message(topic, data, key=self.identity.private_key, author=self.peer_id, seqno=seqno)
            signed: rpc_pb2.Message = rpc_pb2.Message.FromString(msg.raw)
            return signed
        pb = rpc_pb2.Message(data=data, topic=topic, seqno=seqno.to_bytes(8, "big"))
        pb.__setattr__("from", self.peer_id.to_bytes())
        return pb

    def sign(self, pb: rpc_pb2.Message) -> rpc_pb2.Message:
        """``pb`` with a valid signature by this peer over its fields as they are."""
        pb.ClearField("signature")
        pb.signature = self.identity.private_key.sign(SIGN_PREFIX + pb.SerializeToString())
        return pb

    def publish_rpc(self, *msgs: rpc_pb2.Message) -> rpc_pb2.RPC:
        return rpc_pb2.RPC(publish=list(msgs))


def subscribe(*topics: str, graft: bool = False) -> rpc_pb2.RPC:
    """An RPC subscribing to ``topics`` (and grafting them with ``graft``), as go's mock peer replies."""
    rpc = rpc_pb2.RPC(subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=True, topicid=t) for t in topics])
    if graft:
        rpc.control.graft.extend(rpc_pb2.ControlGraft(topicID=t) for t in topics)
    return rpc


def unsubscribe(*topics: str) -> rpc_pb2.RPC:
    return rpc_pb2.RPC(subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=False, topicid=t) for t in topics])


def control(**fields: object) -> rpc_pb2.RPC:
    """An RPC carrying only ``ControlMessage(**fields)``."""
    return rpc_pb2.RPC(control=rpc_pb2.ControlMessage(**fields))  # type: ignore[arg-type]


def graft(*topics: str) -> rpc_pb2.RPC:
    return control(graft=[rpc_pb2.ControlGraft(topicID=t) for t in topics])


def prune(topic: str, *, backoff: int | None = None, peers: Iterable[rpc_pb2.PeerInfo] = ()) -> rpc_pb2.RPC:
    p = rpc_pb2.ControlPrune(topicID=topic, peers=list(peers))
    if backoff is not None:
        p.backoff = backoff
    return control(prune=[p])


def ihave(topic: str, ids: Iterable[bytes]) -> rpc_pb2.RPC:
    return control(ihave=[rpc_pb2.ControlIHave(topicID=topic, messageIDs=list(ids))])


def iwant(ids: Iterable[bytes]) -> rpc_pb2.RPC:
    return control(iwant=[rpc_pb2.ControlIWant(messageIDs=list(ids))])


def idontwant(ids: Iterable[bytes]) -> rpc_pb2.RPC:
    return control(idontwant=[rpc_pb2.ControlIDontWant(messageIDs=list(ids))])

