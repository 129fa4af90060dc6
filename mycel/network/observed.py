"""Observed addresses: what peers tell us (identify's ``observedAddr``) about the address they see us on.

A sans-IO table (no trio, no clock: observations live as long as the connection they came on), after
go-libp2p's ``p2p/host/observedaddrs``:

* an observation is keyed by the connection it arrived on, and counts only when the connection's local
  address is one of our listen addresses (same IP and TCP/UDP port: the *thin waist*) — an outbound
  connection from an ephemeral port says nothing about our listeners — and when the observed address
  has the same shape (ip4/ip6, tcp/udp) as that local address;
* observers are grouped: an IPv4 address is one observer, an IPv6 /56 is one observer (so one machine or
  one home network cannot confirm an address alone);
* an observed thin-waist address is *confirmed* once ``threshold`` (go's ``ActivationThresh``, 4)
  distinct observers report it for one local address; at most ``max_per_local`` (3) confirmed
  addresses per local address are given, most observed first;
* a connection that closes takes its observation away (:meth:`ObservedAddrs.remove`); a connection that
  reports another address replaces its old one;
* loopback observations are ignored (we know our loopback addresses) unless the policy declares
  loopback public; relayed (``/p2p-circuit``) observations are ignored.

Bounds: at most ``max_connections`` observations are held (one per connection); beyond, new connections'
observations are dropped (counted in ``dropped``) until some close.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from multiaddr import Multiaddr

from mycel.core.addrs import DEFAULT_POLICY, AddrClass, AddressPolicy, ip_of, is_relay_addr, thin_waist

__all__ = ["ObservedAddrs", "observer_group"]

log = logging.getLogger("mycel.network.observed")

MAX_CONNECTIONS = 4096  # observations held at once (one per connection); beyond, new ones are dropped
MAX_PER_LOCAL = 3  # go's maxExternalThinWaistAddrsPerLocalAddr


def observer_group(remote: Multiaddr) -> str | None:
    """Who observed us, as go counts observers: the IPv4 address, or the IPv6 /56 prefix (None: no IP)."""
    ip = ip_of(remote)
    if ip is None:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 56), strict=False))
    return str(ip)


@dataclass
class _Observation:
    local_tw: bytes
    observed_tw: bytes
    observer: str


@dataclass
class _ObserverSet:
    addr: Multiaddr
    by: dict[str, int] = field(default_factory=dict)  # observer group -> connections reporting it


class ObservedAddrs:
    """The observed-address table of one host (sans-IO; see the module docstring)."""

    def __init__(
        self,
        policy: AddressPolicy = DEFAULT_POLICY,
        *,
        max_connections: int = MAX_CONNECTIONS,
        max_per_local: int = MAX_PER_LOCAL,
    ) -> None:
        self.policy = policy
        self.threshold = policy.observed_threshold
        self.max_connections = max_connections
        self.max_per_local = max_per_local
        self.dropped = 0
        """Observations dropped because ``max_connections`` were held."""
        self.version = 0
        """Bumped whenever the confirmed addresses change (a cache key for the host's address list)."""
        self._by_conn: dict[Hashable, _Observation] = {}
        # local thin waist -> observed thin waist -> its observers
        self._sets: dict[bytes, dict[bytes, _ObserverSet]] = {}
        self._confirmed: tuple[tuple[bytes, bytes], ...] = ()

    def __len__(self) -> int:
        return len(self._by_conn)

    def record(
        self, conn: Hashable, local: Multiaddr, remote: Multiaddr, observed: Multiaddr, listen: Sequence[Multiaddr]
    ) -> bool:
        """Note that the peer on ``conn`` (``remote``, reached on our ``local`` address) sees us as
        ``observed``; ``listen`` are our listen addresses (unspecified ones expanded). Returns True if
        the confirmed addresses changed."""
        if is_relay_addr(observed) or is_relay_addr(local):
            return False
        if self.policy.classify(observed) is AddrClass.LOOPBACK:
            return False
        local_split, observed_split = thin_waist(local), thin_waist(observed)
        if local_split is None or observed_split is None:
            return False
        local_tw, observed_tw = local_split[0], observed_split[0]
        if not _same_shape(local_tw, observed_tw):
            log.debug("observed %s does not match the transport of local %s", observed, local)
            return False
        listen_tws = {tw[0].to_bytes() for tw in (thin_waist(a) for a in listen) if tw is not None}
        key_local = local_tw.to_bytes()
        if key_local not in listen_tws:
            return False
        observer = observer_group(remote)
        if observer is None:
            return False
        key_observed = observed_tw.to_bytes()
        previous = self._by_conn.get(conn)
        if previous is not None:
            if previous.observed_tw == key_observed and previous.local_tw == key_local:
                return False
            self._forget(previous)
        elif len(self._by_conn) >= self.max_connections:
            self.dropped += 1
            return False
        obs = _Observation(key_local, key_observed, observer)
        self._by_conn[conn] = obs
        sets = self._sets.setdefault(key_local, {})
        entry = sets.get(key_observed)
        if entry is None:
            entry = sets[key_observed] = _ObserverSet(observed_tw)
        entry.by[observer] = entry.by.get(observer, 0) + 1
        return self._update()

    def remove(self, conn: Hashable) -> bool:
        """``conn`` closed: its observation no longer counts. Returns True if the confirmed addresses changed."""
        obs = self._by_conn.pop(conn, None)
        if obs is None:
            return False
        self._forget(obs)
        return self._update()

    def _forget(self, obs: _Observation) -> None:
        sets = self._sets.get(obs.local_tw)
        if sets is None:
            return
        entry = sets.get(obs.observed_tw)
        if entry is None:
            return
        count = entry.by.get(obs.observer, 0) - 1
        if count > 0:
            entry.by[obs.observer] = count
        else:
            entry.by.pop(obs.observer, None)
        if not entry.by:
            del sets[obs.observed_tw]
        if not sets:
            del self._sets[obs.local_tw]

    def _top(self, local_tw: bytes) -> list[_ObserverSet]:
        sets = [s for s in self._sets.get(local_tw, {}).values() if len(s.by) >= self.threshold]
        sets.sort(key=lambda s: (-len(s.by), s.addr.to_bytes()))
        return sets[: self.max_per_local]

    def _update(self) -> bool:
        confirmed = tuple(sorted((local, s.addr.to_bytes()) for local in self._sets for s in self._top(local)))
        if confirmed == self._confirmed:
            return False
        self._confirmed = confirmed
        self.version += 1
        return True

    def observers(self, observed: Multiaddr) -> int:
        """How many distinct observers report ``observed``'s thin waist (over all local addresses)."""
        split = thin_waist(observed)
        if split is None:
            return 0
        key = split[0].to_bytes()
        groups: set[str] = set()
        for sets in self._sets.values():
            entry = sets.get(key)
            if entry is not None:
                groups.update(entry.by)
        return len(groups)

    def addrs(self, listen: Sequence[Multiaddr]) -> list[Multiaddr]:
        """The confirmed observed addresses, each completed with what follows the thin waist in the
        listen address it was observed for (``/quic-v1``, ``/ws``, ...), in ``listen`` order."""
        out: list[Multiaddr] = []
        for addr in listen:
            split = thin_waist(addr)
            if split is None:
                continue
            local_tw, rest = split
            for entry in self._top(local_tw.to_bytes()):
                full = entry.addr.encapsulate(rest) if str(rest) else entry.addr
                if full not in out:
                    out.append(full)
        return out


def _same_shape(a: Multiaddr, b: Multiaddr) -> bool:
    return [p.name for p in a.protocols()] == [p.name for p in b.protocols()]
