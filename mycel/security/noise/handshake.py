"""Sans-IO libp2p Noise handshake (``Noise_XX_25519_ChaChaPoly_SHA256``, noise spec r5).

::

    -> e                      (payload empty)
    <- e, ee, s, es           (responder payload: identity_key, identity_sig, extensions)
    -> s, se                  (initiator payload: identity_key, identity_sig, extensions)

:class:`XXHandshake` wraps the ``noiseprotocol`` state machine with injected static and ephemeral
keys (so the core has no randomness of its own). :class:`NoiseHandshake` adds libp2p framing,
payloads, identity verification and inlined muxer selection; a trio driver only moves bytes.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import x25519
from google.protobuf.message import DecodeError as _PbDecodeError
from noise.backends.default.keypairs import KeyPair25519
from noise.connection import NoiseConnection
from noise.exceptions import NoiseHandshakeError, NoiseInvalidMessage, NoiseMaxNonceError, NoiseValueError

from mycel.core.errors import DecodeError, HandshakeError, PeerIdMismatch, SimultaneousOpenError
from mycel.core.identity import Identity
from mycel.core.keys import PublicKey, public_key_from_protobuf
from mycel.core.peer_id import PeerId
from mycel.security.noise import noise_handshake_pb2
from mycel.security.noise.transport import MAX_FRAME

__all__ = [
    "PROTOCOL_NAME",
    "STATIC_KEY_DOMAIN",
    "XXHandshake",
    "NoiseHandshake",
    "HandshakeResult",
    "select_muxer",
]

PROTOCOL_NAME: Final = b"Noise_XX_25519_ChaChaPoly_SHA256"
STATIC_KEY_DOMAIN: Final = b"noise-libp2p-static-key:"
_DH_LEN: Final = 32
# Failures noiseprotocol (and cryptography underneath it) report for malformed or forged messages.
_NOISE_ERRORS = (InvalidTag, NoiseValueError, NoiseInvalidMessage, NoiseHandshakeError, NoiseMaxNonceError, ValueError)


def x25519_keypair(private: bytes | None = None) -> KeyPair25519:
    """An X25519 key pair as the handshake takes it: fresh, or from 32 private bytes. Building it once
    (a static key reused across handshakes) spares the public-key derivation in every handshake."""
    if private is None:
        key = x25519.X25519PrivateKey.generate()
    else:
        if len(private) != _DH_LEN:
            raise ValueError("X25519 private keys must be 32 bytes")
        key = x25519.X25519PrivateKey.from_private_bytes(bytes(private))
    public = key.public_key()
    return KeyPair25519(private=key, public=public, public_bytes=public.public_bytes_raw())


class XXHandshake:
    """The bare XX pattern: payloads in, messages out. Raises :class:`HandshakeError` on bad input.

    Keys are 32 private bytes or ready key pairs from :func:`x25519_keypair`."""

    def __init__(
        self,
        *,
        initiator: bool,
        static_private: bytes | KeyPair25519,
        ephemeral_private: bytes | KeyPair25519,
        prologue: bytes = b"",
    ) -> None:
        static = static_private if isinstance(static_private, KeyPair25519) else x25519_keypair(static_private)
        ephemeral = (
            ephemeral_private if isinstance(ephemeral_private, KeyPair25519) else x25519_keypair(ephemeral_private)
        )
        conn = NoiseConnection.from_name(PROTOCOL_NAME)
        if initiator:
            conn.set_as_initiator()
        else:
            conn.set_as_responder()
        conn.noise_protocol.keypairs["s"] = static  # what set_keypair_from_private_bytes(STATIC) stores
        conn.set_prologue(bytes(prologue))
        conn.start_handshake()
        protocol = conn.noise_protocol
        # Set the ephemeral key after start_handshake(): noiseprotocol's validate() warns about a
        # preset ephemeral key, which is exactly what a sans-IO core needs (randomness passed in).
        self._hs: Any = protocol.handshake_state
        self._hs.e = ephemeral
        self._conn = conn
        self._protocol: Any = protocol
        self.initiator = initiator
        self.local_static_public: bytes = self._hs.s.public_bytes
        self._failed = False

    @property
    def complete(self) -> bool:
        """True once all three XX messages were written or read."""
        return bool(self._conn.handshake_finished)

    def write_message(self, payload: bytes = b"") -> bytes:
        """The next handshake message, carrying ``payload`` (encrypted once keys are agreed).

        Raises HandshakeError if the Noise library refuses it or the handshake already failed.
        """
        self._check_usable()
        try:
            return bytes(self._conn.write_message(bytes(payload)))
        except _NOISE_ERRORS as exc:
            self._failed = True
            raise HandshakeError(f"Noise write failed: {exc}") from None

    def read_message(self, message: bytes) -> bytes:
        """Process one handshake message; return its decrypted payload."""
        self._check_usable()
        try:
            return bytes(self._conn.read_message(bytes(message)))
        except _NOISE_ERRORS as exc:
            self._failed = True
            raise HandshakeError(f"invalid Noise handshake message: {type(exc).__name__} {exc}") from None

    def _check_usable(self) -> None:
        if self._failed:
            raise HandshakeError("Noise handshake already failed")

    @property
    def remote_static(self) -> bytes | None:
        """The peer's X25519 static key once received (kept after the handshake completes)."""
        rs = self._hs.rs
        public = getattr(rs, "public_bytes", None)
        return bytes(public) if public is not None else None

    @property
    def handshake_hash(self) -> bytes:
        """The final handshake hash ``h`` (unique to this session); raises HandshakeError before completion."""
        if not self.complete:
            raise HandshakeError("handshake not complete")
        return bytes(self._protocol.handshake_hash)

    def split(self) -> tuple[bytes, bytes]:
        """The transport keys ``(send, recv)`` for this side, with nonces starting at 0."""
        if not self.complete:
            raise HandshakeError("handshake not complete")
        return bytes(self._protocol.cipher_state_encrypt.k), bytes(self._protocol.cipher_state_decrypt.k)


