"""The chamber reaches its setpoint with the configured dynamics; the chip lags the air.

Measured as in the lab: log the chamber sensor and the chip temperature while the
(virtual) clock advances, then read the ramp slope, the final error and the chip's lag
off the log.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from nvmlab.clock import VirtualClock
from nvmlab.mocks.thermal import ThermalModel, ThermalParams

RAMP_C_PER_MIN = 3.0
CHIP_TAU_S = 120.0


def make_model(**overrides: float) -> tuple[ThermalModel, VirtualClock]:
    clock = VirtualClock()
    settings: dict[str, float] = {
        "ramp_rate_c_per_s": RAMP_C_PER_MIN / 60.0,
        "chip_time_constant_s": CHIP_TAU_S,
        **overrides,
    }
    params = ThermalParams(**settings)  # type: ignore[arg-type]
    return ThermalModel(clock, params, seed=4), clock


def log(model: ThermalModel, clock: VirtualClock, seconds: float, step_s: float) -> np.ndarray:
    """Rows of (t, sensor, air, chip) every ``step_s`` for ``seconds``."""
    rows = []
    for _ in range(int(round(seconds / step_s))):
        clock.sleep(step_s)
        rows.append(
            (clock.now(), model.sensor_reading_c(), model.air_temperature_c(), model.chip_c)
        )
    return np.array(rows)


def test_ramp_follows_the_configured_rate_and_settles_within_noise() -> None:
    model, clock = make_model(sensor_noise_c=0.05)
    model.setpoint_c = 85.0
    data = log(model, clock, 3 * 3600, 10.0)
    t, sensor = data[:, 0], data[:, 1]
    # The ramp: fit the sensor between 30 C and 75 C.
    on_ramp = (sensor > 30.0) & (sensor < 75.0)
    slope_c_per_s = np.polyfit(t[on_ramp], sensor[on_ramp], 1)[0]
    assert slope_c_per_s * 60.0 == pytest.approx(RAMP_C_PER_MIN, rel=0.02)
    # 60 C at 3 C/min takes 20 min (plus the exponential approach at the end).
    reached = t[np.argmax(np.abs(sensor - 85.0) < 0.5)]
    assert 20 * 60 <= reached <= 20 * 60 + 5 * 60
    # Settled: the last hour is the setpoint plus sensor noise only.
    last_hour = sensor[t > 2 * 3600]
    # 360 readings: 4 sampling errors of their mean (sigma / sqrt(n)) and of their standard
    # deviation (relative 1 / sqrt(2 (n - 1)), 3.7 %)
    assert last_hour.size >= 300
    assert abs(last_hour.mean() - 85.0) < 4 * 0.05 / math.sqrt(last_hour.size)
    assert last_hour.std() == pytest.approx(0.05, rel=4 / math.sqrt(2 * (last_hour.size - 1)))
    assert np.abs(last_hour - 85.0).max() < 5 * 0.05


def test_chip_lags_the_air_by_its_time_constant_on_a_ramp() -> None:
    model, clock = make_model(sensor_noise_c=0.0)
    model.setpoint_c = 125.0  # 100 C at 3 C/min: a 2000 s ramp, over 16 chip time constants
    data = log(model, clock, 1500.0, 1.0)
    t, air, chip = data[:, 0], data[:, 2], data[:, 3]
    # Once the chip's transient has died out, the chip is the air delayed by tau.
    late = t > 1000.0
    delay_s = np.interp(chip[late], air, t) - t[late]
    assert -delay_s.mean() == pytest.approx(CHIP_TAU_S, rel=0.02)
    lag_c = (air - chip)[late]
    assert lag_c.mean() == pytest.approx(RAMP_C_PER_MIN / 60.0 * CHIP_TAU_S, rel=0.02)


def test_chip_follows_a_step_of_the_air_exponentially() -> None:
    # No ramp limit and a fast air: the air steps, the chip follows 1 - exp(-t/tau).
    model, clock = make_model(sensor_noise_c=0.0, ramp_rate_c_per_s=1e6, air_time_constant_s=0.01)
    model.setpoint_c = 75.0
    clock.sleep(CHIP_TAU_S)
    assert model.air_temperature_c() == pytest.approx(75.0, abs=1e-6)
    assert model.chip_temperature_c() == pytest.approx(25.0 + 50.0 * (1 - math.exp(-1)), rel=0.01)


def test_air_follows_a_first_order_lag_when_the_ramp_limit_does_not_bind() -> None:
    model, clock = make_model(sensor_noise_c=0.0, ramp_rate_c_per_s=1e6, air_time_constant_s=60.0)
    model.setpoint_c = 35.0
    clock.sleep(60.0)
    assert model.air_temperature_c() == pytest.approx(25.0 + 10.0 * (1 - math.exp(-1)), rel=1e-3)


def test_standby_lets_the_air_drift_back_to_ambient() -> None:
    model, clock = make_model(sensor_noise_c=0.0)
    model.setpoint_c = 60.0
    clock.sleep(3600)
    assert model.air_temperature_c() == pytest.approx(60.0, abs=0.01)
    model.running = False
    clock.sleep(600)
    assert model.air_temperature_c() == pytest.approx(60.0 - 30.0, abs=0.5)  # ramp-limited
    clock.sleep(3600)
    assert model.air_temperature_c() == pytest.approx(25.0, abs=0.01)
    assert model.chip_temperature_c() == pytest.approx(25.0, abs=0.05)


def test_the_result_does_not_depend_on_how_often_it_is_read() -> None:
    often, clock_often = make_model(sensor_noise_c=0.0)
    rarely, clock_rarely = make_model(sensor_noise_c=0.0)
    often.setpoint_c = rarely.setpoint_c = 100.0
    for _ in range(900):
        clock_often.sleep(1.7)
        often.chip_temperature_c()
    clock_rarely.sleep(900 * 1.7)
    assert rarely.air_temperature_c() == pytest.approx(often.air_temperature_c(), abs=1e-6)
    assert rarely.chip_temperature_c() == pytest.approx(often.chip_temperature_c(), abs=1e-3)


def test_a_very_long_gap_is_bounded_in_cost_and_ends_settled() -> None:
    model, clock = make_model(sensor_noise_c=0.0)
    model.setpoint_c = -20.0
    clock.sleep(30 * 24 * 3600.0)  # a month of virtual time
    assert model.air_temperature_c() == pytest.approx(-20.0, abs=1e-6)
    assert model.chip_temperature_c() == pytest.approx(-20.0, abs=1e-6)


class SteppedReference:
    """The stepwise integration the closed form replaced, with a fine step: the air moves
    by its lag clamped to the ramp rate per step, the chip's lag is solved exactly for
    the air moving linearly across each step; every step's chip temperature is kept."""

    def __init__(self, params: ThermalParams, step_s: float = 0.02) -> None:
        self.p, self.step_s = params, step_s
        self.air_c = self.chip_c = params.ambient_c
        self.times_s: list[float] = [0.0]
        self.chip_log_c: list[float] = [self.chip_c]

    def run(self, seconds: float, target_c: float) -> None:
        p = self.p
        n = max(1, int(math.ceil(seconds / self.step_s)))
        dt = seconds / n
        a_air = math.exp(-dt / p.air_time_constant_s)
        a_chip = math.exp(-dt / p.chip_time_constant_s)
        max_change = p.ramp_rate_c_per_s * dt
        tau_chip = p.chip_time_constant_s
        air, chip, t = self.air_c, self.chip_c, self.times_s[-1]
        for _ in range(n):
            change = max(-max_change, min(max_change, (target_c - air) * (1.0 - a_air)))
            rate = change / dt
            chip = air + change - rate * tau_chip + (chip - air + rate * tau_chip) * a_chip
            air += change
            t += dt
            self.times_s.append(t)
            self.chip_log_c.append(chip)
        self.air_c, self.chip_c = air, chip


