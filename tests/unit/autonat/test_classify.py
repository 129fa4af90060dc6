"""Address classification and the policy that declares test ranges public."""

from __future__ import annotations

import pytest
from multiaddr import Multiaddr

from mycel.core.addrs import AddrClass, AddressPolicy, classify, thin_waist
from mycel.core.errors import ConfigError

CIRCUIT = "/ip4/8.8.8.8/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"


@pytest.mark.parametrize(
    ("addr", "kind"),
    [
        ("/ip4/8.8.8.8/tcp/1", AddrClass.PUBLIC),
        ("/ip6/2606:4700::1111/udp/1/quic-v1", AddrClass.PUBLIC),
        ("/ip4/10.1.2.3/tcp/1", AddrClass.PRIVATE),
        ("/ip4/192.168.1.1/tcp/1", AddrClass.PRIVATE),
        ("/ip4/100.64.0.1/tcp/1", AddrClass.PRIVATE),
        ("/ip4/198.18.0.1/tcp/1", AddrClass.PRIVATE),
        ("/ip6/fd00::1/tcp/1", AddrClass.PRIVATE),
        ("/ip4/127.0.0.1/tcp/1", AddrClass.LOOPBACK),
        ("/ip6/::1/tcp/1", AddrClass.LOOPBACK),
        ("/ip4/169.254.1.1/tcp/1", AddrClass.LINK_LOCAL),
        ("/ip4/0.0.0.0/tcp/1", AddrClass.UNSPECIFIED),
        ("/ip6/::ffff:8.8.8.8/tcp/1", AddrClass.PUBLIC),
        ("/dns4/example.com/tcp/1", AddrClass.DNS),
        (CIRCUIT, AddrClass.RELAY),
        ("/memory/5", AddrClass.UNKNOWN),
    ],
)
def test_classify(addr: str, kind: AddrClass) -> None:
    assert classify(Multiaddr(addr)) is kind


def test_policy_declares_ranges_public() -> None:
    policy = AddressPolicy(public_ranges=("198.18.0.0/15", "127.0.0.0/8"))
    assert policy.is_public(Multiaddr("/ip4/198.19.255.1/tcp/1"))
    assert policy.is_public(Multiaddr("/ip4/127.0.0.2/tcp/1"))
    assert not policy.is_public(Multiaddr("/ip4/172.16.0.1/tcp/1"))  # private and not declared
    assert classify(Multiaddr("/ip4/198.18.0.1/tcp/1")) is AddrClass.PRIVATE  # the default policy
    assert not policy.is_public(Multiaddr("/ip4/10.0.0.1/tcp/1"))
    assert not policy.is_public(Multiaddr(CIRCUIT))  # a relayed address is never "public"


@pytest.mark.parametrize("bad", [("nonsense",), ("10.0.0.0/33",), "127.0.0.0/8"])
def test_policy_rejects_bad_ranges(bad: object) -> None:
    with pytest.raises(ConfigError):
        AddressPolicy(public_ranges=bad)  # type: ignore[arg-type]


def test_policy_rejects_bad_threshold() -> None:
    with pytest.raises(ConfigError):
        AddressPolicy(observed_threshold=0)


def test_thin_waist() -> None:
    split = thin_waist(Multiaddr("/ip6/::1/udp/9/quic-v1"))
    assert split == (Multiaddr("/ip6/::1/udp/9"), Multiaddr("/quic-v1"))
    assert thin_waist(Multiaddr("/ip4/1.2.3.4/tcp/1")) == (Multiaddr("/ip4/1.2.3.4/tcp/1"), Multiaddr(""))
    assert thin_waist(Multiaddr("/dns4/x.org/tcp/1")) is None
