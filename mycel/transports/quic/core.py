"""aioquic's sans-IO ``QuicConnection`` with the rules libp2p needs.

aioquic grants receive credit as soon as data *arrives* (it doubles a stream's window once half of it
is used), so a fast sender could make a slow reader buffer without bound. :class:`QuicCore` instead
grants credit as the application *consumes* data: a stream may have at most ``stream_window``
unread bytes, a connection at most ``connection_window``. It also makes the server request a client
certificate (libp2p TLS requires mutual authentication), refuses unidirectional streams and caps
concurrent inbound bidirectional streams at ``max_inbound_streams``.

For speed it also: paces in bursts that cover the timer granularity (:class:`_Pacer`); takes a short
path for datagrams holding one 1-RTT packet (:meth:`QuicCore.receive_datagram`, the same steps as
aioquic's general path); offers one key share (X25519) and keeps 2 connection ids each way; reports
a peer's CONNECTION_CLOSE at once; and breaks aioquic's reference cycles when done (:meth:`dispose`).

This reaches into aioquic internals (``_write_stream_limits``, ``_write_connection_limits``, the
``Limit`` objects, ``tls._request_client_certificate``, ``tls._peer_certificate``, the receive path's
state, the pacer, the frame handler table); the supported aioquic range is pinned in pyproject.toml
and the behaviour is covered by tests (tests/unit/test_quic_core.py compares the short receive path
with aioquic's own).
"""

from __future__ import annotations

from typing import Any, Final

from aioquic.buffer import Buffer, BufferReadError  # type: ignore[attr-defined]
from aioquic.quic.configuration import QuicConfiguration
from aioquic.tls import CipherSuite, Epoch, Group
from aioquic.quic.connection import (
    CONNECTION_LIMIT_FRAME_CAPACITY,
    END_STATES,
    MAX_STREAM_DATA_FRAME_CAPACITY,
    QuicConnection,
    QuicConnectionError,
    QuicConnectionState,
    QuicReceiveContext,
)
from aioquic._crypto import CryptoError
from aioquic.quic.crypto import NoCallback
from aioquic.quic.packet import PACKET_SPIN_BIT, QuicErrorCode, QuicFrameType, pull_quic_transport_parameters
from aioquic.quic.recovery import K_MICRO_SECOND, MAX_ACK_RANGES, QuicPacketPacer
from aioquic.quic.stream import QuicStream
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = ["QuicCore", "CIPHER_SUITES", "DEFAULT_STREAM_WINDOW", "DEFAULT_CONNECTION_WINDOW", "DEFAULT_MAX_INBOUND_STREAMS"]

# Key exchange groups a client offers. aioquic sends a key share for every group it offers (a key
# generation each); X25519 is the one every libp2p QUIC stack (quic-go, quinn/rustls, aioquic) picks.
_CLIENT_GROUPS: Final = (Group.X25519,)
# Connection ids each side keeps issued to the other: the RFC 9000 minimum (one in use, one spare for a
# path change). aioquic issues 8, each a NEW_CONNECTION_ID frame to build and parse and an id to route.
ACTIVE_CONNECTION_IDS: Final = 2
# AES-128-GCM first: the fastest with AES-NI; all three are mandatory-to-offer in practice.
CIPHER_SUITES: Final = [
    CipherSuite.AES_128_GCM_SHA256,
    CipherSuite.CHACHA20_POLY1305_SHA256,
    CipherSuite.AES_256_GCM_SHA384,
]
ACK_DELAY: Final = 0.001  # seconds a lone ack-eliciting packet may wait for its ACK
# Unacknowledged ack-eliciting packets that are acknowledged at once, not when the program is idle: a
# bulk sender's window opens with our ACKs, so it must not wait for us to finish a long batch.
BULK_ACK_PACKETS: Final = 32
# An ACK that is due is marked due this long *before* ``now``: aioquic lets pacing hold back an ACK
# that is due exactly now, which would spin the timer with a frozen clock.
_DUE: Final = 1e-6
# Seconds of the pacing rate one burst may use. Timers wake the driver no more often than about once per
# millisecond (epoll rounds its timeout up to whole milliseconds), so bursts must cover that much time,
# or the timer granularity caps the rate (aioquic's 16-packet bursts: 16 datagrams per millisecond).
# quic-go sizes its bursts the same way (minimum pacing delay + timer granularity).
PACING_BURST: Final = 0.002
DEFAULT_STREAM_WINDOW: Final = 2 * 1024 * 1024
DEFAULT_CONNECTION_WINDOW: Final = 8 * 1024 * 1024
DEFAULT_MAX_INBOUND_STREAMS: Final = 256


