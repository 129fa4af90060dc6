"""Keys (peer-ids spec vectors, signatures, protobuf decoding) and Identity key files."""

from __future__ import annotations

import json
import os
import pathlib
import stat
import threading
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.core.errors import DecodeError
from mycel.core.identity import Identity
from mycel.core.keys import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
    KeyType,
    PrivateKey,
    PublicKey,
    Secp256k1PublicKey,
    generate_private_key,
    private_key_from_protobuf,
    public_key_from_protobuf,
)
from mycel.core.pb import crypto_keys_pb2
from mycel.core.varint import encode_uvarint

VECTORS: dict[str, Any] = json.loads(
    (pathlib.Path(__file__).resolve().parents[3] / "shared" / "vectors" / "vectors.json").read_text()
)
SPEC_PRIVATE = VECTORS["private_keys_from_specs"]["vectors"]
SPEC_PUBLIC = {v["name"]: v for v in VECTORS["peer_id_from_specs_pubkeys"]["vectors"]}
# private-key vector name -> public-key vector name (same key pairs in the spec)
PAIRS = {
    "ED25519 private key": "ED25519 public key",
    "secp256k1 private key": "secp256k1 public key",
    "ECDSA private key": "ECDSA public key",
    "rsa private key": "rsa public key",
}
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def spec_key(name: str) -> PrivateKey:
    return private_key_from_protobuf(bytes.fromhex(SPEC_PRIVATE[name]))


def all_keys() -> list[PrivateKey]:
    # RSA comes from the spec vector: generating 2048-bit keys in every test is slow.
    return [
        generate_private_key(KeyType.Ed25519),
        generate_private_key(KeyType.Secp256k1),
        generate_private_key(KeyType.ECDSA),
        spec_key("rsa private key"),
    ]


# --- spec vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_spec_private_key_round_trips_byte_exact(name: str) -> None:
    raw = bytes.fromhex(SPEC_PRIVATE[name])
    key = private_key_from_protobuf(raw)
    assert key.to_protobuf() == raw


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_spec_private_key_yields_spec_public_key(name: str) -> None:
    key = spec_key(name)
    pub = SPEC_PUBLIC[PAIRS[name]]
    assert key.public_key.to_protobuf().hex() == pub["pubkey_protobuf_hex"]
    assert len(key.public_key.to_protobuf()) == pub["pubkey_protobuf_len"]


@pytest.mark.parametrize("vector", list(SPEC_PUBLIC.values()), ids=list(SPEC_PUBLIC))
def test_spec_public_key_round_trips_byte_exact(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["pubkey_protobuf_hex"])
    key = public_key_from_protobuf(raw)
    assert key.to_protobuf() == raw
    assert public_key_from_protobuf(key.to_protobuf()) == key


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_spec_keys_sign_and_verify(name: str) -> None:
    key = spec_key(name)
    sig = key.sign(b"Libp2p is the _best_!")
    assert key.public_key.verify(b"Libp2p is the _best_!", sig)
    assert not key.public_key.verify(b"Libp2p is the _best_?", sig)


def test_spec_key_types() -> None:
    assert [spec_key(n).key_type for n in sorted(PAIRS)] == [
        KeyType.ECDSA,
        KeyType.Ed25519,
        KeyType.RSA,
        KeyType.Secp256k1,
    ]


def test_ed25519_rfc8032_test1() -> None:
    key = Ed25519PrivateKey.from_seed(bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    assert key.public_key.to_bytes().hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    sig = key.sign(b"")
    assert sig.hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46b"
        "d25bf5f0595bbe24655141438e7a100b"
    )


# --- behaviour per key type ---------------------------------------------------------------------


@pytest.mark.parametrize("key", all_keys(), ids=lambda k: k.key_type.name)
def test_round_trip_and_equality(key: PrivateKey) -> None:
    again = private_key_from_protobuf(key.to_protobuf())
    assert again == key
    assert again.public_key == key.public_key
    assert hash(again.public_key) == hash(key.public_key)
    assert len({key.public_key, again.public_key}) == 1
    assert public_key_from_protobuf(key.public_key.to_protobuf()) == key.public_key


