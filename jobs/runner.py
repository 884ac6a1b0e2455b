"""The job runner: a job is a function of (job file, station, database).

:func:`run_job` runs the steps of a validated :class:`~nvmlab.jobs.jobfile.JobFile` in
order, in one run of kind ``job``:

1. *before any instrument is touched*: the database is opened, the chip looked up (or
   registered from the job's ``[chip]``), every step's own rules checked against the chip
   and the station's limits (:func:`preflight`), the station's lock taken
   (:mod:`nvmlab.storage.locks`; a live holder refuses the job, naming its run);
2. the run is started (or, with ``resume=RUN``, a run resuming that one: its completed
   units are skipped, its interrupted unit redone), the station opened (a station file,
   or the in-process emulated bench of the job's ``[bench]`` and chip state file);
3. each step runs through the step registry with the job's unit prefix (``s2-tune/``),
   stop check and fault guard (:class:`~nvmlab.jobs.guard.JobGuard`); a step that
   completed is marked by a unit of its own (``s2-tune/step``) holding its summary, so a
   resumed job skips it whole;
4. whatever happens, the station is left safe (SMU outputs off, board grounded, chamber
   at its safe setpoint), the run closed ``completed``, ``aborted`` (Ctrl-C, SIGTERM) or
   ``failed`` (with the reason), and the lock given back.

Nothing here is module-level state: two jobs in one process behave as in two processes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvmlab.errors import ConfigError, NvmlabError, StorageError
from nvmlab.jobs.guard import JobGuard
from nvmlab.jobs.jobfile import JobFile, JobStep, parse_job
from nvmlab.steps import StepContext

__all__ = [
    "JobResult",
    "StepOutcome",
    "Preflight",
    "job_from_run",
    "preflight",
    "run_job",
    "STEP_DONE",
]

log = logging.getLogger("nvmlab.jobs")

#: Key suffix of the unit that marks a step completed (``s2-tune/step``).
STEP_DONE = "step"


@dataclass
class StepOutcome:
    """How one step of a job went."""

    label: str
    kind: str
    status: str = "pending"  #: pending, completed, done earlier, failed, aborted
    units_total: int = 0
    units_measured: int = 0
    units_skipped: int = 0
    instrument_s: float = 0.0
    wall_s: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    message: str | None = None


@dataclass
class JobResult:
    """How a job ended: its run, status (``completed``, ``aborted``, ``failed``), the
    steps, the reason when it did not complete, and where its files are."""

    run_id: int
    status: str
    steps: list[StepOutcome]
    message: str | None = None
    run_dir: Path | None = None
    log_path: Path | None = None
    report_dir: Path | None = None
    database: str = ""
    resumes: int | None = None
    events: dict[str, int] = field(default_factory=dict)
    instrument_s: float = 0.0
    wall_s: float = 0.0
    #: An emulated bench only: the largest voltage (V) per terminal and current (A) the
    #: emulated instruments actually applied, to check the limits on what happened.
    applied_max_v: dict[str, float] = field(default_factory=dict)
    applied_max_a: dict[str, float] = field(default_factory=dict)


@dataclass
class Preflight:
    """What :func:`preflight` established without touching an instrument."""

    chip: Any  #: the registered chip (``RegisteredChip``) or a stand-in before registering
    station_name: str
    limits: Any
    estimates_s: list[float | None]


class _ChipStandIn:
    """A chip not registered yet, as the steps' checks see it."""

    def __init__(self, name: str, kind: str, rows: int, cols: int) -> None:
        self.id = None
        self.name, self.kind, self.rows, self.cols = name, kind, rows, cols


def _bench_config(job: JobFile) -> Any:
    from nvmlab.mocks.benchfile import BenchConfig, load_bench_file

    assert job.bench is not None
    config = load_bench_file(job.bench.file) if job.bench.file is not None else BenchConfig()
    overrides = dict(job.bench.overrides)
    if job.bench.state_file is not None:
        overrides["state_file"] = job.bench.state_file
    return config.with_overrides(**overrides) if overrides else config


