"""Analog-grade embedded NOR flash array (55 nm split-gate cells, redesigned array).

Rows are word lines (the select gates), columns are bit lines; every cell connects its bit
line to the common source line. The model, every parameter's default and its source
(Fahimi 2021, Merrikh Bayat 2014/2016, Guo 2017, Wu 1986, SST SuperFlash; "assumed" where
no publication fixed a value) are in ``docs/devices.md``.

Cell current (A), from bit line to source line::

    I = I0 [F(x) - F(x - V_ds / U_T)] * s(V_wl) / (1 + |.| / I_sat)
    F(u) = ln^2(1 + exp(u / 2)),  x = (V_cg - Vth(T)) / (n U_T),  U_T = k T / q

the EKV interpolation, which is ``I0 exp(x) (1 - exp(-V_ds/U_T))`` in weak inversion:
it saturates for a drain bias above about 0.1 V and flows only while the select gate
``s(V_wl)`` is on; a grounded or floating word line turns the cell off. ``I_sat`` is the
series select transistor's limit. ``Vth(T) = Vth + k_vth (T - 25 C)``.

Program (raises Vth, source-side injection): a cell injects while its select transistor
conducts (word line on, bit line low), the source line is high and the control gate
couples the floating gate high: ``dVth/dt = r_p exp((V_s - V_bl - V_p)/a_p)
exp((V_cg - V_cg,p)/a_cg) exp(c_T (T - 25 C)) exp(-(Vth - 2.5 V)/s_p)``, zero below the
source-bias and control-gate floors; it slows as the cell fills (exact log-time
integral). Erase (lowers Vth): the erase gate of the selected row (the row decoder routes
``erase_gate_v`` to the rows whose word line is driven on) tunnels charge at
``dVth/dt = -r_e exp((V_eg - c V_bl - V_e)/a_e) exp((Vth - 2.5 V)/s_e)``; an unselected
cell of the erased row is inhibited by its bit line held at the inhibit voltage, which
is what makes single-cell tuning possible. Per-cell program and erase efficiencies vary
(lognormal), and every pulse has a cycle-to-cycle factor. Retention: a slow charge loss
on an Arrhenius-weighted age integrated over the temperature history.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nvmlab.errors import ConfigError
from nvmlab.mocks.physics.base import (
    BOLTZMANN_EV_PER_K,
    T_REF_C,
    WRITE_SCHEMES,
    LineBias,
    LineSolution,
    TemperatureHistory,
    check_nplc,
    equivalent_age_s,
)
from nvmlab.mocks.physics.memristor import lognormal
from nvmlab.mocks.physics.params import (
    from_table,
    ranged,
    require_initial_range_within,
    require_less,
)
from nvmlab.mocks.physics.state import ChipState

#: Vth (V) at which the program / erase reference rates hold.
VTH_REF_V = 2.5
#: Pulse widths (s) of the program and erase reference steps.
PROGRAM_REF_WIDTH_S = 1e-6
ERASE_REF_WIDTH_S = 1e-3
_NOISE_STREAM = 0x65666C617368


@dataclass
class EflashParams:
    """eFlash array parameters; units in the names (V, A, s, K, eV, rel = 1)."""

    # -- read -------------------------------------------------------------------------
    read_word_line_v: float = ranged(1.5, 0.5, 5.0, "read bias on the selected word line (V)")
    read_control_gate_v: float = ranged(2.5, 0.0, 6.0, "read bias on the control gate (V)")
    read_bit_line_v: float = ranged(1.0, 0.05, 3.0, "read bias on the bit line (V)")
    subthreshold_slope_factor: float = ranged(1.5, 1.0, 3.0, "n in I0 exp((Vg - Vth)/(n kT/q))")
    subthreshold_slope_cv: float = ranged(0.03, 0.0, 0.5, "device-to-device CV of n (assumed)")
    i0_a: float = ranged(1e-6, 1e-9, 1e-4, "weak-inversion current at V_cg = Vth (A)")
    i0_cv: float = ranged(0.1, 0.0, 1.0, "device-to-device CV of I0 (assumed)")
    select_gate_threshold_v: float = ranged(0.7, 0.1, 3.0, "select (word-line) transistor Vt (V)")
    select_saturation_a: float = ranged(
        20e-6, 1e-7, 1e-3, "series limit of the select transistor (A)"
    )
    vth_temp_coeff_v_per_k: float = ranged(-1.5e-3, -1e-2, 0.0, "Vth shift with temperature (V/K)")
    vth_temp_coeff_cv: float = ranged(0.1, 0.0, 1.0, "device-to-device CV of the Vth shift")
    noise_rel_at_1na: float = ranged(0.02, 0.0, 0.5, "relative read noise at 1 nA (1 sigma)")
    noise_floor_rel: float = ranged(
        0.003, 0.0, 0.5, "relative read noise at high current (1 sigma)"
    )
    # -- state --------------------------------------------------------------------------
    initial_vth_min_v: float = ranged(2.45, -2.0, 8.0, "as-delivered Vth, low end (V)")
    initial_vth_max_v: float = ranged(2.85, -2.0, 8.0, "as-delivered Vth, high end (V)")
    vth_min_v: float = ranged(0.5, -3.0, 8.0, "deepest erased Vth (V)")
    vth_max_v: float = ranged(5.0, -3.0, 10.0, "highest programmed Vth (V)")
    # -- program (source-side hot electrons) ------------------------------------------
    program_word_line_v: float = ranged(1.5, 0.5, 5.0, "selected word line during program (V)")
    program_control_gate_v: float = ranged(8.0, 0.0, 12.0, "control gate during program (V)")
    program_inhibit_v: float = ranged(2.5, 0.0, 6.0, "unselected bit lines during program (V)")
    program_ref_v: float = ranged(4.5, 1.0, 10.0, "source amplitude of the reference step (V)")
    program_ref_step_v: float = ranged(
        0.01, 1e-6, 1.0, "Vth rise of a 1 us pulse at ref amplitude, Vth 2.5 V"
    )
    program_slope_v: float = ranged(
        0.25, 0.01, 2.0, "source amplitude per e-fold of program rate (V)"
    )
    program_state_v: float = ranged(0.3, 0.01, 2.0, "Vth rise per e-fold slow-down of program (V)")
    program_floor_v: float = ranged(
        2.0, 0.0, 10.0, "no injection below this source-bit-line bias (V)"
    )
    program_gate_slope_v: float = ranged(
        0.5, 0.01, 5.0, "control-gate bias per e-fold of program rate (V, assumed)"
    )
    program_gate_floor_v: float = ranged(
        5.0, 0.0, 12.0, "no injection below this control-gate bias (V, assumed)"
    )
    program_temp_coeff_per_k: float = ranged(
        -0.005, -0.1, 0.1, "relative change of the program rate per kelvin (1/K, assumed)"
    )
    # -- erase (Fowler-Nordheim) ------------------------------------------------------
    erase_inhibit_v: float = ranged(5.0, 0.0, 10.0, "unselected bit lines during erase (V)")
    erase_inhibit_coupling: float = ranged(
        0.5, 0.0, 1.0, "share of the bit-line bias that opposes erase"
    )
    erase_ref_v: float = ranged(10.0, 3.0, 20.0, "erase-gate amplitude of the reference step (V)")
    erase_ref_step_v: float = ranged(
        0.02, 1e-6, 1.0, "Vth drop of a 1 ms pulse at ref amplitude, Vth 2.5 V"
    )
    erase_slope_v: float = ranged(0.4, 0.01, 3.0, "erase amplitude per e-fold of erase rate (V)")
    erase_state_v: float = ranged(0.3, 0.01, 2.0, "Vth drop per e-fold slow-down of erase (V)")
    erase_floor_v: float = ranged(
        5.0, 0.0, 20.0, "no tunnelling below this effective erase bias (V)"
    )
    efficiency_cv: float = ranged(0.2, 0.0, 2.0, "device-to-device CV of program/erase rates")
    cycle_spread_cv: float = ranged(0.15, 0.0, 2.0, "cycle-to-cycle CV of a pulse's Vth change")
    # -- retention ----------------------------------------------------------------------
    retention_per_decade_v: float = ranged(5e-5, 0.0, 0.1, "Vth loss per decade of time (V)")
    retention_time_s: float = ranged(1.0, 1e-6, 1e6, "time origin of the charge loss (s)")
    retention_activation_ev: float = ranged(1.1, 0.0, 3.0, "Arrhenius activation energy (eV)")

    @classmethod
    def from_table(
        cls, table: Mapping[str, Any] | None, *, section: str = "eflash"
    ) -> EflashParams:
        """Build from a bench-file table; ConfigError names any bad field and its range."""
        return from_table(cls, table, section=section)

    def check(self, section: str = "eflash") -> None:
        """Cross-field checks (ConfigError)."""
        require_initial_range_within(
            self,
            section,
            ("initial_vth_min_v", "initial_vth_max_v"),
            ("vth_min_v", "vth_max_v"),
            "the threshold window",
        )
        require_less(
            section,
            "program_gate_floor_v",
            self.program_gate_floor_v,
            "program_control_gate_v",
            self.program_control_gate_v,
        )


def thermal_voltage_v(temperature_c: float) -> float:
    """kT/q (V) at ``temperature_c`` (C)."""
    return BOLTZMANN_EV_PER_K * (temperature_c + 273.15)


def _ekv(u: np.ndarray) -> np.ndarray:
    """F(u) = ln^2(1 + exp(u/2)), computed without overflow."""
    return np.logaddexp(0.0, 0.5 * u) ** 2


_FIXED = (
    "slope_factor",
    "i0_a",
    "vth_temp_coeff_v_per_k",
    "program_efficiency",
    "erase_efficiency",
)
_STATE = ("vth_v", "vth_prog_v", "age_s", "relaxing", "pulse_count")


class EflashArray(ChipState):
    """A NOR flash array; implements :class:`~nvmlab.mocks.physics.base.ArrayPhysics`."""

    kind = "eflash"
    state_arrays = (*_FIXED, *_STATE)
    params_class = EflashParams

    def __init__(
        self, rows: int, cols: int, *, seed: int = 0, params: EflashParams | None = None
    ) -> None:
        if rows < 1 or cols < 1:
            raise ConfigError(
                f"array size {rows} x {cols} is not allowed; rows and cols must be >= 1"
            )
        self.rows, self.cols = int(rows), int(cols)
        self.seed = int(seed)
        self.params = params if params is not None else EflashParams()
        p, shape = self.params, (self.rows, self.cols)
        rng = np.random.default_rng(self.seed)
        self.slope_factor = lognormal(
            rng, p.subthreshold_slope_factor, p.subthreshold_slope_cv, shape
        )
        self.i0_a = lognormal(rng, p.i0_a, p.i0_cv, shape)
        self.vth_temp_coeff_v_per_k = p.vth_temp_coeff_v_per_k * np.maximum(
            1.0 + p.vth_temp_coeff_cv * rng.standard_normal(shape), 0.0
        )
        self.program_efficiency = lognormal(rng, 1.0, p.efficiency_cv, shape)
        self.erase_efficiency = lognormal(rng, 1.0, p.efficiency_cv, shape)
        self.vth_v = rng.uniform(p.initial_vth_min_v, p.initial_vth_max_v, shape)
        self.vth_prog_v = self.vth_v.copy()
        self.age_s = np.zeros(shape)
        self.relaxing = np.zeros(shape, dtype=bool)
        self.pulse_count = np.zeros(shape, dtype=np.int64)
        self._noise = np.random.default_rng([self.seed, _NOISE_STREAM])

    # -- currents ---------------------------------------------------------------------
    def cell_currents(
        self,
        word_line_v: np.ndarray,
        bit_line_v: np.ndarray,
        control_gate_v: float,
        source_v: float,
        temperature_c: float,
    ) -> np.ndarray:
        """Noiseless current (A) of every cell from its bit line to the source line."""
        p = self.params
        ut = thermal_voltage_v(temperature_c)
        vth = self.vth_v + self.vth_temp_coeff_v_per_k * (temperature_c - T_REF_C)
        n_ut = self.slope_factor * ut
        x = (control_gate_v - vth) / n_ut
        vds = (bit_line_v - source_v)[None, :]
        i = self.i0_a * (_ekv(x) - _ekv(x - vds / ut))
        select_on = 1.0 / (
            1.0
            + np.exp(
                -(word_line_v - p.select_gate_threshold_v) / (p.subthreshold_slope_factor * ut)
            )
        )
        i = i * select_on[:, None]
        return i / (1.0 + np.abs(i) / p.select_saturation_a)

    def solve(
        self, bias: LineBias, temperature_c: float, *, noise: bool = True, nplc: float = 1.0
    ) -> LineSolution:
        """Bit-line currents for ``bias``: ``col_i`` is the current each bit-line driver
        delivers (positive into the array), ``row_i`` is 0 (no gate current), ``device_i``
        each cell's current from bit line to source. A floating word line is off; a
        floating bit line settles at the source voltage (no current). With ``noise``, one
        read integrated over ``nplc`` power-line cycles (:meth:`noise_rel`)."""
        check_nplc(nplc)
        row_v = np.array(bias.row_v, dtype=float)
        col_v = np.array(bias.col_v, dtype=float)
        if row_v.shape != (self.rows,) or col_v.shape != (self.cols,):
            raise ValueError(
                f"bias has {row_v.size} x {col_v.size} lines; the array is {self.rows} x {self.cols}"
            )
        wl = np.nan_to_num(row_v, nan=0.0)
        floating_bl = np.isnan(col_v)
        col_v[floating_bl] = bias.source_v
        i = self.cell_currents(wl, col_v, bias.control_gate_v, bias.source_v, temperature_c)
        if noise:
            i = i * (1.0 + self.noise_rel(i, nplc=nplc) * self._noise.standard_normal(i.shape))
        col_i = i.sum(axis=0)
        col_i[floating_bl] = 0.0
        row_v[np.isnan(row_v)] = 0.0
        return LineSolution(row_v, col_v, np.zeros(self.rows), col_i, i)

    def noise_rel(self, current_a: np.ndarray, *, nplc: float = 1.0) -> np.ndarray:
        """Relative read noise (1 sigma) of one read of ``current_a`` (A) over ``nplc``
        power-line cycles: the white part that rises at low current (``noise_rel_at_1na``
        at 1 nA, relative ~ 1/sqrt(I)) averages as 1/sqrt(nplc); the device's relative
        floor (``noise_floor_rel``) does not. The split is assumed (docs/devices.md)."""
        p = self.params
        mag = np.maximum(np.abs(current_a), 1e-15)
        white = p.noise_rel_at_1na * np.sqrt(1e-9 / mag) / np.sqrt(check_nplc(nplc))
        return np.hypot(p.noise_floor_rel, white)

    def read_bias(self, row: int | None = None) -> LineBias:
        """The read bias of docs/devices.md on word line ``row`` (all word lines if None)."""
        p = self.params
        wl = np.full(self.rows, p.read_word_line_v) if row is None else np.zeros(self.rows)
        if row is not None:
            wl[row] = p.read_word_line_v
        return LineBias(
            wl, np.full(self.cols, p.read_bit_line_v), control_gate_v=p.read_control_gate_v
        )

    # -- pulses -----------------------------------------------------------------------
    def pulse_bias(self, row: int, col: int, amplitude_v: float, scheme: str) -> LineBias:
        """Bias of an on-board pulse on cell (row, col).

        Positive ``amplitude_v``: program, the source line at the amplitude (V), the
        selected word line on, the selected bit line at 0 V. Negative: erase, the erase
        gate at |amplitude| (V) routed to the selected row, the selected bit line at 0 V.
        Unselected bit lines are inhibited (``program_inhibit_v`` / ``erase_inhibit_v``)
        for the schemes "v/2", "v/3" and "float" (a floating bit line self-inhibits in
        program); "ground" grounds them, which disturbs the whole selected row.
        """
        if scheme not in WRITE_SCHEMES:
            raise ValueError(
                f"unknown write scheme {scheme!r}; allowed: {', '.join(WRITE_SCHEMES)}"
            )
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise ValueError(f"cell ({row}, {col}) is outside the {self.rows} x {self.cols} array")
        p = self.params
        bias = LineBias.grounded(self.rows, self.cols)
        if amplitude_v == 0:
            return bias
        program = amplitude_v > 0
        inhibit = p.program_inhibit_v if program else p.erase_inhibit_v
        unselected = {"ground": 0.0, "float": float("nan")}.get(scheme, inhibit)
        bias.col_v[:] = unselected
        bias.col_v[col] = 0.0
        if program:
            bias.row_v[row] = p.program_word_line_v
            bias.source_v = float(amplitude_v)
            bias.control_gate_v = p.program_control_gate_v
        else:
            bias.row_v[row] = p.read_word_line_v
            bias.erase_gate_v = float(-amplitude_v)
        return bias

    def _programs(self, bias: LineBias) -> bool:
        """The bias is at program level: control gate and source-to-bit-line drop above
        their floors."""
        p = self.params
        bl = np.asarray(bias.col_v, dtype=float)
        return bool(
            bias.control_gate_v >= p.program_gate_floor_v
            and bias.source_v - np.nanmin(np.append(bl, bias.source_v)) >= p.program_floor_v
        )

    def quiet(self, bias: LineBias) -> bool:
        """Holding ``bias`` cannot change any cell: neither program nor erase level."""
        return not self._programs(bias) and bias.erase_gate_v < self.params.erase_floor_v

    def stress(
        self,
        bias: LineBias,
        duration_s: float,
        temperature_c: float,
        *,
        count_pulse: bool = True,
    ) -> bool:
        """Hold ``bias`` for ``duration_s`` (s): program and erase as the biases dictate;
        cells at full drive count one pulse unless ``count_pulse`` is False (the interval
        continues the previous one's pulse)."""
        p = self.params
        if duration_s <= 0:
            return False
        wl = np.nan_to_num(np.asarray(bias.row_v, dtype=float), nan=0.0)
        bl = np.asarray(bias.col_v, dtype=float)
        changed = False
        if self._programs(bias):
            changed |= self._program(
                wl, bl, bias.source_v, bias.control_gate_v, duration_s, temperature_c, count_pulse
            )
        if bias.erase_gate_v >= p.erase_floor_v:
            changed |= self._erase(wl, bl, bias.erase_gate_v, duration_s, count_pulse)
        return changed

    def _cycle(self, n: int) -> np.ndarray:
        cv = self.params.cycle_spread_cv
        return lognormal(self._noise, 1.0, cv, (n,))

    def program_gate_factor(self, control_gate_v: float) -> float:
        """Program rate at ``control_gate_v`` (V) relative to ``program_control_gate_v``:
        source-side injection needs the floating gate coupled high by the control gate
        (the vertical field that collects the hot electrons), so the rate falls
        exponentially with a lower gate bias and stops below ``program_gate_floor_v``."""
        p = self.params
        if control_gate_v < p.program_gate_floor_v:
            return 0.0
        return math.exp((control_gate_v - p.program_control_gate_v) / p.program_gate_slope_v)

    def _program(
        self,
        wl: np.ndarray,
        bl: np.ndarray,
        source_v: float,
        control_gate_v: float,
        width_s: float,
        temperature_c: float,
        count_pulse: bool = True,
    ) -> bool:
        p = self.params
        gate = self.program_gate_factor(control_gate_v)
        if gate == 0.0:
            return False
        ut = thermal_voltage_v(temperature_c)
        # A floating bit line charges up until the select transistor turns off: no injection.
        bl_v = np.where(np.isnan(bl), 1e3, bl)
        on = 1.0 / (
            1.0
            + np.exp(
                -(wl[:, None] - bl_v[None, :] - p.select_gate_threshold_v)
                / (p.subthreshold_slope_factor * ut)
            )
        )
        drive = source_v - np.where(np.isnan(bl), source_v, bl)
        active = (on > 1e-6) & (drive[None, :] >= p.program_floor_v)
        idx = np.flatnonzero(active)
        if idx.size == 0:
            return False
        r, c = np.unravel_index(idx, active.shape)
        if count_pulse:
            self._count_full_pulses(idx, drive[c])
        rate = (
            p.program_ref_step_v
            / PROGRAM_REF_WIDTH_S
            * np.exp((drive[c] - p.program_ref_v) / p.program_slope_v)
            * on[r, c]
            * gate
            * math.exp(p.program_temp_coeff_per_k * (temperature_c - T_REF_C))
            * self.program_efficiency.ravel()[idx]
            * self._cycle(idx.size)
        )
        s = p.program_state_v
        vth0 = self.vth_v.ravel()[idx]
        dv = s * np.log1p(rate * width_s / s * np.exp(-(vth0 - VTH_REF_V) / s))
        self._commit(idx, np.minimum(vth0 + dv, p.vth_max_v))
        return True

    def _erase(
        self,
        wl: np.ndarray,
        bl: np.ndarray,
        erase_gate_v: float,
        width_s: float,
        count_pulse: bool = True,
    ) -> bool:
        p = self.params
        rows_on = wl >= p.select_gate_threshold_v
        veff = erase_gate_v - p.erase_inhibit_coupling * np.nan_to_num(bl, nan=0.0)
        active = rows_on[:, None] & (veff >= p.erase_floor_v)[None, :]
        idx = np.flatnonzero(active)
        if idx.size == 0:
            return False
        _, c = np.unravel_index(idx, active.shape)
        if count_pulse:
            self._count_full_pulses(idx, veff[c])
        rate = (
            p.erase_ref_step_v
            / ERASE_REF_WIDTH_S
            * np.exp((veff[c] - p.erase_ref_v) / p.erase_slope_v)
            * self.erase_efficiency.ravel()[idx]
            * self._cycle(idx.size)
        )
        s = p.erase_state_v
        vth0 = self.vth_v.ravel()[idx]
        dv = s * np.log1p(rate * width_s / s * np.exp((vth0 - VTH_REF_V) / s))
        self._commit(idx, np.maximum(vth0 - dv, p.vth_min_v))
        return True

    def _count_full_pulses(self, idx: np.ndarray, drive_v: np.ndarray) -> None:
        """One pulse for each moving cell ``idx`` (flat) that sees the largest drive
        ``drive_v`` (V) of the pulse: the selected cell, not the inhibited ones."""
        full = drive_v >= float(drive_v.max()) * (1.0 - 1e-6)
        self.pulse_count.reshape(-1)[idx[full]] += 1

    def _commit(self, idx: np.ndarray, vth_new: np.ndarray) -> None:
        self.vth_v.reshape(-1)[idx] = vth_new
        self.vth_prog_v.reshape(-1)[idx] = vth_new
        self.age_s.reshape(-1)[idx] = 0.0
        self.relaxing.reshape(-1)[idx] = True

    def relax(
        self,
        elapsed_s: float,
        temperature_c: float | TemperatureHistory,
        temperature_end_c: float | None = None,
    ) -> None:
        """Charge loss after programming: Vth falls by ``a log10(1 + t_eff / t0)``, the
        effective age t_eff advancing with the Arrhenius factor integrated over the chip
        temperature (a constant ``temperature_c``, a linear ramp to ``temperature_end_c``,
        or a :class:`TemperatureHistory`)."""
        p = self.params
        if elapsed_s <= 0 or not self.relaxing.any() or p.retention_per_decade_v == 0:
            return
        m = self.relaxing
        self.age_s[m] += equivalent_age_s(
            elapsed_s, temperature_c, temperature_end_c, p.retention_activation_ev
        )
        loss = p.retention_per_decade_v * np.log10(1.0 + self.age_s[m] / p.retention_time_s)
        self.vth_v[m] = np.maximum(self.vth_prog_v[m] - loss, p.vth_min_v)

    # -- truth and state ----------------------------------------------------------------
    def read_current_a(self, temperature_c: float = T_REF_C) -> np.ndarray:
        """Noiseless cell current (A) at the read bias of docs/devices.md."""
        p = self.params
        return self.cell_currents(
            np.full(self.rows, p.read_word_line_v),
            np.full(self.cols, p.read_bit_line_v),
            p.read_control_gate_v,
            0.0,
            temperature_c,
        )

    def ground_truth(self) -> dict[str, np.ndarray]:
        """True per-cell state and parameters, each a (rows, cols) array (docs/devices.md).

        - ``vth_v``: threshold (V, at 25 C); ``cell_current_a``: current at the read bias,
          25 C, noiseless (A).
        - ``cell_current_temp_coeff_per_k``: d ln(cell_current_a) / dT at 25 C (1/K).
        - ``read_noise_sigma_a``: sigma (A) of one read of ``cell_current_a`` at 1 PLC,
          ``read_noise_device_sigma_a`` (the relative floor, does not average with NPLC)
          and ``read_noise_instrument_sigma_a`` (the low-current white part, falls as
          1/sqrt(NPLC)) adding in quadrature.
        - fixed per-cell parameters: ``slope_factor`` (n), ``i0_a`` (A),
          ``vth_temp_coeff_v_per_k`` (V/K), ``program_efficiency``, ``erase_efficiency``
          (relative rates, median 1).
        - ``retention_age_s``: the Arrhenius-equivalent age at 25 C since the last pulse
          (s, 0 for a cell not programmed since delivery).
        - ``pulse_count``: program or erase pulses the cell received at full drive (the
          selected cell, or the whole row when the other bit lines are not inhibited).
        """
        p = self.params
        current = self.read_current_a()
        step_k = 0.5
        slope = (
            np.log(self.read_current_a(T_REF_C + step_k))
            - np.log(self.read_current_a(T_REF_C - step_k))
        ) / (2 * step_k)
        white = p.noise_rel_at_1na * np.sqrt(1e-9 / np.maximum(current, 1e-15))
        device_sigma = p.noise_floor_rel * current
        instrument_sigma = white * current
        truth = {
            "vth_v": self.vth_v.copy(),
            "cell_current_a": current,
            "cell_current_temp_coeff_per_k": slope,
            "read_noise_sigma_a": np.hypot(device_sigma, instrument_sigma),
            "read_noise_device_sigma_a": device_sigma,
            "read_noise_instrument_sigma_a": instrument_sigma,
            "retention_age_s": np.where(self.relaxing, self.age_s, 0.0),
            "pulse_count": self.pulse_count.copy(),
        }
        truth.update({name: getattr(self, name).copy() for name in _FIXED})
        return truth
