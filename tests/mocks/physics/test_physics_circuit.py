"""The line network: sneak paths against an independent dense nodal solve, read schemes,
and the sizes the bench needs (its speed: solver_benchmark.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from physics_lab import read_conductance

from nvmlab.mocks.physics import solver_benchmark
from nvmlab.mocks.physics.base import LineBias, scheme_bias
from nvmlab.mocks.physics.circuit import solve_crossbar
from nvmlab.mocks.physics.memristor import MemristorArray
from nvmlab.mocks.physics.resistor import solve_linear_crossbar

NAN = float("nan")


def dense_nodal_reference(
    g: np.ndarray, b: np.ndarray, row_v: np.ndarray, col_v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Textbook nodal analysis over ALL lines, written independently of the emulator:
    unknowns are every line voltage; a driven line's equation is v = v_set, a floating
    line's is KCL; plain (undamped) Newton from 0 V with an explicitly looped Jacobian.
    Returns the driver currents (row_i, col_i) with the emulator's sign convention."""
    rows, cols = g.shape
    n = rows + cols
    target = np.concatenate([row_v, col_v])
    driven = ~np.isnan(target)
    x = np.where(driven, target, 0.0)
    for _ in range(200):
        f = np.zeros(n)
        jac = np.zeros((n, n))
        for k in range(n):
            if driven[k]:
                f[k] = x[k] - target[k]
                jac[k, k] = 1.0
        for r in range(rows):
            for c in range(cols):
                v = x[r] - x[rows + c]
                i = g[r, c] * v * (1 + b[r, c] * v * v)
                di = g[r, c] * (1 + 3 * b[r, c] * v * v)
                if not driven[r]:  # current leaving row r
                    f[r] += i
                    jac[r, r] += di
                    jac[r, rows + c] -= di
                if not driven[rows + c]:  # current arriving at column c
                    f[rows + c] -= i
                    jac[rows + c, rows + c] += di
                    jac[rows + c, r] -= di
        dx = np.linalg.solve(jac, -f)
        x = x + dx
        if np.abs(dx).max() < 1e-15:
            break
    v = x[:rows, None] - x[None, rows:]
    i = g * v * (1 + b * v * v)
    row_i = np.where(driven[:rows], i.sum(axis=1), 0.0)
    col_i = np.where(driven[rows:], -i.sum(axis=0), 0.0)
    return row_i, col_i


BIASES = {
    # the selected device read with every other line floating: sneak paths in full
    "sneak read": ([NAN, NAN, 0.2, NAN, NAN, NAN], [NAN, NAN, NAN, 0.0, NAN]),
    # a mixture of driven and floating lines at several voltages
    "mixed": ([0.3, NAN, -0.1, NAN, 0.25, NAN], [0.0, NAN, 0.1, NAN, -0.2]),
    # a floating-scheme write pulse, deep in the nonlinear part of the I-V
    "float write": (
        scheme_bias(6, 5, 1, 2, 1.6, "float").row_v,
        scheme_bias(6, 5, 1, 2, 1.6, "float").col_v,
    ),
}


