"""go-libp2p's default bootstrap peers: moved to :mod:`mycel.discovery.bootstrap`, re-exported here.

``HostConfig(bootstrap=IPFS_BOOTSTRAP_PEERS)`` joins the public IPFS DHT (its ``/dnsaddr`` entries are
resolved through DNS); ``KadDHT(bootstrap=...)`` takes only plain ``/ip4``/``/ip6`` ones. Tests never dial them.
"""

from mycel.discovery.bootstrap import IPFS_BOOTSTRAP_PEERS

__all__ = ["IPFS_BOOTSTRAP_PEERS"]
