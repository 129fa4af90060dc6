"""Regression tests for what the structure-aware fuzz found in decoders (each red before its fix)."""

from __future__ import annotations

import random

from mycel.core.identity import Identity
from mycel.protocols.pubsub import rpc_pb2
from mycel.protocols.pubsub.config import GOSSIPSUB_V11, GossipsubConfig
from mycel.protocols.pubsub.core import GossipsubRouter

from fuzz.services import _Out


def test_gossipsub_subscription_to_a_topic_that_is_not_utf8_is_refused() -> None:
    """A proto2 ``string`` that is not UTF-8 comes back from the parser as bytes: such a subscription
    put a bytes topic into the router's tables (where every topic is a str, and events and scores
    take them as such). It is refused and counted like any other refused subscription."""
    router = GossipsubRouter(GossipsubConfig(), Identity.from_seed(b"\x01" * 32).peer_id, _Out(), random.Random(1), 0.0)
    peer = Identity.from_seed(b"\x02" * 32).peer_id
    router.add_peer(peer, GOSSIPSUB_V11, outbound=False, now=0.0)
    # RPC{subscriptions: [SubOpts{subscribe: true, topicid: ff fe}, SubOpts{subscribe: true, topicid: "ok"}]}
    raw = b"\x0a\x06\x08\x01\x12\x02\xff\xfe" + b"\x0a\x06\x08\x01\x12\x02ok"
    rpc = rpc_pb2.RPC.FromString(raw)
    assert isinstance(rpc.subscriptions[0].topicid, bytes)  # what the parser hands back
    before = router.counters["subscriptions_refused"]
    router.handle_rpc(peer, rpc, 0.0)
    assert set(router.topics) == {"ok"}
    assert router.peers[peer].topics == {"ok"}
    assert router.counters["subscriptions_refused"] == before + 1
