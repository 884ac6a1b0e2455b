"""eFlash write-verify: erase, then program with a model-based choice of each pulse.

Brings every cell of an eFlash array that has a target to a target *cell current* (A):
the current from bit line to source at the read bias of ``docs/devices.md`` (word line
1.5 V, control gate 2.5 V, bit line 1 V, source 0 V), the quantity the bench's ground
truth reports as ``cell_current_a``. Targets may span several decades (10 nA - 10 uA is
three; the top is bounded by the select transistor's series limit, about 20 uA).

How a cell is read (the routing of the eFlash characterization on branch ``eflash``,
``characterization/eflash.py``; this module sets the biases and reads through
:meth:`ArrayOperations.read_device` itself, a minimal copy to fold after merging): the
board's eFlash biases at control gate ``control_gate_v``, erase gate 0 V, source 0 V;
the SMU forces ``read_v`` on the selected bit line and measures it ("track" scheme: the unselected bit lines follow the SMU, the unselected word
lines are grounded, so only the selected cell's current reaches the SMU). Raising the
threshold lowers this current (weak inversion: ``I ~ I0 exp((Vcg - Vth) / (n U_T))``).

Pulses (``docs/probe-board.md``, *Write pulses*, eFlash board): a positive amplitude is a
program pulse, the amplitude being the source-line voltage (the board drives the word
line, the control gate and the inhibit of the unselected bit lines); program raises Vth
(source-side injection) and so *lowers* the read current, and inhibited cells do not
move. A negative amplitude is an erase pulse, its magnitude the erase-gate voltage; erase
lowers Vth (raises the current) and disturbs the other cells of the selected word line a
little (their bit lines inhibit, not fully: docs/devices.md, *Erase*). Every amplitude
goes through :meth:`ArrayOperations.write_pulse`, which checks it against the station's
eFlash limit and the width against its pulse-width limit; the amplitude ranges of
:class:`EflashTuneSettings` are checked against those limits (and the board's source-line
range, 6 V) before any pulse.

The algorithm (:func:`tune_eflash`):

1. *Erase phase*, every targeted cell in turn: erase until the cell's current is at least
   ``erase_accept_ln`` above its target in ln I (aiming at ``erase_goal_ln``). Erasing a
   cell disturbs its word line's other cells towards *higher* current, which the program
   phase absorbs, so every erase of large size happens before any cell is tuned.
2. *Program phase*, every cell in turn: program pulses at a fixed width whose amplitude
   comes from a response fitted per cell as it goes (below), verified by a read after
   each; an overshoot (current confidently below the tolerance band) is answered by a
   small erase aimed just above the target, then programming again, at most
   ``max_erase_rounds`` times.
3. *Verification passes*: every tuned cell is read again (averaged); a cell outside the
   tolerance (retention drift, erase disturb from a later cell's overshoot repair) is
   tuned again (program if its current is high, erase + program if low). A final pass of
   averaged reads decides each cell's reported current and outcome.

Model-based choice of each pulse. With ``u = ln I``, a pulse of amplitude ``V`` (V,
magnitude) and width ``w`` (s) moves ``u`` by ``d`` (program: down, erase: up). The
device physics (docs/devices.md: rates exponential in the source or erase-gate bias,
linear in time for a small step) gives, for a cell at its present state::

    ln d = a + b (V - V_c) + ln(w / w_ref)

``b`` is the amplitude per e-fold of rate (about 1 / 0.25 V for program, 1 / 0.4 V for
erase at the docs' defaults) and ``a`` the cell's log step at the centre amplitude
``V_c``, which holds the cell's efficiency, its state (the rate slows as Vth rises) and
the transconductance at its current level (a Vth step moves ln I less in strong
inversion). Per cell and polarity, (a, b) are fitted by ridge-regularised weighted least
squares to that cell's observed steps, older steps forgotten by ``forget`` per pulse
(the state drifts as the cell moves); the prior is what earlier cells of the run showed
at a similar level (a linear fit of their a on ln I), or, for the first cells, the
docs' nominal response converted to ln I with the weak-inversion slope. A step too small
to tell from the read noise counts as a step of the detection limit (pessimistic: the
next amplitude rises). The next step aims at the remaining distance ``D`` shrunk so that
a step ``z`` standard deviations larger (cycle-to-cycle spread plus the fit's
uncertainty) still ends inside the tolerance band: far from the target a fraction of the
distance, close to it the centre.

Retention drift. After a pulse a cell's threshold slowly falls (docs/devices.md,
*Retention*: ``a log10(1 + t / t0)``), so its current rises by a roughly constant amount
per decade of time since its last pulse, about 0.1 % per decade at the docs' defaults:
at a 0.3 % tolerance that is the tolerance's size over a run. With a clock (the
station's), the tuner fits that rise (ln I per decade, t0 taken as 1 s, shrunk towards
0 while the evidence is weak) from pairs of reads of the same cell with no pulse on it
and no erase on its word line in between, predicts the end of the run from the time the
cells so far took, and judges and aims every cell where the drift will have brought it
at that end (at least ``aim_below`` tolerances under the target either way). The
verification passes also re-centre cells that drifted into the band's upper part.

Erase disturb. An erase pulse reaches the selected word line's other cells too (their
bit lines inhibit it, not fully): they lose a small fraction of the selected cell's
threshold drop, more where their threshold is higher. Tuned cells absorb it (the
verification passes program them back); cells left alone (NaN target) on a word line
that is tuned drift up in current (a few % at the defaults: measured in the tests).
Cells on other word lines are never disturbed.

Reads adapt to the current level: the relative noise of one reading rises at low current
(``sqrt(white_a / (I NPLC))``, white part averaging with NPLC, over a relative floor that
does not; docs/devices.md, *Read noise*), scaled by the spread the averaged reads show.
Far from the target one reading steers; near it the number of readings and NPLC are
chosen (least integration time) so that the standard error is ``tolerance / se_ratio``.
A cell is accepted when its averaged read is inside the band by ``accept_z`` standard
errors; between that and the band plus ``accept_z`` standard errors it is read again and
pooled.

Outcomes (:class:`EflashCellResult`): ``tuned``, ``failed`` (moved, but not within the
tolerance at the final read), ``stuck`` (no pulse ever moved it), ``skipped`` (no
target: NaN).

Units: V, A, s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from nvmlab.clock import Clock
from nvmlab.errors import ConfigError
from nvmlab.instruments.arrays import ArrayOperations, ReadSettings, WriteScheme
from nvmlab.tuning.writeverify import IO, OpsIO

__all__ = [
    "EflashCellResult",
    "EflashIO",
    "EflashTuneResult",
    "EflashTuneSettings",
    "Outcome",
    "StepModel",
    "tune_eflash",
]

#: What happened to a cell (see the module docstring).
Outcome = Literal["tuned", "failed", "stuck", "skipped"]
#: Integration times the reads choose from (PLC).
NPLC_CHOICES = (1.0, 2.0, 5.0, 10.0)
#: Mains frequency assumed for the time floor (Hz).
LINE_FREQUENCY_HZ = 60.0
#: Instrument overhead per reading assumed when choosing a read plan (s).
READING_OVERHEAD_S = 2e-3
#: Most readings one averaged read takes here.
MAX_READINGS = 100
#: Time origin of the log-time retention drift (s; docs/devices.md's form
#: ``a log10(1 + t / t0)``, t0 assumed 1 s).
DRIFT_T0_S = 1.0
#: Weak-inversion ln I per V of threshold at 25 C for a typical cell (n = 1.5): 1 / (n kT/q).
_WEAK_LN_PER_V = 1.0 / (1.5 * 8.617333262e-5 * 298.15)
#: Docs' nominal responses (docs/devices.md table): program 10 mV per 1 us at 4.5 V,
#: 0.25 V per e-fold; erase 20 mV per 1 ms at 10 V, 0.4 V per e-fold (at Vth 2.5 V).
_PROGRAM_NOMINAL = (math.log(0.01 * _WEAK_LN_PER_V), 1.0 / 0.25, 4.5, 1e-6)
_ERASE_NOMINAL = (math.log(0.02 * _WEAK_LN_PER_V), 1.0 / 0.4, 10.0, 1e-3)


#: What the eFlash tuner needs is what the memristor tuners need (a sweep's context, or
#: bare array operations wrapped in :class:`~nvmlab.tuning.writeverify.OpsIO`).
EflashIO = IO
_OpsIO = OpsIO


@dataclass(frozen=True)
class EflashTuneSettings:
    """Settings of :func:`tune_eflash` (units in the names).

    Tolerance and targets: ``tolerance_rel`` (relative, of the current),
    ``min_target_a`` / ``max_target_a`` (A, the targets allowed). Read: ``read_v`` (V,
    bit line), ``control_gate_v`` (V), ``current_limit_a`` (A, SMU compliance). Program:
    amplitude range ``program_min_v`` .. ``program_max_v`` (V, source line; the board
    allows 0..6 V), width ``program_width_s`` (s). Erase: amplitude range ``erase_min_v``
    .. ``erase_max_v`` (V, erase-gate magnitude), width ``erase_width_s`` (s), widened up
    to ``erase_max_width_s`` when the amplitude range is not enough. Erase phase: goal
    and acceptance above the target in ln I (``erase_goal_ln``, ``erase_accept_ln``).
    Budgets: ``max_pulses`` per cell over the whole run, ``max_erase_rounds`` overshoot
    repairs per cell, ``stuck_pulses`` pulses at the top of a range that move nothing
    before the cell is given up, ``verify_passes`` verification passes. Model: ``z``
    (standard deviations of the step guarded against), ``cycle_sigma_ln`` (assumed
    cycle-to-cycle spread of ln step), ``forget`` (weight factor per older pulse). Reads:
    ``accept_z``, ``se_ratio`` (tolerance / target standard error near the target),
    ``noise_floor_rel`` and ``noise_white_a`` (the prior read-noise model), ``scheme``
    (write scheme: the unselected bit lines inhibited)."""

    tolerance_rel: float = 0.01
    min_target_a: float = 1e-9
    max_target_a: float = 1.2e-5
    read_v: float = 1.0
    control_gate_v: float = 2.5
    current_limit_a: float = 1e-4
    program_min_v: float = 2.5
    program_max_v: float = 6.0
    program_width_s: float = 1e-6
    erase_min_v: float = 7.0
    erase_max_v: float = 11.0
    erase_width_s: float = 1e-3
    erase_max_width_s: float = 0.1
    erase_goal_ln: float = 0.35
    erase_accept_ln: float = 0.08
    max_pulses: int = 120
    max_erase_rounds: int = 6
    stuck_pulses: int = 3
    verify_passes: int = 2
    z: float = 2.0
    drift_prior_ln: float = 0.003
    aim_below: float = 0.25
    guard: float = 0.3
    centre_above: float = 0.5
    cycle_sigma_ln: float = 0.2
    forget: float = 0.7
    accept_z: float = 1.5
    se_ratio: float = 4.0
    noise_floor_rel: float = 0.004
    noise_white_a: float = 4e-13
    scheme: WriteScheme = "v/2"

    def check(self, ops: ArrayOperations) -> None:
        """ConfigError naming the field for a value the tuner or the station refuses."""
        positive = (
            "tolerance_rel", "min_target_a", "max_target_a", "read_v", "current_limit_a",
            "program_width_s", "erase_width_s", "erase_max_width_s", "erase_goal_ln",
            "erase_accept_ln", "z", "cycle_sigma_ln", "accept_z", "se_ratio",
            "noise_floor_rel", "noise_white_a", "program_min_v", "erase_min_v",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"value {value!r} is not allowed; give a number > 0", field=name)
        for name in ("max_pulses", "max_erase_rounds", "stuck_pulses", "verify_passes"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ConfigError(
                    f"value {value!r} is not allowed; give an integer >= 1", field=name
                )
        if not 0 < self.forget <= 1:
            raise ConfigError(
                f"value {self.forget!r} is not allowed; 0 < forget <= 1", field="forget"
            )
        if self.tolerance_rel >= 0.5:
            raise ConfigError(
                f"value {self.tolerance_rel!r} is not allowed; give a tolerance below 0.5",
                field="tolerance_rel",
            )
        if self.min_target_a >= self.max_target_a:
            raise ConfigError(
                f"value {self.min_target_a!r} A is not allowed; it must be below "
                f"max_target_a ({self.max_target_a!r} A)",
                field="min_target_a",
            )
        if self.erase_accept_ln >= self.erase_goal_ln:
            raise ConfigError(
                f"value {self.erase_accept_ln!r} is not allowed; it must be below "
                f"erase_goal_ln ({self.erase_goal_ln!r})",
                field="erase_accept_ln",
            )
        for low, high in (("program_min_v", "program_max_v"), ("erase_min_v", "erase_max_v"),
                          ("erase_width_s", "erase_max_width_s")):  # fmt: skip
            if getattr(self, low) > getattr(self, high):
                raise ConfigError(
                    f"value {getattr(self, low)!r} is not allowed; it must not exceed "
                    f"{high} ({getattr(self, high)!r})",
                    field=low,
                )
        if self.program_max_v > 6.0:
            raise ConfigError(
                f"value {self.program_max_v!r} V is not allowed; a program pulse's amplitude "
                "is the source-line voltage, 0..6 V on the eFlash board (docs/probe-board.md)",
                field="program_max_v",
            )
        limits = ops.limits
        for name in ("program_max_v", "erase_max_v"):
            value = getattr(self, name)
            if value > limits.max_eflash_v:
                raise ConfigError(
                    f"value {value:g} V is not allowed; the station's eFlash limit is "
                    f"{limits.max_eflash_v:g} V",
                    field=name,
                )
        for name in ("program_width_s", "erase_width_s", "erase_max_width_s"):
            value = getattr(self, name)
            if value > limits.max_pulse_width_s:
                raise ConfigError(
                    f"value {value:g} s is not allowed; the station's longest pulse is "
                    f"{limits.max_pulse_width_s:g} s",
                    field=name,
                )
        if self.read_v > limits.max_read_v:
            raise ConfigError(
                f"value {self.read_v:g} V is not allowed; the station's read limit is "
                f"{limits.max_read_v:g} V",
                field="read_v",
            )
        if self.current_limit_a > limits.max_current_a:
            raise ConfigError(
                f"value {self.current_limit_a:g} A is not allowed; the station's current "
                f"limit is {limits.max_current_a:g} A",
                field="current_limit_a",
            )
        if self.control_gate_v > limits.max_eflash_v or self.control_gate_v < 0:
            raise ConfigError(
                f"value {self.control_gate_v:g} V is not allowed; 0..{limits.max_eflash_v:g} V",
                field="control_gate_v",
            )


@dataclass
class EflashCellResult:
    """One cell's tuning: ``target_a`` (A), the final averaged read ``current_a`` (A) and
    its standard error ``stderr_a`` (A), pulses (``pulses`` = ``program_pulses`` +
    ``erase_pulses``), ``reads`` (averaged reads) and ``readings`` (single readings),
    ``erase_rounds`` (overshoot repairs), the ``outcome``, ``floor_s`` (s: pulse widths
    plus integration times, the instrument-time floor) and the largest program / erase
    amplitudes applied (V, magnitudes)."""

    row: int
    col: int
    target_a: float
    current_a: float = math.nan
    stderr_a: float = math.nan
    pulses: int = 0
    program_pulses: int = 0
    erase_pulses: int = 0
    reads: int = 0
    readings: int = 0
    erase_rounds: int = 0
    outcome: Outcome = "skipped"
    floor_s: float = 0.0
    max_program_v: float = 0.0
    max_erase_v: float = 0.0
    moved: bool = False

    @property
    def error_rel(self) -> float:
        """Relative error of the final read against the target."""
        return self.current_a / self.target_a - 1.0


@dataclass
class EflashTuneResult:
    """Every cell's :class:`EflashCellResult` (row-major, skipped cells included)."""

    rows: int
    cols: int
    cells: list[EflashCellResult] = field(default_factory=list)
    #: The retention drift the tuner learned: rise of ln I per decade of time since a
    #: cell's last pulse (0 without a clock or without evidence).
    drift_per_decade_ln: float = 0.0

    def array(self, name: str) -> np.ndarray:
        """(rows, cols) array of a numeric :class:`EflashCellResult` field (NaN where no
        cell was tuned)."""
        out = np.full((self.rows, self.cols), np.nan)
        for cell in self.cells:
            if cell.outcome != "skipped":
                out[cell.row, cell.col] = float(getattr(cell, name))
        return out

    def summary(self) -> dict[str, Any]:
        """Counts per outcome, pulses per targeted cell (mean / median / p95) and the share
        within the tolerance by the tuner's own final reads."""
        done = [c for c in self.cells if c.outcome != "skipped"]
        pulses = np.array([c.pulses for c in done], dtype=float)
        out: dict[str, Any] = {
            o: sum(c.outcome == o for c in self.cells)
            for o in ("tuned", "failed", "stuck", "skipped")
        }
        if done:
            out.update(
                pulses_mean=float(pulses.mean()),
                pulses_median=float(np.median(pulses)),
                pulses_p95=float(np.percentile(pulses, 95)),
                reads_mean=float(np.mean([c.reads for c in done])),
                floor_s_mean=float(np.mean([c.floor_s for c in done])),
                tuned_share=out["tuned"] / len(done),
                drift_per_decade_ln=self.drift_per_decade_ln,
            )
        return out


