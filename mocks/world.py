"""One physical world: the chip, the probe board's routing, the SMU terminals, the chamber.

The :class:`Bench` is what every emulated instrument talks to:

- the **probe board** firmware sets the state of each array line (:class:`LineState`):
  grounded, floating, driven by its own DAC, connected to an SMU terminal, or tracking
  SMU terminal A (the buffer used for one-channel reads);
- the **SMU** firmware sets its terminals' voltages (``None`` = output off, the terminal
  disconnected), measures the currents flowing out of them, and lets time pass with the
  bias held (:meth:`Bench.hold`), which is what integration times, source delays and
  pulses do;
- the **chamber** firmware drives :attr:`Bench.thermal`; the chip follows the air.

Currents come from the device state, the bias, the routing and the chip temperature;
state changes come only from bias held over time. After every operation that changed the
chip, the state file (if any) is rewritten atomically, so a killed process finds the chip
as it was left.

Sign convention: an SMU terminal's current is positive when it flows out of the terminal
into the line (Keithley and Keysight convention for sourced current).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from nvmlab.clock import Clock
from nvmlab.mocks.physics.base import ArrayPhysics, LineBias, LineSolution, scheme_bias
from nvmlab.mocks.physics.state import remove_stale_temporaries
from nvmlab.mocks.thermal import ThermalModel

LineMode = Literal["gnd", "float", "dac", "smu", "track"]
#: SMU terminals known to the board: channel A (2400, smua, B2902A ch 1) and B.
TERMINALS: tuple[str, ...] = ("A", "B")


@dataclass
class LineState:
    """How one array line is connected.

    ``mode``: ``"gnd"`` (0 V), ``"float"`` (disconnected), ``"dac"`` (driven to ``volts``
    by the board's own DAC), ``"smu"`` (connected to SMU ``terminal``), ``"track"`` (a
    buffer that follows SMU ``terminal``'s output voltage).
    """

    mode: LineMode = "gnd"
    volts: float = 0.0
    terminal: str = "A"


@dataclass
class TerminalReading:
    """One source-measure result on an SMU terminal."""

    volts: float  #: voltage actually at the terminal (V), lower than asked when clamped
    amps: float  #: current out of the terminal (A)
    in_compliance: bool  #: the current limit clamped the source


class Bench:
    """The emulated physical world shared by all emulated instruments of one bench."""

    def __init__(
        self,
        array: ArrayPhysics,
        clock: Clock,
        thermal: ThermalModel,
        *,
        state_file: Path | None = None,
    ) -> None:
        self.array = array
        self.clock = clock
        self.thermal = thermal
        self.state_file = Path(state_file) if state_file is not None else None
        self.rows_state = [LineState() for _ in range(array.rows)]
        self.cols_state = [LineState() for _ in range(array.cols)]
        #: eFlash global biases (V), set by the board.
        self.control_gate_v = 0.0
        self.erase_gate_v = 0.0
        self.source_v = 0.0
        #: SMU terminal voltages (V); None when the output is off.
        self.terminal_v: dict[str, float | None] = {t: None for t in TERMINALS}
        #: Largest |V| (V) and |I| (A) actually applied, per terminal and for board pulses.
        self.max_applied_v: dict[str, float] = {t: 0.0 for t in (*TERMINALS, "board")}
        self.max_applied_a: dict[str, float] = {t: 0.0 for t in TERMINALS}
        self._last_relax_t = clock.now()
        self.lock = threading.RLock()
        if self.state_file is not None:
            remove_stale_temporaries(self.state_file)
            if self.state_file.exists():
                self.array.load_state(self.state_file)

    # -- temperatures ---------------------------------------------------------------
    def chip_temperature_c(self) -> float:
        """Chip temperature (C), following the chamber air with its own lag."""
        return self.thermal.chip_temperature_c()

    # -- routing ----------------------------------------------------------------------
    def ground_all(self) -> None:
        """Every line grounded, eFlash biases at 0 V."""
        with self.lock:
            for line in (*self.rows_state, *self.cols_state):
                line.mode, line.volts, line.terminal = "gnd", 0.0, "A"
            self.control_gate_v = self.erase_gate_v = self.source_v = 0.0

    def line_bias(self, terminal_v: dict[str, float | None] | None = None) -> LineBias:
        """Resolve the routing into line voltages (NaN = floating)."""
        tv = self.terminal_v if terminal_v is None else terminal_v

        def volts(line: LineState) -> float:
            if line.mode == "gnd":
                return 0.0
            if line.mode == "dac":
                return line.volts
            if line.mode == "smu":
                v = tv.get(line.terminal)
                return float("nan") if v is None else v
            if line.mode == "track":
                v = tv.get(line.terminal)
                return 0.0 if v is None else v
            return float("nan")

        return LineBias(
            np.array([volts(s) for s in self.rows_state], dtype=float),
            np.array([volts(s) for s in self.cols_state], dtype=float),
            self.control_gate_v,
            self.erase_gate_v,
            self.source_v,
        )

    # -- solving --------------------------------------------------------------------
    def _relax_to_now(self) -> None:
        now = self.clock.now()
        elapsed = now - self._last_relax_t
        if elapsed > 0:
            self.array.relax(elapsed, self.chip_temperature_c())
            self._last_relax_t = now

    def solve(
        self, *, noise: bool = True, terminal_v: dict[str, float | None] | None = None
    ) -> LineSolution:
        """Settle the network for the present routing and terminal voltages."""
        with self.lock:
            self._relax_to_now()
            return self.array.solve(
                self.line_bias(terminal_v), self.chip_temperature_c(), noise=noise
            )

    def _terminal_currents(self, solution: LineSolution) -> dict[str, float]:
        currents = {t: 0.0 for t in TERMINALS}
        for lines, line_i in ((self.rows_state, solution.row_i), (self.cols_state, solution.col_i)):
            for state, amps in zip(lines, line_i, strict=True):
                if state.mode == "smu":
                    currents[state.terminal] = currents.get(state.terminal, 0.0) + float(amps)
        return currents

    def terminal_currents(self, *, noise: bool = True) -> dict[str, float]:
        """Current (A) flowing out of each SMU terminal into the lines routed to it."""
        with self.lock:
            return self._terminal_currents(self.solve(noise=noise))

    def set_terminal(self, terminal: str, volts: float | None) -> None:
        """Set an SMU terminal's output voltage (V); ``None`` switches the output off."""
        with self.lock:
            self.terminal_v[terminal] = None if volts is None else float(volts)
            if volts is not None:
                self.max_applied_v[terminal] = max(
                    self.max_applied_v.get(terminal, 0.0), abs(float(volts))
                )

    def source(
        self, terminal: str, volts: float, current_limit_a: float, *, noise: bool = True
    ) -> TerminalReading:
        """Source ``volts`` (V) on ``terminal`` with a current limit (A) and measure.

        When the limit is exceeded the source is clamped: the voltage is lowered (by
        bisection on the circuit) until the current equals the limit, as a real SMU's
        compliance loop does.
        """
        limit = abs(float(current_limit_a))
        with self.lock:
            self.set_terminal(terminal, volts)
            amps = self._terminal_currents(self.solve(noise=noise)).get(terminal, 0.0)
            clamped = False
            if limit > 0 and abs(amps) > limit:
                clamped = True
                lo, hi = 0.0, 1.0
                for _ in range(40):
                    mid = (lo + hi) / 2
                    tv = dict(self.terminal_v)
                    tv[terminal] = volts * mid
                    i_mid = self._terminal_currents(self.solve(noise=False, terminal_v=tv)).get(
                        terminal, 0.0
                    )
                    if abs(i_mid) > limit:
                        hi = mid
                    else:
                        lo = mid
                self.terminal_v[terminal] = volts * lo
                amps = self._terminal_currents(self.solve(noise=noise)).get(terminal, 0.0)
                amps = float(np.clip(amps, -limit, limit))
            self.max_applied_a[terminal] = max(self.max_applied_a.get(terminal, 0.0), abs(amps))
            v_actual = self.terminal_v[terminal]
            return TerminalReading(
                float(v_actual if v_actual is not None else 0.0), float(amps), clamped
            )

    # -- time with bias held -----------------------------------------------------------
    def hold(self, duration_s: float) -> None:
        """Let ``duration_s`` (s) pass with the present bias applied to the chip."""
        if duration_s <= 0:
            return
        with self.lock:
            self._relax_to_now()
            bias = self.line_bias()
            changed = self.array.stress(bias, duration_s, self.chip_temperature_c())
            self.clock.sleep(duration_s)
            self._last_relax_t = self.clock.now()
            if changed:
                self.save_state()

    def board_pulse(
        self, row: int, col: int, amplitude_v: float, width_s: float, scheme: str
    ) -> None:
        """An on-board write pulse on device (row, col) with the half-select ``scheme``.

        Positive amplitude raises a memristor's conductance (set; programs an eFlash cell),
        negative lowers it (reset; erases an eFlash cell). Lines return to their routed
        state afterwards.
        """
        with self.lock:
            self._relax_to_now()
            pulse_bias = getattr(self.array, "pulse_bias", None)
            if pulse_bias is not None:
                # eFlash: the array knows which gate / source voltages a program or erase
                # pulse of this amplitude needs on the selected cell.
                bias = pulse_bias(row, col, amplitude_v, scheme)
            else:
                bias = scheme_bias(self.array.rows, self.array.cols, row, col, amplitude_v, scheme)
            self.max_applied_v["board"] = max(self.max_applied_v["board"], abs(float(amplitude_v)))
            changed = self.array.stress(bias, width_s, self.chip_temperature_c())
            self.clock.sleep(width_s)
            self._last_relax_t = self.clock.now()
            if changed:
                self.save_state()

    # -- persistence and truth --------------------------------------------------------------
    def save_state(self) -> None:
        """Write the chip state file atomically (no-op without a state file)."""
        if self.state_file is not None:
            self.array.save_state(self.state_file)

    def ground_truth(self) -> dict[str, np.ndarray]:
        """The chip's true per-device parameters and state (for tests that check extraction)."""
        with self.lock:
            self._relax_to_now()
            return self.array.ground_truth()
