"""Tiles, mapping and inference: with zero error the tile path (every product a tile's
column currents, per-tile scales, summed tiles) is float inference; the mapping round
trip holds within the tuning tolerance; defect-aware mapping keeps the weights that a
blind one loses; energy follows V^2 G."""

from __future__ import annotations

import numpy as np
import pytest

from nvmlab.analysis.errormodel import QUANTILES, TUNING_EDGES_S, ErrorModel, TuningError
from nvmlab.analysis.hardware import (
    TILE,
    OperatingPoint,
    array_energy_j,
    infer,
    map_network,
    sample_conductances,
)
from nvmlab.analysis.network import Network
from nvmlab.tuning.mapping import pairs_to_weights


def _model(**kw: float) -> ErrorModel:
    bins = len(TUNING_EDGES_S) - 1
    zero = TuningError(
        "adaptive", list(TUNING_EDGES_S), [[0.0] * len(QUANTILES)] * bins, [1] * bins
    )
    base = dict(noise_rel=0.0, noise_abs_a=0.0, tc_intercept_s_per_k=0.0, tc_slope_per_k=0.0,
                tc_spread_s_per_k=0.0)  # fmt: skip
    return ErrorModel("test", **{**base, **kw}, tuning={"adaptive": zero})  # type: ignore[arg-type]


def _network(sizes: tuple[int, ...], seed: int = 1) -> Network:
    rng = np.random.default_rng(seed)
    ws = [rng.normal(0, 0.3, (a, b)) for a, b in zip(sizes, sizes[1:], strict=False)]
    bs = [rng.normal(0, 0.1, b) for b in sizes[1:]]
    return Network(ws, bs, [1.0] + [2.0] * (len(ws) - 1))


@pytest.mark.parametrize("sizes", [(64, 32, 10), (150, 70, 40, 10)])
def test_with_zero_error_the_tile_path_is_float_inference(sizes: tuple[int, ...]) -> None:
    net = _network(sizes)
    x = np.random.default_rng(2).random((50, sizes[0]))
    op = OperatingPoint(g_lo_s=3e-6, g_hi_s=60e-6, read_v=0.15)
    mapped = map_network(net, op.g_lo_s, op.g_hi_s)
    if sizes[0] > TILE:
        assert mapped[0].g_plus.shape[:2] == (3, 3)  # 150 rows, 70 outputs: 3 x 3 tiles
    drawn = sample_conductances(mapped, _model(), op, np.random.default_rng(0), 2)
    logits = infer(net, mapped, drawn, x, op, _model(), np.random.default_rng(0))
    assert np.max(np.abs(logits - net.forward(x)[None])) <= 1e-9


def test_the_mapping_round_trip_holds_within_the_tuning_tolerance() -> None:
    net = _network((64, 32, 10))
    g_lo, g_hi = 5e-6, 100e-6
    for layer in map_network(net, g_lo, g_hi):
        scale = layer.scale[:, :, None, None]
        back = pairs_to_weights(layer.g_plus, layer.g_minus, scale)
        assert np.max(np.abs(back - layer.weights)) <= 1e-12
        # every device 1 % off (the tuning tolerance) moves a weight by at most
        # 1 % of (G+ + G-) / s: within (g_hi + g_lo) / (g_hi - g_lo) % of the largest weight
        rng = np.random.default_rng(3)
        sign_p, sign_m = rng.choice([-1.0, 1.0], (2, *layer.g_plus.shape))
        off = pairs_to_weights(
            layer.g_plus * (1 + 0.01 * sign_p), layer.g_minus * (1 + 0.01 * sign_m), scale
        )
        wmax = np.abs(layer.weights).max(axis=(2, 3), keepdims=True)
        assert (
            np.max(np.abs(off - layer.weights) / wmax)
            <= 0.01 * (g_hi + g_lo) / (g_hi - g_lo) + 1e-12
        )


def test_defect_aware_mapping_keeps_the_weights_a_blind_mapping_loses() -> None:
    net = _network((64, 32, 10))
    x = np.random.default_rng(4).random((200, 64)) * (np.arange(64) % 8 > 1)  # some rows idle
    model = _model(stuck_off_rate=0.01, stuck_on_rate=0.01, stuck_off_s=0.2e-6, stuck_on_s=600e-6)
    errors = {}
    for aware in (False, True):
        op = OperatingPoint(defect_aware=aware, compensate_misses=aware)
        mapped = map_network(net, op.g_lo_s, op.g_hi_s)
        usage = [x.mean(axis=0), np.full(32, 0.5)]
        drawn = sample_conductances(mapped, model, op, np.random.default_rng(5), 4, usage=usage)
        logits = infer(net, mapped, drawn, x, op, model, np.random.default_rng(5))
        errors[aware] = float(np.sqrt(np.mean((logits - net.forward(x)[None]) ** 2)))
    assert errors[True] < 0.5 * errors[False], errors


def test_energy_is_v_squared_g_t() -> None:
    net = _network((64, 32, 10))
    x = np.random.default_rng(6).random((30, 64))
    mapped = map_network(net, 5e-6, 100e-6)
    full = array_energy_j(net, mapped, x, OperatingPoint(read_v=0.2))
    assert array_energy_j(net, mapped, x, OperatingPoint(read_v=0.1)) == pytest.approx(full / 4)
    # by hand for the first layer: sum over devices of (u V)^2 G t
    u = x
    g = mapped[0].g_plus[0, 0] + mapped[0].g_minus[0, 0]
    first = np.mean(np.sum(((u * 0.2) ** 2) @ g, axis=1)) * 1e-6
    assert first < full and first == pytest.approx(full - _rest(net, mapped, x), rel=1e-9)


def _rest(net: Network, mapped: list, x: np.ndarray) -> float:
    a = np.maximum(x @ net.weights[0] + net.biases[0], 0.0)
    u = net.layer_input(1, a)
    layer = mapped[1]
    g = np.where(layer.used[0, 0], layer.g_plus[0, 0] + layer.g_minus[0, 0], 0.0)
    padded = np.zeros((len(u), TILE))
    padded[:, : u.shape[1]] = u
    return float(np.mean(np.sum(((padded * 0.2) ** 2) @ g, axis=1)) * 1e-6)
