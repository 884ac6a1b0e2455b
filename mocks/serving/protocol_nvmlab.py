"""pyserial URL handler ``nvmlab://<bench_id>/<role>``: an emulated serial port, in-process.

pyserial finds this module through ``serial.protocol_handler_packages`` once
:mod:`nvmlab.mocks.serving.serial_url` is imported (building an emulated bench imports it)::

    import serial
    import nvmlab.mocks.serving.serial_url  # registers the scheme
    port = serial.serial_for_url("nvmlab://bench-1/chamber", timeout=1.0)
    port.write(b"TEMP?\\r\\n")
    port.readline()

The port behaves like a real one: ``read(n)`` returns up to ``n`` bytes, fewer when the
timeout (s) elapses first (a short read); ``timeout=0`` never waits. Waiting is done on the
bench's clock: with a virtual clock a read that finds no reply due before the timeout
returns at once and advances the clock by the timeout. A reply made late by a fault
injector is delivered when the clock reaches it, possibly on a later read. A connection
closed by the instrument (fault) raises :class:`serial.SerialException` until the port is
reopened. Line settings (baud rate, parity ...) are accepted and ignored, as on a
serial-to-Ethernet bridge.

pyvisa-py (``ASRLnvmlab://<bench_id>/<role>::INSTR``) reads one byte at a time and stops
on an empty read only when *its wall clock* passes the timeout; against a virtual clock
that would spin. For that caller only, a read that times out with nothing read raises
:class:`serial.SerialTimeoutException`, which pyvisa-py turns into ``VI_ERROR_TMO`` at once.
"""

from __future__ import annotations

import re
import sys
import urllib.parse
from typing import Any

from serial.serialutil import (
    PortNotOpenError,
    SerialBase,
    SerialException,
    SerialTimeoutException,
)

from nvmlab.mocks.serving.registry import ConnectionLost, Endpoint, get_bench

_URL = re.compile(r"^nvmlab://(?P<bench>[a-z0-9][a-z0-9-]*)/(?P<role>[a-z]+)/?$", re.I)


def _called_from_pyvisa_py() -> bool:
    frame = sys._getframe(2)
    return str(frame.f_globals.get("__name__", "")).startswith("pyvisa_py")


class Serial(SerialBase):
    """A pyserial port connected to one instrument of an in-process emulated bench."""

    is_open: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._endpoint: Endpoint | None = None
        super().__init__(*args, **kwargs)

    # -- opening -------------------------------------------------------------------------
    def open(self) -> None:
        if self.is_open:
            raise SerialException("Port is already open.")
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        bench_id, role = self.from_url(str(self.portstr))
        try:
            served = get_bench(bench_id)
            self._endpoint = Endpoint(served, role)
        except (LookupError, KeyError) as exc:
            raise SerialException(f"could not open port {self.portstr!r}: {exc}") from None
        self.is_open = True

    def from_url(self, url: str) -> tuple[str, str]:
        """``(bench_id, role)`` from ``nvmlab://<bench_id>/<role>``."""
        parts = urllib.parse.urlsplit(url)
        match = _URL.match(f"{parts.scheme}://{parts.netloc}{parts.path}")
        if parts.scheme.lower() != "nvmlab" or match is None or parts.query:
            raise SerialException(
                f"expected a URL of the form 'nvmlab://<bench_id>/<role>' "
                f"(role smu, chamber or board), got {url!r}"
            )
        return match["bench"].lower(), match["role"].lower()

    def close(self) -> None:
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None
        self.is_open = False

    def _reconfigure_port(self) -> None:
        """Line settings have no effect on an emulated port."""

    def _update_dtr_state(self) -> None:
        pass

    def _update_rts_state(self) -> None:
        pass

    def _update_break_state(self) -> None:
        pass

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True

    # -- I/O -------------------------------------------------------------------------------
    def _ep(self) -> Endpoint:
        if not self.is_open or self._endpoint is None:
            raise PortNotOpenError()
        return self._endpoint

    @property
    def in_waiting(self) -> int:
        try:
            return self._ep().in_waiting()
        except ConnectionLost as exc:
            raise SerialException(str(exc)) from None

    def read(self, size: int = 1) -> bytes:
        endpoint = self._ep()
        if size <= 0:
            return b""
        try:
            data, reason = endpoint.read_until(size, None, self._timeout)
        except ConnectionLost as exc:
            raise SerialException(str(exc)) from None
        if reason == "timeout" and not data and self._timeout and _called_from_pyvisa_py():
            raise SerialTimeoutException(f"read timeout ({self._timeout} s) on {self.portstr}")
        return data

    def write(self, data: Any) -> int:
        endpoint = self._ep()
        try:
            return endpoint.write(bytes(data))
        except ConnectionLost as exc:
            raise SerialException(str(exc)) from None

    def flush(self) -> None:
        self._ep()

    def reset_input_buffer(self) -> None:
        self._ep().discard_input()

    def reset_output_buffer(self) -> None:
        self._ep()

    @property
    def out_waiting(self) -> int:
        self._ep()
        return 0
