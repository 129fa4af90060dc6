"""The :class:`PortMapping` service: maps the host's TCP and UDP listen ports on the NAT gateway with
whichever protocol answers — PCP, then NAT-PMP, then UPnP IGD — renews each mapping at half its
lifetime, advertises the mapped external addresses (``host.set_mapped_addrs``: identify pushes them)
and deletes the mappings when the host closes.

Opt-in: ``HostConfig(services=[..., PortMapping()])``. It does nothing on a host that listens on
loopback only, or without a default route (``/proc/net/route``) unless ``gateway`` is given.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import random
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import trio
from multiaddr import Multiaddr

from mycel.portmap.client import NatPmpClient, PcpClient
from mycel.portmap.igd import IgdClient, discover
from mycel.portmap.natpmp import PortMapError
from mycel.portmap.upnp import UpnpError
from mycel.service import Service, ServiceHost

log = logging.getLogger("mycel.portmap")

SOURCE: Final = "portmap"
"""The name the service's addresses carry in ``host.set_mapped_addrs``."""
PROTOCOLS: Final = ("pcp", "natpmp", "upnp")
MAX_PORTS: Final = 16
"""At most this many listen ports are mapped (a host listening on more maps the first ones)."""
CONFLICT_TRIES: Final = 4
"""AddPortMapping attempts per port when the external port is taken (UPnP 718)."""
DELETE_TIMEOUT: Final = 3.0
"""How long deleting the mappings may hold up the host's exit."""


@dataclass(frozen=True)
class Lease:
    """A granted mapping: ``external_ip:external_port`` leads to our ``internal_port`` (``protocol``
    ``tcp`` or ``udp``)."""

    protocol: str
    internal_port: int
    external_ip: str
    external_port: int
    lifetime: int
    """Seconds granted (0: permanent, never renewed)."""
    epoch: int | None = None
    """The gateway's epoch (seconds since its mappings were last lost) in the answer (NAT-PMP, PCP)."""


class Backend(Protocol):
    """One port-mapping protocol, as the service uses it."""

    name: str

    async def map(self, protocol: str, internal_port: int, lifetime: int, external_port: int) -> Lease:
        """Map (or renew) ``protocol`` ``internal_port``, suggesting ``external_port`` (0: any)."""

    async def unmap(self, lease: Lease) -> None:
        """Delete ``lease``."""


class PcpBackend:
    """PCP MAP (RFC 6887) through :class:`~mycel.portmap.client.PcpClient`."""

    name = "pcp"

    def __init__(self, client: PcpClient) -> None:
        self.client = client

    async def map(self, protocol: str, internal_port: int, lifetime: int, external_port: int) -> Lease:
        """See :class:`Backend`."""
        m = await self.client.map(protocol, internal_port, lifetime, external_port)
        return Lease(protocol, internal_port, str(m.external_address), m.external_port, m.lifetime, m.epoch)

    async def unmap(self, lease: Lease) -> None:
        """See :class:`Backend`."""
        await self.client.unmap(lease.protocol, lease.internal_port)


class NatPmpBackend:
    """NAT-PMP (RFC 6886) through :class:`~mycel.portmap.client.NatPmpClient`."""

    name = "natpmp"

    def __init__(self, client: NatPmpClient) -> None:
        self.client = client
        self._external_ip: str | None = None

    async def map(self, protocol: str, internal_port: int, lifetime: int, external_port: int) -> Lease:
        """See :class:`Backend`."""
        if self._external_ip is None:
            self._external_ip = str((await self.client.external_address()).address)
        m = await self.client.map(protocol, internal_port, lifetime, external_port)
        return Lease(protocol, internal_port, self._external_ip, m.external_port, m.lifetime, m.epoch)

    async def unmap(self, lease: Lease) -> None:
        """See :class:`Backend`."""
        await self.client.unmap(lease.protocol, lease.internal_port)


