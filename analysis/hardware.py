"""A network on 64 x 64 tiles of passive crossbars, with a chip's errors, vectorized.

**Mapping** (:func:`map_network`): each dense layer (inputs x outputs) is cut into tiles
of ``TILE`` rows x ``TILE / 2`` pairs; weight ``w`` is the pair ``G+ - G- = s w`` of
:mod:`nvmlab.tuning.mapping` (the tuner's own mapping) with the tile's own scale
``s = (g_hi - g_lo) / max |W_tile|``. Rows are driven at ``u V_read`` (``u`` the layer's
input in [0, 1]); each column's current is sensed at virtual ground; the periphery takes
``(I+ - I-) / (V_read s)`` per tile (per-tile output scaling), sums the tiles of one
output and adds the bias digitally.

**Errors** (:func:`sample_conductances`), drawn from an :class:`~nvmlab.analysis.
errormodel.ErrorModel` for each of ``draws`` independent chips, in this order: tuning
error (the algorithm's measured distribution at each target), temperature (the model's
dG/dT at the device's state, plus its device spread), relaxation since tuning, defects
(stuck-off / stuck-on at the measured or a given rate). Read noise is added to each
column current (device part from each device's current, the absolute part per read).
``error_multiplier`` scales every random error (tuning, temperature spread, relaxation,
noise) together.

**Mitigations** (an :class:`OperatingPoint`'s switches): ``predistort`` sets each row's
DAC voltage so that the devices' cubic I-V (the model's measured ``b``) passes a current
proportional to the input; ``compensate_misses`` re-aims the partner of every device the
verification read after tuning finds stuck or off by more than ``FAILED_REL`` (the
tuner's pair compensation); ``compensate_temperature``
divides each tile's output by its gain change ``1 + c1 dT`` (the pair difference already
cancels the state-independent part of dG/dT; a reference column measures the gain on the
chip); ``defect_aware`` maps around the known defects: logical rows and pairs of each tile
are permuted onto physical ones (rows whose input is mostly zero, spare rows and pairs
take the defects; an assignment solved with the Hungarian method) and the partner of a
stuck device is re-aimed so the pair keeps its weight where the devices' reach allows.

**Energy** (:func:`array_energy_j`): per inference, the sum over the mapped devices of
``(u V_read)^2 G t_read``, the memory arrays only, as the study counts it.

Units: S, V, A, s, C, J.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from nvmlab.analysis.errormodel import ErrorModel
from nvmlab.analysis.network import Network
from nvmlab.tuning.mapping import DEVICE_G_MAX_S, DEVICE_G_MIN_S, pair_conductances, pair_scale

__all__ = [
    "TILE",
    "MappedLayer",
    "OperatingPoint",
    "array_energy_j",
    "infer",
    "map_network",
    "sample_conductances",
]

TILE = 64
PAIRS = TILE // 2
#: A device the verification read finds off by more than this (relative) after tuning
#: counts as missed: with a defect-aware mapping its partner is re-aimed.
FAILED_REL = 0.05


@dataclass(frozen=True)
class OperatingPoint:
    """Where and how the network runs: window (S), read voltage (V), chamber temperature
    (C), the tuning algorithm whose errors apply, time since tuning (s), the defect rate
    (None: the chip's measured rates), the mitigations and the error multiplier."""

    g_lo_s: float = 5e-6
    g_hi_s: float = 100e-6
    read_v: float = 0.2
    temperature_c: float = 25.0
    algorithm: str = "adaptive"
    since_tuning_s: float = 3600.0
    defect_rate: float | None = None
    compensate_temperature: bool = False
    defect_aware: bool = False
    compensate_misses: bool = False
    predistort: bool = False
    error_multiplier: float = 1.0
    t_read_s: float = 1e-6

    def at(self, **changes: object) -> OperatingPoint:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass
class MappedLayer:
    """One layer on ``(row tiles, column tiles)`` tiles: targets of G+ and G- (S, shape
    ``(rt, ct, TILE, PAIRS)``, g_lo on padding), the weights as tiled, the per-tile scale
    (S per unit weight) and the mask of the pairs holding a weight."""

    inputs: int
    outputs: int
    g_plus: np.ndarray
    g_minus: np.ndarray
    weights: np.ndarray
    scale: np.ndarray
    used: np.ndarray


def map_layer(w: np.ndarray, g_lo_s: float, g_hi_s: float) -> MappedLayer:
    inputs, outputs = w.shape
    rt, ct = -(-inputs // TILE), -(-outputs // PAIRS)
    tiled = np.zeros((rt, ct, TILE, PAIRS))
    used = np.zeros((rt, ct, TILE, PAIRS), dtype=bool)
    padded = np.zeros((rt * TILE, ct * PAIRS))
    padded[:inputs, :outputs] = w
    mask = np.zeros_like(padded, dtype=bool)
    mask[:inputs, :outputs] = True
    for r in range(rt):
        for c in range(ct):
            tiled[r, c] = padded[r * TILE : (r + 1) * TILE, c * PAIRS : (c + 1) * PAIRS]
            used[r, c] = mask[r * TILE : (r + 1) * TILE, c * PAIRS : (c + 1) * PAIRS]
    scale = np.array(
        [[pair_scale(tiled[r, c], g_lo_s, g_hi_s) for c in range(ct)] for r in range(rt)]
    )
    scale = np.where(scale > 0, scale, (g_hi_s - g_lo_s))
    g_plus, g_minus = pair_conductances(tiled, g_lo_s, scale[:, :, None, None])
    return MappedLayer(inputs, outputs, g_plus, g_minus, tiled, scale, used)


def map_network(net: Network, g_lo_s: float, g_hi_s: float) -> list[MappedLayer]:
    """Every layer of ``net`` mapped onto tiles in the window ``[g_lo, g_hi]`` (S)."""
    return [map_layer(w, g_lo_s, g_hi_s) for w in net.weights]


# ------------------------------------------------------------------------------ defects


def _pair_error(
    w: np.ndarray, scale: float, g_lo: float, stuck_p: np.ndarray, stuck_m: np.ndarray,
    compensate: bool,
) -> np.ndarray:  # fmt: skip
    """Weight error (weight units) of pairs holding ``w`` when G+ / G- are stuck at
    ``stuck_p`` / ``stuck_m`` (S; NaN: not stuck), the partner re-aimed or not."""
    gp, gm = pair_conductances(w, g_lo, scale)
    sp, sm = ~np.isnan(stuck_p), ~np.isnan(stuck_m)
    ap = np.where(sp, stuck_p, gp)
    am = np.where(sm, stuck_m, gm)
    if compensate:
        am = np.where(sp & ~sm, np.clip(ap - scale * w, DEVICE_G_MIN_S, DEVICE_G_MAX_S), am)
        ap = np.where(sm & ~sp, np.clip(am + scale * w, DEVICE_G_MIN_S, DEVICE_G_MAX_S), ap)
    return (ap - am) / scale - w


def _assign(cost: np.ndarray) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost)
    out = np.empty(cost.shape[0], dtype=int)
    out[rows] = cols
    return out


def _aware_tile(
    w: np.ndarray, scale: float, g_lo: float, stuck_p: np.ndarray, stuck_m: np.ndarray,
    usage: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """One tile mapped around its defects: the logical row -> physical row and pair ->
    pair assignment minimizing the input-weighted weight error left after partner
    compensation (``usage``: mean input of each logical row); returns the weights as
    placed on the physical tile and the two assignments."""
    rows, pairs = w.shape
    row_of = np.arange(rows)
    pair_of = np.arange(pairs)
    for _round in range(2):
        # pairs: cost[j, p] = sum_i usage_i |err(w_ij at (row_of[i], p))|
        sp, sm = stuck_p[row_of], stuck_m[row_of]  # (rows, physical pairs)
        err = np.abs(_pair_error(w[:, :, None], scale, g_lo, sp[:, None, :], sm[:, None, :], True))
        cost = np.einsum("i,ijp->jp", usage, err)
        pair_of = _assign(cost)
        # rows: cost[i, r] = usage_i sum_j |err(w_ij at (r, pair_of[j]))|
        sp, sm = stuck_p[:, pair_of], stuck_m[:, pair_of]  # (physical rows, pairs)
        err = np.abs(_pair_error(w[:, None, :], scale, g_lo, sp[None], sm[None], True))
        cost = usage[:, None] * err.sum(axis=2)
        row_of = _assign(cost)
    # physical weights: logical (i, j) at (row_of[i], pair_of[j]); spares hold 0
    phys_w = np.zeros_like(w)
    phys_w[np.ix_(row_of, pair_of)] = w
    return phys_w, row_of, pair_of


# ------------------------------------------------------------------------------ sampling


@dataclass
class DrawnLayer:
    """One layer's conductances for ``draws`` chips (S, ``(draws, rt, ct, TILE, PAIRS)``)
    and, for a defect-aware mapping, each draw's row and pair permutations per tile."""

    g_plus: np.ndarray
    g_minus: np.ndarray
    row_of: np.ndarray | None = None  # (draws, rt, ct, TILE)
    pair_of: np.ndarray | None = None  # (draws, rt, ct, PAIRS)


def _defects(
    shape: tuple[int, ...], model: ErrorModel, op: OperatingPoint, rng: np.random.Generator
) -> np.ndarray:
    """Stuck conductances (S) per device, NaN where the device works."""
    p_off, p_on = model.stuck_off_rate, model.stuck_on_rate
    if op.defect_rate is not None:
        total = p_off + p_on
        share_on = p_on / total if total > 0 else 0.4
        p_off, p_on = op.defect_rate * (1 - share_on), op.defect_rate * share_on
    u = rng.random(shape)
    out = np.full(shape, np.nan)
    out[u < p_off] = model.stuck_off_s
    out[(u >= p_off) & (u < p_off + p_on)] = model.stuck_on_s
    return out


def sample_conductances(
    mapped: list[MappedLayer], model: ErrorModel, op: OperatingPoint, rng: np.random.Generator,
    draws: int, *, usage: list[np.ndarray] | None = None,
) -> list[DrawnLayer]:  # fmt: skip
    """The conductances (S) of ``draws`` chips holding ``mapped`` at ``op`` (module doc).
    ``usage``: per layer, the mean input of each logical row (for a defect-aware map)."""
    tuning = model.tuning.get(op.algorithm)
    if tuning is None:
        from nvmlab.errors import ConfigError

        raise ConfigError(
            f"the error model of chip {model.chip!r} has no tuning outcomes of algorithm "
            f"{op.algorithm!r}; allowed: {', '.join(sorted(model.tuning)) or 'none: tune it first'}",
            field="algorithm",
        )
    k = op.error_multiplier
    dt = op.temperature_c - model.reference_c
    decades = math.log10(max(op.since_tuning_s, 1.0))
    out = []
    for li, layer in enumerate(mapped):
        shape = (draws, *layer.g_plus.shape)
        stuck_p, stuck_m = _defects(shape, model, op, rng), _defects(shape, model, op, rng)
        w = np.broadcast_to(layer.weights, shape).copy()  # the weights as placed
        rows_of = pairs_of = None
        if op.defect_aware:
            rt, ct = layer.g_plus.shape[:2]
            rows_of = np.empty((draws, rt, ct, TILE), dtype=int)
            pairs_of = np.empty((draws, rt, ct, PAIRS), dtype=int)
            use = usage[li] if usage is not None else np.ones(layer.inputs)
            pad = np.zeros(rt * TILE)
            pad[: layer.inputs] = use[: layer.inputs]
            for d in range(draws):
                for r in range(rt):
                    for c in range(ct):
                        w[d, r, c], rows_of[d, r, c], pairs_of[d, r, c] = _aware_tile(
                            layer.weights[r, c], float(layer.scale[r, c]), op.g_lo_s,
                            stuck_p[d, r, c], stuck_m[d, r, c], pad[r * TILE:(r + 1) * TILE],
                        )  # fmt: skip
        scale = layer.scale[None, :, :, None, None]
        gp, gm = pair_conductances(w, op.g_lo_s, scale)
        # tuning: each device lands at its target times (1 + its error); a stuck one stays
        ep, em = k * tuning.sample(gp, rng), k * tuning.sample(gm, rng)
        tp = np.where(np.isnan(stuck_p), gp * (1.0 + ep), stuck_p)
        tm = np.where(np.isnan(stuck_m), gm * (1.0 + em), stuck_m)
        if op.defect_aware or op.compensate_misses:
            # the verification read after tuning shows which devices missed (stuck, or
            # off by more than FAILED_REL): the partner of one is tuned again, aimed so
            # that the pair holds its weight, within the devices' reach
            miss_p = ~np.isnan(stuck_p) | (np.abs(ep) > FAILED_REL)
            miss_m = ~np.isnan(stuck_m) | (np.abs(em) > FAILED_REL)
            fix_m = miss_p & ~miss_m
            fix_p = miss_m & ~miss_p
            aim_m = np.clip(tp - scale * w, DEVICE_G_MIN_S, DEVICE_G_MAX_S)
            aim_p = np.clip(tm + scale * w, DEVICE_G_MIN_S, DEVICE_G_MAX_S)
            tm = np.where(fix_m, aim_m * (1.0 + k * tuning.sample(aim_m, rng)), tm)
            tp = np.where(fix_p, aim_p * (1.0 + k * tuning.sample(aim_p, rng)), tp)
        result = []
        for g, s in ((tp, stuck_p), (tm, stuck_m)):
            g = g + model.temperature_shift_s(g, dt)
            g = g + k * model.tc_spread_s_per_k * dt * rng.standard_normal(shape)
            drift = model.drift_per_decade_rel + k * model.drift_spread_rel * rng.standard_normal(
                shape
            )
            g = np.where(np.isnan(s), g * (1.0 + drift * decades), g)
            result.append(np.maximum(g, 0.0))
        out.append(DrawnLayer(result[0], result[1], rows_of, pairs_of))
    return out


# ------------------------------------------------------------------------------ inference


def _layer_currents(
    u: np.ndarray, layer: MappedLayer, drawn: DrawnLayer, model: ErrorModel | None,
    op: OperatingPoint, rng: np.random.Generator | None,
) -> np.ndarray:  # fmt: skip
    """Tile by tile: row voltages in (``u``: ``(draws, n, inputs)`` in [0, 1]),
    differential column currents out, scaled back to weight units per tile and summed
    over the row tiles: ``(draws, n, outputs)``."""
    draws, n = u.shape[:2]
    rt, ct = layer.g_plus.shape[:2]
    padded = np.zeros((draws, n, rt * TILE))
    padded[:, :, : layer.inputs] = u
    volts = padded.reshape(draws, n, rt, TILE) * op.read_v
    if model is not None:
        # the devices' cubic I-V: what a row at V drives through a device of conductance G
        # (as defined at the reference voltage) is G V (1 + b V^2) / (1 + b V_ref^2);
        # pre-distorted rows make it G u V_read again
        applied = model.predistort(volts) if op.predistort else volts
        volts = applied * model.current_factor(applied)
    if drawn.row_of is not None:
        # defect-aware: logical row i drives physical row row_of[i] of each tile
        phys = np.zeros((draws, n, rt, ct, TILE))
        for d in range(draws):
            for r in range(rt):
                for c in range(ct):
                    phys[d, :, r, c][:, drawn.row_of[d, r, c]] = volts[d, :, r, :]
        drive, spec = phys, "dnrct,drctp->dnrcp"
    else:
        drive, spec = volts, "dnrt,drctp->dnrcp"
    ip = np.einsum(spec, drive, drawn.g_plus)
    im = np.einsum(spec, drive, drawn.g_minus)
    if model is not None and rng is not None:
        k = op.error_multiplier
        sq = drive**2
        for g, current in ((drawn.g_plus, ip), (drawn.g_minus, im)):
            var = np.einsum(spec, sq, (model.noise_rel * g) ** 2) + model.noise_abs_a**2
            current += k * np.sqrt(var) * rng.standard_normal(var.shape)
    diff = ip - im
    if drawn.pair_of is not None:
        # each logical pair j is read where it was placed: physical pair pair_of[j]
        idx = np.broadcast_to(drawn.pair_of[:, None, :, :, :], diff.shape)
        diff = np.take_along_axis(diff, idx, axis=4)
    gain = 1.0
    if op.compensate_temperature and model is not None:
        gain = 1.0 + model.tc_slope_per_k * (op.temperature_c - model.reference_c)
    y = diff / (op.read_v * layer.scale[None, None, :, :, None] * gain)
    y = y.sum(axis=2)  # the row tiles of one output: (draws, n, ct, PAIRS)
    return y.reshape(draws, n, ct * PAIRS)[:, :, : layer.outputs]


def infer(
    net: Network, mapped: list[MappedLayer], drawn: list[DrawnLayer], x: np.ndarray,
    op: OperatingPoint, model: ErrorModel | None = None, rng: np.random.Generator | None = None,
) -> np.ndarray:  # fmt: skip
    """Logits ``(draws, n, classes)`` of ``net`` run through the tiles (every product a
    tile's column currents; read noise when ``model`` and ``rng`` are given)."""
    draws = drawn[0].g_plus.shape[0]
    a = np.broadcast_to(x, (draws, *x.shape))
    for i, (layer, dl, b) in enumerate(zip(mapped, drawn, net.biases, strict=True)):
        u = net.layer_input(i, a)
        a = net.input_scales[i] * _layer_currents(u, layer, dl, model, op, rng) + b
        if i < len(mapped) - 1:
            a = np.maximum(a, 0.0)
    return a


def array_energy_j(
    net: Network, mapped: list[MappedLayer], x: np.ndarray, op: OperatingPoint
) -> float:
    """Mean energy (J) per inference in the memory arrays: sum over the mapped devices of
    ``(u V_read)^2 G t_read`` (targets, both devices of every pair)."""
    total = 0.0
    a = x
    for i, (layer, w, b) in enumerate(zip(mapped, net.weights, net.biases, strict=True)):
        u = net.layer_input(i, a)
        rt, ct = layer.g_plus.shape[:2]
        padded = np.zeros((u.shape[0], rt * TILE))
        padded[:, : layer.inputs] = u
        v2 = (padded.reshape(-1, rt, TILE) * op.read_v) ** 2  # (n, rt, TILE)
        g = np.where(layer.used, layer.g_plus + layer.g_minus, 0.0)  # (rt, ct, TILE, P)
        total += float(np.einsum("nrt,rctp->", v2, g)) / u.shape[0] * op.t_read_s
        a = net.input_scales[i] * (u @ w) + b
        if i < len(mapped) - 1:
            a = np.maximum(a, 0.0)
    return total
