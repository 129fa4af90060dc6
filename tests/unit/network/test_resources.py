"""The resource manager's scopes alone (no I/O): limits per scope, release, refusals, allowlist, autoscale."""

from __future__ import annotations

import pytest
from multiaddr import Multiaddr

from mycel.core.abc import Direction
from mycel.core.errors import ConfigError, ResourceLimitExceeded
from mycel.core.identity import Identity
from mycel.network.resources import (
    UNLIMITED,
    holds_fd,
    MemoryBudget,
    RefusalReporter,
    ResourceLimits,
    ResourceManager,
    ScopeLimit,
    ScopeReserver,
)

IN, OUT = Direction.INBOUND, Direction.OUTBOUND
MiB, GiB = 1 << 20, 1 << 30
ADDR = Multiaddr("/ip4/192.168.1.5/tcp/4001")


def peer() -> object:
    return Identity.generate().peer_id


def limited(**scopes: dict[str, int]) -> ResourceManager:
    refused: list[ResourceLimitExceeded] = []
    mgr = ResourceManager(ResourceLimits.unlimited().override(**scopes), on_refused=refused.append)
    mgr.test_refused = refused  # type: ignore[attr-defined]
    return mgr


def all_zero(mgr: ResourceManager) -> bool:
    stats = mgr.stats()
    for name in ("system", "transient", "allowlisted_system", "allowlisted_transient"):
        if any(v for k, v in stats[name].items() if k != "limit"):
            return False
    return not stats["peers"] and all(not any(u.values()) for u in stats["protocols"].values())


# -- defaults --------------------------------------------------------------------------------------
def test_scaled_is_gos_base_plus_increase_per_gib() -> None:
    lim = ResourceLimits.scaled(memory=1 * GiB, fds=1000)
    # system: 64/128/128 conns + 64/128/128 per GiB; 1024/2048 streams + same; 128 MiB + 1 GiB per GiB
    assert (lim.system.conns_inbound, lim.system.conns_outbound, lim.system.conns) == (128, 256, 256)
    assert (lim.system.streams_inbound, lim.system.streams) == (2048, 4096)
    assert lim.system.memory == 128 * MiB + GiB
    assert lim.system.fds == 1000  # 100 % of the fds given, never below 256
    assert (lim.transient.conns_inbound, lim.transient.memory, lim.transient.fds) == (48, 160 * MiB, 250)
    assert (lim.peer.conns, lim.peer.streams_inbound, lim.peer.memory) == (8, 384, 192 * MiB)
    assert lim.peer.fds == 15  # 1/64 of 1000
    assert (lim.protocol_peer.streams_inbound, lim.protocol_peer.streams) == (68, 272)
    assert (lim.conn.conns, lim.conn.memory) == (1, 32 * MiB)
    assert lim.stream.memory == 16 * MiB


def test_below_128_mib_only_the_base() -> None:
    lim = ResourceLimits.scaled(memory=100 * MiB, fds=0)
    assert lim.system.conns_inbound == 64 and lim.system.memory == 128 * MiB and lim.system.fds == 256
    assert lim.transient.conns_inbound == 32 and lim.peer.streams_inbound == 256


def test_autoscale_uses_an_eighth_of_memory_and_half_the_fds() -> None:
    assert ResourceLimits.autoscale(memory=8 * GiB, fds=2000) == ResourceLimits.scaled(GiB, 1000)
    # and of this machine, when nothing is given: bigger than the base
    assert ResourceLimits.autoscale().system.memory >= 128 * MiB


def test_override_and_validation() -> None:
    lim = ResourceLimits.unlimited().override(peer={"streams_inbound": 3}, system=ScopeLimit(conns=5))
    assert lim.peer.streams_inbound == 3 and lim.peer.streams == UNLIMITED and lim.system.conns == 5
    with pytest.raises(ConfigError):
        lim.override(nosuch={"conns": 1})
    with pytest.raises(ConfigError):
        ScopeLimit(conns=-1)
    with pytest.raises(ConfigError):
        ResourceLimits(allowlist=("/dns/example.com",))
    with pytest.raises(ConfigError):
        ResourceLimits(peer="many")  # type: ignore[arg-type]


