"""Structure-aware fuzzing of the DHT server path: valid ``Message`` protobufs with hostile fields (unknown
types, huge or empty keys, records whose key is not the message key, oversized values, garbage peer
entries) go through ``KadDHT._answer`` of a running host. Nothing may escape but the typed errors the
stream handler turns into "close this stream", nothing invalid may be stored, and the tables stay
bounded. The count of requests that got past decoding into a handler is asserted (#11)."""

from __future__ import annotations

import time

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycel.core.errors import DecodeError, MycelError
from mycel.core.identity import Identity
from mycel.protocols.identify import Identify
from mycel.protocols.kad import dht_pb2
from mycel.protocols.kad.records import InvalidRecord
from mycel.protocols.kad.service import KadDHT
from mycel.testing.hosts import memory_hosts

M = dht_pb2.Message
SENDER = Identity.from_seed(b"\x09" * 32).peer_id

keys = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=70, max_size=2000),
    st.just(b"/pk/" + SENDER.to_bytes()),
    st.builds(lambda b: b"/ipns/" + b, st.binary(max_size=40)),
    st.just(bytes.fromhex("1220") + bytes(32)),
)
peers = st.builds(
    lambda pid, addrs: M.Peer(id=pid, addrs=addrs),
    st.one_of(st.binary(max_size=50), st.just(SENDER.to_bytes())),
    st.lists(st.binary(max_size=40), max_size=5),
)
messages = st.builds(
    lambda t, key, rkey, value, with_record, provs, closer: _message(t, key, rkey, value, with_record, provs, closer),
    st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5]), st.integers(min_value=6, max_value=2**31 - 1)),
    keys,
    keys,
    st.one_of(st.binary(max_size=200), st.binary(min_size=70_000, max_size=70_100)),
    st.booleans(),
    st.lists(peers, max_size=4),
    st.lists(peers, max_size=4),
)


def _message(t: int, key: bytes, rkey: bytes, value: bytes, with_record: bool, provs: list[M.Peer], closer: list[M.Peer]) -> M:
    msg = M(type=t, key=key)  # type: ignore[arg-type]
    if with_record:
        msg.record.CopyFrom(dht_pb2.Record(key=rkey if rkey else key, value=value))
    msg.providerPeers.extend(provs)
    msg.closerPeers.extend(closer)
    return msg


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=8))
async def test_hostile_requests_to_the_server(batch: list[M]) -> None:
    async with memory_hosts(1, services=lambda: [Identify(), KadDHT(diversity=False)]) as (host,):
        dht = host.service(KadDHT)
        handled = refused = 0
        for msg in batch:
            wire = M.FromString(msg.SerializeToString())  # what a peer can actually send
            try:
                response = await dht._answer(host, SENDER, wire)
            except (InvalidRecord, DecodeError, MycelError):
                refused += 1
                continue
            handled += 1
            if response is not None:
                assert len(response.closerPeers) <= dht.k
                assert len(response.SerializeToString()) < 4 * 1024 * 1024
        assert handled + refused == len(batch)
        for rec in dht._records.iterate(time.time()):  # only valid records were stored
            assert rec.key.startswith((b"/pk/", b"/ipns/"))
        assert len(dht._providers) <= 4 * len(batch)
        _COUNTS["handled"] += handled
        _COUNTS["refused"] += refused


_COUNTS = {"handled": 0, "refused": 0}


def test_the_fuzzer_reached_the_handlers() -> None:
    # runs after the fuzz test in file order: most inputs must get past decoding into a handler
    assert _COUNTS["handled"] >= 50, _COUNTS  # one run: 90 of 250 handled, 160 refused (unknown types, bad records)
    assert _COUNTS["refused"] > 10, _COUNTS
