"""Nodal solve of a crossbar of nonlinear two-terminal devices, floating lines included.

Every device between row line r and column line c carries

    I = G V (1 + b V^2),   V = v_row[r] - v_col[c]

(the cubic compact model of Nili 2020; G in S, b in V^-2, V in V, I in A). Driven lines
keep their voltage; each floating line settles where the sum of its device currents is
zero (Kirchhoff's current law). The device I-V is strictly monotone, so the floating-line
voltages are the unique minimum of a convex co-energy and damped Newton iteration on KCL
converges from the linear (b = 0) solution in a few steps. The Jacobian is dense but spans
only the floating lines; an all-driven bias needs no iteration at all.

Line (wire) resistance is not modelled: every line is an ideal equipotential. Segments
are 1-2 ohm on the reference chips (docs/devices.md), three orders of magnitude below the
smallest device resistance (about 3 kOhm), so the error is < 0.1 % per line on a 64 x 64
array; there is deliberately no line-resistance parameter rather than one that is ignored.
"""

from __future__ import annotations

import math

import numpy as np

from nvmlab.mocks.physics.base import LineBias, LineSolution

#: Convergence target on the largest KCL residual of any floating line (A).
KCL_TOLERANCE_A = 1e-12
#: Tiny leak to ground (S) on every floating line: pins a group of floating lines that is
#: connected to no driven line at 0 V instead of leaving the system singular.
_FLOAT_LEAK_S = 1e-18
_MAX_NEWTON_STEPS = 60


def device_currents(g: np.ndarray, b: np.ndarray | float, v: np.ndarray) -> np.ndarray:
    """Device currents (A) for conductances ``g`` (S), cubic coefficients ``b`` (V^-2) and
    device voltages ``v`` (V, row minus column)."""
    return g * v * (1.0 + b * v * v)


def solve_crossbar(g: np.ndarray, b: np.ndarray | float, bias: LineBias) -> LineSolution:
    """Settle the crossbar of devices ``g`` (S, rows x cols) with cubic term ``b`` (V^-2).

    Returns line voltages (V), driver currents (A; floating lines carry 0) and device
    currents (A, from row to column). KCL on floating lines holds to
    :data:`KCL_TOLERANCE_A`, tightened to 1e-13 of the largest possible device current
    (or to rounding, whichever is reached first).
    """
    g = np.asarray(g, dtype=float)
    rows, cols = g.shape
    row_v = np.array(bias.row_v, dtype=float)
    col_v = np.array(bias.col_v, dtype=float)
    if row_v.shape != (rows,) or col_v.shape != (cols,):
        raise ValueError(
            f"bias has {row_v.size} rows x {col_v.size} columns; the array is {rows} x {cols}"
        )
    # A sum is NaN exactly when a line floats (driven voltages are finite and far from
    # overflow): the common all-driven bias skips the search for floating lines.
    floating = math.isnan(float(row_v.sum())) or math.isnan(float(col_v.sum()))
    if floating:
        fr = np.flatnonzero(np.isnan(row_v))
        fc = np.flatnonzero(np.isnan(col_v))
        floating = bool(fr.size or fc.size)  # (+inf and -inf also sum to NaN)
    if floating:
        _settle_floating(g, b, row_v, col_v, fr, fc)
    v = np.subtract.outer(row_v, col_v)
    device_i = device_currents(g, b, v)
    row_i = device_i.sum(axis=1)
    col_i = -device_i.sum(axis=0)
    if floating:
        row_i[fr] = 0.0
        col_i[fc] = 0.0
    return LineSolution(row_v, col_v, row_i, col_i, device_i)