# -- connections ------------------------------------------------------------------------------------
def test_pending_connection_moves_from_transient_to_its_peer() -> None:
    mgr = limited()
    p = peer()
    cs = mgr.open_connection(IN, ADDR)
    assert mgr.transient.conns_inbound == 1 and mgr.system.conns_inbound == 1 and mgr.system.fds == 1
    assert mgr.stats()["connections"] == {
        "pending_inbound": 1, "pending_outbound": 0, "established_inbound": 0, "established_outbound": 0
    }
    cs.set_peer(p)  # type: ignore[arg-type]
    assert mgr.stats()["connections"]["pending_inbound"] == 0
    assert mgr.stats()["connections"]["established_inbound"] == 1
    assert mgr.transient.conns_inbound == 0 and mgr.transient.fds == 0
    assert mgr.system.conns_inbound == 1
    assert mgr.stats()["peers"][str(p)]["conns_inbound"] == 1
    cs.done()
    cs.done()  # idempotent
    assert all_zero(mgr)


def test_transient_limit_refuses_and_counts_and_charges_nothing() -> None:
    mgr = limited(transient={"conns_inbound": 2})
    a, b = mgr.open_connection(IN, ADDR), mgr.open_connection(IN, ADDR)
    with pytest.raises(ResourceLimitExceeded) as info:
        mgr.open_connection(IN, ADDR)
    assert (info.value.scope, info.value.resource) == ("transient", "conns_inbound")
    assert mgr.system.conns_inbound == 2  # the refused one left nothing behind
    assert mgr.stats()["refused"] == {"transient": {"conns_inbound": 1}}
    assert len(mgr.test_refused) == 1  # type: ignore[attr-defined]
    mgr.open_connection(OUT, ADDR).done()  # other direction: still fine
    a.set_peer(peer())  # type: ignore[arg-type]  # leaves the transient scope: room again
    mgr.open_connection(IN, ADDR).done()
    a.done()
    b.done()
    assert all_zero(mgr)


def test_established_connections_bounded_per_peer_and_in_total() -> None:
    mgr = limited(peer={"conns": 1}, system={"conns": 3})
    p = peer()
    first = mgr.open_connection(IN, ADDR)
    first.set_peer(p)  # type: ignore[arg-type]
    second = mgr.open_connection(OUT, ADDR)
    with pytest.raises(ResourceLimitExceeded) as info:
        second.set_peer(p)  # type: ignore[arg-type]
    assert (info.value.scope, info.value.resource, info.value.peer) == ("peer", "conns", p)
    second.done()
    others = [mgr.open_connection(IN, ADDR) for _ in range(2)]
    with pytest.raises(ResourceLimitExceeded) as info:
        mgr.open_connection(IN, ADDR)
    assert (info.value.scope, info.value.resource) == ("system", "conns")
    for cs in [first, *others]:
        cs.done()
    assert all_zero(mgr)
    assert mgr.stats()["refused_total"] == 2


def test_fd_limit() -> None:
    mgr = limited(system={"fds": 1})
    cs = mgr.open_connection(IN, ADDR, fd=True)
    with pytest.raises(ResourceLimitExceeded) as info:
        mgr.open_connection(IN, ADDR, fd=True)
    assert info.value.resource == "fds"
    mgr.open_connection(IN, Multiaddr("/ip4/1.2.3.4/udp/1/quic-v1"), fd=False).done()  # QUIC: no fd
    cs.done()
    assert all_zero(mgr)


# -- streams ----------------------------------------------------------------------------------------
def test_streams_limited_per_peer_and_released() -> None:
    mgr = limited(peer={"streams_inbound": 2})
    cs = mgr.open_connection(IN, ADDR)
    cs.set_peer(peer())  # type: ignore[arg-type]
    s1, s2 = cs.open_stream(IN), cs.open_stream(IN)
    with pytest.raises(ResourceLimitExceeded) as info:
        cs.open_stream(IN)
    assert (info.value.scope, info.value.resource) == ("peer", "streams_inbound")
    cs.open_stream(OUT).done()  # outbound has its own limit
    s1.done()
    s3 = cs.open_stream(IN)
    for s in (s2, s3):
        s.done()
    cs.done()
    assert all_zero(mgr)


