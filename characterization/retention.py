"""The ``retention`` sweep: conductance drift versus log time, per state, and a bake.

**Drift at the measurement temperature** (one unit per device and state): the device is
set to each state (default 10, 30, 60 and 90 uS, :func:`~nvmlab.characterization.states.
set_conductance`, +-5 %) and read (0.2 V, ``averages`` readings at ``nplc``) at ``points``
log-spaced times from ``first_s`` to ``last_s`` after its last programming pulse; the
waits are the clock's (free on the emulated bench's virtual clock, real on a lab's).
The devices docs' relaxation is ``G(t) = G_p (1 + a s log10(1 + t_eff / tau))`` (a per
device, s = -1 after a set, +1 after a reset, tau = ``relax_time_s``, 1 s, the time
origin of the log), so the sweep fits the straight line ``G = alpha + beta x`` with
``x = log10(1 + AF t / tau)`` and stores ``d = beta / alpha``, the signed relative change
per decade of time (``drift_per_decade_rel_<state>``). ``AF`` is the Arrhenius factor of
the measurement temperature (the chamber's reading; 1 at 25 C) with ``activation_ev``
(1 eV, the model's assumption; an assumption of the analysis, not a measurement). At a
raised ``temperature_c`` the change is relative to the in-situ conductance, which holds
the temperature coefficient's additive shift too.

Profile array ``drift_per_decade_rel``: per device, the magnitude averaged over its
states (the relaxation per decade is one number per device in the model; the summary
keeps every state's value) with the sign of the last state's drift (the direction the
device drifts now, after its last pulse). A fit whose rms scatter about the line exceeds
4 x the run's median scatter is left out of that mean (``noisy_fits`` in the summary):
on a device with telegraph noise (0.5-2 % steps, 5 % of the devices) a read's mean
depends on the level's occupancy, 10-40 x the drift per decade; a device left with no
state is NaN (not measured) in the profile. The time origin is the end of the write-verify
(its last read follows the last pulse by one read, ~40 ms at the defaults); a device
already within the tolerance of a state is moved away and back, so that it has a last
pulse (without one its age, since delivery, is unknown).

**Bake** (``bake``, one unit for the whole sample, needs a chamber): at the ambient
(``temperature_c``, default 25 C) each device is set to ``bake_state_s``, read after
``reference_s``, then baked at ``bake_c`` (85 C) for log-spaced cumulative dwells up to
``bake_last_s`` (each after the chamber is stable and soaked there, the soak adding to
it); after each dwell the chamber returns to the ambient and the devices are
read there (no in-situ temperature shift in the comparison). The sweep polls the
chamber's air temperature through every ramp, dwell and soak and integrates the
Arrhenius factor over that log: each read's effective age ``t_eff`` at 25 C. Under the
model the bake's change continues the 25 C log-time line at ``t_eff``: the summary's
``bake`` block gives, per bake read, the measured mean change since the reference, the
change predicted from each device's 25 C drift with the Arrhenius ``t_eff``, and the
change predicted without acceleration (bench time), so the acceleration is shown
measured against both. The chip follows the air with its own lag (minutes); up- and
down-ramps shift it alike, so their errors largely cancel in ``t_eff``. The lag matters
for the reads, though: after a ramp the chip is still a fraction of a degree off for
several of its time constants, and ``k_T`` times that (0.1 % of 30 uS per 0.3 C) is the
size of the drift itself, so every arrival is followed by ``soak_s`` (30 min) after the
air is stable.

Every read is stored (with the chamber temperature) and each device's series as a trace
(``retention``: time since programming (s) vs conductance (S); ``retention-bake``:
effective age (s) vs conductance). With a chamber, the sweep first brings it to
``temperature_c`` (default 25 C) and leaves it there; without one it measures at the
lab's ambient, taken as 25 C (other temperatures are refused).

Units: S, s, C, eV.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from nvmlab.characterization.states import DEFAULT_STATES_S, StateResult, set_conductance
from nvmlab.characterization.sweep import (
    ProfileUpdate,
    Sweep,
    SweepContext,
    SweepUnit,
    choose_devices,
    register_sweep,
)
from nvmlab.errors import ConfigError, InstrumentTimeout
from nvmlab.instruments.arrays import ReadSettings
from nvmlab.steps import Param

if TYPE_CHECKING:
    from nvmlab.storage.inventory import RegisteredChip
    from nvmlab.storage.profile import ChipProfile

__all__ = ["RetentionSweep", "arrhenius_factor", "effective_age_s", "fit_drift"]

#: Boltzmann constant (eV/K).
K_B_EV = 8.617333262e-5
#: Reference temperature of the effective age (C).
REFERENCE_C = 25.0
#: A fit whose rms scatter exceeds this many times the run's median is left out.
NOISY_RESIDUAL_FACTOR = 4.0
#: Chamber polling while ramping and soaking (s), and during a long dwell (s).
POLL_S = 10.0
DWELL_POLL_S = 60.0
#: Chamber stability: |PV - SP| within this (C) for this many polls (then ``soak_s``).
STABLE_TOL_C = 0.3
STABLE_POLLS = 5
#: Longest wait for the chamber to reach a setpoint (s).
RAMP_TIMEOUT_S = 4 * 3600.0


def arrhenius_factor(temperature_c: float | np.ndarray, activation_ev: float) -> Any:
    """How much faster a process with activation energy ``activation_ev`` (eV) runs at
    ``temperature_c`` (C) than at 25 C."""
    t_k = np.asarray(temperature_c, dtype=float) + 273.15
    return np.exp(activation_ev / K_B_EV * (1.0 / (REFERENCE_C + 273.15) - 1.0 / t_k))


def effective_age_s(
    log_t: np.ndarray, log_c: np.ndarray, start_s: float, end_s: float, activation_ev: float
) -> float:
    """Age (s at 25 C) accumulated from ``start_s`` to ``end_s`` (clock times) under the
    temperature log (``log_t`` s, ``log_c`` C; linear between samples, constant beyond):
    the integral of the Arrhenius factor (trapezoid)."""
    if end_s <= start_s:
        return 0.0
    inside = (log_t > start_s) & (log_t < end_s)
    t = np.concatenate([[start_s], log_t[inside], [end_s]])
    c = np.interp(t, log_t, log_c)
    f = arrhenius_factor(c, activation_ev)
    return float(np.sum(0.5 * (f[1:] + f[:-1]) * np.diff(t)))


def fit_drift(x: np.ndarray, g: np.ndarray) -> tuple[float, float, float]:
    """Fit ``G = alpha (1 + d x)``: returns (d, alpha in S, rms residual / alpha); NaN
    with < 3 points."""
    ok = np.isfinite(x) & np.isfinite(g)
    if ok.sum() < 3 or np.ptp(x[ok]) <= 0:
        return math.nan, math.nan, math.nan
    design = np.column_stack([np.ones(int(ok.sum())), x[ok]])
    (alpha, beta), *_ = np.linalg.lstsq(design, g[ok], rcond=None)
    if not alpha > 0:
        return math.nan, math.nan, math.nan
    residual = g[ok] - design @ np.array([alpha, beta])
    return float(beta / alpha), float(alpha), float(np.sqrt(np.mean(residual**2)) / alpha)


def _state_name(state_s: float) -> str:
    return f"drift_per_decade_rel_{state_s * 1e6:g}uS"


def _residual_name(state_s: float) -> str:
    return f"retention_residual_rel_{state_s * 1e6:g}uS"


def _series_name(state_s: float, k: int, what: str) -> str:
    """Per-device parameter of read ``k`` of a state: ``g`` (S) or ``t`` (s since the
    programming)."""
    return f"retention_{what}_{state_s * 1e6:g}uS_{k:03d}"


def _bake_name(k: int, what: str) -> str:
    """Per-device parameter of bake read ``k`` (0: the reference): ``g`` (S), ``teff``
    (effective age, s at 25 C) or ``bench`` (clock time since programming, s)."""
    return f"retention_bake_{what}_{k:03d}"


@register_sweep
class RetentionSweep(Sweep):
    kind = "retention"
    summary = "retention: drift per decade of time per state (log-spaced reads), bake"
    description = __doc__ or ""
    params = (
        Param("sample", int, 8, low=0, high=1 << 24, help="devices measured (0: every device)"),
        Param("states_s", list, list(DEFAULT_STATES_S), unit="S", low=1e-7, high=1e-3,
              help="conductances the drift is measured at"),
        Param("first_s", float, 1.0, unit="s", low=0.05, high=1e7,
              help="first read after programming"),
        Param("last_s", float, 3600.0, unit="s", low=1.0, high=1e9,
              help="last read after programming"),
        Param("points", int, 10, low=3, high=200, help="log-spaced reads per device and state"),
        Param("averages", int, 100, low=1, high=1000, help="readings per read"),
        Param("nplc", float, 1.0, low=0.01, high=100.0, help="integration per reading (PLC)"),
        Param("temperature_c", float, 25.0, unit="C", low=-60.0, high=300.0,
              help="measurement temperature (set on the chamber; without one only 25 C)"),
        Param("activation_ev", float, 1.0, unit="eV", low=0.0, high=3.0,
              help="Arrhenius activation energy assumed for the effective age"),
        Param("relax_time_s", float, 1.0, unit="s", low=1e-6, high=1e6,
              help="time origin of the log-time fit"),
        Param("soak_s", float, 1800.0, unit="s", low=0.0, high=1e6,
              help="wait after the chamber air is stable (the chip lags the air)"),
        Param("bake", bool, False, help="add the bake unit (needs a chamber)"),
        Param("bake_c", float, 85.0, unit="C", low=-60.0, high=300.0,
              help="bake temperature"),
        Param("bake_state_s", float, 50e-6, unit="S", low=1e-7, high=1e-3,
              help="state the bake devices are set to"),
        Param("reference_s", float, 100.0, unit="s", low=1.0, high=1e6,
              help="reference read after programming, before the bake"),
        Param("bake_first_s", float, 900.0, unit="s", low=1.0, high=1e8,
              help="first cumulative dwell at the bake temperature"),
        Param("bake_last_s", float, 4 * 3600.0, unit="s", low=1.0, high=1e9,
              help="last cumulative dwell at the bake temperature"),
        Param("bake_points", int, 4, low=1, high=50, help="bake dwells (reads at the ambient)"),
    )  # fmt: skip

    # -- checks and plan -------------------------------------------------------------------
    def check(self, params: dict[str, Any], chip: RegisteredChip, station: Any) -> None:
        super().check(params, chip, station)
        if params["last_s"] <= params["first_s"]:
            raise ConfigError(
                f"value {params['last_s']:g} s is not allowed; allowed: more than first_s "
                f"({params['first_s']:g} s)",
                field="last_s",
            )
        if not params["states_s"]:
            raise ConfigError(
                "value [] is not allowed; allowed: at least one state", field="states_s"
            )
        limits = station.limits
        for name in ("temperature_c", "bake_c"):
            value = params[name]
            if (name == "temperature_c" or params["bake"]) and not (
                limits.min_temperature_c <= value <= limits.max_temperature_c
            ):
                raise ConfigError(
                    f"value {value:g} C is not allowed; allowed: the station's range "
                    f"{limits.min_temperature_c:g} to {limits.max_temperature_c:g} C",
                    field=name,
                )
        if not self._has_chamber(station):
            if params["bake"]:
                raise ConfigError("value true needs a chamber; this station has none", field="bake")
            if params["temperature_c"] != REFERENCE_C:
                raise ConfigError(
                    f"value {params['temperature_c']:g} C needs a chamber; this station has "
                    f"none; allowed without one: {REFERENCE_C:g} C (the lab's ambient)",
                    field="temperature_c",
                )
        if params["bake"] and params["bake_last_s"] < params["bake_first_s"]:
            raise ConfigError(
                f"value {params['bake_last_s']:g} s is not allowed; allowed: at least "
                f"bake_first_s ({params['bake_first_s']:g} s)",
                field="bake_last_s",
            )

    def plan(
        self, params: dict[str, Any], chip: RegisteredChip, rng: np.random.Generator,
        profile: ChipProfile | None,
    ) -> list[SweepUnit]:  # fmt: skip
        devices = choose_devices(chip, params["sample"], rng, profile=profile)
        units = [
            SweepUnit(f"device-{r}-{c}-state-{i}", ((r, c),), {"state": i})
            for r, c in devices
            for i in range(len(params["states_s"]))
        ]
        if params["bake"]:
            units.append(SweepUnit("bake", tuple(devices), {"bake": True}))
        return units

    def estimate_s(self, params: dict[str, Any], chip: RegisteredChip | None) -> float | None:
        n = params.get("sample") or (chip.rows * chip.cols if chip else 8)
        states = len(params.get("states_s") or DEFAULT_STATES_S)
        total = n * states * (params.get("last_s", 3600.0) + 10.0)
        if params.get("bake"):
            total += params.get("bake_last_s", 14400.0) + params.get("bake_points", 4) * 3 * 3600
        return float(total)

    # -- instruments -----------------------------------------------------------------------
    @staticmethod
    def _has_chamber(station: Any) -> bool:
        config = getattr(station, "config", None)
        return config is None or "chamber" in config.instruments

    def _chamber(self, ctx: SweepContext) -> Any:
        return ctx.station.chamber if self._has_chamber(ctx.station) else None

    def _ambient_c(self, ctx: SweepContext) -> float:
        return float(ctx.params["temperature_c"])

    def _temperature(self, ctx: SweepContext) -> float:
        chamber = self._chamber(ctx)
        return REFERENCE_C if chamber is None else float(chamber.temperature())

    def prepare(self, ctx: SweepContext) -> None:
        chamber = self._chamber(ctx)
        p = ctx.params
        if chamber is None:
            return  # check() refused anything but the 25 C ambient
        if (
            abs(float(chamber.setpoint()) - p["temperature_c"]) > 1e-9
            or abs(float(chamber.temperature()) - p["temperature_c"]) > STABLE_TOL_C
        ):
            self._go_to(ctx, float(p["temperature_c"]), [])

    def _go_to(self, ctx: SweepContext, celsius: float, log: list[tuple[float, float]]) -> None:
        """Chamber to ``celsius``, polled (and logged) until stable, then soaked."""
        chamber = self._chamber(ctx)
        chamber.set_setpoint(celsius)
        stable, waited = 0, 0.0
        while stable < STABLE_POLLS:
            ctx.check_stop()
            if waited > RAMP_TIMEOUT_S:
                raise InstrumentTimeout(
                    f"the chamber did not reach {celsius:g} C within {RAMP_TIMEOUT_S:g} s "
                    f"(last reading {log[-1][1] if log else float('nan'):g} C)",
                    instrument="chamber",
                )
            ctx.clock.sleep(POLL_S)
            waited += POLL_S
            now_c = float(chamber.temperature())
            log.append((ctx.clock.now(), now_c))
            ctx.writer.add_chamber(setpoint_c=celsius, air_c=now_c)
            stable = stable + 1 if abs(now_c - celsius) <= STABLE_TOL_C else 0
        self._hold(ctx, float(ctx.params["soak_s"]), log, POLL_S)

    def _hold(
        self, ctx: SweepContext, seconds: float, log: list[tuple[float, float]], poll_s: float
    ) -> None:
        end = ctx.clock.now() + seconds
        chamber = self._chamber(ctx)
        setpoint = float(chamber.setpoint())
        while (left := end - ctx.clock.now()) > 0:
            ctx.clock.sleep(min(poll_s, left))
            now_c = float(chamber.temperature())
            log.append((ctx.clock.now(), now_c))
            ctx.writer.add_chamber(setpoint_c=setpoint, air_c=now_c)

    def _settings(self, ctx: SweepContext) -> ReadSettings:
        return ReadSettings(read_v=0.2, averages=ctx.params["averages"], nplc=ctx.params["nplc"])

    def _timed_read(
        self, ctx: SweepContext, row: int, col: int, temp_c: float
    ) -> tuple[float, float]:
        """(clock time at the read's middle, conductance in S)."""
        start = ctx.clock.now()
        g = ctx.read(row, col, self._settings(ctx), temperature_c=temp_c).conductance_s
        return 0.5 * (start + ctx.clock.now()), g

    @staticmethod
    def _program(ctx: SweepContext, row: int, col: int, target_s: float) -> StateResult:
        """Set the device to ``target_s`` with at least one pulse: the relaxation's time
        origin is the last pulse, so a device already within the tolerance (no pulse) is
        first moved 30 % down and brought back."""
        result = set_conductance(ctx, row, col, target_s)
        if result.pulses == 0:
            set_conductance(ctx, row, col, 0.7 * target_s)
            result = set_conductance(ctx, row, col, target_s)
        return result

    # -- units -----------------------------------------------------------------------------
    def run_unit(self, ctx: SweepContext, unit: SweepUnit) -> None:
        if unit.info.get("bake"):
            self._bake(ctx, unit)
            return
        p = ctx.params
        (row, col) = unit.devices[0]
        state = float(p["states_s"][int(unit.info["state"])])
        temp_c = self._temperature(ctx)
        factor = float(arrhenius_factor(temp_c, p["activation_ev"]))
        result = self._program(ctx, row, col, state)
        t_prog = ctx.clock.now()
        times = np.geomspace(p["first_s"], p["last_s"], p["points"])
        t_mid, g, x = np.empty(times.size), np.empty(times.size), np.empty(times.size)
        for k, t in enumerate(times):
            ctx.check_stop()
            wait = t_prog + t - ctx.clock.now()
            if wait > 0:
                ctx.clock.sleep(wait)
            start = ctx.clock.now() - t_prog
            mid, g[k] = self._timed_read(ctx, row, col, temp_c)
            t_mid[k] = mid - t_prog
            # the read averages the device over its integration: x averaged the same way
            # (log time is concave: the early reads, ~1.7 s long at 1 s, would bias it)
            span = start + (2.0 * (t_mid[k] - start)) * np.linspace(0.0, 1.0, 33)
            x[k] = float(np.mean(np.log10(1.0 + factor * span / p["relax_time_s"])))
        d, alpha, residual = fit_drift(x, g)
        ctx.writer.add_trace(
            row, col, "retention", t_mid, g, x_name="time_s", y_name="conductance_s",
            temperature_c=temp_c,
            meta={"state_s": state, "planned_s": times.tolist(), "reached": result.reached,
                  "acceleration_factor": factor, "drift_per_decade_rel": d},
        )  # fmt: skip
        ctx.parameter(row, col, _state_name(state), d)
        ctx.parameter(row, col, _residual_name(state), residual)
        for k in range(times.size):
            ctx.parameter(row, col, _series_name(state, k, "g"), g[k], "S")
            ctx.parameter(row, col, _series_name(state, k, "t"), t_mid[k], "s")

    def _bake(self, ctx: SweepContext, unit: SweepUnit) -> None:
        p = ctx.params
        ambient = self._ambient_c(ctx)
        log: list[tuple[float, float]] = []
        self._go_to(ctx, ambient, log)
        target = float(p["bake_state_s"])
        t_prog: dict[tuple[int, int], float] = {}
        for row, col in unit.devices:
            ctx.check_stop()
            self._program(ctx, row, col, target)
            t_prog[(row, col)] = ctx.clock.now()
            log.append((ctx.clock.now(), self._temperature(ctx)))
        self._hold(ctx, p["reference_s"], log, DWELL_POLL_S)
        reads: dict[tuple[int, int], list[tuple[float, float]]] = {d: [] for d in unit.devices}

        def read_all() -> None:
            temp_c = self._temperature(ctx)
            log.append((ctx.clock.now(), temp_c))
            for row, col in unit.devices:
                reads[(row, col)].append(self._timed_read(ctx, row, col, temp_c))

        read_all()
        dwells = np.geomspace(p["bake_first_s"], p["bake_last_s"], p["bake_points"])
        done = 0.0
        for cumulative in dwells:
            ctx.check_stop()
            self._go_to(ctx, float(p["bake_c"]), log)
            self._hold(ctx, float(cumulative - done), log, DWELL_POLL_S)
            done = float(cumulative)
            self._go_to(ctx, ambient, log)
            read_all()
        log_t = np.array([t for t, _ in log])
        log_c = np.array([c for _, c in log])
        order = np.argsort(log_t, kind="stable")
        log_t, log_c = log_t[order], log_c[order]
        for (row, col), series in reads.items():
            mids = np.array([m for m, _ in series])
            g = np.array([v for _, v in series])
            t0 = t_prog[(row, col)]
            t_eff = np.array(
                [effective_age_s(log_t, log_c, t0, m, p["activation_ev"]) for m in mids]
            )
            ctx.writer.add_trace(
                row, col, "retention-bake", t_eff, g, x_name="effective_age_s",
                y_name="conductance_s", temperature_c=ambient,
                meta={"bench_s": (mids - t0).tolist(), "bake_c": p["bake_c"],
                      "state_s": target, "dwell_s": dwells.tolist()},
            )  # fmt: skip
            for k in range(g.size):
                ctx.parameter(row, col, _bake_name(k, "g"), g[k], "S")
                ctx.parameter(row, col, _bake_name(k, "teff"), t_eff[k], "s")
                ctx.parameter(row, col, _bake_name(k, "bench"), mids[k] - t0, "s")

    # -- the chip --------------------------------------------------------------------------
    def finish(self, ctx: SweepContext) -> ProfileUpdate:
        p = ctx.params
        states = [float(s) for s in p["states_s"]]
        names = [_state_name(s) for s in states]
        times = np.geomspace(p["first_s"], p["last_s"], p["points"])
        series = [_series_name(s, k, "g") for s in states for k in range(times.size)]
        residuals = [_residual_name(s) for s in states]
        arrays = ctx.chain_parameters(names + residuals + series)
        stack = np.stack([arrays[n] for n in names])
        scatter = np.stack([arrays[n] for n in residuals])
        # A fit whose scatter about the log-time line is far above the chip's typical one
        # is not a drift measurement (telegraph noise: 0.5-2 % steps against a drift of
        # ~0.05 %/decade): left out, and the device NaN if no state is left.
        typical = float(np.nanmedian(scatter)) if np.isfinite(scatter).any() else math.nan
        noisy = scatter > NOISY_RESIDUAL_FACTOR * typical
        kept = np.where(noisy, np.nan, stack)
        with warnings.catch_warnings():  # devices never measured: NaN, no warning
            warnings.simplefilter("ignore", RuntimeWarning)
            magnitude = np.nanmean(np.abs(kept), axis=0)
        last = stack[-1]
        drift = np.where(
            np.isfinite(last) & np.isfinite(magnitude), np.sign(last) * magnitude, np.nan
        )
        measured_any = np.isfinite(stack).any(axis=0)
        mean_change: list[list[float | None]] = []
        per_state: dict[str, Any] = {}
        for i, s in enumerate(states):
            g = np.stack([arrays[_series_name(s, k, "g")] for k in range(times.size)])
            ok = np.all(np.isfinite(g), axis=0) & ~noisy[i]
            rel = g[:, ok] / g[0, ok] - 1.0
            mean_change.append(
                [float(v) for v in rel.mean(axis=1)] if ok.any() else [None] * times.size
            )
            values = kept[i][np.isfinite(kept[i])]
            per_state[f"{s * 1e6:g}uS"] = {
                "median": float(np.median(values)) if values.size else None,
                "mean": float(np.mean(values)) if values.size else None,
                "mean_abs": float(np.mean(np.abs(values))) if values.size else None,
                "n": int(values.size),
            }
        temp_c = self._temperature(ctx)
        finite = np.isfinite(drift)
        summary: dict[str, Any] = {
            "typical_residual_rel": typical,
            "noisy_fits": int(noisy.sum()),
            "devices_left_out_noisy": int((measured_any & ~np.isfinite(drift)).sum()),
            "plot": {"time_s": times.tolist(), "states_s": states,
                     "mean_relative_change": mean_change},
            "drift_per_decade_rel": per_state,
            "devices": int(finite.sum()),
            "mean_abs_drift_per_decade_rel": float(np.mean(np.abs(drift[finite])))
            if finite.any() else None,
            "temperature_c": temp_c,
            "acceleration_factor": float(arrhenius_factor(temp_c, p["activation_ev"])),
            "activation_ev_assumed": p["activation_ev"],
            "definition": "d of G = G_p (1 + d log10(1 + AF t / relax_time_s)), fitted per "
            "device and state; profile: mean |d| over states with the last state's sign",
        }  # fmt: skip
        if p["bake"]:
            summary["bake"] = self._bake_summary(ctx, magnitude)
        return ProfileUpdate(arrays={"drift_per_decade_rel": drift}, summary=summary)

    def _bake_summary(self, ctx: SweepContext, magnitude: np.ndarray) -> dict[str, Any]:
        """The bake's measured change against the Arrhenius and no-acceleration
        predictions (module docstring)."""
        p = ctx.params
        tau = p["relax_time_s"]
        n = int(p["bake_points"]) + 1
        names = [_bake_name(k, w) for k in range(n) for w in ("g", "teff", "bench")]
        arrays = ctx.chain_parameters(names)
        g = np.stack([arrays[_bake_name(k, "g")] for k in range(n)])
        teff = np.stack([arrays[_bake_name(k, "teff")] for k in range(n)])
        bench = np.stack([arrays[_bake_name(k, "bench")] for k in range(n)])
        ok = np.all(np.isfinite(g), axis=0) & (g[0] > 0)
        change = g[1:, ok] / g[0, ok] - 1.0
        sign = np.sign(change[-1])  # the drift's own direction
        d = magnitude[ok]
        x_arr = np.log10(1 + teff[:, ok] / tau)
        x_bench = np.log10(1 + bench[:, ok] / tau)
        arrhenius = d * (x_arr[1:] - x_arr[0])
        no_accel = d * (x_bench[1:] - x_bench[0])
        has_d = np.isfinite(d)

        def mean(a: np.ndarray, cols: np.ndarray | None = None) -> list[float]:
            a = a if cols is None else a[:, cols]
            return [float(v) for v in a.mean(axis=1)] if a.size else []

        return {
            "bake_c": p["bake_c"],
            "state_s": p["bake_state_s"],
            "devices": int(ok.sum()),
            "effective_age_s": [float(v) for v in np.median(teff[1:, ok], axis=1)],
            "bench_time_s": [float(v) for v in np.median(bench[1:, ok], axis=1)],
            "reference_effective_age_s": float(np.median(teff[0, ok])) if ok.any() else None,
            "mean_change_rel": mean(sign * change),
            "mean_change_rel_with_drift": mean(sign * change, has_d),
            "predicted_arrhenius_rel": mean(arrhenius, has_d),
            "predicted_no_acceleration_rel": mean(no_accel, has_d),
            "note": "changes since the reference read (ambient), in each device's drift "
            "direction (sign of its last change); predictions from each device's |d| of the "
            "units at the measurement temperature (mean_change_rel_with_drift: the same "
            "devices)",
        }
