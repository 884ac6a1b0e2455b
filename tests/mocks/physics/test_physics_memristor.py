"""Memristor crossbar physics checked the way a lab would check a chip against its datasheet."""

from __future__ import annotations

import numpy as np
import pytest
from physics_lab import conductance_map, read_conductance, read_row

from nvmlab.errors import ConfigError
from nvmlab.mocks.physics import create_array
from nvmlab.mocks.physics.base import LineBias, scheme_bias
from nvmlab.mocks.physics.memristor import MemristorArray, MemristorParams

YEAR_S = 365.25 * 24 * 3600
READS = 300  # repeated reads of the noise statistics


def pulse(
    array: MemristorArray,
    row: int,
    col: int,
    amplitude_v: float,
    width_s: float = 1e-3,
    scheme: str = "v/2",
) -> bool:
    bias = scheme_bias(array.rows, array.cols, row, col, amplitude_v, scheme)
    return array.stress(bias, width_s, 25.0)


def truth_g(array: MemristorArray) -> np.ndarray:
    return array.ground_truth()["conductance_s"]


def mid_window_devices(array: MemristorArray, lo: float = 10e-6, hi: float = 60e-6) -> np.ndarray:
    truth = array.ground_truth()
    ok = (truth["defect"] == 0) & (truth["conductance_s"] > lo) & (truth["conductance_s"] < hi)
    return np.argwhere(ok)


# -- threshold definition ----------------------------------------------------------------


@pytest.mark.parametrize("polarity", [+1, -1], ids=["set", "reset"])
def test_one_ms_pulse_at_the_threshold_parameter_changes_conductance_by_two_percent(
    polarity: int,
) -> None:
    medians = {}
    for factor in (0.8, 1.0, 1.2):
        array = MemristorArray(16, 16, seed=3)  # the same chip, fresh, for every amplitude
        truth = array.ground_truth()
        threshold = truth["set_threshold_v"] if polarity > 0 else -truth["reset_threshold_v"]
        changes = []
        for r, c in mid_window_devices(array):
            before = truth_g(array)[r, c]
            pulse(array, r, c, polarity * factor * threshold[r, c], 1e-3)
            changes.append(truth_g(array)[r, c] / before - 1.0)
        medians[factor] = float(np.median(np.abs(changes)))
        # set raises, reset lowers the conductance
        assert np.median(changes) * polarity > 0
    print(f"median |change| per 1 ms pulse at 0.8/1.0/1.2 x threshold: {medians}")
    # Sampling error: n = 135 mid-window devices (fixed seed), each change spread 30 %
    # (cycle to cycle) around 2 %: the median's error is 1.25 x 0.3 x 0.02 / sqrt(135)
    # = 0.0006, and +-0.003 is about 4 of them.
    assert len(changes) >= 100
    assert 0.017 <= medians[1.0] <= 0.023
    assert medians[0.8] < 0.1 * 0.02
    assert medians[1.2] > 5 * 0.02


def test_a_threshold_sweep_with_the_definition_recovers_each_device_threshold() -> None:
    """Lab procedure: 1 ms set pulses of rising amplitude (10 mV steps, V/3 scheme so the
    sweeps of other devices do not disturb this one), a perfect read after each; the
    threshold is the first amplitude whose pulse changes G by >= 2 %."""
    array = MemristorArray(8, 8, seed=11)
    truth = array.ground_truth()
    errors = []
    for r, c in mid_window_devices(array, 8e-6, 80e-6):
        amplitude = 0.3
        while amplitude < 2.0:
            before = truth_g(array)[r, c]
            pulse(array, r, c, amplitude, 1e-3, "v/3")
            if truth_g(array)[r, c] / before - 1 >= 0.02:
                break
            amplitude += 0.01
        errors.append(amplitude - truth["set_threshold_v"][r, c])
    errors_v = np.array(errors)
    # One pulse's 30 % cycle-to-cycle spread moves the crossing by about 0.3 x 50 mV = 15 mV
    # per device. Over n = 55 devices (fixed seed) the median's error is 1.25 x 15 mV /
    # sqrt(55) = 2.5 mV: 4 of them (10 mV) plus the 10 mV step of the sweep gives 20 mV;
    # each device is within 4 x 15 mV = 60 mV.
    assert errors_v.size >= 50
    assert abs(np.median(errors_v)) < 0.02
    assert np.all(np.abs(errors_v) < 0.06)


