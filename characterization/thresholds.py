"""Switching thresholds: set and reset, per device and as distributions (sweep ``thresholds``).

Definition (``docs/devices.md``, *Definitions*): the switching threshold of a memristor is
the amplitude of a single write pulse (default 1 ms, the full voltage of the write scheme
on the device) that changes its conductance by a set fraction (default 2 %: set +2 %,
reset -2 %), median over cycles.

How it is measured, device by device (one resumable unit per device):

1. Read the device (averaged reads at the read voltage). A device below 8 uS, where a
   read's relative noise is several times larger, is first raised to 12 uS by a gentle
   set ramp (amplitude held while a pulse changes it by 5 % or more: no overshoot).
2. Two ramps of single pulses of rising amplitude, set and reset, alternated so the
   device stays inside the window. Set slows near the top of the window and reset near
   the bottom (state saturation), so the first ramp goes away from the nearer edge: set
   first below 40 uS, reset first above. If the first ramp left the device near the edge
   the second would saturate at (below 6 uS before a reset ramp, above 80 uS before a
   set ramp), pulses of the first polarity at its just-measured threshold + 80 mV move
   it past 10 uS (or below 60 uS) first. Each pulse is followed by an averaged read; the change of a
   pulse is measured as ``ln(G_after / G_before)`` (sign of the polarity), so the small
   changes that pulses below the threshold accumulate do not matter. A ramp starts at
   ``start_v`` in coarse steps (``coarse_step_v``); once a pulse changes the device by a
   quarter of the change fraction it steps back one coarse step and continues in fine
   steps (``step_v``). It stops when three consecutive pulses exceeded the change
   fraction, or one exceeded four times it, or the amplitude reached ``max_v`` (capped at the station's
   write limit; the threshold is then "not crossed").
3. The threshold from the ramp: above the onset the change of a pulse grows exponentially
   with the amplitude (``docs/devices.md``, *Switching*: ``exp((|V| - Vth) / v0)``) with a
   lognormal cycle-to-cycle spread, so a single pulse crossing the change fraction is
   noisy (a 30 % spread is about 13 mV at v0 = 50 mV). The sweep fits ``ln(change)`` against
   the amplitude (least squares over the switching tail: the last run of fine-step pulses
   whose change exceeds half the change fraction, so an isolated earlier jump - a
   telegraph step, read noise - is left out) and returns the amplitude where the fit reaches the change fraction:
   the median over cycles. The fit's slope gives the device's ``v0`` (V per e-fold of
   the change). With too few points, or a fit outside the ramp, it falls back to the
   log-linear interpolation between the last pulse below and the first above the change
   fraction.

Devices classified stuck in the chip's profile (defect class 1 or 2) are skipped; a
device that never changes by the fraction up to ``max_v`` gets no threshold (NaN, counted
as ``not_crossed`` in the summary: a stuck device not yet classified, or a threshold above
``max_v``), and so does a device whose reads stay noisier than a fifth of the change
fraction with 32 readings (a stuck-off device below 1 uS: its read noise alone would cross
the change fraction); the stored parameter's text says which.

Half-select safety: with the default V/3 scheme the half-selected and unselected devices
see a third of the amplitude, and every ramp stops a few tens of mV above its own device's
threshold, so no neighbour sees more than a third of (its neighbour's threshold + ~0.1 V).

Profile arrays: ``set_threshold_v`` (positive), ``reset_threshold_v`` (negative). Per-device
parameters stored with the run: those two, ``set_slope_v`` / ``reset_slope_v`` (fitted v0),
``set_crossing_v`` / ``reset_crossing_v`` (amplitude of the first single pulse past the
change fraction, for comparison). Summary: per polarity the distribution (count, mean,
std, CV, min, max, percentiles, histogram), the median fitted slope and the counts of
devices not crossed or skipped.

Units: V, S, s.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

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
from nvmlab.instruments.arrays import MAX_AVERAGES, DeviceRead, ReadSettings
from nvmlab.steps import Param

if TYPE_CHECKING:
    from nvmlab.storage.inventory import RegisteredChip
    from nvmlab.storage.profile import ChipProfile

__all__ = ["RampResult", "ThresholdSweep", "distribution", "estimate_threshold"]

#: A device read below RAISE_BELOW_S (S) is first raised to RAISE_GOAL_S by a gentle set
#: ramp (amplitude held while a pulse changes it by RAISE_HOLD_REL or more).
RAISE_BELOW_S = 8e-6
RAISE_GOAL_S = 12e-6
RAISE_HOLD_REL = 0.05
RAISE_MAX_PULSES = 150
RAISE_TOP_PULSES = 5
#: Set first below this conductance (S), reset first above it.
SET_FIRST_BELOW_S = 40e-6
#: Before the second ramp a device still below EDGE_S[0] (reset would saturate near g_min)
#: or above EDGE_S[1] (set would saturate near g_max) is moved past TOP_UP_GOAL_S (S).
EDGE_S = (6e-6, 80e-6)
TOP_UP_GOAL_S = (10e-6, 60e-6)
TOP_UP_OVERDRIVE_V = 0.08
TOP_UP_MAX_PULSES = 40
#: A set ramp stops above RAMP_GUARD_S[1], a reset ramp below RAMP_GUARD_S[0] (S).
RAMP_GUARD_S = (1.5e-6, 250e-6)
#: A coarse ramp switches to fine steps at this fraction of the change fraction.
DETECT_FRACTION = 0.25
#: Fine steps return to coarse steps after FINE_SPAN_V (V) in which the last
#: FINE_QUIET_PULSES pulses all changed the device by less than the detection level.
FINE_SPAN_V = 0.15
FINE_QUIET_PULSES = 6
#: Consecutive pulses past the change fraction that end a ramp, and a single change (x the
#: change fraction) that ends it at once.
STOP_AFTER = 3
STOP_MULTIPLE = 4.0
#: Pulses fitted: change above this fraction of the change fraction.
FIT_FROM_FRACTION = 0.5
#: Standard error of a read wanted, x the change fraction (adaptive averaging), and the
#: most readings a read then takes.
NOISE_PER_TARGET = 1 / 12
#: A device whose reads stay noisier than this x the change fraction even so is not
#: measured (a stuck-off device: read noise alone would cross the change fraction).
MAX_NOISE_PER_TARGET = 1 / 5
MAX_DEVICE_AVERAGES = 32
#: A ramp counts as crossed only if the device moved by at least this x the change
#: fraction in the ramp's direction from its start to its end (a stuck device's read noise
#: or a telegraph step can cross the change fraction once or twice, not accumulate).
CUMULATIVE_MULTIPLE = 2.0
#: Devices measured by default (every device of a smaller chip).
DEFAULT_SAMPLE = 256
PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
HISTOGRAM_BINS = 20


class RampResult:
    """One ramp: amplitudes (V, magnitudes), log changes (>0 in the ramp's direction),
    whether each pulse was a fine step, and why the ramp stopped."""

    def __init__(self) -> None:
        self.amplitudes_v: list[float] = []
        self.changes: list[float] = []
        self.fine: list[bool] = []
        self.stopped: str = ""


def estimate_threshold(
    amplitudes_v: np.ndarray | list[float],
    changes: np.ndarray | list[float],
    target: float,
    *,
    fine: np.ndarray | list[bool] | None = None,
) -> tuple[float, float, float]:
    """(threshold V, fitted slope v0 V, first crossing V) from a ramp.

    ``changes`` are log changes in the ramp's direction (``ln(G1/G0)`` for set,
    ``ln(G0/G1)`` for reset), ``target`` the log change of the definition (``ln 1.02``
    for set, ``-ln 0.98`` for reset). See the module docstring for the method. NaN where
    the ramp never crossed ``target``.
    """
    amps = np.asarray(amplitudes_v, dtype=float)
    ch = np.nan_to_num(np.asarray(changes, dtype=float), nan=-np.inf)
    use = np.ones(amps.size, bool) if fine is None else np.asarray(fine, dtype=bool)
    if amps.size == 0 or not np.any(ch >= target):
        return math.nan, math.nan, math.nan
    # The switching tail: the last run of pulses above the target, and the last run of
    # pulses above FIT_FROM_FRACTION x the target that holds it. An earlier isolated jump
    # (a telegraph step, read noise) is not part of it.
    end = int(np.flatnonzero(ch >= target)[-1])
    first = end
    while first > 0 and ch[first - 1] >= target:
        first -= 1
    start = first
    while start > 0 and ch[start - 1] >= FIT_FROM_FRACTION * target and use[start - 1]:
        start -= 1
    crossing = float(amps[first])
    interp = crossing
    j = first - 1
    if j >= 0 and ch[j] > 0:
        lo, hi = math.log(ch[j]), math.log(ch[first])
        if hi > lo and amps[first] > amps[j]:
            interp = float(amps[j] + (math.log(target) - lo) / (hi - lo) * (amps[first] - amps[j]))
    sel = np.arange(start, amps.size)
    pts = sel[use[sel] & (ch[sel] >= FIT_FROM_FRACTION * target)]
    if pts.size >= 3 and np.unique(amps[pts]).size >= 2:
        x, y = amps[pts], np.log(ch[pts])
        b, a = np.polyfit(x, y, 1)
        if b > 0:
            vth = (math.log(target) - a) / b
            slope = 1.0 / b
            ux = np.unique(x)
            step = float(np.median(np.diff(ux))) if ux.size > 1 else 0.0
            inside = x.min() - 2 * step <= vth <= x.max() + 2 * step
            if inside and 0.002 <= slope <= 0.5:
                return float(vth), float(slope), crossing
    return interp, math.nan, crossing


def distribution(values: np.ndarray) -> dict[str, Any]:
    """Count, mean, std, CV, min, max, percentiles and histogram of the finite ``values``."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"count": 0}
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    counts, edges = np.histogram(v, bins=HISTOGRAM_BINS)
    return {
        "count": int(v.size),
        "mean": mean,
        "std": std,
        "cv": abs(std / mean) if mean else math.nan,
        "min": float(v.min()),
        "max": float(v.max()),
        "percentiles": {str(p): float(np.percentile(v, p)) for p in PERCENTILES},
        "histogram": {"counts": counts.tolist(), "edges_v": edges.tolist()},
    }


