"""mycel's KadDHT against the real go / js / py-libp2p Kademlia DHT peers (``interop/dht.py``).

One network, the shape of ``test_dht_peers.py`` with mycel on the ring: seven DHT servers, each dialing
the next,

    go1 -> js1 -> py1 -> mycel -> go2 -> js2 -> py2 -> go1

plus the three peer clients of ``test_dht_peers.py`` (goC -> js1, jsC -> py1, pyC -> go1), three mycel
clients (``KadDHT(mode="client")``), each dialing one server of one implementation only: myCgo -> go2,
myCjs -> js2, myCpy -> py1, and pyM, a py client that dials mycel only (py's client runs no lookups). For each implementation X, its "far" node is the X server that is not mycel's
ring neighbour (go1, js1, py2). Then, one operation at a time, its cells at once:

* ``find_peer-mycel-X``: mycel finds X's far node by id (nobody connected them) and gets its address;
  ``find_peer-X-mycel``: X's far node finds mycel;
* ``pk-mycel-X``: mycel puts ``/pk/<multihash>`` -> an RSA PublicKey protobuf, X's far node reads it;
  ``pk-X-mycel``: X's far node puts its own, mycel reads it;
* ``providers-mycel-X``: mycel provides a fresh CID (v0 for go, v1 for js and py), X's far node finds
  mycel among its providers; ``providers-X-mycel``: X's far node provides one, mycel finds it;
* the mycel client myCX, which knows only X's server: ``client_find_peer-X`` finds X's far node,
  ``client_get-X`` reads the ``/pk/`` value X put in ``pk-X-mycel`` (py cannot put one: mycel's, from
  ``pk-mycel-py``), ``client_providers-X`` finds X as the provider of ``providers-X-mycel``'s CID;
  ``find_client-mycel-X``: myCX finds X's client XC, ``find_client-X-mycel``: XC finds myCX;
* ``via_mycel-X``: X's far node finds pyM, which only mycel can name (mycel's FIND_NODE adds a connected
  target, as go's does);
* ``closest-mycel``: mycel's closest peers to a random key are the six other servers;
  ``closest-X-mycel``: X's far node's closest peers include mycel;
* ``meet-X-mycel``: a fresh X server dials a fresh mycel server and admits it to its table (go did not
  until mycel's FIND_NODE named itself when asked for itself: go's check-before-add drops an empty answer).

Failures caused by the other implementation are asserted as documented findings (``FINDINGS``; README
"DHT quirks"); nothing is skipped. The network runs once per module; each test checks its cell.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from interop.dht import (
    IMPL_KEYS,
    IMPLS,
    CellResult,
    DHTNode,
    Mode,
    MycelDHTNode,
    open_dht_peer,
    check_cell,
    form_ring,
    open_mycel_dht_node,
    print_cells,
    random_cid,
    run_cell,
    transport_addr,
    until,
)
from mycel.core.peer_id import PeerId

pytestmark = [pytest.mark.interop, pytest.mark.slow]

RING: list[str] = ["go1", "js1", "py1", "mycel", "go2", "js2", "py2"]  # each dials the next, the last the first
CLIENTS: dict[str, str] = {  # client -> the one server it dials
    "goC": "js1", "jsC": "py1", "pyC": "go1", "myCgo": "go2", "myCjs": "js2", "myCpy": "py1",
    "pyM": "mycel",  # a py client (it runs no lookups of its own) known to mycel only
}  # fmt: skip
LOOKUP_TIMEOUT = 25.0  # per cell: retries of a lookup that misses while tables settle
TABLE_TIMEOUT = 15.0
MEET_TIMEOUT = 8.0  # two servers on loopback: identify and the check-before-add take well under a second

# (op, A, B) -> the substring of the error that documents the failure (README, "DHT quirks" 2)
UTF8 = "py-libp2p's put_value/get_value take a str key sent as UTF-8"
FINDINGS: dict[tuple[str, str, str], str] = {
    ("pk", "mycel", "py"): UTF8,  # py cannot ask for the standard /pk/<binary multihash> key
    ("pk", "py", "mycel"): UTF8,  # nor put one
}


def far(impl: str) -> str:
    """X's server that is not mycel's ring neighbour."""
    neighbours = {RING[(RING.index("mycel") + d) % len(RING)] for d in (-1, 1)}
    return next(n for n in (f"{impl}1", f"{impl}2") if n not in neighbours)


PEERS: list[str] = list(IMPL_KEYS)
STAGES: list[list[tuple[str, str, str]]] = [  # (op, A, B), one stage at a time (quirk 1: puts first)
    [("find_peer", "mycel", x) for x in PEERS] + [("find_peer", x, "mycel") for x in PEERS],
    [("pk", "mycel", x) for x in PEERS] + [("pk", x, "mycel") for x in PEERS],
    [("providers", "mycel", x) for x in PEERS] + [("providers", x, "mycel") for x in PEERS],
    [(op, x, "") for op in ("client_find_peer", "client_get", "client_providers") for x in PEERS]
    + [("find_client", "mycel", x) for x in PEERS] + [("find_client", x, "mycel") for x in PEERS]
    + [("via_mycel", x, "") for x in PEERS],
    [("closest", "mycel", "")] + [("closest", x, "mycel") for x in PEERS] + [("meet", x, "mycel") for x in PEERS],
]


def cell_id(op: str, a: str, b: str) -> str:
    return "-".join(part for part in (op, a, b) if part)


CELLS = [cell_id(*cell) for stage in STAGES for cell in stage]


@dataclass
class Network:
    nodes: dict[str, DHTNode]
    records: dict[str, tuple[bytes, bytes]]  # putter (impl or "mycel") -> the /pk/ key and value it put
    provided: dict[str, str]  # provider -> the CID it provided


@asynccontextmanager
async def _open(name: str) -> AsyncIterator[DHTNode]:
    mode: Mode = "client" if name in CLIENTS else "server"
    if name.startswith("my") or name == "mycel":
        async with open_mycel_dht_node(mode) as node:
            node.name = name
            yield node
        return
    impl = next(key for key in IMPL_KEYS if name.startswith(key))
    async with open_dht_peer(impl, mode) as peer:
        peer.name = name
        yield peer


async def _find(asker: DHTNode, target: DHTNode, info: dict[str, Any]) -> list[str]:
    """``asker`` finds ``target``'s listen address. mycel's find_peer answers from its peerstore when
    already connected (the DHTs' own lookups may have connected them): ``info["connected_before"]``."""
    if isinstance(asker, MycelDHTNode):
        info["connected_before"] = bool(asker.host.connections(PeerId.from_string(target.peer_id)))
    want = {transport_addr(x) for x in target.addrs}
    return await until(
        f"{asker.label} find_peer {target.label}",
        lambda: asker.find_peer(target.peer_id),
        # py's answer may keep /p2p/<id> on addresses py-libp2p learned with it (README "py-libp2p" quirks)
        lambda got: bool(want & {transport_addr(x) for x in got}),
        LOOKUP_TIMEOUT,
    )


async def _read(reader: DHTNode, key: bytes, value: bytes) -> bytes:
    what = f"{reader.label} get {key.hex()}"
    return await until(what, lambda: reader.get(key), lambda got: got == value, LOOKUP_TIMEOUT)


async def _providers(reader: DHTNode, cid: str, provider: DHTNode) -> list[str]:
    return await until(
        f"{reader.label} find_providers {cid}",
        lambda: reader.find_providers(cid, 1),
        lambda got: provider.peer_id in got,
        LOOKUP_TIMEOUT,
    )


async def _cell(op: str, a: str, b: str, net: Network) -> CellResult:
    """One cell: A asks / puts / provides, B is found / reads. Returns what happened."""
    nodes = net.nodes

    def node(impl: str) -> DHTNode:
        return nodes["mycel"] if impl == "mycel" else nodes[far(impl)]

    async def body(info: dict[str, Any]) -> None:
        if op == "find_peer":
            info["addrs"] = await _find(node(a), node(b), info)
        elif op == "pk":
            putter, reader = node(a), node(b)
            key, value = await putter.pk_record()
            info["put"] = await putter.put(key, value)
            net.records[a] = (key, value)
            await _read(reader, key, value)
        elif op == "providers":
            provider, reader = node(a), node(b)
            cid = random_cid(0 if "go" in (a, b) else 1)
            info["cid"] = cid
            await provider.provide(cid)
            net.provided[a] = cid
            info["providers"] = await _providers(reader, cid, provider)
        elif op == "client_find_peer":
            info["addrs"] = await _find(nodes[f"myC{a}"], node(a), info)
        elif op == "client_get":
            put_by = "mycel" if a == "py" else a  # py cannot put a /pk/ key (quirk 2)
            if put_by not in net.records:
                raise AssertionError(f"pk-{put_by}-... put nothing")
            key, value = net.records[put_by]
            info["key_from"] = put_by
            await _read(nodes[f"myC{a}"], key, value)
        elif op == "client_providers":
            if a not in net.provided:
                raise AssertionError(f"providers-{a}-mycel provided nothing")
            info["providers"] = await _providers(nodes[f"myC{a}"], net.provided[a], node(a))
        elif op == "find_client":
            impl = b if a == "mycel" else a
            mycel_client, peer_client = nodes[f"myC{impl}"], nodes[f"{impl}C"]
            asker, target = (mycel_client, peer_client) if a == "mycel" else (peer_client, mycel_client)
            info["addrs"] = await _find(asker, target, info)
        elif op == "via_mycel":  # A's far node finds pyM, a client only mycel is connected to
            info["addrs"] = await _find(node(a), nodes["pyM"], info)
        elif op == "meet":  # two fresh servers, A dials mycel: A admits mycel to its table
            async with _open(a) as other, open_mycel_dht_node("server") as mycel:
                await other.connect(mycel.addrs[0])
                info["closest"] = await until(
                    f"{other.label} closest", lambda: other.closest(os.urandom(32)),
                    lambda got: mycel.peer_id in got, MEET_TIMEOUT,
                )
        elif op == "closest":
            asker = node(a)
            key = os.urandom(32)
            if b == "":  # mycel: every other server
                want = {nodes[n].peer_id for n in RING} - {asker.peer_id}
            else:
                want = {nodes["mycel"].peer_id}
            got = await until(
                f"{asker.label} closest", lambda: asker.closest(key), lambda got: want <= set(got), LOOKUP_TIMEOUT
            )
            names = {n.peer_id: name for name, n in nodes.items()}
            info["closest"] = sorted(names.get(p, p) for p in got)
        else:
            raise ValueError(op)

    return await run_cell(body)


async def _hold(name: str, stop: trio.Event, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with _open(name) as node:  # entered and left in this task (a host and a peer hold nurseries)
        task_status.started(node)
        await stop.wait()


async def run_network() -> tuple[dict[str, CellResult], dict[str, Any]]:
    """Start the network, run the stages; cell id -> CellResult, and facts about the network."""
    results: dict[str, CellResult] = {}
    facts: dict[str, Any] = {}
    stop = trio.Event()
    nodes: dict[str, DHTNode] = {}
    async with trio.open_nursery() as nursery:
        try:
            async with trio.open_nursery() as starting:  # start them all at once

                async def start(name: str) -> None:
                    nodes[name] = await nursery.start(_hold, name, stop)

                for name in [*RING, *CLIENTS]:
                    starting.start_soon(start, name)
            await _run(nodes, results, facts)
        finally:
            stop.set()
    return results, facts


async def _run(nodes: dict[str, DHTNode], results: dict[str, CellResult], facts: dict[str, Any]) -> None:
    facts.update(await form_ring(nodes, RING, CLIENTS, TABLE_TIMEOUT))
    for client, server in CLIENTS.items():
        if client.startswith("my"):  # a mycel client's table holds the one server it knows
            facts[f"table-{client}"] = await nodes[client].wait_routing_table([nodes[server].peer_id], TABLE_TIMEOUT)
    net = Network(nodes, {}, {})

    async def one(op: str, a: str, b: str) -> None:
        results[cell_id(op, a, b)] = await _cell(op, a, b, net)

    for stage in STAGES:
        async with trio.open_nursery() as cells:
            for cell in stage:
                cells.start_soon(one, *cell)
    facts["names"] = {node.peer_id: name for name, node in nodes.items()}
    for name, node in nodes.items():
        facts[f"final-table-{name}"] = await node.routing_table()


@pytest.fixture(scope="module")
def dht_network() -> tuple[dict[str, CellResult], dict[str, Any]]:
    for impl in IMPLS.values():
        if impl.missing() is not None:
            pytest.fail(f"{impl.name}: {impl.missing()} (make interop-peers)")
    return trio.run(run_network)


def parse_cell(cell: str) -> tuple[str, str, str]:
    op, a, b = (*cell.split("-"), "", "")[:3]
    return op, a, b


@pytest.mark.parametrize("cell", CELLS)
def test_cell(dht_network: tuple[dict[str, CellResult], dict[str, Any]], cell: str) -> None:
    results, _ = dht_network
    check_cell(cell, results[cell], FINDINGS.get(parse_cell(cell)))


def test_servers_serve_kad_and_clients_do_not(dht_network: tuple[dict[str, CellResult], dict[str, Any]]) -> None:
    _, facts = dht_network
    for name, protocols in facts["protocols"].items():
        assert protocols == ([] if name in CLIENTS else ["/ipfs/kad/1.0.0"]), (name, protocols)


def test_mycel_tables_hold_servers_only(dht_network: tuple[dict[str, CellResult], dict[str, Any]]) -> None:
    """mycel's server and clients admit servers only (identify's protocols, then a FIND_NODE check)."""
    _, facts = dht_network
    names = facts["names"]
    for name in ["mycel", *(c for c in CLIENTS if c.startswith("my"))]:
        table = {names.get(p, p) for p in facts[f"final-table-{name}"]}
        assert table and table <= set(RING) - {name}, (name, table)


if __name__ == "__main__":  # a table, for the README
    import time

    t0 = time.monotonic()
    print_cells(CELLS, *trio.run(run_network))
    print(f"total {time.monotonic() - t0:.1f}s")
