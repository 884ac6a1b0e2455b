"""Read noise against integration time (NPLC): docs/devices.md's assumed split.

At 1 PLC a single read has sigma_G = 0.2 % of G + 0.02 uS. The absolute part is the
instrument's white noise and falls as 1/sqrt(NPLC); the relative part (1/f) and the
telegraph noise are the device's and do not average away with a longer integration.
"""

from __future__ import annotations

import numpy as np
import pytest
from physics_lab import READ_V

from nvmlab.mocks.physics.base import LineBias
from nvmlab.mocks.physics.eflash import EflashArray
from nvmlab.mocks.physics.memristor import MemristorArray
from nvmlab.mocks.physics.resistor import ResistorArray

READS = 300


def read_row(array: MemristorArray, row: int, nplc: float) -> np.ndarray:
    bias = LineBias.grounded(array.rows, array.cols)
    bias.row_v[row] = READ_V
    return -array.solve(bias, 25.0, nplc=nplc).col_i / READ_V


@pytest.mark.parametrize("nplc", [0.01, 100.0])
def test_memristor_instrument_part_scales_with_nplc_and_device_part_does_not(nplc: float) -> None:
    array = MemristorArray(16, 16, seed=6)
    truth = array.ground_truth()
    reads = np.array([[read_row(array, r, nplc) for r in range(array.rows)] for _ in range(READS)])
    nonlinear = 1 + truth["iv_cubic_b_per_v2"] * READ_V**2
    g_lin = truth["linear_conductance_s"]
    sigma_g = reads.std(axis=0, ddof=1) / nonlinear  # back to linear-conductance units
    quiet = (truth["defect"] == 0) & (truth["rtn_amplitude_rel"] == 0)
    expected = 0.002 * g_lin + 0.02e-6 / np.sqrt(nplc)
    ratio = sigma_g[quiet] / expected[quiet]
    # A standard deviation from N reads has relative sampling error 1 / sqrt(2 (N - 1)):
    # 4.1 % for N = 300. Every quiet device within 5 of them; the median within 4 x 1.25 x
    # that / sqrt(n).
    rel_err = 1 / np.sqrt(2 * (READS - 1))
    n = int(quiet.sum())
    assert n >= 200
    assert abs(np.median(ratio) - 1) < 4 * 1.25 * rel_err / np.sqrt(n)
    assert np.all(np.abs(ratio - 1) < 5 * rel_err)
    # The straight-line fit sigma_G = a G + c separates the parts: a is the device's 0.2 %
    # whatever the NPLC, c the instrument's 0.02 uS / sqrt(NPLC); 4 propagated errors each.
    x = np.column_stack([g_lin[quiet], np.ones(n)])
    spread = np.linalg.inv(x.T @ x) @ x.T
    cov = spread @ np.diag((expected[quiet] * rel_err) ** 2) @ spread.T
    a, c = np.polyfit(g_lin[quiet], sigma_g[quiet], 1)
    assert abs(a - 0.002) < 4 * np.sqrt(cov[0, 0])
    assert abs(c - 0.02e-6 / np.sqrt(nplc)) < 4 * np.sqrt(cov[1, 1])
    # the truth reports the 1 PLC sigma of a read of the conductance and its two parts
    np.testing.assert_allclose(
        truth["read_noise_sigma_s"],
        (0.002 * g_lin + 0.02e-6) * nonlinear,
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        truth["read_noise_device_sigma_s"] + truth["read_noise_instrument_sigma_s"],
        truth["read_noise_sigma_s"],
        rtol=1e-12,
    )


def test_memristor_telegraph_step_does_not_average_away_with_nplc() -> None:
    array = MemristorArray(64, 64, seed=8)
    truth = array.ground_truth()
    candidates = np.argwhere((truth["rtn_amplitude_rel"] > 0.01) & (truth["defect"] == 0))
    r, c = candidates[0]
    means = {}
    for level in (True, False):
        array.rtn_high[r, c] = level
        bias = LineBias.grounded(array.rows, array.cols)
        bias.row_v[r] = READ_V
        means[level] = np.mean(
            [-array.solve(bias, 25.0, nplc=100.0).col_i[c] / READ_V for _ in range(READS)]
        )
    g = truth["conductance_s"][r, c]
    step = (means[True] - means[False]) / g
    # Sampling error of the step between two means of N reads at 100 PLC:
    # sigma_rel sqrt(2 / N), sigma_rel = 0.2 % + 0.002 uS / G; 4 of them.
    sigma_rel = 0.002 + 0.002e-6 / truth["linear_conductance_s"][r, c]
    amplitude = truth["rtn_amplitude_rel"][r, c]
    assert abs(step - amplitude) < 4 * sigma_rel * np.sqrt(2 / READS)


def test_eflash_low_current_part_scales_with_nplc_and_the_floor_does_not() -> None:
    array = EflashArray(8, 8, seed=6)
    bias = array.read_bias()
    truth = array.read_current_a()
    n_reads = 400
    for nplc in (1.0, 100.0):
        reads = np.array([array.solve(bias, 25.0, nplc=nplc).device_i for _ in range(n_reads)])
        rel = reads.std(axis=0, ddof=1) / truth
        expected = np.hypot(0.003, 0.02 * np.sqrt(1e-9 / truth) / np.sqrt(nplc))
        # 5 sampling errors of a standard deviation from 400 reads (3.5 % each)
        np.testing.assert_allclose(rel, expected, rtol=5 / np.sqrt(2 * (n_reads - 1)))
        np.testing.assert_allclose(expected, array.noise_rel(truth, nplc=nplc), rtol=1e-12)
    near_1na = (truth > 0.7e-9) & (truth < 1.5e-9)
    assert near_1na.any()
    assert np.all(array.noise_rel(truth[near_1na], nplc=100.0) < 0.005)


def test_nplc_must_be_positive_and_the_resistor_array_accepts_it() -> None:
    array = MemristorArray(2, 2, seed=1)
    bias = LineBias.grounded(2, 2)
    with pytest.raises(ValueError, match="nplc"):
        array.solve(bias, 25.0, nplc=0.0)
    with pytest.raises(ValueError, match="nplc"):
        EflashArray(2, 2).solve(EflashArray(2, 2).read_bias(), 25.0, nplc=-1.0)
    resistor = ResistorArray(np.full((2, 2), 1e-5))
    assert resistor.solve(bias, 25.0, nplc=10.0).col_i.shape == (2,)