def select_muxer(initiator_muxers: Sequence[str], responder_muxers: Sequence[str]) -> str | None:
    """The first of the initiator's muxers that the responder also lists.

    ``None`` if either list is empty (fall back to multistream-select); :class:`HandshakeError`
    if both are non-empty and disjoint.
    """
    if not initiator_muxers or not responder_muxers:
        return None
    offered = set(responder_muxers)
    for muxer in initiator_muxers:
        if muxer in offered:
            return muxer
    raise HandshakeError(
        f"no common muxer in Noise extensions: initiator {list(initiator_muxers)}, responder {list(responder_muxers)}"
    )


@dataclass(frozen=True)
class HandshakeResult:
    """What a completed libp2p Noise handshake established."""

    remote_public_key: PublicKey
    """The remote's libp2p identity key (its signature over its Noise static key verified)."""
    remote_peer: PeerId
    """The peer id of that key."""
    early_muxer: str | None
    """The muxer agreed through the Noise extensions, or None (negotiate with multistream-select)."""
    remote_muxers: tuple[str, ...]
    """The muxers the remote listed in its extensions (empty if none)."""
    send_key: bytes
    """The 32-byte ChaCha20-Poly1305 key for what we send (nonces from 0)."""
    recv_key: bytes
    """The 32-byte ChaCha20-Poly1305 key for what we receive (nonces from 0)."""
    handshake_hash: bytes
    """The final handshake hash ``h``."""


class _State(enum.Enum):
    AWAIT_MSG1 = 1  # responder
    AWAIT_MSG2 = 2  # initiator
    AWAIT_MSG3 = 3  # responder
    DONE = 4
    FAILED = 5


MSG1_MAX: Final = 32  # message 1 (-> e): the ephemeral public key, no payload


