"""The DCUtR service (``/libp2p/dcutr``): turn a relayed connection into a direct one by hole punching.

``DCUtR()`` goes in ``HostConfig.services`` of both peers. When a *limited* (relayed) connection comes
in (we are B, the NATed listener with a reservation), the service runs the exchange of
:mod:`mycel.protocols.dcutr.core` on a ``/libp2p/dcutr`` stream over it and punches: over TCP a
simultaneous open from our listen port (``TCP(reuse_port=True)`` is needed on both sides), over QUIC
random UDP datagrams from our listen socket toward A while A dials us as the QUIC client. The peer A
dials B's addresses with ``host.dial_direct`` as soon as SYNC arrives. Up to ``max_attempts`` (3)
attempts, each a fresh stream and exchange; once a direct connection to the peer is registered (on
either side of it), B closes the relayed connections to that peer after ``relay_close_grace``.

Addresses offered in CONNECT: ``public_addrs`` when set (in the constructor or later with
:meth:`DCUtR.set_public_addrs`, e.g. from identify's observed address), otherwise the host's advertised
addresses without relay, loopback or unspecified ones (observed addresses confirmed by the host's
address manager are among them).

Bounds: at most ``max_concurrent`` hole punches at once (further relayed connections are left relayed,
logged) and as many inbound exchanges (the handler's concurrency limit: beyond it streams are reset);
each exchange within ``exchange_timeout``; messages at most 4 KiB; :attr:`DCUtR.results` keeps the last
``max_results`` outcomes. Not done: go's "connection reversal" first (B dialing A's public addresses
directly before punching) — behind NAT both sides are unreachable, and a failed dial costs a timeout.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import trio
from multiaddr import Multiaddr

from mycel.core.abc import Connection, Direction, MuxedStream
from mycel.core.addrs import as_multiaddr, split_peer_id
from mycel.core.errors import DialError, MycelError, NegotiationError
from mycel.core.peer_id import PeerId
from mycel.protocols.dcutr.core import MAX_ATTEMPTS, Initiator, PunchPlan, Responder
from mycel.protocols.dcutr.messages import PROTOCOL, DCUtRError, read, write
from mycel.service import Service, ServiceHost, StreamHandler

log = logging.getLogger("mycel.protocols.dcutr")

_STREAM_ERRORS = (MycelError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError)


@runtime_checkable
class HolePunching(Protocol):
    """A transport that can punch from its listen socket (TCP with ``reuse_port``, QUIC)."""

    def can_hole_punch(self, addr: Multiaddr) -> bool:
        """Whether :meth:`hole_punch` can work toward ``addr``."""
        ...

    async def hole_punch(self, addr: Multiaddr, *, timeout: float) -> bool:
        """B's side of the punch toward ``addr`` (see TCP.hole_punch / QUIC.hole_punch)."""
        ...


@dataclass(frozen=True)
class HolePunchResult:
    """The outcome of one hole punch with ``peer`` (kept in :attr:`DCUtR.results`)."""

    peer: PeerId
    initiator: bool
    """True on B (we ran the attempts), False on A (we answered one exchange and dialed)."""
    success: bool
    """Whether a direct connection came up."""
    attempts: int
    """Exchanges started (B) — at most ``max_attempts``; 1 on A."""
    relay_rtt: float | None
    """The last CONNECT round trip over the relay (B), seconds."""
    elapsed: float
    """Seconds from the start (B: the relayed connection's arrival; A: SYNC) to the direct connection or
    the give-up."""
    addr: Multiaddr | None
    """The direct connection's remote address on success."""
    error: str | None
    """Why it failed (None on success)."""


def _usable(addr: Multiaddr) -> bool:
    """An address worth offering: not relayed, not loopback / unspecified / link-local."""
    base, _ = split_peer_id(addr)
    for proto, value in base.items():
        if proto.name == "p2p-circuit":
            return False
        if proto.name in ("ip4", "ip6"):
            text = str(value)
            if text.startswith(("127.", "0.", "169.254.")) or text in ("::", "::1") or text.startswith("fe80:"):
                return False
    return True


def _host_transports(host: ServiceHost) -> tuple[Any, ...]:
    """The host's own transport objects. :class:`~mycel.service.ServiceHost` does not list them, the
    concrete host (behind the service's view of it) does."""
    inner = getattr(host, "_host", host)
    return tuple(getattr(inner, "transports", ()))


