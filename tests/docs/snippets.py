"""The code blocks of the documentation pages in docs/, as the tests run them.

Every ```python block is a complete program and is run (tests/docs/test_snippets.py). A block titled
``server.py`` (```python title="server.py") is started in the background and must print a line holding
its full address (``.../p2p/12D3KooW...``); the next block titled ``client.py`` on the same page is
run with that address as its one argument, then the server is stopped. ```sh blocks are commands to
type (install, make) and ```text blocks are output or layouts: neither is code to run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
LANGUAGES = {"python", "sh", "text"}
FENCE = re.compile(r"^```(\w*)(.*)$")
TITLE = re.compile(r'title="([^"]+)"')


@dataclass(frozen=True)
class Snippet:
    """One fenced block: where it is, its language, title and code."""

    page: str  # relative to docs/
    line: int  # 1-based line of the opening fence
    language: str
    title: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}" + (f"[{self.title}]" if self.title else "")


def blocks(page: Path) -> list[Snippet]:
    """Every fenced block of a page (fences at the start of a line, not nested)."""
    found: list[Snippet] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            start, language, rest = i, m[1], m[2]
            title = TITLE.search(rest)
            i += 1
            body: list[str] = []
            while i < len(lines) and lines[i] != "```":
                body.append(lines[i])
                i += 1
            assert i < len(lines), f"{page}:{start + 1}: unclosed fence"
            found.append(Snippet(str(page.relative_to(DOCS)), start + 1, language, title[1] if title else "",
                                 "\n".join(body) + "\n"))
        i += 1
    return found


def all_blocks() -> list[Snippet]:
    return [b for page in sorted(DOCS.rglob("*.md")) for b in blocks(page)]


@dataclass(frozen=True)
class Run:
    """What one test runs: a program, or a server and the client run against it."""

    main: Snippet
    server: Snippet | None = None


def runs() -> list[Run]:
    """The python blocks grouped as the tests run them (a server.py with the client.py after it)."""
    out: list[Run] = []
    server: Snippet | None = None
    for block in all_blocks():
        if block.language != "python":
            continue
        if block.title.endswith("server.py"):
            assert server is None, f"{block.id}: two servers without a client between them"
            server = block
        elif block.title.endswith("client.py"):
            assert server is not None and server.page == block.page, f"{block.id}: a client with no server before it"
            out.append(Run(block, server))
            server = None
        else:
            out.append(Run(block))
    assert server is None, f"{server.id}: a server with no client after it"
    return out
