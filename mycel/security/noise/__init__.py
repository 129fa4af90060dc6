"""libp2p Noise security (``/noise``): XX handshake with identity payloads, ChaChaPoly transport."""

from mycel.security.noise.connection import NoiseConnection
from mycel.security.noise.handshake import HandshakeResult, NoiseHandshake, XXHandshake, select_muxer
from mycel.security.noise.protocol import Noise
from mycel.security.noise.transport import MAX_PLAINTEXT, NoiseTransport, TransportCipher

__all__ = [
    "Noise",
    "NoiseConnection",
    "NoiseHandshake",
    "HandshakeResult",
    "XXHandshake",
    "NoiseTransport",
    "TransportCipher",
    "MAX_PLAINTEXT",
    "select_muxer",
]
