"""The retention sweep against the chip's ground truth: drift per decade per device,
in-situ at a raised temperature, the bake's Arrhenius acceleration, resume over TCP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from benches import DEFAULT, HARSH, characterization_bench

from nvmlab.characterization.sweep import run_sweep
from nvmlab.errors import ConfigError
from nvmlab.storage.profile import load_profile
from nvmlab.storage.query import fetch_arrays


def assert_left_safe(cb) -> None:
    """SMU terminals at 0 V or off, every board line grounded, and nothing beyond the
    station's write limit was ever applied."""
    world = cb.bench.bench
    assert all(v in (None, 0.0) for v in world.terminal_v.values())
    assert {line.mode for line in (*world.rows_state, *world.cols_state)} == {"gnd"}
    assert max(world.max_applied_v.values()) <= cb.station.limits.max_write_v + 1e-9


def _run_with_snapshots(cb, params):
    """Run the sweep keeping the truth after every unit (the direction a device drifts in
    changes when later units' V/3 pulses disturb it: compare at its own last unit)."""
    snaps: list[dict] = []
    result = run_sweep(
        "retention", station=cb.station, db=cb.db, chip=cb.chip, params=params,
        progress=lambda done, total: snaps.append(cb.truth()),
    )  # fmt: skip
    return result, snaps


def _measured_devices(cb) -> list[tuple[int, int]]:
    """The devices the units measured, in unit (row-major) order."""
    rows = fetch_arrays(cb.db, "device_parameters", columns=["row", "col", "name"])
    return sorted(
        {(int(r), int(c)) for r, c, n in zip(rows["row"], rows["col"], rows["name"], strict=True)
         if n.startswith("drift_per_decade_rel_")}
    )  # fmt: skip


def _per_device_truth(cb, snaps, n_states):
    """(devices, signed truth drift at each device's last unit) in unit order."""
    devices = _measured_devices(cb)
    truth = []
    for j, (r, c) in enumerate(devices):
        t = snaps[(j + 1) * n_states - 1]
        truth.append(
            (t["relax_per_decade_rel"][r, c] * t["relax_direction"][r, c], t["defect"][r, c])
        )
    return devices, truth


@pytest.mark.parametrize(
    ("physics", "seed", "tolerance"),
    # per-device median relative error of the signed drift per decade; HARSH has twice the
    # read noise (0.4 % + 0.04 uS per reading)
    [(DEFAULT, 1, 0.20), (HARSH, 2, 0.30), (DEFAULT, 5, 0.20)],
)
def test_drift_per_decade_against_truth(tmp_path: Path, physics, seed, tolerance):
    with characterization_bench(tmp_path, rows=8, cols=8, seed=seed, physics=physics) as cb:
        params = {"sample": 6, "points": 8}
        result, snaps = _run_with_snapshots(cb, params)
        assert result.status == "completed"
        assert_left_safe(cb)
        devices, truth = _per_device_truth(cb, snaps, 4)
        drift = result.arrays["drift_per_decade_rel"]
        end = cb.truth()
        errors, measured, true_mag = [], [], []
        for (r, c), (a, defect) in zip(devices, truth, strict=True):
            if defect != 0:
                continue  # stuck devices do not relax (truth 0): measured honestly, ~0
            if not np.isfinite(drift[r, c]):
                # left out for a scatter far above the chip's: a telegraph device
                assert end["rtn_amplitude_rel"][r, c] > 0
                continue
            errors.append(abs(drift[r, c] - a) / abs(a))
            measured.append(abs(drift[r, c]))
            true_mag.append(abs(a))
        assert len(errors) >= 5
        assert np.median(errors) < tolerance
        # population mean of the magnitude (0.05 %/decade at the defaults) within 15 %
        assert abs(np.mean(measured) / np.mean(true_mag) - 1) < 0.15
        plot = result.summary["plot"]
        assert len(plot["time_s"]) == 8 and plot["states_s"] == pytest.approx(
            [1e-5, 3e-5, 6e-5, 9e-5]
        )
        assert np.array(plot["mean_relative_change"]).shape == (4, 8)
        assert load_profile(cb.db, cb.chip).drift_per_decade_rel is not None


def test_in_situ_at_85c_matches_the_model(tmp_path: Path):
    """At 85 C the per-decade slope in log time is the same a (the Arrhenius factor only
    moves the time origin), relative to the in-situ read (G + k_T 60 K)(1 + b V^2): the
    relaxation moves G only, so the relative slope is a G / (G + k_T 60 K)."""
    with characterization_bench(tmp_path, rows=6, cols=6, seed=4) as cb:
        states = [30e-6, 90e-6]
        params = {
            "sample": 5, "temperature_c": 85.0, "states_s": states, "points": 10,
            "averages": 300,
        }  # fmt: skip
        result, snaps = _run_with_snapshots(cb, params)
        rows = fetch_arrays(cb.db, "device_parameters", columns=["row", "col", "name", "value"])
        got = {
            (int(r), int(c), n): v
            for r, c, n, v in zip(rows["row"], rows["col"], rows["name"], rows["value"], strict=True)
        }  # fmt: skip
        devices = _measured_devices(cb)
        errors = []
        for j, (r, c) in enumerate(devices):
            for i, state in enumerate(states):
                t = snaps[j * len(states) + i]  # the truth right after this unit
                if t["defect"][r, c] or t["rtn_amplitude_rel"][r, c] > 0:
                    continue  # stuck: no relaxation; telegraph: not a drift measurement
                a = t["relax_per_decade_rel"][r, c] * t["relax_direction"][r, c]
                g = t["linear_conductance_s"][r, c]
                expected = a * g / (g + t["temp_coeff_s_per_k"][r, c] * 60.0)
                measured = got[(r, c, f"drift_per_decade_rel_{state * 1e6:g}uS")]
                errors.append(abs(measured - expected) / abs(expected))
        assert len(errors) >= 8 and np.median(errors) < 0.2
        assert result.summary["temperature_c"] == pytest.approx(85.0, abs=0.5)
        assert result.summary["acceleration_factor"] == pytest.approx(683, rel=0.05)
        log = fetch_arrays(cb.db, "chamber_log", columns=["setpoint_c", "air_c"])
        assert log["air_c"].size > 10 and log["setpoint_c"][-1] == pytest.approx(85.0)


