"""``nvmlab bench``: run the benchmarks of every layer and print their figures.

Benchmarks print measurements (rates, ratios against a baseline measured in the same run);
they never assert times, which would flake on shared machines. They are not part of the
test suite: run them with ``make bench``.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

#: Layer name -> module with ``main(argv) -> int``.
BENCHMARKS = {
    "mocks": "nvmlab.mocks.benchmarks",
    "drivers": "nvmlab.benchmarks.drivers",
    "storage": "nvmlab.storage.bench",
    "characterization": "nvmlab.benchmarks.characterization",
    "tuning": "nvmlab.benchmarks.tuning",
    "impact": "nvmlab.benchmarks.impact",
}


def run(args: argparse.Namespace) -> int:
    selected = args.only or list(BENCHMARKS)
    status = 0
    for layer in selected:
        print(f"\n=== {layer} benchmarks ===", flush=True)
        module = importlib.import_module(BENCHMARKS[layer])
        status |= int(module.main([]) or 0)
    return status


BENCH_EPILOG = """\
The storage benchmarks use the PostgreSQL server named by $NVMLAB_TEST_PG_URL (default
postgresql+psycopg://postgres@127.0.0.1:5432/test), where they create a scratch database
and drop it, and scratch SQLite files; no results database is touched. Rates are in
operations (or rows) per wall second; instrument time is the emulated instruments' own.

exit status: 0 when every benchmark ran, 1 when one failed (its error is printed).

examples:
  nvmlab bench                          # every layer (about 3 minutes)
  nvmlab bench --only mocks             # the emulated bench only
  nvmlab bench --only drivers --only storage
  nvmlab bench --only characterization  # a full 64 x 64 characterization, timed
  nvmlab bench --only tuning            # 64 x 64 tuning, adaptive and conventional, by truth
  nvmlab bench --only impact            # network impact of an emulated chip (docs/analysis.md)
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run the benchmarks (emulated bench, drivers, database) and print figures",
        description=(
            "Run the benchmarks of each layer and print their figures: emulated-bench "
            "throughput (64 x 64 array read, query round trips in-process and over "
            "loopback, TSP script throughput), driver overhead against raw pyvisa and list "
            "sweeps against per-point queries, database ingest rates on SQLite and "
            "PostgreSQL and 1 M-row loads. Figures are printed, not asserted."
        ),
        epilog=BENCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        help="run only this layer's benchmarks (repeatable)",
    )
    parser.set_defaults(handler=run)
