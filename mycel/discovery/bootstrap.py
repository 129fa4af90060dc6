"""Bootstrap: connect to the peers of ``HostConfig.bootstrap`` on start, and again whenever the host falls
below ``HostConfig.bootstrap_min_peers`` connected peers.

The host adds a :class:`Bootstrap` service by itself when ``HostConfig.bootstrap`` is not empty (list one in
``HostConfig.services`` to tune it). A **round** dials bootstrap peers that are not connected, a few at a
time, in random order, until the host has ``bootstrap_min_peers`` peers or the list is exhausted; each peer
gets :attr:`Bootstrap.attempts` tries, with exponential backoff and jitter between them. A round in which
some bootstrap peer stayed unreachable while the host is still short of peers is followed by another after a
growing pause (``bootstrap_backoff`` doubling up to ``bootstrap_backoff_max``, jittered). Otherwise the
service waits for a peer to disconnect (the ``peer_disconnected`` hook): there is no polling loop.

``/dnsaddr`` entries are resolved at each round through DNS TXT records (:mod:`mycel.discovery.dnsaddr`,
``HostConfig.dns_nameservers``). Each bootstrap peer is reported through ``host.peer_found(..., "bootstrap")``
(peerstore, ``PeerFound``, services' ``peer_found`` hooks) and then dialed by this service: bootstrap peers
are connected even when ``HostConfig.discovery_connect`` is 0, since they were asked for by name.

The schedule (when the next round is due, how long to back off) is :class:`BootstrapSchedule`, a plain
class that takes ``now`` and a random generator; :class:`Bootstrap` is its trio driver.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass

import trio
from multiaddr import Multiaddr

from mycel.core.addrs import as_multiaddr, split_peer_id
from mycel.core.errors import HostClosed, MycelError
from mycel.core.events import ServiceEvent
from mycel.core.peer_id import PeerId
from mycel.discovery.dnsaddr import DnsaddrResolver, is_dnsaddr
from mycel.service import Service, ServiceHost

log = logging.getLogger("mycel.discovery.bootstrap")

IPFS_BOOTSTRAP_PEERS: tuple[str, ...] = (
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt",
    "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
)
"""go-libp2p's public IPFS bootstrap peers (go-libp2p-kad-dht ``DefaultBootstrapPeers``), shipped as data:
``HostConfig(bootstrap=IPFS_BOOTSTRAP_PEERS)`` joins the public network. Tests never dial them."""

MIN_PEERS = 4
"""Default ``HostConfig.bootstrap_min_peers``: go's (kubo/boxo bootstrap) ``MinPeerThreshold``."""
DIAL_TIMEOUT = 10.0
"""Seconds one bootstrap dial (resolution included) may take: go's ``ConnectionTimeout`` (Period / 3)."""
ATTEMPTS = 3
"""Tries per bootstrap peer in one round."""
CONCURRENCY = 8
"""Bootstrap peers dialed at once (never more than the host is short of)."""
BACKOFF = 1.0
"""Default ``HostConfig.bootstrap_backoff``: seconds before the first retry."""
BACKOFF_MAX = 300.0
"""Default ``HostConfig.bootstrap_backoff_max``: the longest pause between tries or rounds."""


def backoff_delay(failures: int, base: float, cap: float, rng: random.Random) -> float:
    """The pause after ``failures`` consecutive failures (1, 2, ...): ``base * 2**(failures-1)`` capped at
    ``cap``, then drawn uniformly from its upper half ("equal jitter": never less than half, so retries
    stay spread yet bounded)."""
    exponent = min(max(failures - 1, 0), 62)
    delay = min(cap, base * 2.0**exponent)
    return delay * rng.uniform(0.5, 1.0)


class BootstrapSchedule:
    """When the next bootstrap round is due (sans-IO: takes ``now`` and a random generator).

    States: *content* (the last round reached the minimum, or left no bootstrap peer untried: wait for a
    disconnect), *due* (a round should run as soon as the host is short of peers) and *backing off* (the
    last round left bootstrap peers unreachable: the next one waits until :attr:`next_round_at`).
    """

    def __init__(self, min_peers: int, backoff: float, backoff_max: float, attempts: int = ATTEMPTS) -> None:
        self.min_peers = min_peers
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.attempts = attempts
        self.content = False
        """True while no round is wanted until a peer disconnects."""
        self.failed_rounds = 0
        """Consecutive rounds that ended short of peers with bootstrap peers unreachable."""
        self.next_round_at = -math.inf
        """The earliest time the next round may start."""
        self._lost_in_round = False

    def due(self, now: float, connected: int) -> bool:
        """Whether a round should start now, with ``connected`` peers connected (enough peers: content)."""
        if connected >= self.min_peers:
            self._content()
            return False
        return not self.content and now >= self.next_round_at

    def _content(self) -> None:
        self.content = True
        self.failed_rounds = 0
        self.next_round_at = -math.inf

    def round_started(self) -> None:
        """A round begins (peers lost from now on count against its result)."""
        self._lost_in_round = False

    def peer_lost(self, connected: int) -> bool:
        """A peer disconnected and ``connected`` remain; True when that may start a round (wake the driver)."""
        if connected >= self.min_peers:
            return False
        self.content = False
        self._lost_in_round = True
        return True

    def round_done(self, now: float, connected: int, unreachable: int, rng: random.Random) -> float | None:
        """A round ended with ``connected`` peers and ``unreachable`` bootstrap peers it could not reach.

        Returns the pause before the next round when backing off, else None (content, or due at once when
        a peer left during the round and the host is short of peers)."""
        if connected >= self.min_peers or not unreachable:
            if connected < self.min_peers and self._lost_in_round:  # a peer left while we dialed: go again
                self.content = False
                self.failed_rounds = 0
                self.next_round_at = -math.inf
            else:
                self._content()
            return None
        self.content = False
        self.failed_rounds += 1
        # the pause continues the per-peer sequence: after `attempts` tries, round n waits as try attempts+n would
        delay = backoff_delay(self.attempts + self.failed_rounds - 1, self.backoff, self.backoff_max, rng)
        self.next_round_at = now + delay
        return delay

    def next_deadline(self) -> float:
        """When the driver must look again without being woken (``math.inf``: only when woken)."""
        if self.content or self.next_round_at == -math.inf:
            return math.inf
        return self.next_round_at


