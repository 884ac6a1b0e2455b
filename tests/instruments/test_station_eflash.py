"""An eFlash station works with the documented read biases out of the box.

devices.md's eFlash read: word line 1.5 V, control gate 2.5 V, bit line 1 V, source 0 V
(``docs/probe-board.md``: the SMU forces the bit line and measures the cell). With the
memristor limits (``max_read_v`` 0.5 V) the 1 V bit-line read is refused, so a station
file says which array it holds (``[station] array = "eflash"``) and gets the eFlash
defaults; the board's own ``CONF?`` must agree, since eFlash limits would let a read
switch a memristor.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nvmlab.clock import VirtualClock
from nvmlab.errors import SafetyLimitError
from nvmlab.instruments.safety import SafetyLimits, default_limits
from nvmlab.instruments.station import Station, StationError, StationFileError, load_station_file
from nvmlab.mocks.emulated import EmulatedBench, build_emulated_bench

READ_BIAS = {"control_gate_v": 2.5, "erase_gate_v": 0.0, "source_v": 0.0}  # devices.md
BIT_LINE_V = 1.0


def _bench(array: str) -> EmulatedBench:
    from nvmlab.mocks.benchfile import BenchConfig

    config = BenchConfig().with_overrides(rows=4, cols=4, seed=3, array=array)
    return build_emulated_bench(config, clock=VirtualClock())


@pytest.fixture
def eflash_bench() -> Iterator[EmulatedBench]:
    bench = _bench("eflash")
    try:
        yield bench
    finally:
        bench.close()


def station_on(bench: EmulatedBench, array: str | None) -> Station:
    """A station on ``bench`` whose file says ``[station] array = ARRAY`` (None: a
    hand-written file without the key; the bench's own station file has it)."""
    data: dict[str, Any] = bench.station_dict()
    data["station"].pop("array", None)
    if array is not None:
        data["station"]["array"] = array
    return Station(data, visa_library=bench.visa_library(), clock=bench.clock)


def read_cell(station: Station, row: int, col: int) -> float:
    station.board.select(row, col, unselected="ground")
    station.smu.set_voltage(BIT_LINE_V)
    return station.smu.measure_current()


def test_an_eflash_station_reads_cells_at_the_documented_bias(eflash_bench: EmulatedBench) -> None:
    with station_on(eflash_bench, "eflash") as station:
        assert station.limits == default_limits("eflash")
        station.board.set_eflash_biases(**READ_BIAS)
        station.smu.configure(current_limit_a=1e-3, nplc=1.0)
        station.smu.output(True)
        measured = np.array([[read_cell(station, r, c) for c in range(4)] for r in range(4)])
    truth = eflash_bench.ground_truth()["cell_current_a"]
    # Each reading scatters by the cell's read noise (relative sigma rising at low current,
    # mocks/physics/eflash.py): every one of the 16 cells within 5 sigma of its true current
    # (a false alarm about once in 1e5 runs); the cells span decades, so a wrong cell,
    # bias or routing would be many sigma off.
    sigma_a = truth * eflash_bench.bench.array.noise_rel(truth)
    z = (measured - truth) / sigma_a
    assert np.all(np.abs(z) < 5.0), z
    assert np.log10(truth.max() / truth.min()) > 1.0


def test_the_memristor_defaults_refuse_the_bit_line_read(eflash_bench: EmulatedBench) -> None:
    with station_on(eflash_bench, None) as station:
        station.board.set_eflash_biases(**READ_BIAS)
        station.smu.configure(current_limit_a=1e-3, nplc=1.0)
        with pytest.raises(SafetyLimitError, match="read limit of \\+-0.5 V"):
            station.smu.set_voltage(BIT_LINE_V)


def test_an_eflash_board_without_the_array_key_is_pointed_out(
    eflash_bench: EmulatedBench, caplog: pytest.LogCaptureFixture
) -> None:
    with station_on(eflash_bench, None) as station:
        assert station.limits == SafetyLimits()
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "EFLASH" in warning and 'array = "eflash"' in warning


@pytest.mark.parametrize(
    ("bench_array", "station_array"),
    [("memristor", "eflash"), ("eflash", "memristor"), ("resistor", "eflash")],
)
def test_a_station_array_the_board_does_not_hold_is_refused(
    bench_array: str, station_array: str
) -> None:
    bench = _bench(bench_array)
    try:
        station = station_on(bench, station_array)
        with pytest.raises(
            StationError,
            match=rf"station\.array is '{station_array}', but the probe board at .* holds an? {bench_array.upper()} array",
        ):
            station.open()
        assert not station.is_open
    finally:
        bench.close()


def test_a_resistor_board_is_a_memristor_station() -> None:
    bench = _bench("resistor")
    try:
        with station_on(bench, "memristor") as station:
            assert station.board.kind == "RESISTOR"
    finally:
        bench.close()


def test_the_array_key_sets_the_defaults_and_explicit_limits_win(tmp_path: Path) -> None:
    board = '[instruments.board]\ndriver = "probe_board"\nresource = "COM3"\n'
    path = tmp_path / "st.toml"
    path.write_text('[station]\narray = "eflash"\n' + board)
    assert load_station_file(path).limits.max_read_v == default_limits("eflash").max_read_v
    assert load_station_file(path).array == "eflash"
    path.write_text('[station]\narray = "eflash"\n[limits]\nmax_read_v = 1.1\n' + board)
    limits = load_station_file(path).limits
    assert limits.max_read_v == 1.1 and limits.max_eflash_v == default_limits("eflash").max_eflash_v
    path.write_text(board)
    assert load_station_file(path).array is None
    assert load_station_file(path).limits == default_limits("memristor") == SafetyLimits()


def test_an_unknown_array_kind_names_the_allowed_ones(tmp_path: Path) -> None:
    path = tmp_path / "st.toml"
    path.write_text(
        '[station]\narray = "flash"\n[instruments.board]\ndriver = "probe_board"\nresource = "COM3"\n'
    )
    with pytest.raises(
        StationFileError,
        match="station.array: unknown array kind 'flash'; allowed: memristor, eflash",
    ):
        load_station_file(path)
