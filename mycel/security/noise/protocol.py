"""The ``/noise`` security protocol: drives :class:`NoiseHandshake` over a RawConnection."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio
from cryptography.hazmat.primitives.asymmetric import x25519

from mycel.core.abc import RawConnection, SecurityProtocol
from mycel.core.errors import HandshakeError, ProtocolViolation
from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.security.noise.connection import NoiseConnection
from mycel.security.noise.handshake import NoiseHandshake
from mycel.security.noise.transport import MAX_FRAME, NoiseTransport

__all__ = ["Noise"]

log = logging.getLogger("mycel.security.noise")


def _fresh_x25519() -> bytes:
    return x25519.X25519PrivateKey.generate().private_bytes_raw()


class Noise(SecurityProtocol):
    """libp2p Noise (XX, 25519, ChaChaPoly, SHA256, empty prologue).

    A fresh X25519 static key is made for every connection. ``handshake_max_message`` bounds each
    incoming handshake message (at most 65535, the frame limit).
    """

    protocol_id = "/noise"

    def __init__(self, *, handshake_max_message: int = MAX_FRAME) -> None:
        if not 0 < handshake_max_message <= MAX_FRAME:
            raise ValueError(f"handshake_max_message must be in 1..{MAX_FRAME}")
        self.handshake_max_message = handshake_max_message

    async def secure_outbound(
        self,
        conn: RawConnection,
        identity: Identity,
        remote_peer: PeerId | None,
        muxer_ids: Sequence[str] = (),
    ) -> NoiseConnection:
        handshake = NoiseHandshake(
            identity,
            initiator=True,
            static_private=_fresh_x25519(),
            ephemeral_private=_fresh_x25519(),
            remote_peer=remote_peer,
            muxers=muxer_ids,
            max_message_size=self.handshake_max_message,
        )
        return await self._run(conn, identity, handshake)

    async def secure_inbound(
        self,
        conn: RawConnection,
        identity: Identity,
        muxer_ids: Sequence[str] = (),
    ) -> NoiseConnection:
        handshake = NoiseHandshake(
            identity,
            initiator=False,
            static_private=_fresh_x25519(),
            ephemeral_private=_fresh_x25519(),
            muxers=muxer_ids,
            max_message_size=self.handshake_max_message,
        )
        return await self._run(conn, identity, handshake)

    async def _run(self, conn: RawConnection, identity: Identity, handshake: NoiseHandshake) -> NoiseConnection:
        try:
            while True:
                out = handshake.data_to_send()
                if out:
                    await conn.send_all(out)
                if handshake.complete:
                    break
                # Read only what finishes the next handshake frame: nothing after it is consumed.
                data = await conn.receive_some(handshake.bytes_wanted())
                if not data:
                    raise HandshakeError("connection closed during the Noise handshake")
                handshake.receive_data(data)
        except (HandshakeError, ProtocolViolation) as exc:
            log.info("Noise handshake with %s (%s) failed: %s", conn.remote_addr, conn.direction.value, exc)
            await trio.aclose_forcefully(conn)
            raise
        except trio.BrokenResourceError as exc:
            log.info("Noise handshake with %s (%s) failed: connection broken", conn.remote_addr, conn.direction.value)
            raise HandshakeError(f"connection broke during the Noise handshake: {exc}") from exc
        result = handshake.result
        log.debug(
            "Noise session with %s at %s (%s), early muxer %s",
            result.remote_peer,
            conn.remote_addr,
            conn.direction.value,
            result.early_muxer,
        )
        return NoiseConnection(
            conn,
            NoiseTransport(result.send_key, result.recv_key),
            local_peer=identity.peer_id,
            remote_peer=result.remote_peer,
            remote_public_key=result.remote_public_key,
            early_muxer=result.early_muxer,
            initial_data=handshake.take_leftover(),
            protocol_id=self.protocol_id,
        )
