"""Calibration anchor of the switching dynamics (docs/devices.md, issue 2 acceptance).

The conventional write-verify protocol of the study: V/2 scheme, amplitude ramps
0.5 -> 2.0 V (set) and 0.5 -> 2.2 V (reset) in fixed steps, 1.1 ms pulses, a read after
every pulse; on overshoot the polarity flips and that ramp restarts at 0.5 V. On the
published chips it needs on the order of 50 pulses (25-100) to bring a device within 2 %
of a target in 10-100 uS. The emulator's switching-rate parameters are tuned so that it
does too: easier would make every later tuning figure flattering, harder would make it
meaningless.
"""

from __future__ import annotations

import numpy as np
from physics_lab import read_conductance

from nvmlab.mocks.physics import create_array
from nvmlab.mocks.physics.base import ArrayPhysics, scheme_bias

RAMP_START_V = 0.5
RAMP_STEP_V = 0.03  # fixed step: 50 steps over the 0.5 -> 2.0 V set ramp
SET_MAX_V = 2.0
RESET_MAX_V = 2.2
PULSE_S = 1.1e-3
TOLERANCE = 0.02
MAX_PULSES = 400


def tune_conventional(array: ArrayPhysics, row: int, col: int, target_s: float) -> int | None:
    """Pulses the fixed-ramp protocol needs to bring (row, col) within 2 % of ``target_s``
    (single noisy read after each pulse); None if it gives up after MAX_PULSES."""
    amplitude, polarity = RAMP_START_V, 0
    for pulses in range(MAX_PULSES + 1):
        g = read_conductance(array, row, col)
        if abs(g - target_s) <= TOLERANCE * target_s:
            return pulses
        wanted = 1 if g < target_s else -1
        if wanted != polarity:  # first pulse, or overshoot: restart the other ramp
            polarity, amplitude = wanted, RAMP_START_V
        else:
            amplitude = min(amplitude + RAMP_STEP_V, SET_MAX_V if polarity > 0 else RESET_MAX_V)
        array.stress(
            scheme_bias(array.rows, array.cols, row, col, polarity * amplitude, "v/2"),
            PULSE_S,
            25.0,
        )
    return None


def test_conventional_ramp_needs_about_fifty_pulses_on_the_default_bench() -> None:
    array = create_array("memristor", 64, 64, seed=0)  # the default bench
    # 60 devices, fixed seeds (chip and choice): deterministic, and enough that the median is
    # not luck. The pulse counts spread with an inter-quartile range of about 40 pulses
    # (sigma ~ IQR / 1.35 ~ 30), so the median of 60 has a sampling error of about
    # 1.25 x 30 / sqrt(60) ~ 5 pulses: a median near 50 sits > 4 such errors inside the
    # published 25-100 window, and an emulator needing 5 or 500 pulses cannot pass.
    rng = np.random.default_rng(7)
    functional = np.argwhere(array.ground_truth()["defect"] == 0)
    devices = functional[rng.choice(len(functional), 60, replace=False)]
    targets = np.exp(rng.uniform(np.log(10e-6), np.log(100e-6), len(devices)))

    counts = [
        tune_conventional(array, int(r), int(c), float(t))
        for (r, c), t in zip(devices, targets, strict=True)
    ]
    converged = [n for n in counts if n is not None]
    median = float(np.median(converged))
    print(
        f"conventional ramp: median {median:.1f} pulses, {len(converged)}/{len(counts)} converged, "
        f"quartiles {np.percentile(converged, 25):.0f}-{np.percentile(converged, 75):.0f}"
    )

    assert len(converged) >= 58, f"only {len(converged)} of 60 devices converged"
    assert 25 <= median <= 100, f"median {median} pulses is outside the published 25-100"
    # A device that needs no pulse was already in tolerance; that must stay the exception.
    assert sum(n == 0 for n in converged) <= 4
    # The tuned devices really sit within 2 % of their targets (checked against the truth).
    truth = array.ground_truth()["conductance_s"]
    final = truth[devices[:, 0], devices[:, 1]]
    ok = np.array([n is not None for n in counts])
    assert np.median(np.abs(final[ok] / targets[ok] - 1)) < 0.02
