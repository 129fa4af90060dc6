"""The reduced structure-aware fuzz (``make fuzz`` runs the same harnesses at 1,000,000 inputs each under
atheris): a few hundred to a few thousand seeded inputs per decoder. Each decoder must let nothing but
its typed errors escape, and a minimum share of the inputs must get past its header / first length
check — so the fuzz cannot silently stop reaching the code (a generator broken by a format change
would otherwise keep "passing" on inputs rejected at byte one)."""

from __future__ import annotations

import pytest

from fuzz.core import Stats, run_inputs
from fuzz.targets import HARNESSES, by_name

# inputs per decoder: what runs in about half a second each on a shared core
INPUTS = {
    "varint": 3000,
    "length_prefixed": 2000,
    "multistream": 2000,
    "yamux": 1500,
    "mplex": 1500,
    "keys": 1500,
    "peer_record": 400,
    "tls_certificate": 800,
    "noise_handshake": 400,
    "noise_transport": 1500,
    "identify": 300,
    "kad": 600,
    "gossipsub": 300,
    "relay": 1000,
    "rendezvous": 300,
    "plaintext": 1500,
    "autonat": 3000,
    "mdns": 400,
    "portmap": 500,
    "dcutr": 400,
}
# decoders whose inputs must also get past the first stage into the next (decrypted, applied, ...)
DEEP = {"multistream", "yamux", "mplex", "peer_record", "tls_certificate", "noise_handshake", "noise_transport",
        "identify", "kad", "gossipsub", "relay", "rendezvous", "autonat", "mdns", "portmap", "dcutr"}


def _report(stats: Stats) -> str:
    lines = [f"{stats.name}: {stats.to_json()}"]
    for f in stats.findings[:3]:
        lines.append(f"--- {f.kind}: {f.message}\n{f.trace}")
    return "\n".join(lines)


def test_every_harness_has_a_budget() -> None:
    assert set(INPUTS) == {h.name for h in HARNESSES}


@pytest.mark.parametrize("name", [h.name for h in HARNESSES])
def test_reduced_fuzz(name: str) -> None:
    harness = by_name(name)()
    stats = run_inputs(harness, INPUTS[name], seed=1)
    print(_report(stats))
    assert stats.inputs == INPUTS[name]
    assert stats.unexpected == 0, _report(stats)
    assert stats.past_ratio >= harness.min_past_ratio, _report(stats)
    assert stats.typed > 0, "no hostile input was refused: the generator lost its hostile fields"
    if name in DEEP:
        assert stats.deep >= stats.inputs // 10, _report(stats)
