"""A peer's outgoing gossipsub queue reserves host memory (#12): bytes queued are charged to the service's
scope and the peer's service scope before they are queued, a message the scopes refuse is dropped like one
over the count (and the refusal counted), and written messages and a closed queue give everything back."""

from __future__ import annotations

from mycel.core.identity import Identity
from mycel.network.resources import ResourceLimits, ResourceManager, ScopeLimit
from mycel.protocols.pubsub import rpc_pb2
from mycel.protocols.pubsub.service import QUEUE_MEMORY_CHUNK, _PeerQueue

KiB = 1024


def _manager(per_peer: int) -> ResourceManager:
    return ResourceManager(ResourceLimits.unlimited().override(service_peer=ScopeLimit(memory=per_peer)))


def test_a_queue_is_bounded_by_the_peers_service_memory_and_gives_it_back() -> None:
    mgr = _manager(512 * KiB)
    peer = Identity.generate().peer_id
    queue = _PeerQueue(1024, mgr.service_scope("Gossipsub", peer))
    raw = b"m" * (20 * KiB)
    accepted = sum(queue.put_message(i.to_bytes(4, "big"), raw) for i in range(100))
    # the count (1024) never binds: 512 KiB of 20 KiB messages does
    assert accepted == 512 // 20 and queue.dropped == 100 - accepted
    assert mgr.refusals[("service-peer:Gossipsub", "memory")] >= 1
    stats = mgr.stats()["services"]["Gossipsub"]
    assert accepted * len(raw) <= stats["memory"] <= 512 * KiB
    # a control RPC is charged by its encoded size; one that does not fit is dropped too
    rpc = rpc_pb2.RPC(control=rpc_pb2.ControlMessage(ihave=[rpc_pb2.ControlIHave(topicID="t", messageIDs=[b"x" * 40] * 500)]))
    assert not queue.put_control(rpc) and queue.dropped == 100 - accepted + 1
    # the writer takes messages: their bytes go back (whole chunks; less than two spare ones kept)
    while queue.messages:
        _, taken = queue.messages.popleft()
        queue.took_message(taken)
    assert mgr.stats()["services"]["Gossipsub"]["memory"] < 2 * QUEUE_MEMORY_CHUNK
    assert queue.put_control(rpc)
    queue.control.popleft()
    queue.drained_control()
    assert queue.control_bytes == 0
    queue.close()
    queue.close()  # idempotent
    assert mgr.stats()["services"]["Gossipsub"]["memory"] == 0


def test_a_queue_without_a_scope_is_bounded_by_count_alone() -> None:
    queue = _PeerQueue(3)
    assert [queue.put_message(bytes([i]), b"x" * 100_000) for i in range(5)] == [True, True, True, False, False]
    queue.took_message(b"x")
    queue.drained_control()
    queue.close()
