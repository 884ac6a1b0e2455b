"""The ``map`` sweep: a conductance map of a memristor crossbar and its defect map.

What it measures (units V, A, S, s):

1. **Map read** (units ``read-row-R``): every device read at ``read_v`` (default 0.2 V)
   with the one-channel tracking read, ``averages`` readings averaged (default 4, 1 PLC).
   This is the profile's ``conductance_s``. The rows are all read before any device is
   pulsed, so the map is the chip as it was delivered, undisturbed by the probing. The
   readings' own scatter gives each device's single-read noise; a line fitted over the
   chip, ``sigma(G) = a + b G`` (the devices docs' noise model: an absolute instrument
   part and a part relative to G), sets the noise floor of the movement test below.

2. **Probe** (units ``probe-row-R``): a device is *functional* when write pulses move it.
   It is read once first: a device that already moved off its map read (the
   half-selected pulses of devices probed before it) is functional, since stuck devices
   never move. Otherwise it gets, at rising amplitudes ``probe_start_v`` (0.5 V, the low
   end of the threshold distribution), ``+probe_step_v`` (50 mV) ... up to the write limit
   (``probe_max_v``, default the station's write limit), a set pulse (``+a``) and a reset
   pulse (``-a``), 1 ms, V/3 half-select scheme (half-selected devices see a third of the
   amplitude), each followed by one read. It *moved* when a set read rose above its map
   read, or a reset read fell below it, by more than ``max(min_change_rel G,
   noise_sigmas sigma_diff(G))`` and a confirming read agrees; ``min_change_rel`` (5 %) is
   above the largest telegraph step (2 %), ``noise_sigmas`` (5) standard deviations of the
   difference keep read noise from faking a move. The ramp stops at the first move, so a
   functional device takes a few pulses above its lower threshold and only stuck devices
   see the top of the ramp. A device that moves in only one direction (saturated at an
   edge of its window) is functional.

   A functional device is then **put back** to its map read at once (``restore``,
   ``restore_at_once``): a write-verify ramp starting, per polarity, where that polarity
   was last seen not to move it, rising by ``probe_step_v`` while nothing moves and by
   ``restore_step_v`` once it does, never far above an amplitude that moved it, gentler
   after an overshoot, until within ``max(restore_tolerance_rel G, noise_sigmas
   sigma_diff(G))`` or ``restore_max_pulses``.

   **Settle** (units ``settle-N-B``, ``settle_rounds`` passes): the probe pulses of later
   devices (a third of up to 2.5 V on every other device under V/3) disturb devices with
   low thresholds that were already put back. After all probes, each pass reads every
   functional device once and puts back those off their map read, going from the devices
   that need the largest amplitudes down to those that need the smallest, so that a
   device is only disturbed afterwards by pulses no larger than its own (the bands
   ``B`` only cut a pass into resumable units). A device whose thresholds differ by more
   than a factor of three can still be disturbed after its settle: V/3 cannot spare it.

3. **Classes**: a device that never moved up to the write limit is stuck. Stuck devices
   never move, so whether one is stuck *off* or *on* is decided by its level alone: it is
   stuck-on when its map read lies in the upper half (on a log scale) of the technology's
   conductance window, i.e. at or above ``stuck_split_s``, the window's geometric
   midpoint (default ``sqrt(3.16 uS x 316 uS) = 31.6 uS`` for the 3.16-316 uS window of the
   reference chips, Nili 2020; set it to the midpoint of another chip's window). Stuck
   devices may sit anywhere, inside the working window too; only their class (off / on)
   uses the level, never whether they are stuck.

Profile arrays: ``conductance_s`` (the map read) and ``defect_class`` (0 functional,
1 stuck-off, 2 stuck-on; -1 where not measured). Per-device parameters stored with the
run: ``map_conductance_s``, ``map_sigma_s`` (single-read noise from the map's readings),
``defect_class``, ``moved_at_v`` (signed amplitude of the probe pulse that first moved
it; not measured when it had moved before its probe), ``set_moves_at_v`` /
``reset_moves_at_v`` (amplitudes seen to move it), ``set_quiet_v`` / ``reset_quiet_v``
(largest probe amplitudes seen not to), ``probe_pulses``, ``restore_pulses``,
``restored_conductance_s``, ``restored`` (1 within tolerance), and per settle pass
``settle_pulses``, ``settled_conductance_s``, ``settled``. Every read and pulse is stored
as raw data. The summary gives the class counts, the noise model and the pulses per
device (probe, restore, settle).

Cost (emulated default chip, 32 x 32): about 12 probe pulses, 2-4 restore and settle
pulses and as many single reads per device, plus the 4-reading map read.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nvmlab.characterization.sweep import (
    ProfileUpdate,
    Sweep,
    SweepContext,
    SweepUnit,
    check_station_limits,
    choose_devices,
    devices_by_row,
    register_sweep,
)
from nvmlab.errors import ConfigError
from nvmlab.instruments.arrays import ReadSettings, WriteScheme
from nvmlab.steps import Param

if TYPE_CHECKING:
    from nvmlab.storage.inventory import RegisteredChip
    from nvmlab.storage.profile import ChipProfile

__all__ = ["DefectMapSweep", "NoiseModel", "fit_noise_model", "stuck_class"]

FUNCTIONAL, STUCK_OFF, STUCK_ON = 0, 1, 2
#: Geometric midpoint (S) of the 3.16-316 uS window of the reference chips (Nili 2020).
DEFAULT_STUCK_SPLIT_S = math.sqrt(3.16e-6 * 316e-6)
#: Edges (V, descending) of the settle units' bands of the largest amplitude that moved a
#: device: the settle pass goes from the devices that need the largest amplitudes down.
#: (Within a unit the devices go in descending order too: the bands only cut the pass
#: into resumable units.)
SETTLE_BANDS_V = (math.inf, 2.0, 1.6, 1.3, 1.1, 0.9, 0.7, 0.0)
#: E[sample std] / sigma for n normal readings (c4), to unbias the fitted noise.
_C4 = {2: 0.7979, 3: 0.8862, 4: 0.9213, 5: 0.9400, 6: 0.9515, 8: 0.9650, 10: 0.9727}


def _c4(n: int) -> float:
    if n in _C4:
        return _C4[n]
    return 1.0 - 1.0 / (4.0 * n) - 7.0 / (32.0 * n * n)


@dataclass(frozen=True)
class NoiseModel:
    """Single-read noise of the map's read settings: ``sigma(G) = abs_s + rel G`` (S)."""

    abs_s: float
    rel: float

    def sigma(self, g: float) -> float:
        return self.abs_s + self.rel * abs(g)


