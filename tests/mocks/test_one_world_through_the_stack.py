"""One physical world, reached only through the instruments' own bytes (in-process pyvisa).

Each test is a lab procedure on :func:`build_emulated_bench`: the chamber, the probe board
and the SMU are opened with a plain ``pyvisa.ResourceManager`` on the bench's in-process
VISA library, and what the SMU reads is compared with the chip's ground truth and with the
parameters the physics was given:

- the chamber heats the air, the chip follows with its own lag, and a selected device's
  reading rises by its own temperature coefficient times the chip's temperature rise;
- an eFlash array read cell by cell through board and SMU matches the true cell currents
  over more than three decades, and the board's program / erase pulses move a cell the
  right way without touching its neighbours;
- a V/2 pulse fired by the board disturbs a weak half-selected memristor that a V/3 pulse
  of the same amplitude leaves alone;
- for every SMU model, the tracking scheme makes channel A read one device alone where a
  grounded scheme reads the whole row.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from nvmlab.mocks.emulated import EmulatedBench, build_emulated_bench
from nvmlab.mocks.firmware.smu_ranges import KEITHLEY_2400

READ_V = 0.2
AVERAGED_READS = 20


@dataclass
class Lab:
    """The three instruments of one emulated bench, opened with plain pyvisa."""

    emulated: EmulatedBench
    smu: Any
    board: Any
    chamber: Any

    def ask_board(self, command: str) -> str:
        reply = str(self.board.query(command))
        assert not reply.startswith("ERR"), f"{command!r}: {reply}"
        return reply

    def set_up_2400_read(self, volts: float, count: int = AVERAGED_READS) -> None:
        """Keithley 2400: source ``volts`` (V), 1 PLC, ``count`` readings per :READ?."""
        self.smu.write(
            f":SOUR:FUNC VOLT;:SOUR:VOLT {volts};:SENS:CURR:PROT 1e-3;:SENS:CURR:NPLC 1;"
            f":FORM:ELEM CURR;:TRIG:COUN {count};:OUTP ON"
        )

    def read_amps(self, row: int, col: int) -> float:
        """Select (row, col) on the board and average the 2400's readings (A)."""
        self.ask_board(f"SEL {row},{col}")
        return float(np.mean([float(x) for x in str(self.smu.query(":READ?")).split(",")]))


@pytest.fixture
def open_lab() -> Iterator[Any]:
    opened: list[tuple[EmulatedBench, Any]] = []

    def _open(**options: Any) -> Lab:
        emulated = build_emulated_bench(**options)
        rm = emulated.resource_manager()
        resources = emulated.resources()
        lab = Lab(
            emulated,
            rm.open_resource(resources["smu"], read_termination="\n", write_termination="\n"),
            rm.open_resource(resources["board"], read_termination="\n", write_termination="\n"),
            rm.open_resource(
                resources["chamber"], read_termination="\r\n", write_termination="\r\n"
            ),
        )
        opened.append((emulated, rm))
        return lab

    yield _open
    for emulated, rm in opened:
        rm.close()
        emulated.close()


# -- temperature: chamber -> air -> chip -> device current -----------------------------------
def test_heating_the_chamber_raises_each_device_by_its_own_temperature_coefficient(
    open_lab: Any,
) -> None:
    lab: Lab = open_lab(rows=8, cols=8, seed=2)
    truth = lab.emulated.ground_truth()
    # Two well-behaved devices (functional, no telegraph noise) with the most different
    # temperature coefficients: the shift must follow each device's own coefficient.
    quiet = (truth["defect"] == 0) & (truth["rtn_amplitude_rel"] == 0)
    coeff = np.where(quiet, truth["temp_coeff_s_per_k"], np.nan)
    devices = [
        tuple(int(i) for i in np.unravel_index(np.nanargmin(coeff), coeff.shape)),
        tuple(int(i) for i in np.unravel_index(np.nanargmax(coeff), coeff.shape)),
    ]
    lab.ask_board("READ:SCHEME TRACK")
    lab.set_up_2400_read(READ_V)
    cold = {d: lab.read_amps(*d) / READ_V for d in devices}  # S, at 25 C
    for d in devices:
        assert cold[d] == pytest.approx(truth["conductance_s"][d], rel=0.01)

    assert lab.chamber.query("TEMP, S85.0") == "OK: TEMP, S85.0"
    lab.emulated.clock.sleep(600.0)  # ten minutes into the ramp
    air_c = float(str(lab.chamber.query("TEMP?")).split(",")[0])
    chip_c = float(lab.ask_board("STAT?").split("TEMP=")[1])
    assert 40.0 < chip_c < air_c - 3.0, f"chip {chip_c} C should lag the air {air_c} C"

    lab.emulated.clock.sleep(3 * 3600.0)  # soaked
    chip_c = lab.emulated.bench.chip_temperature_c()
    assert chip_c == pytest.approx(85.0, abs=0.1)
    shifts = []
    for d in devices:
        shift_s = lab.read_amps(*d) / READ_V - cold[d]
        # I = (g + k (T - 25 C)) V (1 + b V^2): the additive shift seen at the read voltage.
        expected_s = (
            truth["temp_coeff_s_per_k"][d]
            * (chip_c - 25.0)
            * (1 + truth["iv_cubic_b_per_v2"][d] * READ_V**2)
        )
        assert shift_s == pytest.approx(expected_s, rel=0.04), d
        assert 0.7 * 0.117e-6 * 60 < shift_s < 1.3 * 0.117e-6 * 60 * 1.1  # about +7 uS
        shifts.append(shift_s)
    assert shifts[1] > 1.1 * shifts[0]  # the device spread is visible in the readings


