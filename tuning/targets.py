"""Targets of an array tune: a conductance table, or network weights mapped to pairs.

A *target table* is a rows x cols table of conductances (S), read from a NumPy ``.npy``
file (a 2-D float array) or a CSV file (comma separated numbers, one line per row; an
empty cell, ``nan`` or ``NaN`` means "leave this device alone"). Lines starting with
``#`` are comments.

A *weight table* (``--weights``) is a rows x (cols / 2) table of network weights
(dimensionless, any sign; NaN: no weight). Each weight is held by a differential pair of
devices in *adjacent columns* of the same row: weight ``(i, j)`` is
``G+ = G(i, 2j)`` minus ``G- = G(i, 2j + 1)``. With the conductance window
``[g_lo, g_hi]`` (S, ``--window``) and the scale ``s = (g_hi - g_lo) / max |W|`` (S per
unit weight), a positive weight sets ``G+ = g_lo + s w`` and ``G- = g_lo``, a negative one
``G+ = g_lo`` and ``G- = g_lo + s |w|``: ``G+ - G- = s w`` and both devices stay inside the
window. The array tuner knows the pairs (:class:`TargetSet.partner`), so when one device
of a pair is stuck the other is re-aimed at ``G_stuck -+ s w`` where that lies inside the
window (the partner compensates).

What is refused, before any pulse (:class:`~nvmlab.errors.ConfigError` naming the file,
the value and what is allowed):

- a file that is not a table of numbers (unreadable, not 2-D, text that is no number);
- a table whose shape is not the chip's (rows x cols; weights: rows x cols / 2, and an
  even number of columns);
- a negative, zero or infinite conductance;
- a conductance outside what the devices and the station can reach: below
  :data:`DEVICE_G_MIN_S` or above :data:`DEVICE_G_MAX_S` (the devices' window, from the
  devices docs: reset cannot go below 1 uS, set not above 300 uS), or above what a read at
  the tuner's read voltage (0.2 V) can measure within the tuner's read compliance
  (``min(station max current, 100 uA) / 0.2 V``);
- a window outside those bounds or with ``g_lo >= g_hi``; a weight table with no finite,
  non-zero weight.

Units: S, V, A.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nvmlab.errors import ConfigError
from nvmlab.tuning.mapping import (
    DEVICE_G_MAX_S,
    DEVICE_G_MIN_S,
    pair_conductances,
    pair_scale,
)

__all__ = [
    "DEVICE_G_MAX_S",
    "DEVICE_G_MIN_S",
    "TargetSet",
    "check_targets",
    "load_table",
    "load_target_set",
    "weights_to_pairs",
]

#: Read voltage (V) and read compliance (A) of the tuner's verification reads.
READ_V = 0.2
READ_COMPLIANCE_A = 1e-4


def load_table(path: str | Path, what: str = "targets") -> np.ndarray:
    """A 2-D float table from ``path`` (``.npy`` or CSV; NaN for empty cells)."""
    p = Path(path)
    option = f"--{what}"
    if not p.is_file():
        raise ConfigError(f"{p}: no such file; allowed: an .npy or .csv table", field=option)
    if p.suffix.lower() == ".npy":
        try:
            table = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ConfigError(
                f"{p} is not a NumPy table ({exc}); allowed: a 2-D float .npy array or a CSV "
                "table of numbers",
                file=str(p),
                field=option,
            ) from None
        if not np.issubdtype(table.dtype, np.number) or np.issubdtype(
            table.dtype, np.complexfloating
        ):
            raise ConfigError(
                f"{p} holds {table.dtype} values; allowed: a 2-D array of real numbers",
                file=str(p),
                field=option,
            )
        table = np.asarray(table, dtype=float)
    else:
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{p} cannot be read as text ({exc}); allowed: a CSV table of numbers or .npy",
                file=str(p),
                field=option,
            ) from None
        rows: list[list[float]] = []
        for n, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            values = []
            for cell in line.split(","):
                cell = cell.strip()
                if cell == "":
                    values.append(math.nan)
                    continue
                try:
                    values.append(float(cell))
                except ValueError:
                    raise ConfigError(
                        f"{p} line {n}: {cell[:40]!r} is not a number; allowed: a CSV table of "
                        "numbers (empty or nan: leave alone)",
                        file=str(p),
                        field=option,
                    ) from None
            rows.append(values)
        if not rows:
            raise ConfigError(
                f"{p} holds no table; allowed: a CSV table of numbers", file=str(p), field=option
            )
        widths = {len(r) for r in rows}
        if len(widths) != 1:
            raise ConfigError(
                f"{p} is not a table: its lines have {sorted(widths)} values; allowed: the "
                "same number of values on every line",
                file=str(p),
                field=option,
            )
        table = np.array(rows, dtype=float)
    if table.ndim != 2:
        raise ConfigError(
            f"{p} holds a {table.ndim}-D array of shape {table.shape}; allowed: a 2-D table",
            file=str(p),
            field=option,
        )
    return table


def _reach_max_s(max_current_a: float | None) -> float:
    compliance = (
        READ_COMPLIANCE_A if max_current_a is None else min(max_current_a, READ_COMPLIANCE_A)
    )
    return min(DEVICE_G_MAX_S, compliance / READ_V)


def check_targets(
    targets: np.ndarray,
    rows: int,
    cols: int,
    *,
    file: str = "targets",
    max_current_a: float | None = None,
) -> None:
    """Refuse a conductance table (S) that is not rows x cols or holds values the devices
    or the station cannot reach (module docstring)."""
    if targets.shape != (rows, cols):
        raise ConfigError(
            f"{file}: table of shape {targets.shape[0]} x {targets.shape[1]}; allowed: the "
            f"chip's {rows} x {cols} (rows x cols)",
            file=file,
            field="--targets",
        )
    hi = _reach_max_s(max_current_a)
    finite = np.isfinite(targets)
    bad = np.argwhere(np.isinf(targets) | (finite & (targets <= 0)))
    if bad.size:
        r, c = map(int, bad[0])
        raise ConfigError(
            f"{file}: target {targets[r, c]!r} S at row {r}, column {c}; allowed: a "
            f"conductance from {DEVICE_G_MIN_S:g} to {hi:g} S, or NaN (leave alone)",
            file=file,
            field="--targets",
        )
    out = np.argwhere(finite & ((targets < DEVICE_G_MIN_S) | (targets > hi)))
    if out.size:
        r, c = map(int, out[0])
        raise ConfigError(
            f"{file}: target {targets[r, c]:g} S at row {r}, column {c} is beyond what the "
            f"devices and the station can reach; allowed: {DEVICE_G_MIN_S:g} to {hi:g} S (the "
            f"devices' window, and the read compliance at {READ_V:g} V), or NaN",
            file=file,
            field="--targets",
        )
    if not finite.any():
        raise ConfigError(
            f"{file}: every target is NaN; allowed: at least one conductance to tune",
            file=file,
            field="--targets",
        )


@dataclass
class TargetSet:
    """Targets (S, rows x cols, NaN: leave alone) and, for weights, the pairs:
    ``partner[(r, c)] = (r, c2, sign, weight_s)`` where ``sign`` is +1 for G+ and the
    pair's wanted difference G+ - G- is ``weight_s`` (S); ``window_s`` the window."""

    targets_s: np.ndarray
    source: str
    partner: dict[tuple[int, int], tuple[int, int, int, float]] = field(default_factory=dict)
    window_s: tuple[float, float] | None = None
    scale_s: float = math.nan

    def compensate(self, row: int, col: int, stuck_g_s: float) -> tuple[int, int, float] | None:
        """The partner of stuck device (row, col) and its new target (S) so that the pair
        still holds its weight given the stuck device's conductance ``stuck_g_s`` (S), or
        None when there is no partner or the new target leaves the window."""
        info = self.partner.get((row, col))
        if info is None or self.window_s is None or not math.isfinite(stuck_g_s):
            return None
        r2, c2, sign, diff = info
        # sign +1: the stuck one is G+, the partner G- = G+ - diff; sign -1: G+ = G- + diff
        new = stuck_g_s - diff if sign > 0 else stuck_g_s + diff
        lo, hi = self.window_s
        if not (lo <= new <= hi):
            return None
        return r2, c2, float(new)


