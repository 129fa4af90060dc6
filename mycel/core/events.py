"""Events a host reports to its subscribers (``host.subscribe()``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mycel.core.abc import Connection, Direction

if TYPE_CHECKING:
    from mycel.core.peer_id import PeerId
    from mycel.network.peerstore import PeerInfo


@dataclass(frozen=True)
class ConnectionOpened:
    connection: Connection


@dataclass(frozen=True)
class ConnectionClosed:
    connection: Connection


@dataclass(frozen=True)
class StreamOpened:
    peer: PeerId
    protocol: str
    direction: Direction


@dataclass(frozen=True)
class StreamHandlerFailed:
    peer: PeerId
    protocol: str
    error: BaseException


@dataclass(frozen=True)
class PeerIdentified:
    peer: PeerId
    info: PeerInfo


Event = ConnectionOpened | ConnectionClosed | StreamOpened | StreamHandlerFailed | PeerIdentified
