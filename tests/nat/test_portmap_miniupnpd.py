"""Our NAT-PMP and PCP clients against a real miniupnpd (Debian's 2.3.1, nftables backend) running on a
NAT router of the lab, configured without STUN: the refusals.

Without ``ext_perform_stun``, miniupnpd refuses to forward ports when the router's external address is
reserved — "Reserved / private IP address 198.18.0.2 on ext interface: Port forwarding is impossible"
(``ext_ip=198.18.0.2`` is rejected as "not public routable") — so it answers NAT-PMP with
NETWORK_FAILURE (3: no usable external address) and PCP with NO_RESOURCES (8): its answers pass our
checks (opcode, PCP nonce, internal port) and come out as typed errors with the right codes, and its
log shows it read our requests as meant. With STUN (a responder on the public segment), the same
daemon grants mappings over PCP, NAT-PMP and UPnP IGD: tests/nat/test_portmap_igd.py.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from tests.nat.portmap_lab import wait_for_line
from mycel.testing.natlab import NatLab

PROBE = str(pathlib.Path(__file__).with_name("portmap_probe.py"))


def test_natpmp_and_pcp_against_miniupnpd(tmp_path: pathlib.Path) -> None:
    with NatLab() as lab:
        router = lab.a.router
        conf = tmp_path / "miniupnpd.conf"
        conf.write_text(
            f"ext_ifname={router.ext_if}\nlistening_ip={router.int_if}\nenable_natpmp=yes\nenable_upnp=no\n"
            f"secure_mode=yes\nallow 1024-65535 {router.lan} 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
        )
        daemon = router.ns.popen(
            ["miniupnpd", "-d", "-f", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        wait_for_line(daemon, "Listening for NAT-PMP/PCP traffic", 15)
        probe = lab.a.ns.run([sys.executable, "-u", PROBE, "10.0.1.1"], timeout=60)
        answers = {a["request"]: a for a in map(json.loads, probe.stdout.splitlines())}
        daemon.terminate()
        log, _ = daemon.communicate(timeout=10)
    assert answers["natpmp_external"]["ok"] is False and answers["natpmp_external"]["code"] == 3
    assert answers["natpmp_map"]["ok"] is False and answers["natpmp_map"]["code"] == 3
    assert answers["pcp_map"]["ok"] is False and answers["pcp_map"]["code"] == 8
    # the daemon read our requests as we meant them
    assert "NAT-PMP public address request" in log
    assert "NAT-PMP port mapping request : 0->10.0.1.2:8080 tcp lifetime=60s" in log
    assert "PCP request received from 10.0.1.2" in log and "60bytes" in log
    assert "PCP MAP: failed to add mapping TCP 8080->10.0.1.2:8080" in log
