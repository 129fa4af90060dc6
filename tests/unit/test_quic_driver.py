"""The /quic-v1 driver over real UDP on 127.0.0.1: GSO sends and their fallback, GRO reads, deferred
flushes (small writes and ACKs share datagrams), many streams and large transfers, certificate reuse."""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import os
import socket
import struct
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
from multiaddr import Multiaddr

from mycel.core.abc import Connection
from mycel.core.identity import Identity
from mycel.security.tls.certificate import CERTIFICATE_VALIDITY
from mycel.testing.conformance import receive_exactly
from mycel.transports.quic import QUIC, QUICConnection, UDPEndpoint
from mycel.transports.quic import endpoint as endpoint_module

LOCAL = Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1")
LINUX = sys.platform == "linux"


@contextlib.asynccontextmanager
async def pair(
    client_t: QUIC | None = None, server_t: QUIC | None = None, client_id: Identity | None = None
) -> AsyncIterator[tuple[QUICConnection, QUICConnection]]:
    client_t = client_t or QUIC()
    server_t = server_t or QUIC()
    server_id = Identity.generate()
    listener = await server_t.open_listener(LOCAL, server_id)
    accepted: list[Connection] = []
    async with trio.open_nursery() as nursery:

        async def accept() -> None:
            accepted.append(await listener.accept())

        nursery.start_soon(accept)
        client = await client_t.dial(listener.addrs[0], client_id or Identity.generate(), server_id.peer_id)
    server = accepted[0]
    assert isinstance(client, QUICConnection) and isinstance(server, QUICConnection)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        nursery.start_soon(server.run)
        try:
            yield client, server
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await client.aclose()
                await server.aclose()
                await listener.aclose()
            nursery.cancel_scope.cancel()


def endpoint_for(sock: socket.socket, **kw: Any) -> UDPEndpoint:
    sock.bind(("127.0.0.1", 0))
    return UDPEndpoint(sock, max_pending_handshakes=4, on_close=lambda _e: None, **kw)


def receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


class NoGSO(socket.socket):
    """A socket whose kernel refuses UDP_SEGMENT (as before Linux 4.18, or on some NICs)."""

    sendmsg_calls = 0

    def sendmsg(self, *args: Any, **kwargs: Any) -> int:
        NoGSO.sendmsg_calls += 1
        raise OSError(errno.EIO, "UDP GSO refused")


class RecordingGSO(socket.socket):
    segments: list[tuple[int, int]] = []  # (bytes, segment size) per sendmsg

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None) -> int:
        (segment,) = struct.unpack("=H", ancdata[0][2])
        RecordingGSO.segments.append((sum(len(b) for b in buffers), segment))
        return super().sendmsg(buffers, ancdata, flags, address)


async def test_gso_refused_falls_back_to_one_send_per_datagram() -> None:
    out = receiver()
    endpoint = endpoint_for(NoGSO(socket.AF_INET, socket.SOCK_DGRAM))
    datagrams = [(bytes([i]) * 1200, out.getsockname()) for i in range(3)] + [(b"z" * 300, out.getsockname())]
    assert endpoint.send(datagrams) == 3 * 1200 + 300
    assert NoGSO.sendmsg_calls == (1 if LINUX else 0) and not endpoint._gso  # tried once, then never again
    endpoint.send(datagrams[:2])
    assert NoGSO.sendmsg_calls == (1 if LINUX else 0)
    got = [out.recv(65536) for _ in range(6)]
    assert got == [d for d, _ in datagrams] + [d for d, _ in datagrams[:2]]
    endpoint.close()
    out.close()


@pytest.mark.skipif(not LINUX, reason="UDP GSO is Linux-only; elsewhere every datagram is sent alone")
async def test_gso_sends_equal_datagrams_in_one_call() -> None:
    out = receiver()
    RecordingGSO.segments = []
    endpoint = endpoint_for(RecordingGSO(socket.AF_INET, socket.SOCK_DGRAM))
    dest = out.getsockname()
    datagrams = [(bytes([i]) * 1400, dest) for i in range(5)] + [(b"tail", dest), (b"x" * 1400, dest)]
    endpoint.send(datagrams)
    # five full ones and the shorter one end a run; the last one is sent on its own
    assert RecordingGSO.segments == [(5 * 1400 + 4, 1400)]
    assert [out.recv(65536) for _ in range(7)] == [d for d, _ in datagrams]  # the kernel split them again
    endpoint.close()
    out.close()


