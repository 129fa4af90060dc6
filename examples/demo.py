"""Five local hosts: TCP with Noise+yamux, Noise+mplex and TLS+yamux, and QUIC (chosen over TCP when a peer
has both); identify, ping, and a data stream on each.

Run with `make demo`.
"""

from __future__ import annotations

import hashlib
import os
import sys

import trio

from mycel import HostConfig, Identity, MuxedStream, open_host
from mycel.muxers.mplex import Mplex
from mycel.muxers.yamux import Yamux
from mycel.protocols.echo import Echo
from mycel.protocols.identify import Identify
from mycel.protocols.ping import Ping
from mycel.security.noise import Noise
from mycel.security.tls import TLS
from mycel.transports.quic import QUIC
from mycel.transports.tcp import TCP

SINK = "/demo/sink/1.0.0"
PAYLOAD = 64 * 1024 * 1024


def say(who: str, text: str) -> None:
    print(f"[{who:<5}] {text}", flush=True)


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
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
