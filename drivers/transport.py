"""One instrument connection, over pyvisa or pyserial, with one error family.

A :class:`Transport` moves text messages and raw bytes to and from one instrument. Every
failure becomes one of :class:`~nvmlab.errors.InstrumentTimeout`,
:class:`~nvmlab.errors.InstrumentIOError` or :class:`~nvmlab.errors.InstrumentProtocolError`,
and the message names the instrument and its resource, so a technician can act on it
without a traceback. A silent instrument never hangs a caller: pyvisa's ``VI_ERROR_TMO``
and pyserial's short reads both become :class:`~nvmlab.errors.InstrumentTimeout`.

Retries are bounded and happen only where repeating is safe: :meth:`Transport.query` with
``idempotent=True`` (a reading, an identity, a setting read back) is re-sent after a
timeout, with stale input discarded first; writes that change the instrument's state are
never repeated. :meth:`Transport.reconnect` closes and reopens the same resource with the
same settings.

Use :func:`open_transport` to pick the right implementation from a resource string:

- VISA resource strings (``TCPIP::host::5025::SOCKET``, ``GPIB0::24::INSTR``, ``USB...``,
  ``ASRL...::INSTR``) go through pyvisa, backend ``"@py"`` (pyvisa-py) by default or any
  backend string (``"@ivi"``) or :class:`pyvisa.highlevel.VisaLibraryBase` instance.
- pyserial URLs (``socket://``, ``loop://``, ``rfc2217://``, ``nvmlab://``, ``/dev/tty...``,
  ``COM3``) go through :func:`serial.serial_for_url`.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nvmlab.drivers.recording import RecordingTransport
from nvmlab.drivers.resources import is_serial_url, is_visa_resource
from nvmlab.drivers.transport_base import Transport
from nvmlab.errors import (
    ConfigError,
    InstrumentConnectionClosed,
    InstrumentError,
    InstrumentIOError,
    InstrumentTimeout,
)

if TYPE_CHECKING:  # pragma: no cover
    import pyvisa.highlevel
    import serial

#: Words with which pyserial, pyvisa-py and the emulated bench say the peer closed the link.
_CLOSED_WORDS = (
    "disconnected",
    "connection closed",
    "connection lost",
    "broken pipe",
    "reset by peer",
)


def _is_closed_connection(exc: BaseException) -> bool:
    """True when ``exc`` says the other end closed the connection (not a silence)."""
    if isinstance(exc, (ConnectionError, EOFError)):
        return True
    text = f"{type(exc).__name__} {exc}".lower()
    return any(word in text for word in _CLOSED_WORDS) or "connectionlost" in text


__all__ = [
    "Transport",
    "VisaTransport",
    "SerialTransport",
    "open_transport",
    "is_serial_url",
    "is_visa_resource",
]


# --------------------------------------------------------------------------------------
# pyvisa
# --------------------------------------------------------------------------------------
class VisaTransport(Transport):
    """A pyvisa message-based session (pyvisa-py ``"@py"`` by default).

    ``visa_library`` is a backend string (``"@py"``, ``"@ivi"``, ``"@sim"``) or a
    :class:`pyvisa.highlevel.VisaLibraryBase` instance (the in-process emulated bench).
    For ``::SOCKET`` sessions ``TCP_NODELAY`` is set on the session's socket when the
    backend exposes it (pyvisa-py cannot set ``VI_ATTR_TCPIP_NODELAY``), so a write
    followed by a query does not stall on Nagle's algorithm.
    """

    def __init__(
        self,
        resource: str,
        *,
        visa_library: str | pyvisa.highlevel.VisaLibraryBase = "@py",
        serial_options: dict[str, Any] | None = None,
        open_now: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource=resource, **kwargs)
        self.visa_library = visa_library
        #: ``baudrate``, ``bytesize``, ``parity`` ("N", "E", "O"), ``stopbits``: applied to a
        #: local serial port (``ASRL3::INSTR``, ``ASRL/dev/ttyUSB0::INSTR``) as VISA
        #: attributes; a serial URL behind ``ASRL`` (``ASRLsocket://``) has no line settings.
        self.serial_options = dict(serial_options or {})
        self._rm: Any = None
        self._inst: Any = None
        self._socket_session: Any = None
        self.tcp_nodelay = False
        if open_now:
            self.open()

    def open(self) -> None:
        """Open the pyvisa session (does nothing if already open)."""
        if self._inst is not None:
            return
        import pyvisa

        try:
            self._rm = pyvisa.ResourceManager(self.visa_library)
            self._inst = self._rm.open_resource(
                self.resource,
                read_termination=self.read_termination or None,
                write_termination=self.write_termination,
                timeout=max(1, round(self.timeout_s * 1000)),
                encoding=self.encoding,
            )
        except Exception as exc:  # pyvisa raises many kinds for a bad or absent resource
            self._close_quietly()
            raise self.error(
                InstrumentIOError,
                f"cannot open VISA resource with backend {self._backend_name()}: {exc}",
            ) from exc
        self.tcp_nodelay = self._set_tcp_nodelay()
        self._socket_session = self._find_socket_session()
        try:
            self._apply_serial_options(self._inst)
        except Exception as exc:
            self._close_quietly()
            raise self.error(
                InstrumentIOError, f"cannot set serial options {self.serial_options}: {exc}"
            ) from exc

    def _apply_serial_options(self, inst: Any) -> None:
        """Set baud rate, data bits, parity and stop bits on a local ASRL port."""
        text = self.resource.strip().upper()
        if not text.startswith("ASRL") or "://" in text or not self.serial_options:
            return
        from pyvisa import constants

        parities = {"N": constants.Parity.none, "E": constants.Parity.even}
        parities["O"] = constants.Parity.odd
        stop_bits = {1: constants.StopBits.one, 2: constants.StopBits.two}
        options = self.serial_options
        if "baudrate" in options:
            inst.baud_rate = int(options["baudrate"])
        if "bytesize" in options:
            inst.data_bits = int(options["bytesize"])
        if "parity" in options:
            inst.parity = parities[str(options["parity"]).upper()]
        if "stopbits" in options:
            inst.stop_bits = stop_bits[int(options["stopbits"])]

    def _backend_name(self) -> str:
        lib = self.visa_library
        return lib if isinstance(lib, str) else type(lib).__name__

    def _find_socket_session(self) -> Any:
        """pyvisa-py's session object of a ``::SOCKET`` resource (None for any other)."""
        if "SOCKET" not in self.resource.upper():
            return None
        try:
            session = self._inst.visalib.sessions[self._inst.session]
        except Exception:
            return None
        return session if isinstance(getattr(session, "interface", None), socket.socket) else None

    def _wait_for_reply(self, doing: str) -> None:
        """On a pyvisa-py ``::SOCKET`` session, wait for reply bytes or the peer's close.

        pyvisa-py's read keeps polling a socket whose peer has closed until the whole
        timeout has passed, then reports a timeout. Waiting here first (for at most the
        timeout) lets a closed connection be reported as such, at once.
        """
        session = self._socket_session
        if session is None or getattr(session, "_pending_buffer", None):
            return
        sock = session.interface
        try:
            readable, _, _ = select.select([sock], [], [], self.timeout_s)
            if not readable:
                self._timed_out()
                raise self.error(
                    InstrumentTimeout,
                    f"no reply within {self.timeout_s:g} s while {doing}"
                    + (f" (last command {self.last_command!r})" if self.last_command else ""),
                )
            peeked = sock.recv(1, socket.MSG_PEEK)
        except InstrumentError:
            raise
        except OSError as exc:
            raise self.error(
                InstrumentConnectionClosed, f"the connection was closed while {doing}: {exc}"
            ) from exc
        if not peeked:
            raise self.error(
                InstrumentConnectionClosed,
                f"the instrument closed the connection while {doing}; reconnect first",
            )

    def _set_tcp_nodelay(self) -> bool:
        if "SOCKET" not in self.resource.upper():
            return False
        try:
            session = self._inst.visalib.sessions[self._inst.session]
        except Exception:
            return False
        sock = getattr(session, "interface", None)
        if isinstance(sock, socket.socket):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return True
            except OSError:
                return False
        return False

    def _timeout_changed(self) -> None:
        if self._inst is not None:
            self._inst.timeout = max(1, round(self.timeout_s * 1000))

    def _session(self) -> Any:
        if self._inst is None:
            raise self.error(InstrumentIOError, "connection is closed; call reconnect()")
        return self._inst

    def _translate(self, exc: Exception, doing: str) -> InstrumentError:
        import pyvisa

        if isinstance(exc, pyvisa.errors.VisaIOError):
            if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                self._timed_out()
                return self.error(
                    InstrumentTimeout,
                    f"no reply within {self.timeout_s:g} s while {doing}"
                    + (f" (last command {self.last_command!r})" if self.last_command else ""),
                )
            if exc.error_code == pyvisa.constants.StatusCode.error_connection_lost:
                return self.error(
                    InstrumentConnectionClosed,
                    f"the instrument closed the connection while {doing}; reconnect first ({exc})",
                )
            return self.error(InstrumentIOError, f"VISA error while {doing}: {exc}")
        if _is_closed_connection(exc):
            return self.error(
                InstrumentConnectionClosed,
                f"the connection was closed while {doing}; reconnect first ({exc})",
            )
        if isinstance(exc, UnicodeDecodeError):
            from nvmlab.errors import InstrumentProtocolError

            return self.error(InstrumentProtocolError, f"undecodable reply while {doing}: {exc}")
        return self.error(InstrumentIOError, f"I/O failure while {doing}: {exc!r}")

    def write(self, message: str) -> None:
        self._before_command()
        inst = self._session()
        self.last_command = message
        try:
            inst.write(message)
        except Exception as exc:
            raise self._translate(exc, f"writing {message!r}") from exc

    def read(self) -> str:
        inst = self._session()
        self._wait_for_reply("reading a reply")
        try:
            return str(inst.read()).strip()
        except Exception as exc:
            raise self._translate(exc, "reading a reply") from exc

    def write_raw(self, data: bytes) -> None:
        self._before_command()
        inst = self._session()
        try:
            inst.write_raw(data)
        except Exception as exc:
            raise self._translate(exc, f"writing {len(data)} raw bytes") from exc

    def read_raw(self, size: int) -> bytes:
        inst = self._session()
        if size <= 0:
            return b""
        self._wait_for_reply(f"reading {size} raw bytes")
        try:
            return bytes(inst.read_bytes(size, break_on_termchar=False))
        except Exception as exc:
            raise self._translate(exc, f"reading {size} raw bytes") from exc

    def clear_input(self) -> None:
        """Read and drop whatever the instrument already sent (short poll)."""
        inst = self._inst
        if inst is None:
            return
        old = inst.timeout
        try:
            inst.timeout = 10
            while True:
                inst.read_raw()
        except Exception:
            pass
        finally:
            with contextlib.suppress(Exception):
                inst.timeout = old

    def _close_quietly(self) -> None:
        # Close only this session: pyvisa shares one ResourceManager per VISA library, and
        # closing it would end every other instrument's session on the same library.
        if self._inst is not None:
            with contextlib.suppress(Exception):
                self._inst.close()
        self._inst = None
        self._rm = None
        self._socket_session = None

    def close(self) -> None:
        self._close_quietly()

    def reconnect(self) -> None:
        self._close_quietly()
        self.open()
        if self._separate_connections():
            self.out_of_step = False
            self.unanswered.clear()

    def _separate_connections(self) -> bool:
        """True when each opening is a connection of its own (raw TCP socket, serial URL)."""
        text = self.resource.strip().upper()
        return "::SOCKET" in text or (text.startswith("ASRL") and "://" in text)

    def resynchronise(self) -> None:
        """A fresh connection for a socket or serial URL (a late reply stays on the old one);
        a device clear for GPIB, USB, VXI-11 / HiSLIP, VXI and PXI (the instrument empties its
        output queue); a probe on a local serial port (see :class:`Transport`)."""
        text = self.resource.strip().upper()
        if self._separate_connections():
            self._close_quietly()
            self.open()
        elif text.startswith("ASRL"):
            super().resynchronise()
        else:
            inst = self._session()
            try:
                inst.clear()
            except Exception as exc:
                raise self._translate(exc, "clearing the device after a timeout") from exc
            self.clear_input()


