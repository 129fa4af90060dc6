"""Kademlia DHT (``/ipfs/kad/1.0.0``): routing table, lookups, records and providers.

```python
config = HostConfig(services=[Identify(), KadDHT()])           # mode="client" to only ask
async with open_host(config) as host:
    dht = host.service(KadDHT)
    await dht.put(b"/pk/" + host.peer_id.to_bytes(), host.identity.private_key.public_key.to_protobuf())
    value = await dht.get(key)
    await dht.provide(cid)                   # a multiformats CID, its text, or a multihash
    async for provider in dht.find_providers(cid):
        ...
    addrs = await dht.find_peer(peer_id)     # host.connect(peer_id) asks the DHT too
    print(dht.health())                      # table size, buckets, connected, refresh state
```

The parts: :mod:`.distance` (keyspace), :mod:`.routing` (the k-bucket table and the IP diversity
filter), :mod:`.lookup` (the iterative lookup as a state machine), :mod:`.records` (validators),
:mod:`.providers` and :mod:`.store` (what a server keeps), :mod:`.service` (the trio driver).
"""

from mycel.protocols.kad.service import PROTOCOL, KadDHT, RoutingTablePeerAdded, TableHealth

__all__ = ["PROTOCOL", "KadDHT", "RoutingTablePeerAdded", "TableHealth"]
