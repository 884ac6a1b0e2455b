"""Assembling one emulated bench: the chip, the chamber, the board and the SMU in one world.

:func:`build_emulated_bench` turns a :class:`~nvmlab.mocks.benchfile.BenchConfig` into an
:class:`EmulatedBench`: one :class:`~nvmlab.mocks.world.Bench` (array physics, thermal
model, clock) shared by the three emulated instruments, optionally wrapped in fault
injectors, registered so that pyvisa (in-process library) and pyserial (``nvmlab://``
URLs) reach them, and servable over loopback TCP::

    emulated = build_emulated_bench(rows=16, cols=16, seed=3)
    rm = pyvisa.ResourceManager(emulated.visa_library())
    smu = rm.open_resource(emulated.resources()["smu"], read_termination="\\n")
    ...
    with emulated.serve_tcp() as tcp:        # the same world over 127.0.0.1
        print(tcp.resources)

In-process the clock is virtual by default (instrument time costs no wall time); pass
``clock=ScaledClock(x)`` for a bench served over TCP in accelerated real time.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import os
from collections.abc import Mapping
from typing import Any, Protocol, cast

from nvmlab.clock import Clock, VirtualClock
from nvmlab.errors import ConfigError
from nvmlab.mocks.benchfile import BenchConfig
from nvmlab.mocks.firmware.base import EmulatedInstrument
from nvmlab.mocks.physics.base import ArrayPhysics
from nvmlab.mocks.serving import serial_url
from nvmlab.mocks.serving.faults import FaultInjector, check_chamber_fault_support
from nvmlab.mocks.serving.registry import ServedBench, register_bench, unregister_bench
from nvmlab.mocks.serving.tcp import TcpBench
from nvmlab.mocks.serving.visa import NvmlabVisaLibrary, bench_resources
from nvmlab.mocks.thermal import ThermalModel
from nvmlab.mocks.world import Bench
from nvmlab.models import MODELS, canonical_model

#: Emulator classes by canonical model name ("module:Class"), read from the registry.
EMULATORS: dict[str, str] = {name: m.emulator for name, m in MODELS.items()}
#: Station-file driver name for each emulated model (the canonical name itself).
DRIVER_NAMES: dict[str, str] = {name: name for name in MODELS}

_bench_numbers = itertools.count(1)


def emulator_class(model: str) -> type[EmulatedInstrument]:
    """The emulator class for ``model``; ConfigError if unknown or not installed."""
    try:
        target = EMULATORS[canonical_model(model)]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ConfigError(
            f"instrument model {model!r} is not available: module {module_name} is missing"
        ) from None
    return getattr(module, class_name)  # type: ignore[no-any-return]


class _EmulatorFactory(Protocol):
    """How every class in :data:`EMULATORS` is built: the shared Bench, then keyword options.

    (The base :class:`EmulatedInstrument` takes a Clock; each concrete emulator takes the
    Bench, which carries the clock.)
    """

    def __call__(self, bench: Bench, /, **options: Any) -> EmulatedInstrument: ...


def _construct(model: str, bench: Bench, **options: Any) -> EmulatedInstrument:
    cls = emulator_class(model)
    params = inspect.signature(cls).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in options.items() if accepts_any or k in params}
    factory = cast(_EmulatorFactory, cls)
    return factory(bench, **kwargs)


class EmulatedBench:
    """One emulated bench: ``bench`` (the world), ``clock``, ``config`` and the instruments
    by role (``"smu"``, ``"chamber"``, ``"board"``), as served (fault injectors included).

    ``firmware`` holds the bare emulators, ``faults`` the fault injectors by role.
    """

    def __init__(
        self,
        bench: Bench,
        config: BenchConfig,
        firmware: Mapping[str, EmulatedInstrument],
        models: Mapping[str, str],
        *,
        bench_id: str,
    ) -> None:
        self.bench = bench
        self.clock: Clock = bench.clock
        self.config = config
        self.bench_id = bench_id
        self.firmware = dict(firmware)
        self.models = dict(models)
        self.faults: dict[str, FaultInjector] = {}
        self.instruments: dict[str, EmulatedInstrument] = {}
        for role, inst in self.firmware.items():
            specs = config.faults.get(role, [])
            if specs:
                try:
                    check_chamber_fault_support(inst, specs)
                except ValueError as exc:
                    raise ConfigError(
                        str(exc), file=config.source, field=f"faults.{role}"
                    ) from None
                self.faults[role] = FaultInjector(inst, specs)
                self.instruments[role] = self.faults[role]
            else:
                self.instruments[role] = inst
        self._start_s = self.clock.now()
        self._served = ServedBench(bench_id, self.instruments, self.clock)
        self._visa: NvmlabVisaLibrary | None = None
        register_bench(self._served)

    # -- reaching the instruments --------------------------------------------------------
    def visa_library(self) -> NvmlabVisaLibrary:
        """The in-process pyvisa library serving this bench (hand it to ResourceManager)."""
        if self._visa is None:
            self._visa = NvmlabVisaLibrary.for_bench(self.bench_id)
        return self._visa

    def resource_manager(self) -> Any:
        """A :class:`pyvisa.ResourceManager` on :meth:`visa_library`."""
        import pyvisa

        return pyvisa.ResourceManager(self.visa_library())

    def resources(self) -> dict[str, str]:
        """In-process VISA resource names by role."""
        return bench_resources(self._served)

    def serial_urls(self) -> dict[str, str]:
        """In-process pyserial URLs (``nvmlab://<bench_id>/<role>``) by role."""
        return {role: serial_url.url(self.bench_id, role) for role in self.instruments}

    @property
    def locks(self) -> dict[str, Any]:
        """Per-role locks serialising host access (shared by every server of this bench)."""
        return self._served.locks

    def serve_tcp(self, host: str = "127.0.0.1", port_base: int = 0) -> TcpBench:
        """Serve every instrument on its own loopback port; use as a context manager.

        ``port_base=0`` picks free ports; otherwise smu, chamber and board get
        ``port_base``, ``port_base + 1`` and ``port_base + 2``.
        """
        return TcpBench(self.instruments, host=host, port_base=port_base, locks=self._served.locks)

    def station_dict(
        self,
        resources: Mapping[str, str] | None = None,
        *,
        name: str = "emulated-bench",
        timeout_s: float = 5.0,
    ) -> dict[str, Any]:
        """The content of a station file for this bench reached through ``resources``
        (default: the in-process ones; open that station with ``visa_library=``
        :meth:`visa_library`)."""
        resources = dict(self.resources() if resources is None else resources)
        instruments: dict[str, Any] = {}
        for role in ("smu", "chamber", "board"):
            if role not in resources:
                continue
            entry: dict[str, Any] = {
                "driver": DRIVER_NAMES[self.models[role]],
                "resource": resources[role],
                "timeout_s": timeout_s,
            }
            if (
                "::" in resources[role] and "nvmlab" not in resources[role].lower()
            ):  # TCP: pyvisa-py
                entry["backend"] = "@py"
            if role == "chamber":
                entry["safe_setpoint_c"] = 25.0
                if self.models[role] == "watlow_f4" and self.config.chamber.address != 1:
                    entry["options"] = {"address": self.config.chamber.address}
            instruments[role] = entry
        data: dict[str, Any] = {"station": {"name": name}}
        if getattr(self.bench.array, "kind", None) == "eflash":
            # the station's eFlash limit defaults admit the documented read, program and
            # erase biases (docs/station-file.md, [station] array)
            data["station"]["array"] = "eflash"
        data["instruments"] = instruments
        return data

    # -- truth and time --------------------------------------------------------------------
    def ground_truth(self) -> dict[str, Any]:
        """The chip's true per-device parameters and state (``Bench.ground_truth``)."""
        return self.bench.ground_truth()

    def instrument_time_s(self) -> float:
        """Instrument time consumed since the bench was built (s, on the bench clock)."""
        return self.clock.now() - self._start_s

    def preselect(self, row: int, col: int, scheme: str = "track") -> None:
        """Route the board so SMU channel A reads device (row, col) alone (tracking scheme)."""
        board = self.firmware["board"]
        board.preselect(row, col, scheme)  # type: ignore[attr-defined]

    def save_state(self) -> None:
        """Write the chip state file (if any) as the chip is at this instant of the bench
        clock: relaxation and telegraph flips since the last operation included, so a
        truth read from the file is the chip as the measurement left it."""
        with self.bench.lock:
            # Bench.ground_truth brings the chip up to the clock (Bench has no public call
            # for that step alone); the truth itself is not needed here.
            self.bench.ground_truth()
            try:
                self.bench.save_state()
            except OSError as exc:
                raise ConfigError(
                    f"cannot write the chip state file {str(self.bench.state_file)!r}: "
                    f"{exc.strerror or exc}; allowed: a file in an existing, writable folder",
                    file=self.config.source,
                    field="bench.state_file",
                ) from None

    def close(self, *, save_state: bool = True) -> None:
        """Save the chip state (:meth:`save_state`; ``save_state=False`` skips it, e.g.
        when the file was just refused) and unregister the bench (its in-process resources
        disappear). Safe to call more than once."""
        try:
            if save_state:
                self.save_state()
        finally:
            unregister_bench(self.bench_id)


def build_emulated_bench(
    config: BenchConfig | None = None,
    *,
    clock: Clock | None = None,
    array: ArrayPhysics | str | None = None,
    bench_id: str | None = None,
    **overrides: Any,
) -> EmulatedBench:
    """Build the emulated bench described by ``config`` (defaults: 64 x 64 memristor,
    Keithley 2400, Espec chamber, seed 0).

    ``overrides`` replace config fields (``rows=16``, ``seed=3``, ``smu_model="keithley2636b"``,
    ``chamber_model="watlow_f4"``, ``array="eflash"`` ...). ``clock`` defaults to a
    :class:`~nvmlab.clock.VirtualClock`. ``array`` is either a kind (``"memristor"``,
    ``"eflash"``: a config override like the others) or a ready-made chip (e.g. a
    ``ResistorArray`` with known conductances) used instead of one built from the config.
    """
    if isinstance(array, str):
        overrides["array"] = array
        array = None
    config = config if config is not None else BenchConfig()
    if overrides:
        config = config.with_overrides(**overrides)
    clock = clock if clock is not None else VirtualClock()
    if array is None:
        from nvmlab.mocks.physics import create_array

        try:
            array = create_array(
                config.array, config.rows, config.cols, seed=config.seed, params=config.physics
            )
        except ConfigError as exc:
            if config.source is None or exc.file:
                raise
            # In a bench file the device parameters live in [physics], whatever the kind.
            text = str(exc)
            if text.startswith(f"{config.array}."):
                text = "physics." + text[len(config.array) + 1 :]
            raise ConfigError(text, file=config.source, field=None) from None
    thermal = ThermalModel(clock, config.thermal_params(), seed=config.seed)
    bench = Bench(array, clock, thermal, state_file=config.state_file)
    models = {"smu": config.smu.model, "chamber": config.chamber.model, "board": "probe_board"}
    firmware = {
        "smu": _construct(
            config.smu.model,
            bench,
            query_latency_s=config.smu.query_latency_s,
            line_frequency_hz=config.smu.line_frequency_hz,
        ),
        "chamber": _construct(
            config.chamber.model,
            bench,
            query_latency_s=config.chamber.query_latency_s,
            **({"address": config.chamber.address} if config.chamber.model == "watlow_f4" else {}),
        ),
        "board": _construct("probe_board", bench, query_latency_s=config.board.query_latency_s),
    }
    if bench_id is None:
        bench_id = f"bench{os.getpid()}-{next(_bench_numbers)}"
    return EmulatedBench(bench, config, firmware, models, bench_id=bench_id)
