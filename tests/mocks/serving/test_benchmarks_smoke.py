"""The emulated-bench benchmark runs end to end on a small array and prints every figure."""

from __future__ import annotations

import math
import re

import pytest

from nvmlab.mocks import benchmarks
from nvmlab.mocks.serving import speed

TINY = ["--served-queries", "3", "--sweep-points", "5"]
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf)", re.IGNORECASE)


@pytest.mark.tcp
def test_the_benchmark_prints_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--rows", "4", "--cols", "4", "--points", "5", "--round-trips", "3", *TINY]
    assert benchmarks.main(args) == 0
    out = capsys.readouterr().out
    assert "Full 4 x 4 array read" in out
    for model in ("keithley2400", "keithley2636b", "keysight_b2902a"):
        assert out.count(model) == 3  # array read, per-point queries, on-instrument loop
    assert "TSP script loop + printbuffer" in out and "failed" not in out
    assert "loopback TCP, pyvisa-py raw socket" in out
    assert "Virtual instrument time vs wall time" in out
    assert "Served bench against a trivial socket server" in out
    assert "Emulator work per read in a 5-point 2400 list sweep" in out


def figures(text: str) -> list[float]:
    return [float(token) for token in NUMBER.findall(text)]


@pytest.mark.tcp
def test_the_served_bench_figures_are_finite_and_positive(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Cost per query at time scales 1 and 1e6 beside the trivial server, and the work per
    point of a list sweep in-process and served: every printed figure a finite number
    above 0 (no timing threshold: the figures are measured, not judged)."""
    benchmarks.print_served_query_costs(3, [1.0, 1e6])
    benchmarks.print_list_sweep_costs(5)
    lines = [line for line in capsys.readouterr().out.splitlines() if " us" in line]
    assert len(lines) == 2 * 3 + 2  # per scale: trivial, *IDN?, :READ?; two sweep paths
    for line in lines:
        values = figures(line)
        assert values and all(math.isfinite(v) and v > 0 for v in values), line
    assert any("x trivial" in line for line in lines)


@pytest.mark.tcp
def test_the_figures_come_from_the_measurements() -> None:
    costs = speed.served_query_costs(2, 1e6)
    for value in (costs.trivial_s, costs.idn_s, costs.read_s, costs.read_overhead_s):
        assert math.isfinite(value) and value > 0
    assert costs.read_instrument_s == pytest.approx(speed.READ_INSTRUMENT_S / 1e6)
    assert costs.ratio(costs.trivial_s) == 1.0
    in_process, served = speed.list_sweep_costs(4)
    assert in_process.points == served.points == 4
    assert in_process.instrument_per_point_s == 0.0
    assert served.instrument_per_point_s == pytest.approx(speed.READ_INSTRUMENT_S / 1e6)
    for sweep in (in_process, served):
        assert math.isfinite(sweep.work_per_point_s) and sweep.work_per_point_s > 0


def test_the_list_sweep_is_sent_in_chunks_the_2400_accepts() -> None:
    commands = speed.list_sweep_commands(250)
    assert commands[0].startswith(":SOUR:VOLT:MODE LIST;:SOUR:LIST:VOLT ")
    assert [c.split()[0] for c in commands[1:3]] == [":SOUR:LIST:VOLT:APP"] * 2
    assert commands[-1] == ":TRIG:COUN 250"
    values = [v for c in commands[:-1] for v in c.rsplit(" ", 1)[1].split(",")]
    assert len(values) == 250 and max(len(c.split(",")) for c in commands) <= speed.LIST_CHUNK
    assert all(0.1 <= float(v) <= 0.2 for v in values)
