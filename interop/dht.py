"""Drive the real go / js / py-libp2p Kademlia DHT peers from trio (the contract: ``dht_contract.py``).

    from interop.dht import open_dht_peer, random_cid

    async with open_dht_peer("go", "server") as go, open_dht_peer("js", "server") as js:
        await js.connect(go.addrs[0])
        await js.wait_routing_table([go.peer_id])          # None where the peer cannot tell (go)
        key, value = await go.pk_record()                  # /pk/<multihash> -> RSA PublicKey protobuf
        await go.put(key, value)
        assert await js.get(key) == value
        await go.provide(cid := random_cid())
        assert go.peer_id in await js.find_providers(cid, 1)
        addrs = await js.find_peer(go.peer_id)

``DHTNode`` is the interface; ``DHTPeer`` runs a peer program, ``MycelDHTNode`` (``open_mycel_dht_node``)
is mycel's KadDHT in this process behind the same interface. ``until`` repeats a lookup until it succeeds
or a deadline passes: a routing table is state inside a remote process with no event for it, so the first
lookups after the network forms may miss.

Each peer is a subprocess in its own process group, stopped by PID on exit (stdin EOF, then SIGTERM, then
SIGKILL to its group, which also takes p2pd down with go_dht.py), whether the body failed or not. Its
stderr is kept (the last 256 KiB, ``peer.log``) and the tail is attached to every error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import trio
from multiformats import CID

from interop.command_peer import CommandFailedMixin, CommandProcess, open_peer_program, ready_fields
from interop.peers import INTEROP_DIR, PeerError, _repo_python
from interop.mycel_side import mycel_config
from interop.peers import Stack
from mycel.core.errors import MycelError
from mycel.core.keys import RsaPrivateKey
from mycel.core.peer_id import PeerId
from mycel.host import Host, open_host
from mycel.protocols.identify import Identify
from mycel.protocols.kad import KadDHT
from mycel.protocols.ping import Ping
from mycel.service import Service

log = logging.getLogger("mycel.interop.dht")

ImplKey = Literal["go", "js", "py"]
NodeKey = Literal["go", "js", "py", "mycel"]  # the peer programs' and mycel in-process
Mode = Literal["server", "client"]
IMPL_KEYS: tuple[ImplKey, ...] = ("go", "js", "py")

READY_TIMEOUT = 60.0
COMMAND_TIMEOUT = 45.0  # the peers give each network query 30 s
POLL_INTERVAL = 0.2  # seconds between two polls of a remote peer's state (routing table)
RETRY_INTERVAL = 0.5  # seconds between two attempts of a lookup that failed (``until``)
ERROR_LOG_TAIL = 6000  # characters of a peer's stderr attached to an error message

T = TypeVar("T")


@dataclass(frozen=True)
class DHTImpl:
    """One implementation's DHT peer program and what it can do."""

    key: NodeKey
    name: str
    program: tuple[str, ...]
    reports_routing_table: bool  # can it list its routing table (the `routing_table` command)?
    binary_keys: bool  # can its put/get API take a key that is not UTF-8 (the standard /pk/ keys)?

    def missing(self) -> str | None:
        """Why the peer program cannot run here (not installed), or None."""
        if self.program and not Path(self.program[0]).exists():
            return f"{self.program[0]} missing: run interop/install.sh"
        return None

    def command(self, mode: Mode) -> list[str]:
        return [*self.program, "dht", "--mode", mode]


IMPLS: dict[ImplKey, DHTImpl] = {
    "go": DHTImpl(
        key="go",
        name="go-libp2p-kad-dht v0.25.1 (p2pd from hivemind 1.1.12)",
        program=(_repo_python(), str(INTEROP_DIR / "go_dht.py")),
        reports_routing_table=False,
        binary_keys=True,
    ),
    "js": DHTImpl(
        key="js",
        name="@libp2p/kad-dht 16.4.5 (libp2p 3.3.11)",
        program=(str(INTEROP_DIR / "js" / "node_modules" / "node" / "bin" / "node"), str(INTEROP_DIR / "js" / "dht.mjs")),
        reports_routing_table=True,
        binary_keys=True,
    ),
    "py": DHTImpl(
        key="py",
        name="py-libp2p 0.8.1 KadDHT",
        program=(str(INTEROP_DIR / ".peers" / "py-venv" / "bin" / "python"), str(INTEROP_DIR / "py" / "dht_peer.py")),
        reports_routing_table=True,
        binary_keys=False,
    ),
}


