"""Muxer floods against a real mycel listener (its own process on 127.0.0.1): the node keeps serving
a well-behaved peer *during* the attack (pings and a 1 MiB echo), closes only the attacker's
connection, and its RSS grows less than 64 MiB (issue #12 item 3). Bounded in count and time."""

from __future__ import annotations

import struct

import pytest
import trio

from mycel.core.abc import SecureConnection
from mycel.core.varint import encode_uvarint
from mycel.muxers.mplex.core import MESSAGE_INITIATOR, NEW_STREAM
from mycel.muxers.yamux.core import FLAG_SYN, TYPE_DATA, TYPE_GO_AWAY, TYPE_PING, TYPE_WINDOW_UPDATE, encode_frame
from mycel.protocols.echo import ECHO_PROTOCOL
from tests.flood.muxer_attacks import (
    RSS_BOUND,
    Listener,
    MiB,
    legit_peer,
    listener_process,
    YamuxFrames,
    negotiation,
    raw_connection,
    served,
)

HEADER = struct.Struct(">BBHII")


async def closed_by_listener(conn: SecureConnection, timeout: float = 5.0) -> list[tuple[int, int, int]]:
    """Read what the listener still sends until it closes the connection; returns its GoAway frames
    as (type, flags, code). Fails if the connection stays open ``timeout`` seconds."""
    data = bytearray()
    with trio.fail_after(timeout):  # (the listener's GoAway and close need no waiting on our side)
        while True:
            try:
                chunk = await conn.receive_some(1 << 20)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            data += chunk
    goaways = []
    for pos in range(0, len(data) - 11, 12):  # frames the attacker never read start at 12-byte steps
        _, type_, flags, _, length = HEADER.unpack_from(data, pos)
        if type_ == TYPE_GO_AWAY:
            goaways.append((type_, flags, length))
    return goaways


async def attack_while_served(listener: Listener, attack: object, seconds: float) -> tuple[int, list[float]]:
    """Run ``attack()`` for at most ``seconds`` while a well-behaved peer pings and echoes; return the
    listener's RSS growth and the peer's RTTs."""
    rtts: list[float] = []
    async with legit_peer(listener) as host:
        rtts += await served(host, listener)  # warm up: baseline after a normal connection
        base = listener.rss()
        async with trio.open_nursery() as nursery:

            async def attacker() -> None:
                with trio.move_on_after(seconds):
                    await attack()  # type: ignore[operator]
                nursery.cancel_scope.cancel()

            nursery.start_soon(attacker)
            for _ in range(3):  # served during the attack
                rtts += await served(host, listener)
                await trio.sleep(0.2)
        peak = listener.rss()
        rtts += await served(host, listener)  # and after it
    assert listener.alive()
    return peak - base, rtts


async def test_yamux_100k_syns_never_read() -> None:
    with listener_process() as listener:
        conn = await raw_connection(listener)

        async def attack() -> None:
            for batch in range(10):  # 100,000 SYNs, 1.2 MB; the attacker never reads
                await conn.send_all(b"".join(encode_frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1 + 2 * (batch * 10_000 + i), 0) for i in range(10_000)))
            await trio.sleep_forever()

        growth, rtts = await attack_while_served(listener, attack, 4.0)
        await conn.aclose()
    assert growth < RSS_BOUND, f"RSS grew {growth / MiB:.0f} MiB"
    assert max(rtts) < 2.0


@pytest.mark.parametrize("length", [MiB, 2**31])
async def test_yamux_data_for_a_never_opened_stream_closes_the_connection(length: int) -> None:
    with listener_process() as listener:
        conn = await raw_connection(listener)
        await conn.send_all(encode_frame(TYPE_DATA, 0, 7, length) + b"x" * 1000)
        assert (TYPE_GO_AWAY, 0, 1) in await closed_by_listener(conn)  # GoAway(protocol error), closed
        async with legit_peer(listener) as host:
            await served(host, listener)


async def _open_unread_echo_streams(conn: SecureConnection, count: int, per_stream: int) -> None:
    neg = negotiation(ECHO_PROTOCOL)
    for i in range(count):
        sid = 1 + 2 * i
        body = neg + b"e" * (per_stream - len(neg))
        await conn.send_all(encode_frame(TYPE_DATA, FLAG_SYN, sid, len(body), body))


async def test_yamux_512_echo_streams_never_read() -> None:
    with listener_process() as listener:
        conn = await raw_connection(listener)

        async def attack() -> None:
            await _open_unread_echo_streams(conn, 512, 256 * 1024)  # each fills its whole window
            await trio.sleep_forever()

        growth, _ = await attack_while_served(listener, attack, 5.0)
        await conn.aclose()
    assert growth < RSS_BOUND, f"RSS grew {growth / MiB:.0f} MiB"


