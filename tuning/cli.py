"""``nvmlab tune``: program a crossbar to target conductances (the ``tune`` sweep of
:mod:`nvmlab.tuning.array`).

``nvmlab tune --station FILE --chip NAME --targets FILE [--algorithm adaptive|conventional]
[--tolerance 0.01] [--db URL] [--resume RUN] [--json FILE]``, or ``--weights FILE --window
G_LO,G_HI`` instead of ``--targets`` (weights mapped to pairs of adjacent columns, see
:mod:`nvmlab.tuning.targets`). The targets are checked against the chip before the
station is opened. ``--json`` writes the run id, the summary and per device the final
averaged read (S), pulses, reads, bus round trips and outcome.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nvmlab.errors import ConfigError

EPILOG = """\
pairs (--weights): weight (i, j) of a rows x cols/2 table is G(i, 2j) - G(i, 2j+1) with
G+ = g_lo + s max(w, 0), G- = g_lo + s max(-w, 0), s = (g_hi - g_lo) / max|W|.

exit status:
  0    the run completed (see the outcomes: a device may still be failed or stuck)
  1    an option, a target file, the station file, the database or an instrument failed
  2    a command-line option is malformed
  130  interrupted: the run is stored 'aborted'; resume it with --resume RUN

examples:
  nvmlab tune --station station.toml --chip chip7 --targets targets.npy --json out.json
  nvmlab tune --station station.toml --chip chip7 --weights w.csv --window 10e-6,100e-6
  nvmlab tune --station station.toml --chip chip7 --resume 12 --json out.json
"""


def _window(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"{text!r}: expected G_LO,G_HI in S (e.g. 10e-6,100e-6)")
    return values


def register(subparsers: Any) -> None:
    from nvmlab.storage.cli import add_database_options

    parser = subparsers.add_parser(
        "tune",
        help="program an array to target conductances (closed-loop write-verify)",
        description=(__doc__ or "").split("\n\n")[0] + "\n\n" + _array_doc(),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--station", required=True, metavar="FILE", help="station file (TOML)")
    parser.add_argument("--chip", required=True, metavar="NAME", help="registered chip")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--targets", metavar="FILE", help="rows x cols conductances (S), NPY or CSV")
    what.add_argument("--weights", metavar="FILE", help="rows x cols/2 weights, NPY or CSV")
    parser.add_argument("--window", type=_window, metavar="G_LO,G_HI", help="pair window (S)")
    parser.add_argument("--algorithm", choices=("adaptive", "conventional"), default=None)
    parser.add_argument("--tolerance", type=float, default=None, help="relative (default 0.01)")
    parser.add_argument("--passes", type=int, default=None, help="tuning passes (default 8)")
    add_database_options(parser, station=False)
    parser.add_argument("--resume", metavar="RUN", default=None, help="resume this run")
    parser.add_argument("--json", metavar="FILE", default=None, help="write the outcome here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_cmd_tune)


def _array_doc() -> str:
    from nvmlab.tuning import array

    return (array.__doc__ or "").split("\n\n")[0]


def _cmd_tune(args: argparse.Namespace) -> int:
    import nvmlab.tuning.array  # noqa: F401 - registers the sweep
    from nvmlab.characterization.cli import _open_database
    from nvmlab.characterization.sweep import jsonable, run_sweep
    from nvmlab.instruments.station import Station
    from nvmlab.instruments.stationfile import load_station_file
    from nvmlab.storage.runs import parse_run_id

    params: dict[str, Any] = {}
    for name in ("targets", "weights", "window", "algorithm", "tolerance", "passes"):
        value = getattr(args, name)
        if value is not None:
            params[name] = str(Path(value).resolve()) if name in ("targets", "weights") else value
    resume = parse_run_id(args.resume) if args.resume is not None else None
    if resume is None and not (args.targets or args.weights):
        raise ConfigError(
            "give --targets FILE or --weights FILE (or --resume RUN)", field="--targets"
        )
    config = load_station_file(args.station)
    db = _open_database(args)
    try:
        station = Station(config)
        try:
            result = run_sweep(
                "tune", station=station, db=db, chip=args.chip, params=params or None,
                resume=resume, show_progress=not args.no_progress, handle_signals=True,
            )  # fmt: skip
        except KeyboardInterrupt:
            print(
                "interrupted: the run is stored as aborted; resume it with 'nvmlab tune "
                f"--station {args.station} --chip {args.chip} --resume RUN'",
                file=sys.stderr,
            )
            raise
        s = result.summary
        print(
            f"run {result.run_id}: tune {result.status}: {s.get('devices')} devices, outcomes "
            f"{s.get('outcomes')}, within tolerance by the final read "
            f"{(s.get('pass_rate_own') or 0) * 100:.1f} %, pulses per device mean "
            f"{s.get('pulses_mean', 0):.1f} median {s.get('pulses_median', 0):.0f}; instrument "
            f"time {result.instrument_s:.1f} s, wall {result.wall_s:.1f} s"
        )
        if args.json is not None:
            out = {"run_id": result.run_id, "status": result.status, **jsonable(s)}
            try:
                Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
            except OSError as exc:
                raise ConfigError(f"cannot write {args.json}: {exc}", field="--json") from None
    finally:
        db.close()
    return 0
