"""Several processes on one database, and a writer killed with SIGKILL mid-batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select, text

from nvmlab.storage import completed_units, load_pulses, open_database, resume_run
from nvmlab.storage.ingest import unit_attempts
from nvmlab.storage.models import Pulse, Read, Unit

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
SCRIPT = str(HERE / "writer_proc.py")


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-P", SCRIPT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(HERE),
    )


def test_two_processes_write_runs_at_the_same_time_without_losing_rows(db, tmp_path: Path) -> None:
    url = db.url.render_as_string(hide_password=False)
    go = tmp_path / "go"
    units, rows = 4, 3000
    procs = [_spawn("concurrent", url, str(go), label, str(units), str(rows)) for label in "AB"]
    for p in procs:
        line = p.stdout.readline() if p.stdout else ""
        assert line.strip() == "ready", (line, p.stderr.read() if p.stderr else "")
    go.touch()
    runs = []
    for p in procs:
        out, err = p.communicate(timeout=90)
        assert p.returncode == 0, err
        runs.append(int(out.split()[-1]))
    with db.read_connection() as conn:
        for run in runs:
            for model in (Pulse, Read):
                count = conn.execute(
                    select(func.count()).select_from(model).where(model.run_id == run)
                ).scalar_one()
                assert count == units * rows
            done = conn.execute(
                select(func.count()).where(Unit.run_id == run, Unit.status == "completed")
            ).scalar_one()
            assert done == units
        # The two writers really ran at the same time: their batches interleave.
        spans = [
            conn.execute(
                select(func.min(Pulse.id), func.max(Pulse.id)).where(Pulse.run_id == r)
            ).one()
            for r in runs
        ]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans


def test_writer_killed_mid_batch_leaves_a_consistent_database(db) -> None:
    url = db.url.render_as_string(hide_password=False)
    units, rows = 3, 60_000
    proc = _spawn("crash", url, str(units), str(rows))
    assert proc.stdout is not None
    run = int(proc.stdout.readline().split()[1])
    seen: list[str] = []
    while True:
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        seen.append(line.strip())
        if line.strip() == f"flushing {units - 1}":
            break
    time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # inside the last batch's transaction (or just after)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    completed_before_kill = {f"unit:{k}" for k in range(units - 1)}
    assert [s for s in seen if s.startswith("completed")] == [
        f"completed {k}" for k in range(units - 1)
    ]

    if db.dialect == "sqlite":
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
    else:
        with db.engine.connect() as conn:  # the server rolled the open transaction back
            assert conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'"
                     " AND datname = current_database()")
            ).scalar() == 0  # fmt: skip
    pulses = load_pulses(db, run)
    per_unit = pulses.groupby("amplitude_v").size().to_dict()
    # Every completed unit's batch is whole; the killed batch is all there or not at all.
    for k in range(units - 1):
        assert per_unit[float(k)] == rows
    assert per_unit.get(float(units - 1), 0) in (0, rows)

    new_run = resume_run(db, run)
    assert completed_units(db, new_run) == completed_before_kill
    last = [a for a in unit_attempts(db, new_run) if a["unit_key"] == f"unit:{units - 1}"]
    assert [a["status"] for a in last] == ["interrupted"]
    reopened = open_database(url)  # the database opens normally after the crash
    reopened.close()


def test_two_processes_recording_the_same_chip_get_the_same_id(db) -> None:
    """Another station records chip 'W9-D1' between our look-up and our insert (held open
    here in a second transaction): ensure_chip waits for it and returns its id."""
    import threading

    from sqlalchemy import insert

    from nvmlab.storage import ensure_chip
    from nvmlab.storage.models import Chip, utcnow

    other = db.engine.connect()
    other.begin()
    theirs = other.execute(
        insert(Chip)
        .values(name="W9-D1", array_kind="eflash", n_rows=8, n_cols=8, created_at=utcnow())
        .returning(Chip.id)
    ).scalar_one()
    ours: list[int] = []
    thread = threading.Thread(
        target=lambda: ours.append(
            ensure_chip(db, "W9-D1", array_kind="eflash", n_rows=8, n_cols=8)
        )
    )
    thread.start()
    if db.dialect == "postgresql":
        # Commit only once our insert really waits on their uncommitted row: the race path
        # (our look-up missed, our insert conflicts) is exercised, not left to a sleep.
        deadline = time.monotonic() + 60  # liveness only
        while time.monotonic() < deadline:
            with db.engine.connect() as probe:
                waiting = probe.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                         " AND wait_event_type = 'Lock'")
                ).scalar_one()  # fmt: skip
            if waiting:
                break
            time.sleep(0.01)
        assert waiting == 1, "our ensure_chip never waited on their uncommitted chip"
    else:
        time.sleep(0.3)  # SQLite: our transaction waits for their write lock
    other.commit()
    other.close()
    thread.join(timeout=30)
    assert ours == [theirs]
    with db.read_connection() as conn:
        assert conn.execute(select(func.count()).select_from(Chip)).scalar_one() == 1
