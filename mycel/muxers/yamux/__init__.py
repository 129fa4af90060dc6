"""Yamux (``/yamux/1.0.0``): the sans-IO core in :mod:`.core`, driven by :mod:`mycel.muxers.driver`."""

from __future__ import annotations

from mycel.core.abc import Direction, SecureConnection, StreamMuxer
from mycel.muxers.driver import CLOSE_TIMEOUT, MuxedConnection
from mycel.muxers.yamux.core import (
    ACCEPT_BACKLOG,
    KEEPALIVE_INTERVAL,
    MAX_FRAME,
    MAX_UNACKED_STREAMS,
    MAX_WINDOW,
    PROTOCOL_ID,
    YamuxCore,
)

__all__ = ["Yamux", "YamuxCore", "PROTOCOL_ID"]


class Yamux(StreamMuxer):
    """The yamux stream muxer. Each connection gets its own :class:`YamuxCore`."""

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
    ) -> None:
        self.max_window = max_window
        self.max_frame = max_frame
        self.accept_backlog = accept_backlog
        self.max_unacked = max_unacked
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self.close_timeout = close_timeout

    def new_core(self, is_client: bool) -> YamuxCore:
        """A fresh sans-IO core with this muxer's settings; ``is_client``: we dialed (odd stream ids)."""
        return YamuxCore(
            is_client,
            max_window=self.max_window,
            max_frame=self.max_frame,
            accept_backlog=self.accept_backlog,
            max_unacked=self.max_unacked,
            keepalive_interval=self.keepalive_interval,
            keepalive_timeout=self.keepalive_timeout,
        )

    def new_connection(self, secure: SecureConnection) -> MuxedConnection:
        core = self.new_core(secure.direction is Direction.OUTBOUND)
        return MuxedConnection(secure, core, close_timeout=self.close_timeout)
