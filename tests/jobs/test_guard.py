"""The fault guard's chamber watch: a temperature out of the job's band suspends the job
before the next unit until the chamber is back in band, and fails the run when it stays
out longer than the job allows (a chamber that reports PV and SP, on a virtual clock)."""

from __future__ import annotations

from typing import Any

import pytest

from nvmlab.clock import VirtualClock
from nvmlab.jobs.guard import JobGuard, PersistentFault, is_transient
from nvmlab.jobs.jobfile import FaultPolicy


class _Driver:
    """PV follows a schedule of (bench time from which it holds, PV); SP stays 85 C."""

    def __init__(self, clock: VirtualClock, schedule: list[tuple[float, float]]) -> None:
        self.clock = clock
        self.schedule = schedule

    def read_pv_sp(self) -> tuple[float, float]:
        pv = [p for t, p in self.schedule if t <= self.clock.now()][-1]
        return pv, 85.0

    def check_alarms(self) -> None:
        return None


class _Chamber:
    def __init__(self, driver: _Driver) -> None:
        self.driver = driver


class _Station:
    def __init__(self, clock: VirtualClock, driver: _Driver) -> None:
        self.clock = clock
        self.roles = {"chamber": _Chamber(driver)}
        self.chamber = self.roles["chamber"]
        self.transports: dict[str, Any] = {}


class _Db:
    """Events are stored through ``engine.begin()``; here they are only counted."""

    class engine:  # noqa: N801 - stands in for an SQLAlchemy engine
        @staticmethod
        def begin() -> Any:
            raise RuntimeError("no database in this test")


def _guard(schedule: list[tuple[float, float]], **policy: Any) -> tuple[JobGuard, VirtualClock]:
    clock = VirtualClock()
    station = _Station(clock, _Driver(clock, schedule))
    guard = JobGuard(station, _Db(), 1, FaultPolicy(chamber_band_c=1.0, poll_s=30.0, **policy))
    return guard, clock


def test_out_of_band_suspends_until_back_in_band() -> None:
    guard, clock = _guard([(0.0, 91.0), (400.0, 85.4)])
    guard.before_unit("s2-temperature/temperature-85C")
    assert 400.0 <= clock.now() <= 430.0  # polled every 30 s until in band
    assert guard.counts == {"warning": 1, "recovery": 1}
    guard.before_unit("s2-temperature/temperature-100C")  # in band: no wait
    assert clock.now() <= 430.0


def test_out_of_band_longer_than_allowed_fails_the_run() -> None:
    guard, clock = _guard([(0.0, 91.0)], suspend_timeout_s=600.0)
    with pytest.raises(PersistentFault, match=r"out of band \(85.00 \+- 1 C\)"):
        guard.before_unit("s1-map/row-3")
    assert clock.now() == pytest.approx(600.0)


def test_which_faults_are_transient() -> None:
    from nvmlab.drivers.chamber_alarms import ChamberAlarm
    from nvmlab.errors import (
        InstrumentConnectionClosed,
        InstrumentProtocolError,
        InstrumentTimeout,
        ReplayMismatch,
        SafetyLimitError,
    )

    assert is_transient(InstrumentTimeout("late"))
    assert is_transient(InstrumentConnectionClosed("closed"))
    assert is_transient(InstrumentProtocolError("garbled"))
    assert not is_transient(ChamberAlarm("alarm"))
    assert not is_transient(ReplayMismatch("differs"))
    assert not is_transient(SafetyLimitError("too high"))
