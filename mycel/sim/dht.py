"""The DHT at scale on :mod:`mycel.sim`: N real hosts running the real :class:`~mycel.protocols.kad.KadDHT`
server over the simulated network, on virtual time, every routing table built by real bootstrap, and the
figures of issue #15's "DHT at scale" measured against the ground truth the simulation knows.

The scenario (each phase can be left out with :attr:`DhtOptions.phases`):

1. **Join.** Servers come up one after another (``join_interval`` apart). The first ``bootstrappers`` are the
   network's well-known peers; every later server is started with ``KadDHT(bootstrap=[those])``: it connects,
   identify tells it who serves kad, its table checks each before adding it, and it looks itself up. The
   table's own timer then refreshes every bucket and repeats the self-lookup 10 minutes after the server
   started (go's refresh interval); the run waits for that round to end. Nothing is injected into a table.
2. **FIND_NODE** (``find_node``): for each α in :attr:`DhtOptions.alphas` (set on every server; the same keys
   and askers), random keys are looked up by random servers; the answer must be the true 20 closest among all
   live servers (computed from their ids). Rounds (hops) and requests the asker sent are read from
   ``KadDHT.stats``, virtual time from ``query_observers``.
3. **PUT/GET, PROVIDE/FIND_PROVIDERS** with no churn (``ops``): a writer puts its ``/pk/`` record and provides
   a random multihash, another server gets the value and finds the writer as provider.
4. **Partition** (``partition``): half of the live servers are cut off from the rest (connections reset,
   dials across time out) for ``partition_seconds``; writers on one side put and provide meanwhile. After the
   heal, servers on the other side read those values, and values written after the heal; FIND_NODE is checked
   against the ground truth of the whole network again.
5. **Crash** (``crash``): ``crash_fraction`` of the servers crash (:meth:`SimNode.crash`: connections reset,
   nothing listens; the host is cancelled without a goodbye). The phase-3 values and providers are read again
   by live servers, and new writes are read back.
6. **Sybils** (``sybil``): ``sybils`` hosts from one /16 (``sybil_subnet``), with peer ids ground to sit near
   one honest target (common prefix lengths spread over the target's partly filled buckets), bootstrap like
   anyone, dial the target and ``sybil_links`` random servers, look the target up, and answer every query
   with each other (:class:`SybilDHT`). Honest servers then look up the target's and the Sybils' ids (each
   Sybil that answers is offered to the asker's table), and ``sybil_wait`` seconds later the Sybils' slots in
   every honest routing table are counted (the filter's cap is 3 per /16, 2 per CPL); the lookups of the
   target's key count the Sybils in their results.

The simulated IPs are 10.x.y.z; the servers run with ``group_private=True`` so that the diversity filter
groups them as it groups public addresses (each /16 stands for an operator's block). ``diversity=False`` in
:class:`DhtOptions` turns that off: the Sybils then meet no filter (the control run: the measurement can
fail). Security is plaintext and the muxer yamux (:mod:`mycel.sim.hosts`): modelled, not measured.
"""

from __future__ import annotations

import json
import logging
import math
import random
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio
from multiaddr import Multiaddr

from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.host import Host, open_host
from mycel.muxers import Yamux
from mycel.network.connmgr import ConnManagerConfig
from mycel.protocols.identify import Identify
from mycel.protocols.kad import dht_pb2
from mycel.protocols.kad.distance import common_prefix_length, kad_key, peer_key
from mycel.protocols.kad.routing import REFRESH_INTERVAL
from mycel.protocols.kad.service import FIX_LOW_PEERS_INTERVAL, KadDHT
from mycel.service import ServiceHost
from mycel.sim.hosts import sim_config
from mycel.sim.latency import Regions, Uniform
from mycel.sim.network import SimNetwork, SimNode

log = logging.getLogger("mycel.sim")

PHASES = ("find_node", "ops", "partition", "crash", "sybil")
"""The measured phases, in the order they run."""


