"""eFlash sweeps: Id-Vg (threshold, subthreshold slope and their temperature dependence)
and the program / erase response.

``idvg``
    For every sampled cell and every chamber temperature, the bit-line current against
    the control-gate bias (word line on at the board's read level, bit line at ``read_v``,
    source 0 V; the SMU forces the bit line and measures the cell: docs/probe-board.md,
    *Read routing*). Each cell's curve is found by a walk: coarse control-gate steps to
    the bias where the current crosses ``i_min_a``, then fine steps (``step_v``) up until
    it passes ``i_max_a``. Below ``background_below_a`` each point is read a second
    time with the word line off too: what the bit line then draws is the leakage of its
    other cells through their select transistors (at 85 C about 1 nA from a low-Vth cell
    in strong inversion), subtracted from the reading. Units are bit lines, so that
    background, read once per bias, serves every cell of the line (biases lie on the
    grid ``cg_min_v + k step_v``). Every curve is stored as an ``idvg`` trace (the cell's
    current), its background as ``idvg-background``.

    The curves are fitted with the EKV interpolation of the cell (docs/devices.md,
    *Embedded NOR flash*)::

        I = g(I0 [F(x) - F(x - V_ds/U_T)]),  F(u) = ln^2(1 + exp(u/2)),
        x = (V_cg - Vth) / (n U_T),  g(i) = i / (1 + i / I_sat)

    over weak, moderate and strong inversion. In weak inversion alone ``I0 exp(x)`` only
    fixes ``Vth - n U_T ln I0``: Vth is not separable from I0 there (a 10 % change of I0
    moves it by ``n U_T ln 1.1``, about 4 mV). The bend of the curve into strong inversion
    (``F`` goes from ``exp(x)`` to ``x^2/4`` around ``x = 0``) fixes Vth, I0 and n
    separately, so ``vth_v`` here is the model's threshold (the ``Vth`` of ``x``), as the
    emulator's ground truth defines it, not a constant-current threshold. ``I_sat`` (the
    series select transistor's limit) is fitted per curve first, then the curves are
    refitted with the array's median (one select-transistor design per array), which
    steadies Vth where the strong-inversion part is short or noisy.

    Profile: ``vth_v`` (V at ``reference_c``, 25 C by default: measured there, or the
    linear fit of Vth against temperature evaluated there), ``vth_temp_coeff_v_per_k``
    (V/K, slope of that fit; needs two or more temperatures) and
    ``subthreshold_slope_v_per_decade`` (V/decade at ``reference_c``: ``n U_T ln 10``,
    n averaged over the temperatures). The summary holds the distributions per
    temperature, I0, the common I_sat and the fit quality.

``program-erase``
    On a sample of cells: the threshold shift of one erase pulse (erase-gate voltage,
    negative amplitude) at each of ``erase_v`` and of one program pulse (source-line
    voltage, positive amplitude) at each of ``program_v``, and width ladders at one
    amplitude each; every step starts from the cell's start state (restored within
    ``restore_tolerance_v`` by program / erase pulses with verify) and the cell ends
    there. The threshold is tracked as the control-gate bias at the constant current
    ``i_ref_a`` (weak inversion): a program or erase moves the whole Id-Vg curve, so its
    shift is the threshold shift (the absolute value differs from ``vth_v`` by a per-cell
    offset set by I0 and n; only shifts are reported).

    Erasing one cell disturbs the other cells of its word line (the inhibit on their bit
    lines is finite, and erase speeds up with the threshold, so a neighbour far above the
    selected cell suffers most). Those cells are tracked before and after each cell
    (``row-disturb`` traces, summary ``row_disturb_max_v``), the highest one after every
    erase pulse; steps predicted to move it beyond ``max_row_disturb_v`` are skipped
    (stored as not measured, summary ``steps_skipped_for_disturb``) and past the limit
    the cell's erasing stops. Erase steps come first: they are undone by program pulses,
    which disturb nothing.

Units: V, A, s, C, K.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nvmlab.characterization.sweep import (
    ProfileUpdate,
    Sweep,
    SweepContext,
    SweepUnit,
    choose_devices,
    register_sweep,
)
from nvmlab.errors import ConfigError
from nvmlab.instruments.arrays import ReadSettings
from nvmlab.steps import Param

if TYPE_CHECKING:
    from nvmlab.storage.inventory import RegisteredChip
    from nvmlab.storage.profile import ChipProfile

__all__ = [
    "EkvFit",
    "EflashIdVg",
    "EflashProgramErase",
    "fit_ekv",
    "thermal_voltage_v",
]

#: Boltzmann constant over the elementary charge (V/K).
K_OVER_Q_V_PER_K = 8.617333262e-5
LN10 = math.log(10.0)
#: Read-noise model used to weight the fit (relative sigma of one reading, assumed, not
#: the emulator's): a relative floor, a white part rising as 1/sqrt(I) (shot-like, 2 % at
#: 1 nA and 1 PLC, averaging with NPLC) and the SMU's resolution on its lowest ranges.
_NOISE_FLOOR_REL = 0.005
_NOISE_WHITE_A = 4e-13
_NOISE_RESOLUTION_A = 1e-11


def thermal_voltage_v(temperature_c: float) -> float:
    """kT/q (V) at ``temperature_c`` (C)."""
    return K_OVER_Q_V_PER_K * (float(temperature_c) + 273.15)


# ----------------------------------------------------------------------------- the fit


@dataclass(frozen=True)
class EkvFit:
    """One Id-Vg curve fitted with the EKV interpolation: threshold ``vth_v`` (V), slope
    factor ``slope_factor`` (n), ``i0_a`` (A), series limit ``saturation_a`` (A),
    ``points`` used and ``rms_log`` (rms of ln I residuals)."""

    vth_v: float
    slope_factor: float
    i0_a: float
    saturation_a: float
    points: int
    rms_log: float

    def subthreshold_slope_v_per_decade(self, temperature_c: float) -> float:
        """``n U_T ln 10`` (V/decade) at ``temperature_c`` (C)."""
        return self.slope_factor * thermal_voltage_v(temperature_c) * LN10


_NAN_FIT = EkvFit(math.nan, math.nan, math.nan, math.nan, 0, math.nan)


def _ekv_ln_current(p: np.ndarray, v: np.ndarray, u_t: float, vds: float) -> np.ndarray:
    """ln I of the EKV model for parameters ``p = (Vth, ln n, ln I0, ln I_sat)``."""
    vth, ln_n, ln_i0, ln_isat = p
    x = (v - vth) / (math.exp(ln_n) * u_t)
    f = np.logaddexp(0.0, 0.5 * x) ** 2 - np.logaddexp(0.0, 0.5 * (x - vds / u_t)) ** 2
    f = np.maximum(f, 1e-300)
    i = math.exp(ln_i0) * f
    return np.log(i) - np.log1p(i / math.exp(ln_isat))


def fit_ekv(
    control_gate_v: Sequence[float] | np.ndarray,
    current_a: Sequence[float] | np.ndarray,
    temperature_c: float,
    drain_v: float,
    *,
    i_min_a: float = 1e-9,
    nplc: float = 1.0,
    saturation_a: float | None = None,
) -> EkvFit:
    """Fit one Id-Vg curve (control-gate V, bit-line current A at ``temperature_c`` C and
    drain bias ``drain_v`` V) with the EKV interpolation (module docstring): weighted
    least squares on ln I (Levenberg-Marquardt) over the readings of at least
    ``i_min_a`` (A). ``saturation_a`` fixes I_sat (A); None fits it. A curve with fewer
    than 5 usable points, or without a point above the weak-inversion region, gives NaN.
    """
    v = np.asarray(control_gate_v, dtype=float)
    i = np.asarray(current_a, dtype=float)
    keep = np.isfinite(v) & np.isfinite(i) & (i >= i_min_a)
    v, i = v[keep], i[keep]
    order = np.argsort(v, kind="stable")
    v, i = v[order], i[order]
    n_free = 3 if saturation_a is not None else 4
    if v.size < n_free + 2 or np.ptp(v) <= 0:
        return _NAN_FIT
    u_t = thermal_voltage_v(temperature_c)
    y = np.log(i)
    sigma = np.sqrt(
        _NOISE_FLOOR_REL**2 + _NOISE_WHITE_A / (i * nplc) + (_NOISE_RESOLUTION_A / i) ** 2
    )
    w = 1.0 / sigma
    # Start: n from the weak-inversion slope, Vth where I reaches ~0.3 of the top of the
    # weak region, I0 from the weak-inversion line there.
    weak = i < 0.05 * i.max()
    if weak.sum() < 3:
        weak = np.zeros(v.size, dtype=bool)
        weak[: min(3, v.size)] = True
    slope, intercept = np.polyfit(v[weak], y[weak], 1)
    if not slope > 0:
        return _NAN_FIT
    n0 = float(np.clip(1.0 / (slope * u_t), 1.0, 3.0))
    top = float(i.max())
    target = math.log(0.1 * top)
    vth0 = float(np.interp(target, np.maximum.accumulate(y), v))
    ln_i0 = float(intercept + slope * vth0) - math.log(math.log(2.0) ** 2)
    ln_isat = math.log(saturation_a) if saturation_a is not None else math.log(2.0 * top)
    p = np.array([vth0, math.log(n0), ln_i0, ln_isat])
    free = [0, 1, 2] if saturation_a is not None else [0, 1, 2, 3]

    def residual(q: np.ndarray) -> np.ndarray:
        return (_ekv_ln_current(q, v, u_t, drain_v) - y) * w

    r = residual(p)
    cost = float(r @ r)
    lam = 1e-3
    for _ in range(200):
        jac = np.empty((v.size, len(free)))
        for k, j in enumerate(free):
            h = 1e-6
            dp = np.zeros(4)
            dp[j] = h
            jac[:, k] = (residual(p + dp) - r) / h
        a = jac.T @ jac
        g = jac.T @ r
        improved = False
        while lam < 1e10:
            try:
                step = np.linalg.solve(a + lam * np.diag(np.diag(a) + 1e-12), -g)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            trial = p.copy()
            trial[free] += step
            # keep n within physical bounds
            trial[1] = min(max(trial[1], 0.0), math.log(5.0))
            rt = residual(trial)
            ct = float(rt @ rt)
            if math.isfinite(ct) and ct < cost:
                done = cost - ct < 1e-10 * max(cost, 1e-30) or np.max(np.abs(step)) < 1e-9
                p, r, cost, lam, improved = trial, rt, ct, lam / 3, True
                break
            lam *= 4
        if not improved or done:
            break
    resid = _ekv_ln_current(p, v, u_t, drain_v) - y
    return EkvFit(
        vth_v=float(p[0]),
        slope_factor=float(math.exp(p[1])),
        i0_a=float(math.exp(p[2])),
        saturation_a=float(math.exp(p[3])),
        points=int(v.size),
        rms_log=float(np.sqrt(np.mean(resid**2))),
    )


# ------------------------------------------------------------------ shared measurement


def _read_settings(params: dict[str, Any]) -> ReadSettings:
    return ReadSettings(
        read_v=params["read_v"],
        scheme="track",
        averages=params["averages"],
        nplc=params["nplc"],
        current_limit_a=params["current_limit_a"],
    )


def _read_at_gate(
    ctx: SweepContext, row: int, col: int, control_gate_v: float, settings: ReadSettings
) -> float:
    """Bit-line current (A) of cell (row, col) with the control gate at ``control_gate_v``
    (V), erase gate and source at 0 V."""
    ctx.station.board.set_eflash_biases(
        control_gate_v=float(control_gate_v), erase_gate_v=0.0, source_v=0.0
    )
    return float(ctx.ops.read_device(row, col, settings).current_a)


def _read_background(ctx: SweepContext, row: int, settings: ReadSettings) -> float:
    """Bit-line current (A) with word line ``row`` grounded as well, every word line off:
    the leakage of the bit line's cells through their select transistors at the present
    control-gate bias (the background under a cell's weak-inversion current). The cell
    on ``row`` must be routed (just read); its next read routes it again."""
    ctx.station.board.set_line("row", row, "ground")
    smu = ctx.ops.smu
    if settings.averages == 1:
        smu.set_voltage(settings.read_v)
        try:
            return float(smu.measure_current())
        finally:
            smu.set_voltage(0.0)
    return float(np.mean(smu.list_sweep(np.full(settings.averages, settings.read_v))))


def _chamber_configured(station: Any) -> bool:
    config = getattr(station, "config", None)
    instruments = getattr(config, "instruments", None)
    if instruments is None:
        return True
    return "chamber" in instruments


def _reach_temperature(ctx: SweepContext, setpoint_c: float) -> float:
    """Bring the chamber to ``setpoint_c`` (C) unless it is there already; return the
    chip temperature (C) to use: the chamber's reading, or the setpoint without one."""
    if not _chamber_configured(ctx.station):
        return float(setpoint_c)
    params = ctx.params
    chamber = ctx.station.chamber
    pv = chamber.temperature()
    if abs(chamber.setpoint() - setpoint_c) > 1e-6 or abs(pv - setpoint_c) > params["tolerance_c"]:
        chamber.set_setpoint(setpoint_c)
        pv = chamber.wait_until_stable(
            tolerance_c=params["tolerance_c"], soak_time_s=params["soak_s"]
        )
        ctx.writer.add_chamber(setpoint_c=setpoint_c, air_c=pv)
    return float(pv)


def _check_temperatures(temps: Sequence[float], station: Any, field: str) -> None:
    limits = station.limits
    for t in temps:
        if not limits.min_temperature_c <= t <= limits.max_temperature_c:
            raise ConfigError(
                f"value {t:g} C is not allowed; the station's chamber range is "
                f"{limits.min_temperature_c:g} to {limits.max_temperature_c:g} C",
                field=field,
            )


def _stats(values: np.ndarray) -> dict[str, float | int]:
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return {"count": 0}
    return {
        "count": int(finite.size),
        "median": float(np.median(finite)),
        "mean": float(finite.mean()),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        "min": float(finite.min()),
        "max": float(finite.max()),
    }


# --------------------------------------------------------------------------------- idvg


@register_sweep
class EflashIdVg(Sweep):
    """Id-Vg per cell and temperature: threshold, subthreshold slope, temperature
    coefficient (module docstring)."""

    kind = "idvg"
    summary = "eFlash Id-Vg per cell and temperature: Vth, subthreshold slope, dVth/dT"
    array_kinds: ClassVar[tuple[str, ...]] = ("eflash",)
    description = (
        "Per cell and chamber temperature: the bit-line current against the control-gate "
        "bias, from below i_min_a into strong inversion (stored as 'idvg' traces), fitted "
        "with the EKV interpolation of docs/devices.md. Profile: vth_v (the model's "
        "threshold at reference_c), subthreshold_slope_v_per_decade (n kT/q ln 10 at "
        "reference_c) and, with two or more temperatures, vth_temp_coeff_v_per_k."
    )
    params = (
        Param("sample", int, 0, low=0, high=1 << 24, help="cells measured (0: every cell)"),
        Param(
            "temperatures_c",
            list,
            [25.0, 85.0],
            unit="C",
            low=-60.0,
            high=200.0,
            help="chamber temperatures (C); two or more give the Vth temperature coefficient",
        ),  # fmt: skip
        Param(
            "reference_c",
            float,
            25.0,
            unit="C",
            low=-60.0,
            high=200.0,
            help="temperature (C) at which vth_v and the subthreshold slope are reported",
        ),  # fmt: skip
        Param("read_v", float, 1.0, unit="V", low=0.1, high=1.5, help="bit-line read bias (V)"),
        Param("nplc", float, 1.0, low=0.01, high=10.0, help="SMU integration (PLC)"),
        Param("averages", int, 1, low=1, high=100, help="readings averaged per point"),
        Param(
            "current_limit_a", float, 1e-4, unit="A", low=1e-9, high=1.0, help="SMU compliance (A)"
        ),  # fmt: skip
        Param(
            "step_v",
            float,
            0.04,
            unit="V",
            low=0.005,
            high=0.2,
            help="control-gate step of the curve (V)",
        ),  # fmt: skip
        Param(
            "coarse_step_v",
            float,
            0.2,
            unit="V",
            low=0.02,
            high=1.0,
            help="control-gate step while looking for the curve's foot (V)",
        ),  # fmt: skip
        Param(
            "cg_min_v",
            float,
            0.0,
            unit="V",
            low=0.0,
            high=12.0,
            help="lowest control-gate bias (V)",
        ),  # fmt: skip
        Param(
            "cg_max_v",
            float,
            6.0,
            unit="V",
            low=0.0,
            high=12.0,
            help="highest control-gate bias (V)",
        ),  # fmt: skip
        Param(
            "i_min_a",
            float,
            1e-9,
            unit="A",
            low=1e-13,
            high=1e-6,
            help="lowest current used in the fit (A)",
        ),  # fmt: skip
        Param(
            "i_max_a",
            float,
            12e-6,
            unit="A",
            low=1e-8,
            high=1e-3,
            help="the curve stops once the current passes this (A)",
        ),  # fmt: skip
        Param(
            "background_below_a",
            float,
            1e-7,
            unit="A",
            low=0.0,
            high=1e-3,
            help="below this current each point is read again with the word line off and "
            "that bit-line leakage subtracted (A; 0: never)",
        ),
        Param(
            "soak_s",
            float,
            300.0,
            unit="s",
            low=0.0,
            high=36000.0,
            help="soak at each temperature once the chamber is stable (s)",
        ),  # fmt: skip
        Param(
            "tolerance_c",
            float,
            0.3,
            unit="C",
            low=0.01,
            high=5.0,
            help="chamber stability band (C)",
        ),  # fmt: skip
    )

    def check(self, params: dict[str, Any], chip: RegisteredChip, station: Any) -> None:
        super().check(params, chip, station)
        temps = [float(t) for t in params["temperatures_c"]]
        if not temps:
            raise ConfigError(
                "value [] is not allowed; give one or more temperatures (C)",
                field="temperatures_c",
            )
        if len(set(temps)) != len(temps):
            raise ConfigError(
                f"value {temps} is not allowed; each temperature once", field="temperatures_c"
            )
        if _chamber_configured(station):
            _check_temperatures(temps, station, "temperatures_c")
            if len(temps) > 1:
                _check_temperatures([params["reference_c"]], station, "reference_c")
        elif len(temps) > 1:
            raise ConfigError(
                f"value {temps} is not allowed; this station has no chamber, so give one "
                "temperature: the chip's (C)",
                field="temperatures_c",
            )
        if len(temps) == 1 and abs(temps[0] - params["reference_c"]) > 0.5:
            raise ConfigError(
                f"value {params['reference_c']:g} C is not allowed; with one temperature "
                f"({temps[0]:g} C) the reference must be that temperature",
                field="reference_c",
            )
        if params["cg_min_v"] >= params["cg_max_v"]:
            raise ConfigError(
                f"value {params['cg_max_v']:g} V is not allowed; must exceed cg_min_v "
                f"({params['cg_min_v']:g} V)",
                field="cg_max_v",
            )
        station.limits.check_eflash_voltage(params["cg_max_v"], what="cg_max_v")
        station.limits.check_voltage(params["read_v"], "read", what="read_v")
        station.limits.check_current_limit(params["current_limit_a"], what="current_limit_a")
        if params["i_max_a"] >= params["current_limit_a"]:
            raise ConfigError(
                f"value {params['i_max_a']:g} A is not allowed; must be below the compliance "
                f"current_limit_a ({params['current_limit_a']:g} A)",
                field="i_max_a",
            )
        if params["i_min_a"] >= params["i_max_a"]:
            raise ConfigError(
                f"value {params['i_min_a']:g} A is not allowed; must be below i_max_a",
                field="i_min_a",
            )

    def plan(
        self, params: dict[str, Any], chip: RegisteredChip, rng: np.random.Generator,
        profile: ChipProfile | None,
    ) -> list[SweepUnit]:  # fmt: skip
        devices = choose_devices(chip, params["sample"], rng, profile=profile)
        units = []
        # One unit per bit line: its cells share the bit line's background (leakage).
        for t in params["temperatures_c"]:
            for c in sorted({d[1] for d in devices}):
                line = tuple(d for d in devices if d[1] == c)
                units.append(SweepUnit(f"T{float(t):g}C-col{c}", line, {"temperature_c": float(t)}))
        return units

    def estimate_s(self, params: dict[str, Any], chip: RegisteredChip | None) -> float | None:
        cells = params.get("sample") or (chip.rows * chip.cols if chip is not None else 64)
        temps = len(params.get("temperatures_c") or [25.0])
        per_read = params.get("averages", 1) * params.get("nplc", 1.0) / 60.0 + 2e-3
        points = 0.8 / params.get("step_v", 0.04) + 4
        return float(temps * (cells * points * per_read + params.get("soak_s", 300.0) + 60.0))

    # -- measuring -------------------------------------------------------------------------
    def run_unit(self, ctx: SweepContext, unit: SweepUnit) -> None:
        p = ctx.params
        setpoint = float(unit.info["temperature_c"])
        temperature = _reach_temperature(ctx, setpoint)
        settings = _read_settings(p)
        start = self._start_v(ctx, unit, setpoint)
        background: dict[float, float] = {}  # this bit line's leakage by control-gate bias
        for r, c in unit.devices:
            ctx.check_stop()
            v, i, bg = self._walk(ctx, r, c, start, settings, background)
            meta = {"setpoint_c": setpoint, "read_v": p["read_v"], "nplc": p["nplc"],
                    "averages": p["averages"]}  # fmt: skip
            ctx.writer.add_trace(
                r, c, "idvg", x=v, y=i, x_name="control_gate_v", y_name="current_a",
                temperature_c=temperature, meta={**meta, "background_subtracted": True},
            )  # fmt: skip
            has_bg = np.isfinite(bg)
            if has_bg.any():
                ctx.writer.add_trace(
                    r, c, "idvg-background", x=v[has_bg], y=bg[has_bg],
                    x_name="control_gate_v", y_name="current_a", temperature_c=temperature,
                    meta=meta,
                )  # fmt: skip
            fit = fit_ekv(
                v, i, temperature, p["read_v"], i_min_a=p["i_min_a"], nplc=p["nplc"] * p["averages"]
            )
            tag = f"{setpoint:g}c"
            ctx.parameter(r, c, f"idvg_vth_v_at_{tag}", fit.vth_v, "V")
            ctx.parameter(r, c, f"idvg_slope_factor_at_{tag}", fit.slope_factor)
            foot = v[(i >= p["i_min_a"])]
            if foot.size:
                start = float(foot.min()) - p["coarse_step_v"]

    def _start_v(self, ctx: SweepContext, unit: SweepUnit, setpoint_c: float) -> float:
        """Where a cell's walk starts (V): a coarse step below the profile's threshold foot
        if known, else 2 V."""
        p = ctx.params
        if ctx.profile is not None and ctx.profile.vth_v is not None:
            known = np.array([ctx.profile.vth_v[r, c] for r, c in unit.devices], dtype=float)
            known = known[np.isfinite(known)]
            if known.size:
                return float(np.median(known)) - 0.3
        return float(np.clip(2.0, p["cg_min_v"], p["cg_max_v"]))

    def _walk(
        self,
        ctx: SweepContext,
        row: int,
        col: int,
        start_v: float,
        settings: ReadSettings,
        background: dict[float, float],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Control-gate biases (V), cell currents (A, background subtracted) and the
        background (A, NaN where not read) of one cell's Id-Vg curve. Biases lie on the
        grid ``cg_min_v + k step_v``, so the bit line's background read for one cell
        (``background``: bias -> A) serves the next."""
        p = ctx.params
        lo, hi = p["cg_min_v"], p["cg_max_v"]
        coarse, step = p["coarse_step_v"], p["step_v"]
        i_min, i_max = p["i_min_a"], p["i_max_a"]
        below = p["background_below_a"]
        coarse = step * max(1, round(coarse / step))
        vs: list[float] = []
        cur: list[float] = []
        bgs: list[float] = []

        def read(v: float) -> float:
            v = float(np.clip(round(lo + round((v - lo) / step) * step, 6), lo, hi))
            amps = _read_at_gate(ctx, row, col, v, settings)
            bg = math.nan
            if amps < below:
                if v not in background:
                    background[v] = _read_background(ctx, row, settings)
                bg = background[v]
            vs.append(v)
            cur.append(amps - bg if math.isfinite(bg) else amps)
            bgs.append(bg)
            return cur[-1]

        def result() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            order = np.argsort(vs, kind="stable")
            return np.array(vs)[order], np.array(cur)[order], np.array(bgs)[order]

        v = float(np.clip(start_v, lo, hi))
        amps = read(v)
        if amps >= i_min:
            while amps >= i_min and v > lo:
                v = max(v - coarse, lo)
                amps = read(v)
            foot = v
        else:
            while amps < i_min and v < hi:
                v = min(v + coarse, hi)
                amps = read(v)
            if amps < i_min:  # nothing measurable up to cg_max_v
                return result()
            foot = max(v - coarse, lo)
        v = foot + step
        while v <= hi + 1e-9:
            amps = read(v)
            if amps > i_max:
                break
            v += step
        return result()

    # -- analysis --------------------------------------------------------------------------
    def finish(self, ctx: SweepContext) -> ProfileUpdate:
        p = ctx.params
        rows, cols = ctx.chip.rows, ctx.chip.cols
        temps = [float(t) for t in p["temperatures_c"]]
        traces = ctx.chain_traces("idvg")
        # the newest trace per (cell, setpoint) wins (a unit redone on resume)
        curves: dict[tuple[int, int, float], dict[str, Any]] = {}
        for t in traces:
            setpoint = float((t.get("meta") or {}).get("setpoint_c", t["temperature_c"]))
            curves[(int(t["row"]), int(t["col"]), setpoint)] = t
        nplc_eff = p["nplc"] * p["averages"]

        def fit_all(saturation_a: float | None) -> dict[tuple[int, int, float], EkvFit]:
            return {
                key: fit_ekv(
                    t["x"],
                    t["y"],
                    float(t["temperature_c"]),
                    p["read_v"],
                    i_min_a=p["i_min_a"],
                    nplc=nplc_eff,
                    saturation_a=saturation_a,
                )  # fmt: skip
                for key, t in curves.items()
            }

        first = fit_all(None)
        sats = np.array([f.saturation_a for f in first.values()], dtype=float)
        sats = sats[np.isfinite(sats)]
        common_sat = float(np.median(sats)) if sats.size else math.nan
        fits = fit_all(common_sat) if math.isfinite(common_sat) else first

        shape = (rows, cols, len(temps))
        vth = np.full(shape, np.nan)
        n = np.full(shape, np.nan)
        i0 = np.full(shape, np.nan)
        chip_t = np.full(shape, np.nan)
        rms = np.full(shape, np.nan)
        for (r, c, sp), f in fits.items():
            if sp not in temps:
                continue
            k = temps.index(sp)
            vth[r, c, k], n[r, c, k], i0[r, c, k] = f.vth_v, f.slope_factor, f.i0_a
            chip_t[r, c, k] = float(curves[(r, c, sp)]["temperature_c"])
            rms[r, c, k] = f.rms_log

        ref = float(p["reference_c"])
        vth_ref = np.full((rows, cols), np.nan)
        coeff = np.full((rows, cols), np.nan)
        for r in range(rows):
            for c in range(cols):
                ok = np.isfinite(vth[r, c]) & np.isfinite(chip_t[r, c])
                if ok.sum() >= 2:
                    slope, intercept = np.polyfit(chip_t[r, c][ok], vth[r, c][ok], 1)
                    coeff[r, c] = slope
                    vth_ref[r, c] = intercept + slope * ref
                near = ok & (np.abs(chip_t[r, c] - ref) <= 0.5)
                if near.any():  # measured at the reference: that fit, not the line
                    vth_ref[r, c] = float(np.mean(vth[r, c][near]))
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            n_mean = np.nanmean(n, axis=2)
        ss = n_mean * thermal_voltage_v(ref) * LN10

        for r in range(rows):
            for c in range(cols):
                if np.isfinite(vth_ref[r, c]):
                    ctx.parameter(r, c, "vth_v", vth_ref[r, c], "V")
                    ctx.parameter(r, c, "subthreshold_slope_v_per_decade", ss[r, c], "V/dec")
                if np.isfinite(coeff[r, c]):
                    ctx.parameter(r, c, "vth_temp_coeff_v_per_k", coeff[r, c], "V/K")

        measured = np.isfinite(vth).any(axis=2)
        per_t: list[dict[str, Any]] = []
        for k, temp in enumerate(temps):
            ss_t = n[:, :, k] * K_OVER_Q_V_PER_K * (chip_t[:, :, k] + 273.15) * LN10
            per_t.append(
                {
                    "setpoint_c": temp,
                    "chip_c": _stats(chip_t[:, :, k]).get("median"),
                    "vth_v": _stats(vth[:, :, k]),
                    "slope_factor": _stats(n[:, :, k]),
                    "subthreshold_slope_v_per_decade": _stats(ss_t),
                    "i0_a": _stats(i0[:, :, k]),
                    "rms_log": _stats(rms[:, :, k]),
                }
            )
        summary: dict[str, Any] = {
            "cells": int(measured.sum()),
            "cells_failed": int(sum(1 for key in curves if not math.isfinite(fits[key].vth_v))),
            "reference_c": ref,
            "saturation_a": common_sat,
            "saturation_spread_a": _stats(sats),
            "vth_v": _stats(vth_ref),
            "subthreshold_slope_v_per_decade": _stats(ss),
            "vth_temp_coeff_v_per_k": _stats(coeff),
            "per_temperature": per_t,
            "plot": {
                "temperature_c": temps,
                "vth_median_v": [pt["vth_v"].get("median") for pt in per_t],
                "ss_median_v_per_decade": [
                    pt["subthreshold_slope_v_per_decade"].get("median") for pt in per_t
                ],
            },
            "definition": (
                "vth_v: EKV threshold (Vth of x = (Vcg - Vth)/(n U_T)) fitted over weak to "
                "strong inversion, at reference_c; subthreshold slope n U_T ln 10"
            ),
        }
        arrays: dict[str, np.ndarray] = {
            "vth_v": vth_ref,
            "subthreshold_slope_v_per_decade": ss,
        }
        if len(temps) >= 2:
            arrays["vth_temp_coeff_v_per_k"] = coeff
        self._restore_chamber(ctx, temps, ref)
        return ProfileUpdate(arrays=arrays, summary=summary)

    @staticmethod
    def _restore_chamber(ctx: SweepContext, temps: list[float], ref: float) -> None:
        """Leave the chamber heading back to the reference temperature (no wait)."""
        if len(temps) > 1 and _chamber_configured(ctx.station):
            ctx.station.chamber.set_setpoint(ref)


# ------------------------------------------------------------------------ program-erase


def gate_at_current(
    ctx: SweepContext,
    row: int,
    col: int,
    current_a: float,
    settings: ReadSettings,
    *,
    guess_v: float = 2.5,
    lo_v: float = 0.0,
    hi_v: float = 6.0,
    near_log: float = 0.05,
    final_reads: int = 3,
    max_reads: int = 30,
) -> float:
    """The control-gate bias (V) at which cell (row, col) draws ``current_a`` (A).

    A secant search on ln I (a typical cell's weak-inversion slope, n = 1.5 at 25 C, to
    start; steps of at most 0.3 V) until a reading is within ``near_log`` of ln
    ``current_a``; then ``final_reads`` readings there, each corrected to ``current_a``
    along the local slope, averaged (the read noise of one reading would otherwise stay
    in the result). NaN if the current is not found between ``lo_v`` and ``hi_v``."""
    nominal = 1.0 / (1.5 * thermal_voltage_v(25.0))  # 1/V
    slope = nominal
    target = math.log(current_a)
    floor = current_a * 1e-4
    v = float(np.clip(guess_v, lo_v, hi_v))
    last: tuple[float, float] | None = None
    below, above = lo_v, hi_v  # bracket: current below / above the target
    estimates: list[float] = []
    for _ in range(max_reads):
        amps = _read_at_gate(ctx, row, col, v, settings)
        y = math.log(amps) if amps > floor else -math.inf
        if y < target - near_log:  # clearly below / above (noise cannot reverse it)
            below = max(below, v)
        elif y > target + near_log:
            above = min(above, v)
        if not amps > floor:
            last = None
            estimates.clear()
            if v >= hi_v:
                return math.nan
            v = min(v + 0.3, 0.5 * (v + above) if above > v else hi_v, hi_v)
            continue
        if last is not None and abs(v - last[0]) > 2e-3:
            s = (y - last[1]) / (v - last[0])
            if 0.2 * nominal <= s <= 3.0 * nominal:
                slope = s
        err = target - y
        if abs(err) <= near_log:
            estimates.append(v + err / slope)
            if len(estimates) >= final_reads:
                return float(np.mean(estimates))
            continue  # read again at the same bias
        estimates.clear()
        last = (v, y)
        nxt = v + float(np.clip(err / slope, -0.3, 0.3))
        if not below < nxt < above:  # outside the bracket: bisect it
            nxt = 0.5 * (below + above)
        nxt = float(np.clip(nxt, lo_v, hi_v))
        if abs(nxt - v) < 1e-6:
            if v in (lo_v, hi_v):
                return math.nan  # the current lies beyond the allowed gate range
            continue
        v = nxt
    return float(np.mean(estimates)) if estimates else math.nan


#: Threshold change (V) per e-fold slow-down of program / speed-up of erase as the
#: threshold rises (docs/devices.md: program_state_v, erase_state_v, 0.3 V); used only to
#: compare pulse responses taken at different thresholds when aiming restore pulses.
_STATE_SLOPE_V = 0.3


def _state_factor(key: str, vth_v: float, reference_v: float) -> float:
    """Factor taking a shift seen at threshold ``vth_v`` to the one expected at
    ``reference_v`` (V): program slows and erase speeds up as the threshold rises."""
    x = (vth_v - reference_v) / _STATE_SLOPE_V
    x = float(np.clip(x if key == "program" else -x, -30.0, 30.0))
    return math.exp(x)


@register_sweep
class EflashProgramErase(Sweep):
    """Threshold response to program (source) and erase (erase-gate) pulses: amplitude
    and width ladders from the cell's starting state (module docstring)."""

    kind = "program-erase"
    summary = "eFlash program / erase response: Vth shift against pulse amplitude and width"
    array_kinds: ClassVar[tuple[str, ...]] = ("eflash",)
    description = (
        "On a sample of cells: the threshold shift of one program pulse (source line) per "
        "amplitude of program_v and one erase pulse (erase gate) per amplitude of erase_v, "
        "then width ladders, each pulse from the cell's start state; the threshold is "
        "tracked as the control-gate bias at i_ref_a. Cells are brought back to within "
        "restore_tolerance_v of their start; the other cells of each word line are tracked "
        "for erase disturb. Summary only (no profile arrays)."
    )
    params = (
        Param("sample", int, 8, low=0, high=1 << 24, help="cells measured (0: every cell)"),
        Param(
            "program_v",
            list,
            [4.0, 4.25, 4.5, 4.75, 5.0, 5.25, 5.5],
            unit="V",
            low=0.1,
            high=6.0,
            help="program (source-line) amplitudes (V; the board's source line goes to 6 V)",
        ),  # fmt: skip
        Param(
            "program_width_s",
            float,
            1e-6,
            unit="s",
            low=1e-7,
            high=1.0,
            help="width of the program amplitude ladder's pulses (s)",
        ),  # fmt: skip
        Param(
            "program_widths_s",
            list,
            [1e-7, 1e-6, 1e-5],
            unit="s",
            low=1e-7,
            high=1.0,
            help="program width ladder (s) at program_width_v",
        ),  # fmt: skip
        Param(
            "program_width_v",
            float,
            4.75,
            unit="V",
            low=0.1,
            high=6.0,
            help="amplitude of the program width ladder (V)",
        ),  # fmt: skip
        Param(
            "erase_v",
            list,
            [8.5, 9.0, 9.5, 10.0, 10.5, 11.0],
            unit="V",
            low=0.1,
            high=14.0,
            help="erase (erase-gate) amplitudes (V, magnitudes)",
        ),  # fmt: skip
        Param(
            "erase_width_s",
            float,
            1e-3,
            unit="s",
            low=1e-7,
            high=1.0,
            help="width of the erase amplitude ladder's pulses (s)",
        ),  # fmt: skip
        Param(
            "erase_widths_s",
            list,
            [1e-4, 1e-3, 1e-2],
            unit="s",
            low=1e-7,
            high=1.0,
            help="erase width ladder (s) at erase_width_v",
        ),  # fmt: skip
        Param(
            "erase_width_v",
            float,
            10.0,
            unit="V",
            low=0.1,
            high=14.0,
            help="amplitude of the erase width ladder (V, magnitude)",
        ),  # fmt: skip
        Param(
            "i_ref_a",
            float,
            3e-8,
            unit="A",
            low=1e-10,
            high=1e-6,
            help="constant current (A, weak inversion) at which Vth is tracked",
        ),  # fmt: skip
        Param(
            "restore_tolerance_v",
            float,
            0.01,
            unit="V",
            low=0.002,
            high=0.5,
            help="each pulse starts, and the cell ends, this close to its start Vth (V)",
        ),  # fmt: skip
        Param(
            "max_restore_pulses",
            int,
            40,
            low=1,
            high=1000,
            help="most pulses to bring a cell back to its start (V)",
        ),  # fmt: skip
        Param(
            "max_row_disturb_v",
            float,
            0.05,
            unit="V",
            low=0.0,
            high=5.0,
            help="a cell's erasing stops once the word line's highest-threshold other cell "
            "has moved by this much (V; 0: no guard; needs row_disturb)",
        ),
        Param(
            "row_disturb",
            bool,
            True,
            help="track the other cells of the word line before and after each cell",
        ),  # fmt: skip
        Param("read_v", float, 1.0, unit="V", low=0.1, high=1.5, help="bit-line read bias (V)"),
        Param("nplc", float, 1.0, low=0.01, high=10.0, help="SMU integration (PLC)"),
        Param("averages", int, 1, low=1, high=100, help="readings averaged per point"),
        Param(
            "current_limit_a", float, 1e-4, unit="A", low=1e-9, high=1.0, help="SMU compliance (A)"
        ),  # fmt: skip
        Param(
            "scheme",
            str,
            "v/2",
            choices=("v/2", "v/3", "float"),
            help="half-select scheme of the pulses (unselected bit lines inhibited)",
        ),  # fmt: skip
    )

    def check(self, params: dict[str, Any], chip: RegisteredChip, station: Any) -> None:
        super().check(params, chip, station)
        limits = station.limits
        for name in ("program_v", "erase_v"):
            if not params[name]:
                raise ConfigError("value [] is not allowed; give amplitudes (V)", field=name)
            for a in params[name]:
                limits.check_eflash_voltage(float(a), what=name)
        for name in ("program_width_v", "erase_width_v"):
            limits.check_eflash_voltage(params[name], what=name)
        for name in ("program_width_s", "erase_width_s"):
            limits.check_pulse_width(params[name], what=name)
        for name in ("program_widths_s", "erase_widths_s"):
            for w in params[name]:
                limits.check_pulse_width(float(w), what=name)
        limits.check_voltage(params["read_v"], "read", what="read_v")
        limits.check_current_limit(params["current_limit_a"], what="current_limit_a")

    def plan(
        self, params: dict[str, Any], chip: RegisteredChip, rng: np.random.Generator,
        profile: ChipProfile | None,
    ) -> list[SweepUnit]:  # fmt: skip
        devices = choose_devices(chip, params["sample"], rng, profile=profile)
        return [SweepUnit(f"cell-{r}-{c}", ((r, c),)) for r, c in devices]

    def estimate_s(self, params: dict[str, Any], chip: RegisteredChip | None) -> float | None:
        cells = params.get("sample") or (chip.rows * chip.cols if chip is not None else 8)
        steps = sum(len(params.get(k) or []) for k in ("program_v", "erase_v",
                    "program_widths_s", "erase_widths_s"))  # fmt: skip
        per_read = params.get("averages", 1) * params.get("nplc", 1.0) / 60.0 + 2e-3
        return float(cells * steps * 6 * 6 * per_read)

    # -- measuring -------------------------------------------------------------------------
    def run_unit(self, ctx: SweepContext, unit: SweepUnit) -> None:
        p = ctx.params
        (r, c) = unit.devices[0]
        settings = _read_settings(p)
        guess = 2.5
        known = ctx.profile.vth_v if ctx.profile is not None else None
        if known is not None and np.isfinite(known[r, c]):
            guess = float(known[r, c]) - 0.1
        limits = ctx.station.limits
        hi = min(6.0, limits.max_eflash_v)

        def vt(start: float) -> float:
            guess_v = start if math.isfinite(start) else v_guess
            return gate_at_current(ctx, r, c, p["i_ref_a"], settings, guess_v=guess_v, hi_v=hi)

        v_guess = guess
        neighbours = [(r, k) for k in range(ctx.chip.cols) if k != c] if p["row_disturb"] else []
        around_before = [
            gate_at_current(ctx, nr, nc, p["i_ref_a"], settings, guess_v=guess, hi_v=hi)
            for nr, nc in neighbours
        ]
        v0 = vt(guess)
        ctx.parameter(r, c, "pe_start_vcg_v", v0, "V")
        if not math.isfinite(v0):
            return
        # Word-line disturb guard. Erasing this cell also erases the other cells of its
        # word line a little (the bit-line inhibit is finite), the most those with the
        # highest threshold (erase speeds up with Vth). That cell is watched after every
        # erase pulse; its shift per volt of this cell's erase gives the disturb ratio,
        # and a ladder step is taken only if it (erase) or undoing it (program) is
        # predicted to keep the watched cell within max_row_disturb_v. Past the limit, no
        # more erase (and so no step that would need one to be undone).
        finite = [k for k, b in enumerate(around_before) if math.isfinite(b)]
        watch = max(finite, key=lambda k: around_before[k]) if finite else None
        limit = p["max_row_disturb_v"] if watch is not None else 0.0
        guard = {"v": around_before[watch] if watch is not None else math.nan,
                 "shift": 0.0, "dose": 0.0}  # fmt: skip

        def pulse(amplitude: float, width: float) -> None:
            """One pulse on the cell, then its threshold (state["v"]) and the guard's."""
            before_v = state["v"]
            ctx.pulse(r, c, amplitude, width, scheme=p["scheme"])
            state["v"] = vt(before_v)
            if amplitude < 0 and limit > 0 and watch is not None:
                if math.isfinite(state["v"]) and math.isfinite(before_v):
                    guard["dose"] += abs(state["v"] - before_v)
                nr, nc = neighbours[watch]
                now = gate_at_current(
                    ctx, nr, nc, p["i_ref_a"], settings, guess_v=guard["v"], hi_v=hi
                )
                if math.isfinite(now):
                    guard["v"] = now
                    guard["shift"] = abs(now - around_before[watch])
                if not guard["shift"] <= limit or not math.isfinite(now):
                    state["erase_blocked"] = True

        def disturb_allowed(amplitude: float, width: float) -> bool:
            """Whether a ladder step keeps the watched cell within the limit, at 1.5 times
            the disturb ratio measured so far: an erase step by its own shift, a program
            step by the erase that undoes it (shifts predicted from this cell's
            responses)."""
            if limit <= 0:
                return True
            if guard["dose"] < 0.005:
                return guard["shift"] <= limit
            key = "program" if amplitude > 0 else "erase"
            ratio = 1.5 * guard["shift"] / guard["dose"]
            predicted = self._predicted_shift(
                state["seen"][key], abs(amplitude), width
            ) / _state_factor(key, state["v"], v0)
            return guard["shift"] + ratio * predicted <= limit

        state: dict[str, Any] = {
            "v": v0, "program_climb": 0, "erase_climb": 0,
            "program_stretch": 1.0, "erase_stretch": 1.0,
            "seen": {"program": [], "erase": []}, "pulse": pulse, "erase_blocked": False,
        }  # fmt: skip
        # Erase steps first: each is undone by program pulses, which disturb nothing; the
        # program steps after them need erase pulses to be undone.
        ladders = (
            ("erase", [(-float(a), p["erase_width_s"]) for a in p["erase_v"]], "v"),
            ("erase-width", [(-p["erase_width_v"], float(w)) for w in p["erase_widths_s"]], "s"),
            ("program", [(float(a), p["program_width_s"]) for a in p["program_v"]], "v"),
            ("program-width",
             [(p["program_width_v"], float(w)) for w in p["program_widths_s"]], "s"),
        )  # fmt: skip
        skipped = 0
        for name, steps, axis in ladders:
            dvth, before = [], []
            for amplitude, width in steps:
                ctx.check_stop()
                self._restore(ctx, r, c, v0, state, vt)
                start = state["v"]
                tag = f"{abs(amplitude):g}v" if axis == "v" else f"{width:g}s"
                if state["erase_blocked"] or not disturb_allowed(amplitude, width):
                    skipped += 1
                    dvth.append(math.nan)
                    before.append(start - v0)
                    ctx.parameter(r, c, f"pe_{name}_dvth_v_at_{tag}", None, "V",
                                  text="skipped: word-line disturb limit")  # fmt: skip
                    continue
                pulse(amplitude, width)
                dvth.append(state["v"] - start)
                key = "program" if amplitude > 0 else "erase"
                state["seen"][key].append(
                    (abs(amplitude), width, abs(dvth[-1]) * _state_factor(key, start, v0))
                )
                before.append(start - v0)
                ctx.parameter(r, c, f"pe_{name}_dvth_v_at_{tag}", dvth[-1], "V")
            x = [abs(a) for a, _ in steps] if axis == "v" else [w for _, w in steps]
            ctx.writer.add_trace(
                r, c, f"{name}-response", x=x, y=dvth,
                x_name="amplitude_v" if axis == "v" else "width_s", y_name="dvth_v",
                meta={"width_s" if axis == "v" else "amplitude_v":
                      steps[0][1] if axis == "v" else abs(steps[0][0]),
                      "start_offset_v": before, "i_ref_a": p["i_ref_a"]},
            )  # fmt: skip
        restored = self._restore(ctx, r, c, v0, state, vt)
        ctx.parameter(r, c, "pe_end_offset_v", state["v"] - v0, "V")
        ctx.parameter(r, c, "pe_restored", 1.0 if restored else 0.0)
        ctx.parameter(r, c, "pe_erase_stopped", 1.0 if state["erase_blocked"] else 0.0)
        ctx.parameter(r, c, "pe_steps_skipped", float(skipped))
        if neighbours:
            after = [
                gate_at_current(ctx, nr, nc, p["i_ref_a"], settings, guess_v=b, hi_v=hi)
                for (nr, nc), b in zip(neighbours, around_before, strict=True)
            ]
            shift = np.array(after) - np.array(around_before)
            ctx.writer.add_trace(
                r, c, "row-disturb", x=[float(k) for _, k in neighbours], y=shift,
                x_name="bit_line", y_name="dvth_v", meta={"i_ref_a": p["i_ref_a"]},
            )  # fmt: skip
            ctx.parameter(r, c, "pe_row_disturb_max_v", float(np.nanmax(np.abs(shift))), "V")

    def _restore(
        self, ctx: SweepContext, row: int, col: int, target_v: float, state: dict[str, Any],
        vt: Any,
    ) -> bool:  # fmt: skip
        """Program / erase with verify until the tracked threshold is within the restore
        tolerance of ``target_v`` (V).

        Each pulse aims at 0.8 of the remaining distance (0.5 once erasing has stopped,
        as an overshoot could then not be undone). ln(|shift| / width), brought to the
        start threshold (program slows, erase speeds up by e per 0.3 V of threshold), is
        taken as linear in the amplitude, fitted to the shifts this cell has shown (the
        ladders' pulses and earlier restores). The amplitude stays within the ladder's
        range and at most one ladder step above the largest tried; where that is too
        weak (a cell far above or below the threshold the ladder was set for) the width
        grows instead, at most tenfold per pulse, up to 1000 times the ladder's width
        and the station's longest pulse. Without two informative shifts yet, the ladder
        is climbed one amplitude per pulse that moves less than half the tolerance, then
        the width by 10.
        """
        p = ctx.params
        tol = p["restore_tolerance_v"]
        for _ in range(p["max_restore_pulses"]):
            d = state["v"] - target_v
            if not math.isfinite(d):
                return False
            if abs(d) <= tol:
                return True
            key = "erase" if d > 0 else "program"
            if key == "erase" and state["erase_blocked"]:
                return False
            ladder = sorted(float(a) for a in p[f"{key}_v"])
            base = p[f"{key}_width_s"]
            longest = min(1000.0 * base, ctx.station.limits.max_pulse_width_s, 1.0)
            # Aim short when an overshoot could not be undone (no erase left).
            aim = 0.5 if state["erase_blocked"] else 0.8
            want = aim * abs(d) * _state_factor(key, state["v"], target_v)
            amp, width = self._restore_pulse(state, key, ladder, base, longest, want, tol)
            before = state["v"]
            state["pulse"](-amp if key == "erase" else amp, width)
            moved = abs(state["v"] - before)
            if math.isfinite(moved):
                state["seen"][key].append(
                    (amp, width, moved * _state_factor(key, before, target_v))
                )
            if moved < tol / 2:
                climb = state[f"{key}_climb"]
                if climb < len(ladder) - 1:
                    state[f"{key}_climb"] = climb + 1
                else:
                    state[f"{key}_stretch"] = min(state[f"{key}_stretch"] * 10.0, longest / base)
        return abs(state["v"] - target_v) <= tol

    @staticmethod
    def _predicted_shift(seen: list[tuple[float, float, float]], amp: float, width: float) -> float:
        """Threshold shift (V) of a pulse of ``amp`` (V) and ``width`` (s) from this
        cell's earlier ones: ln(shift / width) linear in the amplitude; with fewer than
        two, the largest shift seen times e per 0.25 V above its amplitude (steeper than
        the response of docs/devices.md, so cautious); with none, 0 V."""
        use = [(a, w, m) for a, w, m in seen if m > 1e-3]
        amps = np.array([a for a, _, _ in use])
        if len(use) >= 2 and np.ptp(amps) > 0:
            beta, alpha = np.polyfit(amps, np.log([m / w for _, w, m in use]), 1)
            if beta > 0:
                return float(math.exp(alpha + beta * amp) * width)
        if seen:
            a0, w0, m0 = max(seen, key=lambda t: t[2])
            return float(max(m0, 1e-3) * width / w0 * math.exp((amp - a0) / 0.25))
        return 0.0

    @staticmethod
    def _restore_pulse(
        state: dict[str, Any], key: str, ladder: list[float], base_s: float, longest_s: float,
        want_v: float, tol_v: float,
    ) -> tuple[float, float]:  # fmt: skip
        """Amplitude (V, magnitude) and width (s) expected to move the threshold by
        ``want_v`` (V); see :meth:`_restore`."""
        seen = [(a, w, m) for a, w, m in state["seen"][key] if m > max(0.1 * tol_v, 1e-3)]
        amps = np.array([a for a, _, _ in seen])
        if len(seen) >= 2 and np.ptp(amps) > 0:
            beta, alpha = np.polyfit(amps, np.log([m / w for _, w, m in seen]), 1)
            if beta > 0:
                # Extrapolate at most one ladder step (or a tenfold width) beyond what
                # this cell has shown: the fit rests on few, scattered pulses.
                tried = [a for a, _, _ in state["seen"][key]]
                spacing = float(np.min(np.diff(ladder))) if len(ladder) > 1 else 0.0
                top = min(ladder[-1], max(tried) + spacing)
                amp = (math.log(want_v / base_s) - alpha) / beta
                if amp <= top:
                    return float(max(amp, ladder[0])), base_s
                width = want_v / math.exp(alpha + beta * top)
                widest = max([w for a, w, _ in state["seen"][key] if a >= top] or [base_s])
                return top, float(np.clip(width, base_s, min(10.0 * widest, longest_s)))
        amp = ladder[min(state[f"{key}_climb"], len(ladder) - 1)]
        return amp, float(min(base_s * state[f"{key}_stretch"], longest_s))

    # -- analysis --------------------------------------------------------------------------
    def finish(self, ctx: SweepContext) -> ProfileUpdate:
        p = ctx.params
        names: list[tuple[str, str, list[float]]] = [
            ("program", "v", [float(a) for a in p["program_v"]]),
            ("erase", "v", [float(a) for a in p["erase_v"]]),
            ("program-width", "s", [float(w) for w in p["program_widths_s"]]),
            ("erase-width", "s", [float(w) for w in p["erase_widths_s"]]),
        ]
        wanted = [f"pe_{n}_dvth_v_at_{x:g}{u}" for n, u, xs in names for x in xs]
        values = ctx.chain_parameters([*wanted, "pe_start_vcg_v", "pe_end_offset_v",
                                       "pe_restored", "pe_row_disturb_max_v", "pe_erase_stopped",
                                       "pe_steps_skipped"])  # fmt: skip
        curves: dict[str, dict[str, Any]] = {}
        for n, u, xs in names:
            med = [_stats(values[f"pe_{n}_dvth_v_at_{x:g}{u}"]) for x in xs]
            curves[n] = {"x": xs, "dvth_v": med}
        restored = values["pe_restored"]
        summary: dict[str, Any] = {
            "cells": int(np.isfinite(values["pe_start_vcg_v"]).sum()),
            "i_ref_a": p["i_ref_a"],
            "program_width_s": p["program_width_s"],
            "erase_width_s": p["erase_width_s"],
            "program_width_v": p["program_width_v"],
            "erase_width_v": p["erase_width_v"],
            "curves": curves,
            "restored": int(np.nansum(restored == 1.0)),
            "not_restored": int(np.nansum(restored == 0.0)),
            "end_offset_v": _stats(values["pe_end_offset_v"]),
            "row_disturb_max_v": _stats(values["pe_row_disturb_max_v"]),
            "erase_stopped_for_disturb": int(np.nansum(values["pe_erase_stopped"] == 1.0)),
            "steps_skipped_for_disturb": int(np.nansum(values["pe_steps_skipped"])),
            "plot": {
                "program_v": curves["program"]["x"],
                "program_dvth_v": [m.get("median") for m in curves["program"]["dvth_v"]],
                "erase_v": curves["erase"]["x"],
                "erase_dvth_v": [m.get("median") for m in curves["erase"]["dvth_v"]],
                "program_width_s": curves["program-width"]["x"],
                "program_width_dvth_v": [
                    m.get("median") for m in curves["program-width"]["dvth_v"]
                ],
                "erase_width_s": curves["erase-width"]["x"],
                "erase_width_dvth_v": [m.get("median") for m in curves["erase-width"]["dvth_v"]],
            },
            "definition": (
                "dvth_v: shift of the control-gate bias at i_ref_a (V) after one pulse from "
                "the cell's start state (within restore_tolerance_v); signed (erase < 0)"
            ),
        }
        return ProfileUpdate(summary=summary)
