"""DHT value records: the ``Record`` wire codec, ``timeReceived`` timestamps, and namespace validators.

A key is ``/<namespace>/<rest>`` (go-libp2p-record ``SplitKey``). A :class:`NamespacedValidator` dispatches
``validate`` / ``select`` to the validator registered for the namespace; :func:`default_validator` has the two
every libp2p DHT ships: ``pk`` (:class:`PublicKeyValidator`) and ``ipns`` (:class:`IpnsValidator`).

Sans-IO: nothing here reads a clock. Validators take ``now`` as an aware wall-clock :class:`~datetime.datetime`
(IPNS validity is a wall-clock end of life). Every failure on peer-supplied bytes raises :class:`InvalidRecord`
(or its subclass :class:`RecordTooLarge`), both :class:`~mycel.core.errors.ProtocolViolation`, never a random
exception.

Caps (sources):

* :data:`MAX_RECORD_VALUE_SIZE` = 65 KiB: rust-libp2p ``MemoryStoreConfig::max_value_bytes`` (``65 * 1024``).
  go-libp2p-kad-dht has no per-value cap below its 4 MiB message limit (``network.MessageSizeMax``); py-libp2p
  (PR #1426) caps a record at 1 MB. 65 KiB takes every value a rust node takes and keeps a store of
  :data:`~mycel.protocols.kad.store.DEFAULT_MAX_RECORDS` records small.
* :data:`MAX_IPNS_RECORD_SIZE` = 10 KiB: the IPNS record spec ("Record Size Limit"), checked before parsing.
* :data:`MAX_RECORD_KEY_SIZE` = 1 KiB: proposed here (``/pk/`` and ``/ipns/`` keys are at most 44 bytes).
* Public keys: ``mycel.core.keys.MAX_KEY_PROTOBUF`` (16 KiB; an 8192-bit RSA public key is ~1.1 KB).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol, TypeVar

import cbor2
from google.protobuf.message import DecodeError as _PbDecodeError
from google.protobuf.message import Message as _PbMessage

from mycel.core.errors import DecodeError, MessageTooLarge, ProtocolViolation
from mycel.core.keys import MAX_KEY_PROTOBUF, PublicKey, public_key_from_protobuf
from mycel.core.peer_id import PeerId
from mycel.protocols.kad import dht_pb2

__all__ = [
    "IPNS_SIGNATURE_PREFIX",
    "MAX_IPNS_RECORD_SIZE",
    "MAX_RECORD_AGE",
    "MAX_RECORD_KEY_SIZE",
    "MAX_RECORD_VALUE_SIZE",
    "DhtRecord",
    "InvalidRecord",
    "IpnsData",
    "IpnsValidator",
    "NamespacedValidator",
    "PublicKeyValidator",
    "RecordTooLarge",
    "Validator",
    "check_record_size",
    "decode_ipns_entry",
    "decode_record",
    "default_validator",
    "encode_record",
    "format_rfc3339_nano",
    "parse_rfc3339_nano",
    "split_key",
    "to_unix_ns",
]

MAX_RECORD_VALUE_SIZE: Final = 65 * 1024
MAX_RECORD_KEY_SIZE: Final = 1024
MAX_IPNS_RECORD_SIZE: Final = 10 * 1024
# go-libp2p-kad-dht amino MaxRecordAge: a stored value older than this (by its timeReceived) is not served.
MAX_RECORD_AGE: Final = timedelta(hours=48)
IPNS_SIGNATURE_PREFIX: Final = b"ipns-signature:"

_Pb = TypeVar("_Pb", bound=_PbMessage)
_NS_PER_SECOND: Final = 1_000_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_U64_MAX: Final = (1 << 64) - 1
_CBOR_MAX_DEPTH: Final = 16
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?(?:(Z)|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)


class InvalidRecord(ProtocolViolation):
    """A DHT record (or its key) failed validation: unknown namespace, bad signature, expired, malformed."""


class RecordTooLarge(InvalidRecord, MessageTooLarge):
    """A record key or value is over its cap; refused before it is parsed or stored."""


# --------------------------------------------------------------------------------------------- time


def to_unix_ns(when: datetime) -> int:
    """Nanoseconds since the Unix epoch of an aware datetime (``ValueError`` on a naive one)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("a naive datetime has no place on the wall clock; pass an aware one (tz=UTC)")
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


