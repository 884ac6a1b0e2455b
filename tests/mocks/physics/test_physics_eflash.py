"""eFlash array physics: subthreshold read, temperature, program / erase, noise."""

from __future__ import annotations

import numpy as np
import pytest

from nvmlab.mocks.physics import create_array
from nvmlab.mocks.physics.base import LineBias
from nvmlab.mocks.physics.eflash import EflashArray, thermal_voltage_v


def read_cell(
    array: EflashArray, row: int, col: int, *, temperature_c: float = 25.0, noise: bool = True
) -> float:
    """Read bias of docs/devices.md on word line ``row``; the current into bit line ``col`` (A)."""
    return float(array.solve(array.read_bias(row), temperature_c, noise=noise).col_i[col])


def pulse(
    array: EflashArray, row: int, col: int, amplitude_v: float, width_s: float, scheme: str = "v/2"
) -> None:
    array.stress(array.pulse_bias(row, col, amplitude_v, scheme), width_s, 25.0)


def test_current_spans_three_decades_as_a_cell_is_programmed_from_erased() -> None:
    """Lab procedure: erase a cell until it reads >= 1 uA, then program it in small steps
    (4 V source pulses, 1 us) reading after each, until it reads below 1 nA."""
    array = EflashArray(4, 4, seed=1)
    while read_cell(array, 2, 1, noise=False) < 1.5e-6:
        pulse(array, 2, 1, -10.0, 1e-3)
    currents, vths = [], []
    while True:
        currents.append(read_cell(array, 2, 1))
        vths.append(array.ground_truth()["vth_v"][2, 1])
        if currents[-1] < 0.5e-9 or len(currents) > 2000:
            break
        pulse(array, 2, 1, 4.0, 1e-6)
    i, vth = np.array(currents), np.array(vths)
    assert i.max() / i.min() > 1e3
    assert np.all(np.diff(vth) > 0)  # every program pulse raised Vth
    # weak inversion: one decade per n kT/q ln 10 of Vth (about 89 mV at n = 1.5)
    sub = (i > 1e-9) & (i < 0.02e-6)  # deep weak inversion, below I0 / 50
    slope = np.polyfit(vth[sub], np.log10(i[sub]), 1)[0]
    n = array.ground_truth()["slope_factor"][2, 1]
    expected = -1 / (n * thermal_voltage_v(25.0) * np.log(10))
    assert abs(slope / expected - 1) < 0.05
    print(
        f"{len(i)} program pulses, {i.max():.3g} A -> {i.min():.3g} A, {1e3 / -slope:.1f} mV/decade"
    )


def test_current_rises_with_temperature_and_most_at_low_current() -> None:
    array = EflashArray(8, 8, seed=2)
    i25 = array.solve(array.read_bias(), 25.0, noise=False).device_i
    i55 = array.solve(array.read_bias(), 55.0, noise=False).device_i
    i85 = array.solve(array.read_bias(), 85.0, noise=False).device_i
    usable = (i25 > 1e-9) & (i25 < 1e-6)
    assert usable.sum() > 20
    assert np.all(i55[usable] > i25[usable]) and np.all(i85[usable] > i55[usable])
    rise = i85 / i25
    low, high = np.argmin(np.where(usable, i25, np.inf)), np.argmax(np.where(usable, i25, 0))
    assert rise.ravel()[low] > rise.ravel()[high]


def test_threshold_shift_extracted_from_currents_is_each_cells_temperature_coefficient() -> None:
    """Lab extraction: invert the weak-inversion law at 25 C and 85 C for each low-current
    cell, I / I0 = ln^2(1 + exp((V_cg - Vth(T)) / (2 n kT/q))), and compare the Vth shift
    per kelvin with the coefficient the cell was given (about -1.5 mV/K, 10 % spread)."""
    array = EflashArray(8, 8, seed=2)
    truth = array.ground_truth()
    cg = array.params.read_control_gate_v

    def vth_at(temperature_c: float) -> np.ndarray:
        i = array.solve(array.read_bias(), temperature_c, noise=False).device_i
        x = 2.0 * np.log(np.expm1(np.sqrt(i / truth["i0_a"])))
        return cg - x * truth["slope_factor"] * thermal_voltage_v(temperature_c)

    low = array.read_current_a() < 100e-9  # weak inversion, far from the select-gate limit
    assert low.sum() > 20
    slope = (vth_at(85.0) - vth_at(25.0)) / 60.0
    coeff = truth["vth_temp_coeff_v_per_k"]
    np.testing.assert_allclose(slope[low], coeff[low], rtol=0.02)
    # the device spread (10 %) over the 64 cells: the mean's relative sampling error is
    # 0.1 / sqrt(64) = 1.25 %, the spread's 0.1 / sqrt(128) = 0.009; 4 of each
    assert np.mean(coeff) == pytest.approx(-1.5e-3, rel=4 * 0.1 / np.sqrt(coeff.size))
    assert abs(np.std(coeff) / abs(np.mean(coeff)) - 0.1) < 4 * 0.1 / np.sqrt(2 * coeff.size)


