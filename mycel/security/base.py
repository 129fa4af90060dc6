"""What every secure channel over a raw connection has in common: who is at each end and where."""

from __future__ import annotations

from multiaddr import Multiaddr

from mycel.core.abc import Direction, RawConnection, SecureConnection
from mycel.core.keys import PublicKey
from mycel.core.peer_id import PeerId


class RawSecureConnection(SecureConnection):
    """A :class:`SecureConnection` carried over ``raw``: the identity and addressing half; subclasses
    supply the stream methods."""

    def __init__(
        self,
        raw: RawConnection,
        *,
        local_peer: PeerId,
        remote_peer: PeerId,
        remote_public_key: PublicKey,
        protocol_id: str,
        early_muxer: str | None = None,
    ) -> None:
        self._raw = raw
        self._local_peer = local_peer
        self._remote_peer = remote_peer
        self._remote_public_key = remote_public_key
        self._protocol_id = protocol_id
        self._early_muxer = early_muxer

    @property
    def local_peer(self) -> PeerId:
        return self._local_peer

    @property
    def remote_peer(self) -> PeerId:
        return self._remote_peer

    @property
    def remote_public_key(self) -> PublicKey:
        return self._remote_public_key

    @property
    def local_addr(self) -> Multiaddr:
        return self._raw.local_addr

    @property
    def remote_addr(self) -> Multiaddr:
        return self._raw.remote_addr

    @property
    def direction(self) -> Direction:
        return self._raw.direction

    @property
    def security_protocol(self) -> str:
        return self._protocol_id

    @property
    def early_muxer(self) -> str | None:
        return self._early_muxer

    @property
    def raw(self) -> RawConnection:
        """The raw connection this channel runs over (it carries the security protocol's records)."""
        return self._raw
