"""Liveness: a run whose process is gone is shown as dead, not ``running`` forever, and
``nvmlab runs --mark-aborted RUN`` ends it so that it can be resumed."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from nvmlab.cli import main
from nvmlab.errors import StorageError
from nvmlab.storage import RecordWriter, completed_units, resume_run, start_run
from nvmlab.storage.ingest import unit_attempts
from nvmlab.storage.liveness import (
    STALE_AFTER_S,
    Heartbeat,
    Owner,
    database_now,
    judge,
    pid_alive,
    process_start_time,
    this_host,
)
from nvmlab.storage.models import Run
from nvmlab.storage.runs import keep_alive, mark_aborted, run_liveness

HERE = Path(__file__).resolve().parent


def _runs_table(capsys: pytest.CaptureFixture[str], url: str) -> dict[str, list[str]]:
    assert main(["runs", "--db", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    return {line.split()[0]: line.split() for line in lines[1:] if line.split()[0].isdigit()}


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_a_sigkilled_run_is_dead_then_marked_aborted_and_resumed(
    db, capsys: pytest.CaptureFixture[str]
) -> None:
    url = db.url.render_as_string(hide_password=False)
    proc = subprocess.Popen(
        [sys.executable, "-P", str(HERE / "writer_proc.py"), "hold", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("run "), proc.stderr.read() if proc.stderr else line
        run = int(line.split()[1])
        # Alive: listed as running, and --mark-aborted refuses it.
        assert _runs_table(capsys, url)[str(run)][2] == "running"
        assert main(["runs", "--mark-aborted", str(run), "--db", url]) == 1
        refused = _one_error_line(capsys)
        assert refused == (
            f"nvmlab: error: run {run} is alive (process {proc.pid} on host {this_host()} is "
            f"running); refusing to mark it aborted. Stop that process first (Ctrl-C), or "
            "wait for it to finish"
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    # Gone: listed as dead, with what to do.
    assert _runs_table(capsys, url)[str(run)][2] == "dead"
    assert main(["runs", "--db", url]) == 0
    assert (
        f"run {run} is dead: process {proc.pid} on host {this_host()} is gone; "
        f"'nvmlab runs --mark-aborted {run}' ends it so that it can be resumed"
    ) in capsys.readouterr().out.splitlines()
    assert [a["status"] for a in unit_attempts(db, run)] == ["completed", "running"]

    assert main(["runs", "--mark-aborted", str(run), "--db", url]) == 0
    assert capsys.readouterr().out.strip() == (
        f"run {run} marked aborted (1 unit attempt(s) left running marked interrupted); "
        "it can now be resumed"
    )
    assert _runs_table(capsys, url)[str(run)][2] == "aborted"
    assert [a["status"] for a in unit_attempts(db, run)] == ["completed", "interrupted"]
    assert run_liveness(db, run) is None  # ended: nothing to judge
    assert main(["runs", "--mark-aborted", str(run), "--db", url]) == 1
    assert "is aborted, not running" in _one_error_line(capsys)

    # Resumed: the completed unit is not redone, the interrupted one is.
    resumed = resume_run(db, run)
    assert completed_units(db, resumed) == {"done"}
    with RecordWriter(db, resumed, background=False) as w, w.unit("open"):
        pass
    assert completed_units(db, resumed) == {"done", "open"}
    assert _runs_table(capsys, url)[str(resumed)][2] == "running"  # this process: alive


def test_a_run_killed_before_any_record_is_dead_not_running(
    db, capsys: pytest.CaptureFixture[str]
) -> None:
    """start_run itself records the owner (host, pid, start time, heartbeat): a process
    SIGKILLed right after committing its run, before its writer flushed anything, leaves
    a run that ``nvmlab runs`` shows as dead, and that can be marked aborted."""
    url = db.url.render_as_string(hide_password=False)
    proc = subprocess.Popen(
        [sys.executable, "-P", str(HERE / "writer_proc.py"), "started", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("run "), proc.stderr.read() if proc.stderr else line
        run = int(line.split()[1])
        with db.read_connection() as conn:
            owner = conn.execute(
                select(Run.host, Run.pid, Run.process_start_s).where(Run.id == run)
            ).one()
        assert (owner.host, owner.pid) == (this_host(), proc.pid)
        assert owner.process_start_s == pytest.approx(process_start_time(proc.pid), abs=1.0)
        assert _runs_table(capsys, url)[str(run)][2] == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert _runs_table(capsys, url)[str(run)][2] == "dead"
    assert main(["runs", "--mark-aborted", str(run), "--db", url]) == 0
    assert capsys.readouterr().out.startswith(f"run {run} marked aborted (0 unit attempt(s)")


def _set_owner(db, run: int, **values: object) -> None:
    with db.engine.begin() as conn:
        conn.execute(update(Run).where(Run.id == run).values(**values))


def _db_now(db) -> dt.datetime:
    with db.read_connection() as conn:
        return conn.execute(select(database_now(db.dialect))).scalar_one()


def test_a_reused_pid_is_told_apart_by_its_start_time(db) -> None:
    """Same host, the pid names a live process, but one started at another time."""
    run = start_run(db, "reused")
    verdict = run_liveness(db, run)
    assert verdict is not None and verdict.alive
    started = process_start_time(os.getpid())
    assert started is not None
    _set_owner(db, run, process_start_s=started - 3600.0)
    verdict = run_liveness(db, run)
    assert verdict is not None and not verdict.alive
    assert verdict.reason == (
        f"process {os.getpid()} on host {this_host()} is gone (pid {os.getpid()} now "
        "belongs to another process)"
    )
    assert mark_aborted(db, run) == 0


def test_a_run_on_another_host_is_judged_by_its_heartbeat(db) -> None:
    run = start_run(db, "remote")
    now = _db_now(db)
    _set_owner(db, run, host="other-host", heartbeat_at=now - dt.timedelta(seconds=10))
    verdict = run_liveness(db, run)
    assert verdict is not None and verdict.alive, verdict
    with pytest.raises(StorageError, match=rf"run {run} is alive \(host other-host .*heartbeat"):
        mark_aborted(db, run)
    _set_owner(db, run, heartbeat_at=now - dt.timedelta(seconds=STALE_AFTER_S + 5))
    verdict = run_liveness(db, run)
    assert verdict is not None and not verdict.alive
    assert verdict.reason.startswith(f"no heartbeat from host other-host (pid {os.getpid()}) for")
    assert verdict.reason.endswith(f"s (timeout {STALE_AFTER_S:.0f} s)")
    assert mark_aborted(db, run) == 0


def test_a_running_run_stored_without_liveness_is_dead(db) -> None:
    """A run recorded before revision 0003 (no pid, no heartbeat) is not running forever."""
    run = start_run(db, "old")
    _set_owner(db, run, pid=None, process_start_s=None, heartbeat_at=None)
    verdict = run_liveness(db, run)
    assert verdict is not None and not verdict.alive
    assert "no process or heartbeat recorded" in verdict.reason


def test_the_writer_refreshes_the_heartbeat_from_its_own_thread(
    db, chip, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No wall-clock threshold: the heartbeat must advance, from the writer's thread."""
    threads: list[str] = []
    original = RecordWriter._beat

    def spy(self, conn) -> None:  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        original(self, conn)

    monkeypatch.setattr(RecordWriter, "_beat", spy)
    run = start_run(db, "beating", chip_id=chip)
    with db.read_connection() as conn:
        first = conn.execute(select(Run.heartbeat_at).where(Run.id == run)).scalar_one()
    seen = {first}
    with RecordWriter(db, run, chip_id=chip, flush_interval_s=0.02, heartbeat_interval_s=0.05):
        deadline = time.monotonic() + 60
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            with db.read_connection() as conn:
                seen.add(conn.execute(select(Run.heartbeat_at).where(Run.id == run)).scalar_one())
    assert len(seen) >= 3 and max(seen) > first
    assert set(threads[:2]) == {f"nvmlab-writer-run{run}"}


