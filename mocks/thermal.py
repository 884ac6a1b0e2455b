"""Thermal model of the chamber air and the chip under test.

The air follows the chamber setpoint as a first-order lag whose rate is capped by the
chamber's ramp-rate limit; the chip follows the air with a second first-order lag. The
chamber's sensor adds Gaussian noise to what it reports. Time comes from the shared clock,
so the model is advanced lazily to ``clock.now()`` whenever it is read.

Defaults (assumed, typical of benchtop chambers): air time constant 60 s, ramp limit
3 C/min, chip time constant 120 s, sensor noise 0.05 C (1 sigma).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from nvmlab.clock import Clock
from nvmlab.mocks.physics.base import TemperatureHistory


@dataclass
class ThermalParams:
    """Thermal dynamics; temperatures in C, times in s, rates in C/s."""

    ambient_c: float = 25.0
    air_time_constant_s: float = 60.0
    ramp_rate_c_per_s: float = 3.0 / 60.0
    chip_time_constant_s: float = 120.0
    sensor_noise_c: float = 0.05
    min_setpoint_c: float = -40.0
    max_setpoint_c: float = 180.0
    #: Integration step (s); the model is exact for a constant target between steps.
    max_step_s: float = 1.0


#: Chip temperature changes smaller than this (C) are not logged for retention.
CHIP_LOG_RESOLUTION_C = 0.01
#: Samples of the chip log kept between two retention updates (thinned beyond).
CHIP_LOG_MAX_SAMPLES = 4096


class ThermalModel:
    """Chamber air and chip temperatures following a setpoint.

    ``running=False`` (standby / off) lets the air drift back to ambient with the same lag.
    """

    def __init__(self, clock: Clock, params: ThermalParams | None = None, *, seed: int = 0) -> None:
        self.clock = clock
        self.params = params or ThermalParams()
        self.setpoint_c = self.params.ambient_c
        self.running = True
        self.air_c = self.params.ambient_c
        self.chip_c = self.params.ambient_c
        self._t = clock.now()
        #: (time s, chip C) samples since the last :meth:`chip_history`, for retention
        #: integrated over the temperature the chip actually had
        self._chip_log: list[tuple[float, float]] = [(self._t, self.chip_c)]
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        #: Sensor fault flag set by the chamber firmware's fault injection (information only:
        #: each controller reports a broken sensor its own way).
        self.sensor_fault: bool = False

    @property
    def target_c(self) -> float:
        return self.setpoint_c if self.running else self.params.ambient_c

    def advance(self) -> None:
        """Bring air and chip temperatures up to the clock's present time."""
        with self._lock:
            now = self.clock.now()
            dt_total = now - self._t
            if dt_total <= 0:
                return
            p = self.params
            # Many small steps are cheap; bound the count for very long gaps by widening steps
            # (the lag solutions are exact per step for a constant target).
            n = max(1, min(int(math.ceil(dt_total / p.max_step_s)), 20000))
            dt = dt_total / n
            a_air = math.exp(-dt / p.air_time_constant_s)
            a_chip = math.exp(-dt / p.chip_time_constant_s)
            max_change = p.ramp_rate_c_per_s * dt
            target = self.target_c
            air, chip = self.air_c, self.chip_c
            tau_chip = p.chip_time_constant_s
            log = self._chip_log
            t_step = self._t
            for _ in range(n):
                change = (target - air) * (1.0 - a_air)
                change = max(-max_change, min(max_change, change))
                # The chip's lag solved exactly for air moving linearly across the step.
                rate = change / dt
                chip = air + change - rate * tau_chip + (chip - air + rate * tau_chip) * a_chip
                air += change
                t_step += dt
                if abs(chip - log[-1][1]) > CHIP_LOG_RESOLUTION_C:
                    log.append((t_step, chip))
            if log[-1][0] < now:
                log.append((now, chip))
            if len(log) > CHIP_LOG_MAX_SAMPLES:  # keep the first and last, thin the rest
                self._chip_log = [log[0], *log[1:-1:2], log[-1]]
            self.air_c, self.chip_c = air, chip
            self._t = now

    def chip_history(self, since_s: float) -> float | TemperatureHistory:
        """The chip temperature from ``since_s`` (s, clock time) to now, for retention.

        A constant temperature comes back as a number (C); otherwise a
        :class:`~nvmlab.mocks.physics.base.TemperatureHistory` of the logged samples.
        Samples before now are dropped: call it once per interval (the world does, when
        the chip relaxes).
        """
        self.advance()
        with self._lock:
            log = self._chip_log
            times = np.array([t for t, _ in log], dtype=float)
            temps = np.array([c for _, c in log], dtype=float)
            self._chip_log = [log[-1]]
        keep = times > since_s
        start_c = float(np.interp(since_s, times, temps))
        t = np.concatenate(([0.0], times[keep] - since_s))
        c = np.concatenate(([start_c], temps[keep]))
        if np.ptp(c) <= CHIP_LOG_RESOLUTION_C:
            return float(c[-1])
        strictly = np.concatenate(([True], np.diff(t) > 0))
        return TemperatureHistory(t[strictly], c[strictly])

    def air_temperature_c(self) -> float:
        self.advance()
        return self.air_c

    def chip_temperature_c(self) -> float:
        self.advance()
        return self.chip_c

    def sensor_reading_c(self) -> float:
        """What the chamber's own sensor reports (air temperature plus sensor noise)."""
        self.advance()
        return self.air_c + float(self._rng.normal(0.0, self.params.sensor_noise_c))
