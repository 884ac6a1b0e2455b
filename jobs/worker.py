"""``nvmlab worker --station FILE``: the queue's worker for one station.

A worker

1. takes the station: a PostgreSQL advisory lock held by one connection for the worker's
   whole life. A second worker for the same station stands by until the first is gone
   (touching no instrument meanwhile); a worker killed with SIGKILL or a PC that loses
   power loses its connection, and with it the lock (the server's TCP keepalives, set
   short on that connection, find a dead peer in about 30 s);
2. opens every instrument once (a station whose instruments do not answer is refused with
   the failing ones named, before any job is taken), and reads from the probe board the
   chip it holds (kind, rows, cols);
3. registers the station in ``station_workers`` (what it serves, its process, a heartbeat,
   idle or busy, the job and run in flight);
4. puts back every job that was running on this station when its previous worker died
   (holding the station's lock proves that worker is gone): into this station's queue,
   first in line, to be resumed;
5. runs a procrastinate worker on the station's queue and on the queue of its chip, one
   job at a time. Each job is executed exactly as ``nvmlab run`` executes it (same run
   records, log and report); a job that has a run already resumes it.

Every ``stalled_sweep_s`` the worker also looks for jobs whose worker stopped beating
(procrastinate's heartbeats) on any station: a job that has begun on a station goes back
to that station's queue when the station has no live worker, never to another station
(its chip is there); a job that had not begun goes back to its own queue.

SIGINT or SIGTERM: the running job finishes its unit, goes safe and is stored
``aborted``; it goes back to its station's queue to be resumed (``--no-requeue``: it is
marked aborted in the queue instead); the worker exits. ``nvmlab queue cancel`` of a
running job stops it the same way and marks it aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvmlab.errors import NvmlabError
from nvmlab.jobs.queue import (
    RESUME_PRIORITY,
    TASK_NAME,
    job_for_station,
    kind_queue,
    open_app,
    resume_run_of,
    station_lock_name,
    station_queue,
)

__all__ = [
    "JobRunFailed",
    "StationWorker",
    "WorkerOptions",
    "check_worker_database",
    "live_stations",
]

log = logging.getLogger("nvmlab.jobs.worker")

#: A job whose station is held by another process (a job run by hand) is tried again
#: after this many seconds.
BUSY_RETRY_S = 30

#: Namespace of the stations' advisory locks (the first key of the two-key form).
ADVISORY_NAMESPACE = 0x6E766D  # "nvm"


class _Stopping(Exception):
    """The worker stops (SIGINT / SIGTERM): the job goes back to its station's queue."""

    def __init__(self, station: str) -> None:
        super().__init__(f"worker of station {station!r} stopping; job re-queued to resume")
        self.station = station


class _StationBusy(Exception):
    """Another process holds the station (a job run by hand): try again later."""

    def __init__(self, station: str, why: str) -> None:
        super().__init__(why)
        self.station = station


class JobRunFailed(NvmlabError):
    """The nvmlab run ended ``failed`` (its message says why; resumable by hand)."""


def _retry_strategy() -> Any:
    import procrastinate

    class PinToStation(procrastinate.BaseRetryStrategy):
        """Back to its station's queue (first in line, under the station's lock): a job
        stopped with its worker, or whose station was busy; nothing else is retried (a
        failed run is resumed by a person, who knows why it failed)."""

        def get_retry_decision(self, *, exception: BaseException, job: Any) -> Any:
            if isinstance(exception, (_Stopping, _StationBusy)):
                delay = 0 if isinstance(exception, _Stopping) else BUSY_RETRY_S
                return procrastinate.RetryDecision(
                    retry_in={"seconds": delay},
                    priority=RESUME_PRIORITY,
                    queue=station_queue(exception.station),
                    lock=station_lock_name(exception.station),
                )
            return None

    return PinToStation()


@dataclass
class WorkerOptions:
    """How a worker behaves (times in s)."""

    #: On SIGINT/SIGTERM, put the stopped job back in its station's queue (else: aborted).
    requeue_on_stop: bool = True
    #: A worker of the same station already runs: wait for it to go (else: exit).
    standby: bool = True
    heartbeat_s: float = 5.0
    #: procrastinate: a worker whose heartbeat is older than this is stalled.
    stalled_after_s: float = 30.0
    stalled_sweep_s: float = 30.0
    poll_s: float = 1.0
    #: Exit when the queues are empty (after the recovery).
    until_empty: bool = False


def _chip_kind(board_kind: str) -> str:
    return "eflash" if board_kind.upper() == "EFLASH" else "memristor"


