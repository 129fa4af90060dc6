"""What we know about other peers: addresses, keys, protocols, identify data. Bounded."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from multiaddr import Multiaddr

if TYPE_CHECKING:
    from mycel.core.keys import PublicKey
    from mycel.core.peer_id import PeerId

MAX_ADDRS_PER_PEER = 32  # newest kept; older addresses fall out
MAX_PROTOCOLS_PER_PEER = 256  # beyond: the rest is ignored
MAX_PEERS = 10_000  # least recently updated peer evicted


@dataclass
class PeerInfo:
    peer_id: PeerId
    addrs: list[Multiaddr] = field(default_factory=list)
    public_key: PublicKey | None = None
    protocols: list[str] = field(default_factory=list)
    agent_version: str | None = None
    protocol_version: str | None = None
    observed_addr: Multiaddr | None = None
    signed_record_seq: int | None = None
    signed_record: bytes | None = None


class PeerStore:
    def __init__(self, max_peers: int = MAX_PEERS) -> None:
        self._peers: OrderedDict[PeerId, PeerInfo] = OrderedDict()
        self._max_peers = max_peers

    def __contains__(self, peer: object) -> bool:
        return peer in self._peers

    def __len__(self) -> int:
        return len(self._peers)

    def peers(self) -> list[PeerId]:
        return list(self._peers)

    def info(self, peer: PeerId) -> PeerInfo:
        info = self._peers.get(peer)
        if info is None:
            info = PeerInfo(peer)
            self._peers[peer] = info
            while len(self._peers) > self._max_peers:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        return info

    def get(self, peer: PeerId) -> PeerInfo | None:
        return self._peers.get(peer)

    def addrs(self, peer: PeerId) -> list[Multiaddr]:
        info = self._peers.get(peer)
        return list(info.addrs) if info else []

    def add_addrs(self, peer: PeerId, addrs: list[Multiaddr]) -> None:
        info = self.info(peer)
        for addr in addrs:
            if addr in info.addrs:
                info.addrs.remove(addr)
            info.addrs.insert(0, addr)
        del info.addrs[MAX_ADDRS_PER_PEER:]

    def set_addrs(self, peer: PeerId, addrs: list[Multiaddr]) -> None:
        self.info(peer).addrs = list(dict.fromkeys(addrs))[:MAX_ADDRS_PER_PEER]

    def set_protocols(self, peer: PeerId, protocols: list[str]) -> None:
        self.info(peer).protocols = list(dict.fromkeys(protocols))[:MAX_PROTOCOLS_PER_PEER]

    def protocols(self, peer: PeerId) -> list[str]:
        info = self._peers.get(peer)
        return list(info.protocols) if info else []

    def set_public_key(self, peer: PeerId, key: PublicKey) -> None:
        self.info(peer).public_key = key