def test_pulse_width_dependence_one_us_barely_switches_one_ms_does() -> None:
    changes = {}
    for width in (1e-6, 1e-4, 1e-3, 1e-2):
        array = MemristorArray(8, 8, seed=5)
        truth = array.ground_truth()
        rel = []
        for r, c in mid_window_devices(array):
            before = truth_g(array)[r, c]
            pulse(array, r, c, truth["set_threshold_v"][r, c], width)
            rel.append(truth_g(array)[r, c] / before - 1)
        changes[width] = float(np.median(rel))
    assert changes[1e-6] < 1e-4
    assert changes[1e-6] < changes[1e-4] < changes[1e-3] < changes[1e-2]
    # 36 mid-window devices (fixed seed), 30 % spread around 2 %: the median's sampling
    # error is 1.25 x 0.3 x 0.02 / sqrt(36) = 0.00125, and +-0.005 is 4 of them.
    assert 0.015 < changes[1e-3] < 0.025


def test_set_slows_near_the_top_and_reset_near_the_bottom_and_g_stays_bounded() -> None:
    params = MemristorParams(cycle_spread_cv=0.0, defect_rate=0.0)
    array = MemristorArray(4, 4, seed=1, params=params)
    thr = array.set_threshold_v[1, 1]

    def step(g_start: float, amplitude: float) -> float:
        array.g_s[1, 1] = g_start
        before = array.g_s[1, 1]
        pulse(array, 1, 1, amplitude)
        return float(array.g_s[1, 1] / before - 1)

    assert step(200e-6, thr + 0.05) < 0.7 * step(20e-6, thr + 0.05)
    rthr = array.reset_threshold_mag_v[1, 1]
    assert abs(step(1.5e-6, -(rthr + 0.05))) < 0.7 * abs(step(20e-6, -(rthr + 0.05)))
    for _ in range(20):
        pulse(array, 1, 1, 2.0)
    assert array.g_s[1, 1] <= params.g_max_s * (1 + 1e-12)
    assert array.g_s[1, 1] > 0.9 * params.g_max_s
    for _ in range(20):
        pulse(array, 1, 1, -2.2)
    assert params.g_min_s * (1 - 1e-12) <= array.g_s[1, 1] < 1.1 * params.g_min_s


# -- half-select ----------------------------------------------------------------------


def test_v2_write_disturbs_low_threshold_half_selected_devices_where_v3_does_not() -> None:
    chip = MemristorArray(16, 16, seed=4)
    truth = chip.ground_truth()
    thr = np.where(truth["defect"] == 0, truth["set_threshold_v"], np.inf)
    r0, c0 = np.unravel_index(np.argmin(thr), thr.shape)  # the weakest device of the chip
    c_sel = (c0 + 1) % chip.cols  # write a neighbour on the same row: (r0, c0) is half-selected
    amplitude = 2 * (thr[r0, c0] + 0.1)  # V/2 puts 0.1 V over the weak device's threshold

    disturbed = {}
    for scheme in ("v/2", "v/3"):
        array = MemristorArray(16, 16, seed=4)
        before = truth_g(array)
        pulse(array, int(r0), int(c_sel), amplitude, 1.1e-3, scheme)
        change = np.abs(truth_g(array) / before - 1)
        change[r0, c_sel] = 0.0  # the selected device is meant to change
        disturbed[scheme] = change
    print(
        f"weak device Vth {thr[r0, c0]:.3f} V, amplitude {amplitude:.3f} V: "
        f"V/2 disturb {disturbed['v/2'][r0, c0]:.3%}, V/3 largest disturb {disturbed['v/3'].max():.4%}"
    )
    assert disturbed["v/2"][r0, c0] > 0.05
    assert disturbed["v/3"].max() < 0.002
    # Under V/2 only the selected row and column are at risk; the rest sees 0 V.
    others = np.ones_like(disturbed["v/2"], dtype=bool)
    others[r0, :] = others[:, c_sel] = False
    assert disturbed["v/2"][others].max() == 0.0


