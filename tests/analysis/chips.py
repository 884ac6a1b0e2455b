"""A characterized and tuned emulated chip for the analysis tests: one job on an 8 x 8
crossbar with non-default physics (twice the read noise, a larger temperature
coefficient, 5 % defects, a stronger cubic I-V), run once per test session."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nvmlab.jobs.jobfile import load_job_file
from nvmlab.jobs.runner import run_job
from nvmlab.storage import open_database

PHYSICS = {
    "read_noise_rel": 0.004,
    "read_noise_abs_s": 0.04e-6,
    "temp_coeff_s_per_k": 0.2e-6,
    "defect_rate": 0.05,
    "iv_cubic_b_per_v2": 2.5,
}
CHIP = "impact-8"

JOB = """[job]
name = "analysis-chip"
output = "runs"

[bench]
file = "bench.toml"
state_file = "chip.npz"

[chip]
name = "impact-8"

[[steps]]
kind = "map"

[[steps]]
kind = "noise"
sample = 8

[[steps]]
kind = "temperature"
sample = 8
temperatures_c = [25, 55, 85]

[[steps]]
kind = "iv"
sample = 4

[[steps]]
kind = "thresholds"
sample = 0

[[steps]]
kind = "tune"
targets = "uniform.npy"
algorithm = "conventional"

[[steps]]
kind = "tune"
weights = "layer.npy"
window = [2e-6, 100e-6]

[[steps]]
kind = "products"
count = 12
"""


def characterized_chip(folder: Path) -> tuple[str, int]:
    """Run the job in ``folder``: (database URL, job run id)."""
    rng = np.random.default_rng(8)
    physics = "\n".join(f"{k} = {v!r}" for k, v in PHYSICS.items())
    (folder / "bench.toml").write_text(
        f"[bench]\nrows = 8\ncols = 8\nseed = 13\n\n[physics]\n{physics}\n"
    )
    layer = np.full((8, 4), np.nan)
    layer[:, :2] = rng.normal(0, 0.5, (8, 2))
    np.save(folder / "layer.npy", layer)
    uniform = np.full((8, 8), np.nan)
    uniform[:, 4:] = np.exp(rng.uniform(np.log(2e-6), np.log(100e-6), (8, 4)))
    np.save(folder / "uniform.npy", uniform)
    (folder / "job.toml").write_text(JOB)
    url = f"sqlite:///{folder / 'lab.sqlite'}"
    with open_database(url, create=True) as db:
        result = run_job(load_job_file(folder / "job.toml"), db=db)
    assert result.status == "completed", result.message
    return url, result.run_id
