"""The libp2p/test-plans ``transport-interop`` entrypoint (and unified-testing's ``transport`` suite).

    python -m mycel.cli.testplans        # configured by environment variables only

Listener: listens on ``ip`` (0.0.0.0 → publishes the first non-loopback interface address), RPUSHes
``<multiaddr>/p2p/<id>`` to Redis, then sleeps ``test_timeout_seconds`` and exits 1 if it ever wakes
(the harness kills it when the dialer is done). Dialer: BLPOPs the address, connects, pings, prints
``{"handshakePlusOneRTTMillis": …, "pingRTTMilllis": …}`` on stdout and exits 0. Logs go to stderr.

Redis is spoken through a small RESP client of our own (RPUSH, BLPOP, PING) so the image needs
nothing beyond mycel itself.
"""

from __future__ import annotations

import array
import fcntl
import ipaddress
import json
import logging
import os
import socket
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import trio

from mycel.core.abc import SecurityProtocol, StreamMuxer, Transport
from mycel.core.errors import ConfigError, DecodeError, MessageTooLarge, MycelError
from mycel.core.identity import Identity
from mycel.host import HostConfig, open_host
from mycel.service import Service

log = logging.getLogger("mycel.cli.testplans")

DEFAULT_REDIS = "redis:6379"
DEFAULT_TIMEOUT = 180.0
LEGACY_KEY = "listenerAddr"
TRANSPORTS = ("tcp", "quic-v1")
SECURITIES = ("noise", "tls")
MUXERS = ("yamux", "mplex")
STANDALONE = ("quic-v1",)  # transports that bring their own security and streams


# --- RESP (Redis serialization protocol), sans-IO ---------------------------------------------------

MAX_BULK = 1024 * 1024  # longest bulk string accepted; longer is MessageTooLarge (the reply is dropped)
MAX_ARRAY = 1024  # most elements in one array reply
MAX_DEPTH = 8  # deepest nesting of arrays
MAX_LINE = 64 * 1024  # longest +/-/:/$/* line; a longer one is MessageTooLarge


@dataclass(frozen=True)
class ErrorReply:
    """A ``-ERR ...`` reply: a value, not an exception, so the caller decides."""

    message: str


Reply = Union[bytes, int, None, ErrorReply, list["Reply"]]


def encode_command(*args: bytes | str | int) -> bytes:
    """A command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RespParser:
    """Bytes in (:meth:`feed`), whole replies out (:meth:`next_reply`).

    Bounded: a line over MAX_LINE, a bulk string over MAX_BULK, an array over MAX_ARRAY elements or
    nested deeper than MAX_DEPTH raises MessageTooLarge; anything malformed raises DecodeError. After
    an error the parser is unusable (the connection it came from should be closed).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def next_reply(self) -> tuple[bool, Reply]:
        """``(True, reply)`` for a complete reply, ``(False, None)`` when more bytes are needed."""
        result = self._parse(self._pos, 0)
        if result is None:
            return False, None
        value, end = result
        self._pos = end
        if self._pos > 64 * 1024:  # compact now and then: consumed bytes do not pile up
            del self._buf[: self._pos]
            self._pos = 0
        return True, value

    def _line(self, pos: int) -> tuple[bytes, int] | None:
        end = self._buf.find(b"\r\n", pos, pos + MAX_LINE + 2)
        if end < 0:
            if len(self._buf) - pos > MAX_LINE + 1:
                raise MessageTooLarge(f"RESP line longer than {MAX_LINE} bytes")
            return None
        return bytes(self._buf[pos:end]), end + 2

    @staticmethod
    def _int(text: bytes) -> int:
        if not 0 < len(text) <= 20 or not (text.isdigit() or (text[:1] == b"-" and text[1:].isdigit())):
            raise DecodeError(f"bad RESP integer {text[:32]!r}")
        return int(text)

    def _parse(self, pos: int, depth: int) -> tuple[Reply, int] | None:
        if depth > MAX_DEPTH:
            raise MessageTooLarge(f"RESP arrays nested deeper than {MAX_DEPTH}")
        line = self._line(pos)
        if line is None:
            return None
        text, pos = line
        if not text:
            raise DecodeError("empty RESP line")
        kind, body = text[:1], text[1:]
        if kind == b"+":
            return body, pos
        if kind == b"-":
            return ErrorReply(body.decode(errors="replace")), pos
        if kind == b":":
            return self._int(body), pos
        if kind == b"$":
            n = self._int(body)
            if n == -1:
                return None, pos
            if n < 0:
                raise DecodeError(f"negative RESP bulk length {n}")
            if n > MAX_BULK:
                raise MessageTooLarge(f"RESP bulk string of {n} bytes (limit {MAX_BULK})")
            if len(self._buf) < pos + n + 2:
                return None
            if self._buf[pos + n : pos + n + 2] != b"\r\n":
                raise DecodeError("RESP bulk string not followed by CRLF")
            return bytes(self._buf[pos : pos + n]), pos + n + 2
        if kind == b"*":
            n = self._int(body)
            if n == -1:
                return None, pos
            if n < 0:
                raise DecodeError(f"negative RESP array length {n}")
            if n > MAX_ARRAY:
                raise MessageTooLarge(f"RESP array of {n} elements (limit {MAX_ARRAY})")
            items: list[Reply] = []
            for _ in range(n):
                sub = self._parse(pos, depth + 1)
                if sub is None:
                    return None
                item, pos = sub
                items.append(item)
            return items, pos
        raise DecodeError(f"unknown RESP type byte {kind!r}")


