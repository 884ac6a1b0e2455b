"""The emulated-bench benchmark runs end to end on a small array and prints every figure."""

from __future__ import annotations

import pytest

from nvmlab.mocks import benchmarks


def test_the_benchmark_prints_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--rows", "4", "--cols", "4", "--points", "5", "--round-trips", "3"]
    assert benchmarks.main(args) == 0
    out = capsys.readouterr().out
    assert "Full 4 x 4 array read" in out
    for model in ("keithley2400", "keithley2636b", "keysight_b2902a"):
        assert out.count(model) == 3  # array read, per-point queries, on-instrument loop
    assert "TSP script loop + printbuffer" in out and "failed" not in out
    assert "loopback TCP, pyvisa-py raw socket" in out
    assert "Virtual instrument time vs wall time" in out
