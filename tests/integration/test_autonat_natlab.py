"""AutoNAT v1 + v2 through real kernel NAT (mycel.testing.natlab: nftables snat and a firewall that drops
unsolicited inbound, in network namespaces; the "internet" is 198.18.0.0/24, declared public).

Three hosts, each both AutoNAT server and client: the relay namespace's host (198.18.0.1), a host on the
public segment (198.18.0.10) and a peer behind router A's endpoint-independent NAT (10.0.1.2). The NATed
peer dials from its listen port (``TCP(reuse_port=True)``), so both servers observe it at router A's
198.18.0.2:4001 — two distinct observers confirm that address (threshold 2 here), it is advertised, and
v2 checks it. Within 4 probes: the NATed peer is private (v1, and v2 for its observed address), the
public host and the relay's host are public.
"""

from __future__ import annotations

import json
import select
import subprocess
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mycel.testing.natlab import RELAY_IP, NatLab
from mycel.testing.netns import Namespace

PUBLIC_IP = "198.18.0.10"
PROBES = 4

# one host: prints {"event": "ready", "addr"}; then reads {"connect": [...], "probes": n}, connects, runs n
# AutoNAT rounds and prints {"event": "result", ...}; lives until stdin closes
_NODE = textwrap.dedent(
    """
    import json, sys, trio
    from mycel.core.addrs import AddressPolicy
    from mycel.host import HostConfig, open_host
    from mycel.muxers.yamux import Yamux
    from mycel.protocols.autonat import AutoNAT, AutoNATConfig
    from mycel.protocols.identify import Identify
    from mycel.security.noise import Noise
    from mycel.transports.tcp import TCP

    async def main(ip):
        autonat = AutoNATConfig(boot_delay=3600, retry_interval=3600, probes_per_round=2, dial_timeout=1.0,
                                request_timeout=10)
        config = HostConfig(transports=[TCP(reuse_port=True)], security=[Noise()], muxers=[Yamux()],
                            services=[Identify(), AutoNAT(autonat)], listen=[f"/ip4/{ip}/tcp/4001"],
                            address_policy=AddressPolicy(public_ranges=("198.18.0.0/15",), observed_threshold=2))
        stdin = trio.wrap_file(sys.stdin)
        async with open_host(config) as host:
            print(json.dumps({"event": "ready", "addr": str(host.addrs[0])}), flush=True)
            cmd = json.loads(await stdin.readline())
            with trio.fail_after(30):
                for addr in cmd["connect"]:
                    conn = await host.connect(addr)
                    await host.service(Identify).wait_identified(conn.remote_peer)
            service = host.service(AutoNAT)
            verdicts = []
            for _ in range(cmd["probes"]):
                verdicts.append((await service.probe()).value)
            print(json.dumps({"event": "result", "v1": verdicts, "host": host.reachability.value,
                              "advertised": [str(a) for a in host.advertised_addrs],
                              "v2": {str(a): r.value for a, r in service.addr_reachability().items()},
                              "stats": service.stats}), flush=True)
            await stdin.read()

    trio.run(main, sys.argv[1])
    """
)


class _Node:
    def __init__(self, ns: Namespace, ip: str) -> None:
        self.label = ns.label
        self.proc = ns.python(["-c", _NODE, ip], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def expect(self, event: str, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"{self.label}: no {event!r} within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"{self.label}: exited ({self.proc.wait()}) before {event!r}")
        msg: dict[str, Any] = json.loads(line)
        assert msg.get("event") == event, msg
        return msg


@pytest.fixture
def lab() -> Iterator[NatLab]:
    with NatLab() as lab:
        # a host on the public segment, beside the relay (the routers' namespaces are firewalled)
        inet = next(ns for ns in lab.netlab.namespaces if ns.label == "inet")
        bridge = next(name for name in inet.links() if name.startswith("br"))
        public = lab.netlab.namespace("public")
        lab.netlab.veth(public, inet, f"{PUBLIC_IP}/24", b_base="p", b_bridge=bridge)
        yield lab  # the lab stops the node processes and removes every namespace, on failure too


def test_natted_peer_private_public_hosts_public_within_four_probes(lab: NatLab) -> None:
    public_ns = next(ns for ns in lab.netlab.namespaces if ns.label == "public")
    relay = _Node(lab.relay, RELAY_IP)
    public = _Node(public_ns, PUBLIC_IP)
    natted = _Node(lab.a.ns, lab.a.ip)
    relay_addr = relay.expect("ready")["addr"]
    public_addr = public.expect("ready")["addr"]
    natted.expect("ready")
    natted.send(connect=[relay_addr, public_addr], probes=PROBES)
    behind = natted.expect("result")
    public.send(connect=[relay_addr], probes=PROBES)
    relay.send(connect=[public_addr], probes=PROBES)
    pub, rel = public.expect("result"), relay.expect("result")
    print(json.dumps({"natted": behind, "public": pub, "relay": rel}))

    external = f"/ip4/{lab.a.router.ext_ip}/tcp/4001"
    # the NATed peer: its NAT's address confirmed by two observers and advertised; every check private
    assert any(a.startswith(external) for a in behind["advertised"]), behind
    assert behind["v1"][0] == "private" and behind["host"] == "private", behind
    assert behind["v2"].get(external) == "private", behind
    assert behind["stats"]["probes"] >= PROBES
    # the public host and the relay's host: public at the first probe, and v2 agrees
    for result, ip in ((pub, PUBLIC_IP), (rel, RELAY_IP)):
        assert result["v1"] == ["public"] * PROBES and result["host"] == "public", result
        assert result["v2"].get(f"/ip4/{ip}/tcp/4001") == "public", result
    for node in (relay, public, natted):
        assert node.proc.stdin is not None
        node.proc.stdin.close()
        node.proc.wait(timeout=10)
