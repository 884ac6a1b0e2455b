"""An ideal linear resistor crossbar: a known-answer array for circuit and firmware tests.

Every device is a fixed conductance (S), ohmic at any voltage, independent of temperature,
noiseless and never switching. Floating lines are solved exactly by nodal analysis (one
linear solve), which makes it the reference against which sneak-path readings can be
checked by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nvmlab.mocks.physics.base import LineBias, LineSolution, TemperatureHistory, check_nplc
from nvmlab.mocks.physics.state import load_state_file, save_state_file


def solve_linear_crossbar(g: np.ndarray, bias: LineBias) -> LineSolution:
    """Nodal solve of a linear crossbar with conductances ``g`` (S, rows x cols).

    Driven lines keep their voltage; each floating line settles where the sum of the
    currents of its devices is zero (Kirchhoff's current law), solved as one dense system.
    """
    rows, cols = g.shape
    row_v = np.array(bias.row_v, dtype=float)
    col_v = np.array(bias.col_v, dtype=float)
    fr = np.flatnonzero(np.isnan(row_v))
    fc = np.flatnonzero(np.isnan(col_v))
    if fr.size or fc.size:
        n_r, n = fr.size, fr.size + fc.size
        a = np.zeros((n, n))
        rhs = np.zeros(n)
        dr = np.flatnonzero(~np.isnan(row_v))
        dc = np.flatnonzero(~np.isnan(col_v))
        # Floating row r: sum_c g[r,c] (v_r - v_c) = 0
        for i, r in enumerate(fr):
            a[i, i] = g[r].sum()
            a[i, n_r:] = -g[r, fc]
            rhs[i] = g[r, dc] @ col_v[dc]
        for j, c in enumerate(fc):
            k = n_r + j
            a[k, k] = g[:, c].sum()
            a[k, :n_r] = -g[fr, c]
            rhs[k] = g[dr, c] @ row_v[dr]
        # A line whose devices all lead to other floating lines only is isolated: pin it at 0 V
        # through a tiny leak so the system stays regular.
        a[np.diag_indices(n)] += 1e-18
        x = np.linalg.solve(a, rhs)
        row_v[fr] = x[:n_r]
        col_v[fc] = x[n_r:]
    device_i = g * (row_v[:, None] - col_v[None, :])
    row_i = device_i.sum(axis=1)
    col_i = -device_i.sum(axis=0)
    row_i[fr] = 0.0
    col_i[fc] = 0.0
    return LineSolution(row_v, col_v, row_i, col_i, device_i)


class ResistorArray:
    """A crossbar of fixed ohmic conductances (S); implements ``ArrayPhysics``."""

    kind = "resistor"

    def __init__(self, conductance_s: np.ndarray) -> None:
        self.g = np.array(conductance_s, dtype=float)
        self.rows, self.cols = self.g.shape

    def solve(
        self, bias: LineBias, temperature_c: float, *, noise: bool = True, nplc: float = 1.0
    ) -> LineSolution:
        """Noiseless at any ``nplc`` (checked only)."""
        check_nplc(nplc)
        return solve_linear_crossbar(self.g, bias)

    def stress(
        self,
        bias: LineBias,
        duration_s: float,
        temperature_c: float,
        *,
        count_pulse: bool = True,
    ) -> bool:
        return False

    def relax(
        self,
        elapsed_s: float,
        temperature_c: float | TemperatureHistory,
        temperature_end_c: float | None = None,
    ) -> None:
        return None

    def ground_truth(self) -> dict[str, np.ndarray]:
        return {"conductance_s": self.g.copy()}

    def save_state(self, path: Path, *, clock_s: float | None = None) -> None:
        """Write the conductances atomically (:func:`~.state.save_state_file`); ``clock_s``
        (s) is the bench clock's time, kept for the ground truth."""
        save_state_file(
            path,
            {"conductance_s": self.g},
            {
                "kind": self.kind,
                "rows": self.rows,
                "cols": self.cols,
                "clock_s": None if clock_s is None else float(clock_s),
            },
        )

    def load_state(self, path: Path) -> None:
        """Restore the conductances written by :meth:`save_state` (same size only)."""
        arrays, _ = load_state_file(path, kind=self.kind, rows=self.rows, cols=self.cols)
        self.g = np.array(arrays["conductance_s"], dtype=float)
