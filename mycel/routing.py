"""Peer and content routing: how a host finds a peer's addresses from its id, and who provides a key.

Routers are small interfaces so that several can plug in (the Kademlia DHT, later delegated HTTP
routing). A host uses every service that implements :class:`PeerRouting`: ``host.find_peer(peer)``
asks them in order, and ``host.connect(peer_id)`` with no known address does so before dialing.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, Union, runtime_checkable

from mycel.core.errors import DecodeError, DialError
from mycel.core.varint import decode_uvarint

if TYPE_CHECKING:
    from multiaddr import Multiaddr
    from multiformats import CID

    from mycel.core.peer_id import PeerId

Content: TypeAlias = Union["CID", str, bytes]
"""What content routing takes: a CID (``multiformats.CID``), its text (``Qm…``, ``bafy…``), or a
multihash as bytes. Providers are keyed by the CID's **multihash** (as go, js and py do: a CIDv0 and the
CIDv1 of the same content share their providers); CIDs are parsed by the ``multiformats`` package."""


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
    """Announces and finds providers of content (keyed by CIDs' multihashes, see :func:`content_key`)."""

    async def provide(self, content: Content) -> Any:
        """Announce that this host provides ``content``."""
        ...

    def find_providers(self, content: Content, *, limit: int = 20) -> AsyncIterator[ProviderRecord]:
        """Providers of ``content``, each yielded as soon as it is found, at most ``limit``."""
        ...


def content_key(content: Content) -> bytes:
    """The DHT key of ``content``: the multihash of a CID (object or text), or ``content`` itself when
    it is bytes holding a well-formed multihash. Raises :class:`~mycel.core.errors.DecodeError` otherwise."""
    if isinstance(content, (bytes, bytearray, memoryview)):
        data = bytes(content)
        # a multihash is <code varint><length varint><digest>: checked here, in microseconds
        code = decode_uvarint(data)
        size = decode_uvarint(data, code[1]) if code is not None else None
        if size is None or size[0] == 0 or len(data) - size[1] != size[0]:
            raise DecodeError(f"not a multihash: {data[:8].hex()}…")
        return data
    if isinstance(content, str):
        return _cid_text_key(content)
    from multiformats import CID

    if isinstance(content, CID):
        return bytes(content.digest)
    raise TypeError(f"expected a CID, its text or a multihash, got {type(content).__name__}")


@functools.lru_cache(maxsize=1024)
def _cid_text_key(text: str) -> bytes:
    """A CID's text to its multihash (parsing costs ~0.3 ms: the same CIDs come back, so keep 1024)."""
    from multiformats import CID  # 30 ms to import: only for hosts that use content routing

    try:
        return bytes(CID.decode(text).digest)
    except (ValueError, KeyError) as exc:
        raise DecodeError(f"{text!r} is not a CID ({exc})") from None


__all__ = ["Content", "ContentRouting", "content_key", "PeerNotFound", "PeerRouting", "ProviderRecord"]
