"""A whole station session recorded on the emulated bench, then replayed with no bench at all.

The jobs layer re-runs recorded sessions offline: the same procedure must get the same
numbers from the transcripts alone, and the first command that differs must stop the
replay naming the transcript line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nvmlab.clock import VirtualClock
from nvmlab.errors import ConfigError, ReplayMismatch
from nvmlab.instruments.station import Station
from nvmlab.mocks.emulated import build_emulated_bench

BENCHES = pytest.mark.parametrize(
    ("smu", "chamber"),
    [("keithley2400", "espec"), ("keithley2636b", "watlow_f4"), ("keysight_b2902a", "espec")],
)


def procedure(station: Station, sweep_to_v: float = 0.2) -> dict[str, Any]:
    """Heat, settle, route a device, read it, write it, pulse-train it, read it again."""
    station.chamber.set_setpoint(40.0)
    settled = station.chamber.wait_until_stable(
        tolerance_c=0.5, consecutive=3, poll_interval_s=30.0, soak_time_s=60.0
    )
    station.board.select(2, 3, unselected="track")
    station.smu.configure(current_limit_a=1e-4, nplc=0.1)
    before = station.smu.list_sweep(np.linspace(-sweep_to_v, sweep_to_v, 11))
    station.board.write_pulse(2, 3, 1.5, 1e-3)
    train = station.smu.pulse_train(1.0, 1e-4, 3, v_read=0.1)
    after = station.smu.list_sweep(np.linspace(0.0, 0.2, 5))
    return {"settled": settled, "before": before, "train": train, "after": after}


def record(tmp_path: Path, smu: str, chamber: str) -> tuple[dict[str, Any], dict[str, Any]]:
    emulated = build_emulated_bench(
        rows=8, cols=8, seed=2, smu_model=smu, chamber_model=chamber, clock=VirtualClock()
    )
    try:
        data = emulated.station_dict()
        with Station(
            data,
            visa_library=emulated.visa_library(),
            clock=emulated.clock,
            record_to=tmp_path,
        ) as station:
            results = procedure(station)
    finally:
        emulated.close()
    return data, results


@BENCHES
def test_a_recorded_session_replays_identically_without_a_bench(
    tmp_path: Path, smu: str, chamber: str
) -> None:
    data, live = record(tmp_path, smu, chamber)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "board.jsonl",
        "chamber.jsonl",
        "smu.jsonl",
    ]
    # The bench is gone: its in-process resources no longer exist. Only the transcripts
    # answer, and the whole session, safe state included, must be used up.
    with Station(data, replay_from=tmp_path) as station:
        assert station.identities["smu"] == json.loads(
            (tmp_path / "smu.jsonl").read_text().splitlines()[1]
        )["text"].strip("\r\n")
        replayed = procedure(station)
    assert station.replay_leftover is None
    assert replayed["settled"] == live["settled"]
    for key in ("before", "train", "after"):
        np.testing.assert_array_equal(replayed[key], live[key])
    assert np.all(live["before"][6:] > 0)  # a real device answered while recording


def test_a_changed_command_stops_the_replay_naming_the_transcript_line(tmp_path: Path) -> None:
    data, _ = record(tmp_path, "keithley2400", "espec")
    with (
        pytest.raises(ReplayMismatch) as info,
        Station(data, replay_from=tmp_path) as station,
    ):
        procedure(station, sweep_to_v=0.25)
    message = str(info.value)
    assert "transcript line" in message and "smu.jsonl" in message
    assert ":SOUR:LIST:VOLT -0.2," in message and ":SOUR:LIST:VOLT -0.25," in message


def live_resources(data: dict[str, Any]) -> list[str]:
    """The resource strings of the recorded session's instruments (gone when replaying)."""
    return [entry["resource"] for entry in data["instruments"].values()]


def said(caplog: pytest.LogCaptureFixture, exc: BaseException) -> str:
    """Everything the replay told the user: log records, the exception and its notes."""
    return "\n".join(
        [r.getMessage() for r in caplog.records] + [str(exc), *getattr(exc, "__notes__", [])]
    )