def test_bake_accelerates_as_arrhenius_says(tmp_path: Path):
    with characterization_bench(tmp_path, rows=6, cols=6, seed=3) as cb:
        params = {
            "sample": 5, "states_s": [30e-6, 90e-6], "points": 8, "bake": True,
            "bake_points": 3, "bake_first_s": 1800.0, "bake_last_s": 14400.0,
        }  # fmt: skip
        result = run_sweep("retention", station=cb.station, db=cb.db, chip=cb.chip, params=params)
        bake = result.summary["bake"]
        assert_left_safe(cb)
        truth = cb.truth()  # the bake programmed every device last: its direction is now
        rows = fetch_arrays(cb.db, "device_parameters", columns=["row", "col", "name", "value"])
        got = {
            (int(r), int(c), n): v
            for r, c, n, v in zip(rows["row"], rows["col"], rows["name"], rows["value"], strict=True)
        }  # fmt: skip
        devices = {(r, c) for r, c, n in got if n == "retention_bake_g_000"}
        assert len(devices) == 5
        measured, expected = [], []
        for r, c in devices:
            if truth["defect"][r, c]:
                continue
            a = truth["relax_per_decade_rel"][r, c] * truth["relax_direction"][r, c]
            g0, g3 = got[(r, c, "retention_bake_g_000")], got[(r, c, "retention_bake_g_003")]
            t0, t3 = got[(r, c, "retention_bake_teff_000")], got[(r, c, "retention_bake_teff_003")]
            measured.append(g3 / g0 - 1)
            expected.append(a * (np.log10(1 + t3) - np.log10(1 + t0)))
        # the sweep's effective ages (its chamber log, Arrhenius 1 eV) explain the chip's
        # change device by device: the acceleration the model has
        assert np.median(np.abs(np.subtract(measured, expected)) / np.abs(expected)) < 0.25
        # and the summary says so: the measured change follows the Arrhenius prediction
        # from the devices' own 25 C drift, not the unaccelerated one (five devices whose
        # 25 C drift is known to ~15 % each: the population prediction is looser than the
        # per-device truth check above)
        last = bake["mean_change_rel"][-1]
        arrhenius, plain = (
            bake["predicted_arrhenius_rel"][-1],
            bake["predicted_no_acceleration_rel"][-1],
        )
        assert abs(last - arrhenius) < abs(last - plain)
        assert abs(last / arrhenius - 1) < 0.4
        assert last > 1.6 * plain
        assert bake["effective_age_s"][-1] > 100 * bake["bench_time_s"][-1]
        chamber = cb.station.chamber
        assert chamber.setpoint() == pytest.approx(25.0)  # left at the ambient


def test_resume_over_tcp_on_16x16(tmp_path: Path):
    with characterization_bench(tmp_path, rows=16, cols=16, seed=6, tcp=True) as cb:
        params = {"sample": 2, "states_s": [30e-6, 90e-6], "points": 5, "averages": 20}

        def stop(done, total):
            if done == 2:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run_sweep(
                "retention", station=cb.station, db=cb.db, chip=cb.chip, params=params,
                progress=stop,
            )  # fmt: skip
        result = run_sweep("retention", station=cb.station, db=cb.db, chip=cb.chip, resume=1)
        assert (result.units_skipped, result.units_measured) == (2, 2)
        drift = result.arrays["drift_per_decade_rel"]
        assert np.isfinite(drift).sum() == 2
        truth = cb.truth()
        ok = np.isfinite(drift) & (truth["defect"] == 0)
        # 20 readings per read: only the order of magnitude (0.05 %/decade) is resolved
        assert np.all(np.abs(drift[ok]) < 5 * truth["relax_per_decade_rel"][ok])


def test_refusals(tmp_path: Path):
    with characterization_bench(tmp_path, rows=4, cols=4) as cb:
        before = cb.bench.instrument_time_s()
        with pytest.raises(ConfigError, match="more than first_s"):
            run_sweep("retention", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"first_s": 10.0, "last_s": 5.0})  # fmt: skip
        with pytest.raises(ConfigError, match="station's range"):
            run_sweep("retention", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"bake": True, "bake_c": 200.0})  # fmt: skip
        assert cb.bench.instrument_time_s() == before
