"""Array programming: the ``tune`` sweep brings every device of a passive crossbar to its
target conductance, judged by a final verification read of the whole array.

Why an array is not a loop over devices. In a passive crossbar every write pulse also
biases the unselected devices: under V/3 the half-selected see +V/3 and every other device
-V/3. By the devices docs' switching law a device does not move at all while
``|V| < f Vth`` (``f`` the switching floor fraction, 0.5) and moves at
``exp((|V| - Vth) / v0)`` above it. So a pulse of amplitude ``A`` cannot disturb a device
whose smaller threshold ``m = min(Vset, |Vreset|)`` exceeds ``A / (3 f)``, and it *pushes*
every device of smaller ``m`` in that device's smaller-threshold polarity. The tuner
(``algorithm="adaptive"``, the per-device :func:`~nvmlab.tuning.writeverify.adaptive`
under V/3) is built on that (docs/tuning.md):

1. **survey**: one averaged read of every device with a target, and the *order*:
   descending ``m`` from the chip profile's thresholds (the population prior without
   one), stored per device as ``tune_rank``;
2. **prepark**: every device goes ``PREPARK_LN`` beyond its target to its *approach
   side* (below it when its set threshold is the smaller, so that it will approach its
   target from below with set pulses; above when its reset threshold is), in its
   larger-threshold polarity, while nothing is tuned yet; up to ``PREPARK_ROUNDS`` rounds
   re-park the devices that the others' pulses pushed back to within ``PREPARK_KEEP_LN``
   of their targets;
3. **tune-K** (groups of ``group`` devices in the order): each device is *parked* just in
   time (once the cursor reaches ``JIT_RATIO`` x its ``m``: ``COARSE_MARGIN`` short of
   its target) and then approached in its smaller-threshold polarity only, every pulse
   under the cap ``cap_safety x 3 f x`` the smallest ``m`` of the devices parked or tuned
   so far: they see at most ``cap_safety x f x m`` (1.35 x their switching floor, 0.68
   x ``m``), where the switching law's onset gives them less than 1e-4 (ln G) per 1 ms
   pulse (the settle re-reads them all the same), and the device's own approach fits
   under the cap because its ``m`` is the smallest so far. A cap right at their floor
   (0.93 x, the first design) left the device its own threshold + 7 % to move with,
   so only 1 ms pulses fitted, and those pushed the devices still to come (the smallest
   thresholds) by ln 1-3 over a 64 x 64 run. The larger-threshold polarity is only
   used under the same cap (longer pulses lower the amplitude a step needs by
   ``v0 ln 10`` = 0.115 V per decade of width); a device that needs more is left
   (``deferred`` / ``failed``) rather than push everything tuned before; one past its
   target but within ``WRONG_SIDE_KEEP`` x the tolerance is kept;
4. **repair-P-K**: up to ``passes`` - 1 passes, again in the order, each device read at
   its turn and approached again when beyond ``verify_band`` x the tolerance (or not yet
   tuned), under the cap of its own ``m`` (every device it may push comes later in the
   pass and is read then); a pass that repaired nothing ends the repairs;
5. **final**: the final verification read of every device with a target
   (``final_averages`` readings at 1 PLC), which alone decides each device's outcome:
   ``tuned`` (within the tolerance by that read), ``failed``, ``stuck`` (no pulse ever
   moved it, reported within a bounded number of pulses: the per-device tuner's stuck
   rule) or ``skipped`` (NaN target, or stuck by the profile's defect map).

**Pulse width and pushes.** Every move takes the shortest width of ``WIDTHS_S`` (1 us to
100 ms) whose step fits under its cap: a device's rate goes as ``w exp(V / v0)`` and a
device under ``V / 3`` moves as ``w exp(V / (3 v0))``, so for the same step a pulse ``k``
times shorter pushes the others ``k^(2/3)`` times less. And no pulse may push any other
device (one not tuned yet included) by more than ``PUSH_BUDGET_LN``, predicted from the
known thresholds: a long pulse at the cap, stepping a device back, can push the devices of
smaller threshold by tenths of ln G at once; such a move is not made (the device is
deferred to the repair passes, or left failed). A move that must be made all the same (a
device's own parking) takes the shortest width that fits, the least push. Pre-parking
has its own budget (``PREPARK_PUSH_BUDGET_LN``); the moves over it are made first, before
any other device is pre-parked, and never again.

Relaxation (log-time drift back after programming, ~0.05 %/decade) is accounted for by
accepting inside half the tolerance and by the repair passes.

Pairs (weights mapped by :mod:`nvmlab.tuning.targets`): when a device of a pair is stuck,
its partner is re-aimed so that the pair keeps its weight where the window allows.

``algorithm="conventional"``: the baseline, the devices docs' calibration protocol
(:func:`~nvmlab.tuning.writeverify.conventional`, V/2) on every device once in row order,
then the same final verification read.

Storage: every pulse and read goes to the run's database through the sweep context; each
unit is atomic and the run resumes at the first unit not completed (what the tuner
learned is stored as per-device parameters ``tune_*`` and read back from the run chain).
The outcome of every device is stored with :meth:`RecordWriter.add_tuning_outcome`.

Measured (truth, profile with the thresholds +-0.02 V, uniform targets; docs/tuning.md):
default physics 99.4-99.9 % within 1 % on 32 x 32 (seeds 0-3) and 99.1 % on 64 x 64
(seed 0) at 14 pulses per device (``nvmlab bench --only tuning``, from the
characterization's own profile: 98.9 %); the harsher chip (threshold CV 35 %, twice the
noise) 94-96 % on 32 x 32 at 17. Without a profile: about 69 % on 16 x 16.

Units: V, S, s.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nvmlab.characterization.states import Ramp
from nvmlab.characterization.sweep import (
    ProfileUpdate,
    Sweep,
    SweepContext,
    SweepUnit,
    register_sweep,
)
from nvmlab.errors import ConfigError
from nvmlab.instruments.arrays import ReadSettings
from nvmlab.steps import Param
from nvmlab.tuning.targets import TargetSet, load_target_set
from nvmlab.tuning.writeverify import (
    L0_SET,
    TELEGRAPH_MAX_REL,
    THRESHOLD_PULSE_S,
    AdaptiveSettings,
    BusCounter,
    ConventionalSettings,
    ThresholdPrior,
    TuneResult,
    adaptive,
    conventional,
    level_mean,
    line_frequency_hz,
    onset_factor,
)

if TYPE_CHECKING:
    from nvmlab.storage.inventory import RegisteredChip
    from nvmlab.storage.profile import ChipProfile

__all__ = ["TuneSweep", "STATUS", "OUTCOMES"]

#: Per-device status codes stored as the parameter ``tune_status``.
STATUS = {
    "pending": 0, "tuned": 1, "failed": 2, "stuck": 3, "deferred": 4, "skipped": 5, "coarse": 6,
}  # fmt: skip
#: Outcomes reported per device.
OUTCOMES = ("tuned", "failed", "stuck", "skipped")
#: Pulse widths the tuner chooses from (s), shortest first: each move takes the shortest
#: whose step fits under its amplitude cap. By the switching law a device's rate is
#: ``w exp(V / v0)`` and a device under ``V / 3`` moves at ``w exp(V / (3 v0))``: for the
#: same step, a pulse ``k`` times shorter (``v0 ln k`` higher) pushes the others
#: ``k^(2/3)`` times less (1 us instead of 1 ms: 100 x less).
WIDTHS_S = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
#: The width at which the switching law's threshold is defined (s), the tuner's default;
#: the law's slope (V per e-fold of rate) and the threshold pulse's change (ln G): the
#: per-device tuner's.
THRESHOLD_WIDTH_S = THRESHOLD_PULSE_S
SLOPE_V = AdaptiveSettings.switching_slope_v
THRESHOLD_STEP_LN = L0_SET
#: Headroom (V) a chosen width leaves under the cap for the step it was chosen for.
WIDTH_MARGIN_V = 0.05
#: Largest push (ln G) one pulse may give any other device of the array by the switching
#: law and the known thresholds (a device not yet tuned included): a move that needs more
#: (a long pulse at the cap, stepping a device back) is not made.
PUSH_BUDGET_LN = 0.002
#: Quantile of the known thresholds taken for a device's unknown one (disturb caps).
UNKNOWN_QUANTILE = 0.25
#: Parking: a device is parked ``COARSE_MARGIN`` (relative) short of its target on its
#: approach side, within ``COARSE_TOL`` (the adaptive tuner accepts inside half of it),
#: once the cursor reaches ``JIT_RATIO`` x its ``m``; a capped parking call spends at most
#: ``CAPPED_MAX_PULSES`` pulses and aims ``COARSE_OVERSHOOT_Z`` spreads short, or
#: ``COARSE_OVERSHOOT_Z_UNSAFE`` where the way back does not fit under the cap (an
#: overshoot past the target is then for good: on 32 x 32 most of what still failed).
COARSE_MARGIN = 0.025
COARSE_TOL = 0.04
JIT_RATIO = 1.3
CAPPED_MAX_PULSES = 24
COARSE_OVERSHOOT_Z = 2.0
COARSE_OVERSHOOT_Z_UNSAFE = 3.0
#: Pre-parking: a device is moved ``PREPARK_LN`` (ln G) beyond its target on its approach
#: side, within ``PREPARK_WINDOW_S`` (S); the rounds, and how far (ln) short of its target
#: a pre-parked device must stay.
PREPARK_WINDOW_S = (3e-6, 200e-6)
PREPARK_LN = 1.2
PREPARK_ROUNDS = 3
PREPARK_KEEP_LN = 0.6
#: Largest push (ln G) one pre-parking pulse may give any other device, predicted like
#: ``PUSH_BUDGET_LN``; a device whose move needs more (one threshold near the station's
#: limit: 10-100 ms pulses at the limit, pushing the devices of the smallest thresholds by
#: ln 1-5 each) is left where it is.
PREPARK_PUSH_BUDGET_LN = 0.01
#: How far (ln G) beyond its target a device is pre-parked when its move is over that
#: budget: such moves come first, and every pulse of theirs pushes the devices of the
#: smallest thresholds hard (one 1 ms pulse at 2.36 V moved a 0.57 V device by ln 1.4),
#: so they move no farther than a device of their (large) ``m``, tuned early, needs.
HEAVY_PREPARK_LN = 0.3
#: Largest push (ln G) one pulse of such a move may give another device whose own move is
#: over the budget too (it cannot be parked again without pushing the rest): a move that
#: needs more (a threshold near the station's limit: long pulses at the limit) is not
#: made. The rest are parked after these moves.
HEAVY_PUSH_BUDGET_LN = 0.02
#: Learned thresholds outside this range (V) are ignored.
PLAUSIBLE_THRESHOLD_V = (0.2, 3.0)
#: Overshoot safety of an approach (standard deviations of the predicted change), and
#: where a step back would not fit under the cap (an overshoot is costly there).
FINE_OVERSHOOT_Z = 1.5
FINE_OVERSHOOT_Z_UNSAFE = 2.5
#: A device past its target but within this x the tolerance (by its averaged read, two
#: standard errors included) is kept rather than stepped back.
WRONG_SIDE_KEEP = 0.6
#: Approaches per call (each after the first starts with a step back).
FINE_TRIES = 3
#: Per-device tuner calls after which a failed device is left alone.
MAX_ATTEMPTS = 12
#: Settle rounds before the final verification read.
FINAL_SETTLE_ROUNDS = 6
#: Averaged reads, spread in time, that measure a telegraph device's level mean where one
#: read decides (a re-verification, the final read): a device known to have a step, or
#: one read out of the band by no more than half the largest step (it may only show the
#: other level now).
LEVEL_READS = 8
_PARAMS = (
    "tune_target_s",
    "tune_set_threshold_v",
    "tune_reset_threshold_v",
    "tune_status",
    "tune_g_s",
    "tune_pulses",
    "tune_reads",
    "tune_round_trips",
    "tune_floor_s",
    "tune_attempts",
    "tune_initial_s",
    "tune_final_s",
    "tune_cap_v",
    "tune_side",
    "tune_rank",
    "tune_telegraph_rel",
)


@dataclass
class _State:
    """What the run knows, rebuilt from the stored parameters on resume."""

    targets: np.ndarray
    set_v: np.ndarray  # learned set thresholds (V, magnitudes; NaN unknown)
    reset_v: np.ndarray
    status: np.ndarray
    g: np.ndarray
    pulses: np.ndarray
    reads: np.ndarray
    trips: np.ndarray
    floor: np.ndarray
    attempts: np.ndarray
    initial: np.ndarray
    final: np.ndarray
    capv: np.ndarray  # the largest amplitude cap a device was tuned with (V)
    side: np.ndarray  # approach side: +1 from below (set), -1 from above (reset), 0 unset
    rank: np.ndarray  # place in the fine order (NaN before the coarse check)
    telegraph: np.ndarray  # telegraph step seen (relative; 0 none)
    tset: TargetSet
    profile_set: np.ndarray
    profile_reset: np.ndarray
    protect_v: float = math.inf  # smallest threshold among the devices tuned so far (V)
    max_width_s: float = WIDTHS_S[-1]  # the station's longest pulse (s)
    floor_fraction: float = 0.5  # no switching below this x threshold (the run's parameter)


def _profile_arrays(profile: ChipProfile | None, shape: tuple[int, int]) -> tuple[Any, Any, Any]:
    nan = np.full(shape, np.nan)
    if profile is None or (profile.rows, profile.cols) != shape:
        return nan, nan.copy(), np.full(shape, -1)
    s = profile.set_threshold_v if profile.set_threshold_v is not None else nan
    r = np.abs(profile.reset_threshold_v) if profile.reset_threshold_v is not None else nan
    d = profile.defect_class if profile.defect_class is not None else np.full(shape, -1)
    return np.asarray(s, float), np.asarray(r, float), np.asarray(d)


@register_sweep
class TuneSweep(Sweep):
    kind = "tune"
    summary = "program an array to target conductances (write-verify, disturb-aware)"
    description = __doc__ or ""
    params = (
        Param("targets", str, None, help="target table (S), .npy or .csv, rows x cols", path="in"),
        Param("weights", str, None, help="weight table, rows x cols/2 (pairs G+ - G-)", path="in"),
        Param("window", list, None, "S", 1e-6, 300e-6, help="pair window g_lo,g_hi (S)"),
        Param("algorithm", str, "adaptive", choices=("adaptive", "conventional")),
        Param("tolerance", float, 0.01, "", 0.001, 0.2, help="relative tolerance"),
        Param("passes", int, 4, "", 1, 20, help="tuning passes (first + repair passes)"),
        Param("group", int, 8, "", 1, 4096, help="devices per unit of the first pass"),
        Param(
            "floor_fraction",
            float,
            0.5,
            "",
            0.1,
            0.95,
            help="no switching below this x threshold (devices docs)",
        ),  # fmt: skip
        Param(
            "cap_safety",
            float,
            1.35,
            "",
            0.5,
            1.5,
            help="amplitude cap as a multiple of 3 f m (the V/3 switching floor of the "
            "devices tuned so far)",
        ),  # fmt: skip
        Param(
            "verify_band",
            float,
            0.7,
            "",
            0.3,
            1.0,
            help="repair when the verification read is beyond this x the tolerance",
        ),  # fmt: skip
        Param(
            "settle_rounds",
            int,
            2,
            "",
            0,
            10,
            help="re-verify / repair rounds of possible victims after each unit",
        ),  # fmt: skip
        Param("final_averages", int, 16, "", 1, 256, help="readings of the final read"),
    )

    # -- checks and plan ----------------------------------------------------------------
    def check(self, params: dict[str, Any], chip: RegisteredChip, station: Any) -> None:
        limits = getattr(station, "limits", None)
        load_target_set(params, chip.rows, chip.cols, max_current_a=_max_current(limits))

    def plan(
        self, params: dict[str, Any], chip: RegisteredChip, rng: np.random.Generator,
        profile: ChipProfile | None,
    ) -> list[SweepUnit]:  # fmt: skip
        tset = load_target_set(params, chip.rows, chip.cols)
        n = int(np.isfinite(tset.targets_s).sum())
        group = int(params["group"])
        groups = range((n + group - 1) // group)
        units = [SweepUnit("survey")]
        if params["algorithm"] != "adaptive":
            units += [SweepUnit(f"pass-1-{k:05d}", info={"k": k}) for k in groups]
            return units + [SweepUnit("final")]
        units.append(SweepUnit("prepark"))
        units += [SweepUnit(f"tune-{k:05d}", info={"k": k}) for k in groups]
        for p in range(2, int(params["passes"]) + 1):
            units += [SweepUnit(f"repair-{p}-{k:05d}", info={"pass": p, "k": k}) for k in groups]
        units.append(SweepUnit("final"))
        return units

    def estimate_s(self, params: dict[str, Any], chip: RegisteredChip | None) -> float | None:
        if chip is None:
            return None
        return chip.rows * chip.cols * 1.5

    # -- state ----------------------------------------------------------------------------
    def _state(self, ctx: SweepContext) -> _State:
        state: _State | None = getattr(ctx, "_tune_state", None)
        if state is not None:
            return state
        rows, cols = ctx.chip.rows, ctx.chip.cols
        tset = load_target_set(ctx.params, rows, cols)
        stored = ctx.chain_parameters(_PARAMS)
        pset, preset, defect = _profile_arrays(ctx.profile, (rows, cols))
        targets = tset.targets_s.copy()
        retarget = stored["tune_target_s"]
        targets[np.isfinite(retarget)] = retarget[np.isfinite(retarget)]
        status = np.where(np.isfinite(stored["tune_status"]), stored["tune_status"], 0).astype(int)
        known_stuck = np.isin(defect, (1, 2)) & (status == 0) & np.isfinite(targets)
        status[known_stuck] = STATUS["skipped"]
        status[~np.isfinite(targets)] = STATUS["skipped"]

        def zeros(name: str) -> np.ndarray:
            a = stored[name]
            return np.where(np.isfinite(a), a, 0.0)

        state = _State(
            targets=targets,
            set_v=stored["tune_set_threshold_v"],
            reset_v=stored["tune_reset_threshold_v"],
            status=status,
            g=stored["tune_g_s"],
            pulses=zeros("tune_pulses"),
            reads=zeros("tune_reads"),
            trips=zeros("tune_round_trips"),
            floor=zeros("tune_floor_s"),
            attempts=zeros("tune_attempts"),
            initial=stored["tune_initial_s"],
            final=stored["tune_final_s"],
            capv=zeros("tune_cap_v"),
            side=zeros("tune_side").astype(int),
            rank=stored["tune_rank"],
            telegraph=zeros("tune_telegraph_rel"),
            tset=tset,
            profile_set=pset,
            profile_reset=preset,
            max_width_s=float(getattr(ctx.ops.limits, "max_pulse_width_s", WIDTHS_S[-1])),
            floor_fraction=float(ctx.params["floor_fraction"]),
        )
        for r, c in np.argwhere(
            np.isin(status, (STATUS["tuned"], STATUS["failed"], STATUS["coarse"]))
        ):
            state.protect_v = min(state.protect_v, self._min_threshold(state, int(r), int(c)))
        ctx._tune_state = state  # type: ignore[attr-defined]
        return state

    def _thresholds(self, st: _State, r: int, c: int) -> tuple[float, float]:
        """Best known (set, reset magnitude) thresholds of a device (V; NaN unknown): the
        one learned while tuning, never below the profile's measured one (measured to about
        0.01 V; a learned value below it comes from telegraph noise or relaxation, and its
        switching floor would let pulses through that cannot move the device at all)."""
        out = []
        for learned, measured in (
            (st.set_v[r, c], st.profile_set[r, c]),
            (st.reset_v[r, c], st.profile_reset[r, c]),
        ):
            if math.isfinite(learned) and math.isfinite(measured):
                out.append(max(float(learned), float(measured)))
            else:
                out.append(float(learned if math.isfinite(learned) else measured))
        return out[0], out[1]

    def _population(self, st: _State, q: float) -> tuple[float, float]:
        """Quantile ``q`` of the known set and reset thresholds (V), prior when too few."""
        out = []
        for learned, prof, prior in (
            (st.set_v, st.profile_set, 1.0),
            (st.reset_v, st.profile_reset, 1.1),
        ):
            vals = np.where(np.isfinite(learned), learned, prof)
            vals = vals[np.isfinite(vals)]
            if vals.size >= 8:
                out.append(float(np.quantile(vals, q)))
            else:
                # published prior: lognormal, mean ``prior``, CV 25 %
                sd = math.sqrt(math.log1p(0.25**2))
                z = {0.05: -1.645, 0.1: -1.2816, 0.25: -0.674, 0.5: 0.0}.get(q, 0.0)
                out.append(math.exp(math.log(prior) - sd * sd / 2 + z * sd))
        return out[0], out[1]

    def _known(self, st: _State, r: int, c: int, q: float) -> tuple[float, float]:
        """(set, reset) thresholds (V), an unknown one taken at population quantile ``q``."""
        s, x = self._thresholds(st, r, c)
        lo_s, lo_x = self._population(st, q)
        return (s if math.isfinite(s) else lo_s), (x if math.isfinite(x) else lo_x)

    def _min_threshold(self, st: _State, r: int, c: int) -> float:
        """``m``: the smaller threshold (an unknown one at a low quantile of the known)."""
        return min(self._known(st, r, c, UNKNOWN_QUANTILE))

    def _choose_side(self, st: _State, r: int, c: int) -> int:
        """+1: approach the target from below with set pulses; -1: from above with reset;
        the polarity of the smaller threshold (median of the known ones when unknown)."""
        s, x = self._known(st, r, c, 0.5)
        return 1 if s <= x else -1

    def _store(self, ctx: SweepContext, st: _State, r: int, c: int) -> None:
        for name, value in (
            ("tune_set_threshold_v", st.set_v[r, c]),
            ("tune_reset_threshold_v", st.reset_v[r, c]),
            ("tune_status", float(st.status[r, c])),
            ("tune_g_s", st.g[r, c]),
            ("tune_pulses", st.pulses[r, c]),
            ("tune_reads", st.reads[r, c]),
            ("tune_round_trips", st.trips[r, c]),
            ("tune_floor_s", st.floor[r, c]),
            ("tune_attempts", st.attempts[r, c]),
            ("tune_cap_v", st.capv[r, c]),
            ("tune_side", float(st.side[r, c])),
            ("tune_telegraph_rel", float(st.telegraph[r, c])),
        ):
            unit = "V" if name.endswith("_v") else ("S" if name.endswith("_s") else "")
            if name == "tune_floor_s":
                unit = "s"
            ctx.parameter(r, c, name, float(value), unit)

    # -- running ------------------------------------------------------------------------
    def prepare(self, ctx: SweepContext) -> None:
        ctx._tune_prior = ThresholdPrior()  # type: ignore[attr-defined]

    def run_unit(self, ctx: SweepContext, unit: SweepUnit) -> None:
        st = self._state(ctx)
        g = int(ctx.params["group"])
        key = unit.key
        if key == "survey":
            self._survey(ctx, st)
        elif key.startswith("pass-1-"):  # the conventional baseline, row order
            k = int(unit.info["k"])
            for r, c in self._devices(st)[k * g : (k + 1) * g]:
                ctx.check_stop()
                self._conventional(ctx, st, r, c)
        elif key == "prepark":
            self._prepark(ctx, st)
        elif key.startswith("tune-"):
            k = int(unit.info["k"])
            order = self._fine_order(st)
            for r, c in order[k * g : (k + 1) * g]:
                ctx.check_stop()
                # park, just in time, every device whose floor the pulses still to come
                # can no longer reach (m >= m_here / JIT_RATIO)
                m0 = self._m0(st)
                floor_m = m0[r, c] / JIT_RATIO
                for r2, c2 in order:
                    if m0[r2, c2] < floor_m:
                        break
                    if int(st.status[r2, c2]) == STATUS["pending"]:
                        ctx.check_stop()
                        self._coarse(ctx, st, r2, c2)
                self._fine(ctx, st, r, c)
        elif key.startswith("repair-"):
            p, k = int(unit.info["pass"]), int(unit.info["k"])
            self._repair_group(ctx, st, p, self._fine_order(st)[k * g : (k + 1) * g])
        elif key == "final":
            # the repairs of the last settle were not re-verified yet: settle until no
            # possible victim is out of the band (at most FINAL_SETTLE_ROUNDS rounds); the
            # conventional baseline is the protocol once per device, nothing after it
            if str(ctx.params["algorithm"]) == "adaptive":
                self._settle(ctx, st, rounds=FINAL_SETTLE_ROUNDS)
            self._final(ctx, st)

    def _devices(self, st: _State) -> list[tuple[int, int]]:
        return [(int(r), int(c)) for r, c in np.argwhere(np.isfinite(st.tset.targets_s))]

    def _survey(self, ctx: SweepContext, st: _State) -> None:
        settings = ReadSettings(read_v=0.2, averages=4, nplc=1.0, current_limit_a=1e-4)
        for r, c in self._devices(st):
            g = self._read(ctx, st, r, c, settings).conductance_s
            st.reads[r, c] += 1
            st.initial[r, c] = g
            st.g[r, c] = g
            ctx.parameter(r, c, "tune_initial_s", g, "S")
            ctx.parameter(r, c, "tune_g_s", g, "S")
        if str(ctx.params["algorithm"]) != "adaptive":
            return
        devices = self._devices(st)
        m0 = self._m0(st)
        ranked = sorted(devices, key=lambda d: -m0[d])
        for i, (r, c) in enumerate(ranked):
            st.rank[r, c] = i
            ctx.parameter(r, c, "tune_rank", float(i))

    def _m0(self, st: _State) -> np.ndarray:
        """``m`` of every device from the profile (or the prior) alone, as the survey
        ranked them: the parking schedule, the same on resume."""
        cache = getattr(st, "_m0_cache", None)
        if cache is None:
            cache = np.full(st.targets.shape, np.nan)
            for r, c in self._devices(st):
                cache[r, c] = min(self._profile_or_prior(st, r, c))
            st._m0_cache = cache  # type: ignore[attr-defined]
        return cache

    def _profile_or_prior(self, st: _State, r: int, c: int) -> tuple[float, float]:
        s, x = float(st.profile_set[r, c]), float(st.profile_reset[r, c])
        lo_s, lo_x = self._population(st, UNKNOWN_QUANTILE)
        return (s if math.isfinite(s) else lo_s), (x if math.isfinite(x) else lo_x)

    def _fine_order(self, st: _State) -> list[tuple[int, int]]:
        """The devices by the rank the coarse check gave them (descending ``m``)."""
        devices = [d for d in self._devices(st) if math.isfinite(st.rank[d])]
        devices.sort(key=lambda d: float(st.rank[d]))
        return devices

    def _read(self, ctx: SweepContext, st: _State, r: int, c: int, settings: ReadSettings) -> Any:
        """One stored read of (r, c), its bus round trips added to the device's."""
        with BusCounter.on(ctx.station.transports.values()) as bus:
            read = ctx.read(r, c, settings)
        st.trips[r, c] += bus.round_trips
        return read

    def _settings(self, ctx: SweepContext, **kw: Any) -> AdaptiveSettings:
        cap = float(kw.pop("cap_v", ctx.ops.limits.max_write_v))
        kw.setdefault("width_s", THRESHOLD_WIDTH_S)
        kw.setdefault("floor_fraction", float(ctx.params["floor_fraction"]))
        return AdaptiveSettings(
            scheme="v/3",
            set_ramp=Ramp(0.4, 0.08, cap),
            reset_ramp=Ramp(0.4, 0.08, cap),
            **kw,
        )

    def _adaptive(
        self, ctx: SweepContext, st: _State, r: int, c: int, target: float,
        settings: AdaptiveSettings, *, learn: bool = True,
    ) -> TuneResult:  # fmt: skip
        s, x = self._thresholds(st, r, c)
        with BusCounter.on(ctx.station.transports.values()) as bus:
            res = adaptive(
                ctx, r, c, target, settings,
                set_threshold_v=s if math.isfinite(s) else None,
                reset_threshold_v=x if math.isfinite(x) else None,
                prior=getattr(ctx, "_tune_prior", None), bus=bus,
            )  # fmt: skip
        self._account(ctx, st, r, c, res, learn=learn)
        return res

    def _coarse(self, ctx: SweepContext, st: _State, r: int, c: int) -> None:
        """Park the device ``COARSE_MARGIN`` short of its target on its approach side
        (within ``COARSE_TOL``), under the cap that protects the devices parked or tuned so
        far (the station's limit while there are none): its smaller-threshold polarity at
        1 ms, the other one at the width whose step fits under the cap (V/3 pushes from the
        others may have moved it past). A device that needs more than the cap is
        ``deferred``; one no pulse ever moved is ``stuck``."""
        if int(st.status[r, c]) != STATUS["pending"]:
            return
        if st.side[r, c] == 0:
            st.side[r, c] = self._choose_side(st, r, c)
        cap = self._fine_cap(ctx, st, r, c, False)
        aim = float(st.targets[r, c]) * (1.0 - st.side[r, c] * COARSE_MARGIN)
        g = float(st.g[r, c])
        dist = abs(math.log(aim / g)) if math.isfinite(g) and g > 0 else 1.0
        low = math.isfinite(g) and (g < aim) == (st.side[r, c] > 0)
        if low:
            # its smaller-threshold polarity: the shortest width that fits under the cap
            width = self._low_width(st, r, c, cap, dist / 2)
        else:
            back = self._back_width(st, r, c, cap, step_ln=dist / 3)
            if back is None and math.isfinite(st.protect_v):
                # the way back would push the others too hard or needs more than the cap
                st.status[r, c] = STATUS["deferred"]
                self._store(ctx, st, r, c)
                return
            # nothing parked yet: over the budget, still the shortest width that fits
            width = (
                back
                or self._back_width(st, r, c, cap, step_ln=dist / 3, budget_ln=math.inf)
                or THRESHOLD_WIDTH_S
            )
        if not math.isfinite(st.protect_v):
            res = self._recoarse(ctx, st, r, c, width_s=width)
        else:
            res = self._recoarse(ctx, st, r, c, cap_v=cap, width_s=width)
        if res.outcome == "stuck" and not math.isfinite(st.protect_v):
            st.status[r, c] = STATUS["stuck"]
            self._compensate(ctx, st, r, c)
        elif res.outcome != "tuned":
            # it needs more than the cap: pulsing harder would push the devices parked or
            # tuned so far (under V/3 every device sees a third of it): deferred
            st.status[r, c] = STATUS["deferred"]
        else:
            st.status[r, c] = STATUS["coarse"]
            # parked: protected from here on like a tuned device
            st.protect_v = min(st.protect_v, self._min_threshold(st, r, c))
        self._store(ctx, st, r, c)

    def _prepark(self, ctx: SweepContext, st: _State) -> None:
        """Before anything is tuned: every device is moved far to its approach side
        (``PREPARK_WINDOW_S``: below its target when it will approach with set pulses,
        above when with reset), in descending ``m``. Until its turn the pulses of the
        others push it in its smaller-threshold polarity, towards its target: parked far
        enough, it still arrives on its approach side, where the cap allows its own
        polarity. Devices pushed back to within ``PREPARK_KEEP_LN`` of their targets are
        parked again, up to ``PREPARK_ROUNDS`` rounds. Nothing is learned here: near the
        window's edges the rates slow (saturation) and would bias the estimates."""
        m0 = self._m0(st)
        todo = []
        for r, c in self._devices(st):
            if int(st.status[r, c]) != STATUS["pending"]:
                continue
            st.side[r, c] = self._choose_side(st, r, c)
            todo.append((r, c))
        # the most pushed (smallest m) last
        todo.sort(key=lambda d: -m0[d])
        station_cap = float(ctx.ops.limits.max_write_v)
        read = ReadSettings(read_v=0.2, averages=2, nplc=1.0, current_limit_a=1e-4)
        moved = len(todo)
        for round_ in range(PREPARK_ROUNDS):
            order, heavy = todo, set()
            if round_ == 0:
                # the moves that push the others beyond the budget (a threshold near the
                # station's limit: long pulses at the limit) go first, before any other
                # device is parked: what they push is parked after them
                heavy = {d for d in todo if self._prepark_width(st, *d, station_cap) is None}
                order = [d for d in todo if d in heavy] + [d for d in todo if d not in heavy]
                heavy_mask = np.zeros(st.targets.shape, bool)
                for d in heavy:
                    heavy_mask[d] = True
            for r, c in order:
                ctx.check_stop()
                ln = HEAVY_PREPARK_LN if (r, c) in heavy else PREPARK_LN
                aim = self._prepark_aim(st, r, c, ln)
                g = float(st.g[r, c])
                if math.isfinite(g) and st.side[r, c] * math.log(max(g, 1e-12) / aim) <= 0:
                    continue  # already that far on its approach side
                if (r, c) in heavy:
                    # judged on the other heavy ones only: the rest are parked after it
                    width = self._prepark_width(
                        st, r, c, station_cap, budget_ln=HEAVY_PUSH_BUDGET_LN, ln=ln,
                        victims=heavy_mask,
                    )  # fmt: skip
                else:
                    width = self._prepark_width(st, r, c, station_cap)
                if width is None:
                    continue  # it would push the others too hard: left where it is
                settings = self._settings(ctx, tolerance_rel=0.5, verify_reads=1, width_s=width)
                # near the window's edges the rates slow (saturation): nothing learned there
                self._adaptive(ctx, st, r, c, aim, settings, learn=False)
                self._store(ctx, st, r, c)
            # the later ones pushed the earlier ones back towards their targets: those no
            # longer far enough go again (fewer each round, so fewer pushes)
            again = []
            for r, c in todo:
                g = self._read(ctx, st, r, c, read).conductance_s
                st.reads[r, c] += 1
                st.g[r, c] = g
                if st.side[r, c] * math.log(max(g, 1e-9) / st.targets[r, c]) > -PREPARK_KEEP_LN:
                    again.append((r, c))
            todo = again
            if not todo:
                break
        print(
            f"tune: {moved} devices parked far on their approach side "
            f"({len(todo)} pushed back near their targets since)",
            file=sys.stderr,
        )

    def _prepark_aim(self, st: _State, r: int, c: int, ln: float = PREPARK_LN) -> float:
        """Where pre-parking moves a device (S): ``ln`` beyond its target on its approach
        side, inside ``PREPARK_WINDOW_S``."""
        aim = float(st.targets[r, c]) * math.exp(-st.side[r, c] * ln)
        return min(max(aim, PREPARK_WINDOW_S[0]), PREPARK_WINDOW_S[1])

    def _prepark_width(
        self, st: _State, r: int, c: int, station_cap: float,
        budget_ln: float = PREPARK_PUSH_BUDGET_LN, ln: float = PREPARK_LN,
        victims: np.ndarray | None = None,
    ) -> float | None:  # fmt: skip
        """The pulse width (s) of a device's pre-parking move ``ln`` beyond its target: away
        from its target, in its larger-threshold polarity as a rule, the shortest width
        whose step fits under the station's limit and pushes no other device (of
        ``victims``, a mask, when given) beyond ``budget_ln``; None when none does. A move
        judged on ``victims`` (the moves over the budget, made first) may use the limit
        without headroom: a shorter pulse pushes the others less (by the switching law
        ``w^(2/3)`` for the same step)."""
        aim = self._prepark_aim(st, r, c, ln)
        s_v, x_v = self._known(st, r, c, 0.5)
        g = float(st.g[r, c])
        down = math.isfinite(g) and g > aim
        dist = abs(math.log(aim / g)) if math.isfinite(g) and g > 0 else 1.0
        return self._width(
            st, x_v if down else s_v, station_cap, min(dist, 1.0),
            margin_v=WIDTH_MARGIN_V if victims is None else 0.0,
            at=(r, c, -1 if down else 1), budget_ln=budget_ln, victims=victims,
        )  # fmt: skip

    def _recoarse(
        self, ctx: SweepContext, st: _State, r: int, c: int, *,
        cap_v: float | None = None, width_s: float = THRESHOLD_WIDTH_S,
    ) -> TuneResult:  # fmt: skip
        """Adaptive tune to ``COARSE_MARGIN`` short of the target on the device's approach
        side (within ``COARSE_TOL``), under ``cap_v`` (the station's limit when None)."""
        side = int(st.side[r, c])
        aim = float(st.targets[r, c]) * (1.0 - side * COARSE_MARGIN)
        kw: dict[str, Any] = {"cap_v": cap_v} if cap_v is not None else {}
        z = 1.0
        if cap_v is not None:
            # where the way back does not fit, an overshoot past the target is for good
            back_safe = self._back_width(st, r, c, cap_v) is not None
            z = COARSE_OVERSHOOT_Z if back_safe else COARSE_OVERSHOOT_Z_UNSAFE
        settings = self._settings(
            ctx, tolerance_rel=COARSE_TOL, verify_reads=1, width_s=width_s,
            max_pulses=CAPPED_MAX_PULSES if cap_v is not None else 80, overshoot_z=z, **kw,
        )  # fmt: skip
        return self._adaptive(ctx, st, r, c, aim, settings)

    def _back_width(
        self, st: _State, r: int, c: int, cap: float, step_ln: float = 0.03,
        budget_ln: float = PUSH_BUDGET_LN,
    ) -> float | None:  # fmt: skip
        """The shortest pulse width (s) at which a step of ``step_ln`` (ln G) in the
        device's larger-threshold polarity fits under ``cap`` (V) and the push budget;
        None when none does."""
        s, x = self._known(st, r, c, 0.5)
        high = -int(st.side[r, c]) or -1
        return self._width(
            st, x if st.side[r, c] > 0 else s, cap, step_ln, margin_v=0.0, at=(r, c, high),
            budget_ln=budget_ln,
        )  # fmt: skip

    def _low_width(self, st: _State, r: int, c: int, cap: float, step_ln: float) -> float:
        """The shortest pulse width (s) at which a step of ``step_ln`` in the device's
        smaller-threshold polarity fits under ``cap`` with ``WIDTH_MARGIN_V`` to spare;
        the threshold width when none does (its own approach fits under the cap)."""
        s, x = self._known(st, r, c, 0.5)
        low = int(st.side[r, c]) or 1
        thr = s if st.side[r, c] > 0 else x
        w = self._width(st, thr, cap, step_ln, at=(r, c, low))
        if w is None:
            # over the push budget even at its shortest: still the shortest that fits
            # (a longer pulse makes the same step with a larger push)
            w = self._width(st, thr, cap, step_ln)
        return THRESHOLD_WIDTH_S if w is None else min(w, THRESHOLD_WIDTH_S)

    def _width(
        self, st: _State, threshold_v: float, cap: float, step_ln: float,
        margin_v: float = WIDTH_MARGIN_V, at: tuple[int, int, int] | None = None,
        budget_ln: float = PUSH_BUDGET_LN, victims: np.ndarray | None = None,
    ) -> float | None:  # fmt: skip
        """The shortest width of ``WIDTHS_S`` (within the station's longest pulse) whose
        step of ``step_ln`` (ln G) at a threshold ``threshold_v`` needs at most ``cap`` -
        ``margin_v`` by the switching law and, for a pulse of polarity ``at[2]`` on device
        ``at[:2]``, pushes no other device more than ``PUSH_BUDGET_LN``; None when none
        does."""
        for w in WIDTHS_S:
            if w > st.max_width_s:
                break
            need = threshold_v + SLOPE_V * math.log(
                max(step_ln, 0.01) / (THRESHOLD_STEP_LN * w / THRESHOLD_WIDTH_S)
            )
            if need + margin_v <= cap:
                if at is not None and self._push_ln(st, *at, need, w, victims) > budget_ln:
                    return None  # longer is worse: the same step pushes the others more
                return w
        return None

    def _push_ln(
        self, st: _State, r: int, c: int, sign: int, amplitude_v: float, width_s: float,
        victims: np.ndarray | None = None,
    ) -> float:  # fmt: skip
        """The largest push (ln G) a V/3 pulse of ``sign`` x ``amplitude_v`` lasting
        ``width_s`` on (r, c) gives another device with a target (among ``victims``, a
        mask, when given), by the switching law and the known thresholds: the
        half-selected (row r, column c) see a third of it in its polarity, every other
        device a third in the other polarity."""
        th = getattr(st, "_push_thresholds", None)
        if th is None:
            s_all = np.full(st.targets.shape, np.nan)
            x_all = np.full(st.targets.shape, np.nan)
            for rr, cc in self._devices(st):
                if int(st.status[rr, cc]) in (STATUS["stuck"], STATUS["skipped"]):
                    continue
                s_all[rr, cc], x_all[rr, cc] = self._known(st, rr, cc, UNKNOWN_QUANTILE)
            th = (s_all, x_all)
            st._push_thresholds = th  # type: ignore[attr-defined]
        same, other = (th[0], th[1]) if sign > 0 else (th[1], th[0])
        v = amplitude_v / 3.0
        thr = other.copy()
        thr[r, :] = same[r, :]
        thr[:, c] = same[:, c]
        thr[r, c] = np.nan
        if victims is not None:
            thr[~victims] = np.nan
        f = st.floor_fraction
        with np.errstate(invalid="ignore"):
            push = (
                THRESHOLD_STEP_LN
                * onset_factor(v, thr, f)
                * np.exp((v - thr) / SLOPE_V)
                * (width_s / THRESHOLD_WIDTH_S)
            )
        return float(np.nanmax(push)) if np.isfinite(push).any() else 0.0

    def _fine_cap(self, ctx: SweepContext, st: _State, r: int, c: int, repair: bool) -> float:
        """Amplitude cap (V) of a pulse: ``cap_safety x 3 f x`` the smallest ``m`` of the
        devices parked or tuned so far (under V/3 they see ``cap_safety`` x their
        switching floor: barely disturbed, and re-read by the settle); in a
        repair (passes in descending ``m``), of the device's own ``m``."""
        station_cap = float(ctx.ops.limits.max_write_v)
        f = float(ctx.params["floor_fraction"])
        protect = float(ctx.params["cap_safety"]) * 3.0 * f * st.protect_v
        if repair:
            # a repair pass runs in descending m: protect the devices before this one
            protect = float(ctx.params["cap_safety"]) * 3.0 * f * self._min_threshold(st, r, c)
        return min(station_cap, protect)

    def _fine(self, ctx: SweepContext, st: _State, r: int, c: int, repair: bool = False) -> None:
        """Approach the target from the device's side with its smaller-threshold polarity
        only, under the cap; a device found on the wrong side is brought back (coarse) and
        approached again, at most ``FINE_TRIES`` times."""
        code = int(st.status[r, c])
        if code in (STATUS["stuck"], STATUS["skipped"]):
            return
        if st.side[r, c] == 0:
            st.side[r, c] = self._choose_side(st, r, c)
        tol = float(ctx.params["tolerance"])
        target = float(st.targets[r, c])
        res: TuneResult | None = None
        for _ in range(FINE_TRIES):
            cap = self._fine_cap(ctx, st, r, c, repair)
            st.capv[r, c] = max(st.capv[r, c], cap)
            back_safe = self._back_width(st, r, c, cap) is not None
            g = float(st.g[r, c])
            dist = abs(math.log(target / g)) if math.isfinite(g) and g > 0 else COARSE_MARGIN
            settings = self._settings(
                ctx, tolerance_rel=tol, cap_v=cap, approach=int(st.side[r, c]),
                width_s=self._low_width(st, r, c, cap, max(dist, tol)),
                overshoot_z=FINE_OVERSHOOT_Z if back_safe else FINE_OVERSHOOT_Z_UNSAFE,
                telegraph_rel=float(st.telegraph[r, c]),
            )  # fmt: skip
            res = self._adaptive(ctx, st, r, c, target, settings)
            if not res.wrong_side:
                break
            if (
                abs(res.conductance_s / target - 1) + 2 * res.stderr_s / target
                <= WRONG_SIDE_KEEP * tol
            ):
                # past the centre but safely inside the tolerance: a step back would cost
                # pulses in the polarity that may disturb the devices tuned so far
                res.outcome = "tuned"
                break
            width = self._back_width(st, r, c, cap)
            if width is None:
                # a step back would disturb the devices tuned so far (under V/3 every device
                # sees a third of it): left as it is, failed, rather than spoil the array
                break
            ctx.check_stop()
            self._recoarse(ctx, st, r, c, cap_v=cap, width_s=width)
        assert res is not None
        if res.outcome == "tuned":
            st.status[r, c] = STATUS["tuned"]
        elif res.outcome == "stuck" and st.pulses[r, c] == res.pulses:
            st.status[r, c] = STATUS["stuck"]
            self._compensate(ctx, st, r, c)
        elif not res.wrong_side and not repair and cap < float(ctx.ops.limits.max_write_v):
            st.status[r, c] = STATUS["deferred"]  # needs more than the cap: repaired later
        else:
            st.status[r, c] = STATUS["failed"]
        if st.status[r, c] in (STATUS["tuned"], STATUS["failed"]):
            st.protect_v = min(st.protect_v, self._min_threshold(st, r, c))
        self._store(ctx, st, r, c)

    def _settle(self, ctx: SweepContext, st: _State, rounds: int | None = None) -> None:
        """Re-verify the possible victims of the pulses since the last settle and repair
        those out of the band, up to ``settle_rounds`` rounds. A tuned device can only have
        moved if some pulse exceeded its floor under V/3: ``V > 3 f m`` with ``m`` its
        smaller threshold (known, or a low quantile of the known ones), so only those are
        read."""
        f = float(ctx.params["floor_fraction"])
        tol = float(ctx.params["tolerance"]) * float(ctx.params["verify_band"])
        settings = ReadSettings(read_v=0.2, averages=16, nplc=1.0, current_limit_a=1e-4)
        for _ in range(int(ctx.params["settle_rounds"]) if rounds is None else rounds):
            vmax = float(getattr(ctx, "_tune_vmax", math.inf))
            ctx._tune_vmax = 0.0  # type: ignore[attr-defined]
            victims = [
                (int(r), int(c))
                for r, c in np.argwhere(st.status == STATUS["tuned"])
                if 3.0 * f * self._min_threshold(st, int(r), int(c)) < vmax
            ]
            flagged = []
            for r, c in victims:
                g = self._verify_read(ctx, st, r, c, settings, tol)
                if abs(g / st.targets[r, c] - 1) > tol:
                    st.status[r, c] = STATUS["pending"]
                    flagged.append((r, c))
                    ctx.parameter(r, c, "tune_g_s", g, "S")
            if not flagged:
                return
            flagged.sort(key=lambda d: -self._min_threshold(st, d[0], d[1]))
            for r, c in flagged:
                ctx.check_stop()
                self._fine(ctx, st, r, c, repair=True)

    def _repair_group(
        self, ctx: SweepContext, st: _State, p: int, devices: list[tuple[int, int]]
    ) -> None:
        """One group of repair pass ``p``, in the fine order (descending ``m``): each device
        is read (averaged) at its turn and, when beyond ``verify_band`` x the tolerance (or
        failed, deferred, still parked), approached again under the cap of its own ``m``:
        every device before it in the pass has a larger ``m`` and cannot be disturbed, and
        every device it may push comes later in the pass and is read then. A pass that
        repaired nothing ends the repairs."""
        passes = getattr(ctx, "_tune_passes", {})
        ctx._tune_passes = passes  # type: ignore[attr-defined]
        if passes.get(p - 1) == 0:
            passes[p] = 0
            return
        tol = float(ctx.params["tolerance"]) * float(ctx.params["verify_band"])
        settings = ReadSettings(read_v=0.2, averages=16, nplc=1.0, current_limit_a=1e-4)
        passes.setdefault(p, 0)
        for r, c in devices:
            code = int(st.status[r, c])
            if code in (STATUS["stuck"], STATUS["skipped"]) or st.attempts[r, c] >= MAX_ATTEMPTS:
                continue
            ctx.check_stop()
            if code == STATUS["tuned"]:
                g = self._verify_read(ctx, st, r, c, settings, tol)
                if abs(g / st.targets[r, c] - 1) <= tol:
                    continue
            passes[p] += 1
            self._fine(ctx, st, r, c, repair=True)

    def _verify_read(
        self, ctx: SweepContext, st: _State, r: int, c: int, settings: ReadSettings, band: float
    ) -> float:
        """A tuned device's conductance (S) for a re-verification against ``band``
        (relative): one averaged read, or the level mean of ``LEVEL_READS`` reads where one
        read cannot tell (a device with a known telegraph step, or a read out of the band
        by no more than half the largest step); a step seen is remembered."""
        read = self._read(ctx, st, r, c, settings)
        st.reads[r, c] += 1
        g = float(read.conductance_s)
        off = abs(g / st.targets[r, c] - 1)
        if st.telegraph[r, c] > 0 or band < off <= band + TELEGRAPH_MAX_REL / 2:
            values, errs = [g], [float(read.stderr_s)]
            for _ in range(LEVEL_READS - 1):
                more = self._read(ctx, st, r, c, settings)
                st.reads[r, c] += 1
                values.append(float(more.conductance_s))
                errs.append(float(more.stderr_s))
            g, _, step = level_mean(values, errs)
            if step > 0:
                st.telegraph[r, c] = min(max(st.telegraph[r, c], step), TELEGRAPH_MAX_REL)
        st.g[r, c] = g
        return g

    def _conventional(self, ctx: SweepContext, st: _State, r: int, c: int) -> None:
        if int(st.status[r, c]) != STATUS["pending"]:
            return
        tol = float(ctx.params["tolerance"])
        with BusCounter.on(ctx.station.transports.values()) as bus:
            res = conventional(
                ctx, r, c, float(st.targets[r, c]), ConventionalSettings(tolerance_rel=tol),
                bus=bus,
            )  # fmt: skip
        self._account(ctx, st, r, c, res)
        st.status[r, c] = STATUS[res.outcome] if res.outcome != "skipped" else STATUS["skipped"]
        self._store(ctx, st, r, c)

    def _account(
        self, ctx: SweepContext, st: _State, r: int, c: int, res: TuneResult, *,
        learn: bool = True,
    ) -> None:  # fmt: skip
        """Add one tuner call's pulses, reads, bus round trips, instrument time and what it
        learned (unless ``learn`` is False) to the device's record."""
        st.attempts[r, c] += 1
        vmax = float(getattr(ctx, "_tune_vmax", 0.0))
        ctx._tune_vmax = max(vmax, res.max_amplitude_v)  # type: ignore[attr-defined]
        st.pulses[r, c] += res.pulses
        st.reads[r, c] += res.reads
        st.trips[r, c] += max(res.round_trips, 0)
        st.floor[r, c] += res.floor_s
        st.g[r, c] = res.conductance_s
        st.telegraph[r, c] = min(max(st.telegraph[r, c], res.telegraph_rel), TELEGRAPH_MAX_REL)
        # an estimate outside the plausible range (a noisy fit) teaches nothing
        lo, hi = PLAUSIBLE_THRESHOLD_V
        if not learn:
            return
        if lo <= res.set_threshold_v <= hi:
            st.set_v[r, c] = res.set_threshold_v
        if lo <= abs(res.reset_threshold_v) <= hi:
            st.reset_v[r, c] = abs(res.reset_threshold_v)

    def _compensate(self, ctx: SweepContext, st: _State, r: int, c: int) -> None:
        """A stuck device of a pair: re-aim its partner so the pair keeps its weight."""
        new = st.tset.compensate(r, c, float(st.g[r, c]))
        if new is None:
            return
        r2, c2, target = new
        if st.status[r2, c2] in (STATUS["stuck"], STATUS["skipped"]):
            return
        st.targets[r2, c2] = target
        ctx.parameter(r2, c2, "tune_target_s", target, "S")
        if st.status[r2, c2] != STATUS["pending"] and st.attempts[r2, c2] > 0:
            st.status[r2, c2] = STATUS["pending"]
            ctx.parameter(r2, c2, "tune_status", float(STATUS["pending"]))

    def _final(self, ctx: SweepContext, st: _State) -> None:
        """The final verification read of every device with a target; it decides the
        outcome stored per device."""
        tol = float(ctx.params["tolerance"])
        n = int(ctx.params["final_averages"])
        settings = ReadSettings(read_v=0.2, averages=n, nplc=1.0, current_limit_a=1e-4)
        algorithm = str(ctx.params["algorithm"])
        for r, c in self._devices(st):
            code = int(st.status[r, c])
            target = float(st.targets[r, c])
            if code == STATUS["skipped"]:
                ctx.writer.add_tuning_outcome(
                    r, c, target_s=target, final_s=None, pulse_count=int(st.pulses[r, c]),
                    status="skipped", algorithm=algorithm,
                )  # fmt: skip
                continue
            if st.telegraph[r, c] > 0:
                # a telegraph device: the level mean, as its tuning judged it
                g = self._verify_read(ctx, st, r, c, settings, 0.0)
            else:
                g = self._read(ctx, st, r, c, settings).conductance_s
                st.reads[r, c] += 1
            st.final[r, c] = g
            ctx.parameter(r, c, "tune_final_s", g, "S")
            if code == STATUS["stuck"]:
                outcome = "stuck"
            else:
                outcome = "tuned" if abs(g / target - 1) <= tol else "failed"
            ctx.writer.add_tuning_outcome(
                r, c, target_s=target, final_s=g, pulse_count=int(st.pulses[r, c]),
                status=outcome, algorithm=algorithm,
            )  # fmt: skip

    # -- summary --------------------------------------------------------------------------
    def finish(self, ctx: SweepContext) -> ProfileUpdate:
        st = self._state(ctx)
        tol = float(ctx.params["tolerance"])
        devices = self._devices(st)
        outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        per_device = []
        for r, c in devices:
            out = device_outcome(st, r, c, tol)
            outcomes[out] += 1
            per_device.append(
                {
                    "row": r,
                    "col": c,
                    "target_s": float(st.targets[r, c]),
                    "final_s": _num(st.final[r, c]),
                    "pulses": int(st.pulses[r, c]),
                    "reads": int(st.reads[r, c]),
                    "round_trips": int(st.trips[r, c]),
                    "floor_s": float(st.floor[r, c]),
                    "outcome": out,
                }
            )
        pulses = np.array([d["pulses"] for d in per_device if d["outcome"] != "skipped"])
        considered = outcomes["tuned"] + outcomes["failed"]
        summary = {
            "devices": len(devices),
            "outcomes": outcomes,
            "pass_rate_own": outcomes["tuned"] / considered if considered else math.nan,
            "pulses_mean": float(pulses.mean()) if pulses.size else math.nan,
            "pulses_median": float(np.median(pulses)) if pulses.size else math.nan,
            "pulses_p95": float(np.percentile(pulses, 95)) if pulses.size else math.nan,
            "round_trips_mean": float(np.mean([d["round_trips"] for d in per_device])),
            "floor_s_mean": float(np.mean([d["floor_s"] for d in per_device])),
            "algorithm": str(ctx.params["algorithm"]),
            "tolerance": tol,
            "per_device": per_device,
        }
        return ProfileUpdate(summary=summary)


def device_outcome(st: _State, r: int, c: int, tol: float) -> str:
    code = int(st.status[r, c])
    if code == STATUS["skipped"]:
        return "skipped"
    if code == STATUS["stuck"]:
        return "stuck"
    g = st.final[r, c]
    return "tuned" if math.isfinite(g) and abs(g / st.targets[r, c] - 1) <= tol else "failed"


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _max_current(limits: Any) -> float | None:
    value = getattr(limits, "max_current_a", None)
    return float(value) if isinstance(value, (int, float)) else None


def plc_s(ctx: SweepContext) -> float:
    return 1.0 / line_frequency_hz(ctx.ops)


__all__ += ["device_outcome", "ConfigError"]
