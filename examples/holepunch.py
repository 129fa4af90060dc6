"""A NATed peer reachable through a relay, then directly by hole punching (DCUtR), in the NAT lab.

    sudo python examples/holepunch.py [--transport tcp|quic]

Builds the NAT lab of `mycel.testing.natlab` (network namespaces and nftables; needs root, `ip netns`
and `nft` — `make system-deps` installs them) and runs three hosts in it, one process each:

    relay R 198.18.0.1 ── the "internet" ── router A (NAT) ── peer A 10.0.1.2
                                        └── router B (NAT) ── peer B 10.0.2.2

Both routers do endpoint-independent NAT with a home router's firewall: nothing from outside gets in
unless it answers something sent out. B takes a reservation on R and is reachable at
`<R>/p2p-circuit/p2p/<B>` only. A dials that address: a *limited*, relayed connection. DCUtR (on both
peers) then exchanges the addresses R observed them on over the relayed connection, measures its round
trip, and both sides dial each other at once (a TCP simultaneous open from the listen port, or QUIC
datagrams from the listen socket), so each NAT sees outgoing traffic and lets the other's packets in.
A pings over both connections; B closes the relayed one once the direct one is up. The lab is torn
down on the way out, also on failure or Ctrl-C. Takes a few seconds. Exits 2 when the lab cannot be
built (not root, no `ip netns` or `nft`).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
from multiaddr import Multiaddr

from mycel import (
    CircuitRelay,
    ConnectionClosedEvent,
    Connection,
    Host,
    HostConfig,
    Identify,
    Noise,
    Ping,
    QUIC,
    RelayTransport,
    TCP,
    Yamux,
    open_host,
)
from mycel.core.peer_id import PeerId
from mycel.protocols.dcutr import DCUtR
from mycel.protocols.ping import PING_PROTOCOL, ping_stream
from mycel.testing import natlab
from mycel.testing.netns import Namespace

SCRIPT = os.path.abspath(__file__)
STEP_TIMEOUT = 20  # seconds for each step a process waits on (starting, reserving, hole punching)


# -- the three hosts, each run in its own lab namespace by `holepunch.py <role> ...` ----------------

def config(transport: str, services: list[Any], listen: list[str]) -> HostConfig:
    # TCP dials must leave from the listen port for a simultaneous open (reuse_port); QUIC always does
    first = TCP(reuse_port=True) if transport == "tcp" else QUIC()
    return HostConfig(transports=[first, RelayTransport()], security=[Noise()], muxers=[Yamux()],
                      services=services, listen=listen)


def listen_addr(transport: str, ip: str = "0.0.0.0", port: int = 0) -> str:
    return f"/ip4/{ip}/tcp/{port}" if transport == "tcp" else f"/ip4/{ip}/udp/{port}/quic-v1"


async def until_stdin_closes() -> None:
    """Keep the host up until the lab's driver closes our stdin."""
    stdin = trio.wrap_file(sys.stdin)
    while await stdin.readline():
        pass


async def run_relay(transport: str) -> None:
    cfg = config(transport, [Identify(), Ping(), CircuitRelay()], [listen_addr(transport, natlab.RELAY_IP, 4001)])
    async with open_host(cfg) as relay:
        print(f"relay {relay.peer_id} listening on {relay.addrs[0]}", flush=True)
        await until_stdin_closes()
        print(f"relayed {relay.service(CircuitRelay).bytes_relayed} bytes in all", flush=True)


async def public_addr(host: Host, relay: str) -> Multiaddr:
    """Connect to the relay; the address it observed us on (identify): our NAT's mapping of our port."""
    identify = host.service(Identify)
    with host.subscribe() as events:
        await host.connect(relay)
        while not identify.observed_addrs:
            await events.receive()  # identify's result wakes us
    return identify.observed_addrs[0]


async def ping_on(host: Host, conn: Connection, count: int = 5) -> float:
    """The median ping round trip over ``conn``, in ms."""
    stream = await host.open_stream_on(conn, [PING_PROTOCOL], allow_limited=True)
    try:
        return statistics.median(await ping_stream(stream, count)) * 1000
    finally:
        await stream.aclose()


async def run_listener(transport: str, relay: str) -> None:
    """B: reserve on the relay, be reached through it, hole punch (B initiates DCUtR), stay up."""
    cfg = config(transport, [Identify(), Ping(), DCUtR(attempt_timeout=3.0, relay_close_grace=0.2)],
                 [listen_addr(transport)])
    async with open_host(cfg) as host:
        dcutr = host.service(DCUtR)
        with trio.fail_after(STEP_TIMEOUT):
            public = await public_addr(host, relay)
            dcutr.set_public_addrs([public])
            await host.listen(f"{relay}/p2p-circuit")
            await next(t for t in host.transports if isinstance(t, RelayTransport)).wait_reserved()
        print(f"B {host.peer_id} behind NAT; the relay sees it as {public}", flush=True)
        print(f"B reserved a slot: reachable at {relay}/p2p-circuit/p2p/{host.peer_id}", flush=True)
        with trio.fail_after(STEP_TIMEOUT * 2):
            result = await dcutr.wait_result(initiator=True)
        rtt = f"{result.relay_rtt * 1000:.1f} ms" if result.relay_rtt is not None else "?"
        if result.success:
            print(f"B hole punch to {result.addr}: direct after {result.attempts} attempt(s), "
                  f"{result.elapsed * 1000:.0f} ms from the relayed connection (relay RTT {rtt})", flush=True)
        else:
            print(f"B hole punch failed after {result.attempts} attempt(s): {result.error}", flush=True)
        await until_stdin_closes()


