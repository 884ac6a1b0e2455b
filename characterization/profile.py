"""The chip profile as characterization builds it: merged sweep by sweep, exported as JSON.

Each completed sweep merges what it measured into the chip's newest stored profile
(:func:`update_profile`) and stores the result as a new profile, so the newest profile of a
chip always holds the latest measurement of every quantity, device by device: a value the
sweep did not measure (NaN; -1 in the defect map) keeps the earlier one. The profile's
``meta`` records, per sweep kind, the run it came from and that sweep's summary.

:func:`profile_json` gives the documented JSON form written by ``nvmlab profile``
(``docs/characterization.md``, *Profile JSON*).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from nvmlab.storage.profile import DEVICE_ARRAYS, SCALARS, ChipProfile, load_profile, save_profile

if TYPE_CHECKING:
    from nvmlab.characterization.sweep import ProfileUpdate
    from nvmlab.storage.database import Database

__all__ = ["JSON_ARRAYS", "merge", "profile_json", "update_profile"]

#: JSON key -> (profile array, unit, meaning) of the per-device arrays of ``nvmlab profile``.
JSON_ARRAYS: dict[str, tuple[str, str, str]] = {
    "set_threshold_v": ("set_threshold_v", "V", "set switching threshold (1 ms, +2 %)"),
    "reset_threshold_v": ("reset_threshold_v", "V", "reset switching threshold (1 ms, -2 %), negative"),
    "temp_coeff_s_per_k": ("temp_coeff_s_per_k", "S/K", "d(I(0.2 V)/0.2 V)/dT at 25 C"),
    "read_noise_rel": ("read_noise_rel", "", "sigma of one 1 PLC read / conductance, telegraph excluded"),
    "forming_voltage_v": ("forming_voltage_v", "V", "voltage at which the device formed"),
    "iv_nonlinearity": ("iv_nonlinearity", "", "b V_read^2 of I = G V (1 + b V^2)"),
    "conductance_s": ("conductance_s", "S", "conductance of the last map read"),
    "read_noise_sigma_s": ("read_noise_sigma_s", "S", "sigma of one 1 PLC read"),
    "telegraph": ("telegraph", "", "1 telegraph noise detected, 0 not"),
    "drift_per_decade_rel": ("drift_per_decade_rel", "", "conductance drift per decade of time"),
    "vth_v": ("vth_v", "V", "eFlash threshold voltage at 25 C"),
    "subthreshold_slope_v_per_decade": ("subthreshold_slope_v_per_decade", "V/dec", "eFlash subthreshold slope"),
    "vth_temp_coeff_v_per_k": ("vth_temp_coeff_v_per_k", "V/K", "eFlash Vth temperature coefficient"),
}  # fmt: skip


def merge(old: ChipProfile | None, update: ProfileUpdate, *, chip: str, kind: str,
          rows: int, cols: int, run_id: int, sweep: str) -> ChipProfile:  # fmt: skip
    """``old`` with ``update`` laid over it device by device (see the module docstring)."""
    fields: dict[str, Any] = {}
    for name in DEVICE_ARRAYS:
        before = getattr(old, name) if old is not None else None
        new = update.arrays.get(name)
        if new is None:
            fields[name] = before
            continue
        new = np.asarray(new)
        if name == "defect_class":
            base = before if before is not None else np.full((rows, cols), -1, dtype=np.int8)
            fields[name] = np.where(new >= 0, new, base).astype(np.int8)
        else:
            base = before if before is not None else np.full((rows, cols), np.nan)
            fields[name] = np.where(np.isnan(new.astype(float)), base, new)
    unknown = sorted(set(update.arrays) - set(DEVICE_ARRAYS))
    if unknown:
        raise ValueError(f"sweep {sweep!r} returned unknown profile arrays {unknown}")
    for name in SCALARS:
        value = update.scalars.get(name)
        fields[name] = value if value is not None else (getattr(old, name) if old else None)
    meta = dict(old.meta) if old is not None else {}
    from nvmlab.characterization.sweep import jsonable

    runs = dict(meta.get("runs", {}))
    runs[sweep] = run_id
    summaries = dict(meta.get("summary", {}))
    summaries[sweep] = jsonable(update.summary)
    meta["runs"] = runs
    meta["summary"] = summaries
    return ChipProfile(chip=chip, kind=kind, rows=rows, cols=cols, meta=meta, **fields)


def update_profile(
    db: Database, chip: str, update: ProfileUpdate, *, run_id: int, kind: str
) -> int:
    """Merge ``update`` (from a sweep of ``kind`` in run ``run_id``) into the newest stored
    profile of ``chip`` and store the result; return the new profile's id."""
    from nvmlab.errors import StorageError
    from nvmlab.storage.inventory import require_chip

    registered = require_chip(db, chip)
    try:
        old: ChipProfile | None = load_profile(db, chip)
    except StorageError:
        old = None
    profile = merge(
        old, update, chip=chip, kind=registered.kind, rows=registered.rows,
        cols=registered.cols, run_id=run_id, sweep=kind,
    )  # fmt: skip
    return save_profile(db, profile, run_id=run_id)


def _grid(array: np.ndarray | None, rows: int, cols: int, *, integer: bool = False) -> list[Any]:
    if array is None:
        fill: Any = -1 if integer else None
        return [[fill] * cols for _ in range(rows)]
    if integer:
        return [[int(v) for v in row] for row in np.asarray(array)]
    return [[None if not math.isfinite(float(v)) else float(v) for v in row] for row in array]


def _stats(array: np.ndarray | None) -> dict[str, Any] | None:
    if array is None:
        return None
    values = np.asarray(array, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"count": 0}
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return {
        "count": int(values.size),
        "mean": mean,
        "std": std,
        "cv": abs(std / mean) if mean else None,
        "min": float(values.min()),
        "p5": float(np.percentile(values, 5)),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
        "max": float(values.max()),
    }


def profile_json(profile: ChipProfile) -> dict[str, Any]:
    """The documented JSON form of a profile (``docs/characterization.md``)."""
    from nvmlab.characterization.sweep import jsonable

    rows, cols = profile.rows, profile.cols
    defect = profile.defect_class
    out: dict[str, Any] = {
        "format": "nvmlab-chip-profile-json",
        "version": 1,
        "chip": profile.chip,
        "kind": profile.kind,
        "rows": rows,
        "cols": cols,
        "profile_id": profile.profile_id,
        "units": {"defect": "0 functional, 1 stuck-off, 2 stuck-on, -1 not measured"},
        "defect": _grid(defect, rows, cols, integer=True),
    }
    stats: dict[str, Any] = {}
    if defect is not None:
        measured = defect >= 0
        stats["defect"] = {
            "measured": int(measured.sum()),
            "functional": int((defect == 0).sum()),
            "stuck_off": int((defect == 1).sum()),
            "stuck_on": int((defect == 2).sum()),
        }
    for key, (name, unit, meaning) in JSON_ARRAYS.items():
        array = getattr(profile, name)
        if array is None and key not in (
            "set_threshold_v", "reset_threshold_v", "temp_coeff_s_per_k", "read_noise_rel",
            "forming_voltage_v", "iv_nonlinearity",
        ):  # fmt: skip
            continue
        out[key] = _grid(array, rows, cols)
        out["units"][key] = f"{unit or 'dimensionless'}: {meaning}"
        stats[key] = _stats(array)
    out["scalars"] = profile.scalars()
    out["summary"] = stats
    out["sweeps"] = jsonable(profile.meta.get("summary", {}))
    out["run_ids"] = dict(profile.meta.get("runs", {}))
    return out
