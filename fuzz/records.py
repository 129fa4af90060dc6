"""Generators and harnesses for keys, signed envelopes / peer records and the libp2p TLS certificate
extension — the signed structures other decoders (Noise, identify, gossipsub PX) carry."""

from __future__ import annotations

import datetime
import functools

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from multiaddr import Multiaddr

from mycel.core.errors import DecodeError, HandshakeError, InvalidCertificate, InvalidSignature
from mycel.core.identity import Identity
from mycel.core.keys import (
    EcdsaPrivateKey,
    KeyType,
    PrivateKey,
    RsaPrivateKey,
    Secp256k1PrivateKey,
    public_key_from_protobuf,
)
from mycel.core.pb import peer_record_pb2, signed_envelope_pb2
from mycel.core.peer_id import PeerId
from mycel.core.record import PEER_RECORD_DOMAIN, PEER_RECORD_PAYLOAD_TYPE, _signing_input, open_peer_record
from mycel.core.varint import encode_uvarint
from mycel.network.peerstore import MAX_ADDRS_PER_PEER, PeerStore
from mycel.security.plaintext import decode_exchange
from mycel.security.tls.certificate import (
    EXTENSION_OID,
    SIGNATURE_PREFIX,
    decode_signed_key,
    encode_signed_key,
    verify_certificate,
)

from fuzz.core import Harness, Source, blob, chance, mutate, pick


@functools.cache
def identities() -> tuple[Identity, ...]:
    """A fixed pool of identities of every key type (RSA generated once: slow)."""
    ids = [Identity.from_seed(bytes([i]) * 32) for i in range(1, 5)]
    ids.append(Identity.from_private_key(Secp256k1PrivateKey.from_bytes(b"\x01" * 32)))
    ids.append(Identity.from_private_key(EcdsaPrivateKey.generate()))
    ids.append(Identity.from_private_key(RsaPrivateKey.generate(2048)))
    return tuple(ids)


