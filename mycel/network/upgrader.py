"""Raw connection → security → muxer, with protocols offered in preference order."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mycel.core.abc import Connection, RawConnection, SecurityProtocol, StreamMuxer
from mycel.core.errors import ConfigError, NegotiationError
from mycel.multistream import select_inbound, select_outbound

if TYPE_CHECKING:
    from mycel.core.identity import Identity
    from mycel.core.peer_id import PeerId

log = logging.getLogger("mycel.network.upgrader")


class Upgrader:
    def __init__(
        self,
        identity: Identity,
        security: Sequence[SecurityProtocol],
        muxers: Sequence[StreamMuxer],
    ) -> None:
        if not security or not muxers:
            raise ConfigError("an upgrader needs at least one security protocol and one muxer")
        self.identity = identity
        self._security = {s.protocol_id: s for s in security}
        self._security_order = [s.protocol_id for s in security]
        self._muxers = {m.protocol_id: m for m in muxers}
        self._muxer_order = [m.protocol_id for m in muxers]

    @property
    def muxer_ids(self) -> list[str]:
        return list(self._muxer_order)

    def _muxer(self, protocol_id: str) -> StreamMuxer:
        muxer = self._muxers.get(protocol_id)
        if muxer is None:
            raise NegotiationError(f"security handshake agreed on unknown muxer {protocol_id!r}")
        return muxer

    async def upgrade_outbound(self, raw: RawConnection, expected_peer: PeerId | None) -> Connection:
        sec_id = await select_outbound(raw, self._security_order)
        secure = await self._security[sec_id].secure_outbound(
            raw, self.identity, expected_peer, self._muxer_order
        )
        muxer_id = secure.early_muxer or await select_outbound(secure, self._muxer_order)
        return self._muxer(muxer_id).new_connection(secure)

    async def upgrade_inbound(self, raw: RawConnection) -> Connection:
        sec_id = await select_inbound(raw, self._security.__contains__, lambda: self._security_order)
        secure = await self._security[sec_id].secure_inbound(raw, self.identity, self._muxer_order)
        muxer_id = secure.early_muxer or await select_inbound(
            secure, self._muxers.__contains__, lambda: self._muxer_order
        )
        return self._muxer(muxer_id).new_connection(secure)
