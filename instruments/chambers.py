"""The :class:`~nvmlab.instruments.roles.Chamber` role for the Espec and Watlow F4 chambers.

Both drivers offer the same small interface (``identify``, ``read_temperature``,
``read_setpoint``, ``read_pv_sp``, ``set_setpoint``, ``regulate`` and, for Espec,
``standby``); :class:`StationChamber` adds what the lab needs on top:

- every setpoint is checked against the station's temperature range before anything is
  sent (:class:`~nvmlab.errors.SafetyLimitError`, nothing on the wire);
- :meth:`StationChamber.wait_until_stable`: |PV - SP| within a tolerance for N consecutive
  readings, then a soak, timed on an injected :class:`~nvmlab.clock.Clock` so it runs in
  virtual time against the in-process emulated bench;
- a reading the chamber marks invalid raises :class:`ChamberSensorFault` and an active
  alarm :class:`ChamberAlarm`, each naming the alarm as the chamber does (the drivers'
  tables);
- standby and the safe state: Espec's own standby mode, or the configured safe setpoint
  (always the safe setpoint for an F4, which has no standby register).

Temperatures in C, times in s.
"""

from __future__ import annotations

from typing import Protocol

from nvmlab.clock import Clock, WallClock
from nvmlab.drivers.chamber_alarms import ChamberAlarm, ChamberSensorFault
from nvmlab.errors import InstrumentTimeout
from nvmlab.instruments.safety import SafetyLimits

__all__ = [
    "ChamberAlarm",
    "ChamberDriver",
    "ChamberNotStable",
    "ChamberSensorFault",
    "StationChamber",
    "make_chamber",
]

#: Where an F4 chamber goes on standby when the station names no safe setpoint (C).
DEFAULT_SAFE_SETPOINT_C = 25.0


class ChamberDriver(Protocol):
    """What :class:`StationChamber` needs from a chamber driver."""

    model: str

    def identify(self) -> str: ...
    def read_temperature(self) -> float: ...
    def read_setpoint(self) -> float: ...
    def read_pv_sp(self) -> tuple[float, float]: ...
    def set_setpoint(self, celsius: float) -> None: ...
    def regulate(self) -> None: ...
    def check_alarms(self) -> None: ...

    @property
    def has_native_standby(self) -> bool: ...


class ChamberNotStable(InstrumentTimeout):
    """The chamber did not settle within the timeout; the message has the last PV and SP."""


class StationChamber:
    """A chamber as the station's ``chamber`` role.

    ``safe_setpoint_c`` (C): where :meth:`safe_state` leaves the chamber; ``None`` puts an
    Espec in standby and an F4 at :data:`DEFAULT_SAFE_SETPOINT_C`. ``clock`` times the
    stabilization polls and the soak (the lab's wall clock by default).
    """

    def __init__(
        self,
        driver: ChamberDriver,
        limits: SafetyLimits,
        *,
        clock: Clock | None = None,
        safe_setpoint_c: float | None = None,
        name: str = "chamber",
    ) -> None:
        self.driver = driver
        self.limits = limits
        self.clock: Clock = clock if clock is not None else WallClock()
        if safe_setpoint_c is not None:
            limits.check_temperature(safe_setpoint_c, what="safe setpoint")
        self.safe_setpoint_c = safe_setpoint_c
        self.name = name

    # -- Chamber role ---------------------------------------------------------------------
    def identify(self) -> str:
        return self.driver.identify()

    def set_setpoint(self, celsius: float) -> None:
        """Regulate at ``celsius`` (C); checked against the station's range first."""
        celsius = self.limits.check_temperature(celsius)
        self.driver.set_setpoint(celsius)
        self.driver.regulate()

    def temperature(self) -> float:
        """Process value (C).

        Raises :class:`ChamberSensorFault` naming the fault, in the chamber's words, when
        the chamber marks the reading invalid (a burnt-out or open sensor).
        """
        return self.driver.read_temperature()

    def setpoint(self) -> float:
        """Present setpoint (C)."""
        return self.driver.read_setpoint()

    def wait_until_stable(
        self,
        *,
        tolerance_c: float = 0.3,
        consecutive: int = 5,
        poll_interval_s: float = 10.0,
        soak_time_s: float = 300.0,
        timeout_s: float = 7200.0,
    ) -> float:
        """Wait until |PV - SP| <= ``tolerance_c`` (C) for ``consecutive`` polls, then soak.

        Polls every ``poll_interval_s`` (s); once stable, waits ``soak_time_s`` (s) so the
        device under test follows the air, and returns the temperature then read (C).
        Raises :class:`ChamberNotStable` with the last PV and SP when ``timeout_s`` (s)
        passes first (the soak is not part of the timeout), and the driver's error at once
        when the chamber reports an alarm or a sensor fault.
        """
        if not tolerance_c > 0:
            raise ValueError(f"tolerance_c must be > 0 C, got {tolerance_c!r}")
        if consecutive < 1:
            raise ValueError(f"consecutive must be >= 1 reading, got {consecutive!r}")
        if not poll_interval_s > 0:
            raise ValueError(f"poll_interval_s must be > 0 s, got {poll_interval_s!r}")
        if soak_time_s < 0 or not timeout_s > 0:
            raise ValueError(
                f"soak_time_s must be >= 0 s and timeout_s > 0 s, got {soak_time_s!r}, {timeout_s!r}"
            )
        start = self.clock.now()
        in_band = 0
        while True:
            pv, sp = self.driver.read_pv_sp()
            self.driver.check_alarms()
            in_band = in_band + 1 if abs(pv - sp) <= tolerance_c else 0
            if in_band >= consecutive:
                break
            waited = self.clock.now() - start
            if waited + poll_interval_s > timeout_s:
                raise ChamberNotStable(
                    f"not stable within {timeout_s:g} s: last PV {pv:.2f} C, SP {sp:.2f} C, "
                    f"|PV - SP| = {abs(pv - sp):.2f} C > tolerance {tolerance_c:g} C "
                    f"(or fewer than {consecutive} consecutive readings within it)",
                    instrument=self.name,
                    resource=getattr(getattr(self.driver, "transport", None), "resource", ""),
                )
            self.clock.sleep(poll_interval_s)
        self.clock.sleep(soak_time_s)
        return self.temperature()

    def standby(self) -> None:
        """Espec: standby mode (stops regulating). F4: the safe setpoint (no standby exists)."""
        if self.driver.has_native_standby:
            self.driver.standby()  # type: ignore[attr-defined]
        else:
            target = (
                self.safe_setpoint_c
                if self.safe_setpoint_c is not None
                else DEFAULT_SAFE_SETPOINT_C
            )
            self.driver.set_setpoint(self.limits.check_temperature(target, what="safe setpoint"))

    def safe_state(self) -> None:
        """The configured safe setpoint when there is one, otherwise :meth:`standby`."""
        if self.safe_setpoint_c is not None:
            self.set_setpoint(self.safe_setpoint_c)
        else:
            self.standby()


def make_chamber(
    driver: ChamberDriver,
    limits: SafetyLimits,
    *,
    clock: Clock | None = None,
    safe_setpoint_c: float | None = None,
    name: str = "chamber",
) -> StationChamber:
    """The chamber role over an Espec or Watlow F4 driver."""
    return StationChamber(driver, limits, clock=clock, safe_setpoint_c=safe_setpoint_c, name=name)
