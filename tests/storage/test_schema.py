"""Schema, migrations and revision checks, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select, text

from nvmlab.errors import StorageError
from nvmlab.storage import (
    RecordWriter,
    ensure_chip,
    ensure_station,
    finish_run,
    load_records,
    load_traces,
    open_database,
    resume_run,
    start_run,
    upgrade_database,
)
from nvmlab.storage.database import head_revision
from nvmlab.storage.engine import create_engine_for
from nvmlab.storage.models import Base, Instrument, Run, Unit

ALL_TABLES = {
    "stations", "instruments", "chips", "runs", "units", "pulses", "reads", "traces",
    "tuning_outcomes", "device_parameters", "chamber_log", "events", "chip_profiles",
    "station_locks", "station_workers", "queue_jobs", "run_progress", "alembic_version",
}  # fmt: skip
#: The queue engine's own tables, on PostgreSQL only (procrastinate's schema, revision 0005).
QUEUE_ENGINE_TABLES = {
    "procrastinate_jobs", "procrastinate_workers", "procrastinate_events",
    "procrastinate_periodic_defers",
}  # fmt: skip


def _ours(name: str | None, type_: str, *_: object) -> bool:
    """compare_metadata looks at nvmlab's schema only, not at the queue engine's."""
    return not (type_ == "table" and name is not None and name.startswith("procrastinate_"))


def test_migration_from_empty_creates_the_models_schema(empty_url: str) -> None:
    before, after = upgrade_database(empty_url)
    assert (before, after) == ("", head_revision())
    engine = create_engine_for(empty_url)
    try:
        with engine.connect() as conn:
            engine_tables = QUEUE_ENGINE_TABLES if conn.dialect.name == "postgresql" else set()
            assert set(inspect(conn).get_table_names()) == ALL_TABLES | engine_tables
            # The shipped revision and the ORM models describe the same schema.
            diff = compare_metadata(
                MigrationContext.configure(
                    conn, opts={"compare_type": True, "include_name": _ours}
                ),
                Base.metadata,
            )
            assert diff == []
            indexes = {ix["name"] for ix in inspect(conn).get_indexes("reads")}
            assert {"ix_reads_device", "ix_reads_run"} <= indexes
    finally:
        engine.dispose()
    # A second upgrade is a no-op.
    assert upgrade_database(empty_url) == (head_revision(), head_revision())


def test_schema_round_trip_of_every_record_kind(db, chip) -> None:
    station = ensure_station(
        db,
        "bench-1",
        host="lab-pc-3",
        instruments={
            "smu": {"manufacturer": "KEITHLEY", "model": "2636B", "serial": "4420", "resource": "TCPIP::10.0.0.5::INSTR"},
            "chamber": {"manufacturer": "Espec", "model": "SU-262", "serial": "77"},
        },
    )  # fmt: skip
    # Swapping the SMU replaces the identity of the role, it does not add a second one.
    assert (
        ensure_station(db, "bench-1", instruments={"smu": {"model": "B2902A", "serial": "9"}})
        == station
    )
    config = {"targets_s": [1e-5, 5e-5], "scheme": "V/2", "nested": {"seed": 7}}
    run = start_run(
        db, "tune", config=config, chip_id=chip, station_id=station, seed=7, operator="ana"
    )
    trace_v = np.linspace(-1.5, 1.5, 301)
    trace_i = 1e-5 * np.sinh(trace_v) + 1e-12
    with RecordWriter(db, run, chip_id=chip, background=False) as w:
        with w.unit("tune:3,4", kind="tune", row=3, col=4) as unit:
            w.add_pulse(3, 4, 1.25, 1e-6, -1, "V/3", t_s=10.5)
            w.add_read(3, 4, 0.2, 9.87654321e-6, temperature_c=85.25, t_s=10.75)
            w.add_trace(
                3, 4, "iv", trace_v, trace_i, temperature_c=25.0, meta={"compliance_a": 1e-4}
            )
            w.add_tuning_outcome(
                3, 4, target_s=5e-5, final_s=4.96e-5, pulse_count=12, algorithm="adaptive"
            )
            w.add_device_parameter(3, 4, "set_threshold_v", 1.05, unit="V")
            w.add_device_parameter(3, 4, "defect_class", text_value="ok")
            unit.set_result(final_s=4.96e-5)
        w.add_chamber(setpoint_c=85.0, air_c=84.9, chip_c=83.7, t_s=11.0)
        w.add_event("recovery", "SMU reconnected", source="smu", details={"retries": 2}, t_s=12.0)
    finish_run(db, run, "completed")

    with db.read_connection() as conn:
        stored = conn.execute(select(Run.__table__).where(Run.id == run)).one()
        assert stored.config == config and stored.seed == 7 and stored.status == "completed"
        assert stored.operator == "ana" and stored.nvmlab_version and stored.ended_at is not None
        smu = conn.execute(select(Instrument.__table__).where(Instrument.role == "smu")).one()
        assert (smu.model, smu.serial, smu.manufacturer) == ("B2902A", "9", None)
        attempt = conn.execute(select(Unit.__table__)).one()
        assert (attempt.status, attempt.attempt, attempt.result) == (
            "completed",
            1,
            {"final_s": 4.96e-5},
        )

    pulses = load_records(db, "pulses", run)
    assert pulses.loc[0, ["row", "col", "amplitude_v", "width_s", "polarity", "scheme", "t_s"]].tolist() == [
        3, 4, 1.25, 1e-6, -1, "V/3", 10.5,
    ]  # fmt: skip
    assert pulses.loc[0, "attempt_id"] == attempt.id and pulses.loc[0, "chip_id"] == chip
    reads = load_records(db, "reads", run)
    assert reads.loc[0, "current_a"] == 9.87654321e-6  # exact float round trip
    assert reads.loc[0, "conductance_s"] == 9.87654321e-6 / 0.2
    assert reads.loc[0, "temperature_c"] == 85.25
    outcome = load_records(db, "tuning_outcomes", run).iloc[0]
    assert outcome["pulse_count"] == 12 and math.isclose(
        outcome["error_rel"], (4.96e-5 - 5e-5) / 5e-5
    )
    params = load_records(db, "device_parameters", run).set_index("name")
    assert (
        params.loc["set_threshold_v", "value"] == 1.05
        and params.loc["set_threshold_v", "unit"] == "V"
    )
    assert params.loc["defect_class", "text_value"] == "ok" and np.isnan(
        params.loc["defect_class", "value"]
    )
    chamber = load_records(db, "chamber_log", run).iloc[0]
    assert (chamber["setpoint_c"], chamber["air_c"], chamber["chip_c"]) == (85.0, 84.9, 83.7)
    event = load_records(db, "events", run).iloc[0]
    assert (event["level"], event["message"], event["source"]) == (
        "recovery",
        "SMU reconnected",
        "smu",
    )
    (trace,) = load_traces(db, run)
    assert np.array_equal(trace["x"], trace_v) and np.array_equal(trace["y"], trace_i)
    assert trace["meta"] == {"compliance_a": 1e-4} and trace["n_samples"] == 301


def test_constraints_hold_on_both_engines(db, chip) -> None:
    """Foreign keys and checks are enforced by the database itself (SQLite: PRAGMA on)."""
    run = start_run(db, "x", chip_id=chip)
    with (
        pytest.raises(StorageError, match="cannot insert a read of a missing run"),
        db.errors("insert a read of a missing run"),
        db.engine.begin() as conn,
    ):
        conn.execute(
            text(
                'INSERT INTO reads (run_id, chip_id, "row", col, t_s, voltage_v, current_a)'
                " VALUES (:r, :c, 0, 0, 0, 0.2, 1e-6)"
            ),
            {"r": run + 1000, "c": chip},
        )
    with pytest.raises(StorageError, match="array_kind 'sram'"):
        ensure_chip(db, "bad", array_kind="sram", n_rows=4, n_cols=4)
    with pytest.raises(StorageError, match="registered as memristor 16 x 16"):
        ensure_chip(db, "W07-D12", array_kind="eflash", n_rows=16, n_cols=16)


def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'lab.sqlite'}")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    db.close()


def test_older_revision_asks_for_upgrade_then_upgrades(empty_url: str, at_first_revision) -> None:
    """A database of nvmlab's first release (revision 0001) holding a resume chain."""
    runs = at_first_revision(empty_url)
    with pytest.raises(StorageError) as info:
        open_database(empty_url)
    message = str(info.value)
    assert f"schema revision 0001, this nvmlab needs {head_revision()}" in message
    assert "nvmlab db upgrade --db" in message
    assert upgrade_database(empty_url) == ("0001", head_revision())
    db = open_database(empty_url)
    with db.read_connection() as conn:
        kept = conn.execute(select(Unit.run_id, Unit.unit_key, Unit.status, Unit.chain_run_id))
        assert sorted(kept) == [
            (runs["root"], "a", "completed", runs["root"]),
            (runs["root"], "b", "interrupted", runs["root"]),
            (runs["resumed"], "b", "completed", runs["root"]),  # chain filled in from runs
        ]
    # The upgraded database enforces what 0002 adds: one completed attempt per chain.
    twice = "uq_units_chain_completed|UNIQUE constraint"
    with (
        pytest.raises(StorageError, match=twice),
        db.errors("complete unit b twice"),
        db.engine.begin() as conn,
    ):
        conn.execute(
            text(
                "INSERT INTO units (run_id, chain_run_id, unit_key, attempt, status, "
                "started_at) VALUES (2, 1, 'b', 3, 'completed', CURRENT_TIMESTAMP)"
            )
        )
    with pytest.raises(StorageError, match="was already resumed by run 2"):
        resume_run(db, runs["root"])
    # The database meets an nvmlab older than its schema.
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9001'"))
    db.close()
    with pytest.raises(
        StorageError, match=r"revision 9001, newer than this nvmlab.*upgrade nvmlab"
    ):
        open_database(empty_url)


