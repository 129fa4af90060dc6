"""Harnesses for the framing decoders: uvarints, uvarint-length-prefixed messages (every protobuf
protocol's framing), multistream-select, yamux and mplex frames."""

from __future__ import annotations

import struct

from mycel.core.errors import (
    ConnectionClosed,
    DecodeError, MessageTooLarge, MuxerError,
    NegotiationError,
    ResourceLimitExceeded,
    UnexpectedEOF,
)
from mycel.core.framing import receive_message
from mycel.core.varint import LengthPrefixedDecoder, decode_uvarint, encode_uvarint
from mycel.multistream import core as ms
from mycel.muxers.events import StreamData, StreamOpened
from mycel.muxers.mplex import core as mplex
from mycel.muxers.yamux import core as yamux

from fuzz.core import FakeReceiveStream, Harness, Source, blob, chance, chunks, drive, hostile_int, pick

_U63 = (1 << 63) - 1


def gen_uvarint(src: Source, value: int | None = None) -> bytes:
    """A uvarint: mostly minimal encodings of values of every size, sometimes non-minimal, over-long
    (10+ bytes) or cut short."""
    if value is None:
        bits = src.int(0, 63)
        value = src.int(0, (1 << bits) - 1) if bits else 0
    kind = src.int(0, 19)
    enc = encode_uvarint(min(value, _U63))
    if kind < 15:
        return enc
    if kind < 17:  # non-minimal: a continuation byte then a zero byte
        return bytes(b | 0x80 for b in enc) + b"\x80" * src.int(0, 3) + b"\x00"
    if kind < 19:  # over-long
        return b"\xff" * src.int(9, 12) + b"\x01"
    return enc[:-1]  # truncated


class Varint(Harness):
    """``decode_uvarint`` at an offset: a decoded value must re-encode to exactly the bytes read."""

    name = "varint"
    expected = (DecodeError,)
    min_past_ratio = 0.6

    def one(self, src: Source) -> None:
        prefix = blob(src, 3)
        data = prefix + gen_uvarint(src) + blob(src, 4)
        res = decode_uvarint(data, len(prefix))
        if res is None:
            assert all(b & 0x80 for b in data[len(prefix) :]), "None returned for a complete varint"
            return
        value, end = res
        self.past = True
        assert 0 <= value <= _U63
        assert encode_uvarint(value) == data[len(prefix) : end], "decoded value does not re-encode to its bytes"


class LengthPrefixed(Harness):
    """``LengthPrefixedDecoder`` (and ``receive_message``) with lengths from tiny to 2^63 - 1 (the
    unbounded-varint-length attack, GHSA-xqvc-92cf-94j4): a length over ``max_size`` must fail before
    its body is buffered; buffered bytes stay within ``max_size`` + one chunk."""

    name = "length_prefixed"
    expected = (DecodeError, MessageTooLarge, UnexpectedEOF)
    min_past_ratio = 0.5

    def one(self, src: Source) -> None:
        max_size = pick(src, (0, 1, 64, 1024, 8192))
        bodies = []
        wire = bytearray()
        for _ in range(src.int(1, 6)):
            length = hostile_int(src, min(max_size, 200), max_size + 1) if chance(src, 85) else src.int(0, _U63)
            body = src.bytes(min(length, max_size + 1, 4096))
            prefix = gen_uvarint(src, length)
            wire += prefix + body
            bodies.append((length, body))
        if chance(src, 10):
            wire += blob(src, 8)
        pieces = chunks(src, bytes(wire))
        if chance(src, 30):
            got = drive(receive_message(FakeReceiveStream(pieces), max_size))  # type: ignore[arg-type]
            if got is not None:
                self.past = True
                assert len(got) <= max_size
            return
        decoder = LengthPrefixedDecoder(max_size)
        for piece in pieces:
            decoder.feed(piece)
            while (msg := decoder.next_message()) is not None:
                self.past = True
                assert len(msg) <= max_size
            assert decoder.buffered <= max_size + 9 + len(piece), "decoder buffered past its bound"


