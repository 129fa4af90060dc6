"""The relay's bookkeeping, sans-IO: reservations with expiry and the circuits open, with every bound.

No trio and no clock here: each call takes ``now`` (seconds on the caller's monotonic clock). The
service asks :meth:`RelayCore.reserve` before answering a RESERVE, :meth:`RelayCore.open_circuit`
before relaying a CONNECT (and :meth:`RelayCore.close_circuit` when the circuit ends), drops a peer's
reservation when it disconnects, and sleeps until :meth:`RelayCore.next_deadline` to call
:meth:`RelayCore.expire`.

Every table is bounded by :class:`~mycel.protocols.relay.config.RelayResources`: at a bound the request
is refused with the status go answers (RESERVATION_REFUSED for reservations, RESOURCE_LIMIT_EXCEEDED
for circuits); nothing already granted is evicted.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass
from typing import Generic, Hashable, TypeVar

from mycel.protocols.relay.config import RelayResources
from mycel.protocols.relay.messages import Status

P = TypeVar("P", bound=Hashable)


@dataclass
class Reservation(Generic[P]):
    """One peer's slot on the relay: ``peer``, connected from ``ip`` (None without one), until ``expires``."""

    peer: P
    ip: str | None
    expires: float
    """When it runs out (the caller's clock)."""


@dataclass(frozen=True)
class Circuit(Generic[P]):
    """One relayed connection being counted (``ident``): ``src`` (from ``src_ip``) to ``dst``."""

    ident: int
    src: P
    src_ip: str | None
    dst: P


