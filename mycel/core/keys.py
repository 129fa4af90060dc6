"""libp2p identity keys: Ed25519, RSA, secp256k1, ECDSA (peer-ids spec, RFC 0001).

The ``PublicKey`` / ``PrivateKey`` protobufs are hand-encoded, so the bytes that peer ids and
signatures are computed over are deterministic (field order, minimal varints, no extra fields).
``mycel/core/pb/crypto_keys.proto`` documents the same schema.

Decoders of untrusted bytes raise only :class:`~mycel.core.errors.DecodeError`; ``verify`` never
raises on a bad signature, it returns ``False``.
"""

from __future__ import annotations

import enum
import hmac
from abc import ABC, abstractmethod
from typing import Final

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError as NaclCryptoError

from mycel.core.errors import DecodeError
from mycel.core.varint import decode_uvarint, encode_uvarint

__all__ = [
    "KeyType",
    "PublicKey",
    "PrivateKey",
    "Ed25519PublicKey",
    "Ed25519PrivateKey",
    "RsaPublicKey",
    "RsaPrivateKey",
    "Secp256k1PublicKey",
    "Secp256k1PrivateKey",
    "EcdsaPublicKey",
    "EcdsaPrivateKey",
    "generate_private_key",
    "public_key_from_protobuf",
    "private_key_from_protobuf",
    "MIN_RSA_BITS",
    "MAX_RSA_BITS",
]

MIN_RSA_BITS: Final = 2048
MAX_RSA_BITS: Final = 8192
# Upper bound on a key protobuf we are willing to parse (an 8192-bit RSA private key is ~4.7 KB).
MAX_KEY_PROTOBUF: Final = 16384

_SECP256K1_ORDER: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_ECDSA_CURVES: Final = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_VERIFY_ERRORS = (_CryptoInvalidSignature, ValueError, TypeError, OverflowError)
_NACL_VERIFY_ERRORS = (NaclCryptoError, ValueError, TypeError)
_PARSE_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, OverflowError)


class KeyType(enum.IntEnum):
    """The key types of the libp2p ``KeyType`` protobuf enum; the values are the wire numbers."""

    RSA = 0
    Ed25519 = 1
    Secp256k1 = 2
    ECDSA = 3


# --- protobuf (hand-encoded, deterministic) ----------------------------------------------------


def _encode_key_message(key_type: KeyType, data: bytes) -> bytes:
    return b"\x08" + encode_uvarint(int(key_type)) + b"\x12" + encode_uvarint(len(data)) + data


def _decode_key_message(data: bytes) -> tuple[KeyType, bytes]:
    """Parse ``{required KeyType Type = 1; required bytes Data = 2;}``; unknown fields are skipped."""
    if len(data) > MAX_KEY_PROTOBUF:
        raise DecodeError(f"key protobuf of {len(data)} bytes exceeds {MAX_KEY_PROTOBUF}")
    key_type: int | None = None
    key_data: bytes | None = None
    pos = 0
    end = len(data)
    while pos < end:
        res = decode_uvarint(data, pos)
        if res is None:
            raise DecodeError("truncated key protobuf tag")
        tag, pos = res
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise DecodeError("key protobuf field number 0")
        if wire == 0:
            res = decode_uvarint(data, pos)
            if res is None:
                raise DecodeError("truncated key protobuf varint")
            value, pos = res
            if field == 1:
                key_type = value
        elif wire == 2:
            res = decode_uvarint(data, pos)
            if res is None:
                raise DecodeError("truncated key protobuf length")
            length, pos = res
            if pos + length > end:
                raise DecodeError("truncated key protobuf bytes field")
            if field == 2:
                key_data = bytes(data[pos : pos + length])
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise DecodeError("truncated key protobuf fixed field")
        else:
            raise DecodeError(f"unsupported protobuf wire type {wire} in key")
        if field in (1, 2) and wire != (0 if field == 1 else 2):
            raise DecodeError(f"key protobuf field {field} has wire type {wire}")
    if key_type is None or key_data is None:
        raise DecodeError("key protobuf lacks Type or Data")
    try:
        return KeyType(key_type), key_data
    except ValueError:
        raise DecodeError(f"unsupported key type {key_type}") from None


