"""The buffered writer and units: what is flushed, when, and what resume sees."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from nvmlab.clock import VirtualClock
from nvmlab.errors import StorageError
from nvmlab.storage import (
    RecordWriter,
    completed_units,
    finish_run,
    load_pulses,
    load_reads,
    mark_interrupted,
    resume_run,
    start_run,
)
from nvmlab.storage.ingest import unit_attempts
from nvmlab.storage.models import Pulse, Read, Run, Unit


def _count(db, model, **where) -> int:
    with db.read_connection() as conn:
        query = select(func.count()).select_from(model)
        for key, value in where.items():
            query = query.where(getattr(model, key) == value)
        return int(conn.execute(query).scalar_one())


def test_records_reach_the_database_within_a_second_without_flush(
    db, chip, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The measurement loop only appends to memory: every database write happens on the
    writer's own thread, which commits the records after the 1 s flush interval without a
    flush() or close(). No wall-clock threshold: the thread doing the writes is checked."""
    writing_threads: list[str] = []
    insert = RecordWriter._insert

    def spy(self, conn, table, rows) -> None:  # type: ignore[no-untyped-def]
        writing_threads.append(threading.current_thread().name)
        insert(self, conn, table, rows)

    monkeypatch.setattr(RecordWriter, "_insert", spy)
    run = start_run(db, "read-map", chip_id=chip)
    writer = RecordWriter(db, run, chip_id=chip, flush_interval_s=1.0)
    try:
        for r in range(16):
            for c in range(16):
                writer.add_read(r, c, 0.2, 1e-6 * (1 + r + c))
        deadline = time.monotonic() + 60  # liveness only; the flush is due after 1 s
        while _count(db, Read, run_id=run) < 256 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _count(db, Read, run_id=run) == 256
        assert writer.rows_written == 256
        # the measurement loop never waited on the database
        assert writing_threads and set(writing_threads) == {f"nvmlab-writer-run{run}"}
    finally:
        writer.close()


def test_a_full_batch_is_flushed_at_once(db, chip) -> None:
    run = start_run(db, "pulses", chip_id=chip)
    # An hour-long interval: rows seen within the minute were flushed by the full batch.
    with RecordWriter(db, run, chip_id=chip, flush_interval_s=3600, batch_rows=100) as w:
        for i in range(100):
            w.add_pulse(i % 16, 0, 1.0, 1e-6)
        deadline = time.monotonic() + 60
        while _count(db, Pulse, run_id=run) < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _count(db, Pulse, run_id=run) == 100
        assert w.batches_written == 1


def test_unit_result_is_committed_atomically_with_its_records(db, chip) -> None:
    run = start_run(db, "tune", chip_id=chip)
    clock = VirtualClock(start_s=100.0)
    with RecordWriter(
        db, run, chip_id=chip, background=False, flush_interval_s=3600, clock=clock
    ) as w:
        with w.unit("tune:2,5", kind="tune", row=2, col=5) as unit:
            for k in range(7):
                w.add_pulse(2, 5, 1.0 + 0.05 * k, 1e-6)
                clock.sleep(1e-3)
                w.add_read(2, 5, 0.2, 2e-6 * (k + 1))
            w.add_tuning_outcome(2, 5, target_s=7e-5, final_s=7.0e-5, pulse_count=7)
            # Nothing of the unit is visible before it completes, except its running attempt.
            assert _count(db, Pulse, run_id=run) == 0
            with db.read_connection() as conn:
                assert (
                    conn.execute(select(Unit.status).where(Unit.id == unit.id)).scalar()
                    == "running"
                )
        assert unit.status == "completed"
        assert _count(db, Pulse, attempt_id=unit.id) == 7
        assert _count(db, Read, attempt_id=unit.id) == 7
        # Times come from the run's clock (virtual here): pulse k at 100 + k ms, read after it.
        assert load_pulses(db, run)["t_s"].iloc[0] == 100.0
        assert load_reads(db, run)["t_s"].iloc[-1] == pytest.approx(100.007)
    assert completed_units(db, run) == {"tune:2,5"}


@pytest.mark.parametrize(
    ("exc_type", "status"), [(KeyboardInterrupt, "interrupted"), (RuntimeError, "failed")]
)
def test_an_interrupted_unit_keeps_its_applied_pulses(db, chip, exc_type, status) -> None:
    run = start_run(db, "tune", chip_id=chip)
    with RecordWriter(db, run, chip_id=chip, background=False) as w:
        with w.unit("tune:0,0"):
            w.add_pulse(0, 0, 1.2, 1e-6)
            w.add_read(0, 0, 0.2, 3e-6)
        with pytest.raises(exc_type), w.unit("tune:0,1") as unit:
            w.add_pulse(0, 1, 1.2, 1e-6)
            w.add_pulse(0, 1, 1.3, 1e-6)
            raise exc_type("operator pressed Ctrl-C")
    pulses = load_pulses(db, run, attempt_id=unit.id)
    assert pulses["amplitude_v"].tolist() == [1.2, 1.3]  # really applied: kept
    attempts = {a["unit_key"]: a for a in unit_attempts(db, run)}
    assert attempts["tune:0,1"]["status"] == status
    assert completed_units(db, run) == {"tune:0,0"}