#: (duration s, setpoint C) schedules: ramps up and down, a setpoint changed mid-ramp,
#: equilibria, short and very long gaps, read at the end of each entry.
SCHEDULES = {
    "ramp up, settle": [(600.0, 85.0), (1200.0, 85.0), (3.0, 85.0), (4000.0, 85.0)],
    "ramp down": [(4000.0, -20.0)],
    "changed mid-ramp": [(300.0, 150.0), (0.5, 40.0), (700.0, 40.0), (2000.0, 25.0)],
    "small step, no ramp limit": [(10.0, 26.0), (90.0, 26.0), (1000.0, 26.0)],
    "short gaps": [(0.25, 60.0)] * 40 + [(1e-6, 60.0)] * 5,
    "equilibrium": [(100.0, 25.0), (2e4, 25.0)],
    "long gap": [(20.0, 120.0), (2e4, 120.0)],
}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("chip_tau_s", [CHIP_TAU_S, 60.0])  # 60 s: equal to the air's
def test_the_closed_form_matches_the_stepwise_integration(schedule: str, chip_tau_s: float) -> None:
    model, clock = make_model(sensor_noise_c=0.0, chip_time_constant_s=chip_tau_s)
    reference = SteppedReference(model.params)
    for seconds, setpoint_c in SCHEDULES[schedule]:
        model.advance()
        model.setpoint_c = setpoint_c
        clock.sleep(seconds)
        reference.run(seconds, setpoint_c)
        # the fine reference's ramp threshold differs by ramp rate x step / 2 (5e-4 C)
        assert model.air_temperature_c() == pytest.approx(reference.air_c, abs=1e-3)
        assert model.chip_temperature_c() == pytest.approx(reference.chip_c, abs=1e-3)


