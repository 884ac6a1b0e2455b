"""``nvmlab characterize KIND``, ``nvmlab profile`` and ``nvmlab report``.

``nvmlab characterize KIND --station FILE --chip NAME [--db URL] [--resume RUN] [options]``
runs one sweep (:mod:`nvmlab.characterization.sweep`): every option is checked, the chip
looked up and the sweep's own rules applied before the station is opened, so bad input
touches no instrument. Each kind's options come from its parameter schema (name, unit,
default, allowed range), so ``nvmlab characterize KIND --help`` lists them.

``nvmlab profile --chip NAME --format json --out FILE`` writes the chip's newest profile
in the documented JSON form (``docs/characterization.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nvmlab.errors import ConfigError
from nvmlab.steps import Param

EXIT_STATUS = """\
exit status:
  0    the sweep completed; its parameters are in the chip's profile
  1    an option, the station file, the database or an instrument failed (one line names it)
  2    a command-line option is malformed
  130  interrupted with Ctrl-C or SIGTERM: the run is stored 'aborted' with the units done
       so far, the SMU outputs are off and the board lines grounded; resume it with
       --resume RUN (completed units are not repeated)
"""


def _option(param: Param) -> str:
    return "--" + param.name.replace("_", "-")


def _param_help(param: Param) -> str:
    parts = [param.help] if param.help else []
    parts.append(f"allowed: {param.allowed()}")
    if param.default is not None:
        default = param.default
        if isinstance(default, (list, tuple)):
            default = ",".join(f"{v:g}" for v in default)
        unit = f" {param.unit}" if param.unit and param.kind is not bool else ""
        parts.append(f"default {default}{unit}")
    return "; ".join(parts)


def _number_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers (e.g. 25,40,55)"
        ) from None


def _add_param(parser: argparse.ArgumentParser, param: Param) -> None:
    option = _option(param)
    metavar = param.unit or param.name.upper()
    if param.kind is bool:
        parser.add_argument(
            option, dest=param.name, action=argparse.BooleanOptionalAction, default=None,
            help=_param_help(param),
        )  # fmt: skip
    elif param.kind is list:
        parser.add_argument(
            option, dest=param.name, type=_number_list, default=None,
            metavar=f"{metavar},...", help=_param_help(param),
        )  # fmt: skip
    elif param.kind is str and param.choices is not None:
        parser.add_argument(
            option, dest=param.name, default=None, choices=list(param.choices),
            help=_param_help(param),
        )  # fmt: skip
    else:
        parser.add_argument(
            option, dest=param.name, type=param.kind, default=None, metavar=metavar,
            help=_param_help(param),
        )  # fmt: skip


def _given_params(args: argparse.Namespace, params: tuple[Param, ...]) -> dict[str, Any]:
    return {p.name: getattr(args, p.name) for p in params if getattr(args, p.name) is not None}


def _cli_field(exc: ConfigError, params: tuple[Param, ...]) -> ConfigError:
    """``exc`` with a parameter name turned into its command-line option."""
    names = {p.name: _option(p) for p in params}
    field = exc.field or ""
    base = field.split("[")[0]
    if base in names:
        message = str(exc)
        prefix = f"{field}: "
        text = message[len(prefix) :] if message.startswith(prefix) else message
        return ConfigError(text, file=exc.file, field=names[base] + field[len(base) :])
    return exc


def _open_database(args: argparse.Namespace) -> Any:
    from nvmlab.storage.cli import choose_database_url
    from nvmlab.storage.database import open_database

    return open_database(choose_database_url(args), create=True)


def _cmd_characterize(args: argparse.Namespace) -> int:
    from nvmlab.characterization.sweep import get_sweep, run_sweep
    from nvmlab.instruments.station import Station
    from nvmlab.instruments.stationfile import load_station_file
    from nvmlab.storage.runs import parse_run_id

    sweep = get_sweep(args.kind)
    config = load_station_file(args.station)
    resume = parse_run_id(args.resume) if args.resume is not None else None
    params = _given_params(args, sweep.params)
    db = _open_database(args)
    try:
        station = Station(config)
        try:
            result = run_sweep(
                sweep.kind, station=station, db=db, chip=args.chip, params=params,
                resume=resume, show_progress=not args.no_progress, handle_signals=True,
                seed=args.seed,
            )  # fmt: skip
        except ConfigError as exc:
            raise _cli_field(exc, sweep.params) from None
        except KeyboardInterrupt:
            print(
                f"interrupted: the run is stored as aborted; resume it with "
                f"'nvmlab characterize {sweep.kind} --station {args.station} --chip "
                f"{args.chip} --resume RUN' (nvmlab runs lists it); SMU outputs off, "
                "board lines grounded",
                file=sys.stderr,
            )
            raise
        print(
            f"run {result.run_id}: {sweep.kind} {result.status}: {result.units_measured} "
            f"units measured, {result.units_skipped} done earlier; instrument time "
            f"{result.instrument_s:.1f} s, wall time {result.wall_s:.1f} s; profile "
            f"{result.profile_id} of chip {args.chip!r} in {db.display_url}"
        )
        for line in _summary_lines(result.summary):
            print(f"  {line}")
    finally:
        db.close()
    return 0


def _summary_lines(summary: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in summary.items():
        if key == "plot":
            continue
        if isinstance(value, float):
            lines.append(f"{key}: {value:.6g}")
        elif isinstance(value, (int, str)) or value is None:
            lines.append(f"{key}: {value}")
        elif isinstance(value, dict) and all(
            isinstance(v, (int, float, str)) or v is None for v in value.values()
        ):
            shown = ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items()
            )
            lines.append(f"{key}: {shown}")
    return lines


def _cmd_profile(args: argparse.Namespace) -> int:
    from nvmlab.characterization.profile import profile_json
    from nvmlab.storage.profile import load_profile

    db = _open_database(args)
    try:
        profile = load_profile(db, args.chip)
    finally:
        db.close()
    if args.format == "npz":
        if args.out is None:
            raise ConfigError("--format npz needs --out FILE", field="--out")
        profile.to_npz(args.out)
        print(f"profile {profile.profile_id} of chip {args.chip!r} written to {args.out}")
        return 0
    text = json.dumps(profile_json(profile), indent=1, allow_nan=False)
    if args.out is None or args.out == "-":
        print(text)
        return 0
    out = Path(args.out)
    try:
        out.write_text(text + "\n")
    except OSError as exc:
        raise ConfigError(
            f"cannot write {out}: {exc.strerror or exc}; allowed: a file in an existing, "
            "writable folder",
            field="--out",
        ) from None
    print(f"profile {profile.profile_id} of chip {args.chip!r} written to {out}")
    return 0


DESCRIPTION = """\
Run one characterization sweep on a station's array and store the raw data, the
per-device parameters it extracts and the chip's updated profile in the results database.
The chip must be registered first ('nvmlab chip add NAME --kind memristor --rows R --cols C').
Every option, the chip and the sweep's rules (array size, temperature range, the
station's safety limits) are checked before any instrument is touched.
"""

EPILOG = """\
Progress (units done, rate and ETA) is drawn on stderr; --no-progress turns it off.

