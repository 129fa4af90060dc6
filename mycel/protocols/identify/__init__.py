"""Identify (``/ipfs/id/1.0.0``) and Identify Push (``/ipfs/id/push/1.0.0``).

On every new connection we ask the remote who it is; we answer the same question with our public key,
listen addresses, protocols, the address we observe the asker on, and a signed peer record. Go splits
large messages, so up to MAX_MESSAGES delimited messages are read until EOF and merged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from google.protobuf.message import DecodeError as PbDecodeError
from multiaddr import Multiaddr

from mycel.core.abc import Connection, MuxedStream
from mycel.core.errors import DecodeError, InvalidSignature, MessageTooLarge, MycelError, ProtocolViolation
from mycel.core.events import PeerIdentified
from mycel.core.keys import public_key_from_protobuf
from mycel.core.record import open_peer_record, seal_peer_record
from mycel.core.varint import LengthPrefixedDecoder, length_prefixed
from mycel.multistream import select_outbound
from mycel.network.peerstore import PeerInfo
from mycel.protocols.identify import identify_pb2
from mycel.service import Service, StreamHandler

if TYPE_CHECKING:
    from mycel.core.peer_id import PeerId
    from mycel.host import Host

ID_PROTOCOL = "/ipfs/id/1.0.0"
PUSH_PROTOCOL = "/ipfs/id/push/1.0.0"
MAX_MESSAGE_SIZE = 8192  # per delimited message (go's signedIDSize)
MAX_MESSAGES = 10  # delimited messages merged per identify exchange
MAX_OBSERVED = 16  # observed addresses of ourselves remembered (newest kept)
READ_CHUNK = 8192

log = logging.getLogger("mycel.protocols.identify")


class IdentifyError(ProtocolViolation):
    """The remote's identify message was malformed or did not match its identity."""


@dataclass(frozen=True)
class IdentifyResult:
    peer: PeerId
    protocol_version: str | None
    agent_version: str | None
    listen_addrs: list[Multiaddr]
    protocols: list[str]
    observed_addr: Multiaddr | None
    signed_record_verified: bool
    signed_record_seq: int | None


async def read_identify(stream: trio.abc.ReceiveStream) -> identify_pb2.Identify:
    """Read up to MAX_MESSAGES delimited Identify messages until EOF and merge them."""
    decoder = LengthPrefixedDecoder(MAX_MESSAGE_SIZE)
    merged = identify_pb2.Identify()
    count = 0
    while True:
        data = await stream.receive_some(READ_CHUNK)
        if data:
            decoder.feed(data)
        while (msg := decoder.next_message()) is not None:
            count += 1
            if count > MAX_MESSAGES:
                raise MessageTooLarge(f"more than {MAX_MESSAGES} identify messages")
            try:
                merged.MergeFromString(msg)
            except PbDecodeError as exc:
                raise DecodeError(f"bad identify protobuf: {exc}") from exc
        if not data:
            if decoder.buffered:
                raise DecodeError("identify stream ended inside a message")
            if count == 0:
                raise DecodeError("identify stream ended without a message")
            return merged


def _addr_from_bytes(raw: bytes) -> Multiaddr | None:
    try:
        return Multiaddr(raw)
    except Exception:  # the multiaddr package raises a variety of errors for bad bytes
        return None


