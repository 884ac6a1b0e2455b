"""Instrument drivers written by others, used unchanged against the served emulators:
PyMeasure's and QCoDeS's Keithley 2400, QCoDeS's Keithley 2636B, and Modbus RTU clients
(pymodbus, minimalmodbus) against the Watlow F4 behind a serial-to-Ethernet bridge.

The bench is served in this process over loopback TCP (the same servers `nvmlab emulate`
uses); the drivers see only sockets. The selected device's true conductance comes from
the bench's ground truth.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import pytest
import serial

from nvmlab.clock import ScaledClock
from nvmlab.mocks.emulated import EmulatedBench, build_emulated_bench
from nvmlab.mocks.serving.tcp import TcpBench

pytestmark = pytest.mark.tcp

ROW, COL = 2, 5
READ_V = 0.2
_names = itertools.count(1)


@pytest.fixture
def served_bench(request: pytest.FixtureRequest) -> Iterator[tuple[EmulatedBench, TcpBench]]:
    smu, chamber = request.param
    emulated = build_emulated_bench(
        rows=8, cols=8, seed=11, smu_model=smu, chamber_model=chamber, clock=ScaledClock(1.0)
    )
    emulated.preselect(ROW, COL)
    with emulated.serve_tcp() as tcp:
        yield emulated, tcp
    emulated.close()


def selected_current_a(emulated: EmulatedBench) -> float:
    return READ_V * float(emulated.ground_truth()["conductance_s"][ROW, COL])


def socket_adapter(tcp: TcpBench) -> str:
    return tcp.resources["smu"]


@pytest.mark.parametrize("served_bench", [("keithley2400", "espec")], indirect=True)
def test_pymeasure_keithley2400(served_bench: tuple[EmulatedBench, TcpBench]) -> None:
    from pymeasure.instruments.keithley import Keithley2400

    emulated, tcp = served_bench
    smu = Keithley2400(
        tcp.resources["smu"], read_termination="\n", write_termination="\n", timeout=5000
    )
    try:
        assert "MODEL 2400" in smu.id
        smu.reset()
        smu.source_mode = "voltage"
        smu.compliance_current = 1e-3
        smu.source_voltage = READ_V
        smu.enable_source()
        amps = smu.current
        assert smu.source_voltage == pytest.approx(READ_V)
        smu.disable_source()
    finally:
        smu.adapter.close()
    assert amps == pytest.approx(selected_current_a(emulated), rel=0.05)


@pytest.mark.parametrize("served_bench", [("keithley2400", "espec")], indirect=True)
def test_qcodes_keithley2400(served_bench: tuple[EmulatedBench, TcpBench]) -> None:
    from qcodes.instrument_drivers.Keithley import Keithley2400

    emulated, tcp = served_bench
    smu = Keithley2400(
        f"k2400_{next(_names)}", tcp.resources["smu"], terminator="\n", visalib="@py"
    )
    try:
        assert smu.IDN()["model"] == "2400"  # QCoDeS strips "MODEL "
        smu.mode("VOLT")
        smu.compliancei(1e-3)
        smu.volt(READ_V)
        smu.output(1)
        amps = smu.curr()
        smu.output(0)
    finally:
        smu.close()
    assert amps == pytest.approx(selected_current_a(emulated), rel=0.05)


@pytest.mark.parametrize("served_bench", [("keithley2636b", "espec")], indirect=True)
def test_qcodes_keithley2636b(served_bench: tuple[EmulatedBench, TcpBench]) -> None:
    from qcodes.instrument_drivers.Keithley import Keithley2636B

    emulated, tcp = served_bench
    smu = Keithley2636B(f"k2636_{next(_names)}", tcp.resources["smu"], visalib="@py")
    try:
        assert smu.model == "2636B"
        smua = smu.smua
        smua.mode("voltage")
        smua.limiti(1e-3)
        smua.volt(READ_V)
        smua.output("on")
        amps = smua.curr()
        smua.output("off")
    finally:
        smu.close()
    assert amps == pytest.approx(selected_current_a(emulated), rel=0.05)


@pytest.mark.parametrize("served_bench", [("keithley2400", "watlow_f4")], indirect=True)
@pytest.mark.parametrize("client_kind", ["serial socket:// URL", "TCP with RTU framing"])
def test_pymodbus_rtu_client_on_the_watlow_f4(
    served_bench: tuple[EmulatedBench, TcpBench], client_kind: str
) -> None:
    from pymodbus import FramerType
    from pymodbus.client import ModbusSerialClient, ModbusTcpClient
    from pymodbus.pdu import ExceptionResponse

    _emulated, tcp = served_bench
    url = tcp.serial_urls["chamber"]
    client: ModbusSerialClient | ModbusTcpClient
    if client_kind == "serial socket:// URL":  # the F4 behind a serial-to-Ethernet bridge
        client = ModbusSerialClient(port=url, baudrate=9600, timeout=3, retries=1)
    else:
        port = int(url.rsplit(":", 1)[1])
        client = ModbusTcpClient(
            "127.0.0.1", port=port, framer=FramerType.RTU, timeout=3, retries=1
        )
    assert client.connect()
    try:
        pv = client.read_holding_registers(100, count=1, device_id=1)
        assert not pv.isError()
        assert pv.registers[0] == pytest.approx(250, abs=3)  # 25.0 C, one decimal place
        assert not client.write_register(300, 400, device_id=1).isError()  # setpoint 40.0 C
        sp = client.read_holding_registers(300, count=1, device_id=1)
        assert sp.registers == [400]
        bad = client.read_holding_registers(9999, count=1, device_id=1)
        # A Modbus exception reply (illegal data address), not a timeout.
        assert isinstance(bad, ExceptionResponse) and bad.exception_code == 2
    finally:
        client.close()


@pytest.mark.parametrize("served_bench", [("keithley2400", "watlow_f4")], indirect=True)
def test_minimalmodbus_over_a_socket_url(served_bench: tuple[EmulatedBench, TcpBench]) -> None:
    import minimalmodbus

    _emulated, tcp = served_bench
    # minimalmodbus accepts an open pyserial port: here a socket:// URL (a serial bridge).
    port = serial.serial_for_url(tcp.serial_urls["chamber"], timeout=2.0)
    instrument = minimalmodbus.Instrument(port, 1)
    try:
        assert instrument.read_register(100, 1, signed=True) == pytest.approx(25.0, abs=0.3)
        instrument.write_register(300, -12.5, 1, signed=True)
        assert instrument.read_register(300, 1, signed=True) == -12.5
        assert not math.isnan(instrument.read_register(101, 0))
    finally:
        instrument.serial.close()
