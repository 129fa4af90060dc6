"""A real mycel node following test-plans' gossipsub-interop node contract, so mycel can be entered in that
harness (it runs nodes under Shadow, which is not installable here):

* node id from the hostname ``node<N>`` (or ``--node-id``); peer key Ed25519 seeded with the
  little-endian node id; listens on ``/ip4/0.0.0.0/tcp/9000`` (TCP, Noise, yamux) and dials
  ``/ip4/<address of node<M>>/tcp/9000/p2p/<its id>``;
* ``--params params.json`` with ``{"script": [...]}`` (:mod:`mycel.sim.script`);
* newline-delimited JSON on stdout (``PeerID`` first, then ``Received Message`` per receipt), diagnostics
  on stderr.

To add mycel to gossipsub-interop: an implementation directory whose build produces a binary running
``python -m mycel.sim node --params "$@"`` (the harness passes ``--params <file>``), and an entry for it in
``experiment.py``'s compositions. The same script runs on simulated hosts with ``python -m mycel.sim run``.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

import trio
from multiaddr import Multiaddr

from mycel.host import HostConfig, open_host
from mycel.muxers import Yamux
from mycel.protocols.identify import Identify
from mycel.security import Noise
from mycel.sim.interop_log import InteropLog
from mycel.sim.runner import InteropGossipsub, interop_config, interop_identity, run_instructions
from mycel.sim.script import InitGossipSub, Script, gossipsub_changes
from mycel.transports import TCP

log = logging.getLogger("mycel.sim.node")

PORT = 9000


class StreamLog(InteropLog):
    """An :class:`InteropLog` that writes each line to ``out`` at once, stamped with the wall clock."""

    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self.out = out

    def emit(self, node: int, seconds: float, msg: str, **fields: Any) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.out.write(json.dumps({"time": stamp, "msg": msg, **fields}, separators=(",", ":")) + "\n")
        self.out.flush()


def node_id_from_hostname(hostname: str | None = None) -> int:
    """``N`` of a hostname ``node<N>``. Raises ValueError for any other name."""
    name = hostname if hostname is not None else socket.gethostname()
    if not name.startswith("node") or not name[4:].isdigit():
        raise ValueError(f"hostname {name!r} is not node<N>: pass --node-id")
    return int(name[4:])


async def run_node(script: Script, node_id: int, *, out: TextIO = sys.stdout, port: int = PORT) -> None:
    """Run ``script`` as node ``node_id`` on real sockets until its last instruction, then keep
    forwarding for as long as the harness lets the process live."""
    mine = script.for_node(node_id)
    changes: dict[str, Any] = {}
    for ins in mine:
        if isinstance(ins, InitGossipSub):
            changes.update(gossipsub_changes(ins.params))
    ilog = StreamLog(out)
    t0 = trio.current_time()
    svc = InteropGossipsub(interop_config(**changes), ilog.node(node_id), seed=node_id, t0=t0)
    identity = interop_identity(node_id)
    config = HostConfig(
        identity=identity,
        transports=[TCP()],
        security=[Noise()],
        muxers=[Yamux()],
        listen=[f"/ip4/0.0.0.0/tcp/{port}"],
        services=[Identify(), svc],
    )

    async def dial(j: int) -> None:
        infos = await trio.socket.getaddrinfo(f"node{j}", port, family=socket.AF_INET, type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"node{j} does not resolve")
        ip = infos[0][4][0]
        peer = interop_identity(j).peer_id
        await host.connect(peer, [Multiaddr(f"/ip4/{ip}/tcp/{port}")])

    async with open_host(config) as host:
        svc.logger.peer_id(0.0, identity.peer_id.to_base58())
        await run_instructions(mine, svc, dial, t0=t0)
        log.info("script done; forwarding until stopped")
        await trio.sleep_forever()


__all__ = ["StreamLog", "node_id_from_hostname", "run_node"]