# -- statistics against the parameters ----------------------------------------------------


@pytest.mark.parametrize(
    ("table", "set_mean", "reset_mean", "cv"),
    [
        ({}, 1.0, 1.1, 0.25),
        (
            {"set_threshold_mean_v": 1.3, "reset_threshold_mean_v": 0.9, "threshold_cv": 0.1},
            1.3,
            0.9,
            0.1,
        ),
    ],
    ids=["defaults", "bench-file"],
)
def test_threshold_mean_and_cv_follow_the_parameters(
    table: dict, set_mean: float, reset_mean: float, cv: float
) -> None:
    truth = create_array("memristor", 64, 64, seed=9, params=table).ground_truth()
    n = truth["set_threshold_v"].size
    for values, mean in (
        (truth["set_threshold_v"], set_mean),
        (-truth["reset_threshold_v"], reset_mean),
    ):
        assert abs(values.mean() - mean) < 4 * cv * mean / np.sqrt(n)
        assert abs(values.std() / values.mean() - cv) < 4 * cv / np.sqrt(2 * n) + 1e-9
        assert values.min() > 0


def test_temperature_coefficient_measured_at_25_and_85_c() -> None:
    array = MemristorArray(16, 16, seed=2)
    truth = array.ground_truth()
    ok = truth["defect"] == 0
    g25 = conductance_map(array, temperature_c=25.0)
    g85 = conductance_map(array, temperature_c=85.0)
    slope = (g85 - g25) / 60.0
    nonlinearity = 1 + truth["iv_cubic_b_per_v2"] * 0.2**2  # I(0.2 V)/0.2 V includes the cubic term
    expected = truth["temp_coeff_s_per_k"] * nonlinearity
    np.testing.assert_allclose(slope[ok], expected[ok], rtol=1e-9)
    # the truth's coefficient of the conductance (read at 0.2 V) is what this measures
    np.testing.assert_allclose(slope[ok], truth["conductance_temp_coeff_s_per_k"][ok], rtol=1e-9)
    per_device = slope[ok] / nonlinearity[ok]
    # n = 252 functional devices, 10 % device spread: the mean's relative error is
    # 0.1 / sqrt(n) = 0.6 % and the spread's error 0.1 / sqrt(2 n) = 0.0045; 4 of each.
    n = per_device.size
    assert n >= 200
    assert abs(per_device.mean() / 0.117e-6 - 1) < 4 * 0.1 / np.sqrt(n)
    assert abs(per_device.std() / per_device.mean() - 0.1) < 4 * 0.1 / np.sqrt(2 * n)
    # Additive: the same shift in uS/K for every state, so the relative drift is largest at low G.
    low, high = np.argmin(np.where(ok, g25, np.inf)), np.argmax(np.where(ok, g25, 0))
    rel = slope.ravel() / g25.ravel()
    assert rel[low] > 3 * rel[high]


