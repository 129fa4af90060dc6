"""The circuit relay v2 service (``/libp2p/circuit/relay/0.2.0/hop``): reservations and relayed circuits.

``CircuitRelay(resources=RelayResources(...))`` in ``HostConfig.services`` makes a host a relay. A peer
sends RESERVE and gets a reservation (``reservation_ttl``, a signed voucher, the relay's addresses and
the per-circuit limit); another peer sends CONNECT naming a reserved peer, the relay opens
``/libp2p/circuit/relay/0.2.0/stop`` to it on the connection the reservation came over, and once the
target answers OK the two streams are spliced: bytes are copied both ways, ``buffer_size`` at a time,
until either side ends, a direction has carried ``limit_data`` bytes or ``limit_duration`` has passed
(then both streams are reset, as go does).

The bookkeeping and every bound live in the sans-IO :class:`~mycel.protocols.relay.core.RelayCore`;
this module is the trio driver. Hostile input (malformed or oversized messages, CONNECT to an
unreserved peer, RESERVE or CONNECT over a relayed connection, floods) gets the status the protocol
defines, is logged with the peer and the reason, and closes only its own stream.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio
from multiaddr import Multiaddr

from mycel.core.abc import Connection, ConnectionLimit, MuxedStream
from mycel.core.addrs import with_peer_id
from mycel.core.errors import MycelError, ProtocolViolation
from mycel.protocols.relay.config import RelayResources
from mycel.protocols.relay.core import Circuit, RelayCore
from mycel.protocols.relay.messages import (
    HOP_PROTOCOL,
    STOP_PROTOCOL,
    RelayMessageError,
    Status,
    limit_to_pb,
    parse_peer,
    pb_status,
    read_hop,
    read_stop,
    status_of,
    seal_voucher,
    write_message,
)
from mycel.protocols.relay.pb import circuit_pb2
from mycel.service import Service, ServiceHost, not_running

if TYPE_CHECKING:
    from mycel.core.peer_id import PeerId

log = logging.getLogger("mycel.protocols.relay")

_HOP = circuit_pb2.HopMessage
_STOP = circuit_pb2.StopMessage
_STREAM_ERRORS = (MycelError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError)


def is_relayed(conn: Connection) -> bool:
    """True if ``conn`` came through a relay (its remote address has ``/p2p-circuit``)."""
    return any(p.name == "p2p-circuit" for p in conn.remote_addr.protocols())


def remote_ip(conn: Connection) -> str | None:
    """The IP the connection comes from (None for addresses without one, like ``/memory``)."""
    for proto, value in conn.remote_addr.items():
        if proto.name in ("ip4", "ip6"):
            return str(value)
    return None


class CircuitRelay(Service):
    """A circuit relay v2 *relay* (hop service). See the module docstring.

    ``wall_clock`` gives unix seconds for the ``expire`` field and the voucher (tests pass a fake);
    expiry itself runs on the trio clock.
    """

    def __init__(
        self, resources: RelayResources | None = None, *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.resources = resources or RelayResources()
        """The bounds and limits this relay grants."""
        self.wall_clock = wall_clock
        self._core: RelayCore[PeerId] | None = None
        self._host: ServiceHost | None = None
        self._hop_active: dict[PeerId, int] = {}
        self._wake = trio.Event()
        self._circuit_closed: trio.Event | None = None
        self.bytes_relayed = 0
        """Bytes copied through this relay, both directions, all circuits."""
        self.circuits_cut = 0
        """Circuits reset because they reached their data or duration limit."""
        self.refusals: Counter[str] = Counter()
        """Requests refused or failed so far, by kind (``malformed``, ``reservation refused``, ...)."""

    def _refused(self, kind: str, fmt: str, *args: object) -> None:
        """Count a refusal; log it (peer and reason are in ``fmt``) the 1st, 2nd, 4th, 8th... time of its
        kind, so a flood leaves a few lines, not one per message."""
        self.refusals[kind] += 1
        count = self.refusals[kind]
        if count & (count - 1) == 0:
            log.info("relay: " + fmt + " (%s #%d)", *args, kind, count)

    @property
    def core(self) -> RelayCore[PeerId]:
        """The reservation and circuit tables (raises ServiceNotRunning outside a running host)."""
        if self._core is None:
            raise not_running(self)
        return self._core

    async def wait_circuits_at_most(self, count: int) -> None:
        """Return once at most ``count`` circuits are open (tests and benchmarks wait with it)."""
        while self.core.circuit_count > count:
            if self._circuit_closed is None:
                self._circuit_closed = trio.Event()
            await self._circuit_closed.wait()

    def limit(self) -> ConnectionLimit:
        """The limit every relayed connection gets."""
        res = self.resources
        return ConnectionLimit(res.limit_duration, res.limit_data)

    async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._host = host
        self._core = RelayCore(self.resources)
        # a hop stream lives as long as its circuit: bound them by circuits plus exchanges in progress
        host.set_stream_handler(
            HOP_PROTOCOL,
            self._handle_hop,
            max_concurrent=self.resources.max_total_circuits + self.resources.max_reservations,
        )
        task_status.started()
        await self._expire_loop()

    async def _expire_loop(self) -> None:
        core = self.core
        while True:
            self._wake = trio.Event()
            deadline = core.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await self._wake.wait()
                continue
            for peer in core.expire(trio.current_time()):
                log.debug("reservation of %s expired", peer)

    def peer_disconnected(self, host: ServiceHost, peer: PeerId) -> None:
        """A reservation lasts only while its peer stays connected (go drops it on disconnect)."""
        if self._core is not None and self._core.cancel(peer):
            log.debug("reservation of %s dropped: it disconnected", peer)

    # -- hop ------------------------------------------------------------------------------------
    async def _handle_hop(self, stream: MuxedStream) -> None:
        conn = stream.connection
        peer = conn.remote_peer
        active = self._hop_active.get(peer, 0)
        if active >= self.resources.max_hop_streams_per_peer:
            self._refused("hop flood", "%s has %d hop streams in progress; resetting a new one", peer, active)
            await stream.reset()
            return
        self._hop_active[peer] = active + 1
        released = False

        def release() -> None:  # the exchange is over (a spliced circuit counts as a circuit, not here)
            nonlocal released
            if released:
                return
            released = True
            left = self._hop_active[peer] - 1
            if left:
                self._hop_active[peer] = left
            else:
                del self._hop_active[peer]

        try:
            await self._serve_hop(stream, conn, peer, release)
        finally:
            release()

    async def _serve_hop(
        self, stream: MuxedStream, conn: Connection, peer: PeerId, release: Callable[[], None]
    ) -> None:
        try:
            with trio.fail_after(self.resources.stream_timeout):
                msg = await read_hop(stream)
        except ProtocolViolation as exc:
            self._refused("malformed", "malformed hop message from %s: %s", peer, exc)
            await _answer_hop(stream, Status.MALFORMED_MESSAGE)
            return
        except trio.TooSlowError:
            self._refused("silent", "%s sent no hop message within %.0f s", peer, self.resources.stream_timeout)
            return
        if msg.type == _HOP.RESERVE:
            await self._reserve(stream, conn, peer)
        elif msg.type == _HOP.CONNECT:
            await self._connect(stream, conn, peer, msg, release)
        else:
            self._refused("unexpected", "unexpected hop message (type %d) from %s", msg.type, peer)
            await _answer_hop(stream, Status.UNEXPECTED_MESSAGE)

    async def _reserve(self, stream: MuxedStream, conn: Connection, peer: PeerId) -> None:
        host, core = self._host, self.core
        assert host is not None
        if is_relayed(conn):
            self._refused("relayed", "refused a reservation from %s over a relayed connection", peer)
            await _answer_hop(stream, Status.PERMISSION_DENIED)
            return
        got = core.reserve(peer, remote_ip(conn), trio.current_time())
        if isinstance(got, Status):
            self._refused(got.name, "refused a reservation from %s (%d held)", peer, core.reservation_count)
            await _answer_hop(stream, got)
            return
        self._wake.set()
        expire = int(self.wall_clock() + self.resources.reservation_ttl)
        reply = _HOP(type=_HOP.STATUS, status=pb_status(Status.OK))
        reply.reservation.expire = expire
        for addr in self.relay_addrs():
            reply.reservation.addrs.append(addr.to_bytes())
        reply.reservation.voucher = seal_voucher(host.identity.private_key, host.peer_id, peer, expire)
        limit_to_pb(self.limit(), reply.limit)
        with contextlib.suppress(*_STREAM_ERRORS):
            await write_message(stream, reply)
            log.debug("relay: reservation for %s until %d", peer, expire)

    def relay_addrs(self) -> list[Multiaddr]:
        """Our addresses as a reservation announces them: ``<addr>/p2p/<relay>``, no relayed ones."""
        host = self._host
        assert host is not None
        return [
            with_peer_id(a, host.peer_id)
            for a in host.advertised_addrs
            if not any(p.name == "p2p-circuit" for p in a.protocols())
        ]

    async def _connect(
        self,
        stream: MuxedStream,
        conn: Connection,
        src: PeerId,
        msg: circuit_pb2.HopMessage,
        release: Callable[[], None],
    ) -> None:
        host, core = self._host, self.core
        assert host is not None
        dst = parse_peer(msg.peer, "HopMessage CONNECT")  # (checked by decode_hop already)
        if is_relayed(conn):
            self._refused("relayed", "refused CONNECT from %s over a relayed connection", src)
            await _answer_hop(stream, Status.PERMISSION_DENIED)
            return
        got = core.open_circuit(src, remote_ip(conn), dst, trio.current_time())
        if isinstance(got, Status):
            self._refused(got.name, "refused CONNECT %s -> %s", src, dst)
            await _answer_hop(stream, got)
            return
        circuit: Circuit[PeerId] = got
        try:
            target = await self._open_stop(src, dst)
            if target is None:
                await _answer_hop(stream, Status.CONNECTION_FAILED)
                return
            try:
                reply = _HOP(type=_HOP.STATUS, status=pb_status(Status.OK))
                limit_to_pb(self.limit(), reply.limit)
                try:
                    await write_message(stream, reply)
                except _STREAM_ERRORS as exc:
                    log.info("relay: %s left before its circuit to %s opened: %s", src, dst, exc)
                    return
                log.debug("relay: circuit %s -> %s open", src, dst)
                release()
                await self._splice(stream, target, src, dst)
            finally:
                with trio.CancelScope(shield=True), contextlib.suppress(*_STREAM_ERRORS):
                    await target.aclose()
        finally:
            core.close_circuit(circuit)
            if self._circuit_closed is not None:
                self._circuit_closed.set()
                self._circuit_closed = None

    async def _open_stop(self, src: PeerId, dst: PeerId) -> MuxedStream | None:
        """Open the stop stream to ``dst`` and have it accept ``src``; None (logged) if it does not."""
        host = self._host
        assert host is not None
        conns = [c for c in host.connections(dst) if not is_relayed(c)]
        if not conns:
            self._refused("target unreachable", "CONNECT %s -> %s: no direct connection to the target", src, dst)
            return None
        try:
            with trio.fail_after(self.resources.connect_timeout):
                target = await host.new_stream(dst, [STOP_PROTOCOL], conn=conns[0], allow_limited=True)
        except _STREAM_ERRORS as exc:
            self._refused("target unreachable", "CONNECT %s -> %s: stop stream failed: %s", src, dst, exc)
            return None
        try:
            with trio.fail_after(self.resources.connect_timeout):
                request = _STOP(type=_STOP.CONNECT)
                request.peer.id = src.to_bytes()
                limit_to_pb(self.limit(), request.limit)
                await write_message(target, request)
                answer = await read_stop(target)
        except _STREAM_ERRORS as exc:
            self._refused("target failed", "CONNECT %s -> %s: the target's stop answer failed: %s", src, dst, exc)
            await _reset_quietly(target)
            return None
        if answer.type != _STOP.STATUS or status_of(answer) is not Status.OK:
            status = status_of(answer)
            self._refused("target refused", "CONNECT %s -> %s: the target refused (%s)", src, dst, status.name)
            await _reset_quietly(target)
            return None
        return target

    async def _splice(self, a: MuxedStream, b: MuxedStream, src: PeerId, dst: PeerId) -> None:
        """Copy both ways until both ends finished, a direction carried ``limit_data`` bytes or
        ``limit_duration`` passed (then both streams are reset)."""
        res = self.resources
        cut: list[str] = []  # why the relay cut the circuit (a limit), or "" when a side broke it
        async with trio.open_nursery() as nursery:
            nursery.cancel_scope.deadline = trio.current_time() + (res.limit_duration or math.inf)
            nursery.start_soon(self._copy, a, b, cut, nursery.cancel_scope)
            nursery.start_soon(self._copy, b, a, cut, nursery.cancel_scope)
        if cut and not cut[0]:  # a side reset or vanished: both streams were reset already
            return
        timed_out = nursery.cancel_scope.cancelled_caught and not cut
        if cut or timed_out:
            self.circuits_cut += 1
            log.info(
                "relay: circuit %s -> %s cut: %s", src, dst, cut[0] if cut else f"{res.limit_duration} s passed"
            )
            with trio.CancelScope(shield=True):
                await _reset_quietly(a)
                await _reset_quietly(b)

    async def _copy(self, src: MuxedStream, dst: MuxedStream, cut: list[str], scope: trio.CancelScope) -> None:
        size = self.resources.buffer_size
        budget = self.resources.limit_data
        left = math.inf if budget is None else budget
        try:
            while True:
                data = await src.receive_some(size)
                if not data:
                    with contextlib.suppress(*_STREAM_ERRORS):
                        await dst.send_eof()
                    return
                if len(data) > left:
                    data = data[: int(left)]
                await dst.send_all(data)
                self.bytes_relayed += len(data)
                left -= len(data)
                if left <= 0:
                    cut.append(f"{budget} bytes relayed in one direction")
                    scope.cancel()
                    return
        except _STREAM_ERRORS as exc:  # one side reset or vanished: the circuit is over for both
            log.debug("relay: circuit side ended: %r", exc)
            cut.append("")
            scope.cancel()
            with trio.CancelScope(shield=True):
                await _reset_quietly(src)
                await _reset_quietly(dst)


async def _answer_hop(stream: MuxedStream, status: Status) -> None:
    with contextlib.suppress(*_STREAM_ERRORS):
        await write_message(stream, _HOP(type=_HOP.STATUS, status=pb_status(status)))


async def _reset_quietly(stream: MuxedStream) -> None:
    with contextlib.suppress(*_STREAM_ERRORS):
        await stream.reset()


__all__ = ["CircuitRelay", "is_relayed", "remote_ip"]