class Multistream(Harness):
    """multistream-select: the header then proposals / ``ls`` / answers, each message a valid frame with
    hostile fields (wrong or missing newline, non-UTF-8, over 1024 bytes, lengths that lie), read as
    ``read_message`` reads them (exactly what ``needed()`` asks), into a listener or a dialer core."""

    name = "multistream"
    expected = (NegotiationError, DecodeError, MessageTooLarge)
    min_past_ratio = 0.6

    PROTOS = ("/yamux/1.0.0", "/mplex/6.7.0", "/noise", "/ipfs/id/1.0.0", ms.LS, ms.NA)

    def _message(self, src: Source, text: bytes) -> bytes:
        kind = src.int(0, 19)
        body = text + b"\n"
        if kind < 13:
            return gen_uvarint(src, len(body)) if kind == 0 else encode_uvarint(len(body)) + body
        if kind == 13:
            return encode_uvarint(len(text)) + text  # no newline
        if kind == 14:
            return encode_uvarint(len(body) + 2) + b"\xff\xfe" + body  # not UTF-8
        if kind == 15:
            big = src.int(ms.MAX_MESSAGE_SIZE - 2, ms.MAX_MESSAGE_SIZE + 8)
            return encode_uvarint(big + 1) + b"a" * big + b"\n"
        if kind == 16:
            return encode_uvarint(src.int(0, _U63)) + body  # a length that lies (often huge)
        if kind == 17:
            return encode_uvarint(max(0, len(body) - src.int(1, 3))) + body  # shorter than its body
        if kind == 18:
            return encode_uvarint(len(body)) + body[: src.int(0, len(body))]  # cut short
        return blob(src, 24)

    def one(self, src: Source) -> None:
        listener = chance(src, 60)
        header = ms.PROTOCOL_ID.encode() if chance(src, 90) else pick(src, (b"/multistream/2.0.0", b"", b"SSH-2.0"))
        wire = self._message(src, header) if chance(src, 25) else encode_uvarint(len(header) + 1) + header + b"\n"
        for _ in range(src.int(0, 40)):
            text = pick(src, self.PROTOS).encode() if chance(src, 70) else blob(src, 40)
            wire += self._message(src, text)
        decoder = ms.MessageDecoder(expect_header=True)
        supported = {"/yamux/1.0.0", "/noise"}
        core: ms.ListenerCore | ms.DialerCore = (
            ms.ListenerCore(supported.__contains__, lambda: sorted(supported))
            if listener
            else ms.DialerCore(["/mplex/6.7.0", "/yamux/1.0.0"])
        )
        pos = 0
        exact = chance(src, 70)  # as read_message reads, or in arbitrary pieces
        messages = 0
        while pos < len(wire):
            n = decoder.needed() if exact else src.int(1, 64)
            decoder.feed(wire[pos : pos + n])
            pos += n
            assert decoder.buffered <= ms.MAX_MESSAGE_SIZE + 16 + n
            while (msg := decoder.next_message()) is not None:
                core.receive(msg)
                messages += 1
                self.past = True
                self.deep = messages > 1
                if core.selected is not None:
                    return


def _yamux_frame(src: Source, peer_ids: list[int], is_client: bool) -> bytes:
    """One yamux frame: valid version, type, flags and stream id most of the time, hostile lengths."""
    ftype = pick(src, (0, 0, 0, 1, 1, 2, 3)) if chance(src, 95) else src.int(4, 255)
    version = 0 if chance(src, 97) else src.int(1, 255)
    remote_parity = 0 if is_client else 1  # the remote opens ids of the other parity
    if ftype in (2, 3):
        sid = 0 if chance(src, 95) else src.int(1, 8)
        flags = (pick(src, (1, 2)) if ftype == 2 else 0) if chance(src, 95) else src.int(0, 0xFFFF)
        length = src.int(0, 0xFFFFFFFF) if ftype == 2 else pick(src, (0, 1, 2, src.int(3, 0xFFFFFFFF)))
        return struct.pack(">BBHII", version, ftype, flags, sid, length)
    k = src.int(0, 9)
    if k < 6 or not peer_ids:
        sid = (2 * src.int(0, 20) + remote_parity) if chance(src, 90) else src.int(0, 0xFFFFFFFF)
        if chance(src, 50) and k < 6:
            peer_ids.append(sid)
    else:
        sid = pick(src, peer_ids)
    flags = pick(src, (0, 0, 0, 1, 2, 4, 8, 5, 3, 9)) if chance(src, 95) else src.int(0, 0xFFFF)
    if ftype == 0:
        length = hostile_int(src, 300, yamux.INITIAL_WINDOW + 1) if chance(src, 90) else src.int(0, 0xFFFFFFFF)
        payload = src.bytes(min(length, 2048)) if length <= 2048 or chance(src, 50) else b""
        return struct.pack(">BBHII", version, ftype, flags, sid, length) + payload
    length = hostile_int(src, 70_000, 0xFFFFFFFF)
    return struct.pack(">BBHII", version, ftype, flags, sid, length)


