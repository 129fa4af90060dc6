"""Memory budgets for the muxers: how many receive-buffer bytes a connection (and a peer) may make us hold.

A muxer core *reserves* bytes before it grants a peer the right to make us buffer them (a yamux
receive window, an mplex stream's unread data) and *releases* them when the stream goes away. A
budget that is used up refuses: yamux then refuses new streams and stops growing windows, mplex
resets the stream that would go over. A budget may have a parent (connection → peer): a
reservation must fit in both. No trio and no clock here; plain integers, cheap enough for the
stream-open path (the data path never reserves).

:class:`MemoryReserver` is the interface a core uses, so the host's resource system can pass its own
scope object instead of a :class:`MemoryBudget`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from mycel.core.errors import MuxerError

__all__ = ["PEER_INBOUND_STREAMS", "GuardedSession", "MemoryBudget", "MemoryReserver", "MuxerBudgets", "PeerBudgets", "RateLimit", "SessionGuard"]

PEER_INBOUND_STREAMS = 2000
"""Inbound streams open at once from one peer over all its connections of one muxer; beyond, refused."""


@runtime_checkable
class MemoryReserver(Protocol):
    """Something that grants and takes back bytes of memory (a budget or a resource scope)."""

    def reserve(self, n: int) -> bool:
        """Take ``n`` bytes if they fit; False (and nothing taken) if they do not."""
        ...

    def release(self, n: int) -> None:
        """Give back ``n`` bytes taken earlier."""
        ...


class MemoryBudget:
    """``limit`` bytes, optionally inside a ``parent`` budget (every reservation must fit in both).

    ``refused`` counts reservations that did not fit (for stats and tests).
    """

    __slots__ = ("limit", "used", "parent", "refused")

    def __init__(self, limit: int, parent: MemoryReserver | None = None) -> None:
        if limit < 0:
            raise ValueError("a memory budget cannot be negative")
        self.limit = limit
        self.used = 0
        self.parent = parent
        self.refused = 0

    @property
    def available(self) -> int:
        """Bytes that may still be reserved here (the parent may have less)."""
        return max(0, self.limit - self.used)

    def reserve(self, n: int) -> bool:
        """Take ``n`` bytes if they fit here and in the parent; False otherwise (nothing taken)."""
        if n <= 0:
            return True
        if self.used + n > self.limit or (self.parent is not None and not self.parent.reserve(n)):
            self.refused += 1
            return False
        self.used += n
        return True

    def force(self, n: int) -> None:
        """Take ``n`` bytes even beyond the limit (what we chose to do ourselves, e.g. a stream we open);
        the excess makes later :meth:`reserve` calls refuse until it is released."""
        if n <= 0:
            return
        self.used += n
        parent = self.parent
        if parent is not None and not parent.reserve(n):
            if isinstance(parent, MemoryBudget):
                parent.force(n)
            else:  # a foreign scope that refuses: count it here only, give back nothing later
                self.used -= n

    def release(self, n: int) -> None:
        """Give back ``n`` bytes (never below zero)."""
        if n <= 0:
            return
        n = min(n, self.used)
        self.used -= n
        if self.parent is not None and n:
            self.parent.release(n)

    def release_all(self) -> None:
        """Give back everything this budget holds (the connection is gone)."""
        self.release(self.used)

    def __repr__(self) -> str:
        return f"<MemoryBudget {self.used}/{self.limit}>"


class PeerBudgets:
    """Per remote peer, shared by that peer's connections of one muxer: a :class:`MemoryBudget` of
    ``limit`` bytes and a count of inbound streams (at most ``stream_limit``, a budget of 1 per stream).

    Entries live while a connection holds them (:meth:`acquire` / :meth:`drop`), so the table is
    bounded by the number of open connections.
    """

    __slots__ = ("limit", "stream_limit", "_budgets")

    def __init__(self, limit: int, stream_limit: int = PEER_INBOUND_STREAMS) -> None:
        self.limit = limit
        self.stream_limit = stream_limit
        self._budgets: dict[object, tuple[MemoryBudget, MemoryBudget, int]] = {}

    def acquire(self, peer: object) -> tuple[MemoryBudget, MemoryBudget]:
        """The peer's memory budget and inbound-stream count (created at its first connection), with
        one more user."""
        entry = self._budgets.get(peer)
        if entry is None:
            entry = (MemoryBudget(self.limit), MemoryBudget(self.stream_limit), 0)
        self._budgets[peer] = (entry[0], entry[1], entry[2] + 1)
        return entry[0], entry[1]

    def drop(self, peer: object) -> None:
        """One user of the peer's budget is gone; the entry is forgotten with its last user."""
        entry = self._budgets.get(peer)
        if entry is None:
            return
        if entry[2] <= 1:
            del self._budgets[peer]
        else:
            self._budgets[peer] = (entry[0], entry[1], entry[2] - 1)

    def __len__(self) -> int:
        return len(self._budgets)

    def get(self, peer: object) -> MemoryBudget | None:
        """The peer's memory budget while it has connections, else None."""
        entry = self._budgets.get(peer)
        return entry[0] if entry is not None else None

    def streams(self, peer: object) -> MemoryBudget | None:
        """The peer's inbound-stream count (``used`` = streams open) while it has connections, else None."""
        entry = self._budgets.get(peer)
        return entry[1] if entry is not None else None


