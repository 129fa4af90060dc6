"""Stream muxers: yamux (``/yamux/1.0.0``) and mplex (``/mplex/6.7.0``), sans-IO cores under one driver."""

from mycel.muxers.mplex import Mplex
from mycel.muxers.yamux import Yamux

__all__ = ["Mplex", "Yamux"]
