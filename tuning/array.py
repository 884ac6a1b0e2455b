"""Array programming: the ``tune`` sweep brings every device of a passive crossbar to its
target conductance, judged by a final verification read of the whole array.

Why an array is not a loop over devices. In a passive crossbar every write pulse also
biases the unselected devices: under V/2 the selected row and column see V/2, under V/3
the half-selected see V/3 and every other device -V/3. By the devices docs' switching law
a device does not move at all while ``|V| < f Vth`` (``f`` the switching floor fraction,
0.5) and moves at ``exp((|V| - Vth) / v0)`` above it, so at 25 % threshold variation a
device tuned early is disturbed by the pulses of its neighbours (tuning 16 x 16 devices
once in row order leaves about half of them within 1 %). The tuner therefore:

- writes with the **V/3 scheme**: a pulse of amplitude V cannot disturb a device whose
  smaller threshold ``min(Vset, |Vreset|)`` exceeds ``V / (3 f)`` = 2V/3;
- knows each device's thresholds: from the chip profile (``set_threshold_v``,
  ``reset_threshold_v``, defect map) when one exists, else learned by the first pass
  (the per-device tuner estimates the threshold of every polarity it uses; unknown ones
  are taken at a low quantile of those learned, which keeps the caps conservative);
- **orders** the devices by the amplitude each needs, descending (the threshold of the
  polarity that moves it towards its target): a device tuned later needs less, so it
  stays below the floor of those tuned before;
- **caps** each device's amplitudes at ``safety x 3 f x m``, ``m`` the smallest threshold
  (both polarities) among the devices already tuned, and chooses the **pulse width**
  (1 ms, 10 ms or 100 ms, the station's limit permitting) so that the amplitude the device
  needs fits under the cap: by the switching law a pulse 10 x longer gives the same change
  at ``v0 ln 10`` (0.115 V) less. A device that needs more than the cap even at the
  longest width is tuned with 1 ms pulses at the amplitude it needs (its disturbance is
  repaired later); one that reaches its cap without moving is *deferred* and retried
  ``LIFT_STEP_V`` (0.25 V) higher in the next pass (not at the station's limit at once:
  under V/3 that would disturb most of the array);
- **settles** after every ``SETTLE_EVERY`` units: the tuned devices that a pulse since the
  last settle could have moved (``3 f m`` below the largest amplitude applied) are read
  again and those outside the band repaired, up to ``settle_rounds`` rounds, and up to
  ``FINAL_SETTLE_ROUNDS`` rounds before the final read;
- **re-verifies** every device after each pass (an averaged read) and **repairs** those
  outside ``verify_band`` x the tolerance, again in descending order with caps, for up
  to ``passes`` passes; a repaired device's model is seeded with its learned thresholds;
- accounts for **relaxation** (log-time drift after programming, ~0.05 %/decade): the
  per-device tuner accepts inside half the tolerance, so the drift over the run and the
  hours after it (well under 0.5 %) stays inside it; the verification passes re-tune a
  device that drifted out of ``verify_band``;
- ends with a **final verification read** of every device with a target (``final_averages``
  readings at 1 PLC), which alone decides each device's outcome: ``tuned`` (within the
  tolerance by that read), ``failed``, ``stuck`` (no pulse ever moved it: reported after
  a bounded number of pulses: the per-device tuner's stuck rule at the station's limit,
  after at most ``passes`` capped attempts of at most ``max_pulses`` each; then never
  pulsed again) or ``skipped`` (NaN target, or stuck by the profile's defect map).

Pairs (weights mapped by :mod:`nvmlab.tuning.targets`): when a device of a pair is stuck,
its partner is re-aimed so that the pair keeps its weight where the window allows.

``algorithm="conventional"``: the baseline, the devices docs' calibration protocol
(:func:`~nvmlab.tuning.writeverify.conventional`, V/2) on every device once in row order,
then the same final verification read.

Storage: every pulse and read goes to the run's database through the sweep context; the
units are the survey read, groups of ``group`` devices of the first pass, for each later
pass a verification read and 16 repair chunks, and the final read; each is atomic and
the run resumes at the first unit not completed (what the tuner learned is stored as
per-device parameters ``tune_*`` and read back from the run chain). The outcome of every
device is stored with :meth:`RecordWriter.add_tuning_outcome`.

Measured (truth): 16 x 16 at default physics 97-100 % within 1 % with or without a
profile; 32 x 32 at default physics only 47-59 % (115-156 pulses per device: the repairs
do not converge as the aggressors multiply); 16 x 16 at HARSH (35 % threshold CV) only
46-61 %. The caps here use the smaller of a
device's two thresholds for both pulse polarities; a polarity-aware protection (a set
pulse biases the devices off its lines towards reset, those on its lines towards set)
was tried and did worse in this form (overshoot corrections in the other polarity were
the main offenders) and is not in use.

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
    AdaptiveSettings,
    BusCounter,
    ConventionalSettings,
    ThresholdPrior,
    TuneResult,
    adaptive,
    conventional,
    line_frequency_hz,
)

if TYPE_CHECKING:
    from nvmlab.storage.inventory import RegisteredChip
    from nvmlab.storage.profile import ChipProfile

__all__ = ["TuneSweep", "STATUS", "OUTCOMES"]

#: Per-device status codes stored as the parameter ``tune_status``.
STATUS = {"pending": 0, "tuned": 1, "failed": 2, "stuck": 3, "deferred": 4, "skipped": 5}
_NAMES = {v: k for k, v in STATUS.items()}
#: Outcomes reported per device.
OUTCOMES = ("tuned", "failed", "stuck", "skipped")
#: Pulse widths the tuner chooses from (s), shortest first.
WIDTHS_S = (1e-3, 1e-2, 1e-1)
#: Quantile of the known thresholds taken for a device's unknown one (disturb caps).
UNKNOWN_QUANTILE = 0.25
#: Caps never exceed the protecting cap (a device that needs more is deferred and
#: retried ``LIFT_STEP_V`` higher in the next pass).
STRICT_CAPS = False
#: Cap increase (V) each time a device is retried after reaching its cap unmoved.
LIFT_STEP_V = 0.25
#: Per-device tuner calls after which a failed device is left alone.
MAX_ATTEMPTS = 10
#: Settle rounds before the final verification read.
FINAL_SETTLE_ROUNDS = 6
#: Units between two settles (re-verification of possible victims and their repair).
SETTLE_EVERY = 4
#: Repair chunks per verification pass.
REPAIR_CHUNKS = 16
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
    tset: TargetSet
    profile_set: np.ndarray
    profile_reset: np.ndarray
    protect_v: float = math.inf  # smallest threshold among the devices tuned so far (V)


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
        Param("targets", str, None, help="target table (S), .npy or .csv, rows x cols"),
        Param("weights", str, None, help="weight table, rows x cols/2 (pairs G+ - G-)"),
        Param("window", list, None, "S", 1e-6, 300e-6, help="pair window g_lo,g_hi (S)"),
        Param("algorithm", str, "adaptive", choices=("adaptive", "conventional")),
        Param("tolerance", float, 0.01, "", 0.001, 0.2, help="relative tolerance"),
        Param("passes", int, 8, "", 1, 20, help="tuning passes (first + repair passes)"),
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
        Param("cap_safety", float, 0.93, "", 0.5, 1.0, help="margin on the V/3 floor cap"),
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
        units = [SweepUnit("survey")]
        units += [
            SweepUnit(f"pass-1-{k:05d}", info={"k": k}) for k in range((n + group - 1) // group)
        ]
        passes = int(params["passes"]) if params["algorithm"] == "adaptive" else 1
        for p in range(2, passes + 1):
            units.append(SweepUnit(f"verify-{p}", info={"pass": p}))
            units += [
                SweepUnit(f"repair-{p}-{k:02d}", info={"pass": p, "k": k})
                for k in range(REPAIR_CHUNKS)
            ]
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
            tset=tset,
            profile_set=pset,
            profile_reset=preset,
        )
        tuned = np.argwhere(np.isin(status, (STATUS["tuned"], STATUS["failed"])))
        for r, c in tuned:
            state.protect_v = min(state.protect_v, self._min_threshold(state, int(r), int(c)))
        ctx._tune_state = state  # type: ignore[attr-defined]
        return state

    def _thresholds(self, st: _State, r: int, c: int) -> tuple[float, float]:
        """Best known (set, reset magnitude) thresholds of a device (V; NaN unknown)."""
        s = st.set_v[r, c] if math.isfinite(st.set_v[r, c]) else st.profile_set[r, c]
        x = st.reset_v[r, c] if math.isfinite(st.reset_v[r, c]) else st.profile_reset[r, c]
        return float(s), float(x)

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

    def _min_threshold(self, st: _State, r: int, c: int) -> float:
        s, x = self._thresholds(st, r, c)
        lo_s, lo_x = self._population(st, UNKNOWN_QUANTILE)
        return min(s if math.isfinite(s) else lo_s, x if math.isfinite(x) else lo_x)

    def _key(self, st: _State, r: int, c: int, g: float | None = None) -> float:
        """Amplitude scale the device needs (V): the threshold of the polarity that moves
        it towards its target (population median when unknown)."""
        if g is None:
            g = st.g[r, c] if math.isfinite(st.g[r, c]) else st.initial[r, c]
        s, x = self._thresholds(st, r, c)
        med_s, med_x = self._population(st, 0.5)
        up = not math.isfinite(g) or g < st.targets[r, c]
        v = (s if math.isfinite(s) else med_s) if up else (x if math.isfinite(x) else med_x)
        return float(v)

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
        if unit.key == "survey":
            self._survey(ctx, st)
        elif unit.key.startswith("pass-1-"):
            order = self._first_order(st, ctx.params)
            g = int(ctx.params["group"])
            k = int(unit.info["k"])
            for r, c in order[k * g : (k + 1) * g]:
                ctx.check_stop()
                self._tune(ctx, st, r, c, first=True)
            n_units = (len(order) + g - 1) // g
            if k % SETTLE_EVERY == SETTLE_EVERY - 1 or k == n_units - 1:
                self._settle(ctx, st, last=False)
        elif unit.key.startswith("verify-"):
            self._verify(ctx, st, int(unit.info["pass"]))
        elif unit.key.startswith("repair-"):
            p, k = int(unit.info["pass"]), int(unit.info["k"])
            todo = self._repair_list(ctx, st, p)
            size = (len(todo) + REPAIR_CHUNKS - 1) // REPAIR_CHUNKS
            last = p == int(ctx.params["passes"])
            for r, c in todo[k * size : (k + 1) * size]:
                ctx.check_stop()
                self._tune(ctx, st, r, c, first=False, last=last)
            if k % SETTLE_EVERY == SETTLE_EVERY - 1:
                self._settle(ctx, st, last=last)
        elif unit.key == "final":
            # the repairs of the last settle were not re-verified yet: settle until no
            # possible victim is out of the band (at most FINAL_SETTLE_ROUNDS rounds)
            self._settle(ctx, st, last=True, rounds=FINAL_SETTLE_ROUNDS)
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

    def _has_profile(self, st: _State) -> bool:
        return bool(np.isfinite(st.profile_set).any() or np.isfinite(st.profile_reset).any())

    def _first_order(self, st: _State, params: dict[str, Any]) -> list[tuple[int, int]]:
        devices = self._devices(st)
        if not self._has_profile(st):
            return devices
        # profile thresholds and the survey read only: the same order on resume
        keys = [-self._order_key(st, r, c, params, st.initial[r, c]) for r, c in devices]
        idx = np.argsort(np.array(keys), kind="stable")
        return [devices[i] for i in idx]

    def _order_key(
        self, st: _State, r: int, c: int, params: dict[str, Any], g: float | None = None
    ) -> float:
        """Ordering key (V): ``min(A, R)`` with ``A`` the amplitude the device needs (the
        threshold of the polarity towards its target) and ``R`` the largest amplitude that
        cannot disturb it once tuned (``safety x 3 f x min threshold``). Descending
        ``min(A, R)`` tunes a device k after j only where ``A_k < R_j`` can hold: a device
        that needs more than it tolerates (``A > R``) waits until every device that would
        disturb it is done."""
        need = self._key(st, r, c, g)
        robust = float(params["cap_safety"]) * 3.0 * float(params["floor_fraction"])
        return min(need, robust * self._min_threshold(st, r, c))

    def _repair_list(self, ctx: SweepContext, st: _State, p: int) -> list[tuple[int, int]]:
        cache = getattr(ctx, "_tune_repair", None)
        if cache is not None and cache[0] == p:
            return list(cache[1])
        flagged = np.isin(st.status, (STATUS["pending"], STATUS["deferred"]))
        devices = [(int(r), int(c)) for r, c in np.argwhere(flagged)]
        devices.sort(key=lambda d: -self._order_key(st, d[0], d[1], ctx.params))
        ctx._tune_repair = (p, devices)  # type: ignore[attr-defined]
        return devices

    def _settle(
        self, ctx: SweepContext, st: _State, *, last: bool, rounds: int | None = None
    ) -> None:
        """Re-verify the possible victims of the pulses since the last settle and repair
        those out of the band, up to ``settle_rounds`` rounds. A tuned device can only have
        moved if some pulse exceeded its floor under V/3: ``V > 3 f m`` with ``m`` its
        smaller threshold (known, or a low quantile of the known ones), so only those are
        read."""
        if self._learning(ctx, st):
            return
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
                g = self._read(ctx, st, r, c, settings).conductance_s
                st.reads[r, c] += 1
                st.g[r, c] = g
                if abs(g / st.targets[r, c] - 1) > tol:
                    st.status[r, c] = STATUS["pending"]
                    flagged.append((r, c))
                    ctx.parameter(r, c, "tune_g_s", g, "S")
            if not flagged:
                return
            flagged.sort(key=lambda d: -self._order_key(st, d[0], d[1], ctx.params))
            for r, c in flagged:
                ctx.check_stop()
                self._tune(ctx, st, r, c, first=False, last=last)

    def _read(self, ctx: SweepContext, st: _State, r: int, c: int, settings: ReadSettings) -> Any:
        """One stored read of (r, c), its bus round trips added to the device's."""
        with BusCounter.on(ctx.station.transports.values()) as bus:
            read = ctx.read(r, c, settings)
        st.trips[r, c] += bus.round_trips
        return read

    def _learning(self, ctx: SweepContext, st: _State) -> bool:
        return not self._has_profile(st) and not getattr(ctx, "_tune_learned", False)

    def _verify(self, ctx: SweepContext, st: _State, p: int) -> None:
        ctx._tune_learned = True  # type: ignore[attr-defined]
        """Averaged read of every device in play; those beyond ``verify_band`` x the
        tolerance (or failed / deferred ones with attempts left) become pending."""
        tol = float(ctx.params["tolerance"]) * float(ctx.params["verify_band"])
        settings = ReadSettings(read_v=0.2, averages=32, nplc=1.0, current_limit_a=1e-4)
        for r, c in self._devices(st):
            code = int(st.status[r, c])
            if code in (STATUS["stuck"], STATUS["skipped"]):
                continue
            if code == STATUS["deferred"]:
                continue  # retried with the station's limit in this pass's repairs
            if code == STATUS["failed"]:
                if st.attempts[r, c] < MAX_ATTEMPTS:
                    st.status[r, c] = STATUS["pending"]
                    ctx.parameter(r, c, "tune_status", float(STATUS["pending"]))
                continue
            read = self._read(ctx, st, r, c, settings)
            st.reads[r, c] += 1
            g = read.conductance_s
            st.g[r, c] = g
            ctx.parameter(r, c, "tune_g_s", g, "S")
            ctx.parameter(r, c, "tune_reads", st.reads[r, c])
            if abs(g / st.targets[r, c] - 1) > tol:
                st.status[r, c] = STATUS["pending"]
                ctx.parameter(r, c, "tune_status", float(STATUS["pending"]))
        ctx._tune_repair = None  # type: ignore[attr-defined]
        # protect the devices within the band now (the others are repaired anyway)
        st.protect_v = math.inf
        for r, c in np.argwhere(st.status == STATUS["tuned"]):
            st.protect_v = min(st.protect_v, self._min_threshold(st, int(r), int(c)))
        done = np.isin(st.status, (STATUS["tuned"],)).sum()
        total = np.isfinite(st.tset.targets_s).sum()
        print(
            f"tune pass {p}: {int(done)} of {int(total)} devices within "
            f"{tol * 100:.2g} % by the verification read, "
            f"{int((st.status == STATUS['pending']).sum())} to repair",
            file=sys.stderr,
        )

    def _cap_and_width(
        self, ctx: SweepContext, st: _State, r: int, c: int, lift: bool
    ) -> tuple[float, float, float]:
        """(set cap V, reset cap V, pulse width s) for device (r, c) (module docstring):
        the shortest width at which the amplitude the device needs fits under the cap
        that protects the devices tuned so far. When nothing fits, 1 ms pulses (above
        the floor, the disturbance per unit of change is smallest at the shortest
        width) with the cap just above what the device needs."""
        limits = ctx.ops.limits
        station_cap = float(limits.max_write_v)
        max_w = float(getattr(limits, "max_pulse_width_s", 0.1))
        if not math.isfinite(st.protect_v):
            return station_cap, station_cap, WIDTHS_S[0]
        if lift:
            # deferred: it reached its cap without moving; 0.25 V more each time (not the
            # station's limit at once: under V/3 that would disturb most of the array)
            up = min(station_cap, float(st.capv[r, c]) + LIFT_STEP_V)
            return up, up, WIDTHS_S[0]
        f = float(ctx.params["floor_fraction"])
        protect = min(station_cap, float(ctx.params["cap_safety"]) * 3.0 * f * st.protect_v)
        s, x = self._thresholds(st, r, c)
        med_s, med_x = self._population(st, 0.5)
        s = s if math.isfinite(s) else med_s
        x = x if math.isfinite(x) else med_x
        v0 = 0.05

        def amp(th: float, w: float, margin: float) -> float:
            # amplitude for a large step (0.3 in ln G) at width w (s), plus a margin
            return th + v0 * math.log(0.3 / (0.02 * w / 1e-3)) + margin

        need = self._key(st, r, c)
        if STRICT_CAPS:
            w = WIDTHS_S[-1]
            for w in WIDTHS_S:
                if w >= max_w or amp(need, w, 0.05) <= protect:
                    break
            return protect, protect, min(w, max_w)
        for w in WIDTHS_S:
            if w > max_w:
                break
            if amp(need, w, 0.05) <= protect:
                caps = [
                    protect if amp(th, w, 0.05) <= protect else amp(th, w, 0.15) for th in (s, x)
                ]
                return min(station_cap, caps[0]), min(station_cap, caps[1]), w
        w = WIDTHS_S[0]
        return (
            min(station_cap, max(protect, amp(s, w, 0.15))),
            min(station_cap, max(protect, amp(x, w, 0.15))),
            w,
        )

    def _tune(
        self, ctx: SweepContext, st: _State, r: int, c: int, *, first: bool, last: bool = False
    ) -> None:
        code = int(st.status[r, c])
        if code in (STATUS["stuck"], STATUS["skipped"]):
            return
        if not first and code not in (STATUS["pending"], STATUS["deferred"]):
            return
        target = float(st.targets[r, c])
        tol = float(ctx.params["tolerance"])
        with BusCounter.on(ctx.station.transports.values()) as bus:
            if ctx.params["algorithm"] == "conventional":
                res = conventional(
                    ctx, r, c, target, ConventionalSettings(tolerance_rel=tol), bus=bus
                )
                cap = float(ctx.ops.limits.max_write_v)
            else:
                lift = code == STATUS["deferred"] and not last
                if first and not self._has_profile(st):
                    # the learning pass: nothing known to protect, the station's limit
                    cap_set = cap_reset = float(ctx.ops.limits.max_write_v)
                    width = WIDTHS_S[0]
                else:
                    cap_set, cap_reset, width = self._cap_and_width(ctx, st, r, c, lift)
                cap = min(cap_set, cap_reset)
                settings = AdaptiveSettings(
                    tolerance_rel=tol,
                    width_s=width,
                    scheme="v/3",
                    set_ramp=Ramp(0.4, 0.08, cap_set),
                    reset_ramp=Ramp(0.4, 0.08, cap_reset),
                )
                s, x = self._thresholds(st, r, c)
                res = adaptive(
                    ctx, r, c, target, settings,
                    set_threshold_v=s if math.isfinite(s) else None,
                    reset_threshold_v=x if math.isfinite(x) else None,
                    prior=getattr(ctx, "_tune_prior", None), bus=bus,
                )  # fmt: skip
        self._record(ctx, st, r, c, res, cap)

    def _record(
        self, ctx: SweepContext, st: _State, r: int, c: int, res: TuneResult, cap: float
    ) -> None:
        st.attempts[r, c] += 1
        st.capv[r, c] = max(st.capv[r, c], cap)
        vmax = float(getattr(ctx, "_tune_vmax", 0.0))
        ctx._tune_vmax = max(vmax, res.max_amplitude_v)  # type: ignore[attr-defined]
        st.pulses[r, c] += res.pulses
        st.reads[r, c] += res.reads
        st.trips[r, c] += max(res.round_trips, 0)
        st.floor[r, c] += res.floor_s
        st.g[r, c] = res.conductance_s
        if math.isfinite(res.set_threshold_v):
            st.set_v[r, c] = res.set_threshold_v
        if math.isfinite(res.reset_threshold_v):
            st.reset_v[r, c] = abs(res.reset_threshold_v)
        station_cap = float(ctx.ops.limits.max_write_v)
        capped = cap < station_cap - 1e-6
        if res.outcome == "tuned":
            st.status[r, c] = STATUS["tuned"]
        elif capped:
            st.status[r, c] = STATUS["deferred"]
        elif res.outcome == "stuck":
            st.status[r, c] = STATUS["stuck"]
            self._compensate(ctx, st, r, c)
        else:
            st.status[r, c] = STATUS["failed"]
        if res.outcome in ("tuned", "failed"):
            st.protect_v = min(st.protect_v, self._min_threshold(st, r, c))
        self._store(ctx, st, r, c)

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
