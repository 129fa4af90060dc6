"""A SecureConnection test double: no handshake, no encryption, placeholder peers.

Wraps any trio HalfCloseableStream so muxers can be tested without Noise/TLS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import trio
import trio.testing
from multiaddr import Multiaddr

from mycel.core.abc import Direction, SecureConnection

if TYPE_CHECKING:
    from mycel.core.keys import PublicKey
    from mycel.core.peer_id import PeerId

FAKE_SECURITY_PROTOCOL = "/mycel-fake-secure/1.0.0"


class FakePeer:
    """Stands in for a PeerId (or public key) in tests: a name, equal by name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakePeer) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"FakePeer({self.name!r})"

    def __str__(self) -> str:
        return self.name


class FakeSecureConnection(SecureConnection):
    """Passes bytes through unchanged; reports the given (placeholder) peers and addresses."""

    def __init__(
        self,
        stream: trio.abc.HalfCloseableStream,
        *,
        direction: Direction,
        local_peer: Any = None,
        remote_peer: Any = None,
        local_addr: str = "/ip4/127.0.0.1/tcp/1",
        remote_addr: str = "/ip4/127.0.0.1/tcp/2",
        early_muxer: str | None = None,
    ) -> None:
        self.stream = stream
        self._direction = direction
        self._local_peer = local_peer if local_peer is not None else FakePeer("local")
        self._remote_peer = remote_peer if remote_peer is not None else FakePeer("remote")
        self._local_addr = Multiaddr(local_addr)
        self._remote_addr = Multiaddr(remote_addr)
        self._early_muxer = early_muxer

    @property
    def local_peer(self) -> PeerId:
        return cast("PeerId", self._local_peer)

    @property
    def remote_peer(self) -> PeerId:
        return cast("PeerId", self._remote_peer)

    @property
    def remote_public_key(self) -> PublicKey:
        return cast("PublicKey", self._remote_peer)

    @property
    def local_addr(self) -> Multiaddr:
        return self._local_addr

    @property
    def remote_addr(self) -> Multiaddr:
        return self._remote_addr

    @property
    def direction(self) -> Direction:
        return self._direction

    @property
    def security_protocol(self) -> str:
        return FAKE_SECURITY_PROTOCOL

    @property
    def early_muxer(self) -> str | None:
        return self._early_muxer

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


def fake_secure_pair(
    a: trio.abc.HalfCloseableStream, b: trio.abc.HalfCloseableStream
) -> tuple[FakeSecureConnection, FakeSecureConnection]:
    """Wrap two connected streams: ``a`` is the dialer (OUTBOUND), ``b`` the listener."""
    pa, pb = FakePeer("peer-a"), FakePeer("peer-b")
    client = FakeSecureConnection(
        a, direction=Direction.OUTBOUND, local_peer=pa, remote_peer=pb,
        local_addr="/ip4/127.0.0.1/tcp/1", remote_addr="/ip4/127.0.0.1/tcp/2",
    )
    server = FakeSecureConnection(
        b, direction=Direction.INBOUND, local_peer=pb, remote_peer=pa,
        local_addr="/ip4/127.0.0.1/tcp/2", remote_addr="/ip4/127.0.0.1/tcp/1",
    )
    return client, server


def socketpair_secure_pair() -> tuple[FakeSecureConnection, FakeSecureConnection]:
    """A connected pair over a real ``trio.socket.socketpair()`` (kernel buffers, real EOF)."""
    sa, sb = trio.socket.socketpair()
    return fake_secure_pair(trio.SocketStream(sa), trio.SocketStream(sb))


def memory_secure_pair() -> tuple[FakeSecureConnection, FakeSecureConnection]:
    """A connected pair over trio's in-memory streams (no sockets)."""
    a, b = trio.testing.memory_stream_pair()
    return fake_secure_pair(a, b)
