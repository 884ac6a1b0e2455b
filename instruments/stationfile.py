"""The station file: which instruments a bench has, how to reach them, and its safety limits.

A technician describes a bench once, in a TOML *station file*::

    [station]
    name = "probe-station-2"
    # database = "sqlite:///nvmlab.sqlite"     # optional
    # time_scale = 60.0   # optional: an accelerated emulated bench (emulated s per wall s)

    [limits]                   # SafetyLimits fields (V, A, s, C), all optional
    max_read_v = 0.5
    max_write_v = 2.5
    max_current_a = 1e-3

    [instruments.smu]          # section name = role: smu | chamber | board
    driver = "keithley2400"
    resource = "GPIB0::24::INSTR"
    backend = "@py"            # VISA backend, optional ("@ivi" for a vendor VISA)
    timeout_s = 5.0            # optional
    [instruments.smu.options]  # driver-specific, optional

    [instruments.chamber]
    driver = "espec"
    resource = "socket://192.168.1.40:7001"
    safe_setpoint_c = 25.0     # optional: where the chamber goes on every exit

    [instruments.board]
    driver = "probe_board"
    resource = "/dev/ttyUSB0"

The file is validated fully on load (:func:`load_station_file`): every problem found is
reported at once, each naming the file, the field, the value and what is allowed.

:class:`~nvmlab.instruments.station.Station` opens the instruments a validated file names
(``nvmlab.instruments.station``); resource strings are checked by
:mod:`nvmlab.instruments.resources`. The reference is ``docs/station-file.md``.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, cast

from nvmlab.dburl import resolve_sqlite_path
from nvmlab.errors import ConfigError
from nvmlab.instruments.resources import RESOURCE_HELP, check_resource
from nvmlab.instruments.safety import ARRAY_KINDS, SafetyLimits, default_limits
from nvmlab.models import MODELS, InstrumentModel, spelled

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "DRIVERS",
    "LIMIT_BOUNDS",
    "MAX_TIMEOUT_S",
    "ROLES",
    "STATION_KEYS",
    "TRANSPORT_OPTIONS",
    "DriverSpec",
    "InstrumentConfig",
    "StationConfig",
    "StationFileError",
    "load_station_file",
    "resolve_sqlite_path",
]

ROLES: tuple[str, ...] = ("smu", "chamber", "board")
#: Keys of the ``[station]`` table.
STATION_KEYS: tuple[str, ...] = ("name", "database", "time_scale", "array")


# ---------------------------------------------------------------------------------------
# Drivers known to a station file
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DriverSpec:
    """One driver a station file may name."""

    name: str  #: the station file's ``driver = ...`` value
    role: str  #: smu | chamber | board
    module: str  #: import path of the driver module
    class_name: str  #: driver class inside it
    model: str  #: human model name, for tables and messages
    #: driver-specific ``options`` keys and their type (passed to the driver constructor)
    driver_options: Mapping[str, type] = field(default_factory=dict)

    def load(self) -> type:
        """Import and return the driver class."""
        return cast(type, getattr(importlib.import_module(self.module), self.class_name))


def _spec(model: InstrumentModel) -> DriverSpec:
    module, _, class_name = model.driver.partition(":")
    return DriverSpec(
        model.name, model.kind, module, class_name, model.title, dict(model.driver_options)
    )


#: Drivers a station file may name, from the instrument registry (:mod:`nvmlab.models`).
DRIVERS: dict[str, DriverSpec] = {name: _spec(model) for name, model in MODELS.items()}

#: ``options`` keys every driver accepts: they override the driver's transport defaults.
TRANSPORT_OPTIONS: dict[str, type] = {
    "read_termination": str,
    "write_termination": str,
    "baudrate": int,
    "bytesize": int,
    "parity": str,
    "stopbits": int,
}
#: ``options`` keys that are serial settings (pyserial and ASRL VISA ports).
SERIAL_OPTION_KEYS = ("baudrate", "bytesize", "parity", "stopbits")


# ---------------------------------------------------------------------------------------
# Limits: what the file may set, and what is sane
# ---------------------------------------------------------------------------------------
#: (low, high, unit, low_inclusive) bounds a station file's limits must respect; a value
#: outside them is a typo (20 instead of 2.0), not a bench.
LIMIT_BOUNDS: dict[str, tuple[float, float, str, bool]] = {
    "max_read_v": (0.0, 20.0, "V", False),
    "max_write_v": (0.0, 20.0, "V", False),
    "max_forming_v": (0.0, 20.0, "V", False),
    "max_current_a": (0.0, 1.0, "A", False),
    "max_pulse_width_s": (0.0, 10.0, "s", False),
    "min_temperature_c": (-100.0, 300.0, "C", True),
    "max_temperature_c": (-100.0, 300.0, "C", True),
    "max_eflash_v": (0.0, 20.0, "V", False),
}
MAX_TIMEOUT_S = 600.0


# ---------------------------------------------------------------------------------------
# The parsed, validated station file
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InstrumentConfig:
    """One ``[instruments.<role>]`` section."""

    role: str
    driver: str
    resource: str
    backend: str = "@py"
    timeout_s: float = 5.0
    options: Mapping[str, Any] = field(default_factory=dict)
    #: chamber only: where the chamber goes on every exit (C); None = standby
    safe_setpoint_c: float | None = None

    @property
    def spec(self) -> DriverSpec:
        return DRIVERS[self.driver]

    @property
    def model(self) -> str:
        return self.spec.model


@dataclass(frozen=True)
class StationConfig:
    """A validated station file."""

    name: str
    instruments: Mapping[str, InstrumentConfig]
    limits: SafetyLimits = field(default_factory=SafetyLimits)
    database: str | None = None
    #: where it came from, for messages ("station.toml" or "<dict>")
    source: str = "<dict>"
    #: emulated seconds per wall second of the bench (1 for real instruments; an
    #: accelerated ``nvmlab emulate --time-scale X`` writes X): times chamber waits and soaks
    time_scale: float = 1.0
    #: the folder of the station file (absolute), None for a station built from a dict
    folder: Path | None = None
    #: ``[station] array``: ``"memristor"`` or ``"eflash"``, None when the file does not
    #: say (the memristor limit defaults apply); the board's ``CONF?`` must agree
    array: str | None = None

    @property
    def database_url(self) -> str | None:
        """The ``[station] database`` URL for ``nvmlab.storage`` (None without the key).

        A relative SQLite path is made absolute against the station file's :attr:`folder`
        (``sqlite:///lab.sqlite`` next to the file names ``<folder>/lab.sqlite`` from any
        working folder); other URLs, and every URL of a station built from a dict, are
        returned as written. Precedence over ``--db`` and ``NVMLAB_DB`` is storage's.
        """
        if self.database is None:
            return None
        return resolve_sqlite_path(self.database, self.folder)

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        source: str = "<dict>",
        folder: str | Path | None = None,
    ) -> StationConfig:
        """Validate the content of a station file; raise :class:`StationFileError` listing
        every problem. ``folder`` is where relative paths in it are resolved (the file's
        folder; None: left relative)."""
        config = _Validator(source).station(data)
        if folder is None:
            return config
        return dataclasses.replace(config, folder=Path(folder).resolve())

    @classmethod
    def from_file(cls, path: str | Path) -> StationConfig:
        return load_station_file(path)


class StationFileError(ConfigError):
    """A station file has one or more problems; ``problems`` lists ``(field, message)``."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.problems = list(problems)
        if len(problems) == 1:
            where, message = problems[0]
            super().__init__(message, file=source, field=where)
        else:
            lines = "\n".join(f"  - {where}: {message}" for where, message in problems)
            super().__init__(f"{len(problems)} problems in the station file:\n{lines}", file=source)
        self.file = source


