"""Every device counts the write pulses it received (ground truth ``pulse_count``)."""

from __future__ import annotations

import numpy as np

from nvmlab.mocks.physics.base import LineBias, scheme_bias
from nvmlab.mocks.physics.eflash import EflashArray
from nvmlab.mocks.physics.memristor import MemristorArray, MemristorParams


def test_memristor_counts_full_amplitude_pulses_not_reads_or_half_select() -> None:
    array = MemristorArray(6, 6, seed=2, params=MemristorParams(defect_rate=0.0))
    amplitudes = (0.5, 0.8, 1.1, -0.9, -1.3)
    for amplitude in amplitudes:
        assert array.stress(scheme_bias(6, 6, 2, 3, amplitude, "v/2"), 1.1e-3, 25.0)
    for _ in range(3):
        assert array.stress(scheme_bias(6, 6, 4, 1, 1.0, "v/3"), 1.1e-3, 25.0)
    read = LineBias.grounded(6, 6)
    read.row_v[2] = 0.2
    assert not array.stress(read, 1.0, 25.0)  # a read is no pulse
    expected = np.zeros((6, 6), dtype=int)
    expected[2, 3] = len(amplitudes)
    expected[4, 1] = 3
    np.testing.assert_array_equal(array.ground_truth()["pulse_count"], expected)
    # with the unselected lines grounded the whole selected row gets the full pulse
    array.stress(scheme_bias(6, 6, 0, 0, 1.0, "ground"), 1.1e-3, 25.0)
    assert np.all(array.ground_truth()["pulse_count"][0] == 1)
    assert array.ground_truth()["pulse_count"][1:, 0].sum() == 0  # half-selected: no pulse


def test_eflash_counts_full_program_and_erase_pulses_not_inhibited_disturb() -> None:
    array = EflashArray(4, 4, seed=3)
    for _ in range(4):
        array.stress(array.pulse_bias(1, 2, 4.5, "v/2"), 1e-6, 25.0)
    before = array.vth_v.copy()
    array.stress(array.pulse_bias(1, 2, -10.0, "v/2"), 1e-3, 25.0)
    assert np.all(array.vth_v[1] < before[1])  # inhibited cells of the row move a little ...
    array.stress(array.pulse_bias(3, 0, 4.5, "ground"), 1e-6, 25.0)  # the whole row programs
    array.stress(array.read_bias(), 1.0, 25.0)
    expected = np.zeros((4, 4), dtype=int)
    expected[1, 2] = 5  # ... but received no erase pulse
    expected[3, :] = 1
    np.testing.assert_array_equal(array.ground_truth()["pulse_count"], expected)


def test_a_pulse_held_in_several_pieces_counts_once() -> None:
    memristor = MemristorArray(4, 4, seed=2, params=MemristorParams(defect_rate=0.0))
    bias = scheme_bias(4, 4, 1, 1, 1.1, "v/2")
    assert memristor.stress(bias, 0.5e-3, 25.0)
    assert memristor.stress(bias, 0.6e-3, 25.0, count_pulse=False)
    assert memristor.ground_truth()["pulse_count"][1, 1] == 1
    flash = EflashArray(3, 3, seed=3)
    program = flash.pulse_bias(2, 2, 4.5, "v/2")
    flash.stress(program, 0.5e-6, 25.0)
    vth = flash.vth_v[2, 2]
    flash.stress(program, 0.5e-6, 25.0, count_pulse=False)
    assert flash.vth_v[2, 2] > vth  # the second piece still programs ...
    assert flash.ground_truth()["pulse_count"][2, 2] == 1  # ... but is the same pulse
