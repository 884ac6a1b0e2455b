"""``nvmlab run`` and ``nvmlab replay``: unattended jobs, resumed, recorded and replayed.

``nvmlab run JOB.toml`` checks the whole job file before any instrument is touched,
prints ``run <id>`` as its first line, shows progress, writes a log file, ends with a
summary table and exits 0 only when the run completed. ``--check`` validates and prints
each step's estimated instrument time, touching nothing. ``--resume RUN`` continues a
failed, aborted or killed job run. ``--record DIR`` keeps the instrument transcripts;
``nvmlab replay DIR`` re-runs them offline into a new run.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nvmlab.errors import ConfigError

EXIT_STATUS = """\
exit status:
  0    the run completed (every step; see the summary for each step's figures)
  1    the job file, the database, the station lock or an instrument failed; a run that
       had started is stored 'failed' with the reason, the station left safe, and can
       be resumed with --resume RUN
  2    a command-line option is malformed
  130  stopped with Ctrl-C or SIGTERM after the unit in flight (a second Ctrl-C stops at
       once): the run is stored 'aborted', the station left safe; resume with --resume RUN
"""

RUN_EPILOG = """\
database: --db, else $NVMLAB_DB, else the job file's [job] database, else the station
file's [station] database, else ./nvmlab.sqlite.

files: each run writes <output>/run-<id>/job.log (and the report step's plots in
<output>/run-<id>/report/); output is the job file's [job] output, default ./nvmlab-runs.
The job file's keys: docs/job-file.md.

faults: a timeout, a garbled reply or a dropped connection is recorded, the instruments
reconnected and the unit in flight redone ([faults] retries, backoff_s); a chamber alarm
suspends the job until it clears ([faults] suspend_timeout_s); anything else stops the
run 'failed', in the safe state, resumable.

{exit}
examples:
  nvmlab run examples/jobs/overnight.toml                 # the README's main job
  nvmlab run --check examples/jobs/overnight.toml         # validate, estimate, touch nothing
  nvmlab run examples/jobs/overnight.toml --record rec/   # keep the instrument transcripts
  nvmlab run --resume 12                                  # after a crash, Ctrl-C or a fault
  nvmlab replay rec/ --info                               # what a recording holds
  nvmlab replay rec/                                      # re-run it offline, into a new run
"""


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a line is logged (a test's capture, a
    redirected stream), not to the stream of the moment it was made."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


@contextlib.contextmanager
def _console_logging(live: bool) -> Iterator[None]:
    """The job's log lines on stderr for the duration of the command (above the live
    bars on a terminal, timestamped otherwise); the ``nvmlab`` logger is left as it was
    found afterwards (a command run in-process leaks no handler into the next)."""
    logger = logging.getLogger("nvmlab")
    if live:
        from tqdm.contrib.logging import _TqdmLoggingHandler

        handler: logging.Handler = _TqdmLoggingHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _database(args: argparse.Namespace, job: Any) -> Any:
    """The results database by the precedence: --db, NVMLAB_DB, the job file's, the
    station file's, ./nvmlab.sqlite."""
    from nvmlab.storage.cli import choose_database_url
    from nvmlab.storage.database import open_database

    station = str(job.station) if job.station is not None else None
    url = choose_database_url(args, job_file_url=job.database, station=station)
    return open_database(url, create=True)


def _cmd_run(args: argparse.Namespace) -> int:
    from nvmlab.jobs.jobfile import load_job_file
    from nvmlab.jobs.progress import JobProgress
    from nvmlab.jobs.runner import (
        default_log_path,
        format_duration,
        is_terminal,
        job_from_run,
        preflight,
        run_job,
    )
    from nvmlab.storage.runs import parse_run_id

    if args.list_steps:
        from nvmlab.jobs.jobfile import step_reference

        print(step_reference(), end="")
        return 0
    if args.job is None and args.resume is None:
        raise ConfigError("give a job file (JOB.toml) or --resume RUN", field="JOB")
    resume = parse_run_id(args.resume) if args.resume is not None else None
    if args.job is not None:
        job = load_job_file(args.job)
    if args.check:
        if args.job is None:
            raise ConfigError("--check needs the job file", field="JOB")
        check = preflight(job, None)
        _print_check(job, check)
        return 0
    if resume is not None:
        from nvmlab.storage.database import open_database

        # the run's own job (its text is stored with it) in the database the run is in
        db_job = job if args.job is not None else None
        if db_job is None:
            from nvmlab.storage.cli import choose_database_url

            db = open_database(choose_database_url(args), create=False)
        else:
            db = _database(args, db_job)
        try:
            stored, _row = job_from_run(db, resume)
        except BaseException:
            db.close()
            raise
        job = stored
    else:
        db = _database(args, job)
    live = is_terminal() and not args.no_progress

    def started(run_id: int) -> None:
        print(f"run {run_id}", flush=True)

    try:
        with _console_logging(live):
            result = run_job(
                job, db=db, resume=resume, record_to=args.record,
                progress=JobProgress(live=live), handle_signals=True,
                log_to=default_log_path(job), on_start=started,
            )  # fmt: skip
        _print_summary(result, format_duration)
    finally:
        db.close()
    if result.status == "completed":
        return 0
    return 130 if result.status == "aborted" else 1


