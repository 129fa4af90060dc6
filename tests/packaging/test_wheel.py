"""The package as users get it: `python -m build` makes a wheel and an sdist, the wheel (not the
editable tree) installs with its dependencies and extras in a clean venv, and the examples gallery
runs against it (#16).

The clean venv is cached in the temp dir, keyed by the Python version and the dependency lists of
pyproject.toml: a new wheel is reinstalled into it each run (pip still checks every requirement), so
only the first run on a machine downloads the dependencies. ~30 s with a cached venv, ~90 s without.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import trio

from tests.examples.gallery import CHECKS, ROOT, WHEEL_CHECKS

pytestmark = pytest.mark.slow

EXTRAS = "quic,metrics"  # the extras a user installs: each must resolve, and their imports must work
EXTRA_IMPORTS = {"quic": "aioquic", "metrics": "prometheus_client"}


async def _run(*args: str | Path, cwd: Path, timeout: float = 300) -> str:
    with trio.fail_after(timeout):
        res = await trio.run_process([str(a) for a in args], cwd=cwd, capture_stdout=True,
                                     capture_stderr=True, check=False)
    out = res.stdout.decode() + res.stderr.decode()
    assert res.returncode == 0, f"{args} exited {res.returncode}:\n{out[-4000:]}"
    return res.stdout.decode()


def _venv_key() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [sys.version, project["dependencies"], {e: project["optional-dependencies"][e] for e in EXTRAS.split(",")}]
    return hashlib.sha256(json.dumps(wanted).encode()).hexdigest()[:16]


async def _clean_venv() -> Path:
    """A venv with nothing of the development tree in it (cached; see the module docstring)."""
    venv = Path(tempfile.gettempdir()) / f"mycel-wheel-venv-{_venv_key()}"
    if not (venv / "ready").exists():
        shutil.rmtree(venv, ignore_errors=True)
        # the base interpreter, not .venv's: nothing of the tree's site-packages comes along
        await _run(getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv, cwd=ROOT.parent)
        (venv / "ready").touch()
    return venv


async def test_wheel_and_sdist_build_install_and_run_the_examples(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    await _run(sys.executable, "-m", "build", "--outdir", dist, ROOT, cwd=ROOT)
    (wheel,) = dist.glob("mycel-*-py3-none-any.whl")
    (sdist,) = dist.glob("mycel-*.tar.gz")

    # the wheel carries the type marker, every .proto of the tree, both licenses and the entry point
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "mycel/py.typed" in names
    protos = {str(p.relative_to(ROOT)) for p in (ROOT / "mycel").rglob("*.proto")}
    assert protos and protos <= names, protos - names
    stubs = {str(p.relative_to(ROOT)) for p in (ROOT / "mycel").rglob("*.pyi")}  # the protobuf modules' types
    assert stubs <= names, stubs - names
    assert not any(n.startswith(("tests/", "examples/", "interop/")) for n in names)
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert {f"{dist_info}/licenses/LICENSE-MIT", f"{dist_info}/licenses/LICENSE-APACHE"} <= names
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: MIT OR Apache-2.0" in metadata
    assert all(f"Provides-Extra: {e}" in metadata for e in EXTRAS.split(","))
    assert "mycel = mycel.cli.main:main" in zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    # the sdist: the package, licenses, changelog, examples, and the docs sources
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        in_sdist = {n.removeprefix(top + "/") for n in tar.getnames()}
    assert {"LICENSE-MIT", "LICENSE-APACHE", "CHANGELOG.md", "README.md", "pyproject.toml", "mkdocs.yml",
            "examples/README.md", "mycel/py.typed", "docs/index.md"} <= in_sdist
    assert {f"examples/{s}" for s in CHECKS} <= in_sdist

    venv = await _clean_venv()
    python = venv / "bin" / "python"
    await _run(python, "-m", "pip", "uninstall", "-q", "-y", "mycel", cwd=tmp_path)
    await _run(python, "-m", "pip", "install", "-q", f"{wheel}[{EXTRAS}]", cwd=tmp_path)
    # what is imported is the installed wheel: run from a directory with no mycel in it
    imports = ", ".join(EXTRA_IMPORTS.values())
    where = await _run(python, "-c", f"import mycel, {imports}; print(mycel.__file__)", cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(venv / "lib"), where
    assert "site-packages" in where
    assert (await _run(venv / "bin" / "mycel", "--version", cwd=tmp_path)).strip().endswith("0.1.0")

    # the examples, copied out of the tree, against the installed package
    examples = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", examples)
    assert set(WHEEL_CHECKS) == {p.name for p in examples.glob("*.py")}
    for script, check in sorted(WHEEL_CHECKS.items()):
        work = tmp_path / f"run-{script}"
        work.mkdir()
        await check(str(python), examples, work)
