"""The sweep runner: what every characterization sweep shares.

A sweep kind (``map``, ``thresholds``, ``noise`` ...) is a subclass of :class:`Sweep`
registered with :func:`register_sweep`. It declares its parameters (each a
:class:`~nvmlab.steps.Param` with unit and allowed range), cuts its work into *units*
(:meth:`Sweep.plan`: a device, a row, a temperature ...), measures one unit at a time
(:meth:`Sweep.run_unit`) and, once every unit is done, derives the chip's parameters from
what the units stored (:meth:`Sweep.finish`).

:func:`run_sweep` does the rest, the same way for every kind:

1. checks every parameter, the chip (registered, of an array kind the sweep measures)
   and the sweep's own rules (:meth:`Sweep.check`: a temperature in the chamber's range,
   a sample no larger than the array) *before any instrument is touched*;
2. starts a run (or resumes one: ``resume=RUN``), plans the units with a generator seeded
   from the run's seed, so a resumed run plans the same units, and skips those completed
   anywhere in the run's resume chain (:func:`nvmlab.storage.completed_units`);
3. measures each remaining unit inside an atomic storage unit
   (:meth:`RecordWriter.unit <nvmlab.storage.writer.RecordWriter.unit>`): its raw reads,
   pulses, traces and per-device parameters are committed together or, if the process
   dies inside the unit, the unit is redone on resume and its partial records ignored;
4. shows progress with an ETA (tqdm) or calls a progress callback;
5. stops at the next safe point on Ctrl-C or SIGTERM (the run is stored ``aborted`` and can
   be resumed), leaving the station safe (SMU outputs off, board lines grounded);
6. calls :meth:`Sweep.finish`, stores its summary with the run and merges its per-device
   arrays into the chip's profile (:func:`nvmlab.characterization.profile.update_profile`).

Units: V, A, S, s, C.
"""

from __future__ import annotations

import abc
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nvmlab.errors import ConfigError
from nvmlab.instruments.arrays import ArrayOperations, DeviceRead, ReadSettings, WriteScheme
from nvmlab.steps import Param, StepContext, StepKind, UnitGuard, register_step
from nvmlab.storage.jsonable import jsonable as _jsonable

if TYPE_CHECKING:
    from nvmlab.instruments.station import Station
    from nvmlab.storage.database import Database
    from nvmlab.storage.inventory import RegisteredChip
    from nvmlab.storage.profile import ChipProfile
    from nvmlab.storage.writer import RecordWriter

__all__ = [
    "ProfileUpdate",
    "Sweep",
    "SweepContext",
    "SweepResult",
    "SweepUnit",
    "check_station_limits",
    "choose_devices",
    "devices_by_row",
    "get_sweep",
    "register_sweep",
    "run_sweep",
    "sweep_kinds",
]

#: Largest ``sample`` any sweep accepts (devices); the chip's size is checked too.
MAX_SAMPLE = 1 << 24


@dataclass(frozen=True)
class SweepUnit:
    """One atomic, resumable piece of a sweep.

    ``key`` is unique within the run (``"device-3-5"``, ``"temperature-40C"``);
    ``devices`` the devices it measures; ``info`` anything JSON-able the sweep needs (a
    temperature, a state). A unit with a single device records that device on its storage
    unit (row, col).
    """

    key: str
    devices: tuple[tuple[int, int], ...] = ()
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class ProfileUpdate:
    """What :meth:`Sweep.finish` derives: per-device ``arrays`` (rows x cols, NaN where
    not measured; the defect class uses -1) named as :data:`nvmlab.storage.profile.
    DEVICE_ARRAYS`, profile ``scalars`` (:data:`nvmlab.storage.profile.SCALARS`) and a
    JSON-able ``summary`` (distributions, fits, figures) stored with the run and in the
    profile's meta under the sweep's kind."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepResult:
    """How a sweep ended: run id, status (``completed`` / ``aborted`` / ``failed``), units
    measured now and skipped as done earlier, the summary and the new profile's id."""

    run_id: int
    status: str
    units_total: int
    units_measured: int
    units_skipped: int
    summary: dict[str, Any] = field(default_factory=dict)
    profile_id: int | None = None
    instrument_s: float = 0.0
    wall_s: float = 0.0
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


