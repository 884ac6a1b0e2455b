"""Array operations on every SMU model, judged against the emulated chip's ground truth.

Tolerances come from the read noise of the device model (docs: devices.md): one reading
of a device of conductance G has sigma_G = rel * G + abs (0.2 % + 0.02 uS by default),
plus telegraph noise of amplitude ``rtn_amplitude_rel * G`` on a few devices. A read is
accepted within 5 sigma (plus the telegraph amplitude): at that bound a correct read fails
about once in 1.7 million devices.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from nvmlab.errors import SafetyLimitError
from nvmlab.instruments.arrays import ArrayOperations, ReadSettings
from nvmlab.instruments.station import Station
from nvmlab.mocks.benchfile import BenchConfig
from nvmlab.mocks.emulated import EmulatedBench, build_emulated_bench
from nvmlab.mocks.physics.resistor import ResistorArray

SMUS = ["keithley2400", "keithley2636b", "keysight_b2902a"]
TWO_CHANNEL = ["keithley2636b", "keysight_b2902a"]
Z = 5.0
#: Default read noise of the device model (devices.md): relative part, absolute part (S).
NOISE_REL, NOISE_ABS_S = 0.002, 0.02e-6


@contextmanager
def operations(**options: Any) -> Iterator[tuple[ArrayOperations, EmulatedBench]]:
    options.setdefault("rows", 10)
    options.setdefault("cols", 10)
    config = BenchConfig(physics=options.pop("physics", {}))
    bench = build_emulated_bench(config, **options)
    try:
        with Station(
            bench.station_dict(), visa_library=bench.visa_library(), clock=bench.clock
        ) as station:
            yield ArrayOperations(station.smu, station.board, station.limits), bench
    finally:
        bench.close()


def sigma_s(
    truth: dict[str, np.ndarray], rel: float = NOISE_REL, abs_s: float = NOISE_ABS_S
) -> np.ndarray:
    """One reading's noise (S) of every device, telegraph amplitude included."""
    g = truth["conductance_s"]
    return rel * g + abs_s, truth["rtn_amplitude_rel"] * g


def assert_within_noise(
    measured: np.ndarray, truth: dict[str, np.ndarray], readings: int = 1, **noise: float
) -> None:
    white, telegraph = sigma_s(truth, **noise)
    error = np.abs(measured - truth["conductance_s"])
    bound = Z * white / np.sqrt(readings) + telegraph
    worst = np.unravel_index(np.argmax(error / bound), error.shape)
    assert np.all(error <= bound), (
        f"device {worst}: read {measured[worst]:.4g} S, true {truth['conductance_s'][worst]:.4g} S"
    )


