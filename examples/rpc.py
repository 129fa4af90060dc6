"""Request/response RPC: one stream per call, JSON in, JSON out, errors as answers.

    python examples/rpc.py

A server registers methods; a client calls them by name on `/example/rpc/1.0.0`. Each call opens a
stream, sends one length-prefixed request ({"method", "params"}), half-closes, and reads one
length-prefixed reply ({"result"} or {"error"}) — the shape of most libp2p request/response protocols
(identify, AutoNAT, relay's hop). Messages are capped at 64 KiB each way; a call is bounded by a
timeout; an unknown method or a bad parameter comes back as an RpcError, not a dead stream.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from mycel import Host, HostConfig, MuxedStream, ProtocolViolation, open_host, receive_message, send_message

PROTOCOL = "/example/rpc/1.0.0"
MAX_MESSAGE = 64 * 1024

Method = Callable[..., Awaitable[Any]]


class RpcError(Exception):
    """The server answered with an error."""


class RpcServer:
    """Methods by name, served on PROTOCOL; a method's exception is sent back as its message."""

    def __init__(self) -> None:
        self.methods: dict[str, Method] = {}

    def method(self, fn: Method) -> Method:
        self.methods[fn.__name__] = fn
        return fn

    async def handle(self, stream: MuxedStream) -> None:
        raw = await receive_message(stream, MAX_MESSAGE)
        try:
            request = json.loads(raw or b"null")
            fn = self.methods.get(request["method"])
            if fn is None:
                raise LookupError(f"no method {request['method']!r}")
            reply = {"result": await fn(*request.get("params", []))}
        except Exception as e:  # the caller's mistake: tell it, keep serving others
            reply = {"error": f"{type(e).__name__}: {e}"}
        await send_message(stream, json.dumps(reply).encode())
        await stream.send_eof()


async def call(host: Host, peer: str, method: str, *params: Any, timeout: float = 10) -> Any:
    """Call ``method(*params)`` on ``peer``; its result, or RpcError with the server's message."""
    with trio.fail_after(timeout):
        async with await host.new_stream(peer, [PROTOCOL]) as stream:
            await send_message(stream, json.dumps({"method": method, "params": params}).encode())
            await stream.send_eof()
            raw = await receive_message(stream, MAX_MESSAGE)
    if raw is None:
        raise ProtocolViolation("the server closed without answering")
    reply = json.loads(raw)
    if "error" in reply:
        raise RpcError(reply["error"])
    return reply["result"]


async def main() -> None:
    server = RpcServer()

    @server.method
    async def add(a: int, b: int) -> int:
        return a + b

    @server.method
    async def upper(text: str) -> str:
        return text.upper()

    async with open_host(HostConfig(listen=["/ip4/127.0.0.1/tcp/0"])) as a, open_host(HostConfig()) as b:
        a.set_stream_handler(PROTOCOL, server.handle)
        addr = str(a.addrs[0])
        print("add(2, 3) =", await call(b, addr, "add", 2, 3))
        print("upper('mycel') =", await call(b, addr, "upper", "mycel"))
        results = {}
        async with trio.open_nursery() as nursery:  # calls in parallel: one stream each

            async def one(i: int) -> None:
                results[i] = await call(b, addr, "add", i, i)

            for i in range(10):
                nursery.start_soon(one, i)
        print("10 parallel calls:", [results[i] for i in range(10)])
        for bad in (("divide", 1, 0), ("add", 1)):
            try:
                await call(b, addr, *bad)
            except RpcError as e:
                print(f"{bad[0]}{bad[1:]} -> RpcError: {e}")


if __name__ == "__main__":
    trio.run(main)
