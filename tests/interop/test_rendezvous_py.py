"""mycel's rendezvous against py-libp2p 0.8.1's (``interop/py/rendezvous_peer.py``), both ways, over TCP +
Noise + yamux on 127.0.0.1:

* mycel clients at a py rendezvous point: register (signed records are refused by py with
  E_NOT_AUTHORIZED, so ``py_libp2p_compat`` re-registers in py's unsigned PeerInfo form), discover (py's
  PeerInfo registrations read), page with py's cookies, unregister (py needs the deprecated id field);
* py clients at a mycel rendezvous point: register (py's PeerInfo taken only with compat; without it, the
  spec's E_INVALID_SIGNED_PEER_RECORD), discover (mycel's signed registrations handed to py as PeerInfo,
  because identify names the asker py-libp2p), unregister; py's 120 s TTL is below the spec's 2 h minimum.

The deviations are listed in ``mycel/protocols/rendezvous/__init__.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio

from interop.command_peer import CommandFailedMixin, CommandProcess, open_peer_program, ready_fields
from interop.mycel_side import mycel_config
from interop.peers import INTEROP_DIR, PeerError, Stack
from mycel.core.peer_id import PeerId
from mycel.host import Host, open_host
from mycel.protocols.identify import Identify
from mycel.protocols.ping import Ping
from mycel.protocols.rendezvous import Refused, Rendezvous, Status

pytestmark = [pytest.mark.interop, pytest.mark.slow]

PY_PROGRAM = (str(INTEROP_DIR / ".peers" / "py-venv" / "bin" / "python"), str(INTEROP_DIR / "py" / "rendezvous_peer.py"))
READY_TIMEOUT = 30.0
COMMAND_TIMEOUT = 40.0
TWO_HOURS = 7200


class PyRendezvousError(PeerError):
    pass


class CommandFailed(CommandFailedMixin, PyRendezvousError):
    pass


class PyRendezvousPeer:
    """A py-libp2p rendezvous peer program, driven over its stdin and stdout."""

    def __init__(self, mode: str, proc: trio.Process) -> None:
        self.mode = mode
        self.peer_id = ""
        self.addrs: list[str] = []
        self.protocols: list[str] = []
        self.errors: list[str] = []
        self.process = CommandProcess(proc, self._on_ready, self._on_event, lambda: None, self.errors)

    @property
    def label(self) -> str:
        return f"py-rendezvous/{self.mode}"

    def error(self, message: str, timed_out: bool = False) -> PeerError:
        return PyRendezvousError(f"{self.label} {self.peer_id}: {message}\n--- log (tail) ---\n{self.process.log[-3000:]}")

    def _on_ready(self, obj: dict[str, Any]) -> None:
        self.peer_id, self.addrs, self.protocols = ready_fields(obj)

    def _on_event(self, obj: dict[str, Any], line: bytes) -> None:
        self.errors.append(f"unexpected line {line[:200]!r}")

    async def request(self, cmd: str, **fields: Any) -> dict[str, Any]:
        return await self.process.request(cmd, fields, COMMAND_TIMEOUT, self.error, CommandFailed)

    async def discover(self, server: str, ns: str, limit: int = 0, cookie: bytes = b"") -> tuple[dict[str, list[str]], bytes]:
        reply = await self.request("discover", server=server, ns=ns, limit=limit, cookie_hex=cookie.hex())
        return {p["id"]: p["addrs"] for p in reply["peers"]}, bytes.fromhex(reply["cookie_hex"])

    async def registrations(self, ns: str) -> dict[str, list[str]]:
        return {p["id"]: p["addrs"] for p in (await self.request("registrations", ns=ns))["peers"]}


@asynccontextmanager
async def py_peer(mode: str) -> AsyncIterator[PyRendezvousPeer]:
    cmd = [*PY_PROGRAM, "rendezvous", "--mode", mode]
    async with open_peer_program(cmd, lambda proc: PyRendezvousPeer(mode, proc), READY_TIMEOUT) as peer:
        yield peer
    assert not peer.errors, peer.errors


@asynccontextmanager
async def mycel_host(*, server: bool = False, compat: bool = True) -> AsyncIterator[Host]:
    services = [Identify(), Ping(), Rendezvous(server=server, py_libp2p_compat=compat)]
    async with open_host(mycel_config(Stack("tcp", "noise", "yamux"), list(services), listen=True)) as host:
        yield host


def rv(host: Host) -> Rendezvous:
    return host.service(Rendezvous)


def plain(addrs: list[str]) -> set[str]:
    return {a.split("/p2p/")[0] for a in addrs}


async def test_mycel_clients_at_a_py_point() -> None:
    async with AsyncExitStack() as stack:
        point = await stack.enter_async_context(py_peer("server"))
        py_client = await stack.enter_async_context(py_peer("client"))
        a = await stack.enter_async_context(mycel_host())
        b = await stack.enter_async_context(mycel_host())
        strict = await stack.enter_async_context(mycel_host(compat=False))
        server = PeerId.from_string(point.peer_id)
        for host in (a, b, strict):
            await host.connect(point.addrs[0])
        await py_client.request("connect", addr=point.addrs[0])

        # spec-only: py reads our signed record as its PeerInfo, sees another id
        with pytest.raises(Refused) as info:
            await rv(strict).register("app", server=server)
        assert info.value.status == Status.E_NOT_AUTHORIZED

        # compat: registered in py's form, with the TTL asked for
        assert await rv(a).register("app", server=server, ttl=TWO_HOURS) == TWO_HOURS
        await py_client.request("register", server=point.peer_id, ns="app", ttl=TWO_HOURS)
        # no TTL given: compat sends the spec's default (py refuses a REGISTER without one)
        assert await rv(b).register("other", server=server) == TWO_HOURS
        held = await point.registrations("app")
        assert plain(held[str(a.peer_id)]) == {str(x) for x in a.advertised_addrs}

        # discover: both, with addresses; py's registrations are unsigned
        found = await rv(b).discover("app", server=server)
        by_id = {str(p.peer): p for p in found.peers}
        assert set(by_id) == {str(a.peer_id), py_client.peer_id}
        assert set(by_id[str(a.peer_id)].addrs) == set(a.advertised_addrs)
        assert plain(py_client.addrs) <= {str(x) for x in by_id[py_client.peer_id].addrs}
        assert not any(p.signed for p in found.peers)
        assert b.peerstore.addrs(PeerId.from_string(py_client.peer_id))  # reported to the host

        # a spec-only client cannot check py's unsigned registrations: it drops them
        assert (await rv(strict).discover("app", server=server)).peers == []
        assert rv(strict).stats["dropped_registrations"] == 2

        # paging with py's cookies
        await rv(b).register("app", server=server, ttl=TWO_HOURS)
        seen: list[str] = []
        cookie = None
        for _ in range(5):
            page = await rv(b).discover("app", server=server, limit=1, cookie=cookie)
            seen.extend(str(p.peer) for p in page.peers)
            cookie = page.cookie
            if not cookie:  # py's last page has no cookie
                break
        assert sorted(seen) == sorted([str(a.peer_id), str(b.peer_id), py_client.peer_id])

        # unregister (py's server needs the deprecated id field, which we send)
        await rv(a).unregister("app", server=server)
        with trio.fail_after(10):
            while str(a.peer_id) in await point.registrations("app"):
                await trio.sleep(0.05)  # a remote process's table: polled, bounded by the deadline
        assert set(await point.registrations("app")) == {str(b.peer_id), py_client.peer_id}


async def test_py_clients_at_a_mycel_point() -> None:
    async with AsyncExitStack() as stack:
        point = await stack.enter_async_context(mycel_host(server=True))
        strict_point = await stack.enter_async_context(mycel_host(server=True, compat=False))
        mycel_client = await stack.enter_async_context(mycel_host())
        p1 = await stack.enter_async_context(py_peer("client"))
        p2 = await stack.enter_async_context(py_peer("client"))
        server = str(point.peer_id)
        for peer in (p1, p2):
            await peer.request("connect", addr=str(point.addrs[0]))
        await p1.request("connect", addr=str(strict_point.addrs[0]))
        await mycel_client.connect(point.addrs[0])

        # py registers in its unsigned form: taken with compat, for its own id
        reply = await p1.request("register", server=server, ns="app", ttl=TWO_HOURS)
        assert reply["ttl"] == TWO_HOURS
        regs = rv(point).store.registrations("app")
        assert [(str(r.peer), r.signed) for r in regs] == [(p1.peer_id, False)]
        assert {str(x) for x in regs[0].addrs} >= plain(p1.addrs)
        # a spec-only point refuses it; py's 120 s minimum is below the spec's 2 h
        with pytest.raises(CommandFailed) as failed:
            await p1.request("register", server=str(strict_point.peer_id), ns="app", ttl=TWO_HOURS)
        assert failed.value.error.startswith(f"refused {int(Status.E_INVALID_SIGNED_PEER_RECORD)}")
        with pytest.raises(CommandFailed) as failed:
            await p2.request("register", server=server, ns="app", ttl=120)
        assert failed.value.error.startswith(f"refused {int(Status.E_INVALID_TTL)}")

        # mycel registers signed; py discovers both (ours handed to it as PeerInfo)
        await rv(mycel_client).register("app", server=point.peer_id)
        found, cookie = await p2.discover(server, "app")
        assert set(found) == {p1.peer_id, str(mycel_client.peer_id)}
        assert plain(found[str(mycel_client.peer_id)]) == {str(x) for x in mycel_client.advertised_addrs}
        assert plain(found[p1.peer_id]) >= plain(p1.addrs)
        # py pages with our cookies: nothing new, then only the newcomer
        assert (await p2.discover(server, "app", cookie=cookie))[0] == {}
        await p2.request("register", server=server, ns="app", ttl=TWO_HOURS)
        newer, _ = await p2.discover(server, "app", cookie=cookie)
        assert set(newer) == {p2.peer_id}

        # mycel discovers py's registrations too (signed ones stay signed)
        ours = await rv(mycel_client).discover("app", server=point.peer_id)
        assert {(str(p.peer), p.signed) for p in ours.peers} == {
            (p1.peer_id, False), (p2.peer_id, False), (str(mycel_client.peer_id), True)
        }

        # py unregisters
        await p1.request("unregister", server=server, ns="app")
        with trio.fail_after(10):
            while any(str(r.peer) == p1.peer_id for r in rv(point).store.registrations("app")):
                await trio.sleep(0.05)  # UNREGISTER has no answer; another process sent it
        assert rv(point).stats["bad_requests"] == 0
