"""Acceptance walkthrough of ``nvmlab demo``: refused settings store nothing, Ctrl-C keeps
the rows read so far in a run marked aborted and leaves the SMU output off."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from nvmlab.cli import main
from nvmlab.mocks import emulated as emulated_module
from nvmlab.storage.database import open_database
from nvmlab.storage.ingest import RecordWriter

NVMLAB = Path(sys.executable).with_name("nvmlab")


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--read-voltage", "0", "--read-voltage"),
        ("--read-voltage", "50", "--read-voltage 50 V exceeds the station's read limit"),
        ("--compliance", "5", "--compliance 5 A is outside"),
        ("--compliance", "1e-12", "--compliance: Keithley2400.compliance_current"),
        ("--nplc", "0", "--nplc: Keithley2400.nplc: 0.0 is outside the allowed range 0.01..10"),
    ],
)
def test_a_refused_setting_is_one_line_and_stores_no_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, named: str
) -> None:
    database = tmp_path / "demo.sqlite"
    code = main(
        ["demo", "--rows", "2", "--cols", "2", option, value, "--db", f"sqlite:///{database}"]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert named in err
    assert not database.exists()  # nothing was created, let alone a failed run


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_of_the_demo_process_stores_an_aborted_run_with_the_rows_read(
    tmp_path: Path, stop: signal.Signals
) -> None:
    database = tmp_path / "demo.sqlite"
    url = f"sqlite:///{database}"
    proc = subprocess.Popen(
        [str(NVMLAB), "demo", "--rows", "64", "--cols", "16", "--db", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until a few rows are stored, then press Ctrl-C
        if "row 16/64 read" in line:
            break
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "run 1 stored as aborted" in err

    db = open_database(url, create=False)
    with db.read_connection() as conn:
        status = conn.execute(text("SELECT status FROM runs WHERE id = 1")).scalar_one()
        completed = conn.execute(
            text("SELECT count(*) FROM units WHERE run_id = 1 AND status = 'completed'")
        ).scalar_one()
        reads = conn.execute(text("SELECT count(*) FROM reads WHERE run_id = 1")).scalar_one()
    db.close()
    assert status == "aborted"
    assert 16 <= completed < 64
    assert reads >= completed * 16


def test_an_interrupted_demo_leaves_the_smu_output_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    benches = []
    build = emulated_module.build_emulated_bench

    def keep(*args, **kwargs):  # type: ignore[no-untyped-def]
        bench = build(*args, **kwargs)
        benches.append(bench)
        return bench

    monkeypatch.setattr(emulated_module, "build_emulated_bench", keep)
    reads = 0
    add_read = RecordWriter.add_read

    def interrupted_after_20(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        if reads > 20:
            raise KeyboardInterrupt
        return add_read(self, *args, **kwargs)

    monkeypatch.setattr(RecordWriter, "add_read", interrupted_after_20)
    url = f"sqlite:///{tmp_path / 'demo.sqlite'}"
    assert main(["demo", "--rows", "8", "--cols", "8", "--db", url]) == 130
    assert "stored as aborted" in capsys.readouterr().err

    (bench,) = benches
    # Output off: the SMU's terminals are disconnected in the emulated world (None), not
    # merely at 0 V; every board line is grounded.
    assert bench.bench.terminal_v == {"A": None, "B": None}
    lines = (*bench.bench.rows_state, *bench.bench.cols_state)
    assert {line.mode for line in lines} == {"gnd"}


def _interrupt_twice(tmp_path: Path, attempt: int, rng: random.Random) -> None:
    """Start the demo, press Ctrl-C twice 10-300 ms apart at a random moment while it
    reads, and check what the database holds once the process is gone."""
    database = tmp_path / f"double-{attempt}.sqlite"
    url = f"sqlite:///{database}"
    proc = subprocess.Popen(
        [str(NVMLAB), "demo", "--rows", "64", "--cols", "24", "--db", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # the run exists: the map is being read
        if line.startswith("run "):
            break
    time.sleep(rng.uniform(0.0, 0.4))
    proc.send_signal(signal.SIGINT)
    time.sleep(rng.uniform(0.010, 0.300))
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    where = f"attempt {attempt}: stderr {err!r}"
    assert proc.returncode == 130, where
    assert "Traceback" not in err, where
    assert "database is locked" not in err, where

    db = open_database(url, create=False)
    with db.read_connection() as conn:
        runs = conn.execute(text("SELECT id, status FROM runs")).all()
        units = conn.execute(text("SELECT unit_key, status FROM units")).all()
        reads_per_unit = dict(
            conn.execute(
                text(
                    "SELECT u.unit_key, count(r.id) FROM units u LEFT JOIN reads r "
                    "ON r.attempt_id = u.id GROUP BY u.unit_key"
                )
            ).all()
        )
    db.close()
    assert [status for _, status in runs] == ["aborted"], where
    assert all(status in ("completed", "interrupted") for _, status in units), (units, where)
    # Every completed row holds its 24 reads; no unit was lost (rows are read in order).
    keys = sorted(int(key.split("-")[1]) for key, _ in units)
    assert keys == list(range(len(keys))), where
    for key, status in units:
        if status == "completed":
            assert reads_per_unit[key] == 24, where


def test_two_ctrl_c_in_a_row_leave_nothing_running(tmp_path: Path) -> None:
    """Two SIGINTs 10-300 ms apart (the second while the first is being handled): the run
    ends aborted, no unit stays running, exit status 130 without a traceback."""
    rng = random.Random(20261201)
    for attempt in range(6):
        _interrupt_twice(tmp_path, attempt, rng)


def test_ctrl_c_during_start_up_is_one_line(tmp_path: Path) -> None:
    """Ctrl-C while the command is still starting (imports, bench, station): exit 130,
    one line on stderr, no run left running."""
    rng = random.Random(7)
    for attempt in range(5):
        url = f"sqlite:///{tmp_path / f'startup-{attempt}.sqlite'}"
        proc = subprocess.Popen(
            [str(NVMLAB), "demo", "--rows", "64", "--cols", "64", "--db", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        where = f"attempt {attempt}: stderr {err!r}"
        assert proc.returncode == 130, where
        assert "Traceback" not in err, where
        assert len(err.strip().splitlines()) == 1, where
