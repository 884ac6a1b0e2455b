"""The results database schema (SQLAlchemy 2.0 typed ORM).

Tables
------
``stations`` / ``instruments``
    A station and the identity of each instrument it used (role, make, model, serial,
    firmware, resource); one row per (station, role).
``chips``
    A chip under test: lot, wafer, die, array kind (``memristor`` or ``eflash``), rows,
    cols, notes. A *device* is identified everywhere by ``(chip_id, row, col)``.
``runs``
    One execution of a job, sweep or script: kind, configuration (JSON), status
    (``running``, ``completed``, ``failed``, ``aborted``), start and end, operator, host,
    nvmlab version, random seed, and ``resumes_run_id`` (the run this one resumes).
``units``
    One *attempt* at a unit of work (a device tuned, a temperature point, a sweep on one
    device). ``units.id`` is the **attempt id** carried by every record the attempt
    produced. ``unit_key`` names the unit (stable across attempts and resumed runs);
    ``status`` is ``running`` while in flight, ``completed`` when its result was committed
    (atomically, with the records it still had buffered), ``interrupted`` when the process
    died or was stopped inside it (records already flushed are kept, tagged with this
    attempt), or ``failed``. A resumed run redoes every unit with no completed attempt in
    the resume chain; ``chain_run_id`` (the chain's first run) and a partial unique index
    let the database hold at most one completed attempt per unit key and chain.
``pulses``, ``reads``
    Row per record, per device: pulse amplitude (V), width (s), polarity (+1/-1), bias
    scheme; read voltage (V), current (A), conductance (S), temperature (C), time (s).
``traces``
    I-V sweeps and noise time series: one row per trace with the samples as arrays.
``tuning_outcomes``
    Per device and attempt: target (S), final value (S), relative error, pulse count,
    status.
``device_parameters``
    Derived per-device parameters (thresholds, temperature coefficient, noise, defect
    class): one row per (device, run, name) with a numeric and/or text value and its unit.
``chamber_log``
    Chamber setpoint, air and chip temperatures (C) and alarm state over time.
``events``
    Warnings, faults and recoveries, with the run and attempt they happened in.
``station_locks``
    One job per station: the process holding a station, with its run.
``station_workers``, ``queue_jobs``, ``run_progress``
    The lab's queue (:mod:`nvmlab.jobs.queue`): stations and their workers, submitted jobs
    and their runs, and the live progress of each running job. On PostgreSQL the queue
    engine's own tables (``procrastinate_*``) live beside these, created by the same
    migrations.

Row-per-record or arrays
------------------------
The choice rests on costs that ``python -P -m nvmlab.storage.bench`` measures and prints
(ingest rates of the buffered writer beside a plain driver baseline measured in the same
run, the time of a per-device query, loading a run into a DataFrame, and a long trace
stored both ways). The goals are 100,000 rows/s on SQLite and 50,000 rows/s on
PostgreSQL, and a 1,000,000-read run loaded in under 2 s.

* Pulses and reads arrive one at a time from write-verify loops (1 to 50 per device per
  attempt) and are queried per device ("all reads of device (chip, 3, 4) above 50 uS at
  85 C"). Packing them into one blob per device would need a read-modify-write on every
  flush and a full decode in Python for such a query. Hence **pulses and reads are
  stored row per record**, queryable per device through the ``(chip_id, row, col)``
  index and per run through ``(run_id, attempt_id)``.
* An I-V sweep or a noise series (10^3 - 10^6 samples) is always written and read whole
  and its samples are never selected individually; one row per sample would multiply the
  table size by the sample count. Hence **traces store arrays**: little-endian float64
  bytes (``LargeBinary``), portable between SQLite and PostgreSQL and decoded with
  ``numpy.frombuffer`` without copying.

Times
-----
Runs and units carry wall-clock ``DateTime`` (UTC). Measurement records carry ``t_s``:
seconds on the run's clock (virtual on the emulated bench, wall on real hardware).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Constraint naming convention, so migrations name constraints identically on every engine.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: 64-bit keys on PostgreSQL; INTEGER PRIMARY KEY (the rowid alias) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

RUN_STATUSES = ("running", "completed", "failed", "aborted")
UNIT_STATUSES = ("running", "completed", "interrupted", "failed")
ARRAY_KINDS = ("memristor", "eflash")
EVENT_LEVELS = ("info", "warning", "fault", "recovery")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def utcnow() -> dt.datetime:
    """The current wall-clock time, timezone-aware UTC."""
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A wall-clock time stored as UTC and always returned timezone-aware in UTC.

    PostgreSQL stores ``timestamp with time zone``; SQLite stores text without a zone,
    so a time is converted to UTC before it is stored (an aware time in another zone
    keeps its instant) and read back with the UTC zone attached. A naive time is taken
    as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)  # type: ignore[no-any-return]
        return value.astimezone(dt.timezone.utc)  # type: ignore[no-any-return]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, dt.datetime: UTCDateTime()}


class Station(Base):
    __tablename__ = "stations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    host: Mapped[str | None] = mapped_column(String(200))
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Instrument(Base):
    """The identity of one instrument a station uses in one role (``*IDN?`` and resource)."""

    __tablename__ = "instruments"
    __table_args__ = (UniqueConstraint("station_id", "role"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(100))
    manufacturer: Mapped[str | None] = mapped_column(String(200))
    model: Mapped[str | None] = mapped_column(String(200))
    serial: Mapped[str | None] = mapped_column(String(200))
    firmware: Mapped[str | None] = mapped_column(String(200))
    resource: Mapped[str | None] = mapped_column(String(500))


class Chip(Base):
    __tablename__ = "chips"
    __table_args__ = (
        CheckConstraint(_in("array_kind", ARRAY_KINDS), name="array_kind"),
        CheckConstraint("n_rows > 0 AND n_cols > 0", name="positive_size"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    lot: Mapped[str | None] = mapped_column(String(100))
    wafer: Mapped[str | None] = mapped_column(String(100))
    die: Mapped[str | None] = mapped_column(String(100))
    array_kind: Mapped[str] = mapped_column(String(20))
    n_rows: Mapped[int] = mapped_column(Integer)
    n_cols: Mapped[int] = mapped_column(Integer)
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (CheckConstraint(_in("status", RUN_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="running")
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    chip_id: Mapped[int | None] = mapped_column(ForeignKey("chips.id"), index=True)
    station_id: Mapped[int | None] = mapped_column(ForeignKey("stations.id"), index=True)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[dt.datetime | None]
    operator: Mapped[str | None] = mapped_column(String(200))
    host: Mapped[str | None] = mapped_column(String(200))
    nvmlab_version: Mapped[str | None] = mapped_column(String(50))
    seed: Mapped[int | None] = mapped_column(BigInteger)
    #: The run this one resumes; unique, so a resume chain never branches.
    resumes_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id"), index=True, unique=True
    )
    message: Mapped[str | None] = mapped_column(Text)
    #: The process that runs it (liveness, :mod:`nvmlab.storage.liveness`): its id on
    #: ``host``, its start time (s since the Unix epoch) and its last heartbeat (UTC).
    pid: Mapped[int | None] = mapped_column(Integer)
    process_start_s: Mapped[float | None] = mapped_column(Float)
    heartbeat_at: Mapped[dt.datetime | None]


class Unit(Base):
    """One attempt at a unit of work; ``id`` is the attempt id carried by its records."""

    __tablename__ = "units"
    __table_args__ = (
        CheckConstraint(_in("status", UNIT_STATUSES), name="status"),
        UniqueConstraint("run_id", "unit_key", "attempt"),
        Index("ix_units_run_id_status", "run_id", "status"),
        # One completed attempt per unit key and resume chain, enforced by the database.
        Index(
            "uq_units_chain_completed",
            "chain_run_id",
            "unit_key",
            unique=True,
            sqlite_where=text("status = 'completed'"),
            postgresql_where=text("status = 'completed'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    #: The first run of ``run_id``'s resume chain (the chain's identity).
    chain_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    unit_key: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str | None] = mapped_column(String(100))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(20), default="running")
    chip_id: Mapped[int | None] = mapped_column(ForeignKey("chips.id"))
    row: Mapped[int | None] = mapped_column(Integer)
    col: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[dt.datetime | None]
    result: Mapped[dict[str, Any] | None]
    message: Mapped[str | None] = mapped_column(Text)


class DeviceRecord:
    """Columns of every per-device record: the run, the attempt (unit) that produced it,
    and the device ``(chip_id, row, col)``; ``sort_order`` keeps them first, as in the tables."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True, sort_order=-1)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), sort_order=-1)
    attempt_id: Mapped[int | None] = mapped_column(
        ForeignKey("units.id", ondelete="CASCADE"), sort_order=-1
    )
    chip_id: Mapped[int] = mapped_column(ForeignKey("chips.id"), sort_order=-1)
    row: Mapped[int] = mapped_column(Integer, sort_order=-1)
    col: Mapped[int] = mapped_column(Integer, sort_order=-1)


