"""Port mapping through a lab router: a peer behind NAT maps its TCP port with NAT-PMP (PortMapper on
the scripted gateway of tests/nat/gateway.py, which installs each mapping as a real DNAT rule on the
router), a host on the public segment dials it through the mapping, the mapping is renewed, and once
deleted the same dial fails (the router's firewall drops it). miniupnpd cannot grant mappings with the
lab's 198.18/15 external address (see test_portmap_miniupnpd.py)."""

from __future__ import annotations

import json
import pathlib
import sys

from mycel.testing.natlab import NatLab
from tests.nat.harness import Node

HERE = pathlib.Path(__file__).parent


def _dial(lab: NatLab, addr: str) -> dict[str, object]:
    out = lab.relay.run([sys.executable, "-u", str(HERE / "dial_probe.py"), addr], timeout=30)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_mapped_port_is_reachable_from_outside_until_deleted() -> None:
    with NatLab() as lab:
        router = lab.a.router
        gateway = Node.script(router.ns, [str(HERE / "gateway.py"), "10.0.1.1", router.ext_ip, router.ext_if])
        gateway.expect("ready", timeout=15)
        peer = Node.script(lab.a.ns, [str(HERE / "portmap_peer.py"), "10.0.1.1"])
        mapped = peer.expect("mapped", timeout=30)
        assert mapped["addr"].startswith(f"/ip4/{router.ext_ip}/tcp/5001/p2p/")
        assert gateway.expect("forwards")["forwards"] == [["tcp", 5001, "10.0.1.2", 4001]]
        reached = _dial(lab, mapped["addr"])
        assert reached["ok"] is True, reached
        assert peer.expect("renewed", timeout=10)["renewals"] >= 1
        peer.send(cmd="unmap")
        peer.expect("unmapped", timeout=10)
        assert gateway.expect("forwards")["forwards"] == []
        refused = _dial(lab, mapped["addr"])
        assert refused["ok"] is False
        peer.close()
        gateway.proc.terminate()  # (it serves until killed; the lab would stop it too)
