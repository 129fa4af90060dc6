"""The ``mycel`` command: id, listen, ping, identify, chat, pubsub (sub / pub), dht.

Errors are one readable line on stderr and a non-zero exit status (1: it failed, 2: the command
line was wrong), never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import trio
from multiaddr import Multiaddr

from mycel import __version__
from mycel.core.abc import Connection, Direction, SecurityProtocol, StreamMuxer, Transport
from mycel.core.addrs import split_peer_id, tcp_host_port
from mycel.core.errors import (
    DecodeError,
    DialError,
    HandshakeError,
    MycelError,
    NegotiationError,
    PeerIdMismatch,
    ProtocolNotSupported,
    ProtocolViolation,
    single_exception,
)
from mycel.core.events import ConnectionClosed, ConnectionOpened, StreamHandlerFailed, StreamOpened
from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from mycel.host import Host, HostConfig, open_host

log = logging.getLogger("mycel.cli")

TCP_LOOPBACK = "/ip4/127.0.0.1/tcp/0"
QUIC_LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"
DEFAULT_LISTEN = {"tcp": TCP_LOOPBACK, "quic": QUIC_LOOPBACK}
DEFAULT_TRANSPORTS = ["tcp", "quic"]  # what go-libp2p dials by default
DEFAULT_SECURITY = ["noise", "tls"]  # what every go, rust and js node speaks
DEFAULT_MUXERS = ["yamux", "mplex"]
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class CliError(Exception):
    """A failure reported as ``mycel: error: <message>`` with exit status ``status``."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


def default_key_path() -> str:
    """``~/.mycel/identity.key``, resolved when asked (so HOME set after import counts)."""
    return os.path.join(os.path.expanduser("~"), ".mycel", "identity.key")


def load_identity(path: str) -> Identity:
    """Load the key file at ``path``, or create it (and its folder, mode 0700) with a new key."""
    p = Path(path).expanduser()
    try:
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Identity.load_or_create(p)
    except DecodeError as exc:
        raise CliError(f"{p} is not a libp2p private key file ({exc})") from None
    except OSError as exc:
        raise CliError(f"cannot use key file {p}: {exc.strerror or exc}") from None


# -- addresses -------------------------------------------------------------------------------------

_HOST_PORT = re.compile(r"^(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s/:\[\]]+)):(?P<port>\d{1,5})$")
_MULTIADDR_ERROR = re.compile(r"^Invalid MultiAddr '.*?': | \(string: .*\)$")


def _as_multiaddr_text(text: str) -> str | None:
    """``1.2.3.4:4001`` → ``/ip4/1.2.3.4/tcp/4001`` (what was probably meant); None if not host:port."""
    m = _HOST_PORT.match(text.strip())
    if m is None:
        return None
    if m["ip6"]:
        return f"/ip6/{m['ip6']}/tcp/{m['port']}"
    try:
        version = ipaddress.ip_address(m["host"]).version
    except ValueError:
        return f"/dns/{m['host']}/tcp/{m['port']}"
    return f"/ip{version}/{m['host']}/tcp/{m['port']}"


def parse_multiaddr(text: str, *, peer_address: bool) -> Multiaddr:
    """``text`` as a multiaddr, or a CliError that shows the multiaddr form of what was typed.

    ``peer_address``: it names a peer to dial (the suggestion then ends in ``/p2p/<peer id>``).
    """
    if not text.startswith("/"):
        suggestion = _as_multiaddr_text(text) or "/ip4/1.2.3.4/tcp/4001"
        if peer_address:
            suggestion += "/p2p/<peer id>"
        raise CliError(f"{text!r} is not a multiaddr: use {suggestion}", EXIT_USAGE)
    try:
        addr = Multiaddr(text)
        if peer_address:
            split_peer_id(addr)  # a /p2p/ part must hold a valid peer id
    except (ValueError, MycelError) as exc:
        reason = _MULTIADDR_ERROR.sub("", str(exc))  # the multiaddr package repeats the whole text twice
        raise CliError(f"{text!r} is not a valid multiaddr: {reason}", EXIT_USAGE) from None
    return addr


def _quic_twin(addr: Multiaddr) -> Multiaddr | None:
    """``/ip4/H/tcp/P`` → ``/ip4/H/udp/P/quic-v1``: the QUIC address ``--quic`` adds next to a TCP one."""
    parsed = tcp_host_port(addr)
    if parsed is None or parsed[0] not in ("ip4", "ip6"):
        return None
    proto, host, port = parsed
    return Multiaddr(f"/{proto}/{host}/udp/{port}/quic-v1")


