"""Content keys come from CIDs through the multiformats package: the key is the CID's multihash."""

from __future__ import annotations

import hashlib

import pytest
from multiformats import CID

from mycel.core.errors import DecodeError
from mycel.routing import content_key

DIGEST = hashlib.sha256(b"hello mycel").digest()
MULTIHASH = bytes([0x12, 0x20]) + DIGEST


def test_cidv0_and_cidv1_of_the_same_content_share_their_key() -> None:
    v1 = CID("base32", 1, "raw", ("sha2-256", DIGEST))
    v0 = CID("base58btc", 0, "dag-pb", ("sha2-256", DIGEST))
    assert content_key(v1) == content_key(str(v1)) == MULTIHASH
    assert content_key(v0) == content_key(str(v0)) == MULTIHASH
    assert str(v0).startswith("Qm") and str(v1).startswith("b")


def test_a_multihash_is_its_own_key() -> None:
    assert content_key(MULTIHASH) == MULTIHASH


@pytest.mark.parametrize("bad", [b"", b"\x12\x20short", b"not a multihash", "Qmnot-a-cid", "bafy!!", ""])
def test_malformed_content_is_a_decode_error(bad: bytes | str) -> None:
    with pytest.raises(DecodeError):
        content_key(bad)


def test_other_types_are_refused() -> None:
    with pytest.raises(TypeError):
        content_key(42)  # type: ignore[arg-type]
