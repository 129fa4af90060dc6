"""Mplex (``/mplex/6.7.0``, deprecated but still spoken by js/rust/nim): the sans-IO core in
:mod:`.core`, driven by :mod:`mycel.muxers.driver`."""

from __future__ import annotations

from mycel.core.abc import SecureConnection, StreamMuxer
from mycel.muxers.driver import CLOSE_TIMEOUT, MuxedConnection
from mycel.muxers.mplex.core import ACCEPT_BACKLOG, MAX_BUFFER, MAX_FRAME, PROTOCOL_ID, MplexCore

__all__ = ["Mplex", "MplexCore", "PROTOCOL_ID"]


class Mplex(StreamMuxer):
    """The mplex stream muxer. A stream whose unread data exceeds ``max_buffer`` is reset."""

    protocol_id = PROTOCOL_ID

    def __init__(
        self,
        *,
        max_buffer: int = MAX_BUFFER,
        accept_backlog: int = ACCEPT_BACKLOG,
        max_frame: int = MAX_FRAME,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        self.max_buffer = max_buffer
        self.accept_backlog = accept_backlog
        self.max_frame = max_frame
        self.close_timeout = close_timeout

    def new_core(self) -> MplexCore:
        """A fresh sans-IO core with this muxer's limits (one per connection)."""
        return MplexCore(max_buffer=self.max_buffer, accept_backlog=self.accept_backlog, max_frame=self.max_frame)

    def new_connection(self, secure: SecureConnection) -> MuxedConnection:
        return MuxedConnection(secure, self.new_core(), close_timeout=self.close_timeout)
