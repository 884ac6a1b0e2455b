"""Per-device memristor write-verify: the conventional fixed ramp and the adaptive tuner.

Both bring one device of a crossbar to a target conductance (S; the devices docs'
definition: I(0.2 V) / 0.2 V, so every verification reads at 0.2 V and needs no I-V
conversion) through pulses and reads of an :class:`IO` (an
:class:`~nvmlab.instruments.arrays.ArrayOperations` wrapped by :class:`OpsIO`, or a
sweep's context, whose ``read`` / ``pulse`` store what they do). Every amplitude goes
through :meth:`ArrayOperations.write_pulse`, which checks the station's write limit; the
ramp maxima are capped at that limit too, so no pulse is ever refused mid-tune.

:func:`conventional` is the baseline, exactly the calibration protocol of
``docs/devices.md`` (Alibart 2012's fixed ramp, Fahimi 2021's anchor): V/2 scheme, set
ramp 0.5 -> 2.0 V and reset ramp 0.5 -> 2.2 V in fixed 30 mV steps, 1.1 ms pulses, one
single read (0.2 V, 1 PLC) after each pulse, a change of polarity restarts that ramp at
its start, at most 200 pulses, stop as soon as a read is within the tolerance (2 %).

:func:`adaptive` is the product's algorithm. Per polarity it keeps an estimate of the
device's effective threshold theta (V) in the switching law of the devices docs,
``d ln G = +-L0 (w / 1 ms) h(|V| / theta) exp((|V| - theta) / v0)`` with ``L0 = ln 1.02``
(set) or ``ln(1 / 0.98)`` (reset) by the definition of the threshold, ``v0`` the
switching slope (0.05 V), ``h`` the onset from the switching floor (``((x - f) / (1 -
f))^2`` clipped to [0, 1], ``f`` = ``floor_fraction``: nothing below ``f`` theta, the full
law from theta up; read as a plain exponential, a pulse at 0.85 theta would teach a
threshold 30 mV too high) and a lognormal cycle-to-cycle factor (CV 0.3):

- *Probing* (theta unknown): each pulse is the largest that cannot overshoot even if the
  threshold sat at its present lower bound, which starts at a low quantile of the
  population prior (or a chip profile's per-device threshold when given) and rises with
  every pulse that moved nothing detectable (a pulse at V that changed ln G by less than
  the detection limit d proves ``theta >= V - v0 ln(d / L0)``). Probe steps are at least
  ``min_probe_step_v`` so a device that never moves reaches the ramp maximum within a
  bounded number of pulses and is reported stuck.
- *Model-based steps* (theta estimated from observed changes, a weighted running mean
  that forgets old observations): the amplitude is the one whose predicted change is the
  needed ``ln(target / G)``, shrunk so that a change ``z`` standard deviations larger
  (cycle-to-cycle spread and the uncertainty of theta) still lands inside the tolerance
  band; far from the target that is a fraction of the distance, close to it the centre.
- *A pulse that moved less than the detection limit* proves a lower bound on theta; it
  drops the model only when that bound lies beyond the estimate by more than two
  standard deviations of the estimate and of the cycle-to-cycle spread together (a low
  draw is not a wrong model). Probing that restarts in a polarity that moved the device
  before does not take the probing ramp's least step above the last pulse (80 mV would
  multiply the next change by five).
- *Overshoot*: the other polarity takes over with its own theta (learned the same way);
  the overshooting pulse itself refines the first polarity's theta, so its next amplitude
  backs off.
- *Reads*: each read's number of readings and integration time (NPLC) are chosen from a
  noise model ``sigma = rel G + abs / sqrt(NPLC)`` (scaled by the spread the averaged
  reads actually show) so that its standard error is what the next decision needs: one
  reading far from the target, averaged reads (longer NPLC where the instrument's part
  dominates, at low conductance) near it.
- *Stop rule*: a device is accepted when its averaged read is inside ``accept_band`` x the
  tolerance (half of it by default: the reads are verified against the centre, so a
  telegraph level or a slow drift the reads cannot see still leaves room) by at least
  ``accept_z`` standard errors; between that and the band plus ``accept_z`` standard
  errors the read is repeated (pooled) before anything else is decided.
- *Telegraph devices*: an accepted device is confirmed by ``verify_reads - 1`` more
  averaged reads spanning at least ``verify_window_s``; reads that disagree beyond their standard errors start a batch (up to
  ``telegraph_reads``) split into two levels; the device's conductance is the mean of the
  two level means (the devices docs: the reading sits at G (1 +- step / 2)), judged
  against the band and reported (``telegraph_rel``). A device whose dwell time is much
  longer than the verification window shows one level only: the band's margin
  covers steps up to about 1 %; beyond that only a later re-verification (the array
  tuner's, after its level changed) can tell.
- *Stuck devices*: a polarity whose amplitude reached its maximum with ``stuck_pulses``
  consecutive pulses there moving nothing detectable (reads that resolve
  ``cap_change_rel``) is dead; a device dead in the direction it needs is
  ``stuck`` when no pulse ever moved it, ``failed`` otherwise; at most ``max_pulses``.

Both tune one device; in a passive crossbar every pulse also stresses the half-selected
devices (V/2: the selected row and column; V/3: those at V/3, every other device at -V/3),
and at 25 % threshold variation a device tuned early is disturbed by its neighbours'
pulses. Tuning order, amplitude caps (``set_ramp.max_v`` / ``reset_ramp.max_v``) and
re-verification are the array tuner's; calling :func:`adaptive` again on a device is its
re-verification (an averaged read, no pulse when still within the band).

The result of both is a :class:`TuneResult` (final averaged read and its standard error,
pulses, reads, readings, bus round trips when a :class:`BusCounter` is given, outcome).

Units: V, S, s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from nvmlab.characterization.states import Ramp
from nvmlab.errors import ConfigError
from nvmlab.instruments.arrays import ArrayOperations, DeviceRead, ReadSettings, WriteScheme

__all__ = [
    "AdaptiveSettings",
    "BusCounter",
    "ConventionalSettings",
    "IO",
    "OpsIO",
    "Outcome",
    "ThresholdPrior",
    "TuneResult",
    "adaptive",
    "conventional",
]

#: What happened to a device: ``tuned`` (within the tolerance by its final averaged
#: read), ``failed`` (it moved but did not get there within the pulse budget or the ramp),
#: ``stuck`` (no pulse ever moved it), ``skipped`` (no target).
Outcome = Literal["tuned", "failed", "stuck", "skipped"]
#: ln of the threshold definition's change per 1 ms pulse at the threshold (docs/devices.md).
L0_SET = math.log(1.02)
#: Largest telegraph step (relative) a device is taken to have (the devices docs: up to
#: 2 %, with read noise), and the level-mean measurements one call takes at most.
TELEGRAPH_MAX_REL = 0.03
TELEGRAPH_CENTRINGS = 3
L0_RESET = math.log(1.0 / 0.98)
#: Pulse width at which the threshold definition holds (s).
THRESHOLD_PULSE_S = 1e-3
#: Integration times the adaptive reads choose from (PLC).
NPLC_CHOICES = (1.0, 2.0, 5.0, 10.0)
#: Mains frequency assumed when the SMU's driver does not say (Hz; the drivers' default).
DEFAULT_LINE_FREQUENCY_HZ = 60.0


def line_frequency_hz(ops: ArrayOperations) -> float:
    """The mains frequency the SMU integrates over (Hz): its driver's ``line_frequency_hz``
    (or its parent's, for a channel), else :data:`DEFAULT_LINE_FREQUENCY_HZ`."""
    driver = getattr(ops.smu, "driver", None)
    for holder in (ops.smu, driver, getattr(driver, "parent", None)):
        hz = getattr(holder, "line_frequency_hz", None)
        if isinstance(hz, (int, float)) and hz > 0:
            return float(hz)
    return DEFAULT_LINE_FREQUENCY_HZ


class IO(Protocol):
    """What the tuners need: the array operations (limits), a read and a pulse. A sweep's
    context (``ctx.ops``, ``ctx.read``, ``ctx.pulse``) is one; :class:`OpsIO` makes one of
    bare :class:`ArrayOperations`."""

    @property
    def ops(self) -> ArrayOperations: ...

    def read(self, row: int, col: int, settings: ReadSettings | None = None) -> DeviceRead: ...

    def pulse(
        self, row: int, col: int, amplitude_v: float, width_s: float, *, scheme: WriteScheme
    ) -> None: ...


class OpsIO:
    """:class:`IO` over bare :class:`ArrayOperations` (nothing stored)."""

    def __init__(self, ops: ArrayOperations) -> None:
        self._ops = ops

    @property
    def ops(self) -> ArrayOperations:
        return self._ops

    def read(self, row: int, col: int, settings: ReadSettings | None = None) -> DeviceRead:
        return self._ops.read_device(row, col, settings)

    def pulse(
        self, row: int, col: int, amplitude_v: float, width_s: float, *, scheme: WriteScheme
    ) -> None:
        self._ops.write_pulse(row, col, amplitude_v, width_s, scheme=scheme)


def _as_io(io: IO | ArrayOperations) -> IO:
    return OpsIO(io) if isinstance(io, ArrayOperations) else io


class BusCounter:
    """Counts bus round trips (replies read from an instrument) on a station's transports.

    ``with BusCounter.on(station.transports.values()) as bus: ...``; ``bus.round_trips``
    is the running count. It wraps each transport's ``read`` / ``read_raw`` on the
    instance for the duration of the block.
    """

    def __init__(self) -> None:
        self.round_trips = 0

    @classmethod
    @contextmanager
    def on(cls, transports: Any) -> Iterator[BusCounter]:
        counter = cls()
        patched: list[tuple[Any, str]] = []

        def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
            def counted(*args: Any, **kwargs: Any) -> Any:
                counter.round_trips += 1
                return method(*args, **kwargs)

            return counted

        try:
            for transport in transports:
                for name in ("read", "read_raw"):
                    method = getattr(transport, name, None)
                    if method is not None:
                        setattr(transport, name, wrap(method))
                        patched.append((transport, name))
            yield counter
        finally:
            for transport, name in patched:
                with suppress(AttributeError):
                    delattr(transport, name)


@dataclass
class TuneResult:
    """One device's tuning: the final averaged read ``conductance_s`` (S; for a telegraph
    device the mean of its two levels) and its standard error ``stderr_s`` (S), the
    ``pulses`` applied, ``reads`` (averaged reads) and ``readings`` (single readings) taken,
    ``round_trips`` (bus round trips, -1 when not counted), the ``outcome``, and what the
    tuner learned: per-polarity threshold estimates (V; NaN where none; the reset one
    negative), ``telegraph_rel`` (the step between the two telegraph levels relative to
    the conductance, 0 when none was recognised) and the largest amplitude applied (V).
    ``floor_s`` is the physical floor of the instrument time spent (s): the sum of the
    pulse widths and of the readings' integration times (NPLC / mains frequency)."""

    row: int
    col: int
    target_s: float
    conductance_s: float
    stderr_s: float
    pulses: int
    reads: int
    readings: int
    outcome: Outcome
    round_trips: int = -1
    set_threshold_v: float = math.nan
    reset_threshold_v: float = math.nan
    telegraph_rel: float = 0.0
    max_amplitude_v: float = 0.0
    floor_s: float = 0.0
    #: The call ended because the device needed the polarity ``approach`` forbids.
    wrong_side: bool = False
    history: list[tuple[float, float]] = field(default_factory=list, repr=False)

    @property
    def error_rel(self) -> float:
        """Relative error of the final read against the target."""
        return self.conductance_s / self.target_s - 1.0


def _check_target(target_s: float) -> None:
    if isinstance(target_s, bool) or not isinstance(target_s, (int, float, np.floating)):
        raise ConfigError(f"target {target_s!r} is not a number (S)", field="target_s")
    if math.isfinite(target_s) and target_s <= 0:
        raise ConfigError(
            f"target {target_s!r} S: a conductance target must be > 0 S (NaN: leave alone)",
            field="target_s",
        )
    if math.isinf(target_s):
        raise ConfigError(f"target {target_s!r} S is not finite", field="target_s")


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{value!r}: must be a finite number > 0", field=name)


class _Counted:
    """Reads and pulses of one device through an IO, counted."""

    def __init__(
        self, io: IO, row: int, col: int, bus: BusCounter | None, scheme: WriteScheme
    ) -> None:
        self.io, self.row, self.col, self.bus, self.scheme = io, row, col, bus, scheme
        self.pulses = self.reads = self.readings = 0
        self.max_v = 0.0
        self.floor_s = 0.0
        self.plc_s = 1.0 / line_frequency_hz(io.ops)
        self._bus0 = bus.round_trips if bus is not None else 0
        self.history: list[tuple[float, float]] = []

    def read(self, settings: ReadSettings) -> DeviceRead:
        r = self.io.read(self.row, self.col, settings)
        self.reads += 1
        self.readings += settings.averages
        self.floor_s += settings.averages * settings.nplc * self.plc_s
        self.history.append((0.0, r.conductance_s))
        return r

    def pulse(self, amplitude_v: float, width_s: float) -> None:
        self.io.pulse(self.row, self.col, amplitude_v, width_s, scheme=self.scheme)
        self.pulses += 1
        self.floor_s += width_s
        self.max_v = max(self.max_v, abs(amplitude_v))
        self.history.append((amplitude_v, math.nan))

    def round_trips(self) -> int:
        return self.bus.round_trips - self._bus0 if self.bus is not None else -1


# ---------------------------------------------------------------------------------------
# conventional baseline
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConventionalSettings:
    """The devices docs' calibration protocol (see the module docstring)."""

    set_ramp: Ramp = Ramp(0.5, 0.03, 2.0)
    reset_ramp: Ramp = Ramp(0.5, 0.03, 2.2)
    width_s: float = 1.1e-3
    tolerance_rel: float = 0.02
    max_pulses: int = 200
    scheme: WriteScheme = "v/2"
    read: ReadSettings = ReadSettings(read_v=0.2, averages=1, nplc=1.0)


def conventional(
    io: IO | ArrayOperations,
    row: int,
    col: int,
    target_s: float,
    settings: ConventionalSettings = ConventionalSettings(),
    *,
    bus: BusCounter | None = None,
) -> TuneResult:
    """Bring device (row, col) within ``settings.tolerance_rel`` of ``target_s`` (S) with the
    fixed ramp of the calibration protocol; ``skipped`` for a NaN target. Ramp maxima are
    capped at the station's write limit."""
    _check_target(target_s)
    _check_positive("tolerance_rel", settings.tolerance_rel)
    io = _as_io(io)
    dev = _Counted(io, row, col, bus, settings.scheme)
    if math.isnan(target_s):
        return TuneResult(row, col, target_s, math.nan, math.nan, 0, 0, 0, "skipped")
    cap = io.ops.limits.max_write_v
    tol = settings.tolerance_rel * target_s
    g = dev.read(settings.read).conductance_s
    polarity, amplitude = 0, 0.0
    moved = False
    g_first = g
    while abs(g - target_s) > tol and dev.pulses < settings.max_pulses:
        wanted = 1 if g < target_s else -1
        ramp = settings.set_ramp if wanted > 0 else settings.reset_ramp
        if wanted != polarity:  # first pulse, or an overshoot: restart the other ramp
            polarity, amplitude = wanted, ramp.start_v
        else:
            amplitude = amplitude + ramp.step_v
        amplitude = min(amplitude, ramp.max_v, cap)
        dev.pulse(polarity * amplitude, settings.width_s)
        g = dev.read(settings.read).conductance_s
        moved = moved or abs(g / g_first - 1) > 0.1
    within = abs(g - target_s) <= tol
    outcome: Outcome = "tuned" if within else ("failed" if moved else "stuck")
    result = TuneResult(
        row, col, target_s, g, math.nan, dev.pulses, dev.reads, dev.readings, outcome
    )
    result.round_trips = dev.round_trips()
    result.max_amplitude_v = dev.max_v
    result.floor_s = dev.floor_s
    result.history = dev.history
    return result


# ---------------------------------------------------------------------------------------
# adaptive write-verify
# ---------------------------------------------------------------------------------------
@dataclass
class ThresholdPrior:
    """Population prior of one chip's thresholds (V, magnitudes), lognormal: ``set_mean_v``
    / ``reset_mean_v`` with CV ``cv`` (defaults: the devices docs' published values). Give
    the same prior to every device of a chip and it learns the chip's distribution from the
    thresholds the tuner estimates (after ``learn_after`` devices)."""

    set_mean_v: float = 1.0
    reset_mean_v: float = 1.1
    cv: float = 0.25
    learn_after: int = 12
    seen: dict[int, list[float]] = field(default_factory=lambda: {1: [], -1: []})

    def observe(self, polarity: int, theta_v: float) -> None:
        if math.isfinite(theta_v) and theta_v > 0:
            self.seen[polarity].append(math.log(theta_v))

    def log_params(self, polarity: int) -> tuple[float, float]:
        """(mean, sd) of ln(threshold / 1 V)."""
        mean_v = self.set_mean_v if polarity > 0 else self.reset_mean_v
        sd = math.sqrt(math.log1p(self.cv**2))
        mu = math.log(mean_v) - sd * sd / 2
        logs = self.seen[polarity]
        if len(logs) >= self.learn_after:
            n = len(logs)
            w = n / (n + self.learn_after)  # shrink towards the published prior
            mu = w * float(np.mean(logs)) + (1 - w) * mu
            sd = max(w * float(np.std(logs, ddof=1)) + (1 - w) * sd, 0.05)
        return mu, sd

    def lower_bound_v(self, polarity: int, z: float) -> float:
        """Threshold quantile ``z`` standard deviations below the log-mean (V)."""
        mu, sd = self.log_params(polarity)
        return math.exp(mu - z * sd)


def onset_factor(v: Any, theta: Any, floor_fraction: float) -> Any:
    """The switching law's onset below the threshold: ``((|V| / theta - f) / (1 - f))^2``
    clipped to [0, 1] (no switching below ``f`` x theta, the full exponential law from the
    threshold up; docs/devices.md); floats or numpy arrays (NaN thresholds give NaN)."""
    x = (np.abs(v) / theta - floor_fraction) / (1.0 - floor_fraction)
    return np.clip(x, 0.0, 1.0) ** 2


def switching_change_ln(
    v: float, theta: float, scale: float, floor_fraction: float, slope_v: float
) -> float:
    """Expected |ln-change| of one pulse at ``v`` (V) on a device of threshold ``theta``:
    ``scale x onset x exp((|V| - theta) / v0)``, ``scale`` = L0 x width / 1 ms."""
    e = min((abs(v) - theta) / slope_v, 60.0)
    return float(scale * onset_factor(v, theta, floor_fraction) * math.exp(e))


def amplitude_for_change(
    change_ln: float, theta: float, scale: float, floor_fraction: float, slope_v: float
) -> float:
    """The amplitude (V) whose expected change is ``change_ln`` (> 0) on a device of
    threshold ``theta``, onset included (the inverse of :func:`switching_change_ln`)."""
    v_exp = theta + slope_v * math.log(change_ln / scale)
    if v_exp >= theta:
        return v_exp  # above the threshold the onset is complete
    lo, hi = max(v_exp, floor_fraction * theta), theta
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if switching_change_ln(mid, theta, scale, floor_fraction, slope_v) < change_ln:
            lo = mid
        else:
            hi = mid
    return hi


def threshold_from_change(
    change_ln: float, v: float, scale: float, floor_fraction: float, slope_v: float
) -> float:
    """The threshold (V) at which a pulse at ``v`` is expected to change ln G by
    ``change_ln`` (> 0), onset included."""
    v = abs(v)
    theta_exp = v - slope_v * math.log(change_ln / scale)
    if theta_exp <= v:
        return theta_exp
    lo, hi = v, v / floor_fraction if floor_fraction > 0 else theta_exp
    hi = min(hi, theta_exp)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if switching_change_ln(v, mid, scale, floor_fraction, slope_v) > change_ln:
            lo = mid
        else:
            hi = mid
    return lo


def threshold_sensitivity(v: float, theta: float, floor_fraction: float, slope_v: float) -> float:
    """|d ln(expected change) / d theta| (1/V) at ``v``, ``theta``: ``1 / v0`` plus the
    onset's share below the threshold (an observation there pins theta more tightly)."""
    x = (abs(v) / theta - floor_fraction) / (1.0 - floor_fraction)
    d = 1.0 / slope_v
    if 0.0 < x < 1.0:
        d += 2.0 * abs(v) / (theta * theta * (1.0 - floor_fraction) * x)
    return d


@dataclass(frozen=True)
class AdaptiveSettings:
    """Settings of :func:`adaptive` (units in the names; see the module docstring).

    ``set_ramp`` / ``reset_ramp``: the probing ramp's first amplitude floor (start), its
    smallest probing step and its maximum (capped at the station's write limit and, for
    half-select safety, at whatever the caller gives). ``switching_slope_v`` and
    ``cycle_to_cycle_cv``: the switching law's v0 and cycle-to-cycle spread.
    ``read_noise_rel`` / ``read_noise_abs_s``: prior of one 1 PLC read's noise (relative
    part and instrument part at 1 PLC), rescaled by the spread the averaged reads show.
    """

    tolerance_rel: float = 0.01
    max_pulses: int = 80
    width_s: float = 1e-3
    scheme: WriteScheme = "v/2"
    set_ramp: Ramp = Ramp(0.4, 0.08, 2.5)
    reset_ramp: Ramp = Ramp(0.4, 0.08, 2.5)
    read_v: float = 0.2
    read_scheme: Literal["track", "track-b"] = "track"
    current_limit_a: float = 1e-4
    switching_slope_v: float = 0.05
    cycle_to_cycle_cv: float = 0.3
    read_noise_rel: float = 0.002
    read_noise_abs_s: float = 2e-8
    #: Overshoot (ln) a probe may risk when the other polarity's threshold is known.
    recover_ln: float = 0.1
    #: Largest ln-change one pulse may aim at (a probe, threshold still unknown: less).
    max_change_ln: float = 2.0
    probe_change_ln: float = 1.0
    #: Overshoot safety: aim so that a change this many sigma larger stays in the band.
    overshoot_z: float = 1.0
    #: Detection limit of a change in standard deviations of the difference of two reads.
    detect_z: float = 3.0
    #: Accept when inside ``accept_band`` x the tolerance by this many standard errors.
    accept_z: float = 1.5
    accept_band: float = 0.5
    #: Averaged reads that confirm an accepted device (a telegraph check), and the least
    #: time (s, of integration) they span.
    verify_reads: int = 3
    verify_window_s: float = 0.2
    #: Prior lower quantile of the thresholds where probing starts (sigmas below the mean).
    probe_start_z: float = 2.0
    #: No switching below this fraction of a device's threshold (docs/devices.md): when
    #: the threshold is known (a profile's), no pulse goes below that floor (+2 %), where
    #: it could not move the device at all.
    floor_fraction: float = 0.5
    #: Consecutive pulses at the ramp maximum that together moved nothing detectable
    #: before that polarity is declared dead, and the change (ln) their reads resolve.
    stuck_pulses: int = 2
    cap_change_rel: float = 0.01
    #: Consecutive model-based pulses moving nothing where the model predicted a clear
    #: change, before the polarity probes again.
    model_nulls: int = 2
    #: A device whose reads never left its first read by more than this (ln) and by more
    #: than 2 x ``detect_z`` standard deviations is stuck.
    stuck_limit_rel: float = 0.05
    max_averages: int = 128
    #: Per-reading overhead used to choose NPLC (s).
    reading_overhead_s: float = 2e-3
    #: Averaged reads a telegraph check takes at most.
    telegraph_reads: int = 10
    #: One-sided approach: +1 (set only) or -1 (reset only) once the device is on that
    #: side of its target; needing the other polarity ends the call (``wrong_side``).
    #: 0: both polarities (the default).
    approach: int = 0
    #: A telegraph step (relative) known from an earlier call, 0 when none is: each read
    #: after a pulse is then one level, up to half the step from the device's level mean,
    #: so a step is aimed at the nearer end of what the read allows and the mean of the
    #: two levels is measured before the device is judged near its target.
    telegraph_rel: float = 0.0

    def check(self) -> None:
        _check_positive("tolerance_rel", self.tolerance_rel)
        _check_positive("width_s", self.width_s)
        _check_positive("switching_slope_v", self.switching_slope_v)
        for name, ramp in (("set_ramp", self.set_ramp), ("reset_ramp", self.reset_ramp)):
            for part in ("start_v", "step_v", "max_v"):
                _check_positive(f"{name}.{part}", getattr(ramp, part))
        if int(self.max_pulses) != self.max_pulses or self.max_pulses < 1:
            raise ConfigError(f"{self.max_pulses!r}: must be an integer >= 1", field="max_pulses")
        if self.approach not in (-1, 0, 1):
            raise ConfigError(f"{self.approach!r}: allowed -1, 0, 1", field="approach")
        if not 0.0 <= self.telegraph_rel <= TELEGRAPH_MAX_REL:
            raise ConfigError(
                f"{self.telegraph_rel!r}: allowed 0-{TELEGRAPH_MAX_REL}", field="telegraph_rel"
            )


@dataclass
class _Polarity:
    sign: int
    l0: float
    cap_v: float
    theta_lo: float
    theta: float = math.nan
    theta_w: float = 0.0  # sum of weights (1 / V^2)
    moved: bool = False
    nulls: int = 0  # consecutive pulses of this polarity that moved nothing detectable
    cap_pulses: int = 0  # consecutive pulses at the maximum amplitude ...
    cap_ref: tuple[float, float] | None = None  # ... and the read before the first of them
    last_v: float = 0.0
    floor_v: float = 0.0  # the device's switching floor (V) when its threshold is known

    def theta_sd(self, v0: float) -> float:
        return 1.0 / math.sqrt(self.theta_w) if self.theta_w > 0 else math.inf


class _Adaptive:
    def __init__(
        self,
        dev: _Counted,
        target_s: float,
        s: AdaptiveSettings,
        limits_cap_v: float,
        prior: ThresholdPrior,
        seeds: dict[int, float | None],
    ) -> None:
        self.dev, self.t, self.s = dev, target_s, s
        self.prior = prior
        self.noise_scale = 1.0
        self._noise_obs: list[float] = []
        self.c2c = math.sqrt(math.log1p(s.cycle_to_cycle_cv**2))
        self.pol: dict[int, _Polarity] = {}
        for sign, ramp, l0 in ((1, s.set_ramp, L0_SET), (-1, s.reset_ramp, L0_RESET)):
            seed = seeds.get(sign)
            if seed is not None and math.isfinite(seed) and seed > 0:
                lo = seed - 3 * 0.02  # a profile's threshold, measured to a few tens of mV
            else:
                lo = prior.lower_bound_v(sign, s.probe_start_z)
            lo = max(lo, ramp.start_v)
            self.pol[sign] = _Polarity(sign, l0, min(ramp.max_v, limits_cap_v), lo)
            if seed is not None and math.isfinite(seed) and seed > 0:
                self.pol[sign].theta = seed
                self.pol[sign].theta_w = 1.0 / 0.03**2
                self.pol[sign].floor_v = s.floor_fraction * seed * 1.02
        self.telegraph_rel = float(s.telegraph_rel)

    # -- reads ----------------------------------------------------------------------------
    def sigma1_rel(self, g: float, nplc: float) -> float:
        s = self.s
        g = max(g, 1e-9)
        return self.noise_scale * (s.read_noise_rel + s.read_noise_abs_s / (g * math.sqrt(nplc)))

    def read_plan(self, g: float, sigma_rel: float) -> tuple[int, float]:
        """(averages, nplc) with the least instrument time whose standard error is at most
        ``sigma_rel`` (or the most precise read allowed)."""
        s = self.s
        best: tuple[float, int, float] | None = None
        fallback: tuple[float, int, float] | None = None
        for nplc in NPLC_CHOICES:
            n = math.ceil((self.sigma1_rel(g, nplc) / sigma_rel) ** 2)
            cost = (nplc * self.dev.plc_s + s.reading_overhead_s) * max(n, 1)
            if n <= s.max_averages and (best is None or cost < best[0]):
                best = (cost, max(n, 1), nplc)
            reached = self.sigma1_rel(g, nplc) / math.sqrt(s.max_averages)
            if fallback is None or reached < fallback[0]:
                fallback = (reached, s.max_averages, nplc)
        chosen = best if best is not None else fallback
        assert chosen is not None
        return chosen[1], chosen[2]

    def measure(self, g_guess: float, sigma_rel: float, min_n: int = 1) -> tuple[float, float]:
        """One averaged read: (conductance S, its relative standard error)."""
        n, nplc = self.read_plan(g_guess, sigma_rel)
        n = min(max(n, min_n), self.s.max_averages)
        settings = ReadSettings(
            read_v=self.s.read_v,
            scheme=self.s.read_scheme,
            averages=n,
            nplc=nplc,
            current_limit_a=self.s.current_limit_a,
        )
        r = self.dev.read(settings)
        g = max(r.conductance_s, 1e-12)
        model = self.sigma1_rel(g, nplc) / self.noise_scale
        if n >= 4 and math.isfinite(r.stderr_s):
            # learn the noise level from the spread the averaged reads show
            self._noise_obs.append((r.stderr_s * math.sqrt(n) / g) / model)
            self.noise_scale = float(np.clip(np.median(self._noise_obs[-15:]), 0.5, 4.0))
        se = self.sigma1_rel(g, nplc) / math.sqrt(n)
        if n >= 4 and math.isfinite(r.stderr_s):
            se = max(se, r.stderr_s / g)
        return g, se

    # -- the switching model ----------------------------------------------------------------
    def rate_scale(self, p: _Polarity) -> float:
        return p.l0 * self.s.width_s / THRESHOLD_PULSE_S

    def aim(self, distance: float, theta_sd: float) -> float:
        """ln-change to aim at for a ``distance`` (> 0, ln) to the target."""
        s = self.s
        v0 = s.switching_slope_v
        spread = math.hypot(self.c2c, theta_sd / v0 if math.isfinite(theta_sd) else 0.0)
        band = s.tolerance_rel * s.accept_band * 0.6
        aim = min(distance, (distance + band) * math.exp(-s.overshoot_z * spread))
        return min(aim, s.max_change_ln)

    def amplitude(self, p: _Polarity, distance: float) -> float:
        s = self.s
        v0 = s.switching_slope_v
        f = s.floor_fraction
        if math.isfinite(p.theta):
            want = self.aim(distance, p.theta_sd(v0))
            v = amplitude_for_change(want, p.theta, self.rate_scale(p), f, v0)
            v = max(v, min(p.theta_lo, p.theta) - 0.1)
        else:
            # probing: the largest pulse that cannot overshoot if the threshold sat at its
            # lower bound, and at least the minimum probing step above the last probe. When
            # the other polarity is learned an overshoot is cheap to undo, so the probe may
            # overshoot by up to ``recover_ln``.
            other = self.pol[-p.sign]
            if math.isfinite(other.theta) and other.moved:
                want = self.aim(distance + s.recover_ln, 0.0)
            else:
                want = self.aim(distance, 0.0)
            # the lower bound may itself be too high (a threshold below the prior's low
            # quantile): a probe aims at most ``probe_change_ln``
            want = min(want, s.probe_change_ln)
            v = amplitude_for_change(want, p.theta_lo, self.rate_scale(p), f, v0)
            ramp = s.set_ramp if p.sign > 0 else s.reset_ramp
            if p.last_v > 0:
                v = max(v, p.last_v + ramp.step_v)
            v = max(v, ramp.start_v)
        # below its switching floor a pulse cannot move the device at all (a threshold
        # learned too low from telegraph noise or relaxation would ask for one)
        v = max(v, p.floor_v)
        return float(min(v, p.cap_v))

    def learn(self, p: _Polarity, v: float, change: float, sd: float) -> None:
        """Update polarity ``p`` from a pulse at ``v`` (V) that changed ln G by ``change``
        (signed along the polarity) with standard deviation ``sd``."""
        s = self.s
        v0 = s.switching_slope_v
        scale = self.rate_scale(p)
        limit = s.detect_z * sd
        if change > limit:
            p.moved = True
            p.nulls = 0
            obs = threshold_from_change(change, v, scale, s.floor_fraction, v0)
            slope = threshold_sensitivity(v, obs, s.floor_fraction, v0)
            var = (self.c2c**2 + (sd / change) ** 2) / slope**2
            w = 1.0 / var
            if math.isfinite(p.theta):
                keep = 0.6 * p.theta_w  # forget older observations (state dependence)
                p.theta = (p.theta * keep + obs * w) / (keep + w)
                p.theta_w = keep + w
            else:
                p.theta, p.theta_w = obs, w
            p.theta_lo = min(p.theta_lo, p.theta)
        else:
            bound = threshold_from_change(max(limit, change), v, scale, s.floor_fraction, v0)
            # a null counts against the model only where it predicted a clear change
            expected = (
                switching_change_ln(v, p.theta, scale, s.floor_fraction, v0)
                if math.isfinite(p.theta)
                else math.inf
            )
            if expected > 2 * limit:
                p.nulls += 1
            # a low cycle-to-cycle draw also gives a null: the bound is judged with it
            c2c_v = self.c2c / threshold_sensitivity(v, max(bound, 1e-3), s.floor_fraction, v0)
            if math.isfinite(p.theta) and (
                bound > p.theta + 2 * math.hypot(p.theta_sd(v0), c2c_v) or p.nulls >= s.model_nulls
            ):
                # the estimate was wrong (a change that was noise, or a threshold that
                # moved): back to probing from what the nulls proved; the probing ramp's
                # least step does not apply to a polarity that moved the device before
                # (from a model-based pulse it would multiply the next change by
                # exp(step / v0))
                p.theta, p.theta_w = math.nan, 0.0
                p.theta_lo = bound
                if p.moved:
                    p.last_v = 0.0
            elif math.isfinite(p.theta):
                if bound > p.theta:
                    p.theta = bound
                    p.theta_w = min(p.theta_w, 1.0 / 0.03**2)
            else:
                p.theta_lo = max(p.theta_lo, bound)

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> TuneResult:
        s, t, dev = self.s, self.t, self.dev
        tol = s.tolerance_rel * s.accept_band
        fine = 0.3 * tol
        # the first read is averaged: its spread calibrates the noise model from the start
        g, se = self.measure(t, 0.05, min_n=8)
        g_first, se_first = g, se
        moved = False
        ambiguous_reads = 0
        wrong_side = False
        # whether g is a telegraph device's level mean (a read after a pulse is one level)
        centred = False
        centrings = 0
        outcome: Outcome | None = None
        while outcome is None:
            err = g / t - 1.0
            half_step = self.telegraph_rel / 2 if not centred else 0.0
            if half_step and abs(err) - s.accept_z * se <= tol + half_step:
                # one level of a telegraph device whose mean may be inside the band:
                # measure the level mean before anything else is decided
                centred = True
                if centrings < TELEGRAPH_CENTRINGS:
                    centrings += 1
                    g, se, ok = self.verify(g, se)
                    if ok:
                        outcome = "tuned"
                        break
                continue
            if abs(err) + s.accept_z * se <= tol:
                g2, se2, ok = self.verify(g, se)
                g, se = g2, se2
                if ok:
                    outcome = "tuned"
                    break
                continue
            if abs(err) - s.accept_z * se <= tol and se > fine and ambiguous_reads < 2:
                # undecided: pool a more precise read before pulsing
                ambiguous_reads += 1
                g_new, se_new = self.measure(g, fine)
                g, se = _pool(g, se, g_new, se_new)
                continue
            ambiguous_reads = 0
            sign = 1 if g < t else -1
            if s.approach and sign != s.approach:
                outcome, wrong_side = "failed", True
                break
            p = self.pol[sign]
            if p.cap_pulses >= s.stuck_pulses:
                # dead in this direction; stuck if nothing ever moved it
                outcome = "failed" if moved else "stuck"
                break
            if dev.pulses >= s.max_pulses:
                outcome = "failed"
                break
            # a level read: the level mean may be half a step nearer the target
            distance = max(abs(math.log(t / g)) - half_step, 0.3 * tol)
            v = self.amplitude(p, distance)
            dev.pulse(sign * v, s.width_s)
            centred = False
            p.last_v = max(p.last_v, v) if not math.isfinite(p.theta) else v
            want = self.aim(distance, p.theta_sd(s.switching_slope_v))
            remaining = abs(distance - want)
            # a read precise enough to see the aimed change and to judge the stop rule,
            # never more precise than the stop rule needs
            sigma = max(fine, min(0.15 * remaining, want / (2 * s.detect_z), 0.05))
            at_cap = v >= p.cap_v - 1e-9
            if at_cap:
                # judging a pulse at the maximum needs a read that sees a slow device move
                sigma = min(sigma, s.cap_change_rel / (2 * s.detect_z))
                if p.cap_ref is None:
                    p.cap_ref = (g, se)
            else:
                p.cap_ref, p.cap_pulses = None, 0
            g_new, se_new = self.measure(g, sigma)
            change = sign * math.log(g_new / g)
            # a telegraph device's reads differ by its level as well (two-point, +-step/2)
            sd = math.hypot(se, se_new, self.telegraph_rel / 2)
            if s.detect_z * sd < abs(change) < 2 * s.detect_z * sd:
                # a marginal change: confirm it with a second read before learning from it
                g_new, se_new = _pool(g_new, se_new, *self.measure(g_new, se_new))
                change = sign * math.log(g_new / g)
                sd = math.hypot(se, se_new, self.telegraph_rel / 2)
            self.learn(p, v, change, sd)
            if p.cap_ref is not None:
                g_ref, se_ref = p.cap_ref
                if sign * math.log(g_new / g_ref) > s.detect_z * math.hypot(se_ref, se_new):
                    p.cap_ref, p.cap_pulses = (g_new, se_new), 0  # it moves at the maximum
                else:
                    p.cap_pulses += 1
            g, se = g_new, se_new
            limit = max(s.stuck_limit_rel, 2 * s.detect_z * math.hypot(se_first, se))
            moved = moved or abs(math.log(g / g_first)) > limit
        for sign, p in self.pol.items():
            if math.isfinite(p.theta) and p.moved:
                self.prior.observe(sign, p.theta)
        result = TuneResult(
            dev.row,
            dev.col,
            t,
            g,
            se * g,
            dev.pulses,
            dev.reads,
            dev.readings,
            outcome,
            round_trips=dev.round_trips(),
            set_threshold_v=self.pol[1].theta if self.pol[1].moved else math.nan,
            reset_threshold_v=-self.pol[-1].theta if self.pol[-1].moved else math.nan,
            telegraph_rel=self.telegraph_rel,
            max_amplitude_v=dev.max_v,
            floor_s=dev.floor_s,
            wrong_side=wrong_side,
        )
        result.history = dev.history
        return result

    def verify(self, g: float, se: float) -> tuple[float, float, bool]:
        """Confirm an accepted read with ``verify_reads`` more, spread in time; reads that
        disagree beyond their standard errors start the telegraph check (up to
        ``telegraph_reads`` reads split into two levels). Returns the pooled (or level-mean)
        conductance, its relative standard error and whether the device is inside the
        accepted band by the stop rule."""
        s, t = self.s, self.t
        tol = s.tolerance_rel * s.accept_band
        sub = max(se, 0.3 * tol)
        # the confirming reads span at least ``verify_window_s`` so that a telegraph level
        # with a dwell time up to about that long is seen to change
        per_read_s = s.verify_window_s / max(s.verify_reads - 1, 1)
        min_n = math.ceil(per_read_s / self.dev.plc_s)
        reads = [(g, se)] + [self.measure(g, sub, min_n) for _ in range(s.verify_reads - 1)]

        def consistent(rs: list[tuple[float, float]]) -> bool:
            v = np.array([r[0] for r in rs])
            e = np.array([r[1] * r[0] for r in rs])
            lo, hi = int(v.argmin()), int(v.argmax())
            return bool(v[hi] - v[lo] <= s.detect_z * math.hypot(e[lo], e[hi]))

        if consistent(reads) and not self.telegraph_rel:
            gp, sep = reads[0]
            for gi, sei in reads[1:]:
                gp, sep = _pool(gp, sep, gi, sei)
            return gp, sep, abs(gp / t - 1) + s.accept_z * sep <= tol
        # Telegraph (or drift): a batch of reads spread in time, split into two levels.
        while len(reads) < s.telegraph_reads:
            reads.append(self.measure(g, sub, min_n))
        values = np.array([r[0] for r in reads])
        errs = np.array([r[1] for r in reads]) * values
        gm, sem, step = level_mean(values, errs, s.detect_z)
        if step > 0:
            self.telegraph_rel = step
        return gm, sem, abs(gm / t - 1) + s.accept_z * sem <= tol


def level_mean(values: Any, errs: Any, detect_z: float = 3.0) -> tuple[float, float, float]:
    """A telegraph device's conductance from averaged reads spread in time (S, their
    standard errors in S): (the mean of the two level means, its relative standard error,
    the step between the levels relative to it) when the reads split into two levels
    beyond ``detect_z`` standard deviations; (their mean, its relative standard error, 0)
    when they do not."""
    values = np.asarray(values, dtype=float)
    errs = np.asarray(errs, dtype=float)
    lo, hi = float(values.min()), float(values.max())
    mid = (lo + hi) / 2
    low, high = values[values < mid], values[values >= mid]
    spread = float(np.sqrt(np.mean(errs**2)))
    if low.size and high.size and hi - lo > detect_z * spread * math.sqrt(2):
        g_mid = (float(low.mean()) + float(high.mean())) / 2
        se_mid = float(spread / g_mid / math.sqrt(min(low.size, high.size)))
        return g_mid, se_mid, float((high.mean() - low.mean()) / g_mid)
    gm = float(values.mean())
    sem = max(float(values.std(ddof=1)) if values.size > 1 else 0.0, spread)
    return gm, sem / math.sqrt(values.size) / gm, 0.0


def _pool(g1: float, se1: float, g2: float, se2: float) -> tuple[float, float]:
    """Inverse-variance mean of two reads (relative standard errors)."""
    w1, w2 = 1.0 / max(se1, 1e-9) ** 2, 1.0 / max(se2, 1e-9) ** 2
    g = (g1 * w1 + g2 * w2) / (w1 + w2)
    return g, 1.0 / math.sqrt(w1 + w2)


def adaptive(
    io: IO | ArrayOperations,
    row: int,
    col: int,
    target_s: float,
    settings: AdaptiveSettings = AdaptiveSettings(),
    *,
    set_threshold_v: float | None = None,
    reset_threshold_v: float | None = None,
    prior: ThresholdPrior | None = None,
    bus: BusCounter | None = None,
) -> TuneResult:
    """Bring device (row, col) within ``settings.tolerance_rel`` of ``target_s`` (S) with the
    adaptive write-verify (module docstring); ``skipped`` for a NaN target.

    ``set_threshold_v`` / ``reset_threshold_v`` (V; the reset one negative or a magnitude):
    the device's thresholds from a chip profile, seeding the model. ``prior``: the chip's
    population prior, shared across its devices so it learns the chip (a fresh one with
    the published values when None). ``bus`` counts bus round trips.
    """
    _check_target(target_s)
    settings.check()
    io = _as_io(io)
    if math.isnan(target_s):
        return TuneResult(row, col, target_s, math.nan, math.nan, 0, 0, 0, "skipped")
    dev = _Counted(io, row, col, bus, settings.scheme)
    seeds: dict[int, float | None] = {
        1: set_threshold_v,
        -1: abs(reset_threshold_v) if reset_threshold_v is not None else None,
    }
    tuner = _Adaptive(
        dev, float(target_s), settings, io.ops.limits.max_write_v, prior or ThresholdPrior(), seeds
    )
    return tuner.run()
