"""The fuzzing frame: where a generator's choices come from (:class:`Source`), what a decoder harness is
(:class:`Harness`) and how one is run and counted (:class:`Stats`, :func:`run_inputs`).

A generator never sees raw bytes directly: it asks a :class:`Source` for choices (an int in a range,
some bytes, a pick from a list), so the same generator is driven by atheris' coverage-guided
``FuzzedDataProvider`` (``make fuzz``) or by a seeded ``random.Random`` (the reduced run in
``make test``). Each generator builds mostly-valid input with hostile fields, so the input gets past
the decoder's header and first length check; each harness says whether it did (``past``) and, where
it means something, whether it got deeper still (``deep``: decrypted, parsed, applied).

Only the decoder's typed errors (``Harness.expected``) may escape a harness; anything else — including
a harness invariant that fails (an ``AssertionError``: a bound exceeded, invalid data stored) — is an
*unexpected* exception: a finding.
"""

from __future__ import annotations

import builtins
import contextlib
import random
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

import outcome
import trio

T = TypeVar("T")


class Source(Protocol):
    """Where a generator's choices come from."""

    def int(self, lo: builtins.int, hi: builtins.int) -> builtins.int:
        """An integer in ``[lo, hi]``."""
        ...

    def bytes(self, n: builtins.int) -> builtins.bytes:
        """``n`` bytes (fewer only when an atheris input has run out)."""
        ...


class RandomSource:
    """Choices from a seeded ``random.Random`` (deterministic runs: the reduced fuzz in ``make test``)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def int(self, lo: builtins.int, hi: builtins.int) -> builtins.int:
        return self._rng.randint(lo, hi)

    def bytes(self, n: builtins.int) -> builtins.bytes:
        return self._rng.randbytes(n) if n > 0 else b""


class FdpSource:
    """Choices from an atheris ``FuzzedDataProvider`` (coverage-guided: libFuzzer mutates the choices)."""

    def __init__(self, fdp: Any) -> None:
        self._fdp = fdp

    def int(self, lo: builtins.int, hi: builtins.int) -> builtins.int:
        if lo >= hi:
            return lo
        value: builtins.int = self._fdp.ConsumeIntInRange(lo, hi)
        return value

    def bytes(self, n: builtins.int) -> builtins.bytes:
        data: builtins.bytes = self._fdp.ConsumeBytes(n) if n > 0 else b""
        return data


# -- choice helpers every generator uses -------------------------------------------------------------


def pick(src: Source, options: Sequence[T]) -> T:
    """One of ``options``."""
    return options[src.int(0, len(options) - 1)]


def chance(src: Source, percent: int) -> bool:
    """True about ``percent`` % of the time (with a random source)."""
    return src.int(0, 99) < percent


def blob(src: Source, max_len: int) -> bytes:
    """Random bytes of a random length up to ``max_len`` (short lengths as likely as long ones)."""
    return src.bytes(src.int(0, max_len))


def hostile_int(src: Source, typical: int, limit: int) -> int:
    """An integer field: often ``typical``-sized, sometimes at or around a bound, sometimes huge."""
    kind = src.int(0, 9)
    if kind < 5:
        return src.int(0, typical)
    if kind < 8:
        return max(0, min(limit, pick(src, (limit, limit - 1, limit + 1, 0, 1, typical + 1))))
    return src.int(0, limit)


def chunks(src: Source, data: bytes, max_pieces: int = 8) -> list[bytes]:
    """``data`` cut at random points into at most ``max_pieces`` pieces (as reads deliver it)."""
    if not data:
        return [b""]
    pieces = src.int(1, max_pieces)
    if pieces == 1:
        return [data]
    cuts = sorted({src.int(1, max(1, len(data) - 1)) for _ in range(pieces - 1)})
    out, start = [], 0
    for cut in cuts:
        out.append(data[start:cut])
        start = cut
    out.append(data[start:])
    return [p for p in out if p]


def mutate(src: Source, data: bytes) -> bytes:
    """Nothing (mostly), or a few bytes overwritten, or the tail cut, or garbage appended."""
    kind = src.int(0, 9)
    if kind < 6 or not data:
        return data
    if kind < 8:
        out = bytearray(data)
        for _ in range(src.int(1, 3)):
            out[src.int(0, len(out) - 1)] = src.int(0, 255)
        return bytes(out)
    if kind == 8:
        return data[: src.int(0, len(data) - 1)]
    return data + blob(src, 32)


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never really waits (its streams are fakes answering at once) to its end,
    synchronously. trio checkpoints it passes are resumed at once; called inside ``trio.run`` so that
    ``trio.current_time()`` and friends work."""
    value: Any = None
    for _ in range(100_000):
        try:
            coro.send(value)
        except StopIteration as stop:
            result: T = stop.value
            return result
        value = outcome.Value(None)
    coro.close()
    raise RuntimeError("coroutine kept waiting: the harness's fake stream must answer at once")


