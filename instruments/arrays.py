"""Array operations over the roles: read a device, read a map, write a pulse, a vector-matrix product.

What characterization, tuning and analysis all need from a crossbar, written once against
the :class:`~nvmlab.instruments.roles.SourceMeter` and
:class:`~nvmlab.instruments.roles.ArrayBoard` roles (never a driver), so a Keithley 2400, a
2636B or a B2902A serves the same code. Every amplitude is checked against the station's
:class:`~nvmlab.instruments.safety.SafetyLimits` here, before the roles (which check again)
are called: a refused value sends nothing.

Reads (the routing of each scheme is in ``docs/probe-board.md``, *Read routing*):

- ``"track"``: one channel. The selected row on SMU A at the read voltage, the selected
  column grounded, the unselected columns on the board's buffer following A: the other
  devices of the row see 0 V and A measures the selected device alone.
- ``"track-b"``: two channels (the tracking read). The selected row on SMU A, the selected
  column grounded, every other line on the buffer following SMU B, which sources the read
  voltage too: A measures the selected device alone. It is the read of the routing in which
  an on-instrument script writes (B at V/2) and reads (B at the read voltage) with no board
  command in between.
- ``"float"``: unselected lines floating; sneak paths through three devices in series add
  to the reading (for studying them, not for measuring a device).

The conductance of a read is ``I / V`` at the read voltage (docs: the conductance of
``/work/shared/reference/devices.md`` is the same ratio without noise); averaging ``n``
readings returns their mean and its standard error ``std / sqrt(n)`` (NaN for a single
reading: one reading holds no estimate of its own spread).

Units: V, A, S, s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from nvmlab.instruments.roles import ArrayBoard, SourceMeter, UnselectedScheme
from nvmlab.instruments.safety import SafetyLimits

__all__ = [
    "ArrayOperations",
    "ConductanceMap",
    "DeviceRead",
    "MAX_AVERAGES",
    "ReadScheme",
    "ReadSettings",
    "WriteScheme",
]

#: How the unselected lines are held during a read (see the module docstring).
ReadScheme = Literal["track", "track-b", "float"]
#: Half-select scheme of a write pulse (docs/probe-board.md, *Write pulses*).
WriteScheme = Literal["v/2", "v/3", "float", "ground"]
READ_SCHEMES: tuple[str, ...] = ("track", "track-b", "float")
WRITE_SCHEMES: tuple[str, ...] = ("v/2", "v/3", "float", "ground")
#: Most readings one averaged read takes.
MAX_AVERAGES = 1000
#: ``progress(done, total, read)``: devices read so far, devices asked for, the last read.
Progress = Callable[[int, int, "DeviceRead"], None]


@dataclass(frozen=True)
class ReadSettings:
    """How devices are read.

    ``read_v`` (V, non-zero, within the station's read limit), ``scheme`` (see the module
    docstring), ``averages`` (readings per device, 1..:data:`MAX_AVERAGES`), ``nplc``
    (integration time in power-line cycles, within the SMU model's range) and
    ``current_limit_a`` (A, the SMU compliance, within the station's current limit).
    """

    read_v: float = 0.2
    scheme: ReadScheme = "track"
    averages: int = 1
    nplc: float = 1.0
    current_limit_a: float = 1e-4


@dataclass(frozen=True)
class DeviceRead:
    """One device's read: ``conductance_s`` (S) = mean current / ``read_v``, its standard
    error ``stderr_s`` (S; NaN for a single reading), the mean ``current_a`` (A) and the
    number of ``readings`` averaged."""

    row: int
    col: int
    read_v: float
    conductance_s: float
    stderr_s: float
    current_a: float
    readings: int


@dataclass
class ConductanceMap:
    """A map read: (rows, cols) arrays of conductance (S), its standard error (S) and the
    mean current (A); NaN where a device was not read. ``devices`` lists the devices read,
    in order."""

    read_v: float
    readings: int
    conductance_s: np.ndarray
    stderr_s: np.ndarray
    current_a: np.ndarray
    devices: list[tuple[int, int]] = field(default_factory=list)


def _check_count(what: str, value: int, high: int) -> int:
    if isinstance(value, bool) or int(value) != value or not 1 <= value <= high:
        raise ValueError(f"{what} {value!r}: allowed 1..{high}")
    return int(value)


def _check_choice(what: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(allowed)}")
    return value


class ArrayOperations:
    """Reads, writes and vector-matrix products on one array through ``smu`` and ``board``.

    ``limits`` are the station's safety limits. The SMU's channel A is connected to the
    board's terminal A, channel B (two-channel models) to terminal B.
    """

    def __init__(self, smu: SourceMeter, board: ArrayBoard, limits: SafetyLimits) -> None:
        self.smu = smu
        self.board = board
        self.limits = limits
        self._prepared: ReadSettings | None = None

    # -- checks (no I/O) ------------------------------------------------------------------
    def check_read_settings(self, settings: ReadSettings) -> ReadSettings:
        """``settings`` if every field is allowed, else SafetyLimitError / ValueError."""
        if not (math.isfinite(settings.read_v) and settings.read_v != 0):
            raise ValueError(
                f"read voltage {settings.read_v!r} V: a conductance is current / voltage, so "
                "give a finite, non-zero read voltage"
            )
        self.limits.check_voltage(settings.read_v, "read", what="read voltage")
        self.limits.check_current_limit(settings.current_limit_a, what="read compliance")
        _check_choice("read scheme", settings.scheme, READ_SCHEMES)
        _check_count("averages", settings.averages, MAX_AVERAGES)
        if settings.scheme == "track-b" and "b" not in self.smu.channels:
            raise ValueError(
                "read scheme 'track-b' needs a two-channel SMU (channel B drives the tracking "
                f"buffer); this SMU has channels {self.smu.channels}"
            )
        return settings

    def _check_device(self, row: int, col: int) -> tuple[int, int]:
        for what, index, size in (("row", row, self.board.rows), ("column", col, self.board.cols)):
            if isinstance(index, bool) or int(index) != index or not 0 <= index < size:
                raise ValueError(
                    f"{what} {index!r} is outside 0..{size - 1} of this "
                    f"{self.board.rows}x{self.board.cols} array"
                )
        return int(row), int(col)

    # -- reads ----------------------------------------------------------------------------
    def prepare_reads(self, settings: ReadSettings) -> None:
        """Check ``settings``, configure the SMU (compliance, NPLC) and switch its output on
        at 0 V. A driver's own range (e.g. an NPLC the model lacks) raises ValueError."""
        self.check_read_settings(settings)
        channels: tuple[Literal["a", "b"], ...] = (
            ("a", "b") if settings.scheme == "track-b" else ("a",)
        )
        for ch in channels:
            self.smu.configure(
                current_limit_a=settings.current_limit_a, nplc=settings.nplc, channel=ch
            )
            self.smu.set_voltage(0.0, channel=ch)
            self.smu.output(True, channel=ch)
        self._prepared = settings

    def _route(self, row: int, col: int, scheme: ReadScheme) -> None:
        board_scheme: UnselectedScheme = "track-b" if scheme == "track-b" else scheme  # type: ignore[assignment]
        self.board.select(row, col, unselected=board_scheme)

    def _read_current(self, settings: ReadSettings) -> tuple[float, float]:
        """Mean current (A) and its standard error (A) at the read voltage; the selected
        device is routed. The source returns to 0 V afterwards."""
        v = settings.read_v
        if settings.scheme == "track-b":
            self.smu.set_voltage(v, channel="b")
        try:
            if settings.averages == 1:
                self.smu.set_voltage(v)
                try:
                    amps = np.array([self.smu.measure_current()])
                finally:
                    self.smu.set_voltage(0.0)
            else:
                amps = np.asarray(self.smu.list_sweep(np.full(settings.averages, v)), dtype=float)
        finally:
            if settings.scheme == "track-b":
                self.smu.set_voltage(0.0, channel="b")
        mean = float(amps.mean())
        stderr = float(amps.std(ddof=1) / math.sqrt(amps.size)) if amps.size > 1 else math.nan
        return mean, stderr

    def read_device(self, row: int, col: int, settings: ReadSettings | None = None) -> DeviceRead:
        """Read device (row, col): routes it, sources the read voltage, averages, back to 0 V.

        ``settings`` default to those of the last :meth:`prepare_reads` (or
        :class:`ReadSettings` defaults); new settings are prepared first.
        """
        settings = self._settings(settings)
        row, col = self._check_device(row, col)
        self._route(row, col, settings.scheme)
        amps, stderr_a = self._read_current(settings)
        v = settings.read_v
        return DeviceRead(row, col, v, amps / v, abs(stderr_a / v), amps, settings.averages)

    def _settings(self, settings: ReadSettings | None) -> ReadSettings:
        wanted = settings if settings is not None else (self._prepared or ReadSettings())
        if wanted != self._prepared:
            self.prepare_reads(wanted)
        return wanted

    def read_map(
        self,
        devices: Iterable[tuple[int, int]] | None = None,
        *,
        settings: ReadSettings | None = None,
        progress: Progress | None = None,
    ) -> ConductanceMap:
        """Read every device (row-major) or the ``devices`` given, one by one.

        ``progress(done, total, read)`` is called after each device with its
        :class:`DeviceRead` (it may raise to stop the map: the exception propagates with
        the SMU source back at 0 V).
        """
        settings = self._settings(settings)
        rows, cols = self.board.rows, self.board.cols
        wanted = (
            [(r, c) for r in range(rows) for c in range(cols)]
            if devices is None
            else [self._check_device(r, c) for r, c in devices]
        )
        result = ConductanceMap(
            settings.read_v,
            settings.averages,
            np.full((rows, cols), np.nan),
            np.full((rows, cols), np.nan),
            np.full((rows, cols), np.nan),
        )
        for done, (r, c) in enumerate(wanted, start=1):
            read = self.read_device(r, c, settings)
            result.conductance_s[r, c] = read.conductance_s
            result.stderr_s[r, c] = read.stderr_s
            result.current_a[r, c] = read.current_a
            result.devices.append((r, c))
            if progress is not None:
                progress(done, len(wanted), read)
        return result

    # -- writes ---------------------------------------------------------------------------
    def write_pulse(
        self,
        row: int,
        col: int,
        amplitude_v: float,
        width_s: float,
        *,
        scheme: WriteScheme = "v/2",
    ) -> None:
        """One on-board write pulse of ``amplitude_v`` (V; positive sets, negative resets)
        lasting ``width_s`` (s) on device (row, col), the unselected lines under ``scheme``
        (``"v/2"``: half-selected devices see V/2; ``"v/3"``: V/3, the others -V/3;
        ``"float"``; ``"ground"``: half-selected devices on the high line see the full V).
        The amplitude is checked against the station's write limit (its eFlash limit on an
        eFlash board), the width against its maximum pulse width, before anything is
        sent."""
        _check_choice("write scheme", scheme, WRITE_SCHEMES)
        row, col = self._check_device(row, col)
        if getattr(self.board, "kind", "MEMRISTOR") == "EFLASH":
            # eFlash program / erase amplitudes have their own, higher limit.
            self.limits.check_eflash_voltage(amplitude_v, what="eFlash pulse amplitude")
        else:
            self.limits.check_voltage(amplitude_v, "write", what="write pulse amplitude")
        self.limits.check_pulse_width(width_s)
        self.board.write_pulse(row, col, amplitude_v, width_s, scheme=scheme)

    # -- vector-matrix product ------------------------------------------------------------
    def vector_matrix_product(
        self,
        row_voltages_v: np.ndarray | Sequence[float],
        *,
        nplc: float | None = None,
        current_limit_a: float | None = None,
    ) -> np.ndarray:
        """Drive row i with ``row_voltages_v[i]`` (V, each within the read limit) from the
        board's DAC, hold every column at 0 V and measure each column's current (A).

        Returns the current flowing from the array into each column, ``I_j = sum_i
        I_ij(V_i)``: for linear devices the product of the input vector and the
        conductance matrix. Each column in turn is routed to SMU A at 0 V (a virtual
        ground that measures), the others grounded. The lines are grounded afterwards.

        With ``nplc`` (PLC) the SMU is configured first, with compliance
        ``current_limit_a`` (A; default the station's current limit): a column current
        beyond the compliance reads clamped.
        """
        volts = np.asarray(row_voltages_v, dtype=float).ravel()
        if volts.size != self.board.rows:
            raise ValueError(
                f"expected {self.board.rows} row voltages (one per row), got {volts.size}"
            )
        for i, v in enumerate(volts):
            self.limits.check_voltage(float(v), "read", what=f"row {i} voltage")
        if nplc is not None:
            limit = self.limits.max_current_a if current_limit_a is None else current_limit_a
            self.smu.configure(current_limit_a=limit, nplc=nplc)
            self._prepared = None
        self.smu.set_voltage(0.0)
        self.smu.output(True)
        currents = np.empty(self.board.cols)
        try:
            self.board.ground_all()
            self.board.set_row_voltages(volts)
            for c in range(self.board.cols):
                self.board.set_line("col", c, "smu-a")
                try:
                    # The SMU's current flows out of its terminal: into the column it is -I_j.
                    currents[c] = -self.smu.measure_current()
                finally:
                    self.board.set_line("col", c, "ground")
        finally:
            self.board.ground_all()
        return currents

    # -- end ------------------------------------------------------------------------------
    def finish(self) -> None:
        """SMU sources at 0 V with outputs off, every board line grounded."""
        self._prepared = None
        self.smu.safe_state()
        self.board.ground_all()