def test_resume_after_a_killed_process_redoes_only_unfinished_units(db, chip) -> None:
    run = start_run(db, "tune", chip_id=chip, seed=11, config={"target_s": 5e-5})
    w = RecordWriter(db, run, chip_id=chip, background=False)
    for col in range(3):
        with w.unit(f"tune:0,{col}"):
            w.add_pulse(0, col, 1.0, 1e-6)
    # The process dies inside the 4th unit: its attempt stays "running", pulses flushed.
    doomed = w.unit("tune:0,3")
    doomed.__enter__()
    w.add_pulse(0, 3, 1.0, 1e-6)
    w.flush()
    del w, doomed  # no close, no exit: as after kill -9

    new_run = resume_run(db, run)
    with db.read_connection() as conn:
        old = conn.execute(select(Run.status, Run.seed).where(Run.id == run)).one()
        new = conn.execute(select(Run.__table__).where(Run.id == new_run)).one()
    assert old.status == "aborted"
    assert (new.resumes_run_id, new.seed, new.config, new.status) == (
        run,
        11,
        {"target_s": 5e-5},
        "running",
    )
    done = completed_units(db, new_run)
    assert done == {"tune:0,0", "tune:0,1", "tune:0,2"}
    statuses = {a["unit_key"]: a["status"] for a in unit_attempts(db, new_run)}
    assert statuses["tune:0,3"] == "interrupted"
    assert _count(db, Pulse, run_id=run) == 4  # the interrupted attempt's pulse is kept

    with RecordWriter(db, new_run, chip_id=chip, background=False) as w2:
        for col in range(4):
            if f"tune:0,{col}" in done:
                continue
            with w2.unit(f"tune:0,{col}") as unit:
                w2.add_pulse(0, col, 1.1, 1e-6)
    assert unit.attempt == 2  # second attempt at the unit across the resume chain
    finish_run(db, new_run, "completed")
    assert completed_units(db, new_run) == {f"tune:0,{c}" for c in range(4)}
    attempts = [a for a in unit_attempts(db, new_run) if a["unit_key"] == "tune:0,3"]
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, "interrupted"), (2, "completed")]
    assert mark_interrupted(db, new_run) == 0


def test_bad_records_are_refused_when_added_and_nothing_else_is_lost(db, chip) -> None:
    run = start_run(db, "tune", chip_id=chip)
    with RecordWriter(db, run, chip_id=chip, background=False) as w:
        w.add_pulse(1, 1, 1.0, 1e-6)
        with pytest.raises(StorageError, match=r"polarity 0; allowed: \+1 or -1"):
            w.add_pulse(1, 1, 1.0, 1e-6, polarity=0)
        with pytest.raises(
            StorageError, match="voltage_v = nan; a stored voltage_v must be a finite"
        ):
            w.add_read(1, 1, float("nan"), 1e-6)
        with pytest.raises(
            StorageError, match=r"device \(16, 0\) is outside chip .* allowed rows 0..15"
        ):
            w.add_read(16, 0, 0.2, 1e-6)
        with pytest.raises(StorageError, match="event level 'panic'"):
            w.add_event("panic", "x")
        with pytest.raises(StorageError, match=r"chips \[.*\] in one add_records call"):
            w.add_records("reads", {"chip_id": [chip, chip + 1], "row": [0, 15], "col": [0, 15],
                                    "voltage_v": [0.2, 0.2], "current_a": [1e-6, 1e-6]})  # fmt: skip
        w.add_read(1, 1, 0.2, 1e-6)
    assert _count(db, Pulse, run_id=run) == 1 and _count(db, Read, run_id=run) == 1


def test_records_only_go_to_a_running_run(db, chip) -> None:
    run = start_run(db, "tune", chip_id=chip)
    finish_run(db, run, "completed")
    with pytest.raises(StorageError, match="run .* is completed; records go only to a running run"):
        RecordWriter(db, run, chip_id=chip)
    with pytest.raises(StorageError, match="no run 999999 in database"):
        RecordWriter(db, 999999, chip_id=chip)
    with pytest.raises(
        StorageError, match="final status 'done'; allowed: completed, failed, aborted"
    ):
        finish_run(db, run, "done")


def test_a_unit_is_completed_once_per_resume_chain(db, chip) -> None:
    run = start_run(db, "tune", chip_id=chip)
    with RecordWriter(db, run, chip_id=chip, background=False) as w:
        with w.unit("tune:0,0"):
            w.add_pulse(0, 0, 1.0, 1e-6)
        refused = r"unit 'tune:0,0' was already completed \(run"
        with pytest.raises(StorageError, match=refused), w.unit("tune:0,0"):
            w.add_pulse(0, 0, 1.0, 1e-6)  # never reached: refused before any record
    assert _count(db, Unit, unit_key="tune:0,0") == 1 and _count(db, Pulse, run_id=run) == 1

    resumed = resume_run(db, run)
    with pytest.raises(StorageError, match=f"run {run} was already resumed by run {resumed}"):
        resume_run(db, run)  # a second resumer would branch the chain
    first = RecordWriter(db, resumed, chip_id=chip, background=False)
    with (
        pytest.raises(StorageError, match="'tune:0,0' was already completed"),
        first.unit("tune:0,0"),
    ):
        pass
    # Two writers on the chain race for one unit (two copies of a job started by mistake):
    # the second to finish keeps its measured pulse but its attempt is marked failed.
    second = RecordWriter(db, resumed, chip_id=chip, background=False)
    raced = "'tune:0,1' was already completed"
    with pytest.raises(StorageError, match=raced), first.unit("tune:0,1") as slow:
        first.add_pulse(0, 1, 1.1, 1e-6)
        with second.unit("tune:0,1"):
            second.add_pulse(0, 1, 1.2, 1e-6)
    assert slow.status == "failed"
    attempts = [(a["attempt"], a["status"]) for a in unit_attempts(db, resumed)
                if a["unit_key"] == "tune:0,1"]  # fmt: skip
    assert sorted(attempts) == [(1, "failed"), (2, "completed")]
    assert sorted(load_pulses(db, resumed)["amplitude_v"]) == [1.1, 1.2]
    first.close()
    second.close()
