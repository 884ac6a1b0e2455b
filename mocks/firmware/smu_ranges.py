"""Current ranges, resolution and noise floor of the emulated source-measure units.

A real SMU measures current on one of a ladder of ranges: fixed by the host or chosen by
auto-range (the lowest range whose full scale holds the reading). On that range a reading
is quantised to the range's resolution, carries the instrument's own noise, and a reading
above the range's largest value is an overflow. This module holds those figures per model
and turns the bench's current into what the instrument reports; the firmware emulators
(:mod:`.keithley2400`, :mod:`.keithley2636b`, :mod:`.keysight_b2902a`) call it.

Ranges and resolution (the datasheets' current-measurement tables, resolution at 1 PLC):

=========  ==========  ==============  ==================================================
model      range (A)   resolution (A)  source
=========  ==========  ==============  ==================================================
2400       1 u         10 p            Keithley 2400 SourceMeter Specifications (rev. H),
           10 u        100 p           "Current measurement accuracy", default resolution
           100 u       1 n
           1 m         10 n
           10 m        100 n
           100 m       1 u
           1           10 u
2636B      100 p       100 a           Keithley Series 2600B datasheet, "Current
           1 n         1 f             measurement accuracy": 6 1/2 digits, resolution
           10 n        10 f            1e-6 of the range (the 2601B / 2602B table, whose
           100 n       100 f           ranges 100 nA .. 1 A the 2636B shares; the 2636B's
           1 u         1 p             low ranges continue the same digits down to its
           10 u        10 p            0.1 fA on 100 pA)
           100 u       100 p
           1 m         1 n
           10 m        10 n
           100 m       100 n
           1           1 u
           1.5         1 u
B2902A     100 n       100 f           Keysight B2900A Series Data Sheet, "Current
           1 u         1 p             measurement specifications"; the 10 nA range is
           10 u        10 p            B2911A / B2912A only (footnote 1 of that table)
           100 u       100 p
           1 m         1 n
           10 m        10 n
           100 m       100 n
           1           1 u
           1.5         1 u
           3           10 u
=========  ==========  ==============  ==================================================

Over-range (largest reading on a range, as a fraction of the range): 2400 105 % (its
ranges are named 1.05 uA ... 1.05 A, as ``:SENS:CURR:RANG?`` answers); B2902A 106 %, 102 %
on the 1.5 A and 3 A ranges (data sheet, "Measurement supplemental characteristics: Over
range"); 2636B 102 % ("the full-scale measurement is 102 percent of the range", Series
2600B Reference Manual, "Maximum source values and readings"). Auto-range moves up at the
over-range limit, except the 2600B, which "autoranges at 100 percent of the range" (same
section). Pulse-only ranges (10 A on the 2636B and the B2902A) are not emulated.

Noise floor (assumed): no datasheet gives the rms noise of a current reading. The model is
one count of the 1 PLC resolution, rms, at 1 PLC, scaling as 1/sqrt(NPLC) (white noise
averaged over the integration time): ``sigma = resolution / sqrt(nplc)``. So at 1 nA on a
2400's lowest range a single 1 PLC reading resolves about 1 % (10 pA). The B2900A data
sheet's derating of accuracy for NPLC < 1 (for example 0.1 % of range on 100 nA at
0.01 PLC) is a bound that this floor stays inside. A repeat filter of N conversions
integrates N times as long (``nplc`` times N).

The device's own read noise (and the part of it the physics calls the instrument's) is
the array's (:mod:`nvmlab.mocks.physics`); this floor is added on top, in the firmware.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: rms noise of a reading at 1 PLC, in counts of the range's resolution (assumed).
NOISE_COUNTS_AT_1PLC = 1.0


@dataclass(frozen=True)
class CurrentRange:
    """One current range: nominal full scale, resolution and largest reading (A)."""

    nominal_a: float  #: the range's name (A): 1e-6 for the "1 uA" range
    resolution_a: float  #: one count of the reading at 1 PLC (A)
    max_reading_a: float  #: largest |reading| before overflow (A)

    def noise_floor_a(self, nplc: float) -> float:
        """rms noise (A) of one reading at ``nplc`` power-line cycles of integration."""
        return NOISE_COUNTS_AT_1PLC * self.resolution_a / math.sqrt(max(float(nplc), 1e-6))


@dataclass(frozen=True)
class CurrentRanges:
    """The current ranges of one SMU model, lowest first."""

    model: str
    ranges: tuple[CurrentRange, ...]
    #: Auto-range leaves a range above this fraction of its nominal value (None: at the
    #: largest reading).
    autorange_at: float | None = None

    @property
    def lowest(self) -> CurrentRange:
        return self.ranges[0]

    @property
    def highest(self) -> CurrentRange:
        return self.ranges[-1]

    def fixed(self, amps: float) -> CurrentRange:
        """The range a host gets asking for ``amps`` (A): the lowest whose nominal full
        scale holds it (as ``:SENS:CURR:RANG`` / ``rangei`` do). ValueError above the
        highest range."""
        mag = abs(float(amps))
        for r in self.ranges:
            if mag <= r.nominal_a * (1 + 1e-9):
                return r
        raise ValueError(
            f"{self.model}: current range {mag:g} A above the highest range "
            f"{self.highest.nominal_a:g} A"
        )

    def auto(self, amps: float, lowest_a: float = 0.0) -> CurrentRange:
        """The range auto-range settles on for a current of ``amps`` (A): the lowest range
        (not below ``lowest_a``, A) that reads it without overflow; the highest if none."""
        mag = abs(float(amps))
        for r in self.ranges:
            if r.nominal_a < lowest_a * (1 - 1e-9):
                continue
            top = r.max_reading_a if self.autorange_at is None else r.nominal_a * self.autorange_at
            if mag <= top * (1 + 1e-9):
                return r
        return self.highest

    def read(
        self, amps: float, rng: CurrentRange, nplc: float, noise: np.random.Generator
    ) -> float | None:
        """What the instrument reports for a current of ``amps`` (A) on range ``rng`` at
        ``nplc``: the current plus the noise floor, quantised to the resolution; ``None``
        when the reading is above the range (an overflow)."""
        value = float(amps) + float(noise.normal(0.0, rng.noise_floor_a(nplc)))
        if abs(value) > rng.max_reading_a:
            return None
        return round(value / rng.resolution_a) * rng.resolution_a


def _ladder(
    decades: list[tuple[float, float]], over: float, special: dict[float, float] | None = None
) -> tuple[CurrentRange, ...]:
    special = special or {}
    return tuple(CurrentRange(n, res, n * special.get(n, over)) for n, res in decades)


#: Keithley 2400 (see the module docstring for the sources).
KEITHLEY_2400 = CurrentRanges(
    "keithley2400",
    _ladder(
        [(1e-6, 10e-12), (10e-6, 100e-12), (100e-6, 1e-9), (1e-3, 10e-9), (10e-3, 100e-9),
         (100e-3, 1e-6), (1.0, 10e-6)],
        1.05,
    ),
)  # fmt: skip

#: Keithley 2636B (see the module docstring for the sources).
KEITHLEY_2636B = CurrentRanges(
    "keithley2636b",
    _ladder(
        [(100e-12, 100e-18), (1e-9, 1e-15), (10e-9, 10e-15), (100e-9, 100e-15), (1e-6, 1e-12),
         (10e-6, 10e-12), (100e-6, 100e-12), (1e-3, 1e-9), (10e-3, 10e-9), (100e-3, 100e-9),
         (1.0, 1e-6), (1.5, 1e-6)],
        1.02,
    ),
    autorange_at=1.0,
)  # fmt: skip

#: Keysight B2902A (see the module docstring for the sources).
KEYSIGHT_B2902A = CurrentRanges(
    "keysight_b2902a",
    _ladder(
        [(100e-9, 100e-15), (1e-6, 1e-12), (10e-6, 10e-12), (100e-6, 100e-12), (1e-3, 1e-9),
         (10e-3, 10e-9), (100e-3, 100e-9), (1.0, 1e-6), (1.5, 1e-6), (3.0, 10e-6)],
        1.06,
        {1.5: 1.02, 3.0: 1.02},
    ),
)  # fmt: skip


__all__ = [
    "KEITHLEY_2400",
    "KEITHLEY_2636B",
    "KEYSIGHT_B2902A",
    "NOISE_COUNTS_AT_1PLC",
    "CurrentRange",
    "CurrentRanges",
]
