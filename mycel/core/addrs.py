"""Small helpers around the ``multiaddr`` package (no parser of our own)."""

from __future__ import annotations

import enum
import ipaddress
import socket
from dataclasses import dataclass
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
    raw = addr.to_bytes()
    # the usual /ip4|ip6/<ip>/tcp/<port> read from the bytes (the parsed route costs ~15 us a call)
    if len(raw) == 8 and raw[0] == 4 and raw[5] == 6:
        return "ip4", socket.inet_ntop(socket.AF_INET, raw[1:5]), int.from_bytes(raw[6:8], "big")
    if len(raw) == 20 and raw[0] == 41 and raw[17] == 6:
        return "ip6", socket.inet_ntop(socket.AF_INET6, raw[1:17]), int.from_bytes(raw[18:20], "big")
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
    host = host.split("%", 1)[0]
    try:  # inet_pton is ~10x cheaper than ipaddress; same bytes
        packed, code = socket.inet_pton(socket.AF_INET, host), _IP4
    except OSError:
        try:
            packed, code = socket.inet_pton(socket.AF_INET6, host), _IP6
        except OSError:
            raise ValueError(f"{host!r} is not an IP address") from None
    return Multiaddr(code + packed + _PORT_CODES[transport] + port.to_bytes(2, "big"))


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


# -- classification --------------------------------------------------------------------------------
class AddrClass(enum.Enum):
    """What kind of network an address is on (:func:`classify`)."""

    PUBLIC = "public"
    """Routable on the internet (or declared public by an :class:`AddressPolicy`)."""
    PRIVATE = "private"
    """RFC 1918, unique-local IPv6, CGNAT (100.64/10), benchmarking (198.18/15) and other non-global ranges."""
    LOOPBACK = "loopback"
    """127.0.0.0/8, ::1."""
    LINK_LOCAL = "link-local"
    """169.254/16, fe80::/10."""
    UNSPECIFIED = "unspecified"
    """0.0.0.0, ::."""
    RELAY = "relay"
    """A ``/p2p-circuit`` address (reachable through a relay, whatever the relay's IP)."""
    DNS = "dns"
    """A name (``/dns*``, ``/dnsaddr``): public unless resolved otherwise; not dialable by IP checks."""
    UNKNOWN = "unknown"
    """No IP and no name (``/memory``, ``/unix``, ...)."""


class Reachability(enum.Enum):
    """Whether others can dial us (AutoNAT's verdict; go's ``network.Reachability``)."""

    UNKNOWN = "unknown"
    PUBLIC = "public"
    PRIVATE = "private"


@dataclass(frozen=True)
class AddressPolicy:
    """How a host classifies addresses, and when an observed address counts as confirmed.

    ``public_ranges`` declares CIDRs public whatever :func:`classify` would say: tests on one machine
    declare ``127.0.0.0/8`` or the NAT lab's ``198.18.0.0/15`` public so that AutoNAT and observed
    addresses treat them as internet addresses. ``observed_threshold`` is how many distinct observers
    (an IPv4 address, an IPv6 /56) must report an observed address before it is advertised (go's
    ``ActivationThresh``, 4)."""

    public_ranges: tuple[str, ...] = ()
    observed_threshold: int = 4

    def __post_init__(self) -> None:
        from mycel.core.errors import ConfigError

        if isinstance(self.public_ranges, str) or not isinstance(self.public_ranges, (tuple, list)):
            raise ConfigError(f"AddressPolicy.public_ranges: expected a list of CIDRs, got {self.public_ranges!r}")
        nets = []
        for cidr in self.public_ranges:
            try:
                nets.append(ipaddress.ip_network(cidr, strict=False))
            except (ValueError, TypeError):
                raise ConfigError(f"AddressPolicy.public_ranges: {cidr!r} is not a CIDR (e.g. 198.18.0.0/15)") from None
        if not isinstance(self.observed_threshold, int) or self.observed_threshold < 1:
            raise ConfigError(f"AddressPolicy.observed_threshold: must be a positive integer, got {self.observed_threshold!r}")
        object.__setattr__(self, "public_ranges", tuple(self.public_ranges))
        object.__setattr__(self, "_nets", tuple(nets))

    def declared_public(self, ip: IPAddress) -> bool:
        """True if ``ip`` is inside one of ``public_ranges``."""
        nets: tuple[IPNetwork, ...] = getattr(self, "_nets")
        return any(ip.version == net.version and ip in net for net in nets)

    def classify(self, addr: Multiaddr) -> AddrClass:
        """:func:`classify` under this policy."""
        return classify(addr, self)

    def is_public(self, addr: Multiaddr) -> bool:
        """True if ``addr`` classifies as PUBLIC under this policy (relay and DNS addresses are not)."""
        return classify(addr, self) is AddrClass.PUBLIC


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_POLICY = AddressPolicy()


def ip_of(addr: Multiaddr) -> IPAddress | None:
    """The first ``ip4``/``ip6`` value of ``addr`` (None if it has none)."""
    for proto, value in addr.items():
        if proto.name in ("ip4", "ip6"):
            return ipaddress.ip_address(str(value).split("%", 1)[0])
    return None


def is_relay_addr(addr: Multiaddr) -> bool:
    """True if ``addr`` goes through a relay (has a ``/p2p-circuit`` part)."""
    return any(p.name == "p2p-circuit" for p in addr.protocols())


def classify_ip(ip: IPAddress, policy: AddressPolicy = DEFAULT_POLICY) -> AddrClass:
    """The class of one IP address (see :func:`classify`)."""
    if policy.declared_public(ip):
        return AddrClass.PUBLIC
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return classify_ip(ip.ipv4_mapped, policy)
    if ip.is_unspecified:
        return AddrClass.UNSPECIFIED
    if ip.is_loopback:
        return AddrClass.LOOPBACK
    if ip.is_link_local:
        return AddrClass.LINK_LOCAL
    if ip.is_global and not ip.is_multicast:
        return AddrClass.PUBLIC
    return AddrClass.PRIVATE


def classify(addr: Multiaddr, policy: AddressPolicy = DEFAULT_POLICY) -> AddrClass:
    """Whether ``addr`` is public, private, loopback, ... (``policy.public_ranges`` count as public).

    A ``/p2p-circuit`` address is RELAY whatever its relay's IP; a name is DNS; an address with
    neither IP nor name is UNKNOWN."""
    if is_relay_addr(addr):
        return AddrClass.RELAY
    for proto, value in addr.items():
        if proto.name in ("ip4", "ip6"):
            return classify_ip(ipaddress.ip_address(str(value).split("%", 1)[0]), policy)
        if proto.name in (*DNS_PROTOCOLS, "dnsaddr"):
            return AddrClass.DNS
    return AddrClass.UNKNOWN


def thin_waist(addr: Multiaddr) -> tuple[Multiaddr, Multiaddr] | None:
    """``/ip4/1.2.3.4/udp/5/quic-v1`` → (``/ip4/1.2.3.4/udp/5``, ``/quic-v1``): the IP and TCP/UDP port
    part and the rest (None unless ``addr`` starts with ip4|ip6 then tcp|udp)."""
    raw = addr.to_bytes()
    parts = list(addr.items())
    if len(parts) < 2 or parts[0][0].name not in ("ip4", "ip6") or parts[1][0].name not in ("tcp", "udp"):
        return None
    head_len = (1 + 4 if parts[0][0].name == "ip4" else 1 + 16) + (len(_PORT_CODES[parts[1][0].name]) + 2)
    return Multiaddr(raw[:head_len]), Multiaddr(raw[head_len:]) if len(raw) > head_len else Multiaddr("")