def weights_to_pairs(
    weights: np.ndarray, window_s: tuple[float, float], *, file: str = "weights"
) -> TargetSet:
    """Map a weight table (rows x cols/2) to pair targets (rows x cols; module docstring)."""
    lo, hi = window_s
    if not (DEVICE_G_MIN_S <= lo < hi <= DEVICE_G_MAX_S):
        raise ConfigError(
            f"window {lo:g},{hi:g} S; allowed: g_lo < g_hi within {DEVICE_G_MIN_S:g} to "
            f"{DEVICE_G_MAX_S:g} S",
            field="--window",
        )
    if np.isinf(weights).any():
        raise ConfigError(
            f"{file}: an infinite weight; allowed: finite numbers or NaN", file=file,
            field="--weights",
        )  # fmt: skip
    scale = pair_scale(weights, lo, hi)
    if scale == 0.0:
        raise ConfigError(
            f"{file}: no finite non-zero weight; allowed: a table with at least one",
            file=file,
            field="--weights",
        )
    rows, half = weights.shape
    g_plus, g_minus = pair_conductances(weights, lo, scale)
    targets = np.full((rows, 2 * half), np.nan)
    targets[:, 0::2] = g_plus
    targets[:, 1::2] = g_minus
    partner: dict[tuple[int, int], tuple[int, int, int, float]] = {}
    for i, j in np.argwhere(np.isfinite(weights)):
        i, j = int(i), int(j)
        diff = scale * float(weights[i, j])
        partner[(i, 2 * j)] = (i, 2 * j + 1, 1, diff)
        partner[(i, 2 * j + 1)] = (i, 2 * j, -1, diff)
    return TargetSet(targets, file, partner, (lo, hi), scale)


