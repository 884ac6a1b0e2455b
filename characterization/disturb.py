"""Read disturb and half-select disturb (sweep ``disturb``).

Three units, each a ladder of rising stress with reference reads (``ref_read_v``,
averaged) of a set of *watched* devices before and after each rung:

- ``read``: at each read voltage from ``read_v_start`` to ``read_v_max`` (capped at the
  station's read limit) every watched device (the sample and the weakest devices of the
  threshold profile) is read ``reads_per_level`` times at that voltage (one averaged read
  of that many readings). In the tracking read the
  selected device sees +V and every device off the selected row and column -V, so the
  watched devices see both polarities. Result: ``safe_read_v``.
- ``half-select-v/2`` and ``half-select-v/3``: at each amplitude from ``amplitude_start_v``
  to ``amplitude_max_v`` (capped at the station's write limit) an *aggressor* device gets
  ``pulses`` set pulses, then ``pulses`` reset pulses (``width_s`` each) under the scheme;
  the watched devices are the aggressor's row and column (the half-selected devices, at
  V/2 or V/3) plus, under V/3 where every other device sees -V/3, the weakest devices of
  the profile and the sample. Results: ``amplitude_cap_half_select_v`` (V/2) and
  ``amplitude_cap_third_select_v`` (V/3).

Judging a rung: a watched device is *disturbed* when a reference read moved by more than
``tolerance_rel`` (relative) over the rung (over each polarity's pulses for the
half-select ladders) beyond what its reads moved unstressed. Reference reads of a device
take enough readings for a standard error of 1/8 of the tolerance (estimated from the
spread of a first read, at most 128 readings). Two control rounds (the same reference
reads with no stress in between) measure each device's unstressed movement (telegraph
steps, read noise): its allowance; a device moving by more than the tolerance unstressed
is left out and counted in the summary. Disturb grows steeply with the stress (the
switching rate rises e-fold per ~50 mV on the device), read noise and telegraph noise do
not persist from rung to rung, so a rung counts as disturbing when it and the next rung
both disturb a device (the last rung counts alone); the ladder stops there. The safe value
is the rung below the first disturbing rung (the highest rung tested if none disturbed; NaN
if the first rung already disturbed).

With a threshold profile of the chip (``ctx.profile.set_threshold_v`` / ``reset_threshold_v``
from the ``thresholds`` sweep) the lowest thresholds are used twice: the aggressor is
placed on the row of the weakest device (lowest of set and |reset| threshold) and the
column of the next weakest, so both are half-selected, and the ``watch_weakest`` devices
of lowest set and of lowest |reset| threshold are watched (and stressed, in the read
ladder), first written to 30 uS if they sit outside 8-150 uS (a device at a window edge
cannot be seen disturbed towards it); and each result is bounded by
the margin its ladder left below the weakest watched device's threshold, applied to the
chip's lowest threshold: with k = 1 (read), 2 (V/2), 3 (V/3), the stress on a device at
the safe value is ``safe / k``, ``margin = Vth_watched - safe / k`` and the result is at
most ``k (Vth_lowest - margin)`` (equal to the ladder's value when the weakest device was
watched). The switching rate depends on how far below its threshold a device is driven
(``exp((|V| - Vth) / v0)``), so the margin carries over. The summary says when the bound
applied. Last, each result is lowered by ``margin_steps`` ladder steps (default one: at the
default steps the disturb grows about e-fold per step, so the stated value leaves the
watched devices well inside the tolerance and covers devices not watched); the summary
keeps the ladder's own value (``measured_v``). Without a profile the results hold for the
devices watched only (the summary says so): run ``thresholds`` first on every device for
chip-wide values.

The tolerance is per rung: ``pulses`` pulses of each polarity (default 20) or
``reads_per_level`` readings per watched device; a longer stress at the same level
accumulates more disturb.

Summary: per ladder the rungs (V), the largest |relative change| of a watched device
(noisy devices excluded) and the number of disturbed devices, the tolerance, pulses and
reads per rung, the aggressor, the devices watched and flagged noisy, the bounds;
``summary["plot"]`` = ``read_v``, ``read_drift_rel``, ``amplitude_v``, ``disturb_v2_rel``,
``disturb_v3_rel`` (NaN where a ladder stopped early).

Units: V, S, s.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from nvmlab.characterization.states import set_conductance
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
from nvmlab.instruments.arrays import MAX_AVERAGES, ReadSettings
from nvmlab.steps import Param

if TYPE_CHECKING:
    from nvmlab.storage.inventory import RegisteredChip
    from nvmlab.storage.profile import ChipProfile

__all__ = ["DisturbSweep", "ladder_safe_level", "weakest_devices"]

#: The profile's weakest watched devices outside this window (S) are first written to
#: PREPARE_TARGET_S with the conventional write-verify.
PREPARE_WINDOW_S = (8e-6, 150e-6)
PREPARE_TARGET_S = 30e-6
#: Control rounds (reference reads with no stress) before each ladder.
CONTROL_ROUNDS = 2
#: Reference reads of a device take enough readings for a standard error of
#: REF_NOISE_PER_TOLERANCE x the tolerance (estimated from a first read), at most
#: MAX_REF_AVERAGES.
REF_NOISE_PER_TOLERANCE = 1 / 8
MAX_REF_AVERAGES = 128

Device = tuple[int, int]


def weakest_devices(profile: ChipProfile | None, count: int) -> list[Device]:
    """The ``count`` devices with the lowest set threshold and the ``count`` with the lowest
    |reset| threshold (V) of the profile, interleaved, weakest first, without repeats
    (empty without thresholds)."""
    if profile is None or count <= 0:
        return []
    ranked: list[list[Device]] = []
    for a in (profile.set_threshold_v, profile.reset_threshold_v):
        if a is None:
            continue
        flat = np.abs(np.asarray(a, dtype=float)).ravel()
        flat = np.where(np.isfinite(flat), flat, np.inf)
        order = [int(i) for i in np.argsort(flat, kind="stable")[:count] if np.isfinite(flat[i])]
        ranked.append([(i // a.shape[1], i % a.shape[1]) for i in order])
    out: dict[Device, None] = {}
    for i in range(count):
        for lst in ranked:
            if i < len(lst):
                out[lst[i]] = None
    if len(ranked) > 1:  # weakest first overall
        return sorted(out, key=lambda d: device_threshold_v(profile, *d) or math.inf)
    return list(out)


def device_threshold_v(profile: ChipProfile | None, row: int, col: int) -> float | None:
    """min(set, |reset|) threshold (V) of one device in the profile, or None."""
    if profile is None:
        return None
    values = [
        abs(float(a[row, col]))
        for a in (profile.set_threshold_v, profile.reset_threshold_v)
        if a is not None and np.isfinite(a[row, col])
    ]
    return min(values) if values else None


def lowest_threshold_v(profile: ChipProfile | None) -> float | None:
    """The lowest |threshold| (V), set or reset, of the profile, or None."""
    weakest = weakest_devices(profile, 1)
    if not weakest:
        return None
    return device_threshold_v(profile, *weakest[0])


def ladder_safe_level(levels: list[float], disturbed: list[bool]) -> tuple[float, int | None]:
    """(safe level, index of the first disturbing rung or None) by the persistence rule of
    the module docstring: rung k disturbs if it and rung k+1 disturbed (the last rung
    alone). Safe = the rung below (NaN if k = 0); the highest rung if none disturbs."""
    n = len(disturbed)
    for k in range(n):
        if disturbed[k] and (k == n - 1 or disturbed[k + 1]):
            return (levels[k - 1] if k > 0 else math.nan), k
    return (levels[n - 1] if n else math.nan), None


def _chain_ladders(ctx: SweepContext) -> dict[str, dict[str, Any]]:
    """The ladder traces' metadata stored by completed units of the run's resume chain,
    by unit key (the newest wins)."""
    from nvmlab.storage.query import load_traces
    from nvmlab.storage.runs import resume_chain, unit_attempts

    ctx.writer.flush()
    done = {int(a["id"]) for a in unit_attempts(ctx.db, ctx.run_id) if a["status"] == "completed"}
    with ctx.db.read_connection() as conn:
        chain = list(reversed(resume_chain(conn, ctx.run_id)))
    ladders: dict[str, dict[str, Any]] = {}
    for run in chain:
        for trace in load_traces(ctx.db, run):
            meta = trace.get("meta")
            attempt = trace.get("attempt_id")
            if (
                str(trace.get("kind", "")).startswith("disturb-")
                and isinstance(meta, dict)
                and attempt is not None
                and int(attempt) in done
            ):
                ladders[str(meta["unit"])] = meta
    return ladders


@register_sweep
class DisturbSweep(Sweep):
    kind = "disturb"
    summary = "read disturb vs read voltage, half-select disturb vs scheme and amplitude"
    description = __doc__ or ""
    params = (
        Param("sample", int, 16, low=1, high=MAX_SAMPLE,
              help="devices read repeatedly in the read ladder (and watched)"),
        Param("read_v_start", float, 0.1, "V", low=0.01, high=10.0, help="first read voltage"),
        Param("read_v_step", float, 0.05, "V", low=0.005, high=1.0, help="read voltage step"),
        Param("read_v_max", float, 0.5, "V", low=0.01, high=10.0,
              help="last read voltage (capped at the station's read limit)"),
        Param("reads_per_level", int, 50, low=1, high=MAX_AVERAGES,
              help="readings per sample device at each read voltage"),
        Param("amplitude_start_v", float, 0.5, "V", low=0.05, high=10.0,
              help="first write amplitude"),
        Param("amplitude_step_v", float, 0.1, "V", low=0.005, high=1.0,
              help="write amplitude step"),
        Param("amplitude_max_v", float, 2.5, "V", low=0.05, high=10.0,
              help="last write amplitude (capped at the station's write limit)"),
        Param("pulses", int, 20, low=1, high=10000,
              help="aggressor pulses per polarity at each amplitude"),
        Param("width_s", float, 1e-3, "s", low=1e-7, high=1.0, help="pulse width"),
        Param("tolerance_rel", float, 0.02, low=0.001, high=0.5,
              help="largest relative change of a watched device that is not a disturb"),
        Param("ref_read_v", float, 0.2, "V", low=0.01, high=10.0,
              help="read voltage of the reference reads"),
        Param("averages", int, 8, low=1, high=MAX_AVERAGES,
              help="readings averaged per reference read"),
        Param("margin_steps", float, 1.0, low=0.0, high=10.0,
              help="results lowered by this many ladder steps (safety margin)"),
        Param("watch_weakest", int, 8, low=0, high=MAX_SAMPLE,
              help="devices with the lowest profile thresholds watched"),
    )  # fmt: skip

    def check(self, params: dict[str, Any], chip: RegisteredChip, station: Any) -> None:
        super().check(params, chip, station)
        limits = station.limits
        check_station_limits(params, limits, ref_read_v="max_read_v")
        if params["read_v_start"] > min(params["read_v_max"], limits.max_read_v):
            raise ConfigError(
                f"value {params['read_v_start']:g} V is not allowed; allowed: up to read_v_max "
                f"capped at the station's read limit, "
                f"{min(params['read_v_max'], limits.max_read_v):g} V",
                field="read_v_start",
            )
        if params["amplitude_start_v"] > min(params["amplitude_max_v"], limits.max_write_v):
            raise ConfigError(
                f"value {params['amplitude_start_v']:g} V is not allowed; allowed: up to "
                "amplitude_max_v capped at the station's write limit, "
                f"{min(params['amplitude_max_v'], limits.max_write_v):g} V",
                field="amplitude_start_v",
            )
        check_station_limits(params, limits, width_s="max_pulse_width_s")
        if chip.rows < 2 or chip.cols < 2:
            raise ConfigError(
                f"chip {chip.name!r} is {chip.rows} x {chip.cols}; half-select disturb needs at "
                "least 2 rows and 2 columns",
                field="--chip",
            )

    # -- plan -------------------------------------------------------------------------
    def plan(
        self, params: dict[str, Any], chip: RegisteredChip, rng: np.random.Generator,
        profile: ChipProfile | None,
    ) -> list[SweepUnit]:  # fmt: skip
        sample = choose_devices(chip, params["sample"], rng, profile=profile)
        weakest = weakest_devices(profile, max(params["watch_weakest"], 2))
        if len(weakest) >= 2:
            (r1, c1) = weakest[0]
            others = [(r, c) for r, c in weakest[1:] if r != r1 and c != c1]
            aggressor = (r1, others[0][1]) if others else (r1, (c1 + 1) % chip.cols)
            placed = "row of the weakest device, column of the next weakest (profile)"
        else:
            aggressor = (int(rng.integers(chip.rows)), int(rng.integers(chip.cols)))
            placed = "at random (no threshold profile)"
        extra = weakest_devices(profile, params["watch_weakest"])
        line = [(aggressor[0], c) for c in range(chip.cols) if c != aggressor[1]] + [
            (r, aggressor[1]) for r in range(chip.rows) if r != aggressor[0]
        ]

        def unique(devs: list[Device]) -> list[list[int]]:
            seen: dict[Device, None] = {}
            for d in devs:
                if d != aggressor:
                    seen[(int(d[0]), int(d[1]))] = None
            return [list(d) for d in seen]

        read_watch = unique(list(sample) + extra)
        return [
            SweepUnit(
                "read", tuple(sample),
                {"watched": read_watch, "stressed": read_watch,
                 "weakest": [list(d) for d in extra]},
            ),
            SweepUnit(
                "half-select-v/2", (aggressor,),
                {"scheme": "v/2", "aggressor": list(aggressor), "placed": placed,
                 "weakest": unique(extra), "half_selected": unique(line),
                 "watched": unique(line + extra)},
            ),
            SweepUnit(
                "half-select-v/3", (aggressor,),
                {"scheme": "v/3", "aggressor": list(aggressor), "placed": placed,
                 "weakest": unique(extra),
                 "watched": unique(line + extra + list(sample))},
            ),
        ]  # fmt: skip

    def estimate_s(self, params: dict[str, Any], chip: RegisteredChip | None) -> float | None:
        read_s = params.get("averages", 8) / 50.0 + 0.01
        n_watch = (chip.rows + chip.cols if chip else 128) + params.get("sample", 16)
        rungs_r = 9
        rungs_a = 20
        t_read = rungs_r * (
            params.get("sample", 16) * params.get("reads_per_level", 50) / 50.0 + n_watch * read_s
        )
        t_pulse = 2 * rungs_a * (
            2 * params.get("pulses", 20) * params.get("width_s", 1e-3) + 2 * n_watch * read_s
        )  # fmt: skip
        return float(t_read + t_pulse)

    # -- measurement ------------------------------------------------------------------
    def _reference(
        self, ctx: SweepContext, devices: list[Device], averages: list[int]
    ) -> np.ndarray:
        v = ctx.params["ref_read_v"]
        return np.array(
            [
                ctx.read(r, c, ReadSettings(read_v=v, averages=n)).conductance_s
                for (r, c), n in zip(devices, averages, strict=True)
            ]
        )

    @staticmethod
    def _levels(start: float, step: float, top: float) -> list[float]:
        n = int(math.floor((top - start) / step + 1e-9)) + 1
        levels = [round(start + i * step, 9) for i in range(n)]
        if levels[-1] < top - 1e-9:
            levels.append(top)
        return levels

    def _control(
        self, ctx: SweepContext, watched: list[Device]
    ) -> tuple[list[int], np.ndarray, np.ndarray]:
        """Readings per reference read of each device (from a first read's own spread),
        the largest relative change of each device over :data:`CONTROL_ROUNDS` rounds of
        reference reads with no stress in between (its allowance: telegraph steps, read
        noise), and the last reads (S)."""
        p = ctx.params
        base = int(p["averages"])
        wanted = REF_NOISE_PER_TOLERANCE * p["tolerance_rel"]
        averages: list[int] = []
        first = []
        for r, c in watched:
            read = ctx.read(r, c, ReadSettings(read_v=p["ref_read_v"], averages=base))
            first.append(read.conductance_s)
            se = read.stderr_s / read.conductance_s if read.conductance_s > 0 else math.inf
            need = math.ceil(base * (se / wanted) ** 2) if math.isfinite(se) else base
            averages.append(int(min(max(base, need), max(base, MAX_REF_AVERAGES))))
        g = np.array(first)
        allowance = np.zeros(len(watched))
        for _ in range(CONTROL_ROUNDS):
            g2 = self._reference(ctx, watched, averages)
            change = np.abs(g2 / g - 1.0)
            allowance = np.fmax(allowance, np.where(np.isfinite(change), change, np.inf))
            g = g2
        return averages, allowance, g

    def _prepare_weakest(self, ctx: SweepContext, devices: list[Device]) -> None:
        """Write the profile's weakest watched devices to the middle of the window (a
        device at an edge cannot be seen disturbed towards it: set saturates at the top,
        reset at the bottom)."""
        settings = ReadSettings(read_v=ctx.params["ref_read_v"], averages=ctx.params["averages"])
        for r, c in devices:
            g = ctx.read(r, c, settings).conductance_s
            if not (PREPARE_WINDOW_S[0] <= g <= PREPARE_WINDOW_S[1]):
                set_conductance(ctx, r, c, PREPARE_TARGET_S, tolerance_rel=0.3, max_pulses=60,
                                read=settings)  # fmt: skip

    def run_unit(self, ctx: SweepContext, unit: SweepUnit) -> None:
        p = ctx.params
        watched = [(int(r), int(c)) for r, c in unit.info["watched"]]
        self._prepare_weakest(ctx, [(int(r), int(c)) for r, c in unit.info["weakest"]])
        averages, allowance, g = self._control(ctx, watched)
        # A device whose reads move by more than the tolerance unstressed is not judged.
        noisy = ~(allowance <= p["tolerance_rel"])
        keep = ~noisy
        tol = p["tolerance_rel"]
        limits = ctx.station.limits
        if unit.key == "read":
            levels = self._levels(
                p["read_v_start"], p["read_v_step"], min(p["read_v_max"], limits.max_read_v)
            )
            stressed = [(int(r), int(c)) for r, c in unit.info["stressed"]]
        else:
            levels = self._levels(
                p["amplitude_start_v"], p["amplitude_step_v"],
                min(p["amplitude_max_v"], limits.max_write_v),
            )  # fmt: skip
            ar, ac = unit.info["aggressor"]
        worst: list[float] = []
        count: list[int] = []
        disturbed: list[bool] = []
        for level in levels:
            ctx.check_stop()
            changes = []
            if unit.key == "read":
                settings = ReadSettings(read_v=level, averages=p["reads_per_level"])
                for r, c in stressed:
                    ctx.read(r, c, settings)
                g_new = self._reference(ctx, watched, averages)
                changes.append(g_new / g - 1.0)
                g = g_new
            else:
                for polarity in (1, -1):
                    for _ in range(p["pulses"]):
                        ctx.pulse(
                            ar, ac, polarity * level, p["width_s"], scheme=unit.info["scheme"]
                        )
                    g_new = self._reference(ctx, watched, averages)
                    changes.append(g_new / g - 1.0)
                    g = g_new
            moved = np.max(np.abs(np.array(changes)), axis=0)
            moved = np.where(np.isfinite(moved), moved, np.inf)
            # Judged: the change beyond what the device's reads moved unstressed.
            judged = (moved - allowance)[keep]
            worst.append(float(moved[keep].max()) if judged.size else math.nan)
            count.append(int(np.count_nonzero(judged > tol)))
            # No device judged (every one too noisy): nothing shown safe.
            disturbed.append(bool(count[-1] > 0) or judged.size == 0)
            safe, first = ladder_safe_level(levels[: len(disturbed)], disturbed)
            if first is not None and first < len(disturbed) - 1:
                break
        done = len(worst)
        # The devices the ladder stressed at the full level / k: under V/2 only the
        # aggressor's row and column; under V/3 and in the read ladder every watched one.
        on_line = {(int(r), int(c)) for r, c in unit.info.get("half_selected", watched)}
        known = [
            device_threshold_v(ctx.profile, r, c)
            for (r, c), judged_ok in zip(watched, keep, strict=True)
            if judged_ok and (r, c) in on_line
        ]
        known_v = [v for v in known if v is not None]
        safe, first = ladder_safe_level(levels[:done], disturbed)
        if first is None and done < len(levels):  # pragma: no cover - loop breaks only on a hit
            safe = levels[done - 1]
        row, col = watched[0] if unit.key == "read" else (ar, ac)
        ctx.writer.add_trace(
            row, col, f"disturb-{unit.key}", levels[:done], worst,
            x_name="read_v" if unit.key == "read" else "amplitude_v", y_name="max_change_rel",
            meta={
                "unit": unit.key, "levels_v": levels, "worst_rel": worst, "disturbed": count,
                "safe_v": safe, "first_disturbing_v": None if first is None else levels[first],
                "watched": len(watched), "noisy": int(np.count_nonzero(noisy)),
                "averages_max": int(max(averages)) if averages else 0,
                "weakest_watched_v": min(known_v) if known_v else None,
                "noisy_devices": [list(d) for d, n in zip(watched, noisy, strict=True) if n],
                "scheme": unit.info.get("scheme"), "aggressor": unit.info.get("aggressor"),
                "placed": unit.info.get("placed"),
            },
        )  # fmt: skip

    # -- analysis ---------------------------------------------------------------------
    def finish(self, ctx: SweepContext) -> ProfileUpdate:
        p = ctx.params
        ladders = _chain_ladders(ctx)
        lowest = lowest_threshold_v(ctx.profile)
        summary: dict[str, Any] = {
            "tolerance_rel": p["tolerance_rel"],
            "pulses_per_polarity": p["pulses"],
            "width_s": p["width_s"],
            "reads_per_level": p["reads_per_level"],
            "lowest_profile_threshold_v": lowest,
            "ladders": ladders,
            "scope": (
                "aggressor and watched devices placed on the profile's weakest devices; caps "
                "bounded by the profile's lowest threshold"
                if lowest is not None
                else "no threshold profile: results hold for the watched devices only; run "
                "'thresholds' on every device first for chip-wide caps"
            ),
        }
        scalars: dict[str, float] = {}
        for key, name, k in (
            ("read", "safe_read_v", 1.0),
            ("half-select-v/2", "amplitude_cap_half_select_v", 2.0),
            ("half-select-v/3", "amplitude_cap_third_select_v", 3.0),
        ):
            meta = ladders.get(key)
            if meta is None:
                continue
            measured = math.nan if meta["safe_v"] is None else float(meta["safe_v"])
            watched_low = meta.get("weakest_watched_v")
            bound = None
            if lowest is not None and watched_low is not None and math.isfinite(measured):
                # The margin the ladder left below the weakest watched device's threshold
                # (on the device: safe / k), kept below the chip's lowest threshold.
                bound = k * (lowest - (watched_low - measured / k))
            step = p["read_v_step"] if key == "read" else p["amplitude_step_v"]
            value = (measured if bound is None else min(measured, bound)) - p["margin_steps"] * step
            summary[name] = {
                "value_v": value if math.isfinite(value) else None,
                "measured_v": measured if math.isfinite(measured) else None,
                "weakest_watched_threshold_v": watched_low,
                "bound_v": bound,
                "bound_applied": bound is not None and bound < measured,
                "margin_v": p["margin_steps"] * step,
                "rule": (
                    f"the ladder's margin below the weakest watched device's threshold "
                    f"({'read voltage' if k == 1 else f'V/{k:g} on the device'}) kept below "
                    "the lowest |threshold| of the profile"
                ),
            }
            if math.isfinite(value):
                scalars[name] = value

        def series(key: str) -> tuple[list[float], list[float]]:
            meta = ladders.get(key, {})
            levels = list(meta.get("levels_v", []))
            worst = list(meta.get("worst_rel", []))
            return levels, worst + [math.nan] * (len(levels) - len(worst))

        read_v, read_drift = series("read")
        amp2, dist2 = series("half-select-v/2")
        amp3, dist3 = series("half-select-v/3")
        amplitude = amp2 if len(amp2) >= len(amp3) else amp3
        summary["plot"] = {
            "read_v": read_v,
            "read_drift_rel": read_drift,
            "amplitude_v": amplitude,
            "disturb_v2_rel": dist2 + [math.nan] * (len(amplitude) - len(dist2)),
            "disturb_v3_rel": dist3 + [math.nan] * (len(amplitude) - len(dist3)),
        }
        return ProfileUpdate(scalars=scalars, summary=summary)
