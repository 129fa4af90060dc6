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
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from interop.p2pd.client import (  # noqa: E402
    ControlClient,
    DaemonStream,
    accept_daemon_stream,
    open_unix_listener,
    unix_multiaddr,
)
from mycel.core.multibase import b58encode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from control import wait_stdin_closed  # noqa: E402

P2PD = Path(os.environ.get("MYCEL_P2PD", REPO / "interop" / ".peers" / "go" / "p2pd"))
PERF = "/perf/1.0.0"
BLOCK = 256 * 1024
READY_TIMEOUT = 20.0
BANNER_LIMIT = 64 * 1024  # p2pd's startup banner; more before "Peer Addrs:" is an error


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
    workdir = tempfile.mkdtemp(prefix="mycel-bench-p2pd-")
    control_path = os.path.join(workdir, "p2pd.sock")
    argv = [
        str(P2PD), "-listen", f"/unix{control_path}", "-hostAddrs", "/ip4/127.0.0.1/tcp/0",
        "-noise=true", "-tls=false", "-muxer", "yamux",
    ]  # fmt: skip
    proc = await trio.lowlevel.open_process(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        async with trio.open_nursery() as nursery:
            banner = bytearray()
            with trio.fail_after(READY_TIMEOUT):
                while b"Peer Addrs:" not in banner:
                    data = await proc.stdout.receive_some(4096)
                    if not data or len(banner) > BANNER_LIMIT:
                        raise RuntimeError(f"p2pd did not start: {banner.decode(errors='replace')}")
                    banner += data
            stdout = proc.stdout

            async def drain_stdout() -> None:  # keep p2pd's pipe from filling; nothing is kept
                async for _ in stdout:
                    pass

            nursery.start_soon(drain_stdout)
            handler_path = os.path.join(workdir, "perf.sock")
            listener = await open_unix_listener(handler_path, backlog=1024)
            nursery.start_soon(trio.serve_listeners, perf_handler, [listener])
            control = ControlClient(control_path)
            await control.stream_handler(unix_multiaddr(handler_path), [PERF])
            me = await control.identify()
            peer = b58encode(me.peer_id)
            from multiaddr import Multiaddr

            addrs = [str(Multiaddr(a)) for a in me.addrs]
            addrs = [f"{a}/p2p/{peer}" for a in addrs if a.startswith("/ip4/127.0.0.1/tcp/")]
            line = {"peer_id": peer, "addrs": addrs, "pid": proc.pid, "pids": [proc.pid, os.getpid()]}
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
            await wait_stdin_closed()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.terminate()
                with trio.move_on_after(5):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            shutil.rmtree(workdir, ignore_errors=True)


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