class DCUtR(Service):
    """Direct Connection Upgrade through Relay: hole punch relayed connections into direct ones."""

    def __init__(
        self,
        *,
        public_addrs: Sequence[Multiaddr | str] = (),
        max_attempts: int = MAX_ATTEMPTS,
        attempt_timeout: float = 5.0,
        exchange_timeout: float = 10.0,
        relay_close_grace: float = 1.0,
        max_concurrent: int = 16,
        max_results: int = 256,
    ) -> None:
        if max_attempts < 1 or max_concurrent < 1 or max_results < 1:
            raise ValueError("max_attempts, max_concurrent and max_results must be >= 1")
        self.public_addrs = [as_multiaddr(a) for a in public_addrs]
        self.max_attempts = max_attempts
        self.attempt_timeout = attempt_timeout
        self.exchange_timeout = exchange_timeout
        self.relay_close_grace = relay_close_grace
        self.max_concurrent = max_concurrent
        self.results: deque[HolePunchResult] = deque(maxlen=max_results)
        """The last ``max_results`` outcomes, oldest first."""
        self.stats: dict[str, int] = {"started": 0, "succeeded": 0, "failed": 0, "skipped": 0, "answered": 0}
        self._active: set[PeerId] = set()
        self._direct: dict[PeerId, trio.Event] = {}  # B: set when a direct connection to that peer opens
        self._result_added = trio.Event()

    def clone(self) -> DCUtR:
        """A fresh copy with the same settings and no state."""
        return DCUtR(
            public_addrs=self.public_addrs,
            max_attempts=self.max_attempts,
            attempt_timeout=self.attempt_timeout,
            exchange_timeout=self.exchange_timeout,
            relay_close_grace=self.relay_close_grace,
            max_concurrent=self.max_concurrent,
            max_results=self.results.maxlen or 256,
        )

    def handlers(self) -> Mapping[str, StreamHandler]:
        return {}  # installed in run(), where the handler gets the host and its concurrency bound

    async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async def handle(stream: MuxedStream) -> None:
            await self._respond(host, stream)

        host.set_stream_handler(PROTOCOL, handle, max_concurrent=self.max_concurrent)
        task_status.started()

    def set_public_addrs(self, addrs: Sequence[Multiaddr | str]) -> None:
        """Offer ``addrs`` in CONNECT from now on (e.g. the address identify says a public peer sees)."""
        self.public_addrs = [as_multiaddr(a) for a in addrs]

    def local_addrs(self, host: ServiceHost) -> list[Multiaddr]:
        """The addresses we offer: :attr:`public_addrs`, or the advertised ones worth offering."""
        if self.public_addrs:
            return list(self.public_addrs)
        return [a for a in host.advertised_addrs if _usable(a)]

    async def wait_result(
        self, peer: PeerId | None = None, *, count: int = 1, initiator: bool | None = None
    ) -> HolePunchResult:
        """Wait until :attr:`results` holds ``count`` outcomes (with ``peer``, of that role when given)
        and return the latest of them (A records one per exchange it answered; B one per hole punch)."""
        while True:
            matching = [
                r
                for r in self.results
                if (peer is None or r.peer == peer) and (initiator is None or r.initiator is initiator)
            ]
            if len(matching) >= count:
                return matching[-1]
            await self._result_added.wait()

    def _record(self, result: HolePunchResult) -> None:
        self.results.append(result)
        self.stats["succeeded" if result.success else "failed"] += 1
        self._result_added.set()
        self._result_added = trio.Event()

    # -- hooks ------------------------------------------------------------------------------------
    def connection_opened(self, host: ServiceHost, conn: Connection) -> None:
        peer = conn.remote_peer
        if not conn.limited:
            waiter = self._direct.get(peer)
            if waiter is not None:
                waiter.set()
            return
        if conn.direction is not Direction.INBOUND or peer in self._active:
            return  # A waits for B's stream; one hole punch per peer at a time
        if any(not c.limited for c in host.connections(peer)):
            return
        if len(self._active) >= self.max_concurrent:
            self.stats["skipped"] += 1
            log.info("dcutr: not hole punching with %s: %d hole punches running", peer, len(self._active))
            return
        self._active.add(peer)
        self._direct[peer] = trio.Event()
        host.spawn(self._initiate, host, conn)

    # -- B: the initiator -------------------------------------------------------------------------
    async def _initiate(self, host: ServiceHost, relayed: Connection) -> None:
        peer = relayed.remote_peer
        start = trio.current_time()
        self.stats["started"] += 1
        core = Initiator(self.local_addrs(host), max_attempts=self.max_attempts)
        direct = self._direct[peer]
        rtt: float | None = None
        error: str | None = None
        try:
            while not core.exhausted and not direct.is_set() and not relayed.is_closed:
                try:
                    plan = await self._exchange(host, relayed, core)
                except NegotiationError as exc:
                    error = f"the peer does not speak {PROTOCOL}: {exc}"
                    break
                except DCUtRError as exc:
                    error = str(exc)
                    if "no public address" in error or "no usable address" in error:
                        break
                    log.info("dcutr: attempt %d with %s failed: %s", core.attempts, peer, exc)
                    continue
                except _STREAM_ERRORS as exc:
                    error = f"exchange failed: {exc!r}"
                    log.info("dcutr: attempt %d with %s: exchange failed: %r", core.attempts, peer, exc)
                    continue
                rtt = plan.rtt
                error = await self._punch(host, plan, direct)
                if error is not None:
                    log.info("dcutr: attempt %d with %s failed: %s", core.attempts, peer, error)
        finally:
            self._active.discard(peer)
            self._direct.pop(peer, None)
        elapsed = trio.current_time() - start
        winner = next((c for c in host.connections(peer) if not c.limited), None)
        if winner is None:
            log.info("dcutr: no direct connection to %s after %d attempts: %s", peer, core.attempts, error)
            self._record(HolePunchResult(peer, True, False, core.attempts, rtt, elapsed, None, error))
            return
        log.info(
            "dcutr: direct connection to %s at %s after %d attempt(s), %.3f s (relay RTT %s)",
            peer, winner.remote_addr, core.attempts, elapsed, f"{rtt * 1000:.1f} ms" if rtt is not None else "-",
        )
        self._record(HolePunchResult(peer, True, True, core.attempts, rtt, elapsed, winner.remote_addr, None))
        await trio.sleep(self.relay_close_grace)  # streams opened on the relayed connection just now may finish
        for conn in host.connections(peer):
            if conn.limited:
                await conn.aclose()

    async def _exchange(self, host: ServiceHost, relayed: Connection, core: Initiator) -> PunchPlan:
        """One CONNECT / CONNECT / SYNC exchange on a fresh stream over the relayed connection."""
        with trio.fail_after(self.exchange_timeout):
            stream = await host.new_stream(relayed.remote_peer, [PROTOCOL], conn=relayed, allow_limited=True)
            try:
                await write(stream, core.connect(trio.current_time()))
                plan = core.on_connect(await read(stream), trio.current_time())
                await write(stream, plan.sync)
                await stream.aclose()
            except BaseException:
                with trio.CancelScope(shield=True):
                    await stream.reset()
                raise
        return plan

    async def _punch(self, host: ServiceHost, plan: PunchPlan, direct: trio.Event) -> str | None:
        """Wait until ``plan.punch_at``, punch every address we can, wait for the direct connection."""
        punchers = [t for t in _host_transports(host) if isinstance(t, HolePunching)]
        targets = [(t, a) for a in plan.remote_addrs for t in punchers if t.can_hole_punch(a)]
        if not targets:
            return f"none of {[str(a) for a in plan.remote_addrs]} can be punched by our transports"
        await trio.sleep_until(plan.punch_at)
        with trio.move_on_after(self.attempt_timeout):
            async with trio.open_nursery() as nursery:
                for transport, addr in targets:
                    nursery.start_soon(self._punch_one, transport, addr)
                await direct.wait()
                nursery.cancel_scope.cancel()
        return None if direct.is_set() else f"no direct connection within {self.attempt_timeout} s"

    async def _punch_one(self, transport: HolePunching, addr: Multiaddr) -> None:
        try:
            await transport.hole_punch(addr, timeout=self.attempt_timeout)
        except (MycelError, OSError) as exc:
            log.debug("dcutr: punch toward %s failed: %s", addr, exc)

    # -- A: the responder -------------------------------------------------------------------------
    async def _respond(self, host: ServiceHost, stream: MuxedStream) -> None:
        conn = stream.connection
        peer = conn.remote_peer
        core = Responder(self.local_addrs(host))
        try:
            with trio.fail_after(self.exchange_timeout):
                await write(stream, core.on_connect(await read(stream)))
                targets = core.on_sync(await read(stream))
        except (DCUtRError, trio.TooSlowError) as exc:
            log.info("dcutr: exchange from %s refused: %s", peer, exc)
            await stream.reset()
            return
        await stream.aclose()
        self.stats["answered"] += 1
        start = trio.current_time()
        dialable = [a for a in targets if any(t.can_dial(a) for t in _host_transports(host))]
        winner: list[Connection] = []
        errors: list[str] = []

        async def dial(addr: Multiaddr, scope: trio.CancelScope) -> None:
            try:
                new = await host.dial_direct(peer, addr)
            except (DialError, MycelError, OSError) as exc:
                errors.append(f"{addr}: {exc}")
                return
            if winner:  # another address won meanwhile: one direct connection is enough
                await new.aclose()
                return
            winner.append(new)
            scope.cancel()

        with trio.move_on_after(self.attempt_timeout):
            async with trio.open_nursery() as nursery:
                for addr in dialable:
                    nursery.start_soon(dial, addr, nursery.cancel_scope)
        elapsed = trio.current_time() - start
        if winner:
            log.info("dcutr: direct connection to %s at %s (%.3f s after SYNC)", peer, winner[0].remote_addr, elapsed)
            self._record(HolePunchResult(peer, False, True, 1, None, elapsed, winner[0].remote_addr, None))
        else:
            if errors:
                error = "; ".join(errors)
            elif dialable:
                error = f"no answer from {[str(a) for a in dialable]} within {self.attempt_timeout} s"
            else:
                error = f"no dialable address in {[str(a) for a in targets]}"
            log.info("dcutr: dialing %s after SYNC failed: %s", peer, error)
            self._record(HolePunchResult(peer, False, False, 1, None, elapsed, None, error))


__all__ = ["DCUtR", "HolePunchResult", "HolePunching"]
