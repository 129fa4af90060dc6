"""``/dnsaddr`` resolution: the sans-IO walk (TXT parsing, suffix filter, nesting, loops, bounds) alone, then
the dnspython driver against a DNS server this test runs on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trio
from multiaddr import Multiaddr

from mycel.discovery.dnsaddr import (
    MAX_DEPTH,
    DnsaddrError,
    DnsaddrResolver,
    DnsaddrWalk,
    ends_with,
    is_dnsaddr,
    parse_nameserver,
    parse_txt,
    split_dnsaddr,
    txt_name,
)

A = "QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN"
B = "QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa"


class LocalDns:
    """A tiny UDP DNS server (dnspython's message API) for tests: answers TXT queries from :attr:`zone`
    (``{name: [txt string, ...]}``, a string holding ``" "``-separated quoted parts for a split record),
    NXDOMAIN otherwise; ``silent`` makes it drop every query. Counts the queries it saw by name."""

    def __init__(self, zone: dict[str, list[str]] | None = None) -> None:
        self.zone: dict[str, list[str]] = zone if zone is not None else {}
        self.queries: dict[str, int] = {}
        self.silent = False
        self.mode = "answer"
        """``"answer"``, ``"garbage"`` (bytes that are no DNS message) or ``"truncated"`` (TC set: go to TCP)."""
        self.port = 0

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            task_status.started()
            while True:
                data, peer = await sock.recvfrom(4096)
                query = dns.message.from_wire(data)
                question = query.question[0]
                name = question.name.to_text(omit_final_dot=True)
                self.queries[name] = self.queries.get(name, 0) + 1
                if self.silent:
                    continue
                if self.mode == "garbage":
                    await sock.sendto(data[:2] + b"\xff" * 40, peer)
                    continue
                response = dns.message.make_response(query)
                if self.mode == "truncated":
                    response.flags |= dns.flags.TC
                    await sock.sendto(response.to_wire(), peer)
                    continue
                records = self.zone.get(name)
                if records is None or question.rdtype != dns.rdatatype.TXT:
                    response.set_rcode(dns.rcode.NXDOMAIN)
                else:
                    texts = [r if r.startswith('"') else f'"{r}"' for r in records]
                    response.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", "TXT", texts))
                await sock.sendto(response.to_wire(), peer)


@contextlib.asynccontextmanager
async def local_dns(zone: dict[str, list[str]] | None = None) -> AsyncIterator[LocalDns]:
    """A :class:`LocalDns` serving on 127.0.0.1 for the block."""
    server = LocalDns(zone)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


def _walk_with(walk: DnsaddrWalk, zone: dict[str, list[bytes]]) -> list[str]:
    """Drive ``walk`` against an in-memory zone; returns the names asked, in order."""
    asked = []
    while (name := walk.next_lookup()) is not None:
        asked.append(name)
        if name in zone:
            walk.answer(name, zone[name])
        else:
            walk.failed(name, "NXDOMAIN")
    assert walk.done
    return asked


# --- sans-IO ------------------------------------------------------------------------------------------


def test_parse_txt_keeps_dnsaddr_records_and_counts_broken_ones() -> None:
    addrs, bad = parse_txt(
        [
            f"dnsaddr=/ip4/1.2.3.4/tcp/4001/p2p/{A}".encode(),
            b"v=spf1 -all",  # someone else's record: ignored, not bad
            b"dnsaddr=/ip4/not-an-ip/tcp/1",  # bad
            (b"dnsaddr=/ip4/5.6.7.8", b"/tcp/4001"),  # one record split in character-strings
            b"dnsaddr=/ip4/1.1.1.1/tcp/1\xff",  # not ascii: bad
            b"dnsaddr=/ip4/1.1.1.1/tcp/1/" + b"x" * 2000,  # oversized: bad
        ]
    )
    assert [str(a) for a in addrs] == [f"/ip4/1.2.3.4/tcp/4001/p2p/{A}", "/ip4/5.6.7.8/tcp/4001"]
    assert bad == 3


def test_split_and_suffix() -> None:
    addr = Multiaddr(f"/dnsaddr/Example.com./p2p/{A}")
    assert is_dnsaddr(addr) and not is_dnsaddr(Multiaddr("/ip4/1.2.3.4/tcp/1"))
    domain, suffix = split_dnsaddr(addr)
    assert domain == "Example.com" and str(suffix) == f"/p2p/{A}"
    assert split_dnsaddr(Multiaddr("/dnsaddr/example.com")) == ("example.com", None)
    assert txt_name("example.com.") == "_dnsaddr.example.com"
    assert ends_with(Multiaddr(f"/ip4/1.2.3.4/tcp/1/p2p/{A}"), suffix)
    assert not ends_with(Multiaddr(f"/ip4/1.2.3.4/tcp/1/p2p/{B}"), suffix)
    assert not ends_with(Multiaddr("/ip4/1.2.3.4/tcp/1"), suffix)
    assert ends_with(Multiaddr("/ip4/1.2.3.4/tcp/1"), None)
    with pytest.raises(ValueError):
        split_dnsaddr(Multiaddr("/ip4/1.2.3.4/tcp/1"))


def test_walk_filters_by_peer_and_follows_nesting() -> None:
    zone = {
        "_dnsaddr.boot.test": [
            f"dnsaddr=/dnsaddr/a.boot.test/p2p/{A}".encode(),
            f"dnsaddr=/dnsaddr/b.boot.test/p2p/{B}".encode(),
        ],
        "_dnsaddr.a.boot.test": [
            f"dnsaddr=/ip4/10.0.0.1/tcp/4001/p2p/{A}".encode(),
            f"dnsaddr=/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{A}".encode(),
            f"dnsaddr=/ip4/10.0.0.9/tcp/4001/p2p/{B}".encode(),  # the wrong peer under a's name: filtered
        ],
        "_dnsaddr.b.boot.test": [f"dnsaddr=/ip4/10.0.0.2/tcp/4001/p2p/{B}".encode()],
    }
    walk = DnsaddrWalk(f"/dnsaddr/boot.test/p2p/{A}")
    asked = _walk_with(walk, zone)
    assert asked == ["_dnsaddr.boot.test", "_dnsaddr.a.boot.test"]  # b's branch is never asked
    assert [str(a) for a in walk.results] == [
        f"/ip4/10.0.0.1/tcp/4001/p2p/{A}",
        f"/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{A}",
    ]
    assert walk.dropped == 2  # b's nested record and the foreign address

    everyone = DnsaddrWalk("/dnsaddr/boot.test")  # no suffix: every peer (each nested name filters by its own)
    _walk_with(everyone, zone)
    assert {str(a) for a in everyone.results} == {
        f"/ip4/10.0.0.1/tcp/4001/p2p/{A}",
        f"/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{A}",
        f"/ip4/10.0.0.2/tcp/4001/p2p/{B}",
    }


def test_walk_ends_loops_and_asks_each_domain_once() -> None:
    zone = {
        "_dnsaddr.x.test": [b"dnsaddr=/dnsaddr/y.test", b"dnsaddr=/ip4/10.0.0.1/tcp/1"],
        "_dnsaddr.y.test": [b"dnsaddr=/dnsaddr/x.test", b"dnsaddr=/dnsaddr/X.test", b"dnsaddr=/ip4/10.0.0.1/tcp/1"],
    }
    walk = DnsaddrWalk("/dnsaddr/x.test")
    assert _walk_with(walk, zone) == ["_dnsaddr.x.test", "_dnsaddr.y.test"]
    assert [str(a) for a in walk.results] == ["/ip4/10.0.0.1/tcp/1"]  # the duplicate once


def test_walk_bounds_depth_lookups_and_results() -> None:
    chain = {f"_dnsaddr.d{i}.test": [f"dnsaddr=/dnsaddr/d{i + 1}.test".encode()] for i in range(50)}
    deep = DnsaddrWalk("/dnsaddr/d0.test")
    assert len(_walk_with(deep, chain)) == MAX_DEPTH + 1  # d0 .. d8; d9 is one level too deep
    assert deep.results == [] and deep.dropped == 1

    wide = {"_dnsaddr.w.test": [f"dnsaddr=/dnsaddr/w{i}.test".encode() for i in range(100)]}
    walk = DnsaddrWalk("/dnsaddr/w.test", max_lookups=10)
    assert len(_walk_with(walk, wide)) == 10
    assert walk.dropped == 91  # 100 nested names, 9 asked

    many = {"_dnsaddr.m.test": [f"dnsaddr=/ip4/10.0.{i // 256}.{i % 256}/tcp/1".encode() for i in range(500)]}
    flood = DnsaddrWalk("/dnsaddr/m.test", max_results=100)
    _walk_with(flood, many)
    assert len(flood.results) == 100 and flood.dropped == 400


def test_walk_of_a_plain_address_asks_nothing() -> None:
    walk = DnsaddrWalk(f"/ip4/1.2.3.4/tcp/1/p2p/{A}")
    assert walk.next_lookup() is None and walk.done
    assert [str(a) for a in walk.results] == [f"/ip4/1.2.3.4/tcp/1/p2p/{A}"]


def test_parse_nameserver() -> None:
    assert parse_nameserver("127.0.0.1") == ("127.0.0.1", 53)
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("::1") == ("::1", 53)
    assert parse_nameserver("[::1]:5353") == ("::1", 5353)
    for bad in ("localhost", "127.0.0.1:0", "127.0.0.1:x", "[::1", "1.2.3.4:99999"):
        with pytest.raises(ValueError):
            parse_nameserver(bad)


# --- the driver, against a DNS server on 127.0.0.1 --------------------------------------------------------


async def test_resolve_nested_records_from_a_local_server() -> None:
    zone = {
        "_dnsaddr.boot.test": [f"dnsaddr=/dnsaddr/a.boot.test/p2p/{A}", f"dnsaddr=/dnsaddr/b.boot.test/p2p/{B}", "junk"],
        "_dnsaddr.a.boot.test": [
            f"dnsaddr=/ip4/10.0.0.1/tcp/4001/p2p/{A}",
            f'"dnsaddr=/ip6/fd00::1/tcp/4001" "/p2p/{A}"',  # split in two character-strings
        ],
        "_dnsaddr.b.boot.test": [f"dnsaddr=/ip4/10.0.0.2/tcp/4001/p2p/{B}"],
    }
    async with local_dns(zone) as server:
        resolver = DnsaddrResolver([server.nameserver], timeout=5)
        with trio.fail_after(10):
            found = await resolver.resolve(f"/dnsaddr/boot.test/p2p/{A}")
            plain = await resolver.resolve("/ip4/1.2.3.4/tcp/1")
    assert {str(a) for a in found} == {f"/ip4/10.0.0.1/tcp/4001/p2p/{A}", f"/ip6/fd00::1/tcp/4001/p2p/{A}"}
    assert server.queries == {"_dnsaddr.boot.test": 1, "_dnsaddr.a.boot.test": 1}
    assert [str(a) for a in plain] == ["/ip4/1.2.3.4/tcp/1"]


async def test_a_loop_in_dns_ends() -> None:
    zone = {
        "_dnsaddr.x.test": ["dnsaddr=/dnsaddr/y.test"],
        "_dnsaddr.y.test": ["dnsaddr=/dnsaddr/x.test", "dnsaddr=/ip4/10.0.0.1/tcp/1"],
    }
    async with local_dns(zone) as server:
        with trio.fail_after(10):
            found = await DnsaddrResolver([server.nameserver]).resolve("/dnsaddr/x.test")
    assert [str(a) for a in found] == ["/ip4/10.0.0.1/tcp/1"]
    assert server.queries == {"_dnsaddr.x.test": 1, "_dnsaddr.y.test": 1}


async def test_missing_name_and_silent_server_are_typed_errors() -> None:
    async with local_dns({}) as server:
        resolver = DnsaddrResolver([server.nameserver], timeout=0.3)
        with trio.fail_after(10), pytest.raises(DnsaddrError, match="resolved to no address"):
            await resolver.resolve("/dnsaddr/nowhere.test")
        server.silent = True
        start = trio.current_time()
        with trio.fail_after(10), pytest.raises(DnsaddrError, match="1 failed"):
            await resolver.resolve("/dnsaddr/slow.test")
        assert trio.current_time() - start < 3


async def test_hostile_answers_are_typed_errors() -> None:
    """A server answering junk, or truncated answers sending the resolver to a TCP port nobody serves."""
    async with local_dns({"_dnsaddr.x.test": ["dnsaddr=/ip4/10.0.0.1/tcp/1"]}) as server:
        resolver = DnsaddrResolver([server.nameserver], timeout=0.5)
        for mode in ("garbage", "truncated"):
            server.mode = mode
            with trio.fail_after(10), pytest.raises(DnsaddrError, match="1 failed"):
                await resolver.resolve("/dnsaddr/x.test")
        server.mode = "answer"  # and the resolver still works
        with trio.fail_after(10):
            assert [str(a) for a in await resolver.resolve("/dnsaddr/x.test")] == ["/ip4/10.0.0.1/tcp/1"]


async def test_cancelled_mid_lookup_returns_at_once() -> None:
    async with local_dns({}) as server:
        server.silent = True
        resolver = DnsaddrResolver([server.nameserver], timeout=30)
        start = trio.current_time()
        with trio.move_on_after(0.2) as scope:
            await resolver.resolve("/dnsaddr/slow.test")
        assert scope.cancelled_caught
        assert trio.current_time() - start < 1
        assert server.queries == {"_dnsaddr.slow.test": 1}