class DHTPeerError(PeerError):
    """A DHT peer failed, broke the contract, or was too slow; the message ends with its stderr tail."""


class CommandFailed(CommandFailedMixin, DHTPeerError):
    """The peer answered a command with ok=false; ``error`` is its reason (``unsupported``: it cannot)."""


class DHTTimeout(DHTPeerError):
    """What we waited for did not happen before the deadline."""


def random_cid(version: int = 1) -> str:
    """A fresh CID string (raw codec, sha2-256 of random bytes): CIDv1 base32 ``b...`` or CIDv0 ``Qm...``."""
    digest = ("sha2-256", os.urandom(32))
    if version == 0:
        return str(CID("base58btc", 0, "dag-pb", digest))
    return str(CID("base32", 1, "raw", digest))


def transport_addr(addr: str) -> str:
    """``addr`` without its ``/p2p/<id>`` tail."""
    head, sep, _ = addr.rpartition("/p2p/")
    return head if sep else addr


class DHTNode:
    """A DHT node under test, whatever runs it: ``peer_id``, ``addrs``, ``protocols``, ``mode``, the
    contract's commands and the waiting helpers. :class:`DHTPeer` is a peer program."""

    def __init__(self, impl: DHTImpl, mode: Mode) -> None:
        self.impl = impl
        self.mode = mode
        self.peer_id = ""
        self.addrs: list[str] = []
        self.protocols: list[str] = []
        self.name: str = impl.key  # set by the network that names its nodes (go1, js2, ...)

    def __repr__(self) -> str:
        return f"<{self.label} {self.peer_id or '(starting)'}>"

    @property
    def label(self) -> str:
        return f"{self.name}/{self.mode}"

    @property
    def log(self) -> str:
        return ""

    def error(self, message: str, cls: type[DHTPeerError] = DHTPeerError) -> DHTPeerError:
        tail = self.log[-ERROR_LOG_TAIL:]
        return cls(f"{self.label} {self.peer_id}: {message}\n--- {self.label} log (tail) ---\n{tail}")

    # --- commands (the contract's) ---

    async def connect(self, addr: str) -> None:
        raise NotImplementedError

    async def pk_record(self) -> tuple[bytes, bytes]:
        raise NotImplementedError

    async def put(self, key: bytes, value: bytes) -> dict[str, Any]:
        raise NotImplementedError

    async def get(self, key: bytes) -> bytes:
        raise NotImplementedError

    async def provide(self, cid: str) -> None:
        raise NotImplementedError

    async def find_providers(self, cid: str, count: int = 20) -> list[str]:
        raise NotImplementedError

    async def find_peer(self, peer_id: str) -> list[str]:
        raise NotImplementedError

    async def closest(self, key: bytes) -> list[str]:
        raise NotImplementedError

    async def routing_table(self) -> list[str] | None:
        """The routing table's peer ids; None where the implementation cannot tell (go's p2pd)."""
        raise NotImplementedError

    # --- waiting ---

    async def wait_routing_table(self, peer_ids: Collection[str], timeout: float = 20.0) -> list[str] | None:
        """Poll ``routing_table`` until it lists every one of ``peer_ids``; None if the peer cannot tell."""
        deadline = trio.current_time() + timeout
        while True:
            table = await self.routing_table()
            if table is None or set(peer_ids) <= set(table):
                return table
            if trio.current_time() >= deadline:
                raise self.error(f"routing table: want {sorted(peer_ids)}, still {sorted(table)}", DHTTimeout)
            # a remote process's routing table has no event for us: poll it (bounded by the deadline)
            await trio.sleep(POLL_INTERVAL)


