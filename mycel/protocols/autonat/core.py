"""AutoNAT's decisions, sans-IO (no trio, no clock, no randomness of their own: ``now`` and an RNG are
passed in).

* :class:`RateLimiter` — the server's budget: ``global_limit`` requests per ``window`` from everyone and
  ``peer_limit`` per peer (go v1: 30 and 3 per minute; go v2: 60 and 12 per minute).
* :func:`v1_dial_candidates` — which of a v1 requester's addresses a server may dial: only those with the
  IP the request arrived from (anything else would let a requester aim our dials at a third party:
  amplification), public under the host's policy, not relayed; deduplicated and bounded.
* :func:`v2_plan` — which address of a v2 request to dial, and whether the requester must first pay
  for it with ``DialDataResponse`` bytes (the address's IP is not the one it connected from).
* :class:`ReachabilityTracker` — the v1 client's verdict from its observations, with go's confidence
  window (a single public observation switches to public; leaving a state takes as many contrary
  observations as the confidence built up).
* :class:`AddrReachability` — the v2 client's verdict per address from the last ``window`` results.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from multiaddr import Multiaddr

from mycel.core.addrs import AddressPolicy, IPAddress, Reachability, ip_of, is_relay_addr

__all__ = [
    "AddrReachability",
    "RateLimiter",
    "ReachabilityTracker",
    "V2Plan",
    "v1_dial_candidates",
    "v2_plan",
]

MAX_CONFIDENCE = 3  # go's maxConfidence
V1_MAX_DIAL_ADDRS = 16  # addresses of one v1 request dialed at most (go's maxPeerAddresses)
DIAL_DATA_MIN, DIAL_DATA_MAX = 30_000, 100_000  # the spec's amplification cost range (bytes)


class RateLimiter:
    """Sliding-window request budget: ``global_limit`` per ``window`` seconds, ``peer_limit`` per peer.

    Bounded: at most ``global_limit`` timestamps are held in all (a peer's entries are a subset), so the
    per-peer table never holds more than ``global_limit`` peers. A request over either budget is refused
    (``allow`` returns False) and not counted."""

    def __init__(self, global_limit: int, peer_limit: int, window: float = 60.0) -> None:
        if global_limit < 1 or peer_limit < 1 or window <= 0:
            raise ValueError("limits must be positive")
        self.global_limit = global_limit
        self.peer_limit = peer_limit
        self.window = window
        self._all: collections.deque[tuple[float, Hashable]] = collections.deque()
        self._peers: dict[Hashable, int] = {}
        self.refused = 0
        """Requests refused so far."""

    def _expire(self, now: float) -> None:
        while self._all and self._all[0][0] <= now - self.window:
            _, peer = self._all.popleft()
            left = self._peers[peer] - 1
            if left:
                self._peers[peer] = left
            else:
                del self._peers[peer]

    def allow(self, peer: Hashable, now: float) -> bool:
        """Count a request from ``peer`` at ``now`` if the budgets allow it; False (refused) if not."""
        self._expire(now)
        if len(self._all) >= self.global_limit or self._peers.get(peer, 0) >= self.peer_limit:
            self.refused += 1
            return False
        self._all.append((now, peer))
        self._peers[peer] = self._peers.get(peer, 0) + 1
        return True

    def __len__(self) -> int:
        return len(self._all)


def v1_dial_candidates(
    addrs: Sequence[Multiaddr], observed_ip: IPAddress | None, policy: AddressPolicy, limit: int = V1_MAX_DIAL_ADDRS
) -> list[Multiaddr]:
    """The addresses of a v1 request a server may dial back: same IP as ``observed_ip`` (the IP the
    request came from), public under ``policy``, not relayed; at most ``limit``, in request order."""
    if observed_ip is None:
        return []
    out: list[Multiaddr] = []
    for addr in addrs:
        if is_relay_addr(addr) or ip_of(addr) != observed_ip or not policy.is_public(addr):
            continue
        if addr not in out:
            out.append(addr)
            if len(out) >= limit:
                break
    return out


@dataclass(frozen=True)
class V2Plan:
    """What a v2 server does with a request: dial ``addrs[index]``, first asking for ``dial_data`` bytes
    (0: none) because its IP is not the requester's; ``index`` None: refuse (no address it will dial)."""

    index: int | None
    dial_data: int = 0


def v2_plan(
    addrs: Sequence[Multiaddr | None],
    observed_ip: IPAddress | None,
    policy: AddressPolicy,
    can_dial: Callable[[Multiaddr], bool],
    rng: random.Random,
) -> V2Plan:
    """Pick the first address of a v2 request the server will dial (public under ``policy``, not
    relayed, a transport it has); if its IP differs from ``observed_ip``, ask the requester for a
    random amount in [30 kB, 100 kB] first (the spec's amplification-attack cost)."""
    for index, addr in enumerate(addrs):
        if addr is None or is_relay_addr(addr) or not policy.is_public(addr) or not can_dial(addr):
            continue
        ip = ip_of(addr)
        if ip is None:
            continue
        if observed_ip is not None and ip == observed_ip:
            return V2Plan(index, 0)
        return V2Plan(index, rng.randint(DIAL_DATA_MIN, DIAL_DATA_MAX))
    return V2Plan(None)


class ReachabilityTracker:
    """The v1 client's reachability from its observations, as go's ``recordObservation``.

    PUBLIC is taken at once (one server dialed us back), PRIVATE only after the confidence earned
    in the current state has been spent (each contrary observation spends one), UNKNOWN likewise.
    Confidence grows by one per agreeing observation, up to MAX_CONFIDENCE."""

    def __init__(self, max_confidence: int = MAX_CONFIDENCE) -> None:
        self.max_confidence = max_confidence
        self.status = Reachability.UNKNOWN
        self.confidence = 0

    def observe(self, observation: Reachability) -> bool:
        """Record one observation; True if ``status`` changed."""
        before = self.status
        if observation is Reachability.PUBLIC:
            if self.status is not Reachability.PUBLIC:
                self.status, self.confidence = Reachability.PUBLIC, 0
            elif self.confidence < self.max_confidence:
                self.confidence += 1
        elif observation is Reachability.PRIVATE:
            if self.status is not Reachability.PRIVATE:
                if self.confidence > 0:
                    self.confidence -= 1
                else:
                    self.status, self.confidence = Reachability.PRIVATE, 0
            elif self.confidence < self.max_confidence:
                self.confidence += 1
        elif self.confidence > 0:
            self.confidence -= 1
        else:
            self.status = Reachability.UNKNOWN
        return self.status is not before

    @property
    def settled(self) -> bool:
        """True once the verdict is not UNKNOWN and its confidence is full (probe less often)."""
        return self.status is not Reachability.UNKNOWN and self.confidence >= self.max_confidence


class AddrReachability:
    """The v2 client's verdict per address: from the last ``window`` results of each (True: dialed
    back, False: dial failed), REACHABLE once successes outnumber failures by ``confidence``,
    UNREACHABLE once failures outnumber successes by it; UNKNOWN otherwise. At most ``max_addrs``
    addresses are tracked; :meth:`retain` forgets those we no longer have."""

    def __init__(self, confidence: int = MAX_CONFIDENCE, window: int = 5, max_addrs: int = 64) -> None:
        self.confidence = confidence
        self.window = window
        self.max_addrs = max_addrs
        self._results: dict[Multiaddr, collections.deque[bool]] = {}

    def record(self, addr: Multiaddr, reachable: bool) -> bool:
        """Record one result for ``addr``; True if its verdict changed. Dropped (False) when
        ``max_addrs`` other addresses are tracked."""
        results = self._results.get(addr)
        if results is None:
            if len(self._results) >= self.max_addrs:
                return False
            results = self._results[addr] = collections.deque(maxlen=self.window)
        before = self.verdict(addr)
        results.append(reachable)
        return self.verdict(addr) is not before

    def verdict(self, addr: Multiaddr) -> Reachability:
        """PUBLIC (reachable), PRIVATE (unreachable) or UNKNOWN for ``addr``."""
        results = self._results.get(addr)
        if not results:
            return Reachability.UNKNOWN
        ok = sum(results)
        balance = ok - (len(results) - ok)
        if balance >= self.confidence:
            return Reachability.PUBLIC
        if -balance >= self.confidence:
            return Reachability.PRIVATE
        return Reachability.UNKNOWN

    def settled(self, addr: Multiaddr) -> bool:
        """True once ``addr`` has a verdict (probe it less often)."""
        return self.verdict(addr) is not Reachability.UNKNOWN

    def retain(self, addrs: Sequence[Multiaddr]) -> None:
        """Forget every address not in ``addrs``."""
        keep = set(addrs)
        for addr in [a for a in self._results if a not in keep]:
            del self._results[addr]

    def verdicts(self) -> dict[Multiaddr, Reachability]:
        """Every tracked address's verdict."""
        return {addr: self.verdict(addr) for addr in self._results}

    def overall(self) -> Reachability:
        """PUBLIC if some address is reachable, PRIVATE if every tracked one is unreachable, else UNKNOWN."""
        verdicts = list(self.verdicts().values())
        if any(v is Reachability.PUBLIC for v in verdicts):
            return Reachability.PUBLIC
        if verdicts and all(v is Reachability.PRIVATE for v in verdicts):
            return Reachability.PRIVATE
        return Reachability.UNKNOWN
