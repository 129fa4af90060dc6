"""`mycel dht` as people use it: three processes on 127.0.0.1 — a `dht serve` bootstrap node, a node that
stores its public key (`put-pk`) and provides a hash (`provide --stay`), and one-shot `get`,
`find-providers` and `find-peer` runs that know only the bootstrap node — plus examples/who_has.py.

Nothing sleeps: every step reads a process's output until the line it expects, with a time bound.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from multiformats import CID

from mycel.cli.dht import content_key, key_text, record_key
from mycel.cli.main import CliError
from mycel.core.identity import Identity
from mycel.core.multibase import b32encode, b58encode
from tests.integration.test_cli import MYCEL, Lines, home, one_line_error, run  # noqa: F401 - home: autouse, a fresh HOME

ROOT = Path(__file__).resolve().parents[2]
WAIT = 10  # seconds: a bound on waiting for one process to say something, not a sleep
CONTENT = b"who has this?\n"
MULTIHASH = "1220" + hashlib.sha256(CONTENT).hexdigest()


@asynccontextmanager
async def running(*args: str) -> AsyncIterator[tuple[Lines, Lines]]:
    """`mycel *args` in the background until the block ends (killed even when the test fails): its
    stdout and stderr as lines."""
    proc = await trio.lowlevel.open_process([*MYCEL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        yield Lines(proc.stdout), Lines(proc.stderr)
    finally:
        proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()


async def ok(*args: str) -> list[str]:
    res = await run(*args)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout.decode().splitlines()


async def test_three_processes_put_get_provide_find(tmp_path: Path) -> None:
    key = str(tmp_path / "provider.key")
    provider = str(Identity.load_or_create(Path(key)).peer_id)
    async with running("dht", "serve") as (boot_out, _):
        with trio.fail_after(WAIT):
            boot = await boot_out.next()
        assert boot.startswith("/ip4/127.0.0.1/tcp/") and "/p2p/12D3KooW" in boot

        # the provider: its public key stored in the DHT, then a hash provided (and it stays up)
        [line] = await ok("dht", "put-pk", "--connect", boot, "--key", key)
        assert line == f"stored /pk/{provider} (36 bytes, Ed25519 public key) on 1 peer"
        async with running("dht", "provide", MULTIHASH, "--connect", boot, "--key", key, "--stay") as (out, err):
            with trio.fail_after(WAIT):
                assert await out.next() == f"providing {MULTIHASH} as {provider}"
                await err.until("staying up as a DHT server at /ip4/127.0.0.1/tcp/")

            # a third node that knows only the bootstrap node
            [line] = await ok("dht", "get", f"/pk/{provider}", "--connect", boot)
            public = Identity.load(Path(key)).private_key.public_key.to_protobuf().hex()
            assert line == f"/pk/{provider}: Ed25519 public key {public}"
            [line] = await ok("dht", "get", f"/pk/{provider}", "--connect", boot, "--json", "--client")
            record = json.loads(line)
            assert (record["key"], record["value_hex"]) == (f"/pk/{provider}", public)

            [line] = await ok("dht", "find-providers", MULTIHASH, "--connect", boot)
            peer, *addrs = line.split()
            assert peer == provider and addrs and all(a.endswith(f"/p2p/{provider}") for a in addrs)
            cid_v0 = b58encode(bytes.fromhex(MULTIHASH))
            [line] = await ok("dht", "find-providers", cid_v0, "--connect", boot, "--json")
            assert json.loads(line)["peer"] == provider

            lines = await ok("dht", "find-peer", provider, "--connect", boot)
            assert lines and all(a.startswith("/ip4/127.0.0.1/tcp/") and a.endswith(f"/p2p/{provider}") for a in lines)
            assert (await ok("ping", lines[0], "-c", "1"))[-1].startswith("ping 1: ")  # the address works

            # nothing there: exit status 1 and one line that says so
            stranger = str(Identity.generate().peer_id)
            res = await run("dht", "get", f"/pk/{stranger}", "--connect", boot)
            assert res.returncode == 1
            assert one_line_error(res) == f"mycel: error: no value found for /pk/{stranger}"
            other = "1220" + hashlib.sha256(b"nobody has this").hexdigest()
            res = await run("dht", "find-providers", other, "--connect", boot)
            assert res.returncode == 1
            assert one_line_error(res) == f"mycel: error: no providers found for {other}"
            res = await run("dht", "find-peer", stranger, "--connect", boot, "--timeout", "5")
            assert res.returncode == 1
            assert one_line_error(res) == f"mycel: error: peer {stranger} not found in the DHT"


async def test_put_and_get_a_text_record_is_refused_without_a_validator() -> None:
    async with running("dht", "serve") as (boot_out, _):
        with trio.fail_after(WAIT):
            boot = await boot_out.next()
        res = await run("dht", "put", "/notes/today", "hello", "--connect", boot)
        assert res.returncode == 1
        assert one_line_error(res).startswith("mycel: error: the DHT's validators refuse /notes/today: ")


async def test_usage_errors() -> None:
    res = await run("dht", "get", "/pk/12D3KooW")
    assert res.returncode == 2 and "needs a DHT peer to start from" in one_line_error(res)
    res = await run("dht", "provide", "not-a-cid", "--connect", "/ip4/127.0.0.1/tcp/1/p2p/" + str(Identity.generate().peer_id))
    assert res.returncode == 2 and "is neither a hex multihash" in one_line_error(res)


async def test_a_peer_that_is_no_dht_server(tmp_path: Path) -> None:
    async with running("listen", "--ephemeral") as (out, _):
        with trio.fail_after(WAIT):
            addr = await out.next()
        res = await run("dht", "get", "/pk/" + str(Identity.generate().peer_id), "--connect", addr, "--timeout", "2")
        assert res.returncode == 1
        assert "no DHT server among the --connect peers within 2 s" in one_line_error(res)


def test_keys_as_typed() -> None:
    peer = Identity.generate().peer_id
    assert record_key(f"/pk/{peer}") == b"/pk/" + peer.to_bytes()
    assert key_text(record_key(f"/ipns/{peer}")) == f"/ipns/{peer}"
    assert record_key("2f61", hex_key=True) == b"/a"
    with pytest.raises(CliError):
        record_key("/pk/not-a-peer-id")
    mh = bytes.fromhex(MULTIHASH)
    assert content_key(MULTIHASH) == mh
    assert content_key(b58encode(mh)) == mh  # CIDv0 Qm…
    assert content_key("b" + b32encode(b"\x01\x55" + mh)) == mh  # CIDv1 raw, base32
    for bad in ("1220ab", "Qm" + "1" * 44, "hello"):
        with pytest.raises(CliError):
            content_key(bad)


async def test_who_has_example(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(CONTENT * 1000)
    with trio.fail_after(WAIT):
        res = await trio.run_process([sys.executable, str(ROOT / "examples" / "who_has.py"), str(path)],
                                     capture_stdout=True, capture_stderr=True, check=False)
    out = res.stdout.decode()
    assert res.returncode == 0, out + res.stderr.decode()
    cid = CID("base32", 1, "raw", ("sha2-256", hashlib.sha256(CONTENT * 1000).digest()))
    assert f"[A] has notes.txt: {len(CONTENT) * 1000} bytes, CID {cid}" in out
    assert str(cid).startswith("bafkrei")
    assert "[B] the DHT says 12D3KooW" in out
    assert out.splitlines()[-1].endswith("sha2-256 matches: it is notes.txt")
