"""The simulated network under :mod:`mycel.sim`: nodes with an IP, a region and up/down bandwidth, joined by
links with latency and loss, partitions that start and heal, and a stream transport over it that hosts use in
place of TCP. Everything runs on trio's clock, so under ``trio.testing.MockClock(autojump_threshold=0)``
hours of network time pass in seconds, and a run is a pure function of its seed.

What is modelled, and how:

* **Latency**: one-way, per link, from the :class:`~mycel.sim.latency.LatencyModel` (drawn once per node
  pair). A dial costs one round trip (SYN, SYN-ACK) before the connection exists.
* **Bandwidth**: store-and-forward at link rate. Each node has one uplink and one downlink shared by all its
  connections: a write of ``n`` bytes occupies the sender's uplink for ``n / up`` seconds after whatever it
  was already sending, arrives ``latency`` later, then occupies the receiver's downlink for ``n / down``
  seconds (a slow receiver takes a fast sender's bytes at its own rate). Big messages therefore cost time, and a node that sends to many peers serializes its sends. A
  writer of bulk blocks while its uplink has more than ``SEND_BUFFER`` bytes queued (a socket buffer).
  Bulk writes are served first come, first served on each link; a **short write** (at most one segment:
  a control message such as IHAVE, GRAFT or IDONTWANT) is interleaved with the bulk of *other*
  connections at packet granularity: it waits for the segment being sent, not for every message queued
  before it, as a link that carries packets of several TCP connections does (Linux's default fq_codel
  qdisc even serves such sparse flows first). Within one connection order is kept: a short write still
  waits for that connection's own earlier bytes (TCP's head-of-line blocking). Where the bottleneck is a
  deep FIFO queue (bufferbloat), real control messages wait longer than this.
* **Loss**: a reliable stream does not lose bytes, it delays them: each write is cut into 1,460-byte segments
  and, when any of them is lost (probability ``loss`` each), the write arrives one retransmission timeout
  later (``max(0.2 s, 2 x RTT)``). Order is kept per direction, as TCP keeps it.
* **Partitions**: :meth:`SimNetwork.partition` splits the nodes into groups; bytes written across groups
  are held (in order) and delivered when :meth:`SimNetwork.heal` is called, as TCP retransmits after an
  outage; dials across groups fail after ``dial_timeout``. ``partition(..., cut=True)`` closes the connections
  across groups instead (both ends see the connection reset).
* **Churn**: :meth:`SimNode.crash` resets all of a node's connections and stops its listeners (the host on it
  should then be cancelled by the scenario); a node can listen again afterwards (rejoin).

What is real: everything above the transport — the security handshake (plaintext or Noise), the muxer
(yamux), multistream-select, identify, and the protocols (gossipsub, the DHT, yours) run the same code as on
a real network. What is not: no sockets, no kernel, no TCP congestion control (a link is always at its rate),
no encryption cost unless the hosts are configured with Noise.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import logging
import math
import random
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import trio
from multiaddr import Multiaddr

from mycel.core.abc import Direction, Listener, RawConnection, StreamTransport
from mycel.core.errors import DialError, TransportError
from mycel.sim.latency import MBIT, LatencyModel, Uniform

log = logging.getLogger("mycel.sim")

SEGMENT: Final = 1460
"""Bytes per TCP segment, for the loss model."""
MIN_RTO: Final = 0.2
"""Shortest retransmission timeout (Linux: 200 ms)."""
SPARSE: Final = SEGMENT
"""Writes up to this size are interleaved with other connections' bulk at packet granularity."""
SEND_BUFFER: Final = 256 * 1024
"""Bytes a node may have queued on its uplink before a writer blocks."""
ACCEPT_BACKLOG: Final = 128
"""Connections dialed but not yet accepted per listener; further dials fail."""