def bootstrap_targets(entries: Sequence[str | Multiaddr], own: PeerId | None = None) -> dict[PeerId, list[Multiaddr]]:
    """``HostConfig.bootstrap`` grouped by peer: ``{peer: [address, ...]}`` in the order given. Plain
    addresses lose their ``/p2p``; ``/dnsaddr`` ones keep it (it filters the TXT answers). ``own`` (our id)
    is left out. Raises ValueError for an entry without ``/p2p/<id>`` (HostConfig checks this first)."""
    out: dict[PeerId, list[Multiaddr]] = {}
    for entry in entries:
        addr = as_multiaddr(entry)
        base, peer = split_peer_id(addr)
        if peer is None:
            raise ValueError(f"bootstrap address {addr} has no /p2p/<peer id>")
        if peer == own:
            continue
        kept = addr if is_dnsaddr(addr) else base
        addrs = out.setdefault(peer, [])
        if kept not in addrs:
            addrs.append(kept)
    return out


@dataclass(frozen=True)
class BootstrapRoundDone(ServiceEvent):
    """A bootstrap round ended: ``connected`` peers are connected, ``unreachable`` bootstrap peers could not
    be reached in it, and the next round waits ``retry_in`` seconds (None: no backoff; the next round comes
    when a peer disconnects, or at once if one left during this round)."""

    connected: int
    """Peers connected when the round ended."""
    unreachable: int
    """Bootstrap peers this round tried and could not reach."""
    retry_in: float | None
    """Seconds until the next round (backing off), or None."""


