"""``nvmlab bench --only impact``: the network impact of an emulated chip, end to end.

Characterizes and tunes an emulated crossbar at default physics (25 % threshold spread)
in one job on the in-process bench: the map, read noise, temperature coefficients (25-100
C), the I-V, every device's thresholds; the conventional tuner on half the columns (targets
across 2-100 uS) and the adaptive tuner on the other half, to a slice of the benchmark
network's first layer as differential pairs; products measured through the array; then
the ``impact`` step. Prints every figure of docs/analysis.md (accuracy versus temperature,
naive and mitigated; the energy ratio; defect tolerance; the error-multiplier margins;
the in-the-loop comparison) with the wall time of one evaluation.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

JOB = """[job]
name = "impact-bench"
output = "runs"

[bench]
{bench}state_file = "chip.npz"

[chip]
name = "{chip}"

[[steps]]
kind = "map"

[[steps]]
kind = "noise"
sample = {sample}

[[steps]]
kind = "temperature"
sample = {sample}
temperatures_c = [25, 55, 85, 100]

[[steps]]
kind = "iv"
sample = {iv_sample}

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
count = {vectors}
"""

IMPACT_STEP = """
[[steps]]
kind = "impact"
draws = {draws}
"""


def write_impact_job(
    folder: Path, *, rows: int, cols: int, seed: int, chip: str, layer: np.ndarray,
    bench_file: str | None = None, draws: int | None = 25, vectors: int = 32,
) -> Path:  # fmt: skip
    """The job that gives a chip everything the network impact needs (``job.toml``, the
    targets it names): the map, read noise, temperature (25-100 C) and the I-V of a
    sample, every device's thresholds; the conventional tuner on the right half of the
    columns (targets across 2-100 uS) and the adaptive tuner on the left half to
    ``layer`` (weights, rows x pairs) as differential pairs; products through the array;
    then, unless ``draws`` is None, the ``impact`` step."""
    half = cols // 2
    weights = np.full((rows, half), np.nan)
    w = np.asarray(layer, dtype=float)[:rows, : half // 2]
    weights[: w.shape[0], : w.shape[1]] = w
    np.save(folder / "layer.npy", weights)
    rng = np.random.default_rng(seed)
    uniform = np.full((rows, cols), np.nan)
    uniform[:, half:] = np.exp(rng.uniform(np.log(2e-6), np.log(100e-6), (rows, cols - half)))
    np.save(folder / "uniform.npy", uniform)
    bench = (
        f'file = "{bench_file}"\n'
        if bench_file
        else f"rows = {rows}\ncols = {cols}\nseed = {seed}\n"
    )
    text = JOB.format(bench=bench, chip=chip, sample=min(16, rows * cols),
                      iv_sample=min(8, rows * cols // 2), vectors=vectors)  # fmt: skip
    if draws is not None:
        text += IMPACT_STEP.format(draws=draws)
    path = folder / "job.toml"
    path.write_text(text)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    from nvmlab.analysis.impact import format_impact
    from nvmlab.analysis.network import digits_benchmark
    from nvmlab.jobs.jobfile import load_job_file
    from nvmlab.jobs.runner import run_job
    from nvmlab.storage import open_database

    parser = argparse.ArgumentParser(prog="nvmlab bench --only impact")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--cols", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=25)
    args = parser.parse_args(list(argv or []))
    net, _, _ = digits_benchmark()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_impact_job(
            folder, rows=args.rows, cols=args.cols, seed=args.seed,
            chip=f"impact-bench-{args.seed}", layer=net.weights[0], draws=args.draws,
        )  # a slice of the benchmark network's real first layer  # fmt: skip
        start = time.perf_counter()
        with open_database(f"sqlite:///{folder / 'lab.sqlite'}", create=True) as db:
            result = run_job(load_job_file(folder / "job.toml"), db=db)
        wall = time.perf_counter() - start
        if result.status != "completed":
            print(f"the impact job {result.status}: {result.message}")
            return 1
        print(f"emulated {args.rows} x {args.cols} crossbar, default physics, seed {args.seed}: "
              f"characterized, tuned and measured in {wall:.0f} s wall "
              f"({result.instrument_s / 3600:.1f} h of instrument time)")  # fmt: skip
        for step in result.steps:
            if step.kind == "tune":
                s = step.summary
                print(f"  {step.label}: {s.get('algorithm')} {(s.get('pass_rate_own') or 0) * 100:.1f} % "
                      f"within 1 % by its final reads, pulses mean {s.get('pulses_mean', 0):.1f}")  # fmt: skip
        impact = next(s for s in result.steps if s.kind == "impact")
        figures = json.loads(Path(impact.summary["json"]).read_text())
        for line in format_impact(figures):
            print(f"  {line}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
