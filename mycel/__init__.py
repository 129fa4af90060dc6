"""mycel: a libp2p-compatible, modular peer-to-peer network stack for Python, built on trio."""

__version__ = "0.1.0"

from mycel.core.abc import Connection, Direction, MuxedStream  # noqa: E402
from mycel.core.identity import Identity  # noqa: E402
from mycel.core.keys import KeyType  # noqa: E402
from mycel.core.peer_id import PeerId  # noqa: E402
from mycel.host import Host, HostConfig, open_host  # noqa: E402

__all__ = [
    "Connection",
    "Direction",
    "Host",
    "HostConfig",
    "Identity",
    "KeyType",
    "MuxedStream",
    "PeerId",
    "__version__",
    "open_host",
]
