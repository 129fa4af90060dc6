"""The code blocks of the API reference (docstrings of the modules docs/api/ renders) are valid Python
where they are shown as Python. They are fragments (``...``, names from the surrounding text), so they
are compiled, not run; the runnable examples are the pages' snippets (test_snippets.py) (#16)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

import griffe

from tests.docs.snippets import DOCS, ROOT
from tests.docs.test_griffe_rst import griffe_rst

FENCE = re.compile(r"```python\n(.*?)```", re.S)


def _objects(obj: griffe.Object, seen: set[str]) -> Iterator[griffe.Object]:
    if obj.path in seen:
        return
    seen.add(obj.path)
    yield obj
    for member in obj.members.values():
        if not member.is_alias and isinstance(member, griffe.Object):
            yield from _objects(member, seen)


def test_python_blocks_in_the_api_reference_compile() -> None:
    modules = sorted({m for page in (DOCS / "api").glob("*.md") for m in re.findall(r"^::: (\S+)", page.read_text(), re.M)})
    assert len(modules) >= 40
    package = griffe.load("mycel", search_paths=[str(ROOT)])  # once: every submodule comes with it
    assert isinstance(package, griffe.Object)
    blocks = 0
    for name in modules:
        module = package if name == "mycel" else package[name.removeprefix("mycel.")]
        assert isinstance(module, griffe.Object), name
        for obj in _objects(module, set()):
            if obj.docstring is None:
                continue
            for code in FENCE.findall(griffe_rst.convert(obj.docstring.value)):
                blocks += 1
                try:
                    compile(code, obj.path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
                except SyntaxError as e:
                    raise AssertionError(f"{obj.path}: a ```python block that is not Python: {e}\n{code}") from None
    assert blocks >= 5
