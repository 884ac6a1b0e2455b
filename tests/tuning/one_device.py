"""One device of the emulated chip under a given voltage: the switching law the tuner's
predictions are checked against (tests/tuning/test_pulse_widths.py,
tests/tuning/test_switching_model.py)."""

from __future__ import annotations

import math

import numpy as np

from nvmlab.mocks.physics.base import LineBias
from nvmlab.mocks.physics.memristor import MemristorArray, MemristorParams


def chip_change_ln(device_v: float, width_s: float, threshold_v: float) -> float:
    """ln G change of a device of ``threshold_v`` (both polarities) at 30 uS held at
    ``device_v`` (V, signed) for ``width_s`` (s), by the emulator's own switching law (no
    cycle-to-cycle spread)."""
    params = MemristorParams(cycle_spread_cv=0.0, defect_rate=0.0, rtn_fraction=0.0)
    chip = MemristorArray(1, 1, seed=1, params=params)
    chip.set_threshold_v[:] = threshold_v
    chip.reset_threshold_mag_v[:] = threshold_v
    chip._refresh_limits()
    chip.g_s[:] = 30e-6
    g0 = float(chip.g_s[0, 0])
    chip.stress(LineBias(row_v=np.array([device_v]), col_v=np.array([0.0])), width_s, 25.0)
    return math.log(float(chip.g_s[0, 0]) / g0)
