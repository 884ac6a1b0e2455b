"""The contract between the circuit (board routing, SMU terminals) and a device array.

An array is a grid of ``rows`` x ``cols`` devices between row lines and column lines.
Every line is either driven to a voltage or floating (``NaN`` in :class:`LineBias`).
The array model solves the line network (sneak paths through floating lines included)
and turns bias held over time into state changes. Memristor crossbars and eFlash arrays
both implement :class:`ArrayPhysics`; for eFlash the rows are word lines and the columns
bit lines, with the global control-gate, erase-gate and source biases in the same
:class:`LineBias`.

Units: volts (V), amperes (A), siemens (S), seconds (s), degrees Celsius (C).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

#: Half-select schemes for a write pulse, named as on the probe board.
WriteScheme = Literal["v/2", "v/3", "ground", "float"]
WRITE_SCHEMES: tuple[str, ...] = ("v/2", "v/3", "ground", "float")


@dataclass
class LineBias:
    """Voltage applied to every line; ``NaN`` marks a floating line.

    ``row_v`` has one entry per row (V), ``col_v`` one per column (V). The device at
    (r, c) sees ``row_v[r] - col_v[c]`` when both lines are driven. The eFlash fields are
    ignored by memristor arrays.
    """

    row_v: np.ndarray
    col_v: np.ndarray
    control_gate_v: float = 0.0
    erase_gate_v: float = 0.0
    source_v: float = 0.0

    @classmethod
    def grounded(cls, rows: int, cols: int) -> LineBias:
        return cls(np.zeros(rows), np.zeros(cols))

    @classmethod
    def floating(cls, rows: int, cols: int) -> LineBias:
        return cls(np.full(rows, np.nan), np.full(cols, np.nan))

    def copy(self) -> LineBias:
        return LineBias(
            self.row_v.copy(),
            self.col_v.copy(),
            self.control_gate_v,
            self.erase_gate_v,
            self.source_v,
        )


@dataclass
class LineSolution:
    """The settled line network.

    ``row_v`` / ``col_v``: the voltage of every line (V), floating ones where their net
    current is zero. ``row_i`` / ``col_i``: the current (A) flowing from each line's driver
    into the line (for a row: the sum of the currents of its devices, positive when the
    row is at the higher potential; for a column: positive when current flows from the
    driver into the column). Floating lines carry 0. ``device_i``: current through every
    device from row to column (A).
    """

    row_v: np.ndarray
    col_v: np.ndarray
    row_i: np.ndarray
    col_i: np.ndarray
    device_i: np.ndarray = field(repr=False)


def scheme_bias(
    rows: int,
    cols: int,
    row: int,
    col: int,
    amplitude_v: float,
    scheme: str,
) -> LineBias:
    """Line voltages for a write pulse of ``amplitude_v`` (V, signed) on device (row, col).

    Positive amplitude: the selected row at +|V| and the selected column at 0 V (set for a
    memristor); negative: the selected column at +|V| and the row at 0 V (reset), so no
    negative supply is needed. Unselected lines, by ``scheme``:

    - ``"v/2"``: every unselected line at |V|/2: half-selected devices see |V|/2, the
      others 0 V.
    - ``"v/3"``: unselected lines on the selected-high side at |V|/3, on the other side at
      2|V|/3: half-selected devices see |V|/3, all others -|V|/3.
    - ``"ground"``: unselected lines at 0 V (half-selected on the high line see the full V).
    - ``"float"``: unselected lines floating.
    """
    if scheme not in WRITE_SCHEMES:
        raise ValueError(f"unknown write scheme {scheme!r}; allowed: {', '.join(WRITE_SCHEMES)}")
    mag = abs(float(amplitude_v))
    # Unselected rows / columns, for a positive pulse (selected row high, column at 0 V).
    unselected_row_v, unselected_col_v = {
        "v/2": (mag / 2, mag / 2),
        "v/3": (mag / 3, 2 * mag / 3),
        "ground": (0.0, 0.0),
        "float": (float("nan"), float("nan")),
    }[scheme]
    if amplitude_v >= 0:
        row_v = np.full(rows, unselected_row_v)
        col_v = np.full(cols, unselected_col_v)
        row_v[row], col_v[col] = mag, 0.0
    else:
        # Mirror image: the selected column is the high line.
        row_v = np.full(rows, unselected_col_v)
        col_v = np.full(cols, unselected_row_v)
        row_v[row], col_v[col] = 0.0, mag
    return LineBias(row_v, col_v)


BOLTZMANN_EV_PER_K = 8.617333262e-5
#: Reference temperature (C) of every Arrhenius-accelerated age.
T_REF_C = 25.0
#: Largest temperature step (C) of one Simpson piece when integrating a temperature ramp.
_RAMP_PIECE_C = 0.5


@dataclass(frozen=True)
class TemperatureHistory:
    """The chip temperature over an interval of time, for :meth:`ArrayPhysics.relax`.

    ``temperatures_c`` (C) at ``times_s`` (s from the interval's start: the first 0,
    strictly increasing), linear between samples and held at the last value up to the
    interval's end. A sample beyond the interval's end is ignored past it.
    """

    times_s: np.ndarray
    temperatures_c: np.ndarray

    def knots(self, elapsed_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Validated (times, temperatures) covering exactly [0, ``elapsed_s``]."""
        t = np.asarray(self.times_s, dtype=float).ravel()
        temp = np.asarray(self.temperatures_c, dtype=float).ravel()
        if t.size != temp.size or t.size == 0:
            raise ValueError(
                f"temperatures_c has {temp.size} samples and times_s {t.size}; "
                "allowed: the same number, at least one"
            )
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(temp))):
            raise ValueError("times_s and temperatures_c must be finite numbers")
        if t[0] != 0.0 or np.any(np.diff(t) <= 0):
            raise ValueError(
                f"times_s must start at 0 and strictly increase (s from the interval's start); "
                f"got {t[:4].tolist()}{' ...' if t.size > 4 else ''}"
            )
        if np.any(temp <= -273.15):
            raise ValueError("temperatures_c must lie above absolute zero (-273.15 C)")
        inside = t < elapsed_s
        end_temp = float(np.interp(elapsed_s, t, temp))
        return np.append(t[inside], elapsed_s), np.append(temp[inside], end_temp)


