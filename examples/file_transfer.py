"""File transfer with a checksum: a protocol of our own that sends a header, then the bytes.

    python examples/file_transfer.py [FILE]      # without FILE: 4 MiB of random bytes

The receiver asks for a file by name on `/example/file/1.0.0`; the sender answers with one
length-prefixed JSON header ({"name", "size", "sha256"}, or {"error"}) and then streams the raw bytes
in 64 KiB chunks and half-closes. The receiver writes them to disk as they arrive, hashes them on the
way, and checks size and SHA-256 against the header: a short or corrupted transfer is an error, not a
silently wrong file. The header is bounded (4 KiB), the file size is capped (MAX_SIZE).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import trio

from mycel import (
    Host,
    HostConfig,
    MuxedStream,
    ProtocolViolation,
    StreamHandler,
    open_host,
    receive_message,
    send_message,
)

PROTOCOL = "/example/file/1.0.0"
CHUNK = 64 * 1024
MAX_SIZE = 1 << 30
MAX_HEADER = 4096


def file_server(shared: dict[str, Path]) -> StreamHandler:
    """A stream handler serving the files in ``shared`` (name -> path), and nothing else."""

    async def serve(stream: MuxedStream) -> None:
        request = await receive_message(stream, MAX_HEADER)
        name = request.decode("utf-8", "replace") if request else ""
        path = shared.get(name)
        if path is None:
            await send_message(stream, json.dumps({"error": f"no file {name!r}"}).encode())
            await stream.send_eof()
            return
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        header = {"name": name, "size": path.stat().st_size, "sha256": digest}
        await send_message(stream, json.dumps(header).encode())
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                await stream.send_all(chunk)
        await stream.send_eof()

    return serve


async def fetch(host: Host, peer: str, name: str, dest: Path) -> dict[str, object]:
    """Fetch ``name`` from ``peer`` into ``dest``; return the header once size and hash are checked."""
    async with await host.new_stream(peer, [PROTOCOL]) as stream:
        await send_message(stream, name.encode())
        header = json.loads(await receive_message(stream, MAX_HEADER) or b'{"error": "no header"}')
        if "error" in header:
            raise FileNotFoundError(header["error"])
        size = int(header["size"])
        if not 0 <= size <= MAX_SIZE:
            raise ProtocolViolation(f"refusing a file of {size} bytes")
        sha, got = hashlib.sha256(), 0
        with dest.open("wb") as out:
            async for chunk in stream:
                got += len(chunk)
                if got > size:
                    raise ProtocolViolation(f"more than the {size} bytes announced")
                sha.update(chunk)
                out.write(chunk)
        if got != size or sha.hexdigest() != header["sha256"]:
            raise ProtocolViolation(f"checksum mismatch: got {got} bytes, sha256 {sha.hexdigest()}")
        return dict(header)


async def main(source: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if source is None:
            source = Path(tmp) / "random.bin"
            source.write_bytes(os.urandom(4 * 1024 * 1024))
        listen = ["/ip4/127.0.0.1/tcp/0"]
        async with open_host(HostConfig(listen=listen)) as sender, open_host(HostConfig()) as receiver:
            sender.set_stream_handler(PROTOCOL, file_server({source.name: source}))
            start = trio.current_time()
            with trio.fail_after(60):
                header = await fetch(receiver, str(sender.addrs[0]), source.name, Path(tmp) / "received")
            took = trio.current_time() - start
            print(f"received {header['name']}: {header['size']} bytes in {took:.2f} s, sha256 {header['sha256']} OK")
            try:
                await fetch(receiver, str(sender.addrs[0]), "missing.txt", Path(tmp) / "missing")
            except FileNotFoundError as e:
                print(f"asked for a file the sender lacks: {e}")


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]) if len(sys.argv) > 1 else None)
