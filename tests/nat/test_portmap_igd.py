"""Port mapping through Debian's miniupnpd (2.3.1, nftables backend) on a NAT router of the lab: a
mycel host behind it runs the PortMapping service over PCP, then NAT-PMP, then UPnP IGD (SSDP on the
LAN, the description, SOAP); each time its TCP and QUIC ports get mapped (miniupnpd's DNAT rules appear
in the router's nftables), the host advertises the router's external address, a host on the public
segment dials and pings it there over TCP and QUIC and hears those addresses from identify, the
mappings are renewed (4 s lifetime), and when the host closes they are deleted (the rules are gone)
and the address withdrawn.

miniupnpd refuses to map when its external address is reserved (198.18/15 is) unless STUN says the
router is reachable 1:1, so the test runs a tiny STUN responder (tests/nat/portmap_stun.py) on the
public segment and sets ``ext_perform_stun`` — the router really is 1:1 on that segment.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

from mycel.testing.natlab import RELAY_IP, NatLab, Router
from tests.nat.harness import Node
from tests.nat.portmap_lab import wait_for_line

HERE = pathlib.Path(__file__).parent
MINIUPNPD_TABLES = """
table inet filter {
  chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }
  chain miniupnpd { }
  chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
  chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
"""


def _dnats(router: Router) -> set[tuple[str, int]]:
    """The (protocol, port) pairs miniupnpd DNATs to the peer now."""
    chain = router.ns.run(["nft", "list", "chain", "inet", "filter", "prerouting_miniupnpd"]).stdout
    names = {"6": "tcp", "11": "udp"}
    return {(names.get(m[0], m[0]), int(m[1])) for m in re.findall(r"@nh,72,8 0x(\w+) th dport (\d+) dnat ip to 10\.0\.1\.2", chain)}


def _start_miniupnpd(router: Router, conf: pathlib.Path) -> subprocess.Popen[str]:
    subprocess.run(router.ns.command(["nft", "-f", "-"]), input=MINIUPNPD_TABLES, text=True, check=True)
    conf.write_text(
        f"ext_ifname={router.ext_if}\nlistening_ip={router.int_if}\nenable_natpmp=yes\nenable_upnp=yes\n"
        f"http_port=0\next_perform_stun=yes\next_stun_host={RELAY_IP}\next_stun_port=3478\nsecure_mode=yes\n"
        "min_lifetime=2\nmax_lifetime=3600\nclean_ruleset_interval=0\nuuid=3f1e2d3c-0000-4000-8000-0123456789ab\n"
        f"allow 1024-65535 {router.lan} 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
    )
    daemon = router.ns.popen(["miniupnpd", "-d", "-f", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = wait_for_line(daemon, "Listening for NAT-PMP/PCP traffic", 15)
    assert "Port forwarding is now enabled" in log, log
    return daemon


def test_port_mapping_service_through_miniupnpd(tmp_path: pathlib.Path) -> None:
    with NatLab() as lab:
        router = lab.a.router
        stun = Node.script(lab.relay, [str(HERE / "portmap_stun.py"), RELAY_IP])
        stun.expect("ready", timeout=10)
        daemon = _start_miniupnpd(router, tmp_path / "miniupnpd.conf")
        try:
            for protocol in ("pcp", "natpmp", "upnp"):
                host = Node.script(lab.a.ns, [str(HERE / "portmap_host.py"), protocol, "4"], log_path=tmp_path / f"{protocol}.log")
                mapped = host.expect("mapped", timeout=30)
                assert mapped["protocol"] == protocol
                external = [a for a in mapped["addrs"] if a.startswith(f"/ip4/{router.ext_ip}/")]
                tcp = [a for a in external if "/tcp/4001/p2p/" in a]
                quic = [a for a in external if "/udp/4001/quic-v1/p2p/" in a]
                assert tcp and quic, mapped["addrs"]
                assert _dnats(router) == {("tcp", 4001), ("udp", 4001)}, router.ruleset()
                out = lab.relay.run([sys.executable, "-u", str(HERE / "portmap_dial.py"), tcp[0], quic[0]], timeout=30)
                dials = [json.loads(line) for line in out.stdout.splitlines()]
                assert [d["ok"] for d in dials] == [True, True], dials
                # identify announces the mapped addresses (what the public host learned from the peer itself)
                assert {tcp[0].split("/p2p/")[0], quic[0].split("/p2p/")[0]} <= set(dials[0]["identified"]), dials
                assert host.expect("renewed", timeout=20)["renewals"] >= 2
                host.close()  # stdin closed: the host exits and deletes its mappings
                closed = host.expect("closed", timeout=10)
                assert not any(router.ext_ip in a for a in closed.get("addrs", [])), closed
                assert _dnats(router) == set(), router.ruleset()
        finally:
            daemon.terminate()
            log, _ = daemon.communicate(timeout=10)
            stun.proc.terminate()
    assert "PCP MAP: added mapping TCP 4001->10.0.1.2:4001" in log
    assert "NAT-PMP port mapping request : 4001->10.0.1.2:4001 tcp lifetime=4s" in log
    assert "AddPortMapping: ext port 4001 to 10.0.1.2:4001 protocol TCP" in log