# --------------------------------------------------------------------------------------
# pyserial
# --------------------------------------------------------------------------------------
@dataclass
class _ReadWait:
    """How long one read has waited: a wall-clock deadline and the port's empty slices (s)."""

    deadline: float
    waited_s: float = 0.0


class SerialTransport(Transport):
    """A pyserial port opened with :func:`serial.serial_for_url` (any URL it knows).

    ``serial_options`` go to ``serial_for_url`` (``baudrate``, ``bytesize``, ``parity``,
    ``stopbits``, ...). Reads poll in short slices until the termination arrives or
    :attr:`timeout_s` passes, then raise :class:`~nvmlab.errors.InstrumentTimeout`.
    """

    _POLL_S = 0.05

    def __init__(
        self,
        resource: str,
        *,
        serial_options: dict[str, Any] | None = None,
        open_now: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource=resource, **kwargs)
        self.serial_options = dict(serial_options or {})
        self._port: serial.SerialBase | None = None
        self._buffer = bytearray()
        if open_now:
            self.open()

    def open(self) -> None:
        """Open the port (does nothing if already open)."""
        if self._port is not None:
            return
        import serial

        options = dict(self.serial_options)
        options.setdefault("timeout", min(self.timeout_s, self._POLL_S))
        options.setdefault("write_timeout", self.timeout_s)
        try:
            self._port = serial.serial_for_url(self.resource, **options)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise self.error(
                InstrumentIOError, f"cannot open serial URL with options {options}: {exc}"
            ) from exc
        self._buffer.clear()

    def _serial(self) -> serial.SerialBase:
        if self._port is None:
            raise self.error(InstrumentIOError, "connection is closed; call reconnect()")
        return self._port

    def _io_error(self, exc: Exception, doing: str) -> InstrumentError:
        import serial

        if isinstance(exc, serial.SerialTimeoutException):
            return self.error(InstrumentTimeout, f"write timed out while {doing}")
        if _is_closed_connection(exc):
            return self.error(
                InstrumentConnectionClosed,
                f"the connection was closed while {doing}; reconnect first ({exc})",
            )
        return self.error(InstrumentIOError, f"I/O failure while {doing}: {exc}")

    def write_raw(self, data: bytes) -> None:
        self._before_command()
        port = self._serial()
        try:
            port.write(data)
            port.flush()
        except Exception as exc:
            raise self._io_error(exc, f"writing {data[:60]!r}") from exc

    def write(self, message: str) -> None:
        self.last_command = message
        self.write_raw((message + self.write_termination).encode(self.encoding))

    def _fill(self, wait: _ReadWait, doing: str) -> None:
        """Read whatever arrives next (at most one poll slice) into the buffer."""
        port = self._serial()
        try:
            waiting = port.in_waiting
            chunk = port.read(max(1, waiting))
        except Exception as exc:
            raise self._io_error(exc, doing) from exc
        if chunk:
            self._buffer += chunk
            return
        # An empty read waited one poll slice on the port's own clock (the wall clock for a
        # real port, the bench's virtual clock for an in-process nvmlab:// port), so the
        # timeout is counted in slices as well as on the wall clock: whichever ends first.
        wait.waited_s += port.timeout if port.timeout else 0.0
        if wait.waited_s >= self.timeout_s or time.monotonic() >= wait.deadline:
            self._timed_out()
            got = f"; got {bytes(self._buffer[:60])!r} so far" if self._buffer else ""
            raise self.error(
                InstrumentTimeout,
                f"no complete reply within {self.timeout_s:g} s while {doing}"
                + (f" (last command {self.last_command!r})" if self.last_command else "")
                + got,
            )

    def read(self) -> str:
        term = self.read_termination.encode(self.encoding)
        wait = _ReadWait(time.monotonic() + self.timeout_s)
        while True:
            idx = self._buffer.find(term) if term else -1
            if idx >= 0:
                raw = bytes(self._buffer[:idx])
                del self._buffer[: idx + len(term)]
                try:
                    return raw.decode(self.encoding).strip()
                except UnicodeDecodeError as exc:
                    from nvmlab.errors import InstrumentProtocolError

                    raise self.error(
                        InstrumentProtocolError, f"undecodable reply {raw[:60]!r}: {exc}"
                    ) from exc
            self._fill(wait, "reading a reply")

    def read_raw(self, size: int) -> bytes:
        wait = _ReadWait(time.monotonic() + self.timeout_s)
        while len(self._buffer) < size:
            self._fill(wait, f"reading {size} raw bytes")
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def clear_input(self) -> None:
        self._buffer.clear()
        if self._port is not None:
            try:
                time.sleep(min(0.01, self.timeout_s))
                self._port.reset_input_buffer()
            except Exception:
                pass

    def close(self) -> None:
        port, self._port = self._port, None
        self._buffer.clear()
        if port is not None:
            with contextlib.suppress(Exception):
                port.close()

    def reconnect(self) -> None:
        self.close()
        self.open()
        if self._separate_connections():
            self.out_of_step = False
            self.unanswered.clear()

    def _separate_connections(self) -> bool:
        """True for a URL (``socket://``, ``rfc2217://``, ``nvmlab://``): each opening is a
        connection of its own; False for a local port, whose line carries every reply."""
        return "://" in self.resource

    def resynchronise(self) -> None:
        """A fresh connection for a URL (a late reply stays on the old one); a probe on a
        local port (see :class:`Transport`)."""
        if self._separate_connections():
            self.close()
            self.open()
        else:
            super().resynchronise()


