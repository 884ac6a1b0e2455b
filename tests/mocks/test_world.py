"""The bench couples routing, SMU terminals, time and the chip into one physical world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nvmlab.clock import VirtualClock
from nvmlab.mocks.physics.base import LineBias, LineSolution
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


# -- the one sourcing implementation ---------------------------------------------------


def test_current_source_drives_the_requested_current_through_a_known_row(
    conductances: np.ndarray,
) -> None:
    bench = make_bench(conductances)
    route_row_to_a(bench, 2)
    g_row = conductances[2].sum()
    for amps in (3e-6, -3e-6, 1e-9):
        reading = bench.source_current("A", amps, 21.0)
        assert not reading.in_compliance
        assert reading.amps == pytest.approx(amps, rel=1e-8)
        assert reading.volts == pytest.approx(amps / g_row, rel=1e-8)
        assert bench.terminal_v["A"] == pytest.approx(amps / g_row, rel=1e-8)


def test_current_source_in_voltage_compliance_sits_at_the_limit(
    conductances: np.ndarray,
) -> None:
    bench = make_bench(conductances)
    route_row_to_a(bench, 0)
    g_row = conductances[0].sum()
    limit_v = 0.5
    for sign in (1.0, -1.0):
        reading = bench.source_current("A", sign * 2 * limit_v * g_row, limit_v)
        assert reading.in_compliance
        assert reading.volts == sign * limit_v
        assert reading.amps == pytest.approx(sign * limit_v * g_row, rel=1e-12)


def test_current_source_into_an_open_circuit_is_in_compliance_and_zero_amps_is_not(
    conductances: np.ndarray,
) -> None:
    bench = make_bench(conductances)
    bench.ground_all()  # nothing routed to terminal A: an open circuit
    reading = bench.source_current("A", 1e-6, 21.0)
    assert reading.in_compliance and reading.volts == 21.0 and reading.amps == 0.0
    zero = bench.source_current("A", 0.0, 21.0)
    assert not zero.in_compliance and zero.volts == 0.0


def test_current_source_finds_the_voltage_against_another_driven_terminal(
    conductances: np.ndarray,
) -> None:
    """Row 0 on A, column 4 on B at 0.2 V: zero current out of A needs V_A > 0."""
    bench = make_bench(conductances)
    route_row_to_a(bench, 0)
    bench.cols_state[4].mode, bench.cols_state[4].terminal = "smu", "B"
    bench.set_terminal("B", 0.2)
    reading = bench.source_current("A", 0.0, 21.0)
    expected_v = 0.2 * conductances[0, 4] / conductances[0].sum()
    assert reading.volts == pytest.approx(expected_v, rel=1e-8)
    assert abs(reading.amps) < 1e-8 * 0.2 * conductances[0, 4]


def test_voltage_compliance_clamp_holds_for_negative_voltages(conductances: np.ndarray) -> None:
    bench = make_bench(conductances)
    route_row_to_a(bench, 1)
    g_row = conductances[1].sum()
    limit = 0.25 * 0.4 * g_row
    reading = bench.source("A", -0.4, limit)
    assert reading.in_compliance
    assert reading.amps == pytest.approx(-limit, rel=1e-6)
    assert reading.volts == pytest.approx(-limit / g_row, rel=1e-6)
    assert abs(reading.volts) * g_row <= limit * (1 + 1e-12)
    assert bench.max_applied_a["A"] == pytest.approx(limit, rel=1e-6)


class RecordingResistors(ResistorArray):
    """A resistor array that records the integration time of each solve and each save."""

    def __init__(self, g: np.ndarray) -> None:
        super().__init__(g)
        self.solve_nplc: list[tuple[bool, float]] = []
        self.saves: list[float | None] = []

    def solve(
        self, bias: LineBias, temperature_c: float, *, noise: bool = True, nplc: float = 1.0
    ) -> LineSolution:
        self.solve_nplc.append((noise, nplc))
        return super().solve(bias, temperature_c, noise=noise, nplc=nplc)

    def save_state(self, path: Path, *, clock_s: float | None = None) -> None:
        self.saves.append(clock_s)
        super().save_state(path, clock_s=clock_s)


def test_the_instruments_integration_time_reaches_the_array(conductances: np.ndarray) -> None:
    clock = VirtualClock()
    array = RecordingResistors(conductances)
    bench = Bench(array, clock, ThermalModel(clock))
    route_row_to_a(bench, 0)
    bench.source("A", 0.2, 1e-3, nplc=0.01)
    assert array.solve_nplc[-1] == (True, 0.01)
    bench.source_current("A", 1e-6, 10.0, nplc=4.0)
    assert array.solve_nplc[-1] == (True, 4.0)
    bench.terminal_currents(nplc=0.1)
    assert array.solve_nplc[-1] == (True, 0.1)


def test_state_file_is_rewritten_after_five_seconds_of_reads(
    conductances: np.ndarray, tmp_path: Path
) -> None:
    clock = VirtualClock(start_s=100.0)
    array = RecordingResistors(conductances)
    bench = Bench(array, clock, ThermalModel(clock), state_file=tmp_path / "chip.npz")
    route_row_to_a(bench, 0)
    for _ in range(4):  # 4 s of reads: not yet due
        clock.sleep(1.0)
        bench.source("A", 0.2, 1e-3)
    assert array.saves == []
    clock.sleep(1.0)
    bench.source("A", 0.2, 1e-3)
    assert array.saves == [105.0]
    clock.sleep(4.9)
    bench.source("A", 0.2, 1e-3)
    assert array.saves == [105.0]
    bench.save_state()  # on stop: with the bench clock time
    assert array.saves == [105.0, 109.9]
    assert (tmp_path / "chip.npz").exists()


def _baked_eflash_loss_v(read_every_s: float | None) -> float:
    """Program cell (0, 0) of an eFlash bench, bake the chamber at 85 C for an hour, cool
    at 25 C for half an hour; the cell's threshold loss (V), reading the array every
    ``read_every_s`` (s) or never (None)."""
    from nvmlab.mocks.emulated import build_emulated_bench

    emulated = build_emulated_bench(array="eflash", rows=2, cols=2, seed=1)
    try:
        bench = emulated.bench
        for _ in range(3):
            bench.board_pulse(0, 0, 5.0, 1e-5, "v/3")
        v0 = float(bench.ground_truth()["vth_v"][0, 0])
        for duration_s, setpoint_c in ((3600.0, 85.0), (1800.0, 25.0)):
            bench.thermal.advance()
            bench.thermal.setpoint_c = setpoint_c
            left_s = duration_s
            while left_s > 0:
                step_s = min(left_s, read_every_s or left_s)
                bench.clock.sleep(step_s)
                left_s -= step_s
                if read_every_s is not None:
                    bench.terminal_currents()
        assert bench.thermal.chip_temperature_c() < 30.0  # baked, then cooled
        return v0 - float(bench.ground_truth()["vth_v"][0, 0])
    finally:
        emulated.close()


def test_a_chamber_bake_with_no_reads_ages_the_chip_at_the_temperature_it_had() -> None:
    """Retention integrates over the chip's own temperature history: a bake with no read
    in between loses what the same bake read every minute loses (not what 25 C loses)."""
    no_reads = _baked_eflash_loss_v(None)
    every_minute = _baked_eflash_loss_v(60.0)
    assert every_minute > 0
    assert no_reads == pytest.approx(every_minute, rel=0.02)


def test_a_pulse_held_in_two_pieces_counts_once_and_a_new_pulse_counts_again() -> None:
    """An SMU applies one pulse as a source delay then a measurement (two holds at one
    bias); the ground truth's pulse_count counts the pulse, not the pieces."""
    from nvmlab.mocks.emulated import build_emulated_bench

    emulated = build_emulated_bench(rows=2, cols=2, seed=2)
    try:
        bench = emulated.bench
        route_row_to_a(bench, 0)
        before = bench.ground_truth()["pulse_count"].copy()
        bench.set_terminal("A", 1.6)
        bench.hold(0.5e-3)
        bench.hold(0.5e-3)  # the same pulse, continued
        bench.set_terminal("A", None)
        after_one = bench.ground_truth()["pulse_count"]
        np.testing.assert_array_equal(after_one[0] - before[0], [1, 1])
        np.testing.assert_array_equal(after_one[1], before[1])
        bench.clock.sleep(1e-3)
        bench.set_terminal("A", 1.6)
        bench.hold(1e-3)  # a second pulse after a pause
        np.testing.assert_array_equal(bench.ground_truth()["pulse_count"][0] - before[0], [2, 2])
    finally:
        emulated.close()


