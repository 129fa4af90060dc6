"""The sans-IO mDNS core: what it announces, what it accepts, its schedule and its bounds (virtual time)."""

from __future__ import annotations

import logging
import random
import re

import pytest
from multiaddr import Multiaddr

from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.discovery.mdns import dns
from mycel.discovery.mdns.core import (
    SERVICE_NAME,
    MdnsConfig,
    MdnsCore,
    MdnsPeerDiscovered,
    MdnsPeerGone,
    Outgoing,
    eligible_addrs,
)
from mycel.discovery.mdns.dns import Message, Question, Record

SRC = ("10.1.0.9", 5353)


def _peer(seed: int) -> PeerId:
    return Identity.from_seed(bytes([seed]) * 32).peer_id


def _core(seed: int, addrs: list[str], **cfg: object) -> MdnsCore:
    core = MdnsCore(_peer(seed), random.Random(seed), MdnsConfig(**cfg))  # type: ignore[arg-type]
    core.set_addrs([Multiaddr(a) for a in addrs], 0.0)
    return core


def _responses(out: list[Outgoing]) -> list[Message]:
    return [m for m in (dns.decode(o.data) for o in out) if m.is_response]


def _txt_strings(msg: Message) -> list[bytes]:
    return [s for r in msg.records() if r.type == dns.TYPE_TXT and isinstance(r.data, tuple) for s in r.data]


def test_response_is_what_go_and_js_read() -> None:
    core = _core(1, ["/ip4/10.1.0.1/tcp/4001", "/ip4/10.1.0.1/udp/4001/quic-v1", "/ip6/fd00::1/tcp/4001"])
    assert re.fullmatch(r"[a-z0-9]{32,63}", core.peer_name)
    assert core.peer_name != str(core.peer_id)
    msg = dns.decode(core.response())
    assert msg.is_response and msg.flags & dns.FLAG_AUTHORITATIVE
    # the answer: one PTR to our instance
    assert [(r.name, r.type, r.data) for r in msg.answers] == [(SERVICE_NAME, dns.TYPE_PTR, core.instance_name)]
    # additionals: one TXT record with one dnsaddr string per address, SRV, A and AAAA
    txt = [r for r in msg.additionals if r.type == dns.TYPE_TXT]
    assert len(txt) == 1 and txt[0].name == core.instance_name and txt[0].ttl == 120
    assert list(txt[0].data) == [  # type: ignore[arg-type]
        f"dnsaddr=/ip4/10.1.0.1/tcp/4001/p2p/{core.peer_id}".encode(),
        f"dnsaddr=/ip4/10.1.0.1/udp/4001/quic-v1/p2p/{core.peer_id}".encode(),
        f"dnsaddr=/ip6/fd00::1/tcp/4001/p2p/{core.peer_id}".encode(),
    ]
    srv = [r for r in msg.additionals if r.type == dns.TYPE_SRV]
    assert srv and srv[0].data == dns.SRVData(0, 0, 4001, core.host_name)
    ips = {(r.name, r.type, str(r.data)) for r in msg.additionals if r.type in (dns.TYPE_A, dns.TYPE_AAAA)}
    assert ips == {(core.host_name, dns.TYPE_A, "10.1.0.1"), (core.host_name, dns.TYPE_AAAA, "fd00::1")}
    # the goodbye is the same with TTL 0
    core.start(0.0)
    bye = dns.decode(core.goodbye() or b"")
    assert all(r.ttl == 0 for r in bye.records()) and bye.answers[0].data == core.instance_name


def test_eligible_addresses() -> None:
    me = _peer(1)
    given = [
        "/ip4/10.0.0.1/tcp/1",
        "/ip4/127.0.0.1/tcp/1",
        "/ip4/10.0.0.1/tcp/2/ws",
        "/ip4/10.0.0.1/tcp/3/tls/ws",
        "/ip4/10.0.0.1/udp/4/quic-v1/webtransport",
        "/ip4/10.0.0.1/udp/5/webrtc-direct",
        f"/ip4/10.0.0.2/tcp/6/p2p/{_peer(2)}/p2p-circuit",
        "/ip6/fe80::1/tcp/7",
        "/ip6/::1/tcp/8",
        "/dns4/example.com/tcp/9",
        "/dns4/box.local/tcp/10",
        f"/ip4/10.0.0.1/udp/11/quic-v1/p2p/{me}",
        "/ip4/0.0.0.0/tcp/12",
    ]
    got = [str(a) for a in eligible_addrs([Multiaddr(a) for a in given])]
    assert got == ["/ip4/10.0.0.1/tcp/1", "/dns4/box.local/tcp/10", "/ip4/10.0.0.1/udp/11/quic-v1"]
    # loopback only when it is all there is
    only_lo = ["/ip4/127.0.0.1/tcp/1", "/ip6/::1/tcp/2", "/ip4/127.0.0.1/tcp/3/ws"]
    assert [str(a) for a in eligible_addrs([Multiaddr(a) for a in only_lo])] == only_lo[:2]


