"""Every script of the examples gallery runs and prints what its README paragraph says (#16).

The same checks run against the built wheel in a clean venv in tests/packaging/test_wheel.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.examples.gallery import CHECKS, EXAMPLES


@pytest.mark.parametrize("script", sorted(CHECKS))
async def test_example(script: str, tmp_path: Path) -> None:
    await CHECKS[script](sys.executable, EXAMPLES, tmp_path)


def test_every_example_has_a_check_and_a_readme_paragraph() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py")} - {"demo.py"}  # demo.py: tests/integration/test_demo.py
    assert scripts == set(CHECKS)
    readme = (EXAMPLES / "README.md").read_text()
    for script in scripts | {"demo.py"}:
        assert f"`{script}`" in readme, script