class Pulse(DeviceRecord, Base):
    """One programming pulse applied to one device (row per record)."""

    __tablename__ = "pulses"
    __table_args__ = (
        CheckConstraint("polarity IN (-1, 1)", name="polarity"),
        Index("ix_pulses_device", "chip_id", "row", "col"),
        Index("ix_pulses_run", "run_id", "attempt_id"),
    )

    t_s: Mapped[float] = mapped_column(Float)
    amplitude_v: Mapped[float] = mapped_column(Float)
    width_s: Mapped[float] = mapped_column(Float)
    polarity: Mapped[int] = mapped_column(SmallInteger)
    scheme: Mapped[str | None] = mapped_column(String(20))


class Read(DeviceRecord, Base):
    """One read of one device (row per record)."""

    __tablename__ = "reads"
    __table_args__ = (
        Index("ix_reads_device", "chip_id", "row", "col"),
        Index("ix_reads_run", "run_id", "attempt_id"),
    )

    t_s: Mapped[float] = mapped_column(Float)
    voltage_v: Mapped[float] = mapped_column(Float)
    current_a: Mapped[float] = mapped_column(Float)
    conductance_s: Mapped[float | None] = mapped_column(Float)
    temperature_c: Mapped[float | None] = mapped_column(Float)


class Trace(DeviceRecord, Base):
    """A sweep or time series on one device, samples stored as float64 arrays."""

    __tablename__ = "traces"
    __table_args__ = (
        Index("ix_traces_device", "chip_id", "row", "col"),
        Index("ix_traces_run", "run_id", "attempt_id"),
    )

    kind: Mapped[str] = mapped_column(String(50))
    t_s: Mapped[float] = mapped_column(Float)
    n_samples: Mapped[int] = mapped_column(Integer)
    x_name: Mapped[str] = mapped_column(String(50))
    y_name: Mapped[str] = mapped_column(String(50))
    x_data: Mapped[bytes] = mapped_column(LargeBinary)
    y_data: Mapped[bytes] = mapped_column(LargeBinary)
    temperature_c: Mapped[float | None] = mapped_column(Float)
    meta: Mapped[dict[str, Any] | None]


