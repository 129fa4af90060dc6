"""The ``/tls/1.0.0`` security protocol: drives a :class:`TLSSession` handshake over a RawConnection."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Sequence
from typing import Final

import trio
from OpenSSL import SSL

from mycel.core.abc import RawConnection, SecurityProtocol
from mycel.core.errors import HandshakeError, MycelError, ProtocolViolation
from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.security.tls.certificate import CertificateCache, LocalCertificate, VerificationCache
from mycel.security.tls.connection import TLSConnection
from mycel.security.tls.session import TLSSession, make_context

__all__ = ["TLS"]

log = logging.getLogger("mycel.security.tls")

HANDSHAKE_READ: Final = 64 * 1024  # bytes asked of the transport per read during the handshake
ALERT_TIMEOUT: Final = 1.0  # seconds spent trying to deliver a fatal alert before closing


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class TLS(SecurityProtocol):
    """libp2p TLS 1.3 (``/tls/1.0.0``) with ALPN muxer negotiation.

    Our certificate (fresh P-256 key, libp2p extension) is reused for a day per identity, then
    replaced. ``clock`` returns the wall-clock time used for certificate validity (tests pass one).
    """

    protocol_id = "/tls/1.0.0"

    def __init__(self, *, clock: Callable[[], datetime.datetime] | None = None) -> None:
        self._clock = clock or _utc_now
        self._contexts: CertificateCache[SSL.Context] = CertificateCache(make_context)
        self._verified = VerificationCache()  # peers' certificates that verified (see VerificationCache)

    def certificate(self, identity: Identity) -> LocalCertificate:
        """The certificate currently presented for ``identity``."""
        return self._contexts.get(identity, self._now())[0]

    def _now(self) -> datetime.datetime:
        return self._clock()

    async def secure_outbound(
        self,
        conn: RawConnection,
        identity: Identity,
        remote_peer: PeerId | None,
        muxer_ids: Sequence[str] = (),
    ) -> TLSConnection:
        now = self._now()
        _, context = self._contexts.get(identity, now)
        session = TLSSession(
            context, is_client=True, now=now, expected_peer=remote_peer, muxer_ids=muxer_ids, verifier=self._verified
        )
        return await self._run(conn, identity, session)

    async def secure_inbound(
        self,
        conn: RawConnection,
        identity: Identity,
        muxer_ids: Sequence[str] = (),
    ) -> TLSConnection:
        now = self._now()
        _, context = self._contexts.get(identity, now)
        session = TLSSession(context, is_client=False, now=now, muxer_ids=muxer_ids, verifier=self._verified)
        return await self._run(conn, identity, session)

    async def _run(self, conn: RawConnection, identity: Identity, session: TLSSession) -> TLSConnection:
        try:
            while True:
                try:
                    done = session.handshake()
                except MycelError:
                    alert = session.data_to_send()
                    if alert:
                        await _send_alert(conn, alert)
                    raise
                out = session.data_to_send()
                if out:
                    await conn.send_all(out)
                if done:
                    break
                data = await conn.receive_some(HANDSHAKE_READ)
                if not data:
                    raise HandshakeError("connection closed during the TLS handshake")
                session.receive_data(data)
        except (HandshakeError, ProtocolViolation) as exc:
            log.info("TLS handshake with %s (%s) failed: %s", conn.remote_addr, conn.direction.value, exc)
            await trio.aclose_forcefully(conn)
            raise
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.info("TLS handshake with %s (%s) failed: connection broken", conn.remote_addr, conn.direction.value)
            await trio.aclose_forcefully(conn)
            raise HandshakeError(f"connection broke during the TLS handshake: {exc!r}") from exc
        verified = session.verified
        assert verified is not None
        log.debug(
            "TLS session with %s at %s (%s), ALPN %s",
            verified.peer_id,
            conn.remote_addr,
            conn.direction.value,
            session.alpn,
        )
        return TLSConnection(
            conn,
            session,
            local_peer=identity.peer_id,
            remote_peer=verified.peer_id,
            remote_public_key=verified.public_key,
            protocol_id=self.protocol_id,
        )


async def _send_alert(conn: RawConnection, data: bytes) -> None:
    """Best effort: tell the peer why we abort, without waiting long for a peer that does not read."""
    with trio.move_on_after(ALERT_TIMEOUT):
        try:
            await conn.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, MycelError, OSError):
            pass
