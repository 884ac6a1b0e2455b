"""The studies of the network impact: accuracy versus temperature, memory-state
optimization, defect tolerance and the error-multiplier margin, naive against mitigated.

Definitions (the network-impact issue, docs/analysis.md):

- *naive*: the full 5-100 uS window read at 0.2 V, the conventional tuner's errors, no
  temperature compensation, defects where they fall;
- *mitigated*: the adaptive tuner's errors, the window and read voltage chosen by
  :func:`optimize_state`, per-tile gain compensation of temperature, defect-aware mapping
  (with the partners of devices the tuner missed re-aimed), rows pre-distorted for the
  measured I-V nonlinearity;
- an *accuracy drop* is in percentage points against float inference, the mean over
  ``draws`` error-model draws (independent chips) with its 95 % confidence interval;
- the *error multiplier* is the factor on every random error at which the mitigated
  network first loses 1 point (the margin when the benchmark is too easy);
- the *tolerable defect rate* is where the drop reaches 1 point on the grid 0.1 % ...
  30 % (interpolated in log rate); the defect tolerance factor is mitigated / naive (not
  defined when the naive network loses 1 point without any defect), and the mapping's
  own factor is defect-aware / defect-blind at the mitigated operating point.

Every evaluation draws its chips from a generator seeded by ``seed`` alone, so two
operating points are compared on the same random chips (common random numbers).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nvmlab.analysis.errormodel import ErrorModel
from nvmlab.analysis.hardware import (
    OperatingPoint,
    array_energy_j,
    infer,
    map_network,
    sample_conductances,
)
from nvmlab.analysis.network import Network

__all__ = [
    "DEFECT_RATES",
    "Drop",
    "Evaluator",
    "TEMPERATURES_C",
    "NAIVE",
    "impact_study",
]

TEMPERATURES_C = (25.0, 40.0, 55.0, 70.0, 85.0, 100.0)
DEFECT_RATES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
#: Rates tried below the grid when the naive network already loses 1 point at 0.1 %.
LOWER_DEFECT_RATES = (3e-4, 1e-4, 3e-5, 1e-5)
#: The naive operating point (the study's baseline).
NAIVE = OperatingPoint(g_lo_s=5e-6, g_hi_s=100e-6, read_v=0.2, algorithm="conventional")
#: Windows and read voltages searched by the memory-state optimization.
WINDOW_LO_S = (1e-6, 2e-6, 3e-6, 5e-6, 10e-6)
WINDOW_HI_S = (10e-6, 15e-6, 20e-6, 30e-6, 50e-6, 75e-6, 100e-6)
READ_V = (0.1, 0.125, 0.15, 0.175, 0.2)


@dataclass
class Drop:
    """Accuracy drop (points) against float inference: mean over the draws and 95 % CI."""

    mean: float
    ci95: float
    accuracy: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class Evaluator:
    """Evaluates ``net`` on ``(x, y)`` through the tiles with ``model``'s errors."""

    net: Network
    x: np.ndarray
    y: np.ndarray
    model: ErrorModel
    draws: int = 25
    seed: int = 0
    float_accuracy: float = field(init=False)
    usage: list[np.ndarray] = field(init=False)
    evaluations: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.float_accuracy = self.net.accuracy(self.x, self.y)
        # mean input of every row of every layer (what a defect-aware map protects)
        self.usage = []
        a = self.x
        for i, (w, b) in enumerate(zip(self.net.weights, self.net.biases, strict=True)):
            u = self.net.layer_input(i, a)
            self.usage.append(u.mean(axis=0))
            a = np.maximum(self.net.input_scales[i] * (u @ w) + b, 0.0)

    def drop(self, op: OperatingPoint, *, draws: int | None = None) -> Drop:
        """The accuracy drop at ``op`` (points; see the module documentation)."""
        start = time.perf_counter()
        n = draws or self.draws
        rng = np.random.default_rng(self.seed)
        mapped = map_network(self.net, op.g_lo_s, op.g_hi_s)
        drawn = sample_conductances(mapped, self.model, op, rng, n, usage=self.usage)
        logits = infer(self.net, mapped, drawn, self.x, op, self.model, rng)
        acc = np.mean(np.argmax(logits, axis=-1) == self.y[None, :], axis=1)
        drops = (self.float_accuracy - acc) * 100.0
        self.evaluations += 1
        self.seconds += time.perf_counter() - start
        ci = 1.96 * float(np.std(drops, ddof=1)) / math.sqrt(n) if n > 1 else math.nan
        return Drop(float(drops.mean()), ci, float(acc.mean()))

    def energy_j(self, op: OperatingPoint) -> float:
        return array_energy_j(self.net, map_network(self.net, op.g_lo_s, op.g_hi_s), self.x, op)

    def worst_drop(self, op: OperatingPoint, temperatures: Sequence[float], **kw: Any) -> float:
        return max(self.drop(op.at(temperature_c=t), **kw).mean for t in temperatures)


