"""Mplex (``/mplex/6.7.0``, deprecated but still spoken by js/rust/nim): the sans-IO core in
:mod:`.core`, driven by :mod:`mycel.muxers.driver`."""

from __future__ import annotations

from mycel.core.abc import SecureConnection, StreamMuxer
from mycel.muxers.budget import PEER_INBOUND_STREAMS, MemoryBudget, MuxerBudgets
from mycel.muxers.driver import CLOSE_TIMEOUT, MuxedConnection, budgeted_connection
from mycel.muxers.mplex.core import (
    ACCEPT_BACKLOG,
    CONNECTION_MEMORY,
    INBOUND_STREAM_BURST,
    INBOUND_STREAM_RATE,
    JUNK_BURST,
    JUNK_RATE,
    MAX_BUFFER,
    MAX_FRAME,
    MAX_INBOUND_STREAMS,
    PEER_MEMORY,
    PROTOCOL_ID,
    MplexCore,
)
from mycel.muxers.trim import MemoryTrimmer

__all__ = ["Mplex", "MplexCore", "PROTOCOL_ID"]


class Mplex(MuxerBudgets, StreamMuxer):
    """The mplex stream muxer. Mplex has no flow control: a stream whose unread data exceeds
    ``max_buffer`` is reset, and so is one whose data would take a connection's unread bytes over
    ``connection_memory`` or a peer's (all its connections) over ``peer_memory``. At most
    ``max_inbound_streams`` inbound streams per connection (``peer_inbound_streams`` per peer), opened at ``inbound_stream_rate`` per
    second after a burst of ``inbound_stream_burst``; frames for streams that do not exist beyond
    ``junk_rate``/``junk_burst`` fail the connection. ``trim_memory``: see :class:`~mycel.muxers.yamux.Yamux`.
    """

    protocol_id = PROTOCOL_ID

    def __init__(
        self,
        *,
        max_buffer: int = MAX_BUFFER,
        accept_backlog: int = ACCEPT_BACKLOG,
        max_frame: int = MAX_FRAME,
        close_timeout: float = CLOSE_TIMEOUT,
        connection_memory: int = CONNECTION_MEMORY,
        peer_memory: int = PEER_MEMORY,
        max_inbound_streams: int = MAX_INBOUND_STREAMS,
        inbound_stream_rate: float = INBOUND_STREAM_RATE,
        inbound_stream_burst: int = INBOUND_STREAM_BURST,
        junk_rate: float = JUNK_RATE,
        junk_burst: int = JUNK_BURST,
        peer_inbound_streams: int = PEER_INBOUND_STREAMS,
        trim_memory: bool = True,
    ) -> None:
        self.max_buffer = max_buffer
        self.accept_backlog = accept_backlog
        self.max_frame = max_frame
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
        self.trimmer = MemoryTrimmer() if trim_memory else None

    def new_core(self, memory: MemoryBudget | None = None, peer_streams: MemoryBudget | None = None) -> MplexCore:
        """A fresh sans-IO core with this muxer's limits (one per connection); ``memory``: the
        connection's budget (default: ``connection_memory`` bytes on its own); ``peer_streams``: the
        peer's inbound-stream count (default: none)."""
        return MplexCore(
            max_buffer=self.max_buffer,
            accept_backlog=self.accept_backlog,
            max_frame=self.max_frame,
            **self.core_budget_options(memory, peer_streams),
        )

    def new_connection(self, secure: SecureConnection) -> MuxedConnection:
        self.peer_budgets.limit = self.peer_memory
        return budgeted_connection(
            secure, self.new_core, self.peer_budgets, self.connection_memory, self.trimmer, self.close_timeout
        )
