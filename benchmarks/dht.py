"""Kademlia DHT speed and memory: mycel's KadDHT next to js-libp2p's ``@libp2p/kad-dht`` (issue #11).

    .venv/bin/python benchmarks/dht.py [--mycel 15] [--js 15] [--ops 20] [--seed 1] [--quick] [--json FILE]

Network: ``--mycel`` mycel hosts (``peers/mycel_dht.py``) and ``--js`` js hosts (``interop/js/dht.mjs``),
one process each, all DHT servers on 127.0.0.1 (TCP + Noise + yamux). Host ``i`` dials host ``i+1`` (a
ring) and ``dials - 1`` other hosts picked with ``--seed`` (chords); then every host runs a self-lookup
(``closest`` to its own id) to warm its table. Beforehand, random hosts other than the two askers put
``--ops`` ``/pk/`` records and provide ``--ops`` fresh CIDs. Then the first mycel host and the first js host
(the askers) each run, op by op and alternately (who goes first alternates too), ``--ops`` of each kind:
find-peer (a random other host), get-value (those records), find-providers (those CIDs, count 1). Time is
the driver's wall time around one command (a JSON line each way, the same for both). Messages per lookup:
the mycel asker's ``KadDHT.stats["requests_sent"]`` delta (ops run one at a time); js exposes no counter.

Memory (mycel, in this process, tracemalloc): a ``RoutingTable`` holding 1,000 peers (k = 1,000, no
diversity filter, so one table can hold them) and a ``ProviderStore`` holding 10,000 records (1,000 keys x
10 providers, one address each); bytes per entry are the growth traced while filling, the peer ids, keys
and addresses made beforehand (a node holds those anyway: peerstore, requests).

Every process is in its own group and is stopped on exit (stdin EOF, SIGTERM, SIGKILL), also on failure;
every wait is bounded (``--timeout`` for the whole run, 45 s per command).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import random
import sys
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repo root: interop/ and mycel/

from interop.dht import IMPLS, CommandFailed, DHTImpl, DHTPeer, DHTPeerError, open_dht_peer, random_cid  # noqa: E402
from interop.peers import _repo_python  # noqa: E402
from mycel.core.peer_id import PeerId  # noqa: E402

log = logging.getLogger("mycel.bench.dht")

MYCEL_PROC = DHTImpl(
    key="mycel",
    name="mycel KadDHT (benchmarks/peers/mycel_dht.py)",
    program=(_repo_python(), str(HERE / "peers" / "mycel_dht.py")),
    reports_routing_table=True,
    binary_keys=True,
)
JS = IMPLS["js"]
KINDS = ("find_peer", "get_value", "find_providers")
ASKERS = ("mycel", "js")


@dataclass
class Options:
    mycel: int = 15
    js: int = 15
    dials: int = 3
    ops: int = 20
    seed: int = 1
    timeout: float = 600.0  # the whole network part
    table_entries: int = 1000
    provider_records: int = 10_000

    @classmethod
    def quick(cls) -> Options:
        return cls(mycel=2, js=2, dials=2, ops=2, timeout=120.0, table_entries=200, provider_records=1000)


# ---------------------------------------------------------------------------------------------- statistics


def median(xs: Sequence[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def p95(xs: Sequence[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, -(-95 * len(s) // 100) - 1))]  # nearest rank


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


# ---------------------------------------------------------------------------------------------- network


def edges(n: int, dials: int, rng: random.Random) -> list[tuple[int, int]]:
    """Who dials whom: ``i -> i+1`` (ring) and random others (chords), up to ``dials`` per host; no pair is
    dialed twice (either way)."""
    out: list[tuple[int, int]] = []
    for i in range(n):
        targets = [(i + 1) % n] if (((i + 1) % n), i) not in out else []
        others = [j for j in range(n) if j != i and j not in targets and (j, i) not in out]
        rng.shuffle(others)
        targets += others[: max(0, min(dials, len(others) + len(targets)) - len(targets))]
        out += [(i, j) for j in targets]
    return out


async def _hold(impl: DHTImpl, slot: int, peers: dict[int, DHTPeer], stop: trio.Event) -> None:
    async with open_dht_peer(impl, "server") as peer:
        peer.name = f"{impl.key}{slot}"
        peers[slot] = peer
        await stop.wait()


async def _timed(peer: DHTPeer, cmd: str, **fields: Any) -> tuple[float, bool, str]:
    started = time.perf_counter()
    try:
        reply = await peer.request(cmd, **fields)
    except (CommandFailed, DHTPeerError) as exc:
        return time.perf_counter() - started, False, str(exc).partition("\n")[0][:200]
    ok = True
    if cmd == "find_providers":
        ok = bool(reply.get("providers"))
    return time.perf_counter() - started, ok, ""


async def _sent(peer: DHTPeer) -> int | None:
    if peer.impl.key != "mycel":
        return None
    return int((await peer.request("stats"))["stats"]["requests_sent"])


async def network(opts: Options) -> dict[str, Any]:
    rng = random.Random(opts.seed)
    # interleaved: slot 0 is the mycel asker, slot 1 the js asker (when both kinds run)
    kinds: list[DHTImpl] = []
    for i in range(max(opts.mycel, opts.js)):
        if i < opts.mycel:
            kinds.append(MYCEL_PROC)
        if i < opts.js:
            kinds.append(JS)
    n = len(kinds)
    peers: dict[int, DHTPeer] = {}
    stop = trio.Event()
    res: dict[str, Any] = {}
    t0 = time.monotonic()
    with trio.fail_after(opts.timeout):
        async with trio.open_nursery() as nursery:
            try:
                for slot, impl in enumerate(kinds):
                    nursery.start_soon(_hold, impl, slot, peers, stop)
                while len(peers) < n:  # each start is bounded by READY_TIMEOUT inside open_dht_peer
                    await trio.sleep(0.05)
                res["startup_s"] = time.monotonic() - t0
                hosts = [peers[i] for i in range(n)]
                log.info("%d hosts up in %.1fs", n, res["startup_s"])
                limiter = trio.CapacityLimiter(8)

                async def run_all(jobs: list[Any]) -> None:
                    async def one(job: Any) -> None:
                        async with limiter:
                            await job()

                    async with trio.open_nursery() as inner:
                        for job in jobs:
                            inner.start_soon(one, job)

                links = edges(n, opts.dials, rng)
                await run_all([lambda a=a, b=b: hosts[a].connect(hosts[b].addrs[0]) for a, b in links])
                res["links"] = len(links)
                await trio.sleep(1.0)  # identify runs after each connection; the tables take peers from it

                async def self_lookup(h: DHTPeer) -> None:
                    try:
                        await h.closest(PeerId.from_string(h.peer_id).to_bytes())
                    except CommandFailed as exc:
                        log.warning("self-lookup of %s failed: %s", h.name, exc.error)

                await run_all([lambda h=h: self_lookup(h) for h in hosts])
                tables = {h.name: len(await h.routing_table() or []) for h in hosts}
                res["table_sizes"] = tables
                res["warm_s"] = time.monotonic() - t0 - res["startup_s"]
                log.info("tables warm (%s) in %.1fs", tables, res["warm_s"])

                askers = {"mycel": hosts[0], "js": hosts[1]}
                others = hosts[2:] or hosts  # with 2 hosts, the askers serve too
                records: list[tuple[bytes, bytes]] = []
                cids: list[str] = []
                for _ in range(opts.ops):
                    h = rng.choice(others)
                    key, value = await h.pk_record()
                    await h.put(key, value)
                    records.append((key, value))
                    h = rng.choice(others)
                    cid = random_cid()
                    await h.provide(cid)
                    cids.append(cid)
                targets = [rng.choice([h for h in hosts if h not in askers.values()] or hosts).peer_id for _ in range(opts.ops)]
                res["setup_s"] = time.monotonic() - t0 - res["startup_s"] - res["warm_s"]

                times: dict[str, dict[str, list[float]]] = {a: {k: [] for k in KINDS} for a in ASKERS}
                msgs: dict[str, dict[str, list[int]]] = {a: {k: [] for k in KINDS} for a in ASKERS}
                fails: dict[str, dict[str, list[str]]] = {a: {k: [] for k in KINDS} for a in ASKERS}
                for i in range(opts.ops):
                    jobs: dict[str, tuple[str, dict[str, Any]]] = {
                        "find_peer": ("find_peer", {"peer_id": targets[i]}),
                        "get_value": ("get", {"key_hex": records[i][0].hex()}),
                        "find_providers": ("find_providers", {"cid": cids[i], "count": 1}),
                    }
                    for kind, (cmd, fields) in jobs.items():
                        order = ASKERS if i % 2 == 0 else ASKERS[::-1]
                        for who in order:
                            asker = askers[who]
                            if cmd == "find_peer" and fields["peer_id"] == asker.peer_id:
                                continue
                            before = await _sent(asker)
                            elapsed, ok, error = await _timed(asker, cmd, **fields)
                            after = await _sent(asker)
                            if ok:
                                times[who][kind].append(elapsed)
                                if before is not None and after is not None:
                                    msgs[who][kind].append(after - before)
                            else:
                                fails[who][kind].append(error)
                res["ops"] = {
                    who: {
                        kind: {
                            "n": len(times[who][kind]),
                            "median_ms": _ms(median(times[who][kind])),
                            "p95_ms": _ms(p95(times[who][kind])),
                            "msgs_median": median(msgs[who][kind]) if msgs[who][kind] else None,
                            "failures": len(fails[who][kind]),
                            "first_failure": fails[who][kind][0] if fails[who][kind] else "",
                            "times_ms": [round(t * 1000, 2) for t in times[who][kind]],
                        }
                        for kind in KINDS
                    }
                    for who in ASKERS
                }
                res["names"] = {h.peer_id: h.name for h in hosts}
                res["pids"] = [h.process.proc.pid for h in hosts]
            finally:
                stop.set()  # every _hold leaves its open_dht_peer: the processes are stopped by PID
    res["total_s"] = time.monotonic() - t0
    return res


def _ms(x: float | None) -> float | None:
    return None if x is None else x * 1000


# ---------------------------------------------------------------------------------------------- memory


def _fake_peer(rng: random.Random) -> PeerId:
    return PeerId(b"\x00\x24\x08\x01\x12\x20" + rng.randbytes(32))  # identity multihash of an ed25519 key


def memory(opts: Options) -> dict[str, Any]:
    """Bytes per routing-table entry and per provider record (mycel, tracemalloc)."""
    from mycel.protocols.kad.providers import ProviderStore
    from mycel.protocols.kad.routing import RoutingTable

    rng = random.Random(opts.seed)
    local = _fake_peer(rng)
    peers = [_fake_peer(rng) for _ in range(opts.table_entries)]
    n_keys = max(1, opts.provider_records // 10)
    keys = [b"\x12\x20" + rng.randbytes(32) for _ in range(n_keys)]
    providers = [_fake_peer(rng) for _ in range(10)]
    addrs = [b"\x04\x7f\x00\x00\x01\x06\x10\x01"]  # /ip4/127.0.0.1/tcp/4097
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        table = RoutingTable(local, k=opts.table_entries, diversity=None, now=0.0)
        for p in peers:
            table.offer(p, ["127.0.0.1"], 1.0, verified=True)
        gc.collect()
        table_bytes = tracemalloc.get_traced_memory()[0] - base
        entries = len(table)
        base = tracemalloc.get_traced_memory()[0]
        store = ProviderStore(max_records=opts.provider_records, max_per_key=10)
        for i in range(opts.provider_records):
            store.add(keys[i // 10 % n_keys], providers[i % 10], addrs, 1.0)
        gc.collect()
        store_bytes = tracemalloc.get_traced_memory()[0] - base
        records = len(store)
    finally:
        tracemalloc.stop()
    del table, store
    return {
        "table_entries": entries,
        "table_bytes": table_bytes,
        "bytes_per_table_entry": table_bytes / entries if entries else None,
        "provider_records": records,
        "provider_keys": n_keys,
        "store_bytes": store_bytes,
        "bytes_per_provider_record": store_bytes / records if records else None,
    }


# ---------------------------------------------------------------------------------------------- report


def run(opts: Options, only: Sequence[str] = ("network", "memory")) -> dict[str, Any]:
    res: dict[str, Any] = {"options": asdict(opts)}
    if "network" in only:
        missing = JS.missing()
        if missing:
            res["network_skipped"] = missing
        else:
            res["network"] = trio.run(network, opts)
    if "memory" in only:
        res["memory"] = memory(opts)
    return res


def evaluate(res: dict[str, Any]) -> dict[str, Any]:
    """mycel/js ratios per kind (median, p95) and the issue's target: mycel median <= js median."""
    ops = res.get("network", {}).get("ops", {})
    out: dict[str, Any] = {"ratios": {}, "met": {}}
    for kind in KINDS:
        m, j = ops.get("mycel", {}).get(kind, {}), ops.get("js", {}).get(kind, {})
        med = ratio(m.get("median_ms"), j.get("median_ms"))
        out["ratios"][kind] = {"median": med, "p95": ratio(m.get("p95_ms"), j.get("p95_ms"))}
        if med is not None:
            out["met"][f"DHT {kind} median <= js"] = med <= 1.0
    return out


