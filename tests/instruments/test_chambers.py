"""The chamber role on the emulated Espec and Watlow F4 chambers, in virtual time."""

from __future__ import annotations

import time

import pytest

from nvmlab.drivers.espec import EspecChamber
from nvmlab.drivers.testing import expected_protocol
from nvmlab.errors import InstrumentProtocolError, SafetyLimitError
from nvmlab.instruments.chambers import (
    ChamberAlarm,
    ChamberNotStable,
    ChamberSensorFault,
    make_chamber,
)
from nvmlab.instruments.roles import Chamber
from nvmlab.instruments.safety import SafetyLimits
from nvmlab.instruments.station import Station

CHAMBERS = pytest.mark.parametrize(
    "nvmlab_bench_options",
    [{"chamber": "espec"}, {"chamber": "watlow_f4"}],
    indirect=True,
    ids=["espec", "watlow_f4"],
)


@pytest.fixture
def chamber_station(emulated_bench):  # type: ignore[no-untyped-def]
    """A station with only the chamber of the emulated bench (safe setpoint 25 C)."""
    data = emulated_bench.station_dict()
    data["instruments"] = {"chamber": data["instruments"]["chamber"]}
    data["limits"] = {"min_temperature_c": -20.0, "max_temperature_c": 100.0}
    with Station(
        data, visa_library=emulated_bench.visa_library(), clock=emulated_bench.clock
    ) as station:
        yield station