@pytest.mark.parametrize("case", list(BIASES))
def test_floating_line_solution_matches_an_independent_dense_nodal_solve(case: str) -> None:
    array = MemristorArray(6, 5, seed=31)
    g = array.conductance_at(25.0)
    b = array.iv_cubic_b_per_v2
    row_v, col_v = (np.array(v, dtype=float) for v in BIASES[case])
    emulator = array.solve(LineBias(row_v, col_v), 25.0, noise=False)
    ref_row_i, ref_col_i = dense_nodal_reference(g, b, row_v, col_v)
    scale = np.abs(np.concatenate([ref_row_i, ref_col_i])).max()
    np.testing.assert_allclose(emulator.row_i, ref_row_i, rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(emulator.col_i, ref_col_i, rtol=1e-9, atol=1e-9 * scale)
    # Kirchhoff: what some drivers push into the array the others take back out
    assert abs(emulator.row_i.sum() + emulator.col_i.sum()) < 1e-11 * scale


def test_linear_limit_equals_a_plain_linear_nodal_solve() -> None:
    rng = np.random.default_rng(3)
    g = rng.uniform(5e-6, 100e-6, (7, 7))
    row_v = np.array([0.2, NAN, NAN, 0.1, NAN, NAN, NAN])
    col_v = np.array([NAN, 0.0, NAN, NAN, NAN, -0.05, NAN])
    ours = solve_crossbar(g, 0.0, LineBias(row_v, col_v))
    ref = solve_linear_crossbar(g, LineBias(row_v, col_v))
    np.testing.assert_allclose(ours.col_i, ref.col_i, rtol=1e-9, atol=1e-18)
    np.testing.assert_allclose(ours.row_v, ref.row_v, rtol=1e-9, atol=1e-15)
    # both emulator solvers against the independent dense solve with no cubic term
    dense_row_i, dense_col_i = dense_nodal_reference(g, np.zeros_like(g), row_v, col_v)
    np.testing.assert_allclose(ours.col_i, dense_col_i, rtol=1e-9, atol=1e-18)
    np.testing.assert_allclose(ref.row_i, dense_row_i, rtol=1e-9, atol=1e-18)


def test_floating_lines_add_sneak_current_to_the_reading() -> None:
    for size in (8, 64):
        array = MemristorArray(size, size, seed=1)
        device = (
            read_conductance(array, 2, 3, noise=False) * 0.2
        )  # two-channel read, the device alone
        bias = LineBias.floating(size, size)
        bias.row_v[2], bias.col_v[3] = 0.2, 0.0
        sneak = -array.solve(bias, 25.0, noise=False).col_i[3]
        print(
            f"{size}x{size}: device alone {device * 1e6:.2f} uA, with floating lines {sneak * 1e6:.2f} uA"
        )
        assert sneak > 1.05 * device
        if size == 64:
            assert sneak > 2 * device  # on 64 x 64 the sneak paths exceed the device's own current


def test_read_schemes_single_channel_grounded_reads_the_row_tracking_reads_the_device() -> None:
    array = MemristorArray(8, 8, seed=2)
    g = array.ground_truth()["conductance_s"]
    # one SMU channel on row 4 at 0.2 V, everything else grounded: the whole row's current
    bias = LineBias.grounded(8, 8)
    bias.row_v[4] = 0.2
    whole_row = array.solve(bias, 25.0, noise=False).row_i[4]
    np.testing.assert_allclose(whole_row, 0.2 * g[4].sum(), rtol=1e-12)
    # tracking buffer: unselected columns follow the row voltage, unselected rows grounded
    bias.col_v[:] = 0.2
    bias.col_v[6] = 0.0
    tracked = array.solve(bias, 25.0, noise=False).row_i[4]
    np.testing.assert_allclose(tracked, 0.2 * g[4, 6], rtol=1e-12)


def test_the_default_64x64_bench_solves_its_sneak_read_like_the_dense_reference() -> None:
    """The 64 x 64 sizes the benchmark times (126 floating lines, an all-driven read, a V/2
    write) give the independent dense solve's currents."""
    array = MemristorArray(64, 64, seed=0)
    g, b = array.conductance_at(25.0), array.iv_cubic_b_per_v2
    sneak = LineBias.floating(64, 64)
    sneak.row_v[10], sneak.col_v[20] = 0.2, 0.0
    read_all = LineBias.grounded(64, 64)
    read_all.row_v[:] = 0.2
    for bias in (sneak, read_all, scheme_bias(64, 64, 10, 20, 1.2, "v/2")):
        emulator = array.solve(bias, 25.0, noise=False)
        ref_row_i, ref_col_i = dense_nodal_reference(g, b, bias.row_v, bias.col_v)
        scale = np.abs(np.concatenate([ref_row_i, ref_col_i])).max()
        np.testing.assert_allclose(emulator.row_i, ref_row_i, rtol=1e-9, atol=1e-9 * scale)
        np.testing.assert_allclose(emulator.col_i, ref_col_i, rtol=1e-9, atol=1e-9 * scale)


def test_the_solver_benchmark_prints_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    """Solver speed is a benchmark figure (solver_benchmark.py), never a timed unit test."""
    assert solver_benchmark.main(["--size", "8", "--scale", "0.01"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Solver, 8 x 8 memristor array")
    labels = ["all-driven solve + noise", "14 floating lines", "V/2 write pulse", "read-bias"]
    assert len(lines) == 1 + len(labels)
    for label, line in zip(labels, lines[1:], strict=True):
        assert label in line and "design target" in line
        figure = re.search(r"\s(\d+\.\d+) ms", line)
        assert figure is not None and float(figure.group(1)) >= 0, line