class TuningOutcome(DeviceRecord, Base):
    __tablename__ = "tuning_outcomes"
    __table_args__ = (
        Index("ix_tuning_outcomes_device", "chip_id", "row", "col"),
        Index("ix_tuning_outcomes_run", "run_id", "attempt_id"),
    )

    target_s: Mapped[float] = mapped_column(Float)
    final_s: Mapped[float | None] = mapped_column(Float)
    error_rel: Mapped[float | None] = mapped_column(Float)
    pulse_count: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(30))
    algorithm: Mapped[str | None] = mapped_column(String(100))


class DeviceParameter(DeviceRecord, Base):
    """A derived per-device parameter (threshold, temperature coefficient, noise, defect)."""

    __tablename__ = "device_parameters"
    __table_args__ = (
        Index("ix_device_parameters_device", "chip_id", "row", "col", "name"),
        Index("ix_device_parameters_run", "run_id"),
    )

    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float | None] = mapped_column(Float)
    text_value: Mapped[str | None] = mapped_column(String(200))
    unit: Mapped[str | None] = mapped_column(String(30))


class ChamberLogEntry(Base):
    __tablename__ = "chamber_log"
    __table_args__ = (Index("ix_chamber_log_run", "run_id", "t_s"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    station_id: Mapped[int | None] = mapped_column(ForeignKey("stations.id"))
    t_s: Mapped[float] = mapped_column(Float)
    setpoint_c: Mapped[float | None] = mapped_column(Float)
    air_c: Mapped[float | None] = mapped_column(Float)
    chip_c: Mapped[float | None] = mapped_column(Float)
    alarm: Mapped[str | None] = mapped_column(String(200))


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint(_in("level", EVENT_LEVELS), name="level"),
        Index("ix_events_run", "run_id", "t_s"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    attempt_id: Mapped[int | None] = mapped_column(ForeignKey("units.id", ondelete="CASCADE"))
    t_s: Mapped[float] = mapped_column(Float)
    level: Mapped[str] = mapped_column(String(20))
    source: Mapped[str | None] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None]


class ChipProfileRecord(Base):
    """A chip's typed profile (:class:`nvmlab.storage.profile.ChipProfile`): scalars as
    columns, the per-device arrays as one compressed NPZ blob."""

    __tablename__ = "chip_profiles"
    __table_args__ = (Index("ix_chip_profiles_chip", "chip_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    chip_id: Mapped[int] = mapped_column(ForeignKey("chips.id", ondelete="CASCADE"))
    #: The run (characterization) that produced it, if any.
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    safe_read_v: Mapped[float | None] = mapped_column(Float)
    amplitude_cap_half_select_v: Mapped[float | None] = mapped_column(Float)
    amplitude_cap_third_select_v: Mapped[float | None] = mapped_column(Float)
    arrays_npz: Mapped[bytes] = mapped_column(LargeBinary)
    meta: Mapped[dict[str, Any] | None]


class StationLock(Base):
    """One station, one job: the row of a station held by a job's process
    (:mod:`nvmlab.storage.locks`), judged alive or dead like a run's process."""

    __tablename__ = "station_locks"

    station: Mapped[str] = mapped_column(String(200), primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    host: Mapped[str | None] = mapped_column(String(200))
    pid: Mapped[int | None] = mapped_column(Integer)
    process_start_s: Mapped[float | None] = mapped_column(Float)
    acquired_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[dt.datetime | None]


class StationWorker(Base):
    """A station known to the lab's queue: what it serves (read from its board by its
    worker), its station file, and the worker serving it now (process, heartbeat, state
    ``idle``/``busy``/``stopped``, the queue job and run in flight) (:mod:`nvmlab.jobs.worker`)."""

    __tablename__ = "station_workers"

    station: Mapped[str] = mapped_column(String(200), primary_key=True)
    station_file: Mapped[str | None] = mapped_column(Text)
    #: The station file's content, so that a job submitted elsewhere is checked against it.
    station_text: Mapped[str | None] = mapped_column(Text)
    chip_kind: Mapped[str | None] = mapped_column(String(20))
    n_rows: Mapped[int | None] = mapped_column(Integer)
    n_cols: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20), default="stopped")
    queue_job_id: Mapped[int | None] = mapped_column(BigInteger)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    #: The procrastinate worker id of the live worker (None when stopped).
    engine_worker_id: Mapped[int | None] = mapped_column(BigInteger)
    host: Mapped[str | None] = mapped_column(String(200))
    pid: Mapped[int | None] = mapped_column(Integer)
    process_start_s: Mapped[float | None] = mapped_column(Float)
    heartbeat_at: Mapped[dt.datetime | None]
    registered_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]


class QueueJob(Base):
    """A job submitted to the lab's queue: the procrastinate job id, what was asked
    (``target``: a station's name, or ``any``), where it ran and its nvmlab runs (the first
    and the newest of its resume chain)."""

    __tablename__ = "queue_jobs"

    job_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    job_name: Mapped[str] = mapped_column(String(200))
    chip: Mapped[str] = mapped_column(String(200))
    job_file: Mapped[str | None] = mapped_column(Text)
    target: Mapped[str] = mapped_column(String(200))
    station: Mapped[str | None] = mapped_column(String(200))
    first_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    submitted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    submitted_by: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[dt.datetime | None]


class RunProgress(Base):
    """Where a running job is: its step (index of ``step_count``, label), the step's units
    done of total and the ETA (s), refreshed every second or so by the runner."""

    __tablename__ = "run_progress"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    step_index: Mapped[int] = mapped_column(Integer)
    step_count: Mapped[int] = mapped_column(Integer)
    step_label: Mapped[str] = mapped_column(String(200))
    units_done: Mapped[int] = mapped_column(Integer)
    units_total: Mapped[int] = mapped_column(Integer)
    eta_s: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


#: The per-device record tables, in the order export writes them.
RECORD_TABLES = (
    "pulses",
    "reads",
    "traces",
    "tuning_outcomes",
    "device_parameters",
    "chamber_log",
    "events",
)
