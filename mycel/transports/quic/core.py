"""aioquic's sans-IO ``QuicConnection`` with the rules libp2p needs.

aioquic grants receive credit as soon as data *arrives* (it doubles a stream's window once half of it
is used), so a fast sender could make a slow reader buffer without bound. :class:`QuicCore` instead
grants credit as the application *consumes* data: a stream may have at most ``stream_window``
unread bytes, a connection at most ``connection_window``. It also makes the server request a client
certificate (libp2p TLS requires mutual authentication), refuses unidirectional streams and caps
concurrent inbound bidirectional streams at ``max_inbound_streams``.

This reaches into aioquic internals (``_write_stream_limits``, ``_write_connection_limits``, the
``Limit`` objects, ``tls._request_client_certificate``, ``tls._peer_certificate``); the supported
aioquic range is pinned in pyproject.toml and the behaviour is covered by tests.
"""

from __future__ import annotations

from typing import Any, Final

from aioquic.buffer import Buffer, BufferReadError  # type: ignore[attr-defined]
from aioquic.quic.configuration import QuicConfiguration
from aioquic.tls import CipherSuite, Epoch, Group
from aioquic.quic.connection import (
    CONNECTION_LIMIT_FRAME_CAPACITY,
    MAX_STREAM_DATA_FRAME_CAPACITY,
    QuicConnection,
    QuicConnectionState,
)
from aioquic.quic.packet import QuicFrameType, pull_quic_transport_parameters
from aioquic.quic.stream import QuicStream
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = ["QuicCore", "CIPHER_SUITES", "DEFAULT_STREAM_WINDOW", "DEFAULT_CONNECTION_WINDOW", "DEFAULT_MAX_INBOUND_STREAMS"]

_CLIENT_GROUPS: Final = (Group.X25519, Group.SECP256R1)
# AES-128-GCM first: the fastest with AES-NI; all three are mandatory-to-offer in practice.
CIPHER_SUITES: Final = [
    CipherSuite.AES_128_GCM_SHA256,
    CipherSuite.CHACHA20_POLY1305_SHA256,
    CipherSuite.AES_256_GCM_SHA384,
]
ACK_DELAY: Final = 0.001  # seconds a lone ack-eliciting packet may wait for its ACK
# An ACK that is due is marked due this long *before* ``now``: aioquic lets pacing hold back an ACK
# that is due exactly now, which would spin the timer with a frozen clock.
_DUE: Final = 1e-6
DEFAULT_STREAM_WINDOW: Final = 2 * 1024 * 1024
DEFAULT_CONNECTION_WINDOW: Final = 8 * 1024 * 1024
DEFAULT_MAX_INBOUND_STREAMS: Final = 256


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
        )
        self._stream_window = stream_window
        self._connection_window = connection_window
        self._stream_step = stream_window // 4  # grant credit in steps of at least this much
        self._connection_step = connection_window // 4
        self.peer_max_udp_payload = 65527  # the peer's max_udp_payload_size transport parameter
        self._consumed: dict[int, int] = {}  # stream id -> bytes the application consumed
        self.unread = 0  # bytes delivered to the application and not consumed yet, all streams
        # Announced in the transport parameters (value), so also what the peer already knows (sent).
        self._local_max_streams_bidi.value = self._local_max_streams_bidi.sent = max_inbound_streams
        self._local_max_streams_uni.value = self._local_max_streams_uni.sent = 0  # libp2p: bidirectional only
        # ACK policy (RFC 9000 section 13.2.1): a lone ack-eliciting packet is acknowledged within
        # ACK_DELAY, or earlier on a packet we send anyway (ack_now); two or more are acknowledged
        # at the end of the batch of datagrams that brought them (the driver reads in batches, so in
        # a bulk transfer this is one ACK per batch, not per packet).
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
    def heard_from_peer(self) -> bool:
        """True once a packet from the peer decrypted (a garbage Initial leaves this False)."""
        return bool(self._state != QuicConnectionState.FIRSTFLIGHT)

    @property
    def max_datagram_size(self) -> int:
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

    # --- aioquic overrides -----------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        super().receive_datagram(data, addr, now)
        if self._eliciting >= 2 or (self._immediate_ack and self._eliciting):
            self.ack_now(now)
        spaces = getattr(self, "_spaces", None)
        if spaces:  # handshake packets: acknowledge right away (the answer usually carries it)
            for epoch in (Epoch.INITIAL, Epoch.HANDSHAKE):
                space = spaces.get(epoch)
                if space is not None and space.ack_at is not None and space.ack_at > now - _DUE:
                    space.ack_at = now - _DUE

    def _payload_received(self, context: Any, plain: bytes, crypto_frame_required: bool = False) -> tuple[bool, bool]:
        is_ack_eliciting, is_probing = super()._payload_received(context, plain, crypto_frame_required)
        if is_ack_eliciting and context.epoch == Epoch.ONE_RTT:
            self._eliciting += 1
        return is_ack_eliciting, is_probing

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
            # aioquic sends a key share for every group it supports (four key generations); offer
            # the two every libp2p implementation accepts.
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
        for limit in (max_data, self._local_max_streams_bidi, self._local_max_streams_uni):
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