def test_protocol_and_protocol_peer_scopes() -> None:
    mgr = limited(protocol_peer={"streams_inbound": 1}, protocol={"streams_inbound": 2})
    conns = []
    for _ in range(3):
        cs = mgr.open_connection(IN, ADDR)
        cs.set_peer(peer())  # type: ignore[arg-type]
        conns.append(cs)
    s = conns[0].open_stream(IN)
    s.set_protocol("/echo")
    assert mgr.transient.streams_inbound == 0  # negotiated: out of the transient scope
    assert mgr.stats()["protocols"]["/echo"]["streams_inbound"] == 1
    extra = conns[0].open_stream(IN)
    with pytest.raises(ResourceLimitExceeded) as info:
        extra.set_protocol("/echo")  # the same peer: protocol-peer limit
    assert (info.value.scope, info.value.resource) == ("protocol-peer:/echo", "streams_inbound")
    extra.done()
    other = conns[1].open_stream(IN)
    other.set_protocol("/echo")
    third = conns[2].open_stream(IN)
    with pytest.raises(ResourceLimitExceeded) as info:
        third.set_protocol("/echo")  # the protocol overall
    assert info.value.scope == "protocol:/echo"
    third.set_protocol("/ping")  # another protocol is fine
    third.set_service("ping")
    assert mgr.stats()["services"]["ping"]["streams_inbound"] == 1
    for x in (s, other, third):
        x.done()
    for cs in conns:
        cs.done()
    assert all_zero(mgr)
    assert mgr.stats()["refused"] == {"protocol-peer:/echo": {"streams_inbound": 1}, "protocol:/echo": {"streams_inbound": 1}}


class FakeStream:
    def __init__(self) -> None:
        self._closed = False
        self._reset = False


def test_outbound_streams_released_lazily_when_finished() -> None:
    mgr = limited(peer={"streams_outbound": 2})
    cs = mgr.open_connection(OUT, ADDR)
    cs.set_peer(peer())  # type: ignore[arg-type]
    streams = []
    for _ in range(2):
        st = FakeStream()
        cs.track_outbound(st, cs.open_stream(OUT))
        streams.append(st)
    with pytest.raises(ResourceLimitExceeded):
        cs.open_stream(OUT)
    streams[0]._closed = True  # the user closed it: the next open finds room
    cs.track_outbound(FakeStream(), cs.open_stream(OUT))
    streams[1]._reset = True
    assert mgr.prune_streams() == 1
    cs.done()  # releases the still-open one with the connection
    assert all_zero(mgr)


# -- memory -----------------------------------------------------------------------------------------
def test_memory_reserved_per_connection_and_released() -> None:
    mgr = limited(conn={"memory": 1000}, system={"memory": 1500})
    a, b = mgr.open_connection(IN, ADDR), mgr.open_connection(IN, ADDR)
    a.memory.reserve(800)
    with pytest.raises(ResourceLimitExceeded) as info:
        a.memory.reserve(300)  # over this connection's own limit
    assert info.value.scope == "conn"
    with pytest.raises(ResourceLimitExceeded) as info:
        b.memory.reserve(800)  # over the system's
    assert info.value.scope == "system"
    a.set_peer(peer())  # type: ignore[arg-type]  # the reservation moves with it
    assert mgr.transient.memory == 0 and mgr.system.memory == 800
    a.memory.release(800)
    b.memory.reserve(800)
    a.done()
    b.done()  # releases what it still held
    assert all_zero(mgr) and mgr.system.memory == 0


def test_service_scope_and_chunked_budget() -> None:
    mgr = limited(service={"memory": 1 * MiB})
    p = peer()
    scope = mgr.service_scope("gossipsub", p)  # type: ignore[arg-type]
    budget = MemoryBudget(scope, chunk=64 * 1024)
    for _ in range(100):
        assert budget.grow(100)
    assert scope.reserved == 64 * 1024  # one chunk covered 100 small grows
    assert budget.grow(900_000)
    assert not budget.grow(200_000)  # over the service's MiB: refused, nothing accounted
    assert mgr.stats()["refused"] == {"service:gossipsub": {"memory": 1}}
    budget.shrink(900_000)
    assert scope.reserved <= 2 * 64 * 1024
    scope.close()
    assert mgr.system.memory == 0 and mgr.stats()["services"]["gossipsub"]["memory"] == 0


# -- allowlist ----------------------------------------------------------------------------------------
def test_allowlisted_addresses_use_their_own_scopes_when_the_ordinary_ones_are_full() -> None:
    lim = ResourceLimits.unlimited().override(system={"conns_inbound": 1}, allowlisted_system={"conns_inbound": 2})
    trusted = peer()
    lim = ResourceLimits(**{**lim.__dict__, "allowlist": ("/ip4/10.0.0.0/ipcidr/8", str(trusted))})
    mgr = ResourceManager(lim)
    first = mgr.open_connection(IN, Multiaddr("/ip4/192.168.1.1/tcp/1"))
    with pytest.raises(ResourceLimitExceeded):
        mgr.open_connection(IN, Multiaddr("/ip4/192.168.1.2/tcp/1"))
    ok = mgr.open_connection(IN, Multiaddr("/ip4/10.1.2.3/tcp/1"))
    assert ok.allowlisted and mgr.allowlisted_system.conns_inbound == 1
    ok.done()
    first.done()
    assert all_zero(mgr)


