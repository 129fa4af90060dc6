"""One decoder under atheris (libFuzzer): ``python -m fuzz.atheris_main NAME INPUTS STATS_JSON [MAX_SECONDS]``.

The library (``mycel``) is instrumented for coverage; the harness's generator takes its choices from
the fuzzer's ``FuzzedDataProvider``, so libFuzzer's mutations steer the structure of the input. The
harness counts inputs and, after ``INPUTS``, writes its statistics to ``STATS_JSON`` and ends the
process (libFuzzer's own exit would skip Python's); with MAX_SECONDS it stops there, reporting the
inputs it did run. Unexpected exceptions are counted and kept (with
the input bytes, to replay), not fatal, so one run reports every finding and the full count.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["mycel"]):
    import mycel  # noqa: F401
    from fuzz.targets import by_name

import trio

from fuzz.core import FdpSource, Stats, execute


def main() -> None:
    name, inputs, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    max_seconds = float(sys.argv[4]) if len(sys.argv) > 4 else float("inf")
    corpus = sys.argv[5:6]  # a corpus directory libFuzzer reads and adds to (optional)
    harness = by_name(name)()
    stats = Stats(name)
    started = [0.0]

    def finish() -> None:
        stats.seconds = time.perf_counter() - started[0]
        out.write_text(json.dumps(stats.to_json()))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    # a run stopped from outside (SIGTERM) still reports the inputs it ran
    signal.signal(signal.SIGTERM, lambda signum, frame: finish())

    def one_input(data: bytes) -> None:
        execute(harness, FdpSource(atheris.FuzzedDataProvider(data)), stats, data)
        if stats.inputs >= inputs or (stats.inputs % 1000 == 0 and time.perf_counter() - started[0] > max_seconds):
            finish()

    async def run() -> None:
        async with harness.session():
            started[0] = time.perf_counter()
            # -runs is a backstop: the harness ends the process itself after `inputs`
            atheris.Setup([sys.argv[0], f"-runs={inputs + 10}", "-max_len=4096", "-print_final_stats=0",
                           "-handle_term=0", "-handle_int=0", *corpus], one_input)
            atheris.Fuzz()
            finish()  # (if libFuzzer ever returns)

    trio.run(run)


if __name__ == "__main__":
    main()
