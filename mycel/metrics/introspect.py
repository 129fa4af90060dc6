"""Read-only helpers the metrics and the web view share: the concrete host behind a service's view,
a host's service of a kind (or None), and the labels of a connection (transport, IP version).

Nothing here imports prometheus_client: the web view uses it without the ``metrics`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from multiaddr import Multiaddr

from mycel.core.abc import Connection, Direction

if TYPE_CHECKING:
    from mycel.host import Host
    from mycel.service import Service

S = TypeVar("S", bound="Service")

_TRANSPORTS = ("p2p-circuit", "webtransport", "webrtc-direct", "webrtc", "quic-v1", "quic", "ws", "wss", "tcp", "memory")


def inner_host(host: Any) -> Host | None:
    """The :class:`~mycel.host.Host` behind ``host`` (a service's view of it, or the host itself).

    :class:`~mycel.service.ServiceHost` does not list a host's transports, services or swarm; a
    read-only observer needs them, so it reaches through the view as DCUtR does."""
    from mycel.host import Host

    inner = getattr(host, "_host", host)
    return inner if isinstance(inner, Host) else None


def find_service(host: Host, kind: type[S]) -> S | None:
    """``host``'s service of type ``kind``, or None when it has none."""
    try:
        return host.service(kind)
    except LookupError:
        return None


def transport_name(addr: Multiaddr) -> str:
    """The transport of a connection to/from ``addr``, named as go's metricshelper does
    (``tcp``, ``quic-v1``, ``p2p-circuit``, ``memory``...); ``other`` when none is known."""
    names = [p.name for p in addr.protocols()]
    for name in _TRANSPORTS:
        if name in names:
            return name
    return "other"


def ip_version(addr: Multiaddr) -> str:
    """``ip4``, ``ip6`` or ``""`` (go's metricshelper.GetIPVersion, with ``""`` for unknown)."""
    for p in addr.protocols():
        if p.name in ("ip4", "ip6"):
            return str(p.name)
    return ""


def direction_label(direction: Direction) -> str:
    """``inbound`` / ``outbound``, as go's metricshelper.GetDirection."""
    return "inbound" if direction is Direction.INBOUND else "outbound"


def connection_labels(conn: Connection) -> dict[str, str]:
    """The labels go puts on its swarm connection metrics."""
    muxer = conn.muxer_protocol
    security = conn.security_protocol
    transport = transport_name(conn.remote_addr)
    if transport.startswith("quic"):  # as go: QUIC has neither a separate security nor a muxer
        security = muxer = ""
    early = getattr(conn, "early_muxer", None)
    return {
        "dir": direction_label(conn.direction),
        "transport": transport,
        "security": security,
        "muxer": muxer,
        "early_muxer": "true" if early else "false",
        "ip_version": ip_version(conn.local_addr),
    }


class ConnectionTotals:
    """Bytes and streams of every connection a host has had: a closed connection's figures are folded in
    by :meth:`closed` (call it from the ``connection_closed`` hook), the open ones are read live."""

    FIELDS = ("bytes_sent", "bytes_received", "streams_opened", "streams_accepted")

    def __init__(self) -> None:
        self._closed = dict.fromkeys(self.FIELDS, 0)

    def closed(self, conn: Connection) -> None:
        """Keep the figures of ``conn``, which has closed."""
        for name in self.FIELDS:
            self._closed[name] += getattr(conn.stats, name)

    def now(self, open_conns: list[Connection]) -> dict[str, int]:
        """The totals so far: the closed connections' plus ``open_conns``' counters now."""
        out = dict(self._closed)
        for conn in open_conns:
            for name in self.FIELDS:
                out[name] += getattr(conn.stats, name)
        return out


__all__ = [
    "ConnectionTotals",
    "connection_labels",
    "direction_label",
    "find_service",
    "inner_host",
    "ip_version",
    "transport_name",
]