async def test_gro_buffers_are_split_at_the_segment_size() -> None:
    endpoint = endpoint_for(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    seen: list[bytes] = []
    endpoint._dispatch = lambda data, addr, now: seen.append(data)  # type: ignore[method-assign]
    payload = b"".join(bytes([i]) * 1452 for i in range(3)) + b"end"
    reads = [(payload, [(17, 104, struct.pack("=i", 1452))]), (b"alone", [])]

    class Coalescing:
        def recvmsg_into(self, buffers: list[bytearray], ancsize: int) -> tuple[int, Any, int, Any]:
            if not reads:
                raise BlockingIOError
            data, ancillary = reads.pop(0)
            buffers[0][: len(data)] = data
            return len(data), ancillary, 0, ("127.0.0.1", 9)

    endpoint._gro = True
    buf = bytearray(65536)
    assert endpoint._receive_batch(Coalescing(), buf, memoryview(buf))  # type: ignore[arg-type]
    assert seen == [bytes([0]) * 1452, bytes([1]) * 1452, bytes([2]) * 1452, b"end", b"alone"]
    endpoint.close()


async def test_transfers_switch_gro_on_and_arrive_intact() -> None:
    async with pair() as (client, server):
        assert not client._endpoint._gro and not server._endpoint._gro  # not for a handshake
        data = os.urandom(4 * 1024 * 1024)
        out = await client.open_stream()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(out.send_all, data)
            inc = await server.accept_stream()
            assert hashlib.sha256(await receive_exactly(inc, len(data))).digest() == hashlib.sha256(data).digest()
        if LINUX:  # a bulk receiver asks the kernel for GRO (it may refuse: then it reads one by one)
            assert server._endpoint._gro or not server._endpoint._gro_wanted


async def test_small_writes_and_acks_share_datagrams() -> None:
    async with pair() as (client, server):
        for _ in range(3):  # the handshake's tail first: ACK whatever came last, now
            client._flush(ack=True)
            server._flush(ack=True)
            await trio.testing.wait_all_tasks_blocked()
        assert not client._core.ack_pending and not server._core.ack_pending
        for conn in (client, server):  # what is measured is coalescing, not ACK timers racing a slow machine
            conn._core._ack_delay = 5.0
        sent = {"client": 0, "server": 0}
        for name, conn in (("client", client), ("server", server)):
            original = conn._endpoint.send

            def counting(datagrams: Any, original: Any = original, name: str = name) -> int:
                sent[name] += len(datagrams)
                return int(original(datagrams))

            conn._endpoint.send = counting  # type: ignore[method-assign]
        request = await client.open_stream()
        await request.send_all(b"/multistream/1.0.0\n")
        await request.send_all(b"/ipfs/ping/1.0.0\n")
        await request.send_all(b"x" * 32)
        answer = await server.accept_stream()
        assert await receive_exactly(answer, 19 + 17 + 32) == b"/multistream/1.0.0\n/ipfs/ping/1.0.0\n" + b"x" * 32
        await answer.send_all(b"/multistream/1.0.0\n")
        await answer.send_all(b"/ipfs/ping/1.0.0\n")
        await answer.send_all(b"x" * 32)
        assert await receive_exactly(request, 19 + 17 + 32) == b"/multistream/1.0.0\n/ipfs/ping/1.0.0\n" + b"x" * 32
        # three writes, one datagram; the answer's three writes and the ACK of the request, one more
        assert sent == {"client": 1, "server": 1}


async def test_many_streams_and_large_transfers_both_ways() -> None:
    async with pair() as (client, server):

        async def echo_server() -> None:
            async with trio.open_nursery() as handlers:
                while True:
                    stream = await server.accept_stream()
                    handlers.start_soon(echo, stream)

        async def echo(stream: Any) -> None:
            while chunk := await stream.receive_some():
                await stream.send_all(chunk)
            await stream.send_eof()

        results: dict[int, bool] = {}

        async def exchange(i: int, size: int) -> None:
            data = os.urandom(size)
            stream = await client.open_stream()
            async with trio.open_nursery() as nursery:

                async def write() -> None:
                    await stream.send_all(data)
                    await stream.send_eof()

                nursery.start_soon(write)
                got = bytearray()
                while chunk := await stream.receive_some():
                    got += chunk
            results[i] = bytes(got) == data

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo_server)
                async with trio.open_nursery() as clients:
                    clients.start_soon(exchange, 0, 6 * 1024 * 1024)  # a large transfer each way
                    for i in range(1, 201):
                        clients.start_soon(exchange, i, 16 * 1024)
                nursery.cancel_scope.cancel()
        assert len(results) == 201 and all(results.values())
        assert client.stats.streams_opened == 201


async def test_certificate_is_reused_then_refreshed() -> None:
    now = [datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)]
    client_t = QUIC(wall_clock=lambda: now[0])
    server_t = QUIC(wall_clock=lambda: now[0])
    presented: list[bytes] = []
    client_id = Identity.generate()
    for advance in (datetime.timedelta(0), datetime.timedelta(hours=1), CERTIFICATE_VALIDITY / 2):
        now[0] += advance
        async with pair(client_t, server_t, client_id) as (_, server):
            presented.append(server._core.peer_certificates()[0])
    assert presented[0] == presented[1]  # one certificate for many connections
    assert presented[2] != presented[1]  # half its validity gone: a new one
    assert server_t._verified.hits == 1  # the second connection's certificate was verified before
