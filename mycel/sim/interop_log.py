"""gossipsub-interop's log contract and its analysis.

Every node writes newline-delimited JSON, each line with ``time`` (RFC3339, UTC) and ``msg``:
``{"msg": "PeerID", "id": <peer id>, "node_id": N}`` first, then ``{"msg": "Received Message", "id":
<message id in base 10>, "from": <peer id>, "topic": ...}`` for every receipt — the first (when the message
is delivered, after validation) and every duplicate (when it arrives). mycel adds ``"Published Message"``
lines, which their parsers skip. :meth:`InteropLog.write` lays the files out like Shadow's output
(``hosts/node<N>/node<N>.stdout``), so test-plans' ``analyze_message_deliveries.py`` and
``checks/subnet_blob_msg.py`` run on them unchanged; :func:`analyze` computes the same metrics here
(reach, time to disseminate, p50, duplicates per node per message) plus latency from the publish.

Simulated time is written as if the run started at 2000-01-01T00:00:00Z, as Shadow does.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

EPOCH: Final = datetime(2000, 1, 1, tzinfo=timezone.utc)
"""Wall-clock time of simulated second 0 (Shadow's start of time)."""


def rfc3339(seconds: float) -> str:
    """``EPOCH + seconds`` as RFC3339 with microseconds and ``Z``."""
    micros = round(seconds * 1_000_000)
    when = EPOCH + timedelta(microseconds=micros)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float:
    """Seconds since :data:`EPOCH` of an RFC3339 timestamp (as their analysis reads it)."""
    return (datetime.fromisoformat(text) - EPOCH).total_seconds()


class InteropLog:
    """The log lines of every node of a run, in the order they were emitted (one global sequence, so a
    run's whole event log can be compared byte for byte)."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []

    def emit(self, node: int, seconds: float, msg: str, **fields: Any) -> None:
        """Append one line for node ``node`` at simulated ``seconds``."""
        self.lines.append((node, json.dumps({"time": rfc3339(seconds), "msg": msg, **fields}, separators=(",", ":"))))

    def node(self, node_id: int) -> NodeLogger:
        """The logger of one node."""
        return NodeLogger(self, node_id)

    def per_node(self) -> dict[int, list[str]]:
        """Each node's lines, in order."""
        out: dict[int, list[str]] = defaultdict(list)
        for node_id, line in self.lines:
            out[node_id].append(line)
        return out

    def event_log(self) -> str:
        """All lines in emission order, each prefixed with its node id (the determinism check's input)."""
        return "".join(f"{n} {line}\n" for n, line in self.lines)

    def write(self, out: str | os.PathLike[str]) -> Path:
        """Write ``out/hosts/node<N>/node<N>.stdout`` per node and ``out/events.log``; returns ``out/hosts``."""
        base = Path(out)
        hosts = base / "hosts"
        for node_id, lines in sorted(self.per_node().items()):
            d = hosts / f"node{node_id}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"node{node_id}.stdout").write_text("".join(line + "\n" for line in lines))
        (base / "events.log").write_text(self.event_log())
        return hosts


class NodeLogger:
    """One node's side of an :class:`InteropLog`."""

    __slots__ = ("_log", "node_id")

    def __init__(self, log: InteropLog, node_id: int) -> None:
        self._log = log
        self.node_id = node_id

    def peer_id(self, seconds: float, peer_id: str) -> None:
        """The first line of every node: its peer id."""
        self._log.emit(self.node_id, seconds, "PeerID", id=peer_id, node_id=self.node_id)

    def received(self, seconds: float, message_id: int, sender: str, topic: str) -> None:
        """A message arrived (first delivery or duplicate)."""
        self._log.emit(self.node_id, seconds, "Received Message", id=str(message_id), **{"from": sender}, topic=topic)

    def published(self, seconds: float, message_id: int, topic: str, size: int) -> None:
        """We published a message (mycel's addition; their analysis ignores it)."""
        self._log.emit(self.node_id, seconds, "Published Message", id=str(message_id), topic=topic, size=size)

    def error(self, seconds: float, what: str, **fields: Any) -> None:
        """Something in the script failed (a dial, a publish)."""
        self._log.emit(self.node_id, seconds, "Error", error=what, **fields)


# --- analysis --------------------------------------------------------------------------------------


@dataclass
class MessageStats:
    """What happened to one message (the columns of their analysis.txt, and more)."""

    id: str
    """The message id as the log has it."""
    published_at: float | None
    """When it was published (virtual seconds; None when no publish was logged)."""
    publisher: int | None
    """Index of the publishing node (None when unknown)."""
    size: int | None
    """Payload bytes (None when unknown)."""
    receivers: int
    """Nodes that received it."""
    reach: float
    """Share of the other nodes that received it (1.0: everyone)."""
    time_to_disseminate: float
    """Seconds from the first to the last receipt (gossipsub-interop's time to disseminate)."""
    p50: float
    """Seconds until half of the receivers had it."""
    avg_duplicates: float
    """Duplicate receipts per receiving node."""
    duplicates: int
    """Duplicate receipts in all."""
    latencies: list[float] = field(default_factory=list, repr=False)
    """Per receiving node (publisher excluded): receipt time minus publish time, sorted."""

    @property
    def time_to_all(self) -> float:
        """From the publish to the last first-receipt (nan without a publish line)."""
        return self.latencies[-1] if self.latencies else math.nan

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of :attr:`latencies` (nan when empty)."""
        return quantile(self.latencies, q)


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted ``values`` (nan when empty)."""
    if not values:
        return math.nan
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def _records(lines_per_node: Iterable[tuple[int, Iterable[str]]]) -> Iterator[tuple[int, dict[str, Any]]]:
    for fallback, lines in lines_per_node:
        node = fallback
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or "msg" not in rec:
                continue
            if rec["msg"] == "PeerID":
                node = int(rec.get("node_id", fallback))
            yield node, rec


def analyze_lines(per_node: dict[int, list[str]]) -> list[MessageStats]:
    """The metrics of their ``analyze_message_deliveries.py`` over each node's lines: per message, the
    first receipt per node (duplicates counted), ordered by first receipt; reach = receivers / (nodes -
    1) capped at 1; time to disseminate = last - first receipt; p50 = the median receipt - first; average
    duplicates = duplicates / nodes. Plus latency from the ``Published Message`` line."""
    nodes: set[int] = set()
    first: dict[str, dict[int, float]] = defaultdict(dict)
    dups: dict[str, int] = defaultdict(int)
    published: dict[str, tuple[float, int, int]] = {}
    for node, rec in _records(sorted(per_node.items())):
        kind = rec["msg"]
        if kind == "PeerID":
            nodes.add(node)
        elif kind == "Received Message" and "time" in rec and rec.get("id"):
            mid = str(rec["id"])
            if node in first[mid]:
                dups[mid] += 1
            else:
                first[mid][node] = parse_time(rec["time"])
        elif kind == "Published Message":
            published[str(rec["id"])] = (parse_time(rec["time"]), node, int(rec.get("size", 0)))
    total = len(nodes)
    out: list[MessageStats] = []
    for mid, got in first.items():
        times = sorted(got.values())
        pub = published.get(mid)
        lat = sorted(t - pub[0] for n, t in got.items() if n != pub[1]) if pub else []
        out.append(
            MessageStats(
                id=mid,
                published_at=pub[0] if pub else None,
                publisher=pub[1] if pub else None,
                size=pub[2] if pub else None,
                receivers=len(got),
                reach=min(1.0, len(got) / (total - 1)) if total > 1 else 0.0,
                time_to_disseminate=times[-1] - times[0],
                p50=times[len(times) // 2] - times[0],
                avg_duplicates=dups[mid] / total if total else 0.0,
                duplicates=dups[mid],
                latencies=lat,
            )
        )
    for mid, (at, node, size) in published.items():  # published but received by nobody
        if mid not in first:
            out.append(MessageStats(mid, at, node, size, 0, 0.0, math.nan, math.nan, 0.0, 0))
    out.sort(key=lambda m: (m.published_at if m.published_at is not None else math.inf, m.id))
    return out


def analyze(hosts_dir: str | os.PathLike[str]) -> list[MessageStats]:
    """:func:`analyze_lines` over a directory of node logs (``hosts/node<N>/*.stdout``, or flat files)."""
    base = Path(hosts_dir)
    per_node: dict[int, list[str]] = {}
    files = sorted(base.rglob("*.stdout")) or sorted(p for p in base.iterdir() if p.is_file())
    for i, path in enumerate(files):
        per_node[i] = path.read_text().splitlines()
    return analyze_lines(per_node)


__all__ = [
    "EPOCH",
    "InteropLog",
    "MessageStats",
    "NodeLogger",
    "analyze",
    "analyze_lines",
    "parse_time",
    "quantile",
    "rfc3339",
]