class SimNode:
    """One machine of the simulated network: an IP, a region, an uplink and a downlink (bytes per second).

    Create with :meth:`SimNetwork.add_node`. Shared as is by the host that runs on it (never copied)."""

    def __init__(self, network: SimNetwork, index: int, ip: str, region: str, up: float, down: float) -> None:
        self.network = network
        self.index = index
        self.ip = ip
        self.region = region
        self.up = up
        """Uplink rate, bytes per second."""
        self.down = down
        """Downlink rate, bytes per second."""
        self.up_free_at = 0.0
        self.down_free_at = 0.0
        self.listeners: dict[int, _SimListener] = {}
        self.connections: set[SimConnection] = set()
        self.bytes_sent = 0
        self.bytes_received = 0
        self._ports = itertools.count(49152)

    def __deepcopy__(self, memo: dict[int, object]) -> SimNode:
        return self  # a host's config is copied per host; the machine it runs on is not

    def __repr__(self) -> str:
        return f"<SimNode {self.index} {self.ip} {self.region}>"

    def transport(self) -> SimTransport:
        """A stream transport that dials and listens from this node (put it in ``HostConfig.transports``)."""
        return SimTransport(self)

    def listen_addr(self, port: int = 4001) -> str:
        """This node's address for ``HostConfig.listen``: ``/ip4/<ip>/tcp/<port>``."""
        return f"/ip4/{self.ip}/tcp/{port}"

    def crash(self) -> None:
        """Reset every connection of this node and close its listeners (the machine is gone)."""
        for conn in list(self.connections):
            conn._reset()
        for listener in list(self.listeners.values()):
            listener._close()


@dataclass(order=True)
class _Delivery:
    at: float
    seq: int
    pipe: _Pipe = field(compare=False)
    data: bytes | None = field(compare=False)  # None: end of stream


class _Pipe:
    """One direction of a connection: bytes delivered to the reader at their arrival times, in order."""

    def __init__(self, src: SimNode, dst: SimNode, latency: float) -> None:
        self.src = src
        self.dst = dst
        self.latency = latency
        self.buffer = bytearray()
        self.eof = False
        self.reset = False
        self.last_at = 0.0  # in-order delivery: nothing arrives before what was written earlier
        self.sent_at = 0.0  # when this direction's last byte leaves the sender's uplink
        self.readable = trio.Event()
        self.held: deque[bytes | None] = deque()  # written during a partition, sent when it heals

    def wake(self) -> None:
        self.readable.set()
        self.readable = trio.Event()


class SimConnection(RawConnection):
    """A stream between two :class:`SimNode` objects; behaves like a TCP connection (see module docs)."""

    def __init__(
        self, network: SimNetwork, node: SimNode, out: _Pipe, inp: _Pipe, direction: Direction,
        local: Multiaddr, remote: Multiaddr,
    ) -> None:
        self._network = network
        self.node = node
        self._out = out
        self._in = inp
        self._direction = direction
        self._local = local
        self._remote = remote
        self._closed = False
        self._eof_sent = False
        self.peer: SimConnection | None = None
        self.remote_ip: str | None = inp.src.ip
        """The remote node's IP (per-source limits key on it, as on a socket connection)."""
        self._send_conflict = trio.lowlevel.ParkingLot()
        node.connections.add(self)

    @property
    def local_addr(self) -> Multiaddr:
        return self._local

    @property
    def remote_addr(self) -> Multiaddr:
        return self._remote

    @property
    def direction(self) -> Direction:
        return self._direction

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("connection closed")
        if self._eof_sent:
            raise trio.ClosedResourceError("send_eof was called")
        if self._out.reset or self._in.reset:
            raise trio.BrokenResourceError("connection reset by peer")
        if data:
            self._network._send(self._out, bytes(data))
            node = self.node
            backlog_until = node.up_free_at - SEND_BUFFER / node.up
            if len(data) > SPARSE and backlog_until > trio.current_time():  # a short write never fills it
                await trio.sleep_until(backlog_until)
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        node = self.node
        await trio.sleep_until(max(trio.current_time(), node.up_free_at - SEND_BUFFER / node.up))

    async def send_eof(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("connection closed")
        if not self._eof_sent:
            self._eof_sent = True
            self._network._send(self._out, None)
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        pipe = self._in
        while True:
            if self._closed:
                raise trio.ClosedResourceError("connection closed")
            if pipe.buffer:
                n = len(pipe.buffer) if max_bytes is None else min(max_bytes, len(pipe.buffer))
                data = bytes(pipe.buffer[:n])
                del pipe.buffer[:n]
                await trio.lowlevel.checkpoint()
                return data
            if pipe.reset:
                raise trio.BrokenResourceError("connection reset by peer")
            if pipe.eof:
                await trio.lowlevel.checkpoint()
                return b""
            await pipe.readable.wait()

    async def aclose(self) -> None:
        if not self._closed:
            if not self._eof_sent and not self._out.reset:
                self._eof_sent = True
                self._network._send(self._out, None)
            self._closed = True
            self.node.connections.discard(self)
            self._in.wake()
        await trio.lowlevel.checkpoint()

    def _reset(self) -> None:
        """Abort both directions now (a crash, or a cut): both ends see a reset."""
        self._out.reset = self._in.reset = True
        self._out.wake()
        self._in.wake()
        self.node.connections.discard(self)
        if self.peer is not None:
            self.peer.node.connections.discard(self.peer)


class _SimListener(Listener[RawConnection]):
    def __init__(self, node: SimNode, port: int) -> None:
        self._node = node
        self._port = port
        self._send, self._recv = trio.open_memory_channel[RawConnection](ACCEPT_BACKLOG)

    @property
    def addrs(self) -> list[Multiaddr]:
        return [Multiaddr(self._node.listen_addr(self._port))]

    async def accept(self) -> RawConnection:
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError) as exc:
            raise trio.ClosedResourceError("listener closed") from exc

    def _close(self) -> None:
        self._node.listeners.pop(self._port, None)
        self._send.close()

    async def aclose(self) -> None:
        self._close()
        self._recv.close()
        await trio.lowlevel.checkpoint()


