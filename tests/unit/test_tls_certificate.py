"""libp2p TLS certificates: the spec vectors, generation, every verification rule, the SignedKey DER."""

from __future__ import annotations

import datetime
import json
import pathlib
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.core.errors import DecodeError, InvalidCertificate, PeerIdMismatch
from mycel.core.identity import Identity
from mycel.core.keys import KeyType, private_key_from_protobuf
from mycel.core.peer_id import PeerId
from mycel.security.tls.certificate import (
    CERTIFICATE_VALIDITY,
    CLOCK_SKEW,
    EXTENSION_OID,
    SIGNATURE_PREFIX,
    CertificateCache,
    VerificationCache,
    decode_signed_key,
    encode_signed_key,
    generate_certificate,
    verify_certificate,
    verify_certificate_chain,
)

VECTORS: dict[str, Any] = json.loads(
    (pathlib.Path(__file__).resolve().parents[3] / "shared" / "vectors" / "vectors.json").read_text()
)
CERT_VECTORS = VECTORS["tls_certificates"]["vectors"]
RSA_KEY = private_key_from_protobuf(bytes.fromhex(VECTORS["private_keys_from_specs"]["vectors"]["rsa private key"]))
UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
IN_VECTOR_WINDOW = datetime.datetime(2024, 1, 1, tzinfo=UTC)  # the vectors are valid 1975..4096


def identity_of(kind: str) -> Identity:
    return Identity.from_private_key(RSA_KEY) if kind == "RSA" else Identity.generate(KeyType[kind])


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def build(
    *,
    extensions: list[tuple[x509.ExtensionType, bool]] = (),  # type: ignore[assignment]
    key: ec.EllipticCurvePrivateKey | None = None,
    signer: ec.EllipticCurvePrivateKey | None = None,
    issuer: str = "same",
    not_before: datetime.datetime = NOW - datetime.timedelta(hours=1),
    not_after: datetime.datetime = NOW + datetime.timedelta(hours=1),
) -> x509.Certificate:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "1")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if issuer == "same" else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(signer or key, hashes.SHA256())


def libp2p_extension(identity: Identity, key: ec.EllipticCurvePrivateKey) -> x509.UnrecognizedExtension:
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    signed = encode_signed_key(identity.public_key.to_protobuf(), identity.private_key.sign(SIGNATURE_PREFIX + spki))
    return x509.UnrecognizedExtension(EXTENSION_OID, signed)


# ---- spec vectors ------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", [v for v in CERT_VECTORS if v["valid"]], ids=lambda v: v["name"])
def test_valid_vectors(vector: dict[str, Any]) -> None:
    verified = verify_certificate_chain([bytes.fromhex(vector["cert_der_hex"])], IN_VECTOR_WINDOW)
    assert str(verified.peer_id) == vector["peer_id"]
    assert verified.peer_id == PeerId.from_public_key(verified.public_key)
    expected = PeerId.from_string(vector["peer_id"])
    assert verify_certificate(bytes.fromhex(vector["cert_der_hex"]), IN_VECTOR_WINDOW, expected).peer_id == expected


def test_invalid_vector() -> None:
    (vector,) = [v for v in CERT_VECTORS if not v["valid"]]
    with pytest.raises(InvalidCertificate, match="signature is invalid"):
        verify_certificate_chain([bytes.fromhex(vector["cert_der_hex"])], IN_VECTOR_WINDOW)


def test_vector_outside_its_window() -> None:
    early = datetime.datetime(1970, 1, 2, tzinfo=UTC)
    with pytest.raises(InvalidCertificate, match="valid from"):
        verify_certificate_chain([bytes.fromhex(CERT_VECTORS[0]["cert_der_hex"])], early)


def test_vector_peer_id_mismatch() -> None:
    other = Identity.generate().peer_id
    with pytest.raises(PeerIdMismatch) as info:
        verify_certificate_chain([bytes.fromhex(CERT_VECTORS[0]["cert_der_hex"])], IN_VECTOR_WINDOW, other)
    assert str(other) in str(info.value) and CERT_VECTORS[0]["peer_id"] in str(info.value)