def test_read_noise_sigma_follows_state_as_specified() -> None:
    array = MemristorArray(16, 16, seed=6)
    truth = array.ground_truth()
    reads = np.array([[read_row(array, r) for r in range(array.rows)] for _ in range(READS)])
    g_lin = truth["linear_conductance_s"]
    sigma_g = reads.std(axis=0) / (1 + truth["iv_cubic_b_per_v2"] * 0.04)  # back to G units
    quiet = (truth["defect"] == 0) & (truth["rtn_amplitude_rel"] == 0)
    expected = 0.002 * g_lin + 0.02e-6
    ratio = sigma_g[quiet] / expected[quiet]
    # Sampling error of a standard deviation from N reads: relative 1 / sqrt(2 (N - 1)),
    # 4.1 % for N = 300. Each quiet device is within 5 of them (237 devices: the chance
    # that any one strays that far is 237 x 6e-7); their median within 4 x 1.25 x 4.1 % /
    # sqrt(237).
    rel_err = 1 / np.sqrt(2 * (READS - 1))
    n = int(quiet.sum())
    assert n >= 200
    assert abs(np.median(ratio) - 1) < 4 * 1.25 * rel_err / np.sqrt(n)
    assert np.all(np.abs(ratio - 1) < 5 * rel_err)
    # sigma_G = a G + c fitted across states recovers 0.2 % and 0.02 uS, each within 4 of
    # the errors that the per-device sampling error propagates through the straight-line fit
    x = np.column_stack([g_lin[quiet], np.ones(n)])
    spread = np.linalg.inv(x.T @ x) @ x.T
    cov = spread @ np.diag((expected[quiet] * rel_err) ** 2) @ spread.T
    a, c = np.polyfit(g_lin[quiet], sigma_g[quiet], 1)
    assert abs(a - 0.002) < 4 * np.sqrt(cov[0, 0])
    assert abs(c - 0.02e-6) < 4 * np.sqrt(cov[1, 1])
    # the averaged read is the ground truth, within 5 standard errors of the mean of N reads
    mean_error = expected[quiet] * (1 + truth["iv_cubic_b_per_v2"][quiet] * 0.04) / np.sqrt(READS)
    assert np.all(
        np.abs(reads.mean(axis=0)[quiet] - truth["conductance_s"][quiet]) < 5 * mean_error
    )


def test_telegraph_noise_on_five_percent_of_devices_switches_between_two_levels() -> None:
    array = MemristorArray(64, 64, seed=8)
    truth = array.ground_truth()
    has_rtn = truth["rtn_amplitude_rel"] > 0
    n = has_rtn.size
    assert abs(has_rtn.mean() - 0.05) < 4 * np.sqrt(0.05 * 0.95 / n)
    amps = truth["rtn_amplitude_rel"][has_rtn]
    assert amps.min() >= 0.005 and amps.max() <= 0.02

    candidates = np.argwhere(
        has_rtn & (truth["rtn_amplitude_rel"] > 0.012) & (truth["conductance_s"] > 30e-6)
    )
    r, c = candidates[0]
    dwell = truth["rtn_dwell_s"][r, c]
    assert dwell == array.rtn_dwell_s[r, c] and np.all(truth["rtn_dwell_s"][~has_rtn] == 0)
    samples = []
    for _ in range(400):
        array.relax(dwell, 25.0)
        samples.append(read_conductance(array, r, c))
    s = np.array(samples)
    mid = s.mean()
    upper, lower = s[s > mid], s[s <= mid]
    assert min(upper.size, lower.size) > 80  # both levels are visited
    g = truth["conductance_s"][r, c]
    amplitude = truth["rtn_amplitude_rel"][r, c]
    step = (upper.mean() - lower.mean()) / g
    # The step between the two level means has the read noise's sampling error,
    # sigma_rel x sqrt(1/n_up + 1/n_low), with sigma_rel = 0.2 % + 0.02 uS / G; the levels
    # are > 5 sigma apart here, so splitting at the mean misfiles almost no read. 4 errors:
    sigma_rel = 0.002 + 0.02e-6 / g
    tolerance = 4 * sigma_rel * np.sqrt(1 / upper.size + 1 / lower.size) / amplitude
    assert amplitude > 5 * sigma_rel
    assert abs(step / amplitude - 1) < tolerance


