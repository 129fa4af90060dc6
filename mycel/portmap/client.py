"""NAT-PMP and PCP clients on trio (the codecs are :mod:`~mycel.portmap.natpmp` and
:mod:`~mycel.portmap.pcp`), and :class:`PortMapper`, which keeps mappings alive.

A request is sent from a UDP socket connected to the gateway's port 5351 (so only the gateway's
datagrams reach us) and retransmitted on each protocol's schedule, ``tries`` sends in all: NAT-PMP
after 250 ms, doubling (RFC 6886 §3.1 — its 9 sends take 64 s; the default here is 4, under 4 s), PCP
after 3 s ± 10 %, doubling (RFC 6887 §8.1.1; the default here is 3 sends, about 21 s). Datagrams that do
not answer the request are ignored; a result code other than success raises :class:`PortMapError`
with ``code``.
"""

from __future__ import annotations

import logging
import os
import random
import socket
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TypeVar

import trio

from mycel.portmap import natpmp, pcp
from mycel.portmap.natpmp import ExternalAddress, Mapping, PortMapError, PortMapMessageError

log = logging.getLogger("mycel.portmap")

T = TypeVar("T")
DEFAULT_TRIES = 4
PCP_TRIES = 3
MAX_DATAGRAM = 1100  # the largest PCP message; NAT-PMP ones are 16 bytes


async def exchange(
    gateway: str,
    payload: bytes,
    parse: Callable[[bytes], T],
    *,
    port: int = natpmp.PORT,
    tries: int = DEFAULT_TRIES,
    initial_timeout: float = natpmp.INITIAL_TIMEOUT,
    timeouts: Sequence[float] | None = None,
) -> T:
    """Send ``payload`` to ``gateway:port`` until ``parse`` accepts an answer (see the module doc):
    ``timeouts`` gives the wait after each send; without it, ``tries`` waits from
    ``initial_timeout``, doubling."""
    if timeouts is None:
        timeouts = [initial_timeout * 2**i for i in range(tries)]
    family = socket.AF_INET6 if ":" in gateway else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_DGRAM)
    with sock:
        try:
            await sock.connect((gateway, port))
        except OSError as exc:
            raise PortMapError(f"cannot reach the gateway {gateway}: {exc}") from exc
        for timeout in timeouts:
            try:
                await sock.send(payload)
                with trio.move_on_after(timeout):
                    while True:
                        data = await sock.recv(MAX_DATAGRAM)
                        try:
                            return parse(data)
                        except PortMapMessageError as exc:
                            log.info("portmap: ignoring a datagram from %s: %s", gateway, exc)
            except OSError as exc:  # ICMP port unreachable on the connected socket: nobody serves 5351
                raise PortMapError(f"the gateway {gateway} does not serve port {port}: {exc}") from exc
    raise PortMapError(f"no answer from {gateway}:{port} after {len(timeouts)} tries")


class NatPmpClient:
    """NAT-PMP requests to ``gateway`` (usually the default route's router)."""

    def __init__(self, gateway: str, *, port: int = natpmp.PORT, tries: int = DEFAULT_TRIES) -> None:
        self.gateway = gateway
        self.port = port
        self.tries = tries

    async def external_address(self) -> ExternalAddress:
        """The gateway's external IPv4 address."""
        return await exchange(
            self.gateway, natpmp.external_address_request(), natpmp.parse_external_address, port=self.port, tries=self.tries
        )

    async def map(self, protocol: str, internal_port: int, lifetime: int, external_port: int = 0) -> Mapping:
        """Map (or renew) ``protocol`` ``internal_port`` for ``lifetime`` seconds; the gateway may pick
        another external port than suggested."""
        request = natpmp.map_request(protocol, internal_port, external_port, lifetime)
        return await exchange(
            self.gateway, request, lambda d: natpmp.parse_map(d, protocol, internal_port), port=self.port, tries=self.tries
        )

    async def unmap(self, protocol: str, internal_port: int) -> None:
        """Delete the mapping of ``protocol`` ``internal_port``."""
        await self.map(protocol, internal_port, 0)