@pytest.mark.parametrize("schedule", ["ramp up, settle", "changed mid-ramp", "long gap"])
def test_the_chip_log_ages_the_chip_as_the_stepwise_history_does(schedule: str) -> None:
    """The retention integral (Arrhenius-weighted time, 1.1 eV) over the closed form's
    logged samples matches the one over every step of the fine reference."""
    from nvmlab.mocks.physics.base import TemperatureHistory, equivalent_age_s

    model, clock = make_model(sensor_noise_c=0.0)
    reference = SteppedReference(model.params, step_s=0.05)
    for seconds, setpoint_c in SCHEDULES[schedule]:
        model.advance()
        model.setpoint_c = setpoint_c
        clock.sleep(seconds)
        reference.run(seconds, setpoint_c)
    elapsed_s = clock.now()
    history = model.chip_history(0.0)
    assert isinstance(history, TemperatureHistory)
    expected = equivalent_age_s(
        elapsed_s,
        TemperatureHistory(np.array(reference.times_s), np.array(reference.chip_log_c)),
        None,
        1.1,
    )
    assert equivalent_age_s(elapsed_s, history, None, 1.1) == pytest.approx(expected, rel=2e-3)


def test_the_cost_of_catching_up_does_not_grow_with_the_time_elapsed() -> None:
    """A year at equilibrium and a month after a setpoint change log a bounded number of
    samples (the cost of :meth:`ThermalModel.advance` follows the samples it logs)."""
    model, clock = make_model(sensor_noise_c=0.0)
    clock.sleep(365 * 86400.0)
    model.advance()
    assert len(model._chip_log) <= 2
    model.setpoint_c = 150.0
    clock.sleep(30 * 86400.0)
    model.advance()
    assert len(model._chip_log) <= 2 + 2 * 512


def test_chip_history_of_a_settled_chip_is_its_temperature() -> None:
    model, clock = make_model(sensor_noise_c=0.0)
    clock.sleep(100.0)
    assert model.chip_history(0.0) == 25.0
    model.setpoint_c = 30.0
    clock.sleep(50 * 60.0)
    history = model.chip_history(100.0)
    assert not isinstance(history, float)  # a ramp and its approach
    settled_c = model.chip_temperature_c()
    clock.sleep(3 * 86400.0)
    assert model.chip_history(clock.now() - 3 * 86400.0) == pytest.approx(30.0, abs=1e-9)
    assert settled_c == pytest.approx(30.0, abs=0.05)