class UpnpBackend:
    """UPnP IGD AddPortMapping / DeletePortMapping for ``internal_client`` (our LAN address). The
    external port asked for is the internal one; when another host holds it (718), a random one, up to
    :data:`CONFLICT_TRIES` tries."""

    name = "upnp"

    def __init__(self, client: IgdClient, internal_client: str, *, rng: random.Random | None = None) -> None:
        self.client = client
        self.internal_client = internal_client
        self._external_ip: str | None = None
        self._random = rng or random.Random()

    async def map(self, protocol: str, internal_port: int, lifetime: int, external_port: int) -> Lease:
        """See :class:`Backend` (a gateway that only grants permanent leases (725) gets asked for
        one: it is deleted on exit as the others)."""
        if self._external_ip is None:
            self._external_ip = await self.client.external_ip()
        port = external_port or internal_port
        for attempt in range(CONFLICT_TRIES):
            try:
                await self.client.add_port_mapping(protocol, port, internal_port, self.internal_client, lifetime)
            except UpnpError as exc:
                if exc.code == 725 and lifetime:  # OnlyPermanentLeasesSupported
                    lifetime = 0
                    continue
                if exc.code == 718 and not external_port and attempt + 1 < CONFLICT_TRIES:
                    port = self._random.randint(1024, 65535)  # ConflictInMappingEntry: another host has it
                    continue
                raise
            return Lease(protocol, internal_port, self._external_ip, port, lifetime)
        raise UpnpError(f"AddPortMapping {protocol} {internal_port}: no port after {CONFLICT_TRIES} tries")

    async def unmap(self, lease: Lease) -> None:
        """See :class:`Backend`."""
        await self.client.delete_port_mapping(lease.protocol, lease.external_port)


def default_gateway(route_table: str) -> str | None:
    """The IPv4 default route's gateway in the text of ``/proc/net/route`` (None: no default route)."""
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[1] != "00000000":
            continue
        try:
            gateway, flags = int(fields[2], 16), int(fields[3], 16)
        except ValueError:
            continue
        if flags & 0x2 and gateway:  # RTF_GATEWAY
            return socket.inet_ntoa(struct.pack("<I", gateway))
    return None


def mappable_ports(listen: Sequence[Multiaddr], *, include_loopback: bool = False) -> list[tuple[str, int]]:
    """The ``(tcp|udp, port)`` pairs of the IPv4 non-loopback listen addresses (relayed ones
    excepted; loopback ones too unless ``include_loopback``), in order, at most :data:`MAX_PORTS`."""
    out: list[tuple[str, int]] = []
    for addr in listen:
        parts = str(addr).split("/")
        if len(parts) < 5 or parts[1] != "ip4" or parts[3] not in ("tcp", "udp") or "p2p-circuit" in parts:
            continue
        if parts[2].startswith("127.") and not include_loopback:
            continue
        key = (parts[3], int(parts[4]))
        if key not in out and len(out) < MAX_PORTS:
            out.append(key)
    return out


def mapped_addrs(listen: Sequence[Multiaddr], leases: dict[tuple[str, int], Lease]) -> list[Multiaddr]:
    """Each IPv4 listen address whose port is mapped, with the lease's external IP and port (the
    rest of the address — ``/quic-v1``, ``/ws`` — kept)."""
    out: list[Multiaddr] = []
    for addr in listen:
        parts = str(addr).split("/")
        if len(parts) < 5 or parts[1] != "ip4" or parts[3] not in ("tcp", "udp") or "p2p-circuit" in parts:
            continue
        lease = leases.get((parts[3], int(parts[4])))
        if lease is None or not lease.external_port or not _usable_ipv4(lease.external_ip):
            continue
        parts[2], parts[4] = lease.external_ip, str(lease.external_port)
        mapped = Multiaddr("/".join(parts))
        if mapped not in out:
            out.append(mapped)
    return out


def epoch_lost(prev_epoch: int, prev_at: float, epoch: int, now: float) -> bool:
    """Whether the gateway lost its mappings between two answers: its epoch (seconds) ``prev_epoch``
    seen at our time ``prev_at``, now ``epoch`` at ``now``. RFC 6887 §8.5 (PCP; it subsumes RFC 6886
    §3.6's NAT-PMP test): the epoch went back, or the two clocks drifted apart by more than 2 s plus
    1/16 of the elapsed time."""
    if epoch < prev_epoch:
        return True
    client_delta = now - prev_at
    server_delta = epoch - prev_epoch
    return client_delta + 2 < server_delta - server_delta / 16 or server_delta + 2 < client_delta - client_delta / 16


def _usable_ipv4(text: str) -> bool:
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:  # (PCP may answer an IPv6 external address: not one for an /ip4 listen address)
        return False
    return not (addr.is_unspecified or addr.is_multicast or addr.is_loopback)


def renewal_delay(lease: Lease) -> float:
    """Seconds until ``lease`` is renewed: half its lifetime (never, for a permanent one)."""
    return math.inf if lease.lifetime == 0 else max(1.0, lease.lifetime / 2)