def fit_noise_model(g: np.ndarray, sigma: np.ndarray) -> NoiseModel:
    """Fit ``sigma = a + b G`` to per-device single-read noise estimates (S), robustly
    (least squares, points beyond 4 median absolute residuals dropped, refitted), with
    ``a`` and ``b`` kept non-negative. ``sigma`` are already unbiased sample std's."""
    ok = np.isfinite(g) & np.isfinite(sigma) & (g > 0)
    x, y = np.asarray(g, dtype=float)[ok], np.asarray(sigma, dtype=float)[ok]
    if x.size < 3:
        raise ValueError("too few devices to fit the read noise (need 3)")
    keep = np.ones(x.size, dtype=bool)
    a = b = 0.0
    for _ in range(3):
        design = np.column_stack([np.ones(keep.sum()), x[keep]])
        (a, b), *_ = np.linalg.lstsq(design, y[keep], rcond=None)
        residual = np.abs(y - (a + b * x))
        mad = float(np.median(residual[keep])) or float(np.median(y)) * 1e-3
        keep = residual <= 4.0 * mad / 0.6745 + 1e-30
    if b < 0:
        a, b = float(np.median(y)), 0.0
    if a < 0:
        a = 0.0
        b = float(np.sum(x * y) / np.sum(x * x))
    return NoiseModel(float(a), float(b))