class FakeReceiveStream:
    """A receive stream over fixed pieces of bytes, then EOF (``receive_some`` never waits)."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self._pieces = [p for p in pieces if p]
        self._i = 0
        self._off = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._i >= len(self._pieces):
            return b""
        piece = self._pieces[self._i]
        end = len(piece) if max_bytes is None else min(len(piece), self._off + max_bytes)
        out = piece[self._off : end]
        if end == len(piece):
            self._i += 1
            self._off = 0
        else:
            self._off = end
        return out


# -- harnesses and their statistics -------------------------------------------------------------------


class Harness:
    """One decoder under fuzz. Subclasses set ``name``, ``expected`` (the typed errors that may escape),
    ``min_past_ratio`` (the share of inputs that must get past the header, checked by the reduced run)
    and implement :meth:`one`, setting ``self.past`` (and ``self.deep``) as the input gets through."""

    name: ClassVar[str]
    expected: ClassVar[tuple[type[BaseException], ...]]
    min_past_ratio: ClassVar[float] = 0.5
    description: ClassVar[str] = ""

    def __init__(self) -> None:
        self.past = False
        self.deep = False

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """Build what every input reuses (keys, hosts) for the length of a run, inside ``trio.run``."""
        yield

    def one(self, src: Source) -> None:
        """Generate one input from ``src`` and feed it to the decoder."""
        raise NotImplementedError


@dataclass
class Finding:
    """An unexpected exception: its type, message and traceback, and the input's atheris bytes if any."""

    kind: str
    message: str
    trace: str
    data: bytes | None = None


@dataclass
class Stats:
    """What a run of one harness did."""

    name: str
    inputs: int = 0
    past: int = 0
    deep: int = 0
    typed: int = 0
    unexpected: int = 0
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)

    @property
    def past_ratio(self) -> float:
        """Inputs past the header / inputs run."""
        return self.past / self.inputs if self.inputs else 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (at most 20 findings, each once per type and place)."""
        return {
            "name": self.name,
            "inputs": self.inputs,
            "past_header": self.past,
            "past_ratio": round(self.past_ratio, 4),
            "deep": self.deep,
            "typed_errors": self.typed,
            "unexpected": self.unexpected,
            "seconds": round(self.seconds, 2),
            "errors": dict(self.errors.most_common(12)),
            "findings": [
                {"kind": f.kind, "message": f.message[:300], "trace": f.trace[-2000:],
                 "data": f.data.hex() if f.data is not None else None}
                for f in self.findings[:20]
            ],
        }


MAX_FINDINGS_KEPT = 50


def execute(harness: Harness, src: Source, stats: Stats, data: bytes | None = None) -> None:
    """Run one input through ``harness`` and count what happened."""
    harness.past = False
    harness.deep = False
    stats.inputs += 1
    try:
        harness.one(src)
    except harness.expected as exc:
        stats.typed += 1
        stats.errors[type(exc).__name__] += 1
    except Exception as exc:  # everything else is a finding
        stats.unexpected += 1
        stats.errors["UNEXPECTED " + type(exc).__name__] += 1
        trace = traceback.format_exc()
        if len(stats.findings) < MAX_FINDINGS_KEPT:
            # one finding kept per (type, innermost frame): the same bug hit a million times is one bug
            where = trace.strip().splitlines()[-3:-1]
            key = (type(exc).__name__, tuple(where))
            if all((f.kind, tuple(f.trace.strip().splitlines()[-3:-1])) != key for f in stats.findings):
                stats.findings.append(Finding(type(exc).__name__, str(exc), trace, data))
    stats.past += harness.past
    stats.deep += harness.deep


def run_inputs(harness: Harness, inputs: int, seed: int = 0) -> Stats:
    """``inputs`` inputs from a seeded random source (no atheris): the reduced run and the fallback.
    Runs its own ``trio.run`` (call it from synchronous code)."""
    stats = Stats(harness.name)
    src = RandomSource(random.Random(f"{harness.name}/{seed}"))

    async def main() -> None:
        async with harness.session():
            start = time.perf_counter()
            for _ in range(inputs):
                execute(harness, src, stats)
            stats.seconds = time.perf_counter() - start

    trio.run(main)
    return stats


HarnessFactory = Callable[[], Harness]
