"""Transports: TCP, QUIC v1 (``/quic-v1``, on aioquic) and an in-memory transport for tests."""

from mycel.transports.memory import MemoryNetwork, MemoryTransport
from mycel.transports.quic import QUIC
from mycel.transports.tcp import TCP

__all__ = ["QUIC", "TCP", "MemoryNetwork", "MemoryTransport"]
