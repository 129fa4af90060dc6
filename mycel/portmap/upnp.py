"""UPnP IGD port mapping, sans-IO: SSDP discovery messages, the device description, and the SOAP
actions of WANIPConnection / WANPPPConnection (AddPortMapping, DeletePortMapping,
GetExternalIPAddress, GetGenericPortMappingEntry).

Everything a router sends is hostile until checked: SSDP answers are capped at
:data:`MAX_SSDP` bytes, descriptions and SOAP answers at :data:`MAX_XML` bytes, and XML is parsed
by ``defusedxml`` with DTDs forbidden (no entity expansion: no "billion laughs", no external
entities). A malformed input raises :class:`UpnpMessageError`; a SOAP fault raises
:class:`UpnpError` with the UPnP ``errorCode``.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass
from typing import Final
from xml.etree.ElementTree import Element  # noqa: S405 (only the type; parsing goes through defusedxml)
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from mycel.portmap.natpmp import PortMapError, PortMapMessageError

SSDP_GROUP: Final = "239.255.255.250"
SSDP_PORT: Final = 1900
MAX_SSDP: Final = 2048
"""SSDP answers longer than this are refused (real ones are a few hundred bytes)."""
MAX_XML: Final = 64 * 1024
"""Descriptions and SOAP answers longer than this are refused (miniupnpd's description is ~4 KiB)."""
MAX_SERVICES: Final = 64
"""At most this many ``<service>`` elements of a description are looked at."""
IGD_DEVICE: Final = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
WAN_SERVICES: Final = (
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
)
"""The services that map ports, most preferred first."""
_DEVICE_NS: Final = "{urn:schemas-upnp-org:device-1-0}"
_SOAP_ENV: Final = "http://schemas.xmlsoap.org/soap/envelope/"
_CONTROL_NS: Final = "urn:schemas-upnp-org:control-1-0"


class UpnpError(PortMapError):
    """The router answered an action with a SOAP fault (``code``: the UPnP errorCode, e.g. 718
    ConflictInMappingEntry, 725 OnlyPermanentLeasesSupported) or an HTTP error."""


class UpnpMessageError(PortMapMessageError):
    """An SSDP answer, description or SOAP answer that is malformed, too large, or hostile XML."""


@dataclass(frozen=True)
class SsdpResponse:
    """One answer to an M-SEARCH: where the device description is (``location``), its search target
    ``st`` and unique service name ``usn``."""

    location: str
    st: str
    usn: str


@dataclass(frozen=True)
class WanService:
    """A port-mapping service found in a device description: its ``service_type`` (one of
    :data:`WAN_SERVICES`) and ``control_url``."""

    service_type: str
    control_url: str
    """Absolute (resolved against the description's URL)."""


def msearch(st: str = IGD_DEVICE, mx: int = 2) -> bytes:
    """An SSDP M-SEARCH for ``st`` (answers are spread over ``mx`` seconds)."""
    return (
        "M-SEARCH * HTTP/1.1\r\n"
        f"HOST: {SSDP_GROUP}:{SSDP_PORT}\r\n"
        'MAN: "ssdp:discover"\r\n'
        f"MX: {mx}\r\n"
        f"ST: {st}\r\n"
        "\r\n"
    ).encode()


def parse_ssdp_response(data: bytes) -> SsdpResponse:
    """Parse an M-SEARCH answer (``HTTP/1.1 200 OK`` with ``LOCATION``, an http:// URL)."""
    if len(data) > MAX_SSDP:
        raise UpnpMessageError(f"SSDP answer of {len(data)} bytes (> {MAX_SSDP})")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise UpnpMessageError("SSDP answer is not ASCII") from None
    lines = text.split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/1.") or status[1] != "200":
        raise UpnpMessageError(f"SSDP answer starts {lines[0][:40]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    location = headers.get("location", "")
    if _http_url(location) is None:
        raise UpnpMessageError(f"SSDP answer without an http LOCATION: {location[:80]!r}")
    return SsdpResponse(location, headers.get("st", ""), headers.get("usn", ""))


def _http_url(url: str) -> urllib.parse.SplitResult | None:
    """``url`` split, if it is an http URL with a host and a valid port (None otherwise: urllib raises
    ValueError for a bad ``[IPv6]`` host, a netloc that NFKC-normalizes to ``/?#@:``, a port out of range)."""
    try:
        parsed = urllib.parse.urlsplit(url)
        parsed.port  # noqa: B018 (validates the port)
    except ValueError:
        return None
    return parsed if parsed.scheme == "http" and parsed.hostname else None


def parse_decimal(text: str | None, max_digits: int) -> int | None:
    """A decimal field of at most ``max_digits`` ASCII digits (``str.isdigit`` accepts ``²``, which
    ``int`` refuses, and ``int`` refuses more than 4300 digits)."""
    text = (text or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= max_digits else None


def _parse_xml(data: bytes) -> Element:
    if len(data) > MAX_XML:
        raise UpnpMessageError(f"XML document of {len(data)} bytes (> {MAX_XML})")
    try:
        root: Element = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise UpnpMessageError(f"hostile XML refused: {type(exc).__name__}") from None
    except SafeET.ParseError as exc:
        raise UpnpMessageError(f"malformed XML: {exc}") from None
    except (LookupError, ValueError) as exc:  # the declared encoding: unknown, or multi-byte (expat refuses)
        raise UpnpMessageError(f"XML in an encoding we cannot read: {str(exc)[:80]}") from None
    return root


def parse_description(data: bytes, location: str) -> WanService:
    """The preferred port-mapping service (:data:`WAN_SERVICES`) of a device description fetched
    from ``location``; its control URL resolved against ``URLBase`` or ``location``, and required to
    point at the same host as ``location`` (a description cannot send our SOAP elsewhere)."""
    root = _parse_xml(data)
    base = location
    url_base = root.find(f"{_DEVICE_NS}URLBase")
    if url_base is not None and url_base.text and url_base.text.strip():
        base = url_base.text.strip()
    found: dict[str, str] = {}
    for i, service in enumerate(root.iter(f"{_DEVICE_NS}service")):
        if i >= MAX_SERVICES:
            break
        kind = (service.findtext(f"{_DEVICE_NS}serviceType") or "").strip()
        control = (service.findtext(f"{_DEVICE_NS}controlURL") or "").strip()
        if kind in WAN_SERVICES and control and kind not in found:
            found[kind] = control
    for kind in WAN_SERVICES:
        if kind in found:
            try:
                url = urllib.parse.urljoin(base, found[kind])
            except ValueError:
                raise UpnpMessageError(f"bad control URL {found[kind][:80]!r} (base {base[:80]!r})") from None
            parsed, origin = _http_url(url), urllib.parse.urlsplit(location)
            if parsed is None or parsed.hostname != origin.hostname:
                raise UpnpMessageError(f"control URL {url[:80]!r} is not on the device's host {origin.hostname}")
            return WanService(kind, url)
    raise UpnpMessageError("the device description has no WANIPConnection / WANPPPConnection service")


def soap_request(service_type: str, action: str, args: dict[str, str | int]) -> tuple[dict[str, str], bytes]:
    """The headers (``SOAPAction``, ``Content-Type``) and body of ``action`` with ``args`` (in order)."""
    fields = "".join(f"<{name}>{escape(str(value))}</{name}>" for name, value in args.items())
    body = (
        '<?xml version="1.0"?>\r\n'
        f'<s:Envelope xmlns:s="{_SOAP_ENV}" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">'
        f'<s:Body><u:{action} xmlns:u="{service_type}">{fields}</u:{action}></s:Body></s:Envelope>\r\n'
    ).encode()
    headers = {"SOAPAction": f'"{service_type}#{action}"', "Content-Type": 'text/xml; charset="utf-8"'}
    return headers, body


def parse_soap_response(status: int, data: bytes, action: str) -> dict[str, str]:
    """The output arguments of ``action`` from an HTTP answer (``status`` and body); a SOAP fault
    raises :class:`UpnpError` with its UPnP errorCode."""
    root = _parse_xml(data) if data.strip() else None
    body = root.find(f"{{{_SOAP_ENV}}}Body") if root is not None else None
    if body is not None:
        fault = body.find(f"{{{_SOAP_ENV}}}Fault")
        if fault is not None:
            code_text = next((e.text for e in fault.iter(f"{{{_CONTROL_NS}}}errorCode")), None)
            desc = next((e.text for e in fault.iter(f"{{{_CONTROL_NS}}}errorDescription")), None) or ""
            code = parse_decimal(code_text, 9)
            raise UpnpError(f"{action} refused: {code} {desc[:80]}", code)
    if status != 200:
        raise UpnpError(f"{action}: HTTP {status}", None)
    if body is None:
        raise UpnpMessageError(f"{action} answer without a SOAP Body")
    for child in body:
        if child.tag.rsplit("}", 1)[-1] == f"{action}Response":
            return {arg.tag.rsplit("}", 1)[-1]: (arg.text or "").strip() for arg in list(child)[:32]}
    raise UpnpMessageError(f"no {action}Response in the answer")


def parse_external_ip(args: dict[str, str]) -> ipaddress.IPv4Address:
    """``NewExternalIPAddress`` from GetExternalIPAddress's output (an IPv4 address)."""
    try:
        return ipaddress.IPv4Address(args.get("NewExternalIPAddress", ""))
    except ValueError:
        raise UpnpMessageError(f"bad NewExternalIPAddress {args.get('NewExternalIPAddress', '')[:40]!r}") from None


def add_port_mapping_args(
    protocol: str, external_port: int, internal_port: int, internal_client: str, lifetime: int, description: str
) -> dict[str, str | int]:
    """AddPortMapping's input arguments (``lifetime`` 0: a permanent lease)."""
    return {
        "NewRemoteHost": "",
        "NewExternalPort": external_port,
        "NewProtocol": protocol.upper(),
        "NewInternalPort": internal_port,
        "NewInternalClient": internal_client,
        "NewEnabled": 1,
        "NewPortMappingDescription": description,
        "NewLeaseDuration": lifetime,
    }


def delete_port_mapping_args(protocol: str, external_port: int) -> dict[str, str | int]:
    """DeletePortMapping's input arguments."""
    return {"NewRemoteHost": "", "NewExternalPort": external_port, "NewProtocol": protocol.upper()}


__all__ = [
    "IGD_DEVICE",
    "MAX_SSDP",
    "MAX_XML",
    "SSDP_GROUP",
    "SSDP_PORT",
    "WAN_SERVICES",
    "SsdpResponse",
    "UpnpError",
    "UpnpMessageError",
    "WanService",
    "add_port_mapping_args",
    "delete_port_mapping_args",
    "msearch",
    "parse_decimal",
    "parse_description",
    "parse_external_ip",
    "parse_soap_response",
    "parse_ssdp_response",
    "soap_request",
]