def arrhenius_factor(temperature_c: float | np.ndarray, activation_ev: float) -> np.ndarray:
    """How much faster a thermally activated process runs at ``temperature_c`` than at 25 C."""
    t_k = np.asarray(temperature_c, dtype=float) + 273.15
    return np.exp(activation_ev / BOLTZMANN_EV_PER_K * (1.0 / (T_REF_C + 273.15) - 1.0 / t_k))


def equivalent_age_s(
    elapsed_s: float,
    temperature_c: float | TemperatureHistory,
    temperature_end_c: float | None,
    activation_ev: float,
) -> float:
    """The time (s) at 25 C that ages a thermally activated process (activation energy
    ``activation_ev``, eV) as much as ``elapsed_s`` at the given temperatures does:
    the integral of the Arrhenius factor over the interval.

    ``temperature_c``: a constant (C), the temperature at the interval's start when
    ``temperature_end_c`` is given (then linear between the two), or a
    :class:`TemperatureHistory`. Linear pieces are integrated by Simpson's rule over
    steps of at most 0.5 C (relative error below 1e-6 at 1 eV)."""
    if elapsed_s <= 0:
        return 0.0
    if isinstance(temperature_c, TemperatureHistory):
        if temperature_end_c is not None:
            raise ValueError("temperature_end_c is not allowed with a TemperatureHistory")
        t, temp = temperature_c.knots(elapsed_s)
    elif temperature_end_c is None or temperature_end_c == temperature_c:
        return float(elapsed_s * arrhenius_factor(float(temperature_c), activation_ev))
    else:
        t = np.array([0.0, elapsed_s])
        temp = np.array([float(temperature_c), float(temperature_end_c)])
    if t.size == 1:
        return 0.0
    if temp.min() == temp.max():  # steady: no integration needed
        return float(elapsed_s * arrhenius_factor(float(temp[0]), activation_ev))
    dt, d_temp = np.diff(t), np.diff(temp)
    pieces = np.maximum(1, np.ceil(np.abs(d_temp) / _RAMP_PIECE_C)).astype(int)
    segment = np.repeat(np.arange(dt.size), pieces)
    first = np.repeat(np.cumsum(pieces) - pieces, pieces)
    j = np.arange(segment.size) - first
    m = pieces[segment]
    a, b = j / m, (j + 1) / m
    t0, slope = temp[segment], d_temp[segment]
    af_a = arrhenius_factor(t0 + slope * a, activation_ev)
    af_m = arrhenius_factor(t0 + slope * 0.5 * (a + b), activation_ev)
    af_b = arrhenius_factor(t0 + slope * b, activation_ev)
    h = dt[segment] / m
    return float(np.sum(h / 6.0 * (af_a + 4.0 * af_m + af_b)))


