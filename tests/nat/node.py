"""A NAT-lab host process: ``python tests/nat/node.py relay|peer``, run inside a lab namespace.

It reads JSON commands on stdin, one a line, and prints JSON lines on stdout (logs go to stderr).
A peer runs a fresh host for each command that needs one and closes it on ``stop``, so one process
serves many runs (starting Python and importing mycel is most of a run's cost otherwise).

``relay``: one host listening on ``/ip4/<ip>/tcp/4001`` and ``/udp/4001/quic-v1`` with the circuit relay
service (limits raised for the many reservations of a long lab run); prints
``{"event": "ready", "tcp": addr, "quic": addr}`` and lives until stdin closes.

``peer`` commands:

* ``{"cmd": "listen", "transport": "tcp"|"quic", "relay": addr}`` — a fresh host (that transport only,
  plus the relay transport): connect to the relay, reserve, take the address the relay observed us on
  (identify) as our public address for DCUtR; prints ``{"event": "listening", "peer", "public"}``.
* ``{"cmd": "dial", "transport", "relay", "target"}`` — a fresh host likewise; dial the target through
  the relay, ping over the relayed connection, wait for DCUtR's outcome; on success ping over the
  direct connection and wait for the relayed one to close; else check the relayed connection still
  carries a ping. Prints ``{"event": "result", ...}`` (times in ms).
* ``{"cmd": "report"}`` — ``{"event": "report", "results": [...]}``: the listener's DCUtR outcomes.
* ``{"cmd": "stop"}`` — close the current host; ``{"event": "stopped"}``.

Public addresses come from identify's observed address on the relay connection: our dials leave from
our listen port (TCP ``reuse_port``; QUIC's shared socket), so behind an endpoint-independent NAT the
relay sees exactly the address a hole punch must target (AutoNAT is not used here).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import trio
from multiaddr import Multiaddr

from mycel.core.abc import Connection, Transport
from mycel.core.errors import MycelError
from mycel.core.events import ConnectionClosed
from mycel.core.peer_id import PeerId
from mycel.host import Host, HostConfig, open_host
from mycel.muxers.yamux import Yamux
from mycel.network.limits import PrefixLimit, SourceLimits
from mycel.protocols.dcutr import DCUtR
from mycel.protocols.identify import Identify
from mycel.protocols.ping import PING_PROTOCOL, Ping, ping_stream
from mycel.protocols.relay import CircuitRelay, RelayResources, RelayTransport
from mycel.security.noise import Noise
from mycel.transports.quic import QUIC
from mycel.transports.tcp import TCP

RESULT_TIMEOUT = 30.0  # seconds a dial run may take in all (3 attempts of ATTEMPT_TIMEOUT and more)
ATTEMPT_TIMEOUT = 3.0  # per hole punch attempt: covers one TCP SYN retransmission (1 s) and QUIC's PTO


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def transports(kind: str) -> list[Transport]:
    return [TCP(reuse_port=True) if kind == "tcp" else QUIC(), RelayTransport()]


def listen_addr(kind: str) -> str:
    return "/ip4/0.0.0.0/tcp/0" if kind == "tcp" else "/ip4/0.0.0.0/udp/0/quic-v1"


def config(kind: str, listen: list[str]) -> HostConfig:
    return HostConfig(
        transports=transports(kind),
        security=[Noise()],
        muxers=[Yamux()],
        services=[Identify(), Ping(), DCUtR(attempt_timeout=ATTEMPT_TIMEOUT, relay_close_grace=0.2)],
        listen=listen,
    )


async def run_relay(ip: str) -> None:
    # one IP per router for all of a long lab run's hosts (reservations end when their host disconnects)
    resources = RelayResources(max_reservations=4096, max_reservations_per_ip=4096)
    cfg = HostConfig(
        transports=[TCP(reuse_port=True), QUIC()],
        security=[Noise()],
        muxers=[Yamux()],
        services=[Identify(), Ping(), CircuitRelay(resources)],
        listen=[f"/ip4/{ip}/tcp/4001", f"/ip4/{ip}/udp/4001/quic-v1"],
        # every run's fresh hosts come from the same two router addresses, several per second
        source_limits=SourceLimits(ipv4=(PrefixLimit(32, 64, 1000.0, 1000),)),
    )
    async with open_host(cfg) as host:
        tcp = next(a for a in host.addrs if "/tcp/" in str(a))
        quic = next(a for a in host.addrs if "/quic-v1" in str(a))
        emit(event="ready", tcp=str(tcp), quic=str(quic), peer=str(host.peer_id))
        stdin = trio.wrap_file(sys.stdin)
        while await stdin.readline():  # until the test closes our stdin
            pass


async def observed_public(host: Host, relay: Multiaddr) -> list[Multiaddr]:
    """Connect to the relay and return the address it observed us on (identify), as a list."""
    identify = host.service(Identify)
    with host.subscribe() as events:
        await host.connect(relay)
        with trio.fail_after(10):
            while not identify.observed_addrs:
                await events.receive()  # PeerIdentified and friends wake us; no polling
    return [identify.observed_addrs[0]]


async def ping_on(host: Host, conn: Connection, count: int = 3) -> float:
    """Median ping RTT in ms over ``conn``."""
    stream = await host.open_stream_on(conn, [PING_PROTOCOL], allow_limited=True)
    try:
        rtts = await ping_stream(stream, count)
        await stream.send_eof()
    finally:
        await stream.aclose()
    return sorted(rtts)[len(rtts) // 2] * 1000


class PeerRunner:
    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.host: Host | None = None
        self._stop: trio.Event | None = None
        self._stopped: trio.Event | None = None

    async def _start(self, kind: str, listen: list[str]) -> Host:
        await self.stop()
        ready: trio.Event = trio.Event()
        self._stop, self._stopped = trio.Event(), trio.Event()
        stop, stopped = self._stop, self._stopped

        async def hold() -> None:
            try:
                async with open_host(config(kind, listen)) as host:
                    self.host = host
                    ready.set()
                    await stop.wait()
            finally:
                self.host = None
                stopped.set()

        self.nursery.start_soon(hold)
        await ready.wait()
        assert self.host is not None
        return self.host

    async def stop(self) -> None:
        if self._stop is not None and self._stopped is not None:
            self._stop.set()
            await self._stopped.wait()
        self._stop = self._stopped = None

    async def listen(self, kind: str, relay: str) -> None:
        host = await self._start(kind, [listen_addr(kind)])
        public = await observed_public(host, Multiaddr(relay))
        host.service(DCUtR).set_public_addrs(public)
        transport = next(t for t in host.transports if isinstance(t, RelayTransport))
        await host.listen(f"{relay}/p2p-circuit")
        with trio.fail_after(10):
            await transport.wait_reserved()
        emit(event="listening", peer=str(host.peer_id), public=[str(a) for a in public])

    async def dial(self, kind: str, relay: str, target: str) -> None:
        host = await self._start(kind, [listen_addr(kind)])
        public = await observed_public(host, Multiaddr(relay))
        dcutr = host.service(DCUtR)
        dcutr.set_public_addrs(public)
        peer = PeerId.from_string(target)
        out: dict[str, Any] = {"event": "result", "transport": kind, "public": [str(a) for a in public]}
        with host.subscribe() as events, trio.move_on_after(RESULT_TIMEOUT) as timeout:
            start = trio.current_time()
            relayed = await host.connect(Multiaddr(f"{relay}/p2p-circuit/p2p/{target}"))
            out["relayed_limited"] = relayed.limited
            try:
                out["relay_rtt_ms"] = await ping_on(host, relayed, count=5)
            except (MycelError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                # under loss a ping may outlive the relayed connection (closed once the punch succeeded)
                out["relay_rtt_error"] = repr(exc)
            # B makes up to max_attempts exchanges; we answer each concurrently, so their outcomes may be
            # recorded out of order (an attempt's dial still timing out after the next one succeeded)
            for answered in range(1, dcutr.max_attempts + 1):
                await dcutr.wait_result(peer, count=answered, initiator=False)
                mine = [r for r in dcutr.results if r.peer == peer and not r.initiator]
                result = next((r for r in mine if r.success), mine[-1])
                if result.success:
                    break
            out["success"] = result.success
            out["error"] = result.error
            direct = next((c for c in host.connections(peer) if not c.limited), None)
            if direct is None:
                out["direct"] = False
                out["relayed_ping_ms"] = await ping_on(host, relayed)  # the relayed connection still works
            else:
                out["direct"] = True
                out["direct_addr"] = str(direct.remote_addr)
                out["direct_rtt_ms"] = await ping_on(host, direct, count=9)
                out["dialer_elapsed_ms"] = (trio.current_time() - start) * 1000  # with the pings
                closed = relayed.is_closed
                while not closed:  # B closes it after its grace period
                    event = await events.receive()
                    closed = isinstance(event, ConnectionClosed) and event.connection is relayed
                out["relayed_closed"] = closed
                out["direct_still_open"] = not direct.is_closed
        out["timed_out"] = timeout.cancelled_caught
        emit(**out)

    async def report(self) -> None:
        results = []
        if self.host is not None:
            with trio.move_on_after(RESULT_TIMEOUT):  # B's last attempt may still be running
                await self.host.service(DCUtR).wait_result(initiator=True)
            for r in self.host.service(DCUtR).results:
                results.append(
                    {"peer": str(r.peer), "initiator": r.initiator, "success": r.success, "attempts": r.attempts,
                     "relay_rtt_ms": None if r.relay_rtt is None else r.relay_rtt * 1000,
                     "elapsed_ms": r.elapsed * 1000, "error": r.error}
                )
        emit(event="report", results=results)


async def run_peer() -> None:
    stdin = trio.wrap_file(sys.stdin)
    async with trio.open_nursery() as nursery:
        runner = PeerRunner(nursery)
        emit(event="ready")
        while line := await stdin.readline():
            cmd = json.loads(line)
            try:
                if cmd["cmd"] == "listen":
                    await runner.listen(cmd["transport"], cmd["relay"])
                elif cmd["cmd"] == "dial":
                    await runner.dial(cmd["transport"], cmd["relay"], cmd["target"])
                elif cmd["cmd"] == "report":
                    await runner.report()
                elif cmd["cmd"] == "stop":
                    await runner.stop()
                    emit(event="stopped")
            except Exception as exc:  # reported to the test, which fails the run; the process goes on
                logging.getLogger("natlab").exception("command %s failed", cmd)
                emit(event="error", cmd=cmd.get("cmd"), error=repr(exc))
        await runner.stop()
        nursery.cancel_scope.cancel()


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    role = sys.argv[1]
    if role == "relay":
        trio.run(run_relay, sys.argv[2])
    else:
        trio.run(run_peer)


if __name__ == "__main__":
    main()