def test_foreign_or_empty_databases_give_a_clear_message(empty_url: str) -> None:
    if empty_url.startswith("sqlite"):
        path = Path(empty_url.removeprefix("sqlite:///"))
        with pytest.raises(StorageError, match=r"does not exist\); .*'nvmlab db upgrade --db"):
            open_database(empty_url, create=False)
        assert not path.exists()  # a read-only tool creates nothing
    engine = create_engine(empty_url)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    with pytest.raises(StorageError, match="holds no nvmlab schema yet; run 'nvmlab db upgrade"):
        open_database(empty_url, create=False)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE measurements (id INTEGER PRIMARY KEY, value REAL)"))
    engine.dispose()
    with pytest.raises(
        StorageError, match="holds tables but no nvmlab schema revision; run 'nvmlab db upgrade"
    ):
        open_database(empty_url)


def test_downgrade_to_0001_and_back_keeps_every_record(db, chip) -> None:
    """0002 rebuilds no table (a SQLite rebuild of units would cascade-delete records)."""
    from alembic import command

    from nvmlab.storage.database import _alembic_config
    from nvmlab.storage.ingest import unit_attempts

    run = start_run(db, "tune", chip_id=chip)
    with RecordWriter(db, run, chip_id=chip, background=False) as w, w.unit("tune:1,1"):
        w.add_pulse(1, 1, 1.0, 1e-6)
        w.add_read(1, 1, 0.2, 1e-6)

    def migrate(target: str) -> None:
        with db.engine.begin() as conn:
            config = _alembic_config()
            config.attributes["connection"] = conn
            (command.downgrade if target == "0001" else command.upgrade)(config, target)

    migrate("0001")
    migrate("head")
    with db.read_connection() as conn:
        for table in ("pulses", "reads", "units"):
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 1
    assert [(a["unit_key"], a["chain_run_id"]) for a in unit_attempts(db, run)] == [
        ("tune:1,1", run)
    ]