@pytest.mark.parametrize(("rate", "on_share"), [(0.01, 0.4), (0.1, 0.5)])
def test_defect_rate_and_split_and_stuck_devices_ignore_pulses(
    rate: float, on_share: float
) -> None:
    array = create_array(
        "memristor", 64, 64, seed=12, params={"defect_rate": rate, "stuck_on_fraction": on_share}
    )
    assert isinstance(array, MemristorArray)
    truth = array.ground_truth()
    n = truth["defect"].size
    defective = truth["defect"] != 0
    assert abs(defective.mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / n)
    k = defective.sum()
    assert abs(truth["stuck_on"].sum() / k - on_share) < 4 * np.sqrt(on_share * (1 - on_share) / k)
    assert np.all(truth["conductance_s"][truth["stuck_off"]] < 1e-6)
    assert np.all(truth["conductance_s"][truth["stuck_on"]] > 300e-6)
    (r_off, c_off), (r_on, c_on) = (
        np.argwhere(truth["stuck_off"])[0],
        np.argwhere(truth["stuck_on"])[0],
    )
    g_off, g_on = (
        read_conductance(array, r_off, c_off, noise=False),
        read_conductance(array, r_on, c_on, noise=False),
    )
    for _ in range(5):
        pulse(array, r_off, c_off, 2.0)
        pulse(array, r_on, c_on, -2.2)
    assert read_conductance(array, r_off, c_off, noise=False) == g_off
    assert read_conductance(array, r_on, c_on, noise=False) == g_on


# -- retention and forming -------------------------------------------------------------


def test_relaxation_after_programming_is_below_one_percent_in_ten_years_but_faster_hot() -> None:
    def programmed() -> tuple[MemristorArray, float]:
        array = MemristorArray(4, 4, seed=21, params=MemristorParams(defect_rate=0.0))
        pulse(array, 2, 2, array.set_threshold_v[2, 2] + 0.1)
        return array, float(truth_g(array)[2, 2])

    cold, g0 = programmed()
    elapsed = 0.0
    for t in np.logspace(0, np.log10(10 * YEAR_S), 40):  # read now and then over ten years
        cold.relax(t - elapsed, 25.0)
        elapsed = t
    drift_10y = abs(truth_g(cold)[2, 2] / g0 - 1)
    assert 0 < drift_10y < 0.01

    day_cold, g_a = programmed()
    day_cold.relax(86400.0, 25.0)
    day_hot, g_b = programmed()
    day_hot.relax(86400.0, 85.0)
    assert abs(truth_g(day_hot)[2, 2] / g_b - 1) > 1.3 * abs(truth_g(day_cold)[2, 2] / g_a - 1)
    # a set device relaxes downwards
    assert truth_g(day_hot)[2, 2] < g_b


def test_tiny_disturbances_do_not_turn_log_time_relaxation_into_a_linear_drift() -> None:
    """Lab procedure: program a device, then let its neighbours' write pulses disturb it
    for 100 s (a 1 us pulse on its row every 0.1 s, a third of its amplitude on this device:
    above its switching floor, each moving it by a few 1e-6 at most), and compare with its
    twin left alone. The disturbances add up to their own small changes; they do not make
    the device a freshly programmed one each time (which would restart its log-time
    relaxation 1000 times: 0.05 %/decade x log10(1.1) x 1000 = 2 % of drift instead of
    0.1 %)."""

    def programmed() -> MemristorArray:
        array = MemristorArray(4, 4, seed=21, params=MemristorParams(defect_rate=0.0))
        pulse(array, 2, 2, array.set_threshold_v[2, 2] + 0.1)
        array.relax(1.0, 25.0)
        return array

    alone, disturbed = programmed(), programmed()
    g0 = float(truth_g(disturbed)[2, 2])
    # a pulse on (2, 0) under V/3: (2, 2) is half-selected at a third of it, in set
    amplitude = 3.0 * 0.62 * float(disturbed.set_threshold_v[2, 2])
    before = disturbed.g_s[2, 2]
    pulse(disturbed, 2, 0, amplitude, 1e-6, "v/3")
    step = abs(disturbed.g_s[2, 2] / before - 1)
    assert 0 < step < 1e-5  # above the floor, but tiny
    for _ in range(999):
        disturbed.relax(0.1, 25.0)
        pulse(disturbed, 2, 0, amplitude, 1e-6, "v/3")
    alone.relax(100.0, 25.0)
    disturbed.relax(0.1, 25.0)
    drift_alone = abs(float(truth_g(alone)[2, 2]) / g0 - 1)
    drift_disturbed = abs(float(truth_g(disturbed)[2, 2]) / g0 - 1)
    assert drift_alone < 0.002
    # the disturbances' own changes (1000 x at most ``step``) plus the log-time drift
    assert drift_disturbed <= drift_alone + 1000 * step + 1e-4


