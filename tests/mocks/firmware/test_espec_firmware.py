"""The Espec chamber firmware: P300 command set byte for byte, regulation, alarms."""

from __future__ import annotations

import numpy as np
import pytest

from nvmlab.clock import VirtualClock
from nvmlab.mocks.firmware.espec import EspecEmulator
from nvmlab.mocks.physics.resistor import ResistorArray
from nvmlab.mocks.thermal import ThermalModel, ThermalParams
from nvmlab.mocks.world import Bench


def make_chamber(noise_c: float = 0.0, **options: object) -> EspecEmulator:
    clock = VirtualClock()
    thermal = ThermalModel(clock, ThermalParams(sensor_noise_c=noise_c))
    bench = Bench(ResistorArray(np.full((4, 4), 50e-6)), clock, thermal)
    return EspecEmulator(bench, **options)  # type: ignore[arg-type]


@pytest.fixture
def chamber() -> EspecEmulator:
    return make_chamber()


def ask(chamber: EspecEmulator, command: str) -> bytes:
    chamber.write(command.encode("ascii") + b"\r\n")
    return chamber.read()


def test_queries_at_power_up(chamber: EspecEmulator) -> None:
    assert ask(chamber, "TEMP?") == b"25.0,25.0,185.0,-45.0\r\n"
    assert ask(chamber, "MON?") == b"25.0,,CONSTANT,0\r\n"
    assert ask(chamber, "MODE?") == b"CONSTANT\r\n"
    assert ask(chamber, "ROM?") == b"P300 Ver.1.20\r\n"
    assert ask(chamber, "TYPE?") == b"T,P300,180.0\r\n"
    assert ask(chamber, "ALARM?") == b"0\r\n"
    assert ask(chamber, "SRQ?") == b"0000000\r\n"
    assert ask(chamber, "MON?,DETAIL") == b"25.0,,CONSTANT,0\r\n"


@pytest.mark.parametrize("command", ["TEMP, S85.0", "TEMP,S85.0", "temp, s85", "TEMP, S85.0, C1"])
def test_setpoint_forms_are_echoed_after_ok(chamber: EspecEmulator, command: str) -> None:
    assert ask(chamber, command) == b"OK: " + command.encode() + b"\r\n"
    assert ask(chamber, "TEMP?") == b"25.0,85.0,185.0,-45.0\r\n"


def test_alarm_limits_alone_and_combined(chamber: EspecEmulator) -> None:
    assert ask(chamber, "TEMP, H120.0") == b"OK: TEMP, H120.0\r\n"
    assert ask(chamber, "TEMP, L-10.0") == b"OK: TEMP, L-10.0\r\n"
    assert ask(chamber, "TEMP?") == b"25.0,25.0,120.0,-10.0\r\n"
    assert ask(chamber, "TEMP, S60.0 H90.0 L0.0") == b"OK: TEMP, S60.0 H90.0 L0.0\r\n"
    assert ask(chamber, "TEMP?") == b"25.0,60.0,90.0,0.0\r\n"


def test_rs485_address_prefix_is_accepted(chamber: EspecEmulator) -> None:
    assert ask(chamber, "1,TEMP?") == b"25.0,25.0,185.0,-45.0\r\n"
    assert ask(chamber, "1,MODE, STANDBY") == b"OK: MODE, STANDBY\r\n"


ERRORS = [
    ("FOO", b"NA:CMD ERR\r\n"),
    ("TEMPERATURE?", b"NA:CMD ERR\r\n"),
    ("TEMP", b"NA:PARA ERR\r\n"),
    ("TEMP,", b"NA:PARA ERR\r\n"),
    ("TEMP, X25", b"NA:PARA ERR\r\n"),
    ("TEMP, S", b"NA:PARA ERR\r\n"),
    ("TEMP, S25.0 S30.0", b"NA:PARA ERR\r\n"),
    ("TEMP, S300.0", b"NA:DATA OUT OF RANGE\r\n"),
    ("TEMP, S-50.0", b"NA:DATA OUT OF RANGE\r\n"),
    ("TEMP, H500", b"NA:DATA OUT OF RANGE\r\n"),
    ("TEMP, H-50 L-40", b"NA:DATA OUT OF RANGE\r\n"),
    ("TEMP, S25.0, C2", b"NA:DATA OUT OF RANGE\r\n"),
    ("MODE, RUN", b"NA:PARA ERR\r\n"),
    ("MODE", b"NA:PARA ERR\r\n"),
    ("POWER, MAYBE", b"NA:PARA ERR\r\n"),
    ("TEMP?,NOW", b"NA:PARA ERR\r\n"),
    ("HUMI?", b"NA:CONT NOT READY-1\r\n"),
]


@pytest.mark.parametrize(("command", "reply"), ERRORS)
def test_errors_are_na_replies_and_change_nothing(
    chamber: EspecEmulator, command: str, reply: bytes
) -> None:
    before = (
        chamber.thermal.setpoint_c,
        chamber.upper_alarm_c,
        chamber.lower_alarm_c,
        chamber.mode,
    )
    assert ask(chamber, command) == reply
    after = (chamber.thermal.setpoint_c, chamber.upper_alarm_c, chamber.lower_alarm_c, chamber.mode)
    assert after == before