class Yamux(Harness):
    """The yamux session core: the first frame is well formed (a SYN, a ping, window update, data) and
    the rest are frames with valid headers and hostile fields (ids of the wrong parity, lengths past the
    window, 2 GiB data for unknown streams, window overflows, unknown flags), fed in random pieces with
    local operations (open, send, consume, accept, reset, keep-alive) between them. Invariants: no
    stream buffers more than its window; the accept backlog and queued pongs stay bounded."""

    name = "yamux"
    expected = (MuxerError,)
    min_past_ratio = 0.6

    def one(self, src: Source) -> None:
        is_client = chance(src, 50)
        core = yamux.YamuxCore(is_client, accept_backlog=pick(src, (4, 256)))
        now = 0.0
        core.start(now)
        ids: list[int] = []
        frames = [_yamux_frame(src, ids, is_client) for _ in range(src.int(1, 24))]
        if chance(src, 70):  # most sessions start as real ones do: the remote opens a stream
            sid = 2 * src.int(0, 20) + (0 if is_client else 1)
            ids.append(sid)
            frames.insert(0, struct.pack(">BBHII", 0, pick(src, (0, 1)), yamux.FLAG_SYN, sid, 0))
        local: list[int] = []
        inbound: list[int] = []
        first = True
        for frame in frames:
            for piece in chunks(src, frame, 3):
                now += src.int(0, 2000) / 1000
                events = core.receive_data(piece, now)
                for ev in events:
                    if isinstance(ev, StreamOpened):
                        inbound.append(ev.key)
                    elif isinstance(ev, StreamData):
                        assert len(ev.data) <= yamux.MAX_WINDOW
            if first and not core.is_failed:
                self.past = True
                first = False
            else:
                self.deep = True
            self._local(src, core, local, inbound, now)
            for st in core._streams.values():
                assert st.buffered <= core.max_window, "a stream buffered past any window"
                assert st.recv_credit >= 0
            assert core.pending_accept <= core.accept_backlog
            assert core.pending_output <= 1 << 22, "queued output grew without bound"

    def _local(self, src: Source, core: yamux.YamuxCore, local: list[int], inbound: list[int], now: float) -> None:
        op = src.int(0, 9)
        if op == 0:
            try:
                local.append(core.open_stream(now))
            except (ConnectionClosed, ResourceLimitExceeded):  # after a GoAway, or too many unacked: API
                pass
        elif op == 1 and inbound:
            core.stream_accepted(pick(src, inbound))
        elif op == 2 and (local or inbound):
            key = pick(src, local + inbound)
            if core.send_window(key):
                core.send_data(key, memoryview(src.bytes(src.int(1, 512))))
        elif op == 3 and (local or inbound):
            key = pick(src, local + inbound)
            st = core._streams.get(key)
            if st is not None and st.buffered:
                core.consume(key, src.int(1, st.buffered), now)
        elif op == 4 and (local or inbound):
            core.reset_stream(pick(src, local + inbound))
        elif op == 5:
            core.handle_timer(now + 40)
        elif op == 6:
            core.data_to_send()


def _mplex_frame(src: Source, sids: list[int]) -> bytes:
    flag = pick(src, (0, 0, 1, 2, 2, 3, 4, 5, 6)) if chance(src, 95) else 7
    if sids and chance(src, 70):
        sid = pick(src, sids)
    else:
        sid = src.int(0, 16) if chance(src, 90) else src.int(0, (1 << 60) - 1)
        sids.append(sid)
    length = hostile_int(src, 300, mplex.MAX_MESSAGE + 1) if chance(src, 92) else src.int(0, _U63)
    payload = src.bytes(min(length, 2048)) if length <= 2048 or chance(src, 50) else b""
    if chance(src, 95):
        header = encode_uvarint(sid << 3 | flag) + encode_uvarint(length)
    else:  # non-minimal / over-long varints in the header
        header = gen_uvarint(src, sid << 3 | flag) + gen_uvarint(src, length)
    return header + payload


class Mplex(Harness):
    """The mplex session core: valid frames with hostile fields (unknown flags, streams never opened,
    ids up to 2^60, lengths past the 1 MiB message bound, non-minimal varints), in random pieces, with
    local operations between frames. Invariants: no stream buffers past ``max_buffer``; the accept
    backlog stays bounded."""

    name = "mplex"
    expected = (MuxerError,)
    min_past_ratio = 0.6

    def one(self, src: Source) -> None:
        core = mplex.MplexCore(max_buffer=pick(src, (4096, mplex.MAX_BUFFER)), accept_backlog=pick(src, (4, 256)))
        sids: list[int] = []
        inbound: list[int] = []
        local: list[int] = []
        first = True
        for _ in range(src.int(1, 24)):
            frame = _mplex_frame(src, sids)
            for piece in chunks(src, frame, 3):
                for ev in core.receive_data(piece, 0.0):
                    if isinstance(ev, StreamOpened):
                        inbound.append(ev.key)
            if first:
                self.past = True
                first = False
            else:
                self.deep = True
            op = src.int(0, 7)
            if op == 0:
                try:
                    local.append(core.open_stream(0.0))
                except ConnectionClosed:  # failed or closed session: the API's answer
                    pass
            elif op == 1 and inbound:
                core.stream_accepted(pick(src, inbound))
            elif op == 2 and (local or inbound):
                key = pick(src, local + inbound)
                st = core._streams.get(key)
                if st is not None and st.buffered:
                    core.consume(key, src.int(1, st.buffered), 0.0)
            elif op == 3 and (local or inbound):
                core.reset_stream(pick(src, local + inbound))
            for st in core._streams.values():
                assert st.buffered <= core.max_buffer, "an mplex stream buffered past max_buffer"
            assert core.pending_accept <= core.accept_backlog


HARNESSES = [Varint, LengthPrefixed, Multistream, Yamux, Mplex]
