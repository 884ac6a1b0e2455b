"""`nvmlab emulate` driven as a technician would from any software: start it, read the
resource strings it prints, then talk to the instruments with plain pyvisa-py and pyserial
only (no nvmlab code on the client side), and stop it with Ctrl-C / SIGTERM.

The expected device conductance comes from an in-process bench built with the same seed:
the same seed gives the same chip.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import pyvisa
import serial

pytestmark = pytest.mark.tcp

ROWS = COLS = 8
SEED = 5
SELECTED = (3, 6)
READ_V = 0.2


class Emulator:
    def __init__(self, proc: subprocess.Popen[str], resources: dict[str, str]) -> None:
        self.proc = proc
        self.resources = resources

    def serial_url(self, role: str) -> str:
        # ASRLsocket://127.0.0.1:PORT::INSTR -> socket://127.0.0.1:PORT (pyserial)
        return self.resources[role].removeprefix("ASRL").removesuffix("::INSTR")


@contextmanager
def nvmlab_emulate(*args: str, stop_signal: int = signal.SIGINT) -> Iterator[Emulator]:
    """Start `nvmlab emulate`, wait for its three resource lines, stop it at the end."""
    cmd = [sys.executable, "-P", "-m", "nvmlab.cli", "emulate", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        resources: dict[str, str] = {}
        deadline = time.monotonic() + 60.0
        while len(resources) < 3:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail("nvmlab emulate printed no resource lines within 60 s")
            if line is None:
                pytest.fail(f"nvmlab emulate exited early: {proc.wait()} {proc.stderr.read()}")  # type: ignore[union-attr]
            role, resource = line.split()
            resources[role] = resource
        emulator = Emulator(proc, resources)
        yield emulator
        proc.send_signal(stop_signal)
        code = proc.wait(timeout=20)
        if stop_signal == signal.SIGKILL:
            assert code == -signal.SIGKILL
        else:
            assert code == 0, proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def expected_current_a() -> float:
    """What the selected device conducts at the read voltage on the same chip (same seed)."""
    from nvmlab.mocks.emulated import build_emulated_bench

    truth = build_emulated_bench(rows=ROWS, cols=COLS, seed=SEED).ground_truth()
    return READ_V * float(truth["conductance_s"][SELECTED])


SMU_SESSIONS = {
    "keithley2400": (
        "KEITHLEY INSTRUMENTS INC.,MODEL 2400",
        [
            ":SOUR:FUNC VOLT",
            f":SOUR:VOLT {READ_V}",
            ":SENS:FUNC 'CURR'",
            ":SENS:CURR:PROT 1e-3",
            ":FORM:ELEM CURR",
            ":OUTP ON",
        ],
        ":READ?",
    ),
    "keithley2636b": (
        "Keithley Instruments Inc., Model 2636B",
        [
            "smua.reset()",
            "smua.source.func = smua.OUTPUT_DCVOLTS",
            f"smua.source.levelv = {READ_V}",
            "smua.source.limiti = 1e-3",
            "smua.source.output = smua.OUTPUT_ON",
        ],
        "print(smua.measure.i())",
    ),
    "keysight_b2902a": (
        "Keysight Technologies,B2902A",
        [":SOUR1:FUNC:MODE VOLT", f":SOUR1:VOLT {READ_V}", ":SENS1:CURR:PROT 1e-3", ":OUTP1 ON"],
        ":MEAS:CURR? (@1)",
    ),
}


@pytest.mark.parametrize("model", list(SMU_SESSIONS))
def test_plain_pyvisa_reads_the_selected_device_through_each_smu(model: str) -> None:
    idn_prefix, setup, query = SMU_SESSIONS[model]
    args = [
        "--smu",
        model,
        "--rows",
        str(ROWS),
        "--cols",
        str(COLS),
        "--seed",
        str(SEED),
        "--select",
        f"{SELECTED[0]},{SELECTED[1]}",
    ]
    with nvmlab_emulate(*args) as emu:
        assert emu.resources["smu"].startswith("TCPIP::127.0.0.1::")
        assert emu.resources["smu"].endswith("::SOCKET")
        rm = pyvisa.ResourceManager("@py")
        smu = rm.open_resource(
            emu.resources["smu"], read_termination="\n", write_termination="\n", timeout=5000
        )
        assert smu.query("*IDN?").startswith(idn_prefix)
        for command in setup:
            smu.write(command)
        amps = float(smu.query(query).split(",")[0])
        smu.close()
        rm.close()
    expected = expected_current_a()
    assert 5e-6 * READ_V * 0.5 < expected < 300e-6 * READ_V  # a device of the usable window
    assert amps == pytest.approx(expected, rel=0.02)  # the device alone, not its row


def test_the_chamber_follows_its_setpoint_and_the_board_reports_the_selection(
    tmp_path: Path,
) -> None:
    station = tmp_path / "station.toml"
    args = [
        "--rows",
        str(ROWS),
        "--cols",
        str(COLS),
        "--select",
        "2,1",
        "--time-scale",
        "600",
        "--station-out",
        str(station),
    ]
    with nvmlab_emulate(*args, stop_signal=signal.SIGTERM) as emu:
        assert emu.resources["chamber"].startswith("ASRLsocket://127.0.0.1:")
        # The probe board through pyvisa-py's ASRLsocket form.
        rm = pyvisa.ResourceManager("@py")
        board = rm.open_resource(
            emu.resources["board"], read_termination="\n", write_termination="\n", timeout=5000
        )
        assert board.query("SEL?") == "2,1"
        board.close()
        rm.close()
        # The Espec chamber through plain pyserial, as behind a serial-to-Ethernet bridge.
        port = serial.serial_for_url(emu.serial_url("chamber"), timeout=5.0)
        port.write(b"TEMP, S40.0\r\n")
        assert port.readline().startswith(b"OK:")
        deadline = time.monotonic() + 20.0
        pv = 25.0
        while time.monotonic() < deadline:
            port.write(b"TEMP?\r\n")
            pv, sp = (float(x) for x in port.readline().decode().split(",")[:2])
            assert sp == 40.0
            if abs(pv - 40.0) < 0.5:
                break
            time.sleep(0.2)
        port.close()
        assert abs(pv - 40.0) < 0.5, f"chamber PV {pv} C did not reach the 40.0 C setpoint"
        text = station.read_text()
        assert f'resource = "{emu.resources["smu"]}"' in text
        assert f'resource = "{emu.serial_url("chamber")}"' in text
        assert 'driver = "espec"' in text and 'driver = "probe_board"' in text


def test_bad_options_fail_with_a_message_naming_the_allowed_values() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-P",
            "-m",
            "nvmlab.cli",
            "emulate",
            "--rows",
            "8",
            "--cols",
            "8",
            "--select",
            "8,0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "device 8,0 is outside the 8 x 8 array" in result.stderr
    assert "allowed rows 0..7" in result.stderr


class PlainBench:
    """Board (pyserial, socket://) and Keithley 2400 (pyvisa-py) of a served bench."""

    def __init__(self, emu: Emulator) -> None:
        self.rm = pyvisa.ResourceManager("@py")
        self.smu = self.rm.open_resource(
            emu.resources["smu"], read_termination="\n", write_termination="\n", timeout=5000
        )
        self.smu.write(
            f":SOUR:FUNC VOLT;:SOUR:VOLT {READ_V};:SENS:CURR:PROT 1e-3;:FORM:ELEM CURR;"
            # 0.1 PLC: 10 readings in 20 ms of the served bench's real time, not 200 ms (the
            # emulated read noise does not depend on the integration time)
            ":SENS:CURR:NPLC 0.1;:TRIG:COUN 10;:OUTP ON"
        )
        self.board = serial.serial_for_url(emu.serial_url("board"), timeout=5.0)
        assert self.ask("READ:SCHEME TRACK") == "OK"

    def ask(self, command: str) -> str:
        self.board.write(command.encode("ascii") + b"\n")
        return self.board.readline().decode("ascii").strip()

    def conductance_s(self, row: int, col: int) -> float:
        """Device (row, col) alone (tracking scheme), 10 readings averaged (S)."""
        assert self.ask(f"SEL {row},{col}") == "OK"
        amps = [float(x) for x in self.smu.query(":READ?").split(",")]
        return sum(amps) / len(amps) / READ_V

    def close(self) -> None:
        self.board.close()
        self.smu.close()
        self.rm.close()


def test_the_chip_is_as_it_was_left_after_kill_9(tmp_path: Path) -> None:
    """Write pulses through the served board, SIGKILL the emulator, restart it on the same
    state file: the devices read what they read before the kill (within read noise). A kill
    in the middle of a burst of writes leaves a state file that still loads."""
    state = tmp_path / "chip.npz"
    args = ["--rows", str(ROWS), "--cols", str(COLS), "--seed", str(SEED)]
    args += ["--state-file", str(state)]
    pulses = {(1, 2): 1.4, (6, 4): -1.6}  # one set, one reset (V), 1 ms, V/3 scheme
    with nvmlab_emulate(*args, stop_signal=signal.SIGKILL) as emu:
        lab = PlainBench(emu)
        before = {d: lab.conductance_s(*d) for d in pulses}
        for (row, col), volts in pulses.items():
            for _ in range(3):
                assert lab.ask(f"PULSE {row},{col},{volts},1e-3,V3") == "OK"
        written = {d: lab.conductance_s(*d) for d in pulses}
        lab.close()
    assert written[(1, 2)] > 1.05 * before[(1, 2)]  # the pulses really changed the chip
    assert written[(6, 4)] < 0.95 * before[(6, 4)]
    assert [p.name for p in tmp_path.iterdir()] == ["chip.npz"]

    with nvmlab_emulate(*args, stop_signal=signal.SIGKILL) as emu:
        lab = PlainBench(emu)
        for d, g in written.items():
            # within 4 sigma of the difference of two 10-reading means at 0.1 PLC (read
            # noise 0.2 % of G + 0.02 uS / sqrt(NPLC) per reading: docs/devices.md); near
            # the bottom of the window the instrument part dominates a 1 % tolerance
            sigma_mean = (0.002 * g + 2e-8 / 0.1**0.5) / 10**0.5
            assert lab.conductance_s(*d) == pytest.approx(
                g, rel=0.01, abs=4 * 2**0.5 * sigma_mean
            ), d
        # A burst of writes (each one rewrites the state file), killed half-way.
        lab.board.write(b"".join(b"PULSE 3,3,1.2,1e-3,V3\n" for _ in range(200)))
        for _ in range(40):
            assert lab.board.readline() == b"OK\n"
        lab.close()

    # Whatever instant the kill hit, the state file is a whole one: it loads and serves.
    with nvmlab_emulate(*args) as emu:
        lab = PlainBench(emu)
        assert lab.conductance_s(1, 2) == pytest.approx(written[(1, 2)], rel=0.01)
        lab.close()
    assert [p.name for p in tmp_path.iterdir()] == ["chip.npz"]  # no stale temporary files


def test_serving_every_interface_warns_and_prints_an_address_clients_can_use() -> None:
    """--host 0.0.0.0 opens the bench (no authentication) to the network: a warning on
    stderr, and resource strings naming this machine, not 127.0.0.1 nor 0.0.0.0."""
    with nvmlab_emulate("--rows", "4", "--cols", "4", "--host", "0.0.0.0") as emu:
        for resource in emu.resources.values():
            assert "127.0.0.1" not in resource and "0.0.0.0" not in resource, resource
            assert socket.gethostname() in resource
        rm = pyvisa.ResourceManager("@py")
        smu = rm.open_resource(
            emu.resources["smu"], read_termination="\n", write_termination="\n", timeout=5000
        )
        assert smu.query("*IDN?").startswith("KEITHLEY INSTRUMENTS INC.,MODEL 2400")
        smu.close()
        rm.close()
    assert emu.proc.stderr is not None
    err = emu.proc.stderr.read()
    assert "WARNING" in err and "0.0.0.0" in err and "no authentication" in err, err


def test_serving_on_loopback_warns_of_nothing() -> None:
    with nvmlab_emulate("--rows", "4", "--cols", "4", "--host", "127.0.0.1") as emu:
        assert emu.resources["smu"].startswith("TCPIP::127.0.0.1::")
    assert emu.proc.stderr is not None
    err = emu.proc.stderr.read()
    assert "serving keithley2400" in err and "WARNING" not in err, err


def test_stopping_saves_the_chip_as_it_relaxed_since_the_last_write(tmp_path: Path) -> None:
    """One write pulse (saved at once), then nothing but time: days of bench time pass at
    --time-scale 1e6 before Ctrl-C. The state file left behind holds the chip as it was at
    the stop, relaxation included, not as the write left it."""
    state = tmp_path / "chip.npz"
    args = ["--rows", "4", "--cols", "4", "--seed", str(SEED), "--state-file", str(state)]
    with nvmlab_emulate(*args, "--time-scale", "1e6") as emu:
        board = serial.serial_for_url(emu.serial_url("board"), timeout=5.0)
        board.write(b"PULSE 1,2,2.5,1e-3,V3\n")
        assert board.readline() == b"OK\n"
        board.close()
        after_write = tmp_path / "after-write.npz"
        after_write.write_bytes(state.read_bytes())
        time.sleep(0.5)  # about 6 days of bench time
    from nvmlab.mocks.emulated import build_emulated_bench

    def conductance_s(path: Path) -> float:
        scratch = tmp_path / "scratch.npz"  # a copy: closing a bench saves its state file
        scratch.write_bytes(path.read_bytes())
        bench = build_emulated_bench(rows=4, cols=4, seed=SEED, state_file=scratch)
        g = float(bench.ground_truth()["conductance_s"][1, 2])
        bench.close()
        return g

    written, stopped = conductance_s(after_write), conductance_s(state)
    assert abs(stopped / written - 1) > 1e-4, (written, stopped)
