"""Byte-level instrument emulators.

Every emulated instrument is an :class:`EmulatedInstrument`: bytes from the host go in
through :meth:`~EmulatedInstrument.write`, reply bytes come out of
:meth:`~EmulatedInstrument.read`. The servers (in-process pyvisa library, pyserial URL
handler, loopback TCP) and the fault injector only move bytes, so a driver sees exactly
what it would see from the real instrument.

Line-based instruments (SCPI, TSP, the Espec chamber, the probe board) derive from
:class:`LineInstrument` and implement :meth:`~LineInstrument.handle_line`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from nvmlab.clock import Clock

if TYPE_CHECKING:
    from nvmlab.mocks.thermal import ThermalModel

#: Mains frequencies (Hz) an SMU's integration time (NPLC) can refer to.
LINE_FREQUENCIES_HZ = (50.0, 60.0)


def line_frequency(hz: float) -> float:
    """Check an SMU's mains frequency (Hz): ValueError unless 50 or 60."""
    if float(hz) not in LINE_FREQUENCIES_HZ:
        raise ValueError(f"line_frequency_hz must be 50 or 60 Hz, got {hz!r}")
    return float(hz)


class EmulatedInstrument(ABC):
    """An instrument seen as a byte stream.

    ``query_latency_s`` (s) is the time the instrument takes to turn around one message
    (bus and firmware overhead); it advances the shared clock for every message handled,
    so a design that needs one round trip per pulse pays for it in instrument time.
    """

    #: Short model name used in logs and the ``nvmlab emulate`` listing.
    model: str = "instrument"

    def __init__(self, clock: Clock, *, query_latency_s: float = 0.0) -> None:
        self.clock = clock
        self.query_latency_s = float(query_latency_s)
        self._out = bytearray()
        self._lock = threading.RLock()

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Accept bytes sent by the host (any chunking)."""

    def read(self) -> bytes:
        """Return (and consume) every reply byte available now; ``b""`` if none."""
        with self._lock:
            data = bytes(self._out)
            self._out.clear()
            return data

    def pending(self) -> int:
        """Number of reply bytes waiting to be read."""
        with self._lock:
            return len(self._out)

    def _emit(self, data: bytes) -> None:
        with self._lock:
            self._out += data

    def reset_io(self) -> None:
        """Forget partial input and unread output (a new connection, a device clear)."""
        with self._lock:
            self._out.clear()


class LineInstrument(EmulatedInstrument):
    """An instrument that reads text lines and may answer each with one text line.

    Input lines end in LF (a preceding CR is stripped); replies are terminated with
    ``reply_termination``. Subclasses implement :meth:`handle_line`, which returns the reply
    text (without termination) or ``None`` when the line produces no reply. It must never
    raise for bad input: report it the instrument's own way (error queue, ``NA:`` reply ...).
    """

    reply_termination: bytes = b"\n"
    encoding: str = "ascii"

    def __init__(self, clock: Clock, *, query_latency_s: float = 0.0) -> None:
        super().__init__(clock, query_latency_s=query_latency_s)
        self._in = bytearray()

    def write(self, data: bytes) -> None:
        with self._lock:
            self._in += data
            while True:
                idx = self._in.find(b"\n")
                if idx < 0:
                    break
                raw = bytes(self._in[:idx])
                del self._in[: idx + 1]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
                self._handle_raw(raw)

    def _handle_raw(self, raw: bytes) -> None:
        try:
            line = raw.decode(self.encoding)
        except UnicodeDecodeError:
            line = raw.decode(self.encoding, errors="replace")
        self.clock.sleep(self.query_latency_s)
        reply = self.handle_line(line)
        if reply is not None:
            self._emit(reply.encode(self.encoding, errors="replace") + self.reply_termination)

    def reset_io(self) -> None:
        with self._lock:
            super().reset_io()
            self._in.clear()

    @abstractmethod
    def handle_line(self, line: str) -> str | None:
        """Execute one received line; return the reply text or ``None``."""


class ChamberFaults:
    """Fault injection shared by the chamber emulators (used by the fault injector).

    An injected alarm or a broken sensor stops regulation; each controller reports it its
    own way (Espec ``ALARM?``, Watlow alarm registers). The chamber class provides
    ``thermal``, ``_lock`` and :meth:`_sync_thermal` (apply the regulation state).
    """

    injected_alarm: str | None = None
    sensor_fault: bool = False
    thermal: ThermalModel
    _lock: threading.RLock

    def inject_alarm(self, message: str) -> None:
        """Raise a chamber alarm: regulation stops until :meth:`clear_alarm`."""
        with self._lock:
            self.injected_alarm = str(message) or "alarm"
            self._sync_thermal()

    def clear_alarm(self) -> None:
        """Clear an injected alarm; regulation resumes."""
        with self._lock:
            self.injected_alarm = None
            self._sync_thermal()

    def inject_sensor_fault(self, on: bool) -> None:
        """Break (``True``) or repair (``False``) the chamber's temperature sensor."""
        with self._lock:
            self.sensor_fault = bool(on)
            self.thermal.sensor_fault = bool(on)
            self._sync_thermal()

    def _sync_thermal(self) -> None:
        raise NotImplementedError