def retry_delay(lease: Lease, since_granted: float) -> float:
    """Seconds until a failed renewal is tried again: a quarter of what is left of the lease (at
    least 1 s); once the lease has run out, the full lifetime's quarter."""
    left = lease.lifetime - since_granted
    return max(1.0, (left if left > 0 else lease.lifetime) / 4)


class PortMapping(Service):
    """Map the host's listen ports on the NAT gateway (see the module doc).

    ``gateway``: the router to ask (default: the default route's); ``protocols``: tried in this order,
    the first that grants a mapping is used; ``lifetime``: seconds asked for each mapping;
    ``retry_interval``: seconds before trying again when no protocol answered; ``include_loopback``
    maps loopback listen ports too (for a gateway on 127.0.0.1 in tests). ``backends`` replaces the
    protocol clients (tests).
    """

    def __init__(
        self,
        *,
        gateway: str | None = None,
        protocols: Sequence[str] = PROTOCOLS,
        lifetime: int = 7200,
        retry_interval: float = 300.0,
        tries: int = 3,
        upnp_timeout: float = 2.0,
        port: int = 5351,
        include_loopback: bool = False,
        backends: Sequence[Backend] | None = None,
    ) -> None:
        unknown = [p for p in protocols if p not in PROTOCOLS]
        if unknown or not protocols:
            raise ValueError(f"protocols must be some of {PROTOCOLS}, got {list(protocols)}")
        if lifetime <= 0 or retry_interval <= 0:
            raise ValueError("lifetime and retry_interval must be positive")
        self.gateway = gateway
        self.protocols = tuple(protocols)
        self.lifetime = lifetime
        self.retry_interval = retry_interval
        self.tries = tries
        self.upnp_timeout = upnp_timeout
        self.port = port
        self.include_loopback = include_loopback
        self._given_backends = list(backends) if backends is not None else None
        self.backend: Backend | None = None
        """The protocol in use (None until one granted a mapping)."""
        self.leases: dict[tuple[str, int], Lease] = {}
        """The live mappings, by ``(protocol, internal port)``."""
        self.renewals = 0
        """Renewals that succeeded."""
        self._granted: dict[tuple[str, int], float] = {}
        self._epoch: tuple[int, float] | None = None  # the gateway's last epoch and our time then
        self.state_losses = 0
        """Times the gateway's epoch showed it had lost our mappings (they were then made again)."""
        self._due: dict[tuple[str, int], float] = {}
        self._wake = trio.Event()
        self._changed = trio.Event()

    def local_addrs_changed(self, host: ServiceHost) -> None:
        """Listen ports may have changed: look again."""
        self._wake.set()

    async def wait_until(self, predicate: object) -> None:
        """Wait until ``predicate(self)`` holds (checked after each change of the mappings)."""
        assert callable(predicate)
        while not predicate(self):
            await self._changed.wait()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the mappings (see the class doc); on exit delete them and withdraw the addresses."""
        task_status.started()
        try:
            await self._loop(host)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(DELETE_TIMEOUT):
                await self._delete_all()
            host.set_mapped_addrs(SOURCE, [])
            self._signal()

    async def _loop(self, host: ServiceHost) -> None:
        while True:
            self._wake = trio.Event()
            wanted = mappable_ports(host.listen_addrs, include_loopback=self.include_loopback)
            for key in [k for k in self.leases if k not in wanted]:
                await self._unmap(key)
            missing = [k for k in wanted if k not in self.leases]
            if missing:
                await self._map(host, missing)
            host.set_mapped_addrs(SOURCE, mapped_addrs(host.listen_addrs, self.leases))
            self._signal()
            now = trio.current_time()
            due = min(self._due.values(), default=math.inf)
            if missing and len(self.leases) < len(wanted):
                due = min(due, now + self.retry_interval)
            with trio.move_on_at(due):
                await self._wake.wait()
                continue
            if self.backend is not None:
                await self._renew_due(host)

    async def _backends(self, host: ServiceHost) -> list[Backend]:
        if self._given_backends is not None:
            return self._given_backends
        gateway = self.gateway
        if gateway is None:
            try:
                gateway = default_gateway(await trio.Path("/proc/net/route").read_text())
            except OSError:
                gateway = None
        if gateway is None:
            log.info("portmap: no default route, no gateway to ask")
            return []
        out: list[Backend] = []
        for name in self.protocols:
            if name == "pcp":
                out.append(PcpBackend(PcpClient(gateway, port=self.port, tries=self.tries)))
            elif name == "natpmp":
                out.append(NatPmpBackend(NatPmpClient(gateway, port=self.port, tries=self.tries)))
            else:
                out.append(_LazyUpnp(gateway, self.upnp_timeout))
        return out

    async def _map(self, host: ServiceHost, keys: list[tuple[str, int]]) -> None:
        candidates = [self.backend] if self.backend is not None else await self._backends(host)
        for backend in candidates:
            granted = 0
            for protocol, port in keys:
                try:
                    lease = await backend.map(protocol, port, self.lifetime, 0)
                except PortMapError as exc:
                    log.info("portmap: %s refused %s %d: %s", backend.name, protocol, port, exc)
                    if granted == 0:
                        break  # this protocol does not work here: try the next one
                    continue
                granted += 1
                self._record((protocol, port), lease)
            if granted:
                if self.backend is None:
                    log.info("portmap: mapping with %s", backend.name)
                self.backend = backend
                return
        if self.backend is None:
            log.warning("portmap: no gateway granted a mapping (%s)", ", ".join(b.name for b in candidates) or "none")

    def _record(self, key: tuple[str, int], lease: Lease) -> None:
        now = trio.current_time()
        if lease.epoch is not None:
            if self._epoch is not None and epoch_lost(self._epoch[0], self._epoch[1], lease.epoch, now):
                self.state_losses += 1
                log.warning("portmap: the gateway's epoch says it lost its mappings; mapping again")
                for other in self._due:
                    self._due[other] = now  # renewing re-creates them
            self._epoch = (lease.epoch, now)
        self.leases[key] = lease
        self._granted[key] = now
        self._due[key] = now + renewal_delay(lease)
        log.info("portmap: %s %d -> %s:%d for %d s", key[0], key[1], lease.external_ip, lease.external_port, lease.lifetime)

    async def _renew_due(self, host: ServiceHost) -> None:
        assert self.backend is not None  # (leases exist only once a backend granted one)
        now = trio.current_time()
        for key in [k for k, t in self._due.items() if t <= now]:
            old = self.leases[key]
            try:
                lease = await self.backend.map(key[0], key[1], self.lifetime, old.external_port)
            except PortMapError as exc:
                since = now - self._granted[key]
                if since >= old.lifetime:
                    log.warning("portmap: %s %d expired unrenewed (%s); mapping it again", key[0], key[1], exc)
                    del self.leases[key], self._due[key], self._granted[key]
                else:
                    log.warning("portmap: renewing %s %d failed: %s", key[0], key[1], exc)
                    self._due[key] = now + retry_delay(old, since)
                continue
            self.renewals += 1
            self._record(key, lease)

    async def _unmap(self, key: tuple[str, int]) -> None:
        lease = self.leases.pop(key)
        self._due.pop(key, None)
        self._granted.pop(key, None)
        if self.backend is not None:
            try:
                await self.backend.unmap(lease)
            except PortMapError as exc:
                log.info("portmap: deleting %s %d failed: %s", key[0], key[1], exc)

    async def _delete_all(self) -> None:
        for key in list(self.leases):
            await self._unmap(key)


class _LazyUpnp:
    """UPnP discovered on first use (discovery costs a multicast and up to ``timeout`` seconds)."""

    name = "upnp"

    def __init__(self, gateway: str, timeout: float) -> None:
        self.gateway = gateway
        self.timeout = timeout
        self._backend: UpnpBackend | None = None

    async def _get(self) -> UpnpBackend:
        if self._backend is None:
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # connect() on UDP sends nothing
                    probe.connect((self.gateway, 1900))
                    lan_ip = str(probe.getsockname()[0])
            except OSError as exc:
                raise UpnpError(f"no route to the gateway {self.gateway}: {exc}") from exc
            service = await discover(lan_ip, timeout=self.timeout)
            self._backend = UpnpBackend(IgdClient(service), lan_ip)
        return self._backend

    async def map(self, protocol: str, internal_port: int, lifetime: int, external_port: int) -> Lease:
        """See :class:`Backend`."""
        return await (await self._get()).map(protocol, internal_port, lifetime, external_port)

    async def unmap(self, lease: Lease) -> None:
        """See :class:`Backend`."""
        await (await self._get()).unmap(lease)


__all__ = [
    "PROTOCOLS",
    "SOURCE",
    "Backend",
    "Lease",
    "NatPmpBackend",
    "PcpBackend",
    "PortMapping",
    "UpnpBackend",
    "default_gateway",
    "epoch_lost",
    "mappable_ports",
    "mapped_addrs",
    "renewal_delay",
    "retry_delay",
]
