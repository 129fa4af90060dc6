"""multistream-select 1.0: a sans-IO core and trio negotiation helpers."""

from mycel.multistream.core import PROTOCOL_ID, DialerCore, ListenerCore, MessageDecoder, encode_message
from mycel.multistream.negotiate import select_inbound, select_lazy, select_outbound

__all__ = [
    "PROTOCOL_ID",
    "DialerCore",
    "ListenerCore",
    "MessageDecoder",
    "encode_message",
    "select_inbound",
    "select_lazy",
    "select_outbound",
]