def load_station_file(path: str | Path) -> StationConfig:
    """Read and validate a station file (TOML).

    Raises :class:`StationFileError` (a :class:`~nvmlab.errors.ConfigError`) naming the
    file, the field, the value and what is allowed, for every problem at once; TOML syntax
    errors give the line and column.
    """
    source = str(path)
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise StationFileError(
            source, [("file", f"cannot be read: {exc.strerror or exc}")]
        ) from exc
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise StationFileError(source, [("file", f"is not UTF-8 text ({exc.reason})")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise StationFileError(source, [("TOML syntax", str(exc))]) from exc
    return StationConfig.from_dict(data, source=source, folder=Path(path).resolve().parent)


def _type_name(value: Any) -> str:
    return type(value).__name__


class _Validator:
    """Walks a station file's tables and collects every problem."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[tuple[str, str]] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append((where, message))

    # -- typed fields -------------------------------------------------------------------
    def table(self, data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, Mapping):
            self.problem(where, f"must be a table ([{where}]), got {value!r} ({_type_name(value)})")
            return {}
        return value

    def unknown_keys(self, table: Mapping[str, Any], allowed: list[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                self.problem(
                    f"{where}.{key}" if where else key,
                    f"unknown {'key' if where else 'section'} '{key}'; allowed: {', '.join(allowed)}",
                )

    def string(
        self, table: Mapping[str, Any], key: str, where: str, *, required: bool = False
    ) -> str | None:
        if key not in table:
            if required:
                self.problem(f"{where}.{key}", "is required (a string)")
            return None
        value = table[key]
        if not isinstance(value, str):
            self.problem(f"{where}.{key}", f"must be a string, got {value!r} ({_type_name(value)})")
            return None
        if not value.strip():
            self.problem(f"{where}.{key}", "must not be empty")
            return None
        return value

    def number(self, table: Mapping[str, Any], key: str, where: str, unit: str) -> float | None:
        if key not in table:
            return None
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(
                f"{where}.{key}", f"must be a number ({unit}), got {value!r} ({_type_name(value)})"
            )
            return None
        if not math.isfinite(value):
            self.problem(f"{where}.{key}", f"must be a finite number ({unit}), got {value!r}")
            return None
        return float(value)

    # -- sections -------------------------------------------------------------------------
    def station(self, data: Mapping[str, Any]) -> StationConfig:
        if not isinstance(data, Mapping):
            raise StationFileError(self.source, [("file", "must be a TOML table")])
        self.unknown_keys(data, ["station", "limits", "instruments"], "")
        header = self.table(data, "station", "station")
        self.unknown_keys(header, list(STATION_KEYS), "station")
        name = self.string(header, "name", "station") or Path(self.source).stem or "station"
        database = self.string(header, "database", "station")
        time_scale = self.number(header, "time_scale", "station", "emulated s per wall s")
        if time_scale is not None and not time_scale > 0:
            self.problem(
                "station.time_scale",
                f"must be > 0 (emulated s per wall s; 1 for real instruments), got {time_scale!r}",
            )
            time_scale = None
        array = self.string(header, "array", "station")
        if array is not None and array not in ARRAY_KINDS:
            self.problem(
                "station.array",
                f"unknown array kind '{array}'; allowed: {', '.join(ARRAY_KINDS)}",
            )
            array = None
        limits = self.limits(self.table(data, "limits", "limits"), array or "memristor")
        instruments = self.instruments(self.table(data, "instruments", "instruments"), limits)
        if self.problems:
            raise StationFileError(self.source, self.problems)
        return StationConfig(
            name,
            instruments,
            limits,
            database,
            self.source,
            time_scale or 1.0,
            array=array,
        )

    def limits(self, table: Mapping[str, Any], array: str) -> SafetyLimits:
        """The limits from the file over the defaults of ``array``; invalid entries are
        reported and left at their default so that the other sections can still be
        checked against the valid ones."""
        allowed = [f.name for f in fields(SafetyLimits)]
        self.unknown_keys(table, allowed, "limits")
        values: dict[str, float] = {}
        for key in allowed:
            low, high, unit, low_inclusive = LIMIT_BOUNDS[key]
            value = self.number(table, key, "limits", unit)
            if value is None:
                continue
            too_low = value < low if low_inclusive else value <= low
            if too_low or value > high:
                bracket = "[" if low_inclusive else "("
                self.problem(
                    f"limits.{key}",
                    f"{value:g} {unit} is outside the sane range {bracket}{low:g}, {high:g}] {unit}",
                )
                continue
            values[key] = value
        limits = default_limits(array, **values)
        if limits.min_temperature_c >= limits.max_temperature_c:
            self.problem(
                "limits.min_temperature_c",
                f"{limits.min_temperature_c:g} C must be below limits.max_temperature_c "
                f"({limits.max_temperature_c:g} C)",
            )
            values.pop("min_temperature_c", None)
            values.pop("max_temperature_c", None)
            limits = default_limits(array, **values)
        return limits

    def instruments(
        self, table: Mapping[str, Any], limits: SafetyLimits
    ) -> dict[str, InstrumentConfig]:
        if not table:
            self.problem(
                "instruments",
                "no instruments defined; add at least one [instruments.<role>] section "
                f"(roles: {', '.join(ROLES)})",
            )
        result: dict[str, InstrumentConfig] = {}
        for role, section in table.items():
            where = f"instruments.{role}"
            if role not in ROLES:
                self.problem(where, f"unknown role '{role}'; allowed roles: {', '.join(ROLES)}")
                continue
            if not isinstance(section, Mapping):
                self.problem(where, f"must be a table, got {section!r} ({_type_name(section)})")
                continue
            instrument = self.instrument(role, section, where, limits)
            if instrument is not None:
                result[role] = instrument
        return result

    def instrument(
        self, role: str, section: Mapping[str, Any], where: str, limits: SafetyLimits
    ) -> InstrumentConfig | None:
        allowed = ["driver", "resource", "backend", "timeout_s", "options"]
        if role == "chamber":
            allowed.append("safe_setpoint_c")
        self.unknown_keys(section, allowed, where)
        before = len(self.problems)

        driver = self.string(section, "driver", where, required=True)
        if driver is not None:
            spec = DRIVERS.get(spelled(driver))
            if spec is not None:
                driver = spec.name  # the canonical spelling (keysight-b2902a is accepted)
            if spec is None:
                self.problem(
                    f"{where}.driver",
                    f"unknown driver '{driver}'; allowed: {', '.join(sorted(DRIVERS))}",
                )
                driver = None
            elif spec.role != role:
                fitting = sorted(name for name, s in DRIVERS.items() if s.role == role)
                self.problem(
                    f"{where}.driver",
                    f"'{driver}' drives a {spec.role}, not a {role}; drivers for the {role} role: "
                    f"{', '.join(fitting)}",
                )
                driver = None

        resource = self.string(section, "resource", where, required=True)
        if resource is not None:
            why = check_resource(resource)
            if why is not None:
                self.problem(f"{where}.resource", f"{resource!r} {why}; expected {RESOURCE_HELP}")

        backend = self.string(section, "backend", where) or "@py"
        timeout_s = self.number(section, "timeout_s", where, "s")
        if timeout_s is not None and not 0 < timeout_s <= MAX_TIMEOUT_S:
            self.problem(
                f"{where}.timeout_s", f"{timeout_s:g} s is outside (0, {MAX_TIMEOUT_S:g}] s"
            )

        safe_setpoint_c = self.number(section, "safe_setpoint_c", where, "C")
        if safe_setpoint_c is not None:
            lo, hi = limits.min_temperature_c, limits.max_temperature_c
            if not lo <= safe_setpoint_c <= hi:
                self.problem(
                    f"{where}.safe_setpoint_c",
                    f"{safe_setpoint_c:g} C is outside the station's temperature limits [{lo:g}, {hi:g}] C",
                )

        options = self.options(section, where, DRIVERS.get(driver) if driver else None)
        if len(self.problems) > before or driver is None or resource is None:
            return None
        return InstrumentConfig(
            role=role,
            driver=driver,
            resource=resource,
            backend=backend,
            timeout_s=timeout_s if timeout_s is not None else 5.0,
            options=options,
            safe_setpoint_c=safe_setpoint_c,
        )

    def options(
        self, section: Mapping[str, Any], where: str, spec: DriverSpec | None
    ) -> dict[str, Any]:
        table = self.table(section, "options", f"{where}.options")
        if spec is None:
            return dict(table)
        allowed = {**TRANSPORT_OPTIONS, **spec.driver_options}
        result: dict[str, Any] = {}
        for key, value in table.items():
            if key not in allowed:
                self.problem(
                    f"{where}.options.{key}",
                    f"unknown option '{key}' for driver '{spec.name}'; allowed: {', '.join(sorted(allowed))}",
                )
                continue
            expected = allowed[key]
            if isinstance(value, bool) or not isinstance(value, expected):
                self.problem(
                    f"{where}.options.{key}",
                    f"must be {expected.__name__}, got {value!r} ({_type_name(value)})",
                )
                continue
            if isinstance(value, int) and value <= 0:
                self.problem(f"{where}.options.{key}", f"must be a positive integer, got {value!r}")
                continue
            result[key] = value
        if "address" in result and not 1 <= result["address"] <= 247:
            self.problem(
                f"{where}.options.address", f"{result['address']} is outside the Modbus range 1-247"
            )
        return result
