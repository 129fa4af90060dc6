"""benchmarks/pubsub.py (the pubsub section of ``make bench``): its figures and targets from a run's
results, and the reduced run itself: mycel -> mycel and js -> js over real TCP + Noise + yamux, signed
and unsigned (StrictNoSign, SHA-256 content ids), and a 4-host network of both kinds with IDONTWANT on
and off, in a few seconds."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_bench_compare import compare  # benchmarks/compare.py, loaded once

pubsub = compare.pubsub_bench


def test_topology_is_connected_and_bounded() -> None:
    for n, dials in ((20, 3), (4, 1), (2, 3)):
        edges = pubsub.topology(n, dials, seed=1)
        assert len({frozenset(e) for e in edges}) == len(edges)  # nobody dials a peer twice
        assert all(a != b for a, b in edges)
        assert all(sum(1 for a, _ in edges if a == i) <= dials for i in range(n))
        reach, todo = {0}, [0]
        while todo:
            i = todo.pop()
            for a, b in edges:
                for x, y in ((a, b), (b, a)):
                    if x == i and y not in reach:
                        reach.add(y)
                        todo.append(y)
        assert reach == set(range(n))
    assert pubsub.topology(20, 3, seed=1) == pubsub.topology(20, 3, seed=1)


def test_quantile_is_nearest_rank() -> None:
    xs = [float(x) for x in range(1, 101)]
    assert pubsub.quantile(xs, 0.5) == 50.0
    assert pubsub.quantile(xs, 0.99) == 99.0
    assert pubsub.quantile([3.0], 0.99) == 3.0
    assert pubsub.quantile([], 0.5) is None


def throughput_row(pub: str, sub: str, rates: dict[int, float]) -> dict[str, Any]:
    sizes = {}
    for size, rate in rates.items():
        run = {"count": 1000, "received": 1000, "msgs_per_s": rate, "publisher_cpu": 0.05, "subscriber_cpu": 0.09, "dropped": 0, "others": 0.0}
        sizes[str(size)] = {"runs": [run], "msgs_per_s": rate, "MBps": rate * size / 1e6, "lost": 0, "dropped": 0, "count": 1000, "others": 0.0}
    return {"publisher": pub, "subscriber": sub, "sizes": sizes, "errors": []}


def network_kind(impl: str, p99_on: float, dup_on: int, dup_off: int) -> dict[str, Any]:
    def phase(p99: float, dups: int) -> dict[str, Any]:
        return {
            "messages": 100, "failed": 0, "complete": 100, "latency_ms": {"p50": p99 / 2, "p99": p99, "max": p99},
            "duplicates": dups, "dups_per_msg_per_host": dups / 2000, "dup_bytes": dups * 102400, "cpu_seconds": 5.0,
            "per_kind": {impl: {"hosts": 20, "dups_per_msg_per_host": dups / 2000, "cpu_seconds": 5.0}}, "others": 0.01,
        }  # fmt: skip

    return {"impls": [impl] * 20, "mesh": [6] * 20, "phases": {"on": phase(p99_on, dup_on), "off": phase(p99_on, dup_off)}}


def results(mycel_1k: float, mycel_p99: float, mycel_dups_on: int, unsigned_1k: float | None = None) -> dict[str, Any]:
    opts = dataclasses.asdict(pubsub.Options())
    sizes = opts["sizes"]
    out = {
        "options": opts,
        "throughput": {
            "rows": {
                "mycel -> mycel": throughput_row("mycel", "mycel", {s: (mycel_1k if s == 1024 else 6000.0) for s in sizes}),
                "js -> js": throughput_row("js", "js", {s: 4000.0 for s in sizes}),
                "mycel -> js": {"publisher": "mycel", "subscriber": "js", "errors": ["n/a (js missing)"],
                                "sizes": {str(s): {"runs": [], "msgs_per_s": None, "MBps": None, "lost": 0, "dropped": 0} for s in sizes}},
            }
        },
        "network": {"mycel": network_kind("mycel", mycel_p99, mycel_dups_on, 4000), "js": network_kind("js", 100.0, 2700, 2800)},
    }  # fmt: skip
    if unsigned_1k is not None:  # js -> js unsigned runs at 30,000 msg/s at every size
        out["throughput_unsigned"] = {
            "signing": "unsigned",
            "rows": {
                "mycel -> mycel": throughput_row("mycel", "mycel", {s: (unsigned_1k if s == 1024 else 33000.0) for s in sizes}),
                "js -> js": throughput_row("js", "js", {s: 30000.0 for s in sizes}),
            },
        }
    return out


def test_targets_and_tables() -> None:
    good = results(mycel_1k=9000.0, mycel_p99=40.0, mycel_dups_on=2600, unsigned_1k=66000.0)
    ev = pubsub.evaluate(good)
    assert ev["vs_js"]["1024"] == pytest.approx(2.25)
    assert ev["vs_js_unsigned"]["1024"] == pytest.approx(2.2) and ev["vs_js_unsigned"]["100"] == pytest.approx(1.1)
    assert ev["p99_mycel_vs_js"] == pytest.approx(0.4)
    assert ev["idontwant_cut"]["mycel"] == pytest.approx(0.35)
    signed, *others = pubsub.TARGET_NAMES  # the signed verdict first, then the unsigned one
    assert list(ev["met"]) == [signed, pubsub.UNSIGNED_TARGET, *others] and all(ev["met"].values())
    good["targets"] = ev
    text = "\n".join(pubsub.render(good))
    assert "  mycel -> mycel" in text and "9000" in text and "n/a (js missing)" in text
    assert "2.25x" in text and "mycel 35%, js 4%" in text
    assert "  mycel x20" in text and "  js x20" in text
    signed_table, unsigned_table = text.split("Pubsub unsigned:")
    assert "Pubsub, one publisher -> one subscriber" in signed_table and "66000" not in signed_table
    assert "18000 x 100 B, 18000 x 1 KiB, 1170 x 100 KiB per run" in unsigned_table  # 3x the signed counts
    assert "66000" in unsigned_table and "2.20x" in unsigned_table and "mycel -> js" not in unsigned_table
    line = pubsub.render_targets(good)[0]
    assert "signed: 100 B 1.50x  1 KiB 2.25x" in line and "| unsigned: 100 B 1.10x  1 KiB 2.20x  100 KiB 1.10x" in line

    bad = pubsub.evaluate(results(mycel_1k=5000.0, mycel_p99=150.0, mycel_dups_on=3500, unsigned_1k=45000.0))
    assert not any(bad["met"].values())
    no_unsigned = pubsub.evaluate(results(mycel_1k=9000.0, mycel_p99=40.0, mycel_dups_on=2600))
    assert "vs_js_unsigned" not in no_unsigned and no_unsigned["met"][pubsub.UNSIGNED_TARGET] is None
    assert "unsigned" not in pubsub.render_targets({"targets": no_unsigned})[0]
    assert all(v is None for v in pubsub.evaluate({"options": {}})["met"].values())


def test_make_bench_report_carries_the_pubsub_section() -> None:
    res = {"meta": {"started": "now", "bytes": 1e9, "repeats": 3, "cpus": 2, "loadavg_start": 0.1, "loadavg_end": 0.2}}
    res["pubsub"] = results(mycel_1k=5000.0, mycel_p99=40.0, mycel_dups_on=2600, unsigned_1k=36000.0)
    ev = compare.evaluate(res)
    assert ev["met"]["pubsub 1 KiB >= 2x js (signed)"] is False
    assert ev["met"]["pubsub 1 KiB >= 2x js (unsigned)"] is False
    assert ev["met"]["pubsub network p99 <= js"] is True
    assert ev["met"]["IDONTWANT cuts dup bytes >= 25%"] is True
    res["targets"] = ev
    table = compare.render(res)
    assert "Pubsub, one publisher -> one subscriber" in table and "Pubsub network: 20 hosts" in table
    assert "Pubsub unsigned: the same" in table
    assert "pubsub mycel / js msg/s, signed: 100 B 1.50x  1 KiB 1.25x" in table and "| unsigned: 100 B 1.10x  1 KiB 1.20x" in table
    assert f"  {'pubsub 1 KiB >= 2x js (signed)':34}  MISSED" in table
    assert f"  {'pubsub 1 KiB >= 2x js (unsigned)':34}  MISSED" in table
    assert "pubsub" not in compare.evaluate({"meta": {}})["met"]  # no section, no verdicts


def test_reduced_run(tmp_path: Path) -> None:
    """The whole code path with small numbers: real peer processes, commands, receipts and counters."""
    opts = pubsub.Options.quick()
    t0 = time.monotonic()
    with open(tmp_path / "peers.log", "wb") as log:
        res = pubsub.run(opts, log)
    assert time.monotonic() - t0 < 30
    for key in ("throughput", "throughput_unsigned"):  # StrictSign, then StrictNoSign with SHA-256 ids
        rows = res[key]["rows"]
        mycel = rows["mycel -> mycel"]["sizes"]["1024"]
        assert mycel["msgs_per_s"] > 0 and mycel["lost"] == 0 and mycel["dropped"] == 0
        run = mycel["runs"][0]
        assert run["received"] == run["count"] == 200 and run["subscriber_cpu"] > 0
        js = rows["js -> js"]
        if pubsub.missing("js") is None:
            assert js["sizes"]["1024"]["msgs_per_s"] > 0 and js["sizes"]["1024"]["lost"] == 0
        else:
            assert js["errors"][0].startswith("n/a")
    if pubsub.missing("js") is None:
        net = res["network"]["mixed"]
        assert net["impls"] == ["mycel", "js", "mycel", "js"]
        for phase in ("on", "off"):
            p = net["phases"][phase]
            assert p["complete"] == p["messages"] == 10 and p["failed"] == 0
            assert p["latency_ms"]["p99"] is not None and p["latency_ms"]["p99"] > 0
            assert p["duplicates"] >= 0 and set(p["per_kind"]) == {"mycel", "js"}
    assert res["targets"]["vs_js"].keys() == res["targets"]["vs_js_unsigned"].keys() == {"1024"}
    text = "\n".join(pubsub.render(res))
    assert "Pubsub network: 4 hosts" in text and "Pubsub unsigned: the same" in text
