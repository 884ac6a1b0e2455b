"""Solver benchmark of the default 64 x 64 bench: figures printed, never asserted.

Speed targets are checked by reading these figures, not by timed unit tests (they flake on
shared machines). Part of ``nvmlab bench --only mocks``; alone: ``python -P -m nvmlab.mocks.physics.solver_benchmark``.
The targets the bench was designed for are printed beside each figure.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np

from nvmlab.mocks.physics.base import LineBias, scheme_bias
from nvmlab.mocks.physics.memristor import MemristorArray


def best_time(fn: Callable[[], object], repeats: int, batches: int = 5) -> float:
    """Best mean time per call (s) over ``batches`` batches of ``repeats`` calls."""
    best = np.inf
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - t0) / repeats)
    return float(best)


def figures(size: int = 64, scale: float = 1.0) -> list[tuple[str, float, float]]:
    """(label, seconds per call, design target in s) for the solver paths the bench uses."""
    array = MemristorArray(size, size, seed=0)
    read_all = LineBias.grounded(size, size)
    read_all.row_v[:] = 0.2
    sneak = LineBias.floating(size, size)
    sneak.row_v[10 % size], sneak.col_v[20 % size] = 0.2, 0.0
    write = scheme_bias(size, size, 10 % size, 20 % size, 1.2, "v/2")

    def n(k: int) -> int:
        return max(1, round(k * scale))

    return [
        (
            "all-driven solve + noise",
            best_time(lambda: array.solve(read_all, 25.0, noise=True), n(100)),
            1e-3,
        ),
        (
            f"{2 * size - 2} floating lines",
            best_time(lambda: array.solve(sneak, 25.0, noise=True), n(5)),
            20e-3,
        ),
        ("V/2 write pulse", best_time(lambda: array.stress(write, 1.1e-3, 25.0), n(50)), 2e-3),
        (
            "read-bias stress()",
            best_time(lambda: array.stress(read_all, 0.02, 25.0), n(1000)),
            2e-4,
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="rows = cols of the array")
    parser.add_argument("--scale", type=float, default=1.0, help="scale of the repeat counts")
    args = parser.parse_args(argv)
    print(f"Solver, {args.size} x {args.size} memristor array (best of 5 batches):")
    for label, seconds, target in figures(args.size, args.scale):
        print(f"  {label:28s} {seconds * 1e3:9.3f} ms   (design target < {target * 1e3:g} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
