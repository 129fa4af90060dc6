"""The Kademlia lookup as a sans-IO state machine: which peers to ask next, when the lookup is done, and which
peers it found. The driver does the I/O (sends FIND_NODE / GET_VALUE / GET_PROVIDERS, reports answers, failures
and the clock); nothing here awaits, reads a clock or draws random numbers.

Shape and tests follow rust-libp2p's ``ClosestPeersIter`` (``protocols/kad/src/query/peers/closest.rs``) and its
disjoint-path wrapper (``closest/disjoint.rs``, S/Kademlia); the β parameter is go-libp2p-kad-dht's
"resiliency" (``query.go``). Termination, exactly:

1. **Converged** (go's ``isLookupTermination``, β = 3): the β closest known peers that have not failed or
   timed out have all answered. go stops its lookup phase here and then, in ``runLookupWithFollowup``, queries
   every one of the k closest peers it has heard of but not yet asked, all at once. We do the same without the
   phase break: once converged, parallelism widens from α to max(k, α) so the rest of the k closest are asked at
   once; unlike go, their answers still feed the lookup (a closer peer they name is asked too) and a peer that
   fails is replaced by the next closest (as rust does).
2. **Finished** (rust's rule): the k closest known peers that have not failed or timed out have all answered
   (no closer peer is waiting for an answer or not yet asked), or there is nobody left to ask and nothing in
   flight (starvation; a small network). With ``follow_up=False`` the lookup finishes already at rule 1 (go's
   ``runQuery`` without the follow-up), and the result is whoever answered so far.
3. **Stalled** (rust's ``State::Stalled``): after α answers in a row that brought no peer closer than the k-th
   closest known, parallelism widens to max(k, α) until an answer makes progress again.

A request that times out (``on_timeout`` or ``next_requests`` past its deadline) stops counting against
parallelism and termination, but if its answer still arrives before the lookup finishes it is used, as rust does.
We never ask a peer that lies beyond the k closest live (answered or in flight) peers: it could only matter if
one of those failed, and then it is asked (rust may ask it anyway while closer requests are in flight).

Bounds: the seeds are cut to the k closest, every answer is read for at most k peers (the rest of a hostile,
unbounded list is never looked at), and at most ``max_candidates`` not-yet-asked peers are kept (the farthest
are dropped). Every peer is asked at most once; with disjoint paths no two paths ask the same peer.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from enum import Enum
from itertools import islice
from typing import TYPE_CHECKING

from mycel.protocols.kad.distance import peer_key

if TYPE_CHECKING:
    from mycel.core.peer_id import PeerId

K_VALUE = 20
"""Replication parameter k: how many closest peers a lookup looks for (go, rust, the spec)."""
ALPHA_VALUE = 10
"""Default parallelism α, as go-libp2p-kad-dht (rust and the paper use 3)."""
BETA_VALUE = 3
"""Default resiliency β, as go-libp2p-kad-dht: how many of the closest peers must answer before the lookup
has converged."""
REQUEST_TIMEOUT = 10.0
"""Seconds before an unanswered request stops counting (rust's ``peer_timeout``)."""


class PeerState(Enum):
    """Where a peer stands in a lookup."""

    NOT_CONTACTED = "not-contacted"
    """Known (a seed or named by an answer), not asked yet."""
    WAITING = "waiting"
    """Asked; the answer is due before its deadline."""
    UNRESPONSIVE = "unresponsive"
    """Asked, deadline passed; ignored by parallelism and termination, but a late answer is still used."""
    SUCCEEDED = "succeeded"
    """Answered."""
    FAILED = "failed"
    """The request failed (the driver said so)."""


class _Entry:
    __slots__ = ("deadline", "distance", "hop", "peer", "state")

    def __init__(self, peer: PeerId, distance: int, hop: int) -> None:
        self.peer = peer
        self.distance = distance
        self.hop = hop
        self.state = PeerState.NOT_CONTACTED
        self.deadline = 0.0


class _Path:
    """One iteration towards the target: the whole lookup, or one of its disjoint paths."""

    def __init__(self, lookup: ClosestPeersLookup) -> None:
        self._lookup = lookup
        self.entries: dict[int, _Entry] = {}  # by distance to the target (unique per peer)
        self.order: list[int] = []  # the distances in ``entries``, ascending
        self.num_waiting = 0
        self.num_candidates = 0  # entries NOT_CONTACTED
        self.no_progress = 0
        self.stalled = False
        self.finished = False

    # -- the peer set --------------------------------------------------------------------------------------

    def add(self, peer: PeerId, distance: int, hop: int) -> bool:
        """Add a peer not yet known to this path; False when it already was."""
        entry = self.entries.get(distance)
        if entry is not None:
            if entry.state is PeerState.NOT_CONTACTED and hop < entry.hop:
                entry.hop = hop
            return False
        self.entries[distance] = _Entry(peer, distance, hop)
        bisect.insort(self.order, distance)
        self.num_candidates += 1
        return True

    def remove(self, distance: int) -> None:
        """Forget a not-yet-asked peer (claimed by another path, or dropped at the candidate cap)."""
        del self.entries[distance]
        del self.order[bisect.bisect_left(self.order, distance)]
        self.num_candidates -= 1

    def trim(self, cap: int) -> None:
        """Drop the farthest not-yet-asked peers until at most ``cap`` remain."""
        excess = self.num_candidates - cap
        i = len(self.order) - 1
        while excess > 0 and i >= 0:
            distance = self.order[i]
            if self.entries[distance].state is PeerState.NOT_CONTACTED:
                self.remove(distance)
                excess -= 1
            i -= 1

    # -- rules -----------------------------------------------------------------------------------------------

    def closest_answered(self, n: int) -> tuple[bool, int]:
        """Walk the peers closest first, skipping failed and timed-out ones, until ``n`` have answered: returns
        (whether all walked peers answered, i.e. none is in flight or not yet asked; how many answered)."""
        answered = 0
        for distance in self.order:
            state = self.entries[distance].state
            if state is PeerState.SUCCEEDED:
                answered += 1
                if answered >= n:
                    break
            elif state is PeerState.NOT_CONTACTED or state is PeerState.WAITING:
                return False, answered
        return True, answered

    def converged(self) -> bool:
        """go's isLookupTermination: the β closest peers that have not failed or timed out all answered."""
        settled, answered = self.closest_answered(self._lookup.beta)
        return settled and answered > 0

    def capacity(self) -> int:
        """How many requests may be in flight on this path now."""
        lookup = self._lookup
        if self.stalled or self.converged():
            return max(lookup.k, lookup.alpha)
        return lookup.alpha

    def evaluate(self) -> None:
        """Set ``finished`` when the termination rule holds (see the module docstring): the k closest live
        peers all answered, or (fewer known) nobody is left to ask and nothing is in flight."""
        if self.finished:
            return
        lookup = self._lookup
        if not lookup.follow_up and self.converged():
            self.finished = True
            return
        self.finished = self.closest_answered(lookup.k)[0]

    def expire(self, now: float) -> int:
        """Mark requests past their deadline unresponsive; returns how many."""
        if self.num_waiting == 0:
            return 0
        expired = 0
        for entry in self.entries.values():
            if entry.state is PeerState.WAITING and now >= entry.deadline:
                entry.state = PeerState.UNRESPONSIVE
                self.num_waiting -= 1
                expired += 1
        return expired

    def next(self, now: float, claim: Callable[[PeerId, int], bool]) -> PeerId | None:
        """The next peer to ask on this path, or None (at capacity, waiting, or finished)."""
        self.evaluate()
        if self.finished or self.num_waiting >= self.capacity():
            return None
        lookup = self._lookup
        live = 0  # answered or in flight, closer than the current entry
        i = 0
        while i < len(self.order):
            entry = self.entries[self.order[i]]
            state = entry.state
            if state is PeerState.SUCCEEDED or state is PeerState.WAITING:
                live += 1
            elif state is PeerState.NOT_CONTACTED:
                if live >= lookup.k:
                    return None  # beyond the k closest live peers: only worth asking if one of them fails
                if not claim(entry.peer, entry.hop):
                    self.remove(entry.distance)  # another path asked it already
                    continue
                entry.state = PeerState.WAITING
                entry.deadline = now + lookup.request_timeout
                self.num_waiting += 1
                self.num_candidates -= 1
                return entry.peer
            i += 1
        return None

    # -- outcomes --------------------------------------------------------------------------------------------

    def settle(self, distance: int, outcome: PeerState) -> _Entry | None:
        """Move an asked peer (in flight or timed out) to ``outcome``; None if it was not awaited."""
        entry = self.entries.get(distance)
        if entry is None or self.finished:
            return None
        if entry.state is PeerState.WAITING:
            self.num_waiting -= 1
        elif entry.state is not PeerState.UNRESPONSIVE:
            return None
        entry.state = outcome
        return entry

    def succeed(self, distance: int, closer: list[tuple[PeerId, int]]) -> bool:
        """Record an answer (in time or late) and take in the peers it names."""
        entry = self.settle(distance, PeerState.SUCCEEDED)
        if entry is None:
            return False
        lookup = self._lookup
        # rust: progress = fewer than k peers known, or a new peer closer than the k-th closest known.
        order = self.order
        cur_range = order[lookup.k - 1] if len(order) >= lookup.k else order[-1]
        progress = len(order) < lookup.k
        for peer, peer_distance in closer:
            if self.add(peer, peer_distance, entry.hop + 1) and peer_distance < cur_range:
                progress = True
        self.trim(lookup.max_candidates)
        if self.stalled:
            if progress:
                self.stalled = False
                self.no_progress = 0
        elif progress:
            self.no_progress = 0
        else:
            self.no_progress += 1
            if self.no_progress >= lookup.alpha:
                self.stalled = True
        self.evaluate()
        return True

    def fail(self, distance: int) -> bool:
        """Record a failed request."""
        if self.settle(distance, PeerState.FAILED) is None:
            return False
        self.evaluate()
        return True


class ClosestPeersLookup:
    """A lookup of the k peers closest to ``target``, driven by the caller.

    The driver loop: send a request to each peer of ``next_requests(now)``; report each outcome with
    ``on_success(peer, closer, now)`` or ``on_failure(peer, now)``; sleep until ``next_deadline()`` and call
    ``on_timeout(now)`` when it passes; call ``next_requests`` again after every event; stop when ``finished``
    and read ``result()``. Requests still in flight then (``in_flight()``) may be cancelled.

    ``target`` is a keyspace position (``kad_key``/``peer_key``); ``seeds`` are the starting peers (the routing
    table's closest; only the k closest are used). ``accept`` is asked once per peer (seeds and named peers) and
    a peer it refuses is never asked nor returned: the driver passes the diversity filter, the "is a DHT server"
    check and its own id there. ``disjoint_paths=d`` runs S/Kademlia's d disjoint lookups: the seeds are dealt
    round-robin to the paths, each path has its own α, only the path that asked a peer learns from its answer,
    and no peer is asked by two paths; the result is the k closest that answered on any path.
    """

    def __init__(
        self,
        target: int,
        seeds: Iterable[PeerId],
        *,
        now: float,
        k: int = K_VALUE,
        alpha: int = ALPHA_VALUE,
        beta: int = BETA_VALUE,
        request_timeout: float = REQUEST_TIMEOUT,
        disjoint_paths: int | None = None,
        accept: Callable[[PeerId], bool] | None = None,
        max_candidates: int | None = None,
        follow_up: bool = True,
    ) -> None:
        if k < 1 or alpha < 1 or beta < 1:
            raise ValueError("k, alpha and beta must be at least 1")
        if request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        paths = 1 if disjoint_paths is None else disjoint_paths
        if paths < 1:
            raise ValueError("disjoint_paths must be at least 1")
        cap = 10 * k if max_candidates is None else max_candidates
        if cap < k:
            raise ValueError("max_candidates must be at least k")
        self.target = target
        self.k = k
        self.alpha = alpha
        self.beta = min(beta, k)
        self.request_timeout = request_timeout
        self.max_candidates = cap
        self.follow_up = follow_up
        self.started = now
        self._accept = accept
        self._verdicts: dict[PeerId, bool] = {}
        self._owner: dict[PeerId, int] = {}  # peer -> the path that asked it
        self._paths = [_Path(self) for _ in range(paths)]
        self._stopped = False
        self.requests_sent = 0
        """Requests handed out by ``next_requests``."""
        self.successes = 0
        """Answers taken in (late ones included)."""
        self.failures = 0
        """Requests reported failed."""
        self.timeouts = 0
        """Requests that passed their deadline unanswered."""
        self.rounds = 0
        """The longest chain of referrals followed: 1 when only seeds were asked, +1 per hop."""

        unique: dict[int, PeerId] = {}
        for peer in seeds:
            if self._accepted(peer):
                unique.setdefault(self._distance(peer), peer)
        for i, distance in enumerate(sorted(unique)[:k]):
            self._paths[i % paths].add(unique[distance], distance, 1)

    # -- helpers ---------------------------------------------------------------------------------------------

    def _distance(self, peer: PeerId) -> int:
        return peer_key(peer) ^ self.target

    def _accepted(self, peer: PeerId) -> bool:
        if self._accept is None:
            return True
        verdict = self._verdicts.get(peer)
        if verdict is None:
            verdict = self._verdicts[peer] = bool(self._accept(peer))
        return verdict

    # -- driving ---------------------------------------------------------------------------------------------

    def next_requests(self, now: float) -> list[PeerId]:
        """The peers to ask now (possibly none). Marks overdue requests unresponsive first."""
        if self.finished:
            return []
        self.on_timeout(now)
        out: list[PeerId] = []
        for index, path in enumerate(self._paths):

            def claim(peer: PeerId, hop: int, index: int = index) -> bool:
                if peer in self._owner:
                    return False
                self._owner[peer] = index
                self.requests_sent += 1
                self.rounds = max(self.rounds, hop)
                return True

            while (peer := path.next(now, claim)) is not None:
                out.append(peer)
        return out

    def on_success(self, peer: PeerId, closer: Iterable[PeerId], now: float, *, done: bool = False) -> bool:
        """``peer`` answered, naming ``closer`` peers (only the first k are read). ``done=True`` ends the
        lookup after taking the answer in (a GET_VALUE that reached its quorum). Returns False when the answer
        was not expected (unknown peer, answered already, or the lookup had finished) and so was ignored."""
        taken = False
        index = self._owner.get(peer)
        if index is not None and not self.finished:
            named: list[tuple[PeerId, int]] = []
            for other in islice(closer, self.k):
                owner = self._owner.get(other)
                if owner is not None and owner != index:
                    continue  # asked on another path: disjoint paths never share a peer
                if self._accepted(other):
                    named.append((other, self._distance(other)))
            taken = self._paths[index].succeed(self._distance(peer), named)
            if taken:
                self.successes += 1
        if done:
            self.stop()
        return taken

    def on_failure(self, peer: PeerId, now: float) -> bool:
        """The request to ``peer`` failed (refused, reset, undecodable answer). False when not expected."""
        index = self._owner.get(peer)
        if index is None or self.finished:
            return False
        failed = self._paths[index].fail(self._distance(peer))
        if failed:
            self.failures += 1
        return failed

    def on_timeout(self, now: float) -> None:
        """Mark requests whose deadline is at or before ``now`` unresponsive (a late answer is still used)."""
        if self.finished:
            return
        for path in self._paths:
            expired = path.expire(now)
            if expired:
                self.timeouts += expired
                path.evaluate()

    def next_deadline(self) -> float | None:
        """The earliest deadline of a request in flight, or None."""
        if self.finished:
            return None
        deadlines = [
            entry.deadline
            for path in self._paths
            for entry in path.entries.values()
            if entry.state is PeerState.WAITING
        ]
        return min(deadlines, default=None)

    def stop(self) -> None:
        """End the lookup now (the caller has what it needs); later answers are ignored."""
        self._stopped = True

    # -- reading ---------------------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once the termination rule holds on every path, or after ``stop()``."""
        return self._stopped or all(path.finished for path in self._paths)

    @property
    def stalled(self) -> bool:
        """True while some path is stalled (parallelism widened to max(k, α))."""
        return any(path.stalled for path in self._paths)

    def num_waiting(self) -> int:
        """Requests in flight that still count against parallelism (not yet past their deadline)."""
        return sum(path.num_waiting for path in self._paths)

    def in_flight(self) -> list[PeerId]:
        """Peers asked and not yet answered, failed or timed out, closest first."""
        return [peer for peer, state in self.peers_in_order() if state is PeerState.WAITING]

    def result(self) -> list[PeerId]:
        """The k closest peers that answered, closest first. May be read at any time (progressive results)."""
        answered = [
            (entry.distance, entry.peer)
            for path in self._paths
            for entry in path.entries.values()
            if entry.state is PeerState.SUCCEEDED
        ]
        answered.sort(key=lambda item: item[0])
        return [peer for _, peer in answered[: self.k]]

    def peers_in_order(self) -> list[tuple[PeerId, PeerState]]:
        """Every peer the lookup knows with its state, closest first (e.g. whom to send a PUT correction)."""
        merged: dict[int, _Entry] = {}
        for path in self._paths:
            for distance, entry in path.entries.items():
                known = merged.get(distance)
                if known is None or known.state is PeerState.NOT_CONTACTED:
                    merged[distance] = entry
        return [(merged[d].peer, merged[d].state) for d in sorted(merged)]

    def state_of(self, peer: PeerId) -> PeerState | None:
        """The state of ``peer`` in this lookup, or None if unknown (or dropped at the candidate cap)."""
        distance = self._distance(peer)
        index = self._owner.get(peer)
        if index is not None:
            return self._paths[index].entries[distance].state
        for path in self._paths:
            entry = path.entries.get(distance)
            if entry is not None:
                return entry.state
        return None


__all__ = [
    "ALPHA_VALUE",
    "BETA_VALUE",
    "K_VALUE",
    "REQUEST_TIMEOUT",
    "ClosestPeersLookup",
    "PeerState",
]
