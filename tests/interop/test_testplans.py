"""The test-plans transport-interop entrypoint: RESP client, configuration, addresses, and two real
processes coordinating through a real redis-server (mycel<->mycel, mycel<->js)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from mycel.cli.testplans import (
    LEGACY_KEY,
    MAX_ARRAY,
    MAX_BULK,
    MAX_DEPTH,
    ErrorReply,
    RedisClient,
    Reply,
    RespParser,
    TestPlanConfig,
    encode_command,
    parse_host_port,
    pick_advertised_ip,
)
from mycel.core.errors import ConfigError, DecodeError, MessageTooLarge

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
NODE = REPO / "interop" / "js" / "node_modules" / "node" / "bin" / "node"
JS_TESTPLANS = REPO / "interop" / "js" / "testplans.mjs"
PROCESS_TIMEOUT = 60.0


# --- RESP ------------------------------------------------------------------------------------------


def encode_reply(value: Reply) -> bytes:
    """Test-side encoder (bytes as bulk strings)."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, ErrorReply):
        return b"-" + value.message.encode() + b"\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    return b"*%d\r\n" % len(value) + b"".join(encode_reply(v) for v in value)


def parse_all(data: bytes, split: int = 0) -> list[Reply]:
    parser = RespParser()
    out: list[Reply] = []
    pieces = [data[:split], data[split:]] if split else [data]
    for piece in pieces:
        parser.feed(piece)
        while True:
            done, reply = parser.next_reply()
            if not done:
                break
            out.append(reply)
    return out


def test_encode_command() -> None:
    assert encode_command("RPUSH", "k", "v") == b"*3\r\n$5\r\nRPUSH\r\n$1\r\nk\r\n$1\r\nv\r\n"
    assert encode_command("BLPOP", b"\xff", 1) == b"*3\r\n$5\r\nBLPOP\r\n$1\r\n\xff\r\n$1\r\n1\r\n"


def test_parse_each_reply_type() -> None:
    data = b"+PONG\r\n-ERR wrong type\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n$1\r\nk\r\n$2\r\nv1\r\n*-1\r\n$0\r\n\r\n"
    assert parse_all(data) == [b"PONG", ErrorReply("ERR wrong type"), 42, b"abc", None, [b"k", b"v1"], None, b""]


