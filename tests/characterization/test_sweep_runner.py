"""The sweep runner: units stored atomically, resumed without repeats, checked first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benches import characterization_bench
from toysweep import registered_toy_sweep

from nvmlab.characterization.sweep import (
    run_sweep,
)
from nvmlab.errors import ConfigError, StorageError
from nvmlab.storage.profile import load_profile
from nvmlab.storage.runs import unit_attempts


@pytest.fixture
def sweep() -> Any:
    with registered_toy_sweep() as toy:
        yield toy


def test_an_interrupted_sweep_resumes_without_repeating_completed_units(sweep, tmp_path: Path):
    with characterization_bench(tmp_path, rows=6, cols=5) as cb:
        sweep.interrupt_in = "row-3"
        sweep.measured = []
        with pytest.raises(KeyboardInterrupt):
            run_sweep("test-read-rows", station=cb.station, db=cb.db, chip=cb.chip)
        assert sweep.measured == ["row-0", "row-1", "row-2"]
        first = 1
        sweep.interrupt_in = None
        result = run_sweep(
            "test-read-rows", station=cb.station, db=cb.db, chip=cb.chip, resume=first
        )
        assert result.status == "completed"
        assert (result.units_skipped, result.units_measured) == (3, 3)
        assert sweep.measured == [f"row-{r}" for r in range(6)]
        attempts = unit_attempts(cb.db, result.run_id)
        statuses = [(a["unit_key"], a["status"]) for a in attempts]
        assert statuses.count(("row-3", "interrupted")) == 1
        assert sum(1 for k, s in statuses if s == "completed") == 6
        truth = cb.truth()["conductance_s"]
        profile = load_profile(cb.db, cb.chip)
        assert profile.conductance_s is not None
        assert np.all(np.isfinite(profile.conductance_s))
        # the profile holds one value per device, the read of the completed attempt
        rel = np.abs(profile.conductance_s - truth) / truth
        functional = cb.truth()["defect"] == 0
        assert np.median(rel[functional]) < 0.02
        assert profile.meta["runs"]["test-read-rows"] == result.run_id


def test_bad_input_is_refused_before_any_instrument_is_touched(sweep, tmp_path: Path):
    with characterization_bench(tmp_path, rows=4, cols=4) as cb:
        before = cb.bench.instrument_time_s()
        with pytest.raises(StorageError, match="no-such-chip"):
            run_sweep("test-read-rows", station=cb.station, db=cb.db, chip="no-such-chip")
        with pytest.raises(ConfigError, match=r"value 17 is not allowed.*0 \(every device\) to 16"):
            run_sweep(
                "test-read-rows", station=cb.station, db=cb.db, chip=cb.chip, params={"sample": 17}
            )
        with pytest.raises(ConfigError, match="unknown characterization kind 'nope'"):
            run_sweep("nope", station=cb.station, db=cb.db, chip=cb.chip)
        assert cb.bench.instrument_time_s() == before
