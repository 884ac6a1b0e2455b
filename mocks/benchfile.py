"""Bench files: every setting of an emulated bench in one TOML file.

Example (every section and key optional; defaults shown)::

    [bench]
    seed = 0                 # the same seed gives the same chip
    array = "memristor"      # memristor | eflash | resistor (ideal resistors, for tests)
    rows = 64
    cols = 64
    time_scale = 1.0         # served over TCP: emulated seconds per wall second
    state_file = "chip.npz"  # non-volatile chip state; relative to this file's folder

    [physics]                # device parameters, passed to create_array (see devices.md)
    # threshold_cv = 0.25

    [thermal]                # ThermalParams: C, s, C/s
    air_time_constant_s = 60.0
    ramp_rate_c_per_s = 0.05

    [smu]
    model = "keithley2400"   # keithley2400 | keithley2636b | keysight_b2902a
    query_latency_s = 0.0    # per message turnaround (s)
    line_frequency_hz = 60.0 # 50 or 60: 1 PLC = 20 ms or 16.7 ms

    [chamber]
    model = "espec"          # espec | watlow_f4
    query_latency_s = 0.0
    address = 1              # Modbus address (watlow_f4)

    [board]
    query_latency_s = 0.0

    [faults.smu]             # one fault (a table) or several ([[faults.chamber]])
    kind = "late"            # late | drop | garble | close | alarm | sensor
    every = 50               # or messages = [3, 7], or probability = 0.01 (+ seed)
    delay_s = 10.0

Every problem raises :class:`nvmlab.errors.ConfigError` naming the file, the field, the
value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvmlab.errors import ConfigError
from nvmlab.mocks.serving.faults import FaultSpec
from nvmlab.mocks.thermal import ThermalParams
from nvmlab.models import canonical_model, models_of_kind

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ARRAY_KINDS: tuple[str, ...] = ("memristor", "eflash", "resistor")
#: Canonical model names (the instrument registry, nvmlab.models); the hyphenated
#: spelling (``keysight-b2902a``) is accepted on input.
SMU_MODELS: tuple[str, ...] = models_of_kind("smu")
CHAMBER_MODELS: tuple[str, ...] = models_of_kind("chamber")
ROLES: tuple[str, ...] = ("smu", "chamber", "board")
#: The sections a bench file may hold.
SECTIONS: tuple[str, ...] = ("bench", "physics", "thermal", "smu", "chamber", "board", "faults")
LINE_FREQUENCIES_HZ: tuple[float, ...] = (50.0, 60.0)
MAX_LINES = 4096


@dataclass
class SmuConfig:
    model: str = "keithley2400"
    query_latency_s: float = 0.0
    line_frequency_hz: float = 60.0


@dataclass
class ChamberConfig:
    model: str = "espec"
    query_latency_s: float = 0.0
    address: int = 1


@dataclass
class BoardConfig:
    query_latency_s: float = 0.0


@dataclass
class BenchConfig:
    """Everything that defines an emulated bench (see the module documentation)."""

    seed: int = 0
    array: str = "memristor"
    rows: int = 64
    cols: int = 64
    time_scale: float = 1.0
    state_file: Path | None = None
    physics: dict[str, Any] = field(default_factory=dict)
    thermal: dict[str, float] = field(default_factory=dict)
    smu: SmuConfig = field(default_factory=SmuConfig)
    chamber: ChamberConfig = field(default_factory=ChamberConfig)
    board: BoardConfig = field(default_factory=BoardConfig)
    faults: dict[str, list[FaultSpec]] = field(default_factory=dict)
    #: The file this configuration came from (for messages), if any.
    source: str | None = None

    def thermal_params(self) -> ThermalParams:
        return ThermalParams(**self.thermal)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, source: str | None = None, base_dir: Path | None = None
    ) -> BenchConfig:
        """Validate a bench-file table (as parsed from TOML) into a :class:`BenchConfig`."""
        return _Parser(source, base_dir).parse(data)

    def with_overrides(self, **overrides: Any) -> BenchConfig:
        """A copy with top-level fields replaced (``smu_model=``, ``chamber_model=`` too),
        validated like a bench file (command-line values override the file)."""
        data = self.to_dict()
        for key, value in overrides.items():
            if value is None:
                continue
            if key in ("smu_model", "chamber_model"):
                role = key.split("_")[0]
                try:
                    value = canonical_model(value, "smu" if role == "smu" else "chamber")
                except ValueError as exc:
                    raise ConfigError(str(exc), field=f"{role}.model") from None
                data[role]["model"] = value
            elif key in ("seed", "array", "rows", "cols", "time_scale", "state_file"):
                data["bench"][key] = str(value) if key == "state_file" else value
            else:
                raise ConfigError(
                    f"unknown override {key!r}; allowed: seed, array, rows, cols, time_scale, "
                    "state_file, smu_model, chamber_model",
                    file=self.source,
                )
        new = _Parser(self.source, None).parse(data)
        return new

    def to_dict(self) -> dict[str, Any]:
        """The bench-file table for this configuration (faults included)."""
        bench: dict[str, Any] = {
            "seed": self.seed,
            "array": self.array,
            "rows": self.rows,
            "cols": self.cols,
            "time_scale": self.time_scale,
        }
        if self.state_file is not None:
            bench["state_file"] = str(self.state_file)
        faults = {
            role: [
                {f.name: getattr(s, f.name) for f in dataclasses.fields(s) if f.init} for s in specs
            ]
            for role, specs in self.faults.items()
        }
        for specs in faults.values():
            for spec in specs:
                spec["messages"] = list(spec["messages"])
                for key in [k for k, v in spec.items() if v is None]:
                    del spec[key]
        return {
            "bench": bench,
            "physics": dict(self.physics),
            "thermal": dict(self.thermal),
            "smu": dataclasses.asdict(self.smu),
            "chamber": dataclasses.asdict(self.chamber),
            "board": dataclasses.asdict(self.board),
            "faults": faults,
        }


def load_bench_file(path: str | Path) -> BenchConfig:
    """Read and validate a bench file (TOML); relative ``state_file`` paths are taken from
    the file's folder."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the bench file: {exc.strerror or exc}", file=str(path)
        ) from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=str(path)) from None
    return BenchConfig.from_dict(data, source=str(path), base_dir=path.parent)


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


