"""The ``endurance`` sweep: repeated set / reset cycles, the window versus cycles.

A sample of devices (default 4) is cycled ``cycles`` times: one set pulse (+``set_v``)
and one reset pulse (-``reset_v``), each ``width_s`` long, on-board under the ``scheme``
half-select scheme (default V/3), every amplitude checked against the station's write
limit. The cycles are cut into blocks of ``block_cycles``; each block is one resumable
unit covering every device. In each block the last ``reads_per_block`` cycles read the
device after the set (G_on) and after the reset (G_off) at 0.2 V; each block stores per
device the median G_on and G_off (per-device parameters ``endurance_block_NNNN_g_on_s``
/ ``_g_off_s``), and the summary gives, per block, the median over devices and the window
G_on / G_off.

Window closure is measured, never assumed: the summary's ``window_change_rel`` is the
last block's window relative to the first, and ``verdict`` says whether it closed. The
devices docs' model has no wear (no cycle-dependent term in the switching or the window:
``mocks/physics/memristor.py`` integrates the same rate law on every cycle), so on the
emulated bench the window stays open; a real chip's wear would show here as a falling
G_on / G_off.

Before the first cycle each device is read (``endurance_initial_s``); with ``restore``
the last block sets it back to that conductance
(:func:`nvmlab.characterization.states.set_conductance`, +-5 %).

Every pulse and read is stored. Half-selected devices see the V/3 stress on every pulse
(+-0.53 / 0.57 V at the default 1.6 / 1.7 V): an endurance run on a passive array
disturbs devices with low thresholds around the sample too. ``bystanders`` devices
outside the sample are read before the first and after the last block and the summary
gives their change. Measured on the default emulated 16 x 16 chip (seed 1) after 4 x 1000
cycles and the restore: the chip's median change 0.5 %, but 74 of 256 devices moved by
more than 10 % (at 1.8 / 2.0 V: median 10 %, 130 devices).

Units: V, S, s.
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
from nvmlab.steps import Param

if TYPE_CHECKING:
    from nvmlab.storage.inventory import RegisteredChip
    from nvmlab.storage.profile import ChipProfile

__all__ = ["EnduranceSweep"]

READ = ReadSettings(read_v=0.2, averages=1, nplc=1.0)
#: The reads of the state to restore (averaged: the target of the write-verify).
RESTORE_READ = ReadSettings(read_v=0.2, averages=8, nplc=1.0)
#: A window that lost more than this fraction of its first block's G_on / G_off "closed".
CLOSURE_REL = 0.2


def _block_name(block: int, which: str) -> str:
    return f"endurance_block_{block:04d}_{which}_s"


@register_sweep
class EnduranceSweep(Sweep):
    kind = "endurance"
    summary = "endurance: set/reset cycles on a sample, G_on / G_off window versus cycles"
    description = __doc__ or ""
    params = (
        Param("sample", int, 4, low=0, high=1 << 24, help="devices cycled (0: every device)"),
        Param("cycles", int, 1000, low=1, high=10_000_000, help="set/reset cycles per device"),
        Param("block_cycles", int, 100, low=1, high=1_000_000, help="cycles per block (unit)"),
        Param("reads_per_block", int, 5, low=1, high=1000,
              help="last cycles of each block read after set and after reset"),
        Param("bystanders", int, 8, low=0, high=100_000,
              help="devices outside the sample read before and after (half-select disturb)"),
        Param("set_v", float, 1.6, unit="V", low=0.1, high=10.0, help="set pulse amplitude"),
        Param("reset_v", float, 1.7, unit="V", low=0.1, high=10.0,
              help="reset pulse amplitude (magnitude; sent negative)"),
        Param("width_s", float, 1e-3, unit="s", low=1e-7, high=10.0, help="pulse width"),
        Param("scheme", str, "v/3", choices=("v/2", "v/3"), help="half-select scheme"),
        Param("restore", bool, True, help="set each device back to its first read afterwards"),
    )  # fmt: skip

    def check(self, params: dict[str, Any], chip: RegisteredChip, station: Any) -> None:
        super().check(params, chip, station)
        limits = station.limits
        for name in ("set_v", "reset_v"):
            if params[name] > limits.max_write_v:
                raise ConfigError(
                    f"value {params[name]:g} V is not allowed; allowed: up to the station's "
                    f"write limit {limits.max_write_v:g} V",
                    field=name,
                )
        if params["width_s"] > limits.max_pulse_width_s:
            raise ConfigError(
                f"value {params['width_s']:g} s is not allowed; allowed: up to the station's "
                f"longest pulse {limits.max_pulse_width_s:g} s",
                field="width_s",
            )
        if params["reads_per_block"] > min(params["block_cycles"], params["cycles"]):
            raise ConfigError(
                f"value {params['reads_per_block']} is not allowed; allowed: 1 to "
                f"{min(params['block_cycles'], params['cycles'])} (the cycles of a block)",
                field="reads_per_block",
            )

    def _blocks(self, params: dict[str, Any]) -> list[tuple[int, int]]:
        """(first cycle, cycles) of each block."""
        out, start = [], 0
        while start < params["cycles"]:
            n = min(params["block_cycles"], params["cycles"] - start)
            out.append((start, n))
            start += n
        return out

    def plan(
        self, params: dict[str, Any], chip: RegisteredChip, rng: np.random.Generator,
        profile: ChipProfile | None,
    ) -> list[SweepUnit]:  # fmt: skip
        devices = tuple(choose_devices(chip, params["sample"], rng, profile=profile))
        others = [
            (r, c) for r in range(chip.rows) for c in range(chip.cols) if (r, c) not in devices
        ]
        count = min(params["bystanders"], len(others))
        picked = sorted(rng.choice(len(others), size=count, replace=False)) if count else []
        bystanders = [[int(others[i][0]), int(others[i][1])] for i in picked]
        blocks = self._blocks(params)
        return [
            SweepUnit(
                f"block-{k:04d}",
                devices,
                {
                    "block": k,
                    "first": first,
                    "cycles": n,
                    "last": k == len(blocks) - 1,
                    "bystanders": bystanders,
                },
            )  # fmt: skip
            for k, (first, n) in enumerate(blocks)
        ]

    def estimate_s(self, params: dict[str, Any], chip: RegisteredChip | None) -> float | None:
        n = params.get("sample") or (chip.rows * chip.cols if chip else 4)
        per_cycle = 2 * (params.get("width_s", 1e-3) + 0.002)
        reads = len(self._blocks(params)) * params.get("reads_per_block", 5) * 2 * 0.025
        return float(n * (params.get("cycles", 1000) * per_cycle + reads))

    def run_unit(self, ctx: SweepContext, unit: SweepUnit) -> None:
        p = ctx.params
        block, n = int(unit.info["block"]), int(unit.info["cycles"])
        bystanders = [(int(r), int(c)) for r, c in unit.info.get("bystanders", [])]
        if block == 0:  # every device's state before any is cycled (cycling disturbs)
            for row, col in unit.devices:
                g0 = ctx.read(row, col, RESTORE_READ).conductance_s
                ctx.parameter(row, col, "endurance_initial_s", g0, "S")
            for row, col in bystanders:
                g0 = ctx.read(row, col, RESTORE_READ).conductance_s
                ctx.parameter(row, col, "endurance_bystander_before_s", g0, "S")
        for row, col in unit.devices:
            ctx.check_stop()
            g_on, g_off = [], []
            for i in range(n):
                ctx.pulse(row, col, p["set_v"], p["width_s"], scheme=p["scheme"])
                reading = i >= n - p["reads_per_block"]
                if reading:
                    g_on.append(ctx.read(row, col, READ).conductance_s)
                ctx.pulse(row, col, -p["reset_v"], p["width_s"], scheme=p["scheme"])
                if reading:
                    g_off.append(ctx.read(row, col, READ).conductance_s)
            ctx.parameter(row, col, _block_name(block, "g_on"), float(np.median(g_on)), "S")
            ctx.parameter(row, col, _block_name(block, "g_off"), float(np.median(g_off)), "S")
        if unit.info["last"] and p["restore"]:
            initial = ctx.chain_parameters(["endurance_initial_s"])["endurance_initial_s"]
            for row, col in unit.devices:
                target = float(initial[row, col])
                if math.isfinite(target) and target > 0:
                    ctx.check_stop()
                    done = set_conductance(ctx, row, col, target)
                    ctx.parameter(
                        row, col, "endurance_restore_error_rel",
                        done.conductance_s / target - 1.0,
                        text=None if done.reached else "not reached",
                    )  # fmt: skip
        if unit.info["last"]:
            for row, col in bystanders:
                g1 = ctx.read(row, col, RESTORE_READ).conductance_s
                ctx.parameter(row, col, "endurance_bystander_after_s", g1, "S")

    def finish(self, ctx: SweepContext) -> ProfileUpdate:
        p = ctx.params
        blocks = self._blocks(p)
        names = [_block_name(k, w) for k in range(len(blocks)) for w in ("g_on", "g_off")]
        values = ctx.chain_parameters(names)
        cycles, g_on_s, g_off_s, window = [], [], [], []
        per_device: dict[str, list[float]] = {}
        for k, (first, n) in enumerate(blocks):
            on = values[_block_name(k, "g_on")]
            off = values[_block_name(k, "g_off")]
            ok = np.isfinite(on) & np.isfinite(off)
            cycles.append(first + n)
            g_on_s.append(float(np.median(on[ok])) if ok.any() else math.nan)
            g_off_s.append(float(np.median(off[ok])) if ok.any() else math.nan)
            window.append(float(np.median(on[ok] / off[ok])) if ok.any() else math.nan)
            for r, c in zip(*np.nonzero(ok), strict=True):
                per_device.setdefault(f"{r},{c}", []).append(float(on[r, c] / off[r, c]))
        drop = window[-1] / window[0] - 1.0 if window and window[0] > 0 else math.nan
        closed = math.isfinite(drop) and drop < -CLOSURE_REL
        verdict = (
            f"window closed by {-drop:.0%} over {cycles[-1]} cycles"
            if closed
            else f"window stays open over {cycles[-1]} cycles (G_on/G_off change {drop:+.1%})"
        )
        restore = ctx.chain_parameters(["endurance_restore_error_rel"])[
            "endurance_restore_error_rel"
        ]
        restored = restore[np.isfinite(restore)]
        by = ctx.chain_parameters(["endurance_bystander_before_s", "endurance_bystander_after_s"])
        b0, b1 = by["endurance_bystander_before_s"], by["endurance_bystander_after_s"]
        both = np.isfinite(b0) & np.isfinite(b1) & (b0 > 0)
        change = np.abs(b1[both] / b0[both] - 1.0)
        bystander_summary = {
            "devices": int(both.sum()),
            "median_abs_change_rel": float(np.median(change)) if change.size else None,
            "max_abs_change_rel": float(np.max(change)) if change.size else None,
            "changed_over_10pct": int((change > 0.1).sum()),
            "note": "devices outside the sample, read before the first and after the last "
            "block (restore included): the half-select stress of the cycling",
        }
        summary = {
            "bystanders": bystander_summary,
            "restore_within_5pct": int((np.abs(restored) <= 0.05).sum()),
            "restore_attempted": int(restored.size),
            "plot": {"cycles": cycles, "g_on_s": g_on_s, "g_off_s": g_off_s},
            "window": window,
            "window_change_rel": drop,
            "window_closed": bool(closed),
            "verdict": verdict,
            "window_per_device": per_device,
            "set_v": p["set_v"],
            "reset_v": -p["reset_v"],
            "width_s": p["width_s"],
        }
        return ProfileUpdate(summary=summary)
