"""``nvmlab demo``: read the conductance map of an emulated crossbar and store it.

Until the overnight-job runner lands, this is the README's first command. It exercises the
whole stack the way a lab script would:

1. builds the emulated bench in-process (a 64 x 64 memristor crossbar behind a Keithley
   2400, an Espec chamber and the probe board; virtual clock);
2. opens a :class:`~nvmlab.instruments.station.Station` on it through the real drivers
   and pyvisa (the in-process VISA library speaks the instruments' byte protocols);
3. reads every device alone at 0.2 V through the array operations
   (:class:`~nvmlab.instruments.arrays.ArrayOperations`, one-channel tracking scheme: the
   board drives the unselected columns to the SMU's voltage, so only the selected device
   conducts);
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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nvmlab.instruments.arrays import ArrayOperations, DeviceRead, ReadSettings
from nvmlab.models import models_of_kind, spelled

if TYPE_CHECKING:
    from nvmlab.instruments.station import Station

#: Characters from low to high conductance for the printed map.
SHADES = " .:-=+*#%@"


def _shade_map(conductance_s: np.ndarray, g_max_s: float) -> list[str]:
    levels = np.clip((conductance_s / g_max_s) * (len(SHADES) - 1), 0, len(SHADES) - 1)
    return ["".join(SHADES[int(round(v))] for v in row) for row in levels]


#: After the first Ctrl-C (or SIGTERM), further ones are ignored for this long (s) while
#: the SMU output goes off and the run's final state is written; later ones stop at once.
GRACE_S = 10.0


class StopRequests:
    """SIGINT / SIGTERM handling that never interrupts a database update half-way.

    Before :meth:`defer` a first signal raises KeyboardInterrupt at once (nothing is stored
    yet). After it, a signal only records the request; the map read checks
    :attr:`requested` between devices and stops there, so a unit or the run is never left
    ``running`` by a signal arriving inside a commit. Signals after the first are ignored
    for :data:`GRACE_S` seconds (a second Ctrl-C 10-300 ms later must not break the safe
    stop), then raise at once. Once a signal was received, they stay ignored after the
    command returns: the process is about to exit with status 130.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.deferred = False
        self.first_at: float | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """A stop was asked for (a signal was received)."""
        return self.first_at is not None

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
            if not self.deferred:
                raise KeyboardInterrupt
            return
        if now - self.first_at > GRACE_S:
            raise KeyboardInterrupt

    def defer(self) -> None:
        """From now on a first signal only records the request (see :meth:`check`)."""
        self.deferred = True
        self.check()

    def check(self) -> None:
        """Raise KeyboardInterrupt if a stop was requested (call at safe points)."""
        if self.first_at is not None:
            raise KeyboardInterrupt

    def __enter__(self) -> StopRequests:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, signal.SIG_IGN if self.requested else previous)


def run_demo(args: argparse.Namespace) -> int:
    """The demo; SIGTERM (a scheduler or ``kill``) stops it like Ctrl-C: run aborted,
    outputs off."""
    with StopRequests() as stop:
        return _run_demo(args, stop)


@dataclass
class MapFigures:
    """What the demo prints about a map against the chip's ground truth."""

    median_abs_error_rel: float  #: median |read - true| / true over functional devices
    functional: int  #: devices that are neither stuck off (< 2 uS) nor stuck on (> 250 uS)
    stuck_off: int  #: devices read < 2 uS
    stuck_on: int  #: devices read > 250 uS


def map_figures(measured_s: np.ndarray, true_s: np.ndarray) -> MapFigures:
    """Compare a read map (S) with the true conductances (S)."""
    functional = (true_s > 2e-6) & (true_s < 250e-6)
    rel_err = np.abs(measured_s - true_s) / true_s
    return MapFigures(
        float(np.median(rel_err[functional])),
        int(functional.sum()),
        int((measured_s < 2e-6).sum()),
        int((measured_s > 250e-6).sum()),
    )


