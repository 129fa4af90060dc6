"""Peer and content routing: how a host finds a peer's addresses from its id, and who provides a key.

Routers are small interfaces so that several can plug in (the Kademlia DHT, later delegated HTTP
routing). A host uses every service that implements :class:`PeerRouting`: ``host.find_peer(peer)``
asks them in order, and ``host.connect(peer_id)`` with no known address does so before dialing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mycel.core.errors import DialError

if TYPE_CHECKING:
    from multiaddr import Multiaddr

    from mycel.core.peer_id import PeerId


class PeerNotFound(DialError):
    """No router found addresses for the peer (or the host has no router)."""


@dataclass(frozen=True)
class ProviderRecord:
    """A peer that provides a key, with the addresses the router learned for it."""

    peer: PeerId
    """The provider."""
    addrs: tuple[Multiaddr, ...] = ()
    """Its addresses, as the router returned them (may be empty: then find_peer it)."""


@runtime_checkable
class PeerRouting(Protocol):
    """Finds a peer's addresses from its id."""

    async def find_peer(self, peer: PeerId) -> list[Multiaddr]:
        """Addresses of ``peer`` (without ``/p2p``); empty when not found. Raise only on a bug."""
        ...


@runtime_checkable
class ContentRouting(Protocol):
    """Announces and finds providers of keys (CIDs' multihashes)."""

    async def provide(self, key: bytes) -> None:
        """Announce that this host provides ``key``."""
        ...

    def find_providers(self, key: bytes, *, limit: int = 20) -> AsyncIterator[ProviderRecord]:
        """Providers of ``key``, each yielded as soon as it is found, at most ``limit``."""
        ...


__all__ = ["ContentRouting", "PeerNotFound", "PeerRouting", "ProviderRecord"]
