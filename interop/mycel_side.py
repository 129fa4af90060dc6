"""mycel's half of an interop cell: the host for a stack, and the cases run from mycel's side.

mycel runs in-process (trio); the other implementation runs through the adapters in ``peers.py``.

* :func:`mycel_dials` — mycel dials a :class:`~interop.peers.ListeningPeer` and runs every case itself,
  checking what the peer reports (identify) and what the peer observes (its ``stream_reset`` events).
* :func:`mycel_listens` — a peer program dials mycel and reports its cases; mycel's side checks what
  the peer says about us (agent, protocols, addresses, our signed peer record) and what mycel saw
  (the connection's security and muxer, how each echo stream ended, the reset).

Every case ends as a :class:`CaseResult` with status ``pass``, ``fail`` or ``unsupported`` and a
detail; an unsupported case always carries the reason.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import trio
from multiaddr import Multiaddr

from interop.peers import CASES, DialResult, ListeningPeer, PeerImpl, Stack
from mycel.core.abc import Connection, MuxedStream, SecurityProtocol, StreamMuxer, Transport
from mycel.core.errors import MycelError, StreamReset
from mycel.core.events import ConnectionOpened
from mycel.core.identity import Identity
from mycel.core.keys import public_key_from_protobuf
from mycel.core.peer_id import PeerId
from mycel.core.record import open_peer_record
from mycel.host import Host, HostConfig
from mycel.multistream import select_outbound
from mycel.protocols.identify import ID_PROTOCOL, Identify, read_identify
from mycel.protocols.ping import PING_PROTOCOL, Ping
from mycel.service import Service, StreamHandler

log = logging.getLogger("mycel.interop.mycel_side")

ECHO = "/echo/1.0.0"
CHUNK = 64 * 1024
MAX_ECHO_RECORDS = 4096  # per host; older records are dropped (a cell opens fewer than 100 streams)
REQUIRED_PROTOCOLS = (ID_PROTOCOL, PING_PROTOCOL, ECHO)

Status = Literal["pass", "fail", "unsupported"]


@dataclass
class CaseResult:
    status: Status
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, **self.figures}


class CaseFailed(Exception):
    """A check did not hold; the message is the detail."""


class CaseUnsupported(Exception):
    """The other implementation cannot do this case by itself; the message is the reason."""


# --- mycel's stack ---------------------------------------------------------------------------------

SECURITY_IDS = {"noise": "/noise", "tls": "/tls/1.0.0"}
MUXER_IDS = {"yamux": "/yamux/1.0.0", "mplex": "/mplex/6.7.0"}


def _transport(name: str) -> Transport:
    if name == "tcp":
        from mycel.transports.tcp import TCP

        return TCP()
    if name == "quic-v1":
        from mycel.transports.quic import QUIC

        return QUIC()
    raise LookupError(f"mycel has no {name} transport")


def _security(name: str) -> SecurityProtocol:
    if name == "noise":
        from mycel.security.noise import Noise

        return Noise()
    if name == "tls":
        from mycel.security.tls import TLS

        return TLS()
    raise LookupError(f"mycel has no {name} security")


def _muxer(name: str) -> StreamMuxer:
    if name == "yamux":
        from mycel.muxers.yamux import Yamux

        return Yamux()
    if name == "mplex":
        from mycel.muxers.mplex import Mplex

        return Mplex()
    raise LookupError(f"mycel has no {name} muxer")


_NOT_BUILT = {"tls": "mycel TLS not built", "quic-v1": "mycel QUIC not built"}


def mycel_unsupported(stack: Stack) -> str | None:
    """Why mycel cannot run ``stack`` here (a part not built or not importable), or None."""
    parts: list[tuple[str, Callable[[str], object]]] = [(stack.transport, _transport)]
    if stack.security is not None:
        parts.append((stack.security, _security))
    if stack.muxer is not None:
        parts.append((stack.muxer, _muxer))
    for name, make in parts:
        try:
            make(name)
        except ImportError as exc:
            return f"{_NOT_BUILT.get(name, f'mycel {name} not built')} ({exc})"
        except LookupError as exc:
            return str(exc)
    return None


def listen_addr(stack: Stack) -> str:
    if stack.transport == "quic-v1":
        return "/ip4/127.0.0.1/udp/0/quic-v1"
    return f"/ip4/127.0.0.1/{stack.transport}/0"


def mycel_config(stack: Stack, services: list[Service], *, listen: bool) -> HostConfig:
    """A host that offers exactly this stack (one transport, one security, one muxer)."""
    return HostConfig(
        identity=Identity.generate(),
        transports=[_transport(stack.transport)],
        security=[_security(stack.security)] if stack.security else [],
        muxers=[_muxer(stack.muxer)] if stack.muxer else [],
        services=services,
        listen=[listen_addr(stack)] if listen else [],
    )


def expected_protocols(stack: Stack) -> tuple[str | None, str | None]:
    """The security and muxer protocol ids a connection over ``stack`` must report (None: any)."""
    return (SECURITY_IDS.get(stack.security or ""), MUXER_IDS.get(stack.muxer or ""))


# --- the echo service mycel serves in the "peer dials mycel" direction ------------------------------


@dataclass
class EchoRecord:
    """How one inbound echo stream went, as mycel's handler saw it."""

    peer: str
    received: int = 0
    sent: int = 0
    sent_after_eof: int = 0
    end: str = "running"  # "eof", "reset" or "error: ..."


