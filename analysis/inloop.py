"""In the loop: vector-matrix products measured through the array against the model.

A job programs a layer into the array (the ``tune`` step, weights mapped to pairs) and
measures products through the SMU and board (the ``products`` characterization step).
:func:`compare_products` reads back what that run stored (never an instrument) and
compares every measured column current with two predictions:

- **from the targets**: ``I = V G_target``, what the network expects; and the error
  model's prediction of each column current as a distribution (400 chips drawn with the
  measured tuning error at every tuned device's target, the cubic I-V, read noise in
  amperes): the share of columns whose measured current lies in the central 95 % of it
  says whether the model accounts for what the array does;
- **from the device reads**: ``I = V G_read`` with each device's own final verification
  read (the tuner's, or the map's for devices not tuned): what remains is the array's own
  contribution (I-V nonlinearity at the lower row voltages, line resistance, sneak paths
  through the driven rows).

Errors are relative per column (``|I_meas - I_pred| / I_pred``), and for the
differential outputs of the pairs relative to the output's full scale (``V s sum |w|``
over the column: the largest the output can be).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nvmlab.analysis.errormodel import ErrorModel

__all__ = ["compare_products"]


def _chain_traces(db: Any, run_id: int, kind: str) -> list[dict[str, Any]]:
    from nvmlab.storage.query import load_traces
    from nvmlab.storage.runs import resume_chain, unit_attempts

    done = {int(a["id"]) for a in unit_attempts(db, run_id) if a["status"] == "completed"}
    with db.read_connection() as conn:
        chain = list(reversed(resume_chain(conn, run_id)))
    return [
        t for r in chain for t in load_traces(db, r, kind=kind)
        if t.get("attempt_id") is not None and int(t["attempt_id"]) in done
    ]  # fmt: skip


def compare_products(db: Any, run_id: int, model: ErrorModel, chip: str) -> dict[str, Any] | None:
    """The in-the-loop comparison of run ``run_id``'s stored products (None when the run
    measured none); see the module documentation for the figures."""
    from nvmlab.storage.profile import load_profile
    from nvmlab.storage.query import chain_tuning_outcomes as tuning_outcomes

    outputs = _chain_traces(db, run_id, "vmm")
    inputs = {int(t["meta"]["vector"]): t["y"] for t in _chain_traces(db, run_id, "vmm-input")}
    if not outputs:
        return None
    profile = load_profile(db, chip)
    rows, cols = profile.rows, profile.cols
    g_read = (
        np.array(profile.conductance_s, dtype=float) if profile.conductance_s is not None
        else np.full((rows, cols), np.nan)
    )  # fmt: skip
    g_target = g_read.copy()
    outcomes = tuning_outcomes(db, run_id)
    tuned = np.zeros((rows, cols), dtype=bool)
    algorithm_of = np.full((rows, cols), "", dtype=object)
    for r, c, target, final, status, algorithm in zip(
        outcomes["row"], outcomes["col"], outcomes["target_s"], outcomes["final_s"],
        outcomes["status"], outcomes["algorithm"], strict=True,
    ):  # fmt: skip
        if status == "skipped":
            continue
        r, c = int(r), int(c)
        g_target[r, c] = float(target)
        tuned[r, c] = True
        algorithm_of[r, c] = str(algorithm)
        if final is not None and math.isfinite(float(final)):
            g_read[r, c] = float(final)
    g_read = np.nan_to_num(g_read, nan=0.0)
    g_target = np.nan_to_num(g_target, nan=0.0)
    # the model's prediction: many chips drawn with its tuning error at every tuned
    # device's target (heavy tails and all), each column's current with read noise
    rng = np.random.default_rng(0)
    draws = 400
    g_draw = np.broadcast_to(g_read, (draws, rows, cols)).copy()
    for algorithm, tuning in model.tuning.items():
        mine = tuned & (algorithm_of == algorithm)  # each device by its own tuner's errors
        errs = tuning.sample(np.broadcast_to(g_target, g_draw.shape), rng)
        g_draw = np.where(mine, g_target * (1.0 + errs), g_draw)
    rel_target, rel_read, inside, diff_rel = [], [], [], []
    for trace in outputs:
        volts = inputs.get(int(trace["meta"]["vector"]))
        if volts is None:
            continue
        measured = np.asarray(trace["y"])
        drive = volts * model.current_factor(volts)  # the cubic I-V of the model
        pred_t = drive @ g_target
        pred_r = drive @ g_read
        drawn = np.einsum("i,dij->dj", drive, g_draw)
        noise = np.sqrt((drive**2) @ ((model.noise_rel * g_target) ** 2) + model.noise_abs_a**2)
        drawn = drawn + noise * rng.standard_normal(drawn.shape)
        lo, hi = np.quantile(drawn, [0.025, 0.975], axis=0)
        ok = pred_t > 0
        rel_target.append(np.abs(measured - pred_t)[ok] / pred_t[ok])
        rel_read.append(
            np.abs(measured - pred_r)[ok] / np.where(pred_r[ok] > 0, pred_r[ok], np.nan)
        )
        inside.append(((measured >= lo) & (measured <= hi))[ok])
        # pairs (adjacent columns): the differential output, relative to its full scale
        if cols % 2 == 0:
            d_meas = measured[0::2] - measured[1::2]
            d_pred = pred_t[0::2] - pred_t[1::2]
            full = volts.max() * np.abs(g_target[:, 0::2] - g_target[:, 1::2]).sum(axis=0)
            keep = full > 0
            diff_rel.append(np.abs(d_meas - d_pred)[keep] / full[keep])
    rt, rr, zz = (np.concatenate(a) if a else np.array([]) for a in (rel_target, rel_read, inside))
    dr = np.concatenate(diff_rel) if diff_rel else np.array([])
    return {
        "vectors": len(outputs),
        "columns_compared": int(rt.size),
        "relative_error_target_median": float(np.median(rt)) if rt.size else math.nan,
        "relative_error_target_p95": float(np.quantile(rt, 0.95)) if rt.size else math.nan,
        "relative_error_reads_median": float(np.nanmedian(rr)) if rr.size else math.nan,
        "relative_error_reads_p95": float(np.nanquantile(rr, 0.95)) if rr.size else math.nan,
        "within_95pct_share": float(np.mean(zz)) if zz.size else math.nan,
        "differential_error_full_scale_median": float(np.median(dr)) if dr.size else math.nan,
        "differential_error_full_scale_p95": float(np.quantile(dr, 0.95)) if dr.size else math.nan,
    }
