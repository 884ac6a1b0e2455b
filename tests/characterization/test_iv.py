"""The iv sweep against the chip's ground truth: nonlinearity, traces, loops, restore."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from benches import DEFAULT, HARSH, characterization_bench

from nvmlab.characterization.sweep import run_sweep
from nvmlab.errors import ConfigError
from nvmlab.storage.profile import load_profile
from nvmlab.storage.query import fetch_arrays, load_traces

#: Acceptance: median relative error of b (0.2 V)^2 against the truth below 10 %.
NONLINEARITY_TOLERANCE_REL = 0.10


def assert_left_safe(cb) -> None:
    """SMU terminals at 0 V or off, every board line grounded, and nothing beyond the
    station's write limit was ever applied."""
    world = cb.bench.bench
    assert all(v in (None, 0.0) for v in world.terminal_v.values())
    assert {line.mode for line in (*world.rows_state, *world.cols_state)} == {"gnd"}
    assert max(world.max_applied_v.values()) <= cb.station.limits.max_write_v + 1e-9


def _assert_reads_did_not_write(before, after) -> None:
    """The read-range staircases (to 0.3 V) leave every device of the chip within 5 %
    (they put -V on every device off the selected row and column, +V on the selected)."""
    change = np.abs(after["conductance_s"] / before["conductance_s"] - 1)
    assert change.max() < 0.05


def _nonlinearity_error(cb, arrays) -> tuple[float, int]:
    nl = arrays["iv_nonlinearity"]
    truth = cb.truth()
    ok = np.isfinite(nl) & (truth["defect"] == 0)
    rel = np.abs(nl[ok] - truth["iv_nonlinearity_at_read_rel"][ok])
    rel /= truth["iv_nonlinearity_at_read_rel"][ok]
    return float(np.median(rel)), int(ok.sum())


@pytest.mark.parametrize(
    ("smu", "physics", "seed"),
    [("keithley2400", DEFAULT, 1), ("keysight_b2902a", HARSH, 2), ("keithley2636b", HARSH, 5)],
)
def test_nonlinearity_matches_truth_and_traces_are_stored(tmp_path: Path, smu, physics, seed):
    with characterization_bench(
        tmp_path, rows=8, cols=8, seed=seed, physics=physics, smu=smu
    ) as cb:
        before = cb.truth()
        result = run_sweep("iv", station=cb.station, db=cb.db, chip=cb.chip, params={"sample": 10})
        assert result.status == "completed"
        assert_left_safe(cb)
        err, n = _nonlinearity_error(cb, result.arrays)
        assert n >= 8
        assert err < NONLINEARITY_TOLERANCE_REL
        _assert_reads_did_not_write(before, cb.truth())
        profile = load_profile(cb.db, cb.chip)
        assert profile.iv_nonlinearity is not None
        assert np.isfinite(profile.iv_nonlinearity).sum() == 10
        traces = load_traces(cb.db, result.run_id)
        kinds = [t["kind"] for t in traces]
        dc = next(t for t in traces if t["kind"] == "iv-dc")
        assert dc["x"].size == dc["y"].size > 40 and np.all(np.abs(dc["x"]) <= 0.31)
        assert kinds.count("iv-dc") == 20 and kinds.count("iv-pulsed") == 20
        # the return-to-zero staircase measures the same nonlinearity
        params = fetch_arrays(cb.db, "device_parameters", columns=["name", "value"])
        pulsed = np.array(
            [
                v
                for k, v in zip(params["name"], params["value"], strict=True)
                if k == "iv_nonlinearity_pulsed"
            ]
        )
        assert pulsed.size == 10
        assert abs(np.median(pulsed) / np.nanmedian(result.arrays["iv_nonlinearity"]) - 1) < 0.1


def test_switching_loops_switch_near_the_thresholds_and_the_state_is_restored(tmp_path: Path):
    with characterization_bench(tmp_path, rows=6, cols=6, seed=3, smu="keithley2636b") as cb:
        before = cb.truth()
        snapshots: list[np.ndarray] = []  # the chip's conductances right after each unit
        result = run_sweep(
            "iv", station=cb.station, db=cb.db, chip=cb.chip,
            params={"sample": 5, "loops": 1, "pulsed": False},
            progress=lambda done, total: snapshots.append(cb.truth()["conductance_s"]),
        )  # fmt: skip
        rows = fetch_arrays(cb.db, "device_parameters", columns=["row", "col", "name", "value"])
        got = {
            (int(r), int(c), n): v
            for r, c, n, v in zip(
                rows["row"], rows["col"], rows["name"], rows["value"], strict=True
            )
        }
        devices = {(r, c) for r, c, _ in got}
        assert len(devices) == 5
        switched = 0
        for k, (r, c) in enumerate(sorted(devices)):  # units run in row-major order
            if before["defect"][r, c] != 0:
                continue
            set_v = got[(r, c, "iv_loop_set_v")]
            if set_v is not None and np.isfinite(set_v):
                switched += 1
                # DC holds at 0.01 PLC are shorter than the 1 ms threshold pulse: the loop
                # switches at or somewhat above the 1 ms threshold, never far below it
                assert (
                    before["set_threshold_v"][r, c] - 0.1
                    <= set_v
                    <= before["set_threshold_v"][r, c] + 0.5
                )
            # the loop's device is back within the write-verify tolerance (+ read noise)
            # right after its unit (loops on later devices disturb it: V/2 half-select)
            g0 = (snapshots[k - 1] if k else before["conductance_s"])[r, c]
            g1 = snapshots[k][r, c]
            assert abs(g1 / g0 - 1) < 0.08
        assert switched >= 3
        kinds = [t["kind"] for t in load_traces(cb.db, result.run_id)]
        assert kinds.count("iv-loop") == 5
        assert result.summary["restored_devices"] == 5
        assert_left_safe(cb)


def test_over_tcp_on_16x16(tmp_path: Path):
    with characterization_bench(tmp_path, rows=16, cols=16, seed=7, tcp=True) as cb:
        before = cb.truth()
        result = run_sweep(
            "iv", station=cb.station, db=cb.db, chip=cb.chip,
            params={"sample": 4, "repeats": 1, "read_points": 10},
        )  # fmt: skip
        err, n = _nonlinearity_error(cb, result.arrays)
        assert n >= 3 and err < NONLINEARITY_TOLERANCE_REL
        _assert_reads_did_not_write(before, cb.truth())


def test_refusals_before_any_instrument_is_touched(tmp_path: Path):
    with characterization_bench(tmp_path, rows=4, cols=4, smu="keithley2400") as cb:
        before = cb.bench.instrument_time_s()
        with pytest.raises(ConfigError, match="read limit 0.5 V"):
            run_sweep("iv", station=cb.station, db=cb.db, chip=cb.chip, params={"read_max_v": 0.8})
        with pytest.raises(ConfigError, match="write limit 2.5 V"):
            run_sweep("iv", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"loops": 1, "loop_set_v": 3.0})  # fmt: skip
        assert cb.bench.instrument_time_s() == before
        with pytest.raises(ConfigError, match="one-channel SMU"):
            run_sweep("iv", station=cb.station, db=cb.db, chip=cb.chip, params={"loops": 1})
