"""A station's safety limits, checked before any command is built.

Every role implementation calls these checks before it formats a command: a value
outside the limits raises :class:`~nvmlab.errors.SafetyLimitError` and nothing is sent.

Units: V, A, s, C.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from nvmlab.errors import SafetyLimitError

#: What a voltage is for; each purpose has its own |V| cap.
VoltagePurpose = Literal["read", "write", "forming"]


@dataclass(frozen=True)
class SafetyLimits:
    """The station's caps. Defaults suit the memristor crossbars of devices.md."""

    max_read_v: float = 0.5
    max_write_v: float = 2.5
    max_forming_v: float = 3.0
    max_current_a: float = 1e-3
    max_pulse_width_s: float = 0.1
    min_temperature_c: float = -10.0
    max_temperature_c: float = 125.0
    #: eFlash program / erase biases can be far higher than memristor writes.
    max_eflash_v: float = 12.0

    def max_voltage(self, purpose: VoltagePurpose) -> float:
        return {"read": self.max_read_v, "write": self.max_write_v, "forming": self.max_forming_v}[
            purpose
        ]

    def check_voltage(
        self, volts: float, purpose: VoltagePurpose = "read", *, what: str = "voltage"
    ) -> float:
        """Return ``volts`` (V) if |volts| is within the cap for ``purpose``, else raise."""
        cap = self.max_voltage(purpose)
        _check_finite(volts, what)
        if abs(volts) > cap:
            raise SafetyLimitError(
                f"{what} {volts:g} V exceeds the station's {purpose} limit of +-{cap:g} V; nothing was sent"
            )
        return float(volts)

    def check_eflash_voltage(self, volts: float, *, what: str = "eFlash bias") -> float:
        _check_finite(volts, what)
        if abs(volts) > self.max_eflash_v:
            raise SafetyLimitError(
                f"{what} {volts:g} V exceeds the station's eFlash limit of +-{self.max_eflash_v:g} V; nothing was sent"
            )
        return float(volts)

    def check_current_limit(self, amps: float, *, what: str = "compliance current") -> float:
        """Return ``amps`` (A, a magnitude: > 0) if it is within ``max_current_a``, else raise."""
        _check_finite(amps, what)
        if not 0 < amps <= self.max_current_a:
            raise SafetyLimitError(
                f"{what} {amps:g} A is outside (0, {self.max_current_a:g}] A allowed by the station; nothing was sent"
            )
        return float(amps)

    def check_pulse_width(self, seconds: float, *, what: str = "pulse width") -> float:
        _check_finite(seconds, what)
        if not 0 < seconds <= self.max_pulse_width_s:
            raise SafetyLimitError(
                f"{what} {seconds:g} s is outside (0, {self.max_pulse_width_s:g}] s allowed by the station; nothing was sent"
            )
        return float(seconds)

    def check_temperature(self, celsius: float, *, what: str = "chamber setpoint") -> float:
        _check_finite(celsius, what)
        if not self.min_temperature_c <= celsius <= self.max_temperature_c:
            raise SafetyLimitError(
                f"{what} {celsius:g} C is outside [{self.min_temperature_c:g}, {self.max_temperature_c:g}] C "
                "allowed by the station; nothing was sent"
            )
        return float(celsius)


def _check_finite(value: float, what: str) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SafetyLimitError(f"{what} {value!r} is not a finite number; nothing was sent")