def test_program_raises_and_erase_lowers_vth_of_the_selected_cell_only() -> None:
    array = EflashArray(6, 6, seed=3)
    before = array.ground_truth()["vth_v"]
    pulse(array, 2, 3, 4.8, 2e-6)
    after_program = array.ground_truth()["vth_v"]
    assert after_program[2, 3] - before[2, 3] > 5e-3
    others = np.ones_like(before, dtype=bool)
    others[2, 3] = False
    assert np.array_equal(
        after_program[others], before[others]
    )  # inhibited bit lines, off word lines

    pulse(array, 2, 3, -10.5, 1e-3)
    after_erase = array.ground_truth()["vth_v"]
    step = after_program[2, 3] - after_erase[2, 3]
    assert step > 5e-3
    disturb = np.abs(after_erase - after_program)[others]
    assert disturb.max() < 0.01 * step  # the redesigned array's per-cell erase selectivity
    # only the selected row's erase gate was high
    assert np.array_equal(after_erase[np.arange(6) != 2], after_program[np.arange(6) != 2])


def test_grounding_unselected_bit_lines_programs_the_whole_row() -> None:
    array = EflashArray(4, 4, seed=4)
    before = array.ground_truth()["vth_v"]
    pulse(array, 1, 0, 4.8, 2e-6, scheme="ground")
    delta = array.ground_truth()["vth_v"] - before
    assert np.all(delta[1] > 5e-3)
    assert np.all(delta[[0, 2, 3]] == 0)


def test_vth_step_depends_on_amplitude_width_and_state() -> None:
    def program_step(amplitude: float, width: float, vth_start: float) -> float:
        array = EflashArray(2, 2, seed=5, params=None)
        array.params.cycle_spread_cv = 0.0
        array.vth_v[0, 0] = vth_start
        pulse(array, 0, 0, amplitude, width)
        return float(array.vth_v[0, 0] - vth_start)

    def erase_step(amplitude: float, width: float, vth_start: float) -> float:
        array = EflashArray(2, 2, seed=5)
        array.params.cycle_spread_cv = 0.0
        array.vth_v[0, 0] = vth_start
        pulse(array, 0, 0, -amplitude, width)
        return float(vth_start - array.vth_v[0, 0])

    assert (
        program_step(4.0, 1e-6, 2.5) < program_step(4.5, 1e-6, 2.5) < program_step(5.0, 1e-6, 2.5)
    )
    assert program_step(4.5, 1e-6, 2.5) < program_step(4.5, 1e-5, 2.5)
    assert program_step(4.5, 1e-6, 3.2) < 0.5 * program_step(4.5, 1e-6, 2.5)  # fuller cell, slower
    assert erase_step(9.0, 1e-3, 2.5) < erase_step(10.0, 1e-3, 2.5) < erase_step(11.0, 1e-3, 2.5)
    assert erase_step(10.0, 1e-4, 2.5) < erase_step(10.0, 1e-3, 2.5)
    assert erase_step(10.0, 1e-3, 1.8) < 0.5 * erase_step(10.0, 1e-3, 2.5)  # emptier cell, slower
    # a small fine-tuning step exists: sub-mV moves at low amplitude
    assert 0 < program_step(3.5, 1e-6, 2.6) < 1e-3


def test_read_noise_rises_at_low_current() -> None:
    array = EflashArray(8, 8, seed=6)
    bias = array.read_bias()
    reads = np.array([array.solve(bias, 25.0).device_i for _ in range(400)])
    truth = array.read_current_a()
    rel = reads.std(axis=0) / truth
    near_1na = (truth > 0.7e-9) & (truth < 1.5e-9)
    near_1ua = (truth > 0.5e-6) & (truth < 2e-6)
    assert near_1na.any() and near_1ua.any()
    assert np.all((rel[near_1na] > 0.01) & (rel[near_1na] < 0.03))
    assert np.all(rel[near_1ua] < 0.005)
    # every cell's spread is the model's noise at its current, within 5 sampling errors of a
    # standard deviation from 400 reads (1 / sqrt(2 x 399) = 3.5 % each)
    np.testing.assert_allclose(rel, array.noise_rel(truth), rtol=5 / np.sqrt(2 * 399))


def test_word_line_gates_the_cell_and_bit_line_bias_saturates() -> None:
    array = EflashArray(3, 3, seed=7)
    bias = array.read_bias(1)
    on = array.solve(bias, 25.0, noise=False)
    assert np.all(on.device_i[[0, 2]] < 1e-13)  # grounded word lines: off (sub-pA leakage)
    assert np.all(on.row_i == 0)  # no gate current
    np.testing.assert_allclose(on.col_i, on.device_i[1], rtol=1e-3)
    low = LineBias(bias.row_v, np.full(3, 0.2), control_gate_v=2.5)
    tiny = LineBias(bias.row_v, np.full(3, 0.02), control_gate_v=2.5)
    i_low = array.solve(low, 25.0, noise=False).col_i
    np.testing.assert_allclose(i_low, on.col_i, rtol=0.01)  # saturated above ~0.1 V
    assert np.all(array.solve(tiny, 25.0, noise=False).col_i < 0.6 * on.col_i)
    floating = LineBias(bias.row_v, np.full(3, np.nan), control_gate_v=2.5)
    assert np.all(array.solve(floating, 25.0).col_i == 0)


