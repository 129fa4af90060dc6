"""Peer ids (spec vectors, text forms, validation) and the multibase helpers behind them."""

from __future__ import annotations

import hashlib
import json
import pathlib
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.core.errors import DecodeError
from mycel.core.identity import Identity
from mycel.core.keys import KeyType, generate_private_key, private_key_from_protobuf, public_key_from_protobuf
from mycel.core.multibase import BASE58_ALPHABET, b32decode, b32encode, b58decode, b58encode, multibase_decode
from mycel.core.peer_id import PeerId

VECTORS: dict[str, Any] = json.loads(
    (pathlib.Path(__file__).resolve().parents[3] / "shared" / "vectors" / "vectors.json").read_text()
)
PUBKEY_VECTORS = VECTORS["peer_id_from_specs_pubkeys"]["vectors"]


@pytest.mark.parametrize("vector", PUBKEY_VECTORS, ids=lambda v: v["name"])
def test_peer_id_from_spec_public_keys(vector: dict[str, Any]) -> None:
    key = public_key_from_protobuf(bytes.fromhex(vector["pubkey_protobuf_hex"]))
    pid = PeerId.from_public_key(key)
    assert pid.to_bytes().hex() == vector["peer_id_bytes_hex"]
    assert pid.to_base58() == vector["peer_id_b58"]
    assert str(pid) == vector["peer_id_b58"]
    assert pid.to_cid() == vector["peer_id_cidv1_b32"]
    assert PeerId.from_string(vector["peer_id_b58"]) == pid
    assert PeerId.from_string(vector["peer_id_cidv1_b32"]) == pid
    assert PeerId.from_bytes(bytes.fromhex(vector["peer_id_bytes_hex"])) == pid
    assert pid.matches_public_key(key)
    if vector["multihash"] == "identity":
        assert pid.to_bytes()[0] == 0x00
        assert pid.extract_public_key() == key
    else:
        assert pid.to_bytes()[:2] == b"\x12\x20"
        assert pid.to_bytes()[2:] == hashlib.sha256(key.to_protobuf()).digest()
        assert pid.extract_public_key() is None


@pytest.mark.parametrize("vector", VECTORS["peer_id_text_forms"]["vectors"], ids=lambda v: v["b58_multihash"])
def test_peer_id_text_forms(vector: dict[str, str]) -> None:
    a = PeerId.from_string(vector["cidv1_b32"])
    b = PeerId.from_string(vector["b58_multihash"])
    assert a == b
    assert a.to_cid() == vector["cidv1_b32"]
    assert a.to_base58() == vector["b58_multihash"]


@pytest.mark.parametrize("vector", VECTORS["ed25519_seed_to_peer_id"]["vectors"], ids=lambda v: v["peer_id_b58"])
def test_peer_id_from_ed25519_seed(vector: dict[str, str]) -> None:
    pid = Identity.from_seed(bytes.fromhex(vector["seed_hex"])).peer_id
    assert pid.to_base58() == vector["peer_id_b58"]
    assert pid.to_base58().startswith("12D3KooW")


def test_peer_id_prefixes_per_key_type() -> None:
    assert str(PeerId.from_public_key(generate_private_key(KeyType.Ed25519).public_key)).startswith("12D3KooW")
    assert str(PeerId.from_public_key(generate_private_key(KeyType.Secp256k1).public_key)).startswith("16Uiu2")
    assert str(PeerId.from_public_key(generate_private_key(KeyType.ECDSA).public_key)).startswith("Qm")


def test_cid_parsing_accepts_other_multibases() -> None:
    pid = PeerId.from_string(PUBKEY_VECTORS[0]["peer_id_b58"])
    cid_bytes = b"\x01\x72" + pid.to_bytes()
    assert PeerId.from_string("B" + b32encode(cid_bytes).upper()) == pid
    assert PeerId.from_string("z" + b58encode(cid_bytes)) == pid
    assert PeerId.from_string("f" + cid_bytes.hex()) == pid


