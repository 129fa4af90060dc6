"""The Metrics service: Prometheus metrics of one host, and an HTTP exporter for them.

Two kinds of figures, both in a ``CollectorRegistry`` of the host's own:

* **Counted as they happen**, from the service hooks and the host's events: connections opened and
  closed with go's labels (``libp2p_swarm_connections_opened_total{dir,transport,security,muxer,
  early_muxer,ip_version}``, ``..._closed_total``, ``libp2p_swarm_connection_duration_seconds``), streams
  negotiated by protocol and direction (``mycel_streams_opened_total``, from ``StreamOpened`` events
  through a bounded subscription: events it misses are counted in ``mycel_metrics_events_dropped_total``).
* **Read at scrape time** (:class:`HostCollector`, nothing polled between scrapes): open connections
  and streams, the resource manager's usage and refusals (``libp2p_rcmgr_*``), bytes in/out, ping RTTs,
  reachability, and — when the host runs them — gossipsub (mesh and topic peers, message counters,
  peer scores), the DHT (table size, buckets, requests, lookups), circuit relay (reservations held
  and granted, circuits), DCUtR hole-punch outcomes and AutoNAT's probes.

Fed by the swarm and the DHT as they happen: go's ``libp2p_swarm_handshake_latency_seconds`` and
``libp2p_swarm_dial_errors_total`` (the service is one of ``Swarm.observers``), and
``libp2p_kad_query_duration_seconds`` (one of ``KadDHT.query_observers``), through the tracer methods
:meth:`Metrics.completed_handshake`, :meth:`Metrics.failed_dialing` and :meth:`Metrics.completed_query`
(go's MetricsTracer shape).
Not measured: bytes per *protocol* (bytes are counted per connection, so the totals are per direction
only; per-protocol figures need per-stream byte counters in the muxers).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import trio
from multiaddr import Multiaddr

try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "mycel's metrics need prometheus_client: pip install 'mycel[metrics]'"
    ) from exc

from mycel.core.abc import Connection
from mycel.core.addrs import Reachability
from mycel.core.errors import MycelError
from mycel.core.events import StreamOpened
from mycel.host import Host
from mycel.metrics.config import MetricsConfig
from mycel.metrics.introspect import (
    ConnectionTotals,
    connection_labels,
    direction_label,
    find_service,
    inner_host,
    ip_version,
    transport_name,
)
from mycel.service import Service, ServiceHost, not_running
from mycel.web.http import HttpServer, Request, Response, parse_listen, text_response

log = logging.getLogger("mycel.metrics")

CONN_LABELS = ("dir", "transport", "security", "muxer", "early_muxer", "ip_version")
EVENT_QUEUE = 1024  # the subscription's bound: beyond, events are dropped (and counted)
DURATION_BUCKETS = tuple(2.0**i / 16 for i in range(25))  # go's ExponentialBuckets(1/16, 2, 25): up to 24 days
HANDSHAKE_BUCKETS = tuple(0.001 * 1.3**i for i in range(35))  # go's ExponentialBuckets(0.001, 1.3, 35)
QUERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RTT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
REACHABILITY_VALUE = {Reachability.UNKNOWN: 0, Reachability.PUBLIC: 1, Reachability.PRIVATE: 2}
"""``libp2p_autonat_reachability_status``'s values, as go's (network.Reachability)."""


class LabelBound:
    """Remembers the first ``limit`` values of a label; later new ones become ``"other"``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return "other"
        self._seen.add(value)
        return value


