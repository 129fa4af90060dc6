"""UPnP IGD messages: SSDP answers, device descriptions, SOAP requests and answers, and the small HTTP
parser under them — with hostile input (entity bombs, external entities, huge documents, control URLs
pointing elsewhere, broken chunking) refused with typed errors."""

from __future__ import annotations

import pytest

from mycel.portmap import upnp
from mycel.portmap.igd import parse_http_response
from mycel.portmap.upnp import UpnpError, UpnpMessageError

LOCATION = "http://10.0.1.1:37901/rootDesc.xml"


def _description(services: str, url_base: str = "") -> bytes:
    return (
        '<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0">'
        f"{url_base}<device><deviceType>{upnp.IGD_DEVICE}</deviceType><deviceList><device>"
        "<deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><deviceList><device>"
        f"<serviceList>{services}</serviceList></device></deviceList></device></deviceList></device></root>"
    ).encode()


def _service(kind: str, control: str) -> str:
    return f"<service><serviceType>{kind}</serviceType><controlURL>{control}</controlURL></service>"


def test_msearch_has_the_ssdp_layout() -> None:
    msg = upnp.msearch(mx=3).decode()
    assert msg.startswith("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n")
    assert 'MAN: "ssdp:discover"\r\n' in msg and "MX: 3\r\n" in msg and f"ST: {upnp.IGD_DEVICE}\r\n" in msg
    assert msg.endswith("\r\n\r\n")


def test_ssdp_answer_parses() -> None:
    data = (
        f"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: {upnp.IGD_DEVICE}\r\nUSN: uuid:x::{upnp.IGD_DEVICE}\r\n"
        f"EXT:\r\nSERVER: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1\r\nlocation: {LOCATION}\r\n\r\n"
    ).encode()
    answer = upnp.parse_ssdp_response(data)
    assert answer.location == LOCATION and answer.st == upnp.IGD_DEVICE and answer.usn.startswith("uuid:x")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"NOTIFY * HTTP/1.1\r\nLOCATION: http://10.0.1.1/\r\n\r\n",  # not an answer
        b"HTTP/1.1 404 Not Found\r\nLOCATION: http://10.0.1.1/\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nST: x\r\n\r\n",  # no LOCATION
        b"HTTP/1.1 200 OK\r\nLOCATION: file:///etc/passwd\r\n\r\n",  # not http
        b"HTTP/1.1 200 OK\r\nLOCATION: https://10.0.1.1/\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nLOCATION: http://10.0.1.1/\xff\r\n\r\n",  # not ASCII
        b"HTTP/1.1 200 OK\r\nLOCATION: http://10.0.1.1/\r\nX: " + b"a" * upnp.MAX_SSDP + b"\r\n\r\n",  # oversized
    ],
)
def test_bad_ssdp_answers_are_typed(data: bytes) -> None:
    with pytest.raises(UpnpMessageError):
        upnp.parse_ssdp_response(data)


def test_description_gives_the_preferred_wan_service_resolved() -> None:
    desc = _description(
        _service("urn:schemas-upnp-org:service:Layer3Forwarding:1", "/L3F")
        + _service("urn:schemas-upnp-org:service:WANPPPConnection:1", "/ctl/PPP")
        + _service("urn:schemas-upnp-org:service:WANIPConnection:1", "/ctl/IPConn")
    )
    service = upnp.parse_description(desc, LOCATION)
    assert service == upnp.WanService("urn:schemas-upnp-org:service:WANIPConnection:1", "http://10.0.1.1:37901/ctl/IPConn")
    based = upnp.parse_description(
        _description(_service("urn:schemas-upnp-org:service:WANIPConnection:2", "ctl"), "<URLBase>http://10.0.1.1:5000/x/</URLBase>"),
        LOCATION,
    )
    assert based.control_url == "http://10.0.1.1:5000/x/ctl" and based.service_type.endswith(":2")


@pytest.mark.parametrize(
    "data",
    [
        _description(_service("urn:schemas-upnp-org:service:WANIPConnection:1", "http://203.0.113.9/ctl")),  # elsewhere
        _description(_service("urn:schemas-upnp-org:service:WANIPConnection:1", "http://10.0.1.1.evil/ctl")),
        _description(_service("urn:schemas-upnp-org:service:Layer3Forwarding:1", "/L3F")),  # no WAN service
        _description(""),
        b"<root><unclosed></root>",
        b"\xff\xfe not xml",
        # billion laughs: a DTD with nested entities (never expanded: DTDs are refused)
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
        b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;">]><root>&lol3;</root>',
        # an external entity (would read a local file)
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><root>&x;</root>',
        # huge: past the cap before any parsing
        _description(_service("urn:schemas-upnp-org:service:WANIPConnection:1", "/ctl") + "<!--" + "x" * upnp.MAX_XML + "-->"),
    ],
)
def test_hostile_descriptions_are_refused(data: bytes) -> None:
    with pytest.raises(UpnpMessageError):
        upnp.parse_description(data, LOCATION)


