"""The example jobs: every one is valid (tests/jobs/test_jobfile.py), and an eFlash job
programs cells to currents spanning three decades, judged by the chip's ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from jobhelp import assert_every_unit_completed_once, nvmlab

from nvmlab.mocks import read_ground_truth

EFLASH_JOB = """[job]
name = "eflash-test"
output = "runs"

[bench]
array = "eflash"
rows = 4
cols = 4
seed = {seed}
state_file = "chip.npz"

[chip]
name = "eflash-{seed}"

[[steps]]
kind = "tune-eflash"
targets = "targets.csv"
tolerance = 0.01
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", [2, 9])
def test_an_eflash_job_tunes_cells_over_three_decades_by_the_truth(
    tmp_path: Path, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    targets = np.exp(rng.uniform(np.log(10e-9), np.log(10e-6), (4, 4)))
    targets[0, 0], targets[3, 3] = 10e-9, 10e-6  # both ends of the three decades
    np.savetxt(tmp_path / "targets.csv", targets, delimiter=",")
    (tmp_path / "job.toml").write_text(EFLASH_JOB.format(seed=seed))
    url = f"sqlite:///{tmp_path / 'lab.sqlite'}"
    done = nvmlab("run", "job.toml", "--db", url, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "s1-tune-eflash     completed" in done.stdout
    assert_every_unit_completed_once(url)
    truth = read_ground_truth(tmp_path / "chip.npz")
    error = np.abs(truth["cell_current_a"] / targets - 1.0)
    # within the tolerance by the truth, bar the read noise of the truth's own moment
    assert np.mean(error <= 0.015) >= 0.9, np.round(error * 100, 2)
