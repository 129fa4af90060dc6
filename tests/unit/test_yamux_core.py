"""The sans-IO yamux core: wire vectors, flow control, bounds, violations, fuzzing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.core.errors import ConnectionClosed, MuxerError, ProtocolViolation, ResourceLimitExceeded, StreamClosed
from mycel.muxers.events import (
    GoAwayReceived,
    KeepaliveTimeout,
    MuxerEvent,
    PongReceived,
    SendWindowOpened,
    StreamAborted,
    StreamData,
    StreamEnded,
    StreamOpened,
)
from mycel.muxers.budget import MemoryBudget
from mycel.muxers.yamux.core import (
    CONNECTION_MEMORY,
    FLAG_ACK,
    FLAG_FIN,
    FLAG_RST,
    FLAG_SYN,
    INITIAL_WINDOW,
    MAX_WINDOW,
    TYPE_DATA,
    TYPE_GO_AWAY,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    Frame,
    YamuxCore,
    decode_header,
    encode_frame,
)

GO_AWAY_PROTOCOL_ERROR = bytes.fromhex("000300000000000000000001")


def vec(vectors: dict[str, Any], name_start: str) -> bytes:
    for name, hexdata in vectors["yamux_frames_derived"]["vectors"]:
        if name.startswith(name_start):
            return bytes.fromhex(hexdata)
    raise KeyError(name_start)


def syn(sid: int) -> bytes:
    return encode_frame(TYPE_WINDOW_UPDATE, FLAG_SYN, sid, 0)


def data(sid: int, payload: bytes, flags: int = 0) -> bytes:
    return encode_frame(TYPE_DATA, flags, sid, len(payload), payload)


def server_with_stream(sid: int = 1, **kwargs: Any) -> YamuxCore:
    core = YamuxCore(False, **kwargs)
    assert core.receive_data(syn(sid), 0.0) == [StreamOpened(sid)]
    return core


def joined(events: list[MuxerEvent], key: int) -> bytes:
    return b"".join(bytes(e.data) for e in events if isinstance(e, StreamData) and e.key == key)


# ---- vectors ---------------------------------------------------------------------------------


def test_every_vector_roundtrips_through_encode_and_decode(vectors: dict[str, Any]) -> None:
    rows = vectors["yamux_frames_derived"]["vectors"]
    assert len(rows) == 10
    for _name, hexdata in rows:
        raw = bytes.fromhex(hexdata)
        frame = decode_header(raw)
        payload = raw[12:] if frame.type == TYPE_DATA else b""
        assert encode_frame(frame.type, frame.flags, frame.stream_id, frame.length, payload) == raw


def test_vectors_are_what_the_core_sends(vectors: dict[str, Any]) -> None:
    client = YamuxCore(True)
    sid = client.open_stream(0.0)
    assert sid == 1
    assert bytes(client.data_to_send()) == vec(vectors, "open stream 1 via WindowUpdate+SYN")
    assert client.send_data(sid, memoryview(b"hello")) == 5
    assert bytes(client.data_to_send()) == vec(vectors, "Data stream 1")
    client.send_eof(sid)
    assert bytes(client.data_to_send()) == vec(vectors, "FIN stream 1")
    client.close()
    assert bytes(client.data_to_send()) == vec(vectors, "GoAway normal")

    server = YamuxCore(False)
    sid2 = server.open_stream(0.0)
    assert sid2 == 2
    server.data_to_send()
    server.reset_stream(sid2)
    assert bytes(server.data_to_send()) == vec(vectors, "RST stream 2")


def test_window_update_vector_after_consuming_a_full_window(vectors: dict[str, Any]) -> None:
    server = server_with_stream(1)
    server.send_data(1, memoryview(b"r"))  # our first frame carries the ACK
    server.data_to_send()
    events = server.receive_data(data(1, b"\0" * INITIAL_WINDOW), 1.0)
    assert len(joined(events, 1)) == INITIAL_WINDOW
    server.consume(1, INITIAL_WINDOW, 1.0)
    assert bytes(server.data_to_send()) == vec(vectors, "WindowUpdate stream 1 +262144")


def test_ping_vectors(vectors: dict[str, Any]) -> None:
    core = YamuxCore(True)
    assert core.receive_data(vec(vectors, "Ping request opaque=7"), 0.0) == []
    assert bytes(core.data_to_send()) == vec(vectors, "Ping response opaque=7")
    for expected in range(8):
        assert core.ping(1.0) == expected
    core.data_to_send()
    assert core.receive_data(vec(vectors, "Ping response opaque=7"), 1.25) == [PongReceived(7, 0.25)]
    assert core.rtt == 0.25


def test_ack_and_goaway_vectors_are_understood(vectors: dict[str, Any]) -> None:
    client = YamuxCore(True)
    client.open_stream(0.0)
    assert client.unacked_streams == 1
    assert client.receive_data(vec(vectors, "ACK stream 1"), 0.0) == []
    assert client.unacked_streams == 0
    assert client.receive_data(vec(vectors, "GoAway normal"), 0.0) == [GoAwayReceived(0)]
    with pytest.raises(ConnectionClosed):
        client.open_stream(0.0)
    other = YamuxCore(True)
    assert other.receive_data(vec(vectors, "GoAway protocol error"), 0.0) == [GoAwayReceived(1)]


def test_decode_header_fields() -> None:
    assert decode_header(bytes.fromhex("000100010000000100000000")) == Frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0)


# ---- streams -------------------------------------------------------------------------------


def test_open_with_data_syn_and_ack_on_first_frame() -> None:
    server = YamuxCore(False)
    events = server.receive_data(data(1, b"hi", FLAG_SYN), 0.0)
    assert events[0] == StreamOpened(1)
    assert joined(events, 1) == b"hi"
    server.send_data(1, memoryview(b"yo"))
    out = bytes(server.data_to_send())
    assert out == data(1, b"yo", FLAG_ACK)
    server.send_data(1, memoryview(b"2"))
    assert bytes(server.data_to_send()) == data(1, b"2")  # only the first frame carries ACK


def test_fin_is_applied_after_the_payload_even_when_split() -> None:
    server = server_with_stream(1)
    raw = data(1, b"abcdef", FLAG_FIN)
    events: list[MuxerEvent] = []
    for i in range(len(raw)):
        events += server.receive_data(raw[i : i + 1], 0.0)
    assert joined(events, 1) == b"abcdef"
    assert isinstance(events[-1], StreamEnded)


def test_both_fins_free_the_stream() -> None:
    server = server_with_stream(1)
    server.receive_data(data(1, b"", FLAG_FIN), 0.0)
    assert server.has_stream(1)
    server.send_eof(1)
    assert not server.has_stream(1)
    assert bytes(server.data_to_send()) == data(1, b"", FLAG_FIN | FLAG_ACK)


def test_data_after_fin_resets_only_that_stream() -> None:
    server = server_with_stream(1)
    server.receive_data(syn(3), 0.0)
    server.receive_data(data(1, b"", FLAG_FIN), 0.0)
    events = server.receive_data(data(1, b"late") + data(3, b"ok"), 0.0)
    assert events[0] == StreamAborted(1, False, "data after FIN")
    assert joined(events, 3) == b"ok"
    assert bytes(server.data_to_send()) == encode_frame(TYPE_WINDOW_UPDATE, FLAG_RST, 1, 0)


def test_remote_reset() -> None:
    server = server_with_stream(1)
    events = server.receive_data(encode_frame(TYPE_WINDOW_UPDATE, FLAG_RST, 1, 0), 0.0)
    assert events == [StreamAborted(1, True, "reset by remote")]
    assert not server.has_stream(1)
    assert server.pending_accept == 0
    # later frames for it are ignored, including their payload
    assert server.receive_data(data(1, b"ignored") + syn(3), 0.0) == [StreamOpened(3)]


def test_send_after_eof_is_refused_locally() -> None:
    client = YamuxCore(True)
    sid = client.open_stream(0.0)
    client.send_eof(sid)
    assert client.send_window(sid) == 0
    with pytest.raises(StreamClosed):
        client.send_data(sid, memoryview(b"x"))


# ---- flow control ----------------------------------------------------------------------------


def test_send_is_limited_by_the_peer_window_and_frames_are_bounded() -> None:
    client = YamuxCore(True, max_frame=65536)
    sid = client.open_stream(0.0)
    client.data_to_send()
    assert client.send_data(sid, memoryview(b"x" * (INITIAL_WINDOW + 10))) == INITIAL_WINDOW
    out = bytes(client.data_to_send())
    assert len(out) == INITIAL_WINDOW + 4 * 12  # four 64 KiB frames
    assert client.send_window(sid) == 0
    assert client.send_data(sid, memoryview(b"x")) == 0
    events = client.receive_data(encode_frame(TYPE_WINDOW_UPDATE, FLAG_ACK, sid, 1000), 0.0)
    assert events == [SendWindowOpened(sid)]
    assert client.send_window(sid) == 1000


def test_data_beyond_the_receive_window_is_a_violation() -> None:
    server = server_with_stream(1)
    server.data_to_send()
    with pytest.raises(MuxerError, match="receive window"):
        server.receive_data(encode_frame(TYPE_DATA, 0, 1, INITIAL_WINDOW + 1), 0.0)
    assert bytes(server.data_to_send()) == GO_AWAY_PROTOCOL_ERROR
    with pytest.raises(MuxerError):
        server.receive_data(b"", 0.0)  # the core stays failed


def test_window_update_waits_for_half_the_window() -> None:
    server = server_with_stream(1)
    server.send_data(1, memoryview(b"r"))
    server.data_to_send()
    server.receive_data(data(1, b"\0" * 200_000), 0.0)
    server.consume(1, INITIAL_WINDOW // 2 - 1, 0.0)
    assert server.pending_output == 0
    server.consume(1, 1, 0.0)
    assert bytes(server.data_to_send()) == encode_frame(TYPE_WINDOW_UPDATE, 0, 1, INITIAL_WINDOW // 2)


def _feed_window(core: YamuxCore, now: float) -> int:
    """Peer sends as much as it may, we consume it all at ``now``; return the delta granted."""
    window = core.receive_window(1)
    before = core.pending_output
    core.receive_data(data(1, b"\0" * (window // 2)), now)
    core.consume(1, window // 2, now)
    out = bytes(core.data_to_send())
    assert len(out) - before == 12
    return decode_header(out[-12:]).length


def _server_with_rtt(rtt: float) -> YamuxCore:
    core = server_with_stream(1)
    opaque = core.ping(0.0)
    core.receive_data(encode_frame(TYPE_PING, FLAG_ACK, 0, opaque), rtt)
    core.send_data(1, memoryview(b"r"))
    core.data_to_send()
    return core


def test_window_grows_when_the_reader_keeps_up() -> None:
    core = _server_with_rtt(0.010)
    now = 0.010
    windows = [core.receive_window(1)]
    for _ in range(10):
        now += 0.005  # well under 2 RTTs between updates
        _feed_window(core, now)
        windows.append(core.receive_window(1))
    assert windows[:4] == [INITIAL_WINDOW, 2 * INITIAL_WINDOW, 4 * INITIAL_WINDOW, 8 * INITIAL_WINDOW]
    assert windows[-1] == MAX_WINDOW  # capped at 16 MiB


def test_window_does_not_grow_for_a_slow_reader_or_without_rtt() -> None:
    core = _server_with_rtt(0.010)
    now = 0.010
    for _ in range(5):
        now += 0.5  # far more than 2 RTTs between updates
        assert _feed_window(core, now) == INITIAL_WINDOW // 2
    assert core.receive_window(1) == INITIAL_WINDOW
    no_rtt = server_with_stream(1)
    no_rtt.send_data(1, memoryview(b"r"))
    no_rtt.data_to_send()
    assert _feed_window(no_rtt, 0.0) == INITIAL_WINDOW // 2


def test_stop_receiving_discards_but_still_credits() -> None:
    server = server_with_stream(1)
    server.send_data(1, memoryview(b"r"))
    server.data_to_send()
    server.receive_data(data(1, b"\0" * 1000), 0.0)
    server.stop_receiving(1, 0.0)
    events = server.receive_data(data(1, b"\0" * (INITIAL_WINDOW - 1000)), 0.0)
    assert events == []
    assert bytes(server.data_to_send()) == encode_frame(TYPE_WINDOW_UPDATE, 0, 1, INITIAL_WINDOW)


# ---- bounds --------------------------------------------------------------------------------


def test_accept_backlog_resets_the_excess() -> None:
    server = YamuxCore(False, accept_backlog=2)
    assert server.receive_data(syn(1) + syn(3), 0.0) == [StreamOpened(1), StreamOpened(3)]
    server.data_to_send()
    assert server.receive_data(syn(5) + data(5, b"dropped"), 0.0) == []
    assert bytes(server.data_to_send()) == encode_frame(TYPE_WINDOW_UPDATE, FLAG_RST, 5, 0)
    server.stream_accepted(1)
    assert server.receive_data(syn(7), 0.0) == [StreamOpened(7)]


def test_unacked_outbound_streams_are_bounded() -> None:
    client = YamuxCore(True, max_unacked=3)
    ids = [client.open_stream(0.0) for _ in range(3)]
    with pytest.raises(ResourceLimitExceeded):
        client.open_stream(0.0)
    client.receive_data(encode_frame(TYPE_WINDOW_UPDATE, FLAG_ACK, ids[0], 0), 0.0)
    client.open_stream(0.0)
    with pytest.raises(ResourceLimitExceeded):
        client.open_stream(0.0)
    client.receive_data(encode_frame(TYPE_WINDOW_UPDATE, FLAG_RST, ids[1], 0), 0.0)  # refused: credit back
    client.open_stream(0.0)
    assert client.unacked_streams == 3


def test_default_limits() -> None:
    client = YamuxCore(True)
    for _ in range(256):
        client.open_stream(0.0)
    with pytest.raises(ResourceLimitExceeded):
        client.open_stream(0.0)
    # the accept backlog (256) with a memory budget that allows more streams
    server = YamuxCore(False, memory=MemoryBudget(1 << 30))
    frames = b"".join(syn(i) for i in range(1, 2 * 257, 2))
    events = server.receive_data(frames, 0.0)
    assert len(events) == 256
    assert server.data_to_send().endswith(encode_frame(TYPE_WINDOW_UPDATE, FLAG_RST, 513, 0))
    # the default memory budget: 32 MiB of 256 KiB windows, 128 streams (go's connection scope)
    server = YamuxCore(False)
    events = server.receive_data(frames, 0.0)
    assert len(events) == CONNECTION_MEMORY // INITIAL_WINDOW == 128
    assert server.refused == {"memory budget": 129}


def test_pongs_are_bounded() -> None:
    core = YamuxCore(True)
    core.receive_data(encode_frame(TYPE_PING, FLAG_SYN, 0, 1) * 1000, 0.0)
    assert core.pending_output == 64 * 12  # the rest are dropped until the output is drained


def test_local_goaway_refuses_new_inbound_streams() -> None:
    server = YamuxCore(False)
    server.close()
    assert bytes(server.data_to_send()) == encode_frame(TYPE_GO_AWAY, 0, 0, 0)
    assert server.receive_data(syn(1), 0.0) == []
    assert bytes(server.data_to_send()) == encode_frame(TYPE_WINDOW_UPDATE, FLAG_RST, 1, 0)
    with pytest.raises(ConnectionClosed):
        server.open_stream(0.0)


# ---- violations ----------------------------------------------------------------------------

VIOLATIONS = {
    "version": b"\x01" + encode_frame(TYPE_DATA, FLAG_SYN, 1, 0)[1:],
    "type": encode_frame(4, 0, 0, 0),
    "flags": encode_frame(TYPE_DATA, 0x10 | FLAG_SYN, 1, 0),
    "syn existing": syn(1) + syn(1),
    "parity": syn(2),
    "stream zero": encode_frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 0, 0),
    "syn ack": encode_frame(TYPE_WINDOW_UPDATE, FLAG_SYN | FLAG_ACK, 1, 0),
    "ping stream": encode_frame(TYPE_PING, FLAG_SYN, 1, 0),
    "ping flags": encode_frame(TYPE_PING, FLAG_FIN, 0, 0),
    "goaway stream": encode_frame(TYPE_GO_AWAY, 0, 1, 0),
    "goaway flags": encode_frame(TYPE_GO_AWAY, FLAG_SYN, 0, 0),
    "window overflow": syn(1) + encode_frame(TYPE_WINDOW_UPDATE, 0, 1, 0xFFFFFFFF),
    "window": syn(1) + data(1, b"\0" * (INITIAL_WINDOW + 1)),
}


@pytest.mark.parametrize("raw", VIOLATIONS.values(), ids=VIOLATIONS.keys())
def test_violations_raise_and_send_goaway(raw: bytes) -> None:
    server = YamuxCore(False)
    with pytest.raises(MuxerError):
        server.receive_data(raw, 0.0)
    assert bytes(server.data_to_send()).endswith(GO_AWAY_PROTOCOL_ERROR)
    assert server.is_failed


# ---- keep-alive ----------------------------------------------------------------------------


def test_keepalive_pings_when_idle_and_times_out() -> None:
    core = YamuxCore(True, keepalive_interval=30.0, keepalive_timeout=10.0)
    core.start(100.0)
    core.data_to_send()  # the RTT ping
    assert core.timer() == 130.0
    assert core.handle_timer(130.0) == []
    assert decode_header(bytes(core.data_to_send())).type == TYPE_PING
    assert core.timer() == 140.0
    assert core.handle_timer(140.0) == [KeepaliveTimeout()]


def test_keepalive_is_satisfied_by_any_traffic() -> None:
    core = YamuxCore(True, keepalive_interval=30.0, keepalive_timeout=10.0)
    core.start(0.0)
    core.handle_timer(30.0)
    core.receive_data(syn(2), 35.0)
    assert core.handle_timer(40.0) == []
    assert core.timer() == 65.0
    assert YamuxCore(True, keepalive_interval=None).timer() is None


# ---- fuzzing -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.booleans())
def test_fuzz_random_bytes(raw: bytes, is_client: bool) -> None:
    core = YamuxCore(is_client)
    try:
        core.receive_data(raw, 0.0)
    except ProtocolViolation:
        assert core.is_failed


@st.composite
def frame_sequences(draw: st.DrawFn) -> bytes:
    """Valid client->server frames: opens, data within the window, updates, FIN, RST, pings."""
    out = bytearray()
    open_ids: set[int] = set()
    finished: set[int] = set()
    reset: set[int] = set()
    next_id = 1
    for _ in range(draw(st.integers(1, 25))):
        action = draw(st.sampled_from(["open", "data", "update", "fin", "rst", "ping", "pong", "unknown"]))
        live = sorted(open_ids - finished)
        if action == "open" or not live:
            flags = FLAG_SYN
            payload = draw(st.binary(max_size=300))
            out += encode_frame(TYPE_DATA if payload else TYPE_WINDOW_UPDATE, flags, next_id, len(payload), payload)
            open_ids.add(next_id)
            next_id += 2
            continue
        sid = draw(st.sampled_from(live))
        if action == "data":
            payload = draw(st.binary(max_size=3000))
            out += data(sid, payload)
        elif action == "update":
            out += encode_frame(TYPE_WINDOW_UPDATE, 0, sid, draw(st.integers(0, 1 << 20)))
        elif action == "fin":
            out += data(sid, draw(st.binary(max_size=100)), FLAG_FIN)
            finished.add(sid)
        elif action == "rst":
            out += encode_frame(TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0)
            finished.add(sid)
            reset.add(sid)
        elif action == "ping":
            out += encode_frame(TYPE_PING, FLAG_SYN, 0, draw(st.integers(0, 0xFFFFFFFF)))
        elif action == "pong":
            out += encode_frame(TYPE_PING, FLAG_ACK, 0, draw(st.integers(0, 0xFFFFFFFF)))
        elif reset:
            out += data(min(reset), draw(st.binary(max_size=50)))  # in flight for a freed stream: skipped
    return bytes(out)


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
    whole = YamuxCore(False)
    expected = whole.receive_data(raw, 0.0)
    chopped = YamuxCore(False)
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
    core = YamuxCore(False)
    try:
        core.receive_data(bytes(mutated), 0.0)
    except MuxerError:
        assert bytes(core.data_to_send()).endswith(GO_AWAY_PROTOCOL_ERROR)


@pytest.mark.parametrize("sid", [1, 7, 2**31 - 1])  # freed, never opened, never opened (huge id)
def test_data_for_an_unknown_stream_beyond_any_window_is_a_violation(sid: int) -> None:
    """A data frame announcing 2 GiB on a stream that does not exist used to be read and discarded as
    payload (the connection stalled, pings went unanswered); no window we grant allows it."""
    server = server_with_stream(1)
    server.receive_data(encode_frame(TYPE_WINDOW_UPDATE, FLAG_RST, 1, 0), 0.0)  # stream 1 is freed
    server.data_to_send()
    with pytest.raises(MuxerError, match="exceed any window"):
        server.receive_data(encode_frame(TYPE_DATA, 0, sid, 2**31), 0.0)
    assert bytes(server.data_to_send()) == GO_AWAY_PROTOCOL_ERROR


def test_data_in_flight_for_a_freed_stream_within_the_window_is_dropped_quietly() -> None:
    server = server_with_stream(1)
    server.receive_data(encode_frame(TYPE_WINDOW_UPDATE, FLAG_RST, 1, 0), 0.0)
    assert server.receive_data(data(1, b"x" * INITIAL_WINDOW) + syn(3), 0.0) == [StreamOpened(3)]


def test_data_with_rst_beyond_the_receive_window_is_a_violation() -> None:
    server = server_with_stream(1)
    with pytest.raises(MuxerError, match="receive window"):
        server.receive_data(encode_frame(TYPE_DATA, FLAG_RST, 1, INITIAL_WINDOW + 1), 0.0)