def _cmd_replay(args: argparse.Namespace) -> int:
    from nvmlab.jobs import recording
    from nvmlab.jobs.jobfile import parse_job
    from nvmlab.jobs.progress import JobProgress
    from nvmlab.jobs.runner import default_log_path, format_duration, is_terminal, run_job

    info = recording.read_recording(args.dir)
    if args.info:
        _print_info(Path(args.dir), info)
        return 0
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    text = (Path(args.dir) / "job.toml").read_text(encoding="utf-8")
    job = _replay_job(parse_job, tomllib.loads(text), Path(info["job_file"]), text, Path(args.dir))
    from nvmlab.storage.cli import choose_database_url
    from nvmlab.storage.database import open_database

    db = open_database(choose_database_url(args), create=True)
    live = is_terminal() and not args.no_progress
    try:
        with _console_logging(live):
            result = run_job(
                job, db=db, replay_from=args.dir, progress=JobProgress(live=live),
                handle_signals=True, log_to=default_log_path(job),
                on_start=lambda run_id: print(f"run {run_id}", flush=True),
            )  # fmt: skip
        _print_summary(result, format_duration)
        print(f"replayed recording {args.dir} (run {info['run_id']}) into run {result.run_id}")
    finally:
        db.close()
    return 0 if result.status == "completed" else (130 if result.status == "aborted" else 1)


def _replay_job(parse: Any, data: dict[str, Any], source: Path, text: str, folder: Path) -> Any:
    """The recorded job, validated without the files it named (a replay needs none of them:
    the recording's folder stands in for the job file's)."""
    import dataclasses

    from nvmlab.jobs.jobfile import _load_step_kinds
    from nvmlab.steps import step_kinds

    _load_step_kinds()
    kinds = step_kinds()
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    job_section = dict(data.get("job", {}))
    job_section.pop("station", None)
    job_section.pop("database", None)
    job_section.pop("output", None)
    data["job"] = job_section
    data["bench"] = {}
    steps = []
    for entry in data.get("steps", []):
        entry = dict(entry)
        kind = kinds.get(str(entry.get("kind")))
        for param in kind.params if kind is not None else ():
            if param.path == "in" and isinstance(entry.get(param.name), str):
                # the recording's copy: the job's input files as they were
                entry[param.name] = str(folder / "inputs" / Path(entry[param.name]).name)
        steps.append(entry)
    data["steps"] = steps
    job = parse(data, source=source, text=text)
    return dataclasses.replace(job, bench=None, station=None)


def _print_check(job: Any, check: Any) -> None:
    from nvmlab.jobs.runner import format_duration

    print(f"job {job.name!r} ({job.source}): valid; station {check.station_name!r}, chip "
          f"{check.chip.name!r} ({check.chip.kind}, {check.chip.rows} x {check.chip.cols})")  # fmt: skip
    total = 0.0
    unknown = False
    for step, estimate in zip(job.steps, check.estimates_s, strict=True):
        shown = format_duration(estimate) if estimate is not None else "unknown"
        print(f"  {step.label:22s} estimated instrument time {shown}")
        if estimate is None:
            unknown = True
        else:
            total += estimate
    print(f"  {'total':22s} {'at least ' if unknown else ''}{format_duration(total)}")


def _figures(outcome: Any) -> str:
    s = outcome.summary or {}
    if outcome.kind in ("tune", "tune-eflash"):
        rate = s.get("pass_rate_own")
        return (
            f"{(rate or 0) * 100:.1f} % within tolerance (own final read), pulses mean "
            f"{s.get('pulses_mean', float('nan')):.1f}, outcomes {s.get('outcomes')}"
        )
    if outcome.kind == "report":
        return str(s.get("report_dir", ""))
    parts = []
    for key, value in s.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
        if len(parts) == 3:
            break
    return ", ".join(parts)