def render(res: dict[str, Any]) -> list[str]:
    opts = res["options"]
    lines: list[str] = []
    net = res.get("network")
    if res.get("network_skipped"):
        lines.append(f"DHT network: skipped ({res['network_skipped']})")
    if net:
        ev = evaluate(res)
        lines += [
            f"DHT: {opts['mycel']} mycel + {opts['js']} js-libp2p kad-dht servers (one process each) on 127.0.0.1, "
            f"each dialing {opts['dials']} (ring + chords, seed {opts['seed']}), tables warmed by a self-lookup; "
            f"{opts['ops']} ops of each kind per asker (ms, driver wall time; msgs = requests sent by the asker)",
            f"{'operation':<15} {'mycel med':>9} {'p95':>7} {'msgs':>5} {'ok':>5} | {'js med':>7} {'p95':>7} {'msgs':>5} {'ok':>5} | "
            f"{'med ratio':>9} {'p95 ratio':>9}",
        ]
        for kind in KINDS:
            m, j = net["ops"]["mycel"][kind], net["ops"]["js"][kind]
            r = ev["ratios"][kind]
            total = opts["ops"]
            lines.append(
                f"{kind:<15} {fmt(m['median_ms']):>9} {fmt(m['p95_ms']):>7} {fmt(m['msgs_median'], '.0f'):>5} "
                f"{m['n']:>2}/{total:<2} | {fmt(j['median_ms']):>7} {fmt(j['p95_ms']):>7} {'n/a':>5} {j['n']:>2}/{total:<2} | "
                f"{fmt(r['median'], '.2f'):>8}x {fmt(r['p95'], '.2f'):>8}x"
            )
        for who in ASKERS:
            for kind in KINDS:
                if net["ops"][who][kind]["failures"]:
                    lines.append(f"  {who} {kind}: {net['ops'][who][kind]['failures']} failed, e.g. {net['ops'][who][kind]['first_failure']}")
        sizes = net["table_sizes"]
        lines.append(
            f"  routing tables after warm-up: {min(sizes.values())}-{max(sizes.values())} peers; startup {net['startup_s']:.1f}s, "
            f"warm-up {net['warm_s']:.1f}s, puts/provides {net['setup_s']:.1f}s, total {net['total_s']:.1f}s; "
            "js msgs: n/a (kad-dht exposes no sent-request counter)"
        )
        met = ev["met"]
        lines.append("  target (issue 11) mycel median <= js: " + ", ".join(f"{k.split()[1]} {'yes' if v else 'NO'}" for k, v in met.items()))
    mem = res.get("memory")
    if mem:
        lines.append(
            f"DHT memory (mycel, tracemalloc): routing table {mem['table_entries']} entries {fmt(mem['bytes_per_table_entry'], '.0f')} B/entry; "
            f"provider store {mem['provider_records']} records ({mem['provider_keys']} keys) {fmt(mem['bytes_per_provider_record'], '.0f')} B/record "
            "(peer ids, keys and addresses made beforehand, not counted)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 hosts, 2 ops each (a smoke run)")
    parser.add_argument("--mycel", type=int)
    parser.add_argument("--js", type=int)
    parser.add_argument("--dials", type=int)
    parser.add_argument("--ops", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--timeout", type=float)
    parser.add_argument("--only", nargs="+", choices=["network", "memory"], default=["network", "memory"])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "WARNING"), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    opts = Options.quick() if args.quick else Options()
    for name in ("mycel", "js", "dials", "ops", "seed", "timeout"):
        if getattr(args, name) is not None:
            setattr(opts, name, getattr(args, name))
    if opts.mycel < 1 or opts.js < 1:
        parser.error("--mycel and --js must be at least 1 (the askers)")
    res = run(opts, args.only)
    print("\n".join(render(res)))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