def live_stations(db: Any, *, stale_after_s: float | None = None) -> dict[str, set[str]]:
    """Stations with a live worker now, and the queues each serves."""
    from sqlalchemy import select

    from nvmlab.storage.liveness import STALE_AFTER_S, Owner, database_now, judge
    from nvmlab.storage.models import StationWorker

    limit = STALE_AFTER_S if stale_after_s is None else stale_after_s
    out: dict[str, set[str]] = {}
    with db.read_connection() as conn:
        now = conn.execute(select(database_now(conn.dialect.name))).scalar_one()
        for row in conn.execute(select(StationWorker.__table__)).all():
            if row.state == "stopped" or row.pid is None:
                continue
            owner = Owner(row.host, row.pid, row.process_start_s, row.heartbeat_at)
            if not judge(owner, now=now, stale_after_s=limit).alive:
                continue
            queues = {station_queue(row.station)}
            if row.chip_kind and row.n_rows and row.n_cols:
                queues.add(kind_queue(row.chip_kind, row.n_rows, row.n_cols))
            out[row.station] = queues
    return out


@dataclass
class _State:
    """What the worker's threads share."""

    stopping: str | None = None
    jobs_done: int = 0
    current_job: int | None = None
    current_run: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class StationWorker:
    """The worker of one station (see the module documentation)."""

    def __init__(self, station_file: str | Path, url: str, options: WorkerOptions) -> None:
        from nvmlab.instruments.stationfile import load_station_file

        self.station_file = Path(station_file).resolve()
        self.config = load_station_file(self.station_file)  # errors name the file
        self.name = self.config.name
        self.url = url
        self.options = options
        self.state = _State()
        self.kind: str | None = None
        self.rows: int | None = None
        self.cols: int | None = None
        self.db: Any = None
        self._lock_conn: Any = None
        self._worker: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- before any job --------------------------------------------------------------------
    def check_instruments(self) -> None:
        """Open every instrument once and read the board's chip; raise a clear error
        naming the instruments that did not answer."""
        from nvmlab.instruments.station import Station

        station = Station(self.config)
        try:
            station.open()  # StationError names each instrument that failed
            board: Any = station.board
            self.kind = _chip_kind(board.kind)
            self.rows, self.cols = int(board.rows), int(board.cols)
        finally:
            station.close(safe=True)
        log.info(
            "station %r: every instrument answered; its board holds a %s chip of %d x %d",
            self.name, self.kind, self.rows, self.cols,
        )  # fmt: skip

    def take_station(self) -> bool:
        """Take the station's advisory lock (standing by while another worker has it).
        Returns False when not standing by and the station is taken."""
        import psycopg

        from nvmlab.jobs.queue import engine_conninfo

        conn = psycopg.connect(engine_conninfo(self.url), autocommit=True)
        # a dead peer (power cut) is found by the server in about idle + interval x count
        conn.execute("SET tcp_keepalives_idle = 10")
        conn.execute("SET tcp_keepalives_interval = 5")
        conn.execute("SET tcp_keepalives_count = 3")
        said = False
        while True:
            got = conn.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (ADVISORY_NAMESPACE, self.name)
            ).fetchone()
            if got and got[0]:
                self._lock_conn = conn
                return True
            if not self.options.standby:
                conn.close()
                return False
            if not said:
                log.warning(
                    "station %r is served by another worker (%s); standing by until it stops",
                    self.name, self._holder_text(),
                )  # fmt: skip
                said = True
            if self.state.stopping:
                conn.close()
                return False
            time.sleep(self.options.poll_s)

    def _holder_text(self) -> str:
        from sqlalchemy import select

        from nvmlab.storage.models import StationWorker as Row

        with self.db.read_connection() as conn:
            row = conn.execute(select(Row.__table__).where(Row.station == self.name)).first()
        if row is None or row.pid is None:
            return "process unknown"
        return f"pid {row.pid} on {row.host}"

    def _register(self) -> None:
        from sqlalchemy import delete, insert, update

        from nvmlab.storage.liveness import Owner, database_now
        from nvmlab.storage.models import StationWorker as Row
        from nvmlab.storage.models import utcnow

        me = Owner.current()
        values: dict[str, Any] = {
            "station_file": str(self.station_file),
            "station_text": self.station_file.read_text(encoding="utf-8"),
            "chip_kind": self.kind,
            "n_rows": self.rows,
            "n_cols": self.cols,
            "state": "idle",
            "queue_job_id": None,
            "run_id": None,
            "engine_worker_id": None,
            "host": me.host,
            "pid": me.pid,
            "process_start_s": me.process_start_s,
            "started_at": utcnow(),
        }
        with self.db.errors(f"register station {self.name!r}"), self.db.engine.begin() as conn:
            values["heartbeat_at"] = database_now(conn.dialect.name)
            changed = conn.execute(
                update(Row).where(Row.station == self.name).values(**values)
            ).rowcount
            if not changed:
                conn.execute(delete(Row).where(Row.station == self.name))
                conn.execute(
                    insert(Row).values(station=self.name, registered_at=utcnow(), **values)
                )

    def _set(self, **values: Any) -> None:
        from sqlalchemy import update

        from nvmlab.storage.liveness import database_now
        from nvmlab.storage.models import StationWorker as Row

        with self.db.engine.begin() as conn:
            conn.execute(
                update(Row)
                .where(Row.station == self.name)
                .values(heartbeat_at=database_now(conn.dialect.name), **values)
            )

    def _keep_station(self) -> None:
        """Check that the station's lock is still held: its connection may have been
        dropped (the server restarted, the network broke for longer than the keepalives).
        Take it again when free; when another worker has it meanwhile, stop."""
        import psycopg

        from nvmlab.jobs.queue import engine_conninfo

        try:
            self._lock_conn.execute("SELECT 1")
            return
        except psycopg.Error:
            pass
        with contextlib.suppress(Exception):
            self._lock_conn.close()
        conn = psycopg.connect(engine_conninfo(self.url), autocommit=True, connect_timeout=10)
        got = conn.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (ADVISORY_NAMESPACE, self.name)
        ).fetchone()
        self._lock_conn = conn
        if got and got[0]:
            log.warning("station %r: its lock's connection was lost; taken again", self.name)
            return
        self.stop(f"station {self.name!r}: its lock was lost and another worker has it")

    def _beat(self) -> None:
        if self._lock_conn is not None and not self.state.stopping:
            self._keep_station()
        worker_id = getattr(self._worker, "worker_id", None)
        if worker_id is not None:
            self._set(engine_worker_id=worker_id)
        else:
            self._set()

    # -- recovery ----------------------------------------------------------------------------
    async def _put_back(self, app: Any, job_id: int, station: str, why: str) -> None:
        await app.job_manager.retry_job_by_id_async(
            job_id=job_id,
            retry_at=_utcnow(),
            priority=RESUME_PRIORITY,
            queue=station_queue(station),
            lock=station_lock_name(station),
        )
        log.warning("queue job %d: %s; back in the queue of station %r", job_id, why, station)

    async def recover_orphans(self, app: Any) -> int:
        """Put back every job left running on this station by a worker that is gone (this
        worker holds the station: its previous worker is dead)."""
        from sqlalchemy import select

        from nvmlab.storage.models import QueueJob

        with self.db.read_connection() as conn:
            mine = [
                r.job_id
                for r in conn.execute(
                    select(QueueJob.job_id).where(QueueJob.station == self.name)
                ).all()
            ]
        n = 0
        for job_id in mine:
            jobs = await app.job_manager.list_jobs_async(id=job_id)
            if jobs and str(jobs[0].status) == "doing":
                await self._put_back(app, job_id, self.name, "its worker on this station is gone")
                n += 1
        return n

    async def sweep_stalled(self, app: Any) -> int:
        """procrastinate's stalled jobs (their worker's heartbeat stopped), put back."""
        from sqlalchemy import select

        from nvmlab.storage.models import QueueJob

        n = 0
        for job in await app.job_manager.get_stalled_jobs(
            task_name=TASK_NAME, seconds_since_heartbeat=self.options.stalled_after_s
        ):
            with self.db.read_connection() as conn:
                station = conn.execute(
                    select(QueueJob.station).where(QueueJob.job_id == job.id)
                ).scalar_one_or_none()
            if station is None:
                # it had not begun: back to the queue it came from
                await app.job_manager.retry_job_by_id_async(job_id=job.id, retry_at=_utcnow())
                log.warning("queue job %d: its worker stopped beating before it began; "
                            "back in queue %s", job.id, job.queue)  # fmt: skip
                n += 1
            elif station == self.name or not self._station_served(station):
                await self._put_back(app, int(job.id or 0), station, "its worker stopped beating")
                n += 1
        return n

    def _station_served(self, station: str) -> bool:
        """Whether another worker holds ``station``'s advisory lock now."""
        row = self._lock_conn.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (ADVISORY_NAMESPACE, station)
        ).fetchone()
        if row and row[0]:
            self._lock_conn.execute(
                "SELECT pg_advisory_unlock(%s, hashtext(%s))", (ADVISORY_NAMESPACE, station)
            )
            return False
        return True

    # -- one job -----------------------------------------------------------------------------
    def _stop_reason(self, context: Any) -> str | None:
        if context.should_abort():
            return "cancelled from the queue (nvmlab queue cancel)"
        return self.state.stopping

    def execute(self, context: Any, job_file: str, job_text: str, target: str | None) -> dict:
        """The task: run (or resume) the queued job on this station as ``nvmlab run``."""
        import procrastinate

        from nvmlab.jobs.progress import JobProgress
        from nvmlab.jobs.runner import default_log_path, run_job
        from nvmlab.storage.locks import station_lock_holder

        job_id = int(context.job.id)
        holder = station_lock_holder(self.db, self.name)
        if holder is not None and holder.verdict.alive:
            who = f"run {holder.run_id}" if holder.run_id is not None else "a job starting"
            why = f"station {self.name!r} is held by {who} ({holder.verdict.reason})"
            log.warning("queue job %d: %s; back in the queue, tried again in %d s", job_id, why,
                        BUSY_RETRY_S)  # fmt: skip
            raise _StationBusy(self.name, why)
        self._claim(job_id, context, job_file, target)
        job = job_for_station(job_text, job_file, self.station_file)
        resume, status = resume_run_of(self.db, job_id)
        if status == "completed":
            log.info("queue job %d: run %s completed already; nothing to do", job_id, resume)
            return {"run_id": resume, "status": status}
        if resume is not None and status == "running":
            from nvmlab.storage.runs import run_liveness

            verdict = run_liveness(self.db, resume)
            if verdict is not None and verdict.alive:
                # its process is on another host and beat lately: wait until it is judged
                raise _StationBusy(self.name, f"run {resume} may still run ({verdict.reason})")
        with self.state.lock:
            self.state.current_job = job_id
        self._set(state="busy", queue_job_id=job_id)

        def started(run_id: int) -> None:
            self._record_run(job_id, run_id)
            self._set(run_id=run_id)
            log.info(
                "queue job %d: run %d %s", job_id, run_id,
                f"resumes run {resume}" if resume is not None else "started",
            )  # fmt: skip

        try:
            result = run_job(
                job,
                db=self.db,
                resume=resume,
                progress=JobProgress(live=False),
                log_to=default_log_path(job),
                on_start=started,
                stop_check=lambda: self._stop_reason(context),
                extra_config={"queue_job_id": job_id, "queue_station": self.name},
            )
        finally:
            with self.state.lock:
                self.state.current_job = None
                self.state.jobs_done += 1
            self._set(state="idle", queue_job_id=None, run_id=None)
        summary = {"run_id": result.run_id, "status": result.status, "message": result.message}
        if result.status == "completed":
            return summary
        if result.status == "aborted":
            if context.should_abort():
                raise procrastinate.exceptions.JobAborted(f"run {result.run_id} aborted")
            if self.options.requeue_on_stop:
                raise _Stopping(self.name)
            raise procrastinate.exceptions.JobAborted(f"run {result.run_id} aborted")
        raise JobRunFailed(f"run {result.run_id} failed: {result.message}")

    def _claim(self, job_id: int, context: Any, job_file: str, target: str | None) -> None:
        """This station takes queue job ``job_id`` (recorded before any instrument moves)."""
        from sqlalchemy import insert, update

        from nvmlab.storage.models import QueueJob, utcnow

        with self.db.engine.begin() as conn:
            changed = conn.execute(
                update(QueueJob)
                .where(QueueJob.job_id == job_id)
                .values(station=self.name, updated_at=utcnow())
            ).rowcount
            if not changed:  # submitted by hand through procrastinate, or its row was lost
                conn.execute(
                    insert(QueueJob).values(
                        job_id=job_id, job_name=Path(job_file).stem, chip="?",
                        job_file=job_file, target=target or "any", station=self.name,
                        submitted_at=utcnow(), updated_at=utcnow(),
                    )
                )  # fmt: skip

    def _record_run(self, job_id: int, run_id: int) -> None:
        from sqlalchemy import update

        from nvmlab.storage.models import QueueJob, utcnow

        with self.db.engine.begin() as conn:
            conn.execute(
                update(QueueJob)
                .where(QueueJob.job_id == job_id, QueueJob.first_run_id.is_(None))
                .values(first_run_id=run_id)
            )
            conn.execute(
                update(QueueJob)
                .where(QueueJob.job_id == job_id)
                .values(run_id=run_id, updated_at=utcnow())
            )

    # -- the worker's life ---------------------------------------------------------------------
    def stop(self, why: str) -> None:
        """Ask the worker to stop: the job in flight ends at its next unit boundary."""
        with self.state.lock:
            if self.state.stopping is None:
                self.state.stopping = why
                log.warning("%s: the job in flight (if any) finishes its unit, goes safe and "
                            "%s; then the worker exits", why,
                            "goes back to the queue" if self.options.requeue_on_stop
                            else "is marked aborted")  # fmt: skip
        if self._worker is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._worker.stop)

    async def _serve(self) -> None:
        from procrastinate import worker as engine_worker

        app = open_app(self.url)
        task_retry = _retry_strategy()

        def task(context: Any, job_file: str, job_text: str, target: str | None = None) -> dict:
            return self.execute(context, job_file, job_text, target)

        app.task(name=TASK_NAME, pass_context=True, retry=task_retry)(task)
        assert self.kind is not None and self.rows is not None and self.cols is not None
        queues = [station_queue(self.name), kind_queue(self.kind, self.rows, self.cols)]
        async with app.open_async():
            recovered = await self.recover_orphans(app)
            if recovered:
                log.info("station %r: %d job(s) to resume first", self.name, recovered)
            self._worker = engine_worker.Worker(
                app,
                queues=queues,
                name=f"station {self.name}",
                concurrency=1,
                wait=not self.options.until_empty,
                install_signal_handlers=False,
                fetch_job_polling_interval=self.options.poll_s,
                abort_job_polling_interval=self.options.poll_s,
                update_heartbeat_interval=min(10.0, self.options.stalled_after_s / 3),
                stalled_worker_timeout=self.options.stalled_after_s,
            )
            log.info(
                "worker of station %r (pid %d) serving queues %s; Ctrl-C or SIGTERM stops it "
                "after the unit in flight", self.name, os.getpid(), ", ".join(queues),
            )  # fmt: skip
            run = asyncio.create_task(self._worker.run())
            side = [asyncio.create_task(self._sweeper(app)), asyncio.create_task(self._watch())]
            try:
                await run
            finally:
                for side_task in side:
                    side_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await side_task

    async def _watch(self) -> None:
        """Pass a stop request on to the engine's worker, also one that came before it
        ran (the engine clears stop requests made before its start)."""
        while True:
            if self.state.stopping is not None:
                self._worker.stop()
            await asyncio.sleep(0.5)

    async def _sweeper(self, app: Any) -> None:
        while True:
            try:
                await self.sweep_stalled(app)
            except Exception as exc:  # noqa: BLE001 - the sweep retries at its next turn
                log.warning("stalled-job sweep failed: %s", exc)
            await asyncio.sleep(self.options.stalled_sweep_s)

    def run(self) -> int:
        """Check the instruments, take the station, register, serve until stopped.
        Returns the exit status (0: stopped cleanly)."""
        from nvmlab.storage import open_database
        from nvmlab.storage.liveness import Heartbeat

        self.db = open_database(self.url)
        try:
            with self._signals():
                if not self.take_station():
                    if self.state.stopping:
                        return 0
                    log.error("station %r is served by another worker (%s); not starting",
                              self.name, self._holder_text())  # fmt: skip
                    return 1
                if self.state.stopping:
                    return 0
                # the instruments are touched only once the station is this worker's: a
                # worker standing by never disturbs the job of the one serving
                self.check_instruments()
                self._register()
                with Heartbeat(self._beat, interval_s=self.options.heartbeat_s,
                               name=f"nvmlab-worker-{self.name}"):  # fmt: skip
                    self._loop = asyncio.new_event_loop()
                    try:
                        self._loop.run_until_complete(self._serve())
                    finally:
                        self._loop.close()
                        self._loop = None
            return 0
        finally:
            with contextlib.suppress(Exception):
                if self._lock_conn is not None:
                    self._set(state="stopped", engine_worker_id=None, queue_job_id=None,
                              run_id=None)  # fmt: skip
            if self._lock_conn is not None:
                self._lock_conn.close()
            self.db.close()

    @contextlib.contextmanager
    def _signals(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(signum: int, frame: Any) -> None:
            self.stop(f"{signal.Signals(signum).name}")

        previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def _utcnow() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc)


def check_worker_database(url: str) -> None:
    """A worker needs the lab's PostgreSQL (the queue lives there)."""
    from nvmlab.jobs.queue import require_postgresql

    require_postgresql(url)