def _read_settings(args: argparse.Namespace) -> ReadSettings:
    """Step 1: the read settings from the command line; a non-zero finite read voltage."""
    from nvmlab.errors import ConfigError

    read_v: float = args.read_voltage
    if not (math.isfinite(read_v) and read_v != 0):
        raise ConfigError(
            f"value {read_v!r} V is not allowed; a conductance is current / voltage, so give "
            "a finite, non-zero read voltage within the station's read limit (e.g. 0.2)",
            field="--read-voltage",
        )
    return ReadSettings(
        read_v=read_v, scheme="track", nplc=args.nplc, current_limit_a=args.compliance
    )


def _prepare_instruments(
    station: Station, settings: ReadSettings, smu_model: str
) -> ArrayOperations:
    """Step 2: every setting checked against the station (limits, the SMU model's ranges)
    before the database is touched, so a refused value leaves no run behind."""
    from nvmlab.errors import ConfigError

    station.limits.check_voltage(settings.read_v, what="--read-voltage")
    station.limits.check_current_limit(settings.current_limit_a, what="--compliance")
    ops = ArrayOperations(station.smu, station.board, station.limits)
    try:
        ops.prepare_reads(settings)
    except ValueError as exc:  # the SMU model's own range (drivers raise ValueError)
        option = "--nplc" if "nplc" in str(exc).lower() else "--compliance"
        raise ConfigError(f"{exc} ({smu_model})", field=option) from None
    return ops


@dataclass
class DemoRun:
    """The stored run the map goes to."""

    db: Any
    run_id: int
    chip_id: int


