"""A NAT lab in network namespaces (after test-plans' hole-punch-interop): a relay on a "public"
segment and two peers, each behind a router doing NAT with nftables.

::

    relay 198.18.0.1 ──┐                     (bridge "inet", 198.18.0.0/24: the fake internet)
    rt-a  198.18.0.2 ──┤── rt-b 198.18.0.3
     │ 10.0.1.1        │    │ 10.0.2.1
    peer-a 10.0.1.2         peer-b 10.0.2.2

Routers (``ip_forward=1``) only know their two connected networks; peers' default route points at
their router; nothing has a route out of the lab. Each router's nftables ruleset (one table
``mycelnat``, replaced atomically by :meth:`Router.configure`):

* NAT: ``snat to <ext>`` (endpoint-independent mapping: Linux keeps the source port when it can) or
  ``snat to <ext> fully-random`` (a new random port for every mapping: symmetric-like);
* filter: connections arriving on the external side that are not replies to something sent out are
  dropped (a home router's firewall: no RST, no ICMP port unreachable), in ``input`` and ``forward``,
  except those a port mapping forwards (``ct status dnat``: see :meth:`Router.forward_ports`);
* loss: ``numgen random mod 100 < N drop`` on forwarded packets, both directions (this kernel has no
  netem; there is no delay either).

Needs root, iproute2 and nftables (``make system-deps`` installs them). Everything is torn down with
the underlying :class:`~mycel.testing.netns.NetLab`, even on failure.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from types import TracebackType

from mycel.testing.netns import Namespace, NetLab, NetnsError, available as netns_available

PUBLIC_NET = "198.18.0.0/24"
RELAY_IP = "198.18.0.1"


class NatKind(Enum):
    """How a router maps outgoing connections."""

    ENDPOINT_INDEPENDENT = "eim"
    """``snat``: one public port per inside socket, whatever the destination (port kept if free)."""
    SYMMETRIC = "symmetric"
    """``snat … fully-random``: a fresh random public port for each destination."""


def available() -> bool:
    """Whether a NAT lab can be built here (root, ``ip netns``, ``nft``)."""
    return netns_available() and shutil.which("nft") is not None


def forward_ruleset(ext_if: str, forwards: Sequence[tuple[str, int, str, int]]) -> str:
    """The nftables ruleset (for ``nft -f -`` inside a router) whose table ``mycelpmp`` DNATs exactly
    ``forwards``: ``(protocol, external port, inside ip, inside port)`` arriving on ``ext_if``."""
    rules = "\n".join(f'    iifname "{ext_if}" {proto} dport {ext} dnat to {ip}:{port}' for proto, ext, ip, port in forwards)
    return f"""
table ip mycelpmp
delete table ip mycelpmp
table ip mycelpmp {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
{rules}
  }}
}}
"""


@dataclass
class Router:
    """A NAT router namespace: ``ext_if``/``ext_ip`` on the public segment, ``int_if`` for its LAN."""

    ns: Namespace
    """The router's network namespace."""
    ext_if: str
    ext_ip: str
    int_if: str
    lan: str
    """The private segment behind the router (a CIDR)."""
    kind: NatKind = NatKind.ENDPOINT_INDEPENDENT
    """How it maps: endpoint-independent (``snat``) or symmetric-like (``snat ... fully-random``)."""
    loss_percent: int = 0
    """Packets dropped at random both ways, in percent (nft ``numgen random``)."""

    def configure(self, kind: NatKind | None = None, loss_percent: int | None = None) -> None:
        """(Re)write the router's ruleset atomically with this NAT kind and loss. Mappings made before
        stay in conntrack until they expire (fresh hosts use fresh ports, so they do not matter)."""
        if kind is not None:
            self.kind = kind
        if loss_percent is not None:
            if not 0 <= loss_percent < 100:
                raise ValueError("loss_percent must be in [0, 100)")
            self.loss_percent = loss_percent
        random_ports = " fully-random" if self.kind is NatKind.SYMMETRIC else ""
        loss = f"numgen random mod 100 < {self.loss_percent} drop" if self.loss_percent else ""
        ruleset = f"""
table ip mycelnat
delete table ip mycelnat
table ip mycelnat {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {self.lan} oifname "{self.ext_if}" snat to {self.ext_ip}{random_ports}
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "{self.ext_if}" ct state new drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    {loss}
    ct status dnat accept
    iifname "{self.ext_if}" ct state new drop
  }}
}}
"""
        _run_with_input(self.ns, ["nft", "-f", "-"], ruleset)

    def forward_ports(self, forwards: Sequence[tuple[str, int, str, int]]) -> None:
        """Make the router's port forwards exactly ``forwards`` — ``(protocol, external port, inside ip,
        inside port)`` — as DNAT rules of their own table (``mycelpmp``), replaced atomically (what a
        NAT-PMP/PCP/UPnP gateway does when it grants a mapping)."""
        _run_with_input(self.ns, ["nft", "-f", "-"], forward_ruleset(self.ext_if, forwards))

    def ruleset(self) -> str:
        """The router's current nftables ruleset (for failure reports)."""
        return self.ns.run(["nft", "list", "ruleset"]).stdout