@pytest.mark.parametrize("key", all_keys(), ids=lambda k: k.key_type.name)
def test_verify_rejects_without_raising(key: PrivateKey) -> None:
    pub = key.public_key
    sig = key.sign(b"message")
    assert pub.verify(b"message", sig)
    assert not pub.verify(b"message!", sig)
    assert not pub.verify(b"message", b"")
    assert not pub.verify(b"message", b"\x30\x03\x02\x01")  # truncated DER
    assert not pub.verify(b"message", bytes(len(sig)))
    tampered = bytearray(sig)
    tampered[len(tampered) // 2] ^= 1
    assert not pub.verify(b"message", bytes(tampered))
    other = generate_private_key(KeyType.Ed25519 if key.key_type != KeyType.Ed25519 else KeyType.Secp256k1)
    assert not other.public_key.verify(b"message", sig)


@pytest.mark.parametrize("key", all_keys(), ids=lambda k: k.key_type.name)
def test_repr_hides_private_material(key: PrivateKey) -> None:
    text = repr(key)
    assert key.to_bytes().hex()[:16] not in text
    assert type(key).__name__ in text


def test_protobuf_encoding_matches_generated_schema() -> None:
    for key in all_keys():
        msg = crypto_keys_pb2.PublicKey()
        msg.ParseFromString(key.public_key.to_protobuf())
        assert msg.Type == int(key.key_type)
        assert msg.Data == key.public_key.to_bytes()
        assert msg.SerializeToString(deterministic=True) == key.public_key.to_protobuf()
        pmsg = crypto_keys_pb2.PrivateKey()
        pmsg.ParseFromString(key.to_protobuf())
        assert pmsg.Data == key.to_bytes()


def test_ed25519_private_data_is_seed_then_public() -> None:
    key = Ed25519PrivateKey.from_seed(bytes(32))
    raw = key.to_bytes()
    assert len(raw) == 64
    assert raw[:32] == bytes(32)
    assert raw[32:] == key.public_key.to_bytes()


def test_ed25519_legacy_96_byte_form() -> None:
    key = Ed25519PrivateKey.from_seed(os.urandom(32))
    raw = key.to_bytes()
    legacy = b"\x08\x01\x12\x60" + raw + raw[32:]
    assert private_key_from_protobuf(legacy) == key
    bad_copy = bytearray(legacy)
    bad_copy[-1] ^= 1
    with pytest.raises(DecodeError, match="two different public keys"):
        private_key_from_protobuf(bytes(bad_copy))


def test_ed25519_private_key_with_wrong_public_half_rejected() -> None:
    key = Ed25519PrivateKey.from_seed(bytes(32))
    other = Ed25519PrivateKey.from_seed(bytes([1] * 32))
    forged = key.to_bytes()[:32] + other.public_key.to_bytes()
    with pytest.raises(DecodeError, match="does not match"):
        private_key_from_protobuf(b"\x08\x01\x12\x40" + forged)


def test_ed25519_seed_must_be_32_bytes() -> None:
    with pytest.raises(ValueError):
        Ed25519PrivateKey.from_seed(bytes(31))


def test_secp256k1_signatures_are_low_s_der() -> None:
    key = generate_private_key(KeyType.Secp256k1)
    for i in range(40):
        sig = key.sign(b"msg %d" % i)
        r, s = decode_dss_signature(sig)
        assert 0 < s <= SECP256K1_N // 2
        assert key.public_key.verify(b"msg %d" % i, sig)


def test_secp256k1_public_key_is_compressed_and_uncompressed_is_accepted() -> None:
    key = generate_private_key(KeyType.Secp256k1)
    compressed = key.public_key.to_bytes()
    assert len(compressed) == 33 and compressed[0] in (2, 3)
    crypto_pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), compressed)
    uncompressed = crypto_pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert Secp256k1PublicKey.from_bytes(uncompressed) == key.public_key


def test_secp256k1_private_scalar_range_checked() -> None:
    for scalar in (0, SECP256K1_N):
        with pytest.raises(DecodeError, match="out of range"):
            private_key_from_protobuf(b"\x08\x02\x12\x20" + scalar.to_bytes(32, "big"))


