"""Kademlia DHT (``/ipfs/kad/1.0.0``): routing table, lookups, records and providers (work in progress)."""