def test_0003_adds_liveness_and_chip_profiles_and_downgrades_keeping_records(db, chip) -> None:
    """0003 adds runs.pid / process_start_s / heartbeat_at and the chip_profiles table;
    its downgrade removes them and keeps every record (no table is rebuilt)."""
    from alembic import command

    from nvmlab.storage.database import _alembic_config
    from nvmlab.storage.runs import run_liveness

    run = start_run(db, "tune", chip_id=chip)
    with RecordWriter(db, run, chip_id=chip, background=False) as w, w.unit("tune:2,2"):
        w.add_read(2, 2, 0.2, 1e-6)

    def migrate(target: str) -> None:
        with db.engine.begin() as conn:
            config = _alembic_config()
            config.attributes["connection"] = conn
            (command.downgrade if target == "0002" else command.upgrade)(config, target)

    def run_columns() -> set[str]:
        with db.read_connection() as conn:
            return {c["name"] for c in inspect(conn).get_columns("runs")}

    def tables() -> set[str]:
        with db.read_connection() as conn:
            return set(inspect(conn).get_table_names())

    liveness = {"pid", "process_start_s", "heartbeat_at"}
    assert liveness <= run_columns() and "chip_profiles" in tables()
    migrate("0002")
    assert not liveness & run_columns() and "chip_profiles" not in tables()
    with db.read_connection() as conn:
        for table in ("runs", "units", "reads"):
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 1
    migrate("head")
    assert liveness <= run_columns() and "chip_profiles" in tables()
    # The run stored by 0002 carries no liveness: still running, it is shown as dead.
    verdict = run_liveness(db, run)
    assert verdict is not None and not verdict.alive
    with db.read_connection() as conn:
        assert conn.execute(text("SELECT count(*) FROM reads")).scalar() == 1


