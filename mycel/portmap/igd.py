"""UPnP IGD on trio: SSDP discovery on the LAN interface, the description fetched, SOAP actions sent
(the messages are :mod:`~mycel.portmap.upnp`).

HTTP here is a minimal HTTP/1.1 client of our own for this tiny fixed use (one request per
connection, ``Connection: close``, ``Content-Length`` or read-to-close, chunked answers decoded):
answers are capped at :data:`~mycel.portmap.upnp.MAX_XML` bytes of body and 8 KiB of headers, and
every exchange at :data:`HTTP_TIMEOUT` seconds — a router that dribbles or floods gets a typed error.
"""

from __future__ import annotations

import logging
import socket
import urllib.parse
from typing import Final

import trio

from mycel.portmap import upnp
from mycel.portmap.upnp import UpnpError, UpnpMessageError, WanService

log = logging.getLogger("mycel.portmap")

HTTP_TIMEOUT: Final = 5.0
MAX_HEADERS: Final = 8192
MAX_ANSWERS: Final = 16
"""SSDP answers looked at per discovery (a flood of answers is cut here)."""


async def http_request(url: str, method: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP/1.1 exchange with ``url`` (http only): the status and the body (bounded, see above)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or not parsed.hostname:
        raise UpnpMessageError(f"not an http URL: {url[:80]!r}")
    port = parsed.port or 80
    path = parsed.path or "/"
    if parsed.query:
        path += "?" + parsed.query
    head = f"{method} {path} HTTP/1.1\r\nHost: {parsed.hostname}:{port}\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    try:
        with trio.fail_after(HTTP_TIMEOUT):
            stream = await trio.open_tcp_stream(parsed.hostname, port)
            async with stream:
                await stream.send_all(head.encode() + b"\r\n" + body)
                data = bytearray()
                while True:
                    chunk = await stream.receive_some(16384)
                    if not chunk:
                        break
                    data += chunk
                    if len(data) > MAX_HEADERS + upnp.MAX_XML + 1024:
                        raise UpnpMessageError(f"HTTP answer from {parsed.hostname} over {len(data)} bytes")
    except trio.TooSlowError:
        raise UpnpError(f"no complete HTTP answer from {url[:80]} in {HTTP_TIMEOUT} s") from None
    except OSError as exc:
        raise UpnpError(f"HTTP to {url[:80]} failed: {exc}") from exc
    return parse_http_response(bytes(data))


def parse_http_response(data: bytes) -> tuple[int, bytes]:
    """Status and body of a complete HTTP/1.x answer (the connection was closed after it)."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or end > MAX_HEADERS:
        raise UpnpMessageError("HTTP answer without a header block under 8 KiB")
    lines = data[:end].decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    status = upnp.parse_decimal(status_line[1], 3) if len(status_line) >= 2 else None
    if status is None or not status_line[0].startswith("HTTP/1."):
        raise UpnpMessageError(f"bad HTTP status line {lines[0][:40]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = data[end + 4 :]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    elif "content-length" in headers:
        length = upnp.parse_decimal(headers["content-length"], 20)
        if length is None or length > len(body):
            raise UpnpMessageError(f"HTTP Content-Length {headers['content-length'][:20]!r} for {len(body)} bytes")
        body = body[:length]
    if len(body) > upnp.MAX_XML:
        raise UpnpMessageError(f"HTTP body of {len(body)} bytes (> {upnp.MAX_XML})")
    return status, body


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            raise UpnpMessageError("truncated chunked HTTP body")
        size_text = data[pos:eol].split(b";", 1)[0].strip()
        # hex digits only: int() also takes a sign ("-6" sent this loop back to where it started,
        # forever), underscores and spaces
        if not 0 < len(size_text) <= 16 or size_text.strip(b"0123456789abcdefABCDEF"):
            raise UpnpMessageError(f"bad chunk size {size_text[:16]!r}")
        size = int(size_text, 16)
        if size == 0:
            return bytes(out)
        if size > upnp.MAX_XML or eol + 2 + size > len(data):
            raise UpnpMessageError("chunk larger than the body")
        out += data[eol + 2 : eol + 2 + size]
        pos = eol + 4 + size


async def discover(interface_ip: str, *, timeout: float = 2.0) -> WanService:
    """Find a gateway's port-mapping service: an M-SEARCH multicast from ``interface_ip`` (the LAN
    address: the datagram leaves on that interface, TTL 2), answers for ``timeout`` seconds, the
    first description that names a WAN*Connection service wins."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        try:
            await sock.bind((interface_ip, 0))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface_ip))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
        except OSError as exc:
            raise UpnpError(f"cannot send SSDP from {interface_ip}: {exc}") from exc
        tried: set[str] = set()
        errors: list[str] = []
        with trio.move_on_after(timeout):
            for st in (upnp.IGD_DEVICE, "urn:schemas-upnp-org:service:WANIPConnection:1"):
                try:
                    await sock.sendto(upnp.msearch(st, max(1, int(timeout))), (upnp.SSDP_GROUP, upnp.SSDP_PORT))
                except OSError as exc:
                    raise UpnpError(f"cannot send an SSDP M-SEARCH from {interface_ip}: {exc}") from exc
            answers = 0
            while answers < MAX_ANSWERS:
                data, source = await sock.recvfrom(upnp.MAX_SSDP + 1)
                answers += 1
                try:
                    answer = upnp.parse_ssdp_response(data)
                    if urllib.parse.urlsplit(answer.location).hostname != source[0]:
                        raise UpnpMessageError(f"LOCATION {answer.location[:80]!r} is not on the sender {source[0]}")
                except UpnpMessageError as exc:
                    log.info("portmap: ignoring an SSDP answer from %s: %s", source[0], exc)
                    continue
                if answer.location in tried:
                    continue
                tried.add(answer.location)
                try:
                    status, body = await http_request(answer.location, "GET", {})
                    if status != 200:
                        raise UpnpError(f"HTTP {status} for the description")
                    return upnp.parse_description(body, answer.location)
                except UpnpError as exc:
                    log.info("portmap: the device at %s: %s", answer.location[:80], exc)
                    errors.append(str(exc))
    raise UpnpError(f"no UPnP IGD answered from {interface_ip} in {timeout} s" + (f" ({errors[-1]})" if errors else ""))


