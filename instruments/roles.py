"""The roles that algorithms speak to: :class:`SourceMeter`, :class:`Chamber`, :class:`ArrayBoard`.

Tuning and characterization code see only these small typed interfaces, so a Keithley
2400, a 2636B or a B2902A serves the same algorithm. Implementations wrap one driver each
and check the station's :class:`~nvmlab.instruments.safety.SafetyLimits` before any
command is built. Units are SI: V, A, s, C.

Channels are named ``"a"`` and ``"b"`` (``smua`` / ``smub`` on a 2636B, channel 1 / 2 on a
B2902A); one-channel SMUs have only ``"a"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from nvmlab.instruments.safety import VoltagePurpose

Channel = Literal["a", "b"]
#: State of the unselected lines during reads and writes (see docs/probe-board.md).
UnselectedScheme = Literal["ground", "float", "v/2", "v/3", "track", "track-b"]
LineMode = Literal["ground", "float", "dac", "smu-a", "smu-b", "track", "track-b"]


@dataclass(frozen=True)
class SweepTrace:
    """A sweep read back from the instrument's buffer: ``source_v`` (V; measured on a
    2400, the programmed levels on a 2636B and B2902A), ``current_a`` (A) and ``time_s``
    (s, each reading's time from the first, on the instrument's clock)."""

    source_v: np.ndarray
    current_a: np.ndarray
    time_s: np.ndarray


@runtime_checkable
class SourceMeter(Protocol):
    """A source-measure unit sourcing voltage and measuring current."""

    channels: tuple[str, ...]

    def identify(self) -> str:
        """The instrument's identification string."""
        ...

    def configure(
        self, *, current_limit_a: float, nplc: float = 1.0, channel: Channel = "a"
    ) -> None:
        """Voltage source, current measure, compliance ``current_limit_a`` (A), integration ``nplc``."""
        ...

    def set_voltage(
        self, volts: float, *, purpose: VoltagePurpose = "read", channel: Channel = "a"
    ) -> None:
        """Set the source level (V); checked against the limit for ``purpose``."""
        ...

    def output(self, on: bool, *, channel: Channel = "a") -> None:
        """Switch the output on or off."""
        ...

    def measure_current(self, *, channel: Channel = "a") -> float:
        """One current reading (A) at the present source level."""
        ...

    def list_sweep(
        self, volts: np.ndarray, *, purpose: VoltagePurpose = "read", channel: Channel = "a"
    ) -> np.ndarray:
        """Source each voltage (V) in turn and return the currents (A), as one bulk operation."""
        ...

    def sweep_trace(
        self, volts: np.ndarray, *, purpose: VoltagePurpose = "read", channel: Channel = "a"
    ) -> SweepTrace:
        """A list sweep (V, checked against the limit for ``purpose``) stored in the
        instrument's buffer and read back with each reading's time."""
        ...

    def pulse(
        self,
        volts: float,
        width_s: float,
        *,
        purpose: VoltagePurpose = "write",
        channel: Channel = "a",
    ) -> None:
        """One voltage pulse of ``width_s`` (s) from 0 V; the output returns to 0 V."""
        ...

    def pulse_train(
        self,
        volts: float,
        width_s: float,
        count: int,
        *,
        v_read: float = 0.0,
        purpose: VoltagePurpose = "write",
        channel: Channel = "a",
    ) -> np.ndarray:
        """``count`` pulses of ``volts`` (V) lasting ``width_s`` (s), each followed by one
        current reading (A) at ``v_read`` (V); returns the ``count`` currents. The output
        ends at 0 V (off again if it was off)."""
        ...

    def safe_state(self) -> None:
        """Source 0 V and switch every output off."""
        ...


@runtime_checkable
class Chamber(Protocol):
    """A temperature chamber."""

    def identify(self) -> str: ...

    def set_setpoint(self, celsius: float) -> None:
        """Run at ``celsius`` (C); checked against the station's temperature range."""
        ...

    def temperature(self) -> float:
        """Process value (C) from the chamber's sensor."""
        ...

    def setpoint(self) -> float:
        """Present setpoint (C)."""
        ...

    def wait_until_stable(
        self,
        *,
        tolerance_c: float = 0.3,
        consecutive: int = 5,
        poll_interval_s: float = 10.0,
        soak_time_s: float = 300.0,
        timeout_s: float = 7200.0,
    ) -> float:
        """Wait until |PV - SP| <= ``tolerance_c`` for ``consecutive`` polls, then soak.

        Returns the last temperature read (C); raises on timeout.
        """
        ...

    def standby(self) -> None:
        """Stop regulating (or go to the configured safe setpoint)."""
        ...

    def safe_state(self) -> None: ...


@runtime_checkable
class ArrayBoard(Protocol):
    """The crossbar / eFlash probe board: routing, half-select schemes, on-board pulses."""

    rows: int
    cols: int

    def identify(self) -> str: ...

    def select(self, row: int, col: int, *, unselected: UnselectedScheme = "ground") -> None:
        """Route the SMU to device (row, col) (word line, bit line for eFlash)."""
        ...

    def set_line(
        self, kind: Literal["row", "col"], index: int, mode: LineMode, volts: float = 0.0
    ) -> None:
        """Set one line's state (a DAC voltage in V for ``mode="dac"``)."""
        ...

    def set_row_voltages(self, volts: np.ndarray) -> None:
        """Drive every row with its own DAC voltage (V): the input of a vector-matrix product."""
        ...

    def write_pulse(
        self,
        row: int,
        col: int,
        amplitude_v: float,
        width_s: float,
        *,
        scheme: UnselectedScheme = "v/2",
    ) -> None:
        """On-board write pulse; positive sets (programs), negative resets (erases)."""
        ...

    def set_eflash_biases(
        self, *, control_gate_v: float, erase_gate_v: float, source_v: float
    ) -> None:
        """eFlash global biases (V)."""
        ...

    def ground_all(self) -> None:
        """Every line to ground, every bias to 0 V."""
        ...

    def safe_state(self) -> None: ...
