"""The web view's JSON and HTTP side: /api/state over HTTP on 127.0.0.1 follows peers, streams, the
gossipsub mesh and the DHT table; bandwidth is sampled each second; the server's bounds (head size,
methods, clients at once) hold; ``mycel listen --web`` serves it. (A host cancelled while its web view
serves: tests/integration/test_metrics.py, with the exporter.)"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
import trio.testing

from mycel.core.addrs import Reachability
from mycel.core.events import PeerConnected
from mycel.host import Host, open_host
from mycel.protocols.identify import Identify
from mycel.protocols.kad import KadDHT
from mycel.protocols.ping import Ping
from mycel.protocols.pubsub import Gossipsub
from mycel.service import Service
from mycel.testing.hosts import memory_config, memory_hosts
from mycel.transports.memory import MemoryNetwork
from mycel.web.http import MAX_CLIENTS, MAX_REQUEST_HEAD, http_get
from mycel.web.view import WebView

WAIT = 10


async def state_of(host: Host) -> dict[str, Any]:
    """``/api/state`` of ``host``'s web view, over HTTP."""
    address = host.service(WebView).address
    assert address is not None and address[0] == "127.0.0.1"
    status, headers, body = await http_get(*address, "/api/state")
    assert status == 200 and headers["content-type"] == "application/json"
    result: dict[str, Any] = json.loads(body)
    return result


async def test_state_follows_peers_streams_mesh_and_dht() -> None:
    def services() -> list[Service]:
        return [Identify(), Ping(), Gossipsub(), KadDHT(mode="server"), WebView()]

    async with memory_hosts(3, services=services) as (a, b, c):
        first = await state_of(a)
        assert first["peer_id"] == str(a.peer_id) and first["addrs"] == [str(x) for x in a.addrs]
        assert first["connections"] == [] and first["reachability"] == "unknown"
        assert first["pubsub"] == {"topics": [], "total_topics": 0, "scoring": False, "scores": {},
                                   "stats": first["pubsub"]["stats"]}  # fmt: skip
        status, headers, page = await http_get(*a.service(WebView).address or ("", 0), "/")
        assert status == 200 and headers["content-type"].startswith("text/html") and b"/api/state" in page
        assert b"http://" not in page.replace(b"http://www.w3.org/2000/svg", b"")  # no external assets
        ga, gb, gc = (h.service(Gossipsub) for h in (a, b, c))
        async with AsyncExitStack() as subs:
            for g in (ga, gb, gc):
                await subs.enter_async_context(g.subscribe("blocks"))
            await b.connect(a.peer_id, a.addrs)
            await a.connect(c.peer_id, c.addrs)
            await ga.wait_ready("blocks", 2, timeout=WAIT)
            s = await state_of(a)
        rows = {r["peer"]: r for r in s["connections"]}
        assert set(rows) == {str(b.peer_id), str(c.peer_id)} and s["peers"] == 2
        assert rows[str(b.peer_id)]["direction"] == "inbound" and rows[str(c.peer_id)]["direction"] == "outbound"
        for row in rows.values():
            assert (row["transport"], row["security"], row["muxer"]) == ("memory", "/noise", "/yamux/1.0.0")
            assert row["agent"] == b.config.agent_version  # identify ran
        streams = {r["protocol"]: r for r in s["streams"]}
        assert streams["/meshsub/1.2.0"]["inbound"] == 2 and streams["/meshsub/1.2.0"]["outbound"] == 2
        (topic,) = s["pubsub"]["topics"]
        assert topic["topic"] == "blocks" and topic["mesh"] == 2
        assert {p["peer"] for p in topic["peers"] if p["mesh"]} == {str(b.peer_id), str(c.peer_id)}
        assert s["dht"]["size"] == sum(s["dht"]["buckets"]) == 2
        assert s["relay"] == {"held": [], "serving": None} and s["holepunch"] is None and s["autonat"] is None
        a.set_reachability(Reachability.PUBLIC, a.addrs)  # what AutoNAT reports
        assert (await state_of(a))["reachability"] == "public"