def station_name(job: JobFile) -> str:
    """The name the station's lock is keyed by: the station file's, or for an in-process
    emulated bench one named by its chip state file (or the job)."""
    if job.station is not None:
        from nvmlab.instruments.stationfile import load_station_file

        return load_station_file(job.station).name
    assert job.bench is not None
    where = job.bench.state_file.resolve() if job.bench.state_file else job.source.resolve()
    return f"emulated:{where}"


def station_dict(job: JobFile) -> dict[str, Any]:
    """The content of the job's station file (as read), or the station of its emulated
    bench: what a recording keeps to replay the job without either."""
    if job.station is not None:
        import sys

        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        from nvmlab.instruments.stationfile import load_station_file

        config = load_station_file(job.station)  # validated (errors name the file)
        data = tomllib.loads(Path(job.station).read_text(encoding="utf-8"))
        data.setdefault("station", {})["name"] = config.name
        return data
    from nvmlab.mocks.emulated import build_emulated_bench

    # the routing and limits of the emulated bench's station, without its chip state
    bench = build_emulated_bench(_bench_config(job).with_overrides(state_file=None))
    try:
        return bench.station_dict(name=station_name(job))
    finally:
        bench.close(save_state=False)


def _chip_shape(job: JobFile) -> tuple[str | None, int | None, int | None]:
    kind, rows, cols = job.chip.kind, job.chip.rows, job.chip.cols
    if job.bench is not None:
        config = _bench_config(job)
        kind = kind or config.array
        rows = rows or config.rows
        cols = cols or config.cols
    return kind, rows, cols


def preflight(
    job: JobFile,
    db: Any | None,
    *,
    station: dict[str, Any] | None = None,
    chip_shape: tuple[str | None, int | None, int | None] | None = None,
) -> Preflight:
    """Check everything a job needs that can be checked without an instrument: the chip
    (registered, or registrable from ``[chip]``; of the kind and size of the emulated
    bench), every step's rules against the chip and the station's safety limits, the
    report's dependency. ``db`` None: the chip is taken from the job file only.
    ``station`` (a station's content) and ``chip_shape`` replace what the job file names
    (a replay has neither its station file nor its bench)."""
    from nvmlab.characterization.sweep import sweep_kinds

    name = job.chip.name
    kind, rows, cols = chip_shape if chip_shape is not None else _chip_shape(job)
    chip: Any = None
    if db is not None:
        from nvmlab.storage.inventory import list_chips

        chip = next((c for c in list_chips(db) if c.name == name), None)
    if chip is not None:
        for what, want, have in (
            ("kind", kind, chip.kind),
            ("rows", rows, chip.rows),
            ("cols", cols, chip.cols),
        ):
            if want is not None and want != have:
                raise ConfigError(
                    f"chip {name!r} is registered with {what} {have!r}, the job (or its "
                    f"bench) says {want!r}; allowed: {have!r}",
                    file=str(job.source),
                    field=f"chip.{what}",
                )
    else:
        if kind is None or rows is None or cols is None:
            raise ConfigError(
                f"chip {name!r} is not registered in the database; give chip.kind, chip.rows "
                "and chip.cols to register it (or 'nvmlab chip add')",
                file=str(job.source),
                field="chip.name",
            )
        chip = _ChipStandIn(name, kind, rows, cols)
    from nvmlab.instruments.station import StationConfig

    data = station if station is not None else station_dict(job)
    config = StationConfig.from_dict(data, source=str(job.station or job.source))

    class _Unopened:
        limits = config.limits
        name = config.name

    sweeps = sweep_kinds()
    estimates: list[float | None] = []
    for step in job.steps:
        where = f"steps[{step.index}]"
        sweep = sweeps.get(step.kind)
        if sweep is not None:
            if chip.kind not in sweep.array_kinds:
                raise ConfigError(
                    f"step {step.kind!r} measures {' or '.join(sweep.array_kinds)} arrays; "
                    f"chip {name!r} is a {chip.kind} array",
                    file=str(job.source),
                    field=f"{where}.kind",
                )
            try:
                sweep.check(step.params, chip, _Unopened())
            except ConfigError as exc:
                raise _in_step(exc, job, where) from None
            try:
                estimates.append(sweep.estimate_s(step.params, chip))
            except Exception:  # noqa: BLE001 - an estimate is a nicety
                estimates.append(None)
        else:
            check = getattr(step.step_kind.run, "check", None)
            if check is not None:
                try:
                    check(step.params)
                except ConfigError as exc:
                    raise _in_step(exc, job, where) from None
            est = step.step_kind.estimate_s
            estimates.append(est(step.params) if est is not None else None)
    return Preflight(chip, config.name, config.limits, estimates)


