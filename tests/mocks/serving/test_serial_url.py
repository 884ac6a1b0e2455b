"""The ``nvmlab://<bench>/<role>`` pyserial URL: a serial port on the emulated bench that
behaves like a real one (short reads after the timeout), on the bench's virtual clock, also
reachable through the real pyvisa-py backend as ``ASRLnvmlab://...::INSTR``."""

from __future__ import annotations

import pytest
import serial
from pyvisa import ResourceManager
from pyvisa.constants import StatusCode
from pyvisa.errors import VisaIOError

import nvmlab.mocks.serving.serial_url  # noqa: F401  (registers the scheme)
from nvmlab.mocks.serving.faults import FaultInjector, FaultSpec
from nvmlab.mocks.serving.registry import ServedBench


def test_a_query_over_the_emulated_port_is_byte_exact(served: ServedBench) -> None:
    port = serial.serial_for_url(f"nvmlab://{served.bench_id}/chamber", timeout=1.0, baudrate=9600)
    port.write(b"ECHO 25.0,25.0\r\n")
    assert port.in_waiting == len(b"25.0,25.0\r\n")
    assert port.readline() == b"25.0,25.0\r\n"
    port.close()


# A timeout far longer than the 120 s pytest timeout: it can only pass on the virtual
# clock; a port that really waited would fail the test (no wall-clock threshold to flake).
HOUR_S = 3600.0


def test_a_short_read_returns_what_is_there_after_the_timeout(served: ServedBench) -> None:
    port = serial.serial_for_url(f"nvmlab://{served.bench_id}/chamber", timeout=HOUR_S)
    port.write(b"ECHO abc\r\n")
    t0 = served.clock.now()
    assert port.read(100) == b"abc\r\n"
    assert served.clock.now() - t0 == pytest.approx(HOUR_S)
    # Nothing more to read: an empty read after another timeout.
    assert port.read(1) == b""
    assert served.clock.now() - t0 == pytest.approx(2 * HOUR_S)
    port.close()


def test_a_non_blocking_read_costs_no_time(served: ServedBench) -> None:
    port = serial.serial_for_url(f"nvmlab://{served.bench_id}/chamber", timeout=0)
    t0 = served.clock.now()
    assert port.read(10) == b""
    assert served.clock.now() == t0
    port.close()


def test_closed_connection_raises_until_reopened(served: ServedBench) -> None:
    served.instruments["chamber"] = FaultInjector(  # type: ignore[index]
        served.instruments["chamber"], [FaultSpec("close", messages=(1,))]
    )
    port = serial.serial_for_url(f"nvmlab://{served.bench_id}/chamber", timeout=1.0)
    port.write(b"ECHO x\r\n")
    with pytest.raises(serial.SerialException, match="closed by the instrument"):
        port.read(10)
    port.close()
    port = serial.serial_for_url(f"nvmlab://{served.bench_id}/chamber", timeout=1.0)
    port.write(b"ECHO y\r\n")
    assert port.readline() == b"y\r\n"
    port.close()


def test_bad_urls_name_the_expected_form(served: ServedBench) -> None:
    with pytest.raises(serial.SerialException, match="nvmlab://<bench_id>/<role>"):
        serial.serial_for_url(f"nvmlab://{served.bench_id}")
    with pytest.raises(serial.SerialException, match="no emulated bench 'nosuch'"):
        serial.serial_for_url("nvmlab://nosuch/chamber")
    with pytest.raises(serial.SerialException, match="roles: chamber, smu"):
        serial.serial_for_url(f"nvmlab://{served.bench_id}/oven")


def test_the_real_pyvisa_py_backend_reaches_the_port_and_times_out_promptly(
    served: ServedBench,
) -> None:
    rm = ResourceManager("@py")
    chamber = rm.open_resource(
        f"ASRLnvmlab://{served.bench_id}/chamber::INSTR",
        read_termination="\r\n",
        write_termination="\r\n",
        timeout=round(HOUR_S * 1000),
    )
    assert chamber.query("ECHO 42.0") == "42.0"
    chamber.write("SET 1")
    t0 = served.clock.now()
    with pytest.raises(VisaIOError) as err:
        chamber.read()
    assert err.value.error_code == StatusCode.error_timeout
    assert served.clock.now() - t0 == pytest.approx(HOUR_S)
    chamber.close()
    rm.close()
