"""Circuit relay v2 (``/libp2p/circuit/relay/0.2.0/hop`` and ``/stop``).

* :class:`CircuitRelay` — the relay (hop) service, in ``HostConfig.services``; its bounds and limits are
  a :class:`RelayResources` (go-libp2p's defaults).
* :class:`RelayTransport` — the client, in ``HostConfig.transports``: dial
  ``<relay addr>/p2p/<relay>/p2p-circuit/p2p/<target>``, listen on ``/p2p-circuit`` (reserving on the
  configured relays) or ``<relay addr>/p2p/<relay>/p2p-circuit``. Relayed connections carry
  ``conn.limit`` and are ``conn.limited``.

Layout: ``messages`` (codecs, vouchers, errors), ``config``, ``core`` (sans-IO reservation and circuit
tables), ``service`` (the relay), ``transport`` (the client), ``pb/`` (the proto).
"""

from mycel.protocols.relay.config import RelayResources
from mycel.protocols.relay.core import RelayCore
from mycel.protocols.relay.messages import (
    HOP_PROTOCOL,
    STOP_PROTOCOL,
    InvalidVoucher,
    RelayError,
    RelayMessageError,
    RelayRefused,
    Status,
    Voucher,
    open_voucher,
    seal_voucher,
)
from mycel.protocols.relay.service import CircuitRelay, is_relayed
from mycel.protocols.relay.transport import RelayListener, RelayReservation, RelayTransport

__all__ = [
    "HOP_PROTOCOL",
    "STOP_PROTOCOL",
    "CircuitRelay",
    "InvalidVoucher",
    "RelayCore",
    "RelayError",
    "RelayListener",
    "RelayMessageError",
    "RelayRefused",
    "RelayReservation",
    "RelayResources",
    "RelayTransport",
    "Status",
    "Voucher",
    "is_relayed",
    "open_voucher",
    "seal_voucher",
]
