"""go-libp2p's default bootstrap peers (``dht.DefaultBootstrapPeers``), shipped as data.

Pass them to ``KadDHT(bootstrap=IPFS_BOOTSTRAP_PEERS)`` to join the public IPFS DHT. Tests never dial
them. The ``/dnsaddr`` entries need DNS TXT resolution (the discovery work adds it); the one ``/ip4``
entry works without it.
"""

IPFS_BOOTSTRAP_PEERS: tuple[str, ...] = (
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt",
    "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
)
"""The public IPFS bootstrap peers (go-libp2p-kad-dht ``DefaultBootstrapPeers``)."""

__all__ = ["IPFS_BOOTSTRAP_PEERS"]
