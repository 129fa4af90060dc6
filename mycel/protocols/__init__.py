"""Protocols that run as services in a host: identify (+ push), ping, echo, perf."""

from mycel.protocols.echo import Echo
from mycel.protocols.identify import Identify, IdentifyResult
from mycel.protocols.perf import Perf
from mycel.protocols.ping import Ping

__all__ = ["Echo", "Identify", "IdentifyResult", "Perf", "Ping"]
