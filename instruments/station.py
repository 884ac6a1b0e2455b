"""The station at run time: the instruments of one bench, opened as roles, left safe.

:class:`Station` opens and identifies the instruments a station file names (see
:mod:`nvmlab.instruments.stationfile` and ``docs/station-file.md``) and exposes them as
roles (``station.smu``, ``station.chamber``, ``station.board``). Used as a context manager
it leaves the bench safe on every exit path, including exceptions, Ctrl-C and a lost
connection: SMU outputs at 0 V and off, board lines grounded, chamber in standby or at its
safe setpoint.

The station file's schema and validation live in :mod:`nvmlab.instruments.stationfile`,
resource-string checks in :mod:`nvmlab.instruments.resources`; both are re-exported here
so ``from nvmlab.instruments.station import StationConfig`` keeps working.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from nvmlab.clock import Clock, ScaledClock, VirtualClock, WallClock
from nvmlab.errors import (
    ConfigError,
    InstrumentError,
    InstrumentIOError,
    NvmlabError,
    ReplayMismatch,
)
from nvmlab.instruments.identity import identity_problem, with_article
from nvmlab.instruments.resources import RESOURCE_HELP, check_resource, is_visa_resource
from nvmlab.instruments.safety import SafetyLimits
from nvmlab.instruments.stationfile import (
    DRIVERS,
    LIMIT_BOUNDS,
    MAX_TIMEOUT_S,
    ROLES,
    SERIAL_OPTION_KEYS,
    STATION_KEYS,
    TRANSPORT_OPTIONS,
    DriverSpec,
    InstrumentConfig,
    StationConfig,
    StationFileError,
    load_station_file,
)

if TYPE_CHECKING:
    from nvmlab.instruments.roles import ArrayBoard, Chamber, SourceMeter

__all__ = [
    "DRIVERS",
    "LIMIT_BOUNDS",
    "MAX_TIMEOUT_S",
    "RESOURCE_HELP",
    "ROLES",
    "SAFE_STATE_ORDER",
    "STATION_KEYS",
    "TRANSPORT_OPTIONS",
    "DriverSpec",
    "InstrumentConfig",
    "InstrumentStatus",
    "Station",
    "StationConfig",
    "StationError",
    "StationFileError",
    "check_resource",
    "is_visa_resource",
    "load_station_file",
]

log = logging.getLogger(__name__)

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
    #: True when something answered that is not the model the station file names
    wrong_instrument: bool = False

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
        self.replay_leftover: Exception | None = None

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
    def database_url(self) -> str | None:
        """The station file's ``[station] database`` URL, a relative SQLite path resolved
        against the file's folder (:attr:`StationConfig.database_url`); None without it.
        The station opens no database: ``nvmlab.storage`` applies the precedence
        ``--db`` > ``NVMLAB_DB`` > job or station file > ``./nvmlab.sqlite``."""
        return self.config.database_url

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
        for key in SERIAL_OPTION_KEYS:
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
            status.identity, status.error = self._identify(instrument, role)
            if not status.error and instrument.role == "board":
                status.error = self._check_board_array(instrument, role)
            status.wrong_instrument = bool(status.error)
        except (NvmlabError, OSError, ImportError, ValueError) as exc:
            status.error = str(exc)
        if status.error:
            if transport is not None:
                with contextlib.suppress(Exception):
                    transport.close()
            return status
        self.transports[instrument.role] = transport
        self.drivers[instrument.role] = driver
        self.roles[instrument.role] = role
        self.identities[instrument.role] = status.identity
        return status

    def _identify(self, instrument: InstrumentConfig, role: Any) -> tuple[str, str]:
        """Ask ``role`` who it is; return ``(identity, error)``, error empty when it is the
        model the station file names (see :mod:`nvmlab.instruments.identity`).

        Nothing but the identity query is sent before the check: a wrong instrument is
        not reset, configured or made safe by this station.
        """
        where = f"{self.config.source}: instruments.{instrument.role}"
        expected = with_article(instrument.model)
        try:
            identity = str(role.identify()).strip()
        except (InstrumentIOError, ReplayMismatch, OSError):
            raise  # not there (refused, closed, unplugged) or not the recorded session
        except Exception as exc:  # noqa: BLE001 - a wrong device answers in any way
            return "", (
                f"{where}: expected {expected}, but asking who answers at "
                f"{instrument.resource} failed: {exc}"
            )
        why = identity_problem(instrument.driver, identity)
        if why is None:
            return identity, ""
        return identity, (
            f"{where}: expected {expected}, but {identity!r} answered at "
            f"{instrument.resource} ({why})"
        )

    def _check_board_array(self, instrument: InstrumentConfig, board: Any) -> str:
        """The board's array (``CONF?``) must be the station file's ``[station] array``;
        return the problem, empty when it fits.

        A crossbar (``MEMRISTOR`` or ``RESISTOR``) fits ``memristor``, ``EFLASH`` fits
        ``eflash``: eFlash limits on a crossbar would let a read switch a memristor. A file
        without the key on an eFlash board opens with the memristor limits and a warning.
        """
        where = f"{self.config.source}: station.array"
        try:
            kind = str(board.kind).upper()
        except (InstrumentIOError, ReplayMismatch, OSError):
            raise
        except Exception as exc:  # noqa: BLE001 - a board that cannot say what it holds
            return f"{where}: the probe board at {instrument.resource} did not say which array it holds: {exc}"
        fits = "eflash" if kind == "EFLASH" else "memristor"
        declared = self.config.array
        if declared is None:
            if fits != "memristor":
                log.warning(
                    "%s: the probe board at %s holds %s array, but the station file sets no "
                    "[station] array: the memristor limits apply (max_read_v %g V refuses the "
                    'documented 1 V bit-line read); set array = "%s"',
                    self.config.source,
                    instrument.resource,
                    with_article(kind),
                    self.limits.max_read_v,
                    fits,
                )
            return ""
        if declared == fits:
            return ""
        return (
            f"{where} is '{declared}', but the probe board at {instrument.resource} holds "
            f'{with_article(kind)} array; set array = "{fits}" (the limits follow the array)'
        )

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
            details = "; ".join(
                s.error
                if s.wrong_instrument
                else f"{s.role} ({s.model} at {s.resource}): {s.error}"
                for s in failed
            )
            raise StationError(f"station '{self.name}' could not open: {details}")
        return self

    # -- the safe state -------------------------------------------------------------------
    def safe_state(self) -> list[str]:
        """Apply every instrument's safe state; return the failures (empty when all safe).

        An instrument that fails is reconnected once and tried again; an instrument that
        still fails is reported, and the others are made safe all the same. Ctrl-C is held
        until this is done.

        When replaying there is no instrument to make safe: the safe state's commands are
        only checked against the transcripts (see :meth:`_replay_safe_state`), and this
        returns no failure.
        """
        if self.replay_from is not None:
            self._replay_safe_state()
            return []
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

    def _replay_safe_state(self, *, diverged: bool = False) -> None:
        """Replay: nothing to make safe; check the exit safe state against the transcripts.

        Says so in one info line. A safe state that differs from the recorded one is a
        replay mismatch (kept in :attr:`replay_leftover`), never a "NOT SAFE" alarm, and
        nothing is reconnected. After the session already ``diverged`` from its
        transcript, the rest of the transcript no longer lines up with the session and
        the safe state is not checked at all (the divergence is the one thing to report).
        """
        where = f"station '{self.name}' (replayed from {self.replay_from})"
        if diverged:
            log.info(
                "%s: no instruments to make safe; the session diverged from its transcript, "
                "so its exit safe state is not checked",
                where,
            )
            return
        log.info(
            "%s: no instruments to make safe; the exit safe state is checked against the "
            "transcripts only",
            where,
        )
        for role in SAFE_STATE_ORDER:
            if role not in self.roles:
                continue
            try:
                self.roles[role].safe_state()
            except Exception as exc:  # noqa: BLE001 - reported as the replay's mismatch
                if self.replay_leftover is None:
                    self.replay_leftover = exc
                return

    def close(self, *, safe: bool = True) -> list[str]:
        """Apply the safe state (unless ``safe=False``) and close every transport.

        Returns the safe-state failures (see :meth:`safe_state`). When replaying, the
        first difference found at close, a safe state other than the recorded one or a
        transcript holding more than the session replayed, is kept in
        :attr:`replay_leftover` (a :class:`~nvmlab.errors.ReplayMismatch` naming its
        transcript line; raised by ``with`` on an otherwise clean exit, added as a note
        to the exception leaving the block otherwise).
        """
        return self._close(safe=safe)

    def _close(self, *, safe: bool, diverged: bool = False) -> list[str]:
        self.replay_leftover = None
        if self.replay_from is not None:
            if safe:
                self._replay_safe_state(diverged=diverged)
            failures: list[str] = []
            if not diverged and self.replay_leftover is None:
                for transport in self.transports.values():
                    try:
                        transport.assert_finished()
                    except NvmlabError as exc:
                        self.replay_leftover = exc
                        break
        else:
            failures = self.safe_state() if safe else []
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
        failures = self._close(safe=True, diverged=_replay_diverged(exc))
        if self.replay_leftover is not None:
            if exc is None:
                raise self.replay_leftover
            if hasattr(exc, "add_note"):
                exc.add_note(f"station '{self.name}' replay: {self.replay_leftover}")
        if not failures:
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


def _replay_diverged(exc: BaseException | None) -> bool:
    """Whether ``exc`` is (or was raised while handling) a replay mismatch."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ReplayMismatch):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False