@dataclass
class Peer:
    """A peer namespace behind ``router`` at ``ip``."""

    ns: Namespace
    """The peer's network namespace."""
    ip: str
    router: Router


class NatLab:
    """The lab: ``relay`` (namespace on the public segment), ``routers`` and ``peers`` ``a`` and ``b``.

    Use as a context manager; ``kind_a``/``kind_b`` pick each router's NAT (see :class:`NatKind`).
    """

    def __init__(
        self,
        kind_a: NatKind = NatKind.ENDPOINT_INDEPENDENT,
        kind_b: NatKind = NatKind.ENDPOINT_INDEPENDENT,
        *,
        prefix: str = "mycel-",
    ) -> None:
        self.netlab = NetLab(prefix)
        self._kinds = (kind_a, kind_b)
        self.relay: Namespace
        self.a: Peer
        self.b: Peer

    def __enter__(self) -> NatLab:
        if shutil.which("nft") is None:
            raise NetnsError("the NAT lab needs nftables (nft): make system-deps installs it")
        self.netlab.__enter__()
        try:
            self._build()
        except BaseException:
            self.netlab.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.netlab.close()

    def _build(self) -> None:
        lab = self.netlab
        inet = lab.namespace("inet")
        bridge = inet.bridge()
        self.relay = lab.namespace("relay")
        lab.veth(self.relay, inet, f"{RELAY_IP}/24", b_base="p", b_bridge=bridge)
        peers = []
        for i, (name, kind) in enumerate(zip("ab", self._kinds, strict=True)):
            router_ns = lab.namespace(f"rt-{name}")
            ext_ip = f"198.18.0.{2 + i}"
            ext = lab.veth(router_ns, inet, f"{ext_ip}/24", a_base="ext", b_base="p", b_bridge=bridge)
            peer_ns = lab.namespace(f"peer-{name}")
            lan = f"10.0.{1 + i}.0/24"
            inside = lab.veth(router_ns, peer_ns, f"10.0.{1 + i}.1/24", f"10.0.{1 + i}.2/24", a_base="int")
            router_ns.sysctl("net.ipv4.ip_forward", "1")
            peer_ns.add_route("default", via=f"10.0.{1 + i}.1")
            router = Router(router_ns, ext.a_if, ext_ip, inside.a_if, lan, kind)
            router.configure()
            peers.append(Peer(peer_ns, f"10.0.{1 + i}.2", router))
        self.a, self.b = peers

    @property
    def routers(self) -> tuple[Router, Router]:
        """Router A and router B."""
        return self.a.router, self.b.router

    def set_loss(self, percent: int) -> None:
        """Drop ``percent`` % of the packets each router forwards (both directions)."""
        for router in self.routers:
            router.configure(loss_percent=percent)

    def set_nat(self, kind_a: NatKind, kind_b: NatKind) -> None:
        """Change both routers' NAT kind (existing mappings are forgotten)."""
        self.a.router.configure(kind=kind_a)
        self.b.router.configure(kind=kind_b)


def _run_with_input(ns: Namespace, argv: list[str], text: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(ns.command(argv), input=text, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise NetnsError(f"[{ns.label}] {' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


__all__ = ["PUBLIC_NET", "RELAY_IP", "NatKind", "NatLab", "Peer", "Router", "available", "forward_ruleset"]
