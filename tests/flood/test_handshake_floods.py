"""Hostile clients on the handshake path of a real mycel listener (a subprocess on 127.0.0.1), issue #12:
a slowloris from one source, 1,000 half-open connections from a hundred sources, a Noise frame announced
at 65,535 bytes and never completed, an oversized Noise message 1. The well-behaved peer (127.0.0.1)
dials and pings *during* each attack; afterwards the listener's fds are back to the baseline, its RSS
grew less than 64 MiB and every refusal is counted.

The attackers use 127.0.0.2 and up (the victim runs with ``--limit-loopback``: loopback sources are
exempt from per-source limits by default).
"""

from __future__ import annotations

import os
import socket

import trio

from tests.flood.handshake_attacks import Victim, attack_socket, close_all, legit_rounds, open_attack, victim

MIB_KIB = 1024
MSS_NOISE = b"\x13/multistream/1.0.0\n\x07/noise\n"  # header + proposal of /noise, in one write
RSS_BOUND_KIB = 64 * MIB_KIB


async def _baseline(v: Victim) -> tuple[int, int]:
    """The victim's fds and RSS (KiB) once it has served one legit peer (its lazily made resources exist)."""
    warm = await legit_rounds(f"{v.tcp}/p2p/{v.peer}", 1)
    assert warm.failed == 0, warm.errors
    stats = await v.settle(10_000)
    return int(stats["fds"]), int(stats["rss_kib"])


def _decided(swarm: dict[str, int]) -> int:
    """Inbound connections the victim has admitted or refused."""
    return swarm["admitted"] + swarm["table_full"] + swarm["ip_pending"] + swarm["ip_rate"]


async def _legit_during(
    v: Victim, socks: list[socket.socket], base: tuple[int, int], age: float = 0.0, hold: str | None = None
) -> dict[str, int]:
    """With the attack's ``socks`` held (for ``age`` s first: then they count as stalled), 8 legit rounds
    must all succeed; then (once the victim counts 8 ``hold`` events, if given, at most 6 s) the attack
    ends and the victim's fds must come back to ``base``, its RSS must have grown less than 64 MiB.
    The victim's handshake counters."""
    base_fds, base_rss = base
    try:
        if age:
            await trio.sleep(age)  # the attack holds its connections this long: part of the scenario
        legit = await legit_rounds(f"{v.tcp}/p2p/{v.peer}", 8)
        peak_rss = v.rss_kib()
        with trio.move_on_after(6):
            while hold is not None and (await v.stats())["swarm"][hold] < 8:
                await trio.sleep(0.05)  # polling another process's counters
    finally:
        close_all(socks)
    assert legit.failed == 0, legit.errors
    stats = await v.settle(base_fds)
    assert stats["fds"] <= base_fds
    assert peak_rss - base_rss < RSS_BOUND_KIB
    swarm: dict[str, int] = stats["swarm"]
    return swarm


async def test_slowloris_from_one_source_does_not_block_a_legit_peer() -> None:
    """500 connections from one address, each sending one byte: the legit peer's dials and pings succeed
    while they are held (before: 64 global slots, all taken; 21 of 23 pings failed)."""
    async with victim("--limit-loopback", "--stage-timeout", "2") as v:
        base = await _baseline(v)
        socks = open_attack(["127.0.0.2"], v.tcp_port, 500, first=b"\x13")
        swarm = await _legit_during(v, socks, base, hold="timeout_select")
        # 8 pending per source; the rest refused at accept (pending or rate), all counted
        assert swarm["ip_pending"] + swarm["ip_rate"] >= 400, swarm
        assert swarm["admitted"] >= 8
        assert swarm["timeout_select"] >= 8, swarm  # the 8 admitted ones: cut at the select stage's deadline


async def test_half_open_from_many_sources_evicts_stalled_handshakes() -> None:
    """1,000 connections from 100 addresses that never send a byte (10 each: within the per-source
    limits' burst), so the global table is what they fill: the stalled ones are evicted for the legit
    peer's handshakes, which all succeed during the attack."""
    async with victim("--limit-loopback", "--stage-timeout", "2") as v:
        base = await _baseline(v)
        sources = [f"127.0.1.{i}" for i in range(1, 101)]
        socks = open_attack(sources, v.tcp_port, 10)
        attackers = len(socks)
        # the kernel completes the connects before the victim accepts them: wait until it has seen them
        # all (each admitted or refused), so that the ones it holds are then a second old
        with trio.move_on_after(5):
            while _decided((await v.stats())["swarm"]) < attackers + 1:
                await trio.sleep(0.05)  # polling another process's counters
        swarm = await _legit_during(v, socks, base, age=1.0)
        assert swarm["evicted_stalled"] >= 8, swarm
        assert swarm["table_full"] > 0, swarm  # fresh attackers met a full table of fresh ones
        # every connection was admitted or refused, and counted: the attackers + 1 warm-up + 8 legit
        assert _decided(swarm) == attackers + 9, swarm


def _wait_closed(sock: socket.socket, limit: float) -> float | None:
    """Seconds until the peer closes ``sock`` (reads and drops what it sends), None if not within ``limit``."""
    sock.settimeout(0.1)
    waited = 0.0
    while waited < limit:
        try:
            if sock.recv(65536) == b"":
                return waited
        except TimeoutError:
            waited += 0.1
        except OSError:  # reset
            return waited
    return None


async def test_noise_frame_announced_at_65535_is_dropped_at_its_stage_deadline() -> None:
    """A Noise message announced at 65,535 bytes, 100 of them sent, then nothing: the handshake is cut at
    the security stage's deadline (1 s here), not after the 15 s handshake timeout."""
    async with victim("--limit-loopback", "--stage-timeout", "1") as v:
        base_fds, _ = await _baseline(v)
        # msg 1 would be refused for its length at once; so complete msg 1 and stall inside msg 3
        sock = attack_socket("127.0.0.3", v.tcp_port)
        try:
            sock.sendall(MSS_NOISE + b"\x00\x20" + os.urandom(32))  # /noise, then msg 1 = a 32-byte ephemeral key
            sock.sendall(b"\xff\xff" + bytes(100))  # "msg 3" announced at 65,535 bytes
            t0 = trio.current_time()
            closed = await trio.to_thread.run_sync(_wait_closed, sock, 6.0)
        finally:
            sock.close()
        assert closed is not None, "the stalled handshake still held its slot after 6 s"
        assert closed < 3.0
        assert trio.current_time() - t0 < 4.0
        stats = await v.settle(base_fds)
        assert stats["swarm"]["timeout_security"] >= 1, stats


async def test_noise_msg1_with_a_payload_is_refused_at_its_header() -> None:
    """Message 1 is an ephemeral key and nothing else (go sends no payload): one announced longer than
    32 bytes is refused as soon as its length arrives."""
    async with victim("--limit-loopback") as v:
        sock = attack_socket("127.0.0.4", v.tcp_port)
        try:
            sock.sendall(MSS_NOISE + b"\xff\xff" + bytes(64))
            closed = await trio.to_thread.run_sync(_wait_closed, sock, 3.0)
        finally:
            sock.close()
        assert closed is not None and closed < 1.0
        # and a normal handshake still works
        legit = await legit_rounds(f"{v.tcp}/p2p/{v.peer}", 2)
        assert legit.failed == 0, legit.errors