async def test_bandwidth_is_sampled_every_second(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_hosts(2, services=lambda: [Identify(), Ping(), WebView()]) as (a, b):
        await a.connect(b.peer_id, b.addrs)
        view = a.service(WebView)
        stream = await a.new_stream(b.peer_id, "/ipfs/ping/1.0.0")
        await stream.send_all(b"x" * 32)  # ping echoes 32 bytes
        await stream.receive_some(32)
        await trio.sleep(3.5)
        samples = (await state_of(a))["bandwidth"]
        assert 3 <= len(samples) <= 4
        assert sum(x[1] for x in samples) > 0 and sum(x[2] for x in samples) > 0
        assert samples[-1][0] - samples[0][0] == pytest.approx(len(samples) - 1, abs=0.01)
        await stream.aclose()
        assert view.url.startswith("http://127.0.0.1:")


async def _raw(address: tuple[str, int], data: bytes) -> bytes:
    s = await trio.open_tcp_stream(*address)
    async with s:
        await s.send_all(data)
        out = b""
        with trio.fail_after(WAIT):
            while chunk := await s.receive_some(65536):
                out += chunk
        return out


async def test_http_bounds_read_only_and_clients_at_once() -> None:
    async with memory_hosts(1, services=lambda: [WebView()]) as (a,):
        address = a.service(WebView).address
        assert address is not None
        too_long = b"GET /" + b"a" * (MAX_REQUEST_HEAD + 10) + b" HTTP/1.1\r\n\r\n"
        assert (await _raw(address, too_long)).startswith(b"HTTP/1.1 431 ")
        assert (await _raw(address, b"POST /api/state HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")).startswith(b"HTTP/1.1 405 ")
        assert (await _raw(address, b"DELETE / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405 ")
        assert (await _raw(address, b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        assert (await http_get(*address, "/nothing"))[0] == 404
        assert (await http_get(*address, "/healthz"))[2] == b"ok\n"
        head = await _raw(address, b"HEAD /api/state HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")  # headers only
        server = a.service(WebView).server
        assert server is not None
        stalled = [await trio.open_tcp_stream(*address) for _ in range(MAX_CLIENTS)]
        with trio.fail_after(WAIT):
            await server.wait_active(MAX_CLIENTS)  # the server took the stalled clients
        assert (await _raw(address, b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 503 ")
        for s in stalled:
            await s.aclose()
        with trio.fail_after(WAIT):
            await server.wait_active(0)
        assert (await http_get(*address, "/healthz"))[0] == 200


async def test_autonat_confidence_shown_when_the_host_runs_it() -> None:
    from mycel.protocols.autonat import AutoNAT

    async with memory_hosts(1, services=lambda: [Identify(), AutoNAT(), WebView()]) as (a,):
        s = await state_of(a)
        assert s["autonat"] == {"confidence": a.service(AutoNAT).confidence, "addrs": {}}


async def test_a_port_in_use_fails_the_view_alone() -> None:
    network = MemoryNetwork()
    async with open_host(memory_config(network, services=[Identify(), WebView()])) as a:
        address = a.service(WebView).address
        assert address is not None
        taken = memory_config(network, services=[Identify(), WebView(f"127.0.0.1:{address[1]}")])
        with a.subscribe() as events:
            async with open_host(taken) as b:
                state = b.service_state(WebView)
                assert not state.running and state.stopped_by_failure and state.failures == 1
                await b.connect(a.peer_id, a.addrs)  # the host goes on
                with trio.fail_after(WAIT):
                    async for event in events:
                        if isinstance(event, PeerConnected):
                            break
                assert (await state_of(a))["peers"] == 1


def test_cli_listen_web_serves_the_view() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mycel", "listen", "--ephemeral", "--web", "127.0.0.1:0"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        url = ""
        for _ in range(20):
            line = proc.stdout.readline()
            if line.startswith("web view: "):
                url = line.split(": ", 1)[1].strip()
                break
        assert url.startswith("http://127.0.0.1:")
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)

        async def fetch() -> tuple[int, dict[str, str], bytes]:
            with trio.fail_after(WAIT):
                return await http_get(host, int(port), "/api/state")

        status, _, body = trio.run(fetch)
        assert status == 200 and json.loads(body)["peer_id"].startswith("12D3KooW")
    finally:
        proc.terminate()
        proc.wait(timeout=WAIT)
    bad = subprocess.run([sys.executable, "-m", "mycel", "listen", "--ephemeral", "--web", "nowhere"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "--web" in bad.stderr
