"""A small DNS message codec for mDNS (RFC 1035 wire format, RFC 6762 bits): sans-IO, bounded.

Decoding takes untrusted datagrams and raises :class:`MalformedPacket` (a
:class:`~mycel.core.errors.DecodeError`) for anything outside these bounds — nothing else escapes:

* a packet longer than :data:`MAX_PACKET` (9000 bytes, RFC 6762 §17) is refused before parsing;
* at most :data:`MAX_RECORDS` questions + records in one message (the header's counts are checked
  against it first, so a header claiming 65535 records costs nothing);
* labels of at most 63 bytes, names of at most 255 bytes (RFC 1035 §2.3.4) and at most
  :data:`MAX_POINTERS` compression pointers per name; a pointer must point strictly before the
  label it is read from, so pointer loops are impossible (and refused);
* record data must fit its declared length exactly (A = 4 bytes, AAAA = 16, TXT strings inside it).

Record types other than A, AAAA, PTR, TXT and SRV are kept as raw bytes. Encoding compresses names
(suffixes already written are replaced by pointers), which keeps a response with many addresses small.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from mycel.core.errors import DecodeError

MAX_PACKET = 9000
"""Largest datagram decoded (RFC 6762 §17: mDNS messages up to 9000 bytes); longer is refused."""
MAX_RECORDS = 256
"""Most questions + records decoded from one message; more is refused."""
MAX_POINTERS = 32
"""Most compression pointers followed while reading one name."""
MAX_LABEL = 63
MAX_NAME = 255
"""Longest name on the wire (length bytes included, RFC 1035 §3.1)."""

TYPE_A = 1
TYPE_PTR = 12
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_SRV = 33
TYPE_ANY = 255
CLASS_IN = 1
_CLASS_MASK = 0x7FFF
_TOP_BIT = 0x8000  # questions: unicast-response wanted (QU); records: cache-flush

FLAG_RESPONSE = 0x8000
FLAG_AUTHORITATIVE = 0x0400

_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")


class MalformedPacket(DecodeError):
    """A DNS message that breaks the format or this codec's bounds."""


@dataclass(frozen=True)
class SRVData:
    """SRV record data (RFC 2782): ``priority``, ``weight``, ``port`` and ``target`` host name."""

    priority: int
    weight: int
    port: int
    target: str


RData = str | tuple[bytes, ...] | SRVData | ipaddress.IPv4Address | ipaddress.IPv6Address | bytes
"""PTR: the name; TXT: its strings; SRV: :class:`SRVData`; A/AAAA: the address; other types: raw bytes."""


@dataclass(frozen=True)
class Question:
    """A question: ``name`` (dotted, no trailing dot, compared case-insensitively), ``type``, class (``cls``)."""

    name: str
    type: int
    cls: int = CLASS_IN
    unicast_response: bool = False
    """The QU bit (RFC 6762 §5.4): the asker accepts a unicast answer."""


@dataclass(frozen=True)
class Record:
    """A resource record: ``name``, ``type``, ``ttl`` (seconds; 0 is a goodbye), ``data`` typed by ``type``
    (see :data:`RData`), class ``cls`` and the mDNS ``cache_flush`` bit."""

    name: str
    type: int
    ttl: int
    data: RData
    cls: int = CLASS_IN
    cache_flush: bool = False


@dataclass
class Message:
    """A DNS message: ``id`` (mDNS uses 0), ``flags`` (QR, AA, ...), ``questions``, ``answers``,
    ``authorities`` and ``additionals``."""

    id: int = 0
    flags: int = 0
    questions: list[Question] = field(default_factory=list)
    answers: list[Record] = field(default_factory=list)
    authorities: list[Record] = field(default_factory=list)
    additionals: list[Record] = field(default_factory=list)

    @property
    def is_response(self) -> bool:
        """QR = 1."""
        return bool(self.flags & FLAG_RESPONSE)

    def records(self) -> list[Record]:
        """Answers, authorities and additionals, in that order."""
        return [*self.answers, *self.authorities, *self.additionals]


