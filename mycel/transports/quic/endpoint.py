"""One UDP socket shared by every QUIC connection (inbound and outbound) that uses its port.

Datagrams are demultiplexed by destination connection id. The socket has no task of its own: every
party that needs it to make progress (``Connection.run()``, a pending dial, ``Listener.accept()``)
calls :meth:`UDPEndpoint.drive`, and one of them at a time (the *driver*) does the I/O in its own
task — it reads datagrams in batches, applies them (the connections send what is urgent: handshake
flights, a bulk transfer's ACKs, data that fills datagrams), fires the connections' timers from one
heap, and, once the tasks a batch woke are all blocked again, sends the *deferred* output: small
writes, ACKs and credit, so that a request's answer and its ACK share a datagram. When the driver's
owner stops, another waiting party takes over. Sending is done inline (non-blocking ``sendto``, with
UDP GSO batching on Linux); only datagrams the kernel refuses (EAGAIN) wait in a bounded backlog.
On Linux the socket also asks for UDP GRO: the kernel hands over a run of datagrams from one sender
in one buffer (one system call for up to 64 datagrams), which we split at the segment size it reports.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import math
import os
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import trio
from aioquic.buffer import Buffer, BufferReadError  # type: ignore[attr-defined]
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.packet import (
    QuicPacketType,
    QuicProtocolVersion,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler
from multiaddr import Multiaddr
from trio.lowlevel import ParkingLot

from mycel.core.addrs import ip_multiaddr
from mycel.core.varint import encode_uvarint
from mycel.network.limits import Refusal, SourceLimiter, SourceLimits, Ticket, WarningThrottle

if TYPE_CHECKING:
    from mycel.transports.quic.connection import QUICConnection

__all__ = ["UDPEndpoint", "NetworkAddress", "CID_LENGTH", "quic_multiaddr"]

log = logging.getLogger("mycel.transports.quic")

NetworkAddress = tuple[Any, ...]  # (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6

CID_LENGTH: Final = 8  # length of every connection id we issue (short headers carry no length)
SUPPORTED_VERSIONS: Final[list[int]] = [int(QuicProtocolVersion.VERSION_1)]
RECEIVE_BUFFER: Final = 65536
RECEIVE_BATCH: Final = 256  # datagrams read per wakeup (then the woken tasks run)
PROCESS_EVERY: Final = 64  # datagrams read before the connections apply them (and ACK a bulk transfer)
GRO_AFTER: Final = 16  # datagrams read in one wakeup that switch UDP GRO on (a bulk transfer)
SEND_BACKLOG: Final = 4096  # datagrams waiting for socket buffer space; beyond this they are dropped
SOCKET_BUFFER: Final = 4 * 1024 * 1024  # SO_RCVBUF/SO_SNDBUF asked for (the kernel may cap it)
TIMER_GRANULARITY: Final = 0.001  # a timer that is still due after firing waits this long (no spinning)
# A deferred flush (small writes, ACKs, credit) waits until every task is blocked, so that what the
# tasks woken by one batch of datagrams write goes out together; in a program that never idles, no
# longer than this.
FLUSH_DELAY: Final = 0.0005
GSO_MAX_SEGMENTS: Final = 64  # Linux UDP_MAX_SEGMENTS
GSO_MAX_BYTES: Final = 65000
_SOL_UDP: Final = 17
_UDP_SEGMENT: Final = 103
_UDP_GRO: Final = 104
_GRO_ANCILLARY: Final = socket.CMSG_SPACE(4)  # one int: the segment size
_QUIC_V1_CODE: Final = encode_uvarint(0x01CD)
_V1: Final = int(QuicProtocolVersion.VERSION_1).to_bytes(4, "big")
MIN_INITIAL_DCID: Final = 8  # a client's first Initial has a destination id of at least 8 bytes (RFC 9000 7.2)


class _Pending:
    """What a pending inbound handshake's ticket holds: its connection (closed if it is evicted)."""

    __slots__ = ("conn",)

    def __init__(self, conn: QUICConnection) -> None:
        self.conn = conn