# ---- generation --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Ed25519", "Secp256k1", "ECDSA", "RSA"])
def test_generate_and_verify_every_key_type(kind: str) -> None:
    identity = identity_of(kind)
    local = generate_certificate(identity.private_key, NOW)
    verified = verify_certificate_chain([local.der], NOW, identity.peer_id)
    assert verified.peer_id == identity.peer_id and verified.public_key == identity.public_key
    cert = x509.load_der_x509_certificate(local.der)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(cert.public_key().curve, ec.SECP256R1)  # type: ignore[union-attr]
    assert cert.not_valid_before_utc == NOW - CLOCK_SKEW
    assert cert.not_valid_after_utc == local.not_after == NOW + CERTIFICATE_VALIDITY
    ext = cert.extensions.get_extension_for_oid(EXTENSION_OID)
    assert not ext.critical
    assert cert.issuer == cert.subject


def test_fresh_key_and_serial_each_time() -> None:
    identity = Identity.generate()
    a, b = generate_certificate(identity.private_key, NOW), generate_certificate(identity.private_key, NOW)
    assert a.certificate.serial_number != b.certificate.serial_number
    assert a.certificate.public_key() != b.certificate.public_key()


def test_given_key_serial_and_critical_extension() -> None:
    identity = Identity.generate()
    key = ec.generate_private_key(ec.SECP256R1())
    local = generate_certificate(identity.private_key, NOW, certificate_key=key, serial=12345, critical=True)
    assert local.private_key is key and local.certificate.serial_number == 12345
    assert local.certificate.extensions.get_extension_for_oid(EXTENSION_OID).critical
    assert verify_certificate(local.der, NOW).peer_id == identity.peer_id  # critical is allowed: we know it


def test_naive_datetimes_are_refused() -> None:
    identity = Identity.generate()
    with pytest.raises(ValueError):
        generate_certificate(identity.private_key, NOW.replace(tzinfo=None))
    with pytest.raises(ValueError):
        verify_certificate(generate_certificate(identity.private_key, NOW).der, NOW.replace(tzinfo=None))


def test_validity_window() -> None:
    identity = Identity.generate()
    local = generate_certificate(identity.private_key, NOW)
    verify_certificate(local.der, NOW - CLOCK_SKEW)  # a peer whose clock is a little behind
    verify_certificate(local.der, NOW + CERTIFICATE_VALIDITY)
    with pytest.raises(InvalidCertificate, match="valid from"):
        verify_certificate(local.der, NOW - CLOCK_SKEW - datetime.timedelta(seconds=1))
    with pytest.raises(InvalidCertificate, match="valid from"):
        verify_certificate(local.der, NOW + CERTIFICATE_VALIDITY + datetime.timedelta(seconds=1))
    assert not local.expires_soon(NOW)
    assert local.expires_soon(NOW + CERTIFICATE_VALIDITY / 2)


def test_certificate_cache() -> None:
    built: list[bytes] = []
    cache: CertificateCache[str] = CertificateCache(lambda c: built.append(c.der) or "ctx", max_identities=2)
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    first, extra = cache.get(a, NOW)
    assert extra == "ctx" and cache.get(a, NOW + datetime.timedelta(hours=1))[0] is first  # reused
    renewed, _ = cache.get(a, NOW + CERTIFICATE_VALIDITY / 2)  # half the validity gone: a new one
    assert renewed is not first and len(built) == 2
    cache.get(b, NOW)
    cache.get(a, NOW + CERTIFICATE_VALIDITY / 2)  # a is now the most recently used
    cache.get(c, NOW)  # evicts b, the least recently used
    assert len(built) == 4
    cache.get(a, NOW + CERTIFICATE_VALIDITY / 2)
    assert len(built) == 4
    cache.get(b, NOW)
    assert len(built) == 5