def test_many_addresses_fit_in_1500_bytes() -> None:
    addrs = [f"/ip4/10.{i // 250}.{i % 250}.1/udp/{4000 + i}/quic-v1" for i in range(100)]
    core = _core(1, addrs)
    data = core.response()
    assert 1300 < len(data) <= 1452  # IPv6 + UDP headers on top stay under 1500
    kept = _txt_strings(dns.decode(data))
    assert 10 < len(kept) < 100
    assert kept == [f"dnsaddr={a}/p2p/{core.peer_id}".encode() for a in addrs[: len(kept)]]  # the first ones
    # a smaller budget keeps fewer, an address too long for a TXT string (255 bytes) is skipped
    assert len(_core(1, addrs, max_packet=600).response()) <= 600
    long_addr = "/dns4/" + ".".join(["a" * 60] * 3) + ".local/tcp/1"
    assert _txt_strings(dns.decode(_core(1, [long_addr, "/ip4/10.0.0.1/tcp/1"]).response())) == [
        f"dnsaddr=/ip4/10.0.0.1/tcp/1/p2p/{_peer(1)}".encode()
    ]


def _exchange(cores: list[MdnsCore], now: float) -> None:
    """Deliver every multicast datagram to every core (its sender too, as IP_MULTICAST_LOOP does)."""
    for _ in range(10):
        pending = [(c, o) for c in cores for o in c.datagrams_to_send()]
        if not pending:
            return
        for i, (sender, out) in enumerate(pending):
            for c in cores:
                c.receive(out.data, (f"10.1.0.{cores.index(sender) + 1}", 5353), now)


def test_two_cores_find_each_other_and_goodbye_drops() -> None:
    a = _core(1, ["/ip4/10.1.0.1/tcp/4001", "/ip4/10.1.0.1/udp/4001/quic-v1"])
    b = _core(2, ["/ip4/10.1.0.2/tcp/4001"])
    a.start(0.0)
    a.handle_timer(0.0)
    b.start(0.0)
    b.handle_timer(0.0)
    _exchange([a, b], 0.0)
    ev_a, ev_b = a.events(), b.events()
    assert ev_a == [MdnsPeerDiscovered(b.peer_id, (Multiaddr("/ip4/10.1.0.2/tcp/4001"),), 120.0, "10.1.0.2")]
    assert [e.peer for e in ev_b] == [a.peer_id] and isinstance(ev_b[0], MdnsPeerDiscovered)
    assert [str(x) for x in ev_b[0].addrs] == ["/ip4/10.1.0.1/tcp/4001", "/ip4/10.1.0.1/udp/4001/quic-v1"]
    assert set(a.peers()) == {b.peer_id}  # never itself
    # the repeat announcement a second later refreshes without a new event
    for t in (1.0, 1.5):
        a.handle_timer(t)
        b.handle_timer(t)
        _exchange([a, b], t)
    assert a.events() == [] and b.events() == []
    # b leaves
    a.receive(b.goodbye() or b"", ("10.1.0.2", 5353), 2.0)
    assert a.events() == [MdnsPeerGone(b.peer_id, "goodbye")]
    assert a.peers() == {}


