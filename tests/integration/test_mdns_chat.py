"""The chat finds its peers on a LAN by mDNS when no address is given: ``mycel chat`` and
``examples/chat.py``, each in a network namespace on one bridge, started with no ``--connect``, meet
and exchange a line both ways. Nothing sleeps: each step waits for a line, bounded in time."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import trio

from mycel.cli.pubsub import short_id
from mycel.core.peer_id import PeerId
from mycel.testing.netns import NetLab
from tests.integration.test_cli import Lines

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0


async def test_two_chats_meet_on_a_lan_with_no_address() -> None:
    with NetLab() as lab:
        lan = lab.lan("10.77.4.0/24", 2)
        mycel_chat = lan.hosts[0].python_command(["-m", "mycel", "chat", "--nick", "alice", "--topic", "room"])
        example = lan.hosts[1].python_command([str(ROOT / "examples" / "chat.py"), "--nick", "bob", "--topic", "room"])
        alice = await trio.lowlevel.open_process(mycel_chat, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
        bob = await trio.lowlevel.open_process(example, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
        try:
            assert alice.stdout and alice.stdin and bob.stdout and bob.stdin
            a_out, b_out = Lines(alice.stdout), Lines(bob.stdout)
            with trio.fail_after(WAIT):
                me = await a_out.until("* you are alice (")
                alice_id = PeerId.from_string(re.findall(r"\((12D3KooW\w+)\)", me)[0])
                await a_out.until("* looking for peers on the local network (mDNS)")
                line = await b_out.until("* bob (")
                bob_id = PeerId.from_string(re.findall(r"\((12D3KooW\w+)\)", line)[0])
                assert f"listening on /ip4/{lan.ips[1]}/tcp/" in line  # on the LAN, not loopback
                await a_out.until(f"* {short_id(bob_id)} joined room")
                await b_out.until(f"* {str(alice_id)[-8:]} joined room")
                await bob.stdin.send_all(b"hello over mdns\n")
                await a_out.until(f"<bob {short_id(bob_id)}> hello over mdns")
                await alice.stdin.send_all(b"hi bob\n")
                await b_out.until(f"<{str(alice_id)[-8:]}> alice: hi bob")
                alice.send_signal(signal.SIGINT)
                await a_out.until("* bye")
                assert await alice.wait() == 0
                await bob.stdin.aclose()  # end of input: the example leaves
                await b_out.until("* bye")
                assert await bob.wait() == 0
        finally:
            for proc in (alice, bob):
                if proc.returncode is None:
                    proc.kill()
                with trio.move_on_after(5):
                    await proc.wait()


def test_chat_help_mentions_mdns() -> None:
    out = subprocess.run([sys.executable, "-m", "mycel", "chat", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "--no-mdns" in out.stdout
