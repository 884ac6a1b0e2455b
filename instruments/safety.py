"""A station's safety limits, checked before any command is built.

Every role implementation calls these checks before it formats a command: a value
outside the limits raises :class:`~nvmlab.errors.SafetyLimitError` and nothing is sent.

The defaults depend on the array the station holds (:func:`default_limits`): the
:class:`SafetyLimits` field defaults suit the memristor crossbars of docs/devices.md; an eFlash
station reads at the documented eFlash biases (bit line 1 V, word line 1.5 V), so its
read limit is higher. ``docs/station-file.md`` lists both sets.

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
    """The station's caps. The field defaults suit the memristor crossbars of docs/devices.md;
    :func:`default_limits` gives those of another array kind."""

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


#: Array kinds a station file may name (``[station] array``).
ARRAY_KINDS: tuple[str, ...] = ("memristor", "eflash")

#: Defaults that differ from the :class:`SafetyLimits` field defaults, by array kind.
#: eFlash (docs/devices.md, Fahimi 2021): the read forces the bit line at 1 V and the word line
#: at 1.5 V (SMU A in the two-channel read, or a board DAC line), so reads go up to 1.5 V;
#: program and erase biases are checked against ``max_eflash_v``, not the write limit.
ARRAY_LIMIT_DEFAULTS: dict[str, dict[str, float]] = {
    "memristor": {},
    "eflash": {"max_read_v": 1.5},
}


def default_limits(array: str = "memristor", **overrides: float) -> SafetyLimits:
    """The limits of a station holding an ``array`` (``"memristor"`` or ``"eflash"``),
    with ``overrides`` (the station file's ``[limits]``) taking precedence."""
    if array not in ARRAY_LIMIT_DEFAULTS:
        raise ValueError(f"unknown array kind {array!r}; allowed: {', '.join(ARRAY_KINDS)}")
    return SafetyLimits(**{**ARRAY_LIMIT_DEFAULTS[array], **overrides})


def _check_finite(value: float, what: str) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SafetyLimitError(f"{what} {value!r} is not a finite number; nothing was sent")