def test_virgin_devices_need_a_forming_ramp_before_they_switch() -> None:
    array = MemristorArray(8, 8, seed=13, params=MemristorParams(virgin=True, defect_rate=0.0))
    assert np.all(truth_g(array) < 0.5e-6)
    assert not array.ground_truth()["formed"].any()
    # a set pulse well above the ordinary thresholds does nothing to a virgin device
    pulse(array, 3, 4, 1.6, 1.1e-3)
    pulse(array, 3, 4, -2.0, 1.1e-3)
    assert truth_g(array)[3, 4] < 0.5e-6
    # forming ramp: 50 mV steps from 1 V, V/2 on the other lines, stop once it conducts
    amplitude = 1.0
    while read_conductance(array, 3, 4) < 2e-6 and amplitude < 3.0:
        amplitude += 0.05
        pulse(array, 3, 4, amplitude, 1e-3)
    g_formed = read_conductance(array, 3, 4, noise=False)
    assert amplitude < 3.0
    assert 1 / 150e3 * 0.99 < g_formed < 1 / 5e3 * 1.1  # 5-150 kOhm (x the cubic term at 0.2 V)
    formed = array.ground_truth()["formed"]
    assert formed[3, 4] and formed.sum() == 1  # half-selected devices saw at most 1.5 V
    before = truth_g(array)[3, 4]
    pulse(array, 3, 4, -(array.reset_threshold_mag_v[3, 4] + 0.1))
    assert truth_g(array)[3, 4] < 0.97 * before


# -- cheap reads, the factory -------------------------------------------------------------


def test_a_read_bias_changes_nothing_and_returns_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """'At once' without a stopwatch: a read bias never reaches the line-network solve (its
    time per call is a figure of solver_benchmark.py)."""
    array = MemristorArray(64, 64, seed=0)
    bias = LineBias.grounded(64, 64)
    bias.row_v[:] = 0.2
    before = truth_g(array)
    solves: list[LineBias] = []
    device_voltages = array.device_voltages

    def counted(bias: LineBias, temperature_c: float) -> np.ndarray:
        solves.append(bias)
        return device_voltages(bias, temperature_c)

    monkeypatch.setattr(array, "device_voltages", counted)
    for _ in range(1000):
        assert array.stress(bias, 0.02, 25.0) is False
    assert np.array_equal(truth_g(array), before)
    assert solves == [], "a read-bias stress() solved the line network"
    # the spy sees the solve a write pulse needs
    assert pulse(array, 3, 4, 1.2) is True
    assert len(solves) == 1


