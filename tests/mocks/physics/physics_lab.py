"""Lab procedures shared by the device-physics tests (plain functions, no instruments).

Imported by the test modules of this folder as ``physics_lab`` (pytest puts the folder on
sys.path; the name is unique in the suite)."""

from __future__ import annotations

import numpy as np

from nvmlab.mocks.physics.base import ArrayPhysics, LineBias

READ_V = 0.2


def read_conductance(
    array: ArrayPhysics, row: int, col: int, *, temperature_c: float = 25.0, noise: bool = True
) -> float:
    """Two-channel read (docs/devices.md): the selected row forced to 0.2 V, the selected column
    held at 0 V and measured, every other line grounded. Returns I / V (S)."""
    bias = LineBias.grounded(array.rows, array.cols)
    bias.row_v[row] = READ_V
    solution = array.solve(bias, temperature_c, noise=noise)
    return float(-solution.col_i[col] / READ_V)


def read_row(
    array: ArrayPhysics, row: int, *, temperature_c: float = 25.0, noise: bool = True
) -> np.ndarray:
    """Every device of ``row`` at once: row at 0.2 V, all columns held at 0 V and measured."""
    bias = LineBias.grounded(array.rows, array.cols)
    bias.row_v[row] = READ_V
    return -array.solve(bias, temperature_c, noise=noise).col_i / READ_V


def conductance_map(
    array: ArrayPhysics, *, temperature_c: float = 25.0, noise: bool = False
) -> np.ndarray:
    """The whole array, one row read at a time (S)."""
    return np.array(
        [read_row(array, r, temperature_c=temperature_c, noise=noise) for r in range(array.rows)]
    )