@dataclass
class DhtOptions:
    """What the DHT scenario runs (see the module docstring for the phases)."""

    servers: int = 1000
    """Honest DHT servers."""
    seed: int = 0
    """Seed of the network, the identities, the DHTs' choices and the workload (same seed, same results)."""
    alphas: tuple[int, ...] = (3, 10)
    """α values measured by the FIND_NODE phase; the first is the servers' α everywhere else."""
    latency: str = "regions"
    """``regions`` (gossipsub-interop's 8) or ``uniform`` (25 ms +- 10 %)."""
    keys: int = 200
    """Random keys looked up per α (FIND_NODE phase)."""
    ops: int = 100
    """Writer/reader pairs per operation round (each does a PUT/GET and a PROVIDE/FIND_PROVIDERS)."""
    concurrency: int = 20
    """Lookups or operation pairs in flight at once (each from a different server)."""
    bootstrappers: int = 4
    """Well-known servers every later server bootstraps from."""
    join_interval: float = 0.1
    """Virtual seconds between two servers coming up."""
    refresh_round: bool = True
    """Wait for every table's first refresh (10 min after its server came up) before measuring; False:
    measure 60 s after the last server joined, on tables built by the bootstrap (connect, self-lookup) alone."""
    request_timeout: float = 10.0
    """``KadDHT.request_timeout``."""
    crash_fraction: float = 0.1
    """Share of the servers that crash in the crash phase."""
    partition_seconds: float = 60.0
    """How long half of the network is cut off."""
    sybils: int = 50
    """Sybil servers, all in :attr:`sybil_subnet`."""
    sybil_subnet: str = "10.99.0.0/16"
    """The one /16 of every Sybil."""
    sybil_links: int = 20
    """Random honest servers each Sybil dials (besides the bootstrappers and the target)."""
    sybil_cpls: int = 5
    """Sybil ids are spread over this many CPLs with the target, from where its buckets stop being full."""
    sybil_wait: float = 60.0
    """Virtual seconds from the honest lookups toward the Sybils to the count of their table slots (600 or
    more: every honest table runs its refresh meanwhile)."""
    diversity: bool = True
    """Whether honest servers group the simulated IPs in their diversity filter (False: the control run)."""
    conn_low: int = 32
    """Connection manager low watermark (kubo's default ``Swarm.ConnMgr.LowWater``)."""
    conn_high: int = 96
    """Connection manager high watermark (kubo's ``HighWater``)."""
    conn_grace: float = 20.0
    """Connection manager grace period, seconds (kubo's ``GracePeriod``)."""
    keepalive: float | None = None
    """Yamux keep-alive interval (None: no pings; the model's crash and cut reset connections, so nothing
    in the scenario depends on them, and at 1,000 servers idle pings are most of the scheduler's work)."""
    phases: tuple[str, ...] = PHASES
    """Which phases run (join always does)."""
    progress: Callable[[str], None] | None = None
    """Called with a line of progress now and then (None: quiet)."""