def _ip_port(addr: Multiaddr) -> tuple[str, int] | None:
    parts = list(addr.items())
    if len(parts) == 2 and parts[0][0].name == "ip4" and parts[1][0].name == "tcp":
        return str(parts[0][1]), int(str(parts[1][1]))
    return None


class SimTransport(StreamTransport):
    """Dials and listens on ``/ip4/<ip>/tcp/<port>`` addresses of its node's :class:`SimNetwork`."""

    name = "tcp"

    def __init__(self, node: SimNode) -> None:
        self.node = node

    def can_dial(self, addr: Multiaddr) -> bool:
        found = _ip_port(addr)
        return found is not None and found[0] in self.node.network.nodes_by_ip

    def can_listen(self, addr: Multiaddr) -> bool:
        found = _ip_port(addr)
        return found is not None and found[0] == self.node.ip

    async def dial(self, addr: Multiaddr) -> RawConnection:
        found = _ip_port(addr)
        if found is None:
            raise DialError(f"not a simulated address: {addr}")
        return await self.node.network._dial(self.node, *found)

    async def open_listener(self, addr: Multiaddr) -> Listener[RawConnection]:
        found = _ip_port(addr)
        if found is None or found[0] != self.node.ip:
            raise TransportError(f"{addr} is not an address of {self.node}")
        port = found[1] or next(self.node._ports)
        if port in self.node.listeners:
            raise TransportError(f"{addr} is in use")
        listener = _SimListener(self.node, port)
        self.node.listeners[port] = listener
        return listener