def test_incomplete_replies_wait_for_more() -> None:
    parser = RespParser()
    for piece in (b"*2\r\n$1\r", b"\nk\r\n$2\r\nv", b"1\r\n"):
        assert parser.next_reply() == (False, None)
        parser.feed(piece)
    assert parser.next_reply() == (True, [b"k", b"v1"])
    assert parser.buffered == 0


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"?what\r\n", DecodeError),
        (b":12x\r\n", DecodeError),
        (b"$3\r\nabcd\r\n", DecodeError),
        (b"$-2\r\n", DecodeError),
        (b"\r\n", DecodeError),
        (b":" + b"9" * 30 + b"\r\n", DecodeError),
        (b"$%d\r\n" % (MAX_BULK + 1), MessageTooLarge),
        (b"*%d\r\n" % (MAX_ARRAY + 1), MessageTooLarge),
        (b"*1\r\n" * (MAX_DEPTH + 2), MessageTooLarge),
        (b"+" + b"x" * 70_000, MessageTooLarge),
    ],
)
def test_bad_replies_raise_typed_errors(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_all(data)


replies: st.SearchStrategy[Reply] = st.recursive(
    st.none()
    | st.binary(max_size=64)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.builds(ErrorReply, st.text(alphabet=st.characters(blacklist_characters="\r\n", codec="utf-8"), max_size=20)),
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(replies, max_size=4), st.integers(min_value=0, max_value=200))
def test_fuzz_encoded_replies_round_trip_however_split(values: list[Reply], split: int) -> None:
    data = b"".join(encode_reply(v) for v in values)
    assert parse_all(data, min(split, len(data))) == values


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_give_replies_or_typed_errors(data: bytes) -> None:
    try:
        parse_all(data)
    except (DecodeError, MessageTooLarge):
        pass


async def test_client_against_a_scripted_server() -> None:
    """The client's framing over a real trio stream pair (no redis needed)."""
    client_end, server_end = trio.testing.memory_stream_pair()
    client = RedisClient(client_end)

    async def server() -> None:
        expected = [encode_command("PING"), encode_command("RPUSH", "k", "v"), encode_command("BLPOP", "k", "1.500")]
        answers = [b"+PONG\r\n", b":1\r\n", b"*2\r\n$1\r\nk\r\n$1\r\nv\r\n"]
        for want, answer in zip(expected, answers, strict=True):
            got = b""
            while len(got) < len(want):
                got += await server_end.receive_some()
            assert got == want
            for i in range(len(answer)):  # one byte at a time: the client must reassemble
                await server_end.send_all(answer[i : i + 1])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        await client.ping()
        assert await client.rpush("k", "v") == 1
        assert await client.blpop("k", 1.5) == b"v"


# --- configuration and addresses ---------------------------------------------------------------------


def test_config_from_legacy_lower_case_env() -> None:
    cfg = TestPlanConfig.from_env(
        {"transport": "tcp", "security": "noise", "muxer": "mplex", "is_dialer": "true", "ip": "0.0.0.0",
         "redis_addr": "redis:6379", "test_timeout_seconds": "90"}  # fmt: skip
    )
    assert (cfg.transport, cfg.security, cfg.muxer, cfg.is_dialer) == ("tcp", "noise", "mplex", True)
    assert (cfg.redis_host, cfg.redis_port, cfg.timeout, cfg.key) == ("redis", 6379, 90.0, LEGACY_KEY)


def test_config_from_unified_upper_case_env() -> None:
    cfg = TestPlanConfig.from_env(
        {"TRANSPORT": "tcp", "SECURE_CHANNEL": "tls", "MUXER": "yamux", "IS_DIALER": "false",
         "LISTENER_IP": "0.0.0.0", "REDIS_ADDR": "transport-redis:6380", "TEST_KEY": "a1b2c3d4"}  # fmt: skip
    )
    assert (cfg.security, cfg.is_dialer, cfg.redis_host, cfg.redis_port) == ("tls", False, "transport-redis", 6380)
    assert cfg.key == "a1b2c3d4_listener_multiaddr"
    assert cfg.timeout == 180.0


def test_config_for_a_standalone_transport_ignores_security_and_muxer() -> None:
    cfg = TestPlanConfig.from_env({"transport": "quic-v1", "is_dialer": "true"})
    assert (cfg.security, cfg.muxer, cfg.ip, cfg.redis_host) == (None, None, "0.0.0.0", "redis")


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"transport": "ws", "security": "noise", "muxer": "yamux", "is_dialer": "true"},
        {"transport": "tcp", "security": "plaintext", "muxer": "yamux", "is_dialer": "true"},
        {"transport": "tcp", "security": "noise", "muxer": "yamux", "is_dialer": "yes"},
        {"transport": "tcp", "security": "noise", "muxer": "yamux", "is_dialer": "true", "redis_addr": "redis"},
        {"transport": "tcp", "security": "noise", "muxer": "yamux", "is_dialer": "true", "test_timeout_seconds": "x"},
        {"transport": "tcp", "security": "noise", "muxer": "yamux", "is_dialer": "true", "ip": "::"},
    ],
)
def test_bad_config_is_a_config_error(env: Mapping[str, str]) -> None:
    with pytest.raises(ConfigError):
        TestPlanConfig.from_env(env)


def test_parse_host_port() -> None:
    assert parse_host_port("redis:6379") == ("redis", 6379)
    assert parse_host_port("[::1]:7000") == ("::1", 7000)
    with pytest.raises(ConfigError):
        parse_host_port("redis:0")


def test_advertised_ip() -> None:
    assert pick_advertised_ip("10.1.2.3", ["192.168.0.2"]) == "10.1.2.3"
    assert pick_advertised_ip("0.0.0.0", ["127.0.0.1", "169.254.1.1", "172.17.0.5", "10.0.0.2"]) == "172.17.0.5"
    assert pick_advertised_ip("0.0.0.0", ["127.0.0.1"]) == "127.0.0.1"  # only loopback: fall back, logged
    assert pick_advertised_ip("0.0.0.0", []) == "127.0.0.1"


# --- two processes through a real redis ------------------------------------------------------------------


