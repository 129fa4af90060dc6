"""libp2p TLS certificates (tls spec): generation and verification, shared by ``/tls/1.0.0`` and QUIC.

A certificate is self-signed with a fresh ECDSA P-256 key and carries the libp2p Public Key
Extension (OID 1.3.6.1.4.1.53594.1.1)::

    SignedKey ::= SEQUENCE { publicKey OCTET STRING, signature OCTET STRING }

``publicKey`` is the host's ``PublicKey`` protobuf, ``signature`` the host key's signature over
``b"libp2p-tls-handshake:" + DER(SubjectPublicKeyInfo of the certificate key)``.

Everything here is pure: the time (and, optionally, the certificate key and serial) is passed in.
Verification failures raise :class:`~mycel.core.errors.InvalidCertificate` (or
:class:`~mycel.core.errors.PeerIdMismatch`).
"""

from __future__ import annotations

import datetime
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mycel.core.errors import DecodeError, InvalidCertificate, PeerIdMismatch
from mycel.core.identity import Identity
from mycel.core.keys import PrivateKey, PublicKey, public_key_from_protobuf
from mycel.core.peer_id import PeerId

__all__ = [
    "EXTENSION_OID",
    "SIGNATURE_PREFIX",
    "CERTIFICATE_VALIDITY",
    "CLOCK_SKEW",
    "LocalCertificate",
    "CertificateCache",
    "VerifiedPeer",
    "VerificationCache",
    "generate_certificate",
    "verify_certificate_chain",
    "encode_signed_key",
    "decode_signed_key",
]

EXTENSION_OID: Final = x509.ObjectIdentifier("1.3.6.1.4.1.53594.1.1")
SIGNATURE_PREFIX: Final = b"libp2p-tls-handshake:"
# Our certificates are valid from CLOCK_SKEW before their creation until CERTIFICATE_VALIDITY after it.
CERTIFICATE_VALIDITY: Final = datetime.timedelta(days=1)
CLOCK_SKEW: Final = datetime.timedelta(hours=1)
# Upper bound on a SignedKey we parse (an 8192-bit RSA key protobuf plus signature is ~2.1 KB).
MAX_SIGNED_KEY: Final = 16384
# Upper bound on a certificate we parse at all.
MAX_CERTIFICATE: Final = 32768
# What cryptography raises on certificates it cannot make sense of.
_PARSE_ERRORS: Final = (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion)


@dataclass(frozen=True)
class LocalCertificate:
    """Our certificate, its key, and when it stops being valid."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey
    """The certificate's own key (a fresh P-256 key by default), not the libp2p identity key."""
    der: bytes
    """The certificate, DER-encoded."""
    not_after: datetime.datetime
    """The end of its validity (timezone-aware)."""

    def expires_soon(self, now: datetime.datetime) -> bool:
        """True once less than half of the validity is left: time to make a new one."""
        return now >= self.not_after - CERTIFICATE_VALIDITY / 2


@dataclass(frozen=True)
class VerifiedPeer:
    """What a verified certificate proves: the remote's libp2p key and peer id."""

    public_key: PublicKey
    """The libp2p identity key the certificate's extension is signed with."""
    peer_id: PeerId
    """The peer id of that key."""