class NoiseHandshake:
    """The libp2p Noise handshake as a sans-IO state machine.

    Send :meth:`data_to_send`, feed what arrives to :meth:`receive_data`, until :attr:`complete`.
    :meth:`bytes_wanted` says how many bytes finish the next handshake frame, so a driver can read
    exactly that much; any bytes fed beyond the last frame are kept for :meth:`take_leftover`.
    Errors: :class:`DecodeError` (malformed payload or key), :class:`HandshakeError` (Noise failure,
    bad signature, oversized message, no common muxer), :class:`PeerIdMismatch`.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        initiator: bool,
        static_private: bytes | KeyPair25519,
        ephemeral_private: bytes | KeyPair25519,
        remote_peer: PeerId | None = None,
        muxers: Sequence[str] = (),
        max_message_size: int = MAX_FRAME,
        prologue: bytes = b"",
        identity_sig: bytes | None = None,
    ) -> None:
        """``identity_sig`` may carry a precomputed signature over our static public key."""
        if not 0 < max_message_size <= MAX_FRAME:
            raise ValueError(f"max_message_size must be in 1..{MAX_FRAME}")
        self._xx = XXHandshake(
            initiator=initiator, static_private=static_private, ephemeral_private=ephemeral_private, prologue=prologue
        )
        self._identity = identity
        self._identity_sig = identity_sig
        self._initiator = initiator
        self._expected = remote_peer
        self._muxers = tuple(muxers)
        self._max = max_message_size
        self._in = bytearray()  # bounded: at most one frame (max_message_size + 2) plus one read
        self._out = bytearray()
        self._result: HandshakeResult | None = None
        if initiator:
            self._emit(self._xx.write_message(b""))
            self._state = _State.AWAIT_MSG2
        else:
            self._state = _State.AWAIT_MSG1

    # --- driver interface ---

    @property
    def complete(self) -> bool:
        """True once the handshake finished successfully (:attr:`result` is then available)."""
        return self._state is _State.DONE

    @property
    def result(self) -> HandshakeResult:
        """What the handshake established; raises HandshakeError before it is complete."""
        if self._result is None:
            raise HandshakeError("Noise handshake not complete")
        return self._result

    @property
    def local_static_public(self) -> bytes:
        """Our 32-byte X25519 static public key (what our identity signs)."""
        return self._xx.local_static_public

    def data_to_send(self) -> bytes:
        """Take the queued handshake frames (2-byte big-endian length + message each) for the wire."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def bytes_wanted(self) -> int:
        """Bytes still needed to complete the next handshake frame (0 when complete)."""
        if self._state in (_State.DONE, _State.FAILED):
            return 0
        have = len(self._in)
        if have < 2:
            return 2 - have
        return max(0, 2 + (self._in[0] << 8 | self._in[1]) - have)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes from the wire; each complete frame is processed (answers are queued for
        :meth:`data_to_send`). Raises as listed above; the handshake is then failed for good.
        """
        if self._state is _State.FAILED:
            raise HandshakeError("Noise handshake already failed")
        self._in += data
        if self._state is _State.DONE:
            return
        try:
            while not self.complete and len(self._in) >= 2:
                length = self._in[0] << 8 | self._in[1]
                if self._state is _State.AWAIT_MSG1 and length > MSG1_MAX:
                    # -> e: the initiator's ephemeral key and no payload (go sends none; the spec puts
                    # payloads in messages 2 and 3): refused at its length, before its body is read
                    raise HandshakeError(f"Noise message 1 of {length} bytes; it is a {MSG1_MAX}-byte key")
                if length > self._max:
                    raise HandshakeError(f"Noise handshake message of {length} bytes exceeds {self._max}")
                if len(self._in) < 2 + length:
                    break
                message = bytes(self._in[2 : 2 + length])
                del self._in[: 2 + length]
                self._process(message)
        except BaseException:
            self._state = _State.FAILED
            raise

    def take_leftover(self) -> bytes:
        """Bytes received after the final handshake message (the peer's first transport frames)."""
        rest = bytes(self._in)
        self._in.clear()
        return rest

    # --- internals ---

    def _emit(self, message: bytes) -> None:
        if len(message) > MAX_FRAME:
            raise HandshakeError(f"our Noise handshake message of {len(message)} bytes exceeds {MAX_FRAME}")
        self._out += len(message).to_bytes(2, "big")
        self._out += message

    def _our_payload(self) -> bytes:
        msg = noise_handshake_pb2.NoiseHandshakePayload(
            identity_key=self._identity.public_key.to_protobuf(),
            identity_sig=self._identity_sig
            or self._identity.private_key.sign(STATIC_KEY_DOMAIN + self._xx.local_static_public),
        )
        if self._muxers:
            msg.extensions.stream_muxers.extend(self._muxers)
        out: bytes = msg.SerializeToString(deterministic=True)
        return out

    def _process(self, message: bytes) -> None:
        state = self._state
        if state is _State.AWAIT_MSG1:
            self._xx.read_message(message)  # msg 1 carries no payload we act on
            self._emit(self._xx.write_message(self._our_payload()))
            self._state = _State.AWAIT_MSG3
        elif state is _State.AWAIT_MSG2:
            if len(message) <= MSG1_MAX:  # a first message (-> e) where the reply (<- e, ee, s, es) was due
                raise SimultaneousOpenError(
                    f"Noise: the peer sent a {len(message)}-byte first message instead of a reply; both ends "
                    "are initiators (TCP simultaneous open)"
                )
            key, peer, remote_muxers = self._verify_payload(self._xx.read_message(message))
            if self._expected is not None and peer != self._expected:
                raise PeerIdMismatch(f"dialed {self._expected} but the remote authenticated as {peer}")
            early = select_muxer(self._muxers, remote_muxers)
            self._emit(self._xx.write_message(self._our_payload()))
            self._finish(key, peer, remote_muxers, early)
        elif state is _State.AWAIT_MSG3:
            key, peer, remote_muxers = self._verify_payload(self._xx.read_message(message))
            early = select_muxer(remote_muxers, self._muxers)
            self._finish(key, peer, remote_muxers, early)
        else:  # pragma: no cover - receive_data never calls us in other states
            raise HandshakeError(f"unexpected Noise handshake state {state}")

    def _verify_payload(self, payload: bytes) -> tuple[PublicKey, PeerId, tuple[str, ...]]:
        msg = noise_handshake_pb2.NoiseHandshakePayload()
        try:
            msg.ParseFromString(payload)
        except _PbDecodeError as exc:
            raise DecodeError(f"malformed Noise handshake payload: {exc}") from None
        if not msg.HasField("identity_key") or not msg.HasField("identity_sig"):
            raise DecodeError("Noise handshake payload lacks identity_key or identity_sig")
        key = public_key_from_protobuf(msg.identity_key)
        remote_static = self._xx.remote_static
        if remote_static is None:  # pragma: no cover - XX always delivers s with this payload
            raise HandshakeError("no remote static key after Noise message")
        if not key.verify(STATIC_KEY_DOMAIN + remote_static, msg.identity_sig):
            raise HandshakeError("Noise identity_sig does not verify for the remote static key")
        muxers: list[str] = []
        for muxer in msg.extensions.stream_muxers:
            if not isinstance(muxer, str):  # upb hands back bytes for invalid UTF-8 in proto2
                raise DecodeError("Noise extension stream_muxers holds invalid UTF-8")
            muxers.append(muxer)
        return key, PeerId.from_public_key(key), tuple(muxers)

    def _finish(self, key: PublicKey, peer: PeerId, remote_muxers: tuple[str, ...], early: str | None) -> None:
        send_key, recv_key = self._xx.split()
        self._result = HandshakeResult(
            remote_public_key=key,
            remote_peer=peer,
            early_muxer=early,
            remote_muxers=remote_muxers,
            send_key=send_key,
            recv_key=recv_key,
            handshake_hash=self._xx.handshake_hash,
        )
        self._state = _State.DONE
