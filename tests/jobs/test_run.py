"""``nvmlab run``: a job file runs every step unattended, stores every unit once, prints
``run <id>`` first and a summary last, writes its log and report, and two jobs in one
process give what they give in two processes."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest
from jobhelp import assert_every_unit_completed_once, nvmlab, runs, units, write_job

from nvmlab.jobs.jobfile import load_job_file
from nvmlab.jobs.runner import run_job
from nvmlab.storage import open_database
from nvmlab.storage.query import fetch_arrays

STEPS = """
[[steps]]
kind = "map"

[[steps]]
kind = "thresholds"
sample = 6

[[steps]]
kind = "tune"
targets = "targets.npy"

[[steps]]
kind = "report"
"""


@pytest.mark.timeout(600)
def test_a_job_runs_every_step_prints_its_run_and_summary_and_stores_each_unit_once(
    tmp_path: Path,
) -> None:
    job = write_job(tmp_path, steps=STEPS)
    url = f"sqlite:///{tmp_path / 'lab.sqlite'}"

    check = nvmlab("run", "--check", str(job), cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert re.search(r"s3-tune +estimated instrument time \d", check.stdout)
    assert not (tmp_path / "lab.sqlite").exists() and not (tmp_path / "chip.npz").exists()

    done = nvmlab("run", str(job), "--db", url, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    first, *rest = done.stdout.splitlines()
    run_id = int(first.removeprefix("run "))
    assert first == f"run {run_id}"
    assert re.search(rf"^run {run_id} completed in ", done.stdout, re.M)
    for label in ("s1-map", "s2-thresholds", "s3-tune", "s4-report"):
        assert re.search(rf"^{label} +completed ", done.stdout, re.M), label

    by_step = assert_every_unit_completed_once(url)
    assert by_step["s2-thresholds"] == 6 + 1  # six devices and the step's own marker
    assert {r["status"] for r in runs(url)} == {"completed"}
    log = tmp_path / "runs" / f"run-{run_id}" / "job.log"
    assert "s3-tune: completed" in log.read_text()
    report = tmp_path / "runs" / f"run-{run_id}" / "report"
    assert {"report.html", "tuning.png", "summary.json", "conductance_map.png"} <= {
        p.name for p in report.iterdir()
    }
    with open_database(url) as db:
        outcomes = fetch_arrays(db, "tuning_outcomes", run_id=run_id)
    assert len(outcomes["row"]) == 6 * 6  # every device: tuned, failed, stuck or skipped
    # the chip left by the job: its state file (the emulated chip is non-volatile)
    assert (tmp_path / "chip.npz").is_file()


def _job_reads(url: str) -> dict[str, np.ndarray]:
    with open_database(url) as db:
        reads = fetch_arrays(db, "reads", columns=["row", "col", "conductance_s", "t_s"])
        pulses = fetch_arrays(db, "pulses", columns=["row", "col", "amplitude_v", "t_s"])
    return {**{f"read_{k}": np.asarray(v) for k, v in reads.items()},
            **{f"pulse_{k}": np.asarray(v) for k, v in pulses.items()}}  # fmt: skip


@pytest.mark.timeout(600)
def test_two_jobs_in_one_process_give_what_they_give_in_two_processes(tmp_path: Path) -> None:
    """No module-level state: the same job, run twice at once in threads of one process
    (each with its own bench, chip and database), stores exactly what it stores run
    alone in a process of its own."""
    folders = [tmp_path / name for name in ("alone", "thread-a", "thread-b")]
    for folder in folders:
        folder.mkdir()
        write_job(folder, rows=4, cols=4, seed=5)
    urls = [f"sqlite:///{folder / 'lab.sqlite'}" for folder in folders]
    alone = nvmlab("run", str(folders[0] / "job.toml"), "--db", urls[0], cwd=folders[0])
    assert alone.returncode == 0, alone.stderr

    results = {}

    def run(i: int) -> None:
        with open_database(urls[i], create=True) as db:
            results[i] = run_job(load_job_file(folders[i] / "job.toml"), db=db)

    threads = [threading.Thread(target=run, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[1].status == results[2].status == "completed"
    reference = _job_reads(urls[0])
    assert reference["read_row"].size > 100 and reference["pulse_row"].size > 10
    for url in urls[1:]:
        got = _job_reads(url)
        for name, values in reference.items():
            np.testing.assert_array_equal(got[name], values, err_msg=name)
    assert [u["unit_key"] for u in units(urls[1])] == [u["unit_key"] for u in units(urls[0])]