async def test_yamux_window_inflation_by_a_late_pong_then_slow_echo_streams() -> None:
    """The attacker answers our RTT probe seconds late (so every reader looks fast to auto-tuning),
    reads the echoes of 64 streams for a while (their windows grow), then stops reading and fills
    every window it was granted. Before: windows grew towards 16 MiB each (231 MB held)."""
    from mycel.muxers.yamux.core import FLAG_ACK

    with listener_process() as listener:
        conn = await raw_connection(listener)
        frames = YamuxFrames()
        neg = negotiation(ECHO_PROTOCOL)
        reading = True
        granted = 0

        async def reader() -> None:
            while reading:
                data = await conn.receive_some(1 << 20)
                if not data:
                    return
                frames.feed(data)

        async def attack() -> None:
            nonlocal reading, granted
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                for i in range(64):
                    sid = 1 + 2 * i
                    frames.windows[sid] = 256 * 1024 - len(neg)
                    await conn.send_all(encode_frame(TYPE_DATA, FLAG_SYN, sid, len(neg), neg))
                chunk = b"w" * (64 * 1024)
                start = trio.current_time()
                while trio.current_time() - start < 3.0:
                    if frames.pings and trio.current_time() - start > 1.5:  # the RTT probe, answered late
                        await conn.send_all(encode_frame(TYPE_PING, FLAG_ACK, 0, frames.pings.pop(0)))
                    if trio.current_time() - start > 2.0:
                        reading = False  # from now on the echoes pile up on the listener's side
                    sent_any = False
                    for sid, window in list(frames.windows.items()):
                        if sid in frames.resets or window <= 0:
                            continue
                        n = min(window, len(chunk))
                        frames.windows[sid] -= n
                        granted += n
                        await conn.send_all(encode_frame(TYPE_DATA, 0, sid, n, chunk[:n]))
                        sent_any = True
                    if not sent_any:
                        await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
            await trio.sleep_forever()

        growth, rtts = await attack_while_served(listener, attack, 5.0)
        await conn.aclose()
    assert growth < RSS_BOUND, f"RSS grew {growth / MiB:.0f} MiB"
    assert max(rtts) < 2.0


async def test_yamux_ping_flood_from_a_peer_that_never_reads() -> None:
    with listener_process() as listener:
        conn = await raw_connection(listener)
        pings = encode_frame(TYPE_PING, FLAG_SYN, 0, 1) * 20_000

        sent = 0

        async def attack() -> None:
            nonlocal sent
            try:
                for _ in range(100):  # at most 2 million pings
                    await conn.send_all(pings)
                    sent += len(pings) // 12
            except trio.BrokenResourceError:  # the listener closed the connection under us
                pass
            await trio.sleep_forever()

        growth, rtts = await attack_while_served(listener, attack, 4.0)
        # the flood failed the attacker's connection (frames that do nothing, beyond a rate): it is
        # closed (the GoAway may be lost: the listener resets a socket with unread data in it)
        await closed_by_listener(conn)
        assert sent < 2_000_000
    assert growth < RSS_BOUND
    assert max(rtts) < 2.0


def _mplex(sid: int, flag: int, payload: bytes = b"") -> bytes:
    return encode_uvarint(sid << 3 | flag) + encode_uvarint(len(payload)) + payload


async def test_mplex_64_echo_streams_never_read() -> None:
    with listener_process("mplex") as listener:
        conn = await raw_connection(listener, "/mplex/6.7.0")
        neg = negotiation(ECHO_PROTOCOL)

        async def attack() -> None:
            for sid in range(64):
                await conn.send_all(_mplex(sid, NEW_STREAM) + _mplex(sid, MESSAGE_INITIATOR, neg))
            chunk = b"m" * MiB
            for _ in range(4):  # 4 MiB per stream (the per-stream limit): 256 MiB without a budget
                for sid in range(64):
                    await conn.send_all(_mplex(sid, MESSAGE_INITIATOR, chunk))
            await trio.sleep_forever()

        growth, _ = await attack_while_served(listener, attack, 5.0)
        await conn.aclose()
    assert growth < RSS_BOUND, f"RSS grew {growth / MiB:.0f} MiB"


async def test_mplex_frames_for_never_opened_streams_in_bulk() -> None:
    with listener_process("mplex") as listener:
        conn = await raw_connection(listener, "/mplex/6.7.0")

        async def attack() -> None:
            frames = b"".join(_mplex(1000 + i, MESSAGE_INITIATOR, b"u" * 1000) for i in range(1000))
            try:
                for _ in range(100):  # 100,000 frames, 100 MB
                    await conn.send_all(frames)
            except trio.BrokenResourceError:  # closed under us: frames for no stream beyond a rate
                pass
            await trio.sleep_forever()

        growth, _ = await attack_while_served(listener, attack, 4.0)
        await closed_by_listener(conn)
    assert growth < RSS_BOUND, f"RSS grew {growth / MiB:.0f} MiB"
