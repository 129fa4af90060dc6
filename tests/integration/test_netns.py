"""The network-namespace lab (mycel.testing.netns): LANs on a bridge carry unicast and multicast, and
everything is removed at teardown — on an exception too, and left over from a crashed run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from mycel.testing import netns
from mycel.testing.netns import NetLab, NetnsError

# a UDP receiver: joins 224.0.0.251 on the given interface address, prints the first datagram
_RECEIVER = textwrap.dedent(
    """
    import socket, struct, sys
    group, port, local = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", port))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(local)))
    s.settimeout(20)
    print("ready", flush=True)
    data, src = s.recvfrom(2000)
    print(data.decode(), src[0], flush=True)
    """
)

_SENDER = textwrap.dedent(
    """
    import socket, sys, time
    dest, port, msg = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    s.sendto(msg.encode(), (dest, port))
    """
)


def _ns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _exchange(lab: NetLab, dest: str, local_ip: str) -> str:
    lan_hosts = lab.namespaces
    recv = [ns for ns in lan_hosts if ns.label == "h1"][0]
    send = [ns for ns in lan_hosts if ns.label == "h0"][0]
    proc = recv.python(["-c", _RECEIVER, "224.0.0.251", "5999", local_ip], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    send.run([sys.executable, "-c", _SENDER, dest, "5999", "hello"])
    out, _ = proc.communicate(timeout=20)
    return str(out).strip()


def test_lan_carries_unicast_and_multicast_and_is_removed() -> None:
    with NetLab() as lab:
        lan = lab.lan("10.231.0.0/24", 2)
        assert [str(ip) for ip in lan.ips] == ["10.231.0.1", "10.231.0.2"]
        assert len(lab.namespaces) == 3 and {ns.name for ns in lab.namespaces} <= _ns_names()
        assert all(ns.name.startswith(netns.DEFAULT_PREFIX) for ns in lab.namespaces)
        # multicast across the bridge, then unicast
        assert _exchange(lab, "224.0.0.251", "10.231.0.2") == "hello 10.231.0.1"
        assert _exchange(lab, "10.231.0.2", "10.231.0.2") == "hello 10.231.0.1"
        # nothing routes out of the lab
        routes = lan.hosts[0].ip("route", "show").stdout
        assert "default" not in routes
        names = {ns.name for ns in lab.namespaces}
    assert not names & _ns_names()


def test_teardown_on_exception_kills_processes() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with NetLab(term_grace=0.5) as lab:
            ns = lab.namespace("solo")
            # ignores SIGTERM: teardown must escalate to SIGKILL
            proc = ns.python(["-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
            name = ns.name
            raise RuntimeError("boom")
    assert proc.poll() is not None
    assert name not in _ns_names()


def test_stale_namespaces_of_dead_runs_are_removed_live_ones_kept() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    prefix = "mycelt-"
    stale = f"{prefix}{dead.pid}-0-x"
    live = f"{prefix}{os.getpid()}-999-y"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    subprocess.run(["ip", "netns", "add", live], check=True)
    try:
        with NetLab(prefix=prefix):
            names = _ns_names()
            assert stale not in names
            assert live in names
    finally:
        for name in (stale, live):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def test_public_addresses_are_refused() -> None:
    with pytest.raises(ValueError):
        netns.check_address("8.8.8.8/24")
    assert str(netns.check_address("198.18.0.2/15")) == "198.18.0.2/15"
    with NetLab() as lab:
        a = lab.namespace("a")
        with pytest.raises(ValueError):
            a.add_addr("lo", "1.2.3.4/32")
        with pytest.raises(NetnsError):
            a.run(["false"])
