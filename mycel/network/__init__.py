"""The network layer: the peerstore, the swarm (dialing, listeners, connections) and the upgrader."""

from mycel.network.peerstore import AddrSource, PeerInfo, PeerStore

__all__ = ["AddrSource", "PeerInfo", "PeerStore"]
