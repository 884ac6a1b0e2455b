"""The instrument models nvmlab knows: one registry that every other place reads.

Each model has one canonical name, the station file's spelling (``keysight_b2902a``,
underscores); the hyphenated spelling (``keysight-b2902a``) is accepted on input everywhere
and turned into the canonical one by :func:`canonical_model`. For each model the registry
names, as ``"module:attribute"`` strings resolved only when needed, the driver class
(``nvmlab.drivers``), the role class (``nvmlab.instruments``) and the emulator class
(``nvmlab.mocks``), and says what the model supports. This module imports no layer, so
drivers, mocks and instruments can all read it without pointing an import upwards.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "InstrumentModel",
    "MODELS",
    "Kind",
    "canonical_model",
    "spelled",
    "get_model",
    "models_of_kind",
    "load_attribute",
]

Kind = Literal["smu", "chamber", "board"]


@dataclass(frozen=True)
class InstrumentModel:
    """One instrument model and what it supports."""

    name: str  #: canonical name, the station file's ``driver = ...`` value
    kind: Kind  #: the role it fills on a station
    title: str  #: human model name, for tables and messages ("Keithley 2636B")
    driver: str  #: driver class, ``"module:Class"``
    role: str  #: role class wrapping the driver, ``"module:Class"``
    emulator: str  #: emulator class of the bench, ``"module:Class"``
    #: SMU channels (``("a",)`` for a single-channel SMU); empty for other kinds
    channels: tuple[str, ...] = ()
    tsp: bool = False  #: runs uploaded TSP (Lua) scripts
    pulse_mode: bool = False  #: has a hardware pulse mode (otherwise pulses are timed DC)
    list_sweep: bool = False  #: runs a voltage list sweep on the instrument
    #: what its identity reply must contain (case-insensitive substrings, all of them)
    identity: tuple[str, ...] = ()
    #: driver-specific station-file ``options`` keys and their type
    driver_options: Mapping[str, type] = field(default_factory=dict)
    #: chambers: the setpoint range (C) of the model's typical chamber, (low, high)
    setpoint_range_c: tuple[float, float] | None = None

    @property
    def aliases(self) -> tuple[str, ...]:
        """Other spellings accepted on input (the hyphenated one)."""
        hyphen = self.name.replace("_", "-")
        return (hyphen,) if hyphen != self.name else ()

    def load_driver(self) -> type:
        """Import and return the driver class."""
        return load_attribute(self.driver)  # type: ignore[no-any-return]

    def load_role(self) -> type:
        """Import and return the role class."""
        return load_attribute(self.role)  # type: ignore[no-any-return]

    def load_emulator(self) -> type:
        """Import and return the emulator class."""
        return load_attribute(self.emulator)  # type: ignore[no-any-return]


_D = "nvmlab.drivers"
_I = "nvmlab.instruments"
_F = "nvmlab.mocks.firmware"

MODELS: dict[str, InstrumentModel] = {
    m.name: m
    for m in (
        InstrumentModel(
            "keithley2400",
            "smu",
            "Keithley 2400",
            f"{_D}.keithley2400:Keithley2400",
            f"{_I}.sourcemeters:Keithley2400SourceMeter",
            f"{_F}.keithley2400:Keithley2400Emulator",
            channels=("a",),
            list_sweep=True,
            identity=("keithley", "2400"),
        ),
        InstrumentModel(
            "keithley2636b",
            "smu",
            "Keithley 2636B",
            f"{_D}.keithley2636b:Keithley2636B",
            f"{_I}.sourcemeters:Keithley2636BSourceMeter",
            f"{_F}.keithley2636b:Keithley2636BEmulator",
            channels=("a", "b"),
            tsp=True,
            pulse_mode=True,
            list_sweep=True,
            identity=("keithley", "2636b"),
        ),
        InstrumentModel(
            "keysight_b2902a",
            "smu",
            "Keysight B2902A",
            f"{_D}.keysight_b2902a:KeysightB2902A",
            f"{_I}.sourcemeters:KeysightB2902ASourceMeter",
            f"{_F}.keysight_b2902a:KeysightB2902AEmulator",
            channels=("a", "b"),
            pulse_mode=True,
            list_sweep=True,
            identity=("keysight", "b2902a"),
        ),
        InstrumentModel(
            "espec",
            "chamber",
            "Espec chamber",
            f"{_D}.espec:EspecChamber",
            f"{_I}.chambers:StationChamber",
            f"{_F}.espec:EspecEmulator",
            # Espec SH series bench-top chambers: -40 to +150 C
            setpoint_range_c=(-40.0, 150.0),
        ),
        InstrumentModel(
            "watlow_f4",
            "chamber",
            "Watlow F4 chamber",
            f"{_D}.watlow_f4:WatlowF4",
            f"{_I}.chambers:StationChamber",
            f"{_F}.watlow_f4:WatlowF4Emulator",
            driver_options={"address": int, "baudrate": int},
            # TestEquity 107/115 chambers with a Watlow F4: -73 to +175 C
            setpoint_range_c=(-73.0, 175.0),
        ),
        InstrumentModel(
            "probe_board",
            "board",
            "probe board",
            f"{_D}.probe_board:ProbeBoard",
            f"{_I}.boards:StationBoard",
            f"{_F}.probe_board:ProbeBoardEmulator",
            identity=("nvmlab", "probe-board"),
        ),
    )
}

_BY_SPELLING: dict[str, str] = {
    spelling: m.name for m in MODELS.values() for spelling in (m.name, *m.aliases)
}


def models_of_kind(kind: Kind) -> tuple[str, ...]:
    """Canonical names of every model of ``kind`` (``"smu"``, ``"chamber"``, ``"board"``)."""
    return tuple(name for name, m in MODELS.items() if m.kind == kind)


def canonical_model(name: str, kind: Kind | None = None) -> str:
    """The canonical name of ``name`` (either spelling, any case).

    Raises :class:`ValueError` naming the allowed models (of ``kind`` when given).
    """
    canonical = _BY_SPELLING.get(str(name).strip().lower())
    allowed = models_of_kind(kind) if kind is not None else tuple(MODELS)
    if canonical is None or canonical not in allowed:
        what = f"{kind} model" if kind is not None else "instrument model"
        raise ValueError(f"unknown {what} {name!r}; allowed: {', '.join(allowed)}")
    return canonical


def spelled(name: str) -> str:
    """``name`` in the canonical spelling (lower case, underscores), for argparse ``type=``."""
    return str(name).strip().lower().replace("-", "_")


def get_model(name: str, kind: Kind | None = None) -> InstrumentModel:
    """The :class:`InstrumentModel` called ``name`` (either spelling)."""
    return MODELS[canonical_model(name, kind)]


def load_attribute(target: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)