def _nothing(*_args: Any) -> None:
    return None


class _Pacer(QuicPacketPacer):
    """aioquic's token-bucket pacer with bursts of up to :data:`PACING_BURST` (never more than one RTT)."""

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        super().update_rate(congestion_window, smoothed_rtt)
        burst = min(PACING_BURST, max(smoothed_rtt, K_MICRO_SECOND))  # seconds of the rate
        if burst > self.bucket_max:
            self.bucket_max = burst


class QuicCore(QuicConnection):
    """A QUIC connection state machine: datagrams and ``now`` in, events and datagrams out.

    The driver reports consumption with :meth:`consume` and keeps :attr:`unread` (bytes delivered
    in events but not yet consumed) up to date; credit follows from those two.
    """

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        original_destination_connection_id: bytes | None = None,
        retry_source_connection_id: bytes | None = None,
        stream_window: int = DEFAULT_STREAM_WINDOW,
        connection_window: int = DEFAULT_CONNECTION_WINDOW,
        max_inbound_streams: int = DEFAULT_MAX_INBOUND_STREAMS,
        immediate_ack: bool = False,
    ) -> None:
        if stream_window < 16384 or connection_window < stream_window:
            raise ValueError("need 16 KiB <= stream_window <= connection_window")
        configuration.max_stream_data = stream_window
        configuration.max_data = connection_window
        super().__init__(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
        )
        self._loss._pacer = _Pacer(max_datagram_size=configuration.max_datagram_size)
        self._stream_window = stream_window
        self._connection_window = connection_window
        self._stream_step = stream_window // 4  # grant credit in steps of at least this much
        self._connection_step = connection_window // 4
        self.peer_max_udp_payload = 65527  # the peer's max_udp_payload_size transport parameter
        self._consumed: dict[int, int] = {}  # stream id -> bytes the application consumed
        self.unread = 0  # bytes delivered to the application and not consumed yet, all streams
        self._local_active_connection_id_limit = ACTIVE_CONNECTION_IDS  # announced: the peer issues 1 spare
        # Announced in the transport parameters (value), so also what the peer already knows (sent).
        self._local_max_streams_bidi.value = self._local_max_streams_bidi.sent = max_inbound_streams
        self._local_max_streams_uni.value = self._local_max_streams_uni.sent = 0  # libp2p: bidirectional only
        # ACK policy (RFC 9000 section 13.2.1): a lone ack-eliciting packet is acknowledged within
        # ACK_DELAY, or earlier on a packet we send anyway (ack_now); two or more are acknowledged
        # once the tasks woken by the batch of datagrams that brought them have had their turn (see
        # end_of_batch: the driver reads in batches, so in a bulk transfer this is one ACK per batch,
        # and in a request/response exchange the ACK rides with the response).
        self._ack_delay = ACK_DELAY
        self._immediate_ack = immediate_ack
        self._eliciting = 0  # ack-eliciting 1-RTT packets received since our last ACK

    # --- what the driver calls -------------------------------------------------------------

    def track(self, stream_id: int) -> None:
        """Start counting consumption on a stream (the application reads it)."""
        self._consumed.setdefault(stream_id, 0)

    def forget(self, stream_id: int) -> None:
        """Stop counting: whatever else arrives on the stream is treated as consumed on arrival."""
        self._consumed.pop(stream_id, None)

    def consume(self, stream_id: int, count: int) -> bool:
        """The application consumed ``count`` delivered bytes; True if a credit update is due."""
        self.unread -= count
        consumed = self._consumed.get(stream_id)
        if consumed is not None:
            consumed += count
            self._consumed[stream_id] = consumed
            stream = self._streams.get(stream_id)
            if stream is not None and consumed + self._stream_window - stream.max_stream_data_local >= self._stream_step:
                return True
        max_data = self._local_max_data
        return bool(max_data.used - self.unread + self._connection_window - max_data.value >= self._connection_step)

    @property
    def remote_max_streams_bidi(self) -> int:
        """How many bidirectional streams the peer lets us open in total (MAX_STREAMS)."""
        value: int = self._remote_max_streams_bidi
        return value

    def send_room(self, stream_id: int, written: int, buffer: int) -> tuple[int, int]:
        """For a stream we gave ``written`` bytes: (bytes not sent yet, bytes we may still give it).

        We never give a stream more than the peer's flow-control credit allows, nor let more than
        ``buffer`` bytes wait to be sent.
        """
        stream = self._streams.get(stream_id)
        if stream is None:  # finished and discarded: nothing waits, nothing more can be sent
            return 0, 0
        unsent = max(0, written - stream.sender.highest_offset)
        room = min(buffer - unsent, stream.max_stream_data_remote - written)
        return unsent, room

    def peer_certificates(self) -> list[bytes]:
        """The peer's certificate chain (DER, leaf first) as received in the handshake."""
        tls = getattr(self, "tls", None)
        leaf: x509.Certificate | None = getattr(tls, "_peer_certificate", None)
        if leaf is None:
            return []
        chain: list[x509.Certificate] = getattr(tls, "_peer_certificate_chain", [])
        return [cert.public_bytes(Encoding.DER) for cert in (leaf, *chain)]

    @property
    def peer_leaf(self) -> x509.Certificate | None:
        """The peer's certificate as aioquic parsed it (None before it arrived)."""
        leaf: x509.Certificate | None = getattr(getattr(self, "tls", None), "_peer_certificate", None)
        return leaf

    @property
    def heard_from_peer(self) -> bool:
        """True once a packet from the peer decrypted (a garbage Initial leaves this False)."""
        return bool(self._state != QuicConnectionState.FIRSTFLIGHT)

    @property
    def max_datagram_size(self) -> int:
        """The largest datagram in bytes this connection sends now (see :meth:`raise_max_datagram_size`)."""
        size: int = self._max_datagram_size
        return size

    def raise_max_datagram_size(self, size: int) -> int:
        """Use datagrams of up to ``size`` bytes from now on (capped by the peer's limit); the new size."""
        size = min(size, self.peer_max_udp_payload)
        if size > self._max_datagram_size:
            self._max_datagram_size = size
            loss = self._loss
            loss._pacer._max_datagram_size = size
            if hasattr(loss._cc, "_max_datagram_size"):
                loss._cc._max_datagram_size = size
            if hasattr(loss._cc, "additive_increase_factor"):  # cubic
                loss._cc.additive_increase_factor = size
        return self.max_datagram_size

    @property
    def smoothed_rtt(self) -> float | None:
        """The smoothed round-trip time in seconds, once measured."""
        rtt = getattr(self._loss, "_rtt_smoothed", 0.0)
        return float(rtt) if rtt else None

    @property
    def host_cids(self) -> list[bytes]:
        """Every connection id we issued that the peer may use to reach us."""
        return [c.cid for c in self._host_cids]

    def ack_now(self, now: float) -> None:
        """Make a pending ACK go out with the next packet (we are about to send data anyway)."""
        space = self._ack_space()
        if space is not None and space.ack_at is not None and space.ack_at > now - _DUE:
            space.ack_at = now - _DUE

    def _ack_space(self) -> Any:
        spaces = getattr(self, "_spaces", None)
        return spaces.get(Epoch.ONE_RTT) if spaces else None

    def end_of_batch(self, now: float) -> bool:
        """The driver applied a batch of datagrams: True if an ACK is due promptly (two or more
        ack-eliciting packets since the last one, or any with ``immediate_ack``). Handshake packets,
        and a bulk transfer's run of BULK_ACK_PACKETS, are marked for acknowledgement right away."""
        if self._eliciting >= BULK_ACK_PACKETS:  # a bulk sender waits for this to open its window
            self.ack_now(now)
        if self._handshake_done_pending:  # a server's HANDSHAKE_DONE goes out now: the 1-RTT ACK with it
            self.ack_now(now)
        if not self._handshake_confirmed:  # handshake packets: acknowledge right away (the answer usually carries it)
            spaces = getattr(self, "_spaces", None)
            if spaces:
                for epoch in (Epoch.INITIAL, Epoch.HANDSHAKE):
                    space = spaces.get(epoch)
                    if space is not None and space.ack_at is not None and space.ack_at > now - _DUE:
                        space.ack_at = now - _DUE
        return self._eliciting >= 2 or (self._immediate_ack and self._eliciting > 0)

    @property
    def ack_pending(self) -> bool:
        """An ACK of 1-RTT packets waits to be sent."""
        space = self._ack_space()
        return space is not None and space.ack_at is not None

    def dispose(self) -> None:
        """Break aioquic's reference cycles (its frame handler table and callbacks are bound methods of
        the connection; sent packets hold delivery handlers) once the driver is done with the
        connection, so that reference counting frees it instead of the cyclic garbage collector,
        whose passes cost ~1 ms per dial otherwise. The flow-control bookkeeping keeps working."""
        setattr(self, "_QuicConnection__frame_handlers", {})  # name-mangled in aioquic
        loss = self._loss
        loss._send_probe = _nothing
        for space in loss.spaces:
            space.sent_packets.clear()
        tls = getattr(self, "tls", None)
        if tls is not None:
            tls.alpn_cb = tls.get_session_ticket_cb = tls.new_session_ticket_cb = None
            tls.update_traffic_key_cb = _nothing
        for pairs in (self._cryptos, self._cryptos_initial):
            for pair in pairs.values():
                for context in (pair.recv, pair.send):
                    context._setup_cb = context._teardown_cb = NoCallback

    # --- aioquic overrides -----------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        """aioquic's, with a short path for what a transfer is made of: a datagram holding one 1-RTT
        packet (short header), from the active and validated path, to the connection id in use, once
        the handshake is confirmed. That path does exactly what aioquic's general one does for such a
        packet, without the header parsing and the checks that cannot apply; anything else (long
        headers, another path or connection id, any other state, qlog on) takes the general path."""
        if (
            (data[0] & 0xC0) != 0x40  # not a short header with the fixed bit set
            or self._state is not QuicConnectionState.CONNECTED
            or not self._handshake_confirmed
            or self._quic_logger is not None
        ):
            super().receive_datagram(data, addr, now)
            return
        path = self._network_paths[0]
        cid_end = 1 + self._configuration.connection_id_length
        if path.addr != addr or not path.is_validated or data[1:cid_end] != self.host_cid:
            super().receive_datagram(data, addr, now)
            return
        space = self._spaces[Epoch.ONE_RTT]
        try:
            plain_header, payload, packet_number = self._cryptos[Epoch.ONE_RTT].decrypt_packet(
                data, cid_end, space.expected_packet_number
            )
        except CryptoError as exc:  # undecryptable: dropped (RFC 9001 section 5.5)
            self._logger.debug(exc)
            return
        if packet_number in space.received_packets:
            return  # a duplicate (RFC 9000 section 12.3)
        if plain_header[0] & 0x18:
            self.close(
                error_code=QuicErrorCode.PROTOCOL_VIOLATION,
                frame_type=QuicFrameType.PADDING,
                reason_phrase="Reserved bits must be zero",
            )
            return
        if packet_number > space.expected_packet_number:
            space.expected_packet_number = packet_number + 1
        if not self._is_client:
            zero_rtt = self._cryptos[Epoch.ZERO_RTT].recv
            if zero_rtt.is_valid():
                zero_rtt.teardown()
        if packet_number > self._spin_highest_pn:
            spin = bool(plain_header[0] & PACKET_SPIN_BIT)
            self._spin_bit = not spin if self._is_client else spin
            self._spin_highest_pn = packet_number
        context = QuicReceiveContext(
            epoch=Epoch.ONE_RTT,
            host_cid=self.host_cid,
            network_path=path,
            quic_logger_frames=None,
            time=now,
            version=None,
        )
        is_ack_eliciting = False
        try:
            is_ack_eliciting, _ = self._payload_received(context, payload)
        except QuicConnectionError as exc:
            self._logger.warning(exc)
            self.close(error_code=exc.error_code, frame_type=exc.frame_type, reason_phrase=exc.reason_phrase)
        if self._state in END_STATES or self._close_pending:
            return
        self._close_at = now + self._idle_timeout()
        self._ack_eliciting_sent_since_receipt = False
        if not space.discarded:
            if packet_number > space.largest_received_packet:
                space.largest_received_packet = packet_number
                space.largest_received_time = now
            space.ack_queue.add(packet_number)
            space.received_packets.add(packet_number)
            if len(space.ack_queue) > MAX_ACK_RANGES:
                space.ack_queue.shift()
            if is_ack_eliciting and space.ack_at is None:
                space.ack_at = now + self._ack_delay

    def _payload_received(self, context: Any, plain: bytes, crypto_frame_required: bool = False) -> tuple[bool, bool]:
        is_ack_eliciting, is_probing = super()._payload_received(context, plain, crypto_frame_required)
        if is_ack_eliciting and context.epoch == Epoch.ONE_RTT:
            self._eliciting += 1
        return is_ack_eliciting, is_probing

    def _handle_connection_close_frame(self, context: Any, frame_type: int, buf: Any) -> None:
        """Report the peer's CONNECTION_CLOSE at once (aioquic reports it after the draining period of
        3 PTOs; a draining connection sends nothing, so the driver may forget it right away)."""
        closing = self._close_event is not None
        super()._handle_connection_close_frame(context, frame_type, buf)
        if not closing and self._close_event is not None:
            self._events.append(self._close_event)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        datagrams: list[tuple[bytes, Any]] = super().datagrams_to_send(now)
        space = self._ack_space()
        if space is not None and space.ack_at is None:
            self._eliciting = 0  # our ACK went out
        return datagrams

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        tls = self.tls
        if self._is_client:
            tls._supported_groups = [g for g in tls._supported_groups if g in _CLIENT_GROUPS] or tls._supported_groups
        else:
            tls._request_client_certificate = True  # libp2p TLS: mutual authentication

    def _parse_transport_parameters(self, data: bytes, from_session_ticket: bool = False) -> None:
        super()._parse_transport_parameters(data, from_session_ticket)
        try:
            params = pull_quic_transport_parameters(Buffer(data=data))
        except (ValueError, BufferReadError):  # pragma: no cover - aioquic just parsed the same bytes
            return
        if params.max_udp_payload_size is not None:
            self.peer_max_udp_payload = params.max_udp_payload_size
        # issue no more connection ids than ACTIVE_CONNECTION_IDS, whatever the peer would take
        self._remote_active_connection_id_limit = min(self._remote_active_connection_id_limit, ACTIVE_CONNECTION_IDS)

    def _write_stream_limits(self, builder: Any, space: Any, stream: QuicStream) -> None:
        """Raise MAX_STREAM_DATA to what the application consumed plus the window."""
        if stream.max_stream_data_local and not stream.receiver.is_finished:
            consumed = self._consumed.get(stream.stream_id or 0)
            if consumed is None:  # nobody reads this stream: everything that arrived is consumed
                consumed = stream.receiver.highest_offset
            target = consumed + self._stream_window
            if target - stream.max_stream_data_local >= self._stream_step:
                stream.max_stream_data_local = target
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream.stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        """Raise MAX_DATA to what was received minus what is still unread, plus the window."""
        max_data = self._local_max_data
        target = max_data.used - self.unread + self._connection_window
        if target - max_data.value >= self._connection_step:
            max_data.value = target
        bidi, uni = self._local_max_streams_bidi, self._local_max_streams_uni
        if max_data.value == max_data.sent and bidi.value == bidi.sent and uni.value == uni.sent:
            return  # (called for every packet built: the common case is nothing to say)
        for limit in (max_data, bidi, uni):
            if limit is not max_data and limit.sent - limit.used >= limit.value - limit.sent:
                continue  # batch MAX_STREAMS: wait until the peer has few streams left to open
            if limit.value != limit.sent:
                buf = builder.start_frame(
                    limit.frame_type,
                    capacity=CONNECTION_LIMIT_FRAME_CAPACITY,
                    handler=self._on_connection_limit_delivery,
                    handler_args=(limit,),
                )
                buf.push_uint_var(limit.value)
                limit.sent = limit.value
