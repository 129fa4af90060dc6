"""Real hosts on the simulated network: gossipsub and the DHT run their own code over it (#15)."""

from __future__ import annotations

import random

import trio
import trio.testing

from mycel import Gossipsub, Identify, KadDHT, Ping
from mycel.sim import Regions, SimNetwork, Uniform, connect_random, sim_hosts


async def test_ping_rtt_is_the_modelled_round_trip(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(seed=2, latency=Uniform(0.04))
    async with sim_hosts(net, 2, services=lambda i: [Identify(), Ping()]) as (a, b):
        await a.connect(b.peer_id, b.listen_addrs)
        (rtt,) = await a.service(Ping).ping(b.peer_id)
        assert 0.08 <= rtt < 0.09


async def test_gossip_reaches_every_node_across_regions(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(seed=3, latency=Regions())
    async with sim_hosts(net, 40, services=lambda i: [Identify(), Gossipsub()]) as hosts:
        await connect_random(hosts, 6, random.Random(3))
        received: dict[int, float] = {}
        everyone = trio.Event()
        async with trio.open_nursery() as nursery:
            for i in range(1, len(hosts)):

                async def listen(i: int, task_status: trio.TaskStatus[None]) -> None:
                    async with hosts[i].service(Gossipsub).subscribe("t") as sub:
                        task_status.started()
                        await sub.receive()
                        received[i] = trio.current_time()
                        if len(received) == len(hosts) - 1:
                            everyone.set()

                await nursery.start(listen, i)
            pubsub = hosts[0].service(Gossipsub)
            await pubsub.wait_ready("t", 6, timeout=30)  # subscriptions travelled: a full fanout
            start = trio.current_time()
            await pubsub.publish("t", b"hello")
            with trio.fail_after(30):
                await everyone.wait()
        assert max(received.values()) - start < 2.0  # a few hops of <= 220 ms each


async def test_dht_lookup_on_the_simulated_network(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(seed=4, latency=Uniform(0.03))
    async with sim_hosts(net, 30, services=lambda i: [Identify(), KadDHT(alpha=3, seed=i)]) as hosts:
        await connect_random(hosts, 4, random.Random(4))
        for host in hosts:  # the self-lookups of a bootstrap: tables filled through real requests
            await host.service(KadDHT).closest_peers(host.peer_id.to_bytes())
        key = b"/pk/" + hosts[5].peer_id.to_bytes()
        await hosts[5].service(KadDHT).put(key, hosts[5].identity.private_key.public_key.to_protobuf())
        assert await hosts[20].service(KadDHT).get(key) is not None
