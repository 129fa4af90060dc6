"""Five local hosts: TCP with Noise+yamux, Noise+mplex and TLS+yamux, and QUIC (chosen over TCP when a peer
has both); identify, ping, and a data stream on each. Then gossip: five more hosts in a ring, each
publishing one message that every other host receives.

Run with `make demo`.
"""

from __future__ import annotations

import hashlib
import os
import sys
from contextlib import AsyncExitStack

import trio

from mycel import HostConfig, Identity, MuxedStream, open_host
from mycel.muxers.mplex import Mplex
from mycel.muxers.yamux import Yamux
from mycel.protocols.echo import Echo
from mycel.protocols.identify import Identify
from mycel.protocols.ping import Ping
from mycel.protocols.pubsub import Gossipsub, PubsubMessage, Subscription
from mycel.security.noise import Noise
from mycel.security.tls import TLS
from mycel.transports.quic import QUIC
from mycel.transports.tcp import TCP

SINK = "/demo/sink/1.0.0"
PAYLOAD = 64 * 1024 * 1024
TOPIC = "demo"
GOSSIPERS = ("amy", "ben", "cleo", "dov", "eli")


def say(who: str, text: str) -> None:
    print(f"[{who:<6}] {text}", flush=True)


def make_config(muxers: list[object], security: list[object] | None = None, quic: bool = False) -> HostConfig:
    return HostConfig(
        identity=Identity.generate(),
        transports=[TCP(), QUIC()],
        security=security or [Noise()],  # type: ignore[arg-type]
        muxers=muxers,  # type: ignore[arg-type]
        services=[Identify(), Ping(), Echo()],
        listen=["/ip4/127.0.0.1/tcp/0"] + (["/ip4/127.0.0.1/udp/0/quic-v1"] if quic else []),
    )


async def sink(stream: MuxedStream) -> None:
    """Read everything, answer with the byte count and sha256."""
    digest = hashlib.sha256()
    total = 0
    async for chunk in stream:
        digest.update(chunk)
        total += len(chunk)
    await stream.send_all(f"{total} {digest.hexdigest()}".encode())


