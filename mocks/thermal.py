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
from collections.abc import Callable
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
    #: Accepted so bench files written for the former stepwise integration still load
    #: (s, above 0); unused: the model is solved in closed form (see ThermalModel.advance).
    max_step_s: float = 1.0


#: Chip temperature changes smaller than this (C) are not logged for retention.
CHIP_LOG_RESOLUTION_C = 0.01
#: Samples of the chip log kept between two retention updates (thinned beyond).
CHIP_LOG_MAX_SAMPLES = 4096
#: Chip log samples per (shortest) time constant of a phase, for the retention integral ...
_SAMPLES_PER_TIME_CONSTANT = 8
#: ... and at most this many per phase (spread evenly over a longer phase).
_MAX_SAMPLES_PER_PHASE = 512


@dataclass(frozen=True)
class _RampPhase:
    """The air ramping at ``slope_c_per_s`` from ``air0_c``; the chip's lag (time constant
    ``tau_chip_s``) solved exactly for a linearly moving air, from ``chip0_c``."""

    air0_c: float
    chip0_c: float
    slope_c_per_s: float
    tau_chip_s: float

    def at(self, s: float) -> tuple[float, float]:
        """(air, chip) in C, ``s`` seconds into the phase."""
        lag = self.slope_c_per_s * self.tau_chip_s
        air = self.air0_c + self.slope_c_per_s * s
        chip = air - lag + (self.chip0_c - self.air0_c + lag) * math.exp(-s / self.tau_chip_s)
        return air, chip


@dataclass(frozen=True)
class _LagPhase:
    """The air relaxing exponentially (``tau_air_s``) from ``air0_c`` to ``target_c``, the
    chip following it with its own lag (``tau_chip_s``) from ``chip0_c``: both exact."""

    target_c: float
    air0_c: float
    chip0_c: float
    tau_air_s: float
    tau_chip_s: float

    def at(self, s: float) -> tuple[float, float]:
        """(air, chip) in C, ``s`` seconds into the phase."""
        ta, tc, target = self.tau_air_s, self.tau_chip_s, self.target_c
        d_air = self.air0_c - target
        e_air, e_chip = math.exp(-s / ta), math.exp(-s / tc)
        air = target + d_air * e_air
        if abs(ta - tc) <= _EQUAL_TAU_RELATIVE * max(ta, tc):
            # equal time constants: the chip's driven term is resonant, d_air s / tau e^(-s/tau)
            chip = target + (d_air * s / tc + (self.chip0_c - target)) * e_chip
        else:
            c = d_air * ta / (ta - tc)
            chip = target + c * e_air + (self.chip0_c - target - c) * e_chip
        return air, chip


#: Time constants (of the slower lag) after which an exponential phase has settled.
_SETTLED_TIME_CONSTANTS = 40.0
#: Time constants closer than this (relative) are solved as equal.
_EQUAL_TAU_RELATIVE = 1e-9


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
        """Bring air and chip temperatures up to the clock's present time.

        Solved in closed form for the constant target since the last call, so the cost
        does not depend on the time elapsed: a ramp-limited phase (the air linear at the
        ramp rate while it is further from the target than ramp rate x air time constant)
        then an exponential phase (both lags solved exactly). The chip's temperature is
        logged at the phase boundaries and at a bounded number of instants in between.
        """
        with self._lock:
            now = self.clock.now()
            if now <= self._t:
                return
            target = self.target_c
            if self.air_c == target and self.chip_c == target:
                self._t = now  # at equilibrium nothing moves
                return
            p = self.params
            t = self._t
            air, chip = self.air_c, self.chip_c
            rate, tau_air = p.ramp_rate_c_per_s, p.air_time_constant_s
            gap = target - air
            if abs(gap) > rate * tau_air:
                ramp = _RampPhase(air, chip, math.copysign(rate, gap), p.chip_time_constant_s)
                duration = min(now - t, (abs(gap) - rate * tau_air) / rate)
                air, chip = self._log_phase(
                    ramp.at, t, duration, p.chip_time_constant_s, window_s=duration
                )
                t += duration
            if now > t:
                lag = _LagPhase(target, air, chip, tau_air, p.chip_time_constant_s)
                taus = (tau_air, p.chip_time_constant_s)
                settled_s = _SETTLED_TIME_CONSTANTS * max(taus)  # nothing moves after it
                duration = now - t
                air, chip = self._log_phase(
                    lag.at, t, duration, min(taus), window_s=min(duration, settled_s)
                )
            log = self._chip_log
            if log[-1][0] < now:
                log.append((now, chip))
            if len(log) > CHIP_LOG_MAX_SAMPLES:  # keep the first and last, thin the rest
                self._chip_log = [log[0], *log[1:-1:2], log[-1]]
            self.air_c, self.chip_c = air, chip
            self._t = now

    def _log_phase(
        self,
        at: Callable[[float], tuple[float, float]],
        t0: float,
        duration: float,
        tau: float,
        *,
        window_s: float,
    ) -> tuple[float, float]:
        """(air, chip) at the end of a phase of ``duration`` (s) starting at clock time ``t0``
        whose solution is ``at(s since its start)``. Logs the chip's samples that moved more
        than the log's resolution: over the first ``window_s`` (s) of the phase every ``tau``
        (s) / :data:`_SAMPLES_PER_TIME_CONSTANT` (at most :data:`_MAX_SAMPLES_PER_PHASE`,
        spread evenly over a longer window), and at its end."""
        log = self._chip_log
        n = min(_MAX_SAMPLES_PER_PHASE, math.ceil(window_s * _SAMPLES_PER_TIME_CONSTANT / tau))
        for k in range(1, n + 1 if window_s < duration else n):
            s = window_s * k / n
            _, chip = at(s)
            if abs(chip - log[-1][1]) > CHIP_LOG_RESOLUTION_C:
                log.append((t0 + s, chip))
        air, chip = at(duration)
        if abs(chip - log[-1][1]) > CHIP_LOG_RESOLUTION_C:
            log.append((t0 + duration, chip))
        return air, chip

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
            if len(log) == 1:  # nothing logged since: the chip held the logged temperature
                return log[0][1]
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
