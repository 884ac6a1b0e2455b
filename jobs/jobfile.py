"""Job files: what an unattended run does, in one TOML file, checked in full up front.

Example (``docs/job-file.md`` lists every key with its default)::

    [job]
    name = "overnight-W07"          # default: the file's name without .toml
    station = "station.toml"        # a station file (or a [bench] section instead)
    database = "sqlite:///lab.sqlite"  # optional; --db and NVMLAB_DB win over it
    output = "nvmlab-runs"          # where each run's folder (log, report) goes
    seed = 0                        # seeds the device samples of every step

    [chip]
    name = "W07-D12"                # registered on first use with kind, rows and cols
    kind = "memristor"
    rows = 64
    cols = 64

    [faults]
    retries = 3                     # transient faults per unit before the run fails
    backoff_s = 1.0                 # first wait before a retry (s), doubled each time
    suspend_timeout_s = 3600.0      # chamber alarm / out of band: give up after (s)

    [[steps]]
    kind = "map"

    [[steps]]
    kind = "tune"
    weights = "weights.npy"         # relative paths: from this file's folder
    window = [10e-6, 100e-6]

    [[steps]]
    kind = "report"

Relative paths in a job file are taken from the job file's folder; the defaults of the
outputs (database, run folders, the emulated chip's state file) are in the working
folder. Every problem is a :class:`~nvmlab.errors.ConfigError` naming the file, the field
(``steps[2].window``) and what is allowed; nothing is opened or touched before the whole
file is valid.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvmlab.errors import ConfigError
from nvmlab.steps import StepKind, get_step

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "BenchSpec",
    "ChipSpec",
    "FaultPolicy",
    "JobFile",
    "JobStep",
    "load_job_file",
    "parse_job",
    "SECTIONS",
]

#: Top-level sections of a job file.
SECTIONS = ("job", "bench", "chip", "faults", "steps")
JOB_KEYS = ("name", "station", "database", "output", "seed", "description")
BENCH_KEYS = ("file", "state_file", "rows", "cols", "seed", "array", "smu", "chamber")
CHIP_KEYS = ("name", "kind", "rows", "cols")
FAULT_KEYS = (
    "retries",
    "backoff_s",
    "suspend_timeout_s",
    "poll_s",
    "chamber_band_c",
    "check_chamber",
)
CHIP_KINDS = ("memristor", "eflash")
#: Largest array a job may name (lines).
MAX_LINES = 4096


@dataclass(frozen=True)
class BenchSpec:
    """An in-process emulated bench: a bench file (optional) and overrides, and the chip
    state file that keeps the emulated chip between runs (and across a crash)."""

    file: Path | None = None
    state_file: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChipSpec:
    name: str
    kind: str | None = None
    rows: int | None = None
    cols: int | None = None


@dataclass(frozen=True)
class FaultPolicy:
    """How the job meets faults (times in s of the station's clock, C)."""

    #: Transient faults (timeout, garbled reply, dropped connection) per unit before the
    #: run fails.
    retries: int = 3
    #: Wait before the first retry (s); doubled before each further one.
    backoff_s: float = 1.0
    #: A chamber alarm or a temperature out of band suspends the job; after this long
    #: (s) the run fails instead.
    suspend_timeout_s: float = 3600.0
    #: Poll interval while suspended (s).
    poll_s: float = 30.0
    #: Allowed |PV - SP| between units (C); None: the band is not checked.
    chamber_band_c: float | None = None
    #: Check the chamber's alarms (and band) before every unit (when the station has one).
    check_chamber: bool = True


@dataclass(frozen=True)
class JobStep:
    """One step: its index (from 0), kind, validated parameters and the registered kind."""

    index: int
    kind: str
    params: dict[str, Any]
    step_kind: StepKind

    @property
    def label(self) -> str:
        """``s1-map``: the step's name in unit keys, logs and the summary."""
        return f"s{self.index + 1}-{self.kind}"


@dataclass(frozen=True)
class JobFile:
    """A validated job file (see the module documentation)."""

    source: Path
    name: str
    chip: ChipSpec
    steps: tuple[JobStep, ...]
    station: Path | None = None
    bench: BenchSpec | None = None
    database: str | None = None
    output: Path = Path("nvmlab-runs")
    seed: int = 0
    description: str = ""
    faults: FaultPolicy = FaultPolicy()
    #: The file's text, stored with the run (and in a recording) to rerun it exactly.
    text: str = ""

    @property
    def folder(self) -> Path:
        return self.source.resolve().parent


def _table(data: Mapping[str, Any], key: str, source: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"must be a table ([{key}]), got {value!r}", file=source, field=key)
    return value


def _unknown(table: Mapping[str, Any], allowed: tuple[str, ...], source: str, where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"unknown key {key!r}; allowed: {', '.join(allowed)}",
                file=source,
                field=f"{where}.{key}",
            )


def _string(table: Mapping[str, Any], key: str, source: str, where: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"value {value!r} is not allowed; expected a non-empty string",
            file=source,
            field=f"{where}.{key}",
        )
    return value.strip()


def _int(
    table: Mapping[str, Any], key: str, source: str, where: str, low: int, high: int
) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(
            f"value {value!r} is not allowed; expected an integer from {low} to {high}",
            file=source,
            field=f"{where}.{key}",
        )
    return value


def _float(
    table: Mapping[str, Any], key: str, source: str, where: str, low: float, high: float, unit: str
) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(float(value))
        or not low <= float(value) <= high
    ):
        raise ConfigError(
            f"value {value!r} is not allowed; expected a number from {low:g} to {high:g} {unit}",
            file=source,
            field=f"{where}.{key}",
        )
    return float(value)