class PcpClient:
    """PCP MAP requests to ``gateway`` from ``client_ip`` (found from the route to the gateway when
    not given). One nonce per (protocol, port): renewals and the deletion repeat it, as RFC 6887 asks."""

    def __init__(
        self, gateway: str, client_ip: str | None = None, *, port: int = natpmp.PORT, tries: int = PCP_TRIES
    ) -> None:
        self.gateway = gateway
        self.client_ip = client_ip
        self.port = port
        self.tries = tries
        self._nonces: dict[tuple[str, int], bytes] = {}

    def _source_ip(self) -> str:
        if self.client_ip is None:
            family = socket.AF_INET6 if ":" in self.gateway else socket.AF_INET
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as probe:  # connect() on UDP sends nothing
                    probe.connect((self.gateway, natpmp.PORT))
                    self.client_ip = str(probe.getsockname()[0])
            except OSError as exc:
                raise PortMapError(f"no route to the gateway {self.gateway}: {exc}") from exc
        return self.client_ip

    async def map(self, protocol: str, internal_port: int, lifetime: int, external_port: int = 0) -> pcp.PcpMapping:
        """Map (or renew) ``protocol`` ``internal_port`` for ``lifetime`` seconds."""
        nonce = self._nonces.setdefault((protocol, internal_port), os.urandom(pcp.NONCE_SIZE))
        request = pcp.map_request(self._source_ip(), nonce, protocol, internal_port, lifetime, external_port=external_port)
        timeouts = pcp.retransmit_timeouts([random.uniform(-0.1, 0.1) for _ in range(self.tries)])
        return await exchange(
            self.gateway, request, lambda d: pcp.parse_map(d, nonce, protocol, internal_port), port=self.port, timeouts=timeouts
        )

    async def unmap(self, protocol: str, internal_port: int) -> None:
        """Delete the mapping of ``protocol`` ``internal_port`` (lifetime 0, same nonce)."""
        await self.map(protocol, internal_port, 0)
        self._nonces.pop((protocol, internal_port), None)


class PortMapper:
    """Keeps NAT-PMP mappings of ``ports`` (``[("tcp", 4001), ("udp", 4001)]``) alive while entered:
    each is renewed at half its granted lifetime (a failed renewal is retried at a quarter, logged) and
    deleted on exit. :attr:`mappings` holds the live ones; :attr:`external_ip` the gateway's address.
    """

    def __init__(self, client: NatPmpClient, ports: Sequence[tuple[str, int]], *, lifetime: int = 7200) -> None:
        self.client = client
        self.ports = list(ports)
        self.lifetime = lifetime
        self.mappings: dict[tuple[str, int], Mapping] = {}
        self.external_ip: str | None = None
        self.renewals = 0
        """Renewals that succeeded."""
        self._nursery_cm: trio.Nursery | None = None
        self._cm = trio.open_nursery()
        self._changed = trio.Event()

    async def __aenter__(self) -> PortMapper:
        self.external_ip = str((await self.client.external_address()).address)
        for protocol, port in self.ports:
            self.mappings[(protocol, port)] = await self.client.map(protocol, port, self.lifetime)
        self._nursery_cm = await self._cm.__aenter__()
        for key in self.ports:
            self._nursery_cm.start_soon(self._keep, key)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._nursery_cm is not None
        self._nursery_cm.cancel_scope.cancel()
        try:
            return await self._cm.__aexit__(exc_type, exc, tb)
        finally:  # (also when we are being cancelled): delete, bounded to 3 s
            with trio.CancelScope(shield=True), trio.move_on_after(3):
                for protocol, port in list(self.mappings):
                    try:
                        await self.client.unmap(protocol, port)
                    except PortMapError as err:
                        log.info("portmap: deleting %s %d failed: %s", protocol, port, err)
                    self.mappings.pop((protocol, port), None)

    async def wait_renewals(self, count: int) -> None:
        """Wait until ``count`` renewals succeeded in all."""
        while self.renewals < count:
            await self._changed.wait()

    async def _keep(self, key: tuple[str, int]) -> None:
        protocol, port = key
        delay = self.mappings[key].lifetime / 2
        while True:
            await trio.sleep(delay)  # the renewal timer (not waiting for something to happen)
            try:
                self.mappings[key] = await self.client.map(protocol, port, self.lifetime)
            except PortMapError as err:
                log.warning("portmap: renewing %s %d failed: %s", protocol, port, err)
                delay = max(1.0, self.mappings[key].lifetime / 4)
                continue
            self.renewals += 1
            self._changed.set()
            self._changed = trio.Event()
            delay = self.mappings[key].lifetime / 2


__all__ = ["NatPmpClient", "PcpClient", "PortMapper", "exchange"]