def stack_env(redis_addr: str, dialer: bool, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    env.update({"is_dialer": "true" if dialer else "false", "ip": "127.0.0.1", "redis_addr": redis_addr,
                "test_timeout_seconds": "30", "PYTHONPATH": str(REPO)})  # fmt: skip
    env.update(extra)
    return env


def mycel_cmd() -> list[str]:
    return [PYTHON, "-m", "mycel.cli.testplans"]


def js_cmd() -> list[str]:
    if not NODE.exists():
        pytest.fail(f"{NODE} missing: run make interop-peers")
    return [str(NODE), str(JS_TESTPLANS)]


async def run_pair(
    listener: list[str], dialer: list[str], listener_env: dict[str, str], dialer_env: dict[str, str]
) -> dict[str, float]:
    """Start the listener, run the dialer to completion, stop the listener (by PID). Returns the JSON."""
    proc = await trio.lowlevel.open_process(
        listener, env=listener_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO
    )
    try:
        with trio.fail_after(PROCESS_TIMEOUT):
            done = await trio.run_process(
                dialer, env=dialer_env, capture_stdout=True, capture_stderr=True, check=False, cwd=REPO
            )
        assert proc.returncode is None, "the listener exited before the dialer was done"
    finally:
        proc.kill()
        await proc.wait()
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1, lines  # only the result on stdout; logs go to stderr
    result: dict[str, float] = json.loads(lines[0])
    assert set(result) == {"handshakePlusOneRTTMillis", "pingRTTMilllis"}
    # js-libp2p's ping reports whole milliseconds, so a loopback ping of under half a millisecond is 0
    assert 0 <= result["pingRTTMilllis"] <= result["handshakePlusOneRTTMillis"] < 30_000
    assert result["handshakePlusOneRTTMillis"] > 0
    return result




@pytest.mark.parametrize("stack", [("noise", "yamux"), ("tls", "mplex")])
@pytest.mark.interop
@pytest.mark.slow
async def test_mycel_dials_mycel_through_redis(redis_addr: str, stack: tuple[str, str]) -> None:
    extra = {"transport": "tcp", "security": stack[0], "muxer": stack[1]}
    listener_env, dialer_env = stack_env(redis_addr, False, **extra), stack_env(redis_addr, True, **extra)
    await run_pair(mycel_cmd(), mycel_cmd(), listener_env, dialer_env)


@pytest.mark.interop
@pytest.mark.slow
async def test_mycel_dials_js_with_unified_env(redis_addr: str) -> None:
    def env(dialer: bool) -> dict[str, str]:
        base = stack_env(redis_addr, dialer)
        for k in ("is_dialer", "ip", "redis_addr"):
            base.pop(k)
        base.update({"TRANSPORT": "tcp", "SECURE_CHANNEL": "noise", "MUXER": "yamux", "IS_DIALER": str(dialer).lower(),
                     "LISTENER_IP": "127.0.0.1", "REDIS_ADDR": redis_addr, "TEST_KEY": "0badc0de"})  # fmt: skip
        return base

    await run_pair(js_cmd(), mycel_cmd(), env(False), env(True))


@pytest.mark.parametrize("stack", [("noise", "mplex"), ("tls", "yamux")])
@pytest.mark.interop
@pytest.mark.slow
async def test_js_dials_mycel_through_redis(redis_addr: str, stack: tuple[str, str]) -> None:
    extra = {"transport": "tcp", "security": stack[0], "muxer": stack[1]}
    await run_pair(mycel_cmd(), js_cmd(), stack_env(redis_addr, False, **extra), stack_env(redis_addr, True, **extra))


@pytest.mark.interop
@pytest.mark.slow
async def test_listener_publishes_then_exits_1_when_the_timeout_passes(redis_addr: str) -> None:
    env = stack_env(redis_addr, False, transport="tcp", security="noise", muxer="yamux", test_timeout_seconds="1")
    with trio.fail_after(PROCESS_TIMEOUT):
        done = await trio.run_process(
            mycel_cmd(), env=env, capture_stdout=True, capture_stderr=True, check=False, cwd=REPO
        )
    assert done.returncode == 1
    assert done.stdout == b""
    host, port = parse_host_port(redis_addr)
    client = await RedisClient.connect(host, port)
    try:
        published = await client.blpop(LEGACY_KEY, 5)
    finally:
        await client.aclose()
    assert published is not None and published.startswith(b"/ip4/127.0.0.1/tcp/") and b"/p2p/12D3KooW" in published


@pytest.mark.interop
@pytest.mark.slow
async def test_unsupported_transport_exits_2_with_a_reason() -> None:
    env = stack_env("127.0.0.1:1", True, transport="webrtc")
    done = await trio.run_process(mycel_cmd(), env=env, capture_stdout=True, capture_stderr=True, check=False, cwd=REPO)
    assert done.returncode == 2
    assert b"webrtc" in done.stderr and done.stdout == b""
