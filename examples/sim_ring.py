"""A custom protocol on simulated hosts: a token passed around a ring of 12 hosts on `mycel.sim`.

    python examples/sim_ring.py

`mycel.sim` runs real hosts (Noise, yamux, multistream, your handlers) over a modelled network: each
node gets an IP and a region, links get gossipsub-interop's latencies between 8 world regions, and
everything runs on trio's MockClock, so minutes of virtual time pass in a second of real time and a
seed gives the same run every time. Here each host serves `/example/ring/1.0.0`: it reads a token (a
list of the hops so far, one length-prefixed JSON message), appends itself and its virtual arrival
time, and hands it to the next host; the first host sees it come back. The output is the same on
every run (the virtual times are those of the latency model, not of this machine).
"""

from __future__ import annotations

import json
import time

import trio
import trio.testing

from mycel import Host, MuxedStream, StreamHandler, receive_message, send_message
from mycel.sim import Regions, SimNetwork, sim_hosts

PROTOCOL = "/example/ring/1.0.0"
HOSTS = 12


async def main() -> None:
    net = SimNetwork(seed=7, latency=Regions())
    back = trio.Event()
    result: list[list[tuple[int, float]]] = []
    async with sim_hosts(net, HOSTS) as hosts:

        def handler(i: int, host: Host) -> StreamHandler:
            async def on_token(stream: MuxedStream) -> None:
                hops = [tuple(hop) for hop in json.loads(await receive_message(stream, 64 * 1024) or b"[]")]
                await stream.aclose()
                hops.append((i, round(trio.current_time() * 1000, 1)))
                if i == 0:
                    result.append(hops)
                    back.set()
                    return
                nxt = hosts[(i + 1) % HOSTS]
                out = await host.new_stream(nxt.peer_id, [PROTOCOL])
                await send_message(out, json.dumps(hops).encode())
                await out.aclose()

            return on_token

        for i, host in enumerate(hosts):
            host.set_stream_handler(PROTOCOL, handler(i, host))
        for i, host in enumerate(hosts):  # each knows where its successor listens
            nxt = hosts[(i + 1) % HOSTS]
            await host.connect(nxt.peer_id, nxt.listen_addrs)
        start = trio.current_time()
        first = await hosts[0].new_stream(hosts[1].peer_id, [PROTOCOL])
        await send_message(first, json.dumps([[0, round(start * 1000, 1)]]).encode())
        await first.aclose()
        with trio.fail_after(60):  # virtual seconds
            await back.wait()
    hops = result[0]
    for (a, ta), (b, tb) in zip(hops, hops[1:]):
        print(f"host {a:2} -> host {b:2}: {tb - ta:6.1f} ms")
    print(f"round trip of the ring: {hops[-1][1] - hops[0][1]:.1f} virtual ms")


if __name__ == "__main__":
    wall = time.monotonic()
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    print(f"(simulated in {time.monotonic() - wall:.1f} s of real time)")