class IgdClient:
    """SOAP actions on a gateway's :class:`~mycel.portmap.upnp.WanService`."""

    def __init__(self, service: WanService) -> None:
        self.service = service

    async def action(self, action: str, args: dict[str, str | int]) -> dict[str, str]:
        """Call ``action`` with ``args``; its output arguments (a SOAP fault raises UpnpError)."""
        headers, body = upnp.soap_request(self.service.service_type, action, args)
        status, answer = await http_request(self.service.control_url, "POST", headers, body)
        return upnp.parse_soap_response(status, answer, action)

    async def external_ip(self) -> str:
        """GetExternalIPAddress."""
        return str(upnp.parse_external_ip(await self.action("GetExternalIPAddress", {})))

    async def add_port_mapping(
        self, protocol: str, external_port: int, internal_port: int, internal_client: str, lifetime: int,
        description: str = "mycel",
    ) -> None:
        """AddPortMapping (renewing is adding again with the same ports)."""
        args = upnp.add_port_mapping_args(protocol, external_port, internal_port, internal_client, lifetime, description)
        await self.action("AddPortMapping", args)

    async def delete_port_mapping(self, protocol: str, external_port: int) -> None:
        """DeletePortMapping."""
        await self.action("DeletePortMapping", upnp.delete_port_mapping_args(protocol, external_port))

    async def port_mappings(self, limit: int = 64) -> list[dict[str, str]]:
        """Every mapping the gateway lists (GetGenericPortMappingEntry from index 0 until refused)."""
        out = []
        for index in range(limit):
            try:
                out.append(await self.action("GetGenericPortMappingEntry", {"NewPortMappingIndex": index}))
            except UpnpError as exc:
                if exc.code in (713, 714, 402):  # SpecifiedArrayIndexInvalid / NoSuchEntryInArray / invalid args
                    break
                raise
        return out


__all__ = ["IgdClient", "discover", "http_request", "parse_http_response"]
