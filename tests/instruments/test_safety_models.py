"""Safety on every model: over-limit requests never reach a wire, and every way a session
ends leaves the bench safe, both SMU channels off included.

Checked on the recorded transcripts (nothing sent) and on the emulated world itself (the
largest voltage and current any instrument really applied, the final state of outputs,
lines and chamber).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchsafety import assert_bench_safe

from nvmlab.clock import VirtualClock
from nvmlab.errors import InstrumentError, InstrumentProtocolError, SafetyLimitError
from nvmlab.instruments.station import Station
from nvmlab.mocks.benchfile import BenchConfig
from nvmlab.mocks.emulated import EmulatedBench, build_emulated_bench
from nvmlab.mocks.serving.faults import FaultSpec

LIMITS = {
    "max_read_v": 0.3,
    "max_write_v": 2.0,
    "max_forming_v": 2.5,
    "max_current_a": 1e-4,
    "max_pulse_width_s": 0.01,
    "min_temperature_c": -5.0,
    "max_temperature_c": 90.0,
    "max_eflash_v": 10.0,
}
SMUS = ["keithley2400", "keithley2636b", "keysight_b2902a"]
CHAMBERS = ["espec", "watlow_f4"]


#: A fault that never fires: it makes the bench wrap every instrument in a fault injector,
#: so a test can add a real fault (a dropped connection) at the moment it chooses.
def dormant_fault() -> FaultSpec:
    return FaultSpec("drop", messages=(10**9,))


@pytest.fixture
def make_bench() -> Iterator[Callable[..., EmulatedBench]]:
    benches: list[EmulatedBench] = []

    def make(smu: str = "keithley2400", chamber: str = "espec") -> EmulatedBench:
        dormant = {role: [dormant_fault()] for role in ("smu", "chamber", "board")}
        config = BenchConfig(rows=8, cols=8, faults=dormant).with_overrides(
            smu_model=smu, chamber_model=chamber
        )
        benches.append(build_emulated_bench(config, clock=VirtualClock()))
        return benches[-1]

    yield make
    for bench in benches:
        bench.close()


def open_station(bench: EmulatedBench, **kwargs: Any) -> Station:
    data = bench.station_dict()
    data["limits"] = LIMITS
    return Station(data, visa_library=bench.visa_library(), clock=bench.clock, **kwargs)


def channels(station: Station) -> tuple[str, ...]:
    return station.smu.channels


def drive_everything(station: Station) -> None:
    """Chamber hot, a device routed, a DAC line up, every SMU channel on at 0.2 V."""
    station.chamber.set_setpoint(80.0)
    station.board.select(2, 3, unselected="track")
    station.board.set_line("col", 7, "dac", 0.25)
    for ch in channels(station):
        station.smu.configure(current_limit_a=1e-4, nplc=0.1, channel=ch)  # type: ignore[arg-type]
        station.smu.set_voltage(0.2, channel=ch)  # type: ignore[arg-type]
        station.smu.output(True, channel=ch)  # type: ignore[arg-type]


def assert_busy(bench: EmulatedBench, station_channels: tuple[str, ...]) -> None:
    world = bench.bench
    for terminal in ("A", "B")[: len(station_channels)]:
        assert world.terminal_v[terminal] == pytest.approx(0.2), terminal
    assert world.thermal.setpoint_c == pytest.approx(80.0)
    assert world.cols_state[7].mode == "dac"


def assert_safe(bench: EmulatedBench) -> None:
    assert_bench_safe(bench)


def drop_next_reply(bench: EmulatedBench, role: str) -> None:
    """The instrument closes the connection instead of sending its next reply."""
    injector = bench.faults[role]
    injector.add(FaultSpec("close", messages=(injector.reply_count + 1,), max_count=1))


# -- every exit path, every model ------------------------------------------------------------
class Failure(Exception):
    pass


def end_with_exception(station: Station, bench: EmulatedBench) -> None:
    raise Failure("the script failed half-way")


def end_with_ctrl_c(station: Station, bench: EmulatedBench) -> None:
    raise KeyboardInterrupt


def end_with_smu_link_lost(station: Station, bench: EmulatedBench) -> None:
    drop_next_reply(bench, "smu")
    station.smu.measure_current()


def end_with_chamber_link_lost(station: Station, bench: EmulatedBench) -> None:
    drop_next_reply(bench, "chamber")
    station.chamber.temperature()


ENDINGS = {
    "exception": (end_with_exception, Failure),
    "ctrl-c": (end_with_ctrl_c, KeyboardInterrupt),
    "smu-link-lost": (end_with_smu_link_lost, InstrumentError),
    "chamber-link-lost": (end_with_chamber_link_lost, InstrumentError),
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
@pytest.mark.parametrize("chamber", CHAMBERS)
@pytest.mark.parametrize("smu", SMUS)
def test_every_ending_leaves_every_model_safe(
    make_bench: Callable[..., EmulatedBench], smu: str, chamber: str, ending: str
) -> None:
    bench = make_bench(smu, chamber)
    end, expected = ENDINGS[ending]
    with pytest.raises(expected), open_station(bench) as station:  # noqa: PT012
        drive_everything(station)
        assert_busy(bench, channels(station))
        end(station, bench)
    assert_safe(bench)
    assert not station.is_open
    if ending.endswith("link-lost"):
        role = ending.split("-")[0]
        assert bench.faults[role].faults[-1].fired == 1  # the link really went down


# -- over-limit requests: nothing on any wire, nothing applied --------------------------------
SMU_OVER_LIMIT: list[tuple[str, Callable[[Any, str], Any], str]] = [
    ("set_voltage read", lambda s, c: s.set_voltage(0.31, channel=c), "read limit"),
    ("set_voltage write", lambda s, c: s.set_voltage(-2.1, purpose="write", channel=c), "write"),
    (
        "set_voltage forming",
        lambda s, c: s.set_voltage(2.6, purpose="forming", channel=c),
        "forming",
    ),
    ("list_sweep read", lambda s, c: s.list_sweep(np.array([0.1, 0.35]), channel=c), "read limit"),
    (
        "list_sweep write",
        lambda s, c: s.list_sweep(np.array([1.0, -2.2]), purpose="write", channel=c),
        "write limit",
    ),
    (
        "list_sweep forming",
        lambda s, c: s.list_sweep(np.array([2.6]), purpose="forming", channel=c),
        "forming limit",
    ),
    ("pulse write", lambda s, c: s.pulse(2.1, 1e-3, channel=c), "write limit"),
    ("pulse forming", lambda s, c: s.pulse(-2.6, 1e-3, purpose="forming", channel=c), "forming"),
    ("pulse read", lambda s, c: s.pulse(0.4, 1e-3, purpose="read", channel=c), "read limit"),
    ("pulse width", lambda s, c: s.pulse(1.0, 0.02, channel=c), "pulse width"),
    ("train amplitude", lambda s, c: s.pulse_train(2.1, 1e-3, 3, channel=c), "write limit"),
    ("train read level", lambda s, c: s.pulse_train(1.0, 1e-3, 3, v_read=0.4, channel=c), "read"),
    ("train width", lambda s, c: s.pulse_train(1.0, 0.02, 3, channel=c), "pulse width"),
    ("compliance", lambda s, c: s.configure(current_limit_a=2e-4, channel=c), "compliance"),
    (
        "negative compliance",
        lambda s, c: s.configure(current_limit_a=-1e-5, channel=c),
        "compliance",
    ),
    ("not a number", lambda s, c: s.set_voltage(float("inf"), channel=c), "not a finite"),
]
BOARD_OVER_LIMIT: list[tuple[str, Callable[[Any], Any], str]] = [
    ("pulse amplitude", lambda b: b.write_pulse(1, 1, 2.1, 1e-3), "write limit"),
    ("pulse width", lambda b: b.write_pulse(1, 1, 1.0, 0.02), "pulse width"),
    ("dac line", lambda b: b.set_line("row", 1, "dac", -0.31), "read limit"),
    ("row voltages", lambda b: b.set_row_voltages([0.1] * 7 + [0.4]), "row 7 voltage"),
    (
        "eflash bias",
        lambda b: b.set_eflash_biases(control_gate_v=10.5, erase_gate_v=0.0, source_v=0.0),
        "eFlash limit",
    ),
]
CHAMBER_OVER_LIMIT: list[tuple[str, Callable[[Any], Any], str]] = [
    ("too hot", lambda c: c.set_setpoint(90.5), "outside"),
    ("too cold", lambda c: c.set_setpoint(-6.0), "outside"),
]


def transcript(directory: Path, role: str) -> list[str]:
    return (directory / f"{role}.jsonl").read_text().splitlines()


@pytest.mark.parametrize("smu", SMUS)
def test_no_over_limit_request_reaches_a_wire_or_the_chip(
    make_bench: Callable[..., EmulatedBench], tmp_path: Path, smu: str
) -> None:
    bench = make_bench(smu, "watlow_f4" if smu == "keithley2636b" else "espec")
    tried: list[str] = []
    with open_station(bench, record_to=tmp_path) as station:
        drive_everything(station)
        _ = station.board.kind  # the one-time CONF? comes before any check

        def refused(role: str, name: str, call: Callable[[], Any], match: str) -> None:
            before = transcript(tmp_path, role)
            with pytest.raises(SafetyLimitError, match=match):
                call()
            assert transcript(tmp_path, role) == before, f"{role} {name} sent something"
            tried.append(name)

        for ch in channels(station):
            for name, call, match in SMU_OVER_LIMIT:
                refused("smu", f"{name} ({ch})", lambda c=call, ch=ch: c(station.smu, ch), match)
        for name, call, match in BOARD_OVER_LIMIT:
            refused("board", name, lambda c=call: c(station.board), match)
        for name, call, match in CHAMBER_OVER_LIMIT:
            refused("chamber", name, lambda c=call: c(station.chamber), match)

        # What is allowed still works, at the very limits.
        station.smu.pulse(2.0, 1e-3)
        station.smu.pulse(-2.5, 1e-3, purpose="forming")
        station.board.write_pulse(1, 1, -2.0, 0.01)
        station.chamber.set_setpoint(90.0)
        n_smu = len(SMU_OVER_LIMIT) * len(channels(station))
    assert len(tried) == n_smu + len(BOARD_OVER_LIMIT) + len(CHAMBER_OVER_LIMIT)
    world = bench.bench
    assert world.max_applied_v["A"] == pytest.approx(2.5)  # the forming pulse, no more
    assert world.max_applied_v["B"] <= LIMITS["max_read_v"]
    assert world.max_applied_v["board"] == pytest.approx(2.0)
    for terminal, amps in world.max_applied_a.items():
        assert amps <= LIMITS["max_current_a"] * (1 + 1e-9), terminal
    assert_safe(bench)


def test_the_2636b_refuses_a_pulse_train_beyond_the_caps_it_was_uploaded_with(
    make_bench: Callable[..., EmulatedBench],
) -> None:
    """Defence in depth: even a call that bypasses the role is refused by the script."""
    bench = make_bench("keithley2636b")
    with open_station(bench) as station:
        station.board.select(2, 3, unselected="track")
        station.smu.configure(current_limit_a=1e-4, nplc=0.1)
        station.smu.pulse_train(2.0, 1e-3, 2)  # defines the script with the station's caps
        driver = station.drivers["smu"]
        driver.call("nvmlab_pulse_train", driver.smua, 2.4, 1e-3, 0.0, 1, 0.0, False, reply_lines=0)
        with pytest.raises(InstrumentProtocolError, match="beyond the caps it was uploaded with"):
            driver.check_errors()
        driver.call("nvmlab_pulse_train", driver.smua, 1.0, 0.5, 0.0, 1, 0.0, False, reply_lines=0)
        with pytest.raises(InstrumentProtocolError, match="beyond the caps"):
            driver.check_errors()
    assert bench.bench.max_applied_v["A"] == pytest.approx(2.0)
