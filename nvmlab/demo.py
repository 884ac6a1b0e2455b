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
import sys
import time
from typing import Any

import numpy as np

#: Characters from low to high conductance for the printed map.
SHADES = " .:-=+*#%@"


def _shade_map(conductance_s: np.ndarray, g_max_s: float) -> list[str]:
    levels = np.clip((conductance_s / g_max_s) * (len(SHADES) - 1), 0, len(SHADES) - 1)
    return ["".join(SHADES[int(round(v))] for v in row) for row in levels]


def run_demo(args: argparse.Namespace) -> int:
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
    emulated = build_emulated_bench(
        rows=args.rows, cols=args.cols, seed=args.seed, smu_model=args.smu
    )
    clock = emulated.clock
    db_url = resolve_database_url(args.db, None)
    db = open_database(db_url, create=True)
    print(f"database: {db.display_url}")
    station_config = emulated.station_dict()
    chip_name = f"emulated-memristor-{args.rows}x{args.cols}-seed{args.seed}"
    chip_id = ensure_chip(db, chip_name, array_kind="memristor", n_rows=args.rows, n_cols=args.cols)
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
    print(f"run {run_id}: reading {args.rows} x {args.cols} devices at {read_v:g} V ({args.smu})")

    measured = np.full((args.rows, args.cols), np.nan)
    wall_start = time.perf_counter()
    instrument_start = clock.now()
    status = "failed"
    writer = RecordWriter(db, run_id, chip_id=chip_id, clock=clock)
    try:
        with Station(station_config, visa_library=emulated.visa_library(), clock=clock) as station:
            for role, identity in station.identities.items():
                print(f"  {role:8s} {identity}")
            smu, board = station.smu, station.board
            smu.configure(current_limit_a=args.compliance, nplc=args.nplc)
            smu.set_voltage(0.0)
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
        f"{int((measured < 2e-6).sum())} devices read < 2 uS (stuck off), "
        f"{int((measured > 250e-6).sum())} read > 250 uS (stuck on)"
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


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="read and store the conductance map of an emulated 64 x 64 crossbar",
        description=(
            "Build the emulated bench in-process, open a station on it through the real "
            "drivers and pyvisa, read every device of the crossbar alone (tracking scheme) "
            "and store the reads in the results database (SQLite ./nvmlab.sqlite unless "
            "--db or NVMLAB_DB say otherwise). Prints the map and its error against the "
            "chip's ground truth."
        ),
        epilog="example: nvmlab demo --rows 16 --cols 16 --smu keithley2636b --db sqlite:///demo.sqlite",
    )
    parser.add_argument("--rows", type=int, default=64, help="array rows (default 64)")
    parser.add_argument("--cols", type=int, default=64, help="array columns (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="chip seed (default 0)")
    parser.add_argument(
        "--smu",
        default="keithley2400",
        choices=["keithley2400", "keithley2636b", "keysight-b2902a"],
        help="emulated SMU model (default keithley2400)",
    )
    parser.add_argument(
        "--read-voltage", type=float, default=0.2, help="read voltage in V (default 0.2)"
    )
    parser.add_argument(
        "--nplc",
        type=float,
        default=0.1,
        help="integration time in power-line cycles (default 0.1)",
    )
    parser.add_argument(
        "--compliance", type=float, default=1e-4, help="SMU current limit in A (default 1e-4)"
    )
    parser.add_argument(
        "--db", default=None, help="database URL (default: $NVMLAB_DB or sqlite:///./nvmlab.sqlite)"
    )
    parser.set_defaults(handler=run_demo)


if __name__ == "__main__":  # pragma: no cover
    from nvmlab.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
