"""Temperature coefficient of the conductance: the ``temperature`` sweep.

What it measures: each device's d(I(V_read)/V_read)/dT at 25 C (S/K), the quantity of
docs/devices.md (*Definitions*: ``k_T (1 + b V_read^2)``), for the profile array
``temp_coeff_s_per_k``.

How (one resumable unit per step):

1. ``program``: the chamber goes to the first temperature of ``temperatures_c`` (default
   25 C), waits until stable and soaks; the chosen devices (``sample``, default 64) are put
   within +-5 % of the states (``states_s``, default 10, 30, 60, 90 uS; device i of the
   sample gets state i mod 4) with the conventional write-verify, and read. The states are
   set once: a resumed run that finds ``program`` done does not program again.
2. ``T<i>-<T>C`` for each temperature in turn: the chamber goes there, waits until the air
   is stable (``tolerance_c``) and soaks ``soak_s`` (s; default 600 s = 5 time constants of
   a packaged chip behind the air), then every device is read ``reads`` times
   ``read_spacing_s`` apart (each read ``averages`` readings at ``nplc``); the median is
   kept (a slow telegraph level shows in one read, not in the median). The chamber's
   reading is logged (``chamber_log``) and stored with each read.
3. ``return``: back at the first temperature, read again.

Extraction: after programming a device relaxes back by a fixed amount per decade of its
*effective* age, and the age runs faster at high temperature (Arrhenius). Read in one
rising pass, that drift would be mistaken for a temperature dependence; the return read
at the first temperature separates the two. Per device the reads are fitted with
``G = G25 + k (T - 25 C) + D log10(1 + t_eff / 1 s)``, t_eff the effective age at each
read (the time since the device's last pulse, each interval weighted by
``exp(Ea/k_B (1/298.15 K - 1/T))`` at the temperature of the read that ends it,
``activation_ev`` default 1 eV, the devices docs' assumed value). ``k`` is the profile's
``temp_coeff_s_per_k``; the median of ``D / G25`` (the relative drift per decade) is in
the summary as ``drift_per_decade_rel_median``.

Refused before any instrument is touched: a temperature outside the station's limits or
the chamber model's range. Summary ``plot``: ``temperatures_c``, ``states_s``,
``mean_conductance_s`` (per state, per temperature; S).

Units: C, S, S/K, s, V.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from nvmlab.characterization.states import DEFAULT_STATES_S, set_conductance
from nvmlab.characterization.sweep import (
    MAX_SAMPLE,
    ProfileUpdate,
    Sweep,
    SweepContext,
    SweepUnit,
    check_station_limits,
    choose_devices,
    register_sweep,
)
from nvmlab.errors import ConfigError
from nvmlab.instruments.arrays import ReadSettings
from nvmlab.steps import Param

if TYPE_CHECKING:
    from nvmlab.storage.inventory import RegisteredChip
    from nvmlab.storage.profile import ChipProfile

__all__ = ["chamber_range_c", "TemperatureSweep", "effective_age_s", "fit_temp_coeff"]


def chamber_range_c(model: str | None) -> tuple[float, float] | None:
    """The setpoint range (C) of a chamber model (``nvmlab.models``), None if unknown."""
    from nvmlab.models import MODELS

    found = MODELS.get(model or "")
    return found.setpoint_range_c if found is not None else None


#: Boltzmann constant (eV/K) and 0 C in K.
K_B_EV = 8.617333262e-5
ZERO_C_K = 273.15
#: The temperature the coefficient refers to (C).
REFERENCE_C = 25.0


def effective_age_s(
    times_s: np.ndarray, temps_c: np.ndarray, t_prog_s: float, activation_ev: float
) -> np.ndarray:
    """Effective age (s at 25 C) at each read time: the intervals since ``t_prog_s`` (s),
    each weighted with the Arrhenius factor at the temperature of the read ending it."""
    order = np.argsort(times_s)
    t = np.asarray(times_s, dtype=float)[order]
    temp = np.asarray(temps_c, dtype=float)[order]
    edges = np.concatenate([[t_prog_s], t])
    dt = np.maximum(np.diff(edges), 0.0)
    factor = np.exp(
        activation_ev / K_B_EV * (1.0 / (REFERENCE_C + ZERO_C_K) - 1.0 / (temp + ZERO_C_K))
    )
    age = np.cumsum(dt * factor)
    out = np.empty_like(age)
    out[order] = age
    return out


def fit_temp_coeff(
    g_s: np.ndarray, temps_c: np.ndarray, age_s: np.ndarray | None
) -> tuple[float, float, float]:
    """Least-squares ``G = G25 + k (T - 25) [+ D log10(1 + age / 1 s)]``; returns
    (k in S/K, G25 in S, D in S per decade; NaN without the drift term or data)."""
    ok = np.isfinite(g_s) & np.isfinite(temps_c)
    if age_s is not None:
        ok &= np.isfinite(age_s)
    if ok.sum() < 2 or np.ptp(temps_c[ok]) <= 0:
        return math.nan, math.nan, math.nan
    cols = [np.ones(int(ok.sum())), temps_c[ok] - REFERENCE_C]
    with_drift = age_s is not None and ok.sum() >= 4
    if with_drift:
        assert age_s is not None
        cols.append(np.log10(1.0 + np.maximum(age_s[ok], 0.0)))
    design = np.column_stack(cols)
    coef, *_ = np.linalg.lstsq(design, g_s[ok], rcond=None)
    return float(coef[1]), float(coef[0]), float(coef[2]) if with_drift else math.nan


@register_sweep
class TemperatureSweep(Sweep):
    kind = "temperature"
    summary = "temperature coefficient of each device's conductance (S/K)"
    description = __doc__ or ""
    array_kinds = ("memristor",)
    params = (
        Param("temperatures_c", list, [25.0, 40.0, 55.0, 70.0, 85.0, 100.0], unit="C",
              low=-100.0, high=300.0,
              help="chamber temperatures in order; the first is the programming and return one"),
        Param("states_s", list, list(DEFAULT_STATES_S), unit="S", low=2e-6, high=2e-4,
              help="states; device i of the sample is set to state i mod len"),
        Param("sample", int, 64, low=0, high=MAX_SAMPLE,
              help="devices measured, drawn at random (0: every functional device)"),
        Param("soak_s", float, 600.0, unit="s", low=0.0, high=86400.0,
              help="soak after the chamber air is stable (the chip lags the air)"),
        Param("tolerance_c", float, 0.3, unit="C", low=0.01, high=10.0,
              help="|PV - SP| band the chamber must hold before the soak"),
        Param("timeout_s", float, 7200.0, unit="s", low=60.0, high=86400.0,
              help="longest wait for the chamber to become stable"),
        Param("reads", int, 5, low=1, high=100, help="reads per device and temperature"),
        Param("read_spacing_s", float, 2.0, unit="s", low=0.0, high=3600.0,
              help="time between two reads of the same device"),
        Param("averages", int, 10, low=1, high=1000, help="readings averaged per read"),
        Param("nplc", float, 1.0, low=0.001, high=100.0, help="integration time per reading"),
        Param("read_v", float, 0.2, unit="V", low=0.01, high=1.0, help="read voltage"),
        Param("activation_ev", float, 1.0, unit="eV", low=0.0, high=5.0,
              help="activation energy of the relaxation drift (0: drift not modelled)"),
    )  # fmt: skip

    # -- checks ---------------------------------------------------------------------------
    def check(self, params: dict[str, Any], chip: RegisteredChip, station: Any) -> None:
        super().check(params, chip, station)
        limits = station.limits
        lo, hi = float(limits.min_temperature_c), float(limits.max_temperature_c)
        where = "the station's limits"
        model = _chamber_model(station)
        chamber_range = chamber_range_c(model)
        if chamber_range is not None:
            c_lo, c_hi = chamber_range
            for t in params["temperatures_c"]:
                if not c_lo <= t <= c_hi:
                    raise ConfigError(
                        f"value {t:g} C is not allowed; the {model} chamber's range is "
                        f"{c_lo:g} to {c_hi:g} C (allowed: {max(lo, c_lo):g} to "
                        f"{min(hi, c_hi):g} C on this station)",
                        field="temperatures_c",
                    )
        for t in params["temperatures_c"]:
            if not lo <= t <= hi:
                raise ConfigError(
                    f"value {t:g} C is not allowed; {where} allow {lo:g} to {hi:g} C",
                    field="temperatures_c",
                )
        temps = params["temperatures_c"]
        if len(set(temps)) < 2:
            raise ConfigError(
                f"value {temps!r} is not allowed; give at least two different temperatures",
                field="temperatures_c",
            )
        check_station_limits(params, limits, read_v="max_read_v")

    # -- plan -----------------------------------------------------------------------------
    def plan(
        self, params: dict[str, Any], chip: RegisteredChip, rng: np.random.Generator,
        profile: ChipProfile | None,
    ) -> list[SweepUnit]:  # fmt: skip
        devices = tuple(choose_devices(chip, params["sample"], rng, profile=profile))
        temps = [float(t) for t in params["temperatures_c"]]
        units = [SweepUnit("program", devices, {"temperature_c": temps[0]})]
        for i, t in enumerate(temps):
            units.append(SweepUnit(f"T{i}-{t:g}C", devices, {"temperature_c": t, "index": i}))
        units.append(SweepUnit("return", devices, {"temperature_c": temps[0], "index": len(temps)}))
        return units

    def estimate_s(self, params: dict[str, Any], chip: RegisteredChip | None) -> float | None:
        temps = [float(t) for t in params.get("temperatures_c", [25, 40, 55, 70, 85, 100])]
        n = params.get("sample", 64) or (chip.rows * chip.cols if chip else 4096)
        steps = [abs(b - a) for a, b in zip([temps[0], *temps], [*temps, temps[0]], strict=False)]
        ramp = sum(s / (3.0 / 60.0) + 300.0 for s in steps)  # 3 C/min + settling (assumed)
        soak = params.get("soak_s", 600.0) * (len(temps) + 2)
        reads = (
            (len(temps) + 1)
            * n
            * params.get("reads", 5)
            * params.get("averages", 10)
            * (params.get("nplc", 1.0) / 60.0)
        )
        return float(ramp + soak + reads + n * 5.0)

    # -- measurement ----------------------------------------------------------------------
    def _settle_chamber(self, ctx: SweepContext, celsius: float) -> float:
        p = ctx.params
        chamber = ctx.station.chamber
        chamber.set_setpoint(celsius)
        ctx.writer.add_chamber(setpoint_c=celsius, air_c=chamber.temperature())
        pv = chamber.wait_until_stable(
            tolerance_c=float(p["tolerance_c"]), soak_time_s=float(p["soak_s"]),
            timeout_s=float(p["timeout_s"]),
        )  # fmt: skip
        ctx.writer.add_chamber(setpoint_c=celsius, air_c=pv)
        return float(pv)

    def run_unit(self, ctx: SweepContext, unit: SweepUnit) -> None:
        p = ctx.params
        celsius = float(unit.info["temperature_c"])
        pv = self._settle_chamber(ctx, celsius)
        states = [float(s) for s in p["states_s"]]
        settings = ReadSettings(
            read_v=float(p["read_v"]), averages=int(p["averages"]), nplc=float(p["nplc"])
        )
        if unit.key == "program":
            for i, (r, c) in enumerate(unit.devices):
                ctx.check_stop()
                target = states[i % len(states)]
                res = set_conductance(ctx, r, c, target)
                ctx.parameter(r, c, "temp_state_s", target, "S")
                ctx.parameter(r, c, "temp_state_reached", float(res.reached))
                ctx.parameter(r, c, "temp_program_time_s", ctx.clock.now(), "s")
            return
        index = int(unit.info["index"])
        reads: dict[tuple[int, int], list[float]] = {d: [] for d in unit.devices}
        times: dict[tuple[int, int], list[float]] = {d: [] for d in unit.devices}
        for k in range(int(p["reads"])):
            start = ctx.clock.now()
            for r, c in unit.devices:
                ctx.check_stop()
                times[(r, c)].append(ctx.clock.now())
                read = ctx.read(r, c, settings, temperature_c=pv)
                reads[(r, c)].append(read.conductance_s)
            if k + 1 < int(p["reads"]):
                ctx.clock.sleep(float(p["read_spacing_s"]) - (ctx.clock.now() - start))
        after = ctx.station.chamber.temperature()
        ctx.writer.add_chamber(setpoint_c=celsius, air_c=after)
        temp = 0.5 * (pv + after)
        for r, c in unit.devices:
            ctx.parameter(r, c, f"temp_g_s@{index}", float(np.median(reads[(r, c)])), "S")
            ctx.parameter(r, c, f"temp_c@{index}", temp, "C")
            ctx.parameter(r, c, f"temp_time_s@{index}", float(np.mean(times[(r, c)])), "s")

    # -- result ---------------------------------------------------------------------------
    def finish(self, ctx: SweepContext) -> ProfileUpdate:
        p = ctx.params
        temps = [float(t) for t in p["temperatures_c"]]
        states = [float(s) for s in p["states_s"]]
        points = len(temps) + 1
        names = ["temp_state_s", "temp_program_time_s"]
        for i in range(points):
            names += [f"temp_g_s@{i}", f"temp_c@{i}", f"temp_time_s@{i}"]
        got = ctx.chain_parameters(names)
        rows, cols = ctx.chip.rows, ctx.chip.cols
        coeff = np.full((rows, cols), np.nan)
        measured = np.isfinite(got["temp_state_s"])
        ea = float(p["activation_ev"])
        drifts: list[float] = []
        for r, c in zip(*np.nonzero(measured), strict=True):
            g = np.array([got[f"temp_g_s@{i}"][r, c] for i in range(points)])
            tc = np.array([got[f"temp_c@{i}"][r, c] for i in range(points)])
            tt = np.array([got[f"temp_time_s@{i}"][r, c] for i in range(points)])
            age = (
                effective_age_s(tt, tc, float(got["temp_program_time_s"][r, c]), ea)
                if ea > 0
                else None
            )
            k, g25, drift = fit_temp_coeff(g, tc, age)
            coeff[r, c] = k
            drifts.append(drift / g25 if math.isfinite(drift) and g25 > 0 else math.nan)
        mean_g: list[list[float]] = []
        for s in states:
            at = measured & (got["temp_state_s"] == s)
            mean_g.append(
                [
                    float(np.nanmean(got[f"temp_g_s@{i}"][at])) if at.any() else math.nan
                    for i in range(len(temps))
                ]
            )
        back = got[f"temp_g_s@{len(temps)}"]
        first = got["temp_g_s@0"]
        summary = {
            "devices": int(measured.sum()),
            "temp_coeff_s_per_k_median": float(np.nanmedian(coeff)) if measured.any() else None,
            "temp_coeff_s_per_k_p10_p90": (
                [float(np.nanpercentile(coeff, 10)), float(np.nanpercentile(coeff, 90))]
                if measured.any()
                else None
            ),
            "drift_per_decade_rel_median": (
                float(np.nanmedian(drifts)) if np.isfinite(drifts).any() else None
            ),
            "return_change_rel_median": (
                float(np.nanmedian((back - first)[measured] / first[measured]))
                if measured.any()
                else None
            ),
            "plot": {
                "temperatures_c": temps,
                "states_s": states,
                "mean_conductance_s": mean_g,
            },
        }
        return ProfileUpdate(arrays={"temp_coeff_s_per_k": coeff}, summary=summary)


def _chamber_model(station: Any) -> str | None:
    """The station file's chamber driver name (``espec``, ``watlow_f4``), or None."""
    config = getattr(station, "config", None)
    instruments = getattr(config, "instruments", None) or {}
    chamber = instruments.get("chamber") if hasattr(instruments, "get") else None
    return getattr(chamber, "driver", None)
