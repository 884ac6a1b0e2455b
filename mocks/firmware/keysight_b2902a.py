"""Keysight B2902A two-channel source/measure unit firmware emulator (SCPI).

Channel 1 drives bench terminal ``"A"``, channel 2 terminal ``"B"``. The channel is the
numeric suffix of the subsystem (``:SOUR2:VOLT 1``, ``:SENS2:CURR:PROT``, ``:OUTP2``;
none = channel 1) or a channel list parameter (``:MEAS:CURR? (@1,2)``, ``:INIT (@1:2)``,
``:OUTP ON,(@1,2)``). ``[:SOURce]`` and ``[:SENSe]`` are default nodes (``:VOLT 0.2``).

Commands (B2900 SCPI Command Reference):

- Source: ``:SOUR[n]:FUNC:MODE VOLT|CURR``, ``:SOUR[n]:FUNC:SHAP DC|PULS``,
  ``:SOUR[n]:VOLT|CURR[:LEV][:IMM][:AMPL]`` (immediate level; pulse base),
  ``:SOUR[n]:VOLT|CURR[:LEV]:TRIG[:AMPL]`` (triggered level; pulse peak. Until it is set
  explicitly it follows the immediate level), ``:MODE FIX|SWE|LIST``, ``:RANG[:AUTO]``,
  ``:STAR :STOP :STEP :CENT :SPAN :POIN``, ``:SOUR[n]:SWE:POIN|DIR|SPAC|STA|RANG``,
  ``:SOUR[n]:LIST:VOLT|CURR v1,...`` (``:POIN?``, ``:APP``), ``:SOUR[n]:PULS:WIDT``
  (50 us to 2 s, 1 us resolution) and ``:PULS:DEL`` (0 to 99999.9 s). Sourcing current
  is the bench's (:meth:`~nvmlab.mocks.world.Bench.source_current`): the voltage that
  drives it, under the voltage compliance.
- Sense: ``:SENS[n]:FUNC[:ON] "VOLT","CURR","RES"``, ``:FUNC:OFF``, ``:FUNC:ALL``,
  ``:FUNC:OFF:ALL``, ``:SENS[n]:CURR|VOLT[:DC]:PROT[:LEV][:BOTH]`` (compliance; after
  ``*RST`` 100 uA / 2 V), ``:PROT:TRIP?``, ``:NPLC`` / ``:APER`` (linked through the line
  frequency; after ``*RST`` 0.1 PLC), ``:RANG[:UPP]``, ``:RANG:AUTO``.
- Output: ``:OUTP[n][:STAT] ON|OFF[,(@list)]``, ``:OUTP[n]:ON:AUTO`` (default ON: a
  measurement or an :INIT turns the output on), ``:OUTP[n]:OFF:AUTO`` (default OFF).
- Measure: ``:MEAS[:VOLT|CURR|RES]? [(@list)]`` (a spot measurement at the immediate
  level, one value per channel, or every :FORM:ELEM:SENS field per channel),
  ``:INIT[:IMM][:ALL|:ACQ|:TRAN] [(@list)]``, ``:FETC:ARR[:VOLT|CURR|RES|TIME|STAT|SOUR]?
  [(@list)]``, ``:FETC[:SCAL][:<elem>]?``, ``:READ:ARR[:<elem>]?``, ``:READ[:SCAL]?``.
  With two channels the values come point by point, channel 1 then channel 2.
- Trigger: ``:TRIG[n][:ALL|:ACQ|:TRAN]:COUN`` (1 to 100000), ``:SOUR AINT|BUS|TIM|...``,
  ``:TIM`` (period, s), ``:DEL``; ``:ARM[n]...:COUN``. With ``BUS`` the :INIT waits and each
  ``*TRG`` runs one point of every armed channel. With ``TIM`` points start one period
  apart (the bias is held in between).
- Data: ``:FORM:ELEM:SENS VOLT,CURR,RES,TIME,STAT,SOUR`` (fixed order; default all six;
  a function that is not measured reads +9.91e37), ``:FORM[:DATA] ASCii``; trace buffer
  ``:TRAC[n]:POIN`` (up to 100,000 per channel), ``:TRAC[n]:FEED SENS``,
  ``:TRAC[n]:FEED:CONT NEXT|NEV``, ``:TRAC[n]:DATA?``, ``:TRAC[n]:CLE``,
  ``:TRAC[n]:POIN:ACT?``.
- Current readings: ranges 100 nA to 3 A (no 10 nA range on the B2901A / B2902A),
  auto-range or the fixed ``:SENS:CURR:RANG`` (rounded up to a range), each range's
  resolution and noise floor at the channel's NPLC (:mod:`.smu_ranges`); above a fixed
  range a reading is +9.9E+37. The NPLC also reaches the chip's read noise.
- Status field of a reading (emulator convention, not from the manual): bit 3 is set when
  the point was in compliance.

Timing: a DC point holds its level for the aperture time (``nplc / line frequency``)
plus the trigger delay; a pulse point holds the base for the pulse delay, then the peak for
the pulse width (the reading is taken at the peak), then returns to the base. Time passes
on the bench (``bench.hold``), so pulses really stress the devices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
    is_channel_list,
    parse_bool,
    parse_channel_list,
    parse_choice,
    parse_number,
    split_top_level,
    unquote,
)
from nvmlab.mocks.firmware.smu_ranges import KEYSIGHT_B2902A

CHANNELS = (1, 2)
TERMINAL = {1: "A", 2: "B"}
ELEMENTS = ("VOLT", "CURR", "RES", "TIME", "STAT", "SOUR")
FUNCTIONS = ("VOLT", "CURR", "RES")
LIMITS = {"VOLT": 210.0, "CURR": 3.03}
MAX_POINTS = 100_000
STAT_COMPLIANCE = 1 << 3
MIN_PULSE_WIDTH_S = 50e-6


def _channel_key(node: str, name: str) -> Callable[[Call], str]:
    """Settings key ``c<channel>.<name>``, the channel being the suffix given to ``node``."""

    def key(call: Call) -> str:
        return f"c{call.suffix(node)}.{name}"

    return key


class KeysightB2902AEmulator(ScpiInstrument):
    """Keysight B2902A; channel 1 on terminal ``"A"``, channel 2 on ``"B"``."""

    model = "keysight_b2902a"
    error_queue_size = 30
    error_code_format = "{code:+d}"
    accept_units = True

    def __init__(
        self,
        bench: Any,
        *,
        query_latency_s: float = 0.0,
        line_frequency_hz: float = 50.0,
        serial: str = "MY51141234",
        firmware: str = "3.4.2011.5100",
        noise_seed: int = 0,
    ) -> None:
        self.bench = bench
        #: The instrument's own reading noise (:mod:`.smu_ranges`), seeded for repeatability.
        self.noise = np.random.default_rng(noise_seed)
        self.line_frequency_hz = line_frequency(line_frequency_hz)
        self.identity = f"Keysight Technologies,B2902A,{serial},{firmware}"
        self._time_origin = bench.clock.now()
        self.results: dict[int, list[list[float]]] = {c: [] for c in CHANNELS}
        self.trace: dict[int, list[list[float]]] = {c: [] for c in CHANNELS}
        self.tripped: dict[int, bool] = {c: False for c in CHANNELS}
        self._armed: dict[int, int] = {}  # channel -> points already done while waiting for BUS
        super().__init__(bench.clock, query_latency_s=query_latency_s)
        self.settings["syst.lfr"] = self.line_frequency_hz

    @property
    def s(self) -> dict[str, Any]:
        return self.settings

    def format_setting(self, value: float) -> str:
        return f"{value:+.6E}"

    def reset(self) -> None:
        lfr = self.settings.get("syst.lfr", self.line_frequency_hz)
        super().reset()
        self.settings["syst.lfr"] = lfr
        self._armed = {}
        self.tripped = {c: False for c in CHANNELS}
        for c in CHANNELS:
            self.bench.set_terminal(TERMINAL[c], None)

    def bus_trigger(self) -> None:
        if self._armed:
            self._run_points(sorted(self._armed), single_step=True)

    # ------------------------------------------------------------------------------
    # Tree
    # ------------------------------------------------------------------------------
    def build_tree(self) -> None:
        t = self.tree
        d = self.defaults
        for c in CHANNELS:
            d.update(
                {
                    f"c{c}.func": "VOLT",
                    f"c{c}.shap": "DC",
                    f"c{c}.VOLT.lev": 0.0,
                    f"c{c}.CURR.lev": 0.0,
                    f"c{c}.VOLT.trig": 0.0,
                    f"c{c}.CURR.trig": 0.0,
                    f"c{c}.VOLT.trig.explicit": False,
                    f"c{c}.CURR.trig.explicit": False,
                    f"c{c}.list.VOLT": [0.0],
                    f"c{c}.list.CURR": [0.0],
                    f"c{c}.sens.func": ["VOLT", "CURR"],
                    f"c{c}.nplc": 0.1,
                }
            )
        d["form.elem"] = list(ELEMENTS)

        src, sens = "[:SOURce#2]", "[:SENSe#2]"
        # -- source ------------------------------------------------------------------
        self.add_choice(f"{src}:FUNCtion:MODE", lambda c: f"c{c.suffix('SOUR')}.func",
                        ("VOLTage", "CURRent"), "VOLT", on_change=self._reapply)  # fmt: skip
        self.add_choice(f"{src}:FUNCtion:SHAPe", lambda c: f"c{c.suffix('SOUR')}.shap",
                        ("DC", "PULSe"), "DC", on_change=self._reapply)  # fmt: skip
        for c in CHANNELS:
            d[f"c{c}.shap"] = "DC"
        for f, long, unit in (("VOLT", "VOLTage", "V"), ("CURR", "CURRent", "A")):
            lim = LIMITS[f]
            t.add(f"{src}:{long}[:LEVel][:IMMediate][:AMPLitude]", self._level_setter(f, False, unit),
                  self._level_query(f, False))  # fmt: skip
            t.add(f"{src}:{long}[:LEVel]:TRIGgered[:AMPLitude]", self._level_setter(f, True, unit),
                  self._level_query(f, True))  # fmt: skip
            self.add_choice(f"{src}:{long}:MODE", _channel_key("SOUR", f"{f}.mode"),
                            ("FIXed", "SWEep", "LIST"), "FIX")  # fmt: skip
            self.add_number(f"{src}:{long}:RANGe", _channel_key("SOUR", f"{f}.rang"),
                            lim, -lim, lim, units=(unit,))  # fmt: skip
            self.add_bool(f"{src}:{long}:RANGe:AUTO", _channel_key("SOUR", f"{f}.rang.auto"),
                          True)  # fmt: skip
            for node in ("STARt", "STOP"):
                key = node[:4].lower()
                self.add_number(f"{src}:{long}:{node}", _channel_key("SOUR", f"{f}.{key}"),
                                0.0, -lim, lim, units=(unit,))  # fmt: skip
            t.add(f"{src}:{long}:STEP", self._step_setter(f, unit), self._step_query(f))
            t.add(f"{src}:{long}:CENTer", self._center_setter(f, unit), self._center_query(f))
            t.add(f"{src}:{long}:SPAN", self._span_setter(f, unit), self._span_query(f))
            t.add(f"{src}:{long}:POINts", self._points_setter, self._points_query)
            t.add(
                f"{src}:LIST:{long}", self._list_setter(f, unit, append=False), self._list_query(f)
            )
            t.add(f"{src}:LIST:{long}:APPend", self._list_setter(f, unit, append=True), None)
            t.add(f"{src}:LIST:{long}:POINts", None, self._list_points_query(f))
        t.add(f"{src}:SWEep:POINts", self._points_setter, self._points_query)
        self.add_choice(
            f"{src}:SWEep:DIRection", lambda c: f"c{c.suffix('SOUR')}.swe.dir", ("UP", "DOWN"), "UP"
        )
        self.add_choice(f"{src}:SWEep:SPACing", lambda c: f"c{c.suffix('SOUR')}.swe.spac",
                        ("LINear", "LOGarithmic"), "LIN")  # fmt: skip
        self.add_choice(f"{src}:SWEep:STAir", lambda c: f"c{c.suffix('SOUR')}.swe.sta",
                        ("SINGle", "DOUBle"), "SING")  # fmt: skip
        self.add_choice(f"{src}:SWEep:RANGing", lambda c: f"c{c.suffix('SOUR')}.swe.rang",
                        ("BEST", "AUTO", "FIXed"), "BEST")  # fmt: skip
        t.add(f"{src}:PULSe:WIDTh", self._pulse_width_setter,
              lambda c: self.format_setting(self._cs(c, "SOUR", "puls.widt")))  # fmt: skip
        self.add_number(f"{src}:PULSe:DELay", lambda c: f"c{c.suffix('SOUR')}.puls.del", 0.0, 0.0, 99999.9,
                        units=("S",))  # fmt: skip
        for c in CHANNELS:
            d[f"c{c}.puls.widt"] = 1e-4
            d[f"c{c}.puls.del"] = 0.0
            for f in ("VOLT", "CURR"):
                d[f"c{c}.{f}.mode"] = "FIX"
                d[f"c{c}.{f}.rang"] = LIMITS[f]
                d[f"c{c}.{f}.rang.auto"] = True
                d[f"c{c}.{f}.star"] = 0.0
                d[f"c{c}.{f}.stop"] = 0.0
            d[f"c{c}.swe.poin"] = 1
            d[f"c{c}.swe.dir"] = "UP"
            d[f"c{c}.swe.spac"] = "LIN"
        # -- sense -------------------------------------------------------------------
        t.add(f"{sens}:FUNCtion[:ON]", self._func_on, self._func_query)
        t.add(f"{sens}:FUNCtion:OFF", self._func_off, self._func_off_query)
        t.add(f"{sens}:FUNCtion[:ON]:ALL", self._func_all, None)
        t.add(f"{sens}:FUNCtion:OFF:ALL", self._func_off_all, None)
        t.add(f"{sens}:FUNCtion:STATe", None, self._func_state)
        for f, long, unit, default in (
            ("CURR", "CURRent", "A", 1e-4),
            ("VOLT", "VOLTage", "V", 2.0),
        ):
            lim = LIMITS[f]
            for c in CHANNELS:
                d[f"c{c}.{f}.prot"] = default
                d[f"c{c}.sens.{f}.rang"] = lim
                d[f"c{c}.sens.{f}.rang.auto"] = True
            self.add_number(f"{sens}:{long}[:DC]:PROTection[:LEVel][:BOTH]",
                            _channel_key("SENS", f"{f}.prot"), default, -lim, lim,
                            units=(unit,), on_change=self._reapply)  # fmt: skip
            t.add(f"{sens}:{long}[:DC]:PROTection:TRIPped", None,
                  lambda c: "1" if self.tripped[c.suffix("SENS")] else "0")  # fmt: skip
            self.add_number(f"{sens}:{long}[:DC]:NPLCycles", lambda c: f"c{c.suffix('SENS')}.nplc",
                            0.1, 4e-4, 120.0, check=self._check_nplc)  # fmt: skip
            t.add(f"{sens}:{long}[:DC]:APERture", self._aperture_setter, self._aperture_query)
            self.add_bool(
                f"{sens}:{long}[:DC]:NPLCycles:AUTO",
                lambda c: f"c{c.suffix('SENS')}.nplc.auto",
                False,
            )
            self.add_bool(
                f"{sens}:{long}[:DC]:APERture:AUTO",
                lambda c: f"c{c.suffix('SENS')}.nplc.auto",
                False,
            )
            self.add_number(f"{sens}:{long}[:DC]:RANGe[:UPPer]", _channel_key("SENS", f"sens.{f}.rang"),
                            lim, -lim, lim, units=(unit,),
                            on_change=self._sense_range_fixed(f))  # fmt: skip
            self.add_bool(f"{sens}:{long}[:DC]:RANGe:AUTO",
                          _channel_key("SENS", f"sens.{f}.rang.auto"), True)  # fmt: skip
        self.add_number(f"{sens}:RESistance:NPLCycles", lambda c: f"c{c.suffix('SENS')}.nplc", 0.1, 4e-4, 120.0,
                        check=self._check_nplc)  # fmt: skip
        # -- output ----------------------------------------------------------------------
        t.add(":OUTPut#2[:STATe]", self._output_setter, self._output_query)
        self.add_bool(":OUTPut#2:ON:AUTO", lambda c: f"c{c.suffix('OUTP')}.on.auto", True)
        self.add_bool(":OUTPut#2:OFF:AUTO", lambda c: f"c{c.suffix('OUTP')}.off.auto", False)
        self.add_bool(":OUTPut#2:PROTection[:STATe]", lambda c: f"c{c.suffix('OUTP')}.prot", False)
        self.add_choice(
            ":OUTPut#2:LOW", lambda c: f"c{c.suffix('OUTP')}.low", ("FLOat", "GROund"), "GRO"
        )
        self.add_bool(
            ":OUTPut#2:HCAPacitance[:STATe]", lambda c: f"c{c.suffix('OUTP')}.hcap", False
        )
        self.add_bool(
            ":OUTPut#2:FILTer[:LPASs][:STATe]", lambda c: f"c{c.suffix('OUTP')}.filt", True
        )
        for c in CHANNELS:
            d[f"c{c}.outp"] = False
            d[f"c{c}.on.auto"] = True
            d[f"c{c}.off.auto"] = False
            d[f"c{c}.nplc.auto"] = False
        # -- measure, init, fetch ----------------------------------------------------------
        elems = (("", None), (":VOLTage", "VOLT"), (":CURRent", "CURR"), (":RESistance", "RES"))
        for node, elem in elems:
            t.add(f":MEASure[:SCALar]{node}[:DC]" if elem in ("VOLT", "CURR") else f":MEASure[:SCALar]{node}",
                  None, self._measure_query(elem))  # fmt: skip
        all_elems = (*elems, (":TIME", "TIME"), (":STATus", "STAT"), (":SOURce", "SOUR"))
        for node, elem in all_elems:
            t.add(f":FETCh:ARRay{node}", None, self._fetch_query(elem, array=True))
            t.add(f":FETCh[:SCALar]{node}", None, self._fetch_query(elem, array=False))
            t.add(f":READ:ARRay{node}", None, self._read_query(elem, array=True))
            t.add(f":READ[:SCALar]{node}", None, self._read_query(elem, array=False))
        for node in ("[:ALL]", ":ACQuire", ":TRANsient"):
            t.add(f":INITiate[:IMMediate]{node}", self._init, None)
            t.add(f":ABORt{node}", self._abort, None)
            self.add_number(f":TRIGger#2{node}:COUNt", lambda c: f"c{c.suffix('TRIG')}.trig.coun", 1, 1,
                            MAX_POINTS, integer=True)  # fmt: skip
            self.add_choice(f":TRIGger#2{node}:SOURce", lambda c: f"c{c.suffix('TRIG')}.trig.sour",
                            ("AINT", "BUS", "TIMer", "INT1", "INT2", "LAN", "EXT1", "EXT2", "EXT3",
                             "EXT4", "EXT5", "EXT6", "EXT7", "EXT8", "EXT9", "EXT10", "EXT11", "EXT12",
                             "EXT13", "EXT14"), "AINT")  # fmt: skip
            self.add_number(f":TRIGger#2{node}:TIMer", lambda c: f"c{c.suffix('TRIG')}.trig.tim", 1e-4, 1e-5,
                            1e5, units=("S",))  # fmt: skip
            self.add_number(f":TRIGger#2{node}:DELay", lambda c: f"c{c.suffix('TRIG')}.trig.del", 0.0, 0.0, 100.0,
                            units=("S",))  # fmt: skip
            self.add_number(f":ARM#2{node}:COUNt", lambda c: f"c{c.suffix('ARM')}.arm.coun", 1, 1, MAX_POINTS,
                            integer=True)  # fmt: skip
            self.add_choice(f":ARM#2{node}:SOURce", lambda c: f"c{c.suffix('ARM')}.arm.sour",
                            ("AINT", "BUS", "TIMer", "INT1", "INT2", "LAN"), "AINT")  # fmt: skip
            self.add_number(f":ARM#2{node}:DELay", lambda c: f"c{c.suffix('ARM')}.arm.del", 0.0, 0.0, 100.0,
                            units=("S",))  # fmt: skip
        for c in CHANNELS:
            d[f"c{c}.trig.coun"] = 1
            d[f"c{c}.trig.sour"] = "AINT"
            d[f"c{c}.trig.tim"] = 1e-4
            d[f"c{c}.trig.del"] = 0.0
            d[f"c{c}.arm.coun"] = 1
            d[f"c{c}.trac.poin"] = MAX_POINTS
            d[f"c{c}.trac.feed"] = "SENS"
            d[f"c{c}.trac.cont"] = "NEV"
        # -- format, trace ---------------------------------------------------------------
        t.add(
            ":FORMat:ELEMents:SENSe", self._elements_setter, lambda c: ",".join(self.s["form.elem"])
        )
        t.add(":FORMat[:DATA]", self._format_data_setter, lambda c: "ASC")
        self.add_choice(":FORMat:BORDer", "form.bord", ("NORMal", "SWAPped"), "NORM")
        self.add_number(":TRACe#2:POINts", lambda c: f"c{c.suffix('TRAC')}.trac.poin", MAX_POINTS, 1, MAX_POINTS,
                        integer=True, check=self._storage_guard)  # fmt: skip
        t.add(":TRACe#2:POINts:ACTual", None, lambda c: str(len(self.trace[c.suffix("TRAC")])))
        t.add(":TRACe#2:FREE", None, lambda c: f"{MAX_POINTS - len(self.trace[c.suffix('TRAC')])},"
                                              f"{len(self.trace[c.suffix('TRAC')])}")  # fmt: skip
        self.add_choice(":TRACe#2:FEED", lambda c: f"c{c.suffix('TRAC')}.trac.feed", ("SENSe", "MATH", "LIMit"),
                        "SENS", check=self._storage_guard)  # fmt: skip
        self.add_choice(":TRACe#2:FEED:CONTrol", lambda c: f"c{c.suffix('TRAC')}.trac.cont", ("NEXT", "NEVer"),
                        "NEV")  # fmt: skip
        t.add(":TRACe#2:CLEar", self._trace_clear, None)
        t.add(":TRACe#2:DATA", None, self._trace_data)
        # -- system ----------------------------------------------------------------------
        self.add_number(
            ":SYSTem:LFRequency", "syst.lfr", 50, 50, 60, integer=True, check=self._check_lfr
        )
        self.add_bool(":SYSTem:BEEPer:STATe", "syst.beep", True)
        self.add_accepted(":SYSTem:BEEPer[:IMMediate]", n_max=2)
        self.add_bool(":DISPlay:ENABle", "disp.enab", True)
        self.add_choice(
            ":DISPlay:VIEW", "disp.view", ("SINGle1", "SINGle2", "DUAL", "GRAPh", "ROLL"), "DUAL"
        )
        t.add(":SYSTem:TIME:TIMer:COUNt:RESet[:AUTO]", self._time_reset, None)
        t.add(
            ":SYSTem:TIME:TIMer:COUNt",
            None,
            lambda c: format_reading(self.clock.now() - self._time_origin),
        )
        t.add(":SYSTem:PRESet", lambda c: self.reset(), None)
        self.add_bool(":SYSTem:GROup[:DEFine]", "syst.grou", False)
        t.add(":STATus:PRESet", lambda c: c.expect(0), None)
        for reg in ("OPERation", "QUEStionable"):
            t.add(f":STATus:{reg}[:EVENt]", None, lambda c: "+0")
            t.add(f":STATus:{reg}:CONDition", None, lambda c: "+0")
            self.add_number(
                f":STATus:{reg}:ENABle", f"stat.{reg.lower()}", 0, 0, 65535, integer=True
            )

    # ------------------------------------------------------------------------------
    # Helpers
    # ------------------------------------------------------------------------------
    def _cs(self, call: Call, node: str, name: str) -> Any:
        return self.s[f"c{call.suffix(node)}.{name}"]

    def _channels(
        self, call: Call, index: int = 0, *, default_node: str | None = None
    ) -> list[int]:
        """Channel list parameter at ``index`` if present, else the node suffix (default 1)."""
        if len(call.params) > index and is_channel_list(call.params[index]):
            return parse_channel_list(call.params[index], channels=len(CHANNELS))
        return [call.suffix(default_node)] if default_node else [1]

    def _check_lfr(self, call: Call, value: float) -> None:
        if int(value) not in (50, 60):
            raise ScpiError(-224, f"{call.header} {value:g}; allowed 50 or 60")

    def _check_nplc(self, call: Call, value: float) -> None:
        lfr = float(self.s["syst.lfr"])
        lo, hi = 8e-6 * lfr, 2.0 * lfr
        if not lo * (1 - 1e-9) <= value <= hi * (1 + 1e-9):
            raise ScpiError(
                -222, f"{call.header} {value:g}; allowed {lo:g} to {hi:g} PLC at {lfr:g} Hz"
            )

    def _aperture_setter(self, call: Call) -> None:
        call.expect(1)
        aper = parse_number(call.params[0], name=call.header, lo=8e-6, hi=2.0, default=0.1 / self.s["syst.lfr"],
                            units=("S",), accept_units=True)  # fmt: skip
        self.s[f"c{call.suffix('SENS')}.nplc"] = aper * float(self.s["syst.lfr"])

    def _aperture_query(self, call: Call) -> str:
        return self.format_setting(self._cs(call, "SENS", "nplc") / float(self.s["syst.lfr"]))

    def _storage_guard(self, call: Call, value: Any) -> None:
        if self.s[f"c{call.suffix('TRAC')}.trac.cont"] == "NEXT":
            raise ScpiError(
                -221, f"{call.header} while the trace buffer is storing (:TRAC:FEED:CONT NEXT)"
            )

    # ------------------------------------------------------------------------------
    # Source handlers
    # ------------------------------------------------------------------------------
    def _sense_range_fixed(self, f: str) -> Callable[[Call, float], None]:
        """``on_change`` of ``:SENS:<f>:RANG``: setting a range turns auto-ranging off."""

        def on_change(call: Call, value: float) -> None:
            self.s[f"c{call.suffix('SENS')}.sens.{f}.rang.auto"] = False

        return on_change

    def _list_points_query(self, f: str) -> Handler:
        """``:SOUR:LIST:<f>:POIN?``: number of points in the channel's ``f`` list."""

        def query(call: Call) -> str:
            return str(len(self._cs(call, "SOUR", f"list.{f}")))

        return query

    def _level_setter(self, f: str, triggered: bool, unit: str) -> Any:
        lim = LIMITS[f]

        def handler(call: Call) -> None:
            call.expect(1)
            c = call.suffix("SOUR")
            value = parse_number(call.params[0], name=call.header, lo=-lim, hi=lim, default=0.0,
                                 units=(unit,), accept_units=True)  # fmt: skip
            if (
                not self.s[f"c{c}.{f}.rang.auto"]
                and abs(value) > self.s[f"c{c}.{f}.rang"] * 1.0000001
            ):
                raise ScpiError(
                    -222,
                    f"{call.header} {value:g} exceeds the fixed range {self.s[f'c{c}.{f}.rang']:g}",
                )
            if triggered:
                self.s[f"c{c}.{f}.trig"] = value
                self.s[f"c{c}.{f}.trig.explicit"] = True
            else:
                self.s[f"c{c}.{f}.lev"] = value
                if not self.s[f"c{c}.{f}.trig.explicit"]:
                    self.s[f"c{c}.{f}.trig"] = value
                if self.s[f"c{c}.outp"] and self.s[f"c{c}.func"] == f:
                    self._apply(c, value)

        return handler

    def _level_query(self, f: str, triggered: bool) -> Any:
        def handler(call: Call) -> str:
            call.expect(0, 1)
            if call.params:
                word = parse_choice(
                    call.params[0], ("MINimum", "MAXimum", "DEFault"), name=call.header
                )
                return self.format_setting({"MIN": -LIMITS[f], "MAX": LIMITS[f], "DEF": 0.0}[word])
            return self.format_setting(
                self._cs(call, "SOUR", f"{f}.{'trig' if triggered else 'lev'}")
            )

        return handler

    def _points_setter(self, call: Call) -> None:
        call.expect(1)
        n = parse_number(call.params[0], name=call.header, lo=0.5, hi=MAX_POINTS + 0.49, default=1,
                         minimum=1, maximum=MAX_POINTS)  # fmt: skip
        self.s[f"c{call.suffix('SOUR')}.swe.poin"] = int(round(n))

    def _points_query(self, call: Call) -> str:
        return str(self._cs(call, "SOUR", "swe.poin"))

    def _span(self, call: Call, f: str) -> tuple[float, float]:
        return self._cs(call, "SOUR", f"{f}.star"), self._cs(call, "SOUR", f"{f}.stop")

    def _step_setter(self, f: str, unit: str) -> Any:
        def handler(call: Call) -> None:
            call.expect(1)
            step = parse_number(call.params[0], name=call.header, lo=-2 * LIMITS[f], hi=2 * LIMITS[f],
                                units=(unit,), accept_units=True)  # fmt: skip
            start, stop = self._span(call, f)
            if step == 0:
                raise ScpiError(-222, f"{call.header} 0: the step must not be zero")
            n = int(math.floor(abs(stop - start) / abs(step) + 1e-9)) + 1
            if n > MAX_POINTS:
                raise ScpiError(
                    -222, f"{call.header} {step:g} gives {n} points; at most {MAX_POINTS}"
                )
            self.s[f"c{call.suffix('SOUR')}.swe.poin"] = n

        return handler

    def _step_query(self, f: str) -> Any:
        def handler(call: Call) -> str:
            start, stop = self._span(call, f)
            n = self._cs(call, "SOUR", "swe.poin")
            return self.format_setting((stop - start) / (n - 1) if n > 1 else 0.0)

        return handler

    def _center_setter(self, f: str, unit: str) -> Any:
        def handler(call: Call) -> None:
            call.expect(1)
            center = parse_number(call.params[0], name=call.header, lo=-LIMITS[f], hi=LIMITS[f],
                                  units=(unit,), accept_units=True)  # fmt: skip
            start, stop = self._span(call, f)
            c = call.suffix("SOUR")
            half = (stop - start) / 2
            self.s[f"c{c}.{f}.star"], self.s[f"c{c}.{f}.stop"] = center - half, center + half

        return handler

    def _center_query(self, f: str) -> Any:
        return lambda call: self.format_setting(sum(self._span(call, f)) / 2)

    def _span_setter(self, f: str, unit: str) -> Any:
        def handler(call: Call) -> None:
            call.expect(1)
            span = parse_number(call.params[0], name=call.header, lo=-2 * LIMITS[f], hi=2 * LIMITS[f],
                                units=(unit,), accept_units=True)  # fmt: skip
            start, stop = self._span(call, f)
            c = call.suffix("SOUR")
            center = (start + stop) / 2
            self.s[f"c{c}.{f}.star"], self.s[f"c{c}.{f}.stop"] = (
                center - span / 2,
                center + span / 2,
            )

        return handler

    def _span_query(self, f: str) -> Any:
        def handler(call: Call) -> str:
            start, stop = self._span(call, f)
            return self.format_setting(stop - start)

        return handler

    def _list_setter(self, f: str, unit: str, *, append: bool) -> Any:
        def handler(call: Call) -> None:
            call.expect(1, MAX_POINTS)
            c = call.suffix("SOUR")
            values = [parse_number(p, name=call.header, lo=-LIMITS[f], hi=LIMITS[f], units=(unit,),
                                   accept_units=True) for p in call.params]  # fmt: skip
            old = list(self.s[f"c{c}.list.{f}"]) if append else []
            if len(old) + len(values) > MAX_POINTS:
                raise ScpiError(-223, f"{call.header}: a list holds at most {MAX_POINTS} points")
            self.s[f"c{c}.list.{f}"] = old + values

        return handler

    def _list_query(self, f: str) -> Any:
        return lambda call: ",".join(format_reading(v) for v in self._cs(call, "SOUR", f"list.{f}"))

    def _pulse_width_setter(self, call: Call) -> None:
        call.expect(1)
        width = parse_number(call.params[0], name=call.header, lo=MIN_PULSE_WIDTH_S, hi=2.0,
                             default=1e-4, units=("S",), accept_units=True)  # fmt: skip
        self.s[f"c{call.suffix('SOUR')}.puls.widt"] = round(width * 1e6) / 1e6  # 1 us resolution

    def _reapply(self, call: Call, value: Any) -> None:
        for node in ("SOUR", "SENS"):
            if node in call.suffixes or node in call.header.upper():
                c = call.suffix(node)
                if self.s[f"c{c}.outp"]:
                    self._apply(c, self._base_level(c))
                return

    # ------------------------------------------------------------------------------
    # Sense handlers
    # ------------------------------------------------------------------------------
    def _parse_functions(self, call: Call) -> list[str]:
        names: list[str] = []
        for p in call.params:
            text = unquote(p) if p.strip()[:1] in "'\"" else p
            for item in split_top_level(text, ","):
                word = item.strip().strip("'\"").upper()
                parts = word.split(":")
                found = None
                for f, long in (("VOLT", "VOLTAGE"), ("CURR", "CURRENT"), ("RES", "RESISTANCE")):
                    if parts[0] in (f, long) and (
                        len(parts) == 1 or (f != "RES" and parts[1:] == ["DC"])
                    ):
                        found = f
                if found is None:
                    raise ScpiError(
                        -224, f'{call.header} {item.strip()[:30]!r}; allowed "VOLT", "CURR", "RES"'
                    )
                names.append(found)
        return names

    def _func_on(self, call: Call) -> None:
        call.expect(1, 3)
        key = f"c{call.suffix('SENS')}.sens.func"
        on = set(self.s[key]) | set(self._parse_functions(call))
        self.s[key] = [f for f in FUNCTIONS if f in on]

    def _func_off(self, call: Call) -> None:
        call.expect(1, 3)
        key = f"c{call.suffix('SENS')}.sens.func"
        off = set(self._parse_functions(call))
        self.s[key] = [f for f in self.s[key] if f not in off]

    def _func_all(self, call: Call) -> None:
        call.expect(0)
        self.s[f"c{call.suffix('SENS')}.sens.func"] = list(FUNCTIONS)

    def _func_off_all(self, call: Call) -> None:
        call.expect(0)
        self.s[f"c{call.suffix('SENS')}.sens.func"] = []

    def _func_query(self, call: Call) -> str:
        call.expect(0)
        return ",".join(f'"{f}"' for f in self._cs(call, "SENS", "sens.func"))

    def _func_off_query(self, call: Call) -> str:
        call.expect(0)
        on = self._cs(call, "SENS", "sens.func")
        return ",".join(f'"{f}"' for f in FUNCTIONS if f not in on)

    def _func_state(self, call: Call) -> str:
        call.expect(1)
        return "1" if self._parse_functions(call)[0] in self._cs(call, "SENS", "sens.func") else "0"

    # ------------------------------------------------------------------------------
    # Output
    # ------------------------------------------------------------------------------
    def _output_setter(self, call: Call) -> None:
        call.expect(1, 2)
        on = parse_bool(call.params[0], name=call.header)
        if len(call.params) == 2 and not is_channel_list(call.params[1]):
            raise ScpiError(
                -104, f"{call.header}: second parameter must be a channel list like (@1,2)"
            )
        for c in self._channels(call, 1, default_node="OUTP"):
            self.s[f"c{c}.outp"] = on
            if on:
                self._apply(c, self._base_level(c))
            else:
                self.bench.set_terminal(TERMINAL[c], None)

    def _output_query(self, call: Call) -> str:
        chans = self._channels(call, 0, default_node="OUTP")
        return ",".join("1" if self.s[f"c{c}.outp"] else "0" for c in chans)

    def _base_level(self, c: int) -> float:
        f = self.s[f"c{c}.func"]
        return float(self.s[f"c{c}.{f}.lev"])

    def _apply(self, c: int, level: float) -> tuple[float, float, bool]:
        """Source ``level`` on channel ``c`` now; returns (volts, amps, in_compliance)."""
        f = self.s[f"c{c}.func"]
        term = TERMINAL[c]
        nplc = float(self.s[f"c{c}.nplc"])
        if f == "VOLT":
            r = self.bench.source(term, level, abs(self.s[f"c{c}.CURR.prot"]), nplc=nplc)
            volts, amps, comp = r.volts, r.amps, r.in_compliance
        else:
            r = self.bench.source_current(term, level, self.s[f"c{c}.VOLT.prot"], nplc=nplc)
            volts, amps, comp = r.volts, r.amps, r.in_compliance
        self.tripped[c] = comp
        return volts, amps, comp

    def _ensure_on(self, chans: list[int], header: str) -> None:
        for c in chans:
            if not self.s[f"c{c}.outp"]:
                if not self.s[f"c{c}.on.auto"]:
                    raise ScpiError(
                        -221, f"{header}: channel {c} output is off and :OUTP{c}:ON:AUTO is OFF"
                    )
                self.s[f"c{c}.outp"] = True
                self._apply(c, self._base_level(c))

    def _auto_off(self, chans: list[int]) -> None:
        for c in chans:
            if self.s[f"c{c}.off.auto"]:
                self.s[f"c{c}.outp"] = False
                self.bench.set_terminal(TERMINAL[c], None)

    # ------------------------------------------------------------------------------
    # Acquisition
    # ------------------------------------------------------------------------------
    def _aperture_s(self, c: int) -> float:
        return float(self.s[f"c{c}.nplc"]) / float(self.s["syst.lfr"])

    def _reading(self, c: int, level: float, volts: float, amps: float, comp: bool) -> list[float]:
        funcs = self.s[f"c{c}.sens.func"]
        v = volts if "VOLT" in funcs else NAN_READING
        i = self._current_reading(c, amps) if "CURR" in funcs else NAN_READING
        r = (volts / amps if amps != 0 else NAN_READING) if "RES" in funcs else NAN_READING
        stat = STAT_COMPLIANCE if comp else 0
        return [v, i, r, self.clock.now() - self._time_origin, float(stat), level]

    def _current_reading(self, c: int, amps: float) -> float:
        """The current (A) channel ``c`` reports for ``amps``: on the range auto-range
        settles on (``:SENS:CURR:RANG?`` then answers it) or the fixed range (the lowest
        holding the value set), with that range's noise floor and resolution
        (:mod:`.smu_ranges`); above a fixed range it reads +9.9E+37 (assumed: an
        overflow, as the SCPI instruments report one)."""
        key = f"c{c}.sens.CURR.rang"
        if self.s[f"{key}.auto"]:
            rng = KEYSIGHT_B2902A.auto(amps)
            self.s[key] = rng.nominal_a
        else:
            top = KEYSIGHT_B2902A.highest.nominal_a
            rng = KEYSIGHT_B2902A.fixed(min(abs(float(self.s[key])), top))
        value = KEYSIGHT_B2902A.read(amps, rng, float(self.s[f"c{c}.nplc"]), self.noise)
        return OVERFLOW_READING if value is None else value

    def _levels(self, c: int, n: int) -> list[float]:
        f = self.s[f"c{c}.func"]
        mode = self.s[f"c{c}.{f}.mode"]
        if mode == "LIST":
            pts = list(self.s[f"c{c}.list.{f}"])
        elif mode == "SWE":
            start, stop = self.s[f"c{c}.{f}.star"], self.s[f"c{c}.{f}.stop"]
            npts = int(self.s[f"c{c}.swe.poin"])
            if self.s[f"c{c}.swe.spac"] == "LOG":
                if start == 0 or stop == 0 or (start > 0) != (stop > 0):
                    raise ScpiError(-221, "log sweep needs start and stop of the same sign, not 0")
                pts = list(np.sign(start) * np.geomspace(abs(start), abs(stop), npts))
            else:
                pts = list(np.linspace(start, stop, npts))
            if self.s[f"c{c}.swe.dir"] == "DOWN":
                pts.reverse()
        else:
            pts = [float(self.s[f"c{c}.{f}.trig"])]
        return [float(pts[k % len(pts)]) for k in range(n)]

    def _count(self, c: int) -> int:
        return int(self.s[f"c{c}.trig.coun"]) * int(self.s[f"c{c}.arm.coun"])

    def _run_points(self, chans: list[int], *, single_step: bool = False) -> None:
        """Run the transient + acquire trigger model on ``chans`` (all points, or one step
        for a bus trigger), point k of every channel at the same time."""
        if not single_step:
            for c in chans:
                self.results[c] = []
        counts = {c: self._count(c) for c in chans}
        levels = {c: self._levels(c, counts[c]) for c in chans}
        steps = max(counts.values())
        start_k = (
            {c: self._armed.get(c, 0) for c in chans} if single_step else {c: 0 for c in chans}
        )
        k_range = (
            range(min(start_k.values()), min(start_k.values()) + 1) if single_step else range(steps)
        )
        for k in k_range:
            active = [c for c in chans if k < counts[c]]
            if not active:
                break
            t0 = self.clock.now()
            pulsed = [c for c in active if self.s[f"c{c}.shap"] == "PULS"]
            delay = max([float(self.s[f"c{c}.trig.del"]) for c in active], default=0.0)
            pulse_delay = max([float(self.s[f"c{c}.puls.del"]) for c in pulsed], default=0.0)
            for c in pulsed:
                self._apply(c, self._base_level(c))
            if delay + pulse_delay > 0:
                self.bench.hold(delay + pulse_delay)
            for c in active:  # voltage terminals at their point level before anything is read
                if self.s[f"c{c}.func"] == "VOLT":
                    self.bench.set_terminal(TERMINAL[c], levels[c][k])
            point = {c: self._apply(c, levels[c][k]) for c in active}
            hold = max(
                float(self.s[f"c{c}.puls.widt"]) if c in pulsed else self._aperture_s(c)
                for c in active
            )
            self.bench.hold(hold)
            for c in active:
                volts, amps, comp = point[c]
                reading = self._reading(c, levels[c][k], volts, amps, comp)
                self.results[c].append(reading)
                self._store(c, reading)
            for c in pulsed:
                self._apply(c, self._base_level(c))
            for c in active:
                f = self.s[f"c{c}.func"]
                if self.s[f"c{c}.shap"] == "DC" and self.s[f"c{c}.{f}.mode"] == "FIX":
                    self.s[f"c{c}.{f}.lev"] = levels[c][k]  # DC output stays at the triggered level
                    if not self.s[f"c{c}.{f}.trig.explicit"]:
                        self.s[f"c{c}.{f}.trig"] = levels[c][k]
            timed = [c for c in active if self.s[f"c{c}.trig.sour"] == "TIM"]
            if timed and k + 1 < steps:
                period = max(float(self.s[f"c{c}.trig.tim"]) for c in timed)
                rest = period - (self.clock.now() - t0)
                if rest > 0:
                    self.bench.hold(rest)
            if single_step:
                for c in chans:
                    self._armed[c] = k + 1
                    if k + 1 >= counts[c]:
                        self._armed.pop(c, None)
        for c in chans:
            f = self.s[f"c{c}.func"]
            if self.s[f"c{c}.{f}.mode"] != "FIX" and self.s[f"c{c}.outp"]:
                self._apply(c, self._base_level(c))
        if not self._armed:
            self._auto_off(chans)

    def _store(self, c: int, reading: list[float]) -> None:
        if self.s[f"c{c}.trac.cont"] != "NEXT" or self.s[f"c{c}.trac.feed"] != "SENS":
            return
        self.trace[c].append(reading)
        if len(self.trace[c]) >= int(self.s[f"c{c}.trac.poin"]):
            self.s[f"c{c}.trac.cont"] = "NEV"

    def _format(
        self, chans: list[int], rows: dict[int, list[list[float]]], elem: str | None
    ) -> str:
        idx = [ELEMENTS.index(elem)] if elem else [ELEMENTS.index(e) for e in self.s["form.elem"]]
        n = max((len(rows[c]) for c in chans), default=0)
        out: list[str] = []
        for k in range(n):
            for c in chans:
                if k < len(rows[c]):
                    out.extend(format_reading(rows[c][k][i]) for i in idx)
        return ",".join(out)

    def _init(self, call: Call) -> None:
        call.expect(0, 1)
        chans = self._channels(call, 0)
        self._ensure_on(chans, call.header)
        bus = [c for c in chans if self.s[f"c{c}.trig.sour"] == "BUS"]
        if bus:
            for c in bus:
                self.results[c] = []
                self._armed[c] = 0
            chans = [c for c in chans if c not in bus]
        if chans:
            self._run_points(chans)

    def _abort(self, call: Call) -> None:
        call.expect(0, 1)
        for c in self._channels(call, 0):
            self._armed.pop(c, None)

    def _fetch_query(self, elem: str | None, *, array: bool) -> Handler:
        """``:FETCh[:ARRay|:SCALar]<elem>?`` handler (see :meth:`_fetch`)."""

        def query(call: Call) -> str:
            return self._fetch(call, elem, array=array)

        return query

    def _read_query(self, elem: str | None, *, array: bool) -> Handler:
        """``:READ[:ARRay|:SCALar]<elem>?`` handler (see :meth:`_read`)."""

        def query(call: Call) -> str:
            return self._read(call, elem, array=array)

        return query

    def _measure_query(self, elem: str | None) -> Handler:
        """``:MEASure<elem>?`` handler (see :meth:`_measure`)."""

        def query(call: Call) -> str:
            return self._measure(call, elem)

        return query

    def _fetch(self, call: Call, elem: str | None, *, array: bool) -> str:
        call.expect(0, 1)
        chans = self._channels(call, 0)
        for c in chans:
            if not self.results[c]:
                raise ScpiError(-230, f"{call.header}? channel {c} has no data (send :INIT first)")
        rows = {c: (self.results[c] if array else self.results[c][-1:]) for c in chans}
        return self._format(chans, rows, elem)

    def _read(self, call: Call, elem: str | None, *, array: bool) -> str:
        call.expect(0, 1)
        chans = self._channels(call, 0)
        self._ensure_on(chans, call.header)
        self._run_points(chans)
        return self._fetch(call, elem, array=array)

    def _measure(self, call: Call, elem: str | None) -> str:
        """Spot measurement at the immediate level of each listed channel."""
        call.expect(0, 1)
        chans = self._channels(call, 0)
        if elem in ("VOLT", "CURR", "RES"):
            for c in chans:
                key = f"c{c}.sens.func"
                if elem not in self.s[key]:
                    self.s[key] = [f for f in FUNCTIONS if f in {*self.s[key], elem}]
        self._ensure_on(chans, call.header)
        point = {c: self._apply(c, self._base_level(c)) for c in chans}
        self.bench.hold(max(self._aperture_s(c) for c in chans))
        rows = {c: [self._reading(c, self._base_level(c), *point[c])] for c in chans}
        for c in chans:
            self.results[c] = rows[c]
        self._auto_off(chans)
        return self._format(chans, rows, elem)

    # ------------------------------------------------------------------------------
    # Format and trace
    # ------------------------------------------------------------------------------
    def _elements_setter(self, call: Call) -> None:
        call.expect(1, 6)
        chosen = {parse_choice(p, ("VOLTage", "CURRent", "RESistance", "TIME", "STATus", "SOURce"),
                               name=call.header) for p in call.params}  # fmt: skip
        self.s["form.elem"] = [e for e in ELEMENTS if e in chosen]

    def _format_data_setter(self, call: Call) -> None:
        call.expect(1, 2)
        kind = parse_choice(call.params[0], ("ASCii", "REAL"), name=call.header)
        if kind != "ASC":
            raise ScpiError(
                -224, f"{call.header} {call.params[0]}: this emulator sends ASCii data only"
            )

    def _trace_clear(self, call: Call) -> None:
        call.expect(0)
        c = call.suffix("TRAC")
        self._storage_guard(call, None)
        self.trace[c] = []

    def _trace_data(self, call: Call) -> str:
        call.expect(0, 2)
        c = call.suffix("TRAC")
        data = self.trace[c]
        if call.params:
            offset = int(
                parse_number(call.params[0], name=call.header, lo=0, hi=max(len(data) - 1, 0))
            )
            size = len(data) - offset
            if len(call.params) > 1:
                size = int(
                    parse_number(call.params[1], name=call.header, lo=1, hi=len(data) - offset)
                )
            data = data[offset : offset + size]
        if not data:
            raise ScpiError(-230, f"{call.header}? channel {c} trace buffer is empty")
        return self._format([c], {c: data}, None)

    def _time_reset(self, call: Call) -> None:
        call.expect(0)
        self._time_origin = self.clock.now()


__all__ = ["KeysightB2902AEmulator"]