def pb_varint(value: int) -> bytes:
    """A protobuf varint (up to 64 bits: 10 bytes, unlike multiformats' 9-byte uvarints)."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, value: bytes | int) -> bytes:
    """One protobuf field: a varint for an int, length-delimited for bytes."""
    if isinstance(value, int):
        return pb_varint(number << 3) + pb_varint(value)
    return pb_varint(number << 3 | 2) + pb_varint(len(value)) + value


def gen_key_pb(src: Source, good: PrivateKey | None = None) -> bytes:
    """A ``PublicKey`` protobuf: mostly a real key (of every type), else hostile type/data fields."""
    key = good or pick(src, identities()).private_key
    kind = src.int(0, 19)
    if kind < 12:
        return key.public_key.to_protobuf()
    raw = key.public_key.to_bytes()
    if kind == 12:
        return _field(1, int(pick(src, list(KeyType)))) + _field(2, raw)  # a type that does not fit the data
    if kind == 13:
        return _field(1, src.int(4, 1 << 32)) + _field(2, raw)  # unknown type
    if kind == 14:
        return _field(1, int(key.key_type)) + _field(2, raw[: src.int(0, len(raw))])  # cut data
    if kind == 15:
        return _field(2, raw) + _field(1, int(key.key_type)) + _field(1, int(key.key_type))  # repeated, reordered
    if kind == 16:
        return _field(1, int(KeyType.RSA)) + _field(2, blob(src, 40) * src.int(1, 500))  # big RSA junk
    if kind == 17:
        return _field(1, int(key.key_type)) + _field(2, raw) + _field(src.int(3, 30), blob(src, 20))  # extra field
    return mutate(src, key.public_key.to_protobuf())


_ADDRS: list[bytes] = [
    Multiaddr("/ip4/127.0.0.1/tcp/4001").to_bytes(),
    Multiaddr("/ip6/::1/udp/4001/quic-v1").to_bytes(),
    Multiaddr("/dns4/example.com/tcp/443/wss").to_bytes(),
    Multiaddr("/ip4/198.18.0.1/udp/9/quic-v1/webtransport").to_bytes(),
]


def gen_multiaddr_bytes(src: Source) -> bytes:
    """Binary multiaddr: mostly valid, else lenient-parser bait (cut values, unknown codes, empty)."""
    kind = src.int(0, 9)
    if kind < 6:
        return pick(src, _ADDRS)
    if kind == 6:
        return b"\x04" + src.bytes(src.int(0, 6))  # ip4 with a wrong-size value
    if kind == 7:
        return pick(src, _ADDRS)[: src.int(0, 8)]
    if kind == 8:
        return encode_uvarint(src.int(0, 1 << 20)) + blob(src, 12)
    return blob(src, 30)


def gen_peer_record_envelope(src: Source, signer: PrivateKey | None = None, for_peer: PeerId | None = None) -> bytes:
    """A signed envelope holding a peer record, validly signed most of the time, with hostile fields:
    a record of another peer, thousands of addresses, garbage addresses, seq at the uint64 bounds, the
    wrong payload type or domain, a corrupted signature, an oversized payload."""
    key = signer or pick(src, identities()).private_key
    record = peer_record_pb2.PeerRecord()
    who = src.int(0, 9)
    if who < 7:
        record.peer_id = (for_peer or PeerId.from_public_key(key.public_key)).to_bytes()
    elif who < 9:
        record.peer_id = pick(src, identities()).peer_id.to_bytes()  # a record about another peer
    else:
        record.peer_id = blob(src, 40)
    record.seq = pick(src, (0, 1, (1 << 64) - 1, src.int(0, (1 << 64) - 1)))
    many = src.int(0, 9)
    count = src.int(0, 4) if many < 7 else (src.int(60, 70) if many < 9 else src.int(500, 3000))
    hostile_addrs = chance(src, 30)
    addrs = [gen_multiaddr_bytes(src) if hostile_addrs else pick(src, _ADDRS) for _ in range(min(count, 8))]
    for i in range(count):
        record.addresses.add(multiaddr=addrs[i % len(addrs)] if addrs else b"")
    payload = record.SerializeToString()
    if chance(src, 5):
        payload = mutate(src, payload)
    payload_type = PEER_RECORD_PAYLOAD_TYPE if chance(src, 92) else blob(src, 3)
    domain = PEER_RECORD_DOMAIN if chance(src, 95) else "libp2p-routing-state"
    signature = key.sign(_signing_input(domain, payload_type, payload))
    if chance(src, 8):
        signature = mutate(src, signature) if chance(src, 50) else blob(src, 80)
    env = signed_envelope_pb2.Envelope(
        public_key=key.public_key.to_protobuf() if chance(src, 85) else gen_key_pb(src, key),
        payload_type=payload_type,
        payload=payload,
        signature=signature,
    )
    out: bytes = env.SerializeToString()
    return mutate(src, out) if chance(src, 10) else out


class Keys(Harness):
    """``public_key_from_protobuf`` on real keys of every type and hostile type/data fields; a parsed key
    must re-encode and verify without raising."""

    name = "keys"
    expected = (DecodeError,)
    min_past_ratio = 0.5

    def one(self, src: Source) -> None:
        data = gen_key_pb(src)
        key = public_key_from_protobuf(data)
        self.past = True
        assert public_key_from_protobuf(key.to_protobuf()) == key
        assert key.verify(b"data", blob(src, 80)) in (True, False)


class PeerRecords(Harness):
    """``open_peer_record`` then ``PeerStore.consume_peer_record`` on envelopes with hostile fields
    (GHSA-gcq9-qqwx-rgj3: records for other peers, oversized records). Only a record of the peer it
    arrived from is stored; its addresses all render; the per-peer address bound holds."""

    name = "peer_record"
    expected = (DecodeError, InvalidSignature)
    min_past_ratio = 0.5

    def one(self, src: Source) -> None:
        ids = identities()
        sender = pick(src, ids)
        data = gen_peer_record_envelope(src, sender.private_key if chance(src, 85) else None)
        env_pb = signed_envelope_pb2.Envelope()
        try:
            env_pb.ParseFromString(data)
            public_key_from_protobuf(env_pb.public_key)
            self.past = True  # the envelope and its key parse: the signature is checked next
        except Exception:
            pass
        env, record = open_peer_record(data)
        self.deep = True
        assert record.peer_id.matches_public_key(env.public_key)
        for addr in record.addrs:
            str(addr)
        store = PeerStore()
        stored = store.consume_peer_record(data, 60.0, 0.0, expected_peer=sender.peer_id)
        assert record.peer_id == sender.peer_id, "a record for another peer was accepted"
        assert stored
        assert len(store.addrs(sender.peer_id, 0.0)) <= MAX_ADDRS_PER_PEER
        assert store.peers() == [sender.peer_id]


# -- TLS: the libp2p certificate extension ---------------------------------------------------------


def gen_signed_key(src: Source, cert_spki: bytes, signer: PrivateKey) -> bytes:
    """The DER ``SignedKey`` of the extension: valid most of the time, else hostile lengths (long form,
    non-minimal, indefinite, 4-byte huge), extra fields, wrong tags, a signature by another key."""
    pub = gen_key_pb(src, signer)
    sig = signer.sign(SIGNATURE_PREFIX + cert_spki) if chance(src, 85) else blob(src, 72)
    kind = src.int(0, 14)
    if kind < 9:
        return encode_signed_key(pub, sig)
    if kind == 9 and len(pub) < 0x80:  # a non-minimal long-form length
        inner = b"\x04\x81" + bytes([len(pub)]) + pub + encode_signed_key(b"", sig)[4:]
        return b"\x30\x82" + len(inner).to_bytes(2, "big") + inner
    if kind == 10:
        return b"\x30\x80" + encode_signed_key(pub, sig)[2:]  # indefinite length
    if kind == 11:
        return b"\x30\x84" + src.int(0, 0xFFFFFFFF).to_bytes(4, "big") + encode_signed_key(pub, sig)
    if kind == 12:
        return encode_signed_key(pub, sig)[:-1] + b"\x04\x00"  # extra field / changed tail
    if kind == 13:
        return b"\x31" + encode_signed_key(pub, sig)[1:]  # SET, not SEQUENCE
    return mutate(src, encode_signed_key(pub, sig))


@functools.cache
def _cert_key() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, spki


_NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)


class TlsCertificate(Harness):
    """``verify_certificate`` on self-signed certificates (really signed: they parse and verify) whose
    libp2p extension holds a hostile ``SignedKey`` (and sometimes the extension twice, critical unknown
    extensions, a validity period that is over); ``decode_signed_key`` on its own as well."""

    name = "tls_certificate"
    expected = (InvalidCertificate, DecodeError)
    min_past_ratio = 0.5

    def one(self, src: Source) -> None:
        key, spki = _cert_key()
        signer = pick(src, identities()).private_key
        signed_key = gen_signed_key(src, spki, signer)
        if chance(src, 30):
            pub, sig = decode_signed_key(signed_key)
            self.past = True
            assert encode_signed_key(pub, sig) == signed_key, "SignedKey decoded from non-canonical DER"
            return
        name = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "1")])
        start = _NOW - datetime.timedelta(days=1) if chance(src, 95) else _NOW + datetime.timedelta(days=1)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(src.int(1, 1 << 64))
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=src.int(0, 400)))
        )
        if chance(src, 95):
            builder = builder.add_extension(x509.UnrecognizedExtension(EXTENSION_OID, signed_key), critical=chance(src, 50))
        if chance(src, 5):
            other = x509.ObjectIdentifier(f"1.3.6.1.4.1.99999.{src.int(1, 9)}")
            builder = builder.add_extension(x509.UnrecognizedExtension(other, blob(src, 10)), critical=True)
        der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        self.past = True  # a certificate that parses and is validly self-signed: the extension is next
        verified = verify_certificate(der, _NOW)
        self.deep = True
        assert verified.peer_id == PeerId.from_public_key(verified.public_key)


class PlaintextExchange(Harness):
    """``decode_exchange`` of /plaintext/2.0.0: an id and a key that mostly belong together, else another
    peer's id, a garbage id, hostile key protobufs, unknown fields."""

    name = "plaintext"
    expected = (DecodeError, HandshakeError)
    min_past_ratio = 0.5

    def one(self, src: Source) -> None:
        who = pick(src, identities())
        pid = who.peer_id.to_bytes() if chance(src, 80) else (pick(src, identities()).peer_id.to_bytes()
                                                               if chance(src, 50) else blob(src, 40))
        body = (_field(1, pid) if chance(src, 95) else b"") + (_field(2, gen_key_pb(src, who.private_key))
                                                               if chance(src, 95) else b"")
        if chance(src, 5):
            body += _field(src.int(3, 20), blob(src, 10))
        key, peer = decode_exchange(mutate(src, body) if chance(src, 8) else body)
        self.past = True
        assert peer == PeerId.from_public_key(key)


HARNESSES = [Keys, PeerRecords, TlsCertificate, PlaintextExchange]