class DHTPeer(DHTNode):
    """A running DHT peer program (go, js or py), driven over its stdin and stdout."""

    def __init__(self, impl: DHTImpl, mode: Mode, proc: trio.Process) -> None:
        super().__init__(impl, mode)
        self.info: dict[str, Any] = {}  # the whole ready line
        self._contract_errors: list[str] = []
        self.process = CommandProcess(proc, self._on_ready, self._on_event, lambda: None, self._contract_errors)

    @property
    def log(self) -> str:
        return self.process.log

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def contract_errors(self) -> list[str]:
        return list(self._contract_errors)

    def _on_ready(self, obj: dict[str, Any]) -> None:
        self.info = obj
        self.peer_id, self.addrs, self.protocols = ready_fields(obj)

    def _on_event(self, obj: dict[str, Any], line: bytes) -> None:
        self._contract_errors.append(f"a DHT peer prints no events: {line[:200]!r}")

    async def request(self, cmd: str, timeout: float = COMMAND_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Send one command; return its reply. CommandFailed on ok=false, DHTTimeout after ``timeout``."""
        return await self.process.request(cmd, fields, timeout, self._request_error, CommandFailed)

    def _request_error(self, message: str, timed_out: bool) -> PeerError:
        return self.error(message, DHTTimeout if timed_out else DHTPeerError)

    async def connect(self, addr: str) -> None:
        await self.request("connect", addr=addr)

    async def pk_record(self) -> tuple[bytes, bytes]:
        reply = await self.request("pk_record")
        return bytes.fromhex(reply["key_hex"]), bytes.fromhex(reply["value_hex"])

    async def put(self, key: bytes, value: bytes) -> dict[str, Any]:
        reply = await self.request("put", key_hex=key.hex(), value_hex=value.hex())
        return {k: v for k, v in reply.items() if k not in ("reply", "ok")}

    async def get(self, key: bytes) -> bytes:
        return bytes.fromhex((await self.request("get", key_hex=key.hex()))["value_hex"])

    async def provide(self, cid: str) -> None:
        await self.request("provide", cid=cid)

    async def find_providers(self, cid: str, count: int = 20) -> list[str]:
        return [str(p) for p in (await self.request("find_providers", cid=cid, count=count))["providers"]]

    async def find_peer(self, peer_id: str) -> list[str]:
        return [str(a) for a in (await self.request("find_peer", peer_id=peer_id))["addrs"]]

    async def closest(self, key: bytes) -> list[str]:
        return [str(p) for p in (await self.request("closest", key_hex=key.hex()))["peers"]]

    async def routing_table(self) -> list[str] | None:
        try:
            return [str(p) for p in (await self.request("routing_table"))["peers"]]
        except CommandFailed as exc:
            if exc.unsupported:
                return None
            raise


@asynccontextmanager
async def open_dht_peer(
    impl: ImplKey | DHTImpl, mode: Mode, ready_timeout: float = READY_TIMEOUT
) -> AsyncIterator[DHTPeer]:
    """Start a DHT peer and wait for its ready line; stop it (by PID) on exit, even on failure."""
    spec = IMPLS[impl] if isinstance(impl, str) else impl
    missing = spec.missing()
    if missing is not None:
        raise DHTPeerError(f"{spec.key}: {missing}")
    cmd = spec.command(mode)
    log.info("starting %s %s DHT peer: %s", spec.key, mode, " ".join(cmd))
    async with open_peer_program(cmd, lambda proc: DHTPeer(spec, mode, proc), ready_timeout) as peer:
        yield peer


MYCEL_DHT = DHTImpl(
    key="mycel", name="mycel KadDHT (in-process)", program=(), reports_routing_table=True, binary_keys=True
)
MYCEL_QUERY_TIMEOUT = 30.0  # as the peer programs bound each network query
RSA_BITS = 2048


class MycelDHTNode(DHTNode):
    """mycel's ``KadDHT`` on a host in this process (TCP 127.0.0.1, Noise, yamux, Identify, Ping), driven
    by method calls with the contract's meaning: a miss or a refusal is ``CommandFailed``, a query that
    takes over 30 s ``DHTTimeout``."""

    def __init__(self, host: Host, dht: KadDHT, mode: Mode) -> None:
        super().__init__(MYCEL_DHT, mode)
        self.host = host
        self.dht = dht
        self.peer_id = str(host.peer_id)
        self.addrs = [str(a) for a in host.addrs]
        self.protocols = sorted(dht.handlers())

    def _failed(self, message: str) -> CommandFailed:
        return CommandFailed(str(self.error(message)), message)

    @asynccontextmanager
    async def _query(self, what: str) -> AsyncIterator[None]:
        try:
            with trio.fail_after(MYCEL_QUERY_TIMEOUT):
                yield
        except trio.TooSlowError:
            raise self.error(f"{what}: no answer within {MYCEL_QUERY_TIMEOUT:g}s", DHTTimeout) from None
        except (MycelError, OSError) as exc:
            raise self._failed(f"{what}: {exc!r}") from exc

    async def connect(self, addr: str) -> None:
        async with self._query("connect"):
            await self.host.connect(addr)

    async def pk_record(self) -> tuple[bytes, bytes]:
        private = await trio.to_thread.run_sync(RsaPrivateKey.generate, RSA_BITS)
        public = private.public_key
        return b"/pk/" + PeerId.from_public_key(public).to_bytes(), public.to_protobuf()

    async def put(self, key: bytes, value: bytes) -> dict[str, Any]:
        async with self._query("put"):
            return {"stored": await self.dht.put(key, value)}

    async def get(self, key: bytes) -> bytes:
        async with self._query("get"):
            value = await self.dht.get(key)
        if value is None:
            raise self._failed(f"get {key.hex()}: not found")
        return value

    async def provide(self, cid: str) -> None:
        async with self._query("provide"):
            await self.dht.provide(cid)

    async def find_providers(self, cid: str, count: int = 20) -> list[str]:
        found: list[str] = []
        async with self._query("find_providers"):
            async for record in self.dht.find_providers(cid, limit=count):
                found.append(str(record.peer))
        if not found:
            raise self._failed(f"find_providers {cid}: none found")
        return found

    async def find_peer(self, peer_id: str) -> list[str]:
        async with self._query("find_peer"):
            addrs = await self.dht.find_peer(PeerId.from_string(peer_id))
        if not addrs:
            raise self._failed(f"find_peer {peer_id}: not found")
        return sorted({transport_addr(str(a)) for a in addrs})

    async def closest(self, key: bytes) -> list[str]:
        async with self._query("closest"):
            return [str(p) for p in await self.dht.closest_peers(key)]

    async def routing_table(self) -> list[str] | None:
        return [str(p) for p in self.dht.routing_table.peers()]


@asynccontextmanager
async def open_mycel_dht_node(mode: Mode) -> AsyncIterator[MycelDHTNode]:
    """A mycel host with ``KadDHT(mode=mode)`` listening on TCP 127.0.0.1 (Noise, yamux, Identify, Ping),
    closed on exit."""
    services: list[Service] = [Identify(), Ping(), KadDHT(mode=mode)]
    config = mycel_config(Stack("tcp", "noise", "yamux"), services, listen=True)
    async with open_host(config) as host:
        yield MycelDHTNode(host, host.service(KadDHT), mode)


@dataclass
class CellResult:
    """How one cell of a DHT interop table went: ``info`` holds what it saw (addresses, providers...)."""

    ok: bool
    detail: str
    elapsed: float
    info: dict[str, Any]


async def run_cell(body: Callable[[dict[str, Any]], Awaitable[None]]) -> CellResult:
    """Run one cell's ``body(info)``; a DHTPeerError or AssertionError is its failure (the peer's own
    error text for a failed command)."""
    started = trio.current_time()
    info: dict[str, Any] = {}
    try:
        await body(info)
    except (DHTPeerError, AssertionError) as exc:
        error = exc.error if isinstance(exc, CommandFailed) else str(exc)
        return CellResult(False, error, trio.current_time() - started, info)
    return CellResult(True, "", trio.current_time() - started, info)


def check_cell(cell: str, result: CellResult, finding: str | None) -> None:
    """A cell's verdict: it passed, or, where ``finding`` documents a failure, it failed that way (so this
    fails, asking for the README to be updated, once upstream changes)."""
    if finding is None:
        assert result.ok, f"{cell} ({result.elapsed:.1f}s): {result.detail} {result.info}"
    else:
        assert not result.ok, f"{cell} now passes: update FINDINGS and the README ({result.info})"
        assert finding in result.detail, f"{cell}: failed otherwise than documented: {result.detail}"


async def form_ring(
    nodes: Mapping[str, DHTNode], ring: Sequence[str], clients: Mapping[str, str], timeout: float
) -> dict[str, Any]:
    """Connect ``ring`` (each node dials the next, the last the first) and each client to its one server,
    then wait until the peer each ring node dialed is in its table (where it can tell). Returns the
    tables seen (``table-<name>``) and every node's protocols (``protocols``)."""
    facts: dict[str, Any] = {}
    for i, name in enumerate(ring):
        await nodes[name].connect(nodes[ring[(i + 1) % len(ring)]].addrs[0])
    for client, server in clients.items():
        await nodes[client].connect(nodes[server].addrs[0])
    for i, name in enumerate(ring):
        dialed = nodes[ring[(i + 1) % len(ring)]].peer_id
        facts[f"table-{name}"] = await nodes[name].wait_routing_table([dialed], timeout)
    facts["protocols"] = {name: node.protocols for name, node in nodes.items()}
    return facts