def test_front_panel_protection_refuses_settings_but_answers_queries() -> None:
    chamber = make_chamber(protect=True)
    assert ask(chamber, "TEMP, S50.0") == b"NA:PROTECT ON\r\n"
    assert ask(chamber, "MODE, OFF") == b"NA:PROTECT ON\r\n"
    assert ask(chamber, "TEMP?") == b"25.0,25.0,185.0,-45.0\r\n"


def test_modes_and_power(chamber: EspecEmulator) -> None:
    assert ask(chamber, "POWER, OFF") == b"OK: POWER, OFF\r\n"
    assert ask(chamber, "MODE?") == b"OFF\r\n"
    assert ask(chamber, "MON?") == b"25.0,,OFF,0\r\n"
    assert ask(chamber, "POWER, ON") == b"OK: POWER, ON\r\n"
    assert ask(chamber, "MODE?") == b"STANDBY\r\n"
    assert ask(chamber, "MODE, CONSTANT") == b"OK: MODE, CONSTANT\r\n"
    assert ask(chamber, "MODE?") == b"CONSTANT\r\n"


def test_constant_mode_regulates_and_standby_drifts_back_to_ambient(chamber: EspecEmulator) -> None:
    clock = chamber.clock
    assert ask(chamber, "TEMP, S85.0") == b"OK: TEMP, S85.0\r\n"
    clock.sleep(3600)
    assert ask(chamber, "TEMP?") == b"85.0,85.0,185.0,-45.0\r\n"
    assert ask(chamber, "MODE, STANDBY") == b"OK: MODE, STANDBY\r\n"
    clock.sleep(3600)
    pv = float(ask(chamber, "TEMP?").split(b",")[0])
    assert pv == pytest.approx(25.0, abs=0.1)
    assert ask(chamber, "MODE, CONSTANT") == b"OK: MODE, CONSTANT\r\n"
    clock.sleep(600)
    pv = float(ask(chamber, "TEMP?").split(b",")[0])
    assert 40.0 < pv < 85.0  # ramping back up at the configured rate


def test_sensor_reading_is_noisy_around_the_air_temperature() -> None:
    chamber = make_chamber(noise_c=0.2)
    readings = [float(ask(chamber, "TEMP?").split(b",")[0]) for _ in range(300)]
    # 4 sampling errors of 300 readings: 4 x 0.2 / sqrt(300) = 0.046 C on the mean, and
    # 4 / sqrt(2 x 299) = 16 % on the standard deviation (the 0.1 C display digit adds 1 %)
    assert np.mean(readings) == pytest.approx(25.0, abs=4 * 0.2 / np.sqrt(300))
    assert np.std(readings) == pytest.approx(0.2, rel=4 / np.sqrt(2 * 299) + 0.01)


def test_injected_alarm_is_reported_and_stops_regulation(chamber: EspecEmulator) -> None:
    ask(chamber, "TEMP, S100.0")
    chamber.clock.sleep(3600)
    chamber.inject_alarm("overheat protector tripped")
    assert ask(chamber, "MON?") == b"100.0,,CONSTANT,1\r\n"
    assert ask(chamber, "ALARM?") == b"1,1\r\n"
    assert ask(chamber, "SRQ?") == b"0100000\r\n"
    chamber.clock.sleep(3600)
    assert float(ask(chamber, "TEMP?").split(b",")[0]) < 30.0
    chamber.clear_alarm()
    assert ask(chamber, "ALARM?") == b"0\r\n"
    chamber.clock.sleep(3600)
    assert ask(chamber, "TEMP?") == b"100.0,100.0,185.0,-45.0\r\n"


def test_sensor_fault_reads_burnout_and_raises_an_alarm(chamber: EspecEmulator) -> None:
    chamber.inject_sensor_fault(True)
    assert ask(chamber, "TEMP?") == b"999.9,25.0,185.0,-45.0\r\n"
    assert ask(chamber, "MON?") == b"999.9,,CONSTANT,1\r\n"
    assert ask(chamber, "ALARM?") == b"1,31\r\n"
    chamber.inject_sensor_fault(False)
    assert ask(chamber, "MON?") == b"25.0,,CONSTANT,0\r\n"


def test_absolute_alarm_limits_raise_an_alarm_while_outside(chamber: EspecEmulator) -> None:
    assert ask(chamber, "TEMP, S60.0 H40.0 L0.0") == b"OK: TEMP, S60.0 H40.0 L0.0\r\n"
    chamber.clock.sleep(3600)
    assert ask(chamber, "ALARM?") == b"1,2\r\n"
    assert ask(chamber, "TEMP?") == b"60.0,60.0,40.0,0.0\r\n"  # regulation continues


def test_query_latency_is_charged_per_command() -> None:
    chamber = make_chamber(query_latency_s=0.05)
    t0 = chamber.clock.now()
    ask(chamber, "TEMP?")
    ask(chamber, "MON?")
    assert chamber.clock.now() - t0 == pytest.approx(0.1)


def test_random_bytes_never_crash_the_chamber(chamber: EspecEmulator) -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        payload = bytes(rng.integers(0, 256, size=int(rng.integers(1, 30)), dtype=np.uint8))
        payload = payload.replace(b"\n", b"")
        chamber.write(payload + b"\r\n")
        reply = chamber.read()
        if payload.strip():
            assert reply.endswith(b"\r\n") and reply.count(b"\r\n") == 1, payload
    assert ask(chamber, "MODE?") in (b"CONSTANT\r\n", b"STANDBY\r\n", b"OFF\r\n")