def test_verification_cache_remembers_successes_only() -> None:
    a, b = Identity.generate(), Identity.generate()
    cert_a = generate_certificate(a.private_key, NOW)
    cert_b = generate_certificate(b.private_key, NOW)
    cache = VerificationCache(size=2)
    assert cache.verify([cert_a.der], NOW).peer_id == a.peer_id and cache.hits == 0
    assert cache.verify([cert_a.der], NOW, a.peer_id).public_key == a.public_key and cache.hits == 1
    # what depends on the moment is checked on every hit
    with pytest.raises(PeerIdMismatch):
        cache.verify([cert_a.der], NOW, b.peer_id)
    with pytest.raises(InvalidCertificate, match="valid from"):
        cache.verify([cert_a.der], NOW + CERTIFICATE_VALIDITY + datetime.timedelta(seconds=1))
    with pytest.raises(InvalidCertificate, match="exactly one"):
        cache.verify([cert_a.der, cert_b.der], NOW)
    # a failure is not remembered: a certificate that is not valid yet verifies once it is
    early = NOW - CLOCK_SKEW - datetime.timedelta(minutes=1)
    with pytest.raises(InvalidCertificate):
        cache.verify([cert_b.der], early)
    assert len(cache) == 1
    assert cache.verify([cert_b.der], NOW).peer_id == b.peer_id and len(cache) == 2
    # bounded: the least recently used goes
    cache.verify([cert_a.der], NOW)
    cert_c = generate_certificate(Identity.generate().private_key, NOW)
    cache.verify([cert_c.der], NOW)
    assert len(cache) == 2
    hits = cache.hits
    cache.verify([cert_b.der], NOW)  # was evicted: verified in full again
    assert cache.hits == hits


def test_verification_cache_with_a_parsed_certificate_and_bad_ones() -> None:
    a = Identity.generate()
    cert = generate_certificate(a.private_key, NOW)
    cache = VerificationCache()
    assert cache.verify([cert.der], NOW, parsed=cert.certificate).peer_id == a.peer_id
    forged = generate_certificate(a.private_key, NOW)  # a's key, but the extension of another host
    other = generate_certificate(Identity.generate().private_key, NOW)
    bad = build(key=forged.private_key, extensions=[(other.certificate.extensions[0].value, False)])
    for _ in range(2):  # and again: failures are not cached
        with pytest.raises(InvalidCertificate, match="signature is invalid"):
            cache.verify([der(bad)], NOW)
    with pytest.raises(ValueError):
        VerificationCache(size=0)


# ---- verification rules ------------------------------------------------------------------------


def test_chain_must_have_exactly_one_certificate() -> None:
    local = generate_certificate(Identity.generate().private_key, NOW)
    with pytest.raises(InvalidCertificate, match="exactly one"):
        verify_certificate_chain([], NOW)
    with pytest.raises(InvalidCertificate, match="exactly one"):
        verify_certificate_chain([local.der, local.der], NOW)


def test_missing_extension() -> None:
    with pytest.raises(InvalidCertificate, match="lacks the libp2p public key extension"):
        verify_certificate(der(build()), NOW)


def test_extension_signed_for_another_key() -> None:
    identity = Identity.generate()
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    cert = build(key=key, extensions=[(libp2p_extension(identity, other), False)])
    with pytest.raises(InvalidCertificate, match="signature is invalid"):
        verify_certificate(der(cert), NOW)


def test_extension_with_another_hosts_key() -> None:
    identity, impostor = Identity.generate(), Identity.generate()
    key = ec.generate_private_key(ec.SECP256R1())
    good = libp2p_extension(identity, key)
    pub, sig = decode_signed_key(good.value)
    forged = encode_signed_key(impostor.public_key.to_protobuf(), sig)  # claims impostor's key
    cert = build(key=key, extensions=[(x509.UnrecognizedExtension(EXTENSION_OID, forged), False)])
    with pytest.raises(InvalidCertificate, match="signature is invalid"):
        verify_certificate(der(cert), NOW)


@pytest.mark.parametrize("value", [b"", b"\x30\x00", b"\x04\x00", b"\x30\x04\x04\x00\x04\x00", b"\x30\x06\x04\x01\x00\x04\x01\x00"])
def test_malformed_extension(value: bytes) -> None:
    cert = build(extensions=[(x509.UnrecognizedExtension(EXTENSION_OID, value), False)])
    with pytest.raises(InvalidCertificate, match="malformed"):
        verify_certificate(der(cert), NOW)


def test_unknown_critical_extension_is_refused_and_non_critical_ignored() -> None:
    identity = Identity.generate()
    key = ec.generate_private_key(ec.SECP256R1())
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5.6"), b"\x05\x00")
    ok = build(key=key, extensions=[(libp2p_extension(identity, key), False), (unknown, False)])
    assert verify_certificate(der(ok), NOW).peer_id == identity.peer_id
    bad = build(key=key, extensions=[(libp2p_extension(identity, key), False), (unknown, True)])
    with pytest.raises(InvalidCertificate, match="unknown critical extension 1.2.3.4.5.6"):
        verify_certificate(der(bad), NOW)
    # a known critical extension is fine
    known = build(key=key, extensions=[(libp2p_extension(identity, key), False), (x509.BasicConstraints(ca=False, path_length=None), True)])
    assert verify_certificate(der(known), NOW).peer_id == identity.peer_id


