"""The endurance sweep against the chip's ground truth: pulses applied, G_on / G_off
reads, the window (the emulator models no wear: it must stay open), restore, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from benches import DEFAULT, HARSH, characterization_bench

from nvmlab.characterization.sweep import run_sweep
from nvmlab.storage.query import fetch_arrays


def assert_left_safe(cb) -> None:
    """SMU terminals at 0 V or off, every board line grounded, and nothing beyond the
    station's write limit was ever applied."""
    world = cb.bench.bench
    assert all(v in (None, 0.0) for v in world.terminal_v.values())
    assert {line.mode for line in (*world.rows_state, *world.cols_state)} == {"gnd"}
    assert max(world.max_applied_v.values()) <= cb.station.limits.max_write_v + 1e-9


def _params(rows, name):
    return {
        (int(r), int(c)): v
        for r, c, n, v in zip(rows["row"], rows["col"], rows["name"], rows["value"], strict=True)
        if n == name
    }


@pytest.mark.parametrize(("physics", "seed"), [(DEFAULT, 1), (HARSH, 4), (DEFAULT, 9)])
def test_window_against_truth_and_restore(tmp_path: Path, physics, seed):
    with characterization_bench(tmp_path, rows=6, cols=6, seed=seed, physics=physics) as cb:
        before = cb.truth()
        snaps: list[dict] = []
        params = {"sample": 3, "cycles": 150, "block_cycles": 50, "reads_per_block": 3}
        result = run_sweep(
            "endurance", station=cb.station, db=cb.db, chip=cb.chip, params=params,
            progress=lambda d, t: snaps.append(cb.truth()),
        )  # fmt: skip
        assert result.status == "completed" and result.units_total == 3
        assert_left_safe(cb)
        rows = fetch_arrays(cb.db, "device_parameters", columns=["row", "col", "name", "value"])
        devices = sorted(_params(rows, "endurance_initial_s"))
        assert len(devices) == 3
        after = cb.truth()
        for r, c in devices:
            # every cycle reached the device at full amplitude: two pulses per cycle
            assert after["pulse_count"][r, c] - before["pulse_count"][r, c] >= 300
        # G_off of each block (the device's last state in the block) against the truth, for
        # the block's last device (earlier ones are disturbed by the later ones' V/3 pulses)
        for k in range(2):
            off = _params(rows, f"endurance_block_{k:04d}_g_off_s")
            for r, c in devices[-1:]:
                if before["defect"][r, c] == 0:
                    # +-5 % (cycle-to-cycle spread of the reads' median) + the instrument's
                    # absolute read noise (0.02-0.04 uS at 1 PLC) near g_min = 1 uS
                    truth = snaps[k]["conductance_s"][r, c]
                    assert abs(off[(r, c)] - truth) < 0.05 * truth + 0.15e-6
        plot = result.summary["plot"]
        assert plot["cycles"] == [50, 100, 150]
        assert len(plot["g_on_s"]) == len(plot["g_off_s"]) == 3
        # no wear in the model: the measured window stays open, and the sweep says so
        assert result.summary["window"][0] > 5
        assert abs(result.summary["window_change_rel"]) < 0.2
        assert not result.summary["window_closed"]
        assert "stays open" in result.summary["verdict"]
        # the bystanders' reads against the truth before and after: the disturb is measured
        b0 = _params(rows, "endurance_bystander_before_s")
        b1 = _params(rows, "endurance_bystander_after_s")
        assert len(b0) == len(b1) == 8 and not set(b0) & set(devices)
        for (r, c), g in b0.items():
            assert abs(g - before["conductance_s"][r, c]) < 0.02 * g + 0.1e-6
            assert abs(b1[(r, c)] - after["conductance_s"][r, c]) < 0.02 * b1[(r, c)] + 0.1e-6
        assert result.summary["bystanders"]["devices"] == 8
        restore = _params(rows, "endurance_restore_error_rel")
        assert result.summary["restore_attempted"] == 3
        assert result.summary["restore_within_5pct"] >= 2
        for r, c in devices:  # restored to the first read (write-verify +-5 %, read noise)
            if before["defect"][r, c] == 0 and abs(restore[(r, c)]) <= 0.05:
                g0, g1 = before["conductance_s"][r, c], after["conductance_s"][r, c]
                assert abs(g1 - g0) < 0.08 * g0 + 0.2e-6  # + absolute read noise at low G


def test_resume_after_an_interrupt_and_tcp_16x16(tmp_path: Path):
    with characterization_bench(tmp_path, rows=16, cols=16, seed=2, tcp=True) as cb:
        params = {"sample": 2, "cycles": 40, "block_cycles": 20, "reads_per_block": 2}

        def stop(done, total):
            if done == 1:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run_sweep(
                "endurance", station=cb.station, db=cb.db, chip=cb.chip, params=params,
                progress=stop,
            )  # fmt: skip
        result = run_sweep("endurance", station=cb.station, db=cb.db, chip=cb.chip, resume=1)
        assert (result.units_skipped, result.units_measured) == (1, 1)
        assert result.summary["plot"]["cycles"] == [20, 40]
        assert all(np.isfinite(result.summary["plot"]["g_on_s"]))
        assert result.summary["window"][1] > 5
