"""Acceptance walkthrough of ``nvmlab demo``: refused settings store nothing, Ctrl-C keeps
the rows read so far in a run marked aborted and leaves the SMU output off."""

from __future__ import annotations

import signal
import subprocess
import sys
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
    smu = bench.resource_manager().open_resource(
        bench.resources()["smu"], read_termination="\n", write_termination="\n"
    )
    assert smu.query(":OUTP?").strip() == "0"
    assert float(smu.query(":SOUR:VOLT?")) == 0.0
