"""mycel: a libp2p-compatible, modular peer-to-peer network stack for Python, built on trio.

Everything a user composes a host from is importable from here::

    from mycel import HostConfig, Identity, open_host, TCP, QUIC, Noise, TLS, Yamux, Identify, Ping

Subpackages re-export their own public names too (``mycel.transports``, ``mycel.security``,
``mycel.muxers``, ``mycel.protocols``, ``mycel.network``).
"""

__version__ = "0.1.0"

from mycel.core.abc import (  # noqa: E402
    Connection,
    ConnectionLimit,
    ConnectionTransport,
    Direction,
    Listener,
    MuxedStream,
    RawConnection,
    SecureConnection,
    SecurityProtocol,
    StreamMuxer,
    StreamTransport,
    Transport,
)
from mycel.core.errors import (  # noqa: E402
    ConfigError,
    ConnectionClosed,
    ConnectionGated,
    DecodeError,
    DialError,
    DialPeerMismatch,
    HandshakeError,
    HostClosed,
    LimitedConnection,
    MessageTooLarge,
    MycelError,
    NegotiationError,
    PeerIdMismatch,
    ProtocolNotSupported,
    ProtocolViolation,
    ResourceLimitExceeded,
    ServiceNotRunning,
    SimultaneousOpenError,
    StreamClosed,
    StreamReset,
    TransportError,
)
from mycel.core.events import (  # noqa: E402
    ConnectionClosed as ConnectionClosedEvent,
    ConnectionOpened,
    Event,
    LocalProtocolsChanged,
    PeerConnected,
    PeerDisconnected,
    PeerFound,
    PeerIdentified,
    PeerProtocolsChanged,
    ServiceEvent,
    ServiceFailed,
    StreamHandlerFailed,
    StreamOpened,
    TaskFailed,
)
from mycel.core.framing import (  # noqa: E402
    MessageStream,
    ProtobufStream,
    read_exactly,
    receive_message,
    send_message,
)
from mycel.core.identity import Identity  # noqa: E402
from mycel.core.keys import KeyType  # noqa: E402
from mycel.core.peer_id import PeerId  # noqa: E402
from mycel.host import EventSubscription, Host, HostConfig, open_host  # noqa: E402
from mycel.discovery.bootstrap import Bootstrap  # noqa: E402
from mycel.discovery.mdns import MDNS  # noqa: E402
from mycel.muxers import Mplex, Yamux  # noqa: E402
from mycel.network import AddrSource, PeerInfo, PeerStore  # noqa: E402
from mycel.network.connmgr import ConnManagerConfig  # noqa: E402
from mycel.network.gater import AllowAll, ConnectionGater  # noqa: E402
from mycel.network.resources import ResourceLimitReached, ResourceLimits, ScopeLimit  # noqa: E402
from mycel.protocols import Echo, Floodsub, Gossipsub, GossipsubConfig, Identify, IdentifyResult, KadDHT, Perf, Ping, Rendezvous  # noqa: E402
from mycel.protocols.relay import CircuitRelay, RelayResources, RelayTransport  # noqa: E402
from mycel.protocols.autonat import AutoNAT, AutoNATConfig  # noqa: E402
from mycel.portmap import PortMapping  # noqa: E402
from mycel.core.addrs import AddressPolicy, Reachability  # noqa: E402
from mycel.core.events import ReachabilityChanged  # noqa: E402
from mycel.routing import ContentRouting, PeerNotFound, PeerRouting, ProviderRecord  # noqa: E402
from mycel.security import TLS, Noise, Plaintext  # noqa: E402
from mycel.service import Service, ServiceHost, StreamHandler  # noqa: E402
from mycel.transports import QUIC, TCP, MemoryNetwork, MemoryTransport  # noqa: E402

__all__ = [
    "AddressPolicy",
    "AutoNAT",
    "AutoNATConfig",
    "PortMapping",
    "Reachability",
    "ReachabilityChanged",
    "Bootstrap",
    "MDNS",
    "KadDHT",
    "Rendezvous",
    "ProviderRecord",
    "PeerRouting",
    "PeerNotFound",
    "ContentRouting",
    "QUIC",
    "TCP",
    "TLS",
    "AddrSource",
    "AllowAll",
    "ConfigError",
    "ConnManagerConfig",
    "ConnectionGated",
    "ConnectionGater",
    "CircuitRelay",
    "Connection",
    "ConnectionLimit",
    "ConnectionClosed",
    "ConnectionClosedEvent",
    "ConnectionOpened",
    "ConnectionTransport",
    "DecodeError",
    "DialError",
    "DialPeerMismatch",
    "Direction",
    "Echo",
    "Event",
    "EventSubscription",
    "HandshakeError",
    "Host",
    "HostClosed",
    "HostConfig",
    "Floodsub",
    "Gossipsub",
    "GossipsubConfig",
    "Identify",
    "IdentifyResult",
    "Identity",
    "KeyType",
    "LimitedConnection",
    "Listener",
    "LocalProtocolsChanged",
    "MemoryNetwork",
    "MemoryTransport",
    "MessageStream",
    "MessageTooLarge",
    "Mplex",
    "MuxedStream",
    "MycelError",
    "NegotiationError",
    "Noise",
    "PeerConnected",
    "PeerDisconnected",
    "PeerId",
    "PeerIdMismatch",
    "PeerFound",
    "PeerIdentified",
    "PeerInfo",
    "PeerProtocolsChanged",
    "PeerStore",
    "Perf",
    "Ping",
    "Plaintext",
    "ProtobufStream",
    "ProtocolNotSupported",
    "ProtocolViolation",
    "RawConnection",
    "RelayResources",
    "RelayTransport",
    "ResourceLimitExceeded",
    "ResourceLimitReached",
    "ResourceLimits",
    "ScopeLimit",
    "SecureConnection",
    "SecurityProtocol",
    "Service",
    "ServiceEvent",
    "ServiceFailed",
    "ServiceHost",
    "ServiceNotRunning",
    "SimultaneousOpenError",
    "StreamClosed",
    "StreamHandler",
    "StreamHandlerFailed",
    "StreamMuxer",
    "StreamOpened",
    "StreamReset",
    "StreamTransport",
    "TaskFailed",
    "Transport",
    "TransportError",
    "Yamux",
    "__version__",
    "open_host",
    "read_exactly",
    "receive_message",
    "send_message",
]