class SimNetwork:
    """Nodes and links on trio's clock (see the module docstring for the model). Run :meth:`run` in a
    nursery for as long as the network is used; it delivers every byte at its arrival time.

    ``seed`` makes the run reproducible (node placement, per-link latency, losses). IPs are 10.x.y.z with
    nodes spread over many /16s (give ``subnet`` to :meth:`add_node` to pack Sybils into one); the
    simulation declares them public where it matters (diversity filters, IP colocation)."""

    def __init__(
        self,
        *,
        seed: int = 0,
        latency: LatencyModel | None = None,
        loss: float = 0.0,
        dial_timeout: float = 5.0,
    ) -> None:
        self.rng = random.Random(seed)
        self.latency_model: LatencyModel = latency or Uniform()
        self.loss = loss
        """Probability that a segment is lost (it costs a retransmission timeout, see the module docs)."""
        self.dial_timeout = dial_timeout
        self.nodes: list[SimNode] = []
        self.nodes_by_ip: dict[str, SimNode] = {}
        self._latency: dict[tuple[int, int], float] = {}
        self._heap: list[_Delivery] = []
        self._seq = itertools.count()
        self._wake = trio.Event()
        self._groups: dict[int, int] | None = None  # node index -> partition group
        self._held: list[_Pipe] = []
        self.bytes_delivered = 0

    def __deepcopy__(self, memo: dict[int, object]) -> SimNetwork:
        return self

    # -- building ---------------------------------------------------------------------------------------
    def add_node(
        self,
        *,
        region: str | None = None,
        up_mbit: float = 50.0,
        down_mbit: float | None = None,
        ip: str | None = None,
        subnet: str | None = None,
    ) -> SimNode:
        """A new node: its region from the latency model unless given, its IP chosen (unique; inside
        ``subnet``, e.g. ``"10.66.0.0/16"``, when given) unless given."""
        index = len(self.nodes)
        if ip is None:
            ip = self._free_ip(subnet)
        elif ip in self.nodes_by_ip:
            raise ValueError(f"{ip} is taken")
        node = SimNode(
            self, index, ip, region or self.latency_model.region(self.rng),
            up_mbit * MBIT, (down_mbit if down_mbit is not None else up_mbit) * MBIT,
        )
        self.nodes.append(node)
        self.nodes_by_ip[ip] = node
        return node

    def _free_ip(self, subnet: str | None) -> str:
        if subnet is not None:
            net = ipaddress.ip_network(subnet)
            for _ in range(10_000):
                ip = str(net.network_address + self.rng.randrange(1, max(2, net.num_addresses - 1)))
                if ip not in self.nodes_by_ip:
                    return ip
            raise ValueError(f"{subnet} is full")
        while True:  # spread honest nodes over 10.0.0.0/8's /16s, like hosts of an open network
            ip = f"10.{self.rng.randrange(256)}.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}"
            if ip not in self.nodes_by_ip:
                return ip

    def link_latency(self, a: SimNode, b: SimNode) -> float:
        """One-way latency between ``a`` and ``b`` (drawn once, the same both ways)."""
        key = (min(a.index, b.index), max(a.index, b.index))
        value = self._latency.get(key)
        if value is None:
            value = self._latency[key] = self.latency_model.latency(a.region, b.region, self.rng)
        return value

    # -- partitions -------------------------------------------------------------------------------------
    def partition(self, groups: Sequence[Collection[SimNode]], *, cut: bool = False) -> None:
        """Split the network: nodes in different ``groups`` cannot reach each other (nodes in no group form
        one more group). Bytes across are held until :meth:`heal`, or with ``cut`` the connections across
        are reset."""
        assignment: dict[int, int] = {}
        for i, group in enumerate(groups):
            for node in group:
                assignment[node.index] = i
        rest = len(groups)
        self._groups = {node.index: assignment.get(node.index, rest) for node in self.nodes}
        if cut:
            for node in self.nodes:
                for conn in list(node.connections):
                    if not self.reachable(node, conn._in.src):
                        conn._reset()
        log.info("partition: %d groups%s", rest + (len(self._groups) > len(assignment)), " (cut)" if cut else "")

    def heal(self) -> None:
        """End the partition; bytes held are sent now, in order."""
        self._groups = None
        held, self._held = self._held, []
        for pipe in held:
            while pipe.held:
                self._schedule(pipe, pipe.held.popleft())
        log.info("partition healed: %d connections had bytes held", len(held))

    def reachable(self, a: SimNode, b: SimNode) -> bool:
        """Whether ``a`` can reach ``b`` now (no partition between them)."""
        groups = self._groups
        return groups is None or groups.get(a.index) == groups.get(b.index)

    # -- the data path ----------------------------------------------------------------------------------
    async def _dial(self, src: SimNode, ip: str, port: int) -> SimConnection:
        dst = self.nodes_by_ip.get(ip)
        if dst is None:
            raise DialError(f"no simulated node has {ip}")
        if not self.reachable(src, dst):
            await trio.sleep(self.dial_timeout)
            raise DialError(f"{ip}:{port} unreachable (partition)")
        latency = self.link_latency(src, dst)
        await trio.sleep(2 * latency)  # SYN, SYN-ACK; the ACK travels with the first data
        listener = dst.listeners.get(port)
        if listener is None:
            raise DialError(f"connection refused: nothing listens on {ip}:{port}")
        forward = _Pipe(src, dst, latency)
        backward = _Pipe(dst, src, latency)
        local = Multiaddr(f"/ip4/{src.ip}/tcp/{next(src._ports)}")
        remote = Multiaddr(f"/ip4/{ip}/tcp/{port}")
        client = SimConnection(self, src, forward, backward, Direction.OUTBOUND, local, remote)
        server = SimConnection(self, dst, backward, forward, Direction.INBOUND, remote, local)
        client.peer, server.peer = server, client
        try:
            listener._send.send_nowait(server)
        except (trio.WouldBlock, trio.ClosedResourceError) as exc:
            client._reset()
            raise DialError(f"{ip}:{port} is not accepting") from exc
        return client

    def _send(self, pipe: _Pipe, data: bytes | None) -> None:
        if not self.reachable(pipe.src, pipe.dst):
            if not pipe.held:
                self._held.append(pipe)
            pipe.held.append(data)
            return
        self._schedule(pipe, data)

    def _schedule(self, pipe: _Pipe, data: bytes | None) -> None:
        now = trio.current_time()
        src, dst = pipe.src, pipe.dst
        size = len(data) if data else 0
        sparse = size <= SPARSE
        if sparse and src.up_free_at > now:
            # interleaved with the other connections' bulk: it waits for the segment on the wire and
            # for this connection's own earlier bytes; the bulk queued behind it slips by its size
            start = max(now + min(src.up_free_at - now, SEGMENT / src.up), pipe.sent_at)
            sent = start + size / src.up
            src.up_free_at = max(src.up_free_at + size / src.up, sent)
        else:
            sent = max(now, src.up_free_at) + size / src.up
            src.up_free_at = sent
        pipe.sent_at = sent
        first = sent - size / src.up + pipe.latency  # when the first byte reaches the receiver
        arrive = sent + pipe.latency
        if size and self.loss:
            segments = math.ceil(size / SEGMENT)
            if self.rng.random() < 1 - (1 - self.loss) ** segments:
                arrive += max(MIN_RTO, 4 * pipe.latency)
        if sparse and dst.down_free_at > arrive:
            done = arrive + min(dst.down_free_at - arrive, SEGMENT / dst.down) + size / dst.down
            dst.down_free_at += size / dst.down
        else:
            # the receiver's downlink takes the bytes at its rate once they start arriving (a slow
            # receiver of a fast sender) and after what it was already receiving
            done = max(arrive, max(first, dst.down_free_at) + size / dst.down)
            dst.down_free_at = max(dst.down_free_at, done)
        done = max(done, pipe.last_at)
        pipe.last_at = done
        src.bytes_sent += size
        item = _Delivery(done, next(self._seq), pipe, data)
        heapq.heappush(self._heap, item)
        if self._heap[0] is item:  # earlier than what the delivery task sleeps until
            self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver bytes at their arrival times until cancelled (start it in the simulation's nursery)."""
        task_status.started()
        heap = self._heap
        while True:
            if heap:
                with trio.move_on_at(heap[0].at):
                    await self._wake.wait()
            else:
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            while heap and heap[0].at <= now:
                item = heapq.heappop(heap)
                pipe = item.pipe
                if pipe.reset:
                    continue
                if item.data is None:
                    pipe.eof = True
                else:
                    pipe.buffer += item.data
                    pipe.dst.bytes_received += len(item.data)
                    self.bytes_delivered += len(item.data)
                pipe.wake()


def nodes_in(network: SimNetwork, ips: Iterable[str]) -> list[SimNode]:
    """The nodes with these IPs (for scenarios written in addresses)."""
    return [network.nodes_by_ip[ip] for ip in ips]


__all__ = ["SimConnection", "SimNetwork", "SimNode", "SimTransport", "nodes_in"]
