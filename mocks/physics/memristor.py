"""Passive Pt/Al2O3/TiO2-x memristor crossbar (0T1R), vectorized over the array.

The model, every parameter's default and its source (Nili 2020, Fahimi 2021, Kim 2021,
Prezioso 2015, Bayat 2018; "assumed" where no publication fixed a value) are in
``docs/devices.md``, which also defines the conductance (I(V_read) / V_read at 0.2 V,
25 C, noiseless) and the switching threshold (the 1 ms pulse amplitude that changes the
conductance by 2 %) that :meth:`MemristorArray.ground_truth` reports. In short, per
device:

- **State**: the linear conductance ``g`` (S) at 25 C; the conductance of the definition
  is ``g (1 + b V_read^2)``.
- **I-V**: ``I = G V (1 + b V^2)`` with ``G = g + k_T (T - 25 C)`` (floored at 5 % of g).
- **Switching** under a bias V held for t: above ``f * Vth`` the log-conductance moves at
  ``k = L0 / 1 ms * exp((|V| - Vth) / v0) * h(|V| / Vth)``, linear in time, with a
  logistic saturation towards the window's edges and a lognormal cycle-to-cycle factor.
- **Thresholds**: lognormal cut to :data:`THRESHOLD_RANGE_REL` x the mean, its
  parameters solved so that the cut distribution has the requested mean and CV.
- **Read noise** of one read over NPLC power-line cycles: ``read_noise_rel G`` (device)
  plus ``read_noise_abs_s / sqrt(NPLC)`` (instrument), plus random telegraph noise on
  some devices (the split is assumed).
- **Relaxation** after programming: ``a log10(1 + t_eff / t0)`` back towards where the
  device came from, t_eff the Arrhenius-weighted age integrated over the temperature
  history (:func:`~nvmlab.mocks.physics.base.equivalent_age_s`); a pulse that changes the
  device by less than ``relax_restart_rel`` (a half-select disturbance) leaves that
  relaxation running instead of restarting it.
- **Defects** (stuck-off, stuck-on) ignore every pulse; **virgin** devices (optional)
  switch only once a positive bias reaches their forming voltage.

The switching-rate slope is calibrated against the conventional fixed-ramp protocol of
``docs/devices.md`` (``tests/mocks/physics/test_physics_calibration.py``).

Device parameters are drawn from ``np.random.default_rng(seed)`` (same seed, same chip);
noise and cycle-to-cycle draws come from a separate generator seeded from the same seed.
Switching does not depend on temperature.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nvmlab.errors import ConfigError
from nvmlab.mocks.physics.base import (
    BOLTZMANN_EV_PER_K as BOLTZMANN_EV_PER_K,  # re-exported: imported from here before
)
from nvmlab.mocks.physics.base import (
    T_REF_C,
    LineBias,
    LineSolution,
    TemperatureHistory,
    check_nplc,
    equivalent_age_s,
)
from nvmlab.mocks.physics.base import (
    arrhenius_factor as arrhenius_factor,  # re-exported: imported from here before
)
from nvmlab.mocks.physics.circuit import solve_crossbar
from nvmlab.mocks.physics.params import (
    from_table,
    ranged,
    require_initial_range_within,
    require_less,
)
from nvmlab.mocks.physics.state import ChipState

T_REF_K = T_REF_C + 273.15
#: Pulse width (s) at which the threshold definition holds.
THRESHOLD_PULSE_S = 1e-3
#: Relative change (set: +2 %, reset: -2 %) of one threshold pulse.
THRESHOLD_CHANGE_REL = 0.02
#: Noise-generator stream tag (mixed with the seed).
_NOISE_STREAM = 0x6E6F697365

#: Thresholds are drawn within this range of their mean (x mean): the low cut keeps every
#: device's switching floor (``switching_floor_fraction`` x threshold, 0.25 V for the
#: default 1.0 V mean) above a 0.2 V read, the high cut keeps thresholds below the write
#: limit. The published range is 0.6-1.5 V for a 1.0 V mean.
THRESHOLD_RANGE_REL = (0.5, 2.5)
#: Largest threshold CV the cut distribution can realise with room to spare (the cut
#: lognormal's CV tends to about 0.48 as its log-sigma grows without bound).
THRESHOLD_CV_MAX = 0.45

# Device classes in the ground truth's "defect" map.
FUNCTIONAL, STUCK_OFF, STUCK_ON = 0, 1, 2


@dataclass
class MemristorParams:
    """Memristor crossbar parameters; units are in the names (S, V, s, K, eV, rel = 1)."""

    # -- conductance window ---------------------------------------------------------
    g_min_s: float = ranged(1e-6, 1e-9, 1e-3, "lowest conductance reset can reach (S)")
    g_max_s: float = ranged(300e-6, 1e-6, 1e-2, "highest conductance set can reach (S)")
    initial_conductance_min_s: float = ranged(5e-6, 1e-9, 1e-2, "as-delivered state, low end (S)")
    initial_conductance_max_s: float = ranged(
        100e-6, 1e-9, 1e-2, "as-delivered state, high end (S)"
    )
    read_voltage_v: float = ranged(0.2, 0.01, 0.4, "read voltage of the conductance definition (V)")
    # -- I-V and temperature ----------------------------------------------------------
    iv_cubic_b_per_v2: float = ranged(1.5, 0.0, 10.0, "cubic I-V coefficient b (V^-2), mean")
    iv_cubic_b_cv: float = ranged(0.1, 0.0, 1.0, "device-to-device CV of b (assumed)")
    temp_coeff_s_per_k: float = ranged(0.117e-6, 0.0, 1e-5, "additive conductance shift (S/K)")
    temp_coeff_cv: float = ranged(0.1, 0.0, 1.0, "device-to-device CV of the shift (assumed)")
    # -- switching ----------------------------------------------------------------------
    set_threshold_mean_v: float = ranged(1.0, 0.1, 5.0, "mean set threshold (V)")
    reset_threshold_mean_v: float = ranged(1.1, 0.1, 5.0, "mean reset threshold magnitude (V)")
    threshold_cv: float = ranged(
        0.25, 0.0, THRESHOLD_CV_MAX, "device-to-device threshold CV (realised)"
    )
    switching_slope_v: float = ranged(
        0.05, 0.002, 1.0, "overdrive per e-fold of switching rate (V)"
    )
    switching_floor_fraction: float = ranged(0.5, 0.0, 0.99, "no switching below this x threshold")
    cycle_spread_cv: float = ranged(0.3, 0.0, 3.0, "cycle-to-cycle CV of the change (lognormal)")
    # -- noise ----------------------------------------------------------------------
    read_noise_rel: float = ranged(0.002, 0.0, 0.5, "read noise, relative part (1 sigma)")
    read_noise_abs_s: float = ranged(0.02e-6, 0.0, 1e-4, "read noise, absolute part (S, 1 sigma)")
    rtn_fraction: float = ranged(0.05, 0.0, 1.0, "fraction of devices with telegraph noise")
    rtn_amplitude_min_rel: float = ranged(0.005, 0.0, 0.5, "telegraph step, smallest (rel)")
    rtn_amplitude_max_rel: float = ranged(0.02, 0.0, 0.5, "telegraph step, largest (rel)")
    rtn_dwell_min_s: float = ranged(1e-3, 1e-9, 1e6, "telegraph mean dwell time, shortest (s)")
    rtn_dwell_max_s: float = ranged(10.0, 1e-9, 1e6, "telegraph mean dwell time, longest (s)")
    # -- retention -------------------------------------------------------------------
    relax_per_decade_rel: float = ranged(
        0.0005, 0.0, 0.1, "relaxation per decade of time (rel), mean over devices"
    )
    relax_per_decade_cv: float = ranged(
        0.25, 0.0, 2.0, "device-to-device CV of the relaxation per decade (assumed)"
    )
    relax_time_s: float = ranged(1.0, 1e-6, 1e6, "time origin of the log-time relaxation (s)")
    relax_restart_rel: float = ranged(
        0.001, 0.0, 0.1, "smallest change (rel) that restarts a device's relaxation"
    )
    relax_activation_ev: float = ranged(1.0, 0.0, 3.0, "Arrhenius activation energy (eV)")
    # -- defects and forming ------------------------------------------------------------
    defect_rate: float = ranged(0.01, 0.0, 1.0, "fraction of stuck devices")
    stuck_on_fraction: float = ranged(0.4, 0.0, 1.0, "share of the defects that are stuck-on")
    stuck_off_max_s: float = ranged(1e-6, 1e-10, 1e-4, "stuck-off devices are below this (S)")
    stuck_on_min_s: float = ranged(300e-6, 1e-6, 1e-2, "stuck-on devices are above this (S)")
    virgin: bool = False
    forming_voltage_mean_v: float = ranged(2.2, 0.5, 3.0, "mean forming voltage (V)")
    forming_voltage_cv: float = ranged(0.08, 0.0, 0.5, "device-to-device CV of forming voltage")
    virgin_conductance_max_s: float = ranged(0.5e-6, 1e-10, 1e-4, "virgin devices are below (S)")
    formed_conductance_min_s: float = ranged(6.7e-6, 1e-8, 1e-2, "formed state, low end (S)")
    formed_conductance_max_s: float = ranged(200e-6, 1e-8, 1e-2, "formed state, high end (S)")

    @classmethod
    def from_table(
        cls, table: Mapping[str, Any] | None, *, section: str = "memristor"
    ) -> MemristorParams:
        """Build from a bench-file table; ConfigError names any bad field and its range."""
        return from_table(cls, table, section=section)

    def check(self, section: str = "memristor") -> None:
        """Cross-field checks (ConfigError)."""
        require_initial_range_within(
            self,
            section,
            ("initial_conductance_min_s", "initial_conductance_max_s"),
            ("g_min_s", "g_max_s"),
            "the switching window",
        )
        require_less(
            section,
            "rtn_amplitude_min_rel",
            self.rtn_amplitude_min_rel,
            "rtn_amplitude_max_rel",
            self.rtn_amplitude_max_rel + 1e-30,
        )
        require_less(
            section,
            "rtn_dwell_min_s",
            self.rtn_dwell_min_s,
            "rtn_dwell_max_s",
            self.rtn_dwell_max_s * (1 + 1e-12),
        )
        require_less(
            section,
            "formed_conductance_min_s",
            self.formed_conductance_min_s,
            "formed_conductance_max_s",
            self.formed_conductance_max_s + 1e-30,
        )


def lognormal(
    rng: np.random.Generator, mean: float, cv: float, shape: tuple[int, ...]
) -> np.ndarray:
    """Lognormal draws with the given mean and coefficient of variation."""
    if cv <= 0:
        return np.full(shape, float(mean))
    sigma = math.sqrt(math.log1p(cv * cv))
    return mean * np.exp(rng.normal(-0.5 * sigma * sigma, sigma, shape))


def _std_normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _cut_lognormal_moments(mu: float, sigma: float) -> tuple[float, float] | None:
    """Mean and CV of exp(N(mu, sigma^2)) cut to :data:`THRESHOLD_RANGE_REL` (None when
    the cut holds no probability in floating point)."""
    la, lb = (math.log(x) for x in THRESHOLD_RANGE_REL)
    alpha, beta = (la - mu) / sigma, (lb - mu) / sigma
    mass = _std_normal_cdf(beta) - _std_normal_cdf(alpha)
    if mass <= 0:
        return None
    # E[X^k | cut] = exp(k mu + k^2 sigma^2 / 2) (Phi(beta - k sigma) - Phi(alpha - k sigma))
    #                / (Phi(beta) - Phi(alpha))
    m1 = (
        math.exp(mu + sigma * sigma / 2)
        * (_std_normal_cdf(beta - sigma) - _std_normal_cdf(alpha - sigma))
        / mass
    )
    m2 = (
        math.exp(2 * mu + 2 * sigma * sigma)
        * (_std_normal_cdf(beta - 2 * sigma) - _std_normal_cdf(alpha - 2 * sigma))
        / mass
    )
    return m1, math.sqrt(max(m2 - m1 * m1, 0.0)) / m1


def _mu_for_unit_mean(sigma: float) -> float:
    """The log-mean mu for which the cut lognormal of log-sigma ``sigma`` has mean 1
    (bisection: the cut mean rises monotonically with mu)."""
    lo, hi = -20.0, 20.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        moments = _cut_lognormal_moments(mid, sigma)
        mean = (
            (THRESHOLD_RANGE_REL[1] if mid > 0 else THRESHOLD_RANGE_REL[0])
            if (moments is None)
            else moments[0]
        )
        if mean < 1.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@functools.lru_cache(maxsize=64)
def cut_lognormal_parameters(cv: float) -> tuple[float, float]:
    """(mu, sigma) of the lognormal whose cut to :data:`THRESHOLD_RANGE_REL` has mean 1 and
    coefficient of variation ``cv`` (0 < cv <= :data:`THRESHOLD_CV_MAX`; ValueError
    otherwise). The cut CV rises monotonically with sigma: bisection."""
    if not 0 < cv <= THRESHOLD_CV_MAX:
        raise ValueError(
            f"threshold CV {cv!r} is not allowed; allowed above 0 up to {THRESHOLD_CV_MAX}"
        )
    lo, hi = 1e-6, 3.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        moments = _cut_lognormal_moments(_mu_for_unit_mean(mid), mid)
        assert moments is not None
        if moments[1] < cv:
            lo = mid
        else:
            hi = mid
    sigma = 0.5 * (lo + hi)
    return _mu_for_unit_mean(sigma), sigma


def truncated_lognormal_moments(mean: float, cv: float) -> tuple[float, float]:
    """Exact mean and CV of the distribution :func:`truncated_lognormal` draws from."""
    if cv <= 0:
        return float(mean), 0.0
    moments = _cut_lognormal_moments(*cut_lognormal_parameters(cv))
    assert moments is not None
    return mean * moments[0], moments[1]


def truncated_lognormal(
    rng: np.random.Generator, mean: float, cv: float, shape: tuple[int, ...]
) -> np.ndarray:
    """Threshold draws: a lognormal cut to :data:`THRESHOLD_RANGE_REL` x ``mean`` (out-of-range
    draws are redrawn, which samples the cut distribution exactly) whose parameters are
    solved so that the cut distribution has mean ``mean`` and CV ``cv``."""
    if cv <= 0:
        return np.full(shape, float(mean))
    mu, sigma = cut_lognormal_parameters(float(cv))
    lo, hi = THRESHOLD_RANGE_REL[0] * mean, THRESHOLD_RANGE_REL[1] * mean
    values = mean * np.exp(rng.normal(mu, sigma, shape))
    for _ in range(200):
        outside = (values < lo) | (values > hi)
        if not outside.any():
            break
        values[outside] = mean * np.exp(rng.normal(mu, sigma, int(outside.sum())))
    return np.clip(values, lo, hi)


def log_uniform(
    rng: np.random.Generator, lo: float, hi: float, shape: tuple[int, ...] | int
) -> np.ndarray:
    """Draws uniform in log between ``lo`` and ``hi``."""
    return np.exp(rng.uniform(math.log(lo), math.log(hi), shape))


# Arrays that make up the chip: fixed parameters and the state that pulses change.
_FIXED = (
    "set_threshold_v",
    "reset_threshold_mag_v",
    "iv_cubic_b_per_v2",
    "temp_coeff_s_per_k",
    "defect",
    "rtn_amplitude_rel",
    "rtn_dwell_s",
    "relax_per_decade_rel",
    "forming_voltage_v",
)
_STATE = ("g_prog_s", "age_s", "relax_sign", "formed", "rtn_high", "g_s", "pulse_count")
#: A device "receives" a pulse when it sees the interval's largest device voltage within
#: this relative tolerance (the selected device; the whole line in the "ground" scheme).
_FULL_PULSE_REL = 1e-6


class MemristorArray(ChipState):
    """A passive memristor crossbar; implements :class:`~nvmlab.mocks.physics.base.ArrayPhysics`."""

    kind = "memristor"
    state_arrays = (*_FIXED, *_STATE)
    params_class = MemristorParams

    def __init__(
        self, rows: int, cols: int, *, seed: int = 0, params: MemristorParams | None = None
    ) -> None:
        if rows < 1 or cols < 1:
            raise ConfigError(
                f"array size {rows} x {cols} is not allowed; rows and cols must be >= 1"
            )
        self.rows, self.cols = int(rows), int(cols)
        self.seed = int(seed)
        self.params = params if params is not None else MemristorParams()
        self._draw_chip()
        self._noise = np.random.default_rng([self.seed, _NOISE_STREAM])
        self._refresh_limits()

    # -- construction ---------------------------------------------------------------
    def _draw_chip(self) -> None:
        p, shape = self.params, (self.rows, self.cols)
        rng = np.random.default_rng(self.seed)
        self.set_threshold_v = truncated_lognormal(
            rng, p.set_threshold_mean_v, p.threshold_cv, shape
        )
        self.reset_threshold_mag_v = truncated_lognormal(
            rng, p.reset_threshold_mean_v, p.threshold_cv, shape
        )
        self.iv_cubic_b_per_v2 = lognormal(rng, p.iv_cubic_b_per_v2, p.iv_cubic_b_cv, shape)
        self.temp_coeff_s_per_k = p.temp_coeff_s_per_k * np.maximum(
            1.0 + p.temp_coeff_cv * rng.standard_normal(shape), 0.0
        )
        defective = rng.random(shape) < p.defect_rate
        stuck_on = defective & (rng.random(shape) < p.stuck_on_fraction)
        self.defect = np.where(
            stuck_on, STUCK_ON, np.where(defective, STUCK_OFF, FUNCTIONAL)
        ).astype(np.int8)
        g = log_uniform(rng, p.initial_conductance_min_s, p.initial_conductance_max_s, shape)
        g_off = log_uniform(rng, 0.1 * p.stuck_off_max_s, 0.8 * p.stuck_off_max_s, shape)
        g_on = log_uniform(rng, 1.2 * p.stuck_on_min_s, 3.0 * p.stuck_on_min_s, shape)
        g_virgin = log_uniform(
            rng, 0.1 * p.virgin_conductance_max_s, 0.9 * p.virgin_conductance_max_s, shape
        )
        has_rtn = rng.random(shape) < p.rtn_fraction
        self.rtn_amplitude_rel = np.where(
            has_rtn, rng.uniform(p.rtn_amplitude_min_rel, p.rtn_amplitude_max_rel, shape), 0.0
        )
        self.rtn_dwell_s = log_uniform(
            rng, p.rtn_dwell_min_s, p.rtn_dwell_max_s * (1 + 1e-12), shape
        )
        self.relax_per_decade_rel = lognormal(
            rng, p.relax_per_decade_rel, p.relax_per_decade_cv, shape
        )
        self.forming_voltage_v = lognormal(
            rng, p.forming_voltage_mean_v, p.forming_voltage_cv, shape
        )
        self.rtn_high = rng.random(shape) < 0.5
        if p.virgin:
            g = g_virgin
        g = np.where(self.defect == STUCK_OFF, g_off, np.where(self.defect == STUCK_ON, g_on, g))
        self.formed = np.full(shape, not p.virgin) & (self.defect == FUNCTIONAL)
        self.g_s = g
        self.g_prog_s = g.copy()
        self.age_s = np.zeros(shape)
        self.relax_sign = np.zeros(shape)
        self.pulse_count = np.zeros(shape, dtype=np.int64)

    def _refresh_limits(self) -> None:
        """Cache what the cheap "nothing can switch" test of :meth:`stress` and the
        telegraph flips of :meth:`relax` need (from the fixed parameters and the formed
        state: refreshed whenever those change)."""
        f = self.params.switching_floor_fraction
        self._switchable = (self.defect == FUNCTIONAL) & self.formed
        self._unformed = (self.defect == FUNCTIONAL) & ~self.formed
        self._set_floor_v = f * self.set_threshold_v
        self._reset_floor_v = f * self.reset_threshold_mag_v
        quiet = [math.inf]
        if self._switchable.any():
            quiet.append(float(self._set_floor_v[self._switchable].min()))
            quiet.append(float(self._reset_floor_v[self._switchable].min()))
        if self._unformed.any():
            quiet.append(float(self.forming_voltage_v[self._unformed].min()))
        #: Below this line-voltage span (V) no device can change: stress returns at once.
        self.quiet_span_v = min(quiet)
        #: The devices with telegraph noise and their mean dwell times (s), for relax.
        self._rtn_mask = self.rtn_amplitude_rel > 0
        self._rtn_dwell_s = self.rtn_dwell_s[self._rtn_mask]

    # -- conductance ------------------------------------------------------------------
    def _temp_coeff(self) -> np.ndarray:
        """Temperature coefficient (S/K); devices without a filament follow 0.2 %/K of g."""
        return np.where(
            self.formed | (self.defect == STUCK_ON), self.temp_coeff_s_per_k, 0.002 * self.g_s
        )

    def conductance_at(self, temperature_c: float) -> np.ndarray:
        """Linear conductance G (S) of every device at ``temperature_c`` (C), noiseless."""
        g = self.g_s
        if temperature_c == T_REF_C:
            return g.copy()
        return np.maximum(g + self._temp_coeff() * (temperature_c - T_REF_C), 0.05 * g)

    def read_conductance_s(self) -> np.ndarray:
        """The conductance of docs/devices.md: I(V_read) / V_read at 25 C, noiseless (S)."""
        vr = self.params.read_voltage_v
        return self.g_s * (1.0 + self.iv_cubic_b_per_v2 * vr * vr)

    def read_noise_sigma_g_s(self, g: np.ndarray, nplc: float = 1.0) -> np.ndarray:
        """Read noise (S, 1 sigma, linear-conductance units) of one read of conductance ``g``
        integrated over ``nplc`` power-line cycles: the device's relative part
        ``read_noise_rel g`` does not average away, the instrument's absolute part
        ``read_noise_abs_s / sqrt(nplc)`` does (docs/devices.md, split assumed)."""
        p = self.params
        return p.read_noise_rel * g + p.read_noise_abs_s / math.sqrt(check_nplc(nplc))

    def _noisy(self, g: np.ndarray, nplc: float) -> np.ndarray:
        g = g * (1.0 + self.rtn_amplitude_rel * (self.rtn_high - 0.5))
        sigma = self.read_noise_sigma_g_s(g, nplc)
        return np.maximum(g + sigma * self._noise.standard_normal(g.shape), 0.0)

    # -- ArrayPhysics -------------------------------------------------------------------
    def solve(
        self, bias: LineBias, temperature_c: float, *, noise: bool = True, nplc: float = 1.0
    ) -> LineSolution:
        """Settle the line network; device currents include read and telegraph noise when
        ``noise`` (one single read of every device, integrated over ``nplc`` power-line
        cycles: see :meth:`read_noise_sigma_g_s`)."""
        check_nplc(nplc)
        g = self.conductance_at(temperature_c)
        if noise:
            g = self._noisy(g, nplc)
        return solve_crossbar(g, self.iv_cubic_b_per_v2, bias)

    def device_voltages(self, bias: LineBias, temperature_c: float = T_REF_C) -> np.ndarray:
        """Voltage (V, row minus column) every device sees under ``bias`` (floating settled)."""
        row_v, col_v = np.asarray(bias.row_v, dtype=float), np.asarray(bias.col_v, dtype=float)
        if np.isnan(row_v).any() or np.isnan(col_v).any():
            sol = solve_crossbar(self.conductance_at(temperature_c), self.iv_cubic_b_per_v2, bias)
            row_v, col_v = sol.row_v, sol.col_v
        return row_v[:, None] - col_v[None, :]

    def quiet(self, bias: LineBias) -> bool:
        """Holding ``bias`` cannot change any device: the span of the driven line voltages
        is below every switching floor and forming voltage (:attr:`quiet_span_v`)."""
        driven = np.concatenate([bias.row_v, bias.col_v])
        driven = driven[~np.isnan(driven)]
        return driven.size == 0 or float(driven.max() - driven.min()) < self.quiet_span_v

    def stress(
        self,
        bias: LineBias,
        duration_s: float,
        temperature_c: float,
        *,
        count_pulse: bool = True,
    ) -> bool:
        """Hold ``bias`` for ``duration_s`` (s); returns True when any device's state changed
        (its pulse count included).

        A bias whose line-voltage span could switch some device counts as one pulse for
        every device that sees the largest device voltage of the interval (``pulse_count``:
        the selected device of a V/2 or V/3 pulse, the whole selected line when the others
        are grounded) unless ``count_pulse`` is False (the interval continues the previous
        one's pulse); a read far below every threshold counts nothing and returns at once.
        """
        if duration_s <= 0 or self.quiet(bias):
            return False
        v = self.device_voltages(bias, temperature_c)
        mag = np.abs(v)
        peak = float(mag.max())
        if peak <= 0:
            return False
        if count_pulse:
            self.pulse_count[mag >= peak * (1.0 - _FULL_PULSE_REL)] += 1
        switchable = self._switchable  # devices formed by this very bias do not switch on
        self._form(v)  # (the forming current limit holds them)
        active = switchable & ((v > self._set_floor_v) | (-v > self._reset_floor_v))
        idx = np.flatnonzero(active)
        if idx.size:
            self._switch(idx, v.ravel()[idx], duration_s)
        return True

    def _form(self, v: np.ndarray) -> bool:
        forming = self._unformed & (v >= self.forming_voltage_v)
        if not forming.any():
            return False
        p = self.params
        g_new = log_uniform(
            self._noise, p.formed_conductance_min_s, p.formed_conductance_max_s, int(forming.sum())
        )
        self.formed[forming] = True
        self.g_s[forming] = g_new
        self.g_prog_s[forming] = g_new
        self.age_s[forming] = 0.0
        self.relax_sign[forming] = 0.0
        self._refresh_limits()
        return True

    def _switch(self, idx: np.ndarray, v: np.ndarray, duration_s: float) -> None:
        """Integrate the switching rate of the devices ``idx`` (flat) under voltages ``v``."""
        p = self.params
        is_set = v > 0
        thr = np.where(
            is_set, self.set_threshold_v.ravel()[idx], self.reset_threshold_mag_v.ravel()[idx]
        )
        mag = np.abs(v)
        f = p.switching_floor_fraction
        onset = np.clip((mag / thr - f) / (1.0 - f), 0.0, 1.0) ** 2
        l0 = np.where(is_set, math.log1p(THRESHOLD_CHANGE_REL), -math.log1p(-THRESHOLD_CHANGE_REL))
        exponent = np.minimum((mag - thr) / p.switching_slope_v, 60.0)
        k_t = l0 * onset * np.exp(exponent) * (duration_s / THRESHOLD_PULSE_S)
        if p.cycle_spread_cv > 0:
            sigma = math.sqrt(math.log1p(p.cycle_spread_cv**2))
            k_t = k_t * np.exp(sigma * self._noise.standard_normal(idx.size))
        g = np.clip(self.g_s.ravel()[idx], p.g_min_s, p.g_max_s)
        decay = np.exp(-2.0 * k_t)
        # set: y = (g / g_max)^2 ; reset: z = (g_min / g)^2 ; both follow dy/dt = 2 k y (1 - y).
        y0 = np.where(is_set, (g / p.g_max_s) ** 2, (p.g_min_s / g) ** 2)
        y = y0 / (y0 + (1.0 - y0) * decay)
        g_new = np.where(is_set, p.g_max_s * np.sqrt(y), p.g_min_s / np.sqrt(y))
        flat = self.g_s.reshape(-1)
        programmed = np.abs(np.log(g_new / np.maximum(flat[idx], 1e-15))) >= math.log1p(
            p.relax_restart_rel
        )
        flat[idx] = g_new
        # A disturbance smaller than ``relax_restart_rel`` leaves the relaxation of the
        # last programming running (its clock and direction): the device keeps the change
        # on top of where that relaxation has brought it so far.
        kept = idx[~programmed]
        if kept.size:
            drift = self.relax_per_decade_rel.reshape(-1)[kept] * np.log10(
                1.0 + self.age_s.reshape(-1)[kept] / p.relax_time_s
            )
            self.g_prog_s.reshape(-1)[kept] = g_new[~programmed] / (
                1.0 + self.relax_sign.reshape(-1)[kept] * drift
            )
        idx = idx[programmed]
        self.g_prog_s.reshape(-1)[idx] = g_new[programmed]
        self.age_s.reshape(-1)[idx] = 0.0
        # After programming a device relaxes back: down after a set, up after a reset.
        self.relax_sign.reshape(-1)[idx] = np.where(is_set[programmed], -1.0, 1.0)

    def relax(
        self,
        elapsed_s: float,
        temperature_c: float | TemperatureHistory,
        temperature_end_c: float | None = None,
    ) -> None:
        """Let ``elapsed_s`` (s) pass: log-time relaxation on an Arrhenius-accelerated age
        integrated over the chip temperature (a constant ``temperature_c``, a linear ramp
        to ``temperature_end_c``, or a :class:`TemperatureHistory`), and telegraph-noise
        flips."""
        if elapsed_s <= 0:
            return
        p = self.params
        relaxing = self.relax_sign != 0
        if relaxing.any():
            self.age_s[relaxing] += equivalent_age_s(
                elapsed_s, temperature_c, temperature_end_c, p.relax_activation_ev
            )
            drift = self.relax_per_decade_rel[relaxing] * np.log10(
                1.0 + self.age_s[relaxing] / p.relax_time_s
            )
            self.g_s[relaxing] = self.g_prog_s[relaxing] * (1.0 + self.relax_sign[relaxing] * drift)
        rtn, dwell_s = self._rtn_mask, self._rtn_dwell_s
        if dwell_s.size:
            p_flip = 0.5 * (1.0 - np.exp(-2.0 * elapsed_s / dwell_s))
            flips = self._noise.random(p_flip.size) < p_flip
            self.rtn_high[rtn] ^= flips

    def ground_truth(self) -> dict[str, np.ndarray]:
        """True per-device state and parameters, each a (rows, cols) array, in the form a
        measurement extracts them (docs/devices.md).

        - ``conductance_s``: I(V_read)/V_read at 25 C, noiseless (S);
          ``linear_conductance_s``: G of the I-V (S).
        - ``set_threshold_v`` (V, positive) and ``reset_threshold_v`` (V, negative): the
          1 ms pulse amplitude that changes the conductance by 2 %.
        - ``temp_coeff_s_per_k``: d G / dT of the linear conductance (S/K);
          ``conductance_temp_coeff_s_per_k``: d (I(V_read)/V_read) / dT at 25 C (S/K).
        - ``iv_cubic_b_per_v2``: b of I = G V (1 + b V^2) (V^-2);
          ``iv_nonlinearity_at_read_rel``: b V_read^2, what the cubic term adds at the read.
        - ``read_noise_sigma_s``: sigma (S) of one read of ``conductance_s`` at 1 PLC
          without telegraph noise, the sum of ``read_noise_device_sigma_s`` (does not
          average with NPLC) and ``read_noise_instrument_sigma_s`` (falls as 1/sqrt(NPLC)).
        - ``rtn_amplitude_rel``: step between the two telegraph levels relative to G (0
          without telegraph noise); ``rtn_dwell_s``: mean dwell time in each level (s, 0
          without); ``rtn_high``: the level now (the reading sits at G (1 +- step / 2)).
        - ``relax_per_decade_rel``: relaxation per decade of time since the last pulse
          (relative, at 25 C); ``relax_direction``: -1 drifting down (after a set), +1 up
          (after a reset), 0 not programmed since delivery.
        - ``defect`` (0 functional, 1 stuck-off, 2 stuck-on); ``stuck_off`` / ``stuck_on``
          (bool); ``formed`` (bool); ``forming_voltage_v`` (V).
        - ``pulse_count``: write pulses the device received at full amplitude (see
          :meth:`stress`).
        """
        p = self.params
        vr = p.read_voltage_v
        nonlinear = 1.0 + self.iv_cubic_b_per_v2 * vr * vr
        device_sigma = p.read_noise_rel * self.g_s * nonlinear
        instrument_sigma = p.read_noise_abs_s * nonlinear
        has_rtn = self.rtn_amplitude_rel > 0
        temp_coeff = self._temp_coeff()
        return {
            "conductance_s": self.read_conductance_s(),
            "linear_conductance_s": self.g_s.copy(),
            "set_threshold_v": self.set_threshold_v.copy(),
            "reset_threshold_v": -self.reset_threshold_mag_v,
            "temp_coeff_s_per_k": temp_coeff,
            "conductance_temp_coeff_s_per_k": temp_coeff * nonlinear,
            "iv_cubic_b_per_v2": self.iv_cubic_b_per_v2.copy(),
            "iv_nonlinearity_at_read_rel": nonlinear - 1.0,
            "read_noise_sigma_s": device_sigma + instrument_sigma,
            "read_noise_device_sigma_s": device_sigma,
            "read_noise_instrument_sigma_s": instrument_sigma,
            "rtn_amplitude_rel": self.rtn_amplitude_rel.copy(),
            "rtn_dwell_s": np.where(has_rtn, self.rtn_dwell_s, 0.0),
            "rtn_high": self.rtn_high & has_rtn,
            "relax_per_decade_rel": self.relax_per_decade_rel.copy(),
            "relax_direction": self.relax_sign.astype(np.int8),
            "defect": self.defect.copy(),
            "stuck_off": self.defect == STUCK_OFF,
            "stuck_on": self.defect == STUCK_ON,
            "formed": self.formed.copy(),
            "forming_voltage_v": self.forming_voltage_v.copy(),
            "pulse_count": self.pulse_count.copy(),
        }

    # -- state file (save_state / load_state: ChipState) -------------------------------
    def _state_loaded(self) -> None:
        self._refresh_limits()
