"""The bench couples routing, SMU terminals, time and the chip into one physical world."""

from __future__ import annotations

import numpy as np
import pytest

from nvmlab.clock import VirtualClock
from nvmlab.mocks.physics.base import LineBias
from nvmlab.mocks.physics.resistor import ResistorArray
from nvmlab.mocks.thermal import ThermalModel
from nvmlab.mocks.world import Bench


def make_bench(g: np.ndarray) -> Bench:
    clock = VirtualClock()
    return Bench(ResistorArray(g), clock, ThermalModel(clock))


@pytest.fixture
def conductances() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.uniform(10e-6, 100e-6, size=(4, 5))


def route_row_to_a(bench: Bench, row: int) -> None:
    bench.ground_all()
    bench.rows_state[row].mode = "smu"
    bench.rows_state[row].terminal = "A"


def test_one_channel_read_with_grounded_lines_measures_the_whole_row(
    conductances: np.ndarray,
) -> None:
    bench = make_bench(conductances)
    route_row_to_a(bench, 2)
    reading = bench.source("A", 0.2, 1e-3)
    assert reading.amps == pytest.approx(0.2 * conductances[2].sum(), rel=1e-12)
    assert not reading.in_compliance


def test_tracking_buffer_isolates_the_selected_device(conductances: np.ndarray) -> None:
    bench = make_bench(conductances)
    route_row_to_a(bench, 1)
    for c, line in enumerate(bench.cols_state):
        if c != 3:
            line.mode, line.terminal = "track", "A"
    reading = bench.source("A", 0.2, 1e-3)
    assert reading.amps == pytest.approx(0.2 * conductances[1, 3], rel=1e-12)


def test_two_channel_read_sees_the_device_current_on_the_column_terminal(
    conductances: np.ndarray,
) -> None:
    bench = make_bench(conductances)
    route_row_to_a(bench, 0)
    bench.cols_state[4].mode, bench.cols_state[4].terminal = "smu", "B"
    bench.set_terminal("B", 0.0)
    bench.set_terminal("A", 0.2)
    currents = bench.terminal_currents()
    # Current leaves terminal A into the row and enters terminal B from the column.
    assert currents["B"] == pytest.approx(-0.2 * conductances[0, 4], rel=1e-12)
    assert currents["A"] == pytest.approx(0.2 * conductances[0].sum(), rel=1e-12)


def test_floating_lines_add_sneak_current(conductances: np.ndarray) -> None:
    bench = make_bench(conductances)
    route_row_to_a(bench, 0)
    for r in range(1, 4):
        bench.rows_state[r].mode = "float"
    for c in range(1, 5):
        bench.cols_state[c].mode = "float"
    reading = bench.source("A", 0.2, 1e-3)
    assert reading.amps > 0.2 * conductances[0, 0] * 1.05


def test_compliance_clamps_the_source_voltage(conductances: np.ndarray) -> None:
    bench = make_bench(conductances)
    route_row_to_a(bench, 0)
    g_row = conductances[0].sum()
    limit = 0.5 * 0.2 * g_row
    reading = bench.source("A", 0.2, limit)
    assert reading.in_compliance
    assert abs(reading.amps) == pytest.approx(limit, rel=1e-6)
    assert reading.volts == pytest.approx(limit / g_row, rel=1e-6)
    assert bench.max_applied_v["A"] == pytest.approx(0.2)


def test_output_off_disconnects_the_terminal(conductances: np.ndarray) -> None:
    bench = make_bench(conductances)
    route_row_to_a(bench, 0)
    bench.set_terminal("A", None)
    bias = bench.line_bias()
    assert np.isnan(bias.row_v[0])
    assert bench.terminal_currents()["A"] == 0.0


def test_hold_consumes_instrument_time() -> None:
    bench = make_bench(np.full((2, 2), 1e-5))
    t0 = bench.clock.now()
    bench.hold(0.0167)
    bench.board_pulse(0, 0, 1.5, 1e-3, "v/2")
    assert bench.clock.now() - t0 == pytest.approx(0.0177)
    assert bench.max_applied_v["board"] == pytest.approx(1.5)


def test_resistor_state_file_round_trip(tmp_path) -> None:
    g = np.arange(1, 7, dtype=float).reshape(2, 3) * 1e-5
    path = tmp_path / "chip.npz"
    ResistorArray(g).save_state(path)
    other = ResistorArray(np.zeros((2, 3)))
    other.load_state(path)
    np.testing.assert_array_equal(other.ground_truth()["conductance_s"], g)


def test_line_bias_dataclass_helpers() -> None:
    bias = LineBias.floating(2, 3)
    assert np.isnan(bias.row_v).all() and np.isnan(bias.col_v).all()
    assert not np.shares_memory(bias.copy().row_v, bias.row_v)