def _in_step(exc: ConfigError, job: JobFile, where: str) -> ConfigError:
    field_name = exc.field or ""
    message = str(exc)
    prefix = ": ".join(p for p in (exc.file, exc.field) if p)
    if prefix and message.startswith(prefix + ": "):
        message = message[len(prefix) + 2 :]
    if exc.file and exc.file != str(job.source):
        message = f"{exc.file}: {message}"
    return ConfigError(message, file=str(job.source), field=f"{where}.{field_name}".rstrip("."))


def job_from_run(db: Any, run_id: int) -> tuple[JobFile, Any]:
    """The job a stored run ran (its job file's text, kept with the run), validated again
    against the files it names, and the run's row."""
    from nvmlab.storage.runs import require_run

    with db.read_connection() as conn:
        row = require_run(conn, db, run_id)
    config = row.config or {}
    if row.kind != "job" or "job_text" not in config:
        raise ConfigError(
            f"run {run_id} is a {row.kind!r} run, not a job; allowed: a run of 'nvmlab run' "
            "('nvmlab runs' lists them)",
            field="--resume",
        )
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    job = parse_job(
        tomllib.loads(config["job_text"]), source=Path(config["job_file"]), text=config["job_text"]
    )
    if config.get("output"):
        job = _replace(job, output=Path(config["output"]))
    if config.get("state_file") and job.bench is not None:
        from nvmlab.jobs.jobfile import BenchSpec

        bench = BenchSpec(job.bench.file, Path(config["state_file"]), job.bench.overrides)
        job = _replace(job, bench=bench)
    return job, row


def _replace(job: JobFile, **changes: Any) -> JobFile:
    import dataclasses

    return dataclasses.replace(job, **changes)


# ---------------------------------------------------------------------------- signals


class StopRequests:
    """Ctrl-C / SIGTERM: the first asks the job to stop after the unit in flight; a second
    Ctrl-C stops at once (still into the safe state). Handlers are installed only in the
    main thread (a job run from a worker thread is stopped by its owner)."""

    def __init__(self, enabled: bool, external: Callable[[], str | None] | None = None) -> None:
        self.enabled = enabled
        self.external = external
        #: why an external request stopped the job (None: a signal, or not stopped)
        self.reason: str | None = None
        self.requested: int | None = None
        self.quiet = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        if self.quiet:
            return  # the safe state and the run's final status are being written
        if self.requested is not None and signum == signal.SIGINT:
            log.warning("second Ctrl-C: stopping now, into the safe state")
            raise KeyboardInterrupt
        if self.requested is None:
            self.requested = signum
            log.warning(
                "%s: finishing the unit in flight, then stopping safely (Ctrl-C again "
                "stops at once)",
                signal.Signals(signum).name,
            )

    def check(self) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        if self.external is not None:
            reason = self.external()
            if reason is not None:
                self.reason = reason
                log.warning("%s: stopping at this unit boundary, into the safe state", reason)
                raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequests]:
        import signal
        import threading

        if not self.enabled or threading.current_thread() is not threading.main_thread():
            yield self
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[int(sig)] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for number, handler in self._previous.items():
                signal.signal(number, handler)


