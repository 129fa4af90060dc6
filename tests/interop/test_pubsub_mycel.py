"""mycel's Gossipsub / Floodsub against the real go, js and py-libp2p pubsub peers (``interop/pubsub_cells.py``).

Pairs: mycel with each peer, each side dialing, gossipsub-gossipsub (the mesh forms on both sides where
the peer can tell, the newest common protocol is spoken, messages both ways with author and forwarder),
floodsub-floodsub, and both hybrids (floodsub-only peers against mycel's Gossipsub, and mycel's
Floodsub against their gossipsub). Networks, all gossipsub: a line go -- mycel -- js -- py and a star
with mycel in the centre, where every node's message reaches every other node through the nodes in
between; and a star with js in the centre, where mycel is a leaf. Known upstream failures are asserted
as documented findings (interop/README.md, "Pubsub quirks found"); nothing is skipped.
"""

from __future__ import annotations

import pytest

from interop.pubsub import ImplKey
from interop.pubsub_cells import ROUTER_PAIRS, NetworkSpec, Outcome, PairSpec, cell_runs, line, star

pytestmark = [pytest.mark.interop, pytest.mark.slow]

PEERS: tuple[ImplKey, ...] = ("go", "js", "py")
PAIRS = [
    spec
    for peer in PEERS
    for mycel_router, peer_router in ROUTER_PAIRS
    for spec in (
        PairSpec("mycel", mycel_router, peer, peer_router),  # mycel dials
        PairSpec(peer, peer_router, "mycel", mycel_router),  # the peer dials mycel
    )
]
NETWORKS: list[NetworkSpec] = [
    line(("go", "gossipsub"), ("mycel", "gossipsub"), ("js", "gossipsub"), ("py", "gossipsub")),
    star(("mycel", "gossipsub"), ("go", "gossipsub"), ("js", "gossipsub"), ("py", "gossipsub")),
    star(("js", "gossipsub"), ("mycel", "gossipsub"), ("go", "gossipsub"), ("py", "gossipsub")),
]
PUBSUB_CELLS = cell_runs(PAIRS, NETWORKS)


@pytest.mark.parametrize("cell", list(PUBSUB_CELLS))
def test_cell(pubsub_outcomes: dict[str, Outcome], cell: str) -> None:
    pubsub_outcomes[cell].check(cell)
