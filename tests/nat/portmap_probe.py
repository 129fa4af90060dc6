"""Ask a gateway for its external address and a TCP mapping over NAT-PMP, and a mapping over PCP;
print one JSON line per request (``ok`` with the answer, or the typed error and its code)."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from mycel.portmap import NatPmpClient, PcpClient, PortMapError


async def main(gateway: str) -> None:
    pmp, pcp_client = NatPmpClient(gateway), PcpClient(gateway)
    requests: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("natpmp_external", pmp.external_address),
        ("natpmp_map", lambda: pmp.map("tcp", 8080, 60)),
        ("pcp_map", lambda: pcp_client.map("tcp", 8080, 60)),
    ]
    for name, request in requests:
        try:
            answer = await request()
        except PortMapError as exc:
            print(json.dumps({"request": name, "ok": False, "code": exc.code, "error": str(exc)}), flush=True)
        else:
            print(json.dumps({"request": name, "ok": True, "answer": repr(answer)}), flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
