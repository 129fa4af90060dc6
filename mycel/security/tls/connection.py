"""trio adapter for an established :class:`TLSSession`: a :class:`SecureConnection` over a RawConnection."""

from __future__ import annotations

import logging
import operator
from typing import Final

import trio
from trio.lowlevel import checkpoint

from mycel.core.abc import Direction, RawConnection
from mycel.core.errors import DecodeError, HandshakeError, MycelError, ProtocolViolation
from mycel.core.keys import PublicKey
from mycel.core.peer_id import PeerId
from mycel.security.base import RawSecureConnection
from mycel.security.tls.session import TLSSession

__all__ = ["TLSConnection", "RECEIVE_CHUNK", "SEND_BATCH", "DEFAULT_READ"]

log = logging.getLogger("mycel.security.tls")

RECEIVE_CHUNK: Final = 256 * 1024  # ciphertext asked of the raw connection per read
DEFAULT_READ: Final = 256 * 1024  # what receive_some(None) returns at most
# One raw send_all carries up to 1 MiB of plaintext (64 records); larger writes are cut into such
# batches so a huge send_all never doubles its memory in one go.
SEND_BATCH: Final = 1024 * 1024
CLOSE_NOTIFY_TIMEOUT: Final = 1.0  # seconds aclose() waits to deliver close_notify before closing anyway