def load_target_set(
    params: dict[str, Any], rows: int, cols: int, *, max_current_a: float | None = None
) -> TargetSet:
    """The targets of a tune run from its parameters ``targets`` (a table of S) or
    ``weights`` with ``window`` (S,S), checked against the chip's size and reach."""
    targets_file = params.get("targets")
    weights_file = params.get("weights")
    if (targets_file is None) == (weights_file is None):
        raise ConfigError(
            "give exactly one of --targets FILE (conductances, S) or --weights FILE "
            "(with --window G_LO,G_HI)",
            field="--targets",
        )
    if targets_file is not None:
        table = load_table(targets_file, "targets")
        check_targets(table, rows, cols, file=str(targets_file), max_current_a=max_current_a)
        return TargetSet(table, str(targets_file))
    window = params.get("window")
    if window is None or len(window) != 2:
        raise ConfigError(
            f"--weights needs --window G_LO,G_HI (S); got {window!r}", field="--window"
        )
    weights = load_table(str(weights_file), "weights")
    if cols % 2 or weights.shape != (rows, cols // 2):
        raise ConfigError(
            f"{weights_file}: weight table of shape {weights.shape[0]} x {weights.shape[1]}; "
            f"allowed: {rows} x {cols // 2} (rows x cols / 2: each weight a pair of adjacent "
            f"columns) on an even number of columns (chip: {rows} x {cols})",
            file=str(weights_file),
            field="--weights",
        )
    tset = weights_to_pairs(weights, (float(window[0]), float(window[1])), file=str(weights_file))
    check_targets(tset.targets_s, rows, cols, file=str(weights_file), max_current_a=max_current_a)
    return tset
