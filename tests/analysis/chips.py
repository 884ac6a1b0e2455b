"""A characterized and tuned emulated chip for the analysis tests: the impact benchmark's
job (without its impact step) on an 8 x 8 crossbar with non-default physics (twice the
read noise, a larger temperature coefficient, 5 % defects, a stronger cubic I-V, threshold CV 35 %), run
once per test session."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nvmlab.benchmarks.impact import write_impact_job
from nvmlab.jobs.jobfile import load_job_file
from nvmlab.jobs.runner import run_job
from nvmlab.storage import open_database

PHYSICS = {
    "read_noise_rel": 0.004,
    "read_noise_abs_s": 0.04e-6,
    "temp_coeff_s_per_k": 0.2e-6,
    "defect_rate": 0.05,
    "iv_cubic_b_per_v2": 2.5,
    "threshold_cv": 0.35,
}
CHIP = "impact-8"


def characterized_chip(folder: Path) -> tuple[str, int]:
    """Run the job in ``folder``: (database URL, job run id)."""
    physics = "\n".join(f"{k} = {v!r}" for k, v in PHYSICS.items())
    (folder / "bench.toml").write_text(
        f"[bench]\nrows = 8\ncols = 8\nseed = 13\n\n[physics]\n{physics}\n"
    )
    layer = np.random.default_rng(8).normal(0, 0.5, (8, 2))
    write_impact_job(folder, rows=8, cols=8, seed=13, chip=CHIP, layer=layer,
                     bench_file="bench.toml", draws=None, vectors=12)  # fmt: skip
    url = f"sqlite:///{folder / 'lab.sqlite'}"
    with open_database(url, create=True) as db:
        result = run_job(load_job_file(folder / "job.toml"), db=db)
    assert result.status == "completed", result.message
    return url, result.run_id
