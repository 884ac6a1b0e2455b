"""``nvmlab queue submit|list|cancel`` and ``nvmlab worker``: the lab's queue (see
:mod:`nvmlab.jobs.queue` and :mod:`nvmlab.jobs.worker`)."""

from __future__ import annotations

import argparse
from typing import Any

from nvmlab.errors import ConfigError

QUEUE_EPILOG = """\
The queue lives on the lab's PostgreSQL database (--db, else $NVMLAB_DB; SQLite holds no
queue). Its tables come with 'nvmlab db upgrade'. A station is known to the queue once
its worker has started ('nvmlab worker --station FILE' on the station's PC).

examples:
  nvmlab queue submit night.toml --station probe-2     # for that station
  nvmlab queue submit night.toml --any                 # any station whose board holds the chip
  nvmlab queue list
  nvmlab queue cancel 17                               # queued: cancelled; running: stops safely
"""

WORKER_EPILOG = """\
The worker opens every instrument of the station once (refusing to start when one does not
answer), takes the station (a second worker for it stands by), resumes the jobs its
previous worker left running, then runs the station's queue and its chip's 'any' queue one
job at a time, each exactly as 'nvmlab run' runs it (same run records, log and report).
Ctrl-C or SIGTERM: the job in flight finishes its unit, goes safe, is stored aborted and
goes back to the queue to be resumed (--no-requeue: marked aborted); the worker exits.

exit status: 0 stopped; 1 an error (bad input, instruments that do not answer, the station
served by another worker with --no-standby).

example:
  nvmlab worker --station examples/station-emulated.toml --db postgresql+psycopg://lab@db/lab
"""


def _db(args: argparse.Namespace) -> tuple[Any, str]:
    from nvmlab.jobs.queue import require_postgresql
    from nvmlab.storage.cli import choose_database_url
    from nvmlab.storage.database import open_database

    url = choose_database_url(args, station=getattr(args, "station_file", None))
    require_postgresql(url)
    return open_database(url), url


def _cmd_submit(args: argparse.Namespace) -> int:
    from nvmlab.jobs.queue import submit

    if (args.station is None) == (not args.any):
        raise ConfigError("give exactly one of --station NAME or --any", field="--station")
    db, url = _db(args)
    try:
        done = submit(db, url, args.job, station=args.station)
    finally:
        db.close()
    print(f"queue job {done.job_id}: {args.job} queued on {done.queue}")
    if done.waiting:
        print(
            f"waiting: no worker is running for {', '.join(done.waiting)}; it starts when "
            "one does ('nvmlab worker --station FILE' on the station's PC)"
        )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from nvmlab.instruments.cli import format_table
    from nvmlab.jobs.queue import list_queue

    db, url = _db(args)
    try:
        rows = list_queue(db, url)
    finally:
        db.close()
    if not args.all:
        rows = [r for r in rows if r.status in ("todo", "doing")] or rows[-20:]
    table = [
        [
            str(r.job_id),
            r.shown_status,
            r.job_name,
            r.chip,
            r.target,
            r.station or "-",
            "-" if r.run_id is None else (
                str(r.run_id) if r.run_id == r.first_run_id else f"{r.first_run_id}..{r.run_id}"
            ),
            str(r.attempts),
            r.submitted_at.strftime("%Y-%m-%d %H:%M") if r.submitted_at else "-",
        ]
        for r in rows
    ]  # fmt: skip
    if not table:
        print("the queue is empty")
        return 0
    print(format_table(table, ["job", "status", "name", "chip", "for", "station", "runs",
                               "attempts", "submitted"]))  # fmt: skip
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    from nvmlab.jobs.queue import cancel

    try:
        job_id = int(args.id)
    except ValueError:
        raise ConfigError(
            f"{args.id!r} is not a queue job id (a whole number)", field="ID"
        ) from None
    db, url = _db(args)
    db.close()
    what = cancel(url, job_id)
    print(f"queue job {job_id}: {what}")
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from nvmlab.jobs.cli import _console_logging
    from nvmlab.jobs.worker import StationWorker, WorkerOptions
    from nvmlab.storage.cli import choose_database_url

    url = choose_database_url(args, station=args.station_file)
    from nvmlab.jobs.queue import require_postgresql

    require_postgresql(url)
    options = WorkerOptions(
        requeue_on_stop=not args.no_requeue,
        standby=not args.no_standby,
        until_empty=args.until_empty,
        stalled_after_s=args.stalled_after,
        stalled_sweep_s=args.stalled_sweep,
    )
    worker = StationWorker(args.station_file, url, options)
    with _console_logging(False):
        return worker.run()


