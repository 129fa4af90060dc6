"""RSS of a mycel listener across ~1000 hostile muxer connections (a measurement, not a test).

    .venv/bin/python -m tests.flood.churn_rss [--connections 1000] [--parallel 25]

Each hostile connection (TCP + Noise, fresh identity) does one of: 400 SYNs with 4 KiB of data
each, 16 echo streams filling their 256 KiB windows and never reading, or a burst of pings and
frames for streams that do not exist; then it closes. The listener runs twice, with and without
``malloc_trim`` after closes (``Yamux/Mplex(trim_memory=...)``; ``--trim-only``: only with); for each
run the table shows its RSS at the start, at the peak, right after the churn and 3 s later (past
the trailing trim, 2 s after the last close). :func:`run_churn` is also the load of
``tests/flood/test_rss_after_churn.py``.

Measured here (2 shared cores, loaded; 1000 connections, 25 at a time), RSS in MiB, with malloc_trim:

    =====================  =====  ====  =====  ====
    code                   start  peak  after  +3 s
    =====================  =====  ====  =====  ====
    before (911e559)          63   143    126    87
    before, second run        63   136    114    95
    now                       63   101     96    69
    now, second run           63   113    100    70
    =====================  =====  ====  =====  ====

Without malloc_trim (``no trim`` row): 63 / 147 / 145 / 145 before, 63 / 115 / 113 / 113 now.

What stayed before was not live data but garbage in reference cycles: each muxed connection and
its streams referenced each other, so every stream's unread data (up to its 256 KiB window) waited
for the collector's next full pass, which came long after the trims; Noise also held each
connection's last raw read (up to 1 MiB) until its next one, inbound peers stayed in the peerstore,
and the Noise send-buffer pool kept up to 8 MiB. To find such things again, run the listener with
``--diagnose PATH`` (see ``tests/flood/muxer_listener.py``) and send it SIGUSR1. What is left (~6
MiB) is pymalloc arenas (1 MiB each, freed only when empty) pinned by a few long-lived objects.
"""

from __future__ import annotations

import argparse
import time

import trio

from mycel.muxers.yamux.core import FLAG_SYN, TYPE_DATA, TYPE_PING, encode_frame
from mycel.protocols.echo import ECHO_PROTOCOL
from tests.flood.muxer_attacks import MiB, Listener, listener_process, negotiation, raw_connection


async def _one(listener: Listener, kind: int) -> None:
    try:
        conn = await raw_connection(listener)
    except Exception:  # refused by the listener's admission limits: counts as churn too
        return
    try:
        with trio.move_on_after(2.0):
            if kind == 0:
                body = b"s" * 4096
                await conn.send_all(b"".join(encode_frame(TYPE_DATA, FLAG_SYN, 1 + 2 * i, len(body), body) for i in range(400)))
            elif kind == 1:
                neg = negotiation(ECHO_PROTOCOL)
                for i in range(16):
                    body = neg + b"e" * (256 * 1024 - len(neg))
                    await conn.send_all(encode_frame(TYPE_DATA, FLAG_SYN, 1 + 2 * i, len(body), body))
            else:
                await conn.send_all(encode_frame(TYPE_PING, FLAG_SYN, 0, 1) * 5000 + encode_frame(TYPE_DATA, 0, 1, 0) * 5000)
            await trio.sleep(0.2)
    except Exception:
        pass
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await conn.aclose()


async def run_churn(listener: Listener, connections: int, parallel: int) -> int:
    """``connections`` hostile connections (the three kinds in turn), ``parallel`` at a time;
    returns the listener's peak RSS in bytes, sampled as each one ends."""
    peak = listener.rss()
    limiter = trio.CapacityLimiter(parallel)

    async def worker(i: int) -> None:
        nonlocal peak
        async with limiter:
            await _one(listener, i % 3)
            peak = max(peak, listener.rss())

    async with trio.open_nursery() as nursery:
        for i in range(connections):
            nursery.start_soon(worker, i)
    return peak


async def churn(trim: bool, connections: int, parallel: int) -> dict[str, float]:
    """One listener run; its RSS figures in MiB."""
    with listener_process("yamux", *([] if trim else ["--no-trim"])) as listener:
        start = listener.rss()
        t0 = time.monotonic()
        peak = await run_churn(listener, connections, parallel)
        after = listener.rss()
        await trio.sleep(3.0)  # past the trim interval (2 s): the deferred trim has run
        later = listener.rss()
        return {
            "start": start / MiB,
            "peak": peak / MiB,
            "after": after / MiB,
            "after_3s": later / MiB,
            "seconds": time.monotonic() - t0,
        }


async def main(connections: int, parallel: int, trim_only: bool) -> None:
    rows = {}
    for trim in (True,) if trim_only else (False, True):
        rows["malloc_trim" if trim else "no trim"] = await churn(trim, connections, parallel)
    print(f"{connections} hostile connections, {parallel} at a time; listener RSS in MiB")
    print(f"{'':12} {'start':>7} {'peak':>7} {'after':>7} {'+3 s':>7} {'secs':>6}")
    for name, r in rows.items():
        print(f"{name:12} {r['start']:7.0f} {r['peak']:7.0f} {r['after']:7.0f} {r['after_3s']:7.0f} {r['seconds']:6.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=25)
    parser.add_argument("--trim-only", action="store_true", help="only the run with malloc_trim")
    args = parser.parse_args()
    trio.run(main, args.connections, args.parallel, args.trim_only)