def test_query_schedule_follows_go_and_responses_are_rate_limited() -> None:
    core = _core(3, ["/ip4/10.1.0.3/tcp/1"])
    core.start(0.0)
    sent_at: list[float] = []
    now = 0.0
    while now < 600:
        core.handle_timer(now)
        for o in core.datagrams_to_send():
            if not dns.decode(o.data).is_response:
                sent_at.append(now)
        deadline = core.next_deadline()
        assert deadline is not None and deadline > now
        now = deadline
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:])]
    assert sent_at[0] == 0.0 and gaps[0] == pytest.approx(4.0)
    assert all(6.0 - 1e-9 <= g <= 60.0 for g in gaps[1:])  # x1.5..2.5 each step, capped at 60 s
    assert gaps[-1] == pytest.approx(60.0) and all(x <= y + 1e-9 for x, y in zip(gaps, gaps[1:]))
    # a burst of queries is answered once now and once a second later (RFC 6762 §6), not 20 times
    query = dns.encode(Message(questions=[Question(SERVICE_NAME, dns.TYPE_PTR)]))
    base = 1000.0
    core.handle_timer(base)
    core.datagrams_to_send()
    answered = 0
    for i in range(20):
        t = base + i * 0.05
        core.receive(query, SRC, t)
        core.handle_timer(t)
        answered += len(_responses(core.datagrams_to_send()))
    core.handle_timer(base + 2.0)
    answered += len(_responses(core.datagrams_to_send()))
    assert answered == 2


def test_unicast_meta_and_known_answer_queries() -> None:
    core = _core(4, ["/ip4/10.1.0.4/tcp/1"])
    core.start(0.0)
    core.handle_timer(0.0)
    core.datagrams_to_send()
    # a one-shot resolver (source port != 5353): unicast answer echoing id and question
    q = Message(id=77, questions=[Question(SERVICE_NAME, dns.TYPE_PTR)])
    core.receive(dns.encode(q), ("10.1.0.9", 40000), 5.0)
    [out] = core.datagrams_to_send()
    assert out.dest == ("10.1.0.9", 40000)
    msg = dns.decode(out.data)
    assert msg.id == 77 and msg.questions == q.questions and msg.answers[0].data == core.instance_name
    # QU bit: unicast to the asker
    core.receive(dns.encode(Message(questions=[Question(SERVICE_NAME, dns.TYPE_PTR, unicast_response=True)])), SRC, 6.0)
    assert [o.dest for o in core.datagrams_to_send()] == [SRC]
    # DNS-SD meta query
    core.receive(dns.encode(Message(questions=[Question("_services._dns-sd._udp.local", dns.TYPE_PTR)])), SRC, 7.0)
    [meta] = core.datagrams_to_send()
    assert dns.decode(meta.data).answers[0].data == SERVICE_NAME
    # direct TXT question for our instance is answered (at the rate limit)
    core.receive(dns.encode(Message(questions=[Question(core.instance_name, dns.TYPE_TXT)])), SRC, 8.0)
    core.handle_timer(8.0)
    assert len(_responses(core.datagrams_to_send())) == 1
    # the asker already knows our PTR with most of its TTL: no answer (RFC 6762 §7.1)
    known = Message(
        questions=[Question(SERVICE_NAME, dns.TYPE_PTR)],
        answers=[Record(SERVICE_NAME, dns.TYPE_PTR, 100, core.instance_name)],
    )
    core.receive(dns.encode(known), SRC, 20.0)
    core.handle_timer(20.0)
    assert _responses(core.datagrams_to_send()) == []
    # questions about other names: nothing
    core.receive(dns.encode(Message(questions=[Question("_http._tcp.local", dns.TYPE_PTR)])), SRC, 30.0)
    core.handle_timer(30.0)
    assert _responses(core.datagrams_to_send()) == []


def test_expiry_after_ttl_and_refresh_query_at_80_percent() -> None:
    a = _core(5, ["/ip4/10.1.0.5/tcp/1"])
    b = _core(6, ["/ip4/10.1.0.6/tcp/1"], ttl=20)
    a.start(0.0)
    a.handle_timer(0.0)
    a.datagrams_to_send()
    a.receive(b.response(), ("10.1.0.6", 5353), 0.5)
    assert [type(e) for e in a.events()] == [MdnsPeerDiscovered]
    # at 80 % of the 20 s TTL a asks again (before its own 4 s / growing schedule would)
    t = a.next_deadline()
    assert t is not None
    queries = []
    while t is not None and t < 16.6:
        a.handle_timer(t)
        queries += [t for o in a.datagrams_to_send() if not dns.decode(o.data).is_response]
        t = a.next_deadline()
    assert any(q == pytest.approx(16.5) for q in queries)
    # no answer: gone when the TTL runs out
    while t is not None and t <= 20.5:
        a.handle_timer(t)
        t = a.next_deadline()
    assert a.events() == [MdnsPeerGone(b.peer_id, "expired")]


