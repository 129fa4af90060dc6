"""`mycel chat` and `mycel pubsub sub/pub` as people use them: real processes on 127.0.0.1, the chats
driven through pseudo-terminals (typed lines, Ctrl-C, Ctrl-D), plus the pieces they are made of.

Nothing sleeps: every step reads a process's output until the line it expects, with a time bound.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import subprocess
import sys
import termios
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from mycel.cli.chat import ChatRoom, encode_line, parse_line, stdin_lines
from mycel.cli.pubsub import message_json, message_text, safe_text, short_id
from mycel.core.peer_id import PeerId
from mycel.host import Host
from mycel.protocols.identify import Identify
from mycel.protocols.ping import Ping
from mycel.protocols.pubsub import Gossipsub, PubsubMessage
from mycel.testing.hosts import memory_hosts
from tests.integration.test_cli import MYCEL, Lines, home, one_line_error  # noqa: F401 - home: autouse, a fresh HOME

ROOT = Path(__file__).resolve().parents[2]
WAIT = 10  # seconds: a bound on waiting for one process to say something, not a sleep


# -- a process on a pseudo-terminal ---------------------------------------------------------------------


def _take_terminal() -> None:  # in the child, after setsid: the pty on stdin becomes its controlling tty
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyOutput(trio.abc.ReceiveStream):
    """The master side of a pty as a stream: the EIO Linux reports once the child has gone is EOF."""

    def __init__(self, fd: int) -> None:
        self._stream = trio.lowlevel.FdStream(fd)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self._stream.receive_some(max_bytes)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise

    async def aclose(self) -> None:
        await self._stream.aclose()


class Terminal:
    """A process whose stdin, stdout and stderr are one pty, as in a terminal window: what it prints
    (with the terminal's echo of what was typed) is read line by line."""

    def __init__(self, proc: trio.Process, master: int) -> None:
        self.proc = proc
        self._master = master
        self._output = PtyOutput(os.dup(master))
        self.lines = Lines(self._output)
        self.seen: list[str] = []

    async def type(self, text: str) -> None:
        await trio.lowlevel.wait_writable(self._master)
        os.write(self._master, text.encode())

    async def until(self, *needles: str) -> str:
        """The first line holding every one of ``needles`` (every line read is kept in ``seen``)."""
        try:
            with trio.fail_after(WAIT):
                while True:
                    line = (await self.lines.next()).rstrip("\r")
                    self.seen.append(line)
                    if all(n in line for n in needles):
                        return line
        except (trio.TooSlowError, EOFError) as exc:
            raise AssertionError(f"no line with {needles} ({type(exc).__name__}); the output was:\n" + "\n".join(self.seen)) from None

    async def until_all(self, *expected: str) -> None:
        """Read until each of ``expected`` has been part of a line, in any order."""
        missing = list(expected)
        while missing:
            line = await self.until()
            missing = [text for text in missing if text not in line]

    async def exit_status(self) -> int:
        with trio.fail_after(WAIT):
            return await self.proc.wait()


@asynccontextmanager
async def terminal(*args: str) -> AsyncIterator[Terminal]:
    master, slave = os.openpty()
    try:
        proc = await trio.lowlevel.open_process(
            list(args), stdin=slave, stdout=slave, stderr=slave, start_new_session=True, preexec_fn=_take_terminal
        )
    finally:
        os.close(slave)
    term = Terminal(proc, master)
    try:
        yield term
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()
            await term._output.aclose()
            os.close(master)


@asynccontextmanager
async def chat(nick: str, *connect: str, command: Sequence[str] = (*MYCEL, "chat")) -> AsyncIterator[tuple[Terminal, str, str]]:
    """A chat as a person starts it in a terminal: (terminal, its address, its peer id)."""
    args = [*command, "--nick", nick, "--topic", "room", "--no-mdns"]  # on loopback: no multicast out of eth0
    for addr in connect:
        args += ["--connect", addr]
    async with terminal(*args) as term:
        me = await term.until("* you are ")
        peer = re.search(r"\((12D3KooW\w+)\)", me)
        assert peer, me
        addr = (await term.until("* listening on /ip4/127.0.0.1/tcp/")).split()[-1]
        yield term, addr, peer[1]


def _short(peer_id: str) -> str:
    return short_id(PeerId.from_string(peer_id))


async def test_three_chats_in_terminals() -> None:
    async with chat("alice") as (alice, addr, alice_id), chat("bob", addr) as (bob, _, bob_id), chat(
        "carol", addr
    ) as (carol, _, carol_id):
        a, b, c = _short(alice_id), _short(bob_id), _short(carol_id)
        await alice.until_all(f"* {b} joined room", f"* {c} joined room")
        await bob.until(f"* {a} joined room")
        await carol.until(f"* {a} joined room")

        wave = "ünïcödé \N{WAVING HAND SIGN}"
        await alice.type("hello from alice\n")
        await bob.type("hi, bob here\n")
        await carol.type(f"carol says {wave}\n")
        # (carol and bob hear each other through alice)
        await alice.until_all(f"<bob {b}> hi, bob here", f"<carol {c}> carol says {wave}")
        await bob.until_all(f"<alice {a}> hello from alice", f"<carol {c}> carol says {wave}")
        await carol.until_all(f"<alice {a}> hello from alice", f"<bob {b}> hi, bob here")

        await bob.type("/peers\n")
        await bob.until(f"* 1 in room: alice ({a}) [mesh]")

        await alice.type("\x03")  # Ctrl-C: alice leaves, bob and carol see it
        await alice.until("* bye")
        assert await alice.exit_status() == 0
        await bob.until(f"* alice ({a}) left room")
        await carol.until(f"* alice ({a}) left room")

        await bob.type("anyone?\n")  # bob and carol knew each other only through alice
        await bob.until("* no one is listening yet: not sent")

        await bob.type("\x04")  # Ctrl-D
        await bob.until("* bye")
        assert await bob.exit_status() == 0
        await carol.type("/quit\n")
        await carol.until("* bye")
        assert await carol.exit_status() == 0
        for term in (alice, bob, carol):
            assert not any("Traceback" in line or "error" in line for line in term.seen), term.seen


async def test_the_example_chats_with_mycel_chat() -> None:
    async with chat("alice") as (alice, addr, alice_id):
        args = [sys.executable, str(ROOT / "examples" / "chat.py"), "--nick", "bob", "--topic", "room", "--connect", addr]
        async with terminal(*args) as bob:
            bob_id = re.search(r"bob \((12D3KooW\w+)\) in room", await bob.until("* bob ("))
            assert bob_id, bob.seen
            await alice.until(f"* {_short(bob_id[1])} joined room")
            await bob.until(f"* {_short(alice_id)} joined room")
            await bob.type("hello from the example\n")
            await alice.until(f"<bob {_short(bob_id[1])}> hello from the example")
            await alice.type("hi \x1b[2J example\n")  # typed: a raw escape; shown: harmless
            await bob.until(f"<{_short(alice_id)}> alice: hi \\x1b[2J example")
            await bob.type("\x04")
            await bob.until("* bye")
            assert await bob.exit_status() == 0
            await alice.until(f"* bob ({_short(bob_id[1])}) left room")


async def test_chat_sub_and_pub_share_a_topic(tmp_path: Path) -> None:
    """A chat sees `mycel pubsub sub` join its topic and leave, and `pub` reach it; sub gets both."""
    key = str(tmp_path / "pub.key")
    pub_id = (await run("id", "--key", key)).stdout.decode().split()[2]
    async with chat("alice") as (alice, addr, alice_id):
        async with listening_sub("room", "--connect", addr, "-n", "2") as sub:
            await alice.until(f"* {short_id(PeerId.from_string(sub.peer_id))} joined room")
            await alice.type("is anyone reading?\n")
            res = await run("pubsub", "pub", "room", "a line from pub", "--connect", addr, "--key", key)
            assert res.returncode == 0, res.stderr.decode()
            assert "to 1 peer: " in res.stdout.decode()
            await alice.until("> a line from pub")
            with trio.fail_after(WAIT):
                lines = sorted([await sub.stdout.next(), await sub.stdout.next()])
            assert lines == sorted([f"{pub_id}: a line from pub", f"{alice_id}: alice: is anyone reading?"])
            assert await sub.exit_status() == 0
        await alice.until(f"* {short_id(PeerId.from_string(sub.peer_id))} left room")


# -- mycel pubsub sub / pub ------------------------------------------------------------------------------


class Sub:
    def __init__(self, proc: trio.Process, stdout: Lines, addr: str) -> None:
        self.proc = proc
        self.stdout = stdout
        self.addr = addr

    @property
    def peer_id(self) -> str:
        return self.addr.rsplit("/p2p/", 1)[1]

    async def exit_status(self) -> int:
        with trio.fail_after(WAIT):
            return await self.proc.wait()


@asynccontextmanager
async def listening_sub(*args: str) -> AsyncIterator[Sub]:
    """`mycel pubsub sub *args`, once it listens and has subscribed."""
    proc = await trio.lowlevel.open_process([*MYCEL, "pubsub", "sub", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        stderr = Lines(proc.stderr)
        with trio.fail_after(WAIT):
            addr = (await stderr.until("mycel: listening on ")).split()[-1]
            await stderr.until("mycel: subscribed to ")
        yield Sub(proc, Lines(proc.stdout), addr)
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()


async def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(WAIT + 5):
        return await trio.run_process([*MYCEL, *args], stdin=stdin, capture_stdout=True, capture_stderr=True, check=False)


async def test_pub_reaches_sub(tmp_path: Path) -> None:
    key = str(tmp_path / "pub.key")
    pub_id = (await run("id", "--key", key)).stdout.decode().split()[2]
    async with listening_sub("news", "-n", "1") as sub:
        res = await run("pubsub", "pub", "news", "hello, \x1b[31msubscribers", "--connect", sub.addr, "--key", key)
        assert res.returncode == 0, res.stderr.decode()
        assert res.stdout.decode() == f"published 23 bytes on 'news' to 1 peer: {sub.peer_id}\n"
        with trio.fail_after(WAIT):
            line = await sub.stdout.next()
        assert line == f"{pub_id}: hello, \\x1b[31msubscribers"  # what a peer sends cannot drive the terminal
        assert await sub.exit_status() == 0


async def test_sub_json_and_binary_data_from_stdin() -> None:
    async with listening_sub("raw", "--json", "-n", "2") as sub:
        for data in (b"text \xe2\x9c\x93", b"\xff\x00binary"):
            res = await run("pubsub", "pub", "raw", "-", "--connect", sub.addr, stdin=data)
            assert res.returncode == 0, res.stderr.decode()
        with trio.fail_after(WAIT):
            first, second = json.loads(await sub.stdout.next()), json.loads(await sub.stdout.next())
        assert first["data"] == "text \N{CHECK MARK}" and "data_base64" not in first
        assert second["data_base64"] == "/wBiaW5hcnk=" and "data" not in second
        for msg in (first, second):
            assert msg["topic"] == "raw" and msg["from"] == msg["received_from"] and msg["from"].startswith("12D3KooW")
            assert isinstance(msg["seqno"], int) and len(bytes.fromhex(msg["id"])) > 8
        assert await sub.exit_status() == 0


async def test_pub_waits_for_enough_peers() -> None:
    async with listening_sub("t") as one, listening_sub("t") as two:
        res = await run("pubsub", "pub", "t", "to both", "--connect", one.addr, "--connect", two.addr, "--wait-peers", "2")
        assert res.returncode == 0, res.stderr.decode()
        assert "to 2 peers: " in res.stdout.decode()
        for sub in (one, two):
            with trio.fail_after(WAIT):
                assert (await sub.stdout.next()).endswith(": to both")


async def test_pub_with_no_subscriber_fails_clearly() -> None:
    async with listening_sub("other-topic") as sub:
        res = await run("pubsub", "pub", "t", "hello?", "--connect", sub.addr, "--timeout", "0.5")
    assert one_line_error(res) == (
        "mycel: error: waited 0.5 s for a peer subscribed to 't', found none (among 1 connected); nothing was published"
    )
    async with listening_sub("t") as sub:
        res = await run("pubsub", "pub", "t", "x", "--connect", sub.addr, "--wait-peers", "2", "--timeout", "0.5")
    assert "for 2 peers subscribed to 't', found only 1" in one_line_error(res)


async def test_pub_without_a_peer_to_connect_to() -> None:
    res = await run("pubsub", "pub", "t", "hello")
    assert res.returncode == 2
    assert "add --connect" in one_line_error(res)


async def test_a_chat_that_reaches_none_of_its_peers_exits_with_the_reason() -> None:
    sock = trio.socket.socket()
    with sock:
        await sock.bind(("127.0.0.1", 0))  # bound, not listening: the dial is refused
        addr = f"/ip4/127.0.0.1/tcp/{sock.getsockname()[1]}/p2p/12D3KooWDsL2xp4fSmbr7YLnfFw7rk5Ns69nYEvugbRyhLPZFE6D"
        res = await run("chat", "--connect", addr)
    assert f"cannot connect to {addr}: connection refused" in one_line_error(res)
    assert f"* cannot connect to {addr}: connection refused" in res.stdout.decode()


async def test_chat_refuses_a_nickname_with_a_colon() -> None:
    res = await run("chat", "--nick", "a:b")
    assert res.returncode == 2 and "nickname 'a:b'" in one_line_error(res)


# -- the pieces --------------------------------------------------------------------------------------------


def test_line_format() -> None:
    assert encode_line("alice", "hi: there") == b"alice: hi: there"
    assert encode_line(None, "hi") == b"hi"
    assert parse_line(b"alice: hi: there") == ("alice", "hi: there")
    assert parse_line(b"plain text from a js peer") == (None, "plain text from a js peer")
    assert parse_line(b"no space:after") == (None, "no space:after")
    assert parse_line(b"\xff: x") == ("\\xff", "x")


def test_what_a_peer_sends_is_shown_on_one_safe_line() -> None:
    assert safe_text("plain ünïcödé \N{WAVING HAND SIGN}") == "plain ünïcödé \N{WAVING HAND SIGN}"
    assert safe_text("two\nlines\r\x1b[2J\x07") == "two\\nlines\\r\\x1b[2J\\x07"
    assert safe_text("evil\u202etxt.exe") == "evil\\u202etxt.exe"  # a bidi override is escaped
    assert safe_text("a\u2028b\u00a0c") == "a\\u2028b\u00a0c"  # a line separator too, not a no-break space
    assert safe_text("\N{MAN}\u200d\N{GIRL}") == "\N{MAN}\u200d\N{GIRL}"  # a joined emoji is not
    assert message_text(b"bytes \xff\xfe") == "bytes \\xff\\xfe"


async def test_stdin_lines_reads_lines_until_eof() -> None:
    read, write = os.pipe()
    os.write(write, "one\r\ntwo ü\nthree".encode())
    os.close(write)
    try:
        assert [line async for line in stdin_lines(read)] == ["one", "two ü", "three"]
    finally:
        os.close(read)


def _gossip_services() -> list[Identify | Ping | Gossipsub]:
    return [Identify(), Ping(), Gossipsub()]


async def _connect(a: Host, b: Host) -> None:
    await a.connect(b.peer_id, b.addrs)


async def test_chat_room_in_process() -> None:
    """Two rooms on memory hosts: lines go across, the hostile one is escaped, leaving is seen."""
    async with memory_hosts(2, services=_gossip_services) as (h1, h2):
        outs = {name: trio.open_memory_channel[str](100) for name in ("one", "two")}
        one = ChatRoom(h1, "t", "one", outs["one"][0].send_nowait)
        two = ChatRoom(h2, "t", None, outs["two"][0].send_nowait)
        typed1, lines1 = trio.open_memory_channel[str](10)
        typed2, lines2 = trio.open_memory_channel[str](10)

        async def until(name: str, needle: str) -> None:
            with trio.fail_after(WAIT):
                while needle not in await outs[name][1].receive():
                    pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one.run, lines1)
            nursery.start_soon(two.run, lines2)
            await until("one", "* you are one")
            await until("two", "* you are")
            await typed1.send("too early")  # (one is not connected to anyone yet)
            await until("one", "* no one is listening yet: not sent")
            await _connect(h2, h1)
            await until("one", f"* {short_id(h2.peer_id)} joined t")
            await until("two", f"* {short_id(h1.peer_id)} joined t")
            await h1.service(Gossipsub).wait_ready("t", 1, timeout=WAIT)
            await h2.service(Gossipsub).wait_ready("t", 1, timeout=WAIT)
            await typed2.send("plain from \x1b]0;pwned\x07two")
            await until("one", f"<{short_id(h2.peer_id)}> plain from \\x1b]0;pwned\\x07two")
            await typed1.send("hello")
            await until("two", f"<one {short_id(h1.peer_id)}> hello")
            await typed2.send("/peers")
            await until("two", f"* 1 in t: one ({short_id(h1.peer_id)}) [mesh]")
            typed1.close()  # end of input: one leaves the room, two sees it
            await until("one", "* bye")
            await until("two", f"* one ({short_id(h1.peer_id)}) left t")
            two.stop()
            await until("two", "* bye")


def test_json_of_an_unsigned_message() -> None:
    msg = PubsubMessage(topic="t", data=b"x", source=None, seqno=None, signature=None, key=None, raw=b"", id=b"\x01")
    assert json.loads(message_json(msg)) == {
        "topic": "t", "from": None, "received_from": None, "id": "01", "seqno": None, "data": "x",
    }  # fmt: skip