# ---------------------------------------------------------------------------- the run


ProgressFactory = Callable[[JobStep], Any]


def _open_station(
    job: JobFile, name: str, record_to: Path | None, replay_from: Path | None
) -> tuple[Any, Any]:
    """The station (not open yet) and the emulated bench behind it (or None)."""
    from nvmlab.instruments.station import Station
    from nvmlab.instruments.stationfile import load_station_file

    transcripts = record_to / "transcripts" if record_to is not None else None
    if replay_from is not None:
        from nvmlab.jobs.recording import replay_station

        return replay_station(replay_from), None
    if job.station is not None:
        station = Station(load_station_file(job.station), record_to=transcripts)
        return station, None
    from nvmlab.mocks.emulated import build_emulated_bench

    bench = build_emulated_bench(_bench_config(job))
    station = Station(
        bench.station_dict(name=name),
        visa_library=bench.visa_library(),
        clock=bench.clock,
        record_to=transcripts,
    )
    return station, bench


def run_job(
    job: JobFile,
    *,
    db: Any,
    resume: int | None = None,
    record_to: str | Path | None = None,
    replay_from: str | Path | None = None,
    progress: ProgressFactory | None = None,
    handle_signals: bool = False,
    log_to: Callable[[int], Path | None] | None = None,
    on_start: Callable[[int], None] | None = None,
    stop_check: Callable[[], str | None] | None = None,
    extra_config: Mapping[str, Any] | None = None,
) -> JobResult:
    """Run ``job`` against its station, storing into ``db`` (open); see the module doc.

    ``resume``: a job run to continue (failed, aborted or killed; the chain's newest).
    ``record_to``: a folder for the instruments' transcripts (:mod:`nvmlab.jobs.recording`
    prepares it). ``replay_from``: serve the instruments from such a recording instead.
    ``progress(step)`` returns a callback ``(done, total)`` for the step (and may have a
    ``close()``). ``handle_signals``: Ctrl-C / SIGTERM stop at the next unit boundary.
    ``on_start(run_id)`` is called as soon as the run exists (the CLI prints ``run <id>``);
    ``log_to(run_id)`` returns the log file to attach (or None).
    ``stop_check()`` returns why the job should stop (a queue worker stopping, a cancel
    from the queue) or None: asked at every unit boundary, it stops the job as Ctrl-C does.
    ``extra_config`` is stored in the run's configuration beside the job's (the queue job
    it runs for).
    """
    from nvmlab.jobs import recording
    from nvmlab.storage.inventory import register_chip
    from nvmlab.storage.locks import (
        acquire_station_lock,
        refresh_station_lock,
        release_station_lock,
    )
    from nvmlab.storage.runs import finish_run, resume_run, run_liveness, start_run

    wall_start = time.perf_counter()
    record_dir = Path(record_to) if record_to is not None else None
    replay_dir = Path(replay_from) if replay_from is not None else None
    replay_info: dict[str, Any] | None = None
    if replay_dir is not None:
        replay_info = recording.read_recording(replay_dir)
        data = recording.station_data(replay_dir)
        shape = tuple(replay_info.get("chip_shape") or (None, None, None))
        check = preflight(job, db, station=data, chip_shape=shape)  # type: ignore[arg-type]
    else:
        data = station_dict(job)
        check = preflight(job, db, station=data)
    if record_dir is not None:
        recording.check_new_folder(record_dir)
    name = check.station_name
    if resume is not None:
        verdict = run_liveness(db, resume)
        if verdict is not None and verdict.alive:
            raise StorageError(
                f"run {resume} is still running ({verdict.reason}); stop it first or wait"
            )
    took_over = acquire_station_lock(db, name)
    if took_over:
        log.warning("station %r: %s", name, took_over)
    run_id: int | None = None
    outcomes = [StepOutcome(s.label, s.kind) for s in job.steps]
    result = JobResult(0, "failed", outcomes, database=db.display_url, resumes=resume)
    handler: logging.Handler | None = None
    bench: Any = None
    station: Any = None
    stop = StopRequests(handle_signals, external=stop_check)
    try:
        chip = check.chip
        if chip.id is None:
            register_chip(db, chip.name, array_kind=chip.kind, n_rows=chip.rows, n_cols=chip.cols)
            chip = preflight(
                job, db, station=data, chip_shape=(chip.kind, chip.rows, chip.cols)
            ).chip
        config = {
            "job": job.name,
            "job_file": str(job.source.resolve()),
            "job_text": job.text,
            "output": str(job.output.resolve()),
            "state_file": str(job.bench.state_file.resolve())
            if job.bench is not None and job.bench.state_file is not None
            else None,
            "station": name,
            "steps": [{"kind": s.kind, **s.params} for s in job.steps],
        }
        config.update(extra_config or {})
        if record_dir is not None:
            config["recording"] = str(record_dir.resolve())
        if replay_dir is not None:
            config["replayed_from"] = str(replay_dir.resolve())
        if resume is not None:
            run_id = resume_run(db, resume)
        else:
            run_id = start_run(db, "job", config=config, chip_id=chip.id, seed=job.seed)
        result.run_id = run_id
        refresh_station_lock(db, name, run_id=run_id)
        if on_start is not None:
            on_start(run_id)
        result.run_dir = job.output / f"run-{run_id}"
        if log_to is not None:
            path = log_to(run_id)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                handler = logging.FileHandler(path, encoding="utf-8")
                # this job's lines only: another job of the same process (a queue worker's
                # thread) logs to its own file
                handler.addFilter(_ThreadFilter())
                handler.setFormatter(
                    logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
                )
                logging.getLogger("nvmlab").addHandler(handler)
                result.log_path = path
        log.info(
            "run %d: job %r (%s) on station %r, chip %r, %d steps%s",
            run_id, job.name, job.source, name, chip.name, len(job.steps),
            f", resuming run {resume}" if resume is not None else "",
        )  # fmt: skip
        with _heartbeats(db, run_id, name), stop.installed():
            if record_dir is not None:
                recording.prepare_recording(record_dir, job, data)
            station, bench = _open_station(job, name, record_dir, replay_dir)
            if record_dir is not None:
                recording.attach_clock_recorder(station, record_dir)
            clock_start = station.clock.now()
            try:
                station.open()
                guard = JobGuard(station, db, run_id, job.faults)
                if bench is not None:
                    # the emulated chip is saved before each unit's commit, not after every
                    # pulse: a kill inside a unit loses that unit's pulses from the chip (as
                    # if it had come before them), and the unit is redone on resume
                    bench.bench.save_on_write = False
                    guard.persist = bench.save_state
                _run_steps(job, station, db, chip, run_id, outcomes, guard, stop, progress, result)
                result.events = dict(guard.counts)
                result.status = "completed"
            finally:
                result.instrument_s = station.clock.now() - clock_start
    except KeyboardInterrupt:
        result.status = "aborted"
        result.message = (
            f"stopped: {stop.reason}" if stop.reason else "stopped by Ctrl-C or SIGTERM"
        ) + "; resume with 'nvmlab run --resume RUN'"
        _mark(outcomes, "aborted")
    except BaseException as exc:
        result.status = "failed"
        result.message = f"{type(exc).__name__}: {exc}"
        _mark(outcomes, "failed", result.message)
        if run_id is None:
            raise
        if not isinstance(exc, Exception):
            raise
    finally:
        stop.quiet = True
        failures = _close(station, bench, replay_dir)
        if bench is not None:
            result.applied_max_v = dict(bench.bench.max_applied_v)
            result.applied_max_a = dict(bench.bench.max_applied_a)
        if failures:
            result.message = (result.message or "") + "; NOT SAFE: " + "; ".join(failures)
            if result.status == "completed":
                result.status = "failed"
        if station is not None:
            recording.detach_clock_recorder(station)
        if record_dir is not None and run_id is not None and record_dir.is_dir():
            with contextlib.suppress(Exception):
                recording.finish_recording(
                    record_dir, run_id=run_id, job=job, status=result.status,
                    chip=(check.chip.name, check.chip.kind, check.chip.rows, check.chip.cols),
                )  # fmt: skip
        if run_id is not None:
            with contextlib.suppress(Exception):
                finish_run(db, run_id, result.status, result.message)
        with contextlib.suppress(Exception):
            release_station_lock(db, name)
        result.wall_s = time.perf_counter() - wall_start
        log.info(
            "run %s %s%s", run_id, result.status, f": {result.message}" if result.message else ""
        )
        if handler is not None:
            logging.getLogger("nvmlab").removeHandler(handler)
            handler.close()
    return result