def test_self_signature_must_verify() -> None:
    identity = Identity.generate()
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    signed_by_other = build(key=key, signer=other, extensions=[(libp2p_extension(identity, key), False)])
    with pytest.raises(InvalidCertificate, match="self-signature"):
        verify_certificate(der(signed_by_other), NOW)
    issuer_differs = build(key=key, issuer="someone else", extensions=[(libp2p_extension(identity, key), False)])
    with pytest.raises(InvalidCertificate, match="self-signed"):
        verify_certificate(der(issuer_differs), NOW)


def test_garbage_certificate() -> None:
    with pytest.raises(InvalidCertificate, match="does not parse"):
        verify_certificate(b"\x30\x03\x02\x01\x01", NOW)
    with pytest.raises(InvalidCertificate, match="exceeds"):
        verify_certificate(bytes(40000), NOW)


# ---- SignedKey DER -----------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [(0, 0), (1, 127), (128, 255), (256, 70000 // 5), (36, 64)])
def test_signed_key_roundtrip(sizes: tuple[int, int]) -> None:
    pub, sig = bytes(range(256)) * (sizes[0] // 256 + 1), b"\xaa" * sizes[1]
    pub = pub[: sizes[0]]
    encoded = encode_signed_key(pub, sig)
    assert decode_signed_key(encoded) == (pub, sig)


def test_signed_key_matches_a_vector() -> None:
    cert = x509.load_der_x509_certificate(bytes.fromhex(CERT_VECTORS[0]["cert_der_hex"]))
    raw = cert.extensions.get_extension_for_oid(EXTENSION_OID).value.value  # type: ignore[attr-defined]
    pub, sig = decode_signed_key(raw)
    assert encode_signed_key(pub, sig) == raw


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "missing SEQUENCE"),
        (b"\x31\x00", "tag"),
        (b"\x30", "truncated length"),
        (b"\x30\x80\x04\x00\x04\x00\x00\x00", "indefinite"),
        (b"\x30\x81\x06\x04\x00\x04\x00", "non-minimal"),
        (b"\x30\x82\x00\x04\x04\x00\x04\x00", "non-minimal"),
        (b"\x30\x85\x00\x00\x00\x00\x04", "uses 5 bytes"),
        (b"\x30\x05\x04\x00\x04\x00", "truncated"),
        (b"\x30\x04\x04\x00\x04\x00\x00", "trailing bytes"),
        (b"\x30\x02\x04\x00", "missing signature"),
        (b"\x30\x04\x02\x00\x04\x00", "tag 0x02"),
        (b"\x30\x06\x04\x00\x04\x00\x04\x00", "unexpected fields"),
        (b"\x30\x04\x04\x05\x04\x00", "truncated"),
        (b"\x30" + b"\x83\x01\x00\x00" + bytes(65536), "exceeds"),
    ],
)
def test_signed_key_is_strict_der(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_signed_key(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_signed_key_decoder(data: bytes) -> None:
    try:
        pub, sig = decode_signed_key(data)
    except DecodeError:
        return
    assert encode_signed_key(pub, sig) == data  # anything accepted is canonical DER


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.binary(max_size=600))
def test_fuzz_signed_key_roundtrip(pub: bytes, sig: bytes) -> None:
    assert decode_signed_key(encode_signed_key(pub, sig)) == (pub, sig)


_FUZZ_ID = Identity.generate()
_FUZZ_CERT = generate_certificate(_FUZZ_ID.private_key, NOW).der


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_mutated_certificates(data: st.DataObject) -> None:
    cert = bytearray(_FUZZ_CERT)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(cert) - 1))
        cert[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(cert)))
    try:
        verified = verify_certificate(bytes(cert[:cut] if data.draw(st.booleans()) else cert), NOW)
    except InvalidCertificate:
        return
    assert verified.peer_id == _FUZZ_ID.peer_id  # a mutation that still verifies changed nothing that matters
