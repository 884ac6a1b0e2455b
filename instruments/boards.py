"""The :class:`~nvmlab.instruments.roles.ArrayBoard` role over the nvmlab probe board.

Every value is checked before a command is built: device indices against the array size
(read once with ``CONF?``), DAC line voltages against the station's read limit, write-pulse
amplitudes against the write limit (the eFlash limit on an eFlash board), pulse widths
against the maximum width, and eFlash biases against the eFlash limit. A violating call
raises :class:`~nvmlab.errors.SafetyLimitError` (or ``ValueError`` for a malformed
argument) and sends nothing. Voltages in V, widths in s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from nvmlab.drivers.probe_board import BoardConfiguration, ProbeBoard
from nvmlab.instruments.roles import LineMode, UnselectedScheme
from nvmlab.instruments.safety import SafetyLimits

#: Role scheme -> the board's READ:SCHEME keyword (reads cannot bias lines at V/2 or V/3).
READ_SCHEMES: dict[str, Literal["GND", "FLOAT", "TRACK", "TRACKB"]] = {
    "ground": "GND",
    "float": "FLOAT",
    "track": "TRACK",
    "track-b": "TRACKB",
}
#: Role scheme -> the board's PULSE scheme keyword.
WRITE_SCHEMES: dict[str, Literal["V2", "V3", "GND", "FLOAT"]] = {
    "v/2": "V2",
    "v/3": "V3",
    "ground": "GND",
    "float": "FLOAT",
}
#: Role line mode -> the board's LINE keyword.
LINE_MODES: dict[str, Literal["GND", "FLOAT", "SMUA", "SMUB", "TRACK", "TRACKB", "DAC"]] = {
    "ground": "GND",
    "float": "FLOAT",
    "dac": "DAC",
    "smu-a": "SMUA",
    "smu-b": "SMUB",
    "track": "TRACK",
    "track-b": "TRACKB",
}


class StationBoard:
    """The probe board as the station's ``board`` role."""

    def __init__(self, driver: ProbeBoard, limits: SafetyLimits) -> None:
        self.driver = driver
        self.limits = limits
        self._configuration: BoardConfiguration | None = None
        self._read_scheme: str | None = None

    # -- configuration (read once) --------------------------------------------------------
    @property
    def configuration(self) -> BoardConfiguration:
        """Array kind and size (``CONF?``, read on first use)."""
        if self._configuration is None:
            self._configuration = self.driver.configuration()
        return self._configuration

    @property
    def rows(self) -> int:  # type: ignore[override]
        return self.configuration.rows

    @property
    def cols(self) -> int:  # type: ignore[override]
        return self.configuration.cols

    @property
    def kind(self) -> str:
        """``"MEMRISTOR"``, ``"EFLASH"`` or ``"RESISTOR"``."""
        return self.configuration.kind

    def _check_index(self, what: str, index: int, size: int) -> int:
        if isinstance(index, bool) or int(index) != index or not 0 <= index < size:
            raise ValueError(
                f"{what} {index!r} is outside 0..{size - 1} of this {self.rows}x{self.cols} array"
            )
        return int(index)

    @staticmethod
    def _choice(what: str, value: str, table: dict[str, str]) -> str:
        if value not in table:
            raise ValueError(f"{what} {value!r} is not one of {', '.join(table)}")
        return table[value]

    # -- ArrayBoard role ------------------------------------------------------------------
    def identify(self) -> str:
        return self.driver.identify()

    def select(self, row: int, col: int, *, unselected: UnselectedScheme = "ground") -> None:
        """Route the SMU to device (row, col); unselected lines ``ground``, ``float``,
        ``track`` (following SMU A) or ``track-b`` (every unselected row and column following
        SMU B: the tracking read, docs/probe-board.md)."""
        scheme = self._choice("read scheme for unselected lines", unselected, READ_SCHEMES)  # type: ignore[arg-type]
        row = self._check_index("row", row, self.rows)
        col = self._check_index("column", col, self.cols)
        if scheme != self._read_scheme:
            self.driver.set_read_scheme(scheme)  # type: ignore[arg-type]
            self._read_scheme = scheme
        self.driver.select(row, col)

    def set_line(
        self, kind: Literal["row", "col"], index: int, mode: LineMode, volts: float = 0.0
    ) -> None:
        """One line's state; a ``dac`` voltage (V) is checked against the read limit."""
        board_mode = self._choice("line mode", mode, LINE_MODES)  # type: ignore[arg-type]
        if kind not in ("row", "col"):
            raise ValueError(f"line kind {kind!r} is not one of row, col")
        index = self._check_index(kind, index, self.rows if kind == "row" else self.cols)
        if board_mode == "DAC":
            volts = self.limits.check_voltage(volts, "read", what=f"DAC voltage of {kind} {index}")
        self.driver.set_line(kind, index, board_mode, volts)  # type: ignore[arg-type]

    def set_row_voltages(self, volts: np.ndarray | Sequence[float]) -> None:
        """Every row on its DAC (V), one value per row; each checked against the read limit."""
        values = np.asarray(volts, dtype=float).ravel()
        if values.size != self.rows:
            raise ValueError(f"expected {self.rows} row voltages (one per row), got {values.size}")
        checked = [
            self.limits.check_voltage(float(v), "read", what=f"row {i} voltage")
            for i, v in enumerate(values)
        ]
        self.driver.set_row_voltages(checked)

    def write_pulse(
        self,
        row: int,
        col: int,
        amplitude_v: float,
        width_s: float,
        *,
        scheme: UnselectedScheme = "v/2",
    ) -> None:
        """On-board pulse (V, s): positive sets / programs, negative resets / erases."""
        board_scheme = self._choice("write scheme", scheme, WRITE_SCHEMES)  # type: ignore[arg-type]
        if self.configuration.is_eflash:
            amplitude_v = self.limits.check_eflash_voltage(
                amplitude_v, what="eFlash pulse amplitude"
            )
        else:
            amplitude_v = self.limits.check_voltage(
                amplitude_v, "write", what="write pulse amplitude"
            )
        width_s = self.limits.check_pulse_width(width_s)
        row = self._check_index("row", row, self.rows)
        col = self._check_index("column", col, self.cols)
        self.driver.pulse(row, col, amplitude_v, width_s, board_scheme)  # type: ignore[arg-type]

    def set_eflash_biases(
        self, *, control_gate_v: float, erase_gate_v: float, source_v: float
    ) -> None:
        """Control-gate, erase-gate and source-line biases (V), each within the eFlash limit."""
        checked = {
            "CG": self.limits.check_eflash_voltage(control_gate_v, what="control-gate bias"),
            "EG": self.limits.check_eflash_voltage(erase_gate_v, what="erase-gate bias"),
            "SL": self.limits.check_eflash_voltage(source_v, what="source-line bias"),
        }
        for which, volts in checked.items():
            self.driver.set_eflash_bias(which, volts)  # type: ignore[arg-type]

    def ground_all(self) -> None:
        """Every line grounded, every eFlash bias at 0 V."""
        self.driver.ground_all()

    def safe_state(self) -> None:
        """Every line grounded (``GND:ALL``)."""
        self.ground_all()


def make_array_board(driver: ProbeBoard, limits: SafetyLimits) -> StationBoard:
    """The array-board role over a probe board driver."""
    return StationBoard(driver, limits)
