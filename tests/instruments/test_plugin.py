"""The pytest plugin as a lab uses it: a test file of its own, run by pytest (pytester)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

LAB_TESTS = '''
import pytest


def my_read_script(station, row, col):
    """A lab's own script: read one device at 0.2 V."""
    station.board.select(row, col, unselected="track")
    station.smu.configure(current_limit_a=1e-4, nplc=0.1)
    station.smu.set_voltage(0.2)
    station.smu.output(True)
    return station.smu.measure_current()


def test_default_bench_is_small_and_in_virtual_time(emulated_bench, emulated_station):
    assert (emulated_bench.bench.array.rows, emulated_bench.bench.array.cols) == (8, 8)
    assert my_read_script(emulated_station, 2, 3) > 0
    assert emulated_bench.bench.terminal_v["A"] == pytest.approx(0.2)


@pytest.mark.nvmlab_bench(smu="keithley2636b", rows=12, cols=10, seed=3)
def test_marker_chooses_the_instruments_and_the_array(emulated_bench, emulated_station):
    assert (emulated_station.board.rows, emulated_station.board.cols) == (12, 10)
    assert "2636B" in emulated_station.identities["smu"]


@pytest.mark.parametrize("nvmlab_bench_options", [{"chamber": "watlow_f4"}], indirect=True)
def test_indirect_parametrization_chooses_the_chamber(emulated_station):
    assert emulated_station.identities["chamber"].startswith("Watlow F4")


def test_the_bench_is_left_safe_after_the_test(emulated_bench, emulated_station):
    my_read_script(emulated_station, 1, 1)
    emulated_station.close()
    assert emulated_bench.bench.terminal_v["A"] is None
    assert {line.mode for line in emulated_bench.bench.rows_state} == {"gnd"}


@pytest.mark.nvmlab_bench(colour="red")
def test_unknown_marker_options_are_refused(emulated_bench):
    pass
'''


def test_a_lab_test_file_uses_the_fixtures_and_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_lab=LAB_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(["*unknown nvmlab_bench option(s) colour; allowed: rows, cols*"])


def test_the_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.nvmlab_bench(*emulated_bench*"])


def test_importing_the_plugin_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, nvmlab.testing; "
        "heavy = [m for m in ('numpy', 'pyvisa', 'serial', 'nvmlab.mocks', 'nvmlab.drivers') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""