def _gro_segment(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The segment size in a UDP_GRO control message (0 if there is none)."""
    for level, kind, value in ancillary:
        if level == _SOL_UDP and kind == _UDP_GRO and len(value) >= 4:
            return int.from_bytes(value[:4], sys.byteorder)
    return 0


def quic_multiaddr(host: str, port: int) -> Multiaddr:
    """``/ip4|ip6/<host>/udp/<port>/quic-v1``."""
    return Multiaddr(ip_multiaddr(host, port, "udp").to_bytes() + _QUIC_V1_CODE)


class UDPEndpoint:
    """A bound UDP socket and the QUIC connections that use it."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        max_pending_handshakes: int,
        on_close: Callable[[UDPEndpoint], None],
        gso: bool = True,
        gro: bool = True,
        source_limits: SourceLimits | None = None,
        retry_threshold: int | None = None,
    ) -> None:
        sock.setblocking(False)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            except OSError:
                pass
        self._sock = sock
        self.family = sock.family
        name = sock.getsockname()
        self.local_sockaddr: NetworkAddress = name
        self.local_multiaddr = quic_multiaddr(name[0], name[1])
        self._max_pending = max_pending_handshakes
        # New clients' Initials are admitted per source and into a table of max_pending_handshakes
        # (see mycel.network.limits) before any connection state exists; past retry_threshold
        # handshakes in progress, only after a stateless Retry proved the client's address.
        self._limiter = SourceLimiter(source_limits or SourceLimits(), max_pending_handshakes)
        self._tickets: dict[QUICConnection, Ticket] = {}
        self._retry_threshold = retry_threshold
        self._retry: QuicRetryTokenHandler | None = None  # made at the first Retry
        self._refusals = WarningThrottle(log)
        self._on_close = on_close
        self._gso = gso and sys.platform == "linux"
        # UDP GRO is switched on at the first busy wakeup (see _enable_gro), not here: the first GRO
        # socket on a machine costs the kernel ~0.15 ms to switch on, which a dial should not pay.
        self._gro_wanted = gro and sys.platform == "linux"
        self._gro = False  # the kernel coalesces received datagrams (we asked and it agreed)
        # Our connection ids -> connection: ACTIVE_CONNECTION_IDS per connection (+1 while handshaking).
        self._by_cid: dict[bytes, QUICConnection] = {}
        self._conns: set[QUICConnection] = set()
        # Inbound connections still handshaking: at max_pending_handshakes new Initials are dropped.
        self._pending_inbound: set[QUICConnection] = set()
        self._original_cids: dict[QUICConnection, bytes] = {}
        self.listener: Any = None  # the QUICListener accepting on this endpoint, if any
        self._dirty: dict[QUICConnection, None] = {}  # received datagrams in the current batch
        self._deferred: dict[QUICConnection, None] = {}  # output waits for the deferred flush
        self._driver: trio.lowlevel.Task | None = None
        self._driver_lot = ParkingLot()
        self._heap: list[tuple[float, int, QUICConnection]] = []
        self._seq = itertools.count()
        self._wake_scope: trio.CancelScope | None = None  # the driver serves the socket in it
        self._settle_deadline = math.inf  # while the driver waits for idle (see _serve): its bound
        self._waiting = False  # the driver waits for the socket (a flush request must wake it)
        # Datagrams the kernel refused (EAGAIN), oldest first; beyond SEND_BACKLOG new ones are dropped.
        self._backlog: deque[tuple[bytes, NetworkAddress]] = deque()
        self._closing = False
        self._closed = False
        self.dropped = 0  # datagrams ignored: garbage, unknown connection ids, over the bounds

    def __repr__(self) -> str:
        return f"<UDPEndpoint {self.local_multiaddr} conns={len(self._conns)}>"

    @property
    def closed(self) -> bool:
        """True once the socket is closed."""
        return self._closed

    @property
    def connections(self) -> int:
        """How many QUIC connections (inbound and outbound) use this socket."""
        return len(self._conns)

    def multiaddr_of(self, addr: NetworkAddress) -> Multiaddr:
        """The ``/ip4|ip6/<host>/udp/<port>/quic-v1`` multiaddr of a socket address."""
        return quic_multiaddr(addr[0], addr[1])

    # ---- connection registry ------------------------------------------------------------

    def register(self, conn: QUICConnection, cids: list[bytes], *, original_cid: bytes | None = None) -> None:
        """Route datagrams for ``cids`` to ``conn``; ``original_cid`` (inbound) is the client's first
        destination id, routed until the handshake is done and counted against ``max_pending_handshakes``.
        """
        self._conns.add(conn)
        for cid in cids:
            self.add_cid(cid, conn)
        if original_cid is not None and original_cid not in self._by_cid:
            self._by_cid[original_cid] = conn  # the client's first DCID, until the handshake is done
            self._original_cids[conn] = original_cid
            self._pending_inbound.add(conn)

    def add_cid(self, cid: bytes, conn: QUICConnection) -> None:
        """Route datagrams for the connection id ``cid`` to ``conn`` too (ignored once closed or unregistered)."""
        if not self._closed and conn in self._conns:
            self._by_cid.setdefault(cid, conn)
            conn._cids.add(cid)

    def remove_cid(self, cid: bytes, conn: QUICConnection) -> None:
        """Stop routing ``cid`` to ``conn`` (nothing if it routes elsewhere)."""
        if self._by_cid.get(cid) is conn:
            del self._by_cid[cid]

    def handshake_done(self, conn: QUICConnection) -> None:
        """``conn`` finished its handshake: an inbound one goes to the listener (or is closed if none is left)."""
        self._pending_inbound.discard(conn)
        self._release(conn)
        original = self._original_cids.pop(conn, None)
        if original is not None:
            self.remove_cid(original, conn)
            if self.listener is not None:
                self.listener.deliver(conn)
            else:
                conn.close_now("not listening any more")

    def unregister(self, conn: QUICConnection) -> None:
        """Forget ``conn`` and its connection ids; the socket closes with its last connection when no
        listener uses it.
        """
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        self._pending_inbound.discard(conn)
        self._release(conn)
        self._dirty.pop(conn, None)
        self._deferred.pop(conn, None)
        original = self._original_cids.pop(conn, None)
        if original is not None:
            self.remove_cid(original, conn)
        for cid in conn._cids:
            self.remove_cid(cid, conn)
        conn._cids.clear()
        conn._timer_at = None
        if not self._conns and self.listener is None and not self._closing:
            self.close()

    def mark_dirty(self, conn: QUICConnection) -> None:
        """Have ``conn.process`` run at the end of the current batch of datagrams."""
        self._dirty[conn] = None

    # ---- driving --------------------------------------------------------------------------

    async def drive(self) -> None:
        """Do the endpoint's I/O (or wait to take it over) until cancelled or the socket closes."""
        while not self._closed:
            if self._driver is None:
                self._driver = trio.lowlevel.current_task()
                try:
                    await self._run_io()
                finally:
                    self._driver = None
                    self._wake_scope = None
                    if not self._closed:
                        self._flush_deferred(trio.current_time())  # the next driver may be a while
                    self._driver_lot.unpark(count=1)  # hand over to another waiting party
            else:
                await self._driver_lot.park()

    async def _run_io(self) -> None:
        """The driver's loop, all in the driver's own task: fire due timers, then serve the socket in
        one cancel scope (trio's scopes are not free) until a timer is due or output is deferred while
        the driver waits for the socket."""
        sock = self._sock
        buf = bytearray(RECEIVE_BUFFER)
        view = memoryview(buf)
        while not self._closed:
            now = trio.current_time()
            if self._next_timer() <= now:
                self._fire_timers(now)
            with trio.CancelScope(deadline=self._next_timer()) as scope:
                self._wake_scope = scope
                try:
                    await self._serve(scope, sock, buf, view)
                    return  # the socket closed
                except (trio.ClosedResourceError, OSError):
                    return
                except ValueError:  # the socket's descriptor is -1: closed meanwhile
                    if self._closed:
                        return
                    raise
                finally:
                    self._wake_scope = None
                    self._settle_deadline = math.inf

    async def _serve(self, scope: trio.CancelScope, sock: socket.socket, buf: bytearray, view: memoryview) -> None:
        # The scheduler's own "no task can run" signal (public API). Imported here, on first use:
        # trio.testing imports pytest when it is installed, ~0.1 s that a program not driving QUIC skips.
        from trio.testing import wait_all_tasks_blocked

        settle = True
        while not self._closed:
            if self._deferred or (settle and trio.lowlevel.current_statistics().tasks_runnable):
                # Let the tasks this round woke run first (local work before new work from the
                # network), so that what they write goes out together with our ACKs; in a program
                # that never idles, no longer than FLUSH_DELAY.
                self._settle_deadline = trio.current_time() + FLUSH_DELAY
                scope.deadline = min(self._next_timer(), self._settle_deadline)
                await wait_all_tasks_blocked()
                self._settle_deadline = math.inf
                scope.deadline = self._next_timer()
                self._flush_deferred(trio.current_time())
            settle = False
            if self._closed:  # (closed while we settled)
                return
            self._waiting = True
            try:
                if self._backlog:
                    await trio.lowlevel.wait_writable(sock)
                else:
                    await trio.lowlevel.wait_readable(sock)
            finally:
                self._waiting = False
            if self._backlog:
                self._send_backlog()
                continue
            if not self._receive_batch(sock, buf, view):
                return
            settle = True

    def _wake(self) -> None:
        """Interrupt the driver's wait for the socket (a flush request, a backlog to send). While it
        works or settles it will see them anyway."""
        scope = self._wake_scope
        if scope is not None and self._waiting:
            scope.cancel()

    def _next_timer(self) -> float:
        heap = self._heap
        while heap and heap[0][2]._timer_at != heap[0][0]:  # re-armed or cancelled since: stale
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf

    # ---- deferred flushes -------------------------------------------------------------------

    def flush_soon(self, conn: QUICConnection) -> None:
        """Flush ``conn`` once every task is blocked (within FLUSH_DELAY of that). With nobody driving
        the socket (a dial just returned, the connection's ``run()`` has not started yet), the next
        driver does it: a connection makes progress only while its endpoint is driven anyway."""
        if not self._deferred:
            self._wake()
        self._deferred[conn] = None

    def _flush_deferred(self, now: float) -> None:
        deferred = self._deferred
        while deferred:
            conn = next(iter(deferred))
            del deferred[conn]
            self._safely(conn, conn.flush_deferred, now)

    # ---- receiving --------------------------------------------------------------------------

    def _receive_batch(self, sock: socket.socket, buf: bytearray, view: memoryview) -> bool:
        """Read up to RECEIVE_BATCH datagrams, hand them to their connections, then let each
        connection that got some process them. False once the socket is closed."""
        dispatch = self._dispatch
        now = trio.current_time()
        count = processed = 0
        while count < RECEIVE_BATCH:
            if self._closed:
                return False
            try:
                if self._gro:
                    n, ancillary, _flags, addr = sock.recvmsg_into((buf,), _GRO_ANCILLARY)
                else:
                    n, addr = sock.recvfrom_into(buf)
                    ancillary = None
            except BlockingIOError:
                break
            except OSError as exc:
                if self._closed or exc.errno == errno.EBADF:
                    return False
                log.debug("UDP receive on %s: %s", self.local_multiaddr, exc)  # e.g. ICMP errors
                count += 1
                continue
            segment = _gro_segment(ancillary) if ancillary else 0
            if 0 < segment < n:  # several datagrams of `segment` bytes (the last may be shorter)
                for start in range(0, n, segment):
                    dispatch(bytes(view[start : min(n, start + segment)]), addr, now)
                    count += 1
            else:
                dispatch(bytes(view[:n]), addr, now)
                count += 1
            if count >= processed + PROCESS_EVERY:
                processed = count
                self._process_dirty(now)
                now = trio.current_time()
        if count >= GRO_AFTER and self._gro_wanted and not self._gro:
            self._enable_gro()
        self._process_dirty(now)
        return True

    def _enable_gro(self) -> None:
        self._gro_wanted = False
        try:
            self._sock.setsockopt(_SOL_UDP, _UDP_GRO, 1)
            self._gro = True
        except OSError as exc:  # kernels before 5.0
            log.debug("UDP GRO unavailable on %s (%s); reading datagrams one by one", self, exc)

    def _process_dirty(self, now: float) -> None:
        while self._dirty:
            conn = next(iter(self._dirty))
            del self._dirty[conn]
            self._safely(conn, conn.process, now)

    def _safely(self, conn: QUICConnection, fn: Callable[..., None], *args: Any) -> None:
        """Run a connection's handler; an unexpected failure closes that connection only."""
        try:
            fn(*args)
        except Exception as exc:
            self._failed(conn, exc)

    @staticmethod
    def _failed(conn: QUICConnection, exc: Exception) -> None:
        log.warning("QUIC connection %r failed: %r; closing it", conn, exc, exc_info=True)
        conn.fail_internally(exc)

    def _dispatch(self, data: bytes, addr: NetworkAddress, now: float) -> None:
        if not data:
            self.dropped += 1
            return
        if not data[0] & 0x80:  # short header: our connection id follows the first byte
            conn = self._by_cid.get(data[1 : 1 + CID_LENGTH])
            if conn is None:
                self.dropped += 1
                return
            try:
                conn.receive_datagram(data, addr, now)
            except Exception as exc:
                self._failed(conn, exc)
            self._dirty[conn] = None
            return
        if (
            len(data) > 6
            and data[1:5] == _V1
            and data[6 : 6 + data[5]] not in self._by_cid
            and self.listener is not None
            and not self._may_start(data, addr, now)
        ):
            return
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
        except (ValueError, BufferReadError):
            self.dropped += 1
            return
        conn = self._by_cid.get(header.destination_cid)
        if conn is not None:
            self._safely(conn, conn.receive_datagram, data, addr, now)
            self._dirty[conn] = None
            return
        self._maybe_accept(data, header, addr, now)

    def _may_start(self, data: bytes, addr: NetworkAddress, now: float) -> bool:
        """A QUIC v1 long-header datagram for none of our connections: may it start one? Only a client's
        first Initial (type bits, size, destination id length), and only if its source may start a
        handshake now — checked on the raw bytes, before any parsing, so junk at line rate costs little."""
        if data[0] & 0x30 or len(data) < SMALLEST_MAX_DATAGRAM_SIZE or data[5] < MIN_INITIAL_DCID:
            # 0-RTT, Handshake or Retry for a connection we do not know, or not an Initial we accept
            self.dropped += 1
            self._limiter.count("junk")
            return False
        refusal = self._limiter.check(addr[0], now)
        if refusal is None:
            return True
        self.dropped += 1
        self._refusals.warn(refusal.reason, now, "QUIC: dropping an Initial from %s: %s", addr[0], refusal.detail)
        return False

    def _maybe_accept(self, data: bytes, header: Any, addr: NetworkAddress, now: float) -> None:
        listener = self.listener
        if listener is None or header.packet_type == QuicPacketType.VERSION_NEGOTIATION:
            self.dropped += 1
            return
        if header.version is not None and header.version not in SUPPORTED_VERSIONS:
            # answered only for a datagram that could start a connection (RFC 9000 section 5.2.2), and
            # within its source's rate: junk with a made-up version gets no answer at line rate
            if len(data) < SMALLEST_MAX_DATAGRAM_SIZE:
                self.dropped += 1
                self._limiter.count("junk")
                return
            if self._limiter.spend(addr[0], now) is not None:  # (counted under its reason)
                self.dropped += 1
                return
            self._limiter.count("version_negotiation")
            self._send_now(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=SUPPORTED_VERSIONS,
                ),
                addr,
            )
            return
        if (
            header.packet_type != QuicPacketType.INITIAL
            or len(data) < SMALLEST_MAX_DATAGRAM_SIZE
            or len(header.destination_cid) < MIN_INITIAL_DCID
        ):
            self.dropped += 1
            self._limiter.count("junk")
            return
        # per source and in the table before any connection state: a flood of Initials (valid or junk)
        # from one address costs a dictionary lookup each, beyond that source's small burst
        ticket, evicted = self._limiter.admit(addr[0], now)
        for old in evicted:
            assert isinstance(old.data, _Pending)
            self._refusals.warn("evicted", now, "QUIC: evicting a stalled handshake from %s", old.source)
            self._safely(old.data.conn, old.data.conn.close_now, "evicted: handshake stalled", 0x2)
        if isinstance(ticket, Refusal):
            self.dropped += 1
            self._refusals.warn(ticket.reason, now, "QUIC: dropping an Initial from %s: %s", addr[0], ticket.detail)
            return
        retry: tuple[bytes, bytes] | None = None
        threshold = self._retry_threshold
        if threshold is not None and len(self._pending_inbound) >= threshold:
            retry = self._check_retry(header, addr, now)
            if retry is None:  # answered with a Retry (or refused): no state kept
                self._limiter.release(ticket)
                return
        conn = listener.make_inbound(self, header.destination_cid, addr, retry)
        self._tickets[conn] = ticket
        ticket.data = _Pending(conn)
        self._safely(conn, conn.receive_datagram, data, addr, now)
        if not conn._core.heard_from_peer:  # not a valid Initial: forget it without a word
            self.dropped += 1
            self._limiter.count("undecryptable")
            conn.discard()
            return
        self._dirty[conn] = None

    def _check_retry(self, header: Any, addr: NetworkAddress, now: float) -> tuple[bytes, bytes] | None:
        """Address validation: an Initial without a token gets a stateless Retry; one with a valid token
        gives (original destination id, our Retry's id); None when nothing more is to be done."""
        if self._retry is None:
            self._retry = QuicRetryTokenHandler()
        if not header.token:
            cid = os.urandom(CID_LENGTH)
            token = self._retry.create_token(
                address=addr, original_destination_connection_id=header.destination_cid,
                retry_source_connection_id=cid, now=now,
            )  # fmt: skip
            retry = encode_quic_retry(
                version=header.version, source_cid=cid, destination_cid=header.source_cid,
                original_destination_cid=header.destination_cid, retry_token=token,
            )  # fmt: skip
            self._send_now(retry, addr)
            self._limiter.count("retry_sent")
            return None
        try:
            original = self._retry.validate_token(
                address=addr, destination_cid=header.destination_cid, token=header.token, now=now
            )
        except ValueError as exc:  # forged, expired, or from another address: dropped
            self.dropped += 1
            self._limiter.count("bad_token")
            self._refusals.warn("bad_token", now, "QUIC: dropping an Initial from %s: %s", addr[0], exc)
            return None
        return original, header.destination_cid

    def _release(self, conn: QUICConnection) -> None:
        ticket = self._tickets.pop(conn, None)
        if ticket is not None:
            self._limiter.release(ticket)

    def stats(self) -> dict[str, int]:
        """Counters of new clients' Initials: admitted, pending, refused per source (``ip_pending``,
        ``ip_rate``), ``table_full``, ``evicted_stalled``, ``retry_sent``, ``bad_token``, ``junk`` (wrong
        shape) and ``undecryptable`` (right shape, no valid packet)."""
        stats = self._limiter.stats()
        for key in ("retry_sent", "bad_token", "junk", "undecryptable", "version_negotiation"):
            stats.setdefault(key, 0)
        return stats

    # ---- timers ---------------------------------------------------------------------------

    def schedule(self, conn: QUICConnection, at: float | None) -> None:
        """(Re)arm ``conn``'s timer; the driver calls ``conn.handle_timer`` at ``at``."""
        if at == conn._timer_at or conn not in self._conns:
            return
        conn._timer_at = at
        if at is None:
            if self._wake_scope is not None:
                self._wake_scope.deadline = min(self._next_timer(), self._settle_deadline)
            return
        heap = self._heap
        heapq.heappush(heap, (at, next(self._seq), conn))
        if len(heap) > 4 * len(self._conns) + 64:  # drop stale entries (timers that were re-armed)
            self._heap = heap = [e for e in heap if e[2]._timer_at == e[0]]
            heapq.heapify(heap)
        scope = self._wake_scope
        if scope is not None:  # the driver serves the socket: wake it at the earliest live timer
            deadline = min(self._next_timer(), self._settle_deadline)
            if deadline != scope.deadline:
                scope.deadline = deadline

    def _fire_timers(self, now: float) -> None:
        heap = self._heap
        due: dict[QUICConnection, None] = {}
        while heap and heap[0][0] <= now:
            at, _, conn = heapq.heappop(heap)
            if conn._timer_at == at:
                conn._timer_at = None
                due[conn] = None
        for conn in due:  # each at most once per round: a timer still due waits for the next
            self._safely(conn, conn.handle_timer, now)
            again = conn._timer_at
            if again is not None and again <= now:  # still due: not again before TIMER_GRANULARITY
                conn._timer_at = None
                self.schedule(conn, now + TIMER_GRANULARITY)
        self._process_dirty(now)

    # ---- sending --------------------------------------------------------------------------

    def send(self, datagrams: list[tuple[bytes, NetworkAddress]]) -> int:
        """Send now what the kernel takes; queue the rest (bounded). Returns the bytes handed over."""
        total = 0
        for data, _ in datagrams:
            total += len(data)
        if self._closed:
            return total
        if self._backlog:
            self._enqueue(datagrams, 0)
            return total
        sock = self._sock
        i, count = 0, len(datagrams)
        while i < count:
            data, addr = datagrams[i]
            if self._gso and i + 1 < count:
                j = self._gso_group(datagrams, i)
                if j - i > 1:
                    try:
                        sock.sendmsg(
                            [b"".join(d for d, _ in datagrams[i:j])],
                            [(_SOL_UDP, _UDP_SEGMENT, struct.pack("=H", len(data)))],
                            0,
                            addr,
                        )
                    except BlockingIOError:
                        self._enqueue(datagrams, i)
                        return total
                    except OSError as exc:
                        if exc.errno in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                            log.debug("UDP GSO unavailable on %s (%s); sending datagrams one by one", self, exc)
                            self._gso = False
                            continue
                        log.debug("UDP send from %s to %s failed: %s", self.local_multiaddr, addr, exc)
                    i = j
                    continue
            try:
                sock.sendto(data, addr)
            except BlockingIOError:
                self._enqueue(datagrams, i)
                return total
            except OSError as exc:
                if self._closed:
                    return total
                log.debug("UDP send from %s to %s failed: %s", self.local_multiaddr, addr, exc)
            i += 1
        return total

    @staticmethod
    def _gso_group(datagrams: list[tuple[bytes, NetworkAddress]], start: int) -> int:
        """End of the run from ``start`` that one GSO send can carry: same address, equal sizes (the
        last may be shorter), at most 64 segments and 65000 bytes."""
        first, addr = datagrams[start]
        size = len(first)
        end = min(len(datagrams), start + GSO_MAX_SEGMENTS, start + GSO_MAX_BYTES // size)
        j = start + 1
        while j < end:
            data, to = datagrams[j]
            if to != addr or len(data) > size:
                break
            j += 1
            if len(data) < size:
                break
        return j

    def _send_now(self, data: bytes, addr: NetworkAddress) -> None:
        self.send([(data, addr)])

    def _enqueue(self, datagrams: list[tuple[bytes, NetworkAddress]], start: int) -> None:
        room = SEND_BACKLOG - len(self._backlog)
        rest = datagrams[start:]
        if len(rest) > room:
            self.dropped += len(rest) - room
            rest = rest[:room]
        if not self._backlog:
            self._wake()  # the driver waits for the socket to be writable now
        self._backlog.extend(rest)

    def _send_backlog(self) -> None:
        """Send the backlog, oldest first, until the kernel refuses again (the driver waits for room)."""
        sock = self._sock
        backlog = self._backlog
        while backlog and not self._closed:
            data, addr = backlog[0]
            try:
                sock.sendto(data, addr)
            except BlockingIOError:
                return
            except OSError as exc:
                if self._closed:
                    return
                log.debug("UDP send from %s to %s failed: %s", self.local_multiaddr, addr, exc)
            backlog.popleft()

    # ---- closing --------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection (CONNECTION_CLOSE) and the socket. Idempotent."""
        if self._closing:
            return
        self._closing = True
        for conn in list(self._conns):
            conn.close_now("endpoint closed")
        self._closed = True
        self._backlog.clear()
        try:
            trio.lowlevel.notify_closing(self._sock)
        except RuntimeError:  # not inside trio (interpreter shutdown)
            pass
        self._sock.close()
        self._driver_lot.unpark_all()
        self.listener = None
        # forget every connection (closed above): no cycles through us to wait for the collector
        self._conns.clear()
        self._by_cid.clear()
        self._heap.clear()
        self._dirty.clear()
        self._deferred.clear()
        self._original_cids.clear()
        self._pending_inbound.clear()
        self._wake()
        self._on_close(self)
