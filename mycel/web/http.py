"""A tiny read-only HTTP/1.1 server on trio, for the metrics exporter and the web view.

It answers ``GET`` and ``HEAD`` only, one request per connection (``Connection: close``), and keeps
every bound explicit: the request head is at most :data:`MAX_REQUEST_HEAD` bytes (beyond: 431 and
the connection is closed), a client has :data:`REQUEST_TIMEOUT` seconds to send it (beyond: closed),
at most :data:`MAX_CLIENTS` connections are served at once (beyond: 503 and closed at once). A
request body is never read. Nothing here writes to the host it shows: handlers only read.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import trio

log = logging.getLogger("mycel.web.http")

MAX_REQUEST_HEAD = 8192
"""Bytes of request line and headers read at most; a longer head gets 431."""
REQUEST_TIMEOUT = 10.0
"""Seconds a client has to send its request head and take the response."""
MAX_CLIENTS = 32
"""Connections served at once; a further one gets 503 and is closed."""

LINGER_SECONDS = 1.0
"""Seconds a connection is drained after the answer before it is closed."""
LINGER_BYTES = 65536
"""Bytes drained at most after the answer (a body we never read)."""

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Request:
    """A parsed request: method, path (without query) and query parameters."""

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    """What a handler answers: status, content type and body (bytes)."""

    status: int
    content_type: str
    """The ``Content-Type`` header's value."""
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    """More headers, as (name, value) pairs."""


Handler = Callable[[Request], Awaitable[Response]]
"""``async def handler(request) -> Response``."""


