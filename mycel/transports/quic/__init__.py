"""The ``/quic-v1`` transport: QUIC v1 with libp2p TLS 1.3 and native streams (aioquic's sans-IO core)."""

from mycel.transports.quic.connection import MUXER_PROTOCOL, SECURITY_PROTOCOL, QUICConnection, QUICStream
from mycel.transports.quic.core import QuicCore
from mycel.transports.quic.endpoint import UDPEndpoint, quic_multiaddr
from mycel.transports.quic.transport import QUIC, QUICListener, QUICOptions, quic_host_port

__all__ = [
    "QUIC",
    "QUICOptions",
    "QUICListener",
    "QUICConnection",
    "QUICStream",
    "QuicCore",
    "UDPEndpoint",
    "quic_multiaddr",
    "quic_host_port",
    "SECURITY_PROTOCOL",
    "MUXER_PROTOCOL",
]