class _ThreadFilter(logging.Filter):
    """Passes the records logged by the thread that made it (the job's thread)."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread


def _mark(outcomes: list[StepOutcome], status: str, message: str | None = None) -> None:
    for outcome in outcomes:
        if outcome.status == "running":
            outcome.status = status
            outcome.message = message


def _close(station: Any, bench: Any, replay_dir: Path | None) -> list[str]:
    failures: list[str] = []
    try:
        if station is not None:
            failures = station.close()
            if replay_dir is not None and station.replay_leftover is not None:
                failures.append(f"replay: {station.replay_leftover}")
    except Exception as exc:  # noqa: BLE001
        failures.append(str(exc))
    finally:
        if bench is not None:
            bench.close()
    return failures


@contextlib.contextmanager
def _heartbeats(db: Any, run_id: int, station_name: str) -> Iterator[None]:
    from nvmlab.storage.liveness import Heartbeat
    from nvmlab.storage.locks import refresh_station_lock
    from nvmlab.storage.runs import beat

    def refresh() -> None:
        with db.engine.begin() as conn:
            beat(conn, run_id)
        refresh_station_lock(db, station_name)

    with Heartbeat(refresh, name=f"nvmlab-job-run{run_id}"):
        yield


def _run_steps(
    job: JobFile,
    station: Any,
    db: Any,
    chip: Any,
    run_id: int,
    outcomes: list[StepOutcome],
    guard: JobGuard,
    stop: StopRequests,
    progress: ProgressFactory | None,
    result: JobResult,
) -> None:
    from nvmlab.storage.runs import completed_units
    from nvmlab.storage.writer import RecordWriter

    done = completed_units(db, run_id)
    for index, (step, outcome) in enumerate(zip(job.steps, outcomes, strict=True)):
        stop.check()
        prefix = f"{step.label}/"
        if prefix + STEP_DONE in done:
            outcome.status = "done earlier"
            outcome.summary = _stored_summary(db, run_id, prefix + STEP_DONE)
            _count_units(outcome, done, prefix)
            log.info("%s: completed in an earlier run of the chain; skipped", step.label)
            continue
        outcome.status = "running"
        log.info("%s: %s", step.label, step.step_kind.summary)
        callback = _StoredProgress(
            db, run_id, index, len(job.steps), step.label,
            progress(step) if progress is not None else None,
        )  # fmt: skip
        started_wall = time.perf_counter()
        started_clock = station.clock.now()
        context = StepContext(
            station=station,
            chip=chip.name,
            database=db,
            run_id=run_id,
            progress=callback,
            extras={"seed": job.seed, "run_dir": result.run_dir, "job": job, "step": step},
            unit_prefix=prefix,
            stop_check=stop.check,
            guard=guard,
        )
        try:
            # unset optional parameters stay unset (the step validates what it is given)
            given = {k: v for k, v in step.params.items() if v is not None}
            value = step.step_kind.run(context, given)
        finally:
            close = getattr(callback, "close", None)
            if close is not None:
                close()
        outcome.wall_s = time.perf_counter() - started_wall
        outcome.instrument_s = station.clock.now() - started_clock
        summary = dict(
            getattr(value, "summary", None) or (value if isinstance(value, dict) else {})
        )
        outcome.units_total = int(getattr(value, "units_total", 0) or 0)
        outcome.units_measured = int(getattr(value, "units_measured", 0) or 0)
        outcome.units_skipped = int(getattr(value, "units_skipped", 0) or 0)
        if "report_dir" in summary:
            result.report_dir = Path(summary["report_dir"])
        from nvmlab.characterization.sweep import jsonable

        outcome.summary = jsonable(summary)
        with (
            RecordWriter(db, run_id, chip_id=chip.id, clock=station.clock) as writer,
            writer.unit(prefix + STEP_DONE, kind=step.kind) as unit,
        ):
            unit.set_result(
                summary=outcome.summary,
                units_total=outcome.units_total,
                instrument_s=outcome.instrument_s,
            )
        outcome.status = "completed"
        log.info(
            "%s: completed, %d units (%d done earlier), instrument %.1f s, wall %.1f s",
            step.label, outcome.units_total, outcome.units_skipped, outcome.instrument_s,
            outcome.wall_s,
        )  # fmt: skip


class _StoredProgress:
    """A step's ``(done, total)`` callback that also stores the run's progress in the
    database (``run_progress``, for the run monitor) at most every ``interval_s``, with an
    ETA from this run's own rate, then passes the call on to ``inner`` (the console's)."""

    def __init__(
        self, db: Any, run_id: int, index: int, count: int, label: str, inner: Any,
        interval_s: float = 1.0,
    ) -> None:  # fmt: skip
        self.db, self.run_id, self.index, self.count, self.label = db, run_id, index, count, label
        self.inner = inner
        self.interval_s = interval_s
        self.start = time.monotonic()
        self.first_done: int | None = None
        self.last = -1e9
        self._store(0, 0, None)

    def _store(self, done: int, total: int, eta_s: float | None) -> None:
        from nvmlab.storage.runs import set_run_progress

        try:
            set_run_progress(
                self.db, self.run_id, step_index=self.index, step_count=self.count,
                step_label=self.label, units_done=done, units_total=total, eta_s=eta_s,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the monitor's view never fails a job
            log.debug("run %d: progress not stored: %s", self.run_id, exc)

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.first_done is None:
            # units done in earlier runs of the chain count for nothing in the rate
            self.first_done, self.start = done - 1, now
        if now - self.last >= self.interval_s or done >= total:
            self.last = now
            made, left = done - self.first_done, total - done
            eta = (now - self.start) / made * left if made > 0 and left > 0 else None
            self._store(done, total, 0.0 if left <= 0 else eta)
        if self.inner is not None:
            self.inner(done, total)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def _count_units(outcome: StepOutcome, done: set[str], prefix: str) -> None:
    n = sum(1 for key in done if key.startswith(prefix) and key != prefix + STEP_DONE)
    outcome.units_total = outcome.units_skipped = n


def _stored_summary(db: Any, run_id: int, key: str) -> dict[str, Any]:
    from nvmlab.storage.runs import unit_attempts

    for attempt in reversed(unit_attempts(db, run_id)):
        if attempt["unit_key"] == key and attempt["status"] == "completed":
            return dict((attempt.get("result") or {}).get("summary") or {})
    return {}


def default_log_path(job: JobFile) -> Callable[[int], Path]:
    """``<output>/run-<id>/job.log``."""
    return lambda run_id: job.output / f"run-{run_id}" / "job.log"


def format_duration(seconds: float) -> str:
    """``1 h 02 min``, ``3 min 05 s``, ``12.3 s``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{seconds:.1f} s"


def is_terminal() -> bool:
    import sys

    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


__all__ += ["default_log_path", "format_duration", "is_terminal", "station_name", "NvmlabError"]