# --- abstract classes ---------------------------------------------------------------------------


class PublicKey(ABC):
    """A public identity key. Hashable; equal when type and ``Data`` bytes are equal."""

    __slots__ = ("_raw",)
    _raw: bytes

    @property
    @abstractmethod
    def key_type(self) -> KeyType:
        """Which kind of key this is."""

    def to_bytes(self) -> bytes:
        """The raw ``Data`` field of the ``PublicKey`` protobuf."""
        return self._raw

    def to_protobuf(self) -> bytes:
        """The deterministic ``PublicKey`` protobuf (what peer ids are derived from)."""
        return _encode_key_message(self.key_type, self._raw)

    @abstractmethod
    def verify(self, data: bytes, signature: bytes) -> bool:
        """True iff ``signature`` is valid for ``data``; never raises on a bad signature."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self.key_type == other.key_type and self._raw == other._raw

    def __hash__(self) -> int:
        return hash((int(self.key_type), self._raw))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._raw[:8].hex()}…>"


class PrivateKey(ABC):
    """A private identity key. ``repr`` never shows secret material."""

    __slots__ = ()

    @property
    @abstractmethod
    def key_type(self) -> KeyType:
        """Which kind of key this is."""

    @property
    @abstractmethod
    def public_key(self) -> PublicKey:
        """The matching public key."""

    @abstractmethod
    def sign(self, data: bytes) -> bytes:
        """A signature over ``data`` that the public key's ``verify`` accepts (the scheme is the key type's)."""

    @abstractmethod
    def to_bytes(self) -> bytes:
        """The raw ``Data`` field of the ``PrivateKey`` protobuf."""

    def to_protobuf(self) -> bytes:
        """The deterministic ``PrivateKey`` protobuf (what key files hold). Secret material: keep it private."""
        return _encode_key_message(self.key_type, self.to_bytes())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivateKey):
            return NotImplemented
        return self.key_type == other.key_type and hmac.compare_digest(self.to_bytes(), other.to_bytes())

    def __hash__(self) -> int:
        return hash(self.public_key)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} public={self.public_key!r}>"


# --- Ed25519 ------------------------------------------------------------------------------------


class Ed25519PublicKey(PublicKey):
    """Ed25519; ``Data`` is the 32-byte public key."""

    __slots__ = ("_key",)

    def __init__(self, key: ed25519.Ed25519PublicKey) -> None:
        self._key = key
        self._raw = key.public_bytes_raw()

    @classmethod
    def from_bytes(cls, data: bytes) -> Ed25519PublicKey:
        """Parse the 32-byte public key; raises DecodeError otherwise."""
        if len(data) != 32:
            raise DecodeError(f"Ed25519 public key must be 32 bytes, got {len(data)}")
        try:
            return cls(ed25519.Ed25519PublicKey.from_public_bytes(data))
        except _PARSE_ERRORS as exc:
            raise DecodeError(f"invalid Ed25519 public key: {exc}") from None

    @property
    def key_type(self) -> KeyType:
        return KeyType.Ed25519

    def verify(self, data: bytes, signature: bytes) -> bool:
        # libsodium: ~37 us per check here against OpenSSL's ~58 us (pubsub verifies every message)
        if len(signature) != 64:
            return False
        try:
            crypto_sign_open(bytes(signature) + bytes(data), self._raw)
        except _NACL_VERIFY_ERRORS:
            return False
        return True


class Ed25519PrivateKey(PrivateKey):
    """Ed25519; ``Data`` is ``seed||public key`` (64 bytes)."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key
        self._public = Ed25519PublicKey(key.public_key())

    @classmethod
    def generate(cls) -> Ed25519PrivateKey:
        """A fresh random key."""
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519PrivateKey:
        """The key for a 32-byte RFC 8032 seed (go's ``ed25519.NewKeyFromSeed``)."""
        if len(seed) != 32:
            raise ValueError(f"Ed25519 seed must be 32 bytes, got {len(seed)}")
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    @classmethod
    def from_bytes(cls, data: bytes) -> Ed25519PrivateKey:
        """Parse ``seed||pub`` (64 B) or the legacy ``seed||pub||pub`` (96 B, both copies equal)."""
        if len(data) == 96:
            if not hmac.compare_digest(data[32:64], data[64:96]):
                raise DecodeError("legacy 96-byte Ed25519 key has two different public keys")
            data = data[:64]
        if len(data) != 64:
            raise DecodeError(f"Ed25519 private key must be 64 bytes, got {len(data)}")
        key = cls(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(data[:32])))
        if not hmac.compare_digest(key._public.to_bytes(), data[32:]):
            raise DecodeError("Ed25519 private key does not match its embedded public key")
        return key

    @property
    def key_type(self) -> KeyType:
        return KeyType.Ed25519

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._public

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def to_bytes(self) -> bytes:
        return self._key.private_bytes_raw() + self._public.to_bytes()