def test_ecdsa_signatures_deterministic() -> None:
    key = spec_key("ECDSA private key")
    assert key.sign(b"x") == key.sign(b"x")


def test_rsa_below_2048_refused() -> None:
    with pytest.raises(ValueError):
        generate_private_key(KeyType.RSA, rsa_bits=1024)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pub_der = small.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(DecodeError, match="1024 bits"):
        public_key_from_protobuf(b"\x08\x00\x12" + encode_uvarint(len(pub_der)) + pub_der)
    priv_der = small.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    with pytest.raises(DecodeError, match="1024 bits"):
        private_key_from_protobuf(b"\x08\x00\x12" + encode_uvarint(len(priv_der)) + priv_der)


def test_key_data_of_wrong_algorithm_rejected() -> None:
    ecdsa_pub = spec_key("ECDSA private key").public_key.to_bytes()
    with pytest.raises(DecodeError, match="non-RSA"):
        public_key_from_protobuf(b"\x08\x00\x12" + encode_uvarint(len(ecdsa_pub)) + ecdsa_pub)
    rsa_pub = spec_key("rsa private key").public_key.to_bytes()
    with pytest.raises(DecodeError, match="ECDSA"):
        public_key_from_protobuf(b"\x08\x03\x12" + encode_uvarint(len(rsa_pub)) + rsa_pub)


# --- protobuf decoding details ------------------------------------------------------------------


def test_decoder_accepts_reordered_fields_and_skips_unknown() -> None:
    key = Ed25519PrivateKey.from_seed(bytes(32)).public_key
    raw = key.to_bytes()
    reordered = b"\x12\x20" + raw + b"\x08\x01"
    assert public_key_from_protobuf(reordered) == key
    with_unknown = key.to_protobuf() + b"\x18\x05" + b"\x22\x02ab" + b"\x2d\x00\x00\x00\x00"
    assert public_key_from_protobuf(with_unknown) == key
    assert public_key_from_protobuf(with_unknown).to_protobuf() == key.to_protobuf()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "lacks"),
        (b"\x08\x01", "lacks"),
        (b"\x12\x00", "lacks"),
        (b"\x08\x07\x12\x00", "unsupported key type 7"),
        (b"\x08\x01\x12\x21" + bytes(33), "32 bytes"),
        (b"\x08\x01\x12\x05ab", "truncated"),
        (b"\x08", "truncated"),
        (b"\x0b\x0c", "wire type 3"),
        (b"\x08\x80\x00\x12\x00", "non-minimal"),
        (b"\x00\x01", "field number 0"),
        (b"\x0a\x00\x12\x00", "field 1 has wire type 2"),
    ],
)
def test_decoder_rejects(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        public_key_from_protobuf(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_public_key_decoder_raises_only_decode_error(data: bytes) -> None:
    try:
        key = public_key_from_protobuf(data)
    except DecodeError:
        return
    assert isinstance(key, PublicKey)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([0, 1, 2, 3]), st.binary(max_size=120), st.booleans())
def test_fuzz_typed_key_data_raises_only_decode_error(key_type: int, body: bytes, private: bool) -> None:
    data = b"\x08" + bytes([key_type]) + b"\x12" + encode_uvarint(len(body)) + body
    try:
        key = private_key_from_protobuf(data) if private else public_key_from_protobuf(data)
    except DecodeError:
        return
    assert int(key.key_type) == key_type


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_private_key_decoder_raises_only_decode_error(data: bytes) -> None:
    try:
        private_key_from_protobuf(data)
    except DecodeError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=35), st.integers(min_value=0, max_value=255))
def test_fuzz_mutated_spec_public_key(position: int, value: int) -> None:
    data = bytearray(bytes.fromhex(SPEC_PUBLIC["ED25519 public key"]["pubkey_protobuf_hex"]))
    data[position] = value
    try:
        key = public_key_from_protobuf(bytes(data))
    except DecodeError:
        return
    assert isinstance(key, Ed25519PublicKey)