class Identify(Service):
    """The identify service. ``identify(peer)`` asks again; results also land in the peerstore."""

    def __init__(self, *, push: bool = True) -> None:
        self._host: Host | None = None
        self.push_enabled = push
        self.observed_addrs: list[Multiaddr] = []
        self._identified: dict[PeerId, trio.Event] = {}
        self._record: tuple[tuple[Multiaddr, ...], bytes] | None = None
        self._last_seq = 0

    def handlers(self) -> Mapping[str, StreamHandler]:
        return {ID_PROTOCOL: self._handle_id, PUSH_PROTOCOL: self._handle_push}

    async def run(self, host: Host, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._host = host
        task_status.started()

    # -- our side ------------------------------------------------------------------------------
    def _signed_record(self, host: Host, addrs: list[Multiaddr]) -> bytes:
        key = tuple(addrs)
        if self._record is None or self._record[0] != key:
            seq = max(time.time_ns(), self._last_seq + 1)
            self._last_seq = seq
            env = seal_peer_record(host.identity.private_key, addrs, seq)
            self._record = (key, env.to_bytes())
        return self._record[1]

    def build_message(self, host: Host, observed: Multiaddr | None) -> identify_pb2.Identify:
        addrs = host.advertised_addrs
        msg = identify_pb2.Identify(
            protocolVersion=host.config.protocol_version,
            agentVersion=host.config.agent_version,
            publicKey=host.identity.public_key.to_protobuf(),
            listenAddrs=[a.to_bytes() for a in addrs],
            protocols=host.protocols,
            signedPeerRecord=self._signed_record(host, addrs),
        )
        if observed is not None:
            msg.observedAddr = observed.to_bytes()
        return msg

    async def _handle_id(self, stream: MuxedStream) -> None:
        assert self._host is not None
        msg = self.build_message(self._host, stream.connection.remote_addr)
        await stream.send_all(length_prefixed(msg.SerializeToString()))
        await stream.send_eof()

    async def _handle_push(self, stream: MuxedStream) -> None:
        assert self._host is not None
        conn = stream.connection
        with trio.fail_after(self._host.config.negotiate_timeout):
            msg = await read_identify(stream)
        self._apply(self._host, conn, msg, push=True)

    # -- their side ----------------------------------------------------------------------------
    def connection_opened(self, host: Host, conn: Connection) -> None:
        self._identified.setdefault(conn.remote_peer, trio.Event())
        host.spawn(self._identify_quietly, host, conn)

    def connection_closed(self, host: Host, conn: Connection) -> None:
        if not host.connections(conn.remote_peer):
            self._identified.pop(conn.remote_peer, None)

    async def _identify_quietly(self, host: Host, conn: Connection) -> None:
        try:
            await self.identify_connection(conn)
        except (MycelError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.info("identify of %s failed: %s", conn.remote_peer, exc)

    async def identify_connection(self, conn: Connection) -> IdentifyResult:
        host = self._host
        assert host is not None, "Identify service is not running"
        with trio.fail_after(host.config.negotiate_timeout):
            stream = await conn.open_stream()
            try:
                await select_outbound(stream, [ID_PROTOCOL])
                stream.protocol = ID_PROTOCOL
                await stream.send_eof()
                msg = await read_identify(stream)
            finally:
                await stream.aclose()
        return self._apply(host, conn, msg, push=False)

    async def identify(self, peer: PeerId) -> IdentifyResult:
        """Ask ``peer`` (over an existing or new connection) who it is."""
        assert self._host is not None, "Identify service is not running"
        conn = await self._host.connect(peer)
        return await self.identify_connection(conn)

    async def wait_identified(self, peer: PeerId) -> PeerInfo:
        """Wait until the automatic identify of a connected ``peer`` has completed."""
        assert self._host is not None
        event = self._identified.setdefault(peer, trio.Event())
        await event.wait()
        return self._host.peerstore.info(peer)

    def _apply(self, host: Host, conn: Connection, msg: identify_pb2.Identify, *, push: bool) -> IdentifyResult:
        peer = conn.remote_peer
        if msg.HasField("publicKey"):
            try:
                key = public_key_from_protobuf(msg.publicKey)
            except MycelError as exc:
                raise IdentifyError(f"bad public key from {peer}: {exc}") from exc
            if key != conn.remote_public_key:
                raise IdentifyError(f"{peer} sent an identify public key that is not its own")
        info = host.peerstore.info(peer)
        listen = [a for a in (_addr_from_bytes(b) for b in msg.listenAddrs) if a is not None]
        verified = False
        if msg.HasField("signedPeerRecord"):
            try:
                env, record = open_peer_record(msg.signedPeerRecord)
                if record.peer_id != peer:
                    raise InvalidSignature("peer record is for another peer")
                if env.public_key != conn.remote_public_key:
                    raise InvalidSignature("peer record signed by another key")
                if info.signed_record_seq is None or record.seq > info.signed_record_seq:
                    info.signed_record_seq = record.seq
                    info.signed_record = msg.signedPeerRecord
                    listen = list(record.addrs) or listen
                verified = True
            except (InvalidSignature, DecodeError, MycelError) as exc:
                log.info("ignoring invalid signed peer record from %s: %s", peer, exc)
        if listen or not push:
            host.peerstore.set_addrs(peer, listen + ([conn.remote_addr] if conn.direction.value == "outbound" else []))
        if msg.protocols or not push:
            host.peerstore.set_protocols(peer, list(msg.protocols))
        if msg.HasField("agentVersion"):
            info.agent_version = msg.agentVersion
        if msg.HasField("protocolVersion"):
            info.protocol_version = msg.protocolVersion
        observed = _addr_from_bytes(msg.observedAddr) if msg.HasField("observedAddr") else None
        if observed is not None:
            info.observed_addr = observed
            if observed in self.observed_addrs:
                self.observed_addrs.remove(observed)
            self.observed_addrs.insert(0, observed)
            del self.observed_addrs[MAX_OBSERVED:]
        result = IdentifyResult(
            peer=peer,
            protocol_version=info.protocol_version,
            agent_version=info.agent_version,
            listen_addrs=listen,
            protocols=list(msg.protocols),
            observed_addr=observed,
            signed_record_verified=verified,
            signed_record_seq=info.signed_record_seq,
        )
        self._identified.setdefault(peer, trio.Event()).set()
        host.emit(PeerIdentified(peer, info))
        return result

    # -- push ----------------------------------------------------------------------------------
    async def push(self) -> None:
        """Send our current identify to every connected peer that supports push."""
        host = self._host
        assert host is not None
        async with trio.open_nursery() as nursery:
            for conn in host.connections():
                if PUSH_PROTOCOL in host.peerstore.protocols(conn.remote_peer):
                    nursery.start_soon(self._push_one, host, conn)

    async def _push_one(self, host: Host, conn: Connection) -> None:
        try:
            with trio.fail_after(host.config.negotiate_timeout):
                stream = await conn.open_stream()
                try:
                    await select_outbound(stream, [PUSH_PROTOCOL])
                    msg = self.build_message(host, conn.remote_addr)
                    await stream.send_all(length_prefixed(msg.SerializeToString()))
                    await stream.send_eof()
                finally:
                    await stream.aclose()
        except (MycelError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.info("identify push to %s failed: %s", conn.remote_peer, exc)


__all__ = ["ID_PROTOCOL", "PUSH_PROTOCOL", "Identify", "IdentifyError", "IdentifyResult", "read_identify"]