# -- eFlash through board and SMU ----------------------------------------------------------------
def test_eflash_cells_read_through_board_and_smu_match_the_truth_over_three_decades(
    open_lab: Any,
) -> None:
    lab: Lab = open_lab(array="eflash", rows=8, cols=8, seed=3)
    lab.ask_board("EFLASH:CG 2.5")  # read bias of devices.md: WL 1.5 V, CG 2.5 V, BL 1 V
    lab.set_up_2400_read(1.0, count=5)
    measured = np.array([[lab.read_amps(r, c) for c in range(8)] for r in range(8)])
    truth = lab.emulated.ground_truth()["cell_current_a"]
    # the 2400's lowest range (1 uA) resolves a 100 pA cell only to a few percent: allow
    # six standard errors of the mean of 5 readings at its modelled floor and resolution
    lowest = KEITHLEY_2400.lowest
    floor_a = math.hypot(lowest.noise_floor_a(1.0), lowest.resolution_a / math.sqrt(12))
    np.testing.assert_allclose(measured, truth, rtol=0.05, atol=6 * floor_a / math.sqrt(5))
    decades = np.log10(measured.max() / measured.min())
    assert decades >= 3.0, f"only {decades:.2f} decades of cell current"


def test_eflash_program_and_erase_pulses_move_one_cell_the_right_way(open_lab: Any) -> None:
    lab: Lab = open_lab(array="eflash", rows=8, cols=8, seed=3)
    lab.ask_board("EFLASH:CG 2.5")
    lab.set_up_2400_read(1.0, count=5)
    cell = (4, 5)
    before_truth = lab.emulated.ground_truth()["cell_current_a"].copy()
    start = lab.read_amps(*cell)

    lab.ask_board(f"PULSE {cell[0]},{cell[1]},4.5,1e-5")  # program: Vth up, current down
    programmed = lab.read_amps(*cell)
    assert programmed < 0.7 * start
    lab.ask_board(f"PULSE {cell[0]},{cell[1]},-10,1e-3")  # erase: Vth down, current up
    erased = lab.read_amps(*cell)
    assert erased > 1.3 * programmed

    after_truth = lab.emulated.ground_truth()["cell_current_a"]
    assert erased == pytest.approx(after_truth[cell], rel=0.05)
    others = np.ones(after_truth.shape, dtype=bool)
    others[cell] = False
    # Unselected bit lines are inhibited (program 2.5 V, erase 5 V): the neighbours on the
    # same word line move at most a small fraction of the selected cell's change.
    neighbours = np.abs(after_truth[others] / before_truth[others] - 1).max()
    assert neighbours < 0.01 < 0.3 < erased / programmed - 1


def test_preselecting_an_eflash_cell_lets_any_smu_software_read_it(open_lab: Any) -> None:
    """``nvmlab emulate --array eflash --select R,C``: routing and read biases are applied,
    the client only sources the bit-line voltage on channel A."""
    lab: Lab = open_lab(array="eflash", rows=6, cols=6, seed=1)
    lab.emulated.preselect(1, 2)
    assert lab.ask_board("EFLASH?") == "2.5000,0.0000,0.0000,1.5000"
    lab.smu.write(":SOUR:VOLT 1.0;:SENS:CURR:PROT 1e-4;:FORM:ELEM CURR;:OUTP ON")
    truth = lab.emulated.ground_truth()["cell_current_a"]
    assert float(lab.smu.query(":READ?")) == pytest.approx(truth[1, 2], rel=0.03)


