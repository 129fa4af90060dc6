"""The shared dial cases (against in-memory echo servers) and the subprocess adapters (against a
stand-in peer program that follows or breaks the contract on purpose)."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from interop import cases, peers
from interop.peers import PeerImpl, Stack, Unsupported, _LineSplitter, _Tail, parse_line

STACK = Stack("tcp", "noise", "yamux")
FAKE = str(Path(__file__).with_name("fake_peer.py"))


# --- cases against in-memory echo servers ------------------------------------------------------------


class MemoryCaseStream:
    def __init__(self, stream: trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]) -> None:
        self.stream = stream
        self.was_reset = False

    async def write(self, data: bytes | memoryview) -> None:
        await self.stream.send_all(data)

    async def read(self, max_bytes: int) -> bytes:
        return bytes(await self.stream.receive_some(max_bytes))

    async def close_write(self) -> None:
        await self.stream.send_eof()

    async def reset(self) -> None:
        self.was_reset = True
        await self.stream.aclose()

    async def close(self) -> None:
        await self.stream.aclose()


Server = Callable[[trio.abc.HalfCloseableStream], Awaitable[None]]


async def good_echo(stream: trio.abc.HalfCloseableStream) -> None:
    try:
        async for data in stream:
            await stream.send_all(data)
        await stream.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def one_behind_echo(stream: trio.abc.HalfCloseableStream) -> None:
    """Like p2pd's pipe: echoes each chunk only when the next arrives, and the remote's half-close
    ends the whole stream, so what is still in flight is lost."""
    held = b""
    async for data in stream:
        if held:
            await stream.send_all(held)
        held = bytes(data)
    await stream.aclose()


def make_hooks(nursery: trio.Nursery, server: Server) -> cases.DialHooks:
    async def open_echo() -> cases.CaseStream:
        left, right = trio.testing.memory_stream_pair()
        nursery.start_soon(server, right)
        return MemoryCaseStream(left)

    async def ok() -> cases.Report:
        return {"detail": "fine"}

    return cases.DialHooks(connect=ok, identify=ok, ping=ok, open_echo=open_echo)


async def test_all_cases_pass_against_a_correct_echo() -> None:
    async with trio.open_nursery() as nursery:
        results = await cases.run_dial_cases(make_hooks(nursery, good_echo), case_timeout=30)
        nursery.cancel_scope.cancel()
    assert list(results) == list(cases.CASES)
    assert all(r["ok"] for r in results.values()), results
    assert results["echo_64_streams"]["ok_streams"] == 64
    assert results["echo_1mib"]["bytes"] == 1 << 20


async def test_an_echo_that_dies_on_half_close_fails_the_right_cases(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        results = await cases.run_dial_cases(make_hooks(nursery, one_behind_echo), case_timeout=5)
        nursery.cancel_scope.cancel()
    assert results["half_close"] == {"ok": False, "detail": "EOF after 0 of 10000 bytes: the echo was cut short by the half-close"}
    assert results["echo_1mib"]["detail"].startswith("echo differs: sent 1048576 bytes, got 983040")
    assert results["echo_64_streams"]["ok_streams"] == 0
    assert results["reset"] == {"ok": False, "detail": "timed out after 5s"}  # nothing echoed to see
    assert results["connect"]["ok"] and results["ping"]["ok"]


async def test_corrupting_echo_reports_the_first_difference() -> None:
    async def corrupt(stream: trio.abc.HalfCloseableStream) -> None:
        data = bytearray()
        async for chunk in stream:
            data += chunk
        data[1000] ^= 0xFF
        await stream.send_all(data)
        await stream.send_eof()

    async with trio.open_nursery() as nursery:
        report = await cases.guarded("half_close", lambda: cases.case_half_close(make_hooks(nursery, corrupt)), 30)
        nursery.cancel_scope.cancel()
    assert report == {"ok": False, "detail": "echo differs: sent 10000 bytes, got 10000, first difference at 1000"}


async def test_a_failing_hook_does_not_stop_the_other_cases() -> None:
    async with trio.open_nursery() as nursery:
        hooks = make_hooks(nursery, good_echo)

        async def refuse() -> cases.Report:
            raise ConnectionRefusedError("nobody home")

        hooks.connect = refuse
        results = await cases.run_dial_cases(hooks, case_timeout=30)
        nursery.cancel_scope.cancel()
    assert results["connect"] == {"ok": False, "detail": "ConnectionRefusedError: nobody home"}
    assert results["reset"]["ok"] is True


async def test_a_hanging_case_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async def hang() -> cases.Report:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    start = trio.current_time()
    report = await cases.guarded("ping", hang, timeout=12)
    assert report == {"ok": False, "detail": "timed out after 12s"}
    assert trio.current_time() - start == pytest.approx(12)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_first_mismatch_matches_a_plain_scan(a: bytes, b: bytes) -> None:
    n = min(len(a), len(b))
    expected = next((i for i in range(n) if a[i] != b[i]), n)
    assert cases._first_mismatch(a, b) == expected


# --- adapter pieces ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b), max_size=10), st.data())
def test_fuzz_line_splitter_any_chunking(lines: list[bytes], data: st.DataObject) -> None:
    wire = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    splitter = _LineSplitter(1024)
    got: list[bytes] = []
    prev = 0
    for cut in [*cuts, len(wire)]:
        got += splitter.feed(wire[prev:cut])
        prev = cut
    assert got == lines and splitter.rest() == b""


def test_line_splitter_bounds_a_line() -> None:
    splitter = _LineSplitter(10)
    splitter.feed(b"12345")
    with pytest.raises(peers.PeerError):
        splitter.feed(b"678901")
    with pytest.raises(peers.PeerError):
        _LineSplitter(10).feed(b"x" * 11 + b"\nok\n")


def test_tail_keeps_only_the_last_bytes() -> None:
    tail = _Tail(8)
    tail.feed(b"0123456789")
    tail.feed(b"ab")
    assert tail.text().endswith("456789ab") and "4 earlier bytes dropped" in tail.text()


def test_parse_line() -> None:
    assert parse_line(b'{"a": 1}') == {"a": 1}
    assert parse_line(b"[1]") is None
    assert parse_line(b"{broken") is None


def test_support_matrix() -> None:
    assert peers.GO.unsupported_reason(Stack("tcp", "noise", "mplex")) is not None
    assert peers.GO.unsupported_reason(Stack("tcp", "tls", "yamux")) is None
    assert peers.JS.unsupported_reason(Stack("tcp", "noise", "mplex")) is None
    quic = Stack("quic-v1", None, None)
    assert peers.PY.unsupported_reason(quic) is None
    assert peers.GO.unsupported_reason(quic) is None
    assert quic.args() == ["--transport", "quic-v1", "--security", "none", "--muxer", "none"]
    # QUIC brings its own security and streams: a security or muxer with it is not a stack
    assert "not a stack" in (peers.PY.unsupported_reason(Stack("quic-v1", "noise", "yamux")) or "")
    assert peers.PY.unsupported_reason(Stack("webrtc", None, None)) is not None
    assert peers.PY.timeout_factor(quic) == 2.0 and peers.GO.timeout_factor(quic) == 1.0
    assert peers.PY.timeout_factor(STACK) == 1.0
    assert STACK.args() == ["--transport", "tcp", "--security", "noise", "--muxer", "yamux"]


# --- adapters against the stand-in program ----------------------------------------------------------


def fake(behaviour: str) -> PeerImpl:
    return PeerImpl(
        key=f"fake-{behaviour}",
        name="fake",
        transports=frozenset({"tcp"}),
        securities=frozenset({"noise"}),
        muxers=frozenset({"yamux"}),
        program=(sys.executable, FAKE, behaviour),
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_listener_ready_line_events_and_clean_stop() -> None:
    async with fake("good").listen(STACK) as peer:
        assert peer.peer_id == "Fake" and peer.addrs == ["/ip4/127.0.0.1/tcp/1/p2p/Fake"]
        events = await peer.wait_for_event("stream_reset", timeout=10, count=2)
        assert [e["n"] for e in events] == [1, 3]
        assert len(peer.events()) == 3
        pid = peer.info["pid"]
    assert peer.returncode == 0  # stopped by closing its stdin, no signal needed
    assert not alive(pid)
    assert "log line to stderr" in peer.log


async def test_stubborn_listener_and_its_child_are_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "STOP_GRACE", 0.5)
    async with fake("stubborn").listen(STACK) as peer:
        child_fd = os.pidfd_open(peer.info["child_pid"])  # readable once that process has exited
    try:
        assert peer.returncode == -9
        # the listener's own child (which also ignores SIGTERM) was in its process group
        with trio.fail_after(10):
            await trio.lowlevel.wait_readable(child_fd)
    finally:
        os.close(child_fd)


async def test_unsupported_listener_raises() -> None:
    with pytest.raises(Unsupported, match="fake says no"):
        async with fake("unsupported").listen(STACK):
            pass
    with pytest.raises(Unsupported, match="muxer mplex"):
        async with fake("good").listen(Stack("tcp", "noise", "mplex")):
            pass


async def test_listener_with_an_overlong_line_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "STOP_GRACE", 0.5)
    with pytest.raises(peers.PeerError, match="longer than"):
        async with fake("huge").listen(STACK):
            pass


async def test_dial_parses_the_report_and_skips_noise() -> None:
    result = await fake("good").dial(STACK, "/ip4/127.0.0.1/tcp/1/p2p/Fake", timeout=30)
    assert result.error is None and result.returncode == 0
    assert set(result.cases) == set(peers.CASES)
    assert result.cases["reset"]["ok"] is False and not result.ok


async def test_dial_timeout_kills_the_dialer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "STOP_GRACE", 0.5)
    result = await fake("silent").dial(STACK, "/ip4/127.0.0.1/tcp/1/p2p/Fake", timeout=1)
    assert result.error == "dialer killed after 1s" and result.cases == {}
    assert result.returncode == -15


async def test_dial_unsupported() -> None:
    result = await fake("unsupported").dial(STACK, "/ip4/127.0.0.1/tcp/1/p2p/Fake", timeout=30)
    assert result.unsupported == "fake says no" and result.returncode == 3


def test_error_detail_unwraps_groups_and_causes() -> None:
    try:
        raise KeyError() from OSError("socket gone")
    except KeyError as exc:
        chained = exc
    group = ExceptionGroup("nursery", [ValueError("bad"), cases.CaseFailed("short echo"), ValueError("bad")])
    assert cases._error_detail(group) == "ValueError: bad; short echo"
    assert cases._error_detail(chained) == "KeyError (from OSError: socket gone)"