class _Parser:
    def __init__(self, source: str | None, base_dir: Path | None) -> None:
        self.source = source
        self.base_dir = base_dir

    def error(self, fieldname: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.source, field=fieldname)

    def table(self, data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
        value = data.get(name, {})
        if not isinstance(value, Mapping):
            raise self.error(name, f"value {value!r} is not allowed; [{name}] must be a table")
        return value

    def check_keys(self, table: Mapping[str, Any], name: str, allowed: list[str]) -> None:
        for key in table:
            if key not in allowed:
                raise self.error(
                    f"{name}.{key}",
                    f"unknown setting {key!r}; allowed in [{name}]: {', '.join(allowed)}",
                )

    def model(
        self, table: Mapping[str, Any], name: str, default: str, choices: tuple[str, ...]
    ) -> str:
        """An instrument model name, either spelling, returned canonical (underscores)."""
        value = self.number(table, name, "model", default, str)
        spelled = str(value).strip().lower().replace("-", "_")
        if spelled in choices:
            return spelled
        return self.number(table, name, "model", default, str, choices=choices)  # type: ignore[no-any-return]

    def number(
        self,
        table: Mapping[str, Any],
        name: str,
        key: str,
        default: Any,
        kind: type,
        *,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
        choices: tuple[Any, ...] | None = None,
    ) -> Any:
        fieldname = f"{name}.{key}"
        if key not in table:
            return default
        value = table[key]
        ok_type = (
            isinstance(value, int) and not isinstance(value, bool)
            if kind is int
            else isinstance(value, (int, float)) and not isinstance(value, bool)
            if kind is float
            else isinstance(value, kind)
        )
        if not ok_type:
            raise self.error(
                fieldname, f"value {value!r} is not allowed; expected {_TYPE_NAMES[kind]}"
            )
        if kind is float:
            value = float(value)
            if not math.isfinite(value):
                raise self.error(
                    fieldname, f"value {value!r} is not allowed; expected a finite number"
                )
        if choices is not None and value not in choices:
            raise self.error(
                fieldname,
                f"value {value!r} is not allowed; allowed: {', '.join(str(c) for c in choices)}",
            )
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and value > high
        if too_low or too_high:
            lo = "" if low is None else (f"above {low}" if low_open else f"from {low}")
            hi = "" if high is None else f"up to {high}"
            raise self.error(
                fieldname,
                f"value {value!r} is out of range; allowed {' '.join(p for p in (lo, hi) if p)}",
            )
        return value

    # -- the steps of a parse, one section each ----------------------------------------
    def parse(self, data: Mapping[str, Any]) -> BenchConfig:
        """Validate a whole bench-file table, section by section."""
        self.check_sections(data)
        cfg = BenchConfig(source=self.source)
        self.bench_section(self.table(data, "bench"), cfg)
        cfg.physics = dict(self.table(data, "physics"))
        cfg.thermal = self.thermal_section(self.table(data, "thermal"))
        cfg.smu = self.smu_section(self.table(data, "smu"))
        cfg.chamber = self.chamber_section(self.table(data, "chamber"))
        cfg.board = self.board_section(self.table(data, "board"))
        cfg.faults = self.faults_section(self.table(data, "faults"))
        return cfg

    def check_sections(self, data: Mapping[str, Any]) -> None:
        """The file is a table and holds only known sections."""
        if not isinstance(data, Mapping):
            raise self.error("", "a bench file must be a TOML table")
        for key in data:
            if key not in SECTIONS:
                raise self.error(
                    key, f"unknown section [{key}]; allowed sections: {', '.join(SECTIONS)}"
                )

    def bench_section(self, bench: Mapping[str, Any], cfg: BenchConfig) -> None:
        """[bench]: seed, array kind and size, time scale, state file (into ``cfg``)."""
        self.check_keys(
            bench, "bench", ["seed", "array", "rows", "cols", "time_scale", "state_file"]
        )
        cfg.seed = self.number(bench, "bench", "seed", 0, int, low=0, high=2**32 - 1)
        cfg.array = self.number(bench, "bench", "array", "memristor", str, choices=ARRAY_KINDS)
        cfg.rows = self.number(bench, "bench", "rows", 64, int, low=1, high=MAX_LINES)
        cfg.cols = self.number(bench, "bench", "cols", 64, int, low=1, high=MAX_LINES)
        cfg.time_scale = self.number(
            bench, "bench", "time_scale", 1.0, float, low=0.0, low_open=True, high=1e6
        )
        cfg.state_file = self.state_file(bench)

    def state_file(self, bench: Mapping[str, Any]) -> Path | None:
        """[bench] state_file: a non-empty path, relative ones taken from the file's folder."""
        state = self.number(bench, "bench", "state_file", None, str)
        if state is None:
            return None
        if not state.strip():
            raise self.error("bench.state_file", "value '' is not allowed; give a file path")
        path = Path(state).expanduser()
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        return path

    def thermal_section(self, thermal: Mapping[str, Any]) -> dict[str, float]:
        """[thermal]: ThermalParams fields, each in its range; setpoint limits in order."""
        thermal_fields = [f.name for f in dataclasses.fields(ThermalParams)]
        self.check_keys(thermal, "thermal", thermal_fields)
        values: dict[str, float] = {}
        for key in thermal:
            if key in ("ambient_c", "min_setpoint_c", "max_setpoint_c"):
                values[key] = self.number(thermal, "thermal", key, None, float, low=-273.15)
            elif key == "sensor_noise_c":
                values[key] = self.number(thermal, "thermal", key, None, float, low=0.0)
            else:  # time constants, ramp rate, integration step: strictly positive
                values[key] = self.number(
                    thermal, "thermal", key, None, float, low=0.0, low_open=True
                )
        lo = values.get("min_setpoint_c", ThermalParams.min_setpoint_c)
        hi = values.get("max_setpoint_c", ThermalParams.max_setpoint_c)
        if not lo < hi:
            raise self.error(
                "thermal.max_setpoint_c",
                f"value {hi!r} is not allowed; it must be above min_setpoint_c ({lo!r})",
            )
        return values

    def smu_section(self, smu: Mapping[str, Any]) -> SmuConfig:
        """[smu]: model, per-message latency, mains frequency."""
        self.check_keys(smu, "smu", ["model", "query_latency_s", "line_frequency_hz"])
        return SmuConfig(
            model=self.model(smu, "smu", "keithley2400", SMU_MODELS),
            query_latency_s=self.number(
                smu, "smu", "query_latency_s", 0.0, float, low=0.0, high=10.0
            ),
            line_frequency_hz=self.number(
                smu, "smu", "line_frequency_hz", 60.0, float, choices=LINE_FREQUENCIES_HZ
            ),
        )

    def chamber_section(self, chamber: Mapping[str, Any]) -> ChamberConfig:
        """[chamber]: model, per-message latency, Modbus address."""
        self.check_keys(chamber, "chamber", ["model", "query_latency_s", "address"])
        return ChamberConfig(
            model=self.model(chamber, "chamber", "espec", CHAMBER_MODELS),
            query_latency_s=self.number(
                chamber, "chamber", "query_latency_s", 0.0, float, low=0.0, high=10.0
            ),
            address=self.number(chamber, "chamber", "address", 1, int, low=1, high=247),
        )

    def board_section(self, board: Mapping[str, Any]) -> BoardConfig:
        """[board]: per-message latency."""
        self.check_keys(board, "board", ["query_latency_s"])
        return BoardConfig(
            query_latency_s=self.number(
                board, "board", "query_latency_s", 0.0, float, low=0.0, high=10.0
            )
        )

    def faults_section(self, faults: Mapping[str, Any]) -> dict[str, list[FaultSpec]]:
        """[faults.<role>]: one table or a list of tables per role."""
        out: dict[str, list[FaultSpec]] = {}
        for role, value in faults.items():
            if role not in ROLES:
                raise self.error(
                    f"faults.{role}", f"unknown role {role!r}; allowed: {', '.join(ROLES)}"
                )
            tables = [value] if isinstance(value, Mapping) else value
            if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
                raise self.error(
                    f"faults.{role}",
                    f"value {value!r} is not allowed; use a table [faults.{role}] or tables [[faults.{role}]]",
                )
            out[role] = [
                self.fault(role, table, index, len(tables)) for index, table in enumerate(tables)
            ]
        return out

    def fault(self, role: str, table: Mapping[str, Any], index: int, count: int) -> FaultSpec:
        """One fault table of ``role`` (the ``index``-th of ``count``)."""
        where = f"faults.{role}" + (f"[{index}]" if count > 1 else "")
        try:
            spec = FaultSpec.from_dict(table)
        except (ValueError, TypeError) as exc:
            raise self.error(where, str(exc)) from None
        if spec.kind in ("alarm", "sensor") and role != "chamber":
            raise self.error(
                where,
                f"fault kind {spec.kind!r} is not allowed for role {role!r}; only for the chamber",
            )
        return spec