def name_eq(a: str, b: str) -> bool:
    """DNS names compare ASCII case-insensitively."""
    return a.lower() == b.lower()


# -- decoding ----------------------------------------------------------------------------------------


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """Read a (possibly compressed) name at ``offset``; return it and the offset after it in the message."""
    labels: list[str] = []
    wire_len = 1  # the final zero byte
    end: int | None = None
    pointers = 0
    limit = len(data)  # a pointer must point before where the current label run starts
    pos = offset
    while True:
        if pos >= len(data):
            raise MalformedPacket("name runs past the end of the packet")
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(data):
                raise MalformedPacket("truncated compression pointer")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            pointers += 1
            if pointers > MAX_POINTERS:
                raise MalformedPacket("too many compression pointers in one name")
            if end is None:
                end = pos + 2
            if target >= min(pos, limit):
                raise MalformedPacket("compression pointer does not point backwards (loop)")
            limit = target
            pos = target
            continue
        if length & 0xC0:
            raise MalformedPacket(f"unsupported label type 0x{length & 0xC0:02x}")
        pos += 1
        if length == 0:
            break
        if pos + length > len(data):
            raise MalformedPacket("label runs past the end of the packet")
        wire_len += length + 1
        if wire_len > MAX_NAME:
            raise MalformedPacket("name longer than 255 bytes")
        raw = data[pos : pos + length]
        try:
            label = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedPacket("label is not UTF-8") from exc
        if "." in label:
            raise MalformedPacket("label contains a dot")
        labels.append(label)
        pos += length
    return ".".join(labels), (end if end is not None else pos)


def _decode_rdata(data: bytes, rtype: int, start: int, length: int) -> RData:
    end = start + length
    body = data[start:end]
    if rtype == TYPE_A:
        if length != 4:
            raise MalformedPacket(f"A record with {length} bytes")
        return ipaddress.IPv4Address(body)
    if rtype == TYPE_AAAA:
        if length != 16:
            raise MalformedPacket(f"AAAA record with {length} bytes")
        return ipaddress.IPv6Address(body)
    if rtype == TYPE_PTR:
        name, after = _read_name(data, start)
        if after != end:
            raise MalformedPacket("PTR name does not fill its record")
        return name
    if rtype == TYPE_SRV:
        if length < 7:
            raise MalformedPacket("SRV record too short")
        priority, weight, port = struct.unpack_from("!HHH", data, start)
        target, after = _read_name(data, start + 6)
        if after != end:
            raise MalformedPacket("SRV target does not fill its record")
        return SRVData(priority, weight, port, target)
    if rtype == TYPE_TXT:
        strings: list[bytes] = []
        pos = start
        while pos < end:
            n = data[pos]
            pos += 1
            if pos + n > end:
                raise MalformedPacket("TXT string runs past its record")
            strings.append(data[pos : pos + n])
            pos += n
        return tuple(strings)
    return bytes(body)


def decode(data: bytes) -> Message:
    """Decode one DNS message; raises :class:`MalformedPacket` on anything malformed or out of bounds."""
    if len(data) > MAX_PACKET:
        raise MalformedPacket(f"packet of {len(data)} bytes (limit {MAX_PACKET})")
    if len(data) < _HEADER.size:
        raise MalformedPacket("packet shorter than a DNS header")
    msg_id, flags, qd, an, ns, ar = _HEADER.unpack_from(data, 0)
    if qd + an + ns + ar > MAX_RECORDS:
        raise MalformedPacket(f"{qd + an + ns + ar} questions + records (limit {MAX_RECORDS})")
    pos = _HEADER.size
    msg = Message(id=msg_id, flags=flags)
    for _ in range(qd):
        name, pos = _read_name(data, pos)
        if pos + 4 > len(data):
            raise MalformedPacket("truncated question")
        qtype, qclass = struct.unpack_from("!HH", data, pos)
        pos += 4
        msg.questions.append(Question(name, qtype, qclass & _CLASS_MASK, bool(qclass & _TOP_BIT)))
    for section, count in ((msg.answers, an), (msg.authorities, ns), (msg.additionals, ar)):
        for _ in range(count):
            name, pos = _read_name(data, pos)
            if pos + _RR_FIXED.size > len(data):
                raise MalformedPacket("truncated record header")
            rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, pos)
            pos += _RR_FIXED.size
            if pos + rdlen > len(data):
                raise MalformedPacket("record data runs past the end of the packet")
            rdata = _decode_rdata(data, rtype, pos, rdlen)
            pos += rdlen
            section.append(Record(name, rtype, ttl, rdata, rclass & _CLASS_MASK, bool(rclass & _TOP_BIT)))
    return msg


