"""mycel gossipsub benchmark peer, driven by ``benchmarks/pubsub.py`` (``js_pubsub.mjs`` keeps the same contract).

    .venv/bin/python benchmarks/peers/mycel_pubsub.py [--peer-queue N] [--idontwant-threshold N] [--no-sign] [--profile FILE]

One host on 127.0.0.1 (TCP + Noise + yamux; identify, ping, gossipsub with go's defaults: StrictSign;
``--no-sign``: StrictNoSign, the message id SHA-256 of the data, as ``js_pubsub.mjs --no-sign``), one ready
line ``{"peer_id", "addrs", "pid"}`` on stdout, then JSON commands on stdin, one per line, each with an
``id``; every command gets one reply line ``{"reply": id, "ok": true, ...}`` (``"ok": false, "error"``
when it failed). Commands run concurrently (a long ``publish`` does not hold up ``stats``):

    connect   {addr}                             dial a peer
    subscribe {topic, keep, maxsize}             subscribe; count what arrives (``keep``: and keep every
                                                 message's (origin, seq, publish µs, receipt µs))
    wait      {topic, peers, within}             until ``peers`` topic peers are known and our mesh (when
                                                 subscribed) has ``min(peers, D_lo)`` of them, for at most
                                                 ``within`` seconds -> {peers, mesh}
    publish   {topic, size, count, index, first_seq}  publish ``count`` messages of ``size`` bytes back to
                                                 back, awaiting each -> {published, failed, start_us, seconds, cpu}
    stats     {topic}                            -> {received, first_us, last_us, receipts?, duplicates,
                                                 dropped_sub, dropped_peers, cpu, mesh, peers}
    reset     {}                                 forget receipts and counts
    idontwant {threshold}                        set the router's IDONTWANT message threshold (the same mesh
                                                 serves the "on" and "off" phases)

Payloads start with ``<QII``: the publisher's wall clock in µs, its index, the message's sequence number;
the rest is zeros. Times are wall clock µs (every process is on this machine). The process exits when
stdin closes.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import procstat  # noqa: E402

from mycel import HostConfig, Identity, open_host  # noqa: E402
from mycel.host import Host  # noqa: E402
from mycel.muxers.yamux import Yamux  # noqa: E402
from mycel.protocols.identify import Identify  # noqa: E402
from mycel.protocols.ping import Ping  # noqa: E402
from mycel.protocols.pubsub import (  # noqa: E402
    Gossipsub,
    GossipsubConfig,
    PublishError,
    SignaturePolicy,
    Subscription,
    content_hash_message_id,
)
from mycel.security.noise import Noise  # noqa: E402
from mycel.transports.tcp import TCP  # noqa: E402

HEADER = struct.Struct("<QII")  # publish wall clock (µs), publisher index, sequence number
MAX_RECEIPTS = 200_000  # receipts kept per subscription (beyond, counted only)
MAX_LINE = 1 << 20


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def wall_us() -> int:
    return time.time_ns() // 1000


@dataclass
class Receiver:
    """What one subscription received."""

    sub: Subscription
    keep: bool
    received: int = 0
    first_us: int | None = None
    last_us: int | None = None
    receipts: list[tuple[int, int, int, int]] = field(default_factory=list)

    def reset(self) -> None:
        self.received, self.first_us, self.last_us = 0, None, None
        self.receipts = []

    async def run(self) -> None:
        async for msg in self.sub:
            now = wall_us()
            self.received += 1
            if self.first_us is None:
                self.first_us = now
            self.last_us = now
            if self.keep and len(self.receipts) < MAX_RECEIPTS and len(msg.data) >= HEADER.size:
                pub_us, origin, seq = HEADER.unpack_from(msg.data)
                self.receipts.append((origin, seq, pub_us, now))


class Peer:
    def __init__(self, host: Host, nursery: trio.Nursery) -> None:
        self.host = host
        self.pubsub = host.service(Gossipsub)
        self.nursery = nursery
        self.receivers: dict[str, Receiver] = {}
        self.subs_dropped_base: dict[str, int] = {}

    async def connect(self, addr: str) -> dict[str, Any]:
        await self.host.connect(addr)
        return {}

    async def subscribe(self, topic: str, keep: bool = False, maxsize: int | None = None) -> dict[str, Any]:
        if topic in self.receivers:
            return {}
        ready = trio.Event()

        async def hold() -> None:
            async with self.pubsub.subscribe(topic, maxsize=maxsize) as sub:
                receiver = self.receivers[topic] = Receiver(sub, keep)
                ready.set()
                await receiver.run()

        self.nursery.start_soon(hold)
        await ready.wait()
        return {}

    async def wait(self, topic: str, peers: int, within: float = 30.0) -> dict[str, Any]:
        with trio.fail_after(within):
            while True:
                known = len(self.pubsub.peers(topic))
                mesh = len(self.pubsub.mesh(topic)) if topic in self.receivers else known
                if known >= peers and mesh >= min(peers, self.pubsub.config.d_lo):
                    return {"peers": known, "mesh": mesh}
                await trio.sleep(0.05)

    async def publish(self, topic: str, size: int, count: int, index: int = 0, first_seq: int = 0) -> dict[str, Any]:
        buf = bytearray(max(size, HEADER.size))
        published = failed = 0
        start_us, c0, t0 = wall_us(), procstat.cpu_seconds(), time.perf_counter()
        for seq in range(first_seq, first_seq + count):
            HEADER.pack_into(buf, 0, wall_us(), index, seq)
            try:
                await self.pubsub.publish(topic, bytes(buf))
                published += 1
            except PublishError:
                failed += 1
            # publish() queues and returns without a schedule point (it never waits for a peer); a trio
            # program yields between publishes, which lets the writers send while we publish
            await trio.lowlevel.checkpoint()
        return {
            "published": published, "failed": failed, "start_us": start_us,
            "seconds": time.perf_counter() - t0, "cpu": procstat.cpu_seconds() - c0,
        }  # fmt: skip

    async def stats(self, topic: str, receipts: bool = True) -> dict[str, Any]:
        r = self.receivers.get(topic)
        counters = self.pubsub.stats()
        out: dict[str, Any] = {
            "received": r.received if r else 0,
            "first_us": r.first_us if r else None,
            "last_us": r.last_us if r else None,
            "duplicates": counters["duplicates"],
            "dropped_sub": (r.sub.dropped if r else 0),
            "dropped_peers": sum(self.pubsub.dropped_to_peers.values()),
            "cpu": procstat.cpu_seconds(),
            "peers": len(self.pubsub.peers(topic)),
            "mesh": len(self.pubsub.mesh(topic)) if r else 0,
        }
        if r and r.keep and receipts:
            out["receipts"] = r.receipts
        return out

    async def reset(self) -> dict[str, Any]:
        for r in self.receivers.values():
            r.reset()
        return {}

    async def idontwant(self, threshold: int) -> dict[str, Any]:
        config = self.pubsub.router.config.replace(idontwant_message_threshold=int(threshold))
        self.pubsub.router.config = config
        self.pubsub.config = config
        return {}


async def answer(peer: Peer, line: bytes) -> None:
    try:
        cmd = json.loads(line)
        if not isinstance(cmd, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        emit({"reply": None, "ok": False, "error": f"bad command: {exc}"})
        return
    ident = cmd.pop("id", None)
    name = cmd.pop("cmd", None)
    fn = getattr(peer, name, None) if name in COMMANDS else None
    try:
        if fn is None:
            raise ValueError(f"unknown command {name!r}")
        emit({"reply": ident, "ok": True, **await fn(**cmd)})
    except Exception as exc:  # reported to the driver, which decides
        emit({"reply": ident, "ok": False, "error": f"{type(exc).__name__}: {exc}"})


COMMANDS = {"connect", "subscribe", "wait", "publish", "stats", "reset", "idontwant"}


async def serve(args: argparse.Namespace) -> None:
    config = GossipsubConfig(
        peer_queue_size=args.peer_queue,
        idontwant_message_threshold=args.idontwant_threshold,
    )
    if args.no_sign:  # payloads are unique (publish clock and sequence number), so content ids are too
        config = config.replace(signature_policy=SignaturePolicy.STRICT_NO_SIGN, message_id_fn=content_hash_message_id)
    host_config = HostConfig(
        identity=Identity.generate(),
        transports=[TCP()],
        security=[Noise()],
        muxers=[Yamux()],
        services=[Identify(), Ping(), Gossipsub(config)],
        listen=["/ip4/127.0.0.1/tcp/0"],
    )
    async with open_host(host_config) as host, trio.open_nursery() as nursery:
        peer = Peer(host, nursery)
        emit({"peer_id": str(host.peer_id), "addrs": [str(a) for a in host.addrs], "pid": os.getpid()})
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        pending = b""
        try:
            while chunk := await stdin.receive_some(65536):
                pending += chunk
                if len(pending) > MAX_LINE and b"\n" not in pending:
                    raise SystemExit("command line too long")
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        nursery.start_soon(answer, peer, line)
        except (trio.BrokenResourceError, OSError):
            pass
        finally:
            await stdin.aclose()
        nursery.cancel_scope.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-queue", type=int, default=1024, help="GossipsubConfig.peer_queue_size")
    parser.add_argument("--idontwant-threshold", type=int, default=GossipsubConfig().idontwant_message_threshold)
    parser.add_argument("--no-sign", action="store_true", help="StrictNoSign, message id = SHA-256 of the data")
    parser.add_argument("--profile", help="write a cProfile of the whole run to this file")
    args = parser.parse_args()
    if args.profile:
        import cProfile

        cProfile.runctx("trio.run(serve, args)", globals(), {"trio": trio, "serve": serve, "args": args}, args.profile)
    else:
        trio.run(serve, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
