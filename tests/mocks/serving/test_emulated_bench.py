"""One emulated world reached through the real I/O stacks: every SMU and chamber model
identifies over the in-process VISA library, a selected device reads its true conductance,
instrument time is accounted, the chamber follows its setpoint on the virtual clock, the
chip is non-volatile, and TCP and in-process clients share the same world."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import serial

from nvmlab.mocks.emulated import build_emulated_bench, emulator_class
from nvmlab.mocks.physics.resistor import ResistorArray

SMU_IDN = {
    "keithley2400": "KEITHLEY INSTRUMENTS INC.,MODEL 2400",
    "keithley2636b": "Keithley Instruments Inc., Model 2636B",
    "keysight_b2902a": "Keysight Technologies,B2902A",
}
DRIVERS = {
    "keithley2400": "keithley2400",
    "keithley2636b": "keithley2636b",
    "keysight_b2902a": "keysight_b2902a",
}


@pytest.mark.parametrize("model", list(SMU_IDN))
def test_each_smu_model_identifies_in_process(model: str) -> None:
    emulated = build_emulated_bench(rows=8, cols=8, smu_model=model)
    rm = emulated.resource_manager()
    smu = rm.open_resource(
        emulated.resources()["smu"], read_termination="\n", write_termination="\n"
    )
    assert smu.query("*IDN?").startswith(SMU_IDN[model])
    station = emulated.station_dict()
    assert station["instruments"]["smu"] == {
        "driver": DRIVERS[model],
        "resource": f"TCPIP0::nvmlab-{emulated.bench_id}-smu::5025::SOCKET",
        "timeout_s": 5.0,
    }
    rm.close()
    emulated.close()


def test_the_espec_chamber_follows_its_setpoint_on_the_virtual_clock() -> None:
    emulated = build_emulated_bench(rows=4, cols=4)
    rm = emulated.resource_manager()
    chamber = rm.open_resource(
        emulated.resources()["chamber"], read_termination="\r\n", write_termination="\r\n"
    )
    assert chamber.query("TEMP, S60.0").startswith("OK")
    emulated.clock.sleep(3600.0)  # one emulated hour costs no wall time
    pv, sp = (float(x) for x in chamber.query("TEMP?").split(",")[:2])
    assert sp == 60.0 and abs(pv - 60.0) < 0.3
    assert emulated.bench.chip_temperature_c() == pytest.approx(60.0, abs=0.5)
    rm.close()
    emulated.close()


def test_the_watlow_f4_over_the_nvmlab_serial_url() -> None:
    import minimalmodbus

    emulated = build_emulated_bench(rows=4, cols=4, chamber_model="watlow_f4")
    port = serial.serial_for_url(emulated.serial_urls()["chamber"], timeout=1.0)
    f4 = minimalmodbus.Instrument(port, 1)
    f4.write_register(300, 85.0, 1, signed=True)
    emulated.clock.sleep(7200.0)
    assert f4.read_register(100, 1, signed=True) == pytest.approx(85.0, abs=0.3)
    assert emulated.station_dict()["instruments"]["chamber"]["driver"] == "watlow_f4"
    port.close()
    emulated.close()


def test_a_selected_device_reads_its_true_conductance_and_costs_its_integration_time() -> None:
    emulated = build_emulated_bench(rows=8, cols=8, seed=4)
    emulated.preselect(5, 2)
    rm = emulated.resource_manager()
    smu = rm.open_resource(
        emulated.resources()["smu"], read_termination="\n", write_termination="\n"
    )
    smu.write(
        ":SOUR:FUNC VOLT;:SOUR:VOLT 0.2;:SENS:CURR:PROT 1e-3;:SENS:CURR:NPLC 1;:FORM:ELEM CURR"
    )
    smu.write(":OUTP ON")
    t0 = emulated.instrument_time_s()
    amps = float(smu.query(":READ?"))
    assert emulated.instrument_time_s() - t0 >= 1 / 60  # 1 PLC at 60 Hz
    truth = emulated.ground_truth()["conductance_s"][5, 2]
    assert amps == pytest.approx(0.2 * truth, rel=0.05)
    rm.close()
    emulated.close()


def test_a_known_resistor_array_and_a_bench_file_fault() -> None:
    from nvmlab.mocks.benchfile import BenchConfig
    from nvmlab.mocks.serving.faults import FaultSpec

    g = np.full((4, 4), 20e-6)
    g[1, 3] = 80e-6
    config = BenchConfig(rows=4, cols=4, faults={"smu": [FaultSpec("drop", messages=(2,))]})
    emulated = build_emulated_bench(config, array=ResistorArray(g))
    emulated.preselect(1, 3)
    rm = emulated.resource_manager()
    smu = rm.open_resource(
        emulated.resources()["smu"], read_termination="\n", write_termination="\n", timeout=3000
    )
    smu.write(":SOUR:VOLT 0.5;:SENS:CURR:PROT 1e-3;:FORM:ELEM CURR;:OUTP ON")
    assert float(smu.query(":READ?")) == pytest.approx(0.5 * 80e-6, rel=1e-3)
    t0 = emulated.clock.now()
    with pytest.raises(Exception, match="VI_ERROR_TMO"):
        smu.query(":READ?")  # the second reply is dropped
    assert emulated.clock.now() - t0 >= 3.0
    assert emulated.faults["smu"].log == [(2, "drop")]
    rm.close()
    emulated.close()


def test_tcp_and_in_process_clients_share_one_world() -> None:
    emulated = build_emulated_bench(rows=8, cols=8)
    with emulated.serve_tcp() as tcp:
        with socket.create_connection(("127.0.0.1", tcp.ports["board"]), timeout=5.0) as sock:
            sock.sendall(b"SEL 6,1\n")
            assert sock.recv(100) == b"OK\n"
        port = serial.serial_for_url(emulated.serial_urls()["board"], timeout=1.0)
        port.write(b"SEL?\n")
        assert port.readline() == b"6,1\n"
        port.close()
    emulated.close()


def test_the_chip_is_non_volatile_through_its_state_file(tmp_path: Path) -> None:
    state = tmp_path / "chip.npz"
    first = build_emulated_bench(rows=4, cols=4, seed=3, state_file=state)
    port = serial.serial_for_url(first.serial_urls()["board"], timeout=1.0)
    before = first.ground_truth()["conductance_s"].copy()
    port.write(b"PULSE 1,1,2.5,0.001\n")
    assert port.readline() == b"OK\n"
    after = first.ground_truth()["conductance_s"]
    assert after[1, 1] != before[1, 1]
    port.close()
    first.close()
    again = build_emulated_bench(rows=4, cols=4, seed=3, state_file=state)
    np.testing.assert_allclose(again.ground_truth()["conductance_s"][1, 1], after[1, 1], rtol=1e-3)
    again.close()


def test_closing_saves_the_chip_as_the_reads_left_it_relaxation_included(
    tmp_path: Path,
) -> None:
    """One write pulse (which saves the state file), then reads only and a year on the
    bench clock: closing the bench saves the chip as it is now, so a bench (or a truth
    reader) opened on the state file afterwards finds the relaxed conductances, not the
    ones of the last write."""
    state = tmp_path / "chip.npz"
    emulated = build_emulated_bench(rows=4, cols=4, seed=3, state_file=state)
    port = serial.serial_for_url(emulated.serial_urls()["board"], timeout=1.0)
    port.write(b"PULSE 1,2,2.5,0.001\n")
    assert port.readline() == b"OK\n"
    port.close()
    saved_by_the_write = state.read_bytes()
    emulated.preselect(1, 2)
    smu = emulated.resource_manager().open_resource(
        emulated.resources()["smu"], read_termination="\n", write_termination="\n"
    )
    smu.write(":SOUR:VOLT 0.2;:FORM:ELEM CURR;:OUTP ON")
    float(smu.query(":READ?"))
    fresh = emulated.ground_truth()["conductance_s"].copy()
    emulated.clock.sleep(365 * 24 * 3600.0)
    float(smu.query(":READ?"))
    smu.write(":OUTP OFF")
    smu.close()
    emulated.close()
    relaxed = emulated.ground_truth()["conductance_s"]  # the same instant: the clock is still
    assert np.max(np.abs(relaxed / fresh - 1)) > 1e-4  # a year of relaxation is visible

    assert state.read_bytes() != saved_by_the_write
    again = build_emulated_bench(rows=4, cols=4, seed=3, state_file=state)
    np.testing.assert_allclose(again.ground_truth()["conductance_s"], relaxed, rtol=1e-9)
    again.close()


def test_unknown_models_are_refused_with_the_allowed_names() -> None:
    from nvmlab.errors import ConfigError

    with pytest.raises(ConfigError, match="allowed: keithley2400, keithley2636b"):
        emulator_class("keithley2401")


def test_a_bench_file_chamber_alarm_is_seen_by_a_plain_client(tmp_path: Path) -> None:
    from nvmlab.mocks.benchfile import load_bench_file

    path = tmp_path / "bench.toml"
    path.write_text(
        "[bench]\nrows = 4\ncols = 4\n"
        "[[faults.chamber]]\nkind = 'alarm'\nat_s = 600.0\nduration_s = 300.0\nmessage = 'HEATER'\n"
    )
    emulated = build_emulated_bench(load_bench_file(path))
    port = serial.serial_for_url(emulated.serial_urls()["chamber"], timeout=1.0)

    def alarms() -> bytes:
        port.write(b"ALARM?\r\n")
        return port.readline()

    assert alarms() == b"0\r\n"
    emulated.clock.sleep(700.0)
    assert alarms().startswith(b"1,")  # alarm code 1 raised at 600 s
    emulated.clock.sleep(300.0)
    assert alarms() == b"0\r\n"  # cleared after its 300 s
    port.close()
    emulated.close()


def test_a_state_file_that_cannot_be_saved_on_close_is_named(tmp_path: Path) -> None:
    from nvmlab.errors import ConfigError
    from nvmlab.mocks.serving.registry import registered_benches

    state = tmp_path / "missing" / "chip.npz"
    emulated = build_emulated_bench(rows=2, cols=2, state_file=state)
    with pytest.raises(ConfigError, match="cannot write the chip state file.*missing/chip.npz"):
        emulated.close()
    assert emulated.bench_id not in registered_benches()  # unregistered all the same