# ---------------------------------------------------------------------------- the model


class StepModel:
    """Per-cell, per-polarity response ``ln d = a + b (V - centre_v) + ln(w / width_s)``
    (module docstring), fitted by ridge-regularised weighted least squares to the cell's
    observed steps with the prior ``(a0, b0)`` worth ``prior_weight_a`` and
    ``prior_weight_b`` observations."""

    def __init__(
        self,
        a0: float,
        b0: float,
        centre_v: float,
        width_s: float,
        *,
        forget: float = 0.7,
        prior_weight_a: float = 0.5,
        prior_weight_b: float = 3.0,
    ) -> None:
        self.a0, self.b0 = float(a0), float(b0)
        self.centre_v, self.width_s = float(centre_v), float(width_s)
        self.forget = forget
        self.wa, self.wb = prior_weight_a, prior_weight_b
        self.obs: list[tuple[float, float, float]] = []  # (V, ln d - ln(w/w0), weight)
        self.a, self.b = self.a0, self.b0

    @property
    def informative(self) -> int:
        return sum(1 for _, _, w in self.obs if w >= 1.0)

    def observe(self, amplitude_v: float, width_s: float, step_ln: float, weight: float) -> None:
        """Record a step of ``step_ln`` (> 0, ln I moved) for a pulse of ``amplitude_v``
        (V, magnitude) and ``width_s`` (s), then refit."""
        y = math.log(step_ln) - math.log(width_s / self.width_s)
        self.obs.append((float(amplitude_v), y, float(weight)))
        self._fit()

    def _fit(self) -> None:
        n = len(self.obs)
        x = np.array([v - self.centre_v for v, _, _ in self.obs])
        y = np.array([y for _, y, _ in self.obs])
        w = np.array([wt * self.forget ** (n - 1 - i) for i, (_, _, wt) in enumerate(self.obs)])
        # normal equations with the ridge prior
        m = np.array(
            [[w.sum() + self.wa, (w * x).sum()], [(w * x).sum(), (w * x * x).sum() + self.wb]]
        )
        rhs = np.array([(w * y).sum() + self.wa * self.a0, (w * x * y).sum() + self.wb * self.b0])
        a, b = np.linalg.solve(m, rhs)
        # the rate rises with the amplitude: keep the slope within a factor 3 of the prior
        b = float(np.clip(b, self.b0 / 3.0, self.b0 * 3.0))
        self.a, self.b = float(a), b

    def sigma_ln(self, cycle_sigma_ln: float) -> float:
        """Standard deviation (ln) of the next step around the prediction: the cycle
        spread plus an uncertainty of the fit that falls with the weight of evidence."""
        n = sum(
            wt * self.forget ** (len(self.obs) - 1 - i) for i, (_, _, wt) in enumerate(self.obs)
        )
        return math.hypot(cycle_sigma_ln, 0.8 / math.sqrt(1.0 + 2.0 * n))

    def predict_ln(self, amplitude_v: float, width_s: float) -> float:
        """Predicted ln step for a pulse of ``amplitude_v`` (V) and ``width_s`` (s)."""
        return self.a + self.b * (amplitude_v - self.centre_v) + math.log(width_s / self.width_s)

    def amplitude_for(self, step_ln: float, width_s: float) -> float:
        """Amplitude (V) predicted to move ln I by ``step_ln`` with ``width_s`` (s)."""
        return (
            self.centre_v + (math.log(step_ln) - math.log(width_s / self.width_s) - self.a) / self.b
        )


