"""The MDNS service's pieces that need no network: interface choice, clones, use before running."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any

import pytest

from mycel.core.errors import ServiceNotRunning
from mycel.discovery import MDNS
from mycel.discovery.mdns import service as mdns_service
from mycel.discovery.mdns.core import MdnsConfig


def _fake_psutil(monkeypatch: pytest.MonkeyPatch, ifaces: dict[str, tuple[bool, str, list[tuple[int, str]]]]) -> None:
    addrs = {name: [SimpleNamespace(family=f, address=a) for f, a in entries] for name, (_, _, entries) in ifaces.items()}
    stats = {name: SimpleNamespace(isup=up, flags=flags) for name, (up, flags, _) in ifaces.items()}
    fake: Any = SimpleNamespace(net_if_addrs=lambda: addrs, net_if_stats=lambda: stats)
    monkeypatch.setattr(mdns_service, "psutil", fake)


def test_interfaces_up_multicast_ipv4_loopback_only_as_a_last_resort(monkeypatch: pytest.MonkeyPatch) -> None:
    v4, v6 = socket.AF_INET, socket.AF_INET6
    _fake_psutil(
        monkeypatch,
        {
            "lo": (True, "up,loopback,running", [(v4, "127.0.0.1")]),
            "eth0": (True, "up,broadcast,running,multicast", [(v4, "10.1.0.2"), (v6, "fd00::2")]),
            "eth1": (False, "broadcast,multicast", [(v4, "10.2.0.2")]),  # down
            "tun0": (True, "up,pointopoint,running", [(v4, "10.3.0.2")]),  # no multicast
        },
    )
    assert mdns_service.multicast_interfaces() == ["10.1.0.2"]
    assert mdns_service.multicast_interfaces(["192.168.1.5"]) == ["192.168.1.5"]
    _fake_psutil(monkeypatch, {"lo": (True, "up,loopback,running", [(v4, "127.0.0.1")])})
    assert mdns_service.multicast_interfaces() == ["127.0.0.1"]


def test_clone_and_use_before_running() -> None:
    m = MDNS(interfaces=["127.0.0.1"], port=15353, config=MdnsConfig(ttl=60))
    c = m.clone()
    assert c is not m and (c.interfaces, c.interfaces6, c.port, c.config) == (["127.0.0.1"], [], 15353, MdnsConfig(ttl=60, port=15353))
    assert m.socket is None
    with pytest.raises(ServiceNotRunning):
        m.peers()


def test_ipv6_interfaces_never_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    v4, v6 = socket.AF_INET, socket.AF_INET6
    _fake_psutil(
        monkeypatch,
        {
            "lo": (True, "up,loopback,running", [(v6, "::1")]),
            "lo0": (True, "up,broadcast,running,multicast", [(v4, "10.0.0.1")]),  # no IPv6 address
            "eth9": (True, "up,broadcast,running,multicast", [(v6, "fe80::1")]),
        },
    )
    def index(name: str) -> int:
        if name != "eth9":
            raise OSError("no such device")
        return 7

    monkeypatch.setattr(socket, "if_nametoindex", index)
    assert mdns_service.multicast_interfaces6() == {"eth9": 7}
    assert mdns_service.multicast_interfaces6(["eth9", "nope"]) == {"eth9": 7}
    # IPv4 interfaces given explicitly: no IPv6 unless named too
    assert MDNS(interfaces=["127.0.0.1"]).interfaces6 == []
    assert MDNS(interfaces=["127.0.0.1"], interfaces6=["eth9"]).interfaces6 == ["eth9"]
