"""Latency models for :class:`~mycel.sim.network.SimNetwork`: one-way delay between two nodes.

:class:`Regions` is the 8-region model of test-plans' gossipsub-interop (regions weighted like the Ethereum
network; one-way latencies 2-220 ms; 20 % supernodes at 1 Gbit/s, 80 % fullnodes at 50 Mbit/s); the figures
are theirs (``gossipsub-interop/network_graph.py``), the code is ours. :class:`Uniform` is one latency for
every link with an optional jitter, as the gossipsub v1.1 evaluation used (25 ms +- 10 %).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

MBIT: Final = 1_000_000 / 8
"""Bytes per second in one Mbit/s."""

REGION_WEIGHTS: Final[Mapping[str, int]] = {
    "europe": 5599,
    "na_east": 2894,
    "na_west": 1240,
    "east_asia": 1059,
    "australia": 290,
    "west_asia": 161,
    "south_africa": 47,
    "south_america": 36,
}
"""How many nodes of the Ethereum network sit in each region (gossipsub-interop's weights)."""

_ONE_WAY_MS: Final[dict[tuple[str, str], int]] = {
    ("australia", "australia"): 2, ("australia", "east_asia"): 110, ("australia", "europe"): 165,
    ("australia", "na_west"): 110, ("australia", "na_east"): 150, ("australia", "south_america"): 190,
    ("australia", "south_africa"): 220, ("australia", "west_asia"): 180,
    ("east_asia", "east_asia"): 4, ("east_asia", "europe"): 125, ("east_asia", "na_west"): 100,
    ("east_asia", "na_east"): 140, ("east_asia", "south_america"): 175, ("east_asia", "south_africa"): 175,
    ("east_asia", "west_asia"): 110,
    ("europe", "europe"): 2, ("europe", "na_west"): 110, ("europe", "na_east"): 70, ("europe", "south_america"): 140,
    ("europe", "south_africa"): 95, ("europe", "west_asia"): 60,
    ("na_west", "na_west"): 2, ("na_west", "na_east"): 60, ("na_west", "south_america"): 100,
    ("na_west", "south_africa"): 160, ("na_west", "west_asia"): 150,
    ("na_east", "na_east"): 2, ("na_east", "south_america"): 100, ("na_east", "south_africa"): 130,
    ("na_east", "west_asia"): 110,
    ("south_america", "south_america"): 7, ("south_america", "south_africa"): 195, ("south_america", "west_asia"): 145,
    ("south_africa", "south_africa"): 7, ("south_africa", "west_asia"): 110,
    ("west_asia", "west_asia"): 5,
}  # fmt: skip


def region_latency(a: str, b: str) -> float:
    """One-way latency in seconds between regions ``a`` and ``b`` (symmetric)."""
    ms = _ONE_WAY_MS.get((a, b), _ONE_WAY_MS.get((b, a)))
    if ms is None:
        raise KeyError(f"unknown region pair {a!r}, {b!r}; regions: {sorted(REGION_WEIGHTS)}")
    return ms / 1000


class LatencyModel(Protocol):
    """Chooses a node's region and the one-way delay of each link."""

    def region(self, rng: random.Random) -> str:
        """A region for a new node."""
        ...

    def latency(self, a: str, b: str, rng: random.Random) -> float:
        """One-way delay in seconds from a node in region ``a`` to one in region ``b``, drawn once per link."""
        ...


@dataclass(frozen=True)
class Uniform:
    """Every link has ``latency`` seconds one way, times a factor in ``1 +- jitter`` drawn per link."""

    latency_s: float = 0.025
    """One-way latency of every link, seconds."""
    jitter: float = 0.0

    def region(self, rng: random.Random) -> str:
        """Every node is in the one region ``"uniform"``."""
        return "uniform"

    def latency(self, a: str, b: str, rng: random.Random) -> float:
        """``latency_s``, times a factor in ``1 +- jitter`` drawn from ``rng``."""
        if not self.jitter:
            return self.latency_s
        return self.latency_s * (1 + rng.uniform(-self.jitter, self.jitter))


@dataclass(frozen=True)
class Regions:
    """gossipsub-interop's 8 regions: nodes placed by ``weights``, links delayed by the region matrix."""

    weights: Mapping[str, int] = field(default_factory=lambda: dict(REGION_WEIGHTS))

    def region(self, rng: random.Random) -> str:
        """A region drawn by ``weights``."""
        names = sorted(self.weights)
        return rng.choices(names, weights=[self.weights[n] for n in names])[0]

    def latency(self, a: str, b: str, rng: random.Random) -> float:
        """The region matrix's one-way latency between ``a`` and ``b``."""
        return region_latency(a, b)


__all__ = ["MBIT", "REGION_WEIGHTS", "LatencyModel", "Regions", "Uniform", "region_latency"]
