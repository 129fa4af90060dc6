"""A griffe extension for the API reference: mycel's docstrings are written with Sphinx roles
(:class:`X`, :meth:`~a.b.c`) and reST literal blocks (``Example::`` then an indented block), which
Markdown would show as raw text. Roles become inline code (``~`` keeps the last name, as Sphinx does);
literal blocks become fenced code (Python when they parse as Python, else text). Used by mkdocs.yml (mkdocstrings' ``extensions`` option)."""

from __future__ import annotations

import ast
import re
import textwrap
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(func|class|mod|meth|attr|data|exc|obj|const|ref):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    kind, tilde, target = match[1], match[2], match[3].strip()
    if target.endswith(">") and "<" in target:  # :class:`text <target>`
        text = target.split("<", 1)[0].strip()
    else:
        text = target.lstrip(".").rsplit(".", 1)[-1] if tilde else target
    if kind in ("func", "meth") and not text.endswith(")"):
        text += "()"
    return f"`{text}`"


def literal_blocks(text: str) -> str:
    """``para::`` followed by an indented block -> ``para:`` and a fenced block."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::") and not line.rstrip().endswith(":::"):
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            block_start = j
            while j < len(lines) and (not lines[j].strip() or lines[j][:1] in (" ", "\t")):
                j += 1
            block = lines[block_start:j]
            while block and not block[-1].strip():
                block.pop()
            if block:
                head = line.rstrip()[:-2].rstrip()
                if head:
                    out.append(head + ":")
                code = textwrap.dedent("\n".join(block))
                out += ["", f"```{_language(code)}", *code.split("\n"), "```", ""]
                i = j
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _language(code: str) -> str:
    """``python`` for a block that parses as Python (top-level ``await`` allowed), else ``text``
    (diagrams, wire layouts, fragments)."""
    try:
        compile(code, "<docstring>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    except (SyntaxError, ValueError):
        return "text"
    return "python"


def convert(text: str) -> str:
    """A docstring in Markdown: roles as inline code, literal blocks fenced."""
    return literal_blocks(ROLE.sub(_role, text))


class SphinxToMarkdown(griffe.Extension):
    """Rewrites every docstring once it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
