"""Retention integrates over the temperature the chip actually had.

Charge loss (eFlash) and relaxation (memristor) run on an Arrhenius-accelerated age; a
bake between two room-temperature reads must age the chip as the bake did, and reading
during the bake must not change the answer.
"""

from __future__ import annotations

import numpy as np
import pytest

from nvmlab.clock import VirtualClock
from nvmlab.mocks.physics.base import LineBias, TemperatureHistory, scheme_bias
from nvmlab.mocks.physics.eflash import EflashArray
from nvmlab.mocks.physics.memristor import MemristorArray, MemristorParams
from nvmlab.mocks.thermal import ThermalModel

HOUR_S = 3600.0


def programmed_eflash() -> EflashArray:
    array = EflashArray(2, 2, seed=8)
    array.stress(array.pulse_bias(0, 0, 4.6, "v/2"), 2e-6, 25.0)
    return array


def programmed_memristor() -> MemristorArray:
    array = MemristorArray(4, 4, seed=21, params=MemristorParams(defect_rate=0.0))
    bias = scheme_bias(4, 4, 2, 2, float(array.set_threshold_v[2, 2]) + 0.1, "v/2")
    assert array.stress(bias, 1e-3, 25.0)
    return array


def chamber_bake(bake_c: float, bake_s: float, cool_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Chip temperature (C) every second of a chamber bake: setpoint ``bake_c`` for
    ``bake_s``, then back to 25 C for ``cool_s`` (the thermal model's lags and ramp limit)."""
    clock = VirtualClock()
    thermal = ThermalModel(clock)
    times, temps = [0.0], [thermal.chip_temperature_c()]
    thermal.setpoint_c = bake_c
    for t in range(1, int(bake_s + cool_s) + 1):
        if t == int(bake_s) + 1:
            thermal.setpoint_c = 25.0
        clock.sleep(1.0)
        times.append(float(t))
        temps.append(thermal.chip_temperature_c())
    return np.array(times), np.array(temps)


def eflash_loss_v(array: EflashArray, v0: float) -> float:
    return float(v0 - array.vth_v[0, 0])


def test_an_hour_at_85_c_between_two_room_temperature_reads_loses_what_an_85_c_hour_loses() -> None:
    # A step profile: 25 C at both reads, 85 C for the hour in between (1 s edges).
    history = TemperatureHistory(
        np.array([0.0, 1.0, HOUR_S - 1.0, HOUR_S]), np.array([25.0, 85.0, 85.0, 25.0])
    )
    baked, hot, cold = programmed_eflash(), programmed_eflash(), programmed_eflash()
    v0 = float(baked.vth_v[0, 0])
    baked.relax(HOUR_S, history)
    hot.relax(HOUR_S, 85.0)
    cold.relax(HOUR_S, 25.0)
    # the 2 s of edges at up to 85 C are 2 / 3600 of the hour: the bake loses what 85 C
    # loses for 3598-3600 s, i.e. within 1e-4 of the 85 C hour's loss (log-time law)
    assert eflash_loss_v(baked, v0) == pytest.approx(eflash_loss_v(hot, v0), rel=1e-3)
    assert eflash_loss_v(baked, v0) > 1.5 * eflash_loss_v(cold, v0)


@pytest.mark.parametrize("kind", ["eflash", "memristor"])
def test_reading_every_minute_during_a_chamber_bake_gives_the_same_loss(kind: str) -> None:
    times, temps = chamber_bake(85.0, HOUR_S, HOUR_S / 2)
    assert temps.max() > 84.0 and temps[-1] < 30.0  # the chip really baked and cooled
    build = programmed_eflash if kind == "eflash" else programmed_memristor
    once, every_minute, every_second = build(), build(), build()
    state = "vth_v" if kind == "eflash" else "g_s"
    before = getattr(once, state).copy()
    # no read during the bake: one relax with the whole history
    once.relax(times[-1], TemperatureHistory(times, temps))
    # a read every minute: each relax gets the temperatures at its two ends
    for start in range(0, len(times) - 1, 60):
        end = min(start + 60, len(times) - 1)
        every_minute.relax(times[end] - times[start], temps[start], temps[end])
    # reference: a read every second at the mean temperature of that second
    for i in range(len(times) - 1):
        every_second.relax(1.0, 0.5 * (temps[i] + temps[i + 1]))
    change = {
        name: float(np.abs(getattr(a, state) - before).max())
        for name, a in (("once", once), ("minute", every_minute), ("second", every_second))
    }
    assert change["second"] > 0
    # The midpoint rule per second and the per-minute linear ends differ from the exact
    # integral by well under 0.1 % of the age here, so the losses agree to 0.1 %.
    assert change["once"] == pytest.approx(change["second"], rel=1e-3)
    assert change["minute"] == pytest.approx(change["second"], rel=1e-3)


def test_a_temperature_history_is_validated() -> None:
    array = programmed_eflash()
    with pytest.raises(ValueError, match="times_s"):
        array.relax(10.0, TemperatureHistory(np.array([0.0, 5.0, 3.0]), np.array([25.0] * 3)))
    with pytest.raises(ValueError, match="times_s"):
        array.relax(10.0, TemperatureHistory(np.array([1.0, 5.0]), np.array([25.0, 30.0])))
    with pytest.raises(ValueError, match="temperatures_c"):
        array.relax(10.0, TemperatureHistory(np.array([0.0, 5.0]), np.array([25.0])))
    # the old two-argument call keeps working (constant temperature)
    array.relax(10.0, 25.0)
    assert LineBias.grounded(2, 2).row_v.shape == (2,)


def test_equivalent_age_of_a_ramp_is_the_integral_of_the_arrhenius_factor() -> None:
    from nvmlab.mocks.physics.base import arrhenius_factor, equivalent_age_s

    # a 25 -> 85 C ramp over 100 s, against a trapezoid sum on 200 001 points (its own
    # error is below 1e-8 relative here)
    t = np.linspace(0.0, 100.0, 200_001)
    reference = float(np.trapezoid(arrhenius_factor(25.0 + 0.6 * t, 1.1), t))
    assert equivalent_age_s(100.0, 25.0, 85.0, 1.1) == pytest.approx(reference, rel=1e-7)
    history = TemperatureHistory(np.array([0.0, 100.0]), np.array([25.0, 85.0]))
    assert equivalent_age_s(100.0, history, None, 1.1) == pytest.approx(reference, rel=1e-7)
    # a constant temperature is elapsed x the Arrhenius factor
    assert equivalent_age_s(50.0, 85.0, None, 1.1) == pytest.approx(
        50.0 * float(arrhenius_factor(85.0, 1.1)), rel=1e-12
    )
