"""Port mapping on NAT gateways: NAT-PMP (RFC 6886) and PCP (RFC 6887) — sans-IO codecs of our own
(:mod:`~mycel.portmap.natpmp`, :mod:`~mycel.portmap.pcp`) under small trio clients — and UPnP IGD
(SSDP, the device description and SOAP in :mod:`~mycel.portmap.upnp`, on trio in
:mod:`~mycel.portmap.igd`). :class:`PortMapper` keeps NAT-PMP mappings of given ports alive;
:class:`PortMapping` is the host service that maps the listen ports with whichever protocol answers
and advertises the external addresses.
"""

from mycel.portmap.client import NatPmpClient, PcpClient, PortMapper, exchange
from mycel.portmap.igd import IgdClient, discover
from mycel.portmap.natpmp import ExternalAddress, Mapping, PortMapError, PortMapMessageError
from mycel.portmap.pcp import PcpMapping
from mycel.portmap.service import Lease, PortMapping, default_gateway
from mycel.portmap.upnp import UpnpError, UpnpMessageError, WanService

__all__ = [
    "ExternalAddress",
    "IgdClient",
    "Lease",
    "Mapping",
    "NatPmpClient",
    "PcpClient",
    "PcpMapping",
    "PortMapError",
    "PortMapMessageError",
    "PortMapper",
    "PortMapping",
    "UpnpError",
    "UpnpMessageError",
    "WanService",
    "default_gateway",
    "discover",
    "exchange",
]
