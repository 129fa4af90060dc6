"""The two caches of a pubsub router: the seen cache (ids with a TTL) and the message cache (history
windows used for gossip and for answering IWANT). Both are bounded; both take ``now`` as an argument.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mycel.core.peer_id import PeerId
    from mycel.protocols.pubsub.messages import PubsubMessage


class SeenCache:
    """Message ids seen in the last ``ttl`` seconds, at most ``max_size`` (beyond, the oldest is
    forgotten early: a very late duplicate of it would be processed again)."""

    __slots__ = ("_entries", "evicted", "max_size", "ttl")

    def __init__(self, ttl: float, max_size: int) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._entries: OrderedDict[bytes, float] = OrderedDict()  # id -> expiry, in expiry order
        self.evicted = 0

    def __contains__(self, msg_id: bytes) -> bool:
        return msg_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, msg_id: bytes, now: float) -> bool:
        """Remember ``msg_id``; False if it was already there (then nothing changes)."""
        if msg_id in self._entries:
            return False
        self._entries[msg_id] = now + self.ttl
        if len(self._entries) > self.max_size:
            self._entries.popitem(last=False)
            self.evicted += 1
        return True

    def expire(self, now: float) -> None:
        """Forget ids older than the TTL."""
        entries = self._entries
        while entries:
            msg_id, expiry = next(iter(entries.items()))
            if expiry > now:
                break
            del entries[msg_id]


class MessageCache:
    """The last ``history_length`` heartbeats of messages; the newest ``history_gossip`` windows are
    offered in IHAVE. Holds at most ``max_messages`` (beyond, the oldest are forgotten early) and counts
    how often each peer asked for each message (IWANT retransmission limit)."""

    __slots__ = ("_asked", "_gossip", "_msgs", "_windows", "evicted", "max_messages")

    def __init__(self, history_length: int, history_gossip: int, max_messages: int) -> None:
        # windows are deques: evicting the oldest message early (a full cache) is a popleft, not a list's
        # pop(0), which moved every id of a window of tens of thousands per message
        self._windows: deque[deque[tuple[bytes, str]]] = deque([deque()])
        self._gossip = history_gossip
        self._msgs: dict[bytes, PubsubMessage] = {}
        self._asked: dict[bytes, dict[PeerId, int]] = {}
        self.max_messages = max_messages
        self.evicted = 0
        for _ in range(history_length - 1):
            self._windows.append(deque())

    def __len__(self) -> int:
        return len(self._msgs)

    def __contains__(self, msg_id: bytes) -> bool:
        return msg_id in self._msgs

    def put(self, msg: PubsubMessage) -> None:
        """Cache a validated message in the newest window."""
        if msg.id in self._msgs:
            return
        self._msgs[msg.id] = msg
        self._windows[0].append((msg.id, msg.topic))
        while len(self._msgs) > self.max_messages:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        for window in reversed(self._windows):
            if window:
                msg_id, _ = window.popleft()
                self._msgs.pop(msg_id, None)
                self._asked.pop(msg_id, None)
                self.evicted += 1
                return

    def get(self, msg_id: bytes) -> PubsubMessage | None:
        """The cached message with this id, if any."""
        return self._msgs.get(msg_id)

    def get_for_peer(self, msg_id: bytes, peer: PeerId) -> tuple[PubsubMessage | None, int]:
        """The message and how many times ``peer`` has now asked for it (this request included)."""
        msg = self._msgs.get(msg_id)
        if msg is None:
            return None, 0
        asked = self._asked.setdefault(msg_id, {})
        count = asked.get(peer, 0) + 1
        asked[peer] = count
        return msg, count

    def gossip_ids(self, topic: str) -> list[bytes]:
        """Ids of ``topic`` in the gossip windows (newest first)."""
        ids: list[bytes] = []
        for i, window in enumerate(self._windows):
            if i >= self._gossip:
                break
            ids.extend(msg_id for msg_id, t in window if t == topic)
        return ids

    def shift(self) -> None:
        """Start a new window; the oldest one's messages are forgotten."""
        oldest = self._windows.pop()
        for msg_id, _ in oldest:
            self._msgs.pop(msg_id, None)
            self._asked.pop(msg_id, None)
        self._windows.appendleft(deque())


__all__ = ["MessageCache", "SeenCache"]
