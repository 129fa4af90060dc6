"""The AutoNAT service: v1 (``/libp2p/autonat/1.0.0``) and v2 (``/libp2p/autonat/2/dial-request`` +
``dial-back``) server and client, driving ``host.reachability``.

Server (both versions): requests over relayed (limited) connections are refused; every request is
rate limited (:class:`~mycel.protocols.autonat.core.RateLimiter`; refused requests get E_DIAL_REFUSED /
E_REQUEST_REJECTED and are counted); at most ``max_inflight`` are served at once and one v1 (two v2)
per peer. v1 dials back only addresses with the IP the request came from, plus that observed address
itself (as go does: a NATed peer's observed address is its NAT's), all raced within ``dial_timeout``;
v2 dials the first address it will dial, after the requester paid 30–100 kB of DialDataResponse when
that address's IP is not the one it connected from, and proves the dial with the request's nonce on
a dial-back stream over the new connection. Dial-backs use fresh connections (``host.dial_direct``),
closed afterwards.

Client: after ``boot_delay``, each round asks ``probes_per_round`` connected v1 servers (least recently
asked first) to dial us back; observations go through go's confidence window
(:class:`~mycel.protocols.autonat.core.ReachabilityTracker`) and each verdict change reaches
``host.set_reachability`` — so services hear ``reachability_changed`` and applications a
``ReachabilityChanged`` event. Rounds repeat every ``retry_interval`` until the verdict is settled, then
every ``refresh_interval``; a new server or a change of our addresses brings the next round forward.
With v2 on, each round also asks a v2 server about our unsettled addresses (per-address verdicts in
:meth:`AutoNAT.addr_reachability`); v2 decides ``host.reachability`` only while v1 has no verdict.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from multiaddr import Multiaddr

from mycel.core.abc import Connection, MuxedStream
from mycel.core.addrs import Reachability, ip_of, is_relay_addr, split_peer_id
from mycel.core.errors import MycelError
from mycel.protocols.autonat.core import (
    AddrReachability,
    RateLimiter,
    ReachabilityTracker,
    v1_dial_candidates,
    v2_plan,
)
from mycel.protocols.autonat.messages import (
    DIAL_BACK_PROTOCOL,
    DIAL_REQUEST_PROTOCOL,
    MAX_DATA_CHUNK,
    V1_MAX_MESSAGE,
    V1_PROTOCOL,
    V2_MAX_MESSAGE,
    AutoNATMessageError,
    DialStatus,
    V1Response,
    V1Status,
    V2DataRequest,
    V2Request,
    V2Response,
    V2Status,
    decode_v1_request,
    decode_v1_response,
    decode_v2_dial_back,
    decode_v2_message,
    encode_v1_request,
    encode_v1_response,
    encode_v2_data,
    encode_v2_data_request,
    encode_v2_dial_back,
    encode_v2_dial_back_ok,
    encode_v2_request,
    encode_v2_response,
    read_message,
    write_message,
)
from mycel.service import Service, ServiceHost, StreamHandler, not_running

if TYPE_CHECKING:
    from mycel.core.peer_id import PeerId

log = logging.getLogger("mycel.protocols.autonat")

_ERRORS = (MycelError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError)
MAX_ASKED = 256  # servers remembered with the time we last asked them (oldest forgotten beyond)
MIN_DATA_CHUNK = 512  # dial data must come in chunks of this size on average (clients send ~4 KiB ones)


@dataclass(frozen=True)
class AutoNATConfig:
    """AutoNAT's settings (go's defaults unless said otherwise)."""

    server: bool = True
    """Answer other peers' requests (v1, and v2 when ``v2``)."""
    client: bool = True
    """Ask other peers to dial us back, and set ``host.reachability``."""
    v1: bool = True
    """Speak AutoNAT v1 (server: answer it; client: ask v1 servers)."""
    v2: bool = True
    """Also speak AutoNAT v2 (server: dial-request; client: per-address checks and the dial-back handler)."""
    boot_delay: float = 15.0
    """Seconds after start before the first round (go's AutoNATBootDelay)."""
    retry_interval: float = 90.0
    """Seconds between rounds while the verdict is not settled (go's AutoNATRetryInterval)."""
    refresh_interval: float = 15 * 60.0
    """Seconds between rounds once it is (go's AutoNATRefreshInterval)."""
    min_interval: float = 15.0
    """Seconds at least between the starts of two rounds, however often addresses change or servers
    connect (so that churn does not make us flood servers, who would rate limit us anyway)."""
    probes_per_round: int = 1
    """v1 servers asked at once per round (go asks one)."""
    request_timeout: float = 30.0
    """Seconds the client waits for a server's answer."""
    dial_timeout: float = 15.0
    """Seconds the server gives a dial-back (go's 15 s)."""
    v1_global_limit: int = 30
    """v1 requests served per ``limit_window`` from everyone (go's throttleGlobalMax)."""
    v1_peer_limit: int = 3
    """v1 requests served per ``limit_window`` from one peer (go's throttlePeerMax)."""
    v2_global_limit: int = 60
    """v2 requests served per ``limit_window`` from everyone (go's serverRPM)."""
    v2_peer_limit: int = 12
    """v2 requests served per ``limit_window`` from one peer (go's serverPerPeerRPM)."""
    limit_window: float = 60.0
    """The rate limits' window in seconds."""
    max_inflight: int = 16
    """Requests served at once (both versions); beyond, refused."""
    max_dial_data: int = 100_000
    """The most bytes the v2 client will send as the amplification cost; a larger ask is refused."""
    confidence: int = 3
    """Observations a verdict needs to be settled (go's maxConfidence; v2: per-address balance)."""
    seed: int | None = None
    """Seed of the service's RNG (nonces, dial-data amounts, server choice); None: from the OS."""


