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

from typing import Protocol, runtime_checkable

__all__ = ["MemoryBudget", "MemoryReserver", "PeerBudgets", "RateLimit"]


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
    """One :class:`MemoryBudget` per remote peer, shared by that peer's connections of one muxer.

    Entries live while a connection holds them (:meth:`acquire` / :meth:`drop`), so the table is
    bounded by the number of open connections.
    """

    __slots__ = ("limit", "_budgets")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._budgets: dict[object, tuple[MemoryBudget, int]] = {}

    def acquire(self, peer: object) -> MemoryBudget:
        """The peer's budget (created at the first connection), with one more user."""
        entry = self._budgets.get(peer)
        budget = entry[0] if entry is not None else MemoryBudget(self.limit)
        self._budgets[peer] = (budget, (entry[1] if entry is not None else 0) + 1)
        return budget

    def drop(self, peer: object) -> None:
        """One user of the peer's budget is gone; the entry is forgotten with its last user."""
        entry = self._budgets.get(peer)
        if entry is None:
            return
        if entry[1] <= 1:
            del self._budgets[peer]
        else:
            self._budgets[peer] = (entry[0], entry[1] - 1)

    def __len__(self) -> int:
        return len(self._budgets)

    def get(self, peer: object) -> MemoryBudget | None:
        """The peer's budget while it has connections, else None."""
        entry = self._budgets.get(peer)
        return entry[0] if entry is not None else None


class RateLimit:
    """A token bucket: ``rate`` events per second sustained, ``burst`` at once. Time comes from the
    caller (``now``, seconds), so the sans-IO cores can use it. ``refused`` counts events over the limit."""

    __slots__ = ("rate", "burst", "_tokens", "_last", "refused")

    def __init__(self, rate: float, burst: float) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("a rate limit needs rate >= 0 and burst >= 1")
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