async def main() -> int:
    async with (
        open_host(make_config([Yamux(), Mplex()], [Noise(), TLS()])) as alice,
        open_host(make_config([Yamux()])) as bob,
        open_host(make_config([Mplex()])) as carol,
        open_host(make_config([Yamux()], [TLS()])) as dave,
        open_host(make_config([Yamux()], quic=True)) as erin,
    ):
        hosts = (("alice", alice), ("bob", bob), ("carol", carol), ("dave", dave), ("erin", erin))
        for name, host in hosts:
            host.set_stream_handler(SINK, sink)
            say(name, f"peer id {host.peer_id}")
            say(name, "listening on " + ", ".join(str(a) for a in host.addrs))

        for name, other in hosts[1:]:
            # alice is given every address; with a QUIC one among them, QUIC is dialed first
            conn = await alice.connect(other.peer_id, other.addrs)
            transport = "QUIC v1" if "quic-v1" in str(conn.remote_addr) else "TCP"
            say("alice", f"connected to {name} over {transport}: {conn.security_protocol} + {conn.muxer_protocol}")
            res = await alice.service(Identify).identify_connection(conn)
            say("alice", f"identified {name}: agent {res.agent_version!r}, "
                f"{len(res.protocols)} protocols, signed record {'verified' if res.signed_record_verified else 'missing'}")
            say("alice", f"{name} sees us at {res.observed_addr}")
            rtts = await alice.service(Ping).ping(conn.remote_peer, count=3)
            say("alice", "ping " + name + ": " + ", ".join(f"{r * 1000:.2f} ms" for r in rtts))

            size = PAYLOAD if transport == "TCP" else PAYLOAD // 4  # aioquic moves ~30 MB/s, TCP ~500
            data = os.urandom(1024 * 1024) * (size // (1024 * 1024))
            start = trio.current_time()
            stream = await alice.new_stream(conn.remote_peer, [SINK])
            await stream.send_all(data)
            await stream.send_eof()
            answer = b""
            async for chunk in stream:
                answer += chunk
            elapsed = trio.current_time() - start
            count, digest = answer.decode().split()
            ok = int(count) == len(data) and digest == hashlib.sha256(data).hexdigest()
            say("alice", f"streamed {len(data) >> 20} MiB to {name} in {elapsed * 1000:.0f} ms "
                f"({len(data) / elapsed / 1e6:.0f} MB/s), checksum {'OK' if ok else 'MISMATCH'}")
            if not ok:
                return 1

        # bob and carol find each other through alice's peerstore: bob dials carol by peer id.
        bob.peerstore.add_addrs(carol.peer_id, alice.peerstore.addrs(carol.peer_id))
        try:
            await bob.connect(carol.peer_id)
            say("bob", "connected to carol (unexpected: no common muxer)")
            return 1
        except Exception as exc:  # noqa: BLE001 - shown to the reader
            say("bob", f"cannot connect to carol, as expected (yamux-only vs mplex-only): {type(exc).__name__}")
        say("demo", "done: 5 hosts, 4 stacks (TCP/Noise/yamux, TCP/Noise/mplex, TCP/TLS/yamux, QUIC v1), "
            "identify + ping + streams all worked")
    return await gossip()


async def collect(sub: Subscription, count: int, into: list[PubsubMessage]) -> None:
    while len(into) < count:
        into.append(await sub.receive())


async def gossip() -> int:
    """Five hosts in a ring over TCP, all in one topic: each publishes one message, each should receive
    the four others' — from a neighbour directly, or relayed by one."""
    start = trio.current_time()
    n = len(GOSSIPERS)
    async with AsyncExitStack() as stack:
        hosts = []
        for _ in GOSSIPERS:
            config = HostConfig(identity=Identity.generate(), transports=[TCP()], security=[Noise()], muxers=[Yamux()],
                                services=[Identify(), Ping(), Gossipsub()], listen=["/ip4/127.0.0.1/tcp/0"])
            hosts.append(await stack.enter_async_context(open_host(config)))
        pubsubs = [host.service(Gossipsub) for host in hosts]
        subs = [await stack.enter_async_context(p.subscribe(TOPIC)) for p in pubsubs]
        names = {host.peer_id: name for name, host in zip(GOSSIPERS, hosts, strict=True)}
        for i, host in enumerate(hosts):  # amy-ben-cleo-dov-eli-amy
            neighbour = hosts[(i + 1) % n]
            await host.connect(neighbour.peer_id, neighbour.addrs)
        say("gossip", f"{n} hosts in a ring over TCP, each connected to its 2 neighbours, all subscribed to {TOPIC!r}")
        for p in pubsubs:
            await p.wait_ready(TOPIC, min_peers=2, timeout=10)
        say("gossip", f"hosts up, connected, meshes formed in {(trio.current_time() - start) * 1000:.0f} ms; "
            "each host publishes one message")
        for name, p in zip(GOSSIPERS, pubsubs, strict=True):
            await p.publish(TOPIC, f"hello from {name}".encode())
        received: list[list[PubsubMessage]] = [[] for _ in hosts]
        with trio.move_on_after(10):
            async with trio.open_nursery() as nursery:
                for sub, into in zip(subs, received, strict=True):
                    nursery.start_soon(collect, sub, n - 1, into)
        elapsed = trio.current_time() - start

        width = max(map(len, GOSSIPERS)) + 5
        say("gossip", "who received what (direct: from the author itself; via X: relayed by neighbour X):")
        say("gossip", "received".ljust(width) + "".join(f"from {name}".ljust(width + 4) for name in GOSSIPERS) + "mesh")
        complete = True
        for name, host, p, got in zip(GOSSIPERS, hosts, pubsubs, received, strict=True):
            by_author = {m.source: m for m in got if m.data == f"hello from {names.get(m.source)}".encode()}
            cells = []
            for author_name, author in zip(GOSSIPERS, hosts, strict=True):
                msg = by_author.get(author.peer_id)
                if author is host:
                    cells.append("-")
                elif msg is None:
                    cells.append("MISSING")
                    complete = False
                else:
                    cells.append("direct" if msg.received_from == msg.source else f"via {names[msg.received_from]}")
            mesh = sorted(names[peer] for peer in p.mesh(TOPIC))
            say("gossip", name.ljust(width) + "".join(c.ljust(width + 4) for c in cells) + f"{len(mesh)}: {', '.join(mesh)}")
        total = sum(map(len, received))
        if not complete:
            say("gossip", f"only {total} of {n * (n - 1)} messages arrived")
            return 1
        say("gossip", f"done: every host received every message ({total} of {n * (n - 1)}) in {elapsed * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