class _Prior:
    """What earlier cells showed: per polarity, the fitted (ln I at the fit, a, b) of each
    cell; a new cell's prior a is their linear fit in ln I, its b their median."""

    def __init__(self, nominal: tuple[float, float, float, float]) -> None:
        a, b, centre, width = nominal
        self.nominal_a, self.nominal_b = a, b
        self.centre_v, self.width_s = centre, width
        self.cells: list[tuple[float, float, float]] = []

    def add(self, u: float, model: StepModel) -> None:
        if model.informative >= 2:
            self.cells.append((u, model.a, model.b))

    def for_level(self, u: float) -> tuple[float, float]:
        if len(self.cells) < 3:
            return self.nominal_a, self.nominal_b
        us = np.array([c[0] for c in self.cells])
        as_ = np.array([c[1] for c in self.cells])
        b = float(np.median([c[2] for c in self.cells]))
        if len(self.cells) >= 6 and np.ptp(us) > 0.5:
            slope, icpt = np.polyfit(us, as_, 1)
            return float(icpt + slope * np.clip(u, us.min(), us.max())), b
        return float(np.median(as_)), b


# ----------------------------------------------------------------------------- the tuner


class _Tuner:
    def __init__(
        self, io: EflashIO, settings: EflashTuneSettings, clock: Clock | None = None
    ) -> None:
        self.io, self.s = io, settings
        self.ops = io.ops
        self.tol_ln = math.log1p(settings.tolerance_rel)
        self.prog_prior = _Prior(_PROGRAM_NOMINAL)
        self.erase_prior = _Prior(_ERASE_NOMINAL)
        self.noise_scale = 1.0  # observed / model spread of single readings
        self._scale_evidence: list[float] = []
        self.models: dict[tuple[int, int], dict[str, StepModel]] = {}
        self.last: dict[tuple[int, int], tuple[float, float]] = {}  # (u, se_ln)
        self.dead: dict[tuple[int, int], dict[str, int]] = {}
        self._biases_set = False
        self._pending: tuple[str, float, float, float] = ("program", 0.0, 0.0, 0.0)
        # retention drift: clock, last pulse and last read per cell, the pooled fit
        self.clock = clock
        self.t_pulse: dict[tuple[int, int], float] = {}
        self.t_row_erase: dict[int, float] = {}  # last erase on a word line (disturbs it)
        self.last_read: dict[tuple[int, int], tuple[float, float, float]] = {}  # u, se, t
        self._drift_sxx = 0.0
        self._drift_sxy = 0.0
        self.t_end = math.nan  # predicted end of the run (s, clock time)

    # -- retention drift ------------------------------------------------------------------
    def now(self) -> float:
        return float(self.clock.now()) if self.clock is not None else math.nan

    @property
    def drift_per_decade_ln(self) -> float:
        """Fitted rise of ln I per decade of time since a cell's last pulse (>= 0), shrunk
        towards 0 (prior sd ``drift_prior_ln``) while the evidence is weak."""
        prior = 1.0 / self.s.drift_prior_ln**2
        return max(self._drift_sxy / (self._drift_sxx + prior), 0.0)

    def _log_age(self, key: tuple[int, int], t: float) -> float:
        return math.log10(1.0 + max(t - self.t_pulse.get(key, -math.inf), 0.0) / DRIFT_T0_S)

    def drift_ahead(self, key: tuple[int, int], *, pulsed_now: bool) -> float:
        """ln I the cell is predicted to gain from now to the end of the run: from a pulse
        applied now (``pulsed_now``) or from its last pulse."""
        k = self.drift_per_decade_ln
        now = self.now()
        if k == 0.0 or not math.isfinite(self.t_end) or not math.isfinite(now):
            return 0.0
        end = max(self.t_end, now)
        if pulsed_now:
            return k * math.log10(1.0 + (end - now) / DRIFT_T0_S)
        if key not in self.t_pulse:
            return 0.0  # never pulsed here: an old state, whose drift has slowed
        return k * (self._log_age(key, end) - self._log_age(key, now))

    def _observe_drift(self, key: tuple[int, int], u: float, se: float) -> None:
        t = self.now()
        if not math.isfinite(t):
            return
        prev = self.last_read.get(key)
        # a pair of reads with no pulse on the cell and no erase on its word line between
        # them (an erase disturbs the word line's other cells upwards too)
        quiet = prev is not None and prev[2] > self.t_row_erase.get(key[0], -math.inf)
        if prev is not None and quiet and key in self.t_pulse and prev[2] > self.t_pulse[key]:
            u0, se0, t0 = prev
            x = self._log_age(key, t) - self._log_age(key, t0)
            if x > 0.05:
                var = se0**2 + se**2
                self._drift_sxx += x * x / var
                self._drift_sxy += x * (u - u0) / var
        self.last_read[key] = (u, se, t)

    # -- reads ------------------------------------------------------------------------------
    def sigma1_rel(self, current_a: float, nplc: float) -> float:
        i = max(current_a, 1e-13)
        return self.noise_scale * math.hypot(
            self.s.noise_floor_rel, math.sqrt(self.s.noise_white_a / (i * nplc))
        )

    def read_plan(self, current_a: float, se_rel: float) -> tuple[int, float]:
        best: tuple[float, int, float] | None = None
        for nplc in NPLC_CHOICES:
            n = max(1, math.ceil((self.sigma1_rel(current_a, nplc) / se_rel) ** 2))
            n = min(n, MAX_READINGS)
            cost = n * (nplc / LINE_FREQUENCY_HZ + READING_OVERHEAD_S)
            if best is None or cost < best[0] - 1e-12:
                best = (cost, n, nplc)
        assert best is not None
        return best[1], best[2]

    def read(
        self, cell: EflashCellResult, current_guess_a: float, se_rel: float
    ) -> tuple[float, float]:
        """One averaged read of ``cell``: ln I and its standard error (ln)."""
        n, nplc = self.read_plan(current_guess_a, se_rel)
        if not self._biases_set:
            self.ops.board.set_eflash_biases(
                control_gate_v=self.s.control_gate_v, erase_gate_v=0.0, source_v=0.0
            )
            self._biases_set = True
        settings = ReadSettings(
            read_v=self.s.read_v, scheme="track", averages=n, nplc=nplc,
            current_limit_a=self.s.current_limit_a,
        )  # fmt: skip
        read = self.io.read(cell.row, cell.col, settings)
        cell.reads += 1
        cell.readings += n
        cell.floor_s += n * nplc / LINE_FREQUENCY_HZ
        amps = max(float(read.current_a), 1e-13)
        model_rel = self.sigma1_rel(amps, nplc)
        if n > 1 and math.isfinite(read.stderr_s):
            observed_rel = abs(read.stderr_s * read.read_v) / amps * math.sqrt(n)
            if amps > 1e-12:
                self._scale_evidence.append((observed_rel / (model_rel / self.noise_scale)) ** 2)
                self._scale_evidence = self._scale_evidence[-200:]
                # pooled variance ratio, the model (scale 1) worth 4 reads
                ev = self._scale_evidence
                self.noise_scale = math.sqrt((4.0 + sum(ev)) / (4.0 + len(ev)))
        se_ln = self.sigma1_rel(amps, nplc) / math.sqrt(n)
        self._observe_drift((cell.row, cell.col), math.log(amps), se_ln)
        return math.log(amps), se_ln

    def measure(
        self, cell: EflashCellResult, u_guess: float, distance_ln: float
    ) -> tuple[float, float]:
        """A read whose standard error suits a decision at ``distance_ln`` from the
        target: one cheap read far away, ``tolerance / se_ratio`` near it."""
        want = max(self.tol_ln / self.s.se_ratio, 0.15 * abs(distance_ln))
        want = min(want, 0.02)
        return self.read(cell, math.exp(u_guess), want)

    def refine(self, cell: EflashCellResult, u: float, se: float) -> tuple[float, float]:
        """Read again and pool with (u, se) until se reaches tolerance / se_ratio."""
        want = self.tol_ln / self.s.se_ratio
        u2, se2 = self.read(cell, math.exp(u), want)
        w1, w2 = 1 / se**2, 1 / se2**2
        return (u * w1 + u2 * w2) / (w1 + w2), 1 / math.sqrt(w1 + w2)

    # -- pulses -----------------------------------------------------------------------------
    def model(self, cell: EflashCellResult, kind: str, u: float) -> StepModel:
        key = (cell.row, cell.col)
        models = self.models.setdefault(key, {})
        if kind not in models:
            prior = self.prog_prior if kind == "program" else self.erase_prior
            a0, b0 = prior.for_level(u)
            models[kind] = StepModel(a0, b0, prior.centre_v, prior.width_s, forget=self.s.forget)
        return models[kind]

    def pulse(self, cell: EflashCellResult, kind: str, u: float, step_ln: float) -> float:
        """Apply the pulse of ``kind`` predicted to move ln I by ``step_ln``; return the
        amplitude's magnitude (V) and record the width used on the model."""
        s = self.s
        m = self.model(cell, kind, u)
        if kind == "program":
            lo, hi, width = s.program_min_v, s.program_max_v, s.program_width_s
        else:
            lo, hi, width = s.erase_min_v, s.erase_max_v, s.erase_width_s
            # widen the erase pulse while the amplitude range cannot make the step
            while m.amplitude_for(step_ln, width) > hi and width * 10 <= s.erase_max_width_s:
                width *= 10
        amp = float(np.clip(m.amplitude_for(step_ln, width), lo, hi))
        amp = round(amp, 4)
        key = (cell.row, cell.col)
        dead = self.dead.setdefault(key, {"program": 0, "erase": 0})
        if dead[kind] > 0:
            amp = hi  # nothing moved last time: the largest pulse
            if kind == "erase":
                width = s.erase_max_width_s
        signed = amp if kind == "program" else -amp
        self.io.pulse(cell.row, cell.col, signed, width, scheme=s.scheme)
        cell.pulses += 1
        cell.floor_s += width
        if kind == "program":
            cell.program_pulses += 1
            cell.max_program_v = max(cell.max_program_v, amp)
        else:
            cell.erase_pulses += 1
            cell.max_erase_v = max(cell.max_erase_v, amp)
        self._pending = (kind, amp, width, hi)
        self.t_pulse[key] = self.now()
        if kind == "erase":
            self.t_row_erase[cell.row] = self.t_pulse[key]
        return amp

    def learn(self, cell: EflashCellResult, u_before: float, se_before: float,
              u_after: float, se_after: float) -> None:  # fmt: skip
        kind, amp, width, hi = self._pending
        m = self.model(cell, kind, u_before)
        moved = (u_before - u_after) if kind == "program" else (u_after - u_before)
        detect = 3.0 * math.hypot(se_before, se_after)
        dead = self.dead.setdefault((cell.row, cell.col), {"program": 0, "erase": 0})
        if moved > detect:
            m.observe(amp, width, moved, 1.0)
            cell.moved = True
            dead[kind] = 0
        else:
            m.observe(amp, width, detect, 0.5)
            at_top = amp >= hi - 1e-6 and (kind == "program" or width >= self.s.erase_max_width_s)
            if at_top:
                dead[kind] += 1

    def program_step(self, d: float, sigma_ln: float, ahead: float = 0.0) -> float:
        """ln I step to plan for a program pulse at ``d`` (ln) above the target, the cell
        predicted to gain ``ahead`` (ln) by retention drift from the pulse to the end of
        the run: towards the aim (the drift below the target, at least ``aim_below``
        tolerances), shrunk so that a step ``z`` sigma larger still ends (after the drift)
        above the band's lower edge with ``guard`` of the tolerance to spare."""
        s = self.s
        aim = d + max(s.aim_below * self.tol_ln, ahead)
        guard = (d + ahead + (1.0 - s.guard) * self.tol_ln) * math.exp(-s.z * sigma_ln)
        return max(min(aim, guard), 1e-6)

    # -- one cell ---------------------------------------------------------------------------
    def erase_phase(self, cell: EflashCellResult) -> None:
        s = self.s
        u_t = math.log(cell.target_a)
        u, se = self.read(cell, cell.target_a, 0.05)
        while cell.pulses < s.max_pulses:
            if u >= u_t + s.erase_accept_ln:
                break
            if self.dead.get((cell.row, cell.col), {}).get("erase", 0) >= s.stuck_pulses:
                break
            self.pulse(cell, "erase", u, (u_t + s.erase_goal_ln) - u)
            u2, se2 = self.read(cell, math.exp(u_t), 0.05)
            self.learn(cell, u, se, u2, se2)
            u, se = u2, se2
        self.last[(cell.row, cell.col)] = (u, se)

    def tune_cell(self, cell: EflashCellResult, u: float, se: float) -> tuple[float, float]:
        """Program / repair ``cell`` from (u, se) until accepted or out of budget."""
        s = self.s
        key = (cell.row, cell.col)
        u_t = math.log(cell.target_a)
        refines = 0
        centring = 0
        while True:
            # where the cell will be at the end of the run if left alone, and the drift
            # a pulse now would be followed by
            d = u - u_t + self.drift_ahead(key, pulsed_now=False)
            ahead = self.drift_ahead(key, pulsed_now=True)
            if abs(d) + s.accept_z * se <= self.tol_ln:
                m = self.models.get(key, {}).get("program")
                upper = d > s.centre_above * self.tol_ln
                if not (upper and centring < 2 and m is not None and m.informative >= 2
                        and cell.pulses < s.max_pulses):  # fmt: skip
                    return u, se
                # inside, but in the band's upper part (where the retention drift goes
                # next): one small program pulse towards the aim
                centring += 1
                step = self.program_step(u - u_t, m.sigma_ln(s.cycle_sigma_ln), ahead)
                self.pulse(cell, "program", u, step)
                u2, se2 = self.measure(cell, u - step, 0.0)
                self.learn(cell, u, se, u2, se2)
                u, se = u2, se2
                continue
            if abs(d) <= self.tol_ln + s.accept_z * se and refines < 4:
                u, se = self.refine(cell, u, se)
                refines += 1
                continue
            refines = 0
            if cell.pulses >= s.max_pulses:
                return u, se
            dead = self.dead.get(key, {})
            if d > 0:
                if dead.get("program", 0) >= s.stuck_pulses:
                    return u, se
                m = self.model(cell, "program", u)
                sig = m.sigma_ln(s.cycle_sigma_ln)
                step = self.program_step(u - u_t, sig, ahead)
                self.pulse(cell, "program", u, step)
                u_exp = u - step
            else:
                if (
                    cell.erase_rounds >= s.max_erase_rounds
                    or dead.get("erase", 0) >= s.stuck_pulses
                ):
                    return u, se
                cell.erase_rounds += 1
                # erase to just above the band, then program down again
                step = (u_t + max(3.0 * self.tol_ln, 0.03)) - u
                self.pulse(cell, "erase", u, step)
                u_exp = u + step
            u2, se2 = self.measure(cell, u_exp, u_exp - u_t)
            self.learn(cell, u, se, u2, se2)
            u, se = u2, se2

    def settle(self, cell: EflashCellResult, u: float, se: float) -> tuple[float, float]:
        """Final decision read: pool more readings while the read cannot tell whether the
        cell is inside the band; a cell confidently outside is tuned once more (within its
        budget) and read again."""
        u_t = math.log(cell.target_a)
        for attempt in range(2):
            for _ in range(3):
                if abs(abs(u - u_t) - self.tol_ln) > self.s.accept_z * se:
                    break
                u, se = self.refine(cell, u, se)
            if abs(u - u_t) <= self.tol_ln or attempt == 1:
                break
            u, se = self.tune_cell(cell, u, se)
            u, se = self.read(cell, math.exp(u), self.tol_ln / self.s.se_ratio)
        return u, se

    def finish_cell(self, cell: EflashCellResult, u: float, se: float) -> None:
        cell.current_a = math.exp(u)
        cell.stderr_a = cell.current_a * se
        inside = abs(u - math.log(cell.target_a)) <= self.tol_ln
        if inside:
            cell.outcome = "tuned"
        elif not cell.moved:
            cell.outcome = "stuck"
        else:
            cell.outcome = "failed"


