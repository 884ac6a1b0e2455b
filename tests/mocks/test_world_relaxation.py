"""The bench relaxes the chip in steps of at least RELAX_RESOLUTION_S during reads, over the
whole elapsed time (read holds included), and to the present before any write."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nvmlab.clock import VirtualClock
from nvmlab.mocks.physics.base import LineBias, TemperatureHistory
from nvmlab.mocks.physics.memristor import MemristorArray, MemristorParams
from nvmlab.mocks.thermal import ThermalModel
from nvmlab.mocks.world import RELAX_RESOLUTION_S, Bench

READ_HOLD_S = 0.2e-3  # a 0.012 PLC read at 60 Hz


class RecordingMemristors(MemristorArray):
    """A memristor array that records every relax (elapsed s) and stress (duration s)."""

    def __init__(self) -> None:
        super().__init__(4, 4, seed=3)
        self.calls: list[tuple[str, float]] = []

    def relax(
        self,
        elapsed_s: float,
        temperature_c: float | TemperatureHistory,
        temperature_end_c: float | None = None,
    ) -> None:
        self.calls.append(("relax", elapsed_s))
        super().relax(elapsed_s, temperature_c, temperature_end_c)

    def stress(
        self,
        bias: LineBias,
        duration_s: float,
        temperature_c: float,
        *,
        count_pulse: bool = True,
    ) -> bool:
        self.calls.append(("stress", duration_s))
        return super().stress(bias, duration_s, temperature_c, count_pulse=count_pulse)


def _read_bench() -> tuple[Bench, RecordingMemristors]:
    array = RecordingMemristors()
    clock = VirtualClock()
    bench = Bench(array, clock, ThermalModel(clock))
    bench.ground_all()
    bench.rows_state[1].mode = "smu"
    bench.rows_state[1].terminal = "A"
    return bench, array


def _read(bench: Bench) -> None:
    bench.source("A", 0.2, 1e-3, nplc=0.012)
    bench.hold(READ_HOLD_S)


def test_reads_relax_the_chip_in_steps_and_lose_no_time() -> None:
    bench, array = _read_bench()
    t0 = bench.clock.now()
    for _ in range(50):  # 10 ms of back-to-back reads
        _read(bench)
    relaxed = [s for kind, s in array.calls if kind == "relax"]
    assert relaxed, "50 reads over 10 ms never relaxed the chip"
    assert min(relaxed) >= RELAX_RESOLUTION_S
    assert not [kind for kind, _ in array.calls if kind == "stress"]  # reads stress nothing
    bench.ground_truth()  # a truth read relaxes to now
    relaxed = [s for kind, s in array.calls if kind == "relax"]
    # every second of bench time, the read holds included, was relaxed exactly once
    assert math.fsum(relaxed) == pytest.approx(bench.clock.now() - t0, rel=1e-12)


def test_a_write_relaxes_the_chip_to_now_before_it_stresses() -> None:
    bench, array = _read_bench()
    for _ in range(8):  # 1.6 ms of reads: one relaxation due, then 0.6 ms pending
        _read(bench)
    array.calls.clear()
    bench.board_pulse(1, 2, 1.6, 1e-3, "v/2")
    assert array.calls[0][0] == "relax"
    assert array.calls[0][1] == pytest.approx(8 * READ_HOLD_S - RELAX_RESOLUTION_S, rel=1e-9)
    assert array.calls[1] == ("stress", 1e-3)
    # a write-level hold through an SMU relaxes first too
    _read(bench)
    array.calls.clear()
    bench.set_terminal("A", 1.6)
    bench.hold(1e-3)
    assert [kind for kind, _ in array.calls] == ["relax", "stress"]
    assert array.calls[0][1] == pytest.approx(READ_HOLD_S, rel=1e-9)


def _programmed_pair() -> tuple[MemristorArray, MemristorArray]:
    arrays = []
    for _ in range(2):
        array = MemristorArray(6, 6, seed=11)
        bias = LineBias(np.full(6, 0.8), np.full(6, 0.8))
        bias.row_v[2], bias.col_v[3] = 1.6, 0.0
        array.stress(bias, 1e-3, 25.0)
        arrays.append(array)
    return arrays[0], arrays[1]


def test_relaxing_a_merged_interval_equals_relaxing_its_pieces() -> None:
    pieces, merged = _programmed_pair()
    assert np.any(pieces.relax_sign != 0)
    history = TemperatureHistory(np.array([0.0, 0.05, 0.1]), np.array([25.0, 85.0, 40.0]))
    t, temp = history.knots(0.1)
    step = 0.1 / 400
    for k in range(400):  # the same ramp, piece by piece
        a, b = k * step, (k + 1) * step
        pieces.relax(step, float(np.interp(a, t, temp)), float(np.interp(b, t, temp)))
    merged.relax(0.1, history)
    # equal to the accuracy of the Arrhenius integral (Simpson, < 1e-6 relative: base.py)
    np.testing.assert_allclose(merged.age_s, pieces.age_s, rtol=1e-6)
    np.testing.assert_allclose(merged.g_s, pieces.g_s, rtol=1e-9)


def test_a_telegraph_flip_over_a_merged_interval_has_the_pieces_probability() -> None:
    """The two-level Markov process flipped once over T or ten times over T / 10 ends in the
    other level with the same probability 0.5 (1 - exp(-2 T / dwell))."""
    dwell_s, total_s, n = 10e-3, 5e-3, 200
    params = MemristorParams(
        rtn_fraction=1.0, rtn_dwell_min_s=dwell_s, rtn_dwell_max_s=dwell_s, defect_rate=0.0
    )
    expected = 0.5 * (1.0 - math.exp(-2.0 * total_s / dwell_s))
    sigma = math.sqrt(expected * (1 - expected) / (n * n))  # binomial, n * n devices
    for pieces in (1, 10):
        array = MemristorArray(n, n, seed=5, params=params)
        start = array.rtn_high.copy()
        for _ in range(pieces):
            array.relax(total_s / pieces, 25.0)
        flipped = float(np.mean(array.rtn_high != start))
        assert abs(flipped - expected) < 5 * sigma, (pieces, flipped, expected)