class RedisError(MycelError):
    """Redis answered with an error, or something other than what the command returns."""


class RedisClient:
    """RPUSH / BLPOP / PING over one trio TCP stream, one command at a time."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._parser = RespParser()
        self._lock = trio.Lock()

    @classmethod
    async def connect(cls, host: str, port: int) -> RedisClient:
        return cls(await trio.open_tcp_stream(host, port))

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def command(self, *args: bytes | str | int) -> Reply:
        async with self._lock:
            await self._stream.send_all(encode_command(*args))
            while True:
                done, reply = self._parser.next_reply()
                if done:
                    return reply
                data = await self._stream.receive_some(64 * 1024)
                if not data:
                    raise RedisError("redis closed the connection")
                self._parser.feed(data)

    async def ping(self) -> None:
        reply = await self.command("PING")
        if reply != b"PONG":
            raise RedisError(f"PING answered {reply!r}")

    async def rpush(self, key: str, value: str) -> int:
        reply = await self.command("RPUSH", key, value)
        if not isinstance(reply, int):
            raise RedisError(f"RPUSH answered {reply!r}")
        return reply

    async def blpop(self, key: str, timeout: float) -> bytes | None:
        """Pop the head of ``key``, waiting up to ``timeout`` seconds; None on timeout."""
        reply = await self.command("BLPOP", key, f"{max(timeout, 0.001):.3f}")
        if reply is None:
            return None
        if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], bytes):
            return reply[1]
        raise RedisError(f"BLPOP answered {reply!r}")


async def connect_redis(host: str, port: int, deadline: float) -> RedisClient:
    """Connect and PING until Redis answers (it may start after us); give up at ``deadline``.

    Redis is another process with no event to wait on, so failed attempts are retried with a growing
    pause (0.1 s doubling to 1 s).
    """
    pause = 0.1
    while True:
        try:
            client = await RedisClient.connect(host, port)
            try:
                await client.ping()
                return client
            except BaseException:
                await client.aclose()
                raise
        except (OSError, RedisError) as exc:
            if trio.current_time() + pause > deadline:
                raise RedisError(f"redis at {host}:{port} not reachable: {exc}") from exc
            log.info("redis at %s:%d not ready (%s); retrying in %.1fs", host, port, exc, pause)
            await trio.sleep(pause)
            pause = min(pause * 2, 1.0)


# --- configuration from the environment -------------------------------------------------------------


@dataclass(frozen=True)
class TestPlanConfig:
    transport: str
    security: str | None
    muxer: str | None
    is_dialer: bool
    ip: str
    redis_host: str
    redis_port: int
    timeout: float
    key: str

    __test__ = False  # not a pytest test class

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TestPlanConfig:
        """Read the test-plans (lower-case) or unified-testing (upper-case) variables."""

        def get(*names: str) -> str | None:
            for name in names:
                value = env.get(name)
                if value is not None and value.strip() != "":
                    return value.strip()
            return None

        transport = get("TRANSPORT", "transport")
        if transport is None:
            raise ConfigError("transport is not set (transport / TRANSPORT)")
        if transport not in TRANSPORTS:
            raise ConfigError(f"transport {transport!r} is not supported by mycel (has {', '.join(TRANSPORTS)})")
        security = get("SECURE_CHANNEL", "security")
        muxer = get("MUXER", "muxer")
        if transport in STANDALONE:
            security = muxer = None
        else:
            if security not in SECURITIES:
                raise ConfigError(f"security {security!r} is not supported (has {', '.join(SECURITIES)})")
            if muxer not in MUXERS:
                raise ConfigError(f"muxer {muxer!r} is not supported (has {', '.join(MUXERS)})")
        dialer = get("IS_DIALER", "is_dialer")
        if dialer not in ("true", "false"):
            raise ConfigError(f"is_dialer must be 'true' or 'false', not {dialer!r}")
        ip = get("LISTENER_IP", "ip") or "0.0.0.0"
        try:
            if ipaddress.ip_address(ip).version != 4:
                raise ConfigError(f"listen ip {ip!r}: only IPv4 is supported here")
        except ValueError as exc:
            raise ConfigError(f"listen ip {ip!r} is not an IP address") from exc
        redis_host, redis_port = parse_host_port(get("REDIS_ADDR", "redis_addr") or DEFAULT_REDIS)
        raw_timeout = get("test_timeout_seconds", "TEST_TIMEOUT_SECS", "test_timeout_secs")
        try:
            timeout = float(raw_timeout) if raw_timeout is not None else DEFAULT_TIMEOUT
        except ValueError as exc:
            raise ConfigError(f"test timeout {raw_timeout!r} is not a number") from exc
        if timeout <= 0:
            raise ConfigError(f"test timeout must be positive, not {timeout}")
        test_key = get("TEST_KEY")
        key = f"{test_key}_listener_multiaddr" if test_key else LEGACY_KEY
        return cls(transport, security, muxer, dialer == "true", ip, redis_host, redis_port, timeout, key)


def parse_host_port(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"address {text!r} is not host:port")
    return host.strip("[]"), int(port)


# --- addresses ---------------------------------------------------------------------------------------

_SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address


def interface_ipv4_addrs() -> list[str]:
    """IPv4 addresses of this machine's interfaces, in interface index order (Linux; [] elsewhere)."""
    out: list[str] = []
    try:
        names = socket.if_nameindex()
    except OSError:
        return out
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in sorted(names):
            req = array.array("B", struct.pack("256s", name.encode()[:15]))
            try:
                fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, req)
            except OSError:  # no IPv4 address on this interface (or not Linux)
                continue
            out.append(socket.inet_ntoa(req.tobytes()[20:24]))
    return out