class AutoNAT(Service):
    """AutoNAT v1 + v2 client and server (see the module docstring). ``AutoNAT(AutoNATConfig(...))``."""

    def __init__(self, config: AutoNATConfig | None = None) -> None:
        self.config = config or AutoNATConfig()
        self._host: ServiceHost | None = None
        self._rng = random.Random(self.config.seed)
        self._v1_limits = RateLimiter(self.config.v1_global_limit, self.config.v1_peer_limit, self.config.limit_window)
        self._v2_limits = RateLimiter(self.config.v2_global_limit, self.config.v2_peer_limit, self.config.limit_window)
        self._inflight: dict[tuple[PeerId, int], int] = {}  # (peer, version) -> requests being served
        self._tracker = ReachabilityTracker(self.config.confidence)
        self._addr_tracker = AddrReachability(self.config.confidence)
        self._asked: dict[PeerId, float] = {}
        self._nonces: dict[int, bool] = {}  # our v2 requests in flight: nonce -> dialed back yet
        self._reached: Multiaddr | None = None  # the address a v1 server last dialed us back on
        self._next_round = math.inf
        self._started_at = 0.0
        self._last_round = -math.inf
        self._round_done = trio.Event()
        self._wake = trio.Event()
        self.rounds = 0
        """Client rounds finished."""
        self.stats: dict[str, int] = dict.fromkeys(
            ("requests", "served", "refused", "rate_limited", "bad_requests", "dial_backs", "dial_data_bytes", "probes", "bad_responses"),
            0,
        )
        """Server and client counters (requests answered in any way, served, refused, rate limited, malformed, ...)."""
        self._request_done = trio.Event()

    # -- service --------------------------------------------------------------------------------
    @property
    def host(self) -> ServiceHost:
        """The host this copy runs in; raises ServiceNotRunning outside one."""
        if self._host is None:
            raise not_running(self)
        return self._host

    def handlers(self) -> Mapping[str, StreamHandler]:
        out: dict[str, StreamHandler] = {}
        if self.config.server:
            if self.config.v1:
                out[V1_PROTOCOL] = self._serve_v1
            if self.config.v2:
                out[DIAL_REQUEST_PROTOCOL] = self._serve_v2
        if self.config.client and self.config.v2:
            out[DIAL_BACK_PROTOCOL] = self._handle_dial_back
        return out

    async def run(self, host: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._host = host
        task_status.started()
        if not self.config.client:
            return
        self._started_at = trio.current_time()
        self._next_round = self._started_at + self.config.boot_delay
        while True:
            with trio.move_on_at(self._next_round):
                await self._wake.wait()
            self._wake = trio.Event()
            if trio.current_time() < self._next_round:
                continue
            await self.probe()

    def peer_protocols_changed(self, host: ServiceHost, peer: PeerId, added: frozenset[str], removed: frozenset[str]) -> None:
        """A new server while we have no settled verdict brings the next round forward (not before
        ``boot_delay`` has passed since start)."""
        if self.config.client and (V1_PROTOCOL in added or DIAL_REQUEST_PROTOCOL in added) and not self._tracker.settled:
            self._bring_forward(max(0.0, self._started_at + self.config.boot_delay - trio.current_time()))

    def local_addrs_changed(self, host: ServiceHost) -> None:
        """Our addresses changed: check them again soon (go re-probes on address changes)."""
        if self.config.client and self.rounds:
            self._bring_forward(0.0)

    def _bring_forward(self, delay: float) -> None:
        if self._host is None:
            return
        due = max(trio.current_time() + delay, self._last_round + self.config.min_interval)
        if due < self._next_round:
            self._next_round = due
            self._wake.set()

    # -- client ---------------------------------------------------------------------------------
    @property
    def reachability(self) -> Reachability:
        """The v1 client's verdict (UNKNOWN until it has one)."""
        return self._tracker.status

    @property
    def confidence(self) -> int:
        """How settled the v1 verdict is (0 .. ``config.confidence``)."""
        return self._tracker.confidence

    def addr_reachability(self) -> dict[Multiaddr, Reachability]:
        """The v2 client's verdict for each of our addresses it has checked."""
        return self._addr_tracker.verdicts()

    def _servers(self, protocol: str) -> list[PeerId]:
        host = self.host
        peers = [
            p
            for p in host.connected_peers()
            if protocol in host.peerstore.protocols(p) and any(not c.limited for c in host.connections(p))
        ]
        self._rng.shuffle(peers)
        peers.sort(key=lambda p: self._asked.get(p, -math.inf))  # least recently asked first
        return peers

    def _mark_asked(self, peer: PeerId) -> None:
        self._asked.pop(peer, None)
        self._asked[peer] = trio.current_time()
        while len(self._asked) > MAX_ASKED:
            del self._asked[next(iter(self._asked))]

    async def probe(self) -> Reachability:
        """One round now: ask ``probes_per_round`` v1 servers (and one v2 server about our unsettled
        addresses), update the verdict, schedule the next round; returns the v1 verdict."""
        host = self.host
        servers = self._servers(V1_PROTOCOL)[: self.config.probes_per_round] if self.config.v1 else []
        if not servers and not (self.config.v2 and self._servers(DIAL_REQUEST_PROTOCOL)):
            self._next_round = math.inf  # nobody to ask: the next server that connects starts a round
            return self._tracker.status
        self._last_round = trio.current_time()
        self._next_round = math.inf  # (a change during the round may bring the next one forward)
        async with trio.open_nursery() as nursery:
            for peer in servers:
                nursery.start_soon(self._probe_v1, peer)
            if self.config.v2:
                nursery.start_soon(self._probe_v2_round)
        self._publish(host)
        settled = self._tracker.settled
        interval = self.config.refresh_interval if settled else self.config.retry_interval
        self._next_round = min(self._next_round, trio.current_time() + interval)
        self.rounds += 1
        self._round_done.set()
        self._round_done = trio.Event()
        return self._tracker.status

    async def wait_rounds(self, count: int) -> None:
        """Wait until the client has finished ``count`` rounds (``rounds``)."""
        while self.rounds < count:
            await self._round_done.wait()

    async def _probe_v1(self, peer: PeerId) -> None:
        self._mark_asked(peer)
        try:
            response = await self.ask_v1(peer)
        except _ERRORS as exc:
            log.info("autonat v1 probe of %s failed: %s", peer, exc)
            self._tracker.observe(Reachability.UNKNOWN)
            return
        if response.status is V1Status.OK:
            self._tracker.observe(Reachability.PUBLIC)
            if response.addr is not None:
                self._reached = response.addr
        elif response.status is V1Status.E_DIAL_ERROR:
            self._tracker.observe(Reachability.PRIVATE)
        elif response.status is not V1Status.E_DIAL_REFUSED:  # refused: the server chose not to say
            self._tracker.observe(Reachability.UNKNOWN)

    async def ask_v1(self, peer: PeerId, addrs: list[Multiaddr] | None = None) -> V1Response:
        """Ask ``peer`` (a v1 server) to dial us back on ``addrs`` (default: our advertised direct
        addresses); its answer, not recorded in the verdict. AutoNATMessageError for a bad answer."""
        host = self.host
        if addrs is None:
            addrs = [a for a in host.advertised_addrs if not is_relay_addr(a)]
        self.stats["probes"] += 1
        with trio.fail_after(self.config.request_timeout):
            stream = await host.new_stream(peer, [V1_PROTOCOL])
            try:
                await write_message(stream, encode_v1_request(host.peer_id, addrs))
                try:
                    return decode_v1_response(await read_message(stream, V1_MAX_MESSAGE))
                except AutoNATMessageError as exc:
                    self.stats["bad_responses"] += 1
                    log.info("autonat v1: bad response from %s: %s", peer, exc)
                    raise
            finally:
                await stream.aclose()

    async def _probe_v2_round(self) -> None:
        host = self.host
        policy = host.config.address_policy
        ours = [a for a in host.advertised_addrs if not is_relay_addr(a) and policy.is_public(a)]
        self._addr_tracker.retain(ours)
        unsettled = [a for a in ours if not self._addr_tracker.settled(a)] or ours
        servers = self._servers(DIAL_REQUEST_PROTOCOL)
        if not unsettled or not servers:
            return
        peer = servers[0]
        self._mark_asked(peer)
        try:
            addr, reachable = await self.ask_v2(peer, unsettled)
        except _ERRORS as exc:
            log.info("autonat v2 probe of %s failed: %s", peer, exc)
            return
        if addr is not None and reachable is not None:
            self._addr_tracker.record(addr, reachable)

    async def ask_v2(self, peer: PeerId, addrs: list[Multiaddr]) -> tuple[Multiaddr | None, bool | None]:
        """Ask ``peer`` (a v2 server) to dial one of ``addrs``: (the address it chose, True if it dialed
        us back with our nonce / False if its dial failed / None if it could not say). Pays a dial-data
        request of at most ``config.max_dial_data`` bytes (beyond, the stream is reset: refused)."""
        host = self.host
        nonce = self._rng.getrandbits(64)
        self._nonces[nonce] = False
        self.stats["probes"] += 1
        try:
            with trio.fail_after(self.config.request_timeout):
                stream = await host.new_stream(peer, [DIAL_REQUEST_PROTOCOL])
                try:
                    await write_message(stream, encode_v2_request(addrs, nonce))
                    response = await self._v2_exchange(stream, peer, len(addrs))
                finally:
                    await stream.aclose()
            if response.status is not V2Status.OK:
                return None, None
            if response.addr_idx >= len(addrs):
                self.stats["bad_responses"] += 1
                raise AutoNATMessageError(f"DialResponse names address {response.addr_idx} of {len(addrs)}")
            addr = addrs[response.addr_idx]
            if response.dial_status is DialStatus.OK:
                if not self._nonces.get(nonce):
                    log.info("autonat v2: %s says it dialed %s but no dial-back carried our nonce", peer, addr)
                    return addr, None
                return addr, True
            if response.dial_status is DialStatus.E_DIAL_ERROR:
                return addr, False
            return addr, None
        finally:
            del self._nonces[nonce]

    async def _v2_exchange(self, stream: MuxedStream, peer: PeerId, count: int) -> V2Response:
        while True:
            msg = decode_v2_message(await read_message(stream, V2_MAX_MESSAGE))
            if isinstance(msg, V2Response):
                return msg
            if not isinstance(msg, V2DataRequest):
                self.stats["bad_responses"] += 1
                raise AutoNATMessageError(f"unexpected {type(msg).__name__} from the server")
            if msg.num_bytes > self.config.max_dial_data or msg.addr_idx >= count:
                await stream.reset()
                raise AutoNATMessageError(
                    f"{peer} asked for {msg.num_bytes} bytes (at most {self.config.max_dial_data}) to dial address {msg.addr_idx}"
                )
            chunk = encode_v2_data(bytes(MAX_DATA_CHUNK))
            for _ in range(-(-msg.num_bytes // MAX_DATA_CHUNK)):
                await write_message(stream, chunk)

    async def _handle_dial_back(self, stream: MuxedStream) -> None:
        peer = stream.connection.remote_peer
        try:
            with trio.fail_after(self.config.request_timeout):
                nonce = decode_v2_dial_back(await read_message(stream, V2_MAX_MESSAGE))
                if nonce not in self._nonces:
                    log.info("autonat v2: dial-back from %s with a nonce we did not send", peer)
                    await stream.reset()
                    return
                self._nonces[nonce] = True
                await write_message(stream, encode_v2_dial_back_ok())
                await stream.send_eof()
        except _ERRORS as exc:
            log.info("autonat v2: dial-back from %s failed: %s", peer, exc)

    def _publish(self, host: ServiceHost) -> None:
        verdict = self._tracker.status
        addrs: list[Multiaddr] = []
        if verdict is Reachability.UNKNOWN and self.config.v2:
            verdict = self._addr_tracker.overall()
        if verdict is Reachability.PUBLIC:
            addrs = [a for a, v in self._addr_tracker.verdicts().items() if v is Reachability.PUBLIC]
            if self._reached is not None and self._reached not in addrs:
                addrs.insert(0, self._reached)
        host.set_reachability(verdict, addrs)

    # -- server ---------------------------------------------------------------------------------
    async def wait_requests(self, count: int) -> None:
        """Wait until the server has finished ``count`` requests (``stats["requests"]``), however they ended."""
        while self.stats["requests"] < count:
            await self._request_done.wait()

    def _request_finished(self) -> None:
        self.stats["requests"] += 1
        self._request_done.set()
        self._request_done = trio.Event()

    def _admit(self, peer: PeerId, version: int) -> bool:
        """Room for one more request of ``version`` from ``peer`` (one v1, two v2 at once; max_inflight in all)?"""
        key = (peer, version)
        per_peer = 1 if version == 1 else 2
        if sum(self._inflight.values()) >= self.config.max_inflight or self._inflight.get(key, 0) >= per_peer:
            return False
        self._inflight[key] = self._inflight.get(key, 0) + 1
        return True

    def _done(self, peer: PeerId, version: int) -> None:
        key = (peer, version)
        left = self._inflight.get(key, 0) - 1
        if left > 0:
            self._inflight[key] = left
        else:
            self._inflight.pop(key, None)

    async def _serve_v1(self, stream: MuxedStream) -> None:
        host = self.host
        conn = stream.connection
        peer = conn.remote_peer
        try:
            with trio.fail_after(self.config.request_timeout):
                try:
                    request = decode_v1_request(await read_message(stream, V1_MAX_MESSAGE))
                except (AutoNATMessageError, MycelError) as exc:
                    self.stats["bad_requests"] += 1
                    log.info("autonat v1: bad request from %s: %s", peer, exc)
                    await write_message(stream, encode_v1_response(V1Status.E_BAD_REQUEST, "malformed request"))
                    return
                status, text, addr = await self._answer_v1(host, conn, peer, request.peer, list(request.addrs))
                await write_message(stream, encode_v1_response(status, text, addr))
                await stream.send_eof()
        except _ERRORS as exc:
            log.info("autonat v1: request from %s failed: %s", peer, exc)
        finally:
            self._request_finished()

    async def _answer_v1(
        self, host: ServiceHost, conn: Connection, peer: PeerId, named: PeerId, addrs: list[Multiaddr]
    ) -> tuple[V1Status, str, Multiaddr | None]:
        if named != peer:
            self.stats["bad_requests"] += 1
            log.info("autonat v1: %s asked us to dial another peer (%s): refused", peer, named)
            return V1Status.E_BAD_REQUEST, "peer id mismatch", None
        if conn.limited or is_relay_addr(conn.remote_addr):
            self.stats["refused"] += 1
            return V1Status.E_DIAL_REFUSED, "not over a relayed connection", None
        policy = host.config.address_policy
        observed = conn.remote_addr
        if not policy.is_public(observed):
            self.stats["refused"] += 1
            return V1Status.E_DIAL_REFUSED, "observed address is not public", None
        # addresses may end in /p2p/<requester> (py-libp2p sends them so); one naming another peer is dropped
        split = [split_peer_id(a) for a in addrs]
        addrs = [base for base, named_peer in split if named_peer is None or named_peer == peer]
        candidates = v1_dial_candidates([observed, *addrs], ip_of(observed), policy)
        dropped = len(addrs) - len([a for a in candidates if a != observed])
        if dropped:
            log.debug("autonat v1: dropped %d addresses of %s not on its observed IP %s", dropped, peer, ip_of(observed))
        if not self._admit(peer, 1):  # (checked first: a refusal for being busy costs no budget)
            self.stats["rate_limited"] += 1
            return V1Status.E_DIAL_REFUSED, "busy", None
        if not self._v1_limits.allow(peer, trio.current_time()):
            self._done(peer, 1)
            self.stats["rate_limited"] += 1
            log.info("autonat v1: request from %s rate limited", peer)
            return V1Status.E_DIAL_REFUSED, "too many requests", None
        try:
            reached = await self._race_dials(host, peer, candidates)
        finally:
            self._done(peer, 1)
        self.stats["served"] += 1
        if reached is None:
            return V1Status.E_DIAL_ERROR, "dial failed", None
        return V1Status.OK, "", reached

    async def _race_dials(self, host: ServiceHost, peer: PeerId, addrs: list[Multiaddr]) -> Multiaddr | None:
        """Dial ``peer`` on every address at once (fresh connections, within dial_timeout); the first
        that connects wins; every connection made is closed."""
        won: list[Multiaddr] = []

        async def one(addr: Multiaddr, cancel: trio.CancelScope) -> None:
            try:
                conn = await host.dial_direct(peer, addr)
            except _ERRORS as exc:
                log.debug("autonat dial-back of %s at %s failed: %s", peer, addr, exc)
                return
            self.stats["dial_backs"] += 1
            won.append(addr)
            cancel.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await conn.aclose()

        with trio.move_on_after(self.config.dial_timeout):
            async with trio.open_nursery() as nursery:
                for addr in addrs:
                    nursery.start_soon(one, addr, nursery.cancel_scope)
        return won[0] if won else None

    async def _serve_v2(self, stream: MuxedStream) -> None:
        host = self.host
        conn = stream.connection
        peer = conn.remote_peer
        try:
            with trio.fail_after(self.config.request_timeout + self.config.dial_timeout):
                try:
                    request = decode_v2_message(await read_message(stream, V2_MAX_MESSAGE))
                    if not isinstance(request, V2Request):
                        raise AutoNATMessageError(f"expected a DialRequest, got {type(request).__name__}")
                except (AutoNATMessageError, MycelError) as exc:
                    self.stats["bad_requests"] += 1
                    log.info("autonat v2: bad request from %s: %s", peer, exc)
                    await stream.reset()
                    return
                if conn.limited or is_relay_addr(conn.remote_addr) or not self._admit(peer, 2):
                    self.stats["rate_limited"] += 1
                    log.info("autonat v2: request from %s refused (relayed or busy)", peer)
                    await write_message(stream, encode_v2_response(V2Status.E_REQUEST_REJECTED))
                    return
                if not self._v2_limits.allow(peer, trio.current_time()):
                    self._done(peer, 2)
                    self.stats["rate_limited"] += 1
                    log.info("autonat v2: request from %s rate limited", peer)
                    await write_message(stream, encode_v2_response(V2Status.E_REQUEST_REJECTED))
                    return
                try:
                    await self._answer_v2(host, stream, conn, peer, request)
                except AutoNATMessageError as exc:  # hostile dial data
                    self.stats["bad_requests"] += 1
                    log.info("autonat v2: bad dial data from %s: %s", peer, exc)
                    await stream.reset()
                finally:
                    self._done(peer, 2)
        except _ERRORS as exc:
            log.info("autonat v2: request from %s failed: %s", peer, exc)
        finally:
            self._request_finished()

    async def _answer_v2(self, host: ServiceHost, stream: MuxedStream, conn: Connection, peer: PeerId, request: V2Request) -> None:
        policy = host.config.address_policy
        transports = host.config.transports
        plan = v2_plan(
            request.addrs,
            ip_of(conn.remote_addr),
            policy,
            lambda a: any(t.can_dial(a) for t in transports),
            self._rng,
        )
        if plan.index is None:
            self.stats["refused"] += 1
            await write_message(stream, encode_v2_response(V2Status.E_DIAL_REFUSED))
            return
        addr = request.addrs[plan.index]
        assert addr is not None
        if plan.dial_data:
            await write_message(stream, encode_v2_data_request(plan.index, plan.dial_data))
            received, messages = 0, 0
            max_messages = plan.dial_data // MIN_DATA_CHUNK + 2  # dribbling 1-byte chunks is refused
            while received < plan.dial_data:
                msg = decode_v2_message(await read_message(stream, V2_MAX_MESSAGE))
                if not isinstance(msg, bytes):
                    raise AutoNATMessageError(f"expected DialDataResponse, got {type(msg).__name__}")
                received += len(msg)
                messages += 1
                if messages > max_messages and received < plan.dial_data:
                    raise AutoNATMessageError(
                        f"{messages} DialDataResponse messages for {received} of {plan.dial_data} bytes: chunks too small"
                    )
            self.stats["dial_data_bytes"] += received
        status = await self._dial_back_v2(host, peer, addr, request.nonce)
        self.stats["served"] += 1
        await write_message(stream, encode_v2_response(V2Status.OK, plan.index, status))
        await stream.send_eof()

    async def _dial_back_v2(self, host: ServiceHost, peer: PeerId, addr: Multiaddr, nonce: int) -> DialStatus:
        base, _ = split_peer_id(addr)
        with trio.move_on_after(self.config.dial_timeout):
            try:
                conn = await host.dial_direct(peer, base)
            except _ERRORS as exc:
                log.debug("autonat v2 dial-back of %s at %s failed: %s", peer, addr, exc)
                return DialStatus.E_DIAL_ERROR
            self.stats["dial_backs"] += 1
            try:
                back = await host.new_stream(peer, [DIAL_BACK_PROTOCOL], conn=conn)
                try:
                    await write_message(back, encode_v2_dial_back(nonce))
                    await back.send_eof()
                    await read_message(back, V2_MAX_MESSAGE)
                finally:
                    await back.aclose()
                return DialStatus.OK
            except _ERRORS as exc:
                log.debug("autonat v2 dial-back stream to %s failed: %s", peer, exc)
                return DialStatus.E_DIAL_BACK_ERROR
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await conn.aclose()
        return DialStatus.E_DIAL_ERROR


__all__ = ["AutoNAT", "AutoNATConfig"]
