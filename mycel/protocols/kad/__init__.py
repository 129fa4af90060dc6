"""Kademlia DHT (``/ipfs/kad/1.0.0``): routing table, lookups, records and providers.

```python
config = HostConfig(services=[Identify(), KadDHT()])           # mode="client" to only ask
async with open_host(config) as host:
    dht = host.service(KadDHT)
    await dht.put(b"/pk/" + host.peer_id.to_bytes(), host.identity.private_key.public_key.to_protobuf())
    value = await dht.get(key)
    await dht.provide(multihash)
    async for provider in dht.find_providers(multihash):
        ...
    addrs = await dht.find_peer(peer_id)     # host.connect(peer_id) asks the DHT too
```

The parts: :mod:`.distance` (keyspace), :mod:`.routing` (the k-bucket table and the IP diversity
filter), :mod:`.lookup` (the iterative lookup as a state machine), :mod:`.records` (validators),
:mod:`.providers` and :mod:`.store` (what a server keeps), :mod:`.service` (the trio driver).
"""

from mycel.protocols.kad.service import PROTOCOL, KadDHT, RoutingTablePeerAdded

__all__ = ["PROTOCOL", "KadDHT", "RoutingTablePeerAdded"]