# --- DER for SignedKey --------------------------------------------------------------------------


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def _der_tlv(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + _der_length(len(value)) + value


def encode_signed_key(public_key: bytes, signature: bytes) -> bytes:
    """DER ``SEQUENCE { OCTET STRING public_key, OCTET STRING signature }``."""
    return _der_tlv(0x30, _der_tlv(0x04, public_key) + _der_tlv(0x04, signature))


def _read_tlv(data: bytes, pos: int, tag: int, what: str) -> tuple[bytes, int]:
    """Parse one strict-DER TLV with ``tag`` at ``pos``; return (value, position after it)."""
    end = len(data)
    if pos >= end:
        raise DecodeError(f"SignedKey: missing {what}")
    if data[pos] != tag:
        raise DecodeError(f"SignedKey: {what} has tag 0x{data[pos]:02x}, expected 0x{tag:02x}")
    pos += 1
    if pos >= end:
        raise DecodeError(f"SignedKey: truncated length of {what}")
    first = data[pos]
    pos += 1
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise DecodeError(f"SignedKey: indefinite length in {what}")
    else:
        count = first & 0x7F
        if count > 4:
            raise DecodeError(f"SignedKey: length of {what} uses {count} bytes")
        if pos + count > end:
            raise DecodeError(f"SignedKey: truncated length of {what}")
        length_bytes = data[pos : pos + count]
        pos += count
        if length_bytes[0] == 0:
            raise DecodeError(f"SignedKey: non-minimal length of {what}")
        length = int.from_bytes(length_bytes, "big")
        if length < 0x80:
            raise DecodeError(f"SignedKey: non-minimal length of {what}")
    if length > end - pos:
        raise DecodeError(f"SignedKey: {what} of {length} bytes is truncated")
    return data[pos : pos + length], pos + length


def decode_signed_key(data: bytes) -> tuple[bytes, bytes]:
    """Parse a DER SignedKey into ``(public_key_protobuf, signature)``; :class:`DecodeError` if malformed.

    Only the two fields of the spec are accepted (go's optional network cookie is not supported).
    """
    data = bytes(data)
    if len(data) > MAX_SIGNED_KEY:
        raise DecodeError(f"SignedKey of {len(data)} bytes exceeds {MAX_SIGNED_KEY}")
    body, pos = _read_tlv(data, 0, 0x30, "SEQUENCE")
    if pos != len(data):
        raise DecodeError("SignedKey: trailing bytes after the SEQUENCE")
    public_key, inner = _read_tlv(body, 0, 0x04, "publicKey")
    signature, inner = _read_tlv(body, inner, 0x04, "signature")
    if inner != len(body):
        raise DecodeError("SignedKey: unexpected fields after signature")
    return public_key, signature


# --- generation ---------------------------------------------------------------------------------


def _spki(key: ec.EllipticCurvePublicKey | object) -> bytes:
    if not hasattr(key, "public_bytes"):
        raise InvalidCertificate("certificate key cannot be serialized")
    try:
        der: bytes = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    except _PARSE_ERRORS as exc:
        raise InvalidCertificate(f"certificate key cannot be serialized: {exc}") from None
    return der


def generate_certificate(
    host_key: PrivateKey,
    now: datetime.datetime,
    *,
    certificate_key: ec.EllipticCurvePrivateKey | None = None,
    serial: int | None = None,
    validity: datetime.timedelta = CERTIFICATE_VALIDITY,
    critical: bool = False,
) -> LocalCertificate:
    """A fresh self-signed certificate for ``host_key``, valid from ``now - CLOCK_SKEW`` to ``now + validity``.

    ``certificate_key`` (default: a new P-256 key) and ``serial`` (default: random) may be given.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    key = certificate_key if certificate_key is not None else ec.generate_private_key(ec.SECP256R1())
    signature = host_key.sign(SIGNATURE_PREFIX + _spki(key.public_key()))
    extension = encode_signed_key(host_key.public_key.to_protobuf(), signature)
    serial = serial if serial is not None else x509.random_serial_number()
    name = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, str(serial))])
    not_after = now + validity
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.UnrecognizedExtension(EXTENSION_OID, extension), critical=critical)
        .sign(key, hashes.SHA256())
    )
    return LocalCertificate(cert, key, cert.public_bytes(serialization.Encoding.DER), not_after)


T = TypeVar("T")


class CertificateCache(Generic[T]):
    """Our current certificate per identity (plus whatever ``build`` derives from it, e.g. an SSL context).

    A new certificate is made once half the validity of the current one has passed. At most
    ``max_identities`` identities are remembered; the least recently used is forgotten beyond that.
    """

    def __init__(self, build: Callable[[LocalCertificate], T], *, max_identities: int = 8) -> None:
        self._build = build
        self._max = max_identities
        self._entries: OrderedDict[PeerId, tuple[LocalCertificate, T]] = OrderedDict()

    def get(self, identity: Identity, now: datetime.datetime) -> tuple[LocalCertificate, T]:
        """The current certificate of ``identity`` and what ``build`` made of it; a new one (and a new
        ``build``) when there is none yet or it expires soon. ``now``: timezone-aware.
        """
        entry = self._entries.get(identity.peer_id)
        if entry is None or entry[0].expires_soon(now):
            cert = generate_certificate(identity.private_key, now)
            entry = (cert, self._build(cert))
            self._entries[identity.peer_id] = entry
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        self._entries.move_to_end(identity.peer_id)
        return entry


# --- verification -------------------------------------------------------------------------------


def verify_certificate(
    cert_der: bytes, now: datetime.datetime, expected_peer: PeerId | None = None
) -> VerifiedPeer:
    """Verify one peer certificate (DER) per the libp2p TLS spec; see :func:`verify_certificate_chain`."""
    verified, not_before, not_after = _verify_signed(cert_der, now)
    return _check_peer(verified, not_before, not_after, now, expected_peer)


def _check_peer(
    verified: VerifiedPeer,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    now: datetime.datetime,
    expected_peer: PeerId | None,
) -> VerifiedPeer:
    if not not_before <= now <= not_after:
        raise InvalidCertificate(
            f"certificate valid from {not_before.isoformat()} to {not_after.isoformat()}, not at {now.isoformat()}"
        )
    if expected_peer is not None and verified.peer_id != expected_peer:
        raise PeerIdMismatch(f"expected peer {expected_peer}, the certificate authenticates {verified.peer_id}")
    return verified


def _verify_signed(
    cert_der: bytes, now: datetime.datetime, cert: x509.Certificate | None = None
) -> tuple[VerifiedPeer, datetime.datetime, datetime.datetime]:
    """Everything about a certificate that does not depend on the time or the expected peer: it parses,
    is validly self-signed, has the libp2p extension once with a valid signature and no unknown critical
    extension. Returns the peer and the validity period (checked against ``now`` first: an expired
    certificate is refused before its signatures are checked). ``cert`` is ``cert_der`` already parsed."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if len(cert_der) > MAX_CERTIFICATE:
        raise InvalidCertificate(f"certificate of {len(cert_der)} bytes exceeds {MAX_CERTIFICATE}")
    try:
        if cert is None:
            cert = x509.load_der_x509_certificate(bytes(cert_der))
        not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
        cert_key = cert.public_key()
    except _PARSE_ERRORS as exc:
        raise InvalidCertificate(f"certificate does not parse: {exc!r}") from None
    if not not_before <= now <= not_after:
        raise InvalidCertificate(
            f"certificate valid from {not_before.isoformat()} to {not_after.isoformat()}, not at {now.isoformat()}"
        )
    try:
        cert.verify_directly_issued_by(cert)
    except _CryptoInvalidSignature:
        raise InvalidCertificate("certificate self-signature is invalid") from None
    except _PARSE_ERRORS as exc:
        raise InvalidCertificate(f"certificate is not validly self-signed: {exc!r}") from None
    try:
        extensions = list(cert.extensions)
    except _PARSE_ERRORS as exc:  # a malformed known extension
        raise InvalidCertificate(f"certificate extensions do not parse: {exc!r}") from None
    signed_key: bytes | None = None
    for ext in extensions:
        if ext.oid == EXTENSION_OID:
            if signed_key is not None:
                raise InvalidCertificate("certificate has the libp2p extension twice")
            value = ext.value
            if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - cryptography never knows it
                raise InvalidCertificate("libp2p extension parsed as a known extension")
            signed_key = value.value
        elif ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
            raise InvalidCertificate(f"certificate has an unknown critical extension {ext.oid.dotted_string}")
    if signed_key is None:
        raise InvalidCertificate("certificate lacks the libp2p public key extension")
    try:
        key_protobuf, signature = decode_signed_key(signed_key)
        public_key = public_key_from_protobuf(key_protobuf)
    except DecodeError as exc:
        raise InvalidCertificate(f"libp2p extension is malformed: {exc}") from None
    if not public_key.verify(SIGNATURE_PREFIX + _spki(cert_key), signature):
        raise InvalidCertificate("libp2p extension signature is invalid")
    return VerifiedPeer(public_key, PeerId.from_public_key(public_key)), not_before, not_after


class VerificationCache:
    """Certificates that verified recently, by their DER bytes (at most ``size``, least recently used
    forgotten first).

    The same bytes verify the same way, and libp2p implementations present one certificate for many
    connections (a day or more), so a peer that connects again skips the parsing and both signature
    checks; what depends on the moment is checked every time: the validity period and the expected peer
    id. (The TLS handshake's CertificateVerify still proves the peer holds the certificate's key.)
    Failures are not remembered.
    """

    def __init__(self, size: int = 256) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._size = size
        self._entries: OrderedDict[bytes, tuple[VerifiedPeer, datetime.datetime, datetime.datetime]] = OrderedDict()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def verify(
        self,
        chain: Sequence[bytes],
        now: datetime.datetime,
        expected_peer: PeerId | None = None,
        *,
        parsed: x509.Certificate | None = None,
    ) -> VerifiedPeer:
        """:func:`verify_certificate_chain`, remembering success. ``parsed``: ``chain[0]`` already parsed."""
        if len(chain) != 1:
            raise InvalidCertificate(f"expected exactly one certificate, got {len(chain)}")
        der = bytes(chain[0])
        entry = self._entries.get(der)
        if entry is None:
            entry = _verify_signed(der, now, parsed)
            self._entries[der] = entry
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)
        else:
            self.hits += 1
            self._entries.move_to_end(der)
        return _check_peer(*entry, now, expected_peer)


def verify_certificate_chain(
    chain: Sequence[bytes], now: datetime.datetime, expected_peer: PeerId | None = None
) -> VerifiedPeer:
    """Verify a peer's chain (DER certificates, leaf first) and return its key and peer id.

    Exactly one certificate; valid at ``now``; self-signature valid; the libp2p extension present with
    a valid signature; no unknown critical extension. If ``expected_peer`` is given and differs,
    raises :class:`PeerIdMismatch`; anything else raises :class:`InvalidCertificate`.
    """
    if len(chain) != 1:
        raise InvalidCertificate(f"expected exactly one certificate, got {len(chain)}")
    return verify_certificate(chain[0], now, expected_peer)