def pick_advertised_ip(listen_ip: str, candidates: Sequence[str]) -> str:
    """The IP to publish: ``listen_ip`` itself unless unspecified, else the first non-loopback one."""
    if not ipaddress.ip_address(listen_ip).is_unspecified:
        return listen_ip
    for ip in candidates:
        addr = ipaddress.ip_address(ip)
        if not addr.is_loopback and not addr.is_unspecified and not addr.is_link_local:
            return ip
    log.warning("no non-loopback interface address found (have %s): publishing 127.0.0.1", list(candidates))
    return "127.0.0.1"


def listen_multiaddr(transport: str, ip: str, port: int = 0) -> str:
    if transport == "quic-v1":
        return f"/ip4/{ip}/udp/{port}/quic-v1"
    return f"/ip4/{ip}/tcp/{port}"


# --- the host -----------------------------------------------------------------------------------------


def _transport(name: str) -> Transport:
    if name == "quic-v1":
        from mycel.transports.quic import QUIC

        return QUIC()
    from mycel.transports.tcp import TCP

    return TCP()


def _security(name: str) -> SecurityProtocol:
    if name == "tls":
        from mycel.security.tls import TLS

        return TLS()
    from mycel.security.noise import Noise

    return Noise()


def _muxer(name: str) -> StreamMuxer:
    if name == "mplex":
        from mycel.muxers.mplex import Mplex

        return Mplex()
    from mycel.muxers.yamux import Yamux

    return Yamux()