def assert_no_safe_state_alarm(text: str, data: dict[str, Any]) -> None:
    assert "NOT reached" not in text and "NOT SAFE" not in text, text
    for resource in live_resources(data):
        assert resource not in text, f"names the recorded live resource {resource}: {text}"


def test_a_diverging_replay_reports_only_the_mismatch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Replay has no instruments to make safe: after the transcript diverged, checking the
    # exit safe state against it would only alarm an offline user for nothing.
    data, _ = record(tmp_path, "keithley2400", "espec")
    caplog.set_level(logging.INFO, logger="nvmlab")
    with (
        pytest.raises(ReplayMismatch) as info,
        Station(data, replay_from=tmp_path) as station,
    ):
        procedure(station, sweep_to_v=0.25)
    assert ":SOUR:LIST:VOLT -0.25," in str(info.value)
    assert_no_safe_state_alarm(said(caplog, info.value), data)
    infos = [
        r.getMessage() for r in caplog.records if "no instruments to make safe" in r.getMessage()
    ]
    assert len(infos) == 1 and all(
        r.levelno == logging.INFO for r in caplog.records if "make safe" in r.getMessage()
    )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_session_that_stops_early_diverges_at_its_safe_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The exit safe state is still replayed against the transcript (a changed safe state
    # is a change of the code under replay), but a difference is a mismatch, not an alarm.
    data, _ = record(tmp_path, "keithley2400", "espec")
    caplog.set_level(logging.INFO, logger="nvmlab")
    with (
        pytest.raises(ReplayMismatch, match=r"transcript line 3: expected") as info,
        Station(data, replay_from=tmp_path) as station,
    ):
        station.chamber.set_setpoint(40.0)
    assert "smu.jsonl" in str(info.value)
    assert_no_safe_state_alarm(said(caplog, info.value), data)


def test_a_failing_script_under_replay_keeps_its_own_exception(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, _ = record(tmp_path, "keithley2400", "espec")
    caplog.set_level(logging.INFO, logger="nvmlab")
    with pytest.raises(ZeroDivisionError) as info, Station(data, replay_from=tmp_path) as station:
        station.chamber.set_setpoint(40.0)
        _ = 1 / 0
    text = said(caplog, info.value)
    assert_no_safe_state_alarm(text, data)
    # what the safe state sent differs from the transcript: said once, as a mismatch
    assert "transcript line 3" in " ".join(getattr(info.value, "__notes__", []))


def test_a_faithful_replay_says_once_that_nothing_is_made_safe(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, _ = record(tmp_path, "keithley2400", "espec")
    caplog.set_level(logging.INFO, logger="nvmlab")
    with Station(data, replay_from=tmp_path) as station:
        procedure(station)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("no instruments to make safe" in m for m in messages) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_transcript_longer_than_the_session_is_reported(tmp_path: Path) -> None:
    data, _ = record(tmp_path, "keithley2400", "espec")
    chamber = tmp_path / "chamber.jsonl"
    lines = chamber.read_text().splitlines()
    chamber.write_text("\n".join([*lines, lines[0]]) + "\n")  # one more TYPE? after the end
    station = Station(data, replay_from=tmp_path)
    with (
        pytest.raises(
            ReplayMismatch, match=rf"line {len(lines) + 1}: session ended before a write"
        ),
        station,
    ):
        procedure(station)
    # the leftover is kept on the station too, naming the chamber transcript's extra line
    assert isinstance(station.replay_leftover, ReplayMismatch)
    assert f"line {len(lines) + 1}" in str(station.replay_leftover)
    assert "chamber" in str(station.replay_leftover)


def test_replay_needs_a_transcript_for_every_instrument(tmp_path: Path) -> None:
    data, _ = record(tmp_path, "keithley2400", "espec")
    (tmp_path / "board.jsonl").unlink()
    station = Station(data, replay_from=tmp_path)
    with pytest.raises(Exception, match=r"board.*no transcript .*board.jsonl"):
        station.open()
    with pytest.raises(ConfigError, match="exclude each other"):
        Station(data, replay_from=tmp_path, record_to=tmp_path)
