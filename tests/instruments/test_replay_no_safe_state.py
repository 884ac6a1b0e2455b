"""A replay that diverges reports the mismatch only, never an unsafe bench it does not have.

A replayed station has no instruments: nothing to make safe. Checking its exit safe state
against the transcripts after a divergence used to report "the safe state was NOT reached"
naming the live resource strings of the recorded session, which alarmed an offline user
for nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from nvmlab.clock import VirtualClock
from nvmlab.errors import ReplayMismatch
from nvmlab.instruments.station import Station
from nvmlab.mocks.emulated import build_emulated_bench


def record(tmp_path: Path) -> dict:
    emulated = build_emulated_bench(rows=8, cols=8, seed=2, clock=VirtualClock())
    try:
        data = emulated.station_dict()
        with Station(
            data, visa_library=emulated.visa_library(), clock=emulated.clock, record_to=tmp_path
        ) as station:
            station.board.select(2, 3, unselected="track")
            station.smu.configure(current_limit_a=1e-4, nplc=0.1)
            station.smu.list_sweep(np.linspace(-0.2, 0.2, 11))
    finally:
        emulated.close()
    return data


def test_a_diverging_replay_reports_only_the_mismatch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = record(tmp_path)
    live_resources = [inst["resource"] for inst in data["instruments"].values()]
    caplog.set_level(logging.INFO)
    with pytest.raises(ReplayMismatch) as info, Station(data, replay_from=tmp_path) as station:
        station.board.select(2, 3, unselected="track")
        station.smu.configure(current_limit_a=1e-4, nplc=0.1)
        station.smu.list_sweep(np.linspace(-0.25, 0.25, 11))  # differs from the transcript
    reported = "\n".join([str(info.value), *getattr(info.value, "__notes__", []), caplog.text])
    assert "smu.jsonl" in str(info.value) and "-0.25" in str(info.value)
    assert "NOT reached" not in reported and "NOT SAFE" not in reported
    for resource in live_resources:
        assert resource not in reported, resource
    assert "no instruments to make safe" in caplog.text