@register_sweep
class ThresholdSweep(Sweep):
    kind = "thresholds"
    summary = "set and reset switching thresholds (1 ms pulse, 2 % change), per device"
    description = __doc__ or ""
    params = (
        Param("sample", int, DEFAULT_SAMPLE, low=0, high=MAX_SAMPLE,
              help="devices measured, drawn at random (0 or, by default, a chip of at most "
                   "256 devices: every device)"),
        Param("start_v", float, 0.3, "V", low=0.05, high=10.0,
              help="first amplitude of each ramp"),
        Param("step_v", float, 0.01, "V", low=0.001, high=0.2,
              help="fine amplitude step near the threshold"),
        Param("coarse_step_v", float, 0.05, "V", low=0.001, high=0.5,
              help="amplitude step until the device starts to change"),
        Param("max_v", float, 2.5, "V", low=0.1, high=10.0,
              help="largest amplitude (capped at the station's write limit)"),
        Param("change_fraction", float, 0.02, low=0.001, high=0.5,
              help="conductance change that defines the threshold"),
        Param("width_s", float, 1e-3, "s", low=1e-7, high=1.0, help="pulse width"),
        Param("scheme", str, "v/3", choices=("v/3", "v/2"), help="half-select scheme"),
        Param("averages", int, 8, low=1, high=MAX_AVERAGES, help="readings averaged per read"),
        Param("read_v", float, 0.2, "V", low=0.01, high=10.0, help="read voltage"),
        Param("nplc", float, 1.0, "PLC", low=0.01, high=100.0, help="read integration time"),
    )  # fmt: skip

    def check(self, params: dict[str, Any], chip: RegisteredChip, station: Any) -> None:
        if params["sample"] != DEFAULT_SAMPLE:  # the default: every device of a smaller chip
            super().check(params, chip, station)
        limits = station.limits
        check_station_limits(params, limits, read_v="max_read_v")
        top = min(params["max_v"], limits.max_write_v)
        if params["start_v"] >= top:
            raise ConfigError(
                f"value {params['start_v']:g} V is not allowed; the ramp must start below its "
                f"largest amplitude {top:g} V (max_v capped at the station's write limit "
                f"{limits.max_write_v:g} V)",
                field="start_v",
            )
        check_station_limits(params, limits, width_s="max_pulse_width_s")

    def plan(
        self, params: dict[str, Any], chip: RegisteredChip, rng: np.random.Generator,
        profile: ChipProfile | None,
    ) -> list[SweepUnit]:  # fmt: skip
        devices = choose_devices(chip, params["sample"], rng, profile=profile)
        return [SweepUnit(f"device-{r}-{c}", ((r, c),)) for r, c in devices]

    def estimate_s(self, params: dict[str, Any], chip: RegisteredChip | None) -> float | None:
        n = params.get("sample", 256) or (chip.rows * chip.cols if chip else 4096)
        if chip is not None:
            n = min(n, chip.rows * chip.cols)
        read_s = params.get("averages", 8) * params.get("nplc", 1.0) / 50.0 + 0.01
        pulses = 2 * 35  # two ramps of ~35 pulses at the defaults
        return float(n * pulses * (params.get("width_s", 1e-3) + read_s + 0.005))

    # -- measurement -------------------------------------------------------------------
    def _settings(self, params: dict[str, Any], averages: int | None = None) -> ReadSettings:
        return ReadSettings(
            read_v=params["read_v"],
            averages=averages or params["averages"],
            nplc=params["nplc"],
        )

    def _averages_for(self, ctx: SweepContext, read: DeviceRead) -> int:
        """Readings per read for this device: the ``averages`` parameter, raised (up to
        :data:`MAX_DEVICE_AVERAGES`) until the standard error of a read, estimated from
        ``read``'s own spread, is below :data:`NOISE_PER_TARGET` x the change fraction
        (low conductances and stuck-off devices read noisier)."""
        return self._noise_plan(ctx, read)[0]

    def _noise_plan(self, ctx: SweepContext, read: DeviceRead) -> tuple[int, float]:
        """(readings per read, expected relative standard error of such a read)."""
        base = int(ctx.params["averages"])
        g, se = read.conductance_s, read.stderr_s
        if base < 2 or not (math.isfinite(se) and g > 0):
            return base, math.nan
        wanted = NOISE_PER_TARGET * ctx.params["change_fraction"]
        need = math.ceil(base * (se / g / wanted) ** 2)
        n = int(min(max(base, need), max(base, MAX_DEVICE_AVERAGES)))
        return n, se / g * math.sqrt(base / n)

    def _ramp(
        self, ctx: SweepContext, row: int, col: int, polarity: int, g_start: float,
        averages: int,
    ) -> tuple[RampResult, float]:  # fmt: skip
        p = ctx.params
        settings = self._settings(p, averages)
        top = min(p["max_v"], ctx.station.limits.max_write_v)
        frac = p["change_fraction"]
        target = math.log1p(frac) if polarity > 0 else -math.log1p(-frac)
        out = RampResult()
        amp = p["start_v"]
        fine = False
        fine_from = amp
        above = 0
        g_prev = g_start
        while True:
            ctx.pulse(row, col, polarity * amp, p["width_s"], scheme=p["scheme"])
            g = ctx.read(row, col, settings).conductance_s
            change = polarity * math.log(g / g_prev) if g > 0 and g_prev > 0 else math.nan
            g_prev = g
            out.amplitudes_v.append(amp)
            out.changes.append(change)
            out.fine.append(fine)
            if not fine and change >= DETECT_FRACTION * target:
                fine = True
                amp = max(p["start_v"], amp - p["coarse_step_v"]) + p["step_v"]
                fine_from = amp
                continue
            recent = out.changes[-FINE_QUIET_PULSES:]
            if (
                fine
                and amp - fine_from > FINE_SPAN_V
                and not any(c >= DETECT_FRACTION * target for c in recent)
            ):
                fine = False  # a false start (read noise): coarse steps again
            above = above + 1 if fine and change >= target else 0
            if change >= STOP_MULTIPLE * target or above >= STOP_AFTER:
                out.stopped = "crossed"
                break
            if (polarity > 0 and g > RAMP_GUARD_S[1]) or (polarity < 0 and g < RAMP_GUARD_S[0]):
                out.stopped = "left the window"
                break
            if amp >= top - 1e-12:
                out.stopped = "max amplitude"
                break
            amp = min(amp + (p["step_v"] if fine else p["coarse_step_v"]), top)
        moved = polarity * math.log(g_prev / g_start) if g_prev > 0 and g_start > 0 else 0.0
        if out.stopped == "crossed" and not moved >= CUMULATIVE_MULTIPLE * target:
            out.stopped = "no lasting change (read or telegraph noise)"
            out.changes = [min(c, 0.5 * target) for c in out.changes]
        return out, g_prev

    def _bring_into_window(
        self, ctx: SweepContext, row: int, col: int, polarity: int, amplitude_v: float,
        g: float, averages: int,
    ) -> float:  # fmt: skip
        """Move the device away from the window edge the next ramp would saturate at:
        pulses of ``polarity`` at ``amplitude_v`` (the threshold just measured plus
        :data:`TOP_UP_OVERDRIVE_V`, about 10 % per pulse) until the conductance passes the
        middle of the window. Returns the last read (S)."""
        p = ctx.params
        settings = self._settings(p, averages)
        top = min(p["max_v"], ctx.station.limits.max_write_v)
        amp = min(amplitude_v + TOP_UP_OVERDRIVE_V, top)
        goal = TOP_UP_GOAL_S[0] if polarity > 0 else TOP_UP_GOAL_S[1]
        for _ in range(TOP_UP_MAX_PULSES):
            if (polarity > 0 and g >= goal) or (polarity < 0 and g <= goal):
                break
            ctx.pulse(row, col, polarity * amp, p["width_s"], scheme=p["scheme"])
            g = ctx.read(row, col, settings).conductance_s
        return g

    def _raise_from_bottom(
        self, ctx: SweepContext, row: int, col: int, g: float, averages: int
    ) -> float:
        """A gentle set ramp for a device parked near the bottom of the window (where a
        read's relative noise is several times larger): rising amplitude while a pulse
        changes the conductance by less than :data:`RAISE_HOLD_REL`, held otherwise, until
        :data:`RAISE_GOAL_S`; no overshoot to the top of the window. Returns the last
        read (S)."""
        p = ctx.params
        top = min(p["max_v"], ctx.station.limits.max_write_v)
        settings = self._settings(p, averages)
        amp = p["start_v"]
        at_top = 0
        for _ in range(RAISE_MAX_PULSES):
            if g >= RAISE_GOAL_S or at_top >= RAISE_TOP_PULSES:
                break  # raised, or not switching (stuck)
            at_top += amp >= top - 1e-12
            ctx.pulse(row, col, amp, p["width_s"], scheme=p["scheme"])
            g_new = ctx.read(row, col, settings).conductance_s
            change = math.log(g_new / g) if g_new > 0 and g > 0 else 0.0
            g = g_new
            if change < RAISE_HOLD_REL:
                amp = min(amp + p["coarse_step_v"], top)
        return g

    def run_unit(self, ctx: SweepContext, unit: SweepUnit) -> None:
        (row, col), p = unit.devices[0], ctx.params
        first = ctx.read(row, col, self._settings(p))
        g = first.conductance_s
        averages = self._averages_for(ctx, first)
        if g < RAISE_BELOW_S:
            g = self._raise_from_bottom(ctx, row, col, g, averages)
        averages, noise = self._noise_plan(ctx, ctx.read(row, col, self._settings(p)))
        if noise > MAX_NOISE_PER_TARGET * p["change_fraction"]:
            # Too noisy to see a change of the fraction (a stuck-off device, an open).
            noisy = f"not measured (read noise {100 * noise:.2g} % per read)"
            for name in ("set", "reset"):
                ctx.parameter(row, col, f"{name}_threshold_v", None, "V", text=noisy)
            return
        # Set saturates near the top of the window, reset near the bottom: the first ramp
        # goes away from the nearer edge.
        order = (1, -1) if g < SET_FIRST_BELOW_S else (-1, 1)
        frac = p["change_fraction"]
        for i, polarity in enumerate(order):
            ctx.check_stop()
            ramp, g = self._ramp(ctx, row, col, polarity, g, averages)
            target = math.log1p(frac) if polarity > 0 else -math.log1p(-frac)
            vth, slope, crossing = (
                estimate_threshold(ramp.amplitudes_v, ramp.changes, target, fine=ramp.fine)
                if ramp.stopped == "crossed"
                else (math.nan, math.nan, math.nan)
            )
            name = "set" if polarity > 0 else "reset"
            note = None if math.isfinite(vth) else f"not crossed ({ramp.stopped})"
            ctx.parameter(row, col, f"{name}_threshold_v", polarity * vth, "V", text=note)
            ctx.parameter(row, col, f"{name}_slope_v", slope, "V")
            ctx.parameter(row, col, f"{name}_crossing_v", polarity * crossing, "V")
            near_edge = g < EDGE_S[0] if polarity > 0 else g > EDGE_S[1]
            if i == 0 and near_edge and math.isfinite(vth):
                g = self._bring_into_window(ctx, row, col, polarity, vth, g, averages)

    # -- analysis ------------------------------------------------------------------------
    def finish(self, ctx: SweepContext) -> ProfileUpdate:
        names = [
            f"{n}_{q}" for n in ("set", "reset") for q in ("threshold_v", "slope_v", "crossing_v")
        ]
        got = ctx.chain_parameters(names)
        records = ctx.chain_records("device_parameters", ["row", "col", "name"])
        measured = {
            (int(r), int(c))
            for r, c, n in zip(records["row"], records["col"], records["name"], strict=True)
            if n == "set_threshold_v"
        }
        skipped = 0
        if ctx.profile is not None and ctx.profile.defect_class is not None:
            skipped = int(np.count_nonzero(np.isin(ctx.profile.defect_class, (1, 2))))
        summary: dict[str, Any] = {
            "definition": (
                f"amplitude of one {ctx.params['width_s']:g} s pulse ({ctx.params['scheme']}) "
                f"changing the conductance by {100 * ctx.params['change_fraction']:g} %, "
                "median over cycles (exponential fit of the change vs amplitude)"
            ),
            "devices_measured": len(measured),
            "devices_skipped_stuck": skipped,
            "max_v": min(ctx.params["max_v"], ctx.station.limits.max_write_v),
        }
        for name in ("set", "reset"):
            vth = got[f"{name}_threshold_v"]
            finite = np.isfinite(vth)
            dist = distribution(np.abs(vth[finite]))
            dist["not_crossed"] = len(measured) - int(np.count_nonzero(finite))
            slopes = got[f"{name}_slope_v"]
            dist["slope_v_median"] = (
                float(np.nanmedian(slopes)) if np.any(np.isfinite(slopes)) else None
            )
            single = np.abs(got[f"{name}_crossing_v"])
            dist["single_crossing_mean_v"] = (
                float(np.nanmean(single)) if np.any(np.isfinite(single)) else None
            )
            summary[name] = dist
        return ProfileUpdate(
            arrays={
                "set_threshold_v": got["set_threshold_v"],
                "reset_threshold_v": got["reset_threshold_v"],
            },
            summary=summary,
        )
