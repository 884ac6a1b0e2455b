"""``nvmlab demo``: read the conductance map of an emulated crossbar and store it.

Until the overnight-job runner lands, this is the README's first command. It exercises the
whole stack the way a lab script would:

1. builds the emulated bench in-process (a 64 x 64 memristor crossbar behind a Keithley
   2400, an Espec chamber and the probe board; virtual clock);
2. opens a :class:`~nvmlab.instruments.station.Station` on it through the real drivers
   and pyvisa (the in-process VISA library speaks the instruments' byte protocols);
3. reads every device alone (one-channel tracking scheme: the board drives the unselected
   columns to the SMU's voltage, so only the selected device conducts) at 0.2 V;
4. stores the reads in the results database (SQLite ``./nvmlab.sqlite`` by default), one
   atomic unit per row, and prints the map, its statistics and how far the measurement is
   from the chip's ground truth.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from typing import Any

import numpy as np

from nvmlab.models import models_of_kind, spelled

#: Characters from low to high conductance for the printed map.
SHADES = " .:-=+*#%@"


def _shade_map(conductance_s: np.ndarray, g_max_s: float) -> list[str]:
    levels = np.clip((conductance_s / g_max_s) * (len(SHADES) - 1), 0, len(SHADES) - 1)
    return ["".join(SHADES[int(round(v))] for v in row) for row in levels]


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_demo(args: argparse.Namespace) -> int:
    """The demo; SIGTERM (a scheduler or ``kill``) stops it like Ctrl-C: run aborted,
    outputs off."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return _run_demo(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_demo(args: argparse.Namespace) -> int:
    from nvmlab.errors import ConfigError
    from nvmlab.instruments.station import Station
    from nvmlab.mocks.emulated import build_emulated_bench
    from nvmlab.storage.database import open_database
    from nvmlab.storage.engine import resolve_database_url
    from nvmlab.storage.ingest import (
        RecordWriter,
        ensure_chip,
        ensure_station,
        finish_run,
        start_run,
    )

    read_v: float = args.read_voltage
    if not (math.isfinite(read_v) and read_v != 0):
        raise ConfigError(
            f"value {read_v!r} V is not allowed; a conductance is current / voltage, so give "
            "a finite, non-zero read voltage within the station's read limit (e.g. 0.2)",
            field="--read-voltage",
        )
    emulated = build_emulated_bench(
        rows=args.rows, cols=args.cols, seed=args.seed, smu_model=args.smu
    )
    clock = emulated.clock
    station_config = emulated.station_dict()
    measured = np.full((args.rows, args.cols), np.nan)
    status = "failed"
    run_id: int | None = None
    try:
        with Station(station_config, visa_library=emulated.visa_library(), clock=clock) as station:
            smu, board = station.smu, station.board
            # Every setting is checked before the database is touched: a refused value leaves
            # no run behind.
            station.limits.check_voltage(read_v, what="--read-voltage")
            station.limits.check_current_limit(args.compliance, what="--compliance")
            try:
                smu.configure(current_limit_a=args.compliance, nplc=args.nplc)
            except ValueError as exc:  # the SMU model's own range (drivers raise ValueError)
                option = "--nplc" if "nplc" in str(exc).lower() else "--compliance"
                raise ConfigError(f"{exc} ({args.smu})", field=option) from None
            smu.set_voltage(0.0)

            db_url = resolve_database_url(args.db, None)
            db = open_database(db_url, create=True)
            print(f"database: {db.display_url}")
            chip_name = f"emulated-memristor-{args.rows}x{args.cols}-seed{args.seed}"
            chip_id = ensure_chip(
                db, chip_name, array_kind="memristor", n_rows=args.rows, n_cols=args.cols
            )
            station_id = ensure_station(db, "emulated-bench")
            run_config: dict[str, Any] = {
                "procedure": "conductance map",
                "read_voltage_v": read_v,
                "nplc": args.nplc,
                "scheme": "track",
                "smu": args.smu,
                "rows": args.rows,
                "cols": args.cols,
            }
            run_id = start_run(
                db,
                "conductance-map",
                config=run_config,
                chip_id=chip_id,
                station_id=station_id,
                seed=args.seed,
            )
            print(
                f"run {run_id}: reading {args.rows} x {args.cols} devices at {read_v:g} V "
                f"({args.smu})"
            )
            for role, identity in station.identities.items():
                print(f"  {role:8s} {identity}")

            wall_start = time.perf_counter()
            instrument_start = clock.now()
            writer = RecordWriter(db, run_id, chip_id=chip_id, clock=clock)
            try:
                smu.output(True)
                for r in range(args.rows):
                    with writer.unit(f"row-{r}", kind="conductance-map-row", row=r):
                        for c in range(args.cols):
                            board.select(r, c, unselected="track")
                            smu.set_voltage(read_v)
                            current_a = smu.measure_current()
                            smu.set_voltage(0.0)
                            measured[r, c] = current_a / read_v
                            writer.add_read(r, c, read_v, current_a)
                    if (r + 1) % max(1, args.rows // 8) == 0 or r + 1 == args.rows:
                        print(f"  row {r + 1}/{args.rows} read", flush=True)
                status = "completed"
            except KeyboardInterrupt:
                status = "aborted"
                raise
            finally:
                writer.close()
                finish_run(db, run_id, status)
                if status != "completed":
                    db.close()
    except KeyboardInterrupt:
        if run_id is not None:  # the station applied its safe state leaving its block
            print(
                f"interrupted: run {run_id} stored as aborted with the rows completed so far; "
                "SMU output off, board lines grounded",
                file=sys.stderr,
            )
        raise

    wall_s = time.perf_counter() - wall_start
    instrument_s = clock.now() - instrument_start
    truth = emulated.ground_truth()["conductance_s"]
    functional = (truth > 2e-6) & (truth < 250e-6)
    rel_err = np.abs(measured - truth) / truth
    print()
    print(f"conductance map (0 .. 150 uS as '{SHADES}'):")
    for line in _shade_map(measured, 150e-6):
        print("  |" + line + "|")
    print()
    print(
        f"median {np.median(measured) * 1e6:.1f} uS, 5-95 % range "
        f"{np.percentile(measured, 5) * 1e6:.1f} - {np.percentile(measured, 95) * 1e6:.1f} uS; "
        f"devices read < 2 uS (stuck off): {int((measured < 2e-6).sum())}, "
        f"> 250 uS (stuck on): {int((measured > 250e-6).sum())}"
    )
    print(
        f"against the chip's ground truth: median |error| {np.median(rel_err[functional]) * 100:.2f} % "
        f"on {int(functional.sum())} functional devices (single reads; read noise about 0.2 % + 0.02 uS)"
    )
    print(
        f"instrument time {instrument_s:.1f} s (virtual), wall time {wall_s:.1f} s; "
        f"stored as run {run_id} in {db.display_url} (status {status})"
    )
    db.close()
    return 0


DEMO_DESCRIPTION = """\
Build the emulated bench in-process (a memristor crossbar behind the chosen SMU, an Espec
chamber and the probe board), open a station on it through the real drivers and pyvisa,
read every device alone (tracking scheme) and store the reads in the results database,
one unit per row (SQLite ./nvmlab.sqlite unless --db or NVMLAB_DB say otherwise). Prints
the map and its error against the chip's ground truth. A 64 x 64 map takes about 10 s.
"""

DEMO_EPILOG = """\
Every setting is checked (station limits: |read voltage| <= 0.5 V, compliance <= 1 mA; the
SMU model's NPLC range) before anything is stored: a refused value leaves no run behind.
Ctrl-C (or SIGTERM) stops the map: the run is stored as 'aborted' with the rows completed
so far, the SMU output is switched off and the board lines grounded.

exit status:
  0    the map was read and stored (run status 'completed')
  1    a setting, the database or an instrument failed (one line names it)
  2    a command-line option is malformed
  130  interrupted with Ctrl-C or SIGTERM (run status 'aborted')

examples:
  nvmlab demo
  nvmlab demo --rows 16 --cols 16 --smu keithley2636b --db sqlite:///demo.sqlite
  nvmlab demo --read-voltage 0.1 --nplc 1 --db postgresql+psycopg://postgres@127.0.0.1/test
  nvmlab runs; nvmlab export 1 --out exported/      # then look at what was stored

units: volts (V), amperes (A), power-line cycles (NPLC).
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="read and store the conductance map of an emulated 64 x 64 crossbar",
        description=DEMO_DESCRIPTION,
        epilog=DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rows", type=int, default=64, metavar="N", help="array rows, 1..4096 (default 64)"
    )
    parser.add_argument(
        "--cols", type=int, default=64, metavar="N", help="array columns, 1..4096 (default 64)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N", help="chip seed, >= 0 (default 0)"
    )
    parser.add_argument(
        "--smu",
        default="keithley2400",
        type=spelled,
        choices=models_of_kind("smu"),
        help="emulated SMU model (default keithley2400)",
    )
    parser.add_argument(
        "--read-voltage",
        type=float,
        default=0.2,
        metavar="V",
        help="read voltage in V, non-zero, |V| <= 0.5 (default 0.2)",
    )
    parser.add_argument(
        "--nplc",
        type=float,
        default=0.1,
        metavar="NPLC",
        help="integration time in power-line cycles (default 0.1; allowed 0.01..10 on the "
        "2400, 0.001..25 on the 2636B, 0.0004..100 on the B2902A)",
    )
    parser.add_argument(
        "--compliance",
        type=float,
        default=1e-4,
        metavar="A",
        help="SMU current limit in A, up to 1e-3 (default 1e-4)",
    )
    parser.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="results database: sqlite:///path.sqlite or postgresql+psycopg://user@host/db "
        "(default: $NVMLAB_DB, else sqlite:///./nvmlab.sqlite)",
    )
    parser.set_defaults(handler=run_demo)


if __name__ == "__main__":  # pragma: no cover
    from nvmlab.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
