"""A TLS 1.3 session over memory BIOs (pyOpenSSL): bytes in, bytes and plaintext out, no I/O.

OpenSSL does the record layer and the handshake; we supply the libp2p rules: our certificate, a
server that requires a client certificate, peer verification with :mod:`.certificate` inside the
handshake (a failed check aborts it with an alert), ALPN with the client's preference, no SNI, no
session tickets. The time used for certificate validity is passed in.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from typing import Final

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto

from mycel.core.errors import DecodeError, HandshakeError, InvalidCertificate, MycelError, SimultaneousOpenError
from mycel.core.peer_id import PeerId
from mycel.security.tls.certificate import LocalCertificate, VerificationCache, VerifiedPeer

__all__ = ["TLSSession", "ALPN_LIBP2P", "MAX_RECORD_PLAINTEXT", "make_context"]

log = logging.getLogger("mycel.security.tls")

ALPN_LIBP2P: Final = "libp2p"
MAX_RECORD_PLAINTEXT: Final = 16384
# Cipher suites in our order of preference (AES-128-GCM is the fastest with AES-NI).
CIPHER_SUITES: Final = b"TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"
_SSL_MODE_ENABLE_PARTIAL_WRITE: Final = 0x1  # OpenSSL's constant; pyOpenSSL sets the mode on every context
# Largest chunk drained from the outgoing memory BIO per call.
BIO_READ_CHUNK: Final = 4 * 1024 * 1024
# Plaintext asked of OpenSSL per SSL_read: one record holds at most 16 KiB (pyOpenSSL allocates this much).
READ_CALL: Final = 16384


def _session_of(conn: SSL.Connection) -> TLSSession:
    session = conn.get_app_data()
    assert isinstance(session, TLSSession)
    return session


def _verify_callback(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
    return _session_of(conn)._verify(cert, depth)


def _alpn_select(conn: SSL.Connection, offered: list[bytes]) -> bytes:
    return _session_of(conn)._select_alpn(offered)


def make_context(certificate: LocalCertificate) -> SSL.Context:
    """An OpenSSL context presenting ``certificate``: TLS 1.3 only, peer certificate required."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_tls13_ciphersuites(CIPHER_SUITES)
    ctx.use_certificate(certificate.certificate)
    ctx.use_privatekey(certificate.private_key)
    ctx.check_privatekey()
    # Accept the self-signed chain in OpenSSL's eyes; _verify_callback applies the libp2p rules.
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify_callback)
    ctx.set_alpn_select_callback(_alpn_select)
    ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.clear_mode(_SSL_MODE_ENABLE_PARTIAL_WRITE)  # one SSL_write encrypts a whole batch
    return ctx