def register(subparsers: Any) -> None:
    from nvmlab.storage.cli import add_database_options

    queue = subparsers.add_parser(
        "queue",
        help="submit jobs to the lab's stations, list and cancel them (PostgreSQL)",
        description="The lab's queue of jobs across stations, on its PostgreSQL database.",
        epilog=QUEUE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = queue.add_subparsers(dest="queue_command", metavar="ACTION")
    sub = actions.add_parser(
        "submit",
        help="queue a job file for a station, or for any station serving its chip",
        description=(
            "Queue JOB.toml. The job file is checked in full now (not at 3 a.m.): its "
            "steps, and against the station's file and safety limits and the chip its board "
            "holds (with --any, against every station that could take it). The job file "
            "needs no job.station: the worker's station runs it."
        ),
        epilog=QUEUE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument("job", metavar="JOB.toml", help="the job file (docs/job-file.md)")
    sub.add_argument("--station", metavar="NAME", default=None,
                     help="the station to run it (its name, or its station file)")  # fmt: skip
    sub.add_argument("--any", action="store_true",
                     help="any station whose probe board holds the job's kind and size of "
                     "chip")  # fmt: skip
    add_database_options(sub, station=False)
    sub.set_defaults(handler=_cmd_submit)
    lst = actions.add_parser("list", help="queued, running, done and failed jobs with their runs")
    lst.add_argument("--all", action="store_true",
                     help="every job ever queued (default: those queued or running, else "
                     "the last 20)")  # fmt: skip
    add_database_options(lst, station=False)
    lst.set_defaults(handler=_cmd_list)
    can = actions.add_parser(
        "cancel",
        help="cancel a queued job, or stop a running one at its next unit boundary",
    )
    can.add_argument("id", metavar="ID", help="the queue job id ('nvmlab queue list')")
    add_database_options(can, station=False)
    can.set_defaults(handler=_cmd_cancel)
    queue.set_defaults(handler=lambda args: (queue.print_help(), 2)[1])

    worker = subparsers.add_parser(
        "worker",
        help="run the queue's jobs on one station (one at a time; resumes after a crash)",
        description="Serve the lab's queue for one station.",
        epilog=WORKER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker.add_argument("--station", dest="station_file", metavar="FILE", required=True,
                        help="the station file of this PC's instruments")  # fmt: skip
    add_database_options(worker, station=False)
    worker.add_argument("--no-requeue", action="store_true",
                        help="on Ctrl-C / SIGTERM mark the stopped job aborted in the queue "
                        "instead of putting it back (its run stays resumable by hand)")  # fmt: skip
    worker.add_argument("--no-standby", action="store_true",
                        help="exit (status 1) when another worker serves the station, instead "
                        "of standing by until it stops")  # fmt: skip
    worker.add_argument("--until-empty", action="store_true",
                        help="exit once the station's queues are empty")  # fmt: skip
    worker.add_argument("--stalled-after", type=float, default=30.0, metavar="S",
                        help="a worker silent this long (s) is stalled and its job is put back "
                        "(default 30)")  # fmt: skip
    worker.add_argument("--stalled-sweep", type=float, default=30.0, metavar="S",
                        help="look for stalled jobs every S seconds (default 30)")  # fmt: skip
    worker.set_defaults(handler=_cmd_worker)