def print_cells(cells: list[str], results: dict[str, CellResult], facts: dict[str, Any]) -> None:
    """The table for the README: a line per cell, then the routing tables by node name."""
    for c in cells:
        r = results[c]
        print(f"{'pass' if r.ok else 'FAIL'} {r.elapsed:5.1f}s {c} {r.detail[:300]!r} {r.info}")
    names = facts["names"]
    for k, v in facts.items():
        if k.startswith(("table-", "final-table-")) and v is not None:
            v = sorted(names.get(p, p) for p in v)
        print(k, v)


async def until(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    timeout: float,
    give_up: Callable[[CommandFailed], bool] = lambda exc: exc.unsupported,
) -> T:
    """Run ``attempt`` until ``accept`` takes its result; DHTTimeout after ``timeout``.

    A failed command (not found yet) counts as a miss; ``give_up`` says which failures are final (by
    default ``unsupported``: raised at once). Lookups run in remote processes whose routing tables and
    stores have no event for us, so a miss is retried after ``RETRY_INTERVAL`` until the deadline.
    """
    deadline = trio.current_time() + timeout
    last: str = "no attempt"
    while True:
        with trio.move_on_at(deadline):
            try:
                result = await attempt()
                if accept(result):
                    return result
                last = f"got {result!r}"
            except CommandFailed as exc:
                if give_up(exc):
                    raise
                last = exc.error
            except DHTTimeout as exc:
                last = str(exc).partition("\n")[0]
        if trio.current_time() >= deadline:
            raise DHTTimeout(f"{what}: not within {timeout:g}s; last: {last}")
        # a remote lookup missed (no event to wait for): try again shortly, bounded by the deadline
        await trio.sleep(min(RETRY_INTERVAL, max(0.0, deadline - trio.current_time())))


__all__ = [
    "IMPLS", "IMPL_KEYS", "MYCEL_DHT", "CellResult", "CommandFailed", "DHTImpl", "DHTNode", "DHTPeer",
    "DHTPeerError", "DHTTimeout", "ImplKey", "Mode", "MycelDHTNode", "NodeKey", "check_cell", "form_ring",
    "open_dht_peer", "open_mycel_dht_node", "print_cells", "random_cid", "run_cell", "transport_addr", "until",
]  # fmt: skip
