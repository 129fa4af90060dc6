"""Discovery: how a host finds peers (bootstrap lists, ``/dnsaddr``, mDNS, rendezvous); what each source
finds goes to ``host.peer_found``."""

from mycel.discovery.bootstrap import IPFS_BOOTSTRAP_PEERS, Bootstrap, BootstrapRoundDone
from mycel.discovery.dnsaddr import DnsaddrError, DnsaddrResolver
from mycel.discovery.mdns import MDNS, MdnsPeerLost
from mycel.protocols.rendezvous import Rendezvous

__all__ = [
    "Bootstrap",
    "BootstrapRoundDone",
    "DnsaddrError",
    "DnsaddrResolver",
    "IPFS_BOOTSTRAP_PEERS",
    "MDNS",
    "MdnsPeerLost",
    "Rendezvous",
]
