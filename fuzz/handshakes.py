"""Noise harnesses. The fuzzer plays the other side with a real XX state machine, so its messages are
valid handshake prefixes (msg1, or a correctly encrypted msg2/msg3) carrying hostile payloads, with
ciphertext or framing damaged only some of the time: the input reaches decryption and payload parsing
(identity key, signature, extensions), not just the 2-byte length check."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from mycel.core.errors import DecodeError, DecryptionError, HandshakeError
from mycel.core.identity import Identity
from mycel.core.peer_id import PeerId
from noise.backends.default.keypairs import KeyPair25519

from mycel.security.noise.handshake import STATIC_KEY_DOMAIN, NoiseHandshake, XXHandshake, x25519_keypair
from mycel.security.noise.transport import MAX_FRAME, TAG_SIZE, NoiseTransport, TransportCipher

from fuzz.core import Harness, Source, blob, chance, chunks, mutate, pick
from fuzz.records import _field, gen_key_pb, identities


@dataclass(frozen=True)
class _Keys:
    ours: Identity
    fuzzer: Identity
    our_static: KeyPair25519
    our_eph: KeyPair25519
    fz_static: KeyPair25519
    fz_eph: KeyPair25519
    our_sig: bytes
    fz_sig: bytes


@functools.cache
def _keys() -> _Keys:
    """Fixed keys for both sides (a sans-IO handshake takes its randomness as input), and each side's
    signature over its static key computed once."""
    ours, fuzzer = Identity.from_seed(b"\x21" * 32), Identity.from_seed(b"\x22" * 32)
    our_static, fz_static = x25519_keypair(b"\x31" * 32), x25519_keypair(b"\x33" * 32)
    return _Keys(
        ours=ours,
        fuzzer=fuzzer,
        our_static=our_static,
        our_eph=x25519_keypair(b"\x32" * 32),
        fz_static=fz_static,
        fz_eph=x25519_keypair(b"\x34" * 32),
        our_sig=ours.private_key.sign(STATIC_KEY_DOMAIN + our_static.public_bytes),
        fz_sig=fuzzer.private_key.sign(STATIC_KEY_DOMAIN + fz_static.public_bytes),
    )


_MUXERS = ("/yamux/1.0.0", "/mplex/6.7.0", "", "/x" * 300)


def gen_payload(src: Source) -> bytes:
    """A NoiseHandshakePayload with hostile fields (raw protobuf, so invalid UTF-8 muxer names and
    unknown fields can be sent too)."""
    k = _keys()
    fuzzer = k.fuzzer
    kind = src.int(0, 19)
    if kind == 19:
        return blob(src, 200)
    out = b""
    if chance(src, 95):
        out += _field(1, fuzzer.public_key.to_protobuf() if chance(src, 75) else gen_key_pb(src))
    if chance(src, 95):
        which = src.int(0, 9)
        if which < 7:
            sig = k.fz_sig
        elif which == 7:  # a real signature, by another identity, over our static key
            sig = pick(src, identities()).private_key.sign(STATIC_KEY_DOMAIN + k.fz_static.public_bytes)
        else:
            sig = blob(src, 80)
        out += _field(2, sig)
    if chance(src, 50):
        ext = b""
        n = src.int(0, 6) if chance(src, 90) else src.int(100, 2000)
        for _ in range(n):
            name = pick(src, _MUXERS).encode() if chance(src, 85) else blob(src, 12)
            ext += _field(2, name)
        for _ in range(src.int(0, 2)):
            ext += _field(1, blob(src, 40))
        if chance(src, 10):
            ext += _field(src.int(3, 20), blob(src, 10))
        out += _field(4, ext)
    if chance(src, 5):
        out += _field(src.int(5, 30), blob(src, 16))
    return mutate(src, out) if chance(src, 10) else out


def _frame(src: Source, message: bytes) -> bytes:
    """``u16 length || message``, with a lying length some of the time."""
    if chance(src, 93):
        return min(len(message), 0xFFFF).to_bytes(2, "big") + message  # (an oversized one lies)
    lie = pick(src, (0, 1, len(message) + 1, 0xFFFF, max(0, len(message) - 1)))
    return min(lie, 0xFFFF).to_bytes(2, "big") + message


class NoiseHandshakeHarness(Harness):
    """Our ``NoiseHandshake`` (as initiator or responder) against a real XX peer whose payload-carrying
    message (msg2 or msg3) holds a hostile payload, sometimes with damaged ciphertext or frame length.
    ``past`` = the payload-carrying frame arrived whole (decryption ran); ``deep`` = it decrypted (the
    payload was parsed and checked)."""

    name = "noise_handshake"
    expected = (HandshakeError, DecodeError)
    min_past_ratio = 0.6

    def one(self, src: Source) -> None:
        k = _keys()
        we_initiate = chance(src, 50)
        ours = NoiseHandshake(
            k.ours,
            initiator=we_initiate,
            static_private=k.our_static,
            ephemeral_private=k.our_eph,
            muxers=("/yamux/1.0.0", "/mplex/6.7.0") if chance(src, 70) else (),
            identity_sig=k.our_sig,
        )
        peer = XXHandshake(
            initiator=not we_initiate,
            static_private=k.fz_static,
            ephemeral_private=k.fz_eph,
        )
        if we_initiate:
            msg1 = ours.data_to_send()[2:]
            peer.read_message(msg1)
            carrier = peer.write_message(gen_payload(src))
        else:
            m1 = peer.write_message(b"" if chance(src, 90) else blob(src, 40))
            wire1 = _frame(src, mutate(src, m1) if chance(src, 10) else m1)
            for piece in chunks(src, wire1, 3):
                ours.receive_data(piece)
            out = ours.data_to_send()
            if not out:
                return  # msg1 was cut short: still waiting
            peer.read_message(out[2:])
            carrier = peer.write_message(gen_payload(src))
        damaged = mutate(src, carrier) if chance(src, 15) else carrier
        wire = _frame(src, damaged)
        if chance(src, 10):
            wire += blob(src, 64)  # the first transport frames, or junk, right behind
        whole = 2 + int.from_bytes(wire[:2], "big") <= len(wire) and int.from_bytes(wire[:2], "big") <= MAX_FRAME
        self.past = whole
        try:
            for piece in chunks(src, wire, 4):
                ours.receive_data(piece)
        except HandshakeError as exc:
            self.deep = whole and not str(exc).startswith("invalid Noise handshake message")
            raise
        except DecodeError:
            self.deep = True
            raise
        self.deep = whole
        if ours.complete:
            result = ours.result
            # authenticated as whoever's key signed our peer's static key (another identity's real
            # signature with that identity's key is a valid handshake for that identity)
            assert result.remote_peer == PeerId.from_public_key(result.remote_public_key)
            assert result.remote_public_key.verify(STATIC_KEY_DOMAIN + k.fz_static.public_bytes, k.fz_sig) or (
                result.remote_public_key != k.fuzzer.public_key
            )
            assert all(isinstance(m, str) for m in result.remote_muxers)


class NoiseTransportHarness(Harness):
    """The transport phase: frames sealed with the right key and nonce (so they authenticate), some
    damaged, replayed, reordered, shorter than a tag or with a lying length, fed in random pieces and
    read as the connection reads (feed only after ``read`` returned None). The plaintext that comes out
    must be exactly a prefix of what was sealed."""

    name = "noise_transport"
    expected = (DecryptionError, DecodeError)
    min_past_ratio = 0.6

    def one(self, src: Source) -> None:
        key = b"\x41" * 32
        sender = TransportCipher(key)
        wire = bytearray()
        clean = True  # every frame so far is valid: its plaintext must come out
        expected = bytearray()
        for _ in range(src.int(1, 12)):
            size = pick(src, (0, 1, 100, 4096, src.int(0, 3000), MAX_FRAME - TAG_SIZE)) if chance(src, 97) else 0
            plain = bytes([src.int(0, 255)]) * size
            kind = src.int(0, 19)
            if kind < 15:
                ct = sender.encrypt(plain)
                frame = len(ct).to_bytes(2, "big") + ct
            elif kind == 15:
                frame = len(plain).to_bytes(2, "big") + plain  # unencrypted
            elif kind == 16:
                ct = TransportCipher(key, sender.nonce + 1).encrypt(plain)  # wrong nonce
                frame = len(ct).to_bytes(2, "big") + ct
            elif kind == 17:
                t = blob(src, TAG_SIZE - 1)
                frame = len(t).to_bytes(2, "big") + t  # shorter than a tag
            elif kind == 18:
                ct = sender.encrypt(plain)
                frame = mutate(src, len(ct).to_bytes(2, "big") + ct)
            else:
                frame = b"\xff\xff" + blob(src, 100)  # a 65535-byte frame that never completes
            wire += frame
            if clean and kind < 15:
                expected += plain
            else:
                clean = False
        transport = NoiseTransport(b"\x42" * 32, key)
        got = bytearray()
        try:
            for piece in chunks(src, bytes(wire), 6):
                transport.feed(piece)
                while (out := transport.read(pick(src, (None, 1, 1000, 70_000)))) is not None:
                    got += out
                    self.past = True
                assert transport.buffered <= len(piece) + MAX_FRAME + 2
            if chance(src, 50):
                transport.feed_eof()
        finally:
            assert expected.startswith(got) or got.startswith(expected), "plaintext that was never sealed came out"
        self.deep = True
        if clean:
            assert got == expected


HARNESSES = [NoiseHandshakeHarness, NoiseTransportHarness]