def optimize_state(
    ev: Evaluator, base: OperatingPoint, temperatures: Sequence[float] = TEMPERATURES_C,
    *, limit_pts: float = 1.0, screen_draws: int = 8,
) -> tuple[OperatingPoint, list[dict[str, Any]]]:  # fmt: skip
    """The window and read voltage of lowest array energy whose drop stays under
    ``limit_pts`` at every temperature: candidates in order of energy, screened at the
    extreme temperatures with ``screen_draws`` draws, the first that passes confirmed
    with the full draws at every temperature. Windows below the lowest tuned target of
    the error model are not searched (the model would only extrapolate there)."""
    tuning = ev.model.tuning.get(base.algorithm)
    lowest = 0.0
    if tuning is not None:
        filled = [i for i, n in enumerate(tuning.counts) if n]
        lowest = tuning.edges_s[filled[0]] if filled else 0.0
    candidates = []
    for lo in WINDOW_LO_S:
        for hi in WINDOW_HI_S:
            if hi < 3 * lo or lo < lowest * 0.999:
                continue
            for v in READ_V:
                op = base.at(g_lo_s=lo, g_hi_s=hi, read_v=v)
                candidates.append((ev.energy_j(op), op))
    candidates.sort(key=lambda c: c[0])
    tried: list[dict[str, Any]] = []
    extremes = (min(temperatures), max(temperatures))
    for energy, op in candidates:
        screen = ev.worst_drop(op, extremes, draws=screen_draws)
        row = {"g_lo_s": op.g_lo_s, "g_hi_s": op.g_hi_s, "read_v": op.read_v,
               "energy_j": energy, "screen_worst_drop_pts": screen}  # fmt: skip
        tried.append(row)
        if screen >= limit_pts:
            continue
        worst = ev.worst_drop(op, temperatures)
        row["worst_drop_pts"] = worst
        if worst < limit_pts:
            return op, tried
    return base, tried


def _tolerable_rate(rates: Sequence[float], drops: Sequence[float], limit: float) -> float:
    """The defect rate at which the drop reaches ``limit`` (log-interpolated on the grid;
    the grid's last rate when never reached, 0 when reached already at the first)."""
    if drops[0] >= limit:
        return 0.0
    for i in range(1, len(rates)):
        if drops[i] >= limit:
            a, b = math.log(rates[i - 1]), math.log(rates[i])
            f = (limit - drops[i - 1]) / (drops[i] - drops[i - 1])
            return math.exp(a + f * (b - a))
    return rates[-1]


