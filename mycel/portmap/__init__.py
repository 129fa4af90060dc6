"""Port mapping on NAT gateways: NAT-PMP (RFC 6886) and PCP (RFC 6887) — sans-IO codecs of our own
(:mod:`~mycel.portmap.natpmp`, :mod:`~mycel.portmap.pcp`) under small trio clients, and
:class:`PortMapper`, which keeps mappings renewed and deletes them on exit. UPnP IGD is not here yet.
"""

from mycel.portmap.client import NatPmpClient, PcpClient, PortMapper, exchange
from mycel.portmap.natpmp import ExternalAddress, Mapping, PortMapError, PortMapMessageError
from mycel.portmap.pcp import PcpMapping

__all__ = [
    "ExternalAddress",
    "Mapping",
    "NatPmpClient",
    "PcpClient",
    "PcpMapping",
    "PortMapError",
    "PortMapMessageError",
    "PortMapper",
    "exchange",
]
