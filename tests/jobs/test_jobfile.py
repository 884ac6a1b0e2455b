"""Bad job files, and a station already locked, are refused before any instrument is
touched: a clear message naming the file and the field, exit status 1, nothing stored
and no chip state written."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jobhelp import nvmlab, runs, write_job

from nvmlab.cli import main
from nvmlab.errors import ConfigError
from nvmlab.jobs.jobfile import load_job_file
from nvmlab.storage import open_database
from nvmlab.storage.liveness import process_start_time
from nvmlab.storage.locks import (
    StationLocked,
    acquire_station_lock,
    release_station_lock,
    station_lock_holder,
)
from nvmlab.storage.models import StationLock

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "jobs"

#: (what is wrong, the change to a good job file, the field the error names, words in it)
BAD = {
    "toml-syntax": ("[job\nname = 1", "TOML syntax", "not valid TOML"),
    "unknown-section": ("[jobs]\nx = 1\n", "file.jobs", "unknown key 'jobs'"),
    "unknown-step": ('[[steps]]\nkind = "calibrate"\n', "steps[2].kind",
                     "unknown step kind 'calibrate'; allowed: disturb"),
    "out-of-range": ('[[steps]]\nkind = "thresholds"\nsample = -3\n', "steps[2].sample",
                     "value -3 is not allowed; expected an integer from 0"),
    "unknown-parameter": ('[[steps]]\nkind = "map"\nspeed = 3\n', "steps[2].speed",
                          "unknown parameter 'speed' for step 'map'"),
    "wrong-type": ('[[steps]]\nkind = "map"\nread_v = "fast"\n', "steps[2].read_v",
                   "expected a number from 0.05 to 0.5 V"),
    "beyond-station-limit": ('[[steps]]\nkind = "map"\nprobe_max_v = 4.0\n',
                             "steps[2].probe_max_v", "station's write limit is 2.5 V"),
    "missing-target-file": ('[[steps]]\nkind = "tune"\ntargets = "nowhere.npy"\n',
                            "steps[2].targets", "does not exist"),
    "bad-fault-policy": ("[faults]\nretries = 1000\n", "faults.retries",
                         "expected an integer from 0 to 100"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_job_file_is_refused_before_anything_is_touched(
    tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    change, field, words = BAD[case]
    job = write_job(tmp_path)
    job.write_text(job.read_text() + "\n" + change)
    url = f"sqlite:///{tmp_path / 'lab.sqlite'}"
    monkeypatch.chdir(tmp_path)
    for args in (["run", "--check", str(job)], ["run", str(job), "--db", url]):
        assert main(args) == 1
        out, err = capsys.readouterr()
        error = err.strip().splitlines()[-1]
        assert error.startswith(f"nvmlab: error: {job}: "), error
        assert field in error and words in error, error
        assert out == ""
    assert not (tmp_path / "chip.npz").exists()
    assert not (tmp_path / "lab.sqlite").exists() or not runs(url)


def test_a_missing_station_file_is_named(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text('[job]\nstation = "lab-station.toml"\n[chip]\nname = "c"\n'
                   '[[steps]]\nkind = "map"\n')  # fmt: skip
    with pytest.raises(ConfigError) as exc:
        load_job_file(job)
    assert str(exc.value).startswith(f"{job}: job.station: station file 'lab-station.toml'")


def test_every_example_job_is_valid() -> None:
    for path in sorted(EXAMPLES.glob("*.toml")):
        done = nvmlab("run", "--check", str(path), cwd=EXAMPLES)
        assert done.returncode == 0, (path, done.stderr)
        assert "estimated instrument time" in done.stdout


@pytest.mark.timeout(300)
def test_a_station_already_locked_is_refused_naming_the_run_then_taken_over_when_dead(
    tmp_path: Path,
) -> None:
    job = write_job(tmp_path)
    url = f"sqlite:///{tmp_path / 'lab.sqlite'}"
    station = f"emulated:{(tmp_path / 'chip.npz').resolve()}"
    # another live process holds the station, running run 41
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        time.sleep(0.2)
        with open_database(url, create=True) as db, db.engine.begin() as conn:
            conn.execute(
                StationLock.__table__.insert().values(
                    station=station, run_id=None, host=os.uname().nodename, pid=holder.pid,
                    process_start_s=process_start_time(holder.pid), acquired_at=_now(),
                    heartbeat_at=_now(),
                )
            )  # fmt: skip
        done = nvmlab("run", str(job), "--db", url, cwd=tmp_path)
        assert done.returncode == 1
        assert f"station '{station}' is locked by a job starting (process {holder.pid}" in (
            done.stderr
        )
        assert not runs(url) and not (tmp_path / "chip.npz").exists()
    finally:
        holder.kill()
        holder.wait()
    # its holder is gone: the next job takes the lock over, runs, and gives it back
    done = nvmlab("run", str(job), "--db", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"took over the lock of a job starting: process {holder.pid}" in done.stderr
    with open_database(url) as db:
        assert station_lock_holder(db, station) is None


def test_the_lock_refuses_a_live_holder_and_names_its_run(tmp_path: Path) -> None:
    with open_database(f"sqlite:///{tmp_path / 'lab.sqlite'}", create=True) as db:
        assert acquire_station_lock(db, "probe-station-2", run_id=None) is None
        with pytest.raises(StationLocked) as exc:
            acquire_station_lock(db, "probe-station-2")
        assert "station 'probe-station-2' is locked by" in str(exc.value)
        assert f"process {os.getpid()}" in str(exc.value)
        assert release_station_lock(db, "probe-station-2")
        assert acquire_station_lock(db, "probe-station-2") is None


def _now():
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc)


@pytest.mark.timeout(300)
def test_the_database_precedence_is_db_then_env_then_job_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, rows=2, cols=2, steps='\n[[steps]]\nkind = "map"\n')
    job.write_text(job.read_text().replace("[job]\n", '[job]\ndatabase = "sqlite:///job.sqlite"\n'))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NVMLAB_DB", raising=False)
    assert main(["run", str(job)]) == 0
    assert "database: sqlite:///" in capsys.readouterr().err
    assert len(runs(f"sqlite:///{tmp_path / 'job.sqlite'}")) == 1
    monkeypatch.setenv("NVMLAB_DB", f"sqlite:///{tmp_path / 'env.sqlite'}")
    assert main(["run", str(job)]) == 0
    assert "(from $NVMLAB_DB)" in capsys.readouterr().err
    assert len(runs(f"sqlite:///{tmp_path / 'env.sqlite'}")) == 1
    assert main(["run", str(job), "--db", f"sqlite:///{tmp_path / 'cli.sqlite'}"]) == 0
    assert len(runs(f"sqlite:///{tmp_path / 'cli.sqlite'}")) == 1
    assert len(runs(f"sqlite:///{tmp_path / 'job.sqlite'}")) == 1
    assert not (tmp_path / "nvmlab.sqlite").exists()