def check_nplc(nplc: float) -> float:
    """``nplc`` (integration time in power-line cycles) as a float; ValueError unless > 0."""
    value = float(nplc)
    if not (value > 0 and np.isfinite(value)):
        raise ValueError(f"nplc {nplc!r} is not allowed; allowed: a finite number above 0")
    return value


@runtime_checkable
class ArrayPhysics(Protocol):
    """A device array: its line network, its switching and its ground truth."""

    kind: str  #: "memristor" or "eflash"
    rows: int
    cols: int

    def solve(
        self, bias: LineBias, temperature_c: float, *, noise: bool = True, nplc: float = 1.0
    ) -> LineSolution:
        """Settle the network for ``bias`` at chip temperature ``temperature_c`` (C).

        With ``noise`` the device currents include read noise (and telegraph noise) of one
        read integrated over ``nplc`` power-line cycles: the instrument's white part falls
        as 1/sqrt(nplc), the device's own part does not (docs/devices.md); without, they
        are the noiseless truth. Solving never changes device state.
        """
        ...

    def stress(
        self,
        bias: LineBias,
        duration_s: float,
        temperature_c: float,
        *,
        count_pulse: bool = True,
    ) -> bool:
        """Hold ``bias`` for ``duration_s`` (s): devices switch according to the voltage each
        one really sees (floating lines settled), the pulse width and their state.

        A write-level bias counts one pulse (``pulse_count`` in the ground truth) for every
        device that receives it at full amplitude, unless ``count_pulse`` is False: pass
        False when this interval continues the previous one's bias (one pulse held in
        several pieces). Returns True when any device's state changed (the bench then
        saves the state file); a read bias far below every threshold must return False
        cheaply."""
        ...

    def relax(
        self,
        elapsed_s: float,
        temperature_c: float | TemperatureHistory,
        temperature_end_c: float | None = None,
    ) -> None:
        """Let ``elapsed_s`` (s) pass with no write bias: post-programming relaxation.

        The chip temperature over the interval is ``temperature_c`` (C) throughout, or
        linear from ``temperature_c`` to ``temperature_end_c``, or a
        :class:`TemperatureHistory`; thermally activated ageing integrates over it
        (:func:`equivalent_age_s`)."""
        ...

    def ground_truth(self) -> dict[str, np.ndarray]:
        """The true per-device parameters and state, as (rows, cols) arrays.

        Keys include ``"conductance_s"`` (memristor: I(V_read)/V_read at 25 C, noiseless,
        as docs/devices.md defines it) or ``"cell_current_a"`` / ``"vth_v"`` (eFlash), and the
        fixed parameters (thresholds, temperature coefficients, defect class ...).
        """
        ...

    def save_state(self, path: Path, *, clock_s: float | None = None) -> None:
        """Write the full chip state atomically (temp file, fsync, rename); ``clock_s`` is
        the bench clock's time (s) at which the state holds, kept for the ground truth."""
        ...

    def load_state(self, path: Path) -> None:
        """Restore the chip state written by :meth:`save_state`."""
        ...