@pytest.mark.parametrize("smu", SMUS)
def test_a_map_read_matches_the_chip_on_every_smu_model(smu: str) -> None:
    with operations(smu_model=smu, seed=0) as (ops, bench):
        seen: list[tuple[int, int]] = []
        result = ops.read_map(
            settings=ReadSettings(read_v=0.2, nplc=1.0),
            progress=lambda done, total, read: seen.append((done, total, read.row, read.col)),
        )
        truth = bench.ground_truth()
    assert seen == [(k + 1, 100, k // 10, k % 10) for k in range(100)]
    assert result.devices == [(r, c) for r in range(10) for c in range(10)]
    assert_within_noise(result.conductance_s, truth)
    # Unbiased: the mean normalised error of 100 devices is 0 within 5 / sqrt(100).
    white, telegraph = sigma_s(truth)
    plain = telegraph == 0
    z = (result.conductance_s - truth["conductance_s"])[plain] / white[plain]
    assert abs(z.mean()) < Z / np.sqrt(plain.sum())
    assert np.allclose(result.current_a, result.conductance_s * 0.2)


@pytest.mark.parametrize("smu", SMUS)
def test_averaged_reads_at_another_seed_with_more_noise(smu: str) -> None:
    """Seed 7, ten times the relative read noise: 16 readings per device, mean within
    5 standard errors of the truth, and the reported standard error is the noise's."""
    rel = 0.02
    with operations(smu_model=smu, seed=7, physics={"read_noise_rel": rel}) as (ops, bench):
        devices = [(r, c) for r in range(10) for c in range(0, 10, 3)]
        result = ops.read_map(devices, settings=ReadSettings(averages=16, nplc=1.0))
        truth = bench.ground_truth()
    mask = np.isfinite(result.conductance_s)
    assert mask.sum() == len(devices)
    sub = {
        k: v[mask] for k, v in truth.items() if isinstance(v, np.ndarray) and v.shape == mask.shape
    }
    assert_within_noise(result.conductance_s[mask], sub, readings=16, rel=rel)
    white, telegraph = sigma_s(sub, rel=rel)
    ratio = result.stderr_s[mask] / (white / 4)
    # The median of 40 ratios s / sigma (15 degrees of freedom each) lies near 1.
    assert 0.75 < float(np.median(ratio[telegraph == 0])) < 1.25


@pytest.mark.parametrize("smu", TWO_CHANNEL)
def test_the_tracking_read_with_two_channels_reads_the_device_alone(smu: str) -> None:
    with operations(smu_model=smu, seed=3) as (ops, bench):
        result = ops.read_map(settings=ReadSettings(scheme="track-b", nplc=1.0))
        truth = bench.ground_truth()
    assert_within_noise(result.conductance_s, truth)


def test_the_tracking_read_needs_a_second_channel() -> None:
    with (
        operations(smu_model="keithley2400") as (ops, _),
        pytest.raises(ValueError, match="two-channel SMU"),
    ):
        ops.read_device(0, 0, ReadSettings(scheme="track-b"))


@pytest.mark.parametrize("smu", SMUS)
def test_a_vector_matrix_product_is_the_chip_s(smu: str) -> None:
    rng = np.random.default_rng(11)
    volts = rng.uniform(-0.2, 0.2, 10)
    with operations(smu_model=smu, seed=5) as (ops, bench):
        currents = ops.vector_matrix_product(volts, nplc=1.0, current_limit_a=5e-4)
        truth = bench.ground_truth()
        lines = {s.mode for s in (*bench.bench.rows_state, *bench.bench.cols_state)}
    g, b = truth["linear_conductance_s"], truth["iv_cubic_b_per_v2"]
    v = volts[:, None]
    expected = (g * v * (1 + b * v * v)).sum(axis=0)
    white = (NOISE_REL * g + NOISE_ABS_S) * np.abs(v)
    sigma = np.sqrt((white**2).sum(axis=0))
    telegraph = (truth["rtn_amplitude_rel"] * g * np.abs(v)).sum(axis=0)
    assert np.all(np.abs(currents - expected) <= Z * sigma + telegraph), (currents, expected)
    assert lines == {"gnd"}  # grounded afterwards


def test_vector_matrix_inputs_beyond_the_read_limit_send_nothing() -> None:
    with operations() as (ops, bench):
        volts = np.zeros(10)
        volts[4] = 0.6
        with pytest.raises(SafetyLimitError, match="row 4 voltage"):
            ops.vector_matrix_product(volts)
        assert all(s.mode == "gnd" for s in bench.bench.rows_state)
        with pytest.raises(ValueError, match="expected 10 row voltages"):
            ops.vector_matrix_product(np.zeros(3))


#: Below this fraction of its threshold a device does not switch at all (the device
#: model's ``switching_floor_fraction``, devices.md).
SWITCHING_FLOOR = 0.5


@pytest.mark.parametrize(("scheme", "amplitude"), [("v/2", 2.4), ("v/3", 1.5)])
def test_a_write_pulse_sets_the_selected_device_and_spares_the_others(
    scheme: str, amplitude: float
) -> None:
    """A 1 ms set pulse: the selected device rises; every other device sees what the scheme
    gives it (V/2, or V/3 and -V/3) and is unchanged (but for relaxation) when that is
    below the switching floor of its own threshold."""
    with operations(seed=2) as (ops, bench):
        before = bench.ground_truth()
        g0 = before["conductance_s"]
        functional = (before["defect"] == 0) & (before["set_threshold_v"] < amplitude - 0.3)
        row, col = (int(i[0]) for i in np.nonzero(functional))
        ops.write_pulse(row, col, amplitude, 1e-3, scheme=scheme)
        after = bench.ground_truth()["conductance_s"]
    assert after[row, col] > g0[row, col] * 1.02
    half = np.zeros_like(functional)
    half[row, :] = half[:, col] = True
    seen = (
        np.where(half, amplitude / 2, 0.0)
        if scheme == "v/2"
        else np.where(half, amplitude / 3, -amplitude / 3)
    )
    threshold = np.where(seen >= 0, before["set_threshold_v"], before["reset_threshold_v"])
    spared = np.abs(seen) < SWITCHING_FLOOR * np.abs(threshold)
    spared[row, col] = False
    assert spared.sum() > 20
    assert np.allclose(after[spared], g0[spared], rtol=1e-3)
    assert bench.bench.max_applied_v["board"] == pytest.approx(amplitude)


@pytest.mark.parametrize(
    ("amplitude_v", "width_s", "match"),
    [
        (2.6, 1e-3, "write pulse amplitude"),
        (-3.0, 1e-3, "write pulse amplitude"),
        (1.0, 0.5, "pulse width"),
    ],
)
def test_an_over_limit_write_pulse_sends_nothing(
    amplitude_v: float, width_s: float, match: str
) -> None:
    with operations() as (ops, bench):
        with pytest.raises(SafetyLimitError, match=match):
            ops.write_pulse(1, 1, amplitude_v, width_s)
        assert bench.bench.max_applied_v["board"] == 0.0


def test_refused_read_settings_send_nothing() -> None:
    with operations() as (ops, bench):
        for settings, error, match in [
            (ReadSettings(read_v=0.7), SafetyLimitError, "read voltage"),
            (ReadSettings(read_v=0.0), ValueError, "non-zero"),
            (ReadSettings(averages=0), ValueError, "averages"),
            (ReadSettings(current_limit_a=1.0), SafetyLimitError, "compliance"),
        ]:
            with pytest.raises(error, match=match):
                ops.read_device(0, 0, settings)
        with pytest.raises(ValueError, match="outside 0..9"):
            ops.read_device(10, 0)
        assert bench.bench.max_applied_v["A"] == 0.0


def test_an_eflash_program_pulse_is_checked_against_the_eflash_limit() -> None:
    """On an eFlash board the amplitude is a program / erase bias: the write limit (2.5 V)
    does not apply, the eFlash limit does."""
    with operations(array="eflash", rows=4, cols=4) as (ops, bench):
        ops.write_pulse(1, 2, 4.5, 1e-5)
        assert bench.bench.max_applied_v["board"] == pytest.approx(4.5)
        with pytest.raises(SafetyLimitError, match="eFlash limit"):
            ops.write_pulse(1, 2, -13.0, 1e-5)


@pytest.mark.parametrize(
    ("scheme", "smu", "factor"),
    [
        ("track", "keithley2400", 1.0),
        ("track-b", "keithley2636b", 1.0),
        # Floating lines: the sneak path (n-1) G, (n-1)^2 G, (n-1) G in series adds
        # G (n-1)^2 / (2n - 1) = 9/7 G on a 4 x 4 array of equal devices.
        ("float", "keysight_b2902a", 1.0 + 9.0 / 7.0),
    ],
)
def test_each_read_scheme_on_a_crossbar_of_equal_resistors(
    scheme: str, smu: str, factor: float
) -> None:
    g = 10e-6
    bench = build_emulated_bench(
        rows=4, cols=4, array=ResistorArray(np.full((4, 4), g)), smu_model=smu
    )
    try:
        with Station(
            bench.station_dict(), visa_library=bench.visa_library(), clock=bench.clock
        ) as station:
            ops = ArrayOperations(station.smu, station.board, station.limits)
            read = ops.read_device(1, 2, ReadSettings(scheme=scheme))  # type: ignore[arg-type]
    finally:
        bench.close()
    assert read.conductance_s == pytest.approx(factor * g, rel=1e-6)