def test_description_looks_at_a_bounded_number_of_services() -> None:
    junk = _service("urn:schemas-upnp-org:service:Junk:1", "/j") * upnp.MAX_SERVICES
    with pytest.raises(UpnpMessageError):  # the WAN service past the bound is not looked at
        upnp.parse_description(_description(junk + _service(upnp.WAN_SERVICES[1], "/ctl")), LOCATION)


def test_soap_request_layout_escapes_arguments() -> None:
    headers, body = upnp.soap_request(
        upnp.WAN_SERVICES[1], "AddPortMapping", upnp.add_port_mapping_args("tcp", 4001, 4001, "10.0.1.2", 60, "a<b>&c")
    )
    assert headers["SOAPAction"] == f'"{upnp.WAN_SERVICES[1]}#AddPortMapping"'
    text = body.decode()
    assert f'<u:AddPortMapping xmlns:u="{upnp.WAN_SERVICES[1]}">' in text
    assert (
        "<NewRemoteHost></NewRemoteHost><NewExternalPort>4001</NewExternalPort><NewProtocol>TCP</NewProtocol>"
        "<NewInternalPort>4001</NewInternalPort><NewInternalClient>10.0.1.2</NewInternalClient><NewEnabled>1</NewEnabled>"
        "<NewPortMappingDescription>a&lt;b&gt;&amp;c</NewPortMappingDescription><NewLeaseDuration>60</NewLeaseDuration>"
    ) in text


def _envelope(inner: str) -> bytes:
    return (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        f"{inner}</s:Body></s:Envelope>"
    ).encode()


def test_soap_answers_and_faults() -> None:
    ok = _envelope(
        f'<u:GetExternalIPAddressResponse xmlns:u="{upnp.WAN_SERVICES[1]}">'
        "<NewExternalIPAddress>198.18.0.2</NewExternalIPAddress></u:GetExternalIPAddressResponse>"
    )
    args = upnp.parse_soap_response(200, ok, "GetExternalIPAddress")
    assert str(upnp.parse_external_ip(args)) == "198.18.0.2"
    fault = _envelope(
        "<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>"
        '<UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>718</errorCode>'
        "<errorDescription>ConflictInMappingEntry</errorDescription></UPnPError></detail></s:Fault>"
    )
    with pytest.raises(UpnpError) as info:
        upnp.parse_soap_response(500, fault, "AddPortMapping")
    assert info.value.code == 718 and not isinstance(info.value, UpnpMessageError)
    with pytest.raises(UpnpError) as http_error:
        upnp.parse_soap_response(401, b"", "AddPortMapping")
    assert http_error.value.code is None
    with pytest.raises(UpnpMessageError):  # a 200 answering another action
        upnp.parse_soap_response(200, ok, "AddPortMapping")
    with pytest.raises(UpnpMessageError):
        upnp.parse_external_ip({"NewExternalIPAddress": "not an ip"})
    with pytest.raises(UpnpMessageError):  # an entity bomb in a SOAP answer too
        upnp.parse_soap_response(200, b'<!DOCTYPE a [<!ENTITY b "c">]><a>&b;</a>', "X")


def test_http_answers_parse_with_length_chunks_or_close() -> None:
    assert parse_http_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef") == (200, b"abc")
    assert parse_http_response(b"HTTP/1.0 500 Err\r\n\r\nbody to close") == (500, b"body to close")
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
    assert parse_http_response(chunked) == (200, b"abcde")


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n",  # no end of headers
        b"X" * 9000 + b"\r\n\r\n",  # headers past 8 KiB
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nshort",  # truncated
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",  # bad chunk size
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffff\r\nabc\r\n",  # chunk past the body
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",  # no last chunk
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (upnp.MAX_XML + 1),  # body past the cap
    ],
)
def test_bad_http_answers_are_typed(data: bytes) -> None:
    with pytest.raises(UpnpMessageError):
        parse_http_response(data)