# --- RSA ----------------------------------------------------------------------------------------


def _check_rsa_bits(bits: int) -> None:
    if bits < MIN_RSA_BITS or bits > MAX_RSA_BITS:
        raise DecodeError(f"RSA key of {bits} bits outside [{MIN_RSA_BITS}, {MAX_RSA_BITS}]")


class RsaPublicKey(PublicKey):
    """RSA; ``Data`` is DER SubjectPublicKeyInfo; signatures are PKCS#1 v1.5 over SHA-256."""

    __slots__ = ("_key",)

    def __init__(self, key: rsa.RSAPublicKey) -> None:
        self._key = key
        self._raw = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    @classmethod
    def from_bytes(cls, data: bytes) -> RsaPublicKey:
        """Parse DER SubjectPublicKeyInfo; raises DecodeError if invalid, not RSA, or outside 2048-8192 bits."""
        try:
            key = serialization.load_der_public_key(bytes(data))
        except _PARSE_ERRORS as exc:
            raise DecodeError(f"invalid RSA public key: {exc}") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise DecodeError("RSA key data holds a non-RSA key")
        _check_rsa_bits(key.key_size)
        return cls(key)

    @property
    def key_type(self) -> KeyType:
        return KeyType.RSA

    def verify(self, data: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        except _VERIFY_ERRORS:
            return False
        return True


class RsaPrivateKey(PrivateKey):
    """RSA; ``Data`` is PKCS#1 DER (``RSAPrivateKey``)."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key
        self._public = RsaPublicKey(key.public_key())

    @classmethod
    def generate(cls, bits: int = 2048) -> RsaPrivateKey:
        """A fresh key of ``bits`` bits (public exponent 65537); raises ValueError outside 2048-8192 bits."""
        if bits < MIN_RSA_BITS or bits > MAX_RSA_BITS:
            raise ValueError(f"RSA key size must be in [{MIN_RSA_BITS}, {MAX_RSA_BITS}], got {bits}")
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def from_bytes(cls, data: bytes) -> RsaPrivateKey:
        """Parse a DER private key; raises DecodeError if invalid, not RSA, or outside 2048-8192 bits."""
        try:
            key = serialization.load_der_private_key(bytes(data), password=None)
        except _PARSE_ERRORS as exc:
            raise DecodeError(f"invalid RSA private key: {exc}") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise DecodeError("RSA key data holds a non-RSA key")
        _check_rsa_bits(key.key_size)
        return cls(key)

    @property
    def key_type(self) -> KeyType:
        return KeyType.RSA

    @property
    def public_key(self) -> RsaPublicKey:
        return self._public

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def to_bytes(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )


# --- ECDSA helpers ------------------------------------------------------------------------------

_deterministic_ecdsa: bool | None = None  # probed once: RFC 6979 signing needs OpenSSL >= 3.2


def _ecdsa_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    global _deterministic_ecdsa
    if _deterministic_ecdsa is not False:
        try:
            sig = key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        except (TypeError, UnsupportedAlgorithm):
            _deterministic_ecdsa = False
        else:
            _deterministic_ecdsa = True
            return sig
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _ecdsa_verify(key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except _VERIFY_ERRORS:
        return False
    return True


# --- secp256k1 ----------------------------------------------------------------------------------


class Secp256k1PublicKey(PublicKey):
    """secp256k1; ``Data`` is the 33-byte compressed point (65-byte uncompressed is accepted)."""

    __slots__ = ("_key",)

    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        self._key = key
        self._raw = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)

    @classmethod
    def from_bytes(cls, data: bytes) -> Secp256k1PublicKey:
        """Parse a 33-byte compressed or 65-byte uncompressed point; raises DecodeError otherwise."""
        if not (len(data) == 33 and data[0] in (2, 3)) and not (len(data) == 65 and data[0] == 4):
            raise DecodeError("secp256k1 public key must be a 33-byte compressed or 65-byte uncompressed point")
        try:
            return cls(ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), bytes(data)))
        except _PARSE_ERRORS as exc:
            raise DecodeError(f"invalid secp256k1 public key: {exc}") from None

    @property
    def key_type(self) -> KeyType:
        return KeyType.Secp256k1

    def verify(self, data: bytes, signature: bytes) -> bool:
        return _ecdsa_verify(self._key, data, signature)


class Secp256k1PrivateKey(PrivateKey):
    """secp256k1; ``Data`` is the 32-byte scalar. Signatures are DER ECDSA/SHA-256 with low S."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SECP256K1):
            raise ValueError("not a secp256k1 key")
        self._key = key
        self._public = Secp256k1PublicKey(key.public_key())

    @classmethod
    def generate(cls) -> Secp256k1PrivateKey:
        """A fresh random key."""
        return cls(ec.generate_private_key(ec.SECP256K1()))

    @classmethod
    def from_bytes(cls, data: bytes) -> Secp256k1PrivateKey:
        """Parse the 32-byte big-endian scalar; raises DecodeError if the length or the value is out of range."""
        if len(data) != 32:
            raise DecodeError(f"secp256k1 private key must be 32 bytes, got {len(data)}")
        scalar = int.from_bytes(data, "big")
        if not 0 < scalar < _SECP256K1_ORDER:
            raise DecodeError("secp256k1 private key out of range")
        return cls(ec.derive_private_key(scalar, ec.SECP256K1()))

    @property
    def key_type(self) -> KeyType:
        return KeyType.Secp256k1

    @property
    def public_key(self) -> Secp256k1PublicKey:
        return self._public

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(_ecdsa_sign(self._key, data))
        if s > _SECP256K1_ORDER // 2:  # low-S form, as btcec produces and strict verifiers require
            s = _SECP256K1_ORDER - s
        return encode_dss_signature(r, s)

    def to_bytes(self) -> bytes:
        return self._key.private_numbers().private_value.to_bytes(32, "big")


# --- ECDSA (NIST curves) ------------------------------------------------------------------------


class EcdsaPublicKey(PublicKey):
    """ECDSA on P-256/P-384/P-521; ``Data`` is DER SubjectPublicKeyInfo; SHA-256, DER signatures."""

    __slots__ = ("_key",)

    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        self._key = key
        self._raw = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    @classmethod
    def from_bytes(cls, data: bytes) -> EcdsaPublicKey:
        """Parse DER SubjectPublicKeyInfo; raises DecodeError unless it is a P-256/P-384/P-521 key."""
        try:
            key = serialization.load_der_public_key(bytes(data))
        except _PARSE_ERRORS as exc:
            raise DecodeError(f"invalid ECDSA public key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _ECDSA_CURVES):
            raise DecodeError("ECDSA key data is not a P-256/P-384/P-521 public key")
        return cls(key)

    @property
    def key_type(self) -> KeyType:
        return KeyType.ECDSA

    def verify(self, data: bytes, signature: bytes) -> bool:
        return _ecdsa_verify(self._key, data, signature)


class EcdsaPrivateKey(PrivateKey):
    """ECDSA; ``Data`` is a DER SEC1 ``ECPrivateKey`` (PKCS#8 is accepted on input)."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, _ECDSA_CURVES):
            raise ValueError("ECDSA keys must be on P-256, P-384 or P-521")
        self._key = key
        self._public = EcdsaPublicKey(key.public_key())

    @classmethod
    def generate(cls) -> EcdsaPrivateKey:
        """A fresh random key on P-256."""
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_bytes(cls, data: bytes) -> EcdsaPrivateKey:
        """Parse a DER private key (SEC1 or PKCS#8); raises DecodeError unless it is a P-256/P-384/P-521 key."""
        try:
            key = serialization.load_der_private_key(bytes(data), password=None)
        except _PARSE_ERRORS as exc:
            raise DecodeError(f"invalid ECDSA private key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, _ECDSA_CURVES):
            raise DecodeError("ECDSA key data is not a P-256/P-384/P-521 private key")
        return cls(key)

    @property
    def key_type(self) -> KeyType:
        return KeyType.ECDSA

    @property
    def public_key(self) -> EcdsaPublicKey:
        return self._public

    def sign(self, data: bytes) -> bytes:
        return _ecdsa_sign(self._key, data)

    def to_bytes(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )


# --- module functions ---------------------------------------------------------------------------

_PUBLIC_CLASSES: Final[dict[KeyType, type[Ed25519PublicKey | RsaPublicKey | Secp256k1PublicKey | EcdsaPublicKey]]] = {
    KeyType.Ed25519: Ed25519PublicKey,
    KeyType.RSA: RsaPublicKey,
    KeyType.Secp256k1: Secp256k1PublicKey,
    KeyType.ECDSA: EcdsaPublicKey,
}
_PRIVATE_CLASSES: Final[
    dict[KeyType, type[Ed25519PrivateKey | RsaPrivateKey | Secp256k1PrivateKey | EcdsaPrivateKey]]
] = {
    KeyType.Ed25519: Ed25519PrivateKey,
    KeyType.RSA: RsaPrivateKey,
    KeyType.Secp256k1: Secp256k1PrivateKey,
    KeyType.ECDSA: EcdsaPrivateKey,
}


def generate_private_key(key_type: KeyType = KeyType.Ed25519, *, rsa_bits: int = 2048) -> PrivateKey:
    """A fresh key. RSA sizes below 2048 (or above 8192) bits raise ``ValueError``."""
    if key_type == KeyType.Ed25519:
        return Ed25519PrivateKey.generate()
    if key_type == KeyType.RSA:
        return RsaPrivateKey.generate(rsa_bits)
    if key_type == KeyType.Secp256k1:
        return Secp256k1PrivateKey.generate()
    if key_type == KeyType.ECDSA:
        return EcdsaPrivateKey.generate()
    raise ValueError(f"unknown key type {key_type!r}")


def public_key_from_protobuf(data: bytes) -> PublicKey:
    """Parse a ``PublicKey`` protobuf. Raises :class:`DecodeError` on anything invalid."""
    key_type, raw = _decode_key_message(data)
    return _PUBLIC_CLASSES[key_type].from_bytes(raw)


def private_key_from_protobuf(data: bytes) -> PrivateKey:
    """Parse a ``PrivateKey`` protobuf (legacy 96-byte Ed25519 accepted iff both pub copies match)."""
    key_type, raw = _decode_key_message(data)
    return _PRIVATE_CLASSES[key_type].from_bytes(raw)
