"""``/plaintext/2.0.0``: exchange peer ids and keys, then pass bytes through unencrypted.

For tests only; a host uses it only when asked for it by name. Both sides send an ``Exchange``
(varint-delimited) and then read the other's; the dialer also checks the id it dialed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

import trio
from google.protobuf.message import DecodeError as _PbDecodeError

from mycel.core.abc import RawConnection, SecurityProtocol
from mycel.core.errors import DecodeError, HandshakeError, PeerIdMismatch, ProtocolViolation, UnexpectedEOF
from mycel.core.framing import receive_message
from mycel.core.identity import Identity
from mycel.core.keys import PublicKey, public_key_from_protobuf
from mycel.core.peer_id import PeerId
from mycel.core.varint import length_prefixed
from mycel.security import plaintext_exchange_pb2
from mycel.security.base import RawSecureConnection

__all__ = ["Plaintext", "PlaintextConnection", "encode_exchange", "decode_exchange"]

log = logging.getLogger("mycel.security.plaintext")

MAX_EXCHANGE_SIZE: Final = 8192  # an 8192-bit RSA public key protobuf is ~1.1 KB


def encode_exchange(identity: Identity) -> bytes:
    """Our varint-delimited ``Exchange`` message."""
    msg = plaintext_exchange_pb2.Exchange(id=identity.peer_id.to_bytes(), pubkey=identity.public_key.to_protobuf())
    body: bytes = msg.SerializeToString(deterministic=True)
    return length_prefixed(body)


def decode_exchange(body: bytes) -> tuple[PublicKey, PeerId]:
    """Parse and check an ``Exchange`` body: the id must be the one derived from the key."""
    msg = plaintext_exchange_pb2.Exchange()
    try:
        msg.ParseFromString(bytes(body))
    except _PbDecodeError as exc:
        raise DecodeError(f"malformed plaintext Exchange: {exc}") from None
    if not msg.HasField("id") or not msg.HasField("pubkey"):
        raise DecodeError("plaintext Exchange lacks id or pubkey")
    key = public_key_from_protobuf(msg.pubkey)
    peer = PeerId.from_bytes(msg.id)
    if not peer.matches_public_key(key):
        raise HandshakeError(f"plaintext Exchange id {peer} does not match its public key")
    return key, peer


async def _receive_exchange(conn: RawConnection, limit: int) -> bytes:
    """Read one varint-delimited message, byte-exact so nothing after it is consumed."""
    try:
        body = await receive_message(conn, limit)  # MessageTooLarge, DecodeError: hostile input
    except UnexpectedEOF:
        body = None
    if body is None:
        raise HandshakeError("connection closed during the plaintext exchange")
    return body


class PlaintextConnection(RawSecureConnection):
    """Bytes pass straight through to the raw connection."""

    def __init__(self, raw: RawConnection, *, local_peer: PeerId, remote_peer: PeerId, remote_public_key: PublicKey):
        super().__init__(
            raw,
            local_peer=local_peer,
            remote_peer=remote_peer,
            remote_public_key=remote_public_key,
            protocol_id=Plaintext.protocol_id,
        )








    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._raw.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._raw.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._raw.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._raw.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._raw.aclose()


class Plaintext(SecurityProtocol):
    """``/plaintext/2.0.0``: authenticated ids, no encryption. Never use it in production."""

    protocol_id = "/plaintext/2.0.0"

    def __init__(self, *, max_message_size: int = MAX_EXCHANGE_SIZE) -> None:
        self.max_message_size = max_message_size

    async def secure_outbound(
        self,
        conn: RawConnection,
        identity: Identity,
        remote_peer: PeerId | None,
        muxer_ids: Sequence[str] = (),
    ) -> PlaintextConnection:
        return await self._exchange(conn, identity, remote_peer)

    async def secure_inbound(
        self,
        conn: RawConnection,
        identity: Identity,
        muxer_ids: Sequence[str] = (),
    ) -> PlaintextConnection:
        return await self._exchange(conn, identity, None)

    async def _exchange(self, conn: RawConnection, identity: Identity, expected: PeerId | None) -> PlaintextConnection:
        try:
            await conn.send_all(encode_exchange(identity))
            key, peer = decode_exchange(await _receive_exchange(conn, self.max_message_size))
            if expected is not None and peer != expected:
                raise PeerIdMismatch(f"dialed {expected} but the remote presented {peer}")
        except (HandshakeError, ProtocolViolation) as exc:
            log.info("plaintext exchange with %s (%s) failed: %s", conn.remote_addr, conn.direction.value, exc)
            await trio.aclose_forcefully(conn)
            raise
        except trio.BrokenResourceError as exc:
            raise HandshakeError(f"connection broke during the plaintext exchange: {exc}") from exc
        return PlaintextConnection(conn, local_peer=identity.peer_id, remote_peer=peer, remote_public_key=key)
