"""benchmarks/dht.py (the DHT section of ``make bench``, issue 11): its statistics, topology, targets and
tables from a run's results, and the reduced run itself: 2 mycel + 2 js-libp2p kad-dht processes on
127.0.0.1, 2 lookups of each kind per asker, and the tracemalloc figures, in a few seconds."""

from __future__ import annotations

import os
import random
import time
from typing import Any

from tests.unit.test_bench_compare import compare  # benchmarks/compare.py, loaded once

dht = compare.dht_bench


def test_edges_ring_and_chords() -> None:
    for n, dials in ((30, 3), (4, 2), (2, 3)):
        edges = dht.edges(n, dials, random.Random(1))
        assert len({frozenset(e) for e in edges}) == len(edges)  # no pair dialed twice
        assert all(a != b for a, b in edges)
        assert all(sum(1 for a, _ in edges if a == i) <= dials for i in range(n))
        ring = {frozenset((i, (i + 1) % n)) for i in range(n)}
        assert ring <= {frozenset(e) for e in edges}
    assert dht.edges(30, 3, random.Random(1)) == dht.edges(30, 3, random.Random(1))


def test_median_and_p95() -> None:
    xs = [float(x) for x in range(1, 21)]
    assert dht.median(xs) == 10.5 and dht.p95(xs) == 19.0
    assert dht.median([]) is None and dht.p95([3.0]) == 3.0


def _result(mycel_ms: float, js_ms: float) -> dict[str, Any]:
    def side(ms: float, msgs: float | None) -> dict[str, Any]:
        row: dict[str, Any] = {"n": 20, "median_ms": ms, "p95_ms": 2 * ms, "msgs_median": msgs, "failures": 0, "first_failure": "", "times_ms": []}
        return {kind: dict(row) for kind in dht.KINDS}

    return {
        "options": {"mycel": 15, "js": 15, "dials": 3, "ops": 20, "seed": 1},
        "network": {
            "ops": {"mycel": side(mycel_ms, 10), "js": side(js_ms, None)},
            "table_sizes": {"mycel0": 26, "js1": 29},
            "startup_s": 4.0, "warm_s": 9.0, "setup_s": 6.0, "total_s": 24.0,
        },
        "memory": {"table_entries": 1000, "bytes_per_table_entry": 178.0, "provider_records": 10000,
                   "provider_keys": 1000, "bytes_per_provider_record": 282.0},
    }  # fmt: skip


def test_targets_and_tables() -> None:
    res = _result(10.0, 100.0)
    ev = dht.evaluate(res)
    assert ev["ratios"]["get_value"] == {"median": 0.1, "p95": 0.1}
    assert ev["met"] == {f"DHT {k} median <= js": True for k in dht.KINDS}
    assert dht.evaluate(_result(3.0, 2.0))["met"]["DHT find_peer median <= js"] is False
    text = "\n".join(dht.render(res))
    assert "15 mycel + 15 js-libp2p" in text and "0.10x" in text and "178 B/entry" in text and "282 B/record" in text
    report = {"meta": {"started": "now", "bytes": 1e9, "repeats": 3, "cpus": 2, "loadavg_start": 0.1, "loadavg_end": 0.2}}
    report["dht"] = res
    report["targets"] = compare.evaluate(report)
    table = compare.render(report)
    assert "DHT mycel / js median: find_peer 0.10x" in table
    assert f"  {'DHT get_value median <= js':34}  met" in table
    assert "dht" not in str(compare.evaluate({"meta": {}})["met"]).lower()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_reduced_run() -> None:
    """The whole code path with small numbers: real peer processes, lookups, counters, memory; all stopped."""
    opts = dht.Options.quick()
    t0 = time.monotonic()
    res = dht.run(opts)
    assert time.monotonic() - t0 < 60
    mem = res["memory"]
    assert mem["table_entries"] == opts.table_entries and mem["provider_records"] == opts.provider_records
    assert 20 < mem["bytes_per_table_entry"] < 5000 and 20 < mem["bytes_per_provider_record"] < 5000
    if dht.JS.missing() is not None:
        assert "network_skipped" in res
        return
    ops = res["network"]["ops"]
    for who in dht.ASKERS:
        for kind in dht.KINDS:
            row = ops[who][kind]
            assert row["n"] + row["failures"] >= 1, (who, kind, row)
            assert row["n"] >= 1, (who, kind, row["first_failure"])
            assert row["median_ms"] is not None and row["median_ms"] > 0
    assert ops["mycel"]["get_value"]["msgs_median"] is not None and ops["js"]["get_value"]["msgs_median"] is None
    assert "DHT: 2 mycel + 2 js-libp2p" in "\n".join(dht.render(res))
    pids = res["network"]["pids"]
    assert len(pids) == 4 and not any(_alive(pid) for pid in pids)  # every peer process was stopped and reaped
