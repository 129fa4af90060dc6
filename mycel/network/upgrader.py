"""Raw connection → security → muxer, with protocols offered in preference order."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Protocol

from multiaddr import Multiaddr

from mycel.core.abc import Connection, Direction, RawConnection, SecurityProtocol, StreamMuxer
from mycel.core.errors import ConfigError, ConnectionGated, NegotiationError
from mycel.multistream import select_inbound, select_outbound
from mycel.network.gater import allowed
from mycel.multistream.core import DialerCore, MessageDecoder
from mycel.multistream.negotiate import read_message

if TYPE_CHECKING:
    from mycel.core.abc import SecureConnection
    from mycel.core.identity import Identity
    from mycel.core.peer_id import PeerId
    from mycel.network.gater import ConnectionGater
    from mycel.network.resources import ConnectionScope

log = logging.getLogger("mycel.network.upgrader")

STAGE_SELECT: Final = "select"  # multistream-select of the security protocol
STAGE_SECURITY: Final = "security"  # the security handshake
STAGE_MUXER: Final = "muxer"  # muxer selection (skipped when the handshake agreed on one)
STAGES: Final = (STAGE_SELECT, STAGE_SECURITY, STAGE_MUXER)


class StageObserver(Protocol):
    """Told as each stage of an inbound handshake starts (so the previous one has finished): the swarm
    moves the handshake's deadline (one per stage) and notes its progress."""

    def stage_started(self, stage: str) -> None:
        """``stage`` (one of STAGES) starts now."""


class Upgrader:
    """Turns a raw connection into a :class:`Connection`: negotiate a security protocol, run its
    handshake, then negotiate a muxer (skipped when the handshake agreed on one), each offered in the
    order given. Raises ConfigError without at least one security protocol and one muxer.

    Once the handshake names the peer, ``gater.intercept_secured`` is asked (a refusal raises
    ConnectionGated) and the connection's resource ``scope``, when given, moves to that peer
    (ResourceLimitExceeded when the peer is at its connection limit).
    """

    def __init__(
        self,
        identity: Identity,
        security: Sequence[SecurityProtocol],
        muxers: Sequence[StreamMuxer],
        *,
        gater: ConnectionGater | None = None,
    ) -> None:
        if not security or not muxers:
            raise ConfigError("an upgrader needs at least one security protocol and one muxer")
        self.identity = identity
        self.gater = gater
        self._security = {s.protocol_id: s for s in security}
        self._security_order = [s.protocol_id for s in security]
        self._muxers = {m.protocol_id: m for m in muxers}
        self._muxer_order = [m.protocol_id for m in muxers]

    @property
    def muxer_ids(self) -> list[str]:
        """The muxer protocol ids in preference order."""
        return list(self._muxer_order)

    def _muxer(self, protocol_id: str) -> StreamMuxer:
        muxer = self._muxers.get(protocol_id)
        if muxer is None:
            raise NegotiationError(f"security handshake agreed on unknown muxer {protocol_id!r}")
        return muxer

    def _secured(self, secure: SecureConnection, scope: ConnectionScope | None) -> None:
        gater = self.gater
        if gater is not None:
            if not allowed(gater, "intercept_secured", secure.direction, secure.remote_peer,
                           secure.local_addr, secure.remote_addr):  # fmt: skip
                raise ConnectionGated(f"gater refused the secured connection with {secure.remote_peer}")
        if scope is not None:
            scope.set_peer(secure.remote_peer)
            if secure.buffer_bound:  # the secure channel's own buffers, charged to the peer (refused: closed)
                scope.memory.reserve(secure.buffer_bound)

    async def upgrade_outbound(
        self, raw: RawConnection, expected_peer: PeerId | None, scope: ConnectionScope | None = None
    ) -> Connection:
        """Upgrade a connection we dialed. With ``expected_peer``, the handshake fails with PeerIdMismatch
        if the remote is another peer. With one security protocol, its proposal costs no round trip.
        """
        if len(self._security_order) == 1:
            # One security protocol: propose it optimistically, so the proposal travels with the
            # first handshake message and the answer is checked when the handshake first reads.
            sec_id = self._security_order[0]
            raw = LazySelectConnection(raw, sec_id)
        else:
            sec_id = await select_outbound(raw, self._security_order)
        secure = await self._security[sec_id].secure_outbound(
            raw, self.identity, expected_peer, self._muxer_order
        )
        self._secured(secure, scope)
        muxer_id = secure.early_muxer or await select_outbound(secure, self._muxer_order)
        return self._muxer(muxer_id).new_connection(secure)

    async def upgrade_inbound(
        self,
        raw: RawConnection,
        scope: ConnectionScope | None = None,
        *,
        observer: StageObserver | None = None,
    ) -> Connection:
        """Upgrade a connection a listener accepted (the remote peer is whoever authenticates).

        ``observer`` hears as each stage starts (security protocol selection, security handshake, muxer
        selection): the swarm gives each its own deadline.
        """
        if observer is not None:
            observer.stage_started(STAGE_SELECT)
        sec_id = await select_inbound(raw, self._security.__contains__, lambda: self._security_order)
        if observer is not None:
            observer.stage_started(STAGE_SECURITY)
        secure = await self._security[sec_id].secure_inbound(raw, self.identity, self._muxer_order)
        self._secured(secure, scope)
        if observer is not None:
            observer.stage_started(STAGE_MUXER)
        muxer_id = secure.early_muxer or await select_inbound(
            secure, self._muxers.__contains__, lambda: self._muxer_order
        )
        return self._muxer(muxer_id).new_connection(secure)


class LazySelectConnection(RawConnection):
    """A raw connection with an optimistic multistream proposal in front of it.

    The header and proposal are prepended to the first write; the first read consumes and checks the
    answer (a refusal raises ProtocolNotSupported there).
    """

    def __init__(self, inner: RawConnection, protocol: str) -> None:
        self._inner = inner
        self._core: DialerCore | None = DialerCore([protocol])
        self._prefix = self._core.initial_bytes()

    @property
    def local_addr(self) -> Multiaddr:
        return self._inner.local_addr

    @property
    def remote_addr(self) -> Multiaddr:
        return self._inner.remote_addr

    @property
    def direction(self) -> Direction:
        return self._inner.direction

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._prefix:
            data, self._prefix = self._prefix + bytes(data), b""
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        core = self._core
        if core is not None:
            if self._prefix:  # nothing written yet: the proposal must go out before we wait
                await self.send_all(b"")
            decoder = MessageDecoder(expect_header=True)
            while core.selected is None:
                core.receive(await read_message(self._inner, decoder))
            self._core = None
        return await self._inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        if self._prefix:
            await self.send_all(b"")
        await self._inner.send_eof()

    async def aclose(self) -> None:
        await self._inner.aclose()

