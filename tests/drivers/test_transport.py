"""Transports over real pyserial and pyvisa-py links: replies, timeouts, retries, reconnect.

Every silent or half-answering instrument must end in InstrumentTimeout within the
timeout (never a hang); the error names the instrument and the resource.
"""

# ruff: noqa: SIM117  (the server outlives the transport: assertions follow the inner block)
from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from nvmlab.drivers.transport import SerialTransport, VisaTransport, open_transport
from nvmlab.errors import ConfigError, InstrumentIOError, InstrumentTimeout

Handler = Callable[[str, int], "bytes | None"]


class LineServer:
    """A loopback TCP instrument: each LF-terminated line goes to ``handler(line, count)``.

    ``handler`` returns the reply bytes or ``None`` (no reply); ``count`` numbers the lines
    received on this server. ``close_after`` lines closes the connection (a pulled cable).
    """

    def __init__(self, handler: Handler, *, close_after: int | None = None) -> None:
        self.handler = handler
        self.close_after = close_after
        self.received: list[str] = []
        self.connections = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(4)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(0.05)
        buffer = b""
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while b"\n" in buffer:
                    raw, buffer = buffer.split(b"\n", 1)
                    line = raw.decode().rstrip("\r")
                    self.received.append(line)
                    if self.close_after is not None and len(self.received) >= self.close_after:
                        conn.shutdown(socket.SHUT_RDWR)
                        return
                    reply = self.handler(line, len(self.received))
                    if reply:
                        conn.sendall(reply)

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=1)


