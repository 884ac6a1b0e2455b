"""After a timeout no late reply is ever taken for a later query's, on every driver.

The bench's ``late`` fault holds one reply back beyond the client's timeout; it arrives on
a later read, as a real late reply does (mocks/serving/faults.py). A caller that catches
the :class:`~nvmlab.errors.InstrumentTimeout` and goes on must get, for its next query,
that query's own answer: the transport resynchronises (a fresh connection, a device clear
or a probe) before the next command. Each case asks a question ``A`` whose reply comes
late, then a question ``B`` whose true answer differs from ``A``'s.

In-process the delay and the timeout run on the bench's virtual clock; over loopback TCP
the delay is wall time (short: the client's timeout is 0.3 s there).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nvmlab.clock import VirtualClock
from nvmlab.drivers.espec import EspecChamber
from nvmlab.drivers.recording import ReplayTransport
from nvmlab.drivers.transport import Transport, open_transport
from nvmlab.drivers.watlow_f4 import REG_DECIMALS, WatlowF4
from nvmlab.errors import InstrumentTimeout
from nvmlab.instruments.station import Station
from nvmlab.mocks.benchfile import BenchConfig
from nvmlab.mocks.emulated import EmulatedBench, build_emulated_bench
from nvmlab.mocks.physics.resistor import ResistorArray
from nvmlab.mocks.serving.faults import FaultSpec

ROW, COL = 2, 5
G_SELECTED_S = 50e-6
#: (client timeout, reply delay) in s: the delay outlasts a query and its one retry.
TIMING = {"in-process": (1.0, 2.5), "tcp": (0.3, 0.8)}

#: driver -> (role, emulator model)
DRIVERS = {
    "keithley2400": ("smu", "keithley2400"),
    "keithley2636b": ("smu", "keithley2636b"),
    "keysight_b2902a": ("smu", "keysight-b2902a"),
    "espec": ("chamber", "espec"),
    "watlow_f4": ("chamber", "watlow-f4"),
    "probe_board": ("board", "probe-board"),
}
WAYS = {
    "smu": [("in-process", "visa"), ("tcp", "visa")],
    "chamber": [
        ("in-process", "visa"),
        ("in-process", "serial"),
        ("tcp", "visa"),
        ("tcp", "serial"),
    ],
    "board": [("in-process", "visa"), ("in-process", "serial"), ("tcp", "visa"), ("tcp", "serial")],
}
CASES = [
    pytest.param(driver, where, stack, id=f"{driver}-{where}-{stack}")
    for driver, (role, _) in DRIVERS.items()
    for where, stack in WAYS[role]
]


def emulated(driver: str) -> EmulatedBench:
    role, model = DRIVERS[driver]
    g = np.full((8, 8), 20e-6)
    g[ROW, COL] = G_SELECTED_S
    # A fault that never fires wraps the instrument in a fault injector, so the test can
    # make exactly the reply it chooses late.
    config = BenchConfig(rows=8, cols=8, faults={role: [FaultSpec("drop", messages=(10**9,))]})
    options = {"smu": "smu_model", "chamber": "chamber_model"}
    extra = {options[role]: model} if role in options else {}
    bench = build_emulated_bench(config, clock=VirtualClock(), array=ResistorArray(g), **extra)
    bench.preselect(ROW, COL)
    return bench


@contextmanager
def one_instrument_station(
    bench: EmulatedBench, role: str, where: str, stack: str
) -> Iterator[Station]:
    timeout_s = TIMING[where][0]

    def station(resources: dict[str, str], visa_library: object) -> Station:
        data = bench.station_dict({role: resources[role]}, timeout_s=timeout_s)
        return Station(data, visa_library=visa_library, clock=bench.clock)

    if where == "in-process":
        resources = bench.resources() if stack == "visa" else bench.serial_urls()
        with station(resources, bench.visa_library()) as opened:
            yield opened
        return
    with bench.serve_tcp() as tcp:
        resources = tcp.resources if stack == "visa" else tcp.serial_urls
        with station(resources, "@py") as opened:
            yield opened


def make_next_reply_late(bench: EmulatedBench, role: str, where: str) -> None:
    injector = bench.faults[role]
    delay_s = TIMING[where][1]
    injector.add(
        FaultSpec("late", messages=(injector.reply_count + 1,), max_count=1, delay_s=delay_s)
    )


def ask_late(ask: Callable[[], Any]) -> Any:
    """Ask ``A`` (whose reply is late); a timeout is caught and the caller goes on."""
    try:
        return ask()
    except InstrumentTimeout:
        return None


def smu_case(station: Station, bench: EmulatedBench, where: str) -> None:
    smu = station.smu
    smu.configure(current_limit_a=1e-3, nplc=0.01)
    smu.set_voltage(0.25)
    smu.output(True)
    make_next_reply_late(bench, "smu", where)
    first = ask_late(smu.measure_current)
    if first is not None:  # a retry on a fresh stream may answer A with A's own reading
        assert first == pytest.approx(G_SELECTED_S * 0.25, rel=3e-3)
    smu.set_voltage(0.3)
    # B: the 0.3 V reading, never the 0.25 V one that arrived late
    assert smu.measure_current() == pytest.approx(G_SELECTED_S * 0.3, rel=3e-3)


def espec_case(station: Station, bench: EmulatedBench, where: str) -> None:
    chamber = station.drivers["chamber"]
    chamber.set_setpoint(30.0)
    make_next_reply_late(bench, "chamber", where)
    first = ask_late(chamber.read_setpoint)  # TEMP? -> "PV,SP,upper,lower"
    if first is not None:
        assert first == pytest.approx(30.0)
    assert chamber.mode() in ("constant", "standby", "off")  # MODE?, not the TEMP? reply


def watlow_case(station: Station, bench: EmulatedBench, where: str) -> None:
    chamber = station.drivers["chamber"]
    chamber.set_setpoint(30.0)
    make_next_reply_late(bench, "chamber", where)
    first = ask_late(chamber.read_setpoint)  # one register: 300 raw with one decimal
    if first is not None:
        assert first == pytest.approx(30.0)
    # B is a frame of the same length: only its own value tells it apart
    assert chamber.read_register(REG_DECIMALS, signed=False) == 1


def board_case(station: Station, bench: EmulatedBench, where: str) -> None:
    board = station.drivers["board"]
    make_next_reply_late(bench, "board", where)
    first = ask_late(board.configuration)  # CONF? -> kind,rows,cols
    if first is not None:
        assert (first.rows, first.cols) == (8, 8)
    assert board.read_scheme() in ("GND", "FLOAT", "TRACK")  # READ:SCHEME?, not CONF?


CASE = {
    "keithley2400": smu_case,
    "keithley2636b": smu_case,
    "keysight_b2902a": smu_case,
    "espec": espec_case,
    "watlow_f4": watlow_case,
    "probe_board": board_case,
}


@pytest.mark.parametrize(("driver", "where", "stack"), CASES)
def test_after_a_timeout_the_next_query_gets_its_own_reply(
    driver: str, where: str, stack: str
) -> None:
    role, _ = DRIVERS[driver]
    bench = emulated(driver)
    try:
        with one_instrument_station(bench, role, where, stack) as station:
            CASE[driver](station, bench, where)
            assert [kind for _, kind in bench.faults[role].log] == ["late"]
    finally:
        bench.close()


# -- the mechanisms -------------------------------------------------------------------------
class LocalLine(Transport):
    """A local serial line in memory: replies queued by the test, nothing separates them."""

    def __init__(self, replies: list[str]) -> None:
        super().__init__(name="line", resource="/dev/ttyS0", timeout_s=1.0)
        self.replies = replies
        self.sent: list[str] = []

    def write(self, message: str) -> None:
        self._before_command()
        self.last_command = message
        self.sent.append(message)

    def read(self) -> str:
        if not self.replies:
            self._timed_out()
            raise self.error(InstrumentTimeout, "no reply")
        return self.replies.pop(0)

    def write_raw(self, data: bytes) -> None:
        raise NotImplementedError

    def read_raw(self, size: int) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def reconnect(self) -> None:
        pass


def test_on_a_local_line_the_identity_probe_discards_every_late_reply() -> None:
    line = LocalLine(["ACME,1"])
    assert line.query("*IDN?") == "ACME,1"
    with pytest.raises(InstrumentTimeout):
        line.query(":MEAS?")
    # the late reading arrives, then the probe's identity, then the next query's reply
    line.replies += ["0.25", "ACME,1", "0.30"]
    assert line.query(":MEAS?") == "0.30"
    assert line.sent == ["*IDN?", ":MEAS?", "*IDN?", ":MEAS?"]
    assert not line.out_of_step and line.resyncs == 1


def test_a_late_identity_is_not_taken_for_the_probe_s() -> None:
    line = LocalLine([])
    line.identity_reply = "ACME,1"
    with pytest.raises(InstrumentTimeout):
        line.query("*IDN?")
    line.replies += ["ACME,1", "ACME,1", "0.30"]  # the late identity, the probe's, B's
    assert line.query(":MEAS?") == "0.30"


def test_a_probe_that_times_out_leaves_the_line_out_of_step() -> None:
    line = LocalLine(["ACME,1"])
    line.query("*IDN?")
    with pytest.raises(InstrumentTimeout):
        line.query(":MEAS?")
    with pytest.raises(InstrumentTimeout):
        line.query(":MEAS?")  # the probe's reply never came
    assert line.out_of_step
    line.replies += ["0.25", "ACME,1", "ACME,1", "0.30"]
    assert line.query(":MEAS?") == "0.30"


def test_a_recorded_resynchronisation_replays(tmp_path: Path) -> None:
    bench = emulated("keithley2400")
    transcript = tmp_path / "smu.jsonl"
    try:
        with open_transport(
            bench.resources()["smu"],
            name="smu",
            timeout_s=1.0,
            visa_library=bench.visa_library(),
            record_to=transcript,
        ) as live:
            assert live.query("*IDN?").startswith("KEITHLEY")
            make_next_reply_late(bench, "smu", "in-process")
            with pytest.raises(InstrumentTimeout):
                live.query(":SYST:ERR?")
            assert live.query("*IDN?").startswith("KEITHLEY")
    finally:
        bench.close()
    assert '"direction": "resync"' in transcript.read_text()
    replay = ReplayTransport(transcript, name="smu")
    assert replay.query("*IDN?").startswith("KEITHLEY")
    with pytest.raises(InstrumentTimeout):
        replay.query(":SYST:ERR?")
    assert replay.query("*IDN?").startswith("KEITHLEY")
    replay.assert_finished()


def test_espec_on_a_local_line_resynchronises_with_its_rom_reply() -> None:
    line = LocalLine(["SCP-220,200.0", "P-300 Ver 1.10"])
    chamber = EspecChamber(line)
    chamber.identify()
    with pytest.raises(InstrumentTimeout):
        chamber.set_setpoint(30.0)  # the OK arrives late
    line.replies += ["OK: TEMP, S30.0", "P-300 Ver 1.10", "CONSTANT"]
    assert chamber.mode() == "constant"
    assert line.sent[-3:] == ["TEMP, S30.0", "ROM?", "MODE?"]


class RawLocalLine(LocalLine):
    """A local serial line carrying raw frames (Modbus RTU)."""

    def __init__(self) -> None:
        super().__init__([])
        self.rx = bytearray()
        self.frames: list[bytes] = []

    def write_raw(self, data: bytes) -> None:
        self._before_command()
        self.last_command = data.hex()
        self.frames.append(bytes(data))

    def read_raw(self, size: int) -> bytes:
        if len(self.rx) < size:
            self._timed_out()
            raise self.error(InstrumentTimeout, "no reply")
        data = bytes(self.rx[:size])
        del self.rx[:size]
        return data


def _crc16(frame: bytes) -> bytes:
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


def _rtu(*fields: int, fmt: str) -> bytes:
    body = struct.pack(fmt, *fields)
    return body + _crc16(body)


def test_watlow_on_a_local_line_skips_a_late_frame_of_the_same_length() -> None:
    line = RawLocalLine()
    chamber = WatlowF4(line)
    line.rx += _rtu(1, 3, 2, 1, fmt=">BBBH") + _rtu(1, 3, 2, 1, fmt=">BBBH")  # 606, 901
    with pytest.raises(InstrumentTimeout):
        chamber.read_setpoint()  # register 300 answers late
    late = _rtu(1, 3, 2, 300, fmt=">BBBH")  # 30.0 C, the same length as B's reply
    probe_reply = _rtu(1, 3, 6, 250, 0, 0, fmt=">BBBHHH")
    line.rx += late + probe_reply + _rtu(1, 3, 2, 1, fmt=">BBBH")
    assert chamber.read_register(REG_DECIMALS, signed=False) == 1
    assert line.frames[-2] == _rtu(1, 3, 100, 3, fmt=">BBHH")  # the probe: 3 registers
