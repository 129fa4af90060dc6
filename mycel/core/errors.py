"""The typed error hierarchy.

Every error mycel raises on purpose derives from :class:`MycelError`. Errors caused by what a remote
peer sent derive from :class:`ProtocolViolation`, so a driver can tell "the peer misbehaved" (close
what it arrived on, log, keep serving) from local mistakes.
"""

from __future__ import annotations

from typing import NoReturn

import trio


class MycelError(Exception):
    """Base class of every mycel error."""


class ProtocolViolation(MycelError):
    """The remote side sent bytes that break the protocol (malformed, oversized, out of order)."""


class DecodeError(ProtocolViolation):
    """Bytes could not be decoded (truncated, non-minimal varint, bad protobuf, ...)."""


class MessageTooLarge(ProtocolViolation):
    """A length prefix or message exceeds the limit for its protocol."""


class HandshakeError(MycelError):
    """A security handshake failed."""


class PeerIdMismatch(HandshakeError):
    """The authenticated remote key does not match the peer ID we dialed."""


class SimultaneousOpenError(HandshakeError):
    """Both ends started the handshake as its initiator: a TCP simultaneous open, where two dials that
    leave from listen ports (``TCP(reuse_port=True)``) cross and become one connection with no server.
    The swarm retries such a dial once from an ephemeral port."""


class InvalidSignature(MycelError):
    """A signature did not verify."""


class NegotiationError(MycelError):
    """multistream-select could not agree on a protocol."""


class ProtocolNotSupported(NegotiationError):
    """The other side answered ``na`` to every protocol we proposed."""


class TransportError(MycelError):
    """A transport could not dial or listen."""


class DialError(TransportError):
    """Dialing a peer or address failed. ``errors`` holds the per-address failures, if any."""

    def __init__(self, message: str, errors: list[BaseException] | None = None) -> None:
        super().__init__(message)
        self.errors: list[BaseException] = errors or []


class ConnectionClosed(MycelError):
    """The connection is closed; no stream can be opened or accepted on it."""


class StreamReset(MycelError):
    """The stream was reset (by us or by the remote); reads and writes fail."""


class StreamClosed(MycelError):
    """Writing after our side of the stream was closed."""


class MuxerError(ProtocolViolation):
    """The stream multiplexer saw a protocol violation."""


class ResourceLimitExceeded(MycelError):
    """A configured bound was reached (streams, pending handshakes, buffers).

    Refusals of the resource manager (:mod:`mycel.network.resources`) say which ``scope``
    (``"system"``, ``"transient"``, ``"peer"``, ``"protocol:<id>"``, ...) was at its limit of which
    ``resource`` (``"streams_inbound"``, ``"conns"``, ``"memory"``, ...), and for which ``peer``."""

    def __init__(
        self, message: str = "", *, scope: str | None = None, resource: str | None = None, peer: object = None
    ) -> None:
        super().__init__(message)
        self.scope = scope
        self.resource = resource
        self.peer = peer


class ConnectionGated(DialError):
    """The connection gater (``HostConfig.gater``) refused a dial, or an inbound connection at one
    of its stages (an inbound one is closed; this error is only logged)."""


class LimitedConnection(MycelError):
    """A stream was refused on a limited (relayed) connection: the protocol did not opt in
    (``allow_limited=True``) and there is no unlimited connection to the peer."""


class ConfigError(MycelError, ValueError):
    """A HostConfig or component was configured inconsistently."""


class HostClosed(MycelError):
    """The host was closed (its ``async with`` block ended): it opens nothing new."""


class ServiceNotRunning(MycelError):
    """A service was used outside a running host (e.g. the template object in a HostConfig).

    Each host runs its own copy of every configured service: use ``host.service(Kind)``.
    """


class DialPeerMismatch(DialError, PeerIdMismatch):
    """A dial reached a peer other than the one asked for (on at least one address).

    Caught by ``except DialError`` and by ``except PeerIdMismatch`` alike, whatever the number of
    addresses dialed; the per-address failures are in ``errors``.
    """


# -- the exception-group policy ------------------------------------------------------------------
# Decided once, used wherever mycel unwraps a group (open_host, the CLI):
# * background work of the host never raises out of it (services, handlers and connections are
#   isolated), so a group reaching the user holds the user's own exceptions;
# * a group of exactly one exception (nested groups of one included) is unwrapped: the exception is
#   raised as itself, with its traceback, its ``__cause__`` and its ``__context__`` as they were;
# * a group of several stays a group: nothing is thrown away.


def single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside ``group`` (through nested groups of one), or None if there are more."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


def reraise_unwrapped(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise the single exception of ``group`` as itself (cause and context kept), else ``group``.

    Call it from the ``except`` block that caught ``group``.
    """
    exc = single_exception(group)
    if exc is None:
        raise group
    context, suppress = exc.__context__, exc.__suppress_context__
    try:
        raise exc
    finally:
        # raising inside an except block makes the group the context; put back what the user had
        exc.__context__, exc.__suppress_context__ = context, suppress
        del exc, group


class DecryptionError(ProtocolViolation):
    """An encrypted frame failed authentication (bad tag, wrong key or nonce, tampered bytes)."""


class InvalidCertificate(HandshakeError, ProtocolViolation):
    """A peer's TLS certificate failed libp2p verification (chain, validity, extension, signature)."""


class UnexpectedEOF(ProtocolViolation):
    """The stream ended in the middle of something that had to arrive whole: an exact read, a length
    prefix, a message body. ``received`` is how many of its bytes arrived; ``expected`` how many were
    due (``None`` when the length itself was cut short)."""

    def __init__(self, message: str, *, received: int, expected: int | None = None) -> None:
        super().__init__(message)
        self.received = received
        self.expected = expected


# -- errors of the stream layer ---------------------------------------------------------------------
# Raised by every MuxedStream (the muxer driver's and QUIC's). Each is also the trio error a user of a
# trio stream expects: BrokenResourceError once the stream is broken, ClosedResourceError for writes
# after send_eof.


class StreamResetError(StreamReset, trio.BrokenResourceError):
    """The stream was reset (by either side); raised by every later read or write."""


class StreamWriteClosed(StreamClosed, trio.ClosedResourceError):
    """Writing after ``send_eof``."""


class StreamConnectionLost(StreamResetError, ConnectionClosed):
    """The connection under the stream closed before the stream finished."""