class TLSConnection(RawSecureConnection):
    """An authenticated, encrypted stream. ``send_eof`` sends close_notify (the TCP stays open).

    A broken record or a fatal alert raises :class:`~mycel.core.errors.DecodeError`; later receives
    raise ``trio.BrokenResourceError``.
    """

    buffer_bound = RECEIVE_CHUNK + 2**14 + 256  # one read of ciphertext in the session, and a partial record

    def __init__(
        self,
        raw: RawConnection,
        session: TLSSession,
        *,
        local_peer: PeerId,
        remote_peer: PeerId,
        remote_public_key: PublicKey,
        protocol_id: str = "/tls/1.0.0",
    ) -> None:
        super().__init__(
            raw,
            local_peer=local_peer,
            remote_peer=remote_peer,
            remote_public_key=remote_public_key,
            protocol_id=protocol_id,
            early_muxer=session.early_muxer,
        )
        self._session = session
        self._eof = False  # close_notify (or a clean TCP EOF) received
        self._error: ProtocolViolation | None = None
        self._closed = False
        self._sending = False
        self._receiving = False
        self._raw_lock = trio.Lock()  # one raw writer at a time: send_all/send_eof, or the reader
        # Output drained by the reader while a writer held _raw_lock (alerts, KeyUpdate replies: a few
        # bytes each); the writer sends it before releasing the lock, so it never outlives one write.
        self._stash: list[bytes] = []

    # --- identity and addressing ---









    @property
    def alpn(self) -> str | None:
        """The ALPN protocol agreed in the handshake (a muxer id or ``"libp2p"``)."""
        return self._session.alpn


    # --- sending ---

    def _take_output(self) -> bytes:
        out = self._session.data_to_send()
        if self._stash:
            self._stash.append(out)
            out = b"".join(self._stash)
            self._stash.clear()
        return out

    async def _flush(self) -> None:
        """Send everything queued, in order. Caller holds ``_raw_lock``."""
        while True:
            out = self._take_output()
            if not out:
                return
            await self._raw.send_all(out)

    def _check_writable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the TLS connection was closed")
        if self._session.close_notify_sent:
            raise trio.ClosedResourceError("the TLS connection was closed for writing (send_eof)")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this TLS connection")
        self._sending = True
        try:
            self._check_writable()
            view = memoryview(data)
            if view.itemsize != 1 or view.ndim != 1:
                view = view.cast("B")
            if not view:
                await checkpoint()
                return
            session = self._session
            for off in range(0, len(view), SEND_BATCH):
                try:
                    session.write(view[off : off + SEND_BATCH])
                except HandshakeError as exc:  # the session failed (fatal alert, broken record layer)
                    raise trio.BrokenResourceError(f"TLS connection to {self._remote_peer} failed: {exc}") from exc
                async with self._raw_lock:
                    await self._flush()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the TLS connection was closed")
        await self._raw.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Send close_notify; reading still works (TLS 1.3 half-close).

        Like go's ``tls.Conn.CloseWrite``, the transport itself is not half-closed: the peer sees EOF
        at the close_notify, and the TCP connection closes with :meth:`aclose`.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this TLS connection")
        self._sending = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("the TLS connection was closed")
            if self._session.close_notify_sent:
                await checkpoint()
                return
            self._session.close_notify()
            async with self._raw_lock:
                await self._flush()
        finally:
            self._sending = False

    # --- receiving ---

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if max_bytes is None:
            max_bytes = DEFAULT_READ
        else:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this TLS connection")
        self._receiving = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("the TLS connection was closed")
            if self._error is not None:
                raise trio.BrokenResourceError("the TLS connection failed earlier") from self._error
            buf = bytearray(max_bytes)
            got = await self._fill(buf)
            if got < max_bytes:
                del buf[got:]
            return buf
        finally:
            self._receiving = False

    async def _fill(self, buf: bytearray) -> int:
        """Decrypt into ``buf`` what is available (reading the transport once if nothing is)."""
        session = self._session
        got = 0
        with memoryview(buf) as view:
            while got < len(buf):
                if self._eof:
                    break
                try:
                    n = session.read_into(view[got:])
                except ProtocolViolation as exc:
                    self._error = exc
                    log.info("TLS connection to %s failed: %s", self._remote_peer, exc)
                    raise
                if n is None:  # need more ciphertext
                    if got:
                        break
                    await self._flush_reader_output()
                    await self._read_transport()
                    continue
                if n == 0:
                    self._eof = True
                    break
                got += n
        if got == 0:
            await checkpoint()
        else:
            await self._flush_reader_output()
        return got

    async def _read_transport(self) -> None:
        try:
            chunk = await self._raw.receive_some(RECEIVE_CHUNK)
        except (trio.BrokenResourceError, OSError) as exc:
            raise trio.BrokenResourceError(f"TLS transport to {self._remote_peer} broke: {exc!r}") from exc
        if chunk:
            self._session.receive_data(chunk)
            return
        if self._session.inside_record:
            self._error = DecodeError("connection closed inside a TLS record")
            raise self._error
        log.debug("%s closed the transport without close_notify", self._remote_peer)
        self._eof = True

    async def _flush_reader_output(self) -> None:
        """Send what reading produced (alerts, KeyUpdate replies), after any writer's earlier bytes."""
        out = self._session.data_to_send()
        if not out:
            return
        self._stash.append(out)
        if self._raw_lock.locked():
            return  # the writer holding the lock sends the stash after its own bytes
        try:
            async with self._raw_lock:
                await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("sending TLS control data to %s failed: %r", self._remote_peer, exc)

    # --- closing ---

    async def aclose(self) -> None:
        """Send close_notify (best effort, bounded wait), then close the transport."""
        if self._closed:
            await checkpoint()
            return
        self._closed = True
        try:
            if not self._session.close_notify_sent and not self._sending and not self._raw_lock.locked():
                self._session.close_notify()
                with trio.move_on_after(CLOSE_NOTIFY_TIMEOUT):
                    async with self._raw_lock:
                        await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, MycelError, OSError) as exc:
            log.debug("close_notify to %s not delivered: %r", self._remote_peer, exc)
        finally:
            await self._raw.aclose()

    def __repr__(self) -> str:
        word = "to" if self._raw.direction is Direction.OUTBOUND else "from"
        return f"<TLSConnection {word} {self._remote_peer!r} {self._raw.remote_addr}>"
