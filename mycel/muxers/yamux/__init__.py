"""Yamux (``/yamux/1.0.0``): the sans-IO core in :mod:`.core`, driven by :mod:`mycel.muxers.driver`."""

from __future__ import annotations

from mycel.core.abc import Direction, SecureConnection, StreamMuxer
from mycel.muxers.budget import PEER_INBOUND_STREAMS, MemoryBudget, MuxerBudgets
from mycel.muxers.driver import CLOSE_TIMEOUT, MuxedConnection, budgeted_connection
from mycel.muxers.trim import MemoryTrimmer
from mycel.muxers.yamux.core import (
    ACCEPT_BACKLOG,
    CONNECTION_MEMORY,
    INBOUND_STREAM_BURST,
    INBOUND_STREAM_RATE,
    JUNK_BURST,
    JUNK_RATE,
    KEEPALIVE_INTERVAL,
    MAX_FRAME,
    MAX_INBOUND_STREAMS,
    MAX_UNACKED_STREAMS,
    MAX_WINDOW,
    PEER_MEMORY,
    PING_BURST,
    PING_RATE,
    PROTOCOL_ID,
    YamuxCore,
)

__all__ = ["Yamux", "YamuxCore", "PROTOCOL_ID"]


class Yamux(MuxerBudgets, StreamMuxer):
    """The yamux stream muxer. Each connection gets its own :class:`YamuxCore`.

    Budgets (plain attributes, so a resource system can set them): ``connection_memory`` bytes of
    receive windows per connection and ``peer_memory`` for all connections to one peer (new inbound
    streams are refused and windows stop growing when either is used up), ``max_inbound_streams``
    open at once per connection and ``peer_inbound_streams`` per peer, ``inbound_stream_rate``/``inbound_stream_burst`` new inbound streams
    per second, ``ping_rate``/``ping_burst`` pings answered per second, and ``junk_rate``/``junk_burst``
    frames that do nothing before the connection fails. ``trim_memory``: hand freed heap back to the
    OS after connections close (glibc only; at most every few seconds).
    """

    protocol_id = PROTOCOL_ID

    def __init__(
        self,
        *,
        max_window: int = MAX_WINDOW,
        max_frame: int = MAX_FRAME,
        accept_backlog: int = ACCEPT_BACKLOG,
        max_unacked: int = MAX_UNACKED_STREAMS,
        keepalive_interval: float | None = KEEPALIVE_INTERVAL,
        keepalive_timeout: float | None = None,
        close_timeout: float = CLOSE_TIMEOUT,
        connection_memory: int = CONNECTION_MEMORY,
        peer_memory: int = PEER_MEMORY,
        max_inbound_streams: int = MAX_INBOUND_STREAMS,
        inbound_stream_rate: float = INBOUND_STREAM_RATE,
        inbound_stream_burst: int = INBOUND_STREAM_BURST,
        ping_rate: float = PING_RATE,
        ping_burst: int = PING_BURST,
        junk_rate: float = JUNK_RATE,
        junk_burst: int = JUNK_BURST,
        peer_inbound_streams: int = PEER_INBOUND_STREAMS,
        trim_memory: bool = True,
    ) -> None:
        self.max_window = max_window
        self.max_frame = max_frame
        self.accept_backlog = accept_backlog
        self.max_unacked = max_unacked
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self.close_timeout = close_timeout
        MuxerBudgets.__init__(
            self,
            connection_memory,
            peer_memory,
            max_inbound_streams,
            inbound_stream_rate,
            inbound_stream_burst,
            junk_rate,
            junk_burst,
            peer_inbound_streams,
        )
        self.ping_rate = ping_rate
        self.ping_burst = ping_burst
        self.trimmer = MemoryTrimmer() if trim_memory else None

    def new_core(
        self, is_client: bool, memory: MemoryBudget | None = None, peer_streams: MemoryBudget | None = None
    ) -> YamuxCore:
        """A fresh sans-IO core with this muxer's settings; ``is_client``: we dialed (odd stream ids);
        ``memory``: the connection's budget (default: ``connection_memory`` bytes on its own);
        ``peer_streams``: the peer's inbound-stream count (default: none)."""
        return YamuxCore(
            is_client,
            max_window=self.max_window,
            max_frame=self.max_frame,
            accept_backlog=self.accept_backlog,
            max_unacked=self.max_unacked,
            keepalive_interval=self.keepalive_interval,
            keepalive_timeout=self.keepalive_timeout,
            ping_rate=self.ping_rate,
            ping_burst=self.ping_burst,
            **self.core_budget_options(memory, peer_streams),
        )

    def new_connection(self, secure: SecureConnection) -> MuxedConnection:
        self.peer_budgets.limit = self.peer_memory
        return budgeted_connection(
            secure, lambda memory, streams: self.new_core(secure.direction is Direction.OUTBOUND, memory, streams), self.peer_budgets, self.connection_memory, self.trimmer, self.close_timeout
        )
