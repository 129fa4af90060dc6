"""The few multibase encodings libp2p text forms need: base58btc, base32 (RFC 4648, no padding).

Decoders raise :class:`~mycel.core.errors.DecodeError` on any character outside the alphabet.
"""

from __future__ import annotations

import base64
import binascii

from mycel.core.errors import DecodeError

BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(BASE58_ALPHABET)}
# 58**10 fits in 64 bits: convert ten digits per big-int division instead of one.
_B58_CHUNK = 58**10


def b58encode(data: bytes) -> str:
    """base58btc (Bitcoin alphabet); each leading zero byte becomes a ``1``."""
    stripped = data.lstrip(b"\0")
    zeros = len(data) - len(stripped)
    num = int.from_bytes(stripped, "big")
    digits: list[str] = []
    while num:
        num, chunk = divmod(num, _B58_CHUNK)
        for _ in range(10):
            chunk, d = divmod(chunk, 58)
            digits.append(BASE58_ALPHABET[d])
    text = "".join(reversed(digits)).lstrip("1")
    return "1" * zeros + text


def b58decode(text: str) -> bytes:
    """Decode base58btc (leading ``1`` characters are zero bytes); DecodeError on a character outside
    the bitcoin alphabet."""
    stripped = text.lstrip("1")
    zeros = len(text) - len(stripped)
    num = 0
    try:
        for c in stripped:
            num = num * 58 + _B58_INDEX[c]
    except KeyError as exc:
        raise DecodeError(f"invalid base58 character {exc.args[0]!r}") from None
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\0" * zeros + body


def b32encode(data: bytes) -> str:
    """RFC 4648 base32, lower case, no padding (multibase ``b``)."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def b32decode(text: str) -> bytes:
    """Decode unpadded RFC 4648 base32, either case."""
    if len(text) % 8 in (1, 3, 6):
        raise DecodeError("invalid base32 length")
    padded = text.upper() + "=" * (-len(text) % 8)
    try:
        return base64.b32decode(padded)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"invalid base32: {exc}") from None


def multibase_decode(text: str) -> bytes:
    """Decode a multibase string (``b``/``B`` base32, ``z`` base58btc, ``f``/``F`` base16,
    ``m`` base64, ``u`` base64url)."""
    if not text:
        raise DecodeError("empty multibase string")
    prefix, body = text[0], text[1:]
    try:
        if prefix in "bB":
            return b32decode(body)
        if prefix == "z":
            return b58decode(body)
        if prefix in "fF":
            return bytes.fromhex(body)
        if prefix in "mu":
            if "=" in body:
                raise DecodeError("padded base64 in multibase")
            altchars = b"-_" if prefix == "u" else b"+/"
            return base64.b64decode(body + "=" * (-len(body) % 4), altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"invalid multibase body: {exc}") from None
    raise DecodeError(f"unsupported multibase prefix {prefix!r}")