def test_line_bias_and_terminal_currents_follow_every_change_after_being_cached(
    conductances: np.ndarray,
) -> None:
    """The bench keeps the resolved routing between reads; a change of any line, terminal
    voltage or eFlash bias is seen at the next read, and the shared bias is read-only."""
    bench = make_bench(conductances)
    route_row_to_a(bench, 0)
    bench.set_terminal("A", 0.2)
    first = bench.line_bias()
    assert bench.line_bias() is first
    with pytest.raises(ValueError, match="read-only"):
        first.row_v[1] = 1.0
    assert bench.terminal_currents(noise=False)["A"] == pytest.approx(
        0.2 * conductances[0].sum(), rel=1e-12
    )
    bench.rows_state[1].mode = "smu"  # a second row joins terminal A
    assert bench.line_bias().row_v[1] == 0.2
    assert bench.terminal_currents(noise=False)["A"] == pytest.approx(
        0.2 * conductances[:2].sum(), rel=1e-12
    )
    bench.rows_state[1].terminal = "B"  # ... then moves to B, which is off
    assert np.isnan(bench.line_bias().row_v[1])
    bench.set_terminal("B", 0.1)
    assert bench.terminal_currents(noise=False)["B"] == pytest.approx(
        0.1 * conductances[1].sum(), rel=1e-12
    )
    bench.cols_state[2].mode, bench.cols_state[2].volts = "dac", 0.05
    assert bench.line_bias().col_v[2] == 0.05
    bench.terminal_v["A"] = 0.3  # set directly, as the compliance loop does
    assert bench.line_bias().row_v[0] == 0.3
    bench.control_gate_v = 2.0
    assert bench.line_bias().control_gate_v == 2.0
