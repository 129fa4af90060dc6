"""Decode an identify answer and check its signed peer record, independently of mycel's own code.

Used by the go adapter, which runs ``/ipfs/id/1.0.0`` itself over a p2pd stream (the daemon's control
protocol does not expose go's peerstore view of protocols or agent versions). Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from google.protobuf.message import DecodeError as ProtobufDecodeError
from multiaddr import Multiaddr

from interop.p2pd import interop_identify_pb2 as pb
from mycel.core.errors import DecodeError, MessageTooLarge
from mycel.core.varint import LengthPrefixedDecoder, encode_uvarint

MAX_IDENTIFY_MESSAGE = 8 * 1024  # go's cap per message; a longer prefix raises MessageTooLarge
MAX_IDENTIFY_MESSAGES = 10  # go reads at most this many delimited messages and merges them
PEER_RECORD_DOMAIN = b"libp2p-peer-record"
PEER_RECORD_PAYLOAD_TYPE = b"\x03\x01"


@dataclass
class IdentifyInfo:
    protocol_version: str = ""
    agent_version: str = ""
    protocols: list[str] = field(default_factory=list)
    listen_addrs: list[str] = field(default_factory=list)
    observed_addr: str = ""
    public_key: bytes = b""
    signed_peer_record: bytes = b""


def addr_to_str(raw: bytes) -> str:
    try:
        return str(Multiaddr(raw))
    except Exception:  # multiaddr raises assorted types on unknown codes
        return "0x" + raw.hex()


def decode_identify_stream(data: bytes) -> IdentifyInfo:
    """Decode up to 10 delimited Identify messages (the whole stream up to EOF) and merge them."""
    decoder = LengthPrefixedDecoder(MAX_IDENTIFY_MESSAGE)
    decoder.feed(data)
    merged = pb.Identify()
    count = 0
    while True:
        body = decoder.next_message()
        if body is None:
            break
        count += 1
        if count > MAX_IDENTIFY_MESSAGES:
            raise MessageTooLarge(f"more than {MAX_IDENTIFY_MESSAGES} identify messages")
        msg = pb.Identify()
        try:
            msg.ParseFromString(body)
        except ProtobufDecodeError as exc:
            raise DecodeError(f"bad Identify message: {exc}") from exc
        merged.MergeFrom(msg)
    if decoder.buffered:
        raise DecodeError(f"{decoder.buffered} trailing bytes after the identify messages")
    if count == 0:
        raise DecodeError("no identify message before EOF")
    return IdentifyInfo(
        protocol_version=merged.protocolVersion,
        agent_version=merged.agentVersion,
        protocols=list(merged.protocols),
        listen_addrs=[addr_to_str(a) for a in merged.listenAddrs],
        observed_addr=addr_to_str(merged.observedAddr) if merged.observedAddr else "",
        public_key=merged.publicKey,
        signed_peer_record=merged.signedPeerRecord,
    )


def peer_id_from_public_key(key_proto: bytes) -> bytes:
    """Peer id multihash: identity if the key protobuf is at most 42 bytes, else sha2-256."""
    if len(key_proto) <= 42:
        return b"\x00" + encode_uvarint(len(key_proto)) + key_proto
    return b"\x12\x20" + hashlib.sha256(key_proto).digest()


def _verify(key: pb.PublicKey, message: bytes, signature: bytes) -> bool:
    try:
        if key.Type == 1:
            ed25519.Ed25519PublicKey.from_public_bytes(key.Data).verify(signature, message)
        elif key.Type == 0:
            rsa_key = serialization.load_der_public_key(key.Data)
            if not isinstance(rsa_key, rsa.RSAPublicKey):
                return False
            rsa_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        elif key.Type == 2:
            point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), key.Data)
            point.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif key.Type == 3:
            ec_key = serialization.load_der_public_key(key.Data)
            if not isinstance(ec_key, ec.EllipticCurvePublicKey):
                return False
            ec_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except (CryptoInvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def check_peer_record(envelope_bytes: bytes, expected_peer: bytes) -> tuple[str, list[str]]:
    """Return ``(verdict, addrs)``: verdict is "verified" or a reason it is not."""
    env = pb.Envelope()
    try:
        env.ParseFromString(envelope_bytes)
    except ProtobufDecodeError as exc:
        return f"invalid: undecodable envelope ({exc})", []
    if env.payload_type != PEER_RECORD_PAYLOAD_TYPE:
        return f"invalid: payload type {env.payload_type.hex()}", []
    unsigned = b"".join(
        encode_uvarint(len(part)) + part for part in (PEER_RECORD_DOMAIN, env.payload_type, env.payload)
    )
    if not _verify(env.public_key, unsigned, env.signature):
        return "invalid: signature does not verify", []
    record = pb.PeerRecord()
    try:
        record.ParseFromString(env.payload)
    except ProtobufDecodeError as exc:
        return f"invalid: undecodable record ({exc})", []
    signer = peer_id_from_public_key(env.public_key.SerializeToString())
    if record.peer_id != signer or record.peer_id != expected_peer:
        return "invalid: record peer id is not the signer / remote peer", []
    return "verified", [addr_to_str(a.multiaddr) for a in record.addresses]
