"""UPnP IGD over real HTTP on 127.0.0.1: a scripted IGD control point answers SOAP (external address,
conflicts, permanent-only leases, the mapping list), and hostile servers — one that floods, one that
never answers — give typed errors within the bounds."""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from mycel.portmap import upnp
from mycel.portmap.igd import HTTP_TIMEOUT, MAX_HEADERS, IgdClient, http_request
from mycel.portmap.service import Lease, UpnpBackend
from mycel.portmap.upnp import UpnpError, UpnpMessageError, WanService

SERVICE = upnp.WAN_SERVICES[1]

Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def _serve(nursery: trio.Nursery, handler: Handler) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def _read_request(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(m.group(1)) if (m := re.search(rb"Content-Length: (\d+)", head)) else 0
    while len(body) < length:
        body += await stream.receive_some(4096)
    return head + b"\r\n\r\n" + body


def _answer(action: str, inner: str = "", status: int = 200) -> bytes:
    if status == 200:
        xml = f'<u:{action}Response xmlns:u="{SERVICE}">{inner}</u:{action}Response>'
    else:
        xml = (
            "<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>"
            f'<UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>{inner}</errorCode></UPnPError>'
            "</detail></s:Fault>"
        )
    body = (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        f"{xml}</s:Body></s:Envelope>"
    ).encode()
    reason = "OK" if status == 200 else "Internal Server Error"
    return f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


@dataclass
class ScriptedIgd:
    """Answers SOAP actions; AddPortMapping is refused with ``add_refusals`` codes first."""

    add_refusals: list[int] = field(default_factory=list)
    entries: int = 2
    actions: list[tuple[str, str]] = field(default_factory=list)  # (action, body)

    async def handle(self, stream: trio.SocketStream) -> None:
        request = (await _read_request(stream)).decode()
        action = re.search(r'SOAPAction: "[^#]+#(\w+)"', request)
        assert action is not None and request.startswith("POST /ctl/IPConn HTTP/1.1\r\n")
        name = action.group(1)
        self.actions.append((name, request.partition("\r\n\r\n")[2]))
        if name == "GetExternalIPAddress":
            reply = _answer(name, "<NewExternalIPAddress>198.18.0.2</NewExternalIPAddress>")
        elif name == "AddPortMapping" and self.add_refusals:
            reply = _answer(name, str(self.add_refusals.pop(0)), status=500)
        elif name == "GetGenericPortMappingEntry":
            index = int(re.search(r"<NewPortMappingIndex>(\d+)<", request).group(1))  # type: ignore[union-attr]
            reply = (
                _answer(name, f"<NewExternalPort>{4001 + index}</NewExternalPort><NewProtocol>TCP</NewProtocol>")
                if index < self.entries
                else _answer(name, "713", status=500)
            )
        else:
            reply = _answer(name)
        await stream.send_all(reply)


async def test_upnp_backend_maps_around_conflicts_and_permanent_only_gateways(nursery: trio.Nursery) -> None:
    igd = ScriptedIgd(add_refusals=[718, 725])
    port = await _serve(nursery, igd.handle)
    client = IgdClient(WanService(SERVICE, f"http://127.0.0.1:{port}/ctl/IPConn"))
    backend = UpnpBackend(client, "10.0.1.2", rng=random.Random(7))
    expected_port = random.Random(7).randint(1024, 65535)
    with trio.fail_after(10):
        lease = await backend.map("tcp", 4001, 3600, 0)
        assert lease == Lease("tcp", 4001, "198.18.0.2", expected_port, 0)  # taken port: another; then permanent
        await backend.unmap(lease)
        assert [e["NewExternalPort"] for e in await client.port_mappings()] == ["4001", "4002"]
    names = [a for a, _ in igd.actions]
    assert names == ["GetExternalIPAddress", "AddPortMapping", "AddPortMapping", "AddPortMapping",
                     "DeletePortMapping", "GetGenericPortMappingEntry", "GetGenericPortMappingEntry",
                     "GetGenericPortMappingEntry"]
    adds = [body for a, body in igd.actions if a == "AddPortMapping"]
    assert "<NewExternalPort>4001</NewExternalPort>" in adds[0] and "<NewLeaseDuration>3600<" in adds[0]
    assert f"<NewExternalPort>{expected_port}</NewExternalPort>" in adds[1]
    assert "<NewLeaseDuration>0<" in adds[2] and "<NewInternalClient>10.0.1.2<" in adds[2]
    assert f"<NewExternalPort>{expected_port}</NewExternalPort><NewProtocol>TCP</NewProtocol>" in igd.actions[4][1]


async def test_refusals_other_than_conflicts_are_typed(nursery: trio.Nursery) -> None:
    igd = ScriptedIgd(add_refusals=[606])  # Action not authorized
    port = await _serve(nursery, igd.handle)
    backend = UpnpBackend(IgdClient(WanService(SERVICE, f"http://127.0.0.1:{port}/ctl/IPConn")), "10.0.1.2")
    with trio.fail_after(10), pytest.raises(UpnpError) as info:
        await backend.map("udp", 4001, 60, 0)
    assert info.value.code == 606


async def test_a_flooding_server_is_cut_at_the_bound(nursery: trio.Nursery) -> None:
    sent = 0

    async def flood(stream: trio.SocketStream) -> None:
        nonlocal sent
        await _read_request(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\n\r\n")
        chunk = b"<a>" * 10000
        try:
            while sent < 10_000_000:  # (bounded: the client hangs up long before)
                await stream.send_all(chunk)
                sent += len(chunk)
        except trio.BrokenResourceError:
            pass

    port = await _serve(nursery, flood)
    with trio.fail_after(10), pytest.raises(UpnpMessageError) as info:
        await http_request(f"http://127.0.0.1:{port}/rootDesc.xml", "GET", {})
    read = int(re.search(r"over (\d+) bytes", str(info.value)).group(1))  # type: ignore[union-attr]
    assert read <= MAX_HEADERS + upnp.MAX_XML + 1024 + 16384  # cut within one read of the bound


async def test_a_silent_server_times_out(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await _read_request(stream)
        await trio.sleep_forever()

    port = await _serve(nursery, silent)
    start = trio.current_time()
    with pytest.raises(UpnpError):
        await http_request(f"http://127.0.0.1:{port}/rootDesc.xml", "GET", {})
    assert trio.current_time() - start == pytest.approx(HTTP_TIMEOUT)


async def test_http_urls_other_than_http_are_refused() -> None:
    with pytest.raises(UpnpMessageError):
        await http_request("https://127.0.0.1/x", "GET", {})
