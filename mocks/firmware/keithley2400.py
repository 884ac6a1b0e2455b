"""Keithley 2400 SourceMeter firmware emulator (SCPI), on bench terminal ``"A"``.

Follows the 2400 Series SourceMeter User's Manual (sections 16-18, appendix B):

- Source: ``:SOUR:FUNC VOLT|CURR``; ``:SOUR:VOLT|CURR[:LEV[:IMM[:AMPL]]]``, ranges and
  auto range, ``:MODE FIX|SWE|LIST``, staircase sweeps (``:STAR :STOP :STEP :CENT :SPAN``,
  ``:SOUR:SWE:POIN`` <= 2500, ``:SPAC LIN|LOG``, ``:RANG``, ``:DIR UP|DOWN``), list sweeps
  (``:SOUR:LIST:VOLT|CURR v1,...``), ``:SOUR:DEL[:AUTO]``, ``:SOUR:CLE[:IMM]``,
  ``:SOUR:CLE:AUTO`` (auto output-off). Sourcing current is supported: the bench
  (:meth:`~nvmlab.mocks.world.Bench.source_current`) finds the voltage that drives the
  requested current through the routed lines, within the voltage compliance
  ``:SENS:VOLT:PROT``.
- Sense: ``:SENS:FUNC 'CURR'`` (also ``"VOLT"``, ``'RES'``; quotes optional here),
  ``:SENS:FUNC:CONC``, ``:SENS:FUNC:ON|OFF[:ALL]``, ``:SENS:FUNC:STAT?``,
  ``:SENS:CURR|VOLT:PROT[:LEV]`` (compliance; after ``*RST`` 105 uA / 21 V),
  ``:PROT:TRIP?``, ranges and auto range, ``:SENS:<f>:NPLC`` 0.01..10 (global, as the
  manual says), ``:SENS:AVER`` (repeat / moving filter: the count multiplies the
  integration time), ``:SENS:RES:MODE``.
- Data: ``:FORM:ELEM VOLT,CURR,RES,TIME,STAT`` (fields always in that order; a field that
  is neither sourced nor measured reads +9.91e37; the sourced quantity is read back (source
  read-back on), so in compliance VOLT reports the clamped voltage actually applied; RES = V/I when ``'RES'`` is on;
  TIME in s since power-on or ``:SYST:TIME:RES``; STAT the status word, bit 3 real
  compliance, bit 16 range compliance); ``:FORM[:DATA] ASCii`` only (REAL/SREAL are
  refused with -224).
- Trigger model: ``:INIT``, ``:READ?`` (= :ABOR + :INIT + :FETC?), ``:FETC?``,
  ``:MEAS[:CURR|VOLT|RES]?`` (= :CONF:<f> + :READ?; :CONF turns the output on and
  restores that function's protection and range to their ``*RST`` values, as the manual
  states and users observe), ``:TRIG:COUN`` x ``:ARM:COUN`` <= 2500 readings,
  ``:TRIG:DEL``, ``:ARM:SOUR IMM|TIM|BUS|...`` with ``:ARM:TIM``; with ``:ARM:SOUR BUS``
  the acquisition waits for ``*TRG``.
- Trace buffer: ``:TRAC:POIN`` (1..2500), ``:TRAC:FEED SENS|CALC1|CALC2|NONE``,
  ``:TRAC:FEED:CONT NEXT|NEV``, ``:TRAC:DATA?``, ``:TRAC:CLE``, ``:TRAC:POIN:ACT?``,
  ``:CALC3:FORM MEAN|SDEV|MAX|MIN|PKPK`` + ``:CALC3:DATA?``.
- Status: ``:STAT:MEAS`` (reading available, buffer available / full, compliance),
  ``:STAT:OPER``, ``:STAT:QUES``, ``:STAT:PRES``, ``:STAT:QUE?``; ``*STB?`` bit 0 is the
  measurement summary.
- Errors: SCPI errors, plus +800 "Illegal with storage active" and +803 "Not permitted
  with OUTPUT off" (``:READ?``/``:INIT`` with the output off and auto output-off
  disabled; the query then sends no reply, as on the instrument).

Current readings: ranges 1 uA to 1 A (named 1.05 uA ... 1.05 A), auto-range or the fixed
``:SENS:CURR:RANG``, the range's resolution and noise floor at the configured NPLC (times
the repeat filter's count), as :mod:`.smu_ranges` models them; a fixed range below the
compliance is range compliance (the reading stops at full scale, status bit 16). The NPLC
also reaches the chip's read noise (``Bench.source(..., nplc=...)``).

Timing: every reading holds the bias on the bench for the source delay (manual, or 1 ms
auto delay), the trigger delay and the integration time ``nplc / line_frequency`` (times
the filter count), through ``bench.hold``, so the shared clock advances and the devices
are really stressed by the sourced voltage. ``:OUTP ON`` applies the level at once, and
changing the level with the output on re-applies it. ``:OUTP OFF`` disconnects the
terminal (every output-off mode is modelled as HIMP).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nvmlab.mocks.firmware.base import line_frequency
from nvmlab.mocks.firmware.scpi import (
    NAN_READING,
    OVERFLOW_READING,
    Call,
    Handler,
    ScpiError,
    ScpiInstrument,
    format_reading,
    parse_bool,
    parse_choice,
    parse_number,
    split_top_level,
    unquote,
)
from nvmlab.mocks.firmware.smu_ranges import KEITHLEY_2400

ELEMENTS = ("VOLT", "CURR", "RES", "TIME", "STAT")
FUNCTIONS = ("VOLT", "CURR", "RES")
FUNC_NAMES = {"VOLT": '"VOLT:DC"', "CURR": '"CURR:DC"', "RES": '"RES"'}
#: Full-scale values (V, A, ohm) of the 2400's ranges.
VOLT_RANGES = (0.21, 2.1, 21.0, 210.0)
CURR_RANGES = tuple(r.max_reading_a for r in KEITHLEY_2400.ranges)
RES_RANGES = (21.0, 210.0, 2.1e3, 2.1e4, 2.1e5, 2.1e6, 2.1e7, 2.1e8)
#: The 2400's ranges read to 105 % of their nominal value (1 uA range: 1.05 uA).
RANGE_OVER = 1.05
MAX_READINGS = 2500
AUTO_DELAY_S = 1e-3

# Status word bits (manual, :FORM:ELEM STATus).
SW_OFLO = 1 << 0
SW_FILTER = 1 << 1
SW_FRONT = 1 << 2
SW_COMPLIANCE = 1 << 3
SW_AUTO_OHMS = 1 << 10
SW_V_MEAS = 1 << 11
SW_I_MEAS = 1 << 12
SW_R_MEAS = 1 << 13
SW_V_SOUR = 1 << 14
SW_I_SOUR = 1 << 15
SW_RANGE_COMPLIANCE = 1 << 16
SW_REMOTE_SENSE = 1 << 22
# Measurement event register bits.
ME_RAV = 1 << 6
ME_BAV = 1 << 8
ME_BFL = 1 << 9
ME_COMPLIANCE = 1 << 14


def _pick_range(ranges: tuple[float, ...], value: float, name: str) -> float:
    mag = abs(value)
    for fs in ranges:
        if mag <= fs * (1 + 1e-9):
            return fs
    raise ScpiError(-222, f"{name}: {value:g} above the largest range {ranges[-1]:g}")


class Keithley2400Emulator(ScpiInstrument):
    """Keithley 2400 SourceMeter on bench terminal ``"A"``."""

    model = "keithley2400"
    terminal = "A"
    error_queue_size = 10

    def __init__(
        self,
        bench: Any,
        *,
        query_latency_s: float = 0.0,
        line_frequency_hz: float = 60.0,
        serial: str = "4107712",
        firmware: str = "C30   Mar 17 2006 09:29:29/A02  /K/J",
        noise_seed: int = 0,
    ) -> None:
        self.bench = bench
        #: The instrument's own reading noise (:mod:`.smu_ranges`), seeded for repeatability.
        self.noise = np.random.default_rng(noise_seed)
        self.line_frequency_hz = line_frequency(line_frequency_hz)
        self.identity = f"KEITHLEY INSTRUMENTS INC.,MODEL 2400,{serial},{firmware}"
        self._time_origin = bench.clock.now()
        self._last: list[list[float]] = []  # readings of the last acquisition
        self.trace: list[list[float]] = []
        self._armed = False
        self.meas_event = 0
        self.meas_enable = 0
        self.oper_enable = 0
        self.ques_enable = 0
        self.tripped = {"CURR": False, "VOLT": False}
        super().__init__(bench.clock, query_latency_s=query_latency_s)
        self.settings["syst.lfr"] = self.line_frequency_hz

    # ------------------------------------------------------------------------------
    # State
    # ------------------------------------------------------------------------------
    @property
    def s(self) -> dict[str, Any]:
        return self.settings

    def reset(self) -> None:
        """``*RST`` defaults (manual table of default settings); the output turns off."""
        lfr = self.settings.get("syst.lfr", self.line_frequency_hz)
        super().reset()
        self.settings["syst.lfr"] = lfr
        self._armed = False
        self.tripped = {"CURR": False, "VOLT": False}
        self.bench.set_terminal(self.terminal, None)

    def clear_status(self) -> None:
        super().clear_status()
        self.meas_event = 0

    def status_summary_bits(self) -> int:
        return 0x01 if self.meas_event & self.meas_enable else 0

    def bus_trigger(self) -> None:
        if self._armed:
            self._armed = False
            self._acquire()

    # ------------------------------------------------------------------------------
    # Tree
    # ------------------------------------------------------------------------------
    def build_tree(self) -> None:  # noqa: PLR0915 - one flat table of commands
        t = self.tree
        d = self.defaults
        d.update(
            {
                "sour.func": "VOLT",
                "sour.VOLT.lev": 0.0,
                "sour.CURR.lev": 0.0,
                "sour.VOLT.rang": 21.0,
                "sour.CURR.rang": 1.05e-4,
                "sour.VOLT.rang.auto": True,
                "sour.CURR.rang.auto": True,
                "sour.VOLT.mode": "FIX",
                "sour.CURR.mode": "FIX",
                "sour.VOLT.star": 0.0,
                "sour.VOLT.stop": 0.0,
                "sour.CURR.star": 0.0,
                "sour.CURR.stop": 0.0,
                "sour.swe.poin": 2500,
                "sour.list.VOLT": [0.0],
                "sour.list.CURR": [0.0],
                "sens.func": ["CURR"],
                "sens.CURR.prot": 1.05e-4,
                "sens.VOLT.prot": 21.0,
                "sens.CURR.rang": 1.05e-4,
                "sens.VOLT.rang": 21.0,
                "sens.RES.rang": 2.1e5,
                "sens.CURR.rang.auto": True,
                "sens.VOLT.rang.auto": True,
                "sens.RES.rang.auto": True,
                "form.elem": list(ELEMENTS),
                "trig.coun": 1,
                "arm.coun": 1,
            }
        )
        # -- source ------------------------------------------------------------------
        self.add_choice(":SOURce#1:FUNCtion[:MODE]", "sour.func", ("VOLTage", "CURRent", "MEMory"),
                        "VOLT", on_change=self._on_source_func)  # fmt: skip
        for f, ranges, lim in (("VOLT", VOLT_RANGES, 210.0), ("CURR", CURR_RANGES, 1.05)):
            long = "VOLTage" if f == "VOLT" else "CURRent"
            t.add(f":SOURce#1:{long}[:LEVel][:IMMediate][:AMPLitude]",
                  self._level_setter(f, lim), self._level_query(f, lim))  # fmt: skip
            t.add(f":SOURce#1:{long}[:LEVel]:TRIGgered[:AMPLitude]",
                  self._level_setter(f, lim), self._level_query(f, lim))  # fmt: skip
            t.add(
                f":SOURce#1:{long}:RANGe",
                self._range_setter(f, ranges),
                self._range_query(f, ranges),
            )
            self.add_bool(f":SOURce#1:{long}:RANGe:AUTO", f"sour.{f}.rang.auto", True)
            self.add_choice(f":SOURce#1:{long}:MODE", f"sour.{f}.mode", ("FIXed", "SWEep", "LIST"), "FIX",
                            on_change=self._on_source_mode)  # fmt: skip
            self.add_number(f":SOURce#1:{long}:STARt", f"sour.{f}.star", 0.0, -lim, lim)
            self.add_number(f":SOURce#1:{long}:STOP", f"sour.{f}.stop", 0.0, -lim, lim)
            t.add(f":SOURce#1:{long}:STEP", self._step_setter(f, lim), self._step_query(f))
            t.add(f":SOURce#1:{long}:CENTer", self._center_setter(f, lim), self._center_query(f))
            t.add(f":SOURce#1:{long}:SPAN", self._span_setter(f, lim), self._span_query(f))
            t.add(f":SOURce#1:LIST:{long}", self._list_setter(f, lim), self._list_query(f))
            t.add(f":SOURce#1:LIST:{long}:POINts", None, self._list_points(f))
            t.add(f":SOURce#1:LIST:{long}:APPend", self._list_append(f, lim), None)
        self.add_number(
            ":SOURce#1:VOLTage:PROTection[:LEVel]", "sour.volt.prot", 210.0, -210.0, 210.0
        )
        self.add_number(
            ":SOURce#1:SWEep:POINts", "sour.swe.poin", 2500, 1, MAX_READINGS, integer=True
        )
        self.add_choice(
            ":SOURce#1:SWEep:SPACing", "sour.swe.spac", ("LINear", "LOGarithmic"), "LIN"
        )
        self.add_choice(
            ":SOURce#1:SWEep:RANGing", "sour.swe.rang", ("BEST", "AUTO", "FIXed"), "BEST"
        )
        self.add_choice(":SOURce#1:SWEep:DIRection", "sour.swe.dir", ("UP", "DOWN"), "UP")
        self.add_choice(":SOURce#1:SWEep:CABort", "sour.swe.cab", ("NEVer", "EARLy", "LATE"), "NEV")
        self.add_number(":SOURce#1:DELay", "sour.del", 0.0, 0.0, 999.9999,
                        on_change=lambda c, v: self.settings.__setitem__("sour.del.auto", False))  # fmt: skip
        self.add_bool(":SOURce#1:DELay:AUTO", "sour.del.auto", True)
        self.add_bool(":SOURce#1:CLEar:AUTO", "sour.cle.auto", False)
        self.add_choice(
            ":SOURce#1:CLEar:AUTO:MODE", "sour.cle.auto.mode", ("ALWays", "TCOunt"), "ALW"
        )
        t.add(":SOURce#1:CLEar[:IMMediate]", self._source_clear, None)
        # -- sense -------------------------------------------------------------------
        t.add("[:SENSe#1]:FUNCtion[:ON]", self._func_on, self._func_query)
        t.add("[:SENSe#1]:FUNCtion:OFF", self._func_off, self._func_off_query)
        t.add("[:SENSe#1]:FUNCtion[:ON]:ALL", self._func_on_all, None)
        t.add("[:SENSe#1]:FUNCtion:OFF:ALL", self._func_off_all, None)
        t.add("[:SENSe#1]:FUNCtion[:ON]:COUNt", None, lambda c: str(len(self.s["sens.func"])))
        t.add("[:SENSe#1]:FUNCtion:OFF:COUNt", None, lambda c: str(3 - len(self.s["sens.func"])))
        t.add("[:SENSe#1]:FUNCtion:STATe", None, self._func_state)
        self.add_bool("[:SENSe#1]:FUNCtion:CONCurrent", "sens.func.conc", True,
                      on_change=self._on_concurrent)  # fmt: skip
        for f, ranges, lim in (("CURR", CURR_RANGES, 1.05), ("VOLT", VOLT_RANGES, 210.0)):
            long = "CURRent" if f == "CURR" else "VOLTage"
            self.add_number(f"[:SENSe#1]:{long}[:DC]:PROTection[:LEVel]", f"sens.{f}.prot",
                            d[f"sens.{f}.prot"], -lim, lim)  # fmt: skip
            t.add(f"[:SENSe#1]:{long}[:DC]:PROTection:TRIPped", None, self._tripped_query(f))
            self.add_choice(f"[:SENSe#1]:{long}[:DC]:PROTection:RSYNchronize", f"sens.{f}.rsyn",
                            ("ON", "OFF"), "OFF")  # fmt: skip
            t.add(f"[:SENSe#1]:{long}[:DC]:RANGe[:UPPer]", self._sense_range_setter(f, ranges),
                  self._sense_range_query(f))  # fmt: skip
            self.add_bool(f"[:SENSe#1]:{long}[:DC]:RANGe:AUTO", f"sens.{f}.rang.auto", True)
            self.add_number(f"[:SENSe#1]:{long}[:DC]:NPLCycles", "sens.nplc", 1.0, 0.01, 10.0)
        t.add("[:SENSe#1]:RESistance:RANGe[:UPPer]", self._sense_range_setter("RES", RES_RANGES),
              self._sense_range_query("RES"))  # fmt: skip
        self.add_bool("[:SENSe#1]:RESistance:RANGe:AUTO", "sens.RES.rang.auto", True)
        self.add_number("[:SENSe#1]:RESistance:NPLCycles", "sens.nplc", 1.0, 0.01, 10.0)
        self.add_choice("[:SENSe#1]:RESistance:MODE", "sens.res.mode", ("MANual", "AUTO"), "MAN")
        self.add_bool("[:SENSe#1]:RESistance:OCOMpensated", "sens.res.ocom", False)
        self.add_bool("[:SENSe#1]:AVERage[:STATe]", "sens.aver", False)
        self.add_choice(
            "[:SENSe#1]:AVERage:TCONtrol", "sens.aver.tcon", ("REPeat", "MOVing"), "REP"
        )
        self.add_number("[:SENSe#1]:AVERage:COUNt", "sens.aver.coun", 10, 1, 100, integer=True)
        # -- configure / measure ---------------------------------------------------------
        for f, long in (("CURR", "CURRent[:DC]"), ("VOLT", "VOLTage[:DC]"), ("RES", "RESistance")):
            t.add(f":CONFigure:{long}", self._configure_setter(f), None)
            t.add(f":MEASure:{long}", None, self._measure_query(f))
        t.add(":CONFigure", None, self._func_query)
        t.add(":MEASure", None, lambda c: self._measure(c, None))
        t.add(":READ", None, self._read)
        t.add(":FETCh", None, self._fetch)
        t.add(":INITiate[:IMMediate]", self._init, None)
        t.add(":ABORt", lambda c: self._abort(c), None)
        # -- format ----------------------------------------------------------------------
        t.add(":FORMat:ELEMents[:SENSe#1]", self._elements_setter, self._elements_query)
        t.add(":FORMat[:DATA]", self._format_data_setter, lambda c: "ASC")
        self.add_choice(":FORMat:BORDer", "form.bord", ("NORMal", "SWAPped"), "NORM")
        self.add_choice(":FORMat:SREGister", "form.sreg", ("ASCii", "HEXadecimal", "OCTal", "BINary"),
                        "ASC")  # fmt: skip
        self.add_choice(":FORMat:SOURce#2", "form.sour2", ("ASCii", "HEXadecimal", "OCTal", "BINary"),
                        "ASC")  # fmt: skip
        # -- output ----------------------------------------------------------------------
        self.add_bool(
            ":OUTPut#1[:STATe]", "outp", False, on_change=lambda c, v: self._apply_output()
        )
        self.add_choice(
            ":OUTPut#1:SMODe", "outp.smod", ("HIMPedance", "NORMal", "ZERO", "GUARd"), "NORM"
        )
        self.add_bool(":OUTPut#1:ENABle[:STATe]", "outp.enab", False)
        # -- trigger / arm ---------------------------------------------------------------
        self.add_number(":TRIGger[:SEQuence#1]:COUNt", "trig.coun", 1, 1, MAX_READINGS, integer=True,
                        check=self._check_counts)  # fmt: skip
        self.add_number(":TRIGger[:SEQuence#1]:DELay", "trig.del", 0.0, 0.0, 999.9999)
        self.add_choice(":TRIGger[:SEQuence#1]:SOURce", "trig.sour", ("IMMediate", "TLINk"), "IMM")
        self.add_choice(":TRIGger[:SEQuence#1]:OUTPut", "trig.outp", ("SOURce", "DELay", "SENSe", "NONE"),
                        "NONE")  # fmt: skip
        self.add_number(":TRIGger[:SEQuence#1]:ILINe", "trig.ilin", 1, 1, 4, integer=True)
        self.add_number(":TRIGger[:SEQuence#1]:OLINe", "trig.olin", 2, 1, 4, integer=True)
        self.add_choice(":TRIGger[:SEQuence#1][:TCONfigure]:DIRection", "trig.dir", ("SOURce", "ACCeptor"),
                        "ACC")  # fmt: skip
        t.add(":TRIGger:CLEar", lambda c: c.expect(0), None)
        self.add_number(":ARM[:SEQuence#1][:LAYer#1]:COUNt", "arm.coun", 1, 1, MAX_READINGS, integer=True,
                        check=self._check_counts)  # fmt: skip
        self.add_choice(":ARM[:SEQuence#1][:LAYer#1]:SOURce", "arm.sour",
                        ("IMMediate", "TLINk", "TIMer", "MANual", "BUS", "NSTest", "PSTest", "BSTest"),
                        "IMM")  # fmt: skip
        self.add_number(":ARM[:SEQuence#1][:LAYer#1]:TIMer", "arm.tim", 0.1, 0.001, 99999.99)
        self.add_choice(
            ":ARM[:SEQuence#1][:LAYer#1]:OUTPut", "arm.outp", ("TENTer", "TEXit", "NONE"), "NONE"
        )
        self.add_number(":ARM[:SEQuence#1][:LAYer#1]:ILINe", "arm.ilin", 1, 1, 4, integer=True)
        self.add_number(":ARM[:SEQuence#1][:LAYer#1]:OLINe", "arm.olin", 2, 1, 4, integer=True)
        # -- trace buffer ----------------------------------------------------------------
        t.add(":TRACe:POINts", self._trace_points_setter, lambda c: str(self.s["trac.poin"]))
        d["trac.poin"] = MAX_READINGS
        t.add(":TRACe:POINts:ACTual", None, lambda c: str(len(self.trace)))
        self.add_choice(":TRACe:FEED", "trac.feed", ("SENSe", "CALCulate1", "CALCulate2", "NONE"), "SENS",
                        check=self._storage_guard)  # fmt: skip
        t.add(":TRACe:FEED:CONTrol", self._feed_control, lambda c: self.s["trac.feed.cont"])
        d["trac.feed.cont"] = "NEV"
        t.add(":TRACe:CLEar", self._trace_clear, None)
        t.add(":TRACe:DATA", None, self._trace_data)
        t.add(
            ":TRACe:FREE",
            None,
            lambda c: f"{(MAX_READINGS - len(self.trace)) * 40},{len(self.trace) * 40}",
        )
        self.add_choice(":TRACe:TSTamp:FORMat", "trac.tst", ("ABSolute", "DELTa"), "ABS")
        self.add_choice(":CALCulate#3:FORMat", "calc3.form", ("MEAN", "SDEViation", "MAXimum", "MINimum",
                                                             "PKPK"), "MEAN")  # fmt: skip
        t.add(":CALCulate#3:DATA", None, self._calc3_data)
        # -- system, display, route, status -------------------------------------------------
        self.add_bool(":SYSTem:BEEPer:STATe", "syst.beep", True)
        self.add_accepted(":SYSTem:BEEPer[:IMMediate]", n_max=2)
        t.add(":SYSTem:AZERo[:STATe]", self._azero_setter, lambda c: self.s["syst.azer"])
        d["syst.azer"] = "1"
        self.add_choice(":SYSTem:AZERo:CACHing[:STATe]", "syst.azer.cach", ("ON", "OFF"), "ON")
        self.add_number(":SYSTem:LFRequency", "syst.lfr", 60, 50, 60, integer=True,
                        check=self._check_lfr)  # fmt: skip
        self.add_bool(":SYSTem:LFRequency:AUTO", "syst.lfr.auto", False)
        t.add(":SYSTem:TIME:RESet", self._time_reset, None)
        t.add(":SYSTem:TIME", None, lambda c: format_reading(self.clock.now() - self._time_origin))
        self.add_bool(":SYSTem:RSENse", "syst.rsen", False)
        self.add_bool(":SYSTem:GUARd", "syst.guar", False)
        t.add(":SYSTem:PRESet", lambda c: self.reset(), None)
        t.add(":SYSTem:POSetup", lambda c: c.expect(1), lambda c: "RST")
        t.add(":SYSTem:KEY", lambda c: c.expect(1), lambda c: "0")
        t.add(":SYSTem:LOCal", lambda c: c.expect(0), None)
        t.add(":SYSTem:REMote", lambda c: c.expect(0), None)
        t.add(":SYSTem:RWLock", lambda c: c.expect(0, 1), None)
        self.add_bool(":DISPlay:ENABle", "disp.enab", True)
        self.add_accepted(":DISPlay[:WINDow#2]:TEXT[:DATA]", reply='""')
        self.add_bool(":DISPlay[:WINDow#2]:TEXT:STATe", "disp.text", False)
        self.add_number(":DISPlay:DIGits", "disp.dig", 6, 4, 7, integer=True)
        self.add_choice(":ROUTe:TERMinals", "rout.term", ("FRONt", "REAR"), "FRON")
        t.add(":STATus:PRESet", self._status_preset, None)
        t.add(":STATus:MEASurement[:EVENt]", None, self._meas_event_query)
        t.add(":STATus:MEASurement:CONDition", None, lambda c: str(self._meas_condition()))
        t.add(
            ":STATus:MEASurement:ENABle",
            self._reg_setter("meas_enable"),
            lambda c: str(self.meas_enable),
        )
        for reg in ("OPERation", "QUEStionable"):
            attr = "oper_enable" if reg == "OPERation" else "ques_enable"
            t.add(f":STATus:{reg}[:EVENt]", None, lambda c: "0")
            t.add(f":STATus:{reg}:CONDition", None, lambda c: "0")
            t.add(
                f":STATus:{reg}:ENABle",
                self._reg_setter(attr),
                self._reg_query(attr),
            )
        t.add(":STATus:QUEue[:NEXT]", None, lambda c: self.errors.format(self.errors.pop()))
        t.add(":STATus:QUEue:CLEar", lambda c: self.errors.clear(), None)
        self.add_accepted(":STATus:QUEue:ENABle", n_max=20, reply="(-440:+900)")
        self.add_accepted(":STATus:QUEue:DISable", n_max=20, reply="")

    # ------------------------------------------------------------------------------
    # Handlers: source
    # ------------------------------------------------------------------------------
    def _level_setter(self, f: str, lim: float) -> Any:
        def handler(call: Call) -> None:
            call.expect(1)
            word = call.params[0].strip().upper()
            if word in ("UP", "DOWN"):
                cur = self.s[f"sour.{f}.lev"]
                rng = self.s[f"sour.{f}.rang"]
                value = cur + (rng / 10.5 if word == "UP" else -rng / 10.5)
            else:
                value = parse_number(call.params[0], name=call.header, lo=-lim, hi=lim, default=0.0)
            ranges = VOLT_RANGES if f == "VOLT" else CURR_RANGES
            if self.s[f"sour.{f}.rang.auto"]:
                self.s[f"sour.{f}.rang"] = _pick_range(ranges, value, call.header)
            elif abs(value) > self.s[f"sour.{f}.rang"] * (1 + 1e-9):
                raise ScpiError(-222, f"{call.header} {value:g} exceeds the fixed source range "
                                      f"{self.s[f'sour.{f}.rang']:g}")  # fmt: skip
            self.s[f"sour.{f}.lev"] = value
            if self.s["outp"] and self.s["sour.func"] == f:
                self._apply_output()

        return handler

    def _level_query(self, f: str, lim: float) -> Any:
        def handler(call: Call) -> str:
            call.expect(0, 1)
            if call.params:
                word = parse_choice(
                    call.params[0], ("MINimum", "MAXimum", "DEFault"), name=call.header
                )
                return self.format_setting({"MIN": -lim, "MAX": lim, "DEF": 0.0}[word])
            return self.format_setting(self.s[f"sour.{f}.lev"])

        return handler

    def _range_setter(self, f: str, ranges: tuple[float, ...]) -> Any:
        def handler(call: Call) -> None:
            call.expect(1)
            value = parse_number(call.params[0], name=call.header, lo=-ranges[-1], hi=ranges[-1],
                                 default=ranges[-2])  # fmt: skip
            self.s[f"sour.{f}.rang"] = _pick_range(ranges, value, call.header)
            self.s[f"sour.{f}.rang.auto"] = False

        return handler

    def _range_query(self, f: str, ranges: tuple[float, ...]) -> Any:
        return lambda call: self.format_setting(self.s[f"sour.{f}.rang"])

    def _step_setter(self, f: str, lim: float) -> Any:
        def handler(call: Call) -> None:
            call.expect(1)
            step = parse_number(call.params[0], name=call.header, lo=-2 * lim, hi=2 * lim)
            span = self.s[f"sour.{f}.stop"] - self.s[f"sour.{f}.star"]
            if step == 0:
                raise ScpiError(-222, f"{call.header} 0: the step must not be zero")
            points = int(math.floor(abs(span) / abs(step) + 1e-9)) + 1
            if points > MAX_READINGS:
                raise ScpiError(
                    -222, f"{call.header} {step:g} gives {points} points; at most {MAX_READINGS}"
                )
            self.s["sour.swe.poin"] = points

        return handler

    def _step_query(self, f: str) -> Any:
        def handler(call: Call) -> str:
            n = self.s["sour.swe.poin"]
            span = self.s[f"sour.{f}.stop"] - self.s[f"sour.{f}.star"]
            return self.format_setting(span / (n - 1) if n > 1 else 0.0)

        return handler

    def _center_setter(self, f: str, lim: float) -> Any:
        def handler(call: Call) -> None:
            call.expect(1)
            center = parse_number(call.params[0], name=call.header, lo=-lim, hi=lim)
            half = (self.s[f"sour.{f}.stop"] - self.s[f"sour.{f}.star"]) / 2
            self.s[f"sour.{f}.star"], self.s[f"sour.{f}.stop"] = center - half, center + half

        return handler

    def _center_query(self, f: str) -> Any:
        return lambda c: self.format_setting(
            (self.s[f"sour.{f}.stop"] + self.s[f"sour.{f}.star"]) / 2
        )

    def _span_setter(self, f: str, lim: float) -> Any:
        def handler(call: Call) -> None:
            call.expect(1)
            span = parse_number(call.params[0], name=call.header, lo=-2 * lim, hi=2 * lim)
            center = (self.s[f"sour.{f}.stop"] + self.s[f"sour.{f}.star"]) / 2
            self.s[f"sour.{f}.star"], self.s[f"sour.{f}.stop"] = (
                center - span / 2,
                center + span / 2,
            )

        return handler

    def _span_query(self, f: str) -> Any:
        return lambda c: self.format_setting(self.s[f"sour.{f}.stop"] - self.s[f"sour.{f}.star"])

    def _list_setter(self, f: str, lim: float) -> Any:
        def handler(call: Call) -> None:
            call.expect(1, 100)
            self.s[f"sour.list.{f}"] = [
                parse_number(p, name=call.header, lo=-lim, hi=lim) for p in call.params
            ]

        return handler

    def _list_append(self, f: str, lim: float) -> Any:
        def handler(call: Call) -> None:
            call.expect(1, 100)
            values = [parse_number(p, name=call.header, lo=-lim, hi=lim) for p in call.params]
            if len(self.s[f"sour.list.{f}"]) + len(values) > MAX_READINGS:
                raise ScpiError(-223, f"{call.header}: a list holds at most {MAX_READINGS} points")
            self.s[f"sour.list.{f}"] = [*self.s[f"sour.list.{f}"], *values]

        return handler

    def _list_query(self, f: str) -> Any:
        return lambda c: ",".join(format_reading(v) for v in self.s[f"sour.list.{f}"])

    def _list_points(self, f: str) -> Any:
        return lambda c: str(len(self.s[f"sour.list.{f}"]))

    def _on_source_func(self, call: Call, value: str) -> None:
        if value == "MEM":
            self.s["sour.func"] = "VOLT"
            raise ScpiError(-221, f"{call.header} MEM: source memory sweeps are not emulated")
        if self.s["outp"]:
            self._apply_output()

    def _on_source_mode(self, call: Call, value: str) -> None:
        return None

    def _source_clear(self, call: Call) -> None:
        call.expect(0)
        self.s["outp"] = False
        self._apply_output()

    def _apply_output(self) -> None:
        """Put the programmed source on the terminal (output on) or disconnect it."""
        if not self.s["outp"]:
            self.bench.set_terminal(self.terminal, None)
            return
        self._source(self._fixed_level())

    def _fixed_level(self) -> float:
        return float(self.s[f"sour.{self.s['sour.func']}.lev"])

    # ------------------------------------------------------------------------------
    # Handlers: sense functions
    # ------------------------------------------------------------------------------
    def _parse_functions(self, call: Call) -> list[str]:
        names: list[str] = []
        for p in call.params:
            text = unquote(p) if p.strip()[:1] in "'\"" else p
            for item in split_top_level(text, ","):
                word = item.strip().strip("'\"").upper()
                base = word.split(":")[0]
                tail = word.split(":")[1:]
                found = None
                for f, long in (("VOLT", "VOLTAGE"), ("CURR", "CURRENT"), ("RES", "RESISTANCE")):
                    if base in (f, long) and (not tail or (f != "RES" and tail == ["DC"])):
                        found = f
                if found is None:
                    raise ScpiError(-224, f"{call.header} {item.strip()[:30]!r}; allowed 'VOLT[:DC]', "
                                          "'CURR[:DC]', 'RES'")  # fmt: skip
                names.append(found)
        return names

    def _func_on(self, call: Call) -> None:
        call.expect(1, 3)
        names = self._parse_functions(call)
        on = set(self.s["sens.func"]) | set(names) if self.s["sens.func.conc"] else {names[-1]}
        self.s["sens.func"] = [f for f in FUNCTIONS if f in on]

    def _func_off(self, call: Call) -> None:
        call.expect(1, 3)
        names = set(self._parse_functions(call))
        self.s["sens.func"] = [f for f in self.s["sens.func"] if f not in names]

    def _func_on_all(self, call: Call) -> None:
        call.expect(0)
        if not self.s["sens.func.conc"]:
            raise ScpiError(-221, f"{call.header}: needs :SENS:FUNC:CONC ON")
        self.s["sens.func"] = list(FUNCTIONS)

    def _func_off_all(self, call: Call) -> None:
        call.expect(0)
        self.s["sens.func"] = []

    def _func_query(self, call: Call) -> str:
        call.expect(0)
        return ",".join(FUNC_NAMES[f] for f in self.s["sens.func"])

    def _func_off_query(self, call: Call) -> str:
        call.expect(0)
        return ",".join(FUNC_NAMES[f] for f in FUNCTIONS if f not in self.s["sens.func"])

    def _func_state(self, call: Call) -> str:
        call.expect(1)
        names = self._parse_functions(call)
        return "1" if names[0] in self.s["sens.func"] else "0"

    def _on_concurrent(self, call: Call, value: bool) -> None:
        if not value and len(self.s["sens.func"]) > 1:
            self.s["sens.func"] = self.s["sens.func"][:1]

    def _sense_range_setter(self, f: str, ranges: tuple[float, ...]) -> Any:
        def handler(call: Call) -> None:
            call.expect(1)
            value = parse_number(call.params[0], name=call.header, lo=-ranges[-1], hi=ranges[-1],
                                 default=ranges[2])  # fmt: skip
            self.s[f"sens.{f}.rang"] = _pick_range(ranges, value, call.header)
            self.s[f"sens.{f}.rang.auto"] = False

        return handler

    def _sense_range_query(self, f: str) -> Any:
        return lambda c: self.format_setting(self.s[f"sens.{f}.rang"])

    def _tripped_query(self, f: str) -> Handler:
        """``:SENS:<f>:PROT:TRIP?``: 1 if the ``f`` compliance tripped on the last reading."""

        def query(call: Call) -> str:
            return "1" if self.tripped[f] else "0"

        return query

    # ------------------------------------------------------------------------------
    # Handlers: format, trigger, trace, system
    # ------------------------------------------------------------------------------
    def _elements_setter(self, call: Call) -> None:
        call.expect(1, 5)
        chosen = set()
        for p in call.params:
            chosen.add(parse_choice(p, ("VOLTage", "CURRent", "RESistance", "TIME", "STATus"),
                                    name=call.header))  # fmt: skip
        self.s["form.elem"] = [e for e in ELEMENTS if e in chosen]

    def _elements_query(self, call: Call) -> str:
        call.expect(0)
        return ",".join(self.s["form.elem"])

    def _format_data_setter(self, call: Call) -> None:
        call.expect(1, 2)
        kind = parse_choice(call.params[0], ("ASCii", "REAL", "SREal"), name=call.header)
        if kind != "ASC":
            raise ScpiError(
                -224, f"{call.header} {call.params[0]}: this emulator sends ASCii data only"
            )
        if len(call.params) > 1:
            raise ScpiError(-108, f"{call.header} ASCii takes no length")

    def _check_counts(self, call: Call, value: float) -> None:
        other = (
            self.s["arm.coun"] if call.header.upper().startswith(":TRIG") else self.s["trig.coun"]
        )
        if int(value) * int(other) > MAX_READINGS:
            raise ScpiError(-221, f"{call.header} {int(value)}: trigger count x arm count must be "
                                  f"<= {MAX_READINGS}")  # fmt: skip

    def _check_lfr(self, call: Call, value: float) -> None:
        if int(value) not in (50, 60):
            raise ScpiError(-224, f"{call.header} {value:g}; allowed 50 or 60")

    def _azero_setter(self, call: Call) -> None:
        call.expect(1)
        if call.params[0].strip().upper() == "ONCE":
            return
        self.s["syst.azer"] = "1" if parse_bool(call.params[0], name=call.header) else "0"

    def _time_reset(self, call: Call) -> None:
        call.expect(0)
        self._time_origin = self.clock.now()

    def _storage_active(self) -> bool:
        return bool(self.s["trac.feed.cont"] == "NEXT")

    def _storage_guard(self, call: Call, value: Any) -> None:
        if self._storage_active():
            raise ScpiError(
                800,
                f"{call.header} while the buffer is storing",
                message="Illegal with storage active",
            )

    def _trace_points_setter(self, call: Call) -> None:
        call.expect(1)
        n = int(round(parse_number(call.params[0], name=call.header, lo=0.5, hi=MAX_READINGS + 0.49,
                                   default=100, minimum=1, maximum=MAX_READINGS)))  # fmt: skip
        self._storage_guard(call, n)
        self.s["trac.poin"] = n

    def _feed_control(self, call: Call) -> None:
        call.expect(1)
        value = parse_choice(call.params[0], ("NEXT", "NEVer"), name=call.header)
        if value == "NEXT" and self.s["trac.feed"] == "NONE":
            raise ScpiError(-221, f"{call.header} NEXT with :TRAC:FEED NONE")
        self.s["trac.feed.cont"] = value

    def _trace_clear(self, call: Call) -> None:
        call.expect(0)
        self._storage_guard(call, None)
        self.trace = []
        self.meas_event &= ~(ME_BAV | ME_BFL)

    def _trace_data(self, call: Call) -> str | None:
        call.expect(0)
        if not self.trace:
            raise ScpiError(-230, ":TRAC:DATA? with an empty buffer")
        return self._format_readings(self.trace)

    def _calc3_data(self, call: Call) -> str:
        call.expect(0)
        if call.suffix("CALC") != 3:
            raise ScpiError(-113, f"{call.header}? is not emulated; only :CALC3 statistics are")
        if not self.trace:
            raise ScpiError(-230, ":CALC3:DATA? with an empty buffer")
        fields = [e for e in self.s["form.elem"] if e in ("VOLT", "CURR", "RES")]
        out = []
        for e in fields:
            col = np.array([r[ELEMENTS.index(e)] for r in self.trace])
            op = self.s.get("calc3.form", "MEAN")
            if op == "MEAN":
                value = float(np.mean(col))
            elif op == "SDEV":
                value = float(np.std(col, ddof=1)) if col.size > 1 else 0.0
            elif op == "MAX":
                value = float(np.max(col))
            elif op == "MIN":
                value = float(np.min(col))
            else:
                value = float(np.ptp(col))
            out.append(format_reading(value))
        return ",".join(out)

    def _reg_query(self, attr: str) -> Handler:
        """Query of the enable register held in attribute ``attr``."""

        def query(call: Call) -> str:
            return str(getattr(self, attr))

        return query

    def _reg_setter(self, attr: str) -> Any:
        def handler(call: Call) -> None:
            call.expect(1)
            setattr(
                self,
                attr,
                int(round(parse_number(call.params[0], name=call.header, lo=0, hi=65535))),
            )

        return handler

    def _status_preset(self, call: Call) -> None:
        call.expect(0)
        self.meas_enable = self.oper_enable = self.ques_enable = 0

    def _meas_condition(self) -> int:
        cond = 0
        if self.tripped["CURR"] or self.tripped["VOLT"]:
            cond |= ME_COMPLIANCE
        if self.trace:
            cond |= ME_BAV
        if len(self.trace) >= self.s["trac.poin"]:
            cond |= ME_BFL
        return cond

    def _meas_event_query(self, call: Call) -> str:
        call.expect(0)
        value, self.meas_event = self.meas_event, 0
        return str(value)

    # ------------------------------------------------------------------------------
    # Acquisition
    # ------------------------------------------------------------------------------
    def _source(self, level: float) -> tuple[float, float, int]:
        """Apply ``level`` of the source function; return (volts, amps, compliance bits)."""
        s = self.settings
        func = s["sour.func"]
        if func == "VOLT":
            limit = s["sens.CURR.prot"]
            bits = SW_COMPLIANCE
            if not s["sens.CURR.rang.auto"] and s["sens.CURR.rang"] < abs(limit):
                limit, bits = s["sens.CURR.rang"], SW_RANGE_COMPLIANCE
            r = self.bench.source(self.terminal, level, abs(limit), nplc=self._integration_plc())
            self.tripped["CURR"] = r.in_compliance
            return r.volts, r.amps, bits if r.in_compliance else 0
        limit = s["sens.VOLT.prot"]
        bits = SW_COMPLIANCE
        if not s["sens.VOLT.rang.auto"] and s["sens.VOLT.rang"] < abs(limit):
            limit, bits = s["sens.VOLT.rang"], SW_RANGE_COMPLIANCE
        r = self.bench.source_current(self.terminal, level, limit, nplc=self._integration_plc())
        self.tripped["VOLT"] = r.in_compliance
        return r.volts, r.amps, bits if r.in_compliance else 0

    def _source_levels(self, n: int) -> list[float]:
        s = self.settings
        func = s["sour.func"]
        mode = s[f"sour.{func}.mode"]
        if mode == "LIST":
            pts = list(s[f"sour.list.{func}"])
        elif mode == "SWE":
            start, stop = s[f"sour.{func}.star"], s[f"sour.{func}.stop"]
            npts = int(s["sour.swe.poin"])
            if s["sour.swe.spac"] == "LOG":
                if start == 0 or stop == 0 or (start > 0) != (stop > 0):
                    raise ScpiError(-221, "log sweep needs start and stop of the same sign, not 0")
                pts = list(np.sign(start) * np.geomspace(abs(start), abs(stop), npts))
            else:
                pts = list(np.linspace(start, stop, npts))
            if s["sour.swe.dir"] == "DOWN":
                pts.reverse()
        else:
            return [self._fixed_level()] * n
        return [float(pts[i % len(pts)]) for i in range(n)]

    def _point_time(self) -> float:
        s = self.settings
        nplc = float(s["sens.nplc"])
        conversions = int(s["sens.aver.coun"]) if s["sens.aver"] else 1
        lfr = float(s["syst.lfr"])
        delay = AUTO_DELAY_S if s["sour.del.auto"] else float(s["sour.del"])
        return delay + float(s["trig.del"]) + conversions * nplc / lfr

    def _status_word(self, compliance_bits: int) -> int:
        s = self.settings
        word = compliance_bits
        funcs = s["sens.func"]
        if s["sens.aver"]:
            word |= SW_FILTER
        if s["rout.term"] == "FRON":
            word |= SW_FRONT
        if "VOLT" in funcs:
            word |= SW_V_MEAS
        if "CURR" in funcs:
            word |= SW_I_MEAS
        if "RES" in funcs:
            word |= SW_R_MEAS
            if s["sens.res.mode"] == "AUTO":
                word |= SW_AUTO_OHMS
        word |= SW_V_SOUR if s["sour.func"] == "VOLT" else SW_I_SOUR
        if s["syst.rsen"]:
            word |= SW_REMOTE_SENSE
        return word

    def _reading(self, level: float, volts: float, amps: float, comp_bits: int) -> list[float]:
        s = self.settings
        funcs = s["sens.func"]
        src = s["sour.func"]
        # Source read-back: the sourced quantity reports what the terminal really delivers,
        # so a clamped (compliance) voltage reads as the clamped value.
        v_field = volts if ("VOLT" in funcs or src == "VOLT") else NAN_READING
        i_field = amps if ("CURR" in funcs or src == "CURR") else NAN_READING
        word = self._status_word(comp_bits)
        if "RES" in funcs:
            r_field = volts / amps if amps != 0 else OVERFLOW_READING
            if abs(r_field) > OVERFLOW_READING:
                r_field = OVERFLOW_READING
        else:
            r_field = NAN_READING
        if i_field != NAN_READING:
            i_field = self._current_reading(amps, comp_bits)
            if i_field == OVERFLOW_READING:
                word |= SW_OFLO
        # Voltage: auto-range follows the reading; a fixed range too small for it overflows.
        if "VOLT" in funcs:
            if s["sens.VOLT.rang.auto"]:
                s["sens.VOLT.rang"] = _pick_range(
                    VOLT_RANGES, min(abs(volts), VOLT_RANGES[-1]), "VOLT"
                )
            elif abs(volts) > s["sens.VOLT.rang"] * (1 + 1e-6) and not comp_bits:
                word |= SW_OFLO
                v_field = OVERFLOW_READING
        t = self.clock.now() - self._time_origin
        return [v_field, i_field, r_field, t, float(word)]

    def _integration_plc(self) -> float:
        """Integration time of one reading (PLC): NPLC times the repeat filter's count."""
        s = self.settings
        count = int(s["sens.aver.coun"]) if s["sens.aver"] else 1
        return float(s["sens.nplc"]) * count

    def _current_reading(self, amps: float, comp_bits: int) -> float:
        """The current (A) the 2400 reports for ``amps`` on its present range.

        Sourcing current, the measure range is the source range; otherwise auto-range
        settles on the lowest range that holds the reading (``:SENS:CURR:RANG?`` then
        answers it) or the fixed range applies. The reading carries the range's noise floor
        and resolution (:mod:`.smu_ranges`); in compliance (real or range compliance) it
        stops at the range's full scale, above a fixed range it is an overflow."""
        s = self.settings
        if s["sour.func"] == "CURR":
            rng = KEITHLEY_2400.fixed(s["sour.CURR.rang"] / RANGE_OVER)
        elif s["sens.CURR.rang.auto"]:
            rng = KEITHLEY_2400.auto(amps)
            s["sens.CURR.rang"] = rng.max_reading_a
        else:
            rng = KEITHLEY_2400.fixed(s["sens.CURR.rang"] / RANGE_OVER)
        if comp_bits:
            amps = float(np.clip(amps, -rng.max_reading_a, rng.max_reading_a))
        value = KEITHLEY_2400.read(amps, rng, self._integration_plc(), self.noise)
        if value is None:
            if not comp_bits:
                return OVERFLOW_READING
            value = math.copysign(rng.max_reading_a, amps)
        return value

    def _acquire(self) -> bool:
        """Run the trigger model once: arm count x trigger count source-measure points.

        Returns False (and queues +803) when the output is off and auto output-off is
        disabled."""
        s = self.settings
        auto_clear = bool(s["sour.cle.auto"])
        if not s["outp"] and not auto_clear:
            raise ScpiError(803, "turn the output on (:OUTP ON) before :READ? or :INIT",
                            message="Not permitted with OUTPUT off")  # fmt: skip
        arm, trig = int(s["arm.coun"]), int(s["trig.coun"])
        levels = self._source_levels(arm * trig)
        readings: list[list[float]] = []
        point_time = self._point_time()
        for a in range(arm):
            arm_start = self.clock.now()
            for k in range(trig):
                level = levels[a * trig + k]
                volts, amps, comp = self._source(level)
                self.bench.hold(point_time)
                readings.append(self._reading(level, volts, amps, comp))
                if comp:
                    self.meas_event |= ME_COMPLIANCE
                if auto_clear:
                    self.bench.set_terminal(self.terminal, None)
            if s["arm.sour"] == "TIM" and a + 1 < arm:
                wait = float(s["arm.tim"]) - (self.clock.now() - arm_start)
                if wait > 0:
                    if s["outp"] and not auto_clear:
                        self.bench.hold(wait)
                    else:
                        self.clock.sleep(wait)
        # After a sweep the source returns to its bias (fixed) level.
        if auto_clear:
            s["outp"] = False
            self.bench.set_terminal(self.terminal, None)
        elif s[f"sour.{s['sour.func']}.mode"] != "FIX":
            self._apply_output()
        self._last = readings
        self.meas_event |= ME_RAV
        self._store(readings)
        return True

    def _store(self, readings: list[list[float]]) -> None:
        if not self._storage_active() or self.s["trac.feed"] == "NONE":
            return
        room = int(self.s["trac.poin"]) - len(self.trace)
        self.trace.extend(readings[: max(room, 0)])
        if self.trace:
            self.meas_event |= ME_BAV
        if len(self.trace) >= int(self.s["trac.poin"]):
            self.s["trac.feed.cont"] = "NEV"
            self.meas_event |= ME_BFL

    def _format_readings(self, readings: list[list[float]]) -> str:
        idx = [ELEMENTS.index(e) for e in self.s["form.elem"]]
        return ",".join(format_reading(r[i]) for r in readings for i in idx)

    def _init(self, call: Call) -> None:
        call.expect(0)
        if self.s["arm.sour"] == "BUS":
            self._armed = True
            return
        self._acquire()

    def _abort(self, call: Call) -> None:
        call.expect(0)
        self._armed = False

    def _read(self, call: Call) -> str | None:
        call.expect(0)
        self._armed = False
        if self.s["arm.sour"] == "BUS":
            self._armed = True  # waits for *TRG; the host sees no reply until then
            return None
        self._acquire()
        return self._format_readings(self._last)

    def _fetch(self, call: Call) -> str:
        call.expect(0)
        if not self._last:
            raise ScpiError(-230, ":FETC? before any reading (:INIT or :READ?)")
        return self._format_readings(self._last)

    def _configure(self, call: Call, f: str) -> None:
        call.expect(0)
        if f in ("CURR", "VOLT"):
            self.s[f"sens.{f}.prot"] = self.defaults[f"sens.{f}.prot"]
        self.s[f"sens.{f}.rang"] = self.defaults[f"sens.{f}.rang"]
        self.s[f"sens.{f}.rang.auto"] = True
        self.s["arm.sour"] = "IMM"
        self.s["trig.sour"] = "IMM"
        on = set(self.s["sens.func"]) | {f} if self.s["sens.func.conc"] else {f}
        self.s["sens.func"] = [g for g in FUNCTIONS if g in on]
        if not self.s["sour.cle.auto"]:
            self.s["outp"] = True
            self._apply_output()

    def _configure_setter(self, f: str) -> Handler:
        """``:CONFigure:<f>`` handler (see :meth:`_configure`)."""

        def handler(call: Call) -> None:
            self._configure(call, f)

        return handler

    def _measure_query(self, f: str | None) -> Handler:
        """``:MEASure:<f>?`` handler (see :meth:`_measure`)."""

        def query(call: Call) -> str | None:
            return self._measure(call, f)

        return query

    def _measure(self, call: Call, f: str | None) -> str | None:
        call.expect(0)
        if f is not None:
            self._configure(call, f)
        elif not self.s["sour.cle.auto"]:
            self.s["outp"] = True
            self._apply_output()
        return self._read(call)


__all__ = ["Keithley2400Emulator"]