def format_rfc3339_nano(unix_ns: int) -> str:
    """``unix_ns`` as go's ``time.RFC3339Nano`` in UTC (``2006-01-02T15:04:05.999999999Z``: the fraction
    without trailing zeros, no dot when it is zero): what ``Record.timeReceived`` carries."""
    seconds, frac = divmod(unix_ns, _NS_PER_SECOND)
    t = _EPOCH + timedelta(seconds=seconds)  # OverflowError outside years 1-9999, as go refuses to marshal
    text = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


def parse_rfc3339_nano(text: str) -> int:
    """Parse an RFC 3339 time (any fraction of 1-9 digits, ``Z`` or ``±hh:mm``) into Unix nanoseconds.

    Raises :class:`InvalidRecord` on anything else (the strings come from peers).
    """
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise InvalidRecord(f"not an RFC 3339 time: {text[:64]!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    frac = int((m.group(7) or "").ljust(9, "0"))
    try:
        offset = timedelta(0)
        if m.group(8) is None:
            sign = 1 if m.group(9) == "+" else -1
            oh, om = int(m.group(10)), int(m.group(11))
            if oh > 23 or om > 59:
                raise ValueError("offset out of range")
            offset = sign * timedelta(hours=oh, minutes=om)
        base = datetime(year, month, day, hour, minute, second, tzinfo=UTC) - offset
    except (ValueError, OverflowError) as exc:
        raise InvalidRecord(f"not an RFC 3339 time: {text[:64]!r} ({exc})") from None
    return (base - _EPOCH) // timedelta(seconds=1) * _NS_PER_SECOND + frac


# --------------------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class DhtRecord:
    """A ``Record`` as carried by PUT_VALUE / GET_VALUE: ``key``, ``value`` and the receiver's ``timeReceived``
    (raw text as on the wire; empty when absent). Build a stored one with :meth:`received`."""

    key: bytes
    """The record key, ``/<namespace>/<rest>``."""
    value: bytes
    """The value, as validated by the namespace's validator."""
    time_received: str = ""
    """``timeReceived``: RFC 3339 (go's RFC3339Nano) text as on the wire, ``""`` when absent."""

    @classmethod
    def received(cls, key: bytes, value: bytes, now: datetime) -> DhtRecord:
        """The record as this node stores it: ``timeReceived`` set to ``now`` (go does the same on PUT_VALUE)."""
        return cls(key, value, format_rfc3339_nano(to_unix_ns(now)))

    def received_at_ns(self) -> int | None:
        """``timeReceived`` in Unix nanoseconds, or ``None`` when absent or not RFC 3339 (go then treats the
        stored record as too old and drops it)."""
        if not self.time_received:
            return None
        try:
            return parse_rfc3339_nano(self.time_received)
        except InvalidRecord:
            return None

    def to_pb(self) -> dht_pb2.Record:
        """The protobuf message, to embed in a ``Message``."""
        return dht_pb2.Record(key=self.key, value=self.value, timeReceived=self.time_received)

    @classmethod
    def from_pb(cls, pb: dht_pb2.Record) -> DhtRecord:
        """From a parsed protobuf; :class:`RecordTooLarge` if the key or value is over its cap."""
        check_record_size(pb.key, pb.value)
        return cls(bytes(pb.key), bytes(pb.value), pb.timeReceived)


def check_record_size(key: bytes, value: bytes) -> None:
    """Raise :class:`RecordTooLarge` unless ``key`` ≤ :data:`MAX_RECORD_KEY_SIZE` and ``value`` ≤
    :data:`MAX_RECORD_VALUE_SIZE`."""
    if len(key) > MAX_RECORD_KEY_SIZE:
        raise RecordTooLarge(f"record key of {len(key)} bytes (cap {MAX_RECORD_KEY_SIZE})")
    if len(value) > MAX_RECORD_VALUE_SIZE:
        raise RecordTooLarge(f"record value of {len(value)} bytes (cap {MAX_RECORD_VALUE_SIZE})")


def encode_record(record: DhtRecord) -> bytes:
    """The ``Record`` protobuf bytes (what a store keeps)."""
    data: bytes = record.to_pb().SerializeToString()
    return data


def decode_record(data: bytes) -> DhtRecord:
    """Parse ``Record`` protobuf bytes. :class:`RecordTooLarge` over the caps (checked before parsing when the
    whole buffer is already too big), :class:`~mycel.core.errors.DecodeError` when malformed."""
    if len(data) > MAX_RECORD_KEY_SIZE + MAX_RECORD_VALUE_SIZE + 256:
        raise RecordTooLarge(f"record of {len(data)} bytes")
    return DhtRecord.from_pb(_parse(dht_pb2.Record(), data, DecodeError, "DHT record"))


def _parse(pb: _Pb, data: bytes, error: type[ProtocolViolation], what: str) -> _Pb:
    """``pb`` filled from ``data``; the protobuf library's errors become ``error``."""
    try:
        pb.ParseFromString(data)
    except (_PbDecodeError, ValueError, RuntimeError) as exc:
        raise error(f"malformed {what}: {exc}") from None
    return pb


# --------------------------------------------------------------------------------------------- validators


def split_key(key: bytes) -> tuple[str, bytes]:
    """``/<namespace>/<rest>`` → ``(namespace, rest)``; :class:`InvalidRecord` when it has no namespace."""
    if not key.startswith(b"/"):
        raise InvalidRecord("record key does not start with '/'")
    end = key.find(b"/", 1)
    if end <= 1:
        raise InvalidRecord("record key has no /<namespace>/")
    try:
        namespace = key[1:end].decode("ascii")
    except UnicodeDecodeError:
        raise InvalidRecord("record key namespace is not ASCII") from None
    return namespace, key[end + 1 :]


class Validator(Protocol):
    """Checks and ranks the values of one key namespace (go-libp2p-record ``Validator``)."""

    def validate(self, key: bytes, value: bytes, now: datetime) -> None:
        """Return if ``value`` is a valid record for ``key`` at wall-clock ``now``; raise :class:`InvalidRecord`."""
        ...

    def select(self, key: bytes, values: Sequence[bytes]) -> int:
        """The index of the best of ``values`` (non-empty) for ``key``; stable for the same input."""
        ...


class NamespacedValidator:
    """Dispatches to the validator registered for a key's namespace; an unknown namespace is invalid.

    Also enforces the key and value caps before any validator runs.
    """

    __slots__ = ("_validators",)

    def __init__(self, validators: Mapping[str, Validator] | None = None) -> None:
        self._validators: dict[str, Validator] = dict(validators or {})

    def register(self, namespace: str, validator: Validator) -> None:
        """Add (or replace) the validator of ``namespace`` (without slashes: ``"pk"``, ``"ipns"``)."""
        if not namespace or "/" in namespace:
            raise ValueError(f"bad namespace {namespace!r}")
        self._validators[namespace] = validator

    @property
    def namespaces(self) -> frozenset[str]:
        """The namespaces with a validator."""
        return frozenset(self._validators)

    def validator_for(self, key: bytes) -> Validator:
        """The validator of ``key``'s namespace; :class:`InvalidRecord` when there is none."""
        namespace, _ = split_key(key)
        validator = self._validators.get(namespace)
        if validator is None:
            raise InvalidRecord(f"no validator for namespace {namespace!r}")
        return validator

    def validate(self, key: bytes, value: bytes, now: datetime) -> None:
        """Size caps, then the namespace's validator."""
        check_record_size(key, value)
        self.validator_for(key).validate(key, value, now)

    def select(self, key: bytes, values: Sequence[bytes]) -> int:
        """The namespace validator's choice; ``ValueError`` on no values (a caller's mistake)."""
        if not values:
            raise ValueError("cannot select from no values")
        return self.validator_for(key).select(key, values)


def _key_peer(key: bytes, namespace: str) -> PeerId:
    ns, rest = split_key(key)
    if ns != namespace:
        raise InvalidRecord(f"key namespace {ns!r} is not {namespace!r}")
    try:
        return PeerId.from_bytes(rest)
    except DecodeError as exc:
        raise InvalidRecord(f"/{namespace}/ key is not a peer id: {exc}") from None


def _parse_public_key(data: bytes) -> PublicKey:
    if len(data) > MAX_KEY_PROTOBUF:
        raise RecordTooLarge(f"public key of {len(data)} bytes (cap {MAX_KEY_PROTOBUF})")
    try:
        return public_key_from_protobuf(data)
    except DecodeError as exc:
        raise InvalidRecord(f"not a public key: {exc}") from None


class PublicKeyValidator:
    """The ``pk`` namespace: key ``/pk/<peer id bytes>``, value the ``PublicKey`` protobuf whose peer id is that
    id (any key type, RSA included). All valid values are equal: :meth:`select` returns 0."""

    __slots__ = ()

    def validate(self, key: bytes, value: bytes, now: datetime) -> None:
        """Raise :class:`InvalidRecord` unless ``value`` is the public key of the id in ``key``."""
        peer = _key_peer(key, "pk")
        if not peer.matches_public_key(_parse_public_key(value)):
            raise InvalidRecord("public key does not match the /pk/ key's peer id")

    def select(self, key: bytes, values: Sequence[bytes]) -> int:
        """Always 0 (go-libp2p-record: every valid public key record is the same key)."""
        return 0


@dataclass(frozen=True, slots=True)
class IpnsData:
    """The signed fields of an IPNS V2 record (``IpnsEntry.data``, DAG-CBOR)."""

    value: bytes
    """``Value``: the content path the name points at (``/ipfs/…``, ``/ipns/…``)."""
    validity: bytes
    """``Validity``: for EOL, the RFC 3339 time (ASCII bytes) after which the record is invalid."""
    validity_type: int
    """``ValidityType``: 0 (EOL) is the only one defined."""
    sequence: int
    """``Sequence``: the record's version; higher wins."""
    ttl_ns: int
    """``TTL``: how long resolvers may cache the record, in nanoseconds."""

    def eol_ns(self) -> int:
        """The end of life in Unix nanoseconds (``validity_type`` 0, EOL); :class:`InvalidRecord` otherwise."""
        if self.validity_type != 0:
            raise InvalidRecord(f"unsupported IPNS validity type {self.validity_type}")
        try:
            text = self.validity.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidRecord("IPNS validity is not ASCII") from None
        return parse_rfc3339_nano(text)


def _cbor_field(data: Mapping[object, object], name: str, kind: type) -> object:
    if name not in data:
        raise InvalidRecord(f"IPNS data has no {name}")
    item = data[name]
    if type(item) is not kind:
        raise InvalidRecord(f"IPNS data {name} is not {kind.__name__}")
    if kind is int and not 0 <= item <= _U64_MAX:  # type: ignore[operator]
        raise InvalidRecord(f"IPNS data {name} is not a uint64")
    return item


def _decode_ipns_data(data: bytes) -> IpnsData:
    stream = io.BytesIO(data)
    try:
        # A hostile document can only make cbor2 raise; whatever it raises is the peer's fault, so any
        # exception here becomes InvalidRecord (the input is at most 10 KiB, depth-capped).
        doc = cbor2.CBORDecoder(stream, max_depth=_CBOR_MAX_DEPTH).decode()
    except Exception as exc:  # noqa: BLE001 - see above
        raise InvalidRecord(f"IPNS data is not CBOR: {type(exc).__name__}") from None
    if stream.tell() != len(data):
        raise InvalidRecord("IPNS data has bytes after its CBOR document")
    if not isinstance(doc, Mapping):
        raise InvalidRecord("IPNS data is not a CBOR map")
    value = _cbor_field(doc, "Value", bytes)
    validity = _cbor_field(doc, "Validity", bytes)
    validity_type = _cbor_field(doc, "ValidityType", int)
    sequence = _cbor_field(doc, "Sequence", int)
    ttl = _cbor_field(doc, "TTL", int)
    assert isinstance(value, bytes) and isinstance(validity, bytes)
    assert isinstance(validity_type, int) and isinstance(sequence, int) and isinstance(ttl, int)
    return IpnsData(value, validity, validity_type, sequence, ttl)


def decode_ipns_entry(value: bytes) -> tuple[dht_pb2.IpnsEntry, IpnsData]:
    """Parse an ``IpnsEntry`` and its CBOR ``data`` (no signature check): :class:`RecordTooLarge` over 10 KiB,
    :class:`InvalidRecord` when malformed or when V2 ``data`` / ``signatureV2`` are missing."""
    if len(value) > MAX_IPNS_RECORD_SIZE:
        raise RecordTooLarge(f"IPNS record of {len(value)} bytes (cap {MAX_IPNS_RECORD_SIZE})")
    entry = _parse(dht_pb2.IpnsEntry(), value, InvalidRecord, "IPNS record")
    if not entry.signatureV2 or not entry.data:
        raise InvalidRecord("IPNS record has no V2 signature or data")
    return entry, _decode_ipns_data(entry.data)


class IpnsValidator:
    """The ``ipns`` namespace: key ``/ipns/<peer id bytes>``, value an IPNS V2 record (IPNS record spec,
    "Record Verification"): ≤ 10 KiB, ``signatureV2`` over ``b"ipns-signature:" + data`` by the key of the id
    (inlined in it, or the record's ``pubKey``, which must then match the id), legacy V1 fields equal to
    ``data``'s when present, validity type EOL not passed at ``now``. :meth:`select`: highest sequence, then
    latest EOL, then the greatest bytes (boxo's order)."""

    __slots__ = ()

    def validate(self, key: bytes, value: bytes, now: datetime) -> None:
        """Raise :class:`InvalidRecord` unless ``value`` is a valid, unexpired IPNS record for ``key``."""
        peer = _key_peer(key, "ipns")
        entry, data = decode_ipns_entry(value)
        if entry.HasField("pubKey"):
            public_key = _parse_public_key(entry.pubKey)
            if not peer.matches_public_key(public_key):
                raise InvalidRecord("IPNS record pubKey does not match the name")
        else:
            try:
                inlined = peer.extract_public_key()
            except DecodeError as exc:
                raise InvalidRecord(f"IPNS name inlines no valid key: {exc}") from None
            if inlined is None:
                raise InvalidRecord("IPNS name does not inline its key and the record has no pubKey")
            public_key = inlined
        if not public_key.verify(IPNS_SIGNATURE_PREFIX + entry.data, entry.signatureV2):
            raise InvalidRecord("IPNS signatureV2 does not verify")
        if entry.HasField("signatureV1") or entry.HasField("value"):
            if (
                entry.value != data.value
                or entry.validity != data.validity
                or entry.validityType != data.validity_type
                or entry.sequence != data.sequence
                or entry.ttl != data.ttl_ns
            ):
                raise InvalidRecord("IPNS V1 fields differ from the signed V2 data")
        if to_unix_ns(now) > data.eol_ns():
            raise InvalidRecord("IPNS record expired")

    def select(self, key: bytes, values: Sequence[bytes]) -> int:
        """The index of the best record; ones that do not parse rank below all others.
        :class:`InvalidRecord` when none parses."""
        best: tuple[int, int, bytes] | None = None
        best_index = -1
        for index, value in enumerate(values):
            try:
                _, data = decode_ipns_entry(value)
                rank = (data.sequence, data.eol_ns(), value)
            except InvalidRecord:
                continue
            if best is None or rank > best:
                best, best_index = rank, index
        if best is None:
            raise InvalidRecord("no IPNS record in the set parses")
        return best_index


def default_validator() -> NamespacedValidator:
    """A validator with the built-in namespaces: ``pk`` and ``ipns`` (go-libp2p-kad-dht's defaults)."""
    return NamespacedValidator({"pk": PublicKeyValidator(), "ipns": IpnsValidator()})