class RateLimit:
    """A token bucket: ``rate`` events per second sustained, ``burst`` at once. Time comes from the
    caller (``now``, seconds), so the sans-IO cores can use it. ``refused`` counts events over the limit."""

    __slots__ = ("rate", "burst", "_tokens", "_last", "refused")

    def __init__(self, rate: float, burst: float) -> None:
        check_rate(rate, burst)
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None
        self.refused = 0

    def allow(self, now: float, n: float = 1.0) -> bool:
        """Take ``n`` tokens at ``now`` if there are enough; False (and ``refused`` + 1) if not."""
        last = self._last
        if last is not None and now > last:
            self._tokens = min(self.burst, self._tokens + (now - last) * self.rate)
        if last is None or now > last:
            self._last = now
        if self._tokens >= n:
            self._tokens -= n
            return True
        self.refused += 1
        return False


def check_rate(rate: float, burst: float) -> None:
    """Raise ValueError unless ``rate`` >= 0 and ``burst`` >= 1 (what :class:`RateLimit` accepts)."""
    if rate < 0 or burst < 1:
        raise ValueError("a rate limit needs rate >= 0 and burst >= 1")


class SessionGuard:
    """The bookkeeping both muxer cores share for one session: its memory reservation (inside
    ``memory``), its inbound streams (at most ``max_inbound``, opened at ``stream_rate`` per second
    after ``stream_burst``), refusals by reason, and the rate of frames that do nothing (``junk``)."""

    __slots__ = (
        "memory",
        "reserved",
        "inbound",
        "max_inbound",
        "_stream_rate",
        "_junk_rate",
        "_stream_per_s",
        "_stream_burst",
        "_junk_per_s",
        "_junk_burst",
        "refused",
        "peer_streams",
        "_peer_held",
    )

    def __init__(
        self,
        memory: MemoryReserver,
        max_inbound: int,
        stream_rate: float,
        stream_burst: int,
        junk_rate: float,
        junk_burst: int,
        peer_streams: MemoryReserver | None = None,
    ) -> None:
        self.memory = memory
        self.peer_streams = peer_streams  # the peer's inbound streams (all its connections), 1 per stream
        self._peer_held = 0  # of which this session's
        self.reserved = 0  # bytes this session holds of ``memory``
        self.inbound = 0  # inbound streams open
        self.max_inbound = max_inbound
        check_rate(stream_rate, stream_burst)
        check_rate(junk_rate, junk_burst)
        # the buckets are made at their first event: most connections never see a junk frame, an idle one
        # no inbound stream (the numbers are the muxer's: nothing is allocated for them here)
        self._stream_per_s, self._stream_burst = stream_rate, stream_burst
        self._junk_per_s, self._junk_burst = junk_rate, junk_burst
        self._stream_rate: RateLimit | None = None
        self._junk_rate: RateLimit | None = None
        self.refused: dict[str, int] = {}

    @property
    def stream_rate(self) -> RateLimit:
        """The inbound-stream token bucket."""
        rate = self._stream_rate
        if rate is None:
            rate = self._stream_rate = RateLimit(self._stream_per_s, self._stream_burst)
        return rate

    @property
    def junk_rate(self) -> RateLimit:
        """The token bucket of frames that do nothing."""
        rate = self._junk_rate
        if rate is None:
            rate = self._junk_rate = RateLimit(self._junk_per_s, self._junk_burst)
        return rate

    def admit(self, now: float, reserve: int) -> str | None:
        """A new inbound stream that needs ``reserve`` bytes at once: None if it may open (counted),
        else why not (counted in ``refused``)."""
        peer = self.peer_streams
        if self.inbound >= self.max_inbound:
            reason = "too many inbound streams"
        elif peer is not None and not peer.reserve(1):
            reason = "too many inbound streams from the peer"
        else:
            if not self.stream_rate.allow(now):
                reason = "inbound stream rate"
            elif not self.reserve(reserve):
                reason = "memory budget"
            else:
                self.inbound += 1
                if peer is not None:
                    self._peer_held += 1
                return None
            if peer is not None:
                peer.release(1)
        self.refuse(reason)
        return reason

    def stream_closed(self) -> None:
        """An inbound stream admitted earlier is gone."""
        self.inbound -= 1
        if self._peer_held > 0 and self.peer_streams is not None:
            self._peer_held -= 1
            self.peer_streams.release(1)

    def refuse(self, reason: str) -> None:
        """Count one refused inbound stream."""
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def reserve(self, n: int) -> bool:
        """Take ``n`` bytes of the budget if they fit."""
        if self.memory.reserve(n):
            self.reserved += n
            return True
        return False

    def force(self, n: int) -> int:
        """Take ``n`` bytes even beyond the limit (our own choice); returns what is held (0 when a
        foreign scope refuses outright)."""
        mem = self.memory
        if isinstance(mem, MemoryBudget):
            mem.force(n)
        elif not mem.reserve(n):
            return 0
        self.reserved += n
        return n

    def release(self, n: int) -> None:
        """Give back ``n`` bytes."""
        if n > 0:
            self.reserved -= n
            self.memory.release(n)

    def release_all(self) -> None:
        """Give back the whole reservation and the peer's stream slots (the connection is gone)."""
        self.release(self.reserved)
        if self._peer_held and self.peer_streams is not None:
            self.peer_streams.release(self._peer_held)
        self._peer_held = 0

    def junk(self, now: float, what: str) -> None:
        """One frame that does nothing (``what`` names the kind for the error): a few are normal, more
        than the rate allows raise MuxerError."""
        if not self.junk_rate.allow(now):
            raise MuxerError(
                f"flood of {what} (more than {self.junk_rate.burst:.0f} at {self.junk_rate.rate:.0f}/s)"
            )


