"""The :class:`~nvmlab.instruments.roles.SourceMeter` role over each SMU driver.

Every method checks the station's :class:`~nvmlab.instruments.safety.SafetyLimits`
*before* it builds a command: a voltage, compliance or pulse width beyond the limits
raises :class:`~nvmlab.errors.SafetyLimitError` and nothing reaches the wire.

Compliance: until :meth:`configure` has been called for a channel, the first command that
sources anything on it first programs the compliance to the station's ``max_current_a``,
so an instrument's power-on compliance (100 mA on a 2636B) never applies to a device.

Outputs: :meth:`list_sweep`, :meth:`pulse` and :meth:`pulse_train` switch an output that
is off on for the operation and off again afterwards; an output that was on stays on (at
0 V after a pulse).

Buffers: :meth:`sweep_trace` runs a list sweep into the instrument's reading buffer (the
2400's trace buffer, a 2636B's ``nvbuffer1``, a B2902A's acquisition buffer) and reads it
back with each reading's time.

Pulse trains: the 2636B runs the whole train as an uploaded TSP script whose caps (|V| of
the pulses and of the read level, the longest width) are the station's limits, passed as
the script's parameters after being checked; the 2400 and B2902A make one pulse and one
reading per round trip.

Units: V, A, s.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from nvmlab.drivers.keithley2400 import Keithley2400
from nvmlab.drivers.keithley2636b import Keithley2636B, Keithley2636BChannel
from nvmlab.drivers.keysight_b2902a import KeysightB2902A, KeysightB2902AChannel
from nvmlab.errors import ConfigError, SafetyLimitError
from nvmlab.instruments.roles import Channel, SourceMeter, SweepTrace
from nvmlab.instruments.safety import SafetyLimits, VoltagePurpose
from nvmlab.instruments.scripts import (
    END_MARKER,
    ScriptResult,
    ScriptStopped,
    ScriptTemplate,
    render,
)
from nvmlab.models import spelled

#: Most pulses one :meth:`SourceMeter.pulse_train` call makes.
MAX_TRAIN = 5000

__all__ = [
    "Keithley2400SourceMeter",
    "Keithley2636BSourceMeter",
    "KeysightB2902ASourceMeter",
    "make_source_meter",
    "SweepTrace",
    "SOURCE_METERS",
]


class _SourceMeterBase(ABC):
    """Shared safety checks, channel bookkeeping and the best-effort safe state."""

    channels: tuple[str, ...] = ("a",)

    def __init__(self, driver: Any, limits: SafetyLimits) -> None:
        self.driver = driver
        self.limits = limits
        self._configured: set[str] = set()
        self._output_on: dict[str, bool] = {}
        #: Last level (V) this role programmed per channel; unknown levels are zeroed
        #: before an output is switched on.
        self._levels: dict[str, float] = {}

    # -- checks (no I/O) ------------------------------------------------------------------
    def _channel(self, channel: str) -> str:
        if channel not in self.channels:
            raise ValueError(
                f"{type(self).__name__}: channel {channel!r} does not exist; allowed {self.channels}"
            )
        return channel

    def _check_sweep(self, volts: np.ndarray, purpose: VoltagePurpose) -> np.ndarray:
        levels = np.asarray(volts, dtype=float).ravel()
        if levels.size == 0:
            raise ValueError("list sweep: at least one voltage is needed")
        if not np.all(np.isfinite(levels)):
            raise SafetyLimitError("list sweep contains a non-finite voltage; nothing was sent")
        worst = float(levels[np.argmax(np.abs(levels))])
        self.limits.check_voltage(worst, purpose, what="list sweep voltage")
        return levels

    def _switch_on(self, channel: str) -> None:
        if channel not in self._levels:
            self._set_level(channel, 0.0)
            self._levels[channel] = 0.0
        self._set_output(channel, True)

    @contextlib.contextmanager
    def _output_for_operation(self, channel: str) -> Iterator[None]:
        """Switch an output that is off on for one operation and off again after it.

        When the operation fails and switching off fails too, the operation's error is the
        one raised (the switch-off failure is added to it as a note), so the first cause is
        never masked; the station's safe state deals with the output then.
        """
        was_on = self._output_on.get(channel, False)
        if not was_on:
            self._switch_on(channel)
        try:
            yield
        except BaseException as exc:
            if not was_on:
                try:
                    self._set_output(channel, False)
                except Exception as cleanup:  # noqa: BLE001 - reported on the first error
                    exc.add_note(f"switching the output off afterwards failed too: {cleanup}")
            raise
        if not was_on:
            self._set_output(channel, False)

    def _ensure_compliance(self, channel: str) -> None:
        if channel not in self._configured:
            self._apply_compliance(channel, self.limits.max_current_a)
            self._configured.add(channel)

    # -- the role -------------------------------------------------------------------------
    def identify(self) -> str:
        return str(self.driver.identity)

    def configure(
        self, *, current_limit_a: float, nplc: float = 1.0, channel: Channel = "a"
    ) -> None:
        """Voltage source measuring current; compliance ``current_limit_a`` (A), ``nplc`` (PLC)."""
        ch = self._channel(channel)
        limit = self.limits.check_current_limit(current_limit_a)
        self._configure(ch, limit, float(nplc))
        self._configured.add(ch)

    def set_voltage(
        self, volts: float, *, purpose: VoltagePurpose = "read", channel: Channel = "a"
    ) -> None:
        """Set the source level (V); checked against the limit for ``purpose``."""
        ch = self._channel(channel)
        level = self.limits.check_voltage(volts, purpose)
        self._ensure_compliance(ch)
        self._set_level(ch, level)
        self._levels[ch] = level

    def output(self, on: bool, *, channel: Channel = "a") -> None:
        """Switch the output on or off."""
        ch = self._channel(channel)
        if on:
            self._ensure_compliance(ch)
            self._switch_on(ch)
        else:
            self._set_output(ch, False)
        self._output_on[ch] = bool(on)

    def measure_current(self, *, channel: Channel = "a") -> float:
        """One current reading (A) at the present source level."""
        return self._measure(self._channel(channel))

    def list_sweep(
        self, volts: np.ndarray, *, purpose: VoltagePurpose = "read", channel: Channel = "a"
    ) -> np.ndarray:
        """Source each voltage (V) in turn and return the currents (A), as one bulk operation."""
        ch = self._channel(channel)
        levels = self._check_sweep(volts, purpose)
        self._ensure_compliance(ch)
        with self._output_for_operation(ch):
            amps = self._sweep(ch, levels)
        return np.asarray(amps, dtype=float)

    def sweep_trace(
        self, volts: np.ndarray, *, purpose: VoltagePurpose = "read", channel: Channel = "a"
    ) -> SweepTrace:
        """A list sweep whose readings are stored in the instrument's buffer and read back
        from it with their times: each voltage (V, checked against the limit for
        ``purpose`` before anything is sent) sourced in turn, one reading each. The output
        is switched on for the sweep if it was off."""
        ch = self._channel(channel)
        levels = self._check_sweep(volts, purpose)
        self._ensure_compliance(ch)
        with self._output_for_operation(ch):
            source_v, amps, times = self._smu(ch).list_sweep_trace(levels)
        return SweepTrace(
            np.asarray(source_v, dtype=float),
            np.asarray(amps, dtype=float),
            np.asarray(times, dtype=float),
        )

    def pulse(
        self,
        volts: float,
        width_s: float,
        *,
        purpose: VoltagePurpose = "write",
        channel: Channel = "a",
    ) -> None:
        """One pulse of ``volts`` (V) lasting ``width_s`` (s) from 0 V; back to 0 V after."""
        ch = self._channel(channel)
        level = self.limits.check_voltage(volts, purpose, what="pulse amplitude")
        width = self.limits.check_pulse_width(width_s)
        self._check_pulse_supported(width)
        self._ensure_compliance(ch)
        self._pulse(ch, level, width, was_on=self._output_on.get(ch, False))
        self._levels[ch] = 0.0

    def pulse_train(
        self,
        volts: float,
        width_s: float,
        count: int,
        *,
        v_read: float = 0.0,
        purpose: VoltagePurpose = "write",
        channel: Channel = "a",
    ) -> np.ndarray:
        """``count`` pulses of ``volts`` (V), ``width_s`` (s), each followed by one reading
        (A) at ``v_read`` (V, checked against the read limit); returns the currents.

        The output is switched on for the train if it was off, and off again after; it
        ends at 0 V either way.
        """
        ch = self._channel(channel)
        level = self.limits.check_voltage(volts, purpose, what="pulse amplitude")
        read_level = self.limits.check_voltage(v_read, "read", what="read level")
        width = self.limits.check_pulse_width(width_s)
        self._check_pulse_supported(width)
        if isinstance(count, bool) or int(count) != count or not 1 <= count <= MAX_TRAIN:
            raise ValueError(f"pulse train count {count!r}: allowed 1..{MAX_TRAIN} pulses")
        self._ensure_compliance(ch)
        with self._output_for_operation(ch):
            self._levels[ch] = 0.0  # the train ends at 0 V, or is at an unknown level
            amps = self._pulse_train(ch, level, width, int(count), read_level, purpose)
        return np.asarray(amps, dtype=float)

    def safe_state(self) -> None:
        """Source 0 V and switch every output off; keeps going past errors, raises the first."""
        first: BaseException | None = None
        for ch in self.channels:
            for step in (
                lambda c=ch: self._set_level(c, 0.0),
                lambda c=ch: self._set_output(c, False),
            ):
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - best effort, re-raised below
                    if first is None:
                        first = exc
            self._output_on[ch] = False
            self._levels[ch] = 0.0
        if first is not None:
            raise first

    # -- per model: the defaults fit a driver (or channel) with the 2400 / B2902A names -----
    def _check_pulse_supported(self, width_s: float) -> None:  # noqa: B027 - optional hook
        """Raise (before any I/O) when the model cannot make a pulse this short."""

    @abstractmethod
    def _smu(self, ch: str) -> Any:
        """The driver object commanding channel ``ch`` (the driver or one of its channels)."""

    def _configure(self, ch: str, limit_a: float, nplc: float) -> None:
        self._smu(ch).configure_voltage_source(compliance_a=limit_a, nplc=nplc)

    def _apply_compliance(self, ch: str, limit_a: float) -> None:
        self._smu(ch).compliance_current = limit_a

    def _set_level(self, ch: str, volts: float) -> None:
        self._smu(ch).source_voltage = volts

    def _set_output(self, ch: str, on: bool) -> None:
        self._smu(ch).output_enabled = on

    def _measure(self, ch: str) -> float:
        return float(self._smu(ch).measure_current())

    def _sweep(self, ch: str, levels: np.ndarray) -> np.ndarray:
        return np.asarray(self._smu(ch).list_sweep(levels)[1])

    @abstractmethod
    def _pulse(self, ch: str, volts: float, width_s: float, *, was_on: bool) -> None: ...

    def _pulse_train(
        self,
        ch: str,
        volts: float,
        width_s: float,
        count: int,
        v_read: float,
        purpose: VoltagePurpose,
    ) -> np.ndarray:
        """One pulse and one reading per round trip (the output is on, at 0 V)."""
        amps = np.empty(count)
        for k in range(count):
            self._pulse(ch, volts, width_s, was_on=True)
            self._set_level(ch, v_read)
            amps[k] = self._measure(ch)
        self._set_level(ch, 0.0)
        return amps


class Keithley2400SourceMeter(_SourceMeterBase):
    """SourceMeter role on a Keithley 2400 (one channel, ``"a"``).

    Pulses are approximated with source auto-clear (see :mod:`nvmlab.drivers.keithley2400`):
    the true width is ``width_s`` plus the integration time of the one reading taken.
    """

    channels = ("a",)
    driver: Keithley2400

    def _smu(self, ch: str) -> Keithley2400:
        return self.driver

    def _pulse(self, ch: str, volts: float, width_s: float, *, was_on: bool) -> None:
        # Source auto-clear switches the output on for the pulse and off after it.
        if was_on:
            self.driver.output_enabled = False
        self.driver.pulse(volts, width_s)
        if was_on:
            self.driver.output_enabled = True


class Keithley2636BSourceMeter(_SourceMeterBase):
    """SourceMeter role on a Keithley 2636B: ``"a"`` is smua, ``"b"`` is smub.

    Pulses are timed on the instrument (one Lua chunk, no bus round trip inside the pulse);
    a pulse train runs as a script whose caps are the station's limits.
    """

    channels = ("a", "b")
    driver: Keithley2636B

    def _smu(self, ch: str) -> Keithley2636BChannel:
        return self.driver.channel(ch)

    def _check_pulse_supported(self, width_s: float) -> None:
        if width_s < 1e-5:
            raise SafetyLimitError(
                f"pulse width {width_s:g} s is shorter than the 10 us this driver times on a "
                "2636B; nothing was sent"
            )

    def _configure(self, ch: str, limit_a: float, nplc: float) -> None:
        self._smu(ch).configure_voltage_source(current_limit_a=limit_a, nplc=nplc)

    def _apply_compliance(self, ch: str, limit_a: float) -> None:
        self._smu(ch).current_limit = limit_a

    def _pulse(self, ch: str, volts: float, width_s: float, *, was_on: bool) -> None:
        smu = self._smu(ch)
        smu.source_voltage = 0.0
        if not was_on:
            smu.output_enabled = True
        try:
            smu.pulse(volts, width_s)
        finally:
            if not was_on:
                smu.output_enabled = False

    def run_script(
        self,
        template: ScriptTemplate,
        values: Mapping[str, Any],
        *,
        max_run_s: float,
    ) -> ScriptResult:
        """Upload ``template`` with ``values`` and run it on the instrument; return what it
        printed.

        Every value is checked by its declared kind against the station's limits before
        the script text is built (a refused value sends nothing), and the script stops
        itself, both outputs off, once ``max_run_s`` (s, bench time on the instrument) has
        passed (see :mod:`nvmlab.instruments.scripts`). A channel the role has not
        configured gets the station's current limit first. Raises
        :class:`~nvmlab.instruments.scripts.ScriptStopped` when the script was stopped by
        its watchdog or failed (its outputs are then off).
        """
        source = render(template, values, self.limits, max_run_s=max_run_s)
        for ch in self.channels:
            self._ensure_compliance(ch)
        self.driver.load_script(template.name, source)
        lines = self.driver.run_script_until(template.name, END_MARKER, run_time_s=max_run_s)
        end, printed = lines[-1], lines[:-1]
        if end.strip() != f"{END_MARKER} ok":
            for ch in self.channels:
                self._output_on[ch] = False
                self._levels[ch] = 0.0
            reason = end[len(END_MARKER) :].strip().removeprefix("stopped").strip()
            raise ScriptStopped(
                f"script {template.name} was stopped on the instrument, outputs off: {reason}",
                printed,
            )
        for ch in self.channels:
            self._levels[ch] = 0.0  # the wrapper leaves both sources at 0 V
        return ScriptResult(printed, float(max_run_s))

    def _pulse_train(
        self,
        ch: str,
        volts: float,
        width_s: float,
        count: int,
        v_read: float,
        purpose: VoltagePurpose,
    ) -> np.ndarray:
        """The whole train in one script call; its caps are the station's limits."""
        return self.driver.pulse_train(
            self._smu(ch),
            volts,
            width_s,
            count,
            v_read=v_read,
            v_max=self.limits.max_voltage(purpose),
            v_read_max=self.limits.max_read_v,
            width_max_s=self.limits.max_pulse_width_s,
        )