def test_keep_alive_refreshes_a_run_without_a_writer(db) -> None:
    run = start_run(db, "no-writer")
    with db.read_connection() as conn:
        first = conn.execute(select(Run.heartbeat_at).where(Run.id == run)).scalar_one()
    with keep_alive(db, run, interval_s=0.02) as heartbeat:
        deadline = time.monotonic() + 60
        while heartbeat.beats < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert heartbeat.error is None and heartbeat.beats >= 3
    with db.read_connection() as conn:
        assert conn.execute(select(Run.heartbeat_at).where(Run.id == run)).scalar_one() > first


def test_liveness_primitives() -> None:
    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = process_start_time(child.pid)
    child.wait()
    assert not pid_alive(child.pid)  # reaped: no such process
    assert process_start_time(child.pid) is None
    mine = process_start_time(os.getpid())
    assert mine is not None and started is not None and mine <= started
    owner = Owner.current()
    assert (owner.host, owner.pid) == (this_host(), os.getpid())
    now = dt.datetime.now(dt.timezone.utc)
    assert judge(owner, now=now).alive
    gone = Owner(this_host(), child.pid, started)
    assert judge(gone, now=now).reason == f"process {child.pid} on host {this_host()} is gone"


def test_a_heartbeat_keeps_beating_through_errors() -> None:
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("database briefly unreachable")

    with Heartbeat(flaky, interval_s=0.01) as heartbeat:
        deadline = time.monotonic() + 60
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert isinstance(heartbeat.error, OSError) and len(calls) >= 3
    with pytest.raises(ValueError, match="interval_s = 0; must be > 0 s"):
        Heartbeat(flaky, interval_s=0)