def test_bench_file_parameters_are_validated_with_named_fields() -> None:
    with pytest.raises(ConfigError, match=r"memristor\.threshold_cv.*1\.5.*allowed 0 to 0\.45"):
        create_array("memristor", 8, 8, params={"threshold_cv": 1.5})
    with pytest.raises(
        ConfigError,
        match=r"memristor\.set_threshold_volts.*allowed parameters:.*set_threshold_mean_v",
    ):
        create_array("memristor", 8, 8, params={"set_threshold_volts": 1.0})
    with pytest.raises(ConfigError, match=r"memristor\.virgin.*true or false"):
        create_array("memristor", 8, 8, params={"virgin": 1})
    with pytest.raises(ConfigError, match=r"memristor\.g_min_s.*g_max_s"):
        create_array("memristor", 8, 8, params={"g_min_s": 400e-6})
    with pytest.raises(ConfigError, match=r"eflash\.read_control_gate_v.*allowed 0 to 6"):
        create_array("eflash", 8, 8, params={"read_control_gate_v": 7.5})
    with pytest.raises(ConfigError, match=r"array\.kind.*memristor, eflash, resistor"):
        create_array("pcm", 8, 8)
    with pytest.raises(ConfigError, match=r"array\.rows"):
        create_array("memristor", 0, 8)
    resistor = create_array("resistor", 4, 4)
    np.testing.assert_allclose(resistor.ground_truth()["conductance_s"], 50e-6)
    resistor = create_array("resistor", 4, 4, params={"conductance_s": 20e-6})
    np.testing.assert_allclose(conductance_map(resistor), 20e-6)
    with pytest.raises(ConfigError, match=r"resistor\.conductance_s"):
        create_array("resistor", 4, 4, params={"conductance_s": -1.0})


def test_ninety_five_percent_of_devices_relax_less_than_one_percent_in_ten_years() -> None:
    """docs/devices.md: < 1 % change over a projected 10 years at room temperature, for the
    chip's devices (the 95th percentile of the 4096 devices of the default bench)."""
    array = MemristorArray(64, 64, seed=0, params=MemristorParams(defect_rate=0.0))
    # one set pulse on every device at once (every row at 1.5 V, every column at 0 V)
    bias = LineBias(np.full(64, 1.5), np.zeros(64))
    before = truth_g(array)
    assert array.stress(bias, 1e-3, 25.0)
    g0 = truth_g(array)
    # the devices that pulse programmed (a change of at least relax_restart_rel); those of
    # the highest thresholds it barely touched keep their as-delivered state, which does
    # not relax
    programmed = np.abs(g0 / before - 1) >= MemristorParams().relax_restart_rel
    assert programmed.mean() > 0.95
    elapsed = 0.0
    for t in np.logspace(0, np.log10(10 * YEAR_S), 40):
        array.relax(t - elapsed, 25.0)
        elapsed = t
    drift = np.abs(truth_g(array) / g0 - 1)[programmed]
    assert np.all(drift > 0)
    p95 = float(np.percentile(drift, 95))
    print(
        f"10-year relaxation: median {np.median(drift):.2%}, 95th percentile {p95:.2%}, "
        f"worst {drift.max():.2%}"
    )
    assert p95 < 0.01


def test_truth_relaxation_per_decade_is_what_the_conductance_does_per_decade() -> None:
    array = MemristorArray(4, 4, seed=21, params=MemristorParams(defect_rate=0.0))
    pulse(array, 2, 2, array.set_threshold_v[2, 2] + 0.1)
    truth = array.ground_truth()
    assert truth["relax_direction"][2, 2] == -1 and truth["relax_direction"][0, 0] == 0
    g0 = truth["conductance_s"][2, 2]
    array.relax(9.0, 25.0)  # age 9 s: log10(1 + 9 s / 1 s) = one decade
    one = array.ground_truth()["conductance_s"][2, 2]
    array.relax(90.0, 25.0)  # age 99 s: two decades
    two = array.ground_truth()["conductance_s"][2, 2]
    a = truth["relax_per_decade_rel"][2, 2]
    assert one / g0 - 1 == pytest.approx(-a, rel=1e-9)
    assert two / g0 - 1 == pytest.approx(-2 * a, rel=1e-9)
