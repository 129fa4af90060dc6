"""The connection manager (``host.connmgr``): keeps the number of connections between watermarks.

When more than ``high`` connections are open it closes connections of the least valuable peers
until ``low`` are left (go-libp2p's ``BasicConnMgr``, defaults 160/192, grace 1 min, silence 10 s).
A peer's value is the sum of its tags (``tag_peer(peer, "kad", 5)``); services tag the peers they
rely on (gossipsub its mesh peers, kad its routing-table peers). Never closed: protected peers
(``protect(peer, tag)``, until every tag is unprotected) and peers first connected less than
``grace`` seconds ago. Trims are at least ``silence`` seconds apart. Among peers of equal value, as in
go's ``SortByValueAndStreams``, those with no open stream go first (a trim does not cut a request in
flight when an idle peer of the same value can go instead), then those with an inbound connection.

:class:`ConnManagerCore` is sans-IO (the caller passes ``now``; it says when it wants to run next);
:class:`ConnManager` is its trio driver: a timer, no polling loop.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import trio

from mycel.core.abc import Direction
from mycel.core.errors import ConfigError
from mycel.core.peer_id import PeerId

log = logging.getLogger("mycel.network.connmgr")

C = TypeVar("C", bound=Hashable)

MAX_PEERS = 65536  # peers with tags or connections; a tag for a new peer beyond is ignored
MAX_TAGS_PER_PEER = 64  # distinct tags on one peer; a new tag beyond is ignored (services use a few)


@dataclass(frozen=True)
class ConnManagerConfig:
    """Watermarks and timings of the connection manager (``HostConfig.connmgr``)."""

    low: int = 160
    """Trimming closes connections until this many are left."""
    high: int = 192
    """Trimming starts when more than this many connections are open."""
    grace: float = 60.0
    """Seconds after a peer first connected during which its connections are not trimmed."""
    silence: float = 10.0
    """Minimum seconds between two trims."""

    def __post_init__(self) -> None:
        if not (isinstance(self.low, int) and isinstance(self.high, int)) or not 0 <= self.low <= self.high:
            raise ConfigError(f"ConnManagerConfig: need 0 <= low <= high, got low={self.low!r} high={self.high!r}")
        if self.grace < 0 or self.silence < 0:
            raise ConfigError("ConnManagerConfig: grace and silence must not be negative")


@dataclass(slots=True)
class _Peer:
    first_seen: float
    conns: int = 0
    # tag -> value; made at the first tag (one of these per connected peer, most with no tags)
    tags: dict[str, int] | None = None
    value: int = 0
    # decaying tags: tag -> (value, decay per second, when set); worth max(0, value - rate * age)
    decaying: dict[str, tuple[float, float, float]] | None = None

    def worth(self, now: float) -> float:
        total = float(self.value)
        if self.decaying:
            for value, rate, since in self.decaying.values():
                total += max(0.0, value - rate * (now - since))
        return total


class ConnManagerCore(Generic[C]):
    """The bookkeeping and the trim decision, without I/O.

    Connections are opaque keys (the driver uses the Connection objects)."""

    def __init__(self, config: ConnManagerConfig | None = None) -> None:
        self.config = config or ConnManagerConfig()
        self._conns: dict[C, PeerId] = {}
        self._peers: dict[PeerId, _Peer] = {}
        self._protected: dict[PeerId, set[str]] = {}
        self._last_trim = -math.inf
        self.trimmed = 0
        """Connections this manager decided to close."""

    # -- connections ------------------------------------------------------------------------------
    def opened(self, conn: C, peer: PeerId, now: float) -> None:
        """A connection to ``peer`` opened."""
        if conn in self._conns:
            return
        self._conns[conn] = peer
        info = self._peers.get(peer)
        if info is None:
            info = self._peers[peer] = _Peer(first_seen=now)
        elif info.conns == 0:
            info.first_seen = now
        info.conns += 1

    def closed(self, conn: C) -> None:
        """A connection closed (tags of a peer go with its last connection, as in go)."""
        peer = self._conns.pop(conn, None)
        if peer is None:
            return
        info = self._peers.get(peer)
        if info is not None:
            info.conns -= 1
            if info.conns <= 0:
                del self._peers[peer]

    @property
    def connection_count(self) -> int:
        """Connections open."""
        return len(self._conns)

    # -- tags and protection ----------------------------------------------------------------------
    def tag_peer(self, peer: PeerId, tag: str, value: int, now: float = 0.0) -> None:
        """Set ``peer``'s ``tag`` to ``value`` (a peer not connected yet keeps it once it connects)."""
        info = self._peers.get(peer)
        if info is None:
            if len(self._peers) >= MAX_PEERS:
                return  # a tag for a peer not connected, and too many peers known: ignored
            info = self._peers[peer] = _Peer(first_seen=now)
        tags = info.tags
        if tags is None:
            tags = info.tags = {}
        if tag not in tags and len(tags) >= MAX_TAGS_PER_PEER:
            return
        info.value += value - tags.get(tag, 0)
        tags[tag] = value

    def untag_peer(self, peer: PeerId, tag: str) -> None:
        """Remove ``peer``'s ``tag``."""
        info = self._peers.get(peer)
        if info is not None and info.tags and tag in info.tags:
            info.value -= info.tags.pop(tag)
            if not info.conns and not info.tags and not info.decaying:
                del self._peers[peer]

    def set_tag_peers(self, tag: str, peers: Iterable[PeerId], value: int, now: float = 0.0) -> None:
        """Make ``peers`` exactly the connected peers carrying ``tag`` (with ``value``): a service calls
        it with its current set (gossipsub's mesh) and the differences are applied."""
        want = set(peers)
        for peer, info in list(self._peers.items()):
            if info.tags and tag in info.tags and peer not in want:
                self.untag_peer(peer, tag)
        for peer in want:
            known = self._peers.get(peer)
            if known is not None and known.conns and (known.tags is None or known.tags.get(tag) != value):
                self.tag_peer(peer, tag, value, now)

    def tag_value(self, peer: PeerId, now: float = 0.0) -> float:
        """The sum of ``peer``'s tags (decaying ones as they are worth at ``now``)."""
        info = self._peers.get(peer)
        return info.worth(now) if info is not None else 0

    def bump_decaying(self, peer: PeerId, tag: str, delta: float, rate: float, now: float) -> None:
        """Add ``delta`` to ``peer``'s decaying ``tag``, which loses ``rate`` per second (go's decaying
        tags, e.g. for peers that recently delivered messages); worth nothing once decayed to 0."""
        info = self._peers.get(peer)
        if info is None:
            if len(self._peers) >= MAX_PEERS:
                return
            info = self._peers[peer] = _Peer(first_seen=now)
        decaying = info.decaying
        if decaying is None:
            decaying = info.decaying = {}
        old = decaying.get(tag)
        if old is None and len(info.tags or ()) + len(decaying) >= MAX_TAGS_PER_PEER:
            return
        current = max(0.0, old[0] - old[1] * (now - old[2])) if old is not None else 0.0
        decaying[tag] = (current + delta, rate, now)

    def protect(self, peer: PeerId, tag: str) -> None:
        """Never trim ``peer`` while any tag protects it."""
        self._protected.setdefault(peer, set()).add(tag)

    def unprotect(self, peer: PeerId, tag: str) -> bool:
        """Remove one protection; True while other tags still protect ``peer``."""
        tags = self._protected.get(peer)
        if tags is None:
            return False
        tags.discard(tag)
        if not tags:
            del self._protected[peer]
            return False
        return True

    def is_protected(self, peer: PeerId, tag: str | None = None) -> bool:
        """Whether ``peer`` is protected (by ``tag``, or by any tag)."""
        tags = self._protected.get(peer)
        if not tags:
            return False
        return tag is None or tag in tags

    # -- trimming ---------------------------------------------------------------------------------
    def next_deadline(self) -> float:
        """When :meth:`trim` wants to run (``inf`` while at most ``high`` connections are open)."""
        if len(self._conns) <= self.config.high:
            return math.inf
        return self._last_trim + self.config.silence

    def trim(
        self, now: float, *, force: bool = False, activity: Callable[[C], tuple[int, bool]] | None = None
    ) -> list[C]:
        """The connections to close now to get down to ``low``: all those of the least valuable
        peers that are neither protected nor in their grace period. Without ``force`` it does
        nothing before :meth:`next_deadline`.

        ``activity(conn)`` gives a connection's (open streams, inbound); among peers of equal value,
        peers with no open stream are closed first, then peers with an inbound connection (go's
        order), then the most recently connected."""
        if not force and now < self.next_deadline():
            return []
        self._last_trim = now
        excess = len(self._conns) - self.config.low
        if excess <= 0:
            return []
        grace = self.config.grace
        busy: dict[PeerId, int] = {}
        inbound: set[PeerId] = set()
        if activity is not None:
            for conn, peer in self._conns.items():
                streams, incoming = activity(conn)
                if streams:
                    busy[peer] = busy.get(peer, 0) + streams
                if incoming:
                    inbound.add(peer)
        candidates = [
            (info.worth(now), peer in busy, peer not in inbound, -info.first_seen, peer)
            for peer, info in self._peers.items()
            if info.conns and peer not in self._protected and now - info.first_seen >= grace
        ]
        candidates.sort(key=lambda c: (c[0], c[1], c[2], c[3], c[4].to_bytes()))
        victims: set[PeerId] = set()
        for *_order, peer in candidates:
            if excess <= 0:
                break
            victims.add(peer)
            excess -= self._peers[peer].conns
        out = [conn for conn, peer in self._conns.items() if peer in victims]
        self.trimmed += len(out)
        return out