def test_0004_adds_the_station_lock_table_and_downgrades_keeping_records(db, chip) -> None:
    """0004 adds station_locks (one row per station held by a job); its downgrade drops
    only that table."""
    from alembic import command

    from nvmlab.storage.database import _alembic_config
    from nvmlab.storage.locks import acquire_station_lock, station_lock_holder

    run = start_run(db, "job", chip_id=chip)
    acquire_station_lock(db, "bench-7", run_id=run)

    def migrate(target: str) -> None:
        with db.engine.begin() as conn:
            config = _alembic_config()
            config.attributes["connection"] = conn
            (command.downgrade if target == "0003" else command.upgrade)(config, target)

    def tables() -> set[str]:
        with db.read_connection() as conn:
            return set(inspect(conn).get_table_names())

    assert "station_locks" in tables()
    migrate("0003")
    assert "station_locks" not in tables()
    with db.read_connection() as conn:
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar() == 1
    migrate("head")
    assert "station_locks" in tables() and station_lock_holder(db, "bench-7") is None


def test_0005_adds_the_queue_and_on_postgresql_the_engine_schema_and_downgrades(db, chip) -> None:
    """0005 adds station_workers, queue_jobs and run_progress and, on PostgreSQL only,
    procrastinate's schema (tables, types, functions); its downgrade removes exactly those
    and keeps every record; upgrading again restores them."""
    from alembic import command

    from nvmlab.storage.database import _alembic_config

    run = start_run(db, "job", chip_id=chip)
    postgres = db.engine.dialect.name == "postgresql"

    def migrate(target: str) -> None:
        with db.engine.begin() as conn:
            config = _alembic_config()
            config.attributes["connection"] = conn
            (command.downgrade if target == "0004" else command.upgrade)(config, target)

    def tables() -> set[str]:
        with db.read_connection() as conn:
            return set(inspect(conn).get_table_names())

    def engine_functions() -> int:
        with db.read_connection() as conn:
            return int(conn.execute(text(
                "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate%'"
            )).scalar_one())  # fmt: skip

    queue = {"station_workers", "queue_jobs", "run_progress"}
    assert queue <= tables()
    assert (tables() >= QUEUE_ENGINE_TABLES) == postgres
    if postgres:
        assert engine_functions() > 10
    migrate("0004")
    assert not (queue | QUEUE_ENGINE_TABLES) & tables()
    if postgres:
        assert engine_functions() == 0
    with db.read_connection() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM runs WHERE id = :r"), {"r": run}).scalar() == 1
        )
    migrate("head")
    assert queue <= tables() and (tables() >= QUEUE_ENGINE_TABLES) == postgres
