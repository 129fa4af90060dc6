"""gossipsub-interop scenario scripts: the ``params.json`` instruction format of test-plans'
``gossipsub-interop`` harness, parsed into typed instructions, and generators for its built-in scenarios.

The format (``{"script": [instruction, ...]}``, each instruction an object with a ``type``) and the
scenarios' shapes are theirs (``gossipsub-interop/script_instruction.py``, ``experiment.py``); the code is
ours. Instructions:

* ``initGossipSub {gossipSubParams}`` — go ``GossipSubParams`` JSON, durations in nanoseconds;
* ``connect {connectTo: [node ids]}``; ``ifNodeIDEquals {nodeID, instruction}``;
* ``waitUntil {elapsedSeconds}`` (seconds since the test started);
* ``subscribeToTopic {topicID, partial?}``; ``setTopicValidationDelay {topicID, delaySeconds}``;
* ``publish {messageID, messageSizeBytes, topicID}`` — the message id is written big-endian in the
  first 8 bytes of a ``messageSizeBytes`` payload (and read back from there: the message id function).

Partial-message instructions (``addPartialMessage``, ``publishPartial``) are rejected with
:class:`ScenarioError`: mycel has no partial-message extension.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mycel.core.errors import MycelError

NS: Final = 1e-9


class ScenarioError(MycelError, ValueError):
    """A params.json that is not a valid gossipsub-interop script (or uses what mycel lacks)."""


@dataclass(frozen=True)
class InitGossipSub:
    """Configure the node's gossipsub router (go ``GossipSubParams``; unset fields keep the defaults)."""

    params: Mapping[str, Any]
    """The gossipsub parameters, with go's names (durations in nanoseconds)."""


@dataclass(frozen=True)
class Connect:
    """Dial these nodes (one after another)."""

    connect_to: tuple[int, ...]
    """Indexes of the nodes to connect to."""


@dataclass(frozen=True)
class IfNodeIDEquals:
    """Run ``instruction`` only on node ``node_id``."""

    node_id: int
    instruction: Instruction


@dataclass(frozen=True)
class WaitUntil:
    """Wait until ``elapsed_seconds`` after the test started (messages keep flowing meanwhile)."""

    elapsed_seconds: float


@dataclass(frozen=True)
class SubscribeToTopic:
    """Subscribe to ``topic`` (every message received is logged)."""

    topic: str


@dataclass(frozen=True)
class SetTopicValidationDelay:
    """Validating a message of ``topic`` takes ``delay`` seconds (a validator that sleeps)."""

    topic: str
    delay: float


@dataclass(frozen=True)
class Publish:
    """Publish message ``message_id`` of ``size`` bytes on ``topic``."""

    message_id: int
    size: int
    topic: str


Instruction = InitGossipSub | Connect | IfNodeIDEquals | WaitUntil | SubscribeToTopic | SetTopicValidationDelay | Publish


@dataclass(frozen=True)
class Script:
    """A parsed params.json: the instructions every node runs, in order."""

    instructions: tuple[Instruction, ...]
    name: str = "script"
    """The scenario's name (for logs and reports)."""

    def for_node(self, node_id: int) -> list[Instruction]:
        """The instructions node ``node_id`` runs (``ifNodeIDEquals`` resolved)."""
        out: list[Instruction] = []
        for ins in self.instructions:
            while isinstance(ins, IfNodeIDEquals):
                if ins.node_id != node_id:
                    break
                ins = ins.instruction
            else:
                out.append(ins)
        return out

    def node_count_hint(self) -> int:
        """One more than the highest node id the script names (0 when it names none)."""
        highest = -1

        def visit(ins: Instruction) -> None:
            nonlocal highest
            if isinstance(ins, IfNodeIDEquals):
                highest = max(highest, ins.node_id)
                visit(ins.instruction)
            elif isinstance(ins, Connect) and ins.connect_to:
                highest = max(highest, *ins.connect_to)

        for ins in self.instructions:
            visit(ins)
        return highest + 1

    def to_json(self) -> dict[str, Any]:
        """The params.json form (``{"script": [...]}``)."""
        return {"script": [_dump(i) for i in self.instructions]}


