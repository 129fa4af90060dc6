"""Every harness, by name."""

from __future__ import annotations

from fuzz.autonat import HARNESSES as _AUTONAT
from fuzz.circuits import HARNESSES as _CIRCUITS
from fuzz.core import Harness
from fuzz.discovery import HARNESSES as _DISCOVERY
from fuzz.handshakes import HARNESSES as _NOISE
from fuzz.records import HARNESSES as _RECORDS
from fuzz.services import HARNESSES as _SERVICES
from fuzz.wire import HARNESSES as _WIRE

HARNESSES: list[type[Harness]] = [*_WIRE, *_RECORDS, *_NOISE, *_SERVICES, *_CIRCUITS, *_AUTONAT, *_DISCOVERY]


def by_name(name: str) -> type[Harness]:
    """The harness called ``name``; KeyError (listing the names) if there is none."""
    for h in HARNESSES:
        if h.name == name:
            return h
    raise KeyError(f"no decoder {name!r}; there are: {', '.join(h.name for h in HARNESSES)}")
