"""Safety of a whole station: over-limit requests never reach a wire, and every exit
leaves the bench safe (checked on the emulated bench itself, not only on what was sent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchsafety import assert_bench_safe, smu_outputs_on

from nvmlab.errors import InstrumentIOError, SafetyLimitError
from nvmlab.instruments.station import Station, StationError
from nvmlab.mocks.benchfile import BenchConfig
from nvmlab.mocks.serving.faults import FaultSpec

LIMITS = {"max_read_v": 0.3, "max_write_v": 2.0, "max_current_a": 1e-4, "max_temperature_c": 90.0}


def open_station(emulated_bench, **kwargs) -> Station:  # type: ignore[no-untyped-def]
    data = emulated_bench.station_dict()
    data["limits"] = LIMITS
    return Station(
        data, visa_library=emulated_bench.visa_library(), clock=emulated_bench.clock, **kwargs
    )


def drive_everything(station: Station) -> None:
    """Put the bench in a busy state: chamber hot, lines routed, SMU output on at 0.2 V."""
    station.chamber.set_setpoint(80.0)
    station.board.select(2, 3, unselected="track")
    station.board.set_line("col", 7, "dac", 0.25)
    station.smu.configure(current_limit_a=1e-4, nplc=0.1)
    station.smu.set_voltage(0.2)
    station.smu.output(True)


def assert_bench_busy(emulated_bench) -> None:  # type: ignore[no-untyped-def]
    bench = emulated_bench.bench
    assert bench.terminal_v["A"] == pytest.approx(0.2)
    assert bench.thermal.setpoint_c == pytest.approx(80.0)
    assert bench.cols_state[7].mode == "dac"


def test_a_normal_exit_leaves_the_bench_safe(emulated_bench) -> None:  # type: ignore[no-untyped-def]
    with open_station(emulated_bench) as station:
        drive_everything(station)
        assert_bench_busy(emulated_bench)
    assert_bench_safe(emulated_bench)
    assert not station.is_open


def test_an_exception_leaves_the_bench_safe_and_propagates(emulated_bench) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ZeroDivisionError), open_station(emulated_bench) as station:
        drive_everything(station)
        _ = 1 / 0
    assert_bench_safe(emulated_bench)


def test_ctrl_c_leaves_the_bench_safe(emulated_bench) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KeyboardInterrupt), open_station(emulated_bench) as station:
        drive_everything(station)
        raise KeyboardInterrupt
    assert_bench_safe(emulated_bench)


def test_a_dropped_board_connection_is_reconnected_to_ground_the_lines() -> None:
    from nvmlab.mocks.emulated import build_emulated_bench

    # Board replies: *IDN? 1, CONF? 2, READ:SCHEME 3, SEL 4, LINE 5; the 6th never comes:
    # the board closes the connection instead.
    config = BenchConfig(
        rows=8, cols=8, faults={"board": [FaultSpec("close", messages=(6,), max_count=1)]}
    )
    emulated = build_emulated_bench(config)
    try:
        with (
            pytest.raises(InstrumentIOError, match="board.*connection"),
            open_station(emulated) as station,
        ):
            drive_everything(station)
            assert_bench_busy(emulated)
            station.board.select(4, 4)
        assert_bench_safe(emulated)
    finally:
        emulated.close()


def test_a_connection_that_cannot_come_back_is_reported_and_the_rest_made_safe(caplog) -> None:  # type: ignore[no-untyped-def]
    from nvmlab.mocks.emulated import build_emulated_bench

    # From its 3rd reply on, the chamber closes every connection: reconnecting cannot help.
    config = BenchConfig(rows=8, cols=8, faults={"chamber": [FaultSpec("close", every=1, start=3)]})
    emulated = build_emulated_bench(config)
    try:
        with (
            pytest.raises(InstrumentIOError, match="chamber") as info,
            open_station(emulated) as station,
        ):
            station.board.set_line("row", 1, "dac", 0.2)
            station.chamber.set_setpoint(60.0)  # the reply is lost with the connection
    finally:
        emulated.close()
    # the chamber never came back (its setpoint stays); everything else is safe
    assert_bench_safe(emulated, setpoint_c=None)
    assert not any(smu_outputs_on(emulated).values())
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "safe state was NOT reached for: chamber" in notes
    assert "NOT SAFE" in " ".join(r.getMessage() for r in caplog.records)


def test_unrecoverable_instrument_on_normal_exit_raises_naming_it() -> None:
    from nvmlab.mocks.emulated import build_emulated_bench

    config = BenchConfig(rows=8, cols=8, faults={"chamber": [FaultSpec("close", every=1, start=3)]})
    emulated = build_emulated_bench(config)
    try:
        with (
            pytest.raises(
                StationError, match=r"safe state was NOT reached for: chamber \(ASRLnvmlab://"
            ),
            open_station(emulated) as station,
        ):
            station.board.select(0, 0)
        assert {line.mode for line in emulated.bench.rows_state} == {"gnd"}
    finally:
        emulated.close()


def transcript_lines(directory: Path, role: str) -> list[dict]:  # type: ignore[type-arg]
    path = directory / f"{role}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("role", "call", "message"),
    [
        ("smu", lambda s: s.smu.set_voltage(0.5, purpose="read"), "read limit"),
        ("smu", lambda s: s.smu.set_voltage(2.5, purpose="write"), "write limit"),
        ("smu", lambda s: s.smu.configure(current_limit_a=1e-2), "compliance current"),
        ("board", lambda s: s.board.write_pulse(0, 0, 3.0, 1e-3), "write limit"),
        ("board", lambda s: s.board.set_line("row", 0, "dac", 1.0), "read limit"),
        ("chamber", lambda s: s.chamber.set_setpoint(120.0), "chamber setpoint 120 C"),
    ],
)
def test_over_limit_requests_send_nothing_on_the_transcript(  # type: ignore[no-untyped-def]
    emulated_bench, tmp_path: Path, role: str, call, message: str
) -> None:
    with open_station(emulated_bench, record_to=tmp_path) as station:
        if role == "board":
            _ = station.board.rows  # the one-time CONF? query happens before the check
        before = transcript_lines(tmp_path, role)
        with pytest.raises(SafetyLimitError, match=message):
            call(station)
        after = transcript_lines(tmp_path, role)
        assert after == before, f"{role} sent {after[len(before) :]}"
    assert emulated_bench.bench.max_applied_v["A"] <= LIMITS["max_write_v"]
    assert emulated_bench.bench.max_applied_v["board"] == 0.0
