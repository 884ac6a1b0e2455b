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
state changes come only from bias held over time. The chip's drift with no write bias
(relaxation, telegraph flips: :meth:`ArrayPhysics.relax`) is brought up to date in steps of
at least :data:`RELAX_RESOLUTION_S` of bench time: a read sees the chip as it was at most
that long ago, while every write-level hold, board pulse, state save and truth read first
relaxes the chip to the present. Relaxing once over a merged interval gives the same
result as relaxing over its pieces (the age integrates the temperature history; a
telegraph flip over the merged interval has the merged interval's Markov probability), so
the deferral changes nothing but the staleness (docs/devices.md). After every operation that changed the
chip, and during reads whenever the chip has relaxed for :data:`SAVE_INTERVAL_S` of bench
time, the state file (if any) is rewritten atomically with the bench clock time, so a
killed process finds the chip as it was left.

Sourcing is implemented once, here, for every SMU emulator: :meth:`Bench.source` (a
voltage source with a current compliance) and :meth:`Bench.source_current` (a current
source with a voltage compliance), both by bisection on the noiseless circuit. What an SMU
then reports (range, resolution, its own noise floor) is the instrument's, in
:mod:`nvmlab.mocks.firmware.smu_ranges`.

Sign convention: an SMU terminal's current is positive when it flows out of the terminal
into the line (Keithley and Keysight convention for sourced current).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nvmlab.clock import Clock
from nvmlab.mocks.physics.base import ArrayPhysics, LineBias, LineSolution, scheme_bias
from nvmlab.mocks.physics.state import remove_stale_temporaries
from nvmlab.mocks.thermal import ThermalModel

LineMode = Literal["gnd", "float", "dac", "smu", "track"]
#: SMU terminals known to the board: channel A (2400, smua, B2902A ch 1) and B.
TERMINALS: tuple[str, ...] = ("A", "B")
#: Bench time (s) of relaxation during reads after which the state file is rewritten.
SAVE_INTERVAL_S = 5.0
#: Reads relax the chip only once this much bench time (s) has passed since it was last
#: relaxed (the whole interval at once); writes, saves and truth reads relax it to now.
RELAX_RESOLUTION_S = 1e-3
#: Bisection of a terminal voltage: at most this many halvings of the segment ...
BISECTION_STEPS = 100
#: ... or until the voltage is known to this relative precision.
BISECTION_TOLERANCE = 1e-10


#: Bumped by every change of any :class:`LineState` (the key of the bench's routing caches).
_routing_changes = itertools.count()
_routing_generation = next(_routing_changes)


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

    def __setattr__(self, name: str, value: Any) -> None:
        global _routing_generation
        object.__setattr__(self, name, value)
        _routing_generation = next(_routing_changes)


@dataclass
class TerminalReading:
    """One source-measure result on an SMU terminal."""

    volts: float  #: voltage actually at the terminal (V), lower than asked when clamped
    amps: float  #: current out of the terminal (A)
    in_compliance: bool  #: the current limit clamped the source


def _same_lines(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal line voltages, NaN (floating) equal to NaN."""
    if a.shape != b.shape:
        return False
    same = a == b
    return bool(same.all()) or bool((same | (np.isnan(a) & np.isnan(b))).all())


def _same_bias(a: LineBias, b: LineBias) -> bool:
    return a is b or (
        (a.control_gate_v, a.erase_gate_v, a.source_v)
        == (b.control_gate_v, b.erase_gate_v, b.source_v)
        and _same_lines(a.row_v, b.row_v)
        and _same_lines(a.col_v, b.col_v)
    )


class Bench:
    """The emulated physical world shared by all emulated instruments of one bench."""

    def __init__(
        self,
        array: ArrayPhysics,
        clock: Clock,
        thermal: ThermalModel,
        *,
        state_file: Path | None = None,
        save_interval_s: float = SAVE_INTERVAL_S,
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
        self._last_hold: tuple[float, LineBias] | None = None
        #: line_bias of the last routing, terminal voltages and eFlash biases (its key)
        self._bias_cache: tuple[tuple[Any, ...], LineBias] | None = None
        #: per terminal, the (is row, index) of the lines routed to it, in line order
        self._routed_cache: tuple[tuple[Any, ...], dict[str, list[tuple[bool, int]]]] | None
        self._routed_cache = None
        #: _routing_template under its routing key
        self._template_cache: tuple[tuple[Any, ...], Any] | None = None
        #: _quiet's answer for (bias object, the array's quiet span)
        self._quiet_cache: tuple[tuple[LineBias, Any], bool] | None = None
        #: Bench time (s) the chip may relax during reads before the state file is rewritten.
        self.save_interval_s = float(save_interval_s)
        #: Write the state file after every write operation (True, the served bench: a
        #: killed client never leaves the chip behind what it applied). An owner that
        #: saves at its own commit points instead (the job runner, before each unit's
        #: commit) sets False: a save costs about 3 ms, more than a pulse.
        self.save_on_write = True
        self._last_save_t = self._last_relax_t
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

    def _routing_key(self) -> tuple[Any, ...]:
        return (_routing_generation, id(self.rows_state), id(self.cols_state))

    def line_bias(self, terminal_v: dict[str, float | None] | None = None) -> LineBias:
        """Resolve the routing into line voltages (NaN = floating).

        The result is shared while the routing, the terminal voltages and the eFlash
        biases stay as they are: its arrays are read-only."""
        tv = self.terminal_v if terminal_v is None else terminal_v
        key = (
            self._routing_key(),
            tuple(tv.items()),
            self.control_gate_v,
            self.erase_gate_v,
            self.source_v,
        )
        cached = self._bias_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        base_row, base_col, followers = self._routing_template()
        row_v, col_v = base_row.copy(), base_col.copy()
        for (is_row, mode, terminal), index in followers.items():
            v = tv.get(terminal)
            if v is None:
                v = float("nan") if mode == "smu" else 0.0  # an SMU off floats its lines
            (row_v if is_row else col_v)[index] = v
        row_v.flags.writeable = col_v.flags.writeable = False
        bias = LineBias(row_v, col_v, self.control_gate_v, self.erase_gate_v, self.source_v)
        self._bias_cache = (key, bias)
        return bias

    def _routing_template(
        self,
    ) -> tuple[np.ndarray, np.ndarray, dict[tuple[bool, str, str], np.ndarray]]:
        """Row and column voltages (V) of the lines that follow no terminal (ground, DAC,
        floating as NaN), and the indices of the lines connected to (``"smu"``) or tracking
        (``"track"``) each terminal, by (is row, mode, terminal)."""
        key = self._routing_key()
        cached = self._template_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        followers: dict[tuple[bool, str, str], list[int]] = {}
        bases = []
        for is_row, lines in ((True, self.rows_state), (False, self.cols_state)):
            base = np.zeros(len(lines))
            for index, line in enumerate(lines):
                if line.mode == "dac":
                    base[index] = line.volts
                elif line.mode in ("smu", "track"):
                    followers.setdefault((is_row, line.mode, line.terminal), []).append(index)
                elif line.mode != "gnd":
                    base[index] = float("nan")
            bases.append(base)
        template = (
            bases[0],
            bases[1],
            {k: np.array(v, dtype=np.intp) for k, v in followers.items()},
        )
        self._template_cache = (key, template)
        return template

    # -- solving --------------------------------------------------------------------
    def _relax_to_now(self, *, force: bool = True) -> None:
        """Relax the chip over the bench time since it was last relaxed; unless ``force``,
        only once that is at least :data:`RELAX_RESOLUTION_S` (a read tolerates a chip
        that much behind the clock)."""
        now = self.clock.now()
        elapsed = now - self._last_relax_t
        if elapsed >= RELAX_RESOLUTION_S or (force and elapsed > 0):
            # retention integrates over the temperature the chip had since the last update
            self.array.relax(elapsed, self.thermal.chip_history(self._last_relax_t))
            self._last_relax_t = now

    def solve(
        self,
        *,
        noise: bool = True,
        terminal_v: dict[str, float | None] | None = None,
        nplc: float = 1.0,
    ) -> LineSolution:
        """Settle the network for the present routing and terminal voltages.

        ``nplc``: the integration time (power-line cycles) of the measuring instrument;
        the array scales the instrument's part of the read noise with it. When the chip
        has relaxed for :attr:`save_interval_s` of bench time since the state file was
        last written, it is written again (so a truth read after a stop includes the
        relaxation of a long series of reads).
        """
        with self.lock:
            self._relax_to_now(force=False)
            solution = self.array.solve(
                self.line_bias(terminal_v), self.chip_temperature_c(), noise=noise, nplc=nplc
            )
            if (
                self.state_file is not None
                and self.save_on_write
                and self._last_relax_t - self._last_save_t >= self.save_interval_s
            ):
                self.save_state()
            return solution

    def _routed_lines(self) -> dict[str, list[tuple[bool, int]]]:
        """Per terminal, the (is row, index) of the lines connected to it, rows first."""
        key = self._routing_key()
        cached = self._routed_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        routed: dict[str, list[tuple[bool, int]]] = {}
        for is_row, lines in ((True, self.rows_state), (False, self.cols_state)):
            for index, state in enumerate(lines):
                if state.mode == "smu":
                    routed.setdefault(state.terminal, []).append((is_row, index))
        self._routed_cache = (key, routed)
        return routed

    def _terminal_currents(self, solution: LineSolution) -> dict[str, float]:
        if solution.row_i.shape != (len(self.rows_state),) or solution.col_i.shape != (
            len(self.cols_state),
        ):
            raise ValueError(
                f"the solution has {solution.row_i.size} rows x {solution.col_i.size} columns; "
                f"the bench routes {len(self.rows_state)} x {len(self.cols_state)}"
            )
        currents = {t: 0.0 for t in TERMINALS}
        for terminal, lines in self._routed_lines().items():
            amps = currents.get(terminal, 0.0)
            for is_row, index in lines:
                amps += float(solution.row_i[index] if is_row else solution.col_i[index])
            currents[terminal] = amps
        return currents

    def terminal_currents(self, *, noise: bool = True, nplc: float = 1.0) -> dict[str, float]:
        """Current (A) flowing out of each SMU terminal into the lines routed to it."""
        with self.lock:
            return self._terminal_currents(self.solve(noise=noise, nplc=nplc))

    def set_terminal(self, terminal: str, volts: float | None) -> None:
        """Set an SMU terminal's output voltage (V); ``None`` switches the output off."""
        with self.lock:
            self.terminal_v[terminal] = None if volts is None else float(volts)
            if volts is not None:
                self.max_applied_v[terminal] = max(
                    self.max_applied_v.get(terminal, 0.0), abs(float(volts))
                )

    def _current_at(self, terminal: str, volts: float) -> float:
        """Noiseless current (A) out of ``terminal`` if it sat at ``volts`` (V); no side
        effects (the chip is never changed by solving)."""
        tv = dict(self.terminal_v)
        tv[terminal] = volts
        return self._terminal_currents(self.solve(noise=False, terminal_v=tv)).get(terminal, 0.0)

    def _bisect_toward(
        self, terminal: str, v_end: float, exceeds: Callable[[float], bool]
    ) -> float:
        """The voltage on the segment 0 V -> ``v_end`` (V) where ``exceeds(current)`` starts
        to hold, by bisection on the noiseless circuit.

        Returns the last voltage found on the side where it does not hold, so a voltage
        clamped by a current limit never exceeds that limit. The circuit's current is
        monotonic in the terminal voltage (a passive network), which is what makes one
        bisection sufficient.
        """
        lo, hi = 0.0, 1.0
        for _ in range(BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            if exceeds(self._current_at(terminal, v_end * mid)):
                hi = mid
            else:
                lo = mid
            if hi - lo <= BISECTION_TOLERANCE * hi:
                break
        return v_end * lo

    def _finish(
        self, terminal: str, *, noise: bool, nplc: float, clamped: bool, limit_a: float = 0.0
    ) -> TerminalReading:
        """Measure the terminal as it is now set; record the largest current applied."""
        amps = self._terminal_currents(self.solve(noise=noise, nplc=nplc)).get(terminal, 0.0)
        if limit_a > 0:
            amps = float(np.clip(amps, -limit_a, limit_a))  # the compliance loop's ceiling
        self.max_applied_a[terminal] = max(self.max_applied_a.get(terminal, 0.0), abs(amps))
        v_actual = self.terminal_v[terminal]
        return TerminalReading(
            float(v_actual if v_actual is not None else 0.0), float(amps), clamped
        )

    def source(
        self,
        terminal: str,
        volts: float,
        current_limit_a: float,
        *,
        noise: bool = True,
        nplc: float = 1.0,
    ) -> TerminalReading:
        """Source ``volts`` (V) on ``terminal`` with a current limit (A) and measure.

        When the limit is exceeded the source is clamped: the voltage is lowered (by
        bisection on the circuit) until the current equals the limit, as a real SMU's
        compliance loop does; the reading is then the limit. A limit of 0 means none.
        ``nplc``: the measuring instrument's integration time (power-line cycles).
        """
        limit = abs(float(current_limit_a))
        with self.lock:
            self.set_terminal(terminal, volts)
            amps = self._terminal_currents(self.solve(noise=noise, nplc=nplc)).get(terminal, 0.0)
            if not (limit > 0 and abs(amps) > limit):
                self.max_applied_a[terminal] = max(self.max_applied_a.get(terminal, 0.0), abs(amps))
                return TerminalReading(float(volts), float(amps), False)
            clamped_v = self._bisect_toward(terminal, float(volts), lambda i: abs(i) > limit)
            self.terminal_v[terminal] = clamped_v
            return self._finish(terminal, noise=noise, nplc=nplc, clamped=True, limit_a=limit)

    def source_current(
        self,
        terminal: str,
        amps: float,
        voltage_limit_v: float,
        *,
        noise: bool = True,
        nplc: float = 1.0,
    ) -> TerminalReading:
        """Source ``amps`` (A) on ``terminal`` with a voltage compliance (V) and measure.

        The bench's terminals are voltages, so the voltage that drives the requested
        current through the routed lines is found by bisection on the noiseless circuit,
        between 0 V and the compliance on the side the current asks for, and applied.
        When even the compliance cannot drive the current (an open circuit, a
        high-resistance device) the source sits at the compliance voltage and reports
        compliance, as a real current source does. The current reading is what then flows
        (read noise included).
        """
        limit = abs(float(voltage_limit_v))
        target = float(amps)
        with self.lock:
            i_zero = self._current_at(terminal, 0.0)
            if target == i_zero or limit == 0.0:
                self.set_terminal(terminal, 0.0)
                return self._finish(
                    terminal, noise=noise, nplc=nplc, clamped=limit == 0.0 and target != i_zero
                )
            v_end = limit if target > i_zero else -limit
            i_end = self._current_at(terminal, v_end)
            if (target > i_zero and i_end < target) or (target < i_zero and i_end > target):
                self.set_terminal(terminal, v_end)
                return self._finish(terminal, noise=noise, nplc=nplc, clamped=True)
            if target > i_zero:
                volts = self._bisect_toward(terminal, v_end, lambda i: i >= target)
            else:
                volts = self._bisect_toward(terminal, v_end, lambda i: i <= target)
            self.set_terminal(terminal, volts)
            return self._finish(terminal, noise=noise, nplc=nplc, clamped=False)

    # -- time with bias held -----------------------------------------------------------
    def _quiet(self, bias: LineBias) -> bool:
        """Holding ``bias`` cannot change any device (the array's own cheap test, when it
        has one; cached for the shared :meth:`line_bias` object, which is read-only)."""
        test = getattr(self.array, "quiet", None)
        if test is None:
            return False
        key = (bias, getattr(self.array, "quiet_span_v", None))
        cached = self._quiet_cache
        if cached is not None and cached[0][0] is bias and cached[0][1] == key[1]:
            return cached[1]
        quiet = bool(test(bias))
        self._quiet_cache = (key, quiet)
        return quiet

    def hold(self, duration_s: float) -> None:
        """Let ``duration_s`` (s) pass with the present bias applied to the chip.

        A bias that cannot change any device (a read) just lets the time pass: it counts
        as relaxation time, brought in with the next relaxation. Any other bias first
        relaxes the chip to now, then stresses it over the interval."""
        if duration_s <= 0:
            return
        with self.lock:
            bias = self.line_bias()
            if self._quiet(bias):
                self.clock.sleep(duration_s)
                self._last_hold = (self.clock.now(), bias)
                return
            self._relax_to_now()
            start = self.clock.now()
            # one pulse held in several pieces (an SMU's delay then its measurement) counts once
            continues = (
                self._last_hold is not None
                and self._last_hold[0] == start
                and (_same_bias(self._last_hold[1], bias))
            )
            changed = self.array.stress(
                bias, duration_s, self.chip_temperature_c(), count_pulse=not continues
            )
            self.clock.sleep(duration_s)
            self._last_relax_t = self.clock.now()
            self._last_hold = (self._last_relax_t, bias)
            if changed and self.save_on_write:
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
            if changed and self.save_on_write:
                self.save_state()

    # -- persistence and truth --------------------------------------------------------------
    def save_state(self) -> None:
        """Write the chip state file atomically, with the bench clock time (no-op without a
        state file). Called after every write, every :attr:`save_interval_s` of bench time
        during reads, and by whoever stops the bench."""
        if self.state_file is not None:
            with self.lock:
                self._relax_to_now()
                self.array.save_state(self.state_file, clock_s=self.clock.now())
                self._last_save_t = self._last_relax_t

    def ground_truth(self) -> dict[str, Any]:
        """The chip's true per-device parameters and state (for tests that check extraction),
        with the bench clock time ``clock_s`` (s), as :func:`nvmlab.mocks.read_ground_truth`
        gives them from the state file."""
        with self.lock:
            self._relax_to_now()
            return {**self.array.ground_truth(), "clock_s": self.clock.now()}
