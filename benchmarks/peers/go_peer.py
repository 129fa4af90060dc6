"""go-libp2p as a benchmark server: p2pd (go-libp2p-daemon, TCP + Noise + yamux) with a /perf/1.0.0
stream handler. Run with the repo's virtualenv:

    go_peer.py server      one JSON line {"peer_id", "addrs", "pid", "pids"}; serves until stdin closes

p2pd has no perf service, so what this measures is go-libp2p's TCP + Noise + yamux *plus* the daemon
piping each stream through a unix socket to this Python helper, which answers perf over that pipe:
``pids`` holds both processes, and their CPU together is the "server" CPU. The pipe cannot half-close
(p2pd closes it when the remote half-closes), so a download is read to the requested length instead of
to EOF (the mycel client's ``--no-half-close``), and an upload ends when go closes the stream.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from interop.go_peer import P2PD, own_addr, run_p2pd  # noqa: E402
from interop.p2pd.client import (  # noqa: E402
    DaemonStream,
    accept_daemon_stream,
    open_unix_listener,
    unix_multiaddr,
)
from interop.p2pd.identify_check import addr_to_str  # noqa: E402
from mycel.core.multibase import b58encode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from control import wait_stdin_closed  # noqa: E402

PERF = "/perf/1.0.0"
BLOCK = 256 * 1024


async def read_exactly(stream: DaemonStream, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = await stream.receive_some(n - len(buf))
        if not chunk:
            raise EOFError(f"stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


async def perf_handler(sock: trio.SocketStream) -> None:
    """One perf stream over the daemon pipe: a header asking for 0 bytes is an upload (read to EOF),
    otherwise send the bytes asked for and close (the client reads exactly that many)."""
    try:
        stream = await accept_daemon_stream(sock)
        (to_send,) = struct.unpack(">Q", await read_exactly(stream, 8))
        if to_send:
            block = memoryview(bytes(BLOCK))
            while to_send > 0:
                k = min(to_send, BLOCK)
                await stream.send_all(block[:k])
                to_send -= k
        else:
            while await stream.receive_some(BLOCK):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, EOFError):
        pass  # p2pd closes the pipe as soon as the remote stream ends
    finally:
        await trio.aclose_forcefully(sock)




async def serve() -> None:
    async with run_p2pd("tcp", "noise", "yamux", "127.0.0.1") as daemon, trio.open_nursery() as nursery:
        handler_path = os.path.join(daemon.workdir, "perf.sock")
        listener = await open_unix_listener(handler_path, backlog=1024)
        nursery.start_soon(trio.serve_listeners, perf_handler, [listener])
        await daemon.control.stream_handler(unix_multiaddr(handler_path), [PERF])
        me = await daemon.control.identify()
        peer = b58encode(me.peer_id)
        addrs = [f"{a}/p2p/{peer}" for a in map(addr_to_str, me.addrs) if own_addr("tcp", "127.0.0.1", a)]
        line = {"peer_id": peer, "addrs": addrs, "pid": daemon.pid, "pids": [daemon.pid, os.getpid()]}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        await wait_stdin_closed()
        nursery.cancel_scope.cancel()


def main() -> int:
    if sys.argv[1:] != ["server"]:
        print(__doc__, file=sys.stderr)
        return 2
    if not P2PD.exists():
        print(f"p2pd not found at {P2PD}: run interop/install.sh", file=sys.stderr)
        return 2
    trio.run(serve)
    return 0


if __name__ == "__main__":
    sys.exit(main())
