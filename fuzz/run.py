"""Run the structure-aware fuzz harnesses: ``python fuzz/run.py --inputs N [--only NAME,...]``.

Engines:

* ``atheris`` (default when installed: ``pip install -e '.[fuzz]'``): each decoder runs in a process of
  its own under libFuzzer's coverage-guided mutation, with the library instrumented; the harness
  counts inputs itself and ends the process after ``N``.
* ``random``: the same generators driven by a seeded ``random.Random`` in this process (no
  instrumentation: faster per input, not coverage-guided).

Prints one line per decoder — inputs run, inputs past the header (and ratio), inputs that got deeper
(decrypted / parsed / applied), typed errors, unexpected exceptions, seconds — and writes the JSON to
``fuzz/results/<engine>.json`` (``--json`` to choose). Exit status 1 if any unexpected exception.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# run as a script, this directory is sys.path[0]: its modules would shadow top-level packages
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "fuzz"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fuzz.targets import HARNESSES, by_name  # noqa: E402


def _atheris_available() -> bool:
    try:
        import atheris  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


def _run_atheris(name: str, inputs: int, max_seconds: float | None, corpus: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stats.json"
        cmd = [sys.executable, "-m", "fuzz.atheris_main", name, str(inputs), str(out)]
        cmd.append(str(max_seconds) if max_seconds is not None else "inf")
        if corpus is not None:  # libFuzzer reads it first and adds what finds new coverage: runs build on each other
            (corpus / name).mkdir(parents=True, exist_ok=True)
            cmd.append(str(corpus / name))
        timeout = None if max_seconds is None else max_seconds + 300
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if not out.exists():
            tail = (proc.stdout + proc.stderr)[-3000:]
            return {"name": name, "inputs": 0, "past_header": 0, "past_ratio": 0.0, "deep": 0, "typed_errors": 0,
                    "unexpected": 1, "seconds": round(time.perf_counter() - start, 2), "errors": {},
                    "findings": [{"kind": "harness crashed", "message": f"exit {proc.returncode}", "trace": tail}]}
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def _run_random(name: str, inputs: int, seed: int) -> dict[str, Any]:
    from fuzz.core import run_inputs

    return run_inputs(by_name(name)(), inputs, seed).to_json()


def _add_to_totals(path: Path, totals: dict[str, dict[str, Any]], r: dict[str, Any], engine: str) -> None:
    """Add one decoder's result to the totals file (written after every decoder: a stopped run keeps what it did)."""
    t = totals.setdefault(r["name"], {"inputs": 0, "past_header": 0, "deep": 0, "typed_errors": 0, "unexpected": 0,
                                      "seconds": 0.0, "sittings": 0, "engines": []})
    for key in ("inputs", "past_header", "deep", "typed_errors", "unexpected", "seconds"):
        t[key] += r[key]
    t["sittings"] += 1
    if engine not in t["engines"]:
        t["engines"].append(engine)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(totals, indent=1, sort_keys=True))


def _line(r: dict[str, Any]) -> str:
    return (f"{r['name']:<18} {r['inputs']:>10,} {r['past_header']:>10,} {r['past_ratio']:>6.1%} {r['deep']:>10,} "
            f"{r['typed_errors']:>10,} {r['unexpected']:>6} {r['seconds']:>9.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per decoder (default 1,000,000)")
    parser.add_argument("--only", default="", help="comma-separated decoder names (default: all)")
    parser.add_argument("--engine", choices=("atheris", "random"), default=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random engine")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop a decoder after this many seconds, reporting the inputs it ran (atheris engine)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="keep each decoder's libFuzzer corpus in CORPUS/<decoder> (atheris): a later run goes on from it")
    parser.add_argument("--totals", type=Path, default=None,
                        help="add this run's counts to a JSON of totals per decoder (runs in several sittings add up)")
    parser.add_argument("--remaining", action="store_true",
                        help="with --totals: run each decoder only for what its total lacks of --inputs")
    parser.add_argument("--list", action="store_true", help="list the decoders and exit")
    args = parser.parse_args(argv)
    if args.list:
        for h in HARNESSES:
            print(f"{h.name:<18} {(h.__doc__ or '').strip().splitlines()[0]}")
        return 0
    names = [n for n in args.only.split(",") if n] or [h.name for h in HARNESSES]
    for n in names:
        by_name(n)  # unknown names fail before anything runs
    engine = args.engine or ("atheris" if _atheris_available() else "random")
    print(f"engine {engine}, {args.inputs:,} inputs per decoder, {len(names)} decoders", flush=True)
    print(f"{'decoder':<18} {'inputs':>10} {'past hdr':>10} {'ratio':>6} {'deeper':>10} {'typed err':>10} "
          f"{'unexp':>6} {'seconds':>9}", flush=True)
    totals: dict[str, dict[str, Any]] = json.loads(args.totals.read_text()) if args.totals and args.totals.exists() else {}
    results = []
    for name in names:
        inputs = args.inputs
        if args.remaining:
            inputs -= totals.get(name, {}).get("inputs", 0)
            if inputs <= 0:
                continue
        if engine == "atheris":
            r = _run_atheris(name, inputs, args.max_seconds, args.corpus)
        else:
            r = _run_random(name, inputs, args.seed)
        if args.totals is not None:
            _add_to_totals(args.totals, totals, r, engine)
        results.append(r)
        print(_line(r), flush=True)
        for f in r["findings"]:
            print(f"  FINDING {f['kind']}: {f['message']}\n" + "\n".join("    " + x for x in f["trace"].splitlines()[-8:]))
    path = args.json or ROOT / "fuzz" / "results" / f"{engine}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"engine": engine, "inputs_per_decoder": args.inputs, "python": sys.version.split()[0],
                                "cpus": os.cpu_count(), "results": results}, indent=1))
    total_unexpected = sum(r["unexpected"] for r in results)
    print(f"unexpected exceptions: {total_unexpected}; results in {path}", flush=True)
    return 1 if total_unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
