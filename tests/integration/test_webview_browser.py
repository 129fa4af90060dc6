"""The web view in a real headless browser: Debian's chromium (``make system-deps``) driven by
Playwright (nothing downloaded: ``executable_path`` points at the Debian binary). The page loads and
shows the node, then shows a peer that connects, then the gossipsub mesh of a topic once the peers
subscribe. A screenshot is kept (``MYCEL_WEBVIEW_SCREENSHOT=docs/webview.png`` refreshes the one in
the docs; by default it goes to the test's tmp dir)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import trio
from playwright.sync_api import sync_playwright

from mycel.host import Host
from mycel.protocols.identify import Identify
from mycel.protocols.kad import KadDHT
from mycel.protocols.ping import Ping
from mycel.protocols.pubsub import Gossipsub
from mycel.service import Service
from mycel.testing.hosts import memory_hosts
from mycel.web.view import WebView

WAIT_MS = 10_000
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _browse(url: str, me: str, peers: list[str], step: Callable[[str], None], shot: Path) -> dict[str, object]:
    """Runs in a worker thread: drives the page, calling ``step(name)`` (which runs trio work on the host)
    between the checks. Every wait is bounded by Playwright's timeout, so the thread always ends."""
    seen: dict[str, object] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            failed: list[str] = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(url)
            page.wait_for_function("Number(document.body.dataset.updates || 0) >= 1")
            seen["peer_id"] = page.text_content("#peer-id")
            seen["rows_before"] = page.locator("#peers tr").count()

            step("connect")
            row = page.wait_for_selector(f'#peers tr[data-peer="{peers[0]}"]')
            assert row is not None
            seen["row"] = row.inner_text()

            step("subscribe")
            for peer in peers:
                page.wait_for_selector(f'svg[data-topic="blocks"] g.mesh-peer[data-peer="{peer}"]')
            seen["mesh_peers"] = page.locator('svg[data-topic="blocks"] g.mesh-peer').count()
            page.wait_for_selector("#dht rect.bucket")
            page.wait_for_function("document.querySelectorAll('#bandwidth polyline')[0].getAttribute('points').split(' ').length >= 2")
            seen["peer_count"] = page.text_content("#peer-count")
            page.screenshot(path=str(shot), full_page=True)
            seen["failed_requests"] = failed
        finally:
            browser.close()
    assert seen["peer_id"] == me
    return seen


async def test_page_in_headless_chromium_shows_peers_and_mesh(tmp_path: Path) -> None:
    made: list[int] = []

    def services() -> list[Service]:  # the first host (the one viewed) also runs the WebView
        made.append(1)
        base: list[Service] = [Identify(), Ping(), Gossipsub(), KadDHT(mode="server")]
        return [*base, WebView()] if len(made) == 1 else base

    async with memory_hosts(4, services=services) as hosts, AsyncExitStack() as stack:
        await _run_browser(hosts[0], hosts[1:], stack, tmp_path)


async def _run_browser(viewed: Host, others: list[Host], stack: AsyncExitStack, tmp_path: Path) -> None:
    token = trio.lowlevel.current_trio_token()

    async def connect() -> None:
        for h in others:
            await h.connect(viewed.peer_id, viewed.addrs)
            await h.service(Ping).ping(viewed.peer_id)  # answered: the viewed host has the connection
            await viewed.service(Ping).ping(h.peer_id, 2)  # an RTT for the page to show

    async def subscribe() -> None:
        for h in [viewed, *others]:
            await stack.enter_async_context(h.service(Gossipsub).subscribe("blocks"))
        await viewed.service(Gossipsub).wait_ready("blocks", len(others), timeout=10)
        await others[0].service(Gossipsub).publish("blocks", b"x" * 20_000)

    steps: dict[str, Callable[[], Awaitable[None]]] = {"connect": connect, "subscribe": subscribe}

    def step(name: str) -> None:
        trio.from_thread.run(steps[name], trio_token=token)

    url = viewed.service(WebView).url
    shot = tmp_path / "webview.png"
    peers = [str(h.peer_id) for h in others]
    with trio.fail_after(90):
        seen = await trio.to_thread.run_sync(_browse, url, str(viewed.peer_id), peers, step, shot)
    assert seen["rows_before"] == 0
    row = str(seen["row"])
    assert "memory" in row and "/noise" in row and "/yamux/1.0.0" in row and "inbound" in row
    assert seen["mesh_peers"] == len(others)
    assert seen["peer_count"] == str(len(others))
    assert seen["failed_requests"] == []
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000
    target = os.environ.get("MYCEL_WEBVIEW_SCREENSHOT")
    if target:
        Path(target).write_bytes(data)
