"""When faults fire (every Nth reply, listed replies, a seeded probability, a window, a cap)
and what the chamber faults do."""

from __future__ import annotations

import pytest

from nvmlab.clock import VirtualClock
from nvmlab.mocks.firmware.base import LineInstrument
from nvmlab.mocks.serving.faults import FaultInjector, FaultSpec, check_chamber_fault_support


def replies(inj: FaultInjector, n: int) -> list[bytes]:
    out = []
    for i in range(1, n + 1):
        inj.write(f"ECHO r{i}\n".encode())
        out.append(inj.read())
    return out


def test_every_nth_reply_within_a_window_and_a_cap(echo: LineInstrument) -> None:
    inj = FaultInjector(echo, [FaultSpec("drop", every=2, start=3, stop=9, max_count=2)])
    got = replies(inj, 10)
    assert [i + 1 for i, r in enumerate(got) if r == b""] == [4, 6]
    assert inj.log == [(4, "drop"), (6, "drop")]


def test_probability_is_reproducible_from_its_seed(echo: LineInstrument) -> None:
    runs = []
    for _ in range(2):
        inj = FaultInjector(echo, [FaultSpec("drop", probability=0.3, seed=11)])
        replies(inj, 200)
        runs.append([n for n, _ in inj.log])
    assert runs[0] == runs[1]
    assert 35 <= len(runs[0]) <= 85  # 60 expected, binomial sigma 6.5


def test_one_command_line_with_two_queries_counts_two_replies(echo: LineInstrument) -> None:
    inj = FaultInjector(echo, [FaultSpec("drop", messages=(2,))])
    inj.write(b"ECHO a\nECHO b\nECHO c\n")
    assert inj.read() == b"a\nc\n"


def test_chamber_alarm_starts_at_a_time_and_clears_after_its_duration(
    fake_chamber: LineInstrument, clock: VirtualClock
) -> None:
    chamber = fake_chamber
    inj = FaultInjector(
        chamber, [FaultSpec("alarm", at_s=100.0, duration_s=50.0, message="HEATER")]
    )
    inj.write(b"ALARM?\n")
    assert inj.read() == b"NONE\r\n"
    clock.sleep(120.0)
    inj.write(b"ALARM?\n")
    assert inj.read() == b"HEATER\r\n"
    clock.sleep(40.0)
    inj.write(b"ALARM?\n")
    assert inj.read() == b"NONE\r\n"


def test_sensor_fault_fires_on_a_reply_number(fake_chamber: LineInstrument) -> None:
    chamber = fake_chamber
    inj = FaultInjector(chamber, [FaultSpec("sensor", messages=(2,))])
    replies(inj, 1)
    assert not chamber.sensor_fault
    replies(inj, 1)
    assert chamber.sensor_fault


def test_chamber_faults_need_a_chamber(echo: LineInstrument) -> None:
    with pytest.raises(ValueError, match="no alarm to inject"):
        check_chamber_fault_support(echo, [FaultSpec("alarm", at_s=1.0)])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kind": "explode", "every": 1}, "kind 'explode' is not one of late, drop"),
        ({"kind": "drop"}, "say when the fault fires"),
        ({"kind": "drop", "every": 0}, "every=0 must be an integer >= 1"),
        ({"kind": "drop", "probability": 1.5}, "probability=1.5 must be within 0..1"),
        ({"kind": "late", "every": 1, "delay_s": -1.0}, "delay_s=-1.0"),
        ({"kind": "drop", "at_s": 3.0}, "at_s applies only to alarm, sensor"),
        ({"kind": "drop", "every": 1, "often": True}, "unknown fault setting(s) often"),
    ],
)
def test_invalid_fault_settings_say_what_is_allowed(settings: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        FaultSpec.from_dict(settings)
    assert message in str(err.value)
