"""A stand-in peer program for adapter tests: follows (or breaks) the peer contract on purpose.

    fake_peer.py <behaviour> listen|dial --transport ... [--case-timeout S] [target]

behaviours: good | stubborn (ignores stdin EOF and SIGTERM, starts a child that does too) | silent
(never prints, never exits) | unsupported | huge (prints a 2 MiB line).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

CASES = ("connect", "identify", "ping", "echo_1mib", "echo_64_streams", "half_close", "reset")


def out(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    behaviour, mode = sys.argv[1], sys.argv[2]
    if behaviour == "unsupported":
        out({"unsupported": "fake says no"})
        return 3
    if behaviour == "huge":
        sys.stdout.write("x" * (2 * 1024 * 1024) + "\n")
        sys.stdout.flush()
        time.sleep(60)
        return 0
    if behaviour == "silent":
        time.sleep(60)
        return 0
    if behaviour == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        out({"peer_id": "Fake", "addrs": ["/ip4/127.0.0.1/tcp/1/p2p/Fake"], "child_pid": child.pid})
        time.sleep(60)
        return 0
    if mode == "listen":
        print("log line to stderr", file=sys.stderr, flush=True)
        out({"peer_id": "Fake", "addrs": ["/ip4/127.0.0.1/tcp/1/p2p/Fake"], "pid": os.getpid()})
        out({"event": "stream_reset", "protocol": "/echo/1.0.0", "n": 1})
        out({"event": "other", "n": 2})
        out({"event": "stream_reset", "protocol": "/echo/1.0.0", "n": 3})
        sys.stdin.read()  # serve until stdin EOF
        return 0
    sys.stdout.write("not json\n")
    out({name: {"ok": name != "reset", "detail": f"fake {name}"} for name in CASES})
    return 0


if __name__ == "__main__":
    sys.exit(main())