def _settle_floating(
    g: np.ndarray,
    b: np.ndarray | float,
    row_v: np.ndarray,
    col_v: np.ndarray,
    fr: np.ndarray,
    fc: np.ndarray,
) -> None:
    """Fill the floating entries of ``row_v`` / ``col_v`` in place (damped Newton on KCL)."""
    n_r, n_c = fr.size, fc.size
    driven = np.concatenate([row_v[~np.isnan(row_v)], col_v[~np.isnan(col_v)]])
    if driven.size == 0:
        row_v[fr] = 0.0
        col_v[fc] = 0.0
        return
    v_lo, v_hi = float(driven.min()), float(driven.max())
    b_arr = np.broadcast_to(np.asarray(b, dtype=float), g.shape)

    # Start from the linear solve (exact when b = 0), with the small-signal conductances.
    row_v[fr] = 0.0
    col_v[fc] = 0.0
    x = np.linalg.solve(*_newton_system(g, row_v, col_v, fr, fc, linear=True, b=b_arr))
    _put(row_v, col_v, fr, fc, x)
    scale = max(float(np.abs(g).max()) * max(abs(v_lo), abs(v_hi), 1e-3), 1e-30)
    # 1e-12 A, or tighter on arrays whose currents are small: the line voltages then agree
    # with an exact solve to about 1e-12 relative.
    tol = min(KCL_TOLERANCE_A, 1e-13 * scale)
    v_span = max(v_hi - v_lo, 1e-6)
    if not np.any(b_arr):
        return
    res = _residual(g, b_arr, row_v, col_v, fr, fc)
    for _ in range(_MAX_NEWTON_STEPS):
        norm = float(np.abs(res).max()) if res.size else 0.0
        if norm <= tol:
            return
        jac, _ = _newton_system(g, row_v, col_v, fr, fc, linear=False, b=b_arr)
        step = np.linalg.solve(jac, -res)
        if float(np.abs(step).max()) <= 1e-15 * v_span:
            return  # converged to rounding
        x0 = np.concatenate([row_v[fr], col_v[fc]])
        t = 1.0
        while True:
            _put(row_v, col_v, fr, fc, np.clip(x0 + t * step, v_lo, v_hi))
            new_res = _residual(g, b_arr, row_v, col_v, fr, fc)
            new_norm = float(np.abs(new_res).max())
            if new_norm < norm or t < 1e-4:
                res = new_res
                break
            t *= 0.5
    raise RuntimeError(
        f"floating-line solve did not converge: KCL residual {float(np.abs(res).max()):.3g} A "
        f"after {_MAX_NEWTON_STEPS} Newton steps (allowed {tol:.3g} A); "
        f"{n_r} floating rows, {n_c} floating columns"
    )


def _put(
    row_v: np.ndarray, col_v: np.ndarray, fr: np.ndarray, fc: np.ndarray, x: np.ndarray
) -> None:
    row_v[fr] = x[: fr.size]
    col_v[fc] = x[fr.size :]


def _residual(
    g: np.ndarray,
    b: np.ndarray,
    row_v: np.ndarray,
    col_v: np.ndarray,
    fr: np.ndarray,
    fc: np.ndarray,
) -> np.ndarray:
    """KCL residuals (A): net current leaving each floating row, entering each floating column
    (sign chosen so the Jacobian is symmetric positive definite)."""
    out = []
    if fr.size:
        v = row_v[fr, None] - col_v[None, :]
        out.append(device_currents(g[fr], b[fr], v).sum(axis=1) + _FLOAT_LEAK_S * row_v[fr])
    if fc.size:
        v = row_v[:, None] - col_v[None, fc]
        out.append(-device_currents(g[:, fc], b[:, fc], v).sum(axis=0) + _FLOAT_LEAK_S * col_v[fc])
    return np.concatenate(out)


def _newton_system(
    g: np.ndarray,
    row_v: np.ndarray,
    col_v: np.ndarray,
    fr: np.ndarray,
    fc: np.ndarray,
    *,
    linear: bool,
    b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Jacobian of :func:`_residual` over the floating lines (S) and, for ``linear``, the
    right-hand side of the b = 0 system whose solution is the linear operating point."""
    n_r, n = fr.size, fr.size + fc.size
    if linear:
        gp = g
    else:
        v = row_v[:, None] - col_v[None, :]
        gp = g * (1.0 + 3.0 * b * v * v)
    jac = np.zeros((n, n))
    rhs = np.zeros(n)
    if fr.size:
        gp_r = gp[fr]
        jac[np.arange(n_r), np.arange(n_r)] = gp_r.sum(axis=1)
        if fc.size:
            jac[:n_r, n_r:] = -gp_r[:, fc]
        if linear:
            driven_c = np.setdiff1d(np.arange(g.shape[1]), fc, assume_unique=True)
            rhs[:n_r] = gp_r[:, driven_c] @ col_v[driven_c]
    if fc.size:
        gp_c = gp[:, fc]
        jac[np.arange(n_r, n), np.arange(n_r, n)] = gp_c.sum(axis=0)
        if fr.size:
            jac[n_r:, :n_r] = -gp_c[fr].T
        if linear:
            driven_r = np.setdiff1d(np.arange(g.shape[0]), fr, assume_unique=True)
            rhs[n_r:] = gp_c[driven_r].T @ row_v[driven_r]
    jac[np.diag_indices(n)] += _FLOAT_LEAK_S
    return jac, rhs