def stack_config(
    transports: Sequence[str],
    security: str | None,
    muxer: str | None,
    *,
    identity: Identity | None = None,
    listen: Sequence[str] = (),
    services: Sequence[Service] | None = None,
) -> HostConfig:
    """A host offering exactly these transports, this security and this muxer.

    ImportError when a part is not built (mycel TLS or QUIC missing).
    """
    from mycel.protocols.identify import Identify
    from mycel.protocols.ping import Ping

    stream_transport = any(t not in STANDALONE for t in transports)
    return HostConfig(
        identity=identity or Identity.generate(),
        transports=[_transport(t) for t in transports],
        security=[_security(security or "noise")] if stream_transport else [],
        muxers=[_muxer(muxer or "yamux")] if stream_transport else [],
        services=list(services) if services is not None else [Identify(), Ping()],
        listen=list(listen),
    )


# --- the two roles ------------------------------------------------------------------------------------


async def run_listener(config: TestPlanConfig, redis: RedisClient) -> int:
    host_config = stack_config([config.transport], config.security, config.muxer,
                               listen=[listen_multiaddr(config.transport, config.ip)])  # fmt: skip
    async with open_host(host_config) as host:
        bound = host.listen_addrs[0]
        port = int(bound.value_for_protocol("udp" if config.transport in STANDALONE else "tcp"))
        ip = pick_advertised_ip(config.ip, interface_ipv4_addrs())
        addr = f"{listen_multiaddr(config.transport, ip, port)}/p2p/{host.peer_id}"
        await redis.rpush(config.key, addr)
        log.info("listening on %s; published %s under %r", bound, addr, config.key)
        await trio.sleep(config.timeout)  # the harness stops us when the dialer is done
        log.error("still running after the %gs test timeout", config.timeout)
        return 1


async def run_dialer(config: TestPlanConfig, redis: RedisClient) -> int:
    from mycel.protocols.ping import Ping

    raw = await redis.blpop(config.key, config.timeout)
    if raw is None:
        log.error("no listener address under %r within %gs", config.key, config.timeout)
        return 1
    target = raw.decode()
    log.info("dialing %s", target)
    host_config = stack_config([config.transport], config.security, config.muxer)
    async with open_host(host_config) as host:
        start = trio.current_time()
        conn = await host.connect(target)
        rtts = await host.service(Ping).ping(conn.remote_peer, 1)
        handshake_plus_one_rtt = (trio.current_time() - start) * 1000
        log.info("connected to %s over %s + %s", conn.remote_peer, conn.security_protocol, conn.muxer_protocol)
        # printed before the host closes: the harness may stop the listener as soon as it sees this
        result = {
            "handshakePlusOneRTTMillis": round(handshake_plus_one_rtt, 3),
            "pingRTTMilllis": round(rtts[0] * 1000, 3),
        }
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    return 0


async def run(config: TestPlanConfig) -> int:
    with trio.fail_after(config.timeout + 5):  # the dialer never outlives the test timeout
        redis = await connect_redis(config.redis_host, config.redis_port, trio.current_time() + config.timeout)
    try:
        if config.is_dialer:
            with trio.fail_after(config.timeout):
                return await run_dialer(config, redis)
        return await run_listener(config, redis)
    finally:
        await redis.aclose()


def main(env: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("MYCEL_LOG", "INFO").upper(),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        config = TestPlanConfig.from_env(os.environ if env is None else env)
    except ConfigError as exc:
        log.error("configuration: %s", exc)
        return 2
    log.info("config: %s", config)
    try:
        return trio.run(run, config)
    except trio.TooSlowError:
        log.error("timed out after %gs", config.timeout)
        return 1
    except ImportError as exc:
        log.error("this mycel build lacks a part the stack needs: %s", exc)
        return 2
    except (MycelError, OSError, ValueError) as exc:
        log.error("failed: %s: %s", type(exc).__name__, exc)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