def _dump(ins: Instruction) -> dict[str, Any]:
    if isinstance(ins, InitGossipSub):
        return {"type": "initGossipSub", "gossipSubParams": dict(ins.params)}
    if isinstance(ins, Connect):
        return {"type": "connect", "connectTo": list(ins.connect_to)}
    if isinstance(ins, IfNodeIDEquals):
        return {"type": "ifNodeIDEquals", "nodeID": ins.node_id, "instruction": _dump(ins.instruction)}
    if isinstance(ins, WaitUntil):
        secs = int(ins.elapsed_seconds) if float(ins.elapsed_seconds).is_integer() else ins.elapsed_seconds
        return {"type": "waitUntil", "elapsedSeconds": secs}
    if isinstance(ins, SubscribeToTopic):
        return {"type": "subscribeToTopic", "topicID": ins.topic}
    if isinstance(ins, SetTopicValidationDelay):
        return {"type": "setTopicValidationDelay", "topicID": ins.topic, "delaySeconds": ins.delay}
    return {"type": "publish", "messageID": ins.message_id, "messageSizeBytes": ins.size, "topicID": ins.topic}


MAX_INSTRUCTIONS: Final = 1_000_000
MAX_NESTING: Final = 8
MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024


def _int(obj: Mapping[str, Any], key: str, *, lo: int = 0, hi: int = 2**63) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ScenarioError(f"{obj.get('type')}: {key!r} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _num(obj: Mapping[str, Any], key: str) -> float:
    value = obj.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1e9:
        raise ScenarioError(f"{obj.get('type')}: {key!r} must be a non-negative number, got {value!r}")
    return float(value)


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ScenarioError(f"{obj.get('type')}: {key!r} must be a non-empty string, got {value!r}")
    return value


def parse_instruction(obj: Any, depth: int = 0) -> Instruction:
    """One instruction from its JSON object. Raises :class:`ScenarioError` when malformed or unsupported."""
    if not isinstance(obj, dict):
        raise ScenarioError(f"an instruction must be an object, got {type(obj).__name__}")
    kind = obj.get("type")
    if kind == "initGossipSub":
        params = obj.get("gossipSubParams", {})
        if not isinstance(params, dict):
            raise ScenarioError("initGossipSub: gossipSubParams must be an object")
        gossipsub_changes(params)  # validated now, applied when the node starts
        return InitGossipSub(params)
    if kind == "connect":
        targets = obj.get("connectTo")
        if not isinstance(targets, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in targets):
            raise ScenarioError(f"connect: connectTo must be a list of node ids, got {targets!r}")
        return Connect(tuple(targets))
    if kind == "ifNodeIDEquals":
        if depth >= MAX_NESTING:
            raise ScenarioError(f"ifNodeIDEquals nested deeper than {MAX_NESTING}")
        return IfNodeIDEquals(_int(obj, "nodeID"), parse_instruction(obj.get("instruction"), depth + 1))
    if kind == "waitUntil":
        return WaitUntil(_num(obj, "elapsedSeconds"))
    if kind == "subscribeToTopic":
        if obj.get("partial"):
            raise ScenarioError("subscribeToTopic with partial=true: mycel has no partial-message extension")
        return SubscribeToTopic(_str(obj, "topicID"))
    if kind == "setTopicValidationDelay":
        return SetTopicValidationDelay(_str(obj, "topicID"), _num(obj, "delaySeconds"))
    if kind == "publish":
        return Publish(_int(obj, "messageID"), _int(obj, "messageSizeBytes", hi=MAX_MESSAGE_SIZE), _str(obj, "topicID"))
    if kind in ("addPartialMessage", "publishPartial"):
        raise ScenarioError(f"{kind}: mycel has no partial-message extension")
    raise ScenarioError(f"unknown instruction type {kind!r}")


def parse_params(data: Any, *, name: str = "script") -> Script:
    """A :class:`Script` from a decoded params.json (``{"script": [...]}``)."""
    if not isinstance(data, dict) or not isinstance(data.get("script"), list):
        raise ScenarioError('params.json must be an object with a "script" list')
    items = data["script"]
    if len(items) > MAX_INSTRUCTIONS:
        raise ScenarioError(f"more than {MAX_INSTRUCTIONS} instructions")
    return Script(tuple(parse_instruction(i) for i in items), name=name)


def load_params(path: str | Path) -> Script:
    """Read and parse a params.json file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"cannot read {p}: {exc}") from exc
    return parse_params(data, name=p.stem)


# go GossipSubParams field -> (GossipsubConfig field, is a duration in nanoseconds)
_PARAMS: Final[Mapping[str, tuple[str, bool]]] = {
    "D": ("d", False),
    "Dlo": ("d_lo", False),
    "Dhi": ("d_hi", False),
    "Dscore": ("d_score", False),
    "Dout": ("d_out", False),
    "HistoryLength": ("history_length", False),
    "HistoryGossip": ("history_gossip", False),
    "Dlazy": ("d_lazy", False),
    "GossipFactor": ("gossip_factor", False),
    "GossipRetransmission": ("gossip_retransmission", False),
    "HeartbeatInitialDelay": ("heartbeat_initial_delay", True),
    "HeartbeatInterval": ("heartbeat_interval", True),
    "FanoutTTL": ("fanout_ttl", True),
    "PrunePeers": ("prune_peers", False),
    "PruneBackoff": ("prune_backoff", True),
    "UnsubscribeBackoff": ("unsubscribe_backoff", True),
    "DirectConnectTicks": ("direct_connect_ticks", False),
    "OpportunisticGraftTicks": ("opportunistic_graft_ticks", False),
    "OpportunisticGraftPeers": ("opportunistic_graft_peers", False),
    "GraftFloodThreshold": ("graft_flood_threshold", True),
    "MaxIHaveLength": ("max_ihave_length", False),
    "MaxIHaveMessages": ("max_ihave_messages", False),
    "MaxIDontWantLength": ("max_idontwant_length", False),
    "MaxIDontWantMessages": ("max_idontwant_messages", False),
    "IWantFollowupTime": ("iwant_followup_time", True),
    "IDontWantMessageThreshold": ("idontwant_message_threshold", False),
    "IDontWantMessageTTL": ("idontwant_message_ttl", False),
}
IGNORED_PARAMS: Final = frozenset(
    {"SlowHeartbeatWarning", "Connectors", "MaxPendingConnections", "ConnectionTimeout", "DirectConnectInitialDelay"}
)
"""go parameters mycel has no knob for (dial concurrency and timeouts); accepted and ignored."""


def gossipsub_changes(params: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`~mycel.protocols.pubsub.config.GossipsubConfig` changes for go ``GossipSubParams``
    (nanosecond durations become seconds; ``null`` fields are skipped)."""
    changes: dict[str, Any] = {}
    for key, value in params.items():
        if value is None or key in IGNORED_PARAMS:
            continue
        spec = _PARAMS.get(key)
        if spec is None:
            raise ScenarioError(f"initGossipSub: unknown parameter {key!r}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ScenarioError(f"initGossipSub: {key} must be a non-negative number, got {value!r}")
        name, is_duration = spec
        if is_duration:
            changes[name] = value * NS
        elif name == "gossip_factor":
            changes[name] = float(value)
        else:
            changes[name] = int(value)
    return changes


def message_payload(message_id: int, size: int) -> bytes:
    """A ``size``-byte payload carrying ``message_id`` big-endian in its first 8 bytes (zeros after)."""
    head = (message_id & (2**64 - 1)).to_bytes(8, "big")
    return head[:size] + bytes(max(0, size - 8))


def message_id_of(data: bytes) -> int:
    """The gossipsub-interop message id: the first 8 bytes of the data, big-endian (zero-padded)."""
    return int.from_bytes(data[:8].ljust(8, b"\0"), "big")


# --- built-in scenarios (the shapes of gossipsub-interop's experiment.py) -------------------------------


def spread_heartbeat_delay(node_count: int, params: Mapping[str, Any] | None = None) -> list[Instruction]:
    """One ``initGossipSub`` per node, heartbeats starting 0.1 s + 0.1 ms x (i + 1) in, so the nodes'
    heartbeats do not all fire at once."""
    out: list[Instruction] = []
    for i in range(node_count):
        delay_ns = 100_000_000 + (i + 1) * 100_000
        out.append(IfNodeIDEquals(i, InitGossipSub({**(params or {}), "HeartbeatInitialDelay": delay_ns})))
    return out


def random_network_mesh(node_count: int, connections: int, rng: random.Random) -> list[Instruction]:
    """Each node ends with at least ``connections`` distinct neighbours; node i dials the ones it picked."""
    links: dict[int, set[int]] = {i: set() for i in range(node_count)}
    dials: dict[int, list[int]] = {i: [] for i in range(node_count)}
    for i in range(node_count):
        while len(links[i]) < connections:
            j = rng.randrange(node_count)
            if j == i or j in links[i]:
                continue
            links[i].add(j)
            links[j].add(i)
            dials[i].append(j)
    return [IfNodeIDEquals(i, Connect(tuple(d))) for i, d in dials.items() if d]


def random_publish_every_12s(
    node_count: int, messages: int, size: int, topics: Sequence[str], rng: random.Random, *, start: float = 120.0, every: float = 12.0
) -> list[Instruction]:
    """``messages`` publishes from random nodes, the first at ``start`` seconds, one every ``every``."""
    out: list[Instruction] = [WaitUntil(start)]
    at = start
    for i in range(messages):
        node = rng.randrange(node_count)
        out.append(IfNodeIDEquals(node, Publish(i, size, rng.choice(list(topics)))))
        at += every
        out.append(WaitUntil(at))
    out.append(WaitUntil(at + 30))  # let the last message settle
    return out


def subnet_blob_msg(node_count: int, seed: int, *, messages: int = 16, start: float = 120.0, gossip: bool = True) -> Script:
    """gossipsub-interop's ``subnet-blob-msg``: 20 random connections per node, a 5 ms validation delay,
    ``messages`` messages of 2 KiB x 48 = 98,304 bytes on ``a-subnet``, one every 12 s from a random
    node from ``start`` seconds on."""
    rng = random.Random(seed)
    params: dict[str, Any] = {} if gossip else {"Dlazy": 0, "GossipFactor": 0}
    topic = "a-subnet"
    out = spread_heartbeat_delay(node_count, params)
    out.append(SetTopicValidationDelay(topic, 0.005))
    out += random_network_mesh(node_count, min(20, node_count - 1), rng)
    out.append(SubscribeToTopic(topic))
    out += random_publish_every_12s(node_count, messages, 2 * 1024 * 48, [topic], rng, start=start)
    return Script(tuple(out), name="subnet-blob-msg")


def simple_fanout(node_count: int, seed: int, *, messages: int = 16, start: float = 120.0) -> Script:
    """gossipsub-interop's ``simple-fanout``: even nodes on ``topic-a``, odd on ``topic-b``; 16 x 1 KiB
    messages from random nodes to a random topic (so about half are published through a fanout)."""
    rng = random.Random(seed)
    out = spread_heartbeat_delay(node_count)
    out += random_network_mesh(node_count, min(20, node_count - 1), rng)
    out += [IfNodeIDEquals(i, SubscribeToTopic("topic-a" if i % 2 == 0 else "topic-b")) for i in range(node_count)]
    out += random_publish_every_12s(node_count, messages, 1024, ["topic-a", "topic-b"], rng, start=start)
    return Script(tuple(out), name="simple-fanout")


BUILTIN: Final[Mapping[str, Callable[..., Script]]] = {
    "subnet-blob-msg": subnet_blob_msg,
    "simple-fanout": simple_fanout,
}
"""Built-in scenarios by name: ``fn(node_count, seed, **options) -> Script``."""


__all__ = [
    "BUILTIN",
    "Connect",
    "IfNodeIDEquals",
    "InitGossipSub",
    "Instruction",
    "Publish",
    "ScenarioError",
    "Script",
    "SetTopicValidationDelay",
    "SubscribeToTopic",
    "WaitUntil",
    "gossipsub_changes",
    "load_params",
    "message_id_of",
    "message_payload",
    "parse_instruction",
    "parse_params",
    "random_network_mesh",
    "simple_fanout",
    "spread_heartbeat_delay",
    "subnet_blob_msg",
]