class Bootstrap(Service):
    """Keeps the host connected to its bootstrap peers (see the module docstring).

    The list, the minimum and the backoff come from the host's config (``bootstrap``,
    ``bootstrap_min_peers``, ``bootstrap_backoff``, ``bootstrap_backoff_max``, ``dns_nameservers``); the
    arguments tune the rest: ``attempts`` per peer per round, ``concurrency`` (dials at once),
    ``dial_timeout`` (seconds per try, resolution included), ``seed`` (of the jitter), ``resolver`` (the
    ``/dnsaddr`` resolver; default: one on the config's nameservers).
    """

    def __init__(
        self,
        *,
        attempts: int = ATTEMPTS,
        concurrency: int = CONCURRENCY,
        dial_timeout: float = DIAL_TIMEOUT,
        seed: int | None = None,
        resolver: DnsaddrResolver | None = None,
    ) -> None:
        if attempts < 1 or concurrency < 1 or dial_timeout <= 0:
            raise ValueError("Bootstrap: attempts and concurrency must be >= 1 and dial_timeout > 0")
        self.attempts = attempts
        self.concurrency = concurrency
        self.dial_timeout = dial_timeout
        self.seed = seed
        self.resolver = resolver
        self.stats: dict[str, int] = dict.fromkeys(("rounds", "attempts", "failures", "connected"), 0)
        """Rounds run, dial tries, failed tries, and tries that connected."""
        self.targets: dict[PeerId, list[Multiaddr]] = {}
        """The bootstrap peers and their configured addresses (set when the service starts)."""
        self._schedule: BootstrapSchedule | None = None
        self._wake = trio.Event()
        self._rng = random.Random(seed)
        self._backing_off = False

    def connected_bootstrap_peers(self, host: ServiceHost) -> list[PeerId]:
        """The bootstrap peers ``host`` is connected to now."""
        return [p for p in self.targets if host.connections(p)]

    async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run rounds when due; between them sleep until woken (a disconnect) or the backoff ends."""
        config = host.config
        if self.seed is None:
            self._rng.seed(int.from_bytes(os.urandom(8), "big"))
        if self.resolver is None:
            self.resolver = DnsaddrResolver(config.dns_nameservers)
        self.targets = bootstrap_targets(config.bootstrap, host.peer_id)
        schedule = BootstrapSchedule(
            config.bootstrap_min_peers, config.bootstrap_backoff, config.bootstrap_backoff_max, self.attempts
        )
        self._schedule = schedule
        task_status.started()
        if not self.targets:
            return
        log.info("bootstrap: %d peers to keep %d connections with", len(self.targets), schedule.min_peers)
        while True:
            if schedule.due(trio.current_time(), len(host.connected_peers())):
                await self._round(host, schedule)
                continue
            self._wake = trio.Event()
            with trio.move_on_at(schedule.next_deadline()):
                await self._wake.wait()

    def peer_disconnected(self, host: ServiceHost, peer: PeerId) -> None:
        """Below the minimum: a round is wanted (now, or when the backoff ends)."""
        if self._schedule is not None and self._schedule.peer_lost(len(host.connected_peers())):
            try:  # through spawn, which refuses once the host is closing: its connections closing start no round
                host.spawn(self._kick)
            except HostClosed:
                pass

    async def _kick(self) -> None:
        self._wake.set()

    async def _round(self, host: ServiceHost, schedule: BootstrapSchedule) -> None:
        self.stats["rounds"] += 1
        schedule.round_started()
        candidates = [p for p in self.targets if not host.connections(p)]
        self._rng.shuffle(candidates)
        short = schedule.min_peers - len(host.connected_peers())
        unreachable = 0
        pending = iter(candidates)
        log.debug("bootstrap round %d: %d peers short, %d candidates", self.stats["rounds"], short, len(candidates))

        async def worker() -> None:
            nonlocal unreachable
            for peer in pending:  # workers share the iterator: each peer is taken once
                if len(host.connected_peers()) >= schedule.min_peers:
                    return
                if not await self._reach(host, schedule, peer):
                    unreachable += 1

        async with trio.open_nursery() as nursery:
            for _ in range(min(self.concurrency, max(short, 1), len(candidates))):
                nursery.start_soon(worker)
        connected = len(host.connected_peers())
        retry_in = schedule.round_done(trio.current_time(), connected, unreachable, self._rng)
        host.emit(BootstrapRoundDone(connected, unreachable, retry_in))
        if retry_in is None:
            if self._backing_off or self.stats["rounds"] == 1:
                log.info(
                    "bootstrap: %d peers connected (%d of %d bootstrap peers)",
                    connected,
                    len(self.connected_bootstrap_peers(host)),
                    len(self.targets),
                )
            self._backing_off = False
        else:
            level = logging.DEBUG if self._backing_off else logging.INFO
            log.log(
                level,
                "bootstrap: %d bootstrap peers unreachable, %d peers connected (want %d); next round in %.1f s",
                unreachable,
                connected,
                schedule.min_peers,
                retry_in,
            )
            self._backing_off = True

    async def _reach(self, host: ServiceHost, schedule: BootstrapSchedule, peer: PeerId) -> bool:
        """Connect to ``peer``: up to ``attempts`` tries with backoff between them; True once connected."""
        addrs: list[Multiaddr] = []
        for attempt in range(1, self.attempts + 1):
            if host.connections(peer):
                return True
            self.stats["attempts"] += 1
            try:
                with trio.fail_after(self.dial_timeout):
                    if not addrs:
                        addrs = await self._resolve(peer)
                        host.peer_found(peer, addrs, "bootstrap")
                    await host.connect(peer)
            except HostClosed:
                return False
            except (MycelError, OSError, trio.TooSlowError) as exc:
                self.stats["failures"] += 1
                log.debug("bootstrap peer %s, try %d: %s", peer, attempt, str(exc) or type(exc).__name__)
                if attempt < self.attempts:
                    await trio.sleep(backoff_delay(attempt, schedule.backoff, schedule.backoff_max, self._rng))
                continue
            self.stats["connected"] += 1
            return True
        return False

    async def _resolve(self, peer: PeerId) -> list[Multiaddr]:
        """The dialable addresses of ``peer`` (``/dnsaddr`` entries resolved), without ``/p2p``."""
        assert self.resolver is not None
        out: list[Multiaddr] = []
        failures: list[str] = []
        for addr in self.targets[peer]:
            if not is_dnsaddr(addr):
                out.append(addr)
                continue
            try:
                resolved = await self.resolver.resolve(addr)
            except MycelError as exc:
                failures.append(str(exc))
                continue
            for found in resolved:
                base, owner = split_peer_id(found)
                if owner in (None, peer) and base not in out:
                    out.append(base)
        if not out:
            raise _Unresolved(f"no address for bootstrap peer {peer}: {'; '.join(failures)}")
        return out


class _Unresolved(MycelError):
    """A bootstrap peer's ``/dnsaddr`` entries resolved to nothing."""


__all__ = [
    "ATTEMPTS",
    "BACKOFF",
    "BACKOFF_MAX",
    "Bootstrap",
    "BootstrapRoundDone",
    "BootstrapSchedule",
    "CONCURRENCY",
    "DIAL_TIMEOUT",
    "IPFS_BOOTSTRAP_PEERS",
    "MIN_PEERS",
    "backoff_delay",
    "bootstrap_targets",
]
