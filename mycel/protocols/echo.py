"""Echo (``/echo/1.0.0``, as go-libp2p-daemon serves it): every byte back; EOF answered with EOF."""

from __future__ import annotations

from collections.abc import Mapping

from mycel.core.abc import MuxedStream
from mycel.service import Service, StreamHandler

ECHO_PROTOCOL = "/echo/1.0.0"
CHUNK = 64 * 1024


async def serve_echo(stream: MuxedStream) -> None:
    """Send back every byte read from ``stream`` until the remote half-closes, then half-close too."""
    while True:
        data = await stream.receive_some(CHUNK)
        if not data:
            break
        await stream.send_all(data)
    await stream.send_eof()


class Echo(Service):
    """The echo service: serves ``/echo/1.0.0`` with :func:`serve_echo`. Not in the default services."""

    def handlers(self) -> Mapping[str, StreamHandler]:
        return {ECHO_PROTOCOL: serve_echo}
