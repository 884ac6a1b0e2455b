"""The ``iv`` sweep: DC staircase, return-to-zero ("pulsed") I-V and switching loops.

Per device of a sample (every device with ``sample`` 0):

1. **Read-range staircase** (DC, ``iv-dc`` trace): the device routed alone (``board.select(
   row, col, unselected="track")``: unselected columns follow SMU A, unselected rows
   grounded, so A measures the selected device only) and a list sweep stored in the SMU's
   buffer (:meth:`SourceMeter.sweep_trace`): 0 -> +``read_max_v`` (0.3 V) -> 0 (and -> -``read_max_v``
   -> 0 with ``bidirectional``), ``read_points`` levels per quarter, ``repeats`` times.
   The nonlinearity comes from the devices docs' I-V ``I = G V (1 + b V^2)``: ``I/V = G + G b
   V^2`` is a straight line in ``V^2`` (a fit with the read noise's relative weighting),
   levels with ``|V| < read_max_v / 4`` left out (the instrument's absolute noise dominates
   ``I/V`` there). Profile array ``iv_nonlinearity`` = ``b (0.2 V)^2``: what the cubic term
   adds to the conductance at the 0.2 V read (devices docs' definition).
2. **Return-to-zero I-V** (``iv-pulsed`` trace, with ``pulsed``): the same levels, each
   followed by a 0 V level in one list sweep (``[v1, 0, v2, 0, ...]``): the device rests at
   0 V between readings. No SMU role offers a hardware-pulsed list sweep (see *Limits*):
   the "pulse" is one list-sweep step (source delay + ``nplc`` integration, about 17 ms
   at 1 PLC). Its own fit is stored as ``iv_nonlinearity_pulsed``.
3. **Switching loops** (``iv-loop`` traces, with ``loops`` > 0; two-channel SMUs only):
   0 -> +``loop_set_v`` -> 0 -> -``loop_reset_v`` -> 0 in ``loop_step_v`` steps, amplitudes
   checked against the station's write limit (purpose ``"write"``). A loop at write
   amplitudes must not put the full voltage on other devices: with the read routing
   ("track") every device off the selected row and column would see -V. The loop routes
   the V/2 scheme instead: selected row on SMU A at V, selected column grounded,
   unselected columns following A (the row's other devices see 0 V, so A still measures
   the selected device alone), unselected rows following SMU B held at V/2 (the column's
   other devices see V/2, all others -V/2). B must follow A level by level, so the loop is
   stepped point by point (``set_voltage`` on B and A, ``measure_current`` on A), not as
   a one-channel list sweep. Extracted: ``iv_loop_set_v`` (first level at which
   ``I/V`` is twice the loop's starting conductance) and ``iv_loop_reset_v`` (first
   negative level at which it is below half the largest), NaN when the loop did not
   switch. A loop changes the device's state: it is read (0.2 V, averaged) before the
   loops and set back to that conductance afterwards
   (:func:`nvmlab.characterization.states.set_conductance`, +-5 %); the result is stored
   as ``iv_restore_error_rel``. Loops are off by default (``loops`` 0): their V/2 stress
   (up to 0.9 V on every other device for the whole loop, at 0.01 PLC per level) disturbs
   the array. Measured on default 6 x 6 chips (seeds 3 and 8), one loop on each of 5
   devices moved the 31 others by a median 4-6 %, 12-13 of them by more than 10 %. The
   loop's set level lay 0.2-0.3 V above the 1 ms switching threshold for 9 of 10
   devices (one 0.08 V below): each level is held 0.2-0.3 ms on the emulated 2636B and
   B2902A, shorter than the threshold's 1 ms pulse.

Limits (said plainly): the role's list sweeps are DC on every model. The 2400 has no
pulse mode at all (its ``pulse`` is a source auto-clear approximation); the 2636B and
B2902A have hardware pulse modes (models registry ``pulse_mode``), but the drivers use
them for single pulses and pulse trains only, not for a pulsed list sweep
(``smua.trigger`` pulse sweeps, the B2902A's ``:FUNC:SHAP PULS`` with list source):
pulsed I-V with sub-millisecond pulses is not supported. Loops need a second channel
(the V/2 routing); on a 2400 ``loops`` must be 0. The read-range staircase holds the
selected device's column-mates at 0 V but puts -V on every device off the selected row
and column (the "track" routing's property), and the selected device sees the full V:
a read-range staircase must not write, and 0.4 V does. With switching floors down to
0.25 V (half the lowest threshold, 0.5 V), a default-physics 16 x 16 chip measured to
0.4 V had single devices move by up to +250 % (set at +0.4 V on the lowest thresholds,
seconds of cumulated hold); to 0.3 V the largest change was below 2 % (the rate falls
by exp(-0.1 V / 0.05 V) and the onset factor about tenfold). Hence ``read_max_v`` 0.3 V
by default, where the cubic term still adds 13 % (b = 1.5 V^-2) and is fitted to a few %.

Units: V, A, S, s.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from nvmlab.characterization.states import set_conductance
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
from nvmlab.instruments.roles import Channel
from nvmlab.steps import Param

if TYPE_CHECKING:
    from nvmlab.storage.inventory import RegisteredChip
    from nvmlab.storage.profile import ChipProfile

__all__ = ["IVSweep", "fit_cubic", "loop_levels", "staircase_levels"]

#: Read voltage of the nonlinearity's definition (V): iv_nonlinearity = b (0.2 V)^2.
NONLINEARITY_READ_V = 0.2
#: Settings of the reads before and after the loops (state restore).
STATE_READ = ReadSettings(read_v=0.2, averages=8, nplc=1.0)
#: Compliance of the read-range staircases (A; capped at the station's current limit):
#: 300 uS at 0.4 V with the cubic term draws about 150 uA.
READ_COMPLIANCE_A = 1e-3

PARAMETERS = (
    "iv_linear_conductance_s",
    "iv_cubic_b_per_v2",
    "iv_nonlinearity",
    "iv_nonlinearity_pulsed",
    "iv_loop_set_v",
    "iv_loop_reset_v",
    "iv_restore_error_rel",
)


def staircase_levels(max_v: float, points: int, bidirectional: bool) -> np.ndarray:
    """0 -> +max -> 0 (-> -max -> 0) with ``points`` levels per quarter (V)."""
    up = np.linspace(0.0, max_v, points + 1)[1:]
    down = up[::-1][1:]
    levels = [up, down, [0.0]]
    if bidirectional:
        levels += [-up, -down, [0.0]]
    return np.concatenate([np.asarray(x, dtype=float) for x in levels])


def loop_levels(set_v: float, reset_v: float, step_v: float) -> np.ndarray:
    """A switching loop: 0 -> +set_v -> 0 -> -reset_v -> 0 in ``step_v`` steps (V)."""

    def quarter(top: float) -> np.ndarray:
        n = max(1, int(math.ceil(top / step_v - 1e-9)))
        return np.linspace(0.0, top, n + 1)[1:]

    up, down = quarter(set_v), quarter(reset_v)
    return np.concatenate([up, up[::-1][1:], [0.0], -down, -down[::-1][1:], [0.0]])


def fit_cubic(volts: np.ndarray, amps: np.ndarray, min_abs_v: float) -> tuple[float, float]:
    """Fit ``I = G V (1 + b V^2)`` to the readings with ``|V| >= min_abs_v``: the
    straight line ``I/V = G + G b V^2`` (relative noise: equal weights on I/V). Returns
    (G in S, b in V^-2); NaN when fewer than 3 levels qualify or G is not positive."""
    v = np.asarray(volts, dtype=float)
    i = np.asarray(amps, dtype=float)
    keep = np.isfinite(v) & np.isfinite(i) & (np.abs(v) >= min_abs_v)
    if np.unique(np.round(np.abs(v[keep]), 9)).size < 3:
        return math.nan, math.nan
    g_apparent = i[keep] / v[keep]
    x = v[keep] ** 2
    design = np.column_stack([np.ones_like(x), x])
    (g, gb), *_ = np.linalg.lstsq(design, g_apparent, rcond=None)
    if not g > 0:
        return math.nan, math.nan
    return float(g), float(gb / g)


def _loop_thresholds(levels: np.ndarray, amps: np.ndarray, b: float) -> tuple[float, float]:
    """Set and reset voltages of one loop (V, NaN if it did not switch): the first
    positive level where the linear conductance I / (V (1 + b V^2)) reaches twice the
    loop's starting value, the first negative level where it falls below half the
    largest of the loop."""
    b = b if math.isfinite(b) else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        g = amps / (levels * (1.0 + b * levels**2))
    valid = np.abs(levels) >= 0.1
    pos = np.flatnonzero(valid & (levels > 0))
    neg = np.flatnonzero(valid & (levels < 0))
    set_v = reset_v = math.nan
    if pos.size:
        g0 = float(np.median(g[pos[:3]]))
        hit = pos[g[pos] >= 2.0 * g0]
        if hit.size:
            set_v = float(levels[hit[0]])
    if neg.size:
        g_max = float(np.nanmax(g[valid]))
        hit = neg[g[neg] <= 0.5 * g_max]
        if hit.size:
            reset_v = float(levels[hit[0]])
    return set_v, reset_v


@register_sweep
class IVSweep(Sweep):
    kind = "iv"
    summary = "I-V: read-range DC and return-to-zero staircases (nonlinearity), switching loops"
    description = __doc__ or ""
    params = (
        Param("sample", int, 8, low=0, high=1 << 24, help="devices measured (0: every device)"),
        Param("read_max_v", float, 0.3, unit="V", low=0.05, high=10.0,
              help="largest |V| of the read-range staircase (within the station's read limit)"),
        Param("read_points", int, 20, low=3, high=200, help="staircase levels per quarter"),
        Param("repeats", int, 2, low=1, high=50, help="staircases per device (averaged)"),
        Param("nplc", float, 1.0, low=0.001, high=100.0, help="integration per reading (PLC)"),
        Param("bidirectional", bool, True, help="staircase to -read_max_v too"),
        Param("pulsed", bool, True, help="also a return-to-zero staircase (0 V between levels)"),
        Param("loops", int, 0, low=0, high=20,
              help="switching loops per device (two-channel SMUs; 0: none)"),
        Param("loop_set_v", float, 1.6, unit="V", low=0.1, high=10.0,
              help="largest positive loop level (within the station's write limit)"),
        Param("loop_reset_v", float, 1.8, unit="V", low=0.1, high=10.0,
              help="largest negative loop level, as a magnitude"),
        Param("loop_step_v", float, 0.05, unit="V", low=0.005, high=1.0, help="loop step"),
        Param("loop_nplc", float, 0.01, low=0.001, high=100.0,
              help="integration per loop reading (PLC): short, to shorten the half-select stress"),
        Param("loop_compliance_a", float, 1e-3, unit="A", low=1e-7, high=1.0,
              help="SMU compliance during loops (within the station's current limit)"),
        Param("restore", bool, True, help="set each looped device back to its earlier state"),
    )  # fmt: skip

    # -- checks and plan -------------------------------------------------------------------
    def check(self, params: dict[str, Any], chip: RegisteredChip, station: Any) -> None:
        super().check(params, chip, station)
        limits = station.limits
        if params["read_max_v"] > limits.max_read_v:
            raise ConfigError(
                f"value {params['read_max_v']:g} V is not allowed; allowed: up to the "
                f"station's read limit {limits.max_read_v:g} V",
                field="read_max_v",
            )
        if params["loops"] > 0:
            for name in ("loop_set_v", "loop_reset_v"):
                if params[name] > limits.max_write_v:
                    raise ConfigError(
                        f"value {params[name]:g} V is not allowed; allowed: up to the "
                        f"station's write limit {limits.max_write_v:g} V",
                        field=name,
                    )
            if params["loop_compliance_a"] > limits.max_current_a:
                raise ConfigError(
                    f"value {params['loop_compliance_a']:g} A is not allowed; allowed: up to "
                    f"the station's current limit {limits.max_current_a:g} A",
                    field="loop_compliance_a",
                )

    def plan(
        self, params: dict[str, Any], chip: RegisteredChip, rng: np.random.Generator,
        profile: ChipProfile | None,
    ) -> list[SweepUnit]:  # fmt: skip
        devices = choose_devices(chip, params["sample"], rng, profile=profile)
        return [SweepUnit(f"device-{r}-{c}", ((r, c),)) for r, c in devices]

    def prepare(self, ctx: SweepContext) -> None:
        if ctx.params["loops"] > 0 and "b" not in ctx.ops.smu.channels:
            raise ConfigError(
                f"value {ctx.params['loops']} is not allowed with this one-channel SMU "
                f"(channels {ctx.ops.smu.channels}): a switching loop routes the V/2 scheme "
                "through channel B; allowed: 0 (no loops) or a two-channel SMU",
                field="loops",
            )

    def estimate_s(self, params: dict[str, Any], chip: RegisteredChip | None) -> float | None:
        n = params.get("sample") or (chip.rows * chip.cols if chip else 64)
        step_s = 0.02 * params.get("nplc", 1.0) + 0.001
        quarters = 4 if params.get("bidirectional", True) else 2
        per = quarters * params.get("read_points", 20) * params.get("repeats", 2) * step_s
        if params.get("pulsed", True):
            per *= 3
        loops = params.get("loops", 1)
        if loops:
            span = params.get("loop_set_v", 1.6) + params.get("loop_reset_v", 1.8)
            per += loops * 2 * span / params.get("loop_step_v", 0.05) * 0.03 + 5.0
        return float(n * per)

    # -- one device ------------------------------------------------------------------------
    def run_unit(self, ctx: SweepContext, unit: SweepUnit) -> None:
        (row, col) = unit.devices[0]
        p = ctx.params
        smu, board = ctx.ops.smu, ctx.ops.board
        levels = staircase_levels(p["read_max_v"], p["read_points"], p["bidirectional"])
        min_v = p["read_max_v"] / 4.0
        smu.configure(
            current_limit_a=min(READ_COMPLIANCE_A, ctx.station.limits.max_current_a), nplc=p["nplc"]
        )
        board.select(row, col, unselected="track")
        vs, amps = [], []
        for _ in range(p["repeats"]):
            trace = smu.sweep_trace(levels, purpose="read")
            # source_v: measured on a 2400, programmed elsewhere; the fit uses the levels.
            ctx.writer.add_trace(
                row, col, "iv-dc", trace.source_v, trace.current_a,
                meta={"levels_v": levels.tolist(), "time_s": trace.time_s.tolist(),
                      "nplc": p["nplc"]},
            )  # fmt: skip
            vs.append(levels)
            amps.append(trace.current_a)
        g, b = fit_cubic(np.concatenate(vs), np.concatenate(amps), min_v)
        ctx.parameter(row, col, "iv_linear_conductance_s", g, "S")
        ctx.parameter(row, col, "iv_cubic_b_per_v2", b, "1/V^2")
        ctx.parameter(row, col, "iv_nonlinearity", b * NONLINEARITY_READ_V**2)
        if p["pulsed"]:
            steps = levels[levels != 0.0]
            rtz = np.column_stack([steps, np.zeros_like(steps)]).ravel()
            pv, pa = [], []
            for _ in range(p["repeats"]):
                amps_rtz = np.asarray(smu.list_sweep(rtz, purpose="read"), dtype=float)
                ctx.writer.add_trace(
                    row,
                    col,
                    "iv-pulsed",
                    steps,
                    amps_rtz[0::2],
                    meta={"return_to_v": 0.0, "nplc": p["nplc"]},
                )
                pv.append(steps)
                pa.append(amps_rtz[0::2])
            _, bp = fit_cubic(np.concatenate(pv), np.concatenate(pa), min_v)
            ctx.parameter(row, col, "iv_nonlinearity_pulsed", bp * NONLINEARITY_READ_V**2)
        ctx.ops.prepare_reads(STATE_READ)  # the SMU was reconfigured here
        if p["loops"] > 0:
            self._loops(ctx, row, col, b)

    def _loops(self, ctx: SweepContext, row: int, col: int, b: float) -> None:
        p = ctx.params
        smu, board = ctx.ops.smu, ctx.ops.board
        before = ctx.read(row, col, STATE_READ).conductance_s
        levels = loop_levels(p["loop_set_v"], p["loop_reset_v"], p["loop_step_v"])
        sets, resets = [], []
        channels: tuple[Channel, ...] = ("a", "b")
        for ch in channels:
            smu.configure(current_limit_a=p["loop_compliance_a"], nplc=p["loop_nplc"], channel=ch)
            smu.set_voltage(0.0, channel=ch)
            smu.output(True, channel=ch)
        try:
            # V/2 routing (module docstring): columns follow A, rows follow B at V/2.
            board.select(row, col, unselected="track")
            for r in range(board.rows):
                if r != row:
                    board.set_line("row", r, "track-b")
            for k in range(p["loops"]):
                ctx.check_stop()
                amps = np.empty(levels.size)
                for i, v in enumerate(levels):
                    smu.set_voltage(float(v) / 2.0, purpose="write", channel="b")
                    smu.set_voltage(float(v), purpose="write", channel="a")
                    amps[i] = smu.measure_current(channel="a")
                smu.set_voltage(0.0, channel="a")
                smu.set_voltage(0.0, channel="b")
                ctx.writer.add_trace(
                    row, col, "iv-loop", levels, amps,
                    meta={"loop": k, "routing": "v/2 (rows on B at V/2, columns tracking A)",
                          "compliance_a": p["loop_compliance_a"], "nplc": p["loop_nplc"]},
                )  # fmt: skip
                s, r_ = _loop_thresholds(levels, amps, b)
                sets.append(s)
                resets.append(r_)
        finally:
            smu.set_voltage(0.0, channel="a")
            smu.set_voltage(0.0, channel="b")
            smu.output(False, channel="b")
            board.ground_all()
            ctx.ops.prepare_reads(STATE_READ)
        ctx.parameter(row, col, "iv_loop_set_v", _nanmedian(sets), "V")
        ctx.parameter(row, col, "iv_loop_reset_v", _nanmedian(resets), "V")
        if p["restore"]:
            result = set_conductance(ctx, row, col, before, read=STATE_READ)
            ctx.parameter(
                row, col, "iv_restore_error_rel", (result.conductance_s - before) / before
            )

    # -- the chip --------------------------------------------------------------------------
    def finish(self, ctx: SweepContext) -> ProfileUpdate:
        arrays = ctx.chain_parameters(PARAMETERS)
        nl = arrays["iv_nonlinearity"]
        measured = np.isfinite(nl)
        summary: dict[str, Any] = {
            "devices": int(measured.sum()),
            "nonlinearity_definition": "b (0.2 V)^2 of I = G V (1 + b V^2), DC staircase fit",
            "read_max_v": ctx.params["read_max_v"],
        }
        for name in PARAMETERS:
            values = arrays[name][np.isfinite(arrays[name])]
            if values.size:
                summary[name] = {
                    "median": float(np.median(values)),
                    "p10": float(np.percentile(values, 10)),
                    "p90": float(np.percentile(values, 90)),
                    "n": int(values.size),
                }
        if ctx.params["loops"] > 0:
            looped = int(np.isfinite(arrays["iv_restore_error_rel"]).sum())
            summary["loops_not_switching"] = int(
                (~np.isfinite(arrays["iv_loop_set_v"]) & measured).sum()
            )
            summary["restored_devices"] = looped
        summary["unsupported"] = [
            "hardware-pulsed list sweeps (every SMU role's list sweep is DC; the iv-pulsed "
            "staircase returns to 0 V between DC steps of one reading each)",
            "switching loops on one-channel SMUs (the V/2 loop routing needs channel B)",
        ]
        return ProfileUpdate(arrays={"iv_nonlinearity": nl}, summary=summary)


def _nanmedian(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.median(finite)) if finite else math.nan
