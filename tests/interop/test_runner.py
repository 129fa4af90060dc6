"""The matrix runner's own logic, without real peers: cells, judging, the table and the JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio

from interop.matrix import CellResult, CellSpec, cells, parse_stack, render, run_cell, stacks, to_json, write_json
from interop.mycel_side import CaseResult, RecordingEcho, mycel_unsupported, services
from interop.peers import CASES, IMPLS, PeerImpl, Stack
from mycel.core.errors import StreamReset
from mycel.protocols.echo import ECHO_PROTOCOL
from mycel.testing.hosts import memory_hosts


def test_every_impl_direction_and_stack_is_a_cell() -> None:
    specs = cells()
    assert len(specs) == len(IMPLS) * 2 * len(stacks())
    assert Stack("tcp", "noise", "mplex") in stacks()
    assert Stack("quic-v1", None, None) in stacks()
    names = {s.name for s in specs}
    assert "mycel -> js (tcp/tls/yamux)" in names and "py -> mycel (tcp/noise/mplex)" in names
    assert len({s.test_id for s in specs}) == len(specs)


def test_parse_stack() -> None:
    assert parse_stack("tcp/noise/yamux") == Stack("tcp", "noise", "yamux")
    assert parse_stack("quic-v1") == Stack("quic-v1", None, None)
    with pytest.raises(ValueError):
        parse_stack("tcp/noise")


def test_mycel_unsupported_names_the_missing_part() -> None:
    assert mycel_unsupported(Stack("tcp", "noise", "yamux")) is None
    assert mycel_unsupported(Stack("ws", "noise", "yamux")) == "mycel has no ws transport"
    assert mycel_unsupported(Stack("tcp", "secio", "yamux")) == "mycel has no secio security"


async def test_a_stack_the_peer_lacks_is_unsupported_with_its_reason() -> None:
    res = await run_cell(CellSpec("go", "dial", Stack("tcp", "noise", "mplex")))
    assert res.status == "unsupported"
    assert "mplex" in res.reason and "go-libp2p" in res.reason
    assert not res.cases


async def test_a_missing_peer_program_fails_the_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = PeerImpl("js", "js (not installed)", frozenset({"tcp"}), frozenset({"noise"}), frozenset({"yamux"}),
                    ("/nonexistent/node", "peer.mjs"))  # fmt: skip
    monkeypatch.setitem(IMPLS, "js", fake)
    res = await run_cell(CellSpec("js", "listen", Stack("tcp", "noise", "yamux")))
    assert res.status == "fail"
    assert "not installed" in res.reason and "interop-peers" in res.reason


def _result(status: str, cases: dict[str, str], reason: str = "") -> CellResult:
    spec = CellSpec("js", "dial", Stack("tcp", "noise", "yamux"))
    return CellResult(
        spec,
        status,  # type: ignore[arg-type]
        reason,
        1.5,
        {k: CaseResult(v, f"{k} detail") for k, v in cases.items()},  # type: ignore[arg-type]
        peer_log="peer said hello\n",
    )


def test_render_marks_cases_and_explains_failures_and_unsupported() -> None:
    ok = _result("pass", {c: "pass" for c in CASES} | {"half_close": "unsupported"})
    bad = _result("fail", {c: "pass" for c in CASES} | {"reset": "fail"}, "reset: reset detail")
    na = CellResult(CellSpec("go", "dial", Stack("tcp", "noise", "mplex")), "unsupported", "go has no mplex")
    text = render([ok, bad, na])
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["peer", "mycel", "stack"]
    assert "n/a" in lines[1] and "pass" in lines[1]
    assert "FAIL" in lines[2] and "reset: reset detail" in lines[2]
    assert "unsupported" in lines[3] and "go has no mplex" in lines[3]
    assert "half: half_close detail" in text  # the reason of an n/a case is printed
    assert "peer said hello" in text  # the failed cell's peer log is attached
    assert "3 cells: 1 pass, 1 fail, 1 unsupported" in text


def test_json_has_every_cell_and_logs_only_for_failures(tmp_path: Path) -> None:
    ok = _result("pass", {c: "pass" for c in CASES})
    bad = _result("fail", {c: "pass" for c in CASES} | {"ping": "fail"}, "ping: ping detail")
    path = write_json([ok, bad], 3.0, tmp_path / "m.json")
    data = json.loads(path.read_text())
    assert data["summary"] == {"pass": 1, "fail": 1, "unsupported": 0}
    assert [c["status"] for c in data["cells"]] == ["pass", "fail"]
    assert data["cells"][0]["peer_log"] == "" and "hello" in data["cells"][1]["peer_log"]
    assert data["cells"][1]["cases"]["ping"] == {"status": "fail", "detail": "ping detail"}
    assert to_json([], 0)["cells"] == []


async def test_lagged_echo_writes_after_the_remote_eof_and_records_resets() -> None:
    async with memory_hosts(2, services=lambda: services(RecordingEcho(lagged=True))) as (a, b):
        echo = b.service(RecordingEcho)
        await a.connect(b.addrs[0])
        stream = await a.new_stream(b.peer_id, [ECHO_PROTOCOL])
        payload = os.urandom(100_000)
        got = bytearray()
        async with trio.open_nursery() as nursery:

            async def writer() -> None:
                await stream.send_all(payload)
                await stream.send_eof()

            nursery.start_soon(writer)
            async for chunk in stream:
                got += chunk
        assert got == payload
        await stream.aclose()
        assert await echo.wait_for(lambda rs: any(r.end == "eof" for r in rs), timeout=10)
        rec = echo.records[-1]
        assert (rec.received, rec.sent, rec.sent_after_eof) == (100_000, 100_000, 1)

        # a peer waiting for some echo before it writes more still gets it
        stream = await a.new_stream(b.peer_id, [ECHO_PROTOCOL])
        await stream.send_all(b"r" * 64)
        assert await stream.receive_some(64)
        await stream.reset()
        assert await echo.wait_for(lambda rs: any(r.end == "reset" for r in rs), timeout=10)
        with pytest.raises(StreamReset):
            await stream.receive_some(1)