class SweepContext:
    """What a sweep's :meth:`~Sweep.run_unit` and :meth:`~Sweep.finish` work with.

    Attributes: ``station`` (open), ``ops`` (:class:`ArrayOperations` on its SMU and
    board), ``db``, ``run_id``, ``chip`` (the registered chip: ``id``, ``name``, ``kind``,
    ``rows``, ``cols``), ``writer`` (the run's :class:`RecordWriter`), ``clock`` (the
    station's), ``params`` (validated), ``rng`` (seeded from the run's seed), ``profile``
    (the chip's newest stored profile, or None).

    The helpers :meth:`read` and :meth:`pulse` do the operation *and* store it, so a sweep
    keeps its raw data without thinking about it.
    """

    def __init__(
        self,
        *,
        station: Any,
        ops: ArrayOperations,
        db: Database,
        run_id: int,
        chip: RegisteredChip,
        writer: RecordWriter,
        params: dict[str, Any],
        rng: np.random.Generator,
        profile: ChipProfile | None,
        stop_check: Callable[[], None] | None = None,
        unit_prefix: str = "",
        seed: int = 0,
    ) -> None:
        self.station = station
        self.ops = ops
        self.db = db
        self.run_id = run_id
        self.chip = chip
        self.writer = writer
        self.clock = station.clock
        self.params = params
        self.rng = rng
        self.profile = profile
        self._stop_check = stop_check
        #: the prefix of this sweep's unit keys in a job's run: records of other steps'
        #: units are not this sweep's to read back
        self.unit_prefix = unit_prefix
        #: the run's seed (what ``rng`` is derived from), for draws that every unit and
        #: every resume must see alike
        self.seed = seed
        self._completed_attempts: set[int] | None = None

    # -- safe points ------------------------------------------------------------------
    def check_stop(self) -> None:
        """Raise KeyboardInterrupt if Ctrl-C or SIGTERM asked to stop (call between
        operations that may be left half done, e.g. between two devices)."""
        if self._stop_check is not None:
            self._stop_check()

    # -- measured and stored operations -----------------------------------------------
    def read(
        self,
        row: int,
        col: int,
        settings: ReadSettings | None = None,
        *,
        temperature_c: float | None = None,
    ) -> DeviceRead:
        """Read device (row, col) through the array operations and store the read (its
        mean current, voltage and conductance; ``temperature_c`` if given)."""
        read = self.ops.read_device(row, col, settings)
        self.writer.add_read(
            row, col, read.read_v, read.current_a, read.conductance_s, temperature_c
        )
        return read

    def pulse(
        self,
        row: int,
        col: int,
        amplitude_v: float,
        width_s: float,
        *,
        scheme: WriteScheme = "v/2",
    ) -> None:
        """One write pulse (V, s; positive sets) on device (row, col), stored."""
        self.ops.write_pulse(row, col, amplitude_v, width_s, scheme=scheme)
        self.writer.add_pulse(row, col, amplitude_v, width_s, 1 if amplitude_v > 0 else -1, scheme)

    def parameter(
        self, row: int, col: int, name: str, value: float | None, unit: str = "",
        *, text: str | None = None,
    ) -> None:  # fmt: skip
        """Store a per-device parameter (NaN and None stored as text ``not measured``)."""
        if value is None or not math.isfinite(value):
            self.writer.add_device_parameter(
                row, col, name, None, unit=unit or None, text_value=text or "not measured"
            )
        else:
            self.writer.add_device_parameter(
                row, col, name, float(value), unit=unit or None, text_value=text
            )

    # -- reading back what the run stored ----------------------------------------------
    def _attempts(self) -> set[int]:
        from nvmlab.storage.runs import unit_attempts

        if self._completed_attempts is None:
            self._completed_attempts = {
                int(a["id"])
                for a in unit_attempts(self.db, self.run_id)
                if a["status"] == "completed" and str(a["unit_key"]).startswith(self.unit_prefix)
            }
        return self._completed_attempts

    def chain_records(
        self, table: str, columns: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Records of the scalar table ``table`` (``reads``, ``pulses``,
        ``device_parameters``, ``tuning_outcomes``; traces: :meth:`chain_traces`) stored by this run and the runs it resumes, from *completed* units only (the
        partial records of an interrupted unit are ignored), oldest first, one array per
        column. Flushes the writer first."""
        from nvmlab.storage.query import fetch_arrays
        from nvmlab.storage.runs import resume_chain

        self.writer.flush()
        self._completed_attempts = None
        wanted = list(columns) if columns is not None else None
        if wanted is not None and "attempt_id" not in wanted:
            wanted.append("attempt_id")
        with self.db.read_connection() as conn:
            chain = list(reversed(resume_chain(conn, self.run_id)))
        parts = [fetch_arrays(self.db, table, columns=wanted, run_id=r) for r in chain]
        done = self._attempts()
        merged: dict[str, np.ndarray] = {}
        for name in parts[0]:
            merged[name] = np.concatenate([p[name] for p in parts]) if parts else np.array([])
        attempts = merged["attempt_id"]
        keep = np.array(
            [a is not None and not _isnan(a) and int(a) in done for a in attempts], dtype=bool
        )
        return {name: values[keep] for name, values in merged.items()}

    def chain_traces(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Traces (of ``kind``, or all) stored by completed units of this run's resume
        chain, oldest first, as dicts with ``x`` and ``y`` float64 arrays and their
        metadata (:func:`nvmlab.storage.query.load_traces`). Flushes the writer first."""
        from nvmlab.storage.query import load_traces
        from nvmlab.storage.runs import resume_chain

        self.writer.flush()
        self._completed_attempts = None
        with self.db.read_connection() as conn:
            chain = list(reversed(resume_chain(conn, self.run_id)))
        done = self._attempts()
        return [
            trace
            for run in chain
            for trace in load_traces(self.db, run, kind=kind)
            if trace.get("attempt_id") is not None and int(trace["attempt_id"]) in done
        ]

    def chain_parameters(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The per-device parameters ``names`` stored by completed units of this run's
        chain, each as a (rows, cols) array (NaN where none was stored; the newest value
        wins)."""
        records = self.chain_records("device_parameters", ["row", "col", "name", "value"])
        out = {n: np.full((self.chip.rows, self.chip.cols), np.nan) for n in names}
        for r, c, name, value in zip(
            records["row"], records["col"], records["name"], records["value"], strict=True
        ):
            if name in out:
                out[name][int(r), int(c)] = np.nan if value is None else float(value)
        return out


def _isnan(value: Any) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


class Sweep(abc.ABC):
    """Base of every sweep kind (see the module docstring). Subclasses set ``kind``,
    ``summary``, ``params`` and ``array_kinds`` and implement :meth:`plan`,
    :meth:`run_unit` and :meth:`finish`."""

    kind: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    #: The array kinds (``"memristor"``, ``"eflash"``) this sweep measures.
    array_kinds: ClassVar[tuple[str, ...]] = ("memristor",)
    #: Longer help for ``nvmlab characterize KIND --help`` (what is measured, how).
    description: ClassVar[str] = ""

    def check(self, params: dict[str, Any], chip: RegisteredChip, station: Any) -> None:
        """Refuse what this sweep cannot do with these parameters on this chip and station
        (ConfigError naming the parameter, the value and what is allowed). Called before
        any instrument is touched; ``station`` is not open yet (its ``limits`` and
        ``config`` are known). The default checks ``sample`` against the array size."""
        sample = params.get("sample")
        default = next((p.default for p in self.params if p.name == "sample"), None)
        # the default sample (e.g. 64 devices) means "every device" on a smaller chip
        if sample is not None and sample > chip.rows * chip.cols and sample != default:
            raise ConfigError(
                f"value {sample} is not allowed; chip {chip.name!r} has {chip.rows} x "
                f"{chip.cols} = {chip.rows * chip.cols} devices; allowed: 0 (every device) "
                f"to {chip.rows * chip.cols}",
                field="sample",
            )

    @abc.abstractmethod
    def plan(
        self, params: dict[str, Any], chip: RegisteredChip, rng: np.random.Generator,
        profile: ChipProfile | None,
    ) -> list[SweepUnit]:  # fmt: skip
        """The units of the sweep, in order (deterministic for a given ``rng`` seed)."""

    def prepare(self, ctx: SweepContext) -> None:
        """Set the instruments up before the first unit (e.g. read settings). Called again
        when a run resumes. Default: nothing."""
        return None

    @abc.abstractmethod
    def run_unit(self, ctx: SweepContext, unit: SweepUnit) -> None:
        """Measure one unit, storing raw data and per-device parameters through ``ctx``."""

    @abc.abstractmethod
    def finish(self, ctx: SweepContext) -> ProfileUpdate:
        """Derive the chip's parameters from the stored records of the whole chain."""

    def estimate_s(self, params: dict[str, Any], chip: RegisteredChip | None) -> float | None:
        """Instrument time (s) the sweep will take, or None if unknown."""
        return None


_SWEEPS: dict[str, Sweep] = {}


def register_sweep(cls: type[Sweep]) -> type[Sweep]:
    """Class decorator: register a sweep kind here and as a step kind (for job files)."""
    sweep = cls()
    if not sweep.kind:
        raise ValueError(f"{cls.__name__} has no kind")
    _SWEEPS[sweep.kind] = sweep

    def step(context: StepContext, params: dict[str, Any]) -> SweepResult:
        return run_sweep(
            sweep.kind,
            station=context.station,
            db=context.database,
            chip=context.chip,
            params=params,
            run_id=context.run_id,
            progress=context.progress,
            unit_prefix=context.unit_prefix,
            stop_check=context.stop_check,
            guard=context.guard,
            seed=context.extras.get("seed"),
        )

    def estimate(params: dict[str, Any], chip: Any = None) -> float | None:
        return sweep.estimate_s(params, chip)

    step.__qualname__ = f"characterize_{sweep.kind}"
    register_step(
        sweep.kind,
        summary=sweep.summary,
        params=sweep.params,
        estimate_s=estimate,  # type: ignore[arg-type]
    )(step)
    return cls


def get_sweep(kind: str) -> Sweep:
    """The sweep ``kind``; ConfigError listing the kinds if unknown."""
    _load_builtin()
    try:
        return _SWEEPS[kind]
    except KeyError:
        raise ConfigError(
            f"unknown characterization kind {kind!r}; allowed: {', '.join(sorted(_SWEEPS))}",
            field="KIND",
        ) from None


def sweep_kinds() -> dict[str, Sweep]:
    """Every registered sweep kind, by name."""
    _load_builtin()
    return dict(_SWEEPS)


#: Modules holding the built-in sweeps (imported on first use).
BUILTIN_MODULES = (
    "nvmlab.characterization.defects",
    "nvmlab.characterization.forming",
    "nvmlab.characterization.iv",
    "nvmlab.characterization.thresholds",
    "nvmlab.characterization.noise",
    "nvmlab.characterization.temperature",
    "nvmlab.characterization.retention",
    "nvmlab.characterization.disturb",
    "nvmlab.characterization.endurance",
    "nvmlab.characterization.eflash",
    "nvmlab.characterization.products",
)


def _load_builtin() -> None:
    import importlib

    for name in BUILTIN_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


#: Station limit attributes: unit and name in messages.
_STATION_LIMITS: dict[str, tuple[str, str]] = {
    "max_read_v": ("V", "read limit"),
    "max_write_v": ("V", "write limit"),
    "max_forming_v": ("V", "forming limit"),
    "max_current_a": ("A", "current limit"),
    "max_pulse_width_s": ("s", "longest pulse"),
}


def check_station_limits(params: Mapping[str, Any], limits: Any, **names: str) -> None:
    """Refuse a parameter beyond the station's safety limits, before anything is sent.

    ``names`` maps a parameter to a :class:`~nvmlab.instruments.safety.SafetyLimits`
    attribute, e.g. ``check_station_limits(params, station.limits, read_v="max_read_v",
    width_s="max_pulse_width_s")``; an unset (None) parameter is not checked. The
    ConfigError names the parameter, its value and the limit."""
    for name, attribute in names.items():
        value = params.get(name)
        if value is None:
            continue
        cap = float(getattr(limits, attribute))
        unit, what = _STATION_LIMITS[attribute]
        if abs(float(value)) > cap:
            raise ConfigError(
                f"value {float(value):g} {unit} is not allowed; the station's {what} is "
                f"{cap:g} {unit}",
                field=name,
            )


def devices_by_row(devices: Sequence[tuple[int, int]]) -> dict[int, list[tuple[int, int]]]:
    """``devices`` grouped by row, rows and devices in the order given."""
    rows: dict[int, list[tuple[int, int]]] = {}
    for r, c in devices:
        rows.setdefault(r, []).append((r, c))
    return rows


def choose_devices(
    chip: RegisteredChip,
    sample: int,
    rng: np.random.Generator,
    *,
    profile: ChipProfile | None = None,
    functional_only: bool = True,
) -> list[tuple[int, int]]:
    """The devices a sweep measures: every device (``sample`` 0) or ``sample`` drawn at
    random without replacement, in row-major order. With a profile that holds a defect
    map and ``functional_only``, devices classified stuck are left out (a sample is then
    drawn among the functional ones)."""
    every = [(r, c) for r in range(chip.rows) for c in range(chip.cols)]
    if functional_only and profile is not None and profile.defect_class is not None:
        defect = profile.defect_class
        every = [(r, c) for r, c in every if defect[r, c] not in (1, 2)]
    if sample == 0 or sample >= len(every):
        return every
    picked = np.sort(rng.choice(len(every), size=sample, replace=False))
    return [every[i] for i in picked]


# ----------------------------------------------------------------------------- progress


class _Progress:
    """Units done / total with an ETA on stderr (tqdm), or a callback ``(done, total)``."""

    def __init__(
        self, kind: str, total: int, done: int, callback: Callable[[int, int], None] | None,
        show: bool,
    ) -> None:  # fmt: skip
        self.callback = callback
        self.done = done
        self.total = total
        self.bar: Any = None
        if show:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=done, desc=kind, unit="unit", file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5, smoothing=0.1,
            )  # fmt: skip

    def step(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextmanager
def _stop_on_signals(enabled: bool) -> Iterator[Callable[[], None]]:
    """SIGINT / SIGTERM only record a request; the runner stops at its next safe point."""
    requested: list[int] = []

    def check() -> None:
        if requested:
            raise KeyboardInterrupt

    if not enabled:
        yield check
        return
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield check
        return
    previous = {}

    def handle(signum: int, frame: Any) -> None:
        if requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        requested.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handle)
    try:
        yield check
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------------ runner


def validate_params(sweep: Sweep, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` checked against the sweep's schema (defaults filled)."""
    kind = StepKind(sweep.kind, sweep.summary, sweep.params, lambda c, p: None)
    return kind.validate(params)


def run_sweep(
    kind: str,
    *,
    station: Station,
    db: Database,
    chip: str,
    params: Mapping[str, Any] | None = None,
    resume: int | None = None,
    run_id: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    show_progress: bool = False,
    handle_signals: bool = False,
    seed: int | None = None,
    unit_prefix: str = "",
    stop_check: Callable[[], None] | None = None,
    guard: UnitGuard | None = None,
) -> SweepResult:
    """Run sweep ``kind`` on ``station`` (open, or opened and closed here) for registered
    chip ``chip``, storing to ``db`` (see the module docstring).

    ``resume``: a run of this kind to resume (its parameters are used; ``params`` must then
    be empty or equal). ``run_id``: a ``running`` run started by a caller (a job) to
    record into. ``progress(done, total)`` is called after each unit; ``show_progress``
    draws a bar with ETA on stderr; ``handle_signals`` makes Ctrl-C / SIGTERM stop at the
    next unit boundary (the CLI's behaviour). ``seed`` (default 0) seeds the device
    sample.

    Inside a job (``run_id`` given): ``unit_prefix`` prefixes every unit key (the step's
    own namespace in the job's run), ``stop_check`` replaces the signal handling (the job
    handles signals) and ``guard`` (:class:`~nvmlab.steps.UnitGuard`) is asked before
    every attempt at a unit and after an attempt failed: when it recovers the instruments
    the unit is redone on a fresh context (new array operations, the sweep's ``prepare``
    again, state rebuilt from the completed units), the failed attempt's records kept
    and marked ``failed``.
    """
    from nvmlab.characterization.profile import update_profile
    from nvmlab.errors import StorageError
    from nvmlab.storage.inventory import require_chip
    from nvmlab.storage.profile import load_profile
    from nvmlab.storage.runs import completed_units, finish_run, resume_run, start_run
    from nvmlab.storage.writer import RecordWriter

    sweep = get_sweep(kind)
    registered = require_chip(db, chip)
    if registered.kind not in sweep.array_kinds:
        raise ConfigError(
            f"chip {registered.name!r} is a {registered.kind} array; the {kind!r} sweep "
            f"measures {' or '.join(sweep.array_kinds)} arrays",
            field="--chip",
        )
    if resume is not None:
        from nvmlab.storage.runs import require_run

        with db.read_connection() as conn:
            old = require_run(conn, db, resume)
        if old.kind != f"characterize-{kind}":
            raise ConfigError(
                f"run {resume} is a {old.kind!r} run; allowed: a characterize-{kind} run",
                field="--resume",
            )
        if old.chip_id != registered.id:
            raise ConfigError(
                f"run {resume} measured another chip (id {old.chip_id}), not {chip!r}",
                field="--resume",
            )
        stored = dict((old.config or {}).get("params", {}))
        given = validate_params(sweep, params or {}) if params else None
        if given is not None and given != {**{p.name: p.default for p in sweep.params}, **stored}:
            changed = sorted(k for k in given if given.get(k) != stored.get(k))
            raise ConfigError(
                f"a resumed run keeps its parameters; {', '.join(changed)} differ from run "
                f"{resume}'s (give no options with --resume)",
                field="--resume",
            )
        # parameters left unset (None) were stored as such; they validate as unset
        checked = validate_params(sweep, {k: v for k, v in stored.items() if v is not None})
        seed = old.seed if old.seed is not None else 0
    else:
        checked = validate_params(sweep, params or {})
        seed = 0 if seed is None else int(seed)
    sweep.check(checked, registered, station)
    try:
        profile: ChipProfile | None = load_profile(db, registered.name)
    except StorageError:
        profile = None

    opened_here = not getattr(station, "is_open", True)
    if opened_here:
        station.open()
    wall_start = time.perf_counter()
    instrument_start = station.clock.now()
    new_run = run_id
    if new_run is None:
        config = {"kind": kind, "params": checked, "station": getattr(station, "name", None)}
        if resume is not None:
            new_run = resume_run(db, resume)
        else:
            new_run = start_run(
                db, f"characterize-{kind}", config=config, chip_id=registered.id, seed=seed
            )
    assert new_run is not None
    status = "failed"
    message: str | None = None
    result = SweepResult(new_run, status, 0, 0, 0)
    ops = ArrayOperations(station.smu, station.board, station.limits)
    rng = np.random.default_rng(seed)
    units = sweep.plan(checked, registered, rng, profile)
    done_keys = completed_units(db, new_run)
    todo = [u for u in units if unit_prefix + u.key not in done_keys]
    result.units_total = len(units)
    result.units_skipped = len(units) - len(todo)
    bar = _Progress(kind, len(units), result.units_skipped, progress, show_progress)
    try:
        with (
            _stop_on_signals(handle_signals and stop_check is None) as own_check,
            RecordWriter(db, new_run, chip_id=registered.id, clock=station.clock) as writer,
        ):
            check_stop = stop_check if stop_check is not None else own_check
            # a job finishes the unit in flight before it stops (its stop check is asked
            # between units only); a command alone stops between two devices of a unit
            inner_check = None if stop_check is not None else own_check

            def fresh_context() -> SweepContext:
                nonlocal ops
                ops = ArrayOperations(station.smu, station.board, station.limits)
                return SweepContext(
                    station=station, ops=ops, db=db, run_id=new_run, chip=registered,
                    writer=writer, params=checked, rng=np.random.default_rng(seed + 1),
                    profile=profile, stop_check=inner_check, unit_prefix=unit_prefix, seed=seed,
                )  # fmt: skip

            ctx = fresh_context()
            prepared = False
            for unit in todo:
                check_stop()
                key = unit_prefix + unit.key
                one = unit.devices[0] if len(unit.devices) == 1 else (None, None)
                attempt = 0
                while True:
                    attempt += 1
                    if guard is not None:
                        guard.before_unit(key)
                    try:
                        if not prepared:
                            sweep.prepare(ctx)
                            prepared = True
                        with writer.unit(key, kind=kind, row=one[0], col=one[1]):
                            sweep.run_unit(ctx, unit)
                            if guard is not None:
                                guard.unit_done(key)
                        break
                    except Exception as exc:
                        if guard is None or not guard.recover(exc, key, attempt):
                            raise
                        # the failed attempt may have left state half-updated in memory
                        # and the instruments half-configured: start the unit afresh
                        ctx = fresh_context()
                        prepared = False
                result.units_measured += 1
                bar.step()
            check_stop()
            if not prepared:
                sweep.prepare(ctx)
            update = sweep.finish(ctx)
            writer.flush()
        result.summary = update.summary
        result.arrays = update.arrays
        result.profile_id = update_profile(db, registered.name, update, run_id=new_run, kind=kind)
        status = "completed"
    except KeyboardInterrupt:
        status, message = "aborted", "interrupted (Ctrl-C or SIGTERM); resume with --resume"
        raise
    except BaseException as exc:
        status, message = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        bar.close()
        try:
            ops.finish()
        except Exception as exc:  # noqa: BLE001 - the station's own exit retries
            message = (message or "") + f"; safe state: {exc}"
        finally:
            if run_id is None:
                finish_run(db, new_run, status, message)
            if opened_here:
                station.close()
        result.status = status
        result.instrument_s = station.clock.now() - instrument_start
        result.wall_s = time.perf_counter() - wall_start
        if status == "completed" and run_id is None:
            _store_summary(db, new_run, result.summary)
    return result


def _store_summary(db: Database, run_id: int, summary: dict[str, Any]) -> None:
    """Keep the sweep's summary in the run's config (``summary``)."""
    from sqlalchemy import select, update

    from nvmlab.storage.models import Run

    with db.engine.begin() as conn:
        config = conn.execute(select(Run.config).where(Run.id == run_id)).scalar_one()
        conn.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(config={**(config or {}), "summary": _jsonable(summary)})
        )


#: numpy values to plain JSON (kept here for the modules that import it from here)
jsonable = _jsonable