def test_allowlisted_peer_not_held_to_the_per_peer_connection_limit() -> None:
    trusted, stranger = peer(), peer()
    lim = ResourceLimits(peer=ScopeLimit(conns=1), allowlist=(trusted,))  # type: ignore[arg-type]
    mgr = ResourceManager(lim)
    conns = []
    for _ in range(3):
        cs = mgr.open_connection(IN, ADDR)
        cs.set_peer(trusted)  # type: ignore[arg-type]
        conns.append(cs)
    s1 = mgr.open_connection(IN, ADDR)
    s1.set_peer(stranger)  # type: ignore[arg-type]
    s2 = mgr.open_connection(IN, ADDR)
    with pytest.raises(ResourceLimitExceeded):
        s2.set_peer(stranger)  # type: ignore[arg-type]
    for cs in [*conns, s1, s2]:
        cs.done()
    assert all_zero(mgr)


def test_refusal_reports_are_rate_limited() -> None:
    rep = RefusalReporter(interval=10.0)
    assert rep.due("peer", "streams_inbound", 0.0)
    assert not rep.due("peer", "streams_inbound", 5.0)
    assert rep.due("system", "conns", 5.0)  # another kind: reported
    assert rep.due("peer", "streams_inbound", 10.0)


def test_scope_reserver_answers_like_a_muxer_budget() -> None:
    mgr = limited(peer={"memory": 1000})
    cs = mgr.open_connection(IN, ADDR)
    cs.set_peer(peer())  # type: ignore[arg-type]
    reserver = ScopeReserver(cs.memory)
    assert reserver.reserve(600) and reserver.reserve(0)
    assert not reserver.reserve(600)  # over the peer's limit: False, counted, nothing taken
    assert mgr.stats()["refused"] == {"peer": {"memory": 1}}
    reserver.release(600)
    assert reserver.reserve(1000)
    cs.done()
    assert all_zero(mgr) and mgr.system.memory == 0


@pytest.mark.parametrize(
    ("addr", "fd"),
    [
        ("/ip4/127.0.0.1/tcp/41474", True),  # (a port whose bytes look like the circuit code)
        ("/ip6/::1/tcp/1", True),
        ("/ip4/1.2.3.4/tcp/1/ws", True),
        ("/dns4/example.com/tcp/1", True),
        ("/ip4/1.2.3.4/udp/1/quic-v1", False),
        ("/ip6/::1/udp/1/quic-v1", False),
        ("/memory/3", False),
        ("/ip4/1.2.3.4/tcp/1/p2p/12D3KooWHLW6xqb5Yweiv73mKQWdFZ1YDHGkfPmCs4CUpFkvnSqf/p2p-circuit", False),
    ],
)
def test_which_connections_hold_a_file_descriptor(addr: str, fd: bool) -> None:
    assert holds_fd(Multiaddr(addr)) is fd


def test_finished_outbound_streams_do_not_pile_up_without_limits() -> None:
    """With no limit ever reached, the streams a connection tracks are still pruned as it goes."""
    mgr = limited()
    cs = mgr.open_connection(OUT, ADDR)
    cs.set_peer(peer())  # type: ignore[arg-type]
    live = []
    for i in range(10_000):
        st = FakeStream()
        cs.track_outbound(st, cs.open_stream(OUT))
        if i % 100 == 0:
            live.append(st)  # a few stay open
        else:
            st._closed = True
        assert len(cs._outbound) <= max(64, 2 * (len(live) + 64))
    assert mgr.prune_streams() >= 0
    assert mgr.system.streams_outbound == len(live)
    cs.done()
    assert all_zero(mgr)


def test_limits_and_a_host_config_holding_them_stay_hashable() -> None:
    from mycel import HostConfig

    lim = ResourceLimits.autoscale().override(peer={"conns": 2})
    assert hash(lim) == hash(ResourceLimits.autoscale().override(peer={"conns": 2}))
    hash(HostConfig(resources=lim))