database: --db, else $NVMLAB_DB, else the [station] database of the --station file (a
relative sqlite:/// path there is taken from the station file's folder), else
./nvmlab.sqlite.

{exit}
examples:
  nvmlab chip add chip7 --kind memristor --rows 64 --cols 64 --station station.toml
  nvmlab characterize map --station station.toml --chip chip7
  nvmlab characterize thresholds --station station.toml --chip chip7 --sample 256
  nvmlab characterize temperature --station station.toml --chip chip7 --temperatures-c 25,55,85
  nvmlab characterize thresholds --station station.toml --chip chip7 --resume 12
  nvmlab profile --chip chip7 --format json --out chip7.json
"""


def _add_common(parser: argparse.ArgumentParser) -> None:
    from nvmlab.storage.cli import add_database_options

    parser.add_argument(
        "--station", required=True, metavar="FILE",
        help="station file (TOML) naming the SMU, chamber and board; its [station] database "
        "is used when neither --db nor $NVMLAB_DB is given",
    )  # fmt: skip
    parser.add_argument(
        "--chip", required=True, metavar="NAME",
        help="registered chip under test ('nvmlab chip list' shows them)",
    )  # fmt: skip
    add_database_options(parser, station=False)
    parser.add_argument(
        "--resume", metavar="RUN", default=None,
        help="resume this interrupted run of the same kind and chip: its units completed "
        "are not repeated and its parameters are kept (give no kind options)",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=None, metavar="N",
        help="seed of the random device sample (default 0; a resumed run keeps its own)",
    )  # fmt: skip
    parser.add_argument(
        "--no-progress", action="store_true", help="do not draw the progress bar on stderr"
    )


def register(subparsers: Any) -> None:
    from nvmlab.characterization.sweep import sweep_kinds

    kinds = sweep_kinds()
    parser = subparsers.add_parser(
        "characterize",
        help="measure an imperfection of the chip (map, thresholds, noise, temperature ...)",
        description=DESCRIPTION
        + "\nkinds:\n"
        + "\n".join(f"  {name:13s} {s.summary}" for name, s in sorted(kinds.items())),
        epilog="run 'nvmlab characterize KIND --help' for the options of a kind.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kind_parsers = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for name, sweep in sorted(kinds.items()):
        sub = kind_parsers.add_parser(
            name,
            help=sweep.summary,
            description=(sweep.description or sweep.summary)
            + f"\n\narrays: {', '.join(sweep.array_kinds)}",
            epilog=EPILOG.format(exit=EXIT_STATUS),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_common(sub)
        group = sub.add_argument_group(f"{name} options")
        for param in sweep.params:
            _add_param(group, param)  # type: ignore[arg-type]
        sub.set_defaults(handler=_cmd_characterize)

    profile = subparsers.add_parser(
        "profile",
        help="write a chip's newest characterized profile (JSON or NPZ)",
        description=(
            "Write the newest stored profile of a chip: per-device arrays (rows x cols; "
            "defect: 0 functional, 1 stuck-off, 2 stuck-on, -1 not measured; NaN is "
            "written as null where a quantity was not measured), summary statistics and "
            "the ids of the runs it came from. The JSON form is documented in "
            "docs/characterization.md."
        ),
        epilog="examples:\n  nvmlab profile --chip chip7 --format json --out chip7.json\n"
        "  nvmlab profile --chip chip7 --format npz --out chip7.npz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    profile.add_argument("--chip", required=True, metavar="NAME", help="registered chip")
    profile.add_argument(
        "--format", choices=("json", "npz"), default="json", help="output format (default json)"
    )
    profile.add_argument(
        "--out", metavar="FILE", default=None, help="output file (JSON: default stdout)"
    )
    from nvmlab.storage.cli import add_database_options

    add_database_options(profile)
    profile.set_defaults(handler=_cmd_profile)

    try:
        from nvmlab.characterization.report import register_report
    except ModuleNotFoundError as exc:
        if exc.name != "nvmlab.characterization.report":
            raise
    else:
        register_report(subparsers)