# -- encoding ----------------------------------------------------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.names: dict[str, int] = {}  # lower-cased suffix -> offset (pointers reach 16383)

    def name(self, name: str) -> None:
        labels = [lab for lab in name.split(".") if lab] if name else []
        encoded = [lab.encode("utf-8") for lab in labels]
        if any(len(e) > MAX_LABEL for e in encoded):
            raise ValueError(f"label longer than 63 bytes in {name!r}")
        if sum(len(e) + 1 for e in encoded) + 1 > MAX_NAME:
            raise ValueError(f"name longer than 255 bytes: {name!r}")
        for i in range(len(labels)):
            suffix = ".".join(labels[i:]).lower()
            known = self.names.get(suffix)
            if known is not None:
                self.buf += struct.pack("!H", 0xC000 | known)
                return
            if len(self.buf) < 0x3FFF:
                self.names[suffix] = len(self.buf)
            self.buf.append(len(encoded[i]))
            self.buf += encoded[i]
        self.buf.append(0)

    def record(self, rec: Record) -> None:
        self.name(rec.name)
        cls = rec.cls | (_TOP_BIT if rec.cache_flush else 0)
        self.buf += struct.pack("!HHI", rec.type, cls, rec.ttl)
        at = len(self.buf)
        self.buf += b"\0\0"
        data = rec.data
        if rec.type in (TYPE_A, TYPE_AAAA):
            assert isinstance(data, ipaddress.IPv4Address | ipaddress.IPv6Address)
            self.buf += data.packed
        elif rec.type == TYPE_PTR:
            assert isinstance(data, str)
            self.name(data)
        elif rec.type == TYPE_SRV:
            assert isinstance(data, SRVData)
            self.buf += struct.pack("!HHH", data.priority, data.weight, data.port)
            self.name(data.target)
        elif rec.type == TYPE_TXT:
            assert isinstance(data, tuple)
            for s in data:
                if len(s) > 255:
                    raise ValueError("TXT string longer than 255 bytes")
                self.buf.append(len(s))
                self.buf += s
            if not data:
                self.buf.append(0)  # RFC 6763 §6.1: an empty TXT holds one empty string
        else:
            assert isinstance(data, bytes)
            self.buf += data
        struct.pack_into("!H", self.buf, at, len(self.buf) - at - 2)


def encode(msg: Message) -> bytes:
    """Encode ``msg`` with name compression (raises ValueError on a label/name/TXT string too long)."""
    w = _Writer()
    w.buf += _HEADER.pack(
        msg.id, msg.flags, len(msg.questions), len(msg.answers), len(msg.authorities), len(msg.additionals)
    )
    for q in msg.questions:
        w.name(q.name)
        w.buf += struct.pack("!HH", q.type, q.cls | (_TOP_BIT if q.unicast_response else 0))
    for rec in msg.records():
        w.record(rec)
    return bytes(w.buf)


__all__ = [
    "CLASS_IN",
    "FLAG_AUTHORITATIVE",
    "FLAG_RESPONSE",
    "MAX_PACKET",
    "MAX_RECORDS",
    "MalformedPacket",
    "Message",
    "Question",
    "RData",
    "Record",
    "SRVData",
    "TYPE_A",
    "TYPE_AAAA",
    "TYPE_ANY",
    "TYPE_PTR",
    "TYPE_SRV",
    "TYPE_TXT",
    "decode",
    "encode",
    "name_eq",
]
