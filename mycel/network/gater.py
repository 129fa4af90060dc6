"""The connection gater: a user's veto at each stage of a connection's life (go-libp2p's
``ConnectionGater``), set with ``HostConfig.gater``.

Stages, in order: ``intercept_peer_dial`` (before we dial a peer), ``intercept_addr_dial`` (before
each address of it), ``intercept_accept`` (an inbound connection was accepted, nothing read yet),
``intercept_secured`` (the security handshake named the peer, either direction), and
``intercept_upgraded`` (the connection is muxed, before anyone uses it). Each answers True to let
the connection go on. A refusal makes a dial fail with :class:`~mycel.core.errors.ConnectionGated`
and closes an inbound connection (logged at INFO). A gater that raises counts as a refusal.

QUIC connections arrive secured and muxed from their transport: for them ``intercept_accept``,
``intercept_secured`` and ``intercept_upgraded`` are asked one after the other once the transport
hands the connection over.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mycel.core.abc import Connection, Direction

if TYPE_CHECKING:
    from multiaddr import Multiaddr

    from mycel.core.peer_id import PeerId

log = logging.getLogger("mycel.network.gater")


@runtime_checkable
class ConnectionGater(Protocol):
    """What ``HostConfig.gater`` implements: one method per stage, True to allow."""

    def intercept_peer_dial(self, peer: PeerId) -> bool:
        """May we dial ``peer``?"""
        ...

    def intercept_addr_dial(self, peer: PeerId | None, addr: Multiaddr) -> bool:
        """May we dial ``addr`` (of ``peer``, None when dialing a bare address)?"""
        ...

    def intercept_accept(self, local_addr: Multiaddr, remote_addr: Multiaddr) -> bool:
        """May the inbound connection from ``remote_addr`` go on to its handshake?"""
        ...

    def intercept_secured(self, direction: Direction, peer: PeerId, local_addr: Multiaddr, remote_addr: Multiaddr) -> bool:
        """The handshake authenticated ``peer``: may the connection go on to its muxer?"""
        ...

    def intercept_upgraded(self, conn: Connection) -> bool:
        """The connection is ready: may it be used?"""
        ...


class AllowAll:
    """A gater that allows everything; subclass it and override the stages you care about."""

    def intercept_peer_dial(self, peer: PeerId) -> bool:
        """Allow."""
        return True

    def intercept_addr_dial(self, peer: PeerId | None, addr: Multiaddr) -> bool:
        """Allow."""
        return True

    def intercept_accept(self, local_addr: Multiaddr, remote_addr: Multiaddr) -> bool:
        """Allow."""
        return True

    def intercept_secured(self, direction: Direction, peer: PeerId, local_addr: Multiaddr, remote_addr: Multiaddr) -> bool:
        """Allow."""
        return True

    def intercept_upgraded(self, conn: Connection) -> bool:
        """Allow."""
        return True


def allowed(gater: ConnectionGater, stage: str, *args: object) -> bool:
    """Ask ``gater`` at ``stage``; a gater that raises refuses (logged with its traceback)."""
    try:
        return bool(getattr(gater, stage)(*args))
    except Exception:
        log.exception("connection gater %s raised at %s; refusing", type(gater).__name__, stage)
        return False


__all__ = ["AllowAll", "ConnectionGater", "allowed"]