# --- Identity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["ed25519_seed_to_peer_id"]["vectors"], ids=lambda v: v["peer_id_b58"])
def test_identity_from_seed_vectors(vector: dict[str, Any]) -> None:
    ident = Identity.from_seed(bytes.fromhex(vector["seed_hex"]))
    assert ident.public_key.to_bytes().hex() == vector["ed25519_pub_hex"]
    assert ident.public_key.to_protobuf().hex() == vector["pubkey_protobuf_hex"]
    assert str(ident.peer_id) == vector["peer_id_b58"]


@pytest.mark.parametrize("key_type", [KeyType.Ed25519, KeyType.Secp256k1, KeyType.ECDSA])
def test_identity_generate(key_type: KeyType) -> None:
    ident = Identity.generate(key_type)
    assert ident.private_key.key_type == key_type
    assert ident.public_key == ident.private_key.public_key
    assert ident.peer_id.matches_public_key(ident.public_key)
    assert Identity.from_private_key(ident.private_key) == ident
    assert repr(ident) == f"<Identity {ident.peer_id}>"
    with pytest.raises(AttributeError):
        ident.peer_id = Identity.generate().peer_id


def test_identity_save_and_load(tmp_path: pathlib.Path) -> None:
    ident = Identity.generate()
    path = tmp_path / "node.key"
    ident.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == ident.private_key.to_protobuf()
    assert Identity.load(path) == ident
    other = Identity.generate(KeyType.Secp256k1)
    other.save(path)  # replaces atomically
    assert Identity.load(path) == other
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]  # no temp files left


def test_identity_load_rsa_spec_key(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "rsa.key"
    path.write_bytes(bytes.fromhex(SPEC_PRIVATE["rsa private key"]))
    path.chmod(0o600)
    assert str(Identity.load(path).peer_id) == SPEC_PUBLIC["rsa public key"]["peer_id_b58"]


def test_identity_load_garbage_raises_decode_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(b"not a key")
    with pytest.raises(DecodeError):
        Identity.load(path)


def test_identity_load_warns_on_open_permissions(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "open.key"
    Identity.generate().save(path)
    path.chmod(0o644)
    with caplog.at_level("WARNING", logger="mycel.core.identity"):
        Identity.load(path)
    assert "accessible by group/others" in caplog.text


def test_identity_load_or_create(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "node.key"
    first = Identity.load_or_create(path, KeyType.Secp256k1)
    assert first.private_key.key_type == KeyType.Secp256k1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Identity.load_or_create(path) == first
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]


def test_identity_load_or_create_concurrent_callers_agree(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "shared.key"
    results: list[Identity] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(Identity.load_or_create(path))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert all(r == results[0] for r in results)
    assert Identity.load(path) == results[0]
    assert [p.name for p in tmp_path.iterdir()] == ["shared.key"]


def test_identity_load_or_create_makes_missing_folders(tmp_path: pathlib.Path) -> None:
    """Regression: a key in a folder that does not exist yet (``~/.mycel`` on a fresh machine) failed
    with an error naming a temporary file."""
    path = tmp_path / "fresh-home" / ".mycel" / "identity.key"
    first = Identity.load_or_create(path)
    assert path.exists() and Identity.load_or_create(path) == first
    assert (path.parent.stat().st_mode & 0o777) == 0o700


def test_ed25519_verify_rfc8032_vector_and_rejects_malleated_or_malformed_signatures() -> None:
    """RFC 8032 §7.1 TEST 1 (empty message), checked by the libsodium path; S + L (a malleated copy of a
    valid signature), a flipped bit and wrong lengths are all refused."""
    from mycel.core.keys import Ed25519PublicKey

    pk = Ed25519PublicKey.from_bytes(bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"))
    sig = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    assert pk.verify(b"", sig)
    assert not pk.verify(b"x", sig)
    assert not pk.verify(b"", sig[:-1] + bytes([sig[-1] ^ 1]))
    order = 2**252 + 27742317777372353535851937790883648493
    s = int.from_bytes(sig[32:], "little") + order
    assert not pk.verify(b"", sig[:32] + s.to_bytes(32, "little"))  # non-canonical S
    assert not pk.verify(b"", sig[:63]) and not pk.verify(b"", sig + b"\x00")