def tune_eflash(
    io: EflashIO | ArrayOperations,
    targets_a: np.ndarray,
    settings: EflashTuneSettings | None = None,
    *,
    clock: Clock | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> EflashTuneResult:
    """Tune every cell of the eFlash array with a finite target in ``targets_a`` (A, a
    (rows, cols) array of cell currents at the read bias; NaN: leave the cell alone).

    ``io`` is a sweep context or bare :class:`ArrayOperations` on an eFlash board.
    Targets and settings are checked before any pulse (ConfigError naming the field).
    ``clock`` (the station's, e.g. ``station.clock``; default ``io.clock`` when the io
    has one) times the retention drift the tuner learns and compensates; without one
    the drift is not modelled. ``progress(phase, done, total)`` is called after each
    cell of each phase ("erase", "program", "verify-1", ..., "final"). See the module
    docstring for the algorithm.
    """
    io = _OpsIO(io) if isinstance(io, ArrayOperations) else io
    s = settings if settings is not None else EflashTuneSettings()
    ops = io.ops
    kind = getattr(ops.board, "kind", "EFLASH")
    if str(kind).upper() != "EFLASH":
        raise ConfigError(
            f"value {kind!r} is not allowed; eFlash tuning needs an EFLASH board", field="board"
        )
    s.check(ops)
    rows, cols = ops.board.rows, ops.board.cols
    targets = np.asarray(targets_a, dtype=float)
    if targets.shape != (rows, cols):
        raise ConfigError(
            f"value of shape {targets.shape} is not allowed; give a ({rows}, {cols}) array "
            "(one target current per cell, NaN to leave a cell alone)",
            field="targets_a",
        )
    finite = targets[np.isfinite(targets)]
    bad = finite[(finite < s.min_target_a) | (finite > s.max_target_a)]
    if bad.size or np.isinf(targets).any():
        value = float(bad[0]) if bad.size else float(targets[np.isinf(targets)][0])
        raise ConfigError(
            f"value {value:g} A is not allowed; targets must lie within "
            f"{s.min_target_a:g}..{s.max_target_a:g} A (or be NaN: leave alone)",
            field="targets_a",
        )
    if clock is None:
        clock = getattr(io, "clock", None)
    tuner = _Tuner(io, s, clock)
    result = EflashTuneResult(rows, cols)
    cells: list[EflashCellResult] = []
    for r in range(rows):
        for c in range(cols):
            cell = EflashCellResult(r, c, float(targets[r, c]))
            result.cells.append(cell)
            if math.isfinite(cell.target_a):
                cells.append(cell)

    def report(phase: str, done: int) -> None:
        if progress is not None:
            progress(phase, done, len(cells))

    try:
        for k, cell in enumerate(cells, 1):
            tuner.erase_phase(cell)
            report("erase", k)
        n_cells = len(cells)
        t_start = tuner.now()
        per_cell = math.nan
        for k, cell in enumerate(cells, 1):
            if k > 1:
                # predicted end: the rest of this phase, a verification pass and the final
                # reads (each a fraction of a program visit)
                per_cell = (tuner.now() - t_start) / (k - 1)
                tuner.t_end = tuner.now() + per_cell * ((n_cells - k + 1) + 0.5 * n_cells)
            u, se = tuner.last[(cell.row, cell.col)]
            # the row's later erases moved it up since: read it again
            u, se = tuner.measure(cell, u, u - math.log(cell.target_a))
            u, se = tuner.tune_cell(cell, u, se)
            tuner.last[(cell.row, cell.col)] = (u, se)
            m = tuner.models.get((cell.row, cell.col), {})
            if "program" in m:
                tuner.prog_prior.add(math.log(cell.target_a), m["program"])
            if "erase" in m:
                tuner.erase_prior.add(math.log(cell.target_a), m["erase"])
            report("program", k)
        for p in range(1, s.verify_passes + 1):
            redo = 0
            t_pass = tuner.now()
            for k, cell in enumerate(cells, 1):
                if k > 1:
                    per_visit = (tuner.now() - t_pass) / (k - 1)
                    final = 0.2 * (per_cell if math.isfinite(per_cell) else per_visit)
                    tuner.t_end = tuner.now() + per_visit * (n_cells - k + 1) + final * n_cells
                u_prev, _ = tuner.last[(cell.row, cell.col)]
                u, se = tuner.read(cell, math.exp(u_prev), tuner.tol_ln / s.se_ratio)
                key = (cell.row, cell.col)
                d = u - math.log(cell.target_a) + tuner.drift_ahead(key, pulsed_now=False)
                # outside the band, or drifted into its upper part (retention raises the
                # current, slower and slower in log time): tune again
                if abs(d) + s.accept_z * se > tuner.tol_ln or d > s.centre_above * tuner.tol_ln:
                    redo += 1
                    u, se = tuner.tune_cell(cell, u, se)
                tuner.last[(cell.row, cell.col)] = (u, se)
                report(f"verify-{p}", k)
            if redo == 0:
                break
        t_final = tuner.now()
        for k, cell in enumerate(cells, 1):
            if k > 1:
                tuner.t_end = tuner.now() + (tuner.now() - t_final) / (k - 1) * (n_cells - k + 1)
            u_prev, _ = tuner.last[(cell.row, cell.col)]
            u, se = tuner.read(cell, math.exp(u_prev), tuner.tol_ln / s.se_ratio)
            u, se = tuner.settle(cell, u, se)
            tuner.finish_cell(cell, u, se)
            report("final", k)
        result.drift_per_decade_ln = tuner.drift_per_decade_ln
    finally:
        ops.board.set_eflash_biases(control_gate_v=0.0, erase_gate_v=0.0, source_v=0.0)
    return result