def _path(folder: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else folder / path


def _existing(folder: Path, text: str, source: str, where: str, what: str) -> Path:
    path = _path(folder, text)
    if not path.exists():
        raise ConfigError(
            f"{what} {text!r} does not exist (looked for {path}); allowed: a path to an "
            "existing file, relative to the job file's folder",
            file=source,
            field=where,
        )
    return path


def load_job_file(path: str | Path, *, queued: bool = False) -> JobFile:
    """Read and validate job file ``path`` (every section, key and step parameter; the
    files it names exist). Raises :class:`ConfigError` naming the file and field.
    ``queued``: see :func:`parse_job`."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot be read: {exc.strerror or exc}; allowed: an existing job file (TOML)",
            file=source,
            field="file",
        ) from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"is not UTF-8 text ({exc.reason})", file=source, field="file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"is not valid TOML: {exc}", file=source, field="TOML syntax") from None
    return parse_job(data, source=Path(path), text=text, queued=queued)


def parse_job(
    data: Mapping[str, Any], *, source: Path, text: str = "", queued: bool = False
) -> JobFile:
    """Validate the content of a job file (``source`` names it in errors and anchors its
    relative paths). ``queued``: the job goes to the lab's queue, where the worker that
    takes it supplies the station: ``job.station`` is not needed (and ignored when given),
    a ``[bench]`` is refused."""
    name_of_file = str(source)
    folder = source.resolve().parent
    _unknown(data, SECTIONS, name_of_file, "file")
    job = _table(data, "job", name_of_file)
    _unknown(job, JOB_KEYS, name_of_file, "job")
    station_text = _string(job, "station", name_of_file, "job")
    bench_table = data.get("bench")
    if queued:
        if bench_table is not None:
            raise ConfigError(
                "a queued job runs on the instruments of the station whose worker takes it; "
                "an in-process emulated bench cannot be queued (run it with 'nvmlab run', or "
                "serve the bench with 'nvmlab emulate' and start a worker for it)",
                file=name_of_file,
                field="bench",
            )
        station_text = None
    elif (station_text is None) == (bench_table is None):
        raise ConfigError(
            "give exactly one of job.station (a station file) or a [bench] section (an "
            "in-process emulated bench)",
            file=name_of_file,
            field="job.station",
        )
    station = (
        _existing(folder, station_text, name_of_file, "job.station", "station file")
        if station_text is not None
        else None
    )
    bench = _bench(bench_table, folder, name_of_file) if bench_table is not None else None
    database = _string(job, "database", name_of_file, "job")
    if database is not None:
        from nvmlab.dburl import resolve_sqlite_path

        database = resolve_sqlite_path(database, folder)
    output_text = _string(job, "output", name_of_file, "job")
    output = _path(folder, output_text) if output_text is not None else Path("nvmlab-runs")
    seed = _int(job, "seed", name_of_file, "job", 0, 2**31 - 1)
    description = job.get("description", "")
    if not isinstance(description, str):
        raise ConfigError("must be a string", file=name_of_file, field="job.description")

    chip = _chip(_table(data, "chip", name_of_file), name_of_file)
    if bench is not None and bench.state_file is None:
        # the emulated chip must outlive the process (resume after a crash): by default
        # its state is kept in the working folder, named after the chip
        bench = BenchSpec(bench.file, Path(f"{chip.name}.state.npz").resolve(), bench.overrides)
    faults = _faults(_table(data, "faults", name_of_file), name_of_file)

    steps_data = data.get("steps")
    if not isinstance(steps_data, list) or not steps_data:
        raise ConfigError(
            "the job has no steps; add one [[steps]] table per step, each with a kind "
            '(e.g. kind = "map")',
            file=name_of_file,
            field="steps",
        )
    _load_step_kinds()
    steps = []
    for index, entry in enumerate(steps_data):
        where = f"steps[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError("must be a table ([[steps]])", file=name_of_file, field=where)
        kind = entry.get("kind")
        if not isinstance(kind, str):
            raise ConfigError(
                'missing; every step needs a kind (e.g. kind = "map")',
                file=name_of_file,
                field=f"{where}.kind",
            )
        step_kind = get_step(kind, file=name_of_file, where=f"{where}.kind")
        given = {k: v for k, v in entry.items() if k != "kind"}
        params = step_kind.validate(given, file=name_of_file, where=where)
        for param in step_kind.params:
            value = params.get(param.name)
            if not isinstance(value, str) or param.name not in given:
                continue
            if param.path == "in":
                params[param.name] = str(
                    _existing(folder, value, name_of_file, f"{where}.{param.name}", "file")
                )
            elif param.path == "out":
                params[param.name] = str(_path(folder, value))
        steps.append(JobStep(index, kind, params, step_kind))
    return JobFile(
        source=source,
        name=_string(job, "name", name_of_file, "job") or source.stem,
        chip=chip,
        steps=tuple(steps),
        station=station,
        bench=bench,
        database=database,
        output=output,
        seed=seed or 0,
        description=description,
        faults=faults,
        text=text,
    )


def _bench(table: Any, folder: Path, source: str) -> BenchSpec:
    if not isinstance(table, dict):
        raise ConfigError("must be a table ([bench])", file=source, field="bench")
    _unknown(table, BENCH_KEYS, source, "bench")
    file_text = _string(table, "file", source, "bench")
    file = _existing(folder, file_text, source, "bench.file", "bench file") if file_text else None
    state_text = _string(table, "state_file", source, "bench")
    state_file = _path(folder, state_text) if state_text is not None else None
    overrides: dict[str, Any] = {}
    for key in ("rows", "cols"):
        value = _int(table, key, source, "bench", 1, MAX_LINES)
        if value is not None:
            overrides[key] = value
    seed = _int(table, "seed", source, "bench", 0, 2**31 - 1)
    if seed is not None:
        overrides["seed"] = seed
    for key, allowed in (
        ("array", ("memristor", "eflash")),
        ("smu", ("keithley2400", "keithley2636b", "keysight_b2902a")),
        ("chamber", ("espec", "watlow_f4")),
    ):
        value = table.get(key)
        if value is None:
            continue
        if value not in allowed:
            raise ConfigError(
                f"value {value!r} is not allowed; expected one of {', '.join(allowed)}",
                file=source,
                field=f"bench.{key}",
            )
        overrides[{"smu": "smu_model", "chamber": "chamber_model"}.get(key, key)] = value
    # the bench file itself is validated here too: an error names it, not the job file
    from nvmlab.mocks.benchfile import BenchConfig, load_bench_file

    config = load_bench_file(file) if file is not None else BenchConfig()
    try:
        config.with_overrides(**overrides)
    except ConfigError as exc:
        raise ConfigError(str(exc), file=source, field="bench") from None
    return BenchSpec(file=file, state_file=state_file, overrides=overrides)


def _chip(table: dict[str, Any], source: str) -> ChipSpec:
    _unknown(table, CHIP_KEYS, source, "chip")
    name = _string(table, "name", source, "chip")
    if name is None:
        raise ConfigError(
            "missing; the job needs the chip's name (registered, or registered now with "
            "kind, rows and cols)",
            file=source,
            field="chip.name",
        )
    kind = table.get("kind")
    if kind is not None and kind not in CHIP_KINDS:
        raise ConfigError(
            f"value {kind!r} is not allowed; expected one of {', '.join(CHIP_KINDS)}",
            file=source,
            field="chip.kind",
        )
    return ChipSpec(
        name=name,
        kind=kind,
        rows=_int(table, "rows", source, "chip", 1, MAX_LINES),
        cols=_int(table, "cols", source, "chip", 1, MAX_LINES),
    )


def _faults(table: dict[str, Any], source: str) -> FaultPolicy:
    _unknown(table, FAULT_KEYS, source, "faults")
    default = FaultPolicy()
    check = table.get("check_chamber", default.check_chamber)
    if not isinstance(check, bool):
        raise ConfigError(
            f"value {check!r} is not allowed; expected true or false",
            file=source,
            field="faults.check_chamber",
        )
    retries = _int(table, "retries", source, "faults", 0, 100)
    backoff = _float(table, "backoff_s", source, "faults", 0.0, 3600.0, "s")
    timeout = _float(table, "suspend_timeout_s", source, "faults", 0.0, 7 * 86400.0, "s")
    poll = _float(table, "poll_s", source, "faults", 0.1, 3600.0, "s")
    band = _float(table, "chamber_band_c", source, "faults", 0.01, 100.0, "C")
    return FaultPolicy(
        retries=default.retries if retries is None else retries,
        backoff_s=default.backoff_s if backoff is None else backoff,
        suspend_timeout_s=default.suspend_timeout_s if timeout is None else timeout,
        poll_s=default.poll_s if poll is None else poll,
        chamber_band_c=band,
        check_chamber=check,
    )


#: Modules that register step kinds (imported before a job file's steps are looked up).
STEP_MODULES = (
    "nvmlab.characterization.sweep",
    "nvmlab.tuning.array",
    "nvmlab.tuning.eflash_sweep",
    "nvmlab.jobs.report",
    "nvmlab.analysis.impact",
)


def _load_step_kinds() -> None:
    import importlib

    from nvmlab.characterization.sweep import sweep_kinds

    sweep_kinds()  # imports every built-in sweep
    for name in STEP_MODULES:
        importlib.import_module(name)


def step_reference() -> str:
    """Every step kind a job file may name, with its parameters (type, default, unit,
    allowed values), as Markdown: ``nvmlab run --list-steps`` prints it and
    ``docs/job-file.md`` holds it (a test keeps the two equal)."""
    from nvmlab.steps import step_kinds

    _load_step_kinds()
    lines: list[str] = []
    for name, kind in sorted(step_kinds().items()):
        lines += [f"### `{name}`", "", kind.summary[0].upper() + kind.summary[1:] + ".", ""]
        if not kind.params:
            lines += ["No parameters.", ""]
            continue
        lines += ["| parameter | default | allowed | meaning |", "|---|---|---|---|"]
        for p in kind.params:
            if p.default is None:
                default = "required" if p.required else "unset"
            elif isinstance(p.default, bool):
                default = str(p.default).lower()
            elif isinstance(p.default, (list, tuple)):
                default = "[" + ", ".join(f"{v:g}" for v in p.default) + "]"
            elif isinstance(p.default, float):
                default = f"{p.default:g}"
            else:
                default = repr(p.default) if isinstance(p.default, str) else str(p.default)
            if p.path:
                where = "an existing file" if p.path == "in" else "a path written"
                allowed = f"{where}, relative to the job file's folder"
            else:
                allowed = p.allowed()
            meaning = (p.help or "").replace("|", "\\|")
            lines.append(f"| `{p.name}` | {default} | {allowed} | {meaning} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
