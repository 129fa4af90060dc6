"""The WebView service: a read-only page showing a node live, and the JSON it polls.

``GET /`` is the page (:mod:`mycel.web.page`: HTML, vanilla JS and inline SVG, no external assets),
``GET /api/state`` the node's state now (:func:`snapshot`), ``GET /healthz`` ``ok``. Nothing can be
changed through it. Bounds: the HTTP server's (:mod:`mycel.web.http`), at most :data:`MAX_ROWS`
connections / topics / peers per topic in one answer (the totals are given), and
:data:`BANDWIDTH_SAMPLES` one-second bandwidth samples kept.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from typing import Any

import trio

from mycel.core.abc import Connection
from mycel.host import Host
from mycel.metrics.introspect import ConnectionTotals, direction_label, find_service, inner_host, transport_name
from mycel.service import Service, ServiceHost, not_running
from mycel.web.http import HttpServer, Request, Response, parse_listen, text_response
from mycel.web.page import PAGE

log = logging.getLogger("mycel.web")

MAX_ROWS = 500
"""Connections, topics, and peers per topic listed at most in one state answer."""
BANDWIDTH_SAMPLES = 300
"""One-second bandwidth samples kept (five minutes)."""
SAMPLE_INTERVAL = 1.0
"""Seconds between bandwidth samples."""


def _short(peer: object) -> str:
    text = str(peer)
    return text[:8] + "…" + text[-6:] if len(text) > 16 else text


def _connection_row(host: Host, conn: Connection, now: float) -> dict[str, Any]:
    peer = conn.remote_peer
    stats = conn.stats
    rtt = host.peerstore.latency(peer)
    streams = stats.extra.get("streams")
    return {
        "peer": str(peer),
        "short": _short(peer),
        "addr": str(conn.remote_addr),
        "transport": transport_name(conn.remote_addr),
        "security": conn.security_protocol,
        "muxer": conn.muxer_protocol,
        "direction": direction_label(conn.direction),
        "limited": conn.limited,
        "rtt_ms": None if rtt is None else round(rtt * 1000, 3),
        "agent": host.peerstore.agent_version(peer),
        "streams": streams if isinstance(streams, int) else None,
        "age_s": round(now - stats.opened_at, 1) if stats.opened_at else None,
        "bytes_sent": stats.bytes_sent,
        "bytes_received": stats.bytes_received,
    }


def _pubsub(host: Host) -> dict[str, Any] | None:
    from mycel.protocols.pubsub.service import Gossipsub

    gs = find_service(host, Gossipsub)
    if gs is None or not host.service_state(Gossipsub).running:
        return None
    scores = {str(p): round(b.score, 3) for p, b in gs.scores().items()}
    topics = []
    all_topics = sorted(gs.topics())
    for topic in all_topics[:MAX_ROWS]:
        mesh = {str(p) for p in gs.mesh(topic)}
        known = sorted(str(p) for p in gs.peers(topic))
        peers = [{"peer": p, "short": _short(p), "mesh": p in mesh, "score": scores.get(p)} for p in known[:MAX_ROWS]]
        topics.append({"topic": topic, "mesh": len(mesh), "peers": peers, "total_peers": len(known)})
    shown = dict(list(scores.items())[:MAX_ROWS])
    return {"topics": topics, "total_topics": len(all_topics), "scoring": bool(scores), "scores": shown,
            "stats": gs.stats()}  # fmt: skip


def _dht(host: Host) -> dict[str, Any] | None:
    from mycel.protocols.kad.service import KadDHT

    dht = find_service(host, KadDHT)
    if dht is None or not host.service_state(KadDHT).running:
        return None
    health = dht.health()
    return {"size": health.size, "k": health.k, "buckets": list(health.buckets), "connected": health.connected,
            "stats": dict(dht.stats)}  # fmt: skip


def _relay(host: Host) -> dict[str, Any]:
    from mycel.protocols.relay.service import CircuitRelay
    from mycel.protocols.relay.transport import RelayTransport

    held = []
    for t in host.transports:
        if isinstance(t, RelayTransport):
            for relay, rsvp in t.reservations().items():
                held.append({"relay": str(relay), "short": _short(relay), "expire": rsvp.expire,
                             "addrs": [str(a) for a in rsvp.addrs]})  # fmt: skip
    out: dict[str, Any] = {"held": held, "serving": None}
    relay_svc = find_service(host, CircuitRelay)
    if relay_svc is not None and host.service_state(CircuitRelay).running:
        core = relay_svc.core
        out["serving"] = {"reservations": core.reservation_count, "circuits": core.circuit_count,
                          "bytes_relayed": relay_svc.bytes_relayed}  # fmt: skip
    return out


def _autonat(host: Host) -> dict[str, Any] | None:
    """AutoNAT's confidence and per-address verdicts, when the host runs it (None otherwise)."""
    try:
        from mycel.protocols.autonat.service import AutoNAT
    except ImportError:  # not in this build: the page shows host.reachability alone
        return None
    autonat = find_service(host, AutoNAT)
    if autonat is None or not host.service_state(AutoNAT).running:
        return None
    verdicts = autonat.addr_reachability()
    return {"confidence": autonat.confidence,
            "addrs": {str(a): r.value for a, r in list(verdicts.items())[:MAX_ROWS]}}  # fmt: skip


