"""The `mycel` command as a person uses it: real processes, HOME in a temp folder, servers on 127.0.0.1."""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio

from mycel import __version__
from mycel.cli.main import make_parser, main

MYCEL = [sys.executable, "-m", "mycel"]
WAIT = 8  # seconds: a bound on waiting for one process to say something, not a sleep


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty HOME for every test (and every process it starts): ~/.mycel does not exist yet."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    return path


class Lines:
    """Lines of a process's output, read as they come."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buf = bytearray()

    async def next(self) -> str:
        while b"\n" not in self._buf:
            chunk = await self._stream.receive_some(4096)
            if not chunk:
                raise EOFError(bytes(self._buf).decode(errors="replace"))
            self._buf += chunk
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        return line.decode()

    async def until(self, *needles: str) -> str:
        """The first line holding every one of ``needles``."""
        while True:
            line = await self.next()
            if all(n in line for n in needles):
                return line

    async def rest(self) -> str:
        out = bytes(self._buf)
        while chunk := await self._stream.receive_some(4096):
            out += chunk
        return out.decode(errors="replace")


@dataclass
class Listener:
    addrs: list[str]
    stderr: Lines

    @property
    def peer_id(self) -> str:
        return self.addrs[0].rsplit("/p2p/", 1)[1]


@asynccontextmanager
async def listening(*args: str, addrs: int = 1) -> AsyncIterator[Listener]:
    """Run `mycel listen *args` until the block ends (killed even when the test fails)."""
    proc = await trio.lowlevel.open_process([*MYCEL, "listen", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    stderr = Lines(proc.stderr)
    try:
        stdout = Lines(proc.stdout)
        try:
            with trio.fail_after(WAIT):
                printed = [await stdout.next() for _ in range(addrs)]
        except EOFError:
            with trio.fail_after(WAIT):
                raise AssertionError(f"mycel listen exited: {await stderr.rest()}") from None
        yield Listener(printed, stderr)
    finally:
        proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()


async def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(WAIT):
        return await trio.run_process([*MYCEL, *args], capture_stdout=True, capture_stderr=True, check=False)


def one_line_error(res: subprocess.CompletedProcess[bytes]) -> str:
    """The error a failed command printed, checked to be one line with no traceback."""
    assert res.returncode != 0, res.stdout.decode()
    err = res.stderr.decode().strip()
    assert err.startswith("mycel: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# -- ping and identify ------------------------------------------------------------------------------


@pytest.mark.parametrize("muxer", ["yamux", "mplex"])
async def test_ping_and_identify_between_processes(muxer: str) -> None:
    async with listening("--listen", "/ip4/127.0.0.1/tcp/0", "--muxer", muxer) as node:
        addr = node.addrs[0]
        assert addr.startswith("/ip4/127.0.0.1/tcp/") and "/p2p/12D3KooW" in addr
        res = await run("ping", addr, "-c", "2", "--muxer", muxer)
        out = res.stdout.decode()
        assert res.returncode == 0, res.stderr.decode()
        assert f"/noise, /{muxer}/" in out
        assert out.count(" ms") == 2
        res = await run("identify", addr, "--muxer", muxer)
        out = res.stdout.decode()
        assert res.returncode == 0, res.stderr.decode()
        assert "agent version:    mycel/" in out
        assert "/ipfs/ping/1.0.0" in out and "/echo/1.0.0" in out
        assert "signed record:    verified" in out


async def test_tls_security_over_tcp() -> None:
    async with listening("--security", "tls") as node:
        res = await run("ping", node.addrs[0], "-c", "1", "--security", "tls")
        assert res.returncode == 0, res.stderr.decode()
        assert "(/tls/1.0.0, /yamux/1.0.0)" in res.stdout.decode()


@pytest.mark.parametrize(
    "args",
    [("--quic",), ("--transport", "quic"), ("--listen", "/ip4/127.0.0.1/udp/0/quic-v1")],
    ids=["--quic", "--transport-quic", "--listen-quic-addr"],
)
async def test_listen_and_ping_over_quic(args: tuple[str, ...]) -> None:
    async with listening(*args, addrs=2 if args == ("--quic",) else 1) as node:
        quic = [a for a in node.addrs if "/udp/" in a]
        assert len(quic) == 1 and quic[0].startswith("/ip4/127.0.0.1/udp/") and "/quic-v1/p2p/" in quic[0]
        res = await run("ping", quic[0], "-c", "1", "--transport", "quic")
        assert res.returncode == 0, res.stderr.decode()
        assert "/quic-v1)" in res.stdout.decode()


async def test_quic_listen_address_needs_the_quic_transport() -> None:
    res = await run("listen", "--transport", "tcp", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1")
    assert "--transport quic" in one_line_error(res)


# -- identity ---------------------------------------------------------------------------------------


async def test_id_works_on_a_fresh_machine(home: Path) -> None:
    res = await run("id")
    assert res.returncode == 0, res.stderr.decode()
    key = home / ".mycel" / "identity.key"
    assert key.is_file()
    assert stat.S_IMODE(os.stat(key.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert f"key file: {key}" in res.stdout.decode()
    assert (await run("id")).stdout == res.stdout


async def test_id_command_creates_and_reloads(tmp_path: Path) -> None:
    key = f"{tmp_path}/new/folder/id.key"
    first = await run("id", "--key", key)
    second = await run("id", "--key", key)
    assert first.returncode == 0 and first.stdout == second.stdout, first.stderr.decode()
    assert b"peer id:  12D3KooW" in first.stdout


async def test_id_with_a_file_that_is_not_a_key(tmp_path: Path) -> None:
    (tmp_path / "junk.key").write_bytes(b"not a key")
    (tmp_path / "junk.key").chmod(0o600)
    assert "is not a libp2p private key file" in one_line_error(await run("id", "--key", str(tmp_path / "junk.key")))


async def test_listen_keeps_its_peer_id_across_restarts(tmp_path: Path) -> None:
    async with listening() as node:
        first = node.peer_id
    async with listening() as node:
        assert node.peer_id == first
    assert f"peer id:  {first}" in (await run("id")).stdout.decode()  # the key `mycel id` shows

    key = str(tmp_path / "other.key")
    other = (await run("id", "--key", key)).stdout.decode().splitlines()[0].split()[-1]
    async with listening("--key", key) as node:
        assert node.peer_id == other != first
    async with listening("--ephemeral") as node:
        assert node.peer_id not in (first, other)


# -- the command line -------------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"mycel {__version__}"


@pytest.mark.parametrize("count", ["0", "-1", "two"])
def test_ping_count_must_be_positive(count: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["ping", "/ip4/127.0.0.1/tcp/1", "-c", count])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument -c/--count:" in err
    assert ("must be greater than 0" if count != "two" else "is not a whole number") in err


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update(action.choices)
    return out


def test_every_option_and_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = make_parser()
    commands = _subparsers(parser)
    assert set(commands) == {"id", "listen", "ping", "identify", "chat", "pubsub", "dht"}
    actions = {f"{group} {name}": p for group in ("pubsub", "dht") for name, p in _subparsers(commands[group]).items()}
    assert set(actions) == {
        "pubsub sub", "pubsub pub",
        *(f"dht {a}" for a in ("serve", "put", "put-pk", "get", "provide", "find-providers", "find-peer")),
    }
    owners = [(parser, commands), *((commands[g], _subparsers(commands[g])) for g in ("pubsub", "dht"))]
    for owner, names in owners:
        for sub in owner._actions:
            if isinstance(sub, argparse._SubParsersAction):
                assert {a.dest: bool(a.help) for a in sub._choices_actions} == dict.fromkeys(names, True)
    for name, p in [("mycel", parser), *commands.items(), *actions.items()]:
        missing = [a.option_strings or a.dest for a in p._actions if not a.help or a.help == argparse.SUPPRESS]
        assert not missing, f"{name}: no help for {missing}"
    for name in [*commands, *actions]:
        with pytest.raises(SystemExit) as exit_:
            main([*name.split(), "--help"])
        assert exit_.value.code == 0
        assert f"usage: mycel {name}" in capsys.readouterr().out


# -- errors a person understands --------------------------------------------------------------------


def test_an_unexpected_failure_is_one_line_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mycel.cli.main as cli

    async def broken(args: argparse.Namespace) -> int:
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(cli, "configure_logging", lambda verbose: None)  # leave this process's logging alone
    monkeypatch.setitem(cli.COMMANDS, "id", broken)
    assert main(["id"]) == 1
    err = capsys.readouterr().err
    assert err == "mycel: error: internal error: RuntimeError: something nobody expected (-vv shows where)\n"


async def test_ping_unreachable_address() -> None:
    sock = trio.socket.socket()
    with sock:
        await sock.bind(("127.0.0.1", 0))  # bound, not listening: the dial is refused
        port = sock.getsockname()[1]
        err = one_line_error(await run("ping", f"/ip4/127.0.0.1/tcp/{port}", "--timeout", "5"))
    assert f"cannot connect to /ip4/127.0.0.1/tcp/{port}: connection refused" in err


@pytest.mark.parametrize(
    ("typed", "suggestion"),
    [
        ("127.0.0.1:4001", "/ip4/127.0.0.1/tcp/4001/p2p/<peer id>"),
        ("[::1]:4001", "/ip6/::1/tcp/4001/p2p/<peer id>"),
        ("example.com:4001", "/dns/example.com/tcp/4001/p2p/<peer id>"),
    ],
)
async def test_ip_port_instead_of_multiaddr(typed: str, suggestion: str) -> None:
    res = await run("ping", typed)
    assert res.returncode == 2
    assert one_line_error(res) == f"mycel: error: {typed!r} is not a multiaddr: use {suggestion}"


async def test_invalid_multiaddr() -> None:
    err = one_line_error(await run("identify", "/ip4/1.2.3.4/tcp/1/p2p/not-a-peer-id"))
    assert "is not a valid multiaddr" in err


@asynccontextmanager
async def plain_tcp_server(banner: bytes) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 that sends ``banner`` and then waits for the dialer to hang up; its port."""

    async def handler(stream: trio.SocketStream) -> None:
        await stream.send_all(banner)
        while await stream.receive_some():
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def test_ping_a_server_that_does_not_speak_libp2p() -> None:
    async with plain_tcp_server(b"HTTP/1.1 400 Bad Request\r\n\r\n" + b"<html>" * 40) as port:
        err = one_line_error(await run("ping", f"/ip4/127.0.0.1/tcp/{port}"))
    assert err.startswith(f"mycel: error: /ip4/127.0.0.1/tcp/{port} is not a libp2p peer")


