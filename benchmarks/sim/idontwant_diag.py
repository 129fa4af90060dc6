"""Why is each duplicate payload sent? A diagnostic run of subnet-blob-msg (issue #15's IDONTWANT target).

    python benchmarks/sim/idontwant_diag.py --nodes 30 --seed 1 [--no-idontwant] [--json OUT]

It runs the real scenario (mycel.sim.runner.run) with probes wrapped around the router, the pubsub
service and the simulated network, and classifies every duplicate copy of a large message that a node
received from a peer C:

* ``gossip``: C sent it in answer to an IWANT (or as a publisher);
* ``no_idontwant``: the receiver never sent C an IDONTWANT for it (C not in its mesh when it got the
  message, or IDONTWANT off);
* ``(a) before``: C queued the copy before the receiver had the message at all; split by where the copy
  was when the receiver got the message (the earliest an IDONTWANT could leave);
* ``(b) in flight``: the receiver had it when C queued the copy, its IDONTWANT had not reached C yet;
  split by where C's copy was when the IDONTWANT arrived;
* ``(c) ignored``: C queued the copy after the IDONTWANT arrived (a bug).

Places of a copy: ``router`` (C's per-peer queue), ``muxer`` (handed to the stream, not yet written to
the connection), ``uplink`` (written to the connection, waiting for C's uplink), ``wire`` (being sent on
C's uplink), ``transit`` (sent, travelling / waiting for the receiver's downlink), ``delivered`` (the
IDONTWANT arrived after the duplicate did), ``never`` (no IDONTWANT arrived).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from typing import Any

import trio

from mycel.protocols.pubsub import core as pcore
from mycel.protocols.pubsub import service as psvc
from mycel.sim import network as simnet
from mycel.sim import runner
from mycel.sim.script import subnet_blob_msg

LARGE = 50_000
"""Messages (and writes) at least this big are the 98,304-byte payloads."""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-idontwant", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()

    n = args.nodes
    index = {runner.interop_identity(i).peer_id: i for i in range(n)}
    # (C, B, mid) -> when C queued the copy for B, and why (forward, publish, gossip)
    queued: dict[tuple[int, int, bytes], tuple[float, str]] = {}
    idw_sent: dict[tuple[int, int, bytes], float] = {}  # (B, C, mid) -> when B queued IDONTWANT to C
    idw_arrived: dict[tuple[int, int, bytes], float] = {}  # (C, B, mid) -> when C processed it
    first: dict[tuple[int, bytes], float] = {}  # (B, mid) -> first receipt (whole message)
    dups: list[tuple[int, int, bytes, float]] = []  # (B, C, mid, t)
    writes: dict[tuple[int, int], list[tuple[float, float, float, float, int]]] = collections.defaultdict(list)
    # (src, dst) -> [(t_call, up_start, sent, done, size)] for large writes
    stream_writes: dict[tuple[int, int, bytes], float] = {}  # (C, B, mid) -> pubsub writer handed it to the stream
    state: dict[str, Any] = {"mode": "forward"}  # why the router is sending: forward, publish or gossip

    def now() -> float:
        return trio.current_time()

    # --- router probes ---
    orig_handle_control = pcore.GossipsubRouter._handle_control

    def handle_control(self: pcore.GossipsubRouter, peer: Any, st: Any, ctl: Any, score: float, t: float) -> None:
        me, other = index[self.local_peer], index[peer]
        for idw in ctl.idontwant:
            for mid in idw.messageIDs:
                idw_arrived.setdefault((me, other, bytes(mid)), t)
        prev, state["mode"] = state["mode"], "gossip"
        try:
            orig_handle_control(self, peer, st, ctl, score, t)
        finally:
            state["mode"] = prev

    pcore.GossipsubRouter._handle_control = handle_control  # type: ignore[method-assign]

    orig_send_idw = pcore.GossipsubRouter._send_idontwant

    def send_idontwant(self: pcore.GossipsubRouter, msg: Any, sender: Any) -> None:
        me = index[self.local_peer]
        for p in self.mesh.get(msg.topic, ()):
            if p != sender and self.peers[p].kind is pcore.PeerKind.GOSSIPSUB_V12:
                idw_sent.setdefault((me, index[p], msg.id), now())
        orig_send_idw(self, msg, sender)

    pcore.GossipsubRouter._send_idontwant = send_idontwant  # type: ignore[method-assign]

    orig_forward = pcore.GossipsubRouter._forward

    def forward(self: pcore.GossipsubRouter, msg: Any, t: float, *, own: bool) -> Any:
        prev, state["mode"] = state["mode"], "publish" if own else "forward"
        try:
            return orig_forward(self, msg, t, own=own)
        finally:
            state["mode"] = prev

    pcore.GossipsubRouter._forward = forward  # type: ignore[method-assign]

    orig_send_message = psvc._Output.send_message

    def send_message(self: Any, peer: Any, msg: Any) -> bool:
        router = self._svc._router
        key = (index[router.local_peer], index[peer], msg.id)
        queued.setdefault(key, (now(), state["mode"]))
        return orig_send_message(self, peer, msg)

    psvc._Output.send_message = send_message  # type: ignore[method-assign]

    # the pubsub writer handing a large message to the stream: message_frames is called right before
    # stream.send_all, just after the writer took the message from its queue (ProbeDeque below)
    orig_frames = psvc.message_frames
    current_writer: dict[str, Any] = {}

    def message_frames(raws: list[bytes], limit: int) -> Any:
        key = current_writer.get("key")
        if key is not None:
            for raw in raws:
                if len(raw) >= LARGE:
                    mid = _mid_of(raw)
                    stream_writes.setdefault((key[0], key[1], mid), now())
        return orig_frames(raws, limit)

    psvc.message_frames = message_frames  # type: ignore[assignment]

    orig_write_loop = psvc.Gossipsub._write_loop

    async def write_loop(self: Any, stream: Any, queue: Any, router: Any, peer: Any) -> None:
        # the writer's identity for message_frames: the queue object carries it
        queue_key[id(queue)] = (index[router.local_peer], index[peer])
        await orig_write_loop(self, stream, queue, router, peer)

    queue_key: dict[int, tuple[int, int]] = {}
    psvc.Gossipsub._write_loop = write_loop  # type: ignore[method-assign]

    class ProbeDeque(collections.deque):  # type: ignore[type-arg]
        owner: int = 0

        def popleft(self) -> Any:
            item = super().popleft()
            current_writer["key"] = queue_key.get(self.owner)
            return item

    orig_init = psvc._PeerQueue.__init__

    def queue_init(self: Any, size: int) -> None:
        orig_init(self, size)
        d = ProbeDeque()
        d.owner = id(self)
        self.messages = d

    psvc._PeerQueue.__init__ = queue_init  # type: ignore[method-assign]

    # --- receipts (first copy and duplicates) ---
    orig_on_rpc = runner.InteropGossipsub._on_rpc

    def on_rpc(self: Any, peer: Any, rpc: Any) -> None:
        if rpc.publish and self._router is not None:
            me, other = index[self._router.local_peer], index[peer]
            for pb in rpc.publish:
                if len(pb.data) < LARGE:
                    continue
                mid = runner._id_bytes(pb.data)
                if mid in self._router.seen:
                    dups.append((me, other, mid, now()))
                else:
                    first.setdefault((me, mid), now())
        orig_on_rpc(self, peer, rpc)

    runner.InteropGossipsub._on_rpc = on_rpc  # type: ignore[method-assign]

    # --- the network: large writes per pipe ---
    orig_schedule = simnet.SimNetwork._schedule

    def schedule(self: simnet.SimNetwork, pipe: Any, data: bytes | None) -> None:
        t = now()
        up_start = max(t, pipe.src.up_free_at)
        orig_schedule(self, pipe, data)
        if data and len(data) >= LARGE:
            writes[(pipe.src.index, pipe.dst.index)].append((t, up_start, pipe.src.up_free_at, pipe.last_at, len(data)))

    simnet.SimNetwork._schedule = schedule  # type: ignore[method-assign]

    script = subnet_blob_msg(n, args.seed)
    result = runner.run(script, runner.RunOptions(nodes=n, seed=args.seed, idontwant=not args.no_idontwant))
    summary = runner.summarize(result)

    # sim node index == interop node index (runner adds nodes in order)
    counts: collections.Counter[str] = collections.Counter()
    at_arrival: collections.Counter[str] = collections.Counter()
    margins: list[float] = []  # (b): how much earlier the IDONTWANT would have had to arrive
    idw_delay: list[float] = []  # IDONTWANT arrival - (sent + one-way latency): queueing on its way
    for b, c, mid, t in dups:
        q = queued.get((c, b, mid))
        if q is None:
            counts["unmatched"] += 1
            continue
        t_q, mode = q
        if mode != "forward":
            counts[mode] += 1
            continue
        t_b = first.get((b, mid), float("inf"))
        t_i = idw_arrived.get((c, b, mid))
        if (b, c, mid) in idw_sent and t_i is not None:
            lat = result_latency(c, b)
            idw_delay.append(t_i - idw_sent[(b, c, mid)] - lat)
        w = _write_for(writes.get((c, b), []), t)
        t_stream = stream_writes.get((c, b, mid), t_q)
        if (b, c, mid) not in idw_sent:
            counts["no_idontwant"] += 1
            continue
        if t_i is not None and t_i <= t_q:
            counts["(c) ignored"] += 1
            continue
        # where the copy was when the IDONTWANT arrived, whatever the class: what a sender holding copies
        # back until its uplink is free (so that a late IDONTWANT still cancels them) could save at most
        at_arrival["at IDONTWANT arrival: " + _place(t_i, t_q, t_stream, w, t)] += 1
        if t_q < t_b:
            counts["(a) before: " + _place(t_b, t_q, t_stream, w, t)] += 1
        else:
            counts["(b) in flight: " + _place(t_i, t_q, t_stream, w, t)] += 1
            if t_i is not None:
                margins.append(t_i - t_q)

    total = len(dups)
    print(json.dumps({k: summary[k] for k in ("duplicate_payload_bytes", "latency_p99", "min_reach",
                                               "avg_duplicates_per_node_per_message")}))
    print(f"router: saved={summary['router'].get('idontwant_saved')} duplicates={summary['router'].get('duplicates')}")
    print(f"{total} duplicate large copies received")
    for k in sorted(counts):
        print(f"  {k:45s} {counts[k]:6d}  {100 * counts[k] / max(1, total):5.1f} %")
    for k in sorted(at_arrival):
        print(f"  {k:45s} {at_arrival[k]:6d}  {100 * at_arrival[k] / max(1, total):5.1f} %")
    if idw_delay:
        idw_delay.sort()
        print("IDONTWANT queueing beyond latency: p50 %.4f p90 %.4f max %.4f" % (
            idw_delay[len(idw_delay) // 2], idw_delay[int(len(idw_delay) * 0.9)], idw_delay[-1]))
    if margins:
        margins.sort()
        print("(b) IDONTWANT arrival - copy queued: p50 %.4f p90 %.4f" % (margins[len(margins) // 2], margins[int(len(margins) * 0.9)]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"nodes": n, "seed": args.seed, "idontwant": not args.no_idontwant, "duplicates": total,
                       "classes": dict(counts),
                       "at_idontwant_arrival": dict(at_arrival), "summary": {k: summary[k] for k in (
                           "duplicate_payload_bytes", "latency_p99", "min_reach", "max_time_to_all")}}, f, indent=1)


_latency_fn: list[Any] = []


def result_latency(a: int, b: int) -> float:
    return _latency_fn[0](a, b) if _latency_fn else 0.0


def _mid_of(raw: bytes) -> bytes:
    from mycel.protocols.pubsub import rpc_pb2

    return runner._id_bytes(rpc_pb2.Message.FromString(raw).data)


def _write_for(ws: list[tuple[float, float, float, float, int]], t: float) -> tuple[float, float, float, float, int] | None:
    best = None
    for w in ws:
        if w[3] <= t + 1e-9:
            best = w
    return best


def _place(t_event: float | None, t_q: float, t_stream: float, w: tuple[float, float, float, float, int] | None, t_dup: float) -> str:
    """Where C's copy was at ``t_event``."""
    if t_event is None:
        return "never"
    if t_event < t_stream:
        return "router"
    if w is None:
        return "unknown"
    t_call, up_start, sent, done, _ = w
    if t_event < t_call:
        return "muxer"
    if t_event < up_start:
        return "uplink"
    if t_event < sent:
        return "wire"
    if t_event < t_dup:
        return "transit"
    return "delivered"


if __name__ == "__main__":
    # latency per node pair, read from the network the runner builds
    orig_net_init = simnet.SimNetwork.__init__

    def net_init(self: simnet.SimNetwork, *a: Any, **k: Any) -> None:
        orig_net_init(self, *a, **k)
        _latency_fn[:] = [lambda x, y: self.link_latency(self.nodes[x], self.nodes[y])]

    simnet.SimNetwork.__init__ = net_init  # type: ignore[method-assign]
    sys.exit(main())
