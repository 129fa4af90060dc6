"""The ``/noise`` security protocol: drives :class:`NoiseHandshake` over a RawConnection."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio
from noise.backends.default.keypairs import KeyPair25519

from mycel.core.abc import RawConnection, SecurityProtocol
from mycel.core.errors import HandshakeError, ProtocolViolation
from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.security.noise.connection import NoiseConnection
from mycel.security.noise.handshake import STATIC_KEY_DOMAIN, NoiseHandshake, x25519_keypair
from mycel.security.noise.transport import MAX_FRAME, NoiseTransport

__all__ = ["Noise"]

log = logging.getLogger("mycel.security.noise")


class Noise(SecurityProtocol):
    """libp2p Noise (XX, 25519, ChaChaPoly, SHA256, empty prologue).

    The X25519 static key (never the identity key, never persisted) is made once per ``Noise``
    instance and its identity signature cached, which the spec allows and which saves a key generation
    and a signature on every handshake; ``static_key_per_connection=True`` makes a fresh one each time.
    Ephemeral keys are always fresh. ``handshake_max_message`` bounds each incoming handshake message
    (at most 65535, the frame limit).
    """

    protocol_id = "/noise"

    def __init__(self, *, handshake_max_message: int = MAX_FRAME, static_key_per_connection: bool = False) -> None:
        if not 0 < handshake_max_message <= MAX_FRAME:
            raise ValueError(f"handshake_max_message must be in 1..{MAX_FRAME}")
        self.handshake_max_message = handshake_max_message
        self.static_key_per_connection = static_key_per_connection
        self._static: KeyPair25519 | None = None
        self._signatures: dict[bytes, bytes] = {}  # identity key protobuf -> sig; bounded below

    def _static_key(self, identity: Identity) -> tuple[KeyPair25519, bytes | None]:
        """Our static key pair and, when reusable, the cached identity_sig over its public half."""
        if self.static_key_per_connection:
            return x25519_keypair(), None
        if self._static is None:
            self._static = x25519_keypair()
        static = self._static
        key = identity.public_key.to_protobuf()
        sig = self._signatures.get(key)
        if sig is None:
            if len(self._signatures) >= 16:  # one per identity using this instance; rarely more than one
                self._signatures.clear()
            sig = identity.private_key.sign(STATIC_KEY_DOMAIN + static.public_bytes)
            self._signatures[key] = sig
        return static, sig

    async def secure_outbound(
        self,
        conn: RawConnection,
        identity: Identity,
        remote_peer: PeerId | None,
        muxer_ids: Sequence[str] = (),
    ) -> NoiseConnection:
        static, sig = self._static_key(identity)
        handshake = NoiseHandshake(
            identity,
            initiator=True,
            static_private=static,
            ephemeral_private=x25519_keypair(),
            identity_sig=sig,
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
        static, sig = self._static_key(identity)
        handshake = NoiseHandshake(
            identity,
            initiator=False,
            static_private=static,
            ephemeral_private=x25519_keypair(),
            identity_sig=sig,
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