class TLSSession:
    """One side of a libp2p TLS handshake and the record layer after it.

    Feed received bytes with :meth:`receive_data`, send what :meth:`data_to_send` returns, call
    :meth:`handshake` until it returns True, then :meth:`write`/:meth:`read_into`.
    """

    def __init__(
        self,
        context: SSL.Context,
        *,
        is_client: bool,
        now: datetime.datetime,
        expected_peer: PeerId | None = None,
        muxer_ids: Sequence[str] = (),
        verifier: VerificationCache | None = None,
    ) -> None:
        self.is_client = is_client
        self._verifier = verifier if verifier is not None else VerificationCache(1)
        self._now = now
        self._expected_peer = expected_peer
        self._muxer_ids = list(muxer_ids)
        self.verified: VerifiedPeer | None = None
        self.error: MycelError | None = None  # why our verification refused the peer
        self.handshake_done = False
        self.close_notify_sent = False
        self._ssl = SSL.Connection(context, None)
        self._ssl.set_app_data(self)
        if is_client:
            self._ssl.set_alpn_protos([m.encode() for m in [*self._muxer_ids, ALPN_LIBP2P]])
            self._ssl.set_connect_state()
        else:
            self._ssl.set_accept_state()
        # Record boundary tracking on the received byte stream, to tell a clean EOF from a cut record.
        self._header = bytearray()
        self._record_left = 0
        # the client's first 6 bytes received: record type, version, length, handshake message type
        self._first: bytearray | None = bytearray() if is_client else None

    # --- callbacks (run inside OpenSSL calls) ---

    def _verify(self, cert: crypto.X509, depth: int) -> bool:
        if self.error is not None:
            return False
        if depth != 0:
            self.error = InvalidCertificate("peer sent a certificate chain, expected one self-signed certificate")
            return False
        if self.verified is None:
            try:
                der = cert.to_cryptography().public_bytes(Encoding.DER)
                self.verified = self._verifier.verify([der], self._now, self._expected_peer)
            except MycelError as exc:
                self.error = exc
                return False
            except Exception as exc:  # cryptography could not even re-encode what OpenSSL parsed
                self.error = InvalidCertificate(f"certificate cannot be processed: {exc!r}")
                return False
        return True

    def _select_alpn(self, offered: list[bytes]) -> bytes:
        for proto in offered:  # the client's preference wins (inlined muxer negotiation spec)
            try:
                name = proto.decode()
            except UnicodeDecodeError:
                continue
            if name == ALPN_LIBP2P or name in self._muxer_ids:
                return proto
        self.error = HandshakeError(f"no common ALPN protocol (offered {offered!r})")
        raise self.error  # pyOpenSSL turns this into a fatal no_application_protocol alert

    # --- handshake ---

    def handshake(self) -> bool:
        """Advance the handshake; True once it is complete and the peer is verified.

        Raises :class:`InvalidCertificate`, :class:`PeerIdMismatch` or :class:`HandshakeError`.
        """
        if self.handshake_done:
            return True
        if self._first is not None and len(self._first) >= 6 and self._first[0] == 0x16 and self._first[5] == 0x01:
            # a ClientHello where the ServerHello was due
            self.error = SimultaneousOpenError(
                "TLS: the peer sent a ClientHello instead of a ServerHello; both ends are clients (TCP simultaneous open)"
            )
            raise self.error
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            return False
        except SSL.Error as exc:
            raise self._failure(exc) from None
        except HandshakeError:
            raise
        self._check_peer()
        self.handshake_done = True
        return True

    def _failure(self, exc: SSL.Error) -> MycelError:
        if self.error is not None:
            return self.error
        return HandshakeError(f"TLS handshake failed: {_describe(exc)}")

    def _check_peer(self) -> None:
        if self.error is not None:
            raise self.error
        if self.verified is None:
            raise HandshakeError("TLS handshake finished without a verified peer certificate")
        # OpenSSL lists the leaf in the client's view of the chain but not in the server's.
        chain = self._ssl.get_peer_cert_chain() or []
        if len(chain) != (1 if self.is_client else 0):
            raise InvalidCertificate("peer sent a certificate chain, expected one self-signed certificate")

    @property
    def alpn(self) -> str | None:
        """The negotiated ALPN protocol ("" mapped to None)."""
        proto = self._ssl.get_alpn_proto_negotiated()
        return proto.decode(errors="replace") if proto else None

    @property
    def early_muxer(self) -> str | None:
        """The muxer agreed through ALPN, or None (ALPN ``libp2p`` or none, or not one of ours)."""
        alpn = self.alpn
        return alpn if alpn is not None and alpn != ALPN_LIBP2P and alpn in self._muxer_ids else None

    # --- bytes in and out ---

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes received from the transport."""
        first = self._first
        if first is not None and len(first) < 6:
            first += bytes(data[: 6 - len(first)])
        self._track_records(data)
        self._ssl.bio_write(data)

    def data_to_send(self) -> bytes:
        """Everything OpenSSL wants sent (handshake messages, records, alerts)."""
        chunks = []
        while True:
            try:
                chunks.append(self._ssl.bio_read(BIO_READ_CHUNK))
            except SSL.WantReadError:
                break
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` into records (fetch them with :meth:`data_to_send`)."""
        view = memoryview(data)
        ssl = self._ssl
        pos, end = 0, len(view)
        try:
            while pos < end:  # pyOpenSSL enables partial writes: SSL_write may take less than all
                pos += ssl.send(view[pos:])
        except SSL.Error as exc:
            raise HandshakeError(f"TLS write failed: {_describe(exc)}") from None

    def read_into(self, view: memoryview) -> int | None:
        """Decrypt into ``view``; the byte count, 0 at close_notify, None if more input is needed.

        Raises :class:`DecodeError` (a bad record or a fatal alert from the peer).
        """
        try:
            return self._ssl.recv_into(view, min(len(view), READ_CALL))
        except SSL.WantReadError:
            return None
        except SSL.ZeroReturnError:
            return 0
        except SSL.Error as exc:
            raise DecodeError(f"TLS record layer: {_describe(exc)}") from None

    def close_notify(self) -> None:
        """Queue a close_notify alert (our half-close); later writes fail."""
        if not self.close_notify_sent:
            self.close_notify_sent = True
            try:
                self._ssl.shutdown()
            except SSL.Error as exc:
                log.debug("TLS shutdown: %s", _describe(exc))

    @property
    def inside_record(self) -> bool:
        """True if the received bytes end inside a record (a cut connection, not a clean EOF)."""
        return bool(self._header) or self._record_left > 0

    def _track_records(self, data: bytes | bytearray | memoryview) -> None:
        pos, end = 0, len(data)
        left = self._record_left
        header = self._header
        while True:
            if left:
                step = min(left, end - pos)
                left -= step
                pos += step
            if pos >= end:
                break
            if not header and end - pos >= 5:  # fast path: a whole record header
                left = (data[pos + 3] << 8) | data[pos + 4]
                pos += 5
                continue
            need = 5 - len(header)
            header += data[pos : pos + need]
            pos += need
            if len(header) == 5:
                left = (header[3] << 8) | header[4]
                header.clear()
        self._record_left = left


def _describe(exc: SSL.Error) -> str:
    """A readable reason from pyOpenSSL's list of (lib, func, reason) tuples."""
    args = exc.args[0] if exc.args else None
    if isinstance(args, list) and args:
        return "; ".join(str(item[-1]) for item in args if isinstance(item, tuple) and item)
    return repr(exc)
