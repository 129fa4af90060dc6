"""Prometheus metrics (``HostConfig(metrics=MetricsConfig())``): hosts on the memory network, scraped
over HTTP on 127.0.0.1; the figures follow connections, streams, gossip and refusals; each host has its
own registry; the Grafana dashboard names only metrics a scrape has; a host cancelled while its
exporter is serving exits at once and leaves no listener."""

from __future__ import annotations

import json
import re
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
import trio.testing
from multiaddr import Multiaddr
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from mycel.core.addrs import Reachability
from mycel.core.errors import ConfigError, DialError
from mycel.host import Host, HostConfig, open_host
from mycel.metrics import Metrics, MetricsConfig
from mycel.network.resources import ResourceLimits
from mycel.protocols.dcutr import DCUtR
from mycel.protocols.identify import Identify
from mycel.protocols.kad import KadDHT
from mycel.protocols.ping import Ping
from mycel.protocols.pubsub import Gossipsub
from mycel.protocols.relay import CircuitRelay
from mycel.service import Service
from mycel.testing.hosts import memory_config, memory_hosts
from mycel.transports.memory import MemoryNetwork
from mycel.web.http import http_get

WAIT = 10
DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "mycel.json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(host: Host) -> Samples:
    """Every sample of ``host``'s exporter, fetched over HTTP: (name, labels) -> value."""
    address = host.service(Metrics).address
    assert address is not None and address[0] == "127.0.0.1"
    status, headers, body = await http_get(*address, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        out[(family.name, frozenset({("__family__", "")}))] = 0.0  # present even with no samples yet
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when there are none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def _services() -> list[Service]:
    return [Identify(), Ping(), Gossipsub()]


async def test_scrape_follows_connections_streams_and_gossip() -> None:
    async with memory_hosts(2, services=_services, metrics=MetricsConfig()) as (a, b):
        before = await scrape(a)
        assert value(before, "libp2p_swarm_connections_opened_total") == 0
        assert value(before, "mycel_peers_connected") == 0
        ga, gb = a.service(Gossipsub), b.service(Gossipsub)
        async with ga.subscribe("news") as sub_a, gb.subscribe("news"):
            await a.connect(b.peer_id, b.addrs)
            await ga.wait_ready("news", 1, timeout=WAIT)
            await gb.wait_ready("news", 1, timeout=WAIT)
            await gb.publish("news", b"hello")
            with trio.fail_after(WAIT):
                assert (await sub_a.receive()).data == b"hello"
            s = await scrape(a)
            labels = {"dir": "outbound", "transport": "memory", "security": "/noise", "muxer": "/yamux/1.0.0"}
            assert value(s, "libp2p_swarm_connections_opened_total", **labels) == 1
            assert value(s, "mycel_connections", dir="outbound", transport="memory") == 1
            assert value(s, "mycel_peers_connected") == 1
            assert value(s, "libp2p_swarm_key_types_total", key_type="ed25519") == 1
            # streams negotiated, by protocol and direction; and open now (the resource manager's view)
            assert value(s, "mycel_streams_opened_total", protocol="/meshsub/1.2.0", dir="outbound") == 1
            assert value(s, "mycel_streams_opened_total", protocol="/ipfs/id/1.0.0") >= 1
            assert value(s, "libp2p_rcmgr_streams", scope="protocol", protocol="/meshsub/1.2.0", dir="inbound") == 1
            assert value(s, "libp2p_gossipsub_mesh_peers", topic="news") == 1
            assert value(s, "libp2p_gossipsub_topic_peers", topic="news") == 1
            assert value(s, "libp2p_gossipsub_messages_total", kind="delivered") == 1
            assert value(s, "mycel_transport_bytes_total", dir="received") > value(before, "mycel_transport_bytes_total", dir="received")
            # b's own registry counts b's side: an inbound connection and the message it published
            sb = await scrape(b)
            assert value(sb, "libp2p_swarm_connections_opened_total", dir="inbound") == 1
            assert value(sb, "libp2p_swarm_connections_opened_total", dir="outbound") == 0
            assert value(sb, "libp2p_gossipsub_messages_total", kind="published") == 1
            assert value(s, "libp2p_autonat_reachability_status") == 0
            a.set_reachability(Reachability.PRIVATE)  # what AutoNAT reports
            assert value(await scrape(a), "libp2p_autonat_reachability_status") == 2
            sent_before = value(s, "mycel_transport_bytes_total", dir="sent")
            await a.disconnect(b.peer_id)
            s = await scrape(a)
            assert value(s, "libp2p_swarm_connections_closed_total", **labels) == 1
            assert value(s, "libp2p_swarm_connection_duration_seconds_count", **labels) == 1
            assert value(s, "mycel_connections") == 0
            # bytes of a closed connection stay counted
            assert value(s, "mycel_transport_bytes_total", dir="sent") >= sent_before


async def test_resource_refusals_are_counted() -> None:
    network = MemoryNetwork()
    limits = ResourceLimits.autoscale().override(system={"conns_inbound": 0})
    strict = memory_config(network, metrics=MetricsConfig(), resources=limits)
    async with open_host(strict) as a, open_host(memory_config(network)) as b:
        with pytest.raises(Exception):
            with trio.fail_after(WAIT):
                await b.connect(a.peer_id, a.addrs)
        s = await scrape(a)
        assert value(s, "libp2p_rcmgr_blocked_resources_total", scope="system", dir="inbound") >= 1
        assert value(s, "libp2p_swarm_connections_opened_total") == 0


async def test_each_host_has_its_own_registry_and_bad_config_fails_early() -> None:
    config = memory_config(MemoryNetwork(), metrics=MetricsConfig())
    async with open_host(config) as a, open_host(config.replace(identity=config.identity.generate())) as b:
        ma, mb = a.service(Metrics), b.service(Metrics)
        assert ma is not mb and ma.registry is not mb.registry and ma.address != mb.address
        await a.connect(b.peer_id, b.addrs)
        assert value(await scrape(a), "libp2p_swarm_connections_opened_total", dir="outbound") == 1
        assert value(await scrape(b), "libp2p_swarm_connections_opened_total", dir="outbound") == 0
        assert ma.address is not None
        status, _, _ = await http_get(*ma.address, "/nothing")
        assert status == 404
    # a registry of the user's: filled while the host runs (no exporter asked), left empty after
    registry = CollectorRegistry()
    async with open_host(memory_config(MemoryNetwork(), metrics=MetricsConfig(listen=None, registry=registry))) as h:
        m = h.service(Metrics)
        assert m.registry is registry and m.address is None
        assert registry.get_sample_value("mycel_peers_connected") == 0
        assert b"libp2p_rcmgr_connections" in m.scrape()
    assert registry.get_sample_value("mycel_peers_connected") is None
    assert list(registry.collect()) == []
    with pytest.raises(ConfigError, match="MetricsConfig.listen"):
        MetricsConfig(listen="nowhere")
    with pytest.raises(ConfigError, match="HostConfig.metrics"):
        HostConfig(metrics="127.0.0.1:9100")  # type: ignore[arg-type]
    assert not any(isinstance(s, Metrics) for s in HostConfig().services)  # off unless asked


def _dashboard_metric_names() -> set[str]:
    """Metric names in every ``expr`` of the dashboard (identifiers followed by ``{``, ``[`` or a space,
    minus PromQL functions and keywords)."""
    doc = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "expr" and isinstance(v, str):
                    exprs.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert len(exprs) >= 10
    names: set[str] = set()
    for e in exprs:
        names.update(re.findall(r"\b((?:libp2p|mycel)_[a-z0-9_]+)\b", e))
    return names


async def test_grafana_dashboard_names_only_metrics_a_scrape_has() -> None:
    def services() -> list[Service]:
        return [Identify(), Ping(), Gossipsub(), KadDHT(), CircuitRelay(), DCUtR()]

    async with memory_hosts(2, services=services, metrics=MetricsConfig()) as (a, b):
        ga, gb = a.service(Gossipsub), b.service(Gossipsub)
        async with ga.subscribe("t"), gb.subscribe("t"):
            await a.connect(b.peer_id, b.addrs)
            await ga.wait_ready("t", 1, timeout=WAIT)
            await a.disconnect(b.peer_id)  # closed-connection series exist too
            scraped = {name for name, _ in await scrape(a)}
    families = set()
    for name in scraped:
        families.add(name)
        families.add(re.sub(r"_(bucket|count|sum|total|created)$", "", name))
    wanted = _dashboard_metric_names()
    missing = {n for n in wanted if n not in families and re.sub(r"_(bucket|count|sum|total)$", "", n) not in families}
    assert not missing, f"the dashboard names metrics no scrape has: {sorted(missing)}"


async def test_host_cancelled_while_exporter_and_web_view_serve_exits_promptly_and_closes_them() -> None:
    """The two HTTP servers of this package (the exporter, the web view) under one cancelled host: clients
    in the middle of their request and scrapes in flight do not hold the host up; nothing listens after."""
    from mycel.web.view import WebView

    config = memory_config(MemoryNetwork(), services=[Identify(), WebView()], metrics=MetricsConfig())
    addresses: list[tuple[str, int]] = []
    stalled: list[trio.SocketStream] = []
    with trio.fail_after(WAIT):
        with trio.CancelScope() as scope:
            async with open_host(config) as host, trio.open_nursery() as nursery:
                for address in (host.service(Metrics).address, host.service(WebView).address):
                    assert address is not None
                    addresses.append(address)
                    for _ in range(4):  # half a request each
                        s = await trio.open_tcp_stream(*address)
                        await s.send_all(b"GET /metr")
                        stalled.append(s)
                    for _ in range(4):  # whole scrapes, cancelled wherever they are
                        nursery.start_soon(scrape, host)
                await trio.testing.wait_all_tasks_blocked()
                start = trio.current_time()
                scope.cancel()
        assert trio.current_time() - start < 3.0
        for s in stalled:  # closed by the server: EOF (or a reset, as it had read their bytes)
            try:
                assert await s.receive_some(100) == b""
            except trio.BrokenResourceError:
                pass
            await s.aclose()
    for address in addresses:
        with pytest.raises(OSError):
            await trio.open_tcp_stream(*address)


async def test_tracer_methods_fill_the_handshake_dial_and_query_metrics() -> None:
    """The methods the swarm (and the DHT: see test_dht_queries_are_timed_into_the_histogram) call fill go's series."""
    async with memory_hosts(2, metrics=MetricsConfig()) as (a, b):
        conn = await a.connect(b.peer_id, b.addrs)
        m = a.service(Metrics)
        m.completed_handshake(conn, 0.004)  # one more beside the real handshake the swarm reported
        m.failed_dialing(Multiaddr("/ip4/127.0.0.1/tcp/1"), ConnectionRefusedError(111, "Connection refused"))
        m.failed_dialing(Multiaddr("/ip6/::1/udp/1/quic-v1"), trio.TooSlowError())
        m.completed_query("find_peer", 0.3)
        s = await scrape(a)
        assert value(s, "libp2p_swarm_handshake_latency_seconds_count", transport="memory", security="/noise") == 2
        assert value(s, "libp2p_swarm_dial_errors_total", transport="tcp", error="connection refused", ip_version="ip4") == 1
        assert value(s, "libp2p_swarm_dial_errors_total", transport="quic-v1", error="timeout", ip_version="ip6") == 1
        assert value(s, "libp2p_kad_query_duration_seconds_count", kind="find_peer") == 1
        assert value(s, "libp2p_kad_query_duration_seconds_sum", kind="find_peer") == pytest.approx(0.3)


async def test_relay_reservations_and_circuits_in_metrics_and_web_view() -> None:
    """A reserves on R, B dials A through R: R's registry counts the reservation it grants and the circuit,
    A's counts the reservation it holds and a limited p2p-circuit connection; A's web view lists the
    reservation and marks the connection limited."""
    from mycel.protocols.relay import RelayTransport
    from mycel.web.view import WebView

    network = MemoryNetwork()
    relay_cfg = memory_config(network, services=[Identify(), Ping(), CircuitRelay()], metrics=MetricsConfig())
    async with open_host(relay_cfg) as r:
        a_cfg = memory_config(
            network, services=[Identify(), Ping(), WebView()], metrics=MetricsConfig(),
            listen=["/memory/0", f"{r.addrs[0]}/p2p-circuit"],
        )
        a_cfg = a_cfg.replace(transports=[*a_cfg.transports, RelayTransport()])
        b_cfg = memory_config(network)
        b_cfg = b_cfg.replace(transports=[*b_cfg.transports, RelayTransport()])
        async with open_host(a_cfg) as a, open_host(b_cfg) as b:
            relay_transport = next(t for t in a.transports if isinstance(t, RelayTransport))
            with trio.fail_after(WAIT):
                await relay_transport.wait_reserved(r.peer_id)
                conn = await b.connect(Multiaddr(f"{r.addrs[0]}/p2p-circuit/p2p/{a.peer_id}"))
                await b.service(Ping).ping(a.peer_id)  # A has the relayed connection registered
            assert conn.limited
            sr, sa = await scrape(r), await scrape(a)
            assert value(sr, "libp2p_relaysvc_reservations") == 1
            assert value(sr, "libp2p_relaysvc_connections") == 1
            assert value(sa, "mycel_relay_client_reservations") == 1
            assert value(sa, "mycel_connections", transport="p2p-circuit", limited="true", dir="inbound") == 1
            assert value(sa, "libp2p_swarm_connections_opened_total", transport="p2p-circuit", dir="inbound") == 1
            address = a.service(WebView).address
            assert address is not None
            status, _, body = await http_get(*address, "/api/state")
            state = json.loads(body)
            assert [h["relay"] for h in state["relay"]["held"]] == [str(r.peer_id)]
            relayed = [c for c in state["connections"] if c["transport"] == "p2p-circuit"]
            assert len(relayed) == 1 and relayed[0]["limited"] and relayed[0]["peer"] == str(b.peer_id)


async def test_gossipsub_peer_scores_in_metrics_and_web_view() -> None:
    """With scoring on (an application score of -5 for one peer, +3 for the other), the registry has the
    min/mean/max of the connected peers' scores and how many are below 0; the web view has each score."""
    from mycel.protocols.pubsub import GossipsubConfig
    from mycel.protocols.pubsub.score import PeerScoreParams
    from mycel.web.view import WebView

    network = MemoryNetwork()
    b_cfg, c_cfg = (memory_config(network, services=_services()) for _ in range(2))
    async with open_host(b_cfg) as b, open_host(c_cfg) as c, AsyncExitStack() as subs:
        for h in (b, c):
            await subs.enter_async_context(h.service(Gossipsub).subscribe("t"))
        wanted = {b.peer_id: -5.0, c.peer_id: 3.0}
        scoring = GossipsubConfig(
            score_params=PeerScoreParams(app_specific_score=lambda p: wanted.get(p, 0.0), app_specific_weight=1)
        )
        services: list[Service] = [Identify(), Ping(), Gossipsub(scoring), WebView()]
        async with open_host(memory_config(network, services=services, metrics=MetricsConfig())) as a:
            await a.connect(b.peer_id, b.addrs)
            await a.connect(c.peer_id, c.addrs)
            await a.service(Gossipsub).wait_ready("t", 2, timeout=WAIT)  # A knows both as gossipsub peers
            assert len(a.service(Gossipsub).scores()) == 2
            s = await scrape(a)
            assert value(s, "libp2p_gossipsub_peer_score", stat="min") == -5.0
            assert value(s, "libp2p_gossipsub_peer_score", stat="max") == 3.0
            assert value(s, "libp2p_gossipsub_peer_score", stat="mean") == -1.0
            assert value(s, "libp2p_gossipsub_negative_score_peers") == 1
            address = a.service(WebView).address
            assert address is not None
            state = json.loads((await http_get(*address, "/api/state"))[2])
            assert state["pubsub"]["scoring"] is True
            assert state["pubsub"]["scores"] == {str(b.peer_id): -5.0, str(c.peer_id): 3.0}


async def test_the_swarm_feeds_handshake_latencies_and_dial_errors() -> None:
    async with memory_hosts(2, metrics=MetricsConfig()) as (a, b):
        await a.connect(b.peer_id, b.addrs)
        with pytest.raises(DialError):
            await a.connect(Multiaddr("/memory/999999"))
        s = await scrape(a)
        assert value(s, "libp2p_swarm_handshake_latency_seconds_count", transport="memory", security="/noise") == 1
        assert sum(v for (name, _), v in s.items() if name == "libp2p_swarm_dial_errors_total") == 1
        sb = await scrape(b)  # the accepting side times its handshake too
        assert value(sb, "libp2p_swarm_handshake_latency_seconds_count", transport="memory", security="/noise") == 1


async def test_dht_queries_are_timed_into_the_histogram(autojump_clock: trio.testing.MockClock) -> None:
    """KadDHT reports each query's duration to its observers; the metrics service is one of them."""
    async with memory_hosts(3, metrics=MetricsConfig(), services=lambda: [Identify(), KadDHT()]) as (a, b, c):
        for other in (b, c):
            await a.connect(other.peer_id, other.addrs)
        dht = a.service(KadDHT)
        with trio.fail_after(30):
            while len(dht.routing_table) < 2:  # identify, then the check-before-add
                await dht._grew.wait()
        await dht.closest_peers(b"some key")
        key = b"/pk/" + a.peer_id.to_bytes()
        await dht.put(key, a.identity.private_key.public_key.to_protobuf())
        assert await dht.get(key) is not None
        s = await scrape(a)
        for kind in ("closest_peers", "put", "get"):
            assert value(s, "libp2p_kad_query_duration_seconds_count", kind=kind) == 1, kind