class SybilDHT(KadDHT):
    """A Sybil's DHT: the real server, except that every answer names the Sybils of its crew closest to
    the key (an eclipse attempt: lookups that reach a Sybil are steered to Sybils)."""

    def __init__(self, *, crew: list[tuple[PeerId, list[Multiaddr]]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.crew = crew
        """Every Sybil's id and addresses (shared by the crew, filled as they start)."""

    def _closer(self, host: ServiceHost, response: dht_pb2.Message, key: bytes, sender: PeerId) -> dht_pb2.Message:
        target = kad_key(key)
        for peer, addrs in sorted(self.crew, key=lambda entry: peer_key(entry[0]) ^ target)[: self.k]:
            if peer != sender:
                response.closerPeers.add(
                    id=peer.to_bytes(), addrs=[a.to_bytes() for a in addrs], connection=dht_pb2.Message.CONNECTED
                )
        return response


@dataclass
class _Server:
    index: int
    node: SimNode
    identity: Identity
    dht: KadDHT
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    host: Host | None = None
    alive: bool = True
    sybil: bool = False

    @property
    def peer_id(self) -> PeerId:
        return self.identity.peer_id

    @property
    def addr(self) -> str:
        return f"{self.node.listen_addr()}/p2p/{self.peer_id.to_base58()}"


@dataclass
class DhtResult:
    """What a DHT scenario run measured (``summary()`` is its JSON)."""

    options: DhtOptions
    """The options of the run."""
    figures: dict[str, Any]
    """Per phase: the measured figures."""
    wall_seconds: float
    """Wall-clock seconds of the run."""
    cpu_seconds: float
    """User + system CPU seconds of the run."""
    max_rss_mib: float
    """Peak resident memory of the process, MiB."""
    virtual_seconds: float
    """Virtual seconds the run lasted."""

    def summary(self) -> dict[str, Any]:
        """The JSON summary: options, figures and costs."""
        opts = {k: v for k, v in asdict(self.options).items() if k != "progress"}
        return {
            "scenario": "dht",
            "options": opts,
            "wall_seconds": round(self.wall_seconds, 1),
            "cpu_seconds": round(self.cpu_seconds, 1),
            "max_rss_mib": round(self.max_rss_mib, 1),
            "virtual_seconds": round(self.virtual_seconds, 1),
            **self.figures,
        }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _quantiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p95": None, "max": None}
    xs = sorted(values)
    return {
        "mean": round(statistics.fmean(xs), 3),
        "p50": round(xs[len(xs) // 2], 3),
        "p95": round(xs[min(len(xs) - 1, int(0.95 * len(xs)))], 3),
        "max": round(xs[-1], 3),
    }


def sybil_identities(target: PeerId, count: int, first_cpl: int, cpls: int, rng: random.Random) -> list[Identity]:
    """``count`` identities whose keys share ``first_cpl`` .. ``first_cpl + cpls - 1`` leading bits with
    ``target``'s (round-robin), ground by trial (about ``2 ** (cpl + 1)`` keys each)."""
    goal = peer_key(target)
    want = [first_cpl + i % cpls for i in range(count)]
    out: list[Identity | None] = [None] * count
    missing = {cpl: [i for i, c in enumerate(want) if c == cpl] for cpl in set(want)}
    while any(missing.values()):
        ident = Identity.from_seed(rng.randbytes(32))
        cpl = common_prefix_length(peer_key(ident.peer_id), goal)
        slots = missing.get(cpl)
        if slots:
            out[slots.pop()] = ident
    return [ident for ident in out if ident is not None]


class _Scenario:
    def __init__(self, opts: DhtOptions) -> None:
        if opts.latency not in ("regions", "uniform"):
            raise ValueError(f"latency must be 'regions' or 'uniform', not {opts.latency!r}")
        if not opts.alphas or any(a < 1 for a in opts.alphas):
            raise ValueError(f"alphas must be positive, got {opts.alphas!r}")
        unknown = set(opts.phases) - set(PHASES)
        if unknown:
            raise ValueError(f"unknown phases {sorted(unknown)}; known: {', '.join(PHASES)}")
        if opts.servers < max(2, opts.bootstrappers):
            raise ValueError("need at least 2 servers and no fewer than the bootstrappers")
        self.opts = opts
        self.rng = random.Random(opts.seed)
        latency = Regions() if opts.latency == "regions" else Uniform(0.025, 0.1)
        self.net = SimNetwork(seed=opts.seed, latency=latency)
        self.servers: list[_Server] = []
        self.sybils: list[_Server] = []
        self.crew: list[tuple[PeerId, list[Multiaddr]]] = []
        self.figures: dict[str, Any] = {}
        self.progress = opts.progress or (lambda text: None)
        self.t0 = 0.0
        self.wall0 = time.monotonic()
        self.cpu0 = _cpu()

    def say(self, text: str) -> None:
        self.progress(f"t={trio.current_time() - self.t0:7.1f}s  {text}")

    # -- hosts ------------------------------------------------------------------------------------------
    def _dht(self, i: int, bootstrap: Sequence[str]) -> KadDHT:
        return KadDHT(
            alpha=self.opts.alphas[0], seed=self.opts.seed * 1_000_003 + i, request_timeout=self.opts.request_timeout,
            bootstrap=bootstrap, group_private=self.opts.diversity,
        )

    async def _run_host(self, server: _Server, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        opts = self.opts
        config = sim_config(
            server.node, services=[Identify(), server.dht], identity=server.identity,
            muxers=[Yamux(keepalive_interval=opts.keepalive)],
            connmgr=ConnManagerConfig(low=opts.conn_low, high=opts.conn_high, grace=opts.conn_grace),
        )
        try:
            with server.scope:
                async with open_host(config) as host:
                    server.host = host
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            server.alive = False

    def live(self) -> list[_Server]:
        """Live honest servers."""
        return [s for s in self.servers if s.alive]

    async def join(self, nursery: trio.Nursery) -> None:
        opts = self.opts
        boot: list[str] = []
        for i in range(opts.servers):
            node = self.net.add_node()
            identity = Identity.from_seed(self.rng.randbytes(32))
            server = _Server(i, node, identity, self._dht(i, list(boot)))
            await trio.sleep_until(self.t0 + i * opts.join_interval)
            await nursery.start(self._run_host, server)
            self.servers.append(server)
            if i < opts.bootstrappers:
                boot.append(server.addr)
            if (i + 1) % max(1, opts.servers // 10) == 0:
                self.say(f"{i + 1} servers up ({time.monotonic() - self.wall0:.0f}s wall)")
        # every table refreshes all its buckets (and looks itself up again) 10 minutes after its server came
        # up: wait for the last server's round, plus time for its lookups to end; without that round, wait for
        # the tables' first low-peers repair (2 min: a table whose bootstrap dials were refused tries again)
        wait = REFRESH_INTERVAL + 60.0 if opts.refresh_round else FIX_LOW_PEERS_INTERVAL + 60.0
        await trio.sleep_until(self.t0 + (opts.servers - 1) * opts.join_interval + wait)
        self.figures["tables"] = self.table_figures()
        self.say(f"tables built: {self.figures['tables']}")

    def table_figures(self) -> dict[str, Any]:
        sizes = [len(s.dht.routing_table) for s in self.live()]
        healthy = sum(1 for s in self.live() if s.dht.health().healthy)
        return {
            "servers": len(sizes),
            "size_min": min(sizes),
            "size_median": sorted(sizes)[len(sizes) // 2],
            "size_max": max(sizes),
            "healthy": healthy,
            "connections_mean": round(statistics.fmean(len(s.node.connections) for s in self.live()), 1),
        }

    # -- FIND_NODE --------------------------------------------------------------------------------------
    def truth(self, key: bytes, asker: _Server, among: Sequence[_Server]) -> list[PeerId]:
        target = kad_key(key)
        ids = [s.peer_id for s in among if s is not asker]
        return sorted(ids, key=lambda p: peer_key(p) ^ target)[:20]

    async def find_node(self, keys: list[bytes], askers: list[_Server], alpha: int) -> dict[str, Any]:
        among = self.live()
        exact = 0
        overlap: list[float] = []
        rounds: list[float] = []
        requests: list[float] = []
        seconds: list[float] = []
        shared = 0  # lookups that ran while the asker ran another (its counters then hold both)
        misses: list[dict[str, Any]] = []  # the inexact lookups: what was missed, and whether requests failed

        async def one(key: bytes, asker: _Server) -> None:
            nonlocal exact, shared
            dht = asker.dht
            truth = self.truth(key, asker, among)
            before = dict(dht.stats)
            start = trio.current_time()
            found = await dht.closest_peers(key)
            seconds.append(trio.current_time() - start)
            exact += set(found) == set(truth)
            if set(found) != set(truth):
                rank = {p: r for r, p in enumerate(truth)}
                misses.append({
                    "missed_ranks": sorted(rank[p] for p in set(truth) - set(found)),
                    "failed_requests": dht.stats["request_failures"] - before["request_failures"],
                    "returned": len(found),
                })
            overlap.append(len(set(found) & set(truth)) / len(truth))
            if dht.stats["lookups"] - before["lookups"] != 1:
                shared += 1
            rounds.append(dht.stats["lookup_rounds"] - before["lookup_rounds"])
            requests.append(dht.stats["requests_sent"] - before["requests_sent"])

        await self._batched([(one, key, asker) for key, asker in zip(keys, askers)])
        return {
            "alpha": alpha,
            "lookups": len(keys),
            "exact": exact,
            "exact_fraction": round(exact / len(keys), 4),
            "overlap_mean": round(statistics.fmean(overlap), 4),
            "rounds": _quantiles(rounds),
            "requests": _quantiles(requests),
            "virtual_seconds": _quantiles(seconds),
            "lookups_sharing_counters": shared,
            "inexact": misses[:20],
        }

    async def _batched(self, calls: list[tuple[Any, ...]]) -> None:
        """Run ``fn(*args)`` for each call, ``concurrency`` at a time (each batch's askers are distinct)."""
        step = self.opts.concurrency
        for at in range(0, len(calls), step):
            async with trio.open_nursery() as nursery:
                for fn, *args in calls[at : at + step]:
                    nursery.start_soon(fn, *args)

    def pick_askers(self, count: int, pool: Sequence[_Server]) -> list[_Server]:
        """``count`` servers from ``pool``, distinct within each batch of ``concurrency``."""
        out: list[_Server] = []
        step = self.opts.concurrency
        while len(out) < count:
            out += self.rng.sample(list(pool), min(step, len(pool), count - len(out)))
        return out

    async def phase_find_node(self) -> None:
        keys = [self.rng.randbytes(32) for _ in range(self.opts.keys)]
        askers = self.pick_askers(len(keys), self.live())
        results = []
        for alpha in self.opts.alphas:
            for s in self.live():
                s.dht.alpha = alpha
            result = await self.find_node(keys, askers, alpha)
            results.append(result)
            self.say(f"FIND_NODE alpha={alpha}: {result['exact']}/{result['lookups']} exact, rounds {result['rounds']}, requests {result['requests']}")
        for s in self.live():
            s.dht.alpha = self.opts.alphas[0]
        self.figures["find_node"] = results

    # -- operations -------------------------------------------------------------------------------------
    async def write(self, writer: _Server, mh: bytes) -> bool:
        """PUT the writer's /pk/ record and PROVIDE ``mh``; True when both reached at least one peer."""
        host = writer.host
        assert host is not None
        stored = await writer.dht.put(b"/pk/" + writer.peer_id.to_bytes(), host.identity.private_key.public_key.to_protobuf())
        delivered = await writer.dht.provide(mh)
        return stored > 0 and delivered > 0

    async def read(self, reader: _Server, writer: _Server, mh: bytes) -> tuple[bool, bool]:
        """GET the writer's value and FIND_PROVIDERS ``mh`` from ``reader``: (value right, writer found)."""
        value = await reader.dht.get(b"/pk/" + writer.peer_id.to_bytes())
        got = value == writer.identity.private_key.public_key.to_protobuf()
        found = [r.peer async for r in reader.dht.find_providers(mh, limit=1)]
        return got, found == [writer.peer_id]

    async def round_trips(
        self, pairs: list[tuple[_Server, _Server, bytes]], *, write: bool = True
    ) -> dict[str, Any]:
        """For each (writer, reader, multihash): write (unless done before), then read; counts."""
        counts: dict[str, Any] = {"pairs": len(pairs), "put_stored": 0, "get_ok": 0, "find_providers_ok": 0}
        failed: list[int] = []

        async def one(k: int, writer: _Server, reader: _Server, mh: bytes) -> None:
            if write:
                stored = await self.write(writer, mh)
                counts["put_stored"] += stored
            got, found = await self.read(reader, writer, mh)
            counts["get_ok"] += got
            counts["find_providers_ok"] += found
            if not (got and found):
                failed.append(k)

        await self._batched([(one, k, *pair) for k, pair in enumerate(pairs)])
        n = max(1, len(pairs))
        counts["get_fraction"] = round(counts["get_ok"] / n, 4)
        counts["find_providers_fraction"] = round(counts["find_providers_ok"] / n, 4)
        counts["failed_pairs"] = sorted(failed)[:20]
        if not write:
            del counts["put_stored"]
        return counts

    def pairs(self, count: int, writers: Sequence[_Server], readers: Sequence[_Server]) -> list[tuple[_Server, _Server, bytes]]:
        """``count`` (writer, reader, random multihash): writers distinct (a /pk/ key per writer)."""
        chosen = self.rng.sample(list(writers), min(count, len(writers)))
        out = []
        for w in chosen:
            r = self.rng.choice([s for s in readers if s is not w])
            out.append((w, r, bytes.fromhex("1220") + self.rng.randbytes(32)))
        return out

    async def phase_ops(self) -> list[tuple[_Server, _Server, bytes]]:
        live = self.live()
        pairs = self.pairs(self.opts.ops, live, live)
        result = await self.round_trips(pairs)
        self.figures["ops_no_churn"] = result
        self.say(f"no churn: {result}")
        return pairs

    # -- partition --------------------------------------------------------------------------------------
    async def phase_partition(self) -> None:
        live = self.live()
        side_a = self.rng.sample(live, len(live) // 2)
        in_a = {id(s) for s in side_a}
        side_b = [s for s in live if id(s) not in in_a]
        start = trio.current_time()
        self.net.partition([[s.node for s in side_a]], cut=True)
        self.say(f"partition: {len(side_a)} servers cut off from {len(side_b)}")
        half = max(1, self.opts.ops // 2)
        during = self.pairs(half, side_a, side_b)
        written = [0]

        async def write_one(writer: _Server, _: _Server, mh: bytes) -> None:
            ok = await self.write(writer, mh)
            written[0] += ok

        await self._batched([(write_one, *pair) for pair in during])
        await trio.sleep_until(start + self.opts.partition_seconds)
        self.net.heal()
        healed = trio.current_time()
        self.say("partition healed")
        read_during = await self.round_trips(during, write=False)
        after = self.pairs(half, [s for s in side_a if all(s is not p[0] for p in during)], side_b)
        read_after = await self.round_trips(after)
        keys = [self.rng.randbytes(32) for _ in range(max(1, self.opts.keys // 4))]
        found = await self.find_node(keys, self.pick_askers(len(keys), live), self.opts.alphas[0])
        self.figures["partition"] = {
            "servers": len(live),
            "cut_off": len(side_a),
            "seconds": round(healed - start, 1),
            "written_during": len(during),
            "writes_reaching_a_peer_during": written[0],
            "read_after_heal_of_values_written_during": read_during,
            "written_after_heal_read_from_other_side": read_after,
            "find_node_after_heal": found,
        }
        self.say(f"partition: read after heal {read_during}, written after heal {read_after}, FIND_NODE {found['exact']}/{found['lookups']}")

    # -- crash ------------------------------------------------------------------------------------------
    async def phase_crash(self, earlier: list[tuple[_Server, _Server, bytes]]) -> None:
        live = self.live()
        dead = self.rng.sample(live, int(len(live) * self.opts.crash_fraction))
        for s in dead:
            s.node.crash()
            s.scope.cancel()
            s.alive = False
        await trio.sleep(1.0)
        self.say(f"crashed {len(dead)} of {len(live)} servers")
        live = self.live()
        reread = [(w, r if r.alive else self.rng.choice(live), mh) for w, r, mh in earlier]
        before = await self.round_trips(reread, write=False) if reread else None
        after = await self.round_trips(self.pairs(self.opts.ops, live, live))
        self.figures["crash"] = {
            "crashed": len(dead),
            "live": len(live),
            "written_before_read_after": before,
            "written_and_read_after": after,
        }
        self.say(f"crash: re-read {before}, new {after}")

    # -- Sybils -----------------------------------------------------------------------------------------
    async def phase_sybil(self, nursery: trio.Nursery) -> None:
        opts = self.opts
        live = self.live()
        target = self.rng.choice(live)
        boot = [s.addr for s in self.servers[: opts.bootstrappers] if s.alive] or [self.rng.choice(live).addr]
        first = max(1, int(math.log2(max(2.0, len(live) / 20))))
        idents = sybil_identities(target.peer_id, opts.sybils, first, opts.sybil_cpls, self.rng)
        self.say(f"{len(idents)} Sybils ground at CPL {first}..{first + opts.sybil_cpls - 1} of the target")
        joined = trio.current_time()
        for j, ident in enumerate(idents):
            node = self.net.add_node(subnet=opts.sybil_subnet)
            dht = SybilDHT(
                crew=self.crew, alpha=opts.alphas[0], seed=opts.seed * 7_000_003 + j, request_timeout=opts.request_timeout,
                bootstrap=boot, diversity=False,
            )
            sybil = _Server(len(self.servers) + j, node, ident, dht, sybil=True)
            self.crew.append((ident.peer_id, [Multiaddr(node.listen_addr())]))
            await nursery.start(self._run_host, sybil)
            self.sybils.append(sybil)

        async def push(sybil: _Server) -> None:
            host = sybil.host
            assert host is not None
            for honest in [target, *self.rng.sample(live, min(opts.sybil_links, len(live)))]:
                try:
                    await host.connect(honest.peer_id, [Multiaddr(honest.node.listen_addr())])
                except Exception as exc:  # a refused dial is the attacker's problem
                    log.debug("Sybil dial failed: %r", exc)
            await sybil.dht.closest_peers(target.peer_id.to_bytes())

        async with trio.open_nursery() as inner:
            for sybil in self.sybils:
                inner.start_soon(push, sybil)
        self.say("Sybils connected; honest servers look up the target and the Sybils")
        ids = {s.peer_id for s in self.sybils}
        # honest lookups into the Sybils' region: every answer from a Sybil names Sybils, and each Sybil that
        # answers is offered to the asker's table (the second way in, besides connecting)
        keys = [target.peer_id.to_bytes() if k % 2 == 0 else self.rng.choice(self.sybils).peer_id.to_bytes()
                for k in range(max(2, opts.keys // 2))]
        askers = self.pick_askers(len(keys), [s for s in self.live() if s is not target])
        in_results: list[int] = []

        async def look(key: bytes, asker: _Server) -> None:
            found = await asker.dht.closest_peers(key)
            if key == target.peer_id.to_bytes():
                in_results.append(sum(1 for p in found if p in ids))

        await self._batched([(look, key, asker) for key, asker in zip(keys, askers)])
        await trio.sleep(opts.sybil_wait)
        per_node = []
        per_cpl_max = 0
        for s in self.live():
            table = s.dht.routing_table
            held = [p for p in table.peers() if p in ids]
            per_node.append(len(held))
            cpls: dict[int, int] = {}
            for p in held:
                info = table.info(p)
                if info is not None:
                    cpls[info.cpl] = cpls.get(info.cpl, 0) + 1
            per_cpl_max = max([per_cpl_max, *cpls.values()])
        target_held = sum(1 for p in target.dht.routing_table.peers() if p in ids)
        self.figures["sybil"] = {
            "sybils": len(self.sybils),
            "subnet": opts.sybil_subnet,
            "diversity_filter": opts.diversity,
            "cpls_with_target": [first, first + opts.sybil_cpls - 1],
            "honest_servers": len(per_node),
            "max_slots_in_any_honest_table": max(per_node),
            "max_slots_per_cpl": per_cpl_max,
            "honest_tables_holding_a_sybil": sum(1 for n in per_node if n),
            "slots_in_target_table": target_held,
            "lookups_of_target": len(in_results),
            "seconds_from_arrival_to_count": round(trio.current_time() - joined, 1),
            "honest_lookups": len(keys),
            "max_sybils_in_a_lookup_result": max(in_results),
            "mean_sybils_in_a_lookup_result": round(statistics.fmean(in_results), 2),
        }
        self.say(f"Sybils: {self.figures['sybil']}")

    # -- the run ----------------------------------------------------------------------------------------
    async def run(self) -> DhtResult:
        self.t0 = trio.current_time()
        phases = self.opts.phases
        async with trio.open_nursery() as outer:
            await outer.start(self.net.run)
            async with trio.open_nursery() as hosts:
                await self.join(hosts)
                earlier: list[tuple[_Server, _Server, bytes]] = []
                for name in PHASES:
                    if name not in phases:
                        continue
                    cpu, wall, at = _cpu(), time.monotonic(), trio.current_time()
                    if name == "find_node":
                        await self.phase_find_node()
                    elif name == "ops":
                        earlier = await self.phase_ops()
                    elif name == "partition":
                        await self.phase_partition()
                    elif name == "crash":
                        await self.phase_crash(earlier)
                    else:
                        await self.phase_sybil(hosts)
                    self.figures.setdefault("phase_costs", {})[name] = {
                        "cpu_seconds": round(_cpu() - cpu, 1), "wall_seconds": round(time.monotonic() - wall, 1),
                        "virtual_seconds": round(trio.current_time() - at, 1),
                    }
                totals: dict[str, int] = {}
                for s in self.servers:
                    for key, value in s.dht.stats.items():
                        totals[key] = totals.get(key, 0) + value
                self.figures["dht_totals"] = totals
                hosts.cancel_scope.cancel()
            outer.cancel_scope.cancel()
        return DhtResult(
            options=self.opts,
            figures=self.figures,
            wall_seconds=time.monotonic() - self.wall0,
            cpu_seconds=_cpu() - self.cpu0,
            max_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            virtual_seconds=trio.current_time() - self.t0,
        )


async def run_dht_async(opts: DhtOptions) -> DhtResult:
    """Run the DHT scenario (under ``trio.run(..., clock=MockClock(autojump_threshold=0))``)."""
    return await _Scenario(opts).run()


def run_dht(opts: DhtOptions) -> DhtResult:
    """:func:`run_dht_async` in a fresh ``trio.run`` on virtual time, trio's scheduler seeded."""
    from mycel.sim.runner import run_virtual

    return run_virtual(run_dht_async, opts, seed=opts.seed)


# -- reports ----------------------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


def _frac(counts: dict[str, Any] | None, key: str) -> str:
    if not counts:
        return "–"
    ok = counts[f"{key}_ok"]
    return f"{ok}/{counts['pairs']} ({_pct(ok / counts['pairs'] if counts['pairs'] else None)})"


def markdown_lines(summary: dict[str, Any], *, heading: str = "##") -> list[str]:
    """The markdown of one DHT run's summary (a section of a report)."""
    o = summary["options"]
    refresh = "then the tables' own refresh after 10 min" if o.get("refresh_round", True) else "the tables' 2-min low-peers repair, no 10-min refresh round waited for"
    lines = [
        f"{heading} DHT at scale: {o['servers']} servers, seed {o['seed']}, {o['latency']} latencies",
        "",
        f"Real hosts (identify, yamux, plaintext, `KadDHT` servers) on the simulated network; tables built by real "
        f"bootstrap ({o['bootstrappers']} well-known servers, one joining every {o['join_interval']} s, self-lookup, "
        f"{refresh}). Cost: {summary['cpu_seconds']} s CPU, {summary['wall_seconds']} s "
        f"wall, peak RSS {summary['max_rss_mib']} MiB, {summary['virtual_seconds']} virtual s.",
        "",
    ]
    t = summary.get("tables")
    if t:
        lines += [f"Routing tables after bootstrap: {t['size_min']}–{t['size_max']} peers (median {t['size_median']}), "
                  f"{t['healthy']}/{t['servers']} healthy, {t['connections_mean']} connections per server on average.", ""]
    fn = summary.get("find_node")
    if fn:
        lines += [
            "| α | lookups | true 20 closest | mean overlap | rounds mean / p50 / p95 / max | requests mean / p50 / p95 / max | virtual s p50 / p95 |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in fn:
            ro, rq, vs = r["rounds"], r["requests"], r["virtual_seconds"]
            lines.append(
                f"| {r['alpha']} | {r['lookups']} | {r['exact']} ({_pct(r['exact_fraction'])}) | {_pct(r['overlap_mean'])} | "
                f"{ro['mean']} / {ro['p50']} / {ro['p95']} / {ro['max']} | {rq['mean']} / {rq['p50']} / {rq['p95']} / {rq['max']} | "
                f"{vs['p50']} / {vs['p95']} |"
            )
        lines.append("")
    rows: list[tuple[str, dict[str, Any] | None]] = []
    if "ops_no_churn" in summary:
        rows.append(("no churn", summary["ops_no_churn"]))
    p = summary.get("partition")
    if p:
        rows.append((f"written on one side during a {p['seconds']} s partition, read from the other after the heal",
                     p["read_after_heal_of_values_written_during"]))
        rows.append(("written on one side after the heal, read from the other", p["written_after_heal_read_from_other_side"]))
    c = summary.get("crash")
    if c:
        rows.append((f"written before {c['crashed']} servers crashed, read after", c["written_before_read_after"]))
        rows.append((f"written and read with {c['crashed']} of {c['crashed'] + c['live']} servers crashed", c["written_and_read_after"]))
    if rows:
        lines += ["| operations | GET | FIND_PROVIDERS |", "|---|---|---|"]
        for label, counts in rows:
            lines.append(f"| {label} | {_frac(counts, 'get')} | {_frac(counts, 'find_providers')} |")
        lines.append("")
    if p:
        f = p["find_node_after_heal"]
        lines += [f"After the heal, FIND_NODE returned the true 20 closest of the whole network for {f['exact']}/{f['lookups']} keys.", ""]
    s = summary.get("sybil")
    if s:
        lines += [
            f"Sybils: {s['sybils']} servers in {s['subnet']}, ids at CPL {s['cpls_with_target'][0]}–{s['cpls_with_target'][1]} "
            f"of one target, answering every query with each other (diversity filter {'on' if s['diversity_filter'] else 'OFF: control run'}). "
            f"{s['seconds_from_arrival_to_count']} s after they came, and after {s['honest_lookups']} honest lookups "
            f"of the target's and the Sybils' ids: at most **{s['max_slots_in_any_honest_table']} slots in any of {s['honest_servers']} honest tables** "
            f"(at most {s['max_slots_per_cpl']} per CPL; {s['honest_tables_holding_a_sybil']} tables hold one or more; the target's holds "
            f"{s['slots_in_target_table']}); {s['lookups_of_target']} lookups of the target's key returned at most "
            f"{s['max_sybils_in_a_lookup_result']} Sybils (mean {s['mean_sybils_in_a_lookup_result']}).",
            "",
        ]
    costs = summary.get("phase_costs")
    if costs:
        lines.append("Phase costs (CPU s / wall s / virtual s): " + ", ".join(
            f"{k} {v['cpu_seconds']} / {v['wall_seconds']} / {v['virtual_seconds']}" for k, v in costs.items()) + ".")
        lines.append("")
    return lines


def write_dht(result: DhtResult, out: str | Path) -> dict[str, Any]:
    """Write ``summary.json`` and ``summary.md`` of a run into ``out``; returns the summary."""
    base = Path(out)
    base.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    (base / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (base / "summary.md").write_text("\n".join(markdown_lines(summary, heading="#")) + "\n")
    return summary


def evaluation_lines(out: str | Path, opts: DhtOptions) -> list[str]:
    """Run the scenario for ``make sim`` and return its report section (the run's files go to ``out``)."""
    summary = write_dht(run_dht(opts), out)
    return markdown_lines(summary)


__all__ = [
    "PHASES",
    "DhtOptions",
    "DhtResult",
    "SybilDHT",
    "evaluation_lines",
    "markdown_lines",
    "run_dht",
    "run_dht_async",
    "sybil_identities",
    "write_dht",
]
