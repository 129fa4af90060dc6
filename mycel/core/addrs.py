"""Small helpers around the ``multiaddr`` package (no parser of our own)."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from multiaddr import Multiaddr

from mycel.core.varint import encode_uvarint

if TYPE_CHECKING:
    from collections.abc import Iterable

    from mycel.core.abc import Connection
    from mycel.core.peer_id import PeerId

P2P = "p2p"
DNS_PROTOCOLS = ("dns", "dns4", "dns6")


def as_multiaddr(addr: str | Multiaddr) -> Multiaddr:
    """``addr`` as a Multiaddr (parsed if it is a string; raises ValueError if it is not a valid multiaddr)."""
    return addr if isinstance(addr, Multiaddr) else Multiaddr(addr)


def protocol_names(addr: Multiaddr) -> list[str]:
    """The protocol names of ``addr`` in order, e.g. ``['ip4', 'tcp', 'p2p']``."""
    return [p.name for p in addr.protocols()]


def split_peer_id(addr: str | Multiaddr) -> tuple[Multiaddr, PeerId | None]:
    """``/ip4/…/tcp/…/p2p/Qm…`` → (``/ip4/…/tcp/…``, PeerId). The last ``/p2p`` only."""
    from mycel.core.peer_id import PeerId

    addr = as_multiaddr(addr)
    parts = list(addr.items())
    if parts and parts[-1][0].name == P2P:
        peer = PeerId.from_string(str(parts[-1][1]))
        rest = addr.decapsulate(Multiaddr(f"/p2p/{parts[-1][1]}"))
        return rest, peer
    return addr, None


def with_peer_id(addr: Multiaddr, peer: PeerId) -> Multiaddr:
    """``addr`` ending in ``/p2p/<peer>``; a ``/p2p`` part it already ends in is replaced."""
    base, existing = split_peer_id(addr)
    return base.encapsulate(Multiaddr(f"/p2p/{peer}"))


def tcp_host_port(addr: Multiaddr) -> tuple[str, str, int] | None:
    """For ``/{ip4,ip6,dns,dns4,dns6}/<host>/tcp/<port>`` (and nothing after): (proto, host, port)."""
    parts = list(addr.items())
    if len(parts) != 2:
        return None
    (p0, host), (p1, port) = parts
    if p1.name != "tcp" or p0.name not in ("ip4", "ip6", *DNS_PROTOCOLS):
        return None
    return p0.name, str(host), int(str(port))


_IP4, _IP6 = encode_uvarint(4), encode_uvarint(41)
_PORT_CODES = {"tcp": encode_uvarint(6), "udp": encode_uvarint(273)}


def ip_multiaddr(host: str, port: int, transport: str = "tcp") -> Multiaddr:
    """``/ip4|ip6/<host>/<transport>/<port>``, built from bytes (string parsing is ~30x slower)."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    code = _IP4 if ip.version == 4 else _IP6
    return Multiaddr(code + ip.packed + _PORT_CODES[transport] + port.to_bytes(2, "big"))


def is_loopback(addr: Multiaddr) -> bool:
    """True if the first ``ip4``/``ip6`` part of ``addr`` is a loopback address (False if it has none)."""
    for proto, value in addr.items():
        if proto.name in ("ip4", "ip6"):
            return ipaddress.ip_address(str(value)).is_loopback
    return False


def is_unspecified(addr: Multiaddr) -> bool:
    """True if the first ``ip4``/``ip6`` part of ``addr`` is ``0.0.0.0`` or ``::`` (False if it has none)."""
    for proto, value in addr.items():
        if proto.name in ("ip4", "ip6"):
            return ipaddress.ip_address(str(value)).is_unspecified
    return False


def interface_addresses(version: int) -> list[str]:
    """IP addresses of this machine's interfaces (link-local IPv6 left out), loopback last."""
    import socket

    import psutil

    family = socket.AF_INET if version == 4 else socket.AF_INET6
    found: list[str] = []
    for addrs in psutil.net_if_addrs().values():
        for entry in addrs:
            if entry.family != family:
                continue
            ip = ipaddress.ip_address(entry.address.split("%", 1)[0])
            if ip.is_link_local:
                continue
            found.append(str(ip))
    found.sort(key=lambda a: ipaddress.ip_address(a).is_loopback)
    return list(dict.fromkeys(found))


def expand_unspecified(addr: Multiaddr) -> list[Multiaddr]:
    """``/ip4/0.0.0.0/tcp/N`` → one address per interface (``/ip6/::`` likewise); others unchanged."""
    if not is_unspecified(addr):
        return [addr]
    text = str(addr)
    if text.startswith("/ip4/0.0.0.0/"):
        rest = text[len("/ip4/0.0.0.0") :]
        return [Multiaddr(f"/ip4/{ip}{rest}") for ip in interface_addresses(4)]
    if text.startswith("/ip6/::/"):
        rest = text[len("/ip6/::") :]
        return [Multiaddr(f"/ip6/{ip}{rest}") for ip in interface_addresses(6)]
    return [addr]


def remote_ips(connections: Iterable[Connection]) -> list[str]:
    """The remote IP of each connection that has one (memory transports have none), in order."""
    ips: list[str] = []
    for conn in connections:
        for proto in ("ip4", "ip6"):
            try:
                ips.append(conn.remote_addr.value_for_protocol(proto))
                break
            except Exception:  # the multiaddr library raises its own errors for a missing protocol
                continue
    return ips
