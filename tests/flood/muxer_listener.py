"""A mycel listener for the flood tests, run as its own process (``python -m tests.flood.muxer_listener``).

Listens on 127.0.0.1 (TCP + Noise + yamux/mplex) with the ping and echo services, prints one JSON
line ``{"addr": ..., "pid": ...}`` and runs until its stdin closes. ``--muxer mplex`` puts mplex first; ``--no-trim`` turns malloc_trim off (for the churn measurement).
``--diagnose PATH``: on each SIGUSR1 the listener appends :func:`memory_report` to PATH (cyclic
garbage by type, smaps_rollup, pymalloc arenas, glibc's totals, gc objects by type, peerstore size and
connections; with ``--tracemalloc`` also live allocations by line; with ``--trim-in-report`` the RSS
after a ``malloc_trim`` before and after collecting) and then prints ``{"report": PATH}``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import gc
import io
import json
import logging
import os
import re
import signal
import sys
import tempfile
import tracemalloc
from pathlib import Path

import trio

from mycel import HostConfig, open_host
from mycel.muxers.mplex import Mplex
from mycel.muxers.trim import malloc_trim
from mycel.muxers.yamux import Yamux
from mycel.protocols.echo import Echo
from mycel.protocols.ping import Ping
from mycel.security.noise import Noise
from mycel.transports.tcp import TCP


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def memory_report(host: object, trim: bool = False) -> str:
    """Where this process's memory is: what the collector finds in cycles (then collected),
    smaps_rollup, pymalloc's arenas, glibc's totals, gc objects by type, the host's peerstore size
    and connections and (when tracing) the live allocations by file:line. ``trim``: also the RSS
    after a ``malloc_trim`` before and after collecting (what the allocator would give back)."""
    out = io.StringIO()
    out.write(f"RSS at the report: {_rss_kib()} kB\n")
    if trim:
        malloc_trim()
        out.write(f"after a trim (before gc): {_rss_kib()} kB\n")
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds unreachable (cycles), by type and size
    gc.collect()
    garbage = list(gc.garbage)
    gc.garbage.clear()
    gc.set_debug(0)
    kinds = collections.Counter(type(o).__qualname__ for o in garbage)
    big: collections.Counter[str] = collections.Counter()
    for o in garbage:
        big[type(o).__qualname__] += sys.getsizeof(o)
    out.write(f"cyclic garbage: {len(garbage)} objects, {sum(big.values()) // 1024} KiB (shallow)\n")
    for name, size in big.most_common(12):
        out.write(f"  {size // 1024:8d} KiB {kinds[name]:7d} {name}\n")
    frames = collections.Counter(
        f"{o.f_code.co_filename.rsplit('/', 2)[-1]}:{o.f_code.co_name}" for o in garbage if type(o).__name__ == "frame"
    )
    for name, n in frames.most_common(12):
        out.write(f"  frame {n:6d} {name}\n")
    del garbage
    gc.collect()
    with contextlib.suppress(OSError), open("/proc/self/smaps_rollup") as f:
        out.write(f.read())
    stats = io.StringIO()
    err = sys.stderr
    try:  # _debugmallocstats writes to the C stderr (nothing while tracemalloc runs): swap fd 2
        with tempfile.TemporaryFile() as tmp:
            saved = os.dup(2)
            err.flush()
            os.dup2(tmp.fileno(), 2)
            try:
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            tmp.seek(0)
            stats.write(tmp.read().decode(errors="replace"))
    except OSError:
        pass
    for line in stats.getvalue().splitlines():
        if any(k in line for k in ("arenas", "# bytes in", "Total")):
            out.write(line + "\n")
    out.write(_malloc_info())
    if trim:
        malloc_trim()
        out.write(f"after gc and a trim: {_rss_kib()} kB\n")
    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    out.write(f"gc objects: {sum(counts.values())}\n")
    for name, n in counts.most_common(25):
        out.write(f"  {n:8d} {name}\n")
    peerstore = getattr(host, "peerstore", None)
    if peerstore is not None:
        out.write(f"peerstore peers: {len(list(peerstore.peers()))}\n")
    connections = getattr(host, "connections", None)
    if connections is not None:
        out.write(f"connections: {len(connections())}\n")
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot()
        total = sum(s.size for s in snap.statistics("filename"))
        out.write(f"tracemalloc live: {total / 1024:.0f} KiB\n")
        for stat in snap.statistics("lineno")[:30]:
            out.write(f"  {stat.size / 1024:9.1f} KiB {stat.count:7d}  {stat.traceback}\n")
    return out.getvalue()


def _malloc_info() -> str:
    """glibc's own totals (malloc_info): bytes its arenas hold from the OS and how much is free."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    except (OSError, AttributeError):
        return ""
    with tempfile.NamedTemporaryFile(suffix=".xml") as tmp:
        f = libc.fopen(tmp.name.encode(), b"w")
        libc.malloc_info(0, f)
        libc.fclose(f)
        xml = Path(tmp.name).read_text()
    tail = xml[xml.rfind("</heap>") :]
    found = dict(re.findall(r'<(?:total|system) type="(\w+)" (?:count="\d+" )?size="(\d+)"', tail))
    heaps = xml.count("<heap nr=")
    return f"glibc: heaps {heaps} " + " ".join(f"{k}={int(v) // 1024}K" for k, v in found.items()) + "\n"


async def _dump_on_signal(host: object, path: str, trim: bool) -> None:
    with trio.open_signal_receiver(signal.SIGUSR1) as signals:
        async for _ in signals:
            with open(path, "a") as f:
                f.write(memory_report(host, trim) + "\n=====\n")
            print(json.dumps({"report": path}), flush=True)  # the reader knows it is complete


async def main(muxer: str, trim: bool, diagnose: str | None = None, trim_in_report: bool = False) -> None:
    yamux, mplex = Yamux(trim_memory=trim), Mplex(trim_memory=trim)
    muxers = [mplex, yamux] if muxer == "mplex" else [yamux, mplex]
    config = HostConfig(
        transports=[TCP()],
        security=[Noise()],
        muxers=muxers,
        listen=["/ip4/127.0.0.1/tcp/0"],
        services=[Ping(), Echo()],
    )
    async with open_host(config) as host:
        addr = f"{host.listen_addrs[0]}/p2p/{host.peer_id}"
        async with trio.open_nursery() as nursery:
            if diagnose:
                nursery.start_soon(_dump_on_signal, host, diagnose, trim_in_report)
            await trio.sleep(0)  # the signal handler is installed before we say we are ready
            print(json.dumps({"addr": addr, "pid": __import__("os").getpid()}), flush=True)
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--muxer", default="yamux", choices=["yamux", "mplex"])
    parser.add_argument("--no-trim", action="store_true", help="no malloc_trim after connections close")
    parser.add_argument("--diagnose", metavar="PATH", help="SIGUSR1 appends a memory report to PATH")
    parser.add_argument("--trim-in-report", action="store_true", help="the report also trims and shows RSS after")
    parser.add_argument("--tracemalloc", action="store_true", help="trace allocations (pymalloc stats then unavailable)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    if args.tracemalloc:
        tracemalloc.start(1)
    trio.run(main, args.muxer, not args.no_trim, args.diagnose, args.trim_in_report)
