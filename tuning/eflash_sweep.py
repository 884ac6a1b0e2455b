"""The ``tune-eflash`` sweep: :func:`~nvmlab.tuning.eflash.tune_eflash` as a job step.

Targets are cell currents (A) at the documented read bias, a rows x cols table (NPY or
CSV; NaN leaves a cell alone). The whole array is one unit: the algorithm erases every
targeted cell before it programs any, so a half-done array is redone from the erase on
resume (the pulses an interrupted attempt applied stay stored, marked interrupted). Every
read and pulse is stored through the sweep context; each cell's outcome is stored as a
tuning outcome (``target_s`` holds the target current in A for eFlash, ``final_s`` the
final averaged read, in A) and the per-cell results as parameters ``tune_eflash_*``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nvmlab.characterization.sweep import (
    ProfileUpdate,
    Sweep,
    SweepContext,
    SweepUnit,
    register_sweep,
)
from nvmlab.errors import ConfigError
from nvmlab.steps import Param
from nvmlab.tuning.eflash import EflashTuneSettings, tune_eflash
from nvmlab.tuning.targets import load_table

__all__ = ["EflashTuneSweep"]


def _targets(params: dict[str, Any], rows: int, cols: int) -> np.ndarray:
    table = load_table(params["targets"], "targets")
    if table.shape != (rows, cols):
        raise ConfigError(
            f"table of shape {table.shape} is not allowed; the chip is {rows} x {cols} "
            "(one target current per cell in A, NaN to leave a cell alone)",
            field="targets",
        )
    s = EflashTuneSettings()
    finite = table[np.isfinite(table)]
    bad = finite[(finite < s.min_target_a) | (finite > s.max_target_a)]
    if bad.size:
        raise ConfigError(
            f"value {float(bad[0]):g} A is not allowed; targets must lie within "
            f"{s.min_target_a:g}..{s.max_target_a:g} A (or be NaN)",
            field="targets",
        )
    return table


@register_sweep
class EflashTuneSweep(Sweep):
    kind = "tune-eflash"
    summary = "program an eFlash array to target cell currents (erase, then model-based program)"
    description = __doc__ or ""
    array_kinds = ("eflash",)
    params = (
        Param("targets", str, None, required=True, path="in",
              help="target cell currents (A), .npy or .csv, rows x cols"),
        Param("tolerance", float, 0.01, "", 0.001, 0.2, help="relative tolerance"),
        Param("max_pulses", int, 200, "", 10, 10_000, help="pulses per cell at most"),
        Param("verify_passes", int, 2, "", 0, 10, help="verification passes"),
    )  # fmt: skip

    def check(self, params: dict[str, Any], chip: Any, station: Any) -> None:
        _targets(params, chip.rows, chip.cols)

    def plan(self, params: dict[str, Any], chip: Any, rng: Any, profile: Any) -> list[SweepUnit]:
        return [SweepUnit("array")]

    def estimate_s(self, params: dict[str, Any], chip: Any) -> float | None:
        if chip is None:
            return None
        n = int(np.isfinite(_targets(params, chip.rows, chip.cols)).sum())
        return n * 0.6

    def run_unit(self, ctx: SweepContext, unit: SweepUnit) -> None:
        p = ctx.params
        targets = _targets(p, ctx.chip.rows, ctx.chip.cols)
        settings = EflashTuneSettings(
            tolerance_rel=p["tolerance"], max_pulses=p["max_pulses"],
            verify_passes=p["verify_passes"],
        )  # fmt: skip
        result = tune_eflash(ctx, targets, settings, clock=ctx.clock)
        for cell in result.cells:
            if cell.outcome == "skipped":
                continue
            final = cell.current_a if math.isfinite(cell.current_a) else None
            ctx.writer.add_tuning_outcome(
                cell.row, cell.col, target_s=cell.target_a, final_s=final,
                pulse_count=cell.pulses, status=cell.outcome, algorithm="eflash-model",
                error_rel=cell.error_rel if final is not None else None,
            )  # fmt: skip
            ctx.parameter(cell.row, cell.col, "tune_eflash_current_a", cell.current_a, "A")
            ctx.parameter(cell.row, cell.col, "tune_eflash_pulses", float(cell.pulses))

    def finish(self, ctx: SweepContext) -> ProfileUpdate:
        records = ctx.chain_records(
            "tuning_outcomes", ["row", "col", "target_s", "final_s", "pulse_count", "status"]
        )
        status = [str(s) for s in records["status"]]
        pulses = np.asarray(records["pulse_count"], dtype=float)
        target = np.asarray(records["target_s"], dtype=float)
        final = np.array([np.nan if f is None else float(f) for f in records["final_s"]])
        err = np.abs(final / target - 1.0)
        summary: dict[str, Any] = {
            "cells": len(status),
            "outcomes": {o: status.count(o) for o in ("tuned", "failed", "stuck")},
        }
        if status:
            summary.update(
                pulses_mean=float(pulses.mean()),
                pulses_median=float(np.median(pulses)),
                pass_rate_own=float(np.mean(err <= ctx.params["tolerance"])),
            )
        return ProfileUpdate(summary=summary)
