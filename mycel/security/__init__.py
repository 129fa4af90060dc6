"""Security protocols: Noise XX (``/noise``), TLS 1.3 (``/tls/1.0.0``), plaintext (tests only)."""

from mycel.security.noise import Noise
from mycel.security.plaintext import Plaintext
from mycel.security.tls import TLS

__all__ = ["TLS", "Noise", "Plaintext"]