def _is_quic(addr: Multiaddr) -> bool:
    return any(p.name == "quic-v1" for p in addr.protocols())


def listen_addrs(args: argparse.Namespace) -> list[Multiaddr]:
    """The addresses ``mycel listen`` binds: ``--listen`` (default: loopback, TCP unless ``--transport``
    says otherwise), plus with ``--quic`` a QUIC address beside each TCP one."""
    if args.listen:
        addrs = [parse_multiaddr(a, peer_address=False) for a in args.listen]
    else:
        addrs = [Multiaddr(DEFAULT_LISTEN[name]) for name in dict.fromkeys(args.transport or ["tcp"])]
    if args.quic and not any(_is_quic(a) for a in addrs):
        addrs += [twin for twin in map(_quic_twin, addrs) if twin is not None] or [Multiaddr(QUIC_LOOPBACK)]
    return addrs


# -- the host --------------------------------------------------------------------------------------


def _transport_names(args: argparse.Namespace) -> list[str]:
    names = list(dict.fromkeys(args.transport or DEFAULT_TRANSPORTS))
    if getattr(args, "quic", False) and "quic" not in names:
        names.append("quic")
    return names


def build_config(args: argparse.Namespace, identity: Identity, listen: Sequence[Multiaddr] = ()) -> HostConfig:
    from mycel.muxers.mplex import Mplex
    from mycel.muxers.yamux import Yamux
    from mycel.protocols.echo import Echo
    from mycel.protocols.identify import Identify
    from mycel.protocols.ping import Ping
    from mycel.security.noise import Noise
    from mycel.security.plaintext import Plaintext
    from mycel.security.tls import TLS
    from mycel.transports.quic import QUIC
    from mycel.transports.tcp import TCP

    transport_kinds: dict[str, Callable[[], Transport]] = {"tcp": TCP, "quic": QUIC}
    security_kinds: dict[str, Callable[[], SecurityProtocol]] = {"noise": Noise, "tls": TLS, "plaintext": Plaintext}
    muxer_kinds: dict[str, Callable[[], StreamMuxer]] = {"yamux": Yamux, "mplex": Mplex}
    transports = [transport_kinds[name]() for name in _transport_names(args)]
    for addr in listen:
        if not any(t.can_listen(addr) for t in transports):
            hint = "add --transport quic" if _is_quic(addr) else "check the address and --transport"
            raise CliError(f"no enabled transport can listen on {addr} ({hint})", EXIT_USAGE)
    return HostConfig(
        identity=identity,
        transports=transports,
        security=[security_kinds[name]() for name in dict.fromkeys(args.security or DEFAULT_SECURITY)],
        muxers=[muxer_kinds[name]() for name in dict.fromkeys(args.muxer or DEFAULT_MUXERS)],
        services=[Identify(), Ping(), Echo()],
        listen=list(listen),
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what led to it: causes, contexts, a DialError's per-address errors, group members."""
    seen: set[int] = set()
    queue = [exc]
    while queue:
        e = queue.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        if e.__cause__ is not None:
            queue.append(e.__cause__)
        elif e.__context__ is not None and not e.__suppress_context__:
            queue.append(e.__context__)
        if isinstance(e, DialError):
            queue.extend(e.errors)
        if isinstance(e, BaseExceptionGroup):
            queue.extend(e.exceptions)


def explain_dial_error(exc: BaseException, target: Multiaddr) -> str:
    """One sentence a person understands for a failed dial of ``target``."""
    chain = list(_causes(exc))

    def first(kind: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, kind)), None)

    if (mismatch := first(PeerIdMismatch)) is not None:
        return f"{target}: wrong peer: {mismatch}"
    if first(ConnectionRefusedError) is not None:
        return f"cannot connect to {target}: connection refused (nothing is listening there)"
    if isinstance(os_error := first(OSError), OSError):
        return f"cannot connect to {target}: {os_error.strerror or os_error}"
    if (refused := first(ProtocolNotSupported)) is not None:
        return f"{target} speaks libp2p but none of what we offered ({refused}); try other --security / --muxer"
    if (garbage := first((ProtocolViolation, NegotiationError))) is not None:
        return f"{target} is not a libp2p peer: it broke off the libp2p handshake ({garbage})"
    if (failed := first(HandshakeError)) is not None:
        return f"secure handshake with {target} failed: {failed}"
    return f"cannot connect to {target}: {exc}"