class RecordingEcho(Service):
    """``/echo/1.0.0`` that records how each stream ended.

    With ``lagged=True`` the last byte received so far is held back until more data or the remote's
    half-close arrives, so every echo proves that writing after the remote's EOF works (and a peer
    waiting for *some* echo still gets it). A dialer that reads the whole echo *before* half-closing
    (p2pd) needs ``lagged=False``.
    """

    def __init__(self, *, lagged: bool) -> None:
        self.lagged = lagged
        self.records: deque[EchoRecord] = deque(maxlen=MAX_ECHO_RECORDS)
        self._changed = trio.Event()

    def handlers(self) -> Mapping[str, StreamHandler]:
        return {ECHO: self._handle}

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[list[EchoRecord]], bool], timeout: float) -> bool:
        """Wait until ``predicate(records)`` holds; False on timeout."""
        with trio.move_on_after(timeout):
            while not predicate(list(self.records)):
                await self._changed.wait()
            return True
        return False

    async def _handle(self, stream: MuxedStream) -> None:
        rec = EchoRecord(peer=str(stream.connection.remote_peer))
        self.records.append(rec)
        held = b""  # lagged: the one byte held back
        try:
            while True:
                data = await stream.receive_some(CHUNK)
                if not data:
                    break
                rec.received += len(data)
                if self.lagged:
                    if held:
                        await stream.send_all(held)
                    view = memoryview(data)
                    if len(view) > 1:
                        await stream.send_all(view[:-1])
                    held = bytes(view[-1:])
                else:
                    await stream.send_all(data)
                rec.sent += len(data)
            if held:
                await stream.send_all(held)
                rec.sent_after_eof = len(held)
            await stream.send_eof()
            rec.end = "eof"
        except StreamReset:
            rec.end = "reset"
        except (MycelError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            rec.end = f"error: {type(exc).__name__}: {exc}"
        finally:
            log.debug("echo stream from %s: %s", rec.peer, rec)
            self._notify()


def services(echo: Service) -> list[Service]:
    return [Identify(), Ping(), echo]


# --- helpers ---------------------------------------------------------------------------------------


async def guarded(name: str, fn: Callable[[], Awaitable[CaseResult]], timeout: float) -> CaseResult:
    """Run one case: a failed check, an exception or the timeout becomes a ``fail`` with a detail."""
    with trio.move_on_after(timeout):
        try:
            return await fn()
        except CaseFailed as exc:
            return CaseResult("fail", str(exc))
        except CaseUnsupported as exc:
            return CaseResult("unsupported", str(exc))
        except Exception as exc:
            log.info("case %s raised", name, exc_info=True)
            return CaseResult("fail", error_detail(exc))
    return CaseResult("fail", f"timed out after {timeout:g}s")


def error_detail(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(sorted({error_detail(e) for e in exc.exceptions}))
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check(cond: bool, detail: str) -> None:
    if not cond:
        raise CaseFailed(detail)


async def _read_to_eof(stream: trio.abc.ReceiveStream, limit: int) -> bytearray:
    got = bytearray()
    while True:
        data = await stream.receive_some(CHUNK)
        if not data:
            return got
        got += data
        if len(got) > limit:
            raise CaseFailed(f"received {len(got)} bytes, more than the {limit} sent")


async def _read_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    from mycel.core.errors import UnexpectedEOF
    from mycel.core.framing import read_exactly

    try:
        return await read_exactly(stream, n)
    except UnexpectedEOF as exc:
        raise CaseFailed(f"EOF after {exc.received} of {n} echoed bytes") from None


def _compare(sent: bytes, got: bytes | bytearray) -> None:
    if got != sent:
        n = min(len(sent), len(got))
        at = next((i for i in range(0, n, 4096) if sent[i : i + 4096] != got[i : i + 4096]), n)
        raise CaseFailed(f"echo differs: sent {len(sent)} bytes, got {len(got)} (first bad 4 KiB block at {at})")


async def echo_roundtrip(host: Host, peer: PeerId, payload: bytes, *, half_close: bool) -> bytearray:
    """Open an echo stream, send ``payload`` and read it back.

    ``half_close``: write, half-close, read to EOF (concurrently). Otherwise write and read exactly
    ``len(payload)`` back, then close (for peers whose echo dies with a half-close).
    """
    stream = await host.new_stream(peer, [ECHO])
    got = bytearray()
    try:
        async with trio.open_nursery() as nursery:

            async def writer() -> None:
                await stream.send_all(payload)
                if half_close:
                    await stream.send_eof()

            async def reader() -> None:
                if half_close:
                    got.extend(await _read_to_eof(stream, len(payload)))
                else:
                    got.extend(await _read_exactly(stream, len(payload)))

            nursery.start_soon(writer)
            nursery.start_soon(reader)
    except BaseException:
        with trio.CancelScope(shield=True):
            await _reset_quietly(stream)
        raise
    await stream.aclose()
    return got


async def _reset_quietly(stream: MuxedStream) -> None:
    try:
        await stream.reset()
    except (MycelError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass


def _strip_p2p(addr: str) -> str:
    return addr.split("/p2p/")[0]


# --- mycel dials the peer ----------------------------------------------------------------------------


async def mycel_dials(
    host: Host, impl: PeerImpl, listener: ListeningPeer, stack: Stack, case_timeout: float
) -> dict[str, CaseResult]:
    """Every case with mycel as the dialer against a running peer listener."""
    peer_id = PeerId.from_string(listener.peer_id)
    target = listener.addrs[0]
    half_close = impl.echo_after_half_close
    conn_box: list[Connection] = []

    def conn() -> Connection:
        if not conn_box:
            raise CaseFailed("not connected")
        return conn_box[0]

    async def connect() -> CaseResult:
        start = time.perf_counter()
        c = await host.connect(target)
        ms = (time.perf_counter() - start) * 1000
        conn_box.append(c)
        want_sec, want_mux = expected_protocols(stack)
        check(c.remote_peer == peer_id, f"connected to {c.remote_peer}, expected {peer_id}")
        check(want_sec is None or c.security_protocol == want_sec, f"security is {c.security_protocol}, not {want_sec}")
        check(want_mux is None or c.muxer_protocol == want_mux, f"muxer is {c.muxer_protocol}, not {want_mux}")
        return CaseResult(
            "pass",
            f"dialed {target}; {c.security_protocol} + {c.muxer_protocol}",
            {"ms": round(ms, 3), "security": c.security_protocol, "muxer": c.muxer_protocol},
        )

    async def identify() -> CaseResult:
        c = conn()
        # what the peer sends, decoded and checked field by field (not through mycel's service)
        with trio.fail_after(case_timeout):
            stream = await c.open_stream()
            try:
                await select_outbound(stream, [ID_PROTOCOL])
                await stream.send_eof()
                msg = await read_identify(stream)
            finally:
                await stream.aclose()
        check(msg.HasField("publicKey"), "identify carries no public key")
        key = public_key_from_protobuf(msg.publicKey)
        check(PeerId.from_public_key(key) == peer_id, "identify's public key does not match the peer id")
        check(bool(msg.agentVersion), "empty agentVersion")
        missing = [p for p in REQUIRED_PROTOCOLS if p not in msg.protocols]
        check(not missing, f"protocols lack {missing}: {list(msg.protocols)}")
        listen = [str(Multiaddr(a)) for a in msg.listenAddrs]
        want_addr = _strip_p2p(target)
        check(want_addr in listen, f"listen addrs {listen} lack {want_addr}")
        observed = str(Multiaddr(msg.observedAddr)) if msg.HasField("observedAddr") else ""
        # js appends /p2p/<our id> to the observed address; the transport part must be ours
        check(
            _strip_p2p(observed) == str(c.local_addr) and observed.split("/p2p/")[1:] in ([], [str(host.peer_id)]),
            f"peer observed us at {observed or 'nothing'}, we are {c.local_addr}",
        )
        record = "absent"
        record_addrs: list[str] = []
        if msg.HasField("signedPeerRecord"):
            env, rec = open_peer_record(msg.signedPeerRecord)
            check(rec.peer_id == peer_id, f"signed peer record is for {rec.peer_id}")
            check(env.public_key == key, "signed peer record signed by another key")
            record_addrs = [str(a) for a in rec.addrs]
            # py-libp2p puts /p2p/<its id> on its record's addresses; anything else is an error
            plain = [a.removesuffix(f"/p2p/{peer_id}") for a in record_addrs]
            check(want_addr in plain, f"signed peer record addrs {record_addrs} lack {want_addr}")
            record = "verified"
        # and mycel's identify service must reach the same verdict
        res = await host.service(Identify).identify_connection(c)
        check(res.signed_record_verified == (record == "verified"), "mycel's Identify disagrees on the peer record")
        check(res.agent_version == msg.agentVersion, "mycel's Identify reports another agent version")
        return CaseResult(
            "pass",
            f"agent {msg.agentVersion!r}, {len(msg.protocols)} protocols, key matches id, "
            f"observed us correctly, signed peer record {record}",
            {
                "agent_version": msg.agentVersion,
                "protocol_version": msg.protocolVersion,
                "protocols": sorted(msg.protocols),
                "listen_addrs": listen,
                "observed_addr": observed,
                "signed_peer_record": record,
                "signed_peer_record_addrs": record_addrs,
            },
        )

    async def ping() -> CaseResult:
        rtts = await host.service(Ping).ping(peer_id, count=3)
        check(len(rtts) == 3, f"{len(rtts)} of 3 pings answered")
        return CaseResult("pass", "3 pings on one stream", {"rtt_ms": [round(r * 1000, 3) for r in rtts]})

    how = "write, half-close, read to EOF" if half_close else "write, read all back, close (peer cannot half-close)"

    async def echo_1mib() -> CaseResult:
        payload = os.urandom(1 << 20)
        start = time.perf_counter()
        got = await echo_roundtrip(host, peer_id, payload, half_close=half_close)
        secs = time.perf_counter() - start
        _compare(payload, got)
        return CaseResult(
            "pass",
            f"1 MiB echoed intact ({how})",
            {"ms": round(secs * 1000, 3), "mb_s": round(len(payload) / secs / 1e6, 2)},
        )

    async def echo_64_streams() -> CaseResult:
        n, size = 64, 64 * 1024
        errors: list[str] = []

        async def one(i: int) -> None:
            payload = os.urandom(size)
            try:
                _compare(payload, await echo_roundtrip(host, peer_id, payload, half_close=half_close))
            except Exception as exc:
                errors.append(f"stream {i}: {error_detail(exc)}")

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
        ms = (time.perf_counter() - start) * 1000
        check(not errors, f"{n - len(errors)}/{n} streams intact; first error: {sorted(errors)[0] if errors else ''}")
        return CaseResult("pass", f"{n} concurrent streams of {size} bytes echoed intact ({how})", {"ms": round(ms, 3)})

    async def half_close_case() -> CaseResult:
        if not impl.echo_after_half_close:
            raise CaseUnsupported(f"{impl.name}: {impl.notes.get('half_close', 'cannot half-close')}")
        payload = os.urandom(10_000)
        stream = await host.new_stream(peer_id, [ECHO])
        try:
            await stream.send_all(payload)
            await stream.send_eof()
            # our write side is closed; everything below arrives on the still-open read side
            got = await _read_to_eof(stream, len(payload))
        except BaseException:
            with trio.CancelScope(shield=True):
                await _reset_quietly(stream)
            raise
        await stream.aclose()
        check(len(got) == len(payload), f"EOF after {len(got)} of {len(payload)} bytes: the echo was cut short")
        _compare(payload, got)
        return CaseResult(
            "pass",
            "we half-closed; the peer echoed all 10000 bytes (it saw our EOF only after our last byte), "
            "then its EOF reached us after its last byte",
        )

    async def reset() -> CaseResult:
        before = len(listener.events("stream_reset"))
        stream = await host.new_stream(peer_id, [ECHO])
        try:
            await stream.send_all(b"r" * 64)
            first = await stream.receive_some(1)
            check(bool(first), "echo stream ended before anything was echoed")
        finally:
            await stream.reset()
        # the connection must survive the reset
        payload = os.urandom(4096)
        _compare(payload, await echo_roundtrip(host, peer_id, payload, half_close=half_close))
        if not impl.reports_resets:
            raise CaseUnsupported(
                f"{impl.name}: its listener cannot tell a reset from a half-close and prints no stream_reset "
                "events; our reset was sent and a new stream on the connection then worked"
            )
        seen = await listener.wait_for_event("stream_reset", timeout=min(10.0, case_timeout), count=before + 1)
        check(len(seen) > before, "the peer printed no stream_reset event after our reset")
        event = seen[-1]
        check(event.get("protocol") == ECHO, f"reset event for protocol {event.get('protocol')}")
        check(event.get("peer") == str(host.peer_id), f"reset event names peer {event.get('peer')}, not us")
        detail = f"we reset an echo stream; the peer saw it ({event.get('detail', '')})"
        return CaseResult("pass", detail, {"event": event})

    steps: dict[str, Callable[[], Awaitable[CaseResult]]] = {
        "connect": connect,
        "identify": identify,
        "ping": ping,
        "echo_1mib": echo_1mib,
        "echo_64_streams": echo_64_streams,
        "half_close": half_close_case,
        "reset": reset,
    }
    assert tuple(steps) == CASES
    results: dict[str, CaseResult] = {}
    for name, fn in steps.items():
        results[name] = await guarded(name, fn, case_timeout)
        if name == "connect" and results[name].status != "pass":
            for rest in CASES[1:]:
                results[rest] = CaseResult("fail", "not run: connect failed")
            break
    return results


# --- the peer dials mycel ----------------------------------------------------------------------------


@dataclass
class InboundConnections:
    """The connections mycel accepted during a cell (bounded: at most 64 remembered)."""

    conns: list[Connection] = field(default_factory=list)

    async def collect(self, host: Host, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with host.subscribe() as events:
            task_status.started()
            async for event in events:
                if isinstance(event, ConnectionOpened) and len(self.conns) < 64:
                    self.conns.append(event.connection)


async def mycel_listens(
    host: Host,
    impl: PeerImpl,
    echo: RecordingEcho,
    inbound: InboundConnections,
    stack: Stack,
    result: DialResult,
    case_timeout: float,
) -> dict[str, CaseResult]:
    """Judge the peer's dial report together with what mycel saw."""
    results: dict[str, CaseResult] = {}
    reported = result.cases
    our_addr = str(host.listen_addrs[0])

    def peer_case(name: str) -> dict[str, Any]:
        case = reported.get(name)
        if case is None:
            raise CaseFailed(f"the {impl.key} dialer reported nothing for {name}")
        if case.get("ok") is not True:
            raise CaseFailed(f"{impl.key} dialer: {case.get('detail', 'failed')}")
        return case

    def figures(case: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in case.items() if k not in ("ok", "detail")}

    async def connect() -> CaseResult:
        case = peer_case("connect")
        check(bool(inbound.conns), "mycel saw no inbound connection")
        want_sec, want_mux = expected_protocols(stack)
        for c in inbound.conns:
            check(
                want_sec is None or c.security_protocol == want_sec,
                f"inbound security {c.security_protocol}, not {want_sec}",
            )
            check(want_mux is None or c.muxer_protocol == want_mux, f"inbound muxer {c.muxer_protocol}, not {want_mux}")
        c = inbound.conns[0]
        return CaseResult(
            "pass",
            f"{impl.key} connected ({case.get('detail', '')}); "
            f"mycel accepted {c.security_protocol} + {c.muxer_protocol} "
            f"from {c.remote_peer}",
            figures(case),
        )

    async def identify() -> CaseResult:
        case = peer_case("identify")
        agent = str(case.get("agent_version", ""))
        check(agent.startswith("mycel/"), f"the peer saw agent {agent!r}")
        protocols = list(case.get("protocols", []))
        missing = [p for p in REQUIRED_PROTOCOLS if p not in protocols]
        check(not missing, f"the peer saw protocols {protocols}, lacking {missing}")
        listen = [str(a) for a in case.get("listen_addrs", [])]
        check(our_addr in listen, f"the peer saw listen addrs {listen}, not {our_addr}")
        record = str(case.get("signed_peer_record", "not reported"))
        check(record == "verified", f"the peer's verdict on our signed peer record: {record}")
        record_addrs = [str(a) for a in case.get("signed_peer_record_addrs", [])]
        check(our_addr in record_addrs, f"our signed peer record as the peer read it has {record_addrs}")
        observed = str(case.get("observed_addr", ""))
        ours = {str(c.remote_addr) for c in inbound.conns}
        check(observed in ours, f"we told the peer it is at {observed!r}; mycel saw it at {sorted(ours)}")
        extra = ""
        if "peerstore_has_envelope" in case:
            check(case["peerstore_has_envelope"] is True, "js kept no envelope of our record in its peer store")
            extra = "; js stored our record envelope"
        if "go_peerstore_addrs" in case:
            go_addrs = [str(a) for a in case["go_peerstore_addrs"]]
            check(our_addr in go_addrs, f"go's peer store has {go_addrs}, not {our_addr}")
            extra = "; go's peer store has our address"
        return CaseResult(
            "pass",
            f"the peer saw agent {agent!r}, our protocols and address; our signed peer record verified{extra}",
            figures(case),
        )

    async def ping() -> CaseResult:
        case = peer_case("ping")
        return CaseResult("pass", str(case.get("detail", "")), figures(case))

    # how mycel's handler must see a finished echo stream end: a dialer that half-closes gives a clean
    # EOF; p2pd (no half-close) closes the whole stream after reading the echo, which may arrive as a reset
    clean_ends = ("eof",) if impl.echo_after_half_close else ("eof", "reset")

    async def echo_case(name: str, count: int, size: int) -> CaseResult:
        case = peer_case(name)
        mine = [r for r in echo.records if r.received == size]
        check(len(mine) >= count, f"mycel's echo handler saw {len(mine)} streams of {size} bytes, expected {count}")
        bad = [r for r in mine if r.end not in clean_ends or r.sent != size]
        check(not bad, f"mycel's echo handler: {len(bad)} stream(s) ended badly, e.g. {bad[0] if bad else ''}")
        detail = f"{case.get('detail', '')}; mycel echoed {count} stream(s) of {size} bytes"
        return CaseResult("pass", detail, figures(case))

    async def half_close() -> CaseResult:
        if not impl.echo_after_half_close:
            raise CaseUnsupported(f"{impl.name} cannot half-close as a dialer: {impl.notes.get('half_close', '')}")
        case = peer_case("half_close")
        seen = [r for r in echo.records if r.received == 10_000]
        check(bool(seen), "mycel's echo handler saw no 10000-byte stream")
        rec = seen[-1]
        check(rec.end == "eof", f"mycel's echo handler ended with {rec.end}")
        check(
            rec.sent == 10_000 and rec.sent_after_eof > 0,
            f"mycel echoed {rec.sent} bytes, {rec.sent_after_eof} after EOF",
        )
        return CaseResult(
            "pass",
            f"{impl.key} half-closed; mycel saw EOF after all 10000 bytes, wrote {rec.sent_after_eof} bytes after it, "
            f"and the peer read everything then EOF",
            figures(case),
        )

    def reset_seen(records: list[EchoRecord]) -> bool:
        # the reset case writes 64 bytes, waits for the first echoed byte, then resets
        return any(0 < r.received <= 64 and r.end == "reset" for r in records)

    async def reset() -> CaseResult:
        case = peer_case("reset")
        saw = await echo.wait_for(reset_seen, timeout=min(10.0, case_timeout))
        small = [f"{r.received}B:{r.end}" for r in echo.records if r.received <= 64]
        check(saw, f"mycel's echo handler saw no StreamReset on the reset stream (short streams: {small})")
        return CaseResult("pass", f"{case.get('detail', '')}; mycel's handler got StreamReset", figures(case))

    steps: dict[str, Callable[[], Awaitable[CaseResult]]] = {
        "connect": connect,
        "identify": identify,
        "ping": ping,
        "echo_1mib": lambda: echo_case("echo_1mib", 1, 1 << 20),
        "echo_64_streams": lambda: echo_case("echo_64_streams", 64, 64 * 1024),
        "half_close": half_close,
        "reset": reset,
    }
    assert tuple(steps) == CASES
    for name, fn in steps.items():
        results[name] = await guarded(name, fn, case_timeout)
    return results
