"""The relay service's resource settings, with go-libp2p's defaults.

go-libp2p ``p2p/protocol/circuitv2/relay/resources.go`` (``DefaultResources`` / ``DefaultLimit``):
reservation TTL 1 h, 128 reservations, 16 circuits per peer, 2048-byte buffers, 8 reservations per IP,
32 per ASN, and each relayed connection limited to 2 minutes and 128 KiB per direction. Settings go
has no counterpart for (a total bound on circuits, circuits per IP, hop streams per peer) are marked.
The per-ASN bound is left out: it needs an IP-to-ASN table, which mycel does not ship.
"""

from __future__ import annotations

from dataclasses import dataclass

from mycel.core.errors import ConfigError


@dataclass(frozen=True)
class RelayResources:
    """What a relay (``CircuitRelay``) grants and how much of it, at most."""

    reservation_ttl: float = 3600.0
    """Seconds a reservation lasts (go: 1 h); the client refreshes it before it runs out."""
    max_reservations: int = 128
    """Reservations held at once, in all (go: 128); beyond, RESERVE gets RESERVATION_REFUSED."""
    max_reservations_per_ip: int = 8
    """Reservations from peers connected from one IP (go: 8); beyond, RESERVATION_REFUSED."""
    max_circuits: int = 16
    """Open relayed connections per peer, as source or target (go: 16); beyond, RESOURCE_LIMIT_EXCEEDED."""
    max_circuits_per_ip: int = 64
    """Open relayed connections opened from one source IP (mycel's own bound; go has none)."""
    max_total_circuits: int = 512
    """Open relayed connections in all (mycel's own bound; go bounds it through its resource manager)."""
    buffer_size: int = 2048
    """Bytes read from one side of a circuit per copy (go: 2048): the memory a direction holds beyond
    the muxer's own window. Python pays per copy: a relay carrying bulk data (limits lifted) is about 5x
    faster with 64 KiB (``benchmarks/relay.py``: 10 vs 54 MB/s on one stream); within go's 128 KiB
    default limit a circuit finishes in milliseconds either way."""
    limit_duration: float | None = 120.0
    """Seconds a relayed connection lives before the relay resets it (go: 2 min); None: unlimited."""
    limit_data: int | None = 1 << 17
    """Bytes relayed per direction before the relay resets the connection (go: 128 KiB); None: unlimited."""
    max_hop_streams_per_peer: int = 4
    """Hop exchanges (a RESERVE, or a CONNECT until its circuit opens) one peer may have in progress at once
    (mycel's own bound; open circuits count against ``max_circuits``); beyond, new streams are reset."""
    stream_timeout: float = 60.0
    """Seconds a hop exchange (and the stop handshake with the target) may take (go: 1 min)."""
    connect_timeout: float = 30.0
    """Seconds the relay waits for the target to answer the stop CONNECT (go: 30 s)."""

    def __post_init__(self) -> None:
        for name in (
            "max_reservations",
            "max_reservations_per_ip",
            "max_circuits",
            "max_circuits_per_ip",
            "max_total_circuits",
            "buffer_size",
            "max_hop_streams_per_peer",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"RelayResources.{name}: must be a positive integer, got {value!r}")
        for name in ("reservation_ttl", "stream_timeout", "connect_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"RelayResources.{name}: must be a positive number of seconds, got {value!r}")
        if self.limit_duration is not None and self.limit_duration <= 0:
            raise ConfigError("RelayResources.limit_duration: must be positive or None")
        if self.limit_data is not None and self.limit_data <= 0:
            raise ConfigError("RelayResources.limit_data: must be positive or None")