def connection_activity(conn: Any) -> tuple[int, bool]:
    """A connection's (open streams, inbound), read from its ``stats.extra["streams"]`` and its
    ``direction`` (0 and False for what has neither)."""
    stats = getattr(conn, "stats", None)
    streams = stats.extra.get("streams", 0) if stats is not None else 0
    direction = getattr(conn, "direction", None)
    return (streams if isinstance(streams, int) else 0), direction is Direction.INBOUND


class ConnManager:
    """The trio driver of :class:`ConnManagerCore` in a host (``host.connmgr``).

    ``close(conn)`` closes one connection; ``activity(conn)`` gives its (open streams, inbound) for
    the trim order (default: read from a :class:`~mycel.core.abc.Connection`'s ``stats`` and
    ``direction``). Run :meth:`run` in a nursery; it sleeps until the core's deadline and is woken
    when connections open."""

    def __init__(
        self, config: ConnManagerConfig, close: Callable[[Any], Awaitable[None]],
        activity: Callable[[Any], tuple[int, bool]] | None = None,
    ) -> None:
        self.core: ConnManagerCore[Hashable] = ConnManagerCore(config)
        self._close = close
        self._activity = activity or connection_activity
        self._changed = trio.Event()

    @property
    def config(self) -> ConnManagerConfig:
        """The watermarks and timings."""
        return self.core.config

    def opened(self, conn: Hashable, peer: PeerId) -> None:
        """Called by the host for every connection opened."""
        self.core.opened(conn, peer, trio.current_time())
        if self.core.connection_count > self.core.config.high:
            self._changed.set()

    def closed(self, conn: Hashable) -> None:
        """Called by the host for every connection closed."""
        self.core.closed(conn)

    def tag_peer(self, peer: PeerId, tag: str, value: int) -> None:
        """Set ``peer``'s ``tag`` to ``value`` (higher is kept longer)."""
        self.core.tag_peer(peer, tag, value, trio.current_time())

    def untag_peer(self, peer: PeerId, tag: str) -> None:
        """Remove ``peer``'s ``tag``."""
        self.core.untag_peer(peer, tag)

    def set_tag_peers(self, tag: str, peers: Iterable[PeerId], value: int) -> None:
        """Make ``peers`` exactly the connected peers carrying ``tag`` (with ``value``)."""
        self.core.set_tag_peers(tag, peers, value, trio.current_time())

    def tag_value(self, peer: PeerId) -> float:
        """The sum of ``peer``'s tags (decaying ones as they are worth now)."""
        return self.core.tag_value(peer, trio.current_time())

    def bump_decaying(self, peer: PeerId, tag: str, delta: float, rate: float) -> None:
        """Add ``delta`` to ``peer``'s decaying ``tag``, which loses ``rate`` per second."""
        self.core.bump_decaying(peer, tag, delta, rate, trio.current_time())

    def protect(self, peer: PeerId, tag: str) -> None:
        """Never trim ``peer`` while any tag protects it."""
        self.core.protect(peer, tag)

    def unprotect(self, peer: PeerId, tag: str) -> bool:
        """Remove one protection; True while other tags still protect ``peer``."""
        return self.core.unprotect(peer, tag)

    def is_protected(self, peer: PeerId, tag: str | None = None) -> bool:
        """Whether ``peer`` is protected (by ``tag``, or by any)."""
        return self.core.is_protected(peer, tag)

    async def trim_now(self) -> int:
        """Trim down to the low watermark at once (protection and grace still apply); the number
        of connections closed."""
        victims = self.core.trim(trio.current_time(), force=True, activity=self._activity)
        await self._close_all(victims)
        return len(victims)

    async def _close_all(self, victims: list[Hashable]) -> None:
        if not victims:
            return
        log.info("connection manager: %d connections open, closing %d", self.core.connection_count, len(victims))
        async with trio.open_nursery() as nursery:
            for conn in victims:
                nursery.start_soon(self._close, conn)

    async def run(self) -> None:
        """Trim whenever the core asks to (above the high watermark, at most every ``silence`` s)."""
        while True:
            self._changed = trio.Event()
            deadline = self.core.next_deadline()
            if deadline > trio.current_time():
                with trio.move_on_at(deadline):
                    await self._changed.wait()
                continue
            await self._close_all(self.core.trim(trio.current_time(), activity=self._activity))


__all__ = ["ConnManager", "ConnManagerConfig", "ConnManagerCore"]