async def connect(host: Host, target: Multiaddr, timeout: float) -> Connection:
    try:
        with trio.fail_after(timeout):
            return await host.connect(target)
    except trio.TooSlowError:
        raise CliError(f"no answer from {target} within {timeout:g} s (is a libp2p peer listening there?)") from None
    except (MycelError, OSError, trio.BrokenResourceError) as exc:
        raise CliError(explain_dial_error(exc, target)) from None


@contextlib.contextmanager
def asking(peer: PeerId, name: str, protocol: str, timeout: float) -> Iterator[None]:
    """Turn the failures of one request to ``peer`` (ping, identify) into one readable CliError."""
    try:
        yield
    except ProtocolNotSupported:
        raise CliError(f"peer {peer} does not support {name} ({protocol})") from None
    except trio.TooSlowError:
        raise CliError(f"no {name} answer from {peer} within {timeout:g} s") from None
    except (MycelError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise CliError(f"{name} with {peer} failed: {exc or type(exc).__name__}") from None


def _log_event(event: object) -> None:
    if isinstance(event, ConnectionOpened):
        conn = event.connection
        way = "from" if conn.direction is Direction.INBOUND else "to"
        log.info(
            "connection %s %s at %s (%s, %s)",
            way, conn.remote_peer, conn.remote_addr, conn.security_protocol, conn.muxer_protocol,
        )
    elif isinstance(event, ConnectionClosed):
        log.info("connection with %s at %s closed", event.connection.remote_peer, event.connection.remote_addr)
    elif isinstance(event, StreamOpened):
        way = "from" if event.direction is Direction.INBOUND else "to"
        log.info("stream %s %s: %s", way, event.peer, event.protocol)
    elif isinstance(event, StreamHandlerFailed):
        log.warning("%s handler for a stream from %s failed: %r", event.protocol, event.peer, event.error)


async def log_events(host: Host, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Log who connects and what they open (``listen -v``) until cancelled."""
    with host.subscribe() as events:
        task_status.started()
        async for event in events:
            _log_event(event)


# -- the commands ----------------------------------------------------------------------------------


async def cmd_id(args: argparse.Namespace) -> int:
    identity = load_identity(args.key)
    print(f"peer id:  {identity.peer_id}")
    print(f"key type: {identity.private_key.key_type.name}")
    print(f"key file: {args.key}")
    return 0


async def cmd_listen(args: argparse.Namespace) -> int:
    identity = Identity.generate() if args.ephemeral else load_identity(args.key)
    config = build_config(args, identity, listen_addrs(args))
    if args.web is not None:
        from mycel.web.http import parse_listen
        from mycel.web.view import WebView

        try:
            parse_listen(args.web)
        except ValueError as exc:
            raise CliError(f"--web: {exc}", EXIT_USAGE) from None
        config = config.replace(services=[*config.services, WebView(args.web)])
    async with open_host(config) as host, trio.open_nursery() as nursery:
        if args.verbose:
            await nursery.start(log_events, host)
        for addr in host.addrs:
            print(addr, flush=True)
        if args.web is not None:
            print(f"web view: {host.service(WebView).url}", flush=True)
        await trio.sleep_forever()
    return 0


async def cmd_ping(args: argparse.Namespace) -> int:
    from mycel.protocols.ping import PING_PROTOCOL, ping_stream

    target = parse_multiaddr(args.multiaddr, peer_address=True)
    async with open_host(build_config(args, Identity.generate())) as host:
        conn = await connect(host, target, args.timeout)
        print(f"connected to {conn.remote_peer} ({conn.security_protocol}, {conn.muxer_protocol})", flush=True)
        with asking(conn.remote_peer, "ping", PING_PROTOCOL, args.timeout):
            with trio.fail_after(args.timeout):
                stream = await host.new_stream(conn.remote_peer, [PING_PROTOCOL], lazy=False)
            try:
                for i in range(1, args.count + 1):
                    with trio.fail_after(args.timeout):
                        (rtt,) = await ping_stream(stream, 1)
                    print(f"ping {i}: {rtt * 1000:.3f} ms", flush=True)
                await stream.send_eof()
            finally:
                await stream.aclose()
    return 0


async def cmd_identify(args: argparse.Namespace) -> int:
    from mycel.protocols.identify import ID_PROTOCOL, Identify

    target = parse_multiaddr(args.multiaddr, peer_address=True)
    async with open_host(build_config(args, Identity.generate())) as host:
        conn = await connect(host, target, args.timeout)
        with asking(conn.remote_peer, "identify", ID_PROTOCOL, args.timeout), trio.fail_after(args.timeout):
            res = await host.service(Identify).identify_connection(conn)
        print(f"peer id:          {res.peer}")
        print(f"agent version:    {res.agent_version}")
        print(f"protocol version: {res.protocol_version}")
        print(f"signed record:    {'verified, seq ' + str(res.signed_record_seq) if res.signed_record_verified else 'none'}")
        print(f"observed us at:   {res.observed_addr}")
        print("listen addrs:")
        for a in res.listen_addrs:
            print(f"  {a}")
        print("protocols:")
        for p in sorted(res.protocols):
            print(f"  {p}")
    return 0


async def cmd_chat(args: argparse.Namespace) -> int:
    from mycel.cli.chat import cmd_chat as chat

    return await chat(args)


async def cmd_pubsub(args: argparse.Namespace) -> int:
    from mycel.cli.pubsub import cmd_pubsub as pubsub

    return await pubsub(args)


async def cmd_dht(args: argparse.Namespace) -> int:
    from mycel.cli.dht import cmd_dht as dht

    return await dht(args)


# -- the command line ------------------------------------------------------------------------------


def _positive(kind: Callable[[str], float], what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    return parse


positive_int = _positive(int, "a whole number")
positive_float = _positive(float, "a number of seconds")


def _verbose_option(parser: argparse.ArgumentParser, what: str = "what happens") -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help=f"log {what} to stderr (-vv: debug)")


def _stack_options(parser: argparse.ArgumentParser, verbose_what: str = "what happens") -> None:
    parser.add_argument("--transport", action="append", choices=["tcp", "quic"],
                        help=f"transports to use, repeatable (default: {', '.join(DEFAULT_TRANSPORTS)})")
    parser.add_argument("--security", action="append", choices=["noise", "tls", "plaintext"],
                        help=f"security protocols in preference order, repeatable "
                             f"(default: {', '.join(DEFAULT_SECURITY)})")
    parser.add_argument("--muxer", action="append", choices=["yamux", "mplex"],
                        help=f"stream muxers in preference order, repeatable (default: {', '.join(DEFAULT_MUXERS)})")
    _verbose_option(parser, verbose_what)


def _dial_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("multiaddr", help="the peer's address, e.g. /ip4/1.2.3.4/tcp/4001/p2p/12D3KooW…")
    parser.add_argument("--timeout", type=positive_float, default=10.0, metavar="SECONDS",
                        help="give up on connecting, and on each answer, after this long (default: 10)")


def _pubsub_options(parser: argparse.ArgumentParser, *, listens: bool) -> None:
    """What chat, sub and pub share: peers to connect to, an identity, the stack."""
    parser.add_argument("--connect", action="append", metavar="MULTIADDR",
                        help="a peer to connect to, repeatable: /ip4/1.2.3.4/tcp/4001/p2p/12D3KooW…")
    if listens:
        parser.add_argument("--listen", action="append", metavar="MULTIADDR",
                            help=f"address to listen on, repeatable (default: {TCP_LOOPBACK})")
    parser.add_argument("--key", metavar="FILE",
                        help="identity key file, created if missing (default: a fresh identity each run)")
    parser.add_argument("--timeout", type=positive_float, default=10.0, metavar="SECONDS",
                        help="give up on connecting, and on waiting for peers in the topic, after this long "
                             "(default: 10)")
    parser.set_defaults(quic=False)
    _stack_options(parser)


def _pubsub_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("chat", help="chat on a gossipsub topic: lines typed are published, messages printed",
                       description="Chat on a gossipsub topic. Prints its address for others' --connect; "
                                   "/peers lists who is in the room, /quit (or Ctrl-D, Ctrl-C) leaves.")
    p.add_argument("--nick", help="your nickname: lines are published as plain UTF-8 'nick: text' "
                                  "(default: none, the bare text)")
    p.add_argument("--topic", default="chat", help="the topic (room) to join (default: chat)")
    p.add_argument("--no-mdns", action="store_true",
                   help="do not look for peers on the local network: without --connect (and without this) the "
                        "chat finds them by mDNS and listens on every interface instead of loopback")
    _pubsub_options(p, listens=True)

    p = sub.add_parser("pubsub", help="subscribe to a gossipsub topic, or publish one message on it")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION", help="sub or pub")
    a = actions.add_parser("sub", help="print each message of a topic as a line: sender and data",
                           description="Subscribe to TOPIC and print each message on stdout "
                                       "('<sender peer id>: <data>', or JSON); status lines go to stderr.")
    a.add_argument("topic", metavar="TOPIC", help="the topic")
    a.add_argument("--json", action="store_true",
                   help="one JSON object per message: topic, from, received_from, id, seqno, "
                        "data (or data_base64 when it is not UTF-8)")
    a.add_argument("-n", "--count", type=positive_int, metavar="N", help="exit after N messages")
    _pubsub_options(a, listens=True)
    a = actions.add_parser("pub", help="publish one message; exit status 0 only if it was sent to a peer",
                           description="Connect, wait until enough peers are subscribed to TOPIC, "
                                       "publish MSG and say how many peers it was sent to.")
    a.add_argument("topic", metavar="TOPIC", help="the topic")
    a.add_argument("message", metavar="MSG", help="the message (UTF-8 text); - reads it from stdin")
    a.add_argument("--wait-peers", type=positive_int, default=1, metavar="N",
                   help="publish once N peers are subscribed to the topic (default: 1)")
    _pubsub_options(a, listens=False)


def _dht_options(parser: argparse.ArgumentParser, *, results: bool = True, stays: bool = False) -> None:
    """What every ``mycel dht`` action shares: bootstrap peers, listen addresses, identity, mode, stack."""
    parser.add_argument("--connect", action="append", metavar="MULTIADDR",
                        help="a DHT peer to bootstrap from, repeatable: /ip4/1.2.3.4/tcp/4001/p2p/12D3KooW…")
    parser.add_argument("--listen", action="append", metavar="MULTIADDR",
                        help=f"address to listen on, repeatable (default: {TCP_LOOPBACK})")
    parser.add_argument("--key", metavar="FILE",
                        help="identity key file, created if missing (default: a fresh identity each run)")
    parser.add_argument("--client", action="store_true",
                        help="DHT client mode: ask, but do not answer queries or store records")
    parser.add_argument("--timeout", type=positive_float, default=30.0, metavar="SECONDS",
                        help="give up on connecting, on the first routing-table peer and on the query after "
                             "this long each (default: 30)")
    if results:
        parser.add_argument("--json", action="store_true", help="one JSON object per result line")
    if stays:
        parser.add_argument("--stay", action="store_true",
                            help="then stay up as a DHT node (a provider must, to be found and fetched from)")
    parser.set_defaults(quic=False)
    _stack_options(parser)


def _dht_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dht", help="a Kademlia DHT node: serve, put/get records, provide/find content, find peers",
                       description="Start a DHT node, bootstrap from the --connect peers and do ACTION. Results "
                                   "go to stdout, one line each; exit status 1 when nothing was found.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION", help="what to do in the DHT")
    a = actions.add_parser("serve", help="stay up as a DHT server; print its addresses (for others' --connect)")
    _dht_options(a, results=False)
    a = actions.add_parser("put", help="store a record: KEY (/pk/<peer id>, /ipns/<peer id>, ...) and VALUE")
    a.add_argument("key_text", metavar="KEY", help="the record key, e.g. /pk/12D3KooW… (hex with --hex)")
    a.add_argument("value", metavar="VALUE", help="the value: UTF-8 text, hex with --hex, - reads stdin")
    a.add_argument("--hex", action="store_true", help="KEY and VALUE are hex")
    _dht_options(a, stays=True)
    a = actions.add_parser("put-pk", help="store this node's public key under /pk/<its peer id>")
    _dht_options(a, stays=True)
    a = actions.add_parser("get", help="print the best value stored under KEY")
    a.add_argument("key_text", metavar="KEY", help="the record key, e.g. /pk/12D3KooW… (hex with --hex)")
    a.add_argument("--hex", action="store_true", help="KEY is hex, and the value is printed as hex")
    _dht_options(a)
    a = actions.add_parser("provide", help="announce that this node provides CID (a CID or hex multihash)")
    a.add_argument("content", metavar="CID", help="a CID (Qm…, bafy…) or a hex multihash (1220…)")
    _dht_options(a, stays=True)
    a = actions.add_parser("find-providers", help="print the peers that provide CID: peer id and addresses")
    a.add_argument("content", metavar="CID", help="a CID (Qm…, bafy…) or a hex multihash (1220…)")
    a.add_argument("--limit", type=positive_int, default=20, metavar="N", help="at most N providers (default: 20)")
    _dht_options(a)
    a = actions.add_parser("find-peer", help="print the addresses of PEER_ID found through the DHT")
    a.add_argument("peer", metavar="PEER_ID", help="the peer id, e.g. 12D3KooW…")
    _dht_options(a)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mycel", description="A libp2p node: identity, listen, ping, identify, chat, publish/subscribe, DHT."
    )
    parser.add_argument("--version", action="version", version=f"mycel {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do")

    p = sub.add_parser("id", help="create or show the identity")
    p.add_argument("--key", default=default_key_path(), metavar="FILE",
                   help="key file, created (with its folder) if missing (default: ~/.mycel/identity.key)")
    _verbose_option(p)

    p = sub.add_parser("listen", help="serve ping, identify and echo; print the listen addresses")
    p.add_argument("--listen", action="append", metavar="MULTIADDR",
                   help=f"address to listen on, repeatable (default: {TCP_LOOPBACK}, "
                        f"or {QUIC_LOOPBACK} with --transport quic)")
    p.add_argument("--quic", action="store_true",
                   help="also listen on QUIC: /udp/PORT/quic-v1 beside each TCP listen address")
    p.add_argument("--web", metavar="HOST:PORT",
                   help="serve a live, read-only web view of the node there (e.g. 127.0.0.1:8080; keep it on loopback)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--key", default=default_key_path(), metavar="FILE",
                     help="identity key file, created if missing (default: ~/.mycel/identity.key, as `mycel id`)")
    who.add_argument("--ephemeral", action="store_true", help="use a fresh random identity instead of a key file")
    _stack_options(p, verbose_what="each connection and stream opened")

    p = sub.add_parser("ping", help="ping a peer; exit status 0 only if every ping is answered")
    _dial_options(p)
    p.add_argument("-c", "--count", type=positive_int, default=3, help="how many pings (default: 3)")
    _stack_options(p)

    p = sub.add_parser("identify", help="ask a peer who it is")
    _dial_options(p)
    _stack_options(p)
    _pubsub_commands(sub)
    _dht_commands(sub)
    return parser


COMMANDS = {
    "id": cmd_id,
    "listen": cmd_listen,
    "ping": cmd_ping,
    "identify": cmd_identify,
    "chat": cmd_chat,
    "pubsub": cmd_pubsub,
    "dht": cmd_dht,
}



def _error_message(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, CliError):
        return str(exc), exc.status
    if isinstance(exc, trio.TooSlowError):
        return "timed out", EXIT_FAILED
    if isinstance(exc, (MycelError, OSError, ValueError)):
        return str(exc) or type(exc).__name__, EXIT_FAILED
    log.debug("unexpected error", exc_info=exc)
    return f"internal error: {type(exc).__name__}: {exc} (-vv shows where)", EXIT_FAILED


def configure_logging(verbose: int) -> None:
    """Quiet by default; -v: mycel's INFO lines (who connected, what they opened); -vv: debug, all libraries."""
    fmt = "mycel: %(levelname)s: %(message)s" if verbose == 0 else "%(asctime)s %(name)s %(levelname)s %(message)s"
    logging.basicConfig(level=logging.DEBUG if verbose >= 2 else logging.WARNING, stream=sys.stderr, format=fmt)
    logging.getLogger("mycel").setLevel({0: logging.ERROR, 1: logging.INFO}.get(verbose, logging.DEBUG))
    if verbose == 0:  # a key file others can read is worth a line even when quiet
        logging.getLogger("mycel.core.identity").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return trio.run(COMMANDS[args.command], args)
    except BaseException as raised:  # noqa: B036 - the one place that turns any failure into one line
        # the exception-group policy of mycel.core.errors: a group of one is its exception
        exc = (single_exception(raised) or raised) if isinstance(raised, BaseExceptionGroup) else raised
        if isinstance(exc, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        if not isinstance(exc, Exception):
            raise
        message, status = _error_message(exc)
        print("mycel: error: " + " ".join(message.split()), file=sys.stderr)
        return status


if __name__ == "__main__":
    raise SystemExit(main())
