"""mDNS between real processes: mycel hosts in network namespaces on one bridge (made by the test) find
each other and connect with no address given; a host that leaves says goodbye and the others drop it;
the service cancelled mid-work lets its host close at once, with its socket closed.

Each host is ``tests/integration/mdns_node.py`` in a namespace of its own, printing JSON lines. Nothing
sleeps: every wait is for a line, bounded in time. Times to "everyone connected to everyone" are
printed (``pytest -s``) for the report.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing

from mycel import MDNS, HostConfig, Identity, Noise, Yamux, open_host
from mycel.discovery.mdns import dns
from mycel.discovery.mdns.core import MdnsConfig
from mycel.testing.netns import Lan, Namespace, NetLab
from mycel.transports import TCP

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0  # seconds: a bound on one wait for the processes, not a sleep


class Node:
    """One mdns_node process and the JSON events it printed so far."""

    def __init__(self, ns: Namespace, proc: trio.Process) -> None:
        self.ns = ns
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self._changed = trio.Event()

    @property
    def peer(self) -> str:
        return str(self.ready["peer"])

    @property
    def ready(self) -> dict[str, Any]:
        return next(e for e in self.events if e["event"] == "ready")

    def connected(self) -> set[str]:
        peers: set[str] = set()
        for e in self.events:
            if e["event"] == "connected":
                peers.add(e["peer"])
            elif e["event"] == "disconnected":
                peers.discard(e["peer"])
        return peers

    def found(self, peer: str) -> list[str] | None:
        found = [e for e in self.events if e["event"] == "found" and e["peer"] == peer]
        return found[-1]["addrs"] if found else None

    async def read(self) -> None:
        assert self.proc.stdout is not None
        buf = b""
        async for chunk in self.proc.stdout:
            buf += chunk
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                self.events.append(json.loads(line))
                self._changed.set()
                self._changed = trio.Event()
        self._changed.set()

    async def until(self, check: Any) -> None:
        while not check():
            if self.proc.returncode is not None and not self._changed.is_set():
                raise AssertionError(f"{self.ns.label} exited ({self.proc.returncode}) with {self.events}")
            await self._changed.wait()


MYCEL_NODE = ["-m", "tests.integration.mdns_node"]


@asynccontextmanager
async def mdns_lan(
    n: int, subnet: str, commands: Sequence[Sequence[str] | None] = ()
) -> AsyncIterator[tuple[Lan, list[Node], tuple[float, float]]]:
    """``n`` hosts on one bridge; yields them once all are ready, with the times the processes were
    started and the last one was ready. ``commands[i]``: what host ``i`` runs (an argv; default, or
    None: a mycel host, ``mdns_node.py``)."""
    with NetLab() as lab:
        lan = lab.lan(subnet, n)
        async with trio.open_nursery() as nursery:
            nodes = []
            started = time.monotonic()
            for i, ns in enumerate(lan.hosts):
                command = commands[i] if i < len(commands) else None
                argv = ns.python_command(MYCEL_NODE) if command is None else ns.command(command)
                proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, cwd=ROOT)
                node = Node(ns, proc)
                nodes.append(node)
                nursery.start_soon(node.read)
            try:
                with trio.fail_after(WAIT):
                    for node in nodes:
                        await node.until(lambda node=node: any(e["event"] == "ready" for e in node.events))
                yield lan, nodes, (started, time.monotonic())
            finally:
                for node in nodes:
                    if node.proc.returncode is None:
                        node.proc.kill()
                    with trio.move_on_after(5):
                        await node.proc.wait()
                nursery.cancel_scope.cancel()


async def _all_connected(nodes: list[Node]) -> None:
    peers = {n.peer for n in nodes}
    for node in nodes:
        await node.until(lambda node=node: node.connected() >= peers - {node.peer})


def _report(n: int, started: tuple[float, float], nodes: list[Node]) -> None:
    now = time.monotonic()
    last_open = max(float(node.ready["opening"]) for node in nodes)
    print(
        f"\nmdns: {n} hosts all connected {now - started[0]:.2f} s after the processes were started, "
        f"{now - last_open:.2f} s after the last host began to open"
    )


async def _all_found(nodes: list[Node]) -> None:
    """Every node heard every other one's announcement (a node may be connected to before it hears)."""
    for node in nodes:
        others = [n.peer for n in nodes if n is not node]
        await node.until(lambda node=node, others=others: all(node.found(p) for p in others))


async def test_two_hosts_find_each_other_and_goodbye_drops() -> None:
    async with mdns_lan(2, "10.77.2.0/24") as (lan, (a, b), started):
        with trio.fail_after(WAIT):
            await _all_connected([a, b])
        _report(2, started, [a, b])
        with trio.fail_after(WAIT):
            await _all_found([a, b])
        # each found the other at its LAN address (and not at loopback: not announced on a LAN)
        for me, other, ip in ((a, b, lan.ips[1]), (b, a, lan.ips[0])):
            found = me.found(other.peer)
            assert found and all(addr.startswith(f"/ip4/{ip}/tcp/") for addr in found), found
            assert other.ready["addrs"] == [f"{x}/p2p/{other.peer}" for x in found]
            assert other.ready["response_bytes"] < 1452
        # b leaves: its goodbye makes a drop it, its socket is closed, and it exits at once
        b.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            await a.until(lambda: any(e["event"] == "lost" and e["peer"] == b.peer for e in a.events))
            await b.proc.wait()
        lost = [e for e in a.events if e["event"] == "lost"]
        assert lost[0]["reason"] == "goodbye" and lost[0]["discovery_addrs"] == 0
        assert b.proc.returncode == 0
        assert b.events[-1] == {"event": "closed", "sockets_open": 0}


