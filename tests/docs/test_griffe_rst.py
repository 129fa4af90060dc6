"""The API reference's docstring conversion (docs/_ext/griffe_rst.py): Sphinx roles and reST literal
blocks become Markdown (#16)."""

from __future__ import annotations

import importlib.util
import sys

from tests.docs.snippets import DOCS

_spec = importlib.util.spec_from_file_location("griffe_rst", DOCS / "_ext" / "griffe_rst.py")
assert _spec is not None and _spec.loader is not None
griffe_rst = importlib.util.module_from_spec(_spec)
sys.modules["griffe_rst"] = griffe_rst
_spec.loader.exec_module(griffe_rst)


def test_roles_become_inline_code() -> None:
    text = ":class:`~mycel.core.errors.MessageTooLarge`, :func:`read_exactly`, :meth:`.run`, :mod:`mycel.sim`"
    assert griffe_rst.convert(text) == "`MessageTooLarge`, `read_exactly()`, `.run()`, `mycel.sim`"
    assert griffe_rst.convert(":class:`the host <mycel.host.Host>`") == "`the host`"
    assert griffe_rst.convert("no roles: ``literal`` stays") == "no roles: ``literal`` stays"


def test_literal_blocks_become_fenced_python() -> None:
    text = "Example::\n\n    await f()\n    if x:\n        g()\n\nAfter."
    assert griffe_rst.convert(text) == "Example:\n\n```python\nawait f()\nif x:\n    g()\n```\n\nAfter."
    bare = "::\n\n    config = HostConfig()\n"
    assert griffe_rst.convert(bare) == "\n```python\nconfig = HostConfig()\n```\n"
    assert griffe_rst.convert("a::b is not a block") == "a::b is not a block"


def test_a_literal_block_that_is_not_python_is_text() -> None:
    diagram = "Scopes::\n\n    system ── transient\n      └── peer\n"
    assert griffe_rst.convert(diagram).startswith("Scopes:\n\n```text\nsystem ── transient\n  └── peer\n```")