def _fake_response(i: int, strings: list[bytes] | None = None, name: str | None = None) -> bytes:
    peer = _peer(i % 256) if i < 256 else Identity.from_seed(i.to_bytes(32, "big")).peer_id
    inst = f"{name or f'fake{i:040d}'}.{SERVICE_NAME}"
    txt = tuple(strings if strings is not None else [f"dnsaddr=/ip4/10.9.{i // 250}.{i % 250}/tcp/1/p2p/{peer}".encode()])
    return dns.encode(
        Message(
            flags=dns.FLAG_RESPONSE,
            answers=[Record(SERVICE_NAME, dns.TYPE_PTR, 120, inst)],
            additionals=[Record(inst, dns.TYPE_TXT, 4_000_000, txt)],
        )
    )


def test_a_thousand_fake_peers_are_bounded_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    a = _core(7, ["/ip4/10.1.0.7/tcp/1"], max_peers=100)
    a.start(0.0)
    a.receive(_core(8, ["/ip4/10.1.0.8/tcp/1"]).response(), ("10.1.0.8", 5353), 0.0)  # a real one first
    caplog.set_level(logging.INFO, logger="mycel.discovery.mdns")
    for i in range(1000, 2000):
        a.receive(_fake_response(i), ("10.1.0.66", 5353), 1.0 + i / 1000)
    assert len(a.peers()) == 100
    assert _peer(8) in a.peers()  # the flood did not push out the peer found before it
    assert a.stats.refused_peers == 901
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert 1 <= len(warnings) <= 5 and "10.1.0.66" in warnings[0].getMessage()  # rate-limited, with the source
    # TTLs are clamped: 4,000,000 s claimed, max_ttl kept
    a.handle_timer(1.0 + 4500 + 10)
    assert list(a.peers()) == []


def test_hostile_responses(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mycel.discovery.mdns")
    a = _core(9, ["/ip4/10.1.0.9/tcp/1"], max_addrs=4)
    a.start(0.0)
    me, other = a.peer_id, _peer(10)
    # garbage and an oversized datagram: counted and logged with the source, nothing raised
    a.receive(b"\xff" * 40, ("10.1.0.66", 5353), 0.0)
    a.receive(b"\0" * 9001, ("10.1.0.66", 5353), 0.0)
    assert a.stats.malformed == 2
    assert any("10.1.0.66" in r.getMessage() and "malformed" in r.getMessage() for r in caplog.records)
    # an announcement of our own id is ignored
    a.receive(_fake_response(0, [f"dnsaddr=/ip4/10.0.0.1/tcp/1/p2p/{me}".encode()]), SRC, 0.0)
    # bad multiaddrs, no /p2p, a second peer id inside one instance, other TXT keys: all skipped
    strings = [
        b"dnsaddr=/ip4/10.0.0.1/tcp/1/p2p/" + str(other).encode(),
        b"dnsaddr=/nonsense/1",
        b"dnsaddr=/ip4/10.0.0.2/tcp/2",
        b"dnsaddr=/ip4/10.0.0.3/tcp/3/p2p/" + str(_peer(11)).encode(),
        b"dnsaddr2=/ip4/10.0.0.4/tcp/4/p2p/" + str(other).encode(),
        b"\xff\xfe",
    ] + [f"dnsaddr=/ip4/10.0.1.{i}/tcp/1/p2p/{other}".encode() for i in range(10)]
    a.receive(_fake_response(1, strings), SRC, 0.0)
    [ev] = a.events()
    assert isinstance(ev, MdnsPeerDiscovered) and ev.peer == other
    assert [str(x) for x in ev.addrs] == ["/ip4/10.0.0.1/tcp/1", "/ip4/10.0.1.0/tcp/1", "/ip4/10.0.1.1/tcp/1", "/ip4/10.0.1.2/tcp/1"]
    assert a.stats.bad_addrs == 3
    # a response not from port 5353 (RFC 6762 §11): ignored
    a.receive(_fake_response(3), ("10.1.0.66", 40000), 0.0)
    assert a.events() == [] and a.stats.ignored == 1
    # a TXT without any dnsaddr for an instance: nothing found, nothing raised
    a.receive(_fake_response(2, [b"hello"]), SRC, 0.0)
    assert a.events() == []
