"""Peer ids: the multihash of a peer's ``PublicKey`` protobuf (peer-ids spec).

Keys whose protobuf is at most 42 bytes (Ed25519, secp256k1) are inlined with the identity
multihash; larger ones (RSA, ECDSA) are hashed with sha2-256.
"""

from __future__ import annotations

import hashlib
from typing import Final, final

from mycel.core.errors import DecodeError
from mycel.core.keys import PublicKey, public_key_from_protobuf
from mycel.core.multibase import b32encode, b58decode, b58encode, multibase_decode
from mycel.core.varint import decode_uvarint, encode_uvarint

__all__ = ["PeerId", "MAX_INLINE_KEY_LENGTH"]

MAX_INLINE_KEY_LENGTH: Final = 42
_IDENTITY: Final = 0x00
_SHA2_256: Final = 0x12
_CIDV1: Final = 0x01
_LIBP2P_KEY: Final = 0x72


def _parse_multihash(data: bytes) -> tuple[int, int]:
    """Validate a peer id multihash; return ``(code, digest offset)``."""
    res = decode_uvarint(data)
    if res is None:
        raise DecodeError("empty or truncated peer id multihash")
    code, pos = res
    res = decode_uvarint(data, pos)
    if res is None:
        raise DecodeError("truncated peer id multihash length")
    length, pos = res
    if len(data) - pos != length:
        raise DecodeError(f"peer id multihash declares {length} digest bytes, has {len(data) - pos}")
    if code == _IDENTITY:
        if length > MAX_INLINE_KEY_LENGTH:
            raise DecodeError(f"identity peer id longer than {MAX_INLINE_KEY_LENGTH} bytes")
    elif code == _SHA2_256:
        if length != 32:
            raise DecodeError("sha2-256 peer id digest must be 32 bytes")
    else:
        raise DecodeError(f"unsupported peer id multihash code 0x{code:x}")
    return code, pos


@final
class PeerId:
    """An immutable, hashable peer id, ordered by its binary form."""

    __slots__ = ("_bytes", "_b58")

    _bytes: bytes
    _b58: str | None

    def __init__(self, multihash: bytes) -> None:
        """Wrap a binary multihash; prefer :meth:`from_bytes`, which is the same and documents intent."""
        data = bytes(multihash)
        _parse_multihash(data)
        object.__setattr__(self, "_bytes", data)
        object.__setattr__(self, "_b58", None)

    @classmethod
    def from_public_key(cls, key: PublicKey) -> PeerId:
        """The id of ``key``: its ``PublicKey`` protobuf inlined (identity multihash) when at most 42 bytes
        (Ed25519, secp256k1), its sha2-256 multihash otherwise (RSA, ECDSA).
        """
        proto = key.to_protobuf()
        if len(proto) <= MAX_INLINE_KEY_LENGTH:
            mh = bytes((_IDENTITY,)) + encode_uvarint(len(proto)) + proto
        else:
            mh = bytes((_SHA2_256, 32)) + hashlib.sha256(proto).digest()
        return cls(mh)

    @classmethod
    def from_bytes(cls, data: bytes) -> PeerId:
        """Parse a binary multihash (identity ≤ 42 bytes or sha2-256); :class:`DecodeError` otherwise."""
        return cls(data)

    @classmethod
    def from_string(cls, text: str) -> PeerId:
        """Parse base58btc (``Qm…``, ``12D3KooW…``, ``16Uiu2…``) or a CIDv1 ``libp2p-key`` (``bafz…``)."""
        if not text:
            raise DecodeError("empty peer id string")
        if text[0] == "1" or text.startswith("Qm"):
            return cls(b58decode(text))
        cid = multibase_decode(text)
        res = decode_uvarint(cid)
        if res is None or res[0] != _CIDV1:
            raise DecodeError("peer id CID is not CIDv1")
        res = decode_uvarint(cid, res[1])
        if res is None or res[0] != _LIBP2P_KEY:
            raise DecodeError("peer id CID codec is not libp2p-key (0x72)")
        return cls(cid[res[1] :])

    def to_bytes(self) -> bytes:
        """The binary multihash (what ``/p2p/`` multiaddr parts and protobufs carry)."""
        return self._bytes

    def to_base58(self) -> str:
        """The base58btc text form (``12D3KooW…``, ``Qm…``): what ``str(peer_id)`` gives."""
        b58 = self._b58
        if b58 is None:
            b58 = b58encode(self._bytes)
            object.__setattr__(self, "_b58", b58)
        return b58

    def to_cid(self) -> str:
        """The CIDv1 ``libp2p-key`` text form, multibase base32 (``bafz…``)."""
        return "b" + b32encode(bytes((_CIDV1, _LIBP2P_KEY)) + self._bytes)

    def extract_public_key(self) -> PublicKey | None:
        """The key inlined in an identity-multihash id, else ``None``.

        Raises :class:`DecodeError` if the inlined bytes are not a valid key.
        """
        code, pos = _parse_multihash(self._bytes)
        if code != _IDENTITY:
            return None
        return public_key_from_protobuf(self._bytes[pos:])

    @property
    def inlines_key(self) -> bool:
        """True when the id carries its public key (an identity multihash: Ed25519, secp256k1)."""
        return self._bytes[:1] == b"\x00"

    def matches_public_key(self, key: PublicKey) -> bool:
        """True iff this is the id of ``key``."""
        return PeerId.from_public_key(key)._bytes == self._bytes

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("PeerId is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("PeerId is immutable")

    def __reduce__(self) -> tuple[type[PeerId], tuple[bytes]]:
        return (PeerId, (self._bytes,))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PeerId):
            return NotImplemented
        return self._bytes == other._bytes

    def __lt__(self, other: PeerId) -> bool:
        if not isinstance(other, PeerId):
            return NotImplemented
        return self._bytes < other._bytes

    def __le__(self, other: PeerId) -> bool:
        if not isinstance(other, PeerId):
            return NotImplemented
        return self._bytes <= other._bytes

    def __gt__(self, other: PeerId) -> bool:
        if not isinstance(other, PeerId):
            return NotImplemented
        return self._bytes > other._bytes

    def __ge__(self, other: PeerId) -> bool:
        if not isinstance(other, PeerId):
            return NotImplemented
        return self._bytes >= other._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __str__(self) -> str:
        return self.to_base58()

    def __repr__(self) -> str:
        text = self.to_base58()
        return f"<PeerId {text[:8]}…{text[-6:]}>"
