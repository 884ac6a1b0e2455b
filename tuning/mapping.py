"""The mapping of network weights to differential pairs of conductances (S).

Weight ``w`` is held by two devices in adjacent columns of one row, ``G+ - G- = s w``,
both inside the conductance window ``[g_lo, g_hi]`` (S): a positive weight sets
``G+ = g_lo + s w`` and ``G- = g_lo``, a negative one ``G+ = g_lo`` and ``G- = g_lo + s |w|``,
with the scale ``s = (g_hi - g_lo) / max |W|`` (S per unit weight) of the table mapped
together (a whole weight table for ``nvmlab tune --weights``, one 64 x 64 tile in the
network analysis, whose per-tile scale the periphery divides out).

The array tuner (:mod:`nvmlab.tuning.targets`) and the network analysis
(:mod:`nvmlab.analysis`) share this one mapping, so what is analysed is what is tuned.
Units: S.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DEVICE_G_MAX_S",
    "DEVICE_G_MIN_S",
    "pair_conductances",
    "pair_scale",
    "pairs_to_weights",
]

#: The devices' conductance window (S): reset cannot bring a device below g_min, set not
#: above g_max (docs/devices.md, Nili 2020: 1-300 uS).
DEVICE_G_MIN_S = 1e-6
DEVICE_G_MAX_S = 300e-6


def pair_scale(weights: np.ndarray, g_lo_s: float, g_hi_s: float) -> float:
    """``s = (g_hi - g_lo) / max |W|`` (S per unit weight) over the finite weights; 0 when
    there is no non-zero weight."""
    finite = np.asarray(weights, dtype=float)
    finite = finite[np.isfinite(finite)]
    wmax = float(np.abs(finite).max()) if finite.size else 0.0
    return (g_hi_s - g_lo_s) / wmax if wmax > 0 else 0.0


def pair_conductances(
    weights: np.ndarray, g_lo_s: float, scale_s: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(G+, G-)`` (S) of every weight (NaN stays NaN in both), elementwise (``scale_s``
    may be an array broadcasting against the weights: one scale per tile)."""
    w = np.asarray(weights, dtype=float)
    diff = scale_s * w
    g_plus = g_lo_s + np.maximum(diff, 0.0)
    g_minus = g_lo_s + np.maximum(-diff, 0.0)
    return g_plus, g_minus


def pairs_to_weights(
    g_plus: np.ndarray, g_minus: np.ndarray, scale_s: float | np.ndarray
) -> np.ndarray:
    """The weights a pair of conductance tables (S) holds: ``(G+ - G-) / s``."""
    return (np.asarray(g_plus, dtype=float) - np.asarray(g_minus, dtype=float)) / scale_s
