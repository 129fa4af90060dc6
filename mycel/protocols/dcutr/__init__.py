"""DCUtR — Direct Connection Upgrade through Relay (``/libp2p/dcutr``, libp2p/specs ``relay/DCUtR.md``).

* :class:`DCUtR` — the service, in ``HostConfig.services`` of both peers (with ``TCP(reuse_port=True)``
  for TCP hole punching; QUIC dials from its listen socket already).
* :class:`Initiator` / :class:`Responder` — the sans-IO exchange and its RTT timing.

Layout: ``messages`` (codec, size cap, errors), ``core`` (sans-IO), ``service`` (the trio driver),
``pb/`` (the proto).
"""

from mycel.protocols.dcutr.core import MAX_ATTEMPTS, Initiator, PunchPlan, Responder
from mycel.protocols.dcutr.messages import MAX_MESSAGE_SIZE, PROTOCOL, DCUtRError, DCUtRMessageError
from mycel.protocols.dcutr.service import DCUtR, HolePunching, HolePunchResult

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_MESSAGE_SIZE",
    "PROTOCOL",
    "DCUtR",
    "DCUtRError",
    "DCUtRMessageError",
    "HolePunchResult",
    "HolePunching",
    "Initiator",
    "PunchPlan",
    "Responder",
]