def error_multiplier_margin(
    ev: Evaluator, op: OperatingPoint, temperatures: Sequence[float], *, limit_pts: float = 1.0
) -> float:
    """The factor on every random error at which ``op`` first loses ``limit_pts`` at its
    worst temperature (bisection in log between 1 and 64; 1 when already beyond)."""

    def worst(k: float) -> float:
        return ev.worst_drop(op.at(error_multiplier=k), temperatures, draws=max(8, ev.draws // 2))

    if worst(1.0) >= limit_pts:
        return 1.0
    lo, hi = 1.0, 2.0
    while worst(hi) < limit_pts:
        lo, hi = hi, hi * 2
        if hi > 64:
            return math.inf
    for _ in range(6):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if worst(mid) < limit_pts else (lo, mid)
    return math.sqrt(lo * hi)


def impact_study(
    ev: Evaluator,
    *,
    temperatures: Sequence[float] = TEMPERATURES_C,
    defect_rates: Sequence[float] = DEFECT_RATES,
    naive: OperatingPoint = NAIVE,
) -> dict[str, Any]:
    """Every figure of the network impact, as documented JSON-able values
    (docs/analysis.md lists the names)."""
    model = ev.model
    algorithms = sorted(model.tuning)
    naive_alg = naive.algorithm if naive.algorithm in model.tuning else algorithms[0]
    mitigated_alg = "adaptive" if "adaptive" in model.tuning else algorithms[0]
    naive = naive.at(algorithm=naive_alg)
    base = naive.at(
        algorithm=mitigated_alg,
        compensate_temperature=True,
        defect_aware=True,
        compensate_misses=True,
        predistort=True,
    )
    best, tried = optimize_state(ev, base, temperatures)
    mitigated = best
    # the same search on a chip without defects: what the choice of memory states alone
    # buys against read noise and tuning error (a chip whose defects already cost a
    # point in the full window leaves the first search nothing to choose)
    clean, _ = optimize_state(ev, base.at(defect_rate=0.0), temperatures)
    out: dict[str, Any] = {
        "network": ev.net.name,
        "test_samples": int(len(ev.y)),
        "float_accuracy": ev.float_accuracy,
        "draws": ev.draws,
        "naive": _op_dict(naive),
        "mitigated": _op_dict(mitigated),
        "state_search_tried": len(tried),
    }
    rows: list[dict[str, Any]] = []
    for t in temperatures:
        n = ev.drop(naive.at(temperature_c=t))
        m = ev.drop(mitigated.at(temperature_c=t))
        rows.append({"temperature_c": t, "naive": n.as_dict(), "mitigated": m.as_dict()})
    out["accuracy_vs_temperature"] = rows
    out["naive_worst_drop_pts"] = max(r["naive"]["mean"] for r in rows)
    out["mitigated_worst_drop_pts"] = max(r["mitigated"]["mean"] for r in rows)
    e_naive, e_best = ev.energy_j(naive), ev.energy_j(mitigated)
    out["energy_naive_j"] = e_naive
    out["energy_mitigated_j"] = e_best
    out["energy_ratio"] = e_naive / e_best if e_best > 0 else math.nan
    out["state_search_passed"] = any(
        "worst_drop_pts" in r and r["worst_drop_pts"] < 1.0 for r in tried
    )
    out["mitigated_defect_free"] = _op_dict(clean)
    e_clean = ev.energy_j(clean)
    out["energy_ratio_defect_free"] = e_naive / e_clean if e_clean > 0 else math.nan
    out["energy_vs_window"] = [
        {"g_lo_s": r["g_lo_s"], "g_hi_s": r["g_hi_s"], "read_v": r["read_v"],
         "energy_j": r["energy_j"], "screen_worst_drop_pts": r["screen_worst_drop_pts"]}
        for r in tried
    ]  # fmt: skip
    d_rows: list[dict[str, Any]] = []
    rates = list(defect_rates)
    for rate in rates:
        n = ev.drop(naive.at(defect_rate=rate))
        m = ev.drop(mitigated.at(defect_rate=rate))
        d_rows.append({"defect_rate": rate, "naive": n.as_dict(), "mitigated": m.as_dict()})
    # a network that loses 1 point at the grid's lowest rate: extend the grid down (by
    # about 3x a step, to 1e-5) so that its tolerable rate is found, not the grid's floor
    for rate in LOWER_DEFECT_RATES:
        if d_rows[0]["naive"]["mean"] < 1.0:
            break
        if rate >= rates[0]:
            continue
        rates.insert(0, rate)
        n = ev.drop(naive.at(defect_rate=rate))
        m = ev.drop(mitigated.at(defect_rate=rate))
        d_rows.insert(0, {"defect_rate": rate, "naive": n.as_dict(), "mitigated": m.as_dict()})
    out["accuracy_vs_defect_rate"] = d_rows
    tol_n = _tolerable_rate(rates, [r["naive"]["mean"] for r in d_rows], 1.0)
    tol_m = _tolerable_rate(rates, [r["mitigated"]["mean"] for r in d_rows], 1.0)
    out["tolerable_defect_rate_naive"] = tol_n
    out["tolerable_defect_rate_mitigated"] = tol_m
    # a network over 1 point already at the lowest rate tolerates no defect at all: its
    # other errors (tuning, noise) dominate and the factor is not defined
    out["defect_tolerance_factor"] = tol_m / tol_n if tol_n > 0 else math.nan
    # the same at the mitigated point, mapping alone: defect-aware against defect-blind
    blind = mitigated.at(defect_aware=False)
    b_drops = [ev.drop(blind.at(defect_rate=r)).mean for r in rates]
    for row, value in zip(d_rows, b_drops, strict=True):
        row["mitigated_defect_blind_mean"] = value
    tol_b = _tolerable_rate(rates, b_drops, 1.0)
    out["tolerable_defect_rate_defect_blind"] = tol_b
    out["defect_tolerance_factor_mapping"] = tol_m / tol_b if tol_b > 0 else math.nan
    out["error_multiplier_margin"] = error_multiplier_margin(ev, mitigated, temperatures)
    # and without defects, at the state the defect-free search chose: the margin of the
    # random errors alone (a chip whose defects cost a point has none to show)
    out["error_multiplier_margin_defect_free"] = error_multiplier_margin(
        ev, clean.at(defect_rate=0.0), temperatures
    )
    out["evaluations"] = ev.evaluations
    out["seconds_per_evaluation"] = ev.seconds / max(ev.evaluations, 1)
    return out


def _op_dict(op: OperatingPoint) -> dict[str, Any]:
    d = asdict(op)
    d.pop("temperature_c")
    d.pop("defect_rate")
    d.pop("error_multiplier")
    return d