class RelayCore(Generic[P]):
    """Reservations and circuits of one relay, bounded by ``resources``."""

    def __init__(self, resources: RelayResources) -> None:
        self.resources = resources
        self._reservations: dict[P, Reservation[P]] = {}
        self._per_ip: Counter[str] = Counter()
        self._expiry: list[tuple[float, int, P]] = []  # heap; stale entries skipped on pop
        self._seq = 0
        self._circuits: dict[int, Circuit[P]] = {}
        self._circuits_per_peer: Counter[P] = Counter()
        self._circuits_per_ip: Counter[str] = Counter()
        self.refused: Counter[Status] = Counter()
        """Requests refused so far, by the status answered."""

    # -- reservations ---------------------------------------------------------------------------
    @property
    def reservation_count(self) -> int:
        """Reservations held now."""
        return len(self._reservations)

    def reservation(self, peer: P, now: float) -> Reservation[P] | None:
        """``peer``'s live reservation, or None."""
        rsvp = self._reservations.get(peer)
        if rsvp is None or rsvp.expires <= now:
            return None
        return rsvp

    def reserve(self, peer: P, ip: str | None, now: float) -> Status | Reservation[P]:
        """Grant (or refresh) ``peer``'s reservation until ``now + reservation_ttl``, or say why not.

        A refresh keeps the peer's one slot (a peer never holds two). A new one is refused when the
        relay holds ``max_reservations``, or ``max_reservations_per_ip`` from ``ip``."""
        res = self.resources
        existing = self._reservations.get(peer)
        if existing is not None and existing.expires > now:
            if existing.ip != ip:  # reconnected from elsewhere: count it against the new IP
                if ip is not None and self._per_ip[ip] >= res.max_reservations_per_ip:
                    return self._refuse(Status.RESERVATION_REFUSED)
                self._drop_ip(existing.ip)
                if ip is not None:
                    self._per_ip[ip] += 1
                existing.ip = ip
            existing.expires = now + res.reservation_ttl
            self._push_expiry(existing)
            return existing
        if existing is not None:
            self.cancel(peer)
        if len(self._reservations) >= res.max_reservations:
            return self._refuse(Status.RESERVATION_REFUSED)
        if ip is not None and self._per_ip[ip] >= res.max_reservations_per_ip:
            return self._refuse(Status.RESERVATION_REFUSED)
        rsvp = Reservation(peer, ip, now + res.reservation_ttl)
        self._reservations[peer] = rsvp
        if ip is not None:
            self._per_ip[ip] += 1
        self._push_expiry(rsvp)
        return rsvp

    def cancel(self, peer: P) -> bool:
        """Drop ``peer``'s reservation (it disconnected); True if it had one."""
        rsvp = self._reservations.pop(peer, None)
        if rsvp is None:
            return False
        self._drop_ip(rsvp.ip)
        return True

    def expire(self, now: float) -> list[P]:
        """Drop every reservation that has run out; returns their peers."""
        gone: list[P] = []
        while self._expiry and self._expiry[0][0] <= now:
            at, _, peer = heapq.heappop(self._expiry)
            rsvp = self._reservations.get(peer)
            if rsvp is not None and rsvp.expires == at:
                self.cancel(peer)
                gone.append(peer)
        return gone

    def next_deadline(self) -> float | None:
        """When the next reservation runs out (None: none held)."""
        while self._expiry:
            at, _, peer = self._expiry[0]
            rsvp = self._reservations.get(peer)
            if rsvp is not None and rsvp.expires == at:
                return at
            heapq.heappop(self._expiry)  # stale: refreshed or cancelled since
        return None

    def _push_expiry(self, rsvp: Reservation[P]) -> None:
        self._seq += 1
        heapq.heappush(self._expiry, (rsvp.expires, self._seq, rsvp.peer))
        # refreshes leave stale entries; rebuild when they outnumber the live ones
        if len(self._expiry) > 2 * len(self._reservations) + 16:
            self._expiry = [(r.expires, i, r.peer) for i, r in enumerate(self._reservations.values())]
            heapq.heapify(self._expiry)

    def _drop_ip(self, ip: str | None) -> None:
        if ip is None:
            return
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]

    def _refuse(self, status: Status) -> Status:
        self.refused[status] += 1
        return status

    # -- circuits -------------------------------------------------------------------------------
    @property
    def circuit_count(self) -> int:
        """Relayed connections open now."""
        return len(self._circuits)

    def circuits_of(self, peer: P) -> int:
        """Open relayed connections ``peer`` is an end of."""
        return self._circuits_per_peer[peer]

    def open_circuit(self, src: P, src_ip: str | None, dst: P, now: float) -> Status | Circuit[P]:
        """Count a new circuit ``src`` -> ``dst``, or say why not: NO_RESERVATION when ``dst`` holds
        no live reservation, RESOURCE_LIMIT_EXCEEDED at any circuit bound (per peer for either end,
        per source IP, in all)."""
        res = self.resources
        if self.reservation(dst, now) is None:
            return self._refuse(Status.NO_RESERVATION)
        if (
            len(self._circuits) >= res.max_total_circuits
            or self._circuits_per_peer[src] >= res.max_circuits
            or self._circuits_per_peer[dst] >= res.max_circuits
            or (src_ip is not None and self._circuits_per_ip[src_ip] >= res.max_circuits_per_ip)
        ):
            return self._refuse(Status.RESOURCE_LIMIT_EXCEEDED)
        self._seq += 1
        circuit = Circuit(self._seq, src, src_ip, dst)
        self._circuits[circuit.ident] = circuit
        self._circuits_per_peer[src] += 1
        self._circuits_per_peer[dst] += 1
        if src_ip is not None:
            self._circuits_per_ip[src_ip] += 1
        return circuit

    def close_circuit(self, circuit: Circuit[P]) -> None:
        """Stop counting ``circuit`` (idempotent)."""
        if self._circuits.pop(circuit.ident, None) is None:
            return
        for peer in (circuit.src, circuit.dst):
            self._circuits_per_peer[peer] -= 1
            if self._circuits_per_peer[peer] <= 0:
                del self._circuits_per_peer[peer]
        if circuit.src_ip is not None:
            self._circuits_per_ip[circuit.src_ip] -= 1
            if self._circuits_per_ip[circuit.src_ip] <= 0:
                del self._circuits_per_ip[circuit.src_ip]