# --------------------------------------------------------------------------------------
def open_transport(
    resource: str,
    *,
    name: str = "",
    timeout_s: float = 5.0,
    read_termination: str = "\n",
    write_termination: str = "\n",
    visa_library: str | pyvisa.highlevel.VisaLibraryBase = "@py",
    serial_options: dict[str, Any] | None = None,
    record_to: str | Path | None = None,
    query_retries: int = 1,
    encoding: str = "ascii",
) -> Transport:
    """Open ``resource`` through pyvisa or pyserial, whichever its form calls for.

    Args:
        resource: a VISA resource string or a pyserial URL / device path.
        name: the instrument's name used in every error message (default: the resource).
        timeout_s: read timeout (s).
        read_termination / write_termination: message terminators.
        visa_library: pyvisa backend string or VisaLibraryBase instance (VISA only).
        serial_options: ``baudrate``, ``bytesize``, ``parity``, ``stopbits`` (and any other
            ``serial.serial_for_url`` keyword for pyserial); on VISA only for a local
            ``ASRL`` port, as VISA attributes.
        record_to: when given, wrap the transport in a
            :class:`~nvmlab.drivers.recording.RecordingTransport` writing this JSON-lines file.
        query_retries: extra attempts for idempotent queries after a timeout.
        encoding: text encoding of messages.

    Raises:
        ConfigError: the resource string is neither a VISA resource nor a serial URL.
        InstrumentIOError: the resource could not be opened.
    """
    resource = resource.strip()
    common: dict[str, Any] = dict(
        name=name,
        timeout_s=timeout_s,
        read_termination=read_termination,
        write_termination=write_termination,
        query_retries=query_retries,
        encoding=encoding,
    )
    transport: Transport
    if is_visa_resource(resource):
        transport = VisaTransport(
            resource, visa_library=visa_library, serial_options=serial_options, **common
        )
    elif is_serial_url(resource):
        transport = SerialTransport(resource, serial_options=serial_options, **common)
    else:
        raise ConfigError(
            f"resource {resource!r} is neither a VISA resource string (TCPIP::..., GPIB0::..., "
            "USB::..., ASRL...::INSTR) nor a pyserial URL (socket://, loop://, rfc2217://, "
            "nvmlab://, /dev/tty..., COMn)",
            field="resource",
        )
    if record_to is not None:
        transport = RecordingTransport(transport, record_to)
    return transport