def _holepunch(host: Host) -> dict[str, int] | None:
    from mycel.protocols.dcutr.service import DCUtR

    dcutr = find_service(host, DCUtR)
    return None if dcutr is None else dict(dcutr.stats)


def snapshot(host: Host, bandwidth: list[list[float]] | None = None) -> dict[str, Any]:
    """The node's state now, as ``/api/state`` answers it (a JSON-able dict)."""
    now = trio.current_time()
    conns = host.connections()
    stats = host.resources.stats()
    streams = [
        {"protocol": p, "inbound": u["streams_inbound"], "outbound": u["streams_outbound"]}
        for p, u in sorted(stats["protocols"].items())
        if u["streams_inbound"] or u["streams_outbound"]
    ]
    return {
        "peer_id": str(host.peer_id),
        "agent": host.config.agent_version,
        "addrs": [str(a) for a in host.addrs],
        "protocols": sorted(host.protocols),
        "reachability": host.reachability.value,
        "connections": [_connection_row(host, c, now) for c in conns[:MAX_ROWS]],
        "total_connections": len(conns),
        "peers": len(host.connected_peers()),
        "streams": streams,
        "resources": {"connections": stats["connections"], "refused_total": stats["refused_total"]},
        "pubsub": _pubsub(host),
        "dht": _dht(host),
        "relay": _relay(host),
        "holepunch": _holepunch(host),
        "autonat": _autonat(host),
        "bandwidth": bandwidth or [],
    }


class WebView(Service):
    """Serves the live page of the host it runs in (``listen``: ``host:port``, loopback by default;
    port 0 picks a free one, see :attr:`address` / :attr:`url`). Read-only."""

    def __init__(self, listen: str = "127.0.0.1:0") -> None:
        parse_listen(listen)  # fail early on a bad address
        self.listen = listen
        self.address: tuple[str, int] | None = None
        """The bound ``(host, port)`` while serving."""
        self.server: HttpServer | None = None
        self._host: Host | None = None
        self._totals = ConnectionTotals()
        self._samples: deque[list[float]] = deque(maxlen=BANDWIDTH_SAMPLES)

    def clone(self) -> WebView:
        """A fresh view for another host, on the same address spec."""
        return WebView(self.listen)

    @property
    def url(self) -> str:
        """``http://host:port/`` of the running page."""
        if self.address is None:
            raise not_running(self)
        h, p = self.address
        return f"http://{'[' + h + ']' if ':' in h else h}:{p}/"

    async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        inner = inner_host(host)
        if inner is None:
            raise TypeError("WebView runs inside a mycel Host")
        self._host = inner
        bind_host, port = parse_listen(self.listen)
        self.server = HttpServer(self._handle, name="web view")
        try:
            async with trio.open_nursery() as nursery:
                self.address = await nursery.start(self.server.serve, bind_host, port)
                log.info("web view: %s", self.url)
                nursery.start_soon(self._sample_bandwidth)
                task_status.started()
        finally:
            self.address = None

    def connection_closed(self, host: ServiceHost, conn: Connection, remaining: int) -> None:
        self._totals.closed(conn)

    def _bytes(self) -> tuple[int, int]:
        t = self._totals.now(self._host.connections() if self._host is not None else [])
        return t["bytes_sent"], t["bytes_received"]

    async def _sample_bandwidth(self) -> None:
        """Every second: bytes per second sent and received since the last sample."""
        last = self._bytes()
        last_t = trio.current_time()
        while True:
            await trio.sleep(SAMPLE_INTERVAL)
            now, totals = trio.current_time(), self._bytes()
            dt = max(now - last_t, 1e-6)
            self._samples.append([round(now, 1), max(0.0, (totals[0] - last[0]) / dt), max(0.0, (totals[1] - last[1]) / dt)])
            last, last_t = totals, now

    async def _handle(self, request: Request) -> Response:
        if request.path in ("/", "/index.html"):
            return Response(200, "text/html; charset=utf-8", PAGE.encode(),
                            (("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; "
                              "style-src 'unsafe-inline'; connect-src 'self'; img-src data:"),))  # fmt: skip
        if request.path == "/api/state":
            if self._host is None:
                return text_response(503, "not running\n")
            state = snapshot(self._host, list(self._samples))
            return Response(200, "application/json", json.dumps(state).encode())
        if request.path == "/healthz":
            return text_response(200, "ok\n")
        return text_response(404, "not found\n")


__all__ = ["BANDWIDTH_SAMPLES", "MAX_ROWS", "WebView", "snapshot"]