@CHAMBERS
def test_heating_to_85_c_settles_then_soaks_in_virtual_time(
    chamber_station, emulated_bench, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    chamber = chamber_station.chamber
    assert isinstance(chamber, Chamber)
    # Virtual time, not wall time: the 40 minutes of ramp, polls and soak pass without one
    # real sleep (a time.sleep anywhere in the stack fails the test at once; no wall-clock
    # threshold that a loaded machine could break).
    real_sleeps: list[float] = []

    def no_real_sleep(seconds: float) -> None:
        real_sleeps.append(seconds)
        raise AssertionError(f"time.sleep({seconds}) during a virtual-time soak")

    monkeypatch.setattr(time, "sleep", no_real_sleep)
    start = emulated_bench.clock.now()
    chamber.set_setpoint(85.0)
    assert chamber.setpoint() == pytest.approx(85.0)
    final = chamber.wait_until_stable(
        tolerance_c=0.3, consecutive=5, poll_interval_s=10.0, soak_time_s=600.0
    )
    elapsed = emulated_bench.clock.now() - start
    assert abs(final - 85.0) <= 0.5
    # 60 C at the 3 C/min ramp limit is 20 min at least, plus 5 polls in band and the soak.
    assert elapsed >= 20 * 60 + 40 + 600
    assert elapsed < 3 * 3600
    assert emulated_bench.bench.thermal.air_c == pytest.approx(85.0, abs=0.3)
    assert real_sleeps == [], f"real sleeps of {real_sleeps} s during a virtual-time soak"


@CHAMBERS
def test_a_setpoint_beyond_the_station_range_is_refused_before_sending(
    chamber_station, emulated_bench
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SafetyLimitError, match=r"150 C is outside \[-20, 100\] C"):
        chamber_station.chamber.set_setpoint(150.0)
    assert emulated_bench.bench.thermal.setpoint_c == pytest.approx(25.0)


@CHAMBERS
def test_not_settling_in_time_raises_with_the_last_pv_and_sp(chamber_station) -> None:  # type: ignore[no-untyped-def]
    chamber_station.chamber.set_setpoint(90.0)
    with pytest.raises(
        ChamberNotStable, match=r"not stable within 300 s: last PV \d+\.\d+ C, SP 90.00 C"
    ) as info:
        chamber_station.chamber.wait_until_stable(poll_interval_s=10.0, timeout_s=300.0)
    assert "chamber" in str(info.value)


@CHAMBERS
def test_a_sensor_fault_stops_the_wait_at_once(chamber_station, emulated_bench) -> None:  # type: ignore[no-untyped-def]
    chamber_station.chamber.set_setpoint(40.0)
    emulated_bench.firmware["chamber"].inject_sensor_fault(True)
    start = emulated_bench.clock.now()
    with pytest.raises(InstrumentProtocolError, match="sensor fault|chamber alarm"):
        chamber_station.chamber.wait_until_stable(poll_interval_s=10.0)
    assert emulated_bench.clock.now() - start < 60.0


@CHAMBERS
def test_safe_state_goes_to_the_configured_safe_setpoint(chamber_station, emulated_bench) -> None:  # type: ignore[no-untyped-def]
    chamber_station.chamber.set_setpoint(70.0)
    chamber_station.chamber.safe_state()
    assert emulated_bench.bench.thermal.setpoint_c == pytest.approx(25.0)
    assert emulated_bench.bench.thermal.running


@pytest.mark.nvmlab_bench(chamber="espec")
def test_espec_standby_stops_regulating(emulated_bench) -> None:  # type: ignore[no-untyped-def]
    data = emulated_bench.station_dict()
    data["instruments"] = {"chamber": {**data["instruments"]["chamber"]}}
    del data["instruments"]["chamber"]["safe_setpoint_c"]
    with Station(
        data, visa_library=emulated_bench.visa_library(), clock=emulated_bench.clock
    ) as station:
        station.chamber.set_setpoint(60.0)
        assert emulated_bench.bench.thermal.running
        station.chamber.standby()
        assert not emulated_bench.bench.thermal.running
        station.chamber.set_setpoint(30.0)
        assert emulated_bench.bench.thermal.running
    # no safe setpoint configured: the exit puts the Espec in standby
    assert not emulated_bench.bench.thermal.running


@pytest.mark.nvmlab_bench(chamber="watlow_f4")
def test_watlow_standby_is_the_safe_setpoint(chamber_station, emulated_bench) -> None:  # type: ignore[no-untyped-def]
    chamber_station.chamber.set_setpoint(-10.0)
    chamber_station.chamber.standby()
    assert emulated_bench.bench.thermal.setpoint_c == pytest.approx(25.0)


def test_the_stabilization_rule_counts_consecutive_readings_in_band() -> None:
    """PV 24.0, 24.6, 25.1, 24.9, 25.6, 25.2, 25.1, 25.0 against SP 25: the reading at 25.6
    breaks the run, so three in a row are reached only at the last reading."""
    readings = ["24.0", "24.6", "25.1", "24.9", "25.6", "25.2", "25.1", "25.0"]
    script = []
    for pv in readings:
        script += [("MON?", f"{pv},,CONSTANT,0"), ("TEMP?", f"{pv},25.0,140.0,-40.0")]
        script.append(("ALARM?", "0"))
    script.append(("MON?", "25.0,,CONSTANT,0"))

    class CountingClock:
        def __init__(self) -> None:
            self.t = 0.0

        def now(self) -> float:
            return self.t

        def sleep(self, seconds: float) -> None:
            self.t += seconds

    clock = CountingClock()
    with expected_protocol(EspecChamber, script) as driver:
        chamber = make_chamber(driver, SafetyLimits(), clock=clock)
        final = chamber.wait_until_stable(
            tolerance_c=0.3, consecutive=3, poll_interval_s=5.0, soak_time_s=100.0
        )
    assert final == 25.0
    assert clock.t == 7 * 5.0 + 100.0


#: What each chamber calls its sensor fault and its injected alarm (the drivers' tables,
#: from the emulators' documented codes: mocks/firmware/espec.py, mocks/firmware/watlow_f4.py).
SENSOR_FAULT_WORDS = {"espec": "dry-bulb temperature sensor burnout", "watlow_f4": "open sensor"}
ALARM_WORDS = {"espec": r"code 1: alarm stop", "watlow_f4": r"alarm 1 \(register 102\)"}


@CHAMBERS
def test_a_reading_the_chamber_marks_invalid_raises_naming_the_fault(
    chamber_station, emulated_bench, request
) -> None:  # type: ignore[no-untyped-def]
    kind = request.node.callspec.id
    chamber = chamber_station.chamber
    assert chamber.temperature() < 100.0
    emulated_bench.firmware["chamber"].inject_sensor_fault(True)
    for read in (chamber.temperature, chamber.driver.read_pv_sp):
        with pytest.raises(ChamberSensorFault, match=SENSOR_FAULT_WORDS[kind]) as info:
            read()
        assert "chamber" in str(info.value)
    with pytest.raises(ChamberSensorFault, match=SENSOR_FAULT_WORDS[kind]):
        chamber.wait_until_stable(poll_interval_s=10.0)
    emulated_bench.firmware["chamber"].inject_sensor_fault(False)
    assert chamber.temperature() < 100.0  # repaired: a reading again


@CHAMBERS
def test_alarms_are_reported_with_the_chamber_s_own_name(
    chamber_station, emulated_bench, request
) -> None:  # type: ignore[no-untyped-def]
    kind = request.node.callspec.id
    emulated_bench.firmware["chamber"].inject_alarm("HEATER")
    with pytest.raises(ChamberAlarm, match=ALARM_WORDS[kind]):
        chamber_station.chamber.driver.check_alarms()
    # an alarm that does not touch the sensor leaves the reading valid
    assert chamber_station.chamber.temperature() < 100.0
