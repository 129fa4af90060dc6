"""Real go / js / py-libp2p pubsub peers against each other, no mycel (``interop/pubsub_cells.py``).

One test per cell: every ordered pair of go, js and py (who dials) with gossipsub-gossipsub,
floodsub-floodsub and both hybrids, and the line go -- js -- py (gossipsub), where each end's message
reaches the other end through js. Known failures are asserted as documented findings (README,
"Pubsub quirks found"); nothing is skipped, and a missing peer fails. The cells run concurrently, once
per module (the ``pubsub_outcomes`` fixture in conftest.py); each test checks its own cell.
"""

from __future__ import annotations

import itertools

import pytest

from interop.pubsub import IMPLS, ROUTERS, ImplKey, PubsubPeerError, open_pubsub_peer
from interop.pubsub_cells import ROUTER_PAIRS, NetworkSpec, Outcome, PairSpec, cell_runs, line

pytestmark = [pytest.mark.interop, pytest.mark.slow]

IMPL_KEYS: tuple[ImplKey, ...] = ("go", "js", "py")
PAIRS = [
    PairSpec(dialer, dialer_router, listener, listener_router)
    for dialer, listener in itertools.permutations(IMPL_KEYS, 2)
    for dialer_router, listener_router in ROUTER_PAIRS
]
NETWORKS: list[NetworkSpec] = [line(("go", "gossipsub"), ("js", "gossipsub"), ("py", "gossipsub"))]
PUBSUB_CELLS = cell_runs(PAIRS, NETWORKS)


@pytest.mark.parametrize("cell", list(PUBSUB_CELLS))
def test_cell(pubsub_outcomes: dict[str, Outcome], cell: str) -> None:
    pubsub_outcomes[cell].check(cell)


def test_every_impl_is_installed() -> None:
    for impl in IMPLS.values():
        assert impl.missing() is None, f"{impl.name}: {impl.missing()} (make interop-peers)"


async def test_go_ready_line_protocols_are_what_js_identify_sees() -> None:
    """go's ready line cannot ask p2pd: it lists go-libp2p-pubsub v0.10.0's ids. js identifies go to check."""
    from interop.peers import JS, Stack

    for router in ROUTERS:
        async with open_pubsub_peer("go", router) as go:
            result = await JS.dial(Stack("tcp", "noise", "yamux"), go.addrs[0], timeout=60, case_timeout=5)
            seen = result.cases.get("identify", {}).get("protocols", [])
            pubsub_seen = sorted(p for p in seen if p.startswith(("/meshsub/", "/floodsub/")))
            assert pubsub_seen == sorted(go.protocols), (router, seen, result.error, result.log[-2000:])


async def test_peer_errors_carry_stderr_and_the_process_is_reaped() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with open_pubsub_peer("js", "floodsub") as js:
            assert await js.mesh("t") is None  # floodsub has no mesh: None, not an error
            with pytest.raises(PubsubPeerError, match="(?s)unknown command.*log \\(tail\\)") as failed:
                await js.request("no-such-command")
            assert "js-pubsub" in str(failed.value)  # the stderr tail came with it
            raise RuntimeError("boom")
    assert js.returncode is not None  # stopped and reaped although the body failed
    with pytest.raises(PubsubPeerError, match="exited"):
        await js.next_message(timeout=5)
    assert [msg async for msg in js] == []  # the iterator ends with the process
