"""The interop matrix in CI: one test per cell (mycel x go / js / py-libp2p x direction x stack).

Needs the peers (``make interop-peers``); a missing peer fails its cells, it is never skipped.
"""

from __future__ import annotations

import pytest

from interop.matrix import CellSpec, cells, render, run_cell

pytestmark = [pytest.mark.interop, pytest.mark.slow]

CELLS = cells()


@pytest.mark.parametrize("spec", CELLS, ids=[c.test_id for c in CELLS])
async def test_cell(spec: CellSpec) -> None:
    result = await run_cell(spec)
    table = render([result])
    if result.status == "unsupported":
        assert result.reason, table
        assert not result.cases, table
        return
    assert result.status == "pass", table
    assert set(result.cases) == {"connect", "identify", "ping", "echo_1mib", "echo_64_streams", "half_close", "reset"}
    for name, case in result.cases.items():
        assert case.status in ("pass", "unsupported"), f"{name}: {case.detail}\n{table}"
        assert case.detail, f"{name} has no detail"
    # the core of the matrix is never waved through as unsupported
    for name in ("connect", "identify", "ping", "echo_1mib", "echo_64_streams"):
        assert result.cases[name].status == "pass", table