def test_the_erase_gate_reaches_only_the_selected_word_line(open_lab: Any) -> None:
    """EFLASH:EG held high during a read erases the cells of the word line that is on
    (the selected one) and no other row."""
    lab: Lab = open_lab(array="eflash", rows=6, cols=6, seed=1)
    lab.ask_board("EFLASH:CG 2.5")
    lab.set_up_2400_read(1.0, count=1)
    before = lab.emulated.ground_truth()["cell_current_a"].copy()
    lab.ask_board("EFLASH:EG 10")
    lab.read_amps(2, 3)  # 1 PLC with the erase gate at 10 V on word line 2
    lab.ask_board("EFLASH:EG 0")
    ratio = lab.emulated.ground_truth()["cell_current_a"] / before
    assert (ratio[2] > 1.05).all()  # the whole selected row was erased (current up)
    assert np.delete(ratio, 2, axis=0) == pytest.approx(1.0, abs=1e-4)


# -- half-select disturb through the board's PULSE ----------------------------------------------
@pytest.mark.parametrize(("scheme", "disturbed"), [("V2", True), ("V3", False)])
def test_a_v2_board_pulse_disturbs_a_weak_half_selected_device_and_v3_does_not(
    open_lab: Any, scheme: str, disturbed: bool
) -> None:
    lab: Lab = open_lab(rows=16, cols=16, seed=4)
    truth = lab.emulated.ground_truth()
    thr = np.where(truth["defect"] == 0, truth["set_threshold_v"], np.inf)
    weak = tuple(int(i) for i in np.unravel_index(np.argmin(thr), thr.shape))
    target = (weak[0], (weak[1] + 1) % 16)  # same row: the weak device is half-selected
    amplitude = 2 * (thr[weak] + 0.1)  # V/2 puts 0.1 V over the weak device's threshold
    assert amplitude < 2.5  # an ordinary set amplitude

    lab.ask_board("READ:SCHEME TRACK")
    lab.set_up_2400_read(READ_V)
    weak_before = lab.read_amps(*weak)
    target_before = lab.read_amps(*target)
    lab.ask_board(f"PULSE {target[0]},{target[1]},{amplitude:.4f},1.1e-3,{scheme}")
    weak_change = lab.read_amps(*weak) / weak_before - 1
    assert lab.read_amps(*target) > 1.05 * target_before  # the selected device was set

    after = lab.emulated.ground_truth()["conductance_s"]
    change = np.abs(after / truth["conductance_s"] - 1)
    change[target] = 0.0
    if disturbed:
        assert weak_change > 0.05, f"V/2 changed the weak device by only {weak_change:.2%}"
    else:
        assert abs(weak_change) < 0.005, f"V/3 changed the weak device by {weak_change:.2%}"
        assert change.max() < 0.002


# -- one device alone on channel A, for every SMU model ------------------------------------------
SMU_READS = {
    "keithley2400": (
        [":SOUR:FUNC VOLT", f":SOUR:VOLT {READ_V}", ":SENS:CURR:PROT 1e-3", ":FORM:ELEM CURR"],
        ":OUTP ON",
        ":READ?",
    ),
    "keithley2636b": (
        [
            "smua.reset() smub.reset()",
            f"smua.source.levelv = {READ_V} smua.source.limiti = 1e-3",
        ],
        "smua.source.output = smua.OUTPUT_ON",
        "print(smua.measure.i())",
    ),
    "keysight_b2902a": (
        [":SOUR1:FUNC:MODE VOLT", f":SOUR1:VOLT {READ_V}", ":SENS1:CURR:PROT 1e-3"],
        ":OUTP1 ON",
        ":MEAS:CURR? (@1)",
    ),
}


@pytest.mark.parametrize("model", list(SMU_READS))
def test_tracking_selection_reads_one_device_on_channel_a_of_every_smu(
    open_lab: Any, model: str
) -> None:
    lab: Lab = open_lab(rows=8, cols=8, seed=6, smu_model=model)
    setup, output_on, query = SMU_READS[model]
    for command in setup:
        lab.smu.write(command)
    # Output still off: channel A (and the 2636B's smub, held at 0 V by the normal
    # output-off state) must not disturb the selection.
    lab.emulated.preselect(5, 1)
    lab.smu.write(output_on)
    readings = [float(str(lab.smu.query(query)).split(",")[0]) for _ in range(10)]
    g = lab.emulated.ground_truth()["conductance_s"]
    assert np.mean(readings) == pytest.approx(READ_V * g[5, 1], rel=0.01)
    # The grounded scheme puts the whole row on channel A: the tracking buffer matters.
    lab.ask_board("READ:SCHEME GND")
    row = float(str(lab.smu.query(query)).split(",")[0])
    assert row == pytest.approx(READ_V * g[5].sum(), rel=0.02)