def test_value_semantics() -> None:
    a = Identity.generate().peer_id
    b = PeerId.from_bytes(a.to_bytes())
    c = Identity.generate().peer_id
    assert a == b and a != c
    assert hash(a) == hash(b)
    assert len({a, b, c}) == 2
    assert sorted([c, a]) == sorted([a, c])
    assert (a < c) == (a.to_bytes() < c.to_bytes())
    assert a <= b and a >= b
    assert a != a.to_bytes()
    assert pickle.loads(pickle.dumps(a)) == a
    with pytest.raises(AttributeError):
        a._bytes = b"x"
    with pytest.raises(AttributeError):
        del a._bytes


def test_repr_is_short() -> None:
    pid = PeerId.from_string("12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN")
    assert repr(pid) == "<PeerId 12D3KooW…x6nXTN>"


def test_matches_public_key_false_for_other_key() -> None:
    pid = Identity.generate().peer_id
    assert not pid.matches_public_key(generate_private_key().public_key)
    rsa_key = private_key_from_protobuf(bytes.fromhex(VECTORS["private_keys_from_specs"]["vectors"]["rsa private key"]))
    assert PeerId.from_public_key(rsa_key.public_key).matches_public_key(rsa_key.public_key)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated"),
        (b"\x12", "truncated"),
        (b"\x12\x20" + bytes(31), "declares 32"),
        (b"\x12\x20" + bytes(33), "declares 32"),
        (b"\x12\x10" + bytes(16), "32 bytes"),
        (b"\x13\x20" + bytes(32), "unsupported"),
        (b"\x00\x2b" + bytes(43), "longer than 42"),
        (b"\x00\x80\x00", "non-minimal"),
    ],
)
def test_from_bytes_rejects(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        PeerId.from_bytes(data)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Qm0OIl",  # characters outside base58
        "12D3KooW",  # valid base58, truncated multihash
        "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",  # CIDv1 dag-pb, not libp2p-key
        "xyz",  # unknown multibase
        "b!!!",
        "bafz",
    ],
)
def test_from_string_rejects(text: str) -> None:
    with pytest.raises(DecodeError):
        PeerId.from_string(text)


def test_extract_public_key_rejects_garbage_identity() -> None:
    pid = PeerId.from_bytes(b"\x00\x04abcd")
    with pytest.raises(DecodeError):
        pid.extract_public_key()


# --- multibase ----------------------------------------------------------------------------------


def test_multibase_spec_examples() -> None:
    # multiformats/multibase tests/basic.csv: "yes mani !"
    assert b58encode(b"yes mani !") == "7paNL19xttacUY"
    assert b32encode(b"yes mani !") == "pfsxgidnmfxgsibb"
    assert multibase_decode("z7paNL19xttacUY") == b"yes mani !"
    assert multibase_decode("bpfsxgidnmfxgsibb") == b"yes mani !"
    assert multibase_decode("BPFSXGIDNMFXGSIBB") == b"yes mani !"
    assert multibase_decode("f796573206d616e692021") == b"yes mani !"
    assert multibase_decode("meWVzIG1hbmkgIQ") == b"yes mani !"
    assert multibase_decode("ueWVzIG1hbmkgIQ") == b"yes mani !"


def test_base58_leading_zeros() -> None:
    assert b58encode(b"\0\0yes mani !") == "117paNL19xttacUY"
    assert b58decode("117paNL19xttacUY") == b"\0\0yes mani !"
    assert b58encode(b"") == ""
    assert b58encode(b"\0") == "1"
    assert b58decode("1") == b"\0"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_base58_and_base32_round_trip(data: bytes) -> None:
    assert b58decode(b58encode(data)) == data
    assert b32decode(b32encode(data)) == data


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60))
def test_fuzz_peer_id_from_bytes_raises_only_decode_error(data: bytes) -> None:
    try:
        pid = PeerId.from_bytes(data)
    except DecodeError:
        return
    assert PeerId.from_string(pid.to_base58()) == pid
    assert PeerId.from_string(pid.to_cid()) == pid


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=70), st.text(alphabet=BASE58_ALPHABET, max_size=60)))
def test_fuzz_peer_id_from_string_raises_only_decode_error(text: str) -> None:
    try:
        PeerId.from_string(text)
    except DecodeError:
        pass
