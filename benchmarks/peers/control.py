"""The driver's control channel, shared by the Python peer programs: it closes our stdin to stop us and
writes a line to let a paused phase go on. Needs only trio (present in every peer's environment)."""

from __future__ import annotations

import os
import sys

import trio


async def wait_stdin_closed() -> None:
    """Return at EOF on stdin (the driver closes it to stop us)."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    try:
        while await stdin.receive_some(4096):
            pass
    except (trio.BrokenResourceError, OSError):
        pass
    finally:
        await stdin.aclose()


async def wait_stdin_line() -> None:
    """Return after one line (or EOF) on stdin: the driver's go-ahead between memory-test phases."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    try:
        while True:
            data = await stdin.receive_some(1)
            if not data or data == b"\n":
                return
    finally:
        await stdin.aclose()
