"""`mkdocs build --strict` succeeds (a broken link, anchor, include or API reference fails it) and the
site holds what the pages promise: the API reference rendered from docstrings, the included tables (#16).
`make docs` runs the same build into site/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

from tests.docs.snippets import DOCS, ROOT

TIMEOUT = 120  # ~15 s on an idle 2-core machine


async def test_mkdocs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    with trio.fail_after(TIMEOUT):
        res = await trio.run_process([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
                                     cwd=ROOT, env=env, capture_stdout=True, capture_stderr=True, check=False)
    log = res.stdout.decode() + res.stderr.decode()
    assert res.returncode == 0, log
    assert "WARNING" not in log, log
    # every page of docs/ is in the site (strict mode already refuses pages left out of the nav)
    pages = [p.relative_to(DOCS).with_suffix("") for p in DOCS.rglob("*.md")]
    for page in pages:
        html = site / (page.parent if page.name == "index" else page) / "index.html"
        assert html.exists(), html
    # the API reference is generated from the docstrings
    host = (site / "api" / "host" / "index.html").read_text()
    assert 'id="mycel.host.HostConfig"' in host and 'id="mycel.host.open_host"' in host
    assert "Receive the host&#39;s events" in host or "Receive the host's events" in host  # Host.subscribe's docstring
    # includes were expanded, none left as text
    for html in site.rglob("*.html"):
        assert "--8&lt;--" not in html.read_text() and "--8<--" not in html.read_text(), html
    assert "ping.py" in (site / "examples" / "index.html").read_text()
    assert "make bench" in (site / "benchmarks" / "index.html").read_text()
    assert "26 pass" in (site / "interop" / "index.html").read_text()
    assert "fonts.googleapis.com" not in (site / "index.html").read_text()  # nothing loaded from outside
