import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.core.errors import DecodeError, MessageTooLarge
from mycel.core.varint import LengthPrefixedDecoder, decode_uvarint, encode_uvarint, length_prefixed


@pytest.mark.parametrize(
    "value,hex_",
    [(0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (255, "ff01"), (300, "ac02"), (16384, "808001")],
)
def test_spec_examples(value: int, hex_: str) -> None:
    assert encode_uvarint(value).hex() == hex_
    assert decode_uvarint(bytes.fromhex(hex_)) == (value, len(hex_) // 2)


def test_non_minimal_rejected() -> None:
    with pytest.raises(DecodeError):
        decode_uvarint(bytes.fromhex("8100"))
    with pytest.raises(DecodeError):
        decode_uvarint(b"\xff" * 10)


def test_truncated_is_incomplete() -> None:
    assert decode_uvarint(b"\x80") is None


@given(st.integers(min_value=0, max_value=(1 << 63) - 1))
def test_roundtrip(value: int) -> None:
    enc = encode_uvarint(value)
    assert decode_uvarint(enc) == (value, len(enc))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_fuzz_decode(data: bytes) -> None:
    try:
        decode_uvarint(data)
    except DecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(min_value=1, max_value=50))
def test_length_prefixed_chunks(messages: list[bytes], chunk: int) -> None:
    stream = b"".join(length_prefixed(m) for m in messages)
    dec = LengthPrefixedDecoder(max_size=1000)
    out = []
    for i in range(0, len(stream), chunk):
        dec.feed(stream[i : i + chunk])
        while (m := dec.next_message()) is not None:
            out.append(m)
    assert out == messages


def test_length_prefixed_limit_before_body() -> None:
    dec = LengthPrefixedDecoder(max_size=10)
    dec.feed(encode_uvarint(11))
    with pytest.raises(MessageTooLarge):
        dec.next_message()
