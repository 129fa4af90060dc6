"""A 200-host DHT in one process (memory transport, plaintext + yamux, MockClock with autojump), every
table built by real bootstrap: FIND_NODE against the ground truth, PUT/GET and PROVIDE/FIND_PROVIDERS
with no churn and with 10 % of the servers silently gone (they accept kad streams and never answer),
for alpha = 3 and alpha = 10. The figures (requests and rounds per lookup) are
printed for the closing note; run with -s to see them (#11)."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from mycel.core.abc import MuxedStream
from mycel.protocols.kad.distance import kad_key, peer_key
from mycel.protocols.kad.service import PROTOCOL, KadDHT
from tests.integration.test_kad_hosts import _network

HOSTS = 200


async def _black_hole(stream: MuxedStream) -> None:
    await trio.sleep_forever()  # a server gone silent: the stream is accepted, nothing ever answers


@pytest.mark.parametrize("alpha", [3, 10])
async def test_200_host_dht(autojump_clock: trio.testing.MockClock, alpha: int, capsys: pytest.CaptureFixture[str]) -> None:
    # 2 s per request: a silent server costs 2 virtual seconds per request, so the whole test stays well
    # inside the tables' 10-minute refresh interval (at which all 200 tables would refresh at once)
    async with _network(HOSTS, alpha=alpha, request_timeout=2.0) as hosts:
        start = trio.current_time()
        rng = random.Random(11)
        dhts = [h.service(KadDHT) for h in hosts]
        exact = requests = rounds = 0
        for _ in range(100):
            key = rng.randbytes(32)
            target = kad_key(key)
            i = rng.randrange(HOSTS)
            truth = sorted((h.peer_id for h in hosts if h is not hosts[i]), key=lambda p: peer_key(p) ^ target)[:20]
            before, rounds_before = dhts[i].stats["requests_sent"], dhts[i].stats["lookup_rounds"]
            found = await dhts[i].closest_peers(key)
            requests += dhts[i].stats["requests_sent"] - before
            rounds += dhts[i].stats["lookup_rounds"] - rounds_before
            exact += found == truth
        assert exact >= 95, f"{exact}/100 lookups returned the true 20 closest"
        assert 1 <= rounds / 100 <= 10  # log2(200) ~ 8: a lookup converges in a few hops, never one request

        async def round_trip(n: int) -> tuple[int, int]:
            values = providers = 0
            for _ in range(n):
                writer, reader = rng.sample(hosts, 2)
                key = b"/pk/" + writer.peer_id.to_bytes()
                await writer.service(KadDHT).put(key, writer.identity.private_key.public_key.to_protobuf())
                values += await reader.service(KadDHT).get(key) is not None
                mh = bytes.fromhex("1220") + rng.randbytes(32)
                await writer.service(KadDHT).provide(mh)
                found = [r.peer async for r in reader.service(KadDHT).find_providers(mh, limit=1)]
                providers += found == [writer.peer_id]
            return values, providers

        ok_values, ok_providers = await round_trip(20)
        assert (ok_values, ok_providers) == (20, 20)
        silent = rng.sample(hosts, HOSTS // 10)
        for host in silent:
            host.set_stream_handler(PROTOCOL, _black_hole)
        alive = [h for h in hosts if h not in silent]
        hosts[:] = alive  # writers and readers are live hosts from here on
        churn_values, churn_providers = await round_trip(20)
        assert churn_values + churn_providers >= 39, "fewer than 99 % of operations succeeded with 10 % silent"
        elapsed = trio.current_time() - start
        with capsys.disabled():
            print(
                f"\n[kad {HOSTS} hosts, alpha={alpha}] FIND_NODE exact {exact}/100, {requests / 100:.1f} requests per"
                f" lookup, {rounds / 100:.1f} rounds; no churn: get {ok_values}/20, find_providers {ok_providers}/20; 10 % silent: get"
                f" {churn_values}/20, find_providers {churn_providers}/20; {elapsed:.0f} virtual s"
            )