def test_pulse_bias_shapes_and_scheme_validation() -> None:
    array = create_array("eflash", 4, 5, seed=0)
    assert isinstance(array, EflashArray)
    program = array.pulse_bias(1, 2, 4.5, "v/2")
    assert program.source_v == 4.5 and program.row_v[1] > 1 and program.col_v[2] == 0
    assert np.all(np.delete(program.col_v, 2) == array.params.program_inhibit_v)
    erase = array.pulse_bias(1, 2, -10.0, "v/3")
    assert erase.erase_gate_v == 10.0 and erase.source_v == 0
    assert np.all(np.delete(erase.col_v, 2) == array.params.erase_inhibit_v)
    # a read bias does not program or erase, and costs nothing
    assert array.stress(array.read_bias(), 1.0, 25.0) is False
    with pytest.raises(ValueError, match="allowed: v/2, v/3, ground, float"):
        array.pulse_bias(0, 0, 4.5, "v/4")


def test_retention_is_very_good_at_room_temperature_and_drifts_a_little_hot() -> None:
    def programmed() -> EflashArray:
        array = EflashArray(2, 2, seed=8)
        pulse(array, 0, 0, 4.6, 2e-6)
        return array

    cold, hot = programmed(), programmed()
    i0 = cold.read_current_a()[0, 0]
    v0 = cold.vth_v[0, 0]
    cold.relax(10 * 365.25 * 86400, 25.0)
    hot.relax(7 * 86400, 85.0)
    assert 0 < v0 - cold.vth_v[0, 0] < 1e-3  # < 1 mV in ten years at 25 C
    assert v0 - hot.vth_v[0, 0] > v0 - cold.vth_v[0, 0]  # a week at 85 C does more
    assert abs(cold.read_current_a()[0, 0] / i0 - 1) < 0.03


@pytest.mark.parametrize("bit_line_v", [1.0, 0.0], ids=["bit-lines-at-read", "bit-lines-grounded"])
def test_source_line_high_through_a_read_with_the_gate_at_read_bias_programs_nothing(
    bit_line_v: float,
) -> None:
    """A fault a user hit: the source line left at 4.5 V through one read (1 PLC at 50 Hz,
    20 ms) with the control gate at the 2.5 V read bias. Source-side injection needs the
    floating gate coupled high by the control gate: nothing may be programmed, whether the
    bit lines sit at the read voltage or at 0 V (a column held at 0 V and measured)."""
    array = EflashArray(4, 4, seed=9)
    before = array.ground_truth()["vth_v"]
    bias = array.read_bias(1)
    bias.col_v[:] = bit_line_v
    bias.source_v = 4.5
    changed = array.stress(bias, 20e-3, 25.0)
    assert np.array_equal(array.ground_truth()["vth_v"], before)
    assert changed is False


def test_program_step_rises_with_the_control_gate_and_falls_when_hot() -> None:
    def program_step(control_gate_v: float, temperature_c: float = 25.0) -> float:
        array = EflashArray(2, 2, seed=5)
        array.params.cycle_spread_cv = 0.0
        array.vth_v[0, 0] = 2.5
        bias = array.pulse_bias(0, 0, 4.5, "v/2")
        bias.control_gate_v = control_gate_v
        array.stress(bias, 1e-6, temperature_c)
        return float(array.vth_v[0, 0] - 2.5)

    steps = [program_step(v) for v in (6.0, 7.0, 8.0, 9.0)]
    assert 0 < steps[0] < steps[1] < steps[2] < steps[3]
    assert program_step(3.0) == 0.0  # below the gate floor: no injection
    # hot-electron injection weakens when hot (assumed -0.5 %/K of the rate); the step of a
    # small pulse is nearly proportional to the rate
    ratio = program_step(8.0, 85.0) / program_step(8.0, 25.0)
    assert ratio == pytest.approx(np.exp(-0.005 * 60), rel=0.02)


def test_truth_current_temperature_coefficient_is_what_two_reads_measure() -> None:
    array = EflashArray(4, 4, seed=2)
    truth = array.ground_truth()
    low = array.solve(array.read_bias(), 24.0, noise=False).device_i
    high = array.solve(array.read_bias(), 26.0, noise=False).device_i
    measured = (np.log(high) - np.log(low)) / 2.0
    np.testing.assert_allclose(measured, truth["cell_current_temp_coeff_per_k"], rtol=1e-4)
    assert np.all(truth["cell_current_temp_coeff_per_k"] > 0)  # subthreshold: rises when hot
    np.testing.assert_allclose(
        truth["read_noise_sigma_a"],
        array.noise_rel(truth["cell_current_a"]) * truth["cell_current_a"],
        rtol=1e-12,
    )
