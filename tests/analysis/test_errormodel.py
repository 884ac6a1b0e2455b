"""The device-error model, built from what characterization and tuning stored (never the
emulator's truth), matches the true chip: a chip with non-default physics (twice the read
noise, a larger temperature coefficient, 5 % defects, a stronger cubic I-V), each part
within the characterization's own tolerances."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from chips import CHIP, PHYSICS

from nvmlab.analysis.errormodel import ErrorModel, build_error_model
from nvmlab.mocks import read_ground_truth
from nvmlab.storage import open_database
from nvmlab.storage.query import chain_tuning_outcomes


@pytest.fixture(scope="module")
def model_and_truth(chip_db: tuple[str, int, Path]) -> tuple[ErrorModel, dict, str, int]:
    url, run_id, folder = chip_db
    with open_database(url) as db:
        model = build_error_model(db, CHIP)
    return model, read_ground_truth(folder / "chip.npz"), url, run_id


def test_read_noise_in_amperes_matches_the_true_devices(model_and_truth) -> None:
    model, truth, _, _ = model_and_truth
    g = truth["conductance_s"][truth["defect"] == 0]
    true_sigma = truth["read_noise_sigma_s"][truth["defect"] == 0]
    modelled = model.noise_rel * g + model.noise_abs_a / 0.2  # S, at the 0.2 V read
    assert np.median(np.abs(modelled / true_sigma - 1.0)) <= 0.20  # the noise sweep's 20 %
    assert model.noise_rel == pytest.approx(PHYSICS["read_noise_rel"], rel=0.25)


def test_the_temperature_coefficient_matches_the_truth(model_and_truth) -> None:
    model, truth, _, _ = model_and_truth
    ok = truth["defect"] == 0
    modelled = model.tc_intercept_s_per_k + model.tc_slope_per_k * truth["conductance_s"][ok]
    true_tc = truth["temp_coeff_s_per_k"][ok]
    assert np.median(np.abs(modelled / true_tc - 1.0)) <= 0.15  # device spread CV 10 %
    assert model.tc_spread_s_per_k == pytest.approx(np.std(true_tc), rel=1.0)


def test_defect_rates_and_the_cubic_iv_match_the_truth(model_and_truth) -> None:
    model, truth, _, _ = model_and_truth
    n = truth["defect"].size
    assert model.stuck_off_rate == pytest.approx(np.mean(truth["defect"] == 1), abs=1.5 / n)
    assert model.stuck_on_rate == pytest.approx(np.mean(truth["defect"] == 2), abs=1.5 / n)
    b = np.median(truth["iv_cubic_b_per_v2"][truth["defect"] == 0])
    assert model.iv_b_per_v2 == pytest.approx(b, rel=0.15)


def test_the_tuning_error_is_what_the_tuner_reported(model_and_truth) -> None:
    model, _, url, run_id = model_and_truth
    assert set(model.tuning) == {"adaptive", "conventional"}
    with open_database(url) as db:
        outcomes = chain_tuning_outcomes(db, run_id, prefix="s7-tune/")
    done = outcomes["status"] != "skipped"
    err = np.abs(outcomes["final_s"][done].astype(float) / outcomes["target_s"][done] - 1.0)
    assert model.tuning["adaptive"].within(0.01) == pytest.approx(np.mean(err <= 0.01), abs=0.06)


def test_the_model_is_a_file_and_compares_between_chips(model_and_truth, tmp_path: Path) -> None:
    model, _, _, _ = model_and_truth
    model.to_json(tmp_path / "m.json")
    again = ErrorModel.from_json(tmp_path / "m.json")
    assert again == model
    rows = dict((name, (a, b)) for name, a, b in model.compare(again))
    assert rows["noise_rel"][0] == rows["noise_rel"][1]
    assert "tuning_within_1pct[adaptive]" in rows
