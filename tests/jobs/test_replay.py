"""Record and replay: ``nvmlab run JOB --record DIR`` keeps the instrument transcripts with
what replay needs; ``nvmlab replay DIR`` re-runs the job offline (no instrument, no
emulator, no station or bench file) into a new run whose every stored value, per device,
equals the recorded run's, times included (the transcript's clock)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from jobhelp import nvmlab, runs, write_job

from nvmlab.storage import open_database
from nvmlab.storage.query import fetch_arrays

TABLES = {
    "reads": ["row", "col", "voltage_v", "current_a", "conductance_s", "t_s"],
    "pulses": ["row", "col", "amplitude_v", "width_s", "t_s"],
    "device_parameters": ["row", "col", "name", "value", "text_value", "unit"],
    "tuning_outcomes": ["row", "col", "target_s", "final_s", "pulse_count", "status"],
}


def _stored(url: str, run_id: int) -> dict[str, np.ndarray]:
    out = {}
    with open_database(url) as db:
        for table, columns in TABLES.items():
            for name, values in fetch_arrays(db, table, columns=columns, run_id=run_id).items():
                out[f"{table}.{name}"] = np.asarray(values)
    return out


@pytest.mark.timeout(600)
def test_a_recorded_run_replays_to_identical_stored_results(tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    lab.mkdir()
    job = write_job(lab, rows=4, cols=4, seed=8)
    url = f"sqlite:///{tmp_path / 'lab.sqlite'}"
    rec = tmp_path / "rec"
    done = nvmlab("run", str(job), "--db", url, "--record", str(rec), cwd=lab)
    assert done.returncode == 0, done.stdout + done.stderr
    recorded = int(done.stdout.splitlines()[0].removeprefix("run "))
    assert runs(url)[0]["config"]["recording"] == str(rec.resolve())

    # a second recording into the same folder is refused, the first kept as it was
    before = sorted((p.name, p.stat().st_size) for p in rec.rglob("*"))
    again = nvmlab("run", str(job), "--db", url, "--record", str(rec), cwd=lab)
    assert again.returncode == 1 and "already holds a recording" in again.stderr
    assert sorted((p.name, p.stat().st_size) for p in rec.rglob("*")) == before
    assert len(runs(url)) == 1

    info = nvmlab("replay", str(rec), "--info", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert f"run {recorded} (completed)" in info.stdout and "transcript smu:" in info.stdout

    # offline: the job's folder (station, bench, targets) is gone
    for path in sorted(lab.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    lab.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    replayed = nvmlab("replay", str(rec), "--db", url, cwd=elsewhere)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    new = int(replayed.stdout.splitlines()[0].removeprefix("run "))
    assert new != recorded
    a, b = _stored(url, recorded), _stored(url, new)
    assert a["reads.row"].size > 50 and a["pulses.row"].size > 10
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)
    assert runs(url)[1]["config"]["replayed_from"] == str(rec.resolve())


@pytest.mark.timeout(600)
def test_a_job_reruns_on_the_emulated_bench_from_a_saved_chip_state(tmp_path: Path) -> None:
    """A chip state file saved from a night's chip is the chip: a job run again on a copy
    of it stores exactly what it stored the first time (the state holds the chip's noise
    generator too)."""
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
    write_job(first, rows=4, cols=4, seed=11, steps='\n[[steps]]\nkind = "map"\n')
    assert nvmlab("run", "job.toml", "--db", f"sqlite:///{first / 'map.sqlite'}",
                  cwd=first).returncode == 0  # fmt: skip
    (second / "chip.npz").write_bytes((first / "chip.npz").read_bytes())  # the saved chip
    urls = []
    for folder in (first, second):
        write_job(folder, rows=4, cols=4, seed=11)  # map, then tune
        urls.append(f"sqlite:///{folder / 'lab.sqlite'}")
        done = nvmlab("run", "job.toml", "--db", urls[-1], cwd=folder)
        assert done.returncode == 0, done.stdout + done.stderr
    a, b = _stored(urls[0], 1), _stored(urls[1], 1)
    assert a["pulses.row"].size > 10
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)