class GuardedSession:
    """What the muxer cores share on top of their :class:`SessionGuard`: the budget queries and the
    release at the end (each core sets ``_guard`` and keeps streams with a ``reserved`` field)."""

    _guard: SessionGuard
    _streams: dict[int, Any]

    @property
    def reserved_memory(self) -> int:
        """Bytes this session holds of its memory budget (yamux: its streams' receive windows;
        mplex: its streams' unread data)."""
        return self._guard.reserved

    @property
    def inbound_streams(self) -> int:
        """Inbound streams open now (at ``max_inbound_streams`` new ones are refused)."""
        return self._guard.inbound

    def release_memory(self) -> None:
        """Give the whole reservation back (the connection is gone; called by the driver at its end)."""
        self._guard.release_all()
        for st in self._streams.values():
            st.reserved = 0


class MuxerBudgets:
    """The budget settings the Yamux and Mplex muxer objects share (plain attributes, so a resource
    system can set them), and the per-peer budgets of their connections."""

    def __init__(
        self,
        connection_memory: int,
        peer_memory: int,
        max_inbound_streams: int,
        inbound_stream_rate: float,
        inbound_stream_burst: int,
        junk_rate: float,
        junk_burst: int,
        peer_inbound_streams: int,
    ) -> None:
        self.connection_memory = connection_memory
        self.peer_memory = peer_memory
        self.max_inbound_streams = max_inbound_streams
        self.inbound_stream_rate = inbound_stream_rate
        self.inbound_stream_burst = inbound_stream_burst
        self.junk_rate = junk_rate
        self.junk_burst = junk_burst
        self.peer_inbound_streams = peer_inbound_streams
        self.peer_budgets = PeerBudgets(peer_memory, peer_inbound_streams)
        """The per-peer budgets of this muxer's connections (one entry per connected peer)."""

    def core_budget_options(
        self, memory: MemoryReserver | None, peer_streams: MemoryReserver | None = None
    ) -> dict[str, Any]:
        """The keyword arguments of a core's budgets: ``memory`` (default: ``connection_memory``
        bytes on its own), the peer's inbound-stream count, the inbound stream cap and rate, the rate
        of frames that do nothing."""
        return {
            "memory": memory if memory is not None else MemoryBudget(self.connection_memory),
            "peer_streams": peer_streams,
            "max_inbound_streams": self.max_inbound_streams,
            "inbound_stream_rate": self.inbound_stream_rate,
            "inbound_stream_burst": self.inbound_stream_burst,
            "junk_rate": self.junk_rate,
            "junk_burst": self.junk_burst,
        }