def stuck_class(conductance_s: float, split_s: float) -> int:
    """Class of a device that never moved: 2 (stuck-on) at or above ``split_s`` (S),
    1 (stuck-off) below."""
    return STUCK_ON if conductance_s >= split_s else STUCK_OFF


@dataclass
class _Probe:
    """What probing one device found."""

    moved: bool  # it moved (under its own probe pulses, or before them)
    moved_at_v: float  # signed amplitude of the pulse that moved it; NaN if none did
    pulses: int
    last_g: float
    # the amplitudes (V, magnitudes) last seen not to move the device, per polarity
    quiet_set_v: float
    quiet_reset_v: float


@register_sweep
class DefectMapSweep(Sweep):
    kind = "map"
    summary = "conductance map at 0.2 V and defect map (stuck-off / stuck-on by probe pulses)"
    description = __doc__ or ""
    params = (
        Param("sample", int, 0, low=0, high=1 << 24, help="devices (0: every device)"),
        Param("read_v", float, 0.2, unit="V", low=0.05, high=0.5, help="map read voltage"),
        Param("averages", int, 4, low=2, high=100, help="readings averaged by the map read"),
        Param("nplc", float, 1.0, unit="PLC", low=0.01, high=10.0, help="read integration"),
        Param("current_limit_a", float, 1e-3, unit="A", low=1e-9, high=1.0,
              help="read compliance (stuck-on devices reach several hundred uA at 0.2 V)"),
        Param("probe_start_v", float, 0.5, unit="V", low=0.1, high=5.0,
              help="first probe amplitude (near the low end of the thresholds)"),
        Param("probe_step_v", float, 0.05, unit="V", low=0.005, high=0.5),
        Param("probe_max_v", float, 0.0, unit="V", low=0.0, high=5.0,
              help="last probe amplitude (0: the station's write limit)"),
        Param("width_s", float, 1e-3, unit="s", low=1e-7, high=1.0, help="probe pulse width"),
        Param("scheme", str, "v/3", choices=("v/3", "v/2"), help="half-select scheme"),
        Param("min_change_rel", float, 0.05, low=0.0, high=1.0,
              help="smallest relative change counted as a move"),
        Param("noise_sigmas", float, 5.0, low=1.0, high=50.0,
              help="a move must exceed this many standard deviations of read noise"),
        Param("stuck_split_s", float, DEFAULT_STUCK_SPLIT_S, unit="S", low=1e-9, high=1e-2,
              help="a stuck device at or above this level is stuck-on, below stuck-off"),
        Param("restore", bool, True, help="put moved devices back to their map read"),
        Param("restore_at_once", bool, True,
              help="put each device back right after its probe too (else only in the "
              "settle passes, which go from the largest amplitudes down)"),
        Param("restore_tolerance_rel", float, 0.05, low=0.005, high=1.0),
        Param("restore_step_v", float, 0.03, unit="V", low=0.005, high=0.5),
        Param("restore_max_pulses", int, 40, low=1, high=10_000),
        Param("settle_rounds", int, 2, low=0, high=20,
              help="passes over the functional devices after probing, each putting back "
              "those the other devices' pulses disturbed"),
    )  # fmt: skip

    # -- checks and plan ----------------------------------------------------------------
    def check(self, params: dict[str, Any], chip: RegisteredChip, station: Any) -> None:
        super().check(params, chip, station)
        limits = station.limits
        check_station_limits(params, limits, read_v="max_read_v")
        check_station_limits(params, limits, current_limit_a="max_current_a")
        top = self._top(params, limits)
        if top > limits.max_write_v:
            raise ConfigError(
                f"value {top:g} V is not allowed; the station's write limit is "
                f"{limits.max_write_v:g} V (0 uses it)",
                field="probe_max_v",
            )
        if params["probe_start_v"] > top:
            raise ConfigError(
                f"value {params['probe_start_v']:g} V is not allowed; it must not exceed "
                f"the last probe amplitude {top:g} V",
                field="probe_start_v",
            )
        check_station_limits(params, limits, width_s="max_pulse_width_s")

    @staticmethod
    def _top(params: dict[str, Any], limits: Any) -> float:
        return float(params["probe_max_v"]) or float(limits.max_write_v)

    def plan(
        self, params: dict[str, Any], chip: RegisteredChip, rng: np.random.Generator,
        profile: ChipProfile | None,
    ) -> list[SweepUnit]:  # fmt: skip
        devices = choose_devices(chip, params["sample"], rng, functional_only=False)
        by_row = devices_by_row(devices)
        reads = [SweepUnit(f"read-row-{r}", tuple(d), {"row": r}) for r, d in by_row.items()]
        probes = [SweepUnit(f"probe-row-{r}", tuple(d), {"row": r}) for r, d in by_row.items()]
        # Settle from the devices that need the largest amplitudes down to the most
        # fragile (lowest-threshold) ones, whose gentle pulses disturb nobody.
        settles = [
            SweepUnit(f"settle-{n}-{i}", tuple(devices), {"above_v": lo, "below_v": hi})
            for n in range(params["settle_rounds"] if params["restore"] else 0)
            for i, (hi, lo) in enumerate(itertools.pairwise(SETTLE_BANDS_V))
        ]
        return reads + probes + settles

    def estimate_s(self, params: dict[str, Any], chip: RegisteredChip | None) -> float | None:
        if chip is None:
            return None
        n = params["sample"] or chip.rows * chip.cols
        read_s = params["nplc"] / 60.0 + 1e-3
        # map read, then ~12 probe pulses with reads and ~4 restore pulses per device
        return n * (params["averages"] * read_s + 16 * (read_s + params["width_s"]))

    # -- measuring ------------------------------------------------------------------------
    def _map_settings(self, p: dict[str, Any]) -> ReadSettings:
        return ReadSettings(
            read_v=p["read_v"], scheme="track", averages=p["averages"], nplc=p["nplc"],
            current_limit_a=p["current_limit_a"],
        )  # fmt: skip

    def _probe_settings(self, p: dict[str, Any]) -> ReadSettings:
        return ReadSettings(
            read_v=p["read_v"], scheme="track", averages=1, nplc=p["nplc"],
            current_limit_a=p["current_limit_a"],
        )  # fmt: skip

    def run_unit(self, ctx: SweepContext, unit: SweepUnit) -> None:
        if unit.key.startswith("read-"):
            self._read_row(ctx, unit)
        elif unit.key.startswith("probe-"):
            self._probe_row(ctx, unit)
        else:
            self._settle_row(ctx, unit)

    def _read_row(self, ctx: SweepContext, unit: SweepUnit) -> None:
        p = ctx.params
        settings = self._map_settings(p)
        unbias = math.sqrt(p["averages"]) / _c4(p["averages"])
        for r, c in unit.devices:
            read = ctx.read(r, c, settings)
            ctx.parameter(r, c, "map_conductance_s", read.conductance_s, "S")
            ctx.parameter(r, c, "map_sigma_s", read.stderr_s * unbias, "S")

    def _noise(self, ctx: SweepContext) -> NoiseModel:
        stored = ctx.chain_parameters(["map_conductance_s", "map_sigma_s"])
        return fit_noise_model(stored["map_conductance_s"], stored["map_sigma_s"])

    def _probe_row(self, ctx: SweepContext, unit: SweepUnit) -> None:
        p = ctx.params
        stored = ctx.chain_parameters(["map_conductance_s", "map_sigma_s"])
        noise = fit_noise_model(stored["map_conductance_s"], stored["map_sigma_s"])
        g_map = stored["map_conductance_s"]
        for r, c in unit.devices:
            ctx.check_stop()
            g0 = float(g_map[r, c])
            probe = self._probe(ctx, r, c, g0, noise)
            known = {1: math.nan, -1: math.nan}
            quiet = {1: probe.quiet_set_v, -1: probe.quiet_reset_v}
            restore_pulses, g_end, ok = 0, probe.last_g, True
            if not probe.moved:
                cls = stuck_class(g0, p["stuck_split_s"])
            else:
                cls = FUNCTIONAL
                if math.isfinite(probe.moved_at_v):
                    known[1 if probe.moved_at_v > 0 else -1] = abs(probe.moved_at_v)
                if p["restore"] and p["restore_at_once"]:
                    start = dict(quiet)
                    restore_pulses, g_end, ok = self._restore(
                        ctx, r, c, g0, probe.last_g, start, known, quiet, noise
                    )
                else:
                    ok = False
            ctx.parameter(r, c, "defect_class", float(cls))
            ctx.parameter(r, c, "moved_at_v", probe.moved_at_v, "V")
            ctx.parameter(r, c, "set_moves_at_v", known[1], "V")
            ctx.parameter(r, c, "reset_moves_at_v", known[-1], "V")
            ctx.parameter(r, c, "set_quiet_v", quiet[1], "V")
            ctx.parameter(r, c, "reset_quiet_v", quiet[-1], "V")
            ctx.parameter(r, c, "probe_pulses", float(probe.pulses))
            ctx.parameter(r, c, "restore_pulses", float(restore_pulses))
            ctx.parameter(r, c, "restored_conductance_s", g_end, "S")
            ctx.parameter(r, c, "restored", 1.0 if ok else 0.0)

    def _settle_row(self, ctx: SweepContext, unit: SweepUnit) -> None:
        """After every device was probed: read each functional device whose largest moving
        amplitude lies in this unit's band once and write-verify back to its map read those
        that the pulses of other devices (half-selected at a third of up to the write
        limit) moved off it."""
        p = ctx.params
        names = [
            "map_conductance_s", "map_sigma_s", "defect_class", "set_moves_at_v",
            "reset_moves_at_v", "set_quiet_v", "reset_quiet_v",
        ]  # fmt: skip
        stored = ctx.chain_parameters(names)
        noise = fit_noise_model(stored["map_conductance_s"], stored["map_sigma_s"])
        settings = self._probe_settings(p)
        lo, hi = unit.info["above_v"], unit.info["below_v"]
        # a device disturbed before its own probe has no known amplitude: first in line
        band_v = np.fmax(stored["set_moves_at_v"], stored["reset_moves_at_v"])
        band_v = np.where(np.isnan(band_v), np.inf, band_v)
        mine = [
            (r, c)
            for r, c in unit.devices
            if stored["defect_class"][r, c] == FUNCTIONAL
            and lo <= band_v[r, c]
            and (band_v[r, c] < hi or math.isinf(hi))
        ]
        mine.sort(key=lambda d: -band_v[d])
        for r, c in mine:
            ctx.check_stop()
            g0 = float(stored["map_conductance_s"][r, c])
            g = ctx.read(r, c, settings).conductance_s
            pulses, ok = 0, True
            if abs(g - g0) > self._threshold(p, g0, noise, restore=True):
                known = {1: stored["set_moves_at_v"][r, c], -1: stored["reset_moves_at_v"][r, c]}
                quiet = {1: stored["set_quiet_v"][r, c], -1: stored["reset_quiet_v"][r, c]}
                back = 2.0 * p["restore_step_v"]
                start = {
                    pol: (v - back if math.isfinite(v) else max(quiet[pol], p["probe_start_v"]))
                    for pol, v in known.items()
                }
                pulses, g, ok = self._restore(ctx, r, c, g0, g, start, known, quiet, noise)
                ctx.parameter(r, c, "set_moves_at_v", known[1], "V")
                ctx.parameter(r, c, "reset_moves_at_v", known[-1], "V")
                ctx.parameter(r, c, "set_quiet_v", quiet[1], "V")
                ctx.parameter(r, c, "reset_quiet_v", quiet[-1], "V")
            ctx.parameter(r, c, "settle_pulses", float(pulses))
            ctx.parameter(r, c, "settled_conductance_s", g, "S")
            ctx.parameter(r, c, "settled", 1.0 if ok else 0.0)

    @staticmethod
    def _threshold(
        p: dict[str, Any], g0: float, noise: NoiseModel, *, restore: bool = False
    ) -> float:
        """Smallest change (S) counted as a move of a device read ``g0`` on the map: the
        difference of one read and the averaged map read has sigma
        ``sigma(G) sqrt(1 + 1/averages)``."""
        sigma_diff = noise.sigma(g0) * math.sqrt(1.0 + 1.0 / p["averages"])
        if restore:
            # Putting back: two sigma (a device on target reads outside it 5 % of the
            # time and costs one more pulse), so that low-conductance devices, where the
            # read noise is a large part of G, are put back close too.
            return max(p["restore_tolerance_rel"] * abs(g0), 2.0 * sigma_diff)
        return max(p["min_change_rel"] * abs(g0), p["noise_sigmas"] * sigma_diff)

    def _probe(self, ctx: SweepContext, r: int, c: int, g0: float, noise: NoiseModel) -> _Probe:
        p = ctx.params
        settings = self._probe_settings(p)
        scheme: WriteScheme = p["scheme"]
        top = self._top(p, ctx.station.limits)
        step = p["probe_step_v"]
        threshold = self._threshold(p, g0, noise)
        quiet = {1: 0.0, -1: 0.0}
        # Moved off its map read before any pulse of its own (the half-selected pulses of
        # devices probed earlier): functional, since stuck devices never move.
        g = ctx.read(r, c, settings).conductance_s
        if abs(g - g0) > threshold:
            confirm = ctx.read(r, c, settings).conductance_s
            if abs(confirm - g0) > 0.5 * threshold and (confirm - g0) * (g - g0) > 0:
                return _Probe(True, math.nan, 0, confirm, quiet[1], quiet[-1])
        pulses = 0
        n_steps = int(math.floor((top - p["probe_start_v"]) / step + 1e-9)) + 1
        for k in range(n_steps):
            amplitude = min(p["probe_start_v"] + k * step, top)
            for polarity in (1, -1):
                ctx.pulse(r, c, polarity * amplitude, p["width_s"], scheme=scheme)
                pulses += 1
                g = ctx.read(r, c, settings).conductance_s
                if polarity * (g - g0) > threshold:
                    confirm = ctx.read(r, c, settings).conductance_s
                    if polarity * (confirm - g0) > 0.5 * threshold:
                        return _Probe(
                            True, polarity * amplitude, pulses, confirm, quiet[1], quiet[-1]
                        )
                    g = confirm
                quiet[polarity] = amplitude
        return _Probe(False, math.nan, pulses, g, quiet[1], quiet[-1])

    def _restore(
        self, ctx: SweepContext, r: int, c: int, g0: float, g: float,
        start: dict[int, float], known: dict[int, float], quiet: dict[int, float],
        noise: NoiseModel,
    ) -> tuple[int, float, bool]:  # fmt: skip
        """Write-verify device (r, c) from its last read ``g`` back to ``g0`` (S).

        ``start[polarity]``: the first amplitude (V) to try in that polarity (one seen not
        to move the device, or just below one that did); ``known[polarity]`` (updated
        here): the last amplitude seen to move it, NaN if none. While a polarity has not
        moved the device its amplitude rises by ``probe_step_v``; once it has, by
        ``restore_step_v`` when a pulse falls short of a third of the way, and it drops by
        ``restore_step_v`` after an overshoot. ``quiet[polarity]`` (updated here): the
        largest amplitude seen not to move it; a polarity that did not move it at the top
        of the ramp is given up (a device saturated at an edge of its window, or with a
        threshold beyond the write limit) rather than hammered at the write limit, which
        would disturb every other device. Returns (pulses, last read, within
        tolerance)."""
        p = ctx.params
        settings = self._probe_settings(p)
        scheme: WriteScheme = p["scheme"]
        top = self._top(p, ctx.station.limits)
        floor_v = 0.5 * p["probe_start_v"]
        tolerance = self._threshold(p, g0, noise, restore=True)
        amplitude = {pol: min(max(v, floor_v), top) for pol, v in start.items()}
        pulses = 0
        while pulses < p["restore_max_pulses"]:
            if abs(g - g0) <= tolerance:
                return pulses, g, True
            pol = 1 if g < g0 else -1
            if quiet[pol] >= top - 1e-9:
                break  # this polarity does not move the device within the write limit
            a = amplitude[pol]
            ctx.pulse(r, c, pol * a, p["width_s"], scheme=scheme)
            pulses += 1
            g_new = ctx.read(r, c, settings).conductance_s
            change = pol * (g_new - g)
            moved = change > max(
                0.5 * p["min_change_rel"] * abs(g),
                p["noise_sigmas"] * noise.sigma(g) * math.sqrt(2.0),
            )
            if pol * (g_new - g0) > tolerance:  # overshoot: gentler next time
                known[pol] = a if moved else known[pol]
                amplitude[pol] = max(a - p["restore_step_v"], floor_v)
            elif not moved:
                quiet[pol] = max(quiet[pol], a)
                rise = p["restore_step_v"] if math.isfinite(known[pol]) else p["probe_step_v"]
                amplitude[pol] = min(a + rise, top)
            else:
                known[pol] = a
                if change < abs(g0 - g) / 3.0:
                    # no need to go far above an amplitude that moved it (spares the others)
                    amplitude[pol] = min(a + p["restore_step_v"], top, a + 2 * p["probe_step_v"])
            g = g_new
        return pulses, g, abs(g - g0) <= tolerance

    # -- results --------------------------------------------------------------------------
    def finish(self, ctx: SweepContext) -> ProfileUpdate:
        names = [
            "map_conductance_s", "map_sigma_s", "defect_class", "moved_at_v", "probe_pulses",
            "restore_pulses", "restored", "settle_pulses", "settled",
        ]  # fmt: skip
        got = ctx.chain_parameters(names)
        g = got["map_conductance_s"]
        cls_f = got["defect_class"]
        defect = np.where(np.isfinite(cls_f), cls_f, -1).astype(np.int8)
        measured = defect >= 0
        noise = fit_noise_model(g, got["map_sigma_s"])
        moved = got["moved_at_v"]
        pulses = got["probe_pulses"] + got["restore_pulses"] + np.nan_to_num(got["settle_pulses"])
        functional = defect == FUNCTIONAL
        summary: dict[str, Any] = {
            "devices": int(measured.sum()),
            "functional": int(functional.sum()),
            "stuck_off": int((defect == STUCK_OFF).sum()),
            "stuck_on": int((defect == STUCK_ON).sum()),
            "stuck_split_s": ctx.params["stuck_split_s"],
            "noise_model": {"abs_s": noise.abs_s, "rel": noise.rel},
            "conductance_median_s": _nanstat(np.nanmedian, g),
            "moved_at_v_median": _nanstat(np.nanmedian, np.abs(moved)),
            "moved_by_set_fraction": (
                float(np.mean(moved[functional] > 0)) if functional.any() else None
            ),
            "pulses_per_device_mean": _nanstat(np.nanmean, pulses[measured]),
            "probe_pulses_per_device_mean": _nanstat(np.nanmean, got["probe_pulses"][measured]),
            "restore_pulses_per_device_mean": _nanstat(np.nanmean, got["restore_pulses"][measured]),
            "restored_fraction": (
                float(np.nanmean(got["restored"][functional])) if functional.any() else None
            ),
            "settle_pulses_per_device_mean": _nanstat(
                np.nanmean, np.nan_to_num(got["settle_pulses"])[measured]
            ),
            "settled_fraction": _nanstat(np.nanmean, got["settled"][functional]),
        }
        g_out = np.where(measured, g, np.nan)
        return ProfileUpdate(
            arrays={"conductance_s": g_out, "defect_class": defect}, summary=summary
        )


def _nanstat(fn: Any, values: np.ndarray) -> float | None:
    values = np.asarray(values, dtype=float)
    if not np.isfinite(values).any():
        return None
    return float(fn(values))