class Metrics(Service):
    """Prometheus metrics of the host it runs in (see the module docstring for what is measured).

    Turn it on with ``HostConfig(metrics=MetricsConfig())`` (or list ``Metrics()`` in ``services``);
    scrape ``http://<address>/metrics``. Each host gets its own registry unless one is passed in the
    config. The service never takes the host down: a failing scrape answers 500 and is logged.
    """

    def __init__(self, config: MetricsConfig | None = None) -> None:
        self.config = config or MetricsConfig()
        self.registry: CollectorRegistry | None = None
        """The registry the host's metrics are in (set while running)."""
        self.address: tuple[str, int] | None = None
        """The exporter's bound ``(host, port)`` while it serves."""
        self.server: HttpServer | None = None
        self.events_dropped = 0
        self._host: ServiceHost | None = None
        self._totals = ConnectionTotals()
        self._protocols = LabelBound(self.config.max_label_values)
        self._collector: HostCollector | None = None
        self._registered: list[Any] = []

    def clone(self) -> Metrics:
        """A fresh service for another host (its own registry unless the config names one)."""
        return Metrics(self.config)

    # -- the service --------------------------------------------------------------------------------
    async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._host = host
        self._build(self.config.registry if self.config.registry is not None else CollectorRegistry(auto_describe=False))
        try:
            async with trio.open_nursery() as nursery:
                if self.config.listen is not None:
                    bind_host, port = parse_listen(self.config.listen)
                    self.server = HttpServer(self._handle, name="metrics exporter")
                    self.address = await nursery.start(self.server.serve, bind_host, port)
                    log.info("metrics: serving http://%s:%d/metrics", *self._url_parts())
                inner = inner_host(host)
                if inner is not None:
                    await nursery.start(self._count_events, inner)
                    self._observe_queries(inner)
                    inner.swarm.observers.append(self)  # handshake latencies, dial errors
                task_status.started()
        finally:
            self.address = None
            swarm_host = inner_host(host)
            if swarm_host is not None and self in swarm_host.swarm.observers:
                swarm_host.swarm.observers.remove(self)
            if self.registry is not None:  # a registry passed in may outlive the host: leave it clean
                for c in self._registered:
                    try:
                        self.registry.unregister(c)
                    except KeyError:
                        pass
                self._registered = []

    def _url_parts(self) -> tuple[str, int]:
        assert self.address is not None
        h, p = self.address
        return (f"[{h}]" if ":" in h else h), p

    @property
    def url(self) -> str:
        """``http://host:port/metrics`` of the running exporter."""
        if self.address is None:
            raise not_running(self)
        h, p = self._url_parts()
        return f"http://{h}:{p}/metrics"

    def _build(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.conns_opened = Counter(
            "libp2p_swarm_connections_opened", "Connections opened", CONN_LABELS, registry=None
        )
        self.conns_closed = Counter(
            "libp2p_swarm_connections_closed", "Connections closed", CONN_LABELS, registry=None
        )
        self.conn_duration = Histogram(
            "libp2p_swarm_connection_duration_seconds", "Duration of a connection", CONN_LABELS,
            buckets=DURATION_BUCKETS, registry=None,
        )
        self.key_types = Counter("libp2p_swarm_key_types", "Key types of the peers connected", ("dir", "key_type"), registry=None)
        self.streams_opened = Counter(
            "mycel_streams_opened", "Streams negotiated, by protocol and direction", ("protocol", "dir"), registry=None
        )
        self.events_dropped_metric = Counter(
            "mycel_metrics_events_dropped", "Host events the metrics subscription missed (its queue was full)", registry=None
        )
        # filled through the tracer methods below (the swarm's and the DHT's observers call them)
        self.handshake_latency = Histogram(
            "libp2p_swarm_handshake_latency_seconds", "Duration of the libp2p handshake", CONN_LABELS[1:],
            buckets=HANDSHAKE_BUCKETS, registry=None,
        )
        self.dial_errors = Counter(
            "libp2p_swarm_dial_errors", "Dials that failed", ("transport", "error", "ip_version"), registry=None
        )
        self.query_duration = Histogram(
            "libp2p_kad_query_duration_seconds", "Duration of DHT queries", ("kind",), buckets=QUERY_BUCKETS, registry=None
        )
        self._collector = HostCollector(self)
        self._registered = [
            self.conns_opened, self.conns_closed, self.conn_duration, self.key_types, self.streams_opened,
            self.events_dropped_metric, self.handshake_latency, self.dial_errors, self.query_duration, self._collector,
        ]  # fmt: skip
        for c in self._registered:
            registry.register(c)

    async def _count_events(self, host: Host, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with host.subscribe(EVENT_QUEUE) as events:
            task_status.started()
            async for event in events:
                if isinstance(event, StreamOpened):
                    proto = self._protocols(event.protocol)
                    self.streams_opened.labels(proto, direction_label(event.direction)).inc()
                missed = events.dropped - self.events_dropped
                if missed > 0:
                    self.events_dropped += missed
                    self.events_dropped_metric.inc(missed)

    def connection_opened(self, host: ServiceHost, conn: Connection) -> None:
        labels = connection_labels(conn)
        self.conns_opened.labels(**labels).inc()
        try:
            key_type = conn.remote_public_key.key_type.name.lower()
        except (AttributeError, MycelError):
            key_type = "unknown"
        self.key_types.labels(labels["dir"], key_type).inc()

    def connection_closed(self, host: ServiceHost, conn: Connection, remaining: int) -> None:
        labels = connection_labels(conn)
        self.conns_closed.labels(**labels).inc()
        stats = conn.stats
        if stats.opened_at:
            self.conn_duration.labels(**labels).observe(max(0.0, trio.current_time() - stats.opened_at))
        self._totals.closed(conn)

    # -- tracer methods: for the swarm and the DHT to call once they offer a timing callback -------------
    def completed_handshake(self, conn: Connection, seconds: float) -> None:
        """A connection's handshake (security and muxer) took ``seconds`` (go's CompletedHandshake)."""
        if self.registry is not None:
            labels = connection_labels(conn)
            del labels["dir"]
            self.handshake_latency.labels(**labels).observe(seconds)

    def failed_dialing(self, addr: Multiaddr, error: BaseException) -> None:
        """A dial of ``addr`` failed (go's FailedDialing: ``timeout``, ``connection refused``, ``other``)."""
        if self.registry is None:
            return
        if isinstance(error, (trio.TooSlowError, TimeoutError)):
            kind = "timeout"
        elif isinstance(error, ConnectionRefusedError) or "refused" in str(error):
            kind = "connection refused"
        else:
            kind = "other"
        self.dial_errors.labels(transport_name(addr), kind, ip_version(addr)).inc()

    def _observe_queries(self, host: Host) -> None:
        """Hear the DHT's query durations (the service object exists before it runs, and survives restarts)."""
        from mycel.protocols.kad.service import KadDHT

        dht = find_service(host, KadDHT)
        if dht is not None and self.completed_query not in dht.query_observers:
            dht.query_observers.append(self.completed_query)

    def completed_query(self, kind: str, seconds: float) -> None:
        """A DHT query of ``kind`` (``find_peer``, ``get``, ``provide``, ...) took ``seconds``."""
        if self.registry is not None:
            self.query_duration.labels(self._protocols(kind)).observe(seconds)

    # -- the exporter -------------------------------------------------------------------------------
    async def _handle(self, request: Request) -> Response:
        if request.path not in ("/metrics", "/"):
            return text_response(404, "not found: try /metrics\n")
        if self.registry is None:
            return text_response(503, "not running\n")
        return Response(200, CONTENT_TYPE_LATEST, generate_latest(self.registry))

    def scrape(self) -> bytes:
        """The exposition text of this host's registry, as ``/metrics`` serves it."""
        if self.registry is None:
            raise not_running(self)
        return generate_latest(self.registry)

    def totals(self) -> dict[str, int]:
        """Bytes and streams of every connection so far, closed and open (:class:`ConnectionTotals`)."""
        return self._totals.now(self._host.connections() if self._host is not None else [])


class HostCollector(Collector):
    """Reads a host's state when Prometheus scrapes (each part skipped, and logged, if it fails)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        """Nothing to pre-declare: the names depend on the services the host runs."""
        return []

    def collect(self) -> Iterator[Any]:
        """Every figure read now."""
        view = self.metrics._host
        if view is None:
            return
        host = inner_host(view)
        parts = [self._swarm, self._resources, self._peers, self._reachability]
        if host is not None:
            parts += [self._gossipsub, self._kad, self._relay, self._dcutr, self._autonat]
        for part in parts:
            try:
                yield from part(view, host)
            except Exception:  # a figure missing from one scrape must not fail the scrape or the host
                log.exception("metrics: reading %s failed", part.__name__.strip("_"))

    # each part: (the service's view of the host, the concrete host or None)
    def _swarm(self, view: ServiceHost, host: Host | None) -> Iterator[Any]:
        conns = GaugeMetricFamily("mycel_connections", "Open connections", labels=["dir", "transport", "limited"])
        counts: dict[tuple[str, str, str], int] = {}
        for conn in view.connections():
            key = (direction_label(conn.direction), transport_name(conn.remote_addr), str(conn.limited).lower())
            counts[key] = counts.get(key, 0) + 1
        for key, n in sorted(counts.items()):
            conns.add_metric(list(key), n)
        yield conns
        yield _gauge("mycel_peers_connected", "Peers with at least one open connection", len(view.connected_peers()))
        t = self.metrics.totals()
        yield _family(
            CounterMetricFamily, "mycel_transport_bytes", "Bytes sent and received over every connection", "dir",
            {"sent": t["bytes_sent"], "received": t["bytes_received"]},
        )
        yield _family(
            CounterMetricFamily, "mycel_streams", "Streams opened on every connection, by direction", "dir",
            {"outbound": t["streams_opened"], "inbound": t["streams_accepted"]},
        )
        if host is not None:
            yield _family(
                CounterMetricFamily, "mycel_swarm_inbound_handshake_events",
                "Inbound handshakes admitted, refused, evicted and timed out", "event", host.swarm.stats(),
            )

    def _resources(self, view: ServiceHost, host: Host | None) -> Iterator[Any]:
        stats = view.resources.stats()
        conns = GaugeMetricFamily("libp2p_rcmgr_connections", "Connections reserved, by scope", labels=["dir", "scope"])
        streams = GaugeMetricFamily(
            "libp2p_rcmgr_streams", "Streams reserved, by scope (and protocol)", labels=["dir", "scope", "protocol"]
        )
        memory = GaugeMetricFamily("libp2p_rcmgr_memory", "Memory reserved, by scope", labels=["scope", "protocol"])
        fds = GaugeMetricFamily("libp2p_rcmgr_fds", "File descriptors reserved, by scope", labels=["scope"])
        for scope in ("system", "transient"):
            usage = stats[scope]
            for d in ("inbound", "outbound"):
                conns.add_metric([d, scope], usage[f"conns_{d}"])
                streams.add_metric([d, scope, ""], usage[f"streams_{d}"])
            memory.add_metric([scope, ""], usage["memory"])
            fds.add_metric([scope], usage["fds"])
        for proto, usage in sorted(stats["protocols"].items()):
            label = self.metrics._protocols(proto)
            for d in ("inbound", "outbound"):
                streams.add_metric([d, "protocol", label], usage[f"streams_{d}"])
            memory.add_metric(["protocol", label], usage["memory"])
        yield from (conns, streams, memory, fds)
        pending = GaugeMetricFamily(
            "mycel_connections_by_state", "Connections in their handshake (pending) and established", labels=["state", "dir"]
        )
        for key, n in sorted(stats["connections"].items()):
            state, _, d = key.partition("_")
            pending.add_metric([state, d], n)
        yield pending
        blocked = CounterMetricFamily(
            "libp2p_rcmgr_blocked_resources", "Reservations refused at a limit", labels=["dir", "scope", "resource"]
        )
        for (scope, resource), n in sorted(view.resources.refusals.items()):
            d = "inbound" if resource.endswith("_inbound") else "outbound" if resource.endswith("_outbound") else ""
            blocked.add_metric([d, scope, resource], n)
        yield blocked

    def _peers(self, view: ServiceHost, host: Host | None) -> Iterator[Any]:
        rtts = [view.peerstore.latency(p) for p in view.connected_peers()]
        samples = sorted(r for r in rtts if r is not None)
        yield _histogram(
            "mycel_peer_rtt_seconds", "Smoothed ping round-trip times of the connected peers", RTT_BUCKETS, samples
        )

    def _reachability(self, view: ServiceHost, host: Host | None) -> Iterator[Any]:
        yield _gauge(
            "libp2p_autonat_reachability_status", "Reachability (0 unknown, 1 public, 2 private), AutoNAT's verdict",
            REACHABILITY_VALUE.get(view.reachability, 0),
        )

    def _gossipsub(self, view: ServiceHost, host: Host | None) -> Iterator[Any]:
        from mycel.protocols.pubsub.service import Gossipsub

        assert host is not None
        gs = find_service(host, Gossipsub)
        if gs is None or not host.service_state(Gossipsub).running:
            return
        topics = sorted(gs.topics())
        mesh = GaugeMetricFamily("libp2p_gossipsub_mesh_peers", "Mesh peers, by topic", labels=["topic"])
        known = GaugeMetricFamily("libp2p_gossipsub_topic_peers", "Peers known to be subscribed, by topic", labels=["topic"])
        bound = LabelBound(self.metrics.config.max_label_values)
        folded: dict[str, tuple[int, int]] = {}
        for topic in topics:
            label = bound(topic)
            m, k = folded.get(label, (0, 0))
            folded[label] = (m + len(gs.mesh(topic)), k + len(gs.peers(topic)))
        for label, (m, k) in folded.items():
            mesh.add_metric([label], m)
            known.add_metric([label], k)
        yield mesh
        yield known
        stats = gs.stats()
        msgs = CounterMetricFamily(
            "libp2p_gossipsub_messages", "Gossipsub router counters (delivered, duplicates, dropped_to_peers, ...)",
            labels=["kind"],
        )
        sizes = GaugeMetricFamily("libp2p_gossipsub_table_size", "Gossipsub router table sizes", labels=["table"])
        tables = set(gs.router.stats())
        for name, n in sorted(stats.items()):
            (sizes if name in tables or name == "validating" else msgs).add_metric([name], n)
        yield msgs
        yield sizes
        scores = [b.score for b in gs.scores().values() if b.connected]
        summary = GaugeMetricFamily(
            "libp2p_gossipsub_peer_score", "Scores of the connected peers (min, mean, max; none when scoring is off)",
            labels=["stat"],
        )
        if scores:
            summary.add_metric(["min"], min(scores))
            summary.add_metric(["mean"], sum(scores) / len(scores))
            summary.add_metric(["max"], max(scores))
        yield summary
        yield _gauge("libp2p_gossipsub_negative_score_peers", "Connected peers with a score below 0", sum(1 for x in scores if x < 0))

    def _kad(self, view: ServiceHost, host: Host | None) -> Iterator[Any]:
        from mycel.protocols.kad.service import KadDHT

        assert host is not None
        dht = find_service(host, KadDHT)
        if dht is None or not host.service_state(KadDHT).running:
            return
        health = dht.health()
        yield _gauge("libp2p_kad_routing_table_size", "Peers in the DHT routing table", health.size)
        yield _family(
            GaugeMetricFamily, "libp2p_kad_routing_table_bucket_peers", "Peers per k-bucket (by CPL)", "bucket",
            {str(i): n for i, n in enumerate(health.buckets)},
        )
        yield _gauge("libp2p_kad_routing_table_connected", "Routing-table peers connected now", health.connected)
        yield _family(CounterMetricFamily, "libp2p_kad_requests", "DHT requests and lookups, by kind", "kind", dht.stats)

    def _relay(self, view: ServiceHost, host: Host | None) -> Iterator[Any]:
        from mycel.protocols.relay.service import CircuitRelay
        from mycel.protocols.relay.transport import RelayTransport

        assert host is not None
        held = sum(len(t.reservations()) for t in host.transports if isinstance(t, RelayTransport))
        yield _gauge("mycel_relay_client_reservations", "Reservations this host holds on relays", held)
        relay = find_service(host, CircuitRelay)
        if relay is None or not host.service_state(CircuitRelay).running:
            return
        core = relay.core
        yield _gauge("libp2p_relaysvc_reservations", "Reservations this relay grants now", core.reservation_count)
        yield _gauge("libp2p_relaysvc_connections", "Circuits open through this relay", core.circuit_count)
        relayed = CounterMetricFamily("libp2p_relaysvc_data_transferred_bytes", "Bytes copied through this relay")
        relayed.add_metric([], relay.bytes_relayed)
        yield relayed
        yield _family(CounterMetricFamily, "libp2p_relaysvc_refusals", "Relay requests refused, by kind", "kind", relay.refusals)

    def _dcutr(self, view: ServiceHost, host: Host | None) -> Iterator[Any]:
        from mycel.protocols.dcutr.service import DCUtR

        assert host is not None
        dcutr = find_service(host, DCUtR)
        if dcutr is None:
            return
        yield _family(
            CounterMetricFamily, "libp2p_holepunch_outcomes",
            "Hole punches by outcome (started, succeeded, failed, skipped, answered)", "outcome", dcutr.stats,
        )

    def _autonat(self, view: ServiceHost, host: Host | None) -> Iterator[Any]:
        try:
            from mycel.protocols.autonat.service import AutoNAT
        except ImportError:  # AutoNAT not in this build: only the reachability gauge above
            return
        assert host is not None
        autonat = find_service(host, AutoNAT)
        if autonat is None:
            return
        yield _family(CounterMetricFamily, "libp2p_autonat_events", "AutoNAT probes and requests, by kind", "kind", autonat.stats)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    """A gauge with one unlabelled value."""
    g = GaugeMetricFamily(name, doc)
    g.add_metric([], value)
    return g


def _family(kind: Any, name: str, doc: str, label: str, values: Mapping[str, int]) -> Any:
    """A gauge or counter family (``kind``) with one sample per key of ``values``, labelled ``label``."""
    family = kind(name, doc, labels=[label])
    for key, n in sorted(values.items()):
        family.add_metric([key], n)
    return family


def _histogram(name: str, doc: str, buckets: tuple[float, ...], samples: list[float]) -> HistogramMetricFamily:
    """A histogram of ``samples`` (sorted) over ``buckets``, built at scrape time."""
    cumulative: list[tuple[str, float]] = []
    i = 0
    for bound in (*buckets, math.inf):
        while i < len(samples) and samples[i] <= bound:
            i += 1
        cumulative.append(("+Inf" if bound == math.inf else repr(bound), i))
    return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=sum(samples))


__all__ = ["HostCollector", "LabelBound", "Metrics"]