async def test_ping_a_server_that_says_hello_in_another_protocol_and_waits() -> None:
    # the first byte of a multistream-select exchange is 0x13: "S" (0x53) is refused at once
    async with plain_tcp_server(b"SSH-2.0-OpenSSH_9.6\r\n") as port:
        err = one_line_error(await run("ping", f"/ip4/127.0.0.1/tcp/{port}", "--timeout", "20"))
    assert err.startswith(f"mycel: error: /ip4/127.0.0.1/tcp/{port} is not a libp2p peer")


async def test_ping_a_server_that_never_answers() -> None:
    async with plain_tcp_server(b"") as port:
        err = one_line_error(await run("ping", f"/ip4/127.0.0.1/tcp/{port}", "--timeout", "0.5"))
    assert f"no answer from /ip4/127.0.0.1/tcp/{port} within 0.5 s" in err


@pytest.mark.parametrize(("command", "protocol"), [("ping", "/ipfs/ping/1.0.0"), ("identify", "/ipfs/id/1.0.0")])
async def test_a_peer_that_does_not_serve_the_protocol(command: str, protocol: str) -> None:
    from mycel import HostConfig, open_host
    from mycel.protocols.identify import Identify
    from mycel.protocols.ping import Ping
    from mycel.transports.tcp import TCP

    services = [Identify()] if command == "ping" else [Ping()]
    config = HostConfig(transports=[TCP()], services=services, listen=["/ip4/127.0.0.1/tcp/0"])
    async with open_host(config) as host:
        res = await run(command, str(host.addrs[0]))
    assert one_line_error(res) == f"mycel: error: peer {host.peer_id} does not support {command} ({protocol})"


# -- listen -v --------------------------------------------------------------------------------------


async def test_verbose_listen_logs_connections_and_streams() -> None:
    from mycel import HostConfig, open_host
    from mycel.protocols.ping import Ping
    from mycel.transports.tcp import TCP

    async with listening("-v") as node, open_host(HostConfig(transports=[TCP()])) as pinger:
        with trio.fail_after(WAIT):
            await pinger.service(Ping).ping(node.addrs[0])
            who = str(pinger.peer_id)
            await node.stderr.until("mycel.cli INFO", f"connection from {who} at /ip4/127.0.0.1/tcp/")
            await node.stderr.until("mycel.cli INFO", f"stream from {who}: /ipfs/ping/1.0.0")
