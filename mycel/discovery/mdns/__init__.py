"""mDNS discovery (libp2p ``discovery/mdns`` spec): find peers on the local network with no configuration.

``HostConfig(services=[MDNS()])`` announces the host under ``_p2p._udp.local`` and reports the peers it
hears through ``host.peer_found(..., "mdns")``; the host keeps their addresses and connects (up to
``HostConfig.discovery_connect``).

Layout: :mod:`~mycel.discovery.mdns.dns` (a bounded DNS message codec), :mod:`~mycel.discovery.mdns.core`
(the sans-IO responder/querier: ``now`` and a random source in, datagrams and events out) and
:mod:`~mycel.discovery.mdns.service` (the trio driver on one UDP socket).

**Why our own codec rather than python-zeroconf.** zeroconf would work (it accepts a raw TXT of several
``dnsaddr=`` strings), but it runs its own thread with an asyncio loop inside our trio program: its
timers, sockets and cache live outside the host's nurseries and cancellation, so "the host stops, the
service says goodbye, the socket is closed, nothing leaks" could only be checked across a thread
boundary, and its schedule could not be driven by a virtual clock. The part of DNS that libp2p's mDNS
needs is small (PTR, TXT, SRV, A/AAAA, name compression: ~300 lines), and an own codec lets us put the
bounds hostile packets need (packet size, label/name length, pointer loops, record counts) in one place
and test them directly. We do not implement probing/conflict resolution for the host name (names are
random 32–63 characters, RFC 6762 §8 probing would only delay start-up) nor the cache of unrelated
records a general responder keeps.

**IPv4 and IPv6**: one socket joins 224.0.0.251, another ff02::fb (when the machine has IPv6); both carry
the same packets, and IPv6 addresses are announced and parsed in TXT strings either way.
"""

from mycel.discovery.mdns.core import MdnsConfig, MdnsCore, MdnsPeerDiscovered, MdnsPeerGone, eligible_addrs
from mycel.discovery.mdns.dns import MalformedPacket
from mycel.discovery.mdns.service import MDNS, MdnsPeerLost

__all__ = [
    "MDNS",
    "MalformedPacket",
    "MdnsConfig",
    "MdnsCore",
    "MdnsPeerDiscovered",
    "MdnsPeerGone",
    "MdnsPeerLost",
    "eligible_addrs",
]
