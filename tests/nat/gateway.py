"""A scripted NAT-PMP / PCP gateway: the RFCs' answer layouts packed here with struct (not through the
codecs under test). ``Gateway.answer(data, source_ip)`` is sans-IO; ``python tests/nat/gateway.py
<listen ip> <external ip> <ext ifname>`` serves it on port 5351 inside a lab router and installs each
granted mapping as a real DNAT rule (mycel.testing.natlab.forward_ruleset), printing JSON lines.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass, field


@dataclass
class Gateway:
    external_ip: str
    refuse: int = 0  # result code for map requests (0: grant)
    mappings: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)  # (proto, ext) -> (ip, port)
    requests: list[tuple[str, int, int]] = field(default_factory=list)  # (protocol, internal port, lifetime)

    def answer(self, data: bytes, source_ip: str) -> bytes | None:
        """The answer to one request datagram (None: not a request we serve)."""
        if data == b"\x00\x00":  # NAT-PMP external address
            return struct.pack("!BBHI4s", 0, 128, 0, 7, socket.inet_aton(self.external_ip))
        if len(data) == 12 and data[0] == 0 and data[1] in (1, 2):  # NAT-PMP map
            _, op, _, internal, _, lifetime = struct.unpack("!BBHHHI", data)
            proto = "tcp" if op == 2 else "udp"
            self._record(proto, internal, lifetime, source_ip)
            external = internal + 1000
            return struct.pack("!BBHIHHI", 0, 128 + op, self.refuse, 7, internal, external, lifetime)
        if len(data) == 60 and data[0] == 2 and data[1] == 1:  # PCP MAP
            lifetime = struct.unpack_from("!I", data, 4)[0]
            proto_num, internal = struct.unpack_from("!B3xH", data, 36)
            proto = "tcp" if proto_num == 6 else "udp"
            self._record(proto, internal, lifetime, source_ip)
            header = struct.pack("!BBBBII", 2, 0x81, 0, self.refuse, lifetime, 7) + bytes(12)
            ext = bytes(10) + b"\xff\xff" + socket.inet_aton(self.external_ip)
            return header + data[24:36] + struct.pack("!B3xHH", proto_num, internal, internal + 1000) + ext
        return None

    def _record(self, proto: str, internal: int, lifetime: int, source_ip: str) -> None:
        self.requests.append((proto, internal, lifetime))
        if self.refuse:
            return
        if lifetime:
            self.mappings[(proto, internal + 1000)] = (source_ip, internal)
        else:
            self.mappings.pop((proto, internal + 1000), None)


def main() -> None:
    from mycel.testing.natlab import forward_ruleset

    listen_ip, external_ip, ext_if = sys.argv[1:4]
    gateway = Gateway(external_ip)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((listen_ip, 5351))
    print(json.dumps({"event": "ready"}), flush=True)
    while True:
        data, (ip, port) = sock.recvfrom(2048)
        before = dict(gateway.mappings)
        reply = gateway.answer(data, ip)
        if gateway.mappings != before:
            forwards = [(proto, ext, dst, dport) for (proto, ext), (dst, dport) in gateway.mappings.items()]
            subprocess.run(["nft", "-f", "-"], input=forward_ruleset(ext_if, forwards), text=True, check=True)
            print(json.dumps({"event": "forwards", "forwards": forwards}), flush=True)
        if reply is not None:
            sock.sendto(reply, (ip, port))


if __name__ == "__main__":
    main()