async def run_dialer(transport: str, relay: str, target: str) -> None:
    """A: dial B through the relay, watch DCUtR turn it into a direct connection, ping both."""
    cfg = config(transport, [Identify(), Ping(), DCUtR(attempt_timeout=3.0)], [listen_addr(transport)])
    async with open_host(cfg) as host:
        dcutr = host.service(DCUtR)
        with trio.fail_after(STEP_TIMEOUT):
            dcutr.set_public_addrs([await public_addr(host, relay)])
        peer = PeerId.from_string(target)
        with host.subscribe() as events, trio.fail_after(STEP_TIMEOUT * 2):
            relayed = await host.connect(f"{relay}/p2p-circuit/p2p/{target}")
            print(f"A connected to B through the relay: {relayed.remote_addr} (limited: {relayed.limited})",
                  flush=True)
            print(f"A ping over the relayed connection: {await ping_on(host, relayed):.2f} ms (median of 5)",
                  flush=True)
            # B runs up to 3 exchanges; A answers each (their outcomes may be recorded out of order)
            for answered in range(1, dcutr.max_attempts + 1):
                await dcutr.wait_result(peer, count=answered, initiator=False)
                mine = [r for r in dcutr.results if r.peer == peer and not r.initiator]
                if any(r.success for r in mine):
                    break
            direct = next((c for c in host.connections(peer) if not c.limited), None)
            if direct is None:
                print(f"A no direct connection: {mine[-1].error}; still relayed "
                      f"({await ping_on(host, relayed):.2f} ms)", flush=True)
                sys.exit(1)
            print(f"A direct connection to B: {direct.remote_addr} (limited: {direct.limited})", flush=True)
            print(f"A ping over the direct connection: {await ping_on(host, direct):.2f} ms (median of 5)",
                  flush=True)
            while not relayed.is_closed:  # B closes it once the direct one is up
                event = await events.receive()
                if isinstance(event, ConnectionClosedEvent) and event.connection is relayed:
                    break
            print(f"A the relayed connection is closed; the direct one is open: {not direct.is_closed}",
                  flush=True)


# -- the driver: build the lab, start the three processes in it, show what they print --------------

class Proc:
    """One host process in a lab namespace: its stdout, line by line, shown as it comes."""

    def __init__(self, ns: Namespace, name: str, argv: Sequence[str]) -> None:
        self.name = name
        self.proc = ns.python([SCRIPT, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.lines = trio.wrap_file(self.proc.stdout)

    async def until(self, pattern: str) -> re.Match[str]:
        """Show this process's lines until one matches ``pattern``; the match."""
        while line := await self.lines.readline():
            print(f"[{self.name}] {line.rstrip()}", flush=True)
            if m := re.search(pattern, line):
                return m
        raise RuntimeError(f"{self.name} exited ({self.proc.wait()}) before printing {pattern!r}")

    async def finish(self) -> int:
        """Close its stdin (the signal to stop), show the rest of its output, its exit status."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        while line := await self.lines.readline():
            print(f"[{self.name}] {line.rstrip()}", flush=True)
        return await trio.to_thread.run_sync(self.proc.wait)


async def drive(lab: natlab.NatLab, transport: str) -> int:
    with trio.fail_after(STEP_TIMEOUT * 3):
        relay = Proc(lab.relay, "relay", ["relay", transport])
        relay_addr = (await relay.until(r"listening on (\S+)"))[1]
        b = Proc(lab.b.ns, "B", ["listen", transport, relay_addr])
        b_peer = (await b.until(r"reachable at \S+/p2p/(\S+)"))[1]
        a = Proc(lab.a.ns, "A", ["dial", transport, relay_addr, b_peer])
        relayed_ms = (await a.until(r"ping over the relayed connection: ([\d.]+) ms"))[1]
        await b.until(r"B hole punch")
        direct = await a.until(r"ping over the direct connection: ([\d.]+) ms|no direct connection")
        if direct[1] is not None:
            await a.until(r"relayed connection is closed")
            print(f"relayed RTT {relayed_ms} ms -> direct RTT {direct[1]} ms ({transport}, through both NATs)",
                  flush=True)
        codes = [await a.finish(), await b.finish(), await relay.finish()]
    return max(codes)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("relay", "listen", "dial"):  # one of the three hosts, inside the lab
        role, transport, *rest = args
        runs: dict[str, Callable[..., Awaitable[None]]] = {"relay": run_relay, "listen": run_listener,
                                                           "dial": run_dialer}
        trio.run(runs[role], transport, *rest)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["tcp", "quic"], default="tcp")
    transport = parser.parse_args(args).transport
    if os.geteuid() != 0 or not natlab.available():
        print("holepunch.py builds a NAT lab in network namespaces: it needs root, `ip netns` (iproute2) "
              "and `nft` (nftables).\nRun it as root, e.g. `sudo python examples/holepunch.py` "
              "(`make system-deps` installs iproute2 and nftables).", file=sys.stderr)
        return 2
    print(f"building the NAT lab: relay {natlab.RELAY_IP}, peers A 10.0.1.2 and B 10.0.2.2 behind "
          f"endpoint-independent NATs; transport {transport}", flush=True)
    try:
        with natlab.NatLab() as lab:  # torn down on the way out, also on failure or Ctrl-C
            code = trio.run(drive, lab, transport)
    except KeyboardInterrupt:
        print("interrupted; lab torn down", file=sys.stderr)
        return 130
    print("lab torn down" + ("" if code == 0 else f"; a host exited {code}"), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