def _start_run(args: argparse.Namespace, settings: ReadSettings) -> DemoRun:
    """Step 3: open the database and record the chip, the station and a running run."""
    from nvmlab.storage.database import open_database
    from nvmlab.storage.engine import resolve_database_url
    from nvmlab.storage.ingest import ensure_chip, ensure_station, start_run

    db = open_database(resolve_database_url(args.db, None), create=True)
    print(f"database: {db.display_url}")
    try:
        chip_name = f"emulated-memristor-{args.rows}x{args.cols}-seed{args.seed}"
        chip_id = ensure_chip(
            db, chip_name, array_kind="memristor", n_rows=args.rows, n_cols=args.cols
        )
        station_id = ensure_station(db, "emulated-bench")
        run_config: dict[str, Any] = {
            "procedure": "conductance map",
            "read_voltage_v": settings.read_v,
            "nplc": settings.nplc,
            "scheme": settings.scheme,
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
    except BaseException:
        db.close()
        raise
    return DemoRun(db, run_id, chip_id)


def _read_and_store(
    ops: ArrayOperations, run: DemoRun, rows: int, cols: int, clock: Any, stop: StopRequests
) -> tuple[np.ndarray, str]:
    """Step 4: read the map row by row through the array operations, one stored unit per
    row; returns the map (S) and the run's final status. A stop request ends the map
    between two devices; the run is then stored as aborted."""
    from nvmlab.storage.ingest import RecordWriter, finish_run

    measured = np.full((rows, cols), np.nan)
    status = "failed"
    writer = RecordWriter(run.db, run.run_id, chip_id=run.chip_id, clock=clock)

    def store(done: int, total: int, read: DeviceRead) -> None:
        measured[read.row, read.col] = read.conductance_s
        writer.add_read(read.row, read.col, read.read_v, read.current_a)
        stop.check()

    try:
        for r in range(rows):
            stop.check()
            with writer.unit(f"row-{r}", kind="conductance-map-row", row=r):
                ops.read_map([(r, c) for c in range(cols)], progress=store)
            if (r + 1) % max(1, rows // 8) == 0 or r + 1 == rows:
                print(f"  row {r + 1}/{rows} read", flush=True)
        status = "completed"
    except KeyboardInterrupt:
        status = "aborted"
        raise
    finally:
        stop.deferred = True  # whatever happens, the final update is not interrupted
        try:
            writer.close()
        finally:
            finish_run(run.db, run.run_id, status)
    return measured, status


def _report(
    measured: np.ndarray, truth_s: np.ndarray, run: DemoRun, instrument_s: float, wall_s: float
) -> None:
    """Step 5: print the map, its statistics and its error against the ground truth."""
    figures = map_figures(measured, truth_s)
    print()
    print(f"conductance map (0 .. 150 uS as '{SHADES}'):")
    for line in _shade_map(measured, 150e-6):
        print("  |" + line + "|")
    print()
    print(
        f"median {np.median(measured) * 1e6:.1f} uS, 5-95 % range "
        f"{np.percentile(measured, 5) * 1e6:.1f} - {np.percentile(measured, 95) * 1e6:.1f} uS; "
        f"devices read < 2 uS (stuck off): {figures.stuck_off}, "
        f"> 250 uS (stuck on): {figures.stuck_on}"
    )
    print(
        f"against the chip's ground truth: median |error| "
        f"{figures.median_abs_error_rel * 100:.2f} % on {figures.functional} functional devices "
        "(single reads; read noise about 0.2 % + 0.02 uS)"
    )
    print(
        f"instrument time {instrument_s:.1f} s (virtual), wall time {wall_s:.1f} s; "
        f"stored as run {run.run_id} in {run.db.display_url} (status completed)"
    )


def _run_demo(args: argparse.Namespace, stop: StopRequests) -> int:
    from nvmlab.instruments.station import Station
    from nvmlab.mocks.emulated import build_emulated_bench

    settings = _read_settings(args)
    emulated = build_emulated_bench(
        rows=args.rows, cols=args.cols, seed=args.seed, smu_model=args.smu
    )
    clock = emulated.clock
    run: DemoRun | None = None
    try:
        with Station(
            emulated.station_dict(), visa_library=emulated.visa_library(), clock=clock
        ) as station:
            ops = _prepare_instruments(station, settings, args.smu)
            stop.defer()  # the database is touched from here: stop only at safe points
            run = _start_run(args, settings)
            print(
                f"run {run.run_id}: reading {args.rows} x {args.cols} devices at "
                f"{settings.read_v:g} V ({args.smu})"
            )
            for role, identity in station.identities.items():
                print(f"  {role:8s} {identity}")
            wall_start = time.perf_counter()
            instrument_start = clock.now()
            measured, _ = _read_and_store(ops, run, args.rows, args.cols, clock, stop)
            instrument_s = clock.now() - instrument_start
            wall_s = time.perf_counter() - wall_start
    except KeyboardInterrupt:
        if run is not None:  # the station applied its safe state leaving its block
            print(
                f"interrupted: run {run.run_id} stored as aborted with the rows completed so "
                "far; SMU output off, board lines grounded",
                file=sys.stderr,
            )
        raise
    finally:
        stop.deferred = True
        if run is not None:
            run.db.close()
        emulated.close()
    _report(measured, emulated.ground_truth()["conductance_s"], run, instrument_s, wall_s)
    return 0


DEMO_DESCRIPTION = """\
Build the emulated bench in-process (a memristor crossbar behind the chosen SMU, an Espec
chamber and the probe board), open a station on it through the real drivers and pyvisa,
read every device alone (tracking scheme) and store the reads in the results database,
one unit per row (SQLite ./nvmlab.sqlite unless --db or NVMLAB_DB say otherwise). Prints
the map and its error against the chip's ground truth.
"""

DEMO_EPILOG = """\
Every setting is checked (station limits: |read voltage| <= 0.5 V, compliance <= 1 mA; the
SMU model's NPLC range) before anything is stored: a refused value leaves no run behind.
Ctrl-C (or SIGTERM) stops the map between two devices: the run is stored as 'aborted' with
the rows completed so far, the SMU output is switched off and the board lines grounded.
Further Ctrl-Cs during that stop are ignored for 10 s.

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
        "(default: $NVMLAB_DB, else sqlite:///./nvmlab.sqlite; the demo builds its own "
        "bench, so no station or job file takes part in the choice)",
    )
    parser.set_defaults(handler=run_demo)


if __name__ == "__main__":  # pragma: no cover
    from nvmlab.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
