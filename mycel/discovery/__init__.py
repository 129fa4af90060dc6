"""Discovery: how a host finds peers (bootstrap lists, ``/dnsaddr``, mDNS, rendezvous); what each source
finds goes to ``host.peer_found``."""

from mycel.discovery.mdns import MDNS, MdnsPeerLost

__all__ = [
    "MDNS",
    "MdnsPeerLost",
]