@contextmanager
def line_server(handler: Handler, **kwargs: object) -> Iterator[LineServer]:
    server = LineServer(handler, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.close()


def echo_idn(line: str, count: int) -> bytes | None:
    return b"NVMLAB,ECHO,0,1.0\n" if line == "*IDN?" else None


def silent(line: str, count: int) -> bytes | None:
    return None


# -- pyserial ------------------------------------------------------------------------------
def test_serial_loop_round_trip_and_raw_bytes() -> None:
    with open_transport("loop://", name="loopback", timeout_s=0.5) as t:
        assert isinstance(t, SerialTransport)
        assert t.query("HELLO 1") == "HELLO 1"
        t.write_raw(b"#0\x00\x0a\x01\xff\n")
        assert t.read_raw(2) == b"#0"
        assert t.read_raw(4) == b"\x00\x0a\x01\xff"
        assert t.read() == ""


def test_serial_silence_becomes_a_timeout_naming_instrument_and_resource() -> None:
    with open_transport("loop://", name="chamber", timeout_s=0.2) as t:
        start = time.monotonic()
        with pytest.raises(InstrumentTimeout) as info:
            t.read()
        elapsed = time.monotonic() - start
    # It waited its whole timeout (a lower bound only: no wall-clock ceiling to flake on a
    # loaded machine; a hang is caught by the pytest timeout).
    assert elapsed >= 0.2
    assert "chamber" in str(info.value) and "loop://" in str(info.value)


def test_serial_reply_without_termination_is_a_timeout_showing_what_arrived() -> None:
    with open_transport("loop://", name="board", timeout_s=0.2) as t:
        t.write_raw(b"PARTIAL REPLY")
        with pytest.raises(InstrumentTimeout, match="PARTIAL REPLY"):
            t.read()


def test_serial_socket_with_no_reply_times_out() -> None:
    with line_server(silent) as server:
        with open_transport(f"socket://127.0.0.1:{server.port}", name="espec", timeout_s=0.2) as t:
            with pytest.raises(InstrumentTimeout, match="espec"):
                t.query("TEMP?")
        assert server.received == ["TEMP?"]


def test_serial_socket_query_and_dropped_connection_then_reconnect() -> None:
    with line_server(echo_idn, close_after=2) as server:
        t = open_transport(f"socket://127.0.0.1:{server.port}", name="smu", timeout_s=0.5)
        assert t.query("*IDN?") == "NVMLAB,ECHO,0,1.0"
        with pytest.raises((InstrumentIOError, InstrumentTimeout)):
            t.query("*IDN?")  # the server closes the link on this line
        server.close_after = None
        t.reconnect()
        assert t.query("*IDN?") == "NVMLAB,ECHO,0,1.0"
        assert server.connections == 2
        t.close()
        with pytest.raises(InstrumentIOError, match="closed"):
            t.write("*IDN?")


def test_serial_connection_refused_is_an_io_error() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(InstrumentIOError, match=f"127.0.0.1:{port}"):
        open_transport(f"socket://127.0.0.1:{port}", name="chamber", timeout_s=0.2)


# -- pyvisa-py -----------------------------------------------------------------------------
def test_visa_socket_query_sets_tcp_nodelay() -> None:
    with line_server(echo_idn) as server:
        resource = f"TCPIP::127.0.0.1::{server.port}::SOCKET"
        with open_transport(resource, name="smu", timeout_s=1.0) as t:
            assert isinstance(t, VisaTransport)
            assert t.tcp_nodelay
            # the option is really set on pyvisa-py's socket, not only reported as set
            sock = t._inst.visalib.sessions[t._inst.session].interface
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert t.query("*IDN?") == "NVMLAB,ECHO,0,1.0"


def test_visa_silent_resource_times_out_quickly() -> None:
    with line_server(silent) as server:
        resource = f"TCPIP::127.0.0.1::{server.port}::SOCKET"
        with open_transport(resource, name="smu", timeout_s=0.2) as t:
            assert t._inst.timeout == 200  # the station's timeout reached the VISA session (ms)
            start = time.monotonic()
            with pytest.raises(InstrumentTimeout) as info:
                t.query(":READ?")
            assert time.monotonic() - start >= 0.9 * 0.2  # pyvisa-py waited the timeout
    assert "smu" in str(info.value) and resource in str(info.value)
    assert ":READ?" in str(info.value)


def test_visa_read_raw_reads_exact_byte_counts_across_a_lf() -> None:
    def binary(line: str, count: int) -> bytes | None:
        return b"#0\x0a\x0a\x0a\x3f\n" if line == "DATA?" else None

    with line_server(binary) as server:
        with open_transport(f"TCPIP::127.0.0.1::{server.port}::SOCKET", timeout_s=1.0) as t:
            t.write("DATA?")
            assert t.read_raw(2) == b"#0"
            assert t.read_raw(4) == b"\x0a\x0a\x0a\x3f"
            assert t.read_raw(1) == b"\n"


def test_visa_timeout_can_be_raised_for_a_long_operation() -> None:
    def slow(line: str, count: int) -> bytes | None:
        time.sleep(0.3)
        return b"DONE\n"

    with line_server(slow) as server:
        with open_transport(f"TCPIP::127.0.0.1::{server.port}::SOCKET", timeout_s=0.1) as t:
            with t.timeout_at_least(2.0):
                assert t.query("SWEEP?") == "DONE"
            assert t.timeout_s == 0.1


def test_visa_unopenable_resource_is_an_io_error_naming_the_backend() -> None:
    with pytest.raises(InstrumentIOError, match="@py"):
        open_transport("GPIB0::24::INSTR", name="smu", timeout_s=0.2)


# -- retries ------------------------------------------------------------------------------
def answers_the_second_time(line: str, count: int) -> bytes | None:
    return None if count == 1 else b"+1.000000E-02\n"


@pytest.mark.parametrize("kind", ["serial", "visa"])
def test_idempotent_query_is_retried_once_after_a_timeout(kind: str) -> None:
    with line_server(answers_the_second_time) as server:
        resource = (
            f"socket://127.0.0.1:{server.port}"
            if kind == "serial"
            else f"TCPIP::127.0.0.1::{server.port}::SOCKET"
        )
        with open_transport(resource, timeout_s=0.2, query_retries=1) as t:
            assert t.query(":SENS:CURR:NPLC?", idempotent=True) == "+1.000000E-02"
        assert server.received == [":SENS:CURR:NPLC?", ":SENS:CURR:NPLC?"]


def test_a_state_changing_query_is_never_repeated() -> None:
    with line_server(answers_the_second_time) as server:
        with open_transport(f"socket://127.0.0.1:{server.port}", timeout_s=0.2) as t:
            with pytest.raises(InstrumentTimeout):
                t.query(":READ?")
        assert server.received == [":READ?"]


def test_retries_are_bounded() -> None:
    with line_server(silent) as server:
        with open_transport(
            f"socket://127.0.0.1:{server.port}", timeout_s=0.1, query_retries=2
        ) as t:
            with pytest.raises(InstrumentTimeout):
                t.query("*IDN?", idempotent=True)
        assert server.received == ["*IDN?"] * 3
    with pytest.raises(ConfigError, match="0..5"):
        open_transport("loop://", query_retries=9)


# -- resource strings ----------------------------------------------------------------------
@pytest.mark.parametrize("resource", ["bogus", "http//x", "12345"])
def test_a_resource_that_is_neither_visa_nor_serial_is_a_config_error(resource: str) -> None:
    with pytest.raises(ConfigError, match="neither a VISA resource"):
        open_transport(resource)


# -- every link type: silence is a timeout within the timeout, a closed link reconnects ------
def _resource(kind: str, port: int) -> str:
    return {
        "visa-socket": f"TCPIP::127.0.0.1::{port}::SOCKET",
        "visa-asrlsocket": f"ASRLsocket://127.0.0.1:{port}::INSTR",
        "serial-socket": f"socket://127.0.0.1:{port}",
    }[kind]


LINKS = ["visa-socket", "visa-asrlsocket", "serial-socket"]


@pytest.mark.parametrize("kind", LINKS)
def test_a_silent_instrument_times_out_within_the_timeout_on_every_link(kind: str) -> None:
    with line_server(silent) as server:
        resource = _resource(kind, server.port)
        with open_transport(resource, name="chamber", timeout_s=0.3) as t:
            assert isinstance(t, VisaTransport if kind.startswith("visa") else SerialTransport)
            if isinstance(t, VisaTransport):
                assert t._inst.timeout == 300  # the configured timeout reached pyvisa (ms)
            start = time.monotonic()
            with pytest.raises(
                InstrumentTimeout, match=r"chamber.*no (complete )?reply within 0.3 s"
            ):
                t.query("TEMP?")
            elapsed = time.monotonic() - start
    # It waited the timeout, asked once and gave up (no wall-clock ceiling that a loaded
    # machine could break; a hang is caught by the pytest timeout).
    assert elapsed >= 0.9 * 0.3, elapsed
    assert server.received == ["TEMP?"]


@pytest.mark.parametrize("kind", LINKS)
def test_after_the_instrument_closed_the_link_reconnect_brings_it_back(kind: str) -> None:
    with line_server(echo_idn, close_after=2) as server:
        t = open_transport(_resource(kind, server.port), name="smu", timeout_s=0.3)
        assert t.query("*IDN?") == "NVMLAB,ECHO,0,1.0"
        with pytest.raises((InstrumentIOError, InstrumentTimeout)):
            t.query("*IDN?")  # the instrument closes the link instead of answering
        server.close_after = None
        t.reconnect()
        assert t.query("*IDN?") == "NVMLAB,ECHO,0,1.0"
        assert server.connections == 2
        t.close()


@pytest.mark.parametrize(
    "resource",
    ["ASRL/dev/ttyUSB0::INSTR", "ASRL3::INSTR", "ASRLsocket://127.0.0.1:7000::INSTR"],
)
def test_asrl_resource_strings_are_visa_even_with_a_url_inside(resource: str) -> None:
    from nvmlab.drivers.transport import is_serial_url, is_visa_resource

    assert is_visa_resource(resource) and not is_serial_url(resource)


def test_an_asrl_url_resource_is_opened_by_pyvisa_not_pyserial() -> None:
    # Nothing listens: the error comes from pyvisa-py and names the VISA backend.
    resource = f"ASRLsocket://127.0.0.1:{_closed_port()}::INSTR"
    with pytest.raises(InstrumentIOError, match="cannot open VISA resource with backend @py"):
        open_transport(resource, name="chamber", timeout_s=0.2)
    with line_server(echo_idn) as server:
        with open_transport(f"ASRLsocket://127.0.0.1:{server.port}::INSTR", timeout_s=0.5) as t:
            assert isinstance(t, VisaTransport)
            assert t.query("*IDN?") == "NVMLAB,ECHO,0,1.0"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_closing_one_visa_session_leaves_the_others_on_the_same_library_open() -> None:
    with line_server(echo_idn) as first, line_server(echo_idn) as second:
        a = open_transport(f"TCPIP::127.0.0.1::{first.port}::SOCKET", name="smu", timeout_s=0.5)
        b = open_transport(f"TCPIP::127.0.0.1::{second.port}::SOCKET", name="smu2", timeout_s=0.5)
        a.close()
        assert b.query("*IDN?") == "NVMLAB,ECHO,0,1.0"
        a.reconnect()
        assert a.query("*IDN?") == "NVMLAB,ECHO,0,1.0"
        b.close()
        assert a.query("*IDN?") == "NVMLAB,ECHO,0,1.0"
        a.close()


@pytest.mark.parametrize("role", ["smu", "chamber"])
@pytest.mark.parametrize("stack", ["visa", "serial"])
def test_a_silent_in_process_instrument_times_out_too(role: str, stack: str) -> None:
    """The in-process bench (pyvisa library, nvmlab:// URLs) never hangs a caller either."""
    from nvmlab.mocks.benchfile import BenchConfig
    from nvmlab.mocks.emulated import build_emulated_bench
    from nvmlab.mocks.serving.faults import FaultSpec

    config = BenchConfig(rows=8, cols=8, faults={role: [FaultSpec("drop", every=1)]})
    bench = build_emulated_bench(config)
    try:
        if stack == "visa":
            resource = bench.resources()[role]
            t = open_transport(
                resource, name=role, timeout_s=0.3, visa_library=bench.visa_library()
            )
        else:
            resource = bench.serial_urls()[role]
            t = open_transport(resource, name=role, timeout_s=0.3)
        with t:
            start = bench.clock.now()
            with pytest.raises(InstrumentTimeout, match=rf"{role} \({re.escape(resource)}\)"):
                t.query("*IDN?" if role == "smu" else "TEMP?")
            if stack == "visa":  # the in-process VISA library waits on the virtual clock
                assert bench.clock.now() - start == pytest.approx(0.3)
    finally:
        bench.close()


class _FakeAsrlSession:
    """Records the VISA serial attributes a transport sets."""

    baud_rate = 9600
    data_bits = 8
    parity = None
    stop_bits = None


@pytest.mark.parametrize(
    ("resource", "applied"),
    [("ASRL/dev/ttyUSB0::INSTR", True), ("ASRL3::INSTR", True), ("ASRLsocket://h:1::INSTR", False)],
)
def test_serial_options_reach_a_local_visa_serial_port(resource: str, applied: bool) -> None:
    from pyvisa import constants

    options = {"baudrate": 115200, "bytesize": 7, "parity": "E", "stopbits": 2}
    t = VisaTransport(resource, serial_options=options, open_now=False)
    session = _FakeAsrlSession()
    t._apply_serial_options(session)
    got = (session.baud_rate, session.data_bits, session.parity, session.stop_bits)
    if applied:
        assert got == (115200, 7, constants.Parity.even, constants.StopBits.two)
    else:
        assert got == (9600, 8, None, None)