class KeysightB2902ASourceMeter(_SourceMeterBase):
    """SourceMeter role on a Keysight B2902A: ``"a"`` is channel 1, ``"b"`` channel 2.

    Pulses use the instrument's pulse mode (width >= 50 us, base 0 V).
    """

    channels = ("a", "b")
    driver: KeysightB2902A

    def _smu(self, ch: str) -> KeysightB2902AChannel:
        return self.driver.channel(ch)

    def _check_pulse_supported(self, width_s: float) -> None:
        if width_s < 50e-6:
            raise SafetyLimitError(
                f"pulse width {width_s:g} s is below the B2902A's 50 us minimum; nothing was sent"
            )

    def _pulse(self, ch: str, volts: float, width_s: float, *, was_on: bool) -> None:
        smu = self._smu(ch)
        if not was_on:
            smu.source_voltage = 0.0
            smu.output_enabled = True
        try:
            smu.pulse(volts, width_s, base_v=0.0)
        finally:
            if not was_on:
                smu.output_enabled = False


#: SMU model -> (driver class, role class); tests/test_models.py checks it against the
#: instrument registry (nvmlab.models), which names the same classes.
SOURCE_METERS: dict[str, tuple[type, type[_SourceMeterBase]]] = {
    "keithley2400": (Keithley2400, Keithley2400SourceMeter),
    "keithley2636b": (Keithley2636B, Keithley2636BSourceMeter),
    "keysight_b2902a": (KeysightB2902A, KeysightB2902ASourceMeter),
}


def make_source_meter(driver_name: str, driver: Any, limits: SafetyLimits) -> SourceMeter:
    """The SourceMeter role for ``driver`` (a driver of model ``driver_name``) under ``limits``.

    ``driver_name`` is one of ``"keithley2400"``, ``"keithley2636b"``, ``"keysight_b2902a"``.
    """
    try:
        driver_cls, role_cls = SOURCE_METERS[spelled(driver_name)]
    except KeyError:
        raise ConfigError(
            f"unknown SMU driver {driver_name!r}; allowed {sorted(SOURCE_METERS)}", field="driver"
        ) from None
    if not isinstance(driver, driver_cls):
        raise ConfigError(
            f"driver {driver_name!r} needs a {driver_cls.__name__}, got {type(driver).__name__}",
            field="driver",
        )
    return role_cls(driver, limits)  # type: ignore[return-value]
