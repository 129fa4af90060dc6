"""The DCUtR exchange and its timing, sans-IO (no trio, no clock, no randomness of its own).

Roles (libp2p/specs ``relay/DCUtR.md``): over a relayed connection A → B, **B** (the side the relayed
connection came *in* on, the NATed listener) is the :class:`Initiator`: it opens the stream, sends
``CONNECT(its addresses)`` and starts an RTT timer; **A** (:class:`Responder`) answers
``CONNECT(its addresses)``; B sends ``SYNC`` and punches ``RTT/2`` later, while A punches (dials) the
moment SYNC arrives, so both sides' packets leave at about the same time. B redoes the whole exchange
on a fresh stream for each attempt, at most ``max_attempts`` (the spec's 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from multiaddr import Multiaddr

from mycel.protocols.dcutr.messages import CONNECT, SYNC, DCUtRError, DCUtRMessageError, decode, encode

MAX_ATTEMPTS: Final = 3  # the spec: B SHOULD retry twice


@dataclass(frozen=True)
class PunchPlan:
    """What B does after its SYNC: punch ``remote_addrs`` at ``punch_at`` (``now + rtt/2``)."""

    sync: bytes
    """The SYNC message body to send now."""
    remote_addrs: tuple[Multiaddr, ...]
    """A's addresses from its CONNECT."""
    rtt: float
    """Seconds between our CONNECT leaving and A's arriving."""
    punch_at: float
    """When to punch (same clock as ``now``)."""


class Initiator:
    """B's side: one instance per hole punch (all its attempts)."""

    def __init__(self, local_addrs: Sequence[Multiaddr], *, max_attempts: int = MAX_ATTEMPTS) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.local_addrs = tuple(local_addrs)
        self.max_attempts = max_attempts
        self.attempts = 0
        """Attempts started so far."""
        self._sent_at: float | None = None

    @property
    def exhausted(self) -> bool:
        """True once every attempt has been started."""
        return self.attempts >= self.max_attempts

    def connect(self, now: float) -> bytes:
        """Start an attempt: the CONNECT body to send (the RTT timer starts at ``now``).

        Raises :class:`DCUtRError` when all attempts were used or we have no address to offer."""
        if self.exhausted:
            raise DCUtRError(f"all {self.max_attempts} hole punch attempts used")
        if not self.local_addrs:
            raise DCUtRError("no public address of ours to offer")
        self.attempts += 1
        self._sent_at = now
        return encode(CONNECT, self.local_addrs)

    def on_connect(self, body: bytes, now: float) -> PunchPlan:
        """A's CONNECT arrived: the SYNC to send and when to punch. :class:`DCUtRMessageError` if the
        body is not a CONNECT; :class:`DCUtRError` if it names no address or we sent no CONNECT."""
        if self._sent_at is None:
            raise DCUtRMessageError("a CONNECT answer without our CONNECT")
        addrs = decode(body, CONNECT)
        rtt = max(0.0, now - self._sent_at)
        self._sent_at = None
        if not addrs:
            raise DCUtRError("the peer's CONNECT names no usable address")
        return PunchPlan(sync=encode(SYNC), remote_addrs=tuple(addrs), rtt=rtt, punch_at=now + rtt / 2)


class Responder:
    """A's side of one exchange (one stream): CONNECT in → CONNECT out; SYNC in → dial."""

    def __init__(self, local_addrs: Sequence[Multiaddr]) -> None:
        self.local_addrs = tuple(local_addrs)
        self.remote_addrs: tuple[Multiaddr, ...] = ()
        self._state = "connect"

    def on_connect(self, body: bytes) -> bytes:
        """B's CONNECT arrived: our CONNECT answer. Raises :class:`DCUtRMessageError` when it is not a
        CONNECT or comes twice, :class:`DCUtRError` when it names no usable address or we have none."""
        if self._state != "connect":
            raise DCUtRMessageError("a second CONNECT on one stream")
        addrs = decode(body, CONNECT)
        if not addrs:
            raise DCUtRError("the peer's CONNECT names no usable address")
        if not self.local_addrs:
            raise DCUtRError("no public address of ours to offer")
        self.remote_addrs = tuple(addrs)
        self._state = "sync"
        return encode(CONNECT, self.local_addrs)

    def on_sync(self, body: bytes) -> tuple[Multiaddr, ...]:
        """B's SYNC arrived: the addresses to dial now."""
        if self._state != "sync":
            raise DCUtRMessageError("SYNC before CONNECT")
        decode(body, SYNC)
        self._state = "done"
        return self.remote_addrs


__all__ = ["MAX_ATTEMPTS", "Initiator", "PunchPlan", "Responder"]
