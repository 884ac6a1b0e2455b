"""The station: which instruments a bench has, how to reach them, and its safety limits.

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

:class:`Station` opens and identifies the instruments and exposes them as roles
(``station.smu``, ``station.chamber``, ``station.board``). Used as a context manager it
leaves the bench safe on every exit path, including exceptions, Ctrl-C and a lost
connection: SMU outputs at 0 V and off, board lines grounded, chamber in standby or at its
safe setpoint.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import math
import re
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from nvmlab.clock import Clock, ScaledClock, VirtualClock, WallClock
from nvmlab.errors import ConfigError, InstrumentError, NvmlabError
from nvmlab.instruments.safety import SafetyLimits
from nvmlab.models import MODELS, InstrumentModel, spelled

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    from nvmlab.instruments.roles import ArrayBoard, Chamber, SourceMeter

log = logging.getLogger(__name__)

ROLES: tuple[str, ...] = ("smu", "chamber", "board")


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
_SERIAL_OPTION_KEYS = ("baudrate", "bytesize", "parity", "stopbits")


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
# Resource strings
# ---------------------------------------------------------------------------------------
_URL_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>.*)$")
_HOST_PORT_RE = re.compile(r"^(?P<host>[^:/?]+):(?P<port>\d+)(?:[/?].*)?$")
_PORT_RE = re.compile(r"^(/dev/\S+|COM\d+|\\\\\.\\COM\d+)$", re.IGNORECASE)
#: URL schemes registered at run time (the emulated bench's in-process serial URLs).
_EXTRA_SERIAL_SCHEMES = ("nvmlab",)

RESOURCE_HELP = (
    "a VISA resource (e.g. 'TCPIP::192.168.1.20::5025::SOCKET', 'GPIB0::24::INSTR', "
    "'USB0::0x05E6::0x2636::4480001::INSTR', 'ASRL/dev/ttyUSB0::INSTR') or a pyserial "
    "port/URL (e.g. '/dev/ttyUSB0', 'COM3', 'socket://192.168.1.40:7001', "
    "'rfc2217://host:port', 'nvmlab://<bench>/<role>')"
)


def is_visa_resource(resource: str) -> bool:
    """True when ``resource`` parses as a VISA resource name (pyvisa's own parser)."""
    from pyvisa import rname

    try:
        rname.parse_resource_name(resource)
    except Exception:
        return False
    return True


def _serial_scheme_known(scheme: str) -> bool:
    import serial

    if scheme in _EXTRA_SERIAL_SCHEMES:
        return True
    for package in serial.protocol_handler_packages:
        try:
            if importlib.util.find_spec(f"{package}.protocol_{scheme}") is not None:
                return True
        except ImportError:
            continue
    return False


def check_resource(resource: str) -> str | None:
    """Return why ``resource`` is not a usable resource string, or None when it is."""
    if not resource.strip():
        return "is empty"
    if resource != resource.strip():
        return "has leading or trailing spaces"
    if is_visa_resource(resource):
        return None
    url = _URL_RE.match(resource)
    if url is not None:
        scheme = url["scheme"].lower()
        if not _serial_scheme_known(scheme):
            return f"uses the unknown pyserial URL scheme '{scheme}://'"
        if scheme in ("socket", "rfc2217"):
            hp = _HOST_PORT_RE.match(url["rest"])
            if hp is None or not 0 < int(hp["port"]) < 65536:
                return f"needs '{scheme}://HOST:PORT' with a port 1-65535"
        return None
    if _PORT_RE.match(resource):
        return None
    return "is neither a VISA resource nor a pyserial port or URL"


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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> StationConfig:
        """Validate the content of a station file; raise :class:`StationFileError` listing every problem."""
        return _Validator(source).station(data)

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
    return StationConfig.from_dict(data, source=source)


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
        self.unknown_keys(header, ["name", "database", "time_scale"], "station")
        name = self.string(header, "name", "station") or Path(self.source).stem or "station"
        database = self.string(header, "database", "station")
        time_scale = self.number(header, "time_scale", "station", "emulated s per wall s")
        if time_scale is not None and not time_scale > 0:
            self.problem(
                "station.time_scale",
                f"must be > 0 (emulated s per wall s; 1 for real instruments), got {time_scale!r}",
            )
            time_scale = None
        limits = self.limits(self.table(data, "limits", "limits"))
        instruments = self.instruments(self.table(data, "instruments", "instruments"), limits)
        if self.problems:
            raise StationFileError(self.source, self.problems)
        return StationConfig(name, instruments, limits, database, self.source, time_scale or 1.0)

    def limits(self, table: Mapping[str, Any]) -> SafetyLimits:
        """The limits from the file; invalid entries are reported and left at their default
        so that the other sections can still be checked against the valid ones."""
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
        limits = SafetyLimits(**values)
        if limits.min_temperature_c >= limits.max_temperature_c:
            self.problem(
                "limits.min_temperature_c",
                f"{limits.min_temperature_c:g} C must be below limits.max_temperature_c "
                f"({limits.max_temperature_c:g} C)",
            )
            values.pop("min_temperature_c", None)
            values.pop("max_temperature_c", None)
            limits = SafetyLimits(**values)
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


# ---------------------------------------------------------------------------------------
# The station at run time
# ---------------------------------------------------------------------------------------
#: Order in which the safe state is applied: sources off first, then lines, then the chamber.
SAFE_STATE_ORDER: tuple[str, ...] = ("smu", "board", "chamber")


class StationError(InstrumentError):
    """The station could not open, or could not reach the safe state; names every instrument."""


@dataclass
class InstrumentStatus:
    """One row of ``nvmlab station check``: an instrument and how it answered."""

    role: str
    model: str
    resource: str
    identity: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def status(self) -> str:
        return "OK" if self.ok else f"FAILED: {self.error}"


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C while the safe state is applied; re-raise it afterwards (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[bool] = []

    def remember(signum: int, frame: object) -> None:
        pressed.append(True)

    try:
        previous = signal.signal(signal.SIGINT, remember)
    except (ValueError, OSError):  # no signals here (embedded interpreter)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


class Station:
    """The instruments of one bench, opened as roles, with a guaranteed safe exit.

    Use it as a context manager::

        with Station.from_file("station.toml") as station:
            station.chamber.set_setpoint(85.0)
            station.chamber.wait_until_stable()
            station.board.select(3, 4, unselected="track")
            station.smu.configure(current_limit_a=1e-4, nplc=0.1)
            ...

    Whatever ends the block (normal exit, an exception, Ctrl-C, a dropped connection) the
    safe state is applied: SMU outputs at 0 V and off, board lines grounded, chamber in
    standby or at its configured safe setpoint. An instrument whose connection was lost is
    reconnected once for it; if that fails too, the failure is reported clearly and the
    other instruments are still made safe.

    Args:
        config: a validated :class:`StationConfig` or the content of a station file (dict).
        visa_library: overrides every instrument's VISA backend (``"@py"``, ``"@ivi"``, or a
            :class:`pyvisa.highlevel.VisaLibraryBase` such as the in-process emulated bench).
        clock: times chamber stabilization and soaks (by default the wall clock, sped up by
            the file's ``[station] time_scale`` for an accelerated emulated bench; the
            emulated bench's virtual clock in-process).
        record_to: a directory; each instrument's exchanges are recorded to
            ``<role>.jsonl`` there (see :mod:`nvmlab.drivers.recording`), one session per
            directory (an earlier transcript of the same role is replaced).
        replay_from: a directory recorded with ``record_to``: every instrument is served
            from its transcript instead of being opened (no instrument, no emulator); a
            command that differs from the recorded one raises
            :class:`~nvmlab.errors.ReplayMismatch` naming the transcript line. The clock
            defaults to a virtual clock, so waits cost no time.
    """

    def __init__(
        self,
        config: StationConfig | Mapping[str, Any],
        *,
        visa_library: Any = None,
        clock: Clock | None = None,
        record_to: str | Path | None = None,
        replay_from: str | Path | None = None,
    ) -> None:
        self.config = (
            config if isinstance(config, StationConfig) else StationConfig.from_dict(config)
        )
        if record_to is not None and replay_from is not None:
            raise ConfigError("record_to and replay_from exclude each other; give one")
        self.visa_library = visa_library
        self.replay_from = Path(replay_from) if replay_from is not None else None
        if clock is None:
            if self.replay_from is not None:
                clock = VirtualClock()
            elif self.config.time_scale != 1.0:
                clock = ScaledClock(self.config.time_scale)
            else:
                clock = WallClock()
        self.clock: Clock = clock
        self.record_to = Path(record_to) if record_to is not None else None
        self.transports: dict[str, Any] = {}
        self.drivers: dict[str, Any] = {}
        self.roles: dict[str, Any] = {}
        self.identities: dict[str, str] = {}
        self.statuses: dict[str, InstrumentStatus] = {}
        #: Replay only: the first transcript left unfinished at :meth:`close`, else None.
        self.replay_leftover: NvmlabError | None = None

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        visa_library: Any = None,
        clock: Clock | None = None,
        record_to: str | Path | None = None,
        replay_from: str | Path | None = None,
    ) -> Station:
        """A station from a station file (validated; see :func:`load_station_file`)."""
        return cls(
            load_station_file(path),
            visa_library=visa_library,
            clock=clock,
            record_to=record_to,
            replay_from=replay_from,
        )

    # -- properties -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def limits(self) -> SafetyLimits:
        return self.config.limits

    @property
    def is_open(self) -> bool:
        return bool(self.roles)

    def _role(self, role: str) -> Any:
        if role not in self.config.instruments:
            raise ConfigError(
                f"this station has no {role}; add an [instruments.{role}] section",
                file=self.config.source,
                field=f"instruments.{role}",
            )
        if role not in self.roles:
            raise StationError(
                "the station is not open (use 'with station:' or station.open())", instrument=role
            )
        return self.roles[role]

    @property
    def smu(self) -> SourceMeter:
        """The source-measure unit role."""
        return cast("SourceMeter", self._role("smu"))

    @property
    def chamber(self) -> Chamber:
        """The temperature chamber role."""
        return cast("Chamber", self._role("chamber"))

    @property
    def board(self) -> ArrayBoard:
        """The probe board role."""
        return cast("ArrayBoard", self._role("board"))

    # -- opening --------------------------------------------------------------------------
    def _open_transport(self, instrument: InstrumentConfig, driver_cls: type) -> Any:
        from nvmlab.drivers.transport import open_transport

        defaults: dict[str, Any] = dict(getattr(driver_cls, "transport_defaults", {}) or {})
        serial_options = dict(defaults.get("serial_options", {}) or {})
        for key in _SERIAL_OPTION_KEYS:
            if key in instrument.options:
                serial_options[key] = instrument.options[key]
        name = f"{instrument.model} [{instrument.role}]"
        terminations = {
            key: instrument.options.get(key, defaults.get(key, "\n"))
            for key in ("read_termination", "write_termination")
        }
        transcript = f"{instrument.role}.jsonl"
        if self.replay_from is not None:
            from nvmlab.drivers.recording import ReplayTransport

            path = self.replay_from / transcript
            if not path.is_file():
                raise ConfigError(
                    f"no transcript {path} to replay the {instrument.role}; record one with "
                    "record_to= first",
                    field=f"instruments.{instrument.role}",
                )
            return ReplayTransport(path, name=name, **terminations)
        record_to = None
        if self.record_to is not None:
            self.record_to.mkdir(parents=True, exist_ok=True)
            record_to = self.record_to / transcript
            record_to.unlink(missing_ok=True)
        return open_transport(
            instrument.resource,
            name=name,
            timeout_s=instrument.timeout_s,
            visa_library=self.visa_library if self.visa_library is not None else instrument.backend,
            serial_options=serial_options,
            record_to=record_to,
            **terminations,
        )

    def _make_role(self, instrument: InstrumentConfig, driver: Any) -> Any:
        if instrument.role == "smu":
            from nvmlab.instruments.sourcemeters import make_source_meter

            return make_source_meter(instrument.driver, driver, self.limits)
        if instrument.role == "chamber":
            from nvmlab.instruments.chambers import make_chamber

            return make_chamber(
                driver,
                self.limits,
                clock=self.clock,
                safe_setpoint_c=instrument.safe_setpoint_c,
                name=f"{instrument.model} [chamber]",
            )
        from nvmlab.instruments.boards import make_array_board

        return make_array_board(driver, self.limits)

    def _open_one(self, instrument: InstrumentConfig) -> InstrumentStatus:
        status = InstrumentStatus(instrument.role, instrument.model, instrument.resource)
        transport = None
        try:
            driver_cls = instrument.spec.load()
            transport = self._open_transport(instrument, driver_cls)
            driver_kwargs = {
                k: instrument.options[k]
                for k in instrument.spec.driver_options
                if k in instrument.options
            }
            driver = driver_cls(transport, **driver_kwargs)
            role = self._make_role(instrument, driver)
            status.identity = str(role.identify())
        except (NvmlabError, OSError, ImportError, ValueError) as exc:
            status.error = str(exc)
            if transport is not None:
                with contextlib.suppress(Exception):
                    transport.close()
            return status
        self.transports[instrument.role] = transport
        self.drivers[instrument.role] = driver
        self.roles[instrument.role] = role
        self.identities[instrument.role] = status.identity
        return status

    def check(self) -> list[InstrumentStatus]:
        """Open and identify every instrument, never raising; one status per instrument.

        Instruments that answered stay open (close with :meth:`close`).
        """
        self.statuses = {}
        for role, instrument in self.config.instruments.items():
            if role in self.roles:
                self.statuses[role] = InstrumentStatus(
                    role, instrument.model, instrument.resource, self.identities[role]
                )
            else:
                self.statuses[role] = self._open_one(instrument)
        return list(self.statuses.values())

    def open(self) -> Station:
        """Open and identify every instrument; raise :class:`StationError` naming each failure."""
        statuses = self.check()
        failed = [s for s in statuses if not s.ok]
        if failed:
            self.close(safe=False)
            details = "; ".join(f"{s.role} ({s.model} at {s.resource}): {s.error}" for s in failed)
            raise StationError(f"station '{self.name}' could not open: {details}")
        return self

    # -- the safe state -------------------------------------------------------------------
    def safe_state(self) -> list[str]:
        """Apply every instrument's safe state; return the failures (empty when all safe).

        An instrument that fails is reconnected once and tried again; an instrument that
        still fails is reported, and the others are made safe all the same. Ctrl-C is held
        until this is done.
        """
        failures: list[str] = []
        with _sigint_deferred():
            for role in SAFE_STATE_ORDER:
                if role not in self.roles:
                    continue
                try:
                    self.roles[role].safe_state()
                    continue
                except Exception as first:
                    log.warning("%s: safe state failed (%s); reconnecting once", role, first)
                    try:
                        self.transports[role].reconnect()
                        self.roles[role].safe_state()
                        log.warning("%s: safe state reached after reconnecting", role)
                    except Exception as second:
                        failures.append(
                            f"{role} ({self.config.instruments[role].resource}): NOT SAFE: {first}; "
                            f"reconnecting once did not help: {second}"
                        )
        return failures

    def close(self, *, safe: bool = True) -> list[str]:
        """Apply the safe state (unless ``safe=False``) and close every transport.

        Returns the safe-state failures (see :meth:`safe_state`). When replaying, a
        transcript holding more than the session replayed is kept in
        :attr:`replay_leftover` (a :class:`~nvmlab.errors.ReplayMismatch` naming its line;
        raised by ``with`` on an otherwise clean exit).
        """
        failures = self.safe_state() if safe else []
        if self.replay_from is not None:
            self.replay_leftover = None
            for transport in self.transports.values():
                try:
                    transport.assert_finished()
                except NvmlabError as exc:
                    self.replay_leftover = exc
                    break
        for transport in self.transports.values():
            with contextlib.suppress(Exception):
                transport.close()
        self.transports.clear()
        self.drivers.clear()
        self.roles.clear()
        return failures

    def __enter__(self) -> Station:
        if not self.is_open:
            self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        failures = self.close(safe=True)
        if not failures:
            if exc is None and self.replay_leftover is not None:
                raise self.replay_leftover
            return
        message = f"station '{self.name}': the safe state was NOT reached for: " + " | ".join(
            failures
        )
        log.error(message)
        if exc is None:
            raise StationError(message)
        if hasattr(exc, "add_note"):
            exc.add_note(message)

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"Station({self.name!r}, {state}, roles={list(self.config.instruments)})"
