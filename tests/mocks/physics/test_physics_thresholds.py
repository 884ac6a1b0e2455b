"""Device-to-device threshold distribution: the realised mean and CV are the requested ones.

Thresholds are lognormal, cut to THRESHOLD_RANGE_REL x the mean (so that a 0.2 V read
switches nothing and every threshold stays below the write limit); the lognormal's
parameters are solved so that the cut distribution has the requested mean and CV.
"""

from __future__ import annotations

import numpy as np
import pytest

from nvmlab.errors import ConfigError
from nvmlab.mocks.physics import create_array
from nvmlab.mocks.physics.memristor import (
    THRESHOLD_RANGE_REL,
    MemristorArray,
    truncated_lognormal,
    truncated_lognormal_moments,
)

SAMPLES = 400_000


@pytest.mark.parametrize("cv", [0.25, 0.35])
def test_realised_threshold_mean_and_cv_are_within_two_percent_of_the_request(cv: float) -> None:
    mean = 1.0
    values = truncated_lognormal(np.random.default_rng(11), mean, cv, (SAMPLES,))
    assert values.size == SAMPLES
    lo, hi = THRESHOLD_RANGE_REL
    assert values.min() >= lo * mean and values.max() <= hi * mean
    realised_mean = values.mean()
    realised_cv = values.std() / realised_mean
    # Sampling errors: of the mean cv / sqrt(n) (relative); of a CV about
    # cv sqrt((1 + 2 cv^2) / (2 n)) for a near-normal shape, doubled for the lognormal's
    # heavier tail. At n = 400 000 both are below 0.1 %, far inside the 2 % asked for.
    se_mean = cv / np.sqrt(SAMPLES)
    se_cv = 2 * cv * np.sqrt((1 + 2 * cv**2) / (2 * SAMPLES))
    assert 4 * se_mean < 0.02 * mean and 4 * se_cv < 0.02 * cv
    assert abs(realised_mean - mean) < 4 * se_mean
    assert abs(realised_cv - cv) < 4 * se_cv
    # the solved distribution's exact moments are the request
    exact_mean, exact_cv = truncated_lognormal_moments(mean, cv)
    assert exact_mean == pytest.approx(mean, rel=1e-6)
    assert exact_cv == pytest.approx(cv, rel=1e-6)


def test_a_chip_drawn_with_cv_035_realises_it_and_a_read_switches_nothing() -> None:
    array = create_array("memristor", 256, 256, seed=4, params={"threshold_cv": 0.35})
    assert isinstance(array, MemristorArray)
    truth = array.ground_truth()
    values = truth["set_threshold_v"].ravel()
    n = values.size
    assert n == 65536
    cv = values.std() / values.mean()
    se_cv = 2 * 0.35 * np.sqrt((1 + 2 * 0.35**2) / (2 * n))
    assert abs(cv - 0.35) < 4 * se_cv
    # the switching floor of every device lies above a 0.2 V read
    floor = array.params.switching_floor_fraction * np.minimum(
        truth["set_threshold_v"], -truth["reset_threshold_v"]
    )
    assert floor.min() > 0.2


def test_a_cv_the_cut_cannot_realise_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="threshold_cv"):
        create_array("memristor", 4, 4, params={"threshold_cv": 0.9})
