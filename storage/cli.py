"""Storage subcommands of ``nvmlab``: ``db upgrade``, ``db current``, ``runs``, ``export``,
``chip add``, ``chip list``.

Every command takes ``--db URL`` and ``--station FILE``. The database is chosen by the
lab's precedence rule (:func:`nvmlab.storage.engine.resolve_database`): ``--db``, then
``NVMLAB_DB``, then (in job commands) the job file, then the ``[station] database`` key of
the ``--station`` file (:mod:`nvmlab.storage.station_database`), then ``./nvmlab.sqlite``.
When the database does not come from ``--db``, one line on stderr says which it is and
where it came from (password masked). Errors are :class:`~nvmlab.errors.StorageError` (or
:class:`~nvmlab.errors.ConfigError` for a station file) with the password masked; the
top-level CLI prints them on one line and exits non-zero.
"""

from __future__ import annotations

import argparse
import functools
import sys
import traceback
from collections.abc import Callable
from typing import Any

from nvmlab.errors import NvmlabError, StorageError
from nvmlab.storage.database import head_revision, open_database, upgrade_database
from nvmlab.storage.engine import (
    DATABASE_ENV,
    DatabaseChoice,
    mask_text,
    mask_url,
    parse_url,
    resolve_database,
)
from nvmlab.storage.liveness import HEARTBEAT_INTERVAL_S, STALE_AFTER_S
from nvmlab.storage.models import ARRAY_KINDS
from nvmlab.storage.runs import parse_run_id
from nvmlab.storage.station_database import station_file_database


