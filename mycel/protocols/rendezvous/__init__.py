"""Rendezvous (``/rendezvous/1.0.0``, libp2p/specs rendezvous/README.md r3): peers register in namespaces
at a rendezvous point and discover each other there.

```python
point = HostConfig(services=[Identify(), Rendezvous(server=True)])      # a rendezvous point
config = HostConfig(services=[Identify(), Rendezvous()])                # a client
async with open_host(config) as host:
    rv = host.service(Rendezvous)
    await host.connect(point_addr)
    await rv.register("my-app", server=point_id)           # refreshed until unregister()
    peers, cookie = await rv.discover("my-app", server=point_id)
    newer, cookie = await rv.discover("my-app", server=point_id, cookie=cookie)
```

Discovered peers are reported to the host (``host.peer_found(peer, addrs, "rendezvous", ttl)``), which keeps
their addresses and connects to them up to ``HostConfig.discovery_connect``.

The parts: :mod:`.core` (the point's registrations, sans-IO: limits, TTLs, cookies, record checks) and
:mod:`.service` (the trio driver, client and server).

**py-libp2p 0.8.1 deviates from the spec** (``libp2p/discovery/rendezvous``), and ``Rendezvous(
py_libp2p_compat=True)`` bridges what can be bridged:

1. Its ``Register`` field 2 is an unsigned ``PeerInfo{bytes id = 1; repeated bytes addrs = 2}``, not a
   signed peer record, so nobody can check the addresses it registers. Its server parses our signed record
   as a PeerInfo, finds another "id" and answers ``E_NOT_AUTHORIZED``; its client cannot read a signed
   record in a DISCOVER response (it fails on the whole response). Compat: a client re-registers in the
   PeerInfo form at a point that said ``E_NOT_AUTHORIZED`` to the signed one, and reads PeerInfo
   registrations; a point takes PeerInfo registrations for the sender's own id only, and answers a
   DISCOVER from a peer whose identify agent is ``py-libp2p/...`` with every registration as a PeerInfo.
2. Status 101 is ``E_INVALID_PEER_INFO`` there (same number as ``E_INVALID_SIGNED_PEER_RECORD``).
3. Its server ignores an ``UNREGISTER`` without the (deprecated, specs#335) ``id`` field; our client sends
   its own id there, which spec servers ignore.
4. Its server refuses a REGISTER without ``ttl`` (proto3, no presence: the spec's default 2 h is never
   applied) and accepts any TTL from 1 s to 72 h; its client refuses TTLs under 120 s. With compat, our
   client always sends a TTL (the default 2 h when none is given).
5. Its server refuses a DISCOVER without a namespace (the spec: all namespaces) and takes namespaces of
   256 bytes (the spec: 255).
6. Its cookie is a 4-byte offset into the namespace's current registrations, and the last page returns
   no cookie: polling with it does not give "only new registrations" (entries shift as others expire).
   Our client passes cookies through untouched, so paging works against it.
7. Its limits are per namespace (1000 registrations), not per peer.
"""

from mycel.protocols.rendezvous.core import Limits, Refused, Registration, RegistrationStore, Status
from mycel.protocols.rendezvous.service import PROTOCOL, DiscoveredPeer, DiscoverResult, Rendezvous

__all__ = [
    "PROTOCOL",
    "DiscoverResult",
    "DiscoveredPeer",
    "Limits",
    "Refused",
    "Registration",
    "RegistrationStore",
    "Rendezvous",
    "Status",
]
