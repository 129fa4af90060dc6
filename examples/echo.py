"""Echo between two hosts in one process: a protocol handler of your own on a custom protocol id.

    python examples/echo.py
"""

from __future__ import annotations

import trio

from mycel import HostConfig, MuxedStream, open_host

PROTOCOL = "/example/echo/1.0.0"


async def echo(stream: MuxedStream) -> None:
    async for chunk in stream:
        await stream.send_all(chunk)
    await stream.send_eof()


async def main() -> None:
    listen = ["/ip4/127.0.0.1/tcp/0"]
    async with open_host(HostConfig(listen=listen)) as server, open_host(HostConfig()) as client:
        server.set_stream_handler(PROTOCOL, echo)
        stream = await client.new_stream(server.addrs[0], [PROTOCOL])
        await stream.send_all(b"hello, mycel")
        await stream.send_eof()
        reply = b"".join([chunk async for chunk in stream])
        print(f"{server.peer_id} echoed {reply!r}")


if __name__ == "__main__":
    trio.run(main)
