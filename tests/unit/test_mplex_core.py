"""The sans-IO mplex core: wire vectors, stream keying, bounds, violations, fuzzing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.core.errors import ConnectionClosed, MuxerError, ProtocolViolation, StreamClosed
from mycel.muxers.events import MuxerEvent, StreamAborted, StreamData, StreamEnded, StreamOpened
from mycel.muxers.mplex.core import (
    CLOSE_INITIATOR,
    CLOSE_RECEIVER,
    MAX_MESSAGE,
    MESSAGE_INITIATOR,
    MESSAGE_RECEIVER,
    NEW_STREAM,
    RESET_INITIATOR,
    RESET_RECEIVER,
    MplexCore,
    decode_frame,
    encode_frame,
)


def vec(vectors: dict[str, Any], name_start: str) -> bytes:
    for name, hexdata in vectors["mplex_frames_derived"]["vectors"]:
        if name.startswith(name_start):
            return bytes.fromhex(hexdata)
    raise KeyError(name_start)


def joined(events: list[MuxerEvent], key: int) -> bytes:
    return b"".join(bytes(e.data) for e in events if isinstance(e, StreamData) and e.key == key)


def remote_key(sid: int) -> int:
    return sid << 1


def local_key(sid: int) -> int:
    return sid << 1 | 1


# ---- vectors ---------------------------------------------------------------------------------


def test_every_vector_roundtrips(vectors: dict[str, Any]) -> None:
    rows = vectors["mplex_frames_derived"]["vectors"]
    assert len(rows) == 5
    for _name, hexdata in rows:
        raw = bytes.fromhex(hexdata)
        decoded = decode_frame(raw)
        assert decoded is not None
        sid, flag, payload, end = decoded
        assert end == len(raw)
        assert encode_frame(sid, flag, payload) == raw


def test_vectors_are_what_the_core_sends(vectors: dict[str, Any]) -> None:
    core = MplexCore()
    key = core.open_stream(0.0)
    assert core.wire_id(key) == 0
    assert bytes(core.data_to_send()) == vec(vectors, "NewStream id=0")
    assert core.send_data(key, memoryview(b"hi")) == 2
    assert bytes(core.data_to_send()) == vec(vectors, "MessageInitiator id=0")
    core.send_eof(key)
    assert bytes(core.data_to_send()) == vec(vectors, "CloseInitiator id=0")

    # the same numeric id opened by the remote is another stream
    assert core.receive_data(encode_frame(0, NEW_STREAM, b"0"), 0.0) == [StreamOpened(remote_key(0))]
    core.send_data(remote_key(0), memoryview(b"hi"))
    assert bytes(core.data_to_send()) == vec(vectors, "MessageReceiver id=0")
    core.receive_data(encode_frame(17, NEW_STREAM), 0.0)
    core.reset_stream(remote_key(17))
    assert bytes(core.data_to_send()) == vec(vectors, "ResetReceiver id=17")


def test_vectors_are_understood(vectors: dict[str, Any]) -> None:
    core = MplexCore()
    mine = core.open_stream(0.0)  # our stream 0
    events = core.receive_data(
        vec(vectors, "NewStream id=0")  # their stream 0
        + vec(vectors, "MessageInitiator id=0")  # initiator -> their stream
        + vec(vectors, "MessageReceiver id=0")  # receiver -> our stream
        + vec(vectors, "CloseInitiator id=0"),
        0.0,
    )
    assert events[0] == StreamOpened(remote_key(0))
    assert joined(events, remote_key(0)) == b"hi"
    assert joined(events, mine) == b"hi"
    assert events[-1] == StreamEnded(remote_key(0))


# ---- streams -------------------------------------------------------------------------------


def test_same_id_both_sides_are_distinct_streams() -> None:
    core = MplexCore()
    mine = core.open_stream(0.0)
    core.receive_data(encode_frame(0, NEW_STREAM), 0.0)
    events = core.receive_data(
        encode_frame(0, MESSAGE_RECEIVER, b"to mine") + encode_frame(0, MESSAGE_INITIATOR, b"to theirs"), 0.0
    )
    assert joined(events, mine) == b"to mine"
    assert joined(events, remote_key(0)) == b"to theirs"
    events = core.receive_data(encode_frame(0, RESET_RECEIVER), 0.0)
    assert events == [StreamAborted(mine, True, "reset by remote")]
    assert core.has_stream(remote_key(0)) and not core.has_stream(mine)


def test_half_close_both_ways_frees_the_stream() -> None:
    core = MplexCore()
    key = core.open_stream(0.0)
    assert core.receive_data(encode_frame(0, CLOSE_RECEIVER), 0.0) == [StreamEnded(key)]
    assert core.has_stream(key)
    core.send_eof(key)
    assert not core.has_stream(key)


def test_writing_after_close_or_reset_is_refused_locally() -> None:
    core = MplexCore()
    key = core.open_stream(0.0)
    core.send_eof(key)
    with pytest.raises(StreamClosed):
        core.send_data(key, memoryview(b"x"))
    key2 = core.open_stream(0.0)
    core.reset_stream(key2)
    with pytest.raises(StreamClosed):
        core.send_data(key2, memoryview(b"x"))


def test_data_after_remote_close_resets_the_stream() -> None:
    core = MplexCore()
    core.receive_data(encode_frame(3, NEW_STREAM) + encode_frame(3, CLOSE_INITIATOR), 0.0)
    core.data_to_send()
    events = core.receive_data(encode_frame(3, MESSAGE_INITIATOR, b"late"), 0.0)
    assert events == [StreamAborted(remote_key(3), False, "data after close")]
    assert bytes(core.data_to_send()) == encode_frame(3, RESET_RECEIVER)


def test_large_writes_are_split_into_bounded_messages() -> None:
    core = MplexCore(max_frame=1000)
    key = core.open_stream(0.0)
    core.data_to_send()
    core.send_data(key, memoryview(b"x" * 2500))
    out = bytes(core.data_to_send())
    sizes = []
    pos = 0
    while pos < len(out):
        decoded = decode_frame(out, pos)
        assert decoded is not None
        _sid, flag, payload, pos = decoded
        assert flag == MESSAGE_INITIATOR
        sizes.append(len(payload))
    assert sizes == [1000, 1000, 500]


def test_unknown_streams_are_skipped_even_when_split() -> None:
    core = MplexCore()
    raw = encode_frame(9, MESSAGE_INITIATOR, b"x" * 300) + encode_frame(1, NEW_STREAM)
    events: list[MuxerEvent] = []
    for i in range(0, len(raw), 7):
        events += core.receive_data(raw[i : i + 7], 0.0)
    assert events == [StreamOpened(remote_key(1))]


# ---- bounds --------------------------------------------------------------------------------


def test_slow_reader_is_reset_past_its_buffer_bound() -> None:
    core = MplexCore(max_buffer=1000)
    core.receive_data(encode_frame(1, NEW_STREAM), 0.0)
    key = remote_key(1)
    assert joined(core.receive_data(encode_frame(1, MESSAGE_INITIATOR, b"a" * 600), 0.0), key) == b"a" * 600
    core.consume(key, 200, 0.0)  # 400 left unread
    assert joined(core.receive_data(encode_frame(1, MESSAGE_INITIATOR, b"b" * 600), 0.0), key) == b"b" * 600
    events = core.receive_data(encode_frame(1, MESSAGE_INITIATOR, b"c"), 0.0)
    assert events == [StreamAborted(key, False, "unread data would exceed 1000 bytes")]
    assert bytes(core.data_to_send()) == encode_frame(1, RESET_RECEIVER)


def test_accept_backlog_resets_the_excess() -> None:
    core = MplexCore(accept_backlog=2)
    assert len(core.receive_data(encode_frame(0, NEW_STREAM) + encode_frame(1, NEW_STREAM), 0.0)) == 2
    assert core.receive_data(encode_frame(2, NEW_STREAM) + encode_frame(2, MESSAGE_INITIATOR, b"x"), 0.0) == []
    assert bytes(core.data_to_send()) == encode_frame(2, RESET_RECEIVER)
    core.stream_accepted(remote_key(0))
    assert core.receive_data(encode_frame(3, NEW_STREAM), 0.0) == [StreamOpened(remote_key(3))]


def test_message_size_limit() -> None:
    core = MplexCore()
    core.receive_data(encode_frame(1, NEW_STREAM), 0.0)
    ok = encode_frame(1, MESSAGE_INITIATOR, b"\0" * MAX_MESSAGE)
    assert len(joined(core.receive_data(ok, 0.0), remote_key(1))) == MAX_MESSAGE
    with pytest.raises(MuxerError, match="exceeds"):
        core.receive_data(encode_frame(1, MESSAGE_INITIATOR)[:1] + b"\x81\x80\x40", 0.0)  # 1 MiB + 1


def test_close_refuses_new_streams_both_ways() -> None:
    core = MplexCore()
    core.close()
    with pytest.raises(ConnectionClosed):
        core.open_stream(0.0)
    assert core.receive_data(encode_frame(0, NEW_STREAM), 0.0) == []
    assert bytes(core.data_to_send()) == encode_frame(0, RESET_RECEIVER)


# ---- violations ----------------------------------------------------------------------------

VIOLATIONS = {
    "flag 7": bytes([0x07, 0x00]),
    "non-minimal varint": bytes([0x80, 0x00, 0x00]),
    "varint too long": b"\xff" * 9 + b"\x01",
    "duplicate NewStream": encode_frame(1, NEW_STREAM) + encode_frame(1, NEW_STREAM),
    "too large": encode_frame(1, MESSAGE_INITIATOR)[:1] + b"\x81\x80\x40",
}


@pytest.mark.parametrize("raw", VIOLATIONS.values(), ids=VIOLATIONS.keys())
def test_violations(raw: bytes) -> None:
    core = MplexCore()
    with pytest.raises(MuxerError):
        core.receive_data(raw, 0.0)
    assert core.is_failed
    with pytest.raises(MuxerError):
        core.receive_data(b"", 0.0)


# ---- fuzzing -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_random_bytes(raw: bytes) -> None:
    core = MplexCore()
    core.open_stream(0.0)
    try:
        core.receive_data(raw, 0.0)
    except ProtocolViolation:
        assert core.is_failed


@st.composite
def frame_sequences(draw: st.DrawFn) -> bytes:
    """Valid frames from the remote: opens, messages, closes, resets, on its and our streams."""
    out = bytearray()
    theirs: list[int] = []
    for _ in range(draw(st.integers(1, 25))):
        action = draw(st.sampled_from(["open", "msg", "reply", "close", "reset", "unknown"]))
        if action == "open" or not theirs:
            sid = len(theirs)
            out += encode_frame(sid, NEW_STREAM, str(sid).encode())
            theirs.append(sid)
        elif action == "msg":
            out += encode_frame(draw(st.sampled_from(theirs)), MESSAGE_INITIATOR, draw(st.binary(max_size=3000)))
        elif action == "reply":  # on the streams 0..2 we opened
            out += encode_frame(draw(st.integers(0, 2)), MESSAGE_RECEIVER, draw(st.binary(max_size=3000)))
        elif action == "close":
            flag = draw(st.sampled_from([CLOSE_INITIATOR, CLOSE_RECEIVER]))
            out += encode_frame(draw(st.sampled_from(theirs)) if flag == CLOSE_INITIATOR else 1, flag)
        elif action == "reset":
            out += encode_frame(draw(st.sampled_from(theirs)), RESET_INITIATOR)
        else:
            out += encode_frame(500, MESSAGE_INITIATOR, draw(st.binary(max_size=50)))
    return bytes(out)


def _with_our_streams() -> MplexCore:
    core = MplexCore(max_buffer=20_000)
    for _ in range(3):
        core.open_stream(0.0)
    core.data_to_send()
    return core


def _normalise(events: list[MuxerEvent]) -> list[object]:
    merged: list[object] = []
    for ev in events:
        if isinstance(ev, StreamData):
            if merged and isinstance(merged[-1], list) and merged[-1][0] == ev.key:
                merged[-1][1] += bytes(ev.data)
            else:
                merged.append([ev.key, bytes(ev.data)])
        else:
            merged.append(ev)
    return merged


@settings(max_examples=200, deadline=None)
@given(frame_sequences(), st.lists(st.integers(1, 400), max_size=30))
def test_fuzz_chopped_valid_sequences_match_whole(raw: bytes, cuts: list[int]) -> None:
    whole = _with_our_streams()
    expected = whole.receive_data(raw, 0.0)
    chopped = _with_our_streams()
    events: list[MuxerEvent] = []
    pos = 0
    for cut in cuts:
        events += chopped.receive_data(raw[pos : pos + cut], 0.0)
        pos += cut
    events += chopped.receive_data(raw[pos:], 0.0)
    assert _normalise(events) == _normalise(expected)
    assert bytes(chopped.data_to_send()) == bytes(whole.data_to_send())


@settings(max_examples=200, deadline=None)
@given(frame_sequences(), st.integers(0, 10_000), st.integers(0, 255))
def test_fuzz_mutated_valid_sequences(raw: bytes, where: int, value: int) -> None:
    mutated = bytearray(raw)
    mutated[where % len(mutated)] = value
    core = _with_our_streams()
    try:
        core.receive_data(bytes(mutated), 0.0)
    except MuxerError:
        assert core.is_failed
