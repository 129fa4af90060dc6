"""The Kademlia DHT between real hosts on the memory transport under trio's MockClock (autojump): tables
built by real bootstrap (each host connects to a few others, identify tells who serves kad, the table
checks each before adding it, the self-lookup fills it), then FIND_NODE against the ground truth,
find_peer through the host, PUT/GET with the /pk/ validator and PROVIDE/FIND_PROVIDERS (#11).

The 200-host version and churn come with the simulator work; this is the driver's first network test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import random
import time
from collections.abc import AsyncIterator
from typing import Literal

import trio
import trio.testing

from mycel.core.identity import Identity
from mycel.host import Host, HostConfig, open_host
from mycel.muxers.yamux import Yamux
from mycel.protocols.identify import Identify
from mycel.protocols.kad.dht_pb2 import Message
from mycel.protocols.kad.distance import kad_key, peer_key
from mycel.protocols.kad.service import KadDHT
from mycel.security import Plaintext
from mycel.testing.hosts import memory_config
from mycel.transports.memory import MemoryNetwork

N = 30


@contextlib.asynccontextmanager
async def _network(
    count: int, *, seed: int = 7, links: int = 3, alpha: int = 3, request_timeout: float = 10.0
) -> AsyncIterator[list[Host]]:
    rng = random.Random(seed)
    identities = [Identity.from_seed(rng.randbytes(32)) for _ in range(count)]
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        hosts: list[Host] = []
        for i, identity in enumerate(identities):
            config = memory_config(
                network,
                security=[Plaintext()],
                muxers=[Yamux()],
                services=[Identify(), KadDHT(alpha=alpha, seed=i, request_timeout=request_timeout)],
                identity=identity,
            )
            hosts.append(await stack.enter_async_context(open_host(config)))
        for i, host in enumerate(hosts):  # a ring plus random chords: everyone reachable
            targets = {(i + 1) % count, *rng.sample(range(count), links - 1)} - {i}
            for j in targets:
                await host.connect(hosts[j].peer_id, hosts[j].listen_addrs)
        await trio.sleep(5)  # identify, check-before-add and the self-lookups: virtual time (autojump)
        for host in hosts:  # a bootstrap round: every table refreshed once
            await host.service(KadDHT).closest_peers(host.peer_id.to_bytes())
        yield hosts


async def test_closest_peers_match_the_ground_truth(autojump_clock: trio.testing.MockClock) -> None:
    async with _network(N) as hosts:
        rng = random.Random(3)
        exact = 0
        trials = 20
        for _ in range(trials):
            key = rng.randbytes(32)
            target = kad_key(key)
            asker = rng.choice(hosts)
            truth = sorted((h.peer_id for h in hosts if h is not asker), key=lambda p: peer_key(p) ^ target)[:20]
            found = await asker.service(KadDHT).closest_peers(key)
            exact += found == truth
        assert exact >= 0.95 * trials, f"{exact}/{trials} lookups returned the true 20 closest"


async def test_find_peer_through_the_dht_and_host_connect(autojump_clock: trio.testing.MockClock) -> None:
    async with _network(N) as hosts:
        asker = hosts[0]
        strangers = [h for h in hosts if not asker.connections(h.peer_id) and h is not asker]
        assert strangers
        target = strangers[0]
        addrs = await asker.service(KadDHT).find_peer(target.peer_id)
        assert {str(a) for a in target.listen_addrs} <= {str(a) for a in addrs}
        other = strangers[1]
        asker.peerstore.clear_addrs(other.peer_id)  # forget what earlier lookups taught us
        conn = await asker.connect(other.peer_id)  # the host asks its peer routers: the DHT
        assert conn.remote_peer == other.peer_id


async def test_put_get_with_the_pk_validator(autojump_clock: trio.testing.MockClock) -> None:
    async with _network(N) as hosts:
        writer, reader = hosts[1], hosts[-2]
        key = b"/pk/" + writer.peer_id.to_bytes()
        value = writer.identity.private_key.public_key.to_protobuf()
        stored = await writer.service(KadDHT).put(key, value)
        assert stored >= 15
        assert await reader.service(KadDHT).get(key) == value


async def test_provide_and_find_providers(autojump_clock: trio.testing.MockClock) -> None:
    async with _network(N) as hosts:
        provider, seeker = hosts[2], hosts[-3]
        key = bytes.fromhex("1220") + bytes(range(32))  # a sha2-256 multihash
        assert await provider.service(KadDHT).provide(key) >= 15
        found = [rec async for rec in seeker.service(KadDHT).find_providers(key, limit=1)]
        assert [rec.peer for rec in found] == [provider.peer_id]


async def test_breaking_out_of_find_providers(autojump_clock: trio.testing.MockClock) -> None:
    """A caller that stops at the first provider: trio's cancel scopes stay intact (the generator once
    yielded inside a nursery, and a `break` corrupted them) and the next search works."""
    async with _network(N) as hosts:
        providers = {hosts[2].peer_id, hosts[3].peer_id}
        key = bytes.fromhex("1220") + bytes(range(1, 33))
        for provider in hosts[2:4]:
            assert await provider.service(KadDHT).provide(key) >= 15
        dht = hosts[-3].service(KadDHT)
        with trio.fail_after(60):
            async for first in dht.find_providers(key):
                break
        assert first.peer in providers
        with trio.fail_after(60):
            assert {rec.peer async for rec in dht.find_providers(key, limit=2)} == providers


async def test_cancelling_hosts_mid_lookup_exits_promptly(autojump_clock: trio.testing.MockClock) -> None:
    async with _network(8) as hosts:
        started = trio.Event()
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def lookup() -> None:
                    started.set()
                    await hosts[0].service(KadDHT).closest_peers(b"some key")

                nursery.start_soon(lookup)
                await started.wait()
                scope.cancel()
        assert scope.cancelled_caught
    # leaving _network closed 8 hosts with lookups' streams open: the test ends (no hang, no leak)


async def test_hostile_requests_close_only_their_stream(autojump_clock: trio.testing.MockClock) -> None:
    from mycel.core.framing import receive_message, send_message
    from mycel.core.varint import encode_uvarint
    from mycel.protocols.kad import dht_pb2
    from mycel.protocols.kad.service import MAX_MESSAGE_SIZE, PROTOCOL

    async with _network(6) as hosts:
        attacker, server = hosts[0], hosts[1]
        dht = server.service(KadDHT)
        # an announced length over 4 MiB: refused before the body is read, only this stream closes
        stream = await attacker.new_stream(server.peer_id, PROTOCOL)
        await stream.send_all(encode_uvarint(MAX_MESSAGE_SIZE + 1))
        assert await receive_message(stream, MAX_MESSAGE_SIZE) is None
        # ADD_PROVIDER naming another peer: ignored
        key = bytes.fromhex("1220") + bytes(32)
        victim = hosts[2].peer_id
        request = dht_pb2.Message(type=dht_pb2.Message.ADD_PROVIDER, key=key)
        request.providerPeers.add(id=victim.to_bytes(), addrs=[hosts[2].listen_addrs[0].to_bytes()])
        stream = await attacker.new_stream(server.peer_id, PROTOCOL)
        await send_message(stream, request.SerializeToString())
        await stream.aclose()
        await trio.sleep(1)  # let the server handle it: virtual time
        assert dht._providers.get(key, time.time()) == []
        # and the server still answers everyone
        assert await hosts[3].service(KadDHT).closest_peers(b"x")


async def test_switching_mode_is_seen_by_peers_through_identify_push(autojump_clock: trio.testing.MockClock) -> None:
    async with _network(4) as hosts:
        a, b = hosts[0], hosts[1]
        if not a.connections(b.peer_id):
            await a.connect(b.peer_id, b.listen_addrs)
        table_b = b.service(KadDHT).routing_table
        assert a.peer_id in table_b
        a.service(KadDHT).set_mode("client")
        await trio.sleep(1)  # identify push travels: virtual time
        assert a.peer_id not in table_b
        assert "/ipfs/kad/1.0.0" not in a.protocols
        a.service(KadDHT).set_mode("server")
        await trio.sleep(1)  # push, then b's check-before-add FIND_NODE: virtual time
        assert a.peer_id in table_b


async def test_unbounded_or_oversized_closer_peers_are_cut(autojump_clock: trio.testing.MockClock) -> None:
    from mycel.core.framing import receive_message, send_message
    from mycel.core.abc import MuxedStream
    from mycel.protocols.kad import dht_pb2
    from mycel.protocols.kad.service import MAX_MESSAGE_SIZE, PROTOCOL

    async with _network(4) as hosts:
        asker, evil = hosts[0], hosts[1]
        fakes = [Identity.from_seed(bytes([i]) * 32).peer_id for i in range(1, 60)]
        addr = hosts[2].listen_addrs[0].to_bytes()

        async def liar(stream: MuxedStream) -> None:
            request = dht_pb2.Message.FromString(await receive_message(stream, MAX_MESSAGE_SIZE) or b"")
            response = dht_pb2.Message(type=request.type, key=request.key)
            response.closerPeers.add(id=fakes[0].to_bytes(), addrs=[addr] * 3000)  # over 8 KiB: dropped
            for fake in fakes[1:]:
                response.closerPeers.add(id=fake.to_bytes(), addrs=[addr])
            await send_message(stream, response.SerializeToString())

        evil.set_stream_handler(PROTOCOL, liar)
        dht = asker.service(KadDHT)
        response = await dht._ask(evil.peer_id, dht_pb2.Message(type=dht_pb2.Message.FIND_NODE, key=b"k"))
        assert response is not None and len(response.closerPeers) == 59
        learned = dht._learn(asker, response.closerPeers)
        assert fakes[0] not in learned and len(learned) == 20 and learned == fakes[1:21]
        assert not asker.peerstore.addrs(fakes[0])


async def test_get_corrects_close_peers_that_lost_the_value(autojump_clock: trio.testing.MockClock) -> None:
    async with _network(N) as hosts:
        writer, reader = hosts[1], hosts[-2]
        key = b"/pk/" + writer.peer_id.to_bytes()
        value = writer.identity.private_key.public_key.to_protobuf()
        await writer.service(KadDHT).put(key, value)
        holders = [h for h in hosts if await h.service(KadDHT)._get_record(key) is not None and h not in (writer, reader)]
        forgetful = holders[0]
        assert forgetful.service(KadDHT)._records.delete(key)  # as if it restarted without its store
        assert await reader.service(KadDHT).get(key, quorum=len(holders) + 5) == value
        assert await forgetful.service(KadDHT)._get_record(key) is not None


async def test_bootstrap_peers_fill_the_table(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    configs = [
        memory_config(network, security=[Plaintext()], muxers=[Yamux()], services=[Identify(), KadDHT(alpha=3)])
        for _ in range(6)
    ]
    async with contextlib.AsyncExitStack() as stack:
        hosts = [await stack.enter_async_context(open_host(c)) for c in configs]
        for i, host in enumerate(hosts[1:], 1):
            await host.connect(hosts[i - 1].peer_id, hosts[i - 1].listen_addrs)  # a line
        seed = f"{hosts[0].listen_addrs[0]}/p2p/{hosts[0].peer_id}"
        newcomer = await stack.enter_async_context(
            open_host(
                memory_config(
                    network, security=[Plaintext()], muxers=[Yamux()], services=[Identify(), KadDHT(bootstrap=[seed])]
                )
            )
        )
        dht = newcomer.service(KadDHT)
        assert await dht.bootstrap() == 1  # again, explicitly (run() started one too)
        assert len(dht.routing_table) >= 5
        health = dht.health()
        assert health.size == len(dht.routing_table) == sum(health.buckets) >= 5
        assert health.connected >= 1 and health.since_self_lookup is not None
        assert health.overdue_refreshes == 0
        assert not health.healthy  # 6 servers: fewer than k = 20
        autojump_clock.jump(601)  # past the 10-minute refresh interval, before the timer runs
        assert dht.health().overdue_refreshes >= 1
        await trio.testing.wait_all_tasks_blocked()
        assert dht.health().overdue_refreshes == 0
        assert await dht.find_peer(hosts[-1].peer_id)


async def test_a_table_left_empty_by_refused_bootstrap_dials_retries_every_two_minutes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from mycel.protocols.kad.service import FIX_LOW_PEERS_INTERVAL

    network = MemoryNetwork()

    def config(**kw: object) -> HostConfig:
        services = [Identify(), KadDHT(alpha=3, **kw)]  # type: ignore[arg-type]
        return memory_config(network, security=[Plaintext()], muxers=[Yamux()], services=services)

    async with contextlib.AsyncExitStack() as stack:
        hosts = [await stack.enter_async_context(open_host(config())) for _ in range(5)]
        for i, host in enumerate(hosts[1:], 1):
            await host.connect(hosts[i - 1].peer_id, hosts[i - 1].listen_addrs)
        seed_identity = Identity.generate()  # the bootstrap server is not up when the newcomer starts
        seed_addr = f"/memory/4242/p2p/{seed_identity.peer_id}"
        newcomer = await stack.enter_async_context(open_host(config(bootstrap=[seed_addr])))
        dht = newcomer.service(KadDHT)
        await trio.sleep(30)
        assert len(dht.routing_table) == 0 and dht.health().since_self_lookup is None
        seed_config = dataclasses.replace(config(), identity=seed_identity, listen=["/memory/4242"])
        seed = await stack.enter_async_context(open_host(seed_config))
        await seed.connect(hosts[0].peer_id, hosts[0].listen_addrs)
        await trio.sleep(FIX_LOW_PEERS_INTERVAL - 40)
        assert len(dht.routing_table) == 0  # nothing happens before the retry is due
        await trio.sleep(20)
        assert len(dht.routing_table) >= 5 and dht.health().since_self_lookup is not None
        assert await dht.find_peer(hosts[-1].peer_id)


async def test_a_server_keeps_its_records_across_restarts_in_sqlite(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "dht.sqlite"
    network = MemoryNetwork()
    key = b"/pk/" + Identity.from_seed(b"\x05" * 32).peer_id.to_bytes()
    value = Identity.from_seed(b"\x05" * 32).private_key.public_key.to_protobuf()
    for round_ in range(2):
        configs = [
            memory_config(network, security=[Plaintext()], muxers=[Yamux()], services=[Identify(), KadDHT(datastore=path)]),
            memory_config(network, security=[Plaintext()], muxers=[Yamux()], services=[Identify(), KadDHT()]),
        ]
        async with open_host(configs[0]) as server, open_host(configs[1]) as client:
            await client.connect(server.peer_id, server.listen_addrs)
            dht = client.service(KadDHT)
            with trio.fail_after(10):
                while not len(dht.routing_table):  # identify + check-before-add: woken as the table grows
                    await dht._grew.wait()
            if round_ == 0:
                assert await dht.put(key, value) == 1
            else:
                assert await dht.get(key) == value  # the new server process read it from the file


async def test_find_node_names_the_server_itself_and_its_connected_clients(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """FIND_NODE as go answers it: a server asked for itself names itself (go's check-before-add drops
    a server that answers nothing, so a go node that met a fresh mycel server first never admitted it),
    and a peer it is connected to but keeps in no table (a client) is added, so find_peer works through
    the server."""
    network = MemoryNetwork()

    def config(mode: Literal["server", "client"]) -> HostConfig:
        services = [Identify(), KadDHT(mode=mode)]
        return memory_config(network, security=[Plaintext()], muxers=[Yamux()], services=services)

    async with open_host(config("server")) as server, open_host(config("server")) as other, open_host(
        config("client")
    ) as client:
        await client.connect(server.peer_id, server.listen_addrs)
        await other.connect(server.peer_id, server.listen_addrs)
        await trio.sleep(5)  # identify and check-before-add (virtual time)
        dht = other.service(KadDHT)
        ask = Message(type=Message.FIND_NODE, key=server.peer_id.to_bytes())
        answer = await dht._ask(server.peer_id, ask)
        assert answer is not None and [e.id for e in answer.closerPeers] == [server.peer_id.to_bytes()]
        assert client.peer_id not in dht.routing_table.peers()
        addrs = await dht.find_peer(client.peer_id)
        assert {str(a) for a in client.listen_addrs} <= {str(a) for a in addrs}


async def test_a_response_flooded_from_one_ip_group_contributes_nothing(autojump_clock: trio.testing.MockClock) -> None:
    """go's filterPeersByIPDiversity on each response: 10 Sybils in one public /16 are all dropped, the
    peers from distinct groups kept. (Addresses only parsed, never dialed.)"""
    from multiaddr import Multiaddr

    from mycel.protocols.kad import dht_pb2

    async with _network(3) as hosts:
        dht = hosts[0].service(KadDHT)
        sybils = [Identity.from_seed(bytes([100 + i]) * 32).peer_id for i in range(10)]
        honest = [Identity.from_seed(bytes([200 + i]) * 32).peer_id for i in range(5)]
        entries = [
            dht_pb2.Message.Peer(id=p.to_bytes(), addrs=[Multiaddr(f"/ip4/8.8.{i}.1/tcp/4001").to_bytes()])
            for i, p in enumerate(sybils)
        ] + [
            dht_pb2.Message.Peer(id=p.to_bytes(), addrs=[Multiaddr(f"/ip4/{11 + i}.1.2.3/tcp/4001").to_bytes()])
            for i, p in enumerate(honest)
        ]
        assert dht._learn(hosts[0], entries) == honest
        loopback = [dht_pb2.Message.Peer(id=p.to_bytes(), addrs=[Multiaddr("/ip4/127.0.0.1/tcp/1").to_bytes()]) for p in sybils]
        assert dht._learn(hosts[0], loopback) == sybils  # private/loopback addresses are not grouped (LAN, tests)


async def test_provided_keys_are_republished_every_22_hours(autojump_clock: trio.testing.MockClock) -> None:
    async with _network(4) as hosts:
        provider, server = hosts[0], hosts[1]
        key = bytes.fromhex("1220") + bytes(range(7, 39))
        assert await provider.service(KadDHT).provide(key) >= 1
        held = server.service(KadDHT)._providers
        sent = provider.service(KadDHT).stats["requests_sent"]
        await trio.sleep(22 * 3600 + 60)  # virtual time: the republish timer fires once
        assert provider.service(KadDHT).stats["requests_sent"] > sent
        assert provider.service(KadDHT)._provided[key] >= 22 * 3600
        assert [r.provider for r in held.get(key, time.time())] == [provider.peer_id]


async def test_disjoint_path_lookups_find_the_closest_peers(autojump_clock: trio.testing.MockClock) -> None:
    async with _network(N) as hosts:
        dht = hosts[0].service(KadDHT)
        dht.disjoint_paths = 3
        key = b"disjoint"
        target = kad_key(key)
        truth = sorted((h.peer_id for h in hosts[1:]), key=lambda p: peer_key(p) ^ target)[:20]
        assert await dht.closest_peers(key) == truth