async def test_five_hosts_all_connect() -> None:
    async with mdns_lan(5, "10.77.5.0/24") as (lan, nodes, started):
        with trio.fail_after(WAIT):
            await _all_connected(nodes)
        _report(5, started, nodes)
        with trio.fail_after(WAIT):
            await _all_found(nodes)
        for node, ip in zip(nodes, lan.ips):
            for other in nodes:
                if other is not node:
                    assert other.found(node.peer) == [a.rsplit("/p2p/", 1)[0] for a in node.ready["addrs"]]
                    assert all(a.startswith(f"/ip4/{ip}/") for a in node.ready["addrs"])


def _loopback_config(port: int) -> HostConfig:
    return HostConfig(
        identity=Identity.generate(),
        transports=[TCP()],
        security=[Noise()],
        muxers=[Yamux()],
        services=[MDNS(interfaces=["127.0.0.1"], port=port, config=MdnsConfig(query_initial=0.2, query_max=0.4))],
        listen=["/ip4/127.0.0.1/tcp/0"],
    )


async def test_cancelled_mid_work_closes_promptly_and_says_goodbye() -> None:
    """On loopback (no namespace needed): a host whose MDNS is busy querying and answering is
    cancelled; it exits at once, its socket is closed and the goodbye reached a listener."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("", 0))
    port = listener.getsockname()[1]
    mreq = struct.pack("4s4s", socket.inet_aton("224.0.0.251"), socket.inet_aton("127.0.0.1"))
    listener.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    listener.setblocking(False)
    tl = trio.socket.from_stdlib_socket(listener)
    with listener, trio.fail_after(WAIT):
        with trio.CancelScope() as scope:
            async with open_host(_loopback_config(port)) as host:
                mdns = host.service(MDNS)
                sock = mdns.socket
                assert sock is not None
                name = mdns.core.peer_name
                queries = 0
                while queries < 3:  # it is mid-work: several query rounds went out
                    data, _ = await tl.recvfrom(9000)
                    queries += not dns.decode(data).is_response
                t0 = trio.current_time()
                scope.cancel()
        assert trio.current_time() - t0 < 1.0
        assert sock is not None and sock.fileno() == -1  # closed
        assert mdns.socket is None
        # the last datagram it sent (already queued on the listener: loopback delivers at once) is the goodbye
        last = None
        while True:
            try:
                last, _ = listener.recvfrom(9000)
            except BlockingIOError:
                break
        assert last is not None
        msg = dns.decode(last)
        assert msg.is_response and msg.answers and all(r.ttl == 0 for r in msg.records())
        assert msg.answers[0].data == f"{name}._p2p._udp.local"


async def test_a_flood_of_fake_peers_is_bounded_in_a_running_host() -> None:
    """1,000 fake peers and garbage sent to a running MDNS (loopback, a test port): it keeps at most
    ``max_peers``, the host stays up and answers queries, and nothing is dialed beyond the bound."""
    from tests.unit.discovery.test_mdns_core import _fake_response

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    probe.bind(("", 0))
    port = probe.getsockname()[1]
    probe.setsockopt(
        socket.IPPROTO_IP,
        socket.IP_ADD_MEMBERSHIP,
        struct.pack("4s4s", socket.inet_aton("224.0.0.251"), socket.inet_aton("127.0.0.1")),
    )
    probe.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    tp = trio.socket.from_stdlib_socket(probe)
    config = _loopback_config(port)
    mdns_cfg = MdnsConfig(max_peers=50)
    config = config.replace(
        services=[MDNS(interfaces=["127.0.0.1"], port=port, config=mdns_cfg)], discovery_connect=0
    )
    with probe, trio.fail_after(WAIT):
        async with open_host(config) as host:
            mdns = host.service(MDNS)
            for i in range(1000, 2000):
                await tp.sendto(_fake_response(i), ("224.0.0.251", port))
                if i % 100 == 0:
                    await tp.sendto(b"\xff" * 100, ("224.0.0.251", port))
                if i % 50 == 0:  # let it take them in (the socket's receive buffer is finite)
                    await trio.testing.wait_all_tasks_blocked()
            await tp.sendto(b"\0" * 9001, ("224.0.0.251", port))
            # a query after the flood: it still answers (with itself, not the fakes)
            query = dns.Message(questions=[dns.Question("_p2p._udp.local", dns.TYPE_PTR)])
            await tp.sendto(dns.encode(query), ("224.0.0.251", port))
            answered = False
            while not answered:
                data, _ = await tp.recvfrom(9000)
                try:
                    msg = dns.decode(data)
                except dns.MalformedPacket:
                    continue  # our own garbage, looped back
                answered = msg.is_response and bool(msg.answers) and msg.answers[0].data == mdns.core.instance_name
            await trio.testing.wait_all_tasks_blocked()
            assert len(mdns.peers()) == 50
            assert mdns.core.stats.refused_peers == 950
            assert mdns.core.stats.malformed == 11
            assert not host.connected_peers()
            assert sum(1 for p in host.peerstore.peers() if host.peerstore.addrs(p)) <= 50


async def test_two_hosts_on_an_ipv6_only_lan() -> None:
    """No IPv4 on the LAN (only loopback): the hosts meet over ff02::fb and connect over IPv6."""
    listen6 = [sys.executable, "-u", *MYCEL_NODE, "--listen", "/ip6/::/tcp/0"]
    async with mdns_lan(2, "fd00:77::/64", [listen6, listen6]) as (lan, (a, b), started):
        with trio.fail_after(WAIT):
            await _all_connected([a, b])
            await _all_found([a, b])
        for me, other, ip in ((a, b, lan.ips[1]), (b, a, lan.ips[0])):
            found = me.found(other.peer)
            assert found and all(addr.startswith(f"/ip6/{ip}/tcp/") for addr in found), found