def parse_listen(spec: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"127.0.0.1:9100"``, ``"[::1]:9100"``, ``"localhost:0"`` or ``"9100"`` -> (host, port).

    Raises ValueError on anything else (a port outside 0-65535, an empty host)."""
    text = spec.strip()
    if text.isdigit():
        host, port_text = default_host, text
    elif text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            raise ValueError(f"{spec!r}: expected [ipv6]:port")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{spec!r}: expected host:port (e.g. 127.0.0.1:9100)")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{spec!r}: the port must be a number from 0 to 65535")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_head(head: bytes) -> Request | None:
    """The request line of ``head``; None when it is not ``METHOD TARGET HTTP/1.x``."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    url = urlsplit(target)
    return Request(method, url.path or "/", parse_qs(url.query, max_num_fields=16))


def _encode(resp: Response, head_only: bool) -> bytes:
    reason = _REASONS.get(resp.status, "Unknown")
    lines = [
        f"HTTP/1.1 {resp.status} {reason}",
        f"Content-Type: {resp.content_type}",
        f"Content-Length: {len(resp.body)}",
        "Connection: close",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        *(f"{k}: {v}" for k, v in resp.headers),
    ]
    out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return out if head_only else out + resp.body


async def _linger_close(stream: trio.SocketStream) -> None:
    """Close after answering without the response being lost: send FIN, then read (and drop) what the
    client still sends — at most :data:`LINGER_BYTES` for at most :data:`LINGER_SECONDS` — so that
    closing with unread request bytes does not make the kernel reset the connection over the answer."""
    try:
        with trio.move_on_after(LINGER_SECONDS):
            await stream.send_eof()
            left = LINGER_BYTES
            while left > 0:
                chunk = await stream.receive_some(min(left, 16384))
                if not chunk:
                    break
                left -= len(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, OSError):
        pass
    finally:  # cancelled (the host is closing) or not: the socket is closed
        await trio.aclose_forcefully(stream)


def text_response(status: int, text: str) -> Response:
    """A plain-text response."""
    return Response(status, "text/plain; charset=utf-8", text.encode())


class HttpServer:
    """Serves ``handler`` on one TCP listener (see the module docstring for the bounds).

    ``await nursery.start(server.serve, host, port)`` binds and returns the bound ``(host, port)``;
    cancelling the task closes the listener and every connection.
    """

    def __init__(self, handler: Handler, *, name: str = "http") -> None:
        self.handler = handler
        self.name = name
        self.active = 0
        """Connections being served now."""
        self.served = 0
        """Requests answered so far."""
        self.refused = 0
        """Connections refused (too many at once, oversized or malformed requests, timeouts)."""
        self._changed = trio.Event()  # set (and replaced) whenever ``active`` changes

    def _set_active(self, delta: int) -> None:
        self.active += delta
        self._changed.set()
        self._changed = trio.Event()

    async def wait_active(self, count: int) -> None:
        """Return once exactly ``count`` connections are being served."""
        while self.active != count:
            await self._changed.wait()

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind ``host:port`` and serve until cancelled."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        try:
            sock = listeners[0].socket
            bound = sock.getsockname()
            if not is_loopback(host):
                log.warning("%s: serving on %s, which is not a loopback address", self.name, host)
            task_status.started((str(bound[0]), int(bound[1])))
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(self._accept_loop, listener, nursery)
        finally:
            for listener in listeners:
                with trio.CancelScope(shield=True):
                    await listener.aclose()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # EMFILE and the like: wait a little instead of spinning
                log.info("%s: accept failed: %s", self.name, exc)
                await trio.sleep(0.1)
                continue
            if self.active >= MAX_CLIENTS:
                self.refused += 1
                nursery.start_soon(self._refuse, stream)
                continue
            self._set_active(1)
            nursery.start_soon(self._serve_one, stream)

    async def _refuse(self, stream: trio.SocketStream) -> None:
        with trio.move_on_after(1.0):
            try:
                await stream.send_all(_encode(text_response(503, "busy\n"), False))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        await _linger_close(stream)

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(REQUEST_TIMEOUT) as scope:
                await self._exchange(stream)
            if scope.cancelled_caught:
                self.refused += 1
                log.debug("%s: a client took longer than %g s", self.name, REQUEST_TIMEOUT)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("%s: client went away: %s", self.name, exc)
        finally:
            self._set_active(-1)
            await _linger_close(stream)

    async def _exchange(self, stream: trio.SocketStream) -> None:
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            if len(buf) > MAX_REQUEST_HEAD:
                self.refused += 1
                await stream.send_all(_encode(text_response(431, "request head too large\n"), False))
                return
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            buf += chunk
        head = bytes(buf[: buf.index(b"\r\n\r\n")])
        if len(head) > MAX_REQUEST_HEAD:
            self.refused += 1
            await stream.send_all(_encode(text_response(431, "request head too large\n"), False))
            return
        request = _parse_head(head)
        if request is None:
            self.refused += 1
            await stream.send_all(_encode(text_response(400, "bad request\n"), False))
            return
        if request.method not in ("GET", "HEAD"):
            resp = Response(405, "text/plain; charset=utf-8", b"read-only: GET and HEAD only\n", (("Allow", "GET, HEAD"),))
        else:
            try:
                resp = await self.handler(request)
            except Exception:
                log.exception("%s: handler failed for %s", self.name, request.path)
                resp = text_response(500, "internal error\n")
        self.served += 1
        await stream.send_all(_encode(resp, request.method == "HEAD"))


async def http_get(host: str, port: int, path: str = "/", *, max_bytes: int = 16 * 1024 * 1024) -> tuple[int, dict[str, str], bytes]:
    """A minimal client for these servers (tests, health checks): ``GET path`` -> (status, headers, body).

    Reads at most ``max_bytes`` (beyond: ValueError); the server closes the connection after answering."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        buf = bytearray()
        while chunk := await stream.receive_some(65536):
            buf += chunk
            if len(buf) > max_bytes:
                raise ValueError(f"response larger than {max_bytes} bytes")
    head, sep, body = bytes(buf).partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no complete response head")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


__all__ = [
    "Handler",
    "HttpServer",
    "MAX_CLIENTS",
    "MAX_REQUEST_HEAD",
    "REQUEST_TIMEOUT",
    "Request",
    "Response",
    "is_loopback",
    "parse_listen",
    "http_get",
    "text_response",
]
