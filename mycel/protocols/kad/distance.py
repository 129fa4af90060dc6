"""The Kademlia keyspace: 256-bit keys (SHA-256 of a peer id's bytes or of a record/provider key), XOR
distance and common prefix length. Pure functions; every other kad part uses these."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mycel.core.peer_id import PeerId

KEY_BITS = 256


def kad_key(data: bytes) -> int:
    """The keyspace position of ``data`` (a peer id's bytes, a record key, a multihash): SHA-256, as an int."""
    return int.from_bytes(hashlib.sha256(data).digest(), "big")


def peer_key(peer: PeerId) -> int:
    """The keyspace position of a peer (SHA-256 of its id's bytes)."""
    return kad_key(peer.to_bytes())


def distance(a: int, b: int) -> int:
    """XOR distance of two keyspace positions."""
    return a ^ b


def common_prefix_length(a: int, b: int) -> int:
    """How many leading bits ``a`` and ``b`` share (256 when equal)."""
    return KEY_BITS - (a ^ b).bit_length()


__all__ = ["KEY_BITS", "common_prefix_length", "distance", "kad_key", "peer_key"]
