"""AutoNAT v1 and v2: ask other peers to dial us back, learn whether we are reachable, and answer
their requests (see :mod:`mycel.protocols.autonat.service`).

::

    config = HostConfig(services=[Identify(), AutoNAT(AutoNATConfig(boot_delay=1.0))], ...)
    async with open_host(config) as host:
        with host.subscribe() as events:
            async for event in events:
                if isinstance(event, ReachabilityChanged):
                    print(event.reachability)

The verdict is ``host.reachability``; services hear it through their ``reachability_changed`` hook
(a KadDHT in ``mode="auto"`` becomes a server when it is public).
"""

from mycel.core.addrs import Reachability
from mycel.core.events import ReachabilityChanged
from mycel.protocols.autonat.core import AddrReachability, RateLimiter, ReachabilityTracker, V2Plan, v1_dial_candidates, v2_plan
from mycel.protocols.autonat.messages import (
    DIAL_BACK_PROTOCOL,
    DIAL_REQUEST_PROTOCOL,
    V1_PROTOCOL,
    AutoNATMessageError,
    DialStatus,
    V1Status,
    V2Status,
)
from mycel.protocols.autonat.service import AutoNAT, AutoNATConfig

__all__ = [
    "DIAL_BACK_PROTOCOL",
    "DIAL_REQUEST_PROTOCOL",
    "V1_PROTOCOL",
    "AddrReachability",
    "AutoNAT",
    "AutoNATConfig",
    "AutoNATMessageError",
    "DialStatus",
    "RateLimiter",
    "Reachability",
    "ReachabilityChanged",
    "ReachabilityTracker",
    "V1Status",
    "V2Plan",
    "V2Status",
    "v1_dial_candidates",
    "v2_plan",
]