def _masked(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run ``handler``; an unexpected exception (a bug, a driver surprise) is shown as its
    traceback with every password masked, then as one StorageError line (exit 1)."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (NvmlabError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - shown masked, then reported
            choice = getattr(args, "database_choice", None)
            url = choice.url if choice is not None else (getattr(args, "db", None) or "")
            trace = "".join(traceback.format_exception(exc))
            print(mask_text(trace, url), file=sys.stderr, end="")
            raise StorageError(
                f"unexpected {type(exc).__name__} on database {mask_url(url)} (traceback "
                "above, passwords masked); please report it"
            ) from None

    return run


#: The precedence rule, as the --help of every storage command states it.
PRECEDENCE = (
    "--db wins over $NVMLAB_DB, which wins over a job file's database (job commands), "
    "which wins over the --station file's [station] database, else ./nvmlab.sqlite"
)


def add_database_options(parser: Any, *, station: bool = True) -> None:
    """Add ``--db URL`` (and, with ``station``, ``--station FILE``) to ``parser``, the
    options every command that stores or reads results shares; a command that has its own
    ``--station`` (``nvmlab characterize``) passes ``station=False``."""
    parser.add_argument(
        "--db",
        metavar="URL",
        default=None,
        help=(
            "results database: sqlite:///path.sqlite or postgresql+psycopg://user@host/db. "
            f"Which database is used: {PRECEDENCE}"
        ),
    )
    if not station:
        return
    parser.add_argument(
        "--station",
        metavar="FILE",
        default=None,
        help=(
            "station file whose [station] database key names the results database (a "
            "relative sqlite:/// path is taken from the station file's folder); used only "
            "when neither --db nor $NVMLAB_DB is given"
        ),
    )


def _describe(choice: DatabaseChoice, station: str | None) -> str:
    if choice.source == "station file":
        return f"from station file {station}"
    if choice.source == DATABASE_ENV:
        return f"from ${DATABASE_ENV}"
    if choice.source == "default":
        return "default: no --db, $NVMLAB_DB or station file database given"
    return f"from {choice.source}"


def choose_database_url(
    args: argparse.Namespace, *, job_file_url: str | None = None, station: str | None = None
) -> str:
    """The database URL of this command (chosen once); says on stderr where it came from
    unless it is --db's. ``job_file_url``: a job file's ``database``; ``station``: the
    station file to read when nothing before it decides (default ``args.station``)."""
    choice: DatabaseChoice | None = getattr(args, "database_choice", None)
    if choice is not None:
        return choice.url
    cli_url = getattr(args, "db", None)
    station = station if station is not None else getattr(args, "station", None)
    choice = resolve_database(cli_url, job_file_url=job_file_url)
    if choice.source == "default" and station is not None:
        # The station file is read only when it decides (neither --db, NVMLAB_DB nor a
        # job file).
        choice = resolve_database(cli_url, station_file_url=station_file_database(station))
    args.database_choice = choice
    if choice.source != "--db":
        print(f"database: {mask_url(choice.url)} ({_describe(choice, station)})", file=sys.stderr)
    return choice.url


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    url = parse_url(choose_database_url(args))
    before, after = upgrade_database(url)
    shown = mask_url(url)
    if before == after:
        print(f"database {shown} is at schema revision {after} (current); nothing to do")
    elif not before:
        print(f"database {shown} created at schema revision {after}")
    else:
        print(f"database {shown} upgraded from schema revision {before} to {after}")
    return 0


def _cmd_db_current(args: argparse.Namespace) -> int:
    db = open_database(choose_database_url(args), create=False)
    with db:
        print(f"database {db.display_url} is at schema revision {head_revision()} (current)")
    return 0


def _fmt(value: Any) -> str:
    import pandas as pd

    if value is None or (isinstance(value, float) and value != value) or value is pd.NaT:
        return "-"
    if hasattr(value, "strftime"):
        return str(value.strftime("%Y-%m-%d %H:%M:%S"))
    text = str(value)
    return "-" if text in ("<NA>", "NaT", "nan") else text


def _cmd_runs(args: argparse.Namespace) -> int:
    from nvmlab.storage.query import list_runs
    from nvmlab.storage.runs import mark_aborted

    if args.mark_aborted is not None:
        run_id = parse_run_id(args.mark_aborted)
        with open_database(choose_database_url(args), create=False) as db:
            interrupted = mark_aborted(db, run_id)
        print(
            f"run {run_id} marked aborted ({interrupted} unit attempt(s) left running marked "
            "interrupted); it can now be resumed"
        )
        return 0
    with open_database(choose_database_url(args), create=False) as db:
        frame = list_runs(db)
    if frame.empty:
        print(f"no runs in {mask_url(choose_database_url(args))}")
        return 0
    headers = [
        "id",
        "kind",
        "status",
        "chip",
        "started",
        "ended",
        "units done",
        "interrupted",
        "resumes",
    ]
    rows = [
        [
            _fmt(r.id), _fmt(r.kind), "dead" if r.liveness == "dead" else _fmt(r.status),
            _fmt(r.chip), _fmt(r.started_at), _fmt(r.ended_at), _fmt(r.units_completed),
            _fmt(r.units_interrupted), _fmt(r.resumes_run_id),
        ]
        for r in frame.itertuples(index=False)
    ]  # fmt: skip
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    dead = frame[frame["liveness"] == "dead"]
    for run_id, reason in zip(dead["id"], dead["liveness_reason"], strict=True):
        print(
            f"run {run_id} is dead: {reason}; 'nvmlab runs --mark-aborted {run_id}' ends it "
            "so that it can be resumed"
        )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from nvmlab.storage.export import export_run

    run_id = parse_run_id(args.run)
    with open_database(choose_database_url(args), create=False) as db:
        files = export_run(db, run_id, args.format, args.out)
    print(f"exported run {run_id} ({len(files)} files) to {files[0].parent}")
    return 0


def _cmd_chip_add(args: argparse.Namespace) -> int:
    from nvmlab.storage.inventory import register_chip

    with open_database(choose_database_url(args), create=True) as db:
        chip, created = register_chip(
            db, args.name, array_kind=args.kind, n_rows=args.rows, n_cols=args.cols,
            lot=args.lot, wafer=args.wafer, die=args.die, notes=args.notes,
        )  # fmt: skip
    size = f"{chip.kind}, {chip.rows} rows x {chip.cols} cols"
    if created:
        print(f"chip {chip.name} registered: {size}")
    else:
        print(f"chip {chip.name} is already registered as {size}; nothing to do")
    return 0


def _cmd_chip_list(args: argparse.Namespace) -> int:
    from nvmlab.storage.inventory import list_chips

    with open_database(choose_database_url(args), create=False) as db:
        chips = list_chips(db)
        shown = db.display_url
    if not chips:
        print(
            f"no chips registered in {shown}; add one with 'nvmlab chip add NAME "
            "--kind memristor|eflash --rows R --cols C'"
        )
        return 0
    headers = ["name", "kind", "rows", "cols", "lot", "wafer", "die", "registered"]
    rows = [
        [c.name, c.kind, str(c.rows), str(c.cols), _fmt(c.lot), _fmt(c.wafer), _fmt(c.die),
         _fmt(c.created_at)]
        for c in chips
    ]  # fmt: skip
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


_RAW = argparse.RawDescriptionHelpFormatter

_DB_URLS = """\
database URL: --db, else $NVMLAB_DB, else the [station] database of the --station file
(a relative sqlite:/// path there is taken from the station file's folder), else
sqlite:///./nvmlab.sqlite (in the current folder); a job file (job commands) ranks between
$NVMLAB_DB and the station file. Unless it is --db, stderr says which database is used and
where it came from (password masked).
  sqlite:///results.sqlite                 a file relative to the current folder
  sqlite:////data/lab/results.sqlite       an absolute path (four slashes)
  postgresql+psycopg://user:pw@host:5432/db  the shared lab database (the password is
                                           never printed)"""

_EXIT = """\
exit status:
  0  done
  1  the database could not be used (one line says why: unreachable server, missing file,
     wrong schema revision, read-only, unknown run, unwritable output folder), or the
     --station file could not be read or its [station] database is not a URL string
  2  a command-line option is malformed"""

DB_UPGRADE_EPILOG = f"""\
Creates the tables in an empty database (a new SQLite file is created) or applies the
missing migrations to an older one; records are kept. Running it again does nothing.

{_DB_URLS}

{_EXIT}

examples:
  nvmlab db upgrade
  nvmlab db upgrade --db postgresql+psycopg://postgres@127.0.0.1/test
"""

DB_CURRENT_EPILOG = f"""\
Prints the schema revision and exits 0 when the database is at this nvmlab's revision;
exits 1 naming both revisions when it is older (run 'nvmlab db upgrade') or newer
(upgrade nvmlab). Changes nothing.

{_DB_URLS}

{_EXIT}

example:
  NVMLAB_DB=sqlite:///results.sqlite nvmlab db current
"""

RUNS_EPILOG = f"""\
One row per run, newest first: id, kind, status (running, completed, failed, aborted,
or dead), chip, start and end (UTC), units done (completed units), interrupted (units
that did not complete), resumes (the run this one resumed). Changes nothing, except
with --mark-aborted.

A running run is shown as dead when its process is gone: on this host, no process has
its pid (or the pid now belongs to a process started at another time); on another host,
its heartbeat is older than {STALE_AFTER_S:g} s (a live run's writer refreshes it every {HEARTBEAT_INTERVAL_S:g} s).
'nvmlab runs --mark-aborted RUN' ends a dead run (status aborted, unit attempts left
running marked interrupted) so that it can be resumed; a run that is alive is refused
(exit 1).

{_DB_URLS}

{_EXIT}

examples:
  nvmlab runs
  nvmlab runs --db postgresql+psycopg://postgres@127.0.0.1/test
  nvmlab runs --mark-aborted 12
  nvmlab runs --station station.toml                   # the station file's database
"""

EXPORT_EPILOG = f"""\
Writes DIR/run-<RUN>/ (created if needed; an earlier export there in the same format is
replaced):
  run.json                 the run: kind, status, configuration, seed, resume chain
  units.<ext>              every unit attempt (key, attempt, status, result)
  reads, pulses, tuning_outcomes, device_parameters, chamber_log, events, traces .<ext>
                           one row per record; units in the column names (amplitude_v,
                           width_s, current_a, conductance_s, temperature_c)
Each file appears complete or not at all. The database is only read.

{_DB_URLS}

{_EXIT}

examples:
  nvmlab export 1 --out exported/                      # CSV in exported/run-1/
  nvmlab export 7 --format parquet --out /data/runs --db postgresql+psycopg://lab@db/nvm
"""


CHIP_ADD_EPILOG = f"""\
Registers a chip under test: its name (unique in the database), array kind and size.
Measurement commands refuse a chip that is not registered. Registering the same chip
again with the same kind and size does nothing; with another kind or size it is an
error (a name names one chip). Creates the database if it does not exist yet.

{_DB_URLS}

{_EXIT}

examples:
  nvmlab chip add W07-D12 --kind memristor --rows 64 --cols 64 --lot L42 --wafer 7
  nvmlab chip add EF-3 --kind eflash --rows 32 --cols 32 --db sqlite:///results.sqlite
"""

CHIP_LIST_EPILOG = f"""\
One row per registered chip, by name: kind, rows, cols, lot, wafer, die, and when it
was registered (UTC). Changes nothing.

{_DB_URLS}

{_EXIT}

example:
  nvmlab chip list
"""


def _register_chip_commands(subparsers: Any) -> None:
    chip = subparsers.add_parser(
        "chip",
        help="register chips under test and list them",
        description="Register the chips under test (name, kind, size) and list them.",
        epilog="examples:\n  nvmlab chip add W07-D12 --kind memristor --rows 64 --cols 64\n"
        "  nvmlab chip list",
        formatter_class=_RAW,
    )
    chip_sub = chip.add_subparsers(dest="chip_command", metavar="ACTION")
    add = chip_sub.add_parser(
        "add",
        help="register a chip (name, kind, rows, cols)",
        description="Register a chip under test.",
        epilog=CHIP_ADD_EPILOG,
        formatter_class=_RAW,
    )
    add.add_argument("name", metavar="NAME", help="the chip's name, e.g. W07-D12")
    add.add_argument("--kind", required=True, choices=ARRAY_KINDS, help="array kind")
    add.add_argument("--rows", required=True, type=int, metavar="R", help="rows of the array")
    add.add_argument("--cols", required=True, type=int, metavar="C", help="columns of the array")
    add.add_argument("--lot", default=None, help="lot (optional)")
    add.add_argument("--wafer", default=None, help="wafer (optional)")
    add.add_argument("--die", default=None, help="die (optional)")
    add.add_argument("--notes", default=None, help="free text (optional)")
    add_database_options(add)
    add.set_defaults(handler=_masked(_cmd_chip_add))
    listing = chip_sub.add_parser(
        "list",
        help="list the registered chips",
        description="List the chips registered in the results database.",
        epilog=CHIP_LIST_EPILOG,
        formatter_class=_RAW,
    )
    add_database_options(listing)
    listing.set_defaults(handler=_masked(_cmd_chip_list))
    chip.set_defaults(handler=lambda _args: (chip.print_help(sys.stderr), 2)[1])


def register(subparsers: Any) -> None:
    """Add ``db``, ``runs``, ``export`` and ``chip`` to the ``nvmlab`` command line."""
    db = subparsers.add_parser(
        "db",
        help="create or upgrade the results database schema",
        description="Manage the results database schema (SQLite or PostgreSQL).",
        epilog="examples:\n  nvmlab db upgrade\n  nvmlab db current --db sqlite:///results.sqlite",
        formatter_class=_RAW,
    )
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION")
    upgrade = db_sub.add_parser(
        "upgrade",
        help="create the schema in an empty database or upgrade it to this version",
        description="Create the results database schema, or upgrade it to this nvmlab's revision.",
        epilog=DB_UPGRADE_EPILOG,
        formatter_class=_RAW,
    )
    add_database_options(upgrade)
    upgrade.set_defaults(handler=_masked(_cmd_db_upgrade))
    current = db_sub.add_parser(
        "current",
        help="check that the schema is at this version",
        description="Check that the results database is at this nvmlab's schema revision.",
        epilog=DB_CURRENT_EPILOG,
        formatter_class=_RAW,
    )
    add_database_options(current)
    current.set_defaults(handler=_masked(_cmd_db_current))
    db.set_defaults(handler=lambda _args: (db.print_help(sys.stderr), 2)[1])

    runs = subparsers.add_parser(
        "runs",
        help="list stored runs with their status",
        description="List the runs stored in the results database with their status.",
        epilog=RUNS_EPILOG,
        formatter_class=_RAW,
    )
    runs.add_argument(
        "--mark-aborted",
        metavar="RUN",
        default=None,
        help="end RUN, a running run whose process is gone (shown as dead): status aborted, "
        "its open unit attempts interrupted, so that it can be resumed; refused if alive",
    )
    add_database_options(runs)
    runs.set_defaults(handler=_masked(_cmd_runs))

    export = subparsers.add_parser(
        "export",
        help="export one run to CSV or Parquet files",
        description="Export one run (its configuration and every record) to CSV or Parquet files.",
        epilog=EXPORT_EPILOG,
        formatter_class=_RAW,
    )
    export.add_argument("run", metavar="RUN", help="run id (see 'nvmlab runs')")
    export.add_argument(
        "--format",
        choices=("csv", "parquet"),
        default="csv",
        help="file format (default csv)",
    )
    export.add_argument(
        "--out", required=True, metavar="DIR", help="output folder; the run goes in DIR/run-RUN"
    )
    add_database_options(export)
    export.set_defaults(handler=_masked(_cmd_export))
    _register_chip_commands(subparsers)