def _print_summary(result: Any, fmt: Any) -> None:
    print()
    print(f"{'step':18s} {'status':13s} {'units':>6s} {'earlier':>7s} {'instrument':>12s} "
          f"{'wall':>10s}  figures")  # fmt: skip
    for o in result.steps:
        print(f"{o.label:18s} {o.status:13s} {o.units_total:6d} {o.units_skipped:7d} "
              f"{fmt(o.instrument_s):>12s} {fmt(o.wall_s):>10s}  {_figures(o)}")  # fmt: skip
    events = ", ".join(f"{n} {k}" for k, n in sorted(result.events.items())) or "none"
    print(f"run {result.run_id} {result.status} in {fmt(result.wall_s)} (instrument time "
          f"{fmt(result.instrument_s)}); events: {events}")  # fmt: skip
    if result.message:
        print(f"  {result.message}")
    print(f"  database: {result.database}")
    if result.log_path is not None:
        print(f"  log:      {result.log_path}")
    if result.report_dir is not None:
        print(f"  report:   {result.report_dir / 'report.html'}")
    if result.status != "completed":
        print(f"  resume:   nvmlab run --resume {result.run_id}")


def _print_info(folder: Path, info: dict[str, Any]) -> None:
    print(f"recording {folder}: run {info['run_id']} ({info['status']}) of job "
          f"{info['job']!r} on chip {info['chip']!r}, recorded {info['recorded_at']}")  # fmt: skip
    versions = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
    print(f"  versions: {versions}")
    print(f"  job file: {info['job_file']} (copy: {folder / 'job.toml'})")
    for role, n in info.get("exchanges", {}).items():
        print(f"  transcript {role}: {n} entries")
    print(f"  clock readings: {info.get('clock_readings', 0)}")


def register(subparsers: Any) -> None:
    from nvmlab.storage.cli import add_database_options

    run = subparsers.add_parser(
        "run",
        help="run a job file unattended (characterize, tune, report), resumable",
        description=(
            "Run a job file unattended: its steps (characterization sweeps, tune, report) in "
            "order, in one run of the results database. The whole file is checked before "
            "any instrument is touched; the first line printed is 'run <id>'; progress is "
            "shown (a live bar on a terminal, timestamped lines otherwise), a log file "
            "written, and a summary table ends it. --check validates and estimates without "
            "touching anything; --resume RUN continues a failed, aborted or killed run; "
            "--record DIR keeps the instrument transcripts for 'nvmlab replay DIR'."
        ),
        epilog=RUN_EPILOG.format(exit=EXIT_STATUS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("job", nargs="?", metavar="JOB.toml", help="the job file (docs/job-file.md)")
    add_database_options(run, station=False)
    run.add_argument("--check", action="store_true",
                     help="validate the job file and print each step's estimated instrument "
                     "time; touch no instrument and no database")  # fmt: skip
    run.add_argument("--resume", metavar="RUN", default=None,
                     help="continue this job run (failed, aborted or killed): completed "
                     "units are skipped, the unit in flight redone")  # fmt: skip
    run.add_argument("--record", metavar="DIR", default=None,
                     help="record the instrument transcripts into the new folder DIR, for "
                     "'nvmlab replay DIR'")  # fmt: skip
    run.add_argument("--list-steps", action="store_true",
                     help="print every step kind a job file may name, with its parameters "
                     "(defaults, units, allowed values), and exit")  # fmt: skip
    run.add_argument("--no-progress", action="store_true",
                     help="plain timestamped progress lines even on a terminal")  # fmt: skip
    run.set_defaults(handler=_cmd_run)

    replay = subparsers.add_parser(
        "replay",
        help="re-run a recorded job offline from its transcripts, into a new run",
        description=(
            "Re-run the job of a recording made with 'nvmlab run JOB --record DIR' against "
            "its instrument transcripts, with no instrument and no emulator: the same "
            "commands must be sent (the first difference stops the replay, naming the "
            "transcript line), the same replies are read, and the results are stored in a "
            "new run, with the times of the recorded run."
        ),
        epilog=EXIT_STATUS + "\nexamples:\n  nvmlab replay rec/ --info\n  nvmlab replay rec/ "
        "--db sqlite:///replayed.sqlite\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument("dir", metavar="DIR", help="the recording's folder")
    replay.add_argument("--info", action="store_true", help="show what the recording holds")
    add_database_options(replay, station=False)
    replay.add_argument("--no-progress", action="store_true", help="plain progress lines")
    replay.set_defaults(handler=_cmd_replay)

    from nvmlab.jobs import queue_cli

    queue_cli.register(subparsers)
