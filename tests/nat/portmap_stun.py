"""A minimal STUN (RFC 5389) binding responder for the lab's public segment: ``python
tests/nat/portmap_stun.py <ip>`` answers every Binding Request on ``<ip>:3478`` with the sender's
address as XOR-MAPPED-ADDRESS (CHANGE-REQUEST ignored). miniupnpd refuses to map ports when its
external address is reserved (198.18/15 included) unless STUN (``ext_perform_stun``) says the router
is reachable 1:1 — which a lab router on the public segment is. Prints ``{"event": "ready"}``.
"""

from __future__ import annotations

import json
import socket
import struct
import sys

MAGIC = b"\x21\x12\xa4\x42"


def answer(data: bytes, ip: str, port: int) -> bytes | None:
    """The Binding Success Response to ``data`` from ``ip:port`` (None: not a Binding Request)."""
    if len(data) < 20 or data[:2] != b"\x00\x01" or data[4:8] != MAGIC:
        return None
    xaddr = bytes(a ^ b for a, b in zip(socket.inet_aton(ip), MAGIC, strict=True))
    attr = struct.pack("!HHBBH", 0x0020, 8, 0, 1, port ^ 0x2112) + xaddr
    return struct.pack("!HH", 0x0101, len(attr)) + MAGIC + data[8:20] + attr


def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((sys.argv[1], 3478))
    print(json.dumps({"event": "ready"}), flush=True)
    while True:
        data, (ip, port) = sock.recvfrom(2048)
        reply = answer(data, ip, port)
        if reply is not None:
            sock.sendto(reply, (ip, port))


if __name__ == "__main__":
    main()
