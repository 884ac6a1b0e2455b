"""Putting devices into given states for a sweep: a simple conventional write-verify.

Sweeps that measure at chosen conductances (noise, temperature, retention: default 10, 30,
60 and 90 uS, each device visiting each) set them with :func:`set_conductance`, the
conventional fixed-ramp write-verify (Alibart 2012's baseline, the devices docs'
calibration protocol): read; below the target, set pulses of rising amplitude; above it,
reset pulses of rising amplitude; a change of polarity restarts the ramp at its start;
stop within the tolerance (default +-5 %) or after ``max_pulses``. Every pulse and read is
stored through the sweep's context. The tuning issue's adaptive algorithm may replace it.

Units: V, S, s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nvmlab.instruments.arrays import ReadSettings, WriteScheme

if TYPE_CHECKING:
    from nvmlab.characterization.sweep import SweepContext

__all__ = ["DEFAULT_STATES_S", "Ramp", "StateResult", "set_conductance"]

#: Default states of the sweeps that measure at chosen conductances (S).
DEFAULT_STATES_S = (10e-6, 30e-6, 60e-6, 90e-6)


@dataclass(frozen=True)
class Ramp:
    """Amplitude ramp of one polarity: start, step and largest magnitude (V, all > 0)."""

    start_v: float = 0.5
    step_v: float = 0.03
    max_v: float = 2.5


@dataclass(frozen=True)
class StateResult:
    """Outcome of :func:`set_conductance`: the last read (S), pulses applied, and whether
    the last read is within the tolerance."""

    conductance_s: float
    pulses: int
    reached: bool


def set_conductance(
    ctx: SweepContext,
    row: int,
    col: int,
    target_s: float,
    *,
    tolerance_rel: float = 0.05,
    max_pulses: int = 200,
    set_ramp: Ramp = Ramp(0.5, 0.03, 2.5),
    reset_ramp: Ramp = Ramp(0.5, 0.03, 2.5),
    width_s: float = 1e-3,
    scheme: WriteScheme = "v/3",
    read: ReadSettings | None = None,
) -> StateResult:
    """Bring device (row, col) within ``tolerance_rel`` of ``target_s`` (S) with the
    conventional fixed ramp (see the module docstring). Ramp maxima are capped at the
    station's write limit."""
    settings = read or ReadSettings(read_v=0.2, averages=2, nplc=1.0)
    cap = ctx.station.limits.max_write_v
    g = ctx.read(row, col, settings).conductance_s
    pulses = 0
    polarity = 0
    amplitude = 0.0
    while pulses < max_pulses:
        if abs(g - target_s) <= tolerance_rel * target_s:
            return StateResult(g, pulses, True)
        wanted = 1 if g < target_s else -1
        ramp = set_ramp if wanted > 0 else reset_ramp
        top = min(ramp.max_v, cap)
        if wanted != polarity:
            polarity, amplitude = wanted, ramp.start_v
        else:
            amplitude = min(amplitude + ramp.step_v, top)
        ctx.pulse(row, col, polarity * amplitude, width_s, scheme=scheme)
        pulses += 1
        g = ctx.read(row, col, settings).conductance_s
    return StateResult(g, pulses, abs(g - target_s) <= tolerance_rel * target_s)
